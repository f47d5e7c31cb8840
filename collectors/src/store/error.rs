//! What can go wrong in the telemetry store. Every variant names what was
//! wrong: the setting, the batch column, the file and its column.

use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StoreError {
    #[error("store setting {field}: {detail}")]
    Config { field: String, detail: String },

    #[error("flow batch column {column}: {detail}")]
    InvalidBatch {
        column: &'static str,
        detail: String,
    },

    #[error("{path}: {detail}")]
    Io { path: PathBuf, detail: String },

    #[error("{path}: column {column}: {detail}")]
    Schema {
        path: PathBuf,
        column: String,
        detail: String,
    },

    #[error("{path}: column {column}, row {row}: {detail}")]
    InvalidValue {
        path: PathBuf,
        column: String,
        row: usize,
        detail: String,
    },

    /// Polars refused an operation on data the store built itself: a bug
    /// in the store rather than bad input, reported instead of panicking.
    #[error("polars, while {context}: {detail}")]
    Polars { context: String, detail: String },
}

impl StoreError {
    pub(crate) fn polars(context: impl Into<String>, error: impl std::fmt::Display) -> StoreError {
        StoreError::Polars {
            context: context.into(),
            detail: error.to_string(),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, error: impl std::fmt::Display) -> StoreError {
        StoreError::Io {
            path: path.into(),
            detail: error.to_string(),
        }
    }
}
