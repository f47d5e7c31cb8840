//! `aiwan demo --lab`: the same demo on the namespace lab, with the
//! kernel forwarding instead of the simulated dataplane.
//!
//! The built-in topology is deployed as lab `aiwan-demo` with every link
//! shaped at [`LAB_SCALE`] of its capacity (a tbf on each end), a router
//! agent per router, and softflowd exporting IPFIX every second from the
//! WAN routers' edge interfaces into the collectors, which listen in the
//! lab's management namespace. The controller plans on the shaped
//! capacities, with the demo's jobs declared at the same scale, and
//! programs the routers through the agents.
//!
//! The traffic is the demo's ([`super::traffic`]), scaled alike, sent as
//! real UDP packets: each site pair's class from a host of the source site
//! (the PoPs, which have no hosts, from their router, with an address of
//! their prefix) to one of the destination site, marked with the class's
//! DSCP, in [`LAB_FLOWS_PER_DEMAND`] flows (source ports) so that a
//! weighted split has flows to hash. What arrives is counted at the
//! destination, class by class, and reported beside what was sent.
//!
//! Everything the demo deployed (namespaces, agents, exporters) is taken
//! down at the end, on Ctrl-C, and on an error; the data directory stays,
//! so that a second run continues from it.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aiwan_api::v1 as pb;
use aiwan_lab::deploy::{self, DEFAULT_SHAPE_CAP_BPS, DeployOptions, Deployment};
use aiwan_planner::{NodeRole, Topology};
use anyhow::{Context, bail};

use super::traffic::{self, Background, Marking};
use super::{DemoArgs, RunFigures, TOPOLOGY};
use crate::client::BearerToken;
use crate::lab_run::Teardown;
use crate::server::RunningController;

/// Capacities and traffic are scaled by this: the WAN's 100G, 40G and 10G
/// paths become 200, 80 and 20 Mbit/s, which two cores forward with the
/// fabric's hops, tbf on every link and the exporters beside them.
pub const LAB_SCALE: f64 = 0.002;
/// The lab's name (and its namespaces' prefix).
pub const LAB_NAME: &str = "aiwan-demo";
/// Flows (source ports) each site pair's class is sent as.
pub const LAB_FLOWS_PER_DEMAND: usize = 4;
/// UDP payload of every packet: a full frame on the hosts' 1500-byte MTU.
const PAYLOAD_BYTES: usize = 1400;
/// How often the senders send what their rates allow.
const TICK: Duration = Duration::from_millis(5);
/// At most this much sending time is caught up after a stall.
const MAX_CATCH_UP: Duration = Duration::from_millis(20);

/// `aiwan demo --lab`.
pub(super) async fn demo_lab(args: &DemoArgs, data_dir: &Path) -> anyhow::Result<ExitCode> {
    if let Some(missing) = missing_prerequisite() {
        bail!("demo --lab: {missing}");
    }
    let topology =
        aiwan_planner::formats::clab::parse_clab(TOPOLOGY).context("the built-in topology")?;
    if deploy::status(LAB_NAME).is_ok_and(|report| !report.namespaces_present.is_empty()) {
        bail!("lab {LAB_NAME} is up: take it down first (aiwan lab down --name {LAB_NAME})");
    }
    let (token, listen) = super::state_and_address(args, data_dir)?;
    // From here on, whatever happens, the lab comes down.
    let mut teardown = Teardown::new(LAB_NAME, None);
    let set_up = tokio::select! {
        set_up = set_up(args, data_dir, listen, &token, &topology) => set_up,
        () = crate::server::shutdown_signal() => Err(anyhow::anyhow!("interrupted")),
    };
    let (running, mut network) = match set_up {
        Ok(set_up) => set_up,
        Err(error) => {
            if let Err(cleanup) = teardown.run() {
                eprintln!("aiwan demo: cleaning up lab {LAB_NAME}: {cleanup:#}");
            }
            return Err(error);
        }
    };
    let endpoint = super::announce(&running, &token);
    eprintln!(
        "aiwan demo: lab {LAB_NAME} up ({} namespaces; enter a node with `ip netns exec \
         {LAB_NAME}-NODE ...`)",
        network.namespaces
    );
    let (_, mut events) = running.events.subscribe();
    let mut figures = RunFigures::default();
    let dashboard = super::wants_dashboard(args);
    let run = run(
        args,
        &running,
        &mut network,
        &mut events,
        &mut figures,
        !dashboard && !args.headless && !args.json,
    );
    let result = super::present(dashboard, &endpoint, &token, run).await;
    figures.lab = Some(network.figures(figures.seconds));
    drop(network);
    let jobs = scaled_jobs();
    let finished = super::finish(args, running, figures, &jobs, result).await;
    let cleaned = teardown.run();
    let code = finished?;
    cleaned?;
    Ok(code)
}

/// Root, iproute2 (ip, tc) and softflowd.
fn missing_prerequisite() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root (network namespaces)".into());
    }
    let missing: Vec<&str> = [("ip", "-V"), ("tc", "-V"), ("softflowd", "-h")]
        .into_iter()
        .filter(|(tool, flag)| {
            std::process::Command::new(tool)
                .arg(flag)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .is_err()
        })
        .map(|(tool, _)| tool)
        .collect();
    (!missing.is_empty()).then(|| {
        format!(
            "missing {} (Debian: apt-get install iproute2 softflowd)",
            missing.join(", ")
        )
    })
}

/// The demo's jobs at the lab's scale.
fn scaled_jobs() -> Vec<(&'static str, pb::Job)> {
    super::demo_jobs()
        .into_iter()
        .map(|(id, mut job)| {
            job.rate_bps = (job.rate_bps as f64 * LAB_SCALE).round() as i64;
            (id, job)
        })
        .collect()
}

/// Deploys the lab, starts the agents, the controller and the exporters,
/// imports the shaped topology and the scaled jobs, and opens the traffic.
async fn set_up(
    args: &DemoArgs,
    data_dir: &Path,
    listen: SocketAddr,
    token: &str,
    topology: &Topology,
) -> anyhow::Result<(RunningController, LabTraffic)> {
    let options = DeployOptions {
        shape: true,
        shape_scale: LAB_SCALE,
        shape_cap_bps: DEFAULT_SHAPE_CAP_BPS,
        force: false,
        management: true,
        // The exporters should see packets as a router on real links does.
        wire_sized_packets: true,
    };
    let deployment = {
        let topology = topology.clone();
        tokio::task::spawn_blocking(move || -> anyhow::Result<Deployment> {
            let deployment = deploy::deploy(&topology, LAB_NAME, &options)
                .with_context(|| format!("lab up {LAB_NAME}"))?;
            crate::lab_cli::start_agents(LAB_NAME, &deployment).context("starting the agents")?;
            Ok(deployment)
        })
        .await
        .context("the deployment's task")??
    };
    let mut config = super::config(args, data_dir, listen, token);
    crate::lab_run::configure_for_lab(&mut config, LAB_NAME, &deployment, true)?;
    config.closed_loop.mode = args.mode;
    let running = crate::server::start(&config)
        .await
        .context("the demo's controller did not start")?;
    let sampling = aiwan_planner::formats::clab::parse_sampling(TOPOLOGY)?;
    {
        let deployment = deployment.clone();
        tokio::task::spawn_blocking(move || {
            crate::lab_cli::start_exporters(
                LAB_NAME,
                &deployment,
                &sampling,
                crate::lab_run::EXPORTER_SETTINGS,
            )
        })
        .await
        .context("the exporters' task")?
        .context("starting the exporters")?;
    }
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", running.grpc_addr))
        .context("endpoint")?
        .connect()
        .await
        .context("cannot reach the demo's controller")?;
    let bearer = BearerToken::new(Some(token))?;
    let planned = crate::lab_run::shaped_topology(topology, Some(LAB_SCALE));
    super::prepare(channel, &bearer, &planned, &scaled_jobs()).await?;
    let traffic = LabTraffic::open(topology, &deployment)?;
    Ok((running, traffic))
}

/// Sends the demo's traffic until the duration ends or Ctrl-C, then until
/// the last re-plan's effect is measured (at most [`super::SETTLE`]).
async fn run(
    args: &DemoArgs,
    running: &RunningController,
    network: &mut LabTraffic,
    events: &mut tokio::sync::broadcast::Receiver<crate::events::Event>,
    figures: &mut RunFigures,
    interactive: bool,
) -> anyhow::Result<()> {
    let background = Background::embedded().context("the embedded background traffic")?;
    let started = tokio::time::Instant::now();
    let deadline = args
        .duration
        .map(|secs| started + Duration::from_secs(secs));
    let stop = crate::server::shutdown_signal();
    tokio::pin!(stop);
    let mut ticks = tokio::time::interval(TICK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = started;
    let mut second = u64::MAX;
    let mut settle_until: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = &mut stop, if settle_until.is_none() => break,
        }
        let now = tokio::time::Instant::now();
        if settle_until.is_none() && deadline.is_some_and(|d| now >= d) {
            settle_until = Some(now + super::SETTLE);
        }
        if let Some(until) = settle_until
            && (now >= until || !super::replan_unmeasured(running))
        {
            break;
        }
        let t = now.duration_since(started).as_secs_f64();
        if t as u64 != second {
            second = t as u64;
            network.set_rates(&traffic::offered_at(&background, t));
            if settle_until.is_none() {
                figures.seconds = second;
            }
            if interactive {
                super::report_events(events, running, None);
            }
        }
        network.send(now.duration_since(last).min(MAX_CATCH_UP));
        last = now;
    }
    Ok(())
}

/// One flow of the lab's traffic: a socket in the source's namespace.
struct LabFlow {
    socket: std::net::UdpSocket,
    to: SocketAddr,
    /// Index into [`LabTraffic::classes`] of its demand.
    demand: usize,
    /// bit/s.
    rate: f64,
    /// Bytes it may send now.
    credit: f64,
}

/// What arrives for one class at one destination.
struct Sink {
    marking: Marking,
    received: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

/// The demo's traffic on the lab: senders and sinks.
struct LabTraffic {
    /// (source site, destination site, marking) of each demand.
    demands: Vec<(&'static str, &'static str, Marking)>,
    flows: Vec<LabFlow>,
    sinks: Vec<Sink>,
    sent: BTreeMap<Marking, u64>,
    namespaces: usize,
}

impl Drop for LabTraffic {
    fn drop(&mut self) {
        for sink in &self.sinks {
            sink.task.abort();
        }
    }
}

impl LabTraffic {
    /// Opens a socket per flow of every site pair and class the traffic
    /// model has, and a sink per destination and class.
    fn open(topology: &Topology, deployment: &Deployment) -> anyhow::Result<LabTraffic> {
        let markings = [Marking::AiSync, Marking::AiBulk, Marking::BestEffort];
        let mut demands = Vec::new();
        for src in traffic::BACKGROUND_SITES {
            for dst in traffic::BACKGROUND_SITES {
                if src != dst {
                    demands.extend(markings.iter().map(|&m| (src, dst, m)));
                }
            }
        }
        let mut flows = Vec::new();
        let mut sinks: BTreeMap<(String, u16), Sink> = BTreeMap::new();
        for (index, &(src, dst, marking)) in demands.iter().enumerate() {
            let (protocol_port, tos) = (marking.shape().1, marking.dscp() << 2);
            let from = sender(topology, src, marking)?;
            let to = sender(topology, dst, marking)?;
            let source = crate::lab_run::traffic_address(deployment, &from)?;
            let destination = crate::lab_run::traffic_address(deployment, &to)?;
            let namespace = namespace_of(deployment, &from)?;
            for _ in 0..LAB_FLOWS_PER_DEMAND {
                let socket = udp_socket_in(
                    &namespace,
                    SocketAddr::from((source, 0)),
                    Some(u32::from(tos)),
                )?;
                flows.push(LabFlow {
                    socket,
                    to: SocketAddr::from((destination, protocol_port)),
                    demand: index,
                    rate: 0.0,
                    credit: 0.0,
                });
            }
            if !sinks.contains_key(&(to.clone(), protocol_port)) {
                let namespace = namespace_of(deployment, &to)?;
                let socket = udp_socket_in(
                    &namespace,
                    SocketAddr::from((Ipv4Addr::UNSPECIFIED, protocol_port)),
                    None,
                )?;
                sinks.insert((to, protocol_port), Sink::start(socket, marking)?);
            }
        }
        Ok(LabTraffic {
            demands,
            flows,
            sinks: sinks.into_values().collect(),
            sent: BTreeMap::new(),
            namespaces: deployment.namespaces().len(),
        })
    }

    /// Each flow's rate for the model's demands (scaled to the lab).
    fn set_rates(&mut self, offered: &[traffic::SiteDemand]) {
        let mut rates = vec![0.0; self.demands.len()];
        for demand in offered {
            if let Some(index) = self
                .demands
                .iter()
                .position(|d| (d.0, d.1, d.2) == (demand.src, demand.dst, demand.marking))
            {
                rates[index] += demand.rate_bps * LAB_SCALE;
            }
        }
        for flow in &mut self.flows {
            flow.rate = rates[flow.demand] / LAB_FLOWS_PER_DEMAND as f64;
        }
    }

    /// Sends what `elapsed` at each flow's rate allows, in full packets;
    /// a flow whose socket is full waits for the next tick.
    fn send(&mut self, elapsed: Duration) {
        let payload = [0u8; PAYLOAD_BYTES];
        for flow in &mut self.flows {
            flow.credit += flow.rate * elapsed.as_secs_f64() / 8.0;
            while flow.credit >= PAYLOAD_BYTES as f64 {
                match flow.socket.send_to(&payload, flow.to) {
                    Ok(sent) => {
                        flow.credit -= sent as f64;
                        *self.sent.entry(self.demands[flow.demand].2).or_default() += sent as u64;
                    }
                    Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => break,
                    // A route missing for a moment (a push in progress)
                    // drops the packet, as a router would.
                    Err(_) => flow.credit -= PAYLOAD_BYTES as f64,
                }
            }
        }
    }

    /// Mbit/s sent and received per class over `seconds`.
    fn figures(&self, seconds: u64) -> serde_json::Value {
        let seconds = seconds.max(1) as f64;
        let mut received: BTreeMap<Marking, u64> = BTreeMap::new();
        for sink in &self.sinks {
            *received.entry(sink.marking).or_default() += sink.received.load(Ordering::Relaxed);
        }
        let mbps = |bytes: u64| (bytes as f64 * 8.0 / seconds / 1e4).round() / 100.0;
        let classes: serde_json::Map<String, serde_json::Value> =
            [Marking::AiSync, Marking::AiBulk, Marking::BestEffort]
                .into_iter()
                .map(|marking| {
                    let sent = self.sent.get(&marking).copied().unwrap_or(0);
                    let got = received.get(&marking).copied().unwrap_or(0);
                    (
                        marking_name(marking).to_string(),
                        serde_json::json!({
                            "sent_mbps": mbps(sent),
                            "received_mbps": mbps(got),
                            "delivered": if sent > 0 { (got as f64 / sent as f64 * 1000.0).round() / 1000.0 } else { 1.0 },
                        }),
                    )
                })
                .collect();
        serde_json::json!({
            "lab": LAB_NAME,
            "scale": LAB_SCALE,
            "flows": self.flows.len(),
            "classes": classes,
        })
    }
}

impl Sink {
    fn start(socket: std::net::UdpSocket, marking: Marking) -> anyhow::Result<Sink> {
        let socket = tokio::net::UdpSocket::from_std(socket).context("a sink's socket")?;
        let received = Arc::new(AtomicU64::new(0));
        let counter = received.clone();
        let task = tokio::spawn(async move {
            let mut buffer = vec![0u8; 65_536];
            while let Ok(bytes) = socket.recv(&mut buffer).await {
                counter.fetch_add(bytes as u64, Ordering::Relaxed);
            }
        });
        Ok(Sink {
            marking,
            received,
            task,
        })
    }
}

fn marking_name(marking: Marking) -> &'static str {
    match marking {
        Marking::AiSync => "ai-sync",
        Marking::AiBulk => "ai-bulk",
        Marking::BestEffort => "best-effort",
    }
}

/// The node that sends (and receives) a site's traffic of one class: a
/// host of the site, a different one per class where there are enough;
/// a site without hosts (a PoP) uses its WAN router.
fn sender(topology: &Topology, site: &str, marking: Marking) -> anyhow::Result<String> {
    let of_site = |role: NodeRole| -> Vec<&str> {
        let mut nodes: Vec<&str> = topology
            .nodes
            .iter()
            .filter(|n| n.site.as_deref() == Some(site) && n.role == role)
            .map(|n| n.id.as_str())
            .collect();
        nodes.sort_unstable();
        nodes
    };
    let hosts = of_site(NodeRole::Host);
    let slot = match marking {
        Marking::AiSync => 0,
        Marking::AiBulk => 1,
        Marking::BestEffort => 2,
    };
    if !hosts.is_empty() {
        return Ok(hosts[slot % hosts.len()].to_string());
    }
    of_site(NodeRole::WanRouter)
        .first()
        .map(|node| (*node).to_string())
        .with_context(|| format!("site {site} has neither a host nor a WAN router"))
}

fn namespace_of(deployment: &Deployment, node: &str) -> anyhow::Result<String> {
    deployment
        .nodes
        .iter()
        .find(|n| n.node == node)
        .map(|n| n.namespace.clone())
        .with_context(|| format!("node {node} was not deployed"))
}

/// A non-blocking UDP socket bound to `bind` inside network namespace
/// `namespace` (a socket stays in the namespace it was made in), with IP
/// TOS `tos`.
fn udp_socket_in(
    namespace: &str,
    bind: SocketAddr,
    tos: Option<u32>,
) -> anyhow::Result<std::net::UdpSocket> {
    let path = PathBuf::from("/run/netns").join(namespace);
    let file = std::fs::File::open(&path)
        .with_context(|| format!("network namespace {}", path.display()))?;
    std::thread::scope(|scope| {
        scope
            .spawn(|| -> anyhow::Result<std::net::UdpSocket> {
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                    .with_context(|| format!("cannot enter {}", path.display()))?;
                let domain = match bind.ip() {
                    IpAddr::V4(_) => socket2::Domain::IPV4,
                    IpAddr::V6(_) => socket2::Domain::IPV6,
                };
                let socket = socket2::Socket::new(
                    domain,
                    socket2::Type::DGRAM,
                    Some(socket2::Protocol::UDP),
                )?;
                if let Some(tos) = tos {
                    socket.set_tos_v4(tos)?;
                }
                socket
                    .bind(&bind.into())
                    .with_context(|| format!("cannot bind {bind} in {namespace}"))?;
                socket.set_nonblocking(true)?;
                Ok(socket.into())
            })
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the socket thread panicked")))
    })
}
