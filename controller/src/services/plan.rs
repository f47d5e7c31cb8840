//! PlanService. Plans are computed by the planner from the stored topology
//! and the active AI jobs; applying one stores it, with each router's
//! desired state, before anything is pushed. The reconcile loop
//! (`southbound::reconcile`) then pushes it and moves its status on; with
//! no southbound driver configured an applied plan stays APPLYING with its
//! routers pending.

use aiwan_api::v1 as pb;
use aiwan_api::v1::plan_service_server::PlanService;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::intent::{known_sites, validate_job};
use super::{AppState, decode_page_token, into_page, page_size, store_status};
use crate::convert::{resource_id, timestamp};
use crate::model::{PlanRecord, PlanStatus, PlanTrigger, ProposalState, now_ms};

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
pub fn plan_to_pb(plan: &PlanRecord, pending_nodes: Vec<String>) -> pb::Plan {
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
            collective_placement: metrics
                .get("collective_placement")
                .filter(|placement| placement.is_object())
                .map(|placement| {
                    let count = |key: &str| {
                        placement
                            .get(key)
                            .and_then(serde_json::Value::as_i64)
                            .and_then(|n| i32::try_from(n).ok())
                            .unwrap_or(0)
                    };
                    let share = |key: &str| {
                        placement
                            .get(key)
                            .and_then(serde_json::Value::as_f64)
                            .unwrap_or(0.0)
                    };
                    pb::CollectivePlacement {
                        flows: count("flows"),
                        max_utilization: share("max_utilization"),
                        lower_bound: share("lower_bound"),
                        moved: count("moved"),
                    }
                }),
        }),
        pending_nodes: pending_nodes
            .into_iter()
            .map(|node| format!("nodes/{node}"))
            .collect(),
        create_time: Some(timestamp(plan.created_ms)),
        apply_time: plan.applied_ms.map(timestamp),
        reason: plan.reason.clone(),
        trigger: trigger_to_pb(plan.trigger) as i32,
        proposal_state: match plan.proposal_state {
            None => pb::ProposalState::Unspecified,
            Some(ProposalState::Proposed) => pb::ProposalState::Proposed,
            Some(ProposalState::Approved) => pb::ProposalState::Approved,
            Some(ProposalState::Expired) => pb::ProposalState::Expired,
        } as i32,
        figures: figures_to_pb(plan.trigger, &plan.reason_json),
        creator: plan.creator.clone(),
    }
}

fn trigger_to_pb(trigger: PlanTrigger) -> pb::PlanTrigger {
    match trigger {
        PlanTrigger::Operator => pb::PlanTrigger::Operator,
        PlanTrigger::Congestion => pb::PlanTrigger::Congestion,
        PlanTrigger::Improvement => pb::PlanTrigger::Improvement,
        PlanTrigger::Rollback => pb::PlanTrigger::Rollback,
        PlanTrigger::AutomaticRollback => pb::PlanTrigger::AutomaticRollback,
        PlanTrigger::Approval => pb::PlanTrigger::Approval,
    }
}

/// The closed loop's figures of a plan it made (or a proposal approved).
fn figures_to_pb(trigger: PlanTrigger, reason_json: &str) -> Option<pb::ReplanFigures> {
    if !(trigger.is_telemetry() || trigger == PlanTrigger::Approval) {
        return None;
    }
    let figures: serde_json::Value = serde_json::from_str(reason_json).ok()?;
    figures.get("predicted_mlu_before")?;
    let number = |key: &str| {
        figures
            .get(key)
            .and_then(serde_json::Value::as_f64)
            .unwrap_or(0.0)
    };
    let integer = |key: &str| {
        figures
            .get(key)
            .and_then(serde_json::Value::as_i64)
            .unwrap_or(0)
    };
    let count = |key: &str| i32::try_from(integer(key)).unwrap_or(i32::MAX);
    let text = |key: &str| {
        figures
            .get(key)
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let hottest = text("hottest_link");
    Some(pb::ReplanFigures {
        predicted_mlu_before: number("predicted_mlu_before"),
        predicted_mlu_after: number("predicted_mlu_after"),
        measured_mlu: number("measured_mlu"),
        hottest_link: if hottest.is_empty() {
            hottest
        } else {
            format!("links/{hottest}")
        },
        congestion_probability: number("congestion_probability"),
        congestion_threshold: number("congestion_threshold"),
        interval_start_time: Some(timestamp(integer("interval_start_ms"))),
        interval: Some(duration_of_ms(integer("interval_ms"))),
        forecast: text("forecast"),
        history_intervals: count("history_intervals"),
        routes_changed: count("routes_changed"),
        routes_wanted: count("routes_wanted"),
    })
}

/// A protobuf duration of `ms` milliseconds.
pub fn duration_of_ms(ms: i64) -> prost_types::Duration {
    prost_types::Duration {
        seconds: ms.div_euclid(1000),
        nanos: i32::try_from(ms.rem_euclid(1000) * 1_000_000).unwrap_or(0),
    }
}

/// A stored plan with its pending routers (none for a proposal, which is
/// not pushed).
async fn plan_with_pending(state: &AppState, plan: &PlanRecord) -> Result<pb::Plan, Status> {
    if plan.status == PlanStatus::Computed {
        return Ok(plan_to_pb(plan, Vec::new()));
    }
    let pending = state
        .store
        .pending_nodes(plan.version)
        .await
        .map_err(store_status)?;
    Ok(plan_to_pb(plan, pending))
}

/// Computes a plan from the stored topology and jobs (plus `extra`), off the
/// async threads: solving is CPU work.
async fn compute(
    state: &AppState,
    extra: Option<crate::model::JobRecord>,
) -> Result<crate::planning::ComputedPlan, Status> {
    // The closed loop's view of the traffic, when it has one: an operator's
    // plan serves what is measured too, not only the declared jobs.
    let measured = state.closed_loop.as_ref().and_then(|view| {
        let view = view
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let latest = view.intervals.back()?;
        Some(crate::planning::MeasuredDemand {
            scenarios: vec![latest.classes.clone()],
            robustness: aiwan_planner::classes::Robustness::Worst,
        })
    });
    let (topology, mut jobs) = super::topology_and_jobs(state).await?;
    jobs.extend(extra);
    // Collective flows keep the spines the current plan gave them.
    let previous = match state.store.current_plan().await.map_err(store_status)? {
        Some(current) => {
            let (_, rows) = state
                .store
                .plan_content(current.version)
                .await
                .map_err(store_status)?
                .unwrap_or_default();
            crate::collective::placements_in(&crate::closed_loop::parse_desired(&rows))
        }
        None => crate::collective::Placements::new(),
    };
    let now = now_ms();
    let mut paths = state.loop_config.path_cache();
    tokio::task::spawn_blocking(move || {
        crate::planning::compute_plan_with(
            &topology,
            &jobs,
            now,
            measured.as_ref(),
            &previous,
            &mut paths,
        )
    })
    .await
    .map_err(|e| Status::internal(format!("planner task failed: {e}")))?
    .map_err(|e| Status::failed_precondition(e.to_string()))
}

/// Stores a computed plan as the desired state and tells the watchers.
async fn store_desired(
    state: &AppState,
    computed: &crate::planning::ComputedPlan,
    reason: &str,
    trigger: PlanTrigger,
    actor: &str,
    action: &str,
) -> Result<pb::Operation, Status> {
    let desired: Vec<(String, String)> = computed
        .desired_state
        .iter()
        .map(|(node, value)| (node.clone(), value.to_string()))
        .collect();
    let metrics = computed.metrics.to_string();
    let allocation = computed.allocation.to_string();
    let record = state
        .store
        .insert_plan(
            &crate::model::NewPlan {
                mlu: computed.mlu,
                metrics_json: &metrics,
                allocation_json: &allocation,
                desired_state: &desired,
                reason,
                trigger,
                reason_json: "{}",
                proposal: false,
            },
            actor,
            action,
            now_ms(),
        )
        .await
        .map_err(store_status)?;
    announce(state, &record, actor);
    stored_operation(state, &record).await
}

/// Tells the reconcile loop and the event stream of a new desired plan.
fn announce(state: &AppState, record: &PlanRecord, actor: &str) {
    state.plan_version.send_replace(record.version);
    state.events.publish(
        crate::events::EventKind::Replan,
        format!("plans/{}", record.version),
        format!("{} by {actor}: {}", record.trigger.as_str(), record.reason),
        &[("mlu_after", record.mlu.unwrap_or(0.0))],
    );
    tracing::info!(version = record.version, mlu = record.mlu, trigger = record.trigger.as_str(), %actor, "plan stored as desired state");
}

async fn stored_operation(state: &AppState, record: &PlanRecord) -> Result<pb::Operation, Status> {
    Ok(pb::Operation {
        name: format!("operations/plan-{}", record.version),
        done: true,
        result: Some(pb::operation::Result::Response(
            plan_with_pending(state, record).await?,
        )),
    })
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
            plan: Some(plan_with_pending(&self.state, &plan).await?),
        }))
    }

    async fn get_plan(
        &self,
        request: Request<pb::GetPlanRequest>,
    ) -> Result<Response<pb::GetPlanResponse>, Status> {
        let request = request.into_inner();
        let name = request.name;
        let version = plan_version("name", &name)?;
        let view = pb::PlanView::try_from(request.view).map_err(|_| {
            Status::invalid_argument(format!("view: {} is not a PlanView", request.view))
        })?;
        let plan = self
            .state
            .store
            .get_plan(version)
            .await
            .map_err(store_status)?
            .ok_or_else(|| Status::not_found(format!("{name} not found")))?;
        let mut response = pb::GetPlanResponse {
            plan: Some(plan_with_pending(&self.state, &plan).await?),
            ..Default::default()
        };
        if view == pb::PlanView::Full {
            let (allocation, _) = self
                .state
                .store
                .plan_content(version)
                .await
                .map_err(store_status)?
                .ok_or_else(|| Status::not_found(format!("{name} not found")))?;
            let topology = self
                .state
                .store
                .load_topology()
                .await
                .map_err(store_status)?;
            let site_of: std::collections::HashMap<&str, &str> = topology
                .topology
                .nodes
                .iter()
                .filter_map(|n| Some((n.id.as_str(), n.site.as_deref()?)))
                .collect();
            response.allocations = allocations_to_pb(&allocation, &site_of);
            let routers = self
                .state
                .store
                .plan_routers(version)
                .await
                .map_err(store_status)?;
            response.routers = routers
                .iter()
                .map(|(node, state, status)| router_plan_to_pb(node, state, status))
                .collect();
        }
        Ok(Response::new(response))
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
        let mut listed = Vec::with_capacity(plans.len());
        for plan in &plans {
            listed.push(plan_with_pending(&self.state, plan).await?);
        }
        Ok(Response::new(pb::ListPlansResponse {
            plans: listed,
            next_page_token,
        }))
    }

    async fn preview_plan(
        &self,
        request: Request<pb::PreviewPlanRequest>,
    ) -> Result<Response<pb::PreviewPlanResponse>, Status> {
        let caller = crate::auth::caller(&request)?;
        // The hypothetical job is checked as CreateJob would check it, then
        // planned as active now, next to the stored jobs; nothing is stored.
        let job = request.into_inner().job;
        let sites = known_sites(&self.state).await?;
        let now = now_ms();
        let mut hypothetical =
            validate_job("preview", job.as_ref(), &sites, now).map_err(|mut violation| {
                if violation.field == "job_id" {
                    violation.field = "job".into();
                }
                Status::from(violation)
            })?;
        hypothetical.start_ms = hypothetical.start_ms.min(now);
        if let Some(given) = &job {
            hypothetical.admission_policy =
                crate::services::intent::resolve_policy(given, &self.state.admission);
        }
        // What admission would answer, and the plan with the job at the
        // rate it would be guaranteed.
        let admission = crate::services::intent::admit(&self.state, &hypothetical, now).await?;
        let record = crate::model::JobRecord::new(
            hypothetical,
            caller.actor(),
            now,
            Some(admission.clone()),
        );
        let computed = compute(&self.state, Some(record)).await?;
        let preview = PlanRecord {
            version: 0,
            status: PlanStatus::Computed,
            reason: "preview".into(),
            created_ms: now,
            applied_ms: None,
            mlu: Some(computed.mlu),
            metrics_json: computed.metrics.to_string(),
            creator: caller.actor(),
            trigger: PlanTrigger::Operator,
            reason_json: "{}".into(),
            proposal_state: None,
        };
        let mut plan = plan_to_pb(&preview, Vec::new());
        plan.name = "plans/preview".into();
        Ok(Response::new(pb::PreviewPlanResponse {
            plan: Some(plan),
            admission: Some(crate::services::intent::admission_to_pb(&admission)),
        }))
    }

    async fn apply_plan(
        &self,
        request: Request<pb::ApplyPlanRequest>,
    ) -> Result<Response<pb::ApplyPlanResponse>, Status> {
        let caller = crate::auth::caller(&request)?;
        let reason = request.into_inner().reason;
        if reason.len() > 1000 {
            return Err(Status::invalid_argument(
                "reason: longer than 1000 characters",
            ));
        }
        let reason = if reason.trim().is_empty() {
            "operator request".to_string()
        } else {
            reason
        };
        let computed = compute(&self.state, None).await?;
        let operation = store_desired(
            &self.state,
            &computed,
            &reason,
            PlanTrigger::Operator,
            &caller.actor(),
            "aiwan.v1.PlanService/ApplyPlan",
        )
        .await?;
        Ok(Response::new(pb::ApplyPlanResponse {
            operation: Some(operation),
        }))
    }

    async fn rollback_plan(
        &self,
        request: Request<pb::RollbackPlanRequest>,
    ) -> Result<Response<pb::RollbackPlanResponse>, Status> {
        let caller = crate::auth::caller(&request)?;
        let name = request.into_inner().name;
        let version = plan_version("name", &name)?;
        let plan = self
            .state
            .store
            .get_plan(version)
            .await
            .map_err(store_status)?
            .ok_or_else(|| Status::not_found(format!("{name} not found")))?;
        let (allocation, desired) = self
            .state
            .store
            .plan_content(version)
            .await
            .map_err(store_status)?
            .ok_or_else(|| Status::not_found(format!("{name} not found")))?;
        // The earlier plan again, as a new version: history stays linear.
        let computed = crate::planning::ComputedPlan {
            mlu: plan.mlu.unwrap_or(0.0),
            metrics: serde_json::from_str(&plan.metrics_json).unwrap_or(serde_json::Value::Null),
            allocation: serde_json::from_str(&allocation).unwrap_or(serde_json::Value::Null),
            desired_state: desired
                .into_iter()
                .map(|(node, state)| {
                    (
                        node,
                        serde_json::from_str(&state).unwrap_or(serde_json::Value::Null),
                    )
                })
                .collect(),
        };
        let operation = store_desired(
            &self.state,
            &computed,
            &format!("rollback to {name}"),
            PlanTrigger::Rollback,
            &caller.actor(),
            "aiwan.v1.PlanService/RollbackPlan",
        )
        .await?;
        Ok(Response::new(pb::RollbackPlanResponse {
            operation: Some(operation),
        }))
    }

    async fn approve_plan(
        &self,
        request: Request<pb::ApprovePlanRequest>,
    ) -> Result<Response<pb::ApprovePlanResponse>, Status> {
        let caller = crate::auth::caller(&request)?;
        let request = request.into_inner();
        let version = plan_version("name", &request.name)?;
        if request.reason.len() > 1000 {
            return Err(Status::invalid_argument(
                "reason: longer than 1000 characters",
            ));
        }
        let reason = if request.reason.trim().is_empty() {
            format!("approved proposal {}", request.name)
        } else {
            request.reason
        };
        let Some(record) = self
            .state
            .store
            .approve_proposal(version, &reason, &caller.actor(), now_ms())
            .await
            .map_err(store_status)?
        else {
            return Err(
                match self
                    .state
                    .store
                    .get_plan(version)
                    .await
                    .map_err(store_status)?
                {
                    None => Status::not_found(format!("{} not found", request.name)),
                    Some(plan) => Status::failed_precondition(format!(
                        "name: {} is not a proposal waiting for approval ({})",
                        request.name,
                        plan.proposal_state
                            .map_or("not a proposal", |state| state.as_str())
                    )),
                },
            );
        };
        announce(&self.state, &record, &caller.actor());
        Ok(Response::new(pb::ApprovePlanResponse {
            operation: Some(stored_operation(&self.state, &record).await?),
        }))
    }

    async fn get_control_loop(
        &self,
        _request: Request<pb::GetControlLoopRequest>,
    ) -> Result<Response<pb::GetControlLoopResponse>, Status> {
        let config = &self.state.loop_config;
        let mut control_loop = pb::ControlLoop {
            mode: match config.mode {
                crate::closed_loop::LoopMode::Off => pb::ControlLoopMode::Off,
                crate::closed_loop::LoopMode::Recommend => pb::ControlLoopMode::Recommend,
                crate::closed_loop::LoopMode::Auto => pb::ControlLoopMode::Auto,
            } as i32,
            interval: Some(duration_of_ms(
                i64::try_from(config.interval_ms).unwrap_or(0),
            )),
            congestion_threshold: config.congestion_threshold,
            clear_threshold: config.clear_threshold,
            congestion_probability: config.congestion_probability,
            improvement_margin: config.improvement_margin,
            min_replan_interval: Some(duration_of_ms(
                i64::try_from(config.min_replan_interval_ms).unwrap_or(0),
            )),
            max_route_changes: i32::try_from(config.max_route_changes).unwrap_or(i32::MAX),
            ..Default::default()
        };
        if let Some(view) = &self.state.closed_loop {
            let view = view
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            control_loop.last_interval_start_time = view.last_interval_start_ms.map(timestamp);
            control_loop.last_decision = view.last_decision.clone();
            control_loop.predicted_mlu = view.predicted_mlu;
            control_loop.measured_mlu = view.measured_mlu;
            control_loop.replans = i64::try_from(view.replan_count).unwrap_or(i64::MAX);
            control_loop.last_loop_latency = view.last_latency_ms.map(duration_of_ms);
            control_loop.idle_reason = view.idle_reason.clone().unwrap_or_default();
        }
        Ok(Response::new(pb::GetControlLoopResponse {
            control_loop: Some(control_loop),
        }))
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
                        let pending = store.pending_nodes(plan.version).await.unwrap_or_default();
                        Ok(pb::WatchPlansResponse {
                            plan: Some(plan_to_pb(&plan, pending)),
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

/// The stored allocation (`planning::ComputedPlan::allocation`) as the
/// API's demands. Entries that do not read as one are left out: the
/// allocation is aiwan's own record, so that would be a bug, not input.
fn allocations_to_pb(
    allocation: &str,
    site_of: &std::collections::HashMap<&str, &str>,
) -> Vec<pb::DemandAllocation> {
    let Ok(serde_json::Value::Array(entries)) = serde_json::from_str(allocation) else {
        return Vec::new();
    };
    let site = |node: &str| {
        site_of
            .get(node)
            .map(|s| format!("sites/{s}"))
            .unwrap_or_default()
    };
    entries
        .iter()
        .filter_map(|entry| {
            let src = entry["src"].as_str()?;
            let dst = entry["dst"].as_str()?;
            let class = match crate::model::TrafficClass::parse(entry["class"].as_str()?)? {
                crate::model::TrafficClass::AiSync => pb::TrafficClass::AiSync,
                crate::model::TrafficClass::AiBulk => pb::TrafficClass::AiBulk,
                crate::model::TrafficClass::BestEffort => pb::TrafficClass::BestEffort,
            };
            let paths = entry["paths"]
                .as_array()?
                .iter()
                .filter_map(|path| {
                    Some(pb::PathShare {
                        nodes: path["nodes"]
                            .as_array()?
                            .iter()
                            .filter_map(|n| Some(format!("nodes/{}", n.as_str()?)))
                            .collect(),
                        fraction: path["fraction"].as_f64()?,
                    })
                })
                .collect();
            Some(pb::DemandAllocation {
                src_node: format!("nodes/{src}"),
                dst_node: format!("nodes/{dst}"),
                src_site: site(src),
                dst_site: site(dst),
                traffic_class: class as i32,
                rate_bps: entry["rate_bps"].as_f64().unwrap_or(0.0),
                paths,
                pinned: entry["pinned"].as_bool().unwrap_or(false),
            })
        })
        .collect()
}

/// One router's stored desired state (`planning::desired_state`: routes
/// by destination node, next hops by node with their shares, pins and rate
/// limits) as the API's router plan.
fn router_plan_to_pb(node: &str, state: &str, push_status: &str) -> pb::RouterPlan {
    let state: serde_json::Value = serde_json::from_str(state).unwrap_or_default();
    let count = |key: &str| state[key].as_array().map_or(0, |a| a.len() as i32);
    let routes = state["routes"]
        .as_array()
        .map(|routes| {
            routes
                .iter()
                .filter_map(|route| {
                    Some(pb::PlannedRoute {
                        destination: format!("nodes/{}", route["destination"].as_str()?),
                        next_hops: route["next_hops"]
                            .as_array()?
                            .iter()
                            .filter_map(|hop| {
                                Some(pb::RouteNextHop {
                                    node: format!("nodes/{}", hop["next_hop"].as_str()?),
                                    share: hop["weight"].as_f64()?,
                                })
                            })
                            .collect(),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    pb::RouterPlan {
        node: format!("nodes/{node}"),
        push_status: push_status.to_string(),
        routes,
        pins: count("pins"),
        rate_limits: count("rate_limits"),
    }
}
