//! Traffic classes with strict priority: `ai-sync` is placed first (on
//! paths within its latency bound), `ai-bulk` next on what capacity is left,
//! `best-effort` last. Each class is solved on the capacity the classes
//! before it left, so a lower class can never push a higher one around.

use std::collections::BTreeMap;

use crate::allocation::{Allocation, Demand, Problem};
use crate::fast::{FastOptions, solve_fast};
use crate::lp::ScenarioObjective;
use crate::network::Network;
use crate::on_demand::{OnDemandOptions, improve_growing};
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

    /// A class whose traffic is promised its rate (collectives, and
    /// transfers with deadlines): it is never planned above what the
    /// links have left for it, and is admitted in part when it does not
    /// fit. Best-effort absorbs what is left, and may oversubscribe.
    pub fn is_guaranteed(self) -> bool {
        matches!(self, Class::AiSync | Class::AiBulk)
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
    /// The class did not fit within its latency bound and was placed over
    /// all candidate paths.
    pub spilled: bool,
    /// The share of each placed demand's rate that is planned: 1 when the
    /// class fits; for a guaranteed class that does not, 1 / residual MLU,
    /// so that its loads stay within what the links have left (admitted in
    /// part, the rest reported in `satisfaction`); best-effort is planned
    /// whole.
    pub admitted: f64,
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

fn shares_of(problem: &Problem) -> usize {
    problem.demands.iter().map(|d| d.paths.len()).sum()
}

/// Whether a class of `shares` path shares over `scenarios` scenarios is
/// planned by the exact LP (see [`solve_class`] and [`robust_allocation`]),
/// with no use for a warm start.
fn uses_exact_lp(shares: usize, scenarios: usize) -> bool {
    shares * scenarios <= EXACT_LP_MAX_SHARES
}

/// The optimum for small problems, the fast solver for large ones (and as
/// the fallback should the LP stop without an answer). The MLU is always
/// the shared evaluator's.
/// Also the fast solver's link prices, for the next plan's warm start
/// (`None` when the LP solved it).
fn solve_class(problem: &Problem, fast: &FastOptions) -> (Allocation, f64, Option<Vec<f64>>) {
    if shares_of(problem) <= EXACT_LP_MAX_SHARES
        && let Ok((allocation, _)) = crate::lp::path_lp(problem, Some(10.0))
        && let Ok(evaluation) = problem.evaluate(&allocation)
    {
        return (allocation, evaluation.mlu, None);
    }
    let solution = solve_fast(problem, fast);
    (solution.allocation, solution.mlu, Some(solution.prices))
}

/// Places the classes in priority order over `k` candidate paths per pair:
/// exactly (LP) when a class is small, with the fast solver when not.
pub fn plan_classes(
    network: &Network,
    demands: &[ClassDemand],
    k: usize,
    fast: &FastOptions,
) -> ClassPlan {
    plan_classes_robust(network, std::slice::from_ref(&demands.to_vec()), 0, k, fast)
}

/// (source, destination, latency bound as bits, k).
type PathKey = (usize, usize, Option<u64>, usize);
/// A path key's latency bound (as bits) and k.
type PathOptionsKey = (Option<u64>, usize);
/// Node count and every edge's ends and weight: what paths depend on.
type NetworkFingerprint = (usize, Vec<(usize, usize, u64)>);

/// Candidate paths a planner already computed, by (source, destination,
/// latency bound, k): a network's paths do not change between plans, so a
/// re-plan on the same topology reuses them (`reused`) instead of running
/// Yen's algorithm again (`computed`).
///
/// A cache belongs to one network. When links are only taken away (a
/// failure, a drain), the paths that used none of them are kept, their
/// edges renumbered (`kept_after_change`), and only the others are
/// computed again (`dropped_after_change`): removing links removes paths
/// and adds none, so the k shortest that survive are still the k
/// shortest. An entry that held fewer than k paths under a latency bound
/// is computed again too (a path past the bound's filter may now be
/// among the first k). Any other change (a node, a link added, a weight)
/// empties the cache.
///
/// The cache also keeps the last plan's split of each class's demands
/// over their paths: a re-plan on the same network starts the fast solver
/// from it (a warm start, `warm_starts` counts them), which after a small
/// change in the traffic is within tolerance in a few steps instead of a
/// cold solve's hundreds. Any change of the network forgets the splits.
///
/// A class with at least [`Self::on_demand_from`] demands free to take
/// any path (not pinned, no latency bound) takes its paths on demand
/// instead ([`crate::on_demand`]): each pair starts with its shortest
/// path, and every plan adds the paths the solver's prices ask for, a few
/// rounds at a time ([`ON_DEMAND_ROUNDS_PER_PLAN`]). The cache keeps the
/// paths each such pair has grown (key `k` 0), so later plans go on from
/// them; after links are taken away a pair keeps the paths that avoid
/// them and, left with none, starts again from its shortest path. Yen's
/// K paths for hundreds of thousands of pairs take minutes (the whole of
/// Kdl's 568,000 pairs: 18 s on two cores; ASN2k's three million: three
/// minutes), far past the telemetry interval a re-plan must fit in.
#[derive(Debug, Clone)]
pub struct PathCache {
    paths: std::collections::HashMap<PathKey, Vec<Vec<usize>>>,
    network: Option<NetworkFingerprint>,
    splits: std::collections::HashMap<SplitKey, Vec<f64>>,
    /// Per class, the fast solver's link prices of the last plan: with
    /// the split, they start the next plan's bound.
    prices: std::collections::HashMap<Class, Vec<f64>>,
    /// Demands free to take any path from which a class's paths come on
    /// demand ([`ON_DEMAND_MIN_DEMANDS`] unless set; `usize::MAX` never).
    pub on_demand_from: usize,
    pub computed: usize,
    pub reused: usize,
    pub kept_after_change: usize,
    pub dropped_after_change: usize,
    pub warm_starts: usize,
}

impl Default for PathCache {
    fn default() -> Self {
        PathCache {
            paths: Default::default(),
            network: None,
            splits: Default::default(),
            prices: Default::default(),
            on_demand_from: ON_DEMAND_MIN_DEMANDS,
            computed: 0,
            reused: 0,
            kept_after_change: 0,
            dropped_after_change: 0,
            warm_starts: 0,
        }
    }
}

/// See [`PathCache`]: above UsCarrier's 24,806 pairs (Yen's K paths there
/// take well under a second) and below Kdl's 568,000.
pub const ON_DEMAND_MIN_DEMANDS: usize = 100_000;

/// Rounds of solving and pricing one plan gives a class whose paths come
/// on demand: each costs a warm fast solve and a shortest-path tree per
/// source. A plan that stops short of the gap over all paths is still a
/// plan over the paths so far (no worse than over the shortest path
/// alone), and the next plan goes on from them.
pub const ON_DEMAND_ROUNDS_PER_PLAN: usize = 3;

/// The same for a re-plan that starts from the last plan's split: one
/// round, whose pricing's new paths start the next re-plan (the loop
/// re-plans every interval, and the paths keep growing where the prices
/// ask, at the cost of one warm solve and one pricing each time).
pub const ON_DEMAND_ROUNDS_PER_REPLAN: usize = 1;

/// The `k` of a cache key whose paths came on demand.
const ON_DEMAND_K: usize = 0;

/// A demand's remembered split: its class, ends and a fingerprint of its
/// paths (a different set of paths is a different demand).
type SplitKey = (Class, usize, usize, u64);

fn split_key(class: Class, demand: &Demand) -> SplitKey {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    demand.paths.hash(&mut hasher);
    (class, demand.src, demand.dst, hasher.finish())
}

/// A warm start needs the last plan's split of at least this share of a
/// class's demands (the others start evenly split): a start that is
/// mostly new is better served by a cold solve's broad first steps.
const WARM_START_MIN_KNOWN: f64 = 0.9;

/// For each edge of `old`, its index in `new`, or `None` where it is gone;
/// `None` overall when `new` is not `old` with some edges taken away (in
/// the same order). Twin edges (same ends and weight) are matched first
/// to first: interchangeable for paths.
fn removal_map(
    old: &[(usize, usize, u64)],
    new: &[(usize, usize, u64)],
) -> Option<Vec<Option<usize>>> {
    if new.len() > old.len() {
        return None;
    }
    let mut map = Vec::with_capacity(old.len());
    let mut j = 0;
    for edge in old {
        if new.get(j) == Some(edge) {
            map.push(Some(j));
            j += 1;
        } else {
            map.push(None);
        }
    }
    (j == new.len()).then_some(map)
}

impl PathCache {
    /// Paths cached at most; past this the cache starts again (a network's
    /// pairs times its latency bounds, generously).
    const LIMIT: usize = 4_000_000;

    fn check(&mut self, network: &Network) {
        let fingerprint = (
            network.nodes.len(),
            network
                .edges
                .iter()
                .map(|e| (e.src, e.dst, e.weight.to_bits()))
                .collect::<Vec<_>>(),
        );
        let Some(old) = self.network.as_ref() else {
            self.network = Some(fingerprint);
            return;
        };
        if *old == fingerprint {
            return;
        }
        self.splits.clear();
        self.prices.clear();
        let map = (old.0 == fingerprint.0)
            .then(|| removal_map(&old.1, &fingerprint.1))
            .flatten();
        match map {
            Some(map) => {
                let (mut kept, mut dropped) = (0, 0);
                self.paths.retain(|&(_, _, bound, k), paths| {
                    if k == ON_DEMAND_K {
                        // Paths on demand are not the k shortest of
                        // anything: the ones that avoid the removed links
                        // are as good as before.
                        paths.retain(|path| path.iter().all(|&e| map[e].is_some()));
                    }
                    let survives = (k != ON_DEMAND_K || !paths.is_empty())
                        && paths.iter().flatten().all(|&e| map[e].is_some())
                        && (bound.is_none() || paths.len() >= k);
                    if !survives {
                        dropped += 1;
                        return false;
                    }
                    for e in paths.iter_mut().flatten() {
                        *e = map[*e].unwrap_or(*e);
                    }
                    kept += 1;
                    true
                });
                self.kept_after_change += kept;
                self.dropped_after_change += dropped;
            }
            None => self.paths.clear(),
        }
        self.network = Some(fingerprint);
    }

    /// Makes the cache belong to `network` (see the type's documentation);
    /// [`plan_classes_with`] does it first.
    pub fn follow(&mut self, network: &Network) {
        self.check(network);
    }

    /// Paths held over all entries: the candidate paths the next plan
    /// starts from.
    pub fn paths_held(&self) -> usize {
        self.paths.values().map(Vec::len).sum()
    }

    /// Forgets the last plan's splits: the next plan's solver starts cold.
    pub fn forget_splits(&mut self) {
        self.splits.clear();
        self.prices.clear();
    }

    /// A warm start for `problem` (a class's demands) from the last plan's
    /// splits, when it knows enough of them.
    fn warm_start(&self, class: Class, problem: &Problem) -> Option<Allocation> {
        if self.splits.is_empty() || problem.demands.is_empty() {
            return None;
        }
        let mut known = 0;
        let splits = problem
            .demands
            .iter()
            .map(|demand| match self.splits.get(&split_key(class, demand)) {
                Some(split) if split.len() == demand.paths.len() => {
                    known += 1;
                    split.clone()
                }
                _ => vec![1.0 / demand.paths.len().max(1) as f64; demand.paths.len()],
            })
            .collect();
        (known as f64 >= WARM_START_MIN_KNOWN * problem.demands.len() as f64)
            .then_some(Allocation { splits })
    }

    /// Remembers a class's link prices (the fast solver's, `None` when it
    /// did not solve the class) with its split.
    fn remember_prices(&mut self, class: Class, prices: Option<Vec<f64>>) {
        match prices {
            Some(prices) => self.prices.insert(class, prices),
            None => self.prices.remove(&class),
        };
    }

    /// Remembers a class's split for the next plan's warm start, in place
    /// of the class's last one (so the splits held are one plan's).
    fn remember_splits(&mut self, class: Class, problem: &Problem, allocation: &Allocation) {
        self.splits.retain(|key, _| key.0 != class);
        for (demand, split) in problem.demands.iter().zip(&allocation.splits) {
            self.splits.insert(split_key(class, demand), split.clone());
        }
    }

    /// Keeps the paths the demands marked `grows` of `problem` (a class
    /// whose paths come on demand, as planned with `allocation`) have now,
    /// and gives the demands of `asked` (index into `problem`) the paths
    /// they asked for and the next plan's warm start a share on each: the
    /// next re-plan goes on where this one's rounds ran out.
    fn remember_grown(
        &mut self,
        class: Class,
        problem: &Problem,
        allocation: &Allocation,
        grows: &[bool],
        asked: Vec<(usize, Vec<usize>)>,
    ) {
        for (demand, grows) in problem.demands.iter().zip(grows) {
            if *grows {
                let key = (demand.src, demand.dst, None, ON_DEMAND_K);
                self.paths.insert(key, demand.paths.clone());
            }
        }
        for (d, path) in asked {
            let (Some(demand), Some(split)) = (problem.demands.get(d), allocation.splits.get(d))
            else {
                continue;
            };
            let mut grown = demand.clone();
            let mut shares = split.clone();
            crate::on_demand::add_path(&mut grown.paths, &mut shares, path);
            self.splits.remove(&split_key(class, demand));
            self.splits.insert(split_key(class, &grown), shares);
            let key = (grown.src, grown.dst, None, ON_DEMAND_K);
            self.paths.insert(key, grown.paths);
        }
    }

    /// Takes paths computed elsewhere (with `options`, on the network the
    /// cache follows: call [`Self::follow`] first) as the cache's own.
    pub fn remember(
        &mut self,
        src: usize,
        dst: usize,
        options: &PathOptions,
        paths: Vec<Vec<usize>>,
    ) {
        if self.paths.len() >= Self::LIMIT {
            self.paths.clear();
        }
        let key = (
            src,
            dst,
            options.max_latency_us.map(f64::to_bits),
            options.k,
        );
        self.paths.insert(key, paths);
    }

    /// Computes, on every core, the paths of the `pairs` the cache does not
    /// hold under `options` (after [`Self::follow`]); returns how many.
    pub fn fill(
        &mut self,
        network: &Network,
        pairs: &[(usize, usize)],
        options: &PathOptions,
    ) -> usize {
        let bound = options.max_latency_us.map(f64::to_bits);
        let wanted: Vec<PathKey> = pairs
            .iter()
            .filter(|(src, dst)| src != dst)
            .map(|&(src, dst)| (src, dst, bound, options.k))
            .collect();
        let before = self.computed;
        self.prepare(network, &wanted);
        self.computed - before
    }

    /// Makes the cache hold the paths of every key of `wanted` (the
    /// network's, after [`Self::follow`]): those it holds count as
    /// `reused`; the others are computed on every core, a batch per
    /// latency bound and `k` (Yen's K shortest, or the shortest path for
    /// paths on demand), and count as `computed`.
    fn prepare(&mut self, network: &Network, wanted: &[PathKey]) {
        // Pairs per (latency bound, k).
        let mut missing: BTreeMap<PathOptionsKey, Vec<(usize, usize)>> = BTreeMap::new();
        let mut hits = 0;
        for key in wanted {
            if self.paths.contains_key(key) {
                hits += 1;
            } else {
                missing
                    .entry((key.2, key.3))
                    .or_default()
                    .push((key.0, key.1));
            }
        }
        let count: usize = missing.values().map(Vec::len).sum();
        if count > 0 && !self.paths.is_empty() && self.paths.len() + count > Self::LIMIT {
            self.paths.clear();
            return self.prepare(network, wanted);
        }
        self.reused += hits;
        for ((bound, k), mut pairs) in missing {
            pairs.sort_unstable();
            pairs.dedup();
            let found = if k == ON_DEMAND_K {
                crate::on_demand::shortest_paths(network, &pairs)
            } else {
                let options = PathOptions {
                    max_latency_us: bound.map(f64::from_bits),
                    ..PathOptions::k_shortest(k)
                };
                crate::paths::candidate_paths_of_pairs(network, &pairs, &options)
            };
            self.computed += pairs.len();
            for ((src, dst), paths) in pairs.into_iter().zip(found) {
                self.paths.insert((src, dst, bound, k), paths);
            }
        }
    }

    /// The paths held for `key` (none when it is not held).
    fn held(&self, key: &PathKey) -> Vec<Vec<usize>> {
        self.paths.get(key).cloned().unwrap_or_default()
    }

    /// The candidate paths of one pair, from the cache or computed (call
    /// [`Self::follow`] with `network` first).
    pub fn get_or_compute(
        &mut self,
        network: &Network,
        finder: &mut ShortestPaths,
        src: usize,
        dst: usize,
        options: &PathOptions,
    ) -> Vec<Vec<usize>> {
        let key = (
            src,
            dst,
            options.max_latency_us.map(f64::to_bits),
            options.k,
        );
        if let Some(paths) = self.paths.get(&key) {
            self.reused += 1;
            return paths.clone();
        }
        let paths: Vec<Vec<usize>> = candidate_paths(network, finder, src, dst, options)
            .into_iter()
            .map(|p| p.edges)
            .collect();
        self.computed += 1;
        if self.paths.len() >= Self::LIMIT {
            self.paths.clear();
        }
        self.paths.insert(key, paths.clone());
        paths
    }
}

/// Demands of one class summed per (pair, latency bound, pin).
type DemandKey = (usize, usize, Option<u64>, Option<Vec<usize>>);

/// [`plan_classes`] for several matrices at once (`scenarios`: the recent
/// intervals and the forecast, each a full list of demands): one split per
/// demand that every scenario must live with. Each class minimises its
/// worst MLU over the scenarios, each scenario's MLU divided by that
/// scenario's own optimum on what the classes before left it (the robust
/// LP of [`crate::lp::robust_path_lp`]; with one scenario this is the plain
/// optimum). Rates, loads and the MLU reported are those of
/// `scenarios[primary]` (the forecast).
///
/// The latency bound of a class is a preference: when a class does not fit
/// within it (its MLU above 1 in any scenario), it is placed again over all
/// `k` candidate paths, and the outcome says so ([`ClassOutcome::spilled`]).
pub fn plan_classes_robust(
    network: &Network,
    scenarios: &[Vec<ClassDemand>],
    primary: usize,
    k: usize,
    fast: &FastOptions,
) -> ClassPlan {
    plan_classes_cached(
        network,
        scenarios,
        primary,
        k,
        fast,
        &mut PathCache::default(),
    )
}

/// [`plan_classes_robust`] with candidate paths from (and into) `cache`.
pub fn plan_classes_cached(
    network: &Network,
    scenarios: &[Vec<ClassDemand>],
    primary: usize,
    k: usize,
    fast: &FastOptions,
    cache: &mut PathCache,
) -> ClassPlan {
    plan_classes_with(
        network,
        scenarios,
        primary,
        Robustness::Worst,
        k,
        fast,
        cache,
    )
}

/// How one split serves several scenarios.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Robustness {
    /// The lowest worst normalised MLU over the scenarios: every scenario
    /// must live with the split.
    #[default]
    Worst,
    /// The lowest mean normalised MLU over the scenarios, a sample average
    /// of what may come next (the scenario method of [`crate::scenario`]).
    Mean,
}

/// [`plan_classes_cached`], each class's split chosen for `robustness`
/// over the scenarios.
pub fn plan_classes_with(
    network: &Network,
    scenarios: &[Vec<ClassDemand>],
    primary: usize,
    robustness: Robustness,
    k: usize,
    fast: &FastOptions,
    cache: &mut PathCache,
) -> ClassPlan {
    cache.check(network);
    let count = scenarios.len().max(1);
    let primary = primary.min(count - 1);
    // Per scenario: what the classes placed so far left, and their loads.
    let mut residuals: Vec<Network> = vec![network.clone(); count];
    let mut scenario_loads: Vec<Vec<f64>> = vec![vec![0.0; network.edges.len()]; count];
    let mut outcomes = Vec::new();
    let mut unplaced = Vec::new();
    for class in Class::ALL {
        let mut keys: BTreeMap<DemandKey, Vec<f64>> = BTreeMap::new();
        for (s, demands) in scenarios.iter().enumerate() {
            for demand in demands.iter().filter(|d| d.class == class && d.rate > 0.0) {
                let bound = demand.max_latency_us.map(|b| b.to_bits());
                let key = (demand.src, demand.dst, bound, demand.pinned_path.clone());
                keys.entry(key).or_insert_with(|| vec![0.0; count])[s] += demand.rate;
            }
        }
        if keys.is_empty() {
            continue;
        }
        let within = class_paths(network, cache, class, &keys, k, true, &mut unplaced);
        let mut solved = solve_robust(&within, &residuals, primary, robustness, fast, class, cache);
        let mut spilled = false;
        if solved.worst_mlu > 1.0 + 1e-9 && keys.keys().any(|key| key.2.is_some()) {
            // Does not fit within the bound: the same demands again over
            // the k shortest paths, the hard limit.
            let all = without_bounds(network, cache, &keys, &within, k);
            let wider = solve_robust(&all, &residuals, primary, robustness, fast, class, cache);
            if wider.worst_mlu < solved.worst_mlu - 1e-9 {
                solved = wider;
                spilled = true;
            }
        }
        let total_rate: f64 = keys.values().map(|rates| rates[primary]).sum();
        let placed_rate: f64 = solved.problem.demands.iter().map(|d| d.rate).sum();
        let fits = if solved.residual_mlu > 1.0 {
            1.0 / solved.residual_mlu
        } else {
            1.0
        };
        let satisfaction = if total_rate > 0.0 {
            placed_rate * fits / total_rate
        } else {
            1.0
        };
        let mut admitted = 1.0;
        for (s, loads) in solved.scenario_loads.iter().enumerate() {
            let Some(loads) = loads else {
                continue;
            };
            // A guaranteed class is planned only up to what the links left
            // to it carry: scaled down alike when it does not fit.
            let over = loads
                .iter()
                .zip(&residuals[s].edges)
                .map(|(load, edge)| load / edge.capacity)
                .fold(0.0, f64::max);
            let factor = if class.is_guaranteed() && over > 1.0 {
                1.0 / over
            } else {
                1.0
            };
            if s == primary {
                admitted = factor;
            }
            for (e, load) in loads.iter().enumerate() {
                let load = load * factor;
                scenario_loads[s][e] += load;
                // What the next class may use; a saturated edge keeps a
                // sliver so utilisations stay finite and the solver shuns it.
                residuals[s].edges[e].capacity = (network.edges[e].capacity - scenario_loads[s][e])
                    .max(network.edges[e].capacity * 1e-6);
            }
        }
        let problem = solved.problem;
        cache.remember_splits(class, &problem, &solved.allocation);
        cache.remember_prices(class, solved.prices);
        cache.remember_grown(
            class,
            &problem,
            &solved.allocation,
            &solved.on_demand,
            solved.asked,
        );
        outcomes.push(ClassOutcome {
            class,
            problem,
            allocation: solved.allocation,
            residual_mlu: solved.residual_mlu,
            satisfaction,
            pinned: solved.pinned,
            spilled,
            admitted,
        });
    }
    let loads = scenario_loads.swap_remove(primary);
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

/// A class's demands with their candidate paths: per demand its rate in
/// each scenario, whether it is pinned, and whether its paths come on
/// demand (and may grow while the class is solved).
struct ClassDemands {
    demands: Vec<(Demand, Vec<f64>)>,
    pinned: Vec<bool>,
    on_demand: Vec<bool>,
    /// Most paths a demand on demand may grow to: the k of the others
    /// (what a router's multipath group holds per destination).
    max_paths: usize,
}

impl ClassDemands {
    /// One flag per demand: set where the paths must stay as they are.
    fn fixed(&self) -> Vec<bool> {
        self.on_demand.iter().map(|grows| !grows).collect()
    }
}

/// Whether a class whose demands are `keys` takes its paths on demand
/// (`bounded`: latency bounds hold): enough of them are free to take any
/// path (see [`PathCache`]).
fn takes_paths_on_demand(
    cache: &PathCache,
    keys: &BTreeMap<DemandKey, Vec<f64>>,
    bounded: bool,
) -> bool {
    let free = keys
        .keys()
        .filter(|(src, dst, bound, pin)| {
            src != dst && pin.is_none() && (bound.is_none() || !bounded)
        })
        .count();
    free >= cache.on_demand_from
}

/// The cache key of an unpinned demand's paths: within its latency bound
/// when `bounded`, on demand when `on_demand` and it is free to take any
/// path, else its k shortest.
fn path_key(
    (src, dst, bound): (usize, usize, Option<u64>),
    k: usize,
    bounded: bool,
    on_demand: bool,
) -> PathKey {
    let bound = if bounded { bound } else { None };
    match bound {
        None if on_demand => (src, dst, None, ON_DEMAND_K),
        _ => (src, dst, bound, k),
    }
}

/// Candidate paths of a class's demands (within their latency bound when
/// `bounded`; on demand for those free to take any path when the class is
/// large enough); demands that have none are reported in `unplaced`.
fn class_paths(
    network: &Network,
    cache: &mut PathCache,
    class: Class,
    keys: &BTreeMap<DemandKey, Vec<f64>>,
    k: usize,
    bounded: bool,
    unplaced: &mut Vec<Unplaced>,
) -> ClassDemands {
    let on_demand = takes_paths_on_demand(cache, keys, bounded);
    let mut out = ClassDemands {
        demands: Vec::new(),
        pinned: Vec::new(),
        on_demand: Vec::new(),
        max_paths: k,
    };
    let wanted: Vec<PathKey> = keys
        .keys()
        .filter(|(src, dst, _, pin)| src != dst && pin.is_none())
        .map(|&(src, dst, bound, _)| path_key((src, dst, bound), k, bounded, on_demand))
        .collect();
    cache.prepare(network, &wanted);
    for ((src, dst, bound, pin), rates) in keys {
        let (src, dst) = (*src, *dst);
        let rate = rates.iter().copied().fold(0.0, f64::max);
        if let Some(path) = pin {
            if path_joins(network, path, src, dst) {
                out.demands.push((
                    Demand {
                        src,
                        dst,
                        rate,
                        paths: vec![path.clone()],
                    },
                    rates.clone(),
                ));
                out.pinned.push(true);
                out.on_demand.push(false);
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
        let key = path_key((src, dst, *bound), k, bounded, on_demand);
        let paths = if src == dst {
            Vec::new()
        } else {
            cache.held(&key)
        };
        if paths.is_empty() {
            let reason = match key.2 {
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
        out.demands.push((
            Demand {
                src,
                dst,
                rate,
                paths,
            },
            rates.clone(),
        ));
        out.pinned.push(false);
        out.on_demand.push(key.3 == ON_DEMAND_K);
    }
    out
}

/// The demands of `within` (those that had paths) with their paths
/// whatever their latency (the k shortest, or on demand when the class is
/// large enough); pins stay as they are.
fn without_bounds(
    network: &Network,
    cache: &mut PathCache,
    keys: &BTreeMap<DemandKey, Vec<f64>>,
    within: &ClassDemands,
    k: usize,
) -> ClassDemands {
    let on_demand = takes_paths_on_demand(cache, keys, false);
    let key = |demand: &Demand| path_key((demand.src, demand.dst, None), k, false, on_demand);
    let wanted: Vec<PathKey> = within
        .demands
        .iter()
        .zip(&within.pinned)
        .filter(|(_, pinned)| !**pinned)
        .map(|((demand, _), _)| key(demand))
        .collect();
    cache.prepare(network, &wanted);
    let mut out = ClassDemands {
        demands: Vec::with_capacity(within.demands.len()),
        pinned: within.pinned.clone(),
        on_demand: Vec::with_capacity(within.demands.len()),
        max_paths: k,
    };
    for ((demand, rates), pinned) in within.demands.iter().zip(&within.pinned) {
        let mut demand = demand.clone();
        let mut grows = false;
        if !pinned {
            let key = key(&demand);
            let paths = cache.held(&key);
            if !paths.is_empty() {
                demand.paths = paths;
                grows = key.3 == ON_DEMAND_K;
            }
        }
        out.demands.push((demand, rates.clone()));
        out.on_demand.push(grows);
    }
    out
}

/// One class solved over every scenario.
struct Solved {
    /// The class's demands at the primary scenario's rates on what the
    /// classes before left.
    problem: Problem,
    allocation: Allocation,
    /// Per scenario: the class's loads under the allocation at that
    /// scenario's rates (`None` where the allocation does not fit).
    scenario_loads: Vec<Option<Vec<f64>>>,
    /// The class's MLU on its residual capacity, in the primary scenario.
    residual_mlu: f64,
    /// The same, in the scenario where it is highest.
    worst_mlu: f64,
    pinned: Vec<bool>,
    /// Per demand: whether its paths came on demand.
    on_demand: Vec<bool>,
    /// The fast solver's link prices (`None` when it did not solve it).
    prices: Option<Vec<f64>>,
    /// Paths on demand the last pricing asked for, not solved over yet:
    /// the next plan's start ([`PathCache::remember_grown`]).
    asked: Vec<(usize, Vec<usize>)>,
}

/// `cache` gives the fast solver its warm start (the last plan's split),
/// when the class is large enough for the fast solver.
///
/// Only the robust LP (small classes) needs a problem per scenario. Above
/// its size the fast solver plans the primary scenario, and each
/// scenario's loads come from that one problem with the scenario's rates
/// put in turn: a copy of every demand's paths per scenario was most of
/// a large network's re-plan (49 scenarios on UsCarrier).
fn solve_robust(
    class: &ClassDemands,
    residuals: &[Network],
    primary: usize,
    robustness: Robustness,
    fast: &FastOptions,
    which: Class,
    cache: &mut PathCache,
) -> Solved {
    let scenario_problem = |s: usize| Problem {
        network: residuals[s].clone(),
        demands: class
            .demands
            .iter()
            .map(|(demand, rates)| Demand {
                rate: rates.get(s).copied().unwrap_or(0.0),
                ..demand.clone()
            })
            .collect(),
    };
    let count = residuals.len();
    let mut problem = scenario_problem(primary);
    let exact = uses_exact_lp(shares_of(&problem), count);
    let on_demand = class.on_demand.iter().any(|grows| *grows);
    let mut asked = Vec::new();
    let mut prices = None;
    let mut warm = fast.clone();
    if warm.warm_start.is_none() && (!exact || on_demand) {
        warm.warm_start = cache.warm_start(which, &problem);
        cache.warm_starts += usize::from(warm.warm_start.is_some());
        if warm.warm_start.is_some() {
            warm.warm_prices = cache.prices.get(&which).cloned();
        }
    }
    let allocation = if class.demands.is_empty() {
        Allocation { splits: Vec::new() }
    } else if on_demand {
        // A few rounds of pricing from the paths so far (and the last
        // plan's split over them); the paths found are the next plan's,
        // kept once the class's plan is chosen (`remember_grown`).
        let fixed = class.fixed();
        let start = warm.warm_start.take();
        let rounds = if start.is_some() {
            ON_DEMAND_ROUNDS_PER_REPLAN
        } else {
            ON_DEMAND_ROUNDS_PER_PLAN
        };
        let options = OnDemandOptions {
            fast: warm,
            rounds,
            max_paths: class.max_paths.max(1),
            ..OnDemandOptions::default()
        };
        let solved = improve_growing(problem, start, &options, &fixed);
        problem = solved.problem;
        asked = solved.asked;
        prices = Some(solved.solution.prices);
        solved.solution.allocation
    } else if count > 1 && exact {
        let problems: Vec<Problem> = (0..count).map(scenario_problem).collect();
        robust_allocation(&problems, primary, robustness, &warm)
    } else {
        let (allocation, _, fast_prices) = solve_class(&problem, &warm);
        prices = fast_prices;
        allocation
    };
    let mut scenario_loads = Vec::with_capacity(count);
    let mut mlus = Vec::with_capacity(count);
    for (s, residual) in residuals.iter().enumerate() {
        for (demand, (_, rates)) in problem.demands.iter_mut().zip(&class.demands) {
            demand.rate = rates.get(s).copied().unwrap_or(0.0);
        }
        let loads = problem.evaluate(&allocation).ok().map(|e| e.loads);
        mlus.push(loads.as_ref().map_or(0.0, |loads| {
            loads
                .iter()
                .zip(&residual.edges)
                .map(|(load, edge)| load / edge.capacity)
                .fold(0.0, f64::max)
        }));
        scenario_loads.push(loads);
    }
    for (demand, (_, rates)) in problem.demands.iter_mut().zip(&class.demands) {
        demand.rate = rates.get(primary).copied().unwrap_or(0.0);
    }
    Solved {
        on_demand: class.on_demand.clone(),
        asked,
        prices,
        residual_mlu: mlus[primary],
        worst_mlu: mlus.iter().copied().fold(0.0, f64::max),
        problem,
        allocation,
        scenario_loads,
        pinned: class.pinned.clone(),
    }
}

/// The split minimising the worst (or mean) normalised MLU over the
/// scenarios when the LP is small enough (each scenario's own optimum as
/// its scale); otherwise the fast solver on the primary scenario.
fn robust_allocation(
    problems: &[Problem],
    primary: usize,
    robustness: Robustness,
    fast: &FastOptions,
) -> Allocation {
    let shares = problems.get(primary).map_or(0, shares_of);
    if uses_exact_lp(shares, problems.len()) {
        let mut scales = Vec::with_capacity(problems.len());
        for problem in problems {
            let optimum = solve_class(problem, fast).1;
            // An empty scenario has optimum 0: any positive scale will do.
            scales.push(if optimum.is_finite() {
                optimum.max(1e-9)
            } else {
                1.0
            });
        }
        let objective = match robustness {
            Robustness::Worst => ScenarioObjective::Worst,
            Robustness::Mean => {
                ScenarioObjective::Mean(vec![1.0 / problems.len() as f64; problems.len()])
            }
        };
        if let Ok((allocation, _)) =
            crate::lp::scenario_path_lp(problems, &scales, &objective, Some(10.0))
        {
            return allocation;
        }
    }
    solve_class(&problems[primary], fast).0
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
pub(crate) mod tests {
    use super::*;
    use crate::network::Edge;

    /// A link between `a` and `b`: an edge each way, latency as weight.
    pub(crate) fn both_ways(
        edges: &mut Vec<Edge>,
        a: usize,
        b: usize,
        capacity: f64,
        latency: f64,
    ) {
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
            both_ways(&mut edges, a, b, capacity, latency);
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
        // 20 does not fit on the 10 within 2 ms: rather than MLU 2 there,
        // it spills onto the long path too, and all 20 of the 25 placed fit.
        assert!(sync.spilled);
        assert!(sync.residual_mlu <= 1.0, "{}", sync.residual_mlu);
        assert!((sync.satisfaction - 20.0 / 25.0).abs() < 1e-9);
        assert_eq!(
            sync.problem.demands.len(),
            1,
            "the 100 µs demand stays unplaced"
        );
        assert_eq!(sync.problem.demands[0].paths.len(), 2);
    }

    #[test]
    fn a_guaranteed_class_that_does_not_fit_is_admitted_in_part() {
        // ai-sync 300 from 0 to 3 where both paths together carry 110:
        // within the bound (the thin path) it cannot fit, spilled it still
        // cannot; it is planned at 110 and admitted at 110/300, never
        // above capacity. ai-bulk finds nothing left; best-effort is
        // planned whole, and oversubscribes.
        let demand = |class: Class, rate: f64| ClassDemand {
            src: 0,
            dst: 3,
            rate,
            class,
            max_latency_us: (class == Class::AiSync).then_some(2000.0),
            pinned_path: None,
        };
        let plan = plan_classes(
            &network(),
            &[
                demand(Class::AiSync, 300.0),
                demand(Class::AiBulk, 5.0),
                demand(Class::BestEffort, 5.0),
            ],
            2,
            &FastOptions::default(),
        );
        let sync = &plan.outcomes[0];
        assert!(sync.spilled);
        assert!(
            (sync.admitted - 110.0 / 300.0).abs() < 1e-6,
            "{}",
            sync.admitted
        );
        assert!((sync.satisfaction - 110.0 / 300.0).abs() < 1e-6);
        let bulk = &plan.outcomes[1];
        assert!(bulk.admitted < 1e-3, "{}", bulk.admitted);
        assert_eq!(plan.outcomes[2].admitted, 1.0);
        assert!(plan.mlu > 1.0, "best-effort oversubscribes: {}", plan.mlu);
        assert_guaranteed_within_capacity(&network(), &plan);
    }

    /// Per edge, the planned load of the guaranteed classes (each demand's
    /// admitted rate over its split) is within the edge's capacity.
    fn assert_guaranteed_within_capacity(network: &Network, plan: &ClassPlan) {
        let mut loads = vec![0.0; network.edges.len()];
        for outcome in plan.outcomes.iter().filter(|o| o.class.is_guaranteed()) {
            for (demand, split) in outcome
                .problem
                .demands
                .iter()
                .zip(&outcome.allocation.splits)
            {
                for (path, share) in demand.paths.iter().zip(split) {
                    for &e in path {
                        loads[e] += demand.rate * outcome.admitted * share.max(0.0);
                    }
                }
            }
        }
        for (e, (load, edge)) in loads.iter().zip(&network.edges).enumerate() {
            assert!(
                *load <= edge.capacity * (1.0 + 1e-5),
                "edge {e}: guaranteed load {load} above capacity {}: {plan:?}",
                edge.capacity
            );
        }
    }

    #[test]
    fn no_plan_puts_a_guaranteed_class_above_capacity() {
        // Random networks (a ring with chords, random capacities and
        // latencies) and random demands of every class, bounds and sizes,
        // some far above what the network carries; one scenario or three.
        let mut state = 0x5eed_u64;
        let mut next = move || {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
        };
        for case in 0..120 {
            let n = 4 + (next() * 6.0) as usize;
            let mut edges = Vec::new();
            let mut link = |a: usize, b: usize, next: &mut dyn FnMut() -> f64| {
                let capacity = 10.0 + next() * 90.0;
                let latency = 100.0 + next() * 5000.0;
                both_ways(&mut edges, a, b, capacity, latency);
            };
            for a in 0..n {
                link(a, (a + 1) % n, &mut next);
            }
            for _ in 0..n / 2 {
                let (a, b) = ((next() * n as f64) as usize, (next() * n as f64) as usize);
                if a != b {
                    link(a, b, &mut next);
                }
            }
            let network = Network {
                name: format!("random-{case}"),
                nodes: (0..n).map(|i| i.to_string()).collect(),
                edges,
            };
            let scenario = |next: &mut dyn FnMut() -> f64| -> Vec<ClassDemand> {
                (0..6)
                    .map(|_| {
                        let src = (next() * n as f64) as usize;
                        let dst = (src + 1 + (next() * (n - 1) as f64) as usize) % n;
                        let class = Class::ALL[(next() * 3.0) as usize % 3];
                        ClassDemand {
                            src,
                            dst,
                            rate: next() * 150.0,
                            class,
                            max_latency_us: (next() < 0.5).then(|| 500.0 + next() * 8000.0),
                            pinned_path: None,
                        }
                    })
                    .collect()
            };
            let scenarios: Vec<Vec<ClassDemand>> = if case % 2 == 0 {
                vec![scenario(&mut next)]
            } else {
                let first = scenario(&mut next);
                let scale = |k: f64| -> Vec<ClassDemand> {
                    first
                        .iter()
                        .map(|d| ClassDemand {
                            rate: d.rate * k,
                            ..d.clone()
                        })
                        .collect()
                };
                vec![scale(0.5), scale(1.5), first.clone()]
            };
            let plan = plan_classes_robust(
                &network,
                &scenarios,
                scenarios.len() - 1,
                3,
                &FastOptions::default(),
            );
            assert_guaranteed_within_capacity(&network, &plan);
        }
    }

    #[test]
    fn a_re_plan_reuses_the_candidate_paths() {
        let demands = [ClassDemand {
            src: 0,
            dst: 3,
            rate: 8.0,
            class: Class::AiSync,
            max_latency_us: Some(2000.0),
            pinned_path: None,
        }];
        let mut cache = PathCache::default();
        let fast = FastOptions::default();
        let first = plan_classes_cached(&network(), &[demands.to_vec()], 0, 2, &fast, &mut cache);
        assert_eq!((cache.computed, cache.reused), (1, 0));
        let again = plan_classes_cached(&network(), &[demands.to_vec()], 0, 2, &fast, &mut cache);
        assert_eq!((cache.computed, cache.reused), (1, 1));
        assert_eq!(first, again);
        // Another network: the cache starts again.
        let mut other = network();
        other.edges[0].weight = 9999.0;
        plan_classes_cached(&other, &[demands.to_vec()], 0, 2, &fast, &mut cache);
        assert_eq!(cache.computed, 2);
    }

    /// A re-plan on the same network after every rate changed by up to
    /// 10% starts the fast solver from the last plan's split, and plans
    /// as well as a cold plan; another network forgets the splits.
    #[test]
    fn a_re_plan_warm_starts_the_fast_solver_from_the_last_split() {
        // 81 nodes, 6,480 pairs over 4 paths: above the exact LP's size.
        let (network, mut demands) = grid_demands(9, 11);
        let mut next = crate::lp::tests::uniform(12u64);
        let fast = FastOptions::default();
        let mut cache = PathCache::default();
        plan_classes_cached(&network, &[demands.clone()], 0, 4, &fast, &mut cache);
        assert_eq!(cache.warm_starts, 0);
        // The fast solver's prices are kept with the split, one per edge.
        let class = demands[0].class;
        let prices = cache.prices.get(&class).expect("the class's prices");
        assert_eq!(prices.len(), network.edges.len());
        for demand in &mut demands {
            demand.rate *= 0.9 + 0.2 * next();
        }
        let warm = plan_classes_cached(&network, &[demands.clone()], 0, 4, &fast, &mut cache);
        assert_eq!(cache.warm_starts, 1);
        let cold = plan_classes_cached(
            &network,
            &[demands.clone()],
            0,
            4,
            &fast,
            &mut PathCache::default(),
        );
        assert!(
            warm.mlu <= cold.mlu * 1.01 && cold.mlu <= warm.mlu * 1.01,
            "warm {} cold {}",
            warm.mlu,
            cold.mlu
        );
        let mut other = network.clone();
        other.edges[0].weight = 2.0;
        cache.follow(&other);
        assert!(cache.prices.is_empty(), "another network forgets them");
        plan_classes_cached(&other, &[demands], 0, 4, &fast, &mut cache);
        assert_eq!(cache.warm_starts, 1);
        assert!(cache.prices.contains_key(&class));
        cache.forget_splits();
        assert!(cache.prices.is_empty());
    }

    /// After links are taken away, the paths the cache keeps and those it
    /// computes again are exactly what a cold cache computes on the new
    /// network, with and without a latency bound; and only the pairs
    /// whose paths used a removed link are computed again.
    #[test]
    fn a_failure_recomputes_only_the_paths_that_used_the_link() {
        // A 4x4 grid with two diagonals, weights and latencies varied.
        let mut links = Vec::new();
        for r in 0..4 {
            for c in 0..4 {
                let n = r * 4 + c;
                if c < 3 {
                    links.push((n, n + 1, 1.0 + ((n * 7) % 5) as f64));
                }
                if r < 3 {
                    links.push((n, n + 4, 1.0 + ((n * 3) % 4) as f64));
                }
            }
        }
        links.push((0, 5, 1.5));
        links.push((10, 15, 1.5));
        let build = |links: &[(usize, usize, f64)]| {
            let mut edges = Vec::new();
            for &(a, b, w) in links {
                both_ways(&mut edges, a, b, 10.0, w * 1000.0);
                let n = edges.len();
                edges[n - 1].weight = w;
                edges[n - 2].weight = w;
            }
            Network {
                name: "grid".into(),
                nodes: (0..16).map(|i| i.to_string()).collect(),
                edges,
            }
        };
        let options = [
            PathOptions::k_shortest(3),
            PathOptions {
                max_latency_us: Some(6000.0),
                ..PathOptions::k_shortest(3)
            },
        ];
        let all_pairs = |network: &Network, cache: &mut PathCache| {
            cache.follow(network);
            let mut finder = ShortestPaths::new(network);
            let mut out = Vec::new();
            for option in &options {
                for src in 0..16 {
                    for dst in (0..16).filter(|&d| d != src) {
                        out.push(cache.get_or_compute(network, &mut finder, src, dst, option));
                    }
                }
            }
            out
        };
        let whole = build(&links);
        // And the same grid with every weight 1: ties everywhere.
        let even: Vec<(usize, usize, f64)> = links.iter().map(|&(a, b, _)| (a, b, 1.0)).collect();
        for (links, failed) in (0..links.len())
            .map(|f| (&links, f))
            .chain((0..even.len()).map(|f| (&even, f)))
        {
            let whole = build(links);
            let mut cache = PathCache::default();
            all_pairs(&whole, &mut cache);
            let computed = cache.computed;
            let mut left = links.clone();
            left.remove(failed);
            let after = build(&left);
            let updated = all_pairs(&after, &mut cache);
            let cold = all_pairs(&after, &mut PathCache::default());
            assert_eq!(updated, cold, "link {failed} removed");
            assert!(cache.kept_after_change > 0, "link {failed}: nothing kept");
            assert_eq!(
                cache.computed - computed,
                cache.dropped_after_change,
                "link {failed}: only the dropped pairs are computed again"
            );
        }
        // A weight change empties the cache.
        let mut cache = PathCache::default();
        all_pairs(&whole, &mut cache);
        let mut heavier = links.clone();
        heavier[0].2 = 9.0;
        all_pairs(&build(&heavier), &mut cache);
        assert_eq!(cache.kept_after_change, 0);
    }

    /// Every pair of a `side` x `side` grid with uneven capacities, a
    /// seeded rate each, best-effort.
    fn grid_demands(side: usize, seed: u64) -> (Network, Vec<ClassDemand>) {
        let n = side * side;
        let network = crate::lp::tests::network(n, &crate::lp::tests::grid_links(side));
        let mut next = crate::lp::tests::uniform(seed);
        let demands = (0..n)
            .flat_map(|s| (0..n).filter(move |&t| t != s).map(move |t| (s, t)))
            .map(|(src, dst)| ClassDemand {
                src,
                dst,
                rate: 0.01 + 0.02 * next(),
                class: Class::BestEffort,
                max_latency_us: None,
                pinned_path: None,
            })
            .collect();
        (network, demands)
    }

    /// A large class takes its paths on demand: only one shortest path per
    /// pair is computed, the plans grow the paths the prices ask for and
    /// keep them, and a few plans reach the optimum over four paths per
    /// pair (the paths on demand may be any).
    #[test]
    fn a_large_class_grows_its_paths_on_demand_over_plans() {
        let (network, demands) = grid_demands(6, 3);
        let pairs = demands.len();
        let fast = FastOptions::default();
        let k_paths = plan_classes(&network, &demands, 4, &fast);
        let four_paths = &k_paths.outcomes[0].problem;
        let optimum = crate::lp::path_lp(four_paths, None).expect("LP").1;
        let mut cache = PathCache {
            on_demand_from: pairs,
            ..PathCache::default()
        };
        let mut mlus = Vec::new();
        for plan in 0..5 {
            let planned = plan_classes_cached(
                &network,
                std::slice::from_ref(&demands),
                0,
                4,
                &fast,
                &mut cache,
            );
            let outcome = &planned.outcomes[0];
            assert_eq!(outcome.problem.demands.len(), pairs);
            for demand in &outcome.problem.demands {
                assert!(!demand.paths.is_empty() && demand.paths.len() <= 4);
                for path in &demand.paths {
                    assert!(path_joins(&network, path, demand.src, demand.dst));
                }
            }
            assert_eq!(cache.computed, pairs, "plan {plan}: only the first paths");
            assert_eq!(cache.reused, pairs * plan, "plan {plan}");
            mlus.push(planned.mlu);
        }
        let paths: usize = cache.paths.values().map(Vec::len).sum();
        assert!(paths > pairs, "no path was added: {paths}");
        assert!(cache.warm_starts >= 4, "{}", cache.warm_starts);
        let last = mlus[mlus.len() - 1];
        assert!(last <= optimum * 1.01, "{mlus:?} against {optimum}");
        assert!(last <= mlus[0] * (1.0 + 1e-9), "{mlus:?}");
        // The paths that grew are what counts: over each pair's shortest
        // path alone the MLU is far higher.
        let shortest = plan_classes(&network, &demands, 1, &fast).mlu;
        assert!(last < shortest * 0.9, "{last} against {shortest}");
        for pair in mlus.windows(2) {
            assert!(
                pair[1] <= pair[0] * 1.005,
                "a later plan is worse: {mlus:?}"
            );
        }
        // Below the threshold the same class keeps Yen's four paths.
        let mut below = PathCache {
            on_demand_from: pairs + 1,
            ..PathCache::default()
        };
        let planned = plan_classes_cached(
            &network,
            std::slice::from_ref(&demands),
            0,
            4,
            &fast,
            &mut below,
        );
        assert_eq!(planned.outcomes[0].problem, *four_paths);
    }

    /// In a class whose paths come on demand, a pinned demand keeps its
    /// one path and a demand with a latency bound keeps its paths within
    /// it; a link taken away drops only the paths over it.
    #[test]
    fn paths_on_demand_keep_pins_and_bounds_and_survive_a_failure() {
        let (mut network, mut demands) = grid_demands(5, 8);
        for edge in &mut network.edges {
            edge.latency_us = 100.0;
        }
        let free = demands.len() - 2;
        demands[0].pinned_path = Some(vec![0]);
        let pinned = (demands[0].src, demands[0].dst);
        let bounded = (demands[1].src, demands[1].dst);
        demands[1].max_latency_us = Some(500.0);
        demands[1].class = Class::BestEffort;
        let fast = FastOptions::default();
        let mut cache = PathCache {
            on_demand_from: free,
            ..PathCache::default()
        };
        let check = |plan: &ClassPlan, network: &Network| {
            let problem = &plan.outcomes[0].problem;
            for demand in &problem.demands {
                if (demand.src, demand.dst) == pinned {
                    assert_eq!(demand.paths.len(), 1);
                } else if (demand.src, demand.dst) == bounded {
                    for path in &demand.paths {
                        let latency: f64 = path.iter().map(|&e| network.edges[e].latency_us).sum();
                        assert!(latency <= 500.0, "{path:?}");
                    }
                }
                for path in &demand.paths {
                    assert!(path_joins(network, path, demand.src, demand.dst));
                }
            }
            assert!(plan.outcomes[0].pinned.iter().filter(|p| **p).count() == 1);
        };
        for _ in 0..3 {
            let plan = plan_classes_cached(&network, &[demands.clone()], 0, 4, &fast, &mut cache);
            check(&plan, &network);
        }
        // The busiest link fails (both directions; never the pinned one).
        let plan = plan_classes_cached(&network, &[demands.clone()], 0, 4, &fast, &mut cache);
        let busiest = (2..network.edges.len())
            .max_by(|&a, &b| plan.loads[a].total_cmp(&plan.loads[b]))
            .expect("edges");
        let link = crate::on_demand::link_of(&network, busiest);
        let mut failed = network.clone();
        let mut index = 0;
        failed.edges.retain(|_| {
            index += 1;
            !link[index - 1]
        });
        let computed = cache.computed;
        let after = plan_classes_cached(&failed, &[demands.clone()], 0, 4, &fast, &mut cache);
        check(&after, &failed);
        assert!(cache.kept_after_change > 0);
        assert!(cache.dropped_after_change > 0);
        assert!(cache.dropped_after_change < free / 2);
        assert_eq!(cache.computed - computed, cache.dropped_after_change);
        assert_eq!(after.outcomes[0].problem.demands.len(), demands.len());
        assert!(after.unplaced.is_empty(), "{:?}", after.unplaced);
    }

    /// The MLU of `plan`'s first class's split under other rates.
    fn mlu_under(plan: &ClassPlan, demands: &[ClassDemand]) -> f64 {
        let outcome = &plan.outcomes[0];
        let mut problem = outcome.problem.clone();
        for d in &mut problem.demands {
            d.rate = demands
                .iter()
                .filter(|x| x.src == d.src && x.dst == d.dst)
                .map(|x| x.rate)
                .sum();
        }
        problem.evaluate(&outcome.allocation).expect("evaluate").mlu
    }

    #[test]
    fn one_split_serves_every_scenario() {
        // Two pairs share the thin path's first link: 0->3 and 0->1. In
        // one scenario 0->3 is heavy, in the other 0->1 is. Planning for
        // the first alone sends 0->3 mostly on the short path; the robust
        // plan keeps both scenarios near their own optimum.
        let demand = |dst, rate| ClassDemand {
            src: 0,
            dst,
            rate,
            class: Class::BestEffort,
            max_latency_us: None,
            pinned_path: None,
        };
        let heavy_far = vec![demand(3, 50.0), demand(1, 1.0)];
        let heavy_near = vec![demand(3, 5.0), demand(1, 9.0)];
        let fast = FastOptions::default();
        let single = plan_classes(&network(), &heavy_far, 2, &fast);
        let robust = plan_classes_robust(
            &network(),
            &[heavy_near.clone(), heavy_far.clone()],
            1,
            2,
            &fast,
        );
        let near_optimum = plan_classes(&network(), &heavy_near, 2, &fast).mlu;
        assert!(
            mlu_under(&robust, &heavy_near) < mlu_under(&single, &heavy_near) - 0.05,
            "robust {} single {} optimum {near_optimum}",
            mlu_under(&robust, &heavy_near),
            mlu_under(&single, &heavy_near)
        );
        // Rates and MLU are the primary scenario's.
        assert_eq!(robust.outcomes[0].problem.demands[0].rate, 1.0);
        assert!((robust.mlu - mlu_under(&robust, &heavy_far)).abs() < 1e-9);
    }

    #[test]
    fn the_mean_serves_the_usual_traffic_and_the_worst_the_outlier() {
        // Four scenarios where 0->3 is heavy and 0->1 light, one where
        // 0->1 is heavy. The worst-case split guards the outlier at the
        // usual traffic's expense; the mean's does better on average and
        // worse on the outlier.
        let demand = |dst, rate| ClassDemand {
            src: 0,
            dst,
            rate,
            class: Class::BestEffort,
            max_latency_us: None,
            pinned_path: None,
        };
        let usual = vec![demand(3, 50.0), demand(1, 1.0)];
        let outlier = vec![demand(3, 5.0), demand(1, 9.0)];
        let mut scenarios = vec![usual.clone(); 4];
        scenarios.insert(2, outlier.clone());
        let fast = FastOptions::default();
        let plan = |robustness| {
            plan_classes_with(
                &network(),
                &scenarios,
                4,
                robustness,
                2,
                &fast,
                &mut PathCache::default(),
            )
        };
        let normalised = |plan: &ClassPlan, demands: &[ClassDemand]| {
            mlu_under(plan, demands) / plan_classes(&network(), demands, 2, &fast).mlu
        };
        let (worst, mean) = (plan(Robustness::Worst), plan(Robustness::Mean));
        let average = |plan: &ClassPlan| {
            scenarios.iter().map(|s| normalised(plan, s)).sum::<f64>() / scenarios.len() as f64
        };
        assert!(
            average(&mean) < average(&worst) - 0.01,
            "mean {} worst {}",
            average(&mean),
            average(&worst)
        );
        assert!(
            normalised(&worst, &outlier) < normalised(&mean, &outlier) - 0.01,
            "worst {} mean {}",
            normalised(&worst, &outlier),
            normalised(&mean, &outlier)
        );
    }
}
