//! Volume jobs (ai-bulk with a volume and a deadline) scheduled over time:
//! the controller's side of [`aiwan_planner::schedule`]. Pure; the closed
//! loop calls it every interval with the bytes it measured, stores the
//! result as each job's [`JobProgress`], and plans reserve each job's pace
//! ([`JobRecord::planned_pair_rate_bps`]).
//!
//! Every other guarantee (ai-sync jobs, ai-bulk jobs given as a rate) is a
//! reservation the schedule works around, in the time windows it holds.
//! Plans reserve each transfer's pace ([`paces`]: at least the even pace
//! to its deadline and what it must move now for later deadlines, at most
//! what the as-soon-as-possible schedule gives it now); the routers' rate
//! limits are work conserving, so a transfer also borrows what is idle and
//! gets ahead, which the next schedule sees in its measured bytes.

use std::collections::{BTreeMap, HashMap};

use aiwan_collectors::store::FlowSelector;
use aiwan_planner::Topology;
use aiwan_planner::allocation::Demand;
use aiwan_planner::classes::ClassDemand;
use aiwan_planner::network::Network;
use aiwan_planner::paths::{PathOptions, ShortestPaths};
use aiwan_planner::schedule::{Calendar, Reservation, Tenant, Transfer, paces};
use ipnet::IpNet;

use crate::config::{ScheduleConfig, TenantsConfig};
use crate::model::{Endpoint, JobProgress, JobRecord, JobState, TrafficClass};
use crate::planning::{PATHS_PER_PAIR, job_demands};

/// What the loop measured of one volume job so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Moved {
    pub bytes: i64,
    /// An exporter where the job enters the WAN reports: its bytes are
    /// measured, not assumed.
    pub measured: bool,
}

/// The schedules of the volume jobs among `jobs` at `now_ms`, by job ID,
/// given what each has moved (`moved`; a job not listed has moved
/// nothing). Jobs whose volume is through are answered without a schedule.
pub fn schedule_transfers(
    topology: &Topology,
    jobs: &[JobRecord],
    moved: &BTreeMap<String, Moved>,
    now_ms: i64,
    config: &ScheduleConfig,
    tenant_shares: &TenantsConfig,
) -> Result<BTreeMap<String, JobProgress>, String> {
    let network = Network::from_topology(topology);
    let mut finder = ShortestPaths::new(&network);
    let mut answers = BTreeMap::new();
    let mut tenant_index: HashMap<String, usize> = HashMap::new();
    let mut tenants: Vec<Tenant> = Vec::new();
    let mut transfers: Vec<Transfer> = Vec::new();
    let mut scheduled: Vec<&JobRecord> = Vec::new();
    let mut reservations: Vec<Reservation> = Vec::new();
    for record in jobs {
        let state = record.state_at(now_ms);
        if !matches!(state, JobState::Active | JobState::Scheduled)
            || record.job.class == TrafficClass::BestEffort
        {
            continue;
        }
        let job = &record.job;
        let at = now_ms.max(job.start_ms);
        let from_s = (job.start_ms - now_ms).max(0) as f64 / 1000.0;
        if !record.is_transfer() {
            // A guarantee the transfers work around, while it lasts.
            let until_s = job
                .end_ms
                .or(job.deadline_ms)
                .map_or(f64::INFINITY, |end| (end - now_ms) as f64 / 1000.0);
            let (demands, _) = job_demands(topology, &network, std::slice::from_ref(record), at);
            for demand in demands.iter().filter(|d| d.rate > 0.0) {
                let mut paths = candidates(&network, &mut finder, demand, true);
                if paths.paths.is_empty() {
                    paths = candidates(&network, &mut finder, demand, false);
                }
                if paths.paths.is_empty() {
                    continue;
                }
                reservations.push(Reservation {
                    demand: paths,
                    from_s,
                    until_s,
                });
            }
            continue;
        }
        let so_far = moved.get(&job.job_id).copied().unwrap_or_default();
        let volume = job.volume_bytes;
        if so_far.bytes >= volume {
            answers.insert(job.job_id.clone(), through(record, so_far, now_ms, volume));
            continue;
        }
        // The job's pairs at any rate: only their paths matter here.
        let whole = record.as_asked();
        let (demands, unresolved) =
            job_demands(topology, &network, std::slice::from_ref(&whole), at);
        let mut pairs: Vec<Demand> = Vec::new();
        for demand in &demands {
            let candidate = candidates(&network, &mut finder, demand, true);
            if !pairs
                .iter()
                .any(|p| p.src == candidate.src && p.dst == candidate.dst)
            {
                pairs.push(candidate);
            }
        }
        if pairs.is_empty() || pairs.iter().any(|p| p.paths.is_empty()) {
            let why = if unresolved.is_empty() {
                "no path between its ends".to_string()
            } else {
                unresolved.join("; ")
            };
            let detail = format!("cannot be scheduled: {why}");
            answers.insert(
                job.job_id.clone(),
                unscheduled(so_far, now_ms, None, detail),
            );
            continue;
        }
        let tenant = *tenant_index.entry(job.tenant.clone()).or_insert_with(|| {
            tenants.push(Tenant {
                weight: tenant_shares.weight_of(&job.tenant),
                quota_bps: tenant_shares.quota_of(&job.tenant).map(|q| q as f64),
            });
            tenants.len() - 1
        });
        let deadline_ms = job.deadline_ms.unwrap_or(now_ms);
        transfers.push(Transfer {
            tenant,
            pairs,
            remaining_bits: (volume - so_far.bytes) as f64 * 8.0,
            release_s: from_s,
            deadline_s: (deadline_ms - now_ms) as f64 / 1000.0,
            max_rate_bps: Vec::new(),
            guaranteed: true,
        });
        scheduled.push(record);
    }
    if transfers.is_empty() {
        return Ok(answers);
    }
    // Twice the furthest deadline, to see when a late transfer finishes,
    // and at least to when the late ones stop being planned.
    let mut horizon_s: f64 = 0.0;
    for (transfer, record) in transfers.iter().zip(&scheduled) {
        horizon_s = horizon_s.max(2.0 * transfer.deadline_s.max(transfer.release_s));
        if transfer.deadline_s <= 0.0 {
            let until_ms = record.job.planned_until_ms().unwrap_or(now_ms);
            horizon_s = horizon_s.max((until_ms - now_ms) as f64 / 1000.0);
        }
    }
    let calendar = calendar_for(horizon_s, config);
    let paced = paces(&network, calendar, &tenants, &reservations, &transfers)
        .map_err(|e| format!("the transfers' schedule could not be computed: {e}"))?;
    let plan = &paced.schedule;
    for ((record, planned), pace) in scheduled.iter().zip(&plan.transfers).zip(&paced.pace_bps) {
        let job = &record.job;
        let so_far = moved.get(&job.job_id).copied().unwrap_or_default();
        let expected = planned
            .completion_s
            .map(|s| now_ms.saturating_add((s * 1000.0).ceil() as i64));
        let deadline_ms = job.deadline_ms.unwrap_or(now_ms);
        let pace_bps = pace.ceil().min(i64::MAX as f64 / 2.0) as i64;
        let mut detail = format!(
            "moved {} of {} ({}); pace {}",
            bytes(so_far.bytes),
            bytes(job.volume_bytes),
            if so_far.measured {
                "measured"
            } else {
                "assumed: no exporter where it enters the WAN"
            },
            crate::admission::rate(pace_bps)
        );
        let late_s = (now_ms - deadline_ms) / 1000;
        match (planned.meets_deadline, expected) {
            (false, Some(done)) if now_ms >= deadline_ms => detail.push_str(&format!(
                "; late: missed its deadline {late_s} s ago, done in about {} s",
                (done - now_ms).max(0).saturating_add(999) / 1000
            )),
            (false, None) if now_ms >= deadline_ms => detail.push_str(&format!(
                "; late: missed its deadline {late_s} s ago, the rest not within {} s",
                calendar.horizon_s() as i64
            )),
            (true, Some(done)) => detail.push_str(&format!(
                "; on track, done {} s before its deadline",
                (deadline_ms - done).max(0) / 1000
            )),
            (true, None) => detail.push_str("; on track"),
            (false, Some(done)) => detail.push_str(&format!(
                "; will miss its deadline by {} s: {} of {} by then",
                (done - deadline_ms).max(0).saturating_add(999) / 1000,
                bytes(so_far.bytes + (planned.by_deadline_bits / 8.0) as i64),
                bytes(job.volume_bytes)
            )),
            (false, None) => detail.push_str(&format!(
                "; will miss its deadline: {} of {} by then, the rest not within {} s",
                bytes(so_far.bytes + (planned.by_deadline_bits / 8.0) as i64),
                bytes(job.volume_bytes),
                (calendar.horizon_s()) as i64
            )),
        }
        if plan.fair_level < 1.0 - 1e-6 {
            detail.push_str(&format!(
                "; tenants share the capacity (each moves at least {:.0}% of its bytes, times its weight, by the deadlines)",
                plan.fair_level * 100.0
            ));
        }
        answers.insert(
            job.job_id.clone(),
            JobProgress {
                moved_bytes: so_far.bytes,
                measured_until_ms: now_ms,
                measured: so_far.measured,
                pace_bps,
                expected_completion_ms: expected,
                on_track: planned.meets_deadline,
                evaluated_ms: now_ms,
                detail,
            },
        );
    }
    Ok(answers)
}

/// A job whose volume is through: no pace, done when it was first seen
/// through (kept from its last progress), on track if that was in time.
fn through(record: &JobRecord, so_far: Moved, now_ms: i64, volume: i64) -> JobProgress {
    let done = record
        .progress
        .as_ref()
        .filter(|p| p.moved_bytes >= volume)
        .and_then(|p| p.expected_completion_ms)
        .unwrap_or(now_ms);
    let deadline = record.job.deadline_ms.unwrap_or(i64::MAX);
    let detail = format!("moved all {}", bytes(volume));
    JobProgress {
        on_track: done <= deadline,
        ..unscheduled(so_far, now_ms, Some(done), detail)
    }
}

/// Progress without a pace: through, or no schedule to be had.
fn unscheduled(
    so_far: Moved,
    now_ms: i64,
    completion_ms: Option<i64>,
    detail: String,
) -> JobProgress {
    JobProgress {
        moved_bytes: so_far.bytes,
        measured_until_ms: now_ms,
        measured: so_far.measured,
        pace_bps: 0,
        expected_completion_ms: completion_ms,
        on_track: false,
        evaluated_ms: now_ms,
        detail,
    }
}

/// Slices of `config.slice_ms` over `horizon_s`, longer when that needs
/// more than `max_slices` of them.
fn calendar_for(horizon_s: f64, config: &ScheduleConfig) -> Calendar {
    let horizon_s = horizon_s.max(config.slice_ms as f64 / 1000.0);
    let shortest_s = config.slice_ms as f64 / 1000.0;
    let slice_s = shortest_s.max(horizon_s / config.max_slices as f64);
    Calendar {
        slice_s,
        slices: ((horizon_s / slice_s).ceil() as usize).clamp(1, config.max_slices),
    }
}

/// A demand's candidate paths: within its latency bound when `bounded`
/// and it has one, its pin alone when pinned.
fn candidates(
    network: &Network,
    finder: &mut ShortestPaths,
    demand: &ClassDemand,
    bounded: bool,
) -> Demand {
    let ends = (demand.src, demand.dst);
    match &demand.pinned_path {
        Some(path) => Demand {
            src: demand.src,
            dst: demand.dst,
            rate: demand.rate,
            paths: vec![path.clone()],
        },
        None => {
            let options = PathOptions {
                max_latency_us: if bounded { demand.max_latency_us } else { None },
                ..PathOptions::k_shortest(PATHS_PER_PAIR)
            };
            Demand::over_candidates(network, finder, ends, demand.rate, &options)
        }
    }
}

/// Which flows are a volume job's: from its sources' prefixes to its
/// destinations', in the ai-bulk class (its DSCP), and of its pinned
/// path's protocol and ports when it names them. `None` when an end has
/// no prefix.
pub fn selector(topology: &Topology, record: &JobRecord) -> Option<FlowSelector> {
    let prefixes = |ends: &[Endpoint]| -> Vec<IpNet> {
        let mut nets = Vec::new();
        for end in ends {
            match end {
                Endpoint::Prefix(net) => nets.push(*net),
                Endpoint::Site(site) => {
                    if let Some(s) = topology.sites.iter().find(|s| &s.id == site) {
                        nets.extend(s.prefixes.iter().copied());
                    }
                    for node in topology
                        .nodes
                        .iter()
                        .filter(|n| n.site.as_ref() == Some(site))
                    {
                        nets.extend(node.prefixes.iter().copied());
                    }
                }
            }
        }
        nets.sort();
        nets.dedup();
        nets
    };
    let sources = prefixes(&record.job.sources);
    let destinations = prefixes(&record.job.destinations);
    if sources.is_empty() || destinations.is_empty() {
        return None;
    }
    let pin = record.job.pin.as_ref();
    Some(FlowSelector {
        sources,
        destinations,
        class: Some(TrafficClass::AiBulk.as_str().to_string()),
        protocol: pin.and_then(|p| p.ip_protocol),
        destination_ports: pin.and_then(|p| p.destination_ports),
    })
}

/// Bytes in decimal units, for details.
fn bytes(value: i64) -> String {
    let v = value.max(0) as f64;
    if v >= 1e12 {
        format!("{:.2} TB", v / 1e12)
    } else if v >= 1e9 {
        format!("{:.2} GB", v / 1e9)
    } else if v >= 1e6 {
        format!("{:.1} MB", v / 1e6)
    } else {
        format!("{} B", value.max(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench_admission::site_to_site_job;
    use crate::model::{DemandRecord, NewJob};

    fn demo() -> Topology {
        aiwan_planner::formats::clab::parse_clab(include_str!("../../lab/ai-wan.clab.yml"))
            .expect("topology")
    }

    /// A volume job dc1 -> dc2 of `gb` gigabytes due `due_s` from 0.
    fn transfer(id: &str, tenant: &str, gb: f64, due_s: i64) -> JobRecord {
        let mut job: NewJob = site_to_site_job(id.into(), TrafficClass::AiBulk, "dc1", "dc2", 1, 0);
        job.tenant = tenant.into();
        job.volume_bytes = (gb * 1e9) as i64;
        job.deadline_ms = Some(due_s * 1000);
        job.demands = vec![DemandRecord {
            src_position: 0,
            dst_position: 0,
            rate_bps: 1,
        }];
        record(job)
    }

    fn record(job: NewJob) -> JobRecord {
        JobRecord::new(job, "test", 0, None)
    }

    fn moved(id: &str, gb: f64) -> BTreeMap<String, Moved> {
        BTreeMap::from([(
            id.to_string(),
            Moved {
                bytes: (gb * 1e9) as i64,
                measured: true,
            },
        )])
    }

    /// The schedules with the default calendar and equal tenants.
    fn run(
        topology: &Topology,
        jobs: &[JobRecord],
        moved: &BTreeMap<String, Moved>,
        now_ms: i64,
    ) -> BTreeMap<String, JobProgress> {
        let (calendar, tenants) = (ScheduleConfig::default(), TenantsConfig::default());
        schedule_transfers(topology, jobs, moved, now_ms, &calendar, &tenants).expect("schedule")
    }

    fn gbps(progress: &JobProgress) -> f64 {
        progress.pace_bps as f64 / 1e9
    }

    #[test]
    fn a_transfer_behind_is_paced_faster_and_one_that_cannot_make_it_is_flagged() {
        let topology = demo();
        // 450 GB in 100 s: 36 Gbit/s of the 90 Gbit/s the four paths carry.
        let job = transfer("ckpt", "a", 450.0, 100);
        let start = run(&topology, std::slice::from_ref(&job), &BTreeMap::new(), 0);
        let start = &start["ckpt"];
        assert!(
            start.on_track && (gbps(start) - 36.0).abs() < 0.1,
            "{start:?}"
        );
        assert!(start.detail.contains("on track"), "{start:?}");
        // Halfway, 100 GB moved instead of 225: 350 GB in 50 s.
        let behind = run(&topology, &[job], &moved("ckpt", 100.0), 50_000);
        let behind = &behind["ckpt"];
        assert!(
            behind.on_track && (gbps(behind) - 56.0).abs() < 0.1,
            "{behind:?}"
        );
        // 2 TB in 100 s needs 160 Gbit/s: flagged, with when it is done.
        let big = transfer("dataset", "a", 2_000.0, 100);
        let late = run(&topology, &[big], &BTreeMap::new(), 0);
        let late = &late["dataset"];
        assert!(!late.on_track, "{late:?}");
        let done = late.expected_completion_ms.expect("within the horizon");
        // 16 Tbit at 90 Gbit/s: 178 s.
        assert!((done - 177_778).abs() < 2_500, "{late:?}");
        assert!(
            late.detail.contains("will miss its deadline by"),
            "{late:?}"
        );
        assert!((gbps(late) - 90.0).abs() < 0.1, "{late:?}");
    }

    #[test]
    fn a_late_transfer_is_planned_on_until_through_or_given_up() {
        let topology = demo();
        // 450 GB due at 100 s; at 120 s 300 GB have moved.
        let mut job = transfer("ckpt", "a", 450.0, 100);
        assert_eq!(job.state_at(120_000), JobState::Active);
        let late = run(
            &topology,
            std::slice::from_ref(&job),
            &moved("ckpt", 300.0),
            120_000,
        );
        let late = &late["ckpt"];
        // 1.2 Tbit at the 90 Gbit/s of the four paths: 13.3 s more, in the
        // second 10 s slice (whose end the schedule gives).
        assert!(
            !late.on_track && (gbps(late) - 90.0).abs() < 0.1,
            "{late:?}"
        );
        assert!(
            late.detail
                .contains("late: missed its deadline 20 s ago, done in about 20 s"),
            "{late:?}"
        );
        // Planned for as long again as its window: until 200 s.
        assert_eq!(job.state_at(199_999), JobState::Active);
        assert_eq!(job.state_at(200_000), JobState::Finished);
        // Through: finished, whenever that is.
        job.progress = Some(late.clone());
        job.progress.as_mut().expect("progress").moved_bytes = job.job.volume_bytes;
        assert_eq!(job.state_at(121_000), JobState::Finished);
        // An end time ends it.
        job.progress = None;
        job.job.end_ms = Some(150_000);
        assert_eq!(job.state_at(150_000), JobState::Finished);
    }

    #[test]
    fn guarantees_are_worked_around_and_a_finished_transfer_needs_nothing() {
        let topology = demo();
        // An ai-sync job holds 80 of the 90 Gbit/s for the first 50 s.
        let mut sync = site_to_site_job(
            "allreduce".into(),
            TrafficClass::AiSync,
            "dc1",
            "dc2",
            80_000_000_000,
            0,
        );
        sync.max_latency_us = Some(1_000_000);
        sync.end_ms = Some(50_000);
        let sync = record(sync);
        // 100 GB by 100 s fits (10 Gbit/s for 50 s, then 90); 700 GB does
        // not (50 s of 10 Gbit/s and 50 of 90: 625 GB).
        let fits = transfer("fits", "a", 100.0, 100);
        let misses = transfer("misses", "b", 700.0, 100);
        let one = run(
            &topology,
            &[sync.clone(), fits.clone()],
            &BTreeMap::new(),
            0,
        );
        assert!(one["fits"].on_track, "{one:?}");
        let other = run(&topology, &[sync, misses], &BTreeMap::new(), 0);
        assert!(!other["misses"].on_track, "{other:?}");
        // Now it may have only the 10 Gbit/s the ai-sync job leaves.
        assert!((gbps(&other["misses"]) - 10.0).abs() < 0.1, "{other:?}");
        // Through: no pace, done.
        let done = run(&topology, &[fits], &moved("fits", 100.0), 30_000);
        let done = &done["fits"];
        assert_eq!(done.pace_bps, 0);
        assert!(
            done.on_track && done.detail.starts_with("moved all"),
            "{done:?}"
        );
    }

    #[test]
    fn tenants_share_a_crowded_network() {
        let topology = demo();
        // 1800 GB asked by 100 s, 1125 GB fit: every tenant moves at least
        // 62.5% of its bytes, tenant b's one job included.
        let jobs = [
            transfer("a1", "a", 600.0, 100),
            transfer("a2", "a", 600.0, 100),
            transfer("b1", "b", 600.0, 100),
        ];
        let plan = run(&topology, &jobs, &BTreeMap::new(), 0);
        assert!(plan["b1"].detail.contains("tenants share"), "{plan:?}");
        // 375 GB of its 600 by the deadline: 30 Gbit/s now.
        assert!((gbps(&plan["b1"]) - 30.0).abs() < 0.1, "{plan:?}");
        let paced: i64 = plan.values().map(|p| p.pace_bps).sum();
        assert!(paced <= 90_000_000_100, "{plan:?}");
        // A quota of 20 Gbit/s for tenant b: its job is told it misses by
        // more.
        let quota = TenantsConfig {
            quota_bps: BTreeMap::from([("b".to_string(), 20_000_000_000)]),
            ..TenantsConfig::default()
        };
        let capped = schedule_transfers(
            &topology,
            &jobs,
            &BTreeMap::new(),
            0,
            &ScheduleConfig::default(),
            &quota,
        )
        .expect("schedule");
        assert!(capped["b1"].pace_bps <= 20_000_000_000, "{capped:?}");
        assert!(
            capped["b1"]
                .detail
                .contains("250.00 GB of 600.00 GB by then"),
            "{capped:?}"
        );
    }

    #[test]
    fn a_selector_names_the_jobs_prefixes_and_class() {
        let topology = demo();
        let job = transfer("ckpt", "a", 1.0, 100);
        let selector = selector(&topology, &job).expect("prefixes");
        assert!(
            selector
                .sources
                .contains(&"10.1.1.0/24".parse().expect("prefix"))
        );
        assert!(
            selector
                .destinations
                .contains(&"10.2.1.0/24".parse().expect("prefix"))
        );
        assert!(
            !selector
                .sources
                .iter()
                .any(|n| n.to_string().starts_with("10.2."))
        );
        assert_eq!(selector.class.as_deref(), Some("ai-bulk"));
    }
}
