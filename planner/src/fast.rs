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
//!
//! Every step also yields a certified lower bound on the optimum over the
//! same candidate paths, by weak LP duality: for link prices `y >= 0` with
//! `sum_e c_e y_e = 1`, any allocation's MLU is at least `sum_e y_e load_e`,
//! which is at least `sum_d rate_d * min_p price(p)`. The softmax weights
//! divided by capacity are such prices, so the bound costs nothing but a
//! minimum per demand. The solver stops once its best MLU is within
//! `gap_tolerance` of the best bound: on networks where the LP cannot run,
//! that gap is the proof of quality.

// Paths are ranges of one flat array (`first..last` per demand); indexing
// by those ranges is the layout, not an accident.
#![allow(clippy::needless_range_loop)]

use crate::allocation::{Allocation, Problem};

/// A gap between the MLU and its lower bound small enough that a sharper
/// bound is not worth its LP.
const CLOSED_GAP: f64 = 1e-3;

/// With a gap tolerance, the lower bound is sharpened every this many
/// steps (it costs about a step and a small LP) to see whether to stop.
const CHECK_EVERY: usize = 25;

/// The same for a warm start, which is often within tolerance after a few
/// steps: checking sooner saves more steps than the checks cost.
const WARM_CHECK_EVERY: usize = 10;

/// A warm start also checks after this many steps: after a small change
/// a few steps are often all it needs (ASN2k after a 10% change: within
/// 0.05% of the bound after five), and one check costs about two steps.
const WARM_EARLY_CHECK: usize = 5;

/// Path-edge visits a solve may spend on its steps (one step visits every
/// edge of every candidate path once): 300 steps up to 13 million path
/// edges, then fewer, down to [`MIN_STEPS`].
const STEP_BUDGET: f64 = 4e9;
/// Steps every solve gets; on Kdl and ASN2k, 100 steps are within 1% of
/// the optimum (the bound proves it, see the README's planner figures).
const MIN_STEPS: usize = 100;

/// How close to the maximum an edge must be loaded to be priced, in the
/// checks while solving and in the sharpening at the end.
const CHECK_SLACKS: [f64; 1] = [0.01];
/// A warm start's checks also look wider when the narrow set does not
/// prove the tolerance: its steps are few, so a check that proves early
/// saves a larger share of the solve.
const WARM_CHECK_SLACKS: [f64; 2] = [0.01, 0.05];
const FINAL_SLACKS: [f64; 4] = [0.01, 0.05, 0.1, 0.2];

/// Steps over which the softmax narrows to its final width; later steps
/// refine at that width (and a check can stop them once the gap is proven).
const ANNEAL_STEPS: usize = 50;

/// Where a warm start's annealing begins (0 is a cold start's broad
/// softmax, 1 the final narrow one).
const WARM_ANNEAL_FROM: f64 = 0.85;

/// Relative to the dearest edge's price, the path price below which a
/// demand is not worth moving (once the softmax has narrowed, that is most
/// demands of a large network, and a step then costs little more than
/// reading their paths).
const NEGLIGIBLE_PRICE: f64 = 1e-6;

/// A restricted dual on this many edges or fewer is cheap whatever the
/// network (its LP has at most a few hundred rows).
const CHEAP_TIGHT_EDGES: usize = 32;

/// A problem whose restricted LP (see [`finish_exactly`]) has at most
/// this many path shares is finished exactly when the steps leave the gap
/// open: the size up to which the class plans solve by LP outright, where
/// the LP takes tens of milliseconds, as long as the steps.
pub const EXACT_FINISH_MAX_SHARES: usize = crate::classes::EXACT_LP_MAX_SHARES;

/// A path within this (relative) of its demand's cheapest under the final
/// prices may carry flow in an optimum those prices prove: it is kept in
/// the restricted LP.
const NEAR_CHEAPEST: f64 = 1e-3;

/// The restricted LP's time limit: it is a finish, never a wait.
const EXACT_FINISH_TIME_LIMIT_S: f64 = 5.0;

/// Tuning of the fast solver.
#[derive(Debug, Clone, PartialEq)]
pub struct FastOptions {
    /// Most gradient steps; fewer on very large problems (see
    /// [`STEP_BUDGET`]) or once the gap tolerance is met.
    pub iterations: usize,
    /// Step size, relative: a path whose cost is twice its demand's average
    /// loses about this share of its flow in one step (before annealing).
    pub step: f64,
    /// A warm start (for example the previous plan's split), when it fits
    /// the problem.
    pub warm_start: Option<Allocation>,
    /// The link prices of the plan the warm start came from
    /// ([`FastSolution::prices`]). A warm start takes their bound first,
    /// one pass over the paths: after a small change in the traffic it
    /// often proves the tolerance before any LP is solved (the check's
    /// restricted dual was most of a warm re-plan on Kdl). Ignored without
    /// a warm start, or when they do not fit the network.
    pub warm_prices: Option<Vec<f64>>,
    /// Stop once `best MLU <= (1 + gap_tolerance) * lower bound`, checked
    /// every [`CHECK_EVERY`] steps; 0 runs every step. The default, 0.5%,
    /// is a quarter of the quality the planner promises (2% of the LP).
    pub gap_tolerance: f64,
    /// When the steps end with the gap above `gap_tolerance`, finish with
    /// the LP restricted to the paths in use and those cheapest under the
    /// bound's prices, if it has at most this many path shares (0: never).
    pub exact_finish_max_shares: usize,
}

/// What the fast solver returns.
#[derive(Debug, Clone, PartialEq)]
pub struct FastSolution {
    pub allocation: Allocation,
    /// MLU of `allocation`, from [`Problem::evaluate`].
    pub mlu: f64,
    /// The best certified lower bound on the candidate-path optimum.
    pub lower_bound: f64,
    /// The link prices (per unit of load, summing to 1 when weighted by
    /// capacity) that gave `lower_bound`.
    pub prices: Vec<f64>,
    /// Gradient steps taken.
    pub iterations: usize,
    /// Whether the restricted LP gave the allocation (the steps left the
    /// gap open and the LP did better).
    pub finished_exactly: bool,
}

impl Default for FastOptions {
    fn default() -> Self {
        FastOptions {
            iterations: 300,
            step: 0.5,
            warm_start: None,
            warm_prices: None,
            gap_tolerance: 0.005,
            exact_finish_max_shares: EXACT_FINISH_MAX_SHARES,
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
    /// (u32: a step streams this array, and half the bytes is time saved
    /// on the largest networks.)
    path_start: Vec<u32>,
    edges: Vec<u32>,
}

impl Flat {
    /// `None` when the paths have more than `u32::MAX` edges in all (16
    /// GB of indices, beyond any machine this runs on) or a path crosses
    /// an edge the network does not have.
    fn new(problem: &Problem) -> Option<Flat> {
        // Sized up front (growing the edge array, hundreds of megabytes on
        // ASN2k, would copy it again and again) and filled a contiguous
        // chunk of demands per thread: reading every path's own
        // allocation is memory latency, half a second on ASN2k on one
        // core.
        let threads = worker_threads(problem.demands.len());
        let chunk = problem.demands.len().div_ceil(threads).max(1);
        let demand_chunks: Vec<&[crate::allocation::Demand]> =
            problem.demands.chunks(chunk).collect();
        let counts: Vec<(usize, usize)> = each_on_a_thread(demand_chunks.clone(), |demands| {
            let paths = demands.iter().map(|d| d.paths.len()).sum();
            let edges = demands.iter().flat_map(|d| &d.paths).map(Vec::len).sum();
            (paths, edges)
        });
        let n_paths: usize = counts.iter().map(|c| c.0).sum();
        let n_edges: usize = counts.iter().map(|c| c.1).sum();
        let network_edges = problem.network.edges.len();
        if u32::try_from(n_edges).is_err() || u32::try_from(network_edges).is_err() {
            return None;
        }
        let mut demand_paths = vec![(0, 0); problem.demands.len()];
        let mut path_start = vec![0u32; n_paths + 1];
        let mut edges = vec![0u32; n_edges];
        // Each chunk's slices of the three arrays, and where its paths and
        // edges start in the whole.
        let mut parts = Vec::with_capacity(demand_chunks.len());
        let (mut spans, mut ends, mut rest_edges) =
            (&mut demand_paths[..], &mut path_start[1..], &mut edges[..]);
        let (mut first_path, mut first_edge) = (0, 0);
        for (demands, &(paths, chunk_edges)) in demand_chunks.iter().zip(&counts) {
            let (span_part, span_rest) = spans.split_at_mut(demands.len());
            let (end_part, end_rest) = ends.split_at_mut(paths);
            let (edge_part, edge_rest) = rest_edges.split_at_mut(chunk_edges);
            parts.push((
                *demands, span_part, end_part, edge_part, first_path, first_edge,
            ));
            (spans, ends, rest_edges) = (span_rest, end_rest, edge_rest);
            first_path += paths;
            first_edge += chunk_edges;
        }
        let in_range = each_on_a_thread(
            parts,
            |(demands, spans, ends, edges, first_path, first_edge)| {
                let (mut p, mut e) = (0, 0);
                let mut in_range = true;
                for (demand, span) in demands.iter().zip(spans.iter_mut()) {
                    *span = (first_path + p, first_path + p + demand.paths.len());
                    for path in &demand.paths {
                        for (slot, &edge) in edges[e..e + path.len()].iter_mut().zip(path) {
                            in_range &= edge < network_edges;
                            // Below 2^32: the network's edge count is.
                            *slot = edge as u32;
                        }
                        e += path.len();
                        // Below 2^32: the total was checked.
                        ends[p] = (first_edge + e) as u32;
                        p += 1;
                    }
                }
                in_range
            },
        );
        // A path over an edge the network does not have: no plan to make
        // (the caller's fallback evaluates, and reports, the problem).
        if in_range.contains(&false) {
            return None;
        }
        Some(Flat {
            capacity: problem.network.edges.iter().map(|e| e.capacity).collect(),
            rate: problem.demands.iter().map(|d| d.rate).collect(),
            demand_paths,
            path_start,
            edges,
        })
    }

    fn path_edges(&self, path: usize) -> &[u32] {
        &self.edges[self.path_start[path] as usize..self.path_start[path + 1] as usize]
    }

    /// Sets `loads` (bit/s per edge) to what the demands `demands` (path
    /// ranges, the first of them demand `first_demand`) put on the edges
    /// under `shares` (one per path of the whole problem).
    fn chunk_loads(
        &self,
        demands: &[(usize, usize)],
        first_demand: usize,
        shares: &[f64],
        loads: &mut [f64],
    ) {
        loads.iter_mut().for_each(|l| *l = 0.0);
        for (i, &(first, last)) in demands.iter().enumerate() {
            for p in first..last {
                let flow = self.rate[first_demand + i] * shares[p];
                if flow > 0.0 {
                    for &e in self.path_edges(p) {
                        loads[e as usize] += flow;
                    }
                }
            }
        }
    }
}

/// Solves `problem` with the fast method; returns the allocation, its MLU
/// as the shared evaluator computes it, and the lower bound.
pub fn solve_fast(problem: &Problem, options: &FastOptions) -> FastSolution {
    let Some(flat) = Flat::new(problem) else {
        // Too large to index: an even split, honestly evaluated, and no
        // claim about the optimum.
        let allocation = Allocation {
            splits: problem
                .demands
                .iter()
                .map(|d| vec![1.0 / d.paths.len().max(1) as f64; d.paths.len()])
                .collect(),
        };
        let mlu = problem
            .evaluate(&allocation)
            .map(|e| e.mlu)
            .unwrap_or(f64::INFINITY);
        return FastSolution {
            allocation,
            mlu,
            lower_bound: 0.0,
            prices: vec![0.0; problem.network.edges.len()],
            iterations: 0,
            finished_exactly: false,
        };
    };
    let n_paths = flat.path_start.len() - 1;
    let mut shares = vec![0.0; n_paths];
    let warm = options.warm_start.as_ref().filter(|w| fits(problem, w));
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
    let mut weight = vec![0.0; n_edges];
    // Three buffers of shares: the current ones, the best seen, and the
    // next step's (a step reads the current and writes the spare). When
    // the current shares are the best seen they are only marked so, not
    // copied: copying 12 million shares at every step that improves (most
    // of them) was a sixth of a step on ASN2k.
    let mut best = vec![0.0; shares.len()];
    let mut best_is_current = false;
    let mut spare = vec![0.0; shares.len()];
    let mut best_mlu = f64::INFINITY;
    let mut best_bound = 0.0f64;
    let mut best_prices = vec![0.0; n_edges];
    let mut taken = 0;
    // Whether a check already proved the best allocation within tolerance.
    let mut proven = false;
    // A warm start is balanced already: broad early steps would undo it.
    // Its softmax starts narrow, where a cold solve's annealing is most of
    // the way through, and the gap is checked before the first step (a
    // start still within tolerance costs one check and no step) and after
    // a few.
    let warm_started = warm.is_some();
    let (anneal_from, check_every) = if warm_started {
        (WARM_ANNEAL_FROM, WARM_CHECK_EVERY)
    } else {
        (0.0, CHECK_EVERY)
    };
    // Large problems get fewer steps: about STEP_BUDGET path-edge visits
    // in all, and never fewer than MIN_STEPS.
    let affordable = (STEP_BUDGET / flat.edges.len().max(1) as f64) as usize;
    let iterations = options.iterations.min(affordable.max(MIN_STEPS)).max(1);
    // Demands are cut into one contiguous chunk per thread; each thread
    // updates its demands' shares and adds their new loads to a load vector
    // of its own, merged after the pass: one streaming pass over the paths
    // per iteration, on every core, with no sharing while it runs.
    let threads = worker_threads(flat.demand_paths.len());
    let chunk = flat.demand_paths.len().div_ceil(threads).max(1);
    let demand_chunks: Vec<&[(usize, usize)]> = flat.demand_paths.chunks(chunk).collect();
    let mut partial_loads = vec![vec![0.0; n_edges]; demand_chunks.len()];
    // The starting loads, a chunk per thread as in the steps (on ASN2k a
    // single pass is a tenth of a warm re-plan).
    each_on_a_thread(
        partial_loads.iter_mut().enumerate().collect(),
        |(c, loads)| flat.chunk_loads(demand_chunks[c], c * chunk, &shares, loads),
    );
    let mut util = vec![0.0; n_edges];
    merge_utilisation(&partial_loads, &flat.capacity, &mut util);
    let mut best_util = util.clone();
    // The last plan's prices bound the start: when they prove the
    // tolerance the solve is over; when they do not, the start is further
    // from the optimum than they can see, and the first steps' own bounds
    // are cheaper than the check's LP (which then waits for the early
    // check).
    let mut priced_start = false;
    if warm_started
        && let Some(prices) = options.warm_prices.as_deref()
        && let Some((bound, prices)) = bound_from_prices(&flat, prices, &demand_chunks, chunk)
    {
        priced_start = true;
        if bound > best_bound {
            best_bound = bound;
            best_prices = prices;
        }
    }
    for it in 0..iterations {
        let mlu = util.iter().copied().fold(0.0, f64::max);
        if mlu < best_mlu {
            best_mlu = mlu;
            best_is_current = true;
            best_util.copy_from_slice(&util);
        }
        let check_now = if warm_started {
            (it % check_every == 0 && !(it == 0 && priced_start)) || it == WARM_EARLY_CHECK
        } else {
            it % check_every == 0 && it > 0
        };
        if options.gap_tolerance > 0.0 && check_now {
            // Only the narrow (cheap) sets here, and 5% for a warm start:
            // this is to decide whether to stop, the end gets the full
            // effort.
            sharpen_bound(
                problem,
                &best_util,
                best_mlu,
                if warm_started {
                    &WARM_CHECK_SLACKS
                } else {
                    &CHECK_SLACKS
                },
                options.gap_tolerance.max(CLOSED_GAP),
                &mut best_bound,
                &mut best_prices,
            );
        }
        if mlu <= 0.0 || best_mlu <= (1.0 + options.gap_tolerance) * best_bound {
            proven = true;
            break;
        }
        taken = it + 1;
        // Annealing: the softmax looks at edges within `width` of the
        // maximum; it narrows from 30% to 0.1% of the MLU over the first
        // ANNEAL_STEPS steps (or all of them, when fewer), then stays there.
        let progress = (anneal_from
            + (1.0 - anneal_from) * it as f64 / iterations.min(ANNEAL_STEPS) as f64)
            .min(1.0);
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
        let rule = StepRule {
            step: options.step * (1.0 - 0.5 * progress),
            negligible: NEGLIGIBLE_PRICE * weight.iter().copied().fold(0.0, f64::max),
            full: it % CHECK_EVERY == 0,
        };
        // Split the next shares at the chunks' path boundaries.
        let mut next = std::mem::take(&mut spare);
        let mut rest: &mut [f64] = &mut next;
        let mut share_chunks = Vec::with_capacity(demand_chunks.len());
        let mut offset = 0;
        for demands in &demand_chunks {
            let end = demands.last().map(|&(_, last)| last).unwrap_or(offset);
            let (head, tail) = rest.split_at_mut(end - offset);
            share_chunks.push((offset, head));
            rest = tail;
            offset = end;
        }
        let work: Vec<_> = demand_chunks
            .iter()
            .zip(share_chunks)
            .zip(partial_loads.iter_mut())
            .enumerate()
            .collect();
        let bound: f64 =
            each_on_a_thread(work, |(c, ((demands, (offset, chunk_shares)), loads))| {
                let work = Chunk {
                    first_demand: c * chunk,
                    demands,
                    offset,
                };
                update_chunk(&flat, &weight, &work, &shares, chunk_shares, loads, rule)
            })
            .iter()
            .sum();
        // The step's shares become the current ones; the ones before
        // are kept as the best when they were, else are the next spare.
        let before = std::mem::replace(&mut shares, next);
        if best_is_current {
            spare = std::mem::replace(&mut best, before);
            best_is_current = false;
        } else {
            spare = before;
        }
        if bound > best_bound {
            best_bound = bound;
            best_prices.copy_from_slice(&weight);
        }
        merge_utilisation(&partial_loads, &flat.capacity, &mut util);
    }
    let mlu = util.iter().copied().fold(0.0, f64::max);
    if mlu < best_mlu {
        best_mlu = mlu;
        best_is_current = true;
        best_util.copy_from_slice(&util);
    }
    drop(spare);
    let mut best = if best_is_current { shares } else { best };
    // The wider (dearer) sharpening only when the tolerance is not proven
    // yet: on Kdl it costs as much as 50 steps.
    if !proven {
        sharpen_bound(
            problem,
            &best_util,
            best_mlu,
            &FINAL_SLACKS,
            CLOSED_GAP,
            &mut best_bound,
            &mut best_prices,
        );
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
    let mut mlu = problem
        .evaluate(&allocation)
        .map(|e| e.mlu)
        .unwrap_or(f64::INFINITY);
    let mut allocation = allocation;
    let mut finished_exactly = false;
    if options.gap_tolerance > 0.0
        && mlu > (1.0 + options.gap_tolerance) * best_bound
        && let Some((exact, exact_mlu)) = finish_exactly(
            problem,
            &allocation,
            &best_prices,
            options.exact_finish_max_shares,
        )
        && exact_mlu < mlu
    {
        allocation = exact;
        mlu = exact_mlu;
        finished_exactly = true;
    }
    FastSolution {
        allocation,
        mlu,
        // The bound is on the optimum; rounding cannot make it exceed a
        // feasible MLU, but the minimum keeps that true in floating point.
        lower_bound: best_bound.min(mlu),
        prices: best_prices,
        iterations: taken,
        finished_exactly,
    }
}

/// The path LP over a subset of each demand's paths: those `allocation`
/// uses and those within [`NEAR_CHEAPEST`] of the demand's cheapest under
/// `prices`. When the prices are optimal duals (the bound then equals the
/// optimum), complementary slackness says an optimum uses only the
/// cheapest paths, so the restricted LP reaches it; when they are not, it
/// is still at least as good as `allocation`, which it contains. `None`
/// when the subset has more than `max_shares` shares or the LP gives no
/// answer. Returns the allocation over all paths and its MLU from the
/// shared evaluator.
fn finish_exactly(
    problem: &Problem,
    allocation: &Allocation,
    prices: &[f64],
    max_shares: usize,
) -> Option<(Allocation, f64)> {
    let price_of = |path: &[usize]| -> f64 {
        path.iter()
            .map(|&e| prices.get(e).copied().unwrap_or(0.0).max(0.0))
            .sum()
    };
    let mut kept: Vec<Vec<usize>> = Vec::with_capacity(problem.demands.len());
    let mut shares = 0;
    for (demand, split) in problem.demands.iter().zip(&allocation.splits) {
        let path_prices: Vec<f64> = demand.paths.iter().map(|p| price_of(p)).collect();
        let cheapest = path_prices.iter().copied().fold(f64::INFINITY, f64::min);
        let near = cheapest * (1.0 + NEAR_CHEAPEST) + f64::EPSILON;
        let paths: Vec<usize> = (0..demand.paths.len())
            .filter(|&p| split.get(p).is_some_and(|s| *s > 0.0) || path_prices[p] <= near)
            .collect();
        shares += paths.len();
        if shares > max_shares {
            return None;
        }
        kept.push(paths);
    }
    let restricted = Problem {
        network: problem.network.clone(),
        demands: problem
            .demands
            .iter()
            .zip(&kept)
            .map(|(demand, paths)| crate::allocation::Demand {
                src: demand.src,
                dst: demand.dst,
                rate: demand.rate,
                paths: paths.iter().map(|&p| demand.paths[p].clone()).collect(),
            })
            .collect(),
    };
    let (restricted_allocation, _) =
        crate::lp::path_lp(&restricted, Some(EXACT_FINISH_TIME_LIMIT_S)).ok()?;
    let splits = problem
        .demands
        .iter()
        .zip(&kept)
        .zip(&restricted_allocation.splits)
        .map(|((demand, paths), split)| {
            let mut full = vec![0.0; demand.paths.len()];
            for (&p, &share) in paths.iter().zip(split) {
                // Shares below a millionth are rounded away, as the
                // steps' are.
                full[p] = if share < 1e-6 { 0.0 } else { share };
            }
            let sum: f64 = full.iter().sum();
            if sum > 0.0 {
                full.iter_mut().for_each(|s| *s /= sum);
            }
            full
        })
        .collect();
    let exact = Allocation { splits };
    let mlu = problem.evaluate(&exact).ok()?.mlu;
    Some((exact, mlu))
}

/// Threads for a problem of `demands` demands: every core (at most 16),
/// but below a few thousand demands a pass is quicker than starting
/// threads for it.
fn worker_threads(demands: usize) -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 16)
        .min(demands / 4096 + 1)
}

/// `work` on each of `items`, each on a thread of its own (one item runs on
/// the calling thread); the results in the items' order.
fn each_on_a_thread<I: Send, T: Send>(items: Vec<I>, work: impl Fn(I) -> T + Sync) -> Vec<T> {
    if items.len() <= 1 {
        return items.into_iter().map(work).collect();
    }
    let work = &work;
    std::thread::scope(|scope| {
        let workers: Vec<_> = items
            .into_iter()
            .map(|item| scope.spawn(move || work(item)))
            .collect();
        workers
            .into_iter()
            .map(|worker| match worker.join() {
                Ok(result) => result,
                // `work` indexes only within the flattened problem it was
                // built from; a panic there is a bug, and passing it on is
                // the honest report of it.
                Err(panic) => std::panic::resume_unwind(panic),
            })
            .collect()
    })
}

/// The utilisation of every edge from the chunks' loads, summed in chunk
/// order.
fn merge_utilisation(partial_loads: &[Vec<f64>], capacity: &[f64], util: &mut [f64]) {
    util.iter_mut().for_each(|u| *u = 0.0);
    for loads in partial_loads {
        for (u, l) in util.iter_mut().zip(loads) {
            *u += l;
        }
    }
    for (u, c) in util.iter_mut().zip(capacity) {
        *u /= c;
    }
}

/// Whether `allocation` has a split for every demand of `problem`, with
/// one finite, non-negative share per candidate path (a warm start from
/// another problem's plan is ignored).
fn fits(problem: &Problem, allocation: &Allocation) -> bool {
    allocation.splits.len() == problem.demands.len()
        && allocation
            .splits
            .iter()
            .zip(&problem.demands)
            .all(|(split, demand)| {
                split.len() == demand.paths.len()
                    && split.iter().all(|s| s.is_finite() && *s >= 0.0)
                    && (split.is_empty() || split.iter().sum::<f64>() > 0.0)
            })
}

/// Raises `bound` (with its `prices`) by the dual restricted to the edges
/// `util` loads near `mlu`: within each of `slacks` (relative) in turn,
/// until `mlu` is within `enough` (relative) of the bound.
///
/// The softmax prices are a coarse dual; the dual restricted to the edges
/// a near-optimal allocation loads to its maximum is a sharp one. A wider
/// set of edges gives a bound at least as good (the exact optimum once it
/// holds the optimum's bottleneck) but a larger LP, so the set grows only
/// while the gap is open and widening still helps.
fn sharpen_bound(
    problem: &Problem,
    util: &[f64],
    mlu: f64,
    slacks: &[f64],
    enough: f64,
    bound: &mut f64,
    prices: &mut Vec<f64>,
) {
    let mut previous = 0.0;
    for &slack in slacks {
        if mlu <= (1.0 + enough) * *bound {
            return;
        }
        // The most loaded edges first, so that a cap on their number keeps
        // the ones that matter.
        let mut tight: Vec<usize> = (0..util.len())
            .filter(|&e| util[e] >= (1.0 - slack) * mlu)
            .collect();
        tight.sort_by(|&a, &b| util[b].total_cmp(&util[a]));
        let Ok((sharper, sharper_prices)) =
            crate::lp::tight_edge_dual_bound(problem, &tight, Some(60.0))
        else {
            return;
        };
        if sharper > *bound {
            *bound = sharper;
            *prices = sharper_prices;
        }
        // Widening gained nothing (below a millionth is the LP's
        // tolerance): a still wider set is not worth its LP, unless that
        // LP is small anyway (a gain can hide behind a plateau: on GEANT
        // the sets of 6 and 10 edges give one bound, 21 edges the optimum).
        if sharper <= previous * (1.0 + 1e-6) && tight.len() > CHEAP_TIGHT_EDGES {
            return;
        }
        previous = sharper;
    }
}

/// The lower bound `prices` (per unit of load, one per edge) certify, as
/// a step's softmax prices do: scaled so that `sum_e c_e y_e = 1`, the sum
/// over demands of the rate times the cheapest path's price (weak
/// duality: any such prices give a bound). Returns the bound and the
/// scaled prices; `None` when they do not fit the network (wrong length,
/// negative or not finite, or all zero on every edge with capacity).
/// `demand_chunks` as the steps cut them, `chunk` demands each.
fn bound_from_prices(
    flat: &Flat,
    prices: &[f64],
    demand_chunks: &[&[(usize, usize)]],
    chunk: usize,
) -> Option<(f64, Vec<f64>)> {
    if prices.len() != flat.capacity.len() || prices.iter().any(|y| !(y.is_finite() && *y >= 0.0)) {
        return None;
    }
    let scale: f64 = flat.capacity.iter().zip(prices).map(|(c, y)| c * y).sum();
    if !(scale.is_finite() && scale > 0.0) {
        return None;
    }
    let prices: Vec<f64> = prices.iter().map(|y| y / scale).collect();
    let sums = each_on_a_thread(
        demand_chunks.iter().enumerate().collect(),
        |(c, demands)| {
            let mut sum = 0.0;
            for (i, &(first, last)) in demands.iter().enumerate() {
                let cheapest = (first..last)
                    .map(|p| path_cost(flat.path_edges(p), &prices))
                    .fold(f64::INFINITY, f64::min);
                // A demand with no path adds nothing: the sum stays a bound.
                if cheapest.is_finite() {
                    sum += flat.rate[c * chunk + i] * cheapest;
                }
            }
            sum
        },
    );
    Some((sums.iter().sum(), prices))
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

/// How one step treats a chunk.
#[derive(Clone, Copy)]
struct StepRule {
    /// Step size after annealing.
    step: f64,
    /// A demand whose every path costs less than this is left as it is:
    /// its paths only cross edges whose price is negligible next to the
    /// dearest edge's, so moving it cannot change the maximum.
    negligible: f64,
    /// Recompute the chunk's loads from zero (otherwise only the demands
    /// that moved add their change): bounds the rounding drift of the
    /// incremental update.
    full: bool,
}

/// One multiplicative step for a chunk of demands, from the `current`
/// shares (the whole problem's) into the chunk's `shares`; keeps the chunk's
/// loads (bit/s) in `loads` up to date and returns the chunk's part of the
/// lower bound, `sum_d rate_d * min_p price(p)` under the step's prices.
fn update_chunk(
    flat: &Flat,
    weight: &[f64],
    work: &Chunk<'_>,
    current: &[f64],
    shares: &mut [f64],
    loads: &mut [f64],
    rule: StepRule,
) -> f64 {
    if rule.full {
        loads.iter_mut().for_each(|l| *l = 0.0);
    }
    let mut bound = 0.0;
    let mut costs: Vec<f64> = Vec::new();
    let offset = work.offset;
    for (i, &(first, last)) in work.demands.iter().enumerate() {
        let rate = flat.rate[work.first_demand + i];
        let local = (first - offset)..(last - offset);
        let before = &current[first..last];
        costs.clear();
        costs.extend((first..last).map(|p| path_cost(flat.path_edges(p), weight)));
        bound += rate * costs.iter().copied().fold(f64::INFINITY, f64::min);
        let dearest = costs.iter().copied().fold(0.0, f64::max);
        let moves = last - first >= 2 && dearest >= rule.negligible;
        shares[local.clone()].copy_from_slice(before);
        if moves {
            // The demand's average path cost under its current split.
            let average: f64 = before.iter().zip(&costs).map(|(s, c)| s * c).sum();
            if average > 0.0 {
                let mut sum = 0.0;
                for (share, cost) in shares[local.clone()].iter_mut().zip(&costs) {
                    let relative = cost / average - 1.0;
                    *share *= step_factor(-rule.step * relative.clamp(-4.0, 4.0));
                    // Keep a trickle on every path so it can come back.
                    *share = share.max(1e-12);
                    sum += *share;
                }
                for share in &mut shares[local.clone()] {
                    *share /= sum;
                }
            }
        }
        if rule.full {
            for (p, share) in (first..last).zip(&shares[local]) {
                let flow = rate * share;
                for &e in flat.path_edges(p) {
                    loads[e as usize] += flow;
                }
            }
        } else if moves {
            for ((p, share), old) in (first..last).zip(&shares[local]).zip(before) {
                let change = rate * (share - old);
                if change != 0.0 {
                    for &e in flat.path_edges(p) {
                        loads[e as usize] += change;
                    }
                }
            }
        }
    }
    bound
}

/// The sum of `weight` over a path's edges, in four independent sums: one
/// running sum waits on each add before the next, four let them overlap
/// (paths on Kdl are 20 and more edges long).
fn path_cost(edges: &[u32], weight: &[f64]) -> f64 {
    let mut sums = [0.0f64; 4];
    let mut quads = edges.chunks_exact(4);
    for quad in &mut quads {
        sums[0] += weight[quad[0] as usize];
        sums[1] += weight[quad[1] as usize];
        sums[2] += weight[quad[2] as usize];
        sums[3] += weight[quad[3] as usize];
    }
    for &e in quads.remainder() {
        sums[0] += weight[e as usize];
    }
    (sums[0] + sums[1]) + (sums[2] + sums[3])
}

/// `exp(x)`, by its Taylor polynomial where that is exact to 3e-7 (|x| <
/// 0.05, most steps once the split has settled) and libm's exp elsewhere:
/// exp is the dearest part of a step on networks with short paths.
fn step_factor(x: f64) -> f64 {
    if x.abs() < 0.05 {
        1.0 + x * (1.0 + x * (0.5 + x * (1.0 / 6.0)))
    } else {
        x.exp()
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

    #[test]
    fn a_loose_gap_tolerance_stops_at_the_first_check() {
        // Many pairs on a ring so that a step is not trivially optimal.
        let n = 12;
        let links: Vec<(usize, usize, f64)> = (0..n)
            .map(|i| (i, (i + 1) % n, 10.0 + i as f64))
            .chain((0..n / 2).map(|i| (i, i + n / 2, 5.0)))
            .collect();
        let network = crate::lp::tests::network(n, &links);
        let entries: Vec<(usize, usize, f64)> = (0..n)
            .flat_map(|s| (0..n).filter(move |&t| t != s).map(move |t| (s, t, 1.0)))
            .collect();
        let matrix = crate::lp::tests::matrix(n, &entries);
        let problem = Problem::with_k_paths(network, &matrix, &PathOptions::k_shortest(3)).unwrap();
        let options = FastOptions {
            iterations: 400,
            gap_tolerance: 0.5,
            ..FastOptions::default()
        };
        let solution = solve_fast(&problem, &options);
        assert!(
            solution.iterations <= CHECK_EVERY,
            "{}",
            solution.iterations
        );
        assert!(solution.mlu <= 1.5 * solution.lower_bound);
        let (_, optimum) = crate::lp::path_lp(&problem, None).unwrap();
        assert!(solution.lower_bound <= optimum * (1.0 + 1e-7));
        // Without a tolerance every step runs.
        let full = solve_fast(
            &problem,
            &FastOptions {
                iterations: 120,
                gap_tolerance: 0.0,
                ..FastOptions::default()
            },
        );
        assert_eq!(full.iterations, 120);
    }

    /// Every pair of a 6x6 grid over 4 paths, seeded rates; the fast
    /// solver's plan of them, then every rate changed by up to 10%.
    fn changed_grid(seed: u64) -> (Problem, FastSolution) {
        let side = 6;
        let links = crate::lp::tests::grid_links(side);
        let n = side * side;
        let network = crate::lp::tests::network(n, &links);
        let mut next = crate::lp::tests::uniform(seed);
        let entries: Vec<(usize, usize, f64)> = (0..n)
            .flat_map(|s| (0..n).filter(move |&t| t != s).map(move |t| (s, t)))
            .map(|(s, t)| (s, t, 0.05 + next()))
            .collect();
        let matrix = crate::lp::tests::matrix(n, &entries);
        let mut problem =
            Problem::with_k_paths(network, &matrix, &PathOptions::k_shortest(4)).unwrap();
        let before = solve_fast(&problem, &FastOptions::default());
        for demand in &mut problem.demands {
            demand.rate *= 0.9 + 0.2 * next();
        }
        (problem, before)
    }

    /// After every demand changed by up to 10%, a solve warm-started from
    /// the plan before is as good as a cold one (within the tolerance,
    /// proven by its own bound) in fewer steps.
    #[test]
    fn a_warm_start_after_a_small_change_takes_fewer_steps_for_the_same_quality() {
        let (problem, before) = changed_grid(7);
        let options = FastOptions::default();
        let cold = solve_fast(&problem, &options);
        let warm = solve_fast(
            &problem,
            &FastOptions {
                warm_start: Some(before.allocation.clone()),
                ..options.clone()
            },
        );
        let bound = cold.lower_bound.max(warm.lower_bound);
        for (name, solution) in [("cold", &cold), ("warm", &warm)] {
            assert!(
                solution.mlu <= (1.0 + options.gap_tolerance) * bound,
                "{name}: {} against the bound {bound}",
                solution.mlu
            );
        }
        assert!(
            warm.iterations * 2 <= cold.iterations,
            "warm {} steps, cold {}",
            warm.iterations,
            cold.iterations
        );
        // A plan for other demands is no warm start.
        let other = Allocation {
            splits: vec![vec![1.0]; 3],
        };
        let ignored = solve_fast(
            &problem,
            &FastOptions {
                warm_start: Some(other),
                ..options
            },
        );
        assert_eq!(ignored.iterations, cold.iterations);
    }

    /// The last plan's prices: their bound is a bound on the changed
    /// problem too (never above its optimum), the warm start keeps its
    /// quality with them, and prices that do not fit are ignored.
    #[test]
    fn the_last_plans_prices_bound_a_warm_start_and_bad_ones_are_ignored() {
        let (problem, before) = changed_grid(11);
        let options = FastOptions::default();
        let (_, optimum) = crate::lp::path_lp(&problem, None).unwrap();
        let flat = Flat::new(&problem).expect("flattens");
        let chunks: Vec<&[(usize, usize)]> = flat.demand_paths.chunks(7).collect();
        let (bound, scaled) =
            bound_from_prices(&flat, &before.prices, &chunks, 7).expect("they fit");
        assert!(
            bound > 0.0 && bound <= optimum * (1.0 + 1e-9),
            "{bound} {optimum}"
        );
        // The scaled prices are the ones the LP module prices with too.
        let again = crate::lp::price_bound(&problem, &scaled);
        assert!((again - bound).abs() <= 1e-9 * bound, "{again} {bound}");
        let warm = |prices: Option<Vec<f64>>| {
            solve_fast(
                &problem,
                &FastOptions {
                    warm_start: Some(before.allocation.clone()),
                    warm_prices: prices,
                    ..options.clone()
                },
            )
        };
        let with_prices = warm(Some(before.prices.clone()));
        assert!(with_prices.lower_bound <= optimum * (1.0 + 1e-9));
        assert!(
            with_prices.mlu <= (1.0 + options.gap_tolerance) * with_prices.lower_bound,
            "{} against {}",
            with_prices.mlu,
            with_prices.lower_bound
        );
        let without = warm(None);
        let edges = problem.network.edges.len();
        for bad in [
            vec![1.0; edges + 1],
            vec![0.0; edges],
            vec![-1.0; edges],
            vec![f64::NAN; edges],
        ] {
            assert!(bound_from_prices(&flat, &bad, &chunks, 7).is_none());
            assert_eq!(warm(Some(bad)), without);
        }
        // Without a warm start they are not used.
        let cold = solve_fast(&problem, &options);
        let cold_with = solve_fast(
            &problem,
            &FastOptions {
                warm_prices: Some(before.prices.clone()),
                ..options.clone()
            },
        );
        assert_eq!(cold, cold_with);
    }

    /// Steps cut short leave the gap open; the restricted LP then finishes
    /// at the optimum over all the candidate paths, and only when allowed.
    #[test]
    fn an_open_gap_is_finished_exactly_by_the_restricted_lp() {
        let side = 5;
        let links = crate::lp::tests::grid_links(side);
        let n = side * side;
        let network = crate::lp::tests::network(n, &links);
        let entries: Vec<(usize, usize, f64)> = (0..n)
            .flat_map(|s| (0..n).filter(move |&t| t != s).map(move |t| (s, t)))
            .map(|(s, t)| (s, t, 0.1 + ((s * 7 + t * 3) % 11) as f64 / 10.0))
            .collect();
        let matrix = crate::lp::tests::matrix(n, &entries);
        let problem = Problem::with_k_paths(network, &matrix, &PathOptions::k_shortest(4)).unwrap();
        let (_, optimum) = crate::lp::path_lp(&problem, None).unwrap();
        let short = FastOptions {
            iterations: 3,
            ..FastOptions::default()
        };
        let steps_only = solve_fast(
            &problem,
            &FastOptions {
                exact_finish_max_shares: 0,
                ..short.clone()
            },
        );
        assert!(!steps_only.finished_exactly);
        assert!(
            steps_only.mlu > optimum * 1.01,
            "three steps reached {} against the optimum {optimum}",
            steps_only.mlu
        );
        let finished = solve_fast(&problem, &short);
        assert!(finished.finished_exactly);
        assert!(
            (finished.mlu / optimum - 1.0).abs() < 1e-6,
            "{} against the optimum {optimum}",
            finished.mlu
        );
        assert_eq!(
            problem.evaluate(&finished.allocation).unwrap().mlu,
            finished.mlu
        );
        assert!(finished.lower_bound <= optimum * (1.0 + 1e-9));
    }

    #[test]
    fn step_factor_is_exp() {
        for i in -400..=400 {
            let x = f64::from(i) / 100.0;
            let relative = (step_factor(x) / x.exp() - 1.0).abs();
            assert!(relative < 3e-7, "{x}: {relative}");
        }
    }

    #[test]
    fn path_cost_sums_every_edge() {
        let weight: Vec<f64> = (0..10).map(|i| f64::from(i) * 1.5).collect();
        for len in 0..10u32 {
            let edges: Vec<u32> = (0..len).collect();
            let expected: f64 = edges.iter().map(|&e| weight[e as usize]).sum();
            assert!((path_cost(&edges, &weight) - expected).abs() < 1e-12);
        }
    }
    use crate::lp::tests::known_optima;
    use crate::paths::PathOptions;

    #[test]
    fn a_path_over_an_edge_the_network_lacks_is_no_plan_and_no_panic() {
        let (network, matrix, k, _) = known_optima().remove(0);
        let mut problem =
            Problem::with_k_paths(network, &matrix, &PathOptions::k_shortest(k)).unwrap();
        let missing = problem.network.edges.len();
        problem.demands[0].paths[0].push(missing);
        let solution = solve_fast(&problem, &FastOptions::default());
        assert_eq!(solution.lower_bound, 0.0, "no claim about the optimum");
        assert_eq!(solution.iterations, 0);
        assert_eq!(solution.allocation, problem.even_split());
    }

    #[test]
    fn fast_is_close_to_hand_optima_and_never_below() {
        for (network, matrix, k, optimum) in known_optima() {
            let problem =
                Problem::with_k_paths(network, &matrix, &PathOptions::k_shortest(k)).unwrap();
            let solution = solve_fast(&problem, &FastOptions::default());
            let mlu = solution.mlu;
            assert_eq!(problem.evaluate(&solution.allocation).unwrap().mlu, mlu);
            assert!(mlu >= optimum - 1e-9, "{mlu} below the optimum {optimum}");
            assert!(mlu <= optimum * 1.01, "{mlu} vs {optimum}");
            // The bound is a bound, and a useful one.
            let bound = solution.lower_bound;
            assert!(bound <= optimum * (1.0 + 1e-9), "{bound} above {optimum}");
            assert!(bound >= optimum * 0.9, "{bound} far below {optimum}");
        }
    }
}
