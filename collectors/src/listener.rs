//! UDP listeners: one socket per shard on the same port (`SO_REUSEPORT`,
//! so the kernel spreads exporters over shards by their address and port
//! and one exporter always lands on the same shard), each shard with its
//! own decoder. Nothing on the path from socket to batch takes a lock
//! shared between shards: counters are published to the [`StatsBoard`] and
//! templates to the persister once per flush interval, not per datagram.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::netflow::{NetflowDecoder, NetflowOptions, TemplateSnapshot};
use crate::record::{FlowBatch, InterfaceCounters};
use crate::sflow::{SflowDecoder, SflowOptions};
use crate::stats::{ExporterCounters, ExporterReport};

/// How the collectors listen.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerConfig {
    /// NetFlow v5/v9 and IPFIX (one port takes all three).
    pub netflow_listen: Option<SocketAddr>,
    pub sflow_listen: Option<SocketAddr>,
    /// Sockets (and decoders) per listen address.
    pub shards: usize,
    /// Requested socket receive buffer; exporters send in bursts, and a
    /// small buffer is where collectors lose data first.
    pub receive_buffer_bytes: usize,
    pub key_by_source_port: bool,
    /// Where templates and sampling rates are kept across restarts.
    pub template_file: Option<PathBuf>,
    /// A shard hands its batch on when it holds this many records...
    pub batch_records: usize,
    /// ...or when this much time has passed.
    pub flush_interval: Duration,
    /// Per-sender bounds of the NetFlow/IPFIX decoder (its
    /// `key_by_source_port` is taken from above).
    pub netflow_limits: NetflowOptions,
    /// The same for the sFlow decoder.
    pub sflow_limits: SflowOptions,
    /// Bind the sockets inside this network namespace (a name under
    /// /run/netns, or a path to a namespace file) instead of the
    /// process's own: a management namespace the exporters reach while
    /// the rest of the controller lives elsewhere. Linux, CAP_SYS_ADMIN.
    pub netns: Option<String>,
}

impl Default for ListenerConfig {
    fn default() -> ListenerConfig {
        ListenerConfig {
            netflow_listen: None,
            sflow_listen: None,
            shards: 1,
            receive_buffer_bytes: 32 << 20,
            key_by_source_port: false,
            template_file: None,
            batch_records: 8192,
            flush_interval: Duration::from_millis(200),
            netflow_limits: NetflowOptions::default(),
            sflow_limits: SflowOptions::default(),
            netns: None,
        }
    }
}

/// What the listeners hand to the store.
#[derive(Debug, Clone, PartialEq)]
pub enum Telemetry {
    /// Boxed: a batch is a few hundred bytes of column headers, and the
    /// queue holds many messages.
    Flows(Box<FlowBatch>),
    Counters(Vec<InterfaceCounters>),
}

/// Why the listeners could not start.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("template file {path}: {reason}")]
    TemplateFile { path: PathBuf, reason: String },
}

/// A listener's kernel-side view: the receive buffer it got and the
/// datagrams the kernel dropped because the buffer was full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SocketReport {
    pub address: Option<SocketAddr>,
    pub receive_buffer_bytes: usize,
    pub kernel_drops: u64,
}

/// Counters of every exporter as the shards last published them.
#[derive(Debug, Default)]
pub struct StatsBoard {
    shards: Mutex<BTreeMap<usize, ShardReport>>,
}

#[derive(Debug, Clone, Default)]
struct ShardReport {
    exporters: Vec<ExporterReport>,
    rejected_datagrams: u64,
    evicted_exporters: u64,
}

impl StatsBoard {
    fn publish(&self, shard: usize, report: ShardReport) {
        self.shards
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(shard, report);
    }

    /// Every exporter's counters, merged over shards (an exporter whose
    /// source port changed may have moved shard).
    pub fn exporters(&self) -> Vec<ExporterReport> {
        let shards = self.shards.lock().unwrap_or_else(PoisonError::into_inner);
        let mut merged: BTreeMap<_, ExporterReport> = BTreeMap::new();
        for report in shards.values().flat_map(|shard| &shard.exporters) {
            merged
                .entry(report.key)
                .and_modify(|existing| {
                    existing.counters.add(&report.counters);
                    if report.last_error.is_some() {
                        existing.last_error.clone_from(&report.last_error);
                    }
                })
                .or_insert_with(|| report.clone());
        }
        merged.into_values().collect()
    }

    /// Datagrams dropped because the exporter table was full.
    pub fn rejected_datagrams(&self) -> u64 {
        let shards = self.shards.lock().unwrap_or_else(PoisonError::into_inner);
        shards.values().map(|shard| shard.rejected_datagrams).sum()
    }

    /// Exporters (sFlow agents) forgotten, idle, to make room for new ones.
    pub fn evicted_exporters(&self) -> u64 {
        let shards = self.shards.lock().unwrap_or_else(PoisonError::into_inner);
        shards.values().map(|shard| shard.evicted_exporters).sum()
    }
}

/// The counters of all exporters added up.
pub fn totals(exporters: &[ExporterReport]) -> ExporterCounters {
    let mut totals = ExporterCounters::default();
    for exporter in exporters {
        totals.add(&exporter.counters);
    }
    totals
}

/// Running listeners.
pub struct RunningCollector {
    pub netflow_address: Option<SocketAddr>,
    pub sflow_address: Option<SocketAddr>,
    board: Arc<StatsBoard>,
    buffers: Vec<(SocketAddr, usize)>,
    stop: watch::Sender<bool>,
    shards: Vec<JoinHandle<()>>,
}

impl RunningCollector {
    pub fn board(&self) -> Arc<StatsBoard> {
        Arc::clone(&self.board)
    }

    /// Receive buffers granted and kernel drops, per listen address.
    pub fn sockets(&self) -> Vec<SocketReport> {
        let mut reports: Vec<SocketReport> = Vec::new();
        for &(address, buffer) in &self.buffers {
            if reports.iter().any(|r| r.address == Some(address)) {
                continue;
            }
            reports.push(SocketReport {
                address: Some(address),
                receive_buffer_bytes: buffer,
                kernel_drops: kernel_drops(address.port()),
            });
        }
        reports
    }

    /// Stops the shards: each decodes what its socket still holds,
    /// commits pending sequence gaps, hands on its last batch, publishes
    /// its counters and saves its templates.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for shard in self.shards {
            let _ = shard.await;
        }
    }
}

/// Binds the listeners and starts one task per shard. Decoded records go
/// to `sink`; when the sink is full the shards wait, the socket buffers
/// fill, and the kernel's drop counter shows it.
pub async fn start(
    config: &ListenerConfig,
    sink: mpsc::Sender<Telemetry>,
) -> Result<RunningCollector, ListenError> {
    let saved = match &config.template_file {
        Some(path) => load_templates(path)?,
        None => TemplateSnapshot::default(),
    };
    let persister = config
        .template_file
        .clone()
        .map(|path| Arc::new(TemplatePersister::new(path)));
    let board = Arc::new(StatsBoard::default());
    let (stop, stopped) = watch::channel(false);
    let mut shards = Vec::new();
    let mut buffers = Vec::new();
    let mut netflow_address = None;
    let mut sflow_address = None;
    let shard_count = config.shards.max(1);
    for (listen, is_netflow) in [(config.netflow_listen, true), (config.sflow_listen, false)] {
        let Some(listen) = listen else { continue };
        let sockets = match &config.netns {
            None => bind_shards(listen, shard_count, config.receive_buffer_bytes)?,
            Some(netns) => bind_shards_in(netns, listen, shard_count, config.receive_buffer_bytes)?,
        };
        let sockets = sockets
            .into_iter()
            .map(|(socket, granted)| {
                UdpSocket::from_std(socket)
                    .map(|socket| (socket, granted))
                    .map_err(|source| ListenError::Bind {
                        address: listen,
                        source,
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let bound = sockets
            .first()
            .and_then(|(socket, _)| socket.local_addr().ok())
            .unwrap_or(listen);
        if is_netflow {
            netflow_address = Some(bound);
        } else {
            sflow_address = Some(bound);
        }
        for (socket, buffer) in sockets {
            buffers.push((bound, buffer));
            let decoder = if is_netflow {
                let mut decoder = NetflowDecoder::new(NetflowOptions {
                    key_by_source_port: config.key_by_source_port,
                    ..config.netflow_limits
                });
                decoder.restore(&saved);
                Decoder::Netflow(decoder)
            } else {
                Decoder::Sflow(SflowDecoder::new(SflowOptions {
                    key_by_source_port: config.key_by_source_port,
                    ..config.sflow_limits
                }))
            };
            let shard = Shard {
                id: shards.len(),
                socket,
                decoder,
                sink: sink.clone(),
                board: Arc::clone(&board),
                persister: persister.clone(),
                last_snapshot: None,
                batch_records: config.batch_records.max(1),
                flush_interval: config.flush_interval,
            };
            shards.push(tokio::spawn(shard.run(stopped.clone())));
        }
    }
    Ok(RunningCollector {
        netflow_address,
        sflow_address,
        board,
        buffers,
        stop,
        shards,
    })
}

/// `shards` sockets on one address and port, with the receive buffer
/// each got (the kernel reports double what it books; we report what
/// `SO_RCVBUF` reads back).
fn bind_shards(
    listen: SocketAddr,
    shards: usize,
    receive_buffer_bytes: usize,
) -> Result<Vec<(std::net::UdpSocket, usize)>, ListenError> {
    let mut sockets = Vec::with_capacity(shards);
    let mut address = listen;
    for _ in 0..shards {
        let bind_error = |source| ListenError::Bind { address, source };
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(address),
            socket2::Type::DGRAM,
            Some(socket2::Protocol::UDP),
        )
        .map_err(bind_error)?;
        socket.set_reuse_port(true).map_err(bind_error)?;
        set_receive_buffer(&socket, receive_buffer_bytes);
        socket.bind(&address.into()).map_err(bind_error)?;
        socket.set_nonblocking(true).map_err(bind_error)?;
        let granted = socket.recv_buffer_size().unwrap_or(0);
        if granted < receive_buffer_bytes {
            tracing::warn!(
                %address,
                requested = receive_buffer_bytes,
                granted,
                "receive buffer smaller than asked; raise net.core.rmem_max or run with CAP_NET_ADMIN"
            );
        }
        let socket: std::net::UdpSocket = socket.into();
        // Port 0 picks a port once; the other shards join it.
        if let Ok(bound) = socket.local_addr() {
            address = bound;
        }
        sockets.push((socket, granted));
    }
    Ok(sockets)
}

/// [`bind_shards`] inside network namespace `netns`: a thread of its own
/// enters the namespace and binds; the sockets stay in that namespace
/// wherever they are used from.
fn bind_shards_in(
    netns: &str,
    listen: SocketAddr,
    shards: usize,
    receive_buffer_bytes: usize,
) -> Result<Vec<(std::net::UdpSocket, usize)>, ListenError> {
    let path = if netns.contains('/') {
        PathBuf::from(netns)
    } else {
        PathBuf::from("/run/netns").join(netns)
    };
    let namespace_error = |reason: String| ListenError::Bind {
        address: listen,
        source: std::io::Error::other(format!("network namespace {}: {reason}", path.display())),
    };
    let file = std::fs::File::open(&path).map_err(|e| namespace_error(e.to_string()))?;
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(|e| namespace_error(format!("cannot enter: {e}")))?;
                bind_shards(listen, shards, receive_buffer_bytes)
            })
            .join()
            .unwrap_or_else(|_| Err(namespace_error("the binding thread panicked".into())))
    })
}

/// `SO_RCVBUFFORCE` when privileged (it may pass `net.core.rmem_max`),
/// `SO_RCVBUF` otherwise.
fn set_receive_buffer(socket: &socket2::Socket, bytes: usize) {
    use std::os::fd::AsFd;
    let forced = nix::sys::socket::setsockopt(
        &socket.as_fd(),
        nix::sys::socket::sockopt::RcvBufForce,
        &bytes,
    );
    if forced.is_err() {
        let _ = socket.set_recv_buffer_size(bytes);
    }
}

/// Datagrams the kernel dropped on the UDP sockets bound to `port`
/// (`/proc/net/udp` and `udp6`, the `drops` column); 0 where the OS does
/// not expose them.
pub fn kernel_drops(port: u16) -> u64 {
    ["/proc/net/udp", "/proc/net/udp6"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .map(|table| drops_in_table(&table, port))
        .sum()
}

fn drops_in_table(table: &str, port: u16) -> u64 {
    let port_hex = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let columns: Vec<&str> = line.split_whitespace().collect();
            let local = columns.get(1)?;
            if !local.ends_with(&port_hex) {
                return None;
            }
            columns.last()?.parse::<u64>().ok()
        })
        .sum()
}

enum Decoder {
    Netflow(NetflowDecoder),
    Sflow(SflowDecoder),
}

struct Shard {
    id: usize,
    socket: UdpSocket,
    decoder: Decoder,
    sink: mpsc::Sender<Telemetry>,
    board: Arc<StatsBoard>,
    persister: Option<Arc<TemplatePersister>>,
    /// When this shard last handed the persister a snapshot: a snapshot
    /// copies every template, so a flood of templates would otherwise
    /// copy them all at every publish.
    last_snapshot: Option<Instant>,
    batch_records: usize,
    flush_interval: Duration,
}

/// Decode errors logged at most this often per shard; the counters have
/// them all.
const ERROR_LOG_INTERVAL: Duration = Duration::from_secs(10);

impl Shard {
    async fn run(mut self, mut stopped: watch::Receiver<bool>) {
        let mut buffer = vec![0u8; 65_536];
        let mut flows = FlowBatch::with_capacity(self.batch_records);
        let mut counters = Vec::new();
        let mut tick = tokio::time::interval(self.flush_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_log: Option<Instant> = None;
        let mut suppressed = 0u64;
        loop {
            tokio::select! {
                received = self.socket.recv_from(&mut buffer) => {
                    let Ok((length, source)) = received else { continue };
                    let datagram = buffer.get(..length).unwrap_or_default();
                    self.decode(source, datagram, &mut flows, &mut counters, &mut last_log, &mut suppressed);
                    if flows.len() >= self.batch_records {
                        self.hand_on(&mut flows, &mut counters).await;
                    }
                }
                _ = tick.tick() => {
                    self.hand_on(&mut flows, &mut counters).await;
                    self.publish(false);
                }
                _ = stopped.changed() => break,
            }
        }
        // Whatever the socket still holds was received before the stop.
        while let Ok((length, source)) = self.socket.try_recv_from(&mut buffer) {
            let datagram = buffer.get(..length).unwrap_or_default();
            self.decode(
                source,
                datagram,
                &mut flows,
                &mut counters,
                &mut last_log,
                &mut suppressed,
            );
        }
        match &mut self.decoder {
            Decoder::Netflow(decoder) => decoder.flush_sequences(),
            Decoder::Sflow(decoder) => decoder.flush_sequences(),
        }
        self.hand_on(&mut flows, &mut counters).await;
        self.publish(true);
        if let Some(persister) = &self.persister {
            persister.save();
        }
    }

    fn decode(
        &mut self,
        source: SocketAddr,
        datagram: &[u8],
        flows: &mut FlowBatch,
        counters: &mut Vec<InterfaceCounters>,
        last_log: &mut Option<Instant>,
        suppressed: &mut u64,
    ) {
        let received_ms = now_ms();
        let result = match &mut self.decoder {
            Decoder::Netflow(decoder) => decoder.decode(source, received_ms, datagram, flows),
            Decoder::Sflow(decoder) => {
                decoder.decode(source, received_ms, datagram, flows, counters)
            }
        };
        if let Err(error) = result {
            if last_log.is_some_and(|at| at.elapsed() < ERROR_LOG_INTERVAL) {
                *suppressed += 1;
            } else {
                tracing::warn!(%source, %error, suppressed = *suppressed, "dropped undecodable data");
                *last_log = Some(Instant::now());
                *suppressed = 0;
            }
        }
    }

    async fn hand_on(&mut self, flows: &mut FlowBatch, counters: &mut Vec<InterfaceCounters>) {
        if !flows.is_empty() {
            let full = std::mem::replace(flows, FlowBatch::with_capacity(self.batch_records));
            let _ = self.sink.send(Telemetry::Flows(Box::new(full))).await;
        }
        if !counters.is_empty() {
            let _ = self
                .sink
                .send(Telemetry::Counters(std::mem::take(counters)))
                .await;
        }
    }

    /// Publishes the counters; hands the persister a snapshot of changed
    /// templates at most every [`PERSIST_INTERVAL`] (and at the end).
    fn publish(&mut self, last: bool) {
        let snapshot_due = last
            || self
                .last_snapshot
                .is_none_or(|at| at.elapsed() >= PERSIST_INTERVAL);
        let report = match &mut self.decoder {
            Decoder::Netflow(decoder) => {
                if snapshot_due
                    && let Some(persister) = &self.persister
                    && decoder.take_dirty()
                {
                    persister.update(self.id, decoder.snapshot());
                    self.last_snapshot = Some(Instant::now());
                }
                ShardReport {
                    exporters: decoder.reports(),
                    rejected_datagrams: decoder.rejected_datagrams(),
                    evicted_exporters: decoder.evicted_exporters(),
                }
            }
            Decoder::Sflow(decoder) => ShardReport {
                exporters: decoder.reports(),
                rejected_datagrams: decoder.rejected_datagrams(),
                evicted_exporters: decoder.evicted_agents(),
            },
        };
        self.board.publish(self.id, report);
    }
}

/// Unix time in milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as i64)
        .unwrap_or(0)
}

/// Keeps each shard's latest template snapshot; one writer thread writes
/// them, merged, to the template file, at most once per
/// [`PERSIST_INTERVAL`] (a flood of templates costs one write per interval,
/// off the shards' path), and once more when the collector stops.
struct TemplatePersister {
    path: PathBuf,
    state: Arc<(Mutex<PersistState>, std::sync::Condvar)>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

#[derive(Default)]
struct PersistState {
    snapshots: BTreeMap<usize, TemplateSnapshot>,
    dirty: bool,
    stop: bool,
}

/// Shortest time between two writes of the template file.
pub const PERSIST_INTERVAL: Duration = Duration::from_secs(5);

impl TemplatePersister {
    fn new(path: PathBuf) -> TemplatePersister {
        let state: Arc<(Mutex<PersistState>, std::sync::Condvar)> = Arc::default();
        let shared = Arc::clone(&state);
        let target = path.clone();
        let writer = std::thread::Builder::new()
            .name("template-writer".into())
            .spawn(move || write_loop(&target, &shared))
            .ok();
        TemplatePersister {
            path,
            state,
            writer: Mutex::new(writer),
        }
    }

    /// A shard's templates changed: the writer will save them.
    fn update(&self, shard: usize, snapshot: TemplateSnapshot) {
        let (lock, wake) = &*self.state;
        let mut state = lock.lock().unwrap_or_else(PoisonError::into_inner);
        state.snapshots.insert(shard, snapshot);
        state.dirty = true;
        wake.notify_one();
    }

    /// The collector stops: write what is pending and end the writer.
    fn save(&self) {
        let (lock, wake) = &*self.state;
        lock.lock().unwrap_or_else(PoisonError::into_inner).stop = true;
        wake.notify_one();
        let writer = self
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        match writer {
            Some(writer) => {
                let _ = writer.join();
            }
            // No writer thread (it could not start): write here.
            None => {
                let merged = merged(&lock.lock().unwrap_or_else(PoisonError::into_inner));
                if let Some(merged) = merged
                    && let Err(error) = save_templates(&self.path, &merged)
                {
                    tracing::warn!(path = %self.path.display(), %error, "cannot save templates");
                }
            }
        }
    }
}

/// Every shard's templates as one snapshot (`None` before any shard had
/// templates).
fn merged(state: &PersistState) -> Option<TemplateSnapshot> {
    if state.snapshots.is_empty() {
        return None;
    }
    let mut exporters: Vec<_> = state
        .snapshots
        .values()
        .flat_map(|snapshot| snapshot.exporters.iter().cloned())
        .collect();
    exporters.sort_by_key(|exporter| exporter.key);
    exporters.dedup_by_key(|exporter| exporter.key);
    Some(TemplateSnapshot { exporters })
}

fn write_loop(path: &Path, state: &(Mutex<PersistState>, std::sync::Condvar)) {
    let (lock, wake) = state;
    let mut last_write: Option<std::time::Instant> = None;
    loop {
        let snapshot = {
            let mut guard = lock.lock().unwrap_or_else(PoisonError::into_inner);
            while !guard.dirty && !guard.stop {
                guard = wake.wait(guard).unwrap_or_else(PoisonError::into_inner);
            }
            if !guard.stop
                && let Some(last) = last_write
                && last.elapsed() < PERSIST_INTERVAL
            {
                let wait = PERSIST_INTERVAL - last.elapsed();
                drop(guard);
                std::thread::sleep(wait.min(Duration::from_millis(500)));
                continue;
            }
            let stop = guard.stop;
            let dirty = std::mem::take(&mut guard.dirty);
            let snapshot = if dirty { merged(&guard) } else { None };
            if stop && snapshot.is_none() {
                return;
            }
            (snapshot, stop)
        };
        if let Some(merged) = &snapshot.0
            && let Err(error) = save_templates(path, merged)
        {
            tracing::warn!(path = %path.display(), %error, "cannot save templates");
        }
        last_write = Some(std::time::Instant::now());
        if snapshot.1 {
            return;
        }
    }
}

/// Reads a template file; a missing file is an empty snapshot. A file that
/// does not parse is set aside (renamed `*.corrupt-{unix ms}`, kept for a
/// look) with a warning, and the collector starts without templates
/// rather than not at all.
pub fn load_templates(path: &Path) -> Result<TemplateSnapshot, ListenError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Ok(TemplateSnapshot::default());
        }
        Err(error) => {
            return Err(ListenError::TemplateFile {
                path: path.to_path_buf(),
                reason: error.to_string(),
            });
        }
    };
    match serde_json::from_str(&text) {
        Ok(snapshot) => Ok(snapshot),
        Err(error) => {
            let aside = path.with_extension(format!("json.corrupt-{}", now_ms()));
            match std::fs::rename(path, &aside) {
                Ok(()) => tracing::warn!(
                    path = %path.display(),
                    %error,
                    moved_to = %aside.display(),
                    "template file does not parse: set aside, starting without saved templates"
                ),
                Err(rename) => {
                    return Err(ListenError::TemplateFile {
                        path: path.to_path_buf(),
                        reason: format!("{error}; and it cannot be set aside: {rename}"),
                    });
                }
            }
            Ok(TemplateSnapshot::default())
        }
    }
}

/// Writes a template file whole or not at all: to a temporary name of this
/// process in the same directory, synced, renamed over the old one, and the
/// directory synced so the rename itself survives a crash.
pub fn save_templates(path: &Path, snapshot: &TemplateSnapshot) -> std::io::Result<()> {
    use std::io::Write;
    let temporary = path.with_extension(format!("json.tmp-{}", std::process::id()));
    // Streamed to the file: a flood's worth of templates is tens of MB of
    // JSON, which a buffer (grown by doubling) would hold twice over.
    let mut writer = std::io::BufWriter::new(std::fs::File::create(&temporary)?);
    serde_json::to_writer_pretty(&mut writer, snapshot).map_err(std::io::Error::other)?;
    writer.flush()?;
    let file = writer.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)?;
    if let Some(directory) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(directory)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_corrupt_template_file_is_set_aside_not_fatal() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("collector-templates.json");
        std::fs::write(&path, "{\"exporters\": [tru").expect("write");
        let loaded = load_templates(&path).expect("not fatal");
        assert_eq!(loaded, TemplateSnapshot::default());
        assert!(!path.exists());
        let aside: Vec<String> = std::fs::read_dir(dir.path())
            .expect("dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            aside
                .iter()
                .any(|n| n.starts_with("collector-templates.json.corrupt-")),
            "{aside:?}"
        );
    }

    #[test]
    fn the_writer_saves_once_per_interval_and_at_stop() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.json");
        let persister = TemplatePersister::new(path.clone());
        for shard in 0..1000 {
            persister.update(shard % 4, TemplateSnapshot::default());
        }
        persister.save();
        assert_eq!(
            load_templates(&path).expect("written"),
            TemplateSnapshot::default()
        );
        let leftovers = std::fs::read_dir(dir.path()).expect("dir").count();
        assert_eq!(leftovers, 1, "no temporary file left");
    }

    #[test]
    fn kernel_drops_are_read_from_the_drops_column() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
   12: 00000000:0807 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1234 2 0000000000000000 17\n\
   13: 00000000:0807 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1235 2 0000000000000000 3\n\
   14: 0100007F:18BD 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1236 2 0000000000000000 99\n";
        assert_eq!(drops_in_table(table, 2055), 20);
        assert_eq!(drops_in_table(table, 6333), 99);
        assert_eq!(drops_in_table(table, 9), 0);
    }
}
