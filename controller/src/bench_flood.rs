//! `aiwan bench flood`: `aiwan collect` (this binary, as a child process)
//! under a flood from one sender of IPFIX templates in new observation
//! domains (half of them wider than the collector takes), beside a
//! legitimate exporter that was sending before the flood began. Measured:
//! the collector's peak RSS against its configured store budget and
//! against the same run without the flood (the reference, in the same
//! bench), and whether the legitimate exporter lost any record.

use std::io::Read;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use aiwan_collectors::netflow::encode::{IpfixExporter, MessageBuilder, data_template};
use aiwan_collectors::netflow::template::ie;
use aiwan_collectors::record::FlowRecord;
use anyhow::{Context, bail};
use serde_json::{Value, json};

/// Arguments of `aiwan bench flood`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchFloodArgs {
    /// Seconds of flood (and of the reference run).
    #[arg(long, default_value_t = 30.0)]
    pub seconds: f64,
    /// Flood datagrams a second.
    #[arg(long, default_value_t = 10_000.0)]
    pub rate: f64,
    /// The collector's store budget in bytes (`aiwan collect --memory-budget`).
    #[arg(long, default_value_t = 256 << 20)]
    pub memory_budget: u64,
    /// Print one JSON document.
    #[arg(long)]
    pub json: bool,
}

/// The legitimate exporter's observation domain, far from the flood's.
const LEGIT_DOMAIN: u32 = 7;
/// Its datagrams a second and records in each.
const LEGIT_RATE: f64 = 200.0;
const LEGIT_RECORDS: usize = 10;
/// The target: peak RSS within the budget plus this share.
const RSS_ALLOWANCE: f64 = 1.2;

/// One run of `aiwan collect`: what it used and what it decoded.
struct RunResult {
    rss_peak_bytes: u64,
    legit_sent: u64,
    legit_decoded: u64,
    flood_sent: u64,
    summary: Value,
}

fn free_udp_port() -> anyhow::Result<u16> {
    Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Sends `datagrams(i)` for i = 0.. at `rate` a second until `stop`.
fn send_paced(
    target: u16,
    rate: f64,
    stop: &AtomicBool,
    mut datagram: impl FnMut(u64) -> Vec<u8>,
) -> anyhow::Result<u64> {
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    socket.connect(("127.0.0.1", target))?;
    let started = Instant::now();
    let mut sent = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let due = (started.elapsed().as_secs_f64() * rate) as u64;
        while sent < due {
            // A full socket buffer or a refused send is the collector's
            // loss to show, not the sender's error.
            let _ = socket.send(&datagram(sent));
            sent += 1;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(sent)
}

/// The flood's `i`-th datagram: a template set in a new observation
/// domain; even ones a template of 120 fields (taken, up to the caps),
/// odd ones 500 fields (refused: wider than the collector takes).
fn flood_datagram(i: u64) -> Vec<u8> {
    let fields = if i.is_multiple_of(2) { 120 } else { 500 };
    let template = data_template(
        256 + (i % 60_000) as u16,
        &vec![(ie::OCTET_DELTA_COUNT, 8); fields],
    );
    MessageBuilder::ipfix(1_000 + i as u32, 0, 1_800_000_000)
        .template(&template)
        .finish()
}

fn legit_records(n: u64) -> Vec<FlowRecord> {
    (0..LEGIT_RECORDS as u64)
        .map(|k| FlowRecord {
            src_addr: aiwan_collectors::record::addr_to_u128("10.1.0.1".parse().expect("literal")),
            dst_addr: aiwan_collectors::record::addr_to_u128("10.2.0.1".parse().expect("literal")),
            src_port: 40_000 + (k as u16),
            dst_port: 4791,
            protocol: 17,
            bytes: 1_000 + n,
            packets: 1,
            ..FlowRecord::default()
        })
        .collect()
}

fn wait_for_port(child: &mut Child, port: u16) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    // The collector binds without SO_REUSEADDR for others: once our own
    // bind fails, it listens.
    while UdpSocket::bind(("127.0.0.1", port)).is_ok() {
        if let Some(status) = child.try_wait()? {
            bail!("aiwan collect exited before listening: {status}");
        }
        if Instant::now() > deadline {
            bail!("aiwan collect did not listen on {port} within 20 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn run(args: &BenchFloodArgs, flood: bool, dir: &Path) -> anyhow::Result<RunResult> {
    let port = free_udp_port()?;
    let exe = std::env::current_exe().context("this binary")?;
    let mut child = Command::new(exe)
        .args([
            "collect",
            "--netflow-listen",
            &format!("127.0.0.1:{port}"),
            "--duration",
            &format!("{}", args.seconds + 4.0),
            "--memory-budget",
            &args.memory_budget.to_string(),
            "--json",
            "--data-dir",
        ])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("aiwan collect")?;
    let pid = child.id();
    // Its summary lists every exporter (tens of thousands in a flood):
    // read while it runs, or it blocks on a full pipe.
    let mut stdout = child.stdout.take().context("collect's stdout")?;
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        stdout.read_to_string(&mut text).map(|_| text)
    });
    wait_for_port(&mut child, port)?;
    let stop = Arc::new(AtomicBool::new(false));
    let legit = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut exporter = IpfixExporter::new(LEGIT_DOMAIN, 10);
            send_paced(port, LEGIT_RATE, &stop, |n| {
                exporter.export(&legit_records(n), 1_800_000_000).remove(0)
            })
        })
    };
    // The legitimate exporter is known before the flood starts.
    std::thread::sleep(Duration::from_secs(1));
    let flooder = flood.then(|| {
        let stop = Arc::clone(&stop);
        let rate = args.rate;
        std::thread::spawn(move || send_paced(port, rate, &stop, flood_datagram))
    });
    let started = Instant::now();
    let mut rss_peak = 0u64;
    while started.elapsed().as_secs_f64() < args.seconds {
        rss_peak = rss_peak.max(rss_bytes(pid).unwrap_or(0));
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    let legit_datagrams = legit
        .join()
        .map_err(|_| anyhow::anyhow!("legit sender panicked"))??;
    let flood_sent = match flooder {
        Some(handle) => handle
            .join()
            .map_err(|_| anyhow::anyhow!("flood sender panicked"))??,
        None => 0,
    };
    // Until it exits (its duration ends): RSS through the summary too.
    while child.try_wait()?.is_none() {
        rss_peak = rss_peak.max(rss_bytes(pid).unwrap_or(0));
        std::thread::sleep(Duration::from_millis(50));
    }
    let stdout = reader
        .join()
        .map_err(|_| anyhow::anyhow!("stdout reader panicked"))??;
    let summary: Value = serde_json::from_str(stdout.trim())
        .with_context(|| format!("aiwan collect's summary: {stdout}"))?;
    let legit_decoded = summary["exporters"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["observation_domain"] == json!(LEGIT_DOMAIN))
        .map(|e| e["records"].as_u64().unwrap_or(0))
        .sum();
    Ok(RunResult {
        rss_peak_bytes: rss_peak,
        legit_sent: legit_datagrams * LEGIT_RECORDS as u64,
        legit_decoded,
        flood_sent,
        summary,
    })
}

fn run_json(result: &RunResult, seconds: f64) -> Value {
    json!({
        "rss_peak_bytes": result.rss_peak_bytes,
        "legit_records_sent": result.legit_sent,
        "legit_records_decoded": result.legit_decoded,
        "legit_records_lost": result.legit_sent.saturating_sub(result.legit_decoded),
        "flood_datagrams_sent": result.flood_sent,
        "flood_rate": result.flood_sent as f64 / seconds.max(1e-9),
        "decode_errors": result.summary["totals"]["decode_errors"],
        "rejected_datagrams": result.summary["rejected_datagrams"],
        "kernel_drops": result.summary["kernel_drops"],
        "exporters": result.summary["exporters"].as_array().map_or(0, Vec::len),
        "store_estimated_bytes": result.summary["store"]["estimated_bytes"],
    })
}

/// A scratch directory of this run, removed at the end (it is ours).
fn scratch_dir(name: &str) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("aiwan-bench-flood-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("{}", dir.display()))?;
    Ok(dir)
}

pub fn bench_flood(args: &BenchFloodArgs) -> anyhow::Result<()> {
    if !(args.seconds.is_finite() && args.seconds > 0.0) {
        bail!("--seconds: {} is not a positive number", args.seconds);
    }
    if !(args.rate.is_finite() && args.rate > 0.0) {
        bail!("--rate: {} is not a positive number", args.rate);
    }
    let mut results = Vec::new();
    for (name, flood) in [("reference", false), ("flood", true)] {
        let dir = scratch_dir(name)?;
        let result = run(args, flood, &dir);
        std::fs::remove_dir_all(&dir).ok();
        results.push(result?);
    }
    let (reference, flood) = (&results[0], &results[1]);
    let budget = args.memory_budget as f64;
    let report = json!({
        "seconds": args.seconds,
        "memory_budget_bytes": args.memory_budget,
        "reference": run_json(reference, args.seconds),
        "flood": run_json(flood, args.seconds),
        "flood_rss_over_budget": flood.rss_peak_bytes as f64 / budget,
        "flood_rss_over_reference": flood.rss_peak_bytes as f64 / (reference.rss_peak_bytes.max(1)) as f64,
        "target_rss_within_budget_plus_20pct": (flood.rss_peak_bytes as f64) <= budget * RSS_ALLOWANCE,
        "target_legit_lost_nothing": flood.legit_decoded >= flood.legit_sent,
    });
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}
