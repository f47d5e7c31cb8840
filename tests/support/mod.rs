//! Shared helpers of the end-to-end tests: databases for both engines, an
//! in-process controller on 127.0.0.1:0, and clients carrying a token.
#![allow(dead_code)] // each test binary uses its own subset

use std::net::SocketAddr;
use std::path::PathBuf;

use aiwan_api::v1 as pb;
use aiwan_api::v1::admin_service_client::AdminServiceClient;
use aiwan_api::v1::intent_service_client::IntentServiceClient;
use aiwan_api::v1::plan_service_client::PlanServiceClient;
use aiwan_api::v1::telemetry_service_client::TelemetryServiceClient;
use aiwan_api::v1::topology_service_client::TopologyServiceClient;
use aiwan_controller::client::BearerToken;
use aiwan_controller::config::ControllerConfig;
use aiwan_controller::server::RunningController;
use sqlx::Executor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// The bootstrap admin secret every test controller starts with.
pub const ADMIN_SECRET: &str = "test-admin-secret-0123456789";

/// The database engine a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// True when tests must fail instead of skipping for missing tools.
pub fn lab_required() -> bool {
    std::env::var("AIWAN_REQUIRE_LAB").is_ok_and(|v| v == "1")
}

/// Skips (returns `None` after printing why) or, under
/// `AIWAN_REQUIRE_LAB=1`, fails.
pub fn skip<T>(test: &str, reason: &str) -> Option<T> {
    if lab_required() {
        panic!("{test}: AIWAN_REQUIRE_LAB=1 but {reason}");
    }
    eprintln!("SKIPPED {test}: {reason}");
    None
}

/// A database of its own for one test.
pub struct TestDb {
    pub backend: Backend,
    /// Holds the SQLite file (and is the controller's data directory).
    pub dir: tempfile::TempDir,
    /// `None` for SQLite in `dir`.
    pub database_url: Option<String>,
    admin_url: Option<String>,
    name: String,
}

impl TestDb {
    /// A fresh database, or `None` (skipped) when PostgreSQL is wanted but
    /// `AIWAN_TEST_POSTGRES_URL` is not set.
    pub async fn new(backend: Backend, test: &str) -> Option<TestDb> {
        let dir = tempfile::tempdir().expect("tempdir");
        match backend {
            Backend::Sqlite => Some(TestDb {
                backend,
                dir,
                database_url: None,
                admin_url: None,
                name: String::new(),
            }),
            Backend::Postgres => {
                let Ok(admin_url) = std::env::var("AIWAN_TEST_POSTGRES_URL") else {
                    return skip(
                        test,
                        "AIWAN_TEST_POSTGRES_URL is not set (postgres://USER:PASS@HOST/DB of a \
                         role that may create databases; .ci/run sets it up)",
                    );
                };
                let name = format!("aiwan_test_{}", uuid::Uuid::new_v4().simple());
                sqlx::any::install_default_drivers();
                let mut admin = <sqlx::AnyConnection as sqlx::Connection>::connect(&admin_url)
                    .await
                    .unwrap_or_else(|e| panic!("{test}: cannot connect to {admin_url}: {e}"));
                admin
                    .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .await
                    .expect("create test database");
                let database_url = replace_database(&admin_url, &name);
                Some(TestDb {
                    backend,
                    dir,
                    database_url: Some(database_url),
                    admin_url: Some(admin_url),
                    name,
                })
            }
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// The URL the controller opens.
    pub fn url(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => format!(
                "sqlite://{}?mode=rw",
                self.dir.path().join("aiwan.db").display()
            ),
        }
    }

    /// Drops a PostgreSQL test database (SQLite goes with the temp dir).
    pub async fn cleanup(self) {
        if let Some(admin_url) = &self.admin_url
            && let Ok(mut admin) =
                <sqlx::AnyConnection as sqlx::Connection>::connect(admin_url).await
        {
            let _ = admin
                .execute(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    self.name
                )))
                .await;
        }
    }
}

/// `postgres://u:p@h:5432/db?x` with the database part replaced.
fn replace_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let base = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{base}/{database}?{query}"),
        None => format!("{base}/{database}"),
    }
}

/// The configuration of a test controller on `db`.
pub fn test_config(db: &TestDb) -> ControllerConfig {
    ControllerConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        metrics_listen: Some("127.0.0.1:0".parse().expect("addr")),
        data_dir: db.data_dir(),
        database_url: db.database_url.clone(),
        bootstrap_token: Some(format!("admin:{ADMIN_SECRET}")),
        ..ControllerConfig::default()
    }
}

/// Starts an in-process controller on `db`.
pub async fn start(db: &TestDb) -> RunningController {
    aiwan_controller::server::start(&test_config(db))
        .await
        .expect("controller starts")
}

pub type Authed = InterceptedService<Channel, BearerToken>;

/// Typed clients that all send one token.
pub struct Clients {
    pub topology: TopologyServiceClient<Authed>,
    pub intents: IntentServiceClient<Authed>,
    pub plans: PlanServiceClient<Authed>,
    pub telemetry: TelemetryServiceClient<Authed>,
    pub admin: AdminServiceClient<Authed>,
}

pub async fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .expect("url")
        .connect()
        .await
        .expect("connect to controller")
}

impl Clients {
    pub async fn connect(addr: SocketAddr, token: Option<&str>) -> Clients {
        let channel = channel(addr).await;
        let auth = BearerToken::new(token).expect("token");
        Clients {
            topology: TopologyServiceClient::with_interceptor(channel.clone(), auth.clone()),
            intents: IntentServiceClient::with_interceptor(channel.clone(), auth.clone()),
            plans: PlanServiceClient::with_interceptor(channel.clone(), auth.clone()),
            telemetry: TelemetryServiceClient::with_interceptor(channel.clone(), auth.clone()),
            admin: AdminServiceClient::with_interceptor(channel, auth),
        }
    }
}

/// Creates a token of `role` with the admin clients; returns its secret.
pub async fn create_token(admin: &mut Clients, role: pb::Role, description: &str) -> String {
    admin
        .admin
        .create_token(pb::CreateTokenRequest {
            role: role as i32,
            description: description.to_string(),
        })
        .await
        .expect("create token")
        .into_inner()
        .secret
}

/// A small two-site topology: dc1 and dc2 joined by two WAN routers.
pub fn small_topology() -> pb::Topology {
    let node = |name: &str, site: &str, role: pb::NodeRole, prefixes: &[&str]| pb::Node {
        name: format!("nodes/{name}"),
        site: if site.is_empty() {
            String::new()
        } else {
            format!("sites/{site}")
        },
        role: role as i32,
        prefixes: prefixes.iter().map(|p| p.to_string()).collect(),
    };
    let mut links = Vec::new();
    let mut link = |a: &str, ai: &str, b: &str, bi: &str, gbps: i64| {
        for (src, si, dst, di) in [(a, ai, b, bi), (b, bi, a, ai)] {
            links.push(pb::Link {
                name: String::new(),
                src_node: format!("nodes/{src}"),
                src_interface: si.to_string(),
                dst_node: format!("nodes/{dst}"),
                dst_interface: di.to_string(),
                capacity_bps: gbps * 1_000_000_000,
                latency: Some(prost_types::Duration {
                    seconds: 0,
                    nanos: 2_000_000,
                }),
                srlgs: vec![],
                admin_state: pb::AdminState::Up as i32,
                unresolved: String::new(),
            });
        }
    };
    link("dc1-r", "eth1", "wan-a", "eth1", 100);
    link("dc1-r", "eth2", "wan-b", "eth1", 40);
    link("wan-a", "eth2", "dc2-r", "eth1", 100);
    link("wan-b", "eth2", "dc2-r", "eth2", 40);
    pb::Topology {
        display_name: "small".into(),
        sites: vec![
            pb::Site {
                name: "sites/dc1".into(),
                prefixes: vec!["10.1.0.0/16".into()],
            },
            pb::Site {
                name: "sites/dc2".into(),
                prefixes: vec!["10.2.0.0/16".into()],
            },
        ],
        nodes: vec![
            node("dc1-r", "dc1", pb::NodeRole::WanRouter, &["10.1.255.0/24"]),
            node("dc2-r", "dc2", pb::NodeRole::WanRouter, &[]),
            node("wan-a", "", pb::NodeRole::WanRouter, &[]),
            node("wan-b", "", pb::NodeRole::WanRouter, &[]),
        ],
        links,
        revision: 0,
        update_time: None,
    }
}

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    aiwan_controller::model::now_ms()
}

/// A valid ai-sync job between the two sites of [`small_topology`].
pub fn sync_job() -> pb::Job {
    pb::Job {
        tenant: "team-a".into(),
        traffic_class: pb::TrafficClass::AiSync as i32,
        sources: vec![pb::Endpoint {
            kind: Some(pb::endpoint::Kind::Site("sites/dc1".into())),
        }],
        destinations: vec![
            pb::Endpoint {
                kind: Some(pb::endpoint::Kind::Site("sites/dc2".into())),
            },
            pb::Endpoint {
                kind: Some(pb::endpoint::Kind::Prefix("10.99.0.0/16".into())),
            },
        ],
        rate_bps: 40_000_000_000,
        priority: 10,
        ..pb::Job::default()
    }
}

/// A protobuf timestamp `offset_ms` from now.
pub fn at(offset_ms: i64) -> prost_types::Timestamp {
    aiwan_controller::convert::timestamp(now_ms() + offset_ms)
}

/// Runs each named `async fn name(Backend)` once per engine.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::support::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::support::Backend::Postgres).await
                }
            )*
        }
    };
}

/// Why a lab test cannot run here (not root, or a tool missing), or None:
/// root, `ip` with network namespaces, iperf3, and `tc` when `with_tc`.
pub fn missing_lab_prerequisite(with_tc: bool) -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("not root".into());
    }
    if let Err(e) = sh(&["ip", "netns", "list"]) {
        return Some(format!("iproute2 with netns is missing ({e})"));
    }
    if let Err(e) = sh(&["iperf3", "--version"]) {
        return Some(format!("iperf3 is missing ({e})"));
    }
    if with_tc && let Err(e) = sh(&["tc", "-V"]) {
        return Some(format!("tc is missing ({e})"));
    }
    None
}

/// Why this kernel cannot run SRv6 (it was built without seg6 lightweight
/// tunnels), or None. A kernel feature is the machine's, not something CI
/// can install, so tests skip their SRv6 parts with this reason printed
/// even under `AIWAN_REQUIRE_LAB=1`; anything else going wrong in the
/// probe is left for the test itself to meet.
pub fn kernel_without_srv6() -> Option<String> {
    let namespace = format!("aiwan-srv6-probe-{}", std::process::id());
    sh(&["ip", "netns", "add", &namespace]).ok()?;
    let _ = sh(&["ip", "-n", &namespace, "link", "set", "lo", "up"]);
    let probe = sh(&[
        "ip",
        "-n",
        &namespace,
        "-6",
        "route",
        "add",
        "fc00:5e6::1/128",
        "encap",
        "seg6local",
        "action",
        "End",
        "dev",
        "lo",
    ]);
    let _ = sh(&["ip", "netns", "del", &namespace]);
    match probe {
        Err(error) if error.contains("not supported") => Some(format!(
            "the kernel has no SRv6 (CONFIG_IPV6_SEG6_LWTUNNEL): {error}"
        )),
        _ => None,
    }
}

/// Runs a command, returning its stdout or its stderr as the error.
pub fn sh(args: &[&str]) -> Result<String, String> {
    let out = std::process::Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if !out.status.success() {
        return Err(format!(
            "{}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `ApplyPlan`, returning the new plan's version.
pub async fn apply_plan(clients: &mut Clients, reason: &str) -> i64 {
    let operation = clients
        .plans
        .apply_plan(pb::ApplyPlanRequest {
            reason: reason.into(),
        })
        .await
        .expect("apply plan")
        .into_inner()
        .operation
        .expect("operation");
    match operation.result {
        Some(pb::operation::Result::Response(plan)) => plan.version,
        _ => panic!("apply failed: {operation:?}"),
    }
}

/// Waits until the controller `child` serves gRPC health on `addr` (or
/// fails after 30 s, or at once if it exits, with its log).
pub async fn wait_until_serving(
    child: &mut std::process::Child,
    addr: SocketAddr,
    log: &std::path::Path,
) {
    use tonic_health::pb::health_client::HealthClient;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().expect("child status") {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            panic!("controller exited with {status} before serving:\n{log}");
        }
        if let Ok(channel) = Channel::from_shared(format!("http://{addr}"))
            .expect("url")
            .connect()
            .await
        {
            let mut health = HealthClient::new(channel);
            let request = tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            };
            if health.check(request).await.is_ok() {
                return;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "controller did not serve within 30 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A plain HTTP/1.1 GET (the metrics endpoint), the whole response.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    response
}

/// The current plan (which must exist).
pub async fn current_plan(clients: &mut Clients) -> pb::Plan {
    clients
        .plans
        .get_current_plan(pb::GetCurrentPlanRequest {})
        .await
        .expect("current plan")
        .into_inner()
        .plan
        .expect("a plan")
}

/// A free TCP port on 127.0.0.1 (free when asked), for a child process to
/// listen on. Below the kernel's ephemeral range (32768 and up by
/// default): between this call and the child's bind, any other socket
/// bound to port 0 or connecting out from 127.0.0.1 (the other tests'
/// controllers and clients) may take a port from that range, and a test
/// then talks to the wrong server or its child cannot listen.
pub fn free_port() -> SocketAddr {
    use std::sync::atomic::{AtomicU64, Ordering};
    const FIRST: u64 = 20_000;
    const SPAN: u64 = 12_000;
    static CALLS: AtomicU64 = AtomicU64::new(0);
    // Different processes and calls start at different ports.
    let start = u64::from(std::process::id()).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40;
    let call = CALLS.fetch_add(1, Ordering::Relaxed);
    for attempt in 0..SPAN {
        // 7919 is prime to SPAN: every port of the span comes up once.
        let port = FIRST + (start + call * 7_919 + attempt * 7_919) % SPAN;
        if let Ok(listener) = std::net::TcpListener::bind(("127.0.0.1", port as u16)) {
            return listener.local_addr().expect("addr");
        }
    }
    panic!("no free TCP port on 127.0.0.1 in {FIRST}..{}", FIRST + SPAN);
}

/// The `aiwan controller` binary run with the agents driver, killed on
/// drop.
pub struct AgentsController {
    pub child: std::process::Child,
    pub addr: SocketAddr,
    pub metrics: SocketAddr,
}

impl Drop for AgentsController {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl AgentsController {
    /// Starts `aiwan controller` on `addr` with its data in `dir`, the
    /// agents driver dialling `endpoint_template` (`{node}` for the node)
    /// every `interval`, logging to `dir/log_name`; waits until it serves.
    pub async fn spawn(
        dir: &std::path::Path,
        endpoint_template: &str,
        interval: std::time::Duration,
        addr: SocketAddr,
        log_name: &str,
    ) -> AgentsController {
        let config = dir.join("aiwan.toml");
        std::fs::write(
            &config,
            format!(
                "[southbound]\ndriver = \"agents\"\nreconcile_interval_ms = {}\n\
                 agent_timeout_ms = 2000\ncounters_interval_ms = 200\n\
                 agent_endpoint_template = \"{endpoint_template}\"\n",
                interval.as_millis(),
            ),
        )
        .expect("config");
        let log = std::fs::File::create(dir.join(log_name)).expect("log file");
        let metrics = free_port();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_aiwan"))
            .arg("controller")
            .arg("--config")
            .arg(&config)
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--metrics-listen")
            .arg(metrics.to_string())
            .arg("--data-dir")
            .arg(dir)
            .arg("--bootstrap-token")
            .arg(format!("admin:{ADMIN_SECRET}"))
            .env("RUST_LOG", "info")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn aiwan controller");
        let mut controller = AgentsController {
            child,
            addr,
            metrics,
        };
        wait_until_serving(&mut controller.child, addr, &dir.join(log_name)).await;
        controller
    }
}

/// A job of `class` from site `from` to site `to` at `rate_bps`.
pub fn site_job(class: pb::TrafficClass, from: &str, to: &str, rate_bps: i64) -> pb::Job {
    let site = |name: &str| pb::Endpoint {
        kind: Some(pb::endpoint::Kind::Site(format!("sites/{name}"))),
    };
    pb::Job {
        tenant: "team-a".into(),
        traffic_class: class as i32,
        sources: vec![site(from)],
        destinations: vec![site(to)],
        rate_bps,
        priority: 10,
        ..pb::Job::default()
    }
}

/// Creates job `id` (which must be admitted).
pub async fn create_job(clients: &mut Clients, id: &str, job: pb::Job) {
    clients
        .intents
        .create_job(pb::CreateJobRequest {
            job_id: id.into(),
            job: Some(job),
        })
        .await
        .unwrap_or_else(|status| panic!("create job {id}: {status}"));
}

/// Waits until plan `version` is current with `status`.
pub async fn wait_for_plan(
    clients: &mut Clients,
    version: i64,
    status: pb::PlanStatus,
    within: std::time::Duration,
    log: &std::path::Path,
) -> pb::Plan {
    let deadline = std::time::Instant::now() + within;
    loop {
        let plan = current_plan(clients).await;
        if plan.version == version && plan.status == status as i32 {
            return plan;
        }
        if std::time::Instant::now() > deadline {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            panic!(
                "plan {version} never became {status:?} in {within:?}: {plan:?}\ncontroller log (newest first):\n{}",
                tail.join("\n")
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
