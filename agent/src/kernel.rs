//! The kernel side of the agent: reads and programs one node's routes, FIB
//! rules and qdiscs over rtnetlink, touching only what carries aiwan's
//! markers (see `state`).
//!
//! Changes are computed as a diff between the desired state and what the
//! kernel holds, and sent in ordered phases (make before break): routes,
//! then the rules pointing into their tables, then qdiscs, classes and
//! filters, and only then the deletions, in the reverse order. Within a
//! phase, requests are batched: many netlink messages go in one datagram
//! (up to [`DEFAULT_WINDOW`] messages or [`BATCH_BYTES`] bytes), the kernel
//! processes them in one go, and a couple of such datagrams are outstanding at
//! once, instead of waiting for each acknowledgement in turn.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::PathBuf;

use futures::StreamExt;
use netlink_packet_core::{
    Emitable, NLM_F_DUMP_INTR, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::address::AddressMessage;
use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use netlink_packet_route::neighbour::NeighbourMessage;
use netlink_packet_route::route::RouteType;
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::proto::ConnectionHandle;
use rtnetlink::sys::{AsyncSocket, SocketAddr};
use serde::{Deserialize, Serialize};

use super::messages::{
    self, FLAGS_ADD, FLAGS_CREATE, FLAGS_DELETE, FLAGS_DUMP, FLAGS_REPLACE, Interfaces,
    MessageError, ObservedRoute, ObservedRule, Request, RouteKey, RouteObject,
};
use super::state::{
    ClassLimit, Family, FlowRule, NodeState, PARENT_CLASS_ID, QDISC_MAJOR, RateLimit, StateError,
};
use super::tc::{self, ObservedClass, ObservedFilter, ObservedQdisc};
use crate::diff::{Change, Diff, Phase};
use crate::inventory::InterfaceReport;

/// How many requests go in one datagram at most. The kernel answers each
/// with an acknowledgement queued on our socket (about 700 bytes of buffer
/// each, skb overhead included) and drops what does not fit, so the
/// requests in flight must stay well within the receive buffer.
pub const DEFAULT_WINDOW: usize = 64;

/// The largest datagram of requests: well under the socket buffers, so that
/// even a batch whose every request fails (each error echoes its request)
/// fits the receive buffer.
pub const BATCH_BYTES: usize = 32 * 1024;

/// How long a datagram of requests may wait for its answers before the
/// apply fails (answers lost to an overflowing socket buffer, for one).
pub const BATCH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// How many datagrams of requests may await their acknowledgements at once.
pub const BATCHES_IN_FLIGHT: usize = 2;

/// Where `ip netns add` puts named network namespaces.
pub const NETNS_DIR: &str = "/var/run/netns";

/// What went wrong talking to the kernel, naming the object.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("desired state: {0}")]
    State(#[from] StateError),
    #[error(transparent)]
    Message(#[from] MessageError),
    #[error("netlink socket: {0}")]
    Socket(#[source] std::io::Error),
    #[error("network namespace {name}: {problem}")]
    Namespace { name: String, problem: String },
    /// The kernel refused a request.
    #[error("{what}: {source}")]
    Refused {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// The kernel lacks something a request needs.
    #[error("{what}: kernel feature missing: {feature} ({source})")]
    MissingFeature {
        what: String,
        feature: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: the netlink connection is closed")]
    Closed { what: String },
    /// The object is held by someone else; aiwan will not take it over.
    #[error("{object}: already exists and is not aiwan's ({owner}); refusing to replace it")]
    Conflict { object: String, owner: String },
}

/// What `apply` (or `purge`) did, in kernel objects: routes, rules, qdiscs,
/// classes and filters. A deleted qdisc takes its classes and filters with
/// it and counts once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyReport {
    pub created: usize,
    pub replaced: usize,
    pub deleted: usize,
    pub unchanged: usize,
}

impl ApplyReport {
    /// True when nothing was sent to the kernel.
    pub fn is_noop(&self) -> bool {
        self.created == 0 && self.replaced == 0 && self.deleted == 0
    }
}

/// One interface's counters, from `IFLA_STATS64`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceStats {
    pub name: String,
    pub ifindex: u32,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub rx_errors: u64,
    pub tx_errors: u64,
    pub rx_dropped: u64,
    pub tx_dropped: u64,
}

/// A request and the kernel feature it depends on, to explain a refusal.
struct Op {
    request: Request,
    feature: Option<&'static str>,
    /// A delete whose object is already gone has done its job.
    delete: bool,
}

impl Op {
    fn new(request: Request) -> Op {
        let delete = request.flags == FLAGS_DELETE;
        Op {
            request,
            feature: None,
            delete,
        }
    }

    fn needs(mut self, feature: &'static str) -> Op {
        self.feature = Some(feature);
        self
    }
}

const ENOENT: i32 = 2;
const ESRCH: i32 = 3;
const ENODEV: i32 = 19;
const EINVAL: i32 = 22;
const EAFNOSUPPORT: i32 = 97;
const EOPNOTSUPP: i32 = 95;

/// Everything read from the kernel in one pass.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub interfaces: Interfaces,
    /// All IPv4 and IPv6 routes, aiwan's and others'.
    pub routes: Vec<ObservedRoute>,
    /// All rules.
    pub rules: Vec<ObservedRule>,
    /// The root qdisc of every interface.
    pub root_qdiscs: Vec<ObservedQdisc>,
    /// The classes of interfaces whose root qdisc is aiwan's.
    pub classes: BTreeMap<u32, Vec<ObservedClass>>,
    /// The filters under aiwan's qdiscs.
    pub filters: BTreeMap<u32, Vec<ObservedFilter>>,
}

impl Snapshot {
    /// aiwan's part of it, as a domain state (normalised).
    pub fn node_state(&self) -> NodeState {
        let mut state = NodeState::default();
        for route in self.routes.iter().filter(|r| r.is_aiwan()) {
            match &route.object {
                Some(RouteObject::Ucmp(r)) => state.routes.push(r.clone()),
                Some(RouteObject::Srv6(p)) => state.srv6_policies.push(p.clone()),
                Some(RouteObject::Sid(s)) => state.local_sids.push(s.clone()),
                None => {}
            }
        }
        for rule in self.rules.iter().filter(|r| r.is_aiwan()) {
            if let Some(r) = &rule.rule {
                state.flow_rules.push(r.clone());
            }
        }
        for qdisc in self.root_qdiscs.iter().filter(|q| q.is_aiwan()) {
            let classes = self
                .classes
                .get(&qdisc.ifindex)
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            let filters = self
                .filters
                .get(&qdisc.ifindex)
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            // With a parent class a1:ffff, the classes are its children
            // and the link rate is its rate; without, they sit under a1:.
            let parent = classes
                .iter()
                .find(|c| c.is_aiwan_class() && c.handle.minor == PARENT_CLASS_ID);
            let mut limit = RateLimit {
                interface: self.interfaces.name(qdisc.ifindex),
                default_class: qdisc.default_class,
                link_bps: parent.map(|p| p.rate_bps.unwrap_or(0)),
                classes: Vec::new(),
            };
            let placed = parent.map(|_| PARENT_CLASS_ID);
            for class in classes
                .iter()
                .filter(|c| c.aiwan_parent() == Some(placed) && c.handle.minor != PARENT_CLASS_ID)
            {
                let id = class.handle.minor;
                let mut dscp: Vec<u8> = filters
                    .iter()
                    .filter(|f| f.is_key_node() && f.class == Some(tc::class_handle(id)))
                    .filter_map(|f| f.dscp.map(|(_, d)| d))
                    .collect();
                dscp.sort_unstable();
                dscp.dedup();
                limit.classes.push(ClassLimit {
                    class_id: id,
                    rate_bps: class.rate_bps.unwrap_or(0),
                    ceil_bps: class.ceil_bps.unwrap_or(0),
                    dscp,
                });
            }
            state.rate_limits.push(limit);
        }
        state.normalized()
    }
}

/// A handle on one network namespace's kernel state.
///
/// Cheap to clone; the netlink connection lives as long as a clone does.
#[derive(Clone, Debug)]
pub struct Kernel {
    handle: ConnectionHandle<RouteNetlinkMessage>,
    port: u32,
    namespace: Option<String>,
    window: usize,
}

fn io_other(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

/// Opens an rtnetlink connection bound to a fresh port, in the current
/// namespace of the calling thread, inside the current tokio runtime.
/// `groups` is the legacy multicast group mask (0 for none).
#[allow(clippy::type_complexity)]
pub(crate) fn open_connection(
    groups: u32,
) -> Result<
    (
        rtnetlink::proto::Connection<RouteNetlinkMessage>,
        ConnectionHandle<RouteNetlinkMessage>,
        futures::channel::mpsc::UnboundedReceiver<(
            NetlinkMessage<RouteNetlinkMessage>,
            SocketAddr,
        )>,
        u32,
    ),
    std::io::Error,
> {
    let (mut conn, handle, messages) = rtnetlink::proto::new_connection::<RouteNetlinkMessage>(
        rtnetlink::sys::protocols::NETLINK_ROUTE,
    )?;
    let socket = conn.socket_mut().socket_mut();
    let addr = socket.bind(&SocketAddr::new(0, groups)).and_then(|()| {
        let mut addr = SocketAddr::new(0, 0);
        socket.get_address(&mut addr).map(|()| addr)
    })?;
    // Room for bursts of answers and notifications; the kernel caps it at
    // net.core.rmem_max, and a smaller buffer still works.
    let _ = socket.set_rx_buf_sz(4 * 1024 * 1024);
    Ok((conn, handle, messages, addr.port_number()))
}

/// Runs `setup` on a new thread that has entered network namespace `name`,
/// with a current-thread tokio runtime of its own; `setup` returns a future
/// (the netlink connection) that the thread then drives to completion, and a
/// value handed back to the caller. Sockets keep the namespace they were
/// created in, so the caller's thread never changes namespace.
pub(crate) fn in_namespace_thread<T, F, Fut>(name: &str, setup: F) -> Result<T, KernelError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<(Fut, T), std::io::Error> + Send + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    let err = |problem: String| KernelError::Namespace {
        name: name.to_string(),
        problem,
    };
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(err("invalid name".into()));
    }
    let path = PathBuf::from(NETNS_DIR).join(name);
    let file = File::open(&path).map_err(|e| err(format!("{}: {e}", path.display())))?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name(format!("netlink-{name}"))
        .spawn(move || {
            let runtime = match nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| format!("setns: {e}"))
                .and_then(|()| {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(|e| format!("runtime: {e}"))
                }) {
                Ok(rt) => rt,
                Err(problem) => {
                    let _ = tx.send(Err(problem));
                    return;
                }
            };
            let started = {
                let _enter = runtime.enter();
                setup()
            };
            match started {
                Ok((connection, value)) => {
                    if tx.send(Ok(value)).is_ok() {
                        runtime.block_on(connection);
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(format!("netlink socket: {e}")));
                }
            }
        })
        .map_err(|e| err(format!("thread: {e}")))?;
    match rx.recv() {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(problem)) => Err(err(problem)),
        Err(_) => Err(err("setup thread ended".into())),
    }
}

fn refused(what: &str, code: i32, feature: Option<&'static str>) -> KernelError {
    let source = std::io::Error::from_raw_os_error(code.abs());
    match feature {
        Some(feature) if matches!(code.abs(), EOPNOTSUPP | EAFNOSUPPORT) => {
            KernelError::MissingFeature {
                what: what.to_string(),
                feature,
                source,
            }
        }
        // tc answers ENOENT for an unknown qdisc or classifier kind.
        Some(
            feature @ ("htb qdisc (CONFIG_NET_SCH_HTB)" | "u32 classifier (CONFIG_NET_CLS_U32)"),
        ) if code.abs() == ENOENT => KernelError::MissingFeature {
            what: what.to_string(),
            feature,
            source,
        },
        _ => KernelError::Refused {
            what: what.to_string(),
            source,
        },
    }
}

const SEG6: &str = "SRv6 encapsulation (CONFIG_IPV6_SEG6_LWTUNNEL)";
const SEG6LOCAL: &str = "SRv6 local SIDs (CONFIG_IPV6_SEG6_LWTUNNEL)";
const MULTIPATH: &str = "multipath routes (CONFIG_IP_ROUTE_MULTIPATH)";
const RULES: &str = "policy routing (CONFIG_IP_MULTIPLE_TABLES / CONFIG_IPV6_MULTIPLE_TABLES)";
const HTB: &str = "htb qdisc (CONFIG_NET_SCH_HTB)";
const U32: &str = "u32 classifier (CONFIG_NET_CLS_U32)";

fn route_feature(object: &RouteObject) -> Option<&'static str> {
    match object {
        RouteObject::Srv6(_) => Some(SEG6),
        RouteObject::Sid(_) => Some(SEG6LOCAL),
        RouteObject::Ucmp(r) if r.next_hops.len() > 1 => Some(MULTIPATH),
        RouteObject::Ucmp(_) => None,
    }
}

/// The metric the kernel gives a route sent without one.
fn default_metric(family: Family) -> u32 {
    match family {
        Family::V4 => 0,
        Family::V6 => 1024,
    }
}

impl Kernel {
    /// Connects to the kernel of the current network namespace. Must be
    /// called inside a tokio runtime (the connection runs as a task).
    pub fn new() -> Result<Kernel, KernelError> {
        let (conn, handle, _messages, port) = open_connection(0).map_err(KernelError::Socket)?;
        tokio::spawn(conn);
        Ok(Kernel {
            handle,
            port,
            namespace: None,
            window: DEFAULT_WINDOW,
        })
    }

    /// Connects to the kernel of the named network namespace
    /// (`/var/run/netns/NAME`, as made by `ip netns add`). The socket is
    /// opened from a dedicated thread that enters the namespace (`setns`)
    /// and drives the connection; the caller's threads stay where they are.
    pub fn in_namespace(name: &str) -> Result<Kernel, KernelError> {
        let (handle, port) = in_namespace_thread(name, || {
            let (conn, handle, _messages, port) = open_connection(0)?;
            Ok((conn, (handle, port)))
        })?;
        Ok(Kernel {
            handle,
            port,
            namespace: Some(name.to_string()),
            window: DEFAULT_WINDOW,
        })
    }

    /// Sets how many requests go in one datagram at most (at least 1; 1
    /// sends them one by one).
    pub fn with_window(mut self, window: usize) -> Kernel {
        self.window = window.max(1);
        self
    }

    /// The netlink port id of this connection: the kernel stamps it on the
    /// notifications of changes made through it.
    pub fn port(&self) -> u32 {
        self.port
    }

    /// The namespace this handle programs, `None` for the current one.
    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    /// A drift monitor for the same namespace, ignoring the changes this
    /// handle makes. Create it before the first `apply` so nothing goes
    /// unseen between the dump and the subscription.
    pub fn monitor(&self) -> Result<super::monitor::Monitor, KernelError> {
        match &self.namespace {
            Some(name) => super::monitor::Monitor::in_namespace(name, Some(self.port)),
            None => super::monitor::Monitor::new(Some(self.port)),
        }
    }

    async fn dump(
        &self,
        what: &str,
        message: RouteNetlinkMessage,
    ) -> Result<Vec<RouteNetlinkMessage>, KernelError> {
        // A dump the kernel flags as interrupted (the table changed while it
        // was read) is taken again.
        for _ in 0..5 {
            let mut header = NetlinkHeader::default();
            header.flags = FLAGS_DUMP;
            let mut request =
                NetlinkMessage::new(header, NetlinkPayload::InnerMessage(message.clone()));
            request.finalize();
            let mut responses = self
                .handle
                .request(request, SocketAddr::new(0, 0))
                .map_err(|_| KernelError::Closed {
                    what: what.to_string(),
                })?;
            let mut out = Vec::new();
            let mut interrupted = false;
            while let Some(msg) = responses.next().await {
                if msg.header.flags & NLM_F_DUMP_INTR != 0 {
                    interrupted = true;
                }
                match msg.payload {
                    NetlinkPayload::InnerMessage(inner) => out.push(inner),
                    NetlinkPayload::Error(e) => {
                        if let Some(code) = e.code {
                            return Err(refused(what, code.get(), None));
                        }
                    }
                    _ => {}
                }
            }
            if !interrupted {
                return Ok(out);
            }
        }
        Err(KernelError::Refused {
            what: what.to_string(),
            source: io_other("dump kept being interrupted by concurrent changes"),
        })
    }

    /// Sends one datagram of requests and waits for all their answers;
    /// returns the first failure, naming its object.
    async fn send_batch(&self, ops: Vec<Op>) -> Result<(), KernelError> {
        let Some(first) = ops.first() else {
            return Ok(());
        };
        let closed = || KernelError::Closed {
            what: first.request.what.clone(),
        };
        let messages: Vec<_> = ops.iter().map(|op| op.request.to_netlink()).collect();
        let mut responses = self
            .handle
            .request_batch(messages, SocketAddr::new(0, 0))
            .map_err(|_| closed())?;
        let mut failure = None;
        let deadline = tokio::time::Instant::now() + BATCH_TIMEOUT;
        loop {
            let msg = match tokio::time::timeout_at(deadline, responses.next()).await {
                Ok(Some(msg)) => msg,
                Ok(None) => break,
                Err(_) => {
                    return Err(KernelError::Refused {
                        what: format!("{} and {} more requests", first.request.what, ops.len() - 1),
                        source: io_other(
                            "no answer from the kernel within 30 s (lost acknowledgements?)",
                        ),
                    });
                }
            };
            let NetlinkPayload::Error(e) = msg.payload else {
                continue;
            };
            let Some(code) = e.code else {
                continue;
            };
            let code = code.get().abs();
            // The kernel echoes the failed request after the error code:
            // find which of ours it is.
            let echoed = e.header.get(16..).unwrap_or(&[]);
            let op = ops
                .iter()
                .find(|op| body_bytes(&op.request.message) == echoed)
                .unwrap_or(first);
            if op.delete && matches!(code, ENOENT | ESRCH | ENODEV | EINVAL) {
                // Already gone (EINVAL: tc's answer for a filter handle
                // that no longer exists).
                continue;
            }
            failure.get_or_insert_with(|| refused(&op.request.what, code, op.feature));
        }
        failure.map_or(Ok(()), Err)
    }

    /// Sends a phase's requests in datagrams of many requests, a few
    /// datagrams outstanding at once; returns the first failure once all
    /// have been answered.
    async fn run(&self, ops: Vec<Op>) -> Result<(), KernelError> {
        let mut batches: Vec<Vec<Op>> = Vec::new();
        let mut bytes = 0;
        for op in ops {
            let len = op.request.to_netlink().buffer_len();
            match batches.last_mut() {
                Some(batch) if batch.len() < self.window && bytes + len <= BATCH_BYTES => {
                    bytes += len;
                    batch.push(op);
                }
                _ => {
                    bytes = len;
                    batches.push(vec![op]);
                }
            }
        }
        let results: Vec<Result<(), KernelError>> = futures::stream::iter(batches)
            .map(|batch| self.send_batch(batch))
            .buffer_unordered(BATCHES_IN_FLIGHT)
            .collect()
            .await;
        results.into_iter().collect()
    }

    /// The interfaces of the namespace, by name and index.
    pub async fn interfaces(&self) -> Result<Interfaces, KernelError> {
        let links = self.links().await?;
        Ok(Interfaces::new(
            links
                .iter()
                .filter_map(|l| Some((l.header.index, link_name(l)?))),
        ))
    }

    async fn links(&self) -> Result<Vec<LinkMessage>, KernelError> {
        let answers = self
            .dump(
                "list interfaces",
                RouteNetlinkMessage::GetLink(LinkMessage::default()),
            )
            .await?;
        Ok(answers
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(l),
                _ => None,
            })
            .collect())
    }

    /// Every interface with its addresses and resolved neighbours, for the
    /// controller to find next hops (see [`crate::inventory`]).
    pub async fn inventory(&self) -> Result<Vec<InterfaceReport>, KernelError> {
        let links = self.links().await?;
        let mut addresses = Vec::new();
        let mut neighbours = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut request = AddressMessage::default();
            request.header.family = family;
            for m in self
                .dump("list addresses", RouteNetlinkMessage::GetAddress(request))
                .await?
            {
                if let RouteNetlinkMessage::NewAddress(a) = m {
                    addresses.push(a);
                }
            }
            let mut request = NeighbourMessage::default();
            request.header.family = family;
            for m in self
                .dump(
                    "list neighbours",
                    RouteNetlinkMessage::GetNeighbour(request),
                )
                .await?
            {
                if let RouteNetlinkMessage::NewNeighbour(n) = m {
                    neighbours.push(n);
                }
            }
        }
        Ok(crate::inventory::reports(&links, &addresses, &neighbours))
    }

    /// Every interface's counters (`IFLA_STATS64`), for the counter stream.
    pub async fn counters(&self) -> Result<Vec<InterfaceStats>, KernelError> {
        let mut out = Vec::new();
        for link in self.links().await? {
            let Some(name) = link_name(&link) else {
                continue;
            };
            let mut stats = InterfaceStats {
                name,
                ifindex: link.header.index,
                ..InterfaceStats::default()
            };
            for attr in &link.attributes {
                if let LinkAttribute::Stats64(s) = attr {
                    stats.rx_bytes = s.rx_bytes;
                    stats.tx_bytes = s.tx_bytes;
                    stats.rx_packets = s.rx_packets;
                    stats.tx_packets = s.tx_packets;
                    stats.rx_errors = s.rx_errors;
                    stats.tx_errors = s.tx_errors;
                    stats.rx_dropped = s.rx_dropped;
                    stats.tx_dropped = s.tx_dropped;
                }
            }
            out.push(stats);
        }
        out.sort_by_key(|s| s.ifindex);
        Ok(out)
    }

    /// Reads interfaces, routes, rules, and aiwan's qdiscs with their
    /// classes and filters.
    pub async fn snapshot(&self) -> Result<Snapshot, KernelError> {
        let interfaces = self.interfaces().await?;
        let mut snap = Snapshot {
            interfaces,
            ..Snapshot::default()
        };
        for family in [Family::V4, Family::V6] {
            let what = format!("list {family} routes");
            for m in self
                .dump(
                    &what,
                    RouteNetlinkMessage::GetRoute(messages::route_dump(family)),
                )
                .await?
            {
                if let RouteNetlinkMessage::NewRoute(r) = m
                    && let Some(route) = messages::parse_route(&r, &snap.interfaces)
                {
                    snap.routes.push(route);
                }
            }
            let what = format!("list {family} rules");
            for m in self
                .dump(
                    &what,
                    RouteNetlinkMessage::GetRule(messages::rule_dump(family)),
                )
                .await?
            {
                if let RouteNetlinkMessage::NewRule(r) = m
                    && let Some(rule) = messages::parse_rule(&r)
                {
                    snap.rules.push(rule);
                }
            }
        }
        for m in self
            .dump(
                "list qdiscs",
                RouteNetlinkMessage::GetQueueDiscipline(tc::dump_message(0)),
            )
            .await?
        {
            if let RouteNetlinkMessage::NewQueueDiscipline(q) = m {
                let q = tc::parse_qdisc(&q);
                if q.is_root() {
                    snap.root_qdiscs.push(q);
                }
            }
        }
        let ours: Vec<u32> = snap
            .root_qdiscs
            .iter()
            .filter(|q| q.is_aiwan())
            .map(|q| q.ifindex)
            .collect();
        for ifindex in ours {
            let dev = snap.interfaces.name(ifindex);
            let classes = self
                .dump(
                    &format!("list classes of {dev}"),
                    RouteNetlinkMessage::GetTrafficClass(tc::dump_message(ifindex)),
                )
                .await?
                .into_iter()
                .filter_map(|m| match m {
                    RouteNetlinkMessage::NewTrafficClass(c) => Some(tc::parse_class(&c)),
                    _ => None,
                })
                .filter(|c| c.ifindex == ifindex)
                .collect();
            snap.classes.insert(ifindex, classes);
            let filters = self
                .dump(
                    &format!("list filters of {dev}"),
                    RouteNetlinkMessage::GetTrafficFilter(tc::filter_dump_message(ifindex)),
                )
                .await?
                .into_iter()
                .filter_map(|m| match m {
                    RouteNetlinkMessage::NewTrafficFilter(f) => Some(tc::parse_filter(&f)),
                    _ => None,
                })
                .filter(|f| f.ifindex == ifindex)
                .collect();
            snap.filters.insert(ifindex, filters);
        }
        Ok(snap)
    }

    /// aiwan's part of the kernel's state: the routes, rules and rate
    /// limits that carry its markers, normalised (see
    /// [`NodeState::normalized`]). Objects with aiwan's marker but a shape
    /// aiwan never installs are left out (`apply` replaces or deletes them).
    pub async fn observe(&self) -> Result<NodeState, KernelError> {
        Ok(self.snapshot().await?.node_state())
    }

    /// Makes aiwan's part of the kernel equal `desired`: creates what is
    /// missing, replaces what differs, deletes aiwan's objects that
    /// `desired` does not hold, and never touches an object without aiwan's
    /// marker (it fails with [`KernelError::Conflict`] rather than replace
    /// one). Applying the same state twice changes nothing the second time.
    ///
    /// Order: routes (the per-path tables) before the rules pointing into
    /// them, qdiscs before classes before filters, and every creation
    /// before any deletion; a failed phase stops the rest, so a failure
    /// never leaves less forwarding state than before.
    pub async fn apply(&self, desired: &NodeState) -> Result<ApplyReport, KernelError> {
        Ok(self.apply_steps(desired).await?.0)
    }

    /// [`Self::apply`], with the diff it carried out (the shared
    /// [`crate::diff`], phase by phase).
    pub async fn apply_steps(
        &self,
        desired: &NodeState,
    ) -> Result<(ApplyReport, Diff), KernelError> {
        desired.check()?;
        let snap = self.snapshot().await?;
        self.apply_to(desired, &snap).await
    }

    /// Deletes everything aiwan owns in this namespace (`aiwan agent
    /// --purge`, leftovers at start, tests).
    pub async fn purge(&self) -> Result<ApplyReport, KernelError> {
        self.apply(&NodeState::default()).await
    }

    async fn apply_to(
        &self,
        desired: &NodeState,
        snap: &Snapshot,
    ) -> Result<(ApplyReport, Diff), KernelError> {
        let ifaces = &snap.interfaces;
        // The shared diff decides what changes and in which phase; this
        // backend makes each change into netlink requests.
        let diff = crate::diff::diff(&snap.node_state(), desired);
        let mut report = diff.routes_and_rules_report();

        // Routes aiwan holds by key, and others' at the default metric
        // (which a route of aiwan's would replace).
        let mut ours: BTreeMap<RouteKey, &ObservedRoute> = BTreeMap::new();
        let mut foreign: BTreeMap<RouteKey, &ObservedRoute> = BTreeMap::new();
        for route in &snap.routes {
            if route.is_aiwan() {
                ours.entry(route.key).or_insert(route);
            } else if route.metric == default_metric(route.key.family()) {
                foreign.entry(route.key).or_insert(route);
            }
        }
        let mut route_ops = Vec::new();
        let mut stale_routes = Vec::new();
        for change in diff.phase(Phase::Routes) {
            let (Change::CreateRoute(object) | Change::ReplaceRoute(object)) = change else {
                continue;
            };
            let key = object.key();
            if let Some(other) = foreign.get(&key) {
                return Err(KernelError::Conflict {
                    object: key.to_string(),
                    owner: format!(
                        "protocol {}{}",
                        other.protocol,
                        if other.kind == u8::from(RouteType::Unicast) {
                            String::new()
                        } else {
                            format!(", type {}", other.kind)
                        }
                    ),
                });
            }
            // A route of aiwan's that could not be read (a shape aiwan never
            // installs) is replaced in place too.
            let verb = if ours.contains_key(&key) {
                "replace"
            } else {
                "create"
            };
            if verb == "replace" && matches!(change, Change::CreateRoute(_)) {
                report.created -= 1;
                report.replaced += 1;
            }
            let mut op = Op::new(Request::new(
                format!("{verb} {object}"),
                RouteNetlinkMessage::NewRoute(object.message(ifaces)?),
                FLAGS_REPLACE,
            ));
            op.feature = route_feature(object);
            route_ops.push(op);
        }
        let mut deleted: BTreeSet<RouteKey> = BTreeSet::new();
        for change in diff.phase(Phase::StaleRoutes) {
            if let Change::DeleteRoute(key) = change {
                deleted.insert(*key);
            }
        }
        // And aiwan's routes that could not be read and are not wanted.
        let wanted: BTreeSet<RouteKey> = diff
            .phase(Phase::Routes)
            .filter_map(|c| match c {
                Change::CreateRoute(o) | Change::ReplaceRoute(o) => Some(o.key()),
                _ => None,
            })
            .collect();
        for (key, route) in &ours {
            if route.object.is_none() && !wanted.contains(key) && deleted.insert(*key) {
                report.deleted += 1;
            }
        }
        for key in &deleted {
            stale_routes.push(Op::new(Request::new(
                format!("delete {key}"),
                RouteNetlinkMessage::DelRoute(messages::route_delete(key)),
                FLAGS_DELETE,
            )));
        }

        // Rules: added anew, the old version (or a stale one) deleted after.
        let rule_ops: Vec<Op> = diff
            .phase(Phase::Rules)
            .filter_map(|change| match change {
                Change::AddRule { rule, replacing } => Some(rule_add(rule, *replacing)),
                _ => None,
            })
            .collect();
        let our_rules: Vec<&ObservedRule> = snap.rules.iter().filter(|r| r.is_aiwan()).collect();
        let mut taken = BTreeSet::new();
        let mut stale_rules = Vec::new();
        let delete_rule = |o: &ObservedRule| {
            Op::new(Request::new(
                format!("delete {} flow rule {}", o.family, o.priority),
                RouteNetlinkMessage::DelRule(o.delete_message()),
                FLAGS_DELETE,
            ))
        };
        for change in diff.phase(Phase::StaleRules) {
            let Change::DeleteRule(rule) = change else {
                continue;
            };
            if let Some((i, o)) = our_rules
                .iter()
                .enumerate()
                .find(|(i, o)| !taken.contains(i) && o.rule.as_ref() == Some(rule))
            {
                taken.insert(i);
                stale_rules.push(delete_rule(o));
            }
        }
        // And aiwan's rules that could not be read.
        for o in our_rules.iter().filter(|o| o.rule.is_none()) {
            report.deleted += 1;
            stale_rules.push(delete_rule(o));
        }

        // Rate limits.
        let tc_plan = plan_tc(desired, snap, &mut report)?;

        // Make...
        self.run(route_ops).await?;
        self.run(rule_ops).await?;
        self.run(tc_plan.rebuild).await?;
        self.run(tc_plan.qdiscs).await?;
        self.run(tc_plan.classes).await?;
        self.run(tc_plan.filters).await?;
        // ... before break.
        self.run(stale_rules).await?;
        self.run(tc_plan.stale_filters).await?;
        self.run(tc_plan.stale_classes).await?;
        self.run(tc_plan.stale_qdiscs).await?;
        self.run(stale_routes).await?;
        Ok((report, diff))
    }
}

fn rule_add(rule: &FlowRule, replacing: bool) -> Op {
    let verb = if replacing { "replace" } else { "create" };
    Op::new(Request::new(
        format!("{verb} {rule}"),
        RouteNetlinkMessage::NewRule(messages::flow_rule(rule)),
        FLAGS_ADD,
    ))
    .needs(RULES)
}

/// A message's bytes after the netlink header, as the kernel echoes them in
/// an error.
fn body_bytes(message: &RouteNetlinkMessage) -> Vec<u8> {
    let mut buf = vec![0; message.buffer_len()];
    message.emit(&mut buf);
    buf
}

fn link_name(link: &LinkMessage) -> Option<String> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.clone()),
        _ => None,
    })
}

#[derive(Default)]
struct TcPlan {
    rebuild: Vec<Op>,
    qdiscs: Vec<Op>,
    classes: Vec<Op>,
    filters: Vec<Op>,
    stale_filters: Vec<Op>,
    stale_classes: Vec<Op>,
    stale_qdiscs: Vec<Op>,
}

fn plan_tc(
    desired: &NodeState,
    snap: &Snapshot,
    report: &mut ApplyReport,
) -> Result<TcPlan, KernelError> {
    let mut plan = TcPlan::default();
    let ifaces = &snap.interfaces;
    let roots: BTreeMap<u32, &ObservedQdisc> =
        snap.root_qdiscs.iter().map(|q| (q.ifindex, q)).collect();
    let mut wanted_ifindexes = BTreeSet::new();
    for limit in &desired.rate_limits {
        let limit = limit.normalized();
        let ifindex = ifaces.resolve(&limit, &limit.interface)?;
        wanted_ifindexes.insert(ifindex);
        let dev = &limit.interface;
        let root = roots.get(&ifindex);
        if let Some(root) = root
            && !root.is_aiwan()
            && root.handle.major != 0
        {
            return Err(KernelError::Conflict {
                object: format!("root qdisc of {dev}"),
                owner: format!("{} {:x}:", root.kind, root.handle.major),
            });
        }
        let ours = root.filter(|q| q.is_aiwan());
        // Whether the classes sit under a parent class now.
        let parented = snap.classes.get(&ifindex).is_some_and(|classes| {
            classes
                .iter()
                .any(|c| c.is_aiwan_class() && c.handle.minor == PARENT_CLASS_ID)
        });
        // htb cannot change its default class in place, nor move a class
        // to another parent: such a qdisc is deleted and built again
        // (traffic flows unshaped meanwhile).
        let rebuild = ours.is_some_and(|q| {
            q.default_class != limit.default_class || parented != limit.link_bps.is_some()
        });
        let fresh = ours.is_none() || rebuild;
        if rebuild {
            plan.rebuild.push(Op::new(Request::new(
                format!("rebuild qdisc {:x}: on {dev}", QDISC_MAJOR),
                RouteNetlinkMessage::DelQueueDiscipline(tc::qdisc_delete_message(ifindex)),
                FLAGS_DELETE,
            )));
        }
        if fresh {
            if rebuild {
                report.replaced += 1;
            } else {
                report.created += 1;
            }
            plan.qdiscs.push(
                Op::new(Request::new(
                    format!("create qdisc {:x}: on {dev}", QDISC_MAJOR),
                    RouteNetlinkMessage::NewQueueDiscipline(tc::qdisc_message(
                        ifindex,
                        limit.default_class,
                    )),
                    FLAGS_REPLACE,
                ))
                .needs(HTB),
            );
        } else {
            report.unchanged += 1;
        }
        let no_classes = Vec::new();
        let no_filters = Vec::new();
        let (seen_classes, seen_filters) = if fresh {
            (&no_classes, &no_filters)
        } else {
            (
                snap.classes.get(&ifindex).unwrap_or(&no_classes),
                snap.filters.get(&ifindex).unwrap_or(&no_filters),
            )
        };
        // Classes: the parent first (a request's order in a phase is the
        // kernel's), then the classes under it.
        let parent = limit.link_bps.map(|_| PARENT_CLASS_ID);
        let mut wanted: Vec<(ClassLimit, Option<u16>)> = limit
            .link_bps
            .map(|link| {
                let class = ClassLimit {
                    class_id: PARENT_CLASS_ID,
                    rate_bps: link,
                    ceil_bps: link,
                    dscp: Vec::new(),
                };
                (class, None)
            })
            .into_iter()
            .collect();
        wanted.extend(limit.classes.iter().map(|c| (c.clone(), parent)));
        let wanted_ids: BTreeSet<u16> = wanted.iter().map(|(c, _)| c.class_id).collect();
        for (class, under) in &wanted {
            let seen = seen_classes
                .iter()
                .find(|c| c.aiwan_parent() == Some(*under) && c.handle.minor == class.class_id);
            let verb = match seen {
                Some(c)
                    if c.rate_bps == Some(class.rate_bps) && c.ceil_bps == Some(class.ceil_bps) =>
                {
                    report.unchanged += 1;
                    continue;
                }
                Some(_) => {
                    report.replaced += 1;
                    "replace"
                }
                None => {
                    report.created += 1;
                    "create"
                }
            };
            plan.classes.push(
                Op::new(Request::new(
                    format!(
                        "{verb} class {:x}:{:x} on {dev}",
                        QDISC_MAJOR, class.class_id
                    ),
                    RouteNetlinkMessage::NewTrafficClass(tc::class_message(ifindex, class, *under)),
                    FLAGS_CREATE,
                ))
                .needs(HTB),
            );
        }
        for c in seen_classes
            .iter()
            .filter(|c| c.handle.major == QDISC_MAJOR && c.handle.minor != 0)
        {
            if !wanted_ids.contains(&c.handle.minor) {
                report.deleted += 1;
                plan.stale_classes.push(Op::new(Request::new(
                    format!(
                        "delete class {:x}:{:x} on {dev}",
                        QDISC_MAJOR, c.handle.minor
                    ),
                    RouteNetlinkMessage::DelTrafficClass(tc::class_delete_message(
                        ifindex,
                        c.handle.minor,
                    )),
                    FLAGS_DELETE,
                )));
            }
        }
        // Filters: one per family and DSCP value.
        let mut wanted_filters: BTreeMap<(Family, u8), u16> = BTreeMap::new();
        for class in &limit.classes {
            for &d in &class.dscp {
                for family in [Family::V4, Family::V6] {
                    wanted_filters.insert((family, d), class.class_id);
                }
            }
        }
        let mut matched = BTreeSet::new();
        for (&(family, dscp), &class_id) in &wanted_filters {
            let seen = seen_filters.iter().find(|f| {
                f.is_key_node()
                    && f.family() == Some(family)
                    && f.dscp == Some((family, dscp))
                    && !matched.contains(&f.key())
            });
            let (verb, handle, flags) = match seen {
                Some(f) => {
                    matched.insert(f.key());
                    if f.class == Some(tc::class_handle(class_id)) {
                        report.unchanged += 1;
                        continue;
                    }
                    report.replaced += 1;
                    ("replace", Some(f.handle), FLAGS_CREATE)
                }
                None => {
                    report.created += 1;
                    ("create", None, FLAGS_ADD)
                }
            };
            plan.filters.push(
                Op::new(Request::new(
                    format!("{verb} {family} dscp {dscp} filter on {dev}"),
                    RouteNetlinkMessage::NewTrafficFilter(tc::filter_message(
                        ifindex, family, dscp, class_id, handle,
                    )),
                    flags,
                ))
                .needs(U32),
            );
        }
        for f in seen_filters.iter().filter(|f| f.is_key_node()) {
            if !matched.contains(&f.key()) {
                report.deleted += 1;
                plan.stale_filters.push(Op::new(Request::new(
                    format!("delete filter {:x} on {dev}", f.handle),
                    RouteNetlinkMessage::DelTrafficFilter(tc::filter_delete_message(
                        ifindex, f.protocol, f.prio, f.handle,
                    )),
                    FLAGS_DELETE,
                )));
            }
        }
    }
    for q in snap.root_qdiscs.iter().filter(|q| q.is_aiwan()) {
        if !wanted_ifindexes.contains(&q.ifindex) {
            report.deleted += 1;
            plan.stale_qdiscs.push(Op::new(Request::new(
                format!(
                    "delete qdisc {:x}: on {}",
                    QDISC_MAJOR,
                    ifaces.name(q.ifindex)
                ),
                RouteNetlinkMessage::DelQueueDiscipline(tc::qdisc_delete_message(q.ifindex)),
                FLAGS_DELETE,
            )));
        }
    }
    Ok(plan)
}
