//! What a router runs stays small: the agent's dependency tree (as `cargo
//! tree` resolves it for the agent alone, dev-dependencies included) holds
//! none of the controller's heavy crates, and the binary answers on its own.

use std::collections::BTreeSet;
use std::process::Command;

/// Crates the controller needs and a router must not carry.
const FORBIDDEN: [&str; 5] = ["polars", "sqlx", "clarabel", "linfa", "axum"];

/// Every package in `package`'s tree, by name (`cargo tree`, offline, on
/// the workspace's lock file).
fn tree(package: &str) -> BTreeSet<String> {
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml");
    let out = Command::new(env!("CARGO"))
        .args(["tree", "--offline", "--locked", "--prefix", "none"])
        .args(["--manifest-path", manifest, "-p", package])
        .output()
        .expect("run cargo tree");
    assert!(
        out.status.success(),
        "cargo tree -p {package}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| line.split(' ').next())
        .filter(|name| !name.is_empty())
        .map(str::to_string)
        .collect()
}

#[test]
fn the_agent_carries_none_of_the_controllers_heavy_crates() {
    let agent = tree("aiwan-agent");
    assert!(
        agent.contains("rtnetlink") && agent.contains("tonic"),
        "{agent:?}"
    );
    let heavy: Vec<&String> = agent
        .iter()
        .filter(|name| FORBIDDEN.iter().any(|f| name.starts_with(f)))
        .collect();
    assert!(heavy.is_empty(), "aiwan-agent depends on {heavy:?}");
    for workspace_crate in [
        "aiwan-controller",
        "aiwan-planner",
        "aiwan-collectors",
        "aiwan-lab",
    ] {
        assert!(
            !agent.contains(workspace_crate),
            "aiwan-agent depends on {workspace_crate}"
        );
    }
    // The check can fail: the controller's tree has them all.
    let controller = tree("aiwan-controller");
    for forbidden in FORBIDDEN {
        assert!(
            controller.iter().any(|name| name.starts_with(forbidden)),
            "{forbidden} not under aiwan-controller: the check is broken"
        );
    }
    eprintln!(
        "aiwan-agent: {} packages (aiwan-controller: {})",
        agent.len(),
        controller.len()
    );
}

#[test]
fn the_binary_answers_on_its_own() {
    let help = Command::new(env!("CARGO_BIN_EXE_aiwan-agent"))
        .arg("--help")
        .output()
        .expect("aiwan-agent --help");
    assert!(help.status.success());
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("--listen") && help.contains("--netns"),
        "{help}"
    );
    // Beyond loopback it refuses, naming the option (no authentication).
    let out = Command::new(env!("CARGO_BIN_EXE_aiwan-agent"))
        .args(["--listen", "0.0.0.0:50061"])
        .output()
        .expect("aiwan-agent");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--listen"), "{stderr}");
}
