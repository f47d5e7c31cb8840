//! Every containerlab file aiwan ships (the lab's topologies and the test
//! fixtures) validates against containerlab's own JSON schema, so that
//! `containerlab deploy` and editors accept them as they are. The schema is
//! read from `../shared/data/containerlab/` (skipped with a reason where
//! that folder is absent).

use std::path::{Path, PathBuf};

fn clab_files() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    for dir in ["lab", "lab/tests/fixtures", "tests/fixtures"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.to_string_lossy().ends_with(".clab.yml") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

#[test]
fn lab_files_validate_against_containerlabs_schema() {
    let schema_path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/data/containerlab/clab.schema.json");
    let Ok(text) = std::fs::read_to_string(&schema_path) else {
        eprintln!(
            "skipped: containerlab's schema is not at {} (../shared is absent)",
            schema_path.display()
        );
        return;
    };
    let schema: serde_json::Value = serde_json::from_str(&text).expect("schema is JSON");
    let validator = jsonschema::validator_for(&schema).expect("schema compiles");
    let files = clab_files();
    assert!(files.len() >= 3, "lab files found: {files:?}");
    let mut failures = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read lab file");
        let yaml: serde_yaml::Value = serde_yaml::from_str(&text).expect("YAML");
        let document: serde_json::Value = serde_json::to_value(yaml).expect("as JSON");
        for error in validator.iter_errors(&document) {
            failures.push(format!(
                "{}: {} at {}",
                file.display(),
                error,
                error.instance_path()
            ));
        }
        // And aiwan reads the same file.
        aiwan_lab::clab::parse_clab(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_brief_link_with_labels_is_what_the_schema_refuses() {
    // The check above can fail: containerlab's schema takes `vars`, not
    // `labels`, on a brief-form link.
    let schema_path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/data/containerlab/clab.schema.json");
    let Ok(text) = std::fs::read_to_string(&schema_path) else {
        eprintln!("skipped: no containerlab schema (../shared is absent)");
        return;
    };
    let schema: serde_json::Value = serde_json::from_str(&text).expect("schema is JSON");
    let validator = jsonschema::validator_for(&schema).expect("schema compiles");
    let lab = |key: &str| {
        format!(
            "name: x\ntopology:\n  nodes:\n    r1: {{kind: linux, labels: {{aiwan.role: wan-router}}}}\n    r2: {{kind: linux, labels: {{aiwan.role: wan-router}}}}\n  links:\n    - endpoints: [\"r1:eth1\", \"r2:eth1\"]\n      {key}: {{aiwan.capacity: 1G}}\n"
        )
    };
    let as_json = |text: &str| -> serde_json::Value {
        serde_json::to_value(serde_yaml::from_str::<serde_yaml::Value>(text).expect("YAML"))
            .expect("JSON")
    };
    assert!(!validator.is_valid(&as_json(&lab("labels"))));
    assert!(validator.is_valid(&as_json(&lab("vars"))));
    // aiwan reads both.
    for key in ["labels", "vars"] {
        let topology = aiwan_lab::clab::parse_clab(&lab(key)).expect("parsed");
        assert_eq!(topology.links[0].capacity_bps, 1_000_000_000);
    }
}
