//! `aiwan bench jobs`: seeded job arrivals (ai-sync, volume transfers with
//! deadlines, best-effort volume) on a network, scheduled online as the
//! controller does (re-planned every slice from the bytes moved so far,
//! knowing only the jobs that have arrived and their declared rates), and
//! against an offline oracle in the same run: the same time-expanded LP
//! with full knowledge of every arrival and of every sender's limit in
//! every slice.
//!
//! What is simulated, said plainly: a slice delivers what the schedule
//! gives a transfer, up to what its sender manages in that slice (senders
//! fall short in seeded slices: a slow disk, a busy host). The capacity a
//! slow sender leaves idle is lent within the slice to the transfers whose
//! senders can send more (the routers' rate limits are work conserving):
//! one slice scheduled on what is left. Flows are fluid: no TCP.

use std::path::PathBuf;
use std::time::Instant;

use aiwan_planner::admission::fit;
use aiwan_planner::allocation::Demand;
use aiwan_planner::classes::{Class, ClassDemand};
use aiwan_planner::network::Network;
use aiwan_planner::paths::{PathOptions, ShortestPaths};
use aiwan_planner::schedule::{
    Calendar, Preference, Reservation, Schedule, Tenant, Transfer, negligible_bits, schedule,
};
use aiwan_planner::{NodeRole, formats};
use anyhow::Context;
use serde::Serialize;

use crate::planning::PATHS_PER_PAIR;

#[derive(Debug, clap::Args)]
pub struct BenchJobsArgs {
    /// Networks: `ai-wan` (the demo topology, built in) and any of `aiwan
    /// bench planner`'s topologies read from `--data`.
    #[arg(long, value_delimiter = ',', default_value = "ai-wan,GEANT")]
    pub topologies: Vec<String>,
    /// The shared data folder (for GEANT and the others).
    #[arg(long, default_value = "../shared/data")]
    pub data: PathBuf,
    /// Volume transfers with deadlines per network.
    #[arg(long, default_value_t = 60)]
    pub transfers: usize,
    /// Slices of the calendar, and their length in seconds.
    #[arg(long, default_value_t = 36)]
    pub slices: usize,
    #[arg(long, default_value_t = 10.0)]
    pub slice_s: f64,
    /// Scales every transfer's volume: at 2 the oracle meets every
    /// deadline, at 2.5 a few are out of its reach, at 4 about half.
    #[arg(long, default_value_t = 2.5)]
    pub load: f64,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print one JSON document (the output is JSON either way).
    #[arg(long)]
    pub json: bool,
}

/// What one network's run measured.
#[derive(Debug, Clone, Serialize)]
pub struct JobsReport {
    pub topology: String,
    pub slices: usize,
    pub slice_s: f64,
    pub deadline_transfers: usize,
    pub best_effort_transfers: usize,
    pub ai_sync_jobs: usize,
    pub deadlines_met: usize,
    pub oracle_deadlines_met: usize,
    /// Deadlines met over the oracle's (target >= 0.99).
    pub deadlines_over_oracle: f64,
    /// Bits moved within the calendar, every transfer.
    pub throughput_bits: f64,
    pub oracle_throughput_bits: f64,
    /// Target >= 0.95.
    pub throughput_over_oracle: f64,
    /// Slices in which a guaranteed class (ai-sync and deadline transfers)
    /// was above a link's capacity (target 0), and the highest utilisation
    /// of a link by the guaranteed classes in any slice.
    pub slices_over_capacity: usize,
    pub max_guaranteed_utilisation: f64,
    /// Missed deadlines, and of those the ones the schedule flagged before
    /// the deadline passed.
    pub missed: usize,
    pub missed_flagged_early: usize,
    /// Senders that fell short of their schedule in some slice, and of
    /// those the ones that still met their deadline.
    pub fell_behind: usize,
    pub fell_behind_met: usize,
    pub replan_ms_median: f64,
    pub oracle_ms: f64,
    /// Slices in which lending idle capacity failed (the LP gave no
    /// answer): nothing was lent then.
    pub lending_failures: usize,
}

/// A transfer with this share of its bits left is done.
const DONE_TOLERANCE: f64 = 1e-5;

/// A seeded arrival.
#[derive(Debug, Clone)]
struct Arrival {
    tenant: usize,
    bits: f64,
    arrival_slice: usize,
    deadline_s: f64,
    /// Declared (known to the online scheduler).
    nic_bps: f64,
    /// What the sender manages in each slice (known to the oracle only).
    sender_bps: Vec<f64>,
    guaranteed: bool,
}

/// An ai-sync job: a reservation from its arrival, admitted as CreateJob
/// admits (what fits beside the earlier ones).
#[derive(Debug, Clone)]
struct SyncJob {
    demand: ClassDemand,
    /// The same at its admitted rate over its candidate paths.
    reserved: Demand,
    from_slice: usize,
    until_slice: usize,
}

/// `aiwan bench jobs`.
pub fn bench_jobs(args: &BenchJobsArgs) -> anyhow::Result<()> {
    let mut reports = Vec::new();
    let mut skipped = Vec::new();
    for name in &args.topologies {
        // The shared data sets are not in a user's clone: say so, go on.
        if name != "ai-wan" {
            let (path, _) = crate::offline::bench_topology(&args.data, name)?;
            if !path.exists() {
                let reason = format!("{name}: {} not found", path.display());
                eprintln!("aiwan bench jobs: skipped {reason}");
                skipped.push(reason);
                continue;
            }
        }
        let (network, endpoints) = load(name, &args.data)?;
        reports.push(run(&network, &endpoints, args)?);
    }
    let report = serde_json::json!({
        "targets": {
            "deadlines_over_oracle": 0.99,
            "throughput_over_oracle": 0.95,
            "slices_over_capacity": 0,
        },
        "runs": reports,
        "skipped": skipped,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

/// A network and the nodes jobs run between: the demo topology's site
/// routers, or every node of a benchmark topology.
fn load(name: &str, data: &std::path::Path) -> anyhow::Result<(Network, Vec<usize>)> {
    if name == "ai-wan" {
        let topology =
            aiwan_planner::formats::clab::parse_clab(include_str!("../../lab/ai-wan.clab.yml"))
                .context("the built-in topology")?;
        let network = Network::from_topology(&topology);
        let endpoints = topology
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.role == NodeRole::WanRouter && n.site.is_some())
            .map(|(i, _)| i)
            .collect();
        return Ok((network, endpoints));
    }
    let (path, capacity) = crate::offline::bench_topology(data, name)?;
    let network = formats::load_network(&path, capacity)
        .with_context(|| format!("reading {}", path.display()))?;
    let endpoints = (0..network.nodes.len()).collect();
    Ok((network, endpoints))
}

/// A seeded xorshift: the same arrivals for the same seed.
struct Seeded(u64);

impl Seeded {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in [low, high).
    fn uniform(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * (self.next() % 1_000_000) as f64 / 1e6
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn paths_between(network: &Network, finder: &mut ShortestPaths, src: usize, dst: usize) -> Demand {
    let options = PathOptions::k_shortest(PATHS_PER_PAIR);
    Demand::over_candidates(network, finder, (src, dst), 0.0, &options)
}

/// The smallest capacity along a pair's shortest path.
fn bottleneck(network: &Network, pair: &Demand) -> f64 {
    pair.paths.first().map_or(0.0, |path| {
        path.iter()
            .map(|&e| network.edges[e].capacity)
            .fold(f64::INFINITY, f64::min)
    })
}

/// Runs one network: arrivals, the online schedule slice by slice, the
/// oracle, and the comparison.
pub(crate) fn run(
    network: &Network,
    endpoints: &[usize],
    args: &BenchJobsArgs,
) -> anyhow::Result<JobsReport> {
    anyhow::ensure!(
        endpoints.len() >= 2,
        "{}: fewer than two endpoints",
        network.name
    );
    anyhow::ensure!(
        args.slices >= 2 && args.slice_s > 0.0,
        "need two slices or more"
    );
    let mut seeded = Seeded(args.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut finder = ShortestPaths::new(network);
    let slices = args.slices;
    let slice_s = args.slice_s;
    let mut pair = |seeded: &mut Seeded| -> Demand {
        loop {
            let src = endpoints[seeded.below(endpoints.len())];
            let dst = endpoints[seeded.below(endpoints.len())];
            if src != dst {
                let demand = paths_between(network, &mut finder, src, dst);
                if !demand.paths.is_empty() {
                    return demand;
                }
            }
        }
    };
    // ai-sync: a few reservations, admitted in arrival order.
    let mut sync_jobs: Vec<SyncJob> = Vec::new();
    for _ in 0..(args.transfers / 6).max(1) {
        let between = pair(&mut seeded);
        let rate = bottleneck(network, &between) * seeded.uniform(0.1, 0.3);
        let from_slice = seeded.below(slices / 2);
        let until_slice = (from_slice + 4 + seeded.below(slices / 2)).min(slices);
        let demand = ClassDemand {
            src: between.src,
            dst: between.dst,
            rate,
            class: Class::AiSync,
            max_latency_us: None,
            pinned_path: None,
        };
        let overlapping: Vec<ClassDemand> = sync_jobs
            .iter()
            .filter(|s| s.from_slice < until_slice && from_slice < s.until_slice)
            .map(|s| s.demand.clone())
            .collect();
        let share = fit(
            network,
            &overlapping,
            std::slice::from_ref(&demand),
            PATHS_PER_PAIR,
        )
        .map(|f| f.total())
        .unwrap_or(0.0);
        if share > 0.0 {
            sync_jobs.push(SyncJob {
                demand: ClassDemand {
                    rate: rate * share,
                    ..demand
                },
                reserved: Demand {
                    rate: rate * share,
                    ..between
                },
                from_slice,
                until_slice,
            });
        }
    }
    // Volume transfers: two tenants, deadlines 3 to 12 slices after their
    // arrival; a fifth are best-effort volume with no deadline of note.
    let mut arrivals: Vec<Arrival> = Vec::new();
    let mut pairs: Vec<Demand> = Vec::new();
    for i in 0..args.transfers + args.transfers / 4 {
        let between = pair(&mut seeded);
        let guaranteed = i < args.transfers;
        let arrival_slice = seeded.below(slices * 2 / 3);
        let window = if guaranteed {
            (3 + seeded.below(10)) as f64 * slice_s
        } else {
            (slices - arrival_slice) as f64 * slice_s
        };
        let link = bottleneck(network, &between);
        let nic_bps = link * seeded.uniform(0.5, 1.0);
        let bits = args.load * nic_bps * window * seeded.uniform(0.05, 0.4);
        let mut sender_bps = vec![nic_bps; slices];
        if seeded.below(3) == 0 {
            // A slow sender: some slices at a fraction of its rate.
            for rate in sender_bps.iter_mut() {
                if seeded.below(4) == 0 {
                    *rate *= seeded.uniform(0.2, 0.7);
                }
            }
        }
        arrivals.push(Arrival {
            tenant: seeded.below(2),
            bits,
            arrival_slice,
            deadline_s: arrival_slice as f64 * slice_s + window,
            nic_bps,
            sender_bps,
            guaranteed,
        });
        pairs.push(between);
    }
    let tenants = [
        Tenant {
            weight: 1.0,
            quota_bps: None,
        },
        Tenant {
            weight: 1.0,
            quota_bps: None,
        },
    ];
    let reservations_from = |now_slice: usize| -> Vec<Reservation> {
        sync_jobs
            .iter()
            .filter(|s| s.until_slice > now_slice)
            .map(|s| Reservation {
                demand: s.reserved.clone(),
                from_s: (s.from_slice.saturating_sub(now_slice)) as f64 * slice_s,
                until_s: (s.until_slice - now_slice) as f64 * slice_s,
            })
            .collect()
    };

    // Online: re-planned at every slice from what has arrived and moved.
    let mut remaining: Vec<f64> = arrivals.iter().map(|a| a.bits).collect();
    let mut finished_s: Vec<Option<f64>> = vec![None; arrivals.len()];
    let mut flagged = vec![false; arrivals.len()];
    let mut fell_behind = vec![false; arrivals.len()];
    let mut throughput = 0.0;
    let mut over_capacity = 0;
    let mut max_utilisation: f64 = 0.0;
    let mut replan_ms = Vec::new();
    let mut lending_failures = 0;
    let negligible = negligible_bits(network, Calendar { slice_s, slices });
    for now in 0..slices {
        let known: Vec<usize> = (0..arrivals.len())
            .filter(|&j| arrivals[j].arrival_slice <= now && remaining[j] > 0.0)
            .collect();
        let now_s = now as f64 * slice_s;
        let transfers: Vec<Transfer> = known
            .iter()
            .map(|&j| Transfer {
                tenant: arrivals[j].tenant,
                pairs: vec![pairs[j].clone()],
                remaining_bits: remaining[j],
                release_s: 0.0,
                deadline_s: arrivals[j].deadline_s - now_s,
                max_rate_bps: vec![arrivals[j].nic_bps],
                guaranteed: arrivals[j].guaranteed,
            })
            .collect();
        let calendar = Calendar {
            slice_s,
            slices: slices - now,
        };
        let started = Instant::now();
        let plan = schedule(
            network,
            calendar,
            &tenants,
            &reservations_from(now),
            &transfers,
            Preference::Soonest,
        )
        .with_context(|| format!("{}: the schedule at slice {now}", network.name))?;
        replan_ms.push(started.elapsed().as_secs_f64() * 1e3);
        let (over, utilisation) = guaranteed_overload(network, &plan, 0);
        over_capacity += usize::from(over);
        max_utilisation = max_utilisation.max(utilisation);
        // Each transfer sends what it is given, up to what its sender
        // manages this slice.
        let mut sent = vec![0.0; known.len()];
        let mut used = plan.loads[0].clone();
        for (position, &j) in known.iter().enumerate() {
            let planned = &plan.transfers[position];
            if arrivals[j].guaranteed && !planned.meets_deadline && now_s < arrivals[j].deadline_s {
                flagged[j] = true;
            }
            let scheduled = planned.rates_bps[0];
            sent[position] = scheduled.min(arrivals[j].sender_bps[now]);
            if sent[position] < scheduled * (1.0 - 1e-6) {
                fell_behind[j] = true;
                let idle = 1.0 - sent[position] / scheduled;
                for (pair, rates) in transfers[position]
                    .pairs
                    .iter()
                    .zip(&planned.first_slice_paths)
                {
                    for (path, rate) in pair.paths.iter().zip(rates) {
                        for &e in path {
                            used[e] -= rate * idle;
                        }
                    }
                }
            }
        }
        // The routers' limits are work conserving: what is idle this slice
        // is lent to the transfers whose senders can send more.
        // An LP that fails here lends nothing this slice, and is counted.
        let lent = lend(
            network, &used, &tenants, &transfers, &sent, &known, &arrivals, now, slice_s,
        )
        .unwrap_or_else(|_| {
            lending_failures += 1;
            vec![0.0; known.len()]
        });
        for (position, &j) in known.iter().enumerate() {
            let rate = sent[position] + lent[position];
            let moved = (rate * slice_s).min(remaining[j]);
            // What the solver's tolerance leaves is not a transfer, nor is
            // what the schedule itself counts as nothing (it plans nothing
            // more for it).
            let sliver = (arrivals[j].bits * DONE_TOLERANCE).max(negligible);
            if moved > 0.0 && remaining[j] - moved <= sliver {
                finished_s[j] = Some(now_s + moved / rate.max(f64::MIN_POSITIVE));
                remaining[j] = 0.0;
            } else {
                remaining[j] -= moved;
            }
            throughput += moved;
        }
    }
    let met = |j: usize| {
        arrivals[j].guaranteed
            && finished_s[j].is_some_and(|done| done <= arrivals[j].deadline_s * (1.0 + 1e-9))
    };
    let deadlines_met = (0..arrivals.len()).filter(|&j| met(j)).count();
    let missed: Vec<usize> = (0..arrivals.len())
        .filter(|&j| arrivals[j].guaranteed && !met(j))
        .collect();

    // The oracle: everything known from the start.
    let all: Vec<Transfer> = arrivals
        .iter()
        .zip(&pairs)
        .map(|(a, between)| Transfer {
            tenant: a.tenant,
            pairs: vec![between.clone()],
            remaining_bits: a.bits,
            release_s: a.arrival_slice as f64 * slice_s,
            deadline_s: a.deadline_s,
            max_rate_bps: a.sender_bps.clone(),
            guaranteed: a.guaranteed,
        })
        .collect();
    let started = Instant::now();
    let oracle = schedule(
        network,
        Calendar { slice_s, slices },
        &tenants,
        &reservations_from(0),
        &all,
        Preference::Soonest,
    )
    .with_context(|| format!("{}: the oracle", network.name))?;
    let oracle_ms = started.elapsed().as_secs_f64() * 1e3;
    let oracle_met = oracle
        .transfers
        .iter()
        .zip(&arrivals)
        .filter(|(p, a)| a.guaranteed && p.meets_deadline)
        .count();
    let oracle_throughput: f64 = oracle.transfers.iter().map(|p| p.delivered_bits).sum();
    replan_ms.sort_by(f64::total_cmp);
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 1.0 };
    Ok(JobsReport {
        topology: network.name.clone(),
        slices,
        slice_s,
        deadline_transfers: arrivals.iter().filter(|a| a.guaranteed).count(),
        best_effort_transfers: arrivals.iter().filter(|a| !a.guaranteed).count(),
        ai_sync_jobs: sync_jobs.len(),
        deadlines_met,
        oracle_deadlines_met: oracle_met,
        deadlines_over_oracle: ratio(deadlines_met as f64, oracle_met as f64),
        throughput_bits: throughput,
        oracle_throughput_bits: oracle_throughput,
        throughput_over_oracle: ratio(throughput, oracle_throughput),
        slices_over_capacity: over_capacity,
        max_guaranteed_utilisation: max_utilisation,
        missed: missed.len(),
        missed_flagged_early: missed.iter().filter(|&&j| flagged[j]).count(),
        fell_behind: (0..arrivals.len())
            .filter(|&j| fell_behind[j] && arrivals[j].guaranteed)
            .count(),
        fell_behind_met: (0..arrivals.len())
            .filter(|&j| fell_behind[j] && met(j))
            .count(),
        replan_ms_median: replan_ms.get(replan_ms.len() / 2).copied().unwrap_or(0.0),
        oracle_ms,
        lending_failures,
    })
}

/// What the capacity left idle in this slice (`used` per edge: what the
/// schedule gave, less what slow senders did not send) lends each
/// transfer, bit/s: one slice scheduled on what is left, each transfer up
/// to what its sender can add.
#[allow(clippy::too_many_arguments)]
fn lend(
    network: &Network,
    used: &[f64],
    tenants: &[Tenant],
    transfers: &[Transfer],
    sent: &[f64],
    known: &[usize],
    arrivals: &[Arrival],
    now: usize,
    slice_s: f64,
) -> anyhow::Result<Vec<f64>> {
    // Links with (next to) nothing left lend nothing: paths across them
    // are left out, which also keeps the LP's numbers near 1.
    let mut left = network.clone();
    let mut exhausted = vec![false; left.edges.len()];
    for ((edge, used), exhausted) in left.edges.iter_mut().zip(used).zip(&mut exhausted) {
        let idle = edge.capacity - used;
        if idle > edge.capacity * 1e-3 {
            edge.capacity = idle;
        } else {
            *exhausted = true;
        }
    }
    let borrowers: Vec<Transfer> = transfers
        .iter()
        .zip(sent)
        .zip(known)
        .map(|((transfer, &sent), &j)| Transfer {
            pairs: transfer
                .pairs
                .iter()
                .map(|pair| Demand {
                    paths: pair
                        .paths
                        .iter()
                        .filter(|path| path.iter().all(|&e| !exhausted[e]))
                        .cloned()
                        .collect(),
                    ..pair.clone()
                })
                .collect(),
            remaining_bits: (transfer.remaining_bits - sent * slice_s).max(0.0),
            max_rate_bps: vec![(arrivals[j].sender_bps[now] - sent).max(0.0)],
            ..transfer.clone()
        })
        .collect();
    let calendar = Calendar { slice_s, slices: 1 };
    let plan = schedule(
        &left,
        calendar,
        tenants,
        &[],
        &borrowers,
        Preference::Soonest,
    )?;
    Ok(plan.transfers.iter().map(|p| p.rates_bps[0]).collect())
}

/// Whether a guaranteed class is above a link's capacity in slice `t`,
/// and the highest utilisation the guaranteed classes give a link there.
fn guaranteed_overload(network: &Network, plan: &Schedule, t: usize) -> (bool, f64) {
    let mut highest: f64 = 0.0;
    for (e, load) in plan.guaranteed_loads[t].iter().enumerate() {
        highest = highest.max(load / network.edges[e].capacity);
    }
    (highest > 1.0 + 1e-6, highest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_online_schedule_is_near_the_oracle_on_the_demo_topology() {
        let args = BenchJobsArgs {
            topologies: vec!["ai-wan".into()],
            data: PathBuf::from("../shared/data"),
            transfers: 8,
            slices: 10,
            slice_s: 10.0,
            load: 1.0,
            seed: 3,
            json: true,
        };
        let (network, endpoints) = load("ai-wan", &args.data).expect("topology");
        let report = run(&network, &endpoints, &args).expect("run");
        assert_eq!(report.slices_over_capacity, 0, "{report:?}");
        assert_eq!(report.lending_failures, 0, "{report:?}");
        assert!(
            report.max_guaranteed_utilisation <= 1.0 + 1e-6,
            "{report:?}"
        );
        assert!(report.oracle_deadlines_met > 0, "{report:?}");
        assert!(report.deadlines_over_oracle >= 0.9, "{report:?}");
        assert!(report.throughput_over_oracle >= 0.9, "{report:?}");
        // The oracle is an upper bound on throughput (solver tolerance aside).
        assert!(
            report.throughput_bits <= report.oracle_throughput_bits * 1.001,
            "{report:?}"
        );
    }
}
