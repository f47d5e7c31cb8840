//! `aiwan collect` as an operator runs it: against IPFIX sent over
//! loopback (no privileges needed), and against a live softflowd watching a
//! veth in a network namespace that carries iperf3 traffic (root,
//! iproute2, softflowd, iperf3; skipped with a reason elsewhere, failed
//! under `AIWAN_REQUIRE_LAB=1`).

mod support;

use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::time::Duration;

use aiwan_collectors::netflow::encode::IpfixExporter;
use aiwan_collectors::record::{FlowRecord, ipv4_to_u128};
use serde_json::Value;

fn aiwan() -> Command {
    Command::new(env!("CARGO_BIN_EXE_aiwan"))
}

/// A free UDP port on `address` (bound, then released).
fn free_udp_port(address: &str) -> u16 {
    UdpSocket::bind((address, 0))
        .and_then(|socket| socket.local_addr())
        .map(|bound| bound.port())
        .expect("a free UDP port")
}

fn run_json(mut command: Command) -> Value {
    let output = command.output().expect("aiwan runs");
    assert!(
        output.status.success(),
        "aiwan failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
        panic!(
            "stdout is not one JSON document ({error}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

#[test]
fn collect_summarises_ipfix_sent_over_loopback() {
    let port = free_udp_port("127.0.0.1");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut command = aiwan();
    command
        .args(["collect", "--duration", "3", "--json", "--shards", "1"])
        .arg("--netflow-listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(dir.path().join("state"))
        .arg("--parquet")
        .arg(dir.path().join("parquet"));
    let collector = std::thread::spawn(move || run_json(command));
    std::thread::sleep(Duration::from_millis(800));
    let records: Vec<FlowRecord> = (0..100u32)
        .map(|n| FlowRecord {
            src_addr: ipv4_to_u128([10, 1, 1, (n % 50) as u8 + 1]),
            dst_addr: ipv4_to_u128([10, 2, 1, 1]),
            src_port: 50_000 + n as u16,
            dst_port: 4791,
            protocol: 17,
            tos: 0x68,
            packets: 10,
            bytes: 10_000 + u64::from(n),
            sampling_rate: 1,
            ..FlowRecord::default()
        })
        .collect();
    let mut exporter = IpfixExporter::new(42, 10);
    let socket = UdpSocket::bind("127.0.0.1:0").expect("sender");
    let target: SocketAddr = format!("127.0.0.1:{port}").parse().expect("target");
    for datagram in exporter.export(&records, 1_800_000_000) {
        socket.send_to(&datagram, target).expect("send");
    }
    // A broken datagram from the same exporter: counted, not fatal.
    socket
        .send_to(&[0, 10, 0, 200, 1, 2], target)
        .expect("send");
    let summary = collector.join().expect("collector thread");
    let exporters = summary["exporters"].as_array().expect("exporters");
    let ipfix = exporters
        .iter()
        .find(|e| e["protocol"] == "ipfix" && e["observation_domain"] == 42)
        .unwrap_or_else(|| panic!("no IPFIX exporter in {summary}"));
    assert_eq!(ipfix["address"], "127.0.0.1");
    assert_eq!(ipfix["records"], 100);
    assert_eq!(ipfix["packets"], 1000);
    let bytes: u64 = records.iter().map(|r| r.bytes).sum();
    assert_eq!(ipfix["bytes"], bytes);
    assert_eq!(ipfix["bytes_scaled"], bytes);
    assert_eq!(ipfix["template_misses"], 0);
    assert_eq!(summary["totals"]["records"], 100);
    assert_eq!(summary["totals"]["decode_errors"], 1, "{summary}");
    for key in [
        "datagrams",
        "counter_samples",
        "sequence_gaps",
        "packets_scaled",
    ] {
        assert!(ipfix.get(key).is_some(), "exporter has no {key}");
    }
    let stored: u64 = summary["top_flows"]
        .as_array()
        .expect("top flows")
        .iter()
        .map(|f| f["bytes"].as_u64().unwrap_or(0))
        .sum();
    assert!(stored > 0, "the store answers top flows: {summary}");
    let files = summary["parquet"]["files"]
        .as_array()
        .expect("parquet files");
    assert!(!files.is_empty(), "{summary}");
    // Templates were saved for the next start.
    let saved = std::fs::read_to_string(dir.path().join("state/collector-templates.json"))
        .expect("template file");
    assert!(saved.contains("\"ipfix\""), "{saved}");
}

#[test]
fn collect_names_bad_arguments() {
    let output = aiwan()
        .args([
            "collect",
            "--duration",
            "0",
            "--netflow-listen",
            "127.0.0.1:0",
        ])
        .output()
        .expect("aiwan runs");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--duration: 0 is not a positive number"),
        "{stderr}"
    );

    // A port someone else holds.
    let holder = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let taken = holder.local_addr().expect("address");
    let dir = tempfile::tempdir().expect("tempdir");
    let output = aiwan()
        .args(["collect", "--duration", "1", "--netflow-listen"])
        .arg(taken.to_string())
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .expect("aiwan runs");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("cannot listen on {taken}")),
        "{stderr}"
    );
}

/// Runs a shell command, panicking with its output when it fails.
fn sh(command: &str) {
    let output = Command::new("sh")
        .args(["-c", command])
        .output()
        .expect("sh runs");
    assert!(
        output.status.success(),
        "{command}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Removes the namespace (and with it the veth pair) however the test ends.
struct Namespace(String);

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

#[test]
fn collect_reports_iperf3_traffic_seen_by_a_live_softflowd() {
    let test = "collect_reports_iperf3_traffic_seen_by_a_live_softflowd";
    if !nix::unistd::geteuid().is_root() {
        return support::skip(test, "needs root for network namespaces").unwrap_or(());
    }
    for tool in ["ip", "softflowd", "iperf3"] {
        if !have(tool) {
            return support::skip(test, &format!("{tool} is not installed")).unwrap_or(());
        }
    }
    let id = std::process::id() % 100_000;
    let namespace = format!("aiwan-collect-{id}");
    let (outside, inside) = (format!("awc{id}a"), format!("awc{id}b"));
    let octet = 1 + id % 250;
    let (collector_ip, host_ip) = (format!("10.251.{octet}.1"), format!("10.251.{octet}.2"));
    if Command::new("ip")
        .args(["netns", "add", &namespace])
        .status()
        .map_or(true, |s| !s.success())
    {
        return support::skip(test, "cannot create a network namespace").unwrap_or(());
    }
    let _cleanup = Namespace(namespace.clone());
    sh(&format!(
        "ip link add {outside} type veth peer name {inside}"
    ));
    sh(&format!("ip link set {inside} netns {namespace}"));
    sh(&format!(
        "ip addr add {collector_ip}/30 dev {outside} && ip link set {outside} up"
    ));
    sh(&format!(
        "ip -n {namespace} addr add {host_ip}/30 dev {inside} && ip -n {namespace} link set {inside} up && ip -n {namespace} link set lo up"
    ));
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_udp_port(&collector_ip);
    let mut collect = aiwan();
    collect
        .args(["collect", "--duration", "10", "--json"])
        .arg("--netflow-listen")
        .arg(format!("{collector_ip}:{port}"))
        .arg("--data-dir")
        .arg(dir.path());
    let collector = std::thread::spawn(move || run_json(collect));
    let mut server = Command::new("ip")
        .args(["netns", "exec", &namespace, "iperf3", "-s", "-1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("iperf3 server");
    // softflowd on the namespace's end of the veth, exporting IPFIX to the
    // collector outside; flows are exported at least every 2 s.
    let mut softflowd = Command::new("ip")
        .args([
            "netns",
            "exec",
            &namespace,
            "softflowd",
            "-d",
            "-i",
            &inside,
            "-v",
            "10",
        ])
        .args(["-t", "maxlife=2", "-t", "expint=1", "-t", "tcp.fin=1"])
        .arg("-n")
        .arg(format!("{collector_ip}:{port}"))
        // Short relative names: softflowd 1.1.0 misbehaves with long
        // control socket paths.
        .args(["-p", "p", "-c", "c"])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("softflowd");
    std::thread::sleep(Duration::from_millis(1500));
    let iperf = Command::new("iperf3")
        .args(["-c", &host_ip, "-t", "4", "-b", "200M", "-J"])
        .output()
        .expect("iperf3 client");
    assert!(
        iperf.status.success(),
        "iperf3: {}",
        String::from_utf8_lossy(&iperf.stderr)
    );
    let report: Value = serde_json::from_slice(&iperf.stdout).expect("iperf3 JSON");
    let sent = report["end"]["sum_sent"]["bytes"]
        .as_u64()
        .expect("iperf3 sent bytes");
    let summary = collector.join().expect("collector thread");
    let _ = softflowd.kill();
    let _ = softflowd.wait();
    let _ = server.kill();
    let _ = server.wait();

    let exporter = summary["exporters"]
        .as_array()
        .expect("exporters")
        .iter()
        .find(|e| e["address"] == host_ip.as_str() && e["protocol"] == "ipfix")
        .unwrap_or_else(|| panic!("softflowd at {host_ip} not in {summary}"));
    assert!(exporter["records"].as_u64().unwrap_or(0) > 0, "{summary}");
    assert_eq!(exporter["decode_errors"], 0, "{summary}");
    // The iperf3 connection's data direction, as the store saw it: IP
    // bytes, so headers put it a few percent above iperf3's payload count.
    let data_bytes: u64 = summary["top_flows"]
        .as_array()
        .expect("top flows")
        .iter()
        .filter(|f| f["dst_port"] == 5201 && f["dst_addr"] == host_ip.as_str())
        .map(|f| f["bytes"].as_u64().unwrap_or(0))
        .sum();
    let ratio = data_bytes as f64 / sent as f64;
    assert!(
        (0.95..1.15).contains(&ratio),
        "collected {data_bytes} IP bytes towards the iperf3 server, iperf3 sent {sent} payload bytes (ratio {ratio:.3}): {summary}"
    );
}

/// The collector under a flood from one sender of IPFIX templates, each
/// in a new observation domain and half of them wider than it takes,
/// beside an exporter that was sending before the flood: that exporter
/// loses no record, the flood is refused and counted (wide templates as
/// decode errors, domains past the exporter cap as rejected datagrams),
/// and the collector's peak RSS stays within its store budget plus 20%.
/// (`aiwan bench flood` runs the same at 10,000 datagrams a second for
/// 30 s on a release build; a debug build here, at a gentler rate.)
#[test]
fn collect_survives_a_template_and_exporter_flood() {
    let report = run_json({
        let mut command = aiwan();
        command.args([
            "bench",
            "flood",
            "--seconds",
            "4",
            "--rate",
            "3000",
            "--json",
        ]);
        command
    });
    let flood = &report["flood"];
    assert_eq!(flood["legit_records_lost"], 0, "{report}");
    assert!(
        flood["legit_records_sent"].as_u64() > Some(5_000),
        "{report}"
    );
    assert!(flood["decode_errors"].as_u64() > Some(1_000), "{report}");
    assert!(flood["rejected_datagrams"].as_u64() > Some(0), "{report}");
    assert_eq!(
        report["target_rss_within_budget_plus_20pct"], true,
        "{report}"
    );
    assert_eq!(report["reference"]["legit_records_lost"], 0, "{report}");
}
