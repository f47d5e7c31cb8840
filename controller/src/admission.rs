//! Admission: what the controller can guarantee a new job, given the
//! guarantees it already gave. Pure; the intent and plan services call it
//! under [`AdmissionLock`], and the queue task re-admits queued jobs.
//!
//! A guaranteed job (ai-sync, ai-bulk) is answered with the rate that fits
//! within its latency bound, the rate that fits on longer paths (the k
//! shortest: the hard limit), and for a volume job when it will be done.
//! Jobs admitted earlier keep what they were given wherever their time
//! windows overlap the new job's ([`aiwan_planner::admission::fit`]); a
//! best-effort job is guaranteed nothing and planned whole.

use aiwan_planner::Topology;
use aiwan_planner::admission::fit;
use aiwan_planner::classes::ClassDemand;
use aiwan_planner::network::Network;

use crate::model::{
    Admission, AdmissionOutcome, AdmissionPolicy, JobRecord, JobState, NewJob, TrafficClass,
};
use crate::planning::{PATHS_PER_PAIR, job_demands};

/// Held while a job is admitted and stored, so that two jobs are never
/// admitted against the same spare capacity.
pub type AdmissionLock = std::sync::Arc<tokio::sync::Mutex<()>>;

/// The answer for `job` beside `existing` (the stored jobs; cancelled,
/// queued and finished ones reserve nothing) at `now_ms`, under `policy`.
pub fn admit(
    topology: &Topology,
    existing: &[JobRecord],
    job: &NewJob,
    policy: AdmissionPolicy,
    now_ms: i64,
) -> Admission {
    admit_within_quota(topology, existing, job, policy, None, now_ms)
}

/// [`admit`], with the most the job's tenant may be guaranteed at once
/// (`quota_bps`): what the tenant's other guaranteed jobs hold while this
/// one runs counts against it.
pub fn admit_within_quota(
    topology: &Topology,
    existing: &[JobRecord],
    job: &NewJob,
    policy: AdmissionPolicy,
    quota_bps: Option<i64>,
    now_ms: i64,
) -> Admission {
    let requested = job.rate_bps;
    let answer = |outcome, within: i64, beyond: i64, detail: String| Admission {
        outcome,
        requested_bps: requested,
        within_bound_bps: within,
        beyond_bound_bps: beyond,
        expected_completion_ms: completion(job, within.saturating_add(beyond)),
        iteration_transfer_us: iteration_transfer(job, within.saturating_add(beyond)),
        evaluated_ms: now_ms,
        detail,
    };
    if job.class == TrafficClass::BestEffort {
        return answer(
            AdmissionOutcome::NotGuaranteed,
            0,
            0,
            "best-effort: nothing is guaranteed; it takes what the guaranteed classes leave".into(),
        );
    }
    let network = Network::from_topology(topology);
    let (start, end) = window(job, now_ms);
    let at = start.max(now_ms);
    let asking = whole(job.clone(), now_ms);
    let (new, unresolved) = job_demands(topology, &network, std::slice::from_ref(&asking), at);
    if new.is_empty() {
        // Nothing crosses the WAN: nothing to hold back.
        let why = if unresolved.is_empty() {
            "its ends are behind the same routers: no WAN capacity needed".to_string()
        } else {
            unresolved.join("; ")
        };
        return answer(AdmissionOutcome::Admitted, requested, 0, why);
    }
    let reserved = reservations(
        topology,
        &network,
        existing,
        &job.job_id,
        (start, end),
        now_ms,
    );
    let fit = match fit(&network, &reserved, &new, PATHS_PER_PAIR) {
        Ok(fit) => fit,
        Err(error) => {
            // No answer: nothing is guaranteed, and the policy decides.
            let detail = format!("admission could not be computed: {error}");
            return answer(outcome_for(policy, 0.0), 0, 0, detail);
        }
    };
    // The tenant's quota, less what its other guarantees hold meanwhile.
    let held = quota_bps.map(|_| held_by_tenant(existing, job, (start, end), now_ms));
    let room = match (quota_bps, held) {
        (Some(quota), Some(held)) if requested > 0 => {
            (quota.saturating_sub(held).max(0) as f64 / requested as f64).min(1.0)
        }
        _ => 1.0,
    };
    let share = fit.total().min(room);
    let outcome = outcome_for(policy, share);
    let guaranteed = if outcome == AdmissionOutcome::Admitted {
        requested
    } else {
        share_of(requested, share)
    };
    let within = share_of(requested, fit.within_bound).min(guaranteed);
    let beyond = guaranteed - within;
    let mut detail = format!(
        "{} asked: {} within the latency bound, {} on longer paths",
        rate(requested),
        rate(within),
        rate(beyond)
    );
    let short = requested - within - beyond;
    if let (Some(quota), Some(held)) = (quota_bps, held)
        && room < fit.total() - 1e-9
    {
        detail.push_str(&format!(
            "; tenant {:?} may be guaranteed {} at once and holds {} already",
            job.tenant,
            rate(quota),
            rate(held)
        ));
    } else if fit.no_path_within {
        detail.push_str("; no path meets the latency bound");
    } else if fit.reserved_overflow {
        detail.push_str("; the guarantees already given exceed the network's capacity");
    } else if short > 0 {
        detail.push_str(&format!(
            ", {} does not fit beside the guarantees already given",
            rate(short)
        ));
    }
    if let (Some(done), Some(deadline)) = (completion(job, guaranteed), job.deadline_ms)
        && done > deadline
    {
        detail.push_str(&format!(
            "; at that rate the volume is through {} s after its deadline",
            (done - deadline).saturating_add(999) / 1000
        ));
    }
    if let (Some(burst), Some(transfer)) = (job.burst, iteration_transfer(job, within + beyond)) {
        let period = burst.iteration_period_us;
        detail.push_str(&format!(
            "; an iteration's transfer takes {:.1} ms of its {:.1} ms",
            transfer as f64 / 1000.0,
            period as f64 / 1000.0
        ));
        if transfer > period {
            detail.push_str(": the network cannot keep the job's pace");
        }
    }
    match outcome {
        AdmissionOutcome::Queued => detail.push_str("; queued until all of it fits"),
        AdmissionOutcome::Rejected => detail.push_str("; rejected (admission policy reject)"),
        _ => {}
    }
    answer(outcome, within, beyond, detail)
}

/// What the policy makes of a job of which `share` fits.
fn outcome_for(policy: AdmissionPolicy, share: f64) -> AdmissionOutcome {
    if share >= 1.0 - 1e-6 {
        return AdmissionOutcome::Admitted;
    }
    match policy {
        AdmissionPolicy::AdmitPartial => AdmissionOutcome::Partial,
        AdmissionPolicy::Reject => AdmissionOutcome::Rejected,
        AdmissionPolicy::Queue => AdmissionOutcome::Queued,
    }
}

/// `share` of `requested`, rounded down so that what is promised fits.
fn share_of(requested: i64, share: f64) -> i64 {
    let value = (requested as f64 * share.clamp(0.0, 1.0)).floor();
    if value.is_finite() {
        (value as i64).clamp(0, requested.max(0))
    } else {
        0
    }
}

/// A volume job's completion at `guaranteed_bps` from its start (or now,
/// when later).
fn completion(job: &NewJob, guaranteed_bps: i64) -> Option<i64> {
    if job.volume_bytes <= 0 || guaranteed_bps <= 0 {
        return None;
    }
    let ms = (job.volume_bytes as f64 * 8.0 / guaranteed_bps as f64 * 1000.0).ceil();
    if !ms.is_finite() || ms > i64::MAX as f64 / 2.0 {
        return None;
    }
    Some(job.start_ms.saturating_add(ms as i64))
}

/// A job with a burst: one iteration's bytes per pair at a pair's share of
/// `guaranteed_bps`, microseconds.
fn iteration_transfer(job: &NewJob, guaranteed_bps: i64) -> Option<i64> {
    let burst = job.burst?;
    let pairs = job.demands.len().max(1) as f64;
    if guaranteed_bps <= 0 {
        return None;
    }
    let us = burst.bytes_per_iteration as f64 * 8.0 / (guaranteed_bps as f64 / pairs) * 1e6;
    (us.is_finite() && us < 1e15).then(|| us.ceil() as i64)
}

/// A job's time window at `now_ms`: start to end time, else deadline,
/// else forever; a volume job already late holds on until it stops being
/// planned ([`NewJob::planned_until_ms`]).
fn window(job: &NewJob, now_ms: i64) -> (i64, i64) {
    let end = match job.end_ms.or(job.deadline_ms) {
        Some(end) if now_ms >= end => job.planned_until_ms(),
        promised => promised,
    };
    (job.start_ms, end.unwrap_or(i64::MAX))
}

/// A record of `job` as if admitted whole (for its demands at full rate).
fn whole(job: NewJob, now_ms: i64) -> JobRecord {
    JobRecord::new(job, "", now_ms, None)
}

/// What `job`'s tenant is guaranteed by its other jobs whose windows
/// overlap `window`, bit/s.
fn held_by_tenant(existing: &[JobRecord], job: &NewJob, window: (i64, i64), now_ms: i64) -> i64 {
    existing
        .iter()
        .filter(|r| r.job.tenant == job.tenant && r.job.job_id != job.job_id)
        .filter(|r| r.job.class != TrafficClass::BestEffort)
        .filter(|r| {
            !matches!(
                r.state_at(now_ms),
                JobState::Cancelled | JobState::Finished | JobState::Queued
            )
        })
        .filter(|r| {
            let (start, end) = self::window(&r.job, now_ms);
            start < window.1 && end > window.0
        })
        .map(|r| {
            r.admission
                .as_ref()
                .map_or(r.job.rate_bps, |a| a.guaranteed_bps())
        })
        .fold(0_i64, i64::saturating_add)
}

/// The demands the guarantees already given hold during `window`: each
/// guaranteed job whose window overlaps it, its part within its bound
/// kept within it, its part beyond it free to use any of the k paths.
fn reservations(
    topology: &Topology,
    network: &Network,
    existing: &[JobRecord],
    job_id: &str,
    window: (i64, i64),
    now_ms: i64,
) -> Vec<ClassDemand> {
    let mut reserved = Vec::new();
    for record in existing {
        let job = &record.job;
        if job.job_id == job_id
            || job.class == TrafficClass::BestEffort
            || matches!(
                record.state_at(now_ms),
                JobState::Cancelled | JobState::Finished | JobState::Queued
            )
        {
            continue;
        }
        let (start, end) = self::window(job, now_ms);
        if start >= window.1 || end <= window.0 {
            continue;
        }
        // Shares of the job's rate within and beyond its bound; a job
        // stored before admission existed holds all of it, on any path.
        let (within, beyond) = match &record.admission {
            Some(a) if a.requested_bps > 0 => (
                a.within_bound_bps as f64 / a.requested_bps as f64,
                a.beyond_bound_bps as f64 / a.requested_bps as f64,
            ),
            Some(_) => continue,
            None => (0.0, 1.0),
        };
        let at = start.max(now_ms);
        let full = whole(job.clone(), now_ms);
        let (demands, _) = job_demands(topology, network, std::slice::from_ref(&full), at);
        for demand in demands {
            if within > 0.0 {
                reserved.push(ClassDemand {
                    rate: demand.rate * within,
                    ..demand.clone()
                });
            }
            if beyond > 0.0 {
                reserved.push(ClassDemand {
                    rate: demand.rate * beyond,
                    max_latency_us: None,
                    ..demand
                });
            }
        }
    }
    reserved
}

/// Bits per second for people: `30 Gbit/s`.
pub(crate) fn rate(bps: i64) -> String {
    let value = bps as f64;
    if value >= 1e9 {
        format!("{} Gbit/s", trim(value / 1e9))
    } else if value >= 1e6 {
        format!("{} Mbit/s", trim(value / 1e6))
    } else {
        format!("{bps} bit/s")
    }
}

fn trim(value: f64) -> String {
    let text = format!("{value:.2}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000;

    /// `lab/ai-wan.clab.yml`: dc1-edge to dc2-edge over the east path (10G,
    /// 6 ms: the only one within ai-sync's default bound of 1.5 times the
    /// lowest latency), south (40G, 10 ms) and the two paths through the
    /// 40G cross link between wan-north and wan-south. These four shortest
    /// paths (the planner's) carry 90G; the direct north path (16 ms) is
    /// the fifth.
    fn topology() -> Topology {
        aiwan_planner::formats::clab::parse_clab(include_str!("../../lab/ai-wan.clab.yml"))
            .expect("lab file")
    }

    fn job(id: &str, class: TrafficClass, rate_bps: i64) -> NewJob {
        crate::bench_admission::site_to_site_job(id.into(), class, "dc1", "dc2", rate_bps, NOW)
    }

    fn stored(job: NewJob, admission: Admission) -> JobRecord {
        JobRecord {
            admission: Some(admission),
            ..whole(job, NOW)
        }
    }

    #[test]
    fn a_tenants_quota_caps_what_its_jobs_are_guaranteed_together() {
        // Tenant "bench" may hold 25G: 20G given, a second job of 20G gets
        // the 5G left, another tenant's job is not held back by it.
        let topology = topology();
        let quota = Some(25_000_000_000);
        let first = job("first", TrafficClass::AiBulk, 20_000_000_000);
        let given = admit_within_quota(
            &topology,
            &[],
            &first,
            AdmissionPolicy::AdmitPartial,
            quota,
            NOW,
        );
        assert_eq!(given.outcome, AdmissionOutcome::Admitted, "{given:?}");
        let existing = vec![stored(first, given)];
        let second = job("second", TrafficClass::AiBulk, 20_000_000_000);
        let capped = admit_within_quota(
            &topology,
            &existing,
            &second,
            AdmissionPolicy::AdmitPartial,
            quota,
            NOW,
        );
        assert_eq!(capped.outcome, AdmissionOutcome::Partial, "{capped:?}");
        assert_eq!(capped.guaranteed_bps(), 5_000_000_000, "{capped:?}");
        assert!(
            capped.detail.contains(
                "tenant \"bench\" may be guaranteed 25 Gbit/s at once and holds 20 Gbit/s"
            ),
            "{}",
            capped.detail
        );
        let mut other = job("other", TrafficClass::AiBulk, 20_000_000_000);
        other.tenant = "vision".into();
        let free = admit_within_quota(
            &topology,
            &existing,
            &other,
            AdmissionPolicy::Reject,
            quota,
            NOW,
        );
        assert_eq!(free.outcome, AdmissionOutcome::Admitted, "{free:?}");
    }

    #[test]
    fn thirty_gigabits_of_ai_sync_are_answered_within_and_beyond_the_bound() {
        let asked = job("sync", TrafficClass::AiSync, 30_000_000_000);
        let answer = admit(&topology(), &[], &asked, AdmissionPolicy::AdmitPartial, NOW);
        assert_eq!(answer.outcome, AdmissionOutcome::Admitted, "{answer:?}");
        assert!(
            (answer.within_bound_bps - 10_000_000_000).abs() < 10_000_000,
            "{answer:?}"
        );
        assert!(
            (answer.beyond_bound_bps - 20_000_000_000).abs() < 10_000_000,
            "{answer:?}"
        );
        assert!(
            answer.detail.contains("30 Gbit/s asked"),
            "{}",
            answer.detail
        );
    }

    #[test]
    fn guarantees_given_earlier_are_kept_and_the_policy_decides_the_rest() {
        let topology = topology();
        let first = job("first", TrafficClass::AiSync, 85_000_000_000);
        let given = admit(&topology, &[], &first, AdmissionPolicy::AdmitPartial, NOW);
        let existing = [stored(first, given.clone())];
        let second = job("second", TrafficClass::AiSync, 10_000_000_000);
        let partial = admit(
            &topology,
            &existing,
            &second,
            AdmissionPolicy::AdmitPartial,
            NOW,
        );
        // The 90G between the sites hold the first job's 85G: 5G is left.
        assert_eq!(partial.outcome, AdmissionOutcome::Partial, "{partial:?}");
        assert!(
            (partial.guaranteed_bps() - 5_000_000_000).abs() < 10_000_000,
            "{partial:?} after {given:?}"
        );
        assert!(
            partial.detail.contains("does not fit"),
            "{}",
            partial.detail
        );
        let rejected = admit(&topology, &existing, &second, AdmissionPolicy::Reject, NOW);
        assert_eq!(rejected.outcome, AdmissionOutcome::Rejected);
        let queued = admit(&topology, &existing, &second, AdmissionPolicy::Queue, NOW);
        assert_eq!(queued.outcome, AdmissionOutcome::Queued);
        assert_eq!(
            stored(second.clone(), queued).state_at(NOW),
            JobState::Queued
        );
        // A job that ends before the second starts holds nothing then.
        let mut later = second;
        later.start_ms = NOW + 3_600_000;
        let mut early = existing[0].clone();
        early.job.end_ms = Some(NOW + 60_000);
        let answer = admit(&topology, &[early], &later, AdmissionPolicy::Reject, NOW);
        assert_eq!(answer.outcome, AdmissionOutcome::Admitted, "{answer:?}");
    }

    #[test]
    fn a_volume_job_is_told_when_it_will_be_done() {
        let mut bulk = job("bulk", TrafficClass::AiBulk, 200_000_000_000);
        // 1 TB by a deadline 40 s away asks 200 Gbit/s; 90G fit.
        bulk.volume_bytes = 1_000_000_000_000;
        bulk.deadline_ms = Some(NOW + 40_000);
        let answer = admit(&topology(), &[], &bulk, AdmissionPolicy::AdmitPartial, NOW);
        assert_eq!(answer.outcome, AdmissionOutcome::Partial, "{answer:?}");
        let done = answer.expected_completion_ms.expect("a completion time");
        // 8e12 bits at 90 Gbit/s: 88.9 s.
        assert!((done - (NOW + 88_889)).abs() < 1_000, "{answer:?}");
        assert!(
            answer.detail.contains("after its deadline"),
            "{}",
            answer.detail
        );
    }

    #[test]
    fn a_collective_is_told_how_long_an_iteration_takes() {
        // 20G of bursts asked, 10 iterations a second of 100 MB: 40 ms of
        // the 100 ms at 20G. With 85G already promised, 5G fit: 160 ms,
        // more than the period.
        let mut sync = job("sync", TrafficClass::AiSync, 20_000_000_000);
        sync.burst = Some(crate::model::SyncBurst {
            bytes_per_iteration: 100_000_000,
            iteration_period_us: 100_000,
        });
        let topology = topology();
        let alone = admit(&topology, &[], &sync, AdmissionPolicy::AdmitPartial, NOW);
        assert_eq!(alone.iteration_transfer_us, Some(40_000), "{alone:?}");
        assert!(
            alone.detail.contains("takes 40.0 ms of its 100.0 ms"),
            "{}",
            alone.detail
        );
        let first = job("first", TrafficClass::AiSync, 85_000_000_000);
        let given = admit(&topology, &[], &first, AdmissionPolicy::AdmitPartial, NOW);
        let crowded = admit(
            &topology,
            &[stored(first, given)],
            &sync,
            AdmissionPolicy::AdmitPartial,
            NOW,
        );
        let transfer = crowded.iteration_transfer_us.expect("a transfer time");
        assert!((transfer - 160_000).abs() < 500, "{crowded:?}");
        assert!(
            crowded.detail.contains("cannot keep the job's pace"),
            "{}",
            crowded.detail
        );
    }

    #[test]
    fn best_effort_is_guaranteed_nothing_and_planned_whole() {
        let asked = job("be", TrafficClass::BestEffort, 90_000_000_000);
        let answer = admit(&topology(), &[], &asked, AdmissionPolicy::Reject, NOW);
        assert_eq!(answer.outcome, AdmissionOutcome::NotGuaranteed);
        assert_eq!(answer.planned_share(), 1.0);
    }
}
