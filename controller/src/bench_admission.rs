//! `aiwan bench admission`: how long admission takes to answer a job on the
//! demo topology (`lab/ai-wan.clab.yml`) with guarantees already given,
//! against a whole plan of the same jobs measured in the same run.

use std::time::Instant;

use anyhow::Context;

use crate::admission::admit;
use crate::model::{
    AdmissionPolicy, DemandRecord, Endpoint, JobRecord, NewJob, TrafficClass, now_ms,
};

#[derive(Debug, clap::Args)]
pub struct BenchAdmissionArgs {
    /// Guaranteed jobs already admitted (ai-sync and ai-bulk between the
    /// five sites, seeded rates), before the one timed.
    #[arg(long, default_value_t = 50)]
    pub jobs: usize,
    /// Seed of the existing jobs' sites and rates.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Answers timed (the median and the slowest are reported).
    #[arg(long, default_value_t = 20)]
    pub runs: usize,
    /// Print one JSON document (the output is JSON either way).
    #[arg(long)]
    pub json: bool,
}

const SITES: [&str; 5] = ["dc1", "dc2", "pop-north", "pop-south", "pop-east"];

/// A job of one site to another at `rate_bps` from `start_ms`, admitted in
/// part when it does not fit (the benchmark's jobs and admission's tests).
pub(crate) fn site_to_site_job(
    id: String,
    class: TrafficClass,
    from: &str,
    to: &str,
    rate_bps: i64,
    start_ms: i64,
) -> NewJob {
    NewJob {
        job_id: id,
        tenant: "bench".into(),
        class,
        sources: vec![Endpoint::Site(from.into())],
        destinations: vec![Endpoint::Site(to.into())],
        rate_bps,
        volume_bytes: 0,
        deadline_ms: None,
        start_ms,
        end_ms: None,
        priority: 0,
        max_latency_us: None,
        demands: vec![DemandRecord {
            src_position: 0,
            dst_position: 0,
            rate_bps,
        }],
        pin: None,
        collective: None,
        admission_policy: AdmissionPolicy::AdmitPartial,
        burst: None,
    }
}

fn percentile(values: &mut [f64], p: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    let index = ((values.len() as f64 - 1.0) * p).round() as usize;
    values.get(index).copied().unwrap_or(f64::NAN)
}

/// `aiwan bench admission`.
pub fn bench_admission(args: &BenchAdmissionArgs) -> anyhow::Result<()> {
    let topology =
        aiwan_planner::formats::clab::parse_clab(include_str!("../../lab/ai-wan.clab.yml"))
            .context("the built-in topology")?;
    let now = now_ms();
    // Existing jobs, each admitted in turn as CreateJob would.
    let mut state = args.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut existing: Vec<JobRecord> = Vec::with_capacity(args.jobs);
    for i in 0..args.jobs {
        // Two different sites.
        let a = (next() % 5) as usize;
        let b = (a + 1 + (next() % 4) as usize) % 5;
        let (from, to) = (SITES[a], SITES[b]);
        let class = if next() % 2 == 0 {
            TrafficClass::AiSync
        } else {
            TrafficClass::AiBulk
        };
        // 0.1 to 2 Gbit/s.
        let rate = 100_000_000 + (next() % 20) as i64 * 100_000_000;
        let new = site_to_site_job(format!("job-{i}"), class, from, to, rate, now);
        let admission = admit(&topology, &existing, &new, new.admission_policy, now);
        existing.push(JobRecord::new(new, "bench", now, Some(admission)));
    }
    let asked = site_to_site_job(
        "timed".into(),
        TrafficClass::AiSync,
        "dc1",
        "dc2",
        30_000_000_000,
        now,
    );
    let mut times = Vec::with_capacity(args.runs.max(1));
    let mut answer = None;
    for _ in 0..args.runs.max(1) {
        let started = Instant::now();
        answer = Some(admit(
            &topology,
            &existing,
            &asked,
            AdmissionPolicy::AdmitPartial,
            now,
        ));
        times.push(started.elapsed().as_secs_f64() * 1e3);
    }
    // The reference: a whole plan of the same jobs, new one included.
    let mut with_new = existing.clone();
    with_new.push(JobRecord::new(asked.clone(), "bench", now, answer.clone()));
    let mut plan_times = Vec::with_capacity(args.runs.max(1));
    for _ in 0..args.runs.max(1) {
        let started = Instant::now();
        crate::planning::compute_plan(&topology, &with_new, now).context("the reference plan")?;
        plan_times.push(started.elapsed().as_secs_f64() * 1e3);
    }
    let median = percentile(&mut times.clone(), 0.5);
    let slowest = percentile(&mut times, 1.0);
    let plan_median = percentile(&mut plan_times, 0.5);
    let admitted = existing
        .iter()
        .filter(|r| r.admission.as_ref().is_some_and(|a| a.guaranteed_bps() > 0))
        .count();
    let report = serde_json::json!({
        "topology": "lab/ai-wan.clab.yml",
        "existing_jobs": existing.len(),
        "existing_with_a_guarantee": admitted,
        "runs": times.len(),
        "admission_ms_median": median,
        "admission_ms_slowest": slowest,
        "target_ms": 50.0,
        "plan_ms_median": plan_median,
        "admission_over_plan": median / plan_median,
        "answer": answer.map(|a| a.detail),
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
