//! Candidate paths: shortest paths and Yen's k shortest loop-free paths,
//! with edge-disjoint and SRLG-disjoint variants and a latency bound.
//!
//! Paths are edge-index sequences. Ties are broken by the node sequence, so
//! the same network always gives the same paths in the same order.

use std::cmp::Ordering;
use std::collections::{BTreeSet, BinaryHeap};

use crate::network::Network;

/// A loop-free path between two nodes.
#[derive(Debug, Clone, PartialEq)]
pub struct Path {
    /// Edge indices, in order.
    pub edges: Vec<usize>,
    /// Node indices, `edges.len() + 1` of them.
    pub nodes: Vec<usize>,
    /// Sum of the edges' routing weights.
    pub cost: f64,
    /// Sum of the edges' latencies, in microseconds.
    pub latency_us: f64,
}

/// Which candidate paths to compute.
#[derive(Debug, Clone, PartialEq)]
pub struct PathOptions {
    /// How many paths per node pair.
    pub k: usize,
    /// Require the paths of a pair to share no edge (in either direction).
    pub edge_disjoint: bool,
    /// SRLG of each edge (by edge index); when given, the paths of a pair
    /// share no SRLG.
    pub srlgs: Option<Vec<Vec<String>>>,
    /// Leave out paths longer than this, in microseconds.
    pub max_latency_us: Option<f64>,
}

impl PathOptions {
    pub fn k_shortest(k: usize) -> PathOptions {
        PathOptions {
            k,
            edge_disjoint: false,
            srlgs: None,
            max_latency_us: None,
        }
    }
}

#[derive(PartialEq)]
struct Queued {
    cost: f64,
    node: usize,
}

impl Eq for Queued {}

impl Ord for Queued {
    fn cmp(&self, other: &Self) -> Ordering {
        // Min-heap on cost, then on node index.
        other
            .cost
            .total_cmp(&self.cost)
            .then_with(|| other.node.cmp(&self.node))
    }
}

impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Reusable Dijkstra state for one network.
///
/// Searches towards one destination are A* searches guided by the exact
/// distance to that destination in the whole network (a lower bound once
/// edges or nodes are banned, so still exact). That makes the many spur
/// searches of Yen's algorithm cheap: the reason large networks (Kdl,
/// ASN2k) get their candidate paths in seconds rather than hours.
pub struct ShortestPaths<'a> {
    network: &'a Network,
    out: Vec<Vec<usize>>,
    inc: Vec<Vec<usize>>,
    dist: Vec<f64>,
    via: Vec<Option<usize>>,
    /// Nodes whose `dist`/`via` the last search set: resetting only those
    /// keeps a search proportional to what it explored, not to the network.
    touched: Vec<usize>,
    banned_edges: Vec<bool>,
    banned_nodes: Vec<bool>,
    /// Per destination, the distances to it from every node, computed on
    /// first use (n² floats at most: 24 MB for 1,739 nodes).
    to_dst: Vec<Option<Vec<f64>>>,
}

impl<'a> ShortestPaths<'a> {
    pub fn new(network: &'a Network) -> ShortestPaths<'a> {
        let n = network.nodes.len();
        let mut inc = vec![Vec::new(); n];
        for (i, edge) in network.edges.iter().enumerate() {
            if let Some(list) = inc.get_mut(edge.dst) {
                list.push(i);
            }
        }
        ShortestPaths {
            network,
            out: network.out_edges(),
            inc,
            dist: vec![f64::INFINITY; n],
            via: vec![None; n],
            touched: Vec::new(),
            banned_edges: Vec::new(),
            banned_nodes: Vec::new(),
            to_dst: vec![None; n],
        }
    }

    /// Distances from every node to `dst` (Dijkstra on reversed edges),
    /// kept for the searches that follow.
    fn prepare_destination(&mut self, dst: usize) {
        if self.to_dst.get(dst).is_some_and(Option::is_some) {
            return;
        }
        let n = self.network.nodes.len();
        let mut dist = vec![f64::INFINITY; n];
        if dst < n {
            dist[dst] = 0.0;
            let mut heap = BinaryHeap::new();
            heap.push(Queued {
                cost: 0.0,
                node: dst,
            });
            while let Some(Queued { cost, node }) = heap.pop() {
                if cost > dist[node] {
                    continue;
                }
                for &e in &self.inc[node] {
                    let edge = &self.network.edges[e];
                    let next = cost + edge.weight;
                    if next < dist[edge.src] {
                        dist[edge.src] = next;
                        heap.push(Queued {
                            cost: next,
                            node: edge.src,
                        });
                    }
                }
            }
        }
        if let Some(slot) = self.to_dst.get_mut(dst) {
            *slot = Some(dist);
        }
    }

    /// The cheapest path from `src` to `dst` avoiding banned edges and
    /// nodes (`src` itself is never banned).
    pub fn shortest(
        &mut self,
        src: usize,
        dst: usize,
        banned_edges: &[bool],
        banned_nodes: &[bool],
    ) -> Option<Path> {
        let n = self.network.nodes.len();
        if src >= n || dst >= n {
            return None;
        }
        self.prepare_destination(dst);
        let to_dst = self.to_dst.get_mut(dst)?.take()?;
        let found = self.search(src, dst, banned_edges, banned_nodes, &to_dst);
        self.to_dst[dst] = Some(to_dst);
        found
    }

    fn search(
        &mut self,
        src: usize,
        dst: usize,
        banned_edges: &[bool],
        banned_nodes: &[bool],
        to_dst: &[f64],
    ) -> Option<Path> {
        let n = self.network.nodes.len();
        if !to_dst[src].is_finite() {
            return None;
        }
        for &node in &self.touched {
            self.dist[node] = f64::INFINITY;
            self.via[node] = None;
        }
        self.touched.clear();
        self.dist[src] = 0.0;
        self.touched.push(src);
        let mut heap = BinaryHeap::new();
        heap.push(Queued {
            cost: to_dst[src],
            node: src,
        });
        while let Some(Queued { cost, node }) = heap.pop() {
            if cost > self.dist[node] + to_dst[node] {
                continue;
            }
            if node == dst {
                break;
            }
            let cost = self.dist[node];
            for &e in &self.out[node] {
                let edge = &self.network.edges[e];
                if banned_edges.get(e).copied().unwrap_or(false)
                    || banned_nodes.get(edge.dst).copied().unwrap_or(false)
                {
                    continue;
                }
                let remaining = to_dst[edge.dst];
                if !remaining.is_finite() {
                    continue;
                }
                let next = cost + edge.weight;
                let better = next < self.dist[edge.dst]
                    || (next == self.dist[edge.dst]
                        && self.via[edge.dst]
                            .is_some_and(|old| self.network.edges[old].src > edge.src));
                if better {
                    if self.dist[edge.dst].is_infinite() {
                        self.touched.push(edge.dst);
                    }
                    self.dist[edge.dst] = next;
                    self.via[edge.dst] = Some(e);
                    heap.push(Queued {
                        cost: next + remaining,
                        node: edge.dst,
                    });
                }
            }
        }
        if !self.dist[dst].is_finite() {
            return None;
        }
        let mut edges = Vec::new();
        let mut node = dst;
        while node != src {
            let e = self.via[node]?;
            edges.push(e);
            node = self.network.edges[e].src;
            if edges.len() > n {
                return None; // a cycle would mean a bug; never loop forever
            }
        }
        edges.reverse();
        Some(self.path_from_edges(src, edges))
    }

    fn path_from_edges(&self, src: usize, edges: Vec<usize>) -> Path {
        let mut nodes = Vec::with_capacity(edges.len() + 1);
        nodes.push(src);
        let mut cost = 0.0;
        let mut latency_us = 0.0;
        for &e in &edges {
            let edge = &self.network.edges[e];
            nodes.push(edge.dst);
            cost += edge.weight;
            latency_us += edge.latency_us;
        }
        Path {
            edges,
            nodes,
            cost,
            latency_us,
        }
    }

    /// Yen's k shortest loop-free paths from `src` to `dst`, cheapest first.
    pub fn k_shortest(&mut self, src: usize, dst: usize, k: usize) -> Vec<Path> {
        let n = self.network.nodes.len();
        let m = self.network.edges.len();
        let mut found: Vec<Path> = Vec::new();
        let Some(first) = self.shortest(src, dst, &[], &[]) else {
            return found;
        };
        found.push(first);
        // Where each found path left its parent (Lawler's refinement of
        // Yen): spurs before that point would only find candidates the
        // parent already produced.
        let mut deviations: Vec<usize> = vec![0];
        // Candidates ordered by (cost, node sequence): deterministic.
        let mut candidates: BTreeSet<(OrderedCost, Vec<usize>, Vec<usize>, usize)> =
            BTreeSet::new();
        // Kept allocated across searches; each search unsets what it set
        // (resetting whole arrays would cost O(network) per spur search).
        let mut banned_edges = std::mem::take(&mut self.banned_edges);
        let mut banned_nodes = std::mem::take(&mut self.banned_nodes);
        banned_edges.resize(m, false);
        banned_nodes.resize(n, false);
        let mut set_edges: Vec<usize> = Vec::new();
        while found.len() < k {
            let Some(previous) = found.last().cloned() else {
                break;
            };
            let start = deviations.last().copied().unwrap_or(0);
            for i in start..previous.edges.len() {
                let spur = previous.nodes[i];
                let root_nodes = &previous.nodes[..=i];
                set_edges.clear();
                for path in &found {
                    if path.nodes.len() > i && path.nodes[..=i] == *root_nodes {
                        banned_edges[path.edges[i]] = true;
                        set_edges.push(path.edges[i]);
                    }
                }
                for &node in &previous.nodes[..i] {
                    banned_nodes[node] = true;
                }
                let spur_path = self.shortest(spur, dst, &banned_edges, &banned_nodes);
                for &e in &set_edges {
                    banned_edges[e] = false;
                }
                for &node in &previous.nodes[..i] {
                    banned_nodes[node] = false;
                }
                if let Some(spur_path) = spur_path {
                    let mut edges = previous.edges[..i].to_vec();
                    edges.extend_from_slice(&spur_path.edges);
                    let path = self.path_from_edges(src, edges);
                    if !found.iter().any(|p| p.edges == path.edges) {
                        candidates.insert((
                            OrderedCost(path.cost),
                            path.nodes.clone(),
                            path.edges,
                            i,
                        ));
                    }
                }
            }
            // The same path can be a candidate twice (from two spur
            // points); take the first that is new.
            let mut next = None;
            while let Some((_, _, edges, deviation)) = candidates.pop_first() {
                if !found.iter().any(|p| p.edges == edges) {
                    next = Some((edges, deviation));
                    break;
                }
            }
            let Some((edges, deviation)) = next else {
                break;
            };
            found.push(self.path_from_edges(src, edges));
            deviations.push(deviation);
        }
        self.banned_edges = banned_edges;
        self.banned_nodes = banned_nodes;
        found
    }
}

/// A cost that sorts (total order on f64).
#[derive(Debug, Clone, Copy, PartialEq)]
struct OrderedCost(f64);

impl Eq for OrderedCost {}

impl Ord for OrderedCost {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

impl PartialOrd for OrderedCost {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Candidate paths for one pair under `options`: Yen's paths in order,
/// keeping only those within the latency bound and, for the disjoint
/// variants, disjoint from the paths kept before them.
pub fn candidate_paths(
    network: &Network,
    finder: &mut ShortestPaths<'_>,
    src: usize,
    dst: usize,
    options: &PathOptions,
) -> Vec<Path> {
    let disjoint = options.edge_disjoint || options.srlgs.is_some();
    // Disjoint variants look deeper in Yen's order to find enough paths.
    let depth = if disjoint { options.k * 8 } else { options.k };
    let mut kept: Vec<Path> = Vec::new();
    for path in finder.k_shortest(src, dst, depth.max(1)) {
        if kept.len() == options.k {
            break;
        }
        if options
            .max_latency_us
            .is_some_and(|bound| path.latency_us > bound)
        {
            continue;
        }
        if options.edge_disjoint && kept.iter().any(|k| shares_edge(network, k, &path)) {
            continue;
        }
        if let Some(srlgs) = &options.srlgs
            && kept.iter().any(|k| shares_srlg(srlgs, k, &path))
        {
            continue;
        }
        kept.push(path);
    }
    kept
}

/// [`candidate_paths`] of many pairs, as edge lists, in the pairs' order,
/// on every core: destinations are dealt to threads (destination modulo
/// the thread count) so that each thread's distances to a destination
/// serve all the pairs it gets. A pair a worker could not do (it cannot
/// panic on input; if it did) has no paths.
pub fn candidate_paths_of_pairs(
    network: &Network,
    pairs: &[(usize, usize)],
    options: &PathOptions,
) -> Vec<Vec<Vec<usize>>> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 16);
    let mut found: Vec<Vec<Vec<usize>>> = vec![Vec::new(); pairs.len()];
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|worker| {
                scope.spawn(move || {
                    let mut finder = ShortestPaths::new(network);
                    let mut out = Vec::new();
                    for (i, &(src, dst)) in pairs.iter().enumerate() {
                        if dst % threads != worker {
                            continue;
                        }
                        let paths: Vec<Vec<usize>> =
                            candidate_paths(network, &mut finder, src, dst, options)
                                .into_iter()
                                .map(|p| p.edges)
                                .collect();
                        out.push((i, paths));
                    }
                    out
                })
            })
            .collect();
        for worker in workers {
            if let Ok(results) = worker.join() {
                for (i, paths) in results {
                    found[i] = paths;
                }
            }
        }
    });
    // The paths were allocated by the threads among their search's
    // scratch, every other pair by each: copied once in the pairs' order,
    // later passes over them (the fast solver's flattening and checks,
    // each evaluation) read memory in order. On ASN2k a check's scan took
    // 0.16 s before this copy and 0.10 s after; the copy takes about as
    // long as one scan.
    for paths in &mut found {
        *paths = paths.clone();
    }
    found
}

fn shares_edge(network: &Network, a: &Path, b: &Path) -> bool {
    let key = |e: usize| {
        let edge = &network.edges[e];
        (edge.src.min(edge.dst), edge.src.max(edge.dst))
    };
    let a_keys: BTreeSet<(usize, usize)> = a.edges.iter().map(|&e| key(e)).collect();
    b.edges.iter().any(|&e| a_keys.contains(&key(e)))
}

fn shares_srlg(srlgs: &[Vec<String>], a: &Path, b: &Path) -> bool {
    let groups = |p: &Path| -> BTreeSet<String> {
        p.edges
            .iter()
            .filter_map(|&e| srlgs.get(e))
            .flatten()
            .cloned()
            .collect()
    };
    !groups(a).is_disjoint(&groups(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::Edge;

    /// A network from undirected (a, b, weight) triples.
    pub(crate) fn network(n: usize, links: &[(usize, usize, f64)]) -> Network {
        let mut edges = Vec::new();
        for &(a, b, w) in links {
            for (src, dst) in [(a, b), (b, a)] {
                edges.push(Edge {
                    src,
                    dst,
                    capacity: 10.0,
                    weight: w,
                    latency_us: w * 1000.0,
                });
            }
        }
        Network {
            name: "t".into(),
            nodes: (0..n).map(|i| i.to_string()).collect(),
            edges,
        }
    }

    #[test]
    fn yen_on_the_classic_example() {
        // Yen's example graph (C=0, D=1, E=2, F=3, G=4, H=5), directed.
        let arcs = [
            (0, 1, 3.0),
            (0, 2, 2.0),
            (1, 3, 4.0),
            (2, 1, 1.0),
            (2, 3, 2.0),
            (2, 4, 3.0),
            (3, 4, 2.0),
            (3, 5, 1.0),
            (4, 5, 2.0),
        ];
        let network = Network {
            name: "yen".into(),
            nodes: (0..6).map(|i| i.to_string()).collect(),
            edges: arcs
                .iter()
                .map(|&(src, dst, weight)| Edge {
                    src,
                    dst,
                    capacity: 1.0,
                    weight,
                    latency_us: 0.0,
                })
                .collect(),
        };
        let mut finder = ShortestPaths::new(&network);
        let paths = finder.k_shortest(0, 5, 3);
        let got: Vec<(Vec<usize>, f64)> = paths.iter().map(|p| (p.nodes.clone(), p.cost)).collect();
        assert_eq!(
            got,
            [
                (vec![0, 2, 3, 5], 5.0),
                (vec![0, 2, 4, 5], 7.0),
                (vec![0, 1, 3, 5], 8.0),
            ]
        );
    }

    #[test]
    fn disjoint_and_latency_bound() {
        // Square 0-1-3 and 0-2-3 plus a diagonal 1-2.
        let network = network(
            4,
            &[
                (0, 1, 1.0),
                (1, 3, 1.0),
                (0, 2, 2.0),
                (2, 3, 2.0),
                (1, 2, 1.0),
            ],
        );
        let mut finder = ShortestPaths::new(&network);
        let all = candidate_paths(&network, &mut finder, 0, 3, &PathOptions::k_shortest(4));
        assert_eq!(all.len(), 4);
        assert_eq!(all[0].nodes, [0, 1, 3]);
        let disjoint = PathOptions {
            edge_disjoint: true,
            ..PathOptions::k_shortest(3)
        };
        let paths = candidate_paths(&network, &mut finder, 0, 3, &disjoint);
        let nodes: Vec<Vec<usize>> = paths.iter().map(|p| p.nodes.clone()).collect();
        assert_eq!(nodes, [vec![0, 1, 3], vec![0, 2, 3]]);
        let bounded = PathOptions {
            max_latency_us: Some(3000.0),
            ..PathOptions::k_shortest(4)
        };
        let paths = candidate_paths(&network, &mut finder, 0, 3, &bounded);
        assert!(paths.iter().all(|p| p.latency_us <= 3000.0));
        assert_eq!(paths.len(), 1, "only 0-1-3 is within 3 ms: {paths:?}");
    }

    #[test]
    fn srlg_disjoint() {
        let network = network(4, &[(0, 1, 1.0), (1, 3, 1.0), (0, 2, 2.0), (2, 3, 2.0)]);
        // Edges 0..4 are 0-1 both ways and 1-3; the 0-2 edges share a
        // group with 0-1.
        let mut srlgs = vec![Vec::new(); network.edges.len()];
        srlgs[0] = vec!["duct".to_string()];
        srlgs[4] = vec!["duct".to_string()];
        let options = PathOptions {
            srlgs: Some(srlgs),
            ..PathOptions::k_shortest(2)
        };
        let mut finder = ShortestPaths::new(&network);
        let paths = candidate_paths(&network, &mut finder, 0, 3, &options);
        assert_eq!(paths.len(), 1);
    }

    /// Yen's costs equal the k cheapest of all simple paths, found by brute
    /// force, on small pseudo-random graphs.
    #[test]
    fn yen_matches_brute_force() {
        let mut state = 12345u64;
        let mut next = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as usize
        };
        for _ in 0..30 {
            let n = 6 + next() % 3;
            let mut links = Vec::new();
            for a in 0..n {
                for b in a + 1..n {
                    if next() % 3 == 0 {
                        links.push((a, b, (1 + next() % 5) as f64));
                    }
                }
            }
            let network = network(n, &links);
            let out = network.out_edges();
            // All simple paths 0 -> n-1 by depth-first search.
            let mut all: Vec<f64> = Vec::new();
            let mut stack = vec![(0usize, vec![0usize], 0.0f64)];
            while let Some((node, visited, cost)) = stack.pop() {
                if node == n - 1 {
                    all.push(cost);
                    continue;
                }
                for &e in &out[node] {
                    let edge = &network.edges[e];
                    if !visited.contains(&edge.dst) {
                        let mut v = visited.clone();
                        v.push(edge.dst);
                        stack.push((edge.dst, v, cost + edge.weight));
                    }
                }
            }
            all.sort_by(f64::total_cmp);
            let mut finder = ShortestPaths::new(&network);
            let yen: Vec<f64> = finder
                .k_shortest(0, n - 1, 6)
                .iter()
                .map(|p| p.cost)
                .collect();
            let expected: Vec<f64> = all.iter().copied().take(6).collect();
            assert_eq!(yen, expected, "{links:?}");
        }
    }

    #[test]
    fn unreachable_gives_nothing() {
        let network = network(3, &[(0, 1, 1.0)]);
        let mut finder = ShortestPaths::new(&network);
        assert!(finder.k_shortest(0, 2, 3).is_empty());
        assert!(finder.k_shortest(0, 9, 3).is_empty());
    }
}
