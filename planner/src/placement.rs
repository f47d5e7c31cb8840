//! Collective flow placement in a leaf-spine fabric: each flow between two
//! leaves is given one spine, so that no leaf-spine link carries more than
//! it must.
//!
//! A leaf's hash ECMP spreads flows over its uplinks at random: with four
//! flows and four spines, all four land on distinct spines only 9% of the
//! time, and two flows sharing an uplink run at half speed. A collective
//! (ring all-reduce) waits for its slowest flow, so one collision slows the
//! whole job. Placement instead chooses every flow's spine, minimising the
//! most loaded link (utilisation: load over capacity, up and down links
//! alike).
//!
//! The method, in order:
//! 1. flows placed before keep their spine (stability: a flow that ends or
//!    starts does not move the others, unless step 3 finds a strictly
//!    better bottleneck);
//! 2. new flows, largest first (then by key), each on the spine that gives
//!    it the lowest bottleneck (its uplink and downlink after adding it);
//! 3. improvement, while the most loaded link can be relieved: a flow on a
//!    link at the maximum moves to another spine when its new bottleneck is
//!    strictly below its current one; failing that, it swaps spines with
//!    another flow when the highest load on the links the swap touches
//!    strictly drops; failing that, for equal-rate flows, a Kempe chain
//!    (two spines exchanged along an alternating path of flows, the
//!    constructive proof of König's edge-colouring theorem) frees a spine
//!    at both ends of a flow. Every accepted step lowers the sorted vector
//!    of link loads, so the loop ends; it is also bounded.
//!
//! Deterministic: the same fabric, flows and previous placement give the
//! same result (flows and spines are visited in key order, never in hash
//! order).

use std::collections::{BTreeMap, BTreeSet};

use crate::topology::{NodeRole, Topology};

/// The leaf-spine part of a topology: capacities of the leaf-to-spine
/// (up) and spine-to-leaf (down) links, by node ID. Parallel links add up.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fabric {
    pub up: BTreeMap<(String, String), f64>,
    pub down: BTreeMap<(String, String), f64>,
}

impl Fabric {
    /// The leaf-spine links of a topology (administratively up ones only).
    pub fn from_topology(topology: &Topology) -> Fabric {
        let role: BTreeMap<&str, NodeRole> = topology
            .nodes
            .iter()
            .map(|n| (n.id.as_str(), n.role))
            .collect();
        let mut fabric = Fabric::default();
        for link in topology.links.iter().filter(|l| l.admin_up) {
            let capacity = link.capacity_bps as f64;
            match (role.get(link.src.as_str()), role.get(link.dst.as_str())) {
                (Some(NodeRole::Leaf), Some(NodeRole::Spine)) => {
                    *fabric
                        .up
                        .entry((link.src.clone(), link.dst.clone()))
                        .or_default() += capacity;
                }
                (Some(NodeRole::Spine), Some(NodeRole::Leaf)) => {
                    *fabric
                        .down
                        .entry((link.src.clone(), link.dst.clone()))
                        .or_default() += capacity;
                }
                _ => {}
            }
        }
        fabric
    }

    /// The spines a flow from `source` to `destination` can take: those
    /// with an up link from the first and a down link to the second.
    pub fn spines_between(&self, source: &str, destination: &str) -> Vec<String> {
        self.up
            .keys()
            .filter(|(leaf, _)| leaf == source)
            .map(|(_, spine)| spine)
            .filter(|spine| {
                self.down
                    .contains_key(&((*spine).clone(), destination.to_string()))
            })
            .cloned()
            .collect()
    }
}

/// One flow to place: between two leaves, at a rate (bit/s, or any unit
/// shared by all flows and the capacities).
#[derive(Debug, Clone, PartialEq)]
pub struct FabricFlow {
    /// Unique among the flows; what the previous placement is keyed by.
    pub key: String,
    pub source_leaf: String,
    pub destination_leaf: String,
    pub rate: f64,
}

/// Where every flow goes and how good that is.
#[derive(Debug, Clone, PartialEq)]
pub struct Placement {
    /// Flow key -> spine ID, for every flow between two different leaves.
    pub spine_of: BTreeMap<String, String>,
    /// The highest link utilisation the placement gives.
    pub max_utilization: f64,
    /// No placement can do better than this: per leaf, its flows' total
    /// over its links' total, and for equal rates whole flows per link.
    pub lower_bound: f64,
    /// Flows of `previous` that now take another spine.
    pub moved: usize,
}

/// Why flows cannot be placed; each names the flow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    #[error("flow {key}: rate must be a finite number >= 0")]
    BadRate { key: String },
    #[error("flow {key}: listed twice")]
    DuplicateKey { key: String },
    #[error("flow {key}: no spine links leaf {source_leaf} to leaf {destination_leaf}")]
    NoSpine {
        key: String,
        source_leaf: String,
        destination_leaf: String,
    },
}

/// Upper bound on improvement steps: far above what converging takes on a
/// fabric (each step lowers the sorted load vector), a guard for inputs no
/// one foresaw.
const MAX_IMPROVEMENTS: usize = 10_000;

/// Relative slack when comparing utilisations, so that rounding does not
/// count as an improvement and loop.
const EPSILON: f64 = 1e-9;

/// Places `flows` on spines; `previous` (flow key -> spine) is kept where
/// it still holds. Flows within one leaf need no spine and are left out.
pub fn place_flows(
    fabric: &Fabric,
    flows: &[FabricFlow],
    previous: &BTreeMap<String, String>,
) -> Result<Placement, PlacementError> {
    let mut seen = BTreeSet::new();
    let mut candidates: Vec<Vec<String>> = Vec::with_capacity(flows.len());
    for flow in flows {
        if !(flow.rate.is_finite() && flow.rate >= 0.0) {
            return Err(PlacementError::BadRate {
                key: flow.key.clone(),
            });
        }
        if !seen.insert(flow.key.as_str()) {
            return Err(PlacementError::DuplicateKey {
                key: flow.key.clone(),
            });
        }
        if flow.source_leaf == flow.destination_leaf {
            candidates.push(Vec::new());
            continue;
        }
        let spines = fabric.spines_between(&flow.source_leaf, &flow.destination_leaf);
        if spines.is_empty() {
            return Err(PlacementError::NoSpine {
                key: flow.key.clone(),
                source_leaf: flow.source_leaf.clone(),
                destination_leaf: flow.destination_leaf.clone(),
            });
        }
        candidates.push(spines);
    }
    let mut state = State::new(fabric, flows, candidates);
    // 1. Flows placed before keep their spine where it still exists.
    for (i, flow) in flows.iter().enumerate() {
        if let Some(spine) = previous.get(&flow.key)
            && state.candidates[i].contains(spine)
        {
            state.assign(i, spine.clone());
        }
    }
    // 2. New flows, largest first, on their best spine.
    let mut order: Vec<usize> = (0..flows.len())
        .filter(|&i| state.spine[i].is_none() && !state.candidates[i].is_empty())
        .collect();
    order.sort_by(|&a, &b| {
        flows[b]
            .rate
            .total_cmp(&flows[a].rate)
            .then_with(|| flows[a].key.cmp(&flows[b].key))
    });
    for i in order {
        let best = state.candidates[i]
            .iter()
            .min_by(|a, b| {
                state
                    .bottleneck_with(i, a)
                    .total_cmp(&state.bottleneck_with(i, b))
                    .then_with(|| state.sum_with(i, a).total_cmp(&state.sum_with(i, b)))
                    .then_with(|| a.cmp(b))
            })
            .cloned();
        if let Some(spine) = best {
            state.assign(i, spine);
        }
    }
    // 3. Improve while the bottleneck can be relieved.
    for _ in 0..MAX_IMPROVEMENTS {
        if !state.improve_once() {
            break;
        }
    }
    let spine_of: BTreeMap<String, String> = flows
        .iter()
        .zip(&state.spine)
        .filter_map(|(flow, spine)| spine.clone().map(|s| (flow.key.clone(), s)))
        .collect();
    let moved = spine_of
        .iter()
        .filter(|(key, spine)| previous.get(*key).is_some_and(|before| before != *spine))
        .count();
    Ok(Placement {
        max_utilization: state.max_utilization(),
        lower_bound: lower_bound(fabric, flows),
        spine_of,
        moved,
    })
}

/// A link of the fabric: up (leaf, spine) or down (spine, leaf).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum LinkKey {
    Up(String, String),
    Down(String, String),
}

struct State<'a> {
    fabric: &'a Fabric,
    flows: &'a [FabricFlow],
    candidates: Vec<Vec<String>>,
    spine: Vec<Option<String>>,
    load: BTreeMap<LinkKey, f64>,
}

impl<'a> State<'a> {
    fn new(fabric: &'a Fabric, flows: &'a [FabricFlow], candidates: Vec<Vec<String>>) -> State<'a> {
        State {
            fabric,
            flows,
            candidates,
            spine: vec![None; flows.len()],
            load: BTreeMap::new(),
        }
    }

    fn links_of(&self, i: usize, spine: &str) -> [LinkKey; 2] {
        let flow = &self.flows[i];
        [
            LinkKey::Up(flow.source_leaf.clone(), spine.to_string()),
            LinkKey::Down(spine.to_string(), flow.destination_leaf.clone()),
        ]
    }

    fn capacity(&self, link: &LinkKey) -> f64 {
        let capacity = match link {
            LinkKey::Up(a, b) => self.fabric.up.get(&(a.clone(), b.clone())),
            LinkKey::Down(a, b) => self.fabric.down.get(&(a.clone(), b.clone())),
        };
        capacity.copied().unwrap_or(0.0)
    }

    fn utilization(&self, link: &LinkKey, load: f64) -> f64 {
        let capacity = self.capacity(link);
        if capacity > 0.0 {
            load / capacity
        } else if load > 0.0 {
            f64::INFINITY
        } else {
            0.0
        }
    }

    fn load_of(&self, link: &LinkKey) -> f64 {
        self.load.get(link).copied().unwrap_or(0.0)
    }

    fn assign(&mut self, i: usize, spine: String) {
        let rate = self.flows[i].rate;
        for link in self.links_of(i, &spine) {
            *self.load.entry(link).or_default() += rate;
        }
        self.spine[i] = Some(spine);
    }

    fn unassign(&mut self, i: usize) -> Option<String> {
        let spine = self.spine[i].take()?;
        let rate = self.flows[i].rate;
        for link in self.links_of(i, &spine) {
            if let Some(load) = self.load.get_mut(&link) {
                *load -= rate;
            }
        }
        Some(spine)
    }

    /// The flow's bottleneck utilisation were it added on `spine`.
    fn bottleneck_with(&self, i: usize, spine: &str) -> f64 {
        let rate = self.flows[i].rate;
        self.links_of(i, spine)
            .iter()
            .map(|link| self.utilization(link, self.load_of(link) + rate))
            .fold(0.0, f64::max)
    }

    fn sum_with(&self, i: usize, spine: &str) -> f64 {
        let rate = self.flows[i].rate;
        self.links_of(i, spine)
            .iter()
            .map(|link| self.utilization(link, self.load_of(link) + rate))
            .sum()
    }

    /// The flow's bottleneck where it is.
    fn bottleneck(&self, i: usize) -> f64 {
        match &self.spine[i] {
            Some(spine) => self
                .links_of(i, spine)
                .iter()
                .map(|link| self.utilization(link, self.load_of(link)))
                .fold(0.0, f64::max),
            None => 0.0,
        }
    }

    fn max_utilization(&self) -> f64 {
        self.load
            .iter()
            .map(|(link, load)| self.utilization(link, *load))
            .fold(0.0, f64::max)
    }

    /// The highest utilisation among `links`.
    fn peak(&self, links: &BTreeSet<LinkKey>) -> f64 {
        links
            .iter()
            .map(|link| self.utilization(link, self.load_of(link)))
            .fold(0.0, f64::max)
    }

    /// One step that strictly lowers the load on a most loaded link;
    /// false when none is found.
    fn improve_once(&mut self) -> bool {
        let max = self.max_utilization();
        if max <= 0.0 {
            return false;
        }
        let threshold = max * (1.0 - EPSILON);
        // Flows on a link at the maximum, in flow order.
        let hot: Vec<usize> = (0..self.flows.len())
            .filter(|&i| self.spine[i].is_some() && self.bottleneck(i) >= threshold)
            .collect();
        for &i in &hot {
            if self.try_move(i) {
                return true;
            }
        }
        for &i in &hot {
            if self.try_swap(i) {
                return true;
            }
        }
        for &i in &hot {
            if self.try_kempe(i) {
                return true;
            }
        }
        false
    }

    /// Moves flow `i` to the spine with the lowest bottleneck when that is
    /// strictly below its current one.
    fn try_move(&mut self, i: usize) -> bool {
        let Some(current) = self.spine[i].clone() else {
            return false;
        };
        let now = self.bottleneck(i);
        let Some(spine) = self.unassign(i) else {
            return false;
        };
        let best = self.candidates[i]
            .iter()
            .filter(|s| **s != current)
            .map(|s| (self.bottleneck_with(i, s), s.clone()))
            .min_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
        match best {
            Some((after, target)) if after < now * (1.0 - EPSILON) => {
                self.assign(i, target);
                true
            }
            _ => {
                self.assign(i, spine);
                false
            }
        }
    }

    /// Swaps the spines of flow `i` and another flow when the highest load
    /// among the links the swap touches strictly drops.
    fn try_swap(&mut self, i: usize) -> bool {
        let Some(spine_i) = self.spine[i].clone() else {
            return false;
        };
        for j in 0..self.flows.len() {
            let Some(spine_j) = self.spine[j].clone() else {
                continue;
            };
            if j == i
                || spine_j == spine_i
                || !self.candidates[i].contains(&spine_j)
                || !self.candidates[j].contains(&spine_i)
            {
                continue;
            }
            let touched: BTreeSet<LinkKey> = self
                .links_of(i, &spine_i)
                .into_iter()
                .chain(self.links_of(i, &spine_j))
                .chain(self.links_of(j, &spine_i))
                .chain(self.links_of(j, &spine_j))
                .collect();
            let before = self.peak(&touched);
            self.unassign(i);
            self.unassign(j);
            self.assign(i, spine_j.clone());
            self.assign(j, spine_i.clone());
            if self.peak(&touched) < before * (1.0 - EPSILON) {
                return true;
            }
            self.unassign(i);
            self.unassign(j);
            self.assign(i, spine_i.clone());
            self.assign(j, spine_j);
        }
        false
    }

    /// Moves flow `j` from spine `from` to `to`, noting the links touched.
    fn recolour(&mut self, j: usize, from: &str, to: &str, touched: &mut BTreeSet<LinkKey>) {
        touched.extend(self.links_of(j, from));
        touched.extend(self.links_of(j, to));
        self.unassign(j);
        self.assign(j, to.to_string());
    }

    /// For flow `i` on a hot link: takes it off, finds a spine `a` free
    /// enough at its source leaf and `b` at its destination leaf, exchanges
    /// `a` and `b` along the alternating path of flows from the destination
    /// leaf, and puts `i` on `a`; kept when the highest load among the
    /// links it touched strictly drops. Meant for equal-rate flows (a
    /// collective's), where it is König's step; with other rates it is
    /// tried and usually refused.
    fn try_kempe(&mut self, i: usize) -> bool {
        let Some(current) = self.spine[i].clone() else {
            return false;
        };
        let rate = self.flows[i].rate;
        let destination = self.flows[i].destination_leaf.clone();
        for a in self.candidates[i].clone() {
            for b in self.candidates[i].clone() {
                if a == b || a == current {
                    continue;
                }
                let snapshot = self.spine.clone();
                let loads = self.load.clone();
                self.unassign(i);
                // The alternating path: at a destination leaf, the flows on
                // `a` going down to it become `b`; at their source leaves,
                // the flows on `b` going up become `a`; and so on.
                let mut touched: BTreeSet<LinkKey> = self
                    .links_of(i, &a)
                    .into_iter()
                    .chain(self.links_of(i, &current))
                    .collect();
                let mut leaf = destination.clone();
                let mut steps = 0;
                let mut broken = false;
                loop {
                    steps += 1;
                    if steps > self.flows.len() {
                        broken = true;
                        break;
                    }
                    // A flow into `leaf` through `a`, if any.
                    let Some(j) = (0..self.flows.len()).find(|&j| {
                        self.spine[j].as_deref() == Some(a.as_str())
                            && self.flows[j].destination_leaf == leaf
                            && (self.flows[j].rate - rate).abs() <= rate * EPSILON
                            && self.candidates[j].contains(&b)
                    }) else {
                        break;
                    };
                    self.recolour(j, &a, &b, &mut touched);
                    let up_leaf = self.flows[j].source_leaf.clone();
                    // A flow out of that leaf through `b`, if any (not j).
                    let Some(k) = (0..self.flows.len()).find(|&k| {
                        k != j
                            && self.spine[k].as_deref() == Some(b.as_str())
                            && self.flows[k].source_leaf == up_leaf
                            && (self.flows[k].rate - rate).abs() <= rate * EPSILON
                            && self.candidates[k].contains(&a)
                    }) else {
                        break;
                    };
                    self.recolour(k, &b, &a, &mut touched);
                    leaf = self.flows[k].destination_leaf.clone();
                }
                let before = {
                    // The peak over the touched links before the chain.
                    let saved = std::mem::replace(&mut self.load, loads.clone());
                    let peak = self.peak(&touched);
                    self.load = saved;
                    peak
                };
                if !broken {
                    self.assign(i, a.clone());
                    if self.peak(&touched) < before * (1.0 - EPSILON) {
                        return true;
                    }
                }
                self.spine = snapshot;
                self.load = loads;
            }
        }
        false
    }
}

/// No placement's most loaded link is below this: for each leaf, the
/// total rate of its flows up (or down) over the total capacity of its up
/// (or down) links; and when all rates are equal, whole flows: a leaf with
/// `n` flows over `s` equal links has a link with `ceil(n / s)` of them.
pub fn lower_bound(fabric: &Fabric, flows: &[FabricFlow]) -> f64 {
    let mut up_rate: BTreeMap<&str, (f64, usize)> = BTreeMap::new();
    let mut down_rate: BTreeMap<&str, (f64, usize)> = BTreeMap::new();
    for flow in flows.iter().filter(|f| f.source_leaf != f.destination_leaf) {
        let up = up_rate.entry(flow.source_leaf.as_str()).or_default();
        up.0 += flow.rate;
        up.1 += 1;
        let down = down_rate.entry(flow.destination_leaf.as_str()).or_default();
        down.0 += flow.rate;
        down.1 += 1;
    }
    let equal_rate = flows
        .iter()
        .filter(|f| f.source_leaf != f.destination_leaf)
        .map(|f| f.rate)
        .collect::<Vec<f64>>();
    let equal_rate = match equal_rate.first() {
        Some(first)
            if equal_rate
                .iter()
                .all(|r| (r - first).abs() <= first * EPSILON) =>
        {
            Some(*first)
        }
        _ => None,
    };
    let mut bound: f64 = 0.0;
    let sides = [(&up_rate, true), (&down_rate, false)];
    for (rates, is_up) in sides {
        for (leaf, (rate, count)) in rates {
            let capacities: Vec<f64> = if is_up {
                fabric
                    .up
                    .iter()
                    .filter(|((l, _), _)| l == leaf)
                    .map(|(_, c)| *c)
                    .collect()
            } else {
                fabric
                    .down
                    .iter()
                    .filter(|((_, l), _)| l == leaf)
                    .map(|(_, c)| *c)
                    .collect()
            };
            let total: f64 = capacities.iter().sum();
            if total > 0.0 {
                bound = bound.max(rate / total);
            }
            let equal_links = capacities
                .first()
                .is_some_and(|c| capacities.iter().all(|x| (x - c).abs() <= c * EPSILON));
            if let (Some(flow_rate), true, Some(capacity)) =
                (equal_rate, equal_links, capacities.first())
                && *capacity > 0.0
            {
                let per_link = count.div_ceil(capacities.len());
                bound = bound.max(per_link as f64 * flow_rate / capacity);
            }
        }
    }
    bound
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `leaves` leaves and `spines` spines, every leaf to every spine both
    /// ways at capacity 1.
    fn clos(leaves: usize, spines: usize) -> Fabric {
        let mut fabric = Fabric::default();
        for l in 1..=leaves {
            for s in 1..=spines {
                fabric
                    .up
                    .insert((format!("leaf{l}"), format!("spine{s}")), 1.0);
                fabric
                    .down
                    .insert((format!("spine{s}"), format!("leaf{l}")), 1.0);
            }
        }
        fabric
    }

    fn flow(key: &str, from: usize, to: usize, rate: f64) -> FabricFlow {
        FabricFlow {
            key: key.to_string(),
            source_leaf: format!("leaf{from}"),
            destination_leaf: format!("leaf{to}"),
            rate,
        }
    }

    /// The loads each link carries under a placement.
    fn loads(flows: &[FabricFlow], placement: &Placement) -> BTreeMap<String, f64> {
        let mut loads = BTreeMap::new();
        for flow in flows {
            if let Some(spine) = placement.spine_of.get(&flow.key) {
                *loads
                    .entry(format!("{}>{}", flow.source_leaf, spine))
                    .or_default() += flow.rate;
                *loads
                    .entry(format!("{}>{}", spine, flow.destination_leaf))
                    .or_default() += flow.rate;
            }
        }
        loads
    }

    /// A ring all-reduce over `hosts` hosts, `per_leaf` per leaf, in the
    /// order that makes every hop cross leaves, with `channels` rings
    /// (the second one reversed, as NCCL runs them).
    fn ring(leaves: usize, per_leaf: usize, channels: usize) -> Vec<FabricFlow> {
        let hosts: Vec<usize> = (0..per_leaf).flat_map(|_| 1..=leaves).collect();
        let n = hosts.len();
        let mut flows = Vec::new();
        for c in 0..channels {
            for i in 0..n {
                let (a, b) = if c % 2 == 0 {
                    (hosts[i], hosts[(i + 1) % n])
                } else {
                    (hosts[(i + 1) % n], hosts[i])
                };
                flows.push(flow(&format!("c{c}-{i}"), a, b, 1.0));
            }
        }
        flows
    }

    #[test]
    fn a_ring_collective_shares_no_link() {
        // 4 leaves, 4 spines, 2 hosts per leaf, two channels: every leaf
        // sends 4 flows and receives 4, so one per link is possible.
        let fabric = clos(4, 4);
        let flows = ring(4, 2, 2);
        let placement = place_flows(&fabric, &flows, &BTreeMap::new()).expect("placed");
        assert_eq!(placement.spine_of.len(), 16);
        assert_eq!(placement.lower_bound, 1.0);
        assert_eq!(placement.max_utilization, 1.0, "{placement:?}");
        assert!(loads(&flows, &placement).values().all(|l| *l <= 1.0));
    }

    #[test]
    fn many_flow_sets_reach_the_bound() {
        // Pseudo-random flow sets (a fixed linear congruential sequence):
        // the equal-rate ones must meet the lower bound exactly.
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = |n: usize| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((seed >> 33) as usize) % n
        };
        let fabric = clos(8, 4);
        for round in 0..200 {
            let count = 4 + next(40);
            let flows: Vec<FabricFlow> = (0..count)
                .map(|i| {
                    let a = 1 + next(8);
                    let mut b = 1 + next(8);
                    if a == b {
                        b = a % 8 + 1;
                    }
                    flow(&format!("f{i}"), a, b, 1.0)
                })
                .collect();
            let placement = place_flows(&fabric, &flows, &BTreeMap::new()).expect("placed");
            assert_eq!(
                placement.max_utilization, placement.lower_bound,
                "round {round}: {flows:?}"
            );
        }
    }

    #[test]
    fn flows_within_a_leaf_take_no_spine() {
        let fabric = clos(2, 2);
        let flows = vec![flow("local", 1, 1, 5.0), flow("across", 1, 2, 1.0)];
        let placement = place_flows(&fabric, &flows, &BTreeMap::new()).expect("placed");
        assert_eq!(placement.spine_of.keys().collect::<Vec<_>>(), ["across"]);
        assert_eq!(placement.max_utilization, 1.0);
    }

    #[test]
    fn a_flow_that_ends_moves_nothing_else() {
        let fabric = clos(4, 4);
        let flows = ring(4, 2, 2);
        let first = place_flows(&fabric, &flows, &BTreeMap::new()).expect("placed");
        let remaining: Vec<FabricFlow> = flows.iter().skip(1).cloned().collect();
        let second = place_flows(&fabric, &remaining, &first.spine_of).expect("placed");
        assert_eq!(second.moved, 0);
        for flow in &remaining {
            assert_eq!(second.spine_of[&flow.key], first.spine_of[&flow.key]);
        }
        // And one that starts again takes the free spines, moving nothing.
        let third = place_flows(&fabric, &flows, &second.spine_of).expect("placed");
        assert_eq!(third.moved, 0);
        assert_eq!(third.max_utilization, 1.0);
    }

    #[test]
    fn a_bad_previous_placement_is_repaired_with_few_moves() {
        // Everything on spine1 before (what one hash bucket might do).
        let fabric = clos(4, 4);
        let flows = ring(4, 1, 1);
        let previous: BTreeMap<String, String> = flows
            .iter()
            .map(|f| (f.key.clone(), "spine1".to_string()))
            .collect();
        let placement = place_flows(&fabric, &flows, &previous).expect("placed");
        assert_eq!(placement.max_utilization, 1.0);
        // One flow per leaf uplink needed anyway: each leaf sends one flow,
        // so nothing needed to move at all.
        assert_eq!(placement.moved, 0);
        let flows = ring(4, 2, 1);
        let previous: BTreeMap<String, String> = flows
            .iter()
            .map(|f| (f.key.clone(), "spine1".to_string()))
            .collect();
        let placement = place_flows(&fabric, &flows, &previous).expect("placed");
        assert_eq!(placement.max_utilization, 1.0);
        // Each leaf had two flows up spine1: one of each pair moves.
        assert_eq!(placement.moved, 4);
    }

    #[test]
    fn the_same_input_gives_the_same_placement() {
        let fabric = clos(4, 4);
        let flows = ring(4, 2, 2);
        let a = place_flows(&fabric, &flows, &BTreeMap::new()).expect("placed");
        let mut reversed = flows.clone();
        reversed.reverse();
        let b = place_flows(&fabric, &flows, &BTreeMap::new()).expect("placed");
        let c = place_flows(&fabric, &reversed, &BTreeMap::new()).expect("placed");
        assert_eq!(a, b);
        assert_eq!(a.max_utilization, c.max_utilization);
    }

    #[test]
    fn unequal_capacities_and_rates_balance_utilisation() {
        // leaf1 has a fat uplink to spine1 (3) and a thin one to spine2
        // (1): three of four equal flows go through spine1.
        let mut fabric = Fabric::default();
        for (spine, capacity) in [("spine1", 3.0), ("spine2", 1.0)] {
            fabric.up.insert(("leaf1".into(), spine.into()), capacity);
            fabric.down.insert((spine.into(), "leaf2".into()), capacity);
        }
        let flows: Vec<FabricFlow> = (0..4).map(|i| flow(&format!("f{i}"), 1, 2, 1.0)).collect();
        let placement = place_flows(&fabric, &flows, &BTreeMap::new()).expect("placed");
        let on_spine1 = placement
            .spine_of
            .values()
            .filter(|s| *s == "spine1")
            .count();
        assert_eq!(on_spine1, 3);
        assert_eq!(placement.max_utilization, 1.0);
    }

    #[test]
    fn bad_flows_are_named() {
        let fabric = clos(2, 2);
        let error = place_flows(&fabric, &[flow("x", 1, 2, f64::NAN)], &BTreeMap::new())
            .expect_err("NaN refused");
        assert!(error.to_string().contains("flow x"), "{error}");
        let error = place_flows(
            &fabric,
            &[flow("x", 1, 2, 1.0), flow("x", 2, 1, 1.0)],
            &BTreeMap::new(),
        )
        .expect_err("duplicate refused");
        assert!(error.to_string().contains("listed twice"), "{error}");
        let error = place_flows(&fabric, &[flow("y", 1, 9, 1.0)], &BTreeMap::new())
            .expect_err("unknown leaf refused");
        assert!(error.to_string().contains("leaf9"), "{error}");
    }
}
