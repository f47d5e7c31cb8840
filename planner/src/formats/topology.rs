//! A topology for the controller from any network file the planner reads
//! (containerlab, node-link JSON, GraphML, SNDlib XML, an Abilene link
//! table), what `aiwan topology import` takes.
//!
//! Only containerlab files say what the controller needs beyond a graph:
//! roles, sites, prefixes and interface names. From the other formats
//! every node is a WAN router with no site and no prefix (jobs name nodes,
//! not sites or prefixes), node names become identifiers (each run of
//! characters an identifier cannot hold becomes `-`: `New York` is
//! `New-York`), and each node's links get interfaces `eth1`, `eth2`, ...
//! in the file's order, as containerlab numbers them. Capacities must be
//! in the file or given; a name that two nodes map to, or that cannot be
//! made an identifier, is an error naming both.

use std::collections::BTreeMap;
use std::path::Path;

use super::{FormatError, clab, load_network};
use crate::network::Network;
use crate::{Link, Node, NodeRole, Topology};

/// Reads `path` as a topology: a `.yml`/`.yaml` file as containerlab,
/// anything else by [`load_network`] and [`from_network`].
/// `default_capacity` (bit/s) is for formats without capacities (GraphML).
pub fn load_topology(path: &Path, default_capacity: Option<f64>) -> Result<Topology, FormatError> {
    let extension = path
        .extension()
        .map(|e| e.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    if extension == "yml" || extension == "yaml" {
        return clab::load_clab(path).map_err(|error| FormatError::Invalid(error.to_string()));
    }
    let network = load_network(path, default_capacity)?;
    from_network(&network).map_err(|error| FormatError::InFile {
        path: path.to_path_buf(),
        message: error.to_string(),
    })
}

/// The identifier a node name becomes (see the module documentation).
fn identifier(name: &str) -> String {
    let mut id = String::with_capacity(name.len());
    for c in name.chars() {
        if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
            id.push(c);
        } else if !id.ends_with('-') {
            id.push('-');
        }
    }
    let id = id.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    id.chars().take(63).collect()
}

/// The controller's topology of a planner network (see the module
/// documentation). Each edge and its reverse make one link; an edge
/// without a reverse gets one like it.
pub fn from_network(network: &Network) -> Result<Topology, FormatError> {
    let mut ids: Vec<String> = Vec::with_capacity(network.nodes.len());
    let mut named: BTreeMap<String, &str> = BTreeMap::new();
    for name in &network.nodes {
        let id = identifier(name);
        crate::topology::check_identifier("node", &id).map_err(|_| {
            FormatError::invalid(format!(
                "node {name:?}: its name cannot be made an identifier"
            ))
        })?;
        if let Some(other) = named.insert(id.clone(), name) {
            return Err(FormatError::invalid(format!(
                "nodes {other:?} and {name:?} both become {id:?}"
            )));
        }
        ids.push(id);
    }
    let mut paired = vec![false; network.edges.len()];
    let mut next_interface = vec![1usize; ids.len()];
    let mut links = Vec::with_capacity(network.edges.len());
    for (i, edge) in network.edges.iter().enumerate() {
        if paired[i] {
            continue;
        }
        paired[i] = true;
        let (Some(src), Some(dst)) = (ids.get(edge.src), ids.get(edge.dst)) else {
            return Err(FormatError::invalid(format!(
                "edge {i}: a node index out of range"
            )));
        };
        let capacity = |capacity: f64| -> Result<u64, FormatError> {
            if capacity.is_finite() && capacity >= 1.0 {
                Ok(capacity.min(u64::MAX as f64) as u64)
            } else {
                Err(FormatError::invalid(format!(
                    "link {src}--{dst}: capacity {capacity} bit/s is not a positive rate"
                )))
            }
        };
        let latency = |us: f64| {
            if us.is_finite() && us > 0.0 {
                us.round() as u64
            } else {
                0
            }
        };
        let reverse = (i + 1..network.edges.len()).find(|&j| {
            !paired[j] && network.edges[j].src == edge.dst && network.edges[j].dst == edge.src
        });
        let back = match reverse {
            Some(j) => {
                paired[j] = true;
                &network.edges[j]
            }
            None => edge,
        };
        let src_interface = format!("eth{}", next_interface[edge.src]);
        next_interface[edge.src] += 1;
        let dst_interface = format!("eth{}", next_interface[edge.dst]);
        next_interface[edge.dst] += 1;
        links.push(Link {
            src: src.clone(),
            src_interface: src_interface.clone(),
            dst: dst.clone(),
            dst_interface: dst_interface.clone(),
            capacity_bps: capacity(edge.capacity)?,
            latency_us: latency(edge.latency_us),
            srlgs: Vec::new(),
            admin_up: true,
        });
        links.push(Link {
            src: dst.clone(),
            src_interface: dst_interface,
            dst: src.clone(),
            dst_interface: src_interface,
            capacity_bps: capacity(back.capacity)?,
            latency_us: latency(back.latency_us),
            srlgs: Vec::new(),
            admin_up: true,
        });
    }
    let topology = Topology {
        name: network.name.clone(),
        sites: Vec::new(),
        nodes: ids
            .into_iter()
            .map(|id| Node {
                id,
                site: None,
                role: NodeRole::WanRouter,
                prefixes: Vec::new(),
            })
            .collect(),
        links,
    };
    topology
        .validate()
        .map_err(|error| FormatError::invalid(error.to_string()))?;
    Ok(topology)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::Edge;

    fn edge(src: usize, dst: usize, capacity: f64) -> Edge {
        Edge {
            src,
            dst,
            capacity,
            weight: 1.0,
            latency_us: 1500.0,
        }
    }

    #[test]
    fn names_become_identifiers_and_links_get_interfaces() {
        let network = Network {
            name: "zoo".into(),
            nodes: vec!["New York".into(), "Washington, DC".into(), "Chicago".into()],
            edges: vec![edge(0, 1, 1e9), edge(1, 0, 2e9), edge(0, 2, 1e10)],
        };
        let topology = from_network(&network).expect("converts");
        let ids: Vec<&str> = topology.nodes.iter().map(|n| n.id.as_str()).collect();
        assert_eq!(ids, vec!["New-York", "Washington-DC", "Chicago"]);
        let links: Vec<String> = topology
            .links
            .iter()
            .map(|l| {
                format!(
                    "{}:{}>{}:{} {} {}",
                    l.src, l.src_interface, l.dst, l.dst_interface, l.capacity_bps, l.latency_us
                )
            })
            .collect();
        assert_eq!(
            links,
            vec![
                "New-York:eth1>Washington-DC:eth1 1000000000 1500",
                "Washington-DC:eth1>New-York:eth1 2000000000 1500",
                // No reverse in the file: one like it.
                "New-York:eth2>Chicago:eth1 10000000000 1500",
                "Chicago:eth1>New-York:eth2 10000000000 1500",
            ]
        );
        assert!(topology.nodes.iter().all(|n| n.role == NodeRole::WanRouter));
    }

    #[test]
    fn what_cannot_be_converted_is_named() {
        let clash = Network {
            name: "x".into(),
            nodes: vec!["a b".into(), "a-b".into()],
            edges: vec![],
        };
        let error = from_network(&clash).expect_err("clash").to_string();
        assert!(
            error.contains("\"a b\" and \"a-b\" both become \"a-b\""),
            "{error}"
        );
        let unnamed = Network {
            name: "x".into(),
            nodes: vec!["???".into()],
            edges: vec![],
        };
        let error = from_network(&unnamed).expect_err("no name").to_string();
        assert!(error.contains("\"???\""), "{error}");
        let zero = Network {
            name: "x".into(),
            nodes: vec!["a".into(), "b".into()],
            edges: vec![edge(0, 1, 0.0)],
        };
        let error = from_network(&zero).expect_err("zero").to_string();
        assert!(error.contains("link a--b: capacity 0"), "{error}");
    }
}
