//! `aiwan bench collector`: IPFIX records decoded and written into the
//! telemetry store per second on one core, from a capture replayed
//! in-process; the same over loopback UDP at half that rate, where nothing
//! may be lost; and pmacct's nfacctd on the same capture in the same run,
//! so the figure comes with its ratio.

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use aiwan_collectors::listener::{ListenerConfig, kernel_drops, totals};
use aiwan_collectors::netflow::encode::IpfixExporter;
use aiwan_collectors::netflow::{NetflowDecoder, NetflowOptions};
use aiwan_collectors::pcap::{FrameTransport, PcapWriter, ethernet_frame};
use aiwan_collectors::pipeline;
use aiwan_collectors::record::{FlowBatch, FlowRecord, addr_to_u128};
use aiwan_collectors::store::{SitePrefix, StoreConfig, TelemetryStore};
use anyhow::{Context, bail};
use serde_json::{Value, json};

/// Arguments of `aiwan bench collector`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchCollectorArgs {
    /// IPFIX records in the replayed capture.
    #[arg(long, default_value_t = 2_000_000)]
    pub records: usize,
    /// Distinct flows (5-tuples) the records belong to.
    #[arg(long, default_value_t = 50_000)]
    pub flows: usize,
    /// Seconds of the loopback run.
    #[arg(long, default_value_t = 4.0)]
    pub loopback_seconds: f64,
    /// The core the in-process run and nfacctd are pinned to.
    #[arg(long, default_value_t = 0)]
    pub core: usize,
    /// Timed in-process runs (after one untimed); the median counts, the
    /// best and every run are printed beside it.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Skip nfacctd (when pmacct is not installed).
    #[arg(long)]
    pub skip_nfacctd: bool,
    /// Print one JSON document.
    #[arg(long)]
    pub json: bool,
}

/// The replayed stream: IPFIX datagrams from one exporter and the number
/// of flow records each holds.
struct Stream {
    datagrams: Vec<Vec<u8>>,
    records_in: Vec<u32>,
    records: usize,
    packets: u64,
    bytes: u64,
}

/// The sites of the synthetic stream: AI clusters' GPU subnets.
const SITES: usize = 16;

/// Seeded flows between `SITES` sites' hosts: RoCE (UDP 4791) for three
/// in four, the rest TCP; a tenth IPv6; sizes of bulk transfers.
fn build_stream(records: usize, flows: usize) -> Stream {
    let mut state = 0x853c_49e6_748f_ea9bu64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let flows = flows.max(1);
    let templates: Vec<FlowRecord> = (0..flows)
        .map(|i| {
            let src_site = (next() % SITES as u64) as u8;
            let dst_site = (next() % SITES as u64) as u8;
            let host = (next() % 250) as u8 + 1;
            let v6 = i % 10 == 9;
            let (src, dst) = if v6 {
                (
                    format!("fd00:{src_site}::{host}"),
                    format!("fd00:{dst_site}::{}", host / 2 + 1),
                )
            } else {
                (
                    format!("10.{src_site}.{}.{host}", i % 4),
                    format!("10.{dst_site}.{}.{}", (i / 4) % 4, host / 2 + 1),
                )
            };
            let roce = i % 4 != 0;
            FlowRecord {
                src_addr: addr_to_u128(
                    src.parse()
                        .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into()),
                ),
                dst_addr: addr_to_u128(
                    dst.parse()
                        .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into()),
                ),
                src_port: if roce {
                    49_152 + (i % 16_000) as u16
                } else {
                    30_000 + (i % 30_000) as u16
                },
                dst_port: if roce { 4791 } else { 443 },
                protocol: if roce { 17 } else { 6 },
                tos: if roce { 0x68 } else { 0x28 },
                in_if: 1 + (next() % 48) as u32,
                out_if: 1 + (next() % 48) as u32,
                sampling_rate: 1,
                ..FlowRecord::default()
            }
        })
        .collect();
    let mut exporter = IpfixExporter::new(1, 100);
    let mut stream = Stream {
        datagrams: Vec::new(),
        records_in: Vec::new(),
        records: 0,
        packets: 0,
        bytes: 0,
    };
    let export_secs = (aiwan_collectors::listener::now_ms() / 1000) as u32;
    let chunk = 4096;
    let mut batch = Vec::with_capacity(chunk);
    while stream.records < records {
        batch.clear();
        for _ in 0..chunk.min(records - stream.records) {
            let mut record = templates[(next() % flows as u64) as usize];
            record.packets = 1 + next() % 2000;
            record.bytes = record.packets * (64 + next() % 4000);
            record.flow_end_ms = i64::from(export_secs) * 1000;
            stream.packets += record.packets;
            stream.bytes += record.bytes;
            batch.push(record);
        }
        stream.records += batch.len();
        for datagram in exporter.export(&batch, export_secs) {
            stream.records_in.push(records_in_ipfix(&datagram));
            stream.datagrams.push(datagram);
        }
    }
    stream
}

/// Flow records in one of the stream's messages (data sets of the two
/// templates the exporter uses).
fn records_in_ipfix(datagram: &[u8]) -> u32 {
    let mut at = 16;
    let mut records = 0;
    while at + 4 <= datagram.len() {
        let id = u16::from_be_bytes([datagram[at], datagram[at + 1]]);
        let length = usize::from(u16::from_be_bytes([datagram[at + 2], datagram[at + 3]]));
        if length < 4 {
            break;
        }
        records += match id {
            256 => (length - 4) / 54,
            257 => (length - 4) / 78,
            _ => 0,
        };
        at += length;
    }
    records as u32
}

fn store_config() -> StoreConfig {
    StoreConfig {
        sites: (0..SITES)
            .flat_map(|site| [format!("10.{site}.0.0/16"), format!("fd00:{site}::/32")])
            .enumerate()
            .filter_map(|(i, prefix)| {
                Some(SitePrefix {
                    prefix: prefix.parse().ok()?,
                    site: format!("site{}", i / 2),
                })
            })
            .collect(),
        ..StoreConfig::default()
    }
}

/// Pins the calling thread (and the threads it starts later, Polars' pool
/// among them) to one core.
fn pin_to_core(core: usize) -> anyhow::Result<()> {
    let mut set = nix::sched::CpuSet::new();
    set.set(core).context("--core")?;
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
        .with_context(|| format!("cannot pin to core {core}"))
}

/// One in-process run: decode every datagram into batches and ingest them
/// into a fresh store, the received times spread over ten seconds so that
/// buckets close and roll up as they would live.
fn in_process_run(stream: &Stream, with_store: bool) -> anyhow::Result<(f64, u64)> {
    let mut decoder = NetflowDecoder::new(NetflowOptions::default());
    let mut store = TelemetryStore::new(store_config())?;
    let source: SocketAddr = "192.0.2.1:4739".parse()?;
    let base_ms = aiwan_collectors::listener::now_ms();
    let per_datagram_ms = 10_000.0 / stream.datagrams.len().max(1) as f64;
    let mut batch = FlowBatch::with_capacity(8192);
    let mut decoded = 0u64;
    let started = Instant::now();
    for (index, datagram) in stream.datagrams.iter().enumerate() {
        let received_ms = base_ms + (index as f64 * per_datagram_ms) as i64;
        let _ = decoder.decode(source, received_ms, datagram, &mut batch);
        if batch.len() >= 8192 {
            decoded += batch.len() as u64;
            if with_store {
                store.ingest_flows(&batch)?;
            }
            batch.clear();
        }
    }
    decoded += batch.len() as u64;
    if with_store {
        store.ingest_flows(&batch)?;
        store.advance(base_ms + 13_000)?;
    }
    let seconds = started.elapsed().as_secs_f64();
    if with_store {
        let stored: u64 = store.stats().records;
        if stored != stream.records as u64 {
            bail!("the store holds {stored} records of {}", stream.records);
        }
    }
    Ok((seconds, decoded))
}

fn in_process(stream: &Stream, core: usize, runs: usize) -> anyhow::Result<Value> {
    // A thread of its own, pinned, so that Polars' pool (started from it)
    // shares the one core.
    std::thread::scope(|scope| {
        scope
            .spawn(|| -> anyhow::Result<Value> {
                pin_to_core(core)?;
                // One run untimed: the first touches fresh memory (page
                // faults on every buffer) and says little of steady state.
                in_process_run(stream, true)?;
                let mut full = Vec::new();
                let mut decode_only = Vec::new();
                for _ in 0..runs.max(1) {
                    let (seconds, decoded) = in_process_run(stream, true)?;
                    if decoded != stream.records as u64 {
                        bail!("decoded {decoded} records of {}", stream.records);
                    }
                    full.push(stream.records as f64 / seconds);
                    let (seconds, _) = in_process_run(stream, false)?;
                    decode_only.push(stream.records as f64 / seconds);
                }
                let median_full = median(&full);
                Ok(json!({
                    "records_per_sec": median_full,
                    "ns_per_record": 1e9 / median_full,
                    "best_records_per_sec": full.iter().copied().fold(0.0, f64::max),
                    "decode_only_records_per_sec": median(&decode_only),
                    "runs_records_per_sec": full,
                    "core": core,
                }))
            })
            .join()
            .map_err(|_| anyhow::anyhow!("the in-process run panicked"))?
    })
}

/// Sends the stream over loopback at `rate` records per second for
/// `seconds`, rewriting sequence numbers so that the exporter looks like
/// one continuous stream, and counts what the collector got.
async fn loopback(stream: &Stream, rate: f64, seconds: f64) -> anyhow::Result<Value> {
    let store = Arc::new(RwLock::new(TelemetryStore::new(store_config())?));
    let config = ListenerConfig {
        netflow_listen: Some("127.0.0.1:0".parse()?),
        shards: 1,
        ..ListenerConfig::default()
    };
    let running = pipeline::start(&config, Arc::clone(&store)).await?;
    let target = running
        .collector
        .netflow_address
        .context("listener has no address")?;
    let board = running.collector.board();
    let drops_before = kernel_drops(target.port());
    let datagrams: Vec<(Vec<u8>, u32)> = stream
        .datagrams
        .iter()
        .cloned()
        .zip(stream.records_in.iter().copied())
        .collect();
    let sender = std::thread::spawn(move || send_paced(&datagrams, target, rate, seconds));
    let sent = tokio::task::spawn_blocking(move || sender.join())
        .await?
        .map_err(|_| anyhow::anyhow!("the sender panicked"))??;
    // Let the collector drain its socket.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let drops = kernel_drops(target.port()).saturating_sub(drops_before);
    let _ = running.stop().await;
    let received = totals(&board.exporters());
    Ok(json!({
        "target_records_per_sec": rate,
        "achieved_records_per_sec": sent.records as f64 / sent.seconds,
        "seconds": sent.seconds,
        "sent_datagrams": sent.datagrams,
        "sent_records": sent.records,
        "received_records": received.records,
        "lost_records": sent.records.saturating_sub(received.records),
        "kernel_drops": drops,
        "sequence_gaps": received.sequence_gaps,
        "decode_errors": received.decode_errors,
    }))
}

struct Sent {
    datagrams: u64,
    records: u64,
    seconds: f64,
}

fn send_paced(
    datagrams: &[(Vec<u8>, u32)],
    target: SocketAddr,
    rate: f64,
    seconds: f64,
) -> anyhow::Result<Sent> {
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    socket.connect(target)?;
    let started = Instant::now();
    let mut sent = Sent {
        datagrams: 0,
        records: 0,
        seconds: 0.0,
    };
    let mut sequence = 0u32;
    let mut buffer = Vec::with_capacity(1500);
    'outer: loop {
        for (datagram, records) in datagrams {
            let elapsed = started.elapsed().as_secs_f64();
            if elapsed >= seconds {
                break 'outer;
            }
            // Ahead of the schedule: wait until the rate allows more.
            let due = sent.records as f64 / rate;
            if due > elapsed {
                let wait = due - elapsed;
                if wait > 0.0005 {
                    std::thread::sleep(Duration::from_secs_f64(wait));
                } else {
                    std::hint::spin_loop();
                }
            }
            buffer.clear();
            buffer.extend_from_slice(datagram);
            if let Some(field) = buffer.get_mut(8..12) {
                field.copy_from_slice(&sequence.to_be_bytes());
            }
            sequence = sequence.wrapping_add(*records);
            loop {
                match socket.send(&buffer) {
                    Ok(_) => break,
                    // The loopback's send queue is full: the receiver is
                    // behind; retry rather than count our own drop.
                    Err(error) if error.raw_os_error() == Some(nix::libc::ENOBUFS) => {
                        std::thread::yield_now();
                    }
                    Err(error) => return Err(error.into()),
                }
            }
            sent.datagrams += 1;
            sent.records += u64::from(*records);
        }
    }
    sent.seconds = started.elapsed().as_secs_f64();
    Ok(sent)
}

/// Writes the stream as a pcap of UDP datagrams to port 2055.
fn write_pcap(stream: &Stream, path: &Path, count: usize) -> anyhow::Result<()> {
    let file = std::fs::File::create(path)?;
    let mut writer = PcapWriter::new(std::io::BufWriter::new(file))?;
    let source: SocketAddr = "192.0.2.1:4739".parse()?;
    let destination: SocketAddr = "192.0.2.2:2055".parse()?;
    let start_ns = aiwan_collectors::listener::now_ms() * 1_000_000;
    for (index, datagram) in stream.datagrams.iter().take(count).enumerate() {
        let mut frame = ethernet_frame(source, destination, FrameTransport::Udp, 0, 0)?;
        // The builder wrote an empty payload; put the datagram in and fix
        // the IPv4 and UDP lengths (checksum 0 is allowed for UDP/IPv4).
        frame.extend_from_slice(datagram);
        let ip_length = (frame.len() - 14) as u16;
        frame[16..18].copy_from_slice(&ip_length.to_be_bytes());
        frame[24..26].copy_from_slice(&[0, 0]);
        let checksum = ipv4_checksum(&frame[14..34]);
        frame[24..26].copy_from_slice(&checksum.to_be_bytes());
        let udp_length = (frame.len() - 34) as u16;
        frame[38..40].copy_from_slice(&udp_length.to_be_bytes());
        frame[40..42].copy_from_slice(&[0, 0]);
        writer.write_frame(start_ns + index as i64 * 1000, &frame)?;
    }
    writer.flush()?;
    Ok(())
}

fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .map(|pair| u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// nfacctd (pmacct) reading the same stream from a pcap, pinned to the
/// same core, aggregating by 5-tuple and TOS into its print plugin as our
/// store's 1 s tier does. Its processes sleep a fixed while at start and
/// exit whatever the input, so wall time says nothing about its speed: the
/// CPU time its processes use (user + system, the plugin included) is the
/// measure, as the marginal cost of the full capture over a one-datagram
/// capture. Both runs fault in its 1 GB plugin ring (big enough that
/// nothing is dropped): the same 270k page faults, whose cost varies from
/// 1.2 to 3.3 CPU seconds between identical runs. That noise only ever
/// adds, so each capture runs three times and the least CPU of each
/// counts: nfacctd's best case, against our median.
fn nfacctd(stream: &Stream, core: usize) -> anyhow::Result<Value> {
    const RUNS: usize = 3;
    let dir = tempfile::tempdir()?;
    let run = |name: &str, count: usize| -> anyhow::Result<(f64, f64, u64)> {
        let pcap = dir.path().join(format!("{name}.pcap"));
        if !pcap.exists() {
            write_pcap(stream, &pcap, count)?;
        }
        let output = dir.path().join(format!("{name}.csv"));
        let config = dir.path().join(format!("{name}.conf"));
        std::fs::write(
            &config,
            format!(
                "daemonize: false\npidfile: {}\npcap_savefile: {}\npcap_savefile_delay: 0\n\
                 plugins: print\naggregate: src_host, dst_host, src_port, dst_port, proto, tos\n\
                 print_output: csv\nprint_output_file: {}\nprint_refresh_time: 3600\n\
                 plugin_buffer_size: 10240000\nplugin_pipe_size: 1024000000\n",
                dir.path().join(format!("{name}.pid")).display(),
                pcap.display(),
                output.display()
            ),
        )?;
        let _ = std::fs::remove_file(&output);
        let cpu_before = children_cpu_seconds();
        let started = Instant::now();
        let status = Command::new("taskset")
            .args(["-c", &core.to_string(), "nfacctd", "-f"])
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .context("cannot run nfacctd (apt-get install pmacct)")?;
        let seconds = started.elapsed().as_secs_f64();
        let cpu = children_cpu_seconds() - cpu_before;
        if !status.success() {
            bail!("nfacctd exited with {status}");
        }
        Ok((seconds, cpu, csv_packets(&output)?))
    };
    let mut baseline_cpu = Vec::with_capacity(RUNS);
    let mut full_cpu = Vec::with_capacity(RUNS);
    let mut full_seconds = Vec::with_capacity(RUNS);
    let mut complete_runs = 0;
    for _ in 0..RUNS {
        baseline_cpu.push(run("baseline", 1)?.1);
        let (seconds, cpu, packets) = run("full", stream.datagrams.len())?;
        full_cpu.push(cpu);
        full_seconds.push(seconds);
        if packets == stream.packets {
            complete_runs += 1;
        }
    }
    let least = |values: &[f64]| values.iter().copied().fold(f64::INFINITY, f64::min);
    let marginal_cpu = (least(&full_cpu) - least(&baseline_cpu)).max(1e-3);
    Ok(json!({
        "runs": RUNS,
        "complete_runs": complete_runs,
        "complete": complete_runs == RUNS,
        "cpu_seconds": full_cpu,
        "baseline_cpu_seconds": baseline_cpu,
        "marginal_cpu_seconds": marginal_cpu,
        "seconds": full_seconds,
        "records_per_sec": stream.records as f64 / marginal_cpu,
        "packets_expected": stream.packets,
    }))
}

/// The median of `values` (the mean of the middle two for an even count).
fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if !n.is_multiple_of(2) => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// User and system CPU seconds of the children waited for so far (and of
/// the children they waited for).
fn children_cpu_seconds() -> f64 {
    use nix::sys::resource::{UsageWho, getrusage};
    getrusage(UsageWho::RUSAGE_CHILDREN).map_or(0.0, |usage| {
        let seconds = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
        seconds(usage.user_time()) + seconds(usage.system_time())
    })
}

/// The PACKETS column of nfacctd's CSV, summed.
fn csv_packets(path: &Path) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("nfacctd wrote no {}", path.display()))?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
    let column = header
        .iter()
        .position(|name| *name == "PACKETS")
        .context("nfacctd CSV has no PACKETS column")?;
    Ok(lines
        .filter_map(|line| line.split(',').nth(column)?.trim().parse::<u64>().ok())
        .sum())
}

pub async fn bench_collector(args: &BenchCollectorArgs) -> anyhow::Result<()> {
    if args.records == 0 {
        bail!("--records: must be at least 1");
    }
    let stream = build_stream(args.records, args.flows);
    let in_process = in_process(&stream, args.core, args.runs)?;
    let rate = in_process["records_per_sec"].as_f64().unwrap_or(0.0);
    let loopback = loopback(&stream, rate * 0.5, args.loopback_seconds).await?;
    let nfacctd = if args.skip_nfacctd {
        Value::Null
    } else {
        nfacctd(&stream, args.core)?
    };
    let ratio = nfacctd["records_per_sec"]
        .as_f64()
        .map(|theirs| rate / theirs);
    let report = json!({
        "records": stream.records,
        "datagrams": stream.datagrams.len(),
        "flows": args.flows,
        "in_process": in_process,
        "loopback_at_half_rate": loopback,
        "nfacctd": nfacctd,
        "ratio_vs_nfacctd": ratio,
        // Per core into the store (issue 17's 5 M); against nfacctd, the
        // earlier 3x (issue 17 asks 2.5x).
        "goal": {"records_per_sec": 5_000_000, "ratio_vs_nfacctd": 3.0},
    });
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}
