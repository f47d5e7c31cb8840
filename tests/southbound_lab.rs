//! The southbound end to end on real routers: a four-router diamond
//! deployed into network namespaces by `aiwan lab up --agents` (one
//! `aiwan agent` per router), driven by the `aiwan controller` binary
//! through its reconcile loop, checked with `ip` in the namespaces, with
//! iperf3 traffic, and through the controller's own telemetry (the
//! agents' interface counters in its store).
//!
//! One test walks the acceptance points in order on one deployment: the
//! plan's 70/30 split in the kernel and in the traffic; a route deleted by
//! hand is restored within two reconcile intervals and a route aiwan does
//! not own is left alone; an agent that is down makes the plan partial and
//! is brought up to date when it is back; the controller killed with
//! SIGKILL in the middle of a push converges after its restart, nothing of
//! the old plan left and nothing of the new one missing.
//!
//! Needs root, iproute2 and iperf3; skipped with a reason elsewhere,
//! failed under `AIWAN_REQUIRE_LAB=1`.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aiwan_api::agent::v1 as agent_pb;
use aiwan_api::v1 as pb;
use aiwan_controller::agent::AgentClient;
use serde_json::Value;
use support::{
    ADMIN_SECRET, AgentsController, Clients, apply_plan as apply, create_job, current_plan,
    free_port, sh, site_job, wait_for_plan,
};

const RECONCILE_INTERVAL: Duration = Duration::from_millis(500);

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/southbound-diamond.clab.yml")
}

fn missing_prerequisite() -> Option<String> {
    support::missing_lab_prerequisite(false)
}

/// One iperf3 UDP run from h1 (from 10.1.1.1).
struct Udp<'a> {
    /// The node the server runs in, and the address it binds.
    server: &'a str,
    address: &'a str,
    port: u16,
    flows: u32,
    /// Per flow, as iperf3 takes it (`2M`, `2500K`).
    rate: &'a str,
    seconds: u32,
    /// The TOS byte (DSCP << 2), when marked.
    tos: Option<u8>,
}

/// The deployed lab and its agents, torn down on drop.
struct Lab {
    name: String,
    /// Agents this test started again, reaped once `lab down` stopped them.
    restarted: std::sync::Mutex<Vec<Child>>,
}

impl Lab {
    fn up(name: &str) -> Lab {
        let file = fixture();
        let out = Command::new(env!("CARGO_BIN_EXE_aiwan"))
            .args(["lab", "up", "--agents", "--force", "--name", name])
            .arg(&file)
            .output()
            .expect("run aiwan lab up");
        assert!(
            out.status.success(),
            "aiwan lab up --agents failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Lab {
            name: name.to_string(),
            restarted: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// `aiwan lab status`: healthy (exit 0), and what it printed.
    fn status(&self) -> (bool, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_aiwan"))
            .args(["lab", "status", "--name", &self.name])
            .output()
            .expect("run aiwan lab status");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    fn namespace(&self, node: &str) -> String {
        format!("{}-{node}", self.name)
    }

    fn dir(&self) -> PathBuf {
        aiwan_controller::lab_cli::agents_dir(&self.name).expect("a valid lab name")
    }

    fn endpoint(&self, node: &str) -> String {
        format!("unix:{}/{node}.sock", self.dir().display())
    }

    fn agent_pid(&self, node: &str) -> nix::unistd::Pid {
        let text = std::fs::read_to_string(self.dir().join(format!("{node}.pid"))).expect("pid");
        nix::unistd::Pid::from_raw(text.trim().parse().expect("pid number"))
    }

    fn signal_agent(&self, node: &str, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(self.agent_pid(node), signal).expect("signal the agent");
    }

    /// Starts `node`'s agent again as `lab up` did (without `--purge`: it
    /// adopts what its predecessor left).
    fn restart_agent(&self, node: &str) {
        use std::os::unix::process::CommandExt as _;
        let socket = self.dir().join(format!("{node}.sock"));
        let log = std::fs::File::create(self.dir().join(format!("{node}.again.log"))).expect("log");
        let child = aiwan_controller::lab_cli::agent_command(std::path::Path::new(env!(
            "CARGO_BIN_EXE_aiwan"
        )))
        .arg("--listen")
        .arg(format!("unix:{}", socket.display()))
        .args(["--netns", &self.namespace(node)])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .process_group(0)
        .spawn()
        .expect("start the agent again");
        std::fs::write(
            self.dir().join(format!("{node}.pid")),
            format!("{}\n", child.id()),
        )
        .expect("pid file");
        self.restarted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(child);
    }

    /// `ip -j ARGS` in `node`'s namespace.
    fn ip_json(&self, node: &str, args: &[&str]) -> Value {
        let ns = self.namespace(node);
        let mut full = vec!["ip", "-j", "-n", ns.as_str()];
        full.extend_from_slice(args);
        let out = sh(&full).unwrap_or_else(|e| panic!("{e}"));
        serde_json::from_str(&out).unwrap_or(Value::Array(Vec::new()))
    }

    /// Runs `runs` side by side; returns how long the clients ran, in
    /// seconds (after their servers had half a second to start).
    async fn udp(&self, runs: &[Udp<'_>]) -> f64 {
        let servers: Vec<Child> = runs
            .iter()
            .map(|run| {
                Command::new("ip")
                    .args(["netns", "exec", &self.namespace(run.server)])
                    .args(["iperf3", "-s", "-1", "-B", run.address])
                    .args(["-p", &run.port.to_string()])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("iperf3 server")
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let started = Instant::now();
        let clients: Vec<_> = runs
            .iter()
            .map(|run| {
                let mut args: Vec<String> = [
                    "ip",
                    "netns",
                    "exec",
                    &self.namespace("h1"),
                    "iperf3",
                    "-c",
                    run.address,
                    "-B",
                    "10.1.1.1",
                    "-u",
                    "-l",
                    "1200",
                    "-b",
                    run.rate,
                ]
                .iter()
                .map(|arg| arg.to_string())
                .collect();
                args.extend(["-p".into(), run.port.to_string()]);
                args.extend(["-P".into(), run.flows.to_string()]);
                args.extend(["-t".into(), run.seconds.to_string()]);
                if let Some(tos) = run.tos {
                    args.extend(["-S".into(), tos.to_string()]);
                }
                tokio::task::spawn_blocking(move || {
                    let args: Vec<&str> = args.iter().map(String::as_str).collect();
                    sh(&args)
                })
            })
            .collect();
        let mut failures = Vec::new();
        for client in clients {
            if let Err(error) = client.await.expect("iperf3 client task") {
                failures.push(error);
            }
        }
        let seconds = started.elapsed().as_secs_f64();
        for mut server in servers {
            if !failures.is_empty() {
                let _ = server.kill();
            }
            let _ = server.wait();
        }
        assert!(failures.is_empty(), "iperf3 failed: {failures:?}");
        seconds
    }

    /// Packets dropped by htb class `handle` on `node`'s `interface`, from
    /// `tc -s class show` (which has no JSON output for classes).
    /// An htb class's statistics: packets dropped, and times it borrowed
    /// from its parent.
    fn class_stats(&self, node: &str, interface: &str, handle: &str) -> (u64, u64) {
        let ns = self.namespace(node);
        let out = sh(&["tc", "-s", "-n", &ns, "class", "show", "dev", interface])
            .unwrap_or_else(|e| panic!("{e}"));
        let block: Vec<&str> = out
            .lines()
            .skip_while(|line| !line.starts_with(&format!("class htb {handle} ")))
            .take_while({
                let mut first = true;
                move |line| std::mem::take(&mut first) || !line.starts_with("class ")
            })
            .collect();
        if block.is_empty() {
            panic!("{node} {interface} has no class {handle}: {out}");
        }
        let number_after = |marker: &str| -> u64 {
            block
                .iter()
                .find_map(|line| line.split(marker).nth(1))
                .and_then(|rest| rest.split([',', ' ']).find(|w| !w.is_empty()))
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or_else(|| panic!("no {marker:?} in {block:?}"))
        };
        (number_after("(dropped "), number_after("borrowed: "))
    }

    /// The next hops (device, weight) of aiwan's route to `prefix` in the
    /// main table of `node`.
    fn route_hops(&self, node: &str, prefix: &str) -> Vec<(String, u64)> {
        let routes = self.ip_json(node, &["route", "show", prefix, "proto", "170"]);
        let Some(route) = routes.as_array().and_then(|r| r.first()) else {
            return Vec::new();
        };
        match route["nexthops"].as_array() {
            Some(hops) => hops
                .iter()
                .map(|hop| {
                    (
                        hop["dev"].as_str().unwrap_or_default().to_string(),
                        hop["weight"].as_u64().unwrap_or(1),
                    )
                })
                .collect(),
            None => vec![(route["dev"].as_str().unwrap_or_default().to_string(), 1)],
        }
    }

    fn tx_bytes(&self, node: &str, interface: &str) -> u64 {
        let links = self.ip_json(node, &["-s", "link", "show", "dev", interface]);
        links[0]["stats64"]["tx"]["bytes"]
            .as_u64()
            .unwrap_or_else(|| panic!("no tx bytes for {node}:{interface}: {links}"))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // A stopped agent cannot take SIGTERM.
        if let Ok(text) = std::fs::read_to_string(self.dir().join("r2.pid"))
            && let Ok(pid) = text.trim().parse::<i32>()
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGCONT,
            );
        }
        let _ = Command::new(env!("CARGO_BIN_EXE_aiwan"))
            .args(["lab", "down", "--name", &self.name])
            .stdout(Stdio::null())
            .status();
        let restarted = self
            .restarted
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for child in restarted.iter_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // The logs of agents this test started again are its own files in
        // the lab's folder (`lab down` leaves what it did not make): remove
        // them, and the folder once empty.
        if let Ok(entries) = std::fs::read_dir(self.dir()) {
            for entry in entries.flatten() {
                if entry.file_name().to_string_lossy().ends_with(".again.log") {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        let _ = std::fs::remove_dir(self.dir());
    }
}

/// The `eth1` share of a two-way split.
fn share_of(hops: &[(String, u64)], dev: &str) -> f64 {
    let total: u64 = hops.iter().map(|(_, w)| *w).sum();
    let part: u64 = hops.iter().filter(|(d, _)| d == dev).map(|(_, w)| *w).sum();
    part as f64 / total.max(1) as f64
}

/// Starts `aiwan controller` with the agents driver on the lab's agents.
async fn spawn_controller(
    dir: &Path,
    lab: &Lab,
    addr: SocketAddr,
    log_name: &str,
) -> AgentsController {
    let template = format!("unix:{}/{{node}}.sock", lab.dir().display());
    AgentsController::spawn(dir, &template, RECONCILE_INTERVAL, addr, log_name).await
}

async fn cancel_job(clients: &mut Clients, id: &str) {
    clients
        .intents
        .cancel_job(pb::CancelJobRequest {
            name: format!("jobs/{id}"),
        })
        .await
        .unwrap_or_else(|status| panic!("cancel job {id}: {status}"));
}

/// What an agent holds.
async fn agent_state(lab: &Lab, node: &str) -> agent_pb::GetStateResponse {
    let mut client = AgentClient::connect(&lab.endpoint(node))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    client
        .get_state(agent_pb::GetStateRequest {})
        .await
        .unwrap_or_else(|status| panic!("{node}: get state: {status}"))
        .into_inner()
}

/// The sum of a link's rate points in `[start, end)` from the controller's
/// telemetry: proportional to its bytes, the points being equally spaced.
async fn link_rate_sum(clients: &mut Clients, link: &str, start_ms: i64, end_ms: i64) -> f64 {
    let response = clients
        .telemetry
        .get_link_utilization(pb::GetLinkUtilizationRequest {
            link: format!("links/{link}"),
            start_time: Some(support::at(start_ms - support::now_ms())),
            end_time: Some(support::at(end_ms - support::now_ms())),
        })
        .await
        .unwrap_or_else(|status| panic!("link utilisation of {link}: {status}"))
        .into_inner();
    response
        .utilization
        .map(|u| u.points.iter().map(|p| p.rate_bps).sum())
        .unwrap_or(0.0)
}

/// Phase 2b of the diamond test: a job pinned to r1-r3-r4 for its UDP
/// flows to port 5301, and the traffic that proves the SRv6 policy steers
/// them (and flows to r4's own prefix) there.
async fn pin_a_path(clients: &mut Clients, lab: &Lab, log: &std::path::Path) {
    let mut pinned = site_job(pb::TrafficClass::BestEffort, "west", "east", 20_000_000);
    pinned.pinned_path = ["r1", "r3", "r4"]
        .iter()
        .map(|n| format!("nodes/{n}"))
        .collect();
    pinned.flow = Some(pb::FlowMatch {
        ip_protocol: Some(17),
        destination_port_first: 5301,
        destination_port_last: 5301,
    });
    create_job(clients, "pinned-4", pinned).await;
    let v_pin = apply(clients, "pin").await;
    wait_for_plan(
        clients,
        v_pin,
        pb::PlanStatus::Applied,
        Duration::from_secs(20),
        log,
    )
    .await;
    let rules = sh(&["ip", "-n", &lab.namespace("r1"), "rule", "show"]).expect("rules");
    assert!(
        rules.contains("to 10.4.1.0/24 ipproto udp dport 5301 lookup 20000"),
        "r1 has no rule steering the pinned flow: {rules}"
    );
    let before = (lab.tx_bytes("r1", "eth1"), lab.tx_bytes("r1", "eth2"));
    let r3_before = lab.tx_bytes("r3", "eth2");
    let pinned_run = |server, address, flows, seconds| Udp {
        server,
        address,
        port: 5301,
        flows,
        rate: "1M",
        seconds,
        tos: None,
    };
    lab.udp(&[pinned_run("h4", "10.4.1.1", 16, 3)]).await;
    let after = (lab.tx_bytes("r1", "eth1"), lab.tx_bytes("r1", "eth2"));
    let through_r3 = (lab.tx_bytes("r3", "eth2") - r3_before) as f64;
    let pinned_bytes = ((after.0 - before.0) as f64, (after.1 - before.1) as f64);
    let pinned_share = pinned_bytes.1 / (pinned_bytes.0 + pinned_bytes.1);
    eprintln!(
        "pinned flows: r1 eth1/eth2 {pinned_bytes:?} bytes (eth2 share {pinned_share:.3}), r3 forwarded {through_r3:.0}"
    );
    assert!(
        pinned_bytes.1 > 4e6 && pinned_share > 0.95 && through_r3 > 0.9 * pinned_bytes.1,
        "the pinned flows did not take r1-r3-r4: {pinned_bytes:?} (through r3 {through_r3})"
    );

    // r4's own prefix is pinned too: End.DX4 hands it to r4's loopback.
    let before = (lab.tx_bytes("r1", "eth1"), lab.tx_bytes("r1", "eth2"));
    lab.udp(&[pinned_run("r4", "10.4.0.1", 8, 2)]).await;
    let after = (lab.tx_bytes("r1", "eth1"), lab.tx_bytes("r1", "eth2"));
    let to_r4 = ((after.0 - before.0) as f64, (after.1 - before.1) as f64);
    assert!(
        to_r4.1 > 1e6 && to_r4.1 / (to_r4.0 + to_r4.1) > 0.95,
        "flows to r4 itself did not take the pinned path: {to_r4:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_programs_the_diamond_repairs_drift_and_survives_sigkill() {
    let test = "controller_programs_the_diamond_repairs_drift_and_survives_sigkill";
    if let Some(reason) = missing_prerequisite() {
        support::skip::<()>(test, &reason);
        return;
    }
    let lab = Lab::up(&format!("sbd{}", std::process::id() % 100_000));
    let dir = tempfile::tempdir().expect("tempdir");
    let addr = free_port();
    let mut controller = spawn_controller(dir.path(), &lab, addr, "controller-1.log").await;
    let log = dir.path().join("controller-1.log");
    let mut clients = Clients::connect(controller.addr, Some(ADMIN_SECRET)).await;

    let topology = aiwan_planner::formats::clab::load_clab(&fixture()).expect("fixture");
    clients
        .topology
        .import_topology(pb::ImportTopologyRequest {
            topology: Some(aiwan_controller::convert::topology_to_pb(&topology, 0, 0)),
        })
        .await
        .expect("import");

    // 1. A 900M demand west to east: both paths at 90%, 70/30 by
    // capacity.
    create_job(
        &mut clients,
        "train-1",
        site_job(pb::TrafficClass::AiSync, "west", "east", 900_000_000),
    )
    .await;
    let v1 = apply(&mut clients, "first").await;
    wait_for_plan(
        &mut clients,
        v1,
        pb::PlanStatus::Applied,
        Duration::from_secs(20),
        &log,
    )
    .await;
    for prefix in ["10.4.0.0/24", "10.4.1.0/24"] {
        let hops = lab.route_hops("r1", prefix);
        let share = share_of(&hops, "eth1");
        assert!(
            hops.len() == 2 && (0.68..=0.72).contains(&share),
            "r1's route to {prefix} should split 70/30 over eth1/eth2: {hops:?}"
        );
    }
    // A route aiwan does not own, in the same table.
    sh(&[
        "ip",
        "-n",
        &lab.namespace("r1"),
        "route",
        "add",
        "10.77.0.0/24",
        "dev",
        "eth1",
        "proto",
        "static",
    ])
    .expect("add a foreign route");

    // 2. Traffic between the sites, many flows: divided about 70/30, as
    // the kernel's counters and the controller's telemetry both say.
    // Two iperf3 clients of 128 UDP flows each, marked as ai-sync traffic
    // is: with 256 flows hashed
    // over the weights, the byte split is within a few percent of 70/30.
    let before = (lab.tx_bytes("r1", "eth1"), lab.tx_bytes("r1", "eth2"));
    let started_ms = support::now_ms();
    let split = |port| Udp {
        server: "h4",
        address: "10.4.1.1",
        port,
        flows: 128,
        rate: "2M",
        seconds: 4,
        // DSCP 26 (AF31), as RoCEv2 collectives are marked.
        tos: Some(104),
    };
    lab.udp(&[split(5201), split(5203)]).await;
    let ended_ms = support::now_ms();
    let after = (lab.tx_bytes("r1", "eth1"), lab.tx_bytes("r1", "eth2"));
    let kernel = ((after.0 - before.0) as f64, (after.1 - before.1) as f64);
    let kernel_share = kernel.0 / (kernel.0 + kernel.1);
    assert!(
        kernel.0 + kernel.1 > 100e6 && (0.6..=0.8).contains(&kernel_share),
        "r1 sent {kernel:?} bytes on eth1/eth2: share {kernel_share:.3}, not about 70%"
    );
    // The agents stream counters every 200 ms; let the last ones land.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let telemetry = (
        link_rate_sum(&mut clients, "r1:eth1", started_ms, ended_ms + 1000).await,
        link_rate_sum(&mut clients, "r1:eth2", started_ms, ended_ms + 1000).await,
    );
    let telemetry_share = telemetry.0 / (telemetry.0 + telemetry.1);
    assert!(
        (telemetry_share - kernel_share).abs() < 0.05,
        "the controller's link utilisation {telemetry:?} (share {telemetry_share:.3}) \
         disagrees with the kernel's counters (share {kernel_share:.3})"
    );

    // 2b. A job pinned to the longer path through r3, for its UDP flows
    // to port 5301 only: an SRv6 policy at r1 (rule, table, encap route),
    // End at r3, End.DX4 at r4. Its traffic leaves r1 on eth2 alone.
    // (Left out on a kernel without SRv6, with the reason printed.)
    let srv6 = support::kernel_without_srv6();
    if let Some(reason) = &srv6 {
        eprintln!("SKIPPED {test}, the pinned path (2b): {reason}");
    } else {
        pin_a_path(&mut clients, &lab, &log).await;
    }

    // 3. Drift: aiwan's route deleted by hand comes back within two
    // reconcile intervals; the foreign route is untouched.
    let expected = lab.route_hops("r1", "10.4.0.0/24");
    sh(&[
        "ip",
        "-n",
        &lab.namespace("r1"),
        "route",
        "del",
        "10.4.0.0/24",
        "proto",
        "170",
    ])
    .expect("delete aiwan's route");
    let deleted = Instant::now();
    loop {
        let hops = lab.route_hops("r1", "10.4.0.0/24");
        if hops == expected {
            break;
        }
        assert!(
            deleted.elapsed() <= 2 * RECONCILE_INTERVAL,
            "the deleted route is not back after {:?}: {hops:?}",
            deleted.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The controller saw the drift too (the agent's WatchDrift), and logged
    // it; and it has the agents' counters.
    let drift_line =
        "aiwan_southbound_drift_total{node=\"r1\",kind=\"deleted\",outcome=\"repaired\"}";
    let deadline = Instant::now() + Duration::from_secs(5);
    let metrics = loop {
        let metrics = support::http_get(controller.metrics, "/metrics").await;
        if metrics.contains(drift_line) || Instant::now() > deadline {
            break metrics;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        metrics.contains(drift_line),
        "no {drift_line} in:\n{metrics}"
    );
    assert!(
        metrics.contains("aiwan_southbound_counter_updates_total{node=\"r1\"}"),
        "{metrics}"
    );
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        logged
            .lines()
            .any(|line| line.contains("drift on a router") && line.contains("r1")),
        "the controller did not log r1's drift"
    );
    eprintln!(
        "split: kernel counters {kernel_share:.3} on eth1 of {:.0} MB, controller telemetry {telemetry_share:.3}; \
         deleted route back in {:?}",
        (kernel.0 + kernel.1) / 1e6,
        deleted.elapsed()
    );
    let foreign = lab.ip_json("r1", &["route", "show", "10.77.0.0/24"]);
    assert_eq!(
        foreign.as_array().map(Vec::len),
        Some(1),
        "the foreign route was touched: {foreign}"
    );

    // 4. r3's agent is down: the next plan is partial, naming it; when it
    // is back it is brought up to date without another plan.
    lab.signal_agent("r3", nix::sys::signal::Signal::SIGKILL);
    // `lab status` notices.
    let status = lab.status();
    assert!(
        !status.0 && status.1.contains("agent of r3: not running"),
        "lab status with r3's agent killed: {status:?}"
    );
    create_job(
        &mut clients,
        "bulk-2",
        site_job(pb::TrafficClass::BestEffort, "west", "east", 50_000_000),
    )
    .await;
    let v2 = apply(&mut clients, "while r3 is down").await;
    let plan = wait_for_plan(
        &mut clients,
        v2,
        pb::PlanStatus::Partial,
        Duration::from_secs(20),
        &log,
    )
    .await;
    assert_eq!(plan.pending_nodes, vec!["nodes/r3".to_string()], "{plan:?}");
    lab.restart_agent("r3");
    for _ in 0..100 {
        if lab.status().0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        lab.status().0,
        "lab status after r3's agent came back: {:?}",
        lab.status()
    );
    wait_for_plan(
        &mut clients,
        v2,
        pb::PlanStatus::Applied,
        Duration::from_secs(45),
        &log,
    )
    .await;

    // 4b. Plan 2 puts best-effort traffic beside ai-sync on both paths, so
    // it asks for rate limits. ai-sync takes 630M of r1's 700M eth1 and
    // 270M of its 300M eth2, and is guaranteed that; best-effort is
    // bulk-2's 50M and pinned-4's 20M (on eth2), levelled on what is left:
    // 49M on eth1, 1M + 20M on eth2. Each link's best-effort class is
    // guaranteed its load plus half the headroom: 49M + 10.5M on eth1, 21M
    // + 4.5M on eth2. Every class may borrow up to the link's capacity.
    // Without the pinned job (no SRv6): 35M and 15M, so 35M + 17.5M and
    // 15M + 7.5M.
    let (eth1_best_effort, eth2_best_effort) = if srv6.is_none() {
        (59.5e6, 25.5e6)
    } else {
        (52.5e6, 22.5e6)
    };
    let observed = agent_state(&lab, "r1")
        .await
        .observed_state
        .expect("observed state");
    let limit_of = |interface: &str| {
        observed
            .rate_limits
            .iter()
            .find(|limit| limit.interface == interface)
            .cloned()
            .unwrap_or_default()
    };
    let class_rate = |interface: &str, class_id: u32| -> (f64, f64) {
        limit_of(interface)
            .classes
            .iter()
            .find(|c| c.class_id == class_id)
            .map_or((0.0, 0.0), |c| (c.rate_bps as f64, c.ceil_bps as f64))
    };
    for (interface, link, sync, best_effort) in [
        ("eth1", 700e6, 630e6, eth1_best_effort),
        ("eth2", 300e6, 270e6, eth2_best_effort),
    ] {
        let (sync_rate, sync_ceil) = class_rate(interface, 1);
        let (best_effort_rate, best_effort_ceil) = class_rate(interface, 3);
        assert!(
            (limit_of(interface).link_bps as f64 / link - 1.0).abs() < 0.01
                && (sync_rate / sync - 1.0).abs() < 0.01
                && (best_effort_rate / best_effort - 1.0).abs() < 0.05
                && (sync_ceil / link - 1.0).abs() < 0.01
                && (best_effort_ceil / link - 1.0).abs() < 0.01,
            "r1 {interface}: link {link}, ai-sync {sync} and best-effort {best_effort} bit/s \
             wanted: {:?}",
            observed.rate_limits
        );
    }
    // Best-effort traffic offered at 120 Mbit/s (about 84M to eth1 and 36M
    // to eth2), above what it is guaranteed (85 Mbit/s) while ai-sync
    // sends nothing: it borrows ai-sync's idle share (work conserving)
    // instead of being dropped at its rate.
    let delivered_before = lab.tx_bytes("r4", "eth3");
    let seconds = lab
        .udp(&[Udp {
            server: "h4",
            address: "10.4.1.1",
            port: 5202,
            flows: 48,
            rate: "2500K",
            seconds: 3,
            tos: None,
        }])
        .await;
    let delivered_bps = (lab.tx_bytes("r4", "eth3") - delivered_before) as f64 * 8.0 / seconds;
    let (drops, borrowed) = lab.class_stats("r1", "eth1", "a1:3");
    eprintln!(
        "best-effort: offered 120 Mbit/s, delivered {:.0} Mbit/s (guaranteed {:.0}), r1 \
         eth1's class borrowed {borrowed} times, dropped {drops}",
        delivered_bps / 1e6,
        (eth1_best_effort + eth2_best_effort) / 1e6,
    );
    assert!(
        borrowed > 0 && delivered_bps > 30e6,
        "best-effort at 120 Mbit/s: delivered {delivered_bps:.0} bit/s, borrowed {borrowed} \
         times, dropped {drops}"
    );

    // 5. The controller killed in the middle of a push. r2's agent is
    // stopped (SIGSTOP) so that the push of the reversed plan cannot get
    // through it; once another router holds the new plan's state, the
    // controller is killed, r2 resumes, and a new controller on the same
    // database takes over.
    lab.signal_agent("r2", nix::sys::signal::Signal::SIGSTOP);
    cancel_job(&mut clients, "train-1").await;
    cancel_job(&mut clients, "bulk-2").await;
    create_job(
        &mut clients,
        "reverse-3",
        site_job(pb::TrafficClass::AiSync, "east", "west", 900_000_000),
    )
    .await;
    let v3 = apply(&mut clients, "reversed").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let held = agent_state(&lab, "r4").await.desired_generation >> 16;
        if held == v3 as u64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "r4 never got plan {v3} (holds {held})"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let status = current_plan(&mut clients).await;
    let mut holding = Vec::new();
    for node in ["r1", "r3", "r4"] {
        let state = agent_state(&lab, node).await;
        holding.push(format!("{node} {:#x}", state.desired_generation));
    }
    eprintln!(
        "killing the controller with plan {v3} {:?} and generations {holding:?}, r2 stopped",
        status.status()
    );
    assert_ne!(
        status.status,
        pb::PlanStatus::Applied as i32,
        "the push finished although r2 is stopped: {status:?}"
    );
    controller.child.kill().expect("SIGKILL the controller");
    let _ = controller.child.wait();
    lab.signal_agent("r2", nix::sys::signal::Signal::SIGCONT);
    let controller = spawn_controller(dir.path(), &lab, addr, "controller-2.log").await;
    let log = dir.path().join("controller-2.log");
    let mut clients = Clients::connect(controller.addr, Some(ADMIN_SECRET)).await;
    wait_for_plan(
        &mut clients,
        v3,
        pb::PlanStatus::Applied,
        Duration::from_secs(30),
        &log,
    )
    .await;
    let final_generation = ((v3 as u64) << 16) | 0xffff;
    for node in ["r1", "r2", "r3", "r4"] {
        let state = agent_state(&lab, node).await;
        assert!(
            state.in_sync && state.desired_generation == final_generation,
            "{node} holds generation {:#x} (in sync: {}), not plan {v3}'s final state",
            state.desired_generation,
            state.in_sync
        );
    }
    // The new plan's split is in r4; the old one's is gone from r1, whose
    // routes east are the shortest-path underlay again (through r2 alone,
    // r3's path being longer).
    let r4 = lab.route_hops("r4", "10.1.1.0/24");
    assert!(
        r4.len() == 2 && (0.68..=0.72).contains(&share_of(&r4, "eth1")),
        "r4's route west should split 70/30: {r4:?}"
    );
    for prefix in ["10.4.0.0/24", "10.4.1.0/24"] {
        let hops = lab.route_hops("r1", prefix);
        assert_eq!(
            hops,
            vec![("eth1".to_string(), 1)],
            "r1's route to {prefix} still carries the old plan"
        );
    }
    // The pin outlived the kill too.
    if srv6.is_none() {
        let rules = sh(&["ip", "-n", &lab.namespace("r1"), "rule", "show"]).expect("rules");
        assert!(rules.contains("dport 5301 lookup 20000"), "{rules}");
    }
    let foreign = lab.ip_json("r1", &["route", "show", "10.77.0.0/24"]);
    assert_eq!(foreign.as_array().map(Vec::len), Some(1), "{foreign}");
    drop(controller);
    drop(lab);
}
