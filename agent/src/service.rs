//! `aiwan agent`'s gRPC service (`aiwan.agent.v1.AgentService`) over a
//! [`Kernel`]: it applies and holds the controller's desired state, repairs
//! drift back to it, and streams interface counters and drift events.
//!
//! The desired state and its version (epoch and generation,
//! [`crate::version`]) sit behind one async mutex, held for the whole of
//! every apply: an `ApplyState` and a drift repair never interleave, and
//! `GetState` sees the kernel between two applies.
//!
//! Who may talk to it: on a unix socket (mode 0600, no window) its own
//! user and root; on a loopback address anyone local; on any other address
//! only clients with a certificate from the CA it is given (mutual TLS),
//! which [`start`] requires there.

use std::fmt;
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aiwan_api::agent::v1 as pb;
use aiwan_api::agent::v1::agent_service_server::{AgentService, AgentServiceServer};
use tokio::sync::{Mutex, broadcast, mpsc, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::{ReceiverStream, UnixListenerStream};
use tonic::server::NamedService;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

use super::convert;
use super::kernel::{ApplyReport, Kernel, KernelError};
use super::monitor::{DriftEvent, Monitor};
use super::state::NodeState;
use super::version::{Refusal, Version, accept};

/// The shortest counter interval a client may ask for.
pub const MIN_COUNTER_INTERVAL: Duration = Duration::from_millis(100);

/// The longest counter interval a client may ask for.
pub const MAX_COUNTER_INTERVAL: Duration = Duration::from_secs(3600);

/// After a drift event, how long the agent waits for more before repairing:
/// an operator's `ip route flush table N` is many events and one repair.
pub const DRIFT_SETTLE: Duration = Duration::from_millis(20);

/// At most this many drift events are repaired together.
const DRIFT_BATCH: usize = 4096;

/// How many drift events a slow WatchDrift subscriber may fall behind before
/// it misses some.
const DRIFT_CHANNEL: usize = 1024;

/// How many drift events of one repair are logged one by one (the rest are
/// counted).
const DRIFT_LOGGED: usize = 20;

/// At most this many counter and drift streams are open at once, from all
/// clients together.
pub const MAX_STREAMS: usize = 32;

/// At most this many from one client (by its address; every client of the
/// unix socket counts as one): a controller holds one of each kind, so one
/// client cannot take every stream and lock the controller out.
pub const MAX_STREAMS_PER_CLIENT: usize = 4;

/// How long shutdown waits for open requests to finish.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the agent listens by default.
pub const DEFAULT_LISTEN: &str = "unix:/run/aiwan/agent.sock";

/// Why the agent could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("listen address {text:?}: {problem}")]
    Listen { text: String, problem: String },
    #[error("bind {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("kernel: {0}")]
    Kernel(#[from] KernelError),
    #[error("reflection service: {0}")]
    Reflection(tonic_reflection::server::Error),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("server task: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Where the agent serves: a unix socket or a TCP address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    Unix(PathBuf),
    Tcp(SocketAddr),
}

impl std::str::FromStr for Listen {
    type Err = AgentError;

    /// `unix:/path/to.sock` or `HOST:PORT` (`127.0.0.1:50061`,
    /// `[::1]:50061`, `localhost:50061`, `0.0.0.0:50061`); an address
    /// beyond loopback needs mutual TLS ([`start`] checks).
    fn from_str(text: &str) -> Result<Listen, AgentError> {
        let err = |problem: &str| AgentError::Listen {
            text: text.to_string(),
            problem: problem.to_string(),
        };
        if let Some(path) = text.strip_prefix("unix:") {
            // `unix:///run/x.sock` as well as `unix:/run/x.sock`.
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() {
                return Err(err("empty socket path"));
            }
            return Ok(Listen::Unix(PathBuf::from(path)));
        }
        let addr: SocketAddr = match text.strip_prefix("localhost:") {
            Some(port) => format!("127.0.0.1:{port}").parse(),
            None => text.parse(),
        }
        .map_err(|_| err("expected unix:/path/to.sock or HOST:PORT"))?;
        Ok(Listen::Tcp(addr))
    }
}

impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Listen::Unix(path) => write!(f, "unix:{}", path.display()),
            Listen::Tcp(addr) => write!(f, "{addr}"),
        }
    }
}

/// The agent's side of mutual TLS, PEM: its certificate (chain) and key,
/// and the CA that controllers' client certificates must chain to.
#[derive(Clone)]
pub struct ServerTls {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    pub client_ca_pem: Vec<u8>,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key.
        f.write_str("ServerTls { .. }")
    }
}

/// How the agent starts.
#[derive(Debug, Clone, Default)]
pub struct AgentOptions {
    /// Program the named network namespace (`/var/run/netns/NAME`) instead
    /// of the process's own.
    pub namespace: Option<String>,
    /// Delete aiwan's leftovers at start. Without it they stay until the
    /// first ApplyState, which adopts or removes them.
    pub purge: bool,
    /// Serve TCP with mutual TLS: required beyond loopback.
    pub tls: Option<ServerTls>,
}

/// The desired state the agent holds.
#[derive(Debug)]
struct Desired {
    /// Its epoch, and its generation (positive).
    version: Version,
    /// Normalised, so that it compares with what the kernel reports.
    state: NodeState,
}

/// The service: shared by every connection (cheap to clone).
#[derive(Clone)]
pub struct AgentApi {
    kernel: Kernel,
    desired: Arc<Mutex<Option<Desired>>>,
    drift: broadcast::Sender<pb::DriftEvent>,
    stop: watch::Receiver<bool>,
    /// The open streams, in all and per client.
    streams: StreamSlots,
}

async fn stopped(mut stop: watch::Receiver<bool>) {
    // An error means the sender is gone, which also means stop.
    let _ = stop.wait_for(|stop| *stop).await;
}

/// The status of a kernel failure: what is wrong with the request itself
/// is INVALID_ARGUMENT; what depends on the node (an interface it lacks, an
/// object someone else owns, a kernel feature, a refusal) is
/// FAILED_PRECONDITION; a broken netlink connection is UNAVAILABLE.
fn kernel_status(error: KernelError) -> Status {
    match &error {
        KernelError::State(_) => Status::invalid_argument(format!("state: {error}")),
        KernelError::Message(super::messages::MessageError::Invalid { .. }) => {
            Status::invalid_argument(format!("state: {error}"))
        }
        KernelError::Message(_)
        | KernelError::Conflict { .. }
        | KernelError::MissingFeature { .. }
        | KernelError::Refused { .. } => Status::failed_precondition(error.to_string()),
        KernelError::Socket(_) | KernelError::Namespace { .. } | KernelError::Closed { .. } => {
            Status::unavailable(error.to_string())
        }
    }
}

impl AgentApi {
    fn new(
        kernel: Kernel,
        drift: broadcast::Sender<pb::DriftEvent>,
        stop: watch::Receiver<bool>,
    ) -> AgentApi {
        AgentApi {
            kernel,
            desired: Arc::new(Mutex::new(None)),
            drift,
            stop,
            streams: StreamSlots::default(),
        }
    }
}

/// Counts open streams against [`MAX_STREAMS`] and
/// [`MAX_STREAMS_PER_CLIENT`].
#[derive(Clone, Default)]
struct StreamSlots {
    open: Arc<std::sync::Mutex<std::collections::HashMap<Option<std::net::IpAddr>, usize>>>,
}

/// One open stream; its slot is given back when dropped (the stream ends).
struct StreamSlot {
    client: Option<std::net::IpAddr>,
    open: Arc<std::sync::Mutex<std::collections::HashMap<Option<std::net::IpAddr>, usize>>>,
}

impl StreamSlots {
    /// A slot for one more stream of `client`, or why not.
    fn take(&self, client: Option<std::net::IpAddr>) -> Result<StreamSlot, Status> {
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let total: usize = open.values().sum();
        if total >= MAX_STREAMS {
            return Err(Status::resource_exhausted(format!(
                "{MAX_STREAMS} streams are open already, the most the agent keeps"
            )));
        }
        let mine = open.entry(client).or_default();
        if *mine >= MAX_STREAMS_PER_CLIENT {
            return Err(Status::resource_exhausted(format!(
                "this client has {MAX_STREAMS_PER_CLIENT} streams open already, the most one \
                 client may"
            )));
        }
        *mine += 1;
        Ok(StreamSlot {
            client,
            open: Arc::clone(&self.open),
        })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.client) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.client);
            }
        }
    }
}

#[tonic::async_trait]
impl AgentService for AgentApi {
    async fn apply_state(
        &self,
        request: Request<pb::ApplyStateRequest>,
    ) -> Result<Response<pb::ApplyStateResponse>, Status> {
        let request = request.into_inner();
        let generation = request.generation;
        if generation == 0 {
            return Err(Status::invalid_argument(
                "generation: must be positive (0 means no desired state)",
            ));
        }
        let state = convert::node_state_from_pb("state", request.state.as_ref())?;
        state
            .check()
            .map_err(|e| Status::invalid_argument(format!("state: {e}")))?;
        let state = state.normalized();
        let asked = Version {
            epoch: request.epoch,
            generation,
        };
        let mut held = self.desired.lock().await;
        let holding = held
            .as_ref()
            .map(|current| (current.version, current.state == state));
        match accept(holding, asked) {
            Ok(()) => {}
            // A newer controller's: the older one is told apart by the code.
            Err(refusal @ Refusal::Superseded { .. }) => {
                return Err(Status::aborted(refusal.to_string()));
            }
            Err(refusal) => return Err(Status::failed_precondition(refusal.to_string())),
        }
        let started = std::time::Instant::now();
        let report = self.kernel.apply(&state).await.map_err(|error| {
            tracing::warn!(generation, %error, "desired state not applied");
            kernel_status(error)
        })?;
        tracing::info!(
            generation,
            created = report.created,
            replaced = report.replaced,
            deleted = report.deleted,
            unchanged = report.unchanged,
            ms = started.elapsed().as_millis() as u64,
            "desired state applied"
        );
        *held = Some(Desired {
            version: asked,
            state,
        });
        Ok(Response::new(pb::ApplyStateResponse {
            generation,
            report: Some(convert::report_to_pb(&report)),
            epoch: asked.epoch,
        }))
    }

    async fn get_state(
        &self,
        _request: Request<pb::GetStateRequest>,
    ) -> Result<Response<pb::GetStateResponse>, Status> {
        // Held while reading, so the generation goes with what is observed.
        let held = self.desired.lock().await;
        let observed = self.kernel.observe().await.map_err(kernel_status)?;
        let interfaces = self.kernel.inventory().await.map_err(kernel_status)?;
        let in_sync = held.as_ref().is_some_and(|d| d.state == observed);
        Ok(Response::new(pb::GetStateResponse {
            observed_state: Some(convert::node_state_to_pb(&observed)),
            desired_generation: held.as_ref().map_or(0, |d| d.version.generation),
            desired_epoch: held.as_ref().map_or(0, |d| d.version.epoch),
            in_sync,
            interfaces: interfaces.iter().map(convert::interface_to_pb).collect(),
        }))
    }

    type StreamCountersStream = ReceiverStream<Result<pb::StreamCountersResponse, Status>>;

    async fn stream_counters(
        &self,
        request: Request<pb::StreamCountersRequest>,
    ) -> Result<Response<Self::StreamCountersStream>, Status> {
        let interval = convert::duration(
            "interval",
            request.get_ref().interval.as_ref(),
            MIN_COUNTER_INTERVAL,
            MAX_COUNTER_INTERVAL,
        )?;
        let client = request.remote_addr().map(|a| a.ip());
        let permit = self.streams.take(client)?;
        let (sender, receiver) = mpsc::channel(4);
        let kernel = self.kernel.clone();
        let stop = stopped(self.stop.clone());
        tokio::spawn(async move {
            let _permit = permit;
            tokio::pin!(stop);
            let mut ticker = tokio::time::interval(interval);
            // A slow client delays the samples rather than bunching them.
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticker.tick() => {}
                    () = sender.closed() => return,
                    () = &mut stop => return,
                }
                let message = match kernel.counters().await {
                    Ok(stats) => Ok(pb::StreamCountersResponse {
                        update: Some(pb::CountersUpdate {
                            time: Some(convert::timestamp(SystemTime::now())),
                            interfaces: stats
                                .iter()
                                .map(convert::interface_counters_to_pb)
                                .collect(),
                        }),
                    }),
                    Err(error) => Err(kernel_status(error)),
                };
                let failed = message.is_err();
                if sender.send(message).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(receiver)))
    }

    type WatchDriftStream = ReceiverStream<Result<pb::WatchDriftResponse, Status>>;

    async fn watch_drift(
        &self,
        request: Request<pb::WatchDriftRequest>,
    ) -> Result<Response<Self::WatchDriftStream>, Status> {
        let client = request.remote_addr().map(|a| a.ip());
        let permit = self.streams.take(client)?;
        let mut events = self.drift.subscribe();
        let (sender, receiver) = mpsc::channel(64);
        let stop = stopped(self.stop.clone());
        tokio::spawn(async move {
            let _permit = permit;
            tokio::pin!(stop);
            loop {
                let event = tokio::select! {
                    event = events.recv() => event,
                    () = sender.closed() => return,
                    () = &mut stop => return,
                };
                let event = match event {
                    Ok(event) => event,
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "a WatchDrift client fell behind; events skipped");
                        continue;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                let message = pb::WatchDriftResponse { event: Some(event) };
                if sender.send(Ok(message)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(receiver)))
    }
}

/// What a repair came to, for every event it answered.
enum Repair {
    Repaired(u64, ApplyReport),
    Failed(u64, String),
    Skipped,
}

/// Reads the monitor; on each burst of drift, applies the held desired state
/// again, logs, and publishes the events with their outcome.
async fn repair_drift(
    api: AgentApi,
    mut monitor: Monitor,
    health: tonic_health::server::HealthReporter,
) {
    let stop = stopped(api.stop.clone());
    tokio::pin!(stop);
    loop {
        let first = tokio::select! {
            event = monitor.next() => event,
            () = &mut stop => return,
        };
        let Some(first) = first else {
            tracing::error!(
                "the drift monitor's netlink connection closed; drift is no longer repaired"
            );
            for service in aiwan_api::agent::SERVICE_NAMES {
                health
                    .set_service_status(*service, tonic_health::ServingStatus::NotServing)
                    .await;
            }
            return;
        };
        let mut batch = vec![(SystemTime::now(), first)];
        let settle = tokio::time::Instant::now() + DRIFT_SETTLE;
        while batch.len() < DRIFT_BATCH {
            match tokio::time::timeout_at(settle, monitor.next()).await {
                Ok(Some(event)) => batch.push((SystemTime::now(), event)),
                // A closed monitor is noticed on the next turn.
                Ok(None) | Err(_) => break,
            }
        }
        let repair = {
            let held = api.desired.lock().await;
            match held.as_ref() {
                None => Repair::Skipped,
                Some(desired) => match api.kernel.apply(&desired.state).await {
                    Ok(report) => Repair::Repaired(desired.version.generation, report),
                    Err(error) => Repair::Failed(desired.version.generation, error.to_string()),
                },
            }
        };
        log_repair(&batch, &repair);
        for (time, event) in batch {
            let (outcome, error, generation, report) = match &repair {
                Repair::Repaired(generation, report) => (
                    pb::RepairOutcome::Repaired,
                    String::new(),
                    *generation,
                    Some(convert::report_to_pb(report)),
                ),
                Repair::Failed(generation, error) => {
                    (pb::RepairOutcome::Failed, error.clone(), *generation, None)
                }
                Repair::Skipped => (pb::RepairOutcome::Skipped, String::new(), 0, None),
            };
            // No subscriber is no error: the event is logged anyway.
            let _ = api.drift.send(pb::DriftEvent {
                time: Some(convert::timestamp(time)),
                kind: convert::drift_kind_to_pb(event.kind).into(),
                object: event.object,
                outcome: outcome.into(),
                error,
                generation,
                repair: report,
            });
        }
    }
}

fn log_repair(batch: &[(SystemTime, DriftEvent)], repair: &Repair) {
    for (_, event) in batch.iter().take(DRIFT_LOGGED) {
        match repair {
            Repair::Repaired(generation, _) => {
                tracing::warn!(%event, generation, "drift repaired");
            }
            Repair::Failed(generation, error) => {
                tracing::error!(%event, generation, %error, "drift not repaired");
            }
            Repair::Skipped => {
                tracing::warn!(%event, "drift seen before any desired state; left as is");
            }
        }
    }
    if batch.len() > DRIFT_LOGGED {
        tracing::warn!(
            more = batch.len() - DRIFT_LOGGED,
            "more drift events in the same repair"
        );
    }
    if let Repair::Repaired(_, report) = repair {
        tracing::info!(
            created = report.created,
            replaced = report.replaced,
            deleted = report.deleted,
            unchanged = report.unchanged,
            "drift repair applied"
        );
    }
}

/// An agent that is serving.
pub struct RunningAgent {
    /// Where it listens (the bound port with `HOST:0`).
    pub listen: Listen,
    /// Whether it serves mutual TLS.
    tls: bool,
    stop: watch::Sender<bool>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    drift: JoinHandle<()>,
}

impl RunningAgent {
    /// The endpoint a client connects to: `unix:/path` or `http://HOST:PORT`.
    pub fn endpoint(&self) -> String {
        match &self.listen {
            Listen::Unix(path) => format!("unix:{}", path.display()),
            Listen::Tcp(addr) if self.tls => format!("https://{addr}"),
            Listen::Tcp(addr) => format!("http://{addr}"),
        }
    }

    /// Stops accepting, ends the streams, waits for open requests (at most
    /// [`DRAIN_TIMEOUT`]) and removes the unix socket.
    pub async fn shutdown(mut self) -> Result<(), AgentError> {
        self.stop.send_replace(true);
        let result = match tokio::time::timeout(DRAIN_TIMEOUT, &mut self.server).await {
            Ok(joined) => joined?.map_err(AgentError::from),
            Err(_) => {
                tracing::warn!("requests still open after {DRAIN_TIMEOUT:?}; closing them");
                self.server.abort();
                Ok(())
            }
        };
        // It ends on the stop signal; it may be in the middle of a repair,
        // which is not worth waiting for.
        self.drift.abort();
        if let Listen::Unix(path) = &self.listen {
            let _ = std::fs::remove_file(path);
        }
        result
    }

    /// Serves until `signal` resolves, then shuts down.
    pub async fn run_until(
        self,
        signal: impl std::future::Future<Output = ()>,
    ) -> Result<(), AgentError> {
        signal.await;
        self.shutdown().await
    }
}

/// Removes a socket file left by an earlier agent, and nothing else: a
/// regular file at that path is someone's data, and a socket something
/// still answers on is a running agent's.
fn remove_stale_socket(path: &Path) -> Result<(), AgentError> {
    let bind_err = |source| AgentError::Bind {
        addr: format!("unix:{}", path.display()),
        source,
    };
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(bind_err(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    "another process is listening on it",
                )));
            }
            std::fs::remove_file(path).map_err(bind_err)
        }
        Ok(_) => Err(bind_err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            "exists and is not a socket",
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(bind_err(e)),
    }
}

/// Binds a unix socket at `path` that only its owner may open (mode 0600),
/// with no moment at which it exists with looser permissions: bound in a
/// private folder (mode 0700) beside `path`, made 0600 there, then renamed
/// into place.
fn bind_private_socket(path: &Path) -> std::io::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::DirBuilderExt;
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let private = parent.join(format!(
        ".aiwan-agent-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::DirBuilder::new().mode(0o700).create(&private)?;
    let staged = private.join("sock");
    let bound = tokio::net::UnixListener::bind(&staged).and_then(|listener| {
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(&staged, path)?;
        Ok(listener)
    });
    if bound.is_err() {
        let _ = std::fs::remove_file(&staged);
    }
    let _ = std::fs::remove_dir(&private);
    bound
}

/// Whether a peer on the unix socket may talk to the agent: the agent's
/// own user, or root.
fn peer_allowed(stream: &tokio::net::UnixStream) -> bool {
    let own = nix::unistd::geteuid().as_raw();
    match stream.peer_cred() {
        Ok(peer) if peer.uid() == own || peer.uid() == 0 => true,
        Ok(peer) => {
            tracing::warn!(
                uid = peer.uid(),
                "a peer of another user refused on the socket"
            );
            false
        }
        Err(error) => {
            tracing::warn!(%error, "cannot tell who is on the socket; refused");
            false
        }
    }
}

/// A bound listener, before serving starts.
enum Bound {
    Unix(tokio::net::UnixListener, PathBuf),
    Tcp(tokio::net::TcpListener, SocketAddr),
}

impl Bound {
    async fn bind(listen: &Listen) -> Result<Bound, AgentError> {
        let bind_err = |source| AgentError::Bind {
            addr: listen.to_string(),
            source,
        };
        match listen {
            Listen::Unix(path) => {
                remove_stale_socket(path)?;
                if let Some(parent) = path.parent()
                    && !parent.as_os_str().is_empty()
                {
                    std::fs::create_dir_all(parent).map_err(bind_err)?;
                }
                let listener = bind_private_socket(path).map_err(bind_err)?;
                Ok(Bound::Unix(listener, path.clone()))
            }
            Listen::Tcp(addr) => {
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(bind_err)?;
                let bound = listener.local_addr().map_err(bind_err)?;
                Ok(Bound::Tcp(listener, bound))
            }
        }
    }

    fn listen(&self) -> Listen {
        match self {
            Bound::Unix(_, path) => Listen::Unix(path.clone()),
            Bound::Tcp(_, addr) => Listen::Tcp(*addr),
        }
    }

    /// Undoes `bind` when start-up fails after it.
    fn abandon(self) {
        if let Bound::Unix(listener, path) = self {
            drop(listener);
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Beyond loopback only with mutual TLS; TLS only over TCP.
fn check_listen(listen: &Listen, options: &AgentOptions) -> Result<(), AgentError> {
    let err = |problem: &str| AgentError::Listen {
        text: listen.to_string(),
        problem: problem.to_string(),
    };
    match (listen, &options.tls) {
        (Listen::Tcp(addr), None) if !addr.ip().is_loopback() => Err(err(
            "without --tls-cert, --tls-key and --client-ca the agent has no authentication: \
             listen on a unix socket or a loopback address only",
        )),
        (Listen::Unix(_), Some(_)) => Err(err(
            "TLS is for TCP addresses: a unix socket is guarded by its owner and mode",
        )),
        _ => Ok(()),
    }
}

/// Binds `listen`, connects to the kernel, starts the drift monitor,
/// purges leftovers when asked, and serves the agent's gRPC service (with
/// health and reflection).
pub async fn start(listen: &Listen, options: &AgentOptions) -> Result<RunningAgent, AgentError> {
    check_listen(listen, options)?;
    // Bound first, so that a socket problem stops the agent before it
    // touches the kernel.
    let bound = Bound::bind(listen).await?;
    match prepare(options).await {
        Ok((kernel, monitor)) => serve(bound, kernel, monitor, options).await,
        Err(error) => {
            bound.abandon();
            Err(error)
        }
    }
}

/// The kernel handle and its monitor, after the purge or the leftovers'
/// count.
async fn prepare(options: &AgentOptions) -> Result<(Kernel, Monitor), AgentError> {
    let kernel = match &options.namespace {
        Some(name) => Kernel::in_namespace(name)?,
        None => Kernel::new()?,
    };
    // Subscribed before the first dump, so no change falls in between.
    let monitor = kernel.monitor()?;
    let namespace = options.namespace.as_deref().unwrap_or("(own)");
    if options.purge {
        let report = kernel.purge().await?;
        tracing::info!(
            namespace,
            deleted = report.deleted,
            "purged aiwan's leftovers"
        );
    } else {
        let leftovers = kernel.observe().await?;
        if !leftovers.is_empty() {
            tracing::info!(
                namespace,
                routes = leftovers.routes.len(),
                srv6_policies = leftovers.srv6_policies.len(),
                local_sids = leftovers.local_sids.len(),
                flow_rules = leftovers.flow_rules.len(),
                rate_limits = leftovers.rate_limits.len(),
                "aiwan's objects from an earlier run kept until the first ApplyState"
            );
        }
    }
    Ok((kernel, monitor))
}

/// The agent's gRPC services behind one address, told apart by the path's
/// service name: tonic's own router would bring axum onto every router.
#[derive(Clone)]
struct Services<Health, Reflection, ReflectionAlpha> {
    agent: AgentServiceServer<AgentApi>,
    health: Health,
    reflection_v1: Reflection,
    reflection_v1alpha: ReflectionAlpha,
}

type HttpRequest = tonic::codegen::http::Request<tonic::body::Body>;
type HttpResponse = tonic::codegen::http::Response<tonic::body::Body>;

impl<H, R, A> tonic::codegen::Service<HttpRequest> for Services<H, R, A>
where
    H: tonic::codegen::Service<
            HttpRequest,
            Response = HttpResponse,
            Error = std::convert::Infallible,
        > + NamedService,
    R: tonic::codegen::Service<
            HttpRequest,
            Response = HttpResponse,
            Error = std::convert::Infallible,
        > + NamedService,
    A: tonic::codegen::Service<
            HttpRequest,
            Response = HttpResponse,
            Error = std::convert::Infallible,
        > + NamedService,
    H::Future: Send + 'static,
    R::Future: Send + 'static,
    A::Future: Send + 'static,
{
    type Response = HttpResponse;
    type Error = std::convert::Infallible;
    type Future = tonic::codegen::BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        // Each service is always ready (tonic's generated servers are).
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: HttpRequest) -> Self::Future {
        let name = request.uri().path().split('/').nth(1).unwrap_or_default();
        if name == AgentServiceServer::<AgentApi>::NAME {
            Box::pin(self.agent.call(request))
        } else if name == H::NAME {
            Box::pin(self.health.call(request))
        } else if name == R::NAME {
            Box::pin(self.reflection_v1.call(request))
        } else if name == A::NAME {
            Box::pin(self.reflection_v1alpha.call(request))
        } else {
            let status = Status::unimplemented(format!("no service {name:?} here"));
            Box::pin(std::future::ready(Ok(status.into_http())))
        }
    }
}

async fn serve(
    bound: Bound,
    kernel: Kernel,
    monitor: Monitor,
    options: &AgentOptions,
) -> Result<RunningAgent, AgentError> {
    let (stop, stop_rx) = watch::channel(false);
    let (drift, _) = broadcast::channel(DRIFT_CHANNEL);
    let api = AgentApi::new(kernel, drift, stop_rx.clone());

    let (health, health_service) = tonic_health::server::health_reporter();
    for service in aiwan_api::agent::SERVICE_NAMES {
        health
            .set_service_status(*service, tonic_health::ServingStatus::Serving)
            .await;
    }
    let reflection = |builder: tonic_reflection::server::Builder<'static>| {
        builder
            .register_encoded_file_descriptor_set(aiwan_api::agent::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let built = reflection(tonic_reflection::server::Builder::configure())
        .build_v1()
        .and_then(|v1| {
            reflection(tonic_reflection::server::Builder::configure())
                .build_v1alpha()
                .map(|v1alpha| (v1, v1alpha))
        });
    let (reflection_v1, reflection_v1alpha) = match built {
        Ok(services) => services,
        Err(error) => {
            bound.abandon();
            return Err(AgentError::Reflection(error));
        }
    };
    let services = Services {
        // A full state of many routes is a large message; tonic's default
        // limit (4 MiB) would cap a push at about 40,000 routes.
        agent: AgentServiceServer::new(api.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES),
        health: health_service,
        reflection_v1,
        reflection_v1alpha,
    };

    let mut builder = Server::builder();
    if let Some(tls) = &options.tls {
        let config = tonic::transport::ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(
                &tls.cert_pem,
                &tls.key_pem,
            ))
            .client_ca_root(tonic::transport::Certificate::from_pem(&tls.client_ca_pem));
        builder = match builder.tls_config(config) {
            Ok(builder) => builder,
            Err(error) => {
                bound.abandon();
                return Err(AgentError::Tls(crate::client::error_text(&error)));
            }
        };
    }
    let listen = bound.listen();
    let shutdown = stopped(stop_rx);
    let server = match bound {
        Bound::Unix(listener, _) => {
            use tokio_stream::StreamExt as _;
            let incoming = UnixListenerStream::new(listener)
                .filter(|accepted| accepted.as_ref().map_or(true, peer_allowed));
            tokio::spawn(builder.serve_with_incoming_shutdown(services, incoming, shutdown))
        }
        Bound::Tcp(listener, _) => {
            let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
            tokio::spawn(builder.serve_with_incoming_shutdown(services, incoming, shutdown))
        }
    };
    let drift_task = tokio::spawn(repair_drift(api, monitor, health));
    let namespace = options.namespace.as_deref().unwrap_or("(own)");
    tracing::info!(%listen, namespace, "agent serving");
    Ok(RunningAgent {
        listen,
        tls: options.tls.is_some(),
        stop,
        server,
        drift: drift_task,
    })
}

/// The largest request or response the agent takes or sends: room for a
/// node state of a few hundred thousand routes.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses() {
        assert_eq!(
            "unix:/run/aiwan/lab/r1.sock".parse::<Listen>().unwrap(),
            Listen::Unix("/run/aiwan/lab/r1.sock".into())
        );
        assert_eq!(
            "unix:///tmp/a.sock".parse::<Listen>().unwrap(),
            Listen::Unix("/tmp/a.sock".into())
        );
        assert_eq!(
            "127.0.0.1:50061".parse::<Listen>().unwrap(),
            Listen::Tcp("127.0.0.1:50061".parse().unwrap())
        );
        assert_eq!(
            "[::1]:0".parse::<Listen>().unwrap(),
            Listen::Tcp("[::1]:0".parse().unwrap())
        );
        assert_eq!(
            "localhost:7".parse::<Listen>().unwrap(),
            Listen::Tcp("127.0.0.1:7".parse().unwrap())
        );
        // Any address parses; beyond loopback it needs TLS.
        let any = "0.0.0.0:50061".parse::<Listen>().unwrap();
        let err = check_listen(&any, &AgentOptions::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("no authentication"), "{err}");
        let tls = AgentOptions {
            tls: Some(ServerTls {
                cert_pem: Vec::new(),
                key_pem: Vec::new(),
                client_ca_pem: Vec::new(),
            }),
            ..AgentOptions::default()
        };
        assert!(check_listen(&any, &tls).is_ok());
        let unix = "unix:/tmp/a.sock".parse::<Listen>().unwrap();
        assert!(check_listen(&unix, &tls).is_err());
        let loopback = "127.0.0.1:1".parse::<Listen>().unwrap();
        assert!(check_listen(&loopback, &AgentOptions::default()).is_ok());
        assert!("unix:".parse::<Listen>().is_err());
        assert!("r1".parse::<Listen>().is_err());
        assert_eq!(
            DEFAULT_LISTEN.parse::<Listen>().unwrap().to_string(),
            DEFAULT_LISTEN
        );
    }

    #[test]
    fn streams_are_bounded_in_all_and_per_client() {
        let slots = StreamSlots::default();
        let one: Option<std::net::IpAddr> = Some([10, 0, 0, 1].into());
        let mut held: Vec<StreamSlot> = (0..MAX_STREAMS_PER_CLIENT)
            .map(|_| slots.take(one).expect("within the client's share"))
            .collect();
        let refused = slots.take(one).err().expect("over the client's share");
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        // Others still get theirs, up to the total.
        for i in 0..(MAX_STREAMS - MAX_STREAMS_PER_CLIENT) {
            let other = Some(std::net::IpAddr::from([10, 0, 1, (i / 2) as u8]));
            held.push(slots.take(other).expect("another client"));
        }
        let full = slots
            .take(Some([10, 0, 9, 9].into()))
            .err()
            .expect("over the total");
        assert!(full.message().contains("32 streams"), "{full:?}");
        // A stream that ends gives its slot back.
        held.remove(0);
        slots.take(one).expect("a slot given back");
    }

    #[test]
    fn stale_socket_only() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("data");
        std::fs::write(&file, b"keep me").unwrap();
        assert!(remove_stale_socket(&file).is_err());
        assert!(file.exists());
        remove_stale_socket(&dir.path().join("absent")).unwrap();
        let sock = dir.path().join("s.sock");
        let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        // Someone answers on it: not stale.
        let err = remove_stale_socket(&sock).unwrap_err().to_string();
        assert!(err.contains("another process is listening"), "{err}");
        drop(listener);
        remove_stale_socket(&sock).unwrap();
        assert!(!sock.exists());
    }

    #[test]
    fn kernel_errors_map_to_codes() {
        let conflict = KernelError::Conflict {
            object: "route 10.2.0.0/16 table 20001".into(),
            owner: "protocol 3".into(),
        };
        assert_eq!(
            kernel_status(conflict).code(),
            tonic::Code::FailedPrecondition
        );
        let state = KernelError::State(crate::StateError {
            object: "route".into(),
            problem: "no next hops".into(),
        });
        let status = kernel_status(state);
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().starts_with("state: "));
        let closed = KernelError::Closed {
            what: "list interfaces".into(),
        };
        assert_eq!(kernel_status(closed).code(), tonic::Code::Unavailable);
    }
}
