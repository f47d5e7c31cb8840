//! The reconcile loop: brings every router to the current plan's desired
//! state, and keeps it there.
//!
//! Each round reads the desired state from the database (the plan and the
//! topology, both written before anything is pushed), observes what every
//! router holds and what interfaces it has, finds every link's next hops
//! from those ([`super::discovery`]; unresolved links are reported and left
//! out), renders each router's kernel state, and pushes to the routers
//! that differ. A push is ordered make-before-break, across
//! routers, from what they hold now:
//!
//! 1. every router gets the routes for prefixes it had no route for, and
//!    the SRv6 local SIDs it did not have (new paths, and the far ends of
//!    new pinned paths, exist before anything is sent onto them; nothing
//!    else moves);
//! 2. then, step by step, the routers nearest each destination take their
//!    new routes for it first (step `k` switches every router `k` hops or
//!    fewer from the destination along the new paths), so a router shifts
//!    its weights only once everything downstream already forwards by the
//!    new plan, and no transient loop or black hole forms;
//! 3. last, each router gets exactly its desired state: the pins' rules and
//!    encap routes at their first routers (whose SIDs downstream are in
//!    since step 1), the rate limits, and what only the old plan had goes.
//!
//! Because each push starts from what the routers hold, a controller killed
//! halfway (or a router that missed a step) simply continues from there.
//! A router whose agent does not answer is left out and retried with
//! backoff; the plan is `partial` meanwhile, naming it. A router that
//! refuses its state makes the plan `failed` and the previous plan is put
//! back as a new version.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aiwan_planner::NodeRole;
use ipnet::IpNet;
use tokio::sync::watch;

use aiwan_collectors::store::ClassRule;

use super::discovery::{Discovery, UnresolvedLinks};
use super::metrics::SouthboundMetrics;
use super::render::render;
use super::{Driver, DriverError, Observed};
use crate::agent::{InterfaceReport, NodeState, UcmpRoute, Version};
use crate::events::{EventBus, EventKind};
use crate::model::{NewPlan, PlanStatus, PlanTrigger, now_ms};
use crate::store::Store;

/// Shortest and longest wait before a router that did not answer is tried
/// again.
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// What one round did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoundReport {
    /// The plan version reconciled (0: none is current).
    pub plan_version: i64,
    /// Routers that hold the desired state after the round.
    pub in_sync: Vec<String>,
    /// Routers pushed to in this round.
    pub pushed: Vec<String>,
    /// Routers whose agent did not answer (left for a later round).
    pub unreachable: Vec<String>,
    /// Routers that refused their state.
    pub refused: Vec<String>,
    /// Routers a newer controller has taken over (a higher epoch).
    pub superseded: Vec<String>,
    /// Push steps (make-before-break) the round took.
    pub steps: usize,
    /// Links whose next hops could not be found, `node:interface: why`:
    /// left out of what was pushed.
    pub unresolved: Vec<String>,
}

pub struct Reconciler {
    store: Store,
    driver: Arc<dyn Driver>,
    interval: Duration,
    backoff: BTreeMap<String, (Instant, Duration)>,
    metrics: SouthboundMetrics,
    /// DSCP to traffic class, for rate limits.
    classes: Vec<ClassRule>,
    /// Whether plans' rate limits are pushed (`southbound.rate_limits`).
    rate_limits: bool,
    events: Option<EventBus>,
    /// Routers whose agent did not answer last time (for lost/back events).
    lost: BTreeSet<String>,
    /// This controller's term: the time it started, ms since the epoch. A
    /// controller started later (a fresh or restored database, a second
    /// controller taking over) has a higher one, which the agents take
    /// whatever the generation; an older controller's pushes are then
    /// refused. Assumes clocks roughly in time (NTP).
    epoch: u64,
    /// Each router's interfaces as it last reported them.
    reports: BTreeMap<String, Vec<InterfaceReport>>,
    /// The unresolved links, shared with planning.
    unresolved: UnresolvedLinks,
}

impl Reconciler {
    pub fn new(store: Store, driver: Arc<dyn Driver>, interval: Duration) -> Reconciler {
        Reconciler {
            store,
            driver,
            interval,
            backoff: BTreeMap::new(),
            metrics: SouthboundMetrics::default(),
            classes: aiwan_collectors::store::default_class_rules(),
            rate_limits: true,
            events: None,
            lost: BTreeSet::new(),
            epoch: u64::try_from(now_ms()).unwrap_or(1).max(1),
            reports: BTreeMap::new(),
            unresolved: UnresolvedLinks::default(),
        }
    }

    /// Shares the links found unresolved with `view` (which planning
    /// reads, to plan around them).
    pub fn with_unresolved_links(mut self, view: UnresolvedLinks) -> Reconciler {
        self.unresolved = view;
        self
    }

    /// Tells the shared view, the log and the event stream of the links
    /// whose resolution changed.
    fn note_discovery(&mut self, discovery: &Discovery, report: &mut RoundReport) {
        let now = discovery.unresolved();
        report.unresolved = now
            .iter()
            .map(|(end, why)| format!("{end}: {why}"))
            .collect();
        let before = self.unresolved.replace(now.clone());
        for (end, why) in now {
            if before.get(end) != Some(why) {
                tracing::warn!(link = %end, reason = %why, "link unresolved: planned and routed around");
                self.publish(
                    EventKind::LinkUnresolved,
                    format!("links/{end}"),
                    format!("links/{end} cannot be programmed: {why}"),
                );
            }
        }
        for end in before.keys().filter(|end| !now.contains_key(*end)) {
            tracing::info!(link = %end, "link resolved");
            self.publish(
                EventKind::LinkResolved,
                format!("links/{end}"),
                format!("links/{end} has its next hops again"),
            );
        }
        self.metrics
            .unresolved_links
            .set(i64::try_from(now.len()).unwrap_or(i64::MAX));
    }

    /// The epoch this controller pushes under (tests set it).
    pub fn with_epoch(mut self, epoch: u64) -> Reconciler {
        self.epoch = epoch;
        self
    }

    /// `generation` under this controller's epoch.
    fn version(&self, generation: u64) -> Version {
        Version {
            epoch: self.epoch,
            generation,
        }
    }

    /// Tells `events` of pushes, plans applied or failed, agents lost and
    /// back.
    pub fn with_events(mut self, events: EventBus) -> Reconciler {
        self.events = Some(events);
        self
    }

    fn publish(&self, kind: EventKind, subject: String, message: String) {
        if let Some(events) = &self.events {
            events.publish(kind, subject, message, &[]);
        }
    }

    /// Shapes by this DSCP table (the collectors' `collector.store.classes`)
    /// rather than the default one.
    pub fn with_classes(mut self, classes: Vec<ClassRule>) -> Reconciler {
        self.classes = classes;
        self
    }

    /// Pushes plans without their rate limits when `enabled` is false
    /// (routers that shape their links themselves).
    pub fn with_rate_limits(mut self, enabled: bool) -> Reconciler {
        self.rate_limits = enabled;
        self
    }

    /// Counts into `metrics` (registered with the controller's /metrics).
    pub fn with_metrics(mut self, metrics: SouthboundMetrics) -> Reconciler {
        self.metrics = metrics;
        self
    }

    /// Reconciles every `interval`, and at once when a new plan is stored,
    /// until `stop` turns true.
    pub async fn run(mut self, mut plans: watch::Receiver<i64>, mut stop: watch::Receiver<bool>) {
        loop {
            match self.round().await {
                Ok(report) => {
                    self.metrics.rounds.inc();
                    self.metrics.plan_version.set(report.plan_version);
                    self.metrics
                        .routers_in_sync
                        .set(i64::try_from(report.in_sync.len()).unwrap_or(i64::MAX));
                    self.metrics
                        .routers_pending
                        .set(i64::try_from(report.unreachable.len()).unwrap_or(i64::MAX));
                    if !report.pushed.is_empty() || !report.unreachable.is_empty() {
                        tracing::info!(?report, driver = self.driver.name(), "reconciled");
                    }
                }
                Err(error) => {
                    self.metrics.round_errors.inc();
                    tracing::warn!(%error, "reconcile round failed");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(self.interval) => {}
                changed = plans.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                _ = stop.wait_for(|stop| *stop) => return,
            }
        }
    }

    /// One round (see the module documentation).
    pub async fn round(&mut self) -> Result<RoundReport, ReconcileError> {
        // Routers are observed even before the first plan, so that the
        // first plan is already made around the links they cannot carry.
        let plan = self.store.current_plan().await?;
        let topology = self.store.load_topology().await?.topology;
        let routers: Vec<String> = topology
            .nodes
            .iter()
            .filter(|node| node.role != NodeRole::Host)
            .map(|node| node.id.clone())
            .collect();
        let mut report = RoundReport {
            plan_version: plan.as_ref().map_or(0, |plan| plan.version),
            ..RoundReport::default()
        };
        // What every router holds now, skipping those in backoff.
        let now = Instant::now();
        let mut observed: BTreeMap<String, Observed> = BTreeMap::new();
        for router in &routers {
            if self
                .backoff
                .get(router)
                .is_some_and(|(until, _)| *until > now)
            {
                report.unreachable.push(router.clone());
                continue;
            }
            match self.driver.observe(router).await {
                Ok(state) => {
                    if self.lost.remove(router) {
                        self.publish(
                            EventKind::AgentBack,
                            format!("nodes/{router}"),
                            format!("agent of {router} answers again"),
                        );
                    }
                    observed.insert(router.clone(), state);
                }
                Err(error) => self.note_unreachable(router, &error, &mut report),
            }
        }
        // The next hops, from what the routers report (the last report of
        // one that did not answer now); unresolved links are left out of
        // what is rendered.
        for (router, held) in &observed {
            self.reports.insert(router.clone(), held.interfaces.clone());
        }
        let known: BTreeSet<&String> = routers.iter().collect();
        self.reports.retain(|router, _| known.contains(router));
        let discovery = super::discovery::discover(&topology, &self.reports);
        self.note_discovery(&discovery, &mut report);
        let topology = discovery.effective(&topology);
        let Some(plan) = plan else {
            return Ok(report);
        };
        let version = plan.version;
        self.store.ensure_desired_rows(version, &routers).await?;
        let (_, rows) = self
            .store
            .plan_content(version)
            .await?
            .ok_or(ReconcileError::PlanVanished(version))?;
        let planned: BTreeMap<String, serde_json::Value> = rows
            .into_iter()
            .map(|(node, json)| {
                let value = serde_json::from_str(&json).unwrap_or(serde_json::Value::Null);
                (node, value)
            })
            .collect();
        // A plan that cannot be made into kernel state (a prefix in the SID
        // block, too many pins for aiwan's tables) can never be applied: it
        // fails, and the plan before it comes back, as for a refusal.
        let desired = match render(&topology, &discovery, &planned, &self.classes) {
            Ok(mut desired) => {
                if !self.rate_limits {
                    for state in desired.values_mut() {
                        state.rate_limits.clear();
                    }
                }
                desired
            }
            Err(error) => {
                tracing::error!(plan = version, %error, "the plan cannot be made into router state");
                self.fail_and_roll_back(version, "cannot be made into router state")
                    .await?;
                return Err(ReconcileError::Render(error.to_string()));
            }
        };
        let generation = final_generation(version);
        let empty = NodeState::default();
        let stale: BTreeSet<String> = observed
            .iter()
            .filter(|(router, held)| {
                let want = desired.get(*router).unwrap_or(&empty);
                held.version != self.version(generation) || !same_state(&held.state, want)
            })
            .map(|(router, _)| router.clone())
            .collect();
        for router in observed.keys().filter(|r| !stale.contains(*r)) {
            report.in_sync.push(router.clone());
            self.store
                .set_push_status(version, router, "applied", now_ms())
                .await?;
        }
        if !stale.is_empty() {
            let steps = transition(&observed, &desired, &stale, &topology);
            report.steps = steps.len();
            let mut failed: BTreeSet<String> = BTreeSet::new();
            let last = report.steps.saturating_sub(1);
            for (index, step) in steps.into_iter().enumerate() {
                let step_generation = if index == last {
                    generation
                } else {
                    step_generation(version, index)
                };
                for (router, state) in step {
                    if failed.contains(&router) {
                        continue;
                    }
                    let version = self.version(step_generation);
                    match self.driver.apply(&router, version, &state).await {
                        Ok(_) => {}
                        Err(error) => {
                            failed.insert(router.clone());
                            match &error {
                                DriverError::Unreachable { .. } => {
                                    self.note_unreachable(&router, &error, &mut report)
                                }
                                DriverError::Refused { .. } => {
                                    tracing::error!(%error, "router refused its state");
                                    self.metrics.push(&router, "refused");
                                    report.refused.push(router.clone());
                                }
                                DriverError::Superseded { .. } => {
                                    tracing::error!(%error, "this controller has been taken over");
                                    self.metrics.push(&router, "superseded");
                                    report.superseded.push(router.clone());
                                }
                            }
                        }
                    }
                }
            }
            for router in stale.iter().filter(|r| !failed.contains(*r)) {
                self.publish(
                    EventKind::Push,
                    format!("nodes/{router}"),
                    format!("{router} runs plans/{version} ({} steps)", report.steps),
                );
                self.metrics.push(router, "applied");
                self.backoff.remove(router);
                report.pushed.push(router.clone());
                report.in_sync.push(router.clone());
                self.store
                    .set_push_status(version, router, "applied", now_ms())
                    .await?;
            }
            for router in report.refused.iter().chain(&report.superseded) {
                self.store
                    .set_push_status(version, router, "failed", now_ms())
                    .await?;
            }
        }
        for router in &report.unreachable {
            self.store
                .set_push_status(version, router, "pending", now_ms())
                .await?;
        }
        report.in_sync.sort();
        let status = if !report.refused.is_empty() || !report.superseded.is_empty() {
            PlanStatus::Failed
        } else if report.unreachable.is_empty() {
            PlanStatus::Applied
        } else {
            PlanStatus::Partial
        };
        // A refused plan fails and the one before comes back in one store
        // transaction; taken over is not refused: going back would be
        // refused as well.
        let changed = if report.refused.is_empty() {
            self.store.set_plan_status(version, status).await?
        } else {
            self.fail_and_roll_back(version, "was refused").await?
        };
        if changed {
            tracing::info!(plan = version, status = status.as_str(), "plan status");
            match status {
                PlanStatus::Applied => self.publish(
                    EventKind::PlanApplied,
                    format!("plans/{version}"),
                    format!("plans/{version} applied on every router"),
                ),
                PlanStatus::Failed => self.publish(
                    EventKind::PlanFailed,
                    format!("plans/{version}"),
                    if report.refused.is_empty() {
                        format!(
                            "plans/{version} not pushed: another controller has taken over {}",
                            report.superseded.join(", ")
                        )
                    } else {
                        format!("plans/{version} refused by {}", report.refused.join(", "))
                    },
                ),
                _ => {}
            }
        }
        Ok(report)
    }

    fn note_unreachable(&mut self, router: &str, error: &DriverError, report: &mut RoundReport) {
        let wait = self
            .backoff
            .get(router)
            .map_or(BACKOFF_MIN, |(_, last)| (*last * 2).min(BACKOFF_MAX));
        tracing::warn!(%error, retry_in = ?wait, "router not reachable");
        if self.lost.insert(router.to_string()) {
            self.publish(
                EventKind::AgentLost,
                format!("nodes/{router}"),
                format!("agent of {router} does not answer: {error}"),
            );
        }
        self.metrics.push(router, "unreachable");
        self.backoff
            .insert(router.to_string(), (Instant::now() + wait, wait));
        if !report.unreachable.iter().any(|r| r == router) {
            report.unreachable.push(router.to_string());
        }
    }

    /// Marks plan `failed` failed and, in the same store transaction, puts
    /// the newest earlier plan that was applied back as a new version, once:
    /// when that rollback fails too, it stays `failed` for an operator
    /// (rolling back again would only repeat it, a new plan each round).
    /// True when the plan's status changed (it was still the desired state).
    async fn fail_and_roll_back(&self, failed: i64, why: &str) -> Result<bool, ReconcileError> {
        let again = self.store.get_plan(failed).await?.is_some_and(|plan| {
            plan.trigger == PlanTrigger::AutomaticRollback
                || plan.reason.starts_with(AUTOMATIC_ROLLBACK)
        });
        let earlier = if again {
            None
        } else {
            self.store
                .list_plans(failed, 50)
                .await?
                .into_iter()
                .find(|plan| {
                    matches!(
                        plan.status,
                        PlanStatus::Applied | PlanStatus::Partial | PlanStatus::Superseded
                    )
                })
        };
        // The plan to restore, with its content.
        let restore = match earlier {
            Some(previous) => self
                .store
                .plan_content(previous.version)
                .await?
                .map(|content| (previous, content)),
            None => None,
        };
        let reason = format!("{AUTOMATIC_ROLLBACK}: plans/{failed} {why}");
        let figures = restore.as_ref().map(|(previous, _)| {
            serde_json::json!({
                "failed_plan": format!("plans/{failed}"),
                "restored_plan": format!("plans/{}", previous.version),
                "error": why,
            })
            .to_string()
        });
        let rollback = restore.as_ref().zip(figures.as_ref()).map(
            |((previous, (allocation, rows)), figures)| NewPlan {
                mlu: previous.mlu.unwrap_or(0.0),
                metrics_json: &previous.metrics_json,
                allocation_json: allocation,
                desired_state: rows,
                reason: &reason,
                trigger: PlanTrigger::AutomaticRollback,
                reason_json: figures,
                proposal: false,
            },
        );
        let (changed, record) = self
            .store
            .fail_plan(
                failed,
                rollback.as_ref(),
                "aiwan controller",
                "reconcile/RollbackPlan",
                now_ms(),
            )
            .await?;
        if !changed {
            return Ok(false);
        }
        match (record, &restore) {
            (Some(record), Some((previous, _))) => {
                tracing::warn!(
                    failed,
                    restored = previous.version,
                    new = record.version,
                    "rolled back"
                );
                self.metrics.rollbacks.inc();
            }
            _ if again => {
                tracing::error!(
                    plan = failed,
                    "the automatic rollback failed as well; it stays failed until an operator applies or rolls back a plan"
                );
                self.metrics.rollbacks_refused.inc();
            }
            _ => tracing::warn!(
                plan = failed,
                "plan failed and there is no earlier plan to go back to"
            ),
        }
        Ok(true)
    }
}

/// How an automatic rollback's reason starts.
pub const AUTOMATIC_ROLLBACK: &str = "automatic rollback";

/// The generation a router holds once it has exactly plan `version`'s
/// state. Each plan has 2^16 generations: its make-before-break steps take
/// the ones below, so an agent, which refuses a generation older than the
/// one it holds, sees them in order, and a newer plan is always newer.
pub fn final_generation(version: i64) -> u64 {
    (u64::try_from(version).unwrap_or(0) << 16) | 0xffff
}

fn step_generation(version: i64, step: usize) -> u64 {
    (u64::try_from(version).unwrap_or(0) << 16) | (step.min(0xfffe) as u64)
}

/// Why a round could not run.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("rendering the plan: {0}")]
    Render(String),
    #[error("plans/{0} disappeared during the round")]
    PlanVanished(i64),
}

/// Equal as the kernel sees it: the same objects, in any order.
fn same_state(a: &NodeState, b: &NodeState) -> bool {
    a.normalized() == b.normalized()
}

/// The states to push, step by step, to move the `stale` routers from what
/// they hold to what they should (module documentation, 1 to 3).
fn transition(
    observed: &BTreeMap<String, Observed>,
    desired: &BTreeMap<String, NodeState>,
    stale: &BTreeSet<String>,
    topology: &aiwan_planner::Topology,
) -> Vec<Vec<(String, NodeState)>> {
    let empty = NodeState::default();
    let old_routes = |router: &str| -> BTreeMap<(u32, IpNet), UcmpRoute> {
        observed
            .get(router)
            .map(|o| {
                o.state
                    .routes
                    .iter()
                    .map(|r| ((r.table, r.prefix), r.clone()))
                    .collect()
            })
            .unwrap_or_default()
    };
    let new_routes = |router: &str| -> BTreeMap<(u32, IpNet), UcmpRoute> {
        desired
            .get(router)
            .unwrap_or(&empty)
            .routes
            .iter()
            .map(|r| ((r.table, r.prefix), r.clone()))
            .collect()
    };
    let depth = depths(desired, topology);
    // The depths at which some router changes a route it already has:
    // only those need a step of their own (a route that is new goes in
    // at step 1, one that stays the same never moves).
    let mut changing: BTreeSet<usize> = BTreeSet::new();
    for router in stale {
        let old = old_routes(router);
        for (key, new) in new_routes(router) {
            let Some(held) = old.get(&key) else {
                continue;
            };
            let alone = |route: &UcmpRoute| {
                NodeState {
                    routes: vec![route.clone()],
                    ..NodeState::default()
                }
                .normalized()
            };
            if alone(held) != alone(&new)
                && let Some(&hops) = depth.get(router.as_str()).and_then(|d| d.get(&key))
            {
                changing.insert(hops);
            }
        }
    }
    // A state made of the old routes, with the new route wherever `take`
    // says so or where there was no old route, and the new local SIDs
    // beside the old ones (a SID takes no traffic until a first router's
    // policy lists it); the rest of the desired state (rules, policies,
    // limits) comes with the last step.
    let blend = |router: &str, take: &dyn Fn(&(u32, IpNet)) -> bool| -> NodeState {
        let mut routes = old_routes(router);
        for (key, route) in new_routes(router) {
            if take(&key) || !routes.contains_key(&key) {
                routes.insert(key, route);
            }
        }
        let held = observed.get(router).map(|o| &o.state).unwrap_or(&empty);
        let mut sids: BTreeMap<std::net::Ipv6Addr, crate::agent::LocalSid> = held
            .local_sids
            .iter()
            .map(|sid| (sid.sid, sid.clone()))
            .collect();
        for sid in &desired.get(router).unwrap_or(&empty).local_sids {
            sids.entry(sid.sid).or_insert_with(|| sid.clone());
        }
        NodeState {
            routes: routes.into_values().collect(),
            local_sids: sids.into_values().collect(),
            ..held.clone()
        }
    };
    let mut steps: Vec<Vec<(String, NodeState)>> = Vec::new();
    // 1: only the missing routes appear.
    steps.push(
        stale
            .iter()
            .map(|router| (router.clone(), blend(router, &|_| false)))
            .collect(),
    );
    // 2: nearest the destination first.
    for k in changing {
        steps.push(
            stale
                .iter()
                .map(|router| {
                    let mine = depth.get(router.as_str());
                    let take = |key: &(u32, IpNet)| {
                        mine.and_then(|d| d.get(key)).is_some_and(|&hops| hops <= k)
                    };
                    (router.clone(), blend(router, &take))
                })
                .collect(),
        );
    }
    // 3: exactly the desired state.
    steps.push(
        stale
            .iter()
            .map(|router| {
                (
                    router.clone(),
                    desired.get(router).cloned().unwrap_or_default(),
                )
            })
            .collect(),
    );
    // Steps that change nothing for anyone are dropped.
    let mut last: BTreeMap<String, NodeState> = stale
        .iter()
        .map(|router| {
            let held = observed
                .get(router)
                .map(|o| o.state.clone())
                .unwrap_or_default();
            (router.clone(), held)
        })
        .collect();
    let mut useful = Vec::new();
    let final_step = steps.last().cloned().unwrap_or_default();
    for step in steps {
        let changes = step
            .iter()
            .any(|(router, state)| last.get(router).is_none_or(|held| !same_state(held, state)));
        if changes {
            for (router, state) in &step {
                last.insert(router.clone(), state.clone());
            }
            useful.push(step);
        }
    }
    // Routers that hold the right routes under an old generation still
    // get one push: it is what records the generation.
    if useful.is_empty() {
        useful.push(final_step);
    }
    useful
}

/// Per router, per route key, how many hops the router is from where the
/// prefix leaves the desired routes (is delivered): 1 for a router whose
/// next hops hold no route for it, 1 + the deepest next hop otherwise.
/// Next hops are found through the topology's links by interface.
fn depths(
    desired: &BTreeMap<String, NodeState>,
    topology: &aiwan_planner::Topology,
) -> BTreeMap<String, BTreeMap<(u32, IpNet), usize>> {
    type Key = (u32, IpNet);
    // Lookups the walk makes for every route of every router, made maps.
    let neighbours: HashMap<(&str, &str), &str> = topology
        .links
        .iter()
        .map(|link| {
            let end = (link.src.as_str(), link.src_interface.as_str());
            (end, link.dst.as_str())
        })
        .collect();
    let routes: HashMap<&str, HashMap<Key, &UcmpRoute>> = desired
        .iter()
        .map(|(router, state)| {
            let by_key = state
                .routes
                .iter()
                .map(|route| ((route.table, route.prefix), route))
                .collect();
            (router.as_str(), by_key)
        })
        .collect();
    struct Walk<'w> {
        neighbours: HashMap<(&'w str, &'w str), &'w str>,
        routes: HashMap<&'w str, HashMap<Key, &'w UcmpRoute>>,
        memo: HashMap<(&'w str, Key), usize>,
    }
    impl<'w> Walk<'w> {
        fn depth(&mut self, router: &'w str, key: Key, budget: usize) -> usize {
            if let Some(&known) = self.memo.get(&(router, key)) {
                return known;
            }
            let Some(route) = self.routes.get(router).and_then(|r| r.get(&key)).copied() else {
                return 0;
            };
            if budget == 0 {
                return 1; // a loop in the desired routes: stop counting
            }
            let mut deepest = 0;
            for hop in &route.next_hops {
                if let Some(&next) = self.neighbours.get(&(router, hop.interface.as_str())) {
                    deepest = deepest.max(self.depth(next, key, budget - 1));
                }
            }
            let depth = deepest + 1;
            self.memo.insert((router, key), depth);
            depth
        }
    }
    let mut walk = Walk {
        neighbours,
        routes,
        memo: HashMap::new(),
    };
    let limit = desired.len() + 1;
    let mut out: BTreeMap<String, BTreeMap<Key, usize>> = BTreeMap::new();
    for (router, state) in desired {
        for route in &state.routes {
            let key = (route.table, route.prefix);
            let depth = walk.depth(router, key, limit);
            out.entry(router.clone()).or_default().insert(key, depth);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::southbound::fixtures::diamond;
    use crate::southbound::render::render;

    /// Every router's state for `planned` on `topology`.
    fn states_of(
        topology: &aiwan_planner::Topology,
        planned: &BTreeMap<String, serde_json::Value>,
    ) -> BTreeMap<String, NodeState> {
        let discovery = crate::southbound::fixtures::lab_discovery(topology);
        render(
            topology,
            &discovery,
            planned,
            &aiwan_collectors::store::default_class_rules(),
        )
        .expect("renders")
    }

    /// What the routers hold when they run `states`.
    fn held(states: &BTreeMap<String, NodeState>) -> BTreeMap<String, Observed> {
        states
            .iter()
            .map(|(router, state)| {
                let state = state.clone();
                (
                    router.clone(),
                    Observed {
                        version: Version {
                            epoch: 1,
                            generation: 1,
                        },
                        state,
                        interfaces: Vec::new(),
                    },
                )
            })
            .collect()
    }

    #[test]
    fn routers_nearest_the_destination_switch_first() {
        let topology = diamond();
        let old = states_of(&topology, &BTreeMap::new());
        let planned = BTreeMap::from([(
            "r1".to_string(),
            serde_json::json!({"routes": [{"destination": "r4", "next_hops": [
                {"next_hop": "r2", "weight": 0.7}, {"next_hop": "r3", "weight": 0.3}]}]}),
        )]);
        let new = states_of(&topology, &planned);
        let depth = depths(&new, &topology);
        let key: (u32, IpNet) = (
            crate::agent::MAIN_TABLE,
            "10.4.0.0/24".parse().expect("prefix"),
        );
        assert_eq!(depth["r2"][&key], 1);
        assert_eq!(depth["r1"][&key], 2);

        // From nothing at all (a fresh lab): first every route appears.
        let observed: BTreeMap<String, Observed> = BTreeMap::new();
        let stale: BTreeSet<String> = new.keys().cloned().collect();
        let steps = transition(&observed, &new, &stale, &topology);
        let first: BTreeMap<&str, &NodeState> =
            steps[0].iter().map(|(r, s)| (r.as_str(), s)).collect();
        assert!(same_state(first["r1"], &new["r1"]));
        assert!(same_state(
            &steps.last().expect("steps")[0].1,
            &new[&steps.last().expect("steps")[0].0]
        ));

        // From the underlay to the plan: only r1 changes, and in one step.
        let observed = held(&old);
        let stale: BTreeSet<String> = ["r1".to_string()].into();
        let steps = transition(&observed, &new, &stale, &topology);
        assert_eq!(steps.len(), 1, "{steps:?}");
        assert!(same_state(&steps[0][0].1, &new["r1"]));
    }

    #[test]
    fn a_pinned_path_s_sids_come_before_its_first_router_steers_onto_it() {
        let topology = diamond();
        let old = states_of(&topology, &BTreeMap::new());
        let planned = BTreeMap::from([(
            "r1".to_string(),
            serde_json::json!({"routes": [], "pins": [{
                "job": "pinned", "path": ["r1", "r3", "r4"], "prefixes": ["fd00:4::/64"],
                "ip_protocol": null, "destination_ports": null,
            }]}),
        )]);
        let new = states_of(&topology, &planned);
        let observed = held(&old);
        let stale: BTreeSet<String> = new
            .iter()
            .filter(|(r, s)| !same_state(&old[r.as_str()], s))
            .map(|(r, _)| r.clone())
            .collect();
        assert_eq!(stale, ["r1", "r3", "r4"].map(String::from).into());
        let steps = transition(&observed, &new, &stale, &topology);
        assert_eq!(steps.len(), 2, "{steps:#?}");
        let first: BTreeMap<&str, &NodeState> =
            steps[0].iter().map(|(r, s)| (r.as_str(), s)).collect();
        // Step 1: r3's End and r4's End.DT6 SIDs, and the routes to them,
        // but no rule or policy at r1 yet.
        assert_eq!(first["r3"].local_sids, new["r3"].local_sids);
        assert_eq!(first["r4"].local_sids, new["r4"].local_sids);
        assert!(first["r1"].flow_rules.is_empty() && first["r1"].srv6_policies.is_empty());
        assert!(same_state(
            first["r1"],
            &NodeState {
                flow_rules: Vec::new(),
                srv6_policies: Vec::new(),
                ..new["r1"].clone()
            }
        ));
        // Step 2: exactly the plan.
        for (router, state) in &steps[1] {
            assert!(same_state(state, &new[router]), "{router}");
        }
    }

    #[test]
    fn a_large_network_renders_and_transitions() {
        let topology = crate::southbound::fixtures::ring(300);
        let started = std::time::Instant::now();
        let states = states_of(&topology, &BTreeMap::new());
        let rendered = started.elapsed();
        assert_eq!(states.len(), 300);
        for (router, state) in &states {
            // Each other router's prefix and its two loopbacks.
            assert_eq!(state.routes.len(), 3 * 299, "{router}");
        }
        let stale: BTreeSet<String> = states.keys().cloned().collect();
        let steps = transition(&BTreeMap::new(), &states, &stale, &topology);
        eprintln!(
            "300 routers: rendered in {rendered:?}, transition in {:?}",
            started.elapsed() - rendered
        );
        let last = steps.last().expect("steps");
        for (router, state) in last {
            assert!(same_state(state, &states[router]), "{router}");
        }
    }
}
