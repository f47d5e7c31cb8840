//! Listeners and store wired together: what `aiwan collect` and the
//! controller run. Shards decode; one ingest task feeds their batches to
//! the store and moves the store's clock once a second.

use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::listener::{self, ListenError, ListenerConfig, RunningCollector, Telemetry, now_ms};
use crate::store::TelemetryStore;

/// The store as the listeners, the API and the planner share it. Ingest
/// takes the write lock per batch, queries the read lock.
pub type SharedStore = Arc<RwLock<TelemetryStore>>;

/// Runs `work` on the store on a blocking thread. Polars parks its caller
/// with `tokio::task::block_in_place`, which panics on a current-thread
/// runtime's worker and stalls a multi-thread one; every store operation
/// made from async code goes through here (or another blocking thread).
pub async fn with_store<R: Send + 'static>(
    store: &SharedStore,
    work: impl FnOnce(&mut TelemetryStore) -> R + Send + 'static,
) -> R {
    let store = Arc::clone(store);
    let task = tokio::task::spawn_blocking(move || {
        let mut store = store.write().unwrap_or_else(PoisonError::into_inner);
        work(&mut store)
    });
    match task.await {
        Ok(result) => result,
        Err(error) => std::panic::resume_unwind(error.into_panic()),
    }
}

/// Like [`with_store`], for queries: takes the read lock, so queries run
/// side by side.
pub async fn read_store<R: Send + 'static>(
    store: &SharedStore,
    work: impl FnOnce(&TelemetryStore) -> R + Send + 'static,
) -> R {
    let store = Arc::clone(store);
    let task = tokio::task::spawn_blocking(move || {
        let store = store.read().unwrap_or_else(PoisonError::into_inner);
        work(&store)
    });
    match task.await {
        Ok(result) => result,
        Err(error) => std::panic::resume_unwind(error.into_panic()),
    }
}

/// Batches waiting between the shards and the store; beyond this the
/// shards wait and the kernel buffers absorb the burst.
const QUEUE_BATCHES: usize = 64;

/// What the ingest task did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IngestReport {
    pub flow_batches: u64,
    pub counter_batches: u64,
    /// Batches or clock moves the store refused (logged each time).
    pub store_errors: u64,
}

pub struct Pipeline {
    pub collector: RunningCollector,
    pub store: SharedStore,
    ingest: JoinHandle<IngestReport>,
}

/// Starts the listeners of `config` feeding `store`.
pub async fn start(config: &ListenerConfig, store: SharedStore) -> Result<Pipeline, ListenError> {
    let (sink, batches) = mpsc::channel(QUEUE_BATCHES);
    let collector = listener::start(config, sink).await?;
    let ingest = tokio::spawn(ingest_loop(Arc::clone(&store), batches));
    Ok(Pipeline {
        collector,
        store,
        ingest,
    })
}

impl Pipeline {
    /// Stops the listeners, lets the store take their last batches, and
    /// closes the store's open buckets so that every record received is in
    /// what queries and exports see.
    pub async fn stop(self) -> IngestReport {
        self.collector.stop().await;
        let report = self.ingest.await.unwrap_or_default();
        with_store(&self.store, |store| {
            let grace = i64::try_from(store.config().close_grace_ms).unwrap_or(0);
            if let Err(error) = store.advance(now_ms() + grace + 1000) {
                tracing::warn!(%error, "telemetry store could not close its last buckets");
            }
        })
        .await;
        report
    }
}

async fn ingest_loop(store: SharedStore, mut batches: mpsc::Receiver<Telemetry>) -> IngestReport {
    let mut report = IngestReport::default();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            batch = batches.recv() => {
                let Some(batch) = batch else { break };
                match &batch {
                    Telemetry::Flows(_) => report.flow_batches += 1,
                    Telemetry::Counters(_) => report.counter_batches += 1,
                }
                let result = with_store(&store, move |store| match &batch {
                    Telemetry::Flows(flows) => store.ingest_flows(flows),
                    Telemetry::Counters(counters) => store.ingest_counters(counters),
                })
                .await;
                if let Err(error) = result {
                    report.store_errors += 1;
                    tracing::warn!(%error, "telemetry store refused a batch");
                }
            }
            _ = tick.tick() => {
                if let Err(error) = with_store(&store, |store| store.advance(now_ms())).await {
                    report.store_errors += 1;
                    tracing::warn!(%error, "telemetry store could not advance");
                }
            }
        }
    }
    report
}
