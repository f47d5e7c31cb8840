//! Reading containerlab `*.clab.yml` files.
//!
//! The file is ordinary containerlab (kinds, images and other keys are
//! accepted and ignored); aiwan reads its own facts from labels:
//!
//! | label | on | meaning |
//! | --- | --- | --- |
//! | `aiwan.role` | node, required | `wan-router`, `spine`, `leaf` or `host` |
//! | `aiwan.site` | node | the site (datacentre, PoP) the node belongs to |
//! | `aiwan.prefixes` | node | comma-separated CIDR prefixes the node originates |
//! | `aiwan.capacity` | link, required | rate such as `100G`, `400M`, `10000000000` |
//! | `aiwan.latency` | link | one-way latency such as `5ms`, `800us`; 0 when absent |
//! | `aiwan.srlgs` | link | comma-separated shared risk link groups |
//! | `aiwan.admin` | link | `up` (default) or `down` |
//!
//! Each containerlab link becomes two directed links with the same
//! attributes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::{Link, Node, NodeRole, Site, Topology, TopologyError};
use ipnet::IpNet;
use serde::Deserialize;

/// Why a containerlab file cannot be used. Every message names the place.
#[derive(Debug, thiserror::Error)]
pub enum ClabError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    InFile {
        path: PathBuf,
        source: Box<ClabError>,
    },
    #[error("not a containerlab topology: {0}")]
    Yaml(String),
    #[error("node {node:?}: {reason}")]
    Node { node: String, reason: String },
    #[error("link {link}: {reason}")]
    Link { link: String, reason: String },
    #[error(transparent)]
    Topology(#[from] TopologyError),
}

#[derive(Debug, Deserialize)]
struct ClabFile {
    name: String,
    topology: ClabTopology,
}

#[derive(Debug, Deserialize)]
struct ClabTopology {
    #[serde(default)]
    nodes: BTreeMap<String, ClabNode>,
    #[serde(default)]
    links: Vec<ClabLink>,
}

#[derive(Debug, Default, Deserialize)]
struct ClabNode {
    #[serde(default)]
    labels: BTreeMap<String, LabelValue>,
}

#[derive(Debug, Deserialize)]
struct ClabLink {
    endpoints: Vec<ClabEndpoint>,
    /// Extended-form links carry labels.
    #[serde(default)]
    labels: BTreeMap<String, LabelValue>,
    /// Brief-form links carry `vars` instead (containerlab's schema allows
    /// no labels there); aiwan reads its `aiwan.*` keys from either.
    #[serde(default)]
    vars: BTreeMap<String, serde_yaml::Value>,
}

/// A scalar of a link's `vars` as label text; `None` for lists and maps.
fn var_text(value: &serde_yaml::Value) -> Option<String> {
    match value {
        serde_yaml::Value::String(text) => Some(text.clone()),
        serde_yaml::Value::Number(n) => Some(n.to_string()),
        serde_yaml::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// An endpoint in the brief form `node:interface` or the extended form
/// `{node: ..., interface: ...}`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ClabEndpoint {
    Brief(String),
    Extended { node: String, interface: String },
}

/// Label values as YAML writes them: `100G` is a string, `10000` a number.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum LabelValue {
    Text(String),
    Integer(u64),
    Float(f64),
    Bool(bool),
}

impl LabelValue {
    fn text(&self) -> String {
        match self {
            LabelValue::Text(text) => text.clone(),
            LabelValue::Integer(n) => n.to_string(),
            LabelValue::Float(x) => x.to_string(),
            LabelValue::Bool(b) => b.to_string(),
        }
    }
}

/// Largest containerlab file read: a lab of thousands of nodes is a few
/// MB; YAML that large is a mistake or an attack.
pub const MAX_CLAB_BYTES: u64 = 64 << 20;

/// Reads and converts a containerlab file; errors name the file.
pub fn load_clab(path: &Path) -> Result<Topology, ClabError> {
    let read_error = |source| ClabError::Read {
        path: path.to_path_buf(),
        source,
    };
    let size = std::fs::metadata(path).map_err(read_error)?.len();
    if size > MAX_CLAB_BYTES {
        return Err(ClabError::InFile {
            path: path.to_path_buf(),
            source: Box::new(ClabError::Yaml(format!(
                "{size} bytes is more than the {MAX_CLAB_BYTES} a containerlab file may have"
            ))),
        });
    }
    let text = std::fs::read_to_string(path).map_err(read_error)?;
    parse_clab(&text).map_err(|source| ClabError::InFile {
        path: path.to_path_buf(),
        source: Box::new(source),
    })
}

/// The lab's per-node flow sampling, from the `aiwan.sampling` label (1 in
/// N packets, N from 1 to 65535); nodes without the label are absent.
/// The label is read by the lab only: the planner's topology has no use
/// for it.
pub fn parse_sampling(text: &str) -> Result<BTreeMap<String, u32>, ClabError> {
    let file: ClabFile =
        serde_yaml::from_str(text).map_err(|error| ClabError::Yaml(error.to_string()))?;
    let mut sampling = BTreeMap::new();
    for (name, node) in &file.topology.nodes {
        let Some(value) = node.labels.get("aiwan.sampling").map(LabelValue::text) else {
            continue;
        };
        let rate = value
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=65_535).contains(n))
            .ok_or_else(|| ClabError::Node {
                node: name.clone(),
                reason: format!(
                    "label aiwan.sampling {value:?} is not a sampling rate (1 in N, N from 1 to 65535)"
                ),
            })?;
        sampling.insert(name.clone(), rate);
    }
    Ok(sampling)
}

/// Converts the text of a containerlab file.
pub fn parse_clab(text: &str) -> Result<Topology, ClabError> {
    let file: ClabFile =
        serde_yaml::from_str(text).map_err(|error| ClabError::Yaml(error.to_string()))?;
    let mut sites: Vec<String> = Vec::new();
    let mut nodes = Vec::with_capacity(file.topology.nodes.len());
    for (name, node) in &file.topology.nodes {
        let node_error = |reason: String| ClabError::Node {
            node: name.clone(),
            reason,
        };
        let label = |key: &str| node.labels.get(key).map(LabelValue::text);
        let role_text = label("aiwan.role").ok_or_else(|| {
            node_error("missing label aiwan.role (wan-router, spine, leaf or host)".into())
        })?;
        let role = NodeRole::parse(&role_text).ok_or_else(|| {
            node_error(format!(
                "label aiwan.role {role_text:?} is not wan-router, spine, leaf or host"
            ))
        })?;
        let site = label("aiwan.site").filter(|s| !s.is_empty());
        if let Some(site) = &site
            && !sites.contains(site)
        {
            sites.push(site.clone());
        }
        let prefixes = match label("aiwan.prefixes") {
            None => Vec::new(),
            Some(list) => split_list(&list)
                .map(|p| {
                    p.parse::<IpNet>().map(|net| net.trunc()).map_err(|_| {
                        node_error(format!("label aiwan.prefixes: {p:?} is not a CIDR prefix"))
                    })
                })
                .collect::<Result<_, _>>()?,
        };
        nodes.push(Node {
            id: name.clone(),
            site,
            role,
            prefixes,
        });
    }
    sites.sort();
    let mut links = Vec::with_capacity(2 * file.topology.links.len());
    for (index, link) in file.topology.links.iter().enumerate() {
        let [a, b] = match link.endpoints.as_slice() {
            [a, b] => [endpoint(index, a)?, endpoint(index, b)?],
            other => {
                return Err(ClabError::Link {
                    link: format!("#{}", index + 1),
                    reason: format!("has {} endpoints, expected 2", other.len()),
                });
            }
        };
        let link_name = format!("{}:{}--{}:{}", a.0, a.1, b.0, b.1);
        let link_error = |reason: String| ClabError::Link {
            link: link_name.clone(),
            reason,
        };
        let label = |key: &str| {
            link.labels
                .get(key)
                .map(LabelValue::text)
                .or_else(|| link.vars.get(key).map(|v| var_text(v).unwrap_or_default()))
        };
        let capacity_text = label("aiwan.capacity")
            .ok_or_else(|| link_error("missing label aiwan.capacity (for example 100G)".into()))?;
        let capacity_bps = parse_rate(&capacity_text).ok_or_else(|| {
            link_error(format!(
                "label aiwan.capacity {capacity_text:?} is not a rate (examples: 100G, 400M, 10000000000)"
            ))
        })?;
        let latency_us = match label("aiwan.latency") {
            None => 0,
            Some(text) => parse_latency_us(&text).ok_or_else(|| {
                link_error(format!(
                    "label aiwan.latency {text:?} is not a duration (examples: 5ms, 800us, 1.5ms)"
                ))
            })?,
        };
        let srlgs: Vec<String> = label("aiwan.srlgs")
            .map(|list| split_list(&list).map(String::from).collect())
            .unwrap_or_default();
        let admin_up = match label("aiwan.admin").as_deref() {
            None | Some("up") => true,
            Some("down") => false,
            Some(other) => {
                return Err(link_error(format!(
                    "label aiwan.admin {other:?} is not up or down"
                )));
            }
        };
        for ((src, src_if), (dst, dst_if)) in [(&a, &b), (&b, &a)] {
            links.push(Link {
                src: src.clone(),
                src_interface: src_if.clone(),
                dst: dst.clone(),
                dst_interface: dst_if.clone(),
                capacity_bps,
                latency_us,
                srlgs: srlgs.clone(),
                admin_up,
            });
        }
    }
    let topology = Topology {
        name: file.name,
        sites: sites
            .into_iter()
            .map(|id| Site {
                id,
                prefixes: Vec::new(),
            })
            .collect(),
        nodes,
        links,
    };
    topology.validate()?;
    Ok(topology)
}

fn split_list(list: &str) -> impl Iterator<Item = &str> {
    list.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
}

fn endpoint(index: usize, endpoint: &ClabEndpoint) -> Result<(String, String), ClabError> {
    let bad = |text: &str| ClabError::Link {
        link: format!("#{}", index + 1),
        reason: format!("endpoint {text:?}: expected NODE:INTERFACE"),
    };
    match endpoint {
        ClabEndpoint::Brief(text) => match text.split_once(':') {
            Some((node, interface)) if !node.is_empty() && !interface.is_empty() => {
                Ok((node.to_string(), interface.to_string()))
            }
            _ => Err(bad(text)),
        },
        ClabEndpoint::Extended { node, interface } => {
            if node.is_empty() || interface.is_empty() {
                return Err(bad(&format!("{node}:{interface}")));
            }
            Ok((node.clone(), interface.clone()))
        }
    }
}

/// Parses a rate in bits per second: a number with an optional decimal
/// unit (`k`, `M`, `G`, `T`) and an optional `bps` or `b`.
pub fn parse_rate(text: &str) -> Option<u64> {
    let text = text.trim();
    let text = text
        .strip_suffix("bps")
        .or_else(|| text.strip_suffix("b"))
        .unwrap_or(text)
        .trim_end();
    let (number, scale) = match text.char_indices().last()? {
        (i, 'k' | 'K') => (&text[..i], 1e3),
        (i, 'M') => (&text[..i], 1e6),
        (i, 'G') => (&text[..i], 1e9),
        (i, 'T') => (&text[..i], 1e12),
        _ => (text, 1.0),
    };
    let value: f64 = number.trim().parse().ok()?;
    let bps = value * scale;
    (1.0..1e19).contains(&bps).then(|| bps.round() as u64)
}

/// Parses a latency (`5ms`, `800us`, `1.5ms`, `2s`, `100ns`) into whole
/// microseconds, rounded.
pub fn parse_latency_us(text: &str) -> Option<u64> {
    let text = text.trim();
    let (number, scale) = if let Some(n) = text.strip_suffix("ns") {
        (n, 1e-3)
    } else if let Some(n) = text.strip_suffix("us").or_else(|| text.strip_suffix("µs")) {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1e3)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1e6)
    } else {
        return None;
    };
    let value: f64 = number.trim().parse().ok()?;
    let us = value * scale;
    (0.0..1e15).contains(&us).then(|| us.round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: &str = r#"
name: small
topology:
  kinds:
    linux:
      image: quay.io/frrouting/frr:9.1.0
  nodes:
    r1:
      kind: linux
      labels: {aiwan.role: wan-router, aiwan.site: dc1, aiwan.prefixes: "10.1.0.0/16, 10.9.0.0/24"}
    r2:
      kind: linux
      mgmt-ipv4: 172.20.20.2
      labels: {aiwan.role: wan-router}
  links:
    - endpoints: ["r1:eth1", "r2:eth1"]
      labels: {aiwan.capacity: 100G, aiwan.latency: 1.5ms, aiwan.srlgs: "duct-a,duct-b"}
    - type: veth
      endpoints:
        - node: r1
          interface: eth2
        - node: r2
          interface: eth2
      labels: {aiwan.capacity: 10000000000, aiwan.admin: down}
"#;

    #[test]
    fn reads_both_link_forms() {
        let topology = parse_clab(SMALL).expect("parses");
        assert_eq!(topology.name, "small");
        assert_eq!(topology.sites.len(), 1);
        assert_eq!(topology.sites[0].id, "dc1");
        assert_eq!(topology.nodes[0].site.as_deref(), Some("dc1"));
        assert_eq!(topology.nodes[0].prefixes.len(), 2);
        assert_eq!(topology.nodes[1].site, None);
        assert_eq!(topology.links.len(), 4);
        let first = &topology.links[0];
        assert_eq!(
            (
                first.src.as_str(),
                first.src_interface.as_str(),
                first.dst.as_str()
            ),
            ("r1", "eth1", "r2")
        );
        assert_eq!(first.capacity_bps, 100_000_000_000);
        assert_eq!(first.latency_us, 1500);
        assert_eq!(first.srlgs, ["duct-a", "duct-b"]);
        assert!(first.admin_up);
        let reverse = &topology.links[1];
        assert_eq!((reverse.src.as_str(), reverse.dst.as_str()), ("r2", "r1"));
        let extended = &topology.links[2];
        assert_eq!(extended.capacity_bps, 10_000_000_000);
        assert!(!extended.admin_up);
        assert_eq!(extended.latency_us, 0);
    }

    #[test]
    fn errors_name_the_place() {
        let cases = [
            (
                "name: x\ntopology:\n  nodes: [a, b]\n",
                "not a containerlab topology",
            ),
            ("topology: {}\n", "missing field `name`"),
            (
                "name: x\ntopology:\n  nodes:\n    r7: {kind: linux}\n",
                "node \"r7\": missing label aiwan.role",
            ),
            (
                "name: x\ntopology:\n  nodes:\n    r7: {labels: {aiwan.role: router}}\n",
                "node \"r7\": label aiwan.role \"router\" is not",
            ),
            (
                "name: x\ntopology:\n  nodes:\n    r1: {labels: {aiwan.role: leaf, aiwan.prefixes: 10.0.0.0/33}}\n",
                "node \"r1\": label aiwan.prefixes: \"10.0.0.0/33\" is not a CIDR prefix",
            ),
            (
                "name: x\ntopology:\n  links:\n    - endpoints: [\"r1eth1\", \"r2:eth1\"]\n",
                "link #1: endpoint \"r1eth1\": expected NODE:INTERFACE",
            ),
            (
                "name: x\ntopology:\n  links:\n    - endpoints: [\"r1:eth1\"]\n",
                "link #1: has 1 endpoints, expected 2",
            ),
            (
                "name: x\ntopology:\n  links:\n    - endpoints: [\"r1:eth1\", \"r2:eth1\"]\n",
                "link r1:eth1--r2:eth1: missing label aiwan.capacity",
            ),
            (
                "name: x\ntopology:\n  links:\n    - endpoints: [\"r1:eth1\", \"r2:eth1\"]\n      labels: {aiwan.capacity: 10X}\n",
                "link r1:eth1--r2:eth1: label aiwan.capacity \"10X\" is not a rate",
            ),
            (
                "name: x\ntopology:\n  links:\n    - endpoints: [\"r1:eth1\", \"r2:eth1\"]\n      labels: {aiwan.capacity: 1G, aiwan.latency: fast}\n",
                "label aiwan.latency \"fast\" is not a duration",
            ),
            (
                "name: x\ntopology:\n  links:\n    - endpoints: [\"r1:eth1\", \"r2:eth1\"]\n      labels: {aiwan.capacity: 1G}\n",
                "link r1:eth1 refers to node \"r1\", which is not defined",
            ),
        ];
        for (text, expected) in cases {
            let error = parse_clab(text).expect_err(expected).to_string();
            assert!(error.contains(expected), "{expected:?} not in {error:?}");
        }
        let error = load_clab(Path::new("/nonexistent/x.clab.yml")).expect_err("missing file");
        assert!(
            error
                .to_string()
                .starts_with("cannot read /nonexistent/x.clab.yml")
        );
    }

    #[test]
    fn rates_and_latencies() {
        let rates = [
            ("100G", Some(100_000_000_000)),
            ("400M", Some(400_000_000)),
            ("2.5G", Some(2_500_000_000)),
            ("10Gbps", Some(10_000_000_000)),
            ("1T", Some(1_000_000_000_000)),
            ("64k", Some(64_000)),
            ("10000000000", Some(10_000_000_000)),
            ("0", None),
            ("-1G", None),
            ("G", None),
            ("10X", None),
            ("", None),
        ];
        for (text, expected) in rates {
            assert_eq!(parse_rate(text), expected, "{text}");
        }
        let latencies = [
            ("5ms", Some(5000)),
            ("800us", Some(800)),
            ("1.5ms", Some(1500)),
            ("2s", Some(2_000_000)),
            ("1500ns", Some(2)),
            ("0ms", Some(0)),
            ("5", None),
            ("-1ms", None),
            ("ms", None),
        ];
        for (text, expected) in latencies {
            assert_eq!(parse_latency_us(text), expected, "{text}");
        }
    }

    /// The shipped lab file: two sites, and three link-disjoint paths of
    /// different capacity between the datacentres' edge routers.
    #[test]
    fn ai_wan_lab_file() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../lab/ai-wan.clab.yml");
        let topology = load_clab(&path).expect("ai-wan.clab.yml parses");
        assert_eq!(topology.name, "ai-wan");
        let sites: Vec<&str> = topology.sites.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(sites, ["dc1", "dc2", "pop-east", "pop-north", "pop-south"]);
        assert_eq!(topology.nodes.len(), 21);
        assert_eq!(topology.links.len(), 2 * 27);
        let hosts = topology
            .nodes
            .iter()
            .filter(|n| n.role == NodeRole::Host)
            .count();
        assert_eq!(hosts, 8);
        // Interface names fit Linux's IFNAMSIZ.
        assert!(topology.links.iter().all(|l| l.src_interface.len() <= 15));

        // Greedy widest-path search, removing each path's links: the three
        // WAN paths come out with three different bottlenecks.
        let mut links = topology.links.clone();
        let mut bottlenecks = Vec::new();
        while let Some(path) = widest_path(&links, "dc1-edge", "dc2-edge") {
            let bottleneck = path
                .iter()
                .map(|&i| links[i].capacity_bps)
                .min()
                .unwrap_or(0);
            bottlenecks.push(bottleneck);
            let used: Vec<(String, String)> = path
                .iter()
                .map(|&i| (links[i].src.clone(), links[i].dst.clone()))
                .collect();
            links.retain(|l| {
                !used.contains(&(l.src.clone(), l.dst.clone()))
                    && !used.contains(&(l.dst.clone(), l.src.clone()))
            });
        }
        assert_eq!(
            bottlenecks,
            [100_000_000_000, 40_000_000_000, 10_000_000_000],
            "link-disjoint paths between the edges"
        );
    }

    /// Indices into `links` of a widest path from `src` to `dst`.
    fn widest_path(links: &[Link], src: &str, dst: &str) -> Option<Vec<usize>> {
        let mut best: BTreeMap<&str, (u64, Vec<usize>)> = BTreeMap::new();
        best.insert(src, (u64::MAX, Vec::new()));
        let mut changed = true;
        while changed {
            changed = false;
            for (i, link) in links.iter().enumerate() {
                let Some((width, path)) = best.get(link.src.as_str()).cloned() else {
                    continue;
                };
                let width = width.min(link.capacity_bps);
                let better = best
                    .get(link.dst.as_str())
                    .is_none_or(|(known, _)| width > *known);
                if better && !path.iter().any(|&j| links[j].src == link.dst) {
                    let mut extended = path;
                    extended.push(i);
                    best.insert(link.dst.as_str(), (width, extended));
                    changed = true;
                }
            }
        }
        best.remove(dst).map(|(_, path)| path)
    }
}
