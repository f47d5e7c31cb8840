//! Real exporters replaying captures we write: softflowd (NetFlow v5, v9,
//! IPFIX) and pmacctd's nfprobe (v5, v9, IPFIX) and sfprobe (sFlow,
//! sampling 1) send to the collector over loopback UDP, through the
//! listeners and the store. Record, packet and byte totals must equal what
//! the capture holds.
//!
//! Needs the Debian tools softflowd and pmacct; skips with a reason when
//! they are missing, fails instead under `AIWAN_REQUIRE_LAB=1`.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use aiwan_collectors::listener::{ListenerConfig, totals};
use aiwan_collectors::pcap::{FrameTransport, PcapWriter, ethernet_frame};
use aiwan_collectors::pipeline;
use aiwan_collectors::record::FlowProtocol;
use aiwan_collectors::stats::ExporterCounters;
use aiwan_collectors::store::{StoreConfig, TelemetryStore, TimeWindow};

fn lab_required() -> bool {
    std::env::var("AIWAN_REQUIRE_LAB").is_ok_and(|v| v == "1")
}

/// `None` (skipped, with the reason printed) or, under
/// `AIWAN_REQUIRE_LAB=1`, a failure.
fn skip(test: &str, reason: &str) -> Option<()> {
    assert!(!lab_required(), "{test}: AIWAN_REQUIRE_LAB=1 but {reason}");
    eprintln!("SKIPPED {test}: {reason}");
    None
}

fn have(tool: &str) -> bool {
    std::process::Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// What a written capture holds.
struct Capture {
    path: PathBuf,
    packets: u64,
    /// IP bytes (IP header on), as NetFlow and IPFIX count them.
    ip_bytes: u64,
    /// Distinct unidirectional 5-tuples.
    flows: u64,
}

/// Where the filler packets come from: not part of the capture's totals.
const FILLER_SOURCE: [u8; 4] = [10, 255, 255, 1];

/// A deterministic mix of TCP and UDP flows with varied sizes and DSCPs,
/// every packet within a second so no exporter timeout splits a flow.
/// IPv6 flows only when `ipv6` (NetFlow v5 cannot carry them). With
/// `filler`, 24 packets of one more flow end the capture, outside the
/// totals: pmacctd's sfprobe never sends the samples of its last, partly
/// filled datagram, so something must follow the traffic under test.
fn write_capture(dir: &Path, ipv6: bool, filler: bool) -> Capture {
    let path = dir.join("traffic.pcap");
    let file = std::fs::File::create(&path).expect("create pcap");
    let mut writer = PcapWriter::new(std::io::BufWriter::new(file)).expect("pcap header");
    let start_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as i64;
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut flows = BTreeSet::new();
    let (mut packets, mut ip_bytes) = (0u64, 0u64);
    let mut frames = Vec::new();
    for flow in 0..48u16 {
        let v6 = ipv6 && flow % 4 == 3;
        let (source, destination): (SocketAddr, SocketAddr) = if v6 {
            (
                SocketAddr::new(
                    format!("fd00:1:1::{}", flow + 1).parse().expect("v6"),
                    40_000 + flow,
                ),
                SocketAddr::new(
                    format!("fd00:2:1::{}", flow % 5 + 1).parse().expect("v6"),
                    9000,
                ),
            )
        } else {
            (
                SocketAddr::new(IpAddr::from([10, 1, 1, (flow + 1) as u8]), 40_000 + flow),
                SocketAddr::new(IpAddr::from([10, 2, 1, (flow % 5 + 1) as u8]), 4791),
            )
        };
        let udp = flow % 3 != 0;
        let tos = [0x00, 0x68, 0x28, 0xb8][usize::from(flow % 4)];
        let count = 1 + next() % 12;
        for i in 0..count {
            let transport = if udp {
                FrameTransport::Udp
            } else {
                FrameTransport::Tcp {
                    sequence: 1 + i as u32 * 1000,
                    acknowledgment: 1,
                    flags: 0x18, // PSH, ACK: mid-connection segments
                }
            };
            let payload = (next() % 1400) as usize;
            let frame =
                ethernet_frame(source, destination, transport, tos, payload).expect("frame");
            ip_bytes += (frame.len() - 14) as u64;
            packets += 1;
            frames.push(frame);
        }
        flows.insert((source, destination, udp));
    }
    // Interleave the flows' packets as a link would.
    let order: Vec<usize> = {
        let mut order: Vec<usize> = (0..frames.len()).collect();
        for i in (1..order.len()).rev() {
            order.swap(i, (next() as usize) % (i + 1));
        }
        order
    };
    for (n, index) in order.iter().enumerate() {
        writer
            .write_frame(start_ns + n as i64 * 1_000_000, &frames[*index])
            .expect("frame");
    }
    if filler {
        let source = SocketAddr::new(IpAddr::from(FILLER_SOURCE), 9);
        let destination = SocketAddr::new(IpAddr::from([10, 255, 255, 2]), 9);
        for n in 0..24 {
            let frame =
                ethernet_frame(source, destination, FrameTransport::Udp, 0, 1000).expect("frame");
            let at = start_ns + (frames.len() + n) as i64 * 1_000_000;
            writer.write_frame(at, &frame).expect("frame");
        }
    }
    writer.flush().expect("flush pcap");
    Capture {
        path,
        packets,
        ip_bytes,
        flows: flows.len() as u64,
    }
}

/// What a run collected: the exporters' totals, and the store's packets,
/// bytes and records of the traffic under test (filler left out).
struct Collected {
    totals: ExporterCounters,
    stored_packets: u64,
    stored_bytes: u64,
    stored_records: u64,
}

/// Runs `command` against a collector on loopback until `done` holds for
/// the totals (or 30 s pass), then stops the collector and returns what it
/// collected.
async fn collect_while(
    protocol: FlowProtocol,
    command: impl FnOnce(SocketAddr) -> std::process::Command,
    done: impl Fn(&ExporterCounters) -> bool,
) -> Collected {
    let store = Arc::new(RwLock::new(
        TelemetryStore::new(StoreConfig::default()).expect("store"),
    ));
    let config = ListenerConfig {
        netflow_listen: Some("127.0.0.1:0".parse().expect("addr")),
        sflow_listen: Some("127.0.0.1:0".parse().expect("addr")),
        shards: 2,
        flush_interval: Duration::from_millis(50),
        ..ListenerConfig::default()
    };
    let started_ms = aiwan_collectors::listener::now_ms();
    let running = pipeline::start(&config, Arc::clone(&store))
        .await
        .expect("listen");
    let target = match protocol {
        FlowProtocol::Sflow => running.collector.sflow_address,
        _ => running.collector.netflow_address,
    }
    .expect("bound");
    // The exporter in a process group of its own, so that stopping it
    // stops pmacctd's plugin processes too; its log in a file, which no
    // lingering child can hold open against us.
    let log = tempfile::NamedTempFile::new().expect("log file");
    let mut child = {
        use std::os::unix::process::CommandExt;
        command(target)
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(log.reopen().expect("log file"))
            .spawn()
            .expect("exporter starts")
    };
    let board = running.collector.board();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let exporters: Vec<_> = board
            .exporters()
            .into_iter()
            .filter(|e| e.key.protocol == protocol)
            .collect();
        if done(&totals(&exporters)) || Instant::now() > deadline {
            break;
        }
    }
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let _ = child.wait();
    let said = std::fs::read_to_string(log.path()).unwrap_or_default();
    let _ = running.stop().await;
    let exporters: Vec<_> = board
        .exporters()
        .into_iter()
        .filter(|e| e.key.protocol == protocol)
        .collect();
    for exporter in &exporters {
        assert_eq!(
            exporter.last_error, None,
            "{}; the exporter said: {said}",
            exporter.key
        );
    }
    assert!(
        !exporters.is_empty(),
        "nothing arrived; the exporter said: {said}"
    );
    let store = store.read().expect("store lock");
    let window = TimeWindow::new(
        started_ms - 5_000,
        aiwan_collectors::listener::now_ms() + 5_000,
    );
    let flows: Vec<_> = store
        .top_flows(window, 100_000)
        .expect("top flows")
        .into_iter()
        .filter(|f| f.src_addr != IpAddr::from(FILLER_SOURCE))
        .collect();
    Collected {
        totals: totals(&exporters),
        stored_packets: flows.iter().map(|f| f.packets).sum(),
        stored_bytes: flows.iter().map(|f| f.bytes).sum(),
        stored_records: flows.iter().map(|f| f.flows).sum(),
    }
}

/// The exporter's totals equal the capture's (NetFlow and IPFIX, no
/// filler), and so does what the store holds.
fn check(name: &str, got: &Collected, records: u64, capture: &Capture) {
    let t = &got.totals;
    assert_eq!(
        (t.records, t.packets, t.bytes),
        (records, capture.packets, capture.ip_bytes),
        "{name}: records, packets, bytes"
    );
    assert_eq!(t.bytes_scaled, capture.ip_bytes, "{name}: sampling 1");
    check_common(name, got, records, capture);
}

fn check_common(name: &str, got: &Collected, records: u64, capture: &Capture) {
    let t = &got.totals;
    assert_eq!(
        (t.decode_errors, t.template_misses, t.sequence_gaps),
        (0, 0, 0),
        "{name}: errors, template misses, gaps"
    );
    assert_eq!(
        (got.stored_records, got.stored_packets, got.stored_bytes),
        (records, capture.packets, capture.ip_bytes),
        "{name}: records, packets, bytes in the store"
    );
}

fn softflowd(
    capture: &Path,
    version: &str,
    ipv6: bool,
) -> impl FnOnce(SocketAddr) -> std::process::Command {
    let capture = capture.to_path_buf();
    let version = version.to_string();
    move |target| {
        // softflowd keeps the -r file name in an interface-name sized
        // buffer (16 bytes): give it a short relative name.
        let dir = capture.parent().unwrap_or(Path::new("."));
        let name = capture.file_name().unwrap_or_default();
        let mut command = std::process::Command::new("softflowd");
        command.current_dir(dir);
        command
            .args(["-d", "-r"])
            .arg(name)
            .args(["-n", &target.to_string(), "-v", &version]);
        // Pid file and control socket in the test's own folder (softflowd
        // unlinks the control socket path at start), by short relative
        // names: with a control socket path of 20-odd characters softflowd
        // 1.1.0 never exits at the end of the capture.
        command.args(["-p", "p", "-c", "c"]);
        if ipv6 {
            command.arg("-6");
        }
        command
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn softflowd_replays_are_counted_exactly() {
    let test = "softflowd_replays_are_counted_exactly";
    if !have("softflowd") {
        return skip(
            test,
            "softflowd is not installed (apt-get install softflowd)",
        )
        .unwrap_or(());
    }
    let dir = tempfile::tempdir().expect("tempdir");
    for (version, protocol, ipv6) in [
        ("5", FlowProtocol::NetflowV5, false),
        ("9", FlowProtocol::NetflowV9, true),
        ("10", FlowProtocol::Ipfix, true),
    ] {
        let sub = dir.path().join(version);
        std::fs::create_dir_all(&sub).expect("dir");
        let capture = write_capture(&sub, ipv6, false);
        let flows = capture.flows;
        let got = collect_while(protocol, softflowd(&capture.path, version, ipv6), |t| {
            t.records >= flows
        })
        .await;
        check(&format!("softflowd -v {version}"), &got, flows, &capture);
    }
}

/// A pmacctd configuration reading `capture` into one plugin.
fn pmacctd(
    dir: &Path,
    capture: &Path,
    plugin: &str,
) -> impl FnOnce(SocketAddr) -> std::process::Command {
    let dir = dir.to_path_buf();
    let capture = capture.to_path_buf();
    let plugin = plugin.to_string();
    move |target| {
        let body = match plugin.as_str() {
            // pmacctd stays up after the end of the capture (until the
            // test stops it): exiting there can cut off samples the sfprobe
            // plugin has not sent yet, more of them the busier the
            // machine. nfprobe must exit instead, which is when it exports
            // the flows it holds.
            "sfprobe" => format!(
                "plugins: sfprobe\nsfprobe_receiver: {target}\nsampling_rate: 1\n\
                 pcap_savefile_wait: true\n"
            ),
            version => format!(
                "plugins: nfprobe\nnfprobe_receiver: {target}\nnfprobe_version: {version}\n\
                 aggregate: src_host, dst_host, src_port, dst_port, proto, tos\n"
            ),
        };
        let config = dir.join(format!("pmacctd-{plugin}.conf"));
        let text = format!(
            "daemonize: false\npidfile: {}\npcap_savefile: {}\n{body}",
            dir.join("pmacctd.pid").display(),
            capture.display()
        );
        std::fs::write(&config, text).expect("write pmacctd config");
        let mut command = std::process::Command::new("pmacctd");
        command.arg("-f").arg(config);
        command
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pmacctd_probe_replays_are_counted_exactly() {
    let test = "pmacctd_probe_replays_are_counted_exactly";
    if !have("pmacctd") {
        return skip(test, "pmacctd is not installed (apt-get install pmacct)").unwrap_or(());
    }
    let dir = tempfile::tempdir().expect("tempdir");
    for (plugin, protocol, ipv6) in [
        ("5", FlowProtocol::NetflowV5, false),
        ("9", FlowProtocol::NetflowV9, true),
        ("10", FlowProtocol::Ipfix, true),
        ("sfprobe", FlowProtocol::Sflow, true),
    ] {
        let sub = dir.path().join(plugin);
        std::fs::create_dir_all(&sub).expect("dir");
        let sflow = protocol == FlowProtocol::Sflow;
        let capture = write_capture(&sub, ipv6, sflow);
        let name = format!("pmacctd {plugin}");
        if sflow {
            // At sampling 1 every packet is a sample, a record of its own;
            // the filler's samples come on top, all but the unsent tail.
            let records = capture.packets;
            let got = collect_while(protocol, pmacctd(&sub, &capture.path, plugin), |t| {
                t.records >= records + 18
            })
            .await;
            assert!(
                got.totals.records >= records,
                "{name}: {} samples",
                got.totals.records
            );
            check_common(&name, &got, records, &capture);
        } else {
            let records = capture.flows;
            let got = collect_while(protocol, pmacctd(&sub, &capture.path, plugin), |t| {
                t.records >= records
            })
            .await;
            check(&name, &got, records, &capture);
        }
    }
}

/// softflowd's datagrams, taken off a plain UDP socket, decoded by our
/// decoder and by the `netflow_parser` crate: the same flows, record by
/// record (addresses, ports, protocol), for v5, v9 and IPFIX.
#[test]
fn softflowd_datagrams_decode_as_netflow_parser_decodes_them() {
    use aiwan_collectors::netflow::NetflowDecoder;
    use aiwan_collectors::record::{FlowBatch, u128_to_addr};

    let test = "softflowd_datagrams_decode_as_netflow_parser_decodes_them";
    if !have("softflowd") {
        return skip(
            test,
            "softflowd is not installed (apt-get install softflowd)",
        )
        .unwrap_or(());
    }
    let dir = tempfile::tempdir().expect("tempdir");
    for (version, ipv6) in [("5", false), ("9", true), ("10", true)] {
        let sub = dir.path().join(version);
        std::fs::create_dir_all(&sub).expect("dir");
        let capture = write_capture(&sub, ipv6, false);
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let target = socket.local_addr().expect("address");
        let mut child = softflowd(&capture.path, version, ipv6)(target)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("softflowd starts");
        let mut datagrams = Vec::new();
        let mut buffer = vec![0u8; 65_536];
        while let Ok((length, _)) = socket.recv_from(&mut buffer) {
            datagrams.push(buffer[..length].to_vec());
            // Every flow has been exported once as many records came.
            let _ = child.try_wait();
        }
        let _ = child.kill();
        let _ = child.wait();
        assert!(!datagrams.is_empty(), "softflowd -v {version} sent nothing");

        let mut ours = Vec::new();
        let mut decoder = NetflowDecoder::default();
        let mut batch = FlowBatch::default();
        for datagram in &datagrams {
            decoder
                .decode(target, 0, datagram, &mut batch)
                .expect("our decoder takes softflowd's datagrams");
        }
        for i in 0..batch.len() {
            let (_, r) = batch.record(i).expect("row");
            ours.push((
                u128_to_addr(r.src_addr),
                u128_to_addr(r.dst_addr),
                r.src_port,
                r.dst_port,
                r.protocol,
            ));
        }
        let mut theirs = Vec::new();
        let mut parser = netflow_parser::NetflowParser::default();
        for datagram in &datagrams {
            let parsed = parser.parse_bytes(datagram);
            assert!(parsed.error.is_none(), "netflow_parser: {:?}", parsed.error);
            for packet in &parsed.packets {
                let common = packet.as_netflow_common().expect("common form");
                for set in common.flowsets {
                    // Template flowsets come out as entries with no field.
                    if set.src_addr.is_none()
                        && set.src_port.is_none()
                        && set.protocol_number.is_none()
                    {
                        continue;
                    }
                    let (Some(src), Some(dst)) = (set.src_addr, set.dst_addr) else {
                        panic!(
                            "softflowd -v {version}: netflow_parser gave a record without addresses: {set:?}"
                        );
                    };
                    theirs.push((
                        src,
                        dst,
                        set.src_port.unwrap_or(0),
                        set.dst_port.unwrap_or(0),
                        set.protocol_number.unwrap_or(0),
                    ));
                }
            }
        }
        ours.sort();
        theirs.sort();
        assert_eq!(ours.len() as u64, capture.flows, "softflowd -v {version}");
        assert_eq!(ours, theirs, "softflowd -v {version}");
    }
}
