//! Admission: how much of a new job's guaranteed traffic fits beside the
//! guarantees already given, within its latency bound and beyond it.
//!
//! A guarantee is given only where capacity is left for it (Amoeba,
//! EuroSys'15, admits a deadline job only when it can keep its promise).
//! The guarantees already given keep their rates but not their paths: the
//! LP may move them among their own candidate paths to make room, since a
//! re-plan will. The new job's demands are scaled alike (one share of the
//! job, as its rate is shared by its pairs), first over the paths within
//! their latency bounds, then what is left over the k shortest paths, the
//! hard limit, beside the part placed within the bounds.

use std::collections::BTreeMap;

use clarabel::algebra::CscMatrix;

use crate::allocation::{Demand, Problem};
use crate::classes::ClassDemand;
use crate::lp::{LpError, path_lp, solve as solve_lp};
use crate::network::Network;
use crate::paths::{PathOptions, ShortestPaths, candidate_paths};

/// Why no answer could be given.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AdmissionError {
    #[error("demand {src} -> {dst}: {reason}")]
    Demand {
        src: usize,
        dst: usize,
        reason: String,
    },
    #[error(transparent)]
    Lp(#[from] LpError),
}

/// What fits of a new job, as shares of what it asks (each 0 to 1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fit {
    /// Carried within the demands' latency bounds (all of a demand
    /// without a bound counts here).
    pub within_bound: f64,
    /// Carried beyond the bounds, on the k shortest paths.
    pub beyond_bound: f64,
    /// The guarantees already given did not fit by themselves (a link
    /// failed since, say): nothing new can be guaranteed.
    pub reserved_overflow: bool,
    /// Some demand has no path within its latency bound: as the planner
    /// leaves such a demand unplaced (a bound is a preference only where
    /// it can be met at all), nothing is guaranteed.
    pub no_path_within: bool,
}

impl Fit {
    pub fn total(&self) -> f64 {
        self.within_bound + self.beyond_bound
    }
}

/// How much of `new` fits on `network` beside `reserved`, over `k`
/// candidate paths per pair. A reserved demand with a latency bound keeps
/// to the paths within it (that part of an earlier job was promised
/// within its bound), one without uses any of the k shortest; a pinned
/// demand, reserved or new, rides its pin alone.
pub fn fit(
    network: &Network,
    reserved: &[ClassDemand],
    new: &[ClassDemand],
    k: usize,
) -> Result<Fit, AdmissionError> {
    let mut finder = ShortestPaths::new(network);
    let mut paths = |demand: &ClassDemand, bounded: bool| -> Result<Demand, AdmissionError> {
        let candidates = match &demand.pinned_path {
            Some(path) => vec![path.clone()],
            None if demand.src == demand.dst => Vec::new(),
            None => {
                let options = PathOptions {
                    max_latency_us: if bounded { demand.max_latency_us } else { None },
                    ..PathOptions::k_shortest(k)
                };
                candidate_paths(network, &mut finder, demand.src, demand.dst, &options)
                    .into_iter()
                    .map(|p| p.edges)
                    .collect()
            }
        };
        Ok(Demand {
            src: demand.src,
            dst: demand.dst,
            rate: demand.rate,
            paths: candidates,
        })
    };
    let mut fixed = Vec::with_capacity(reserved.len());
    for demand in reserved.iter().filter(|d| d.rate > 0.0) {
        let placed = paths(demand, true)?;
        if placed.paths.is_empty() {
            return Err(AdmissionError::Demand {
                src: demand.src,
                dst: demand.dst,
                reason: "a reserved demand has no path".into(),
            });
        }
        fixed.push(placed);
    }
    let asked: Vec<&ClassDemand> = new.iter().filter(|d| d.rate > 0.0).collect();
    if asked.is_empty() {
        return Ok(Fit {
            within_bound: 1.0,
            beyond_bound: 0.0,
            reserved_overflow: false,
            no_path_within: false,
        });
    }
    let mut within = Vec::with_capacity(asked.len());
    let mut all = Vec::with_capacity(asked.len());
    for demand in &asked {
        within.push(paths(demand, true)?);
        all.push(paths(demand, false)?);
    }
    let nothing = |reserved_overflow, no_path_within| Fit {
        within_bound: 0.0,
        beyond_bound: 0.0,
        reserved_overflow,
        no_path_within,
    };
    // A demand with no path within its bound is never placed, so nothing
    // of the job is (its demands are scaled alike).
    if within.iter().any(|d| d.paths.is_empty()) {
        return Ok(nothing(false, true));
    }
    let Some(within_share) = max_share(network, &fixed, &within)? else {
        return Ok(nothing(true, false));
    };
    // Bounds that leave out no path: nothing more beyond them.
    let wider = within.iter().zip(&all).any(|(w, a)| w.paths != a.paths);
    if within_share >= 1.0 - SHARE_TOLERANCE || !wider {
        return Ok(Fit {
            within_bound: within_share.min(1.0),
            ..nothing(false, false)
        });
    }
    // The part within the bounds is now given; the rest may go further.
    for demand in within.iter().filter(|_| within_share > 0.0) {
        fixed.push(Demand {
            rate: demand.rate * within_share,
            ..demand.clone()
        });
    }
    let rest: Vec<Demand> = all
        .into_iter()
        .map(|d| Demand {
            rate: d.rate * (1.0 - within_share),
            ..d
        })
        .collect();
    let beyond = max_share(network, &fixed, &rest)?.unwrap_or(0.0);
    // Solver noise is not capacity.
    let beyond = if beyond < SHARE_TOLERANCE {
        0.0
    } else {
        beyond
    };
    Ok(Fit {
        within_bound: within_share,
        beyond_bound: (1.0 - within_share) * beyond,
        ..nothing(false, false)
    })
}

/// A share this close to 1 is all of it (the interior-point solver's
/// tolerance).
const SHARE_TOLERANCE: f64 = 1e-6;

/// The largest share in [0, 1] of `new` (every demand alike) that fits on
/// `network` with all of `fixed`, each demand split freely over its own
/// paths; `None` when `fixed` alone does not fit.
///
/// The LP: per demand and path the fraction of the demand it carries;
/// `fixed` demands' fractions sum to 1, `new` demands' to the share `s`;
/// every edge's load within its capacity; maximise `s <= 1`.
pub fn max_share(
    network: &Network,
    fixed: &[Demand],
    new: &[Demand],
) -> Result<Option<f64>, LpError> {
    let demands: Vec<&Demand> = fixed.iter().chain(new).collect();
    let offsets: Vec<usize> = demands
        .iter()
        .scan(0, |next, d| {
            let start = *next;
            *next += d.paths.len();
            Some(start)
        })
        .collect();
    let n_fractions: usize = demands.iter().map(|d| d.paths.len()).sum();
    let share = n_fractions;
    let n_vars = n_fractions + 1;
    let (mut rows, mut cols, mut vals) = (Vec::new(), Vec::new(), Vec::new());
    let mut b = Vec::new();
    // Equalities: each demand's fractions sum to 1 (fixed) or to the share.
    for (d, demand) in demands.iter().enumerate() {
        for p in 0..demand.paths.len() {
            rows.push(d);
            cols.push(offsets[d] + p);
            vals.push(1.0);
        }
        if d < fixed.len() {
            b.push(1.0);
        } else {
            rows.push(d);
            cols.push(share);
            vals.push(-1.0);
            b.push(0.0);
        }
    }
    let zero_rows = demands.len();
    // Capacity rows, only for edges some path crosses.
    let mut per_edge: BTreeMap<usize, Vec<(usize, f64)>> = BTreeMap::new();
    for (d, demand) in demands.iter().enumerate() {
        for (p, path) in demand.paths.iter().enumerate() {
            for &e in path {
                let Some(edge) = network.edges.get(e) else {
                    return Err(LpError::Setup(format!("path crosses unknown edge {e}")));
                };
                if edge.capacity <= 0.0 {
                    return Err(LpError::Setup(format!("edge {e} has no capacity")));
                }
                per_edge
                    .entry(e)
                    .or_default()
                    .push((offsets[d] + p, demand.rate / edge.capacity));
            }
        }
    }
    let mut row = zero_rows;
    for terms in per_edge.values() {
        for &(col, value) in terms {
            rows.push(row);
            cols.push(col);
            vals.push(value);
        }
        b.push(1.0);
        row += 1;
    }
    // The share is at most 1; every variable is non-negative.
    rows.push(row);
    cols.push(share);
    vals.push(1.0);
    b.push(1.0);
    row += 1;
    for var in 0..n_vars {
        rows.push(row);
        cols.push(var);
        vals.push(-1.0);
        b.push(0.0);
        row += 1;
    }
    let a = CscMatrix::new_from_triplets(row, n_vars, rows, cols, vals);
    let mut q = vec![0.0; n_vars];
    q[share] = -1.0;
    match solve_lp(n_vars, q, a, b, zero_rows, row - zero_rows, Some(10.0)) {
        Ok(x) => Ok(Some(x[share].clamp(0.0, 1.0))),
        Err(error) => {
            // Infeasible only when the fixed demands alone do not fit.
            if fixed.is_empty() {
                return Err(error);
            }
            let alone = Problem {
                network: network.clone(),
                demands: fixed.to_vec(),
            };
            let (allocation, _) = path_lp(&alone, Some(10.0))?;
            match alone.evaluate(&allocation) {
                Ok(evaluation) if evaluation.mlu > 1.0 + SHARE_TOLERANCE => Ok(None),
                _ => Err(error),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classes::Class;
    use crate::classes::tests::both_ways;

    /// Two datacentres joined by a fast 10G path (east, 10 ms) and a 40G
    /// path 4 ms longer (south): `lab/ai-wan.clab.yml` in small.
    fn two_paths() -> Network {
        let mut edges = Vec::new();
        for (a, b, capacity, latency) in [
            (0, 1, 10e9, 5_000.0),
            (1, 3, 10e9, 5_000.0),
            (0, 2, 40e9, 7_000.0),
            (2, 3, 40e9, 7_000.0),
        ] {
            both_ways(&mut edges, a, b, capacity, latency);
        }
        Network {
            name: "two-paths".into(),
            nodes: (0..4).map(|i| i.to_string()).collect(),
            edges,
        }
    }

    fn sync(rate: f64, bound: Option<f64>) -> ClassDemand {
        ClassDemand {
            src: 0,
            dst: 3,
            rate,
            class: Class::AiSync,
            max_latency_us: bound,
            pinned_path: None,
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-4
    }

    #[test]
    fn what_does_not_fit_within_the_bound_goes_on_longer_paths() {
        // 30G of ai-sync within 15 ms: the east path (10 ms) carries 10G,
        // the south path (14 ms) is beyond the bound and carries the rest.
        let fit = fit(&two_paths(), &[], &[sync(30e9, Some(12_000.0))], 4).expect("fit");
        assert!(close(fit.within_bound, 1.0 / 3.0), "{fit:?}");
        assert!(close(fit.beyond_bound, 2.0 / 3.0), "{fit:?}");
        // A bound no path meets: nothing (the planner leaves it unplaced).
        let none = super::fit(&two_paths(), &[], &[sync(5e9, Some(1_000.0))], 4).expect("fit");
        assert!(none.no_path_within && none.total() == 0.0, "{none:?}");
        // 60G: 10 within, 40 beyond, 10 nowhere.
        let fit = super::fit(&two_paths(), &[], &[sync(60e9, Some(12_000.0))], 4).expect("fit");
        assert!(close(fit.within_bound, 1.0 / 6.0), "{fit:?}");
        assert!(close(fit.beyond_bound, 4.0 / 6.0), "{fit:?}");
    }

    #[test]
    fn reservations_move_aside_but_keep_their_bounds() {
        // A reserved 20G without a bound can ride the south path and leave
        // the east path to a new bounded job: all 10G of it fit within.
        let free = fit(
            &two_paths(),
            &[sync(20e9, None)],
            &[sync(10e9, Some(12_000.0))],
            4,
        )
        .expect("fit");
        assert!(close(free.within_bound, 1.0), "{free:?}");
        // Reserved within the same bound it must stay east: nothing left
        // within for the new job, which goes south.
        let bound = fit(
            &two_paths(),
            &[sync(8e9, Some(12_000.0))],
            &[sync(10e9, Some(12_000.0))],
            4,
        )
        .expect("fit");
        assert!(close(bound.within_bound, 0.2), "{bound:?}");
        assert!(close(bound.beyond_bound, 0.8), "{bound:?}");
    }

    #[test]
    fn reservations_that_no_longer_fit_leave_nothing() {
        let fit = fit(&two_paths(), &[sync(60e9, None)], &[sync(1e9, None)], 4).expect("fit");
        assert!(fit.reserved_overflow);
        assert_eq!(fit.total(), 0.0);
    }

    #[test]
    fn every_demand_of_a_job_is_scaled_alike() {
        // One job, two pairs: 0->3 at 45G and 0->1 at 10G. Node 0 sends at
        // most 50G (its 10G and 40G links): 10/11 of the job fits, and
        // 0->1, which would fit alone, gets 10/11 of its rate too.
        let other = ClassDemand {
            dst: 1,
            ..sync(10e9, None)
        };
        let fit = fit(&two_paths(), &[], &[sync(45e9, None), other.clone()], 4).expect("fit");
        assert!(close(fit.within_bound, 10.0 / 11.0), "{fit:?}");
        assert_eq!(fit.beyond_bound, 0.0);
        // At 40G the two fit exactly: 0->1 east, 0->3 south.
        let exact = super::fit(&two_paths(), &[], &[sync(40e9, None), other], 4).expect("fit");
        assert!(close(exact.within_bound, 1.0), "{exact:?}");
    }
}
