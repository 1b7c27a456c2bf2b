//! Percentiles and medians.
//!
//! [`percentile`] and [`median`] are nearest-rank: the value at rank
//! `ceil(q/100 · n)` (at least 1) of the sorted values — always one of the
//! values, never an interpolation, so a latency percentile is a latency that
//! happened. [`midpoint_median`] is for measurements (seconds, rates) where
//! the mean of the two middle values is the usual median.

/// The nearest-rank `q`-th percentile (`q` in 0–100, clamped) of `sorted`
/// (ascending); `None` if it is empty. `q = 0` gives the minimum, `q = 100`
/// the maximum.
pub fn percentile<T: Copy>(sorted: &[T], q: f64) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    let q = if q.is_nan() { 0.0 } else { q.clamp(0.0, 100.0) };
    let rank = ((q / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// [`percentile`] of values in any order (sorts a copy).
pub fn percentile_of<T: Copy + Ord>(values: &[T], q: f64) -> Option<T> {
    let mut v = values.to_vec();
    v.sort_unstable();
    percentile(&v, q)
}

/// The nearest-rank median of `sorted` (ascending): the lower middle value
/// for an even count; `None` if empty.
pub fn median<T: Copy>(sorted: &[T]) -> Option<T> {
    percentile(sorted, 50.0)
}

/// The median of measurements in any order, the mean of the two middle ones
/// for an even count; non-finite values (NaN, ±∞) are ignored; `None` if no
/// finite value is left.
pub fn midpoint_median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), Some(50));
        assert_eq!(percentile(&v, 99.0), Some(99));
        assert_eq!(percentile(&v, 99.5), Some(100));
        assert_eq!(percentile(&v, 100.0), Some(100));
        assert_eq!(percentile(&v, 0.0), Some(1));
        assert_eq!(percentile::<u64>(&[], 50.0), None);
        assert_eq!(percentile(&[1, 3, 5, 9], 50.0), Some(3));
        assert_eq!(percentile(&[1, 3, 5, 9], 99.0), Some(9));
    }

    #[test]
    fn out_of_range_q_is_clamped() {
        let v = [10, 20, 30];
        assert_eq!(percentile(&v, -5.0), Some(10));
        assert_eq!(percentile(&v, 250.0), Some(30));
        assert_eq!(percentile(&v, f64::NAN), Some(10));
    }

    #[test]
    fn unsorted_input_is_sorted_first() {
        assert_eq!(percentile_of(&[4, 1, 3, 2], 50.0), Some(2));
        assert_eq!(percentile_of(&[4, 1, 3, 2], 100.0), Some(4));
        assert_eq!(percentile_of(&[4, 1, 3, 2], 0.0), Some(1));
        assert_eq!(percentile_of(&[5], 99.0), Some(5));
        assert_eq!(percentile_of::<u32>(&[], 50.0), None);
    }

    #[test]
    fn median_is_the_lower_middle() {
        assert_eq!(median(&[1, 2, 3]), Some(2));
        assert_eq!(median(&[1, 2, 3, 4]), Some(2));
        assert_eq!(median(&[7.5]), Some(7.5));
        assert_eq!(median::<i32>(&[]), None);
    }

    #[test]
    fn midpoint_median_averages_and_skips_non_finite() {
        assert_eq!(midpoint_median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(midpoint_median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(midpoint_median(&[]), None);
        assert_eq!(midpoint_median(&[f64::NAN, 5.0]), Some(5.0));
        assert_eq!(midpoint_median(&[1.0, f64::INFINITY, 3.0]), Some(2.0));
        assert_eq!(midpoint_median(&[f64::NAN]), None);
    }
}
