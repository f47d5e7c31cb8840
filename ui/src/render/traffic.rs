//! Traffic: the measured node-to-node matrix as a heat table for one class
//! (or all), and the heaviest flows.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Paragraph, Row, Table};

use super::{fit, rate, window_start};
use crate::app::{App, TRAFFIC_CLASSES, matrix_rows};
use crate::snapshot::Snapshot;

pub fn draw(frame: &mut Frame, area: Rect, snapshot: &Snapshot, app: &App) {
    let [heat, lower] = if area.width >= 120 {
        Layout::horizontal([Constraint::Percentage(55), Constraint::Percentage(45)]).areas(area)
    } else {
        Layout::vertical([Constraint::Percentage(60), Constraint::Percentage(40)]).areas(area)
    };
    draw_heat(frame, heat, snapshot, app);
    draw_pairs(frame, lower, snapshot, app);
}

/// Node names without the `nodes/` prefix, shortened for a column.
fn short(node: &str, width: usize) -> String {
    fit(node.trim_start_matches("nodes/"), width)
}

fn heat_color(share: f64) -> Color {
    if share >= 0.5 {
        Color::Red
    } else if share >= 0.2 {
        Color::Yellow
    } else if share > 0.0 {
        Color::Green
    } else {
        Color::DarkGray
    }
}

fn draw_heat(frame: &mut Frame, area: Rect, snapshot: &Snapshot, app: &App) {
    let class = TRAFFIC_CLASSES[app.traffic_class % TRAFFIC_CLASSES.len()];
    let title = format!(" matrix, {class} (c: class) ");
    let Some(matrix) = &snapshot.matrix else {
        frame.render_widget(
            Paragraph::new("no measured traffic yet (the controller needs collectors)")
                .block(Block::bordered().title(title)),
            area,
        );
        return;
    };
    let mut nodes: Vec<&str> = matrix
        .cells
        .keys()
        .flat_map(|(s, d, _)| [s.as_str(), d.as_str()])
        .collect();
    nodes.sort();
    nodes.dedup();
    let rows = matrix_rows(snapshot, app);
    let max = rows.iter().map(|r| r.2).fold(0.0, f64::max);
    let get = |s: &str, d: &str| {
        rows.iter()
            .find(|r| r.0 == s && r.1 == d)
            .map_or(0.0, |r| r.2)
    };
    let width = area.width.saturating_sub(2) as usize;
    let column = 7usize;
    let label = 12usize.min(width / 3);
    let fits = ((width.saturating_sub(label)) / (column + 1)).max(1);
    let shown: Vec<&str> = nodes.iter().take(fits).copied().collect();
    let mut header = vec![Cell::from("from \\ to")];
    header.extend(shown.iter().map(|n| Cell::from(short(n, column))));
    let body: Vec<Row> = nodes
        .iter()
        .take(area.height.saturating_sub(3) as usize)
        .map(|src| {
            let mut cells = vec![Cell::from(short(src, label))];
            cells.extend(shown.iter().map(|dst| {
                let value = get(src, dst);
                let share = if max > 0.0 { value / max } else { 0.0 };
                let text = if value > 0.0 {
                    rate(value)
                } else {
                    "·".into()
                };
                Cell::from(Span::styled(text, Style::new().fg(heat_color(share))))
            }));
            Row::new(cells)
        })
        .collect();
    let mut widths = vec![Constraint::Length(label as u16)];
    widths.extend(shown.iter().map(|_| Constraint::Length(column as u16)));
    let table = Table::new(body, widths)
        .header(Row::new(header).style(Style::new().add_modifier(Modifier::BOLD)))
        .block(Block::bordered().title(title));
    frame.render_widget(table, area);
}

fn draw_pairs(frame: &mut Frame, area: Rect, snapshot: &Snapshot, app: &App) {
    let rows = matrix_rows(snapshot, app);
    let height = area.height.saturating_sub(3) as usize;
    let selected = app.selected().min(rows.len().saturating_sub(1));
    let start = window_start(selected, rows.len(), height);
    let mut lines: Vec<Row> = rows
        .iter()
        .enumerate()
        .skip(start)
        .take(height)
        .map(|(i, (s, d, r))| {
            let style = if i == selected {
                Style::new().add_modifier(Modifier::REVERSED)
            } else {
                Style::new()
            };
            Row::new(vec![short(s, 14), short(d, 14), rate(*r)]).style(style)
        })
        .collect();
    if lines.is_empty() {
        lines.push(Row::new(vec!["no traffic".to_string()]));
    }
    let table = Table::new(
        lines,
        [
            Constraint::Length(15),
            Constraint::Length(15),
            Constraint::Length(8),
        ],
    )
    .header(Row::new(vec!["from", "to", "bit/s"]).style(Style::new().add_modifier(Modifier::BOLD)))
    .block(Block::bordered().title(" node pairs, heaviest first "));
    if area.width >= 60 && !snapshot.flows.is_empty() {
        let [pairs, flows] =
            Layout::horizontal([Constraint::Length(42), Constraint::Min(20)]).areas(area);
        frame.render_widget(table, pairs);
        let flow_lines: Vec<Line> = snapshot
            .flows
            .iter()
            .take(flows.height.saturating_sub(2) as usize)
            .map(|f| {
                Line::from(fit(
                    &format!(
                        "{}:{} → {}:{} p{} dscp{} {}B",
                        f.src, f.src_port, f.dst, f.dst_port, f.protocol, f.dscp, f.bytes
                    ),
                    flows.width.saturating_sub(2) as usize,
                ))
            })
            .collect();
        frame.render_widget(
            Paragraph::new(flow_lines).block(Block::bordered().title(" top flows ")),
            flows,
        );
    } else {
        frame.render_widget(table, area);
    }
}
