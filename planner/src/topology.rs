//! The network as the planner sees it: sites owning prefixes, nodes, and
//! directed links with capacity, latency and shared risk groups.

use std::collections::HashSet;
use std::fmt;

use ipnet::IpNet;

/// Longest identifier accepted for a site, node, interface or SRLG.
pub const MAX_ID_LEN: usize = 63;

/// A whole network.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Topology {
    /// Name the topology was imported under.
    pub name: String,
    pub sites: Vec<Site>,
    pub nodes: Vec<Node>,
    /// Directed links; a physical link is two of these.
    pub links: Vec<Link>,
}

/// A datacentre or point of presence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    pub id: String,
    /// Prefixes owned by the site itself rather than by one of its nodes.
    pub prefixes: Vec<IpNet>,
}

/// What a node does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodeRole {
    WanRouter,
    Spine,
    Leaf,
    Host,
}

impl NodeRole {
    /// The spelling used in files, labels and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeRole::WanRouter => "wan-router",
            NodeRole::Spine => "spine",
            NodeRole::Leaf => "leaf",
            NodeRole::Host => "host",
        }
    }

    /// Parses the spelling of [`NodeRole::as_str`].
    pub fn parse(text: &str) -> Option<NodeRole> {
        match text {
            "wan-router" => Some(NodeRole::WanRouter),
            "spine" => Some(NodeRole::Spine),
            "leaf" => Some(NodeRole::Leaf),
            "host" => Some(NodeRole::Host),
            _ => None,
        }
    }
}

impl fmt::Display for NodeRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A router, fabric switch or host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub id: String,
    /// The site the node belongs to; `None` for a node between sites.
    pub site: Option<String>,
    pub role: NodeRole,
    /// Prefixes the node originates.
    pub prefixes: Vec<IpNet>,
}

/// A directed link between two node interfaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub src: String,
    pub src_interface: String,
    pub dst: String,
    pub dst_interface: String,
    /// Bits per second, positive.
    pub capacity_bps: u64,
    /// One-way propagation latency in microseconds.
    pub latency_us: u64,
    pub srlgs: Vec<String>,
    /// False when an operator drained the link.
    pub admin_up: bool,
}

/// Why a topology is not acceptable. Each variant names the offending item.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopologyError {
    #[error("{what} {id:?} is not a valid identifier: {reason}")]
    BadIdentifier {
        what: &'static str,
        id: String,
        reason: &'static str,
    },
    #[error("site {0:?} is defined twice")]
    DuplicateSite(String),
    #[error("node {0:?} is defined twice")]
    DuplicateNode(String),
    #[error("node {node:?} belongs to site {site:?}, which is not defined")]
    UnknownSite { node: String, site: String },
    #[error("link {src}:{src_interface} refers to node {node:?}, which is not defined")]
    UnknownNode {
        src: String,
        src_interface: String,
        node: String,
    },
    #[error("interface {node}:{interface} is used by more than one link")]
    InterfaceReused { node: String, interface: String },
    #[error("link {src}:{src_interface} connects node {src:?} to itself")]
    SelfLoop { src: String, src_interface: String },
    #[error("link {src}:{src_interface} has zero capacity")]
    ZeroCapacity { src: String, src_interface: String },
    #[error("prefix {prefix} is claimed by both {first} and {second}")]
    DuplicatePrefix {
        prefix: IpNet,
        first: String,
        second: String,
    },
}

/// Checks that `id` can name a site, node, interface or SRLG: 1 to 63
/// characters of ASCII letters, digits, `-`, `_`, `.` and `/` (interface
/// names such as `Ethernet1/1` need the slash), not starting with a symbol.
pub fn check_identifier(what: &'static str, id: &str) -> Result<(), TopologyError> {
    let bad = |reason| {
        Err(TopologyError::BadIdentifier {
            what,
            id: id.to_string(),
            reason,
        })
    };
    if id.is_empty() {
        return bad("it is empty");
    }
    if id.len() > MAX_ID_LEN {
        return bad("it is longer than 63 characters");
    }
    if !id.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return bad("it must start with a letter or digit");
    }
    if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
    {
        return bad("only letters, digits, '-', '_', '.' and '/' are allowed");
    }
    Ok(())
}

impl Topology {
    /// Checks the invariants every consumer relies on: unique, well-formed
    /// identifiers; links between defined nodes, each interface used once,
    /// positive capacity; each prefix owned once.
    pub fn validate(&self) -> Result<(), TopologyError> {
        let mut sites = HashSet::new();
        for site in &self.sites {
            check_identifier("site", &site.id)?;
            if !sites.insert(site.id.as_str()) {
                return Err(TopologyError::DuplicateSite(site.id.clone()));
            }
        }
        let mut nodes = HashSet::new();
        for node in &self.nodes {
            check_identifier("node", &node.id)?;
            if !nodes.insert(node.id.as_str()) {
                return Err(TopologyError::DuplicateNode(node.id.clone()));
            }
            if let Some(site) = &node.site
                && !sites.contains(site.as_str())
            {
                return Err(TopologyError::UnknownSite {
                    node: node.id.clone(),
                    site: site.clone(),
                });
            }
        }
        let mut interfaces = HashSet::new();
        for link in &self.links {
            check_identifier("interface", &link.src_interface)?;
            check_identifier("interface", &link.dst_interface)?;
            for node in [&link.src, &link.dst] {
                if !nodes.contains(node.as_str()) {
                    return Err(TopologyError::UnknownNode {
                        src: link.src.clone(),
                        src_interface: link.src_interface.clone(),
                        node: node.clone(),
                    });
                }
            }
            if link.src == link.dst {
                return Err(TopologyError::SelfLoop {
                    src: link.src.clone(),
                    src_interface: link.src_interface.clone(),
                });
            }
            if link.capacity_bps == 0 {
                return Err(TopologyError::ZeroCapacity {
                    src: link.src.clone(),
                    src_interface: link.src_interface.clone(),
                });
            }
            for srlg in &link.srlgs {
                check_identifier("srlg", srlg)?;
            }
            if !interfaces.insert((link.src.as_str(), link.src_interface.as_str())) {
                return Err(TopologyError::InterfaceReused {
                    node: link.src.clone(),
                    interface: link.src_interface.clone(),
                });
            }
        }
        let mut owners: Vec<(IpNet, String)> = Vec::new();
        let site_prefixes = self.sites.iter().flat_map(|s| {
            s.prefixes
                .iter()
                .map(move |p| (*p, format!("site {}", s.id)))
        });
        let node_prefixes = self.nodes.iter().flat_map(|n| {
            n.prefixes
                .iter()
                .map(move |p| (*p, format!("node {}", n.id)))
        });
        for (prefix, owner) in site_prefixes.chain(node_prefixes) {
            if let Some((_, first)) = owners.iter().find(|(p, _)| *p == prefix) {
                return Err(TopologyError::DuplicatePrefix {
                    prefix,
                    first: first.clone(),
                    second: owner,
                });
            }
            owners.push((prefix, owner));
        }
        Ok(())
    }

    /// Every prefix of a site: its own and those of its nodes.
    pub fn site_prefixes(&self, site: &str) -> Vec<IpNet> {
        let own = self
            .sites
            .iter()
            .filter(|s| s.id == site)
            .flat_map(|s| s.prefixes.iter().copied());
        let of_nodes = self
            .nodes
            .iter()
            .filter(|n| n.site.as_deref() == Some(site))
            .flat_map(|n| n.prefixes.iter().copied());
        own.chain(of_nodes).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_node_topology() -> Topology {
        Topology {
            name: "t".into(),
            sites: vec![Site {
                id: "dc1".into(),
                prefixes: vec!["10.1.0.0/16".parse().unwrap()],
            }],
            nodes: vec![
                Node {
                    id: "r1".into(),
                    site: Some("dc1".into()),
                    role: NodeRole::WanRouter,
                    prefixes: vec!["10.9.1.0/24".parse().unwrap()],
                },
                Node {
                    id: "r2".into(),
                    site: None,
                    role: NodeRole::WanRouter,
                    prefixes: vec![],
                },
            ],
            links: vec![Link {
                src: "r1".into(),
                src_interface: "eth1".into(),
                dst: "r2".into(),
                dst_interface: "eth1".into(),
                capacity_bps: 10_000_000_000,
                latency_us: 500,
                srlgs: vec!["duct-a".into()],
                admin_up: true,
            }],
        }
    }

    #[test]
    fn accepts_a_consistent_topology() {
        let topology = two_node_topology();
        assert_eq!(topology.validate(), Ok(()));
        assert_eq!(
            topology.site_prefixes("dc1"),
            vec![
                "10.1.0.0/16".parse::<IpNet>().unwrap(),
                "10.9.1.0/24".parse().unwrap()
            ]
        );
    }

    #[test]
    fn names_what_is_wrong() {
        type Breaker = Box<dyn Fn(&mut Topology)>;
        let cases: Vec<(&str, Breaker)> = vec![
            (
                "link r1:eth1 refers to node \"r9\", which is not defined",
                Box::new(|t| t.links[0].dst = "r9".into()),
            ),
            (
                "node \"r2\" belongs to site \"dc9\", which is not defined",
                Box::new(|t| t.nodes[1].site = Some("dc9".into())),
            ),
            (
                "link r1:eth1 has zero capacity",
                Box::new(|t| t.links[0].capacity_bps = 0),
            ),
            (
                "node \"r1\" is defined twice",
                Box::new(|t| t.nodes[1].id = "r1".into()),
            ),
            (
                "interface r1:eth1 is used by more than one link",
                Box::new(|t| {
                    let copy = t.links[0].clone();
                    t.links.push(copy)
                }),
            ),
            (
                "prefix 10.1.0.0/16 is claimed by both site dc1 and node r2",
                Box::new(|t| t.nodes[1].prefixes = vec!["10.1.0.0/16".parse().unwrap()]),
            ),
            (
                "node \"r 1\" is not a valid identifier: only letters, digits, '-', '_', '.' and '/' are allowed",
                Box::new(|t| t.nodes[0].id = "r 1".into()),
            ),
            (
                "link r1:eth1 connects node \"r1\" to itself",
                Box::new(|t| t.links[0].dst = "r1".into()),
            ),
        ];
        for (expected, breaker) in cases {
            let mut topology = two_node_topology();
            breaker(&mut topology);
            let error = topology.validate().expect_err(expected);
            assert_eq!(error.to_string(), expected);
        }
    }
}
