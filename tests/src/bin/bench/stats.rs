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
    /// Parses `name`'s buckets, sum and count, added up over its series (the admin keeps
    /// one per job type: `{job_type="...",le="..."}`), so the bench sees every job.
    pub fn parse(text: &str, name: &str) -> Option<Histogram> {
        let bucket = format!("{name}_bucket");
        let (sum, count) = (format!("{name}_sum"), format!("{name}_count"));
        let mut h = Histogram::default();
        let mut seen = false;
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, labels) = series.split_once('{').unwrap_or((series, ""));
            if metric == bucket {
                let le = labels.split("le=\"").nth(1)?.split('"').next()?;
                let le = if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? };
                let n = value.trim().parse::<f64>().ok()? as u64;
                match h.buckets.iter_mut().find(|(l, _)| *l == le) {
                    Some((_, total)) => *total += n,
                    None => h.buckets.push((le, n)),
                }
                seen = true;
            } else if metric == sum {
                h.sum += value.trim().parse::<f64>().ok()?;
            } else if metric == count {
                h.count += value.trim().parse::<f64>().ok()? as u64;
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
    fn a_histogram_with_series_per_job_type_is_added_up() {
        let text = "# TYPE h histogram\nh_bucket{job_type=\"a\",le=\"0.001\"} 2\nh_bucket{job_type=\"a\",le=\"+Inf\"} 3\n\
            h_sum{job_type=\"a\"} 0.5\nh_count{job_type=\"a\"} 3\nh_bucket{job_type=\"b\",le=\"0.001\"} 1\n\
            h_bucket{job_type=\"b\",le=\"+Inf\"} 4\nh_sum{job_type=\"b\"} 1.5\nh_count{job_type=\"b\"} 4\n";
        let h = Histogram::parse(text, "h").unwrap();
        assert_eq!(h.buckets, vec![(0.001, 3), (f64::INFINITY, 7)]);
        assert_eq!((h.count, h.sum), (7, 2.0));
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), Some(50.0));
        assert_eq!(percentile(&v, 0.99), Some(99.0));
        assert_eq!(percentile(&v, 1.0), Some(100.0));
    }
}
