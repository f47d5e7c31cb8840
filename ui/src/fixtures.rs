//! Fixed snapshots for the snapshot tests and the frame benchmark: the
//! demo's network in the middle of a congestion episode, and a large
//! network of generated links and jobs.

use std::collections::{BTreeMap, VecDeque};

use crate::snapshot::{
    AllocationRow, ConnectionState, ControlLoop, EventRow, FlowRow, JobProgressRow, JobRow,
    LinkRow, Matrix, PlanDetail, PlanRow, RouterRow, Snapshot,
};

/// The clock the fixtures are drawn at (2026-12-03 12:00:00 UTC).
pub const NOW_MS: i64 = 1_796_299_200_000;

fn link(id: &str, dst: &str, capacity: f64, now: f64, next: f64, wan: bool) -> LinkRow {
    LinkRow {
        id: id.into(),
        src: id.split(':').next().unwrap_or_default().into(),
        dst: dst.into(),
        capacity_bps: capacity,
        latency_us: 5000,
        admin_up: true,
        rate_bps: now * capacity,
        has_counters: true,
        predicted_bps: next * capacity,
        predicted_low_bps: (next - 0.08).max(0.0) * capacity,
        predicted_high_bps: (next + 0.08) * capacity,
        congestion_probability: if next >= 0.8 {
            0.97
        } else if next > 0.6 {
            0.2
        } else {
            0.0
        },
        dominant_class: if wan { "ai-sync" } else { "best-effort" }.into(),
        disagreement_bps: 0.004 * capacity,
        agrees: true,
        wan,
    }
}

fn plan(version: i64, status: &str, trigger: &str, mlu: f64, reason: &str) -> PlanRow {
    PlanRow {
        name: format!("plans/{version}"),
        version,
        status: status.into(),
        trigger: trigger.into(),
        reason: reason.into(),
        creator: if trigger == "operator" {
            "tokens/bootstrap".into()
        } else {
            "aiwan closed loop".into()
        },
        created_ms: NOW_MS - (10 - version) * 30_000,
        mlu,
        ai_sync_satisfaction: 1.0,
        ai_bulk_satisfaction: 1.0,
        best_effort_satisfaction: if mlu > 1.0 { 1.0 / mlu } else { 1.0 },
        worst_failure_mlu: mlu * 1.4,
        proposal: String::new(),
        pending_nodes: Vec::new(),
        predicted_before: (trigger != "operator").then_some(1.43),
        predicted_after: (trigger != "operator").then_some(mlu),
        routes_changed: (trigger != "operator").then_some(13),
    }
}

/// A router's routes: (destination, [(next hop, share)]).
fn router(node: &str, status: &str, routes: &[(&str, &[(&str, f64)])]) -> RouterRow {
    RouterRow {
        node: node.into(),
        push_status: status.into(),
        routes: routes
            .iter()
            .map(|(destination, hops)| {
                (
                    destination.to_string(),
                    hops.iter()
                        .map(|(hop, share)| (hop.to_string(), *share))
                        .collect(),
                )
            })
            .collect(),
        pins: 0,
        rate_limits: 0,
    }
}

fn allocation(class: &str, rate: f64, paths: &[(&[&str], f64)]) -> AllocationRow {
    let first = paths.first().map(|p| p.0).unwrap_or_default();
    let src = first.first().copied().unwrap_or_default();
    let dst = first.last().copied().unwrap_or_default();
    let site = |node: &str| node.trim_end_matches("-edge").to_string();
    AllocationRow {
        src_node: src.into(),
        dst_node: dst.into(),
        src_site: site(src),
        dst_site: site(dst),
        class: class.into(),
        rate_bps: rate,
        paths: paths
            .iter()
            .map(|(nodes, share)| (nodes.iter().map(|n| n.to_string()).collect(), *share))
            .collect(),
        pinned: class == "ai-sync",
    }
}

/// The current plan (2, most of the training job on the east path) and
/// the proposal (3, moving it south and north), as the plans view and the
/// jobs view see them.
fn demo_plan_details() -> BTreeMap<i64, PlanDetail> {
    let current = PlanDetail {
        version: 2,
        allocations: vec![
            allocation(
                "ai-sync",
                17.5e9,
                &[
                    (&["dc1-edge", "wan-east", "dc2-edge"], 0.7),
                    (&["dc1-edge", "wan-south", "dc2-edge"], 0.3),
                ],
            ),
            allocation(
                "ai-bulk",
                4.1e9,
                &[(&["dc2-edge", "wan-north", "dc1-edge"], 1.0)],
            ),
        ],
        routers: vec![
            router(
                "dc1-edge",
                "applied",
                &[("dc2-edge", &[("wan-east", 0.7), ("wan-south", 0.3)])],
            ),
            router(
                "dc2-edge",
                "applied",
                &[("dc1-edge", &[("wan-east", 0.6), ("wan-north", 0.4)])],
            ),
            router(
                "wan-east",
                "applied",
                &[
                    ("dc1-edge", &[("dc1-edge", 1.0)]),
                    ("dc2-edge", &[("dc2-edge", 1.0)]),
                ],
            ),
            router(
                "wan-north",
                "applied",
                &[("dc1-edge", &[("dc1-edge", 1.0)])],
            ),
            router(
                "wan-south",
                "applied",
                &[("dc2-edge", &[("dc2-edge", 1.0)])],
            ),
        ],
        fetched_ms: NOW_MS,
    };
    let proposal = PlanDetail {
        version: 3,
        allocations: Vec::new(),
        routers: vec![
            router(
                "dc1-edge",
                "pending",
                &[(
                    "dc2-edge",
                    &[("wan-east", 0.2), ("wan-south", 0.5), ("wan-north", 0.3)],
                )],
            ),
            router(
                "dc2-edge",
                "pending",
                &[("dc1-edge", &[("wan-east", 0.3), ("wan-north", 0.7)])],
            ),
            router(
                "wan-east",
                "pending",
                &[
                    ("dc1-edge", &[("dc1-edge", 1.0)]),
                    ("dc2-edge", &[("dc2-edge", 1.0)]),
                ],
            ),
            router(
                "wan-north",
                "pending",
                &[
                    ("dc1-edge", &[("dc1-edge", 1.0)]),
                    ("dc2-edge", &[("dc2-edge", 1.0)]),
                ],
            ),
            router(
                "wan-south",
                "pending",
                &[("dc2-edge", &[("dc2-edge", 1.0)])],
            ),
        ],
        fetched_ms: NOW_MS,
    };
    [(2, current), (3, proposal)].into_iter().collect()
}

/// The demo network while the training job's bursts congest the east path
/// and the loop has just proposed a re-plan (recommend mode).
pub fn demo() -> Snapshot {
    let links = vec![
        link("dc1-edge:eth5", "wan-east", 10e9, 0.97, 1.43, true),
        link("wan-east:eth2", "dc2-edge", 10e9, 0.93, 1.38, true),
        link("dc2-edge:eth5", "wan-east", 10e9, 0.88, 1.31, true),
        link("wan-east:eth1", "dc1-edge", 10e9, 0.85, 1.27, true),
        link("dc1-edge:eth4", "wan-south", 40e9, 0.31, 0.33, true),
        link("wan-south:eth2", "dc2-edge", 40e9, 0.28, 0.29, true),
        link("dc1-edge:eth3", "wan-north", 100e9, 0.12, 0.13, true),
        link("wan-north:eth2", "dc2-edge", 100e9, 0.10, 0.11, true),
        link("wan-north:eth3", "wan-south", 40e9, 0.05, 0.05, true),
        link("wan-south:eth3", "wan-north", 40e9, 0.04, 0.04, true),
        link("dc1-spine1:eth1", "dc1-edge", 400e9, 0.03, 0.03, false),
        link("dc1-leaf1:eth1", "dc1-spine1", 400e9, 0.02, 0.02, false),
    ];
    let mut history = BTreeMap::new();
    for l in &links {
        let series: VecDeque<(i64, f64)> = (0..40)
            .map(|i| {
                let t = NOW_MS - (40 - i) * 1000;
                let ramp = if i > 30 { 1.0 } else { 0.45 };
                (
                    t,
                    (l.utilization() * ramp * (1.0 + 0.05 * ((i % 7) as f64 - 3.0) / 3.0)).max(0.0),
                )
            })
            .collect();
        history.insert(l.id.clone(), series);
    }
    let mut current = plan(
        2,
        "applied",
        "improvement",
        0.38,
        "better plan: predicted MLU 0.603 under the current plan, 0.389 under the new one (35% lower, margin 20%)",
    );
    current.pending_nodes = Vec::new();
    let mut proposal = plan(
        3,
        "computed",
        "congestion",
        0.61,
        "congestion seen: MLU 1.000 measured (threshold 0.80); predicted MLU 1.435 under the current plan, 0.614 under the new one",
    );
    proposal.proposal = "proposed".into();
    let mut plans = vec![
        proposal.clone(),
        current.clone(),
        plan(
            1,
            "superseded",
            "operator",
            0.33,
            "demo start: the declared jobs",
        ),
    ];
    plans[2].created_ms = NOW_MS - 600_000;
    let jobs = vec![
        JobRow {
            name: "jobs/ckpt-llm".into(),
            tenant: "llm-research".into(),
            class: "ai-bulk".into(),
            sources: vec!["dc2".into()],
            destinations: vec!["dc1".into()],
            rate_bps: 4_000_000_000,
            volume_bytes: 0,
            deadline_ms: None,
            state: "active".into(),
            satisfaction: Some(1.0),
            measured_bps: Some(4.09e9),
            guaranteed_bps: Some(4_000_000_000),
            admission: Some(
                "4 Gbit/s asked: 4 Gbit/s within the latency bound, 0 bit/s on longer paths".into(),
            ),
            progress: None,
        },
        JobRow {
            name: "jobs/train-llm-east".into(),
            tenant: "llm-research".into(),
            class: "ai-sync".into(),
            sources: vec!["dc1".into()],
            destinations: vec!["dc2".into()],
            rate_bps: 3_000_000_000,
            volume_bytes: 0,
            deadline_ms: None,
            state: "active".into(),
            satisfaction: Some(1.0),
            measured_bps: Some(17.5e9),
            guaranteed_bps: Some(3_000_000_000),
            admission: Some(
                "3 Gbit/s asked: 3 Gbit/s within the latency bound, 0 bit/s on longer paths".into(),
            ),
            progress: None,
        },
        JobRow {
            name: "jobs/dataset-sync".into(),
            tenant: "vision".into(),
            class: "ai-bulk".into(),
            sources: vec!["pop-north".into()],
            destinations: vec!["dc2".into()],
            rate_bps: 0,
            volume_bytes: 2_000_000_000_000,
            deadline_ms: Some(NOW_MS + 3 * 3600 * 1000),
            state: "active".into(),
            satisfaction: Some(0.81),
            measured_bps: Some(1.1e9),
            guaranteed_bps: Some(1_200_000_000),
            admission: Some(
                "1.48 Gbit/s asked: 1.2 Gbit/s within the latency bound, 0 bit/s on longer \
                 paths, 280 Mbit/s does not fit beside the guarantees already given; at that \
                 rate the volume is through 2215 s after its deadline"
                    .into(),
            ),
            progress: Some(JobProgressRow {
                moved_share: 0.35,
                on_track: false,
                detail: "moved 700.00 GB of 2.00 TB (measured); pace 1.2 Gbit/s; will miss its \
                         deadline by 1854 s: 1.72 TB of 2.00 TB by then"
                    .into(),
            }),
        },
    ];
    let event = |seq: u64, ago_s: i64, kind: &str, subject: &str, message: &str| EventRow {
        sequence: seq,
        at_ms: NOW_MS - ago_s * 1000,
        kind: kind.into(),
        subject: subject.into(),
        message: message.into(),
    };
    let events: VecDeque<EventRow> = vec![
        event(1, 300, "replan", "plans/1", "operator by tokens/bootstrap: demo start: the declared jobs"),
        event(2, 299, "plan-applied", "plans/1", "plans/1 applied on every router"),
        event(3, 240, "replan", "plans/2", "re-planned: better plan: predicted MLU 0.603 under the current plan, 0.389 under the new one"),
        event(4, 239, "plan-applied", "plans/2", "plans/2 applied on every router"),
        event(5, 6, "congestion-seen", "links/dc1-edge:eth5", "congestion seen: 97% measured"),
        event(6, 6, "congestion-predicted", "links/dc1-edge:eth5", "congestion predicted: 143% next interval (chance of exceeding 80%: 0.97)"),
        event(7, 5, "proposal", "plans/3", "proposed: congestion seen: MLU 1.000 measured (threshold 0.80)"),
    ]
    .into();
    let mut cells = BTreeMap::new();
    for (src, dst, class, rate) in [
        ("dc1-edge", "dc2-edge", "ai-sync", 17.5e9),
        ("dc2-edge", "dc1-edge", "ai-sync", 17.3e9),
        ("dc2-edge", "dc1-edge", "ai-bulk", 4.1e9),
        ("dc1-edge", "dc2-edge", "best-effort", 2.6e9),
        ("dc2-edge", "dc1-edge", "best-effort", 1.5e9),
        ("dc1-edge", "wan-north", "best-effort", 1.1e9),
        ("wan-north", "dc1-edge", "best-effort", 0.9e9),
        ("wan-south", "dc2-edge", "best-effort", 0.6e9),
        ("wan-east", "dc1-edge", "best-effort", 0.4e9),
    ] {
        cells.insert((src.into(), dst.into(), class.into()), rate);
    }
    Snapshot {
        endpoint: "http://127.0.0.1:50051".into(),
        connection: ConnectionState::Connected,
        topology_name: "ai-wan".into(),
        topology_revision: 1,
        sites: vec![
            "dc1".into(),
            "dc2".into(),
            "pop-east".into(),
            "pop-north".into(),
            "pop-south".into(),
        ],
        links,
        history,
        forecast_start_ms: Some(NOW_MS - 1000),
        control: Some(ControlLoop {
            mode: "recommend".into(),
            interval_ms: 1000,
            congestion_threshold: 0.8,
            last_decision: "proposed: congestion seen: MLU 1.000 measured (threshold 0.80)".into(),
            predicted_mlu: 1.43,
            measured_mlu: 0.97,
            replans: 2,
            last_latency_ms: Some(1413),
            idle_reason: String::new(),
        }),
        current_plan: Some(current),
        proposal: Some(proposal),
        plans,
        plan_details: demo_plan_details(),
        jobs,
        events,
        matrix: Some(Matrix {
            start_ms: NOW_MS - 1000,
            cells,
            unknown_exporter_bytes: 0,
            transit_bytes: 0,
        }),
        flows: vec![
            FlowRow {
                src: "10.1.1.10".into(),
                dst: "10.2.1.13".into(),
                protocol: 17,
                src_port: 49152,
                dst_port: 4791,
                dscp: 26,
                bytes: 1_890_000,
            },
            FlowRow {
                src: "10.2.1.10".into(),
                dst: "10.1.1.13".into(),
                protocol: 6,
                src_port: 49153,
                dst_port: 5001,
                dscp: 10,
                bytes: 540_000,
            },
        ],
        message: None,
        updated_ms: NOW_MS,
        requests: 0,
    }
}

/// A large network: `links` links between 200 routers, `jobs` jobs, full
/// history, the demo's plans and events.
pub fn large(links: usize, jobs: usize) -> Snapshot {
    let mut snapshot = demo();
    snapshot.links = (0..links)
        .map(|i| {
            let util = ((i * 37) % 100) as f64 / 100.0;
            link(
                &format!("r{}:eth{}", i % 200, i / 200),
                &format!("r{}", (i * 7 + 1) % 200),
                [10e9, 40e9, 100e9][i % 3],
                util,
                (util * 1.1).min(1.5),
                true,
            )
        })
        .collect();
    snapshot.history = snapshot
        .links
        .iter()
        .map(|l| {
            let series: VecDeque<(i64, f64)> = (0..crate::snapshot::MAX_HISTORY as i64)
                .map(|i| (NOW_MS - (600 - i) * 1000, l.utilization()))
                .collect();
            (l.id.clone(), series)
        })
        .collect();
    let template = snapshot.jobs[1].clone();
    snapshot.jobs = (0..jobs)
        .map(|i| JobRow {
            name: format!("jobs/job-{i:04}"),
            tenant: format!("tenant-{}", i % 17),
            ..template.clone()
        })
        .collect();
    snapshot
}
