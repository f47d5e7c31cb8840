//! Events: the controller's event stream, newest first, filterable.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph};

use super::{fit, window_start};
use crate::app::{App, event_rows};
use crate::snapshot::Snapshot;

fn color(kind: &str) -> Color {
    match kind {
        "congestion-seen" | "plan-failed" | "agent-lost" => Color::Red,
        "congestion-predicted" | "proposal" => Color::Yellow,
        "replan" | "plan-applied" | "congestion-cleared" | "agent-back" => Color::Green,
        _ => Color::Gray,
    }
}

fn clock(ms: i64) -> String {
    let s = ms.div_euclid(1000);
    format!("{:02}:{:02}:{:02}", (s / 3600) % 24, (s / 60) % 60, s % 60)
}

pub fn draw(frame: &mut Frame, area: Rect, snapshot: &Snapshot, app: &App) {
    let rows = event_rows(snapshot, app);
    let height = area.height.saturating_sub(2) as usize;
    let selected = app.selected().min(rows.len().saturating_sub(1));
    let start = window_start(selected, rows.len(), height);
    let width = area.width.saturating_sub(2) as usize;
    let lines: Vec<Line> = rows
        .iter()
        .enumerate()
        .skip(start)
        .take(height)
        .map(|(i, event)| {
            let text = format!("{:<20} {:<22} {}", event.kind, event.subject, event.message);
            let mut style = Style::new().fg(color(&event.kind));
            if i == selected {
                style = style.add_modifier(Modifier::REVERSED);
            }
            Line::from(vec![
                Span::styled(
                    format!("{} ", clock(event.at_ms)),
                    Style::new().fg(Color::DarkGray),
                ),
                Span::styled(fit(&text, width.saturating_sub(9)), style),
            ])
        })
        .collect();
    frame.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(format!(
            " events {} of {} (UTC, newest first) ",
            rows.len(),
            snapshot.events.len()
        ))),
        area,
    );
}
