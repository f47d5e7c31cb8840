//! Parquet export and import of the store's closed buckets and counters.
//!
//! One file per table: `flows_1s.parquet`, `flows_10s.parquet`,
//! `flows_1m.parquet`, `interface_counters.parquet`. Addresses are text
//! (`10.0.0.1`), times Int64 Unix milliseconds, so DuckDB and pandas read
//! them as they are. Each file is written under a temporary name and
//! renamed, so a reader never sees half a file.
//!
//! An import reads and checks every file before it changes the store: a
//! file with a missing, extra or mistyped column, a null where none may
//! be, an address that does not parse or a bucket start off its tier's
//! grid is rejected with its file, column (and row) named.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use polars::prelude::*;
use serde::Serialize;

use super::classify::{address_text, parse_address};
use super::error::StoreError;
use super::frames::{self, Columns};
use super::schema::{self, BUCKET_START_MS, DST_ADDR, SRC_ADDR};
use super::{TelemetryStore, Tier};

pub(crate) const COUNTERS_FILE: &str = "interface_counters.parquet";

fn flows_file(tier: Tier) -> &'static str {
    match tier {
        Tier::OneSecond => "flows_1s.parquet",
        Tier::TenSeconds => "flows_10s.parquet",
        Tier::OneMinute => "flows_1m.parquet",
    }
}

/// A file written or read, and its rows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExportedFile {
    pub path: PathBuf,
    pub rows: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExportSummary {
    pub files: Vec<ExportedFile>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImportSummary {
    /// The files read, with their rows.
    pub files: Vec<ExportedFile>,
    /// Expected files that were not in the folder (nothing was read for
    /// them).
    pub missing: Vec<PathBuf>,
}

/// What an import read, checked, before it goes into the store.
struct ImportedTables {
    flows: Vec<(Tier, DataFrame)>,
    counters: Option<DataFrame>,
}

impl TelemetryStore {
    /// Writes every tier's closed buckets and the counters table into `dir`
    /// (created if needed), replacing files of the same names.
    pub fn export_parquet(&self, dir: &Path) -> Result<ExportSummary, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
        let mut files = Vec::new();
        for tier in Tier::ALL {
            let mut frame = self.tier_table(tier)?;
            if tier == Tier::OneSecond {
                addresses_to_text(&mut frame)?;
            }
            files.push(write_atomically(&dir.join(flows_file(tier)), &mut frame)?);
        }
        let mut counters = self.counters.all()?;
        files.push(write_atomically(&dir.join(COUNTERS_FILE), &mut counters)?);
        Ok(ExportSummary { files })
    }

    /// Reads the files [`Self::export_parquet`] writes back into the store
    /// (for replay). Files not in `dir` are listed as missing; a file that
    /// does not match its table's schema fails the whole import, and then
    /// nothing is added.
    ///
    /// Imported buckets count as closed. Coarse buckets are not rebuilt
    /// from imported finer ones: each tier gets what its own file holds.
    pub fn import_parquet(&mut self, dir: &Path) -> Result<ImportSummary, StoreError> {
        let mut summary = ImportSummary {
            files: Vec::new(),
            missing: Vec::new(),
        };
        let tables = read_tables(dir, &mut summary)?;
        let mut latest_end = i64::MIN;
        for (tier, frame) in tables.flows {
            for (start, bucket) in split_by_bucket(&frame)? {
                latest_end = latest_end.max(start.saturating_add(tier.bucket_ms()));
                self.tier_mut(tier).insert(start, bucket)?;
            }
        }
        if let Some(counters) = tables.counters {
            self.counters.push_chunk(counters)?;
        }
        self.open.mark_closed_before(latest_end);
        self.enforce_budget();
        Ok(summary)
    }

    /// Every closed bucket of `tier` as one frame of its in-memory schema.
    fn tier_table(&self, tier: Tier) -> Result<DataFrame, StoreError> {
        let frames: Vec<DataFrame> = self
            .tier(tier)
            .buckets
            .values()
            .map(|bucket| bucket.frame.clone())
            .collect();
        match frames::stacked(&frames)? {
            Some(all) => all
                .collect()
                .map_err(|e| StoreError::polars("stacking a tier for export", e)),
            None => Ok(DataFrame::empty_with_schema(&frames::schema_of(
                &in_memory_columns(tier),
            ))),
        }
    }
}

fn in_memory_columns(tier: Tier) -> Vec<(&'static str, DataType)> {
    match tier {
        Tier::OneSecond => schema::fine_columns(),
        Tier::TenSeconds | Tier::OneMinute => schema::coarse_columns(),
    }
}

fn parquet_columns(tier: Tier) -> Vec<(&'static str, DataType)> {
    match tier {
        Tier::OneSecond => schema::fine_parquet_columns(),
        Tier::TenSeconds | Tier::OneMinute => schema::coarse_columns(),
    }
}

/// Replaces the 1 s tier's number addresses with their text.
fn addresses_to_text(frame: &mut DataFrame) -> Result<(), StoreError> {
    for name in [SRC_ADDR, DST_ADDR] {
        let numbers = Columns::new(frame).u128(name)?;
        let texts =
            StringChunked::from_iter_values(name.into(), numbers.into_iter().map(address_text));
        frame
            .replace(name, texts.into_column())
            .map_err(|e| StoreError::polars("writing addresses as text", e))?;
    }
    Ok(())
}

/// Replaces text addresses with their numbers, naming the first bad row.
fn addresses_from_text(frame: &mut DataFrame, path: &Path) -> Result<(), StoreError> {
    for name in [SRC_ADDR, DST_ADDR] {
        let texts = Columns::new(frame).strings(name)?;
        let mut numbers = Vec::with_capacity(texts.len());
        for (row, text) in texts.iter().enumerate() {
            let number = parse_address(text).ok_or_else(|| StoreError::InvalidValue {
                path: path.to_path_buf(),
                column: name.to_string(),
                row,
                detail: format!("{text:?} is not an IP address"),
            })?;
            numbers.push(number);
        }
        let column = UInt128Chunked::from_vec(name.into(), numbers).into_column();
        frame
            .replace(name, column)
            .map_err(|e| StoreError::polars("reading addresses", e))?;
    }
    Ok(())
}

fn write_atomically(path: &Path, frame: &mut DataFrame) -> Result<ExportedFile, StoreError> {
    let file_name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary = path.with_file_name(format!(".{file_name}.tmp"));
    let mut file = File::create(&temporary).map_err(|e| StoreError::io(&temporary, e))?;
    ParquetWriter::new(&mut file)
        .finish(frame)
        .map_err(|e| StoreError::io(&temporary, e))?;
    file.flush().map_err(|e| StoreError::io(&temporary, e))?;
    file.sync_all().map_err(|e| StoreError::io(&temporary, e))?;
    drop(file);
    std::fs::rename(&temporary, path).map_err(|e| StoreError::io(path, e))?;
    Ok(ExportedFile {
        path: path.to_path_buf(),
        rows: frame.height(),
    })
}

fn read_tables(dir: &Path, summary: &mut ImportSummary) -> Result<ImportedTables, StoreError> {
    let mut tables = ImportedTables {
        flows: Vec::new(),
        counters: None,
    };
    for tier in Tier::ALL {
        let path = dir.join(flows_file(tier));
        let Some(mut frame) = read_checked(&path, &parquet_columns(tier), &[], summary)? else {
            continue;
        };
        if tier == Tier::OneSecond {
            addresses_from_text(&mut frame, &path)?;
        }
        check_bucket_grid(&frame, tier, &path)?;
        tables.flows.push((tier, frame));
    }
    let path = dir.join(COUNTERS_FILE);
    let columns = schema::counters::columns();
    tables.counters = read_checked(&path, &columns, &schema::counters::NULLABLE, summary)?;
    Ok(tables)
}

/// Reads `path` and checks it has exactly `columns` (returned in that
/// order) with nulls only in `nullable`. None when the file is missing.
fn read_checked(
    path: &Path,
    columns: &[(&'static str, DataType)],
    nullable: &[&str],
    summary: &mut ImportSummary,
) -> Result<Option<DataFrame>, StoreError> {
    if !path.exists() {
        summary.missing.push(path.to_path_buf());
        return Ok(None);
    }
    let file = File::open(path).map_err(|e| StoreError::io(path, e))?;
    let frame = ParquetReader::new(file)
        .finish()
        .map_err(|e| StoreError::io(path, e))?;
    let schema_error = |column: &str, detail: String| StoreError::Schema {
        path: path.to_path_buf(),
        column: column.to_string(),
        detail,
    };
    for name in frame.get_column_names() {
        if !columns
            .iter()
            .any(|(expected, _)| *expected == name.as_str())
        {
            return Err(schema_error(name, "is not a column of this table".into()));
        }
    }
    for (name, dtype) in columns {
        let column = frame
            .column(name)
            .map_err(|_| schema_error(name, "is missing".into()))?;
        if column.dtype() != dtype {
            let detail = format!("has type {}, expected {dtype}", column.dtype());
            return Err(schema_error(name, detail));
        }
        if column.null_count() > 0 && !nullable.contains(name) {
            let detail = format!("has {} nulls", column.null_count());
            return Err(schema_error(name, detail));
        }
    }
    let frame = frame
        .select(columns.iter().map(|(name, _)| *name))
        .map_err(|e| StoreError::polars("ordering imported columns", e))?;
    summary.files.push(ExportedFile {
        path: path.to_path_buf(),
        rows: frame.height(),
    });
    Ok(Some(frame))
}

/// Every bucket start must be on the tier's grid (a multiple of its width).
fn check_bucket_grid(frame: &DataFrame, tier: Tier, path: &Path) -> Result<(), StoreError> {
    let starts = Columns::new(frame).i64(BUCKET_START_MS)?;
    let width = tier.bucket_ms();
    match starts.iter().position(|start| start.rem_euclid(width) != 0) {
        Some(row) => Err(StoreError::InvalidValue {
            path: path.to_path_buf(),
            column: BUCKET_START_MS.to_string(),
            row,
            detail: format!(
                "{} is not a multiple of {width} ms",
                starts.get(row).copied().unwrap_or(0)
            ),
        }),
        None => Ok(()),
    }
}

/// Splits a table into its buckets, oldest first.
fn split_by_bucket(frame: &DataFrame) -> Result<Vec<(i64, DataFrame)>, StoreError> {
    let sorted = frame
        .sort(
            [BUCKET_START_MS],
            SortMultipleOptions::new().with_maintain_order(true),
        )
        .map_err(|e| StoreError::polars("sorting imported buckets", e))?;
    let starts = Columns::new(&sorted).i64(BUCKET_START_MS)?;
    let mut buckets = Vec::new();
    let mut offset = 0;
    while let Some(&start) = starts.get(offset) {
        let length = starts
            .iter()
            .skip(offset)
            .take_while(|&&s| s == start)
            .count();
        let slice = sorted.slice(offset as i64, length);
        buckets.push((start, slice));
        offset += length;
    }
    Ok(buckets)
}
