//! What the dashboard shows: plain data, filled by the engine from API
//! answers and stream events, read by the renderer one frame at a time.
//! Nothing here knows protobuf or the network.

use std::collections::{BTreeMap, VecDeque};

/// Events kept for the events view.
pub const MAX_EVENTS: usize = 2000;
/// Points of utilisation history kept per link.
pub const MAX_HISTORY: usize = 600;
/// Plans whose routes and allocations are kept (the current one, the one
/// being looked at and the ones they are compared with).
pub const MAX_PLAN_DETAILS: usize = 8;

/// How the engine stands with the controller.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum ConnectionState {
    #[default]
    Connecting,
    Connected,
    /// The controller went away; the engine tries again.
    Disconnected {
        error: String,
        since_ms: i64,
    },
}

/// The control loop as the overview shows it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ControlLoop {
    /// `auto`, `recommend` or `off`.
    pub mode: String,
    pub interval_ms: i64,
    pub congestion_threshold: f64,
    pub last_decision: String,
    pub predicted_mlu: f64,
    pub measured_mlu: f64,
    pub replans: i64,
    pub last_latency_ms: Option<i64>,
    pub idle_reason: String,
}

/// One directed link, with what the closed loop knows of it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LinkRow {
    /// `node:interface`.
    pub id: String,
    pub src: String,
    pub dst: String,
    pub capacity_bps: f64,
    pub latency_us: i64,
    pub admin_up: bool,
    /// Now: the counters' rate, or the flow estimate.
    pub rate_bps: f64,
    pub has_counters: bool,
    pub predicted_bps: f64,
    pub predicted_low_bps: f64,
    pub predicted_high_bps: f64,
    pub congestion_probability: f64,
    pub dominant_class: String,
    /// Counters minus flows, and whether within the sampling error.
    pub disagreement_bps: f64,
    pub agrees: bool,
    /// Between two WAN routers.
    pub wan: bool,
}

impl LinkRow {
    pub fn utilization(&self) -> f64 {
        if self.capacity_bps > 0.0 {
            self.rate_bps / self.capacity_bps
        } else {
            0.0
        }
    }

    pub fn predicted_utilization(&self) -> f64 {
        if self.capacity_bps > 0.0 {
            self.predicted_bps / self.capacity_bps
        } else {
            0.0
        }
    }
}

/// A plan's header.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PlanRow {
    /// `plans/N`.
    pub name: String,
    pub version: i64,
    pub status: String,
    pub trigger: String,
    pub reason: String,
    pub creator: String,
    pub created_ms: i64,
    pub mlu: f64,
    pub ai_sync_satisfaction: f64,
    pub ai_bulk_satisfaction: f64,
    pub best_effort_satisfaction: f64,
    pub worst_failure_mlu: f64,
    /// `proposed`, `approved`, `expired`, or empty.
    pub proposal: String,
    pub pending_nodes: Vec<String>,
    /// Predicted MLU before and after, for the loop's plans.
    pub predicted_before: Option<f64>,
    pub predicted_after: Option<f64>,
    pub routes_changed: Option<i32>,
}

/// How a plan places one node-to-node demand of one class.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AllocationRow {
    pub src_node: String,
    pub dst_node: String,
    /// Empty for a node between sites.
    pub src_site: String,
    pub dst_site: String,
    pub class: String,
    pub rate_bps: f64,
    /// Each path's nodes (source first) and its share of the demand.
    pub paths: Vec<(Vec<String>, f64)>,
    pub pinned: bool,
}

/// What a plan asks of one router.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RouterRow {
    pub node: String,
    /// `applied`, `pending` or `failed`.
    pub push_status: String,
    /// Destination node -> next hop node -> share of the traffic.
    pub routes: BTreeMap<String, BTreeMap<String, f64>>,
    pub pins: i32,
    pub rate_limits: i32,
}

/// A plan's allocations and routers (fetched for the views that show
/// them; a plan's routes never change, its push status does).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PlanDetail {
    pub version: i64,
    pub allocations: Vec<AllocationRow>,
    pub routers: Vec<RouterRow>,
    pub fetched_ms: i64,
}

/// One router's part of the difference between two plans.
#[derive(Debug, Clone, PartialEq)]
pub struct RouterDiff {
    pub node: String,
    pub push_status: String,
    /// One entry per destination whose next hops moved, e.g.
    /// `dc2-edge: wan-a 100%→40%, wan-b +60%`.
    pub changes: Vec<String>,
}

/// Shares closer than this are the same (rounding of the plan's weights).
const SHARE_EPSILON: f64 = 0.005;

/// Per router of `new`, what changed against `old` (every route is new
/// when there is no `old`); routers `old` had and `new` does not are
/// listed as losing their routes.
pub fn plan_diff(new: &PlanDetail, old: Option<&PlanDetail>) -> Vec<RouterDiff> {
    let empty = BTreeMap::new();
    let before = |node: &str| {
        old.and_then(|o| o.routers.iter().find(|r| r.node == node))
            .map_or(&empty, |r| &r.routes)
    };
    let percent = |share: f64| format!("{:.0}%", share * 100.0);
    let mut diffs = Vec::new();
    for router in &new.routers {
        let was = before(&router.node);
        let mut changes = Vec::new();
        let destinations: std::collections::BTreeSet<&String> =
            router.routes.keys().chain(was.keys()).collect();
        for destination in destinations {
            let now_hops = router.routes.get(destination);
            let was_hops = was.get(destination);
            let hops: std::collections::BTreeSet<&String> = now_hops
                .into_iter()
                .flat_map(|h| h.keys())
                .chain(was_hops.into_iter().flat_map(|h| h.keys()))
                .collect();
            let mut moved = Vec::new();
            for hop in hops {
                let a = was_hops.and_then(|h| h.get(hop)).copied();
                let b = now_hops.and_then(|h| h.get(hop)).copied();
                match (a, b) {
                    (Some(a), Some(b)) if (a - b).abs() >= SHARE_EPSILON => {
                        moved.push(format!("{hop} {}→{}", percent(a), percent(b)));
                    }
                    (None, Some(b)) => moved.push(format!("{hop} +{}", percent(b))),
                    (Some(a), None) => moved.push(format!("{hop} -{}", percent(a))),
                    _ => {}
                }
            }
            if now_hops.is_none() {
                changes.push(format!("{destination}: route removed"));
            } else if !moved.is_empty() {
                changes.push(format!("{destination}: {}", moved.join(", ")));
            }
        }
        diffs.push(RouterDiff {
            node: router.node.clone(),
            push_status: router.push_status.clone(),
            changes,
        });
    }
    if let Some(old) = old {
        for router in &old.routers {
            if !new.routers.iter().any(|r| r.node == router.node) && !router.routes.is_empty() {
                diffs.push(RouterDiff {
                    node: router.node.clone(),
                    push_status: String::new(),
                    changes: router
                        .routes
                        .keys()
                        .map(|d| format!("{d}: route removed"))
                        .collect(),
                });
            }
        }
    }
    diffs
}

/// The current plan's paths for a job: its class's demands between its
/// sites (the plan places classes per node pair, not jobs one by one).
pub fn job_paths<'a>(snapshot: &'a Snapshot, job: &JobRow) -> Vec<&'a AllocationRow> {
    let Some(current) = &snapshot.current_plan else {
        return Vec::new();
    };
    let Some(detail) = snapshot.plan_details.get(&current.version) else {
        return Vec::new();
    };
    detail
        .allocations
        .iter()
        .filter(|a| {
            a.class == job.class
                && job.sources.contains(&a.src_site)
                && job.destinations.contains(&a.dst_site)
        })
        .collect()
}

/// An AI job.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct JobRow {
    /// `jobs/ID`.
    pub name: String,
    pub tenant: String,
    pub class: String,
    pub sources: Vec<String>,
    pub destinations: Vec<String>,
    pub rate_bps: i64,
    pub volume_bytes: i64,
    pub deadline_ms: Option<i64>,
    pub state: String,
    /// The class's satisfaction in the current plan.
    pub satisfaction: Option<f64>,
    /// What the last measured interval saw of the job's class between its
    /// endpoints' nodes, when known.
    pub measured_bps: Option<f64>,
    /// What admission guaranteed the job (ai-sync, ai-bulk), and its answer
    /// in words.
    pub guaranteed_bps: Option<i64>,
    pub admission: Option<String>,
    /// A volume job's progress: the share of its volume moved, whether its
    /// schedule meets the deadline, and the schedule's answer in words.
    pub progress: Option<JobProgressRow>,
}

/// A volume job's progress as the controller last measured it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct JobProgressRow {
    pub moved_share: f64,
    pub on_track: bool,
    pub detail: String,
}

/// One event of the stream.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EventRow {
    pub sequence: u64,
    pub at_ms: i64,
    pub kind: String,
    pub subject: String,
    pub message: String,
}

/// The newest measured node-to-node matrix.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Matrix {
    pub start_ms: i64,
    /// (source node, destination node, class) -> bit/s.
    pub cells: BTreeMap<(String, String, String), f64>,
    pub unknown_exporter_bytes: u64,
    pub transit_bytes: u64,
}

/// One of the heaviest flows.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FlowRow {
    pub src: String,
    pub dst: String,
    pub protocol: u32,
    pub src_port: u32,
    pub dst_port: u32,
    pub dscp: u32,
    pub bytes: u64,
}

/// How a message from the engine should look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Tone {
    #[default]
    Info,
    Warning,
    Error,
}

/// Everything one frame draws.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Snapshot {
    pub endpoint: String,
    pub connection: ConnectionState,
    pub topology_name: String,
    pub topology_revision: i64,
    pub sites: Vec<String>,
    pub links: Vec<LinkRow>,
    /// Per link id, (interval start, utilisation) oldest first.
    pub history: BTreeMap<String, VecDeque<(i64, f64)>>,
    pub forecast_start_ms: Option<i64>,
    pub control: Option<ControlLoop>,
    pub current_plan: Option<PlanRow>,
    /// The newest proposal waiting for an operator.
    pub proposal: Option<PlanRow>,
    pub plans: Vec<PlanRow>,
    /// Routes and allocations of some plans, by version (at most
    /// [`MAX_PLAN_DETAILS`]).
    pub plan_details: BTreeMap<i64, PlanDetail>,
    pub jobs: Vec<JobRow>,
    pub events: VecDeque<EventRow>,
    pub matrix: Option<Matrix>,
    pub flows: Vec<FlowRow>,
    /// The last thing the engine wants the operator to know (a refused
    /// action, a result), and when.
    pub message: Option<(Tone, String, i64)>,
    /// When the engine last changed anything.
    pub updated_ms: i64,
    /// Requests the engine made, for the idle-load target.
    pub requests: u64,
}

impl Snapshot {
    /// Adds an event, keeping at most [`MAX_EVENTS`].
    pub fn push_event(&mut self, event: EventRow) {
        if self
            .events
            .back()
            .is_some_and(|last| last.sequence >= event.sequence && event.sequence != 0)
        {
            return; // already have it (a reconnect resends the recent ones)
        }
        if self.events.len() == MAX_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(event);
    }

    /// Keeps a plan's detail, forgetting the oldest beyond
    /// [`MAX_PLAN_DETAILS`] (never the current plan's).
    pub fn keep_plan_detail(&mut self, detail: PlanDetail) {
        self.plan_details.insert(detail.version, detail);
        let current = self.current_plan.as_ref().map(|p| p.version);
        while self.plan_details.len() > MAX_PLAN_DETAILS {
            let Some(oldest) = self
                .plan_details
                .keys()
                .copied()
                .find(|v| Some(*v) != current)
            else {
                break;
            };
            self.plan_details.remove(&oldest);
        }
    }

    /// Records a link's utilisation for an interval.
    pub fn record_history(&mut self, link: &str, start_ms: i64, utilization: f64) {
        let series = self.history.entry(link.to_string()).or_default();
        if series.back().is_some_and(|(at, _)| *at >= start_ms) {
            return;
        }
        if series.len() == MAX_HISTORY {
            series.pop_front();
        }
        series.push_back((start_ms, utilization));
    }

    /// Alarms for the overview: congestion predicted or seen, routers not
    /// in sync, agents lost (from the current plan and the links).
    pub fn alarms(&self) -> Vec<String> {
        let threshold = self
            .control
            .as_ref()
            .map_or(0.8, |c| c.congestion_threshold);
        let mut alarms = Vec::new();
        for link in &self.links {
            if link.utilization() >= threshold {
                alarms.push(format!(
                    "congested   {} at {:.0}%",
                    link.id,
                    link.utilization() * 100.0
                ));
            } else if link.predicted_utilization() >= threshold
                || link.congestion_probability >= 0.5
            {
                alarms.push(format!(
                    "predicted   {} {:.0}% next (p={:.2})",
                    link.id,
                    link.predicted_utilization() * 100.0,
                    link.congestion_probability
                ));
            }
        }
        if let Some(plan) = &self.current_plan
            && !plan.pending_nodes.is_empty()
        {
            alarms.push(format!(
                "not in sync {} router(s): {}",
                plan.pending_nodes.len(),
                plan.pending_nodes.join(", ")
            ));
        }
        let lost: Vec<&EventRow> = self
            .events
            .iter()
            .rev()
            .take(200)
            .filter(|e| e.kind == "agent-lost")
            .collect();
        for event in lost {
            let back = self.events.iter().any(|e| {
                e.kind == "agent-back" && e.subject == event.subject && e.sequence > event.sequence
            });
            if !back {
                alarms.push(format!("agent down  {}", event.subject));
            }
        }
        alarms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (router, destination, [(next hop, share)]).
    type Route<'a> = (&'a str, &'a str, &'a [(&'a str, f64)]);

    fn detail(version: i64, routes: &[Route]) -> PlanDetail {
        let mut routers: BTreeMap<String, RouterRow> = BTreeMap::new();
        for (node, destination, hops) in routes {
            let router = routers
                .entry(node.to_string())
                .or_insert_with(|| RouterRow {
                    node: node.to_string(),
                    push_status: "applied".into(),
                    ..RouterRow::default()
                });
            router.routes.insert(
                destination.to_string(),
                hops.iter().map(|(h, s)| (h.to_string(), *s)).collect(),
            );
        }
        PlanDetail {
            version,
            routers: routers.into_values().collect(),
            ..PlanDetail::default()
        }
    }

    #[test]
    fn the_diff_names_moved_added_and_removed_routes() {
        let old = detail(
            1,
            &[
                ("a", "z", &[("b", 0.5), ("c", 0.5)]),
                ("a", "y", &[("b", 1.0)]),
                ("gone", "z", &[("z", 1.0)]),
            ],
        );
        let new = detail(
            2,
            &[
                ("a", "z", &[("b", 0.502), ("c", 0.498)]),
                ("a", "x", &[("c", 1.0)]),
            ],
        );
        let diffs = plan_diff(&new, Some(&old));
        assert_eq!(diffs.len(), 2, "{diffs:?}");
        // Rounding is not a change; a new and a removed destination are.
        assert_eq!(diffs[0].changes, ["x: c +100%", "y: route removed"]);
        assert_eq!(diffs[1].node, "gone");
        assert_eq!(diffs[1].changes, ["z: route removed"]);
        // Without an earlier plan every route is new.
        assert_eq!(plan_diff(&new, None)[0].changes.len(), 2);
    }

    #[test]
    fn plan_details_are_bounded_and_keep_the_current_one() {
        let mut snapshot = Snapshot {
            current_plan: Some(PlanRow {
                version: 1,
                ..PlanRow::default()
            }),
            ..Snapshot::default()
        };
        for version in 1..=(MAX_PLAN_DETAILS as i64 + 5) {
            snapshot.keep_plan_detail(detail(version, &[]));
        }
        assert_eq!(snapshot.plan_details.len(), MAX_PLAN_DETAILS);
        assert!(snapshot.plan_details.contains_key(&1));
        assert!(
            snapshot
                .plan_details
                .contains_key(&(MAX_PLAN_DETAILS as i64 + 5))
        );
    }
}
