//! Conversions between the agent's `aiwan.agent.v1` messages and the domain
//! types of [`state`](super::state) and [`kernel`](super::kernel), both ways.
//!
//! Proto to domain checks what the types alone cannot hold (addresses and
//! prefixes are strings on the wire, enums are integers, numbers are wider
//! than the kernel's) and names the field:
//! `state.routes[3].next_hops[0].gateway: "10.0.0.x" is not an address`.
//! What is about the state as a whole (weights, tables, duplicates) is
//! [`NodeState::check`]'s, which names the object instead.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::SystemTime;

use aiwan_api::agent::v1 as pb;
use ipnet::IpNet;
use tonic::Status;

use super::inventory::{self, InterfaceReport};
use super::kernel::{ApplyReport, InterfaceStats};
use super::monitor::DriftKind;
use super::state::{
    ClassLimit, Family, FlowRule, LocalSid, NextHop, NodeState, RateLimit, Srv6Action, Srv6Policy,
    UcmpRoute,
};

/// A message field that cannot become a domain value, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct FieldError {
    /// The field's path, as in the proto: `state.routes[3].prefix`.
    pub field: String,
    pub reason: String,
}

impl From<FieldError> for Status {
    fn from(error: FieldError) -> Status {
        Status::invalid_argument(error.to_string())
    }
}

fn bad(field: impl fmt::Display, reason: impl Into<String>) -> FieldError {
    FieldError {
        field: field.to_string(),
        reason: reason.into(),
    }
}

fn prefix(field: impl fmt::Display, text: &str) -> Result<IpNet, FieldError> {
    text.parse()
        .map_err(|_| bad(field, format!("{text:?} is not a CIDR prefix")))
}

/// An empty string is "none".
fn optional_prefix(field: impl fmt::Display, text: &str) -> Result<Option<IpNet>, FieldError> {
    if text.is_empty() {
        return Ok(None);
    }
    prefix(field, text).map(Some)
}

/// An empty string is "none".
fn optional_address(field: impl fmt::Display, text: &str) -> Result<Option<IpAddr>, FieldError> {
    if text.is_empty() {
        return Ok(None);
    }
    text.parse()
        .map(Some)
        .map_err(|_| bad(field, format!("{text:?} is not an address")))
}

fn ipv6(field: impl fmt::Display, text: &str) -> Result<Ipv6Addr, FieldError> {
    text.parse()
        .map_err(|_| bad(field, format!("{text:?} is not an IPv6 address")))
}

fn ipv4(field: impl fmt::Display, text: &str) -> Result<Ipv4Addr, FieldError> {
    text.parse()
        .map_err(|_| bad(field, format!("{text:?} is not an IPv4 address")))
}

fn narrow<T: TryFrom<u32>>(
    field: impl fmt::Display,
    value: u32,
    max: u32,
) -> Result<T, FieldError> {
    if value > max {
        return Err(bad(field, format!("{value} is outside 0..={max}")));
    }
    T::try_from(value).map_err(|_| bad(field, format!("{value} is outside 0..={max}")))
}

fn family(field: impl fmt::Display, value: i32) -> Result<Family, FieldError> {
    match pb::AddressFamily::try_from(value) {
        Ok(pb::AddressFamily::Ipv4) => Ok(Family::V4),
        Ok(pb::AddressFamily::Ipv6) => Ok(Family::V6),
        Ok(pb::AddressFamily::Unspecified) => Err(bad(field, "must be set")),
        Err(_) => Err(bad(field, format!("unknown value {value}"))),
    }
}

fn ports(
    field: impl fmt::Display,
    range: Option<&pb::PortRange>,
) -> Result<Option<(u16, u16)>, FieldError> {
    let Some(range) = range else {
        return Ok(None);
    };
    let first = narrow(
        format_args!("{field}.first"),
        range.first,
        u32::from(u16::MAX),
    )?;
    let last = narrow(
        format_args!("{field}.last"),
        range.last,
        u32::from(u16::MAX),
    )?;
    Ok(Some((first, last)))
}

/// The domain state of a `NodeState` message found at `field` (`state` in
/// a request). An unset message is the empty state.
pub fn node_state_from_pb(
    field: &str,
    state: Option<&pb::NodeState>,
) -> Result<NodeState, FieldError> {
    let Some(state) = state else {
        return Ok(NodeState::default());
    };
    let mut out = NodeState::default();
    for (i, r) in state.routes.iter().enumerate() {
        let at = format!("{field}.routes[{i}]");
        let mut next_hops = Vec::with_capacity(r.next_hops.len());
        for (j, nh) in r.next_hops.iter().enumerate() {
            next_hops.push(NextHop {
                gateway: optional_address(
                    format_args!("{at}.next_hops[{j}].gateway"),
                    &nh.gateway,
                )?,
                interface: nh.interface.clone(),
                weight: nh.weight,
            });
        }
        out.routes.push(UcmpRoute {
            prefix: prefix(format_args!("{at}.prefix"), &r.prefix)?,
            table: r.table,
            next_hops,
        });
    }
    for (i, p) in state.srv6_policies.iter().enumerate() {
        let at = format!("{field}.srv6_policies[{i}]");
        let segments = p
            .segments
            .iter()
            .enumerate()
            .map(|(j, s)| ipv6(format_args!("{at}.segments[{j}]"), s))
            .collect::<Result<_, _>>()?;
        out.srv6_policies.push(Srv6Policy {
            prefix: prefix(format_args!("{at}.prefix"), &p.prefix)?,
            table: p.table,
            segments,
            interface: p.interface.clone(),
            gateway: optional_address(format_args!("{at}.gateway"), &p.gateway)?,
        });
    }
    for (i, s) in state.local_sids.iter().enumerate() {
        let at = format!("{field}.local_sids[{i}]");
        let behavior = pb::Srv6Behavior::try_from(s.behavior).map_err(|_| {
            bad(
                format_args!("{at}.behavior"),
                format!("unknown value {}", s.behavior),
            )
        })?;
        // Each behaviour takes its own parameter and no other, so that a
        // parameter sent for the wrong behaviour is not silently dropped.
        if behavior != pb::Srv6Behavior::EndDx4 && !s.next_hop.is_empty() {
            return Err(bad(
                format_args!("{at}.next_hop"),
                "only for SRV6_BEHAVIOR_END_DX4",
            ));
        }
        if behavior != pb::Srv6Behavior::EndDt6 && s.table != 0 {
            return Err(bad(
                format_args!("{at}.table"),
                "only for SRV6_BEHAVIOR_END_DT6",
            ));
        }
        let action = match behavior {
            pb::Srv6Behavior::Unspecified => {
                return Err(bad(format_args!("{at}.behavior"), "must be set"));
            }
            pb::Srv6Behavior::End => Srv6Action::End,
            pb::Srv6Behavior::EndDx4 => {
                if s.next_hop.is_empty() {
                    return Err(bad(
                        format_args!("{at}.next_hop"),
                        "required for SRV6_BEHAVIOR_END_DX4",
                    ));
                }
                Srv6Action::EndDx4 {
                    next_hop: ipv4(format_args!("{at}.next_hop"), &s.next_hop)?,
                }
            }
            pb::Srv6Behavior::EndDt6 => {
                if s.table == 0 {
                    return Err(bad(
                        format_args!("{at}.table"),
                        "required for SRV6_BEHAVIOR_END_DT6",
                    ));
                }
                Srv6Action::EndDt6 { table: s.table }
            }
        };
        out.local_sids.push(LocalSid {
            sid: ipv6(format_args!("{at}.sid"), &s.sid)?,
            action,
            interface: s.interface.clone(),
        });
    }
    for (i, r) in state.flow_rules.iter().enumerate() {
        let at = format!("{field}.flow_rules[{i}]");
        out.flow_rules.push(FlowRule {
            priority: r.priority,
            family: family(format_args!("{at}.family"), r.family)?,
            source: optional_prefix(format_args!("{at}.source"), &r.source)?,
            destination: optional_prefix(format_args!("{at}.destination"), &r.destination)?,
            ip_protocol: r
                .ip_protocol
                .map(|p| narrow(format_args!("{at}.ip_protocol"), p, 255))
                .transpose()?,
            destination_ports: ports(
                format_args!("{at}.destination_ports"),
                r.destination_ports.as_ref(),
            )?,
            source_ports: ports(format_args!("{at}.source_ports"), r.source_ports.as_ref())?,
            dscp: r
                .dscp
                .map(|d| narrow(format_args!("{at}.dscp"), d, 63))
                .transpose()?,
            table: r.table,
        });
    }
    for (i, l) in state.rate_limits.iter().enumerate() {
        let at = format!("{field}.rate_limits[{i}]");
        let default_class: u16 = narrow(
            format_args!("{at}.default_class"),
            l.default_class,
            u32::from(u16::MAX),
        )?;
        let mut classes = Vec::with_capacity(l.classes.len());
        for (j, c) in l.classes.iter().enumerate() {
            let at = format!("{at}.classes[{j}]");
            classes.push(ClassLimit {
                class_id: narrow(
                    format_args!("{at}.class_id"),
                    c.class_id,
                    u32::from(u16::MAX),
                )?,
                rate_bps: c.rate_bps,
                ceil_bps: c.ceil_bps,
                dscp: c
                    .dscp
                    .iter()
                    .enumerate()
                    .map(|(k, &d)| narrow(format_args!("{at}.dscp[{k}]"), d, 63))
                    .collect::<Result<_, _>>()?,
            });
        }
        out.rate_limits.push(RateLimit {
            interface: l.interface.clone(),
            // Class 0 is the qdisc itself, so 0 can mean "none".
            default_class: (default_class != 0).then_some(default_class),
            // A link of 0 bit/s carries nothing: 0 means "none".
            link_bps: (l.link_bps != 0).then_some(l.link_bps),
            classes,
        });
    }
    Ok(out)
}

fn address_text(addr: &Option<IpAddr>) -> String {
    addr.map(|a| a.to_string()).unwrap_or_default()
}

fn family_to_pb(family: Family) -> pb::AddressFamily {
    match family {
        Family::V4 => pb::AddressFamily::Ipv4,
        Family::V6 => pb::AddressFamily::Ipv6,
    }
}

fn ports_to_pb(ports: Option<(u16, u16)>) -> Option<pb::PortRange> {
    ports.map(|(first, last)| pb::PortRange {
        first: u32::from(first),
        last: u32::from(last),
    })
}

/// The message of a domain state.
pub fn node_state_to_pb(state: &NodeState) -> pb::NodeState {
    pb::NodeState {
        routes: state
            .routes
            .iter()
            .map(|r| pb::UcmpRoute {
                prefix: r.prefix.to_string(),
                table: r.table,
                next_hops: r
                    .next_hops
                    .iter()
                    .map(|nh| pb::NextHop {
                        gateway: address_text(&nh.gateway),
                        interface: nh.interface.clone(),
                        weight: nh.weight,
                    })
                    .collect(),
            })
            .collect(),
        srv6_policies: state
            .srv6_policies
            .iter()
            .map(|p| pb::Srv6Policy {
                prefix: p.prefix.to_string(),
                table: p.table,
                segments: p.segments.iter().map(ToString::to_string).collect(),
                interface: p.interface.clone(),
                gateway: address_text(&p.gateway),
            })
            .collect(),
        local_sids: state
            .local_sids
            .iter()
            .map(|s| {
                let (behavior, next_hop, table) = match &s.action {
                    Srv6Action::End => (pb::Srv6Behavior::End, String::new(), 0),
                    Srv6Action::EndDx4 { next_hop } => {
                        (pb::Srv6Behavior::EndDx4, next_hop.to_string(), 0)
                    }
                    Srv6Action::EndDt6 { table } => {
                        (pb::Srv6Behavior::EndDt6, String::new(), *table)
                    }
                };
                pb::LocalSid {
                    sid: s.sid.to_string(),
                    behavior: behavior.into(),
                    interface: s.interface.clone(),
                    next_hop,
                    table,
                }
            })
            .collect(),
        flow_rules: state
            .flow_rules
            .iter()
            .map(|r| pb::FlowRule {
                priority: r.priority,
                family: family_to_pb(r.family).into(),
                source: r.source.map(|n| n.to_string()).unwrap_or_default(),
                destination: r.destination.map(|n| n.to_string()).unwrap_or_default(),
                ip_protocol: r.ip_protocol.map(u32::from),
                destination_ports: ports_to_pb(r.destination_ports),
                source_ports: ports_to_pb(r.source_ports),
                dscp: r.dscp.map(u32::from),
                table: r.table,
            })
            .collect(),
        rate_limits: state
            .rate_limits
            .iter()
            .map(|l| pb::RateLimit {
                interface: l.interface.clone(),
                default_class: l.default_class.map(u32::from).unwrap_or(0),
                link_bps: l.link_bps.unwrap_or(0),
                classes: l
                    .classes
                    .iter()
                    .map(|c| pb::ClassLimit {
                        class_id: u32::from(c.class_id),
                        rate_bps: c.rate_bps,
                        ceil_bps: c.ceil_bps,
                        dscp: c.dscp.iter().map(|&d| u32::from(d)).collect(),
                    })
                    .collect(),
            })
            .collect(),
    }
}

/// `usize` counts as `u64` (never truncates on the platforms Rust supports).
fn count(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

pub fn report_to_pb(report: &ApplyReport) -> pb::ApplyReport {
    pb::ApplyReport {
        created: count(report.created),
        replaced: count(report.replaced),
        deleted: count(report.deleted),
        unchanged: count(report.unchanged),
    }
}

pub fn report_from_pb(report: &pb::ApplyReport) -> ApplyReport {
    let n = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
    ApplyReport {
        created: n(report.created),
        replaced: n(report.replaced),
        deleted: n(report.deleted),
        unchanged: n(report.unchanged),
    }
}

pub fn interface_counters_to_pb(stats: &InterfaceStats) -> pb::InterfaceCounters {
    pb::InterfaceCounters {
        name: stats.name.clone(),
        if_index: stats.ifindex,
        rx_bytes: stats.rx_bytes,
        tx_bytes: stats.tx_bytes,
        rx_packets: stats.rx_packets,
        tx_packets: stats.tx_packets,
        rx_errors: stats.rx_errors,
        tx_errors: stats.tx_errors,
        rx_drops: stats.rx_dropped,
        tx_drops: stats.tx_dropped,
    }
}

pub fn interface_counters_from_pb(c: &pb::InterfaceCounters) -> InterfaceStats {
    InterfaceStats {
        name: c.name.clone(),
        ifindex: c.if_index,
        rx_bytes: c.rx_bytes,
        tx_bytes: c.tx_bytes,
        rx_packets: c.rx_packets,
        tx_packets: c.tx_packets,
        rx_errors: c.rx_errors,
        tx_errors: c.tx_errors,
        rx_dropped: c.rx_drops,
        tx_dropped: c.tx_drops,
    }
}

pub fn interface_to_pb(report: &InterfaceReport) -> pb::Interface {
    pb::Interface {
        name: report.name.clone(),
        if_index: report.ifindex,
        up: report.up,
        addresses: report.addresses.iter().map(IpNet::to_string).collect(),
        neighbours: report.neighbours.iter().map(IpAddr::to_string).collect(),
    }
}

/// The interfaces of a `GetStateResponse` (field `interfaces`), within the
/// bounds the agent keeps; an entry that is not what an agent sends is an
/// error naming it.
pub fn interfaces_from_pb(
    interfaces: &[pb::Interface],
) -> Result<Vec<InterfaceReport>, FieldError> {
    if interfaces.len() > inventory::MAX_INTERFACES {
        return Err(bad(
            "interfaces",
            format!(
                "{} interfaces, more than {}",
                interfaces.len(),
                inventory::MAX_INTERFACES
            ),
        ));
    }
    let mut out = Vec::with_capacity(interfaces.len());
    for (i, interface) in interfaces.iter().enumerate() {
        let field = format!("interfaces[{i}]");
        if interface.name.is_empty() {
            return Err(bad(format_args!("{field}.name"), "empty"));
        }
        if interface.addresses.len() > inventory::MAX_ADDRESSES_PER_INTERFACE
            || interface.neighbours.len() > inventory::MAX_NEIGHBOURS_PER_INTERFACE
        {
            return Err(bad(
                &field,
                "more addresses or neighbours than an agent sends",
            ));
        }
        let addresses = interface
            .addresses
            .iter()
            .enumerate()
            .map(|(j, text)| prefix(format_args!("{field}.addresses[{j}]"), text))
            .collect::<Result<Vec<IpNet>, FieldError>>()?;
        let neighbours = interface
            .neighbours
            .iter()
            .enumerate()
            .map(|(j, text)| {
                text.parse().map_err(|_| {
                    bad(
                        format_args!("{field}.neighbours[{j}]"),
                        format!("{text:?} is not an address"),
                    )
                })
            })
            .collect::<Result<Vec<IpAddr>, FieldError>>()?;
        out.push(InterfaceReport {
            name: interface.name.clone(),
            ifindex: interface.if_index,
            up: interface.up,
            addresses,
            neighbours,
        });
    }
    Ok(out)
}

pub fn drift_kind_to_pb(kind: DriftKind) -> pb::DriftKind {
    match kind {
        DriftKind::Deleted => pb::DriftKind::Deleted,
        DriftKind::Changed => pb::DriftKind::Changed,
        DriftKind::Overrun => pb::DriftKind::Overrun,
    }
}

/// A wall-clock time as a protobuf timestamp (times before 1970 clamp to
/// the epoch: the agent reports only times it has just read).
pub fn timestamp(time: SystemTime) -> prost_types::Timestamp {
    let since = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    prost_types::Timestamp {
        seconds: i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
        // Below 1e9, so it fits.
        nanos: i32::try_from(since.subsec_nanos()).unwrap_or(0),
    }
}

/// A request's duration at `field`, checked to be within `min..=max`.
pub fn duration(
    field: &str,
    value: Option<&prost_types::Duration>,
    min: std::time::Duration,
    max: std::time::Duration,
) -> Result<std::time::Duration, FieldError> {
    let Some(d) = value else {
        return Err(bad(field, format!("required (at least {min:?})")));
    };
    if d.seconds < 0 || d.nanos < 0 || d.nanos >= 1_000_000_000 {
        return Err(bad(field, "must be a positive duration"));
    }
    let seconds = u64::try_from(d.seconds).unwrap_or(0);
    let nanos = u32::try_from(d.nanos).unwrap_or(0);
    let value = std::time::Duration::new(seconds, nanos);
    if value < min || value > max {
        return Err(bad(
            field,
            format!("{value:?} is outside {min:?}..={max:?}"),
        ));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nh(gw: Option<&str>, dev: &str, weight: u32) -> NextHop {
        NextHop {
            gateway: gw.map(|g| g.parse().unwrap()),
            interface: dev.into(),
            weight,
        }
    }

    /// One of every kind of object, with every optional field both set and
    /// unset somewhere.
    fn full() -> NodeState {
        NodeState {
            routes: vec![
                UcmpRoute {
                    prefix: "10.2.0.0/16".parse().unwrap(),
                    table: 20001,
                    next_hops: vec![
                        nh(Some("10.0.1.2"), "veth1", 70),
                        nh(Some("10.0.2.2"), "veth2", 30),
                    ],
                },
                UcmpRoute {
                    prefix: "fc00:2::/48".parse().unwrap(),
                    table: 254,
                    next_hops: vec![nh(None, "veth1", 1)],
                },
            ],
            srv6_policies: vec![
                Srv6Policy {
                    prefix: "fc00:98::/64".parse().unwrap(),
                    table: 20002,
                    segments: vec!["fc00:a::1".parse().unwrap(), "fc00:b::1".parse().unwrap()],
                    interface: "veth1".into(),
                    gateway: Some("fc00:1::2".parse().unwrap()),
                },
                Srv6Policy {
                    prefix: "10.9.0.0/16".parse().unwrap(),
                    table: 254,
                    segments: vec!["fc00:a::1".parse().unwrap()],
                    interface: "veth2".into(),
                    gateway: None,
                },
            ],
            local_sids: vec![
                LocalSid {
                    sid: "fc00:a::1".parse().unwrap(),
                    action: Srv6Action::End,
                    interface: "veth1".into(),
                },
                LocalSid {
                    sid: "fc00:a::2".parse().unwrap(),
                    action: Srv6Action::EndDx4 {
                        next_hop: "10.0.1.2".parse().unwrap(),
                    },
                    interface: "veth1".into(),
                },
                LocalSid {
                    sid: "fc00:a::3".parse().unwrap(),
                    action: Srv6Action::EndDt6 { table: 20003 },
                    interface: "veth2".into(),
                },
            ],
            flow_rules: vec![
                FlowRule {
                    source: Some("10.1.0.0/16".parse().unwrap()),
                    destination: Some("10.2.0.0/16".parse().unwrap()),
                    ip_protocol: Some(17),
                    destination_ports: Some((4791, 4791)),
                    source_ports: Some((1024, 65535)),
                    dscp: Some(0),
                    ..FlowRule::new(20001, Family::V4, 20001)
                },
                FlowRule::new(20002, Family::V6, 20002),
            ],
            rate_limits: vec![
                RateLimit {
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
                },
                RateLimit {
                    interface: "veth2".into(),
                    default_class: None,
                    link_bps: Some(80_000_000_000),
                    classes: vec![ClassLimit {
                        class_id: 0xfffe,
                        rate_bps: 8,
                        ceil_bps: 80_000_000_000,
                        dscp: vec![63],
                    }],
                },
            ],
        }
    }

    #[test]
    fn round_trip_every_kind_of_object() {
        let state = full();
        state.check().unwrap();
        let message = node_state_to_pb(&state);
        let back = node_state_from_pb("state", Some(&message)).unwrap();
        assert_eq!(back, state);
        // Through the wire too.
        let bytes = prost::Message::encode_to_vec(&message);
        let decoded: pb::NodeState = prost::Message::decode(bytes.as_slice()).unwrap();
        assert_eq!(node_state_from_pb("state", Some(&decoded)).unwrap(), state);
    }

    #[test]
    fn unset_state_is_empty() {
        assert_eq!(
            node_state_from_pb("state", None).unwrap(),
            NodeState::default()
        );
        let empty = node_state_to_pb(&NodeState::default());
        assert_eq!(empty, pb::NodeState::default());
    }

    /// Converting `full()`'s message after `change` fails with `expected`.
    fn check(change: impl FnOnce(&mut pb::NodeState), expected: &str) {
        let mut message = node_state_to_pb(&full());
        change(&mut message);
        let error = node_state_from_pb("state", Some(&message)).unwrap_err();
        assert_eq!(error.to_string(), expected);
    }

    #[test]
    fn bad_fields_are_named() {
        check(
            |m| m.routes[1].next_hops[0].gateway = "10.0.0.x".into(),
            r#"state.routes[1].next_hops[0].gateway: "10.0.0.x" is not an address"#,
        );
        check(
            |m| m.routes[0].prefix = "10.2.0.0".into(),
            r#"state.routes[0].prefix: "10.2.0.0" is not a CIDR prefix"#,
        );
        check(
            |m| m.srv6_policies[0].segments[1] = "10.0.0.1".into(),
            r#"state.srv6_policies[0].segments[1]: "10.0.0.1" is not an IPv6 address"#,
        );
        check(
            |m| m.srv6_policies[1].prefix = "".into(),
            r#"state.srv6_policies[1].prefix: "" is not a CIDR prefix"#,
        );
        check(
            |m| m.srv6_policies[0].gateway = "gw".into(),
            r#"state.srv6_policies[0].gateway: "gw" is not an address"#,
        );
        check(
            |m| m.local_sids[0].sid = "fc00::/64".into(),
            r#"state.local_sids[0].sid: "fc00::/64" is not an IPv6 address"#,
        );
        check(
            |m| m.local_sids[0].behavior = 0,
            "state.local_sids[0].behavior: must be set",
        );
        check(
            |m| m.local_sids[0].behavior = 42,
            "state.local_sids[0].behavior: unknown value 42",
        );
        check(
            |m| m.local_sids[0].next_hop = "10.0.0.1".into(),
            "state.local_sids[0].next_hop: only for SRV6_BEHAVIOR_END_DX4",
        );
        check(
            |m| m.local_sids[1].next_hop = "fc00::1".into(),
            r#"state.local_sids[1].next_hop: "fc00::1" is not an IPv4 address"#,
        );
        check(
            |m| m.local_sids[1].next_hop.clear(),
            "state.local_sids[1].next_hop: required for SRV6_BEHAVIOR_END_DX4",
        );
        check(
            |m| m.local_sids[2].table = 0,
            "state.local_sids[2].table: required for SRV6_BEHAVIOR_END_DT6",
        );
        check(
            |m| m.local_sids[0].table = 7,
            "state.local_sids[0].table: only for SRV6_BEHAVIOR_END_DT6",
        );
        check(
            |m| m.flow_rules[1].family = 0,
            "state.flow_rules[1].family: must be set",
        );
        check(
            |m| m.flow_rules[1].family = 9,
            "state.flow_rules[1].family: unknown value 9",
        );
        check(
            |m| m.flow_rules[0].source = "10.1.0.0/33".into(),
            r#"state.flow_rules[0].source: "10.1.0.0/33" is not a CIDR prefix"#,
        );
        check(
            |m| m.flow_rules[0].destination = "x".into(),
            r#"state.flow_rules[0].destination: "x" is not a CIDR prefix"#,
        );
        check(
            |m| m.flow_rules[0].ip_protocol = Some(256),
            "state.flow_rules[0].ip_protocol: 256 is outside 0..=255",
        );
        check(
            |m| {
                m.flow_rules[0].destination_ports = Some(pb::PortRange {
                    first: 1,
                    last: 70000,
                })
            },
            "state.flow_rules[0].destination_ports.last: 70000 is outside 0..=65535",
        );
        check(
            |m| {
                m.flow_rules[0].source_ports = Some(pb::PortRange {
                    first: 65536,
                    last: 1,
                })
            },
            "state.flow_rules[0].source_ports.first: 65536 is outside 0..=65535",
        );
        check(
            |m| m.flow_rules[0].dscp = Some(64),
            "state.flow_rules[0].dscp: 64 is outside 0..=63",
        );
        check(
            |m| m.rate_limits[0].default_class = 65536,
            "state.rate_limits[0].default_class: 65536 is outside 0..=65535",
        );
        check(
            |m| m.rate_limits[1].classes[0].class_id = 70000,
            "state.rate_limits[1].classes[0].class_id: 70000 is outside 0..=65535",
        );
        check(
            |m| m.rate_limits[0].classes[0].dscp[1] = 100,
            "state.rate_limits[0].classes[0].dscp[1]: 100 is outside 0..=63",
        );
    }

    #[test]
    fn field_errors_become_invalid_argument() {
        let status = Status::from(bad("state.routes[0].prefix", "nope"));
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert_eq!(status.message(), "state.routes[0].prefix: nope");
    }

    #[test]
    fn reports_counters_and_kinds() {
        let report = ApplyReport {
            created: 3,
            replaced: 2,
            deleted: 1,
            unchanged: 10_000,
        };
        assert_eq!(report_from_pb(&report_to_pb(&report)), report);
        let stats = InterfaceStats {
            name: "veth1".into(),
            ifindex: 7,
            rx_bytes: 1,
            tx_bytes: 2,
            rx_packets: 3,
            tx_packets: 4,
            rx_errors: 5,
            tx_errors: 6,
            rx_dropped: 7,
            tx_dropped: u64::MAX,
        };
        assert_eq!(
            interface_counters_from_pb(&interface_counters_to_pb(&stats)),
            stats
        );
        assert_eq!(drift_kind_to_pb(DriftKind::Deleted), pb::DriftKind::Deleted);
        assert_eq!(drift_kind_to_pb(DriftKind::Overrun), pb::DriftKind::Overrun);
    }

    #[test]
    fn durations_are_checked() {
        let min = std::time::Duration::from_millis(100);
        let max = std::time::Duration::from_secs(3600);
        let d = |seconds, nanos| prost_types::Duration { seconds, nanos };
        assert_eq!(
            duration("interval", Some(&d(0, 100_000_000)), min, max).unwrap(),
            min
        );
        assert_eq!(
            duration("interval", Some(&d(0, 99_000_000)), min, max)
                .unwrap_err()
                .to_string(),
            "interval: 99ms is outside 100ms..=3600s"
        );
        assert_eq!(
            duration("interval", None, min, max)
                .unwrap_err()
                .to_string(),
            "interval: required (at least 100ms)"
        );
        assert!(
            duration("interval", Some(&d(-1, 0)), min, max)
                .unwrap_err()
                .to_string()
                .starts_with("interval: must be a positive")
        );
        assert!(duration("interval", Some(&d(3601, 0)), min, max).is_err());
    }

    #[test]
    fn timestamps() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::new(5, 7);
        assert_eq!(
            timestamp(t),
            prost_types::Timestamp {
                seconds: 5,
                nanos: 7
            }
        );
    }
}
