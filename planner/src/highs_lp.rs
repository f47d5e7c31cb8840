//! The path LP solved by HiGHS, an outside solver operators compare with
//! (behind the `highs` feature: building HiGHS needs cmake, a C++ compiler
//! and libclang). The same LP as [`crate::lp::path_lp`]: one share per
//! candidate path, each demand's shares summing to 1, every used edge's
//! load at most the MLU times its capacity, the MLU minimised.

use highs::{ColProblem, HighsModelStatus, Row, Sense};

use crate::allocation::{Allocation, Problem};
use crate::lp::{LpError, split_of};

/// Solves `problem`'s path LP with HiGHS (its default, the dual simplex on
/// an LP), stopping after `time_limit_s` when given. Returns the allocation
/// and its MLU. A stop at the time limit is `NotSolved("MaxTime")`, as
/// the reference LP reports it.
pub fn path_lp_highs(
    problem: &Problem,
    time_limit_s: Option<f64>,
) -> Result<(Allocation, f64), LpError> {
    if let Some(d) = problem.demands.iter().position(|d| d.paths.is_empty()) {
        return Err(LpError::Setup(format!("demand {d} has no candidate path")));
    }
    let n_edges = problem.network.edges.len();
    for (d, demand) in problem.demands.iter().enumerate() {
        if !(demand.rate.is_finite() && demand.rate >= 0.0) {
            return Err(LpError::Setup(format!(
                "demand {d} has rate {}, not a finite non-negative number",
                demand.rate
            )));
        }
        for path in &demand.paths {
            for &e in path {
                let capacity = problem.network.edges.get(e).map(|edge| edge.capacity);
                if !capacity.is_some_and(|c| c.is_finite() && c > 0.0) {
                    return Err(LpError::Setup(format!(
                        "demand {d} crosses edge {e}, which is unknown or has no capacity"
                    )));
                }
            }
        }
    }
    let mut lp = ColProblem::default();
    let split_rows: Vec<Row> = problem
        .demands
        .iter()
        .map(|_| lp.add_row(1.0..=1.0))
        .collect();
    // A capacity row only for the edges some path crosses.
    let mut edge_rows: Vec<Option<Row>> = vec![None; n_edges];
    for demand in &problem.demands {
        for path in &demand.paths {
            for &e in path {
                if edge_rows[e].is_none() {
                    edge_rows[e] = Some(lp.add_row(..=0.0));
                }
            }
        }
    }
    let mut entries: Vec<(Row, f64)> = Vec::new();
    for (d, demand) in problem.demands.iter().enumerate() {
        for path in &demand.paths {
            entries.clear();
            entries.push((split_rows[d], 1.0));
            for &e in path {
                if let Some(row) = edge_rows[e] {
                    let load = demand.rate / problem.network.edges[e].capacity;
                    entries.push((row, load));
                }
            }
            lp.add_column(0.0, 0.0.., &entries);
        }
    }
    let mlu_entries: Vec<(Row, f64)> = edge_rows.iter().flatten().map(|&r| (r, -1.0)).collect();
    lp.add_column(1.0, 0.0.., &mlu_entries);
    let mut model = lp.optimise(Sense::Minimise);
    model.make_quiet();
    if let Some(limit) = time_limit_s {
        model.set_option("time_limit", limit);
    }
    let solved = model
        .try_solve()
        .map_err(|status| LpError::NotSolved(format!("HiGHS: {status:?}")))?;
    match solved.status() {
        HighsModelStatus::Optimal => {}
        HighsModelStatus::ReachedTimeLimit => return Err(LpError::NotSolved("MaxTime".into())),
        other => return Err(LpError::NotSolved(format!("HiGHS: {other:?}"))),
    }
    let solution = solved.get_solution();
    let columns = solution.columns();
    let mut next = 0;
    let splits = problem
        .demands
        .iter()
        .map(|demand| {
            let split = split_of(&columns[next..next + demand.paths.len()]);
            next += demand.paths.len();
            split
        })
        .collect();
    let allocation = Allocation { splits };
    let mlu = problem
        .evaluate(&allocation)
        .map_err(|e| LpError::Setup(format!("evaluating HiGHS's split: {e}")))?
        .mlu;
    Ok((allocation, mlu))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::allocation::Demand;
    use crate::lp::path_lp;
    use crate::lp::tests::{matrix, network};
    use crate::paths::{PathOptions, ShortestPaths, candidate_paths};

    #[test]
    fn highs_finds_the_reference_lp_s_optimum() {
        // A diamond with a chord: two pairs that must share the middle.
        let net = network(
            4,
            &[
                (0, 1, 10.0),
                (1, 3, 10.0),
                (0, 2, 5.0),
                (2, 3, 5.0),
                (1, 2, 4.0),
            ],
        );
        let traffic = matrix(4, &[(0, 3, 12.0), (1, 3, 3.0), (0, 2, 2.0)]);
        let mut finder = ShortestPaths::new(&net);
        let demands = [(0, 3), (1, 3), (0, 2)]
            .into_iter()
            .map(|(s, t)| Demand {
                src: s,
                dst: t,
                rate: traffic.get(s, t),
                paths: candidate_paths(&net, &mut finder, s, t, &PathOptions::k_shortest(3))
                    .into_iter()
                    .map(|p| p.edges)
                    .collect(),
            })
            .collect();
        let problem = Problem {
            network: net,
            demands,
        };
        let (_, reference) = path_lp(&problem, None).expect("reference");
        let (allocation, mlu) = path_lp_highs(&problem, Some(10.0)).expect("highs");
        assert!(
            (mlu - reference).abs() <= 1e-6 * reference,
            "{mlu} vs {reference}"
        );
        assert!(
            allocation
                .splits
                .iter()
                .all(|s| (s.iter().sum::<f64>() - 1.0).abs() < 1e-9)
        );
        // A demand with no path is named, not solved around.
        let mut broken = problem.clone();
        broken.demands[1].paths.clear();
        let error = path_lp_highs(&broken, None).expect_err("no path");
        assert!(error.to_string().contains("demand 1"), "{error}");
    }
}
