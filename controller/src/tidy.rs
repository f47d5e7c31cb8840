//! Architecture invariants checked on the source, in the manner of
//! rust-analyzer's tidy tests.

use std::path::{Path, PathBuf};

/// The only modules that may use `aiwan-lab`: the lab's own commands, the
/// demo's lab, and the simulated dataplane (which numbers its simulated
/// routers as the lab would). Planning, the southbound and topology
/// import work on any network, so they find next hops from the routers
/// (`southbound::discovery`), never from the lab's addressing plan.
const MAY_USE_THE_LAB: [&str; 4] = [
    "lab_cli.rs",
    "lab_run.rs",
    "demo/lab.rs",
    "southbound/simulated.rs",
];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src").flatten() {
        let path = entry.path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn production_code_does_not_use_the_lab() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&root, &mut files);
    let mut offenders = Vec::new();
    for file in files {
        let relative = file
            .strip_prefix(&root)
            .expect("under src")
            .to_string_lossy()
            .replace('\\', "/");
        if MAY_USE_THE_LAB.contains(&relative.as_str()) || relative == "tidy.rs" {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("read source");
        // Unit tests may build their fixtures with the lab.
        let production = text.split("#[cfg(test)]").next().unwrap_or_default();
        if production.contains("aiwan_lab") {
            offenders.push(relative);
        }
    }
    assert!(
        offenders.is_empty(),
        "these modules use aiwan-lab outside tests: {offenders:?}"
    );
}
