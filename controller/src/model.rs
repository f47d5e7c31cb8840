//! The controller's domain records: what the store keeps and the services
//! convert to and from protobuf.

use ipnet::IpNet;

/// How the planner treats a job's traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrafficClass {
    AiSync,
    AiBulk,
    BestEffort,
}

impl TrafficClass {
    pub fn as_str(self) -> &'static str {
        match self {
            TrafficClass::AiSync => "ai-sync",
            TrafficClass::AiBulk => "ai-bulk",
            TrafficClass::BestEffort => "best-effort",
        }
    }

    pub fn parse(text: &str) -> Option<TrafficClass> {
        match text {
            "ai-sync" => Some(TrafficClass::AiSync),
            "ai-bulk" => Some(TrafficClass::AiBulk),
            "best-effort" => Some(TrafficClass::BestEffort),
            _ => None,
        }
    }
}

/// One end of a job's traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A site ID (not the resource name).
    Site(String),
    Prefix(IpNet),
}

/// A job as accepted by validation, before it is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewJob {
    pub job_id: String,
    pub tenant: String,
    pub class: TrafficClass,
    pub sources: Vec<Endpoint>,
    pub destinations: Vec<Endpoint>,
    /// Bits per second; 0 when the job gives only a volume and deadline.
    pub rate_bps: i64,
    /// Bytes; 0 when not given.
    pub volume_bytes: i64,
    pub deadline_ms: Option<i64>,
    pub start_ms: i64,
    pub end_ms: Option<i64>,
    pub priority: i64,
    /// Longest one-way path latency allowed, microseconds; `None` = default.
    pub max_latency_us: Option<i64>,
    /// One per source-destination pair, in source-major order.
    pub demands: Vec<DemandRecord>,
    /// An explicit path (node IDs) with the packets it takes; `None` when
    /// the planner chooses.
    pub pin: Option<PathPin>,
    /// For a ring collective, its flows: `sources` are the members in ring
    /// order and `destinations[i]` the member `sources[i]` sends to.
    pub collective: Option<CollectiveFlows>,
    /// What happens when its rate cannot all be guaranteed (resolved from
    /// the tenant's policy at creation).
    pub admission_policy: AdmissionPolicy,
    /// An ai-sync job's rhythm, when it declares one.
    pub burst: Option<SyncBurst>,
}

impl NewJob {
    /// A volume job: ai-bulk with bytes to move by a deadline.
    pub fn is_transfer(&self) -> bool {
        self.class == TrafficClass::AiBulk && self.volume_bytes > 0 && self.deadline_ms.is_some()
    }

    /// When the job stops being planned: its end time, else its deadline;
    /// `None` when open-ended. A volume job with bytes left at its deadline
    /// is late, not done: it is planned on (flagged) for as long again as
    /// its window from start to deadline, unless an end time comes first,
    /// so that a sender that never finishes does not hold capacity forever.
    pub fn planned_until_ms(&self) -> Option<i64> {
        match (self.end_ms, self.deadline_ms) {
            (Some(end), _) => Some(end),
            (None, Some(deadline)) if self.is_transfer() => {
                Some(deadline.saturating_add(deadline.saturating_sub(self.start_ms).max(0)))
            }
            (None, deadline) => deadline,
        }
    }
}

/// A training job's synchronisation: each iteration every pair moves
/// `bytes_per_iteration` in a burst at the job's rate. Stored as JSON in
/// `jobs.burst_json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SyncBurst {
    pub bytes_per_iteration: i64,
    /// One over the iterations per second, microseconds.
    pub iteration_period_us: i64,
}

/// What happens to a job whose rate cannot all be guaranteed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AdmissionPolicy {
    /// Accept it with what can be guaranteed.
    #[default]
    AdmitPartial,
    /// Refuse it; nothing is stored.
    Reject,
    /// Keep it queued, unplanned, until all of it fits.
    Queue,
}

impl AdmissionPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            AdmissionPolicy::AdmitPartial => "admit-partial",
            AdmissionPolicy::Reject => "reject",
            AdmissionPolicy::Queue => "queue",
        }
    }

    pub fn parse(text: &str) -> Option<AdmissionPolicy> {
        match text {
            "admit-partial" => Some(AdmissionPolicy::AdmitPartial),
            "reject" => Some(AdmissionPolicy::Reject),
            "queue" => Some(AdmissionPolicy::Queue),
            _ => None,
        }
    }
}

/// How admission answered a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AdmissionOutcome {
    Admitted,
    Partial,
    Queued,
    /// Only in answers that are not stored (PreviewPlan, CreateJob's error).
    Rejected,
    /// Best-effort: nothing is guaranteed.
    NotGuaranteed,
}

/// What admission answered a job; stored as JSON in `jobs.admission_json`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Admission {
    pub outcome: AdmissionOutcome,
    pub requested_bps: i64,
    /// Guaranteed on paths within the job's latency bound.
    pub within_bound_bps: i64,
    /// Guaranteed on longer paths.
    pub beyond_bound_bps: i64,
    /// A volume job: when its volume is through at the guaranteed rate.
    pub expected_completion_ms: Option<i64>,
    /// A job with a burst: one iteration's transfer at the guaranteed
    /// rate, microseconds.
    #[serde(default)]
    pub iteration_transfer_us: Option<i64>,
    pub evaluated_ms: i64,
    pub detail: String,
}

impl Admission {
    pub fn guaranteed_bps(&self) -> i64 {
        self.within_bound_bps.saturating_add(self.beyond_bound_bps)
    }

    /// The share of the job's rate that plans carry: what is guaranteed,
    /// all of it for best-effort (nothing is guaranteed, nothing is held
    /// back), none while queued.
    pub fn planned_share(&self) -> f64 {
        match self.outcome {
            AdmissionOutcome::NotGuaranteed | AdmissionOutcome::Admitted => 1.0,
            AdmissionOutcome::Queued | AdmissionOutcome::Rejected => 0.0,
            AdmissionOutcome::Partial if self.requested_bps > 0 => {
                (self.guaranteed_bps() as f64 / self.requested_bps as f64).clamp(0.0, 1.0)
            }
            AdmissionOutcome::Partial => 1.0,
        }
    }
}

/// How a ring collective's flows are told apart, stored as JSON in
/// `jobs.collective_json`: member `i` sends to destination port
/// `first_port + i`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CollectiveFlows {
    /// 6 (TCP) or 17 (UDP).
    pub ip_protocol: u8,
    pub first_port: u16,
}

/// A job's explicit path, stored as JSON in `jobs.pin_json`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PathPin {
    /// Node IDs, first to last; at least two.
    pub path: Vec<String>,
    /// IP protocol number; any when `None`.
    pub ip_protocol: Option<u8>,
    /// Inclusive destination ports; any when `None`.
    pub destination_ports: Option<(u16, u16)>,
}

/// A source-destination pair of a job and the rate reserved for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DemandRecord {
    /// Index into the job's sources.
    pub src_position: i64,
    /// Index into the job's destinations.
    pub dst_position: i64,
    pub rate_bps: i64,
}

/// A stored job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRecord {
    pub job: NewJob,
    pub cancelled_ms: Option<i64>,
    pub created_ms: i64,
    pub updated_ms: i64,
    pub creator: String,
    /// `None` for jobs stored before admission existed: planned whole.
    pub admission: Option<Admission>,
    /// A volume job's progress and schedule, once the closed loop has
    /// scheduled it.
    pub progress: Option<JobProgress>,
}

/// Where a volume job (ai-bulk with a volume and a deadline) stands: bytes
/// moved as the collectors measured them, and what its schedule, computed
/// with every other transfer, expects. Stored as JSON in
/// `jobs.progress_json`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct JobProgress {
    /// Bytes of the job's flows seen where they enter the WAN.
    pub moved_bytes: i64,
    /// Telemetry up to this time is counted.
    pub measured_until_ms: i64,
    /// Whether any exporter where the job enters the WAN reported its
    /// flows; without one, progress is assumed to follow the schedule.
    pub measured: bool,
    /// The rate plans reserve for it now.
    pub pace_bps: i64,
    /// When the last byte is expected to move; `None` when not within the
    /// schedule's horizon.
    pub expected_completion_ms: Option<i64>,
    /// Whether the schedule meets the deadline.
    pub on_track: bool,
    pub evaluated_ms: i64,
    pub detail: String,
}

/// Where a job stands at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    Scheduled,
    Active,
    Finished,
    Cancelled,
    /// Waiting for capacity: not planned.
    Queued,
}

impl JobRecord {
    /// A record of `job` as stored at `at_ms` by `creator`: not cancelled,
    /// not yet measured.
    pub fn new(
        job: NewJob,
        creator: impl Into<String>,
        at_ms: i64,
        admission: Option<Admission>,
    ) -> JobRecord {
        JobRecord {
            job,
            cancelled_ms: None,
            created_ms: at_ms,
            updated_ms: at_ms,
            creator: creator.into(),
            admission,
            progress: None,
        }
    }

    /// The record with its demands at the rates asked: no admission
    /// answer, no schedule (for the demands' pairs and paths).
    pub fn as_asked(&self) -> JobRecord {
        JobRecord {
            admission: None,
            progress: None,
            ..self.clone()
        }
    }

    /// The state at `now_ms`: cancelled wins, then a volume job's bytes
    /// all moved, then the end of the time it is planned
    /// ([`NewJob::planned_until_ms`]), then the queue, then the start.
    pub fn state_at(&self, now_ms: i64) -> JobState {
        if self.cancelled_ms.is_some() {
            return JobState::Cancelled;
        }
        if self.is_through() {
            return JobState::Finished;
        }
        match self.job.planned_until_ms() {
            Some(end) if now_ms >= end => return JobState::Finished,
            _ => {}
        }
        if self.is_queued() {
            return JobState::Queued;
        }
        if now_ms < self.job.start_ms {
            return JobState::Scheduled;
        }
        JobState::Active
    }

    /// Waiting for capacity (admission policy `queue`).
    pub fn is_queued(&self) -> bool {
        self.admission
            .as_ref()
            .is_some_and(|a| a.outcome == AdmissionOutcome::Queued)
    }

    /// The share of the job's rate that plans carry
    /// ([`Admission::planned_share`]; all of it for jobs stored before
    /// admission existed).
    pub fn planned_share(&self) -> f64 {
        self.admission
            .as_ref()
            .map_or(1.0, Admission::planned_share)
    }

    /// A volume job: ai-bulk with bytes to move by a deadline.
    pub fn is_transfer(&self) -> bool {
        self.job.is_transfer()
    }

    /// A volume job whose bytes have all moved, as last measured.
    pub fn is_through(&self) -> bool {
        self.is_transfer()
            && self
                .progress
                .as_ref()
                .is_some_and(|p| p.moved_bytes >= self.job.volume_bytes)
    }

    /// The rate plans carry for one of the job's pairs: a scheduled
    /// transfer's pace shared by its pairs (the schedule already made room
    /// beside the other guarantees), else the pair's rate times the
    /// planned share.
    pub fn planned_pair_rate_bps(&self, demand: &DemandRecord) -> f64 {
        match &self.progress {
            Some(progress) if self.is_transfer() && !self.is_queued() => {
                progress.pace_bps.max(0) as f64 / self.job.demands.len().max(1) as f64
            }
            _ => demand.rate_bps as f64 * self.planned_share(),
        }
    }
}

/// Where a plan stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanStatus {
    Computed,
    Applying,
    Applied,
    Partial,
    Failed,
    Superseded,
}

impl PlanStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PlanStatus::Computed => "computed",
            PlanStatus::Applying => "applying",
            PlanStatus::Applied => "applied",
            PlanStatus::Partial => "partial",
            PlanStatus::Failed => "failed",
            PlanStatus::Superseded => "superseded",
        }
    }

    pub fn parse(text: &str) -> Option<PlanStatus> {
        [
            PlanStatus::Computed,
            PlanStatus::Applying,
            PlanStatus::Applied,
            PlanStatus::Partial,
            PlanStatus::Failed,
            PlanStatus::Superseded,
        ]
        .into_iter()
        .find(|status| status.as_str() == text)
    }
}

/// Why a plan was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PlanTrigger {
    /// An operator asked (ApplyPlan).
    Operator,
    /// Congestion predicted under the current plan.
    Congestion,
    /// A better plan by the margin.
    Improvement,
    /// An operator returned to an earlier plan.
    Rollback,
    /// The reconcile loop put the previous plan back after a failure.
    AutomaticRollback,
    /// An operator approved a proposal.
    Approval,
}

impl PlanTrigger {
    pub fn as_str(self) -> &'static str {
        match self {
            PlanTrigger::Operator => "operator",
            PlanTrigger::Congestion => "congestion",
            PlanTrigger::Improvement => "improvement",
            PlanTrigger::Rollback => "rollback",
            PlanTrigger::AutomaticRollback => "automatic-rollback",
            PlanTrigger::Approval => "approval",
        }
    }

    pub fn parse(text: &str) -> Option<PlanTrigger> {
        [
            PlanTrigger::Operator,
            PlanTrigger::Congestion,
            PlanTrigger::Improvement,
            PlanTrigger::Rollback,
            PlanTrigger::AutomaticRollback,
            PlanTrigger::Approval,
        ]
        .into_iter()
        .find(|t| t.as_str() == text)
    }

    /// Made by the loop from telemetry, not by a person.
    pub fn is_telemetry(self) -> bool {
        matches!(self, PlanTrigger::Congestion | PlanTrigger::Improvement)
    }
}

/// Where a plan the closed loop recommended stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProposalState {
    /// Waiting for an operator (ApprovePlan).
    Proposed,
    /// Approved: applied as a new plan.
    Approved,
    /// A newer proposal or plan came first.
    Expired,
}

impl ProposalState {
    pub fn as_str(self) -> &'static str {
        match self {
            ProposalState::Proposed => "proposed",
            ProposalState::Approved => "approved",
            ProposalState::Expired => "expired",
        }
    }

    pub fn parse(text: &str) -> Option<ProposalState> {
        [
            ProposalState::Proposed,
            ProposalState::Approved,
            ProposalState::Expired,
        ]
        .into_iter()
        .find(|state| state.as_str() == text)
    }
}

/// A plan to store: its content, and why it was made.
#[derive(Debug, Clone)]
pub struct NewPlan<'a> {
    pub mlu: f64,
    pub metrics_json: &'a str,
    pub allocation_json: &'a str,
    /// Per router, its desired state as JSON.
    pub desired_state: &'a [(String, String)],
    /// One line for people.
    pub reason: &'a str,
    pub trigger: PlanTrigger,
    /// The figures behind the decision, as JSON.
    pub reason_json: &'a str,
    /// Stored as a proposal (status computed), not as the desired state.
    pub proposal: bool,
}

/// A stored plan's header and metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanRecord {
    pub version: i64,
    pub status: PlanStatus,
    pub reason: String,
    pub created_ms: i64,
    pub applied_ms: Option<i64>,
    pub mlu: Option<f64>,
    pub metrics_json: String,
    pub creator: String,
    pub trigger: PlanTrigger,
    /// The figures behind the decision (JSON object).
    pub reason_json: String,
    pub proposal_state: Option<ProposalState>,
}

/// A token as listed (never with its secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub token_id: String,
    pub role: crate::auth::Role,
    pub description: String,
    pub created_ms: i64,
    pub creator: String,
}

/// One row of the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub seq: i64,
    pub at_ms: i64,
    pub actor: String,
    pub action: String,
    pub resource: String,
    pub detail_json: String,
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
