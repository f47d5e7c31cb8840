//! The lab's addressing plan: pure, no I/O.
//!
//! The deployer assigns these addresses and the controller computes the same
//! plan from its stored topology to know each next hop's gateway, so the
//! plan depends only on the topology's links and nodes, never on the order
//! they were written in:
//!
//! - every undirected link (the two directed [`Link`]s of one containerlab
//!   link) gets an IPv4 /31 from `10.255.0.0/16` and an IPv6 /127 from
//!   `fd00:255::/48`. Links are numbered by their lexicographically smaller
//!   `(node, interface)` endpoint; link `i` gets `10.255.0.0 + 2i` and
//!   `fd00:255:: + 2i`, and that smaller endpoint takes the even (lower)
//!   address of the pair, its peer the odd one;
//! - every node gets a loopback /32 from `10.254.0.0/16` and /128 from
//!   `fd00:254::/48`: the `j`-th node by id (from 0) gets `10.254.0.0 + j + 1`
//!   and `fd00:254:: + j + 1`;
//! - each prefix a node originates contributes its first host address
//!   (`10.1.1.1` of `10.1.1.0/24`, `fd00:1:1::1` of `fd00:1:1::/64`; the
//!   address itself for a /31, /32, /127 or /128) as a /32 or /128 on the
//!   node's `lo`, so traffic to it terminates there.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use aiwan_planner::Topology;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

/// Pool of the links' IPv4 /31s.
pub const LINK_POOL_V4: &str = "10.255.0.0/16";
/// Pool of the links' IPv6 /127s.
pub const LINK_POOL_V6: &str = "fd00:255::/48";
/// Pool of the nodes' IPv4 loopbacks.
pub const LOOPBACK_POOL_V4: &str = "10.254.0.0/16";
/// Pool of the nodes' IPv6 loopbacks.
pub const LOOPBACK_POOL_V6: &str = "fd00:254::/48";

const LINK_BASE_V4: u32 = u32::from_be_bytes([10, 255, 0, 0]);
const LOOPBACK_BASE_V4: u32 = u32::from_be_bytes([10, 254, 0, 0]);
const LINK_BASE_V6: u128 = 0xfd00_0255_0000_0000_0000_0000_0000_0000;
const LOOPBACK_BASE_V6: u128 = 0xfd00_0254_0000_0000_0000_0000_0000_0000;
/// A /16 holds 65,536 IPv4 addresses: 32,768 /31s. The IPv6 pools are far
/// larger, so the IPv4 ones set the limits.
const MAX_LINKS: usize = 1 << 15;
/// Loopbacks start at `.0.1`, so the last of the /16's addresses is the limit.
const MAX_NODES: usize = (1 << 16) - 1;

/// Why a topology cannot be addressed. Each variant names the link or node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressingError {
    #[error(
        "link {link}: the topology has {count} links, but the pool {LINK_POOL_V4} holds only {MAX_LINKS} /31s"
    )]
    TooManyLinks { link: String, count: usize },
    #[error(
        "node {node:?}: the topology has {count} nodes, but the pool {LOOPBACK_POOL_V4} holds only {MAX_NODES} loopbacks"
    )]
    TooManyNodes { node: String, count: usize },
    #[error("node {0:?} is defined twice")]
    DuplicateNode(String),
    #[error("link {link} refers to node {node:?}, which is not defined")]
    UnknownNode { link: String, node: String },
    #[error("interface {node}:{interface} is an end of two links: {first} and {second}")]
    InterfaceInTwoLinks {
        node: String,
        interface: String,
        first: String,
        second: String,
    },
    #[error("link {link}: interface {node}:lo is the node's loopback, not a link end")]
    LoopbackAsLinkEnd { link: String, node: String },
    #[error("node {node:?}: prefix {prefix} overlaps the lab's address pool {pool}")]
    PrefixInPool {
        node: String,
        prefix: IpNet,
        pool: &'static str,
    },
    #[error("address {address} would be assigned to both {first} and {second}")]
    DuplicateAddress {
        address: IpAddr,
        first: String,
        second: String,
    },
}

/// The addresses of one interface: an IPv4 and an IPv6 network with the
/// interface's own address (for example `10.255.0.1/31`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceAddress {
    pub v4: Ipv4Net,
    pub v6: Ipv6Net,
}

/// One end of an addressed link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub node: String,
    pub interface: String,
    pub address: InterfaceAddress,
}

/// An undirected link and its two ends; `a` is the smaller `(node,
/// interface)` and holds the even addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressedLink {
    pub a: Endpoint,
    pub b: Endpoint,
}

impl AddressedLink {
    /// `node:interface--node:interface`, as the clab reader names links.
    pub fn name(&self) -> String {
        link_name(
            (&self.a.node, &self.a.interface),
            (&self.b.node, &self.b.interface),
        )
    }
}

/// A node's own addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeAddresses {
    /// The node's loopback: a /32 and a /128.
    pub loopback: InterfaceAddress,
    /// First host addresses of the node's prefixes, as /32 or /128, in the
    /// order of the node's prefixes.
    pub prefix_hosts: Vec<IpNet>,
}

/// The whole plan; see the module documentation.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LinkAddressing {
    links: Vec<AddressedLink>,
    /// node → interface → (index into `links`, whether it is end `a`).
    ends: BTreeMap<String, BTreeMap<String, (usize, bool)>>,
    nodes: BTreeMap<String, NodeAddresses>,
}

impl LinkAddressing {
    /// The undirected links in address order.
    pub fn links(&self) -> &[AddressedLink] {
        &self.links
    }

    /// The addresses of `node`'s interface `interface`.
    pub fn address_of(&self, node: &str, interface: &str) -> Option<InterfaceAddress> {
        let (link, _) = self.end(node, interface)?;
        let (own, _) = self.sides(link, node, interface);
        Some(own.address)
    }

    /// The node, interface and addresses at the other end of `node`'s
    /// interface `interface`: the gateway of a next hop through it.
    pub fn peer_of(
        &self,
        node: &str,
        interface: &str,
    ) -> Option<(String, String, InterfaceAddress)> {
        let (link, _) = self.end(node, interface)?;
        let (_, peer) = self.sides(link, node, interface);
        Some((peer.node.clone(), peer.interface.clone(), peer.address))
    }

    /// `node`'s link ends, by interface name.
    pub fn interfaces_of(&self, node: &str) -> Vec<(&str, InterfaceAddress)> {
        let Some(interfaces) = self.ends.get(node) else {
            return Vec::new();
        };
        interfaces
            .iter()
            .filter_map(|(interface, &(index, is_a))| {
                let link = self.links.get(index)?;
                let end = if is_a { &link.a } else { &link.b };
                Some((interface.as_str(), end.address))
            })
            .collect()
    }

    /// `node`'s loopback and prefix host addresses.
    pub fn node(&self, node: &str) -> Option<&NodeAddresses> {
        self.nodes.get(node)
    }

    /// `node`'s loopback (/32 and /128).
    pub fn loopback_of(&self, node: &str) -> Option<InterfaceAddress> {
        self.nodes.get(node).map(|n| n.loopback)
    }

    fn end(&self, node: &str, interface: &str) -> Option<(&AddressedLink, bool)> {
        let &(index, is_a) = self.ends.get(node)?.get(interface)?;
        Some((self.links.get(index)?, is_a))
    }

    /// (own end, peer end) of `link` seen from `node:interface`.
    fn sides<'a>(
        &self,
        link: &'a AddressedLink,
        node: &str,
        interface: &str,
    ) -> (&'a Endpoint, &'a Endpoint) {
        if link.a.node == node && link.a.interface == interface {
            (&link.a, &link.b)
        } else {
            (&link.b, &link.a)
        }
    }
}

fn link_name(a: (&str, &str), b: (&str, &str)) -> String {
    format!("{}:{}--{}:{}", a.0, a.1, b.0, b.1)
}

/// Computes the addressing plan of `topology`; see the module documentation.
pub fn link_addresses(topology: &Topology) -> Result<LinkAddressing, AddressingError> {
    // Nodes by id: the loopback order.
    let mut node_ids: BTreeSet<&str> = BTreeSet::new();
    for node in &topology.nodes {
        if !node_ids.insert(node.id.as_str()) {
            return Err(AddressingError::DuplicateNode(node.id.clone()));
        }
    }
    if node_ids.len() > MAX_NODES {
        let node = node_ids.iter().nth(MAX_NODES).copied().unwrap_or_default();
        return Err(AddressingError::TooManyNodes {
            node: node.to_string(),
            count: node_ids.len(),
        });
    }

    // Undirected links keyed by their smaller end; both directions of a
    // containerlab link map to the same key.
    type End<'a> = (&'a str, &'a str);
    let mut undirected: BTreeMap<End, End> = BTreeMap::new();
    let mut owner: BTreeMap<End, (End, End)> = BTreeMap::new();
    for link in &topology.links {
        let src = (link.src.as_str(), link.src_interface.as_str());
        let dst = (link.dst.as_str(), link.dst_interface.as_str());
        let name = link_name(src, dst);
        for (node, interface) in [src, dst] {
            if !node_ids.contains(node) {
                return Err(AddressingError::UnknownNode {
                    link: name,
                    node: node.to_string(),
                });
            }
            if interface == "lo" {
                return Err(AddressingError::LoopbackAsLinkEnd {
                    link: name,
                    node: node.to_string(),
                });
            }
        }
        let (small, large) = if src <= dst { (src, dst) } else { (dst, src) };
        // Each end may belong to this one undirected link only.
        for end in [small, large] {
            if let Some(&(first_small, first_large)) = owner.get(&end)
                && (first_small, first_large) != (small, large)
            {
                return Err(AddressingError::InterfaceInTwoLinks {
                    node: end.0.to_string(),
                    interface: end.1.to_string(),
                    first: link_name(first_small, first_large),
                    second: name,
                });
            }
            owner.insert(end, (small, large));
        }
        undirected.insert(small, large);
    }
    if undirected.len() > MAX_LINKS {
        let (small, large) = undirected
            .iter()
            .nth(MAX_LINKS)
            .map(|(s, l)| (*s, *l))
            .unwrap_or_default();
        return Err(AddressingError::TooManyLinks {
            link: link_name(small, large),
            count: undirected.len(),
        });
    }

    // Every address handed out, with its owner, so that no two collide.
    let mut assigned: BTreeMap<IpAddr, String> = BTreeMap::new();
    let mut claim = |address: IpAddr, who: String| match assigned.get(&address) {
        Some(first) => Err(AddressingError::DuplicateAddress {
            address,
            first: first.clone(),
            second: who,
        }),
        None => {
            assigned.insert(address, who);
            Ok(())
        }
    };

    let mut plan = LinkAddressing::default();
    for (index, (small, large)) in undirected.into_iter().enumerate() {
        // index < MAX_LINKS = 2^15, so these offsets stay inside the pools.
        let offset = 2 * index as u32;
        let end = |(node, interface): End, odd: u32| Endpoint {
            node: node.to_string(),
            interface: interface.to_string(),
            address: InterfaceAddress {
                v4: v4_net(LINK_BASE_V4 + offset + odd, 31),
                v6: v6_net(LINK_BASE_V6 + u128::from(offset + odd), 127),
            },
        };
        let link = AddressedLink {
            a: end(small, 0),
            b: end(large, 1),
        };
        for (endpoint, is_a) in [(&link.a, true), (&link.b, false)] {
            let who = format!("{}:{}", endpoint.node, endpoint.interface);
            claim(IpAddr::V4(endpoint.address.v4.addr()), who.clone())?;
            claim(IpAddr::V6(endpoint.address.v6.addr()), who)?;
            plan.ends
                .entry(endpoint.node.clone())
                .or_default()
                .insert(endpoint.interface.clone(), (index, is_a));
        }
        plan.links.push(link);
    }

    let pools: [(&'static str, IpNet); 4] = [
        (LINK_POOL_V4, IpNet::V4(v4_net(LINK_BASE_V4, 16))),
        (LINK_POOL_V6, IpNet::V6(v6_net(LINK_BASE_V6, 48))),
        (LOOPBACK_POOL_V4, IpNet::V4(v4_net(LOOPBACK_BASE_V4, 16))),
        (LOOPBACK_POOL_V6, IpNet::V6(v6_net(LOOPBACK_BASE_V6, 48))),
    ];
    let by_id: BTreeMap<&str, &aiwan_planner::Node> =
        topology.nodes.iter().map(|n| (n.id.as_str(), n)).collect();
    for (position, (id, node)) in by_id.into_iter().enumerate() {
        // position < MAX_NODES = 2^16 - 1.
        let host = position as u32 + 1;
        let loopback = InterfaceAddress {
            v4: v4_net(LOOPBACK_BASE_V4 + host, 32),
            v6: v6_net(LOOPBACK_BASE_V6 + u128::from(host), 128),
        };
        let who = format!("{id}:lo");
        claim(IpAddr::V4(loopback.v4.addr()), who.clone())?;
        claim(IpAddr::V6(loopback.v6.addr()), who.clone())?;
        let mut prefix_hosts = Vec::with_capacity(node.prefixes.len());
        for prefix in &node.prefixes {
            let prefix = prefix.trunc();
            if let Some((pool, _)) = pools
                .iter()
                .find(|(_, pool)| pool.contains(&prefix) || prefix.contains(pool))
            {
                return Err(AddressingError::PrefixInPool {
                    node: id.to_string(),
                    prefix,
                    pool,
                });
            }
            let host = first_host(prefix);
            claim(host.addr(), format!("{id}:lo (prefix {prefix})"))?;
            prefix_hosts.push(host);
        }
        plan.nodes.insert(
            id.to_string(),
            NodeAddresses {
                loopback,
                prefix_hosts,
            },
        );
    }
    Ok(plan)
}

/// The first host address of `prefix` as a /32 or /128: the network address
/// plus one, or the network address itself for /31, /32, /127 and /128,
/// which have no network and broadcast addresses to skip.
pub fn first_host(prefix: IpNet) -> IpNet {
    match prefix.trunc() {
        IpNet::V4(net) => {
            let base = u32::from(net.network());
            let host = if net.prefix_len() >= 31 {
                base
            } else {
                base + 1
            };
            IpNet::V4(v4_net(host, 32))
        }
        IpNet::V6(net) => {
            let base = u128::from(net.network());
            let host = if net.prefix_len() >= 127 {
                base
            } else {
                base + 1
            };
            IpNet::V6(v6_net(host, 128))
        }
    }
}

fn v4_net(address: u32, prefix_len: u8) -> Ipv4Net {
    // Callers pass prefix lengths of at most 32, which `new` accepts.
    Ipv4Net::new(Ipv4Addr::from(address), prefix_len)
        .unwrap_or_else(|_| Ipv4Net::from(Ipv4Addr::from(address)))
}

fn v6_net(address: u128, prefix_len: u8) -> Ipv6Net {
    // Callers pass prefix lengths of at most 128, which `new` accepts.
    Ipv6Net::new(Ipv6Addr::from(address), prefix_len)
        .unwrap_or_else(|_| Ipv6Net::from(Ipv6Addr::from(address)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clab::parse_clab;

    /// Links written out of order and from their larger end, so the test
    /// shows that only the set of links matters.
    const FIXTURE: &str = r#"
name: t
topology:
  nodes:
    r2: {labels: {aiwan.role: wan-router}}
    r1: {labels: {aiwan.role: wan-router, aiwan.prefixes: "10.1.0.0/24,fd00:1::/64,192.0.2.7/32"}}
    h1: {labels: {aiwan.role: host}}
    r3: {labels: {aiwan.role: wan-router, aiwan.prefixes: "10.3.0.0/31"}}
  links:
    - endpoints: ["r3:eth1", "r2:eth2"]
      labels: {aiwan.capacity: 1G}
    - endpoints: ["r2:eth1", "r1:eth1"]
      labels: {aiwan.capacity: 1G}
    - endpoints: ["r1:eth2", "h1:eth1"]
      labels: {aiwan.capacity: 1G}
"#;

    fn addr(v4: &str, v6: &str) -> InterfaceAddress {
        InterfaceAddress {
            v4: v4.parse().expect("v4"),
            v6: v6.parse().expect("v6"),
        }
    }

    #[test]
    fn fixture_gets_exact_addresses() {
        let plan = link_addresses(&parse_clab(FIXTURE).expect("fixture")).expect("plan");
        // Links ordered by smaller end: h1:eth1, r1:eth1, r2:eth2.
        let expected_links = [
            ("h1:eth1--r1:eth2", "10.255.0.0/31", "fd00:255::/127"),
            ("r1:eth1--r2:eth1", "10.255.0.2/31", "fd00:255::2/127"),
            ("r2:eth2--r3:eth1", "10.255.0.4/31", "fd00:255::4/127"),
        ];
        let names: Vec<String> = plan.links().iter().map(AddressedLink::name).collect();
        assert_eq!(names, expected_links.map(|(name, _, _)| name));
        for (link, (_, v4, v6)) in plan.links().iter().zip(expected_links) {
            assert_eq!(link.a.address, addr(v4, v6), "{}", link.name());
        }
        let ends = [
            ("h1", "eth1", "10.255.0.0/31", "fd00:255::/127"),
            ("r1", "eth2", "10.255.0.1/31", "fd00:255::1/127"),
            ("r1", "eth1", "10.255.0.2/31", "fd00:255::2/127"),
            ("r2", "eth1", "10.255.0.3/31", "fd00:255::3/127"),
            ("r2", "eth2", "10.255.0.4/31", "fd00:255::4/127"),
            ("r3", "eth1", "10.255.0.5/31", "fd00:255::5/127"),
        ];
        for (node, interface, v4, v6) in ends {
            assert_eq!(
                plan.address_of(node, interface),
                Some(addr(v4, v6)),
                "{node}:{interface}"
            );
        }
        let peers = [
            (
                "h1",
                "eth1",
                "r1",
                "eth2",
                "10.255.0.1/31",
                "fd00:255::1/127",
            ),
            (
                "r1",
                "eth2",
                "h1",
                "eth1",
                "10.255.0.0/31",
                "fd00:255::/127",
            ),
            (
                "r3",
                "eth1",
                "r2",
                "eth2",
                "10.255.0.4/31",
                "fd00:255::4/127",
            ),
        ];
        for (node, interface, peer, peer_if, v4, v6) in peers {
            assert_eq!(
                plan.peer_of(node, interface),
                Some((peer.to_string(), peer_if.to_string(), addr(v4, v6))),
                "{node}:{interface}"
            );
        }
        assert_eq!(plan.address_of("r1", "eth9"), None);
        assert_eq!(plan.peer_of("r9", "eth1"), None);
        assert_eq!(
            plan.interfaces_of("r1"),
            [
                ("eth1", addr("10.255.0.2/31", "fd00:255::2/127")),
                ("eth2", addr("10.255.0.1/31", "fd00:255::1/127")),
            ]
        );

        // Loopbacks by node id: h1, r1, r2, r3.
        let loopbacks = [
            ("h1", "10.254.0.1/32", "fd00:254::1/128"),
            ("r1", "10.254.0.2/32", "fd00:254::2/128"),
            ("r2", "10.254.0.3/32", "fd00:254::3/128"),
            ("r3", "10.254.0.4/32", "fd00:254::4/128"),
        ];
        for (node, v4, v6) in loopbacks {
            assert_eq!(plan.loopback_of(node), Some(addr(v4, v6)), "{node}");
        }
        let hosts = |node: &str| -> Vec<String> {
            plan.node(node)
                .map(|n| n.prefix_hosts.iter().map(ToString::to_string).collect())
                .unwrap_or_default()
        };
        assert_eq!(
            hosts("r1"),
            ["10.1.0.1/32", "fd00:1::1/128", "192.0.2.7/32"]
        );
        assert_eq!(hosts("r3"), ["10.3.0.0/32"]);
        assert!(hosts("r2").is_empty());
    }

    #[test]
    fn plan_ignores_link_and_node_order() {
        let topology = parse_clab(FIXTURE).expect("fixture");
        let mut shuffled = topology.clone();
        shuffled.links.reverse();
        shuffled.nodes.reverse();
        assert_eq!(
            link_addresses(&topology).expect("plan"),
            link_addresses(&shuffled).expect("plan")
        );
    }

    /// The 256th link crosses into the third octet.
    #[test]
    fn addresses_carry_into_the_next_octet() {
        let mut text = String::from("name: big\ntopology:\n  nodes:\n");
        text.push_str("    a: {labels: {aiwan.role: leaf}}\n    b: {labels: {aiwan.role: leaf}}\n");
        text.push_str("  links:\n");
        for i in 0..200 {
            // Zero-padded so that the string order is the numeric order.
            text.push_str(&format!(
                "    - endpoints: [\"a:e{i:03}\", \"b:e{i:03}\"]\n      labels: {{aiwan.capacity: 1G}}\n"
            ));
        }
        let plan = link_addresses(&parse_clab(&text).expect("big")).expect("plan");
        assert_eq!(
            plan.address_of("a", "e128"),
            Some(addr("10.255.1.0/31", "fd00:255::100/127"))
        );
        assert_eq!(
            plan.address_of("b", "e199"),
            Some(addr("10.255.1.143/31", "fd00:255::18f/127"))
        );
    }

    #[test]
    fn first_hosts() {
        let cases = [
            ("10.1.1.0/24", "10.1.1.1/32"),
            ("10.1.1.77/24", "10.1.1.1/32"),
            ("10.3.0.0/31", "10.3.0.0/32"),
            ("192.0.2.7/32", "192.0.2.7/32"),
            ("fd00:1:1::/64", "fd00:1:1::1/128"),
            ("fd00::/127", "fd00::/128"),
        ];
        for (prefix, expected) in cases {
            let prefix: IpNet = prefix.parse().expect("prefix");
            assert_eq!(first_host(prefix).to_string(), expected, "{prefix}");
        }
    }

    #[test]
    fn errors_name_the_link_or_node() {
        use aiwan_planner::{Link, Node, NodeRole};
        let node = |id: &str, prefixes: &[&str]| Node {
            id: id.into(),
            site: None,
            role: NodeRole::Leaf,
            prefixes: prefixes
                .iter()
                .map(|p| p.parse().expect("prefix"))
                .collect(),
        };
        let link = |src: &str, src_if: &str, dst: &str, dst_if: &str| Link {
            src: src.into(),
            src_interface: src_if.into(),
            dst: dst.into(),
            dst_interface: dst_if.into(),
            capacity_bps: 1,
            latency_us: 0,
            srlgs: vec![],
            admin_up: true,
        };
        let topology = |nodes: Vec<Node>, links: Vec<Link>| Topology {
            name: "t".into(),
            sites: vec![],
            nodes,
            links,
        };
        let cases = [
            (
                topology(vec![node("a", &[]), node("a", &[])], vec![]),
                "node \"a\" is defined twice",
            ),
            (
                topology(vec![node("a", &[])], vec![link("a", "eth1", "b", "eth1")]),
                "link a:eth1--b:eth1 refers to node \"b\", which is not defined",
            ),
            (
                topology(
                    vec![node("a", &[]), node("b", &[]), node("c", &[])],
                    vec![
                        link("a", "eth1", "b", "eth1"),
                        link("c", "eth1", "b", "eth1"),
                    ],
                ),
                "interface b:eth1 is an end of two links: a:eth1--b:eth1 and c:eth1--b:eth1",
            ),
            (
                topology(
                    vec![node("a", &[]), node("b", &[])],
                    vec![link("a", "lo", "b", "eth1")],
                ),
                "link a:lo--b:eth1: interface a:lo is the node's loopback",
            ),
            (
                topology(vec![node("a", &["10.255.7.0/24"])], vec![]),
                "node \"a\": prefix 10.255.7.0/24 overlaps the lab's address pool 10.255.0.0/16",
            ),
            (
                topology(vec![node("a", &["10.0.0.0/8"])], vec![]),
                "node \"a\": prefix 10.0.0.0/8 overlaps the lab's address pool 10.255.0.0/16",
            ),
            (
                topology(
                    vec![node("a", &["10.1.0.0/24"]), node("b", &["10.1.0.0/25"])],
                    vec![],
                ),
                "address 10.1.0.1 would be assigned to both a:lo (prefix 10.1.0.0/24) and b:lo (prefix 10.1.0.0/25)",
            ),
        ];
        for (topology, expected) in cases {
            let error = link_addresses(&topology).expect_err(expected).to_string();
            assert!(error.contains(expected), "{expected:?} not in {error:?}");
        }

        // One link too many for the IPv4 pool.
        let links = (0..=MAX_LINKS)
            .map(|i| link("a", &format!("e{i:05}"), "b", &format!("e{i:05}")))
            .collect();
        let error = link_addresses(&topology(vec![node("a", &[]), node("b", &[])], links))
            .expect_err("too many links")
            .to_string();
        assert_eq!(
            error,
            "link a:e32768--b:e32768: the topology has 32769 links, but the pool 10.255.0.0/16 holds only 32768 /31s"
        );
    }
}
