//! Synthetic traffic for topologies that ship none (Topology Zoo, Teal's
//! graphs): the gravity model, seeded, so the same seed gives the same
//! matrices on every machine.

use std::collections::VecDeque;

use crate::network::{Network, TrafficMatrix};

/// SplitMix64: tiny, fast, and stable across versions (a library RNG may
/// change its stream between releases; benchmark matrices must not).
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1].
    fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }

    /// Standard normal (Box-Muller).
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.unit(), self.unit());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

/// Mean hop count of shortest paths between connected pairs (BFS).
fn mean_hops(network: &Network) -> f64 {
    let n = network.nodes.len();
    let out = network.out_edges();
    let (mut total, mut pairs) = (0u64, 0u64);
    let mut dist = vec![u32::MAX; n];
    let mut queue = VecDeque::new();
    for src in 0..n {
        dist.iter_mut().for_each(|d| *d = u32::MAX);
        dist[src] = 0;
        queue.push_back(src);
        while let Some(node) = queue.pop_front() {
            for &e in &out[node] {
                let next = network.edges[e].dst;
                if dist[next] == u32::MAX {
                    dist[next] = dist[node] + 1;
                    total += u64::from(dist[next]);
                    pairs += 1;
                    queue.push_back(next);
                }
            }
        }
    }
    if pairs == 0 {
        1.0
    } else {
        total as f64 / pairs as f64
    }
}

/// `snapshots` gravity matrices: each node's weight is its capacity with
/// log-normal spread; entry (i, j) is proportional to weight(i) * weight(j),
/// with per-snapshot log-normal noise. Totals are scaled so that, spread over
/// shortest paths, the average link would run at `load` (0.3 = 30%).
pub fn gravity(network: &Network, seed: u64, snapshots: usize, load: f64) -> Vec<TrafficMatrix> {
    let n = network.nodes.len();
    let mut rng = SplitMix64(seed);
    let mut capacity_at = vec![0.0; n];
    for edge in &network.edges {
        capacity_at[edge.src] += edge.capacity;
    }
    let weights: Vec<f64> = capacity_at
        .iter()
        .map(|c| c * (0.5 * rng.normal()).exp())
        .collect();
    let total_capacity: f64 = network.edges.iter().map(|e| e.capacity).sum();
    let target_total = load * total_capacity / mean_hops(network);
    (0..snapshots)
        .map(|_| {
            let mut matrix = TrafficMatrix::zeros(n);
            let mut sum = 0.0;
            for i in 0..n {
                for j in 0..n {
                    if i != j {
                        let value = weights[i] * weights[j] * (0.3 * rng.normal()).exp();
                        matrix.values[i * n + j] = value;
                        sum += value;
                    }
                }
            }
            if sum > 0.0 {
                for value in &mut matrix.values {
                    *value *= target_total / sum;
                }
            }
            matrix
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lp::tests::network;

    #[test]
    fn same_seed_same_matrices() {
        let net = network(4, &[(0, 1, 10.0), (1, 2, 10.0), (2, 3, 40.0)]);
        let a = gravity(&net, 7, 3, 0.3);
        assert_eq!(a, gravity(&net, 7, 3, 0.3));
        assert_ne!(a, gravity(&net, 8, 3, 0.3));
        assert_eq!(a.len(), 3);
        for m in &a {
            assert!((0..4).all(|i| m.get(i, i) == 0.0));
            assert!(m.values.iter().all(|v| v.is_finite() && *v >= 0.0));
        }
        // Mean hops on the 4-chain: (3*1 + 2*2 + 1*3) * 2 / 12 = 5/3.
        let expected_total = 0.3 * 120.0 / (5.0 / 3.0);
        assert!((a[0].total() - expected_total).abs() < 1e-9);
    }
}
