//! The `aiwan` binary: one command with a subcommand per job.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use aiwan_controller::client;

// mimalloc rather than the system allocator: the telemetry store builds and
// drops large column buffers every second, and glibc's malloc hands them
// back to the kernel and faults them in again (about a tenth of the
// collector's time in `aiwan bench collector`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use aiwan_controller::config::{ConfigOverrides, ControllerConfig, LogFormat};

#[derive(Parser)]
#[command(name = "aiwan", version, about = "AI-WAN network controller")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The main job: the controller, its collectors and closed loop on the
    /// built-in two-datacentre topology, with real NetFlow/IPFIX from a
    /// simulated dataplane carrying AI and background traffic.
    Demo(aiwan_controller::demo::DemoArgs),
    /// Run the controller daemon.
    Controller(ControllerArgs),
    /// Run the flow collectors (NetFlow v5/v9, IPFIX, sFlow) and the
    /// telemetry store alone, and summarise per exporter.
    Collect(aiwan_controller::collect::CollectArgs),
    /// Program one Linux router (or lab namespace) for the controller:
    /// serves the southbound gRPC API aiwan.agent.v1 on a unix socket, a
    /// loopback address, or any address with mutual TLS. The same as the
    /// small `aiwan-agent` binary, which is what a router should run.
    Agent(aiwan_agent::cli::AgentArgs),
    /// A small CA for the agents' mutual TLS: `certs ca`, then `certs
    /// issue` for each router's agent (--host) and the controller
    /// (--client).
    Certs(aiwan_controller::certs::CertsArgs),
    /// Operator dashboard in the terminal: links, traffic, jobs, plans and
    /// events of a running controller, through its gRPC API.
    Tui(TuiArgs),
    /// Import and show the topology stored in the controller.
    #[command(subcommand)]
    Topology(TopologyCommand),
    /// Manage API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Deploy lab topologies into network namespaces.
    #[command(subcommand)]
    Lab(aiwan_controller::lab_cli::LabCommand),
    /// Compute a TE plan for a topology and traffic matrix, with the
    /// reference LP and/or the fast solver.
    Plan(aiwan_controller::offline::PlanArgs),
    /// Score planning methods over a traffic-matrix series.
    Eval(aiwan_controller::offline::EvalArgs),
    /// Generate traffic matrices for a topology (one per line, bit/s).
    GenTraffic(aiwan_controller::offline::GenTrafficArgs),
    /// Benchmarks that print JSON.
    #[command(subcommand)]
    Bench(BenchCommand),
}

/// Arguments of a subcommand whose issue has not landed: accepted so that
/// `--help` works and scripts get a clear message instead of a usage error.
#[derive(Args)]
struct NotYet {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    args: Vec<String>,
}

#[derive(Args)]
struct TuiArgs {
    #[command(flatten)]
    connection: client::Connection,
}

#[derive(Args)]
struct ControllerArgs {
    /// TOML configuration file (see aiwan.example.toml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// gRPC listen address [default: 127.0.0.1:50051].
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// Prometheus /metrics listen address [default: 127.0.0.1:9185].
    #[arg(long)]
    metrics_listen: Option<std::net::SocketAddr>,
    /// State directory; holds aiwan.db unless --database-url says otherwise.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// sqlite://FILE or postgres://USER@HOST/DB.
    #[arg(long)]
    database_url: Option<String>,
    /// ROLE:TOKEN created at start so a fresh install can be administered.
    /// Visible in the process list: prefer --bootstrap-token-file or
    /// AIWAN_BOOTSTRAP_TOKEN.
    #[arg(long, conflicts_with = "bootstrap_token_file")]
    bootstrap_token: Option<String>,
    /// A file holding ROLE:TOKEN (its first line).
    #[arg(long, value_name = "FILE")]
    bootstrap_token_file: Option<PathBuf>,
    /// Serve plaintext gRPC on a non-loopback address (no TLS configured):
    /// tokens then cross the network readable.
    #[arg(long)]
    insecure_listen: bool,
    /// NetFlow v5/v9 and IPFIX listen address (collectors off unless this
    /// or --sflow-listen is set).
    #[arg(long)]
    netflow_listen: Option<std::net::SocketAddr>,
    /// sFlow listen address.
    #[arg(long)]
    sflow_listen: Option<std::net::SocketAddr>,
}

#[derive(Subcommand)]
enum TopologyCommand {
    /// Import a topology file into the controller, replacing the stored one.
    Import {
        /// A containerlab *.clab.yml file (labels described in lab/README.md),
        /// or a network as the planner reads it: node-link .json, .graphml,
        /// SNDlib .xml, an Abilene link table (every node a WAN router,
        /// interfaces eth1, eth2, ... in the file's order).
        file: PathBuf,
        /// Capacity of every link, for formats without capacities
        /// (GraphML): `10G`, `400M`.
        #[arg(long, value_parser = parse_capacity)]
        capacity: Option<f64>,
        #[command(flatten)]
        connection: client::Connection,
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
    /// Show the topology stored in the controller.
    Show {
        #[command(flatten)]
        connection: client::Connection,
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Reference LP against the fast solver on the benchmark topologies.
    Planner(aiwan_controller::offline::BenchPlannerArgs),
    /// Collector throughput: IPFIX decoded into the store on one core,
    /// loopback UDP at half that rate, and nfacctd on the same stream.
    Collector(aiwan_controller::bench_collector::BenchCollectorArgs),
    /// A valid caller's latency alone and during a burst of calls with
    /// made-up tokens.
    Api(aiwan_controller::bench_api::BenchApiArgs),
    /// `aiwan collect` under a flood of IPFIX templates and observation
    /// domains beside a legitimate exporter: peak RSS against the store
    /// budget and a run without the flood, and the exporter's losses.
    Flood(aiwan_controller::bench_flood::BenchFloodArgs),
    /// The closed loop's work for one interval (forecast, prediction,
    /// robust re-plan), cold and warm, on the demo topology and larger
    /// networks.
    Replan(aiwan_controller::closed_loop::bench::BenchReplanArgs),
    /// Frame time of the operator TUI with 2,000 links and 500 jobs.
    Tui(aiwan_controller::bench_tui::BenchTuiArgs),
    /// Route push rate through the agent: N weighted multipath routes in a
    /// scratch namespace, against `ip -batch` (needs root).
    Push(aiwan_controller::agent::bench::BenchPushArgs),
    /// Admission's answer to a 30 Gbit/s ai-sync job on the demo topology
    /// beside guaranteed jobs, against a whole plan of the same jobs.
    Admission(aiwan_controller::bench_admission::BenchAdmissionArgs),
    /// Deadline transfers scheduled online against an offline oracle (a
    /// time-expanded LP with full knowledge), on seeded job arrivals.
    Jobs(aiwan_controller::bench_jobs::BenchJobsArgs),
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token (needs an admin token); prints the secret once.
    Create {
        /// viewer, operator or admin.
        #[arg(long)]
        role: String,
        /// Who or what the token is for.
        #[arg(long, default_value = "created with aiwan token create")]
        description: String,
        #[command(flatten)]
        connection: client::Connection,
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
}

fn init_logging(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Plain => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

async fn run_agent(args: aiwan_agent::cli::AgentArgs) -> anyhow::Result<()> {
    init_logging(LogFormat::Plain, "info");
    aiwan_agent::cli::run(args).await
}

async fn run_controller(args: ControllerArgs) -> anyhow::Result<()> {
    let overrides = ConfigOverrides {
        listen: args.listen,
        metrics_listen: args.metrics_listen,
        data_dir: args.data_dir,
        database_url: args.database_url,
        bootstrap_token: match &args.bootstrap_token_file {
            Some(path) => Some(client::read_secret(path, "--bootstrap-token-file")?),
            None => args.bootstrap_token,
        },
        insecure_listen: args.insecure_listen,
        netflow_listen: args.netflow_listen,
        sflow_listen: args.sflow_listen,
    };
    let config = ControllerConfig::load(
        args.config.as_deref(),
        |name| std::env::var(name).ok(),
        &overrides,
    )?;
    init_logging(config.log.format, &config.log.level);
    let running = aiwan_controller::server::start(&config)
        .await
        .context("controller failed to start")?;
    running
        .run_until(async {
            aiwan_controller::server::shutdown_signal().await;
            tracing::info!("shutting down");
        })
        .await
        .context("controller stopped with an error")
}

/// The error and its causes on one line, each cause once: many of our error
/// types already quote their source in their message.
fn error_chain(error: &anyhow::Error) -> String {
    let mut message = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        if !message.contains(&cause) {
            message.push_str(": ");
            message.push_str(&cause);
        }
    }
    message
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Demo(args) => {
                init_logging(
                    LogFormat::Plain,
                    if args.headless || args.json {
                        "info"
                    } else {
                        "warn"
                    },
                );
                return aiwan_controller::demo::demo(&args).await;
            }
            Command::Collect(args) => {
                init_logging(LogFormat::Plain, "info");
                aiwan_controller::collect::collect(&args).await?
            }
            Command::Agent(args) => run_agent(args).await?,
            Command::Certs(args) => aiwan_controller::certs::run(&args)?,
            Command::Tui(args) => {
                // Logs would draw over the dashboard: only errors, and to a
                // file when AIWAN_TUI_LOG names one.
                init_logging(LogFormat::Plain, "off");
                let token = args.connection.token()?;
                aiwan_ui::run(aiwan_ui::Options {
                    endpoint: args.connection.endpoint,
                    token,
                    ca_file: args.connection.ca_file,
                })
                .await?
            }
            Command::Lab(command) => {
                init_logging(LogFormat::Plain, "warn");
                return aiwan_controller::lab_cli::run(command).await;
            }
            Command::Plan(args) => {
                init_logging(LogFormat::Plain, "warn");
                aiwan_controller::offline::plan(&args)?
            }
            Command::Eval(args) => {
                init_logging(LogFormat::Plain, "warn");
                aiwan_controller::offline::eval(&args)?
            }
            Command::GenTraffic(args) => {
                init_logging(LogFormat::Plain, "warn");
                aiwan_controller::offline::gen_traffic(&args)?
            }
            Command::Bench(BenchCommand::Collector(args)) => {
                init_logging(LogFormat::Plain, "warn");
                aiwan_controller::bench_collector::bench_collector(&args).await?
            }
            Command::Bench(BenchCommand::Api(args)) => {
                init_logging(LogFormat::Plain, "warn");
                aiwan_controller::bench_api::bench_api(&args).await?
            }
            Command::Bench(BenchCommand::Flood(args)) => {
                init_logging(LogFormat::Plain, "warn");
                aiwan_controller::bench_flood::bench_flood(&args)?
            }
            Command::Bench(BenchCommand::Push(args)) => {
                init_logging(LogFormat::Plain, "warn");
                aiwan_controller::agent::bench::bench_push(&args).await?
            }
            Command::Bench(BenchCommand::Tui(args)) => {
                init_logging(LogFormat::Plain, "warn");
                aiwan_controller::bench_tui::bench_tui(&args)?
            }
            Command::Bench(BenchCommand::Replan(args)) => {
                init_logging(LogFormat::Plain, "warn");
                aiwan_controller::closed_loop::bench::bench_replan(&args)?
            }
            Command::Bench(BenchCommand::Admission(args)) => {
                init_logging(LogFormat::Plain, "warn");
                aiwan_controller::bench_admission::bench_admission(&args)?
            }
            Command::Bench(BenchCommand::Jobs(args)) => {
                init_logging(LogFormat::Plain, "warn");
                aiwan_controller::bench_jobs::bench_jobs(&args)?
            }
            Command::Bench(BenchCommand::Planner(args)) => {
                init_logging(LogFormat::Plain, "warn");
                aiwan_controller::offline::bench_planner(&args)?
            }
            Command::Controller(args) => run_controller(args).await?,
            Command::Topology(TopologyCommand::Import {
                file,
                capacity,
                connection,
                json,
            }) => {
                init_logging(LogFormat::Plain, "warn");
                client::topology_import(&file, capacity, &connection, json).await?
            }
            Command::Topology(TopologyCommand::Show { connection, json }) => {
                init_logging(LogFormat::Plain, "warn");
                client::topology_show(&connection, json).await?
            }
            Command::Token(TokenCommand::Create {
                role,
                description,
                connection,
                json,
            }) => {
                init_logging(LogFormat::Plain, "warn");
                client::token_create(&role, &description, &connection, json).await?
            }
        }
        Ok::<ExitCode, anyhow::Error>(ExitCode::SUCCESS)
    });
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {}", error_chain(&error));
            ExitCode::FAILURE
        }
    }
}

/// `--capacity`: a rate such as `10G` or `400M`, in bit/s.
fn parse_capacity(text: &str) -> Result<f64, String> {
    aiwan_planner::formats::clab::parse_rate(text)
        .filter(|rate| *rate > 0)
        .map(|rate| rate as f64)
        .ok_or_else(|| format!("{text:?} is not a rate such as 10G or 400M"))
}
