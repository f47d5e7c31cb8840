//! Pure translation between aiwan's domain types and rtnetlink route and
//! rule messages (netlink-packet-route 0.34), both ways, without a kernel.
//!
//! The messages are built attribute for attribute as iproute2's `ip` builds
//! them for the same object, so the tests can compare them byte for byte with
//! captures of `ip route replace ...` and `ip rule add ...`. Parsing accepts
//! whatever else the kernel adds to its answers.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

use ipnet::{IpNet, Ipv6Net};
use netlink_packet_core::{
    DefaultNla, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST,
    NetlinkHeader, NetlinkMessage, NetlinkPayload, Nla,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteLwEnCapType, RouteLwTunnelEncap, RouteMessage,
    RouteNextHop, RouteProtocol, RouteScope, RouteSeg6IpTunnel, RouteSeg6LocalTunnel, RouteType,
    Seg6Header, Seg6LocalAction, Seg6Mode,
};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleMessage, RulePortRange};
use netlink_packet_route::{AddressFamily, IpProtocol, RouteNetlinkMessage};

use super::state::{
    Family, FlowRule, LocalSid, MAIN_TABLE, NextHop, ROUTE_PROTOCOL, Srv6Action, Srv6Policy,
    UcmpRoute,
};

/// Flags of a create-or-replace request (`ip route replace`).
pub const FLAGS_REPLACE: u16 = NLM_F_REQUEST | NLM_F_ACK | NLM_F_REPLACE | NLM_F_CREATE;
/// Flags of a create-only request (`ip rule add`, `tc filter add`).
pub const FLAGS_ADD: u16 = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
/// Flags of a create-or-change request (`tc class replace`, `tc filter
/// replace`: tc sends no `NLM_F_REPLACE` for those).
pub const FLAGS_CREATE: u16 = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE;
/// Flags of a delete request.
pub const FLAGS_DELETE: u16 = NLM_F_REQUEST | NLM_F_ACK;
/// Flags of a dump request.
pub const FLAGS_DUMP: u16 = NLM_F_REQUEST | NLM_F_DUMP;

/// `FRA_DSCP` (Linux 6.13): a rule's full 6-bit DSCP selector. The older
/// header `tos` field only accepts the four legacy TOS bits for IPv4.
pub const FRA_DSCP: u16 = 25;

/// One request to the kernel: a message, its netlink flags, and the object
/// it is about (for error messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// What the request does to which object, e.g. `replace route
    /// 10.2.0.0/16 table 20001`.
    pub what: String,
    pub message: RouteNetlinkMessage,
    pub flags: u16,
}

impl Request {
    pub fn new(what: impl Into<String>, message: RouteNetlinkMessage, flags: u16) -> Request {
        Request {
            what: what.into(),
            message,
            flags,
        }
    }

    /// The netlink message, header filled in (sequence number 0: the
    /// connection numbers it).
    pub fn to_netlink(&self) -> NetlinkMessage<RouteNetlinkMessage> {
        let mut header = NetlinkHeader::default();
        header.flags = self.flags;
        let mut msg =
            NetlinkMessage::new(header, NetlinkPayload::InnerMessage(self.message.clone()));
        msg.finalize();
        msg
    }
}

/// Interface names and indexes, read from the kernel before building
/// messages (netlink speaks ifindexes, the domain speaks names).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interfaces {
    by_name: BTreeMap<String, u32>,
    by_index: BTreeMap<u32, String>,
}

impl Interfaces {
    /// From `(ifindex, name)` pairs.
    pub fn new(pairs: impl IntoIterator<Item = (u32, String)>) -> Interfaces {
        let mut ifaces = Interfaces::default();
        for (index, name) in pairs {
            ifaces.by_name.insert(name.clone(), index);
            ifaces.by_index.insert(index, name);
        }
        ifaces
    }

    /// The ifindex of `name`.
    pub fn index(&self, name: &str) -> Option<u32> {
        self.by_name.get(name).copied()
    }

    /// The name of `index`, or `if<index>` for an interface that appeared
    /// after the list was read.
    pub fn name(&self, index: u32) -> String {
        self.by_index
            .get(&index)
            .cloned()
            .unwrap_or_else(|| format!("if{index}"))
    }

    /// The ifindex of `name`, or an error naming `object` and the interface.
    pub fn resolve(&self, object: &dyn fmt::Display, name: &str) -> Result<u32, MessageError> {
        self.index(name)
            .ok_or_else(|| MessageError::NoSuchInterface {
                object: object.to_string(),
                interface: name.to_string(),
            })
    }

    /// `(ifindex, name)` pairs in ifindex order.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &str)> {
        self.by_index.iter().map(|(i, n)| (*i, n.as_str()))
    }
}

/// A message that cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("{object}: dev {interface}: no such interface")]
    NoSuchInterface { object: String, interface: String },
    #[error("{object}: {problem}")]
    Invalid { object: String, problem: String },
}

/// What identifies a route in the kernel for aiwan: family, table and
/// destination prefix (aiwan installs one route per prefix and table, at the
/// kernel's default metric).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RouteKey {
    pub table: u32,
    pub prefix: IpNet,
}

impl RouteKey {
    pub fn family(&self) -> Family {
        Family::of_net(&self.prefix)
    }
}

impl fmt::Display for RouteKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "route {} table {}", self.prefix, self.table)
    }
}

/// A route aiwan installs, whichever kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteObject {
    Ucmp(UcmpRoute),
    Srv6(Srv6Policy),
    Sid(LocalSid),
}

impl RouteObject {
    pub fn key(&self) -> RouteKey {
        match self {
            RouteObject::Ucmp(r) => RouteKey {
                table: r.table,
                prefix: r.prefix,
            },
            RouteObject::Srv6(p) => RouteKey {
                table: p.table,
                prefix: p.prefix,
            },
            RouteObject::Sid(s) => RouteKey {
                table: MAIN_TABLE,
                prefix: IpNet::V6(Ipv6Net::from(s.sid)),
            },
        }
    }

    /// Canonical form, for comparing desired with observed.
    pub fn normalized(&self) -> RouteObject {
        match self {
            RouteObject::Ucmp(r) => RouteObject::Ucmp(r.normalized()),
            other => other.clone(),
        }
    }

    /// The message that installs this route.
    pub fn message(&self, ifaces: &Interfaces) -> Result<RouteMessage, MessageError> {
        match self {
            RouteObject::Ucmp(r) => ucmp_route(r, ifaces),
            RouteObject::Srv6(p) => srv6_policy_route(p, ifaces),
            RouteObject::Sid(s) => local_sid_route(s, ifaces),
        }
    }
}

impl fmt::Display for RouteObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouteObject::Ucmp(r) => r.fmt(f),
            RouteObject::Srv6(p) => p.fmt(f),
            RouteObject::Sid(s) => s.fmt(f),
        }
    }
}

fn address_family(family: Family) -> AddressFamily {
    match family {
        Family::V4 => AddressFamily::Inet,
        Family::V6 => AddressFamily::Inet6,
    }
}

/// The header and (for tables above 255) `RTA_TABLE` of a route, as `ip`
/// fills them: the table in the header when it fits a byte, else
/// `RT_TABLE_UNSPEC` there and the table in `RTA_TABLE`.
fn route_base(prefix: &IpNet, table: u32) -> RouteMessage {
    let mut msg = RouteMessage::default();
    msg.header.address_family = address_family(Family::of_net(prefix));
    msg.header.destination_prefix_length = prefix.prefix_len();
    msg.header.protocol = RouteProtocol::from(ROUTE_PROTOCOL);
    msg.header.scope = RouteScope::Universe;
    msg.header.kind = RouteType::Unicast;
    // `ip` leaves RTA_DST out for a default route.
    if prefix.prefix_len() > 0 {
        msg.attributes
            .push(RouteAttribute::Destination(RouteAddress::from(
                prefix.network(),
            )));
    }
    match u8::try_from(table) {
        Ok(t) if t != 0 => msg.header.table = t,
        _ => {
            msg.header.table = RouteHeader::RT_TABLE_UNSPEC;
            msg.attributes.push(RouteAttribute::Table(table));
        }
    }
    msg
}

fn next_hop_what(route: &dyn fmt::Display, nh: &NextHop) -> String {
    format!("{route}: {nh}")
}

/// `ip route replace PREFIX table T proto 170 nexthop via GW dev IF weight W
/// ...` (or `via GW dev IF` for a single next hop).
pub fn ucmp_route(route: &UcmpRoute, ifaces: &Interfaces) -> Result<RouteMessage, MessageError> {
    let mut msg = route_base(&route.prefix, route.table);
    match route.next_hops.as_slice() {
        [] => {
            return Err(MessageError::Invalid {
                object: route.to_string(),
                problem: "no next hops".into(),
            });
        }
        [nh] => {
            let index = ifaces.resolve(&next_hop_what(route, nh), &nh.interface)?;
            match nh.gateway {
                Some(gw) => msg
                    .attributes
                    .push(RouteAttribute::Gateway(RouteAddress::from(gw))),
                None if route.prefix.addr().is_ipv4() => msg.header.scope = RouteScope::Link,
                None => {}
            }
            msg.attributes.push(RouteAttribute::Oif(index));
        }
        hops => {
            let mut next_hops = Vec::with_capacity(hops.len());
            for nh in hops {
                let index = ifaces.resolve(&next_hop_what(route, nh), &nh.interface)?;
                let hops = u8::try_from(nh.weight.saturating_sub(1)).map_err(|_| {
                    MessageError::Invalid {
                        object: next_hop_what(route, nh),
                        problem: format!("weight {} outside 1..=256", nh.weight),
                    }
                })?;
                if nh.weight == 0 {
                    return Err(MessageError::Invalid {
                        object: next_hop_what(route, nh),
                        problem: "weight 0 outside 1..=256".into(),
                    });
                }
                let mut hop = RouteNextHop::default();
                hop.hops = hops;
                hop.interface_index = index;
                if let Some(gw) = nh.gateway {
                    hop.attributes
                        .push(RouteAttribute::Gateway(RouteAddress::from(gw)));
                }
                next_hops.push(hop);
            }
            msg.attributes.push(RouteAttribute::MultiPath(next_hops));
        }
    }
    Ok(msg)
}

/// `ip route replace PREFIX table T proto 170 encap seg6 mode encap segs
/// S1,S2 [via GW] dev IF`.
pub fn srv6_policy_route(
    policy: &Srv6Policy,
    ifaces: &Interfaces,
) -> Result<RouteMessage, MessageError> {
    if policy.segments.is_empty() || policy.segments.len() > 127 {
        return Err(MessageError::Invalid {
            object: policy.to_string(),
            problem: "needs 1..=127 segments".into(),
        });
    }
    let index = ifaces.resolve(policy, &policy.interface)?;
    let mut msg = route_base(&policy.prefix, policy.table);
    let mut header = Seg6Header::default();
    header.mode = Seg6Mode::Encap;
    header.segments = policy.segments.clone();
    msg.attributes
        .push(RouteAttribute::Encap(vec![RouteLwTunnelEncap::Seg6(
            RouteSeg6IpTunnel::Seg6(header),
        )]));
    msg.attributes
        .push(RouteAttribute::EncapType(RouteLwEnCapType::Seg6));
    match policy.gateway {
        Some(gw) => msg
            .attributes
            .push(RouteAttribute::Gateway(RouteAddress::from(gw))),
        None if policy.prefix.addr().is_ipv4() => msg.header.scope = RouteScope::Link,
        None => {}
    }
    msg.attributes.push(RouteAttribute::Oif(index));
    Ok(msg)
}

/// `ip -6 route replace SID/128 proto 170 encap seg6local action ACTION dev
/// IF` (main table).
pub fn local_sid_route(sid: &LocalSid, ifaces: &Interfaces) -> Result<RouteMessage, MessageError> {
    let index = ifaces.resolve(sid, &sid.interface)?;
    let mut msg = route_base(&IpNet::V6(Ipv6Net::from(sid.sid)), MAIN_TABLE);
    let mut encap = Vec::new();
    match sid.action {
        Srv6Action::End => encap.push(RouteSeg6LocalTunnel::Action(Seg6LocalAction::End)),
        Srv6Action::EndDx4 { next_hop } => {
            encap.push(RouteSeg6LocalTunnel::Action(Seg6LocalAction::EndDx4));
            encap.push(RouteSeg6LocalTunnel::Nh4(next_hop));
        }
        Srv6Action::EndDt6 { table } => {
            encap.push(RouteSeg6LocalTunnel::Action(Seg6LocalAction::EndDt6));
            encap.push(RouteSeg6LocalTunnel::Table(table));
        }
    }
    // netlink-packet-route 0.34 sets NLA_F_NESTED on RTA_ENCAP for seg6
    // but not for seg6local (`RouteAttribute::is_nested`), and the kernel's
    // policy for seg6local is happy either way; iproute2 sets the flag. To
    // send what iproute2 sends, each seg6local attribute rides in a
    // `Seg6(Other(..))` wrapper, which emits the same bytes and makes the
    // crate set the flag.
    let encap = encap
        .iter()
        .map(|t| {
            let mut value = vec![0; t.value_len()];
            t.emit_value(&mut value);
            RouteLwTunnelEncap::Seg6(RouteSeg6IpTunnel::Other(DefaultNla::new(t.kind(), value)))
        })
        .collect();
    msg.attributes.push(RouteAttribute::Encap(encap));
    msg.attributes
        .push(RouteAttribute::EncapType(RouteLwEnCapType::Seg6Local));
    msg.attributes.push(RouteAttribute::Oif(index));
    Ok(msg)
}

/// `ip route del PREFIX table T proto 170`: deletes the route only if it is
/// still aiwan's (the kernel compares the protocol).
pub fn route_delete(key: &RouteKey) -> RouteMessage {
    let mut msg = route_base(&key.prefix, key.table);
    msg.header.kind = RouteType::Unspec;
    msg.header.scope = match key.family() {
        Family::V4 => RouteScope::NoWhere,
        Family::V6 => RouteScope::Universe,
    };
    msg
}

/// A dump request for all routes of one family (all tables).
pub fn route_dump(family: Family) -> RouteMessage {
    let mut msg = RouteMessage::default();
    msg.header.address_family = address_family(family);
    msg
}

fn rule_base(rule: &FlowRule, action: RuleAction) -> RuleMessage {
    let mut msg = RuleMessage::default();
    msg.header.family = address_family(rule.family);
    msg.header.action = action;
    msg.attributes.push(RuleAttribute::Priority(rule.priority));
    if let Some(src) = rule.source {
        msg.header.src_len = src.prefix_len();
        msg.attributes.push(RuleAttribute::Source(src.network()));
    }
    if let Some(dst) = rule.destination {
        msg.header.dst_len = dst.prefix_len();
        msg.attributes
            .push(RuleAttribute::Destination(dst.network()));
    }
    if let Some(proto) = rule.ip_protocol {
        msg.attributes
            .push(RuleAttribute::IpProtocol(IpProtocol::from(proto)));
    }
    if let Some((start, end)) = rule.source_ports {
        msg.attributes
            .push(RuleAttribute::SourcePortRange(RulePortRange { start, end }));
    }
    if let Some((start, end)) = rule.destination_ports {
        msg.attributes
            .push(RuleAttribute::DestinationPortRange(RulePortRange {
                start,
                end,
            }));
    }
    if let Some(dscp) = rule.dscp {
        msg.attributes
            .push(RuleAttribute::Other(DefaultNla::new(FRA_DSCP, vec![dscp])));
    }
    // As `ip rule`: a table that fits a byte goes in the header only.
    match u8::try_from(rule.table) {
        Ok(t) => msg.header.table = t,
        Err(_) => msg.attributes.push(RuleAttribute::Table(rule.table)),
    }
    msg.attributes
        .push(RuleAttribute::Protocol(RouteProtocol::from(ROUTE_PROTOCOL)));
    msg
}

/// `ip rule add priority P [from S] [to D] [ipproto N] [sport A-B] [dport
/// A-B] table T proto 170`.
pub fn flow_rule(rule: &FlowRule) -> RuleMessage {
    rule_base(rule, RuleAction::ToTable)
}

/// `ip rule del` with the same selectors: the kernel deletes the first rule
/// matching every attribute given, protocol included.
pub fn flow_rule_delete(rule: &FlowRule) -> RuleMessage {
    rule_base(rule, RuleAction::Unspec)
}

/// A dump request for all rules of one family.
pub fn rule_dump(family: Family) -> RuleMessage {
    let mut msg = RuleMessage::default();
    msg.header.family = address_family(family);
    msg
}

/// A route read from the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedRoute {
    pub key: RouteKey,
    /// `rtm_protocol`: the route is aiwan's when it is [`ROUTE_PROTOCOL`].
    pub protocol: u8,
    /// `RTA_PRIORITY` (the metric), 0 when absent.
    pub metric: u32,
    /// `rtm_type`: 1 for unicast.
    pub kind: u8,
    /// The route as a domain object, `None` when it is not aiwan's or has a
    /// shape aiwan never installs (a blackhole route, an unknown encap...).
    pub object: Option<RouteObject>,
}

impl ObservedRoute {
    pub fn is_aiwan(&self) -> bool {
        self.protocol == ROUTE_PROTOCOL
    }
}

fn ip_of(addr: &RouteAddress) -> Option<IpAddr> {
    match addr {
        RouteAddress::Inet(a) => Some(IpAddr::V4(*a)),
        RouteAddress::Inet6(a) => Some(IpAddr::V6(*a)),
        _ => None,
    }
}

/// Reads a route message (a dump answer or a notification). `None` for
/// families other than IPv4 and IPv6 or an impossible prefix length.
/// Attributes aiwan does not use are ignored.
pub fn parse_route(msg: &RouteMessage, ifaces: &Interfaces) -> Option<ObservedRoute> {
    let family = match msg.header.address_family {
        AddressFamily::Inet => Family::V4,
        AddressFamily::Inet6 => Family::V6,
        _ => return None,
    };
    let mut table = u32::from(msg.header.table);
    let mut destination = None;
    let mut gateway = None;
    let mut oif = None;
    let mut metric = 0;
    let mut multipath = None;
    let mut encap_type = None;
    let mut encap = None;
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Destination(a) => destination = ip_of(a),
            RouteAttribute::Gateway(a) => gateway = ip_of(a),
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Priority(p) => metric = *p,
            RouteAttribute::MultiPath(hops) => multipath = Some(hops),
            RouteAttribute::EncapType(t) => encap_type = Some(*t),
            RouteAttribute::Encap(e) => encap = Some(e),
            _ => {}
        }
    }
    let len = msg.header.destination_prefix_length;
    let prefix = match (family, destination) {
        (Family::V4, Some(IpAddr::V4(a))) => IpNet::V4(ipnet::Ipv4Net::new(a, len).ok()?),
        (Family::V6, Some(IpAddr::V6(a))) => IpNet::V6(Ipv6Net::new(a, len).ok()?),
        (Family::V4, None) => IpNet::V4(ipnet::Ipv4Net::default()),
        (Family::V6, None) => IpNet::V6(Ipv6Net::default()),
        _ => return None,
    };
    let key = RouteKey { table, prefix };
    let protocol = u8::from(msg.header.protocol);
    let kind = u8::from(msg.header.kind);
    let object = if protocol == ROUTE_PROTOCOL && msg.header.kind == RouteType::Unicast {
        route_object(&key, gateway, oif, multipath, encap_type, encap, ifaces)
    } else {
        None
    };
    Some(ObservedRoute {
        key,
        protocol,
        metric,
        kind,
        object,
    })
}

fn route_object(
    key: &RouteKey,
    gateway: Option<IpAddr>,
    oif: Option<u32>,
    multipath: Option<&Vec<RouteNextHop>>,
    encap_type: Option<RouteLwEnCapType>,
    encap: Option<&Vec<RouteLwTunnelEncap>>,
    ifaces: &Interfaces,
) -> Option<RouteObject> {
    match (encap_type, encap) {
        (Some(RouteLwEnCapType::Seg6), Some(encap)) => {
            let header = encap.iter().find_map(|e| match e {
                RouteLwTunnelEncap::Seg6(RouteSeg6IpTunnel::Seg6(h)) => Some(h),
                _ => None,
            })?;
            if header.mode != Seg6Mode::Encap || header.hmac.is_some() || multipath.is_some() {
                return None;
            }
            Some(RouteObject::Srv6(Srv6Policy {
                prefix: key.prefix,
                table: key.table,
                segments: header.segments.clone(),
                interface: ifaces.name(oif?),
                gateway,
            }))
        }
        (Some(RouteLwEnCapType::Seg6Local), Some(encap)) => {
            let IpNet::V6(net) = key.prefix else {
                return None;
            };
            if net.prefix_len() != 128 || key.table != MAIN_TABLE {
                return None;
            }
            let mut action = None;
            let mut nh4 = None;
            let mut table = None;
            for e in encap {
                match e {
                    RouteLwTunnelEncap::Seg6Local(RouteSeg6LocalTunnel::Action(a)) => {
                        action = Some(*a)
                    }
                    RouteLwTunnelEncap::Seg6Local(RouteSeg6LocalTunnel::Nh4(a)) => nh4 = Some(*a),
                    RouteLwTunnelEncap::Seg6Local(RouteSeg6LocalTunnel::Table(t)) => {
                        table = Some(*t)
                    }
                    _ => {}
                }
            }
            let action = match action? {
                Seg6LocalAction::End => Srv6Action::End,
                Seg6LocalAction::EndDx4 => Srv6Action::EndDx4 { next_hop: nh4? },
                Seg6LocalAction::EndDt6 => Srv6Action::EndDt6 { table: table? },
                _ => return None,
            };
            Some(RouteObject::Sid(LocalSid {
                sid: net.addr(),
                action,
                interface: ifaces.name(oif?),
            }))
        }
        (None | Some(RouteLwEnCapType::None), _) => {
            let next_hops = match multipath {
                Some(hops) => {
                    let mut out = Vec::with_capacity(hops.len());
                    for hop in hops {
                        let mut gw = None;
                        for attr in &hop.attributes {
                            match attr {
                                RouteAttribute::Gateway(a) => gw = ip_of(a),
                                // A per-next-hop encap is not something
                                // aiwan installs.
                                RouteAttribute::Encap(_) | RouteAttribute::Via(_) => return None,
                                _ => {}
                            }
                        }
                        out.push(NextHop {
                            gateway: gw,
                            interface: ifaces.name(hop.interface_index),
                            weight: u32::from(hop.hops) + 1,
                        });
                    }
                    out
                }
                None => vec![NextHop {
                    gateway,
                    interface: ifaces.name(oif?),
                    weight: 1,
                }],
            };
            Some(RouteObject::Ucmp(UcmpRoute {
                prefix: key.prefix,
                table: key.table,
                next_hops,
            }))
        }
        _ => None,
    }
}

/// A rule read from the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedRule {
    pub family: Family,
    pub priority: u32,
    /// `FRA_PROTOCOL`: the rule is aiwan's when it is [`ROUTE_PROTOCOL`].
    pub protocol: u8,
    /// The rule as a domain object, `None` when it is not aiwan's or uses a
    /// selector or action aiwan never installs.
    pub rule: Option<FlowRule>,
    /// The kernel's message, kept to delete exactly this rule.
    pub message: RuleMessage,
}

impl ObservedRule {
    pub fn is_aiwan(&self) -> bool {
        self.protocol == ROUTE_PROTOCOL
    }

    /// The request deleting this very rule: the kernel's own description of
    /// it, action cleared as `ip rule del` does.
    pub fn delete_message(&self) -> RuleMessage {
        let mut msg = self.message.clone();
        msg.header.action = RuleAction::Unspec;
        msg
    }
}

fn nla_value(nla: &DefaultNla) -> Vec<u8> {
    let mut value = vec![0; nla.value_len()];
    nla.emit_value(&mut value);
    value
}

fn net_of(addr: IpAddr, len: u8) -> Option<IpNet> {
    IpNet::new(addr, len).ok()
}

/// Reads a rule message. `None` for families other than IPv4 and IPv6.
pub fn parse_rule(msg: &RuleMessage) -> Option<ObservedRule> {
    let family = match msg.header.family {
        AddressFamily::Inet => Family::V4,
        AddressFamily::Inet6 => Family::V6,
        _ => return None,
    };
    let mut rule = FlowRule::new(0, family, u32::from(msg.header.table));
    if msg.header.tos != 0 {
        rule.dscp = Some(msg.header.tos >> 2);
    }
    let mut protocol = 0;
    let mut representable = msg.header.action == RuleAction::ToTable;
    for attr in &msg.attributes {
        match attr {
            RuleAttribute::Priority(p) => rule.priority = *p,
            RuleAttribute::Source(a) => rule.source = net_of(*a, msg.header.src_len),
            RuleAttribute::Destination(a) => rule.destination = net_of(*a, msg.header.dst_len),
            RuleAttribute::IpProtocol(p) => rule.ip_protocol = Some(u8::from(*p)),
            RuleAttribute::SourcePortRange(r) => rule.source_ports = Some((r.start, r.end)),
            RuleAttribute::DestinationPortRange(r) => {
                rule.destination_ports = Some((r.start, r.end))
            }
            RuleAttribute::Table(t) => rule.table = *t,
            RuleAttribute::Protocol(p) => protocol = u8::from(*p),
            RuleAttribute::Other(nla) if nla.kind() == FRA_DSCP => {
                if let [d] = nla_value(nla).as_slice() {
                    rule.dscp = Some(*d);
                }
            }
            // Selectors aiwan never sets: such a rule is not one of its
            // FlowRules, whoever marked it.
            RuleAttribute::Iifname(_)
            | RuleAttribute::Oifname(_)
            | RuleAttribute::Goto(_)
            | RuleAttribute::FwMark(_)
            | RuleAttribute::UidRange(_)
            | RuleAttribute::L3MDev(_)
            | RuleAttribute::TunId(_) => representable = false,
            RuleAttribute::FwMask(m) if *m != 0 => representable = false,
            _ => {}
        }
    }
    let priority = rule.priority;
    Some(ObservedRule {
        family,
        priority,
        protocol,
        rule: (representable && protocol == ROUTE_PROTOCOL).then_some(rule),
        message: msg.clone(),
    })
}

/// The IPv6 prefix of a local SID.
pub fn sid_prefix(sid: Ipv6Addr) -> IpNet {
    IpNet::V6(Ipv6Net::from(sid))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The interfaces of the capture namespace: `veth1` was ifindex 3 and
    /// `veth2` ifindex 5 when the bytes below were captured.
    pub(crate) fn capture_ifaces() -> Interfaces {
        Interfaces::new([(1, "lo".into()), (3, "veth1".into()), (5, "veth2".into())])
    }

    /// Decodes a capture: hex, whitespace ignored.
    pub(crate) fn unhex(s: &str) -> Vec<u8> {
        let clean: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        hex::decode(clean).unwrap()
    }

    /// Serialises `message` with `flags` and the capture's sequence number
    /// and compares with the captured bytes.
    pub(crate) fn assert_bytes(message: RouteNetlinkMessage, flags: u16, captured: &str) {
        let captured = unhex(captured);
        let seq = u32::from_le_bytes(captured[8..12].try_into().unwrap());
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = seq;
        let mut msg = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(message));
        msg.finalize();
        let mut buf = vec![0; msg.buffer_len()];
        msg.serialize(&mut buf);
        assert_eq!(hex::encode(&buf), hex::encode(&captured));
    }

    /// Parses a captured message (a request or a kernel answer).
    pub(crate) fn parse_captured(captured: &str) -> RouteNetlinkMessage {
        let bytes = unhex(captured);
        match NetlinkMessage::<RouteNetlinkMessage>::deserialize(&bytes)
            .unwrap()
            .payload
        {
            NetlinkPayload::InnerMessage(inner) => inner,
            other => panic!("not an rtnetlink message: {other:?}"),
        }
    }

    /// Serialises a message as a request and parses it back, as the kernel
    /// would read it.
    pub(crate) fn reparse(message: RouteNetlinkMessage) -> RouteNetlinkMessage {
        let mut msg = NetlinkMessage::new(
            NetlinkHeader::default(),
            NetlinkPayload::InnerMessage(message),
        );
        msg.finalize();
        let mut buf = vec![0; msg.buffer_len()];
        msg.serialize(&mut buf);
        match NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf)
            .unwrap()
            .payload
        {
            NetlinkPayload::InnerMessage(inner) => inner,
            other => panic!("not an rtnetlink message: {other:?}"),
        }
    }

    fn check_route(object: RouteObject, flags: u16, captured: &str) {
        let ifaces = capture_ifaces();
        let msg = object.message(&ifaces).unwrap();
        assert_bytes(RouteNetlinkMessage::NewRoute(msg.clone()), flags, captured);
        // Round trip: the message we send parses back to the same object.
        let RouteNetlinkMessage::NewRoute(parsed) = parse_captured(captured) else {
            panic!("not a route");
        };
        let observed = parse_route(&parsed, &ifaces).unwrap();
        assert_eq!(observed.key, object.key());
        assert_eq!(observed.object.unwrap().normalized(), object.normalized());
        let _ = msg;
    }

    fn nh(gw: &str, dev: &str, weight: u32) -> NextHop {
        NextHop {
            gateway: Some(gw.parse().unwrap()),
            interface: dev.into(),
            weight,
        }
    }

    // ip route replace 10.2.0.0/16 table 20001 proto 170 nexthop via 10.0.1.2 dev veth1 weight 70 nexthop via 10.0.2.2 dev veth2 weight 30
    const IP_ROUTE_MULTIPATH_V4: &str = "\
        500000001800050547a6066b000000000210000000aa00010000000008000100\
        0a02000008000f00214e0000240009001000004503000000080005000a000102\
        1000001d05000000080005000a000202";

    // ip route replace 10.3.0.0/16 table 20001 proto 170 via 10.0.1.2 dev veth1
    const IP_ROUTE_SINGLE_V4: &str = "\
        3c0000001800050547a6066b000000000210000000aa00010000000008000100\
        0a03000008000f00214e0000080005000a0001020800040003000000";

    // ip route replace 10.4.0.0/16 proto 170 via 10.0.1.2 dev veth1
    const IP_ROUTE_MAIN_V4: &str = "\
        340000001800050547a6066b0000000002100000feaa00010000000008000100\
        0a040000080005000a0001020800040003000000";

    // ip route replace 10.5.0.0/16 table 20001 proto 170 dev veth2
    const IP_ROUTE_DEV_V4: &str = "\
        340000001800050547a6066b000000000210000000aafd010000000008000100\
        0a05000008000f00214e00000800040005000000";

    // ip -6 route replace fc00:99::/64 table 20001 proto 170 nexthop via fc00:1::2 dev veth1 weight 2 nexthop via fc00:2::2 dev veth2 weight 1
    const IP_ROUTE_MULTIPATH_V6: &str = "\
        740000001800050547a6066b000000000a40000000aa00010000000014000100\
        fc00009900000000000000000000000008000f00214e00003c0009001c000001\
        0300000014000500fc0000010000000000000000000000021c00000005000000\
        14000500fc000002000000000000000000000002";

    // ip route del 10.2.0.0/16 table 20001 proto 170
    const IP_ROUTE_DEL_V4: &str = "\
        2c0000001900050048a6066b000000000210000000aaff000000000008000100\
        0a02000008000f00214e0000";

    // ip -6 route del fc00:99::/64 table 20001 proto 170
    const IP_ROUTE_DEL_V6: &str = "\
        380000001900050048a6066b000000000a40000000aa00000000000014000100\
        fc00009900000000000000000000000008000f00214e0000";

    // ip -6 route replace fc00:98::/64 table 20002 proto 170 encap seg6 mode encap segs fc00:a::1,fc00:b::1 dev veth1
    const IP_ROUTE_SEG6_V6: &str = "\
        7c0000001800050548a6066b000000000a40000000aa00010000000014000100\
        fc00009800000000000000000000000008000f00224e00003400168030000100\
        010000000004040101000000fc00000b000000000000000000000001fc00000a\
        00000000000000000000000106001500050000000800040003000000";

    // ip route replace 10.6.0.0/16 table 20002 proto 170 encap seg6 mode encap segs fc00:a::1 dev veth1
    const IP_ROUTE_SEG6_V4: &str = "\
        600000001800050548a6066b000000000210000000aafd010000000008000100\
        0a06000008000f00224e00002400168020000100010000000002040000000000\
        fc00000a00000000000000000000000106001500050000000800040003000000";

    // ip -6 route replace fc00:97::/64 table 20002 proto 170 encap seg6 mode encap segs fc00:a::1,fc00:b::1,fc00:c::1 via fc00:1::2 dev veth1
    const IP_ROUTE_SEG6_GW_V6: &str = "\
        a00000001800050548a6066b000000000a40000000aa00010000000014000100\
        fc00009700000000000000000000000008000f00224e00004400168040000100\
        010000000006040202000000fc00000c000000000000000000000001fc00000b\
        000000000000000000000001fc00000a00000000000000000000000106001500\
        0500000014000500fc0000010000000000000000000000020800040003000000";

    // ip -6 route replace fc00:a::1/128 proto 170 encap seg6local action End dev veth1
    const IP_ROUTE_SEG6LOCAL_END: &str = "\
        4c0000001800050548a6066b000000000a800000feaa00010000000014000100\
        fc00000a0000000000000000000000010c001680080001000100000006001500\
        070000000800040003000000";

    // ip -6 route replace fc00:a::2/128 proto 170 encap seg6local action End.DX4 nh4 10.0.1.2 dev veth1
    const IP_ROUTE_SEG6LOCAL_DX4: &str = "\
        540000001800050548a6066b000000000a800000feaa00010000000014000100\
        fc00000a00000000000000000000000214001680080001000600000008000400\
        0a00010206001500070000000800040003000000";

    // ip -6 route replace fc00:a::3/128 proto 170 encap seg6local action End.DT6 table 20003 dev veth1
    const IP_ROUTE_SEG6LOCAL_DT6: &str = "\
        540000001800050549a6066b000000000a800000feaa00010000000014000100\
        fc00000a00000000000000000000000314001680080001000700000008000300\
        234e000006001500070000000800040003000000";

    #[test]
    fn multipath_v4_matches_ip() {
        check_route(
            RouteObject::Ucmp(UcmpRoute {
                prefix: "10.2.0.0/16".parse().unwrap(),
                table: 20001,
                next_hops: vec![nh("10.0.1.2", "veth1", 70), nh("10.0.2.2", "veth2", 30)],
            }),
            FLAGS_REPLACE,
            IP_ROUTE_MULTIPATH_V4,
        );
    }

    #[test]
    fn single_next_hop_matches_ip() {
        check_route(
            RouteObject::Ucmp(UcmpRoute {
                prefix: "10.3.0.0/16".parse().unwrap(),
                table: 20001,
                next_hops: vec![nh("10.0.1.2", "veth1", 1)],
            }),
            FLAGS_REPLACE,
            IP_ROUTE_SINGLE_V4,
        );
        check_route(
            RouteObject::Ucmp(UcmpRoute {
                prefix: "10.4.0.0/16".parse().unwrap(),
                table: MAIN_TABLE,
                next_hops: vec![nh("10.0.1.2", "veth1", 1)],
            }),
            FLAGS_REPLACE,
            IP_ROUTE_MAIN_V4,
        );
        check_route(
            RouteObject::Ucmp(UcmpRoute {
                prefix: "10.5.0.0/16".parse().unwrap(),
                table: 20001,
                next_hops: vec![NextHop {
                    gateway: None,
                    interface: "veth2".into(),
                    weight: 1,
                }],
            }),
            FLAGS_REPLACE,
            IP_ROUTE_DEV_V4,
        );
    }

    #[test]
    fn multipath_v6_matches_ip() {
        check_route(
            RouteObject::Ucmp(UcmpRoute {
                prefix: "fc00:99::/64".parse().unwrap(),
                table: 20001,
                next_hops: vec![nh("fc00:1::2", "veth1", 2), nh("fc00:2::2", "veth2", 1)],
            }),
            FLAGS_REPLACE,
            IP_ROUTE_MULTIPATH_V6,
        );
    }

    #[test]
    fn route_delete_matches_ip() {
        assert_bytes(
            RouteNetlinkMessage::DelRoute(route_delete(&RouteKey {
                table: 20001,
                prefix: "10.2.0.0/16".parse().unwrap(),
            })),
            FLAGS_DELETE,
            IP_ROUTE_DEL_V4,
        );
        assert_bytes(
            RouteNetlinkMessage::DelRoute(route_delete(&RouteKey {
                table: 20001,
                prefix: "fc00:99::/64".parse().unwrap(),
            })),
            FLAGS_DELETE,
            IP_ROUTE_DEL_V6,
        );
    }

    #[test]
    fn seg6_encap_matches_ip() {
        check_route(
            RouteObject::Srv6(Srv6Policy {
                prefix: "fc00:98::/64".parse().unwrap(),
                table: 20002,
                segments: vec!["fc00:a::1".parse().unwrap(), "fc00:b::1".parse().unwrap()],
                interface: "veth1".into(),
                gateway: None,
            }),
            FLAGS_REPLACE,
            IP_ROUTE_SEG6_V6,
        );
        check_route(
            RouteObject::Srv6(Srv6Policy {
                prefix: "10.6.0.0/16".parse().unwrap(),
                table: 20002,
                segments: vec!["fc00:a::1".parse().unwrap()],
                interface: "veth1".into(),
                gateway: None,
            }),
            FLAGS_REPLACE,
            IP_ROUTE_SEG6_V4,
        );
        check_route(
            RouteObject::Srv6(Srv6Policy {
                prefix: "fc00:97::/64".parse().unwrap(),
                table: 20002,
                segments: vec![
                    "fc00:a::1".parse().unwrap(),
                    "fc00:b::1".parse().unwrap(),
                    "fc00:c::1".parse().unwrap(),
                ],
                interface: "veth1".into(),
                gateway: Some("fc00:1::2".parse().unwrap()),
            }),
            FLAGS_REPLACE,
            IP_ROUTE_SEG6_GW_V6,
        );
    }

    #[test]
    fn seg6local_matches_ip() {
        let sid = |s: &str, action| {
            RouteObject::Sid(LocalSid {
                sid: s.parse().unwrap(),
                action,
                interface: "veth1".into(),
            })
        };
        check_route(
            sid("fc00:a::1", Srv6Action::End),
            FLAGS_REPLACE,
            IP_ROUTE_SEG6LOCAL_END,
        );
        check_route(
            sid(
                "fc00:a::2",
                Srv6Action::EndDx4 {
                    next_hop: "10.0.1.2".parse().unwrap(),
                },
            ),
            FLAGS_REPLACE,
            IP_ROUTE_SEG6LOCAL_DX4,
        );
        check_route(
            sid("fc00:a::3", Srv6Action::EndDt6 { table: 20003 }),
            FLAGS_REPLACE,
            IP_ROUTE_SEG6LOCAL_DT6,
        );
    }

    #[test]
    fn missing_interface_is_named() {
        let route = UcmpRoute {
            prefix: "10.2.0.0/16".parse().unwrap(),
            table: 20001,
            next_hops: vec![nh("10.0.9.2", "eth9", 1), nh("10.0.1.2", "veth1", 1)],
        };
        let err = ucmp_route(&route, &capture_ifaces()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "route 10.2.0.0/16 table 20001: next hop via 10.0.9.2 dev eth9: dev eth9: no such interface"
        );
    }

    // ip rule add priority 20001 ipproto 17 dport 4791 table 20001 proto 170
    const IP_RULE_ADD: &str = "\
        440000002000050649a6066b0000000002000000000000010000000008000600\
        214e0000050016001100000008001800b712b71208000f00214e000005001500\
        aa000000";

    // ip rule add priority 20002 from 10.1.0.0/16 to 10.2.0.0/16 ipproto 6 sport 1000-2000 dport 5000-6000 table 20002 proto 170
    const IP_RULE_ADD_FULL: &str = "\
        5c000000200005065fa6066b0000000002101000000000010000000008000600\
        224e0000080002000a010000080001000a020000050016000600000008001700\
        e803d007080018008813701708000f00224e000005001500aa000000";

    // ip -6 rule add priority 20003 from fc00:1::/64 ipproto 17 dport 4791 table 20001 proto 170
    const IP_RULE_ADD_V6: &str = "\
        580000002000050649a6066b000000000a004000000000010000000008000600\
        234e000014000200fc0000010000000000000000000000000500160011000000\
        08001800b712b71208000f00214e000005001500aa000000";

    // ip rule del priority 20001 ipproto 17 dport 4791 table 20001 proto 170
    const IP_RULE_DEL: &str = "\
        440000002100050049a6066b0000000002000000000000000000000008000600\
        214e0000050016001100000008001800b712b71208000f00214e000005001500\
        aa000000";

    fn udp_4791() -> FlowRule {
        FlowRule {
            ip_protocol: Some(17),
            destination_ports: Some((4791, 4791)),
            ..FlowRule::new(20001, Family::V4, 20001)
        }
    }

    fn check_rule(rule: &FlowRule, captured: &str) {
        assert_bytes(
            RouteNetlinkMessage::NewRule(flow_rule(rule)),
            FLAGS_ADD,
            captured,
        );
        let RouteNetlinkMessage::NewRule(parsed) = parse_captured(captured) else {
            panic!("not a rule");
        };
        let observed = parse_rule(&parsed).unwrap();
        assert!(observed.is_aiwan());
        assert_eq!(observed.rule.as_ref(), Some(rule));
    }

    #[test]
    fn rules_match_ip() {
        check_rule(&udp_4791(), IP_RULE_ADD);
        check_rule(
            &FlowRule {
                source: Some("10.1.0.0/16".parse().unwrap()),
                destination: Some("10.2.0.0/16".parse().unwrap()),
                ip_protocol: Some(6),
                source_ports: Some((1000, 2000)),
                destination_ports: Some((5000, 6000)),
                ..FlowRule::new(20002, Family::V4, 20002)
            },
            IP_RULE_ADD_FULL,
        );
        check_rule(
            &FlowRule {
                source: Some("fc00:1::/64".parse().unwrap()),
                ip_protocol: Some(17),
                destination_ports: Some((4791, 4791)),
                ..FlowRule::new(20003, Family::V6, 20001)
            },
            IP_RULE_ADD_V6,
        );
        assert_bytes(
            RouteNetlinkMessage::DelRule(flow_rule_delete(&udp_4791())),
            FLAGS_DELETE,
            IP_RULE_DEL,
        );
    }

    #[test]
    fn rule_dscp_round_trips() {
        let rule = FlowRule {
            dscp: Some(46),
            ..udp_4791()
        };
        let RouteNetlinkMessage::NewRule(parsed) =
            reparse(RouteNetlinkMessage::NewRule(flow_rule(&rule)))
        else {
            panic!("not a rule")
        };
        assert_eq!(parse_rule(&parsed).unwrap().rule, Some(rule));
    }

    // Kernel answers to `ip route show table 20001` (RTM_NEWROUTE, dump):
    // the multipath route and the plain routes above. The kernel puts
    // RT_TABLE_COMPAT (252) in the header and adds RTA_PRIORITY, RTA_PREF,
    // kernel answer 0 to `ip route show table 20001`
    const KERNEL_ROUTE_MULTIPATH_V4: &str = "\
        500000001800220073a6066bd144000002100000fcaa00010000000008000f00\
        214e0000080001000a020000240009001000004503000000080005000a000102\
        1000001d05000000080005000a000202";

    // kernel answer 2 to `ip route show table 20001`
    const KERNEL_ROUTE_DEV_V4: &str = "\
        340000001800220073a6066bd144000002100000fcaafd010000000008000f00\
        214e0000080001000a0500000800040005000000";

    // kernel answer 0 to `ip -6 route show table 20001`
    const KERNEL_ROUTE_MULTIPATH_V6: &str = "\
        a80000001800220073a6066bfe4400000a400000fcaa00010000000008000f00\
        214e000014000100fc0000990000000000000000000000000800060000040000\
        3c0009001c0000010300000014000500fc000001000000000000000000000002\
        1c0000000500000014000500fc00000200000000000000000000000224000c00\
        0000000000000000000000000000000000000000000000000000000000000000\
        0500140000000000";

    // kernel answer 0 to `ip -6 route show table 20002`
    const KERNEL_ROUTE_SEG6_V6: &str = "\
        d40000001800220073a6066b2f4500000a400000fcaa00010000000008000f00\
        224e000014000100fc0000970000000000000000000000000800060000040000\
        14000500fc000001000000000000000000000002080004000300000044001600\
        40000100010000000006040202000000fc00000c000000000000000000000001\
        fc00000b000000000000000000000001fc00000a000000000000000000000001\
        060015000500000024000c000000000000000000000000000000000000000000\
        0000000000000000000000000500140000000000";

    #[test]
    fn kernel_answers_parse() {
        let ifaces = capture_ifaces();
        let RouteNetlinkMessage::NewRoute(msg) = parse_captured(KERNEL_ROUTE_MULTIPATH_V4) else {
            panic!("not a route");
        };
        let observed = parse_route(&msg, &ifaces).unwrap();
        assert_eq!(
            observed.object,
            Some(RouteObject::Ucmp(UcmpRoute {
                prefix: "10.2.0.0/16".parse().unwrap(),
                table: 20001,
                next_hops: vec![nh("10.0.1.2", "veth1", 70), nh("10.0.2.2", "veth2", 30)],
            }))
        );
        let RouteNetlinkMessage::NewRoute(msg) = parse_captured(KERNEL_ROUTE_DEV_V4) else {
            panic!("not a route");
        };
        let observed = parse_route(&msg, &ifaces).unwrap();
        assert_eq!(observed.key.table, 20001);
        assert!(matches!(observed.object, Some(RouteObject::Ucmp(_))));
        let RouteNetlinkMessage::NewRoute(msg) = parse_captured(KERNEL_ROUTE_MULTIPATH_V6) else {
            panic!("not a route");
        };
        assert_eq!(
            parse_route(&msg, &ifaces).unwrap().object,
            Some(RouteObject::Ucmp(UcmpRoute {
                prefix: "fc00:99::/64".parse().unwrap(),
                table: 20001,
                next_hops: vec![nh("fc00:1::2", "veth1", 2), nh("fc00:2::2", "veth2", 1)],
            }))
        );
        let RouteNetlinkMessage::NewRoute(msg) = parse_captured(KERNEL_ROUTE_SEG6_V6) else {
            panic!("not a route");
        };
        let observed = parse_route(&msg, &ifaces).unwrap();
        assert_eq!(observed.metric, 1024);
        assert!(
            matches!(observed.object, Some(RouteObject::Srv6(_))),
            "{observed:?}"
        );
    }

    #[test]
    fn unknown_attributes_do_not_fail() {
        let ifaces = capture_ifaces();
        let mut msg = ucmp_route(
            &UcmpRoute {
                prefix: "10.2.0.0/16".parse().unwrap(),
                table: 20001,
                next_hops: vec![nh("10.0.1.2", "veth1", 3), nh("10.0.2.2", "veth2", 1)],
            },
            &ifaces,
        )
        .unwrap();
        msg.attributes.push(RouteAttribute::Other(DefaultNla::new(
            999,
            vec![1, 2, 3, 4],
        )));
        msg.attributes.push(RouteAttribute::Priority(7));
        let observed = parse_route(&msg, &ifaces).unwrap();
        assert_eq!(observed.metric, 7);
        assert!(observed.object.is_some());
        // A foreign route parses to its key only.
        msg.header.protocol = RouteProtocol::Static;
        let observed = parse_route(&msg, &ifaces).unwrap();
        assert!(!observed.is_aiwan());
        assert_eq!(observed.object, None);
    }

    #[test]
    fn default_route_has_no_destination() {
        let msg = ucmp_route(
            &UcmpRoute {
                prefix: "0.0.0.0/0".parse().unwrap(),
                table: 20001,
                next_hops: vec![nh("10.0.1.2", "veth1", 1)],
            },
            &capture_ifaces(),
        )
        .unwrap();
        assert!(
            !msg.attributes
                .iter()
                .any(|a| matches!(a, RouteAttribute::Destination(_)))
        );
        let observed = parse_route(&msg, &capture_ifaces()).unwrap();
        assert_eq!(observed.key.prefix, "0.0.0.0/0".parse::<IpNet>().unwrap());
    }
}
