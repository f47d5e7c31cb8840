//! Polars frames: a closed 1 s bucket becomes a frame (one row per
//! distinct flow key), and finer buckets roll up into coarser ones with a
//! Polars `group_by`.

use polars::prelude::*;

use super::classify::{Classifier, Place};
use super::error::StoreError;
use super::ingest::{Exporters, FlowKey, FlowMap, FlowSums};
use super::schema::*;

/// The 1 s frame of one closed bucket (emptying its map, which the caller
/// may reuse): the full flow key with class, sites and prefixes looked up
/// once per distinct key.
pub(crate) fn fine_frame(
    bucket_start_ms: i64,
    map: &mut FlowMap,
    exporters: &Exporters,
    classifier: &mut Classifier,
) -> Result<DataFrame, StoreError> {
    let rows: Vec<(FlowKey, FlowSums)> = map.drain().collect();
    let places: Vec<(Place, Place)> = rows
        .iter()
        .map(|(key, _)| {
            (
                classifier.place_of(key.src_addr),
                classifier.place_of(key.dst_addr),
            )
        })
        .collect();
    let classifier = &*classifier;
    let height = rows.len();
    let keys = || rows.iter().map(|(key, _)| key);
    let sums = || rows.iter().map(|(_, sums)| sums);
    let columns = vec![
        Column::new_scalar(
            BUCKET_START_MS.into(),
            Scalar::new(DataType::Int64, AnyValue::Int64(bucket_start_ms)),
            height,
        ),
        strings(EXPORTER, keys().map(|k| exporters.address_text(k.exporter))),
        numbers::<UInt32Type>(
            EXPORTER_DOMAIN,
            keys().map(|k| exporters.domain(k.exporter)),
        ),
        numbers::<UInt32Type>(IN_IF, keys().map(|k| k.in_if)),
        numbers::<UInt32Type>(OUT_IF, keys().map(|k| k.out_if)),
        numbers::<UInt128Type>(SRC_ADDR, keys().map(|k| k.src_addr)),
        numbers::<UInt128Type>(DST_ADDR, keys().map(|k| k.dst_addr)),
        numbers::<UInt16Type>(SRC_PORT, keys().map(|k| k.src_port)),
        numbers::<UInt16Type>(DST_PORT, keys().map(|k| k.dst_port)),
        numbers::<UInt8Type>(PROTOCOL, keys().map(|k| k.protocol)),
        numbers::<UInt8Type>(DSCP, keys().map(|k| k.dscp)),
        strings(CLASS, keys().map(|k| classifier.class_of(k.dscp).as_str())),
        strings(
            SRC_SITE,
            places.iter().map(|(s, _)| classifier.site_name(s.site)),
        ),
        strings(
            DST_SITE,
            places.iter().map(|(_, d)| classifier.site_name(d.site)),
        ),
        strings(
            SRC_PREFIX,
            places.iter().map(|(s, _)| classifier.prefix_text(s.prefix)),
        ),
        strings(
            DST_PREFIX,
            places.iter().map(|(_, d)| classifier.prefix_text(d.prefix)),
        ),
        numbers::<UInt64Type>(BYTES, sums().map(|s| s.bytes)),
        numbers::<UInt64Type>(PACKETS, sums().map(|s| s.packets)),
        numbers::<UInt64Type>(FLOWS, sums().map(|s| s.flows)),
    ];
    DataFrame::new(height, columns).map_err(|e| StoreError::polars("building a 1 s bucket", e))
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
