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

/// Share of the traffic that is AI traffic in [`ai`] (at its peak), the
/// rest being the gravity background.
const AI_SHARE: f64 = 0.6;

/// `snapshots` matrices of AI-cluster traffic over a gravity background:
/// the nodes with the most capacity are the datacentres; training jobs
/// span two to four of them and synchronise in a ring (each datacentre
/// sends its gradient shard to the next) in bursts that recur with the
/// job's own period; every job also writes a checkpoint to the largest
/// datacentre (the storage site) every 12 to 24 snapshots, spread over
/// two snapshots. The gravity background carries the rest. Totals are
/// scaled as in [`gravity`]: at the AI peak, spread over shortest paths,
/// the average link would run at `load`.
pub fn ai(network: &Network, seed: u64, snapshots: usize, load: f64) -> Vec<TrafficMatrix> {
    let n = network.nodes.len();
    let mut background = gravity(network, seed, snapshots, load * (1.0 - AI_SHARE));
    if n < 2 {
        return background;
    }
    let mut rng = SplitMix64(seed ^ 0xA1A1_A1A1_A1A1_A1A1);
    let mut capacity_at = vec![0.0; n];
    for edge in &network.edges {
        capacity_at[edge.src] += edge.capacity;
    }
    let mut by_capacity: Vec<usize> = (0..n).collect();
    by_capacity.sort_by(|&a, &b| capacity_at[b].total_cmp(&capacity_at[a]).then(a.cmp(&b)));
    let datacentres: Vec<usize> = by_capacity[..(n / 5).clamp(2, 8).min(n)].to_vec();
    let storage = datacentres[0];
    struct Job {
        ring: Vec<usize>,
        period: usize,
        phase: usize,
        burst: usize,
        checkpoint_every: usize,
        weight: f64,
    }
    let jobs: Vec<Job> = (0..(datacentres.len() / 2).max(1))
        .map(|_| {
            let size = (2 + (rng.next_u64() % 3) as usize).min(datacentres.len());
            // A random subset of the datacentres, in random order.
            let mut pool = datacentres.clone();
            let mut ring = Vec::with_capacity(size);
            for _ in 0..size {
                let pick = (rng.next_u64() % pool.len() as u64) as usize;
                ring.push(pool.swap_remove(pick));
            }
            let period = 3 + (rng.next_u64() % 4) as usize;
            Job {
                phase: (rng.next_u64() % period as u64) as usize,
                burst: 1 + (rng.next_u64() % 2) as usize,
                period,
                checkpoint_every: 12 + (rng.next_u64() % 13) as usize,
                weight: 0.5 + rng.unit(),
                ring,
            }
        })
        .collect();
    let total_capacity: f64 = network.edges.iter().map(|e| e.capacity).sum();
    let ai_total = load * AI_SHARE * total_capacity / mean_hops(network);
    // Each job's sync rate, so that all jobs bursting at once make the AI
    // share; a checkpoint moves at half a job's sync rate.
    let weights: f64 = jobs.iter().map(|j| j.weight * j.ring.len() as f64).sum();
    for (t, matrix) in background.iter_mut().enumerate() {
        for job in &jobs {
            let rate = ai_total * job.weight / weights;
            if (t + job.phase) % job.period < job.burst {
                for (i, &src) in job.ring.iter().enumerate() {
                    let dst = job.ring[(i + 1) % job.ring.len()];
                    if src != dst {
                        matrix.values[src * n + dst] += rate * (0.9 + 0.2 * rng.unit());
                    }
                }
            }
            let writer = job.ring[0];
            if writer != storage && (t + job.phase) % job.checkpoint_every < 2 {
                matrix.values[writer * n + storage] += 0.5 * rate * job.ring.len() as f64;
            }
        }
    }
    background
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

    #[test]
    fn ai_traffic_bursts_between_datacentres_over_the_background() {
        // A ring of ten nodes; nodes 0 and 5 have fat extra links, so they
        // are the two datacentres.
        let mut links: Vec<(usize, usize, f64)> =
            (0..10).map(|i| (i, (i + 1) % 10, 10.0)).collect();
        links.push((0, 5, 100.0));
        let net = network(10, &links);
        let series = ai(&net, 3, 48, 0.3);
        assert_eq!(series, ai(&net, 3, 48, 0.3));
        assert_eq!(series.len(), 48);
        let background = gravity(&net, 3, 48, 0.3 * (1.0 - AI_SHARE));
        let extra: Vec<f64> = series
            .iter()
            .zip(&background)
            .map(|(a, b)| a.get(0, 5) + a.get(5, 0) - b.get(0, 5) - b.get(5, 0))
            .collect();
        // Between the datacentres: bursts on some snapshots, nothing extra
        // on others (the job's period is 3 to 6 with bursts of 1 or 2).
        let bursting = extra.iter().filter(|x| **x > 1e-9).count();
        assert!(bursting > 0 && bursting < 48, "{extra:?}");
        // Elsewhere it is the background alone.
        for (a, b) in series.iter().zip(&background) {
            assert_eq!(a.get(2, 7), b.get(2, 7));
            assert!(a.values.iter().all(|v| v.is_finite() && *v >= 0.0));
        }
    }
}
