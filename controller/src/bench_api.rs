//! `aiwan bench api`: a caller with a valid token against the controller
//! (in process, SQLite in a scratch directory), alone and then during a
//! burst of calls with made-up tokens from many connections; the valid
//! caller's latency percentiles in both, and their ratio.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use aiwan_api::v1 as pb;
use aiwan_api::v1::topology_service_client::TopologyServiceClient;
use aiwan_planner::eval::percentile;
use anyhow::{Context, bail};
use serde_json::json;
use tonic::transport::Channel;

use crate::client::BearerToken;
use crate::config::ControllerConfig;

/// Arguments of `aiwan bench api`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchApiArgs {
    /// Calls with made-up tokens in the burst.
    #[arg(long, default_value_t = 10_000)]
    pub calls: usize,
    /// Concurrent connections making them (each call on a new connection,
    /// as a scanner would).
    #[arg(long, default_value_t = 50)]
    pub workers: usize,
    /// Seconds the valid caller is timed alone first (the reference).
    #[arg(long, default_value_t = 5.0)]
    pub reference_seconds: f64,
    /// Print one JSON document.
    #[arg(long)]
    pub json: bool,
}

const ADMIN_SECRET: &str = "bench-admin-secret-0123456789abcdef";
/// The valid caller's pause between calls.
const PAUSE: Duration = Duration::from_millis(5);
/// The target: the valid caller's p99 during the burst, in ms.
const P99_TARGET_MS: f64 = 100.0;

type Client =
    TopologyServiceClient<tonic::service::interceptor::InterceptedService<Channel, BearerToken>>;

async fn client(addr: SocketAddr, token: &str) -> anyhow::Result<Client> {
    let channel = Channel::from_shared(format!("http://{addr}"))?
        .connect()
        .await
        .context("connect")?;
    Ok(TopologyServiceClient::with_interceptor(
        channel,
        BearerToken::new(Some(token))?,
    ))
}

fn summary(mut latencies: Vec<f64>) -> serde_json::Value {
    json!({
        "calls": latencies.len(),
        "p50_ms": percentile(&mut latencies, 0.50),
        "p99_ms": percentile(&mut latencies, 0.99),
        "max_ms": percentile(&mut latencies, 1.0),
    })
}

/// One valid call, timed in ms.
async fn timed_call(valid: &mut Client) -> anyhow::Result<f64> {
    let started = Instant::now();
    valid
        .get_topology(pb::GetTopologyRequest {})
        .await
        .context("the valid caller was refused")?;
    Ok(started.elapsed().as_secs_f64() * 1e3)
}

pub async fn bench_api(args: &BenchApiArgs) -> anyhow::Result<()> {
    if args.workers == 0 || args.calls == 0 {
        bail!("--calls and --workers must be positive");
    }
    let dir: PathBuf = std::env::temp_dir().join(format!("aiwan-bench-api-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("{}", dir.display()))?;
    let result = run(args, &dir).await;
    // The scratch directory is this run's own.
    std::fs::remove_dir_all(&dir).ok();
    let report = result?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}

async fn run(args: &BenchApiArgs, dir: &std::path::Path) -> anyhow::Result<serde_json::Value> {
    let config = ControllerConfig {
        listen: "127.0.0.1:0".parse()?,
        metrics_listen: None,
        data_dir: dir.to_path_buf(),
        bootstrap_token: Some(format!("admin:{ADMIN_SECRET}")),
        ..ControllerConfig::default()
    };
    let controller = crate::server::start(&config).await?;
    let addr = controller.grpc_addr;
    let mut valid = client(addr, ADMIN_SECRET).await?;

    // The reference: the valid caller alone.
    let mut alone = Vec::new();
    let started = Instant::now();
    while started.elapsed().as_secs_f64() < args.reference_seconds {
        alone.push(timed_call(&mut valid).await?);
        tokio::time::sleep(PAUSE).await;
    }

    // The burst, and the valid caller meanwhile.
    let per_worker = args.calls.div_ceil(args.workers);
    let burst_started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..args.workers {
        let count = per_worker.min(args.calls.saturating_sub(worker * per_worker));
        tasks.push(tokio::spawn(async move {
            let mut refused = 0usize;
            let mut other = 0usize;
            for i in 0..count {
                let token = format!("bogus-token-{worker}-{i}-0123456789");
                let Ok(mut bogus) = client(addr, &token).await else {
                    other += 1;
                    continue;
                };
                match bogus.get_topology(pb::GetTopologyRequest {}).await {
                    Err(status) if status.code() == tonic::Code::Unauthenticated => refused += 1,
                    _ => other += 1,
                }
            }
            (refused, other)
        }));
    }
    let mut during = Vec::new();
    while tasks.iter().any(|t| !t.is_finished()) {
        during.push(timed_call(&mut valid).await?);
        tokio::time::sleep(PAUSE).await;
    }
    let burst_seconds = burst_started.elapsed().as_secs_f64();
    let (mut refused, mut other) = (0, 0);
    for task in tasks {
        let (r, o) = task.await?;
        refused += r;
        other += o;
    }
    controller.shutdown().await?;
    let alone = summary(alone);
    let during = summary(during);
    let p99_during = during["p99_ms"].as_f64().unwrap_or(f64::NAN);
    let p99_alone = alone["p99_ms"].as_f64().unwrap_or(f64::NAN);
    Ok(json!({
        "bogus_calls": args.calls,
        "bogus_refused": refused,
        "bogus_other_outcome": other,
        "workers": args.workers,
        "burst_seconds": burst_seconds,
        "bogus_calls_per_second": refused as f64 / burst_seconds.max(1e-9),
        "valid_alone": alone,
        "valid_during_burst": during,
        "p99_during_over_alone": p99_during / p99_alone,
        "target_p99_under_100ms": p99_during < P99_TARGET_MS,
    }))
}
