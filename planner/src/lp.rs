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

/// Settings shared by both LPs: tight tolerances (the reference must
/// reproduce published optima to 1e-6) and an optional time limit.
fn solve(
    n_vars: usize,
    q: Vec<f64>,
    a: CscMatrix<f64>,
    b: Vec<f64>,
    zero_rows: usize,
    nonneg_rows: usize,
    time_limit_s: Option<f64>,
) -> Result<Vec<f64>, LpError> {
    let p = CscMatrix::<f64>::zeros((n_vars, n_vars));
    let cones = [ZeroConeT(zero_rows), NonnegativeConeT(nonneg_rows)];
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
    let u = n_shares;
    let n_vars = n_shares + 1;
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
    for (problem, scale) in problems.iter().zip(scales) {
        for (d, demand) in problem.demands.iter().enumerate() {
            for (p, path) in demand.paths.iter().enumerate() {
                for &e in path {
                    rows.push(row + e);
                    cols.push(offsets[d] + p);
                    vals.push(demand.rate / problem.network.edges[e].capacity / scale);
                }
            }
        }
        for e in 0..n_edges {
            rows.push(row + e);
            cols.push(u);
            vals.push(-1.0);
            b.push(0.0);
        }
        row += n_edges;
    }
    for i in 0..n_shares {
        rows.push(row + i);
        cols.push(i);
        vals.push(-1.0);
        b.push(0.0);
    }
    let m = row + n_shares;
    let a = CscMatrix::new_from_triplets(m, n_vars, rows, cols, vals);
    let mut q = vec![0.0; n_vars];
    q[u] = 1.0;
    let x = solve(n_vars, q, a, b, n_demands, m - n_demands, time_limit_s)?;
    let splits = first
        .demands
        .iter()
        .enumerate()
        .map(|(d, demand)| {
            let raw: Vec<f64> = (0..demand.paths.len())
                .map(|p| x[offsets[d] + p].max(0.0))
                .collect();
            let sum: f64 = raw.iter().sum();
            if sum > 0.0 {
                raw.iter().map(|s| s / sum).collect()
            } else {
                vec![1.0 / raw.len().max(1) as f64; raw.len()]
            }
        })
        .collect();
    Ok((Allocation { splits }, x[u]))
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
    for i in 0..u {
        rows.push(row);
        cols.push(i);
        vals.push(-1.0);
        b.push(0.0);
        row += 1;
    }
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
}
