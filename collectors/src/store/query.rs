//! Queries over closed buckets. Each takes a window `[start_ms, end_ms)`
//! (a bucket is in it when its start is) and either an explicit tier or
//! `None`, meaning the finest tier that still covers the window's start.

use std::collections::BTreeMap;
use std::net::IpAddr;

use polars::prelude::*;
use serde::Serialize;

use crate::record::u128_to_addr;

use super::error::StoreError;
use super::frames::{self, Columns, sum_of};
use super::schema::counters as counter_columns;
use super::schema::*;
use super::{TelemetryStore, Tier, TimeWindow};

/// One flow (5-tuple and DSCP) over a window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FlowSummary {
    pub src_addr: IpAddr,
    pub dst_addr: IpAddr,
    pub src_port: u16,
    pub dst_port: u16,
    pub protocol: u8,
    pub dscp: u8,
    pub bytes: u64,
    pub packets: u64,
    pub flows: u64,
}

/// Which flows are one job's: from one of its source prefixes to one of
/// its destination prefixes, and when given, of its class (the store's
/// DSCP table), IP protocol and destination ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowSelector {
    pub sources: Vec<ipnet::IpNet>,
    pub destinations: Vec<ipnet::IpNet>,
    /// A class name as the store's DSCP table gives it (`ai-bulk`).
    pub class: Option<String>,
    pub protocol: Option<u8>,
    /// Inclusive.
    pub destination_ports: Option<(u16, u16)>,
}

impl FlowSelector {
    fn matches(&self, src: u128, dst: u128, class: &str, protocol: u8, dst_port: u16) -> bool {
        let within = |nets: &[ipnet::IpNet], address: u128| {
            let address = u128_to_addr(address);
            nets.iter().any(|net| net.contains(&address))
        };
        self.class.as_deref().is_none_or(|c| c == class)
            && self.protocol.is_none_or(|p| p == protocol)
            && self
                .destination_ports
                .is_none_or(|(first, last)| (first..=last).contains(&dst_port))
            && within(&self.sources, src)
            && within(&self.destinations, dst)
    }
}

/// The bytes of one selector's flows as one exporter (and observation
/// domain) saw them in one 1 s bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SelectedBytes {
    /// Index into the selectors.
    pub selector: usize,
    pub bucket_start_ms: i64,
    pub exporter: IpAddr,
    pub observation_domain: u32,
    pub bytes: u64,
}

/// What [`TelemetryStore::top_talkers`] groups by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum TalkerGrouping {
    /// Source address in the 1 s tier, source prefix in coarser tiers.
    Source,
    /// Destination address in the 1 s tier, destination prefix in coarser
    /// tiers.
    Destination,
    SourceSite,
    DestinationSite,
    SitePair,
}

/// One talker: `source` is set when grouping by source or site pair,
/// `destination` when grouping by destination or site pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Talker {
    pub source: Option<String>,
    pub destination: Option<String>,
    pub bytes: u64,
    pub packets: u64,
    pub flows: u64,
}

/// Site-to-site traffic of one class in one bucket.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MatrixCell {
    pub bucket_start_ms: i64,
    pub bucket_ms: i64,
    pub src_site: String,
    pub dst_site: String,
    pub class: String,
    pub bytes: u64,
    pub packets: u64,
    /// `bytes * 8` over the bucket's length in seconds.
    pub rate_bps: f64,
}

/// Site-to-site traffic of one class averaged over a whole window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MatrixAverage {
    pub src_site: String,
    pub dst_site: String,
    pub class: String,
    pub bytes: u64,
    pub packets: u64,
    /// `bytes * 8` over the window's length in seconds.
    pub rate_bps: f64,
}

/// One interface's traffic in one bucket, from flow records: in is what
/// arrived on it (`in_if`), out what left through it (`out_if`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InterfacePoint {
    pub bucket_start_ms: i64,
    pub in_bps: f64,
    pub out_bps: f64,
    pub in_pps: f64,
    pub out_pps: f64,
}

/// One interval between two counter samples of an interface, ending at
/// `time_ms`; errors and discards are counts within the interval.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CounterPoint {
    pub time_ms: i64,
    pub interval_ms: i64,
    pub in_bps: f64,
    pub out_bps: f64,
    pub in_pps: f64,
    pub out_pps: f64,
    pub in_errors: u64,
    pub out_errors: u64,
    pub in_discards: u64,
    pub out_discards: u64,
    pub speed_bps: u64,
}

/// What one exporter saw of one class between two prefixes in one bucket:
/// the closed loop's input for the node-to-node matrix (the exporter names
/// the node where traffic entered, the destination prefix the node where it
/// leaves). Bytes and packets are already scaled by sampling.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExporterCell {
    pub bucket_start_ms: i64,
    pub bucket_ms: i64,
    /// The exporter's address (the UDP source of NetFlow and IPFIX, the
    /// agent address of sFlow).
    pub exporter: IpAddr,
    /// v9 source id, IPFIX observation domain, sFlow sub-agent.
    pub observation_domain: u32,
    /// The longest site prefix holding the source (destination) address,
    /// or its aggregate (`ipv4_prefix_len`, `ipv6_prefix_len`) when no site
    /// prefix does.
    pub src_prefix: String,
    pub dst_prefix: String,
    pub class: String,
    pub bytes: u64,
    pub packets: u64,
    /// Flow records behind the figures.
    pub flows: u64,
}

/// Averages matrix cells over `window`: bytes and packets summed per (site
/// pair, class), the rate over the window's whole length (buckets without
/// traffic count as zero). Sorted by source, destination, class.
pub fn average_matrix(cells: &[MatrixCell], window: TimeWindow) -> Vec<MatrixAverage> {
    let mut totals: BTreeMap<(&str, &str, &str), (u64, u64)> = BTreeMap::new();
    for cell in cells {
        let key = (
            cell.src_site.as_str(),
            cell.dst_site.as_str(),
            cell.class.as_str(),
        );
        let total = totals.entry(key).or_default();
        total.0 = total.0.saturating_add(cell.bytes);
        total.1 = total.1.saturating_add(cell.packets);
    }
    let seconds = window.seconds();
    totals
        .into_iter()
        .map(|((src, dst, class), (bytes, packets))| MatrixAverage {
            src_site: src.to_string(),
            dst_site: dst.to_string(),
            class: class.to_string(),
            bytes,
            packets,
            rate_bps: per_second(bytes as f64 * 8.0, seconds),
        })
        .collect()
}

fn per_second(amount: f64, seconds: f64) -> f64 {
    if seconds > 0.0 { amount / seconds } else { 0.0 }
}

fn limit_of(limit: usize) -> IdxSize {
    IdxSize::try_from(limit).unwrap_or(IdxSize::MAX)
}

/// Groups by `keys`, sums, and keeps the `limit` heaviest groups: by bytes,
/// then packets, then the keys ascending so ties have one order.
fn heaviest(all: LazyFrame, keys: &[&str], limit: usize) -> Result<DataFrame, StoreError> {
    let mut order = vec![col(BYTES), col(PACKETS)];
    order.extend(keys.iter().map(|k| col(*k)));
    let descending = [true, true].into_iter().chain(keys.iter().map(|_| false));
    all.group_by(keys.iter().map(|k| col(*k)).collect::<Vec<_>>())
        .agg(SUMS.map(sum_of))
        .sort_by_exprs(
            order,
            SortMultipleOptions::new().with_order_descending_multi(descending),
        )
        .limit(limit_of(limit))
        .collect()
        .map_err(|e| StoreError::polars("ranking groups", e))
}

impl TelemetryStore {
    /// The tier to answer from: `tier` when given, else the finest that
    /// covers the window.
    fn resolve(&self, window: TimeWindow, tier: Option<Tier>) -> Tier {
        tier.unwrap_or_else(|| self.choose_tier(window))
    }

    fn stacked_in(&self, tier: Tier, window: TimeWindow) -> Result<Option<LazyFrame>, StoreError> {
        frames::stacked(&self.tier(tier).frames_in(window))
    }

    /// The heaviest flows (5-tuple and DSCP) in the window, by bytes. Only
    /// the 1 s tier has addresses and ports, so this reads it whatever the
    /// window.
    pub fn top_flows(
        &self,
        window: TimeWindow,
        limit: usize,
    ) -> Result<Vec<FlowSummary>, StoreError> {
        let Some(all) = self.stacked_in(Tier::OneSecond, window)? else {
            return Ok(Vec::new());
        };
        let keys = [SRC_ADDR, DST_ADDR, SRC_PORT, DST_PORT, PROTOCOL, DSCP];
        let frame = heaviest(all, &keys, limit)?;
        let c = Columns::new(&frame);
        let (src, dst) = (c.u128(SRC_ADDR)?, c.u128(DST_ADDR)?);
        let (src_port, dst_port) = (c.u64(SRC_PORT)?, c.u64(DST_PORT)?);
        let (protocol, dscp) = (c.u64(PROTOCOL)?, c.u64(DSCP)?);
        let (bytes, packets, flows) = (c.u64(BYTES)?, c.u64(PACKETS)?, c.u64(FLOWS)?);
        Ok((0..frame.height())
            .map(|i| FlowSummary {
                src_addr: u128_to_addr(src[i]),
                dst_addr: u128_to_addr(dst[i]),
                src_port: src_port[i] as u16,
                dst_port: dst_port[i] as u16,
                protocol: protocol[i] as u8,
                dscp: dscp[i] as u8,
                bytes: bytes[i],
                packets: packets[i],
                flows: flows[i],
            })
            .collect())
    }

    /// Per selector, bucket and exporter, the bytes of the selected flows
    /// in the window, from the 1 s tier (the only one with ports and
    /// addresses). A flow is seen by every exporter on its path; the caller
    /// picks the sightings that count (where it enters the WAN) and the
    /// buckets (from when a job started). Sorted by selector, bucket, then
    /// exporter.
    pub fn selected_bytes(
        &self,
        window: TimeWindow,
        selectors: &[FlowSelector],
    ) -> Result<Vec<SelectedBytes>, StoreError> {
        if selectors.is_empty() {
            return Ok(Vec::new());
        }
        let Some(all) = self.stacked_in(Tier::OneSecond, window)? else {
            return Ok(Vec::new());
        };
        let keys = [
            BUCKET_START_MS,
            EXPORTER,
            EXPORTER_DOMAIN,
            SRC_ADDR,
            DST_ADDR,
            DST_PORT,
            PROTOCOL,
            CLASS,
        ];
        let frame = all
            .group_by(keys.map(col))
            .agg([col(BYTES).sum()])
            .collect()
            .map_err(|e| StoreError::polars("selecting flows", e))?;
        let c = Columns::new(&frame);
        let starts = c.i64(BUCKET_START_MS)?;
        let (exporters, domains) = (c.strings(EXPORTER)?, c.u64(EXPORTER_DOMAIN)?);
        let (src, dst) = (c.u128(SRC_ADDR)?, c.u128(DST_ADDR)?);
        let (dst_port, protocol) = (c.u64(DST_PORT)?, c.u64(PROTOCOL)?);
        let (class, bytes) = (c.strings(CLASS)?, c.u64(BYTES)?);
        let mut sums: BTreeMap<(usize, i64, String, u64), u64> = BTreeMap::new();
        for i in 0..frame.height() {
            for (index, selector) in selectors.iter().enumerate() {
                if selector.matches(
                    src[i],
                    dst[i],
                    &class[i],
                    protocol[i] as u8,
                    dst_port[i] as u16,
                ) {
                    *sums
                        .entry((index, starts[i], exporters[i].clone(), domains[i]))
                        .or_default() += bytes[i];
                }
            }
        }
        Ok(sums
            .into_iter()
            .filter_map(|((selector, bucket_start_ms, exporter, domain), bytes)| {
                Some(SelectedBytes {
                    selector,
                    bucket_start_ms,
                    exporter: exporter.parse().ok()?,
                    observation_domain: u32::try_from(domain).unwrap_or(u32::MAX),
                    bytes,
                })
            })
            .collect())
    }

    /// The heaviest sources, destinations, sites or site pairs in the
    /// window, by bytes, from the finest tier covering it.
    pub fn top_talkers(
        &self,
        window: TimeWindow,
        by: TalkerGrouping,
        limit: usize,
    ) -> Result<Vec<Talker>, StoreError> {
        let tier = self.choose_tier(window);
        let Some(all) = self.stacked_in(tier, window)? else {
            return Ok(Vec::new());
        };
        let fine = tier == Tier::OneSecond;
        let (source, destination) = match by {
            TalkerGrouping::Source if fine => (Some(SRC_ADDR), None),
            TalkerGrouping::Source => (Some(SRC_PREFIX), None),
            TalkerGrouping::Destination if fine => (None, Some(DST_ADDR)),
            TalkerGrouping::Destination => (None, Some(DST_PREFIX)),
            TalkerGrouping::SourceSite => (Some(SRC_SITE), None),
            TalkerGrouping::DestinationSite => (None, Some(DST_SITE)),
            TalkerGrouping::SitePair => (Some(SRC_SITE), Some(DST_SITE)),
        };
        let keys: Vec<&str> = source.into_iter().chain(destination).collect();
        let frame = heaviest(all, &keys, limit)?;
        let c = Columns::new(&frame);
        let texts = |name: Option<&str>| -> Result<Option<Vec<String>>, StoreError> {
            let Some(name) = name else {
                return Ok(None);
            };
            if name == SRC_ADDR || name == DST_ADDR {
                let addresses = c.u128(name)?.into_iter();
                return Ok(Some(
                    addresses.map(|a| u128_to_addr(a).to_string()).collect(),
                ));
            }
            c.strings(name).map(Some)
        };
        let (sources, destinations) = (texts(source)?, texts(destination)?);
        let (bytes, packets, flows) = (c.u64(BYTES)?, c.u64(PACKETS)?, c.u64(FLOWS)?);
        let pick =
            |texts: &Option<Vec<String>>, i: usize| texts.as_ref().and_then(|t| t.get(i).cloned());
        Ok((0..frame.height())
            .map(|i| Talker {
                source: pick(&sources, i),
                destination: pick(&destinations, i),
                bytes: bytes[i],
                packets: packets[i],
                flows: flows[i],
            })
            .collect())
    }

    /// Site-to-site traffic per class and bucket, sorted by bucket, source
    /// site, destination site and class.
    pub fn traffic_matrix(
        &self,
        window: TimeWindow,
        tier: Option<Tier>,
    ) -> Result<Vec<MatrixCell>, StoreError> {
        let tier = self.resolve(window, tier);
        let Some(all) = self.stacked_in(tier, window)? else {
            return Ok(Vec::new());
        };
        let keys = [BUCKET_START_MS, SRC_SITE, DST_SITE, CLASS];
        let frame = all
            .group_by(keys.map(col))
            .agg([sum_of(BYTES), sum_of(PACKETS)])
            .sort_by_exprs(keys.map(col), SortMultipleOptions::new())
            .collect()
            .map_err(|e| StoreError::polars("building the traffic matrix", e))?;
        let c = Columns::new(&frame);
        let starts = c.i64(BUCKET_START_MS)?;
        let (src, dst, class) = (
            c.strings(SRC_SITE)?,
            c.strings(DST_SITE)?,
            c.strings(CLASS)?,
        );
        let (bytes, packets) = (c.u64(BYTES)?, c.u64(PACKETS)?);
        let bucket_ms = tier.bucket_ms();
        let seconds = bucket_ms as f64 / 1000.0;
        Ok((0..frame.height())
            .map(|i| MatrixCell {
                bucket_start_ms: starts[i],
                bucket_ms,
                src_site: src[i].clone(),
                dst_site: dst[i].clone(),
                class: class[i].clone(),
                bytes: bytes[i],
                packets: packets[i],
                rate_bps: per_second(bytes[i] as f64 * 8.0, seconds),
            })
            .collect())
    }

    /// Per bucket, exporter, prefix pair and class: the sums the closed
    /// loop turns into its node-to-node matrix. Sorted by bucket, exporter,
    /// observation domain, prefixes and class.
    pub fn exporter_matrix(
        &self,
        window: TimeWindow,
        tier: Option<Tier>,
    ) -> Result<Vec<ExporterCell>, StoreError> {
        let tier = self.resolve(window, tier);
        let Some(all) = self.stacked_in(tier, window)? else {
            return Ok(Vec::new());
        };
        let keys = [
            BUCKET_START_MS,
            EXPORTER,
            EXPORTER_DOMAIN,
            SRC_PREFIX,
            DST_PREFIX,
            CLASS,
        ];
        let frame = all
            .group_by(keys.map(col))
            .agg(SUMS.map(sum_of))
            .sort_by_exprs(keys.map(col), SortMultipleOptions::new())
            .collect()
            .map_err(|e| StoreError::polars("building the exporter matrix", e))?;
        let c = Columns::new(&frame);
        let starts = c.i64(BUCKET_START_MS)?;
        let (exporters, domains) = (c.strings(EXPORTER)?, c.u64(EXPORTER_DOMAIN)?);
        let (src, dst, class) = (
            c.strings(SRC_PREFIX)?,
            c.strings(DST_PREFIX)?,
            c.strings(CLASS)?,
        );
        let (bytes, packets, flows) = (c.u64(BYTES)?, c.u64(PACKETS)?, c.u64(FLOWS)?);
        let bucket_ms = tier.bucket_ms();
        Ok((0..frame.height())
            .filter_map(|i| {
                // The store writes the column from addresses; a text that
                // does not parse back cannot occur, and is skipped if it did.
                let exporter: IpAddr = exporters[i].parse().ok()?;
                Some(ExporterCell {
                    bucket_start_ms: starts[i],
                    bucket_ms,
                    exporter,
                    observation_domain: u32::try_from(domains[i]).unwrap_or(u32::MAX),
                    src_prefix: src[i].clone(),
                    dst_prefix: dst[i].clone(),
                    class: class[i].clone(),
                    bytes: bytes[i],
                    packets: packets[i],
                    flows: flows[i],
                })
            })
            .collect())
    }

    /// [`Self::traffic_matrix`] averaged over the window ([`average_matrix`]).
    pub fn traffic_matrix_average(
        &self,
        window: TimeWindow,
        tier: Option<Tier>,
    ) -> Result<Vec<MatrixAverage>, StoreError> {
        Ok(average_matrix(&self.traffic_matrix(window, tier)?, window))
    }

    /// An interface's traffic per bucket as its exporter's flow records see
    /// it (every observation domain of that address), for the buckets where
    /// it carried any.
    pub fn interface_series(
        &self,
        exporter: IpAddr,
        if_index: u32,
        window: TimeWindow,
        tier: Option<Tier>,
    ) -> Result<Vec<InterfacePoint>, StoreError> {
        let tier = self.resolve(window, tier);
        let Some(all) = self.stacked_in(tier, window)? else {
            return Ok(Vec::new());
        };
        let at_exporter = all.filter(col(EXPORTER).eq(lit(exporter.to_string())));
        let inbound = per_bucket(at_exporter.clone(), IN_IF, if_index)?;
        let outbound = per_bucket(at_exporter, OUT_IF, if_index)?;
        let mut points: BTreeMap<i64, [u64; 4]> = BTreeMap::new();
        for (start, bytes, packets) in inbound {
            let point = points.entry(start).or_default();
            point[0] = bytes;
            point[1] = packets;
        }
        for (start, bytes, packets) in outbound {
            let point = points.entry(start).or_default();
            point[2] = bytes;
            point[3] = packets;
        }
        let seconds = tier.bucket_ms() as f64 / 1000.0;
        Ok(points
            .into_iter()
            .map(
                |(start, [in_bytes, in_packets, out_bytes, out_packets])| InterfacePoint {
                    bucket_start_ms: start,
                    in_bps: per_second(in_bytes as f64 * 8.0, seconds),
                    out_bps: per_second(out_bytes as f64 * 8.0, seconds),
                    in_pps: per_second(in_packets as f64, seconds),
                    out_pps: per_second(out_packets as f64, seconds),
                },
            )
            .collect())
    }

    /// The ifindex `device` last reported for its interface `if_name`, for
    /// sources (the router agent) that name their interfaces.
    pub fn interface_index(&self, device: &str, if_name: &str) -> Option<u32> {
        self.counters.interface_index(device, if_name)
    }

    /// An interface's rates from its counters, one point per interval that
    /// ends in the window (intervals skipped for a counter reset are not
    /// there), oldest first.
    pub fn link_counter_series(
        &self,
        device: &str,
        if_index: u32,
        window: TimeWindow,
    ) -> Result<Vec<CounterPoint>, StoreError> {
        use counter_columns::*;
        let frames = self
            .counters
            .frames_between(window.start_ms, window.end_ms)?;
        let Some(all) = frames::stacked(&frames)? else {
            return Ok(Vec::new());
        };
        let frame = all
            .filter(
                col(DEVICE)
                    .eq(lit(device))
                    .and(col(IF_INDEX).eq(lit(if_index)))
                    .and(col(TIME_MS).gt_eq(lit(window.start_ms)))
                    .and(col(TIME_MS).lt(lit(window.end_ms)))
                    .and(col(INTERVAL_MS).is_not_null()),
            )
            .sort([TIME_MS], SortMultipleOptions::new())
            .collect()
            .map_err(|e| StoreError::polars("reading counter series", e))?;
        let c = Columns::new(&frame);
        let times = c.i64(TIME_MS)?;
        let intervals = c.i64_opt(INTERVAL_MS)?;
        let rates = [IN_BPS, OUT_BPS, IN_PPS, OUT_PPS].map(|name| c.f64_opt(name));
        let [in_bps, out_bps, in_pps, out_pps] = rates;
        let (in_bps, out_bps, in_pps, out_pps) = (in_bps?, out_bps?, in_pps?, out_pps?);
        let deltas = [
            IN_ERRORS_DELTA,
            OUT_ERRORS_DELTA,
            IN_DISCARDS_DELTA,
            OUT_DISCARDS_DELTA,
        ]
        .map(|n| c.u64_opt(n));
        let [in_errors, out_errors, in_discards, out_discards] = deltas;
        let (in_errors, out_errors) = (in_errors?, out_errors?);
        let (in_discards, out_discards) = (in_discards?, out_discards?);
        let speed = c.u64(SPEED_BPS)?;
        Ok((0..frame.height())
            .map(|i| CounterPoint {
                time_ms: times[i],
                interval_ms: intervals[i].unwrap_or(0),
                in_bps: in_bps[i].unwrap_or(0.0),
                out_bps: out_bps[i].unwrap_or(0.0),
                in_pps: in_pps[i].unwrap_or(0.0),
                out_pps: out_pps[i].unwrap_or(0.0),
                in_errors: in_errors[i].unwrap_or(0),
                out_errors: out_errors[i].unwrap_or(0),
                in_discards: in_discards[i].unwrap_or(0),
                out_discards: out_discards[i].unwrap_or(0),
                speed_bps: speed[i],
            })
            .collect())
    }
}

/// Bytes and packets per bucket of the rows whose `interface_column` is
/// `if_index`.
fn per_bucket(
    rows: LazyFrame,
    interface_column: &str,
    if_index: u32,
) -> Result<Vec<(i64, u64, u64)>, StoreError> {
    let frame = rows
        .filter(col(interface_column).eq(lit(if_index)))
        .group_by([col(BUCKET_START_MS)])
        .agg([sum_of(BYTES), sum_of(PACKETS)])
        .collect()
        .map_err(|e| StoreError::polars("reading an interface series", e))?;
    let c = Columns::new(&frame);
    let (starts, bytes, packets) = (c.i64(BUCKET_START_MS)?, c.u64(BYTES)?, c.u64(PACKETS)?);
    Ok(starts
        .into_iter()
        .zip(bytes)
        .zip(packets)
        .map(|((start, bytes), packets)| (start, bytes, packets))
        .collect())
}
