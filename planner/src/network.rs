//! The graph the solvers work on: nodes by index, directed edges with
//! capacity and a routing weight, and traffic matrices indexed the same way.

use std::collections::HashMap;

use crate::topology::Topology;

/// A directed edge.
#[derive(Debug, Clone, PartialEq)]
pub struct Edge {
    pub src: usize,
    pub dst: usize,
    /// Bits per second, positive.
    pub capacity: f64,
    /// Routing weight for shortest paths (IGP metric, latency, or 1).
    pub weight: f64,
    /// One-way latency in microseconds; 0 when unknown.
    pub latency_us: f64,
}

/// A network as the solvers see it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Network {
    pub name: String,
    /// Node names; a node's index is its position here.
    pub nodes: Vec<String>,
    pub edges: Vec<Edge>,
}

/// A traffic matrix: `values[src * n + dst]` bits per second.
#[derive(Debug, Clone, PartialEq)]
pub struct TrafficMatrix {
    pub n: usize,
    pub values: Vec<f64>,
}

impl TrafficMatrix {
    pub fn zeros(n: usize) -> TrafficMatrix {
        TrafficMatrix {
            n,
            values: vec![0.0; n * n],
        }
    }

    pub fn get(&self, src: usize, dst: usize) -> f64 {
        self.values.get(src * self.n + dst).copied().unwrap_or(0.0)
    }

    /// The non-zero off-diagonal entries as (src, dst, rate).
    pub fn demands(&self) -> Vec<(usize, usize, f64)> {
        let mut out = Vec::new();
        for src in 0..self.n {
            for dst in 0..self.n {
                let rate = self.values[src * self.n + dst];
                if src != dst && rate > 0.0 {
                    out.push((src, dst, rate));
                }
            }
        }
        out
    }

    /// Total of all entries.
    pub fn total(&self) -> f64 {
        self.values.iter().sum()
    }
}

impl Network {
    /// The index of each node name.
    pub fn index(&self) -> HashMap<&str, usize> {
        self.nodes
            .iter()
            .enumerate()
            .map(|(i, name)| (name.as_str(), i))
            .collect()
    }

    /// Outgoing edge indices of each node.
    pub fn out_edges(&self) -> Vec<Vec<usize>> {
        let mut out = vec![Vec::new(); self.nodes.len()];
        for (i, edge) in self.edges.iter().enumerate() {
            if let Some(list) = out.get_mut(edge.src) {
                list.push(i);
            }
        }
        out
    }

    /// The edge from `src` to `dst` with the largest capacity, if any.
    pub fn edge_between(&self, src: usize, dst: usize) -> Option<usize> {
        self.edges
            .iter()
            .enumerate()
            .filter(|(_, e)| e.src == src && e.dst == dst)
            .max_by(|a, b| a.1.capacity.total_cmp(&b.1.capacity))
            .map(|(i, _)| i)
    }

    /// The solver view of a stored topology. Drained links are left out;
    /// the routing weight is the latency (at least 1 µs), so shortest paths
    /// are the fastest ones.
    pub fn from_topology(topology: &Topology) -> Network {
        let nodes: Vec<String> = topology.nodes.iter().map(|n| n.id.clone()).collect();
        let index: HashMap<&str, usize> = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), i))
            .collect();
        let edges = topology
            .links
            .iter()
            .filter(|l| l.admin_up)
            .filter_map(|l| {
                Some(Edge {
                    src: *index.get(l.src.as_str())?,
                    dst: *index.get(l.dst.as_str())?,
                    capacity: l.capacity_bps as f64,
                    weight: (l.latency_us as f64).max(1.0),
                    latency_us: l.latency_us as f64,
                })
            })
            .collect();
        Network {
            name: topology.name.clone(),
            nodes,
            edges,
        }
    }
}
