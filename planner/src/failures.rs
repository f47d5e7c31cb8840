//! What-if: an allocation under every single link failure. Traffic of a
//! demand on a path over the failed link moves to the demand's surviving
//! paths in proportion to their shares (what weighted multipath does when a
//! next hop disappears); a demand with no surviving path is cut off.

use crate::allocation::{Allocation, Problem};

/// The allocation under the failure that hurts most.
#[derive(Debug, Clone, PartialEq)]
pub struct WorstFailure {
    /// Highest MLU over all single link failures (the failed link excluded).
    pub mlu: f64,
    /// The failed link: its edges (both directions where both exist).
    pub failed_edges: Vec<usize>,
    /// Demands (by index) with no surviving path under that failure.
    pub cut_off: Vec<usize>,
}

/// Evaluates `allocation` under each single link failure, a link being an
/// edge and its reverse. `None` when the network has no edges.
///
/// A failure changes only the demands with a path over the failed link:
/// each failure starts from the loads without failure and moves just those
/// demands' traffic to their surviving paths (shares renormalised over the
/// survivors). The rest is never walked again, which on a network of
/// hundreds of links is most of the demands for most failures.
pub fn worst_single_failure(problem: &Problem, allocation: &Allocation) -> Option<WorstFailure> {
    let edges = &problem.network.edges;
    if edges.is_empty() {
        return None;
    }
    // Each demand's shares without failure, its loads, and per edge the
    // demands with a path over it (each once).
    let shares: Vec<Vec<f64>> = problem
        .demands
        .iter()
        .zip(&allocation.splits)
        .map(|(demand, split)| normalised(split, &vec![true; demand.paths.len()]))
        .collect();
    let mut normal = vec![0.0; edges.len()];
    let mut users: Vec<Vec<usize>> = vec![Vec::new(); edges.len()];
    for (d, (demand, shares)) in problem.demands.iter().zip(&shares).enumerate() {
        for (path, share) in demand.paths.iter().zip(shares) {
            for &x in path {
                normal[x] += demand.rate * share;
                if users[x].last() != Some(&d) {
                    users[x].push(d);
                }
            }
        }
    }
    // Each failure on its own (on every core, each thread with its own
    // scratch), the worst kept in the links' order.
    let links = links(problem);
    let results = crate::allocation::in_parallel(
        links.len(),
        || (vec![false; edges.len()], Vec::new(), Vec::new()),
        |(failed, affected, loads): &mut (Vec<bool>, Vec<usize>, Vec<f64>), l| {
            let failed_edges = &links[l];
            for &f in failed_edges {
                failed[f] = true;
            }
            affected.clear();
            for &f in failed_edges {
                affected.extend_from_slice(&users[f]);
            }
            affected.sort_unstable();
            affected.dedup();
            loads.clear();
            loads.extend_from_slice(&normal);
            let mut cut_off = Vec::new();
            for &d in affected.iter() {
                let demand = &problem.demands[d];
                for (path, share) in demand.paths.iter().zip(&shares[d]) {
                    for &x in path {
                        loads[x] -= demand.rate * share;
                    }
                }
                let alive = alive_paths(demand, failed);
                if !alive.contains(&true) {
                    cut_off.push(d);
                    continue;
                }
                let split = allocation.splits.get(d).map_or(&[][..], Vec::as_slice);
                for (path, share) in demand.paths.iter().zip(normalised(split, &alive)) {
                    for &x in path {
                        loads[x] += demand.rate * share;
                    }
                }
            }
            let mlu = surviving_mlu(problem, loads, failed);
            for &f in failed_edges {
                failed[f] = false;
            }
            (mlu, cut_off)
        },
    );
    let mut worst: Option<WorstFailure> = None;
    for (failed_edges, (mlu, cut_off)) in links.into_iter().zip(results) {
        keep_worse(&mut worst, mlu, failed_edges, cut_off);
    }
    worst
}

/// Keeps the failure of `failed_edges` (surviving MLU `mlu`, demands
/// `cut_off`) as the worst when it is worse than the worst so far (the
/// first of equals stays).
fn keep_worse(
    worst: &mut Option<WorstFailure>,
    mlu: f64,
    failed_edges: Vec<usize>,
    cut_off: Vec<usize>,
) {
    if worst.as_ref().is_none_or(|w| mlu > w.mlu) {
        *worst = Some(WorstFailure {
            mlu,
            failed_edges,
            cut_off,
        });
    }
}

/// Each physical link once, as its edges: an edge and its reverse where
/// both exist (from the lower-numbered one), else the edge alone.
fn links(problem: &Problem) -> Vec<Vec<usize>> {
    let edges = &problem.network.edges;
    let mut links = Vec::new();
    for (e, edge) in edges.iter().enumerate() {
        let reverse = edges
            .iter()
            .position(|r| r.src == edge.dst && r.dst == edge.src);
        if reverse.is_some_and(|r| r < e) {
            continue;
        }
        links.push(std::iter::once(e).chain(reverse).collect());
    }
    links
}

/// Which of `demand`'s paths avoid every `failed` edge.
fn alive_paths(demand: &crate::allocation::Demand, failed: &[bool]) -> Vec<bool> {
    demand
        .paths
        .iter()
        .map(|p| p.iter().all(|&x| !failed[x]))
        .collect()
}

/// The highest utilisation of the edges that did not fail.
fn surviving_mlu(problem: &Problem, loads: &[f64], failed: &[bool]) -> f64 {
    loads
        .iter()
        .zip(&problem.network.edges)
        .zip(failed)
        .filter(|(_, failed)| !**failed)
        .map(|((load, edge), _)| load.max(0.0) / edge.capacity)
        .fold(0.0, f64::max)
}

/// A split's shares over the paths still `alive` (0 on the others),
/// renormalised to sum to 1; even over the survivors when their shares are
/// all zero.
fn normalised(split: &[f64], alive: &[bool]) -> Vec<f64> {
    let surviving: f64 = split
        .iter()
        .zip(alive)
        .filter(|(_, a)| **a)
        .map(|(s, _)| s)
        .sum();
    let count = alive.iter().filter(|a| **a).count();
    alive
        .iter()
        .enumerate()
        .map(|(p, a)| match (a, split.get(p)) {
            (false, _) => 0.0,
            (true, Some(share)) if surviving > 0.0 => share / surviving,
            (true, _) => 1.0 / count as f64,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lp::tests::{matrix, network};
    use crate::paths::PathOptions;

    #[test]
    fn traffic_moves_to_surviving_paths() {
        // Diamond with capacities 10 (0-1-3) and 30 (0-2-3), 20 from 0 to 3
        // split 1/4 : 3/4. Losing the fat side puts all 20 on the thin: 2.0.
        let network = network(4, &[(0, 1, 10.0), (1, 3, 10.0), (0, 2, 30.0), (2, 3, 30.0)]);
        let problem = Problem::with_k_paths(
            network,
            &matrix(4, &[(0, 3, 20.0)]),
            &PathOptions::k_shortest(2),
        )
        .unwrap();
        let thin_first = problem.demands[0].paths[0].len() == 2
            && problem.network.edges[problem.demands[0].paths[0][0]].capacity == 10.0;
        let split = if thin_first {
            vec![0.25, 0.75]
        } else {
            vec![0.75, 0.25]
        };
        let allocation = Allocation {
            splits: vec![split],
        };
        let worst = worst_single_failure(&problem, &allocation).unwrap();
        assert!((worst.mlu - 2.0).abs() < 1e-9, "{worst:?}");
        assert!(worst.cut_off.is_empty());
    }

    #[test]
    fn a_single_path_is_cut_off() {
        let network = network(2, &[(0, 1, 10.0)]);
        let problem = Problem::with_k_paths(
            network,
            &matrix(2, &[(0, 1, 5.0)]),
            &PathOptions::k_shortest(2),
        )
        .unwrap();
        let worst = worst_single_failure(&problem, &problem.even_split()).unwrap();
        assert_eq!(worst.cut_off, [0]);
        assert_eq!(worst.mlu, 0.0);
    }

    #[test]
    fn only_the_demands_over_the_failed_link_are_moved() {
        // A 5x5 grid, every pair over 4 paths, uneven seeded splits (some
        // all zero): the same worst failure as walking every demand again.
        let side = 5;
        let n = side * side;
        let links = crate::lp::tests::grid_links(side);
        let mut next = crate::lp::tests::uniform(3u64);
        let entries: Vec<(usize, usize, f64)> = (0..n)
            .flat_map(|s| (0..n).filter(move |&t| t != s).map(move |t| (s, t)))
            .map(|(s, t)| (s, t, 0.1 + next()))
            .collect();
        let problem = Problem::with_k_paths(
            network(n, &links),
            &matrix(n, &entries),
            &PathOptions::k_shortest(4),
        )
        .unwrap();
        let allocation = Allocation {
            splits: problem
                .demands
                .iter()
                .enumerate()
                .map(|(d, demand)| {
                    demand
                        .paths
                        .iter()
                        .map(|_| if d % 7 == 0 { 0.0 } else { next() })
                        .collect()
                })
                .collect(),
        };
        let fast = worst_single_failure(&problem, &allocation).unwrap();
        let slow = recomputed(&problem, &allocation).unwrap();
        assert!(
            (fast.mlu - slow.mlu).abs() <= 1e-9 * slow.mlu,
            "{fast:?} {slow:?}"
        );
        assert_eq!(fast.failed_edges, slow.failed_edges);
        assert_eq!(fast.cut_off, slow.cut_off);
    }

    /// The straightforward evaluation: every demand walked again under
    /// every failure, the first link with the highest MLU kept.
    fn recomputed(problem: &Problem, allocation: &Allocation) -> Option<WorstFailure> {
        let edges = &problem.network.edges;
        let mut worst: Option<WorstFailure> = None;
        for failed_edges in links(problem) {
            let mut failed = vec![false; edges.len()];
            for &f in &failed_edges {
                failed[f] = true;
            }
            let mut loads = vec![0.0; edges.len()];
            let mut cut_off = Vec::new();
            for (d, (demand, split)) in problem.demands.iter().zip(&allocation.splits).enumerate() {
                let alive = alive_paths(demand, &failed);
                if !alive.contains(&true) {
                    cut_off.push(d);
                    continue;
                }
                for (path, share) in demand.paths.iter().zip(normalised(split, &alive)) {
                    for &x in path {
                        loads[x] += demand.rate * share;
                    }
                }
            }
            let mlu = surviving_mlu(problem, &loads, &failed);
            keep_worse(&mut worst, mlu, failed_edges, cut_off);
        }
        worst
    }
}
