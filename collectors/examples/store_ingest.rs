//! Measures the telemetry store's ingest cost per flow record, roll-ups
//! included, and prints one JSON document.
//!
//! Run on one core, release mode:
//!
//! ```text
//! taskset -c 0 cargo run --release -p aiwan-collectors --example store_ingest -- \
//!     [--flows 50000] [--seconds 30] [--rate 2000000] [--batch 4096] [--parquet DIR]
//! ```
//!
//! Synthetic but realistic: `--flows` distinct 5-tuples recur every second
//! (a few heavy, most light), from four exporters (two sampling 1 in 100),
//! between addresses in 40 sites' /16 prefixes and some outside any site.
//! Batches are generated once and only their receive times are moved on
//! between seconds, outside the timed section; each batch is copied just
//! before it is ingested (untimed), so it is in cache as a decoder's fresh
//! output would be. Timed: `ingest_flows` (which closes 1 s buckets into
//! Polars frames and rolls them up as received time moves on) and
//! `advance`.

use std::error::Error;
use std::time::{Duration, Instant};

use aiwan_collectors::record::{ExporterKey, FlowBatch, FlowProtocol, FlowRecord, ipv4_to_u128};
use aiwan_collectors::store::{SitePrefix, StoreConfig, TelemetryStore};

struct Options {
    flows: usize,
    seconds: i64,
    rate: usize,
    batch: usize,
    /// Where to export the store as Parquet after the run (untimed).
    parquet: Option<std::path::PathBuf>,
}

fn parse_options() -> Result<Options, Box<dyn Error>> {
    let mut options = Options {
        flows: 50_000,
        seconds: 30,
        rate: 2_000_000,
        batch: 4096,
        parquet: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--flows" => options.flows = value.parse()?,
            "--seconds" => options.seconds = value.parse()?,
            "--rate" => options.rate = value.parse()?,
            "--batch" => options.batch = value.parse()?,
            "--parquet" => options.parquet = Some(value.into()),
            _ => return Err(format!("unknown flag {flag}").into()),
        }
    }
    if options.flows == 0 || options.rate == 0 || options.batch == 0 || options.seconds <= 0 {
        return Err("--flows, --seconds, --rate and --batch must be positive".into());
    }
    Ok(options)
}

/// SplitMix64: a seeded generator, so every run sees the same records.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound.max(1)
    }
}

const SITES: u8 = 40;

fn config() -> Result<StoreConfig, Box<dyn Error>> {
    let mut sites = Vec::new();
    for site in 0..SITES {
        sites.push(SitePrefix {
            prefix: format!("10.{site}.0.0/16").parse()?,
            site: format!("site-{site}"),
        });
    }
    Ok(StoreConfig {
        sites,
        ..StoreConfig::default()
    })
}

fn address(random: &mut Random) -> u128 {
    // One in eight addresses is outside every site.
    if random.below(8) == 0 {
        let [a, b, c, d] = (random.next() as u32).to_be_bytes();
        return ipv4_to_u128([172, a & 0x0f | 16, b ^ c, d]);
    }
    let site = random.below(u64::from(SITES)) as u8;
    let [_, _, c, d] = (random.next() as u32).to_be_bytes();
    ipv4_to_u128([10, site, c, d])
}

/// One distinct flow: its exporter and everything but the receive time.
fn flows(count: usize, random: &mut Random) -> Vec<(u32, FlowRecord)> {
    const DSCPS: [u8; 5] = [0, 0, 26, 10, 46];
    (0..count)
        .map(|_| {
            let exporter = random.below(4) as u32;
            let packets = 1 + random.below(20);
            let record = FlowRecord {
                received_ms: 0,
                flow_end_ms: 0,
                src_addr: address(random),
                dst_addr: address(random),
                src_port: random.below(65_536) as u16,
                dst_port: [443, 4791, 80, 22][random.below(4) as usize],
                protocol: if random.below(3) == 0 { 6 } else { 17 },
                tos: DSCPS[random.below(DSCPS.len() as u64) as usize] << 2,
                in_if: 1 + random.below(48) as u32,
                out_if: 1 + random.below(48) as u32,
                packets,
                bytes: packets * (64 + random.below(1_436)),
                sampling_rate: if exporter < 2 { 1 } else { 100 },
            };
            (exporter, record)
        })
        .collect()
}

/// One second of records, in batches, received evenly over the second.
/// A quarter of the records come from 1% of the flows (heavy hitters).
fn one_second(
    options: &Options,
    flows: &[(u32, FlowRecord)],
    random: &mut Random,
) -> Vec<FlowBatch> {
    let exporters: Vec<ExporterKey> = (0..4u8)
        .map(|i| ExporterKey {
            address: std::net::IpAddr::from([192, 0, 2, 1 + i]),
            port: 0,
            protocol: FlowProtocol::Ipfix,
            domain: 1,
        })
        .collect();
    let heavy = (flows.len() / 100).max(1) as u64;
    let mut batches = Vec::new();
    let mut batch = FlowBatch::with_capacity(options.batch);
    for n in 0..options.rate {
        let pick = if random.below(4) == 0 {
            random.below(heavy)
        } else {
            random.below(flows.len() as u64)
        };
        let Some((exporter, record)) = flows.get(pick as usize) else {
            continue;
        };
        let received_ms = (n as u64 * 1000 / options.rate as u64) as i64;
        let Some(key) = exporters.get(*exporter as usize) else {
            continue;
        };
        let index = batch.exporter_index(key);
        batch.push(
            index,
            &FlowRecord {
                received_ms,
                flow_end_ms: received_ms,
                ..*record
            },
        );
        if batch.len() == options.batch {
            batches.push(std::mem::replace(
                &mut batch,
                FlowBatch::with_capacity(options.batch),
            ));
        }
    }
    if !batch.is_empty() {
        batches.push(batch);
    }
    batches
}

fn main() -> Result<(), Box<dyn Error>> {
    let options = parse_options()?;
    let mut random = Random(0x5eed);
    let distinct = flows(options.flows, &mut random);
    let mut batches = one_second(&options, &distinct, &mut random);
    let mut store = TelemetryStore::new(config()?)?;

    let start_ms: i64 = 1_700_000_000_000;
    let mut timed = Duration::ZERO;
    let mut records: u64 = 0;
    for second in 0..options.seconds {
        let base = start_ms + second * 1000;
        for batch in &mut batches {
            for (received, offset) in batch.received_ms.iter_mut().zip(batch.flow_end_ms.iter()) {
                *received = base + offset.rem_euclid(1000);
            }
        }
        for batch in &batches {
            // A decoder hands the store a batch it has just written, so
            // the batch is in cache: copy it (untimed) to get the same.
            let fresh = batch.clone();
            let began = Instant::now();
            store.ingest_flows(&fresh)?;
            timed += began.elapsed();
            records += fresh.len() as u64;
        }
        let began = Instant::now();
        store.advance(base + 1000)?;
        timed += began.elapsed();
    }
    // Close and roll up everything still open, as part of the cost.
    let began = Instant::now();
    store.advance(start_ms + options.seconds * 1000 + 120_000)?;
    timed += began.elapsed();

    let export = match &options.parquet {
        Some(dir) => Some(store.export_parquet(dir)?),
        None => None,
    };
    let nanos = timed.as_nanos() as f64;
    let stats = store.stats();
    let report = serde_json::json!({
        "records": records,
        "simulated_seconds": options.seconds,
        "distinct_flows": options.flows,
        "records_per_simulated_second": options.rate,
        "batch_records": options.batch,
        "threads_available": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "elapsed_seconds": timed.as_secs_f64(),
        "ns_per_record": nanos / records.max(1) as f64,
        "records_per_second": records as f64 / timed.as_secs_f64().max(f64::MIN_POSITIVE),
        "stats": stats,
        "parquet": export,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
