//! The `aiwan` binary as an operator uses it: help, configuration errors,
//! topology import and show, token creation.

#[path = "support/mod.rs"]
mod support;

use std::path::Path;
use std::process::{Command, Output};

use support::{ADMIN_SECRET, Backend, TestDb, start};

fn aiwan(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_aiwan"))
        .args(args)
        .env_remove("AIWAN_TOKEN")
        .env_remove("AIWAN_ENDPOINT")
        .output()
        .expect("run aiwan")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn help_lists_every_subcommand_of_the_contract() {
    let output = aiwan(&["--help"]);
    assert!(output.status.success());
    let help = text(&output.stdout);
    for command in [
        "demo",
        "controller",
        "collect",
        "agent",
        "tui",
        "topology",
        "token",
        "lab",
        "plan",
        "eval",
        "gen-traffic",
        "bench",
    ] {
        assert!(
            help.lines()
                .any(|l| l.trim_start().starts_with(&format!("{command} "))),
            "{command} missing from\n{help}"
        );
        let sub = aiwan(&[command, "--help"]);
        assert!(sub.status.success(), "aiwan {command} --help failed");
    }
}

/// `demo --lab` is offered, and says what it needs (the run itself is
/// tested as root in tests/lab_scenarios.rs).
#[test]
fn the_demo_offers_the_lab() {
    let output = aiwan(&["demo", "--help"]);
    assert!(output.status.success());
    let help = text(&output.stdout);
    assert!(help.contains("--lab"), "{help}");
    assert!(help.contains("needs root"), "{help}");
}

#[test]
fn lab_run_names_a_scenario_it_cannot_use() {
    let output = aiwan(&["lab", "run", "no-such-scenario.toml"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("no-such-scenario.toml: cannot read"),
        "{stderr}"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "name = \"x\"\ntopology = \"t.clab.yml\"\n[[flow]]\nfrom = \"a\"\nto = \"b\"\nprotocol = \"udp\"\nport = 5201\nseconds = 5\n",
    )
    .expect("write");
    let output = aiwan(&["lab", "run", path.to_str().expect("utf-8")]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("flow[0].rate: UDP needs a rate"),
        "{stderr}"
    );
    assert!(output.stdout.is_empty());
}

#[test]
fn bad_config_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("aiwan.toml");
    std::fs::write(&path, "listen = \"127.0.0.1:0\"\nmetrics_listn = \"x\"\n").expect("write");
    let output = aiwan(&["controller", "--config", path.to_str().expect("utf-8")]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(stderr.contains("unknown field `metrics_listn`"), "{stderr}");
    let output = aiwan(&["controller", "--bootstrap-token", "root:0123456789abcdef0"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output.stderr).contains("bootstrap_token: unknown role \"root\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topology_import_then_show() {
    let db = TestDb::new(Backend::Sqlite, "topology_import_then_show")
        .await
        .expect("sqlite");
    let controller = start(&db).await;
    let endpoint = format!("http://{}", controller.grpc_addr);
    let lab = Path::new(env!("CARGO_MANIFEST_DIR")).join("../lab/ai-wan.clab.yml");
    let lab = lab.to_str().expect("utf-8 path").to_string();

    let denied = tokio::task::spawn_blocking({
        let (endpoint, lab) = (endpoint.clone(), lab.clone());
        move || aiwan(&["topology", "import", &lab, "--endpoint", &endpoint])
    })
    .await
    .expect("join");
    assert_eq!(denied.status.code(), Some(1));
    assert!(
        text(&denied.stderr).contains("Unauthenticated"),
        "{}",
        text(&denied.stderr)
    );

    let imported = tokio::task::spawn_blocking({
        let (endpoint, lab) = (endpoint.clone(), lab.clone());
        move || {
            aiwan(&[
                "topology",
                "import",
                &lab,
                "--endpoint",
                &endpoint,
                "--token",
                ADMIN_SECRET,
                "--json",
            ])
        }
    })
    .await
    .expect("join");
    assert!(imported.status.success(), "{}", text(&imported.stderr));
    let summary: serde_json::Value =
        serde_json::from_slice(&imported.stdout).expect("one JSON document");
    assert_eq!(summary["revision"], 1);

    let shown = tokio::task::spawn_blocking({
        let endpoint = endpoint.clone();
        move || {
            aiwan(&[
                "topology",
                "show",
                "--json",
                "--endpoint",
                &endpoint,
                "--token",
                ADMIN_SECRET,
            ])
        }
    })
    .await
    .expect("join");
    assert!(shown.status.success(), "{}", text(&shown.stderr));
    let shown: serde_json::Value =
        serde_json::from_slice(&shown.stdout).expect("one JSON document");
    let expected = aiwan_planner::formats::clab::load_clab(Path::new(&lab)).expect("lab parses");
    let links = shown["links"].as_array().expect("links");
    assert_eq!(links.len(), expected.links.len());
    assert_eq!(
        shown["nodes"].as_array().expect("nodes").len(),
        expected.nodes.len()
    );
    for link in &expected.links {
        let name = format!("links/{}:{}", link.src, link.src_interface);
        let found = links
            .iter()
            .find(|l| l["name"] == name.as_str())
            .expect("link shown");
        assert_eq!(
            found["capacity_bps"].as_u64(),
            Some(link.capacity_bps),
            "{name}"
        );
        assert_eq!(
            found["latency_us"].as_u64(),
            Some(link.latency_us),
            "{name}"
        );
    }

    let token = tokio::task::spawn_blocking({
        let endpoint = endpoint.clone();
        move || {
            aiwan(&[
                "token",
                "create",
                "--role",
                "viewer",
                "--endpoint",
                &endpoint,
                "--token",
                ADMIN_SECRET,
                "--json",
            ])
        }
    })
    .await
    .expect("join");
    assert!(token.status.success(), "{}", text(&token.stderr));
    let token: serde_json::Value = serde_json::from_slice(&token.stdout).expect("JSON");
    let secret = token["secret"].as_str().expect("secret").to_string();
    let as_viewer = tokio::task::spawn_blocking(move || {
        aiwan(&[
            "topology",
            "show",
            "--endpoint",
            &endpoint,
            "--token",
            &secret,
        ])
    })
    .await
    .expect("join");
    assert!(as_viewer.status.success(), "{}", text(&as_viewer.stderr));
    assert!(text(&as_viewer.stdout).contains("revision 1"));
    controller.shutdown().await.expect("shutdown");
}

/// `aiwan topology import` takes the planner's formats too: a GraphML file
/// needs `--capacity` (and says so), then becomes WAN routers with eth1,
/// eth2, ... interfaces.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topology_import_takes_the_planners_formats() {
    let db = TestDb::new(
        Backend::Sqlite,
        "topology_import_takes_the_planners_formats",
    )
    .await
    .expect("sqlite");
    let controller = start(&db).await;
    let endpoint = format!("http://{}", controller.grpc_addr);
    let dir = tempfile::tempdir().expect("tempdir");
    let graphml = dir.path().join("zoo.graphml");
    std::fs::write(
        &graphml,
        r#"<?xml version="1.0"?>
<graphml><graph edgedefault="undirected">
  <node id="New York"/><node id="Chicago"/><node id="Denver"/>
  <edge source="New York" target="Chicago"/><edge source="Chicago" target="Denver"/>
</graph></graphml>"#,
    )
    .expect("write");
    let import = |extra: &'static [&'static str]| {
        let (endpoint, file) = (endpoint.clone(), graphml.display().to_string());
        tokio::task::spawn_blocking(move || {
            let mut args = vec![
                "topology",
                "import",
                file.as_str(),
                "--endpoint",
                endpoint.as_str(),
                "--token",
                ADMIN_SECRET,
                "--json",
            ];
            args.extend_from_slice(extra);
            aiwan(&args)
        })
    };
    let refused = import(&[]).await.expect("join");
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        text(&refused.stderr).contains("zoo.graphml")
            && text(&refused.stderr).contains("--capacity"),
        "{}",
        text(&refused.stderr)
    );
    let imported = import(&["--capacity", "10G"]).await.expect("join");
    assert!(imported.status.success(), "{}", text(&imported.stderr));
    let summary: serde_json::Value =
        serde_json::from_slice(&imported.stdout).expect("one JSON document");
    assert_eq!(
        (summary["nodes"].as_u64(), summary["links"].as_u64()),
        (Some(3), Some(4))
    );
    controller.shutdown().await.expect("shutdown");
}

/// `aiwan plan` on the planner's diamond fixture (its topology, traffic
/// and tunnels), with `extra` arguments.
fn plan_on_the_diamond(extra: &[&str]) -> Output {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../planner/tests/fixtures");
    let file = |name: &str| fixtures.join(name).to_str().expect("utf-8").to_string();
    let (topology, traffic, tunnels) = (
        file("diamond.json"),
        file("diamond.hist"),
        file("diamond.tunnels"),
    );
    let mut args = vec![
        "plan",
        "--topology",
        &topology,
        "--traffic",
        &traffic,
        "--tunnels",
        &tunnels,
    ];
    args.extend_from_slice(extra);
    aiwan(&args)
}

/// `aiwan plan --solver highs`: HiGHS and the fast solver side by side in
/// a build with HiGHS; without, a refusal that says how to build it.
#[test]
fn plan_with_highs_or_how_to_get_it() {
    let output = plan_on_the_diamond(&["--snapshot", "1", "--solver", "highs", "--json"]);
    if cfg!(feature = "highs") {
        assert!(output.status.success(), "{}", text(&output.stderr));
        let report: serde_json::Value =
            serde_json::from_slice(&output.stdout).expect("one JSON document");
        let solvers = report["solvers"].as_array().expect("solvers");
        let names: Vec<&str> = solvers.iter().filter_map(|s| s["name"].as_str()).collect();
        assert_eq!(names, ["highs", "fast"]);
        let highs = solvers[0]["mlu"].as_f64().expect("mlu");
        assert!((highs - 1.0).abs() < 1e-6, "{report}");
    } else {
        assert!(!output.status.success());
        let stderr = text(&output.stderr);
        assert!(stderr.contains("--features highs"), "{stderr}");
    }
}

/// `aiwan plan` on the project's own fixture: both solvers reach the hand
/// optimum, and the written allocation recomputes to the reported MLU.
#[test]
fn plan_on_the_diamond_fixture() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("allocation.json");
    let output = plan_on_the_diamond(&[
        "--snapshot",
        "1",
        "--solver",
        "both",
        "--lower-bound",
        "--what-if",
        "--robust",
        "--allocation-out",
        out.to_str().expect("utf-8"),
        "--json",
    ]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let report: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("one JSON document");
    assert_eq!(report["nodes"], 4);
    assert_eq!(report["links"], 8);
    assert_eq!(report["demands"], 1);
    let solvers = report["solvers"].as_array().expect("solvers");
    let names: Vec<&str> = solvers.iter().filter_map(|s| s["name"].as_str()).collect();
    assert_eq!(names, ["lp", "fast", "robust-lp"]);
    let lp = &solvers[0];
    assert!(
        (lp["mlu"].as_f64().expect("mlu") - 1.0).abs() < 1e-6,
        "{lp}"
    );
    assert!(lp["solve_ms"].as_f64().is_some());
    // The fast solver proves its own quality: its bound is at most the
    // optimum (1.0) and close to it, and it stops within its default gap
    // tolerance (0.5%) of that bound.
    let fast = &solvers[1];
    let bound = fast["path_lower_bound_mlu"].as_f64().expect("bound");
    assert!((0.99..=1.0 + 1e-9).contains(&bound), "{fast}");
    let mlu = fast["mlu"].as_f64().expect("mlu");
    assert!(mlu >= 1.0 - 1e-9 && mlu <= bound * 1.005 + 1e-12, "{fast}");
    assert!(fast["solve_ms"].as_f64().is_some());
    // With two paths a lost side always sends everything to the other, so
    // the failure-robust plan reserves each side for the whole demand (the
    // thin side exactly, the wide side 1 to 3 times, all optimal): worst
    // failure and guarantee 4.0, and without a failure between the even
    // split (2.0 on the thin side) and the plain optimum (1.0).
    let robust = &solvers[2];
    let mlu = robust["mlu"].as_f64().expect("mlu");
    assert!((1.0 - 1e-6..=2.0 + 1e-6).contains(&mlu), "{robust}");
    assert!(
        (robust["failure_guarantee_mlu"].as_f64().expect("guarantee") - 4.0).abs() < 1e-4,
        "{robust}"
    );
    assert!((report["lower_bound_mlu"].as_f64().expect("bound") - 1.0).abs() < 1e-6);
    // Losing either side puts all 40 on the other: 4.0 on the thin side.
    for solver in solvers {
        let worst = solver["worst_failure_mlu"].as_f64().expect("what-if");
        assert!((worst - 4.0).abs() < 1e-3, "{solver}");
    }

    // Recompute each solver's MLU from the allocation file alone.
    let capacity = |a: u64, b: u64| -> f64 {
        if a.min(b) == 0 && a.max(b) == 1 || a.min(b) == 1 && a.max(b) == 3 {
            10.0
        } else {
            30.0
        }
    };
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).expect("allocation written"))
            .expect("JSON");
    for solver in solvers {
        let name = solver["name"].as_str().expect("name");
        let mut loads = std::collections::HashMap::new();
        for demand in written["solvers"][name].as_array().expect("entries") {
            let rate = demand["demand"].as_f64().expect("demand");
            for path in demand["paths"].as_array().expect("paths") {
                let nodes: Vec<u64> = path["nodes"]
                    .as_array()
                    .expect("nodes")
                    .iter()
                    .map(|n| n.as_u64().expect("id"))
                    .collect();
                let fraction = path["fraction"].as_f64().expect("fraction");
                for hop in nodes.windows(2) {
                    *loads.entry((hop[0], hop[1])).or_insert(0.0) += rate * fraction;
                }
            }
        }
        let mlu = loads
            .iter()
            .map(|(&(a, b), load)| load / capacity(a, b))
            .fold(0.0, f64::max);
        assert!(
            (mlu - solver["mlu"].as_f64().expect("mlu")).abs() < 1e-9,
            "{name}: {mlu}"
        );
    }

    // Bad input is named.
    let output = aiwan(&[
        "plan",
        "--topology",
        "/nonexistent.json",
        "--traffic",
        "/x.hist",
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output.stderr).contains("/nonexistent.json"),
        "{}",
        text(&output.stderr)
    );
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../planner/tests/fixtures");
    let output = aiwan(&[
        "plan",
        "--topology",
        fixtures.join("diamond.json").to_str().expect("utf-8"),
        "--traffic",
        fixtures.join("diamond.hist").to_str().expect("utf-8"),
        "--snapshot",
        "7",
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output.stderr).contains("--snapshot 7"),
        "{}",
        text(&output.stderr)
    );
}

/// Gravity and AI matrices are reproducible by seed and feed `aiwan plan`.
#[test]
fn gen_traffic_feeds_plan() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../planner/tests/fixtures");
    let topology = fixtures.join("diamond.json");
    let topology = topology.to_str().expect("utf-8");
    let generate = |seed: &str| {
        let output = aiwan(&[
            "gen-traffic",
            "--topology",
            topology,
            "--seed",
            seed,
            "--snapshots",
            "3",
        ]);
        assert!(output.status.success(), "{}", text(&output.stderr));
        text(&output.stdout)
    };
    let first = generate("5");
    assert_eq!(first, generate("5"));
    assert_ne!(first, generate("6"));
    assert_eq!(first.lines().count(), 3);
    assert!(first.lines().all(|l| l.split_whitespace().count() == 16));
    let dir = tempfile::tempdir().expect("tempdir");
    let traffic = dir.path().join("gravity.hist");
    std::fs::write(&traffic, &first).expect("write");
    let output = aiwan(&[
        "plan",
        "--topology",
        topology,
        "--traffic",
        traffic.to_str().expect("utf-8"),
        "--snapshot",
        "2",
        "--paths",
        "2",
        "--json",
    ]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(report["demands"], 12);
    // The AI model: as many matrices, different from the gravity ones.
    let output = aiwan(&[
        "gen-traffic",
        "--topology",
        topology,
        "--model",
        "ai",
        "--seed",
        "5",
        "--snapshots",
        "3",
    ]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let ai = text(&output.stdout);
    assert_eq!(ai.lines().count(), 3);
    assert_ne!(ai, first);
    let output = aiwan(&["gen-traffic", "--topology", topology, "--load", "0"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output.stderr).contains("--load"));
}

/// `aiwan bench planner --topologies TOPOLOGIES --json` on the shared
/// data, its one JSON document; `None` (the skip printed, `test` named)
/// where the data is absent, a failure then under `AIWAN_REQUIRE_LAB=1`.
fn bench_planner(test: &str, topologies: &str) -> Option<serde_json::Value> {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data");
    if !data.is_dir() {
        if support::lab_required() {
            panic!("AIWAN_REQUIRE_LAB=1 but {} is missing", data.display());
        }
        eprintln!("SKIPPED {test}: {} not found", data.display());
        return None;
    }
    let output = aiwan(&[
        "bench",
        "planner",
        "--data",
        data.to_str().expect("utf-8"),
        "--topologies",
        topologies,
        "--json",
    ]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    Some(serde_json::from_slice(&output.stdout).expect("one JSON document"))
}

/// `aiwan bench planner` on GEANT prints one JSON document with both
/// solvers' figures (a check of the output, not of speed).
#[test]
fn bench_planner_reports_both_solvers() {
    let Some(report) = bench_planner("bench_planner_reports_both_solvers", "GEANT") else {
        return;
    };
    let result = &report["results"][0];
    assert_eq!(result["topology"], "GEANT");
    assert_eq!(result["lp_status"], "solved");
    let ratio = result["mlu_ratio"].as_f64().expect("ratio");
    assert!((1.0 - 1e-6..=1.02).contains(&ratio), "{result}");
    // The fast solver's certified bound is below the LP optimum and its
    // gap bounds the ratio from above.
    let lp = result["lp_mlu"].as_f64().expect("lp");
    let bound = result["fast_lower_bound"].as_f64().expect("bound");
    assert!(bound <= lp * (1.0 + 1e-7), "{result}");
    let gap = result["fast_gap"].as_f64().expect("gap");
    assert!(gap >= ratio * (1.0 - 1e-7), "{result}");
}

/// `aiwan bench planner --topologies SNDlib`: on every SNDlib network
/// with its own demands, the fast solver's plan is within 1% of the LP's
/// (the issue's quality target, checked on the LP's own optimum).
#[test]
fn bench_planner_sndlib_is_within_one_percent_of_the_lp() {
    let Some(report) = bench_planner(
        "bench_planner_sndlib_is_within_one_percent_of_the_lp",
        "SNDlib",
    ) else {
        return;
    };
    let result = &report["results"][0];
    assert_eq!(result["topology"], "SNDlib");
    let networks = result["networks"].as_array().expect("networks");
    assert_eq!(networks.len(), 25, "{result}");
    for network in networks {
        let ratio = network["mlu_ratio"].as_f64().expect("ratio");
        assert!((1.0 - 1e-6..=1.01).contains(&ratio), "{network}");
        let gap = network["fast_gap"].as_f64().expect("gap");
        assert!(gap >= ratio * (1.0 - 1e-7), "{network}");
    }
    assert_eq!(result["networks_within_1pct"], 25, "{result}");
}

/// `aiwan eval` scores every method on a generated series.
#[test]
fn eval_scores_the_methods() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../planner/tests/fixtures");
    let topology = fixtures.join("diamond.json");
    let topology = topology.to_str().expect("utf-8");
    let output = aiwan(&[
        "gen-traffic",
        "--topology",
        topology,
        "--seed",
        "9",
        "--snapshots",
        "10",
    ]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let dir = tempfile::tempdir().expect("tempdir");
    let traffic = dir.path().join("series.hist");
    std::fs::write(&traffic, &output.stdout).expect("write");
    let traffic = traffic.to_str().expect("utf-8");
    let output = aiwan(&[
        "eval",
        "--topology",
        topology,
        "--traffic",
        traffic,
        "--paths",
        "2",
        "--train",
        "4",
        "--json",
    ]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let report: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("one JSON document");
    let methods = report["methods"].as_array().expect("methods");
    let names: Vec<&str> = methods
        .iter()
        .map(|m| m["name"].as_str().expect("name"))
        .collect();
    assert!(
        names.contains(&"last-lp") && names.contains(&"aiwan"),
        "{names:?}"
    );
    for method in methods {
        assert_eq!(method["snapshots"], 6);
        let mean = method["mean_norm_mlu"].as_f64().expect("mean");
        let p90 = method["p90_norm_mlu"].as_f64().expect("p90");
        assert!(mean >= 1.0 - 1e-6 && p90 >= mean - 1e-9, "{method}");
        assert!(method["nmae"].as_f64().expect("nmae") >= 0.0);
    }
    let output = aiwan(&[
        "eval",
        "--topology",
        topology,
        "--traffic",
        traffic,
        "--train",
        "10",
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output.stderr).contains("nothing is left to score"),
        "{}",
        text(&output.stderr)
    );
}

/// Found on Kdl: `aiwan plan --solver both` exited with the reference
/// LP's time-out and printed nothing of the fast plan. Now the LP is
/// reported as timed out and the fast plan comes with its proven bound;
/// the LP alone still fails, saying what to do.
#[test]
fn plan_reports_an_lp_that_times_out_and_prints_the_fast_plan() {
    let args = |solver: &str| {
        plan_on_the_diamond(&["--solver", solver, "--lp-time-limit", "0.0000001", "--json"])
    };
    let output = args("both");
    assert!(output.status.success(), "{}", text(&output.stderr));
    let report: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("one JSON document");
    let solvers = report["solvers"].as_array().expect("solvers");
    let lp = solvers
        .iter()
        .find(|s| s["name"] == "lp")
        .expect("lp entry");
    assert_eq!(lp["status"], "timed_out", "{report}");
    assert!(
        lp["error"].as_str().is_some_and(|e| e.contains("MaxTime")),
        "{report}"
    );
    let fast = solvers
        .iter()
        .find(|s| s["name"] == "fast")
        .expect("fast entry");
    assert_eq!(fast["status"], "solved");
    let (mlu, bound) = (
        fast["mlu"].as_f64().expect("mlu"),
        fast["path_lower_bound_mlu"].as_f64().expect("bound"),
    );
    assert!(
        bound > 0.0 && bound <= mlu && mlu <= bound * 1.01,
        "{report}"
    );

    let alone = args("lp");
    assert!(!alone.status.success());
    let stderr = text(&alone.stderr);
    assert!(
        stderr.contains("MaxTime") && stderr.contains("--solver both"),
        "{stderr}"
    );
}
