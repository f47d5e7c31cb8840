//! The planner against the reference data in `../shared/data`: the
//! reference LP reproduces the published GEANT optima, and the fast solver
//! stays within 2% of the LP and never below it. Skips (with a reason) where
//! the data is absent, unless AIWAN_REQUIRE_LAB=1.

use std::path::{Path, PathBuf};

use aiwan_planner::allocation::Problem;
use aiwan_planner::fast::{FastOptions, solve_fast};
use aiwan_planner::formats;
use aiwan_planner::lp::{edge_lp_lower_bound, path_lp};
use aiwan_planner::paths::PathOptions;

fn data(test: &str) -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data");
    if dir.is_dir() {
        return Some(dir);
    }
    if std::env::var("AIWAN_REQUIRE_LAB").is_ok_and(|v| v == "1") {
        panic!(
            "{test}: AIWAN_REQUIRE_LAB=1 but {} is missing",
            dir.display()
        );
    }
    eprintln!(
        "SKIPPED {test}: {} not found (the shared data sets)",
        dir.display()
    );
    None
}

#[test]
fn lp_reproduces_geant_train_5_opt() {
    let Some(data) = data("lp_reproduces_geant_train_5_opt") else {
        return;
    };
    let geant = data.join("geant");
    let network = formats::load_network(&geant.join("GEANT.json"), None).unwrap();
    let tunnels_text = std::fs::read_to_string(geant.join("tunnels.txt")).unwrap();
    let tunnels = formats::tunnels::parse_tunnels(&tunnels_text, &network).unwrap();
    let paths: std::collections::HashMap<(usize, usize), Vec<Vec<usize>>> = tunnels
        .into_iter()
        .map(|t| ((t.src, t.dst), t.paths))
        .collect();
    let series = formats::load_traffic(&geant.join("train/5.hist"), &network, 1.0).unwrap();
    let optima =
        formats::series::parse_opt(&std::fs::read_to_string(geant.join("train/5.opt")).unwrap())
            .unwrap();
    assert_eq!(series.len(), optima.len());
    assert_eq!(series.len(), 16);
    for (line, (matrix, optimum)) in series.iter().zip(&optima).enumerate() {
        let problem = Problem::with_node_paths(network.clone(), matrix, |s, t| {
            paths.get(&(s, t)).cloned().unwrap_or_default()
        })
        .unwrap();
        let (allocation, _) = path_lp(&problem, None).unwrap();
        let lp = problem.evaluate(&allocation).unwrap().mlu;
        let relative = (lp - optimum).abs() / optimum;
        assert!(
            relative < 1e-6,
            "5.opt line {}: LP {lp} vs {optimum}",
            line + 1
        );

        let solution = solve_fast(&problem, &FastOptions::default());
        let fast = solution.mlu;
        assert_eq!(problem.evaluate(&solution.allocation).unwrap().mlu, fast);
        assert!(
            solution.lower_bound <= lp * (1.0 + 1e-7),
            "line {}: fast's bound {} above LP {lp}",
            line + 1,
            solution.lower_bound
        );
        assert!(
            fast >= lp * (1.0 - 1e-9),
            "line {}: fast {fast} below LP {lp}",
            line + 1
        );
        assert!(
            fast <= lp * 1.02,
            "line {}: fast {fast} vs LP {lp}",
            line + 1
        );
    }
    // Over all paths one can do at least as well as over the tunnels.
    let bound = edge_lp_lower_bound(&network, &series[0], None).unwrap();
    assert!(
        bound <= optima[0] * (1.0 + 1e-7),
        "{bound} vs {}",
        optima[0]
    );
}

#[test]
fn abilene_with_four_shortest_paths() {
    let Some(data) = data("abilene_with_four_shortest_paths") else {
        return;
    };
    let abilene = data.join("abilene");
    let network = formats::load_network(&abilene.join("topology.txt"), None).unwrap();
    assert_eq!((network.nodes.len(), network.edges.len()), (12, 30));
    // 100 bytes per 5 minutes, in bit/s.
    let series =
        formats::load_traffic(&abilene.join("tm_week1.txt"), &network, 100.0 * 8.0 / 300.0)
            .unwrap();
    assert_eq!(series.len(), 2016);
    for matrix in series.iter().step_by(400) {
        let problem =
            Problem::with_k_paths(network.clone(), matrix, &PathOptions::k_shortest(4)).unwrap();
        let (allocation, _) = path_lp(&problem, None).unwrap();
        let lp = problem.evaluate(&allocation).unwrap().mlu;
        let solution = solve_fast(&problem, &FastOptions::default());
        let fast = solution.mlu;
        let bound = edge_lp_lower_bound(&network, matrix, None).unwrap();
        assert!(
            solution.lower_bound <= lp * (1.0 + 1e-7),
            "fast's bound {} above the LP {lp}",
            solution.lower_bound
        );
        assert!(bound <= lp * (1.0 + 1e-7), "bound {bound} above LP {lp}");
        assert!(
            fast >= bound * (1.0 - 1e-9),
            "fast {fast} below the bound {bound}"
        );
        assert!(fast <= lp * 1.02, "fast {fast} vs LP {lp}");
    }
}

/// Every shared file a reader handles parses, with the known sizes; broken
/// copies give errors, never panics.
#[test]
fn every_shared_file_parses() {
    let Some(data) = data("every_shared_file_parses") else {
        return;
    };
    let geant = formats::load_network(&data.join("geant/GEANT.json"), None).unwrap();
    assert_eq!((geant.nodes.len(), geant.edges.len()), (22, 72));
    let tunnels = formats::tunnels::parse_tunnels(
        &std::fs::read_to_string(data.join("geant/tunnels.txt")).unwrap(),
        &geant,
    )
    .unwrap();
    assert_eq!(tunnels.len(), 22 * 21);
    assert!(tunnels.iter().all(|t| t.paths.len() == 3));
    for pod in [
        "facebook_pod_a/Facebook_pod_a.json",
        "facebook_pod_b/Facebook_pod_b.json",
    ] {
        let network = formats::load_network(&data.join(pod), None).unwrap();
        assert!(!network.edges.is_empty(), "{pod}");
    }
    let mut teal = Vec::new();
    for name in ["B4", "UsCarrier", "Kdl", "ASN2k"] {
        let network =
            formats::load_network(&data.join(format!("topologies/teal/{name}.json")), None)
                .unwrap();
        teal.push((name, network.nodes.len()));
    }
    assert_eq!(
        teal,
        [
            ("B4", 12),
            ("UsCarrier", 158),
            ("Kdl", 754),
            ("ASN2k", 1739)
        ]
    );
    let mut zoo = 0;
    for entry in std::fs::read_dir(data.join("topologies/zoo")).unwrap() {
        let path = entry.unwrap().path();
        let network = formats::load_network(&path, Some(10e9)).unwrap();
        assert!(network.nodes.len() > 10, "{}", path.display());
        zoo += 1;
    }
    assert_eq!(zoo, 11);
    let error = formats::load_network(&data.join("topologies/zoo/Kdl.graphml"), None).unwrap_err();
    assert!(error.to_string().contains("--capacity"), "{error}");
    let mut sndlib = 0;
    for entry in std::fs::read_dir(data.join("sndlib/topologies")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "xml") {
            let network = formats::load_network(&path, None).unwrap();
            assert!(!network.edges.is_empty(), "{}", path.display());
            sndlib += 1;
        }
    }
    assert_eq!(sndlib, 25);
    let sndlib_geant =
        formats::load_network(&data.join("sndlib/topologies/geant.xml"), None).unwrap();
    let series =
        formats::load_traffic(&data.join("geant/sndlib_15min"), &sndlib_geant, 1.0).unwrap();
    assert_eq!(series.len(), 324);
    assert!(series.iter().filter(|m| m.total() > 0.0).count() >= 320);

    // Broken copies: cut short, or a value corrupted.
    let text = std::fs::read_to_string(data.join("geant/GEANT.json")).unwrap();
    for cut in [1, text.len() / 3, text.len() - 2] {
        assert!(formats::nodelink::parse_nodelink(&text[..cut], None).is_err());
    }
    let text = std::fs::read_to_string(data.join("abilene/topology.txt")).unwrap();
    let error =
        formats::abilene::parse_link_table(&text.replacen("9920000", "99x0000", 1)).unwrap_err();
    assert!(error.to_string().starts_with("line 3: capacity"), "{error}");
    let hist = std::fs::read_to_string(data.join("geant/train/5.hist")).unwrap();
    let broken: String = hist
        .lines()
        .take(3)
        .map(|l| format!("{l}\n"))
        .collect::<String>()
        + "1 2 3\n";
    let error = formats::series::parse_series(&broken, 22, 1.0).unwrap_err();
    assert_eq!(
        error.to_string(),
        "line 4: 3 values, expected 484 for 22 nodes"
    );
    let xml = std::fs::read_to_string(data.join("sndlib/topologies/geant.xml")).unwrap();
    assert!(formats::sndlib::parse_network(&xml[..xml.len() / 2]).is_err());
}
