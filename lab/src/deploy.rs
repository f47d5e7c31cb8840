//! Deploying a topology into Linux network namespaces with real kernel
//! forwarding: one namespace `{lab}-{node}` per node, one veth pair per
//! containerlab link, addresses from [`crate::addressing`].
//!
//! This is test infrastructure, so it shells out to iproute2 (`ip`, and `tc`
//! when shaping) rather than speaking netlink: one `ip -batch` for the root
//! namespace (namespaces and veths), then per namespace, in parallel, the
//! sysctls (written to `/proc/sys` from a thread that entered the namespace)
//! and one `ip -batch` (addresses, links up, host routes).
//!
//! Veths are created directly inside their namespaces under their final
//! containerlab names (`ip link add eth1 netns A type veth peer name eth1
//! netns B`): nothing is ever named in the root namespace, so there are no
//! temporary names to pick, rename or collide with, and the 15-byte
//! interface name limit only applies to the containerlab names themselves.
//!
//! Each namespace's `lo` carries the alias `aiwan-lab:{lab}`, so that
//! [`destroy`] can tell the lab's namespaces from others sharing the prefix
//! even when the state file is gone.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::Write;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use aiwan_planner::{NodeRole, Topology};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::addressing::{AddressingError, InterfaceAddress, link_addresses};

/// Where each deployed lab's state file `{lab}.json` lives.
pub const STATE_DIR: &str = "/run/aiwan/lab";
/// Where `ip netns` keeps its named namespaces.
pub const NETNS_DIR: &str = "/var/run/netns";
/// Highest tbf rate the deployer sets: a veth pair carries about 9 Gbit/s
/// of one TCP flow on the 2-core development machine, so shaping a link
/// above this would promise a capacity the lab cannot deliver.
pub const DEFAULT_SHAPE_CAP_BPS: u64 = 10_000_000_000;
/// Lowest tbf rate: below this tbf's burst and latency settings stop making
/// sense.
const MIN_SHAPE_BPS: u64 = 8_000;
/// MTU of links between two non-host nodes: large enough that SRv6
/// encapsulation (40 bytes, plus 16 per segment) of a host's full 1500-byte
/// packet still fits.
pub const FABRIC_MTU: u32 = 9000;
/// MTU of links with a host at one end.
pub const HOST_MTU: u32 = 1500;
/// Linux's interface name limit (IFNAMSIZ less the terminating zero).
const MAX_IFNAME: usize = 15;
const MAX_LAB_NAME: usize = 63;
const MARKER_PREFIX: &str = "aiwan-lab:";

/// Why a lab could not be deployed, destroyed or inspected. Every message
/// names the node, link, namespace or command and the kernel's own words.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("the lab needs root (network namespaces, veths, sysctls); running as uid {uid}")]
    NotRoot { uid: u32 },
    #[error("`{tool}` is not installed (Debian package {package}); the lab needs it to {purpose}")]
    MissingTool {
        tool: &'static str,
        package: &'static str,
        purpose: &'static str,
    },
    #[error("lab name {lab:?}: {reason}")]
    BadLabName { lab: String, reason: String },
    #[error("node {node:?}: {reason}")]
    BadNode { node: String, reason: String },
    #[error("interface {node}:{interface}: {reason}")]
    BadInterface {
        node: String,
        interface: String,
        reason: String,
    },
    #[error("option {option}: {reason}")]
    BadOption {
        option: &'static str,
        reason: String,
    },
    #[error(
        "lab {lab:?} is already up ({what}); run `aiwan lab down --name {lab}` first, or deploy with --force"
    )]
    AlreadyUp { lab: String, what: String },
    #[error("namespace {namespace} exists and is not lab {lab:?}'s ({owner}); not touching it")]
    NamespaceTaken {
        lab: String,
        namespace: String,
        owner: String,
    },
    #[error(transparent)]
    Addressing(#[from] AddressingError),
    #[error("{subject}: `{command}` failed: {message}")]
    Command {
        subject: String,
        command: String,
        message: String,
    },
    #[error("namespace {namespace}: {reason}")]
    Namespace { namespace: String, reason: String },
    #[error("namespace {namespace}: cannot set {path} to {value}: {source}")]
    Sysctl {
        namespace: String,
        path: String,
        value: &'static str,
        source: std::io::Error,
    },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state file {path}: {reason}")]
    State { path: PathBuf, reason: String },
    #[error(
        "lab {lab:?}: namespaces still present after `ip netns del`: {namespaces:?}: {message}"
    )]
    NotRemoved {
        lab: String,
        namespaces: Vec<String>,
        message: String,
    },
}

/// How to deploy.
#[derive(Debug, Clone, PartialEq)]
pub struct DeployOptions {
    /// Put a tbf on each veth end at its link's capacity (times
    /// `shape_scale`, at most `shape_cap_bps`). Off by default: unshaped
    /// veths forward as fast as the CPU allows.
    pub shape: bool,
    /// Factor applied to every capacity before shaping, so that a lab whose
    /// links exceed what veths carry keeps their ratios (0.01 makes 100G,
    /// 40G and 10G into 1G, 400M and 100M).
    pub shape_scale: f64,
    /// Highest rate shaped; see [`DEFAULT_SHAPE_CAP_BPS`].
    pub shape_cap_bps: u64,
    /// Destroy the lab first when it is already up.
    pub force: bool,
    /// Add a management network: namespace `{lab}--mgmt` (no node can be
    /// called `-mgmt`), and from every node but hosts a veth `mgmt0` into
    /// it, addressed from `10.253.0.0/16` (a /31 each). The controller's
    /// collectors listen in that namespace and the routers' exporters send
    /// there, outside the routed topology.
    pub management: bool,
    /// Hosts send packets no larger than their MTU (`gso_max_segs 1` on
    /// their interfaces), as on a wire. Without it a local TCP sender's
    /// segments cross the veths as 64 KB GSO packets, which a packet
    /// sampler or a capture-based exporter on a router counts as one
    /// packet each, and which softflowd's libpcap ring (256 KB blocks,
    /// handed over when full) holds for seconds at a few Mbit/s.
    pub wire_sized_packets: bool,
}

/// The management network's name for the interface in each router.
pub const MANAGEMENT_INTERFACE: &str = "mgmt0";
/// First address of the management network's /31s.
const MANAGEMENT_BASE_V4: u32 = u32::from_be_bytes([10, 253, 0, 0]);

/// The management namespace of a lab.
pub fn management_namespace(lab: &str) -> String {
    format!("{lab}--mgmt")
}

impl Default for DeployOptions {
    fn default() -> Self {
        DeployOptions {
            shape: false,
            shape_scale: 1.0,
            shape_cap_bps: DEFAULT_SHAPE_CAP_BPS,
            force: false,
            management: false,
            wire_sized_packets: false,
        }
    }
}

/// What was deployed; also the state file's content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    pub lab: String,
    /// The topology's own name (the clab file's `name:`).
    pub topology: String,
    pub shaped: bool,
    /// Nodes by id.
    pub nodes: Vec<DeployedNode>,
    /// The management network, when deployed with one.
    #[serde(default)]
    pub management: Option<Management>,
}

/// The management network: one namespace, a /31 to each router.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Management {
    pub namespace: String,
    pub links: Vec<ManagementLink>,
}

/// A router's link into the management namespace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManagementLink {
    pub node: String,
    /// The router's address on its `mgmt0` (what its exporters send from).
    pub address: std::net::Ipv4Addr,
    /// The management namespace's address on the other end (where the
    /// router sends to).
    pub peer: std::net::Ipv4Addr,
    /// The interface's name in the management namespace.
    pub peer_interface: String,
}

impl Deployment {
    /// The node called `id`.
    pub fn node(&self, id: &str) -> Option<&DeployedNode> {
        self.nodes.iter().find(|n| n.node == id)
    }

    /// The node living in namespace `namespace`.
    pub fn node_by_namespace(&self, namespace: &str) -> Option<&DeployedNode> {
        self.nodes.iter().find(|n| n.namespace == namespace)
    }

    /// Every namespace of the lab (the management one last).
    pub fn namespaces(&self) -> Vec<&str> {
        self.nodes
            .iter()
            .map(|n| n.namespace.as_str())
            .chain(self.management.iter().map(|m| m.namespace.as_str()))
            .collect()
    }

    /// A router's management link.
    pub fn management_link(&self, node: &str) -> Option<&ManagementLink> {
        self.management
            .as_ref()
            .and_then(|m| m.links.iter().find(|l| l.node == node))
    }
}

/// One node's namespace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeployedNode {
    pub node: String,
    /// `wan-router`, `spine`, `leaf` or `host`.
    pub role: String,
    pub namespace: String,
    /// On `lo`: a /32 and a /128.
    pub loopback: InterfaceAddress,
    /// Also on `lo`: the first host address of each of the node's prefixes.
    pub prefix_hosts: Vec<IpNet>,
    /// Link ends, by name.
    pub interfaces: Vec<DeployedInterface>,
    /// Hosts only: their default routes' next hop.
    pub default_gateway: Option<Gateway>,
}

/// One veth end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeployedInterface {
    pub name: String,
    pub address: InterfaceAddress,
    pub peer_node: String,
    pub peer_interface: String,
    pub peer_address: InterfaceAddress,
    /// False for links labelled `aiwan.admin: down`: created, left down.
    pub admin_up: bool,
    pub mtu: u32,
    /// The link's capacity from this end (bit/s), as labelled.
    pub capacity_bps: u64,
    /// The tbf rate on this end, when shaped.
    pub shaped_bps: Option<u64>,
}

/// A host's default routes: both point at the neighbour on `interface`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gateway {
    pub interface: String,
    pub v4: Ipv4Addr,
    pub v6: Ipv6Addr,
}

/// What [`destroy`] did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Destroyed {
    pub lab: String,
    pub namespaces_removed: Vec<String>,
    /// Namespaces with the lab's prefix that are not the lab's (neither in
    /// its state file nor marked with its name): left alone.
    pub left_alone: Vec<String>,
    pub state_file_removed: bool,
}

/// What [`status`] found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LabStatus {
    pub lab: String,
    /// The state file's content, when there is one.
    pub deployment: Option<Deployment>,
    /// The lab's namespaces that exist.
    pub namespaces_present: Vec<String>,
    /// Namespaces of the state file that do not exist.
    pub namespaces_missing: Vec<String>,
    /// Everything that differs from the state file: missing interfaces,
    /// interfaces up that should be down and the other way round.
    pub problems: Vec<String>,
    /// Deployed, every namespace present, no problem.
    pub healthy: bool,
}

/// Runs `f` on a thread that has entered network namespace `namespace`
/// (a name under [`NETNS_DIR`]): sockets it opens and `/proc/sys/net` files
/// it writes belong to that namespace. The calling thread is not affected.
pub fn in_namespace<T, F>(namespace: &str, f: F) -> Result<T, DeployError>
where
    T: Send,
    F: FnOnce() -> T + Send,
{
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                enter_namespace(namespace)?;
                Ok(f())
            })
            .join()
            .unwrap_or_else(|_| {
                Err(DeployError::Namespace {
                    namespace: namespace.to_string(),
                    reason: "the thread working inside it panicked".into(),
                })
            })
    })
}

/// Moves the current thread into `namespace`. Only for threads that end
/// afterwards (scoped threads here), never a pool's.
fn enter_namespace(namespace: &str) -> Result<(), DeployError> {
    let path = Path::new(NETNS_DIR).join(namespace);
    let file = File::open(&path).map_err(|source| DeployError::Namespace {
        namespace: namespace.to_string(),
        reason: format!("cannot open {}: {source}", path.display()),
    })?;
    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|errno| {
        DeployError::Namespace {
            namespace: namespace.to_string(),
            reason: format!("cannot enter it (setns): {errno}"),
        }
    })
}

/// The state file of `lab`.
pub fn state_path(lab: &str) -> PathBuf {
    Path::new(STATE_DIR).join(format!("{lab}.json"))
}

/// Checks that `lab` can prefix namespace names: an identifier of 1 to 63
/// letters, digits, `-`, `_` or `.`, starting with a letter or digit. With a
/// node id of at most 63 characters, `{lab}-{node}` stays far below the 255
/// bytes a name under /var/run/netns may have.
pub fn check_lab_name(lab: &str) -> Result<(), DeployError> {
    let bad = |reason: &str| {
        Err(DeployError::BadLabName {
            lab: lab.to_string(),
            reason: reason.to_string(),
        })
    };
    if lab.is_empty() {
        return bad("it is empty");
    }
    if lab.len() > MAX_LAB_NAME {
        return bad("it is longer than 63 characters");
    }
    if !lab.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return bad("it must start with a letter or digit");
    }
    if !lab
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return bad("only letters, digits, '-', '_' and '.' are allowed");
    }
    Ok(())
}

/// One line of an `ip -batch` or `tc -batch` input, with what it is about
/// (the node or link an error should name).
#[derive(Debug, Clone, PartialEq)]
struct BatchLine {
    subject: String,
    line: String,
}

/// The work for one namespace.
#[derive(Debug, Clone, PartialEq)]
struct NamespacePlan {
    namespace: String,
    /// (path under /proc/sys, value)
    sysctls: Vec<(String, &'static str)>,
    ip: Vec<BatchLine>,
    tc: Vec<BatchLine>,
}

/// Everything `deploy` will do, computed without touching the system.
#[derive(Debug, Clone, PartialEq)]
struct DeployPlan {
    root: Vec<BatchLine>,
    namespaces: Vec<NamespacePlan>,
    deployment: Deployment,
}

fn plan(
    topology: &Topology,
    lab: &str,
    options: &DeployOptions,
) -> Result<DeployPlan, DeployError> {
    check_lab_name(lab)?;
    if options.shape && !(options.shape_scale.is_finite() && options.shape_scale > 0.0) {
        return Err(DeployError::BadOption {
            option: "shape_scale",
            reason: format!("{} is not a positive number", options.shape_scale),
        });
    }
    let addressing = link_addresses(topology)?;
    let roles: BTreeMap<&str, NodeRole> = topology
        .nodes
        .iter()
        .map(|n| (n.id.as_str(), n.role))
        .collect();
    for node in roles.keys() {
        if node.contains('/') {
            return Err(DeployError::BadNode {
                node: node.to_string(),
                reason: "a '/' cannot be part of a namespace name".into(),
            });
        }
    }

    // Per link end: its capacity (of the directed link leaving it; the
    // reverse one's when only that exists) and whether the link is drained
    // in either direction (a veth cannot be down one way only).
    let mut capacity: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    let mut drained: BTreeSet<(&str, &str)> = BTreeSet::new();
    for link in &topology.links {
        let src = (link.src.as_str(), link.src_interface.as_str());
        let dst = (link.dst.as_str(), link.dst_interface.as_str());
        capacity.insert(src, link.capacity_bps);
        capacity.entry(dst).or_insert(link.capacity_bps);
        if !link.admin_up {
            drained.insert(src);
            drained.insert(dst);
        }
    }
    let namespace_of = |node: &str| format!("{lab}-{node}");
    let is_host = |node: &str| roles.get(node) == Some(&NodeRole::Host);

    let mut root = Vec::new();
    for node in roles.keys() {
        root.push(BatchLine {
            subject: format!("node {node}"),
            line: format!("netns add {}", namespace_of(node)),
        });
    }
    for link in addressing.links() {
        let (a, b) = (&link.a, &link.b);
        for end in [a, b] {
            check_interface_name(&end.node, &end.interface)?;
        }
        let mtu = if is_host(&a.node) || is_host(&b.node) {
            HOST_MTU
        } else {
            FABRIC_MTU
        };
        root.push(BatchLine {
            subject: format!("link {}", link.name()),
            line: format!(
                "link add {} mtu {mtu} netns {} type veth peer name {} mtu {mtu} netns {}",
                a.interface,
                namespace_of(&a.node),
                b.interface,
                namespace_of(&b.node)
            ),
        });
    }

    let mut nodes = Vec::with_capacity(roles.len());
    let mut namespaces = Vec::with_capacity(roles.len());
    for (&node, &role) in &roles {
        let namespace = namespace_of(node);
        let own = addressing.node(node).ok_or_else(|| DeployError::BadNode {
            node: node.to_string(),
            reason: "has no addresses in the addressing plan".into(),
        })?;
        let subject = format!("node {node} (namespace {namespace})");
        let mut ip = Vec::new();
        let mut push = |line: String| {
            ip.push(BatchLine {
                subject: subject.clone(),
                line,
            })
        };
        push(format!("link set lo alias {MARKER_PREFIX}{lab}"));
        push("link set lo up".into());
        push(format!("address add {} dev lo", own.loopback.v4));
        push(format!("address add {} dev lo", own.loopback.v6));
        for host in &own.prefix_hosts {
            push(format!("address add {host} dev lo"));
        }
        let mut interfaces = Vec::new();
        let mut tc = Vec::new();
        for (name, address) in addressing.interfaces_of(node) {
            let (peer_node, peer_interface, peer_address) = addressing
                .peer_of(node, name)
                .ok_or_else(|| DeployError::BadInterface {
                    node: node.to_string(),
                    interface: name.to_string(),
                    reason: "has no peer in the addressing plan".into(),
                })?;
            let admin_up = !drained.contains(&(node, name));
            let mtu = if role == NodeRole::Host || is_host(&peer_node) {
                HOST_MTU
            } else {
                FABRIC_MTU
            };
            let capacity_bps = capacity.get(&(node, name)).copied().unwrap_or(0);
            push(format!("address add {} dev {name}", address.v4));
            // No duplicate address detection: the plan guarantees unique
            // addresses, and DAD would hold them tentative for a second.
            push(format!("address add {} dev {name} nodad", address.v6));
            if admin_up {
                push(format!("link set {name} up"));
            }
            if options.wire_sized_packets && role == NodeRole::Host {
                push(format!("link set {name} gso_max_segs 1"));
            }
            let shaped_bps = options
                .shape
                .then(|| shape_rate(capacity_bps, options.shape_scale, options.shape_cap_bps));
            if let Some(rate) = shaped_bps {
                tc.push(BatchLine {
                    subject: subject.clone(),
                    line: format!(
                        "qdisc replace dev {name} root tbf rate {rate}bit burst {} latency 50ms",
                        tbf_burst_bytes(rate)
                    ),
                });
            }
            interfaces.push(DeployedInterface {
                name: name.to_string(),
                address,
                peer_node,
                peer_interface,
                peer_address,
                admin_up,
                mtu,
                capacity_bps,
                shaped_bps,
            });
        }
        // Hosts send everything to their first neighbour (by interface
        // name, links that are up); routers get no routes: the controller
        // installs them.
        let default_gateway = if role == NodeRole::Host {
            interfaces.iter().find(|i| i.admin_up).map(|i| Gateway {
                interface: i.name.clone(),
                v4: i.peer_address.v4.addr(),
                v6: i.peer_address.v6.addr(),
            })
        } else {
            None
        };
        if let Some(gateway) = &default_gateway {
            push(format!(
                "route add 0.0.0.0/0 via {} dev {} proto static",
                gateway.v4, gateway.interface
            ));
            push(format!(
                "route add ::/0 via {} dev {} proto static",
                gateway.v6, gateway.interface
            ));
        }

        let sysctls = node_sysctls(&interfaces);
        namespaces.push(NamespacePlan {
            namespace: namespace.clone(),
            sysctls,
            ip,
            tc,
        });
        nodes.push(DeployedNode {
            node: node.to_string(),
            role: role.as_str().to_string(),
            namespace,
            loopback: own.loopback,
            prefix_hosts: own.prefix_hosts.clone(),
            interfaces,
            default_gateway,
        });
    }
    let management = if options.management {
        Some(plan_management(lab, &mut root, &mut namespaces, &nodes)?)
    } else {
        None
    };
    Ok(DeployPlan {
        root,
        namespaces,
        deployment: Deployment {
            lab: lab.to_string(),
            topology: topology.name.clone(),
            shaped: options.shape,
            nodes,
            management,
        },
    })
}

/// The management network's part of a plan: its namespace, a veth from
/// every router into it, their addresses.
fn plan_management(
    lab: &str,
    root: &mut Vec<BatchLine>,
    namespaces: &mut Vec<NamespacePlan>,
    nodes: &[DeployedNode],
) -> Result<Management, DeployError> {
    let namespace = management_namespace(lab);
    root.push(BatchLine {
        subject: "the management network".into(),
        line: format!("netns add {namespace}"),
    });
    let subject = format!("the management network (namespace {namespace})");
    let mut own = vec![
        BatchLine {
            subject: subject.clone(),
            line: format!("link set lo alias {MARKER_PREFIX}{lab}"),
        },
        BatchLine {
            subject: subject.clone(),
            line: "link set lo up".into(),
        },
    ];
    let mut links = Vec::new();
    for (index, node) in nodes.iter().filter(|n| n.role != "host").enumerate() {
        if node
            .interfaces
            .iter()
            .any(|i| i.name == MANAGEMENT_INTERFACE)
        {
            return Err(DeployError::BadInterface {
                node: node.node.clone(),
                interface: MANAGEMENT_INTERFACE.into(),
                reason: "is the management network's name; rename the link".into(),
            });
        }
        let offset = u32::try_from(index)
            .ok()
            .and_then(|i| i.checked_mul(2))
            .filter(|o| *o < 1 << 16)
            .ok_or_else(|| DeployError::BadNode {
                node: node.node.clone(),
                reason: "more than 32768 routers for the management network".into(),
            })?;
        let peer = std::net::Ipv4Addr::from(MANAGEMENT_BASE_V4 + offset);
        let address = std::net::Ipv4Addr::from(MANAGEMENT_BASE_V4 + offset + 1);
        let peer_interface = format!("m{index}");
        root.push(BatchLine {
            subject: format!("the management link of {}", node.node),
            line: format!(
                "link add {MANAGEMENT_INTERFACE} netns {} type veth peer name {peer_interface} netns {namespace}",
                node.namespace
            ),
        });
        own.push(BatchLine {
            subject: subject.clone(),
            line: format!("address add {peer}/31 dev {peer_interface}"),
        });
        own.push(BatchLine {
            subject: subject.clone(),
            line: format!("link set {peer_interface} up"),
        });
        if let Some(plan) = namespaces
            .iter_mut()
            .find(|p| p.namespace == node.namespace)
        {
            let subject = format!("node {} (namespace {})", node.node, node.namespace);
            plan.ip.push(BatchLine {
                subject: subject.clone(),
                line: format!("address add {address}/31 dev {MANAGEMENT_INTERFACE}"),
            });
            plan.ip.push(BatchLine {
                subject,
                line: format!("link set {MANAGEMENT_INTERFACE} up"),
            });
            plan.sysctls.push((
                format!("net/ipv4/conf/{MANAGEMENT_INTERFACE}/rp_filter"),
                "0",
            ));
        }
        links.push(ManagementLink {
            node: node.node.clone(),
            address,
            peer,
            peer_interface,
        });
    }
    namespaces.push(NamespacePlan {
        namespace: namespace.clone(),
        sysctls: Vec::new(),
        ip: own,
        tc: Vec::new(),
    });
    Ok(Management { namespace, links })
}

/// The sysctls of a namespace with link ends `interfaces`, as (path under
/// /proc/sys, value).
fn node_sysctls(interfaces: &[DeployedInterface]) -> Vec<(String, &'static str)> {
    let mut sysctls: Vec<(String, &'static str)> = vec![
        ("net/ipv4/ip_forward".into(), "1"),
        ("net/ipv6/conf/all/forwarding".into(), "1"),
        ("net/ipv6/conf/default/forwarding".into(), "1"),
        // Hash on the L4 ports, so that many flows between two hosts
        // split over a multipath route by its weights.
        ("net/ipv4/fib_multipath_hash_policy".into(), "1"),
        ("net/ipv6/fib_multipath_hash_policy".into(), "1"),
        // A link taken down (a failure test) keeps its IPv6 addresses,
        // as IPv4 does, so that it comes back whole.
        ("net/ipv6/conf/all/keep_addr_on_down".into(), "1"),
        ("net/ipv6/conf/default/keep_addr_on_down".into(), "1"),
        // Next hops over a link whose carrier is down are skipped, as a
        // router does, so multipath routes fail over.
        ("net/ipv4/conf/all/ignore_routes_with_linkdown".into(), "1"),
        ("net/ipv6/conf/all/ignore_routes_with_linkdown".into(), "1"),
    ];
    let names = ["all", "default", "lo"]
        .into_iter()
        .chain(interfaces.iter().map(|i| i.name.as_str()));
    for name in names {
        // Reverse path filtering would drop asymmetric and policy-routed
        // traffic. The effective value is the larger of `all` and the
        // interface's, and interfaces copied theirs from the root
        // namespace's defaults when they were created: set every one.
        sysctls.push((format!("net/ipv4/conf/{name}/rp_filter"), "0"));
        // SRv6 packets are processed only on interfaces with seg6_enabled.
        sysctls.push((format!("net/ipv6/conf/{name}/seg6_enabled"), "1"));
    }
    sysctls
}

/// Linux's rules for interface names, which the topology's identifier check
/// does not know.
fn check_interface_name(node: &str, interface: &str) -> Result<(), DeployError> {
    let bad = |reason: &str| {
        Err(DeployError::BadInterface {
            node: node.to_string(),
            interface: interface.to_string(),
            reason: reason.to_string(),
        })
    };
    if interface.len() > MAX_IFNAME {
        return bad("Linux interface names have at most 15 bytes");
    }
    if interface.contains('/') {
        return bad("Linux interface names cannot contain '/'");
    }
    if interface == "all" || interface == "default" {
        return bad("Linux reserves 'all' and 'default' (they name sysctl directories)");
    }
    Ok(())
}

/// The tbf rate of a link end: its capacity scaled, within the veths' reach.
pub fn shape_rate(capacity_bps: u64, scale: f64, cap_bps: u64) -> u64 {
    let scaled = (capacity_bps as f64 * scale).round();
    let scaled = if scaled >= u64::MAX as f64 {
        u64::MAX
    } else {
        scaled as u64
    };
    scaled.min(cap_bps).max(MIN_SHAPE_BPS)
}

/// One millisecond at `rate_bps`, and at least two full frames: tbf's
/// timer needs that much slack to reach its rate; larger GSO packets are
/// segmented by tbf itself.
fn tbf_burst_bytes(rate_bps: u64) -> u64 {
    (rate_bps / 8 / 1000).max(2 * 1514)
}

/// Deploys `topology` as lab `lab`; see the module documentation. Fails if
/// the lab is already up, unless `options.force` (then it is destroyed
/// first). On failure, whatever was created is removed again.
pub fn deploy(
    topology: &Topology,
    lab: &str,
    options: &DeployOptions,
) -> Result<Deployment, DeployError> {
    let plan = plan(topology, lab, options)?;
    check_root()?;
    check_tool("ip", "create namespaces, veths, addresses and routes")?;
    if options.shape {
        check_tool("tc", "shape links with tbf")?;
    }

    let state = state_path(lab);
    // Up means a state file, or namespaces of this plan, or namespaces
    // marked as the lab's (from an earlier version of the file).
    let mut existing = existing_namespaces(&plan.deployment.namespaces())?;
    existing.extend(lab_namespaces(lab, None)?.0);
    existing.sort();
    existing.dedup();
    if state.exists() || !existing.is_empty() {
        if !options.force {
            let what = if state.exists() {
                format!("state file {} exists", state.display())
            } else {
                format!("namespace {} exists", existing.join(", "))
            };
            return Err(DeployError::AlreadyUp {
                lab: lab.to_string(),
                what,
            });
        }
        destroy(lab)?;
        // What destroy left alone belongs to someone else.
        if let Some(namespace) = existing_namespaces(&plan.deployment.namespaces())?
            .into_iter()
            .next()
        {
            let owner = namespace_marker(&namespace)
                .map(|m| format!("marked {m:?}"))
                .unwrap_or_else(|| "not marked by aiwan".into());
            return Err(DeployError::NamespaceTaken {
                lab: lab.to_string(),
                namespace,
                owner,
            });
        }
    }

    std::fs::create_dir_all(STATE_DIR).map_err(|source| DeployError::Io {
        what: "cannot create the state directory",
        path: PathBuf::from(STATE_DIR),
        source,
    })?;
    match build(&plan) {
        Ok(()) => {}
        Err(error) => {
            // None of these namespaces existed before: all are ours.
            let created = existing_namespaces(&plan.deployment.namespaces()).unwrap_or_default();
            let _ = delete_namespaces(&created);
            return Err(error);
        }
    }
    if let Err(error) = write_state(&state, &plan.deployment) {
        let _ = delete_namespaces(&plan.deployment.namespaces());
        return Err(error);
    }
    Ok(plan.deployment)
}

/// Runs the plan: the root batch, then every namespace in parallel.
fn build(plan: &DeployPlan) -> Result<(), DeployError> {
    run_batch("ip", None, &plan.root)?;
    let results: Vec<Result<(), DeployError>> = std::thread::scope(|scope| {
        let workers: Vec<_> = plan
            .namespaces
            .iter()
            .map(|namespace| scope.spawn(move || configure_namespace(namespace)))
            .collect();
        workers
            .into_iter()
            .zip(&plan.namespaces)
            .map(|(worker, namespace)| {
                worker.join().unwrap_or_else(|_| {
                    Err(DeployError::Namespace {
                        namespace: namespace.namespace.clone(),
                        reason: "the thread configuring it panicked".into(),
                    })
                })
            })
            .collect()
    });
    // The first failure in node order, so the report is deterministic.
    results.into_iter().collect()
}

/// Sysctls, then addresses and links, then shaping, inside one namespace.
/// Runs on its own scoped thread, which it moves into the namespace.
fn configure_namespace(plan: &NamespacePlan) -> Result<(), DeployError> {
    enter_namespace(&plan.namespace)?;
    // /proc/sys/net shows the namespace of the thread that opens the file.
    for (path, value) in &plan.sysctls {
        let full = format!("/proc/sys/{path}");
        std::fs::write(&full, value).map_err(|source| DeployError::Sysctl {
            namespace: plan.namespace.clone(),
            path: full,
            value,
            source,
        })?;
    }
    run_batch("ip", Some(&plan.namespace), &plan.ip)?;
    if !plan.tc.is_empty() {
        run_batch("tc", Some(&plan.namespace), &plan.tc)?;
    }
    Ok(())
}

/// Runs `lines` through `{program} [-n namespace] -batch -`. On failure the
/// error names the failing line's subject and the line itself, with the
/// kernel's message.
fn run_batch(
    program: &'static str,
    namespace: Option<&str>,
    lines: &[BatchLine],
) -> Result<(), DeployError> {
    if lines.is_empty() {
        return Ok(());
    }
    let mut command = Command::new(program);
    if let Some(namespace) = namespace {
        command.args(["-n", namespace]);
    }
    command
        .args(["-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let prefix = match namespace {
        Some(namespace) => format!("{program} -n {namespace}"),
        None => program.to_string(),
    };
    let spawn_error = |source: std::io::Error| DeployError::Command {
        subject: lines[0].subject.clone(),
        command: format!("{prefix} -batch -"),
        message: source.to_string(),
    };
    let mut child = command.spawn().map_err(spawn_error)?;
    let input: String = lines.iter().map(|l| format!("{}\n", l.line)).collect();
    if let Some(mut stdin) = child.stdin.take() {
        // A write error means the program stopped early; its exit status
        // and stderr below say why.
        let _ = stdin.write_all(input.as_bytes());
    }
    let output = child.wait_with_output().map_err(spawn_error)?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    // iproute2 reports `Command failed -:N` after the kernel's message.
    let failed_line = stderr
        .lines()
        .find_map(|l| l.strip_prefix("Command failed "))
        .and_then(|rest| rest.rsplit(':').next())
        .and_then(|n| n.trim().parse::<usize>().ok())
        .and_then(|n| n.checked_sub(1))
        .and_then(|i| lines.get(i));
    let message: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.starts_with("Command failed ") && !l.trim().is_empty())
        .collect();
    let message = if message.is_empty() {
        format!("exited with {}", output.status)
    } else {
        message.join("; ")
    };
    Err(match failed_line {
        Some(line) => DeployError::Command {
            subject: line.subject.clone(),
            command: format!("{prefix} {}", line.line),
            message,
        },
        None => DeployError::Command {
            subject: lines[0].subject.clone(),
            command: format!("{prefix} -batch - ({} lines)", lines.len()),
            message,
        },
    })
}

fn check_root() -> Result<(), DeployError> {
    let uid = nix::unistd::geteuid();
    if uid.is_root() {
        Ok(())
    } else {
        Err(DeployError::NotRoot { uid: uid.as_raw() })
    }
}

/// Checks that `tool` is on the PATH.
fn check_tool(tool: &'static str, purpose: &'static str) -> Result<(), DeployError> {
    let found = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
        .unwrap_or(false);
    if found {
        Ok(())
    } else {
        Err(DeployError::MissingTool {
            tool,
            package: "iproute2",
            purpose,
        })
    }
}

/// Which of `namespaces` exist.
fn existing_namespaces(namespaces: &[&str]) -> Result<Vec<String>, DeployError> {
    let present = list_namespaces()?;
    Ok(namespaces
        .iter()
        .filter(|n| present.contains(**n))
        .map(|n| n.to_string())
        .collect())
}

/// Every named namespace.
fn list_namespaces() -> Result<BTreeSet<String>, DeployError> {
    match std::fs::read_dir(NETNS_DIR) {
        Ok(entries) => Ok(entries
            .filter_map(|entry| entry.ok())
            .filter_map(|entry| entry.file_name().into_string().ok())
            .collect()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(BTreeSet::new()),
        Err(source) => Err(DeployError::Io {
            what: "cannot list",
            path: PathBuf::from(NETNS_DIR),
            source,
        }),
    }
}

/// The lab name a namespace's `lo` is marked with, if any.
fn namespace_marker(namespace: &str) -> Option<String> {
    let output = Command::new("ip")
        .args(["-n", namespace, "-j", "link", "show", "dev", "lo"])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let links: serde_json::Value = serde_json::from_slice(&output.stdout).ok()?;
    let alias = links.get(0)?.get("ifalias")?.as_str()?;
    alias.strip_prefix(MARKER_PREFIX).map(str::to_string)
}

/// `ip netns del` for each of `namespaces` (one batch that goes on past
/// failures), then checks that they are gone.
fn delete_namespaces(namespaces: &[impl AsRef<str>]) -> Result<(), (Vec<String>, String)> {
    if namespaces.is_empty() {
        return Ok(());
    }
    let input: String = namespaces
        .iter()
        .map(|n| format!("netns del {}\n", n.as_ref()))
        .collect();
    let message = match Command::new("ip")
        .args(["-force", "-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(mut child) => {
            if let Some(mut stdin) = child.stdin.take() {
                let _ = stdin.write_all(input.as_bytes());
            }
            match child.wait_with_output() {
                Ok(output) => String::from_utf8_lossy(&output.stderr).trim().to_string(),
                Err(error) => error.to_string(),
            }
        }
        Err(error) => format!("cannot run ip: {error}"),
    };
    let names: Vec<&str> = namespaces.iter().map(AsRef::as_ref).collect();
    let left = existing_namespaces(&names).unwrap_or_default();
    if left.is_empty() {
        Ok(())
    } else {
        Err((left, message))
    }
}

fn read_state(path: &Path) -> Result<Option<Deployment>, DeployError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(DeployError::Io {
                what: "cannot read state file",
                path: path.to_path_buf(),
                source,
            });
        }
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|error| DeployError::State {
            path: path.to_path_buf(),
            reason: error.to_string(),
        })
}

/// Writes the state file whole or not at all (temporary file, rename).
fn write_state(path: &Path, deployment: &Deployment) -> Result<(), DeployError> {
    let text = serde_json::to_string_pretty(deployment).map_err(|error| DeployError::State {
        path: path.to_path_buf(),
        reason: error.to_string(),
    })?;
    let temporary = path.with_extension("json.tmp");
    let io = |source| DeployError::Io {
        what: "cannot write state file",
        path: temporary.clone(),
        source,
    };
    std::fs::write(&temporary, text + "\n").map_err(io)?;
    std::fs::rename(&temporary, path).map_err(io)
}

/// The namespaces that belong to `lab`: those of its state file, and those
/// with its prefix whose `lo` is marked with its name. Also returns the
/// prefixed ones that are someone else's.
fn lab_namespaces(
    lab: &str,
    state: Option<&Deployment>,
) -> Result<(Vec<String>, Vec<String>), DeployError> {
    let prefix = format!("{lab}-");
    let listed: BTreeSet<String> = state
        .map(|d| d.namespaces().into_iter().map(str::to_string).collect())
        .unwrap_or_default();
    let mut ours = Vec::new();
    let mut others = Vec::new();
    for namespace in list_namespaces()? {
        if listed.contains(&namespace) {
            ours.push(namespace);
        } else if namespace.starts_with(&prefix) {
            // A lab named `ai` must not take `ai-wan`'s namespaces.
            if namespace_marker(&namespace).as_deref() == Some(lab) {
                ours.push(namespace);
            } else {
                others.push(namespace);
            }
        }
    }
    Ok((ours, others))
}

/// Removes every namespace of `lab` (those of its state file, and those
/// marked as its own when the state file is gone) and the state file. Safe
/// to call when the lab is down.
pub fn destroy(lab: &str) -> Result<Destroyed, DeployError> {
    check_lab_name(lab)?;
    check_root()?;
    check_tool("ip", "delete namespaces")?;
    let path = state_path(lab);
    // A damaged state file must not stop the cleanup: fall back to markers.
    let state = read_state(&path).ok().flatten();
    let (ours, others) = lab_namespaces(lab, state.as_ref())?;
    delete_namespaces(&ours).map_err(|(namespaces, message)| DeployError::NotRemoved {
        lab: lab.to_string(),
        namespaces,
        message,
    })?;
    let state_file_removed = match std::fs::remove_file(&path) {
        Ok(()) => true,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => false,
        Err(source) => {
            return Err(DeployError::Io {
                what: "cannot remove state file",
                path,
                source,
            });
        }
    };
    Ok(Destroyed {
        lab: lab.to_string(),
        namespaces_removed: ours,
        left_alone: others,
        state_file_removed,
    })
}

/// What is up of `lab`: its state file, its namespaces, and whether each
/// interface exists and is up or down as deployed.
pub fn status(lab: &str) -> Result<LabStatus, DeployError> {
    check_lab_name(lab)?;
    let deployment = read_state(&state_path(lab))?;
    let root = check_root().is_ok();
    let (present, _) = if root {
        lab_namespaces(lab, deployment.as_ref())?
    } else {
        // Markers cannot be read without root: the state file decides.
        let expected: Vec<&str> = deployment
            .as_ref()
            .map(Deployment::namespaces)
            .unwrap_or_default();
        (existing_namespaces(&expected)?, Vec::new())
    };
    let mut missing = Vec::new();
    let mut problems = Vec::new();
    if let Some(deployment) = &deployment {
        for node in &deployment.nodes {
            if !present.contains(&node.namespace) {
                missing.push(node.namespace.clone());
            } else if root {
                problems.extend(check_interfaces(node));
            }
        }
        if !root {
            problems.push("not root: interfaces were not checked".into());
        }
        for namespace in &present {
            if deployment.node_by_namespace(namespace).is_none() {
                problems.push(format!(
                    "namespace {namespace} is marked as the lab's but not in its state file"
                ));
            }
        }
    } else if !present.is_empty() {
        problems.push(format!(
            "no state file {}, but {} namespaces remain; `aiwan lab down --name {lab}` removes them",
            state_path(lab).display(),
            present.len()
        ));
    }
    let healthy = deployment.is_some() && missing.is_empty() && problems.is_empty();
    Ok(LabStatus {
        lab: lab.to_string(),
        deployment,
        namespaces_present: present,
        namespaces_missing: missing,
        problems,
        healthy,
    })
}

/// Differences between a node's interfaces and its deployment.
fn check_interfaces(node: &DeployedNode) -> Vec<String> {
    let output = match Command::new("ip")
        .args(["-n", &node.namespace, "-j", "link", "show"])
        .output()
    {
        Ok(output) if output.status.success() => output,
        Ok(output) => {
            return vec![format!(
                "node {}: `ip -n {} -j link show` failed: {}",
                node.node,
                node.namespace,
                String::from_utf8_lossy(&output.stderr).trim()
            )];
        }
        Err(error) => return vec![format!("node {}: cannot run ip: {error}", node.node)],
    };
    let links: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout).unwrap_or_default();
    let admin_up: BTreeMap<&str, bool> = links
        .iter()
        .filter_map(|link| {
            let name = link.get("ifname")?.as_str()?;
            let up = link
                .get("flags")?
                .as_array()?
                .iter()
                .any(|f| f.as_str() == Some("UP"));
            Some((name, up))
        })
        .collect();
    let expected = std::iter::once(("lo", true)).chain(
        node.interfaces
            .iter()
            .map(|i| (i.name.as_str(), i.admin_up)),
    );
    let mut problems = Vec::new();
    for (name, should_be_up) in expected {
        match admin_up.get(name) {
            None => problems.push(format!("node {}: interface {name} is missing", node.node)),
            Some(&up) if up != should_be_up => problems.push(format!(
                "node {}: interface {name} is {} but was deployed {}",
                node.node,
                if up { "up" } else { "down" },
                if should_be_up { "up" } else { "down" },
            )),
            Some(_) => {}
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clab::parse_clab;

    const FIXTURE: &str = r#"
name: small
topology:
  nodes:
    r1: {labels: {aiwan.role: wan-router, aiwan.prefixes: "10.1.0.0/24"}}
    r2: {labels: {aiwan.role: wan-router}}
    h1: {labels: {aiwan.role: host}}
  links:
    - endpoints: ["r1:eth1", "r2:eth1"]
      labels: {aiwan.capacity: 100G}
    - endpoints: ["r1:eth2", "r2:eth2"]
      labels: {aiwan.capacity: 400M, aiwan.admin: down}
    - endpoints: ["h1:eth1", "r1:eth3"]
      labels: {aiwan.capacity: 1G}
"#;

    fn lines(batch: &[BatchLine]) -> Vec<&str> {
        batch.iter().map(|l| l.line.as_str()).collect()
    }

    #[test]
    fn wire_sized_packets_limit_the_hosts_segments_only() {
        let topology = parse_clab(FIXTURE).expect("fixture");
        let segments = |options: &DeployOptions, namespace: &str| -> Vec<String> {
            let planned = plan(&topology, "t", options).expect("plan");
            let node = planned
                .namespaces
                .iter()
                .find(|n| n.namespace == namespace)
                .expect("namespace");
            lines(&node.ip)
                .into_iter()
                .filter(|l| l.contains("gso_max_segs"))
                .map(str::to_string)
                .collect()
        };
        let wire = DeployOptions {
            wire_sized_packets: true,
            ..DeployOptions::default()
        };
        assert_eq!(segments(&wire, "t-h1"), ["link set eth1 gso_max_segs 1"]);
        assert!(segments(&wire, "t-r1").is_empty());
        assert!(segments(&DeployOptions::default(), "t-h1").is_empty());
    }

    #[test]
    fn a_management_network_reaches_every_router_and_no_host() {
        let topology = parse_clab(FIXTURE).expect("fixture");
        let options = DeployOptions {
            management: true,
            ..DeployOptions::default()
        };
        let planned = plan(&topology, "t", &options).expect("plan");
        let root = lines(&planned.root);
        assert_eq!(
            &root[root.len() - 3..],
            [
                "netns add t--mgmt",
                "link add mgmt0 netns t-r1 type veth peer name m0 netns t--mgmt",
                "link add mgmt0 netns t-r2 type veth peer name m1 netns t--mgmt",
            ]
        );
        let management = planned.deployment.management.as_ref().expect("management");
        assert_eq!(management.namespace, "t--mgmt");
        let links: Vec<(&str, String, String)> = management
            .links
            .iter()
            .map(|l| (l.node.as_str(), l.address.to_string(), l.peer.to_string()))
            .collect();
        assert_eq!(
            links,
            [
                ("r1", "10.253.0.1".into(), "10.253.0.0".into()),
                ("r2", "10.253.0.3".into(), "10.253.0.2".into()),
            ]
        );
        let r1 = planned
            .namespaces
            .iter()
            .find(|n| n.namespace == "t-r1")
            .expect("r1");
        let r1_lines = lines(&r1.ip);
        assert!(r1_lines.contains(&"address add 10.253.0.1/31 dev mgmt0"));
        assert!(r1_lines.contains(&"link set mgmt0 up"));
        let mgmt = planned.namespaces.last().expect("management namespace");
        assert_eq!(mgmt.namespace, "t--mgmt");
        assert_eq!(
            lines(&mgmt.ip),
            [
                "link set lo alias aiwan-lab:t",
                "link set lo up",
                "address add 10.253.0.0/31 dev m0",
                "link set m0 up",
                "address add 10.253.0.2/31 dev m1",
                "link set m1 up",
            ]
        );
        // `down` finds it with the nodes' namespaces.
        assert!(planned.deployment.namespaces().contains(&"t--mgmt"));
        // A router with an interface of that name is refused by name.
        let clash = FIXTURE.replace("r2:eth2", "r2:mgmt0");
        let error = plan(&parse_clab(&clash).expect("fixture"), "t", &options)
            .expect_err("clash")
            .to_string();
        assert!(error.contains("mgmt0"), "{error}");
    }

    #[test]
    fn plan_of_a_small_lab() {
        let topology = parse_clab(FIXTURE).expect("fixture");
        let options = DeployOptions {
            shape: true,
            shape_scale: 0.1,
            ..DeployOptions::default()
        };
        let plan = plan(&topology, "t", &options).expect("plan");
        assert_eq!(
            lines(&plan.root),
            [
                "netns add t-h1",
                "netns add t-r1",
                "netns add t-r2",
                "link add eth1 mtu 1500 netns t-h1 type veth peer name eth3 mtu 1500 netns t-r1",
                "link add eth1 mtu 9000 netns t-r1 type veth peer name eth1 mtu 9000 netns t-r2",
                "link add eth2 mtu 9000 netns t-r1 type veth peer name eth2 mtu 9000 netns t-r2",
            ]
        );
        let h1 = &plan.namespaces[0];
        assert_eq!(h1.namespace, "t-h1");
        assert_eq!(
            lines(&h1.ip),
            [
                "link set lo alias aiwan-lab:t",
                "link set lo up",
                "address add 10.254.0.1/32 dev lo",
                "address add fd00:254::1/128 dev lo",
                "address add 10.255.0.0/31 dev eth1",
                "address add fd00:255::/127 dev eth1 nodad",
                "link set eth1 up",
                "route add 0.0.0.0/0 via 10.255.0.1 dev eth1 proto static",
                "route add ::/0 via fd00:255::1 dev eth1 proto static",
            ]
        );
        assert_eq!(
            lines(&h1.tc),
            ["qdisc replace dev eth1 root tbf rate 100000000bit burst 12500 latency 50ms"]
        );
        let r1 = &plan.namespaces[1];
        assert_eq!(
            lines(&r1.ip),
            [
                "link set lo alias aiwan-lab:t",
                "link set lo up",
                "address add 10.254.0.2/32 dev lo",
                "address add fd00:254::2/128 dev lo",
                "address add 10.1.0.1/32 dev lo",
                "address add 10.255.0.2/31 dev eth1",
                "address add fd00:255::2/127 dev eth1 nodad",
                "link set eth1 up",
                // The drained link: addressed, left down.
                "address add 10.255.0.4/31 dev eth2",
                "address add fd00:255::4/127 dev eth2 nodad",
                "address add 10.255.0.1/31 dev eth3",
                "address add fd00:255::1/127 dev eth3 nodad",
                "link set eth3 up",
            ]
        );
        // 100G scaled by 0.1 is 10G, the cap; 400M becomes 40M.
        assert_eq!(
            lines(&r1.tc),
            [
                "qdisc replace dev eth1 root tbf rate 10000000000bit burst 1250000 latency 50ms",
                "qdisc replace dev eth2 root tbf rate 40000000bit burst 5000 latency 50ms",
                "qdisc replace dev eth3 root tbf rate 100000000bit burst 12500 latency 50ms",
            ]
        );
        for (path, value) in [
            ("net/ipv4/ip_forward", "1"),
            ("net/ipv6/conf/all/forwarding", "1"),
            ("net/ipv4/fib_multipath_hash_policy", "1"),
            ("net/ipv6/fib_multipath_hash_policy", "1"),
            ("net/ipv4/conf/all/rp_filter", "0"),
            ("net/ipv4/conf/eth3/rp_filter", "0"),
            ("net/ipv6/conf/all/seg6_enabled", "1"),
            ("net/ipv6/conf/eth2/seg6_enabled", "1"),
        ] {
            assert!(
                r1.sysctls.contains(&(path.to_string(), value)),
                "{path}={value}"
            );
        }

        let deployment = &plan.deployment;
        let r1 = deployment.node("r1").expect("r1");
        assert_eq!(r1.default_gateway, None);
        assert_eq!(
            r1.prefix_hosts,
            ["10.1.0.1/32".parse::<IpNet>().expect("net")]
        );
        let eth2 = &r1.interfaces[1];
        assert_eq!((eth2.name.as_str(), eth2.admin_up), ("eth2", false));
        assert_eq!(
            (eth2.peer_node.as_str(), eth2.peer_interface.as_str()),
            ("r2", "eth2")
        );
        let h1 = deployment.node("h1").expect("h1");
        assert_eq!(
            h1.default_gateway,
            Some(Gateway {
                interface: "eth1".into(),
                v4: "10.255.0.1".parse().expect("v4"),
                v6: "fd00:255::1".parse().expect("v6"),
            })
        );

        // Unshaped: no tc at all.
        let plain = super::plan(&topology, "t", &DeployOptions::default()).expect("plan");
        assert!(plain.namespaces.iter().all(|n| n.tc.is_empty()));
        assert!(
            plain
                .deployment
                .nodes
                .iter()
                .flat_map(|n| &n.interfaces)
                .all(|i| i.shaped_bps.is_none())
        );
    }

    #[test]
    fn bad_names_are_named() {
        let topology = parse_clab(FIXTURE).expect("fixture");
        let cases = [
            ("", "lab name \"\": it is empty"),
            ("a/b", "lab name \"a/b\": only letters"),
            (
                "-x",
                "lab name \"-x\": it must start with a letter or digit",
            ),
        ];
        for (lab, expected) in cases {
            let error = plan(&topology, lab, &DeployOptions::default())
                .expect_err(expected)
                .to_string();
            assert!(error.contains(expected), "{expected:?} not in {error:?}");
        }
        let long = FIXTURE.replace("r1:eth1", "r1:ethernet-0123456");
        let error = plan(
            &parse_clab(&long).expect("parses"),
            "t",
            &DeployOptions::default(),
        )
        .expect_err("long interface")
        .to_string();
        assert_eq!(
            error,
            "interface r1:ethernet-0123456: Linux interface names have at most 15 bytes"
        );
        let slash = FIXTURE.replace("r1:eth1", "r1:Ethernet1/1");
        let error = plan(
            &parse_clab(&slash).expect("parses"),
            "t",
            &DeployOptions::default(),
        )
        .expect_err("slash")
        .to_string();
        assert_eq!(
            error,
            "interface r1:Ethernet1/1: Linux interface names cannot contain '/'"
        );
        let reserved = FIXTURE.replace("r1:eth1", "r1:default");
        let error = plan(
            &parse_clab(&reserved).expect("parses"),
            "t",
            &DeployOptions::default(),
        )
        .expect_err("reserved")
        .to_string();
        assert_eq!(
            error,
            "interface r1:default: Linux reserves 'all' and 'default' (they name sysctl directories)"
        );
        let options = DeployOptions {
            shape: true,
            shape_scale: 0.0,
            ..DeployOptions::default()
        };
        let error = plan(&topology, "t", &options)
            .expect_err("scale")
            .to_string();
        assert_eq!(error, "option shape_scale: 0 is not a positive number");
    }

    #[test]
    fn shaping_rates() {
        assert_eq!(
            shape_rate(100_000_000_000, 1.0, DEFAULT_SHAPE_CAP_BPS),
            10_000_000_000
        );
        assert_eq!(
            shape_rate(1_000_000_000, 1.0, DEFAULT_SHAPE_CAP_BPS),
            1_000_000_000
        );
        assert_eq!(
            shape_rate(40_000_000_000, 0.01, DEFAULT_SHAPE_CAP_BPS),
            400_000_000
        );
        assert_eq!(shape_rate(1_000, 1.0, DEFAULT_SHAPE_CAP_BPS), MIN_SHAPE_BPS);
        assert_eq!(tbf_burst_bytes(10_000_000), 3028);
        assert_eq!(tbf_burst_bytes(10_000_000_000), 1_250_000);
    }
}
