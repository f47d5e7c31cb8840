//! The closed loop: telemetry drives the plans.
//!
//! Every telemetry interval (the store's 10 s tier by default, its 1 s tier
//! for shorter intervals) the loop
//!
//! 1. turns the interval's flow records into the node-to-node matrix per
//!    class ([`demand`]) and compares it, routed over the current plan,
//!    with the links' interface counters (per link: how far flows and
//!    counters agree, against the sampling error);
//! 2. forecasts the next interval per class with the planner's forecaster
//!    (with a band), adds the declared AI jobs as known traffic, and
//!    predicts each link's utilisation under the current plan, with the
//!    chance it exceeds the congestion threshold ([`forwarding`]); load the
//!    counters see and the flows do not explain (routers that export no
//!    flows) is carried into the prediction as it is;
//! 3. computes a candidate plan for what may come next by the method
//!    `aiwan eval` scores ([`predict::PlanningMethod`]: by default the
//!    recent intervals recentred on the level now, one split per class
//!    best on average over them), asks the [`policy`] whether to re-plan,
//!    limits the routes
//!    the re-plan changes ([`churn`]), and stores it: as the desired state
//!    (`auto`) or as a proposal (`recommend`), with its trigger and the
//!    figures behind it, in one transaction with its audit row.
//!
//! What it measures and predicts is published for the API
//! ([`LoopView`]), counted in `/metrics`, and told on the event bus.

pub mod bench;
pub mod churn;
pub mod demand;
pub mod forwarding;
pub mod policy;
pub mod predict;
mod transfers;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use aiwan_collectors::listener::StatsBoard;
use aiwan_collectors::pipeline::{SharedStore, read_store};
use aiwan_collectors::store::{Tier, TimeWindow};
use aiwan_planner::Topology;
use aiwan_planner::classes::Class;
use aiwan_planner::network::{Network, TrafficMatrix};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use tokio::sync::watch;

pub use policy::LoopMode;

use crate::config::ClosedLoopConfig;
use crate::events::{EventBus, EventKind};
use crate::model::{NewPlan, PlanTrigger, now_ms};
use crate::store::Store;
use demand::{DemandModel, MeasuredInterval};
use forwarding::Forwarding;
use policy::{Decision, Observation, PolicyConfig, PolicyState};

/// Intervals of measured matrices the loop keeps for the API.
pub const KEPT_INTERVALS: usize = 3600;
/// A re-plan's effect is measured in an interval whose total demand is
/// within this share of the interval before it.
pub const COMPARABLE_DEMAND: f64 = 0.25;
/// Re-plans remembered for the API and the demo's summary.
pub const KEPT_REPLANS: usize = 256;
/// Intervals measured before the loop may re-plan: the first ones after a
/// start can be partial (collectors and exporters were not yet in step).
pub const WARMUP_INTERVALS: usize = 3;
/// How often the loop looks for a newly closed interval.
const POLL: Duration = Duration::from_millis(100);
/// Flows and counters of a link agree within this many standard deviations
/// of the sampling error...
const AGREEMENT_SIGMAS: f64 = 3.0;
/// ...plus this share of the link's capacity (flow buckets and counter
/// samples are not cut at the same instants).
const AGREEMENT_FLOOR: f64 = 0.01;

/// One directed link as the loop last saw and predicted it.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkView {
    /// `node:interface`.
    pub link: String,
    pub capacity_bps: f64,
    pub counter_bps: Option<f64>,
    pub estimated_bps: f64,
    pub disagreement_bps: f64,
    pub tolerance_bps: f64,
    pub agrees: bool,
    /// Between two WAN routers: the flows can explain its load.
    pub covered: bool,
    pub predicted_bps: f64,
    pub predicted_low_bps: f64,
    pub predicted_high_bps: f64,
    pub predicted_utilization: f64,
    pub congestion_probability: f64,
    pub dominant_class: Class,
}

/// A re-plan the loop made.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplanRecord {
    pub version: i64,
    pub trigger: PlanTrigger,
    pub proposal: bool,
    pub at_ms: i64,
    pub predicted_mlu_before: f64,
    pub predicted_mlu_after: f64,
    /// Measured in the last interval before it; `None` when nothing was
    /// measured there (no flows, no counters: nothing to compare with).
    pub measured_mlu_before: Option<f64>,
    /// Measured in the first whole interval after it was applied whose
    /// traffic is comparable with the interval before it (see
    /// [`COMPARABLE_DEMAND`]); `None` until then.
    pub measured_mlu_after: Option<f64>,
    /// The flows' demand (bit/s, all classes) before it: the mean of the
    /// last two intervals.
    pub demand_bps_before: f64,
    /// Intervals after it was applied whose traffic differed too much to
    /// compare (a surge, a job ending).
    pub intervals_not_comparable: u32,
    pub applied_ms: Option<i64>,
    /// From the end of the first interval that showed the congestion to
    /// the routes applied.
    pub latency_ms: Option<i64>,
    pub routes_changed: usize,
    pub routes_wanted: usize,
}

/// What the loop knows, for the API and the demo.
#[derive(Debug, Clone, Default)]
pub struct LoopView {
    pub mode: LoopMode,
    pub interval_ms: i64,
    /// Why the loop is not measuring, when it is not.
    pub idle_reason: Option<String>,
    /// Node ids, indexing the matrices.
    pub nodes: Vec<String>,
    pub intervals: VecDeque<MeasuredInterval>,
    pub links: Vec<LinkView>,
    pub last_interval_start_ms: Option<i64>,
    pub last_decision: String,
    pub predicted_mlu: f64,
    pub measured_mlu: f64,
    pub replans: Vec<ReplanRecord>,
    pub replan_count: u64,
    pub last_latency_ms: Option<i64>,
}

/// Shared handle on the view.
pub type SharedView = Arc<RwLock<LoopView>>;

/// The loop's Prometheus metrics.
#[derive(Clone)]
pub struct LoopMetrics {
    pub replans: Family<Vec<(String, String)>, Counter>,
    pub intervals: Counter,
    pub latency: Histogram,
    pub predicted_mlu: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub measured_mlu: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub links_disagreeing: Gauge,
}

impl Default for LoopMetrics {
    fn default() -> LoopMetrics {
        LoopMetrics {
            replans: Family::default(),
            intervals: Counter::default(),
            latency: Histogram::new([0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0]),
            predicted_mlu: Gauge::default(),
            measured_mlu: Gauge::default(),
            links_disagreeing: Gauge::default(),
        }
    }
}

impl LoopMetrics {
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "aiwan_closed_loop_replans",
            "Plans the closed loop made (applied or proposed), by trigger and mode",
            self.replans.clone(),
        );
        registry.register(
            "aiwan_closed_loop_intervals",
            "Telemetry intervals the closed loop measured",
            self.intervals.clone(),
        );
        registry.register_with_unit(
            "aiwan_closed_loop_latency",
            "From the end of the first telemetry interval showing congestion to the new routes applied",
            prometheus_client::registry::Unit::Seconds,
            self.latency.clone(),
        );
        registry.register(
            "aiwan_closed_loop_predicted_mlu",
            "Predicted maximum link utilisation of the next interval under the current plan",
            self.predicted_mlu.clone(),
        );
        registry.register(
            "aiwan_closed_loop_measured_mlu",
            "Maximum link utilisation measured in the last interval",
            self.measured_mlu.clone(),
        );
        registry.register(
            "aiwan_closed_loop_links_disagreeing",
            "Links whose interface counters and flow estimate differ by more than the sampling error",
            self.links_disagreeing.clone(),
        );
    }
}

/// What the loop needs from the rest of the controller.
pub struct LoopContext {
    pub db: Store,
    pub telemetry: SharedStore,
    /// The collectors' per-exporter counters (sampling rates), when
    /// collectors run.
    pub board: Option<Arc<StatsBoard>>,
    pub events: EventBus,
    pub view: SharedView,
    pub metrics: LoopMetrics,
    /// Told of every plan the loop stores (the reconcile loop listens).
    pub plan_version: watch::Sender<i64>,
    /// How volume jobs are scheduled against their deadlines, and how
    /// tenants share them.
    pub schedule: crate::config::ScheduleConfig,
    pub tenants: crate::config::TenantsConfig,
    /// The links the reconcile loop cannot program: plans go around them.
    pub unresolved_links: crate::southbound::discovery::UnresolvedLinks,
}

/// Per link: whether congestion was predicted or seen (for events).
#[derive(Debug, Clone, Copy, Default)]
struct LinkAlarm {
    predicted: bool,
    seen: bool,
}

/// The loop's running state.
pub struct ClosedLoop {
    config: ClosedLoopConfig,
    cx: LoopContext,
    policy: PolicyConfig,
    state: PolicyState,
    tier: Tier,
    interval_ms: i64,
    /// The topology revision and what was built from it: the demand model,
    /// the links' names and whether flows cover each.
    model: Option<(i64, DemandModel, Vec<String>, Vec<bool>)>,
    /// Total matrices per class, oldest first, for the forecaster.
    history: VecDeque<MeasuredInterval>,
    /// Per link, the counter rate of each interval processed.
    next_start: Option<i64>,
    forwarding: Option<(i64, Forwarding)>,
    /// The current plan's collective placements, kept by the next one.
    placements: crate::collective::Placements,
    alarms: HashMap<usize, LinkAlarm>,
    /// The open congestion episode: when it was first shown (end of that
    /// interval).
    episode_start_ms: Option<i64>,
    /// The last measured interval's demand, bit/s over all classes.
    last_demand_bps: f64,
    events: tokio::sync::broadcast::Receiver<crate::events::Event>,
    /// Candidate paths of the current topology, reused by every re-plan,
    /// and the last plan's splits, where the next one's fast solver starts
    /// (a warm start).
    paths: aiwan_planner::classes::PathCache,
}

impl ClosedLoop {
    pub fn new(config: &ClosedLoopConfig, cx: LoopContext) -> ClosedLoop {
        let interval_ms = i64::try_from(config.interval_ms).unwrap_or(10_000);
        let tier = if interval_ms % 10_000 == 0 && interval_ms >= 10_000 {
            Tier::TenSeconds
        } else {
            Tier::OneSecond
        };
        {
            let mut view = cx.view.write().unwrap_or_else(PoisonError::into_inner);
            view.mode = config.mode;
            view.interval_ms = interval_ms;
        }
        let (_, events) = cx.events.subscribe();
        ClosedLoop {
            policy: PolicyConfig {
                congestion_threshold: config.congestion_threshold,
                clear_threshold: config.clear_threshold,
                congestion_probability: config.congestion_probability,
                improvement_margin: config.improvement_margin,
                improvement_floor: config.improvement_floor,
                min_interval_ms: i64::try_from(config.min_replan_interval_ms).unwrap_or(i64::MAX),
            },
            config: config.clone(),
            cx,
            state: PolicyState::default(),
            tier,
            interval_ms,
            model: None,
            history: VecDeque::new(),
            next_start: None,
            forwarding: None,
            placements: crate::collective::Placements::new(),
            alarms: HashMap::new(),
            episode_start_ms: None,
            last_demand_bps: 0.0,
            events,
            paths: config.path_cache(),
        }
    }

    /// Runs until `stop` turns true.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait_for(|stopped| *stopped) => return,
            }
            self.watch_applied();
            if let Err(error) = self.step().await {
                tracing::warn!(%error, "closed loop: interval skipped");
                self.set_idle(Some(error));
            }
        }
    }

    fn set_idle(&self, reason: Option<String>) {
        let mut view = self.cx.view.write().unwrap_or_else(PoisonError::into_inner);
        view.idle_reason = reason;
    }

    /// Takes note of plans the reconcile loop finished applying: the loop
    /// latency of a congestion re-plan ends there.
    fn watch_applied(&mut self) {
        use tokio::sync::broadcast::error::TryRecvError;
        loop {
            let event = match self.events.try_recv() {
                Ok(event) => event,
                Err(TryRecvError::Lagged(_)) => continue,
                Err(TryRecvError::Empty | TryRecvError::Closed) => return,
            };
            if event.kind != EventKind::PlanApplied {
                continue;
            }
            let Some(version) = event
                .subject
                .strip_prefix("plans/")
                .and_then(|v| v.parse::<i64>().ok())
            else {
                continue;
            };
            let mut view = self.cx.view.write().unwrap_or_else(PoisonError::into_inner);
            let Some(record) = view
                .replans
                .iter_mut()
                .find(|r| r.version == version && r.applied_ms.is_none())
            else {
                continue;
            };
            record.applied_ms = Some(event.at_ms);
            if let Some(start) = record.latency_ms.take() {
                // `latency_ms` held the episode start until now.
                let latency = event.at_ms.saturating_sub(start).max(0);
                record.latency_ms = Some(latency);
                view.last_latency_ms = Some(latency);
                self.cx.metrics.latency.observe(latency as f64 / 1000.0);
                tracing::info!(
                    plan = version,
                    latency_ms = latency,
                    "closed loop: congestion first seen to routes applied"
                );
            }
        }
    }

    async fn step(&mut self) -> Result<(), String> {
        let stored = self
            .cx
            .db
            .load_topology()
            .await
            .map_err(|e| format!("cannot read the topology: {e}"))?;
        if stored.topology.nodes.is_empty() {
            return Err("no topology imported yet".into());
        }
        if self.model.as_ref().map(|(revision, ..)| *revision) != Some(stored.revision) {
            let model = DemandModel::new(&stored.topology, &self.config.exporters)
                .map_err(|e| format!("closed_loop.{e}"))?;
            let links = link_names(&stored.topology);
            let covered = covered_links(&stored.topology);
            {
                let mut view = self.cx.view.write().unwrap_or_else(PoisonError::into_inner);
                view.nodes = model.network().nodes.clone();
                view.intervals.clear();
            }
            self.model = Some((stored.revision, model, links, covered));
            self.history.clear();
            self.forwarding = None;
            self.alarms.clear();
        }
        let tier = self.tier;
        let closed = read_store(&self.cx.telemetry, move |store| {
            store.closed_before_ms(tier)
        })
        .await;
        let interval = self.interval_ms;
        let last_closed_start = closed.div_euclid(interval) * interval - interval;
        let first = match self.next_start {
            Some(next) => next,
            // Start with as much history as the store still has.
            None => {
                last_closed_start
                    - interval * i64::try_from(self.config.history.saturating_sub(1)).unwrap_or(0)
            }
        };
        if first > last_closed_start {
            return Ok(());
        }
        let starts: Vec<i64> = (0..)
            .map(|i| first + i * interval)
            .take_while(|start| *start <= last_closed_start)
            .collect();
        self.next_start = Some(last_closed_start + interval);
        let window = TimeWindow::new(first, last_closed_start + interval);
        let cells = read_store(&self.cx.telemetry, move |store| {
            store.exporter_matrix(window, Some(tier))
        })
        .await
        .map_err(|e| format!("telemetry store: {e}"))?;
        let Some((_, model, ..)) = self.model.as_mut() else {
            return Ok(());
        };
        let measured = model.intervals(&cells, &starts, interval);
        for interval in measured {
            self.cx.metrics.intervals.inc();
            self.history.push_back(interval.clone());
            while self.history.len() > self.config.history {
                self.history.pop_front();
            }
            let mut view = self.cx.view.write().unwrap_or_else(PoisonError::into_inner);
            view.intervals.push_back(interval);
            while view.intervals.len() > KEPT_INTERVALS {
                view.intervals.pop_front();
            }
        }
        self.set_idle(None);
        if let Some((_, model, ..)) = self.model.as_ref()
            && let Err(error) = transfers::track(
                &self.cx,
                model,
                &stored.topology,
                window,
                &self.cx.schedule,
                &self.cx.tenants,
            )
            .await
        {
            // The plan still follows the last schedule stored.
            tracing::warn!(%error, "closed loop: volume jobs not scheduled this interval");
        }
        self.evaluate(&stored.topology).await
    }

    /// Counter rates per link in the interval starting at `start`: the
    /// mean of the samples that end inside it.
    async fn counter_rates(&self, topology: &Topology, start: i64) -> Vec<Option<f64>> {
        let links: Vec<(String, String)> = topology
            .links
            .iter()
            .filter(|l| l.admin_up)
            .map(|l| (l.src.clone(), l.src_interface.clone()))
            .collect();
        let end = start + self.interval_ms;
        read_store(&self.cx.telemetry, move |store| {
            links
                .iter()
                .map(|(node, interface)| {
                    let index = store.interface_index(node, interface)?;
                    // A sample at time t covers the interval before t.
                    let window = TimeWindow::new(start + 1, end + 1);
                    let points = store.link_counter_series(node, index, window).ok()?;
                    let total_ms: i64 = points.iter().map(|p| p.interval_ms).sum();
                    if total_ms <= 0 {
                        return None;
                    }
                    let bits: f64 = points
                        .iter()
                        .map(|p| p.out_bps * p.interval_ms as f64)
                        .sum();
                    Some(bits / total_ms as f64)
                })
                .collect()
        })
        .await
    }

    /// The highest sampling rate among the exporters (1 when unsampled or
    /// unknown), for the agreement tolerance.
    fn sampling_rate(&self) -> f64 {
        let Some(board) = &self.cx.board else {
            return 1.0;
        };
        board
            .exporters()
            .iter()
            .filter(|e| e.counters.packets > 0)
            .map(|e| e.counters.packets_scaled as f64 / e.counters.packets as f64)
            .fold(1.0, f64::max)
    }

    async fn evaluate(&mut self, topology: &Topology) -> Result<(), String> {
        let Some(latest) = self.history.back().cloned() else {
            return Ok(());
        };
        let now = now_ms();
        let jobs = self
            .cx
            .db
            .uncancelled_jobs()
            .await
            .map_err(|e| format!("cannot read the jobs: {e}"))?;
        let current = self
            .cx
            .db
            .current_plan()
            .await
            .map_err(|e| format!("cannot read the current plan: {e}"))?;
        let current_version = current.as_ref().map_or(0, |p| p.version);
        let counters = self.counter_rates(topology, latest.start_ms).await;
        let sampling = self.sampling_rate();
        let Some((_, model, link_names, covered)) = self.model.as_ref() else {
            return Ok(());
        };
        let network = model.network().clone();
        let link_names = link_names.clone();
        let covered = covered.clone();
        if self.forwarding.as_ref().map(|(v, _)| *v) != Some(current_version) {
            let forwarding = match current_version {
                0 => {
                    self.placements.clear();
                    Forwarding::underlay_only()
                }
                version => {
                    let (_, rows) = self
                        .cx
                        .db
                        .plan_content(version)
                        .await
                        .map_err(|e| format!("cannot read plans/{version}: {e}"))?
                        .unwrap_or_default();
                    let desired = parse_desired(&rows);
                    self.placements = crate::collective::placements_in(&desired);
                    Forwarding::from_desired(&network, &desired)
                }
            };
            self.forwarding = Some((current_version, forwarding));
        }

        let Some((_, forwarding)) = self.forwarding.take() else {
            return Ok(());
        };
        let history: Vec<MeasuredInterval> = self.history.iter().cloned().collect();
        let mut planned_on = topology.clone();
        self.cx.unresolved_links.plan_around(&mut planned_on);
        let work = predict::Work {
            topology: planned_on,
            network: network.clone(),
            jobs: jobs.clone(),
            now_ms: now,
            history,
            counters,
            sampling,
            covered,
            link_names: link_names.clone(),
            congestion_threshold: self.config.congestion_threshold,
            method: self.config.method,
            window: self.config.window,
            plan: self.config.mode != LoopMode::Off && self.history.len() >= WARMUP_INTERVALS,
            placements: self.placements.clone(),
        };
        let paths = std::mem::take(&mut self.paths);
        let (outcome, forwarding, paths) = tokio::task::spawn_blocking(move || {
            let mut forwarding = forwarding;
            let mut paths = paths;
            let outcome = predict::run(&work, &mut forwarding, &mut paths);
            (outcome, forwarding, paths)
        })
        .await
        .map_err(|e| format!("planner task: {e}"))?;
        self.forwarding = Some((current_version, forwarding));
        self.paths = paths;
        let predict::Outcome {
            prediction,
            candidate,
        } = outcome;
        let predict::Prediction {
            total_mean,
            links,
            unexplained,
            inferred,
            measured_mlu,
            current_mlu,
            hottest,
            max_probability,
        } = prediction;
        let inferred_bps = inferred.total();
        let threshold = self.config.congestion_threshold;
        let disagreeing = links.iter().filter(|l| !l.agrees).count();
        if disagreeing > 0 {
            tracing::debug!(
                links = ?links.iter().filter(|l| !l.agrees).map(|l| &l.link).collect::<Vec<_>>(),
                "closed loop: interface counters and flows disagree beyond the sampling error"
            );
        }
        self.cx.metrics.predicted_mlu.set(current_mlu);
        self.cx.metrics.measured_mlu.set(measured_mlu);
        self.cx
            .metrics
            .links_disagreeing
            .set(i64::try_from(disagreeing).unwrap_or(i64::MAX));
        self.alarm_events(&links);
        let interval_end = latest.start_ms + latest.duration_ms;
        let congested_now = measured_mlu >= threshold || current_mlu >= threshold;
        if congested_now && self.episode_start_ms.is_none() {
            self.episode_start_ms = Some(interval_end);
        } else if !congested_now
            && measured_mlu < self.config.clear_threshold
            && current_mlu < self.config.clear_threshold
        {
            self.episode_start_ms = None;
        }
        // The flows' demand over the last two intervals: an exporter that
        // reports every two seconds fills every other interval.
        let recent: Vec<f64> = self
            .history
            .iter()
            .rev()
            .take(2)
            .map(|i| i.classes.iter().map(TrafficMatrix::total).sum::<f64>())
            .collect();
        let demand_bps = recent.iter().sum::<f64>() / recent.len().max(1) as f64;
        self.fill_measured_after(latest.start_ms, measured_mlu, demand_bps);
        self.last_demand_bps = demand_bps;

        let mut decision = if self.config.mode == LoopMode::Off {
            "mode off: measuring and forecasting only".to_string()
        } else {
            format!(
                "warming up: {} of {WARMUP_INTERVALS} intervals measured",
                self.history.len()
            )
        };
        if let Some(candidate) = candidate {
            let (candidate, candidate_mlu) = candidate.map_err(|e| e.to_string())?;
            let seen = Observation {
                now_ms: now,
                current_mlu,
                measured_mlu,
                max_probability,
                candidate_mlu,
            };
            match policy::decide(&self.policy, &mut self.state, &seen) {
                Decision::Hold(why) => decision = why,
                Decision::Replan(trigger, why) => {
                    decision = self
                        .replan(ReplanInput {
                            trigger,
                            why,
                            candidate,
                            network: &network,
                            forecast: &total_mean,
                            unexplained: &unexplained,
                            inferred_bps,
                            current_version,
                            current_mlu,
                            measured_mlu,
                            max_probability,
                            hottest_link: link_names.get(hottest).cloned().unwrap_or_default(),
                            interval_start_ms: latest.start_ms,
                        })
                        .await?;
                }
            }
        }
        tracing::debug!(
            interval_start_ms = latest.start_ms,
            measured_mlu,
            predicted_mlu = current_mlu,
            inferred_bps,
            hottest_link = links.get(hottest).map_or("", |l| l.link.as_str()),
            hottest_counter_bps = links.get(hottest).and_then(|l| l.counter_bps),
            hottest_flows_bps = links.get(hottest).map(|l| l.estimated_bps),
            hottest_unexplained_bps = unexplained.get(hottest).copied(),
            %decision,
            "closed loop: interval evaluated"
        );
        let mut view = self.cx.view.write().unwrap_or_else(PoisonError::into_inner);
        view.links = links;
        view.last_interval_start_ms = Some(latest.start_ms);
        view.predicted_mlu = current_mlu;
        view.measured_mlu = measured_mlu;
        view.last_decision = decision;
        Ok(())
    }

    /// Sets `measured_mlu_after` of re-plans applied before `start`, when
    /// the interval's demand is comparable with the one before the
    /// re-plan: an MLU measured under other traffic says nothing of what
    /// the re-plan did.
    fn fill_measured_after(&self, start: i64, measured_mlu: f64, demand_bps: f64) {
        let mut view = self.cx.view.write().unwrap_or_else(PoisonError::into_inner);
        for record in view.replans.iter_mut() {
            if record.measured_mlu_after.is_none()
                && record.applied_ms.is_some_and(|applied| applied <= start)
            {
                // Nothing measured before the re-plan: no interval after
                // it can show its effect.
                let comparable = record.demand_bps_before > 0.0
                    && (demand_bps / record.demand_bps_before - 1.0).abs() <= COMPARABLE_DEMAND;
                if comparable {
                    record.measured_mlu_after = Some(measured_mlu);
                } else {
                    record.intervals_not_comparable += 1;
                }
            }
        }
    }

    /// Congestion predicted, seen and cleared, once per change per link.
    fn alarm_events(&mut self, links: &[LinkView]) {
        let threshold = self.config.congestion_threshold;
        let clear = self.config.clear_threshold;
        for (e, link) in links.iter().enumerate() {
            let alarm = self.alarms.entry(e).or_default();
            let utilization = link.counter_bps.unwrap_or(link.estimated_bps) / link.capacity_bps;
            let subject = format!("links/{}", link.link);
            let predicted = link.predicted_utilization >= threshold
                || link.congestion_probability >= self.config.congestion_probability;
            if predicted && !alarm.predicted {
                self.cx.events.publish(
                    EventKind::CongestionPredicted,
                    &subject,
                    format!(
                        "congestion predicted: {:.0}% next interval (chance of exceeding {:.0}%: {:.2})",
                        link.predicted_utilization * 100.0,
                        threshold * 100.0,
                        link.congestion_probability
                    ),
                    &[
                        ("utilization", link.predicted_utilization),
                        ("probability", link.congestion_probability),
                    ],
                );
                alarm.predicted = true;
            }
            if utilization >= threshold && !alarm.seen {
                self.cx.events.publish(
                    EventKind::CongestionSeen,
                    &subject,
                    format!("congestion seen: {:.0}% measured", utilization * 100.0),
                    &[("utilization", utilization)],
                );
                alarm.seen = true;
            }
            if (alarm.predicted || alarm.seen)
                && utilization < clear
                && link.predicted_utilization < clear
                && link.congestion_probability < self.config.congestion_probability
            {
                self.cx.events.publish(
                    EventKind::CongestionCleared,
                    &subject,
                    format!(
                        "congestion cleared: {:.0}% measured, {:.0}% predicted",
                        utilization * 100.0,
                        link.predicted_utilization * 100.0
                    ),
                    &[("utilization", utilization)],
                );
                *alarm = LinkAlarm::default();
            }
        }
    }

    /// Stores a re-plan (churn-limited) as the desired state or as a
    /// proposal, and tells everyone.
    async fn replan(&mut self, input: ReplanInput<'_>) -> Result<String, String> {
        let ReplanInput {
            trigger,
            why,
            candidate,
            network,
            forecast,
            unexplained,
            inferred_bps,
            current_version,
            current_mlu,
            measured_mlu,
            max_probability,
            hottest_link,
            interval_start_ms,
        } = input;
        let now = now_ms();
        let old = match current_version {
            0 => BTreeMap::new(),
            version => {
                let (_, rows) = self
                    .cx
                    .db
                    .plan_content(version)
                    .await
                    .map_err(|e| format!("cannot read plans/{version}: {e}"))?
                    .unwrap_or_default();
                parse_desired(&rows)
            }
        };
        let n = network.nodes.len();
        let towards = |destination: &str| -> f64 {
            network
                .nodes
                .iter()
                .position(|id| id == destination)
                .map(|d| (0..n).map(|s| forecast.get(s, d)).sum())
                .unwrap_or(0.0)
        };
        let limited = churn::limit_churn(
            &old,
            &candidate.desired_state,
            self.config.max_route_changes,
            towards,
        );
        let mut forwarding = Forwarding::from_desired(network, &limited.desired);
        let after = predicted_mlu(&mut forwarding, network, forecast, unexplained);
        if after >= current_mlu {
            return Ok(format!(
                "{why}; but within the churn limit ({} routes) the plan is no better ({after:.3})",
                self.config.max_route_changes
            ));
        }
        let proposal = self.config.mode == LoopMode::Recommend;
        let figures = serde_json::json!({
            "predicted_mlu_before": current_mlu,
            "predicted_mlu_after": after,
            "measured_mlu": measured_mlu,
            // Demand the counters showed before the flow records did,
            // counted as best-effort (see predict::infer_from_counters).
            "inferred_from_counters_bps": inferred_bps,
            "hottest_link": hottest_link,
            "congestion_probability": max_probability,
            "congestion_threshold": self.config.congestion_threshold,
            "interval_start_ms": interval_start_ms,
            "interval_ms": self.interval_ms,
            "forecast": self.config.method.forecast_used(),
            "planning_method": self.config.method.as_str(),
            "planning_window": self.config.window.min(self.history.len()),
            "history_intervals": self.history.len(),
            "routes_changed": limited.changed,
            "routes_wanted": limited.wanted,
            "deferred_destinations": limited.deferred,
            "replaces": format!("plans/{current_version}"),
        });
        let reason = if limited.changed < limited.wanted {
            format!(
                "{why}; {} of {} route changes within the churn limit",
                limited.changed, limited.wanted
            )
        } else {
            why.clone()
        };
        let desired: Vec<(String, String)> = limited
            .desired
            .iter()
            .map(|(node, value)| (node.clone(), value.to_string()))
            .collect();
        let metrics = candidate.metrics.to_string();
        let allocation = candidate.allocation.to_string();
        let figures_text = figures.to_string();
        let record = self
            .cx
            .db
            .insert_plan(
                &NewPlan {
                    mlu: after,
                    metrics_json: &metrics,
                    allocation_json: &allocation,
                    desired_state: &desired,
                    reason: &reason,
                    trigger,
                    reason_json: &figures_text,
                    proposal,
                },
                "aiwan closed loop",
                if proposal {
                    "closed-loop/ProposePlan"
                } else {
                    "closed-loop/ApplyPlan"
                },
                now,
            )
            .await
            .map_err(|e| format!("cannot store the re-plan: {e}"))?;
        self.state.replanned(trigger, now);
        let mode = self.config.mode.as_str();
        self.cx
            .metrics
            .replans
            .get_or_create(&vec![
                ("trigger".to_string(), trigger.as_str().to_string()),
                ("mode".to_string(), mode.to_string()),
            ])
            .inc();
        let subject = format!("plans/{}", record.version);
        let figures_list = [("mlu_before", current_mlu), ("mlu_after", after)];
        if proposal {
            self.cx.events.publish(
                EventKind::Proposal,
                &subject,
                format!("proposed: {reason}"),
                &figures_list,
            );
        } else {
            self.cx.plan_version.send_replace(record.version);
            self.cx.events.publish(
                EventKind::Replan,
                &subject,
                format!("re-planned: {reason}"),
                &figures_list,
            );
        }
        let mut view = self.cx.view.write().unwrap_or_else(PoisonError::into_inner);
        view.replan_count += 1;
        view.replans.push(ReplanRecord {
            version: record.version,
            trigger,
            proposal,
            at_ms: now,
            predicted_mlu_before: current_mlu,
            predicted_mlu_after: after,
            measured_mlu_before: (self.last_demand_bps > 0.0 || measured_mlu > 0.0)
                .then_some(measured_mlu),
            measured_mlu_after: None,
            demand_bps_before: self.last_demand_bps,
            intervals_not_comparable: 0,
            applied_ms: None,
            // Holds the episode start until the plan is applied.
            latency_ms: (!proposal).then_some(self.episode_start_ms).flatten(),
            routes_changed: limited.changed,
            routes_wanted: limited.wanted,
        });
        if view.replans.len() > KEPT_REPLANS {
            view.replans.remove(0);
        }
        Ok(format!(
            "{}: {reason}",
            if proposal { "proposed" } else { "re-planned" }
        ))
    }
}

/// What [`ClosedLoop::replan`] works from.
struct ReplanInput<'a> {
    trigger: PlanTrigger,
    why: String,
    candidate: crate::planning::ComputedPlan,
    network: &'a Network,
    forecast: &'a TrafficMatrix,
    unexplained: &'a [f64],
    /// bit/s of demand inferred from counters in the forecast.
    inferred_bps: f64,
    current_version: i64,
    current_mlu: f64,
    measured_mlu: f64,
    max_probability: f64,
    hottest_link: String,
    interval_start_ms: i64,
}

/// The predicted MLU of `forecast` under `forwarding`, with the load the
/// counters see beyond the flows added as it is.
pub(crate) fn predicted_mlu(
    forwarding: &mut Forwarding,
    network: &Network,
    forecast: &TrafficMatrix,
    unexplained: &[f64],
) -> f64 {
    let (loads, _) = forwarding.route(network, forecast, None);
    network
        .edges
        .iter()
        .enumerate()
        .map(|(e, edge)| {
            (loads.edges[e] + unexplained.get(e).copied().unwrap_or(0.0)) / edge.capacity
        })
        .fold(0.0, f64::max)
}

/// P(load > limit) for a normal load of `mean` and `sd`; a step when the
/// deviation is zero.
pub(crate) fn exceed_probability(mean: f64, sd: f64, limit: f64) -> f64 {
    if sd <= 0.0 || !sd.is_finite() {
        return if mean >= limit { 1.0 } else { 0.0 };
    }
    let z = (limit - mean) / sd;
    0.5 * erfc(z / std::f64::consts::SQRT_2)
}

/// The complementary error function (Numerical Recipes' erfcc, relative
/// error below 1.2e-7): enough for a probability shown to two digits.
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t
        * (-z * z - 1.265_512_23
            + t * (1.000_023_68
                + t * (0.374_091_96
                    + t * (0.096_784_18
                        + t * (-0.186_288_06
                            + t * (0.278_868_07
                                + t * (-1.135_203_98
                                    + t * (1.488_515_87
                                        + t * (-0.822_152_23 + t * 0.170_872_77)))))))))
            .exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

pub(crate) fn sum_matrices<'a>(matrices: impl Iterator<Item = &'a TrafficMatrix>) -> TrafficMatrix {
    let mut total: Option<TrafficMatrix> = None;
    for matrix in matrices {
        match total.as_mut() {
            None => total = Some(matrix.clone()),
            Some(total) => {
                for (t, v) in total.values.iter_mut().zip(&matrix.values) {
                    *t += v;
                }
            }
        }
    }
    total.unwrap_or_else(|| TrafficMatrix::zeros(0))
}

/// `node:interface` of each admin-up link, in the order
/// `Network::from_topology` makes its edges.
pub fn link_names(topology: &Topology) -> Vec<String> {
    topology
        .links
        .iter()
        .filter(|l| l.admin_up)
        .map(|l| format!("{}:{}", l.src, l.src_interface))
        .collect()
}

/// Per link (as [`link_names`]), whether both ends are WAN routers, where
/// the measured matrix can explain the load.
pub fn covered_links(topology: &Topology) -> Vec<bool> {
    let wan: std::collections::HashSet<&str> = topology
        .nodes
        .iter()
        .filter(|n| n.role == aiwan_planner::NodeRole::WanRouter)
        .map(|n| n.id.as_str())
        .collect();
    topology
        .links
        .iter()
        .filter(|l| l.admin_up)
        .map(|l| wan.contains(l.src.as_str()) && wan.contains(l.dst.as_str()))
        .collect()
}

/// Stored desired-state rows as JSON values by router.
pub fn parse_desired(rows: &[(String, String)]) -> BTreeMap<String, serde_json::Value> {
    rows.iter()
        .map(|(node, state)| {
            (
                node.clone(),
                serde_json::from_str(state).unwrap_or(serde_json::Value::Null),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exceed_probability_is_a_normal_tail() {
        assert_eq!(exceed_probability(5.0, 0.0, 8.0), 0.0);
        assert_eq!(exceed_probability(9.0, 0.0, 8.0), 1.0);
        assert!((exceed_probability(8.0, 1.0, 8.0) - 0.5).abs() < 1e-6);
        // One standard deviation below the limit: 15.87%.
        assert!((exceed_probability(7.0, 1.0, 8.0) - 0.158_655).abs() < 1e-5);
        assert!((exceed_probability(9.645, 1.0, 8.0) - 0.95).abs() < 1e-3);
    }
}
