//! The engine: the only part that talks to the controller. It connects
//! through `aiwan-api`, loads what the dashboard shows, follows the
//! controller's streams (events, plans, topology) and polls only what the
//! view on screen needs and streams do not carry, at most about once a
//! second; it turns answers into the shared [`Snapshot`] and carries out
//! the operator's commands. When the controller goes away it says so in the
//! snapshot and reconnects by itself.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use aiwan_api::v1 as pb;
use aiwan_api::v1::event_service_client::EventServiceClient;
use aiwan_api::v1::intent_service_client::IntentServiceClient;
use aiwan_api::v1::plan_service_client::PlanServiceClient;
use aiwan_api::v1::telemetry_service_client::TelemetryServiceClient;
use aiwan_api::v1::topology_service_client::TopologyServiceClient;
use tokio::sync::{mpsc, watch};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::app::{Command, JobForm, View};
use crate::snapshot::{
    AllocationRow, ConnectionState, ControlLoop, EventRow, FlowRow, JobProgressRow, JobRow,
    LinkRow, Matrix, PlanDetail, PlanRow, RouterRow, Snapshot, Tone,
};

/// The snapshot as the engine and the renderer share it.
pub type Shared = Arc<Mutex<Snapshot>>;

/// Where the controller is and how to prove who we are.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Options {
    pub endpoint: String,
    pub token: Option<String>,
    /// CA certificate (PEM) for an `https://` endpoint.
    pub ca_file: Option<PathBuf>,
}

/// Why the engine cannot even start (a bad endpoint or token).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("endpoint {0:?} is not a URL")]
    Endpoint(String),
    #[error("the token contains characters not allowed in a header")]
    Token,
    #[error("cannot read the CA file {path}: {source}")]
    CaFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("TLS: {0}")]
    Tls(String),
}

#[derive(Clone)]
struct Bearer(Option<MetadataValue<Ascii>>);

impl Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

type Authed = InterceptedService<Channel, Bearer>;

struct Clients {
    topology: TopologyServiceClient<Authed>,
    intents: IntentServiceClient<Authed>,
    plans: PlanServiceClient<Authed>,
    telemetry: TelemetryServiceClient<Authed>,
    events: EventServiceClient<Authed>,
}

/// Longest wait between two connection attempts.
const RETRY_MAX: Duration = Duration::from_secs(3);

/// The endpoint and the token checked once, before any connection.
pub fn prepare(options: &Options) -> Result<(Endpoint, Option<MetadataValue<Ascii>>), EngineError> {
    let mut endpoint = Endpoint::from_shared(options.endpoint.clone())
        .map_err(|_| EngineError::Endpoint(options.endpoint.clone()))?
        .connect_timeout(Duration::from_secs(3));
    if let Some(path) = &options.ca_file {
        let pem = std::fs::read(path).map_err(|source| EngineError::CaFile {
            path: path.clone(),
            source,
        })?;
        endpoint = endpoint
            .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)))
            .map_err(|e| EngineError::Tls(e.to_string()))?;
    }
    let token = options
        .token
        .as_ref()
        .map(|t| format!("Bearer {t}").parse())
        .transpose()
        .map_err(|_| EngineError::Token)?;
    Ok((endpoint, token))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn update(shared: &Shared, change: impl FnOnce(&mut Snapshot)) {
    let mut snapshot = shared.lock().unwrap_or_else(PoisonError::into_inner);
    change(&mut snapshot);
    snapshot.updated_ms = now_ms();
}

fn tell(shared: &Shared, tone: Tone, text: impl Into<String>) {
    let text = text.into();
    update(shared, |s| s.message = Some((tone, text, now_ms())));
}

/// Runs until `stop` turns true: connects, follows, reconnects.
pub async fn run(
    options: Options,
    shared: Shared,
    mut commands: mpsc::UnboundedReceiver<Command>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), EngineError> {
    let (endpoint, token) = prepare(&options)?;
    update(&shared, |s| s.endpoint = options.endpoint.clone());
    let mut view = View::Overview;
    let mut retry = Duration::from_millis(500);
    loop {
        let attempt = async {
            let channel = endpoint
                .connect()
                .await
                .map_err(|e| describe_transport(&e))?;
            let bearer = Bearer(token.clone());
            let clients = Clients {
                topology: TopologyServiceClient::with_interceptor(channel.clone(), bearer.clone()),
                intents: IntentServiceClient::with_interceptor(channel.clone(), bearer.clone()),
                plans: PlanServiceClient::with_interceptor(channel.clone(), bearer.clone()),
                telemetry: TelemetryServiceClient::with_interceptor(
                    channel.clone(),
                    bearer.clone(),
                ),
                events: EventServiceClient::with_interceptor(channel, bearer),
            };
            session(clients, &shared, &mut commands, &mut view).await
        };
        let result = tokio::select! {
            result = attempt => result,
            _ = stop.wait_for(|s| *s) => return Ok(()),
        };
        match result {
            Ok(()) => return Ok(()),
            Err(error) => {
                update(&shared, |s| {
                    let since_ms = match &s.connection {
                        ConnectionState::Disconnected { since_ms, .. } => *since_ms,
                        _ => now_ms(),
                    };
                    s.connection = ConnectionState::Disconnected { error, since_ms };
                });
                tokio::select! {
                    _ = tokio::time::sleep(retry) => {}
                    _ = stop.wait_for(|s| *s) => return Ok(()),
                }
                retry = (retry * 2).min(RETRY_MAX);
            }
        }
        if matches!(
            shared
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .connection,
            ConnectionState::Connected
        ) {
            retry = Duration::from_millis(500);
        }
    }
}

fn describe_transport(error: &tonic::transport::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text = format!("{text}: {cause}");
        source = cause.source();
    }
    text
}

fn describe_status(status: &tonic::Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
}

/// One connection's life: load, then follow streams and poll until a
/// stream breaks (an error: reconnect) or the command channel closes (the
/// UI quit).
async fn session(
    mut clients: Clients,
    shared: &Shared,
    commands: &mut mpsc::UnboundedReceiver<Command>,
    view: &mut View,
) -> Result<(), String> {
    let mut events = clients
        .events
        .watch_events(pb::WatchEventsRequest {
            kinds: Vec::new(),
            include_recent: true,
        })
        .await
        .map_err(|s| describe_status(&s))?
        .into_inner();
    let mut plans = clients
        .plans
        .watch_plans(pb::WatchPlansRequest {})
        .await
        .map_err(|s| describe_status(&s))?
        .into_inner();
    let mut topology = clients
        .topology
        .watch_topology(pb::WatchTopologyRequest {})
        .await
        .map_err(|s| describe_status(&s))?
        .into_inner();
    load_plans(&mut clients, shared).await?;
    load_jobs(&mut clients, shared).await?;
    load_control(&mut clients, shared).await?;
    poll_view(&mut clients, shared, *view, 0).await?;
    update(shared, |s| s.connection = ConnectionState::Connected);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks: u64 = 0;
    let mut plans_stale = false;
    let mut control_stale = false;
    loop {
        tokio::select! {
            message = events.message() => {
                let Some(message) = message.map_err(|s| describe_status(&s))? else {
                    return Err("the controller closed the event stream".into());
                };
                let Some(event) = message.event else { continue };
                let kind = event_kind(event.kind);
                let refresh = matches!(kind, "replan" | "proposal" | "plan-applied" | "plan-failed");
                update(shared, |s| s.push_event(EventRow {
                    sequence: event.sequence,
                    at_ms: event.time.as_ref().map_or(0, timestamp_ms),
                    kind: kind.to_string(),
                    subject: event.subject,
                    message: event.message,
                }));
                // Plans changed: fetched on the next ticks, once however
                // many events came, in place of those ticks' polls.
                plans_stale |= refresh;
                control_stale |= refresh;
            }
            message = plans.message() => {
                let Some(message) = message.map_err(|s| describe_status(&s))? else {
                    return Err("the controller closed the plan stream".into());
                };
                if let Some(plan) = message.plan {
                    let row = plan_row(&plan);
                    update(shared, |s| s.current_plan = Some(row));
                }
            }
            message = topology.message() => {
                let Some(message) = message.map_err(|s| describe_status(&s))? else {
                    return Err("the controller closed the topology stream".into());
                };
                if let Some(topology) = message.topology {
                    update(shared, |s| apply_topology(s, &topology));
                    control_stale = true;
                }
            }
            command = commands.recv() => {
                let Some(command) = command else { return Ok(()) };
                if let Command::Show(shown) = command {
                    *view = shown;
                    poll_view(&mut clients, shared, shown, ticks).await?;
                } else if let Command::InspectPlan(version) = command {
                    // The plan and the one before it, for the diff: an
                    // operator's key press, not idle load.
                    for wanted in [version, version - 1] {
                        if wanted > 0 && (wanted == version || !has_detail(shared, wanted)) {
                            load_plan_detail(&mut clients, shared, wanted).await?;
                        }
                    }
                } else {
                    execute(&mut clients, shared, command).await?;
                }
            }
            _ = tick.tick() => {
                ticks += 1;
                if plans_stale {
                    plans_stale = false;
                    load_plans(&mut clients, shared).await?;
                } else if control_stale {
                    control_stale = false;
                    load_control(&mut clients, shared).await?;
                } else {
                    poll_view(&mut clients, shared, *view, ticks).await?;
                }
            }
        }
    }
}

/// What the view on screen needs that no stream carries: at most one
/// request a second (`tick` counts seconds), the rest comes by streams.
async fn poll_view(
    clients: &mut Clients,
    shared: &Shared,
    view: View,
    tick: u64,
) -> Result<(), String> {
    match view {
        // The overview also shows the control loop and the jobs by state:
        // every fifth and tenth second ask for those instead.
        View::Overview if tick % 10 == 5 => load_jobs(clients, shared).await,
        View::Overview | View::Links if tick.is_multiple_of(5) => {
            load_control(clients, shared).await
        }
        View::Overview | View::Links => load_forecasts(clients, shared).await,
        View::Traffic if tick % 10 == 5 => load_flows(clients, shared).await,
        View::Traffic if tick.is_multiple_of(2) => load_matrix(clients, shared).await,
        View::Jobs if tick.is_multiple_of(2) => load_jobs(clients, shared).await,
        // The current plan's paths (jobs) and push status (plans), when
        // the plan changed or its detail is older than five seconds.
        View::Jobs | View::Plans if !tick.is_multiple_of(5) => {
            let current = {
                let snapshot = shared.lock().unwrap_or_else(PoisonError::into_inner);
                snapshot
                    .current_plan
                    .as_ref()
                    .map(|p| p.version)
                    .filter(|v| {
                        snapshot
                            .plan_details
                            .get(v)
                            .is_none_or(|d| now_ms() - d.fetched_ms >= DETAIL_REFRESH_MS)
                    })
            };
            match current {
                Some(version) => load_plan_detail(clients, shared, version).await,
                None => Ok(()),
            }
        }
        View::Plans => load_plans(clients, shared).await,
        _ => Ok(()),
    }
}

/// How old the current plan's detail may grow before it is fetched again
/// (its push status changes; its routes do not).
const DETAIL_REFRESH_MS: i64 = 5_000;

fn has_detail(shared: &Shared, version: i64) -> bool {
    shared
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .plan_details
        .contains_key(&version)
}

/// A plan's routes, allocations and push status (`PLAN_VIEW_FULL`).
async fn load_plan_detail(
    clients: &mut Clients,
    shared: &Shared,
    version: i64,
) -> Result<(), String> {
    counted(shared);
    let answer = match clients
        .plans
        .get_plan(pb::GetPlanRequest {
            name: format!("plans/{version}"),
            view: pb::PlanView::Full as i32,
        })
        .await
    {
        Ok(answer) => answer.into_inner(),
        Err(status) if status.code() == tonic::Code::NotFound => return Ok(()),
        Err(status) => return session_error(status),
    };
    let detail = plan_detail(version, &answer);
    update(shared, |s| s.keep_plan_detail(detail));
    Ok(())
}

fn plan_detail(version: i64, answer: &pb::GetPlanResponse) -> PlanDetail {
    let node = |name: &str| name.trim_start_matches("nodes/").to_string();
    let site = |name: &str| name.trim_start_matches("sites/").to_string();
    PlanDetail {
        version,
        allocations: answer
            .allocations
            .iter()
            .map(|a| AllocationRow {
                src_node: node(&a.src_node),
                dst_node: node(&a.dst_node),
                src_site: site(&a.src_site),
                dst_site: site(&a.dst_site),
                class: class_name(a.traffic_class).to_string(),
                rate_bps: a.rate_bps,
                paths: a
                    .paths
                    .iter()
                    .map(|p| (p.nodes.iter().map(|n| node(n)).collect(), p.fraction))
                    .collect(),
                pinned: a.pinned,
            })
            .collect(),
        routers: answer
            .routers
            .iter()
            .map(|r| RouterRow {
                node: node(&r.node),
                push_status: r.push_status.clone(),
                routes: r
                    .routes
                    .iter()
                    .map(|route| {
                        (
                            node(&route.destination),
                            route
                                .next_hops
                                .iter()
                                .map(|h| (node(&h.node), h.share))
                                .collect(),
                        )
                    })
                    .collect(),
                pins: r.pins,
                rate_limits: r.rate_limits,
            })
            .collect(),
        fetched_ms: now_ms(),
    }
}

fn counted(shared: &Shared) {
    update(shared, |s| s.requests += 1);
}

/// Unauthorized or unavailable ends the session (reconnect); anything else
/// is reported and the session goes on.
fn session_error(status: tonic::Status) -> Result<(), String> {
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::Unauthenticated | tonic::Code::Cancelled => {
            Err(describe_status(&status))
        }
        _ => Ok(()),
    }
}

fn timestamp_ms(ts: &prost_types::Timestamp) -> i64 {
    ts.seconds
        .saturating_mul(1000)
        .saturating_add(i64::from(ts.nanos / 1_000_000))
}

fn duration_ms(d: &prost_types::Duration) -> i64 {
    d.seconds
        .saturating_mul(1000)
        .saturating_add(i64::from(d.nanos / 1_000_000))
}

fn event_kind(kind: i32) -> &'static str {
    match pb::EventKind::try_from(kind).unwrap_or(pb::EventKind::Unspecified) {
        pb::EventKind::Replan => "replan",
        pb::EventKind::Proposal => "proposal",
        pb::EventKind::PlanApplied => "plan-applied",
        pb::EventKind::PlanFailed => "plan-failed",
        pb::EventKind::Push => "push",
        pb::EventKind::DriftRepaired => "drift-repaired",
        pb::EventKind::AgentLost => "agent-lost",
        pb::EventKind::AgentBack => "agent-back",
        pb::EventKind::CongestionPredicted => "congestion-predicted",
        pb::EventKind::CongestionSeen => "congestion-seen",
        pb::EventKind::CongestionCleared => "congestion-cleared",
        pb::EventKind::EventsMissed => "events-missed",
        pb::EventKind::JobAdmitted => "job-admitted",
        pb::EventKind::JobAtRisk => "job-at-risk",
        pb::EventKind::JobOnTrack => "job-on-track",
        pb::EventKind::LinkUnresolved => "link-unresolved",
        pb::EventKind::LinkResolved => "link-resolved",
        pb::EventKind::Unspecified => "unspecified",
    }
}

fn class_name(class: i32) -> &'static str {
    match pb::TrafficClass::try_from(class).unwrap_or(pb::TrafficClass::Unspecified) {
        pb::TrafficClass::AiSync => "ai-sync",
        pb::TrafficClass::AiBulk => "ai-bulk",
        pb::TrafficClass::BestEffort => "best-effort",
        pb::TrafficClass::Unspecified => "",
    }
}

fn plan_row(plan: &pb::Plan) -> PlanRow {
    let metrics = plan.metrics.unwrap_or_default();
    let status = pb::PlanStatus::try_from(plan.status)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("PLAN_STATUS_")
                .to_lowercase()
        })
        .unwrap_or_default();
    let trigger = pb::PlanTrigger::try_from(plan.trigger)
        .map(|t| {
            t.as_str_name()
                .trim_start_matches("PLAN_TRIGGER_")
                .to_lowercase()
                .replace('_', "-")
        })
        .unwrap_or_default();
    let proposal = match pb::ProposalState::try_from(plan.proposal_state) {
        Ok(pb::ProposalState::Proposed) => "proposed",
        Ok(pb::ProposalState::Approved) => "approved",
        Ok(pb::ProposalState::Expired) => "expired",
        _ => "",
    };
    PlanRow {
        name: plan.name.clone(),
        version: plan.version,
        status,
        trigger,
        reason: plan.reason.clone(),
        creator: plan.creator.clone(),
        created_ms: plan.create_time.as_ref().map_or(0, timestamp_ms),
        mlu: metrics.mlu,
        ai_sync_satisfaction: metrics.ai_sync_satisfaction,
        ai_bulk_satisfaction: metrics.ai_bulk_satisfaction,
        best_effort_satisfaction: metrics.best_effort_satisfaction,
        worst_failure_mlu: metrics.worst_failure_mlu,
        proposal: proposal.to_string(),
        pending_nodes: plan
            .pending_nodes
            .iter()
            .map(|n| n.trim_start_matches("nodes/").to_string())
            .collect(),
        predicted_before: plan.figures.as_ref().map(|f| f.predicted_mlu_before),
        predicted_after: plan.figures.as_ref().map(|f| f.predicted_mlu_after),
        routes_changed: plan.figures.as_ref().map(|f| f.routes_changed),
    }
}

fn apply_topology(snapshot: &mut Snapshot, topology: &pb::Topology) {
    let wan: std::collections::HashSet<&str> = topology
        .nodes
        .iter()
        .filter(|n| n.role == pb::NodeRole::WanRouter as i32)
        .map(|n| n.name.trim_start_matches("nodes/"))
        .collect();
    let old: BTreeMap<String, LinkRow> = snapshot
        .links
        .drain(..)
        .map(|l| (l.id.clone(), l))
        .collect();
    snapshot.topology_name = topology.display_name.clone();
    snapshot.topology_revision = topology.revision;
    snapshot.sites = topology
        .sites
        .iter()
        .map(|s| s.name.trim_start_matches("sites/").to_string())
        .collect();
    snapshot.links = topology
        .links
        .iter()
        .map(|link| {
            let id = link.name.trim_start_matches("links/").to_string();
            let src = link.src_node.trim_start_matches("nodes/").to_string();
            let dst = link.dst_node.trim_start_matches("nodes/").to_string();
            let mut row = old.get(&id).cloned().unwrap_or_default();
            row.wan = wan.contains(src.as_str()) && wan.contains(dst.as_str());
            row.id = id;
            row.src = src;
            row.dst = dst;
            row.capacity_bps = link.capacity_bps as f64;
            row.latency_us = link.latency.as_ref().map_or(0, duration_ms) * 1000;
            row.admin_up = link.admin_state != pb::AdminState::Down as i32;
            row
        })
        .collect();
    let links: std::collections::HashSet<&String> = snapshot.links.iter().map(|l| &l.id).collect();
    snapshot.history.retain(|id, _| links.contains(id));
}

async fn load_plans(clients: &mut Clients, shared: &Shared) -> Result<(), String> {
    counted(shared);
    let listed = match clients
        .plans
        .list_plans(pb::ListPlansRequest {
            page_size: 200,
            page_token: String::new(),
        })
        .await
    {
        Ok(answer) => answer.into_inner().plans,
        Err(status) => return session_error(status),
    };
    let rows: Vec<PlanRow> = listed.iter().map(plan_row).collect();
    let proposal = rows.iter().find(|p| p.proposal == "proposed").cloned();
    let current = rows
        .iter()
        .find(|p| matches!(p.status.as_str(), "applying" | "applied" | "partial"))
        .cloned();
    update(shared, |s| {
        s.plans = rows;
        s.proposal = proposal;
        if current.is_some() {
            s.current_plan = current;
        }
    });
    if shared
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .topology_revision
        == 0
    {
        counted(shared);
        match clients
            .topology
            .get_topology(pb::GetTopologyRequest {})
            .await
        {
            Ok(answer) => {
                if let Some(topology) = answer.into_inner().topology {
                    update(shared, |s| apply_topology(s, &topology));
                }
            }
            Err(status) => return session_error(status),
        }
    }
    Ok(())
}

async fn load_control(clients: &mut Clients, shared: &Shared) -> Result<(), String> {
    counted(shared);
    let control = match clients
        .plans
        .get_control_loop(pb::GetControlLoopRequest {})
        .await
    {
        Ok(answer) => answer.into_inner().control_loop.unwrap_or_default(),
        Err(status) => return session_error(status),
    };
    let mode = pb::ControlLoopMode::try_from(control.mode)
        .map(|m| {
            m.as_str_name()
                .trim_start_matches("CONTROL_LOOP_MODE_")
                .to_lowercase()
        })
        .unwrap_or_default();
    update(shared, |s| {
        s.control = Some(ControlLoop {
            mode,
            interval_ms: control.interval.as_ref().map_or(0, duration_ms),
            congestion_threshold: control.congestion_threshold,
            last_decision: control.last_decision,
            predicted_mlu: control.predicted_mlu,
            measured_mlu: control.measured_mlu,
            replans: control.replans,
            last_latency_ms: control.last_loop_latency.as_ref().map(duration_ms),
            idle_reason: control.idle_reason,
        });
    });
    Ok(())
}

async fn load_jobs(clients: &mut Clients, shared: &Shared) -> Result<(), String> {
    let mut jobs = Vec::new();
    let mut token = String::new();
    // At most 5,000 jobs (five pages).
    for _ in 0..5 {
        counted(shared);
        let answer = match clients
            .intents
            .list_jobs(pb::ListJobsRequest {
                page_size: 1000,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
        {
            Ok(answer) => answer.into_inner(),
            Err(status) => return session_error(status),
        };
        jobs.extend(answer.jobs);
        if answer.next_page_token.is_empty() {
            break;
        }
        token = answer.next_page_token;
    }
    update(shared, |s| {
        let satisfaction = |class: &str| {
            s.current_plan.as_ref().map(|p| match class {
                "ai-sync" => p.ai_sync_satisfaction,
                "ai-bulk" => p.ai_bulk_satisfaction,
                _ => p.best_effort_satisfaction,
            })
        };
        let endpoint = |e: &pb::Endpoint| match &e.kind {
            Some(pb::endpoint::Kind::Site(site)) => site.trim_start_matches("sites/").to_string(),
            Some(pb::endpoint::Kind::Prefix(prefix)) => prefix.clone(),
            None => String::new(),
        };
        let rows: Vec<JobRow> = jobs
            .iter()
            .map(|job| {
                let class = class_name(job.traffic_class).to_string();
                let state = pb::JobState::try_from(job.state)
                    .map(|s| {
                        s.as_str_name()
                            .trim_start_matches("JOB_STATE_")
                            .to_lowercase()
                    })
                    .unwrap_or_default();
                JobRow {
                    name: job.name.clone(),
                    tenant: job.tenant.clone(),
                    satisfaction: (state == "active").then(|| satisfaction(&class)).flatten(),
                    class,
                    sources: job.sources.iter().map(endpoint).collect(),
                    destinations: job.destinations.iter().map(endpoint).collect(),
                    rate_bps: job.rate_bps,
                    volume_bytes: job.volume_bytes,
                    deadline_ms: job.deadline.as_ref().map(timestamp_ms),
                    state,
                    measured_bps: None,
                    guaranteed_bps: job
                        .admission
                        .as_ref()
                        .filter(|a| a.outcome != pb::AdmissionOutcome::NotGuaranteed as i32)
                        .map(|a| a.guaranteed_bps),
                    admission: job.admission.as_ref().map(|a| a.detail.clone()),
                    progress: job.progress.as_ref().map(|p| JobProgressRow {
                        moved_share: if job.volume_bytes > 0 {
                            (p.moved_bytes as f64 / job.volume_bytes as f64).clamp(0.0, 1.0)
                        } else {
                            0.0
                        },
                        on_track: p.on_track,
                        detail: p.detail.clone(),
                    }),
                }
            })
            .collect();
        s.jobs = rows;
    });
    Ok(())
}

async fn load_forecasts(clients: &mut Clients, shared: &Shared) -> Result<(), String> {
    counted(shared);
    let answer = match clients
        .telemetry
        .list_link_forecasts(pb::ListLinkForecastsRequest {})
        .await
    {
        Ok(answer) => answer.into_inner(),
        // A controller without collectors: nothing to show, not an error.
        Err(status)
            if status.code() == tonic::Code::Unavailable
                && !status.message().contains("database") =>
        {
            return Ok(());
        }
        Err(status) => return session_error(status),
    };
    let start = answer.interval_start_time.as_ref().map(timestamp_ms);
    update(shared, |s| {
        let by_id: BTreeMap<&str, &pb::LinkForecast> = answer
            .links
            .iter()
            .map(|l| (l.link.trim_start_matches("links/"), l))
            .collect();
        let mut history = Vec::new();
        for row in &mut s.links {
            let Some(forecast) = by_id.get(row.id.as_str()) else {
                continue;
            };
            row.rate_bps = if forecast.has_counters {
                forecast.counter_bps
            } else {
                forecast.estimated_bps
            };
            row.has_counters = forecast.has_counters;
            row.predicted_bps = forecast.predicted_bps;
            row.predicted_low_bps = forecast.predicted_low_bps;
            row.predicted_high_bps = forecast.predicted_high_bps;
            row.congestion_probability = forecast.congestion_probability;
            row.dominant_class = class_name(forecast.dominant_class).to_string();
            row.disagreement_bps = forecast.disagreement_bps;
            row.agrees = forecast.agrees;
            row.wan = forecast.covered_by_flows || row.wan;
            if let Some(start) = start {
                history.push((row.id.clone(), start, row.utilization()));
            }
        }
        for (id, start, utilization) in history {
            s.record_history(&id, start, utilization);
        }
        s.forecast_start_ms = start;
    });
    Ok(())
}

async fn load_matrix(clients: &mut Clients, shared: &Shared) -> Result<(), String> {
    counted(shared);
    let answer = match clients
        .telemetry
        .list_demand_matrices(pb::ListDemandMatricesRequest { max_intervals: 1 })
        .await
    {
        Ok(answer) => answer.into_inner(),
        Err(status) if status.code() == tonic::Code::Unavailable => return Ok(()),
        Err(status) => return session_error(status),
    };
    let Some(matrix) = answer.matrices.into_iter().last() else {
        return Ok(());
    };
    let cells = matrix
        .entries
        .iter()
        .map(|e| {
            (
                (
                    e.src_node.trim_start_matches("nodes/").to_string(),
                    e.dst_node.trim_start_matches("nodes/").to_string(),
                    class_name(e.traffic_class).to_string(),
                ),
                e.rate_bps,
            )
        })
        .collect();
    update(shared, |s| {
        s.matrix = Some(Matrix {
            start_ms: matrix.start_time.as_ref().map_or(0, timestamp_ms),
            cells,
            unknown_exporter_bytes: matrix.unknown_exporter_bytes,
            transit_bytes: matrix.transit_bytes,
        });
    });
    Ok(())
}

async fn load_flows(clients: &mut Clients, shared: &Shared) -> Result<(), String> {
    counted(shared);
    let now = now_ms();
    let ts = |ms: i64| prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: i32::try_from(ms.rem_euclid(1000) * 1_000_000).unwrap_or(0),
    };
    let answer = match clients
        .telemetry
        .list_top_flows(pb::ListTopFlowsRequest {
            start_time: Some(ts(now - 60_000)),
            end_time: Some(ts(now)),
            limit: 20,
        })
        .await
    {
        Ok(answer) => answer.into_inner(),
        Err(status) if status.code() == tonic::Code::Unavailable => return Ok(()),
        Err(status) => return session_error(status),
    };
    update(shared, |s| {
        s.flows = answer
            .flows
            .iter()
            .map(|f| FlowRow {
                src: f.src_prefix.trim_end_matches("/32").to_string(),
                dst: f.dst_prefix.trim_end_matches("/32").to_string(),
                protocol: f.protocol,
                src_port: f.src_port,
                dst_port: f.dst_port,
                dscp: f.dscp,
                bytes: f.bytes,
            })
            .collect();
    });
    Ok(())
}

/// A rate as the form takes it: `10G`, `400M`, `2.5G`, `1000`.
pub fn parse_rate(text: &str) -> Option<i64> {
    let text = text.trim();
    let (number, factor) = match text.chars().last()? {
        'K' | 'k' => (&text[..text.len() - 1], 1e3),
        'M' | 'm' => (&text[..text.len() - 1], 1e6),
        'G' | 'g' => (&text[..text.len() - 1], 1e9),
        'T' | 't' => (&text[..text.len() - 1], 1e12),
        _ => (text, 1.0),
    };
    let value: f64 = number.parse().ok()?;
    let bps = value * factor;
    (1.0..9.2e18).contains(&bps).then_some(bps as i64)
}

fn job_of(form: &JobForm) -> Result<pb::Job, String> {
    let class = match form.class.as_str() {
        "ai-sync" => pb::TrafficClass::AiSync,
        "ai-bulk" => pb::TrafficClass::AiBulk,
        _ => pb::TrafficClass::BestEffort,
    };
    let rate = parse_rate(&form.rate)
        .ok_or_else(|| format!("rate: {:?} is not a rate such as 10G or 400M", form.rate))?;
    let site = |s: &str| pb::Endpoint {
        kind: Some(pb::endpoint::Kind::Site(format!("sites/{s}"))),
    };
    Ok(pb::Job {
        tenant: form.tenant.clone(),
        traffic_class: class as i32,
        sources: vec![site(&form.source)],
        destinations: vec![site(&form.destination)],
        rate_bps: rate,
        ..Default::default()
    })
}

/// Carries out a change; the answer becomes the status line.
async fn execute(clients: &mut Clients, shared: &Shared, command: Command) -> Result<(), String> {
    counted(shared);
    let (what, result): (String, Result<String, tonic::Status>) = match command {
        Command::Show(_) | Command::InspectPlan(_) => return Ok(()),
        Command::CreateJob(form) => {
            let job = match job_of(&form) {
                Ok(job) => job,
                Err(error) => {
                    tell(shared, Tone::Error, error);
                    return Ok(());
                }
            };
            let answer = clients
                .intents
                .create_job(pb::CreateJobRequest {
                    job_id: form.id.clone(),
                    job: Some(job),
                })
                .await;
            (
                format!("create jobs/{}", form.id),
                answer.map(|a| {
                    let job = a.into_inner().job.unwrap_or_default();
                    match job.admission {
                        Some(admission) => format!("created {}: {}", job.name, admission.detail),
                        None => format!("created {}", job.name),
                    }
                }),
            )
        }
        Command::CancelJob(name) => {
            let answer = clients
                .intents
                .cancel_job(pb::CancelJobRequest { name: name.clone() })
                .await;
            (
                format!("cancel {name}"),
                answer.map(|_| format!("cancelled {name}")),
            )
        }
        Command::ApplyPlan => {
            let answer = clients
                .plans
                .apply_plan(pb::ApplyPlanRequest {
                    reason: "applied from the operator TUI".into(),
                })
                .await;
            (
                "apply a plan".into(),
                answer.map(|a| operation_text(a.into_inner().operation)),
            )
        }
        Command::ApprovePlan(name) => {
            let answer = clients
                .plans
                .approve_plan(pb::ApprovePlanRequest {
                    name: name.clone(),
                    reason: String::new(),
                })
                .await;
            (
                format!("approve {name}"),
                answer.map(|a| operation_text(a.into_inner().operation)),
            )
        }
        Command::RollbackPlan(name) => {
            let answer = clients
                .plans
                .rollback_plan(pb::RollbackPlanRequest { name: name.clone() })
                .await;
            (
                format!("roll back to {name}"),
                answer.map(|a| operation_text(a.into_inner().operation)),
            )
        }
    };
    match result {
        Ok(text) => {
            tell(shared, Tone::Info, text);
            load_jobs(clients, shared).await?;
            load_plans(clients, shared).await?;
        }
        Err(status) if status.code() == tonic::Code::PermissionDenied => tell(
            shared,
            Tone::Warning,
            format!(
                "not allowed to {what} with this token (it needs an operator token): {}",
                status.message()
            ),
        ),
        Err(status) => {
            tell(shared, Tone::Error, format!("{what}: {}", status.message()));
            session_error(status)?;
        }
    }
    Ok(())
}

fn operation_text(operation: Option<pb::Operation>) -> String {
    match operation.and_then(|o| o.result) {
        Some(pb::operation::Result::Response(plan)) => format!(
            "{} stored ({}), MLU {:.2}",
            plan.name,
            plan.reason,
            plan.metrics.map_or(0.0, |m| m.mlu)
        ),
        Some(pb::operation::Result::Error(error)) => format!("failed: {}", error.message),
        None => "done".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_as_the_form_takes_them() {
        assert_eq!(parse_rate("10G"), Some(10_000_000_000));
        assert_eq!(parse_rate("2.5g"), Some(2_500_000_000));
        assert_eq!(parse_rate("400M"), Some(400_000_000));
        assert_eq!(parse_rate("1000"), Some(1000));
        for bad in ["", "G", "ten", "-1G", "0", "1e30"] {
            assert_eq!(parse_rate(bad), None, "{bad}");
        }
    }
}
