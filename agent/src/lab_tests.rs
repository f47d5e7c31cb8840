//! Tests against a real kernel, each in a scratch network namespace with two
//! veth pairs. They need root and `ip netns add`; without them they print
//! `SKIPPED name: reason` and pass, unless `AIWAN_REQUIRE_LAB=1`, which
//! makes them fail instead. `ip` and `tc` are used here only to set the lab
//! up and to check the kernel's state independently of our own parser.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::kernel::{Kernel, KernelError};
use super::monitor::DriftKind;
use super::state::*;

/// A scratch namespace, deleted on drop (even when the test fails).
struct Lab {
    name: String,
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

fn skip(test: &str, reason: &str) -> Option<Lab> {
    if std::env::var("AIWAN_REQUIRE_LAB").as_deref() == Ok("1") {
        panic!("{test}: AIWAN_REQUIRE_LAB=1 but {reason}");
    }
    eprintln!("SKIPPED {test}: {reason}");
    None
}

fn sh(args: &[&str]) -> Result<String, String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if !out.status.success() {
        return Err(format!(
            "{}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Makes the lab: `veth1` (10.0.1.1/24, fc00:1::1/64) and `veth2`
/// (10.0.2.1/24, fc00:2::1/64), each paired with a `*p` peer in the same
/// namespace, all up.
fn lab(test: &str) -> Option<Lab> {
    if effective_uid() != Some(0) {
        return skip(test, "not root");
    }
    let name = format!(
        "aiwan-{}-{}",
        std::process::id(),
        test.trim_start_matches("lab_")
            .chars()
            .take(12)
            .collect::<String>()
    );
    if let Err(e) = sh(&["ip", "netns", "add", &name]) {
        return skip(test, &format!("ip netns add failed ({e})"));
    }
    let lab = Lab { name };
    let n = lab.name.as_str();
    let setup = [
        vec!["ip", "-n", n, "link", "set", "lo", "up"],
        vec![
            "ip", "-n", n, "link", "add", "veth1", "type", "veth", "peer", "name", "veth1p",
        ],
        vec![
            "ip", "-n", n, "link", "add", "veth2", "type", "veth", "peer", "name", "veth2p",
        ],
        vec!["ip", "-n", n, "link", "set", "veth1", "up"],
        vec!["ip", "-n", n, "link", "set", "veth1p", "up"],
        vec!["ip", "-n", n, "link", "set", "veth2", "up"],
        vec!["ip", "-n", n, "link", "set", "veth2p", "up"],
        vec!["ip", "-n", n, "addr", "add", "10.0.1.1/24", "dev", "veth1"],
        vec!["ip", "-n", n, "addr", "add", "10.0.2.1/24", "dev", "veth2"],
        vec![
            "ip",
            "-n",
            n,
            "addr",
            "add",
            "fc00:1::1/64",
            "dev",
            "veth1",
            "nodad",
        ],
        vec![
            "ip",
            "-n",
            n,
            "addr",
            "add",
            "fc00:2::1/64",
            "dev",
            "veth2",
            "nodad",
        ],
    ];
    for cmd in setup {
        if let Err(e) = sh(&cmd) {
            return skip(test, &format!("lab setup failed ({e})"));
        }
    }
    Some(lab)
}

impl Lab {
    fn run(&self, args: &[&str]) -> String {
        let mut full = vec!["ip", "netns", "exec", &self.name];
        full.extend_from_slice(args);
        sh(&full).unwrap()
    }

    fn json(&self, args: &[&str]) -> Value {
        let out = self.run(args);
        if out.trim().is_empty() {
            return Value::Array(vec![]);
        }
        serde_json::from_str(&out).unwrap()
    }

    fn kernel(&self) -> Kernel {
        Kernel::in_namespace(&self.name).unwrap()
    }
}

fn nh(gw: &str, dev: &str, weight: u32) -> NextHop {
    NextHop {
        gateway: Some(gw.parse().unwrap()),
        interface: dev.into(),
        weight,
    }
}

fn ucmp(prefix: &str, table: u32, hops: Vec<NextHop>) -> UcmpRoute {
    UcmpRoute {
        prefix: prefix.parse().unwrap(),
        table,
        next_hops: hops,
    }
}

/// The weights `ip -j route show` reports for `dst` in `table`.
fn ip_weights(lab: &Lab, table: &str, dst: &str) -> Vec<u64> {
    let routes = lab.json(&["ip", "-j", "route", "show", "table", table]);
    let route = routes
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["dst"] == dst)
        .unwrap_or_else(|| panic!("{dst} not in table {table}: {routes}"));
    assert_eq!(route["protocol"], "170", "{route}");
    route["nexthops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["weight"].as_u64().unwrap_or(1))
        .collect()
}

#[tokio::test]
async fn lab_ucmp_route_lifecycle() {
    let Some(lab) = lab("lab_ucmp_route_lifecycle") else {
        return;
    };
    // Someone else's route in the same table.
    lab.run(&[
        "ip",
        "route",
        "add",
        "10.9.0.0/16",
        "table",
        "20001",
        "via",
        "10.0.1.2",
    ]);
    let kernel = lab.kernel();
    let mut monitor = kernel.monitor().unwrap();

    let mut desired = NodeState {
        routes: vec![ucmp(
            "10.2.0.0/16",
            20001,
            vec![nh("10.0.1.2", "veth1", 70), nh("10.0.2.2", "veth2", 30)],
        )],
        ..NodeState::default()
    };
    let report = kernel.apply(&desired).await.unwrap();
    assert_eq!((report.created, report.replaced, report.deleted), (1, 0, 0));
    assert_eq!(kernel.observe().await.unwrap(), desired.normalized());
    assert_eq!(ip_weights(&lab, "20001", "10.2.0.0/16"), vec![70, 30]);

    // Idempotent.
    let report = kernel.apply(&desired).await.unwrap();
    assert!(report.is_noop(), "{report:?}");
    assert_eq!(report.unchanged, 1);

    // New split ratios.
    desired.routes[0].next_hops[0].weight = 20;
    desired.routes[0].next_hops[1].weight = 80;
    let report = kernel.apply(&desired).await.unwrap();
    assert_eq!((report.created, report.replaced, report.deleted), (0, 1, 0));
    assert_eq!(ip_weights(&lab, "20001", "10.2.0.0/16"), vec![20, 80]);

    // Drift: deleted by hand, reported, repaired.
    lab.run(&["ip", "route", "del", "10.2.0.0/16", "table", "20001"]);
    let event = tokio::time::timeout(Duration::from_secs(5), monitor.next())
        .await
        .expect("no drift event within 5 s")
        .expect("monitor closed");
    assert_eq!(event.kind, DriftKind::Deleted);
    assert_eq!(event.object, "route 10.2.0.0/16 table 20001");
    let report = kernel.apply(&desired).await.unwrap();
    assert_eq!(report.created, 1);
    assert_eq!(ip_weights(&lab, "20001", "10.2.0.0/16"), vec![20, 80]);

    // Someone else's route is neither reported as ours nor replaced.
    let conflict = NodeState {
        routes: vec![ucmp("10.9.0.0/16", 20001, vec![nh("10.0.2.2", "veth2", 1)])],
        ..NodeState::default()
    };
    let err = kernel.apply(&conflict).await.unwrap_err();
    assert!(matches!(err, KernelError::Conflict { .. }), "{err}");
    assert!(
        err.to_string().contains("route 10.9.0.0/16 table 20001"),
        "{err}"
    );

    // A missing interface is named.
    let bad = NodeState {
        routes: vec![ucmp("10.3.0.0/16", 20001, vec![nh("10.0.9.2", "eth9", 1)])],
        ..NodeState::default()
    };
    let err = kernel.apply(&bad).await.unwrap_err().to_string();
    assert!(
        err.contains("route 10.3.0.0/16 table 20001") && err.contains("eth9: no such interface"),
        "{err}"
    );

    // A refusal names the object, even inside a batch of good requests.
    let mut refused = desired.clone();
    refused.routes.push(ucmp(
        "10.7.0.0/16",
        20001,
        vec![nh("192.168.99.1", "veth1", 1)],
    ));
    for i in 0..100 {
        refused.routes.push(ucmp(
            &format!("10.8.{i}.0/24"),
            20001,
            vec![nh("10.0.1.2", "veth1", 1)],
        ));
    }
    let err = kernel.apply(&refused).await.unwrap_err();
    assert!(matches!(err, KernelError::Refused { .. }), "{err}");
    assert!(
        err.to_string()
            .starts_with("create route 10.7.0.0/16 table 20001: "),
        "{err}"
    );

    // Purge takes ours and leaves theirs.
    let report = kernel.purge().await.unwrap();
    assert_eq!(report.deleted, 101);
    assert!(kernel.observe().await.unwrap().is_empty());
    let left = lab.run(&["ip", "route", "show", "table", "20001"]);
    assert!(left.contains("10.9.0.0/16 via 10.0.1.2"), "{left}");
    assert!(!left.contains("10.2.0.0"), "{left}");

    // Counters name the interfaces.
    let counters = kernel.counters().await.unwrap();
    assert!(counters.iter().any(|c| c.name == "veth1" && c.ifindex > 0));
}

#[tokio::test]
async fn lab_ipv6_multipath_and_main_table() {
    let Some(lab) = lab("lab_ipv6_multipath_and_main_table") else {
        return;
    };
    let kernel = lab.kernel();
    let desired = NodeState {
        routes: vec![
            ucmp(
                "fc00:99::/64",
                20001,
                vec![nh("fc00:1::2", "veth1", 2), nh("fc00:2::2", "veth2", 1)],
            ),
            ucmp("10.4.0.0/16", MAIN_TABLE, vec![nh("10.0.1.2", "veth1", 1)]),
            ucmp(
                "10.5.0.0/16",
                20001,
                vec![NextHop {
                    gateway: None,
                    interface: "veth2".into(),
                    weight: 1,
                }],
            ),
        ],
        ..NodeState::default()
    };
    assert_eq!(kernel.apply(&desired).await.unwrap().created, 3);
    assert_eq!(kernel.observe().await.unwrap(), desired.normalized());
    assert!(kernel.apply(&desired).await.unwrap().is_noop());
    assert_eq!(kernel.purge().await.unwrap().deleted, 3);
    assert!(kernel.observe().await.unwrap().is_empty());
}

#[tokio::test]
async fn lab_srv6() {
    let Some(lab) = lab("lab_srv6") else {
        return;
    };
    let kernel = lab.kernel();
    let desired = NodeState {
        srv6_policies: vec![
            Srv6Policy {
                prefix: "fc00:98::/64".parse().unwrap(),
                table: 20002,
                segments: vec!["fc00:a::1".parse().unwrap(), "fc00:b::1".parse().unwrap()],
                interface: "veth1".into(),
                gateway: Some("fc00:1::2".parse().unwrap()),
            },
            Srv6Policy {
                prefix: "10.6.0.0/16".parse().unwrap(),
                table: 20002,
                segments: vec!["fc00:a::1".parse().unwrap()],
                interface: "veth1".into(),
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
                    next_hop: "10.0.2.2".parse().unwrap(),
                },
                interface: "veth2".into(),
            },
        ],
        ..NodeState::default()
    };
    let report = match kernel.apply(&desired).await {
        Ok(report) => report,
        Err(e @ KernelError::MissingFeature { .. }) => {
            // The kernel's, not a tool CI could install: skipped with the
            // reason even under AIWAN_REQUIRE_LAB=1.
            eprintln!("SKIPPED lab_srv6: {e}");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    assert_eq!(report.created, 4);
    assert_eq!(kernel.observe().await.unwrap(), desired.normalized());
    let shown = lab.run(&["ip", "-6", "route", "show", "table", "20002"]);
    assert!(
        shown.contains("encap seg6 mode encap segs 2 [ fc00:a::1 fc00:b::1 ]"),
        "{shown}"
    );
    let shown = lab.run(&["ip", "-6", "route", "show", "proto", "170"]);
    let shown = shown.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        shown.contains("fc00:a::1 encap seg6local action End dev veth1"),
        "{shown}"
    );
    assert!(kernel.apply(&desired).await.unwrap().is_noop());
    assert_eq!(kernel.purge().await.unwrap().deleted, 4);
    assert!(kernel.observe().await.unwrap().is_empty());
}

#[tokio::test]
async fn lab_flow_rules() {
    let Some(lab) = lab("lab_flow_rules") else {
        return;
    };
    // Someone else's rule inside aiwan's priority range.
    lab.run(&["ip", "rule", "add", "priority", "20005", "table", "100"]);
    let kernel = lab.kernel();
    let rocev2 = FlowRule {
        ip_protocol: Some(17),
        destination_ports: Some((4791, 4791)),
        ..FlowRule::new(20001, Family::V4, 20001)
    };
    let mut desired = NodeState {
        routes: vec![ucmp("10.2.0.0/16", 20001, vec![nh("10.0.1.2", "veth1", 1)])],
        flow_rules: vec![
            rocev2.clone(),
            FlowRule {
                source: Some("fc00:1::/64".parse().unwrap()),
                ip_protocol: Some(17),
                destination_ports: Some((4791, 4791)),
                ..FlowRule::new(20001, Family::V6, 20001)
            },
        ],
        ..NodeState::default()
    };
    assert_eq!(kernel.apply(&desired).await.unwrap().created, 3);
    assert_eq!(kernel.observe().await.unwrap(), desired.normalized());
    let rules = lab.json(&["ip", "-j", "rule", "show"]);
    let ours: Vec<&Value> = rules
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["priority"] == 20001)
        .collect();
    assert_eq!(ours.len(), 1, "{rules}");
    assert_eq!(ours[0]["ipproto"], "udp", "{rules}");
    assert_eq!(ours[0]["dport"], 4791, "{rules}");
    assert_eq!(ours[0]["table"], "20001", "{rules}");
    assert!(kernel.apply(&desired).await.unwrap().is_noop());

    // A changed rule is replaced (new one first, then the old one goes).
    desired.flow_rules[0].destination_ports = Some((4791, 4792));
    let report = kernel.apply(&desired).await.unwrap();
    assert_eq!(
        (report.created, report.replaced, report.deleted),
        (0, 1, 0),
        "{report:?}"
    );
    let shown = lab.run(&["ip", "rule", "show", "priority", "20001"]);
    assert_eq!(shown.lines().count(), 1, "{shown}");
    assert!(shown.contains("dport 4791-4792"), "{shown}");
    assert_eq!(kernel.observe().await.unwrap(), desired.normalized());

    // DSCP selector (FRA_DSCP, Linux 6.13+).
    desired.flow_rules.push(FlowRule {
        dscp: Some(46),
        ..FlowRule::new(20002, Family::V4, 20001)
    });
    match kernel.apply(&desired).await {
        Ok(report) => {
            assert_eq!(report.created, 1);
            assert_eq!(kernel.observe().await.unwrap(), desired.normalized());
        }
        Err(e) => eprintln!("NOTE lab_flow_rules: DSCP rule refused, kernel older than 6.13? {e}"),
    }

    kernel.purge().await.unwrap();
    assert!(kernel.observe().await.unwrap().is_empty());
    let left = lab.run(&["ip", "rule", "show"]);
    assert!(left.contains("20005:\tfrom all lookup 100"), "{left}");
    assert!(!left.contains("20001"), "{left}");
}

#[tokio::test]
async fn lab_rate_limit() {
    let Some(lab) = lab("lab_rate_limit") else {
        return;
    };
    let kernel = lab.kernel();
    let mut desired = NodeState {
        rate_limits: vec![RateLimit {
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
        }],
        ..NodeState::default()
    };
    let report = match kernel.apply(&desired).await {
        Ok(report) => report,
        Err(e @ KernelError::MissingFeature { .. }) => {
            skip("lab_rate_limit", &e.to_string());
            return;
        }
        Err(e) => panic!("{e}"),
    };
    // qdisc + 2 classes + 2 DSCP values x 2 families.
    assert_eq!(report.created, 7, "{report:?}");
    assert_eq!(kernel.observe().await.unwrap(), desired.normalized());
    // tc 6.1 prints htb classes as text even with -j, so the text is read.
    let classes = lab.run(&["tc", "-j", "-s", "class", "show", "dev", "veth1"]);
    let class_line = |handle: &str| {
        classes
            .lines()
            .find(|l| l.starts_with(&format!("class htb {handle} ")))
            .unwrap_or_else(|| panic!("no class {handle}: {classes}"))
            .to_string()
    };
    assert!(
        class_line("a1:10").contains("rate 10Mbit ceil 20Mbit"),
        "{classes}"
    );
    assert!(
        class_line("a1:30").contains("rate 1Mbit ceil 1Mbit"),
        "{classes}"
    );
    let filters = lab.run(&["tc", "filter", "show", "dev", "veth1"]);
    assert_eq!(filters.matches("*flowid a1:10").count(), 4, "{filters}");
    assert!(
        filters.contains("match 00200000/00fc0000 at 0"),
        "{filters}"
    );
    assert!(
        filters.contains("match 02800000/0fc00000 at 0"),
        "{filters}"
    );
    assert!(kernel.apply(&desired).await.unwrap().is_noop());

    // Faster class, one DSCP value fewer.
    desired.rate_limits[0].classes[0].rate_bps = 20_000_000;
    desired.rate_limits[0].classes[0].dscp = vec![8];
    let report = kernel.apply(&desired).await.unwrap();
    assert_eq!(
        (report.created, report.replaced, report.deleted),
        (0, 1, 2),
        "{report:?}"
    );
    assert_eq!(kernel.observe().await.unwrap(), desired.normalized());
    let classes = lab.run(&["tc", "class", "show", "dev", "veth1"]);
    assert!(
        classes.contains("class htb a1:10 root prio 0 rate 20Mbit ceil 20Mbit"),
        "{classes}"
    );

    // A new default class rebuilds the qdisc.
    desired.rate_limits[0].default_class = Some(0x10);
    kernel.apply(&desired).await.unwrap();
    assert_eq!(kernel.observe().await.unwrap(), desired.normalized());

    kernel.purge().await.unwrap();
    let qdiscs = lab.run(&["tc", "qdisc", "show", "dev", "veth1"]);
    assert!(!qdiscs.contains("htb"), "{qdiscs}");
    assert!(kernel.observe().await.unwrap().is_empty());
}

/// Two namespaces joined by a veth (`wca` 10.77.0.1/24 in `{name}-a`,
/// `wcb` 10.77.0.2/24 in `{name}-b`), both deleted on drop.
struct Pair {
    a: Lab,
    b: Lab,
}

fn pair(test: &str) -> Option<Pair> {
    if effective_uid() != Some(0) {
        skip(test, "not root");
        return None;
    }
    let base = format!("aiwan-{}-wc", std::process::id());
    let (a, b) = (format!("{base}-a"), format!("{base}-b"));
    for name in [&a, &b] {
        if let Err(e) = sh(&["ip", "netns", "add", name]) {
            skip(test, &format!("ip netns add failed ({e})"));
            return None;
        }
    }
    let pair = Pair {
        a: Lab { name: a.clone() },
        b: Lab { name: b.clone() },
    };
    let setup = [
        vec![
            "ip", "-n", &a, "link", "add", "wca", "type", "veth", "peer", "name", "wcb", "netns",
            &b,
        ],
        vec!["ip", "-n", &a, "addr", "add", "10.77.0.1/24", "dev", "wca"],
        vec!["ip", "-n", &b, "addr", "add", "10.77.0.2/24", "dev", "wcb"],
        vec!["ip", "-n", &a, "link", "set", "wca", "up"],
        vec!["ip", "-n", &b, "link", "set", "wcb", "up"],
        vec!["ip", "-n", &a, "link", "set", "lo", "up"],
        vec!["ip", "-n", &b, "link", "set", "lo", "up"],
    ];
    for cmd in setup {
        if let Err(e) = sh(&cmd) {
            skip(test, &format!("lab setup failed ({e})"));
            return None;
        }
    }
    Some(pair)
}

/// The receiver's Mbit/s of an `iperf3 --json` client run.
fn received_mbps(report: &str) -> f64 {
    let report: Value = serde_json::from_str(report).unwrap_or(Value::Null);
    let end = &report["end"];
    end["sum_received"]["bits_per_second"]
        .as_f64()
        .or_else(|| end["sum"]["bits_per_second"].as_f64())
        .unwrap_or(0.0)
        / 1e6
}

/// With a link rate, the classes borrow from their parent: best-effort
/// alone fills the link, and ai-sync gets its guaranteed rate as soon as
/// it sends, best-effort keeping the rest. Proven by traffic (iperf3).
#[tokio::test]
async fn lab_rate_limit_is_work_conserving() {
    let test = "lab_rate_limit_is_work_conserving";
    if sh(&["iperf3", "--version"]).is_err() {
        skip(test, "iperf3 is missing");
        return;
    }
    let Some(pair) = pair(test) else {
        return;
    };
    let kernel = Kernel::in_namespace(&pair.a.name).unwrap();
    let desired = NodeState {
        rate_limits: vec![RateLimit {
            interface: "wca".into(),
            default_class: Some(3),
            link_bps: Some(20_000_000),
            classes: vec![
                ClassLimit {
                    class_id: 1,
                    rate_bps: 15_000_000,
                    ceil_bps: 20_000_000,
                    dscp: vec![26],
                },
                ClassLimit {
                    class_id: 3,
                    rate_bps: 5_000_000,
                    ceil_bps: 20_000_000,
                    dscp: vec![],
                },
            ],
        }],
        ..NodeState::default()
    };
    match kernel.apply(&desired).await {
        Ok(_) => {}
        Err(e @ KernelError::MissingFeature { .. }) => {
            skip(test, &e.to_string());
            return;
        }
        Err(e) => panic!("{e}"),
    }
    // The parent and its two classes, read back as desired.
    assert_eq!(kernel.observe().await.unwrap(), desired.normalized());
    let classes = pair.a.run(&["tc", "class", "show", "dev", "wca"]);
    assert!(classes.contains("class htb a1:ffff root"), "{classes}");
    assert!(
        classes.contains("class htb a1:1 parent a1:ffff"),
        "{classes}"
    );
    assert!(kernel.apply(&desired).await.unwrap().is_noop());

    let server = |port: &str| {
        std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &pair.b.name,
                "iperf3",
                "--server",
                "--one-off",
            ])
            .args(["--bind", "10.77.0.2", "--port", port])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let client = |port: &str, extra: &[&str]| {
        let mut command = std::process::Command::new("ip");
        command
            .args([
                "netns",
                "exec",
                &pair.a.name,
                "iperf3",
                "--json",
                "--client",
            ])
            .args(["10.77.0.2", "--port", port, "--time", "5"])
            .args(extra);
        command
    };
    let wait_listening = || std::thread::sleep(Duration::from_millis(500));

    // Best-effort alone fills the 20 Mbit/s link (its own rate is 5).
    let mut best_effort_server = server("5301");
    wait_listening();
    let alone = client("5301", &[]).output().unwrap();
    let _ = best_effort_server.wait();
    let alone = received_mbps(&String::from_utf8_lossy(&alone.stdout));
    assert!(alone > 16.0, "best-effort alone: {alone:.1} Mbit/s of 20");

    // With ai-sync sending 15 Mbit/s (UDP, DSCP 26), ai-sync gets its rate
    // and best-effort what is left.
    let mut servers = [server("5301"), server("5302")];
    wait_listening();
    let best_effort = client("5301", &[]).spawn_output();
    let sync = client("5302", &["--udp", "--bitrate", "15M", "--dscp", "26"])
        .output()
        .unwrap();
    let best_effort = best_effort.join().unwrap();
    for server in &mut servers {
        let _ = server.wait();
    }
    let sync = received_mbps(&String::from_utf8_lossy(&sync.stdout));
    let best_effort = received_mbps(&String::from_utf8_lossy(&best_effort.stdout));
    eprintln!(
        "{test}: best-effort alone {alone:.1} Mbit/s; beside ai-sync {best_effort:.1}, \
         ai-sync {sync:.1}"
    );
    assert!(
        sync > 13.5,
        "ai-sync beside best-effort: {sync:.1} Mbit/s of 15"
    );
    assert!(
        best_effort < 8.0 && best_effort > 2.0,
        "best-effort beside ai-sync: {best_effort:.1} Mbit/s (its rate 5)"
    );

    // Without the link rate, the same classes sit under the qdisc again
    // (rebuilt: htb moves no class to another parent).
    let mut flat = desired.clone();
    flat.rate_limits[0].link_bps = None;
    flat.rate_limits[0].classes[0].ceil_bps = 15_000_000;
    flat.rate_limits[0].classes[1].ceil_bps = 5_000_000;
    kernel.apply(&flat).await.unwrap();
    assert_eq!(kernel.observe().await.unwrap(), flat.normalized());
    kernel.purge().await.unwrap();
}

/// Runs a command on a thread, for its output later.
trait SpawnOutput {
    fn spawn_output(&mut self) -> std::thread::JoinHandle<std::process::Output>;
}

impl SpawnOutput for std::process::Command {
    fn spawn_output(&mut self) -> std::thread::JoinHandle<std::process::Output> {
        let child = self
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::spawn(move || child.wait_with_output().unwrap())
    }
}

#[tokio::test]
async fn lab_push_10k_routes() {
    let Some(lab) = lab("lab_push_10k_routes") else {
        return;
    };
    let kernel = lab.kernel();
    let routes: Vec<UcmpRoute> = (0..10_000u32)
        .map(|i| {
            ucmp(
                &format!("10.{}.{}.0/24", 100 + i / 256, i % 256),
                20010,
                vec![
                    nh("10.0.1.2", "veth1", 1 + i % 200),
                    nh("10.0.2.2", "veth2", 1 + (i * 7) % 200),
                ],
            )
        })
        .collect();
    let desired = NodeState {
        routes,
        ..NodeState::default()
    };
    let start = Instant::now();
    let report = kernel.apply(&desired).await.unwrap();
    let push = start.elapsed();
    assert_eq!(report.created, 10_000);
    let start = Instant::now();
    let report = kernel.apply(&desired).await.unwrap();
    let noop = start.elapsed();
    assert_eq!(report.unchanged, 10_000);
    assert_eq!(kernel.observe().await.unwrap().routes.len(), 10_000);
    let start = Instant::now();
    assert_eq!(kernel.purge().await.unwrap().deleted, 10_000);
    let purge = start.elapsed();
    eprintln!(
        "lab_push_10k_routes: push {} ms, re-apply (no change) {} ms, purge {} ms",
        push.as_millis(),
        noop.as_millis(),
        purge.as_millis()
    );
}

/// What the agent reports of its interfaces, from the kernel's own dumps:
/// addresses with their prefix lengths, carrier, and neighbour entries
/// that resolved (a permanent one here; failed ones are left out).
#[tokio::test]
async fn lab_interface_inventory() {
    let Some(lab) = lab("lab_interface_inventory") else {
        return;
    };
    let n = lab.name.as_str();
    for cmd in [
        vec!["ip", "-n", n, "addr", "add", "192.0.2.1/31", "dev", "veth1"],
        vec!["ip", "-n", n, "addr", "add", "198.51.100.1/32", "dev", "lo"],
        vec![
            "ip",
            "-n",
            n,
            "neigh",
            "add",
            "10.0.1.9",
            "lladdr",
            "02:00:00:00:00:09",
            "dev",
            "veth1",
            "nud",
            "permanent",
        ],
        vec![
            "ip",
            "-n",
            n,
            "neigh",
            "add",
            "10.0.1.10",
            "dev",
            "veth1",
            "nud",
            "failed",
        ],
        vec!["ip", "-n", n, "link", "set", "veth2p", "down"],
    ] {
        sh(&cmd).unwrap();
    }
    let reports = lab.kernel().inventory().await.unwrap();
    let find = |name: &str| {
        reports
            .iter()
            .find(|r| r.name == name)
            .unwrap_or_else(|| panic!("no {name} in {reports:?}"))
    };
    let veth1 = find("veth1");
    let addresses: Vec<String> = veth1.addresses.iter().map(|a| a.to_string()).collect();
    for expected in ["10.0.1.1/24", "192.0.2.1/31", "fc00:1::1/64"] {
        assert!(addresses.contains(&expected.to_string()), "{addresses:?}");
    }
    assert!(
        addresses.iter().any(|a| a.starts_with("fe80::")),
        "a link-local address: {addresses:?}"
    );
    assert!(veth1.up);
    assert_eq!(
        veth1.neighbours,
        vec!["10.0.1.9".parse::<std::net::IpAddr>().unwrap()]
    );
    // veth2's peer is down: no carrier.
    assert!(!find("veth2").up);
    assert!(
        find("lo")
            .addresses
            .contains(&"198.51.100.1/32".parse().unwrap())
    );
}
