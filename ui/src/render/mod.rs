//! Drawing one frame from a [`Snapshot`] and the [`App`] state: the tab
//! bar, the view, the status line, and any overlay (help, confirmation,
//! the job form). One module per view, as trippy does; none of them does
//! anything but draw.

mod events;
mod jobs;
mod links;
pub mod overlay;
mod overview;
mod plans;
mod traffic;

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use crate::app::{App, View};
use crate::snapshot::{ConnectionState, Snapshot, Tone};

/// Draws the whole screen. `now_ms` dates ages ("12 s ago").
pub fn draw(frame: &mut Frame, snapshot: &Snapshot, app: &App, now_ms: i64) {
    let [header, body, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    draw_header(frame, header, snapshot, app);
    match app.view {
        View::Overview => overview::draw(frame, body, snapshot, app, now_ms),
        View::Links => links::draw(frame, body, snapshot, app),
        View::Traffic => traffic::draw(frame, body, snapshot, app),
        View::Jobs => jobs::draw(frame, body, snapshot, app, now_ms),
        View::Plans => plans::draw(frame, body, snapshot, app, now_ms),
        View::Events => events::draw(frame, body, snapshot, app),
    }
    draw_footer(frame, footer, snapshot, app, now_ms);
    overlay::draw(frame, frame.area(), snapshot, app);
}

fn draw_header(frame: &mut Frame, area: Rect, snapshot: &Snapshot, app: &App) {
    let mut spans = vec![Span::styled(
        " aiwan ",
        Style::new()
            .fg(Color::Black)
            .bg(Color::Cyan)
            .add_modifier(Modifier::BOLD),
    )];
    for (i, view) in View::ALL.iter().enumerate() {
        let style = if *view == app.view {
            Style::new().add_modifier(Modifier::REVERSED | Modifier::BOLD)
        } else {
            Style::new().fg(Color::Gray)
        };
        spans.push(Span::raw(" "));
        spans.push(Span::styled(format!("{}:{}", i + 1, view.title()), style));
    }
    let state = match &snapshot.connection {
        ConnectionState::Connecting => Span::styled("  connecting", Style::new().fg(Color::Yellow)),
        ConnectionState::Connected => Span::styled("  connected", Style::new().fg(Color::Green)),
        ConnectionState::Disconnected { .. } => Span::styled(
            "  DISCONNECTED",
            Style::new()
                .fg(Color::White)
                .bg(Color::Red)
                .add_modifier(Modifier::BOLD),
        ),
    };
    spans.push(state);
    spans.push(Span::styled(
        format!("  {}", snapshot.endpoint),
        Style::new().fg(Color::DarkGray),
    ));
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn draw_footer(frame: &mut Frame, area: Rect, snapshot: &Snapshot, app: &App, now_ms: i64) {
    let line = if app.filtering {
        Line::from(vec![
            Span::styled(" filter: ", Style::new().fg(Color::Yellow)),
            Span::raw(app.filter().to_string()),
            Span::styled("_", Style::new().add_modifier(Modifier::SLOW_BLINK)),
            Span::styled(
                "  (Enter keeps, Esc clears)",
                Style::new().fg(Color::DarkGray),
            ),
        ])
    } else if let ConnectionState::Disconnected { error, since_ms } = &snapshot.connection {
        Line::from(Span::styled(
            format!(
                " controller unreachable for {}: {error}; reconnecting",
                age(now_ms - since_ms)
            ),
            Style::new().fg(Color::Red),
        ))
    } else if let Some((tone, text, at)) = &snapshot.message
        && now_ms - at < 15_000
    {
        let color = match tone {
            Tone::Info => Color::Green,
            Tone::Warning => Color::Yellow,
            Tone::Error => Color::Red,
        };
        Line::from(Span::styled(format!(" {text}"), Style::new().fg(color)))
    } else {
        let mut hints = String::from(" ?:help 1-6:views j/k:move /:filter");
        if !app.filter().is_empty() {
            hints.push_str(&format!(" [{}]", app.filter()));
        }
        hints.push_str(match app.view {
            View::Links => " s:sort Enter:chart",
            View::Traffic => " c:class",
            View::Jobs => " n:new c:cancel",
            View::Plans => " Enter:routers a:apply p:approve r:rollback",
            _ => "",
        });
        hints.push_str(" q:quit");
        Line::from(Span::styled(hints, Style::new().fg(Color::DarkGray)))
    };
    frame.render_widget(Paragraph::new(line), area);
}

/// A colour for a utilisation: green, yellow from 60%, red from 80%.
pub(crate) fn level(utilization: f64) -> Color {
    if utilization >= 0.8 {
        Color::Red
    } else if utilization >= 0.6 {
        Color::Yellow
    } else {
        Color::Green
    }
}

/// A text bar `width` wide for a utilisation (full at 100%).
pub(crate) fn bar(utilization: f64, width: usize) -> String {
    let filled = ((utilization.clamp(0.0, 1.0)) * width as f64).round() as usize;
    let mut text = "█".repeat(filled);
    text.push_str(&"·".repeat(width.saturating_sub(filled)));
    text
}

/// Bit/s for people: 12.3G, 450M, 8.0K.
pub(crate) fn rate(bps: f64) -> String {
    let (value, unit) = if bps >= 1e12 {
        (bps / 1e12, "T")
    } else if bps >= 1e9 {
        (bps / 1e9, "G")
    } else if bps >= 1e6 {
        (bps / 1e6, "M")
    } else if bps >= 1e3 {
        (bps / 1e3, "K")
    } else {
        (bps, "")
    };
    if value >= 100.0 || unit.is_empty() {
        format!("{value:.0}{unit}")
    } else {
        format!("{value:.1}{unit}")
    }
}

/// A duration for people: 4 s, 3 m, 2 h, 5 d.
pub(crate) fn age(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    if s < 120 {
        format!("{s} s")
    } else if s < 7200 {
        format!("{} m", s / 60)
    } else if s < 172_800 {
        format!("{} h", s / 3600)
    } else {
        format!("{} d", s / 86_400)
    }
}

/// Cuts `text` to `width` characters, with an ellipsis when cut.
pub(crate) fn fit(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// The rows of a list `height` rows tall that keep `selected` in view:
/// the first row's index.
pub(crate) fn window_start(selected: usize, rows: usize, height: usize) -> usize {
    if height == 0 || rows <= height {
        return 0;
    }
    selected.saturating_sub(height - 1).min(rows - height)
}
