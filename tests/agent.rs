//! `aiwan agent` end to end: the real binary programming a scratch network
//! namespace (`--netns`), driven over its unix socket through gRPC, checked
//! with `ip` in the namespace. Needs root and `ip netns`; skipped with a
//! reason elsewhere, failed under `AIWAN_REQUIRE_LAB=1`.
//!
//! The lab: namespace `node` (the router the agent programs) with `veth1`
//! (10.0.1.1/24, fc00:1::1/64) and `veth2` (10.0.2.1/24, fc00:2::1/64),
//! whose peers sit in namespace `peer` as 10.0.1.2 and 10.0.2.2 (fc00:1::2,
//! fc00:2::2), so that the routes' gateways answer and packets really
//! cross the veths.

mod support;

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aiwan_api::agent::v1 as pb;
use aiwan_api::agent::v1::agent_service_client::AgentServiceClient;
use aiwan_controller::agent::AgentClient;
use aiwan_controller::agent::ClientTls;
use aiwan_controller::certs::{self, Role};
use aiwan_controller::lab_cli::agent_command;
use aiwan_controller::southbound::Driver;
use aiwan_controller::southbound::agents::{AgentDriver, AgentEndpoints};
use serde_json::Value;
use support::sh;
use tokio_stream::StreamExt;
use tonic::transport::Channel;

/// Two scratch namespaces joined by two veth pairs, deleted on drop (the
/// veths go with them).
struct Lab {
    node: String,
    peer: String,
    dir: tempfile::TempDir,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in [&self.node, &self.peer] {
            let _ = Command::new("ip")
                .args(["netns", "del", ns.as_str()])
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Lab {
    fn new(test: &str) -> Option<Lab> {
        if !nix::unistd::geteuid().is_root() {
            return support::skip(test, "not root");
        }
        let tag = format!("{}-{}", std::process::id(), rand::random::<u16>());
        let lab = Lab {
            node: format!("aiwan-agent-{tag}"),
            peer: format!("aiwan-peer-{tag}"),
            dir: tempfile::tempdir().expect("tempdir"),
        };
        for ns in [&lab.node, &lab.peer] {
            if let Err(e) = sh(&["ip", "netns", "add", ns]) {
                return support::skip(test, &format!("ip netns add failed ({e})"));
            }
        }
        let (n, p) = (lab.node.as_str(), lab.peer.as_str());
        let setup: Vec<Vec<&str>> = vec![
            vec!["ip", "-n", n, "link", "set", "lo", "up"],
            vec!["ip", "-n", p, "link", "set", "lo", "up"],
            vec![
                "ip", "-n", n, "link", "add", "veth1", "type", "veth", "peer", "name", "veth1p",
                "netns", p,
            ],
            vec![
                "ip", "-n", n, "link", "add", "veth2", "type", "veth", "peer", "name", "veth2p",
                "netns", p,
            ],
            vec!["ip", "-n", n, "link", "set", "veth1", "up"],
            vec!["ip", "-n", n, "link", "set", "veth2", "up"],
            vec!["ip", "-n", p, "link", "set", "veth1p", "up"],
            vec!["ip", "-n", p, "link", "set", "veth2p", "up"],
        ];
        // Each end's addresses: (namespace, interface, IPv4, IPv6).
        let addresses = [
            (n, "veth1", "10.0.1.1/24", "fc00:1::1/64"),
            (n, "veth2", "10.0.2.1/24", "fc00:2::1/64"),
            (p, "veth1p", "10.0.1.2/24", "fc00:1::2/64"),
            (p, "veth2p", "10.0.2.2/24", "fc00:2::2/64"),
        ];
        let addressing = addresses.iter().flat_map(|&(ns, dev, v4, v6)| {
            [
                vec!["ip", "-n", ns, "addr", "add", v4, "dev", dev],
                vec!["ip", "-n", ns, "addr", "add", v6, "dev", dev, "nodad"],
            ]
        });
        for cmd in setup.into_iter().chain(addressing) {
            if let Err(e) = sh(&cmd) {
                return support::skip(test, &format!("lab setup failed ({e})"));
            }
        }
        Some(lab)
    }

    /// `ip ARGS` in the node namespace.
    fn ip(&self, args: &[&str]) -> String {
        let mut full = vec!["ip", "-n", self.node.as_str()];
        full.extend_from_slice(args);
        sh(&full).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The routes of `table` in the node namespace, as `ip -j` gives them.
    fn routes(&self, table: &str) -> Vec<Value> {
        let out = self.ip(&["-j", "route", "show", "table", table]);
        if out.trim().is_empty() {
            return Vec::new();
        }
        match serde_json::from_str(&out) {
            Ok(Value::Array(routes)) => routes,
            other => panic!("ip -j route show table {table}: {other:?}"),
        }
    }

    fn route(&self, table: &str, dst: &str) -> Option<Value> {
        self.routes(table).into_iter().find(|r| r["dst"] == dst)
    }

    fn socket(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Sends `count` UDP datagrams of `size` bytes from the node namespace
    /// to `to` (a thread enters the namespace; the test's threads stay).
    fn send_udp(&self, to: &str, count: usize, size: usize) {
        let path = format!("/var/run/netns/{}", self.node);
        let to = to.to_string();
        std::thread::spawn(move || {
            let ns = File::open(&path).expect("open netns");
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            let socket = std::net::UdpSocket::bind("0.0.0.0:0").expect("udp socket");
            let payload = vec![0u8; size];
            for _ in 0..count {
                // The peer has no listener and answers with ICMP; what counts
                // is the datagram leaving through the veth.
                let _ = socket.send_to(&payload, &to);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
        .join()
        .expect("sender thread");
    }
}

/// A running `aiwan agent`, killed on drop; its stderr goes to a file.
struct Agent {
    child: Child,
    socket: PathBuf,
    log: PathBuf,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Agent {
    /// Starts `aiwan-agent --listen unix:SOCKET --netns NS [extra]` (the
    /// `aiwan agent` alias when cargo did not build it beside `aiwan`) and
    /// waits until it answers.
    async fn start(lab: &Lab, name: &str, extra: &[&str]) -> (Agent, AgentServiceClient<Channel>) {
        let socket = lab.socket(&format!("{name}.sock"));
        let log = lab.socket(&format!("{name}.log"));
        let listen = format!("unix:{}", socket.display());
        let child = agent_command(std::path::Path::new(env!("CARGO_BIN_EXE_aiwan")))
            .args(["--listen", &listen, "--netns", &lab.node])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn aiwan agent");
        let mut agent = Agent { child, socket, log };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(status)) = agent.child.try_wait() {
                panic!("aiwan agent exited with {status}: {}", agent.log_text());
            }
            if agent.socket.exists()
                && let Ok(client) = AgentClient::connect(&listen).await
            {
                return (agent, client);
            }
            assert!(
                Instant::now() < deadline,
                "aiwan agent did not answer within 15 s: {}",
                agent.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then the exit status (within 10 s).
    async fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "aiwan agent ignored SIGTERM: {}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn next_hop(gateway: &str, interface: &str, weight: u32) -> pb::NextHop {
    pb::NextHop {
        gateway: gateway.into(),
        interface: interface.into(),
        weight,
    }
}

/// 10.2.0.0/16 in table 20001, 70 % via veth1 and 30 % via veth2.
fn split_70_30() -> pb::NodeState {
    pb::NodeState {
        routes: vec![pb::UcmpRoute {
            prefix: "10.2.0.0/16".into(),
            table: 20001,
            next_hops: vec![
                next_hop("10.0.1.2", "veth1", 70),
                next_hop("10.0.2.2", "veth2", 30),
            ],
        }],
        ..pb::NodeState::default()
    }
}

/// (gateway, dev, weight) of each next hop of an `ip -j` route.
fn hops(route: &Value) -> Vec<(String, String, u64)> {
    assert_eq!(route["protocol"], "170", "{route}");
    route["nexthops"]
        .as_array()
        .unwrap_or_else(|| panic!("not multipath: {route}"))
        .iter()
        .map(|h| {
            (
                h["gateway"].as_str().unwrap_or_default().to_string(),
                h["dev"].as_str().unwrap_or_default().to_string(),
                h["weight"].as_u64().unwrap_or(1),
            )
        })
        .collect()
}

fn expected_hops() -> Vec<(String, String, u64)> {
    vec![
        ("10.0.1.2".into(), "veth1".into(), 70),
        ("10.0.2.2".into(), "veth2".into(), 30),
    ]
}

fn tx_bytes(update: &pb::StreamCountersResponse, name: &str) -> u64 {
    let update = update.update.as_ref().expect("update");
    update
        .interfaces
        .iter()
        .find(|i| i.name == name)
        .unwrap_or_else(|| panic!("{name} not in {update:?}"))
        .tx_bytes
}

fn seconds(ts: &Option<prost_types::Timestamp>) -> f64 {
    let ts = ts.as_ref().expect("time");
    ts.seconds as f64 + f64::from(ts.nanos) / 1e9
}

#[tokio::test]
async fn agent_applies_repairs_drift_refuses_old_generations_and_streams_counters() {
    let test = "agent_applies_repairs_drift_refuses_old_generations_and_streams_counters";
    let Some(lab) = Lab::new(test) else {
        return;
    };
    let (mut agent, mut client) = Agent::start(&lab, "agent", &[]).await;

    // Nothing held yet.
    let state = client
        .get_state(pb::GetStateRequest {})
        .await
        .expect("GetState")
        .into_inner();
    assert_eq!(state.desired_generation, 0);
    assert!(!state.in_sync);

    let mut drift = client
        .watch_drift(pb::WatchDriftRequest {})
        .await
        .expect("WatchDrift")
        .into_inner();

    // A 70/30 split, as the kernel holds it.
    let applied = client
        .apply_state(pb::ApplyStateRequest {
            generation: 5,
            state: Some(split_70_30()),
            epoch: 0,
        })
        .await
        .expect("ApplyState")
        .into_inner();
    assert_eq!(applied.generation, 5);
    let report = applied.report.expect("report");
    assert_eq!((report.created, report.deleted), (1, 0));
    let route = lab.route("20001", "10.2.0.0/16").expect("route installed");
    assert_eq!(hops(&route), expected_hops());

    let state = client
        .get_state(pb::GetStateRequest {})
        .await
        .expect("GetState")
        .into_inner();
    assert_eq!(state.desired_generation, 5);
    assert!(state.in_sync, "{state:?}");
    assert_eq!(state.observed_state, Some(split_70_30()));

    // Deleted by hand: restored within 2 s, and reported.
    lab.ip(&["route", "del", "10.2.0.0/16", "table", "20001"]);
    let deleted = Instant::now();
    let restored = loop {
        if let Some(route) = lab.route("20001", "10.2.0.0/16") {
            break route;
        }
        assert!(
            deleted.elapsed() < Duration::from_secs(2),
            "route not restored within 2 s: {}",
            agent.log_text()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(hops(&restored), expected_hops());
    let event = tokio::time::timeout(Duration::from_secs(2), drift.next())
        .await
        .expect("a drift event within 2 s")
        .expect("stream open")
        .expect("event")
        .event
        .expect("event");
    assert_eq!(event.kind(), pb::DriftKind::Deleted, "{event:?}");
    assert_eq!(event.object, "route 10.2.0.0/16 table 20001");
    assert_eq!(event.outcome(), pb::RepairOutcome::Repaired, "{event:?}");
    assert_eq!(event.generation, 5);
    assert_eq!(event.repair.expect("repair").created, 1);
    assert!(event.time.is_some());

    // An older generation is refused, naming both; the held one may be sent
    // again with the same state (nothing to do), not with another.
    let refused = client
        .apply_state(pb::ApplyStateRequest {
            generation: 4,
            state: Some(pb::NodeState::default()),
            epoch: 0,
        })
        .await
        .expect_err("older generation");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(
        refused.message().contains("generation: 4") && refused.message().contains("generation 5"),
        "{refused:?}"
    );
    assert!(lab.route("20001", "10.2.0.0/16").is_some());
    let again = client
        .apply_state(pb::ApplyStateRequest {
            generation: 5,
            state: Some(split_70_30()),
            epoch: 0,
        })
        .await
        .expect("same generation again")
        .into_inner()
        .report
        .expect("report");
    assert_eq!((again.created, again.replaced, again.unchanged), (0, 0, 1));
    let changed = client
        .apply_state(pb::ApplyStateRequest {
            generation: 5,
            state: Some(pb::NodeState::default()),
            epoch: 0,
        })
        .await
        .expect_err("same generation, other state");
    assert_eq!(changed.code(), tonic::Code::FailedPrecondition);
    // A bad field is named, and nothing changes.
    let mut bad = split_70_30();
    bad.routes[0].next_hops[1].gateway = "10.0.2.x".into();
    let invalid = client
        .apply_state(pb::ApplyStateRequest {
            generation: 6,
            state: Some(bad),
            epoch: 0,
        })
        .await
        .expect_err("bad gateway");
    assert_eq!(invalid.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        invalid.message(),
        r#"state.routes[0].next_hops[1].gateway: "10.0.2.x" is not an address"#
    );

    // Counters: the interval is checked, then samples come every 100 ms and
    // show the datagrams sent across veth1.
    let too_fast = client
        .stream_counters(pb::StreamCountersRequest {
            interval: Some(prost_types::Duration {
                seconds: 0,
                nanos: 50_000_000,
            }),
        })
        .await
        .expect_err("50 ms");
    assert_eq!(too_fast.code(), tonic::Code::InvalidArgument);
    assert!(too_fast.message().starts_with("interval: "), "{too_fast:?}");
    let mut counters = client
        .stream_counters(pb::StreamCountersRequest {
            interval: Some(prost_types::Duration {
                seconds: 0,
                nanos: 100_000_000,
            }),
        })
        .await
        .expect("StreamCounters")
        .into_inner();
    let first = counters.next().await.expect("open").expect("update");
    let before = tx_bytes(&first, "veth1");
    lab.send_udp("10.0.1.2:9", 20, 500);
    let sent = Instant::now();
    let mut previous = seconds(&first.update.as_ref().expect("update").time);
    let mut samples = 0;
    loop {
        let update = tokio::time::timeout(Duration::from_secs(2), counters.next())
            .await
            .expect("a sample within 2 s")
            .expect("open")
            .expect("update");
        let time = seconds(&update.update.as_ref().expect("update").time);
        // 100 ms apart, give or take how long each read took.
        assert!(
            time - previous >= 0.05,
            "samples {:.3} s apart",
            time - previous
        );
        previous = time;
        samples += 1;
        if tx_bytes(&update, "veth1") >= before + 20 * 500 {
            break;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(3),
            "veth1 tx_bytes stayed at {} after 20 datagrams of 500 bytes ({samples} samples)",
            tx_bytes(&update, "veth1")
        );
    }

    // SIGTERM: a clean exit, the socket removed, the repair logged.
    let status = agent.terminate().await;
    let log = agent.log_text();
    assert!(status.success(), "exit {status}: {log}");
    assert!(!agent.socket.exists());
    assert!(
        log.contains("drift repaired") && log.contains("route 10.2.0.0/16 table 20001"),
        "{log}"
    );
    // The agent leaves the forwarding state in place when it stops.
    assert!(lab.route("20001", "10.2.0.0/16").is_some());
}

#[tokio::test]
async fn agent_purge_at_start_removes_only_aiwan_leftovers() {
    let test = "agent_purge_at_start_removes_only_aiwan_leftovers";
    let Some(lab) = Lab::new(test) else {
        return;
    };
    // An aiwan leftover (protocol 170) and someone else's route, in the same
    // table.
    lab.ip(&[
        "route",
        "add",
        "10.5.0.0/16",
        "table",
        "20001",
        "proto",
        "170",
        "via",
        "10.0.1.2",
    ]);
    lab.ip(&[
        "route",
        "add",
        "10.6.0.0/16",
        "table",
        "20001",
        "proto",
        "static",
        "via",
        "10.0.2.2",
    ]);

    // Without --purge the leftover stays, and is reported.
    let (mut agent, mut client) = Agent::start(&lab, "keep", &[]).await;
    let state = client
        .get_state(pb::GetStateRequest {})
        .await
        .expect("GetState")
        .into_inner();
    let observed = state.observed_state.expect("observed");
    assert_eq!(observed.routes.len(), 1, "{observed:?}");
    assert_eq!(observed.routes[0].prefix, "10.5.0.0/16");
    assert_eq!(state.desired_generation, 0);
    assert!(!state.in_sync);
    assert!(agent.terminate().await.success());
    assert!(lab.route("20001", "10.5.0.0/16").is_some());

    // With --purge it goes; the static route survives.
    let (mut agent, mut client) = Agent::start(&lab, "purge", &["--purge"]).await;
    let state = client
        .get_state(pb::GetStateRequest {})
        .await
        .expect("GetState")
        .into_inner();
    assert_eq!(state.observed_state, Some(pb::NodeState::default()));
    assert!(lab.route("20001", "10.5.0.0/16").is_none());
    let other = lab
        .route("20001", "10.6.0.0/16")
        .expect("static route kept");
    assert_eq!(other["protocol"], "static", "{other}");
    assert!(agent.terminate().await.success());
}

#[test]
fn agent_refuses_to_listen_beyond_loopback() {
    // No root needed: the address is refused before anything is opened.
    // The small binary (when cargo built it beside `aiwan`) and the alias.
    let aiwan = std::path::Path::new(env!("CARGO_BIN_EXE_aiwan"));
    let mut alias = Command::new(aiwan);
    alias.arg("agent");
    for mut agent in [agent_command(aiwan), alias] {
        let out = agent
            .args(["--listen", "0.0.0.0:50061"])
            .output()
            .expect("run the agent");
        assert_eq!(out.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("--listen") && stderr.contains("no authentication"),
            "{stderr}"
        );
    }
    let help = agent_command(aiwan)
        .arg("--help")
        .output()
        .expect("aiwan-agent --help");
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("loopback") && help.contains("--netns"),
        "{help}"
    );
}

/// Writes a certificate and key pair as NAME.pem and NAME.key in `dir`;
/// their paths.
fn write_pair(dir: &std::path::Path, name: &str, issued: &certs::Issued) -> (PathBuf, PathBuf) {
    let (cert, key) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&cert, &issued.cert_pem).expect("write cert");
    std::fs::write(&key, &issued.key_pem).expect("write key");
    (cert, key)
}

fn client_tls(ca: &certs::Issued, client: &certs::Issued) -> ClientTls {
    ClientTls {
        ca_pem: ca.cert_pem.clone().into_bytes(),
        cert_pem: client.cert_pem.clone().into_bytes(),
        key_pem: client.key_pem.clone().into_bytes(),
    }
}

/// GetState through `endpoint` with `tls`: refused at connect or at the call.
async fn get_state(
    endpoint: &str,
    tls: Option<&ClientTls>,
) -> Result<pb::GetStateResponse, String> {
    let mut client = AgentClient::connect_with(endpoint, tls)
        .await
        .map_err(|e| e.to_string())?;
    client
        .get_state(pb::GetStateRequest {})
        .await
        .map(|r| r.into_inner())
        .map_err(|status| format!("{:?}: {}", status.code(), status.message()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_beyond_loopback_only_with_mutual_tls() {
    let Some(lab) = Lab::new("agent_beyond_loopback_only_with_mutual_tls") else {
        return;
    };
    let days = certs::Validity::days_from_now(1);
    let ca = certs::new_ca("test CA", days).expect("CA");
    let agent_cert =
        certs::issue(&ca, "r1", &["127.0.0.1".into()], Role::Agent, days).expect("agent");
    let controller = certs::issue(&ca, "controller", &[], Role::Controller, days).expect("client");
    let other_ca = certs::new_ca("another CA", days).expect("other CA");
    let stranger =
        certs::issue(&other_ca, "controller", &[], Role::Controller, days).expect("stranger");
    let now = time::OffsetDateTime::now_utc();
    let lapsed = certs::Validity {
        not_before: now - time::Duration::days(10),
        not_after: now - time::Duration::days(1),
    };
    let expired = certs::issue(&ca, "controller", &[], Role::Controller, lapsed).expect("expired");
    let dir = lab.socket("tls");
    std::fs::create_dir_all(&dir).expect("tls dir");
    let (cert, key) = write_pair(&dir, "r1", &agent_cert);
    let (ca_file, _) = write_pair(&dir, "ca", &ca);

    // Any address (not loopback), with mutual TLS.
    let port = support::free_port().port();
    let log = lab.socket("tls-agent.log");
    let child = agent_command(std::path::Path::new(env!("CARGO_BIN_EXE_aiwan")))
        .args(["--listen", &format!("0.0.0.0:{port}"), "--netns", &lab.node])
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .arg("--client-ca")
        .arg(&ca_file)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(&log).expect("log file"))
        .spawn()
        .expect("spawn the agent");
    let mut agent = Agent {
        child,
        socket: lab.socket("none.sock"),
        log,
    };
    let endpoint = format!("https://127.0.0.1:{port}");
    let good = client_tls(&ca, &controller);
    let deadline = Instant::now() + Duration::from_secs(15);
    while get_state(&endpoint, Some(&good)).await.is_err() {
        if let Ok(Some(status)) = agent.child.try_wait() {
            panic!("the agent exited with {status}: {}", agent.log_text());
        }
        assert!(
            Instant::now() < deadline,
            "the agent did not answer over TLS within 15 s: {}",
            agent.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The controller's driver applies through it.
    let driver = AgentDriver::new(
        AgentEndpoints {
            by_node: [("r1".to_string(), endpoint.clone())].into(),
            template: None,
            tls: Some(good.clone()),
        },
        Duration::from_secs(5),
    );
    let desired =
        aiwan_controller::agent::convert::node_state_from_pb("state", Some(&split_70_30()))
            .expect("a valid state");
    driver
        .apply(
            "r1",
            aiwan_controller::agent::Version {
                epoch: 1,
                generation: 1,
            },
            &desired,
        )
        .await
        .expect("applied over mutual TLS");
    let route = lab.route("20001", "10.2.0.0/16").expect("the route");
    assert_eq!(hops(&route), expected_hops());
    assert_eq!(
        driver
            .observe("r1")
            .await
            .expect("observed")
            .version
            .generation,
        1
    );

    // Refused: a client certificate from another CA, an expired one, none,
    // and plain text.
    let other = get_state(&endpoint, Some(&client_tls(&ca, &stranger))).await;
    assert!(other.is_err(), "another CA's client got in: {other:?}");
    let lapsed = get_state(&endpoint, Some(&client_tls(&ca, &expired))).await;
    assert!(lapsed.is_err(), "an expired client got in: {lapsed:?}");
    let anonymous = {
        let config = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(&ca.cert_pem));
        match tonic::transport::Endpoint::from_shared(endpoint.clone())
            .expect("endpoint")
            .tls_config(config)
            .expect("tls")
            .connect()
            .await
        {
            Ok(channel) => AgentServiceClient::new(channel)
                .get_state(pb::GetStateRequest {})
                .await
                .map(|_| ())
                .map_err(|s| s.to_string()),
            Err(error) => Err(error.to_string()),
        }
    };
    assert!(anonymous.is_err(), "a client without a certificate got in");
    let plain = get_state(&format!("http://127.0.0.1:{port}"), None).await;
    assert!(plain.is_err(), "a plain-text client got in: {plain:?}");
    for (who, refused) in [
        ("another CA", &other),
        ("expired", &lapsed),
        (
            "no certificate",
            &anonymous.map(|_| pb::GetStateResponse::default()),
        ),
        ("plain text", &plain),
    ] {
        eprintln!(
            "{who}: {}",
            refused.as_ref().err().map_or("", String::as_str)
        );
    }
    // And the one allowed in still is.
    get_state(&endpoint, Some(&good))
        .await
        .expect("still served");
    assert!(agent.terminate().await.success());
}

/// The same kernel state as `split_70_30` with the weights swapped.
fn split_30_70() -> pb::NodeState {
    let mut state = split_70_30();
    for hop in &mut state.routes[0].next_hops {
        hop.weight = 100 - hop.weight;
    }
    state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_with_a_fresh_database_takes_over_and_the_old_one_is_told() {
    let test = "a_controller_with_a_fresh_database_takes_over_and_the_old_one_is_told";
    let Some(lab) = Lab::new(test) else {
        return;
    };
    let (mut agent, _client) = Agent::start(&lab, "epochs", &[]).await;
    let driver = AgentDriver::new(
        AgentEndpoints {
            by_node: [("r1".to_string(), format!("unix:{}", agent.socket.display()))].into(),
            template: None,
            tls: None,
        },
        Duration::from_secs(5),
    );
    let state = |pb: pb::NodeState| {
        aiwan_controller::agent::convert::node_state_from_pb("state", Some(&pb)).expect("state")
    };
    let final_of = aiwan_controller::southbound::reconcile::final_generation;
    let version = |epoch: u64, plan: i64| aiwan_controller::agent::Version {
        epoch,
        generation: final_of(plan),
    };
    // The first controller's plan 40 (epoch 1000).
    driver
        .apply("r1", version(1000, 40), &state(split_70_30()))
        .await
        .expect("the first controller's plan");
    // Its database is lost: the next one starts at plan 1, later (epoch
    // 2000), and is taken.
    driver
        .apply("r1", version(2000, 1), &state(split_30_70()))
        .await
        .expect("the second controller takes over");
    let observed = driver.observe("r1").await.expect("observed");
    assert_eq!(observed.version, version(2000, 1));
    let route = lab.route("20001", "10.2.0.0/16").expect("the route");
    let weights: Vec<u64> = hops(&route).iter().map(|h| h.2).collect();
    assert_eq!(weights, vec![30, 70], "{route}");
    // The first one, still running, is told it was taken over; the kernel
    // keeps the second one's state.
    let error = driver
        .apply("r1", version(1000, 41), &state(split_70_30()))
        .await
        .expect_err("an older epoch");
    assert!(
        matches!(
            error,
            aiwan_controller::southbound::DriverError::Superseded { .. }
        ),
        "{error}"
    );
    assert!(error.to_string().contains("taken it over"), "{error}");
    let route = lab.route("20001", "10.2.0.0/16").expect("the route");
    let weights: Vec<u64> = hops(&route).iter().map(|h| h.2).collect();
    assert_eq!(weights, vec![30, 70], "{route}");
    assert!(agent.terminate().await.success());
}

/// One diff engine: over the shared cases, the kernel agent (its `Kernel`
/// in the lab's namespace) and the simulated dataplane carry out the same
/// changes in the same phases, the ones the golden file
/// (`agent/tests/golden/diff.txt`) holds.
#[tokio::test]
async fn the_simulated_dataplane_and_the_kernel_take_the_same_steps() {
    use aiwan_controller::agent::Version;
    use aiwan_controller::agent::diff::{diff, shared_cases};
    let test = "the_simulated_dataplane_and_the_kernel_take_the_same_steps";
    let Some(lab) = Lab::new(test) else {
        return;
    };
    let kernel = aiwan_controller::agent::Kernel::in_namespace(&lab.node).expect("kernel");
    let simulated = aiwan_controller::southbound::simulated::SimulatedDataplane::new(
        aiwan_planner::Topology::default(),
    );
    let mut generation = 0;
    for case in shared_cases() {
        kernel
            .apply(&case.observed)
            .await
            .expect("the observed state");
        let (_, by_kernel) = kernel
            .apply_steps(&case.desired)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        for state in [&case.observed, &case.desired] {
            generation += 1;
            let version = Version {
                epoch: 1,
                generation,
            };
            simulated
                .apply("node", version, state)
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        }
        let by_simulator = simulated.last_diff("node").expect("applied");
        assert_eq!(
            by_kernel.to_string(),
            by_simulator.to_string(),
            "{}: the kernel and the simulated dataplane differ",
            case.name
        );
        assert_eq!(
            by_kernel,
            diff(&case.observed, &case.desired),
            "{}",
            case.name
        );
        assert_eq!(
            kernel.observe().await.expect("observe"),
            case.desired.normalized(),
            "{}: the kernel holds the desired state",
            case.name
        );
    }
    kernel.purge().await.expect("purge");
}
