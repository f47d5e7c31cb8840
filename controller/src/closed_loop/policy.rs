//! When to re-plan: the closed loop's decision, pure and sans-I/O. Each
//! interval the loop hands over what it predicts under the current plan and
//! under a freshly computed candidate; the policy answers hold or re-plan,
//! and why.
//!
//! - **Congestion**: the predicted MLU under the current plan reaches the
//!   congestion threshold, or some link's chance of exceeding it reaches
//!   the probability threshold. Hysteresis: after a congestion re-plan the
//!   trigger is disarmed until the prediction falls below the clear
//!   threshold, so a network that is simply full is not re-planned every
//!   interval for the same congestion.
//! - **Improvement**: the candidate is better than the current plan by the
//!   margin (relative), while the network is loaded enough for it to
//!   matter (the improvement floor).
//! - Never twice within the minimum interval, and never for a candidate
//!   that is not better at all.

use serde::{Deserialize, Serialize};

use crate::model::PlanTrigger as Trigger;

/// What the loop may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LoopMode {
    /// Measure and forecast only.
    #[default]
    Off,
    /// Store re-plans as proposals for an operator to approve.
    Recommend,
    /// Apply re-plans.
    Auto,
}

impl LoopMode {
    pub fn as_str(self) -> &'static str {
        match self {
            LoopMode::Off => "off",
            LoopMode::Recommend => "recommend",
            LoopMode::Auto => "auto",
        }
    }
}

/// The policy's settings (`[closed_loop]` in the config).
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyConfig {
    pub congestion_threshold: f64,
    pub clear_threshold: f64,
    pub congestion_probability: f64,
    pub improvement_margin: f64,
    pub improvement_floor: f64,
    pub min_interval_ms: i64,
}

impl Default for PolicyConfig {
    fn default() -> PolicyConfig {
        PolicyConfig {
            congestion_threshold: 0.8,
            clear_threshold: 0.7,
            congestion_probability: 0.5,
            improvement_margin: 0.1,
            improvement_floor: 0.5,
            min_interval_ms: 30_000,
        }
    }
}

/// What the policy remembers between intervals.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyState {
    /// The congestion trigger may fire.
    pub armed: bool,
    pub last_replan_ms: Option<i64>,
}

impl Default for PolicyState {
    fn default() -> PolicyState {
        PolicyState {
            armed: true,
            last_replan_ms: None,
        }
    }
}

/// One interval's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub now_ms: i64,
    /// Predicted MLU under the current plan (point forecast).
    pub current_mlu: f64,
    /// MLU measured in the last interval (congestion already there counts
    /// as much as congestion predicted).
    pub measured_mlu: f64,
    /// The highest chance that a link exceeds the congestion threshold
    /// under the current plan, and that link.
    pub max_probability: f64,
    /// Predicted MLU under the candidate, for the same forecast.
    pub candidate_mlu: f64,
}

/// The policy's answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Hold(String),
    Replan(Trigger, String),
}

/// A candidate must beat the current plan by at least this much (relative)
/// for any re-plan: equal plans are churn for nothing.
const MIN_GAIN: f64 = 0.02;

/// Decides, and updates `state` for a re-plan it orders (the caller calls
/// [`PolicyState::replanned`] only once the re-plan was stored).
pub fn decide(config: &PolicyConfig, state: &mut PolicyState, seen: &Observation) -> Decision {
    let congested = seen.current_mlu >= config.congestion_threshold
        || seen.measured_mlu >= config.congestion_threshold
        || seen.max_probability >= config.congestion_probability;
    if !state.armed
        && seen.current_mlu < config.clear_threshold
        && seen.measured_mlu < config.clear_threshold
        && seen.max_probability < config.congestion_probability
    {
        state.armed = true;
    }
    let gain = if seen.current_mlu > 0.0 {
        1.0 - seen.candidate_mlu / seen.current_mlu
    } else {
        0.0
    };
    if let Some(last) = state.last_replan_ms
        && seen.now_ms.saturating_sub(last) < config.min_interval_ms
    {
        return Decision::Hold(format!(
            "minimum interval: last re-plan {:.1} s ago",
            (seen.now_ms - last) as f64 / 1000.0
        ));
    }
    let figures = format!(
        "predicted MLU {:.3} under the current plan, {:.3} under the new one",
        seen.current_mlu, seen.candidate_mlu
    );
    if gain < MIN_GAIN {
        return Decision::Hold(format!("no better plan: {figures}"));
    }
    if congested && state.armed {
        let why = if seen.current_mlu >= config.congestion_threshold {
            format!(
                "congestion predicted: {figures} (threshold {:.2})",
                config.congestion_threshold
            )
        } else if seen.measured_mlu >= config.congestion_threshold {
            format!(
                "congestion seen: MLU {:.3} measured (threshold {:.2}); {figures}",
                seen.measured_mlu, config.congestion_threshold
            )
        } else {
            format!(
                "congestion predicted: a link exceeds {:.2} with probability {:.2}; {figures}",
                config.congestion_threshold, seen.max_probability
            )
        };
        return Decision::Replan(Trigger::Congestion, why);
    }
    if gain >= config.improvement_margin && seen.current_mlu >= config.improvement_floor {
        return Decision::Replan(
            Trigger::Improvement,
            format!(
                "better plan: {figures} ({:.0}% lower, margin {:.0}%)",
                gain * 100.0,
                config.improvement_margin * 100.0
            ),
        );
    }
    if congested {
        return Decision::Hold(format!(
            "congestion re-planned already; waiting for it to clear below {:.2}: {figures}",
            config.clear_threshold
        ));
    }
    Decision::Hold(format!("below the thresholds: {figures}"))
}

impl PolicyState {
    /// Records a stored re-plan.
    pub fn replanned(&mut self, trigger: Trigger, now_ms: i64) {
        self.last_replan_ms = Some(now_ms);
        if trigger == Trigger::Congestion {
            self.armed = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(now_ms: i64, current: f64, candidate: f64) -> Observation {
        Observation {
            now_ms,
            current_mlu: current,
            measured_mlu: 0.0,
            max_probability: 0.0,
            candidate_mlu: candidate,
        }
    }

    fn trigger(decision: &Decision) -> Option<Trigger> {
        match decision {
            Decision::Replan(trigger, _) => Some(*trigger),
            Decision::Hold(_) => None,
        }
    }

    /// Feeds a series of (time, current, candidate) and returns what fired,
    /// marking each re-plan stored.
    fn run(config: &PolicyConfig, series: &[(i64, f64, f64)]) -> Vec<Option<Trigger>> {
        let mut state = PolicyState::default();
        series
            .iter()
            .map(|&(t, current, candidate)| {
                let decision = decide(config, &mut state, &seen(t, current, candidate));
                let fired = trigger(&decision);
                if let Some(trigger) = fired {
                    state.replanned(trigger, t);
                }
                fired
            })
            .collect()
    }

    #[test]
    fn congestion_fires_once_until_it_clears() {
        let config = PolicyConfig {
            min_interval_ms: 0,
            improvement_margin: 0.5,
            ..PolicyConfig::default()
        };
        let fired = run(
            &config,
            &[
                (0, 0.5, 0.45),  // quiet: no trigger, gain too small
                (1, 0.95, 0.6),  // congestion: fires
                (2, 0.9, 0.8),   // still above 0.8, disarmed, gain 11% < 50%
                (3, 0.75, 0.7),  // between clear and congestion: still disarmed
                (4, 0.85, 0.75), // back above: disarmed (never fell below 0.7)
                (5, 0.6, 0.55),  // below clear: re-armed
                (6, 0.85, 0.6),  // fires again
            ],
        );
        use Trigger::Congestion as C;
        assert_eq!(fired, [None, Some(C), None, None, None, None, Some(C)]);
    }

    #[test]
    fn the_minimum_interval_holds_even_congestion() {
        let config = PolicyConfig {
            min_interval_ms: 10_000,
            ..PolicyConfig::default()
        };
        let fired = run(
            &config,
            &[
                (0, 0.95, 0.5),
                (5_000, 0.6, 0.5),
                (6_000, 0.95, 0.5), // re-armed, congested, too soon
                (10_000, 0.95, 0.5),
            ],
        );
        use Trigger::Congestion as C;
        assert_eq!(fired, [Some(C), None, None, Some(C)]);
    }

    #[test]
    fn improvement_needs_the_margin_and_the_floor() {
        let config = PolicyConfig {
            min_interval_ms: 0,
            ..PolicyConfig::default()
        };
        let fired = run(
            &config,
            &[
                (0, 0.6, 0.57), // 5% better: below the 10% margin
                (1, 0.6, 0.5),  // 17% better: fires
                (2, 0.4, 0.2),  // 50% better but below the 0.5 floor
                (3, 0.0, 0.0),  // nothing at all
            ],
        );
        assert_eq!(fired, [None, Some(Trigger::Improvement), None, None]);
    }

    #[test]
    fn probability_alone_can_trigger_and_a_worse_candidate_never() {
        let config = PolicyConfig {
            min_interval_ms: 0,
            ..PolicyConfig::default()
        };
        let mut state = PolicyState::default();
        let mut likely = seen(0, 0.7, 0.5);
        likely.max_probability = 0.6;
        let decision = decide(&config, &mut state, &likely);
        assert_eq!(trigger(&decision), Some(Trigger::Congestion));
        let Decision::Replan(_, why) = decision else {
            unreachable!("checked above")
        };
        assert!(why.contains("probability 0.60"), "{why}");
        let mut state = PolicyState::default();
        let worse = decide(&config, &mut state, &seen(0, 0.95, 0.97));
        assert!(matches!(worse, Decision::Hold(ref why) if why.starts_with("no better plan")));
    }

    #[test]
    fn congestion_measured_triggers_before_the_forecast_sees_it() {
        let config = PolicyConfig {
            min_interval_ms: 0,
            ..PolicyConfig::default()
        };
        let mut state = PolicyState::default();
        let mut now = seen(0, 0.6, 0.4);
        now.measured_mlu = 0.95;
        let decision = decide(&config, &mut state, &now);
        assert!(
            matches!(decision, Decision::Replan(Trigger::Congestion, ref why) if why.starts_with("congestion seen")),
            "{decision:?}"
        );
    }
}
