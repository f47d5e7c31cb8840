//! Traffic scenarios (`lab/scenarios/*.toml`): a topology, what runs on it
//! (timed iperf3 flows, a ring collective), and what the run measures. The
//! runner is `aiwan lab run` (in the controller crate, which owns the
//! controller it starts); this module only reads and checks the file, so
//! that every mistake is named before anything is deployed.
//!
//! ```toml
//! name = "fabric-allreduce"
//! topology = "../fabric.clab.yml"      # relative to this file
//! shape_scale = 0.001                  # 100G links become 100M
//! port_sets = 5                        # runs per side, each other ports
//!
//! [collective]                         # a ring all-reduce among hosts
//! ring = ["gpu1", "gpu3", "gpu5", "gpu7", "gpu2", "gpu8", "gpu6", "gpu4"]
//! protocol = "tcp"
//! first_port = 5201                    # hop i to port first_port + i
//! seconds = 8
//! declare = true                       # aiwan's side declares it as a job
//!
//! [[flow]]                             # any number of plain flows
//! from = "gpu1"
//! to = "gpu4"
//! protocol = "udp"
//! rate = "20M"
//! port = 6001
//! dscp = 26
//! start = 0                            # seconds into the run
//! seconds = 8
//!
//! [targets]                            # aiwan over baseline, asserted
//! slowest_ratio = 1.4
//! total_ratio = 1.0
//! ```

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::clab::parse_rate;

/// Largest scenario file read.
pub const MAX_SCENARIO_BYTES: u64 = 1 << 20;
/// Most flows one run starts (plain flows plus the collective's hops).
pub const MAX_FLOWS: usize = 256;
/// Most port sets (runs per side).
pub const MAX_PORT_SETS: u32 = 50;
/// Longest a flow may run, seconds.
pub const MAX_FLOW_SECONDS: u32 = 600;

/// Why a scenario cannot be used; each names the file and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("{file}: {reason}")]
    File { file: String, reason: String },
    #[error("{file}: {field}: {reason}")]
    Field {
        file: String,
        field: String,
        reason: String,
    },
}

/// A transport protocol iperf3 speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
        }
    }
}

/// A ring all-reduce among hosts: hop `i` from `ring[i]` to `ring[i + 1]`
/// (the last to the first), all hops at once.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Collective {
    pub ring: Vec<String>,
    pub protocol: Protocol,
    pub first_port: u16,
    pub seconds: u32,
    /// Each hop's rate, as in `aiwan.capacity` (`50M`): UDP's sending
    /// rate (required), TCP's ceiling (unset: line rate).
    #[serde(default)]
    pub rate: Option<String>,
    /// On aiwan's side, declare the collective to the controller as a job
    /// (its flows are then placed); otherwise aiwan sees it only in
    /// telemetry.
    #[serde(default)]
    pub declare: bool,
}

/// One timed iperf3 flow.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Flow {
    pub from: String,
    pub to: String,
    pub protocol: Protocol,
    pub port: u16,
    /// Seconds into the run.
    #[serde(default)]
    pub start: u32,
    pub seconds: u32,
    /// UDP: the sending rate (`20M`), required; TCP: at most this rate
    /// (an application that has no more to send), as fast as the path
    /// allows when unset.
    #[serde(default)]
    pub rate: Option<String>,
    /// DSCP value 0..63 set on the flow's packets.
    #[serde(default)]
    pub dscp: Option<u8>,
    /// Counted in the scenario's AI figures (`ai_mbps`).
    #[serde(default)]
    pub ai: bool,
}

/// Targets the run asserts: aiwan's figure over the baseline's, and how
/// fast aiwan's side moves traffic.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Targets {
    #[serde(default)]
    pub slowest_ratio: Option<f64>,
    #[serde(default)]
    pub total_ratio: Option<f64>,
    #[serde(default)]
    pub ai_ratio: Option<f64>,
    /// Congestion onset to new routes in the kernel, at most, ms.
    #[serde(default)]
    pub reroute_ms: Option<f64>,
}

/// When congestion starts and where to watch the routes change: the time
/// from `onset` (seconds into the run) to the first change of `node`'s
/// routes towards `towards`'s site (every prefix of its nodes; the node's
/// own prefixes when it has no site) is the reroute time.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reroute {
    pub node: String,
    pub towards: String,
    pub onset: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScenarioFile {
    name: String,
    topology: PathBuf,
    #[serde(default)]
    shape_scale: Option<f64>,
    #[serde(default = "one")]
    port_sets: u32,
    #[serde(default)]
    exporters: bool,
    #[serde(default)]
    reroute: Option<Reroute>,
    #[serde(default)]
    collective: Option<Collective>,
    #[serde(default)]
    flow: Vec<Flow>,
    #[serde(default)]
    targets: Targets,
}

fn one() -> u32 {
    1
}

/// A checked scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    pub name: String,
    /// The topology file, resolved against the scenario's folder.
    pub topology: PathBuf,
    /// Shape every link at its capacity times this (`None`: unshaped).
    pub shape_scale: Option<f64>,
    pub port_sets: u32,
    /// Flow exporters on the routers (`lab up --exporters`) and the
    /// controller's closed loop on their telemetry: observing only
    /// (`recommend`) on the baseline's side, in charge (`auto`) on aiwan's.
    pub exporters: bool,
    pub reroute: Option<Reroute>,
    pub collective: Option<Collective>,
    pub flows: Vec<Flow>,
    pub targets: Targets,
}

impl Scenario {
    /// How long one run lasts: until its last flow ends, seconds.
    pub fn seconds(&self) -> u32 {
        let collective = self.collective.as_ref().map_or(0, |c| c.seconds);
        self.flows
            .iter()
            .map(|f| f.start + f.seconds)
            .chain([collective])
            .max()
            .unwrap_or(0)
    }
}

/// Reads and checks a scenario. Node names are checked against the
/// topology by the runner, which loads it.
pub fn load_scenario(path: &Path) -> Result<Scenario, ScenarioError> {
    let file = path.display().to_string();
    let fail = |reason: String| ScenarioError::File {
        file: file.clone(),
        reason,
    };
    let size = std::fs::metadata(path)
        .map_err(|e| fail(format!("cannot read: {e}")))?
        .len();
    if size > MAX_SCENARIO_BYTES {
        return Err(fail(format!(
            "{size} bytes: more than the {MAX_SCENARIO_BYTES} a scenario may have"
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| fail(format!("cannot read: {e}")))?;
    let mut scenario = parse_scenario(&file, &text)?;
    let base = path.parent().unwrap_or(Path::new("."));
    scenario.topology = base.join(&scenario.topology);
    Ok(scenario)
}

/// Checks a scenario's text; `file` names it in errors.
pub fn parse_scenario(file: &str, text: &str) -> Result<Scenario, ScenarioError> {
    let parsed: ScenarioFile = toml::from_str(text).map_err(|e| ScenarioError::File {
        file: file.to_string(),
        reason: e.to_string(),
    })?;
    let field = |field: &str, reason: String| ScenarioError::Field {
        file: file.to_string(),
        field: field.to_string(),
        reason,
    };
    if parsed.name.is_empty()
        || !parsed
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(field("name", "must be letters, digits, '-' and '_'".into()));
    }
    if let Some(scale) = parsed.shape_scale
        && !(scale.is_finite() && scale > 0.0 && scale <= 1.0)
    {
        return Err(field("shape_scale", "must be above 0 and at most 1".into()));
    }
    if !(1..=MAX_PORT_SETS).contains(&parsed.port_sets) {
        return Err(field("port_sets", format!("must be 1 to {MAX_PORT_SETS}")));
    }
    let check_rate = |name: &str, protocol: Protocol, rate: &Option<String>| match (protocol, rate)
    {
        (Protocol::Udp, None) => Err(field(name, "UDP needs a rate (for example 50M)".into())),
        (_, Some(text)) if parse_rate(text).is_none_or(|r| r == 0) => Err(field(
            name,
            format!("{text:?} is not a rate (examples: 50M, 1G)"),
        )),
        _ => Ok(()),
    };
    let mut ports: BTreeSet<(String, u16)> = BTreeSet::new();
    let mut count = 0;
    if let Some(collective) = &parsed.collective {
        if collective.ring.len() < 2 {
            return Err(field("collective.ring", "needs at least 2 hosts".into()));
        }
        let unique: BTreeSet<&String> = collective.ring.iter().collect();
        if unique.len() != collective.ring.len() {
            return Err(field("collective.ring", "names a host twice".into()));
        }
        if collective.first_port == 0
            || usize::from(collective.first_port) + collective.ring.len() - 1
                > usize::from(u16::MAX)
        {
            return Err(field(
                "collective.first_port",
                "must be 1 or more, with room for one port per hop".into(),
            ));
        }
        if !(1..=MAX_FLOW_SECONDS).contains(&collective.seconds) {
            return Err(field(
                "collective.seconds",
                format!("must be 1 to {MAX_FLOW_SECONDS}"),
            ));
        }
        check_rate("collective.rate", collective.protocol, &collective.rate)?;
        for (i, _) in collective.ring.iter().enumerate() {
            let to = &collective.ring[(i + 1) % collective.ring.len()];
            ports.insert((to.clone(), collective.first_port + i as u16));
        }
        count += collective.ring.len();
    }
    for (i, flow) in parsed.flow.iter().enumerate() {
        let name = |what: &str| format!("flow[{i}].{what}");
        if flow.from == flow.to {
            return Err(field(&name("to"), "is the same host as from".into()));
        }
        if flow.port == 0 {
            return Err(field(&name("port"), "must be 1 to 65535".into()));
        }
        if !ports.insert((flow.to.clone(), flow.port)) {
            return Err(field(
                &name("port"),
                format!(
                    "{} already listens on port {} in this scenario",
                    flow.to, flow.port
                ),
            ));
        }
        if !(1..=MAX_FLOW_SECONDS).contains(&flow.seconds) || flow.start > MAX_FLOW_SECONDS {
            return Err(field(
                &name("seconds"),
                format!("start and seconds must be within {MAX_FLOW_SECONDS}"),
            ));
        }
        if flow.dscp.is_some_and(|d| d > 63) {
            return Err(field(&name("dscp"), "must be 0 to 63".into()));
        }
        check_rate(&name("rate"), flow.protocol, &flow.rate)?;
        count += 1;
    }
    if count == 0 {
        return Err(field("flow", "the scenario runs no traffic".into()));
    }
    if count > MAX_FLOWS {
        return Err(field("flow", format!("more than {MAX_FLOWS} flows")));
    }
    if let Some(reroute) = &parsed.reroute {
        if !parsed.exporters {
            return Err(field(
                "reroute",
                "needs exporters = true: only the closed loop reroutes by itself".into(),
            ));
        }
        if reroute.onset > MAX_FLOW_SECONDS {
            return Err(field(
                "reroute.onset",
                format!("must be within {MAX_FLOW_SECONDS} seconds"),
            ));
        }
    }
    if parsed.targets.reroute_ms.is_some() && parsed.reroute.is_none() {
        return Err(field(
            "targets.reroute_ms",
            "needs a [reroute] section saying where to watch".into(),
        ));
    }
    for (name, ratio) in [
        ("targets.slowest_ratio", parsed.targets.slowest_ratio),
        ("targets.total_ratio", parsed.targets.total_ratio),
        ("targets.ai_ratio", parsed.targets.ai_ratio),
        ("targets.reroute_ms", parsed.targets.reroute_ms),
    ] {
        if ratio.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
            return Err(field(name, "must be a positive number".into()));
        }
    }
    Ok(Scenario {
        name: parsed.name,
        topology: parsed.topology,
        shape_scale: parsed.shape_scale,
        port_sets: parsed.port_sets,
        exporters: parsed.exporters,
        reroute: parsed.reroute,
        collective: parsed.collective,
        flows: parsed.flow,
        targets: parsed.targets,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "ring"
topology = "../fabric.clab.yml"
shape_scale = 0.001
port_sets = 5

[collective]
ring = ["gpu1", "gpu3", "gpu2"]
protocol = "tcp"
first_port = 5201
seconds = 8
declare = true

[[flow]]
from = "gpu1"
to = "gpu4"
protocol = "udp"
rate = "20M"
port = 6001
dscp = 26
start = 2
seconds = 10
ai = true

[targets]
slowest_ratio = 1.4
"#;

    #[test]
    fn a_good_scenario_reads() {
        let scenario = parse_scenario("ring.toml", GOOD).expect("good");
        assert_eq!(scenario.port_sets, 5);
        assert_eq!(scenario.collective.as_ref().map(|c| c.ring.len()), Some(3));
        assert_eq!(scenario.flows[0].protocol, Protocol::Udp);
        assert_eq!(scenario.seconds(), 12);
        assert_eq!(scenario.targets.slowest_ratio, Some(1.4));
    }

    #[test]
    fn mistakes_are_named() {
        let cases = [
            (
                "port_sets = 5",
                "port_sets = 0",
                "port_sets: must be 1 to 50",
            ),
            ("shape_scale = 0.001", "shape_scale = 2.0", "shape_scale"),
            (
                r#"ring = ["gpu1", "gpu3", "gpu2"]"#,
                r#"ring = ["gpu1", "gpu1"]"#,
                "collective.ring: names a host twice",
            ),
            (
                "rate = \"20M\"",
                "rate = \"fast\"",
                "flow[0].rate: \"fast\" is not a rate",
            ),
            ("rate = \"20M\"\n", "\n", "flow[0].rate: UDP needs a rate"),
            ("dscp = 26", "dscp = 64", "flow[0].dscp: must be 0 to 63"),
            (
                "to = \"gpu4\"",
                "to = \"gpu1\"",
                "flow[0].to: is the same host",
            ),
            (
                "seconds = 8\n",
                "seconds = 8\nbogus = 1\n",
                "unknown field `bogus`",
            ),
            (
                "slowest_ratio = 1.4",
                "slowest_ratio = -1",
                "targets.slowest_ratio",
            ),
            (
                "slowest_ratio = 1.4",
                "reroute_ms = 3000",
                "targets.reroute_ms: needs a [reroute] section",
            ),
            (
                "port_sets = 5",
                "port_sets = 5\n[reroute]\nnode = \"gpu1\"\ntowards = \"gpu3\"\nonset = 2",
                "reroute: needs exporters = true",
            ),
        ];
        for (from, to, expected) in cases {
            assert!(GOOD.contains(from), "case {from:?} does not apply");
            let text = GOOD.replacen(from, to, 1);
            let error = parse_scenario("ring.toml", &text).expect_err(expected);
            let message = error.to_string();
            assert!(
                message.starts_with("ring.toml") && message.contains(expected),
                "{message:?} should contain {expected:?}"
            );
        }
        // The port clash above needs the flow to go to gpu3's port 5201:
        // gpu3 listens there for the ring's first hop.
        let clash = GOOD.replacen("to = \"gpu4\"", "to = \"gpu3\"", 1).replacen(
            "port = 6001",
            "port = 5201",
            1,
        );
        let error = parse_scenario("ring.toml", &clash).expect_err("port clash");
        assert!(
            error
                .to_string()
                .contains("gpu3 already listens on port 5201"),
            "{error}"
        );
    }

    #[test]
    fn the_shipped_scenarios_read() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).expect("lab/scenarios") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "toml") {
                let scenario = load_scenario(&path).unwrap_or_else(|e| panic!("{e}"));
                let topology = crate::clab::load_clab(&scenario.topology)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                let nodes: BTreeSet<&str> = topology.nodes.iter().map(|n| n.id.as_str()).collect();
                let named = scenario
                    .flows
                    .iter()
                    .flat_map(|f| [f.from.as_str(), f.to.as_str()])
                    .chain(
                        scenario
                            .collective
                            .iter()
                            .flat_map(|c| c.ring.iter().map(String::as_str)),
                    )
                    .chain(
                        scenario
                            .reroute
                            .iter()
                            .flat_map(|r| [r.node.as_str(), r.towards.as_str()]),
                    );
                for node in named {
                    assert!(nodes.contains(node), "{}: no node {node}", path.display());
                }
                seen += 1;
            }
        }
        assert!(seen >= 1, "no scenario in {}", dir.display());
    }
}
