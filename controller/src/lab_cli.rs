//! `aiwan lab up|down|status`: the lab deployer of `aiwan-lab` from the
//! command line, and with `up --agents` one `aiwan agent` per router
//! namespace.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use aiwan_lab::deploy::{self, DEFAULT_SHAPE_CAP_BPS, DeployOptions, DeployedNode, Deployment};
use aiwan_planner::formats::clab::{load_clab, parse_rate};
use anyhow::Context;

/// The `aiwan lab` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum LabCommand {
    /// Deploy a *.clab.yml file into network namespaces, one per node
    /// (`{lab}-{node}`), with veths, addresses, forwarding and SRv6 on
    /// (needs root and iproute2).
    Up(UpArgs),
    /// Remove a lab's namespaces and state file (safe when it is down).
    Down(DownArgs),
    /// Show a deployed lab and whatever differs from its deployment; exits
    /// 0 when the lab is up and healthy, 1 otherwise.
    Status(StatusArgs),
    /// Run a traffic scenario (lab/scenarios/*.toml): deploy its topology
    /// with agents, run its iperf3 flows with a controller that only routes
    /// (baseline) and with aiwan in charge, print both sides' figures, and
    /// tear everything down; exits 1 when a target of the scenario is
    /// missed (needs root, iproute2 and iperf3).
    Run(crate::lab_run::RunArgs),
}

/// Arguments of `aiwan lab up`.
#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// A containerlab *.clab.yml file (labels described in lab/README.md).
    pub file: PathBuf,
    /// Lab name, the prefix of its namespaces [default: the file's `name:`].
    #[arg(long)]
    pub name: Option<String>,
    /// Put a tbf on both ends of each link at the link's capacity.
    #[arg(long)]
    pub shape: bool,
    /// With --shape: multiply capacities by this first, keeping their
    /// ratios within what veths carry (0.01 makes 100G into 1G).
    #[arg(long, default_value_t = 1.0, requires = "shape")]
    pub shape_scale: f64,
    /// With --shape: the highest rate set, as in aiwan.capacity labels
    /// [default: 10G, about what one veth pair carries here].
    #[arg(long, requires = "shape", value_parser = rate_arg)]
    pub shape_cap: Option<u64>,
    /// Tear the lab down first if it is already up.
    #[arg(long)]
    pub force: bool,
    /// Start an `aiwan agent` for every node but hosts, programming its
    /// namespace and listening on /run/aiwan/lab/{lab}/{node}.sock (logs
    /// beside it); `lab down` stops them. The controller then takes
    /// `agent_endpoint_template = "unix:/run/aiwan/lab/{lab}/{node}.sock"`.
    #[arg(long)]
    pub agents: bool,
    /// Also deploy the management network (namespace {lab}--mgmt, a
    /// `mgmt0` link from every router) and start softflowd on every WAN
    /// router's edge interfaces, exporting what enters the WAN to
    /// udp/2055 in the management namespace (collector.netns), sampled
    /// as each node's aiwan.sampling label says.
    #[arg(long)]
    pub exporters: bool,
    /// With --exporters: 9 (NetFlow v9) or 10 (IPFIX).
    #[arg(long, default_value_t = 10, requires = "exporters", value_parser = clap::value_parser!(u8).range(9..=10))]
    pub flow_version: u8,
    /// With --exporters: a long flow is exported at least this often,
    /// seconds.
    #[arg(long, default_value_t = 1, requires = "exporters", value_parser = clap::value_parser!(u32).range(1..=3600))]
    pub active_timeout: u32,
    /// Print one JSON document.
    #[arg(long)]
    pub json: bool,
}

/// Which lab: from a clab file's `name:`, or by name.
#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
pub struct LabTarget {
    /// The lab's *.clab.yml file (its `name:` is the lab name).
    pub file: Option<PathBuf>,
    /// The lab name given to `aiwan lab up --name`.
    #[arg(long)]
    pub name: Option<String>,
}

/// Arguments of `aiwan lab down`.
#[derive(Debug, clap::Args)]
pub struct DownArgs {
    #[command(flatten)]
    pub target: LabTarget,
    /// Print one JSON document.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `aiwan lab status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub target: LabTarget,
    /// Print one JSON document.
    #[arg(long)]
    pub json: bool,
}

fn rate_arg(text: &str) -> Result<u64, String> {
    parse_rate(text).ok_or_else(|| format!("{text:?} is not a rate (examples: 10G, 400M)"))
}

/// Runs `aiwan lab up`, `down`, `status` or `run`.
pub async fn run(command: LabCommand) -> anyhow::Result<ExitCode> {
    match command {
        LabCommand::Up(args) => up(&args),
        LabCommand::Down(args) => down(&args),
        LabCommand::Status(args) => status(&args),
        LabCommand::Run(args) => crate::lab_run::run(&args).await,
    }
}

/// The lab a command is about, checked before anything touches the
/// filesystem: the name becomes part of paths under /run/aiwan/lab and of
/// namespace names, so `/etc` or `../x` must never get that far.
fn lab_name(target: &LabTarget) -> anyhow::Result<String> {
    let lab = match (&target.name, &target.file) {
        (Some(name), _) => name.clone(),
        (None, Some(file)) => load_topology(file)?.name,
        // clap's group makes one of them required.
        (None, None) => anyhow::bail!("name a lab: FILE or --name NAME"),
    };
    deploy::check_lab_name(&lab)?;
    Ok(lab)
}

fn load_topology(file: &Path) -> anyhow::Result<aiwan_planner::Topology> {
    Ok(load_clab(file)?)
}

fn up(args: &UpArgs) -> anyhow::Result<ExitCode> {
    let topology = load_topology(&args.file)?;
    let lab = args.name.clone().unwrap_or_else(|| topology.name.clone());
    deploy::check_lab_name(&lab).with_context(|| format!("lab up {}", args.file.display()))?;
    let sampling = if args.exporters {
        let text = std::fs::read_to_string(&args.file)
            .with_context(|| format!("cannot read {}", args.file.display()))?;
        aiwan_planner::formats::clab::parse_sampling(&text)
            .with_context(|| format!("lab up {}", args.file.display()))?
    } else {
        std::collections::BTreeMap::new()
    };
    let options = DeployOptions {
        shape: args.shape,
        shape_scale: args.shape_scale,
        shape_cap_bps: args.shape_cap.unwrap_or(DEFAULT_SHAPE_CAP_BPS),
        force: args.force,
        management: args.exporters,
        // The exporters should see packets as a router on real links does.
        wire_sized_packets: args.exporters,
    };
    let started = Instant::now();
    if args.force {
        stop_agents(&lab)?;
    }
    let deployment = deploy::deploy(&topology, &lab, &options)
        .with_context(|| format!("lab up {}", args.file.display()))?;
    // Leave nothing half up: a failed start takes the lab down again.
    let mut teardown = crate::lab_run::Teardown::new(&lab, None);
    let agents = if args.agents {
        start_agents(&lab, &deployment)
            .with_context(|| format!("lab up {}: agents", args.file.display()))?
    } else {
        Vec::new()
    };
    let exporters = if args.exporters {
        let settings = ExporterSettings {
            version: args.flow_version,
            active_timeout_s: args.active_timeout,
        };
        start_exporters(&lab, &deployment, &sampling, settings)
            .with_context(|| format!("lab up {}: exporters", args.file.display()))?
    } else {
        Vec::new()
    };
    teardown.disarm();
    let elapsed_ms = started.elapsed().as_secs_f64() * 1e3;
    if args.json {
        print_json(&serde_json::json!({
            "lab": lab,
            "elapsed_ms": elapsed_ms,
            "deployment": deployment,
            "agents": agents,
            "exporters": exporters,
        }))?;
    } else {
        let links: usize = deployment
            .nodes
            .iter()
            .map(|n| n.interfaces.len())
            .sum::<usize>()
            / 2;
        let mut out = String::new();
        writeln!(
            out,
            "lab {lab} up in {:.2} s: {} namespaces, {links} links, {}",
            elapsed_ms / 1e3,
            deployment.nodes.len(),
            if deployment.shaped {
                "shaped"
            } else {
                "unshaped"
            }
        )?;
        write_deployment(&mut out, &deployment)?;
        if !agents.is_empty() {
            writeln!(
                out,
                "{} agents; controller: agent_endpoint_template = \"{}\"",
                agents.len(),
                agent_endpoint_template(&lab)?
            )?;
        }
        if let (Some(management), false) = (&deployment.management, exporters.is_empty()) {
            writeln!(
                out,
                "{} exporters (softflowd, {}); controller: collector.netns = \"{}\", \
                 netflow_listen = \"0.0.0.0:{LAB_COLLECTOR_PORT}\"",
                exporters.len(),
                if args.flow_version == 9 {
                    "NetFlow v9"
                } else {
                    "IPFIX"
                },
                management.namespace
            )?;
            for exporter in &exporters {
                writeln!(
                    out,
                    "    {}:{} from {} (sampling 1 in {})",
                    exporter.node, exporter.interface, exporter.source, exporter.sampling
                )?;
            }
        }
        writeln!(
            out,
            "enter a node with `ip netns exec {lab}-NODE ...`; remove with `aiwan lab down --name {lab}`"
        )?;
        emit(&out)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn down(args: &DownArgs) -> anyhow::Result<ExitCode> {
    let lab = lab_name(&args.target)?;
    let started = Instant::now();
    stop_agents(&lab)?;
    let destroyed = deploy::destroy(&lab).with_context(|| format!("lab down {lab}"))?;
    let elapsed_ms = started.elapsed().as_secs_f64() * 1e3;
    if args.json {
        let mut value = serde_json::to_value(&destroyed)?;
        value["elapsed_ms"] = serde_json::json!(elapsed_ms);
        print_json(&value)?;
    } else {
        let mut out = String::new();
        if destroyed.namespaces_removed.is_empty() && !destroyed.state_file_removed {
            writeln!(out, "lab {lab} was not up")?;
        } else {
            writeln!(
                out,
                "lab {lab} down in {:.2} s: {} namespaces removed",
                elapsed_ms / 1e3,
                destroyed.namespaces_removed.len()
            )?;
        }
        if !destroyed.left_alone.is_empty() {
            writeln!(
                out,
                "left alone (share the prefix {lab}- but are not this lab's): {}",
                destroyed.left_alone.join(", ")
            )?;
        }
        emit(&out)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn status(args: &StatusArgs) -> anyhow::Result<ExitCode> {
    let lab = lab_name(&args.target)?;
    let mut report = deploy::status(&lab).with_context(|| format!("lab status {lab}"))?;
    // Agents `up --agents` started: each must still run and have its socket.
    let agents = agent_status(&lab)?;
    for agent in agents.iter().filter(|a| !(a.running && a.socket)) {
        report.healthy = false;
        report.problems.push(format!(
            "agent of {}: {} (log {})",
            agent.node,
            if agent.running {
                "running without its socket"
            } else {
                "not running"
            },
            agent.log.display()
        ));
    }
    if args.json {
        let mut value = serde_json::to_value(&report)?;
        value["agents"] = serde_json::to_value(&agents)?;
        print_json(&value)?;
    } else {
        let mut out = String::new();
        match &report.deployment {
            Some(deployment) => {
                writeln!(
                    out,
                    "lab {lab}: {} ({} of {} namespaces present{})",
                    if report.healthy { "up" } else { "degraded" },
                    report.namespaces_present.len(),
                    deployment.nodes.len(),
                    if deployment.shaped { ", shaped" } else { "" }
                )?;
                write_deployment(&mut out, deployment)?;
            }
            None if report.namespaces_present.is_empty() => writeln!(out, "lab {lab}: down")?,
            None => writeln!(
                out,
                "lab {lab}: no state file, {} namespaces left",
                report.namespaces_present.len()
            )?,
        }
        if !agents.is_empty() {
            let running = agents.iter().filter(|a| a.running && a.socket).count();
            writeln!(out, "agents: {running} of {} running", agents.len())?;
        }
        for namespace in &report.namespaces_missing {
            writeln!(out, "missing: namespace {namespace}")?;
        }
        for problem in &report.problems {
            writeln!(out, "problem: {problem}")?;
        }
        emit(&out)?;
    }
    Ok(if report.healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Where a lab's agents keep their sockets, logs and pid files. The name is
/// checked first: an absolute or relative path would otherwise replace or
/// escape `/run/aiwan/lab`.
pub fn agents_dir(lab: &str) -> anyhow::Result<PathBuf> {
    deploy::check_lab_name(lab)?;
    Ok(PathBuf::from(deploy::STATE_DIR).join(lab))
}

/// The controller's `southbound.agent_endpoint_template` for a lab.
pub fn agent_endpoint_template(lab: &str) -> anyhow::Result<String> {
    Ok(format!("unix:{}/{{node}}.sock", agents_dir(lab)?.display()))
}

/// One agent `lab up --agents` started.
#[derive(Debug, serde::Serialize)]
pub struct LabAgent {
    pub node: String,
    pub pid: u32,
    pub endpoint: String,
    pub log: PathBuf,
}

/// How long an agent may take to open its socket.
const AGENT_START_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The record of what `lab up --agents` created in the agents directory,
/// kept in that directory. `lab down` removes what it lists and nothing
/// else: a file someone put there, or a directory that was there before,
/// stays.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct AgentsManifest {
    /// Whether `lab up` made the directory (then `lab down` removes it
    /// once it is empty).
    created_dir: bool,
    /// File names (no paths) inside the directory: sockets, logs, pid files.
    files: Vec<String>,
}

const MANIFEST: &str = "aiwan-lab-agents.json";

impl AgentsManifest {
    fn read(dir: &Path) -> anyhow::Result<Option<AgentsManifest>> {
        let path = dir.join(MANIFEST);
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .map(Some)
                .with_context(|| format!("{} is damaged", path.display())),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// Written before the files it names are made, so an interrupted `lab
    /// up` still leaves a record of them.
    fn write(&self, dir: &Path) -> anyhow::Result<()> {
        let path = dir.join(MANIFEST);
        let temporary = dir.join(format!("{MANIFEST}.tmp"));
        std::fs::write(&temporary, serde_json::to_string_pretty(self)? + "\n")
            .and_then(|()| std::fs::rename(&temporary, &path))
            .with_context(|| format!("cannot write {}", path.display()))
    }

    fn record(&mut self, names: impl IntoIterator<Item = String>) {
        for name in names {
            if !self.files.contains(&name) {
                self.files.push(name);
            }
        }
    }
}

/// A file name recorded in the manifest: one path component made from a
/// node id, never `..`, never a path.
fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Starts this binary as `aiwan agent --netns {namespace} --purge` for each
/// node but hosts, in its own process group (so that it outlives this
/// command and a Ctrl-C in its terminal), and waits for every socket.
pub(crate) fn start_agents(lab: &str, deployment: &Deployment) -> anyhow::Result<Vec<LabAgent>> {
    use std::os::unix::process::CommandExt as _;
    let dir = agents_dir(lab)?;
    let mut manifest = AgentsManifest::read(&dir)?.unwrap_or_default();
    if !dir.exists() {
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        manifest.created_dir = true;
    }
    let binary = std::env::current_exe().context("cannot find this binary to run agents")?;
    let mut agents = Vec::new();
    for node in deployment.nodes.iter().filter(|node| node.role != "host") {
        let names = ["sock", "log", "pid"].map(|kind| format!("{}.{kind}", node.node));
        if let Some(bad) = names.iter().find(|name| !is_plain_file_name(name)) {
            anyhow::bail!("node {:?}: {bad:?} cannot be a file name", node.node);
        }
        manifest.record(names.clone());
        manifest.write(&dir)?;
        let [socket, log, pid_file] = names.map(|name| dir.join(name));
        let log_file = std::fs::File::create(&log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let child = agent_command(&binary)
            .arg("--listen")
            .arg(format!("unix:{}", socket.display()))
            .args(["--netns", &node.namespace, "--purge"])
            .stdin(std::process::Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .process_group(0)
            .spawn()
            .with_context(|| format!("cannot start the agent of {}", node.node))?;
        let pid = child.id();
        std::fs::write(&pid_file, format!("{pid}\n"))
            .with_context(|| format!("cannot write {}", pid_file.display()))?;
        agents.push(LabAgent {
            node: node.node.clone(),
            pid,
            endpoint: format!("unix:{}", socket.display()),
            log,
        });
    }
    let started = Instant::now();
    for agent in &agents {
        let socket = dir.join(format!("{}.sock", agent.node));
        while !socket.exists() {
            if started.elapsed() > AGENT_START_TIMEOUT || !process_alive(agent.pid) {
                let log = std::fs::read_to_string(&agent.log).unwrap_or_default();
                anyhow::bail!(
                    "the agent of {} did not open {} ({})",
                    agent.node,
                    socket.display(),
                    log.trim()
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    Ok(agents)
}

/// The UDP port the collectors listen on in a lab's management namespace.
pub const LAB_COLLECTOR_PORT: u16 = 2055;

/// How the lab's exporters export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExporterSettings {
    /// 9 (NetFlow v9) or 10 (IPFIX).
    pub version: u8,
    /// A flow is exported at least this often while it lasts, seconds
    /// (softflowd's `maxlife`): the telemetry interval the controller sees.
    pub active_timeout_s: u32,
}

/// One exporter `lab up --exporters` started.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LabExporter {
    pub node: String,
    pub interface: String,
    pub pid: u32,
    /// Where it sends (the management namespace's end of the node's link).
    pub collector: std::net::SocketAddr,
    /// What it sends from (the node's `mgmt0`): how the controller knows
    /// which node a datagram is from.
    pub source: std::net::Ipv4Addr,
    /// Packet sampling, 1 in N (the node's `aiwan.sampling` label; 1 when
    /// unset).
    pub sampling: u32,
    pub log: PathBuf,
}

/// The interfaces a router exports flows from: those of a WAN router that
/// face a node of another role (its site's fabric or hosts), where traffic
/// enters the WAN. Transit interfaces between WAN routers export nothing,
/// so each flow is counted once, where it enters.
pub fn edge_interfaces(deployment: &Deployment) -> Vec<(&DeployedNode, &str)> {
    let role: std::collections::BTreeMap<&str, &str> = deployment
        .nodes
        .iter()
        .map(|n| (n.node.as_str(), n.role.as_str()))
        .collect();
    let mut edges = Vec::new();
    for node in deployment.nodes.iter().filter(|n| n.role == "wan-router") {
        for interface in &node.interfaces {
            if role.get(interface.peer_node.as_str()) != Some(&"wan-router") {
                edges.push((node, interface.name.as_str()));
            }
        }
    }
    edges
}

/// Starts softflowd on every edge interface ([`edge_interfaces`]) of the
/// lab, in the node's namespace, capturing what comes in (`inbound`) and
/// exporting to the collectors in the management namespace. Each runs in
/// its own process group, recorded (pid, log, control socket) in the
/// agents' folder so that `lab down` stops it.
pub(crate) fn start_exporters(
    lab: &str,
    deployment: &Deployment,
    sampling: &std::collections::BTreeMap<String, u32>,
    settings: ExporterSettings,
) -> anyhow::Result<Vec<LabExporter>> {
    use std::os::unix::process::CommandExt as _;
    let Some(management) = &deployment.management else {
        anyhow::bail!("exporters need the lab's management network");
    };
    which(
        "softflowd",
        "the lab's flow exporters (Debian: apt-get install softflowd)",
    )?;
    let dir = agents_dir(lab)?;
    let mut manifest = AgentsManifest::read(&dir)?.unwrap_or_default();
    if !dir.exists() {
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        manifest.created_dir = true;
    }
    let mut exporters = Vec::new();
    for (node, interface) in edge_interfaces(deployment) {
        let Some(link) = management.links.iter().find(|l| l.node == node.node) else {
            anyhow::bail!("node {} has no management link", node.node);
        };
        let stem = format!("{}.{interface}", node.node);
        // Our pid file, its log, its control socket, and the pid file
        // softflowd writes only when it daemonises (given so that it would
        // never write the shared default /var/run/softflowd.pid).
        let names = ["exporter", "exporter-log", "exporter-ctl", "exporter-pid"]
            .map(|kind| format!("{stem}.{kind}"));
        if let Some(bad) = names.iter().find(|name| !is_plain_file_name(name)) {
            anyhow::bail!("node {:?}: {bad:?} cannot be a file name", node.node);
        }
        manifest.record(names.clone());
        manifest.write(&dir)?;
        let [pid_file, log, control, own_pid_file] = names.map(|name| dir.join(name));
        // A control socket left by an earlier run would pass for this one's.
        remove_recorded_file(&control)?;
        let log_file = std::fs::File::create(&log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let collector = std::net::SocketAddr::from((link.peer, LAB_COLLECTOR_PORT));
        let rate = sampling.get(&node.node).copied().unwrap_or(1).max(1);
        let mut command = std::process::Command::new("ip");
        command
            .args(["netns", "exec", &node.namespace, "softflowd", "-d"])
            .args(["-i", interface])
            .args(["-n", &collector.to_string()])
            .args(["-v", &settings.version.to_string()])
            .args(["-t", &format!("maxlife={}", settings.active_timeout_s)])
            .args(["-t", "expint=1"])
            // Whole packets: softflowd's libpcap ring (TPACKET_V3, 256 KB
            // blocks) hands a block over only when it is full, and header-
            // sized captures of a few Mbit/s took seconds to fill one.
            .args(["-C", "65535"])
            .arg("-p")
            .arg(&own_pid_file)
            .arg("-c")
            .arg(&control);
        if rate > 1 {
            command.args(["-s", &rate.to_string()]);
        }
        let child = command
            // Ingress only: a flow counted where it enters the router.
            .arg("inbound")
            .stdin(std::process::Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .process_group(0)
            .spawn()
            .with_context(|| format!("cannot start softflowd on {}:{interface}", node.node))?;
        // `ip netns exec` execs softflowd: this is its pid.
        std::fs::write(&pid_file, format!("{}\n", child.id()))
            .with_context(|| format!("cannot write {}", pid_file.display()))?;
        exporters.push(LabExporter {
            node: node.node.clone(),
            interface: interface.to_string(),
            pid: child.id(),
            collector,
            source: link.address,
            sampling: rate,
            log,
        });
    }
    // softflowd opens its control socket once it captures and can export;
    // none after a while means it failed (its log says why).
    let started = Instant::now();
    for exporter in &exporters {
        let control = dir.join(format!(
            "{}.{}.exporter-ctl",
            exporter.node, exporter.interface
        ));
        while !control.exists() {
            if started.elapsed() > AGENT_START_TIMEOUT || !process_alive(exporter.pid) {
                let log = std::fs::read_to_string(&exporter.log).unwrap_or_default();
                anyhow::bail!(
                    "softflowd on {}:{} did not start ({})",
                    exporter.node,
                    exporter.interface,
                    log.trim()
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    Ok(exporters)
}

/// Fails naming the tool and what it is for when it cannot be run.
fn which(tool: &str, purpose: &str) -> anyhow::Result<()> {
    let found = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()));
    if found {
        Ok(())
    } else {
        anyhow::bail!("{tool} is not installed; it is needed for {purpose}")
    }
}

/// One lab agent as `lab status` sees it.
#[derive(Debug, serde::Serialize)]
pub struct AgentStatus {
    pub node: String,
    pub pid: Option<u32>,
    pub running: bool,
    pub socket: bool,
    pub log: PathBuf,
}

/// The agents of a lab, from the pid files its manifest records.
fn agent_status(lab: &str) -> anyhow::Result<Vec<AgentStatus>> {
    let dir = agents_dir(lab)?;
    let Some(manifest) = AgentsManifest::read(&dir)? else {
        return Ok(Vec::new());
    };
    let mut agents: Vec<AgentStatus> = manifest
        .files
        .iter()
        .filter(|name| is_plain_file_name(name))
        .filter_map(|name| name.strip_suffix(".pid"))
        .map(|node| {
            let pid = std::fs::read_to_string(dir.join(format!("{node}.pid")))
                .ok()
                .and_then(|text| text.trim().parse::<u32>().ok());
            AgentStatus {
                running: pid.is_some_and(process_alive),
                socket: dir.join(format!("{node}.sock")).exists(),
                log: dir.join(format!("{node}.log")),
                pid,
                node: node.to_string(),
            }
        })
        .collect();
    agents.sort_by(|a, b| a.node.cmp(&b.node));
    Ok(agents)
}

fn process_alive(pid: u32) -> bool {
    // A zombie (started by us, not yet reaped) is not alive.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            stat.rsplit_once(") ")
                .is_some_and(|(_, rest)| !rest.starts_with('Z'))
        })
        .unwrap_or(false)
}

/// Stops the agents a `lab up --agents` of this lab started (those whose
/// pid file names a live `aiwan agent` process listening under the lab's
/// directory: a recycled pid is left alone), then removes the files its
/// manifest records, and the directory if `lab up` made it and nothing
/// else is left in it. Returns how many agents it stopped.
pub fn stop_agents(lab: &str) -> anyhow::Result<usize> {
    let dir = agents_dir(lab)?;
    let Some(manifest) = AgentsManifest::read(&dir)? else {
        // Nothing of ours was recorded here: touch nothing.
        return Ok(0);
    };
    // The exporters first.
    let mut stopped = terminate_exporters(&dir, &manifest);
    for agent in agent_status(lab)? {
        let Some(pid) = agent.pid.and_then(|pid| i32::try_from(pid).ok()) else {
            continue;
        };
        // `aiwan-agent --listen …`, or the alias `aiwan agent --listen …`.
        if terminate_if_ours(pid, &["aiwan-agent ", " agent "], &dir) {
            stopped.push(pid);
        }
    }
    wait_stopped(&stopped);
    for name in manifest
        .files
        .iter()
        .filter(|name| is_plain_file_name(name))
    {
        remove_recorded_file(&dir.join(name))?;
    }
    remove_recorded_file(&dir.join(MANIFEST))?;
    if manifest.created_dir {
        match std::fs::remove_dir(&dir) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => tracing::warn!(
                "left {} in place: {error} (it holds files lab up did not make)",
                dir.display()
            ),
        }
    }
    Ok(stopped.len())
}

/// Sends SIGTERM to the exporters a manifest records (their pid files name
/// softflowd processes whose files are in this folder; a recycled pid is
/// left alone); their pids.
fn terminate_exporters(dir: &Path, manifest: &AgentsManifest) -> Vec<i32> {
    let mut stopped = Vec::new();
    for name in manifest.files.iter().filter(|n| n.ends_with(".exporter")) {
        if !is_plain_file_name(name) {
            continue;
        }
        let Some(pid) = std::fs::read_to_string(dir.join(name))
            .ok()
            .and_then(|text| text.trim().parse::<i32>().ok())
        else {
            continue;
        };
        if terminate_if_ours(pid, &["softflowd"], dir) {
            stopped.push(pid);
        }
    }
    stopped
}

/// Gives the processes a moment to close their sockets; then insists.
fn wait_stopped(stopped: &[i32]) {
    let deadline = Instant::now() + std::time::Duration::from_secs(5);
    for pid in stopped {
        while process_alive(*pid as u32) && Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        if process_alive(*pid as u32) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Stops a lab's exporters (not its agents), leaving their files for `lab
/// down`; how many it stopped. `lab run` starts them afresh for each side,
/// so that each side's collectors get the templates from the start and no
/// exporter carries state from the other side's run.
pub(crate) fn stop_exporters(lab: &str) -> anyhow::Result<usize> {
    let dir = agents_dir(lab)?;
    let Some(manifest) = AgentsManifest::read(&dir)? else {
        return Ok(0);
    };
    let stopped = terminate_exporters(&dir, &manifest);
    wait_stopped(&stopped);
    Ok(stopped.len())
}

/// Sends SIGTERM to `pid` when its command line has one of `programs` and
/// names the lab's folder (so a recycled pid of someone else's process is
/// left alone); whether it did.
fn terminate_if_ours(pid: i32, programs: &[&str], dir: &Path) -> bool {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    let ours = programs.iter().any(|program| cmdline.contains(program));
    if !(ours && cmdline.contains(&dir.display().to_string())) {
        return false;
    }
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    );
    true
}

/// Removes a file `lab up` recorded making; a directory or a missing file
/// at that name is left as it is.
fn remove_recorded_file(path: &Path) -> anyhow::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => {
            tracing::warn!("left {} in place: it is a directory", path.display());
            Ok(())
        }
        Ok(_) => {
            std::fs::remove_file(path).with_context(|| format!("cannot remove {}", path.display()))
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(error).with_context(|| format!("cannot inspect {}", path.display())),
    }
}

fn print_json(value: &serde_json::Value) -> anyhow::Result<()> {
    emit(&(serde_json::to_string_pretty(value)? + "\n"))
}

/// Writes `text` to stdout; a closed pipe (`| head`) is an error, not a
/// panic as in `println!`.
fn emit(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .context("cannot write to stdout")
}

/// One line per node, then one per interface.
fn write_deployment(out: &mut String, deployment: &Deployment) -> std::fmt::Result {
    for node in &deployment.nodes {
        write_node(out, node)?;
    }
    Ok(())
}

fn write_node(out: &mut String, node: &DeployedNode) -> std::fmt::Result {
    write!(
        out,
        "  {} ({}) netns {}  lo {} {}",
        node.node, node.role, node.namespace, node.loopback.v4, node.loopback.v6
    )?;
    for host in &node.prefix_hosts {
        write!(out, " {host}")?;
    }
    if let Some(gateway) = &node.default_gateway {
        write!(
            out,
            "  default via {} / {} dev {}",
            gateway.v4, gateway.v6, gateway.interface
        )?;
    }
    writeln!(out)?;
    for interface in &node.interfaces {
        write!(
            out,
            "    {:<6} {:<16} {:<20} -> {}:{}",
            interface.name,
            interface.address.v4.to_string(),
            interface.address.v6.to_string(),
            interface.peer_node,
            interface.peer_interface
        )?;
        if !interface.admin_up {
            write!(out, "  (down)")?;
        }
        if let Some(rate) = interface.shaped_bps {
            write!(out, "  tbf {rate} bit/s")?;
        }
        writeln!(out)?;
    }
    Ok(())
}

/// The agent a lab's routers run: `aiwan-agent` beside this binary (what
/// a router runs; cargo builds both into one folder), else this binary's
/// `agent` alias.
pub fn agent_command(binary: &std::path::Path) -> std::process::Command {
    let small = binary.with_file_name("aiwan-agent");
    if small.is_file() {
        std::process::Command::new(small)
    } else {
        let mut alias = std::process::Command::new(binary);
        alias.arg("agent");
        alias
    }
}
