//! What the dashboard shows: plain data, filled by the engine from API
//! answers and stream events, read by the renderer one frame at a time.
//! Nothing here knows protobuf or the network.

use std::collections::{BTreeMap, VecDeque};

/// Events kept for the events view.
pub const MAX_EVENTS: usize = 2000;
/// Points of utilisation history kept per link.
pub const MAX_HISTORY: usize = 600;

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
