//! Candidate paths on demand (column generation): every pair starts with
//! its one shortest path, and paths are added only where the solver's link
//! prices ask for them.
//!
//! Computing K paths for every pair up front (Yen's algorithm) is most of
//! the time to a first plan on large networks (tens of seconds on Kdl,
//! minutes on ASN2k), and most of those paths carry nothing. Here a round
//! is: solve over the paths so far (the fast solver, warm-started from the
//! round before), then price: one shortest-path tree per source under the
//! solver's link prices. A pair whose cheapest path under those prices is
//! cheaper than every path it has gets that path. The same trees give a
//! lower bound on the MLU of any routing over any paths (weak duality, as
//! in [`crate::lp::price_bound`], but with the minimum over all paths, not
//! only the candidates): the rounds stop once the plan is within the
//! tolerance of it, or no pair asks for a path.
//!
//! Ties are broken as everywhere in the planner: by the routing weight,
//! then by the lower-numbered previous node, so the same problem always
//! gets the same paths.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::time::Instant;

use crate::allocation::{Allocation, AllocationError, Problem};
use crate::fast::{FastOptions, FastSolution, solve_fast};
use crate::network::{Edge, Network};

/// A price below this fraction of the dearest edge's counts as zero when
/// pricing: the softmax prices of lightly loaded edges are tiny but not
/// zero, and a path found through them is not cheaper in any sense that
/// matters (lowering prices keeps the bound valid).
const NEGLIGIBLE_PRICE: f64 = 1e-9;

/// A pair asks for a new path only when it is cheaper than its cheapest
/// path by more than this, relatively: a path that saves little is a path
/// every later round carries for little.
const IMPROVEMENT: f64 = 0.05;

/// The same under the solver's own prices, where any saving beyond
/// rounding noise is one the restricted problem cannot find.
const DUAL_IMPROVEMENT: f64 = 1e-6;

/// The share of its demand a new path starts with in the next round's warm
/// start: the multiplicative steps move flow in proportion to what is
/// there, so a path started at nothing would need tens of steps to matter.
const NEW_PATH_SHARE: f64 = 0.25;

/// A round solves to this fraction of the gap over all paths left after
/// the round before, and never looser than [`MAX_ROUND_TOLERANCE`].
const ROUND_TOLERANCE: f64 = 0.25;
const MAX_ROUND_TOLERANCE: f64 = 0.05;

/// Width of the softmax that prices links for choosing new paths, relative
/// to the MLU.
const SELECT_WIDTH: f64 = 0.1;

/// Tuning of the rounds.
#[derive(Debug, Clone, PartialEq)]
pub struct OnDemandOptions {
    /// The fast solver's options for every round (its warm start is set
    /// by the rounds).
    pub fast: FastOptions,
    /// Most paths one pair may get.
    pub max_paths: usize,
    /// Most rounds of solving and pricing.
    pub rounds: usize,
    /// Stop once the MLU is within this factor of the bound over all
    /// paths (0.01 is 1%).
    pub gap_tolerance: f64,
}

impl Default for OnDemandOptions {
    fn default() -> Self {
        OnDemandOptions {
            fast: FastOptions::default(),
            max_paths: 8,
            rounds: 20,
            gap_tolerance: 0.01,
        }
    }
}

/// What the rounds found.
#[derive(Debug, Clone, PartialEq)]
pub struct OnDemandSolution {
    /// The demands with the paths they were given.
    pub problem: Problem,
    /// The best allocation over those paths, its MLU, and the fast
    /// solver's figures of the round that found it.
    pub solution: FastSolution,
    /// No routing over any paths has a lower MLU than this.
    pub lower_bound: f64,
    /// Rounds solved.
    pub rounds: usize,
    /// Paths in all at the end.
    pub paths: usize,
    /// The paths the last pricing asked for (demand index, path) when the
    /// rounds ran out short of the tolerance: where a later solve of the
    /// same demands may start ([`add_paths`]).
    pub asked: Vec<(usize, Vec<usize>)>,
    /// Time for the first paths (one shortest-path tree per source).
    pub first_paths_s: f64,
    /// Time spent pricing (and adding paths) over all rounds.
    pub pricing_s: f64,
    /// Time spent in the fast solver over all rounds.
    pub solving_s: f64,
}

/// Plans `pairs` (source, destination, rate) on `network` with paths
/// added on demand. Fails when a pair has no path at all.
pub fn solve_on_demand(
    network: Network,
    pairs: &[(usize, usize, f64)],
    options: &OnDemandOptions,
) -> Result<OnDemandSolution, AllocationError> {
    let started = Instant::now();
    let problem = first_paths(network, pairs)?;
    let first_paths_s = started.elapsed().as_secs_f64();
    let mut solved = improve(problem, None, options);
    solved.first_paths_s = first_paths_s;
    Ok(solved)
}

/// Rounds of solving and pricing from `problem`'s paths, warm-started
/// from `warm` when it fits them (a plan of the same problem before a
/// change, see [`after_link_failure`]).
pub fn improve(
    problem: Problem,
    warm: Option<Allocation>,
    options: &OnDemandOptions,
) -> OnDemandSolution {
    improve_growing(problem, warm, options, &[])
}

/// [`improve`], where only the demands not marked in `fixed` (one flag per
/// demand; missing flags are not fixed) are given paths: a pinned demand,
/// or one whose paths were chosen within a latency bound, keeps the paths
/// it has. The bound over all paths then counts a fixed demand at the
/// price of its own cheapest path, which is still a bound on any routing
/// that keeps it to them.
pub fn improve_growing(
    mut problem: Problem,
    mut warm: Option<Allocation>,
    options: &OnDemandOptions,
    fixed: &[bool],
) -> OnDemandSolution {
    let mut pricing_s = 0.0;
    let mut solving_s = 0.0;
    let mut best: Option<FastSolution> = None;
    let mut asked = Vec::new();
    let mut lower_bound = 0.0f64;
    let mut rounds = 0;
    // The prices of the plan the warm start came from, then each round's.
    let mut warm_prices = options.fast.warm_prices.clone();
    while rounds < options.rounds.max(1) {
        rounds += 1;
        let started = Instant::now();
        // The paths are still changing: solving this round's restricted
        // problem far tighter than the gap over all paths is wasted work.
        let gap_all_paths = best
            .as_ref()
            .map_or(f64::INFINITY, |b| b.mlu / lower_bound - 1.0);
        // The last round's plan is the one kept: solved to the solver's
        // own tolerance.
        let round_tolerance = if rounds >= options.rounds {
            0.0
        } else {
            (ROUND_TOLERANCE * gap_all_paths).min(MAX_ROUND_TOLERANCE)
        };
        let fast = FastOptions {
            warm_start: warm.take(),
            warm_prices: warm_prices.take(),
            gap_tolerance: options.fast.gap_tolerance.max(round_tolerance),
            ..options.fast.clone()
        };
        let solution = solve_fast(&problem, &fast);
        warm_prices = Some(solution.prices.clone());
        solving_s += started.elapsed().as_secs_f64();
        if best.as_ref().is_none_or(|b| solution.mlu < b.mlu) {
            best = Some(solution.clone());
        }
        let started = Instant::now();
        let select = selection_prices(&problem, &solution.allocation);
        let priced = price(
            &problem,
            &select,
            &solution.prices,
            options.max_paths,
            fixed,
        );
        lower_bound = lower_bound.max(priced.bound);
        let best_mlu = best.as_ref().map_or(f64::INFINITY, |b| b.mlu);
        let within = best_mlu <= (1.0 + options.gap_tolerance) * lower_bound;
        if within || priced.new_paths.is_empty() || rounds >= options.rounds {
            if !within && rounds >= options.rounds {
                // The rounds ran out: what the last pricing asked for is
                // where a later solve may go on, in place of the paths
                // that carry nothing (a pair at its most paths asks for
                // none).
                let mut current = solution.allocation;
                if let Some(best) = best.as_mut() {
                    drop_unused_paths(&mut problem, &mut current, &mut best.allocation, fixed);
                }
                asked = priced.new_paths;
            }
            pricing_s += started.elapsed().as_secs_f64();
            break;
        }
        let mut next = solution.allocation;
        if let Some(best) = best.as_mut() {
            drop_unused_paths(&mut problem, &mut next, &mut best.allocation, fixed);
            for (d, _) in &priced.new_paths {
                best.allocation.splits[*d].push(0.0);
            }
        }
        add_paths(&mut problem, &mut next, priced.new_paths);
        warm = Some(next);
        pricing_s += started.elapsed().as_secs_f64();
    }
    let mut solution = best.unwrap_or_else(|| solve_fast(&problem, &options.fast));
    // The bound over all paths is a bound over these paths too.
    solution.lower_bound = solution.lower_bound.max(lower_bound).min(solution.mlu);
    let paths = problem.demands.iter().map(|d| d.paths.len()).sum();
    OnDemandSolution {
        problem,
        solution,
        lower_bound,
        rounds,
        paths,
        asked,
        first_paths_s: 0.0,
        pricing_s,
        solving_s,
    }
}

/// Gives each demand of `asked` (index into `problem`'s demands, path)
/// its new path, and in `split` (an allocation over `problem`'s paths) a
/// share of its demand to start with, the others' scaled down.
pub fn add_paths(problem: &mut Problem, split: &mut Allocation, asked: Vec<(usize, Vec<usize>)>) {
    for (d, path) in asked {
        if let (Some(demand), Some(shares)) = (problem.demands.get_mut(d), split.splits.get_mut(d))
        {
            add_path(&mut demand.paths, shares, path);
        }
    }
}

/// [`add_paths`] for one demand's `paths` and their `shares`.
pub fn add_path(paths: &mut Vec<Vec<usize>>, shares: &mut Vec<f64>, path: Vec<usize>) {
    for share in shares.iter_mut() {
        *share *= 1.0 - NEW_PATH_SHARE;
    }
    shares.push(NEW_PATH_SHARE);
    paths.push(path);
}

/// One flag per edge of `network`: set for `edge` and the edges between
/// the same two nodes in either direction (a link fails both ways).
pub fn link_of(network: &Network, edge: usize) -> Vec<bool> {
    let Some(link) = network.edges.get(edge) else {
        return vec![false; network.edges.len()];
    };
    let (a, b) = (link.src, link.dst);
    network
        .edges
        .iter()
        .map(|e| (e.src, e.dst) == (a, b) || (e.src, e.dst) == (b, a))
        .collect()
}

/// After the edges marked in `failed` (one flag per edge of `problem`'s
/// network) went down: removes them from the network, drops the paths
/// that crossed them (their shares in `allocation` go to the pair's other
/// paths), and gives each pair left with no path its shortest path on
/// what remains, one tree per such pair's source. Returns how many pairs
/// got a new path. Fails, changing nothing, when a pair has no path left
/// at all.
pub fn after_link_failure(
    problem: &mut Problem,
    allocation: &mut Allocation,
    failed: &[bool],
) -> Result<usize, AllocationError> {
    let old_edges = &problem.network.edges;
    let mut renumbered = vec![usize::MAX; old_edges.len()];
    let mut network = Network {
        name: problem.network.name.clone(),
        nodes: problem.network.nodes.clone(),
        edges: Vec::with_capacity(old_edges.len()),
    };
    for (e, edge) in old_edges.iter().enumerate() {
        if !failed.get(e).copied().unwrap_or(false) {
            renumbered[e] = network.edges.len();
            network.edges.push(edge.clone());
        }
    }
    // Pairs all of whose paths crossed a failed edge, and their new paths.
    let stranded: Vec<(usize, usize)> = problem
        .demands
        .iter()
        .enumerate()
        .filter(|(_, d)| {
            d.paths.iter().all(|p| {
                p.iter()
                    .any(|&e| renumbered.get(e).is_none_or(|&n| n == usize::MAX))
            })
        })
        .map(|(d, demand)| (d, demand.dst))
        .collect();
    let stranded_pairs: Vec<(usize, usize, f64)> = stranded
        .iter()
        .map(|&(d, dst)| (problem.demands[d].src, dst, problem.demands[d].rate))
        .collect();
    let replacements = first_paths(network, &stranded_pairs)?;
    let mut replacement = replacements.demands.into_iter();
    let mut next_stranded = stranded.iter().map(|&(d, _)| d).peekable();
    for (d, demand) in problem.demands.iter_mut().enumerate() {
        let split = allocation.splits.get_mut(d);
        if next_stranded.peek() == Some(&d) {
            next_stranded.next();
            demand.paths = replacement.next().map(|r| r.paths).unwrap_or_default();
            if let Some(split) = split {
                *split = vec![1.0; demand.paths.len()];
            }
            continue;
        }
        let keep: Vec<bool> = demand
            .paths
            .iter()
            .map(|p| {
                p.iter()
                    .all(|&e| renumbered.get(e).is_some_and(|&n| n != usize::MAX))
            })
            .collect();
        retain_marked(&mut demand.paths, &keep);
        for path in &mut demand.paths {
            for e in path.iter_mut() {
                *e = renumbered[*e];
            }
        }
        if let Some(split) = split
            && split.len() == keep.len()
        {
            retain_marked(split, &keep);
            let sum: f64 = split.iter().sum();
            let kept = split.len() as f64;
            for share in split.iter_mut() {
                *share = if sum > 0.0 { *share / sum } else { 1.0 / kept };
            }
        }
    }
    problem.network = replacements.network;
    Ok(stranded.len())
}

/// Drops the paths that carry nothing in `current` nor in `best` (the
/// fast solver rounds shares below a millionth to zero), keeping at least
/// one per pair: a round's cost grows with the paths it holds, and a path
/// priced out once is found again if the prices ask for it.
fn drop_unused_paths(
    problem: &mut Problem,
    current: &mut Allocation,
    best: &mut Allocation,
    fixed: &[bool],
) {
    for (d, demand) in problem.demands.iter_mut().enumerate() {
        if fixed.get(d).copied().unwrap_or(false) {
            continue;
        }
        let (Some(now), Some(then)) = (current.splits.get_mut(d), best.splits.get_mut(d)) else {
            continue;
        };
        if now.len() != demand.paths.len() || then.len() != demand.paths.len() {
            continue;
        }
        let keep: Vec<bool> = now
            .iter()
            .zip(then.iter())
            .map(|(a, b)| *a > 0.0 || *b > 0.0)
            .collect();
        if keep.iter().all(|k| *k) || !keep.iter().any(|k| *k) {
            continue;
        }
        retain_marked(&mut demand.paths, &keep);
        retain_marked(now, &keep);
        retain_marked(then, &keep);
    }
}

/// Keeps the items whose flag in `keep` is set (`keep` has one per item).
fn retain_marked<T>(items: &mut Vec<T>, keep: &[bool]) {
    let mut index = 0;
    items.retain(|_| {
        index += 1;
        keep.get(index - 1).copied().unwrap_or(true)
    });
}

/// Every pair with its shortest path by routing weight.
fn first_paths(
    network: Network,
    pairs: &[(usize, usize, f64)],
) -> Result<Problem, AllocationError> {
    let ends: Vec<(usize, usize)> = pairs.iter().map(|&(src, dst, _)| (src, dst)).collect();
    let paths = shortest_paths(&network, &ends);
    Problem::over_paths(network, pairs, paths)
}

/// Each pair's paths as its shortest path by routing weight alone (none
/// where the destination cannot be reached, or is the source), one tree
/// per source, on every core: the first path of a pair whose paths come
/// on demand.
pub fn shortest_paths(network: &Network, pairs: &[(usize, usize)]) -> Vec<Vec<Vec<usize>>> {
    let zero = vec![0.0; network.edges.len()];
    let sources = by_source(pairs.iter().copied());
    let found = for_each_source(network, &sources, |tree, src, demands| {
        tree.grow(src, &zero);
        demands
            .iter()
            .map(|&d| tree.path_to(pairs[d].1))
            .collect::<Vec<_>>()
    });
    let mut paths: Vec<Vec<Vec<usize>>> = vec![Vec::new(); pairs.len()];
    for ((_, demands), found) in sources.iter().zip(found) {
        for (&d, path) in demands.iter().zip(found) {
            paths[d] = path.into_iter().collect();
        }
    }
    paths
}

/// One pricing pass: the bound over all paths, and the paths pairs ask for.
struct Priced {
    bound: f64,
    new_paths: Vec<(usize, Vec<usize>)>,
}

/// Link prices for choosing paths: a softmax of the utilisation under
/// `allocation` (width [`SELECT_WIDTH`] of its MLU) over capacity. Every
/// loaded edge gets a price graded by how close it is to the maximum, so a
/// new path avoids the busy edges, not only the few the solver's sharpened
/// prices name (those are zero elsewhere, and a path around them alone
/// soon makes the next bottleneck).
fn selection_prices(problem: &Problem, allocation: &Allocation) -> Vec<f64> {
    let Ok(evaluation) = problem.evaluate(allocation) else {
        return Vec::new();
    };
    let edges = &problem.network.edges;
    let mlu = evaluation.mlu;
    if !(mlu > 0.0 && mlu.is_finite()) {
        return Vec::new();
    }
    edges
        .iter()
        .zip(&evaluation.loads)
        .map(|(edge, load)| {
            let utilisation = load / edge.capacity;
            ((utilisation - mlu) / (SELECT_WIDTH * mlu)).exp() / edge.capacity
        })
        .collect()
}

/// Prices every pair: the bound over all paths is the better of the two
/// price vectors' (each at any scale), and pairs ask for the cheapest path
/// under `select` when it beats every path they have (not those marked in
/// `fixed`, which count at their own cheapest path's price).
fn price(
    problem: &Problem,
    select: &[f64],
    certify: &[f64],
    max_paths: usize,
    fixed: &[bool],
) -> Priced {
    let edges = &problem.network.edges;
    let select = usable_prices(select, edges.len());
    let certify = usable_prices(certify, edges.len());
    let scale = |prices: &Option<Vec<f64>>| -> f64 {
        prices.as_ref().map_or(0.0, |prices| {
            edges.iter().zip(prices).map(|(e, y)| e.capacity * y).sum()
        })
    };
    let (select_scale, certify_scale) = (scale(&select), scale(&certify));
    let sources = by_source(problem.demands.iter().map(|d| (d.src, d.dst)));
    let per_source = for_each_source(&problem.network, &sources, |tree, src, demands| {
        let mut new_paths: Vec<(usize, Vec<usize>)> = Vec::new();
        // Per pair of this source, the path the first prices gave it.
        let mut given: Vec<Option<usize>> = vec![None; demands.len()];
        let mut sums = [0.0; 2];
        // The solver's prices are the LP's duals: any path cheaper under
        // them than a pair's paths improves the restricted problem. The
        // softmax prices add the paths around the busy edges they miss,
        // when those save enough.
        for (which, prices, improvement) in
            [(0, &certify, DUAL_IMPROVEMENT), (1, &select, IMPROVEMENT)]
        {
            let Some(prices) = prices else {
                continue;
            };
            tree.grow(src, prices);
            for (i, &d) in demands.iter().enumerate() {
                let demand = &problem.demands[d];
                let Some(cheapest) = tree.price_to(demand.dst) else {
                    continue;
                };
                let held = demand
                    .paths
                    .iter()
                    .map(|p| p.iter().map(|&e| prices[e]).sum::<f64>())
                    .fold(f64::INFINITY, f64::min);
                if fixed.get(d).copied().unwrap_or(false) {
                    let own = if held.is_finite() {
                        held.max(cheapest)
                    } else {
                        cheapest
                    };
                    sums[which] += demand.rate * own;
                    continue;
                }
                sums[which] += demand.rate * cheapest;
                if demand.paths.len() + usize::from(given[i].is_some()) >= max_paths {
                    continue;
                }
                if cheapest < held * (1.0 - improvement)
                    && let Some(path) = tree.path_to(demand.dst)
                    && given[i].is_none_or(|first| new_paths[first].1 != path)
                {
                    given[i] = Some(new_paths.len());
                    new_paths.push((d, path));
                }
            }
        }
        (sums[0], sums[1], new_paths)
    });
    let (mut certified, mut selected) = (0.0, 0.0);
    let mut new_paths = Vec::new();
    for (c, s, paths) in per_source {
        certified += c;
        selected += s;
        new_paths.extend(paths);
    }
    new_paths.sort_by_key(|(d, _)| *d);
    let bound_of = |sum: f64, scale: f64| if scale > 0.0 { sum / scale } else { 0.0 };
    Priced {
        bound: bound_of(certified, certify_scale).max(bound_of(selected, select_scale)),
        new_paths,
    }
}

/// `prices` with negligible ones (below [`NEGLIGIBLE_PRICE`] of the
/// dearest) and negative ones as zero; `None` when there is no positive
/// finite price or not one per edge. Lowering prices keeps a bound valid.
fn usable_prices(prices: &[f64], edges: usize) -> Option<Vec<f64>> {
    let dearest = prices.iter().copied().fold(0.0, f64::max);
    if prices.len() != edges || !(dearest > 0.0 && dearest.is_finite()) {
        return None;
    }
    Some(
        prices
            .iter()
            .map(|&y| {
                if y >= NEGLIGIBLE_PRICE * dearest {
                    y
                } else {
                    0.0
                }
            })
            .collect(),
    )
}

/// The pairs grouped by source: (source, indices of its pairs), sources
/// in increasing order.
fn by_source(pairs: impl Iterator<Item = (usize, usize)>) -> Vec<(usize, Vec<usize>)> {
    let mut sources: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
    for (d, (src, _)) in pairs.enumerate() {
        sources.entry(src).or_default().push(d);
    }
    sources.into_iter().collect()
}

/// `work(tree, source, its pairs)` for every source, on every core (source
/// `i` goes to thread `i` modulo the thread count), results in the order of
/// `sources`.
fn for_each_source<T: Send>(
    network: &Network,
    sources: &[(usize, Vec<usize>)],
    work: impl Fn(&mut Tree<'_>, usize, &[usize]) -> T + Sync,
) -> Vec<T> {
    let out = network.out_edges();
    crate::allocation::in_parallel(
        sources.len(),
        || Tree::new(network, &out),
        |tree, i| work(tree, sources[i].0, &sources[i].1),
    )
}

/// A key compared by price, then by routing weight.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Key {
    price: f64,
    weight: f64,
}

impl Key {
    const UNREACHED: Key = Key {
        price: f64::INFINITY,
        weight: f64::INFINITY,
    };

    fn order(&self, other: &Key) -> Ordering {
        self.price
            .total_cmp(&other.price)
            .then_with(|| self.weight.total_cmp(&other.weight))
    }
}

#[derive(PartialEq)]
struct Queued {
    key: Key,
    node: usize,
}

impl Eq for Queued {}

impl Ord for Queued {
    fn cmp(&self, other: &Self) -> Ordering {
        // Min-heap on the key, then on the node index.
        other
            .key
            .order(&self.key)
            .then_with(|| other.node.cmp(&self.node))
    }
}

impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// A shortest-path tree from one source, by price then routing weight,
/// with its buffers kept between sources.
struct Tree<'a> {
    edges: &'a [Edge],
    out: &'a [Vec<usize>],
    src: usize,
    key: Vec<Key>,
    via: Vec<Option<usize>>,
    heap: BinaryHeap<Queued>,
}

impl<'a> Tree<'a> {
    fn new(network: &'a Network, out: &'a [Vec<usize>]) -> Tree<'a> {
        let n = network.nodes.len();
        Tree {
            edges: &network.edges,
            out,
            src: 0,
            key: vec![Key::UNREACHED; n],
            via: vec![None; n],
            heap: BinaryHeap::new(),
        }
    }

    /// Grows the tree from `src` under `prices` (one per edge).
    fn grow(&mut self, src: usize, prices: &[f64]) {
        self.key.iter_mut().for_each(|k| *k = Key::UNREACHED);
        self.via.iter_mut().for_each(|v| *v = None);
        self.heap.clear();
        self.src = src;
        let Some(start) = self.key.get_mut(src) else {
            return;
        };
        *start = Key {
            price: 0.0,
            weight: 0.0,
        };
        self.heap.push(Queued {
            key: *start,
            node: src,
        });
        while let Some(Queued { key, node }) = self.heap.pop() {
            if key.order(&self.key[node]) == Ordering::Greater {
                continue;
            }
            for &e in &self.out[node] {
                let edge = &self.edges[e];
                let next = Key {
                    price: key.price + prices[e],
                    weight: key.weight + edge.weight,
                };
                let better = match next.order(&self.key[edge.dst]) {
                    Ordering::Less => true,
                    Ordering::Equal => {
                        self.via[edge.dst].is_some_and(|old| self.edges[old].src > edge.src)
                    }
                    Ordering::Greater => false,
                };
                if better && edge.dst != self.src {
                    self.key[edge.dst] = next;
                    self.via[edge.dst] = Some(e);
                    self.heap.push(Queued {
                        key: next,
                        node: edge.dst,
                    });
                }
            }
        }
    }

    /// The price of the tree's path to `dst`, when reached.
    fn price_to(&self, dst: usize) -> Option<f64> {
        self.key.get(dst).map(|k| k.price).filter(|p| p.is_finite())
    }

    /// The tree's path to `dst` as edge indices, when reached.
    fn path_to(&self, dst: usize) -> Option<Vec<usize>> {
        if dst == self.src || !self.key.get(dst)?.price.is_finite() {
            return None;
        }
        let mut edges = Vec::new();
        let mut node = dst;
        while node != self.src {
            let e = self.via[node]?;
            edges.push(e);
            node = self.edges[e].src;
            if edges.len() > self.key.len() {
                return None; // a cycle would mean a bug; never loop forever
            }
        }
        edges.reverse();
        Some(edges)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paths::PathOptions;

    /// A `side` x `side` grid with uneven capacities and a seeded demand
    /// between every two nodes.
    fn grid(side: usize, seed: u64) -> (Network, Vec<(usize, usize, f64)>) {
        let links = crate::lp::tests::grid_links(side);
        let n = side * side;
        let network = crate::lp::tests::network(n, &links);
        let mut next = crate::lp::tests::uniform(seed | 1);
        let pairs = (0..n)
            .flat_map(|s| (0..n).filter(move |&t| t != s).map(move |t| (s, t)))
            .map(|(s, t)| (s, t, 0.05 + next()))
            .collect();
        (network, pairs)
    }

    /// Every demand has a path, and each of its paths is a chain of the
    /// network's edges from its source to its destination.
    fn assert_paths_join(problem: &Problem) {
        let edges = &problem.network.edges;
        for demand in &problem.demands {
            assert!(!demand.paths.is_empty());
            for path in &demand.paths {
                assert_eq!(edges[path[0]].src, demand.src);
                assert_eq!(edges[path[path.len() - 1]].dst, demand.dst);
                assert!(path.windows(2).all(|w| edges[w[0]].dst == edges[w[1]].src));
            }
        }
    }

    /// The paths given on demand reach the optimum over all paths (the
    /// edge LP) within the tolerance, and the bound they report is never
    /// above that optimum; four shortest paths per pair do worse.
    #[test]
    fn paths_on_demand_reach_the_optimum_over_all_paths_with_a_valid_bound() {
        for seed in [3, 11] {
            let (network, pairs) = grid(5, seed);
            let n = network.nodes.len();
            let matrix = crate::lp::tests::matrix(n, &pairs);
            let optimum = crate::lp::edge_lp_lower_bound(&network, &matrix, None).expect("LP");
            let options = OnDemandOptions::default();
            let solved = solve_on_demand(network.clone(), &pairs, &options).expect("solved");
            let mlu = solved
                .problem
                .evaluate(&solved.solution.allocation)
                .expect("evaluates")
                .mlu;
            assert_eq!(mlu, solved.solution.mlu);
            assert!(
                solved.lower_bound <= optimum * (1.0 + 1e-9),
                "seed {seed}: bound {} above the optimum {optimum}",
                solved.lower_bound
            );
            assert!(
                mlu <= optimum * (1.0 + options.gap_tolerance),
                "seed {seed}: MLU {mlu}, optimum {optimum}"
            );
            assert!(
                mlu <= solved.lower_bound * (1.0 + options.gap_tolerance),
                "seed {seed}: the bound does not prove the plan"
            );
            let k_paths =
                Problem::with_k_paths(network, &matrix, &PathOptions::k_shortest(4)).unwrap();
            let k_plan = solve_fast(&k_paths, &FastOptions::default());
            assert!(
                mlu < k_plan.mlu,
                "seed {seed}: on demand {mlu}, four paths {}",
                k_plan.mlu
            );
            assert!(solved.paths < 4 * pairs.len());
            for (demand, &(src, dst, rate)) in solved.problem.demands.iter().zip(&pairs) {
                assert_eq!((demand.src, demand.dst, demand.rate), (src, dst, rate));
                assert!(demand.paths.len() <= options.max_paths);
            }
            assert_paths_join(&solved.problem);
        }
    }

    /// After the busiest link fails, the pairs that used it keep their
    /// other paths or get one around it, and the re-plan from there
    /// reaches the optimum of the failed network.
    #[test]
    fn after_a_link_failure_the_paths_avoid_it_and_the_replan_is_optimal() {
        let (network, pairs) = grid(5, 3);
        let options = OnDemandOptions::default();
        let solved = solve_on_demand(network.clone(), &pairs, &options).expect("solved");
        let loads = solved
            .problem
            .evaluate(&solved.solution.allocation)
            .expect("evaluates")
            .loads;
        let busiest = (0..loads.len())
            .max_by(|&a, &b| loads[a].total_cmp(&loads[b]))
            .expect("edges");
        let failed = link_of(&network, busiest);
        let mut problem = solved.problem.clone();
        let mut allocation = solved.solution.allocation.clone();
        let stranded = after_link_failure(&mut problem, &mut allocation, &failed).expect("paths");
        assert!(stranded > 0, "the busiest link is some pair's only path");
        assert_eq!(problem.network.edges.len(), network.edges.len() - 2);
        assert_paths_join(&problem);
        for (demand, split) in problem.demands.iter().zip(&allocation.splits) {
            assert_eq!(split.len(), demand.paths.len());
            assert!((split.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        }
        let replan = improve(problem, Some(allocation), &options);
        let n = network.nodes.len();
        let matrix = crate::lp::tests::matrix(n, &pairs);
        let optimum =
            crate::lp::edge_lp_lower_bound(&replan.problem.network, &matrix, None).expect("LP");
        assert!(replan.lower_bound <= optimum * (1.0 + 1e-9));
        assert!(
            replan.solution.mlu <= optimum * (1.0 + options.gap_tolerance),
            "re-plan {}, optimum {optimum}",
            replan.solution.mlu
        );
    }

    #[test]
    fn the_same_problem_gets_the_same_paths() {
        let (network, pairs) = grid(4, 5);
        let options = OnDemandOptions::default();
        let first = solve_on_demand(network.clone(), &pairs, &options).expect("solved");
        let second = solve_on_demand(network, &pairs, &options).expect("solved");
        assert_eq!(first.problem, second.problem);
        assert_eq!(first.solution.allocation, second.solution.allocation);
    }

    #[test]
    fn a_pair_with_no_path_is_named() {
        // Node 2 has no link at all.
        let network = crate::lp::tests::network(3, &[(0, 1, 10.0)]);
        let error = solve_on_demand(network, &[(0, 2, 1.0)], &OnDemandOptions::default())
            .expect_err("no path");
        assert_eq!(error.to_string(), "demand 0->2 has no candidate path");
    }
}
