#![no_main]
//! The planner's file readers on arbitrary text: the first byte picks the
//! reader, the rest is the file. Each returns a value or an error naming
//! what is wrong, never a panic (tests/hostile_files.rs runs seeded
//! mutations of valid files through the same readers in every test run).

use aiwan_planner::formats::{abilene, graphml, nodelink, series, sndlib, tunnels};
use libfuzzer_sys::fuzz_target;

/// A small network the traffic readers need (tunnels, SNDlib demands).
const DIAMOND: &str = r#"{"directed": true, "nodes": [{"id": "A"}, {"id": "B"}, {"id": "C"}],
 "links": [{"source": "A", "target": "B", "capacity": 10.0},
           {"source": "B", "target": "C", "capacity": 10.0},
           {"source": "A", "target": "C", "capacity": 5.0}]}"#;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let network = nodelink::parse_nodelink(DIAMOND, None).expect("the literal reads");
    match which % 8 {
        0 => drop(abilene::parse_link_table(&text)),
        1 => drop(graphml::parse_graphml(&text, 1e9)),
        2 => drop(sndlib::parse_network(&text)),
        3 => drop(sndlib::parse_demands(&text, &network)),
        4 => drop(nodelink::parse_nodelink(&text, None)),
        5 => drop(series::parse_series(&text, 3, 1.0)),
        6 => drop(series::parse_opt(&text)),
        _ => drop(tunnels::parse_tunnels(&text, &network)),
    }
});
