//! The dashboard's own state (which view, what is selected, filters,
//! sorting, overlays, the job form) and what each key does to it. Keys
//! that need the controller become [`Command`]s for the engine; nothing
//! here waits on the network.

use crate::snapshot::{JobRow, LinkRow, PlanRow, Snapshot};

/// The views, in tab order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum View {
    #[default]
    Overview,
    Links,
    Traffic,
    Jobs,
    Plans,
    Events,
}

impl View {
    pub const ALL: [View; 6] = [
        View::Overview,
        View::Links,
        View::Traffic,
        View::Jobs,
        View::Plans,
        View::Events,
    ];

    pub fn title(self) -> &'static str {
        match self {
            View::Overview => "Overview",
            View::Links => "Links",
            View::Traffic => "Traffic",
            View::Jobs => "Jobs",
            View::Plans => "Plans",
            View::Events => "Events",
        }
    }

    fn index(self) -> usize {
        View::ALL.iter().position(|v| *v == self).unwrap_or(0)
    }
}

/// A new job, as typed into the form.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct JobForm {
    pub id: String,
    pub tenant: String,
    /// `ai-sync`, `ai-bulk` or `best-effort`.
    pub class: String,
    pub source: String,
    pub destination: String,
    /// A rate as in labels: `10G`, `400M`.
    pub rate: String,
    pub focus: usize,
}

impl JobForm {
    pub const FIELDS: [&'static str; 6] = [
        "job id",
        "tenant",
        "class",
        "source site",
        "destination site",
        "rate",
    ];
    pub const CLASSES: [&'static str; 3] = ["ai-sync", "ai-bulk", "best-effort"];

    fn new(sites: &[String]) -> JobForm {
        JobForm {
            tenant: "operator".into(),
            class: "best-effort".into(),
            source: sites.first().cloned().unwrap_or_default(),
            destination: sites.get(1).cloned().unwrap_or_default(),
            rate: "1G".into(),
            ..JobForm::default()
        }
    }

    fn field(&mut self, index: usize) -> Option<&mut String> {
        match index {
            0 => Some(&mut self.id),
            1 => Some(&mut self.tenant),
            3 => Some(&mut self.source),
            4 => Some(&mut self.destination),
            5 => Some(&mut self.rate),
            _ => None,
        }
    }

    pub fn value(&self, index: usize) -> &str {
        match index {
            0 => &self.id,
            1 => &self.tenant,
            2 => &self.class,
            3 => &self.source,
            4 => &self.destination,
            _ => &self.rate,
        }
    }
}

/// What the engine is asked to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// The view on screen (the engine polls what it needs).
    Show(View),
    CreateJob(JobForm),
    CancelJob(String),
    ApplyPlan,
    ApprovePlan(String),
    RollbackPlan(String),
    /// Fetch a plan's routes and the plan before it, for the diff.
    InspectPlan(i64),
}

/// A change that waits for `y`.
#[derive(Debug, Clone, PartialEq)]
pub struct Confirm {
    pub question: String,
    pub command: Command,
}

/// A key, as the renderer's terminal reports it (kept apart from crossterm
/// so that tests and the engine need no terminal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    Char(char),
    Enter,
    Esc,
    Tab,
    BackTab,
    Up,
    Down,
    Left,
    Right,
    PageUp,
    PageDown,
    Home,
    End,
    Backspace,
    CtrlC,
}

/// What a key did.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Nothing,
    Command(Command),
    Quit,
}

/// Sort orders of the links table.
pub const LINK_SORTS: [&str; 4] = ["utilisation", "predicted", "capacity", "name"];
/// Classes the traffic view shows.
pub const TRAFFIC_CLASSES: [&str; 4] = ["all", "ai-sync", "ai-bulk", "best-effort"];

/// The dashboard's state.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct App {
    pub view: View,
    /// Selected row per view.
    pub selected: [usize; 6],
    /// Filter per view (a substring, case-insensitive).
    pub filter: [String; 6],
    /// Typing a filter.
    pub filtering: bool,
    pub link_sort: usize,
    pub traffic_class: usize,
    pub help: bool,
    /// Enter on a link or plan: its detail.
    pub detail: bool,
    pub confirm: Option<Confirm>,
    pub form: Option<JobForm>,
}

fn contains(haystack: &str, needle: &str) -> bool {
    needle.is_empty() || haystack.to_lowercase().contains(&needle.to_lowercase())
}

/// The links table's rows: filtered, sorted.
pub fn link_rows<'a>(snapshot: &'a Snapshot, app: &App) -> Vec<&'a LinkRow> {
    let filter = &app.filter[View::Links.index()];
    let mut rows: Vec<&LinkRow> = snapshot
        .links
        .iter()
        .filter(|l| {
            contains(&l.id, filter)
                || contains(&l.dst, filter)
                || contains(&l.dominant_class, filter)
        })
        .collect();
    match app.link_sort {
        0 => rows.sort_by(|a, b| {
            b.utilization()
                .total_cmp(&a.utilization())
                .then(a.id.cmp(&b.id))
        }),
        1 => rows.sort_by(|a, b| {
            b.predicted_utilization()
                .total_cmp(&a.predicted_utilization())
                .then(a.id.cmp(&b.id))
        }),
        2 => rows.sort_by(|a, b| {
            b.capacity_bps
                .total_cmp(&a.capacity_bps)
                .then(a.id.cmp(&b.id))
        }),
        _ => rows.sort_by(|a, b| a.id.cmp(&b.id)),
    }
    rows
}

pub fn job_rows<'a>(snapshot: &'a Snapshot, app: &App) -> Vec<&'a JobRow> {
    let filter = &app.filter[View::Jobs.index()];
    snapshot
        .jobs
        .iter()
        .filter(|j| {
            contains(&j.name, filter)
                || contains(&j.tenant, filter)
                || contains(&j.class, filter)
                || contains(&j.state, filter)
        })
        .collect()
}

pub fn plan_rows<'a>(snapshot: &'a Snapshot, app: &App) -> Vec<&'a PlanRow> {
    let filter = &app.filter[View::Plans.index()];
    snapshot
        .plans
        .iter()
        .filter(|p| {
            contains(&p.name, filter) || contains(&p.trigger, filter) || contains(&p.reason, filter)
        })
        .collect()
}

pub fn event_rows<'a>(snapshot: &'a Snapshot, app: &App) -> Vec<&'a crate::snapshot::EventRow> {
    let filter = &app.filter[View::Events.index()];
    snapshot
        .events
        .iter()
        .rev()
        .filter(|e| {
            contains(&e.kind, filter)
                || contains(&e.subject, filter)
                || contains(&e.message, filter)
        })
        .collect()
}

/// (source, destination, bit/s) of the traffic view's class, heaviest first.
pub fn matrix_rows(snapshot: &Snapshot, app: &App) -> Vec<(String, String, f64)> {
    let Some(matrix) = &snapshot.matrix else {
        return Vec::new();
    };
    let class = TRAFFIC_CLASSES[app.traffic_class % TRAFFIC_CLASSES.len()];
    let filter = &app.filter[View::Traffic.index()];
    let mut sums: std::collections::BTreeMap<(String, String), f64> = Default::default();
    for ((src, dst, cell_class), rate) in &matrix.cells {
        if class == "all" || class == cell_class {
            *sums.entry((src.clone(), dst.clone())).or_default() += rate;
        }
    }
    let mut rows: Vec<(String, String, f64)> = sums
        .into_iter()
        .filter(|((s, d), _)| contains(s, filter) || contains(d, filter))
        .map(|((s, d), r)| (s, d, r))
        .collect();
    rows.sort_by(|a, b| b.2.total_cmp(&a.2).then(a.0.cmp(&b.0)).then(a.1.cmp(&b.1)));
    rows
}

impl App {
    fn rows(&self, snapshot: &Snapshot) -> usize {
        match self.view {
            View::Overview => snapshot.links.len(),
            View::Links => link_rows(snapshot, self).len(),
            View::Traffic => matrix_rows(snapshot, self).len(),
            View::Jobs => job_rows(snapshot, self).len(),
            View::Plans => plan_rows(snapshot, self).len(),
            View::Events => event_rows(snapshot, self).len(),
        }
    }

    pub fn selected(&self) -> usize {
        self.selected[self.view.index()]
    }

    fn select(&mut self, snapshot: &Snapshot, delta: isize) {
        let rows = self.rows(snapshot);
        let slot = &mut self.selected[self.view.index()];
        if rows == 0 {
            *slot = 0;
            return;
        }
        let next = (*slot as isize + delta).clamp(0, rows as isize - 1);
        *slot = next as usize;
    }

    /// Moves the selection; with a plan's detail open, asks for the newly
    /// selected plan's routes.
    fn move_by(&mut self, snapshot: &Snapshot, delta: isize) -> Outcome {
        let before = self.selected();
        self.select(snapshot, delta);
        if self.selected() == before {
            return Outcome::Nothing;
        }
        self.inspect(snapshot)
    }

    /// In the plans view with the detail open: fetch the selected plan.
    fn inspect(&self, snapshot: &Snapshot) -> Outcome {
        if self.view != View::Plans || !self.detail {
            return Outcome::Nothing;
        }
        match plan_rows(snapshot, self).get(self.selected()) {
            Some(plan) => Outcome::Command(Command::InspectPlan(plan.version)),
            None => Outcome::Nothing,
        }
    }

    pub fn filter(&self) -> &str {
        &self.filter[self.view.index()]
    }

    fn switch(&mut self, view: View) -> Outcome {
        self.view = view;
        self.detail = false;
        self.filtering = false;
        Outcome::Command(Command::Show(view))
    }

    /// Handles one key against the current snapshot.
    pub fn handle(&mut self, key: Key, snapshot: &Snapshot) -> Outcome {
        if key == Key::CtrlC {
            return Outcome::Quit;
        }
        if let Some(confirm) = self.confirm.take() {
            return match key {
                Key::Char('y') | Key::Char('Y') => Outcome::Command(confirm.command),
                _ => Outcome::Nothing,
            };
        }
        if let Some(mut form) = self.form.take() {
            return self.handle_form(key, &mut form, snapshot);
        }
        if self.help {
            if matches!(key, Key::Esc | Key::Char('?') | Key::Char('q')) {
                self.help = false;
            }
            return Outcome::Nothing;
        }
        if self.filtering {
            let slot = self.view.index();
            match key {
                Key::Enter => self.filtering = false,
                Key::Esc => {
                    self.filtering = false;
                    self.filter[slot].clear();
                }
                Key::Backspace => {
                    self.filter[slot].pop();
                }
                Key::Char(c) if !c.is_control() && self.filter[slot].len() < 64 => {
                    self.filter[slot].push(c);
                }
                _ => {}
            }
            self.selected[slot] = 0;
            return Outcome::Nothing;
        }
        match key {
            Key::Char('q') => return Outcome::Quit,
            Key::Char('?') => self.help = true,
            Key::Char(c @ '1'..='6') => {
                let index = (c as usize) - ('1' as usize);
                return self.switch(View::ALL[index]);
            }
            Key::Tab => return self.switch(View::ALL[(self.view.index() + 1) % View::ALL.len()]),
            Key::BackTab => {
                return self.switch(
                    View::ALL[(self.view.index() + View::ALL.len() - 1) % View::ALL.len()],
                );
            }
            Key::Up | Key::Char('k') => return self.move_by(snapshot, -1),
            Key::Down | Key::Char('j') => return self.move_by(snapshot, 1),
            Key::PageUp => return self.move_by(snapshot, -10),
            Key::PageDown => return self.move_by(snapshot, 10),
            Key::Home | Key::Char('g') => return self.move_by(snapshot, isize::MIN / 2),
            Key::End | Key::Char('G') => return self.move_by(snapshot, isize::MAX / 2),
            Key::Char('/') => self.filtering = true,
            Key::Esc => {
                self.detail = false;
                self.filter[self.view.index()].clear();
            }
            Key::Enter => {
                self.detail = !self.detail;
                return self.inspect(snapshot);
            }
            Key::Char('s') if self.view == View::Links => {
                self.link_sort = (self.link_sort + 1) % LINK_SORTS.len();
            }
            Key::Char('c') if self.view == View::Traffic => {
                self.traffic_class = (self.traffic_class + 1) % TRAFFIC_CLASSES.len();
            }
            Key::Char('n') if self.view == View::Jobs => {
                self.form = Some(JobForm::new(&snapshot.sites));
            }
            Key::Char('c') if self.view == View::Jobs => {
                if let Some(job) = job_rows(snapshot, self).get(self.selected()) {
                    self.confirm = Some(Confirm {
                        question: format!("Cancel {}? Its demands leave the next plan.", job.name),
                        command: Command::CancelJob(job.name.clone()),
                    });
                }
            }
            Key::Char('a') if self.view == View::Plans => {
                self.confirm = Some(Confirm {
                    question: "Compute a plan from the current jobs and traffic and apply it?"
                        .into(),
                    command: Command::ApplyPlan,
                });
            }
            Key::Char('p') if self.view == View::Plans => {
                if let Some(proposal) = &snapshot.proposal {
                    self.confirm = Some(Confirm {
                        question: format!("Approve {} and push it to the routers?", proposal.name),
                        command: Command::ApprovePlan(proposal.name.clone()),
                    });
                }
            }
            Key::Char('r') if self.view == View::Plans => {
                if let Some(plan) = plan_rows(snapshot, self).get(self.selected()) {
                    self.confirm = Some(Confirm {
                        question: format!("Roll back to {} (as a new plan)?", plan.name),
                        command: Command::RollbackPlan(plan.name.clone()),
                    });
                }
            }
            _ => {}
        }
        Outcome::Nothing
    }

    fn handle_form(&mut self, key: Key, form: &mut JobForm, snapshot: &Snapshot) -> Outcome {
        let fields = JobForm::FIELDS.len();
        match key {
            Key::Esc => return Outcome::Nothing,
            Key::Enter => return Outcome::Command(Command::CreateJob(form.clone())),
            Key::Tab | Key::Down => form.focus = (form.focus + 1) % fields,
            Key::BackTab | Key::Up => form.focus = (form.focus + fields - 1) % fields,
            Key::Left | Key::Right | Key::Char(' ') if form.focus == 2 => {
                let at = JobForm::CLASSES
                    .iter()
                    .position(|c| *c == form.class)
                    .unwrap_or(0);
                let step = if key == Key::Left {
                    JobForm::CLASSES.len() - 1
                } else {
                    1
                };
                form.class = JobForm::CLASSES[(at + step) % JobForm::CLASSES.len()].to_string();
            }
            Key::Left | Key::Right if form.focus == 3 || form.focus == 4 => {
                let sites = &snapshot.sites;
                if !sites.is_empty() {
                    let value = if form.focus == 3 {
                        &mut form.source
                    } else {
                        &mut form.destination
                    };
                    let at = sites.iter().position(|s| s == value).unwrap_or(0);
                    let step = if key == Key::Left { sites.len() - 1 } else { 1 };
                    *value = sites[(at + step) % sites.len()].clone();
                }
            }
            Key::Backspace => {
                if let Some(field) = form.field(form.focus) {
                    field.pop();
                }
            }
            Key::Char(c) if !c.is_control() => {
                if let Some(field) = form.field(form.focus)
                    && field.len() < 63
                {
                    field.push(c);
                }
            }
            _ => {}
        }
        self.form = Some(form.clone());
        Outcome::Nothing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> Snapshot {
        let link = |id: &str, util: f64| LinkRow {
            id: id.into(),
            capacity_bps: 10e9,
            rate_bps: util * 10e9,
            ..LinkRow::default()
        };
        Snapshot {
            sites: vec!["dc1".into(), "dc2".into()],
            links: vec![
                link("a:eth1", 0.2),
                link("b:eth1", 0.9),
                link("wan-east:eth1", 0.5),
            ],
            jobs: vec![JobRow {
                name: "jobs/train".into(),
                ..JobRow::default()
            }],
            ..Snapshot::default()
        }
    }

    #[test]
    fn views_filters_and_sorting() {
        let snapshot = snapshot();
        let mut app = App::default();
        assert_eq!(
            app.handle(Key::Char('2'), &snapshot),
            Outcome::Command(Command::Show(View::Links))
        );
        let ids: Vec<&str> = link_rows(&snapshot, &app)
            .iter()
            .map(|l| l.id.as_str())
            .collect();
        assert_eq!(ids, ["b:eth1", "wan-east:eth1", "a:eth1"], "hottest first");
        for key in [
            Key::Char('/'),
            Key::Char('w'),
            Key::Char('a'),
            Key::Char('n'),
            Key::Enter,
        ] {
            app.handle(key, &snapshot);
        }
        let ids: Vec<&str> = link_rows(&snapshot, &app)
            .iter()
            .map(|l| l.id.as_str())
            .collect();
        assert_eq!(ids, ["wan-east:eth1"]);
        app.handle(Key::Esc, &snapshot);
        assert_eq!(link_rows(&snapshot, &app).len(), 3);
        app.handle(Key::Char('s'), &snapshot);
        app.handle(Key::Char('s'), &snapshot);
        app.handle(Key::Char('s'), &snapshot);
        let ids: Vec<&str> = link_rows(&snapshot, &app)
            .iter()
            .map(|l| l.id.as_str())
            .collect();
        assert_eq!(ids, ["a:eth1", "b:eth1", "wan-east:eth1"], "by name");
        app.handle(Key::Down, &snapshot);
        app.handle(Key::Down, &snapshot);
        app.handle(Key::Down, &snapshot);
        assert_eq!(app.selected(), 2, "stops at the last row");
        app.handle(Key::Tab, &snapshot);
        assert_eq!(app.view, View::Traffic);
        assert_eq!(app.handle(Key::Char('q'), &snapshot), Outcome::Quit);
    }

    #[test]
    fn changes_wait_for_confirmation_and_the_form_makes_a_job() {
        let snapshot = snapshot();
        let mut app = App::default();
        app.handle(Key::Char('4'), &snapshot);
        app.handle(Key::Char('c'), &snapshot);
        assert!(app.confirm.is_some());
        assert_eq!(
            app.handle(Key::Char('n'), &snapshot),
            Outcome::Nothing,
            "anything but y declines"
        );
        app.handle(Key::Char('c'), &snapshot);
        assert_eq!(
            app.handle(Key::Char('y'), &snapshot),
            Outcome::Command(Command::CancelJob("jobs/train".into()))
        );
        app.handle(Key::Char('n'), &snapshot);
        for c in "ckpt-9".chars() {
            app.handle(Key::Char(c), &snapshot);
        }
        app.handle(Key::Tab, &snapshot);
        app.handle(Key::Tab, &snapshot);
        app.handle(Key::Right, &snapshot); // class: best-effort -> ai-sync
        let Outcome::Command(Command::CreateJob(form)) = app.handle(Key::Enter, &snapshot) else {
            panic!("no job");
        };
        assert_eq!(
            (
                form.id.as_str(),
                form.class.as_str(),
                form.source.as_str(),
                form.destination.as_str()
            ),
            ("ckpt-9", "ai-sync", "dc1", "dc2")
        );
        assert!(app.form.is_none());
        app.handle(Key::Char('?'), &snapshot);
        assert!(app.help);
        assert_eq!(
            app.handle(Key::Char('q'), &snapshot),
            Outcome::Nothing,
            "q closes help first"
        );
        assert!(!app.help);
    }
}
