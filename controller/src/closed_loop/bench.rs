//! `aiwan bench replan`: the closed loop's work for one interval (forecast
//! per class, predicted link loads under the current plan, the candidate
//! plan robust over the recent intervals and the forecast, its predicted
//! MLU), timed on the demo topology with the demo's traffic and on the
//! shared data's larger networks with gravity traffic. Cold is the first
//! interval on a topology (candidate paths computed); warm the next ones
//! (paths reused, and the fast solver started from the last plan's split
//! where a class is above the exact LP's size), each with one more
//! interval of traffic than the one before. Each figure is also given as
//! a share of the telemetry interval it must fit in.

use std::path::PathBuf;
use std::time::Instant;

use aiwan_planner::classes::PathCache;
use aiwan_planner::network::Network;
use aiwan_planner::{Link, Node, NodeRole, Topology};
use anyhow::Context;

use super::demand::MeasuredInterval;
use super::forwarding::Forwarding;
use super::predict::{PlanningMethod, Work, run};
use crate::demo::traffic::{self, Background, Marking};

/// Arguments of `aiwan bench replan`.
#[derive(Debug, clap::Args)]
pub struct BenchReplanArgs {
    /// The shared data folder (for the larger networks).
    #[arg(long, default_value = "../shared/data")]
    pub data: PathBuf,
    /// `demo` (the built-in topology, 1 s telemetry) and benchmark
    /// topologies of `bench planner` (10 s telemetry).
    #[arg(long, value_delimiter = ',', default_value = "demo,UsCarrier")]
    pub topologies: Vec<String>,
    /// Intervals of history the forecaster learns from.
    #[arg(long, default_value_t = 48)]
    pub history: usize,
    /// How the plan serves what may come next (`aiwan`, `worst-window`).
    #[arg(long, value_enum, default_value_t = PlanningMethod::Aiwan)]
    pub method: PlanningMethod,
    /// Past intervals the plan serves.
    #[arg(long, default_value_t = 48)]
    pub window: usize,
    /// Seed of the gravity traffic.
    #[arg(long, default_value_t = 5)]
    pub seed: u64,
    /// Warm intervals timed (the median counts), each one interval later
    /// than the one before.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Print one JSON document (the output is JSON either way).
    #[arg(long)]
    pub json: bool,
}

/// A stored-topology view of a solver network: every node a WAN router.
fn topology_of(network: &Network) -> Topology {
    Topology {
        name: network.name.clone(),
        sites: Vec::new(),
        nodes: network
            .nodes
            .iter()
            .map(|id| Node {
                id: id.clone(),
                site: None,
                role: NodeRole::WanRouter,
                prefixes: Vec::new(),
            })
            .collect(),
        links: network
            .edges
            .iter()
            .enumerate()
            .map(|(i, edge)| Link {
                src: network.nodes[edge.src].clone(),
                src_interface: format!("e{i}"),
                dst: network.nodes[edge.dst].clone(),
                dst_interface: format!("r{i}"),
                capacity_bps: edge.capacity as u64,
                latency_us: edge.latency_us.max(edge.weight) as u64,
                srlgs: Vec::new(),
                admin_up: true,
            })
            .collect(),
    }
}

/// The demo's traffic, one interval a second, as node matrices.
fn demo_history(topology: &Topology, count: usize) -> anyhow::Result<Vec<MeasuredInterval>> {
    let network = Network::from_topology(topology);
    let background = Background::embedded().context("the embedded background")?;
    let n = network.nodes.len();
    let mut intervals = Vec::with_capacity(count);
    for k in 0..count {
        // The history ends inside the training job's scale-out.
        let t = traffic::SCALE_OUT_AT_S + 2.0 - (count - k) as f64;
        let mut interval = MeasuredInterval::empty(k as i64 * 1000, 1000, n);
        for demand in traffic::offered_at(&background, t.max(0.0)) {
            let node_of = |site: &str| {
                crate::planning::site_nodes(topology, &network, site)
                    .first()
                    .copied()
            };
            let (Some(src), Some(dst)) = (node_of(demand.src), node_of(demand.dst)) else {
                continue;
            };
            let class = match demand.marking {
                Marking::AiSync => 0,
                Marking::AiBulk => 1,
                Marking::BestEffort => 2,
            };
            interval.classes[class].values[src * n + dst] += demand.rate_bps;
        }
        intervals.push(interval);
    }
    Ok(intervals)
}

fn gravity_history(network: &Network, seed: u64, count: usize) -> Vec<MeasuredInterval> {
    let n = network.nodes.len();
    aiwan_planner::traffic::gravity(network, seed, count, 0.3)
        .into_iter()
        .enumerate()
        .map(|(k, matrix)| {
            let mut interval = MeasuredInterval::empty(k as i64 * 10_000, 10_000, n);
            interval.classes[2] = matrix;
            interval
        })
        .collect()
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// `aiwan bench replan`.
pub fn bench_replan(args: &BenchReplanArgs) -> anyhow::Result<()> {
    let mut cases = Vec::new();
    let runs = args.runs.max(1);
    for name in &args.topologies {
        let (topology, history, interval_ms) = if name == "demo" {
            let topology = aiwan_planner::formats::clab::parse_clab(include_str!(
                "../../../lab/ai-wan.clab.yml"
            ))
            .context("the built-in topology")?;
            let history = demo_history(&topology, args.history + runs)?;
            (topology, history, 1000.0)
        } else {
            let (path, capacity) = crate::offline::bench_topology(&args.data, name)?;
            if !path.exists() {
                cases.push(serde_json::json!({
                    "topology": name,
                    "skipped": format!("{} is missing (the shared data folder)", path.display()),
                }));
                continue;
            }
            let network = aiwan_planner::formats::load_network(&path, capacity)
                .with_context(|| format!("{}", path.display()))?;
            let history = gravity_history(&network, args.seed, args.history + runs);
            (topology_of(&network), history, 10_000.0)
        };
        let network = Network::from_topology(&topology);
        // Interval `r` (0 cold, then the warm ones) sees the history up to
        // its own newest interval: each re-plan has one new interval of
        // traffic, as in the loop.
        let seen = |r: usize| history[r..r + args.history].to_vec();
        let mut work = Work {
            link_names: super::link_names(&topology),
            covered: super::covered_links(&topology),
            counters: vec![None; network.edges.len()],
            topology,
            network: network.clone(),
            jobs: Vec::new(),
            now_ms: 0,
            history: seen(0),
            sampling: 1.0,
            congestion_threshold: 0.8,
            method: args.method,
            window: args.window,
            plan: true,
            placements: Default::default(),
        };
        let mut paths = PathCache::default();
        let mut forwarding = Forwarding::underlay_only();
        let started = Instant::now();
        let cold = run(&work, &mut forwarding, &mut paths);
        let cold_ms = started.elapsed().as_secs_f64() * 1e3;
        let computed = paths.computed;
        let mut warm = Vec::new();
        let mut solver_cold = Vec::new();
        let mut solver_cold_plan_mlu = f64::NAN;
        let mut last = cold;
        for r in 1..=runs {
            work.history = seen(r);
            // The reference: the same interval with the paths reused but
            // the solver started cold (the splits forgotten).
            let mut without_splits = paths.clone();
            without_splits.forget_splits();
            let started = Instant::now();
            let reference = run(&work, &mut forwarding.clone(), &mut without_splits);
            solver_cold.push(started.elapsed().as_secs_f64() * 1e3);
            if let Some(Ok((plan, _))) = &reference.candidate {
                solver_cold_plan_mlu = plan.mlu;
            }
            let started = Instant::now();
            last = run(&work, &mut forwarding, &mut paths);
            warm.push(started.elapsed().as_secs_f64() * 1e3);
        }
        let warm_ms = median(&mut warm);
        let solver_cold_ms = median(&mut solver_cold);
        let (plan_mlu, candidate_mlu) = match &last.candidate {
            Some(Ok((plan, mlu))) => (plan.mlu, *mlu),
            Some(Err(error)) => anyhow::bail!("{name}: {error}"),
            None => (f64::NAN, f64::NAN),
        };
        let pairs = work
            .history
            .last()
            .map(|i| i.total().demands().len())
            .unwrap_or(0);
        cases.push(serde_json::json!({
            "topology": name,
            "nodes": network.nodes.len(),
            "links": network.edges.len(),
            "pairs": pairs,
            "history": work.history.len(),
            "method": work.method.as_str(),
            "scenarios": work.window.min(work.history.len()) + 1,
            "interval_ms": interval_ms,
            "cold_ms": cold_ms,
            "warm_ms": warm_ms,
            "warm_solver_cold_ms": solver_cold_ms,
            "warm_over_solver_cold": warm_ms / solver_cold_ms,
            "cold_share_of_interval": cold_ms / interval_ms,
            "warm_share_of_interval": warm_ms / interval_ms,
            "paths_computed": computed,
            "paths_reused_per_replan": paths.reused / runs,
            // Candidate paths held after the last re-plan (more than the
            // pairs where a class's paths come on demand and grew).
            "paths_held": paths.paths_held(),
            // Class solves above the exact LP's size that started from the
            // last plan's split, over the warm intervals.
            "warm_started_solves": paths.warm_starts,
            "predicted_mlu_current": last.prediction.current_mlu,
            "predicted_mlu_candidate": candidate_mlu,
            "candidate_plan_mlu": plan_mlu,
            // The last interval's plan with the solver started cold.
            "solver_cold_plan_mlu": solver_cold_plan_mlu,
        }));
    }
    let report = serde_json::json!({ "cases": cases });
    crate::client::print_out(&format!("{}\n", serde_json::to_string_pretty(&report)?))
}
