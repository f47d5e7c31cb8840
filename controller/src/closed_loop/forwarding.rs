//! Where traffic goes under a plan, at the level of nodes: what the closed
//! loop predicts link loads with.
//!
//! A plan's per-router part gives next-hop weights per destination node
//! (`planning::desired_state`); every other destination takes the
//! lowest-latency paths with equal shares, as `southbound::render` makes
//! the underlay. So this is the forwarding the routers hold once the plan
//! is applied, minus what does not steer by destination (pinned SRv6
//! paths, which the planner already counts in its own MLU).
//!
//! Pure: the same plan and matrix give the same loads.

use std::collections::{BTreeMap, HashMap};

use aiwan_planner::network::{Network, TrafficMatrix};
use serde::Deserialize;

/// Hops a share may take before it counts as looping (and is dropped from
/// the loads, reported in [`RoutedLoads::looped_bps`]).
const MAX_HOPS: usize = 64;

#[derive(Deserialize)]
struct PlannedPart {
    #[serde(default)]
    routes: Vec<PlannedRoute>,
}

#[derive(Deserialize)]
struct PlannedRoute {
    destination: String,
    next_hops: Vec<PlannedHop>,
}

#[derive(Deserialize)]
struct PlannedHop {
    next_hop: String,
    weight: f64,
}

/// Node-level forwarding: per (router, destination) the edges out and the
/// share of each.
#[derive(Debug, Clone, Default)]
pub struct Forwarding {
    planned: HashMap<(usize, usize), Vec<(usize, f64)>>,
    /// Lowest-latency next edges per (router, destination), computed on
    /// first use per destination.
    underlay: HashMap<usize, Vec<Vec<(usize, f64)>>>,
    /// Where one unit of each pair goes, computed on first use: the loop
    /// routes several matrices an interval over the same forwarding (on a
    /// network of 754 routers, half a million pairs each time).
    fractions: HashMap<(usize, usize), PairFractions>,
}

/// A pair's fraction on each edge it crosses, and what is unrouted and
/// what loops.
type PairFractions = (Vec<(usize, f64)>, f64, f64);

/// Pairs whose fractions are kept at most; past this the cache starts
/// again (the pairs of a network of 1,400 routers).
const FRACTIONS_CACHED_MAX: usize = 2_000_000;

/// Link loads of a routed matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct RoutedLoads {
    /// bit/s per edge of the network.
    pub edges: Vec<f64>,
    /// Traffic that reached no route (a destination cut off).
    pub unrouted_bps: f64,
    pub looped_bps: f64,
}

impl Forwarding {
    /// The forwarding of a plan's desired state (router id -> its part as
    /// stored); routers or destinations the network does not know are
    /// skipped, as are next hops with no link.
    pub fn from_desired(
        network: &Network,
        desired: &BTreeMap<String, serde_json::Value>,
    ) -> Forwarding {
        let index = network.index();
        let mut planned = HashMap::new();
        for (router, part) in desired {
            let Some(&r) = index.get(router.as_str()) else {
                continue;
            };
            let Ok(part) = PlannedPart::deserialize(part) else {
                continue;
            };
            for route in part.routes {
                let Some(&d) = index.get(route.destination.as_str()) else {
                    continue;
                };
                let hops: Vec<(usize, f64)> = route
                    .next_hops
                    .iter()
                    .filter(|hop| hop.weight.is_finite() && hop.weight > 0.0)
                    .filter_map(|hop| {
                        let &next = index.get(hop.next_hop.as_str())?;
                        Some((network.edge_between(r, next)?, hop.weight))
                    })
                    .collect();
                let total: f64 = hops.iter().map(|(_, w)| w).sum();
                if total > 0.0 {
                    planned.insert(
                        (r, d),
                        hops.into_iter().map(|(e, w)| (e, w / total)).collect(),
                    );
                }
            }
        }
        Forwarding {
            planned,
            underlay: HashMap::new(),
            fractions: HashMap::new(),
        }
    }

    /// Forwarding with no plan: lowest-latency paths everywhere.
    pub fn underlay_only() -> Forwarding {
        Forwarding::default()
    }

    /// The edges out of `router` towards `destination`, with their shares.
    fn next_edges(
        &mut self,
        network: &Network,
        router: usize,
        destination: usize,
    ) -> Vec<(usize, f64)> {
        if let Some(hops) = self.planned.get(&(router, destination)) {
            return hops.clone();
        }
        let table = self
            .underlay
            .entry(destination)
            .or_insert_with(|| underlay_towards(network, destination));
        table.get(router).cloned().unwrap_or_default()
    }

    /// The fraction of one unit from `src` to `dst` on each edge it
    /// crosses, and the fractions unrouted and looping.
    pub fn pair_fractions(&mut self, network: &Network, src: usize, dst: usize) -> PairFractions {
        self.cached_fractions(network, src, dst).clone()
    }

    /// [`Self::pair_fractions`], computed once per pair: `network` must be
    /// the one the forwarding was made for (as for every other method).
    fn cached_fractions(&mut self, network: &Network, src: usize, dst: usize) -> &PairFractions {
        if !self.fractions.contains_key(&(src, dst)) {
            if self.fractions.len() >= FRACTIONS_CACHED_MAX {
                self.fractions.clear();
            }
            let computed = self.walk(network, src, dst);
            self.fractions.insert((src, dst), computed);
        }
        &self.fractions[&(src, dst)]
    }

    /// Follows one unit from `src` hop by hop towards `dst`.
    fn walk(&mut self, network: &Network, src: usize, dst: usize) -> PairFractions {
        let mut on_edge: BTreeMap<usize, f64> = BTreeMap::new();
        let mut frontier: BTreeMap<usize, f64> = BTreeMap::from([(src, 1.0)]);
        let (mut unrouted, mut looped) = (0.0, 0.0);
        for _ in 0..MAX_HOPS {
            if frontier.is_empty() {
                break;
            }
            let mut next: BTreeMap<usize, f64> = BTreeMap::new();
            for (node, amount) in frontier {
                if node == dst {
                    continue;
                }
                let hops = self.next_edges(network, node, dst);
                if hops.is_empty() {
                    unrouted += amount;
                    continue;
                }
                for (edge, share) in hops {
                    let part = amount * share;
                    *on_edge.entry(edge).or_default() += part;
                    *next.entry(network.edges[edge].dst).or_default() += part;
                }
            }
            next.remove(&dst);
            frontier = next;
        }
        looped += frontier.values().sum::<f64>();
        (on_edge.into_iter().collect(), unrouted, looped)
    }

    /// Loads of `matrix` (and, when given, the standard deviation of each
    /// load from per-pair deviations `sigma`, pairs taken as independent).
    pub fn route(
        &mut self,
        network: &Network,
        matrix: &TrafficMatrix,
        sigma: Option<&TrafficMatrix>,
    ) -> (RoutedLoads, Vec<f64>) {
        let mut loads = RoutedLoads {
            edges: vec![0.0; network.edges.len()],
            unrouted_bps: 0.0,
            looped_bps: 0.0,
        };
        let mut variance = vec![0.0; network.edges.len()];
        for (src, dst, rate) in matrix.demands() {
            let deviation = sigma.map_or(0.0, |s| s.get(src, dst));
            let (fractions, unrouted, looped) = self.cached_fractions(network, src, dst);
            for &(edge, fraction) in fractions {
                loads.edges[edge] += rate * fraction;
                variance[edge] += (deviation * fraction).powi(2);
            }
            loads.unrouted_bps += rate * unrouted;
            loads.looped_bps += rate * looped;
        }
        (loads, variance.into_iter().map(f64::sqrt).collect())
    }
}

/// Per router, the lowest-latency next edges towards `destination`, equal
/// shares between ties (and between parallel links).
fn underlay_towards(network: &Network, destination: usize) -> Vec<Vec<(usize, f64)>> {
    let n = network.nodes.len();
    // Dijkstra on the reversed graph from the destination, latency as the
    // weight (at least 1 µs, as render and Network do).
    let mut into: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, edge) in network.edges.iter().enumerate() {
        if let Some(list) = into.get_mut(edge.dst) {
            list.push(i);
        }
    }
    let mut distance = vec![f64::INFINITY; n];
    let mut done = vec![false; n];
    if destination >= n {
        return vec![Vec::new(); n];
    }
    distance[destination] = 0.0;
    for _ in 0..n {
        let Some(node) = (0..n)
            .filter(|&i| !done[i] && distance[i].is_finite())
            .min_by(|&a, &b| distance[a].total_cmp(&distance[b]))
        else {
            break;
        };
        done[node] = true;
        for &e in &into[node] {
            let edge = &network.edges[e];
            let candidate = distance[node] + edge.weight.max(1.0);
            if candidate < distance[edge.src] {
                distance[edge.src] = candidate;
            }
        }
    }
    let out = network.out_edges();
    (0..n)
        .map(|router| {
            if router == destination || !distance[router].is_finite() {
                return Vec::new();
            }
            let best: Vec<usize> = out[router]
                .iter()
                .copied()
                .filter(|&e| {
                    let edge = &network.edges[e];
                    let through = distance[edge.dst] + edge.weight.max(1.0);
                    (through - distance[router]).abs() <= 1e-9 * distance[router].max(1.0)
                })
                .collect();
            let share = 1.0 / best.len().max(1) as f64;
            best.into_iter().map(|e| (e, share)).collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::southbound::fixtures::diamond;

    fn matrix(network: &Network, entries: &[(&str, &str, f64)]) -> TrafficMatrix {
        let index = network.index();
        let mut m = TrafficMatrix::zeros(network.nodes.len());
        for (s, d, rate) in entries {
            m.values[index[s] * network.nodes.len() + index[d]] = *rate;
        }
        m
    }

    fn load_on(network: &Network, loads: &RoutedLoads, src: &str, dst: &str) -> f64 {
        let index = network.index();
        let e = network.edge_between(index[src], index[dst]).expect("edge");
        loads.edges[e]
    }

    #[test]
    fn without_a_plan_traffic_takes_the_fastest_path() {
        let network = Network::from_topology(&diamond());
        let m = matrix(&network, &[("r1", "r4", 6e9), ("r4", "r1", 1e9)]);
        let (loads, _) = Forwarding::underlay_only().route(&network, &m, None);
        assert_eq!(load_on(&network, &loads, "r1", "r2"), 6e9);
        assert_eq!(load_on(&network, &loads, "r2", "r4"), 6e9);
        assert_eq!(load_on(&network, &loads, "r1", "r3"), 0.0);
        assert_eq!(load_on(&network, &loads, "r4", "r2"), 1e9);
        assert_eq!(loads.unrouted_bps, 0.0);
    }

    #[test]
    fn the_plan_s_weights_split_and_the_rest_follows_the_underlay() {
        let network = Network::from_topology(&diamond());
        let desired = BTreeMap::from([(
            "r1".to_string(),
            serde_json::json!({"routes": [{"destination": "r4", "next_hops": [
                {"next_hop": "r2", "weight": 0.25}, {"next_hop": "r3", "weight": 0.75}]}]}),
        )]);
        let m = matrix(&network, &[("r1", "r4", 8e9)]);
        let sigma = matrix(&network, &[("r1", "r4", 4e8)]);
        let mut forwarding = Forwarding::from_desired(&network, &desired);
        let (loads, deviation) = forwarding.route(&network, &m, Some(&sigma));
        assert_eq!(load_on(&network, &loads, "r1", "r2"), 2e9);
        assert_eq!(load_on(&network, &loads, "r1", "r3"), 6e9);
        // r2 and r3 have no plan for r4: the underlay takes them on.
        assert_eq!(load_on(&network, &loads, "r3", "r4"), 6e9);
        let index = network.index();
        let e = network
            .edge_between(index["r1"], index["r3"])
            .expect("edge");
        assert!((deviation[e] - 3e8).abs() < 1.0);
    }

    #[test]
    fn a_loop_is_reported_not_followed_forever() {
        let network = Network::from_topology(&diamond());
        let part = |next: &str| serde_json::json!({"routes": [{"destination": "r4", "next_hops": [{"next_hop": next, "weight": 1.0}]}]});
        let desired = BTreeMap::from([
            ("r1".to_string(), part("r2")),
            ("r2".to_string(), part("r1")),
        ]);
        let m = matrix(&network, &[("r1", "r4", 1e9)]);
        let (loads, _) = Forwarding::from_desired(&network, &desired).route(&network, &m, None);
        assert_eq!(loads.looped_bps, 1e9);
    }
}
