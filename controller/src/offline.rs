//! Subcommands that run the planner on files, without a controller:
//! `aiwan plan`. File reading happens here; the planner stays pure.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use aiwan_planner::allocation::{Allocation, Problem};
use aiwan_planner::fast::{FastOptions, solve_fast};
use aiwan_planner::formats;
use aiwan_planner::lp::{LpError, edge_lp_lower_bound, failure_robust_path_lp, path_lp};
use aiwan_planner::network::{Network, TrafficMatrix};
use aiwan_planner::paths::PathOptions;
use anyhow::{Context, bail};

/// Which solvers `aiwan plan` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SolverChoice {
    /// The reference LP (Clarabel).
    Lp,
    Fast,
    /// The reference LP and the fast solver.
    Both,
    /// HiGHS over the same paths, and the fast solver beside it (an aiwan
    /// built with `--features highs`).
    Highs,
}

/// The path LP solved by HiGHS; the outer error when this build has no
/// HiGHS.
#[cfg(feature = "highs")]
fn highs_path_lp(
    problem: &Problem,
    time_limit_s: f64,
) -> anyhow::Result<Result<(Allocation, f64), LpError>> {
    Ok(aiwan_planner::highs_lp::path_lp_highs(
        problem,
        Some(time_limit_s),
    ))
}

#[cfg(not(feature = "highs"))]
fn highs_path_lp(
    _problem: &Problem,
    _time_limit_s: f64,
) -> anyhow::Result<Result<(Allocation, f64), LpError>> {
    bail!(HIGHS_MISSING)
}

const HIGHS_MISSING: &str = "--solver highs: this aiwan was built without HiGHS; build it \
     with `cargo build --release --features highs` (needs cmake, a C++ compiler and libclang)";

/// Arguments of `aiwan plan`.
#[derive(Debug, Clone, clap::Args)]
pub struct PlanArgs {
    /// Network: node-link JSON, SNDlib XML, GraphML, or the Abilene link table.
    #[arg(long)]
    pub topology: PathBuf,
    /// Traffic: one matrix per line, an SNDlib demand XML file, or a folder of them.
    #[arg(long)]
    pub traffic: PathBuf,
    /// Which matrix of the series to plan for (0-based).
    #[arg(long, default_value_t = 0)]
    pub snapshot: usize,
    /// Candidate paths per pair: the K shortest loop-free paths.
    #[arg(long, default_value_t = 4, conflicts_with = "tunnels")]
    pub paths: usize,
    /// Candidate paths from a tunnels file (`SRC DST:p1,p2` lines).
    #[arg(long)]
    pub tunnels: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = SolverChoice::Both)]
    pub solver: SolverChoice,
    /// Also compute the edge-LP lower bound over all paths.
    #[arg(long)]
    pub lower_bound: bool,
    /// Also evaluate each solver's allocation under every single link
    /// failure (traffic moves to the surviving paths in proportion) and
    /// report the worst case.
    #[arg(long)]
    pub what_if: bool,
    /// Also plan against the worst single link failure (the forward fault
    /// correction LP) and report that plan as solver `robust-lp`, with its
    /// guaranteed worst-failure MLU and the what-if evaluation of it.
    #[arg(long)]
    pub robust: bool,
    /// Uniform link capacity in bit/s, for files that carry none (GraphML).
    #[arg(long)]
    pub capacity: Option<f64>,
    /// Factor applied to every traffic value (for example 100*8/300 for the
    /// Abilene matrices, given in 100 bytes per 5 minutes).
    #[arg(long, default_value_t = 1.0)]
    pub traffic_scale: f64,
    /// Time limit for each LP, in seconds.
    #[arg(long, default_value_t = 600.0)]
    pub lp_time_limit: f64,
    /// Write each solver's allocation here as JSON.
    #[arg(long)]
    pub allocation_out: Option<PathBuf>,
    /// Print one JSON document.
    #[arg(long)]
    pub json: bool,
}

/// Candidate paths (node index sequences) of each (source, destination).
type PathsByPair = HashMap<(usize, usize), Vec<Vec<usize>>>;

/// Reads a tunnels file into node paths per pair.
fn load_tunnels(path: &Path, network: &Network) -> anyhow::Result<PathsByPair> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read --tunnels {}", path.display()))?;
    let tunnels = formats::tunnels::parse_tunnels(&text, network)
        .with_context(|| format!("--tunnels {}", path.display()))?;
    Ok(tunnels
        .into_iter()
        .map(|t| ((t.src, t.dst), t.paths))
        .collect())
}

/// The problem `aiwan plan` and `aiwan eval` solve for one matrix.
fn build_problem(
    network: &Network,
    matrix: &TrafficMatrix,
    paths: usize,
    tunnels: Option<&PathsByPair>,
) -> anyhow::Result<Problem> {
    let problem = match tunnels {
        Some(tunnels) => Problem::with_node_paths(network.clone(), matrix, |s, t| {
            tunnels.get(&(s, t)).cloned().unwrap_or_default()
        })?,
        None => {
            if paths == 0 {
                bail!("--paths must be at least 1");
            }
            Problem::with_k_paths(network.clone(), matrix, &PathOptions::k_shortest(paths))?
        }
    };
    Ok(problem)
}

fn allocation_json(problem: &Problem, allocation: &Allocation) -> serde_json::Value {
    let network = &problem.network;
    let node = |i: usize| -> serde_json::Value {
        // Ids as in the input: numbers stay numbers.
        let name = network.nodes.get(i).cloned().unwrap_or_default();
        name.parse::<u64>()
            .map(serde_json::Value::from)
            .unwrap_or(serde_json::Value::from(name))
    };
    let entries: Vec<serde_json::Value> = problem
        .demands
        .iter()
        .zip(&allocation.splits)
        .map(|(demand, split)| {
            let paths: Vec<serde_json::Value> = demand
                .paths
                .iter()
                .zip(split)
                .map(|(path, fraction)| {
                    let mut nodes = vec![node(demand.src)];
                    nodes.extend(path.iter().map(|&e| node(network.edges[e].dst)));
                    serde_json::json!({ "nodes": nodes, "fraction": fraction })
                })
                .collect();
            serde_json::json!({
                "src": node(demand.src),
                "dst": node(demand.dst),
                "demand": demand.rate,
                "paths": paths,
            })
        })
        .collect();
    serde_json::Value::Array(entries)
}

/// Adds the worst single-link failure of `allocation` to a solver's entry.
fn add_what_if(entry: &mut serde_json::Value, problem: &Problem, allocation: &Allocation) {
    if let Some(worst) = aiwan_planner::failures::worst_single_failure(problem, allocation) {
        let network = &problem.network;
        let link = worst.failed_edges.first().map(|&e| {
            let edge = &network.edges[e];
            format!("{}-{}", network.nodes[edge.src], network.nodes[edge.dst])
        });
        entry["worst_failure_mlu"] = serde_json::json!(worst.mlu);
        entry["worst_failure_link"] = serde_json::json!(link);
        entry["worst_failure_cut_off_demands"] = serde_json::json!(worst.cut_off.len());
    }
}

/// `aiwan plan`.
pub fn plan(args: &PlanArgs) -> anyhow::Result<()> {
    // Said before the paths are computed, which may take minutes.
    if args.solver == SolverChoice::Highs && !cfg!(feature = "highs") {
        bail!(HIGHS_MISSING);
    }
    let network = formats::load_network(&args.topology, args.capacity)?;
    let series = formats::load_traffic(&args.traffic, &network, args.traffic_scale)?;
    let Some(matrix) = series.get(args.snapshot) else {
        bail!(
            "--snapshot {}: {} holds {} matrices (0 to {})",
            args.snapshot,
            args.traffic.display(),
            series.len(),
            series.len().saturating_sub(1)
        );
    };
    let tunnels = args
        .tunnels
        .as_deref()
        .map(|path| load_tunnels(path, &network))
        .transpose()?;
    let started = Instant::now();
    let problem = build_problem(&network, matrix, args.paths, tunnels.as_ref())?;
    let paths_ms = started.elapsed().as_secs_f64() * 1e3;

    let mut solvers = Vec::new();
    let mut allocations = serde_json::Map::new();
    if args.solver != SolverChoice::Fast {
        let started = Instant::now();
        let (name, solved) = if args.solver == SolverChoice::Highs {
            ("highs", highs_path_lp(&problem, args.lp_time_limit)?)
        } else {
            ("lp", path_lp(&problem, Some(args.lp_time_limit)))
        };
        let solve_ms = started.elapsed().as_secs_f64() * 1e3;
        match solved {
            Ok((allocation, _)) => {
                let mlu = problem.evaluate(&allocation)?.mlu;
                let mut entry = serde_json::json!({
                    "name": name, "status": "solved", "mlu": mlu, "solve_ms": solve_ms,
                });
                if args.what_if {
                    add_what_if(&mut entry, &problem, &allocation);
                }
                solvers.push(entry);
                allocations.insert(name.into(), allocation_json(&problem, &allocation));
            }
            // With the fast solver beside it, an LP that does not finish
            // is a result to report, not a reason to print nothing.
            Err(error) if args.solver != SolverChoice::Lp => {
                let status = match &error {
                    LpError::NotSolved(reason) if reason == "MaxTime" => "timed_out",
                    _ => "failed",
                };
                tracing::warn!(%error, "the reference LP has no plan; the fast solver's follows");
                solvers.push(serde_json::json!({
                    "name": name,
                    "status": status,
                    "error": error.to_string(),
                    "solve_ms": solve_ms,
                    "time_limit_s": args.lp_time_limit,
                }));
            }
            Err(error) => {
                return Err(error).context(
                    "reference LP (--solver both prints the fast solver's plan and its \
                     proven bound when the LP does not finish)",
                );
            }
        }
    }
    if args.solver != SolverChoice::Lp {
        let started = Instant::now();
        let solution = solve_fast(&problem, &FastOptions::default());
        let solve_ms = started.elapsed().as_secs_f64() * 1e3;
        let allocation = solution.allocation;
        let mlu = problem.evaluate(&allocation)?.mlu;
        let mut entry = serde_json::json!({
            "name": "fast",
            "status": "solved",
            "mlu": mlu,
            "solve_ms": solve_ms,
            "iterations": solution.iterations,
            "finished_exactly": solution.finished_exactly,
            // A weak-duality bound over these candidate paths: the LP
            // cannot do better.
            "path_lower_bound_mlu": solution.lower_bound,
        });
        if args.what_if {
            add_what_if(&mut entry, &problem, &allocation);
        }
        solvers.push(entry);
        allocations.insert("fast".into(), allocation_json(&problem, &allocation));
    }
    if args.robust {
        let started = Instant::now();
        let (allocation, guarantee) =
            failure_robust_path_lp(&problem, Some(args.lp_time_limit)).context("robust LP")?;
        let solve_ms = started.elapsed().as_secs_f64() * 1e3;
        let mlu = problem.evaluate(&allocation)?.mlu;
        let mut entry = serde_json::json!({
            "name": "robust-lp",
            "mlu": mlu,
            "solve_ms": solve_ms,
            "failure_guarantee_mlu": guarantee,
        });
        add_what_if(&mut entry, &problem, &allocation);
        solvers.push(entry);
        allocations.insert("robust-lp".into(), allocation_json(&problem, &allocation));
    }
    let lower_bound = if args.lower_bound {
        Some(edge_lp_lower_bound(&network, matrix, Some(args.lp_time_limit)).context("edge LP")?)
    } else {
        None
    };
    if let Some(path) = &args.allocation_out {
        let document = serde_json::json!({ "solvers": allocations });
        std::fs::write(path, format!("{document}\n"))
            .with_context(|| format!("cannot write --allocation-out {}", path.display()))?;
    }
    let mut report = serde_json::json!({
        "topology": args.topology.display().to_string(),
        "snapshot": args.snapshot,
        "nodes": network.nodes.len(),
        "links": network.edges.len(),
        "demands": problem.demands.len(),
        "paths": problem.demands.iter().map(|d| d.paths.len()).sum::<usize>(),
        "paths_ms": paths_ms,
        "solvers": solvers,
    });
    if let Some(bound) = lower_bound {
        report["lower_bound_mlu"] = serde_json::json!(bound);
    }
    if args.json {
        crate::client::print_out(&format!("{report}\n"))
    } else {
        let mut text = format!(
            "{}: {} nodes, {} links, {} demands, {} paths ({paths_ms:.1} ms)\n",
            args.topology.display(),
            network.nodes.len(),
            network.edges.len(),
            problem.demands.len(),
            report["paths"]
        );
        for solver in report["solvers"].as_array().into_iter().flatten() {
            let name = solver["name"].as_str().unwrap_or("");
            let solve_ms = solver["solve_ms"].as_f64().unwrap_or(f64::NAN);
            if let Some(error) = solver["error"].as_str() {
                text.push_str(&format!(
                    "{name:<5} no plan after {solve_ms:.1} ms (limit {} s): {error}\n",
                    solver["time_limit_s"]
                ));
                continue;
            }
            let mlu = solver["mlu"].as_f64().unwrap_or(f64::NAN);
            text.push_str(&format!("{name:<5} MLU {mlu:.9}  in {solve_ms:.1} ms"));
            if let Some(bound) = solver["path_lower_bound_mlu"].as_f64() {
                text.push_str(&format!(
                    "; proven bound {bound:.9} (gap {:.4})",
                    mlu / bound.max(f64::MIN_POSITIVE)
                ));
            }
            if let Some(worst) = solver["worst_failure_mlu"].as_f64() {
                text.push_str(&format!(
                    "; worst single failure {} -> MLU {worst:.6}",
                    solver["worst_failure_link"].as_str().unwrap_or("?")
                ));
            }
            text.push('\n');
        }
        if let Some(bound) = lower_bound {
            text.push_str(&format!("lower bound over all paths: MLU {bound:.9}\n"));
        }
        crate::client::print_out(&text)
    }
}

/// Traffic models `aiwan gen-traffic` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TrafficModel {
    /// Gravity model: entry (i, j) proportional to the nodes' capacities.
    Gravity,
    /// AI cluster traffic: training jobs synchronising in rings between
    /// the largest nodes (the datacentres) in periodic bursts, and
    /// checkpoints to the largest one, over a gravity background.
    Ai,
}

/// Arguments of `aiwan gen-traffic`.
#[derive(Debug, Clone, clap::Args)]
pub struct GenTrafficArgs {
    /// Network file, as for `aiwan plan`.
    #[arg(long)]
    pub topology: PathBuf,
    #[arg(long, value_enum, default_value_t = TrafficModel::Gravity)]
    pub model: TrafficModel,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    #[arg(long, default_value_t = 1)]
    pub snapshots: usize,
    /// Average link load the matrices aim at over shortest paths (0.3 = 30%).
    #[arg(long, default_value_t = 0.3)]
    pub load: f64,
    /// Uniform link capacity in bit/s, for files that carry none (GraphML).
    #[arg(long)]
    pub capacity: Option<f64>,
}

/// `aiwan gen-traffic`: prints one matrix per line (bit/s, row-major), the
/// format `--traffic` reads.
pub fn gen_traffic(args: &GenTrafficArgs) -> anyhow::Result<()> {
    if !(args.load.is_finite() && args.load > 0.0) {
        bail!("--load must be a positive number, got {}", args.load);
    }
    let network = formats::load_network(&args.topology, args.capacity)?;
    let series = match args.model {
        TrafficModel::Gravity => {
            aiwan_planner::traffic::gravity(&network, args.seed, args.snapshots, args.load)
        }
        TrafficModel::Ai => {
            aiwan_planner::traffic::ai(&network, args.seed, args.snapshots, args.load)
        }
    };
    let mut out = String::new();
    for matrix in &series {
        let line: Vec<String> = matrix.values.iter().map(|v| format!("{v:.1}")).collect();
        out.push_str(&line.join(" "));
        out.push('\n');
    }
    crate::client::print_out(&out)
}

/// Arguments of `aiwan bench planner`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchPlannerArgs {
    /// The shared data folder.
    #[arg(long, default_value = "../shared/data")]
    pub data: PathBuf,
    /// Which benchmark topologies, by name; `SNDlib` is every network of
    /// `sndlib/topologies` with its own demands.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "GEANT,Cogentco,Kdl,ASN2k,SNDlib"
    )]
    pub topologies: Vec<String>,
    /// Candidate paths per pair.
    #[arg(long, default_value_t = 4)]
    pub paths: usize,
    /// Seed of the gravity matrix.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Time limit of the reference LP, seconds.
    #[arg(long, default_value_t = 600.0)]
    pub lp_time_limit: f64,
    /// Skip the LP above this many variables (its memory grows past the
    /// machine's well before its time does).
    #[arg(long, default_value_t = 3_000_000)]
    pub max_lp_vars: usize,
    /// Most gradient steps of the fast solver.
    #[arg(long, default_value_t = FastOptions::default().iterations)]
    pub fast_iterations: usize,
    /// The fast solver stops once its MLU is within this of its lower bound.
    #[arg(long, default_value_t = FastOptions::default().gap_tolerance)]
    pub gap_tolerance: f64,
    /// Parts of each topology's run to leave out (their figures are then
    /// absent): `k-paths` (Yen's paths and everything planned over them:
    /// the fast solver, its warm re-plan, the LP, HiGHS, the failure
    /// update), `paths-after-failure`, `on-demand`.
    #[arg(long, value_delimiter = ',')]
    pub skip: Vec<BenchPart>,
    /// Print one JSON document (the default output is JSON as well).
    #[arg(long)]
    pub json: bool,
}

impl BenchPlannerArgs {
    /// The fast solver's options these arguments set.
    fn fast_options(&self) -> FastOptions {
        FastOptions {
            iterations: self.fast_iterations,
            gap_tolerance: self.gap_tolerance,
            ..FastOptions::default()
        }
    }
}

/// A part of `bench planner`'s run per topology.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchPart {
    KPaths,
    PathsAfterFailure,
    OnDemand,
}

/// The file and capacity of each benchmark topology.
pub fn bench_topology(data: &Path, name: &str) -> anyhow::Result<(PathBuf, Option<f64>)> {
    Ok(match name {
        "GEANT" => (data.join("geant/GEANT.json"), None),
        "Cogentco" => (data.join("topologies/zoo/Cogentco.graphml"), Some(10e9)),
        "UsCarrier" => (data.join("topologies/teal/UsCarrier.json"), None),
        "B4" => (data.join("topologies/teal/B4.json"), None),
        "Kdl" => (data.join("topologies/teal/Kdl.json"), None),
        "ASN2k" => (data.join("topologies/teal/ASN2k.json"), None),
        other => bail!(
            "unknown benchmark topology {other:?}: GEANT, Cogentco, UsCarrier, B4, Kdl, ASN2k, SNDlib"
        ),
    })
}

/// The candidate paths after a link fails (both directions): the paths
/// kept from before and those computed again, timed against the cold
/// computation (`cold_paths_s`) of the same run, and checked against a
/// cold computation on the failed network for a sample of pairs. Two
/// failures, each from the cold paths: the link most paths use (the worst
/// case for the update) and the link of median use among those used (a
/// typical one).
fn paths_after_failure(
    network: &Network,
    problem: &Problem,
    k: usize,
    cold_paths_s: f64,
) -> serde_json::Value {
    let (uses, used) = edges_by_use(problem);
    let (Some(&busiest), Some(&median)) = (used.last(), used.get(used.len() / 2)) else {
        return serde_json::json!(null);
    };
    serde_json::json!({
        "busiest_link": one_failure(network, problem, k, cold_paths_s, busiest, &uses),
        "median_link": one_failure(network, problem, k, cold_paths_s, median, &uses),
    })
}

/// How many paths of `problem` use each edge, and the used edges from
/// least to most used (ties by index).
fn edges_by_use(problem: &Problem) -> (Vec<usize>, Vec<usize>) {
    let mut uses = vec![0usize; problem.network.edges.len()];
    for &e in problem
        .demands
        .iter()
        .flat_map(|d| d.paths.iter().flatten())
    {
        uses[e] += 1;
    }
    let mut used: Vec<usize> = (0..uses.len()).filter(|&e| uses[e] > 0).collect();
    used.sort_by_key(|&e| (uses[e], e));
    (uses, used)
}

fn one_failure(
    network: &Network,
    problem: &Problem,
    k: usize,
    cold_paths_s: f64,
    failed_edge: usize,
    uses: &[usize],
) -> serde_json::Value {
    use aiwan_planner::classes::PathCache;
    let options = PathOptions::k_shortest(k);
    // The cache starts with the paths the cold computation found.
    let mut cache = PathCache::default();
    cache.follow(network);
    for demand in &problem.demands {
        cache.remember(demand.src, demand.dst, &options, demand.paths.clone());
    }
    let pairs: Vec<(usize, usize)> = problem.demands.iter().map(|d| (d.src, d.dst)).collect();
    let edge = &network.edges[failed_edge];
    let gone = |e: &aiwan_planner::network::Edge| {
        (e.src == edge.src && e.dst == edge.dst) || (e.src == edge.dst && e.dst == edge.src)
    };
    let mut failed = network.clone();
    failed.edges.retain(|e| !gone(e));
    let started = Instant::now();
    cache.follow(&failed);
    let recomputed = cache.fill(&failed, &pairs, &options);
    let update_s = started.elapsed().as_secs_f64();
    // A sample of pairs (every 97th) computed cold on the failed network
    // must get the same paths.
    let sample: Vec<(usize, usize)> = pairs.iter().copied().step_by(97).collect();
    let cold = aiwan_planner::paths::candidate_paths_of_pairs(&failed, &sample, &options);
    let mut finder = aiwan_planner::paths::ShortestPaths::new(&failed);
    let cost = |paths: &[Vec<usize>]| -> Vec<f64> {
        paths
            .iter()
            .map(|p| p.iter().map(|&e| failed.edges[e].weight).sum())
            .collect()
    };
    let (mut same, mut same_costs) = (0, 0);
    for (&(src, dst), cold) in sample.iter().zip(&cold) {
        let updated = cache.get_or_compute(&failed, &mut finder, src, dst, &options);
        if updated == *cold {
            same += 1;
        }
        let (a, b) = (cost(&updated), cost(cold));
        if a.len() == b.len()
            && a.iter()
                .zip(&b)
                .all(|(x, y)| (x - y).abs() <= 1e-9 * y.abs().max(1.0))
        {
            same_costs += 1;
        }
    }
    serde_json::json!({
        "link": format!("{}-{}", network.nodes[edge.src], network.nodes[edge.dst]),
        "paths_using_it": uses[failed_edge],
        "pairs_kept": cache.kept_after_change,
        "pairs_recomputed": recomputed,
        "update_s": update_s,
        "update_over_cold": update_s / cold_paths_s.max(1e-9),
        // Equal paths, or (ties among equally short paths broken another
        // way) paths of equal costs, as a cold computation.
        "sample_pairs": sample.len(),
        "sample_same_paths": same,
        "sample_same_costs": same_costs,
    })
}

/// A re-plan after a 10% traffic change: every demand's rate times a
/// seeded factor between 0.9 and 1.1, solved cold and warm-started from
/// `before` (the plan of the traffic before), on the same paths; times,
/// steps, MLUs and proven gaps of both, and the warm time over the cold.
fn warm_replan(
    problem: &mut Problem,
    before: &aiwan_planner::fast::FastSolution,
    options: &FastOptions,
    seed: u64,
) -> anyhow::Result<serde_json::Value> {
    // Scaled in place and put back after (a copy of Kdl's or ASN2k's
    // paths would double the bench's peak memory).
    let rates: Vec<f64> = problem.demands.iter().map(|d| d.rate).collect();
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    for demand in &mut problem.demands {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let unit = (state >> 11) as f64 / (1u64 << 53) as f64;
        demand.rate *= 0.9 + 0.2 * unit;
    }
    let changed = &*problem;
    let run = |warm: Option<(Allocation, Vec<f64>)>| {
        let (warm_start, warm_prices) = warm.unzip();
        let options = FastOptions {
            warm_start,
            warm_prices,
            ..options.clone()
        };
        let started = Instant::now();
        let solution = solve_fast(changed, &options);
        let seconds = started.elapsed().as_secs_f64();
        let mlu = changed.evaluate(&solution.allocation)?.mlu;
        anyhow::Ok((solution, seconds, mlu))
    };
    let (cold, cold_s, cold_mlu) = run(None)?;
    let (warm, warm_s, warm_mlu) = run(Some((before.allocation.clone(), before.prices.clone())))?;
    for (demand, rate) in problem.demands.iter_mut().zip(rates) {
        demand.rate = rate;
    }
    Ok(serde_json::json!({
        "change": "every demand's rate times a factor in [0.9, 1.1]",
        "cold_s": cold_s,
        "cold_mlu": cold_mlu,
        "cold_iterations": cold.iterations,
        "cold_gap": cold_mlu / cold.lower_bound,
        "warm_s": warm_s,
        "warm_mlu": warm_mlu,
        "warm_iterations": warm.iterations,
        "warm_gap": warm_mlu / warm.lower_bound,
        "warm_over_cold_s": warm_s / cold_s,
        "warm_over_cold_mlu": warm_mlu / cold_mlu,
    }))
}

/// The same matrix planned with paths on demand (column generation) in
/// the same run: time to the first paths and to the plan, rounds, paths
/// given, MLU, the bound over all paths, and the ratios to the K-path
/// route when it ran (`k_paths`: the time of Yen's paths plus their fast
/// solve, and that plan's MLU).
fn on_demand(
    network: &aiwan_planner::network::Network,
    matrix: &TrafficMatrix,
    fast: &FastOptions,
    k_paths: Option<(f64, f64)>,
) -> anyhow::Result<serde_json::Value> {
    use aiwan_planner::on_demand::{OnDemandOptions, solve_on_demand};
    let options = OnDemandOptions {
        fast: fast.clone(),
        ..OnDemandOptions::default()
    };
    let started = Instant::now();
    let solved = solve_on_demand(network.clone(), &matrix.demands(), &options)?;
    let total_s = started.elapsed().as_secs_f64();
    let mlu = solved.problem.evaluate(&solved.solution.allocation)?.mlu;
    // Link failures as for the K paths: the link most paths use and the
    // one of median use, both directions.
    let (uses, used) = edges_by_use(&solved.problem);
    let mut failures = serde_json::Map::new();
    for (name, edge) in [
        ("busiest_link", used.last()),
        ("median_link", used.get(used.len() / 2)),
    ] {
        let Some(&edge) = edge else { continue };
        let (a, b) = (network.edges[edge].src, network.edges[edge].dst);
        let failed = aiwan_planner::on_demand::link_of(network, edge);
        let mut problem = solved.problem.clone();
        let mut allocation = solved.solution.allocation.clone();
        let started = Instant::now();
        let stranded =
            aiwan_planner::on_demand::after_link_failure(&mut problem, &mut allocation, &failed)?;
        let update_s = started.elapsed().as_secs_f64();
        let started = Instant::now();
        let replan = aiwan_planner::on_demand::improve(problem, Some(allocation), &options);
        let replan_s = started.elapsed().as_secs_f64();
        failures.insert(
            name.to_string(),
            serde_json::json!({
                "link": format!("{} - {}", network.nodes[a], network.nodes[b]),
                "paths_using_it": uses[edge],
                "pairs_given_a_new_path": stranded,
                "update_s": update_s,
                "replan_s": replan_s,
                "replan_rounds": replan.rounds,
                "replan_mlu": replan.solution.mlu,
                "replan_gap_all_paths": replan.solution.mlu / replan.lower_bound,
            }),
        );
    }
    let mut entry = serde_json::json!({
        "after_failure": failures,
        "first_paths_s": solved.first_paths_s,
        "pricing_s": solved.pricing_s,
        "solving_s": solved.solving_s,
        "total_s": total_s,
        "rounds": solved.rounds,
        "paths": solved.paths,
        "paths_per_pair": solved.paths as f64 / solved.problem.demands.len().max(1) as f64,
        "mlu": mlu,
        "lower_bound_all_paths": solved.lower_bound,
        "gap_all_paths": mlu / solved.lower_bound,
    });
    if let Some((k_paths_s, k_paths_mlu)) = k_paths {
        entry["mlu_over_k_paths"] = serde_json::json!(mlu / k_paths_mlu);
        entry["total_over_k_paths"] = serde_json::json!(total_s / k_paths_s);
    }
    Ok(entry)
}

/// HiGHS on the same problem, in the same run, when this build has it:
/// the outside solver the fast one is compared with (`highs_s`,
/// `highs_mlu`, `speedup_over_highs`, `mlu_over_highs`).
#[cfg(feature = "highs")]
fn add_highs(
    entry: &mut serde_json::Value,
    problem: &Problem,
    fast_s: f64,
    fast_mlu: f64,
    time_limit_s: f64,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let solved = aiwan_planner::highs_lp::path_lp_highs(problem, Some(time_limit_s));
    let highs_s = started.elapsed().as_secs_f64();
    match solved {
        Ok((_, highs_mlu)) => {
            entry["highs_status"] = serde_json::json!("solved");
            entry["highs_mlu"] = serde_json::json!(highs_mlu);
            entry["highs_s"] = serde_json::json!(highs_s);
            entry["speedup_over_highs"] = serde_json::json!(highs_s / fast_s);
            entry["mlu_over_highs"] = serde_json::json!(fast_mlu / highs_mlu);
        }
        Err(error) => {
            entry["highs_status"] = serde_json::json!(format!("{error} after {highs_s:.0} s"));
            entry["speedup_over_highs_at_least"] = serde_json::json!(highs_s / fast_s);
        }
    }
    Ok(())
}

#[cfg(not(feature = "highs"))]
fn add_highs(
    entry: &mut serde_json::Value,
    _problem: &Problem,
    _fast_s: f64,
    _fast_mlu: f64,
    _time_limit_s: f64,
) -> anyhow::Result<()> {
    entry["highs_status"] = serde_json::json!("not in this build (--features highs)");
    Ok(())
}

/// `aiwan bench planner`: per topology, a gravity matrix over K shortest
/// paths, solved by the reference LP and the fast solver in the same run;
/// MLU and time of each, and their ratios.
pub fn bench_planner(args: &BenchPlannerArgs) -> anyhow::Result<()> {
    let mut results = Vec::new();
    for name in &args.topologies {
        if name == "SNDlib" {
            let entry = bench_sndlib(args)?;
            eprintln!("{entry}");
            results.push(entry);
            continue;
        }
        let (path, capacity) = bench_topology(&args.data, name)?;
        let network = formats::load_network(&path, capacity)?;
        let matrix = aiwan_planner::traffic::gravity(&network, args.seed, 1, 0.3)
            .pop()
            .context("gravity model gave no matrix")?;
        let options = args.fast_options();
        if args.skip.contains(&BenchPart::KPaths) {
            let mut entry = serde_json::json!({
                "topology": name,
                "nodes": network.nodes.len(),
                "links": network.edges.len(),
                "demands": matrix.demands().len(),
            });
            if !args.skip.contains(&BenchPart::OnDemand) {
                entry["on_demand"] = on_demand(&network, &matrix, &options, None)?;
            }
            eprintln!("{entry}");
            results.push(entry);
            continue;
        }
        let started = Instant::now();
        let mut problem = Problem::with_k_paths(
            network.clone(),
            &matrix,
            &PathOptions::k_shortest(args.paths),
        )?;
        let paths_s = started.elapsed().as_secs_f64();
        let failure = if args.skip.contains(&BenchPart::PathsAfterFailure) {
            serde_json::Value::Null
        } else {
            paths_after_failure(&network, &problem, args.paths, paths_s)
        };
        let started = Instant::now();
        let fast = solve_fast(&problem, &options);
        let fast_s = started.elapsed().as_secs_f64();
        let fast_mlu = problem.evaluate(&fast.allocation)?.mlu;
        let warm_replan = warm_replan(&mut problem, &fast, &options, args.seed)?;

        let on_demand = if args.skip.contains(&BenchPart::OnDemand) {
            serde_json::Value::Null
        } else {
            on_demand(
                &network,
                &matrix,
                &options,
                Some((paths_s + fast_s, fast_mlu)),
            )?
        };
        let variables: usize = problem.demands.iter().map(|d| d.paths.len()).sum::<usize>() + 1;
        let mut entry = serde_json::json!({
            "topology": name,
            "nodes": network.nodes.len(),
            "links": network.edges.len(),
            "demands": problem.demands.len(),
            "lp_variables": variables,
            "paths_s": paths_s,
            "paths_after_failure": failure,
            "fast_mlu": fast_mlu,
            "fast_s": fast_s,
            "fast_iterations": fast.iterations,
            // Certified by link prices (weak duality): no split over these
            // paths does better, so fast_gap bounds fast / LP from above.
            "fast_lower_bound": fast.lower_bound,
            "fast_gap": fast_mlu / fast.lower_bound,
            "warm_replan": warm_replan,
            "on_demand": on_demand,
        });
        if variables > args.max_lp_vars {
            entry["lp_status"] = serde_json::json!(format!(
                "skipped: {variables} variables is above --max-lp-vars {}",
                args.max_lp_vars
            ));
        } else {
            let started = Instant::now();
            match path_lp(&problem, Some(args.lp_time_limit)) {
                Ok((allocation, _)) => {
                    let lp_s = started.elapsed().as_secs_f64();
                    let lp_mlu = problem.evaluate(&allocation)?.mlu;
                    entry["lp_status"] = serde_json::json!("solved");
                    entry["lp_mlu"] = serde_json::json!(lp_mlu);
                    entry["lp_s"] = serde_json::json!(lp_s);
                    entry["mlu_ratio"] = serde_json::json!(fast_mlu / lp_mlu);
                    entry["speedup"] = serde_json::json!(lp_s / fast_s);
                }
                Err(error) => {
                    let lp_s = started.elapsed().as_secs_f64();
                    entry["lp_status"] = serde_json::json!(format!("{error} after {lp_s:.0} s"));
                    // The LP would have taken longer still: a floor on
                    // the speed-up, with fast_gap vouching for the quality.
                    entry["lp_s_at_least"] = serde_json::json!(lp_s);
                    entry["speedup_at_least"] = serde_json::json!(lp_s / fast_s);
                }
            }
        }
        if variables > args.max_lp_vars {
            entry["highs_status"] = entry["lp_status"].clone();
        } else {
            add_highs(&mut entry, &problem, fast_s, fast_mlu, args.lp_time_limit)?;
        }
        eprintln!("{entry}");
        results.push(entry);
    }
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let report = serde_json::json!({
        "bench": "planner",
        "paths_per_pair": args.paths,
        "seed": args.seed,
        "threads": threads,
        "results": results,
    });
    crate::client::print_out(&format!("{report}\n"))
}

/// `bench planner`'s SNDlib entry: every network of `sndlib/topologies`
/// with the demands its file carries, over K shortest paths, solved by the
/// fast solver and the reference LP in the same run: the fast solver's
/// quality where the optimum is known, on many small networks.
fn bench_sndlib(args: &BenchPlannerArgs) -> anyhow::Result<serde_json::Value> {
    let folder = args.data.join("sndlib/topologies");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&folder)
        .with_context(|| format!("reading {}", folder.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|e| e == "xml"))
        .collect();
    files.sort();
    let options = args.fast_options();
    let mut networks = Vec::new();
    let mut worst: f64 = 0.0;
    let mut within_1pct = 0;
    for file in &files {
        let name = file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let network = formats::load_network(file, None)?;
        let matrix = formats::load_traffic(file, &network, 1.0)?
            .into_iter()
            .next()
            .with_context(|| format!("{} holds no demands", file.display()))?;
        let problem =
            Problem::with_k_paths(network, &matrix, &PathOptions::k_shortest(args.paths))?;
        let started = Instant::now();
        let fast = solve_fast(&problem, &options);
        let fast_s = started.elapsed().as_secs_f64();
        let fast_mlu = problem.evaluate(&fast.allocation)?.mlu;
        let started = Instant::now();
        let (allocation, _) = path_lp(&problem, Some(args.lp_time_limit))
            .with_context(|| format!("reference LP on {name}"))?;
        let lp_s = started.elapsed().as_secs_f64();
        let lp_mlu = problem.evaluate(&allocation)?.mlu;
        let ratio = fast_mlu / lp_mlu;
        worst = worst.max(ratio);
        if ratio <= 1.01 {
            within_1pct += 1;
        }
        networks.push(serde_json::json!({
            "network": name,
            "demands": problem.demands.len(),
            "fast_mlu": fast_mlu,
            "fast_s": fast_s,
            "fast_iterations": fast.iterations,
            "fast_finished_exactly": fast.finished_exactly,
            "fast_gap": fast_mlu / fast.lower_bound,
            "lp_mlu": lp_mlu,
            "lp_s": lp_s,
            "mlu_ratio": ratio,
        }));
    }
    Ok(serde_json::json!({
        "topology": "SNDlib",
        "networks": networks,
        "worst_mlu_ratio": worst,
        "networks_within_1pct": within_1pct,
        "networks_total": files.len(),
    }))
}

/// Arguments of `aiwan eval`.
#[derive(Debug, Clone, clap::Args)]
pub struct EvalArgs {
    /// Network file, as for `aiwan plan`.
    #[arg(long)]
    pub topology: PathBuf,
    /// A traffic-matrix series, as for `aiwan plan`.
    #[arg(long)]
    pub traffic: PathBuf,
    /// Candidate paths per pair: the K shortest loop-free paths.
    #[arg(long, default_value_t = 4, conflicts_with = "tunnels")]
    pub paths: usize,
    /// Candidate paths from a tunnels file.
    #[arg(long)]
    pub tunnels: Option<PathBuf>,
    /// Snapshots used only as history before scoring starts.
    #[arg(long, default_value_t = 12)]
    pub train: usize,
    /// Score at most this many snapshots after the training ones.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Uniform link capacity in bit/s, for files that carry none (GraphML).
    #[arg(long)]
    pub capacity: Option<f64>,
    /// Factor applied to every traffic value.
    #[arg(long, default_value_t = 1.0)]
    pub traffic_scale: f64,
    /// Print one JSON document.
    #[arg(long)]
    pub json: bool,
}

/// `aiwan eval`.
pub fn eval(args: &EvalArgs) -> anyhow::Result<()> {
    use aiwan_planner::eval::{PairPaths, evaluate_methods};
    let network = formats::load_network(&args.topology, args.capacity)?;
    let mut series = formats::load_traffic(&args.traffic, &network, args.traffic_scale)?;
    if series.len() <= args.train.max(1) {
        bail!(
            "--train {}: {} holds only {} matrices; nothing is left to score",
            args.train,
            args.traffic.display(),
            series.len()
        );
    }
    if let Some(limit) = args.limit {
        series.truncate(args.train.max(1) + limit);
    }
    // Paths for every pair that has demand anywhere in the series.
    let n = network.nodes.len();
    let mut union = TrafficMatrix::zeros(n);
    for matrix in &series {
        for (u, v) in union.values.iter_mut().zip(&matrix.values) {
            *u += v;
        }
    }
    let tunnels = args
        .tunnels
        .as_deref()
        .map(|path| load_tunnels(path, &network))
        .transpose()?;
    let problem = build_problem(&network, &union, args.paths, tunnels.as_ref())?;
    let paths: PairPaths = problem
        .demands
        .iter()
        .map(|d| ((d.src, d.dst), d.paths.clone()))
        .collect();
    let started = Instant::now();
    let scores =
        evaluate_methods(&network, &series, &paths, args.train).context("evaluation LP")?;
    let methods: Vec<serde_json::Value> = scores
        .iter()
        .map(|s| {
            serde_json::json!({
                "name": s.name,
                "mean_norm_mlu": s.mean_norm_mlu,
                "p90_norm_mlu": s.p90_norm_mlu,
                "snapshots": s.snapshots,
                "nmae": s.nmae,
            })
        })
        .collect();
    let report = serde_json::json!({
        "topology": args.topology.display().to_string(),
        "traffic": args.traffic.display().to_string(),
        "train": args.train,
        "eval_s": started.elapsed().as_secs_f64(),
        "methods": methods,
    });
    if args.json {
        return crate::client::print_out(&format!("{report}\n"));
    }
    let mut text = String::from("method     mean norm MLU  p90 norm MLU  snapshots  NMAE\n");
    for s in &scores {
        text.push_str(&format!(
            "{:<10} {:>13.4} {:>13.4} {:>10} {:>5.3}\n",
            s.name, s.mean_norm_mlu, s.p90_norm_mlu, s.snapshots, s.nmae
        ));
    }
    crate::client::print_out(&text)
}
