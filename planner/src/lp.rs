//! The reference solvers: the path-based LP that minimises the maximum link
//! utilisation over the candidate paths, and the edge-based
//! multicommodity-flow LP whose optimum is the lower bound over all paths.
//! Both use Clarabel (pure Rust, interior point).

use clarabel::algebra::CscMatrix;
use clarabel::solver::{
    DefaultSettingsBuilder, DefaultSolver, IPSolver, NonnegativeConeT, SolverStatus, ZeroConeT,
};

use crate::allocation::{Allocation, Problem};
use crate::network::{Network, TrafficMatrix};

/// Why an LP gave no answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LpError {
    #[error("LP solver setup failed: {0}")]
    Setup(String),
    #[error("LP solver stopped without a solution: {0:?}")]
    NotSolved(String),
}

/// Settings shared by every LP: tight tolerances (the reference must
/// reproduce published optima to 1e-6) and an optional time limit.
pub(crate) fn solve(
    n_vars: usize,
    q: Vec<f64>,
    a: CscMatrix<f64>,
    b: Vec<f64>,
    zero_rows: usize,
    nonneg_rows: usize,
    time_limit_s: Option<f64>,
) -> Result<Vec<f64>, LpError> {
    let p = CscMatrix::<f64>::zeros((n_vars, n_vars));
    // Clarabel wants no empty cones.
    let mut cones = Vec::new();
    if zero_rows > 0 {
        cones.push(ZeroConeT(zero_rows));
    }
    if nonneg_rows > 0 {
        cones.push(NonnegativeConeT(nonneg_rows));
    }
    let settings = DefaultSettingsBuilder::default()
        .verbose(false)
        .tol_gap_abs(1e-10)
        .tol_gap_rel(1e-10)
        .tol_feas(1e-10)
        .max_iter(400)
        .time_limit(time_limit_s.unwrap_or(f64::INFINITY))
        .build()
        .map_err(|e| LpError::Setup(format!("{e:?}")))?;
    let mut solver = DefaultSolver::new(&p, &q, &a, &b, &cones, settings)
        .map_err(|e| LpError::Setup(format!("{e:?}")))?;
    solver.solve();
    match solver.solution.status {
        SolverStatus::Solved | SolverStatus::AlmostSolved => Ok(solver.solution.x.clone()),
        other => Err(LpError::NotSolved(format!("{other:?}"))),
    }
}

/// A demand's split from the LP's values of its path variables (shares or
/// reservations): negatives (solver tolerance) clipped to zero, then scaled
/// to sum to 1; all zero gives an even split.
pub(crate) fn split_of(values: &[f64]) -> Vec<f64> {
    let raw: Vec<f64> = values.iter().map(|v| v.max(0.0)).collect();
    let sum: f64 = raw.iter().sum();
    if sum > 0.0 {
        raw.iter().map(|v| v / sum).collect()
    } else {
        vec![1.0 / raw.len().max(1) as f64; raw.len()]
    }
}

/// Appends the rows `-x_i <= 0` (that is, `x_i >= 0`) for the variables in
/// `vars`, starting at `row`, to a triplet matrix and its right-hand side;
/// returns the next free row.
fn push_nonnegative(
    rows: &mut Vec<usize>,
    cols: &mut Vec<usize>,
    vals: &mut Vec<f64>,
    b: &mut Vec<f64>,
    row: usize,
    vars: std::ops::Range<usize>,
) -> usize {
    let mut next = row;
    for i in vars {
        rows.push(next);
        cols.push(i);
        vals.push(-1.0);
        b.push(0.0);
        next += 1;
    }
    next
}

/// The allocation that minimises MLU over the candidate paths, and that MLU
/// as the LP reports it (the caller re-evaluates the allocation).
pub fn path_lp(problem: &Problem, time_limit_s: Option<f64>) -> Result<(Allocation, f64), LpError> {
    // The single-matrix case of the robust LP, with scale 1.
    robust_path_lp(std::slice::from_ref(problem), &[1.0], time_limit_s)
}

/// One split per pair that minimises the worst MLU over several matrices at
/// once (each problem is the same pairs and paths with another matrix's
/// rates), each matrix's MLU divided by its `scales` entry (for example its
/// own optimum, so that the worst *normalised* MLU is minimised): a plan
/// robust to the traffic seen recently.
pub fn robust_path_lp(
    problems: &[Problem],
    scales: &[f64],
    time_limit_s: Option<f64>,
) -> Result<(Allocation, f64), LpError> {
    scenario_path_lp(problems, scales, &ScenarioObjective::Worst, time_limit_s)
}

/// What a split over several scenarios minimises.
#[derive(Debug, Clone, PartialEq)]
pub enum ScenarioObjective {
    /// The worst scaled MLU over the scenarios.
    Worst,
    /// The weighted mean of the scaled MLUs (weights summing to 1): the
    /// split best on average over the scenarios, a sample average of what
    /// the next matrix may be.
    Mean(Vec<f64>),
}

/// One split per pair for several scenarios (see [`robust_path_lp`]),
/// minimising `objective` of their MLUs, each divided by its scale. Returns
/// the allocation and the objective's value.
pub fn scenario_path_lp(
    problems: &[Problem],
    scales: &[f64],
    objective: &ScenarioObjective,
    time_limit_s: Option<f64>,
) -> Result<(Allocation, f64), LpError> {
    scenario_lp(problems, scales, objective, None, time_limit_s)
}

/// [`scenario_path_lp`] by row generation: each scenario starts with the
/// capacity rows of `seeds` (its edges binding last time, say) and gains
/// the rows its solution violates, until none is violated by more than
/// 0.1% of its scenario's MLU; the answer is the optimum to that tolerance
/// with a fraction of the rows when few edges bind (many
/// scenarios on a large network). Returns the allocation, the objective
/// and each scenario's rows at the end (the next call's seeds).
pub fn scenario_path_lp_rowgen(
    problems: &[Problem],
    scales: &[f64],
    objective: &ScenarioObjective,
    seeds: &[Vec<usize>],
    time_limit_s: Option<f64>,
) -> Result<(Allocation, f64, Vec<Vec<usize>>), LpError> {
    /// Rows added per scenario and round, the most violated first.
    const ADD_PER_ROUND: usize = 4;
    const MAX_ROUNDS: usize = 30;
    /// A row left out may exceed its scenario's MLU by this fraction: the
    /// objective is then short by at most as much, and a round (a whole
    /// solve) is not spent on a few rows that barely bind.
    const VIOLATION_TOLERANCE: f64 = 1e-3;
    let n_edges = problems.first().map_or(0, |p| p.network.edges.len());
    let mut active: Vec<Vec<usize>> = (0..problems.len())
        .map(|k| {
            let mut rows: Vec<usize> = seeds
                .get(k)
                .map(|s| s.iter().copied().filter(|e| *e < n_edges).collect())
                .unwrap_or_default();
            rows.sort_unstable();
            rows.dedup();
            rows
        })
        .collect();
    for _ in 0..MAX_ROUNDS {
        let (allocation, value, levels) =
            scenario_lp_levels(problems, scales, objective, Some(&active), time_limit_s)?;
        let mut added = false;
        for (k, problem) in problems.iter().enumerate() {
            let Ok(evaluation) = problem.evaluate(&allocation) else {
                continue;
            };
            let level = levels[k];
            let mut violated: Vec<(usize, f64)> = evaluation
                .loads
                .iter()
                .enumerate()
                .map(|(e, load)| (e, load / problem.network.edges[e].capacity / scales[k]))
                .filter(|(e, u)| {
                    *u > level + VIOLATION_TOLERANCE * level.max(1e-9) && !active[k].contains(e)
                })
                .collect();
            violated.sort_by(|a, b| b.1.total_cmp(&a.1));
            for (e, _) in violated.into_iter().take(ADD_PER_ROUND) {
                active[k].push(e);
                added = true;
            }
        }
        if !added {
            return Ok((allocation, value, active));
        }
    }
    // Never settled (a degenerate case): the full LP.
    let (allocation, value) = scenario_lp(problems, scales, objective, None, time_limit_s)?;
    Ok((
        allocation,
        value,
        vec![(0..n_edges).collect(); problems.len()],
    ))
}

fn scenario_lp(
    problems: &[Problem],
    scales: &[f64],
    objective: &ScenarioObjective,
    active: Option<&[Vec<usize>]>,
    time_limit_s: Option<f64>,
) -> Result<(Allocation, f64), LpError> {
    scenario_lp_levels(problems, scales, objective, active, time_limit_s)
        .map(|(allocation, value, _)| (allocation, value))
}

/// The LP itself, over the capacity rows `active` lists per scenario (all
/// when `None`); also returns each scenario's MLU variable (one shared by
/// all scenarios for the worst case).
fn scenario_lp_levels(
    problems: &[Problem],
    scales: &[f64],
    objective: &ScenarioObjective,
    active: Option<&[Vec<usize>]>,
    time_limit_s: Option<f64>,
) -> Result<(Allocation, f64, Vec<f64>), LpError> {
    if scales.len() != problems.len() || scales.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
        return Err(LpError::Setup(
            "one positive scale per matrix is needed".into(),
        ));
    }
    let Some(first) = problems.first() else {
        return Err(LpError::Setup("no matrices".into()));
    };
    if problems
        .iter()
        .any(|p| p.demands.len() != first.demands.len())
    {
        return Err(LpError::Setup("problems differ in their demands".into()));
    }
    let weights: Option<&Vec<f64>> = match objective {
        ScenarioObjective::Worst => None,
        ScenarioObjective::Mean(weights) => {
            if weights.len() != problems.len()
                || weights.iter().any(|w| !(w.is_finite() && *w >= 0.0))
            {
                return Err(LpError::Setup(
                    "one non-negative weight per matrix is needed".into(),
                ));
            }
            Some(weights)
        }
    };
    let offsets: Vec<usize> = first
        .demands
        .iter()
        .scan(0, |next, d| {
            let start = *next;
            *next += d.paths.len();
            Some(start)
        })
        .collect();
    let n_shares: usize = first.demands.iter().map(|d| d.paths.len()).sum();
    // One MLU variable in all (worst), or one per scenario (mean).
    let n_mlu = if weights.is_some() { problems.len() } else { 1 };
    let n_vars = n_shares + n_mlu;
    let n_demands = first.demands.len();
    let n_edges = first.network.edges.len();
    let (mut rows, mut cols, mut vals) = (Vec::new(), Vec::new(), Vec::new());
    let mut b = Vec::new();
    for (d, demand) in first.demands.iter().enumerate() {
        for p in 0..demand.paths.len() {
            rows.push(d);
            cols.push(offsets[d] + p);
            vals.push(1.0);
        }
        b.push(1.0);
    }
    let mut row = n_demands;
    let mut slot = vec![usize::MAX; n_edges];
    for (k, (problem, scale)) in problems.iter().zip(scales).enumerate() {
        let u = n_shares + if weights.is_some() { k } else { 0 };
        // The row of each constrained edge of this scenario.
        let edges: Vec<usize> = match active {
            Some(active) => active.get(k).cloned().unwrap_or_default(),
            None => (0..n_edges).collect(),
        };
        slot.iter_mut().for_each(|s| *s = usize::MAX);
        for (i, &e) in edges.iter().enumerate() {
            if let Some(s) = slot.get_mut(e) {
                *s = row + i;
            }
        }
        for (d, demand) in problem.demands.iter().enumerate() {
            for (p, path) in demand.paths.iter().enumerate() {
                for &e in path {
                    let Some(&r) = slot.get(e).filter(|r| **r != usize::MAX) else {
                        continue;
                    };
                    rows.push(r);
                    cols.push(offsets[d] + p);
                    vals.push(demand.rate / problem.network.edges[e].capacity / scale);
                }
            }
        }
        for i in 0..edges.len() {
            rows.push(row + i);
            cols.push(u);
            vals.push(-1.0);
            b.push(0.0);
        }
        row += edges.len();
    }
    // MLUs are not negative: with rows left out (row generation) nothing
    // else would bound them below.
    let m = push_nonnegative(&mut rows, &mut cols, &mut vals, &mut b, row, 0..n_vars);
    let a = CscMatrix::new_from_triplets(m, n_vars, rows, cols, vals);
    let mut q = vec![0.0; n_vars];
    match weights {
        None => q[n_shares] = 1.0,
        Some(weights) => {
            for (k, w) in weights.iter().enumerate() {
                q[n_shares + k] = *w;
            }
        }
    }
    let x = solve(
        n_vars,
        q.clone(),
        a,
        b,
        n_demands,
        m - n_demands,
        time_limit_s,
    )?;
    let splits = first
        .demands
        .iter()
        .enumerate()
        .map(|(d, demand)| split_of(&x[offsets[d]..offsets[d] + demand.paths.len()]))
        .collect();
    let value = q.iter().zip(&x).map(|(q, x)| q * x).sum();
    let levels = (0..problems.len())
        .map(|k| x[n_shares + if n_mlu > 1 { k } else { 0 }])
        .collect();
    Ok((Allocation { splits }, value, levels))
}

/// The split that minimises the worst MLU under any single link failure,
/// where a failed path's traffic moves to its demand's surviving paths in
/// proportion (what [`crate::failures::worst_single_failure`] evaluates).
///
/// The formulation is forward fault correction (Liu et al., SIGCOMM 2014):
/// each path gets a reservation `r_p` (as a fraction of its demand) such
/// that the reservations of the paths surviving any one link failure still
/// add up to the whole demand. The proportional split `r_p / sum r` then
/// never puts more than `r_p` on a path, failed link or not, so the MLU under
/// every single failure (and without one) is at most the reservations' MLU,
/// which the LP minimises and which is returned. A link every candidate path
/// of a demand crosses is left out of that demand's constraints: no split
/// survives its failure, and the what-if reports the demand as cut off.
pub fn failure_robust_path_lp(
    problem: &Problem,
    time_limit_s: Option<f64>,
) -> Result<(Allocation, f64), LpError> {
    let edges = &problem.network.edges;
    // A physical link is an edge and its reverse; its id is the lower
    // index of the two.
    let mut by_ends = std::collections::HashMap::new();
    for (e, edge) in edges.iter().enumerate() {
        by_ends.entry((edge.src, edge.dst)).or_insert(e);
    }
    let link_of: Vec<usize> = edges
        .iter()
        .enumerate()
        .map(|(e, edge)| match by_ends.get(&(edge.dst, edge.src)) {
            Some(&r) => e.min(r),
            None => e,
        })
        .collect();
    let n_shares: usize = problem.demands.iter().map(|d| d.paths.len()).sum();
    let u = n_shares;
    let n_vars = n_shares + 1;
    let (mut rows, mut cols, mut vals) = (Vec::new(), Vec::new(), Vec::new());
    let mut b = Vec::new();
    let mut row = 0;
    let mut offset = 0;
    for demand in &problem.demands {
        let path_links: Vec<Vec<usize>> = demand
            .paths
            .iter()
            .map(|path| {
                let mut links: Vec<usize> = path.iter().map(|&e| link_of[e]).collect();
                links.sort_unstable();
                links.dedup();
                links
            })
            .collect();
        let mut failures: Vec<usize> = path_links.iter().flatten().copied().collect();
        failures.sort_unstable();
        failures.dedup();
        // No failure: the reservations cover the demand.
        for p in 0..demand.paths.len() {
            rows.push(row);
            cols.push(offset + p);
            vals.push(-1.0);
        }
        b.push(-1.0);
        row += 1;
        for link in failures {
            let surviving: Vec<usize> = (0..demand.paths.len())
                .filter(|&p| path_links[p].binary_search(&link).is_err())
                .collect();
            if surviving.is_empty() {
                continue;
            }
            for p in surviving {
                rows.push(row);
                cols.push(offset + p);
                vals.push(-1.0);
            }
            b.push(-1.0);
            row += 1;
        }
        offset += demand.paths.len();
    }
    let mut offset = 0;
    for demand in &problem.demands {
        for (p, path) in demand.paths.iter().enumerate() {
            for &e in path {
                rows.push(row + e);
                cols.push(offset + p);
                vals.push(demand.rate / edges[e].capacity);
            }
        }
        offset += demand.paths.len();
    }
    for e in 0..edges.len() {
        rows.push(row + e);
        cols.push(u);
        vals.push(-1.0);
        b.push(0.0);
    }
    row += edges.len();
    let row = push_nonnegative(&mut rows, &mut cols, &mut vals, &mut b, row, 0..n_shares);
    let a = CscMatrix::new_from_triplets(row, n_vars, rows, cols, vals);
    let mut q = vec![0.0; n_vars];
    q[u] = 1.0;
    let x = solve(n_vars, q, a, b, 0, row, time_limit_s)?;
    let mut offset = 0;
    let splits = problem
        .demands
        .iter()
        .map(|demand| {
            let split = split_of(&x[offset..offset + demand.paths.len()]);
            offset += demand.paths.len();
            split
        })
        .collect();
    Ok((Allocation { splits }, x[u]))
}

/// Most edges [`tight_edge_dual_bound`] puts prices on (one bit each in a
/// path's mask).
pub const MAX_TIGHT_EDGES: usize = 128;

/// A certified lower bound on the candidate-path optimum from link prices
/// on the `tight` edges only (those a near-optimal allocation loads to the
/// maximum; at most [`MAX_TIGHT_EDGES`], the first ones given): the dual of
/// the path LP restricted to those edges. Only demands whose every path
/// crosses a tight edge take part, and demands whose paths cross the same
/// sets of tight edges are one row with their rates summed, so the LP stays
/// small on any network. Any prices it returns are prices of the full dual,
/// so the bound is valid whatever edges are chosen, and exact when they hold
/// the optimum's bottleneck. The LP's own objective is not trusted: the
/// bound is recomputed from the prices by [`price_bound`]. Returns the bound
/// and the prices (per unit of load; `sum_e c_e y_e = 1`).
pub fn tight_edge_dual_bound(
    problem: &Problem,
    tight: &[usize],
    time_limit_s: Option<f64>,
) -> Result<(f64, Vec<f64>), LpError> {
    let edges = &problem.network.edges;
    let mut bit_of = vec![None; edges.len()];
    let mut tight_edges = Vec::new();
    for &e in tight {
        if e < edges.len() && bit_of[e].is_none() && tight_edges.len() < MAX_TIGHT_EDGES {
            bit_of[e] = Some(tight_edges.len());
            tight_edges.push(e);
        }
    }
    if tight_edges.is_empty() {
        return Ok((0.0, vec![0.0; edges.len()]));
    }
    // The trapped demands' patterns (see trapped_patterns), scanned in chunks on every core (on Kdl the scan, not the LP, was
    // most of a check), merged in chunk order.
    let parts = crate::allocation::in_chunks(problem.demands.len(), SCAN_CHUNK, |range| {
        trapped_patterns(&problem.demands[range.clone()], range.start, &bit_of)
    });
    let mut patterns = Patterns::default();
    let mut trapped = Vec::new();
    for (part_patterns, part_trapped) in parts {
        for (pattern, rate) in part_patterns {
            *patterns.entry(pattern).or_insert(0.0) += rate;
        }
        trapped.extend(part_trapped);
    }
    let mut patterns: Vec<(Vec<u128>, f64)> = patterns.into_iter().collect();
    // A fixed row order keeps the solve deterministic.
    patterns.sort_by(|a, b| a.0.cmp(&b.0));
    // Variables: y'_t = c_t y_t per tight edge (they sum to 1), then one w
    // per pattern, the pattern's rate times its cheapest path's price (the
    // scaling keeps coefficients near utilisations).
    let n_tight = tight_edges.len();
    let n_vars = n_tight + patterns.len();
    let (mut rows, mut cols, mut vals) = (Vec::new(), Vec::new(), Vec::new());
    let mut b = Vec::new();
    for t in 0..n_tight {
        rows.push(0);
        cols.push(t);
        vals.push(1.0);
    }
    b.push(1.0);
    let mut row = 1;
    for (j, (masks, rate)) in patterns.iter().enumerate() {
        for &mask in masks {
            // w_j - sum over the mask's edges of rate / c_e * y'_e <= 0
            rows.push(row);
            cols.push(n_tight + j);
            vals.push(1.0);
            for (t, &e) in tight_edges.iter().enumerate() {
                if mask & (1u128 << t) != 0 {
                    rows.push(row);
                    cols.push(t);
                    vals.push(-rate / edges[e].capacity);
                }
            }
            b.push(0.0);
            row += 1;
        }
    }
    let row = push_nonnegative(&mut rows, &mut cols, &mut vals, &mut b, row, 0..n_tight);
    let a = CscMatrix::new_from_triplets(row, n_vars, rows, cols, vals);
    let mut q = vec![0.0; n_vars];
    for w in &mut q[n_tight..] {
        *w = -1.0;
    }
    let x = solve(n_vars, q, a, b, 1, row - 1, time_limit_s)?;
    let mut prices = vec![0.0; edges.len()];
    for (t, &e) in tight_edges.iter().enumerate() {
        prices[e] = x[t].max(0.0) / edges[e].capacity;
    }
    // Prices are zero off the tight edges, so every other demand has a
    // path of price zero: summing over the trapped ones is the whole bound.
    let bound = price_bound_over(
        problem,
        &prices,
        trapped.iter().map(|&d| &problem.demands[d]),
    );
    Ok((bound, prices))
}

/// Trapped demands' patterns of tight-edge masks and their summed rates.
type Patterns = std::collections::HashMap<Vec<u128>, f64>;

/// Demands scanned per chunk by [`tight_edge_dual_bound`].
const SCAN_CHUNK: usize = 1 << 16;

/// [`tight_edge_dual_bound`]'s scan of the demands from index `first`:
/// per trapped demand (every path crosses a tight edge, `bit_of` giving
/// each tight edge's bit), the masks of tight edges its paths cross,
/// without masks that contain another (such a path is never the
/// cheapest), sorted; demands with equal patterns merged, their rates
/// summed. Returns the patterns and the trapped demands' indices.
fn trapped_patterns(
    demands: &[crate::allocation::Demand],
    first: usize,
    bit_of: &[Option<usize>],
) -> (Patterns, Vec<usize>) {
    let mut patterns = Patterns::default();
    let mut masks = Vec::new();
    let mut minimal: Vec<u128> = Vec::new();
    let mut trapped = Vec::new();
    'demands: for (d, demand) in demands.iter().enumerate() {
        masks.clear();
        for path in &demand.paths {
            let mask = path
                .iter()
                .filter_map(|&e| bit_of[e])
                .fold(0u128, |m, bit| m | (1u128 << bit));
            if mask == 0 {
                // A path free of tight edges: the demand costs nothing
                // under these prices and takes no part.
                continue 'demands;
            }
            masks.push(mask);
        }
        if masks.is_empty() {
            continue;
        }
        masks.sort_unstable();
        masks.dedup();
        minimal.clear();
        minimal.extend(
            masks
                .iter()
                .copied()
                .filter(|&m| !masks.iter().any(|&o| o != m && o & m == o)),
        );
        // Looked up by slice: a pattern seen before (most of the hundreds
        // of thousands of trapped demands on Kdl) allocates nothing.
        match patterns.get_mut(minimal.as_slice()) {
            Some(rate) => *rate += demand.rate,
            None => {
                patterns.insert(minimal.clone(), demand.rate);
            }
        }
        trapped.push(first + d);
    }
    (patterns, trapped)
}

/// `sum_d rate_d * min_p price(p)` for link prices normalised so that
/// `sum_e c_e y_e = 1`: by weak duality no split over the candidate paths
/// has a lower MLU. Negative prices count as zero.
pub fn price_bound(problem: &Problem, prices: &[f64]) -> f64 {
    price_bound_over(problem, prices, problem.demands.iter())
}

/// [`price_bound`] over some of the problem's demands.
fn price_bound_over<'a>(
    problem: &Problem,
    prices: &[f64],
    demands: impl Iterator<Item = &'a crate::allocation::Demand>,
) -> f64 {
    let edges = &problem.network.edges;
    if prices.len() != edges.len() {
        return 0.0;
    }
    let scale: f64 = edges
        .iter()
        .zip(prices)
        .map(|(e, &y)| e.capacity * y.max(0.0))
        .sum();
    if !(scale > 0.0 && scale.is_finite()) {
        return 0.0;
    }
    demands
        .map(|d| {
            let cheapest = d
                .paths
                .iter()
                .map(|p| p.iter().map(|&e| prices[e].max(0.0)).sum::<f64>())
                .fold(f64::INFINITY, f64::min);
            if cheapest.is_finite() {
                d.rate * cheapest / scale
            } else {
                0.0
            }
        })
        .sum()
}

/// The minimum MLU over all paths (edge-based multicommodity flow, one
/// commodity per source): no routing over any path set can do better.
pub fn edge_lp_lower_bound(
    network: &Network,
    matrix: &TrafficMatrix,
    time_limit_s: Option<f64>,
) -> Result<f64, LpError> {
    let n = network.nodes.len();
    // MLU does not change when rates and capacities scale together; working
    // in units of the largest capacity keeps the LP well conditioned.
    let scale = network
        .edges
        .iter()
        .map(|e| e.capacity)
        .fold(0.0, f64::max)
        .max(f64::MIN_POSITIVE);
    let rate = |s: usize, t: usize| matrix.get(s, t) / scale;
    let sources: Vec<usize> = (0..n)
        .filter(|&s| (0..n).any(|t| t != s && matrix.get(s, t) > 0.0))
        .collect();
    let n_edges = network.edges.len();
    // Variables: flow of commodity k on edge e, then U.
    let var = |k: usize, e: usize| k * n_edges + e;
    let u = sources.len() * n_edges;
    let n_vars = u + 1;
    let (mut rows, mut cols, mut vals) = (Vec::new(), Vec::new(), Vec::new());
    let mut b = Vec::new();
    let mut row = 0;
    // Conservation: out - in = supply at each node for each commodity.
    for (k, &s) in sources.iter().enumerate() {
        let total: f64 = (0..n).filter(|&t| t != s).map(|t| rate(s, t)).sum();
        for node in 0..n {
            for (e, edge) in network.edges.iter().enumerate() {
                if edge.src == node {
                    rows.push(row);
                    cols.push(var(k, e));
                    vals.push(1.0);
                } else if edge.dst == node {
                    rows.push(row);
                    cols.push(var(k, e));
                    vals.push(-1.0);
                }
            }
            b.push(if node == s { total } else { -rate(s, node) });
            row += 1;
        }
    }
    let zero_rows = row;
    // Capacity: sum_k flow / cap - U + s = 0.
    for (e, edge) in network.edges.iter().enumerate() {
        for k in 0..sources.len() {
            rows.push(row);
            cols.push(var(k, e));
            vals.push(scale / edge.capacity);
        }
        rows.push(row);
        cols.push(u);
        vals.push(-1.0);
        b.push(0.0);
        row += 1;
    }
    // Flows >= 0.
    let row = push_nonnegative(&mut rows, &mut cols, &mut vals, &mut b, row, 0..u);
    let a = CscMatrix::new_from_triplets(row, n_vars, rows, cols, vals);
    let mut q = vec![0.0; n_vars];
    q[u] = 1.0;
    let x = solve(n_vars, q, a, b, zero_rows, row - zero_rows, time_limit_s)?;
    Ok(x[u])
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::network::Edge;
    use crate::paths::PathOptions;

    /// Undirected links (a, b, capacity) as two directed edges each.
    /// The links of a `side` x `side` grid with uneven capacities.
    pub(crate) fn grid_links(side: usize) -> Vec<(usize, usize, f64)> {
        let mut links = Vec::new();
        for r in 0..side {
            for c in 0..side {
                let node = r * side + c;
                if c + 1 < side {
                    links.push((node, node + 1, 10.0 + ((node * 7) % 5) as f64));
                }
                if r + 1 < side {
                    links.push((node, node + side, 12.0 + ((node * 3) % 4) as f64));
                }
            }
        }
        links
    }

    /// Seeded numbers in [0, 1) (xorshift64; `seed` not 0): the same
    /// sequence for the same seed, for tests' random instances.
    pub(crate) fn uniform(seed: u64) -> impl FnMut() -> f64 {
        let mut state = seed;
        move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    pub(crate) fn network(n: usize, links: &[(usize, usize, f64)]) -> Network {
        let mut edges = Vec::new();
        for &(a, b, capacity) in links {
            for (src, dst) in [(a, b), (b, a)] {
                edges.push(Edge {
                    src,
                    dst,
                    capacity,
                    weight: 1.0,
                    latency_us: 0.0,
                });
            }
        }
        Network {
            name: "t".into(),
            nodes: (0..n).map(|i| i.to_string()).collect(),
            edges,
        }
    }

    pub(crate) fn matrix(n: usize, entries: &[(usize, usize, f64)]) -> TrafficMatrix {
        let mut m = TrafficMatrix::zeros(n);
        for &(s, t, v) in entries {
            m.values[s * n + t] = v;
        }
        m
    }

    /// (network, matrix, k, optimum) with optima worked out by hand.
    pub(crate) fn known_optima() -> Vec<(Network, TrafficMatrix, usize, f64)> {
        vec![
            // Diamond 0-1-3 (capacity 10) and 0-2-3 (capacity 30), 20 from
            // 0 to 3: a quarter on the thin side, MLU 0.5.
            (
                network(4, &[(0, 1, 10.0), (1, 3, 10.0), (0, 2, 30.0), (2, 3, 30.0)]),
                matrix(4, &[(0, 3, 20.0)]),
                2,
                0.5,
            ),
            // Triangle, capacity 10: 30 from 0 to 2 over 0-2 and 0-1-2, and
            // 10 from 0 to 1. Two thirds direct: MLU 2.
            (
                network(3, &[(0, 1, 10.0), (1, 2, 10.0), (0, 2, 10.0)]),
                matrix(3, &[(0, 2, 30.0), (0, 1, 10.0)]),
                2,
                2.0,
            ),
            // One path only: MLU is forced.
            (
                network(2, &[(0, 1, 4.0)]),
                matrix(2, &[(0, 1, 3.0), (1, 0, 1.0)]),
                3,
                0.75,
            ),
        ]
    }

    #[test]
    fn path_lp_finds_hand_optima() {
        for (network, matrix, k, optimum) in known_optima() {
            let problem =
                Problem::with_k_paths(network, &matrix, &PathOptions::k_shortest(k)).unwrap();
            let (allocation, reported) = path_lp(&problem, None).unwrap();
            let mlu = problem.evaluate(&allocation).unwrap().mlu;
            assert!((mlu - optimum).abs() < 1e-7, "{mlu} vs {optimum}");
            assert!((reported - optimum).abs() < 1e-7);
        }
    }

    #[test]
    fn dual_on_all_edges_is_the_optimum_and_on_none_is_zero() {
        for (network, matrix, k, optimum) in known_optima() {
            let problem =
                Problem::with_k_paths(network, &matrix, &PathOptions::k_shortest(k)).unwrap();
            let all: Vec<usize> = (0..problem.network.edges.len()).collect();
            let (bound, prices) = tight_edge_dual_bound(&problem, &all, None).unwrap();
            assert!(bound <= optimum * (1.0 + 1e-9), "{bound} above {optimum}");
            assert!(bound >= optimum * (1.0 - 1e-6), "{bound} below {optimum}");
            assert_eq!(price_bound(&problem, &prices), bound);
            let (none, _) = tight_edge_dual_bound(&problem, &[], None).unwrap();
            assert_eq!(none, 0.0);
            // Out-of-range edges are ignored, not a panic.
            assert!(tight_edge_dual_bound(&problem, &[usize::MAX], None).is_ok());
        }
    }

    /// Demands scanned in several chunks give the bound of the same
    /// traffic as one demand: every chunk's patterns are merged.
    #[test]
    fn dual_over_many_chunks_merges_every_demand() {
        use crate::allocation::Demand;
        let network = network(3, &[(0, 1, 10.0), (1, 2, 10.0), (0, 2, 10.0)]);
        // 0->1 direct (edge 0) or through 2 (edges 4, 3); 1->2 direct
        // (edge 2) only, every third demand.
        let demand = |rate: f64, d: usize| {
            if d.is_multiple_of(3) {
                Demand {
                    src: 1,
                    dst: 2,
                    rate,
                    paths: vec![vec![2]],
                }
            } else {
                Demand {
                    src: 0,
                    dst: 1,
                    rate,
                    paths: vec![vec![0], vec![4, 3]],
                }
            }
        };
        let count = 2 * SCAN_CHUNK + 5;
        let many = Problem {
            network: network.clone(),
            demands: (0..count).map(|d| demand(0.001, d)).collect(),
        };
        let thirds = count.div_ceil(3) as f64;
        let one_each = Problem {
            network,
            demands: vec![
                demand(0.001 * thirds, 0),
                demand(0.001 * (count as f64 - thirds), 1),
            ],
        };
        let all: Vec<usize> = (0..6).collect();
        let (bound_many, _) = tight_edge_dual_bound(&many, &all, None).unwrap();
        let (bound_one, _) = tight_edge_dual_bound(&one_each, &all, None).unwrap();
        let (_, optimum) = path_lp(&one_each, None).unwrap();
        assert!(
            (bound_many / bound_one - 1.0).abs() < 1e-9,
            "{bound_many} against {bound_one}"
        );
        assert!(
            (bound_one / optimum - 1.0).abs() < 1e-6,
            "{bound_one} against {optimum}"
        );
    }

    #[test]
    fn failure_robust_lp_bounds_every_single_failure() {
        use crate::failures::worst_single_failure;
        // Three disjoint paths of capacity 10 from 0 to 3 (via 1, 2 and 4)
        // carry 12; a second demand of 6 from 1 to 3 has only the link 1-3.
        // The plain optimum keeps off 1-3 (a = 0, b = c = 1/2, MLU 0.6),
        // so losing path b or c moves all 12 onto the other: 1.2. Forward
        // fault correction reserves rA + rB, rA + rC, rB + rC >= 1 and
        // minimises max((6 + 12 rA)/10, 1.2 rB, 1.2 rC): rB = rC = 3/4,
        // rA = 1/4, U = 0.9, the split (1, 3, 3)/7, whose worst failure is
        // exactly 0.9.
        let network = network(
            5,
            &[
                (0, 1, 10.0),
                (1, 3, 10.0),
                (0, 2, 10.0),
                (2, 3, 10.0),
                (0, 4, 10.0),
                (4, 3, 10.0),
            ],
        );
        let matrix = matrix(5, &[(0, 3, 12.0), (1, 3, 6.0)]);
        let problem = Problem::with_node_paths(network, &matrix, |src, _| {
            if src == 0 {
                vec![vec![0, 1, 3], vec![0, 2, 3], vec![0, 4, 3]]
            } else {
                vec![vec![1, 3]]
            }
        })
        .unwrap();
        let (plain, plain_mlu) = path_lp(&problem, None).unwrap();
        assert!((plain_mlu - 0.6).abs() < 1e-6);
        let plain_worst = worst_single_failure(&problem, &plain).unwrap().mlu;
        assert!((plain_worst - 1.2).abs() < 1e-5, "{plain_worst}");

        let (robust, guarantee) = failure_robust_path_lp(&problem, None).unwrap();
        assert!((guarantee - 0.9).abs() < 1e-6, "{guarantee}");
        let robust_worst = worst_single_failure(&problem, &robust).unwrap().mlu;
        assert!(
            robust_worst <= guarantee + 1e-6,
            "{robust_worst} > {guarantee}"
        );
        assert!((robust_worst - 0.9).abs() < 1e-5, "{robust_worst}");
        assert!(problem.evaluate(&robust).unwrap().mlu <= guarantee + 1e-7);
        let expected = [1.0 / 7.0, 3.0 / 7.0, 3.0 / 7.0];
        for (got, want) in robust.splits[0].iter().zip(expected) {
            assert!((got - want).abs() < 1e-5, "{:?}", robust.splits[0]);
        }
    }

    #[test]
    fn edge_lp_is_a_lower_bound() {
        for (network, matrix, _, optimum) in known_optima() {
            let bound = edge_lp_lower_bound(&network, &matrix, None).unwrap();
            assert!(bound <= optimum + 1e-7, "{bound} > {optimum}");
            assert!(
                (bound - optimum).abs() < 1e-6,
                "these cases have no better paths"
            );
        }
        // A network where the candidate paths are worse than all paths:
        // with k = 1 the path LP is stuck, the bound is not.
        let network = network(4, &[(0, 1, 10.0), (1, 3, 10.0), (0, 2, 10.0), (2, 3, 10.0)]);
        let matrix = matrix(4, &[(0, 3, 10.0)]);
        let problem =
            Problem::with_k_paths(network.clone(), &matrix, &PathOptions::k_shortest(1)).unwrap();
        let (_, mlu) = path_lp(&problem, None).unwrap();
        let bound = edge_lp_lower_bound(&network, &matrix, None).unwrap();
        assert!((mlu - 1.0).abs() < 1e-7 && (bound - 0.5).abs() < 1e-7);
    }
    #[test]
    fn row_generation_reaches_the_full_lp_s_optimum() {
        // A 3x3 grid, every pair with demand, eight scenarios scaled
        // differently pair by pair: row generation from no rows (and then
        // from its own rows, as the next call would) must land within its
        // tolerance of the LP over every row, mean and worst alike.
        let mut links = Vec::new();
        for r in 0..3 {
            for c in 0..3 {
                let v = r * 3 + c;
                if c < 2 {
                    links.push((v, v + 1, 10.0 + v as f64));
                }
                if r < 2 {
                    links.push((v, v + 3, 14.0 - v as f64));
                }
            }
        }
        let net = network(9, &links);
        let mut problems = Vec::new();
        for k in 0..8 {
            let mut entries = Vec::new();
            for s in 0..9 {
                for t in 0..9 {
                    if s != t {
                        let x = 1.0 + ((s * 7 + t * 3 + k * 5) % 11) as f64 * 0.4;
                        entries.push((s, t, x));
                    }
                }
            }
            let m = matrix(9, &entries);
            problems
                .push(Problem::with_k_paths(net.clone(), &m, &PathOptions::k_shortest(3)).unwrap());
        }
        let scales: Vec<f64> = problems
            .iter()
            .map(|p| path_lp(p, None).unwrap().1)
            .collect();
        for objective in [
            ScenarioObjective::Mean(vec![1.0 / 8.0; 8]),
            ScenarioObjective::Worst,
        ] {
            let (_, full) = scenario_path_lp(&problems, &scales, &objective, None).unwrap();
            let (allocation, cold, rows) =
                scenario_path_lp_rowgen(&problems, &scales, &objective, &[], None).unwrap();
            let (_, warm, _) =
                scenario_path_lp_rowgen(&problems, &scales, &objective, &rows, None).unwrap();
            let n_edges = net.edges.len();
            assert!(rows.iter().all(|r| r.len() < n_edges), "{rows:?}");
            for value in [cold, warm] {
                assert!(value <= full * (1.0 + 1e-6), "{value} above {full}");
                assert!(value >= full * (1.0 - 2e-3), "{value} below {full}");
            }
            // The split's true objective is within tolerance of the full LP too.
            let mlus: Vec<f64> = problems
                .iter()
                .zip(&scales)
                .map(|(p, s)| p.evaluate(&allocation).unwrap().mlu / s)
                .collect();
            let true_value = match &objective {
                ScenarioObjective::Mean(w) => mlus.iter().zip(w).map(|(m, w)| m * w).sum(),
                ScenarioObjective::Worst => mlus.iter().copied().fold(0.0, f64::max),
            };
            assert!(
                true_value >= full * (1.0 - 1e-6),
                "{true_value} below {full}"
            );
            assert!(
                true_value <= full * (1.0 + 2e-3),
                "{true_value} above {full}"
            );
        }
    }
}
