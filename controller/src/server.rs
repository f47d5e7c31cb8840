//! Starting and stopping the controller: database, bootstrap token, the gRPC
//! server with its layers, health, reflection and the metrics endpoint.

use std::net::SocketAddr;
use std::sync::Arc;

use aiwan_api::v1::admin_service_server::AdminServiceServer;
use aiwan_api::v1::event_service_server::EventServiceServer;
use aiwan_api::v1::intent_service_server::IntentServiceServer;
use aiwan_api::v1::plan_service_server::PlanServiceServer;
use aiwan_api::v1::telemetry_service_server::TelemetryServiceServer;
use aiwan_api::v1::topology_service_server::TopologyServiceServer;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Identity, Server, ServerTlsConfig};

use crate::auth::{AuthLayer, Authenticator};
use crate::config::{BootstrapToken, ControllerConfig};
use crate::metrics::{Metrics, MetricsLayer, bind_metrics, serve_metrics};
use crate::model::now_ms;
use crate::services::AppState;
use crate::services::admin::AdminApi;
use crate::services::event::EventApi;
use crate::services::intent::IntentApi;
use crate::services::plan::PlanApi;
use crate::services::telemetry::TelemetryApi;
use crate::services::topology::TopologyApi;
use crate::store::{Store, StoreError};

/// Why the controller could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open the database: {0}")]
    Store(#[from] StoreError),
    #[error("cannot read TLS file {path}: {source}")]
    TlsFile {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("TLS: {0}")]
    Tls(tonic::transport::Error),
    #[error("reflection service: {0}")]
    Reflection(tonic_reflection::server::Error),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("gRPC server: {0}")]
    Transport(tonic::transport::Error),
    #[error("server task: {0}")]
    Join(#[from] tokio::task::JoinError),
    #[error("collectors: {0}")]
    Collectors(#[from] aiwan_collectors::listener::ListenError),
    #[error("telemetry store: {0}")]
    TelemetryStore(aiwan_collectors::store::StoreError),
}

/// How long shutdown waits for open requests to finish.
pub const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A controller that is serving.
pub struct RunningController {
    /// The gRPC address actually bound (useful with port 0).
    pub grpc_addr: SocketAddr,
    /// The metrics address actually bound, when enabled.
    pub metrics_addr: Option<SocketAddr>,
    pub store: Store,
    /// The collectors and their telemetry store, when configured.
    pub telemetry: Option<aiwan_collectors::pipeline::Pipeline>,
    /// The simulated dataplane, when it is the southbound driver.
    pub simulated: Option<Arc<crate::southbound::simulated::SimulatedDataplane>>,
    /// The event stream.
    pub events: crate::events::EventBus,
    /// What the closed loop measured, predicted and did.
    pub closed_loop: crate::closed_loop::SharedView,
    reconciler: Option<JoinHandle<()>>,
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), ServeError>>,
}

impl RunningController {
    /// Stops accepting, ends watch streams, drains open requests (for at
    /// most [`DRAIN_TIMEOUT`]), closes the database.
    pub async fn shutdown(mut self) -> Result<(), ServeError> {
        self.stop.send_replace(true);
        let result = match tokio::time::timeout(DRAIN_TIMEOUT, &mut self.task).await {
            Ok(joined) => joined?,
            Err(_) => {
                tracing::warn!("requests still open after {DRAIN_TIMEOUT:?}; closing them");
                self.task.abort();
                Ok(())
            }
        };
        if let Some(reconciler) = self.reconciler.take() {
            let _ = reconciler.await;
        }
        if let Some(telemetry) = self.telemetry.take() {
            telemetry.stop().await;
        }
        self.store.close().await;
        result
    }

    /// Serves until `signal` resolves, then shuts down.
    pub async fn run_until(
        self,
        signal: impl std::future::Future<Output = ()>,
    ) -> Result<(), ServeError> {
        signal.await;
        self.shutdown().await
    }
}

/// The driver the configuration names, and the simulated dataplane when
/// that is it (the API and tests look at its link loads).
type Southbound = (
    Option<Arc<dyn crate::southbound::Driver>>,
    Option<Arc<crate::southbound::simulated::SimulatedDataplane>>,
);

fn southbound_driver(
    config: &ControllerConfig,
    topology: &aiwan_planner::Topology,
    endpoints: &crate::southbound::agents::AgentEndpoints,
) -> Southbound {
    use crate::config::SouthboundDriver;
    use crate::southbound::agents::AgentDriver;
    use crate::southbound::simulated::SimulatedDataplane;
    match config.southbound.driver {
        None => (None, None),
        Some(SouthboundDriver::Simulated) => {
            let simulated = Arc::new(SimulatedDataplane::new(topology.clone()));
            (Some(simulated.clone()), Some(simulated))
        }
        Some(SouthboundDriver::Agents) => {
            let timeout = std::time::Duration::from_millis(config.southbound.agent_timeout_ms);
            (
                Some(Arc::new(AgentDriver::new(endpoints.clone(), timeout))),
                None,
            )
        }
    }
}

/// Where the agents are, and the controller's TLS files for `https://`
/// ones, read now so that a missing file stops the start.
fn agent_endpoints(
    config: &ControllerConfig,
) -> Result<crate::southbound::agents::AgentEndpoints, ServeError> {
    let read = |path: &std::path::PathBuf| {
        std::fs::read(path).map_err(|source| ServeError::TlsFile {
            path: path.clone(),
            source,
        })
    };
    let southbound = &config.southbound;
    let tls = match (
        &southbound.agent_tls_ca_file,
        &southbound.agent_tls_cert_file,
        &southbound.agent_tls_key_file,
    ) {
        (Some(ca), Some(cert), Some(key)) => Some(aiwan_agent::ClientTls {
            ca_pem: read(ca)?,
            cert_pem: read(cert)?,
            key_pem: read(key)?,
        }),
        _ => None,
    };
    Ok(crate::southbound::agents::AgentEndpoints {
        by_node: southbound.agents.clone(),
        template: southbound.agent_endpoint_template.clone(),
        tls,
    })
}

/// Resolves on Ctrl-C or SIGTERM: how every long-running subcommand is
/// asked to stop (the agent's, which stops the same way).
pub use aiwan_agent::cli::shutdown_signal;

async fn stopped(mut stop: watch::Receiver<bool>) {
    // An error means the sender is gone, which also means stop.
    let _ = stop.wait_for(|stop| *stop).await;
}

/// Opens the database, prepares the services and starts serving.
pub async fn start(config: &ControllerConfig) -> Result<RunningController, ServeError> {
    config.check()?;
    if !config.listen.ip().is_loopback() && config.tls.cert_file.is_none() {
        tracing::warn!(
            listen = %config.listen,
            "serving plaintext gRPC on a non-loopback address (insecure_listen): bearer tokens cross the network readable"
        );
    }
    if config.database_url.is_none() {
        std::fs::create_dir_all(&config.data_dir).map_err(|source| ServeError::DataDir {
            path: config.data_dir.clone(),
            source,
        })?;
    }
    let store = Store::open(&config.effective_database_url()).await?;
    tracing::info!(backend = ?store.backend(), "database ready");
    match &config.bootstrap_token {
        Some(token) => {
            let token = BootstrapToken::parse(token)?;
            store
                .ensure_bootstrap_token(token.role, &token.secret, now_ms())
                .await?;
        }
        None => {
            if store.revoke_bootstrap_token(now_ms()).await? {
                tracing::warn!(
                    "the configuration names no bootstrap token: the stored one is revoked"
                );
            }
        }
    }
    let stored_topology = store.load_topology().await?;
    let topology_revision = stored_topology.revision;
    let (stop, stop_rx) = watch::channel(false);
    let agent_counters = config.southbound.driver == Some(crate::config::SouthboundDriver::Agents)
        && config.southbound.counters_interval_ms > 0;
    let (pipeline, telemetry) = crate::telemetry::start(
        config,
        &stored_topology.topology,
        agent_counters,
        stop_rx.clone(),
    )
    .await?;
    let authenticator = Authenticator::new(store.clone());
    // Read once (the TLS files too), for the driver and the agents' streams.
    let endpoints = agent_endpoints(config)?;
    let (driver, simulated) = southbound_driver(config, &stored_topology.topology, &endpoints);
    let events = crate::events::EventBus::new();
    let loop_view: crate::closed_loop::SharedView = Default::default();
    let state = AppState {
        store: store.clone(),
        authenticator: authenticator.clone(),
        topology_revision: watch::Sender::new(topology_revision),
        plan_version: watch::Sender::new(0),
        shutdown: stop_rx.clone(),
        telemetry,
        simulated: simulated.clone(),
        events: events.clone(),
        closed_loop: Some(loop_view.clone()),
        loop_config: config.closed_loop.clone(),
        admission: config.admission.clone(),
        admission_lock: Default::default(),
        tenants: config.tenants.clone(),
        unresolved_links: Default::default(),
    };
    tokio::spawn(crate::services::intent::requeue(state.clone()));
    let loop_metrics = crate::closed_loop::LoopMetrics::default();
    match (&state.telemetry, &pipeline) {
        (Some(telemetry), Some(pipeline)) => {
            let closed_loop = crate::closed_loop::ClosedLoop::new(
                &config.closed_loop,
                crate::closed_loop::LoopContext {
                    db: store.clone(),
                    telemetry: telemetry.store.clone(),
                    board: Some(pipeline.collector.board()),
                    events: events.clone(),
                    view: loop_view.clone(),
                    metrics: loop_metrics.clone(),
                    plan_version: state.plan_version.clone(),
                    schedule: config.schedule.clone(),
                    tenants: config.tenants.clone(),
                    unresolved_links: state.unresolved_links.clone(),
                },
            );
            tokio::spawn(closed_loop.run(stop_rx.clone()));
        }
        _ => {
            let mut view = loop_view
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            view.mode = config.closed_loop.mode;
            view.idle_reason = Some(
                "no flow collectors: set collector.netflow_listen or collector.sflow_listen".into(),
            );
        }
    }
    let southbound_metrics = crate::southbound::metrics::SouthboundMetrics::default();
    let reconciler = driver.map(|driver| {
        let reconciler = crate::southbound::reconcile::Reconciler::new(
            store.clone(),
            driver,
            std::time::Duration::from_millis(config.southbound.reconcile_interval_ms),
        )
        .with_metrics(southbound_metrics.clone())
        .with_classes(config.collector.store.classes.clone())
        .with_rate_limits(config.southbound.rate_limits)
        .with_unresolved_links(state.unresolved_links.clone())
        .with_events(events.clone());
        tokio::spawn(reconciler.run(state.plan_version.subscribe(), stop_rx.clone()))
    });
    if config.southbound.driver == Some(crate::config::SouthboundDriver::Agents) {
        let counters = match (agent_counters, &state.telemetry) {
            (true, Some(telemetry)) => Some((
                telemetry.store.clone(),
                std::time::Duration::from_millis(config.southbound.counters_interval_ms),
            )),
            _ => None,
        };
        let streams = crate::southbound::streams::AgentStreams {
            db: store.clone(),
            counters,
            endpoints,
            metrics: southbound_metrics.clone(),
            events: events.clone(),
        };
        tokio::spawn(streams.run(state.topology_revision.subscribe(), stop_rx.clone()));
    }

    let (health, health_service) = tonic_health::server::health_reporter();
    for service in aiwan_api::SERVICE_NAMES {
        health
            .set_service_status(*service, tonic_health::ServingStatus::Serving)
            .await;
    }
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(aiwan_api::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(ServeError::Reflection)?;
    let reflection_alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(aiwan_api::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(ServeError::Reflection)?;

    let mut metrics = Metrics::new();
    if config.southbound.driver.is_some() {
        metrics.register_southbound(&southbound_metrics);
    }
    if let Some(pipeline) = &pipeline {
        metrics.register_collector(crate::telemetry::CollectorMetrics::new(pipeline));
        metrics.register_closed_loop(&loop_metrics);
    }
    let metrics = Arc::new(metrics);
    let limits = &config.api;
    let mut builder = Server::builder()
        .max_concurrent_streams(limits.max_concurrent_streams)
        .concurrency_limit_per_connection(limits.concurrency_per_connection)
        .timeout(std::time::Duration::from_millis(limits.request_timeout_ms))
        .http2_keepalive_interval(Some(std::time::Duration::from_millis(
            limits.keepalive_interval_ms,
        )))
        .http2_keepalive_timeout(Some(std::time::Duration::from_millis(
            limits.keepalive_timeout_ms,
        )));
    if let (Some(cert), Some(key)) = (&config.tls.cert_file, &config.tls.key_file) {
        let read = |path: &std::path::PathBuf| {
            std::fs::read(path).map_err(|source| ServeError::TlsFile {
                path: path.clone(),
                source,
            })
        };
        let identity = Identity::from_pem(read(cert)?, read(key)?);
        builder = builder
            .tls_config(ServerTlsConfig::new().identity(identity))
            .map_err(ServeError::Tls)?;
    }
    let router = builder
        .layer(MetricsLayer::new(metrics.clone()))
        .layer(AuthLayer::new(authenticator))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_alpha)
        .add_service(
            TopologyServiceServer::new(TopologyApi::new(state.clone()))
                .max_decoding_message_size(limits.max_message_bytes),
        )
        .add_service(
            IntentServiceServer::new(IntentApi::new(state.clone()))
                .max_decoding_message_size(limits.max_message_bytes),
        )
        .add_service(
            PlanServiceServer::new(PlanApi::new(state.clone()))
                .max_decoding_message_size(limits.max_message_bytes),
        )
        .add_service(
            TelemetryServiceServer::new(TelemetryApi::new(state.clone()))
                .max_decoding_message_size(limits.max_message_bytes),
        )
        .add_service(
            EventServiceServer::new(EventApi::new(state.clone()))
                .max_decoding_message_size(limits.max_message_bytes),
        )
        .add_service(
            AdminServiceServer::new(AdminApi::new(state))
                .max_decoding_message_size(limits.max_message_bytes),
        );

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: config.listen,
            source,
        })?;
    let grpc_addr = listener.local_addr().map_err(|source| ServeError::Bind {
        addr: config.listen,
        source,
    })?;
    let metrics_addr = match config.metrics_listen {
        None => None,
        Some(addr) => {
            let metrics_listener = bind_metrics(addr)
                .await
                .map_err(|source| ServeError::Bind { addr, source })?;
            let bound = metrics_listener
                .local_addr()
                .map_err(|source| ServeError::Bind { addr, source })?;
            let shutdown = stopped(stop_rx.clone());
            tokio::spawn(async move {
                if let Err(error) = serve_metrics(metrics_listener, metrics, shutdown).await {
                    tracing::error!(%error, "metrics endpoint stopped");
                }
            });
            Some(bound)
        }
    };
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let task = tokio::spawn(async move {
        router
            .serve_with_incoming_shutdown(incoming, stopped(stop_rx))
            .await
            .map_err(ServeError::Transport)
    });
    let metrics = metrics_addr
        .map(|a| a.to_string())
        .unwrap_or_else(|| "off".into());
    tracing::info!(%grpc_addr, %metrics, tls = config.tls.cert_file.is_some(), "controller serving");
    Ok(RunningController {
        grpc_addr,
        metrics_addr,
        store,
        telemetry: pipeline,
        simulated,
        events,
        closed_loop: loop_view,
        reconciler,
        stop,
        task,
    })
}
