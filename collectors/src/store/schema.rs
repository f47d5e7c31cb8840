//! Column names and types of the store's tables, in memory and in Parquet.
//! One place, so building, querying, exporting and validating an import
//! all agree.

use polars::prelude::DataType;

pub(crate) const BUCKET_START_MS: &str = "bucket_start_ms";
pub(crate) const EXPORTER: &str = "exporter";
pub(crate) const EXPORTER_DOMAIN: &str = "exporter_domain";
pub(crate) const IN_IF: &str = "in_if";
pub(crate) const OUT_IF: &str = "out_if";
pub(crate) const SRC_ADDR: &str = "src_addr";
pub(crate) const DST_ADDR: &str = "dst_addr";
pub(crate) const SRC_PORT: &str = "src_port";
pub(crate) const DST_PORT: &str = "dst_port";
pub(crate) const PROTOCOL: &str = "protocol";
pub(crate) const DSCP: &str = "dscp";
pub(crate) const CLASS: &str = "class";
pub(crate) const SRC_SITE: &str = "src_site";
pub(crate) const DST_SITE: &str = "dst_site";
pub(crate) const SRC_PREFIX: &str = "src_prefix";
pub(crate) const DST_PREFIX: &str = "dst_prefix";
pub(crate) const BYTES: &str = "bytes";
pub(crate) const PACKETS: &str = "packets";
pub(crate) const FLOWS: &str = "flows";

/// The group-by key of the 10 s and 1 min tiers, without the bucket start
/// (a roll-up sets that to the start of the coarser bucket).
pub(crate) const COARSE_KEYS: [&str; 11] = [
    EXPORTER,
    EXPORTER_DOMAIN,
    IN_IF,
    OUT_IF,
    SRC_PREFIX,
    DST_PREFIX,
    SRC_SITE,
    DST_SITE,
    PROTOCOL,
    DSCP,
    CLASS,
];

/// The summed columns of every flow tier.
pub(crate) const SUMS: [&str; 3] = [BYTES, PACKETS, FLOWS];

/// The 1 s tier in memory: the full flow key, addresses as numbers (see
/// [`crate::record::addr_to_u128`]), plus the site prefixes the 10 s
/// roll-up groups by.
pub(crate) fn fine_columns() -> Vec<(&'static str, DataType)> {
    vec![
        (BUCKET_START_MS, DataType::Int64),
        (EXPORTER, DataType::String),
        (EXPORTER_DOMAIN, DataType::UInt32),
        (IN_IF, DataType::UInt32),
        (OUT_IF, DataType::UInt32),
        (SRC_ADDR, DataType::UInt128),
        (DST_ADDR, DataType::UInt128),
        (SRC_PORT, DataType::UInt16),
        (DST_PORT, DataType::UInt16),
        (PROTOCOL, DataType::UInt8),
        (DSCP, DataType::UInt8),
        (CLASS, DataType::String),
        (SRC_SITE, DataType::String),
        (DST_SITE, DataType::String),
        (SRC_PREFIX, DataType::String),
        (DST_PREFIX, DataType::String),
        (BYTES, DataType::UInt64),
        (PACKETS, DataType::UInt64),
        (FLOWS, DataType::UInt64),
    ]
}

/// The 1 s tier in Parquet: the same, with addresses as text so DuckDB and
/// pandas read them without knowing our number encoding.
pub(crate) fn fine_parquet_columns() -> Vec<(&'static str, DataType)> {
    fine_columns()
        .into_iter()
        .map(|(name, dtype)| match name {
            SRC_ADDR | DST_ADDR => (name, DataType::String),
            _ => (name, dtype),
        })
        .collect()
}

/// The 10 s and 1 min tiers, in memory and in Parquet.
pub(crate) fn coarse_columns() -> Vec<(&'static str, DataType)> {
    vec![
        (BUCKET_START_MS, DataType::Int64),
        (EXPORTER, DataType::String),
        (EXPORTER_DOMAIN, DataType::UInt32),
        (IN_IF, DataType::UInt32),
        (OUT_IF, DataType::UInt32),
        (SRC_PREFIX, DataType::String),
        (DST_PREFIX, DataType::String),
        (SRC_SITE, DataType::String),
        (DST_SITE, DataType::String),
        (PROTOCOL, DataType::UInt8),
        (DSCP, DataType::UInt8),
        (CLASS, DataType::String),
        (BYTES, DataType::UInt64),
        (PACKETS, DataType::UInt64),
        (FLOWS, DataType::UInt64),
    ]
}

pub(crate) mod counters {
    use polars::prelude::DataType;

    pub(crate) const TIME_MS: &str = "time_ms";
    pub(crate) const DEVICE: &str = "device";
    pub(crate) const IF_INDEX: &str = "if_index";
    pub(crate) const IF_NAME: &str = "if_name";
    pub(crate) const SPEED_BPS: &str = "speed_bps";
    pub(crate) const IN_OCTETS: &str = "in_octets";
    pub(crate) const IN_PACKETS: &str = "in_packets";
    pub(crate) const IN_ERRORS: &str = "in_errors";
    pub(crate) const IN_DISCARDS: &str = "in_discards";
    pub(crate) const OUT_OCTETS: &str = "out_octets";
    pub(crate) const OUT_PACKETS: &str = "out_packets";
    pub(crate) const OUT_ERRORS: &str = "out_errors";
    pub(crate) const OUT_DISCARDS: &str = "out_discards";
    pub(crate) const INTERVAL_MS: &str = "interval_ms";
    pub(crate) const IN_BPS: &str = "in_bps";
    pub(crate) const OUT_BPS: &str = "out_bps";
    pub(crate) const IN_PPS: &str = "in_pps";
    pub(crate) const OUT_PPS: &str = "out_pps";
    pub(crate) const IN_ERRORS_DELTA: &str = "in_errors_delta";
    pub(crate) const OUT_ERRORS_DELTA: &str = "out_errors_delta";
    pub(crate) const IN_DISCARDS_DELTA: &str = "in_discards_delta";
    pub(crate) const OUT_DISCARDS_DELTA: &str = "out_discards_delta";

    /// Columns that may hold nulls: the interface name where the source
    /// does not know it, and everything derived from the previous sample
    /// (null for an interface's first sample and after a counter reset).
    pub(crate) const NULLABLE: [&str; 10] = [
        IF_NAME,
        INTERVAL_MS,
        IN_BPS,
        OUT_BPS,
        IN_PPS,
        OUT_PPS,
        IN_ERRORS_DELTA,
        OUT_ERRORS_DELTA,
        IN_DISCARDS_DELTA,
        OUT_DISCARDS_DELTA,
    ];

    /// One row per sample: the cumulative counters as received, and the
    /// rates over the interval since the interface's previous sample.
    pub(crate) fn columns() -> Vec<(&'static str, DataType)> {
        vec![
            (TIME_MS, DataType::Int64),
            (DEVICE, DataType::String),
            (IF_INDEX, DataType::UInt32),
            (IF_NAME, DataType::String),
            (SPEED_BPS, DataType::UInt64),
            (IN_OCTETS, DataType::UInt64),
            (IN_PACKETS, DataType::UInt64),
            (IN_ERRORS, DataType::UInt64),
            (IN_DISCARDS, DataType::UInt64),
            (OUT_OCTETS, DataType::UInt64),
            (OUT_PACKETS, DataType::UInt64),
            (OUT_ERRORS, DataType::UInt64),
            (OUT_DISCARDS, DataType::UInt64),
            (INTERVAL_MS, DataType::Int64),
            (IN_BPS, DataType::Float64),
            (OUT_BPS, DataType::Float64),
            (IN_PPS, DataType::Float64),
            (OUT_PPS, DataType::Float64),
            (IN_ERRORS_DELTA, DataType::UInt64),
            (OUT_ERRORS_DELTA, DataType::UInt64),
            (IN_DISCARDS_DELTA, DataType::UInt64),
            (OUT_DISCARDS_DELTA, DataType::UInt64),
        ]
    }
}
