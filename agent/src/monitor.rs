//! A netlink monitor reporting drift: aiwan's routes, rules and qdiscs
//! changed or deleted by someone else (an operator's `ip route del`, another
//! daemon), so the agent can repair them with a new `apply`.
//!
//! It subscribes to the route, rule and tc groups when it is created; the
//! agent creates it before its first dump (as holo does), so no change falls
//! between the two. Changes made through the agent's own [`Kernel`] are
//! recognised by the netlink port the kernel stamps on each notification and
//! are not reported.
//!
//! [`Kernel`]: super::kernel::Kernel

use std::fmt;

use futures::StreamExt;
use futures::channel::mpsc::UnboundedReceiver;
use netlink_packet_core::{NLM_F_REPLACE, NetlinkMessage, NetlinkPayload};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::tc::TcHandle;
use serde::{Deserialize, Serialize};

use super::kernel::{KernelError, in_namespace_thread, open_connection};
use super::messages::{self, Interfaces};
use super::state::{QDISC_MAJOR, TABLE_RANGE};
use super::tc;

/// `RTNLGRP_TC`.
pub const RTNLGRP_TC: u32 = 4;
/// `RTNLGRP_IPV4_ROUTE`.
pub const RTNLGRP_IPV4_ROUTE: u32 = 7;
/// `RTNLGRP_IPV4_RULE`.
pub const RTNLGRP_IPV4_RULE: u32 = 8;
/// `RTNLGRP_IPV6_ROUTE`.
pub const RTNLGRP_IPV6_ROUTE: u32 = 11;
/// `RTNLGRP_IPV6_RULE`.
pub const RTNLGRP_IPV6_RULE: u32 = 19;

/// The legacy group mask (`nl_groups`) of the groups above.
pub fn group_mask() -> u32 {
    [
        RTNLGRP_TC,
        RTNLGRP_IPV4_ROUTE,
        RTNLGRP_IPV4_RULE,
        RTNLGRP_IPV6_ROUTE,
        RTNLGRP_IPV6_RULE,
    ]
    .into_iter()
    .fold(0, |mask, g| mask | (1 << (g - 1)))
}

/// What happened to an aiwan object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftKind {
    /// Deleted by someone else.
    Deleted,
    /// Added, replaced or changed by someone else (including a foreign
    /// route put into one of aiwan's tables).
    Changed,
    /// Notifications were lost (the socket's buffer overflowed): anything
    /// may have changed, reconcile everything.
    Overrun,
}

/// One drift notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriftEvent {
    pub kind: DriftKind,
    /// The object, e.g. `route 10.2.0.0/16 table 20001`.
    pub object: String,
}

impl fmt::Display for DriftEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = match self.kind {
            DriftKind::Deleted => "deleted",
            DriftKind::Changed => "changed",
            DriftKind::Overrun => "notifications lost",
        };
        write!(f, "{}: {verb}", self.object)
    }
}

type Messages = UnboundedReceiver<(
    NetlinkMessage<RouteNetlinkMessage>,
    rtnetlink::sys::SocketAddr,
)>;

/// A drift monitor for one network namespace.
pub struct Monitor {
    messages: Messages,
    ignore_port: Option<u32>,
    // Keeps the connection alive.
    _handle: rtnetlink::proto::ConnectionHandle<RouteNetlinkMessage>,
}

impl fmt::Debug for Monitor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Monitor")
            .field("ignore_port", &self.ignore_port)
            .finish_non_exhaustive()
    }
}

impl Monitor {
    /// Subscribes in the current network namespace (inside a tokio
    /// runtime). Notifications of changes made from netlink port
    /// `ignore_port` (the agent's own [`Kernel::port`]) are not reported.
    ///
    /// [`Kernel::port`]: super::kernel::Kernel::port
    pub fn new(ignore_port: Option<u32>) -> Result<Monitor, KernelError> {
        let (conn, handle, messages, _port) =
            open_connection(group_mask()).map_err(KernelError::Socket)?;
        tokio::spawn(conn);
        Ok(Monitor {
            messages,
            ignore_port,
            _handle: handle,
        })
    }

    /// Subscribes in the named network namespace (see
    /// [`Kernel::in_namespace`](super::kernel::Kernel::in_namespace)).
    pub fn in_namespace(name: &str, ignore_port: Option<u32>) -> Result<Monitor, KernelError> {
        let (handle, messages) = in_namespace_thread(name, || {
            let (conn, handle, messages, _port) = open_connection(group_mask())?;
            Ok((conn, (handle, messages)))
        })?;
        Ok(Monitor {
            messages,
            ignore_port,
            _handle: handle,
        })
    }

    /// The next drift event; `None` once the connection is gone.
    pub async fn next(&mut self) -> Option<DriftEvent> {
        while let Some((msg, _)) = self.messages.next().await {
            if let Some(event) = classify(&msg, self.ignore_port) {
                return Some(event);
            }
        }
        None
    }
}

fn tc_object(ifindex: i32, what: &str, handle: TcHandle) -> String {
    format!(
        "{what} {:x}:{:x} on if{ifindex}",
        handle.major, handle.minor
    )
}

/// Decides whether a notification is drift of an aiwan object, and which.
pub fn classify(
    msg: &NetlinkMessage<RouteNetlinkMessage>,
    ignore_port: Option<u32>,
) -> Option<DriftEvent> {
    let inner = match &msg.payload {
        NetlinkPayload::Overrun(_) => {
            return Some(DriftEvent {
                kind: DriftKind::Overrun,
                object: "netlink monitor".into(),
            });
        }
        NetlinkPayload::InnerMessage(inner) => inner,
        _ => return None,
    };
    if ignore_port.is_some_and(|p| p != 0 && p == msg.header.port_number) {
        return None;
    }
    let event = |kind, object: String| Some(DriftEvent { kind, object });
    let no_ifaces = Interfaces::default();
    match inner {
        RouteNetlinkMessage::NewRoute(r) => {
            let route = messages::parse_route(r, &no_ifaces)?;
            if route.is_aiwan() {
                event(DriftKind::Changed, route.key.to_string())
            } else if TABLE_RANGE.contains(&route.key.table) {
                let how = if msg.header.flags & NLM_F_REPLACE != 0 {
                    "replaced by"
                } else {
                    "added with"
                };
                event(
                    DriftKind::Changed,
                    format!("{} ({how} protocol {})", route.key, route.protocol),
                )
            } else {
                None
            }
        }
        RouteNetlinkMessage::DelRoute(r) => {
            let route = messages::parse_route(r, &no_ifaces)?;
            route.is_aiwan().then(|| DriftEvent {
                kind: DriftKind::Deleted,
                object: route.key.to_string(),
            })
        }
        RouteNetlinkMessage::NewRule(r) | RouteNetlinkMessage::DelRule(r) => {
            let rule = messages::parse_rule(r)?;
            let kind = if matches!(inner, RouteNetlinkMessage::NewRule(_)) {
                DriftKind::Changed
            } else {
                DriftKind::Deleted
            };
            rule.is_aiwan().then(|| DriftEvent {
                kind,
                object: format!("{} flow rule {}", rule.family, rule.priority),
            })
        }
        RouteNetlinkMessage::NewQueueDiscipline(q) | RouteNetlinkMessage::DelQueueDiscipline(q) => {
            let qdisc = tc::parse_qdisc(q);
            let kind = if matches!(inner, RouteNetlinkMessage::NewQueueDiscipline(_)) {
                DriftKind::Changed
            } else {
                DriftKind::Deleted
            };
            (qdisc.handle.major == QDISC_MAJOR).then(|| DriftEvent {
                kind,
                object: tc_object(q.header.index, "qdisc", qdisc.handle),
            })
        }
        RouteNetlinkMessage::NewTrafficClass(c) | RouteNetlinkMessage::DelTrafficClass(c) => {
            let kind = if matches!(inner, RouteNetlinkMessage::NewTrafficClass(_)) {
                DriftKind::Changed
            } else {
                DriftKind::Deleted
            };
            (c.header.handle.major == QDISC_MAJOR).then(|| DriftEvent {
                kind,
                object: tc_object(c.header.index, "class", c.header.handle),
            })
        }
        RouteNetlinkMessage::NewTrafficFilter(f) | RouteNetlinkMessage::DelTrafficFilter(f) => {
            let kind = if matches!(inner, RouteNetlinkMessage::NewTrafficFilter(_)) {
                DriftKind::Changed
            } else {
                DriftKind::Deleted
            };
            (f.header.parent.major == QDISC_MAJOR).then(|| DriftEvent {
                kind,
                object: format!(
                    "filter {:x} under {:x}: on if{}",
                    u32::from(f.header.handle),
                    QDISC_MAJOR,
                    f.header.index
                ),
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::tests::parse_captured;
    use netlink_packet_core::NetlinkHeader;

    fn notification(
        inner: RouteNetlinkMessage,
        port: u32,
        flags: u16,
    ) -> NetlinkMessage<RouteNetlinkMessage> {
        let mut header = NetlinkHeader::default();
        header.port_number = port;
        header.flags = flags;
        NetlinkMessage::new(header, NetlinkPayload::InnerMessage(inner))
    }

    // ip route del 10.2.0.0/16 table 20001 proto 170 (an aiwan route).
    const DEL_ROUTE: &str = "\
        2c0000001900050048a6066b000000000210000000aaff000000000008000100\
        0a02000008000f00214e0000";

    #[test]
    fn groups() {
        assert_eq!(
            group_mask(),
            (1 << 3) | (1 << 6) | (1 << 7) | (1 << 10) | (1 << 18)
        );
    }

    #[test]
    fn foreign_delete_of_aiwan_route_is_drift() {
        let del = parse_captured(DEL_ROUTE);
        let msg = notification(del.clone(), 4242, 0);
        assert_eq!(
            classify(&msg, Some(77)),
            Some(DriftEvent {
                kind: DriftKind::Deleted,
                object: "route 10.2.0.0/16 table 20001".into()
            })
        );
        // Our own change is not drift.
        assert_eq!(classify(&notification(del, 77, 0), Some(77)), None);
    }

    #[test]
    fn foreign_route_into_aiwan_table_is_drift() {
        let RouteNetlinkMessage::DelRoute(mut r) = parse_captured(DEL_ROUTE) else {
            panic!("not a route");
        };
        r.header.protocol = netlink_packet_route::route::RouteProtocol::Boot;
        let msg = notification(RouteNetlinkMessage::NewRoute(r.clone()), 5, NLM_F_REPLACE);
        let event = classify(&msg, None).unwrap();
        assert_eq!(event.kind, DriftKind::Changed);
        assert!(event.object.contains("replaced by protocol 3"), "{event}");
        // A foreign route elsewhere is none of aiwan's business.
        r.header.table = 254;
        r.attributes
            .retain(|a| !matches!(a, netlink_packet_route::route::RouteAttribute::Table(_)));
        let msg = notification(RouteNetlinkMessage::NewRoute(r), 5, 0);
        assert_eq!(classify(&msg, None), None);
    }

    #[test]
    fn overrun_asks_for_full_reconcile() {
        let msg: NetlinkMessage<RouteNetlinkMessage> = NetlinkMessage::new(
            NetlinkHeader::default(),
            NetlinkPayload::Overrun(Vec::new()),
        );
        assert_eq!(
            classify(&msg, None).map(|e| e.kind),
            Some(DriftKind::Overrun)
        );
    }
}
