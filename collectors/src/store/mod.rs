//! The telemetry store: flow records and interface counters in, time
//! series, traffic matrices and top-N answers out.
//!
//! Flow records go through three tiers of time buckets:
//!
//! - **1 s** (the raw window): one row per full flow key per second. The
//!   open second is a plain Rust hash map (see `ingest`, the hot path);
//!   when it closes it becomes a Polars frame.
//! - **10 s** and **1 min**: keyed by prefixes and sites instead of
//!   addresses and ports, summed in plain hash maps as the finer buckets
//!   close (each 1 s bucket's rows into its 10 s bucket, each 10 s bucket
//!   into its minute), and turned into frames once every finer bucket they
//!   cover has closed. Before the classifier's ids in those maps' keys are
//!   invalidated (its caches trimmed, its sites replaced) the sums become
//!   frames, which a Polars `group_by` adds up at the end.
//!
//! A 1 s bucket closes when the received time (of records, or the clock
//! given to [`TelemetryStore::advance`]) reaches its end plus
//! `close_grace_ms`. Closed buckets never change: late records are counted
//! and added to the oldest bucket still open. Queries answer from closed
//! buckets only.
//!
//! Only this module knows Polars; every public type here is plain Rust.

mod classify;
mod config;
mod counters;
mod error;
mod frames;
mod ingest;
mod parquet;
mod query;
mod schema;

use std::collections::BTreeMap;

use polars::prelude::DataFrame;
use serde::Serialize;

use crate::record::{FlowBatch, InterfaceCounters};

pub use config::{
    ClassRule, DscpRange, SitePrefix, StoreConfig, TrafficClass, default_class_rules,
};
pub use error::StoreError;
pub use parquet::{ExportSummary, ExportedFile, ImportSummary};
pub use query::{
    CounterPoint, ExporterCell, FlowSelector, FlowSummary, InterfacePoint, MatrixAverage,
    MatrixCell, SelectedBytes, Talker, TalkerGrouping, average_matrix,
};

use classify::{Classifier, Place};
use counters::CounterTable;
use frames::PendingBucket;
use ingest::{Exporters, FINE_BUCKET_MS, FlowKey, FlowSums, OpenBuckets, bucket_start};

/// A tier of time buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Tier {
    #[serde(rename = "1s")]
    OneSecond,
    #[serde(rename = "10s")]
    TenSeconds,
    #[serde(rename = "1m")]
    OneMinute,
}

impl Tier {
    /// Finest first.
    pub const ALL: [Tier; 3] = [Tier::OneSecond, Tier::TenSeconds, Tier::OneMinute];

    pub fn bucket_ms(self) -> i64 {
        match self {
            Tier::OneSecond => 1000,
            Tier::TenSeconds => 10_000,
            Tier::OneMinute => 60_000,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Tier::OneSecond => "1s",
            Tier::TenSeconds => "10s",
            Tier::OneMinute => "1m",
        }
    }

    fn index(self) -> usize {
        match self {
            Tier::OneSecond => 0,
            Tier::TenSeconds => 1,
            Tier::OneMinute => 2,
        }
    }
}

/// A time window `[start_ms, end_ms)` in Unix milliseconds. A bucket is in
/// the window when its start is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TimeWindow {
    pub start_ms: i64,
    pub end_ms: i64,
}

impl TimeWindow {
    pub fn new(start_ms: i64, end_ms: i64) -> TimeWindow {
        TimeWindow { start_ms, end_ms }
    }

    /// The window's length in seconds (0 when empty or reversed).
    pub fn seconds(self) -> f64 {
        (self.end_ms.saturating_sub(self.start_ms)).max(0) as f64 / 1000.0
    }
}

/// What one tier holds and what it lost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TierStats {
    pub tier: Tier,
    pub buckets: usize,
    pub rows: usize,
    pub estimated_bytes: usize,
    pub oldest_bucket_ms: Option<i64>,
    pub newest_bucket_ms: Option<i64>,
    /// Dropped to stay within the memory budget.
    pub evicted_buckets: u64,
    pub evicted_rows: u64,
    /// Dropped because they were older than the tier's retention.
    pub expired_buckets: u64,
    pub expired_rows: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoreStats {
    /// Finest tier first.
    pub tiers: Vec<TierStats>,
    pub open_buckets: usize,
    pub open_rows: usize,
    pub open_estimated_bytes: usize,
    pub counter_rows: usize,
    pub counter_estimated_bytes: usize,
    /// Everything above, as counted against the memory budget.
    pub estimated_bytes: usize,
    pub records: u64,
    pub late_records: u64,
    pub counter_samples: u64,
    /// Counter intervals skipped because a counter went backwards.
    pub counter_resets: u64,
    /// Interfaces with a counter baseline, and baselines forgotten to stay
    /// within `max_counter_interfaces`.
    pub counter_interfaces: usize,
    pub counter_baselines_evicted: u64,
    /// Counter samples dropped to stay within the memory budget.
    pub counter_evicted_rows: u64,
}

/// One closed bucket of a tier.
#[derive(Debug, Clone)]
struct Bucket {
    frame: DataFrame,
    estimated_bytes: usize,
}

/// The closed buckets of one tier, by start.
#[derive(Debug)]
struct TierData {
    tier: Tier,
    buckets: BTreeMap<i64, Bucket>,
    estimated_bytes: usize,
    rows: usize,
    /// Buckets ending at or before this were dropped (retention or
    /// budget): the tier no longer covers windows starting earlier.
    dropped_before_ms: i64,
    evicted_buckets: u64,
    evicted_rows: u64,
    expired_buckets: u64,
    expired_rows: u64,
}

impl TierData {
    fn new(tier: Tier) -> TierData {
        TierData {
            tier,
            buckets: BTreeMap::new(),
            estimated_bytes: 0,
            rows: 0,
            dropped_before_ms: i64::MIN,
            evicted_buckets: 0,
            evicted_rows: 0,
            expired_buckets: 0,
            expired_rows: 0,
        }
    }

    /// Adds a bucket; a bucket already there (after an import) is stacked
    /// with it, which queries sum the same way.
    fn insert(&mut self, start_ms: i64, frame: DataFrame) -> Result<(), StoreError> {
        let frame = match self.buckets.remove(&start_ms) {
            Some(existing) => {
                self.forget(&existing);
                existing
                    .frame
                    .vstack(&frame)
                    .map_err(|e| StoreError::polars("merging a bucket", e))?
            }
            None => frame,
        };
        let bucket = Bucket {
            estimated_bytes: frame.estimated_size(),
            frame,
        };
        self.estimated_bytes += bucket.estimated_bytes;
        self.rows += bucket.frame.height();
        self.buckets.insert(start_ms, bucket);
        Ok(())
    }

    fn forget(&mut self, bucket: &Bucket) {
        self.estimated_bytes = self.estimated_bytes.saturating_sub(bucket.estimated_bytes);
        self.rows = self.rows.saturating_sub(bucket.frame.height());
    }

    /// Removes the oldest bucket, returning its row count.
    fn pop_oldest(&mut self) -> Option<usize> {
        let (start, bucket) = self.buckets.pop_first()?;
        self.forget(&bucket);
        let end = start.saturating_add(self.tier.bucket_ms());
        self.dropped_before_ms = self.dropped_before_ms.max(end);
        Some(bucket.frame.height())
    }

    fn expire_before(&mut self, cutoff_ms: i64) {
        while let Some((&start, _)) = self.buckets.first_key_value() {
            if start.saturating_add(self.tier.bucket_ms()) > cutoff_ms {
                break;
            }
            if let Some(rows) = self.pop_oldest() {
                self.expired_buckets += 1;
                self.expired_rows += rows as u64;
            }
        }
    }

    fn frames_in(&self, window: TimeWindow) -> Vec<DataFrame> {
        if window.start_ms >= window.end_ms {
            return Vec::new();
        }
        self.buckets
            .range(window.start_ms..window.end_ms)
            .map(|(_, bucket)| bucket.frame.clone())
            .collect()
    }

    fn stats(&self) -> TierStats {
        TierStats {
            tier: self.tier,
            buckets: self.buckets.len(),
            rows: self.rows,
            estimated_bytes: self.estimated_bytes,
            oldest_bucket_ms: self.buckets.keys().next().copied(),
            newest_bucket_ms: self.buckets.keys().next_back().copied(),
            evicted_buckets: self.evicted_buckets,
            evicted_rows: self.evicted_rows,
            expired_buckets: self.expired_buckets,
            expired_rows: self.expired_rows,
        }
    }
}

/// The Polars telemetry store. See the module documentation.
pub struct TelemetryStore {
    config: StoreConfig,
    classifier: Classifier,
    exporters: Exporters,
    open: OpenBuckets,
    /// Finest first, indexed by [`Tier::index`].
    tiers: [TierData; 3],
    /// 10 s buckets filling as their 1 s buckets close, by start.
    pending_10s: BTreeMap<i64, PendingBucket>,
    /// Minutes filling as their 10 s buckets complete.
    pending_1m: BTreeMap<i64, PendingBucket>,
    /// The rows of the 1 s bucket being closed, reused.
    close_rows: Vec<(FlowKey, FlowSums, Place, Place)>,
    counters: CounterTable,
}

impl TelemetryStore {
    /// A store with `config`, which is checked first.
    pub fn new(config: StoreConfig) -> Result<TelemetryStore, StoreError> {
        config.check()?;
        Ok(TelemetryStore {
            classifier: Classifier::new(&config),
            config,
            exporters: Exporters::default(),
            open: OpenBuckets::default(),
            tiers: Tier::ALL.map(TierData::new),
            pending_10s: BTreeMap::new(),
            pending_1m: BTreeMap::new(),
            close_rows: Vec::new(),
            counters: CounterTable::default(),
        })
    }

    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// Replaces the site prefixes (the topology changed). Buckets closed
    /// from now on use them; closed ones keep the sites they were given.
    pub fn set_sites(&mut self, sites: Vec<SitePrefix>) -> Result<(), StoreError> {
        let mut config = self.config.clone();
        config.sites = sites;
        config.check()?;
        // The pending sums are keyed by the old classifier's ids.
        self.flush_pending()?;
        self.classifier = Classifier::new(&config);
        self.config = config;
        Ok(())
    }

    /// Adds a batch of flow records, scaled by their sampling rates, and
    /// closes the buckets the batch's received times have moved past. An
    /// invalid batch (ragged columns, an exporter index outside its
    /// dictionary) is rejected whole.
    pub fn ingest_flows(&mut self, batch: &FlowBatch) -> Result<(), StoreError> {
        self.open.add_batch(batch, &mut self.exporters)?;
        if let Some(&latest) = batch.received_ms.iter().max() {
            self.close_due(latest)?;
        }
        Ok(())
    }

    /// Adds interface counter samples; rates come from successive samples
    /// of the same (device, if_index).
    pub fn ingest_counters(&mut self, counters: &[InterfaceCounters]) -> Result<(), StoreError> {
        let cap = usize::try_from(self.config.max_counter_interfaces).unwrap_or(usize::MAX);
        self.counters.ingest(counters, cap)
    }

    /// Moves the store's clock to `now_ms`: closes due buckets and rolls
    /// them up, drops what is older than each tier's retention, and evicts
    /// to stay within the memory budget.
    pub fn advance(&mut self, now_ms: i64) -> Result<(), StoreError> {
        self.close_due(now_ms)?;
        for (tier, retention_secs) in [
            (Tier::OneSecond, self.config.retention_1s_secs),
            (Tier::TenSeconds, self.config.retention_10s_secs),
            (Tier::OneMinute, self.config.retention_1m_secs),
        ] {
            let cutoff = now_ms.saturating_sub(secs_to_ms(retention_secs));
            self.tier_mut(tier).expire_before(cutoff);
        }
        let cutoff = now_ms.saturating_sub(secs_to_ms(self.config.retention_counters_secs));
        self.counters.expire_before(cutoff);
        self.counters.flush()?;
        self.enforce_budget();
        Ok(())
    }

    pub fn stats(&self) -> StoreStats {
        StoreStats {
            tiers: self.tiers.iter().map(TierData::stats).collect(),
            open_buckets: self.open.bucket_count(),
            open_rows: self.open.row_count(),
            open_estimated_bytes: self.open.estimated_bytes(),
            counter_rows: self.counters.row_count(),
            counter_estimated_bytes: self.counters.estimated_bytes(),
            estimated_bytes: self.estimated_bytes(),
            records: self.open.records,
            late_records: self.open.late_records,
            counter_samples: self.counters.samples,
            counter_resets: self.counters.resets,
            counter_interfaces: self.counters.baseline_count(),
            counter_baselines_evicted: self.counters.baselines_evicted,
            counter_evicted_rows: self.counters.evicted_rows,
        }
    }

    /// Every bucket of `tier` that ends at or before this time has closed:
    /// a query up to it sees all it will ever see (late records are
    /// counted, not added). Buckets without traffic are not stored, so
    /// this, not the newest bucket, tells a reader how far time has gone.
    pub fn closed_before_ms(&self, tier: Tier) -> i64 {
        bucket_start(self.open.closed_before_ms(), tier.bucket_ms())
    }

    /// The finest tier that still holds everything from `window.start_ms`
    /// on (nothing at or after it was dropped); the 1 min tier when none
    /// does.
    pub fn choose_tier(&self, window: TimeWindow) -> Tier {
        Tier::ALL
            .into_iter()
            .find(|tier| self.tier(*tier).dropped_before_ms <= window.start_ms)
            .unwrap_or(Tier::OneMinute)
    }

    fn tier(&self, tier: Tier) -> &TierData {
        &self.tiers[tier.index()]
    }

    fn tier_mut(&mut self, tier: Tier) -> &mut TierData {
        &mut self.tiers[tier.index()]
    }

    fn estimated_bytes(&self) -> usize {
        self.tiers.iter().map(|t| t.estimated_bytes).sum::<usize>()
            + self.open.estimated_bytes()
            + self
                .pending_10s
                .values()
                .chain(self.pending_1m.values())
                .map(PendingBucket::estimated_bytes)
                .sum::<usize>()
            + self.counters.estimated_bytes()
    }

    /// Closes the 1 s buckets that end at or before `now_ms - grace`, then
    /// rolls up every coarser bucket whose finer buckets have all closed.
    fn close_due(&mut self, now_ms: i64) -> Result<(), StoreError> {
        let grace = i64::try_from(self.config.close_grace_ms).unwrap_or(i64::MAX);
        let boundary = bucket_start(now_ms.saturating_sub(grace), FINE_BUCKET_MS);
        if boundary <= self.open.closed_before_ms() {
            return Ok(());
        }
        for (start, mut map) in self.open.close_before(boundary) {
            let window = bucket_start(start, Tier::TenSeconds.bucket_ms());
            let pending = self.pending_10s.entry(window).or_default();
            let built = frames::close_bucket(
                start,
                &mut map,
                &mut self.close_rows,
                &mut pending.sums,
                &self.exporters,
                &mut self.classifier,
            );
            self.open.recycle(map);
            self.tier_mut(Tier::OneSecond).insert(start, built?)?;
        }
        if self.classifier.caches_full() {
            // The pending sums are keyed by ids the trim invalidates.
            self.flush_pending()?;
            self.classifier.trim_caches();
        }
        self.roll_up_due(boundary)?;
        self.enforce_budget();
        Ok(())
    }

    fn roll_up_due(&mut self, boundary: i64) -> Result<(), StoreError> {
        let ten = Tier::TenSeconds.bucket_ms();
        for (start, pending) in take_complete(&mut self.pending_10s, ten, boundary) {
            let frame = pending.finish(start, &self.exporters, &self.classifier)?;
            let minute = bucket_start(start, Tier::OneMinute.bucket_ms());
            let into = self.pending_1m.entry(minute).or_default();
            if pending.has_frames() {
                into.push_frame(frame.clone());
            } else {
                into.fold(&pending.sums);
            }
            self.tier_mut(Tier::TenSeconds).insert(start, frame)?;
        }
        let sixty = Tier::OneMinute.bucket_ms();
        for (start, pending) in take_complete(&mut self.pending_1m, sixty, boundary) {
            let frame = pending.finish(start, &self.exporters, &self.classifier)?;
            self.tier_mut(Tier::OneMinute).insert(start, frame)?;
        }
        Ok(())
    }

    /// Turns every pending bucket's sums into frames, before the ids
    /// their keys hold are invalidated.
    fn flush_pending(&mut self) -> Result<(), StoreError> {
        for (start, pending) in self.pending_10s.iter_mut().chain(&mut self.pending_1m) {
            pending.flush(*start, &self.exporters, &self.classifier)?;
        }
        Ok(())
    }

    /// Drops the oldest buckets, finest tier first, until the estimated
    /// size is within the budget (or no closed bucket is left).
    fn enforce_budget(&mut self) {
        let budget = usize::try_from(self.config.memory_budget_bytes).unwrap_or(usize::MAX);
        for index in 0..self.tiers.len() {
            while self.estimated_bytes() > budget {
                let tier = &mut self.tiers[index];
                let Some(rows) = tier.pop_oldest() else {
                    break;
                };
                tier.evicted_buckets += 1;
                tier.evicted_rows += rows as u64;
            }
        }
        // Counter samples last: they are few and the links' truth.
        while self.estimated_bytes() > budget {
            if self.counters.pop_oldest_chunk().is_none() {
                break;
            }
        }
    }
}

/// Removes and returns the pending groups whose bucket of `width_ms` ends
/// at or before `boundary` (all their finer buckets have closed).
fn take_complete<T>(pending: &mut BTreeMap<i64, T>, width_ms: i64, boundary: i64) -> Vec<(i64, T)> {
    let mut complete = Vec::new();
    while let Some(entry) = pending.first_entry() {
        if entry.key().saturating_add(width_ms) > boundary {
            break;
        }
        complete.push(entry.remove_entry());
    }
    complete
}

fn secs_to_ms(secs: u64) -> i64 {
    i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests;
