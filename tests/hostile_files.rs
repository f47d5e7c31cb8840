//! Every file reader under hostile text: seeded mutations of valid files
//! (bytes flipped, huge and odd numbers put in, lines dropped, repeated or
//! cut) for a bounded number of rounds and time each. A reader must return
//! (a value or an error), never panic, whatever the text. The cargo-fuzz
//! targets in `collectors/fuzz` (`planner_formats`, `clab_file`) take the
//! same readers further; `.ci/run` runs them for a bounded time.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use aiwan_planner::formats::{abilene, graphml, nodelink, series, sndlib, tunnels};

/// Rounds per reader, and the most time they may take.
const ROUNDS: usize = 3000;
const BUDGET: Duration = Duration::from_secs(4);

/// Tokens a hostile file puts where numbers and names go.
const TOKENS: [&str; 16] = [
    "18446744073709551615",
    "9223372036854775808",
    "-1",
    "-0",
    "1e309",
    "NaN",
    "inf",
    "0x10",
    "1000000000000000000",
    "\u{0}",
    "\u{feff}",
    "é",
    "<",
    "\"",
    "{",
    "99999999999999999999999999999",
];

/// Bytes a flipped byte becomes.
const ALPHABET: &[u8] = b"0123456789-.eE \t\n:<>/\"{}[],x";

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(seed: &str, rng: &mut Rng) -> String {
    let mut text = seed.to_string();
    for _ in 0..=rng.below(4) {
        let len = text.len();
        match rng.below(6) {
            0 => {
                // A byte replaced by one of the file's own bytes' kind.
                let mut bytes = text.into_bytes();
                if !bytes.is_empty() {
                    let at = rng.below(len);
                    bytes[at] = ALPHABET[rng.below(ALPHABET.len())];
                }
                text = String::from_utf8_lossy(&bytes).into_owned();
            }
            1 => {
                let mut at = rng.below(len + 1);
                while !text.is_char_boundary(at) {
                    at -= 1;
                }
                text.insert_str(at, TOKENS[rng.below(TOKENS.len())]);
            }
            2 => {
                let mut at = rng.below(len + 1);
                while !text.is_char_boundary(at) {
                    at -= 1;
                }
                text.truncate(at);
            }
            3 | 4 => {
                let lines: Vec<&str> = text.lines().collect();
                if lines.is_empty() {
                    continue;
                }
                let pick = rng.below(lines.len());
                let mut out: Vec<&str> = Vec::with_capacity(lines.len() + 64);
                for (i, line) in lines.iter().enumerate() {
                    if i == pick && rng.below(2) == 0 {
                        continue; // dropped
                    }
                    out.push(line);
                    if i == pick {
                        for _ in 0..rng.below(64) {
                            out.push(line); // repeated
                        }
                    }
                }
                text = out.join("\n");
            }
            _ => {
                // A number of the text replaced by a hostile token.
                let digits: Vec<usize> = text
                    .char_indices()
                    .filter(|(_, c)| c.is_ascii_digit())
                    .map(|(i, _)| i)
                    .collect();
                if let Some(&at) = digits.get(rng.below(digits.len())) {
                    text.replace_range(at..at + 1, TOKENS[rng.below(TOKENS.len())]);
                }
            }
        }
    }
    text
}

/// Feeds `ROUNDS` mutations of each seed to `read` (true when the text
/// read); a panic fails the test naming the reader and the text. The seeds
/// must read and many mutations must not, or the mutations miss the
/// reader's checks.
fn hammer(name: &str, seeds: &[&str], read: impl Fn(&str) -> bool) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ name.len() as u64);
    let started = Instant::now();
    let mut refused = 0;
    let mut rounds = 0;
    for round in 0..ROUNDS {
        if started.elapsed() > BUDGET {
            eprintln!("{name}: {round} rounds in the time budget");
            break;
        }
        let seed = seeds[round % seeds.len()];
        let text = if round < seeds.len() {
            seed.to_string()
        } else {
            mutate(seed, &mut rng)
        };
        match catch_unwind(AssertUnwindSafe(|| read(&text))) {
            Ok(true) => {}
            Ok(false) if round < seeds.len() => panic!("{name}: the seed does not read"),
            Ok(false) => refused += 1,
            Err(_) => panic!("{name} panicked on round {round}, text:\n{text:?}"),
        }
        rounds += 1;
    }
    assert!(
        refused * 10 >= rounds,
        "{name}: only {refused} of {rounds} mutations refused"
    );
}

const ABILENE: &str = "Node_num: 3\tEdge_num: 4\nLink_index\tSource\tDestination\tOSPF\tCapacity(kbps)\n0\t0\t1\t1\t9920000\n1\t1\t0\t5\t2480000\n2\t1\t2\t1\t9920000\n3\t2\t1\t1\t9920000\n";
const GRAPHML: &str = r#"<?xml version="1.0"?><graphml xmlns="http://graphml.graphdrawing.org/xmlns">
<graph edgedefault="undirected"><node id="0"/><node id="1"/><node id="2"/>
<edge source="0" target="1"/><edge source="1" target="2"/><edge source="2" target="2"/></graph></graphml>"#;
const SNDLIB: &str = include_str!("../planner/tests/fixtures/small-sndlib.xml");
const NODELINK: &str = include_str!("../planner/tests/fixtures/diamond.json");
const SERIES: &str = include_str!("../planner/tests/fixtures/diamond.hist");
const TUNNELS: &str = include_str!("../planner/tests/fixtures/diamond.tunnels");
const CLAB: &str = include_str!("../lab/ai-wan.clab.yml");
const CONFIG: &str = include_str!("../aiwan.example.toml");

#[test]
fn network_readers_never_panic() {
    hammer("abilene link table", &[ABILENE], |t| {
        abilene::parse_link_table(t).is_ok()
    });
    hammer("graphml", &[GRAPHML], |t| {
        graphml::parse_graphml(t, 1e9).is_ok()
    });
    hammer("sndlib network", &[SNDLIB], |t| {
        sndlib::parse_network(t).is_ok()
    });
    hammer("node-link json", &[NODELINK], |t| {
        let with_default = nodelink::parse_nodelink(t, Some(1e9)).is_ok();
        nodelink::parse_nodelink(t, None).is_ok() && with_default
    });
}

#[test]
fn traffic_readers_never_panic() {
    let diamond = nodelink::parse_nodelink(NODELINK, None).expect("the fixture reads");
    let sndlib_network = sndlib::parse_network(SNDLIB).expect("the seed reads");
    hammer("series", &[SERIES], |t| {
        let _ = series::parse_opt(t);
        series::parse_series(t, 4, 1.0).is_ok()
    });
    hammer("sndlib demands", &[SNDLIB], |t| {
        sndlib::parse_demands(t, &sndlib_network).is_ok()
    });
    hammer("tunnels", &[TUNNELS], |t| {
        tunnels::parse_tunnels(t, &diamond).is_ok()
    });
}

#[test]
fn lab_and_config_readers_never_panic() {
    hammer("containerlab file", &[CLAB], |t| {
        aiwan_planner::formats::clab::parse_clab(t).is_ok()
    });
    hammer("controller config", &[CONFIG], |t| {
        aiwan_controller::config::ControllerConfig::from_toml(t)
            .is_ok_and(|config| config.check().is_ok())
    });
}
