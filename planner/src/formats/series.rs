//! Matrix-per-line series (`.hist`, the Abilene `tm_*.txt`): n*n
//! whitespace-separated numbers a line, row-major; and `.opt` files, one
//! float a line.

use super::FormatError;
use crate::network::TrafficMatrix;

/// Parses a series of `n` x `n` matrices, multiplying each value by `scale`.
/// Blank lines are skipped.
pub fn parse_series(text: &str, n: usize, scale: f64) -> Result<Vec<TrafficMatrix>, FormatError> {
    let mut series = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let line_no = i + 1;
        let mut values = Vec::with_capacity(n * n);
        for (k, field) in line.split_whitespace().enumerate() {
            let value: f64 = field.parse().map_err(|_| {
                FormatError::line(
                    line_no,
                    format!("value {} ({field:?}) is not a number", k + 1),
                )
            })?;
            if !value.is_finite() || value < 0.0 {
                return Err(FormatError::line(
                    line_no,
                    format!("value {} ({field}) is negative or not finite", k + 1),
                ));
            }
            values.push(value * scale);
        }
        if values.len() != n * n {
            return Err(FormatError::line(
                line_no,
                format!("{} values, expected {} for {n} nodes", values.len(), n * n),
            ));
        }
        series.push(TrafficMatrix { n, values });
    }
    Ok(series)
}

/// Parses an `.opt` file: one optimum MLU a line.
pub fn parse_opt(text: &str) -> Result<Vec<f64>, FormatError> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            line.trim()
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v >= 0.0)
                .ok_or_else(|| FormatError::line(i + 1, format!("{:?} is not an MLU", line.trim())))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_matrices() {
        let series = parse_series("0 1 2 0\n\n0 0 3 0\n", 2, 10.0).unwrap();
        assert_eq!(series.len(), 2);
        assert_eq!(series[0].get(0, 1), 10.0);
        assert_eq!(series[1].get(1, 0), 30.0);
        assert_eq!(parse_opt("0.5\n1.25\n").unwrap(), [0.5, 1.25]);
    }

    #[test]
    fn errors_name_line_and_field() {
        let cases = [
            ("0 1 2\n", "line 1: 3 values, expected 4 for 2 nodes"),
            (
                "0 1 2 3\n0 x 0 0\n",
                "line 2: value 2 (\"x\") is not a number",
            ),
            ("0 -1 0 0\n", "line 1: value 2 (-1) is negative"),
            (
                "0 NaN 0 0\n",
                "line 1: value 2 (NaN) is negative or not finite",
            ),
        ];
        for (text, expected) in cases {
            let error = parse_series(text, 2, 1.0).unwrap_err().to_string();
            assert!(error.contains(expected), "{error}");
        }
        assert!(
            parse_opt("1\nabc\n")
                .unwrap_err()
                .to_string()
                .contains("line 2")
        );
    }
}
