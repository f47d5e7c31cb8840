//! IntentService: AI jobs. Validation turns a request into a [`NewJob`] or
//! names the first wrong field; demands are derived here, once, and stored
//! with the job.

use std::collections::HashSet;

use aiwan_api::v1 as pb;
use aiwan_api::v1::intent_service_server::IntentService;
use tonic::{Request, Response, Status};

use super::{AppState, decode_page_token, into_page, page_size, store_status};
use crate::auth::caller;
use crate::convert::{FieldViolation, parse_prefix, resource_id, timestamp, timestamp_ms};
use crate::model::{
    Admission, AdmissionOutcome, AdmissionPolicy, CollectiveFlows, DemandRecord, Endpoint,
    JobProgress, JobRecord, JobState, NewJob, PathPin, SyncBurst, TrafficClass, now_ms,
};

/// Longest job ID and tenant.
pub const MAX_NAME_LEN: usize = 63;
/// Most endpoints on one side of a job.
pub const MAX_ENDPOINTS: usize = 64;
/// The highest rate a job may ask for, bit/s (1 Pbit/s): far beyond any
/// network, and far from where arithmetic on rates could overflow.
pub const MAX_RATE_BPS: i64 = 1_000_000_000_000_000;
/// Highest priority.
pub const MAX_PRIORITY: i32 = 1000;

pub struct IntentApi {
    state: AppState,
}

impl IntentApi {
    pub fn new(state: AppState) -> IntentApi {
        IntentApi { state }
    }
}

fn check_job_id(job_id: &str) -> Result<(), FieldViolation> {
    let bad = |reason: &str| Err(FieldViolation::new("job_id", reason));
    if job_id.is_empty() {
        return bad("required");
    }
    if job_id.len() > MAX_NAME_LEN {
        return bad("longer than 63 characters");
    }
    if !job_id.starts_with(|c: char| c.is_ascii_lowercase()) {
        return bad("must start with a lower-case letter");
    }
    if job_id.ends_with('-') {
        return bad("must not end with a hyphen");
    }
    if !job_id
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return bad("only lower-case letters, digits and hyphens are allowed");
    }
    Ok(())
}

fn check_tenant(tenant: &str) -> Result<(), FieldViolation> {
    let bad = |reason: &str| Err(FieldViolation::new("job.tenant", reason));
    if tenant.is_empty() {
        return bad("required");
    }
    if tenant.len() > MAX_NAME_LEN {
        return bad("longer than 63 characters");
    }
    if !tenant
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return bad("only letters, digits, '-', '_' and '.' are allowed");
    }
    Ok(())
}

fn endpoints(
    field: &str,
    given: &[pb::Endpoint],
    sites: &HashSet<String>,
) -> Result<Vec<Endpoint>, FieldViolation> {
    if given.is_empty() {
        return Err(FieldViolation::new(
            field,
            "at least one endpoint is required",
        ));
    }
    if given.len() > MAX_ENDPOINTS {
        return Err(FieldViolation::new(field, "more than 64 endpoints"));
    }
    let mut out: Vec<Endpoint> = Vec::with_capacity(given.len());
    for (i, endpoint) in given.iter().enumerate() {
        let parsed = match &endpoint.kind {
            None => {
                return Err(FieldViolation::new(
                    format!("{field}[{i}]"),
                    "set either site or prefix",
                ));
            }
            Some(pb::endpoint::Kind::Site(name)) => {
                let site_field = format!("{field}[{i}].site");
                let id = resource_id(&site_field, name, "sites")?;
                if !sites.contains(id) {
                    return Err(FieldViolation::new(
                        site_field,
                        format!("site {name} does not exist in the topology"),
                    ));
                }
                Endpoint::Site(id.to_string())
            }
            Some(pb::endpoint::Kind::Prefix(text)) => {
                Endpoint::Prefix(parse_prefix(&format!("{field}[{i}].prefix"), text)?)
            }
        };
        if out.contains(&parsed) {
            return Err(FieldViolation::new(format!("{field}[{i}]"), "listed twice"));
        }
        out.push(parsed);
    }
    Ok(out)
}

/// Checks a job as given to CreateJob or PreviewPlan and derives its demands.
pub fn validate_job(
    job_id: &str,
    job: Option<&pb::Job>,
    sites: &HashSet<String>,
    now_ms: i64,
) -> Result<NewJob, FieldViolation> {
    check_job_id(job_id)?;
    let job = job.ok_or_else(|| FieldViolation::new("job", "required"))?;
    check_tenant(&job.tenant)?;
    let class = match pb::TrafficClass::try_from(job.traffic_class) {
        Ok(pb::TrafficClass::AiSync) => TrafficClass::AiSync,
        Ok(pb::TrafficClass::AiBulk) => TrafficClass::AiBulk,
        Ok(pb::TrafficClass::BestEffort) => TrafficClass::BestEffort,
        Ok(pb::TrafficClass::Unspecified) | Err(_) => {
            return Err(FieldViolation::new(
                "job.traffic_class",
                "must be AI_SYNC, AI_BULK or BEST_EFFORT",
            ));
        }
    };
    // An unset policy is the tenant's, which the service resolves
    // ([`resolve_policy`]).
    let admission_policy = policy_of(job)?.unwrap_or_default();
    let collective = validate_collective(job)?;
    let (sources, destinations) = match &collective {
        // Member i sends to member i + 1, the last to the first.
        Some((members, _)) => {
            let mut next = members.clone();
            next.rotate_left(1);
            (members.clone(), next)
        }
        None => {
            let sources = endpoints("job.sources", &job.sources, sites)?;
            let destinations = endpoints("job.destinations", &job.destinations, sites)?;
            if let Some(i) = destinations.iter().position(|d| sources.contains(d)) {
                return Err(FieldViolation::new(
                    format!("job.destinations[{i}]"),
                    "is also a source",
                ));
            }
            (sources, destinations)
        }
    };
    if job.rate_bps < 0 {
        return Err(FieldViolation::new("job.rate_bps", "must be positive"));
    }
    if job.volume_bytes < 0 {
        return Err(FieldViolation::new("job.volume_bytes", "must be positive"));
    }
    let start_ms = match &job.start_time {
        Some(ts) => timestamp_ms("job.start_time", ts)?,
        None => now_ms,
    };
    let end_ms = job
        .end_time
        .as_ref()
        .map(|ts| timestamp_ms("job.end_time", ts))
        .transpose()?;
    let deadline_ms = job
        .deadline
        .as_ref()
        .map(|ts| timestamp_ms("job.deadline", ts))
        .transpose()?;
    if let Some(end) = end_ms {
        if end <= start_ms {
            return Err(FieldViolation::new(
                "job.end_time",
                "must be after job.start_time",
            ));
        }
        if end <= now_ms {
            return Err(FieldViolation::new("job.end_time", "is in the past"));
        }
    }
    if let Some(deadline) = deadline_ms {
        if deadline <= now_ms {
            return Err(FieldViolation::new("job.deadline", "is in the past"));
        }
        if deadline <= start_ms {
            return Err(FieldViolation::new(
                "job.deadline",
                "must be after job.start_time",
            ));
        }
    }
    // The rate the planner must reserve: the given rate, or for a volume the
    // rate that moves it between start (or now, if later) and the deadline.
    let rate_bps = match class {
        TrafficClass::AiSync | TrafficClass::BestEffort => {
            if job.rate_bps == 0 {
                return Err(FieldViolation::new(
                    "job.rate_bps",
                    format!("must be positive for {} jobs", class.as_str()),
                ));
            }
            job.rate_bps
        }
        TrafficClass::AiBulk => {
            let for_volume = match (job.volume_bytes, deadline_ms) {
                (0, _) => 0,
                (_, None) => {
                    return Err(FieldViolation::new(
                        "job.deadline",
                        "required when job.volume_bytes is set",
                    ));
                }
                (volume, Some(deadline)) => {
                    let window_ms = i128::from(deadline - start_ms.max(now_ms));
                    let bits_ms = i128::from(volume) * 8 * 1000;
                    i64::try_from((bits_ms + window_ms - 1) / window_ms).map_err(|_| {
                        FieldViolation::new("job.volume_bytes", "too large to move by the deadline")
                    })?
                }
            };
            if job.rate_bps == 0 && for_volume == 0 {
                return Err(FieldViolation::new(
                    "job.rate_bps",
                    "ai-bulk jobs need a positive rate_bps, or volume_bytes and a deadline",
                ));
            }
            job.rate_bps.max(for_volume)
        }
    };
    let max_latency_us = match &job.max_latency {
        None => None,
        Some(d) if d.seconds < 0 || d.nanos < 0 || d.nanos >= 1_000_000_000 => {
            return Err(FieldViolation::new(
                "job.max_latency",
                "must be a positive duration",
            ));
        }
        Some(d) => {
            let us = d
                .seconds
                .checked_mul(1_000_000)
                .and_then(|us| us.checked_add(i64::from(d.nanos / 1000)))
                .ok_or_else(|| FieldViolation::new("job.max_latency", "is out of range"))?;
            if us <= 0 {
                return Err(FieldViolation::new(
                    "job.max_latency",
                    "must be a positive duration",
                ));
            }
            Some(us)
        }
    };
    if !(0..=MAX_PRIORITY).contains(&job.priority) {
        return Err(FieldViolation::new(
            "job.priority",
            "must be between 0 and 1000",
        ));
    }
    let pin = validate_pin(job, sources.len(), destinations.len())?;
    // The rate is shared evenly by the pairs, rounded up so that no pair
    // gets zero.
    if rate_bps > MAX_RATE_BPS {
        let field = if job.rate_bps >= rate_bps {
            "job.rate_bps"
        } else {
            "job.volume_bytes"
        };
        return Err(FieldViolation::new(
            field,
            format!(
                "{rate_bps} bit/s is more than {MAX_RATE_BPS} (1 Pbit/s), which no network carries"
            ),
        ));
    }
    // A collective's pairs are its ring's hops, not every source with
    // every destination.
    let pairs = match collective {
        Some(_) => sources.len() as i64,
        None => (sources.len() * destinations.len()) as i64,
    };
    let per_pair = rate_bps
        .checked_add(pairs - 1)
        .map(|rounded| rounded / pairs)
        .ok_or_else(|| FieldViolation::new("job.rate_bps", "overflows when shared by the pairs"))?;
    let burst = validate_burst(job, class, per_pair)?;
    let demands = match collective {
        Some(_) => (0..sources.len() as i64)
            .map(|i| DemandRecord {
                src_position: i,
                dst_position: i,
                rate_bps: per_pair,
            })
            .collect(),
        None => (0..sources.len() as i64)
            .flat_map(|src| {
                (0..destinations.len() as i64).map(move |dst| DemandRecord {
                    src_position: src,
                    dst_position: dst,
                    rate_bps: per_pair,
                })
            })
            .collect(),
    };
    Ok(NewJob {
        job_id: job_id.to_string(),
        tenant: job.tenant.clone(),
        class,
        sources,
        destinations,
        rate_bps: job.rate_bps,
        volume_bytes: job.volume_bytes,
        deadline_ms,
        start_ms,
        end_ms,
        priority: i64::from(job.priority),
        max_latency_us,
        demands,
        pin,
        collective: collective.map(|(_, flows)| flows),
        admission_policy,
        burst,
    })
}

/// Most iterations per second a burst may declare.
pub const MAX_ITERATIONS_PER_SECOND: f64 = 100_000.0;

/// `burst`: an ai-sync job's bytes per pair and iteration, and its
/// iterations per second. The job's rate is the burst's: one iteration's
/// bytes at a pair's share of it (`per_pair`) must take at most the
/// iteration period, or the job's own figures cannot hold.
fn validate_burst(
    job: &pb::Job,
    class: TrafficClass,
    per_pair: i64,
) -> Result<Option<SyncBurst>, FieldViolation> {
    let Some(burst) = &job.burst else {
        return Ok(None);
    };
    if class != TrafficClass::AiSync {
        return Err(FieldViolation::new(
            "job.burst",
            "only ai-sync jobs declare a burst",
        ));
    }
    if !(1..=MAX_RATE_BPS).contains(&burst.bytes_per_iteration) {
        return Err(FieldViolation::new(
            "job.burst.bytes_per_iteration",
            "must be positive and at most 1e15",
        ));
    }
    let rate = burst.iterations_per_second;
    if !(rate.is_finite() && rate > 0.0 && rate <= MAX_ITERATIONS_PER_SECOND) {
        return Err(FieldViolation::new(
            "job.burst.iterations_per_second",
            "must be positive and at most 100000",
        ));
    }
    let period_us = (1e6 / rate).round() as i64;
    let transfer_us = burst.bytes_per_iteration as f64 * 8.0 / per_pair.max(1) as f64 * 1e6;
    if transfer_us > period_us as f64 {
        return Err(FieldViolation::new(
            "job.burst",
            format!(
                "{} bytes per pair at {per_pair} bit/s (the job's rate per pair) take {:.1} ms, \
                 longer than an iteration ({:.1} ms)",
                burst.bytes_per_iteration,
                transfer_us / 1000.0,
                period_us as f64 / 1000.0
            ),
        ));
    }
    Ok(Some(SyncBurst {
        bytes_per_iteration: burst.bytes_per_iteration,
        iteration_period_us: period_us.max(1),
    }))
}

/// The policy a job names, `None` when unset.
fn policy_of(job: &pb::Job) -> Result<Option<AdmissionPolicy>, FieldViolation> {
    match pb::AdmissionPolicy::try_from(job.admission_policy) {
        Ok(pb::AdmissionPolicy::Unspecified) => Ok(None),
        Ok(pb::AdmissionPolicy::AdmitPartial) => Ok(Some(AdmissionPolicy::AdmitPartial)),
        Ok(pb::AdmissionPolicy::Reject) => Ok(Some(AdmissionPolicy::Reject)),
        Ok(pb::AdmissionPolicy::Queue) => Ok(Some(AdmissionPolicy::Queue)),
        Err(_) => Err(FieldViolation::new(
            "job.admission_policy",
            "must be ADMIT_PARTIAL, REJECT or QUEUE (or unset)",
        )),
    }
}

/// The policy of a job as given (and validated): its own, else its
/// tenant's.
pub fn resolve_policy(job: &pb::Job, config: &crate::config::AdmissionConfig) -> AdmissionPolicy {
    policy_of(job)
        .ok()
        .flatten()
        .unwrap_or_else(|| config.policy_for(&job.tenant))
}

/// The protobuf form of an admission answer.
pub fn admission_to_pb(admission: &Admission) -> pb::Admission {
    pb::Admission {
        outcome: match admission.outcome {
            AdmissionOutcome::Admitted => pb::AdmissionOutcome::Admitted,
            AdmissionOutcome::Partial => pb::AdmissionOutcome::Partial,
            AdmissionOutcome::Queued => pb::AdmissionOutcome::Queued,
            AdmissionOutcome::Rejected => pb::AdmissionOutcome::Rejected,
            AdmissionOutcome::NotGuaranteed => pb::AdmissionOutcome::NotGuaranteed,
        } as i32,
        requested_bps: admission.requested_bps,
        within_latency_bound_bps: admission.within_bound_bps,
        beyond_latency_bound_bps: admission.beyond_bound_bps,
        guaranteed_bps: admission.guaranteed_bps(),
        expected_completion_time: admission.expected_completion_ms.map(timestamp),
        detail: admission.detail.clone(),
        evaluate_time: Some(timestamp(admission.evaluated_ms)),
        iteration_transfer_time: admission.iteration_transfer_us.map(duration_us),
    }
}

/// Admits `job` beside the stored jobs: the answer, computed off the async
/// threads (it solves LPs).
pub async fn admit(state: &AppState, job: &NewJob, now_ms: i64) -> Result<Admission, Status> {
    let (topology, existing) = super::topology_and_jobs(state).await?;
    let job = job.clone();
    let quota = state.tenants.quota_of(&job.tenant);
    tokio::task::spawn_blocking(move || {
        let policy = job.admission_policy;
        crate::admission::admit_within_quota(&topology, &existing, &job, policy, quota, now_ms)
    })
    .await
    .map_err(|e| Status::internal(format!("admission task failed: {e}")))
}

/// Most members of one collective.
pub const MAX_COLLECTIVE_MEMBERS: usize = 256;

/// `collective`: its members (prefixes, in ring order) and how its flows
/// are told apart. A collective names its hosts itself, so `sources`,
/// `destinations` and a pinned path are refused beside it.
fn validate_collective(
    job: &pb::Job,
) -> Result<Option<(Vec<Endpoint>, CollectiveFlows)>, FieldViolation> {
    let Some(collective) = &job.collective else {
        return Ok(None);
    };
    for (field, given) in [
        ("job.sources", job.sources.is_empty()),
        ("job.destinations", job.destinations.is_empty()),
        ("job.pinned_path", job.pinned_path.is_empty()),
    ] {
        if !given {
            return Err(FieldViolation::new(
                field,
                "must be empty with job.collective (its members are the endpoints)",
            ));
        }
    }
    let members = &collective.members;
    if !(2..=MAX_COLLECTIVE_MEMBERS).contains(&members.len()) {
        return Err(FieldViolation::new(
            "job.collective.members",
            format!("must list 2 to {MAX_COLLECTIVE_MEMBERS} hosts"),
        ));
    }
    let mut out: Vec<Endpoint> = Vec::with_capacity(members.len());
    for (i, member) in members.iter().enumerate() {
        let field = format!("job.collective.members[{i}]");
        let prefix = match &member.kind {
            Some(pb::endpoint::Kind::Prefix(text)) => {
                parse_prefix(&format!("{field}.prefix"), text)?
            }
            Some(pb::endpoint::Kind::Site(_)) | None => {
                return Err(FieldViolation::new(
                    field,
                    "must be a prefix the member host originates (a site is not a host)",
                ));
            }
        };
        let member = Endpoint::Prefix(prefix);
        if out.contains(&member) {
            return Err(FieldViolation::new(field, "listed twice"));
        }
        out.push(member);
    }
    let ip_protocol = match collective.ip_protocol {
        6 => 6,
        17 => 17,
        _ => {
            return Err(FieldViolation::new(
                "job.collective.ip_protocol",
                "must be 6 (TCP) or 17 (UDP)",
            ));
        }
    };
    let last = u64::from(collective.first_port) + members.len() as u64 - 1;
    let first_port = u16::try_from(collective.first_port)
        .ok()
        .filter(|p| *p > 0 && last <= u64::from(u16::MAX))
        .ok_or_else(|| {
            FieldViolation::new(
                "job.collective.first_port",
                format!(
                    "must be 1 to 65535 with room for {} ports after it",
                    members.len() - 1
                ),
            )
        })?;
    Ok(Some((
        out,
        CollectiveFlows {
            ip_protocol,
            first_port,
        },
    )))
}

/// Longest pinned path, in routers.
const MAX_PINNED_PATH: usize = 64;

/// `pinned_path` and `flow`: well-formed here; whether the routers exist
/// and are linked is the planner's to say (the topology may change
/// between the job and its plan), in the plan's unplaced demands.
fn validate_pin(
    job: &pb::Job,
    sources: usize,
    destinations: usize,
) -> Result<Option<PathPin>, FieldViolation> {
    if job.pinned_path.is_empty() {
        if job.flow.is_some() {
            return Err(FieldViolation::new("job.flow", "only with job.pinned_path"));
        }
        return Ok(None);
    }
    if sources != 1 || destinations != 1 {
        return Err(FieldViolation::new(
            "job.pinned_path",
            "needs exactly one source and one destination",
        ));
    }
    if !(2..=MAX_PINNED_PATH).contains(&job.pinned_path.len()) {
        return Err(FieldViolation::new(
            "job.pinned_path",
            format!("must name 2 to {MAX_PINNED_PATH} routers"),
        ));
    }
    let mut path: Vec<String> = Vec::with_capacity(job.pinned_path.len());
    for (i, name) in job.pinned_path.iter().enumerate() {
        let field = format!("job.pinned_path[{i}]");
        let id = resource_id(&field, name, "nodes")?;
        if path.iter().any(|seen| seen == id) {
            return Err(FieldViolation::new(
                &field,
                format!("{name} appears twice: a path visits a router once"),
            ));
        }
        path.push(id.to_string());
    }
    let (ip_protocol, destination_ports) = match &job.flow {
        None => (None, None),
        Some(flow) => {
            let ip_protocol = match flow.ip_protocol {
                None => None,
                Some(p) => Some(u8::try_from(p).map_err(|_| {
                    FieldViolation::new("job.flow.ip_protocol", "must be 0 to 255")
                })?),
            };
            let ports = match (flow.destination_port_first, flow.destination_port_last) {
                (0, 0) => None,
                (first, last) => {
                    let first = u16::try_from(first).ok().filter(|p| *p > 0);
                    let last = u16::try_from(last).ok().filter(|p| *p > 0);
                    let (Some(first), Some(last)) = (first, last) else {
                        return Err(FieldViolation::new(
                            "job.flow.destination_port_first",
                            "ports must be 1 to 65535 (both 0 for any)",
                        ));
                    };
                    if first > last {
                        return Err(FieldViolation::new(
                            "job.flow.destination_port_last",
                            "must not be below destination_port_first",
                        ));
                    }
                    if !matches!(ip_protocol, Some(6 | 17 | 132)) {
                        return Err(FieldViolation::new(
                            "job.flow.ip_protocol",
                            "ports need a protocol with ports: 6 (TCP), 17 (UDP) or 132 (SCTP)",
                        ));
                    }
                    Some((first, last))
                }
            };
            (ip_protocol, ports)
        }
    };
    Ok(Some(PathPin {
        path,
        ip_protocol,
        destination_ports,
    }))
}

fn endpoint_to_pb(endpoint: &Endpoint) -> pb::Endpoint {
    pb::Endpoint {
        kind: Some(match endpoint {
            Endpoint::Site(site) => pb::endpoint::Kind::Site(format!("sites/{site}")),
            Endpoint::Prefix(prefix) => pb::endpoint::Kind::Prefix(prefix.to_string()),
        }),
    }
}

fn class_to_pb(class: TrafficClass) -> pb::TrafficClass {
    match class {
        TrafficClass::AiSync => pb::TrafficClass::AiSync,
        TrafficClass::AiBulk => pb::TrafficClass::AiBulk,
        TrafficClass::BestEffort => pb::TrafficClass::BestEffort,
    }
}

/// The protobuf form of a stored job, with its state at `now_ms`.
pub fn job_to_pb(record: &JobRecord, now_ms: i64) -> pb::Job {
    let job = &record.job;
    let state = match record.state_at(now_ms) {
        JobState::Scheduled => pb::JobState::Scheduled,
        JobState::Active => pb::JobState::Active,
        JobState::Finished => pb::JobState::Finished,
        JobState::Cancelled => pb::JobState::Cancelled,
        JobState::Queued => pb::JobState::Queued,
    };
    let endpoint_at = |list: &[Endpoint], position: i64| {
        usize::try_from(position)
            .ok()
            .and_then(|i| list.get(i))
            .map(endpoint_to_pb)
    };
    pb::Job {
        name: format!("jobs/{}", job.job_id),
        tenant: job.tenant.clone(),
        traffic_class: class_to_pb(job.class) as i32,
        sources: job.sources.iter().map(endpoint_to_pb).collect(),
        destinations: job.destinations.iter().map(endpoint_to_pb).collect(),
        rate_bps: job.rate_bps,
        volume_bytes: job.volume_bytes,
        deadline: job.deadline_ms.map(timestamp),
        start_time: Some(timestamp(job.start_ms)),
        end_time: job.end_ms.map(timestamp),
        priority: i32::try_from(job.priority).unwrap_or(MAX_PRIORITY),
        state: state as i32,
        demands: job
            .demands
            .iter()
            .map(|demand| pb::Demand {
                source: endpoint_at(&job.sources, demand.src_position),
                destination: endpoint_at(&job.destinations, demand.dst_position),
                rate_bps: demand.rate_bps,
            })
            .collect(),
        create_time: Some(timestamp(record.created_ms)),
        update_time: Some(timestamp(record.updated_ms)),
        creator: record.creator.clone(),
        max_latency: job.max_latency_us.map(duration_us),
        pinned_path: job
            .pin
            .iter()
            .flat_map(|pin| pin.path.iter().map(|node| format!("nodes/{node}")))
            .collect(),
        flow: job
            .pin
            .as_ref()
            .filter(|pin| pin.ip_protocol.is_some() || pin.destination_ports.is_some())
            .map(|pin| pb::FlowMatch {
                ip_protocol: pin.ip_protocol.map(u32::from),
                destination_port_first: pin.destination_ports.map_or(0, |(f, _)| u32::from(f)),
                destination_port_last: pin.destination_ports.map_or(0, |(_, l)| u32::from(l)),
            }),
        collective: job.collective.map(|flows| pb::Collective {
            members: job.sources.iter().map(endpoint_to_pb).collect(),
            ip_protocol: u32::from(flows.ip_protocol),
            first_port: u32::from(flows.first_port),
        }),
        admission_policy: match job.admission_policy {
            AdmissionPolicy::AdmitPartial => pb::AdmissionPolicy::AdmitPartial,
            AdmissionPolicy::Reject => pb::AdmissionPolicy::Reject,
            AdmissionPolicy::Queue => pb::AdmissionPolicy::Queue,
        } as i32,
        admission: record.admission.as_ref().map(admission_to_pb),
        burst: job.burst.map(|burst| pb::SyncBurst {
            bytes_per_iteration: burst.bytes_per_iteration,
            iterations_per_second: 1e6 / burst.iteration_period_us.max(1) as f64,
        }),
        progress: record.progress.as_ref().map(progress_to_pb),
    }
}

/// The protobuf form of a volume job's progress.
pub fn progress_to_pb(progress: &JobProgress) -> pb::JobProgress {
    pb::JobProgress {
        moved_bytes: progress.moved_bytes,
        measured: progress.measured,
        pace_bps: progress.pace_bps,
        expected_completion_time: progress.expected_completion_ms.map(timestamp),
        on_track: progress.on_track,
        evaluate_time: Some(timestamp(progress.evaluated_ms)),
        detail: progress.detail.clone(),
    }
}

/// A protobuf duration of `us` microseconds.
fn duration_us(us: i64) -> prost_types::Duration {
    prost_types::Duration {
        seconds: us / 1_000_000,
        nanos: ((us % 1_000_000) * 1000) as i32,
    }
}

/// Admits queued jobs, oldest first, once all of each fits (what the jobs
/// ahead of it leave, those admitted in the same round included); runs
/// every `admission.requeue_interval_ms` until the controller stops.
pub async fn requeue(state: AppState) {
    let period = std::time::Duration::from_millis(state.admission.requeue_interval_ms);
    let stopping = state.stopping();
    tokio::pin!(stopping);
    loop {
        tokio::select! {
            () = &mut stopping => return,
            () = tokio::time::sleep(period) => {}
        }
        if let Err(error) = requeue_once(&state).await {
            tracing::warn!(%error, "admission: queued jobs not looked at");
        }
    }
}

/// One round of [`requeue`]; returns the jobs admitted.
pub async fn requeue_once(state: &AppState) -> Result<Vec<String>, Status> {
    let now = now_ms();
    let queued: Vec<JobRecord> = {
        let mut jobs = state.store.uncancelled_jobs().await.map_err(store_status)?;
        jobs.retain(|r| r.state_at(now) == JobState::Queued);
        jobs.sort_by_key(|r| (r.created_ms, r.job.job_id.clone()));
        jobs
    };
    let mut admitted = Vec::new();
    for record in queued {
        let _admitting = state.admission_lock.lock().await;
        let answer = admit(state, &record.job, now).await?;
        if answer.outcome != AdmissionOutcome::Admitted {
            continue;
        }
        let job_id = record.job.job_id.clone();
        match state
            .store
            .update_admission(&job_id, &answer, "admission", now)
            .await
        {
            Ok(_) => {}
            // Cancelled meanwhile: nothing to admit.
            Err(crate::store::StoreError::FailedPrecondition(_)) => continue,
            Err(other) => return Err(store_status(other)),
        }
        state.events.publish(
            crate::events::EventKind::JobAdmitted,
            format!("jobs/{job_id}"),
            format!("queued job admitted: {}", answer.detail),
            &[
                ("guaranteed_bps", answer.guaranteed_bps() as f64),
                ("queued_ms", (now - record.created_ms) as f64),
            ],
        );
        admitted.push(job_id);
    }
    Ok(admitted)
}

/// The sites of the stored topology, for endpoint checks.
pub async fn known_sites(state: &AppState) -> Result<HashSet<String>, Status> {
    Ok(state
        .store
        .site_ids()
        .await
        .map_err(store_status)?
        .into_iter()
        .collect())
}

#[tonic::async_trait]
impl IntentService for IntentApi {
    async fn create_job(
        &self,
        request: Request<pb::CreateJobRequest>,
    ) -> Result<Response<pb::CreateJobResponse>, Status> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        let sites = known_sites(&self.state).await?;
        let now = now_ms();
        let mut job = validate_job(&request.job_id, request.job.as_ref(), &sites, now)?;
        if let Some(given) = &request.job {
            job.admission_policy = resolve_policy(given, &self.state.admission);
        }
        // One admission at a time: two jobs are never promised the same
        // spare capacity.
        let _admitting = self.state.admission_lock.lock().await;
        let admission = admit(&self.state, &job, now).await?;
        if admission.outcome == AdmissionOutcome::Rejected {
            return Err(Status::failed_precondition(format!(
                "job.rate_bps: {}",
                admission.detail
            )));
        }
        let record = self
            .state
            .store
            .create_job(&job, Some(&admission), &caller.actor(), now)
            .await
            .map_err(|error| match error {
                // The issue that defined validation asks INVALID_ARGUMENT for
                // a duplicate name, like every other bad field (AIP-133 would
                // say ALREADY_EXISTS); the message names the field either way.
                crate::store::StoreError::AlreadyExists(what) => {
                    Status::invalid_argument(format!("job_id: {what} already exists"))
                }
                other => store_status(other),
            })?;
        tracing::info!(
            job = %job.job_id,
            tenant = %job.tenant,
            actor = %caller.actor(),
            admission = %admission.detail,
            "job created"
        );
        Ok(Response::new(pb::CreateJobResponse {
            job: Some(job_to_pb(&record, now)),
        }))
    }

    async fn get_job(
        &self,
        request: Request<pb::GetJobRequest>,
    ) -> Result<Response<pb::GetJobResponse>, Status> {
        let name = request.into_inner().name;
        let job_id = resource_id("name", &name, "jobs")?;
        let record = self
            .state
            .store
            .get_job(job_id)
            .await
            .map_err(store_status)?
            .ok_or_else(|| Status::not_found(format!("{name} not found")))?;
        Ok(Response::new(pb::GetJobResponse {
            job: Some(job_to_pb(&record, now_ms())),
        }))
    }

    async fn list_jobs(
        &self,
        request: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        let request = request.into_inner();
        let limit = page_size("page_size", request.page_size, 50)?;
        let after = decode_page_token("page_token", &request.page_token)?;
        let tenant = (!request.tenant.is_empty()).then_some(request.tenant.as_str());
        // One extra row tells whether another page exists.
        let records = self
            .state
            .store
            .list_jobs(tenant, &after, limit + 1)
            .await
            .map_err(store_status)?;
        let (records, next_page_token) = into_page(records, limit, |r| r.job.job_id.clone());
        let now = now_ms();
        Ok(Response::new(pb::ListJobsResponse {
            jobs: records.iter().map(|r| job_to_pb(r, now)).collect(),
            next_page_token,
        }))
    }

    async fn cancel_job(
        &self,
        request: Request<pb::CancelJobRequest>,
    ) -> Result<Response<pb::CancelJobResponse>, Status> {
        let caller = caller(&request)?;
        let name = request.into_inner().name;
        let job_id = resource_id("name", &name, "jobs")?;
        let now = now_ms();
        let record = self
            .state
            .store
            .cancel_job(job_id, &caller.actor(), now)
            .await
            .map_err(store_status)?;
        tracing::info!(job = %job_id, actor = %caller.actor(), "job cancelled");
        Ok(Response::new(pb::CancelJobResponse {
            job: Some(job_to_pb(&record, now)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000;

    fn sites() -> HashSet<String> {
        ["dc1", "dc2"].into_iter().map(String::from).collect()
    }

    fn site(name: &str) -> pb::Endpoint {
        pb::Endpoint {
            kind: Some(pb::endpoint::Kind::Site(name.to_string())),
        }
    }

    fn bulk_job() -> pb::Job {
        pb::Job {
            tenant: "team-a".into(),
            traffic_class: pb::TrafficClass::AiBulk as i32,
            sources: vec![site("sites/dc1")],
            destinations: vec![site("sites/dc2")],
            volume_bytes: 1_000_000_000,
            deadline: Some(timestamp(NOW + 100_000)),
            ..pb::Job::default()
        }
    }

    #[test]
    fn bulk_rate_comes_from_volume_and_deadline() {
        let job = validate_job("ckpt-1", Some(&bulk_job()), &sites(), NOW).expect("valid");
        // 8e9 bits over 100 s.
        assert_eq!(job.demands.len(), 1);
        assert_eq!(job.demands[0].rate_bps, 80_000_000);
        assert_eq!(job.start_ms, NOW);
    }

    #[test]
    fn rate_is_shared_by_pairs_rounding_up() {
        let job = pb::Job {
            traffic_class: pb::TrafficClass::AiSync as i32,
            rate_bps: 10,
            sources: vec![site("sites/dc1")],
            destinations: vec![
                site("sites/dc2"),
                pb::Endpoint {
                    kind: Some(pb::endpoint::Kind::Prefix("10.9.0.0/16".into())),
                },
                pb::Endpoint {
                    kind: Some(pb::endpoint::Kind::Prefix("10.8.0.0/16".into())),
                },
            ],
            ..bulk_job()
        };
        let job = validate_job("sync", Some(&job), &sites(), NOW).expect("valid");
        let rates: Vec<i64> = job.demands.iter().map(|d| d.rate_bps).collect();
        assert_eq!(rates, [4, 4, 4]);
    }

    fn prefix(text: &str) -> pb::Endpoint {
        pb::Endpoint {
            kind: Some(pb::endpoint::Kind::Prefix(text.into())),
        }
    }

    fn collective_job() -> pb::Job {
        pb::Job {
            traffic_class: pb::TrafficClass::AiSync as i32,
            rate_bps: 300,
            sources: Vec::new(),
            destinations: Vec::new(),
            collective: Some(pb::Collective {
                members: ["10.0.1.1/32", "10.0.3.1/32", "10.0.2.1/32"]
                    .into_iter()
                    .map(prefix)
                    .collect(),
                ip_protocol: 6,
                first_port: 5201,
            }),
            ..bulk_job()
        }
    }

    #[test]
    fn a_collective_is_a_ring_of_pairs() {
        let job = validate_job("ring", Some(&collective_job()), &sites(), NOW).expect("valid");
        // Member i sends to member i + 1, the last to the first; the rate
        // is shared by the three hops.
        let pairs: Vec<(String, String, i64)> = job
            .demands
            .iter()
            .map(|d| {
                let at = |list: &[Endpoint], i: i64| match &list[i as usize] {
                    Endpoint::Prefix(p) => p.to_string(),
                    Endpoint::Site(s) => s.clone(),
                };
                (
                    at(&job.sources, d.src_position),
                    at(&job.destinations, d.dst_position),
                    d.rate_bps,
                )
            })
            .collect();
        assert_eq!(
            pairs,
            [
                ("10.0.1.1/32".into(), "10.0.3.1/32".into(), 100),
                ("10.0.3.1/32".into(), "10.0.2.1/32".into(), 100),
                ("10.0.2.1/32".into(), "10.0.1.1/32".into(), 100),
            ]
        );
        assert_eq!(
            job.collective,
            Some(CollectiveFlows {
                ip_protocol: 6,
                first_port: 5201
            })
        );
        // And it reads back as it was given.
        let record = stored(job);
        let back = job_to_pb(&record, NOW);
        assert_eq!(back.collective, collective_job().collective);
    }

    /// A validated job as the store returns it.
    fn stored(job: NewJob) -> JobRecord {
        JobRecord::new(job, "t", NOW, None)
    }

    #[test]
    fn a_burst_is_checked_against_the_job_s_own_rate() {
        // The collective's three hops share 3 Gbit/s: 1 Gbit/s each. 10 MB
        // per iteration take 80 ms of an iteration at 10 a second.
        let burst = |bytes, per_second| {
            let mut job = collective_job();
            job.rate_bps = 3_000_000_000;
            job.burst = Some(pb::SyncBurst {
                bytes_per_iteration: bytes,
                iterations_per_second: per_second,
            });
            job
        };
        let job =
            validate_job("ring", Some(&burst(10_000_000, 10.0)), &sites(), NOW).expect("valid");
        let declared = job.burst.expect("burst");
        assert_eq!(declared.iteration_period_us, 100_000);
        let record = stored(job);
        assert_eq!(
            job_to_pb(&record, NOW)
                .burst
                .map(|b| b.iterations_per_second),
            Some(10.0)
        );
        let refused = |job: pb::Job| {
            let error = validate_job("ring", Some(&job), &sites(), NOW).expect_err("refused");
            format!("{}: {}", error.field, error.reason)
        };
        // 20 MB take 160 ms: longer than the iteration.
        assert!(
            refused(burst(20_000_000, 10.0)).starts_with("job.burst: 20000000 bytes per pair"),
            "{}",
            refused(burst(20_000_000, 10.0))
        );
        assert_eq!(
            refused(burst(10_000_000, 0.0)),
            "job.burst.iterations_per_second: must be positive and at most 100000"
        );
        assert_eq!(
            refused(burst(10_000_000, f64::NAN)),
            "job.burst.iterations_per_second: must be positive and at most 100000"
        );
        assert_eq!(
            refused(burst(0, 10.0)),
            "job.burst.bytes_per_iteration: must be positive and at most 1e15"
        );
        let mut bulk = bulk_job();
        bulk.burst = burst(1, 1.0).burst;
        assert_eq!(
            refused(bulk),
            "job.burst: only ai-sync jobs declare a burst"
        );
    }

    #[test]
    fn collective_mistakes_are_named() {
        let with = |change: &dyn Fn(&mut pb::Job)| {
            let mut job = collective_job();
            change(&mut job);
            let error = validate_job("ring", Some(&job), &sites(), NOW).expect_err("refused");
            format!("{}: {}", error.field, error.reason)
        };
        let collective = |job: &mut pb::Job| job.collective.as_mut().expect("collective").clone();
        let cases: Vec<(String, &str)> = vec![
            (
                with(&|job| job.sources.push(site("sites/dc1"))),
                "job.sources: must be empty with job.collective",
            ),
            (
                with(&|job| {
                    let mut c = collective(job);
                    c.members.truncate(1);
                    job.collective = Some(c);
                }),
                "job.collective.members: must list 2 to 256 hosts",
            ),
            (
                with(&|job| {
                    let mut c = collective(job);
                    c.members[2] = prefix("10.0.1.1/32");
                    job.collective = Some(c);
                }),
                "job.collective.members[2]: listed twice",
            ),
            (
                with(&|job| {
                    let mut c = collective(job);
                    c.members[1] = site("sites/dc1");
                    job.collective = Some(c);
                }),
                "job.collective.members[1]: must be a prefix",
            ),
            (
                with(&|job| {
                    let mut c = collective(job);
                    c.ip_protocol = 132;
                    job.collective = Some(c);
                }),
                "job.collective.ip_protocol: must be 6 (TCP) or 17 (UDP)",
            ),
            (
                with(&|job| {
                    let mut c = collective(job);
                    c.first_port = 65534;
                    job.collective = Some(c);
                }),
                "job.collective.first_port: must be 1 to 65535 with room for 2 ports after it",
            ),
        ];
        for (message, expected) in cases {
            assert!(
                message.contains(expected),
                "{message:?} should say {expected:?}"
            );
        }
    }
}
