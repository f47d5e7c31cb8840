//! The fast solver, for re-planning in seconds on large networks.
//!
//! Method: exponentiated-gradient descent on a smoothed maximum of link
//! utilisations, `(1/β) log Σ exp(β u_e)`, the split of each demand moving
//! multiplicatively towards its cheaper paths, where a path's cost is the sum
//! over its edges of the softmax weight divided by capacity. The smoothing
//! is annealed (β grows as the allocation settles) so early steps balance the
//! whole network and late steps work on the bottleneck only. The best
//! allocation seen, by its true MLU, is returned; it is a valid allocation by
//! construction (non-negative shares summing to 1), and its MLU comes from
//! [`Problem::evaluate`], the evaluator every solver shares.

// Paths are ranges of one flat array (`first..last` per demand); indexing
// by those ranges is the layout, not an accident.
#![allow(clippy::needless_range_loop)]

use crate::allocation::{Allocation, Problem};

/// Tuning of the fast solver.
#[derive(Debug, Clone, PartialEq)]
pub struct FastOptions {
    /// Gradient steps.
    pub iterations: usize,
    /// Step size, relative: a path whose cost is twice its demand's average
    /// loses about this share of its flow in one step (before annealing).
    pub step: f64,
    /// A warm start (for example the previous plan's split), when it fits
    /// the problem.
    pub warm_start: Option<Allocation>,
}

impl Default for FastOptions {
    fn default() -> Self {
        FastOptions {
            iterations: 300,
            step: 0.5,
            warm_start: None,
        }
    }
}

/// The flattened problem: paths as slices of one edge array.
struct Flat {
    capacity: Vec<f64>,
    rate: Vec<f64>,
    /// Per demand, the range of its paths in `path_start`.
    demand_paths: Vec<(usize, usize)>,
    /// Per path, the range of its edges in `edges`.
    path_start: Vec<usize>,
    edges: Vec<u32>,
}

impl Flat {
    fn new(problem: &Problem) -> Flat {
        let mut demand_paths = Vec::with_capacity(problem.demands.len());
        let mut path_start = vec![0];
        let mut edges = Vec::new();
        for demand in &problem.demands {
            let first = path_start.len() - 1;
            for path in &demand.paths {
                edges.extend(path.iter().map(|&e| e as u32));
                path_start.push(edges.len());
            }
            demand_paths.push((first, first + demand.paths.len()));
        }
        Flat {
            capacity: problem.network.edges.iter().map(|e| e.capacity).collect(),
            rate: problem.demands.iter().map(|d| d.rate).collect(),
            demand_paths,
            path_start,
            edges,
        }
    }

    fn path_edges(&self, path: usize) -> &[u32] {
        &self.edges[self.path_start[path]..self.path_start[path + 1]]
    }

    /// Utilisation of every edge under `shares` (one per path).
    fn utilisation(&self, shares: &[f64], out: &mut [f64]) {
        out.iter_mut().for_each(|u| *u = 0.0);
        for (d, &(first, last)) in self.demand_paths.iter().enumerate() {
            for p in first..last {
                let flow = self.rate[d] * shares[p];
                if flow > 0.0 {
                    for &e in self.path_edges(p) {
                        out[e as usize] += flow;
                    }
                }
            }
        }
        for (u, c) in out.iter_mut().zip(&self.capacity) {
            *u /= c;
        }
    }
}

/// Solves `problem` with the fast method; returns the allocation and its MLU
/// as the shared evaluator computes it.
pub fn solve_fast(problem: &Problem, options: &FastOptions) -> (Allocation, f64) {
    let flat = Flat::new(problem);
    let n_paths = flat.path_start.len() - 1;
    let mut shares = vec![0.0; n_paths];
    let warm = options
        .warm_start
        .as_ref()
        .filter(|w| problem.evaluate(w).is_ok());
    for (d, &(first, last)) in flat.demand_paths.iter().enumerate() {
        for p in first..last {
            shares[p] = match warm {
                Some(w) => w.splits[d][p - first].max(1e-6),
                None => 1.0 / (last - first) as f64,
            };
        }
    }
    normalise(&flat, &mut shares);
    let n_edges = flat.capacity.len();
    let mut util = vec![0.0; n_edges];
    flat.utilisation(&shares, &mut util);
    let mut weight = vec![0.0; n_edges];
    let mut best = shares.clone();
    let mut best_mlu = f64::INFINITY;
    let iterations = options.iterations.max(1);
    // Demands are cut into one contiguous chunk per thread; each thread
    // updates its demands' shares and adds their new loads to a load vector
    // of its own, merged after the pass: one streaming pass over the paths
    // per iteration, on every core, with no sharing while it runs.
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 16)
        // Below a few thousand demands a pass is quicker than starting
        // threads for it.
        .min(flat.demand_paths.len() / 4096 + 1);
    let chunk = flat.demand_paths.len().div_ceil(threads).max(1);
    let demand_chunks: Vec<&[(usize, usize)]> = flat.demand_paths.chunks(chunk).collect();
    let mut partial_loads = vec![vec![0.0; n_edges]; demand_chunks.len()];
    for it in 0..iterations {
        let mlu = util.iter().copied().fold(0.0, f64::max);
        if mlu < best_mlu {
            best_mlu = mlu;
            best.copy_from_slice(&shares);
        }
        if mlu <= 0.0 {
            break;
        }
        // Annealing: the softmax looks at edges within `width` of the
        // maximum; it narrows from 30% to 0.1% of the MLU.
        let progress = it as f64 / iterations as f64;
        let width = 0.3 * (0.001f64 / 0.3).powf(progress);
        let beta = 1.0 / (width * mlu);
        let mut total = 0.0;
        for ((w, &u), &c) in weight.iter_mut().zip(&util).zip(&flat.capacity) {
            let soft = (beta * (u - mlu)).exp();
            total += soft;
            *w = soft / c;
        }
        for w in &mut weight {
            *w /= total;
        }
        let step = options.step * (1.0 - 0.5 * progress);
        // Split `shares` at the chunks' path boundaries.
        let mut rest: &mut [f64] = &mut shares;
        let mut share_chunks = Vec::with_capacity(demand_chunks.len());
        let mut offset = 0;
        for demands in &demand_chunks {
            let end = demands.last().map(|&(_, last)| last).unwrap_or(offset);
            let (head, tail) = rest.split_at_mut(end - offset);
            share_chunks.push((offset, head));
            rest = tail;
            offset = end;
        }
        let flat_ref = &flat;
        let weight_ref = &weight;
        if share_chunks.len() == 1 {
            // One chunk: no thread to start.
            for (c, (offset, chunk_shares)) in share_chunks.into_iter().enumerate() {
                let work = Chunk {
                    first_demand: c * chunk,
                    demands: demand_chunks[c],
                    offset,
                };
                update_chunk(
                    flat_ref,
                    weight_ref,
                    &work,
                    chunk_shares,
                    &mut partial_loads[c],
                    step,
                );
            }
        } else {
            std::thread::scope(|scope| {
                for (c, ((demands, (offset, chunk_shares)), loads)) in demand_chunks
                    .iter()
                    .zip(share_chunks)
                    .zip(partial_loads.iter_mut())
                    .enumerate()
                {
                    let work = Chunk {
                        first_demand: c * chunk,
                        demands,
                        offset,
                    };
                    scope.spawn(move || {
                        update_chunk(flat_ref, weight_ref, &work, chunk_shares, loads, step);
                    });
                }
            });
        }
        util.iter_mut().for_each(|u| *u = 0.0);
        for loads in &partial_loads {
            for (u, l) in util.iter_mut().zip(loads) {
                *u += l;
            }
        }
        for (u, c) in util.iter_mut().zip(&flat.capacity) {
            *u /= c;
        }
    }
    let mlu = util.iter().copied().fold(0.0, f64::max);
    if mlu < best_mlu {
        best.copy_from_slice(&shares);
    }
    // Shares below a millionth are rounded away: routers cannot forward
    // them, and dropping them keeps the plan readable.
    for &(first, last) in &flat.demand_paths {
        let mut sum = 0.0;
        for p in first..last {
            if best[p] < 1e-6 {
                best[p] = 0.0;
            }
            sum += best[p];
        }
        for p in first..last {
            best[p] /= sum;
        }
    }
    let allocation = Allocation {
        splits: flat
            .demand_paths
            .iter()
            .map(|&(first, last)| best[first..last].to_vec())
            .collect(),
    };
    let mlu = problem
        .evaluate(&allocation)
        .map(|e| e.mlu)
        .unwrap_or(f64::INFINITY);
    (allocation, mlu)
}

/// A thread's share of the demands.
struct Chunk<'a> {
    /// Index of the chunk's first demand.
    first_demand: usize,
    /// The chunk's demands' path ranges.
    demands: &'a [(usize, usize)],
    /// Index of the chunk's first path (where its shares start).
    offset: usize,
}

/// One multiplicative step for a chunk of demands; writes the chunk's new
/// loads (bit/s) into `loads`.
fn update_chunk(
    flat: &Flat,
    weight: &[f64],
    work: &Chunk<'_>,
    shares: &mut [f64],
    loads: &mut [f64],
    step: f64,
) {
    loads.iter_mut().for_each(|l| *l = 0.0);
    let mut costs: Vec<f64> = Vec::new();
    let offset = work.offset;
    for (i, &(first, last)) in work.demands.iter().enumerate() {
        let rate = flat.rate[work.first_demand + i];
        let local = (first - offset)..(last - offset);
        if last - first >= 2 {
            costs.clear();
            costs.extend((first..last).map(|p| {
                flat.path_edges(p)
                    .iter()
                    .map(|&e| weight[e as usize])
                    .sum::<f64>()
            }));
            // The demand's average path cost under its current split.
            let average: f64 = shares[local.clone()]
                .iter()
                .zip(&costs)
                .map(|(s, c)| s * c)
                .sum();
            if average > 0.0 {
                let mut sum = 0.0;
                for (share, cost) in shares[local.clone()].iter_mut().zip(&costs) {
                    let relative = cost / average - 1.0;
                    *share *= (-step * relative.clamp(-4.0, 4.0)).exp();
                    // Keep a trickle on every path so it can come back.
                    *share = share.max(1e-12);
                    sum += *share;
                }
                for share in &mut shares[local.clone()] {
                    *share /= sum;
                }
            }
        }
        for (p, share) in (first..last).zip(&shares[local]) {
            let flow = rate * share;
            for &e in flat.path_edges(p) {
                loads[e as usize] += flow;
            }
        }
    }
}

fn normalise(flat: &Flat, shares: &mut [f64]) {
    for &(first, last) in &flat.demand_paths {
        let sum: f64 = shares[first..last].iter().sum();
        if sum > 0.0 {
            for s in &mut shares[first..last] {
                *s /= sum;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lp::tests::known_optima;
    use crate::paths::PathOptions;

    #[test]
    fn fast_is_close_to_hand_optima_and_never_below() {
        for (network, matrix, k, optimum) in known_optima() {
            let problem =
                Problem::with_k_paths(network, &matrix, &PathOptions::k_shortest(k)).unwrap();
            let (allocation, mlu) = solve_fast(&problem, &FastOptions::default());
            assert_eq!(problem.evaluate(&allocation).unwrap().mlu, mlu);
            assert!(mlu >= optimum - 1e-9, "{mlu} below the optimum {optimum}");
            assert!(mlu <= optimum * 1.01, "{mlu} vs {optimum}");
        }
    }
}
