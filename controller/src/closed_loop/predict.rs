//! The closed loop's CPU work for one interval, pure: forecast per class,
//! predicted link loads under the current plan, flows against counters,
//! and (when the loop may re-plan) the candidate plan and its predicted
//! MLU. The loop runs it off the async threads; `aiwan bench replan` runs
//! the same function to time it.

use aiwan_planner::Topology;
use aiwan_planner::classes::{Class, PathCache, Robustness};
use aiwan_planner::forecast::{BAND_90_Z, Forecaster};
use aiwan_planner::network::{Network, TrafficMatrix};
use aiwan_planner::scenario;

use super::demand::{MeasuredInterval, class_index};
use super::forwarding::Forwarding;
use super::{
    AGREEMENT_FLOOR, AGREEMENT_SIGMAS, LinkView, exceed_probability, predicted_mlu, sum_matrices,
};
use crate::model::JobRecord;
use crate::planning::{
    ComputedPlan, MeasuredDemand, PlanningError, compute_plan_with, job_demands,
};

/// Everything one interval's work reads.
#[derive(Debug, Clone)]
pub struct Work {
    pub topology: Topology,
    pub network: Network,
    pub jobs: Vec<JobRecord>,
    pub now_ms: i64,
    /// Measured intervals, oldest first; the last is the newest.
    pub history: Vec<MeasuredInterval>,
    /// Per link (the network's edges): the interface counters' rate in the
    /// newest interval, when the link has counters.
    pub counters: Vec<Option<f64>>,
    /// The exporters' highest sampling rate (1 when unsampled).
    pub sampling: f64,
    /// Per link: between two WAN routers.
    pub covered: Vec<bool>,
    pub link_names: Vec<String>,
    pub congestion_threshold: f64,
    /// How the candidate serves what may come next.
    pub method: PlanningMethod,
    /// Past intervals the candidate serves.
    pub window: usize,
    /// Compute a candidate plan.
    pub plan: bool,
    /// The current plan's collective placements.
    pub placements: crate::collective::Placements,
}

/// How the loop's candidate plan serves the traffic that may come next:
/// the methods `aiwan eval` scores under the same names.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Deserialize,
    serde::Serialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum PlanningMethod {
    /// The scenario method ([`aiwan_planner::scenario`]): each of the last
    /// `window` intervals, per class, recentred on the level now (an EWMA
    /// of the intervals, raised to what the loop knows is there: declared
    /// jobs, a congested interval's traffic, demand inferred from the
    /// counters), and the level now itself; one split per class best on
    /// average over them, each scenario relative to its own optimum.
    #[default]
    Aiwan,
    /// The best worst case over the last `window` intervals and the
    /// forecast.
    WorstWindow,
}

impl PlanningMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            PlanningMethod::Aiwan => "aiwan",
            PlanningMethod::WorstWindow => "worst-window",
        }
    }

    /// What a plan's figures say of the forecast behind it.
    pub fn forecast_used(self) -> &'static str {
        match self {
            PlanningMethod::Aiwan => {
                "linfa pooled AR(3) predicts; the plan serves the recent intervals \
                 recentred on their EWMA levels"
            }
            PlanningMethod::WorstWindow => {
                "linfa pooled AR(3); the plan serves it and the recent intervals"
            }
        }
    }
}

/// Intervals whose mean flows may explain the counters: an exporter that
/// reports every two seconds fills every other 1 s interval.
const RECENT_INTERVALS: usize = 2;

/// What the interval predicts under the current plan.
#[derive(Debug, Clone)]
pub struct Prediction {
    /// The forecast of all classes together.
    pub total_mean: TrafficMatrix,
    pub links: Vec<LinkView>,
    /// Per link, load the counters see beyond what the flows and the
    /// inferred demand explain.
    pub unexplained: Vec<f64>,
    /// Demand inferred from the counters (bit/s per node pair, counted as
    /// best-effort): traffic a congested WAN link carries that no flow
    /// record shows yet. See [`infer_from_counters`].
    pub inferred: TrafficMatrix,
    pub measured_mlu: f64,
    pub current_mlu: f64,
    /// The link with the highest predicted utilisation.
    pub hottest: usize,
    pub max_probability: f64,
}

/// The interval's result.
#[derive(Debug)]
pub struct Outcome {
    pub prediction: Prediction,
    /// The candidate plan and its predicted MLU, when asked for.
    pub candidate: Option<Result<(ComputedPlan, f64), PlanningError>>,
}

/// Runs the interval's work; `forwarding` is the current plan's, `paths`
/// the topology's cached candidate paths.
pub fn run(work: &Work, forwarding: &mut Forwarding, paths: &mut PathCache) -> Outcome {
    let network = &work.network;
    let n = network.nodes.len();
    let Some(latest) = work.history.last() else {
        return Outcome {
            prediction: Prediction {
                total_mean: TrafficMatrix::zeros(n),
                links: Vec::new(),
                unexplained: vec![0.0; network.edges.len()],
                inferred: TrafficMatrix::zeros(n),
                measured_mlu: 0.0,
                current_mlu: 0.0,
                hottest: 0,
                max_probability: 0.0,
            },
            candidate: None,
        };
    };
    // Forecast per class, the declared jobs as known traffic.
    let (declared, _) = job_demands(&work.topology, network, &work.jobs, work.now_ms);
    let mut known = [
        TrafficMatrix::zeros(n),
        TrafficMatrix::zeros(n),
        TrafficMatrix::zeros(n),
    ];
    for demand in &declared {
        known[class_index(demand.class)].values[demand.src * n + demand.dst] += demand.rate;
    }
    // A link congested now (its counters, else the flows, at or above the
    // threshold): the forecast may not fall below what was just measured.
    // An autoregression lags a step of traffic by an interval or more, and
    // a plan judged on the lag would leave the congestion where it is.
    let (estimated, _) = forwarding.route(network, &latest.total(), None);
    let congested_now = network.edges.iter().enumerate().any(|(e, edge)| {
        let load = work
            .counters
            .get(e)
            .copied()
            .flatten()
            .unwrap_or(estimated.edges[e]);
        edge.capacity > 0.0 && load >= work.congestion_threshold * edge.capacity
    });
    // Per link, how far the counters may exceed the flows by sampling
    // error alone.
    let seconds = latest.duration_ms as f64 / 1000.0;
    let mean_packet_bytes = if latest.packets > 0 {
        latest.bytes as f64 / latest.packets as f64
    } else {
        0.0
    };
    let tolerance: Vec<f64> = network
        .edges
        .iter()
        .enumerate()
        .map(|(e, edge)| {
            // Bernoulli 1-in-N packet sampling: the byte estimate's
            // variance is about N x bytes x mean packet size.
            let bytes = estimated.edges[e] * seconds / 8.0;
            let sigma_bps =
                (work.sampling * bytes * mean_packet_bytes).sqrt() * 8.0 / seconds.max(1e-9);
            AGREEMENT_SIGMAS * sigma_bps + AGREEMENT_FLOOR * edge.capacity
        })
        .collect();
    let forecaster = Forecaster::default();
    let mut forecast: Vec<(TrafficMatrix, TrafficMatrix)> = Vec::with_capacity(3);
    // Per class, the EWMA levels of the scenario method (one more than
    // intervals: the last is the level now).
    let mut levels: Vec<Vec<TrafficMatrix>> = Vec::with_capacity(3);
    // What the loop knows is there besides what the series say.
    let floor = |matrix: &mut TrafficMatrix, c: usize| {
        for (m, k) in matrix.values.iter_mut().zip(&known[c].values) {
            *m = m.max(*k);
        }
        if congested_now {
            for (m, seen) in matrix.values.iter_mut().zip(&latest.classes[c].values) {
                *m = m.max(*seen);
            }
        }
    };
    for c in 0..known.len() {
        let series: Vec<TrafficMatrix> =
            work.history.iter().map(|i| i.classes[c].clone()).collect();
        let (mut mean, sigma) = match forecaster.predict_with_band(&series) {
            Ok(f) => (f.mean, f.sigma),
            // Too short a history: the last interval, no band.
            Err(_) => (latest.classes[c].clone(), TrafficMatrix::zeros(n)),
        };
        floor(&mut mean, c);
        forecast.push((mean, sigma));
        let mut class_levels = scenario::levels(&series, scenario::SHORT_ALPHA);
        if let Some(now) = class_levels.last_mut() {
            floor(now, c);
        }
        levels.push(class_levels);
    }
    // What the counters may be explained by: the flows of the latest
    // interval, or of the last two on average where that is higher. An
    // exporter reports a flow every second or two (softflowd expires a
    // flow at the first expiry pass after its active timeout), so an
    // interval may miss a flow's records that the next one holds twice.
    let recent_totals: Vec<TrafficMatrix> = work
        .history
        .iter()
        .rev()
        .take(RECENT_INTERVALS)
        .map(MeasuredInterval::total)
        .collect();
    let mut recent = sum_matrices(recent_totals.iter());
    for value in recent.values.iter_mut() {
        *value /= recent_totals.len() as f64;
    }
    let (recent_loads, _) = forwarding.route(network, &recent, None);
    let explained: Vec<f64> = (0..network.edges.len())
        .map(|e| estimated.edges[e].max(recent_loads.edges[e]))
        .collect();
    let inferred = infer_from_counters(work, forwarding, &recent, &explained, &tolerance);
    let best_effort = class_index(Class::BestEffort);
    for (m, extra) in forecast[best_effort]
        .0
        .values
        .iter_mut()
        .zip(&inferred.values)
    {
        *m += extra;
    }
    if let Some(now) = levels[best_effort].last_mut() {
        for (m, extra) in now.values.iter_mut().zip(&inferred.values) {
            *m += extra;
        }
    }
    let total_mean = sum_matrices(forecast.iter().map(|(m, _)| m));
    let total_sigma = TrafficMatrix {
        n,
        values: (0..n * n)
            .map(|i| {
                forecast
                    .iter()
                    .map(|(_, s)| s.values[i].powi(2))
                    .sum::<f64>()
                    .sqrt()
            })
            .collect(),
    };
    let (predicted, deviation) = forwarding.route(network, &total_mean, Some(&total_sigma));
    let per_class: Vec<Vec<f64>> = forecast
        .iter()
        .map(|(m, _)| forwarding.route(network, m, None).0.edges)
        .collect();

    // Per link: agreement, what the counters see beyond the flows (and
    // beyond the demand inferred from them), the prediction.
    let (inferred_loads, _) = forwarding.route(network, &inferred, None);
    let threshold = work.congestion_threshold;
    let mut links = Vec::with_capacity(network.edges.len());
    let mut unexplained = vec![0.0; network.edges.len()];
    for (e, edge) in network.edges.iter().enumerate() {
        let estimate = estimated.edges[e];
        let counter = work.counters.get(e).copied().flatten();
        let tolerance = tolerance[e];
        let disagreement = counter.map_or(0.0, |c| c - estimate);
        let residual = counter.map_or(0.0, |c| c - explained[e] - inferred_loads.edges[e]);
        let is_covered = work.covered.get(e).copied().unwrap_or(false);
        if residual > tolerance || (!is_covered && residual > 0.0) {
            unexplained[e] = residual;
        }
        let mean = predicted.edges[e] + unexplained[e];
        let sd = deviation[e];
        let probability = exceed_probability(mean, sd, threshold * edge.capacity);
        let dominant = (0..3)
            .max_by(|&a, &b| per_class[a][e].total_cmp(&per_class[b][e]))
            .unwrap_or(2);
        links.push(LinkView {
            link: work.link_names.get(e).cloned().unwrap_or_default(),
            capacity_bps: edge.capacity,
            counter_bps: counter,
            estimated_bps: estimate,
            disagreement_bps: disagreement,
            tolerance_bps: tolerance,
            agrees: !is_covered || counter.is_none() || disagreement.abs() <= tolerance,
            covered: is_covered,
            predicted_bps: mean,
            predicted_low_bps: (mean - BAND_90_Z * sd).max(0.0),
            predicted_high_bps: mean + BAND_90_Z * sd,
            predicted_utilization: mean / edge.capacity,
            congestion_probability: probability,
            dominant_class: Class::ALL[dominant],
        });
    }
    let measured_mlu = links
        .iter()
        .map(|l| l.counter_bps.unwrap_or(l.estimated_bps) / l.capacity_bps)
        .fold(0.0, f64::max);
    let (hottest, current_mlu) = links
        .iter()
        .enumerate()
        .map(|(e, l)| (e, l.predicted_utilization))
        .fold((0, 0.0), |best, x| if x.1 > best.1 { x } else { best });
    let max_probability = links
        .iter()
        .map(|l| l.congestion_probability)
        .fold(0.0, f64::max);
    let candidate = work.plan.then(|| {
        let measured = candidate_scenarios(work, &forecast, &levels);
        compute_plan_with(
            &work.topology,
            &work.jobs,
            work.now_ms,
            Some(&measured),
            &work.placements,
            paths,
        )
        .map(|plan| {
            let mut candidate = Forwarding::from_desired(network, &plan.desired_state);
            let mlu = predicted_mlu(&mut candidate, network, &total_mean, &unexplained);
            (plan, mlu)
        })
    });
    Outcome {
        prediction: Prediction {
            total_mean,
            links,
            unexplained,
            inferred,
            measured_mlu,
            current_mlu,
            hottest,
            max_probability,
        },
        candidate,
    }
}

/// The scenarios the candidate plan serves (see [`PlanningMethod`]), the
/// primary (the plan's figures) last.
fn candidate_scenarios(
    work: &Work,
    forecast: &[(TrafficMatrix, TrafficMatrix)],
    levels: &[Vec<TrafficMatrix>],
) -> MeasuredDemand {
    let t = work.history.len();
    let skip = t.saturating_sub(work.window.max(1));
    let class = |c: usize| &forecast[c].0;
    match work.method {
        PlanningMethod::WorstWindow => {
            let mut scenarios: Vec<[TrafficMatrix; 3]> = work.history[skip..]
                .iter()
                .map(|i| i.classes.clone())
                .collect();
            scenarios.push([class(0).clone(), class(1).clone(), class(2).clone()]);
            MeasuredDemand {
                scenarios,
                robustness: Robustness::Worst,
            }
        }
        PlanningMethod::Aiwan => {
            let level = |c: usize, k: usize| levels.get(c).and_then(|l| l.get(k));
            let now: [TrafficMatrix; 3] =
                std::array::from_fn(|c| level(c, t).unwrap_or_else(|| class(c)).clone());
            let mut scenarios: Vec<[TrafficMatrix; 3]> = work.history[skip..]
                .iter()
                .enumerate()
                .map(|(i, past)| {
                    std::array::from_fn(|c| match level(c, skip + i) {
                        Some(then) => scenario::recentre(&past.classes[c], then, &now[c]),
                        None => past.classes[c].clone(),
                    })
                })
                .collect();
            scenarios.push(now);
            MeasuredDemand {
                scenarios,
                robustness: Robustness::Mean,
            }
        }
    }
}

/// Demand the counters show before the flow records do.
///
/// A new flow is seen first by the interface counters: an exporter reports
/// it a second or two after it starts (softflowd's shortest active timeout
/// is a second, and it expires flows once a second). Until its records
/// arrive, the excess on a congested link is load no plan could move, so
/// the loop would wait for the records before acting. Where a WAN link's
/// counters exceed what the flows explain (`explained`) by more than the
/// sampling error, and the link is congested, the excess is spread over
/// the node pairs whose traffic crosses the link, in proportion to their
/// recent demand (`prior`; the gravity prior of network tomography: a new
/// flow is most likely where traffic already flows). A pair crossing two such
/// links takes the larger of the two shares, so one new flow is not
/// counted twice. Links with no measured pair crossing them keep their
/// excess as unexplained load, as before.
fn infer_from_counters(
    work: &Work,
    forwarding: &mut Forwarding,
    prior: &TrafficMatrix,
    explained: &[f64],
    tolerance: &[f64],
) -> TrafficMatrix {
    let network = &work.network;
    let n = network.nodes.len();
    let mut inferred = TrafficMatrix::zeros(n);
    let excess: Vec<(usize, f64)> = network
        .edges
        .iter()
        .enumerate()
        .filter_map(|(e, edge)| {
            let counter = work.counters.get(e).copied().flatten()?;
            let excess = counter - explained[e];
            let covered = work.covered.get(e).copied().unwrap_or(false);
            (covered
                && excess > tolerance[e]
                && counter >= work.congestion_threshold * edge.capacity)
                .then_some((e, excess))
        })
        .collect();
    if excess.is_empty() {
        return inferred;
    }
    /// A node pair with recent demand, and the edges its traffic crosses.
    struct Crossing {
        cell: usize,
        demand: f64,
        edges: Vec<usize>,
    }
    let pairs: Vec<Crossing> = prior
        .demands()
        .into_iter()
        .map(|(src, dst, demand)| {
            let (fractions, _, _) = forwarding.pair_fractions(network, src, dst);
            Crossing {
                cell: src * n + dst,
                demand,
                edges: fractions.into_iter().map(|(edge, _)| edge).collect(),
            }
        })
        .collect();
    for (e, excess) in excess {
        // The excess is shared out, not scaled up by the fraction of each
        // pair the plan puts on the link: routers hash whole flows onto
        // paths, so a new flow is all on this link or not at all. (Scaled
        // up, a link that the plan gives a small share, and the hash a big
        // flow, would infer many times the excess.)
        let crossing: Vec<&Crossing> = pairs.iter().filter(|p| p.edges.contains(&e)).collect();
        let weight: f64 = crossing.iter().map(|p| p.demand).sum();
        if weight <= 0.0 {
            continue;
        }
        for pair in crossing {
            let share = excess * pair.demand / weight;
            let cell = &mut inferred.values[pair.cell];
            *cell = cell.max(share);
        }
    }
    inferred
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::closed_loop::demand::MeasuredInterval;

    /// The diamond (r1 to r4 over r2 or r3, 10G links), with `history`
    /// intervals of `rate` bit/s from r1 to r4 as best-effort, and what
    /// the counters say of each link (nothing: the flows are the load).
    fn work(history: &[f64], counters: Vec<Option<f64>>) -> Work {
        let topology = crate::southbound::fixtures::diamond();
        let network = Network::from_topology(&topology);
        let n = network.nodes.len();
        let index = network.index();
        let (r1, r4) = (index["r1"], index["r4"]);
        let history = history
            .iter()
            .enumerate()
            .map(|(k, rate)| {
                let mut interval = MeasuredInterval::empty(k as i64 * 1000, 1000, n);
                interval.classes[2].values[r1 * n + r4] = *rate;
                interval
            })
            .collect();
        Work {
            link_names: crate::closed_loop::link_names(&topology),
            covered: crate::closed_loop::covered_links(&topology),
            counters,
            network,
            topology,
            jobs: Vec::new(),
            now_ms: 0,
            history,
            sampling: 1.0,
            congestion_threshold: 0.8,
            method: PlanningMethod::default(),
            window: 6,
            plan: false,
            placements: Default::default(),
        }
    }

    #[test]
    fn a_step_into_congestion_is_not_forecast_away() {
        // Nothing for a long while, then a step to 9.5 Gbit/s, all of it on
        // the shortest path (10G): the autoregression alone lags the step,
        // but with the link measured congested the prediction may not fall
        // below what was just measured.
        let mut series = vec![0.0; 30];
        series.push(9.5e9);
        let congested = work(&series, Vec::new());
        let mut forwarding = Forwarding::underlay_only();
        let mut paths = PathCache::default();
        let outcome = run(&congested, &mut forwarding, &mut paths);
        assert!(
            outcome.prediction.current_mlu >= 0.94,
            "predicted {} after a measured 0.95",
            outcome.prediction.current_mlu
        );
        assert!(outcome.prediction.measured_mlu >= 0.94);
        // Below the threshold, the forecast is the forecaster's own: a
        // step to 5 Gbit/s (0.5) is not floored.
        let mut series = vec![1e8; 30];
        series.push(5e9);
        let below = work(&series, Vec::new());
        let outcome = run(&below, &mut Forwarding::underlay_only(), &mut paths);
        assert!(outcome.prediction.measured_mlu < 0.8);
    }

    #[test]
    fn the_plan_replays_the_recent_intervals_at_the_level_now() {
        // r1 to r4 steady at 2 Gbit/s, then a step to 9.5 Gbit/s (the
        // 10G shortest path congested). Every scenario of the aiwan method
        // is the recent pattern at the level now, and the level now is
        // what was just measured on the congested link; so the plan
        // splits the pair over both paths.
        let mut series = vec![2e9; 30];
        series.push(9.5e9);
        let mut step = work(&series, Vec::new());
        step.plan = true;
        let index = step.network.index();
        let n = step.network.nodes.len();
        let cell = index["r1"] * n + index["r4"];
        let mut forwarding = Forwarding::underlay_only();
        let outcome = run(&step, &mut forwarding, &mut PathCache::default());
        let Some(Ok((plan, candidate_mlu))) = outcome.candidate else {
            panic!("no candidate plan");
        };
        assert_eq!(plan.metrics["scenarios"], 7, "{}", plan.metrics);
        assert_eq!(plan.metrics["scenario_objective"], "mean");
        assert!(
            candidate_mlu < 0.6,
            "candidate {candidate_mlu}, current {}",
            outcome.prediction.current_mlu
        );
        // The scenarios themselves: steady history replays at the level
        // now (floored at the congested interval's 9.5 Gbit/s).
        let levels: Vec<Vec<TrafficMatrix>> = (0..3)
            .map(|c| {
                let series: Vec<TrafficMatrix> =
                    step.history.iter().map(|i| i.classes[c].clone()).collect();
                let mut levels = scenario::levels(&series, scenario::SHORT_ALPHA);
                if let Some(now) = levels.last_mut() {
                    now.values[cell] = now.values[cell].max(series[series.len() - 1].values[cell]);
                }
                levels
            })
            .collect();
        let forecast: Vec<(TrafficMatrix, TrafficMatrix)> = (0..3)
            .map(|_| (TrafficMatrix::zeros(n), TrafficMatrix::zeros(n)))
            .collect();
        let scenarios = candidate_scenarios(&step, &forecast, &levels).scenarios;
        for scenario in &scenarios[..5] {
            assert!((scenario[2].values[cell] - 9.5e9).abs() < 1.0);
        }
        // The congested interval itself, at its ratio to the level before
        // it (at most RATIO_CAP), and the level now last.
        assert!((scenarios[5][2].values[cell] - 9.5e9 * 9.5 / 2.0).abs() < 1e3);
        assert_eq!(scenarios[6][2].values[cell], 9.5e9);
        // A pair never seen before the newest interval is replayed at its
        // level now, not as absent.
        let mut fresh = work(&[0.0; 31], Vec::new());
        if let Some(last) = fresh.history.last_mut() {
            last.classes[2].values[cell] = 4e9;
        }
        let levels: Vec<Vec<TrafficMatrix>> = (0..3)
            .map(|c| {
                let series: Vec<TrafficMatrix> =
                    fresh.history.iter().map(|i| i.classes[c].clone()).collect();
                scenario::levels(&series, scenario::SHORT_ALPHA)
            })
            .collect();
        let replayed: Vec<f64> = candidate_scenarios(&fresh, &forecast, &levels)
            .scenarios
            .iter()
            .map(|s| s[2].values[cell])
            .collect();
        // Its level now is half its first interval's 4 Gbit/s; that
        // interval itself, with no level before it, at its own rate.
        assert_eq!(replayed, [2e9, 2e9, 2e9, 2e9, 2e9, 4e9, 2e9]);
    }

    #[test]
    fn counters_ahead_of_the_flows_become_inferred_demand() {
        // r1 to r4 sends 2 Gbit/s steadily, all on r1-r2-r4 (the fastest
        // path). Then r1-r2's counters read 9.5 Gbit/s: a new flow the
        // exporters have not reported yet.
        let series = vec![2e9; 30];
        let base = work(&series, Vec::new());
        let network = &base.network;
        let index = network.index();
        let (r1, r2, r4) = (index["r1"], index["r2"], index["r4"]);
        let r1_r2 = network.edge_between(r1, r2).expect("r1-r2");
        let n = network.nodes.len();
        let mut counters = vec![None; network.edges.len()];
        counters[r1_r2] = Some(9.5e9);
        let mut congested = work(&series, counters.clone());
        congested.plan = true;
        let mut paths = PathCache::default();
        let outcome = run(&congested, &mut Forwarding::underlay_only(), &mut paths);
        let prediction = &outcome.prediction;
        // The excess is inferred as r1 to r4 demand, not left as load no
        // plan can move.
        let inferred = prediction.inferred.values[r1 * n + r4];
        assert!(
            (inferred - 7.5e9).abs() < 1e8,
            "inferred {inferred} bit/s from r1 to r4"
        );
        assert!(
            prediction.unexplained[r1_r2] < 1e8,
            "{:?}",
            prediction.unexplained
        );
        assert!(prediction.current_mlu >= 0.94, "{}", prediction.current_mlu);
        // So a plan that splits r1 to r4 over both paths is predicted to
        // relieve the link.
        let (_, after) = outcome
            .candidate
            .expect("asked for a candidate")
            .expect("a plan");
        assert!(after < 0.6, "candidate MLU {after}");

        // Below the congestion threshold, an excess stays unexplained: it
        // may be traffic the exporters never see, and nothing is urgent.
        counters[r1_r2] = Some(5e9);
        let calm = work(&series, counters);
        let outcome = run(&calm, &mut Forwarding::underlay_only(), &mut paths);
        assert_eq!(outcome.prediction.inferred.values[r1 * n + r4], 0.0);
        assert!(outcome.prediction.unexplained[r1_r2] > 2.9e9);

        // An exporter reporting every two seconds: every other interval
        // holds two seconds of records and the others none. In an
        // interval without records, the counters are explained by the
        // last two intervals' flows, not taken as new traffic.
        let gap: Vec<f64> = (0..31)
            .map(|k| if k % 2 == 0 { 0.0 } else { 4e9 })
            .collect();
        let mut counters = vec![None; network.edges.len()];
        counters[r1_r2] = Some(2e9);
        let missed = work(&gap, counters.clone());
        let outcome = run(&missed, &mut Forwarding::underlay_only(), &mut paths);
        assert!(outcome.prediction.unexplained[r1_r2] < 1e8);
        assert_eq!(outcome.prediction.inferred.values[r1 * n + r4], 0.0);
        // And congestion in such an interval is inferred beyond those
        // flows, not beyond nothing.
        counters[r1_r2] = Some(9.5e9);
        let missed = work(&gap, counters);
        let outcome = run(&missed, &mut Forwarding::underlay_only(), &mut paths);
        let inferred = outcome.prediction.inferred.values[r1 * n + r4];
        assert!(
            (inferred - 7.5e9).abs() < 1e8,
            "inferred {inferred} bit/s from r1 to r4"
        );
    }
}
