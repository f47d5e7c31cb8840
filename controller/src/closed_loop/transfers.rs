//! Volume jobs' progress, measured each interval, and their schedules:
//! the loop counts the bytes of each job's flows where they enter the WAN,
//! re-schedules every volume job against its deadline
//! ([`crate::schedules`]), stores the result as the jobs' progress (plans
//! then reserve each job's pace), and announces jobs that fall off track
//! or get back on it.

use std::collections::{BTreeMap, BTreeSet};

use aiwan_collectors::pipeline::read_store;
use aiwan_collectors::store::TimeWindow;
use aiwan_planner::Topology;

use super::LoopContext;
use super::demand::DemandModel;
use crate::config::{ScheduleConfig, TenantsConfig};
use crate::events::EventKind;
use crate::model::{JobRecord, JobState, now_ms};
use crate::planning::job_demands;
use crate::schedules::{Moved, schedule_transfers, selector};

/// Counts what the volume jobs moved in `window`, schedules them, and
/// stores their progress. Does nothing without volume jobs.
pub(super) async fn track(
    cx: &LoopContext,
    model: &DemandModel,
    topology: &Topology,
    window: TimeWindow,
    config: &ScheduleConfig,
    tenants: &TenantsConfig,
) -> Result<(), String> {
    let now = now_ms();
    let jobs = cx
        .db
        .uncancelled_jobs()
        .await
        .map_err(|e| format!("cannot read the jobs: {e}"))?;
    let transfers: Vec<&JobRecord> = jobs
        .iter()
        .filter(|r| r.is_transfer() && r.state_at(now) == JobState::Active)
        .collect();
    if transfers.is_empty() {
        return Ok(());
    }
    let selectors: Vec<_> = transfers.iter().map(|r| selector(topology, r)).collect();
    let queried: Vec<_> = selectors.iter().flatten().cloned().collect();
    let seen = read_store(&cx.telemetry, move |store| {
        store.selected_bytes(window, &queried)
    })
    .await
    .map_err(|e| format!("telemetry store: {e}"))?;
    // Selector positions among those queried, per transfer.
    let mut positions = Vec::with_capacity(transfers.len());
    let mut next = 0;
    for s in &selectors {
        positions.push(s.as_ref().map(|_| {
            next += 1;
            next - 1
        }));
    }
    let mut moved: BTreeMap<String, Moved> = BTreeMap::new();
    for (record, position) in transfers.iter().zip(&positions) {
        let ingress = ingress_nodes(topology, model, record, now);
        let measured = position.is_some() && ingress.iter().any(|&n| model.exports(n));
        let before = record.progress.as_ref();
        // Buckets from the job's start, and not counted before (a restart).
        let from_ms = before.map_or(record.job.start_ms, |p| {
            p.measured_until_ms.max(record.job.start_ms)
        });
        let earlier = before.map_or(0, |p| p.moved_bytes);
        let added = if measured {
            let bytes: u64 = seen
                .iter()
                .filter(|s| Some(s.selector) == *position && s.bucket_start_ms >= from_ms)
                .filter(|s| {
                    model
                        .exporter_node(s.exporter, s.observation_domain)
                        .is_some_and(|n| ingress.contains(&n))
                })
                .map(|s| s.bytes)
                .sum();
            i64::try_from(bytes).unwrap_or(i64::MAX)
        } else {
            // Nothing measures it: assume it kept its pace.
            let pace = before.map_or(0, |p| p.pace_bps);
            let seconds = (window.end_ms - from_ms.max(window.start_ms)).max(0) as f64 / 1000.0;
            (pace as f64 * seconds / 8.0) as i64
        };
        moved.insert(
            record.job.job_id.clone(),
            Moved {
                bytes: earlier.saturating_add(added).min(record.job.volume_bytes),
                measured,
            },
        );
    }
    let previous: BTreeMap<String, bool> = transfers
        .iter()
        .filter_map(|r| Some((r.job.job_id.clone(), r.progress.as_ref()?.on_track)))
        .collect();
    let (schedule_config, tenants) = (config.clone(), tenants.clone());
    let topology = topology.clone();
    let progress = tokio::task::spawn_blocking(move || {
        schedule_transfers(&topology, &jobs, &moved, now, &schedule_config, &tenants)
    })
    .await
    .map_err(|e| format!("the transfers' schedule stopped: {e}"))??;
    let mut rows: Vec<(String, crate::model::JobProgress)> = progress.into_iter().collect();
    for (_, row) in rows.iter_mut() {
        row.measured_until_ms = window.end_ms;
    }
    // Stored first, so that whoever acts on an event reads the same.
    cx.db
        .update_progress(&rows)
        .await
        .map_err(|e| format!("cannot store the jobs' progress: {e}"))?;
    for (job_id, row) in &rows {
        let subject = format!("jobs/{job_id}");
        let expected_s = row
            .expected_completion_ms
            .map_or(f64::NAN, |ms| ms as f64 / 1000.0);
        match (previous.get(job_id), row.on_track) {
            (Some(true) | None, false) => {
                cx.events.publish(
                    EventKind::JobAtRisk,
                    subject,
                    row.detail.clone(),
                    &[
                        ("expected_completion_s", expected_s),
                        ("pace_bps", row.pace_bps as f64),
                    ],
                );
            }
            (Some(false), true) => {
                cx.events.publish(
                    EventKind::JobOnTrack,
                    subject,
                    row.detail.clone(),
                    &[("expected_completion_s", expected_s)],
                );
            }
            _ => {}
        }
    }
    Ok(())
}

/// The nodes where a job's traffic enters the WAN.
fn ingress_nodes(
    topology: &Topology,
    model: &DemandModel,
    record: &JobRecord,
    now_ms: i64,
) -> BTreeSet<usize> {
    let whole = record.as_asked();
    let (demands, _) = job_demands(
        topology,
        model.network(),
        std::slice::from_ref(&whole),
        now_ms,
    );
    demands.iter().map(|d| d.src).collect()
}
