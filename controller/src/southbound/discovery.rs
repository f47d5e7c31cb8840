//! Next hops from the routers themselves: each agent reports its
//! interfaces with their addresses and resolved neighbours (`GetState`),
//! and the controller finds, for every link a router sends on, the address
//! of the router at its other end. Nothing here assumes who numbered the
//! network: aiwan's lab and an operator's routers go through the same
//! rules.
//!
//! For the link from `a:x` to `b:y` and each address family in use (the
//! families of the topology's prefixes), the gateway is, first found:
//!
//! 1. `b:y`'s address on a subnet of `a:x`'s (both ends agree on it), when
//!    `b` reported;
//! 2. when `b` did not report (a host, an agent not heard yet), the other
//!    address of `a:x`'s point-to-point subnet (/31 or /30, /127 or /126):
//!    the subnet names its peer;
//! 3. a neighbour entry of `a:x` that is one of `b:y`'s addresses, or, when
//!    `b` did not report, the only neighbour of the family there;
//! 4. for IPv6, `b:y`'s link-local address.
//!
//! A link one of whose directions has no gateway for a family in use is
//! unresolved, both directions: reported by name with the reason, and
//! taken out of the topology that plans and routes are made from
//! ([`Discovery::effective`]), so nothing is pushed onto it. Links that
//! start at hosts are not resolved: hosts run no agent and get no routes.
//!
//! A router's loopbacks are the host addresses (/32, /128) on its `lo`
//! outside every prefix of the topology (those are the prefixes' own
//! addresses, routed with their prefixes).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, PoisonError, RwLock};

use aiwan_planner::{NodeRole, Topology};
use ipnet::IpNet;

use crate::agent::InterfaceReport;

/// The gateways of one link end, per family.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Gateways {
    pub v4: Option<Ipv4Addr>,
    pub v6: Option<Ipv6Addr>,
}

/// What discovery found (see the module documentation).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Discovery {
    /// Per `(node, interface)` a router sends on.
    gateways: BTreeMap<(String, String), Gateways>,
    loopbacks: BTreeMap<String, Vec<IpAddr>>,
    /// `node:interface` of each direction of an unresolved link -> why.
    unresolved: BTreeMap<String, String>,
}

impl Discovery {
    /// The gateway from `node` over `interface` for `family_of`'s family.
    pub fn gateway(&self, node: &str, interface: &str, family_of: &IpNet) -> Option<IpAddr> {
        let gateways = self
            .gateways
            .get(&(node.to_string(), interface.to_string()))?;
        match family_of {
            IpNet::V4(_) => gateways.v4.map(IpAddr::V4),
            IpNet::V6(_) => gateways.v6.map(IpAddr::V6),
        }
    }

    /// The gateways of the link end `node:interface`.
    pub fn gateways(&self, node: &str, interface: &str) -> Option<Gateways> {
        self.gateways
            .get(&(node.to_string(), interface.to_string()))
            .copied()
    }

    /// `node`'s loopback addresses, sorted (none when it did not report).
    pub fn loopbacks(&self, node: &str) -> &[IpAddr] {
        self.loopbacks.get(node).map_or(&[], Vec::as_slice)
    }

    /// The unresolved links, `node:interface` of each direction -> why.
    pub fn unresolved(&self) -> &BTreeMap<String, String> {
        &self.unresolved
    }

    /// `topology` with the unresolved links taken down (not planned on,
    /// not routed over).
    pub fn effective(&self, topology: &Topology) -> Topology {
        let mut topology = topology.clone();
        take_down(&mut topology, &self.unresolved);
        topology
    }
}

/// Takes the links whose `node:interface` is in `ends` down.
fn take_down(topology: &mut Topology, ends: &BTreeMap<String, String>) {
    if ends.is_empty() {
        return;
    }
    for link in &mut topology.links {
        if ends.contains_key(&format!("{}:{}", link.src, link.src_interface)) {
            link.admin_up = false;
        }
    }
}

/// The links the reconcile loop last found unresolved (`node:interface`
/// of each direction -> why), shared with planning, which plans around
/// them. Empty until the first round: before the routers are heard, every
/// link counts. Cheap to clone; clones share the view.
#[derive(Debug, Clone, Default)]
pub struct UnresolvedLinks(Arc<RwLock<BTreeMap<String, String>>>);

impl UnresolvedLinks {
    /// Sets the view; returns the one before.
    pub fn replace(&self, now: BTreeMap<String, String>) -> BTreeMap<String, String> {
        let mut held = self.0.write().unwrap_or_else(PoisonError::into_inner);
        std::mem::replace(&mut *held, now)
    }

    /// The view now.
    pub fn get(&self) -> BTreeMap<String, String> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Takes the unresolved links of `topology` down, for planning.
    pub fn plan_around(&self, topology: &mut Topology) {
        take_down(
            topology,
            &self.0.read().unwrap_or_else(PoisonError::into_inner),
        );
    }
}

/// The families the topology's prefixes use: the ones every link must
/// carry. A topology without prefixes needs one of the two.
fn families_in_use(topology: &Topology) -> (bool, bool) {
    let prefixes = topology
        .nodes
        .iter()
        .flat_map(|n| n.prefixes.iter())
        .chain(topology.sites.iter().flat_map(|s| s.prefixes.iter()));
    let (mut v4, mut v6) = (false, false);
    for prefix in prefixes {
        match prefix {
            IpNet::V4(_) => v4 = true,
            IpNet::V6(_) => v6 = true,
        }
    }
    (v4, v6)
}

/// Finds every link's next hops from the routers' `reports` (node ->
/// its interfaces, as its agent last reported them).
pub fn discover(
    topology: &Topology,
    reports: &BTreeMap<String, Vec<InterfaceReport>>,
) -> Discovery {
    let mut discovery = Discovery::default();
    let (need_v4, need_v6) = families_in_use(topology);
    let hosts: BTreeSet<&str> = topology
        .nodes
        .iter()
        .filter(|n| n.role == NodeRole::Host)
        .map(|n| n.id.as_str())
        .collect();
    let interface = |node: &str, name: &str| -> Option<&InterfaceReport> {
        reports.get(node)?.iter().find(|i| i.name == name)
    };
    // Each failed direction with why (its link at hand, for the reverse).
    let mut failed: Vec<(&aiwan_planner::Link, String)> = Vec::new();
    for link in topology.links.iter().filter(|l| l.admin_up) {
        if hosts.contains(link.src.as_str()) {
            continue;
        }
        let end = format!("{}:{}", link.src, link.src_interface);
        let peer_end = format!("{}:{}", link.dst, link.dst_interface);
        let Some(own) = reports.get(&link.src) else {
            failed.push((
                link,
                format!("the agent of {} has not reported its interfaces", link.src),
            ));
            continue;
        };
        let Some(own) = own.iter().find(|i| i.name == link.src_interface) else {
            failed.push((
                link,
                format!("{} has no interface {}", link.src, link.src_interface),
            ));
            continue;
        };
        if !own.up {
            failed.push((link, format!("{end} is down")));
            continue;
        }
        let peer = match reports.get(&link.dst) {
            None => None,
            Some(_) => match interface(&link.dst, &link.dst_interface) {
                Some(peer) => Some(peer),
                None => {
                    failed.push((
                        link,
                        format!("{} has no interface {}", link.dst, link.dst_interface),
                    ));
                    continue;
                }
            },
        };
        let gateways = Gateways {
            v4: gateway(own, peer, false).and_then(|ip| match ip {
                IpAddr::V4(v4) => Some(v4),
                IpAddr::V6(_) => None,
            }),
            v6: gateway(own, peer, true).and_then(|ip| match ip {
                IpAddr::V6(v6) => Some(v6),
                IpAddr::V4(_) => None,
            }),
        };
        let missing: Vec<&str> = if need_v4 || need_v6 {
            [
                (need_v4 && gateways.v4.is_none(), "IPv4"),
                (need_v6 && gateways.v6.is_none(), "IPv6"),
            ]
            .into_iter()
            .filter(|(missing, _)| *missing)
            .map(|(_, family)| family)
            .collect()
        } else if gateways.v4.is_none() && gateways.v6.is_none() {
            vec!["IPv4", "IPv6"]
        } else {
            Vec::new()
        };
        if !missing.is_empty() {
            let evidence = match peer {
                Some(_) => format!(
                    "{end} and {peer_end} share no subnet, no neighbour entry of {end} is \
                     an address of {peer_end}"
                ),
                None => format!(
                    "{} did not report, and {end} has neither a point-to-point subnet \
                     (/30, /31, /126, /127) nor a single neighbour",
                    link.dst
                ),
            };
            failed.push((
                link,
                format!("no {} next hop: {evidence}", missing.join(" or ")),
            ));
            continue;
        }
        discovery
            .gateways
            .insert((link.src.clone(), link.src_interface.clone()), gateways);
    }
    // Both directions of an unresolved link go.
    let ends: BTreeSet<(&str, &str)> = topology
        .links
        .iter()
        .map(|l| (l.src.as_str(), l.src_interface.as_str()))
        .collect();
    for (link, reason) in failed {
        if ends.contains(&(link.dst.as_str(), link.dst_interface.as_str())) {
            discovery
                .gateways
                .remove(&(link.dst.clone(), link.dst_interface.clone()));
            discovery
                .unresolved
                .entry(format!("{}:{}", link.dst, link.dst_interface))
                .or_insert_with(|| format!("the other direction: {reason}"));
        }
        discovery
            .unresolved
            .insert(format!("{}:{}", link.src, link.src_interface), reason);
    }
    let prefixes: Vec<IpNet> = topology
        .nodes
        .iter()
        .flat_map(|n| n.prefixes.iter().copied())
        .chain(
            topology
                .sites
                .iter()
                .flat_map(|s| s.prefixes.iter().copied()),
        )
        .collect();
    for (node, interfaces) in reports {
        let mut loopbacks: Vec<IpAddr> = interfaces
            .iter()
            .filter(|i| i.name == "lo")
            .flat_map(|i| i.addresses.iter())
            .filter(|net| net.prefix_len() == net.max_prefix_len())
            .map(IpNet::addr)
            .filter(|ip| !ip.is_loopback() && !is_link_local(ip))
            .filter(|ip| !prefixes.iter().any(|p| p.contains(ip)))
            .collect();
        loopbacks.sort();
        loopbacks.dedup();
        if !loopbacks.is_empty() {
            discovery.loopbacks.insert(node.clone(), loopbacks);
        }
    }
    discovery
}

fn is_link_local(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => v6.is_unicast_link_local(),
    }
}

fn same_family(ip: &IpAddr, v6: bool) -> bool {
    ip.is_ipv6() == v6
}

/// The next hop of one family from `own` towards `peer` (its report, when
/// the peer's agent reported): see the module documentation's rules.
fn gateway(own: &InterfaceReport, peer: Option<&InterfaceReport>, v6: bool) -> Option<IpAddr> {
    let own_nets = || {
        own.addresses
            .iter()
            .filter(move |net| same_family(&net.addr(), v6) && !is_link_local(&net.addr()))
    };
    match peer {
        Some(peer) => {
            // 1. The peer's address on a subnet both ends agree on.
            for mine in own_nets() {
                for theirs in peer.addresses.iter().filter(|n| !is_link_local(&n.addr())) {
                    if theirs.addr() != mine.addr()
                        && mine.contains(&theirs.addr())
                        && theirs.contains(&mine.addr())
                    {
                        return Some(theirs.addr());
                    }
                }
            }
            // 3. A neighbour entry that is one of the peer's addresses.
            if let Some(neighbour) = own
                .neighbours
                .iter()
                .find(|n| same_family(n, v6) && peer.addresses.iter().any(|net| net.addr() == **n))
            {
                return Some(*neighbour);
            }
            // 4. The peer's link-local address.
            if v6 {
                return peer.addresses.iter().map(IpNet::addr).find(is_link_local);
            }
            None
        }
        None => {
            // 2. The other end of a point-to-point subnet.
            if let Some(other) = own_nets().find_map(point_to_point_peer) {
                return Some(other);
            }
            // 3. The only neighbour of the family.
            let mut neighbours = own.neighbours.iter().filter(|n| same_family(n, v6));
            match (neighbours.next(), neighbours.next()) {
                (Some(only), None) => Some(*only),
                _ => None,
            }
        }
    }
}

/// The other usable address of a /31, /30, /127 or /126 that `net`'s
/// address is one of.
fn point_to_point_peer(net: &IpNet) -> Option<IpAddr> {
    match net {
        IpNet::V4(v4) => {
            let addr = u32::from(v4.addr());
            let base = u32::from(v4.network());
            let other = match v4.prefix_len() {
                31 => addr ^ 1,
                30 if addr == base + 1 => base + 2,
                30 if addr == base + 2 => base + 1,
                _ => return None,
            };
            Some(IpAddr::V4(Ipv4Addr::from(other)))
        }
        IpNet::V6(v6) => {
            let addr = u128::from(v6.addr());
            let base = u128::from(v6.network());
            let other = match v6.prefix_len() {
                127 => addr ^ 1,
                126 if addr == base + 1 => base + 2,
                126 if addr == base + 2 => base + 1,
                _ => return None,
            };
            Some(IpAddr::V6(Ipv6Addr::from(other)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// r1 -- r2 and r1 -- h1, as a containerlab file would give them.
    fn topology(prefixes: &str) -> Topology {
        let text = format!(
            r#"
name: t
topology:
  nodes:
    r1: {{labels: {{aiwan.role: wan-router, aiwan.prefixes: "{prefixes}"}}}}
    r2: {{labels: {{aiwan.role: wan-router}}}}
    h1: {{labels: {{aiwan.role: host}}}}
  links:
    - endpoints: ["r1:ge-0", "r2:xe-1"]
      labels: {{aiwan.capacity: 10G}}
    - endpoints: ["r1:to-h1", "h1:eth0"]
      labels: {{aiwan.capacity: 10G}}
"#
        );
        aiwan_planner::formats::clab::parse_clab(&text).expect("topology")
    }

    fn interface(name: &str, addresses: &[&str], neighbours: &[&str]) -> InterfaceReport {
        InterfaceReport {
            name: name.into(),
            ifindex: 0,
            up: true,
            addresses: addresses.iter().map(|a| a.parse().expect("net")).collect(),
            neighbours: neighbours.iter().map(|a| a.parse().expect("ip")).collect(),
        }
    }

    type Reports = BTreeMap<String, Vec<InterfaceReport>>;

    fn reports(r1: Vec<InterfaceReport>, r2: Option<Vec<InterfaceReport>>) -> Reports {
        let mut reports = Reports::new();
        reports.insert("r1".into(), r1);
        if let Some(r2) = r2 {
            reports.insert("r2".into(), r2);
        }
        reports
    }

    fn show(gateways: Option<Gateways>) -> String {
        match gateways {
            None => "-".into(),
            Some(g) => format!(
                "{} {}",
                g.v4.map_or("-".into(), |a| a.to_string()),
                g.v6.map_or("-".into(), |a| a.to_string())
            ),
        }
    }

    /// Each case: one end's interface, the other end's when it reported,
    /// and the gateways found (IPv4, IPv6; `-` for none), rule by rule.
    #[test]
    fn the_rules_in_order() {
        type Case = (
            &'static str,
            InterfaceReport,
            Option<InterfaceReport>,
            &'static str,
        );
        let cases: Vec<Case> = vec![
            (
                "a shared /31 and /127, both ends reported",
                interface("ge-0", &["192.0.2.0/31", "2001:db8::/127"], &[]),
                Some(interface("xe-1", &["192.0.2.1/31", "2001:db8::1/127"], &[])),
                "192.0.2.1 2001:db8::1",
            ),
            (
                "a shared /24: the peer's own address on it",
                interface("ge-0", &["198.51.100.7/24", "2001:db8:1::7/64"], &[]),
                Some(interface(
                    "xe-1",
                    &["198.51.100.200/24", "2001:db8:1::99/64"],
                    &[],
                )),
                "198.51.100.200 2001:db8:1::99",
            ),
            (
                "the peer not heard: a /30 and a /126 name it",
                interface("ge-0", &["203.0.113.2/30", "2001:db8:2::1/126"], &[]),
                None,
                "203.0.113.1 2001:db8:2::2",
            ),
            (
                "the peer not heard: a /30's network address names nobody",
                interface("ge-0", &["203.0.113.0/30"], &[]),
                None,
                "- -",
            ),
            (
                "unnumbered IPv4 (/32 each end): the neighbour entry; IPv6 link-local",
                interface(
                    "ge-0",
                    &["10.9.9.1/32", "fe80::1/64"],
                    &["10.9.9.2", "fe80::2"],
                ),
                Some(interface("xe-1", &["10.9.9.2/32", "fe80::2/64"], &[])),
                "10.9.9.2 fe80::2",
            ),
            (
                "IPv6 by the peer's link-local address alone",
                interface("ge-0", &["fe80::1/64"], &[]),
                Some(interface("xe-1", &["fe80::2/64"], &[])),
                "- fe80::2",
            ),
            (
                "the peer not heard, a /24: its only neighbour of each family",
                interface(
                    "ge-0",
                    &["198.51.100.7/24", "fe80::1/64"],
                    &["198.51.100.1", "fe80::9"],
                ),
                None,
                "198.51.100.1 fe80::9",
            ),
            (
                "the peer not heard, a /24 with two neighbours: no telling which",
                interface(
                    "ge-0",
                    &["198.51.100.7/24"],
                    &["198.51.100.1", "198.51.100.2"],
                ),
                None,
                "- -",
            ),
            (
                "different subnets at the two ends, a neighbour that is not the peer",
                interface("ge-0", &["192.0.2.0/31"], &["192.0.2.1"]),
                Some(interface("xe-1", &["192.0.2.9/31"], &[])),
                "- -",
            ),
        ];
        let mut failures = Vec::new();
        for (case, own, peer, expected) in cases {
            let got = format!(
                "{} {}",
                gateway(&own, peer.as_ref(), false).map_or("-".into(), |a| a.to_string()),
                gateway(&own, peer.as_ref(), true).map_or("-".into(), |a| a.to_string()),
            );
            if got != expected {
                failures.push(format!("{case}:\n  expected {expected}\n  got      {got}"));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn a_link_needs_every_family_in_use_and_both_ends() {
        let topology = topology("10.1.0.0/24,fd00:1::/64");
        let cases: Vec<(&str, Reports, &str)> = vec![
            (
                "both ends agree",
                reports(
                    vec![interface("ge-0", &["192.0.2.0/31", "2001:db8::/127"], &[])],
                    Some(vec![interface(
                        "xe-1",
                        &["192.0.2.1/31", "2001:db8::1/127"],
                        &[],
                    )]),
                ),
                "192.0.2.1 2001:db8::1",
            ),
            (
                "different subnets at the two ends",
                reports(
                    vec![interface("ge-0", &["192.0.2.0/31", "2001:db8::/127"], &[])],
                    Some(vec![interface(
                        "xe-1",
                        &["192.0.2.9/31", "2001:db8::9/127"],
                        &[],
                    )]),
                ),
                "unresolved: no IPv4 or IPv6 next hop: r1:ge-0 and r2:xe-1 share no subnet, \
                 no neighbour entry of r1:ge-0 is an address of r2:xe-1",
            ),
            (
                "IPv6 by link-local only, no IPv4",
                reports(
                    vec![interface("ge-0", &["fe80::1/64"], &[])],
                    Some(vec![interface("xe-1", &["fe80::2/64"], &[])]),
                ),
                "unresolved: no IPv4 next hop: r1:ge-0 and r2:xe-1 share no subnet, \
                 no neighbour entry of r1:ge-0 is an address of r2:xe-1",
            ),
            (
                "the other direction fails",
                reports(
                    vec![interface(
                        "ge-0",
                        &["10.9.9.1/32", "fe80::1/64"],
                        &["10.9.9.2"],
                    )],
                    Some(vec![interface("xe-1", &["10.9.9.2/32", "fe80::2/64"], &[])]),
                ),
                "unresolved: the other direction: no IPv4 next hop: r2:xe-1 and r1:ge-0 \
                 share no subnet, no neighbour entry of r2:xe-1 is an address of r1:ge-0",
            ),
            (
                "the interface named in the topology is not there",
                reports(vec![interface("ge-9", &["192.0.2.0/31"], &[])], None),
                "unresolved: r1 has no interface ge-0",
            ),
            (
                "the peer's interface is not there",
                reports(
                    vec![interface("ge-0", &["192.0.2.0/31", "2001:db8::/127"], &[])],
                    Some(vec![interface("xe-2", &["192.0.2.1/31"], &[])]),
                ),
                "unresolved: r2 has no interface xe-1",
            ),
        ];
        let mut failures = Vec::new();
        for (case, reports, expected) in cases {
            let discovery = discover(&topology, &reports);
            let got = match discovery.unresolved().get("r1:ge-0") {
                Some(reason) => format!("unresolved: {reason}"),
                None => show(discovery.gateways("r1", "ge-0")),
            };
            if got != expected {
                failures.push(format!("{case}:\n  expected {expected}\n  got      {got}"));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn an_unresolved_link_goes_both_ways_and_leaves_the_topology() {
        let topology = topology("10.1.0.0/24");
        let reports = reports(
            vec![
                interface("ge-0", &["192.0.2.0/31"], &[]),
                interface("to-h1", &["192.0.2.8/31"], &[]),
            ],
            Some(vec![interface("xe-1", &["192.0.2.5/31"], &[])]),
        );
        let discovery = discover(&topology, &reports);
        assert_eq!(
            discovery.unresolved().keys().collect::<Vec<_>>(),
            vec!["r1:ge-0", "r2:xe-1"]
        );
        assert!(discovery.unresolved()["r2:xe-1"].starts_with("no IPv4 next hop"));
        // The host link resolves from r1's side; h1 sends on nothing.
        assert_eq!(show(discovery.gateways("r1", "to-h1")), "192.0.2.9 -");
        let effective = discovery.effective(&topology);
        let up: Vec<String> = effective
            .links
            .iter()
            .filter(|l| l.admin_up)
            .map(|l| format!("{}:{}", l.src, l.src_interface))
            .collect();
        assert_eq!(up, vec!["r1:to-h1", "h1:eth0"]);
    }

    #[test]
    fn down_interfaces_and_silent_agents_are_unresolved() {
        let topology = topology("10.1.0.0/24");
        let mut down = interface("ge-0", &["192.0.2.0/31"], &[]);
        down.up = false;
        let discovery = discover(&topology, &reports(vec![down], None));
        assert_eq!(discovery.unresolved()["r1:ge-0"], "r1:ge-0 is down");
        let discovery = discover(&topology, &Reports::new());
        assert_eq!(
            discovery.unresolved()["r1:ge-0"],
            "the agent of r1 has not reported its interfaces"
        );
    }

    #[test]
    fn loopbacks_are_lo_host_addresses_outside_the_prefixes() {
        let topology = topology("10.1.0.0/24");
        let lo = interface(
            "lo",
            &[
                "127.0.0.1/8",
                "::1/128",
                "10.1.0.1/32",
                "192.0.2.255/32",
                "fd00:254::3/128",
            ],
            &[],
        );
        let discovery = discover(&topology, &reports(vec![lo], None));
        assert_eq!(
            discovery
                .loopbacks("r1")
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>(),
            vec!["192.0.2.255", "fd00:254::3"]
        );
        assert!(discovery.loopbacks("r2").is_empty());
    }
}
