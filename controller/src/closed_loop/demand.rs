//! Measured demand: the node-to-node traffic matrix of one telemetry
//! interval, per traffic class, from the flow records in the store.
//!
//! A record's ingress node is its exporter's node (an exporter is known by
//! the address it exports from, and optionally its observation domain; see
//! [`ExporterMapping`]); its egress node is the one the destination prefix
//! belongs to (longest prefix match on the topology's prefixes, a site's
//! prefix standing for the site's WAN routers, split evenly between them as
//! the planner splits a site's demand). Bytes are already scaled by the
//! sampling rate in the store; the class comes from the store's DSCP table.
//!
//! Routers export what they forward, so a flow crossing three exporting
//! routers is seen three times. Only the sighting where it enters the WAN
//! counts: a record whose source prefix belongs to another node than its
//! exporter's is transit and is left out (counted). A source in no known
//! prefix (traffic from outside the topology) enters where it is first
//! exported; operators export on their edge routers' ingress for that.
//!
//! Nothing here guesses: records of unknown exporters, destinations in no
//! prefix and transit sightings are counted and reported, never assigned.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use aiwan_collectors::store::ExporterCell;
use aiwan_planner::Topology;
use aiwan_planner::classes::Class;
use aiwan_planner::network::{Network, TrafficMatrix};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::planning::prefix_nodes;

/// How many unknown exporters one interval lists by address (the rest are
/// only counted): a flood of spoofed sources must not grow a report.
pub const MAX_LISTED_UNKNOWN: usize = 16;

/// An exporter address (and observation domain) that stands for a node.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ExporterMapping {
    /// The node's id in the topology.
    pub node: String,
    /// The address its flow records come from (UDP source for NetFlow and
    /// IPFIX, agent address for sFlow).
    pub address: IpAddr,
    /// Only records of this observation domain (v9 source id, IPFIX
    /// observation domain, sFlow sub-agent); any when unset.
    #[serde(default)]
    pub observation_domain: Option<u32>,
}

/// Why a mapping cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DemandError {
    #[error("exporters[{index}]: node {node:?} is not in the topology")]
    UnknownNode { index: usize, node: String },
    #[error("exporters[{index}]: {address} (domain {domain}) is already mapped to node {other:?}")]
    Duplicate {
        index: usize,
        address: IpAddr,
        domain: String,
        other: String,
    },
}

/// Index of a class in the per-class arrays.
pub fn class_index(class: Class) -> usize {
    match class {
        Class::AiSync => 0,
        Class::AiBulk => 1,
        Class::BestEffort => 2,
    }
}

fn class_of_name(name: &str) -> Class {
    match name {
        "ai-sync" => Class::AiSync,
        "ai-bulk" => Class::AiBulk,
        _ => Class::BestEffort,
    }
}

/// The node-to-node matrix of one interval.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MeasuredInterval {
    pub start_ms: i64,
    pub duration_ms: i64,
    /// Bit/s per class ([`class_index`]), indexed as the network's nodes.
    #[serde(skip)]
    pub classes: [TrafficMatrix; 3],
    /// Bytes counted into the matrix, and the sampled packets behind them
    /// (for the sampling error).
    pub bytes: u64,
    pub packets: u64,
    /// Bytes of records whose exporter maps to no node.
    pub unknown_exporter_bytes: u64,
    /// Those exporters (at most [`MAX_LISTED_UNKNOWN`]), `address/domain`.
    pub unknown_exporters: Vec<String>,
    /// Bytes to destinations in no prefix of the topology.
    pub unknown_destination_bytes: u64,
    /// Bytes seen by an exporter after they entered the WAN elsewhere.
    pub transit_bytes: u64,
    /// Bytes that enter and leave at the same node (no WAN path).
    pub local_bytes: u64,
}

impl MeasuredInterval {
    pub fn empty(start_ms: i64, duration_ms: i64, n: usize) -> MeasuredInterval {
        MeasuredInterval {
            start_ms,
            duration_ms,
            classes: [
                TrafficMatrix::zeros(n),
                TrafficMatrix::zeros(n),
                TrafficMatrix::zeros(n),
            ],
            bytes: 0,
            packets: 0,
            unknown_exporter_bytes: 0,
            unknown_exporters: Vec::new(),
            unknown_destination_bytes: 0,
            transit_bytes: 0,
            local_bytes: 0,
        }
    }

    /// All classes together.
    pub fn total(&self) -> TrafficMatrix {
        let mut total = self.classes[0].clone();
        for class in &self.classes[1..] {
            for (t, v) in total.values.iter_mut().zip(&class.values) {
                *t += v;
            }
        }
        total
    }
}

/// Turns exporter cells into node matrices; built once per topology (and
/// exporter mapping) and reused every interval.
pub struct DemandModel {
    topology: Topology,
    network: Network,
    /// (address, Some(domain)) before (address, None): the specific wins.
    exporters: HashMap<(IpAddr, Option<u32>), usize>,
    /// Prefix text -> the nodes it belongs to (empty: none), learnt as the
    /// texts come. Bounded by the store's own prefix table; cleared when it
    /// grows past [`PREFIX_CACHE_LIMIT`].
    prefixes: HashMap<String, Vec<usize>>,
}

/// Distinct prefix texts remembered before the cache starts again.
const PREFIX_CACHE_LIMIT: usize = 1 << 16;

impl DemandModel {
    pub fn new(
        topology: &Topology,
        exporters: &[ExporterMapping],
    ) -> Result<DemandModel, DemandError> {
        let network = Network::from_topology(topology);
        let index = network.index();
        let mut by_key: HashMap<(IpAddr, Option<u32>), usize> = HashMap::new();
        for (i, mapping) in exporters.iter().enumerate() {
            let Some(&node) = index.get(mapping.node.as_str()) else {
                return Err(DemandError::UnknownNode {
                    index: i,
                    node: mapping.node.clone(),
                });
            };
            let key = (mapping.address, mapping.observation_domain);
            if let Some(&other) = by_key.get(&key) {
                return Err(DemandError::Duplicate {
                    index: i,
                    address: mapping.address,
                    domain: mapping
                        .observation_domain
                        .map_or_else(|| "any".to_string(), |d| d.to_string()),
                    other: network.nodes[other].clone(),
                });
            }
            by_key.insert(key, node);
        }
        Ok(DemandModel {
            topology: topology.clone(),
            network,
            exporters: by_key,
            prefixes: HashMap::new(),
        })
    }

    pub fn network(&self) -> &Network {
        &self.network
    }

    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// The node an exporter stands for, if mapped.
    pub fn exporter_node(&self, address: IpAddr, domain: u32) -> Option<usize> {
        self.exporters
            .get(&(address, Some(domain)))
            .or_else(|| self.exporters.get(&(address, None)))
            .copied()
    }

    /// Whether any exporter is mapped to `node`.
    pub fn exports(&self, node: usize) -> bool {
        self.exporters.values().any(|&n| n == node)
    }

    fn nodes_of_prefix(&mut self, text: &str) -> Vec<usize> {
        if let Some(nodes) = self.prefixes.get(text) {
            return nodes.clone();
        }
        let nodes = match text.parse::<IpNet>() {
            Ok(prefix) => prefix_nodes(&self.topology, &self.network, &prefix),
            Err(_) => Vec::new(),
        };
        if self.prefixes.len() >= PREFIX_CACHE_LIMIT {
            self.prefixes.clear();
        }
        self.prefixes.insert(text.to_string(), nodes.clone());
        nodes
    }

    /// The matrices of the buckets in `cells` (as the store returns them,
    /// any order), oldest first. `buckets` lists every interval start to
    /// report, so an interval without traffic is a zero matrix, not a gap.
    pub fn intervals(
        &mut self,
        cells: &[ExporterCell],
        buckets: &[i64],
        duration_ms: i64,
    ) -> Vec<MeasuredInterval> {
        let n = self.network.nodes.len();
        let mut by_start: BTreeMap<i64, MeasuredInterval> = buckets
            .iter()
            .map(|&start| (start, MeasuredInterval::empty(start, duration_ms, n)))
            .collect();
        let seconds = duration_ms as f64 / 1000.0;
        for cell in cells {
            let interval = by_start
                .entry(cell.bucket_start_ms)
                .or_insert_with(|| MeasuredInterval::empty(cell.bucket_start_ms, duration_ms, n));
            let Some(ingress) = self.exporter_node(cell.exporter, cell.observation_domain) else {
                interval.unknown_exporter_bytes += cell.bytes;
                let name = format!("{}/{}", cell.exporter, cell.observation_domain);
                if interval.unknown_exporters.len() < MAX_LISTED_UNKNOWN
                    && !interval.unknown_exporters.contains(&name)
                {
                    interval.unknown_exporters.push(name);
                }
                continue;
            };
            let sources = self.nodes_of_prefix(&cell.src_prefix);
            if !sources.is_empty() && !sources.contains(&ingress) {
                interval.transit_bytes += cell.bytes;
                continue;
            }
            let egress = self.nodes_of_prefix(&cell.dst_prefix);
            if egress.is_empty() {
                interval.unknown_destination_bytes += cell.bytes;
                continue;
            }
            if egress.contains(&ingress) {
                interval.local_bytes += cell.bytes;
                continue;
            }
            let rate = if seconds > 0.0 {
                cell.bytes as f64 * 8.0 / seconds
            } else {
                0.0
            };
            let share = rate / egress.len() as f64;
            let matrix = &mut interval.classes[class_index(class_of_name(&cell.class))];
            for &dst in &egress {
                matrix.values[ingress * n + dst] += share;
            }
            interval.bytes += cell.bytes;
            interval.packets += cell.packets;
        }
        by_start.into_values().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::southbound::fixtures::diamond_with_hosts as diamond;

    fn cell(
        exporter: &str,
        domain: u32,
        src: &str,
        dst: &str,
        class: &str,
        bytes: u64,
    ) -> ExporterCell {
        ExporterCell {
            bucket_start_ms: 10_000,
            bucket_ms: 1_000,
            exporter: exporter.parse().expect("address"),
            observation_domain: domain,
            src_prefix: src.into(),
            dst_prefix: dst.into(),
            class: class.into(),
            bytes,
            packets: bytes / 1000,
            flows: 1,
        }
    }

    fn mapping(node: &str, address: &str, domain: Option<u32>) -> ExporterMapping {
        ExporterMapping {
            node: node.into(),
            address: address.parse().expect("address"),
            observation_domain: domain,
        }
    }

    #[test]
    fn records_become_node_to_node_rates_by_class() {
        // Diamond: r1 (site a, 10.1.0.0/24 behind it) to r4 (site b,
        // 10.4.0.0/24); r2 exports too, and two domains share r4's address.
        let topology = diamond();
        let mut model = DemandModel::new(
            &topology,
            &[
                mapping("r1", "192.0.2.1", None),
                mapping("r2", "192.0.2.2", None),
                mapping("r4", "192.0.2.4", Some(7)),
            ],
        )
        .expect("mapping");
        let index = model.network().index();
        let (r1, r4) = (index["r1"], index["r4"]);
        let cells = [
            // 1 MB/s of ai-sync and 0.5 MB/s best-effort from a to b at r1.
            cell(
                "192.0.2.1",
                0,
                "10.1.0.0/24",
                "10.4.0.0/24",
                "ai-sync",
                1_000_000,
            ),
            cell(
                "192.0.2.1",
                3,
                "10.1.0.0/24",
                "10.4.0.0/24",
                "best-effort",
                500_000,
            ),
            // The same flow seen again at r2: transit.
            cell(
                "192.0.2.2",
                0,
                "10.1.0.0/24",
                "10.4.0.0/24",
                "ai-sync",
                1_000_000,
            ),
            // b to a at r4, domain 7: counted; domain 8 is not r4's.
            cell(
                "192.0.2.4",
                7,
                "10.4.0.0/24",
                "10.1.0.0/24",
                "ai-bulk",
                250_000,
            ),
            cell("192.0.2.4", 8, "10.4.0.0/24", "10.1.0.0/24", "ai-bulk", 100),
            // From outside the topology, entering at r1, to b.
            cell(
                "192.0.2.1",
                0,
                "203.0.113.0/24",
                "10.4.0.0/24",
                "best-effort",
                1_000,
            ),
            // To nowhere known, and to r1's own prefix.
            cell(
                "192.0.2.1",
                0,
                "10.1.0.0/24",
                "198.51.100.0/24",
                "ai-sync",
                77,
            ),
            cell(
                "192.0.2.1",
                0,
                "203.0.113.0/24",
                "10.1.0.0/24",
                "ai-sync",
                55,
            ),
            // An unknown exporter.
            cell("192.0.2.99", 1, "10.1.0.0/24", "10.4.0.0/24", "ai-sync", 9),
        ];
        let intervals = model.intervals(&cells, &[9_000, 10_000], 1_000);
        assert_eq!(intervals.len(), 2);
        assert_eq!(intervals[0].start_ms, 9_000);
        assert_eq!(intervals[0].total().total(), 0.0, "an empty second is zero");
        let m = &intervals[1];
        let class = |c: Class, s, d| m.classes[class_index(c)].get(s, d);
        assert_eq!(class(Class::AiSync, r1, r4), 8_000_000.0);
        assert_eq!(class(Class::BestEffort, r1, r4), 4_008_000.0);
        assert_eq!(class(Class::AiBulk, r4, r1), 2_000_000.0);
        assert_eq!(m.total().total(), 14_008_000.0);
        assert_eq!(m.transit_bytes, 1_000_000);
        assert_eq!(m.unknown_exporter_bytes, 109);
        assert_eq!(
            m.unknown_exporters,
            vec!["192.0.2.4/8".to_string(), "192.0.2.99/1".to_string()]
        );
        assert_eq!(m.unknown_destination_bytes, 77);
        assert_eq!(m.local_bytes, 55);
    }

    #[test]
    fn sampled_records_count_as_the_store_scaled_them() {
        // The store scales by the sampling rate at ingest; the matrix takes
        // its bytes as they are, so 1-in-100 sampling of 10 kB reads 1 MB.
        let topology = diamond();
        let mut model =
            DemandModel::new(&topology, &[mapping("r1", "192.0.2.1", None)]).expect("mapping");
        let index = model.network().index();
        let (r1, r4) = (index["r1"], index["r4"]);
        let scaled = cell(
            "192.0.2.1",
            0,
            "10.1.0.0/24",
            "10.4.0.0/24",
            "ai-bulk",
            1_000_000,
        );
        let m = &model.intervals(&[scaled], &[], 1_000)[0];
        assert_eq!(
            m.classes[class_index(Class::AiBulk)].get(r1, r4),
            8_000_000.0
        );
    }

    #[test]
    fn bad_mappings_are_named() {
        let topology = diamond();
        let unknown = DemandModel::new(&topology, &[mapping("r9", "192.0.2.1", None)]);
        assert_eq!(
            unknown.err().map(|e| e.to_string()).as_deref(),
            Some("exporters[0]: node \"r9\" is not in the topology")
        );
        let twice = DemandModel::new(
            &topology,
            &[
                mapping("r1", "192.0.2.1", Some(1)),
                mapping("r2", "192.0.2.1", Some(1)),
            ],
        );
        assert_eq!(
            twice.err().map(|e| e.to_string()).as_deref(),
            Some("exporters[1]: 192.0.2.1 (domain 1) is already mapped to node \"r1\"")
        );
    }
}
