//! aiwan's operator dashboard (ratatui): `aiwan tui`.
//!
//! Built as trippy is: an engine ([`engine`]) that alone talks to the
//! controller, through `aiwan-api` only, and keeps a [`snapshot::Snapshot`]
//! of what there is to show; a renderer ([`render`]) that draws the latest
//! snapshot every frame and never waits on the network; and the dashboard's
//! own state and keys ([`app`]). A panic restores the terminal.

pub mod app;
pub mod engine;
pub mod fixtures;
pub mod render;
pub mod snapshot;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use tokio::sync::{mpsc, watch};

pub use engine::{EngineError, Options};

use app::{App, Command, Key, Outcome};
use snapshot::Snapshot;

/// Why the dashboard stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum UiError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("terminal: {0}")]
    Terminal(#[from] std::io::Error),
    #[error("the dashboard's thread failed: {0}")]
    Thread(String),
}

/// How often the screen is redrawn without a key.
const FRAME: Duration = Duration::from_millis(200);

fn key_of(event: &event::KeyEvent) -> Option<Key> {
    if event.kind == KeyEventKind::Release {
        return None;
    }
    if event.modifiers.contains(KeyModifiers::CONTROL) && event.code == KeyCode::Char('c') {
        return Some(Key::CtrlC);
    }
    Some(match event.code {
        KeyCode::Char(c) => Key::Char(c),
        KeyCode::Enter => Key::Enter,
        KeyCode::Esc => Key::Esc,
        KeyCode::Tab => Key::Tab,
        KeyCode::BackTab => Key::BackTab,
        KeyCode::Up => Key::Up,
        KeyCode::Down => Key::Down,
        KeyCode::Left => Key::Left,
        KeyCode::Right => Key::Right,
        KeyCode::PageUp => Key::PageUp,
        KeyCode::PageDown => Key::PageDown,
        KeyCode::Home => Key::Home,
        KeyCode::End => Key::End,
        KeyCode::Backspace => Key::Backspace,
        _ => return None,
    })
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The terminal side: draw, read keys, hand commands to the engine.
fn terminal_loop(
    shared: Arc<Mutex<Snapshot>>,
    commands: mpsc::UnboundedSender<Command>,
    closing: Arc<std::sync::atomic::AtomicBool>,
) -> Result<(), UiError> {
    let mut terminal = ratatui::try_init()?;
    let mut app = App::default();
    let result = (|| -> Result<(), UiError> {
        let mut last_draw = Instant::now() - FRAME;
        let mut dirty = true;
        loop {
            if closing.load(std::sync::atomic::Ordering::Relaxed) {
                return Ok(());
            }
            if dirty || last_draw.elapsed() >= FRAME {
                let snapshot = shared.lock().unwrap_or_else(PoisonError::into_inner);
                terminal.draw(|frame| render::draw(frame, &snapshot, &app, now_ms()))?;
                drop(snapshot);
                last_draw = Instant::now();
                dirty = false;
            }
            if !event::poll(FRAME.saturating_sub(last_draw.elapsed()))? {
                continue;
            }
            match event::read()? {
                Event::Key(key) => {
                    let Some(key) = key_of(&key) else { continue };
                    let outcome = {
                        let snapshot = shared.lock().unwrap_or_else(PoisonError::into_inner);
                        app.handle(key, &snapshot)
                    };
                    match outcome {
                        Outcome::Quit => return Ok(()),
                        Outcome::Command(command) => {
                            // The engine is gone only when the UI is closing.
                            let _ = commands.send(command);
                        }
                        Outcome::Nothing => {}
                    }
                    dirty = true;
                }
                Event::Resize(..) => dirty = true,
                _ => {}
            }
        }
    })();
    ratatui::restore();
    result
}

/// Runs the dashboard against `options.endpoint` until the operator quits.
pub async fn run(options: Options) -> Result<(), UiError> {
    run_until(options, std::future::pending()).await
}

/// [`run`], also ending (the terminal restored) when `close` resolves:
/// for a caller that owns the dashboard's lifetime, as `aiwan demo` does.
pub async fn run_until(
    options: Options,
    close: impl std::future::Future<Output = ()>,
) -> Result<(), UiError> {
    // A bad endpoint or token is said before the terminal is taken.
    engine::prepare(&options)?;
    let shared = Arc::new(Mutex::new(Snapshot {
        endpoint: options.endpoint.clone(),
        ..Snapshot::default()
    }));
    let (commands, received) = mpsc::unbounded_channel();
    let (stop, stopped) = watch::channel(false);
    let engine = tokio::spawn(engine::run(options, Arc::clone(&shared), received, stopped));
    let ui = Arc::clone(&shared);
    let closing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = Arc::clone(&closing);
    let mut terminal = tokio::task::spawn_blocking(move || terminal_loop(ui, commands, flag));
    tokio::pin!(close);
    let joined = tokio::select! {
        joined = &mut terminal => joined,
        () = &mut close => {
            closing.store(true, std::sync::atomic::Ordering::Relaxed);
            terminal.await
        }
    };
    let result = joined.map_err(|e| UiError::Thread(e.to_string()))?;
    stop.send_replace(true);
    if let Ok(Err(error)) = engine.await {
        return Err(error.into());
    }
    result
}

/// Renders every view `frames` times at `width` x `height` from `snapshot`
/// into a test backend; the median milliseconds per frame of each view.
pub fn bench_frames(
    snapshot: &Snapshot,
    width: u16,
    height: u16,
    frames: usize,
) -> Vec<(&'static str, f64)> {
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;
    let mut results = Vec::new();
    for view in app::View::ALL {
        let mut app = App {
            view,
            detail: view == app::View::Links,
            ..App::default()
        };
        app.selected[1] = 3;
        let Ok(mut terminal) = Terminal::new(TestBackend::new(width, height));
        let mut times = Vec::with_capacity(frames);
        for _ in 0..frames.max(1) {
            let started = Instant::now();
            let _ = terminal.draw(|frame| render::draw(frame, snapshot, &app, fixtures::NOW_MS));
            times.push(started.elapsed().as_secs_f64() * 1e3);
        }
        times.sort_by(f64::total_cmp);
        results.push((view.title(), times[times.len() / 2]));
    }
    results
}
