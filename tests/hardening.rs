//! The hostile-input suite: each finding of the hardening issue as a test
//! that failed before its fix. Inputs an outsider controls (names that
//! become paths, datagrams, API calls, files) must be refused with an error
//! naming them, and never delete, crash or grow without bound.

mod support;

use std::path::Path;
use std::process::{Command, Output};

use support::sh;

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

/// A scratch directory with a file in it, standing for `/etc`.
fn victim() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("precious"), "keep me\n").expect("write");
    dir
}

fn assert_intact(dir: &Path) {
    assert_eq!(
        std::fs::read_to_string(dir.join("precious"))
            .ok()
            .as_deref(),
        Some("keep me\n"),
        "{} was touched",
        dir.display()
    );
}

/// Found: `aiwan lab down --name /abs/dir` deleted that directory, then
/// said the name was invalid. Every lab command now checks the name before
/// any filesystem call; this holds without root, as the check comes first.
#[test]
fn lab_names_that_are_paths_touch_nothing() {
    let dir = victim();
    let path = dir.path().to_str().expect("utf-8").to_string();
    let relative = format!("../../..{path}");
    for name in [path.as_str(), relative.as_str(), "..", "a/../../b"] {
        for command in ["down", "status"] {
            let output = aiwan(&["lab", command, "--name", name]);
            assert_eq!(output.status.code(), Some(1), "lab {command} --name {name}");
            let stderr = text(&output.stderr);
            assert!(stderr.contains("lab name"), "lab {command}: {stderr}");
        }
        assert_intact(dir.path());
    }

    // The same name from a containerlab file, for down and for up --force
    // (which stops a running lab's agents first).
    let clab = dir.path().join("evil.clab.yml");
    std::fs::write(
        &clab,
        format!(
            "name: {path}\ntopology:\n  nodes:\n    r1: {{labels: {{aiwan.role: wan-router}}}}\n"
        ),
    )
    .expect("write clab");
    let clab = clab.to_str().expect("utf-8");
    for args in [
        &["lab", "down", clab][..],
        &["lab", "status", clab],
        &["lab", "up", "--force", "--agents", clab],
    ] {
        let output = aiwan(args);
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        assert!(text(&output.stderr).contains("lab name"), "{args:?}");
        assert_intact(dir.path());
    }
}

/// `lab down` removes what `lab up --agents` recorded making, and leaves a
/// file somebody else put in the agents' directory (and so the directory).
#[test]
fn lab_down_removes_only_what_lab_up_made() {
    let test = "lab_down_removes_only_what_lab_up_made";
    if !nix::unistd::geteuid().is_root() {
        return support::skip(test, "not root").unwrap_or(());
    }
    if let Err(e) = sh(&["ip", "netns", "list"]) {
        return support::skip(test, &format!("iproute2 with netns is missing ({e})")).unwrap_or(());
    }
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/southbound-diamond.clab.yml");
    let fixture = fixture.to_str().expect("utf-8");
    let name = "hardfs";
    let up = aiwan(&["lab", "up", "--agents", "--force", "--name", name, fixture]);
    assert!(up.status.success(), "lab up: {}", text(&up.stderr));
    let dir = aiwan_controller::lab_cli::agents_dir(name).expect("valid name");
    assert!(dir.join("r1.sock").exists());
    let foreign = dir.join("operator-notes.txt");
    std::fs::write(&foreign, "mine\n").expect("write");

    let down = aiwan(&["lab", "down", "--name", name]);
    assert!(down.status.success(), "lab down: {}", text(&down.stderr));
    for node in ["r1", "r2", "r3", "r4"] {
        for kind in ["sock", "pid", "log"] {
            assert!(
                !dir.join(format!("{node}.{kind}")).exists(),
                "{node}.{kind} left"
            );
        }
    }
    assert_eq!(
        std::fs::read_to_string(&foreign).ok().as_deref(),
        Some("mine\n")
    );
    std::fs::remove_file(&foreign).expect("remove the test's file");
    std::fs::remove_dir(&dir).expect("remove the then empty directory");
}
