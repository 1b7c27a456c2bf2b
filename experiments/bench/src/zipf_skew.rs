//! Choosing a zipf exponent by the share of accesses its hottest pages get.

/// Share of a Zipf(`n`, `s`) distribution's mass on its `top` most likely ranks.
pub fn top_share(n: u64, s: f64, top: u64) -> f64 {
    let (mut head, mut all) = (0.0, 0.0);
    // Smallest terms first, for a more exact sum.
    for k in (1..=n).rev() {
        let p = (k as f64).powf(-s);
        all += p;
        if k <= top {
            head += p;
        }
    }
    head / all
}

/// The exponent that puts `share` of the accesses on the hottest `fraction` of `n`
/// pages (e.g. 0.9 on 0.1 for "zipf 90/10"), by bisection in `(0, 8]`.
pub fn skew_for(n: u64, fraction: f64, share: f64) -> f64 {
    let top = ((n as f64 * fraction).round() as u64).clamp(1, n);
    let (mut lo, mut hi) = (1e-3, 8.0);
    for _ in 0..60 {
        let mid = (lo + hi) / 2.0;
        if top_share(n, mid, top) < share {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    (lo + hi) / 2.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_and_skews() {
        // s = 0: uniform.
        assert!((top_share(1000, 0.0, 100) - 0.1).abs() < 1e-12);
        // Steeper means more on the head.
        assert!(top_share(65536, 1.2, 6554) > top_share(65536, 1.0, 6554));
        let s = skew_for(65536, 0.1, 0.9);
        assert!(s > 1.0 && s < 1.3, "{s}");
        assert!((top_share(65536, s, 6554) - 0.9).abs() < 1e-6);
        // One page: anything works, no panic.
        assert!(skew_for(1, 0.1, 0.9).is_finite());
    }
}
