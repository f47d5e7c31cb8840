//! Store tests: hand-built batches with known sums, checked exactly in
//! every tier and through every query.

use std::net::IpAddr;

use polars::prelude::{
    IntoColumn, NewChunkedArray, ParquetReader, ParquetWriter, SerReader, StringChunked,
};

use super::frames::Columns;
use super::schema::*;
use super::*;
use crate::record::{ExporterKey, FlowProtocol, FlowRecord, addr_to_u128};

fn address(text: &str) -> IpAddr {
    text.parse().expect("literal address")
}

fn exporter(text: &str, domain: u32) -> ExporterKey {
    ExporterKey {
        address: address(text),
        port: 0,
        protocol: FlowProtocol::Ipfix,
        domain,
    }
}

/// A record from `src` to `dst` with DSCP `dscp`, unsampled, TCP 1000 →
/// 2000, in on interface 1, out on 2.
fn flow(received_ms: i64, src: &str, dst: &str, dscp: u8, bytes: u64, packets: u64) -> FlowRecord {
    FlowRecord {
        received_ms,
        flow_end_ms: received_ms,
        src_addr: addr_to_u128(address(src)),
        dst_addr: addr_to_u128(address(dst)),
        src_port: 1000,
        dst_port: 2000,
        protocol: 6,
        tos: dscp << 2,
        in_if: 1,
        out_if: 2,
        packets,
        bytes,
        sampling_rate: 1,
    }
}

fn batch_of(records: &[(ExporterKey, FlowRecord)]) -> FlowBatch {
    let mut batch = FlowBatch::default();
    for (key, record) in records {
        let index = batch.exporter_index(key);
        batch.push(index, record);
    }
    batch
}

fn two_sites() -> StoreConfig {
    StoreConfig {
        sites: vec![
            SitePrefix {
                prefix: "10.1.0.0/16".parse().expect("literal prefix"),
                site: "dc-wide".into(),
            },
            SitePrefix {
                prefix: "10.1.2.0/24".parse().expect("literal prefix"),
                site: "dc-narrow".into(),
            },
            SitePrefix {
                prefix: "10.9.0.0/16".parse().expect("literal prefix"),
                site: "pop".into(),
            },
        ],
        ..StoreConfig::default()
    }
}

fn store_with(config: StoreConfig) -> TelemetryStore {
    TelemetryStore::new(config).expect("valid config")
}

fn ingest(store: &mut TelemetryStore, records: &[(ExporterKey, FlowRecord)]) {
    store.ingest_flows(&batch_of(records)).expect("valid batch");
}

/// (bucket start, bytes, packets, flows) of every bucket of `tier`.
fn bucket_totals(store: &TelemetryStore, tier: Tier) -> Vec<(i64, u64, u64, u64)> {
    store
        .tier(tier)
        .buckets
        .iter()
        .map(|(start, bucket)| {
            let c = Columns::new(&bucket.frame);
            let sum = |name: &str| c.u64(name).expect("sum column").iter().sum::<u64>();
            (*start, sum(BYTES), sum(PACKETS), sum(FLOWS))
        })
        .collect()
}

/// The distinct values of a text column over all buckets of `tier`.
fn texts_in(store: &TelemetryStore, tier: Tier, column: &str) -> Vec<String> {
    let mut texts: Vec<String> = store
        .tier(tier)
        .buckets
        .values()
        .flat_map(|bucket| {
            Columns::new(&bucket.frame)
                .strings(column)
                .expect("text column")
        })
        .collect();
    texts.sort();
    texts.dedup();
    texts
}

/// Records over 75 seconds: two flows in the first second (one of them
/// twice), one sampled 1 in 10, traffic into the second 10 s bucket and
/// into the second minute.
fn known_records() -> Vec<(ExporterKey, FlowRecord)> {
    let e = exporter("192.0.2.1", 1);
    let mut sampled = flow(1_500, "10.1.2.3", "10.9.0.1", 26, 200, 2);
    sampled.sampling_rate = 10;
    vec![
        (e, flow(100, "10.1.2.3", "10.9.0.1", 26, 1_000, 10)),
        (e, flow(500, "10.1.2.3", "10.9.0.1", 26, 500, 5)),
        (e, flow(900, "10.1.3.3", "10.9.0.1", 10, 300, 3)),
        (e, sampled),
        (e, flow(12_000, "10.1.2.3", "10.9.0.1", 0, 4_000, 4)),
        (e, flow(65_000, "10.1.3.3", "10.9.0.1", 46, 7_000, 7)),
    ]
}

#[test]
fn exact_totals_in_every_tier() {
    let mut store = store_with(two_sites());
    ingest(&mut store, &known_records());
    store.advance(130_000).expect("advance");

    assert_eq!(
        bucket_totals(&store, Tier::OneSecond),
        vec![
            (0, 1_800, 18, 3),
            (1_000, 2_000, 20, 1),
            (12_000, 4_000, 4, 1),
            (65_000, 7_000, 7, 1),
        ]
    );
    assert_eq!(
        bucket_totals(&store, Tier::TenSeconds),
        vec![
            (0, 3_800, 38, 4),
            (10_000, 4_000, 4, 1),
            (60_000, 7_000, 7, 1),
        ]
    );
    assert_eq!(
        bucket_totals(&store, Tier::OneMinute),
        vec![(0, 7_800, 42, 5), (60_000, 7_000, 7, 1)]
    );
    // The first second has two distinct keys; the first 10 s bucket
    // groups by prefix and class, and the two DSCPs 26 and 10 differ.
    let stats = store.stats();
    let rows: Vec<usize> = stats.tiers.iter().map(|t| t.rows).collect();
    assert_eq!(rows, vec![2 + 1 + 1 + 1, 2 + 1 + 1, 3 + 1]);
    assert_eq!(stats.records, 6);
    assert_eq!(stats.late_records, 0);
    assert_eq!(stats.open_buckets, 0);
}

/// The 10 s and 1 min buckets are summed in maps keyed by the
/// classifier's ids; a site change in the middle of them turns the sums
/// into frames first. Here the same sites come back in the reverse order
/// (every site id changes), and the tiers come out as if nothing had
/// happened.
#[test]
fn a_site_change_mid_bucket_keeps_the_coarse_tiers_exact() {
    let records = known_records();
    let mut whole = store_with(two_sites());
    ingest(&mut whole, &records);
    whole.advance(130_000).expect("advance");

    let mut changed = store_with(two_sites());
    ingest(&mut changed, &records[..4]);
    changed.advance(5_000).expect("advance");
    assert_eq!(bucket_totals(&changed, Tier::OneSecond).len(), 2);
    let mut reversed = two_sites().sites;
    reversed.reverse();
    changed
        .set_sites(reversed)
        .expect("the same sites in another order");
    ingest(&mut changed, &records[4..]);
    changed.advance(130_000).expect("advance");

    for tier in Tier::ALL {
        assert_eq!(
            bucket_totals(&changed, tier),
            bucket_totals(&whole, tier),
            "{tier:?}"
        );
        for column in [SRC_PREFIX, DST_PREFIX, SRC_SITE, DST_SITE, CLASS] {
            assert_eq!(
                texts_in(&changed, tier, column),
                texts_in(&whole, tier, column),
                "{tier:?} {column}"
            );
        }
    }
    let rows = |store: &TelemetryStore| -> Vec<usize> {
        store.stats().tiers.iter().map(|t| t.rows).collect()
    };
    assert_eq!(rows(&changed), rows(&whole));
}

#[test]
fn buckets_close_only_after_the_grace() {
    let mut store = store_with(StoreConfig::default());
    let e = exporter("192.0.2.1", 1);
    ingest(
        &mut store,
        &[(e, flow(100, "10.0.0.1", "10.0.0.2", 0, 10, 1))],
    );
    // Bucket [0, 1000) closes at 1000 + 2000 grace.
    store.advance(2_999).expect("advance");
    assert_eq!(bucket_totals(&store, Tier::OneSecond), vec![]);
    assert_eq!(store.stats().open_buckets, 1);
    store.advance(3_000).expect("advance");
    assert_eq!(bucket_totals(&store, Tier::OneSecond), vec![(0, 10, 1, 1)]);
    // Received time moving on closes buckets too, without advance.
    ingest(
        &mut store,
        &[(e, flow(3_500, "10.0.0.1", "10.0.0.2", 0, 20, 1))],
    );
    ingest(
        &mut store,
        &[(e, flow(6_600, "10.0.0.1", "10.0.0.2", 0, 40, 1))],
    );
    assert_eq!(
        bucket_totals(&store, Tier::OneSecond),
        vec![(0, 10, 1, 1), (3_000, 20, 1, 1)]
    );
}

#[test]
fn sampling_rate_scales_bytes_and_packets() {
    let mut store = store_with(StoreConfig::default());
    let e = exporter("192.0.2.1", 1);
    let mut sampled = flow(0, "10.0.0.1", "10.0.0.2", 0, 1_500, 3);
    sampled.sampling_rate = 1_000;
    let mut unknown_rate = flow(10, "10.0.0.1", "10.0.0.2", 0, 100, 1);
    unknown_rate.sampling_rate = 0;
    ingest(&mut store, &[(e, sampled), (e, unknown_rate)]);
    store.advance(10_000).expect("advance");
    assert_eq!(
        bucket_totals(&store, Tier::OneSecond),
        vec![(0, 1_500_000 + 100, 3_000 + 1, 2)]
    );
}

#[test]
fn sites_match_the_longest_prefix() {
    let mut store = store_with(two_sites());
    let e = exporter("192.0.2.1", 1);
    ingest(
        &mut store,
        &[
            (e, flow(0, "10.1.2.3", "10.1.3.4", 0, 100, 1)),
            (e, flow(0, "10.9.8.7", "172.16.5.6", 0, 10, 1)),
            (e, flow(0, "2001:db8:1:2::1", "10.1.2.200", 0, 1, 1)),
        ],
    );
    store.advance(20_000).expect("advance");
    let window = TimeWindow::new(0, 10_000);
    let pairs: Vec<(String, String, u64)> = store
        .traffic_matrix(window, Some(Tier::OneSecond))
        .expect("matrix")
        .into_iter()
        .map(|cell| (cell.src_site, cell.dst_site, cell.bytes))
        .collect();
    assert_eq!(
        pairs,
        vec![
            ("".into(), "dc-narrow".into(), 1),
            ("dc-narrow".into(), "dc-wide".into(), 100),
            ("pop".into(), "".into(), 10),
        ]
    );
    assert_eq!(
        texts_in(&store, Tier::TenSeconds, SRC_PREFIX),
        vec!["10.1.2.0/24", "10.9.0.0/16", "2001:db8:1::/48"]
    );
    assert_eq!(
        texts_in(&store, Tier::TenSeconds, DST_PREFIX),
        vec!["10.1.0.0/16", "10.1.2.0/24", "172.16.5.0/24"]
    );
}

#[test]
fn dscp_maps_to_class() {
    let mut store = store_with(StoreConfig::default());
    let e = exporter("192.0.2.1", 1);
    let records: Vec<(ExporterKey, FlowRecord)> =
        [(26, 1), (46, 2), (10, 4), (18, 8), (0, 16), (48, 32)]
            .into_iter()
            .map(|(dscp, bytes)| (e, flow(0, "10.0.0.1", "10.0.0.2", dscp, bytes, 1)))
            .collect();
    ingest(&mut store, &records);
    store.advance(20_000).expect("advance");
    let classes: Vec<(String, u64)> = store
        .traffic_matrix(TimeWindow::new(0, 10_000), Some(Tier::TenSeconds))
        .expect("matrix")
        .into_iter()
        .map(|cell| (cell.class, cell.bytes))
        .collect();
    assert_eq!(
        classes,
        vec![
            ("ai-bulk".into(), 4 + 8),
            ("ai-sync".into(), 1 + 2),
            ("best-effort".into(), 16 + 32),
        ]
    );
}

#[test]
fn retention_drops_old_buckets_and_queries_move_to_a_coarser_tier() {
    let config = StoreConfig {
        retention_1s_secs: 5,
        retention_10s_secs: 30,
        ..StoreConfig::default()
    };
    let mut store = store_with(config);
    let e = exporter("192.0.2.1", 1);
    let records: Vec<(ExporterKey, FlowRecord)> = (0..20)
        .map(|second| (e, flow(second * 1_000, "10.0.0.1", "10.0.0.2", 0, 1, 1)))
        .collect();
    ingest(&mut store, &records);
    store.advance(25_000).expect("advance");
    // 1 s buckets ending at or before 20 s are gone: none is left.
    let one = &store.stats().tiers[0];
    assert_eq!(
        (one.buckets, one.expired_buckets, one.expired_rows),
        (0, 20, 20)
    );
    assert_eq!(
        bucket_totals(&store, Tier::TenSeconds),
        vec![(0, 10, 10, 10), (10_000, 10, 10, 10)]
    );
    assert_eq!(
        store.choose_tier(TimeWindow::new(0, 20_000)),
        Tier::TenSeconds
    );
    assert_eq!(
        store.choose_tier(TimeWindow::new(20_000, 30_000)),
        Tier::OneSecond
    );

    store.advance(45_000).expect("advance");
    assert_eq!(
        bucket_totals(&store, Tier::TenSeconds),
        vec![(10_000, 10, 10, 10)]
    );
    assert_eq!(
        store.choose_tier(TimeWindow::new(0, 20_000)),
        Tier::OneMinute
    );
    assert_eq!(store.stats().tiers[1].expired_buckets, 1);
}

#[test]
fn memory_budget_evicts_oldest_finest_first() {
    let mut store = store_with(StoreConfig::default());
    let e = exporter("192.0.2.1", 1);
    let records: Vec<(ExporterKey, FlowRecord)> = (0..20)
        .map(|second| (e, flow(second * 1_000, "10.0.0.1", "10.0.0.2", 0, 1, 1)))
        .collect();
    ingest(&mut store, &records);
    store.advance(22_000).expect("advance");
    let before = store.stats();
    assert_eq!(before.tiers[0].buckets, 20);
    assert_eq!(before.tiers[1].buckets, 2);

    // One byte too many: the oldest 1 s bucket goes, nothing else.
    store.config.memory_budget_bytes = before.estimated_bytes as u64 - 1;
    store.advance(22_000).expect("advance");
    let after = store.stats();
    assert_eq!(after.tiers[0].evicted_buckets, 1);
    assert_eq!(after.tiers[0].evicted_rows, 1);
    assert_eq!(after.tiers[0].oldest_bucket_ms, Some(1_000));
    assert_eq!(after.tiers[1].buckets, 2);
    assert!(after.estimated_bytes < before.estimated_bytes);

    // Room for everything but the 1 s tier: all of it goes, oldest first,
    // and the 10 s tier stays whole.
    store.config.memory_budget_bytes =
        (after.estimated_bytes - after.tiers[0].estimated_bytes) as u64;
    store.advance(22_000).expect("advance");
    let after = store.stats();
    assert_eq!(after.tiers[0].buckets, 0);
    assert_eq!(after.tiers[0].evicted_buckets, 20);
    assert_eq!(after.tiers[1].buckets, 2);
    assert_eq!(after.tiers[1].evicted_buckets, 0);
    assert_eq!(
        store.choose_tier(TimeWindow::new(0, 20_000)),
        Tier::TenSeconds
    );

    store.config.memory_budget_bytes = 1;
    store.advance(22_000).expect("advance");
    let after = store.stats();
    assert_eq!(after.tiers[1].evicted_buckets, 2);
    assert_eq!(after.tiers[1].evicted_rows, 2);
}

#[test]
fn late_records_are_counted_and_kept_in_the_oldest_open_bucket() {
    let mut store = store_with(StoreConfig::default());
    let e = exporter("192.0.2.1", 1);
    ingest(
        &mut store,
        &[(e, flow(500, "10.0.0.1", "10.0.0.2", 0, 10, 1))],
    );
    store.advance(5_000).expect("advance");
    // Buckets before 3 s have closed; these two belong to 0 s and 2 s.
    ingest(
        &mut store,
        &[
            (e, flow(700, "10.0.0.1", "10.0.0.2", 0, 20, 2)),
            (e, flow(2_100, "10.0.0.1", "10.0.0.2", 0, 40, 4)),
            (e, flow(4_100, "10.0.0.1", "10.0.0.2", 0, 80, 8)),
        ],
    );
    assert_eq!(store.stats().late_records, 2);
    store.advance(10_000).expect("advance");
    assert_eq!(
        bucket_totals(&store, Tier::OneSecond),
        vec![(0, 10, 1, 1), (3_000, 60, 6, 2), (4_000, 80, 8, 1)]
    );
    assert_eq!(store.stats().records, 4);
}

#[test]
fn counter_series_skips_a_reset() {
    let mut store = store_with(StoreConfig::default());
    let sample = |received_ms: i64, in_octets: u64, in_errors: u64| InterfaceCounters {
        received_ms,
        device: "192.0.2.1".into(),
        if_index: 7,
        if_name: Some("eth7".into()),
        speed_bps: 100_000_000_000,
        in_octets,
        in_packets: in_octets / 1_000,
        in_errors,
        out_octets: in_octets / 2,
        out_packets: in_octets / 2_000,
        ..InterfaceCounters::default()
    };
    let other_interface = InterfaceCounters {
        if_index: 8,
        ..sample(5_000, 1, 0)
    };
    store
        .ingest_counters(&[
            sample(0, 1_000_000, 5),
            other_interface,
            sample(10_000, 26_000_000, 7),
            sample(20_000, 2_000, 0),
            sample(30_000, 12_502_000, 1),
        ])
        .expect("valid counters");
    let points = store
        .link_counter_series("192.0.2.1", 7, TimeWindow::new(0, 60_000))
        .expect("series");
    let summary: Vec<(i64, i64, f64, f64, f64, u64)> = points
        .iter()
        .map(|p| {
            (
                p.time_ms,
                p.interval_ms,
                p.in_bps,
                p.out_bps,
                p.in_pps,
                p.in_errors,
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (10_000, 10_000, 20_000_000.0, 10_000_000.0, 2_500.0, 2),
            (30_000, 10_000, 10_000_000.0, 5_000_000.0, 1_250.0, 1),
        ]
    );
    assert_eq!(points[0].speed_bps, 100_000_000_000);
    assert_eq!(store.stats().counter_resets, 1);
    assert_eq!(store.stats().counter_samples, 5);
    // The window selects by the interval's end.
    let late = store
        .link_counter_series("192.0.2.1", 7, TimeWindow::new(20_000, 60_000))
        .expect("series");
    assert_eq!(late.len(), 1);
}

#[test]
fn top_flows_are_heaviest_first_and_limited() {
    let mut store = store_with(StoreConfig::default());
    let e = exporter("192.0.2.1", 1);
    let f = exporter("192.0.2.2", 1);
    ingest(
        &mut store,
        &[
            (e, flow(0, "10.0.0.1", "10.0.0.9", 0, 500, 5)),
            // The same 5-tuple seen by another exporter and a second later
            // adds up.
            (f, flow(0, "10.0.0.1", "10.0.0.9", 0, 250, 2)),
            (e, flow(1_000, "10.0.0.1", "10.0.0.9", 0, 250, 2)),
            (e, flow(0, "10.0.0.2", "10.0.0.9", 0, 900, 9)),
            // Equal bytes: more packets first.
            (e, flow(0, "10.0.0.3", "10.0.0.9", 0, 900, 10)),
            (e, flow(0, "10.0.0.4", "10.0.0.9", 0, 10, 1)),
            // Same addresses, other DSCP: another flow.
            (e, flow(0, "10.0.0.4", "10.0.0.9", 46, 20, 1)),
        ],
    );
    store.advance(20_000).expect("advance");
    let top = store
        .top_flows(TimeWindow::new(0, 10_000), 3)
        .expect("top flows");
    let summary: Vec<(String, u64, u64, u64)> = top
        .iter()
        .map(|f| (f.src_addr.to_string(), f.bytes, f.packets, f.flows))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("10.0.0.1".into(), 1_000, 9, 3),
            ("10.0.0.3".into(), 900, 10, 1),
            ("10.0.0.2".into(), 900, 9, 1),
        ]
    );
    assert_eq!(top[0].dst_addr, address("10.0.0.9"));
    assert_eq!(
        (top[0].src_port, top[0].dst_port, top[0].protocol),
        (1000, 2000, 6)
    );
    let all = store
        .top_flows(TimeWindow::new(0, 10_000), 100)
        .expect("top flows");
    assert_eq!(all.len(), 5);
    let dscps: Vec<(u64, u8)> = all.iter().skip(3).map(|f| (f.bytes, f.dscp)).collect();
    assert_eq!(dscps, vec![(20, 46), (10, 0)]);
    // The window selects buckets by start.
    let second = store
        .top_flows(TimeWindow::new(1_000, 2_000), 10)
        .expect("top flows");
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].bytes, 250);
}

#[test]
fn selected_bytes_per_selector_and_exporter() {
    let mut store = store_with(StoreConfig::default());
    let (e, f) = (exporter("192.0.2.1", 1), exporter("192.0.2.2", 1));
    let mut udp = flow(0, "10.1.0.5", "10.2.0.7", 10, 700, 7);
    udp.protocol = 17;
    udp.dst_port = 5201;
    ingest(
        &mut store,
        &[
            // The job's flow, seen where it enters (e) and further on (f).
            (e, flow(0, "10.1.0.1", "10.2.0.1", 10, 1_000, 10)),
            (f, flow(0, "10.1.0.1", "10.2.0.1", 10, 1_000, 10)),
            (e, flow(1_000, "10.1.0.2", "10.2.0.9", 10, 500, 5)),
            // Other class, other destination, other direction.
            (e, flow(0, "10.1.0.1", "10.2.0.1", 46, 300, 3)),
            (e, flow(0, "10.1.0.1", "10.3.0.1", 10, 400, 4)),
            (e, flow(0, "10.2.0.1", "10.1.0.1", 10, 600, 6)),
            (e, udp),
        ],
    );
    store.advance(20_000).expect("advance");
    let job = FlowSelector {
        sources: vec!["10.1.0.0/16".parse().expect("prefix")],
        destinations: vec!["10.2.0.0/16".parse().expect("prefix")],
        class: Some("ai-bulk".into()),
        protocol: None,
        destination_ports: None,
    };
    let ports = FlowSelector {
        class: None,
        protocol: Some(17),
        destination_ports: Some((5201, 5201)),
        ..job.clone()
    };
    let got = store
        .selected_bytes(TimeWindow::new(0, 10_000), &[job, ports])
        .expect("selected");
    let summary: Vec<(usize, i64, String, u64)> = got
        .iter()
        .map(|s| {
            (
                s.selector,
                s.bucket_start_ms,
                s.exporter.to_string(),
                s.bytes,
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (0, 0, "192.0.2.1".into(), 1_700),
            (0, 0, "192.0.2.2".into(), 1_000),
            (0, 1_000, "192.0.2.1".into(), 500),
            (1, 0, "192.0.2.1".into(), 700),
        ]
    );
}

#[test]
fn top_talkers_by_address_site_and_pair() {
    let mut store = store_with(two_sites());
    let e = exporter("192.0.2.1", 1);
    ingest(
        &mut store,
        &[
            (e, flow(0, "10.1.2.3", "10.9.0.1", 0, 100, 1)),
            (e, flow(0, "10.1.2.3", "10.1.7.1", 0, 50, 1)),
            (e, flow(0, "10.1.7.7", "10.9.0.1", 0, 120, 1)),
        ],
    );
    store.advance(20_000).expect("advance");
    let window = TimeWindow::new(0, 10_000);
    let talkers = |by| {
        store
            .top_talkers(window, by, 2)
            .expect("talkers")
            .into_iter()
            .map(|t| (t.source, t.destination, t.bytes))
            .collect::<Vec<_>>()
    };
    let text = |s: &str| Some(s.to_string());
    assert_eq!(
        talkers(TalkerGrouping::Source),
        vec![(text("10.1.2.3"), None, 150), (text("10.1.7.7"), None, 120)]
    );
    assert_eq!(
        talkers(TalkerGrouping::Destination),
        vec![(None, text("10.9.0.1"), 220), (None, text("10.1.7.1"), 50)]
    );
    assert_eq!(
        talkers(TalkerGrouping::SourceSite),
        vec![(text("dc-narrow"), None, 150), (text("dc-wide"), None, 120)]
    );
    assert_eq!(
        talkers(TalkerGrouping::DestinationSite),
        vec![(None, text("pop"), 220), (None, text("dc-wide"), 50)]
    );
    assert_eq!(
        talkers(TalkerGrouping::SitePair),
        vec![
            (text("dc-wide"), text("pop"), 120),
            (text("dc-narrow"), text("pop"), 100),
        ]
    );
}

#[test]
fn traffic_matrix_rates_per_bucket_and_averaged() {
    let mut store = store_with(two_sites());
    let e = exporter("192.0.2.1", 1);
    ingest(
        &mut store,
        &[
            (e, flow(0, "10.1.2.3", "10.9.0.1", 26, 1_000, 10)),
            (e, flow(3_000, "10.1.2.3", "10.9.0.1", 26, 3_000, 30)),
            (e, flow(12_000, "10.1.2.3", "10.9.0.1", 26, 5_000, 50)),
        ],
    );
    store.advance(30_000).expect("advance");
    let window = TimeWindow::new(0, 20_000);
    let fine: Vec<(i64, u64, f64)> = store
        .traffic_matrix(window, Some(Tier::OneSecond))
        .expect("matrix")
        .into_iter()
        .map(|c| (c.bucket_start_ms, c.bytes, c.rate_bps))
        .collect();
    assert_eq!(
        fine,
        vec![
            (0, 1_000, 8_000.0),
            (3_000, 3_000, 24_000.0),
            (12_000, 5_000, 40_000.0)
        ]
    );
    let coarse = store
        .traffic_matrix(window, Some(Tier::TenSeconds))
        .expect("matrix");
    let rates: Vec<(i64, i64, u64, f64)> = coarse
        .iter()
        .map(|c| (c.bucket_start_ms, c.bucket_ms, c.bytes, c.rate_bps))
        .collect();
    assert_eq!(
        rates,
        vec![
            (0, 10_000, 4_000, 3_200.0),
            (10_000, 10_000, 5_000, 4_000.0)
        ]
    );
    assert_eq!(
        (
            coarse[0].src_site.as_str(),
            coarse[0].dst_site.as_str(),
            coarse[0].class.as_str()
        ),
        ("dc-narrow", "pop", "ai-sync")
    );
    let average = store
        .traffic_matrix_average(window, Some(Tier::TenSeconds))
        .expect("average");
    assert_eq!(average.len(), 1);
    assert_eq!((average[0].bytes, average[0].packets), (9_000, 90));
    assert_eq!(average[0].rate_bps, 9_000.0 * 8.0 / 20.0);
    // Without a tier, the finest covering the window answers.
    let auto = store.traffic_matrix(window, None).expect("matrix");
    assert_eq!(auto.len(), 3);
}

#[test]
fn exporter_matrix_per_exporter_domain_prefix_pair_and_class() {
    let mut store = store_with(two_sites());
    let (a, a2, b) = (
        exporter("192.0.2.1", 1),
        exporter("192.0.2.1", 2),
        exporter("192.0.2.9", 1),
    );
    let mut sampled = flow(200, "10.1.2.3", "10.9.0.1", 26, 100, 1);
    sampled.sampling_rate = 100;
    ingest(
        &mut store,
        &[
            (a, flow(100, "10.1.2.3", "10.9.0.1", 26, 1_000, 10)),
            (a, sampled),
            (a, flow(300, "10.1.2.3", "10.9.0.1", 0, 500, 5)),
            (a2, flow(400, "10.1.2.3", "10.9.0.1", 26, 700, 7)),
            (b, flow(500, "10.9.0.1", "172.16.5.9", 26, 900, 9)),
            (b, flow(11_000, "10.9.0.1", "10.1.3.3", 26, 2_000, 2)),
        ],
    );
    store.advance(30_000).expect("advance");
    // The default grace keeps the last two seconds open.
    assert_eq!(store.closed_before_ms(Tier::OneSecond), 28_000);
    assert_eq!(store.closed_before_ms(Tier::TenSeconds), 20_000);
    let cells = store
        .exporter_matrix(TimeWindow::new(0, 20_000), Some(Tier::OneSecond))
        .expect("matrix");
    let rows: Vec<(i64, String, u32, &str, &str, &str, u64)> = cells
        .iter()
        .map(|c| {
            (
                c.bucket_start_ms,
                c.exporter.to_string(),
                c.observation_domain,
                c.src_prefix.as_str(),
                c.dst_prefix.as_str(),
                c.class.as_str(),
                c.bytes,
            )
        })
        .collect();
    let row = |start, exporter: &str, domain, src, dst, class, bytes| {
        (start, exporter.to_string(), domain, src, dst, class, bytes)
    };
    assert_eq!(
        rows,
        vec![
            row(
                0,
                "192.0.2.1",
                1,
                "10.1.2.0/24",
                "10.9.0.0/16",
                "ai-sync",
                11_000
            ),
            row(
                0,
                "192.0.2.1",
                1,
                "10.1.2.0/24",
                "10.9.0.0/16",
                "best-effort",
                500
            ),
            row(
                0,
                "192.0.2.1",
                2,
                "10.1.2.0/24",
                "10.9.0.0/16",
                "ai-sync",
                700
            ),
            // No site holds the destination: its /24 aggregate.
            row(
                0,
                "192.0.2.9",
                1,
                "10.9.0.0/16",
                "172.16.5.0/24",
                "ai-sync",
                900
            ),
            row(
                11_000,
                "192.0.2.9",
                1,
                "10.9.0.0/16",
                "10.1.0.0/16",
                "ai-sync",
                2_000
            ),
        ]
    );
    assert!(cells.iter().all(|c| c.bucket_ms == 1_000));
    // The 10 s tier sums the same per exporter.
    let coarse = store
        .exporter_matrix(TimeWindow::new(0, 20_000), Some(Tier::TenSeconds))
        .expect("matrix");
    let total = |cells: &[ExporterCell]| cells.iter().map(|c| c.bytes).sum::<u64>();
    assert_eq!(total(&coarse), total(&cells));
    assert_eq!(coarse.len(), 5);
    assert!(coarse.iter().all(|c| c.bucket_ms == 10_000));
}

#[test]
fn interface_series_from_flow_records() {
    let mut store = store_with(StoreConfig::default());
    let e = exporter("192.0.2.1", 1);
    let other_domain = exporter("192.0.2.1", 2);
    let other_router = exporter("192.0.2.2", 1);
    let mut outbound = flow(0, "10.0.0.1", "10.0.0.2", 0, 300, 3);
    (outbound.in_if, outbound.out_if) = (5, 1);
    ingest(
        &mut store,
        &[
            (e, flow(0, "10.0.0.1", "10.0.0.2", 0, 1_000, 10)),
            (other_domain, flow(0, "10.0.0.1", "10.0.0.2", 0, 500, 5)),
            (e, outbound),
            (other_router, flow(0, "10.0.0.1", "10.0.0.2", 0, 7_000, 70)),
            (e, flow(2_000, "10.0.0.1", "10.0.0.2", 0, 100, 1)),
        ],
    );
    store.advance(20_000).expect("advance");
    let series = store
        .interface_series(address("192.0.2.1"), 1, TimeWindow::new(0, 10_000), None)
        .expect("series");
    let points: Vec<(i64, f64, f64, f64, f64)> = series
        .iter()
        .map(|p| (p.bucket_start_ms, p.in_bps, p.out_bps, p.in_pps, p.out_pps))
        .collect();
    assert_eq!(
        points,
        vec![
            (0, 1_500.0 * 8.0, 300.0 * 8.0, 15.0, 3.0),
            (2_000, 800.0, 0.0, 1.0, 0.0),
        ]
    );
    let coarse = store
        .interface_series(
            address("192.0.2.1"),
            1,
            TimeWindow::new(0, 10_000),
            Some(Tier::TenSeconds),
        )
        .expect("series");
    assert_eq!(coarse.len(), 1);
    assert_eq!(coarse[0].in_bps, 1_600.0 * 8.0 / 10.0);
}

#[test]
fn invalid_config_is_refused() {
    let config = StoreConfig {
        ipv4_prefix_len: 40,
        ..StoreConfig::default()
    };
    match TelemetryStore::new(config) {
        Err(StoreError::Config { field, .. }) => assert_eq!(field, "ipv4_prefix_len"),
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("a /40 IPv4 prefix was accepted"),
    }
}

/// Everything the queries answer, for comparing two stores.
fn answers(store: &TelemetryStore) -> String {
    let window = TimeWindow::new(0, 120_000);
    let mut text = String::new();
    text += &format!("{:?}\n", store.top_flows(window, 10).expect("top flows"));
    text += &format!(
        "{:?}\n",
        store
            .top_talkers(window, TalkerGrouping::SitePair, 10)
            .expect("talkers")
    );
    for tier in Tier::ALL {
        text += &format!(
            "{:?}\n",
            store.traffic_matrix(window, Some(tier)).expect("matrix")
        );
        text += &format!(
            "{:?}\n",
            store
                .interface_series(address("192.0.2.1"), 1, window, Some(tier))
                .expect("series")
        );
    }
    text += &format!(
        "{:?}\n",
        store
            .top_talkers(window, TalkerGrouping::Source, 10)
            .expect("talkers")
    );
    text += &format!(
        "{:?}\n",
        store
            .link_counter_series("192.0.2.1", 7, window)
            .expect("counters")
    );
    let rows: Vec<usize> = store.stats().tiers.iter().map(|t| t.rows).collect();
    text += &format!("{rows:?} {}\n", store.stats().counter_rows);
    text
}

fn store_for_round_trip() -> TelemetryStore {
    let mut store = store_with(two_sites());
    let mut records = known_records();
    let v6 = exporter("2001:db8::1", 3);
    records.push((v6, flow(2_000, "2001:db8:5::1", "10.1.2.9", 18, 64, 1)));
    ingest(&mut store, &records);
    let counters: Vec<InterfaceCounters> = [(0, 0), (10_000, 1_250_000), (20_000, 100)]
        .into_iter()
        .map(|(received_ms, in_octets)| InterfaceCounters {
            received_ms,
            device: "192.0.2.1".into(),
            if_index: 7,
            if_name: if received_ms == 0 {
                None
            } else {
                Some("eth7".into())
            },
            in_octets,
            ..InterfaceCounters::default()
        })
        .collect();
    store.ingest_counters(&counters).expect("counters");
    store.advance(130_000).expect("advance");
    store
}

#[test]
fn parquet_round_trip_answers_the_same() {
    let store = store_for_round_trip();
    let dir = tempfile::tempdir().expect("temporary directory");
    let summary = store.export_parquet(dir.path()).expect("export");
    let rows: Vec<(String, usize)> = summary
        .files
        .iter()
        .map(|f| {
            let name = f.path.file_name().map(|n| n.to_string_lossy().into_owned());
            (name.unwrap_or_default(), f.rows)
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            ("flows_1s.parquet".into(), 6),
            ("flows_10s.parquet".into(), 5),
            ("flows_1m.parquet".into(), 5),
            ("interface_counters.parquet".into(), 3),
        ]
    );
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .expect("list")
        .filter_map(Result::ok)
        .filter(|entry| entry.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty());

    let mut fresh = store_with(two_sites());
    let imported = fresh.import_parquet(dir.path()).expect("import");
    assert_eq!(imported.files.len(), 4);
    assert!(imported.missing.is_empty());
    assert_eq!(answers(&fresh), answers(&store));
    // Addresses are text in the file, numbers again after the import.
    assert!(answers(&fresh).contains("2001:db8:5::1"));

    // Importing the same buckets again stacks them onto the ones there.
    let once = bucket_totals(&fresh, Tier::TenSeconds);
    fresh.import_parquet(dir.path()).expect("second import");
    let twice: Vec<(i64, u64, u64, u64)> = once
        .iter()
        .map(|&(start, bytes, packets, flows)| (start, 2 * bytes, 2 * packets, 2 * flows))
        .collect();
    assert_eq!(bucket_totals(&fresh, Tier::TenSeconds), twice);
    assert_eq!(once.len(), 3);
}

#[test]
fn import_names_the_file_and_column_that_do_not_match() {
    let store = store_for_round_trip();
    let dir = tempfile::tempdir().expect("temporary directory");
    store.export_parquet(dir.path()).expect("export");

    // A 10 s table whose bytes are text.
    let path = dir.path().join("flows_10s.parquet");
    let file = std::fs::File::open(&path).expect("open");
    let mut frame = ParquetReader::new(file).finish().expect("read");
    let texts = Columns::new(&frame).u64(BYTES).expect("bytes");
    let texts = StringChunked::from_iter_values(BYTES.into(), texts.iter().map(|b| b.to_string()));
    frame.replace(BYTES, texts.into_column()).expect("replace");
    let file = std::fs::File::create(&path).expect("create");
    ParquetWriter::new(file).finish(&mut frame).expect("write");

    let mut fresh = store_with(StoreConfig::default());
    match fresh.import_parquet(dir.path()) {
        Err(StoreError::Schema {
            path: bad, column, ..
        }) => {
            assert_eq!((bad, column.as_str()), (path, BYTES));
        }
        other => panic!("unexpected: {other:?}"),
    }
    // Nothing from the good files went in either.
    assert_eq!(fresh.stats().tiers[0].rows, 0);

    // A 1 s table with an address that is not one.
    let dir = tempfile::tempdir().expect("temporary directory");
    store.export_parquet(dir.path()).expect("export");
    let path = dir.path().join("flows_1s.parquet");
    let file = std::fs::File::open(&path).expect("open");
    let mut frame = ParquetReader::new(file).finish().expect("read");
    let height = frame.height();
    let bad = StringChunked::from_iter_values(
        DST_ADDR.into(),
        (0..height).map(|row| if row == 2 { "10.0.0.300" } else { "10.0.0.3" }),
    );
    frame.replace(DST_ADDR, bad.into_column()).expect("replace");
    let file = std::fs::File::create(&path).expect("create");
    ParquetWriter::new(file).finish(&mut frame).expect("write");
    match fresh.import_parquet(dir.path()) {
        Err(StoreError::InvalidValue { column, row, .. }) => {
            assert_eq!((column.as_str(), row), (DST_ADDR, 2));
        }
        other => panic!("unexpected: {other:?}"),
    }
}

#[test]
fn interfaces_are_found_by_name_at_their_newest_index() {
    let mut store = store_with(StoreConfig::default());
    let sample = |received_ms: i64, if_index: u32, if_name: &str| InterfaceCounters {
        received_ms,
        device: "nodes/r1".into(),
        if_index,
        if_name: Some(if_name.into()),
        ..InterfaceCounters::default()
    };
    store
        .ingest_counters(&[sample(1_000, 4, "eth1"), sample(1_000, 5, "eth2")])
        .expect("ingest");
    assert_eq!(store.interface_index("nodes/r1", "eth1"), Some(4));
    // eth1 re-created with a new ifindex.
    store
        .ingest_counters(&[sample(2_000, 9, "eth1")])
        .expect("ingest");
    assert_eq!(store.interface_index("nodes/r1", "eth1"), Some(9));
    assert_eq!(store.interface_index("nodes/r1", "eth3"), None);
    assert_eq!(store.interface_index("nodes/r2", "eth2"), None);
}

/// An sFlow sender naming a new ifIndex in every sample: the baselines
/// stay within `max_counter_interfaces` (the flood's own oldest entries
/// make room), a real interface sampled all along keeps its rates, and the
/// baselines and samples count against the memory budget, samples being
/// dropped oldest first when it is exceeded.
#[test]
fn an_interface_flood_is_capped_and_counted_in_the_budget() {
    let mut store = store_with(StoreConfig {
        max_counter_interfaces: 1_000,
        ..StoreConfig::default()
    });
    let sample =
        |received_ms: i64, device: &str, if_index: u32, in_octets: u64| InterfaceCounters {
            received_ms,
            device: device.into(),
            if_index,
            in_octets,
            ..InterfaceCounters::default()
        };
    let empty = store.stats().estimated_bytes;
    for second in 0..50u32 {
        let now = i64::from(second) * 1_000;
        let mut batch = vec![sample(now, "192.0.2.1", 7, u64::from(second) * 1_250_000)];
        batch.extend((0..1_000u32).map(|i| sample(now, "198.51.100.9", second * 1_000 + i, 1)));
        store.ingest_counters(&batch).expect("valid counters");
        let stats = store.stats();
        assert!(stats.counter_interfaces <= 1_000, "{stats:?}");
    }
    let stats = store.stats();
    assert!(stats.counter_baselines_evicted >= 49_000, "{stats:?}");
    let points = store
        .link_counter_series("192.0.2.1", 7, TimeWindow::new(0, 60_000))
        .expect("series");
    // 1,250,000 bytes a second: 10 Mbit/s, every interval after the first.
    let rates: Vec<f64> = points.iter().skip(1).map(|p| p.in_bps).collect();
    assert!(rates.len() >= 45, "{points:?}");
    assert!(rates.iter().all(|r| (*r - 10e6).abs() < 1.0), "{rates:?}");

    // The baselines and samples are in the estimate; a budget below it
    // drops samples, oldest first, and says so.
    store.advance(120_000).expect("advance");
    let before = store.stats();
    assert!(before.counter_estimated_bytes >= 1_000 * 100, "{before:?}");
    assert_eq!(
        before.estimated_bytes - empty,
        before.counter_estimated_bytes
    );
    store.config.memory_budget_bytes = (before.estimated_bytes / 2) as u64;
    store.advance(120_000).expect("advance");
    let after = store.stats();
    assert!(after.counter_evicted_rows > 0, "{after:?}");
    assert!(
        after.estimated_bytes <= before.estimated_bytes / 2,
        "{after:?}"
    );
}
