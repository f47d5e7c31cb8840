//! Predict-then-optimise evaluation over a traffic-matrix series: for each
//! snapshot after the training prefix, every method plans from the past
//! only, and its plan is scored on the matrix that actually came, divided by
//! the LP optimum for that matrix (normalised MLU; 1.0 is the limit).

use std::collections::HashMap;

use crate::allocation::{Allocation, Demand, Problem};
use crate::forecast::Forecaster;
use crate::lp::{LpError, path_lp, robust_path_lp};
use crate::network::{Network, TrafficMatrix};
use crate::scenario::{self, AiwanPlanner};

/// How many past matrices `aiwan` plans against.
pub const AIWAN_WINDOW: usize = 6;
/// Smoothing of the EWMA baseline.
pub const EWMA_ALPHA: f64 = 0.5;
/// How many past matrices the forecaster learns from.
pub const FORECAST_HISTORY: usize = 36;

/// The figures of one method.
#[derive(Debug, Clone, PartialEq)]
pub struct MethodScore {
    pub name: &'static str,
    pub mean_norm_mlu: f64,
    pub p90_norm_mlu: f64,
    pub snapshots: usize,
    /// Normalised mean absolute error of the method's point forecast.
    pub nmae: f64,
    /// The normalised MLU of each scored snapshot, in time order.
    pub per_snapshot: Vec<f64>,
}

/// Candidate paths of every pair, as edge sequences.
pub type PairPaths = HashMap<(usize, usize), Vec<Vec<usize>>>;

/// The problem of `matrix` over the pairs' paths (pairs without paths are
/// left out; the callers give paths for every pair with demand).
fn problem_for(
    network: &Network,
    matrix: &TrafficMatrix,
    pairs: &[(usize, usize)],
    paths: &PairPaths,
) -> Problem {
    let demands = pairs
        .iter()
        .filter_map(|&(s, t)| {
            let p = paths.get(&(s, t))?;
            Some(Demand {
                src: s,
                dst: t,
                rate: matrix.get(s, t),
                paths: p.clone(),
            })
        })
        .collect();
    Problem {
        network: network.clone(),
        demands,
    }
}

/// Scores `allocation` (for `pairs`) on `actual`.
fn score(
    network: &Network,
    actual: &TrafficMatrix,
    pairs: &[(usize, usize)],
    paths: &PairPaths,
    allocation: &Allocation,
) -> f64 {
    let problem = problem_for(network, actual, pairs, paths);
    problem
        .evaluate(allocation)
        .map(|e| e.mlu)
        .unwrap_or(f64::INFINITY)
}

fn nmae(predicted: &TrafficMatrix, actual: &TrafficMatrix) -> (f64, f64) {
    let error: f64 = predicted
        .values
        .iter()
        .zip(&actual.values)
        .map(|(p, a)| (p - a).abs())
        .sum();
    (error, actual.total())
}

/// The `p` quantile (nearest rank) of `values`, which it sorts; NaN when
/// empty.
pub fn percentile(values: &mut [f64], p: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    if values.is_empty() {
        return f64::NAN;
    }
    let rank = ((p * values.len() as f64).ceil() as usize).clamp(1, values.len());
    values[rank - 1]
}

/// Evaluates `last-lp` (plan for the last matrix), `ewma-lp` (plan for an
/// EWMA of the past), `linfa-lp` (plan for the [`Forecaster`]'s forecast
/// from the last [`FORECAST_HISTORY`] matrices), `worst-window` (one split
/// that minimises the worst normalised MLU over the last [`AIWAN_WINDOW`]
/// matrices and the forecast) and `aiwan` (the sample-average plan over
/// recentred and raw windows of [`crate::scenario`]) on `series` after
/// `train` snapshots. `paths`
/// must cover every pair with demand in the series. Where the history is
/// too short for the forecaster, its forecast is the last matrix.
pub fn evaluate_methods(
    network: &Network,
    series: &[TrafficMatrix],
    paths: &PairPaths,
    train: usize,
) -> Result<Vec<MethodScore>, LpError> {
    let train = train.max(1);
    let mut pairs: Vec<(usize, usize)> = paths.keys().copied().collect();
    pairs.sort_unstable();
    let names = ["last-lp", "ewma-lp", "linfa-lp", "worst-window", "aiwan"];
    let mut aiwan = AiwanPlanner::default();
    // Levels over the whole series: levels[k] reads only matrices before k,
    // and the planner reads only levels up to the snapshot it plans for.
    let levels: Vec<(f64, Vec<TrafficMatrix>)> = aiwan
        .alphas()
        .into_iter()
        .map(|alpha| (alpha, scenario::levels(series, alpha)))
        .collect();
    let forecaster = Forecaster::default();
    let mut norm: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
    let mut errors = vec![(0.0, 0.0); names.len()];
    let Some(first) = series.first() else {
        return Ok(Vec::new());
    };
    let mut ewma = first.clone();
    // The LP optimum of each snapshot, computed once: the score's
    // denominator, and the scale of the window matrices for `aiwan`.
    let mut optima: Vec<Option<f64>> = vec![None; series.len()];
    let mut optimum_of = |t: usize| -> Result<f64, LpError> {
        if let Some(value) = optima[t] {
            return Ok(value);
        }
        let problem = problem_for(network, &series[t], &pairs, paths);
        let (allocation, _) = path_lp(&problem, None)?;
        let value = score(network, &series[t], &pairs, paths, &allocation);
        optima[t] = Some(value);
        Ok(value)
    };
    for (t, matrix) in series.iter().enumerate().skip(1) {
        // ewma holds the forecast made before snapshot t.
        if t >= train {
            let actual = matrix;
            let optimum = optimum_of(t)?;
            let last = &series[t - 1];
            let window_start = t.saturating_sub(AIWAN_WINDOW);
            let forecast = forecaster
                .predict_next(&series[t.saturating_sub(FORECAST_HISTORY)..t])
                .unwrap_or_else(|_| last.clone());
            let forecast_problem = problem_for(network, &forecast, &pairs, paths);
            let (forecast_plan, forecast_optimum) = path_lp(&forecast_problem, None)?;
            let mut window: Vec<Problem> = series[window_start..t]
                .iter()
                .map(|m| problem_for(network, m, &pairs, paths))
                .collect();
            let mut scales = Vec::with_capacity(window.len() + 1);
            for past in window_start..t {
                // An empty matrix has optimum 0: any positive scale will do.
                scales.push(optimum_of(past)?.max(1e-12));
            }
            window.push(forecast_problem);
            scales.push(forecast_optimum.max(1e-12));
            let problem = |m: &TrafficMatrix| problem_for(network, m, &pairs, paths);
            let aiwan_plan = aiwan.plan(&series[..t], &levels, &mut optimum_of, &problem)?;
            let plans = [
                path_lp(&problem_for(network, last, &pairs, paths), None)?.0,
                path_lp(&problem_for(network, &ewma, &pairs, paths), None)?.0,
                forecast_plan,
                robust_path_lp(&window, &scales, None)?.0,
                aiwan_plan,
            ];
            let forecasts = [last, &ewma, &forecast, &forecast, &forecast];
            // The planner learns how its candidates did on this matrix
            // only now that it has come.
            aiwan.observe(&|split| {
                let mlu = score(network, actual, &pairs, paths, split);
                if optimum > 0.0 { mlu / optimum } else { 1.0 }
            });
            for (k, plan) in plans.iter().enumerate() {
                let mlu = score(network, actual, &pairs, paths, plan);
                norm[k].push(if optimum > 0.0 { mlu / optimum } else { 1.0 });
                let (e, total) = nmae(forecasts[k], actual);
                errors[k].0 += e;
                errors[k].1 += total;
            }
        }
        for (v, x) in ewma.values.iter_mut().zip(&matrix.values) {
            *v = EWMA_ALPHA * x + (1.0 - EWMA_ALPHA) * *v;
        }
    }
    Ok(names
        .iter()
        .zip(norm)
        .zip(errors)
        .map(|((name, values), (error, total))| MethodScore {
            name,
            mean_norm_mlu: values.iter().sum::<f64>() / values.len().max(1) as f64,
            p90_norm_mlu: percentile(&mut values.clone(), 0.9),
            snapshots: values.len(),
            nmae: if total > 0.0 { error / total } else { 0.0 },
            per_snapshot: values,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lp::tests::{matrix, network};
    use crate::paths::{PathOptions, ShortestPaths, candidate_paths};

    #[test]
    fn the_future_changes_nothing_before_it() {
        // A diamond with varying traffic; then everything after snapshot
        // 11 replaced by absurd matrices. Every method's score of
        // snapshots up to 11 must be the same: it plans from the past only.
        let net = network(4, &[(0, 1, 10.0), (1, 3, 10.0), (0, 2, 10.0), (2, 3, 10.0)]);
        let series: Vec<TrafficMatrix> = (0..16)
            .map(|i| {
                let x = 1.0 + (i as f64 * 0.7).sin().abs() * 5.0;
                matrix(4, &[(0, 3, x), (1, 2, 6.0 - x), (0, 1, 0.5 * x)])
            })
            .collect();
        let mut poisoned = series.clone();
        for (i, m) in poisoned.iter_mut().enumerate().skip(12) {
            for v in &mut m.values {
                *v = *v * 1000.0 + i as f64;
            }
        }
        let mut finder = ShortestPaths::new(&net);
        let mut paths = PairPaths::new();
        for (s, t) in [(0, 3), (1, 2), (0, 1)] {
            let found = candidate_paths(&net, &mut finder, s, t, &PathOptions::k_shortest(2));
            paths.insert((s, t), found.into_iter().map(|p| p.edges).collect());
        }
        let train = 4;
        let clean = evaluate_methods(&net, &series, &paths, train).unwrap();
        let dirty = evaluate_methods(&net, &poisoned, &paths, train).unwrap();
        let before_poison = 12 - train;
        for (a, b) in clean.iter().zip(&dirty) {
            assert_eq!(a.name, b.name);
            assert_eq!(
                a.per_snapshot[..before_poison],
                b.per_snapshot[..before_poison],
                "{}",
                a.name
            );
        }
    }

    /// The two shortest paths of each pair.
    fn two_shortest(net: &Network, pairs: &[(usize, usize)]) -> PairPaths {
        let mut finder = ShortestPaths::new(net);
        let mut paths = PairPaths::new();
        for &(s, t) in pairs {
            let found = candidate_paths(net, &mut finder, s, t, &PathOptions::k_shortest(2));
            paths.insert((s, t), found.into_iter().map(|p| p.edges).collect());
        }
        paths
    }

    #[test]
    fn alternating_traffic_favours_the_robust_plan() {
        // Diamond, two pairs whose demands alternate: planning for the last
        // matrix is wrong every other step; the window plan is not.
        let net = network(4, &[(0, 1, 10.0), (1, 3, 10.0), (0, 2, 10.0), (2, 3, 10.0)]);
        let a = matrix(4, &[(0, 3, 10.0), (1, 2, 1.0)]);
        let b = matrix(4, &[(0, 3, 1.0), (1, 2, 10.0)]);
        let series: Vec<TrafficMatrix> = (0..12)
            .map(|i| if i % 2 == 0 { a.clone() } else { b.clone() })
            .collect();
        let paths = two_shortest(&net, &[(0, 3), (1, 2)]);
        let scores = evaluate_methods(&net, &series, &paths, 4).unwrap();
        let by_name: HashMap<&str, &MethodScore> = scores.iter().map(|s| (s.name, s)).collect();
        assert_eq!(by_name["last-lp"].snapshots, 8);
        assert!(by_name["aiwan"].mean_norm_mlu <= by_name["last-lp"].mean_norm_mlu + 1e-9);
        assert!(scores.iter().all(|s| s.mean_norm_mlu >= 1.0 - 1e-6));
        // The last matrix is always the other one: a large forecast error.
        assert!(by_name["last-lp"].nmae > 1.0);
        // The forecaster learns the alternation once it has five matrices
        // (one snapshot falls back to the last matrix): a small error, and
        // plans for the traffic that comes.
        assert!(
            by_name["linfa-lp"].nmae < by_name["last-lp"].nmae / 4.0,
            "{scores:?}"
        );
        assert!(by_name["linfa-lp"].mean_norm_mlu < by_name["last-lp"].mean_norm_mlu);
    }

    #[test]
    fn a_series_that_starts_empty_is_planned() {
        // The first matrices are empty (GEANT's series has such gaps): the
        // recentred window replays new pairs at their level now, and each
        // such scenario is scaled by its own optimum, not by the empty
        // matrix's zero.
        let net = network(4, &[(0, 1, 10.0), (1, 3, 10.0), (0, 2, 10.0), (2, 3, 10.0)]);
        let busy = matrix(4, &[(0, 3, 8.0), (1, 2, 2.0)]);
        let series: Vec<TrafficMatrix> = (0..10)
            .map(|i| {
                if i < 3 {
                    TrafficMatrix::zeros(4)
                } else {
                    busy.clone()
                }
            })
            .collect();
        let paths = two_shortest(&net, &[(0, 3), (1, 2)]);
        let scores = evaluate_methods(&net, &series, &paths, 2).expect("every method plans");
        let aiwan = scores.iter().find(|s| s.name == "aiwan").expect("aiwan");
        assert!(aiwan.mean_norm_mlu < 1.01, "{scores:?}");
    }
}
