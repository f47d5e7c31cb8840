//! Links: a sortable, filterable table (now, predicted next with its band,
//! chance of congestion, capacity, the dominant class, flows against
//! counters); Enter opens the selected link's history with the forecast
//! drawn ahead of now.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Axis, Block, Cell, Chart, Dataset, GraphType, Paragraph, Row, Table};

use super::{fit, level, rate, window_start};
use crate::app::{App, LINK_SORTS, link_rows};
use crate::snapshot::{LinkRow, Snapshot};

pub fn draw(frame: &mut Frame, area: Rect, snapshot: &Snapshot, app: &App) {
    let rows = link_rows(snapshot, app);
    let selected = app.selected().min(rows.len().saturating_sub(1));
    let (table_area, chart_area) = if app.detail && !rows.is_empty() {
        let [table, chart] =
            Layout::vertical([Constraint::Percentage(45), Constraint::Percentage(55)]).areas(area);
        (table, Some(chart))
    } else {
        (area, None)
    };
    draw_table(
        frame,
        table_area,
        &rows,
        selected,
        app,
        snapshot.links.len(),
    );
    if let (Some(chart), Some(link)) = (chart_area, rows.get(selected)) {
        draw_chart(frame, chart, snapshot, link);
    }
}

fn draw_table(
    frame: &mut Frame,
    area: Rect,
    rows: &[&LinkRow],
    selected: usize,
    app: &App,
    total: usize,
) {
    let wide = area.width >= 120;
    let height = area.height.saturating_sub(3) as usize;
    let start = window_start(selected, rows.len(), height);
    let header = if wide {
        vec![
            "link",
            "to",
            "now",
            "util",
            "next (90% band)",
            "p(cong)",
            "capacity",
            "class",
            "flows vs counters",
        ]
    } else {
        vec!["link", "util", "next", "p", "cap", "class"]
    };
    let body: Vec<Row> = rows
        .iter()
        .enumerate()
        .skip(start)
        .take(height)
        .map(|(i, link)| {
            let now = link.utilization();
            let next = link.predicted_utilization();
            let style = if i == selected {
                Style::new().add_modifier(Modifier::REVERSED)
            } else {
                Style::new()
            };
            let cells = if wide {
                vec![
                    Cell::from(link.id.clone()),
                    Cell::from(link.dst.clone()),
                    Cell::from(rate(link.rate_bps)),
                    Cell::from(Span::styled(
                        format!("{:>5.1}%", now * 100.0),
                        Style::new().fg(level(now)),
                    )),
                    Cell::from(Span::styled(
                        format!(
                            "{:>5.1}% ({}–{})",
                            next * 100.0,
                            rate(link.predicted_low_bps),
                            rate(link.predicted_high_bps)
                        ),
                        Style::new().fg(level(next)),
                    )),
                    Cell::from(format!("{:.2}", link.congestion_probability)),
                    Cell::from(rate(link.capacity_bps)),
                    Cell::from(link.dominant_class.clone()),
                    Cell::from(drift(link)),
                ]
            } else {
                vec![
                    Cell::from(fit(&link.id, 18)),
                    Cell::from(Span::styled(
                        format!("{:>4.0}%", now * 100.0),
                        Style::new().fg(level(now)),
                    )),
                    Cell::from(Span::styled(
                        format!("{:>4.0}%", next * 100.0),
                        Style::new().fg(level(next)),
                    )),
                    Cell::from(format!("{:.2}", link.congestion_probability)),
                    Cell::from(rate(link.capacity_bps)),
                    Cell::from(fit(&link.dominant_class, 11)),
                ]
            };
            Row::new(cells).style(style)
        })
        .collect();
    let widths: Vec<Constraint> = if wide {
        vec![
            Constraint::Length(24),
            Constraint::Length(12),
            Constraint::Length(7),
            Constraint::Length(7),
            Constraint::Length(22),
            Constraint::Length(7),
            Constraint::Length(8),
            Constraint::Length(12),
            Constraint::Min(18),
        ]
    } else {
        vec![
            Constraint::Min(12),
            Constraint::Length(5),
            Constraint::Length(5),
            Constraint::Length(5),
            Constraint::Length(6),
            Constraint::Length(11),
        ]
    };
    let title = format!(
        " links {} of {}, by {} ",
        rows.len(),
        total,
        LINK_SORTS[app.link_sort % LINK_SORTS.len()]
    );
    let table = Table::new(body, widths)
        .header(Row::new(header).style(Style::new().add_modifier(Modifier::BOLD)))
        .block(Block::bordered().title(title));
    frame.render_widget(table, area);
}

fn drift(link: &LinkRow) -> String {
    if !link.wan {
        return "inside a site".into();
    }
    if !link.has_counters {
        return "no counters".into();
    }
    let sign = if link.disagreement_bps >= 0.0 {
        "+"
    } else {
        "-"
    };
    format!(
        "{} {sign}{}",
        if link.agrees { "agree" } else { "DIFFER" },
        rate(link.disagreement_bps.abs())
    )
}

fn draw_chart(frame: &mut Frame, area: Rect, snapshot: &Snapshot, link: &LinkRow) {
    let history = snapshot.history.get(&link.id);
    let points: Vec<(f64, f64)> = history
        .map(|h| {
            let last = h.back().map_or(0, |(t, _)| *t);
            h.iter()
                .map(|(t, u)| ((*t - last) as f64 / 1000.0, u * 100.0))
                .collect()
        })
        .unwrap_or_default();
    if points.is_empty() {
        frame.render_widget(
            Paragraph::new(Line::from("no history yet for this link"))
                .block(Block::bordered().title(format!(" {} ", link.id))),
            area,
        );
        return;
    }
    let step = snapshot
        .control
        .as_ref()
        .map_or(10.0, |c| (c.interval_ms as f64 / 1000.0).max(1.0));
    let now = points.last().copied().unwrap_or((0.0, 0.0));
    let forecast = vec![now, (step, link.predicted_utilization() * 100.0)];
    let band = vec![
        (
            step,
            link.predicted_low_bps / link.capacity_bps.max(1.0) * 100.0,
        ),
        (
            step,
            link.predicted_high_bps / link.capacity_bps.max(1.0) * 100.0,
        ),
    ];
    let threshold = snapshot
        .control
        .as_ref()
        .map_or(80.0, |c| c.congestion_threshold * 100.0);
    let first = points.first().map_or(-60.0, |(t, _)| *t).min(-step);
    let threshold_line = vec![(first, threshold), (step, threshold)];
    let top = points
        .iter()
        .chain(&band)
        .map(|(_, u)| *u)
        .fold(threshold, f64::max)
        .max(10.0)
        * 1.1;
    let datasets = vec![
        Dataset::default()
            .name("measured")
            .marker(Marker::Braille)
            .graph_type(GraphType::Line)
            .style(Style::new().fg(Color::Cyan))
            .data(&points),
        Dataset::default()
            .name("forecast")
            .marker(Marker::Braille)
            .graph_type(GraphType::Line)
            .style(Style::new().fg(Color::Magenta))
            .data(&forecast),
        Dataset::default()
            .name("band")
            .marker(Marker::Block)
            .graph_type(GraphType::Line)
            .style(Style::new().fg(Color::Magenta))
            .data(&band),
        Dataset::default()
            .name("threshold")
            .marker(Marker::Dot)
            .graph_type(GraphType::Line)
            .style(Style::new().fg(Color::Red))
            .data(&threshold_line),
    ];
    let chart = Chart::new(datasets)
        .block(Block::bordered().title(format!(
            " {} → {}: utilisation %, now and next ({} capacity) ",
            link.id,
            link.dst,
            rate(link.capacity_bps)
        )))
        .x_axis(
            Axis::default()
                .bounds([first, step])
                .labels([format!("{first:.0} s"), format!("now, next +{step:.0} s")]),
        )
        .y_axis(Axis::default().bounds([0.0, top]).labels([
            "0".to_string(),
            format!("{:.0}", top / 2.0),
            format!("{top:.0}"),
        ]));
    frame.render_widget(chart, area);
}
