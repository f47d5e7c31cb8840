//! `aiwan demo`: the closed loop end to end on one machine, no root.
//!
//! The controller runs in this process with SQLite in a data directory of
//! its own, the built-in two-datacentre topology (`lab/ai-wan.clab.yml`),
//! flow collectors on loopback, the closed loop in `auto` mode on 1 s
//! telemetry, and the simulated dataplane as its southbound driver. The
//! demo plays the network around it:
//!
//! - the traffic ([`traffic`]): a background of real Abilene matrices and
//!   the AI traffic generator's training and checkpoint jobs, as flows
//!   between addresses of the sites' prefixes;
//! - the routers: every second the simulated dataplane forwards that
//!   traffic by the state the controller pushed to it, which gives each
//!   link's load; the links' interface counters (transmitted octets, at
//!   most the capacity, the rest discarded) go into the telemetry store as
//!   the router agents' counters would, and each site's WAN router exports
//!   the traffic entering the WAN through it as sampled NetFlow v9 or IPFIX
//!   ([`exporter`]) to the controller's collector over loopback UDP.
//!
//! The simulated dataplane is a simulator, named as such; it is not a
//! substitute for the namespace lab (`aiwan lab`), which runs the real
//! kernel.

pub mod exporter;
mod lab;
pub mod traffic;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use aiwan_api::v1 as pb;
use aiwan_api::v1::intent_service_client::IntentServiceClient;
use aiwan_api::v1::plan_service_client::PlanServiceClient;
use aiwan_api::v1::topology_service_client::TopologyServiceClient;
use aiwan_collectors::pipeline::with_store;
use aiwan_collectors::record::{FlowRecord, InterfaceCounters, addr_to_u128};
use aiwan_planner::Topology;
use aiwan_planner::network::Network;
use anyhow::{Context, bail};
use ipnet::IpNet;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::client::BearerToken;
use crate::closed_loop::demand::ExporterMapping;
use crate::closed_loop::{LoopMode, ReplanRecord};
use crate::config::{ControllerConfig, SouthboundDriver};
use crate::events::EventKind;
use crate::model::now_ms;
use crate::server::RunningController;
use crate::southbound::simulated::{SimulatedDataplane, SimulatedFlow};
use exporter::{ExportProtocol, SampledExporter};
use traffic::{Background, SiteDemand};

/// The built-in topology.
const TOPOLOGY: &str = include_str!("../../../lab/ai-wan.clab.yml");
/// Where the demo listens unless told otherwise (the TUI's default).
const DEFAULT_LISTEN: &str = "127.0.0.1:50051";
/// Flows each site pair's class is split into.
const FLOWS_PER_DEMAND: usize = 12;
/// How long after each second the routers export it.
const EXPORT_DELAY_MS: i64 = 5;
/// After the duration, how long the demo waits for the last re-plan's
/// first measured interval.
const SETTLE: Duration = Duration::from_secs(4);

/// Arguments of `aiwan demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Run without the operator TUI (which opens by default on a
    /// terminal): print the attach line, and log and report to stderr.
    #[arg(long)]
    pub headless: bool,
    /// Stop after this many seconds [default: at Ctrl-C].
    #[arg(long, value_name = "SECS")]
    pub duration: Option<u64>,
    /// gRPC listen address [default: 127.0.0.1:50051, or any free loopback
    /// port when that one is taken].
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Where the demo keeps its state (SQLite database, token); created when
    /// missing, reused by the next run [default: aiwan-demo, or
    /// aiwan-demo-lab with --lab].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// What the closed loop may do: `auto` applies its re-plans,
    /// `recommend` stores them as proposals for an operator (ApprovePlan),
    /// `off` only measures and forecasts.
    #[arg(long, value_enum, default_value = "auto")]
    pub mode: LoopMode,
    /// How the loop's re-plans serve what may come next: `aiwan` (the
    /// scenario method `aiwan eval` scores) or `worst-window`.
    #[arg(long, value_enum, default_value = "aiwan")]
    pub method: crate::closed_loop::predict::PlanningMethod,
    /// Seed of the sampling and flow sizes.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print one JSON document (the summary) on stdout.
    #[arg(long)]
    pub json: bool,
    /// Run on the namespace lab instead of the simulator (needs root,
    /// iproute2 and softflowd): the topology deployed as lab `aiwan-demo`
    /// with links shaped at 0.2% of their capacity, a router agent per
    /// router, softflowd exporting IPFIX from the WAN routers, and the
    /// demo's traffic, scaled alike, sent as real UDP packets between the
    /// sites' addresses. Everything is taken down at the end.
    #[arg(long)]
    pub lab: bool,
}

/// A site's exporting router.
struct SiteExporter {
    site: &'static str,
    node: String,
    /// An IPv4 prefix of the site, its flows' addresses.
    prefix: ipnet::Ipv4Net,
    exporter: SampledExporter,
}

/// What the sites send through the simulated routers.
struct SimulatedSites {
    sites: BTreeMap<&'static str, SiteExporter>,
    /// `node:interface` -> (node, interface, if_index, capacity bit/s).
    links: BTreeMap<String, (String, String, u32, f64)>,
    /// Cumulative counters per `node:interface`: tx octets, tx packets,
    /// discarded packets.
    counters: BTreeMap<String, (u64, u64, u64)>,
    rng: SplitMix64,
}

/// One flow of a second: source, destination, source port, bit/s.
type DemoFlow = (Ipv4Addr, Ipv4Addr, u16, f64);

/// SplitMix64: a seed gives the same run on every machine.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }

    /// A Poisson draw: Knuth's product for small means, the normal
    /// approximation for large ones.
    fn poisson(&mut self, mean: f64) -> u64 {
        if mean.is_nan() || mean <= 0.0 {
            return 0;
        }
        if mean > 30.0 {
            let (u, v) = (self.unit(), self.unit());
            let z = (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos();
            return (mean + mean.sqrt() * z).round().max(0.0) as u64;
        }
        let limit = (-mean).exp();
        let mut product = self.unit();
        let mut count = 0;
        while product > limit {
            product *= self.unit();
            count += 1;
        }
        count
    }
}

/// The exporters: which protocol, domain and sampling rate each site's WAN
/// router uses.
const EXPORTERS: [(&str, ExportProtocol, u32, u32); 5] = [
    ("dc1", ExportProtocol::Ipfix, 1, 1000),
    ("dc2", ExportProtocol::Ipfix, 2, 1000),
    ("pop-north", ExportProtocol::NetflowV9, 3, 512),
    ("pop-south", ExportProtocol::NetflowV9, 4, 512),
    ("pop-east", ExportProtocol::Ipfix, 5, 512),
];

/// The demo's jobs, as an AI scheduler would declare them.
fn demo_jobs() -> Vec<(&'static str, pb::Job)> {
    let site = |s: &str| pb::Endpoint {
        kind: Some(pb::endpoint::Kind::Site(format!("sites/{s}"))),
    };
    let job = |class: pb::TrafficClass, src: &str, dst: &str, rate: f64| pb::Job {
        tenant: "llm-research".into(),
        traffic_class: class as i32,
        sources: vec![site(src)],
        destinations: vec![site(dst)],
        rate_bps: rate as i64,
        ..Default::default()
    };
    vec![
        (
            "train-llm-east",
            job(
                pb::TrafficClass::AiSync,
                "dc1",
                "dc2",
                traffic::TRAINING_DECLARED_BPS,
            ),
        ),
        (
            "train-llm-west",
            job(
                pb::TrafficClass::AiSync,
                "dc2",
                "dc1",
                traffic::TRAINING_DECLARED_BPS,
            ),
        ),
        (
            "ckpt-llm",
            job(
                pb::TrafficClass::AiBulk,
                "dc2",
                "dc1",
                traffic::CHECKPOINT_BPS,
            ),
        ),
    ]
}

fn config(args: &DemoArgs, data_dir: &Path, listen: SocketAddr, token: &str) -> ControllerConfig {
    let mut config = ControllerConfig {
        listen,
        metrics_listen: Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))),
        data_dir: data_dir.to_path_buf(),
        bootstrap_token: Some(format!("admin:{token}")),
        ..ControllerConfig::default()
    };
    config.collector.netflow_listen = Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
    config.collector.shards = 1;
    config.collector.receive_buffer_bytes = 4 << 20;
    // Loopback delivers at once; a bucket need not wait for stragglers.
    config.collector.store.close_grace_ms = 300;
    config.collector.store.memory_budget_bytes = 256 << 20;
    config.southbound.driver = Some(SouthboundDriver::Simulated);
    config.southbound.reconcile_interval_ms = 500;
    let closed_loop = &mut config.closed_loop;
    closed_loop.mode = args.mode;
    closed_loop.method = args.method;
    closed_loop.interval_ms = 1000;
    closed_loop.min_replan_interval_ms = 2000;
    closed_loop.improvement_margin = 0.2;
    closed_loop.improvement_floor = 0.6;
    closed_loop.history = 60;
    // 12 s of 1 s intervals as the plan's scenarios: each costs an LP per
    // class, and a re-plan must take well under the interval.
    closed_loop.window = 12;
    closed_loop.exporters = Vec::new();
    config
}

/// The demo's API token: made once, kept in the data directory (mode
/// 0600) so that a second run and an attached TUI use the same one.
fn demo_token(dir: &Path) -> anyhow::Result<String> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let path = dir.join("demo-token");
    match std::fs::read_to_string(&path) {
        Ok(text) if text.trim().len() >= 16 => return Ok(text.trim().to_string()),
        Ok(_) => bail!(
            "{} is not a token; remove it to make a new one",
            path.display()
        ),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(error).with_context(|| format!("cannot read {}", path.display())),
    }
    let token: String = (0..4)
        .map(|_| format!("{:08x}", rand::random::<u32>()))
        .collect();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(format!("{token}\n").as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(token)
}

type Authed = InterceptedService<Channel, BearerToken>;

/// The built-in topology, the declared jobs and a first plan, unless a
/// previous run left them.
/// Imports `wanted` unless the controller holds it already (same name,
/// nodes and link capacities), declares the `jobs` it does not know, and
/// applies a first plan when there is none.
async fn prepare(
    channel: Channel,
    token: &BearerToken,
    wanted: &Topology,
    jobs: &[(&'static str, pb::Job)],
) -> anyhow::Result<()> {
    let mut topology = TopologyServiceClient::with_interceptor(channel.clone(), token.clone());
    let stored = topology
        .get_topology(pb::GetTopologyRequest {})
        .await
        .context("GetTopology")?
        .into_inner()
        .topology
        .unwrap_or_default();
    let wanted_pb = crate::convert::topology_to_pb(wanted, 0, 0);
    let capacities = |t: &pb::Topology| -> Vec<(String, i64)> {
        let mut links: Vec<(String, i64)> = t
            .links
            .iter()
            .map(|l| (l.name.clone(), l.capacity_bps))
            .collect();
        links.sort();
        links
    };
    if stored.display_name != wanted_pb.display_name
        || stored.nodes.len() != wanted_pb.nodes.len()
        || capacities(&stored) != capacities(&wanted_pb)
    {
        topology
            .import_topology(pb::ImportTopologyRequest {
                topology: Some(wanted_pb),
            })
            .await
            .context("ImportTopology")?;
        tracing::info!("imported the built-in topology lab/ai-wan.clab.yml");
    }
    let mut intents: IntentServiceClient<Authed> =
        IntentServiceClient::with_interceptor(channel.clone(), token.clone());
    for (id, job) in jobs {
        let found = intents
            .get_job(pb::GetJobRequest {
                name: format!("jobs/{id}"),
            })
            .await;
        match found {
            Ok(_) => continue,
            Err(status) if status.code() == tonic::Code::NotFound => {}
            Err(status) => bail!("GetJob jobs/{id}: {}", status.message()),
        }
        intents
            .create_job(pb::CreateJobRequest {
                job_id: id.to_string(),
                job: Some(job.clone()),
            })
            .await
            .with_context(|| format!("CreateJob {id}"))?;
        tracing::info!("declared job jobs/{id}");
    }
    let mut plans = PlanServiceClient::with_interceptor(channel, token.clone());
    match plans.get_current_plan(pb::GetCurrentPlanRequest {}).await {
        Ok(_) => {}
        Err(status) if status.code() == tonic::Code::NotFound => {
            plans
                .apply_plan(pb::ApplyPlanRequest {
                    reason: "demo start: the declared jobs".into(),
                })
                .await
                .context("ApplyPlan")?;
        }
        Err(status) => bail!("GetCurrentPlan: {}", status.message()),
    }
    Ok(())
}

impl SimulatedSites {
    fn new(topology: &Topology, seed: u64) -> anyhow::Result<SimulatedSites> {
        let network = Network::from_topology(topology);
        let boot_ms = now_ms();
        let mut sites = BTreeMap::new();
        for (site, protocol, domain, sampling) in EXPORTERS {
            let nodes = crate::planning::site_nodes(topology, &network, site);
            let Some(&node) = nodes.first() else {
                bail!("the topology has no WAN router for site {site}");
            };
            let mut prefixes: Vec<ipnet::Ipv4Net> = topology
                .nodes
                .iter()
                .filter(|n| n.site.as_deref() == Some(site))
                .flat_map(|n| n.prefixes.iter())
                .filter_map(|p| match p {
                    IpNet::V4(v4) => Some(*v4),
                    IpNet::V6(_) => None,
                })
                .collect();
            prefixes.sort();
            let Some(prefix) = prefixes.first().copied() else {
                bail!("site {site} has no IPv4 prefix for its traffic");
            };
            sites.insert(
                site,
                SiteExporter {
                    site,
                    node: network.nodes[node].clone(),
                    prefix,
                    exporter: SampledExporter::new(protocol, domain, sampling, boot_ms),
                },
            );
        }
        let mut by_node: BTreeMap<&str, u32> = BTreeMap::new();
        let mut links = BTreeMap::new();
        for link in topology.links.iter().filter(|l| l.admin_up) {
            let index = by_node.entry(link.src.as_str()).or_insert(1);
            *index += 1;
            links.insert(
                format!("{}:{}", link.src, link.src_interface),
                (
                    link.src.clone(),
                    link.src_interface.clone(),
                    *index,
                    link.capacity_bps as f64,
                ),
            );
        }
        Ok(SimulatedSites {
            sites,
            links,
            counters: BTreeMap::new(),
            rng: SplitMix64(seed),
        })
    }

    /// The exporter mappings the controller is configured with.
    fn mappings(&self) -> Vec<ExporterMapping> {
        self.sites
            .values()
            .map(|site| ExporterMapping {
                node: site.node.clone(),
                address: IpAddr::V4(Ipv4Addr::LOCALHOST),
                observation_domain: Some(site.exporter.domain),
            })
            .collect()
    }

    /// One second of traffic: the flows of `demands` over the second that
    /// ends at `end_ms`.
    fn flows(&self, demands: &[SiteDemand]) -> Vec<(SiteDemand, Vec<DemoFlow>)> {
        let weights: Vec<f64> = (0..FLOWS_PER_DEMAND)
            .map(|i| 1.0 / ((i + 1) as f64).powf(0.8))
            .collect();
        let total: f64 = weights.iter().sum();
        demands
            .iter()
            .filter_map(|demand| {
                let src = self.sites.get(demand.src)?;
                let dst = self.sites.get(demand.dst)?;
                let host = |net: ipnet::Ipv4Net, n: u32| {
                    Ipv4Addr::from(u32::from(net.network()) + 10 + n % 200)
                };
                let flows = weights
                    .iter()
                    .enumerate()
                    .map(|(i, w)| {
                        let i = i as u32;
                        (
                            host(src.prefix, i),
                            host(dst.prefix, i * 7 + 3),
                            49_152 + i as u16,
                            demand.rate_bps * w / total,
                        )
                    })
                    .collect();
                Some((demand.clone(), flows))
            })
            .collect()
    }

    /// Runs one second: loads from the dataplane, counters into the store,
    /// sampled records out of the exporters. Returns the datagrams per
    /// exporter and the WAN's offered MLU.
    fn second(
        &mut self,
        dataplane: &SimulatedDataplane,
        demands: &[SiteDemand],
        end_ms: i64,
    ) -> (Vec<Vec<u8>>, Vec<InterfaceCounters>, f64) {
        let flows = self.flows(demands);
        let simulated: Vec<SimulatedFlow> = flows
            .iter()
            .flat_map(|(_, flows)| flows.iter())
            .map(|(src, dst, _, rate)| SimulatedFlow {
                source: IpAddr::V4(*src),
                destination: IpAddr::V4(*dst),
                rate_bps: *rate,
            })
            .collect();
        let loads = dataplane.loads(&simulated);
        let mut samples = Vec::with_capacity(self.links.len());
        let mut mlu: f64 = 0.0;
        for (name, (node, interface, index, capacity)) in &self.links {
            let offered = loads.links.get(name).copied().unwrap_or(0.0);
            mlu = mlu.max(offered / capacity);
            let sent = offered.min(*capacity);
            let counter = self.counters.entry(name.clone()).or_default();
            counter.0 = counter.0.wrapping_add((sent / 8.0) as u64);
            counter.1 = counter.1.wrapping_add((sent / 8.0 / 1500.0) as u64);
            counter.2 = counter
                .2
                .wrapping_add(((offered - sent).max(0.0) / 8.0 / 1500.0) as u64);
            samples.push(InterfaceCounters {
                // Read as the exporters export, so the counters and the
                // flow records of one second fall in the same interval.
                received_ms: end_ms + EXPORT_DELAY_MS,
                device: node.clone(),
                if_index: *index,
                if_name: Some(interface.clone()),
                speed_bps: *capacity as u64,
                in_octets: 0,
                in_packets: 0,
                in_errors: 0,
                in_discards: 0,
                out_octets: counter.0,
                out_packets: counter.1,
                out_errors: 0,
                out_discards: counter.2,
            });
        }
        let mut datagrams = Vec::new();
        let mut by_site: BTreeMap<&str, Vec<FlowRecord>> = BTreeMap::new();
        for (demand, flows) in &flows {
            let Some(site) = self.sites.get(demand.src) else {
                continue;
            };
            let (protocol, port, size) = demand.marking.shape();
            let sampling = f64::from(site.exporter.sampling);
            for (src, dst, src_port, rate) in flows {
                let packets = rate / 8.0 / size as f64;
                let sampled = self.rng.poisson(packets / sampling);
                if sampled == 0 {
                    continue;
                }
                by_site.entry(site.site).or_default().push(FlowRecord {
                    received_ms: end_ms,
                    flow_end_ms: end_ms,
                    src_addr: addr_to_u128(IpAddr::V4(*src)),
                    dst_addr: addr_to_u128(IpAddr::V4(*dst)),
                    src_port: *src_port,
                    dst_port: port,
                    protocol,
                    tos: demand.marking.dscp() << 2,
                    in_if: 1,
                    out_if: 2,
                    packets: sampled,
                    bytes: sampled * size,
                    sampling_rate: site.exporter.sampling,
                });
            }
        }
        for (site, records) in by_site {
            if let Some(site) = self.sites.get_mut(site) {
                datagrams.extend(site.exporter.export(&records, end_ms));
            }
        }
        (datagrams, samples, mlu)
    }
}

/// `aiwan demo`.
pub async fn demo(args: &DemoArgs) -> anyhow::Result<ExitCode> {
    let data_dir = args.data_dir.clone().unwrap_or_else(|| {
        PathBuf::from(if args.lab {
            "aiwan-demo-lab"
        } else {
            "aiwan-demo"
        })
    });
    if args.lab {
        return lab::demo_lab(args, &data_dir).await;
    }
    let (token, listen) = state_and_address(args, &data_dir)?;
    let topology =
        aiwan_planner::formats::clab::parse_clab(TOPOLOGY).context("the built-in topology")?;
    let mut network = SimulatedSites::new(&topology, args.seed)?;
    let mut config = config(args, &data_dir, listen, &token);
    config.closed_loop.exporters = network.mappings();
    let running = crate::server::start(&config)
        .await
        .context("the demo's controller did not start")?;
    let endpoint = announce(&running, &token);
    let (_, mut events) = running.events.subscribe();
    let mut figures = RunFigures::default();
    let dashboard = wants_dashboard(args);
    let run = run(
        args,
        &running,
        &mut network,
        &endpoint,
        &token,
        &mut events,
        &mut figures,
        !dashboard && !args.headless && !args.json,
    );
    let result = present(dashboard, &endpoint, &token, run).await;
    finish(args, running, figures, &demo_jobs(), result).await
}

/// Makes the data directory, says where it is, and reads (or makes) the
/// token; the API address to listen on.
fn state_and_address(args: &DemoArgs, data_dir: &Path) -> anyhow::Result<(String, SocketAddr)> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create --data-dir {}", data_dir.display()))?;
    let shown_dir = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    eprintln!(
        "aiwan demo: state in {} (SQLite aiwan.db and the demo's token; remove it to start over)",
        shown_dir.display()
    );
    let token = demo_token(data_dir)?;
    let listen = match args.listen {
        Some(listen) => listen,
        None => {
            let default: SocketAddr = DEFAULT_LISTEN.parse().context("default listen address")?;
            match std::net::TcpListener::bind(default) {
                Ok(_) => default,
                Err(_) => SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            }
        }
    };
    Ok((token, listen))
}

/// Prints where the controller listens and how to attach the TUI; the
/// API endpoint.
fn announce(running: &RunningController, token: &str) -> String {
    let endpoint = format!("http://{}", running.grpc_addr);
    eprintln!("aiwan demo: controller on {endpoint}");
    eprintln!(
        "aiwan demo: attach the operator TUI with: aiwan tui --endpoint {endpoint} --token {token}"
    );
    if let Some(metrics) = running.metrics_addr {
        eprintln!("aiwan demo: metrics on http://{metrics}/metrics");
    }
    endpoint
}

/// Whether the operator TUI opens in front of the demo: on a terminal,
/// unless headless or JSON.
fn wants_dashboard(args: &DemoArgs) -> bool {
    use std::io::IsTerminal as _;
    !args.headless
        && !args.json
        && std::io::stdout().is_terminal()
        && std::io::stdin().is_terminal()
}

/// Runs the demo, with the operator TUI in front when `dashboard`: the
/// demo runs behind it until the TUI quits (which ends the demo) or the
/// demo's run ends (which closes the TUI, restoring the terminal).
async fn present(
    dashboard: bool,
    endpoint: &str,
    token: &str,
    run: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    if !dashboard {
        return run.await;
    }
    let (done, ended) = tokio::sync::oneshot::channel::<()>();
    let tui = aiwan_ui::run_until(
        aiwan_ui::Options {
            endpoint: endpoint.to_string(),
            token: Some(token.to_string()),
            ca_file: None,
        },
        async move {
            let _ = ended.await;
        },
    );
    tokio::pin!(tui);
    tokio::pin!(run);
    let ran = tokio::select! {
        result = &mut run => Some(result),
        result = &mut tui => {
            // The operator quit the dashboard: the demo ends.
            result.context("the operator TUI").map(|()| None)?
        }
    };
    match ran {
        Some(result) => {
            let _ = done.send(());
            let closed = tui.await.context("the operator TUI");
            result.and(closed)
        }
        None => Ok(()),
    }
}

/// Summarises, stops the controller and prints the summary.
async fn finish(
    args: &DemoArgs,
    running: RunningController,
    figures: RunFigures,
    jobs: &[(&'static str, pb::Job)],
    result: anyhow::Result<()>,
) -> anyhow::Result<ExitCode> {
    let summary = summarize(&running, figures, jobs).await;
    running
        .shutdown()
        .await
        .context("the demo's controller did not stop cleanly")?;
    let (summary, text) = summary?;
    result?;
    if args.json {
        crate::client::print_out(&format!("{summary}\n"))?;
    } else {
        crate::client::print_out(&text)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// What the run itself measured, for the summary.
#[derive(Debug, Clone, Default)]
struct RunFigures {
    seconds: u64,
    /// The simulator's: the highest MLU of the traffic offered, and the
    /// flow datagrams its routers sent.
    dataplane_mlu_max: f64,
    datagrams_sent: u64,
    /// The lab's: traffic sent and delivered per class.
    lab: Option<serde_json::Value>,
}

#[allow(clippy::too_many_arguments)]
async fn run(
    args: &DemoArgs,
    running: &RunningController,
    network: &mut SimulatedSites,
    endpoint: &str,
    token: &str,
    events: &mut tokio::sync::broadcast::Receiver<crate::events::Event>,
    figures: &mut RunFigures,
    // Report events on stderr (no dashboard on the terminal).
    interactive: bool,
) -> anyhow::Result<()> {
    let channel = tonic::transport::Endpoint::from_shared(endpoint.to_string())
        .context("endpoint")?
        .connect()
        .await
        .context("cannot reach the demo's controller")?;
    let bearer = BearerToken::new(Some(token))?;
    let topology =
        aiwan_planner::formats::clab::parse_clab(TOPOLOGY).context("the built-in topology")?;
    prepare(channel, &bearer, &topology, &demo_jobs()).await?;
    let Some(dataplane) = running.simulated.clone() else {
        bail!("the demo's controller has no simulated dataplane");
    };
    let Some(pipeline) = running.telemetry.as_ref() else {
        bail!("the demo's controller has no collectors");
    };
    let Some(collector) = pipeline.collector.netflow_address else {
        bail!("the demo's controller has no NetFlow listener");
    };
    let store = pipeline.store.clone();
    let socket = tokio::net::UdpSocket::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .await
        .context("cannot open the exporters' UDP socket")?;
    let background = Background::embedded().context("the embedded background traffic")?;
    let started_ms = now_ms();
    let deadline = args
        .duration
        .map(|secs| tokio::time::Instant::now() + Duration::from_secs(secs));
    let stop = crate::server::shutdown_signal();
    tokio::pin!(stop);
    loop {
        // Every second on the second (plus a little, so the second's
        // traffic lands in the bucket after it, whole).
        let now = now_ms();
        let next = (now / 1000 + 1) * 1000 + EXPORT_DELAY_MS;
        let sleep = tokio::time::sleep(Duration::from_millis((next - now).max(0) as u64));
        tokio::select! {
            () = sleep => {}
            () = &mut stop => break,
            () = async {
                match deadline {
                    Some(deadline) => tokio::time::sleep_until(deadline).await,
                    None => std::future::pending().await,
                }
            } => break,
        }
        let end_ms = next - EXPORT_DELAY_MS;
        let t = (end_ms - started_ms) as f64 / 1000.0 - 0.5;
        let demands = traffic::offered_at(&background, t.max(0.0));
        let (datagrams, samples, mlu) = network.second(&dataplane, &demands, end_ms);
        figures.seconds += 1;
        figures.dataplane_mlu_max = figures.dataplane_mlu_max.max(mlu);
        if let Err(error) = with_store(&store, move |store| store.ingest_counters(&samples)).await {
            tracing::warn!(%error, "the store refused the simulated counters");
        }
        for datagram in &datagrams {
            match socket.send_to(datagram, collector).await {
                Ok(_) => figures.datagrams_sent += 1,
                Err(error) => tracing::warn!(%error, "cannot send a flow datagram"),
            }
        }
        if interactive {
            report_events(events, running, Some(mlu));
        }
    }
    settle(
        running,
        network,
        &dataplane,
        &background,
        started_ms,
        &store,
        &socket,
        collector,
    )
    .await;
    Ok(())
}

/// Keeps the network running for the last re-plan's first measured
/// interval (at most [`SETTLE`]).
#[allow(clippy::too_many_arguments)]
async fn settle(
    running: &RunningController,
    network: &mut SimulatedSites,
    dataplane: &SimulatedDataplane,
    background: &Background,
    started_ms: i64,
    store: &aiwan_collectors::pipeline::SharedStore,
    socket: &tokio::net::UdpSocket,
    collector: SocketAddr,
) {
    // Let the last re-plan show its effect in a measured interval.
    let settle = tokio::time::Instant::now() + SETTLE;
    while tokio::time::Instant::now() < settle {
        if !replan_unmeasured(running) {
            break;
        }
        // Keep the network running meanwhile, at the last second's traffic.
        let end_ms = (now_ms() / 1000 + 1) * 1000;
        tokio::time::sleep(Duration::from_millis(
            (end_ms + EXPORT_DELAY_MS - now_ms()).max(0) as u64,
        ))
        .await;
        let t = (end_ms - started_ms) as f64 / 1000.0 - 0.5;
        let demands = traffic::offered_at(background, t.max(0.0));
        let (datagrams, samples, _) = network.second(dataplane, &demands, end_ms);
        let _ = with_store(store, move |store| store.ingest_counters(&samples)).await;
        for datagram in &datagrams {
            let _ = socket.send_to(datagram, collector).await;
        }
    }
}

/// Whether a re-plan that was applied waits for its first measured
/// interval.
fn replan_unmeasured(running: &RunningController) -> bool {
    let view = running
        .closed_loop
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    view.replans
        .iter()
        .any(|r| !r.proposal && r.measured_mlu_after.is_none())
}

/// One stderr line per event an operator watching the demo cares about.
fn report_events(
    events: &mut tokio::sync::broadcast::Receiver<crate::events::Event>,
    running: &RunningController,
    // The simulator's MLU of the traffic offered.
    offered_mlu: Option<f64>,
) {
    use tokio::sync::broadcast::error::TryRecvError;
    loop {
        match events.try_recv() {
            Ok(event) => {
                if matches!(
                    event.kind,
                    EventKind::Replan
                        | EventKind::PlanApplied
                        | EventKind::CongestionPredicted
                        | EventKind::CongestionSeen
                        | EventKind::CongestionCleared
                ) {
                    eprintln!(
                        "  {:<22} {:<26} {}",
                        event.kind.as_str(),
                        event.subject,
                        event.message
                    );
                }
            }
            Err(TryRecvError::Lagged(_)) => continue,
            Err(TryRecvError::Empty | TryRecvError::Closed) => break,
        }
    }
    let view = running
        .closed_loop
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(start) = view.last_interval_start_ms
        && start % 10_000 == 0
    {
        let offered = offered_mlu
            .map(|mlu| format!(", offered {mlu:.2}"))
            .unwrap_or_default();
        eprintln!(
            "  measured MLU {:.2}, predicted {:.2}{offered}; {}",
            view.measured_mlu, view.predicted_mlu, view.last_decision
        );
    }
}

async fn summarize(
    running: &RunningController,
    figures: RunFigures,
    jobs: &[(&'static str, pb::Job)],
) -> anyhow::Result<(serde_json::Value, String)> {
    use std::fmt::Write as _;
    let mut totals = aiwan_collectors::stats::ExporterCounters::default();
    if let Some(pipeline) = &running.telemetry {
        for exporter in pipeline.collector.board().exporters() {
            totals.add(&exporter.counters);
        }
    }
    let pushes = running.events.count(EventKind::Push);
    let view = running
        .closed_loop
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let replans: Vec<&ReplanRecord> = view.replans.iter().filter(|r| !r.proposal).collect();
    let proposals: Vec<String> = view
        .replans
        .iter()
        .filter(|r| r.proposal)
        .map(|r| format!("plans/{}", r.version))
        .collect();
    let mlu_before: Vec<f64> = replans
        .iter()
        .map(|r| round(r.measured_mlu_before.unwrap_or(r.predicted_mlu_before)))
        .collect();
    let mlu_after: Vec<f64> = replans
        .iter()
        .map(|r| round(r.measured_mlu_after.unwrap_or(r.predicted_mlu_after)))
        .collect();
    let replan_list: Vec<serde_json::Value> = replans
        .iter()
        .map(|r| {
            serde_json::json!({
                "plan": format!("plans/{}", r.version),
                "trigger": r.trigger.as_str(),
                "predicted_mlu_before": round(r.predicted_mlu_before),
                "predicted_mlu_after": round(r.predicted_mlu_after),
                "measured_mlu_before": r.measured_mlu_before.map(round),
                "measured_mlu_after": r.measured_mlu_after.map(round),
                // Intervals after it whose traffic changed too much to
                // measure its effect (mlu_after is then the prediction).
                "intervals_not_comparable": r.intervals_not_comparable,
                "loop_latency_ms": r.latency_ms.filter(|_| r.applied_ms.is_some()),
                "routes_changed": r.routes_changed,
            })
        })
        .collect();
    let plan_metrics: serde_json::Value = running
        .store
        .current_plan()
        .await
        .context("cannot read the current plan")?
        .and_then(|plan| serde_json::from_str(&plan.metrics_json).ok())
        .unwrap_or(serde_json::Value::Null);
    let ai_jobs = job_summary(&plan_metrics, &view, jobs);
    let mut summary = serde_json::json!({
        "packets_received": totals.datagrams,
        "flow_records": totals.records,
        "decode_errors": totals.decode_errors,
        "mode": view.mode.as_str(),
        "replans": replans.len(),
        "proposals": proposals,
        "telemetry_replans": replans.iter().filter(|r| r.trigger.is_telemetry()).count(),
        "pushes_applied": pushes,
        "mlu_before": mlu_before,
        "mlu_after": mlu_after,
        "replan_details": replan_list,
        "loop_latency_ms": view.last_latency_ms,
        "ai_jobs": ai_jobs,
        "seconds": figures.seconds,
    });
    if let Some(lab) = &figures.lab {
        summary["lab_traffic"] = lab.clone();
    } else {
        summary["datagrams_sent"] = figures.datagrams_sent.into();
        summary["dataplane_offered_mlu_max"] = round(figures.dataplane_mlu_max).into();
    }
    let mut text = String::new();
    writeln!(
        text,
        "aiwan demo: {} s of traffic, {} flow datagrams received ({} records, {} decode errors), {} pushes applied",
        figures.seconds, totals.datagrams, totals.records, totals.decode_errors, pushes
    )?;
    for (r, after) in replans.iter().zip(&mlu_after) {
        let before = match r.measured_mlu_before {
            Some(before) => format!("{before:.2}"),
            None => "? (no traffic measured before it)".to_string(),
        };
        let after = match r.measured_mlu_after {
            Some(_) => format!("{after:.2}"),
            None if r.intervals_not_comparable > 0 => {
                "? (traffic changed before it could be measured)".to_string()
            }
            None => "? (not measured yet)".to_string(),
        };
        writeln!(
            text,
            "  plans/{:<4} {:<12} measured MLU {before} -> {after} (predicted {:.2} -> {:.2}){}",
            r.version,
            r.trigger.as_str(),
            r.predicted_mlu_before,
            r.predicted_mlu_after,
            r.latency_ms
                .filter(|_| r.applied_ms.is_some())
                .map(|ms| format!(
                    ", congestion seen to routes applied in {:.1} s",
                    ms as f64 / 1000.0
                ))
                .unwrap_or_default()
        )?;
    }
    for proposal in &proposals {
        writeln!(
            text,
            "  {proposal} proposed, waiting for an operator (aiwan.v1.PlanService/ApprovePlan)"
        )?;
    }
    if let Some(jobs) = ai_jobs.as_array() {
        for job in jobs {
            writeln!(
                text,
                "  {:<22} {:<12} satisfaction {}",
                job["job"].as_str().unwrap_or_default(),
                job["class"].as_str().unwrap_or_default(),
                job["satisfaction"]
            )?;
        }
    }
    if let Some(classes) = figures
        .lab
        .as_ref()
        .and_then(|lab| lab["classes"].as_object())
    {
        for (class, figures) in classes {
            writeln!(
                text,
                "  lab traffic {class:<12} sent {} Mbit/s, received {} Mbit/s",
                figures["sent_mbps"], figures["received_mbps"]
            )?;
        }
    }
    Ok((summary, text))
}

/// Each declared job with its class's satisfaction in the current plan
/// (the share of the class's demand the plan places within capacity), and
/// what the last measured interval saw of its class between its sites'
/// WAN routers.
fn job_summary(
    plan_metrics: &serde_json::Value,
    view: &crate::closed_loop::LoopView,
    jobs: &[(&'static str, pb::Job)],
) -> serde_json::Value {
    let index: BTreeMap<&str, usize> = view
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();
    let latest = view.intervals.back();
    let jobs = jobs
        .iter()
        .map(|(id, job)| {
            let (class, slot, key) = if job.traffic_class == pb::TrafficClass::AiSync as i32 {
                ("ai-sync", 0, "ai_sync_satisfaction")
            } else if job.traffic_class == pb::TrafficClass::AiBulk as i32 {
                ("ai-bulk", 1, "ai_bulk_satisfaction")
            } else {
                ("best-effort", 2, "best_effort_satisfaction")
            };
            let edge_of = |endpoints: &[pb::Endpoint]| match endpoints.first().and_then(|e| e.kind.as_ref()) {
                Some(pb::endpoint::Kind::Site(site)) => {
                    format!("{}-edge", site.trim_start_matches("sites/"))
                }
                _ => String::new(),
            };
            let (src, dst) = (edge_of(&job.sources), edge_of(&job.destinations));
            let measured = latest.and_then(|interval| {
                let s = *index.get(src.as_str())?;
                let d = *index.get(dst.as_str())?;
                Some(round(interval.classes[slot].get(s, d)))
            });
            serde_json::json!({
                "job": format!("jobs/{id}"),
                "class": class,
                "declared_bps": job.rate_bps,
                "measured_class_bps": measured,
                "satisfaction": plan_metrics.get(key).and_then(serde_json::Value::as_f64).map(round),
            })
        })
        .collect();
    serde_json::Value::Array(jobs)
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
