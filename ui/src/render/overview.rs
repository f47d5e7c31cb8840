//! The overview: the plan and the control loop, the WAN links with their
//! utilisation, jobs by state, alarms.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph};

use super::{age, bar, fit, level, rate};
use crate::app::App;
use crate::snapshot::Snapshot;

pub fn draw(frame: &mut Frame, area: Rect, snapshot: &Snapshot, _app: &App, now_ms: i64) {
    let wide = area.width >= 120;
    let status_rows = if snapshot.proposal.is_some() { 6 } else { 5 };
    let [top, rest] =
        Layout::vertical([Constraint::Length(status_rows), Constraint::Min(3)]).areas(area);
    draw_status(frame, top, snapshot, now_ms);
    if wide {
        let [links, side] =
            Layout::horizontal([Constraint::Percentage(60), Constraint::Percentage(40)])
                .areas(rest);
        draw_links(frame, links, snapshot);
        let [jobs, alarms] =
            Layout::vertical([Constraint::Length(6), Constraint::Min(3)]).areas(side);
        draw_jobs(frame, jobs, snapshot);
        draw_alarms(frame, alarms, snapshot);
    } else {
        let alarm_rows = snapshot.alarms().len().clamp(1, 4) as u16 + 2;
        let [links, alarms] =
            Layout::vertical([Constraint::Min(3), Constraint::Length(alarm_rows)]).areas(rest);
        draw_links(frame, links, snapshot);
        draw_alarms(frame, alarms, snapshot);
    }
}

fn draw_status(frame: &mut Frame, area: Rect, snapshot: &Snapshot, now_ms: i64) {
    let bold = Style::new().add_modifier(Modifier::BOLD);
    let mut lines = Vec::new();
    match &snapshot.current_plan {
        Some(plan) => lines.push(Line::from(vec![
            Span::styled(format!("{} ", plan.name), bold),
            Span::raw(format!("{} · ", plan.status)),
            Span::styled(
                format!("MLU {:.2}", plan.mlu),
                Style::new().fg(super::level(plan.mlu)),
            ),
            Span::raw(format!(
                " · {} · {} ago · worst failure {:.2}",
                plan.trigger,
                age(now_ms - plan.created_ms),
                plan.worst_failure_mlu
            )),
        ])),
        None => lines.push(Line::from("no plan applied yet")),
    }
    match &snapshot.control {
        Some(control) => {
            lines.push(Line::from(vec![
                Span::raw("loop "),
                Span::styled(control.mode.to_uppercase(), bold),
                Span::raw(format!(
                    " · {} s · MLU {:.2} now, {:.2} next · {} re-plans",
                    control.interval_ms / 1000,
                    control.measured_mlu,
                    control.predicted_mlu,
                    control.replans
                )),
                Span::raw(
                    control
                        .last_latency_ms
                        .map(|ms| format!(" · loop {:.1} s", ms as f64 / 1000.0))
                        .unwrap_or_default(),
                ),
            ]));
            let decision = if control.idle_reason.is_empty() {
                control.last_decision.clone()
            } else {
                format!("idle: {}", control.idle_reason)
            };
            lines.push(Line::from(Span::styled(
                fit(&decision, area.width.saturating_sub(4) as usize),
                Style::new().fg(Color::Gray),
            )));
        }
        None => lines.push(Line::from("control loop: unknown")),
    }
    if let Some(proposal) = &snapshot.proposal {
        lines.push(Line::from(Span::styled(
            fit(
                &format!(
                    "proposal {} waiting: {} (Plans, p to approve)",
                    proposal.name, proposal.reason
                ),
                area.width.saturating_sub(4) as usize,
            ),
            Style::new().fg(Color::Yellow),
        )));
    }
    let title = format!(
        " {} · {} sites ",
        snapshot.topology_name,
        snapshot.sites.len()
    );
    frame.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(title)),
        area,
    );
}

fn draw_links(frame: &mut Frame, area: Rect, snapshot: &Snapshot) {
    let mut wan: Vec<&crate::snapshot::LinkRow> = snapshot.links.iter().filter(|l| l.wan).collect();
    if wan.is_empty() {
        wan = snapshot.links.iter().collect();
    }
    wan.sort_by(|a, b| {
        b.utilization()
            .total_cmp(&a.utilization())
            .then(a.id.cmp(&b.id))
    });
    let inner = area.width.saturating_sub(2) as usize;
    let name_width = 22.min(inner / 3);
    let bar_width = inner.saturating_sub(name_width + 24).clamp(4, 60);
    let height = area.height.saturating_sub(2) as usize;
    let lines: Vec<Line> = wan
        .iter()
        .take(height)
        .map(|link| {
            let now = link.utilization();
            let next = link.predicted_utilization();
            Line::from(vec![
                Span::raw(format!(
                    "{:<w$} ",
                    fit(&link.id, name_width),
                    w = name_width
                )),
                Span::styled(bar(now, bar_width), Style::new().fg(level(now))),
                Span::styled(
                    format!(" {:>4.0}%", now * 100.0),
                    Style::new().fg(level(now)),
                ),
                Span::styled(
                    format!(" →{:>4.0}%", next * 100.0),
                    Style::new().fg(level(next)),
                ),
                Span::raw(format!(" {:>6}", rate(link.capacity_bps))),
            ])
        })
        .collect();
    let title = format!(" WAN links ({}) now → next ", wan.len());
    frame.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(title)),
        area,
    );
}

fn draw_jobs(frame: &mut Frame, area: Rect, snapshot: &Snapshot) {
    let mut by_state: std::collections::BTreeMap<&str, usize> = Default::default();
    for job in &snapshot.jobs {
        *by_state.entry(job.state.as_str()).or_default() += 1;
    }
    let lines: Vec<Line> = by_state
        .iter()
        .map(|(state, count)| Line::from(format!("{count:>4}  {state}")))
        .collect();
    frame.render_widget(
        Paragraph::new(lines)
            .block(Block::bordered().title(format!(" jobs ({}) ", snapshot.jobs.len()))),
        area,
    );
}

fn draw_alarms(frame: &mut Frame, area: Rect, snapshot: &Snapshot) {
    let alarms = snapshot.alarms();
    let width = area.width.saturating_sub(2) as usize;
    let lines: Vec<Line> = if alarms.is_empty() {
        vec![Line::from(Span::styled(
            "none",
            Style::new().fg(Color::Green),
        ))]
    } else {
        alarms
            .iter()
            .map(|a| Line::from(Span::styled(fit(a, width), Style::new().fg(Color::Red))))
            .collect()
    };
    frame.render_widget(
        Paragraph::new(lines)
            .block(Block::bordered().title(format!(" alarms ({}) ", alarms.len()))),
        area,
    );
}
