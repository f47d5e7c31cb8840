//! The closed loop's CPU work for one interval, pure: forecast per class,
//! predicted link loads under the current plan, flows against counters,
//! and (when the loop may re-plan) the candidate plan and its predicted
//! MLU. The loop runs it off the async threads; `aiwan bench replan` runs
//! the same function to time it.

use aiwan_planner::Topology;
use aiwan_planner::classes::{Class, PathCache};
use aiwan_planner::forecast::{BAND_90_Z, Forecaster};
use aiwan_planner::network::{Network, TrafficMatrix};

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
    /// Past intervals the candidate serves besides the forecast.
    pub window: usize,
    /// Compute a candidate plan.
    pub plan: bool,
    /// The current plan's collective placements.
    pub placements: crate::collective::Placements,
}

/// What the interval predicts under the current plan.
#[derive(Debug, Clone)]
pub struct Prediction {
    /// The forecast of all classes together.
    pub total_mean: TrafficMatrix,
    pub links: Vec<LinkView>,
    /// Per link, load the counters see beyond what the flows explain.
    pub unexplained: Vec<f64>,
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
    let forecaster = Forecaster::default();
    let mut forecast: Vec<(TrafficMatrix, TrafficMatrix)> = Vec::with_capacity(3);
    for (c, known) in known.iter().enumerate() {
        let series: Vec<TrafficMatrix> =
            work.history.iter().map(|i| i.classes[c].clone()).collect();
        let (mut mean, sigma) = match forecaster.predict_with_band(&series) {
            Ok(f) => (f.mean, f.sigma),
            // Too short a history: the last interval, no band.
            Err(_) => (latest.classes[c].clone(), TrafficMatrix::zeros(n)),
        };
        for (m, k) in mean.values.iter_mut().zip(&known.values) {
            *m = m.max(*k);
        }
        if congested_now {
            for (m, seen) in mean.values.iter_mut().zip(&latest.classes[c].values) {
                *m = m.max(*seen);
            }
        }
        forecast.push((mean, sigma));
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

    // Per link: agreement, what the counters see beyond the flows, the
    // prediction.
    let seconds = latest.duration_ms as f64 / 1000.0;
    let mean_packet_bytes = if latest.packets > 0 {
        latest.bytes as f64 / latest.packets as f64
    } else {
        0.0
    };
    let threshold = work.congestion_threshold;
    let mut links = Vec::with_capacity(network.edges.len());
    let mut unexplained = vec![0.0; network.edges.len()];
    for (e, edge) in network.edges.iter().enumerate() {
        let estimate = estimated.edges[e];
        let counter = work.counters.get(e).copied().flatten();
        // Bernoulli 1-in-N packet sampling: the byte estimate's variance is
        // about N x bytes x mean packet size.
        let bytes = estimate * seconds / 8.0;
        let sigma_bps =
            (work.sampling * bytes * mean_packet_bytes).sqrt() * 8.0 / seconds.max(1e-9);
        let tolerance = AGREEMENT_SIGMAS * sigma_bps + AGREEMENT_FLOOR * edge.capacity;
        let disagreement = counter.map_or(0.0, |c| c - estimate);
        let is_covered = work.covered.get(e).copied().unwrap_or(false);
        if disagreement > tolerance || (!is_covered && disagreement > 0.0) {
            unexplained[e] = disagreement;
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
        // The plan must serve the recent intervals and the forecast.
        let skip = work.history.len().saturating_sub(work.window);
        let mut scenarios: Vec<[TrafficMatrix; 3]> = work.history[skip..]
            .iter()
            .map(|i| i.classes.clone())
            .collect();
        scenarios.push([
            forecast[0].0.clone(),
            forecast[1].0.clone(),
            forecast[2].0.clone(),
        ]);
        let measured = MeasuredDemand { scenarios };
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
            measured_mlu,
            current_mlu,
            hottest,
            max_probability,
        },
        candidate,
    }
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
}
