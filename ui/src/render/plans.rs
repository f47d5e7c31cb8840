//! Plans: the history with trigger, MLU, per-class satisfaction and the
//! worst single failure; the proposal (recommend mode) beside the current
//! plan; Enter on a plan: its routers' push status and what it changed on
//! each router against the plan before it; `a` applies, `p` approves, `r`
//! rolls back, each after a confirmation.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Row, Table, Wrap};

use super::{age, fit, window_start};
use crate::app::{App, plan_rows};
use crate::snapshot::{PlanRow, Snapshot, plan_diff};

pub fn draw(frame: &mut Frame, area: Rect, snapshot: &Snapshot, app: &App, now_ms: i64) {
    let rows = plan_rows(snapshot, app);
    let selected = app.selected().min(rows.len().saturating_sub(1));
    let side = if area.width >= 120 { 50 } else { 0 };
    let detail_rows = match (side, app.detail) {
        (0, true) => area.height / 2,
        (0, false) => 8,
        _ => 0,
    };
    let [main, side_area] =
        Layout::horizontal([Constraint::Min(40), Constraint::Length(side)]).areas(area);
    let [table_area, detail_area] =
        Layout::vertical([Constraint::Min(4), Constraint::Length(detail_rows)]).areas(main);
    let height = table_area.height.saturating_sub(3) as usize;
    let start = window_start(selected, rows.len(), height);
    let wide = table_area.width >= 100;
    let body: Vec<Row> = rows
        .iter()
        .enumerate()
        .skip(start)
        .take(height)
        .map(|(i, plan)| {
            let mut cells = vec![
                plan.name.trim_start_matches("plans/").to_string(),
                fit(&plan.status, 10),
                fit(&plan.trigger, 12),
                format!("{:.2}", plan.mlu),
            ];
            if wide {
                cells.push(format!(
                    "{:.0}/{:.0}/{:.0}",
                    plan.ai_sync_satisfaction * 100.0,
                    plan.ai_bulk_satisfaction * 100.0,
                    plan.best_effort_satisfaction * 100.0
                ));
                cells.push(format!("{:.2}", plan.worst_failure_mlu));
                cells.push(age(now_ms - plan.created_ms));
            }
            cells.push(fit(&plan.reason, 60));
            let style = if i == selected {
                Style::new().add_modifier(Modifier::REVERSED)
            } else if plan.proposal == "proposed" {
                Style::new().fg(Color::Yellow)
            } else {
                Style::new()
            };
            Row::new(cells).style(style)
        })
        .collect();
    let (header, widths): (Vec<&str>, Vec<Constraint>) = if wide {
        (
            vec![
                "plan",
                "status",
                "trigger",
                "MLU",
                "sat s/b/be %",
                "worst",
                "age",
                "reason",
            ],
            vec![
                Constraint::Length(5),
                Constraint::Length(10),
                Constraint::Length(12),
                Constraint::Length(5),
                Constraint::Length(12),
                Constraint::Length(5),
                Constraint::Length(5),
                Constraint::Min(10),
            ],
        )
    } else {
        (
            vec!["plan", "status", "trigger", "MLU", "reason"],
            vec![
                Constraint::Length(5),
                Constraint::Length(10),
                Constraint::Length(12),
                Constraint::Length(5),
                Constraint::Min(10),
            ],
        )
    };
    let table = Table::new(body, widths)
        .header(Row::new(header).style(Style::new().add_modifier(Modifier::BOLD)))
        .block(Block::bordered().title(format!(" plans ({}) ", rows.len())));
    frame.render_widget(table, table_area);
    let chosen = rows.get(selected).copied();
    let target = if side > 0 { side_area } else { detail_area };
    match chosen {
        Some(plan) if app.detail => draw_diff(frame, target, snapshot, plan),
        _ => draw_side(frame, target, snapshot, chosen, now_ms),
    }
}

fn status_style(status: &str) -> Style {
    match status {
        "applied" => Style::new().fg(Color::Green),
        "failed" => Style::new().fg(Color::Red),
        _ => Style::new().fg(Color::Yellow),
    }
}

/// The selected plan's routers: push status and what changed on each
/// against the plan before it.
fn draw_diff(frame: &mut Frame, area: Rect, snapshot: &Snapshot, plan: &PlanRow) {
    if area.height == 0 || area.width == 0 {
        return;
    }
    let title = format!(" {} by router (Esc closes) ", plan.name);
    let Some(detail) = snapshot.plan_details.get(&plan.version) else {
        frame.render_widget(
            Paragraph::new(format!("fetching the routes of {}…", plan.name))
                .block(Block::bordered().title(title)),
            area,
        );
        return;
    };
    let previous = snapshot.plan_details.get(&(plan.version - 1));
    let diffs = plan_diff(detail, previous);
    let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
    for router in &detail.routers {
        *counts.entry(router.push_status.as_str()).or_default() += 1;
    }
    let mut header = vec![Span::raw(match previous {
        Some(p) => format!("against plans/{} · ", p.version),
        None if plan.version > 1 => format!("plans/{} not fetched · ", plan.version - 1),
        None => "the first plan · ".to_string(),
    })];
    for (i, (status, count)) in counts.iter().enumerate() {
        if i > 0 {
            header.push(Span::raw(", "));
        }
        header.push(Span::styled(
            format!("{count} {status}"),
            status_style(status),
        ));
    }
    let mut lines = vec![Line::from(header)];
    let mut unchanged = Vec::new();
    for diff in &diffs {
        if diff.changes.is_empty() {
            unchanged.push(diff.node.clone());
            continue;
        }
        lines.push(Line::from(vec![
            Span::styled(
                format!("{:<12}", diff.node),
                Style::new().add_modifier(Modifier::BOLD),
            ),
            Span::styled(diff.push_status.clone(), status_style(&diff.push_status)),
        ]));
        for change in &diff.changes {
            lines.push(Line::from(format!("  → {change}")));
        }
    }
    if !unchanged.is_empty() {
        lines.push(Line::from(Span::styled(
            format!("unchanged: {}", unchanged.join(", ")),
            Style::new().fg(Color::Gray),
        )));
    }
    frame.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(Block::bordered().title(title)),
        area,
    );
}

fn describe(plan: &PlanRow, now_ms: i64) -> Vec<Line<'static>> {
    let mut lines = vec![
        Line::from(Span::styled(
            format!("{} {} ({})", plan.name, plan.status, plan.trigger),
            Style::new().add_modifier(Modifier::BOLD),
        )),
        Line::from(format!(
            "MLU {:.3} · worst failure {:.3} · {} ago by {}",
            plan.mlu,
            plan.worst_failure_mlu,
            age(now_ms - plan.created_ms),
            plan.creator
        )),
    ];
    if let (Some(before), Some(after)) = (plan.predicted_before, plan.predicted_after) {
        lines.push(Line::from(format!(
            "predicted MLU {before:.3} → {after:.3}, {} routes changed",
            plan.routes_changed.unwrap_or(0)
        )));
    }
    if !plan.pending_nodes.is_empty() {
        lines.push(Line::from(Span::styled(
            format!("pending: {}", plan.pending_nodes.join(", ")),
            Style::new().fg(Color::Yellow),
        )));
    }
    lines.push(Line::from(plan.reason.clone()));
    lines
}

fn draw_side(
    frame: &mut Frame,
    area: Rect,
    snapshot: &Snapshot,
    chosen: Option<&PlanRow>,
    now_ms: i64,
) {
    if area.height == 0 || area.width == 0 {
        return;
    }
    let mut lines = Vec::new();
    if let Some(current) = &snapshot.current_plan {
        lines.push(Line::from(Span::styled(
            "current",
            Style::new().fg(Color::Cyan),
        )));
        lines.extend(describe(current, now_ms));
    }
    if let Some(proposal) = &snapshot.proposal {
        lines.push(Line::from(""));
        lines.push(Line::from(Span::styled(
            "proposal (p to approve)",
            Style::new().fg(Color::Yellow),
        )));
        lines.extend(describe(proposal, now_ms));
    }
    if let Some(plan) = chosen
        && snapshot.current_plan.as_ref().map(|p| &p.name) != Some(&plan.name)
        && snapshot.proposal.as_ref().map(|p| &p.name) != Some(&plan.name)
    {
        lines.push(Line::from(""));
        lines.push(Line::from(Span::styled(
            "selected",
            Style::new().fg(Color::Gray),
        )));
        lines.extend(describe(plan, now_ms));
    }
    frame.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: true })
            .block(Block::bordered().title(" current · proposal · selected ")),
        area,
    );
}
