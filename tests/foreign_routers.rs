//! Routers aiwan did not build: a four-router diamond made by hand in
//! network namespaces with `ip`, numbered and named as an operator might
//! (`tests/fixtures/foreign-diamond.clab.yml` describes it and says how),
//! one `aiwan-agent` per router, and the `aiwan controller` binary with
//! the agents driver. The controller finds every next hop from what the
//! agents report; nothing of `aiwan lab`'s addressing is involved.
//!
//! Checked: the link whose ends disagree is reported unresolved by name
//! and never pushed; the plan is applied, its 70/30 split in the kernel
//! with the hand-made gateways; iperf3 traffic from h1 to h4 divides
//! about 70/30 over r1's two uplinks.
//!
//! Needs root, iproute2 and iperf3; skipped with a reason elsewhere,
//! failed under `AIWAN_REQUIRE_LAB=1`.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aiwan_api::v1 as pb;
use aiwan_controller::agent::AgentClient;
use aiwan_controller::lab_cli::agent_command;
use serde_json::Value;
use support::{
    ADMIN_SECRET, AgentsController, Clients, apply_plan, create_job, sh, site_job, wait_for_plan,
};

const RECONCILE_INTERVAL: Duration = Duration::from_millis(500);
const ROUTERS: [&str; 4] = ["r1", "r2", "r3", "r4"];
const HOSTS: [&str; 2] = ["h1", "h4"];

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/foreign-diamond.clab.yml")
}

/// The hand-made network and its agents, all gone on drop.
struct Network {
    prefix: String,
    dir: tempfile::TempDir,
    agents: Vec<Child>,
}

impl Drop for Network {
    fn drop(&mut self) {
        for agent in &mut self.agents {
            let _ = agent.kill();
            let _ = agent.wait();
        }
        for node in ROUTERS.iter().chain(&HOSTS) {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.ns(node)])
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Network {
    fn ns(&self, node: &str) -> String {
        format!("{}-{node}", self.prefix)
    }

    /// `ip -n NODE ARGS`.
    fn ip(&self, node: &str, args: &[&str]) -> Result<String, String> {
        let ns = self.ns(node);
        let mut full = vec!["ip", "-n", ns.as_str()];
        full.extend_from_slice(args);
        sh(&full)
    }

    /// Sets `key=value` under /proc/sys in NODE's namespace (no sysctl
    /// binary needed).
    fn sysctl(&self, node: &str, setting: &str) -> Result<String, String> {
        let (key, value) = setting.split_once('=').expect("key=value");
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        let ns = self.ns(node);
        let script = format!("echo {value} > {path}");
        sh(&["ip", "netns", "exec", &ns, "sh", "-c", &script])
    }

    /// Builds the network of the fixture's comment, by hand.
    fn build(test: &str) -> Option<Network> {
        if let Some(reason) = support::missing_lab_prerequisite(false) {
            return support::skip(test, &reason);
        }
        let network = Network {
            prefix: format!("fr{}", std::process::id() % 100_000),
            dir: tempfile::tempdir().expect("tempdir"),
            agents: Vec::new(),
        };
        if let Err(e) = network.wire() {
            panic!("building the hand-made network failed: {e}");
        }
        Some(network)
    }

    fn wire(&self) -> Result<(), String> {
        for node in ROUTERS.iter().chain(&HOSTS) {
            sh(&["ip", "netns", "add", &self.ns(node)])?;
            self.ip(node, &["link", "set", "lo", "up"])?;
        }
        for router in ROUTERS {
            self.sysctl(router, "net.ipv4.ip_forward=1")?;
            self.sysctl(router, "net.ipv6.conf.all.forwarding=1")?;
            // Flows, not packets, spread over the weights (by ports).
            self.sysctl(router, "net.ipv4.fib_multipath_hash_policy=1")?;
        }
        // (a, a's interface, b, b's interface, a's addresses, b's addresses)
        type Wire = (
            &'static str,
            &'static str,
            &'static str,
            &'static str,
            &'static [&'static str],
            &'static [&'static str],
        );
        let wires: [Wire; 7] = [
            (
                "r1",
                "wan-a",
                "r2",
                "west",
                &["172.16.12.1/30", "2001:db8:12::1/126"],
                &["172.16.12.2/30", "2001:db8:12::2/126"],
            ),
            (
                "r1",
                "wan-b",
                "r3",
                "west",
                &["192.168.13.10/24"],
                &["192.168.13.20/24"],
            ),
            (
                "r2",
                "east",
                "r4",
                "north",
                &["172.16.24.0/31", "2001:db8:24::/127"],
                &["172.16.24.1/31", "2001:db8:24::1/127"],
            ),
            (
                "r3",
                "east",
                "r4",
                "south",
                &["172.16.34.1/30"],
                &["172.16.34.2/30"],
            ),
            (
                "r2",
                "cross",
                "r3",
                "cross",
                &["172.16.99.1/30"],
                &["172.16.98.1/30"],
            ),
            (
                "r1",
                "lan0",
                "h1",
                "eth0",
                &["192.0.2.1/30", "2001:db8:1::1/126"],
                &["192.0.2.2/30", "2001:db8:1::2/126"],
            ),
            (
                "r4",
                "lan0",
                "h4",
                "eth0",
                &["192.0.2.5/30", "2001:db8:4::1/126"],
                &["192.0.2.6/30", "2001:db8:4::2/126"],
            ),
        ];
        for (a, ai, b, bi, a_addresses, b_addresses) in wires {
            let b_ns = self.ns(b);
            self.ip(
                a,
                &[
                    "link", "add", ai, "type", "veth", "peer", "name", bi, "netns", &b_ns,
                ],
            )?;
            for (node, interface, addresses) in [(a, ai, a_addresses), (b, bi, b_addresses)] {
                for address in addresses {
                    // No duplicate address detection: the addresses are
                    // usable at once.
                    let mut args = vec!["addr", "add", address, "dev", interface];
                    if address.contains(':') {
                        args.push("nodad");
                    }
                    self.ip(node, &args)?;
                }
                self.ip(node, &["link", "set", interface, "up"])?;
            }
        }
        // The hosts: their prefixes' addresses on lo, a default route to
        // their router.
        self.ip("h1", &["addr", "add", "10.1.1.1/32", "dev", "lo"])?;
        self.ip("h1", &["route", "add", "default", "via", "192.0.2.1"])?;
        self.ip(
            "h1",
            &["-6", "route", "add", "default", "via", "2001:db8:1::1"],
        )?;
        self.ip("h4", &["addr", "add", "10.4.1.1/32", "dev", "lo"])?;
        self.ip("h4", &["addr", "add", "2001:db8:41::1/128", "dev", "lo"])?;
        self.ip("h4", &["route", "add", "default", "via", "192.0.2.5"])?;
        self.ip(
            "h4",
            &["-6", "route", "add", "default", "via", "2001:db8:4::1"],
        )?;
        Ok(())
    }

    fn socket(&self, router: &str) -> PathBuf {
        self.dir.path().join(format!("{router}.sock"))
    }

    /// One `aiwan-agent` per router, in its namespace, on a unix socket;
    /// returns once each answers.
    async fn start_agents(&mut self) {
        for router in ROUTERS {
            let listen = format!("unix:{}", self.socket(router).display());
            let log = std::fs::File::create(self.dir.path().join(format!("{router}.log")))
                .expect("agent log");
            let child = agent_command(Path::new(env!("CARGO_BIN_EXE_aiwan")))
                .args(["--listen", &listen, "--netns", &self.ns(router)])
                .env("RUST_LOG", "info")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("spawn aiwan-agent");
            self.agents.push(child);
            let deadline = Instant::now() + Duration::from_secs(15);
            while AgentClient::connect(&listen).await.is_err() {
                assert!(
                    Instant::now() < deadline,
                    "the agent of {router} did not answer in 15 s: {}",
                    std::fs::read_to_string(self.dir.path().join(format!("{router}.log")))
                        .unwrap_or_default()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    /// aiwan's routes in NODE's main table (`-4` or `-6`), as `ip -j`
    /// gives them.
    fn aiwan_routes(&self, node: &str, family: &str) -> Vec<Value> {
        let out = self
            .ip(node, &["-j", family, "route", "show", "proto", "170"])
            .unwrap_or_else(|e| panic!("{e}"));
        serde_json::from_str::<Value>(&out)
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
    }

    /// (dev, gateway, weight) of each next hop of aiwan's route to `dst`.
    fn hops(&self, node: &str, family: &str, dst: &str) -> Vec<(String, String, u64)> {
        let routes = self.aiwan_routes(node, family);
        let Some(route) = routes.iter().find(|r| r["dst"] == dst) else {
            return Vec::new();
        };
        let hop = |h: &Value| {
            (
                h["dev"].as_str().unwrap_or_default().to_string(),
                h["gateway"].as_str().unwrap_or_default().to_string(),
                h["weight"].as_u64().unwrap_or(1),
            )
        };
        match route["nexthops"].as_array() {
            Some(hops) => hops.iter().map(hop).collect(),
            None => vec![hop(route)],
        }
    }

    fn tx_bytes(&self, node: &str, interface: &str) -> u64 {
        let out = self
            .ip(node, &["-j", "-s", "link", "show", "dev", interface])
            .unwrap_or_else(|e| panic!("{e}"));
        let links: Value = serde_json::from_str(&out).expect("ip -j link");
        links[0]["stats64"]["tx"]["bytes"]
            .as_u64()
            .unwrap_or_else(|| panic!("no tx bytes for {node}:{interface}"))
    }

    /// Two iperf3 UDP runs of 128 flows each from h1 (10.1.1.1) to h4
    /// (10.4.1.1), 2 Mbit/s a flow for 4 s.
    async fn traffic(&self) {
        let (h1, h4) = (self.ns("h1"), self.ns("h4"));
        let servers: Vec<Child> = ["5201", "5203"]
            .iter()
            .map(|port| {
                Command::new("ip")
                    .args(["netns", "exec", &h4, "iperf3", "-s", "-1", "-B", "10.4.1.1"])
                    .args(["-p", port])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("iperf3 server")
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let clients: Vec<Child> = ["5201", "5203"]
            .iter()
            .map(|port| {
                Command::new("ip")
                    .args([
                        "netns", "exec", &h1, "iperf3", "-c", "10.4.1.1", "-B", "10.1.1.1",
                    ])
                    .args([
                        "-u", "-l", "1200", "-b", "2M", "-P", "128", "-t", "4", "-p", port,
                    ])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("iperf3 client")
            })
            .collect();
        for mut child in clients.into_iter().chain(servers) {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                match child.try_wait() {
                    Ok(Some(_)) => break,
                    _ if Instant::now() > deadline => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                    _ => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        }
    }
}

/// The stored topology's links by name, as GetTopology gives them.
async fn links(clients: &mut Clients) -> Vec<pb::Link> {
    clients
        .topology
        .get_topology(pb::GetTopologyRequest {})
        .await
        .expect("get topology")
        .into_inner()
        .topology
        .expect("topology")
        .links
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_programs_routers_numbered_by_someone_else() {
    let test = "the_controller_programs_routers_numbered_by_someone_else";
    let Some(mut network) = Network::build(test) else {
        return;
    };
    network.start_agents().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let template = format!("unix:{}/{{node}}.sock", network.dir.path().display());
    let log = dir.path().join("controller.log");
    let controller = AgentsController::spawn(
        dir.path(),
        &template,
        RECONCILE_INTERVAL,
        support::free_port(),
        "controller.log",
    )
    .await;
    let mut clients = Clients::connect(controller.addr, Some(ADMIN_SECRET)).await;
    let topology = aiwan_planner::formats::clab::load_clab(&fixture()).expect("fixture");
    clients
        .topology
        .import_topology(pb::ImportTopologyRequest {
            topology: Some(aiwan_controller::convert::topology_to_pb(&topology, 0, 0)),
        })
        .await
        .expect("import");

    // 1. The cross link is reported unresolved, both ways, by name and
    // why; every other link resolves (once the routers' IPv6 link-local
    // addresses are up, which the agents report a moment later).
    let expected = vec!["links/r2:cross", "links/r3:cross"];
    let deadline = Instant::now() + Duration::from_secs(15);
    let unresolved = loop {
        let unresolved: Vec<(String, String)> = links(&mut clients)
            .await
            .into_iter()
            .filter(|l| !l.unresolved.is_empty())
            .map(|l| (l.name, l.unresolved))
            .collect();
        if unresolved.iter().map(|(name, _)| name).eq(&expected) {
            break unresolved;
        }
        assert!(
            Instant::now() < deadline,
            "links unresolved after 15 s: {unresolved:?}, expected {expected:?}\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        unresolved
            .iter()
            .all(|(_, why)| why.contains("no IPv4 next hop") && why.contains("share no subnet")),
        "{unresolved:?}"
    );

    // 2. A 900M demand west to east, planned around the cross link: split
    // 70/30 at r1 over the hand-made gateways, IPv4 and IPv6 (link-local
    // towards r3).
    create_job(
        &mut clients,
        "train-1",
        site_job(pb::TrafficClass::AiSync, "west", "east", 900_000_000),
    )
    .await;
    let version = apply_plan(&mut clients, "first").await;
    wait_for_plan(
        &mut clients,
        version,
        pb::PlanStatus::Applied,
        Duration::from_secs(20),
        &log,
    )
    .await;
    let v4 = network.hops("r1", "-4", "10.4.1.0/24");
    let gateways: Vec<(&str, &str)> = v4
        .iter()
        .map(|(d, g, _)| (d.as_str(), g.as_str()))
        .collect();
    assert_eq!(
        gateways,
        vec![("wan-a", "172.16.12.2"), ("wan-b", "192.168.13.20")],
        "{v4:?}"
    );
    let share = v4[0].2 as f64 / (v4[0].2 + v4[1].2) as f64;
    assert!((0.68..=0.72).contains(&share), "not 70/30: {v4:?}");
    let v6 = network.hops("r1", "-6", "2001:db8:41::/64");
    assert_eq!(v6.len(), 2, "{v6:?}");
    assert_eq!(
        (v6[0].0.as_str(), v6[0].1.as_str()),
        ("wan-a", "2001:db8:12::2")
    );
    assert!(
        v6[1].0 == "wan-b" && v6[1].1.starts_with("fe80::"),
        "IPv6 towards r3 by its link-local address: {v6:?}"
    );
    // Replies find their way: r4 routes west by the hand-made gateways.
    assert!(!network.hops("r4", "-4", "10.1.1.0/24").is_empty());
    // Nothing aiwan installed uses the cross link.
    for router in ["r2", "r3"] {
        for family in ["-4", "-6"] {
            let routes = network.aiwan_routes(router, family);
            assert!(
                !routes.iter().any(|r| r.to_string().contains("\"cross\"")),
                "{router} routes over the unresolved link: {routes:?}"
            );
        }
    }

    // 3. The kernel carries the split: 256 flows from h1 to h4 divide
    // about 70/30 over r1's uplinks.
    let before = (
        network.tx_bytes("r1", "wan-a"),
        network.tx_bytes("r1", "wan-b"),
    );
    network.traffic().await;
    let after = (
        network.tx_bytes("r1", "wan-a"),
        network.tx_bytes("r1", "wan-b"),
    );
    let sent = ((after.0 - before.0) as f64, (after.1 - before.1) as f64);
    let measured = sent.0 / (sent.0 + sent.1);
    assert!(
        sent.0 + sent.1 > 100e6 && (0.6..=0.8).contains(&measured),
        "r1 sent {sent:?} bytes on wan-a/wan-b: share {measured:.3}, not about 70%"
    );
    drop(controller);
}
