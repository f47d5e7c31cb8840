//! Polars frames: a closed 1 s bucket becomes a frame (one row per
//! distinct flow key), and its rows are summed into the 10 s and 1 min
//! buckets as they close; Polars' `group_by` sums frames where the sums
//! were flushed early.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};

use polars::prelude::*;

use super::classify::{Classifier, Place};
use super::error::StoreError;
use super::ingest::{Exporters, FingerprintHasher, FlowKey, FlowMap, FlowSums};
use super::schema::*;

/// What the 10 s and 1 min tiers group by, as the store's exporter ids and
/// the classifier's site and prefix ids: valid until the classifier's
/// caches are trimmed or its sites replaced, so the store turns its
/// pending sums into frames before either (see [`PendingBucket::flush`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CoarseKey {
    exporter: u32,
    in_if: u32,
    out_if: u32,
    src: Place,
    dst: Place,
    protocol: u8,
    dscp: u8,
}

impl Hash for CoarseKey {
    /// Four words rather than nine fields: the hasher is fastest on whole
    /// `u64`s.
    fn hash<H: Hasher>(&self, state: &mut H) {
        let pair = |high: u32, low: u32| (u64::from(high) << 32) | u64::from(low);
        state.write_u64(pair(self.exporter, self.in_if));
        state.write_u64(pair(self.out_if, self.src.site));
        state.write_u64(pair(self.src.prefix, self.dst.site));
        state.write_u64(pair(
            self.dst.prefix,
            (u32::from(self.protocol) << 8) | u32::from(self.dscp),
        ));
    }
}

pub(crate) type CoarseSums = HashMap<CoarseKey, FlowSums, BuildHasherDefault<FingerprintHasher>>;

fn add_sums(into: &mut FlowSums, sums: &FlowSums) {
    into.bytes = into.bytes.saturating_add(sums.bytes);
    into.packets = into.packets.saturating_add(sums.packets);
    into.flows = into.flows.saturating_add(sums.flows);
}

/// A 10 s or 1 min bucket still filling: its finer buckets summed by the
/// coarse key in a plain hash map as they close (a few hash updates per
/// distinct flow, where a Polars group-by over every finer row at the end
/// cost several times more), and frames of sums already flushed.
#[derive(Debug, Default)]
pub(crate) struct PendingBucket {
    pub sums: CoarseSums,
    frames: Vec<DataFrame>,
}

impl PendingBucket {
    /// Adds a finer bucket's sums (a finer bucket that has flushed frames
    /// is added as its finished frame instead: [`Self::push_frame`]).
    pub fn fold(&mut self, finer: &CoarseSums) {
        for (key, sums) in finer {
            add_sums(self.sums.entry(*key).or_default(), sums);
        }
    }

    /// Adds a finer bucket that is a frame already.
    pub fn push_frame(&mut self, frame: DataFrame) {
        self.frames.push(frame);
    }

    pub fn has_frames(&self) -> bool {
        !self.frames.is_empty()
    }

    /// Turns the sums into a frame, so that the ids in their keys may be
    /// invalidated.
    pub fn flush(
        &mut self,
        bucket_start_ms: i64,
        exporters: &Exporters,
        classifier: &Classifier,
    ) -> Result<(), StoreError> {
        if !self.sums.is_empty() {
            let frame = coarse_frame(bucket_start_ms, &self.sums, exporters, classifier)?;
            self.frames.push(frame);
            self.sums.clear();
        }
        Ok(())
    }

    /// The bucket's frame, its sums and any flushed frames together.
    pub fn finish(
        &self,
        bucket_start_ms: i64,
        exporters: &Exporters,
        classifier: &Classifier,
    ) -> Result<DataFrame, StoreError> {
        let summed = coarse_frame(bucket_start_ms, &self.sums, exporters, classifier)?;
        if self.frames.is_empty() {
            return Ok(summed);
        }
        let mut all = self.frames.clone();
        all.push(summed);
        roll_up(&all, bucket_start_ms)
    }

    pub fn estimated_bytes(&self) -> usize {
        let entry = std::mem::size_of::<(CoarseKey, FlowSums)>() + 1;
        self.sums.capacity() * entry
            + self
                .frames
                .iter()
                .map(DataFrame::estimated_size)
                .sum::<usize>()
    }
}

/// The 1 s frame of one closed bucket (emptying its map, which the caller
/// may reuse): the full flow key with class, sites and prefixes looked up
/// once per distinct key. Its rows are also added to `coarse` (the 10 s
/// bucket's sums). `rows` is a buffer reused from one second to the next:
/// at high flow counts it is megabytes, which fresh would page-fault in.
pub(crate) fn close_bucket(
    bucket_start_ms: i64,
    map: &mut FlowMap,
    rows: &mut Vec<(FlowKey, FlowSums, Place, Place)>,
    coarse: &mut CoarseSums,
    exporters: &Exporters,
    classifier: &mut Classifier,
) -> Result<DataFrame, StoreError> {
    rows.clear();
    rows.extend(map.drain().map(|(key, sums)| {
        let src = classifier.place_of(key.src_addr);
        let dst = classifier.place_of(key.dst_addr);
        (key, sums, src, dst)
    }));
    for (key, sums, src, dst) in rows.iter() {
        let coarse_key = CoarseKey {
            exporter: key.exporter,
            in_if: key.in_if,
            out_if: key.out_if,
            src: *src,
            dst: *dst,
            protocol: key.protocol,
            dscp: key.dscp,
        };
        add_sums(coarse.entry(coarse_key).or_default(), sums);
    }
    let classifier = &*classifier;
    let height = rows.len();
    let keys = || rows.iter().map(|(key, ..)| key);
    let sums = || rows.iter().map(|(_, sums, ..)| sums);
    let [src_site, dst_site, src_prefix, dst_prefix] =
        place_columns(rows.iter().map(|(.., src, dst)| (*src, *dst)), classifier);
    let mut columns = leading_columns(
        bucket_start_ms,
        height,
        keys().map(|k| (k.exporter, k.in_if, k.out_if)),
        exporters,
    );
    columns.extend([
        numbers::<UInt128Type>(SRC_ADDR, keys().map(|k| k.src_addr)),
        numbers::<UInt128Type>(DST_ADDR, keys().map(|k| k.dst_addr)),
        numbers::<UInt16Type>(SRC_PORT, keys().map(|k| k.src_port)),
        numbers::<UInt16Type>(DST_PORT, keys().map(|k| k.dst_port)),
    ]);
    columns.extend(class_columns(
        keys().map(|k| (k.protocol, k.dscp)),
        classifier,
    ));
    columns.extend([src_site, dst_site, src_prefix, dst_prefix]);
    columns.extend(sum_columns(sums()));
    DataFrame::new(height, columns).map_err(|e| StoreError::polars("building a 1 s bucket", e))
}

/// A coarse bucket's frame from its sums.
fn coarse_frame(
    bucket_start_ms: i64,
    sums: &CoarseSums,
    exporters: &Exporters,
    classifier: &Classifier,
) -> Result<DataFrame, StoreError> {
    let height = sums.len();
    let keys = || sums.keys();
    let values = || sums.values();
    let [src_site, dst_site, src_prefix, dst_prefix] =
        place_columns(keys().map(|k| (k.src, k.dst)), classifier);
    let mut columns = leading_columns(
        bucket_start_ms,
        height,
        keys().map(|k| (k.exporter, k.in_if, k.out_if)),
        exporters,
    );
    columns.extend([src_prefix, dst_prefix, src_site, dst_site]);
    columns.extend(class_columns(
        keys().map(|k| (k.protocol, k.dscp)),
        classifier,
    ));
    columns.extend(sum_columns(values()));
    DataFrame::new(height, columns).map_err(|e| StoreError::polars("building a coarse bucket", e))
}

/// The protocol, DSCP and traffic class columns of each row's (protocol,
/// DSCP).
fn class_columns(
    protocol_dscp: impl Iterator<Item = (u8, u8)> + Clone,
    classifier: &Classifier,
) -> [Column; 3] {
    [
        numbers::<UInt8Type>(PROTOCOL, protocol_dscp.clone().map(|(p, _)| p)),
        numbers::<UInt8Type>(DSCP, protocol_dscp.clone().map(|(_, d)| d)),
        strings(
            CLASS,
            protocol_dscp.map(|(_, d)| classifier.class_of(d).as_str()),
        ),
    ]
}

/// The bytes, packets and flows columns of each row's sums.
fn sum_columns<'a>(sums: impl Iterator<Item = &'a FlowSums> + Clone) -> [Column; 3] {
    [
        numbers::<UInt64Type>(BYTES, sums.clone().map(|s| s.bytes)),
        numbers::<UInt64Type>(PACKETS, sums.clone().map(|s| s.packets)),
        numbers::<UInt64Type>(FLOWS, sums.map(|s| s.flows)),
    ]
}

/// The site and prefix columns of each row's (source, destination) places:
/// `[src_site, dst_site, src_prefix, dst_prefix]` (each tier puts them in
/// its own order).
fn place_columns(
    places: impl Iterator<Item = (Place, Place)> + Clone,
    classifier: &Classifier,
) -> [Column; 4] {
    [
        strings(
            SRC_SITE,
            places.clone().map(|(s, _)| classifier.site_name(s.site)),
        ),
        strings(
            DST_SITE,
            places.clone().map(|(_, d)| classifier.site_name(d.site)),
        ),
        strings(
            SRC_PREFIX,
            places
                .clone()
                .map(|(s, _)| classifier.prefix_text(s.prefix)),
        ),
        strings(
            DST_PREFIX,
            places.map(|(_, d)| classifier.prefix_text(d.prefix)),
        ),
    ]
}

/// The columns every flow tier starts with: the bucket start, the exporter
/// (address text and domain) and the interfaces, from each row's
/// (exporter id, in_if, out_if).
fn leading_columns(
    bucket_start_ms: i64,
    height: usize,
    rows: impl Iterator<Item = (u32, u32, u32)> + Clone,
    exporters: &Exporters,
) -> Vec<Column> {
    vec![
        Column::new_scalar(
            BUCKET_START_MS.into(),
            Scalar::new(DataType::Int64, AnyValue::Int64(bucket_start_ms)),
            height,
        ),
        strings(
            EXPORTER,
            rows.clone().map(|(e, ..)| exporters.address_text(e)),
        ),
        numbers::<UInt32Type>(
            EXPORTER_DOMAIN,
            rows.clone().map(|(e, ..)| exporters.domain(e)),
        ),
        numbers::<UInt32Type>(IN_IF, rows.clone().map(|(_, i, _)| i)),
        numbers::<UInt32Type>(OUT_IF, rows.map(|(.., o)| o)),
    ]
}

fn strings<'a>(name: &str, values: impl Iterator<Item = &'a str>) -> Column {
    StringChunked::from_iter_values(name.into(), values).into_column()
}

fn numbers<T>(name: &str, values: impl Iterator<Item = T::Native>) -> Column
where
    T: PolarsNumericType,
{
    ChunkedArray::<T>::from_iter_values(name.into(), values).into_column()
}

/// All of `frames` stacked, as one lazy frame (None when there are none).
pub(crate) fn stacked(frames: &[DataFrame]) -> Result<Option<LazyFrame>, StoreError> {
    if frames.is_empty() {
        return Ok(None);
    }
    let lazy: Vec<LazyFrame> = frames.iter().map(|f| f.clone().lazy()).collect();
    let args = UnionArgs {
        parallel: false,
        ..UnionArgs::default()
    };
    concat(lazy, args)
        .map(Some)
        .map_err(|e| StoreError::polars("stacking buckets", e))
}

/// Rolls finer buckets (1 s frames, or 10 s frames) up into one bucket of a
/// coarser tier starting at `bucket_start_ms`, grouped by the coarse key.
pub(crate) fn roll_up(frames: &[DataFrame], bucket_start_ms: i64) -> Result<DataFrame, StoreError> {
    let Some(all) = stacked(frames)? else {
        return Ok(DataFrame::empty_with_schema(&schema_of(&coarse_columns())));
    };
    let keys: Vec<Expr> = COARSE_KEYS.iter().map(|name| col(*name)).collect();
    let sums: Vec<Expr> = SUMS.iter().map(|name| sum_of(name)).collect();
    let order: Vec<Expr> = coarse_columns()
        .iter()
        .map(|(name, _)| col(*name))
        .collect();
    all.group_by(keys)
        .agg(sums)
        .with_column(
            lit(bucket_start_ms)
                .cast(DataType::Int64)
                .alias(BUCKET_START_MS),
        )
        .select(order)
        .collect()
        .map_err(|e| StoreError::polars("rolling buckets up", e))
}

/// The sum of a counter column, kept as `UInt64`.
pub(crate) fn sum_of(name: &str) -> Expr {
    col(name).sum().cast(DataType::UInt64).alias(name)
}

pub(crate) fn schema_of(columns: &[(&'static str, DataType)]) -> Schema {
    columns
        .iter()
        .map(|(name, dtype)| Field::new((*name).into(), dtype.clone()))
        .collect()
}

/// Typed access to a result frame's columns, naming the column on error.
pub(crate) struct Columns<'a> {
    frame: &'a DataFrame,
}

impl<'a> Columns<'a> {
    pub fn new(frame: &'a DataFrame) -> Columns<'a> {
        Columns { frame }
    }

    fn column(&self, name: &str) -> Result<&'a Column, StoreError> {
        self.frame
            .column(name)
            .map_err(|e| StoreError::polars(format!("reading column {name}"), e))
    }

    pub fn u64(&self, name: &str) -> Result<Vec<u64>, StoreError> {
        let column = self.column(name)?.cast(&DataType::UInt64);
        let column = column.map_err(|e| StoreError::polars(format!("reading column {name}"), e))?;
        let values = column
            .u64()
            .map_err(|e| StoreError::polars(format!("reading column {name}"), e))?;
        Ok(values.iter().map(|v| v.unwrap_or(0)).collect())
    }

    pub fn i64(&self, name: &str) -> Result<Vec<i64>, StoreError> {
        let values = self
            .column(name)?
            .i64()
            .map_err(|e| StoreError::polars(format!("reading column {name}"), e))?;
        Ok(values.iter().map(|v| v.unwrap_or(0)).collect())
    }

    pub fn u128(&self, name: &str) -> Result<Vec<u128>, StoreError> {
        let values = self
            .column(name)?
            .u128()
            .map_err(|e| StoreError::polars(format!("reading column {name}"), e))?;
        Ok(values.iter().map(|v| v.unwrap_or(0)).collect())
    }

    pub fn f64_opt(&self, name: &str) -> Result<Vec<Option<f64>>, StoreError> {
        let values = self
            .column(name)?
            .f64()
            .map_err(|e| StoreError::polars(format!("reading column {name}"), e))?;
        Ok(values.iter().collect())
    }

    pub fn u64_opt(&self, name: &str) -> Result<Vec<Option<u64>>, StoreError> {
        let values = self
            .column(name)?
            .u64()
            .map_err(|e| StoreError::polars(format!("reading column {name}"), e))?;
        Ok(values.iter().collect())
    }

    pub fn i64_opt(&self, name: &str) -> Result<Vec<Option<i64>>, StoreError> {
        let values = self
            .column(name)?
            .i64()
            .map_err(|e| StoreError::polars(format!("reading column {name}"), e))?;
        Ok(values.iter().collect())
    }

    pub fn strings(&self, name: &str) -> Result<Vec<String>, StoreError> {
        let values = self
            .column(name)?
            .str()
            .map_err(|e| StoreError::polars(format!("reading column {name}"), e))?;
        Ok(values
            .iter()
            .map(|v| v.unwrap_or_default().to_string())
            .collect())
    }
}
