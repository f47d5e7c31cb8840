//! `aiwan lab run SCENARIO`: a traffic scenario (`lab/scenarios/*.toml`,
//! read by `aiwan_lab::scenario`) on real forwarding. The topology is
//! deployed into namespaces (shaped as the scenario says) with one agent
//! per router; for each side, a controller of its own (in this process,
//! SQLite in a fresh folder, the agents driver) imports the topology and
//! pushes its plan; then the scenario's iperf3 flows run once per port set.
//!
//! - baseline: the controller routes (its underlay: shortest paths, equal
//!   ECMP where paths tie) and only observes; no job is declared;
//! - aiwan: the scenario's collective, when `declare` is set, is declared
//!   as a job, so its flows are placed and pinned by per-flow rules.
//!
//! Per side it prints per-flow throughput (the receiver's figure), per-link
//! utilisation and the scenario's figures, and tears everything down, on
//! success, failure or Ctrl-C alike: controllers stopped, agents stopped,
//! namespaces deleted, its own folders removed.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use aiwan_api::v1 as pb;
use aiwan_api::v1::intent_service_client::IntentServiceClient;
use aiwan_api::v1::plan_service_client::PlanServiceClient;
use aiwan_api::v1::topology_service_client::TopologyServiceClient;
use aiwan_lab::deploy::{self, DEFAULT_SHAPE_CAP_BPS, DeployOptions, Deployment};
use aiwan_lab::scenario::{Protocol, Scenario, load_scenario};
use aiwan_planner::{NodeRole, Topology};
use anyhow::{Context, bail};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::client::BearerToken;
use crate::config::{ControllerConfig, SouthboundDriver};

/// Arguments of `aiwan lab run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// A scenario file (lab/scenarios/*.toml).
    pub scenario: PathBuf,
    /// Lab name, the prefix of its namespaces [default: the scenario's
    /// name]; the lab must not be up.
    #[arg(long)]
    pub name: Option<String>,
    /// Runs per side, each with other source ports [default: the
    /// scenario's port_sets].
    #[arg(long)]
    pub port_sets: Option<u32>,
    /// Print one JSON document: {"baseline": {...}, "aiwan": {...}, ...}.
    #[arg(long)]
    pub json: bool,
}

/// How often the controllers reconcile the agents, ms.
const RECONCILE_INTERVAL_MS: u64 = 500;
/// How long a plan may take to be applied on every router.
const APPLY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long iperf3 servers may take to listen.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);
/// Beyond its duration, how long an iperf3 client may take.
const CLIENT_GRACE: Duration = Duration::from_secs(20);
/// Source ports of the clients: a run's `k`-th candidate is
/// `FIRST + (start + k * STEP) mod SPAN`, with `start` drawn per side and
/// port set from a fixed sequence, and a flow takes the next candidate no
/// earlier run of the lab used. The sets are then independent draws of the
/// kernel's hash (neighbouring ports were not), no two flows of a run share
/// a port (STEP is prime to SPAN), and no client binds a port an earlier
/// connection of the lab may still hold in TIME_WAIT (iperf3 binds without
/// SO_REUSEADDR: that fails with "Address already in use"). The ports stay
/// below the kernel's ephemeral range (32768 and up by default), where the
/// iperf3 control connections take theirs.
const CLIENT_PORT_FIRST: u32 = 10_000;
const CLIENT_PORT_SPAN: u32 = 22_000;
const CLIENT_PORT_STEP: u32 = 7_919;

/// Where a run's client ports start: a splitmix64 draw from the side and
/// the port set.
fn client_port_start(side_index: u32, set: u32) -> u32 {
    let mut z = (u64::from(side_index) << 32 | u64::from(set)).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z % u64::from(CLIENT_PORT_SPAN)) as u32
}

/// Candidate `k` of the client ports of a run starting at `start`.
fn client_port(start: u32, k: u64) -> u32 {
    let step = (k * u64::from(CLIENT_PORT_STEP)) % u64::from(CLIENT_PORT_SPAN);
    CLIENT_PORT_FIRST + ((u64::from(start) + step) % u64::from(CLIENT_PORT_SPAN)) as u32
}

/// The client ports of a run of `count` flows starting at `start`: the
/// first candidates not in `used`, which takes them.
fn client_ports(start: u32, count: usize, used: &mut BTreeSet<u32>) -> anyhow::Result<Vec<u32>> {
    let mut ports = Vec::with_capacity(count);
    for k in 0..u64::from(CLIENT_PORT_SPAN) {
        if ports.len() == count {
            break;
        }
        let port = client_port(start, k);
        if used.insert(port) {
            ports.push(port);
        }
    }
    if ports.len() < count {
        bail!(
            "the lab's runs need more than {CLIENT_PORT_SPAN} client ports (flows times port sets)"
        );
    }
    Ok(ports)
}

/// Runs `aiwan lab run`; exit 0 when the scenario's targets hold, 1 when
/// one does not (the figures are printed either way).
pub async fn run(args: &RunArgs) -> anyhow::Result<ExitCode> {
    let scenario = load_scenario(&args.scenario)?;
    let topology = aiwan_planner::formats::clab::load_clab(&scenario.topology)
        .with_context(|| format!("the scenario's topology {}", scenario.topology.display()))?;
    check_nodes(&scenario, &topology)?;
    let lab = args.name.clone().unwrap_or_else(|| scenario.name.clone());
    deploy::check_lab_name(&lab)?;
    let port_sets = args.port_sets.unwrap_or(scenario.port_sets);
    if !(1..=aiwan_lab::scenario::MAX_PORT_SETS).contains(&port_sets) {
        bail!(
            "--port-sets must be 1 to {}",
            aiwan_lab::scenario::MAX_PORT_SETS
        );
    }
    if let Some(missing) = missing_prerequisite(scenario.shape_scale.is_some()) {
        bail!("lab run {}: {missing}", args.scenario.display());
    }
    if deploy::status(&lab).is_ok_and(|report| !report.namespaces_present.is_empty()) {
        bail!("lab {lab} is up: take it down first (aiwan lab down --name {lab})");
    }
    let workdir = std::env::temp_dir().join(format!("aiwan-lab-run-{}", std::process::id()));
    let mut teardown = Teardown::new(&lab, Some(workdir.clone()));
    let started = Instant::now();
    let outcome = tokio::select! {
        outcome = run_sides(&scenario, &topology, &lab, &workdir, port_sets, args.json) => outcome,
        () = crate::server::shutdown_signal() => Err(anyhow::anyhow!("interrupted")),
    };
    let cleaned = teardown.run();
    let report = outcome?;
    cleaned?;
    let mut report = report;
    report["elapsed_s"] = serde_json::json!(started.elapsed().as_secs_f64());
    let met = report["targets"]
        .as_object()
        .is_none_or(|targets| targets.values().all(|t| t["met"] == true));
    if args.json {
        crate::client::print_out(&format!("{report}\n"))?;
    } else {
        crate::client::print_out(&describe(&report))?;
    }
    Ok(if met {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Every node the scenario names is in the topology, and the collective's
/// members are hosts.
fn check_nodes(scenario: &Scenario, topology: &Topology) -> anyhow::Result<()> {
    let role: BTreeMap<&str, NodeRole> = topology
        .nodes
        .iter()
        .map(|n| (n.id.as_str(), n.role))
        .collect();
    for (i, flow) in scenario.flows.iter().enumerate() {
        for node in [&flow.from, &flow.to] {
            if !role.contains_key(node.as_str()) {
                bail!("scenario flow[{i}]: no node {node} in the topology");
            }
        }
    }
    if let Some(collective) = &scenario.collective {
        for node in &collective.ring {
            match role.get(node.as_str()) {
                Some(NodeRole::Host) => {}
                Some(other) => bail!(
                    "scenario collective.ring: {node} is a {}, not a host",
                    other.as_str()
                ),
                None => bail!("scenario collective.ring: no node {node} in the topology"),
            }
        }
    }
    Ok(())
}

/// What a lab run needs that this machine may lack.
fn missing_prerequisite(shaped: bool) -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root (network namespaces)".into());
    }
    let mut tools = vec!["ip", "iperf3"];
    if shaped {
        tools.push("tc");
    }
    let missing: Vec<&str> = tools
        .into_iter()
        .filter(|tool| {
            std::process::Command::new(tool)
                .arg(if *tool == "iperf3" { "--version" } else { "-V" })
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .is_err()
        })
        .collect();
    (!missing.is_empty()).then(|| {
        format!(
            "missing {} (Debian: apt-get install iproute2 iperf3)",
            missing.join(", ")
        )
    })
}

/// Takes down what a run set up: the controllers are stopped by then (or
/// dropped); this stops the agents and exporters, deletes the namespaces
/// and removes the run's own folder, if it has one. Also on drop, so a
/// panic leaves nothing.
pub(crate) struct Teardown {
    lab: String,
    workdir: Option<PathBuf>,
    armed: bool,
}

impl Teardown {
    pub(crate) fn new(lab: &str, workdir: Option<PathBuf>) -> Teardown {
        Teardown {
            lab: lab.to_string(),
            workdir,
            armed: true,
        }
    }

    /// Keeps what was set up: nothing is taken down on drop.
    pub(crate) fn disarm(&mut self) {
        self.armed = false;
    }

    pub(crate) fn run(&mut self) -> anyhow::Result<()> {
        if !self.armed {
            return Ok(());
        }
        self.armed = false;
        let agents = crate::lab_cli::stop_agents(&self.lab);
        let destroyed = deploy::destroy(&self.lab);
        let removed = match self.workdir.as_ref().map(std::fs::remove_dir_all) {
            Some(Err(error)) if error.kind() != std::io::ErrorKind::NotFound => Err(error),
            _ => Ok(()),
        };
        agents.with_context(|| format!("stopping the agents of lab {}", self.lab))?;
        destroyed.with_context(|| format!("lab down {}", self.lab))?;
        if let Some(workdir) = &self.workdir {
            removed.with_context(|| format!("removing {}", workdir.display()))?;
        }
        Ok(())
    }
}

impl Drop for Teardown {
    fn drop(&mut self) {
        if let Err(error) = self.run() {
            eprintln!("aiwan: cleaning up lab {}: {error:#}", self.lab);
        }
    }
}

/// The two sides of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Baseline,
    Aiwan,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Baseline => "baseline",
            Side::Aiwan => "aiwan",
        }
    }
}

async fn run_sides(
    scenario: &Scenario,
    topology: &Topology,
    lab: &str,
    workdir: &Path,
    port_sets: u32,
    quiet: bool,
) -> anyhow::Result<serde_json::Value> {
    std::fs::create_dir_all(workdir)
        .with_context(|| format!("cannot create {}", workdir.display()))?;
    let options = DeployOptions {
        shape: scenario.shape_scale.is_some(),
        shape_scale: scenario.shape_scale.unwrap_or(1.0),
        shape_cap_bps: DEFAULT_SHAPE_CAP_BPS,
        force: false,
        management: scenario.exporters,
        // The exporters should see packets as a router on real links does.
        wire_sized_packets: scenario.exporters,
    };
    let deployment =
        deploy::deploy(topology, lab, &options).with_context(|| format!("lab up {lab}"))?;
    crate::lab_cli::start_agents(lab, &deployment).context("starting the agents")?;
    let sampling = if scenario.exporters {
        let text = std::fs::read_to_string(&scenario.topology)
            .with_context(|| format!("cannot read {}", scenario.topology.display()))?;
        aiwan_planner::formats::clab::parse_sampling(&text)?
    } else {
        BTreeMap::new()
    };
    let mut report = serde_json::json!({
        "scenario": scenario.name,
        "lab": lab,
        "port_sets": port_sets,
        "shaped": deployment.shaped,
    });
    // Both sides run in the same namespaces.
    let mut used_client_ports = BTreeSet::new();
    for side in [Side::Baseline, Side::Aiwan] {
        if !quiet {
            eprintln!("aiwan lab run: {} side", side.name());
        }
        let figures = run_side(
            scenario,
            topology,
            lab,
            &deployment,
            &sampling,
            workdir,
            side,
            port_sets,
            &mut used_client_ports,
            quiet,
        )
        .await
        .with_context(|| format!("the {} side", side.name()))?;
        report[side.name()] = figures;
    }
    report["targets"] = targets(scenario, &report);
    Ok(report)
}

/// The controller of one side, with API clients.
struct SideController {
    running: crate::server::RunningController,
    topology: TopologyServiceClient<InterceptedService<Channel, BearerToken>>,
    intents: IntentServiceClient<InterceptedService<Channel, BearerToken>>,
    plans: PlanServiceClient<InterceptedService<Channel, BearerToken>>,
}

/// How the lab's exporters export: IPFIX, flows reported every second.
pub(crate) const EXPORTER_SETTINGS: crate::lab_cli::ExporterSettings =
    crate::lab_cli::ExporterSettings {
        version: 10,
        active_timeout_s: 1,
    };

/// A controller's settings for a deployed lab: the agents as its
/// southbound, and with `exporting`, its collectors in the management
/// namespace where the exporters send, mapped to their nodes, and the
/// closed loop on their telemetry every second.
pub(crate) fn configure_for_lab(
    config: &mut ControllerConfig,
    lab: &str,
    deployment: &Deployment,
    exporting: bool,
) -> anyhow::Result<()> {
    config.southbound.driver = Some(SouthboundDriver::Agents);
    config.southbound.reconcile_interval_ms = RECONCILE_INTERVAL_MS;
    config.southbound.agent_timeout_ms = 5000;
    config.southbound.agent_endpoint_template = Some(crate::lab_cli::agent_endpoint_template(lab)?);
    // A shaped lab's links are tbf root qdiscs of the lab's own, which the
    // agents do not replace: plans go out without class limits there.
    config.southbound.rate_limits = !deployment.shaped;
    let Some(management) = deployment.management.as_ref().filter(|_| exporting) else {
        return Ok(());
    };
    let collector = &mut config.collector;
    collector.netns = Some(management.namespace.clone());
    collector.netflow_listen = Some(SocketAddr::from((
        Ipv4Addr::UNSPECIFIED,
        crate::lab_cli::LAB_COLLECTOR_PORT,
    )));
    collector.shards = 1;
    collector.store.close_grace_ms = 300;
    let closed_loop = &mut config.closed_loop;
    closed_loop.interval_ms = 1000;
    closed_loop.min_replan_interval_ms = 2000;
    closed_loop.history = 60;
    // 12 s of 1 s intervals as the plan's scenarios: each costs an LP per
    // class, and a re-plan must take well under the interval.
    closed_loop.window = 12;
    let mut mapped: Vec<&str> = crate::lab_cli::edge_interfaces(deployment)
        .into_iter()
        .map(|(node, _)| node.node.as_str())
        .collect();
    mapped.dedup();
    closed_loop.exporters = mapped
        .into_iter()
        .filter_map(|node| deployment.management_link(node))
        .map(|link| crate::closed_loop::demand::ExporterMapping {
            node: link.node.clone(),
            address: IpAddr::V4(link.address),
            observation_domain: None,
        })
        .collect();
    Ok(())
}

/// The topology as a controller should plan it on a lab shaped at
/// `scale`: each link's capacity its tbf rate.
pub(crate) fn shaped_topology(topology: &Topology, scale: Option<f64>) -> Topology {
    let mut planned = topology.clone();
    if let Some(scale) = scale {
        for link in &mut planned.links {
            link.capacity_bps = deploy::shape_rate(link.capacity_bps, scale, DEFAULT_SHAPE_CAP_BPS);
        }
    }
    planned
}

async fn start_controller(
    lab: &str,
    dir: &Path,
    side: Side,
    deployment: &Deployment,
    exporting: bool,
) -> anyhow::Result<SideController> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let token: String = (0..4)
        .map(|_| format!("{:08x}", rand::random::<u32>()))
        .collect();
    let mut config = ControllerConfig {
        listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        metrics_listen: None,
        data_dir: dir.to_path_buf(),
        bootstrap_token: Some(format!("admin:{token}")),
        ..ControllerConfig::default()
    };
    configure_for_lab(&mut config, lab, deployment, exporting)?;
    if exporting {
        // The closed loop only observes on the baseline's side, and is in
        // charge on aiwan's.
        config.closed_loop.mode = match side {
            Side::Baseline => crate::closed_loop::LoopMode::Recommend,
            Side::Aiwan => crate::closed_loop::LoopMode::Auto,
        };
    }
    let running = crate::server::start(&config)
        .await
        .context("the lab's controller did not start")?;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", running.grpc_addr))
        .context("controller endpoint")?
        .connect()
        .await
        .context("cannot reach the lab's controller")?;
    let bearer = BearerToken::new(Some(&token))?;
    Ok(SideController {
        running,
        topology: TopologyServiceClient::with_interceptor(channel.clone(), bearer.clone()),
        intents: IntentServiceClient::with_interceptor(channel.clone(), bearer.clone()),
        plans: PlanServiceClient::with_interceptor(channel, bearer),
    })
}

impl SideController {
    /// ApplyPlan, then waits until every router holds it.
    async fn apply(&mut self, reason: &str) -> anyhow::Result<pb::Plan> {
        let operation = self
            .plans
            .apply_plan(pb::ApplyPlanRequest {
                reason: reason.into(),
            })
            .await
            .context("ApplyPlan")?
            .into_inner()
            .operation
            .context("ApplyPlan returned no operation")?;
        let version = match operation.result {
            Some(pb::operation::Result::Response(plan)) => plan.version,
            other => bail!("ApplyPlan failed: {other:?}"),
        };
        let deadline = Instant::now() + APPLY_TIMEOUT;
        loop {
            let plan = self
                .plans
                .get_current_plan(pb::GetCurrentPlanRequest {})
                .await
                .context("GetCurrentPlan")?
                .into_inner()
                .plan
                .context("no current plan")?;
            if plan.version == version && plan.status == pb::PlanStatus::Applied as i32 {
                return Ok(plan);
            }
            if Instant::now() > deadline {
                bail!(
                    "plan {version} was not applied on every router within {APPLY_TIMEOUT:?} \
                     (status {:?})",
                    pb::PlanStatus::try_from(plan.status).unwrap_or(pb::PlanStatus::Unspecified)
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// One host's or router's address for traffic: the first host of its
/// first IPv4 prefix, else its IPv4 loopback.
pub(crate) fn traffic_address(deployment: &Deployment, node: &str) -> anyhow::Result<Ipv4Addr> {
    let deployed = deployment
        .nodes
        .iter()
        .find(|n| n.node == node)
        .with_context(|| format!("node {node} was not deployed"))?;
    let from_prefix = deployed.prefix_hosts.iter().find_map(|p| match p.addr() {
        IpAddr::V4(v4) => Some(v4),
        IpAddr::V6(_) => None,
    });
    Ok(from_prefix.unwrap_or_else(|| deployed.loopback.v4.addr()))
}

/// One flow of a run, resolved.
#[derive(Debug, Clone)]
struct RunFlow {
    from: String,
    to: String,
    source: Ipv4Addr,
    destination: Ipv4Addr,
    protocol: Protocol,
    port: u16,
    start: u32,
    seconds: u32,
    rate: Option<String>,
    dscp: Option<u8>,
    ai: bool,
}

fn run_flows(scenario: &Scenario, deployment: &Deployment) -> anyhow::Result<Vec<RunFlow>> {
    let mut flows = Vec::new();
    if let Some(collective) = &scenario.collective {
        let n = collective.ring.len();
        for (i, from) in collective.ring.iter().enumerate() {
            let to = &collective.ring[(i + 1) % n];
            flows.push(RunFlow {
                from: from.clone(),
                to: to.clone(),
                source: traffic_address(deployment, from)?,
                destination: traffic_address(deployment, to)?,
                protocol: collective.protocol,
                port: collective.first_port + i as u16,
                start: 0,
                seconds: collective.seconds,
                rate: collective.rate.clone(),
                dscp: None,
                ai: true,
            });
        }
    }
    for flow in &scenario.flows {
        flows.push(RunFlow {
            from: flow.from.clone(),
            to: flow.to.clone(),
            source: traffic_address(deployment, &flow.from)?,
            destination: traffic_address(deployment, &flow.to)?,
            protocol: flow.protocol,
            port: flow.port,
            start: flow.start,
            seconds: flow.seconds,
            rate: flow.rate.clone(),
            dscp: flow.dscp,
            ai: flow.ai,
        });
    }
    Ok(flows)
}

/// The collective as a job for the controller.
fn collective_job(
    scenario: &Scenario,
    topology: &Topology,
    deployment: &Deployment,
) -> anyhow::Result<Option<pb::Job>> {
    let Some(collective) = scenario.collective.as_ref().filter(|c| c.declare) else {
        return Ok(None);
    };
    let mut members = Vec::new();
    for host in &collective.ring {
        let address = traffic_address(deployment, host)?;
        members.push(pb::Endpoint {
            kind: Some(pb::endpoint::Kind::Prefix(format!("{address}/32"))),
        });
    }
    // The collective's rate as a scheduler declares it: UDP hops at their
    // rate; TCP hops at line rate (an all-reduce sends as fast as its
    // hosts' links go), the slowest link of the ring's hosts.
    let line_rate = collective
        .ring
        .iter()
        .flat_map(|host| topology.links.iter().filter(move |l| &l.src == host))
        .map(|l| match scenario.shape_scale {
            Some(scale) => deploy::shape_rate(l.capacity_bps, scale, DEFAULT_SHAPE_CAP_BPS),
            None => l.capacity_bps,
        })
        .min()
        .unwrap_or(1_000_000);
    let per_hop = collective
        .rate
        .as_deref()
        .and_then(aiwan_planner::formats::clab::parse_rate)
        .unwrap_or(line_rate);
    let rate =
        i64::try_from(per_hop.saturating_mul(collective.ring.len() as u64)).unwrap_or(i64::MAX);
    Ok(Some(pb::Job {
        tenant: "lab".into(),
        traffic_class: pb::TrafficClass::AiSync as i32,
        rate_bps: rate,
        priority: 100,
        collective: Some(pb::Collective {
            members,
            ip_protocol: u32::from(collective.protocol.number()),
            first_port: u32::from(collective.first_port),
        }),
        ..pb::Job::default()
    }))
}

#[allow(clippy::too_many_arguments)]
async fn run_side(
    scenario: &Scenario,
    topology: &Topology,
    lab: &str,
    deployment: &Deployment,
    sampling: &BTreeMap<String, u32>,
    workdir: &Path,
    side: Side,
    port_sets: u32,
    used_client_ports: &mut BTreeSet<u32>,
    quiet: bool,
) -> anyhow::Result<serde_json::Value> {
    let mut controller = start_controller(
        lab,
        &workdir.join(side.name()),
        side,
        deployment,
        scenario.exporters,
    )
    .await?;
    // Exporters start afresh for each side, once its collectors listen:
    // they send their templates to this side's collectors from the start,
    // and carry nothing from the other side's run.
    if scenario.exporters {
        let (lab_name, deployed, sampling) =
            (lab.to_string(), deployment.clone(), sampling.clone());
        tokio::task::spawn_blocking(move || {
            crate::lab_cli::start_exporters(&lab_name, &deployed, &sampling, EXPORTER_SETTINGS)
        })
        .await
        .context("the exporters' task")?
        .context("starting the exporters")?;
    }
    let result = drive_side(
        &mut controller,
        scenario,
        topology,
        lab,
        deployment,
        side,
        port_sets,
        used_client_ports,
        quiet,
    )
    .await;
    if scenario.exporters {
        let lab_name = lab.to_string();
        tokio::task::spawn_blocking(move || crate::lab_cli::stop_exporters(&lab_name))
            .await
            .context("the exporters' task")?
            .context("stopping the exporters")?;
    }
    controller
        .running
        .shutdown()
        .await
        .context("the lab's controller did not stop cleanly")?;
    result
}

#[allow(clippy::too_many_arguments)]
async fn drive_side(
    controller: &mut SideController,
    scenario: &Scenario,
    topology: &Topology,
    lab: &str,
    deployment: &Deployment,
    side: Side,
    port_sets: u32,
    used_client_ports: &mut BTreeSet<u32>,
    quiet: bool,
) -> anyhow::Result<serde_json::Value> {
    // The controller plans on what the links carry: shaped, their
    // capacities are the tbf rates.
    let planned = shaped_topology(topology, scenario.shape_scale);
    controller
        .topology
        .import_topology(pb::ImportTopologyRequest {
            topology: Some(crate::convert::topology_to_pb(&planned, 0, 0)),
        })
        .await
        .context("ImportTopology")?;
    let mut plan = controller
        .apply(&format!("lab run {}: routes", scenario.name))
        .await?;
    let mut placement = serde_json::Value::Null;
    if side == Side::Aiwan
        && let Some(job) = collective_job(scenario, topology, deployment)?
    {
        controller
            .intents
            .create_job(pb::CreateJobRequest {
                job_id: "collective".into(),
                job: Some(job),
            })
            .await
            .context("CreateJob (the collective)")?;
        plan = controller
            .apply(&format!(
                "lab run {}: the collective declared",
                scenario.name
            ))
            .await?;
        let Some(placed) = plan
            .metrics
            .as_ref()
            .and_then(|m| m.collective_placement.as_ref())
        else {
            bail!(
                "plans/{}: the collective's flows were not placed (is every member a host \
                 behind a leaf?)",
                plan.version
            );
        };
        placement = serde_json::json!({
            "flows": placed.flows,
            "max_utilization": placed.max_utilization,
            "lower_bound": placed.lower_bound,
            "moved": placed.moved,
        });
    }
    let flows = run_flows(scenario, deployment)?;
    if scenario.exporters {
        // The closed loop measures a few intervals before it may re-plan.
        let warmup = crate::closed_loop::WARMUP_INTERVALS as u64 + 2;
        tokio::time::sleep(Duration::from_secs(warmup)).await;
    }
    let side_index = u32::from(side == Side::Aiwan);
    let mut runs = Vec::new();
    for set in 0..port_sets {
        let client_base = client_port_start(side_index, set);
        let ports = client_ports(client_base, flows.len(), used_client_ports)?;
        let counters_before = link_bytes(lab, deployment).await?;
        // The routes the scenario watches, sampled while the traffic runs.
        let done = std::sync::atomic::AtomicBool::new(false);
        let traffic = async {
            let result = run_traffic(lab, &flows, &ports).await;
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            result
        };
        let sampler = async {
            let mut samples = Vec::new();
            let Some(reroute) = &scenario.reroute else {
                return Ok(samples);
            };
            let watched = watched_prefixes(topology, &reroute.towards);
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                samples.push((
                    Instant::now(),
                    route_state(lab, &reroute.node, &watched).await?,
                ));
                tokio::time::sleep(ROUTE_SAMPLE_INTERVAL).await;
            }
            anyhow::Ok(samples)
        };
        let (traffic, samples) = tokio::join!(traffic, sampler);
        let (measured, clients_started) = traffic?;
        let samples = samples?;
        let reroute_ms = match &scenario.reroute {
            Some(reroute) => reroute_time(
                &samples,
                clients_started + Duration::from_secs(u64::from(reroute.onset)),
            ),
            None => None,
        };
        // The watched route's changes, ms from the clients' start.
        let mut route_changes = Vec::new();
        let mut last: Option<&str> = None;
        for (at, state) in &samples {
            if last != Some(state.as_str()) {
                let ms = if *at >= clients_started {
                    at.duration_since(clients_started).as_secs_f64() * 1e3
                } else {
                    -(clients_started.duration_since(*at).as_secs_f64() * 1e3)
                };
                route_changes.push(serde_json::json!({ "at_ms": ms, "route": state }));
                last = Some(state.as_str());
            }
        }
        let counters_after = link_bytes(lab, deployment).await?;
        let seconds = f64::from(flows.iter().map(|f| f.start + f.seconds).max().unwrap_or(1));
        let links = link_utilisation(
            topology,
            &counters_before,
            &counters_after,
            seconds,
            scenario.shape_scale,
        );
        let rates: Vec<f64> = measured.iter().map(|m| m.mbps).collect();
        let slowest = rates.iter().copied().fold(f64::INFINITY, f64::min);
        let total: f64 = rates.iter().sum();
        let ai: f64 = measured.iter().filter(|m| m.ai).map(|m| m.mbps).sum();
        if !quiet {
            let reroute = reroute_ms
                .map(|ms| format!(", rerouted {ms:.0} ms after the onset"))
                .unwrap_or_default();
            eprintln!(
                "aiwan lab run: {} port set {}: slowest {slowest:.1} Mbit/s, total {total:.1} \
                 Mbit/s, AI {ai:.1} Mbit/s{reroute}",
                side.name(),
                set + 1
            );
        }
        runs.push(serde_json::json!({
            "port_set": set + 1,
            "client_port_start": client_base,
            "flows": measured.iter().map(|m| serde_json::json!({
                "from": m.from, "to": m.to, "port": m.port, "client_port": m.client_port,
                "protocol": m.protocol, "mbps": m.mbps, "ai": m.ai,
            })).collect::<Vec<_>>(),
            "links": links,
            "slowest_mbps": slowest,
            "total_mbps": total,
            "ai_mbps": ai,
            "reroute_ms": reroute_ms,
            "route_changes": route_changes,
        }));
    }
    let replans = count_replans(controller).await?;
    let telemetry = telemetry_figures(&controller.running);
    let mean = |key: &str| {
        runs.iter().filter_map(|r| r[key].as_f64()).sum::<f64>() / runs.len().max(1) as f64
    };
    // The reroute time over the runs that rerouted (null when none did).
    let reroutes: Vec<f64> = runs
        .iter()
        .filter_map(|r| r["reroute_ms"].as_f64())
        .collect();
    let reroute_ms =
        (!reroutes.is_empty()).then(|| reroutes.iter().sum::<f64>() / reroutes.len() as f64);
    Ok(serde_json::json!({
        "plan": plan.version,
        "replans": replans,
        "collective_placement": placement,
        "slowest_mbps": mean("slowest_mbps"),
        "total_mbps": mean("total_mbps"),
        "ai_mbps": mean("ai_mbps"),
        "reroute_ms": reroute_ms,
        "telemetry": telemetry,
        "runs": runs,
    }))
}

/// How often the watched route is read while traffic runs.
const ROUTE_SAMPLE_INTERVAL: Duration = Duration::from_millis(50);

/// The IPv4 prefixes a reroute is watched on: those of every node of the
/// `towards` node's site (its own when it has no site), so that a re-plan
/// moving any of the site's traffic counts.
fn watched_prefixes(topology: &Topology, towards: &str) -> std::collections::BTreeSet<String> {
    let site = topology
        .nodes
        .iter()
        .find(|n| n.id == towards)
        .and_then(|n| n.site.clone());
    topology
        .nodes
        .iter()
        .filter(|n| match &site {
            Some(site) => n.site.as_ref() == Some(site),
            None => n.id == towards,
        })
        .flat_map(|n| n.prefixes.iter())
        .filter(|p| matches!(p, ipnet::IpNet::V4(_)))
        .map(|p| p.to_string())
        .collect()
}

/// A node's aiwan routes (protocol 170) to `watched` prefixes as text:
/// each prefix with its next hops and weights, in prefix order.
async fn route_state(
    lab: &str,
    node: &str,
    watched: &std::collections::BTreeSet<String>,
) -> anyhow::Result<String> {
    let output = tokio::process::Command::new("ip")
        .args([
            "-n",
            &format!("{lab}-{node}"),
            "-j",
            "route",
            "show",
            "proto",
        ])
        .arg(crate::agent::ROUTE_PROTOCOL.to_string())
        .output()
        .await
        .context("ip route show")?;
    let routes: serde_json::Value = serde_json::from_slice(&output.stdout)
        .with_context(|| format!("ip -j route show in {node}"))?;
    let mut states: Vec<String> = routes
        .as_array()
        .into_iter()
        .flatten()
        .filter(|route| {
            route["dst"]
                .as_str()
                .is_some_and(|dst| watched.contains(dst))
        })
        .map(|route| {
            let hops: Vec<String> = match route["nexthops"].as_array() {
                Some(hops) => hops
                    .iter()
                    .map(|h| format!("{}/{}/{}", h["gateway"], h["dev"], h["weight"]))
                    .collect(),
                None => vec![format!("{}/{}/1", route["gateway"], route["dev"])],
            };
            format!("{} {}", route["dst"], hops.join(" "))
        })
        .collect();
    states.sort();
    Ok(states.join("; "))
}

/// From route samples (time, state): how long after `onset` the route
/// first differs from what it was at the onset, ms; `None` when it never
/// does.
fn reroute_time(samples: &[(Instant, String)], onset: Instant) -> Option<f64> {
    let at_onset = samples.iter().rev().find(|(t, _)| *t <= onset)?;
    samples
        .iter()
        .find(|(t, state)| *t > onset && *state != at_onset.1)
        .map(|(t, _)| t.duration_since(onset).as_secs_f64() * 1e3)
}

/// What the side's collectors received and its closed loop measured: how
/// to tell a loop that saw nothing from one that saw and chose not to act.
fn telemetry_figures(running: &crate::server::RunningController) -> serde_json::Value {
    let Some(pipeline) = &running.telemetry else {
        return serde_json::Value::Null;
    };
    let mut totals = aiwan_collectors::stats::ExporterCounters::default();
    let exporters = pipeline.collector.board().exporters();
    for exporter in &exporters {
        totals.add(&exporter.counters);
    }
    let view = running
        .closed_loop
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let sum = |f: fn(&crate::closed_loop::demand::MeasuredInterval) -> u64| {
        view.intervals.iter().map(f).sum::<u64>()
    };
    serde_json::json!({
        "exporters": exporters.len(),
        "packets_received": totals.datagrams,
        "flow_records": totals.records,
        "decode_errors": totals.decode_errors,
        "intervals": view.intervals.len(),
        "bytes_in_matrix": sum(|i| i.bytes),
        "unknown_exporter_bytes": sum(|i| i.unknown_exporter_bytes),
        "unknown_destination_bytes": sum(|i| i.unknown_destination_bytes),
        "transit_bytes": sum(|i| i.transit_bytes),
        "local_bytes": sum(|i| i.local_bytes),
        "unknown_exporters": view.intervals.back().map(|i| i.unknown_exporters.clone()),
        "last_decision": view.last_decision,
        "measured_mlu": view.measured_mlu,
        "predicted_mlu": view.predicted_mlu,
        "idle_reason": view.idle_reason,
        "loop_latency_ms": view.last_latency_ms,
    })
}

/// Plans the closed loop made (congestion or improvement), applied or not.
async fn count_replans(controller: &mut SideController) -> anyhow::Result<usize> {
    let plans = controller
        .plans
        .list_plans(pb::ListPlansRequest {
            page_size: 1000,
            page_token: String::new(),
        })
        .await
        .context("ListPlans")?
        .into_inner()
        .plans;
    Ok(plans
        .iter()
        .filter(|p| {
            p.trigger == pb::PlanTrigger::Congestion as i32
                || p.trigger == pb::PlanTrigger::Improvement as i32
        })
        .count())
}

/// One flow's result.
#[derive(Debug, Clone)]
struct Measured {
    from: String,
    to: String,
    port: u16,
    client_port: u32,
    protocol: &'static str,
    mbps: f64,
    ai: bool,
}

/// `ip netns exec {lab}-{node} ARGS...`, killed when dropped.
fn in_node(lab: &str, node: &str, args: &[String]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new("ip");
    command
        .args(["netns", "exec", &format!("{lab}-{node}")])
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    command
}

/// Runs every flow once: servers first (one client each), then the
/// clients at their start times; the receiver's rate of each.
async fn run_traffic(
    lab: &str,
    flows: &[RunFlow],
    client_ports: &[u32],
) -> anyhow::Result<(Vec<Measured>, Instant)> {
    let mut servers = Vec::new();
    for flow in flows {
        let child = in_node(
            lab,
            &flow.to,
            &[
                "iperf3".into(),
                "--server".into(),
                "--one-off".into(),
                "--bind".into(),
                flow.destination.to_string(),
                "--port".into(),
                flow.port.to_string(),
            ],
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start iperf3 on {}", flow.to))?;
        servers.push(child);
    }
    wait_listening(lab, flows).await?;
    let clients_started = Instant::now();
    let mut clients = Vec::new();
    for (i, flow) in flows.iter().enumerate() {
        let client_port = client_ports[i];
        let mut args: Vec<String> = vec![
            "iperf3".into(),
            "--client".into(),
            flow.destination.to_string(),
            "--port".into(),
            flow.port.to_string(),
            "--bind".into(),
            flow.source.to_string(),
            "--cport".into(),
            client_port.to_string(),
            "--time".into(),
            flow.seconds.to_string(),
            "--json".into(),
        ];
        if flow.protocol == Protocol::Udp {
            args.push("--udp".into());
        }
        // UDP's sending rate; TCP's ceiling (iperf3's default for TCP is
        // no limit).
        if let Some(rate) = &flow.rate {
            args.push("--bitrate".into());
            args.push(rate.clone());
        }
        if let Some(dscp) = flow.dscp {
            args.push("--dscp".into());
            args.push(dscp.to_string());
        }
        let command = in_node(lab, &flow.from, &args);
        let start = Duration::from_secs(u64::from(flow.start));
        let limit = Duration::from_secs(u64::from(flow.seconds)) + CLIENT_GRACE;
        let label = format!("{} -> {}:{}", flow.from, flow.to, flow.port);
        clients.push(async move {
            let mut command = command;
            tokio::time::sleep(start).await;
            let output = tokio::time::timeout(limit, command.output())
                .await
                .map_err(|_| anyhow::anyhow!("iperf3 {label} did not finish in {limit:?}"))?
                .with_context(|| format!("iperf3 {label}"))?;
            anyhow::Ok((label, client_port, output))
        });
    }
    let outputs = futures::future::join_all(clients).await;
    drop(servers); // killed if still there
    let mut measured = Vec::new();
    for (flow, output) in flows.iter().zip(outputs) {
        let (label, client_port, output) = output?;
        let report: serde_json::Value = serde_json::from_slice(&output.stdout)
            .with_context(|| format!("iperf3 {label} printed no JSON report"))?;
        if let Some(error) = report["error"].as_str() {
            bail!("iperf3 {label}: {error}");
        }
        let end = &report["end"];
        // The receiver's figure: TCP's sum_received; UDP's sum (with its
        // losses) where sum_received is absent (older iperf3).
        let bps = end["sum_received"]["bits_per_second"]
            .as_f64()
            .or_else(|| end["sum"]["bits_per_second"].as_f64())
            .with_context(|| format!("iperf3 {label}: no throughput in its report"))?;
        measured.push(Measured {
            from: flow.from.clone(),
            to: flow.to.clone(),
            port: flow.port,
            client_port,
            protocol: match flow.protocol {
                Protocol::Tcp => "tcp",
                Protocol::Udp => "udp",
            },
            mbps: bps / 1e6,
            ai: flow.ai,
        });
    }
    Ok((measured, clients_started))
}

/// Waits until every flow's server listens (TCP: iperf3's control
/// connection is TCP for UDP tests too).
async fn wait_listening(lab: &str, flows: &[RunFlow]) -> anyhow::Result<()> {
    let deadline = Instant::now() + LISTEN_TIMEOUT;
    let mut by_node: BTreeMap<&str, Vec<u16>> = BTreeMap::new();
    for flow in flows {
        by_node.entry(&flow.to).or_default().push(flow.port);
    }
    for (node, ports) in by_node {
        loop {
            let output = in_node(lab, node, &["ss".into(), "-Hltn".into()])
                .output()
                .await
                .context("ss")?;
            let text = String::from_utf8_lossy(&output.stdout);
            let listening = ports.iter().all(|port| {
                text.split_whitespace()
                    .any(|w| w.ends_with(&format!(":{port}")))
            });
            if listening {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "iperf3 servers on {node} did not listen on {ports:?} within {LISTEN_TIMEOUT:?}"
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}

/// Bytes sent by every interface of every router (by `node:interface`).
async fn link_bytes(lab: &str, deployment: &Deployment) -> anyhow::Result<BTreeMap<String, u64>> {
    let mut bytes = BTreeMap::new();
    for node in deployment.nodes.iter().filter(|n| n.role != "host") {
        let output = in_node(
            lab,
            &node.node,
            &["ip".into(), "-s".into(), "-j".into(), "link".into()],
        )
        .output()
        .await
        .context("ip -s link")?;
        let links: serde_json::Value = serde_json::from_slice(&output.stdout)
            .with_context(|| format!("ip -s -j link in {}", node.node))?;
        for link in links.as_array().into_iter().flatten() {
            let (Some(name), Some(tx)) = (
                link["ifname"].as_str(),
                link["stats64"]["tx"]["bytes"].as_u64(),
            ) else {
                continue;
            };
            if name != "lo" {
                bytes.insert(format!("{}:{name}", node.node), tx);
            }
        }
    }
    Ok(bytes)
}

/// Per router interface that carried traffic: its mean rate over the run
/// and its utilisation of the (shaped) capacity.
fn link_utilisation(
    topology: &Topology,
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
    seconds: f64,
    shape_scale: Option<f64>,
) -> Vec<serde_json::Value> {
    let mut links = Vec::new();
    for link in &topology.links {
        let key = format!("{}:{}", link.src, link.src_interface);
        let (Some(b), Some(a)) = (before.get(&key), after.get(&key)) else {
            continue;
        };
        let mbps = a.saturating_sub(*b) as f64 * 8.0 / seconds / 1e6;
        // Below 1 Mbit/s is ACKs and control traffic.
        if mbps < 1.0 {
            continue;
        }
        let capacity = match shape_scale {
            Some(scale) => deploy::shape_rate(link.capacity_bps, scale, DEFAULT_SHAPE_CAP_BPS),
            None => link.capacity_bps,
        } as f64
            / 1e6;
        links.push(serde_json::json!({
            "link": format!("{} -> {}", key, link.dst),
            "mbps": mbps,
            "utilization": if capacity > 0.0 { mbps / capacity } else { 0.0 },
        }));
    }
    links
}

/// The scenario's targets against the figures.
fn targets(scenario: &Scenario, report: &serde_json::Value) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    let ratio = |key: &str| {
        let baseline = report["baseline"][key].as_f64().unwrap_or(0.0);
        let aiwan = report["aiwan"][key].as_f64().unwrap_or(0.0);
        if baseline > 0.0 {
            aiwan / baseline
        } else {
            0.0
        }
    };
    for (name, key, target) in [
        (
            "slowest_ratio",
            "slowest_mbps",
            scenario.targets.slowest_ratio,
        ),
        ("total_ratio", "total_mbps", scenario.targets.total_ratio),
        ("ai_ratio", "ai_mbps", scenario.targets.ai_ratio),
    ] {
        if let Some(target) = target {
            let measured = ratio(key);
            out.insert(
                name.into(),
                serde_json::json!({ "target": target, "measured": measured, "met": measured >= target }),
            );
        }
    }
    if let Some(target) = scenario.targets.reroute_ms {
        // aiwan's side must reroute, in time; never rerouting misses it.
        let measured = report["aiwan"]["reroute_ms"].as_f64();
        out.insert(
            "reroute_ms".into(),
            serde_json::json!({
                "target": target,
                "measured": measured,
                "met": measured.is_some_and(|ms| ms <= target),
                "at_most": true,
            }),
        );
    }
    serde_json::Value::Object(out)
}

/// The report as text.
fn describe(report: &serde_json::Value) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "scenario {} on lab {} ({} port sets per side, {})",
        report["scenario"].as_str().unwrap_or("?"),
        report["lab"].as_str().unwrap_or("?"),
        report["port_sets"],
        if report["shaped"] == true {
            "shaped"
        } else {
            "unshaped"
        }
    );
    for side in ["baseline", "aiwan"] {
        let figures = &report[side];
        let _ = writeln!(
            out,
            "\n{side}: slowest flow {:.1} Mbit/s, total {:.1} Mbit/s, AI flows {:.1} Mbit/s \
             (means over the port sets); {} re-plans by the closed loop{}",
            figures["slowest_mbps"].as_f64().unwrap_or(0.0),
            figures["total_mbps"].as_f64().unwrap_or(0.0),
            figures["ai_mbps"].as_f64().unwrap_or(0.0),
            figures["replans"].as_u64().unwrap_or(0),
            figures["reroute_ms"]
                .as_f64()
                .map(|ms| format!(", rerouted {ms:.0} ms after the congestion began"))
                .unwrap_or_default()
        );
        if let Some(placement) = figures["collective_placement"].as_object() {
            let share = |key: &str| placement.get(key).and_then(|v| v.as_f64()).unwrap_or(0.0);
            let _ = writeln!(
                out,
                "  placement: {} flows on spines; most loaded leaf-spine link {:.2} of capacity \
                 at the declared rates (no placement does better than {:.2})",
                placement.get("flows").unwrap_or(&serde_json::Value::Null),
                share("max_utilization"),
                share("lower_bound"),
            );
        }
        for run in figures["runs"].as_array().into_iter().flatten() {
            let flows: Vec<String> = run["flows"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|f| {
                    format!(
                        "{}>{} {:.0}",
                        f["from"].as_str().unwrap_or("?"),
                        f["to"].as_str().unwrap_or("?"),
                        f["mbps"].as_f64().unwrap_or(0.0)
                    )
                })
                .collect();
            let _ = writeln!(
                out,
                "  set {}: slowest {:.1}, total {:.1}; flows (Mbit/s): {}",
                run["port_set"],
                run["slowest_mbps"].as_f64().unwrap_or(0.0),
                run["total_mbps"].as_f64().unwrap_or(0.0),
                flows.join(", ")
            );
            let mut hot: Vec<(&str, f64)> = run["links"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|l| Some((l["link"].as_str()?, l["utilization"].as_f64()?)))
                .collect();
            hot.sort_by(|a, b| b.1.total_cmp(&a.1));
            let hot: Vec<String> = hot
                .iter()
                .take(4)
                .map(|(link, u)| format!("{link} {:.0}%", u * 100.0))
                .collect();
            let _ = writeln!(out, "    busiest links: {}", hot.join(", "));
        }
    }
    if let Some(targets) = report["targets"].as_object() {
        let _ = writeln!(out);
        for (name, target) in targets {
            let measured = target["measured"]
                .as_f64()
                .map_or_else(|| "none".to_string(), |m| format!("{m:.2}"));
            let _ = writeln!(
                out,
                "{name}: {measured} (target {} {:.2}) {}",
                if target["at_most"] == true {
                    "at most"
                } else {
                    "at least"
                },
                target["target"].as_f64().unwrap_or(0.0),
                if target["met"] == true {
                    "met"
                } else {
                    "MISSED"
                }
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ports_are_unique_across_runs_and_below_the_ephemeral_range() {
        let mut used = BTreeSet::new();
        let mut all = Vec::new();
        for side in 0..2 {
            for set in 0..aiwan_lab::scenario::MAX_PORT_SETS {
                let start = client_port_start(side, set);
                let ports = client_ports(start, 40, &mut used).unwrap();
                assert_eq!(ports.len(), 40);
                all.extend(ports);
            }
        }
        let distinct: BTreeSet<u32> = all.iter().copied().collect();
        assert_eq!(distinct.len(), all.len(), "a client port was used twice");
        assert!(
            all.iter().all(|&p| (10_000..32_768).contains(&p)),
            "{all:?}"
        );
    }

    #[test]
    fn a_port_an_earlier_run_used_is_skipped_and_the_span_is_bounded() {
        let start = client_port_start(0, 0);
        let mut used = BTreeSet::from([client_port(start, 0)]);
        let ports = client_ports(start, 2, &mut used).unwrap();
        assert_eq!(ports, vec![client_port(start, 1), client_port(start, 2)]);
        let mut full: BTreeSet<u32> = (0..u64::from(CLIENT_PORT_SPAN))
            .map(|k| client_port(start, k))
            .collect();
        assert_eq!(
            full.len(),
            CLIENT_PORT_SPAN as usize,
            "STEP must be prime to SPAN"
        );
        let error = client_ports(start, 1, &mut full).unwrap_err().to_string();
        assert!(error.contains("client ports"), "{error}");
    }
}
