//! Readers for the network and traffic files TE research and operators use.
//! Each takes text and returns planner types or an error naming the line
//! and field; the `load_*` functions read a file and name it in errors.

pub mod abilene;
pub mod clab;
pub mod graphml;
pub mod nodelink;
pub mod series;
pub mod sndlib;
pub mod topology;
pub mod tunnels;

use std::path::{Path, PathBuf};

use crate::network::{Network, TrafficMatrix};

/// Most nodes a network file may declare: beyond the largest networks TE
/// is run on (ASN2k has 1,739), far below what would exhaust memory.
pub const MAX_NODES: usize = 1_000_000;
/// Largest file a reader takes (a week of GEANT matrices is a few MB).
pub const MAX_FILE_BYTES: u64 = 2 << 30;

/// Why a file cannot be read as what it claims to be.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    InFile { path: PathBuf, message: String },
    /// A problem at a line (1-based) of the text.
    #[error("line {line}: {message}")]
    Line { line: usize, message: String },
    /// A problem not tied to a line (JSON and XML give their own positions).
    #[error("{0}")]
    Invalid(String),
}

impl FormatError {
    pub(crate) fn line(line: usize, message: impl Into<String>) -> FormatError {
        FormatError::Line {
            line,
            message: message.into(),
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> FormatError {
        FormatError::Invalid(message.into())
    }

    fn in_file(self, path: &Path) -> FormatError {
        match self {
            FormatError::Read { .. } | FormatError::InFile { .. } => self,
            other => FormatError::InFile {
                path: path.to_path_buf(),
                message: other.to_string(),
            },
        }
    }
}

fn read(path: &Path) -> Result<String, FormatError> {
    let size = std::fs::metadata(path)
        .map_err(|source| FormatError::Read {
            path: path.to_path_buf(),
            source,
        })?
        .len();
    if size > MAX_FILE_BYTES {
        return Err(FormatError::InFile {
            path: path.to_path_buf(),
            message: format!("{size} bytes is more than the {MAX_FILE_BYTES} a reader takes"),
        });
    }
    std::fs::read_to_string(path).map_err(|source| FormatError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads a network file: `.json` node-link, `.graphml` (needs
/// `default_capacity`: Topology Zoo files carry none), `.xml` SNDlib, or the
/// Abilene link table (`.txt` starting with `Node_num:`).
pub fn load_network(path: &Path, default_capacity: Option<f64>) -> Result<Network, FormatError> {
    let text = read(path)?;
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let extension = path
        .extension()
        .map(|e| e.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let network = match extension.as_str() {
        "json" => nodelink::parse_nodelink(&text, default_capacity),
        "graphml" => match default_capacity {
            Some(capacity) => graphml::parse_graphml(&text, capacity),
            None => Err(FormatError::invalid(
                "GraphML carries no capacities: give a uniform one (--capacity BPS)",
            )),
        },
        "xml" => sndlib::parse_network(&text),
        _ if text.trim_start().starts_with("Node_num:") => abilene::parse_link_table(&text),
        _ => Err(FormatError::invalid(
            "unknown network format: expected node-link .json, .graphml, SNDlib .xml \
             or an Abilene link table (.txt starting with Node_num:)",
        )),
    };
    let mut network = network.map_err(|e| e.in_file(path))?;
    network.name = name;
    Ok(network)
}

/// Reads traffic for `network`: a folder of SNDlib demand files (in file
/// name order), one SNDlib demand `.xml`, or a matrix-per-line series.
/// Every value is multiplied by `scale`.
pub fn load_traffic(
    path: &Path,
    network: &Network,
    scale: f64,
) -> Result<Vec<TrafficMatrix>, FormatError> {
    let mut series = if path.is_dir() {
        sndlib::load_demand_folder(path, network)?
    } else if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("xml"))
    {
        vec![sndlib::parse_demands(&read(path)?, network).map_err(|e| e.in_file(path))?]
    } else {
        series::parse_series(&read(path)?, network.nodes.len(), 1.0).map_err(|e| e.in_file(path))?
    };
    if scale != 1.0 {
        for matrix in &mut series {
            for value in &mut matrix.values {
                *value *= scale;
            }
        }
    }
    Ok(series)
}
