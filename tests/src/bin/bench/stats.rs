//! Small statistics helpers: percentiles of samples, and reading counters and histograms
//! out of the admin's Prometheus text.

use serde_json::Value;

pub fn round(v: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (v * f).round() / f
}

/// A JSON number rounded to `digits`, or null when not finite.
pub fn num(v: f64, digits: i32) -> Value {
    if v.is_finite() { Value::from(round(v, digits)) } else { Value::Null }
}

/// Nearest-rank percentile (`q` in 0..=1) of ascending `sorted` samples.
pub fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

/// p50, p99 and max of samples, as (f64, f64, f64); NaN when there are none.
pub fn summary(samples: &mut [f64]) -> (f64, f64, f64) {
    samples.sort_by(f64::total_cmp);
    (
        percentile(samples, 0.50).unwrap_or(f64::NAN),
        percentile(samples, 0.99).unwrap_or(f64::NAN),
        samples.last().copied().unwrap_or(f64::NAN),
    )
}

/// One Prometheus histogram: cumulative counts per upper bound (`le`), +Inf last.
#[derive(Debug, Clone, Default)]
pub struct Histogram {
    pub buckets: Vec<(f64, u64)>,
    pub count: u64,
    pub sum: f64,
}

impl Histogram {
    /// Parses `name`'s buckets, sum and count (a histogram without labels besides `le`).
    pub fn parse(text: &str, name: &str) -> Option<Histogram> {
        let bucket_prefix = format!("{name}_bucket{{le=\"");
        let mut h = Histogram::default();
        let mut seen = false;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix(&bucket_prefix) {
                let (le, value) = rest.split_once("\"}")?;
                let le = if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? };
                h.buckets.push((le, value.trim().parse::<f64>().ok()? as u64));
                seen = true;
            } else if let Some(v) = line.strip_prefix(&format!("{name}_sum ")) {
                h.sum = v.trim().parse().ok()?;
            } else if let Some(v) = line.strip_prefix(&format!("{name}_count ")) {
                h.count = v.trim().parse::<f64>().ok()? as u64;
            }
        }
        seen.then_some(h)
    }

    /// What was observed between `earlier` and `self` (same admin, same buckets).
    pub fn since(&self, earlier: &Histogram) -> Histogram {
        let buckets = self
            .buckets
            .iter()
            .map(|(le, n)| {
                let before = earlier.buckets.iter().find(|(l, _)| l == le).map(|(_, n)| *n).unwrap_or(0);
                (*le, n.saturating_sub(before))
            })
            .collect();
        Histogram { buckets, count: self.count.saturating_sub(earlier.count), sum: self.sum - earlier.sum }
    }

    /// The upper bound of the bucket holding the `q` quantile: "at most this many seconds".
    /// Infinity when it falls in the +Inf bucket; NaN when the histogram is empty.
    pub fn quantile_upper(&self, q: f64) -> f64 {
        if self.count == 0 {
            return f64::NAN;
        }
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        self.buckets.iter().find(|(_, n)| *n >= rank).map(|(le, _)| *le).unwrap_or(f64::INFINITY)
    }

    /// The upper bound of the highest non-empty bucket.
    pub fn max_upper(&self) -> f64 {
        self.quantile_upper(1.0)
    }

    pub fn mean(&self) -> f64 {
        if self.count == 0 { f64::NAN } else { self.sum / self.count as f64 }
    }
}

/// A counter or gauge without labels.
pub fn counter(text: &str, name: &str) -> Option<f64> {
    let prefix = format!("{name} ");
    text.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# TYPE h histogram\nh_bucket{le=\"0.001\"} 2\nh_bucket{le=\"0.005\"} 9\n\
        h_bucket{le=\"+Inf\"} 10\nh_sum 0.5\nh_count 10\nc_total 42\n";

    #[test]
    fn histogram_quantiles_are_bucket_upper_bounds() {
        let h = Histogram::parse(TEXT, "h").unwrap();
        assert_eq!(h.quantile_upper(0.2), 0.001);
        assert_eq!(h.quantile_upper(0.5), 0.005);
        assert_eq!(h.quantile_upper(0.99), f64::INFINITY);
        let d = h.since(&Histogram { buckets: vec![(0.001, 2), (0.005, 2), (f64::INFINITY, 2)], count: 2, sum: 0.0 });
        assert_eq!(d.count, 8);
        assert_eq!(d.quantile_upper(1.0), f64::INFINITY);
        assert_eq!(d.quantile_upper(0.5), 0.005);
        assert_eq!(counter(TEXT, "c_total"), Some(42.0));
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), Some(50.0));
        assert_eq!(percentile(&v, 0.99), Some(99.0));
        assert_eq!(percentile(&v, 1.0), Some(100.0));
    }
}
