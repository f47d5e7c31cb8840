//! `aiwan demo`, the main job, as a user runs it: headless, for a fixed
//! time, with the JSON summary. The closed loop must re-plan from
//! telemetry (the training job's bursts congest the shortest WAN path) and
//! every re-plan must lower the measured MLU; a second run continues from
//! the state the first left; `recommend` mode stores proposals and pushes
//! nothing.
//!
//! Needs nothing but the binary: no root, loopback only.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn demo(dir: &Path, extra: &[&str]) -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_aiwan"))
        .args(["demo", "--headless", "--json", "--listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(dir)
        .args(extra)
        .output()
        .expect("run aiwan demo");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "aiwan demo failed:\n{stderr}");
    assert!(
        stderr.contains("aiwan tui --endpoint http://127.0.0.1:"),
        "no attach line:\n{stderr}"
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON document ({e}):\n{}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

fn number(summary: &Value, key: &str) -> f64 {
    summary[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} missing from {summary}"))
}

fn plan_versions(summary: &Value) -> Vec<i64> {
    summary["replan_details"]
        .as_array()
        .expect("replan_details")
        .iter()
        .map(|r| {
            r["plan"]
                .as_str()
                .and_then(|p| p.strip_prefix("plans/"))
                .and_then(|v| v.parse().ok())
                .expect("plans/N")
        })
        .collect()
}

#[test]
fn the_demo_closes_the_loop_and_resumes_from_its_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let summary = demo(dir.path(), &["--duration", "20"]);
    eprintln!("{summary:#}");
    assert!(number(&summary, "packets_received") > 0.0);
    assert!(number(&summary, "flow_records") > 0.0);
    assert_eq!(number(&summary, "decode_errors"), 0.0);
    let details = summary["replan_details"].as_array().expect("details");
    assert!(
        details
            .iter()
            .any(|r| r["trigger"] == "congestion" || r["trigger"] == "improvement"),
        "no re-plan triggered by telemetry: {summary}"
    );
    let before = summary["mlu_before"].as_array().expect("mlu_before");
    let after = summary["mlu_after"].as_array().expect("mlu_after");
    assert_eq!(before.len(), details.len());
    assert_eq!(after.len(), details.len());
    for (b, a) in before.iter().zip(after) {
        let (b, a) = (b.as_f64().expect("number"), a.as_f64().expect("number"));
        assert!(
            a < b,
            "MLU after a re-plan ({a}) is not below before it ({b}): {summary}"
        );
    }
    // mlu_after is measured in traffic comparable with the interval
    // before the re-plan (the prediction where traffic changed too much
    // to compare); at least one re-plan's effect must be measured.
    assert!(
        details.iter().any(|r| r["measured_mlu_after"].is_number()),
        "no re-plan's effect was measured: {summary}"
    );
    assert!(number(&summary, "pushes_applied") > 0.0);
    let jobs = summary["ai_jobs"].as_array().expect("ai_jobs");
    assert_eq!(jobs.len(), 3);
    for job in jobs {
        let satisfaction = job["satisfaction"].as_f64().expect("satisfaction reported");
        assert!((0.0..=1.0).contains(&satisfaction), "{job}");
    }
    // The loop's latency with 1 s telemetry: congestion first seen to
    // routes applied, under 3 s.
    for detail in details.iter().filter(|r| r["trigger"] == "congestion") {
        if let Some(latency) = detail["loop_latency_ms"].as_f64() {
            assert!(latency < 3000.0, "loop latency {latency} ms: {detail}");
        }
    }

    // A second run starts from what the first stored: no new import, the
    // jobs are there, and its plans come after the first run's.
    let first_last = plan_versions(&summary).into_iter().max().unwrap_or(1);
    let again = demo(dir.path(), &["--duration", "6"]);
    for version in plan_versions(&again) {
        assert!(version > first_last, "plans/{version} reused: {again}");
    }
    assert_eq!(again["ai_jobs"].as_array().map(Vec::len), Some(3));
}

#[test]
fn recommend_mode_stores_proposals_and_pushes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let summary = demo(dir.path(), &["--duration", "14", "--mode", "recommend"]);
    eprintln!("{summary:#}");
    assert_eq!(summary["mode"], "recommend");
    assert_eq!(number(&summary, "replans"), 0.0, "{summary}");
    let proposals = summary["proposals"].as_array().expect("proposals");
    assert!(!proposals.is_empty(), "no proposal: {summary}");
    // Only the operator's first plan became the desired state; every
    // proposal is stored, computed, and was never pushed.
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let url = format!("sqlite://{}?mode=rw", dir.path().join("aiwan.db").display());
        let store = aiwan_controller::store::Store::open(&url)
            .await
            .expect("database");
        let plans = store.list_plans(i64::MAX, 1000).await.expect("plans");
        let applied: Vec<i64> = plans
            .iter()
            .filter(|p| p.proposal_state.is_none())
            .map(|p| p.version)
            .collect();
        assert_eq!(applied, [1], "only the operator's plan: {plans:?}");
        let proposed: Vec<&aiwan_controller::model::PlanRecord> = plans
            .iter()
            .filter(|p| p.proposal_state.is_some())
            .collect();
        assert_eq!(proposed.len(), proposals.len());
        for plan in proposed {
            assert_eq!(plan.status, aiwan_controller::model::PlanStatus::Computed);
            assert!(plan.trigger.is_telemetry(), "{plan:?}");
            let (_, rows) = store
                .plan_content(plan.version)
                .await
                .expect("content")
                .expect("stored");
            let pending = store.pending_nodes(plan.version).await.expect("pending");
            assert_eq!(
                pending.len(),
                rows.len(),
                "a router took proposal plans/{}",
                plan.version
            );
        }
        store.close().await;
    });
    let pushes = number(&summary, "pushes_applied");
    assert!(
        pushes <= 13.0,
        "pushes beyond the first plan's 13 routers: {pushes}"
    );
}
