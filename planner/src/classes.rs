//! Traffic classes with strict priority: `ai-sync` is placed first (on
//! paths within its latency bound), `ai-bulk` next on what capacity is left,
//! `best-effort` last. Each class is solved on the capacity the classes
//! before it left, so a lower class can never push a higher one around.

use std::collections::BTreeMap;

use crate::allocation::{Allocation, Demand, Problem};
use crate::fast::{FastOptions, solve_fast};
use crate::network::Network;
use crate::paths::{PathOptions, ShortestPaths, candidate_paths};

/// The classes, in the order they are placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Class {
    AiSync,
    AiBulk,
    BestEffort,
}

impl Class {
    pub const ALL: [Class; 3] = [Class::AiSync, Class::AiBulk, Class::BestEffort];

    pub fn as_str(self) -> &'static str {
        match self {
            Class::AiSync => "ai-sync",
            Class::AiBulk => "ai-bulk",
            Class::BestEffort => "best-effort",
        }
    }
}

/// One demand of a class.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassDemand {
    pub src: usize,
    pub dst: usize,
    /// Bits per second.
    pub rate: f64,
    pub class: Class,
    /// Only paths at most this long (one way, microseconds) may carry it.
    pub max_latency_us: Option<f64>,
    /// An explicit path (edge indices from `src` to `dst`) that alone
    /// carries the demand, whatever its latency: an operator's pin.
    pub pinned_path: Option<Vec<usize>>,
}

/// A demand that could not be placed at all, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Unplaced {
    pub src: usize,
    pub dst: usize,
    pub class: Class,
    pub rate: f64,
    pub reason: String,
}

/// How one class fared.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassOutcome {
    pub class: Class,
    /// The class's problem (demands over their paths) and its allocation.
    pub problem: Problem,
    pub allocation: Allocation,
    /// MLU of this class alone on the capacity left to it.
    pub residual_mlu: f64,
    /// Share of the class's demand that fits: 1 when it all fits, else
    /// 1 / residual MLU (placed demand over total, unplaced demands count
    /// as not fitting).
    pub satisfaction: f64,
    /// Per demand of `problem`: whether it is pinned to its one path.
    pub pinned: Vec<bool>,
}

/// The plan for all classes.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassPlan {
    pub outcomes: Vec<ClassOutcome>,
    pub unplaced: Vec<Unplaced>,
    /// Load of all classes on each edge, bits per second.
    pub loads: Vec<f64>,
    /// Maximum link utilisation of all classes together.
    pub mlu: f64,
}

/// Up to this many path shares the reference LP solves a class exactly in
/// well under a second; above it the fast solver takes over.
pub const EXACT_LP_MAX_SHARES: usize = 20_000;

/// The optimum for small problems, the fast solver for large ones (and as
/// the fallback should the LP stop without an answer). The MLU is always
/// the shared evaluator's.
fn solve_class(problem: &Problem, fast: &FastOptions) -> (Allocation, f64) {
    let shares: usize = problem.demands.iter().map(|d| d.paths.len()).sum();
    if shares <= EXACT_LP_MAX_SHARES
        && let Ok((allocation, _)) = crate::lp::path_lp(problem, Some(10.0))
        && let Ok(evaluation) = problem.evaluate(&allocation)
    {
        return (allocation, evaluation.mlu);
    }
    let solution = solve_fast(problem, fast);
    (solution.allocation, solution.mlu)
}

/// Places the classes in priority order over `k` candidate paths per pair:
/// exactly (LP) when a class is small, with the fast solver when not.
pub fn plan_classes(
    network: &Network,
    demands: &[ClassDemand],
    k: usize,
    fast: &FastOptions,
) -> ClassPlan {
    let mut residual = network.clone();
    let mut loads = vec![0.0; network.edges.len()];
    let mut outcomes = Vec::new();
    let mut unplaced = Vec::new();
    for class in Class::ALL {
        // Demands of the class, summed per (pair, latency bound, pin).
        type Key = (usize, usize, Option<u64>, Option<Vec<usize>>);
        let mut summed: BTreeMap<Key, f64> = BTreeMap::new();
        for demand in demands.iter().filter(|d| d.class == class && d.rate > 0.0) {
            let bound = demand.max_latency_us.map(|b| b.to_bits());
            let key = (demand.src, demand.dst, bound, demand.pinned_path.clone());
            *summed.entry(key).or_insert(0.0) += demand.rate;
        }
        if summed.is_empty() {
            continue;
        }
        let mut finder = ShortestPaths::new(network);
        let mut class_demands: Vec<Demand> = Vec::new();
        let mut pinned = Vec::new();
        let mut total_rate = 0.0;
        for ((src, dst, bound, pin), &rate) in &summed {
            let (src, dst, bound) = (*src, *dst, *bound);
            total_rate += rate;
            if let Some(path) = pin {
                if path_joins(network, path, src, dst) {
                    class_demands.push(Demand {
                        src,
                        dst,
                        rate,
                        paths: vec![path.clone()],
                    });
                    pinned.push(true);
                } else {
                    unplaced.push(Unplaced {
                        src,
                        dst,
                        class,
                        rate,
                        reason: "the pinned path does not join its ends".to_string(),
                    });
                }
                continue;
            }
            let options = PathOptions {
                max_latency_us: bound.map(f64::from_bits),
                ..PathOptions::k_shortest(k)
            };
            let paths: Vec<Vec<usize>> = if src == dst {
                Vec::new()
            } else {
                candidate_paths(network, &mut finder, src, dst, &options)
                    .into_iter()
                    .map(|p| p.edges)
                    .collect()
            };
            if paths.is_empty() {
                let reason = match bound {
                    _ if src == dst => "source and destination are the same node".to_string(),
                    Some(b) => format!("no path within {} µs", f64::from_bits(b)),
                    None => "no path".to_string(),
                };
                unplaced.push(Unplaced {
                    src,
                    dst,
                    class,
                    rate,
                    reason,
                });
                continue;
            }
            class_demands.push(Demand {
                src,
                dst,
                rate,
                paths,
            });
            pinned.push(false);
        }
        let problem = Problem {
            network: residual.clone(),
            demands: class_demands,
        };
        let (allocation, residual_mlu) = if problem.demands.is_empty() {
            (Allocation { splits: Vec::new() }, 0.0)
        } else {
            solve_class(&problem, fast)
        };
        let placed_rate: f64 = problem.demands.iter().map(|d| d.rate).sum();
        let fits = if residual_mlu > 1.0 {
            1.0 / residual_mlu
        } else {
            1.0
        };
        let satisfaction = if total_rate > 0.0 {
            placed_rate * fits / total_rate
        } else {
            1.0
        };
        if let Ok(evaluation) = problem.evaluate(&allocation) {
            for (e, load) in evaluation.loads.iter().enumerate() {
                loads[e] += load;
                // What the next class may use; a saturated edge keeps a
                // sliver so utilisations stay finite and the solver shuns it.
                residual.edges[e].capacity =
                    (network.edges[e].capacity - loads[e]).max(network.edges[e].capacity * 1e-6);
            }
        }
        outcomes.push(ClassOutcome {
            class,
            problem,
            allocation,
            residual_mlu,
            satisfaction,
            pinned,
        });
    }
    let mlu = loads
        .iter()
        .zip(&network.edges)
        .map(|(load, edge)| load / edge.capacity)
        .fold(0.0, f64::max);
    ClassPlan {
        outcomes,
        unplaced,
        loads,
        mlu,
    }
}

/// True when `path` is a chain of existing edges from `src` to `dst`
/// visiting no node twice.
pub fn path_joins(network: &Network, path: &[usize], src: usize, dst: usize) -> bool {
    let mut at = src;
    let mut seen = vec![src];
    for &e in path {
        let Some(edge) = network.edges.get(e) else {
            return false;
        };
        if edge.src != at || seen.contains(&edge.dst) {
            return false;
        }
        at = edge.dst;
        seen.push(at);
    }
    !path.is_empty() && at == dst
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::Edge;

    /// Two paths from 0 to 3: short and thin (0-1-3, 1 ms, capacity 10),
    /// long and fat (0-2-3, 10 ms, capacity 100).
    fn network() -> Network {
        let mut edges = Vec::new();
        for (a, b, capacity, latency) in [
            (0, 1, 10.0, 500.0),
            (1, 3, 10.0, 500.0),
            (0, 2, 100.0, 5000.0),
            (2, 3, 100.0, 5000.0),
        ] {
            for (src, dst) in [(a, b), (b, a)] {
                edges.push(Edge {
                    src,
                    dst,
                    capacity,
                    weight: latency,
                    latency_us: latency,
                });
            }
        }
        Network {
            name: "t".into(),
            nodes: (0..4).map(|i| i.to_string()).collect(),
            edges,
        }
    }

    #[test]
    fn a_pinned_demand_takes_its_path_alone_and_a_broken_pin_is_unplaced() {
        let pinned = ClassDemand {
            src: 0,
            dst: 3,
            rate: 4.0,
            class: Class::AiSync,
            // The long path is beyond the bound; the pin wins.
            max_latency_us: Some(2000.0),
            pinned_path: Some(vec![4, 6]),
        };
        let free = ClassDemand {
            pinned_path: None,
            ..pinned.clone()
        };
        let broken = ClassDemand {
            src: 0,
            dst: 3,
            rate: 1.0,
            class: Class::AiBulk,
            max_latency_us: None,
            pinned_path: Some(vec![4, 2]),
        };
        let plan = plan_classes(
            &network(),
            &[pinned, free, broken],
            2,
            &FastOptions::default(),
        );
        let sync = &plan.outcomes[0];
        assert_eq!(sync.pinned, vec![false, true]);
        assert_eq!(sync.problem.demands[1].paths, vec![vec![4, 6]]);
        assert!((plan.loads[4] - 4.0).abs() < 1e-9, "{:?}", plan.loads);
        assert!((plan.loads[0] - 4.0).abs() < 1e-9, "{:?}", plan.loads);
        assert_eq!(plan.unplaced.len(), 1);
        assert_eq!(
            plan.unplaced[0].reason,
            "the pinned path does not join its ends"
        );
        assert!(path_joins(&network(), &[0, 2], 0, 3));
        assert!(!path_joins(&network(), &[0, 1], 0, 0), "revisits a node");
        assert!(!path_joins(&network(), &[], 0, 0));
        assert!(!path_joins(&network(), &[99], 0, 1));
    }

    #[test]
    fn sync_first_on_short_paths_bulk_on_what_is_left() {
        let demands = [
            ClassDemand {
                src: 0,
                dst: 3,
                rate: 8.0,
                class: Class::AiSync,
                max_latency_us: Some(2000.0),
                pinned_path: None,
            },
            ClassDemand {
                src: 0,
                dst: 3,
                rate: 50.0,
                class: Class::AiBulk,
                max_latency_us: None,
                pinned_path: None,
            },
        ];
        let plan = plan_classes(&network(), &demands, 2, &FastOptions::default());
        assert!(plan.unplaced.is_empty());
        let sync = &plan.outcomes[0];
        assert_eq!(sync.class, Class::AiSync);
        assert_eq!(
            sync.problem.demands[0].paths.len(),
            1,
            "only the short path is within 2 ms"
        );
        assert!((sync.residual_mlu - 0.8).abs() < 1e-9);
        assert_eq!(sync.satisfaction, 1.0);
        // Bulk sees 2 left on the thin side and 100 on the fat one.
        let bulk = &plan.outcomes[1];
        assert!(
            bulk.residual_mlu < 0.5 && bulk.satisfaction == 1.0,
            "{bulk:?}"
        );
        assert!(plan.mlu <= 1.0 + 1e-6, "{}", plan.mlu);
    }

    #[test]
    fn unplaceable_and_oversubscribed_are_reported() {
        let demands = [
            ClassDemand {
                src: 0,
                dst: 3,
                rate: 20.0,
                class: Class::AiSync,
                max_latency_us: Some(2000.0),
                pinned_path: None,
            },
            ClassDemand {
                src: 0,
                dst: 3,
                rate: 5.0,
                class: Class::AiSync,
                max_latency_us: Some(100.0),
                pinned_path: None,
            },
        ];
        let plan = plan_classes(&network(), &demands, 2, &FastOptions::default());
        assert_eq!(plan.unplaced.len(), 1);
        assert_eq!(plan.unplaced[0].reason, "no path within 100 µs");
        let sync = &plan.outcomes[0];
        // 20 on a 10 path: MLU 2, half of the placed 20 fits, 10 of 25 overall.
        assert!((sync.residual_mlu - 2.0).abs() < 1e-9);
        assert!((sync.satisfaction - 10.0 / 25.0).abs() < 1e-9);
    }
}
