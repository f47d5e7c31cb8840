//! Demand forecasting: the next traffic matrix from the recent ones.
//!
//! The model is an autoregression pooled over all pairs, fitted by linfa's
//! least squares: each pair's series is divided by its own mean over the
//! history (so a 10 Gbit/s pair and a 10 Mbit/s pair teach the same model
//! about shape, not size), and the next value is a linear function of the
//! last [`Forecaster::lags`] values. One model for all pairs has a few
//! coefficients to learn from thousands of samples, where a model per pair
//! would have a handful of samples each. The forecast is scaled back per
//! pair and clipped at zero (traffic is never negative).

use linfa::Dataset;
use linfa::traits::{Fit, Predict};
use linfa_linear::LinearRegression;
use ndarray::{Array1, Array2};

use crate::network::TrafficMatrix;

/// Why no forecast could be made.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ForecastError {
    #[error("history of {got} matrices is too short: the model needs at least {needed}")]
    TooShort { got: usize, needed: usize },
    #[error("history matrices differ in size: {first} nodes, then {other}")]
    SizeMismatch { first: usize, other: usize },
    #[error("least-squares fit failed: {0}")]
    Fit(String),
}

/// The ridge term per sample, in units of the normalised series (whose
/// mean is 1): small enough to leave a well-posed fit unchanged.
const RIDGE: f64 = 1e-8;

/// A forecast: the expected matrix and, per pair, the standard deviation
/// of its error (from the model's own errors on the history).
#[derive(Debug, Clone, PartialEq)]
pub struct Forecast {
    pub mean: TrafficMatrix,
    pub sigma: TrafficMatrix,
}

/// z-score of a two-sided 90% band under a normal error.
pub const BAND_90_Z: f64 = 1.6449;

impl Forecast {
    /// The 90% band of a pair, clipped at zero.
    pub fn band(&self, src: usize, dst: usize) -> (f64, f64) {
        let (mean, sigma) = (self.mean.get(src, dst), self.sigma.get(src, dst));
        (
            (mean - BAND_90_Z * sigma).max(0.0),
            mean + BAND_90_Z * sigma,
        )
    }
}

/// Pairs' own error estimates are pulled towards the pooled one by this
/// many pseudo-samples: a pair with a short history borrows from the rest.
const SIGMA_PRIOR_SAMPLES: f64 = 4.0;

/// A pooled autoregressive forecaster.
#[derive(Debug, Clone, PartialEq)]
pub struct Forecaster {
    /// Past values each prediction looks at.
    pub lags: usize,
}

impl Default for Forecaster {
    fn default() -> Self {
        Forecaster { lags: 3 }
    }
}

impl Forecaster {
    /// The matrix expected after `history` (oldest first).
    pub fn predict_next(&self, history: &[TrafficMatrix]) -> Result<TrafficMatrix, ForecastError> {
        Ok(self.predict_with_band(history)?.mean)
    }

    /// The matrix expected after `history` (oldest first), with each pair's
    /// error deviation: the model's errors on the history it learnt from,
    /// per pair in its normalised units, pulled towards the pooled error
    /// ([`SIGMA_PRIOR_SAMPLES`]) and scaled back by the pair's mean.
    pub fn predict_with_band(&self, history: &[TrafficMatrix]) -> Result<Forecast, ForecastError> {
        let lags = self.lags.max(1);
        // At least two samples per coefficient (lags + intercept).
        let needed = lags + 2;
        if history.len() < needed {
            return Err(ForecastError::TooShort {
                got: history.len(),
                needed,
            });
        }
        let n = history[0].n;
        if let Some(other) = history.iter().find(|m| m.n != n || m.values.len() != n * n) {
            return Err(ForecastError::SizeMismatch {
                first: n,
                other: other.n,
            });
        }
        let cells = n * n;
        let means: Vec<f64> = (0..cells)
            .map(|c| history.iter().map(|m| m.values[c]).sum::<f64>() / history.len() as f64)
            .collect();
        let active: Vec<usize> = (0..cells)
            .filter(|&c| means[c] > 0.0 && means[c].is_finite())
            .collect();
        let mut forecast = TrafficMatrix::zeros(n);
        let mut sigma = TrafficMatrix::zeros(n);
        if active.is_empty() {
            return Ok(Forecast {
                mean: forecast,
                sigma,
            });
        }
        let samples_per_pair = history.len() - lags;
        let rows = active.len() * samples_per_pair;
        // One extra row per coefficient, `sqrt(ridge)` on its own feature
        // and target 0, turns least squares into ridge regression: traffic
        // with a period that divides a lag (day/night, or the alternation
        // of a training job) makes lags collinear, which plain least squares
        // cannot solve and a small ridge term can.
        let mut records = Array2::<f64>::zeros((rows + lags, lags));
        let mut targets = Array1::<f64>::zeros(rows + lags);
        let ridge = (RIDGE * rows as f64).sqrt();
        for lag in 0..lags {
            records[[rows + lag, lag]] = ridge;
        }
        let mut row = 0;
        for &c in &active {
            for t in lags..history.len() {
                for lag in 0..lags {
                    records[[row, lag]] = history[t - 1 - lag].values[c] / means[c];
                }
                targets[row] = history[t].values[c] / means[c];
                row += 1;
            }
        }
        let model = LinearRegression::new()
            .fit(&Dataset::new(records.clone(), targets.clone()))
            .map_err(|e| ForecastError::Fit(e.to_string()))?;
        // In-sample errors, per pair and pooled (the ridge rows left out).
        let fitted: Array1<f64> = model.predict(&records);
        let mut squared = vec![0.0; active.len()];
        for (i, chunk) in squared.iter_mut().enumerate() {
            for t in 0..samples_per_pair {
                let row = i * samples_per_pair + t;
                *chunk += (targets[row] - fitted[row]).powi(2);
            }
        }
        let pooled = squared.iter().sum::<f64>() / rows.max(1) as f64;
        let mut latest = Array2::<f64>::zeros((active.len(), lags));
        for (i, &c) in active.iter().enumerate() {
            for lag in 0..lags {
                latest[[i, lag]] = history[history.len() - 1 - lag].values[c] / means[c];
            }
        }
        let predicted: Array1<f64> = model.predict(&latest);
        for (i, (&c, &value)) in active.iter().zip(predicted.iter()).enumerate() {
            let value = value * means[c];
            forecast.values[c] = if value.is_finite() {
                value.max(0.0)
            } else {
                0.0
            };
            let variance = (squared[i] + SIGMA_PRIOR_SAMPLES * pooled)
                / (samples_per_pair as f64 + SIGMA_PRIOR_SAMPLES);
            let deviation = variance.sqrt() * means[c];
            sigma.values[c] = if deviation.is_finite() {
                deviation
            } else {
                0.0
            };
        }
        Ok(Forecast {
            mean: forecast,
            sigma,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(values: &[[f64; 2]]) -> Vec<TrafficMatrix> {
        // Two nodes: the pairs 0->1 and 1->0 carry the two columns.
        values
            .iter()
            .map(|v| TrafficMatrix {
                n: 2,
                values: vec![0.0, v[0], v[1], 0.0],
            })
            .collect()
    }

    #[test]
    fn learns_a_shared_trend_at_each_pairs_scale() {
        // Both pairs grow 10% a step, one a thousand times larger.
        let rows: Vec<[f64; 2]> = (0..12)
            .map(|t| {
                let x = 1.1f64.powi(t);
                [1000.0 * x, x]
            })
            .collect();
        let forecast = Forecaster::default().predict_next(&series(&rows)).unwrap();
        let expected = 1.1f64.powi(12);
        assert!((forecast.get(0, 1) / (1000.0 * expected) - 1.0).abs() < 1e-4);
        assert!((forecast.get(1, 0) / expected - 1.0).abs() < 1e-4);
        assert_eq!(forecast.get(0, 0), 0.0);
    }

    #[test]
    fn follows_an_alternation_the_last_value_misses() {
        let rows: Vec<[f64; 2]> = (0..16)
            .map(|t| if t % 2 == 0 { [10.0, 5.0] } else { [2.0, 1.0] })
            .collect();
        // The last row (t = 15) is low; the next is high.
        let forecast = Forecaster::default().predict_next(&series(&rows)).unwrap();
        assert!((forecast.get(0, 1) - 10.0).abs() < 1e-3, "{forecast:?}");
        assert!((forecast.get(1, 0) - 5.0).abs() < 1e-3);
    }

    /// One pair's series as matrices.
    fn single(values: &[f64]) -> Vec<TrafficMatrix> {
        values
            .iter()
            .map(|v| TrafficMatrix {
                n: 2,
                values: vec![0.0, *v, 0.0, 0.0],
            })
            .collect()
    }

    #[test]
    fn a_sinusoid_is_predicted_exactly_with_a_narrow_band() {
        let wave = |t: usize| 10.0 + 5.0 * (2.0 * std::f64::consts::PI * t as f64 / 12.0).sin();
        let history: Vec<f64> = (0..36).map(wave).collect();
        let forecast = Forecaster::default()
            .predict_with_band(&single(&history))
            .unwrap();
        assert!(
            (forecast.mean.get(0, 1) - wave(36)).abs() < 1e-3,
            "{forecast:?}"
        );
        assert!(forecast.sigma.get(0, 1) < 1e-3, "{forecast:?}");
    }

    #[test]
    fn after_a_step_the_new_level_is_predicted() {
        let mut history = vec![5.0; 24];
        history.extend([15.0; 6]);
        let forecast = Forecaster::default()
            .predict_next(&single(&history))
            .unwrap();
        assert!(
            (forecast.get(0, 1) / 15.0 - 1.0).abs() < 0.1,
            "{forecast:?}"
        );
    }

    #[test]
    fn a_periodic_burst_is_predicted_before_it_comes() {
        // On one interval in three (a collective's burst), off between.
        let burst = |t: usize| if t.is_multiple_of(3) { 20.0 } else { 2.0 };
        let history: Vec<f64> = (0..30).map(burst).collect();
        let forecaster = Forecaster::default();
        let next = forecaster.predict_next(&single(&history)).unwrap();
        assert!((next.get(0, 1) - burst(30)).abs() < 0.5, "{next:?}");
        let later = forecaster
            .predict_next(&single(&(0..31).map(burst).collect::<Vec<_>>()))
            .unwrap();
        assert!((later.get(0, 1) - burst(31)).abs() < 0.5, "{later:?}");
    }

    #[test]
    fn noise_widens_the_band() {
        // A level of 10 with noise of deviation about 1 (a fixed sequence).
        let noise = [
            0.3, -1.2, 0.8, 1.5, -0.4, -1.1, 0.2, 0.9, -1.6, 1.0, -0.2, 0.6,
        ];
        let history: Vec<f64> = (0..36)
            .map(|t| 10.0 + noise[t % 12] * (1.0 + (t / 12) as f64 * 0.1))
            .collect();
        let forecast = Forecaster::default()
            .predict_with_band(&single(&history))
            .unwrap();
        let sigma = forecast.sigma.get(0, 1);
        assert!((0.5..2.0).contains(&sigma), "{sigma}");
        let (low, high) = forecast.band(0, 1);
        assert!(low < forecast.mean.get(0, 1) && forecast.mean.get(0, 1) < high);
    }

    #[test]
    fn short_or_ragged_history_is_an_error() {
        let short = series(&[[1.0, 1.0]; 3]);
        assert_eq!(
            Forecaster::default().predict_next(&short),
            Err(ForecastError::TooShort { got: 3, needed: 5 })
        );
        let mut ragged = series(&[[1.0, 1.0]; 6]);
        ragged.push(TrafficMatrix::zeros(3));
        assert!(matches!(
            Forecaster::default().predict_next(&ragged),
            Err(ForecastError::SizeMismatch { first: 2, other: 3 })
        ));
    }
}
