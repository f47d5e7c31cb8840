//! Demands with their candidate paths, allocations (split ratios), and the
//! one evaluator every solver's MLU is computed by.

use crate::network::{Network, TrafficMatrix};
use crate::paths::{PathOptions, ShortestPaths, candidate_paths};

/// One demand and the paths it may use.
#[derive(Debug, Clone, PartialEq)]
pub struct Demand {
    pub src: usize,
    pub dst: usize,
    /// Bits per second.
    pub rate: f64,
    /// Candidate paths as edge-index sequences.
    pub paths: Vec<Vec<usize>>,
}

impl Demand {
    /// A demand of `rate` from `src` to `dst` over the candidate paths
    /// `options` give (none when the two are not connected).
    pub fn over_candidates(
        network: &Network,
        finder: &mut ShortestPaths,
        (src, dst): (usize, usize),
        rate: f64,
        options: &PathOptions,
    ) -> Demand {
        let paths = candidate_paths(network, finder, src, dst, options)
            .into_iter()
            .map(|p| p.edges)
            .collect();
        Demand {
            src,
            dst,
            rate,
            paths,
        }
    }
}

/// The problem every solver gets: a network and demands over paths.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub network: Network,
    pub demands: Vec<Demand>,
}

/// Split ratios: `splits[d][p]` is the share of demand `d` on its path `p`;
/// each demand's shares sum to 1.
#[derive(Debug, Clone, PartialEq)]
pub struct Allocation {
    pub splits: Vec<Vec<f64>>,
}

/// What an allocation does to the network.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    /// Maximum link utilisation.
    pub mlu: f64,
    /// Load on each edge, bits per second.
    pub loads: Vec<f64>,
}

/// Why a problem or allocation cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AllocationError {
    #[error("demand {src}->{dst} has no candidate path")]
    NoPath { src: String, dst: String },
    #[error("allocation has {got} demands, the problem {expected}")]
    WrongLength { got: usize, expected: usize },
    #[error("demand {demand}: {reason}")]
    BadSplit { demand: usize, reason: String },
}

impl Problem {
    /// Demands of a matrix over candidate paths from [`candidate_paths`].
    /// A demand with no path is an error naming the pair.
    pub fn with_k_paths(
        network: Network,
        matrix: &TrafficMatrix,
        options: &PathOptions,
    ) -> Result<Problem, AllocationError> {
        let pairs = matrix.demands();
        let ends: Vec<(usize, usize)> = pairs.iter().map(|&(src, dst, _)| (src, dst)).collect();
        let found = crate::paths::candidate_paths_of_pairs(&network, &ends, options);
        Problem::over_paths(network, &pairs, found)
    }

    /// Demands of `pairs` (source, destination, rate) over the paths found
    /// for each, in the same order; fails naming the first pair with none.
    pub fn over_paths(
        network: Network,
        pairs: &[(usize, usize, f64)],
        found: Vec<Vec<Vec<usize>>>,
    ) -> Result<Problem, AllocationError> {
        let mut demands = Vec::with_capacity(pairs.len());
        for (&(src, dst, rate), paths) in pairs.iter().zip(found) {
            if paths.is_empty() {
                return Err(AllocationError::NoPath {
                    src: network.nodes.get(src).cloned().unwrap_or_default(),
                    dst: network.nodes.get(dst).cloned().unwrap_or_default(),
                });
            }
            demands.push(Demand {
                src,
                dst,
                rate,
                paths,
            });
        }
        Ok(Problem { network, demands })
    }

    /// Demands of a matrix over given paths per pair (node sequences), as a
    /// tunnels file gives them.
    pub fn with_node_paths(
        network: Network,
        matrix: &TrafficMatrix,
        node_paths: impl Fn(usize, usize) -> Vec<Vec<usize>>,
    ) -> Result<Problem, AllocationError> {
        let mut demands = Vec::new();
        for (src, dst, rate) in matrix.demands() {
            let paths: Vec<Vec<usize>> = node_paths(src, dst)
                .iter()
                .filter_map(|nodes| {
                    nodes
                        .windows(2)
                        .map(|pair| network.edge_between(pair[0], pair[1]))
                        .collect::<Option<Vec<usize>>>()
                })
                .filter(|edges| !edges.is_empty())
                .collect();
            if paths.is_empty() {
                return Err(AllocationError::NoPath {
                    src: network.nodes.get(src).cloned().unwrap_or_default(),
                    dst: network.nodes.get(dst).cloned().unwrap_or_default(),
                });
            }
            demands.push(Demand {
                src,
                dst,
                rate,
                paths,
            });
        }
        Ok(Problem { network, demands })
    }

    /// Every demand split evenly over its paths.
    pub fn even_split(&self) -> Allocation {
        Allocation {
            splits: self
                .demands
                .iter()
                .map(|d| vec![1.0 / d.paths.len().max(1) as f64; d.paths.len()])
                .collect(),
        }
    }

    /// Every demand on its first (shortest) path.
    pub fn shortest_path(&self) -> Allocation {
        Allocation {
            splits: self
                .demands
                .iter()
                .map(|d| {
                    let mut split = vec![0.0; d.paths.len()];
                    if let Some(first) = split.first_mut() {
                        *first = 1.0;
                    }
                    split
                })
                .collect(),
        }
    }

    /// Loads and MLU of an allocation, after checking it is one: a share
    /// per path, none negative, summing to 1 (within 1e-6) per demand.
    pub fn evaluate(&self, allocation: &Allocation) -> Result<Evaluation, AllocationError> {
        if allocation.splits.len() != self.demands.len() {
            return Err(AllocationError::WrongLength {
                got: allocation.splits.len(),
                expected: self.demands.len(),
            });
        }
        let n_edges = self.network.edges.len();
        // Chunks of a fixed size, summed in their order whatever the number
        // of threads: the loads do not depend on the machine.
        let parts = in_chunks(self.demands.len(), EVALUATE_CHUNK, |range| {
            chunk_loads(
                range.start,
                &self.demands[range.clone()],
                &allocation.splits[range],
                n_edges,
            )
        });
        let mut loads = vec![0.0; n_edges];
        for part in parts {
            // The first chunk with a bad split names it.
            for (load, add) in loads.iter_mut().zip(part?) {
                *load += add;
            }
        }
        let mlu = loads
            .iter()
            .zip(&self.network.edges)
            .map(|(load, edge)| load / edge.capacity)
            .fold(0.0, f64::max);
        Ok(Evaluation { mlu, loads })
    }
}

/// Demands evaluated per chunk: below this a problem is evaluated on the
/// calling thread; above it, chunks on every core (ASN2k's three million
/// demands took 0.9 s on one).
const EVALUATE_CHUNK: usize = 1 << 16;

/// `work` over `0..len` cut into ranges of `chunk` (the last shorter),
/// the ranges spread over every core; the results in range order. Fixed
/// ranges make any sum over them the same on every machine, whatever its
/// number of cores.
pub(crate) fn in_chunks<T: Send>(
    len: usize,
    chunk: usize,
    work: impl Fn(std::ops::Range<usize>) -> T + Sync,
) -> Vec<T> {
    let chunk = chunk.max(1);
    in_parallel(
        len.div_ceil(chunk),
        || (),
        |_, c| work(c * chunk..((c + 1) * chunk).min(len)),
    )
}

/// `work(state, i)` for every `i` in `0..count`, on every core (at most
/// 16 threads; `i` goes to thread `i` modulo their number, each with its
/// own `state` from `init`), on the calling thread when `count` is at
/// most 1; the results in the order of `i`.
pub(crate) fn in_parallel<S, T: Send>(
    count: usize,
    init: impl Fn() -> S + Sync,
    work: impl Fn(&mut S, usize) -> T + Sync,
) -> Vec<T> {
    if count <= 1 {
        let mut state = init();
        return (0..count).map(|i| work(&mut state, i)).collect();
    }
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 16)
        .min(count);
    let mut results: Vec<Option<T>> = (0..count).map(|_| None).collect();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let (init, work) = (&init, &work);
                scope.spawn(move || {
                    let mut state = init();
                    (t..count)
                        .step_by(threads)
                        .map(|i| (i, work(&mut state, i)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for worker in workers {
            // A panic in `work` is a bug, passed on as such.
            match worker.join() {
                Ok(done) => {
                    for (i, result) in done {
                        results[i] = Some(result);
                    }
                }
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
    });
    results.into_iter().flatten().collect()
}

/// [`Problem::evaluate`]'s checks and loads (bit/s per edge) for the
/// demands from index `first`.
fn chunk_loads(
    first: usize,
    demands: &[Demand],
    splits: &[Vec<f64>],
    n_edges: usize,
) -> Result<Vec<f64>, AllocationError> {
    let mut loads = vec![0.0; n_edges];
    for (d, (demand, split)) in demands.iter().zip(splits).enumerate() {
        if split.len() != demand.paths.len() {
            return Err(AllocationError::BadSplit {
                demand: first + d,
                reason: format!("{} shares for {} paths", split.len(), demand.paths.len()),
            });
        }
        if split.iter().any(|s| !s.is_finite() || *s < -1e-9) {
            return Err(AllocationError::BadSplit {
                demand: first + d,
                reason: "a share is negative or not a number".into(),
            });
        }
        let sum: f64 = split.iter().sum();
        if (sum - 1.0).abs() > 1e-6 {
            return Err(AllocationError::BadSplit {
                demand: first + d,
                reason: format!("shares sum to {sum}, not 1"),
            });
        }
        for (path, share) in demand.paths.iter().zip(split) {
            // Most demands of a large network use one or two of their
            // paths: the others add nothing and are not walked.
            if *share <= 0.0 {
                continue;
            }
            for &e in path {
                if let Some(load) = loads.get_mut(e) {
                    *load += demand.rate * share;
                }
            }
        }
    }
    Ok(loads)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// More demands than one chunk: the loads are every demand's, summed
    /// over the chunks on all cores, and a bad split deep in the list is
    /// named by its own index.
    #[test]
    fn evaluation_in_chunks_counts_every_demand_and_names_a_bad_split() {
        // A triangle: 0->1 direct (edge 0) or through 2 (edges 4, 3).
        let network = crate::lp::tests::network(3, &[(0, 1, 100.0), (1, 2, 100.0), (0, 2, 100.0)]);
        let count = 3 * EVALUATE_CHUNK + 123;
        let demands: Vec<Demand> = (0..count)
            .map(|d| Demand {
                src: 0,
                dst: 1,
                rate: if d % 2 == 0 { 1.0 } else { 3.0 },
                paths: vec![vec![0], vec![4, 3]],
            })
            .collect();
        let problem = Problem { network, demands };
        let splits: Vec<Vec<f64>> = (0..count)
            .map(|d| {
                if d % 3 == 0 {
                    vec![1.0, 0.0]
                } else {
                    vec![0.25, 0.75]
                }
            })
            .collect();
        let mut expected = [0.0f64; 6];
        for (d, split) in splits.iter().enumerate() {
            let rate = if d % 2 == 0 { 1.0 } else { 3.0 };
            expected[0] += rate * split[0];
            expected[4] += rate * split[1];
            expected[3] += rate * split[1];
        }
        let mut allocation = Allocation { splits };
        let evaluation = problem.evaluate(&allocation).unwrap();
        for (e, want) in expected.iter().enumerate() {
            let got = evaluation.loads[e];
            assert!(
                (got - want).abs() <= 1e-9 * want.max(1.0),
                "edge {e}: {got} against {want}"
            );
        }
        let busiest = expected.iter().copied().fold(0.0, f64::max);
        assert!((evaluation.mlu - busiest / 100.0).abs() < 1e-9 * busiest);
        let bad = 2 * EVALUATE_CHUNK + 7;
        allocation.splits[bad] = vec![0.5, 0.6];
        allocation.splits[count - 1] = vec![-1.0, 2.0];
        match problem.evaluate(&allocation) {
            Err(AllocationError::BadSplit { demand, .. }) => assert_eq!(demand, bad),
            other => panic!("expected demand {bad} named, got {other:?}"),
        }
    }
}
