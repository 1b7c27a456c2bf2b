//! Small statistics: spread over repetitions, latency summaries, CDF points
//! (percentiles and medians are `base`'s).

use base::percentile;
use base::stats::midpoint_median;
use serde::Serialize;

use super::data::{Bucket, LatencySamples, LatencySummary};

/// The spread of one value over repetitions.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Spread {
    /// Values (non-finite ones are ignored).
    pub n: usize,
    /// Median (mean of the middle two for an even count).
    pub median: f64,
    /// Smallest.
    pub min: f64,
    /// Largest.
    pub max: f64,
    /// Arithmetic mean.
    pub mean: f64,
    /// Sample standard deviation (n − 1 denominator; 0 for one value).
    pub stddev: f64,
}

/// The spread of `values`; `None` when there is no finite value.
pub fn spread(values: &[f64]) -> Option<Spread> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = midpoint_median(&v)?;
    let mean = v.iter().sum::<f64>() / n as f64;
    let stddev = if n > 1 {
        (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
    } else {
        0.0
    };
    Some(Spread {
        n,
        median,
        min: v[0],
        max: v[n - 1],
        mean,
        stddev,
    })
}

/// Percentiles of raw latency samples (ns), for runners that keep samples.
pub fn summarize(samples: &[u64]) -> LatencySummary {
    let mut v = samples.to_vec();
    v.sort_unstable();
    LatencySummary {
        count: v.len() as u64,
        p50_ns: percentile(&v, 50.0).unwrap_or(0),
        p90_ns: percentile(&v, 90.0).unwrap_or(0),
        p99_ns: percentile(&v, 99.0).unwrap_or(0),
        max_ns: v.last().copied().unwrap_or(0),
    }
}

/// Empirical CDF of raw samples as at most `max_points + 1` points
/// (latency ns, fraction ≤ it), increasing in both.
pub fn cdf_raw(samples: &[u64], max_points: usize) -> Vec<(f64, f64)> {
    let mut v = samples.to_vec();
    v.sort_unstable();
    let n = v.len();
    if n == 0 {
        return Vec::new();
    }
    let k = max_points.max(1).min(n);
    let mut out: Vec<(f64, f64)> = Vec::with_capacity(k + 1);
    for i in 0..=k {
        // Index of the i-th of k evenly spaced ranks; the last is n - 1.
        let idx = (i * (n - 1)) / k;
        // Fraction of samples ≤ v[idx]: past the last duplicate of it.
        let upto = v.partition_point(|&x| x <= v[idx]);
        let p = (v[idx] as f64, upto as f64 / n as f64);
        if out.last() != Some(&p) {
            out.push(p);
        }
    }
    out
}

/// CDF of histogram buckets: one point per non-empty bucket at its upper bound.
pub fn cdf_buckets(buckets: &[Bucket]) -> Vec<(f64, f64)> {
    let total: u64 = buckets.iter().map(|b| b.count).sum();
    if total == 0 {
        return Vec::new();
    }
    let mut sorted = buckets.to_vec();
    sorted.sort_by_key(|b| b.upper_ns);
    let mut acc = 0u64;
    sorted
        .iter()
        .filter(|b| b.count > 0)
        .map(|b| {
            acc += b.count;
            (b.upper_ns as f64, acc as f64 / total as f64)
        })
        .collect()
}

/// The CDF of several runs' samples of one path pooled together (raw samples
/// are pooled; buckets are merged by upper bound). `None` if there are none.
pub fn pooled_cdf<'a>(
    runs: impl IntoIterator<Item = &'a LatencySamples>,
    max_points: usize,
) -> Option<Vec<(f64, f64)>> {
    let mut raw = Vec::new();
    let mut buckets: std::collections::BTreeMap<u64, u64> = Default::default();
    for s in runs {
        match s {
            LatencySamples::Raw(v) => raw.extend_from_slice(v),
            LatencySamples::Buckets(b) => {
                for b in b {
                    *buckets.entry(b.upper_ns).or_default() += b.count;
                }
            }
        }
    }
    // Raw samples become single-value buckets when both kinds are present.
    let points = if buckets.is_empty() {
        cdf_raw(&raw, max_points)
    } else {
        for x in raw {
            *buckets.entry(x).or_default() += 1;
        }
        let b: Vec<Bucket> = buckets
            .into_iter()
            .map(|(upper_ns, count)| Bucket { upper_ns, count })
            .collect();
        cdf_buckets(&b)
    };
    (!points.is_empty()).then_some(points)
}

/// A duration in ns, short and readable: "850ns", "4.21µs", "12.3ms", "1.52s".
pub fn fmt_ns(ns: u64) -> String {
    let f = ns as f64;
    match ns {
        0..=999 => format!("{ns}ns"),
        1_000..=999_999 => format!("{:.2}µs", f / 1e3),
        1_000_000..=999_999_999 => format!("{:.2}ms", f / 1e6),
        _ => format!("{:.2}s", f / 1e9),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_of_odd_and_even_counts() {
        let s = spread(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!(
            (s.n, s.median, s.min, s.max, s.mean),
            (3, 2.0, 1.0, 3.0, 2.0)
        );
        assert!((s.stddev - 1.0).abs() < 1e-12);
        let s = spread(&[4.0, 1.0, 3.0, 2.0]).unwrap();
        assert_eq!(s.median, 2.5);
        assert!((s.stddev - (5.0f64 / 3.0).sqrt()).abs() < 1e-12);
    }

    #[test]
    fn spread_edge_cases() {
        assert_eq!(spread(&[]), None);
        assert_eq!(spread(&[f64::NAN]), None);
        let s = spread(&[7.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.stddev), (7.0, 7.0, 7.0, 0.0));
        // Non-finite values are ignored, not propagated.
        let s = spread(&[1.0, f64::INFINITY, 3.0]).unwrap();
        assert_eq!((s.n, s.median), (2, 2.0));
    }

    /// Percentiles as [`summarize`] takes them: 0 when there are no samples.
    fn percentile(sorted: &[u64], q: f64) -> u64 {
        base::percentile(sorted, q).unwrap_or(0)
    }

    #[test]
    fn percentiles_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&v, 100.0), 100);
        assert_eq!(percentile(&v, 0.0), 1);
        assert_eq!(percentile(&[], 50.0), 0);
        let s = summarize(&[5, 1, 9, 3]);
        assert_eq!((s.count, s.p50_ns, s.p99_ns, s.max_ns), (4, 3, 9, 9));
    }

    #[test]
    fn cdf_raw_is_monotonic_and_ends_at_one() {
        let samples: Vec<u64> = (0..10_000).map(|i| (i * 7919) % 10_007).collect();
        let pts = cdf_raw(&samples, 100);
        assert!(pts.len() <= 101 && pts.len() > 50);
        assert!(pts.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1));
        assert_eq!(pts.last().unwrap().1, 1.0);
        // Duplicates: the fraction counts all equal samples.
        assert_eq!(cdf_raw(&[5, 5, 5, 9], 10), vec![(5.0, 0.75), (9.0, 1.0)]);
        assert!(cdf_raw(&[], 10).is_empty());
    }

    #[test]
    fn cdf_of_buckets_and_pooling() {
        let b = [
            Bucket {
                upper_ns: 2000,
                count: 1,
            },
            Bucket {
                upper_ns: 1000,
                count: 3,
            },
            Bucket {
                upper_ns: 4000,
                count: 0,
            },
        ];
        assert_eq!(cdf_buckets(&b), vec![(1000.0, 0.75), (2000.0, 1.0)]);
        let runs = [
            LatencySamples::Raw(vec![1, 2]),
            LatencySamples::Raw(vec![3, 4]),
        ];
        let pts = pooled_cdf(&runs, 100).unwrap();
        assert_eq!(pts.last().unwrap(), &(4.0, 1.0));
        assert_eq!(pts[0], (1.0, 0.25));
        let mixed = [
            LatencySamples::Raw(vec![1000]),
            LatencySamples::Buckets(b.to_vec()),
        ];
        assert_eq!(
            pooled_cdf(&mixed, 100).unwrap(),
            vec![(1000.0, 0.8), (2000.0, 1.0)]
        );
        assert_eq!(pooled_cdf(&[LatencySamples::Raw(vec![])], 10), None);
    }
}
