//! The demo's traffic: a background of real measured matrices with the AI
//! traffic generator's jobs on top, as flows between addresses of the
//! sites' prefixes.
//!
//! - **Background**: one day of Abilene (Internet2) matrices between five
//!   of its routers (`abilene-day.txt`, source named there), mapped onto
//!   the five sites of `lab/ai-wan.clab.yml`, scaled so that a day averages
//!   [`BACKGROUND_MEAN_BPS`] in all, one five-minute matrix every
//!   [`SECONDS_PER_MATRIX`] demo seconds (interpolated in between): a day
//!   passes in 24 minutes. Best-effort.
//! - **Training job** (`train-llm`, ai-sync, DSCP 26, UDP to 4791 as
//!   RoCEv2): a ring all-reduce between the datacentres, both ways. It
//!   declares its usual rate to the controller; every cycle of
//!   [`CYCLE_S`] seconds it scales out at [`SCALE_OUT_AT_S`] for
//!   [`SCALE_OUT_FOR_S`] seconds and its collective bursts rise well past
//!   what it declared, in bursts of [`BURST_PERIOD_S`] seconds.
//! - **Checkpoint** (`ckpt-llm`, ai-bulk, DSCP 10, TCP to 5001): a steady
//!   transfer from dc2 to dc1 at its declared rate.

/// The measured background.
const ABILENE_DAY: &str = include_str!("abilene-day.txt");
/// Sites of the background's rows and columns, in order.
pub const BACKGROUND_SITES: [&str; 5] = ["dc1", "dc2", "pop-north", "pop-south", "pop-east"];
pub const BACKGROUND_MEAN_BPS: f64 = 16e9;
pub const SECONDS_PER_MATRIX: f64 = 5.0;

pub const CYCLE_S: f64 = 90.0;
pub const SCALE_OUT_AT_S: f64 = 10.0;
pub const SCALE_OUT_FOR_S: f64 = 45.0;
pub const BURST_PERIOD_S: f64 = 3.0;
/// Each direction of the training ring: what it declares and usually
/// sends, and its rate when scaled out (the mean of its bursts).
pub const TRAINING_DECLARED_BPS: f64 = 3e9;
pub const TRAINING_SCALED_BPS: f64 = 14e9;
pub const CHECKPOINT_BPS: f64 = 4e9;

/// A traffic class by the DSCP it is marked with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Marking {
    /// AF31 (26): ai-sync in the collectors' default table.
    AiSync,
    /// AF11 (10): ai-bulk.
    AiBulk,
    BestEffort,
}

impl Marking {
    pub fn dscp(self) -> u8 {
        match self {
            Marking::AiSync => 26,
            Marking::AiBulk => 10,
            Marking::BestEffort => 0,
        }
    }

    /// (IP protocol, destination port, packet size in bytes).
    pub fn shape(self) -> (u8, u16, u64) {
        match self {
            Marking::AiSync => (17, 4791, 4096),
            Marking::AiBulk => (6, 5001, 1500),
            Marking::BestEffort => (6, 443, 900),
        }
    }
}

/// What one site sends another in one class, bit/s.
#[derive(Debug, Clone, PartialEq)]
pub struct SiteDemand {
    pub src: &'static str,
    pub dst: &'static str,
    pub marking: Marking,
    pub rate_bps: f64,
}

/// The background matrices, parsed once.
#[derive(Debug, Clone)]
pub struct Background {
    matrices: Vec<[f64; 25]>,
    scale: f64,
}

/// Why the embedded sample could not be read (a build from a damaged
/// checkout).
#[derive(Debug, thiserror::Error)]
#[error("abilene-day.txt line {line}: {reason}")]
pub struct BackgroundError {
    line: usize,
    reason: String,
}

impl Background {
    pub fn embedded() -> Result<Background, BackgroundError> {
        let mut matrices = Vec::new();
        for (index, text) in ABILENE_DAY.lines().enumerate() {
            let text = text.trim();
            if text.is_empty() || text.starts_with('#') {
                continue;
            }
            let values: Vec<f64> = text
                .split_whitespace()
                .map(str::parse)
                .collect::<Result<_, _>>()
                .map_err(|e: std::num::ParseFloatError| BackgroundError {
                    line: index + 1,
                    reason: e.to_string(),
                })?;
            let matrix: [f64; 25] = values.try_into().map_err(|v: Vec<f64>| BackgroundError {
                line: index + 1,
                reason: format!("{} numbers, not 25", v.len()),
            })?;
            matrices.push(matrix);
        }
        if matrices.is_empty() {
            return Err(BackgroundError {
                line: 0,
                reason: "no matrices".into(),
            });
        }
        let mean_total = matrices
            .iter()
            .map(|m| {
                (0..5)
                    .flat_map(|i| (0..5).map(move |j| (i, j)))
                    .filter(|(i, j)| i != j)
                    .map(|(i, j)| m[i * 5 + j])
                    .sum::<f64>()
            })
            .sum::<f64>()
            / matrices.len() as f64;
        Ok(Background {
            scale: if mean_total > 0.0 {
                BACKGROUND_MEAN_BPS / mean_total
            } else {
                0.0
            },
            matrices,
        })
    }

    /// The background `t` seconds into the demo.
    pub fn at(&self, t: f64) -> Vec<SiteDemand> {
        let position = (t / SECONDS_PER_MATRIX).max(0.0);
        let count = self.matrices.len();
        let index = position.floor() as usize;
        let fraction = position - position.floor();
        let (a, b) = (
            &self.matrices[index % count],
            &self.matrices[(index + 1) % count],
        );
        let mut demands = Vec::new();
        for (i, src) in BACKGROUND_SITES.iter().enumerate() {
            for (j, dst) in BACKGROUND_SITES.iter().enumerate() {
                if i == j {
                    continue;
                }
                let rate = (a[i * 5 + j] * (1.0 - fraction) + b[i * 5 + j] * fraction) * self.scale;
                if rate > 0.0 {
                    demands.push(SiteDemand {
                        src,
                        dst,
                        marking: Marking::BestEffort,
                        rate_bps: rate,
                    });
                }
            }
        }
        demands
    }
}

/// Whether the training job is scaled out at `t`.
pub fn scaled_out(t: f64) -> bool {
    let phase = t.rem_euclid(CYCLE_S);
    (SCALE_OUT_AT_S..SCALE_OUT_AT_S + SCALE_OUT_FOR_S).contains(&phase)
}

/// The AI traffic generator's jobs at `t`.
pub fn ai_jobs_at(t: f64) -> Vec<SiteDemand> {
    let training = if scaled_out(t) {
        // Bursts: two thirds of each period at 1.25x the mean, the rest at
        // half of it (mean 1x).
        let phase = t.rem_euclid(BURST_PERIOD_S) / BURST_PERIOD_S;
        let factor = if phase < 2.0 / 3.0 { 1.25 } else { 0.5 };
        TRAINING_SCALED_BPS * factor
    } else {
        TRAINING_DECLARED_BPS
    };
    vec![
        SiteDemand {
            src: "dc1",
            dst: "dc2",
            marking: Marking::AiSync,
            rate_bps: training,
        },
        SiteDemand {
            src: "dc2",
            dst: "dc1",
            marking: Marking::AiSync,
            rate_bps: training,
        },
        SiteDemand {
            src: "dc2",
            dst: "dc1",
            marking: Marking::AiBulk,
            rate_bps: CHECKPOINT_BPS,
        },
    ]
}

/// Everything offered at `t`.
pub fn offered_at(background: &Background, t: f64) -> Vec<SiteDemand> {
    let mut demands = background.at(t);
    demands.extend(ai_jobs_at(t));
    demands
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_background_averages_its_target_over_the_day() {
        let background = Background::embedded().expect("embedded sample");
        let seconds = 288.0 * SECONDS_PER_MATRIX;
        let samples = 2880;
        let mean = (0..samples)
            .map(|k| {
                background
                    .at(k as f64 * seconds / samples as f64)
                    .iter()
                    .map(|d| d.rate_bps)
                    .sum::<f64>()
            })
            .sum::<f64>()
            / samples as f64;
        assert!((mean / BACKGROUND_MEAN_BPS - 1.0).abs() < 0.01, "{mean}");
        // It varies: the day's busiest matrix is well above its quietest.
        let totals: Vec<f64> = (0..288)
            .map(|k| {
                background
                    .at(k as f64 * SECONDS_PER_MATRIX)
                    .iter()
                    .map(|d| d.rate_bps)
                    .sum()
            })
            .collect();
        let (low, high) = totals
            .iter()
            .fold((f64::MAX, 0.0_f64), |(l, h), t| (l.min(*t), h.max(*t)));
        assert!(high > 1.5 * low, "{low} {high}");
    }

    #[test]
    fn the_training_job_scales_out_in_bursts_each_cycle() {
        let sync = |t: f64| {
            ai_jobs_at(t)
                .iter()
                .filter(|d| d.marking == Marking::AiSync && d.src == "dc1")
                .map(|d| d.rate_bps)
                .sum::<f64>()
        };
        assert_eq!(sync(1.0), TRAINING_DECLARED_BPS);
        assert!(sync(SCALE_OUT_AT_S + 0.5) > 2.0 * TRAINING_DECLARED_BPS);
        let period: f64 = (0..300)
            .map(|k| sync(SCALE_OUT_AT_S + k as f64 * BURST_PERIOD_S / 300.0))
            .sum::<f64>()
            / 300.0;
        assert!((period / TRAINING_SCALED_BPS - 1.0).abs() < 0.01);
        assert_eq!(
            sync(SCALE_OUT_AT_S + SCALE_OUT_FOR_S + 1.0),
            TRAINING_DECLARED_BPS
        );
        assert!(sync(CYCLE_S + SCALE_OUT_AT_S + 0.5) > TRAINING_DECLARED_BPS);
    }
}
