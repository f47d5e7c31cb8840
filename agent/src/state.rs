//! The forwarding state of one node, as plain data: what the controller wants
//! a router to hold (desired) or what the agent read from its kernel
//! (observed). No netlink type appears here; `messages` and `tc` translate.
//!
//! Every kernel object aiwan installs carries one of the markers below, so the
//! agent can tell its own objects from everyone else's and never touches the
//! latter.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::RangeInclusive;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// The route protocol (`rtm_protocol`) of every route and FIB rule aiwan
/// installs.
///
/// 170 (0xAA) is free: the kernel's `include/uapi/linux/rtnetlink.h` defines
/// 0-4 (unspec, redirect, kernel, boot, static), 8-18 (gated ... keepalived),
/// 42 (babel), 99 (openr), 186-192 (bgp, isis, ospf, rip, eigrp); iproute2's
/// `/etc/iproute2/rt_protos` names the same set, and FRR's
/// `rt_protos.d/frr.conf` takes 186-198. `ip route show proto 170` lists what
/// aiwan owns.
pub const ROUTE_PROTOCOL: u8 = 170;

/// The priorities of aiwan's FIB rules. Above the `local` rule (0) and below
/// `main` (32766) and `default` (32767), so a pinned flow is looked up in its
/// per-path table before the main table. A rule is aiwan's when it carries
/// [`ROUTE_PROTOCOL`] as its `FRA_PROTOCOL`; the range is checked on desired
/// rules so that aiwan's rules stay together.
pub const RULE_PRIORITY_RANGE: RangeInclusive<u32> = 20000..=20999;

/// The routing tables aiwan may fill besides `main`: one per pinned path
/// (the table a [`FlowRule`] points at). Far from the tables operators
/// usually number (1-252) and from VRF tables (often 1000s or 10000s).
pub const TABLE_RANGE: RangeInclusive<u32> = 20000..=29999;

/// The `main` routing table (`RT_TABLE_MAIN`); aiwan's site routes live here
/// and local SIDs always do.
pub const MAIN_TABLE: u32 = 254;

/// The major number of aiwan's htb root qdisc (`tc qdisc ... handle a1:`) and
/// of all its classes (`a1:N`). A root qdisc with another non-zero handle was
/// configured by someone else, and aiwan refuses to replace it.
pub const QDISC_MAJOR: u16 = 0xA1;

/// The minor of the parent class (`a1:ffff`) that holds a rate limit's
/// classes when it has a link rate ([`RateLimit::link_bps`]).
pub const PARENT_CLASS_ID: u16 = 0xFFFF;

/// The u32 filter priority (`tc filter ... prio 1`) of aiwan's IPv4 DSCP
/// filters under its qdisc.
pub const FILTER_PRIO_V4: u16 = 1;

/// The u32 filter priority (`prio 2`) of aiwan's IPv6 DSCP filters.
pub const FILTER_PRIO_V6: u16 = 2;

/// The largest next-hop weight: the kernel stores `weight - 1` in the u8
/// `rtnh_hops`.
pub const MAX_WEIGHT: u32 = 256;

/// The desired or observed forwarding state of one node.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct NodeState {
    /// Weighted multipath routes towards destination site prefixes.
    pub routes: Vec<UcmpRoute>,
    /// SRv6 head-end policies: routes that encapsulate with a segment list.
    pub srv6_policies: Vec<Srv6Policy>,
    /// SRv6 local SIDs (seg6local routes in the main table).
    pub local_sids: Vec<LocalSid>,
    /// FIB rules that steer individual flows into per-path tables.
    pub flow_rules: Vec<FlowRule>,
    /// Per-interface rate limits (htb).
    pub rate_limits: Vec<RateLimit>,
}

/// A route to `prefix` in `table` spread over weighted next hops (UCMP).
///
/// One next hop makes a plain route and several a multipath route whose
/// weights carry the plan's split ratios. A single next hop has no weight in
/// the kernel: it reads back as 1, and [`UcmpRoute::normalized`] says so.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct UcmpRoute {
    pub prefix: IpNet,
    pub table: u32,
    pub next_hops: Vec<NextHop>,
}

/// One next hop of a [`UcmpRoute`].
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(deny_unknown_fields)]
pub struct NextHop {
    /// The neighbour to forward to; `None` for a directly connected prefix.
    /// Same address family as the route's prefix.
    pub gateway: Option<IpAddr>,
    /// The outgoing interface, by name.
    pub interface: String,
    /// 1..=256; traffic is split in proportion to the weights.
    pub weight: u32,
}

/// An SRv6 head-end policy: packets to `prefix` (looked up in `table`) are
/// encapsulated in an outer IPv6 header with an SRH carrying `segments`
/// (`encap seg6 mode encap`), in path order (the first segment is visited
/// first).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Srv6Policy {
    pub prefix: IpNet,
    pub table: u32,
    pub segments: Vec<Ipv6Addr>,
    pub interface: String,
    /// Same address family as `prefix`.
    pub gateway: Option<IpAddr>,
}

/// An SRv6 local SID: a seg6local route for `sid`/128 in the main table.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LocalSid {
    pub sid: Ipv6Addr,
    pub action: Srv6Action,
    pub interface: String,
}

/// The behaviour of a [`LocalSid`].
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Srv6Action {
    /// `End`: advance to the next segment (transit node).
    End,
    /// `End.DX4`: decapsulate and forward the inner IPv4 packet to
    /// `next_hop`.
    EndDx4 { next_hop: Ipv4Addr },
    /// `End.DT6`: decapsulate and look the inner IPv6 packet up in `table`.
    EndDt6 { table: u32 },
}

/// The address family of a [`FlowRule`].
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    V4,
    V6,
}

impl Family {
    /// The family of an address.
    pub fn of(addr: &IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// The family of a prefix.
    pub fn of_net(net: &IpNet) -> Family {
        match net {
            IpNet::V4(_) => Family::V4,
            IpNet::V6(_) => Family::V6,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "ipv4",
            Family::V6 => "ipv6",
        })
    }
}

/// A FIB rule pinning the flows it selects to a per-path `table`.
///
/// Unset selectors match everything. Port ranges are inclusive.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FlowRule {
    /// In [`RULE_PRIORITY_RANGE`]; one rule per family and priority.
    pub priority: u32,
    pub family: Family,
    pub source: Option<IpNet>,
    pub destination: Option<IpNet>,
    /// IP protocol number (6 TCP, 17 UDP, ...).
    pub ip_protocol: Option<u8>,
    pub destination_ports: Option<(u16, u16)>,
    pub source_ports: Option<(u16, u16)>,
    /// A DSCP value, 0..=63 (the upper six bits of the TOS / traffic class
    /// byte), matched with `FRA_DSCP` (Linux 6.13 and later).
    pub dscp: Option<u8>,
    /// In [`TABLE_RANGE`].
    pub table: u32,
}

/// A rate limit on one interface's egress: an htb root qdisc `a1:` with one
/// class per [`ClassLimit`] and u32 filters steering packets by DSCP (IPv4
/// TOS and IPv6 traffic class) into the classes.
///
/// Traffic no filter matches goes to `default_class` when set; otherwise it
/// bypasses shaping (htb's direct queue).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub interface: String,
    /// The `class_id` of one of `classes`.
    pub default_class: Option<u16>,
    /// The link's rate in bit/s (a positive multiple of 8). When set, the
    /// classes sit under a parent class `a1:ffff` ([`PARENT_CLASS_ID`]) at
    /// this rate, and each may borrow from it up to its ceil what the
    /// others leave idle (work conserving); otherwise they sit under the
    /// qdisc, each on its own.
    #[serde(default)]
    pub link_bps: Option<u64>,
    pub classes: Vec<ClassLimit>,
}

/// One htb class `a1:<class_id>` under aiwan's root qdisc.
///
/// The kernel keeps no names, so a class is identified by its id; the
/// controller maps its traffic classes (`ai-bulk`, `best-effort`, ...) to
/// ids.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClassLimit {
    /// The class minor number, 1..=0xFFFF.
    pub class_id: u16,
    /// Guaranteed rate in bit/s, a multiple of 8 (the kernel counts bytes).
    pub rate_bps: u64,
    /// Ceiling in bit/s (>= `rate_bps`, a multiple of 8).
    pub ceil_bps: u64,
    /// The DSCP values (0..=63) steered into this class.
    pub dscp: Vec<u8>,
}

/// A desired state that cannot be installed, naming the item and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{object}: {problem}")]
pub struct StateError {
    /// The offending item, e.g. `route 10.2.0.0/16 table 20001`.
    pub object: String,
    /// What is wrong with it.
    pub problem: String,
}

fn bad(object: impl fmt::Display, problem: impl Into<String>) -> StateError {
    StateError {
        object: object.to_string(),
        problem: problem.into(),
    }
}

impl fmt::Display for UcmpRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "route {} table {}", self.prefix, self.table)
    }
}

impl fmt::Display for Srv6Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "srv6 policy {} table {}", self.prefix, self.table)
    }
}

impl fmt::Display for LocalSid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "local sid {}", self.sid)
    }
}

impl fmt::Display for FlowRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} flow rule {}", self.family, self.priority)
    }
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rate limit on {}", self.interface)
    }
}

impl fmt::Display for NextHop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.gateway {
            Some(gw) => write!(f, "next hop via {gw} dev {}", self.interface),
            None => write!(f, "next hop dev {}", self.interface),
        }
    }
}

impl fmt::Display for Srv6Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Srv6Action::End => f.write_str("End"),
            Srv6Action::EndDx4 { next_hop } => write!(f, "End.DX4 nh4 {next_hop}"),
            Srv6Action::EndDt6 { table } => write!(f, "End.DT6 table {table}"),
        }
    }
}

impl UcmpRoute {
    /// The same route in canonical form: next hops sorted, and the weight of
    /// a lone next hop set to 1 (the kernel keeps none).
    pub fn normalized(&self) -> UcmpRoute {
        let mut route = self.clone();
        route.next_hops.sort();
        if let [only] = route.next_hops.as_mut_slice() {
            only.weight = 1;
        }
        route
    }
}

impl FlowRule {
    /// A rule matching everything, to fill in with struct update syntax.
    pub fn new(priority: u32, family: Family, table: u32) -> FlowRule {
        FlowRule {
            priority,
            family,
            source: None,
            destination: None,
            ip_protocol: None,
            destination_ports: None,
            source_ports: None,
            dscp: None,
            table,
        }
    }
}

impl RateLimit {
    /// The same rate limit in canonical form: classes sorted by id, DSCP
    /// lists sorted.
    pub fn normalized(&self) -> RateLimit {
        let mut limit = self.clone();
        limit.classes.sort_by_key(|c| c.class_id);
        for class in &mut limit.classes {
            class.dscp.sort_unstable();
            class.dscp.dedup();
        }
        limit
    }
}

/// Turns split ratios (any non-negative numbers, not all zero) into next-hop
/// weights in 1..=256 with the same proportions, as close as the kernel's
/// integer weights allow. A path with a ratio of zero still gets weight 1:
/// drop it from the route instead if it must carry nothing.
pub fn weights_from_ratios(ratios: &[f64]) -> Vec<u32> {
    let max = ratios
        .iter()
        .copied()
        .filter(|r| r.is_finite())
        .fold(0.0_f64, f64::max);
    ratios
        .iter()
        .map(|r| {
            if max <= 0.0 || !r.is_finite() {
                return 1;
            }
            let w = (r / max * f64::from(MAX_WEIGHT)).round();
            // In 1..=256 after the clamp, so the cast is exact.
            w.clamp(1.0, f64::from(MAX_WEIGHT)) as u32
        })
        .collect()
}

fn table_ok_for_routes(table: u32) -> bool {
    table == MAIN_TABLE || TABLE_RANGE.contains(&table)
}

fn check_interface(object: &dyn fmt::Display, name: &str) -> Result<(), StateError> {
    // IFNAMSIZ is 16 including the terminating NUL.
    if name.is_empty() || name.len() > 15 || name.contains(['/', ' ', '\0']) {
        return Err(bad(object, format!("invalid interface name {name:?}")));
    }
    Ok(())
}

fn check_prefix(object: &dyn fmt::Display, prefix: &IpNet) -> Result<(), StateError> {
    if prefix.trunc() != *prefix {
        return Err(bad(
            object,
            format!(
                "prefix has host bits set (did you mean {}?)",
                prefix.trunc()
            ),
        ));
    }
    Ok(())
}

fn check_route_table(object: &dyn fmt::Display, table: u32) -> Result<(), StateError> {
    if !table_ok_for_routes(table) {
        return Err(bad(
            object,
            format!(
                "table {table} is not aiwan's: use main ({MAIN_TABLE}) or {}..={}",
                TABLE_RANGE.start(),
                TABLE_RANGE.end()
            ),
        ));
    }
    Ok(())
}

fn check_gateway(
    object: &dyn fmt::Display,
    prefix: &IpNet,
    gateway: &Option<IpAddr>,
) -> Result<(), StateError> {
    if let Some(gw) = gateway
        && Family::of(gw) != Family::of_net(prefix)
    {
        return Err(bad(
            object,
            format!("gateway {gw} is not of the prefix's address family"),
        ));
    }
    Ok(())
}

fn check_ports(
    object: &dyn fmt::Display,
    what: &str,
    ports: Option<(u16, u16)>,
) -> Result<(), StateError> {
    if let Some((lo, hi)) = ports
        && lo > hi
    {
        return Err(bad(object, format!("{what} range {lo}-{hi} is empty")));
    }
    Ok(())
}

impl NodeState {
    /// Checks that the state can be installed as is, naming the first bad
    /// item: empty or duplicate next hops, weights outside 1..=256, tables
    /// or priorities outside aiwan's ranges, mixed address families, objects
    /// defined twice, rates that are not whole bytes per second, ...
    pub fn check(&self) -> Result<(), StateError> {
        let mut route_keys = std::collections::BTreeSet::new();
        for route in &self.routes {
            check_route_table(route, route.table)?;
            check_prefix(route, &route.prefix)?;
            if route.next_hops.is_empty() {
                return Err(bad(route, "no next hops"));
            }
            let mut seen = std::collections::BTreeSet::new();
            for nh in &route.next_hops {
                check_interface(&format_args!("{route}: {nh}"), &nh.interface)?;
                check_gateway(&format_args!("{route}: {nh}"), &route.prefix, &nh.gateway)?;
                if nh.weight == 0 || nh.weight > MAX_WEIGHT {
                    return Err(bad(
                        format_args!("{route}: {nh}"),
                        format!("weight {} outside 1..={MAX_WEIGHT}", nh.weight),
                    ));
                }
                if !seen.insert((&nh.interface, nh.gateway)) {
                    return Err(bad(format_args!("{route}: {nh}"), "next hop listed twice"));
                }
            }
            if !route_keys.insert((route.table, route.prefix)) {
                return Err(bad(route, "defined twice"));
            }
        }
        for policy in &self.srv6_policies {
            check_route_table(policy, policy.table)?;
            check_prefix(policy, &policy.prefix)?;
            check_interface(policy, &policy.interface)?;
            check_gateway(policy, &policy.prefix, &policy.gateway)?;
            if policy.segments.is_empty() {
                return Err(bad(policy, "no segments"));
            }
            // The SRH length (8 + 16 n bytes) must fit its 8-bit hdrlen
            // field: (16 n) / 8 <= 255.
            if policy.segments.len() > 127 {
                return Err(bad(policy, "more than 127 segments"));
            }
            if !route_keys.insert((policy.table, policy.prefix)) {
                return Err(bad(policy, "defined twice (as a route or policy)"));
            }
        }
        for sid in &self.local_sids {
            check_interface(sid, &sid.interface)?;
            if let Srv6Action::EndDt6 { table } = sid.action {
                check_route_table(sid, table)?;
            }
            let prefix = IpNet::V6(ipnet::Ipv6Net::from(sid.sid));
            if !route_keys.insert((MAIN_TABLE, prefix)) {
                return Err(bad(sid, "defined twice (as a route, policy or sid)"));
            }
        }
        let mut rule_keys = std::collections::BTreeSet::new();
        for rule in &self.flow_rules {
            if !RULE_PRIORITY_RANGE.contains(&rule.priority) {
                return Err(bad(
                    rule,
                    format!(
                        "priority outside aiwan's range {}..={}",
                        RULE_PRIORITY_RANGE.start(),
                        RULE_PRIORITY_RANGE.end()
                    ),
                ));
            }
            if !TABLE_RANGE.contains(&rule.table) {
                return Err(bad(
                    rule,
                    format!(
                        "table {} outside aiwan's per-path tables {}..={}",
                        rule.table,
                        TABLE_RANGE.start(),
                        TABLE_RANGE.end()
                    ),
                ));
            }
            for (what, net) in [("source", &rule.source), ("destination", &rule.destination)] {
                if let Some(net) = net {
                    if Family::of_net(net) != rule.family {
                        return Err(bad(rule, format!("{what} {net} is not {}", rule.family)));
                    }
                    check_prefix(&format_args!("{rule}: {what}"), net)?;
                }
            }
            check_ports(rule, "destination port", rule.destination_ports)?;
            check_ports(rule, "source port", rule.source_ports)?;
            if let Some(dscp) = rule.dscp
                && dscp > 63
            {
                return Err(bad(rule, format!("dscp {dscp} outside 0..=63")));
            }
            if !rule_keys.insert((rule.family, rule.priority)) {
                return Err(bad(rule, "defined twice"));
            }
        }
        let mut interfaces = std::collections::BTreeSet::new();
        for limit in &self.rate_limits {
            check_interface(limit, &limit.interface)?;
            if !interfaces.insert(&limit.interface) {
                return Err(bad(limit, "defined twice"));
            }
            if limit.classes.is_empty() {
                return Err(bad(limit, "no classes"));
            }
            if let Some(link) = limit.link_bps
                && (link == 0 || link % 8 != 0)
            {
                return Err(bad(
                    limit,
                    format!("link rate {link} bit/s is not a positive multiple of 8"),
                ));
            }
            let mut ids = std::collections::BTreeSet::new();
            let mut dscps = std::collections::BTreeMap::new();
            for class in &limit.classes {
                let object = format!("{limit}: class {:x}:{:x}", QDISC_MAJOR, class.class_id);
                if class.class_id == 0 {
                    return Err(bad(object, "class id 0 is the qdisc itself"));
                }
                if class.class_id == PARENT_CLASS_ID {
                    return Err(bad(
                        object,
                        "class id ffff is reserved for the parent of the classes",
                    ));
                }
                if !ids.insert(class.class_id) {
                    return Err(bad(object, "defined twice"));
                }
                if class.rate_bps == 0 || class.rate_bps % 8 != 0 {
                    return Err(bad(
                        object,
                        format!(
                            "rate {} bit/s is not a positive multiple of 8",
                            class.rate_bps
                        ),
                    ));
                }
                if class.ceil_bps < class.rate_bps || class.ceil_bps % 8 != 0 {
                    return Err(bad(
                        object,
                        format!(
                            "ceil {} bit/s is below the rate or not a multiple of 8",
                            class.ceil_bps
                        ),
                    ));
                }
                if let Some(link) = limit.link_bps
                    && class.ceil_bps > link
                {
                    return Err(bad(
                        object,
                        format!(
                            "ceil {} bit/s is above the link rate {link} bit/s",
                            class.ceil_bps
                        ),
                    ));
                }
                for &d in &class.dscp {
                    if d > 63 {
                        return Err(bad(object, format!("dscp {d} outside 0..=63")));
                    }
                    if let Some(other) = dscps.insert(d, class.class_id)
                        && other != class.class_id
                    {
                        return Err(bad(
                            object,
                            format!(
                                "dscp {d} already goes to class {:x}:{:x}",
                                QDISC_MAJOR, other
                            ),
                        ));
                    }
                }
            }
            if let Some(default) = limit.default_class
                && !ids.contains(&default)
            {
                return Err(bad(
                    limit,
                    format!(
                        "default class {:x}:{:x} is not one of its classes",
                        QDISC_MAJOR, default
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The same state in canonical form (every list sorted, single next
    /// hops with weight 1), so that two states holding the same objects
    /// compare equal whatever their order.
    pub fn normalized(&self) -> NodeState {
        let mut s = self.clone();
        s.routes = s.routes.iter().map(UcmpRoute::normalized).collect();
        s.routes.sort_by_key(|r| (r.table, r.prefix));
        s.srv6_policies.sort_by_key(|p| (p.table, p.prefix));
        s.local_sids.sort_by_key(|sid| sid.sid);
        s.flow_rules.sort_by_key(|r| (r.family, r.priority));
        s.rate_limits = s.rate_limits.iter().map(RateLimit::normalized).collect();
        s.rate_limits.sort_by(|a, b| a.interface.cmp(&b.interface));
        s
    }

    /// True when the state holds nothing.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
            && self.srv6_policies.is_empty()
            && self.local_sids.is_empty()
            && self.flow_rules.is_empty()
            && self.rate_limits.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nh(gw: &str, dev: &str, weight: u32) -> NextHop {
        NextHop {
            gateway: Some(gw.parse().unwrap()),
            interface: dev.into(),
            weight,
        }
    }

    fn valid() -> NodeState {
        NodeState {
            routes: vec![UcmpRoute {
                prefix: "10.2.0.0/16".parse().unwrap(),
                table: 20001,
                next_hops: vec![nh("10.0.1.2", "veth1", 70), nh("10.0.2.2", "veth2", 30)],
            }],
            srv6_policies: vec![Srv6Policy {
                prefix: "fc00:98::/64".parse().unwrap(),
                table: 20002,
                segments: vec!["fc00:a::1".parse().unwrap()],
                interface: "veth1".into(),
                gateway: None,
            }],
            local_sids: vec![LocalSid {
                sid: "fc00:a::1".parse().unwrap(),
                action: Srv6Action::End,
                interface: "veth1".into(),
            }],
            flow_rules: vec![FlowRule {
                ip_protocol: Some(17),
                destination_ports: Some((4791, 4791)),
                ..FlowRule::new(20001, Family::V4, 20001)
            }],
            rate_limits: vec![RateLimit {
                interface: "veth1".into(),
                default_class: Some(0x30),
                link_bps: None,
                classes: vec![
                    ClassLimit {
                        class_id: 0x10,
                        rate_bps: 10_000_000,
                        ceil_bps: 20_000_000,
                        dscp: vec![8, 10],
                    },
                    ClassLimit {
                        class_id: 0x30,
                        rate_bps: 1_000_000,
                        ceil_bps: 1_000_000,
                        dscp: vec![],
                    },
                ],
            }],
        }
    }

    fn check_err(f: impl FnOnce(&mut NodeState)) -> String {
        let mut s = valid();
        f(&mut s);
        s.check().unwrap_err().to_string()
    }

    #[test]
    fn valid_state_passes() {
        valid().check().unwrap();
        NodeState::default().check().unwrap();
    }

    #[test]
    fn errors_name_the_item() {
        assert_eq!(
            check_err(|s| s.routes[0].next_hops[0].weight = 0),
            "route 10.2.0.0/16 table 20001: next hop via 10.0.1.2 dev veth1: weight 0 outside 1..=256"
        );
        assert_eq!(
            check_err(|s| s.routes[0].next_hops[1].weight = 257),
            "route 10.2.0.0/16 table 20001: next hop via 10.0.2.2 dev veth2: weight 257 outside 1..=256"
        );
        assert_eq!(
            check_err(|s| s.routes[0].next_hops.clear()),
            "route 10.2.0.0/16 table 20001: no next hops"
        );
        assert!(check_err(|s| s.routes[0].table = 253).contains("table 253 is not aiwan's"));
        assert!(check_err(|s| s.routes[0].table = 0).contains("table 0 is not aiwan's"));
        assert!(check_err(|s| s.flow_rules[0].table = 254).contains("table 254 outside"));
        assert_eq!(
            check_err(|s| s.flow_rules[0].priority = 100),
            "ipv4 flow rule 100: priority outside aiwan's range 20000..=20999"
        );
        assert!(
            check_err(|s| s.routes[0].prefix = "10.2.0.1/16".parse().unwrap())
                .contains("host bits")
        );
        assert!(
            check_err(|s| s.routes[0].next_hops[0].gateway = Some("fc00::1".parse().unwrap()))
                .contains("not of the prefix's address family")
        );
        assert!(check_err(|s| s.routes.push(s.routes[0].clone())).contains("defined twice"));
        assert!(check_err(|s| s.srv6_policies[0].segments.clear()).contains("no segments"));
        assert!(
            check_err(|s| s.flow_rules[0].source = Some("fc00::/64".parse().unwrap()))
                .contains("source fc00::/64 is not ipv4")
        );
        assert!(check_err(|s| s.flow_rules[0].destination_ports = Some((5, 4))).contains("empty"));
        assert!(
            check_err(|s| s.rate_limits[0].classes[0].rate_bps = 1001).contains("multiple of 8")
        );
        assert!(
            check_err(|s| s.rate_limits[0].classes[0].class_id = 0xffff)
                .contains("reserved for the parent")
        );
        assert!(check_err(|s| s.rate_limits[0].link_bps = Some(1001)).contains("link rate 1001"));
        assert_eq!(
            check_err(|s| s.rate_limits[0].link_bps = Some(10_000_000)),
            "rate limit on veth1: class a1:10: ceil 20000000 bit/s is above the link rate 10000000 bit/s"
        );
        let mut linked = valid();
        linked.rate_limits[0].link_bps = Some(20_000_000);
        linked.check().unwrap();
        assert!(
            check_err(|s| s.rate_limits[0].classes[1].dscp = vec![8])
                .contains("dscp 8 already goes to class a1:10")
        );
        assert!(
            check_err(|s| s.rate_limits[0].default_class = Some(7)).contains("default class a1:7")
        );
        assert!(
            check_err(|s| s.local_sids[0].interface = "a-very-long-interface-name".into())
                .contains("invalid interface name")
        );
    }

    #[test]
    fn normalized_ignores_order_and_lone_weight() {
        let a = valid();
        let mut b = valid();
        b.routes[0].next_hops.reverse();
        b.rate_limits[0].classes.reverse();
        b.rate_limits[0].classes[1].dscp.reverse();
        assert_ne!(a, b);
        assert_eq!(a.normalized(), b.normalized());
        let single = UcmpRoute {
            prefix: "10.3.0.0/16".parse().unwrap(),
            table: MAIN_TABLE,
            next_hops: vec![nh("10.0.1.2", "veth1", 200)],
        };
        assert_eq!(single.normalized().next_hops[0].weight, 1);
    }

    #[test]
    fn serde_round_trip() {
        let s = valid();
        let json = serde_json::to_string(&s).unwrap();
        let back: NodeState = serde_json::from_str(&json).unwrap();
        assert_eq!(s, back);
    }

    #[test]
    fn weights_keep_proportions() {
        assert_eq!(weights_from_ratios(&[0.7, 0.3]), vec![256, 110]);
        assert_eq!(weights_from_ratios(&[1.0]), vec![256]);
        assert_eq!(weights_from_ratios(&[0.0, 0.0]), vec![1, 1]);
        assert_eq!(weights_from_ratios(&[0.999, 0.001]), vec![256, 1]);
    }
}
