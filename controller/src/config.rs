//! Controller configuration: defaults, then the TOML file, then `AIWAN_*`
//! environment variables, then command-line flags, each overriding the one
//! before.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::auth::Role;

/// Default gRPC listen address: loopback, so a fresh install exposes nothing.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";
/// Default Prometheus listen address.
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9185";

/// Why a configuration cannot be used. Each variant names the setting.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{setting}: {reason}")]
    Invalid { setting: String, reason: String },
}

fn invalid(setting: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        setting: setting.to_string(),
        reason: reason.into(),
    }
}

/// The controller's settings, as written in `aiwan.toml`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ControllerConfig {
    /// gRPC listen address.
    pub listen: SocketAddr,
    /// Prometheus `/metrics` listen address; the endpoint is off when unset.
    pub metrics_listen: Option<SocketAddr>,
    /// Where the SQLite database and other state live.
    pub data_dir: PathBuf,
    /// `sqlite://...` or `postgres://...`; SQLite under `data_dir` when unset.
    pub database_url: Option<String>,
    /// A token created (or updated) at start, `ROLE:TOKEN`, so that a fresh
    /// install can be administered.
    pub bootstrap_token: Option<String>,
    /// A file holding `ROLE:TOKEN` (first line), instead of the token here.
    pub bootstrap_token_file: Option<PathBuf>,
    /// Serve plaintext gRPC on a non-loopback `listen` address.
    pub insecure_listen: bool,
    pub tls: TlsConfig,
    pub log: LogConfig,
    /// Flow collectors and the telemetry store.
    pub collector: CollectorConfig,
    /// How plans reach the routers.
    pub southbound: SouthboundConfig,
    /// Telemetry-driven re-planning.
    pub closed_loop: ClosedLoopConfig,
    /// Limits of the gRPC API.
    pub api: ApiLimits,
    /// What happens to jobs whose rate cannot all be guaranteed.
    pub admission: AdmissionConfig,
    /// How volume jobs are scheduled against their deadlines.
    pub schedule: ScheduleConfig,
    /// Tenants' weights and quotas.
    pub tenants: TenantsConfig,
}

/// Admission of AI jobs: the policy for a job that names none, per tenant
/// or for all, and how often queued jobs are looked at again.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AdmissionConfig {
    /// `admit-partial`, `reject` or `queue`.
    pub default_policy: crate::model::AdmissionPolicy,
    /// Per tenant, overriding `default_policy`.
    pub tenant_policies: std::collections::BTreeMap<String, crate::model::AdmissionPolicy>,
    /// Queued jobs are admitted, oldest first, once all of them fits; this
    /// often they are looked at again.
    pub requeue_interval_ms: u64,
}

impl Default for AdmissionConfig {
    fn default() -> AdmissionConfig {
        AdmissionConfig {
            default_policy: crate::model::AdmissionPolicy::AdmitPartial,
            tenant_policies: std::collections::BTreeMap::new(),
            requeue_interval_ms: 5_000,
        }
    }
}

impl AdmissionConfig {
    /// The policy of a job of `tenant` that names none.
    pub fn policy_for(&self, tenant: &str) -> crate::model::AdmissionPolicy {
        self.tenant_policies
            .get(tenant)
            .copied()
            .unwrap_or(self.default_policy)
    }

    pub fn check(&self) -> Result<(), ConfigError> {
        if self.tenant_policies.len() > 100_000 {
            return Err(invalid("admission.tenant_policies", "at most 100000"));
        }
        if let Some(tenant) = self
            .tenant_policies
            .keys()
            .find(|t| t.is_empty() || t.len() > 63)
        {
            return Err(invalid(
                "admission.tenant_policies",
                format!("tenant {tenant:?}: 1 to 63 characters"),
            ));
        }
        if !(100..=3_600_000).contains(&self.requeue_interval_ms) {
            return Err(invalid(
                "admission.requeue_interval_ms",
                "must be from 100 to 3600000",
            ));
        }
        Ok(())
    }
}

/// Volume jobs' schedules: the calendar's slices (`aiwan_planner::schedule`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ScheduleConfig {
    /// The shortest slice of the calendar; longer when the furthest
    /// deadline needs more than `max_slices`.
    pub slice_ms: i64,
    pub max_slices: usize,
}

impl Default for ScheduleConfig {
    fn default() -> ScheduleConfig {
        ScheduleConfig {
            slice_ms: 10_000,
            max_slices: 48,
        }
    }
}

impl ScheduleConfig {
    pub fn check(&self) -> Result<(), ConfigError> {
        if !(1_000..=3_600_000).contains(&self.slice_ms) {
            return Err(invalid("schedule.slice_ms", "must be from 1000 to 3600000"));
        }
        if !(2..=500).contains(&self.max_slices) {
            return Err(invalid("schedule.max_slices", "must be from 2 to 500"));
        }
        Ok(())
    }
}

/// How tenants share what the network can guarantee.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TenantsConfig {
    /// A tenant's weight (1 when not listed): when volume jobs cannot all
    /// meet their deadlines, every tenant moves at least the same share of
    /// its bytes by them, times its weight.
    pub weights: std::collections::BTreeMap<String, f64>,
    /// The most a tenant is guaranteed at once, bit/s: admission gives its
    /// ai-sync and ai-bulk jobs no more together, and its volume jobs'
    /// schedules no more in any slice.
    pub quota_bps: std::collections::BTreeMap<String, i64>,
}

impl TenantsConfig {
    pub fn weight_of(&self, tenant: &str) -> f64 {
        self.weights.get(tenant).copied().unwrap_or(1.0)
    }

    pub fn quota_of(&self, tenant: &str) -> Option<i64> {
        self.quota_bps.get(tenant).copied()
    }

    pub fn check(&self) -> Result<(), ConfigError> {
        if self.weights.len() + self.quota_bps.len() > 100_000 {
            return Err(invalid("tenants", "at most 100000 tenants listed"));
        }
        let mut names = self.weights.keys().chain(self.quota_bps.keys());
        if let Some(tenant) = names.find(|t| t.is_empty() || t.len() > 63) {
            return Err(invalid(
                "tenants",
                format!("tenant {tenant:?}: 1 to 63 characters"),
            ));
        }
        if let Some((tenant, _)) = self
            .weights
            .iter()
            .find(|(_, w)| !(w.is_finite() && **w > 0.0 && **w <= 1e6))
        {
            return Err(invalid(
                "tenants.weights",
                format!("tenant {tenant:?}: a weight above 0, at most 1000000"),
            ));
        }
        if let Some((tenant, _)) = self.quota_bps.iter().find(|(_, q)| **q < 0) {
            return Err(invalid(
                "tenants.quota_bps",
                format!("tenant {tenant:?}: must not be negative"),
            ));
        }
        Ok(())
    }
}

/// What one client can take of the gRPC server.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ApiLimits {
    /// Concurrent HTTP/2 streams (calls, watches included) per connection.
    pub max_concurrent_streams: u32,
    /// Requests handled at once per connection (the rest wait).
    pub concurrency_per_connection: usize,
    /// Longest time a unary call may take (watch streams are not cut).
    pub request_timeout_ms: u64,
    /// Largest request message, bytes.
    pub max_message_bytes: usize,
    /// HTTP/2 keepalive pings, and how long a ping may go unanswered before
    /// the connection is closed.
    pub keepalive_interval_ms: u64,
    pub keepalive_timeout_ms: u64,
}

impl Default for ApiLimits {
    fn default() -> ApiLimits {
        ApiLimits {
            max_concurrent_streams: 128,
            concurrency_per_connection: 64,
            request_timeout_ms: 30_000,
            max_message_bytes: 16 << 20,
            keepalive_interval_ms: 30_000,
            keepalive_timeout_ms: 10_000,
        }
    }
}

/// The closed loop: measured demand, forecast, re-planning policy. It runs
/// when the controller has collectors; `mode` says what it may do.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ClosedLoopConfig {
    /// `off` (measure and forecast only), `recommend` (store re-plans as
    /// proposals) or `auto` (apply them).
    pub mode: crate::closed_loop::LoopMode,
    /// The telemetry interval planned on: 10000 reads the store's 10 s
    /// tier, shorter intervals (1000 at least) its 1 s tier.
    pub interval_ms: u64,
    /// Predicted utilisation at which a link counts as congested.
    pub congestion_threshold: f64,
    /// Below this (predicted MLU) a congestion re-plan may fire again.
    pub clear_threshold: f64,
    /// A link whose chance of exceeding the threshold reaches this counts
    /// as congested too.
    pub congestion_probability: f64,
    /// Re-plan when a new plan's predicted MLU is lower by this share...
    pub improvement_margin: f64,
    /// ...and the current one's is at least this.
    pub improvement_floor: f64,
    /// Never two re-plans closer than this.
    pub min_replan_interval_ms: u64,
    /// Routes (a router's next hops for a destination) one re-plan may
    /// change; 0 for no limit.
    pub max_route_changes: usize,
    /// Intervals the forecaster learns from.
    pub history: usize,
    /// How a candidate plan serves what may come next: `aiwan` (the
    /// scenario method `aiwan eval` scores) or `worst-window`.
    pub method: crate::closed_loop::predict::PlanningMethod,
    /// Past intervals a plan serves (at most `history` of them).
    pub window: usize,
    /// A traffic class with at least this many node pairs free to take
    /// any path (no pin, no latency bound) takes its candidate paths on
    /// demand (each pair's shortest first, more where the solver's prices
    /// ask, kept between re-plans) instead of the k shortest of every
    /// pair up front; 0: never.
    pub paths_on_demand_from: usize,
    /// Which node each flow exporter stands for.
    pub exporters: Vec<crate::closed_loop::demand::ExporterMapping>,
}

impl ClosedLoopConfig {
    /// An empty candidate-path cache that takes paths on demand as
    /// `paths_on_demand_from` says.
    pub fn path_cache(&self) -> aiwan_planner::classes::PathCache {
        let mut cache = aiwan_planner::classes::PathCache::default();
        cache.on_demand_from = match self.paths_on_demand_from {
            0 => usize::MAX,
            from => from,
        };
        cache
    }
}

impl Default for ClosedLoopConfig {
    fn default() -> ClosedLoopConfig {
        ClosedLoopConfig {
            mode: crate::closed_loop::LoopMode::Off,
            interval_ms: 10_000,
            congestion_threshold: 0.8,
            clear_threshold: 0.7,
            congestion_probability: 0.5,
            improvement_margin: 0.1,
            improvement_floor: 0.5,
            min_replan_interval_ms: 30_000,
            max_route_changes: 1000,
            history: 48,
            method: crate::closed_loop::predict::PlanningMethod::Aiwan,
            window: 48,
            paths_on_demand_from: aiwan_planner::classes::ON_DEMAND_MIN_DEMANDS,
            exporters: Vec::new(),
        }
    }
}

/// What pushes plans to the routers. Off until `driver` is set: plans are
/// then stored as the desired state and stay `applying`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SouthboundConfig {
    pub driver: Option<SouthboundDriver>,
    /// Time between reconcile rounds (a new plan starts one at once).
    pub reconcile_interval_ms: u64,
    /// How long one call to an agent may take before it counts as down.
    pub agent_timeout_ms: u64,
    /// Each node's agent endpoint, `unix:/path.sock` or `http://host:port`.
    pub agents: std::collections::BTreeMap<String, String>,
    /// The endpoint of nodes `agents` does not list, `{node}` replaced by
    /// the node's id: `unix:/run/aiwan/lab/ai-wan/{node}.sock`.
    pub agent_endpoint_template: Option<String>,
    /// Time between the interface counter samples each agent streams into
    /// the telemetry store (link utilisation); 0 turns that off.
    pub counters_interval_ms: u64,
    /// Shape each class on the links a plan shares between ai-sync and
    /// other traffic (an htb root qdisc per interface). Off where the
    /// routers shape their links themselves: an agent never replaces a
    /// root qdisc it did not make, so a plan with limits would be refused
    /// there.
    pub rate_limits: bool,
    /// Mutual TLS for `https://` agent endpoints (PEM files): the CA the
    /// agents' certificates chain to, and the controller's client
    /// certificate and key. All three or none.
    pub agent_tls_ca_file: Option<std::path::PathBuf>,
    pub agent_tls_cert_file: Option<std::path::PathBuf>,
    pub agent_tls_key_file: Option<std::path::PathBuf>,
}

/// The driver behind the reconcile loop.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum SouthboundDriver {
    /// The router agents (`aiwan agent`) over gRPC.
    Agents,
    /// The flow-level simulated dataplane: for the demo and large tests,
    /// not a substitute for routers.
    Simulated,
}

impl Default for SouthboundConfig {
    fn default() -> SouthboundConfig {
        SouthboundConfig {
            driver: None,
            reconcile_interval_ms: 1000,
            agent_timeout_ms: 5000,
            agents: std::collections::BTreeMap::new(),
            agent_endpoint_template: None,
            counters_interval_ms: 1000,
            rate_limits: true,
            agent_tls_ca_file: None,
            agent_tls_cert_file: None,
            agent_tls_key_file: None,
        }
    }
}

/// The collectors the controller runs, and the store they feed. Off until a
/// listen address is set.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CollectorConfig {
    /// NetFlow v5/v9 and IPFIX listen address (2055 by convention).
    pub netflow_listen: Option<SocketAddr>,
    /// sFlow listen address (6343 by convention).
    pub sflow_listen: Option<SocketAddr>,
    /// Sockets and decoders per listen address; 0 for one per core.
    pub shards: usize,
    /// Socket receive buffer to ask the kernel for.
    pub receive_buffer_bytes: usize,
    /// Tell exporters behind one address apart by source port too.
    pub key_by_source_port: bool,
    /// Retention, memory budget and traffic classes of the telemetry
    /// store. Sites come from the stored topology.
    pub store: aiwan_collectors::store::StoreConfig,
    /// What one sender may make the collectors hold.
    pub limits: CollectorLimits,
    /// Bind the listeners inside this network namespace (a name under
    /// /run/netns, or a path): a management namespace the exporters
    /// reach. Needs CAP_SYS_ADMIN.
    pub netns: Option<String>,
}

/// Bounds on what senders can make the NetFlow/IPFIX collectors hold, per
/// shard; refusals are counted as decode errors of the sender.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CollectorLimits {
    /// Exporter keys tracked at most...
    pub max_exporters: usize,
    /// ...a new one taking the place of one idle this long.
    pub exporter_idle_ms: u64,
    pub max_templates_per_exporter: usize,
    pub max_templates_total: usize,
    pub max_template_fields: usize,
    /// Data sets held while their template is missing: per exporter, all
    /// together, and for how long.
    pub pending_max_bytes: usize,
    pub pending_max_total_bytes: usize,
    pub pending_max_age_ms: u64,
    /// sFlow agent keys (agent address and sub-agent) tracked at most, a
    /// new one taking the place of one idle `sflow_agent_idle_ms`.
    pub max_sflow_agents: usize,
    pub sflow_agent_idle_ms: u64,
}

impl Default for CollectorLimits {
    fn default() -> CollectorLimits {
        let d = aiwan_collectors::netflow::NetflowOptions::default();
        CollectorLimits {
            max_exporters: d.max_exporters,
            exporter_idle_ms: u64::try_from(d.exporter_idle_ms).unwrap_or(0),
            max_templates_per_exporter: d.max_templates_per_exporter,
            max_templates_total: d.max_templates_total,
            max_template_fields: d.max_template_fields,
            pending_max_bytes: d.pending_max_bytes,
            pending_max_total_bytes: d.pending_max_total_bytes,
            pending_max_age_ms: u64::try_from(d.pending_max_age_ms).unwrap_or(0),
            max_sflow_agents: aiwan_collectors::sflow::MAX_AGENTS,
            sflow_agent_idle_ms: u64::try_from(aiwan_collectors::sflow::AGENT_IDLE_MS).unwrap_or(0),
        }
    }
}

impl CollectorLimits {
    /// The sFlow decoder's options.
    pub fn sflow(&self, key_by_source_port: bool) -> aiwan_collectors::sflow::SflowOptions {
        aiwan_collectors::sflow::SflowOptions {
            key_by_source_port,
            max_agents: self.max_sflow_agents,
            agent_idle_ms: i64::try_from(self.sflow_agent_idle_ms).unwrap_or(i64::MAX),
        }
    }

    /// The decoder's options.
    pub fn netflow(&self, key_by_source_port: bool) -> aiwan_collectors::netflow::NetflowOptions {
        aiwan_collectors::netflow::NetflowOptions {
            key_by_source_port,
            pending_max_bytes: self.pending_max_bytes,
            pending_max_age_ms: i64::try_from(self.pending_max_age_ms).unwrap_or(i64::MAX),
            max_exporters: self.max_exporters,
            exporter_idle_ms: i64::try_from(self.exporter_idle_ms).unwrap_or(i64::MAX),
            max_templates_per_exporter: self.max_templates_per_exporter,
            max_templates_total: self.max_templates_total,
            max_template_fields: self
                .max_template_fields
                .min(aiwan_collectors::netflow::template::MAX_TEMPLATE_FIELDS),
            pending_max_total_bytes: self.pending_max_total_bytes,
            generic_records_only: false,
        }
    }
}

impl Default for CollectorConfig {
    fn default() -> CollectorConfig {
        CollectorConfig {
            netflow_listen: None,
            sflow_listen: None,
            shards: 0,
            receive_buffer_bytes: 32 << 20,
            key_by_source_port: false,
            store: aiwan_collectors::store::StoreConfig::default(),
            limits: CollectorLimits::default(),
            netns: None,
        }
    }
}

/// TLS for the gRPC server; plain HTTP/2 when neither file is set.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert_file: Option<PathBuf>,
    /// PEM private key.
    pub key_file: Option<PathBuf>,
}

/// Log output.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `plain` or `json`.
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `aiwan_controller=debug,info`;
    /// `RUST_LOG` wins when set.
    pub level: String,
}

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Plain,
    Json,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Plain,
            level: "info".to_string(),
        }
    }
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            listen: DEFAULT_LISTEN
                .parse()
                .unwrap_or_else(|_| unreachable_addr()),
            metrics_listen: DEFAULT_METRICS_LISTEN.parse().ok(),
            data_dir: PathBuf::from(".aiwan"),
            database_url: None,
            bootstrap_token: None,
            bootstrap_token_file: None,
            insecure_listen: false,
            tls: TlsConfig::default(),
            log: LogConfig::default(),
            collector: CollectorConfig::default(),
            southbound: SouthboundConfig::default(),
            closed_loop: ClosedLoopConfig::default(),
            api: ApiLimits::default(),
            admission: AdmissionConfig::default(),
            schedule: ScheduleConfig::default(),
            tenants: TenantsConfig::default(),
        }
    }
}

// The default addresses are constants that parse; this only satisfies the
// type checker without a panic path.
fn unreachable_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 50051))
}

/// Settings given on the command line; `None` leaves the lower layers alone.
#[derive(Debug, Clone, Default)]
pub struct ConfigOverrides {
    pub listen: Option<SocketAddr>,
    pub metrics_listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    pub database_url: Option<String>,
    pub bootstrap_token: Option<String>,
    pub insecure_listen: bool,
    pub netflow_listen: Option<SocketAddr>,
    pub sflow_listen: Option<SocketAddr>,
}

/// A parsed `ROLE:TOKEN`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapToken {
    pub role: Role,
    pub secret: String,
}

/// Shortest secret accepted for a bootstrap token.
pub const MIN_SECRET_LEN: usize = 16;

impl BootstrapToken {
    /// Parses `ROLE:TOKEN`; the secret must be at least 16 characters.
    pub fn parse(text: &str) -> Result<BootstrapToken, ConfigError> {
        let setting = "bootstrap_token";
        let (role, secret) = text
            .split_once(':')
            .ok_or_else(|| invalid(setting, "expected ROLE:TOKEN, for example admin:<secret>"))?;
        let role = Role::parse(role).ok_or_else(|| {
            invalid(
                setting,
                format!("unknown role {role:?}; use viewer, operator or admin"),
            )
        })?;
        if secret.len() < MIN_SECRET_LEN {
            return Err(invalid(
                setting,
                format!("the token must be at least {MIN_SECRET_LEN} characters"),
            ));
        }
        if secret.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid(setting, "the token must not contain whitespace"));
        }
        Ok(BootstrapToken {
            role,
            secret: secret.to_string(),
        })
    }
}

impl ClosedLoopConfig {
    /// Checks the loop's settings; each error names the setting.
    pub fn check(&self) -> Result<(), ConfigError> {
        let setting = |name: &str| format!("closed_loop.{name}");
        if !(1000..=3_600_000).contains(&self.interval_ms) {
            return Err(invalid(
                &setting("interval_ms"),
                "must be from 1000 to 3600000",
            ));
        }
        if !self.interval_ms.is_multiple_of(1000) {
            return Err(invalid(
                &setting("interval_ms"),
                "must be whole seconds (the store's buckets are)",
            ));
        }
        for (name, value) in [
            ("congestion_threshold", self.congestion_threshold),
            ("clear_threshold", self.clear_threshold),
        ] {
            if !(value.is_finite() && value > 0.0 && value <= 10.0) {
                return Err(invalid(&setting(name), "must be above 0 and at most 10"));
            }
        }
        if self.clear_threshold > self.congestion_threshold {
            return Err(invalid(
                &setting("clear_threshold"),
                "must not be above congestion_threshold (hysteresis)",
            ));
        }
        for (name, value) in [
            ("congestion_probability", self.congestion_probability),
            ("improvement_margin", self.improvement_margin),
            ("improvement_floor", self.improvement_floor),
        ] {
            if !(value.is_finite() && (0.0..=1.0).contains(&value)) {
                return Err(invalid(&setting(name), "must be from 0 to 1"));
            }
        }
        if self.min_replan_interval_ms > 86_400_000 {
            return Err(invalid(
                &setting("min_replan_interval_ms"),
                "must be at most a day (86400000)",
            ));
        }
        if !(6..=1440).contains(&self.history) {
            return Err(invalid(&setting("history"), "must be from 6 to 1440"));
        }
        if !(1..=1440).contains(&self.window) {
            return Err(invalid(&setting("window"), "must be from 1 to 1440"));
        }
        if self.exporters.len() > 100_000 {
            return Err(invalid(&setting("exporters"), "at most 100000"));
        }
        Ok(())
    }
}

impl ControllerConfig {
    /// Reads a TOML file on top of the defaults.
    pub fn from_file(path: &Path) -> Result<ControllerConfig, ConfigError> {
        let read_error = |source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        };
        let size = std::fs::metadata(path).map_err(read_error)?.len();
        if size > MAX_CONFIG_BYTES {
            return Err(ConfigError::Parse {
                path: path.to_path_buf(),
                message: format!(
                    "{size} bytes is more than the {MAX_CONFIG_BYTES} a configuration file may have"
                ),
            });
        }
        let text = std::fs::read_to_string(path).map_err(read_error)?;
        Self::from_toml(&text).map_err(|message| ConfigError::Parse {
            path: path.to_path_buf(),
            message,
        })
    }

    /// Parses TOML text on top of the defaults.
    pub fn from_toml(text: &str) -> Result<ControllerConfig, String> {
        toml::from_str(text).map_err(|error| error.to_string().trim_end().to_string())
    }

    /// Applies `AIWAN_*` variables read through `lookup`.
    pub fn apply_env(
        &mut self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        if let Some(value) = lookup("AIWAN_LISTEN") {
            self.listen = parse_addr("AIWAN_LISTEN", &value)?;
        }
        if let Some(value) = lookup("AIWAN_METRICS_LISTEN") {
            self.metrics_listen = if value.is_empty() {
                None
            } else {
                Some(parse_addr("AIWAN_METRICS_LISTEN", &value)?)
            };
        }
        if let Some(value) = lookup("AIWAN_DATA_DIR") {
            self.data_dir = PathBuf::from(value);
        }
        if let Some(value) = lookup("AIWAN_DATABASE_URL") {
            self.database_url = Some(value);
        }
        if let Some(value) = lookup("AIWAN_BOOTSTRAP_TOKEN") {
            self.bootstrap_token = Some(value);
        }
        if let Some(value) = lookup("AIWAN_BOOTSTRAP_TOKEN_FILE") {
            self.bootstrap_token_file = Some(PathBuf::from(value));
        }
        if let Some(value) = lookup("AIWAN_TLS_CERT_FILE") {
            self.tls.cert_file = Some(PathBuf::from(value));
        }
        if let Some(value) = lookup("AIWAN_TLS_KEY_FILE") {
            self.tls.key_file = Some(PathBuf::from(value));
        }
        if let Some(value) = lookup("AIWAN_LOG_FORMAT") {
            self.log.format = match value.as_str() {
                "plain" => LogFormat::Plain,
                "json" => LogFormat::Json,
                _ => {
                    return Err(invalid(
                        "AIWAN_LOG_FORMAT",
                        format!("{value:?} is not plain or json"),
                    ));
                }
            };
        }
        if let Some(value) = lookup("AIWAN_LOG_LEVEL") {
            self.log.level = value;
        }
        if let Some(value) = lookup("AIWAN_NETFLOW_LISTEN") {
            self.collector.netflow_listen = Some(parse_addr("AIWAN_NETFLOW_LISTEN", &value)?);
        }
        if let Some(value) = lookup("AIWAN_SFLOW_LISTEN") {
            self.collector.sflow_listen = Some(parse_addr("AIWAN_SFLOW_LISTEN", &value)?);
        }
        Ok(())
    }

    /// Applies command-line flags.
    pub fn apply_overrides(&mut self, overrides: &ConfigOverrides) {
        if let Some(listen) = overrides.listen {
            self.listen = listen;
        }
        if let Some(listen) = overrides.metrics_listen {
            self.metrics_listen = Some(listen);
        }
        if let Some(dir) = &overrides.data_dir {
            self.data_dir = dir.clone();
        }
        if let Some(url) = &overrides.database_url {
            self.database_url = Some(url.clone());
        }
        if let Some(token) = &overrides.bootstrap_token {
            self.bootstrap_token = Some(token.clone());
            self.bootstrap_token_file = None;
        }
        if overrides.insecure_listen {
            self.insecure_listen = true;
        }
        if let Some(listen) = overrides.netflow_listen {
            self.collector.netflow_listen = Some(listen);
        }
        if let Some(listen) = overrides.sflow_listen {
            self.collector.sflow_listen = Some(listen);
        }
    }

    /// The full chain: defaults, file, environment, flags; then checks.
    pub fn load(
        file: Option<&Path>,
        lookup: impl Fn(&str) -> Option<String>,
        overrides: &ConfigOverrides,
    ) -> Result<ControllerConfig, ConfigError> {
        let mut config = match file {
            Some(path) => ControllerConfig::from_file(path)?,
            None => ControllerConfig::default(),
        };
        config.apply_env(lookup)?;
        config.apply_overrides(overrides);
        if config.bootstrap_token.is_none()
            && let Some(path) = &config.bootstrap_token_file
        {
            let text = std::fs::read_to_string(path)
                .map_err(|e| invalid("bootstrap_token_file", format!("{}: {e}", path.display())))?;
            let token = text.lines().next().unwrap_or_default().trim();
            if token.is_empty() {
                return Err(invalid(
                    "bootstrap_token_file",
                    format!("{} is empty", path.display()),
                ));
            }
            config.bootstrap_token = Some(token.to_string());
        }
        config.check()?;
        Ok(config)
    }

    /// Checks settings that parse but cannot work together.
    pub fn check(&self) -> Result<(), ConfigError> {
        if let Some(token) = &self.bootstrap_token {
            BootstrapToken::parse(token)?;
        }
        let tls = self.tls.cert_file.is_some() && self.tls.key_file.is_some();
        if !tls && !self.listen.ip().is_loopback() && !self.insecure_listen {
            return Err(invalid(
                "listen",
                format!(
                    "{} is not a loopback address and no TLS is configured (tls.cert_file, \
                     tls.key_file): tokens would cross the network readable; configure TLS, \
                     or set insecure_listen (--insecure-listen) to serve plaintext anyway",
                    self.listen
                ),
            ));
        }
        if let Some(url) = &self.database_url
            && !(url.starts_with("sqlite:")
                || url.starts_with("postgres://")
                || url.starts_with("postgresql://"))
        {
            return Err(invalid(
                "database_url",
                "must start with sqlite:, postgres:// or postgresql://",
            ));
        }
        if self.southbound.reconcile_interval_ms < 100 {
            return Err(invalid(
                "southbound.reconcile_interval_ms",
                "must be at least 100",
            ));
        }
        if self.southbound.counters_interval_ms != 0
            && !(100..=3_600_000).contains(&self.southbound.counters_interval_ms)
        {
            return Err(invalid(
                "southbound.counters_interval_ms",
                "must be 0 (off) or from 100 to 3600000",
            ));
        }
        self.closed_loop.check()?;
        self.admission.check()?;
        self.schedule.check()?;
        self.tenants.check()?;
        let api = &self.api;
        if api.max_concurrent_streams == 0 || api.concurrency_per_connection == 0 {
            return Err(invalid(
                "api.max_concurrent_streams",
                "streams and concurrency must be positive",
            ));
        }
        if !(100..=3_600_000).contains(&api.request_timeout_ms) {
            return Err(invalid(
                "api.request_timeout_ms",
                "must be from 100 to 3600000",
            ));
        }
        if !(1024..=(1 << 30)).contains(&api.max_message_bytes) {
            return Err(invalid(
                "api.max_message_bytes",
                "must be from 1 KiB to 1 GiB",
            ));
        }
        if api.keepalive_interval_ms < 1000 || api.keepalive_timeout_ms < 1000 {
            return Err(invalid(
                "api.keepalive_interval_ms",
                "keepalive interval and timeout must be at least 1000",
            ));
        }
        let agent_tls = [
            (
                "southbound.agent_tls_ca_file",
                &self.southbound.agent_tls_ca_file,
            ),
            (
                "southbound.agent_tls_cert_file",
                &self.southbound.agent_tls_cert_file,
            ),
            (
                "southbound.agent_tls_key_file",
                &self.southbound.agent_tls_key_file,
            ),
        ];
        if agent_tls.iter().any(|(_, file)| file.is_some())
            && let Some((missing, _)) = agent_tls.iter().find(|(_, file)| file.is_none())
        {
            return Err(invalid(
                missing,
                "required with the other southbound.agent_tls_* files (mutual TLS needs all three)",
            ));
        }
        if self.southbound.agent_timeout_ms == 0 {
            return Err(invalid("southbound.agent_timeout_ms", "must be positive"));
        }
        let limits = &self.collector.limits;
        for (name, value) in [
            ("collector.limits.max_exporters", limits.max_exporters),
            ("collector.limits.max_sflow_agents", limits.max_sflow_agents),
            (
                "collector.limits.max_templates_per_exporter",
                limits.max_templates_per_exporter,
            ),
        ] {
            if value == 0 {
                return Err(invalid(name, "0 would refuse every sender".to_string()));
            }
        }
        if let Err(error) = self.collector.store.check() {
            return Err(invalid("collector.store", error.to_string()));
        }
        if let (Some(netflow), Some(sflow)) =
            (self.collector.netflow_listen, self.collector.sflow_listen)
            && netflow == sflow
            && netflow.port() != 0
        {
            return Err(invalid(
                "collector.sflow_listen",
                format!("{sflow} is also collector.netflow_listen"),
            ));
        }
        match (&self.tls.cert_file, &self.tls.key_file) {
            (Some(_), None) => Err(invalid(
                "tls.key_file",
                "required when tls.cert_file is set",
            )),
            (None, Some(_)) => Err(invalid(
                "tls.cert_file",
                "required when tls.key_file is set",
            )),
            _ => Ok(()),
        }
    }

    /// The database to open: the configured URL, or SQLite in the data
    /// directory (created if missing).
    pub fn effective_database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("aiwan.db").display()
            ),
        }
    }
}

/// Largest configuration file read (a generous one is a few KB).
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

fn parse_addr(setting: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    value.parse().map_err(|_| {
        invalid(
            setting,
            format!("{value:?} is not an address like 127.0.0.1:50051"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_file_parses() {
        let text = include_str!("../../aiwan.example.toml");
        let config = ControllerConfig::from_toml(text).expect("example config");
        config.check().expect("example config checks");
        assert_eq!(config.listen.to_string(), "127.0.0.1:50051");
        assert_eq!(config.log.format, LogFormat::Plain);
        assert_eq!(config.southbound, SouthboundConfig::default());
        assert_eq!(config.schedule, ScheduleConfig::default());
        assert_eq!(config.closed_loop, ClosedLoopConfig::default());
    }

    #[test]
    fn paths_on_demand_are_set_by_the_loop_config_and_zero_turns_them_off() {
        let config = ControllerConfig::from_toml("[closed_loop]\npaths_on_demand_from = 500\n")
            .expect("toml");
        assert_eq!(config.closed_loop.path_cache().on_demand_from, 500);
        let off =
            ControllerConfig::from_toml("[closed_loop]\npaths_on_demand_from = 0\n").expect("toml");
        assert_eq!(off.closed_loop.path_cache().on_demand_from, usize::MAX);
        assert_eq!(
            ClosedLoopConfig::default().path_cache().on_demand_from,
            aiwan_planner::classes::ON_DEMAND_MIN_DEMANDS
        );
    }

    #[test]
    fn tenants_and_the_schedule_are_checked_by_name() {
        let config = ControllerConfig::from_toml(
            "[tenants.weights]\nvision = 2.0\n[tenants.quota_bps]\nresearch = 40000000000\n",
        )
        .expect("toml");
        config.check().expect("valid");
        assert_eq!(config.tenants.weight_of("vision"), 2.0);
        assert_eq!(config.tenants.weight_of("other"), 1.0);
        assert_eq!(config.tenants.quota_of("research"), Some(40_000_000_000));
        for (text, named) in [
            ("[tenants.weights]\nvision = 0.0\n", "tenants.weights"),
            ("[tenants.quota_bps]\nvision = -1\n", "tenants.quota_bps"),
            ("[schedule]\nslice_ms = 10\n", "schedule.slice_ms"),
            ("[schedule]\nmax_slices = 1\n", "schedule.max_slices"),
        ] {
            let error = ControllerConfig::from_toml(text)
                .expect("toml")
                .check()
                .expect_err(text)
                .to_string();
            assert!(error.contains(named), "{text}: {error}");
        }
    }

    #[test]
    fn collector_limits_reach_the_decoders_and_zero_is_refused() {
        let config = ControllerConfig::from_toml(
            "[collector.limits]\nmax_sflow_agents = 7\nsflow_agent_idle_ms = 1000\n",
        )
        .expect("toml");
        config.check().expect("valid");
        let sflow = config.collector.limits.sflow(true);
        assert_eq!((sflow.max_agents, sflow.agent_idle_ms), (7, 1000));
        assert!(sflow.key_by_source_port);
        let error = ControllerConfig::from_toml("[collector.limits]\nmax_sflow_agents = 0\n")
            .expect("toml")
            .check()
            .expect_err("zero agents")
            .to_string();
        assert!(
            error.contains("collector.limits.max_sflow_agents"),
            "{error}"
        );
    }

    #[test]
    fn southbound_intervals_are_checked() {
        let check = |toml: &str| {
            ControllerConfig::from_toml(toml)
                .expect("toml")
                .check()
                .map_err(|error| error.to_string())
        };
        assert!(check("[southbound]\ncounters_interval_ms = 0\n").is_ok());
        assert!(check("[southbound]\ncounters_interval_ms = 100\n").is_ok());
        let error = check("[southbound]\ncounters_interval_ms = 50\n").expect_err("too short");
        assert!(error.contains("southbound.counters_interval_ms"), "{error}");
        let error = check("[southbound]\nreconcile_interval_ms = 10\n").expect_err("too short");
        assert!(
            error.contains("southbound.reconcile_interval_ms"),
            "{error}"
        );
    }

    #[test]
    fn layers_override_in_order() {
        let file = ControllerConfig::from_toml(
            "listen = \"127.0.0.1:7000\"\ndata_dir = \"/var/lib/aiwan\"\n",
        )
        .expect("toml");
        let mut config = file;
        config
            .apply_env(|name| match name {
                "AIWAN_LISTEN" => Some("127.0.0.1:7001".into()),
                "AIWAN_DATABASE_URL" => Some("postgres://db/aiwan".into()),
                _ => None,
            })
            .expect("env");
        config.apply_overrides(&ConfigOverrides {
            database_url: Some("sqlite://x.db".into()),
            ..ConfigOverrides::default()
        });
        assert_eq!(config.listen.to_string(), "127.0.0.1:7001");
        assert_eq!(config.data_dir, PathBuf::from("/var/lib/aiwan"));
        assert_eq!(config.database_url.as_deref(), Some("sqlite://x.db"));
    }

    #[test]
    fn errors_name_the_setting() {
        let cases = [
            ("listen = 5", "invalid type"),
            ("lisen = \"127.0.0.1:1\"", "unknown field `lisen`"),
            ("[tls]\ncert_file = \"c.pem\"", "tls.key_file: required"),
            (
                "bootstrap_token = \"root:abcdefabcdefabcdef\"",
                "unknown role \"root\"",
            ),
            (
                "bootstrap_token = \"admin:short\"",
                "at least 16 characters",
            ),
            (
                "database_url = \"mysql://x\"",
                "database_url: must start with",
            ),
        ];
        for (text, expected) in cases {
            let error = match ControllerConfig::from_toml(text) {
                Err(message) => message,
                Ok(config) => config.check().expect_err(text).to_string(),
            };
            assert!(error.contains(expected), "{text}: {error}");
        }
        let mut config = ControllerConfig::default();
        let error = config
            .apply_env(|name| (name == "AIWAN_LISTEN").then(|| "nowhere".to_string()))
            .expect_err("bad env");
        assert!(error.to_string().starts_with("AIWAN_LISTEN: "), "{error}");
    }
}
