//! Latency histograms with fixed bounds, kept as `bigint[]` counts per bucket in
//! `integ.health_buckets` and shown as Prometheus histograms: one set of bounds everywhere, so
//! `integ.health`'s quantiles and `integ.metrics()`' buckets agree.

use pgrx::prelude::*;

/// Upper bounds (ms) of every bucket but the last, which holds everything slower.
pub const BOUNDS_MS: [f64; 11] = [
    5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0,
];
pub const BUCKETS: usize = BOUNDS_MS.len() + 1;

/// The bucket a latency falls in (NaN and infinities in the last).
pub fn bucket_of(ms: f64) -> usize {
    BOUNDS_MS.iter().position(|b| ms <= *b).unwrap_or(BOUNDS_MS.len())
}

/// Counts added bucket by bucket (a missing bucket counts 0; never overflows).
pub fn add(a: &[i64], b: &[i64]) -> Vec<i64> {
    (0..a.len().max(b.len()))
        .map(|i| {
            let x = a.get(i).copied().unwrap_or(0).max(0);
            x.saturating_add(b.get(i).copied().unwrap_or(0).max(0))
        })
        .collect()
}

/// The `q` quantile's bucket bound; the slowest bucket (or a bound above the largest latency
/// seen) answers `max_ms`. None when nothing was counted.
pub fn quantile(h: &[i64], q: f64, max_ms: Option<f64>) -> Option<f64> {
    let total: i64 = h.iter().map(|c| (*c).max(0)).fold(0i64, |a, c| a.saturating_add(c));
    if total == 0 || !q.is_finite() {
        return None;
    }
    let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as i64).max(1);
    let mut seen = 0i64;
    for (i, c) in h.iter().enumerate() {
        seen = seen.saturating_add((*c).max(0));
        if seen >= rank {
            let bound = BOUNDS_MS.get(i).copied();
            return match (bound, max_ms) {
                (Some(b), Some(m)) => Some(b.min(m)),
                (Some(b), None) => Some(b),
                (None, m) => m,
            };
        }
    }
    max_ms
}

fn counts(a: Option<Vec<Option<i64>>>) -> Vec<i64> {
    a.unwrap_or_default().into_iter().map(|c| c.unwrap_or(0)).collect()
}

/// State function of `integ.latency_histogram(float8)`: counts one latency (NULL: none).
#[pg_extern(immutable, parallel_safe)]
fn histogram_count(state: Option<Vec<Option<i64>>>, ms: Option<f64>) -> Vec<i64> {
    let mut h = counts(state);
    h.resize(BUCKETS.max(h.len()), 0);
    if let Some(ms) = ms {
        let i = bucket_of(ms);
        h[i] = h[i].saturating_add(1);
    }
    h
}

/// Two histograms added (state function of `integ.histogram_sum(bigint[])`).
#[pg_extern(immutable, parallel_safe)]
fn histogram_add(a: Option<Vec<Option<i64>>>, b: Option<Vec<Option<i64>>>) -> Option<Vec<i64>> {
    match (a, b) {
        (None, None) => None,
        (a, b) => Some(add(&counts(a), &counts(b))),
    }
}

/// The `q` quantile (0..1) of a histogram in ms, at most `max_ms`.
#[pg_extern(immutable, parallel_safe)]
fn histogram_quantile(h: Option<Vec<Option<i64>>>, q: f64, max_ms: Option<f64>) -> Option<f64> {
    quantile(&counts(h), q, max_ms)
}

/// The buckets' upper bounds in ms (the last bucket has none).
#[pg_extern(immutable, parallel_safe)]
fn histogram_bounds_ms() -> Vec<f64> {
    BOUNDS_MS.to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_fall_in_their_bucket_and_quantiles_read_back() {
        assert_eq!(bucket_of(0.3), 0);
        assert_eq!(bucket_of(5.0), 0);
        assert_eq!(bucket_of(5.1), 1);
        assert_eq!(bucket_of(10_000.1), BUCKETS - 1);
        assert_eq!(bucket_of(f64::NAN), BUCKETS - 1);
        let mut h = vec![0i64; BUCKETS];
        for ms in [1.0, 2.0, 3.0, 7.0, 40.0, 40.0, 40.0, 40.0, 40.0, 900.0] {
            h[bucket_of(ms)] += 1;
        }
        assert_eq!(quantile(&h, 0.5, Some(900.0)), Some(50.0));
        assert_eq!(quantile(&h, 0.95, Some(900.0)), Some(900.0), "capped at the max seen");
        assert_eq!(quantile(&h, 0.3, None), Some(5.0));
        assert_eq!(quantile(&[0; BUCKETS], 0.5, None), None);
        h[BUCKETS - 1] = 100;
        assert_eq!(quantile(&h, 0.99, Some(12_345.0)), Some(12_345.0));
        assert_eq!(add(&[1, 2], &[3]), vec![4, 2]);
        assert_eq!(add(&[i64::MAX], &[5]), vec![i64::MAX]);
    }
}
