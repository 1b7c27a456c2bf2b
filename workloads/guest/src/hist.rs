//! A small log-bucket latency histogram (no hdrhistogram in the guest).
//!
//! Values below 16 have a bucket each; above, every power of two is split into 8
//! buckets, so a reported quantile is at most 12.5 % above the true value (it is the
//! upper end of the bucket holding it, clamped to the largest value seen). 496 buckets
//! cover all of `u64`.

/// Exact buckets for small values.
const LINEAR: u64 = 16;
/// Sub-buckets per power of two (a power of two itself).
const SUB: u64 = 8;
/// log2(SUB).
const SUB_BITS: u32 = 3;
/// Buckets in all.
pub const BUCKETS: usize = (LINEAR + (63 - 4 + 1) * SUB) as usize;

/// Counts of values by bucket, with exact count, min, max and sum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Histogram {
    counts: Vec<u64>,
    count: u64,
    min: u64,
    max: u64,
    sum: u128,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

/// The bucket of `v`.
fn bucket(v: u64) -> usize {
    if v < LINEAR {
        return v as usize;
    }
    let e = 63 - v.leading_zeros(); // >= 4
    let sub = (v >> (e - SUB_BITS)) & (SUB - 1);
    (LINEAR + u64::from(e - 4) * SUB + sub) as usize
}

/// The largest value in bucket `b`.
fn upper(b: usize) -> u64 {
    let b = b as u64;
    if b < LINEAR {
        return b;
    }
    let e = (b - LINEAR) / SUB + 4;
    let sub = (b - LINEAR) % SUB;
    let width = 1u64 << (e - u64::from(SUB_BITS));
    // (SUB + sub + 1) * width - 1, without overflowing at the very top.
    ((SUB + sub) * width).saturating_add(width - 1)
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Self {
            counts: vec![0; BUCKETS],
            count: 0,
            min: u64::MAX,
            max: 0,
            sum: 0,
        }
    }

    /// Count `v`.
    pub fn record(&mut self, v: u64) {
        self.counts[bucket(v)] += 1;
        self.count += 1;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        self.sum += u128::from(v);
    }

    /// Add everything counted in `other`.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.count += other.count;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.sum += other.sum;
    }

    /// Values counted.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Smallest value (0 when empty).
    pub fn min(&self) -> u64 {
        if self.count == 0 {
            0
        } else {
            self.min
        }
    }

    /// Largest value (0 when empty).
    pub fn max(&self) -> u64 {
        self.max
    }

    /// Mean (0 when empty).
    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum as f64 / self.count as f64
        }
    }

    /// The value at quantile `q` (0..=1): the upper end of the bucket holding the
    /// `ceil(q * count)`-th smallest value, within `min..=max` (0 when empty).
    pub fn quantile(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (b, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return upper(b).clamp(self.min, self.max);
            }
        }
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_tile_u64() {
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
        assert_eq!(upper(BUCKETS - 1), u64::MAX);
        for b in 0..BUCKETS - 1 {
            assert_eq!(bucket(upper(b)), b, "bucket {b}");
            assert_eq!(bucket(upper(b) + 1), b + 1, "bucket {b}");
        }
        for v in [0, 1, 15, 16, 17, 31, 32, 1000, 123_456_789] {
            let b = bucket(v);
            assert!(upper(b) >= v);
            // At most 12.5 % above.
            assert!(upper(b) - v <= v / 8, "{v}: {}", upper(b));
        }
    }

    #[test]
    fn quantiles_are_close_and_clamped() {
        let mut h = Histogram::new();
        assert_eq!(
            (h.quantile(0.5), h.min(), h.max(), h.mean()),
            (0, 0, 0, 0.0)
        );
        for v in 1..=1000 {
            h.record(v);
        }
        assert_eq!(h.count(), 1000);
        assert_eq!((h.min(), h.max()), (1, 1000));
        assert_eq!(h.mean(), 500.5);
        for (q, exact) in [(0.5, 500.0), (0.9, 900.0), (0.99, 990.0)] {
            let got = h.quantile(q) as f64;
            assert!(got >= exact && got <= exact * 1.125, "p{q}: {got}");
        }
        assert_eq!(h.quantile(1.0), 1000);
        assert_eq!(h.quantile(0.0), 1);
        let mut one = Histogram::new();
        one.record(7);
        assert_eq!((one.quantile(0.5), one.quantile(0.99)), (7, 7));
        let mut big = Histogram::new();
        big.record(1_000_003);
        assert_eq!(big.quantile(0.5), 1_000_003, "clamped to max");
        h.merge(&big);
        assert_eq!((h.count(), h.max(), h.min()), (1001, 1_000_003, 1));
        assert_eq!(h.quantile(1.0), 1_000_003);
    }
}
