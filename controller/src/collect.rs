//! `aiwan collect`: the flow collectors and the telemetry store alone, as
//! goflow2 or nfacctd run, with a summary per exporter at the end.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use aiwan_collectors::listener::{ListenerConfig, totals};
use aiwan_collectors::pipeline;
use aiwan_collectors::record::ExporterKey;
use aiwan_collectors::stats::{ExporterCounters, ExporterReport};
use aiwan_collectors::store::{SitePrefix, StoreConfig, TelemetryStore, TimeWindow};
use anyhow::Context;
use serde_json::{Value, json};

/// The ports exporters send to by convention.
pub const DEFAULT_NETFLOW_LISTEN: &str = "0.0.0.0:2055";
pub const DEFAULT_SFLOW_LISTEN: &str = "0.0.0.0:6343";

/// Arguments of `aiwan collect`.
#[derive(Debug, Clone, clap::Args)]
pub struct CollectArgs {
    /// NetFlow v5/v9 and IPFIX listen address [default: 0.0.0.0:2055 when
    /// neither listen flag is given].
    #[arg(long)]
    pub netflow_listen: Option<SocketAddr>,
    /// sFlow listen address [default: 0.0.0.0:6343 when neither listen
    /// flag is given].
    #[arg(long)]
    pub sflow_listen: Option<SocketAddr>,
    /// Stop after this many seconds (default: run until Ctrl-C or SIGTERM).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Export the store's buckets as Parquet files into this folder at
    /// the end.
    #[arg(long)]
    pub parquet: Option<PathBuf>,
    /// Print one JSON document.
    #[arg(long)]
    pub json: bool,
    /// Where templates are kept across restarts.
    #[arg(long, default_value = ".aiwan")]
    pub data_dir: PathBuf,
    /// Sockets and decoders per listen address [default: the number of
    /// cores].
    #[arg(long)]
    pub shards: Option<usize>,
    /// Socket receive buffer in bytes.
    #[arg(long, default_value_t = 32 << 20)]
    pub receive_buffer: usize,
    /// Tell exporters behind one address apart by their source port too.
    #[arg(long)]
    pub key_by_source_port: bool,
    /// A containerlab topology whose site prefixes name the sites of the
    /// traffic matrix.
    #[arg(long)]
    pub topology: Option<PathBuf>,
    /// The telemetry store's memory budget in bytes (oldest buckets are
    /// dropped beyond it) [default: 1 GiB].
    #[arg(long)]
    pub memory_budget: Option<u64>,
}

pub async fn collect(args: &CollectArgs) -> anyhow::Result<()> {
    let (netflow_listen, sflow_listen) = match (args.netflow_listen, args.sflow_listen) {
        (None, None) => (
            Some(parse_default(DEFAULT_NETFLOW_LISTEN)?),
            Some(parse_default(DEFAULT_SFLOW_LISTEN)?),
        ),
        given => given,
    };
    if let Some(duration) = args.duration
        && !(duration.is_finite() && duration > 0.0)
    {
        anyhow::bail!("--duration: {duration} is not a positive number of seconds");
    }
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("--data-dir {}", args.data_dir.display()))?;
    let mut store_config = StoreConfig::default();
    if let Some(budget) = args.memory_budget {
        store_config.memory_budget_bytes = budget;
    }
    store_config.check().context("--memory-budget")?;
    if let Some(path) = &args.topology {
        store_config.sites = site_prefixes(path)?;
    }
    let store = TelemetryStore::new(store_config).context("telemetry store")?;
    let store = Arc::new(RwLock::new(store));
    let shards = args.shards.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    let config = ListenerConfig {
        netflow_listen,
        sflow_listen,
        shards,
        receive_buffer_bytes: args.receive_buffer,
        key_by_source_port: args.key_by_source_port,
        template_file: Some(args.data_dir.join("collector-templates.json")),
        ..ListenerConfig::default()
    };
    let started = Instant::now();
    let started_ms = aiwan_collectors::listener::now_ms();
    let running = pipeline::start(&config, Arc::clone(&store)).await?;
    tracing::info!(
        netflow = ?running.collector.netflow_address,
        sflow = ?running.collector.sflow_address,
        shards,
        "collecting"
    );
    wait(args.duration).await;
    let netflow_address = running.collector.netflow_address;
    let sflow_address = running.collector.sflow_address;
    let sockets = running.collector.sockets();
    let board = running.collector.board();
    let rejected = board.rejected_datagrams();
    let ingest = running.stop().await;
    let exporters = board.exporters();
    let elapsed = started.elapsed().as_secs_f64();
    if let Some(dir) = &args.parquet {
        std::fs::create_dir_all(dir).with_context(|| format!("--parquet {}", dir.display()))?;
    }
    let parquet_dir = args.parquet.clone();
    let window = TimeWindow::new(
        started_ms - 1000,
        aiwan_collectors::listener::now_ms() + 1000,
    );
    let (parquet, top_flows, matrix, store_stats) = pipeline::read_store(&store, move |store| {
        let parquet = match &parquet_dir {
            Some(dir) => Some(store.export_parquet(dir).context("Parquet export")?),
            None => None,
        };
        let top_flows = store.top_flows(window, 10).context("top flows")?;
        let matrix = store
            .traffic_matrix_average(window, None)
            .context("traffic matrix")?;
        anyhow::Ok((parquet, top_flows, matrix, store.stats()))
    })
    .await?;
    let kernel_drops: u64 = sockets.iter().map(|s| s.kernel_drops).sum();
    let summary = json!({
        "duration_s": elapsed,
        "netflow_listen": netflow_address.map(|a| a.to_string()),
        "sflow_listen": sflow_address.map(|a| a.to_string()),
        "exporters": exporters.iter().map(exporter_json).collect::<Vec<_>>(),
        "totals": counters_json(&totals(&exporters)),
        "kernel_drops": kernel_drops,
        "sockets": sockets.iter().map(|s| json!({
            "address": s.address.map(|a| a.to_string()),
            "receive_buffer_bytes": s.receive_buffer_bytes,
            "kernel_drops": s.kernel_drops,
        })).collect::<Vec<_>>(),
        "rejected_datagrams": rejected,
        "store": store_stats,
        "store_errors": ingest.store_errors,
        "top_flows": top_flows,
        "traffic_matrix": matrix,
        "parquet": parquet,
    });
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        print_table(&exporters, kernel_drops, elapsed);
    }
    Ok(())
}

fn parse_default(text: &str) -> anyhow::Result<SocketAddr> {
    text.parse()
        .with_context(|| format!("default listen address {text}"))
}

/// Sleeps for `duration` seconds, or until Ctrl-C or SIGTERM.
async fn wait(duration: Option<f64>) {
    let timer = async {
        match duration {
            Some(seconds) => tokio::time::sleep(Duration::from_secs_f64(seconds)).await,
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = timer => {}
        _ = crate::server::shutdown_signal() => {}
    }
}

/// The site prefixes of a containerlab topology: each node's prefixes
/// belong to its site.
pub fn site_prefixes(path: &std::path::Path) -> anyhow::Result<Vec<SitePrefix>> {
    let topology = aiwan_planner::formats::clab::load_clab(path)?;
    Ok(crate::telemetry::site_prefixes(&topology))
}

fn exporter_json(report: &ExporterReport) -> Value {
    let mut value = key_json(&report.key);
    if let (Value::Object(object), Value::Object(counters)) =
        (&mut value, counters_json(&report.counters))
    {
        object.extend(counters);
        object.insert("last_error".to_string(), json!(report.last_error));
    }
    value
}

fn key_json(key: &ExporterKey) -> Value {
    let mut value = json!({
        "address": key.address.to_string(),
        "observation_domain": key.domain,
        "protocol": key.protocol.as_str(),
    });
    if key.port != 0
        && let Value::Object(object) = &mut value
    {
        object.insert("port".to_string(), json!(key.port));
    }
    value
}

fn counters_json(counters: &ExporterCounters) -> Value {
    serde_json::to_value(counters).unwrap_or(Value::Null)
}

fn print_table(exporters: &[ExporterReport], kernel_drops: u64, elapsed: f64) {
    println!(
        "{:<11} {:<40} {:>10} {:>10} {:>12} {:>14} {:>7} {:>7} {:>6}",
        "protocol",
        "exporter",
        "datagrams",
        "records",
        "packets",
        "bytes",
        "errors",
        "misses",
        "gaps"
    );
    for report in exporters {
        let c = &report.counters;
        let name = format!("{}/{}", report.key.address, report.key.domain);
        println!(
            "{:<11} {:<40} {:>10} {:>10} {:>12} {:>14} {:>7} {:>7} {:>6}",
            report.key.protocol.as_str(),
            name,
            c.datagrams,
            c.records,
            c.packets_scaled,
            c.bytes_scaled,
            c.decode_errors,
            c.template_misses,
            c.sequence_gaps
        );
        if let Some(error) = &report.last_error {
            println!("    last error: {error}");
        }
    }
    let t = totals(exporters);
    println!(
        "{} exporters, {} records, {} datagrams in {:.1} s; kernel drops {}",
        exporters.len(),
        t.records,
        t.datagrams,
        elapsed,
        kernel_drops
    );
}
