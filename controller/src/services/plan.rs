//! PlanService. Stored plans are read from the database; computing plans
//! (preview, apply, rollback) needs the planner, which arrives with its own
//! issue: until then those methods answer UNAVAILABLE and change nothing.

use aiwan_api::v1 as pb;
use aiwan_api::v1::plan_service_server::PlanService;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::intent::{known_sites, validate_job};
use super::{AppState, decode_page_token, into_page, page_size, store_status};
use crate::convert::{resource_id, timestamp};
use crate::model::{PlanRecord, PlanStatus, now_ms};

/// The answer of the methods that need the planner.
const NO_PLANNER: &str = "plan computation is not available in this build: the planner \
                          (candidate paths and TE solvers) lands with the planner issue; \
                          nothing was computed or stored";

pub struct PlanApi {
    state: AppState,
}

impl PlanApi {
    pub fn new(state: AppState) -> PlanApi {
        PlanApi { state }
    }
}

fn status_to_pb(status: PlanStatus) -> pb::PlanStatus {
    match status {
        PlanStatus::Computed => pb::PlanStatus::Computed,
        PlanStatus::Applying => pb::PlanStatus::Applying,
        PlanStatus::Applied => pb::PlanStatus::Applied,
        PlanStatus::Partial => pb::PlanStatus::Partial,
        PlanStatus::Failed => pb::PlanStatus::Failed,
        PlanStatus::Superseded => pb::PlanStatus::Superseded,
    }
}

/// The protobuf form of a stored plan. Metrics other than MLU are kept as
/// JSON so the planner can add figures without a migration.
pub fn plan_to_pb(plan: &PlanRecord) -> pb::Plan {
    let metrics: serde_json::Value =
        serde_json::from_str(&plan.metrics_json).unwrap_or(serde_json::Value::Null);
    let figure = |key: &str| {
        metrics
            .get(key)
            .and_then(serde_json::Value::as_f64)
            .unwrap_or(0.0)
    };
    pb::Plan {
        name: format!("plans/{}", plan.version),
        version: plan.version,
        status: status_to_pb(plan.status) as i32,
        metrics: Some(pb::PlanMetrics {
            mlu: plan.mlu.unwrap_or(0.0),
            ai_sync_satisfaction: figure("ai_sync_satisfaction"),
            ai_bulk_satisfaction: figure("ai_bulk_satisfaction"),
            best_effort_satisfaction: figure("best_effort_satisfaction"),
            worst_failure_mlu: figure("worst_failure_mlu"),
        }),
        pending_nodes: Vec::new(),
        create_time: Some(timestamp(plan.created_ms)),
        apply_time: plan.applied_ms.map(timestamp),
        reason: plan.reason.clone(),
    }
}

fn plan_version(field: &str, name: &str) -> Result<i64, Status> {
    let id = resource_id(field, name, "plans")?;
    id.parse::<i64>()
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| Status::invalid_argument(format!("{field}: {id:?} is not a plan version")))
}

#[tonic::async_trait]
impl PlanService for PlanApi {
    async fn get_current_plan(
        &self,
        _request: Request<pb::GetCurrentPlanRequest>,
    ) -> Result<Response<pb::GetCurrentPlanResponse>, Status> {
        let plan = self
            .state
            .store
            .current_plan()
            .await
            .map_err(store_status)?
            .ok_or_else(|| Status::not_found("no plan has been applied yet"))?;
        Ok(Response::new(pb::GetCurrentPlanResponse {
            plan: Some(plan_to_pb(&plan)),
        }))
    }

    async fn get_plan(
        &self,
        request: Request<pb::GetPlanRequest>,
    ) -> Result<Response<pb::GetPlanResponse>, Status> {
        let name = request.into_inner().name;
        let version = plan_version("name", &name)?;
        let plan = self
            .state
            .store
            .get_plan(version)
            .await
            .map_err(store_status)?
            .ok_or_else(|| Status::not_found(format!("{name} not found")))?;
        Ok(Response::new(pb::GetPlanResponse {
            plan: Some(plan_to_pb(&plan)),
        }))
    }

    async fn list_plans(
        &self,
        request: Request<pb::ListPlansRequest>,
    ) -> Result<Response<pb::ListPlansResponse>, Status> {
        let request = request.into_inner();
        let limit = page_size("page_size", request.page_size, 50)?;
        let token = decode_page_token("page_token", &request.page_token)?;
        let before = if token.is_empty() {
            i64::MAX
        } else {
            token.parse().map_err(|_| {
                Status::invalid_argument("page_token: not a token returned by ListPlans")
            })?
        };
        let plans = self
            .state
            .store
            .list_plans(before, limit + 1)
            .await
            .map_err(store_status)?;
        let (plans, next_page_token) = into_page(plans, limit, |p| p.version.to_string());
        Ok(Response::new(pb::ListPlansResponse {
            plans: plans.iter().map(plan_to_pb).collect(),
            next_page_token,
        }))
    }

    async fn preview_plan(
        &self,
        request: Request<pb::PreviewPlanRequest>,
    ) -> Result<Response<pb::PreviewPlanResponse>, Status> {
        // The hypothetical job is checked as CreateJob would, so a caller
        // learns about a bad request before learning the planner is absent.
        let job = request.into_inner().job;
        let sites = known_sites(&self.state).await?;
        validate_job("preview", job.as_ref(), &sites, now_ms()).map_err(|mut violation| {
            if violation.field == "job_id" {
                violation.field = "job".into();
            }
            Status::from(violation)
        })?;
        Err(Status::unavailable(NO_PLANNER))
    }

    async fn apply_plan(
        &self,
        _request: Request<pb::ApplyPlanRequest>,
    ) -> Result<Response<pb::ApplyPlanResponse>, Status> {
        Err(Status::unavailable(NO_PLANNER))
    }

    async fn rollback_plan(
        &self,
        request: Request<pb::RollbackPlanRequest>,
    ) -> Result<Response<pb::RollbackPlanResponse>, Status> {
        let name = request.into_inner().name;
        let version = plan_version("name", &name)?;
        self.state
            .store
            .get_plan(version)
            .await
            .map_err(store_status)?
            .ok_or_else(|| Status::not_found(format!("{name} not found")))?;
        Err(Status::unavailable(NO_PLANNER))
    }

    type WatchPlansStream = ReceiverStream<Result<pb::WatchPlansResponse, Status>>;

    async fn watch_plans(
        &self,
        _request: Request<pb::WatchPlansRequest>,
    ) -> Result<Response<Self::WatchPlansStream>, Status> {
        let (sender, receiver) = tokio::sync::mpsc::channel(4);
        let mut versions = self.state.plan_version.subscribe();
        versions.mark_changed(); // send the current plan first, if any
        let store = self.state.store.clone();
        let stopping = self.state.stopping();
        tokio::spawn(async move {
            tokio::pin!(stopping);
            let mut sent: Option<(i64, i32)> = None;
            loop {
                tokio::select! {
                    changed = versions.changed() => {
                        if changed.is_err() {
                            return;
                        }
                    }
                    () = sender.closed() => return,
                    () = &mut stopping => return,
                }
                let message = match store.current_plan().await {
                    Ok(None) => continue,
                    Ok(Some(plan)) => {
                        let key = (plan.version, status_to_pb(plan.status) as i32);
                        if sent == Some(key) {
                            continue;
                        }
                        sent = Some(key);
                        Ok(pb::WatchPlansResponse {
                            plan: Some(plan_to_pb(&plan)),
                        })
                    }
                    Err(error) => Err(store_status(error)),
                };
                let failed = message.is_err();
                if sender.send(message).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(receiver)))
    }
}
