//! Planning for the traffic that may come next as a sample of scenarios
//! drawn from the recent past: aiwan's predict-then-optimise method.
//!
//! Each past matrix of a window is a scenario of the next one. Its
//! pattern (each pair's rate relative to that pair's level then) is
//! *recentred* on the level now (an EWMA of everything before), so that a
//! day's worth of fluctuations is replayed around where traffic is today:
//! `scenario_k = level_now * X_k / level_k`, pair by pair. One split serves
//! them all, minimising the mean of their MLUs each relative to that
//! scenario's own optimum (a sample-average approximation of the expected
//! normalised MLU). Two windows are kept, a short recentred one that
//! follows shifts and a long raw one that covers rare bursts; each plans
//! every snapshot and the one whose own plans did better lately is used
//! (scored only on matrices that have arrived).
//!
//! Solved by row generation ([`crate::lp::scenario_path_lp_rowgen`]):
//! only the edges that bind enter the LP, so hundreds of scenarios stay
//! cheap.

use std::collections::{BTreeMap, VecDeque};

use crate::allocation::{Allocation, Problem};
use crate::lp::{LpError, ScenarioObjective, path_lp, scenario_path_lp_rowgen};
use crate::network::TrafficMatrix;

/// How a window's matrices become scenarios.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scenarios {
    /// As they were.
    Raw,
    /// Recentred on the level now, the level an EWMA with this weight on
    /// the newest matrix.
    Recentred { alpha: f64 },
}

/// One window's planner: its settings and the edges that bound each
/// scenario last time (the row generation's seeds).
#[derive(Debug, Clone)]
pub struct WindowPlanner {
    pub window: usize,
    /// Every `stride`-th matrix of the window is a scenario (the newest
    /// always is): a long window as a sample of its span, at a fraction of
    /// the LP's size.
    pub stride: usize,
    pub scenarios: Scenarios,
    seeds: BTreeMap<usize, Vec<usize>>,
}

impl WindowPlanner {
    pub fn new(window: usize, scenarios: Scenarios) -> WindowPlanner {
        WindowPlanner::with_stride(window, 1, scenarios)
    }

    pub fn with_stride(window: usize, stride: usize, scenarios: Scenarios) -> WindowPlanner {
        WindowPlanner {
            window: window.max(1),
            stride: stride.max(1),
            scenarios,
            seeds: BTreeMap::new(),
        }
    }

    /// The split for the snapshot after `history`. `optimum(k)` is the LP
    /// optimum of `history[k]` (cached by the caller), `problem(m)` the
    /// problem of a matrix over the candidate paths, `levels[k]` the EWMA
    /// level before `history[k]` (at least `history.len() + 1` of them, the
    /// one at `history.len()` being the level now; unused for raw windows).
    pub fn plan(
        &mut self,
        history: &[TrafficMatrix],
        levels: &[TrafficMatrix],
        optimum: &mut dyn FnMut(usize) -> Result<f64, LpError>,
        problem: &dyn Fn(&TrafficMatrix) -> Problem,
    ) -> Result<Allocation, LpError> {
        let t = history.len();
        let first = t
            .saturating_sub(self.window)
            .max(1)
            .min(t.saturating_sub(1));
        let mut problems = Vec::new();
        let mut scales = Vec::new();
        let mut keys = Vec::new();
        for (k, past) in history.iter().enumerate().take(t).skip(first) {
            if !(t - 1 - k).is_multiple_of(self.stride) {
                continue;
            }
            let (matrix, factor) = match self.scenarios {
                Scenarios::Raw => (past.clone(), Some(1.0)),
                Scenarios::Recentred { .. } => {
                    let (Some(then), Some(now)) = (levels.get(k), levels.get(t)) else {
                        return Err(LpError::Setup("levels do not cover the history".into()));
                    };
                    let recentred = recentre(past, then, now);
                    // The scale follows the matrix's total, unless the
                    // matrix was empty (pairs new since are replayed at
                    // their level now): then it has an optimum of its own.
                    let factor = (past.total() > 0.0).then(|| recentred.total() / past.total());
                    (recentred, factor)
                }
            };
            let scenario = problem(&matrix);
            let scale = match factor {
                Some(factor) => optimum(k)? * factor,
                None => path_lp(&scenario, None)?.1,
            };
            // An empty matrix has optimum 0: any positive scale will do.
            scales.push(scale.max(1e-12));
            problems.push(scenario);
            keys.push(k);
        }
        if problems.is_empty() {
            problems.push(problem(&history[t.saturating_sub(1)]));
            scales.push(optimum(t.saturating_sub(1))?.max(1e-12));
            keys.push(t.saturating_sub(1));
        }
        let weights = vec![1.0 / problems.len() as f64; problems.len()];
        let seeds: Vec<Vec<usize>> = keys
            .iter()
            .map(|k| self.seeds.get(k).cloned().unwrap_or_default())
            .collect();
        let (allocation, _, binding) = scenario_path_lp_rowgen(
            &problems,
            &scales,
            &ScenarioObjective::Mean(weights),
            &seeds,
            None,
        )?;
        for (k, edges) in keys.into_iter().zip(binding) {
            self.seeds.insert(k, edges);
        }
        // Forget scenarios that left every window.
        let oldest = t.saturating_sub(self.window + 1);
        self.seeds = self.seeds.split_off(&oldest);
        Ok(allocation)
    }
}

/// A pair's rate relative to its level then is replayed at most this many
/// times its level now. On the data in `../shared/data` 99.9% of the
/// ratios are below 10; the rest are pairs rising from next to nothing
/// (Abilene has one at 5e9 times its level), whose ratio says nothing of
/// how far today's level may rise, and on-off pairs in the live loop (an
/// AI job's bursts after a quiet spell) would otherwise be replayed at
/// thousands of times their rate.
pub const RATIO_CAP: f64 = 10.0;

/// `level_now * matrix / level_then`, pair by pair, the ratio at most
/// [`RATIO_CAP`]. A pair with no level then (never seen before) has no
/// ratio: its rate then, or its level now where that is higher (a pair
/// new since is replayed at its level now, not as absent).
pub fn recentre(
    matrix: &TrafficMatrix,
    level_then: &TrafficMatrix,
    level_now: &TrafficMatrix,
) -> TrafficMatrix {
    TrafficMatrix {
        n: matrix.n,
        values: matrix
            .values
            .iter()
            .zip(&level_then.values)
            .zip(&level_now.values)
            .map(|((x, then), now)| {
                if *then > 0.0 {
                    now * (x / then).min(RATIO_CAP)
                } else {
                    x.max(*now)
                }
            })
            .collect(),
    }
}

/// EWMA levels of a series: `levels[k]` summarises the matrices before `k`
/// (`levels[0]` and `levels[1]` are the first matrix), `alpha` the weight
/// of the newest; one more level than matrices.
pub fn levels(series: &[TrafficMatrix], alpha: f64) -> Vec<TrafficMatrix> {
    let Some(first) = series.first() else {
        return Vec::new();
    };
    let mut levels = vec![first.clone(), first.clone()];
    for matrix in &series[1..] {
        let last = levels.last().cloned().unwrap_or_else(|| first.clone());
        levels.push(TrafficMatrix {
            n: matrix.n,
            values: matrix
                .values
                .iter()
                .zip(&last.values)
                .map(|(x, l)| alpha * x + (1.0 - alpha) * l)
                .collect(),
        });
    }
    levels
}

/// aiwan's method: the short recentred window and the long raw one, the
/// better of the two lately.
#[derive(Debug, Clone)]
pub struct AiwanPlanner {
    pub candidates: Vec<WindowPlanner>,
    /// Each candidate's recent normalised MLUs, newest last.
    scores: Vec<VecDeque<f64>>,
    /// Each candidate's split for the snapshot not scored yet.
    pending: Vec<Option<Allocation>>,
    pub history_scored: usize,
}

/// Snapshots the choice looks back on.
pub const SELECTION_HISTORY: usize = 96;
/// Scores needed before the choice moves away from the first candidate.
const SELECTION_MINIMUM: usize = 6;
/// The short window (recentred) and its EWMA weight; the long window (raw)
/// and its stride (a day of 5-minute matrices as 72 scenarios: the LP's
/// time grows faster than its scenario count, and a sample of the day's
/// bursts serves as well as all of them).
pub const SHORT_WINDOW: usize = 48;
pub const SHORT_ALPHA: f64 = 0.5;
pub const LONG_WINDOW: usize = 288;
pub const LONG_STRIDE: usize = 4;

impl Default for AiwanPlanner {
    fn default() -> Self {
        AiwanPlanner::new(vec![
            WindowPlanner::new(SHORT_WINDOW, Scenarios::Recentred { alpha: SHORT_ALPHA }),
            WindowPlanner::with_stride(LONG_WINDOW, LONG_STRIDE, Scenarios::Raw),
        ])
    }
}

impl AiwanPlanner {
    pub fn new(candidates: Vec<WindowPlanner>) -> AiwanPlanner {
        let count = candidates.len();
        AiwanPlanner {
            candidates,
            scores: vec![VecDeque::new(); count],
            pending: vec![None; count],
            history_scored: 0,
        }
    }

    /// Tells the planner the matrix that came after its last plans, with
    /// the normalised MLU `score(split)` of each candidate's split on it.
    pub fn observe(&mut self, score: &dyn Fn(&Allocation) -> f64) {
        for (pending, scores) in self.pending.iter_mut().zip(&mut self.scores) {
            if let Some(split) = pending.take() {
                scores.push_back(score(&split));
                if scores.len() > SELECTION_HISTORY {
                    scores.pop_front();
                }
            }
        }
        self.history_scored += 1;
    }

    /// Which candidate plans now: the lowest mean recent score.
    pub fn choice(&self) -> usize {
        if self.scores.iter().any(|s| s.len() < SELECTION_MINIMUM) {
            return 0;
        }
        self.scores
            .iter()
            .enumerate()
            .map(|(i, s)| (i, s.iter().sum::<f64>() / s.len() as f64))
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map_or(0, |(i, _)| i)
    }

    /// The EWMA weights whose levels [`Self::plan`] needs.
    pub fn alphas(&self) -> Vec<f64> {
        self.candidates
            .iter()
            .filter_map(|c| match c.scenarios {
                Scenarios::Recentred { alpha } => Some(alpha),
                Scenarios::Raw => None,
            })
            .collect()
    }

    /// Every candidate's split for the next snapshot; returns the chosen
    /// one (see [`WindowPlanner::plan`] for the arguments). `levels(alpha)`
    /// `levels` holds, for each of [`Self::alphas`], the EWMA levels of the
    /// series known so far ([`levels`], at least `history.len() + 1`).
    pub fn plan(
        &mut self,
        history: &[TrafficMatrix],
        levels: &[(f64, Vec<TrafficMatrix>)],
        optimum: &mut dyn FnMut(usize) -> Result<f64, LpError>,
        problem: &dyn Fn(&TrafficMatrix) -> Problem,
    ) -> Result<Allocation, LpError> {
        let choice = self.choice();
        let mut chosen = None;
        for (i, candidate) in self.candidates.iter_mut().enumerate() {
            let own: &[TrafficMatrix] = match candidate.scenarios {
                Scenarios::Recentred { alpha } => levels
                    .iter()
                    .find(|(a, _)| *a == alpha)
                    .map_or(&[], |(_, l)| l.as_slice()),
                Scenarios::Raw => &[],
            };
            let split = candidate.plan(history, own, optimum, problem)?;
            if i == choice {
                chosen = Some(split.clone());
            }
            self.pending[i] = Some(split);
        }
        chosen.ok_or_else(|| LpError::Setup("no candidate planned".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(values: &[f64]) -> TrafficMatrix {
        TrafficMatrix {
            n: 2,
            values: values.to_vec(),
        }
    }

    #[test]
    fn recentring_keeps_the_pattern_at_today_s_level() {
        let then = m(&[0.0, 10.0, 4.0, 0.0]);
        let level_then = m(&[0.0, 5.0, 4.0, 0.0]);
        let level_now = m(&[0.0, 50.0, 2.0, 0.0]);
        // Pair 0->1 was at twice its level then: twice its level now.
        assert_eq!(
            recentre(&then, &level_then, &level_now).values,
            [0.0, 100.0, 2.0, 0.0]
        );
        let series = [m(&[0.0, 1.0, 0.0, 0.0]), m(&[0.0, 3.0, 0.0, 0.0])];
        let levels = levels(&series, 0.5);
        assert_eq!(levels.len(), 3);
        assert_eq!(levels[2].values[1], 2.0);
    }

    #[test]
    fn recentring_bounds_ratios_and_keeps_new_pairs() {
        // 0->1 rose from next to nothing: replayed at most RATIO_CAP times
        // its level now. 1->0 had no level then: at its level now.
        let then = m(&[0.0, 5.0, 0.0, 0.0]);
        let level_then = m(&[0.0, 1e-9, 0.0, 0.0]);
        let level_now = m(&[0.0, 4.0, 3.0, 0.0]);
        assert_eq!(
            recentre(&then, &level_then, &level_now).values,
            [0.0, 4.0 * RATIO_CAP, 3.0, 0.0]
        );
    }
}
