//! Jobs: every AI job with its class, rate or volume and deadline, state,
//! what admission guaranteed it, its class's satisfaction in the current
//! plan and what was measured of it, a volume job's share moved beside
//! its deadline; below, admission's answer, the schedule's and the
//! paths and split the current plan gives the selected job's class
//! between its sites; `n` opens the form, `c` cancels (both
//! need an operator token).

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Paragraph, Row, Table};

use super::{age, fit, level, rate, window_start};
use crate::app::{App, job_rows};
use crate::snapshot::{JobRow, Snapshot, job_paths};

/// Rows of the paths panel, borders included.
const PATH_ROWS: u16 = 7;

pub fn draw(frame: &mut Frame, full: Rect, snapshot: &Snapshot, app: &App, now_ms: i64) {
    let rows = job_rows(snapshot, app);
    let selected = app.selected().min(rows.len().saturating_sub(1));
    let path_rows = if full.height >= PATH_ROWS + 6 {
        PATH_ROWS
    } else {
        0
    };
    let [area, paths_area] =
        Layout::vertical([Constraint::Min(4), Constraint::Length(path_rows)]).areas(full);
    if let Some(job) = rows.get(selected) {
        draw_paths(frame, paths_area, snapshot, job);
    }
    let height = area.height.saturating_sub(3) as usize;
    let start = window_start(selected, rows.len(), height);
    let wide = area.width >= 120;
    let body: Vec<Row> = rows
        .iter()
        .enumerate()
        .skip(start)
        .take(height)
        .map(|(i, job)| {
            let demand = if job.volume_bytes > 0 {
                format!("{}B", rate(job.volume_bytes as f64))
            } else {
                rate(job.rate_bps as f64)
            };
            let satisfaction = job
                .satisfaction
                .map_or("-".to_string(), |s| format!("{:.0}%", s * 100.0));
            let shortfall = 1.0 - job.satisfaction.unwrap_or(1.0);
            let mut cells = vec![
                Cell::from(fit(job.name.trim_start_matches("jobs/"), 20)),
                Cell::from(fit(&job.class, 11)),
                Cell::from(demand),
                Cell::from(fit(&job.state, 10)),
                Cell::from(Span::styled(
                    satisfaction,
                    Style::new().fg(level(shortfall + 0.5)),
                )),
            ];
            if wide {
                cells.insert(1, Cell::from(fit(&job.tenant, 14)));
                cells.push(Cell::from(format!(
                    "{} → {}",
                    job.sources.join(","),
                    job.destinations.join(",")
                )));
                // The deadline, with the share moved; red when the
                // schedule misses it.
                let deadline = job
                    .deadline_ms
                    .map(|d| {
                        if d > now_ms {
                            format!("in {}", age(d - now_ms))
                        } else {
                            "passed".into()
                        }
                    })
                    .unwrap_or_default();
                cells.push(Cell::from(match &job.progress {
                    Some(p) => Span::styled(
                        format!("{deadline} {:.0}%", p.moved_share * 100.0),
                        Style::new().fg(if p.on_track { Color::Green } else { Color::Red }),
                    ),
                    None => Span::from(deadline),
                }));
                cells.push(Cell::from(job.measured_bps.map(rate).unwrap_or_default()));
            }
            // What admission guaranteed, red when short of the rate.
            let guaranteed = match job.guaranteed_bps {
                Some(bps) => Span::styled(
                    rate(bps as f64),
                    Style::new().fg(if bps < job.rate_bps {
                        Color::Red
                    } else {
                        Color::Green
                    }),
                ),
                None => Span::from("-"),
            };
            cells.insert(if wide { 5 } else { 4 }, Cell::from(guaranteed));
            let style = if i == selected {
                Style::new().add_modifier(Modifier::REVERSED)
            } else {
                Style::new()
            };
            Row::new(cells).style(style)
        })
        .collect();
    let (header, widths): (Vec<&str>, Vec<Constraint>) = if wide {
        (
            vec![
                "job",
                "tenant",
                "class",
                "rate/volume",
                "state",
                "guaranteed",
                "satisfied",
                "sites",
                "deadline",
                "measured",
            ],
            vec![
                Constraint::Length(20),
                Constraint::Length(14),
                Constraint::Length(11),
                Constraint::Length(11),
                Constraint::Length(10),
                Constraint::Length(10),
                Constraint::Length(9),
                Constraint::Min(20),
                Constraint::Length(13),
                Constraint::Length(9),
            ],
        )
    } else {
        (
            vec!["job", "class", "rate/vol", "state", "guarant.", "satisfied"],
            vec![
                Constraint::Min(14),
                Constraint::Length(11),
                Constraint::Length(9),
                Constraint::Length(10),
                Constraint::Length(9),
                Constraint::Length(9),
            ],
        )
    };
    let table = Table::new(body, widths)
        .header(Row::new(header).style(Style::new().add_modifier(Modifier::BOLD)))
        .block(Block::bordered().title(format!(
            " jobs {} of {} ",
            rows.len(),
            snapshot.jobs.len()
        )));
    frame.render_widget(table, area);
}

/// The current plan's paths for the job's class between its sites, with
/// their shares.
fn draw_paths(frame: &mut Frame, area: Rect, snapshot: &Snapshot, job: &JobRow) {
    if area.height == 0 {
        return;
    }
    let plan = snapshot
        .current_plan
        .as_ref()
        .map_or("no plan".to_string(), |p| p.name.clone());
    let title = format!(" {} paths in {plan} ", job.name.trim_start_matches("jobs/"));
    let allocations = job_paths(snapshot, job);
    let mut lines = Vec::new();
    if let Some(admission) = &job.admission {
        lines.push(Line::from(Span::styled(
            format!("admission: {admission}"),
            Style::new().fg(Color::Cyan),
        )));
    }
    if let Some(progress) = &job.progress {
        lines.push(Line::from(Span::styled(
            format!("progress: {}", progress.detail),
            Style::new().fg(if progress.on_track {
                Color::Green
            } else {
                Color::Red
            }),
        )));
    }
    if snapshot
        .current_plan
        .as_ref()
        .is_some_and(|p| !snapshot.plan_details.contains_key(&p.version))
    {
        lines.push(Line::from("fetching the plan's paths…"));
    } else if allocations.is_empty() {
        lines.push(Line::from(Span::styled(
            format!(
                "no {} demand between {} and {} in the plan",
                job.class,
                job.sources.join(","),
                job.destinations.join(",")
            ),
            Style::new().fg(Color::Gray),
        )));
    }
    for allocation in allocations {
        lines.push(Line::from(Span::styled(
            format!(
                "{} → {} {} {}{}",
                allocation.src_node,
                allocation.dst_node,
                allocation.class,
                rate(allocation.rate_bps),
                if allocation.pinned { " (pinned)" } else { "" }
            ),
            Style::new().add_modifier(Modifier::BOLD),
        )));
        for (nodes, share) in &allocation.paths {
            lines.push(Line::from(format!(
                "  {:>4.0}%  {}",
                share * 100.0,
                nodes.join(" → ")
            )));
        }
    }
    frame.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(title)),
        area,
    );
}
