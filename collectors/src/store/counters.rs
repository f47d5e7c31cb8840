//! Interface counters: cumulative samples in, rates per interval out.
//!
//! Each sample is compared with the previous sample of the same (device,
//! if_index). A counter that went backwards (a 32-bit wrap, a reboot, a
//! cleared interface) makes that interval unknowable: its rates stay null
//! and the sample becomes the new baseline, so no negative or huge rate is
//! ever produced. A sample not newer than the baseline is kept as a row
//! with null rates and does not move the baseline.
//!
//! Rows are staged in plain Rust and turned into Polars chunks of up to a
//! minute (or [`CHUNK_ROWS`] rows): counters arrive a few per interface
//! every tens of seconds, too few per call for a frame each.

use std::collections::{HashMap, VecDeque};

use polars::prelude::*;

use crate::record::InterfaceCounters;

use super::error::StoreError;
use super::frames::{self, Columns};
use super::schema::counters::*;

/// Staged rows become a chunk once this many have gathered...
const CHUNK_ROWS: usize = 65_536;
/// ... or once they span this long.
const CHUNK_SPAN_MS: i64 = 60_000;

/// One sample and what it says about the interval before it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CounterRow {
    pub sample: InterfaceCounters,
    pub rates: Option<IntervalRates>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct IntervalRates {
    pub interval_ms: i64,
    pub in_bps: f64,
    pub out_bps: f64,
    pub in_pps: f64,
    pub out_pps: f64,
    pub in_errors: u64,
    pub out_errors: u64,
    pub in_discards: u64,
    pub out_discards: u64,
}

/// A Polars chunk of the counters table and the time span it covers.
#[derive(Debug, Clone)]
struct Chunk {
    oldest_ms: i64,
    newest_ms: i64,
    frame: DataFrame,
}

/// An interface's last sample, and when it was first heard of (time, and
/// order among the interfaces).
#[derive(Debug, Clone)]
struct Baseline {
    sample: InterfaceCounters,
    first_ms: i64,
    first_seq: u64,
}

#[derive(Debug, Default)]
pub(crate) struct CounterTable {
    baselines: HashMap<(String, u32), Baseline>,
    /// Interfaces heard of so far (each baseline's `first_seq`).
    heard: u64,
    staged: Vec<CounterRow>,
    chunks: VecDeque<Chunk>,
    pub samples: u64,
    pub resets: u64,
    /// Baselines forgotten to stay within the interface cap.
    pub baselines_evicted: u64,
    /// Sample rows dropped to stay within the memory budget.
    pub evicted_rows: u64,
}

/// What one baseline costs in memory, estimated: the key and the sample,
/// the hash table's share, and the device and interface name strings
/// (addresses and short names).
const BASELINE_BYTES: usize =
    std::mem::size_of::<(String, u32)>() + std::mem::size_of::<Baseline>() + 16 + 64;

/// The rates from `previous` to `current`, or None when the interval is
/// empty or any counter went backwards.
pub(crate) fn interval_rates(
    previous: &InterfaceCounters,
    current: &InterfaceCounters,
) -> Option<IntervalRates> {
    let interval_ms = current.received_ms.checked_sub(previous.received_ms)?;
    if interval_ms <= 0 {
        return None;
    }
    let delta = |now: u64, before: u64| now.checked_sub(before);
    let in_octets = delta(current.in_octets, previous.in_octets)?;
    let out_octets = delta(current.out_octets, previous.out_octets)?;
    let in_packets = delta(current.in_packets, previous.in_packets)?;
    let out_packets = delta(current.out_packets, previous.out_packets)?;
    let in_errors = delta(current.in_errors, previous.in_errors)?;
    let out_errors = delta(current.out_errors, previous.out_errors)?;
    let in_discards = delta(current.in_discards, previous.in_discards)?;
    let out_discards = delta(current.out_discards, previous.out_discards)?;
    let seconds = interval_ms as f64 / 1000.0;
    Some(IntervalRates {
        interval_ms,
        in_bps: in_octets as f64 * 8.0 / seconds,
        out_bps: out_octets as f64 * 8.0 / seconds,
        in_pps: in_packets as f64 / seconds,
        out_pps: out_packets as f64 / seconds,
        in_errors,
        out_errors,
        in_discards,
        out_discards,
    })
}

impl CounterTable {
    /// The ifindex a device last reported for the interface named
    /// `if_name` (interfaces are renamed and re-created, so the newest
    /// sample wins).
    pub fn interface_index(&self, device: &str, if_name: &str) -> Option<u32> {
        self.baselines
            .iter()
            .filter(|((name, _), baseline)| {
                name == device && baseline.sample.if_name.as_deref() == Some(if_name)
            })
            .max_by_key(|(_, baseline)| baseline.sample.received_ms)
            .map(|((_, if_index), _)| *if_index)
    }

    /// Adds samples; at most `max_interfaces` baselines are kept.
    pub fn ingest(
        &mut self,
        counters: &[InterfaceCounters],
        max_interfaces: usize,
    ) -> Result<(), StoreError> {
        for sample in counters {
            let key = (sample.device.clone(), sample.if_index);
            if !self.baselines.contains_key(&key) && self.baselines.len() >= max_interfaces.max(1) {
                self.forget_oldest_baselines(max_interfaces.max(1));
            }
            let rates = match self.baselines.get_mut(&key) {
                Some(previous) if sample.received_ms <= previous.sample.received_ms => None,
                Some(previous) => {
                    let rates = interval_rates(&previous.sample, sample);
                    if rates.is_none() {
                        self.resets += 1;
                    }
                    previous.sample = sample.clone();
                    rates
                }
                None => {
                    self.heard += 1;
                    self.baselines.insert(
                        key,
                        Baseline {
                            sample: sample.clone(),
                            first_ms: sample.received_ms,
                            first_seq: self.heard,
                        },
                    );
                    None
                }
            };
            self.staged.push(CounterRow {
                sample: sample.clone(),
                rates,
            });
            self.samples += 1;
        }
        self.flush_if_due()
    }

    /// Forgets the tenth of `cap` baselines heard from longest ago (at
    /// least one), and among those last heard at the same time the ones
    /// first heard of most recently: a flood of made-up interfaces pushes
    /// out its own entries, an interface sampled all along stays (a
    /// flood's samples arrive in the same batches as its own, after it),
    /// and a new real interface always finds room. Selecting once per
    /// tenth keeps the cost per new interface small.
    fn forget_oldest_baselines(&mut self, cap: usize) {
        use std::cmp::Reverse;
        // Oldest first: last heard, then first heard of (latest first).
        type Age<'a> = (i64, Reverse<i64>, Reverse<u64>, &'a (String, u32));
        let mut ages: Vec<Age<'_>> = self
            .baselines
            .iter()
            .map(|(key, b)| {
                (
                    b.sample.received_ms,
                    Reverse(b.first_ms),
                    Reverse(b.first_seq),
                    key,
                )
            })
            .collect();
        let count = (cap / 10).max(1).min(ages.len());
        if count == 0 {
            return;
        }
        ages.select_nth_unstable(count - 1);
        let forgotten: Vec<(String, u32)> = ages[..count]
            .iter()
            .map(|(_, _, _, key)| (*key).clone())
            .collect();
        for key in &forgotten {
            self.baselines.remove(key);
        }
        self.baselines_evicted += forgotten.len() as u64;
    }

    /// Drops the oldest chunk of samples (for the memory budget); the rows
    /// dropped, or None when no chunk is left.
    pub fn pop_oldest_chunk(&mut self) -> Option<usize> {
        let chunk = self.chunks.pop_front()?;
        let rows = chunk.frame.height();
        self.evicted_rows += rows as u64;
        Some(rows)
    }

    pub fn baseline_count(&self) -> usize {
        self.baselines.len()
    }

    fn flush_if_due(&mut self) -> Result<(), StoreError> {
        let times = self.staged.iter().map(|row| row.sample.received_ms);
        let (oldest, newest) = (times.clone().min(), times.max());
        let span_due = match (oldest, newest) {
            (Some(oldest), Some(newest)) => newest.saturating_sub(oldest) >= CHUNK_SPAN_MS,
            _ => false,
        };
        if span_due || self.staged.len() >= CHUNK_ROWS {
            self.flush()?;
        }
        Ok(())
    }

    /// Turns the staged rows into a chunk.
    pub fn flush(&mut self) -> Result<(), StoreError> {
        if self.staged.is_empty() {
            return Ok(());
        }
        let rows = std::mem::take(&mut self.staged);
        let frame = rows_frame(&rows)?;
        self.push_chunk(frame)
    }

    /// Adds a frame of the counters schema (built here, or imported).
    pub fn push_chunk(&mut self, frame: DataFrame) -> Result<(), StoreError> {
        if frame.height() == 0 {
            return Ok(());
        }
        let times = Columns::new(&frame).i64(TIME_MS)?;
        let oldest_ms = times.iter().copied().min().unwrap_or(i64::MIN);
        let newest_ms = times.iter().copied().max().unwrap_or(i64::MIN);
        self.chunks.push_back(Chunk {
            oldest_ms,
            newest_ms,
            frame,
        });
        Ok(())
    }

    /// Drops chunks whose newest sample is before `cutoff_ms` (whole
    /// chunks: a chunk spans at most a minute, so that is the precision).
    pub fn expire_before(&mut self, cutoff_ms: i64) {
        self.chunks.retain(|chunk| chunk.newest_ms >= cutoff_ms);
        self.staged
            .retain(|row| row.sample.received_ms >= cutoff_ms);
        self.baselines
            .retain(|_, baseline| baseline.sample.received_ms >= cutoff_ms);
    }

    pub fn row_count(&self) -> usize {
        self.chunks.iter().map(|c| c.frame.height()).sum::<usize>() + self.staged.len()
    }

    pub fn estimated_bytes(&self) -> usize {
        let staged = self.staged.len() * std::mem::size_of::<CounterRow>();
        self.chunks
            .iter()
            .map(|c| c.frame.estimated_size())
            .sum::<usize>()
            + staged
            + self.baselines.len() * BASELINE_BYTES
    }

    /// Every chunk overlapping `[start_ms, end_ms)`, staged rows included.
    pub fn frames_between(&self, start_ms: i64, end_ms: i64) -> Result<Vec<DataFrame>, StoreError> {
        let mut frames: Vec<DataFrame> = self
            .chunks
            .iter()
            .filter(|c| c.newest_ms >= start_ms && c.oldest_ms < end_ms)
            .map(|c| c.frame.clone())
            .collect();
        if !self.staged.is_empty() {
            frames.push(rows_frame(&self.staged)?);
        }
        Ok(frames)
    }

    /// The whole table as one frame, for export.
    pub fn all(&self) -> Result<DataFrame, StoreError> {
        let frames = self.frames_between(i64::MIN, i64::MAX)?;
        match frames::stacked(&frames)? {
            Some(lazy) => lazy
                .collect()
                .map_err(|e| StoreError::polars("stacking counters", e)),
            None => Ok(DataFrame::empty_with_schema(&frames::schema_of(&columns()))),
        }
    }
}

/// Counter rows as a frame of the counters schema.
fn rows_frame(rows: &[CounterRow]) -> Result<DataFrame, StoreError> {
    let samples = || rows.iter().map(|row| &row.sample);
    let rates = || rows.iter().map(|row| row.rates.as_ref());
    let height = rows.len();
    let columns = vec![
        Int64Chunked::from_iter_values(TIME_MS.into(), samples().map(|s| s.received_ms))
            .into_column(),
        StringChunked::from_iter_values(DEVICE.into(), samples().map(|s| s.device.as_str()))
            .into_column(),
        UInt32Chunked::from_iter_values(IF_INDEX.into(), samples().map(|s| s.if_index))
            .into_column(),
        StringChunked::from_iter_options(IF_NAME.into(), samples().map(|s| s.if_name.as_deref()))
            .into_column(),
        counter(SPEED_BPS, samples().map(|s| s.speed_bps)),
        counter(IN_OCTETS, samples().map(|s| s.in_octets)),
        counter(IN_PACKETS, samples().map(|s| s.in_packets)),
        counter(IN_ERRORS, samples().map(|s| s.in_errors)),
        counter(IN_DISCARDS, samples().map(|s| s.in_discards)),
        counter(OUT_OCTETS, samples().map(|s| s.out_octets)),
        counter(OUT_PACKETS, samples().map(|s| s.out_packets)),
        counter(OUT_ERRORS, samples().map(|s| s.out_errors)),
        counter(OUT_DISCARDS, samples().map(|s| s.out_discards)),
        Int64Chunked::from_iter_options(
            INTERVAL_MS.into(),
            rates().map(|r| r.map(|r| r.interval_ms)),
        )
        .into_column(),
        rate(IN_BPS, rates().map(|r| r.map(|r| r.in_bps))),
        rate(OUT_BPS, rates().map(|r| r.map(|r| r.out_bps))),
        rate(IN_PPS, rates().map(|r| r.map(|r| r.in_pps))),
        rate(OUT_PPS, rates().map(|r| r.map(|r| r.out_pps))),
        delta(IN_ERRORS_DELTA, rates().map(|r| r.map(|r| r.in_errors))),
        delta(OUT_ERRORS_DELTA, rates().map(|r| r.map(|r| r.out_errors))),
        delta(IN_DISCARDS_DELTA, rates().map(|r| r.map(|r| r.in_discards))),
        delta(
            OUT_DISCARDS_DELTA,
            rates().map(|r| r.map(|r| r.out_discards)),
        ),
    ];
    DataFrame::new(height, columns).map_err(|e| StoreError::polars("building counter rows", e))
}

fn counter(name: &str, values: impl Iterator<Item = u64>) -> Column {
    UInt64Chunked::from_iter_values(name.into(), values).into_column()
}

fn rate(name: &str, values: impl Iterator<Item = Option<f64>>) -> Column {
    Float64Chunked::from_iter_options(name.into(), values).into_column()
}

fn delta(name: &str, values: impl Iterator<Item = Option<u64>>) -> Column {
    UInt64Chunked::from_iter_options(name.into(), values).into_column()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(received_ms: i64, in_octets: u64, out_octets: u64) -> InterfaceCounters {
        InterfaceCounters {
            received_ms,
            device: "nodes/r1".into(),
            if_index: 3,
            speed_bps: 10_000_000_000,
            in_octets,
            in_packets: in_octets / 100,
            out_octets,
            out_packets: out_octets / 100,
            ..InterfaceCounters::default()
        }
    }

    #[test]
    fn rates_skip_a_wrap_and_a_stale_sample() {
        let mut table = CounterTable::default();
        let samples = [
            sample(0, 1_000, 500),
            sample(10_000, 1_000 + 12_500_000, 500 + 2_500),
            // A reset: in_octets goes backwards.
            sample(20_000, 100, 10_000),
            sample(30_000, 100 + 1_250_000, 10_000 + 250),
            // Not newer than the baseline: no rates, baseline kept.
            sample(30_000, 5, 5),
        ];
        table.ingest(&samples, usize::MAX).expect("valid samples");
        let rates: Vec<Option<(i64, f64, f64)>> = table
            .staged
            .iter()
            .map(|row| row.rates.map(|r| (r.interval_ms, r.in_bps, r.out_bps)))
            .collect();
        assert_eq!(
            rates,
            vec![
                None,
                Some((10_000, 10_000_000.0, 2_000.0)),
                None,
                Some((10_000, 1_000_000.0, 200.0)),
                None,
            ]
        );
        assert_eq!(table.resets, 1);
        assert_eq!(table.samples, 5);
    }
}
