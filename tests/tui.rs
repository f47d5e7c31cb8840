//! `aiwan tui` end to end: the real binary in tmux against a running
//! controller (`aiwan demo --headless`, which is the controller with
//! traffic), driven with `send-keys` and read with `capture-pane`: views,
//! a filter, a job created and cancelled, help, a controller restart
//! (disconnected, then the data again), quit.
//!
//! Needs tmux; skipped with a reason elsewhere, failed under
//! `AIWAN_REQUIRE_LAB=1`.

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Tmux {
    socket: String,
}

impl Tmux {
    fn run(&self, args: &[&str]) -> String {
        let output = Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("run tmux");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn keys(&self, keys: &[&str]) {
        for key in keys {
            self.run(&["send-keys", "-t", "tui", key]);
            std::thread::sleep(Duration::from_millis(150));
        }
    }

    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "tui"])
    }

    /// Waits until the screen shows every one of `texts`.
    fn wait_for(&self, texts: &[&str], what: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            let screen = self.screen();
            if texts.iter().all(|t| screen.contains(t)) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: {texts:?} never shown:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn alive(&self) -> bool {
        Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(["has-session", "-t", "tui"])
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        self.run(&["kill-server"]);
    }
}

struct Controller(Child);

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.0.wait();
    }
}

fn start_controller(dir: &Path, port: u16) -> Controller {
    let child = Command::new(env!("CARGO_BIN_EXE_aiwan"))
        .args([
            "demo",
            "--headless",
            "--mode",
            "recommend",
            "--duration",
            "600",
        ])
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start aiwan demo");
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "the controller did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Controller(child)
}

#[test]
fn the_tui_in_tmux_against_a_controller() {
    let test = "the_tui_in_tmux_against_a_controller";
    if let Err(e) = support::sh(&["tmux", "-V"]) {
        return support::skip(test, &format!("tmux is missing ({e})")).unwrap_or(());
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let port = support::free_port().port();
    let controller = start_controller(dir.path(), port);
    let token = std::fs::read_to_string(dir.path().join("demo-token")).expect("the demo's token");
    let tmux = Tmux {
        socket: format!("aiwan-test-{}", std::process::id()),
    };
    let command = format!(
        "{} tui --endpoint http://127.0.0.1:{port} --token {}",
        env!("CARGO_BIN_EXE_aiwan"),
        token.trim()
    );
    tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "tui",
        "-x",
        "200",
        "-y",
        "50",
        &command,
    ]);

    // The overview with the demo's links and the loop.
    tmux.wait_for(
        &[
            "1:Overview",
            "connected",
            "WAN links",
            "dc1-edge:eth5",
            "loop RECOMMEND",
        ],
        "overview",
    );

    // Links, then a filter.
    tmux.keys(&["2"]);
    tmux.wait_for(&["next (90% band)", "links 54 of 54"], "links view");
    tmux.keys(&["/", "w", "a", "n", "-", "e", "a", "s", "t", "Enter"]);
    tmux.wait_for(&["links 4 of 54"], "filtered links");
    tmux.keys(&["Escape"]);
    tmux.wait_for(&["links 54 of 54"], "filter cleared");

    // A job: created with the form, listed, cancelled.
    tmux.keys(&["4"]);
    tmux.wait_for(&["train-llm-east", "ckpt-llm"], "jobs view");
    // The selected job's paths in the current plan.
    tmux.wait_for(
        &["ckpt-llm paths in plans/", "dc2-edge → dc1-edge ai-bulk"],
        "the job's paths",
    );
    tmux.keys(&["n"]);
    tmux.wait_for(&["new job"], "job form");
    tmux.keys(&["t", "m", "u", "x", "-", "j", "o", "b", "Enter"]);
    tmux.wait_for(&["created jobs/tmux-job", "tmux-job"], "job created");
    // Jobs are listed by name: ckpt-llm, tmux-job, ...
    tmux.keys(&["g", "j", "c"]);
    tmux.wait_for(&["Cancel jobs/tmux-job?"], "confirmation");
    tmux.keys(&["y"]);
    tmux.wait_for(&["cancelled jobs/tmux-job"], "job cancelled");
    tmux.wait_for(&["cancelled"], "cancelled state");

    // A plan's routers: push status and what it changed.
    tmux.keys(&["5"]);
    tmux.wait_for(&["plans ("], "plans view");
    tmux.keys(&["Enter"]);
    tmux.wait_for(
        &["by router (Esc closes)", "dc1-edge"],
        "the plan's routers",
    );
    tmux.keys(&["Escape"]);

    // Help lists the keys.
    tmux.keys(&["?"]);
    tmux.wait_for(
        &["keys (? or Esc to close)", "roll back to the selected plan"],
        "help",
    );
    tmux.keys(&["Escape", "1"]);

    // The controller restarts: the TUI says so, then shows the data again.
    drop(controller);
    tmux.wait_for(&["DISCONNECTED", "controller unreachable"], "disconnected");
    let _controller = start_controller(dir.path(), port);
    tmux.wait_for(&["connected", "WAN links", "dc1-edge:eth5"], "reconnected");
    assert!(!tmux.screen().contains("DISCONNECTED"));

    tmux.keys(&["q"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while tmux.alive() {
        assert!(
            Instant::now() < deadline,
            "q did not quit:\n{}",
            tmux.screen()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The dashboard's own load on the controller while idle: at most one
/// request a second for the view on screen (streams carry the rest).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_dashboard_asks_at_most_once_a_second() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = support::free_port().port();
    let _controller = start_controller(dir.path(), port);
    let token = std::fs::read_to_string(dir.path().join("demo-token")).expect("token");
    let shared = std::sync::Arc::new(std::sync::Mutex::new(
        aiwan_ui::snapshot::Snapshot::default(),
    ));
    let (commands, received) = tokio::sync::mpsc::unbounded_channel();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let engine = tokio::spawn(aiwan_ui::engine::run(
        aiwan_ui::Options {
            endpoint: format!("http://127.0.0.1:{port}"),
            token: Some(token.trim().to_string()),
            ca_file: None,
        },
        std::sync::Arc::clone(&shared),
        received,
        stopped,
    ));
    let requests = || shared.lock().expect("snapshot").requests;
    let connected = || {
        matches!(
            shared.lock().expect("snapshot").connection,
            aiwan_ui::snapshot::ConnectionState::Connected
        )
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !connected() {
        assert!(Instant::now() < deadline, "the engine did not connect");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for view in aiwan_ui::app::View::ALL {
        commands
            .send(aiwan_ui::app::Command::Show(view))
            .expect("engine running");
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let before = requests();
        tokio::time::sleep(Duration::from_secs(6)).await;
        let per_second = (requests() - before) as f64 / 6.0;
        eprintln!("{view:?}: {per_second:.1} requests a second");
        assert!(
            per_second <= 1.2,
            "{view:?}: {per_second} requests a second"
        );
    }
    assert!(!shared.lock().expect("snapshot").links.is_empty());
    stop.send_replace(true);
    engine.await.expect("engine task").expect("engine");
}
