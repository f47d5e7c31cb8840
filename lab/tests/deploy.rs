//! The deployer against the real kernel: namespaces, veths, addresses,
//! sysctls, host routes, forwarding across routers, status and cleanup.
//!
//! Needs root, iproute2 and network namespaces; prints `SKIPPED name:
//! reason` and returns without them, but fails under `AIWAN_REQUIRE_LAB=1`.
//! Pings are sent from raw ICMP sockets opened inside the namespaces, so the
//! tests need no `ping` binary.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use aiwan_lab::addressing::{InterfaceAddress, link_addresses};
use aiwan_lab::clab::load_clab;
use aiwan_lab::deploy::{
    DeployError, DeployOptions, Deployment, NETNS_DIR, deploy, destroy, in_namespace, state_path,
    status,
};
use serde_json::Value;

fn lab_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// Why this machine cannot run the lab, if it cannot.
fn lab_unavailable() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root for network namespaces".into());
    }
    let ip = Command::new("ip").arg("-V").output();
    if !ip.is_ok_and(|o| o.status.success()) {
        return Some("`ip` (iproute2) is not installed".into());
    }
    // One probe name per call: the tests run in parallel.
    static PROBE: AtomicU16 = AtomicU16::new(0);
    let probe = format!(
        "aiwan-probe-{}-{}",
        std::process::id(),
        PROBE.fetch_add(1, Ordering::Relaxed)
    );
    let created = Command::new("ip")
        .args(["netns", "add", &probe])
        .output()
        .is_ok_and(|o| o.status.success());
    let _ = Command::new("ip").args(["netns", "del", &probe]).output();
    if !created {
        return Some("cannot create a network namespace".into());
    }
    None
}

/// True when the test may go on; prints the skip, or fails under
/// `AIWAN_REQUIRE_LAB=1`.
fn lab_ready(test: &str) -> bool {
    match lab_unavailable() {
        None => true,
        Some(reason) => {
            if std::env::var("AIWAN_REQUIRE_LAB").is_ok_and(|v| v == "1") {
                panic!("{test}: AIWAN_REQUIRE_LAB=1 but {reason}");
            }
            println!("SKIPPED {test}: {reason}");
            false
        }
    }
}

/// Destroys the lab however the test ends.
struct LabGuard(String);

impl Drop for LabGuard {
    fn drop(&mut self) {
        if let Err(error) = destroy(&self.0) {
            eprintln!("cleanup of lab {}: {error}", self.0);
        }
    }
}

/// A lab name of this test process, so parallel tests and runs never meet.
fn lab_name(tag: &str) -> String {
    format!("{tag}{}", std::process::id())
}

fn sh(args: &[&str]) -> String {
    let output = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|error| panic!("{args:?}: {error}"));
    assert!(
        output.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn ip_json(namespace: &str, args: &[&str]) -> Value {
    let mut command = vec!["ip", "-n", namespace, "-j"];
    command.extend_from_slice(args);
    serde_json::from_str(&sh(&command)).expect("ip -j prints JSON")
}

fn namespaces_with_prefix(prefix: &str) -> Vec<String> {
    std::fs::read_dir(NETNS_DIR)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|name| name.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default()
}

fn read_sysctl(namespace: &str, path: &str) -> String {
    let path = format!("/proc/sys/{path}");
    in_namespace(namespace, || std::fs::read_to_string(&path))
        .expect("enter namespace")
        .unwrap_or_else(|error| panic!("{namespace}: {path}: {error}"))
        .trim()
        .to_string()
}

static PING_ID: AtomicU16 = AtomicU16::new(0);

/// One ICMP echo exchange from inside `namespace` to `target`, sent up to
/// `attempts` times, 300 ms apart.
fn ping(namespace: &str, target: IpAddr, attempts: u16) -> Result<(), String> {
    in_namespace(namespace, move || ping_here(target, attempts)).map_err(|e| e.to_string())?
}

fn ping_here(target: IpAddr, attempts: u16) -> Result<(), String> {
    use socket2::{Domain, Protocol, Socket, Type};
    let (domain, protocol, request, reply) = match target {
        IpAddr::V4(_) => (Domain::IPV4, Protocol::ICMPV4, 8u8, 0u8),
        IpAddr::V6(_) => (Domain::IPV6, Protocol::ICMPV6, 128, 129),
    };
    let socket = Socket::new(domain, Type::RAW, Some(protocol))
        .map_err(|e| format!("raw ICMP socket: {e}"))?;
    // std's UdpSocket is only a wrapper of recvfrom and sendto here: it
    // lets the test read into a plain buffer with the sender's address.
    let socket = UdpSocket::from(socket);
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .map_err(|e| e.to_string())?;
    let id = (std::process::id() as u16) ^ PING_ID.fetch_add(1, Ordering::Relaxed);
    for seq in 0..attempts {
        let mut packet = vec![request, 0, 0, 0];
        packet.extend_from_slice(&id.to_be_bytes());
        packet.extend_from_slice(&seq.to_be_bytes());
        packet.extend_from_slice(b"aiwan-lab-ping");
        if target.is_ipv4() {
            // The kernel fills in ICMPv6 checksums on raw sockets, not
            // ICMPv4 ones.
            let sum = checksum(&packet);
            packet[2..4].copy_from_slice(&sum.to_be_bytes());
        }
        socket
            .send_to(&packet, SocketAddr::new(target, 0))
            .map_err(|e| format!("send to {target}: {e}"))?;
        let deadline = Instant::now() + Duration::from_millis(300);
        let mut buffer = [0u8; 2048];
        while Instant::now() < deadline {
            let Ok((length, from)) = socket.recv_from(&mut buffer) else {
                continue;
            };
            // IPv4 raw sockets hand over the IP header too.
            let icmp = match target {
                IpAddr::V4(_) => {
                    let header = usize::from(buffer[0] & 0x0f) * 4;
                    buffer.get(header..length).unwrap_or(&[])
                }
                IpAddr::V6(_) => &buffer[..length],
            };
            if from.ip() == target
                && icmp.len() >= 8
                && icmp[0] == reply
                && icmp[4..6] == id.to_be_bytes()
                && icmp[6..8] == seq.to_be_bytes()
            {
                return Ok(());
            }
        }
    }
    Err(format!(
        "no echo reply from {target} after {attempts} tries"
    ))
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|pair| u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// (v4, v6) addresses with prefix length on `interface`, from `ip -j addr`.
fn addresses_on(addresses: &Value, interface: &str) -> BTreeSet<String> {
    addresses
        .as_array()
        .into_iter()
        .flatten()
        .filter(|link| link["ifname"] == interface)
        .flat_map(|link| link["addr_info"].as_array().cloned().unwrap_or_default())
        .filter(|info| info["scope"] != "link" && info["scope"] != "host")
        .map(|info| {
            format!(
                "{}/{}",
                info["local"].as_str().unwrap_or_default(),
                info["prefixlen"]
            )
        })
        .collect()
}

fn expected(address: InterfaceAddress) -> BTreeSet<String> {
    [address.v4.to_string(), address.v6.to_string()].into()
}

fn node_namespace<'a>(deployment: &'a Deployment, node: &str) -> &'a str {
    &deployment.node(node).expect("node deployed").namespace
}

#[test]
fn diamond_deploys_forwards_and_cleans_up() {
    let test = "diamond_deploys_forwards_and_cleans_up";
    if !lab_ready(test) {
        return;
    }
    let topology = load_clab(&lab_file("tests/fixtures/diamond.clab.yml")).expect("fixture");
    let plan = link_addresses(&topology).expect("addressing");
    let lab = lab_name("dm");
    let _guard = LabGuard(lab.clone());
    let started = Instant::now();
    let deployment = deploy(&topology, &lab, &DeployOptions::default()).expect("deploy");
    println!("diamond: deployed in {:?}", started.elapsed());

    // Every namespace, with its interfaces up (or down) and addressed as the
    // plan says, forwarding on, SRv6 on, reverse path filtering off.
    let present = namespaces_with_prefix(&format!("{lab}-"));
    for node in ["h1", "h4", "r1", "r2", "r3", "r4"] {
        let namespace = format!("{lab}-{node}");
        assert!(present.contains(&namespace), "{namespace} missing");
        let deployed = deployment.node(node).expect("node");
        assert_eq!(deployed.namespace, namespace);
        let addresses = ip_json(&namespace, &["address", "show"]);
        let links = addresses.as_array().expect("array");
        let up = |name: &str| {
            links
                .iter()
                .find(|l| l["ifname"] == name)
                .and_then(|l| l["flags"].as_array())
                .is_some_and(|flags| flags.iter().any(|f| f == "UP"))
        };
        assert!(up("lo"), "{node}: lo is down");
        let mut on_lo = expected(plan.loopback_of(node).expect("loopback"));
        for host in &plan.node(node).expect("node").prefix_hosts {
            on_lo.insert(host.to_string());
        }
        // `lo` also has 127.0.0.1/8 and ::1/128 (scope host, filtered).
        assert_eq!(addresses_on(&addresses, "lo"), on_lo, "{node}: lo");
        let interfaces = plan.interfaces_of(node);
        assert_eq!(
            links.len(),
            1 + interfaces.len(),
            "{node}: exactly lo and its link ends"
        );
        for (interface, address) in interfaces {
            assert_eq!(
                addresses_on(&addresses, interface),
                expected(address),
                "{node}:{interface}"
            );
            let drained =
                (node, interface) == ("r2", "eth3") || (node, interface) == ("r3", "eth3");
            assert_eq!(up(interface), !drained, "{node}:{interface} admin state");
            assert_eq!(
                read_sysctl(
                    &namespace,
                    &format!("net/ipv6/conf/{interface}/seg6_enabled")
                ),
                "1",
                "{node}:{interface} seg6_enabled"
            );
            assert_eq!(
                read_sysctl(&namespace, &format!("net/ipv4/conf/{interface}/rp_filter")),
                "0",
                "{node}:{interface} rp_filter"
            );
        }
        for (path, value) in [
            ("net/ipv4/ip_forward", "1"),
            ("net/ipv6/conf/all/forwarding", "1"),
            ("net/ipv4/conf/all/rp_filter", "0"),
            ("net/ipv4/fib_multipath_hash_policy", "1"),
            ("net/ipv6/fib_multipath_hash_policy", "1"),
            ("net/ipv6/conf/all/seg6_enabled", "1"),
        ] {
            assert_eq!(read_sysctl(&namespace, path), value, "{node}: {path}");
        }
    }

    // Neighbours reach each other across every link that is up, over IPv4
    // and IPv6; not across the drained one.
    for link in plan.links() {
        let namespace = node_namespace(&deployment, &link.a.node);
        let drained = link.a.node == "r2" && link.a.interface == "eth3";
        for target in [
            IpAddr::V4(link.b.address.v4.addr()),
            IpAddr::V6(link.b.address.v6.addr()),
        ] {
            let result = ping(namespace, target, if drained { 1 } else { 10 });
            if drained {
                assert!(result.is_err(), "{} is drained but answers", link.name());
            } else {
                result.unwrap_or_else(|e| panic!("{}: {e}", link.name()));
            }
        }
    }

    // Hosts: a static default route to their neighbour, IPv4 and IPv6.
    for (host, router, router_interface) in [("h1", "r1", "eth3"), ("h4", "r4", "eth3")] {
        let namespace = node_namespace(&deployment, host);
        let gateway = plan
            .address_of(router, router_interface)
            .expect("router end");
        for (family, via) in [
            ("-4", gateway.v4.addr().to_string()),
            ("-6", gateway.v6.addr().to_string()),
        ] {
            let routes = ip_json(namespace, &[family, "route", "show", "default"]);
            let route = &routes[0];
            assert_eq!(route["gateway"], via.as_str(), "{host} {family}: {routes}");
            assert_eq!(route["dev"], "eth1", "{host} {family}");
            assert_eq!(route["protocol"], "static", "{host} {family}");
        }
    }
    // Routers: nothing but the kernel's connected routes.
    for router in ["r1", "r2", "r3", "r4"] {
        let namespace = node_namespace(&deployment, router);
        for family in ["-4", "-6"] {
            let routes = ip_json(namespace, &[family, "route", "show"]);
            for route in routes.as_array().expect("array") {
                assert_eq!(route["protocol"], "kernel", "{router}: {route}");
            }
        }
    }

    // Static routes by hand: h1 -> h4 over r1-r2-r4, back over r4-r3-r1.
    // The asymmetry also shows reverse path filtering is off.
    let h1 = plan.address_of("h1", "eth1").expect("h1");
    let h4 = plan.address_of("h4", "eth1").expect("h4");
    let towards_h4 = [
        h4.v4.addr().to_string() + "/32",
        h4.v6.addr().to_string() + "/128",
        "10.4.0.0/24".into(),
        "fd00:4::/64".into(),
    ];
    let towards_h1 = [
        h1.v4.addr().to_string() + "/32",
        h1.v6.addr().to_string() + "/128",
        "10.1.0.0/24".into(),
        "fd00:1::/64".into(),
    ];
    for (router, interface, destinations) in [
        ("r1", "eth1", &towards_h4),
        ("r2", "eth2", &towards_h4),
        ("r4", "eth2", &towards_h1),
        ("r3", "eth1", &towards_h1),
    ] {
        let namespace = node_namespace(&deployment, router);
        let (_, _, gateway) = plan.peer_of(router, interface).expect("peer");
        for destination in destinations {
            let via = if destination.contains(':') {
                gateway.v6.addr().to_string()
            } else {
                gateway.v4.addr().to_string()
            };
            sh(&[
                "ip",
                "-n",
                namespace,
                "route",
                "add",
                destination,
                "via",
                &via,
                "dev",
                interface,
            ]);
        }
    }
    let h1_namespace = node_namespace(&deployment, "h1");
    let h4_namespace = node_namespace(&deployment, "h4");
    for (from, target) in [
        (h1_namespace, IpAddr::V4(h4.v4.addr())),
        (h1_namespace, IpAddr::V6(h4.v6.addr())),
        (h1_namespace, "10.4.0.1".parse().expect("ip")),
        (h1_namespace, "fd00:4::1".parse().expect("ip")),
        (h4_namespace, IpAddr::V4(h1.v4.addr())),
        (h4_namespace, "fd00:1::1".parse().expect("ip")),
    ] {
        ping(from, target, 10).unwrap_or_else(|e| panic!("{from} -> {target}: {e}"));
    }

    // Status reports the lab; a link taken down by hand shows up in it.
    let report = status(&lab).expect("status");
    assert!(report.healthy, "{report:?}");
    assert_eq!(report.deployment.as_ref(), Some(&deployment));
    assert_eq!(report.namespaces_present.len(), 6);
    sh(&[
        "ip",
        "-n",
        node_namespace(&deployment, "r2"),
        "link",
        "set",
        "eth1",
        "down",
    ]);
    let report = status(&lab).expect("status");
    assert!(!report.healthy);
    assert_eq!(
        report.problems,
        ["node r2: interface eth1 is down but was deployed up"]
    );

    // Deploying again is refused; --force redeploys.
    let error = deploy(&topology, &lab, &DeployOptions::default()).expect_err("already up");
    assert!(matches!(error, DeployError::AlreadyUp { .. }), "{error}");
    assert!(error.to_string().contains("is already up"), "{error}");
    let force = DeployOptions {
        force: true,
        ..DeployOptions::default()
    };
    deploy(&topology, &lab, &force).expect("forced redeploy");
    assert!(status(&lab).expect("status").healthy);

    // Without its state file, destroy finds the namespaces by their marker.
    std::fs::remove_file(state_path(&lab)).expect("remove state file");
    let destroyed = destroy(&lab).expect("destroy");
    assert_eq!(destroyed.namespaces_removed.len(), 6, "{destroyed:?}");
    assert!(!destroyed.state_file_removed);
    assert!(namespaces_with_prefix(&format!("{lab}-")).is_empty());
    // Twice is fine.
    let again = destroy(&lab).expect("destroy again");
    assert!(again.namespaces_removed.is_empty());
    let report = status(&lab).expect("status");
    assert!(!report.healthy && report.deployment.is_none() && report.namespaces_present.is_empty());
}

#[test]
fn shaped_links_get_a_tbf_at_their_scaled_capacity() {
    let test = "shaped_links_get_a_tbf_at_their_scaled_capacity";
    if !lab_ready(test) {
        return;
    }
    let topology = load_clab(&lab_file("tests/fixtures/diamond.clab.yml")).expect("fixture");
    let lab = lab_name("sh");
    let _guard = LabGuard(lab.clone());
    let options = DeployOptions {
        shape: true,
        shape_scale: 0.1,
        ..DeployOptions::default()
    };
    let deployment = deploy(&topology, &lab, &options).expect("deploy");
    // r1:eth1 is 10G scaled to 1G; r1:eth3 (to h1) is 25G, scaled to 2.5G.
    let namespace = node_namespace(&deployment, "r1");
    for (interface, rate) in [("eth1", 1_000_000_000u64), ("eth3", 2_500_000_000)] {
        let qdiscs = ip_tc_json(namespace, interface);
        let root = &qdiscs[0];
        assert_eq!(root["kind"], "tbf", "{interface}: {qdiscs}");
        // tc -j reports the rate in bytes per second.
        assert_eq!(root["options"]["rate"], rate / 8, "{interface}: {qdiscs}");
        let deployed = deployment.node("r1").expect("r1");
        let end = deployed
            .interfaces
            .iter()
            .find(|i| i.name == interface)
            .expect("interface");
        assert_eq!(end.shaped_bps, Some(rate));
    }
    destroy(&lab).expect("destroy");
}

/// A deploy that the kernel refuses half-way names the node, the command
/// and the kernel's words, and leaves nothing behind.
#[test]
fn failed_deploy_names_the_command_and_cleans_up() {
    let test = "failed_deploy_names_the_command_and_cleans_up";
    if !lab_ready(test) {
        return;
    }
    let text = std::fs::read_to_string(lab_file("tests/fixtures/diamond.clab.yml"))
        .expect("fixture")
        .replace("fd00:4::/64", "::1/128");
    // `lo` has ::1 as soon as it is up, so adding it again fails inside r4's
    // namespace, after every namespace and veth exists.
    let topology = aiwan_lab::clab::parse_clab(&text).expect("parses");
    let lab = lab_name("fl");
    let _guard = LabGuard(lab.clone());
    let error = deploy(&topology, &lab, &DeployOptions::default()).expect_err("kernel refuses");
    assert_eq!(
        error.to_string(),
        format!(
            "node r4 (namespace {lab}-r4): `ip -n {lab}-r4 address add ::1/128 dev lo` failed: \
             Error: ipv6: address already assigned."
        )
    );
    assert!(namespaces_with_prefix(&format!("{lab}-")).is_empty());
    assert!(!state_path(&lab).exists());
}

fn ip_tc_json(namespace: &str, interface: &str) -> Value {
    serde_json::from_str(&sh(&[
        "tc", "-n", namespace, "-j", "qdisc", "show", "dev", interface,
    ]))
    .expect("tc -j prints JSON")
}

/// The real lab file, 21 nodes and 27 links: deploy and destroy are timed
/// and must take seconds.
#[test]
fn ai_wan_lab_deploys_and_tears_down_in_seconds() {
    let test = "ai_wan_lab_deploys_and_tears_down_in_seconds";
    if !lab_ready(test) {
        return;
    }
    let topology = load_clab(&lab_file("ai-wan.clab.yml")).expect("ai-wan.clab.yml");
    let lab = lab_name("aw");
    let _guard = LabGuard(lab.clone());
    let started = Instant::now();
    let deployment = deploy(&topology, &lab, &DeployOptions::default()).expect("deploy");
    let deployed_in = started.elapsed();
    assert_eq!(deployment.nodes.len(), 21);
    let report = status(&lab).expect("status");
    assert!(report.healthy, "{report:?}");
    // One link end to end: the north WAN hop.
    let plan = link_addresses(&topology).expect("addressing");
    let (_, _, peer) = plan.peer_of("dc1-edge", "eth3").expect("north link");
    ping(
        node_namespace(&deployment, "dc1-edge"),
        IpAddr::V4(peer.v4.addr()),
        10,
    )
    .expect("dc1-edge reaches wan-north");
    let started = Instant::now();
    let destroyed = destroy(&lab).expect("destroy");
    let destroyed_in = started.elapsed();
    assert_eq!(destroyed.namespaces_removed.len(), 21);
    assert!(namespaces_with_prefix(&format!("{lab}-")).is_empty());
    println!(
        "ai-wan.clab.yml: deploy {deployed_in:?}, destroy {destroyed_in:?} (21 nodes, 27 links)"
    );
    assert!(
        deployed_in < Duration::from_secs(30),
        "deploy took {deployed_in:?}"
    );
    assert!(
        destroyed_in < Duration::from_secs(30),
        "destroy took {destroyed_in:?}"
    );
}
