//! Overlays drawn over the view: the help listing every key, a
//! confirmation, the new-job form.

use ratatui::Frame;
use ratatui::layout::{Constraint, Flex, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Wrap};

use crate::app::{App, JobForm};
use crate::snapshot::Snapshot;

/// Every key, as the help overlay lists it.
pub const KEYS: [(&str, &str); 20] = [
    (
        "1-6, Tab, Shift-Tab",
        "views: overview links traffic jobs plans events",
    ),
    ("j / k, ↓ / ↑", "move the selection"),
    (
        "PgDn / PgUp, g / G",
        "move by a page, to the top, to the bottom",
    ),
    (
        "Enter",
        "links: the link's chart; plans: its routers, changes",
    ),
    ("/", "filter the view (Enter keeps it, Esc clears it)"),
    ("Esc", "clear the filter, close a chart or overlay"),
    (
        "s",
        "links: sort by utilisation, prediction, capacity, name",
    ),
    ("c", "traffic: next class (all, sync, bulk, best-effort)"),
    ("n", "jobs: new job (operator token)"),
    ("c", "jobs: cancel the selected job (operator token)"),
    ("a", "plans: compute and apply a plan (operator token)"),
    ("p", "plans: approve the proposal (operator token)"),
    (
        "r",
        "plans: roll back to the selected plan (operator token)",
    ),
    ("y", "confirm a change; any other key declines"),
    ("form: Tab / ↑ ↓", "next / previous field"),
    ("form: ← →", "class and sites: previous / next value"),
    ("form: Enter / Esc", "create the job / close the form"),
    ("?", "this help"),
    ("q", "quit (closes help first)"),
    ("Ctrl-C", "quit"),
];

fn centered(area: Rect, width: u16, height: u16) -> Rect {
    let [row] = Layout::vertical([Constraint::Length(height.min(area.height))])
        .flex(Flex::Center)
        .areas(area);
    let [cell] = Layout::horizontal([Constraint::Length(width.min(area.width))])
        .flex(Flex::Center)
        .areas(row);
    cell
}

pub fn draw(frame: &mut Frame, area: Rect, snapshot: &Snapshot, app: &App) {
    if app.help {
        let box_area = centered(area, 78, KEYS.len() as u16 + 2);
        let lines: Vec<Line> = KEYS
            .iter()
            .map(|(key, what)| {
                Line::from(vec![
                    Span::styled(format!("{key:<20} "), Style::new().fg(Color::Cyan)),
                    Span::raw(*what),
                ])
            })
            .collect();
        frame.render_widget(Clear, box_area);
        frame.render_widget(
            Paragraph::new(lines).block(Block::bordered().title(" keys (? or Esc to close) ")),
            box_area,
        );
    }
    if let Some(confirm) = &app.confirm {
        let box_area = centered(area, 64, 5);
        frame.render_widget(Clear, box_area);
        frame.render_widget(
            Paragraph::new(vec![
                Line::from(confirm.question.clone()),
                Line::from(""),
                Line::from(Span::styled(
                    "y: yes   any other key: no",
                    Style::new().add_modifier(Modifier::BOLD),
                )),
            ])
            .wrap(Wrap { trim: true })
            .block(
                Block::bordered()
                    .title(" confirm ")
                    .border_style(Style::new().fg(Color::Yellow)),
            ),
            box_area,
        );
    }
    if let Some(form) = &app.form {
        draw_form(frame, area, snapshot, form);
    }
}

fn draw_form(frame: &mut Frame, area: Rect, snapshot: &Snapshot, form: &JobForm) {
    let box_area = centered(area, 60, JobForm::FIELDS.len() as u16 + 5);
    let mut lines: Vec<Line> = JobForm::FIELDS
        .iter()
        .enumerate()
        .map(|(i, label)| {
            let value = form.value(i);
            let chooser = matches!(i, 2..=4);
            let shown = if chooser {
                format!("‹ {value} ›")
            } else {
                format!("{value}_")
            };
            let style = if i == form.focus {
                Style::new().add_modifier(Modifier::REVERSED)
            } else {
                Style::new()
            };
            Line::from(vec![
                Span::styled(format!("{label:>17}: "), Style::new().fg(Color::Cyan)),
                Span::styled(shown, style),
            ])
        })
        .collect();
    lines.push(Line::from(""));
    lines.push(Line::from(Span::styled(
        format!(
            "sites: {}   rate: 10G, 400M   Enter creates, Esc closes",
            snapshot.sites.join(" ")
        ),
        Style::new().fg(Color::DarkGray),
    )));
    frame.render_widget(Clear, box_area);
    frame.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(Block::bordered().title(" new job ")),
        box_area,
    );
}
