//! Snapshot tests: every view drawn from a fixed snapshot at 80x24 and
//! 200x50, compared with the text in `tests/snapshots/`. After a change
//! to the screens, `AIWAN_UPDATE_SNAPSHOTS=1 cargo test -p aiwan-ui`
//! writes them again; review the diff like code.

use std::path::PathBuf;

use aiwan_ui::app::{App, Key, View};
use aiwan_ui::fixtures::{self, NOW_MS};
use aiwan_ui::render;
use aiwan_ui::snapshot::{ConnectionState, Snapshot};
use ratatui::Terminal;
use ratatui::backend::TestBackend;

fn screen(snapshot: &Snapshot, app: &App, width: u16, height: u16) -> String {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).expect("terminal");
    terminal
        .draw(|frame| render::draw(frame, snapshot, app, NOW_MS))
        .expect("draw");
    let buffer = terminal.backend().buffer();
    let mut text = String::new();
    for y in 0..height {
        let mut line = String::new();
        for x in 0..width {
            line.push_str(buffer[(x, y)].symbol());
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

fn check(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/snapshots")
        .join(format!("{name}.txt"));
    if std::env::var("AIWAN_UPDATE_SNAPSHOTS").is_ok_and(|v| v == "1") {
        std::fs::write(&path, actual).expect("write snapshot");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!(
            "no snapshot {}: run with AIWAN_UPDATE_SNAPSHOTS=1 to write it",
            path.display()
        )
    });
    assert!(
        expected == actual,
        "{name} differs from {}:\n--- expected\n{expected}\n--- actual\n{actual}\n(AIWAN_UPDATE_SNAPSHOTS=1 rewrites it)",
        path.display()
    );
}

fn app_for(view: View) -> App {
    App {
        view,
        ..App::default()
    }
}

#[test]
fn every_view_at_both_sizes() {
    let snapshot = fixtures::demo();
    for view in View::ALL {
        for (width, height) in [(80, 24), (200, 50)] {
            let name = format!("{}-{width}x{height}", view.title().to_lowercase());
            check(&name, &screen(&snapshot, &app_for(view), width, height));
        }
    }
}

#[test]
fn drill_downs_and_overlays() {
    let snapshot = fixtures::demo();
    let mut links = app_for(View::Links);
    links.detail = true;
    check("links-chart-200x50", &screen(&snapshot, &links, 200, 50));
    check("links-chart-80x24", &screen(&snapshot, &links, 80, 24));
    // Enter on the proposal: its routers against the current plan.
    let mut plans = app_for(View::Plans);
    assert_eq!(
        plans.handle(Key::Enter, &snapshot),
        aiwan_ui::app::Outcome::Command(aiwan_ui::app::Command::InspectPlan(3))
    );
    check("plans-diff-200x50", &screen(&snapshot, &plans, 200, 50));
    check("plans-diff-80x24", &screen(&snapshot, &plans, 80, 24));
    let mut help = app_for(View::Overview);
    help.handle(Key::Char('?'), &snapshot);
    check("help-80x24", &screen(&snapshot, &help, 80, 24));
    // A volume job selected: its schedule's answer below the table.
    let mut transfer = app_for(View::Jobs);
    transfer.handle(Key::Down, &snapshot);
    transfer.handle(Key::Down, &snapshot);
    let shown = screen(&snapshot, &transfer, 200, 50);
    assert!(shown.contains("progress: moved 700.00 GB"), "{shown}");
    check("jobs-progress-200x50", &shown);
    let mut form = app_for(View::Jobs);
    form.handle(Key::Char('n'), &snapshot);
    check("job-form-80x24", &screen(&snapshot, &form, 80, 24));
    let mut confirm = app_for(View::Plans);
    confirm.handle(Key::Char('p'), &snapshot);
    check("confirm-80x24", &screen(&snapshot, &confirm, 80, 24));
    let mut filtered = app_for(View::Links);
    for key in [
        Key::Char('/'),
        Key::Char('e'),
        Key::Char('a'),
        Key::Char('s'),
        Key::Char('t'),
    ] {
        filtered.handle(key, &snapshot);
    }
    check(
        "links-filtering-80x24",
        &screen(&snapshot, &filtered, 80, 24),
    );
}

#[test]
fn a_lost_controller_is_said_on_screen() {
    let mut snapshot = fixtures::demo();
    snapshot.connection = ConnectionState::Disconnected {
        error: "transport error: Connection refused (os error 111)".into(),
        since_ms: NOW_MS - 7000,
    };
    let screen = screen(&snapshot, &app_for(View::Overview), 80, 24);
    assert!(screen.contains("DISCONNECTED"), "{screen}");
    assert!(
        screen.contains("controller unreachable for 7 s"),
        "{screen}"
    );
    check("disconnected-80x24", &screen);
}
