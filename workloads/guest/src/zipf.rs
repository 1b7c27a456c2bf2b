//! Zipf-distributed ranks by rejection-inversion (Hörmann & Derflinger, 1996).
//!
//! Rank `k` in `1..=n` has probability proportional to `k^-s`. Rejection-inversion
//! needs no table (O(1) memory and expected O(1) time per sample) and works for every
//! exponent `s > 0`, including `s = 1` and `s > 1`.

use super::rng::SplitMix64;

/// A Zipf(n, s) sampler.
#[derive(Debug, Clone)]
pub struct Zipf {
    n: f64,
    s: f64,
    h_x1: f64,
    h_n: f64,
    squeeze: f64,
}

/// `(e^t - 1) / t`, continuous at 0.
fn expm1_over(t: f64) -> f64 {
    if t.abs() > 1e-8 {
        t.exp_m1() / t
    } else {
        1.0 + t / 2.0 * (1.0 + t / 3.0)
    }
}

/// `ln(1 + t) / t`, continuous at 0.
fn ln1p_over(t: f64) -> f64 {
    if t.abs() > 1e-8 {
        t.ln_1p() / t
    } else {
        1.0 - t / 2.0 * (1.0 - 2.0 * t / 3.0)
    }
}

impl Zipf {
    /// A sampler over ranks `1..=n` with exponent `s` (`n >= 1`, `s > 0`, finite).
    pub fn new(n: u64, s: f64) -> Self {
        assert!(n >= 1 && s > 0.0 && s.is_finite(), "Zipf({n}, {s})");
        let mut z = Self {
            n: n as f64,
            s,
            h_x1: 0.0,
            h_n: 0.0,
            squeeze: 0.0,
        };
        z.h_x1 = z.big_h(1.5) - 1.0;
        z.h_n = z.big_h(z.n + 0.5);
        z.squeeze = 2.0 - z.big_h_inv(z.big_h(2.5) - z.h(2.0));
        z
    }

    /// `h(x) = x^-s`.
    fn h(&self, x: f64) -> f64 {
        (-self.s * x.ln()).exp()
    }

    /// `H(x) = ∫ h = (x^(1-s) - 1) / (1 - s)` (or `ln x` at `s = 1`).
    fn big_h(&self, x: f64) -> f64 {
        let l = x.ln();
        expm1_over((1.0 - self.s) * l) * l
    }

    fn big_h_inv(&self, y: f64) -> f64 {
        let t = (1.0 - self.s) * y;
        // Guard against rounding pushing ln1p's argument to or below -1.
        (ln1p_over(t.max(-1.0 + f64::EPSILON)) * y).exp()
    }

    /// Draw a rank in `1..=n`.
    pub fn sample(&self, rng: &mut SplitMix64) -> u64 {
        loop {
            let u = self.h_n + rng.unit_f64() * (self.h_x1 - self.h_n);
            let x = self.big_h_inv(u);
            let k = (x + 0.5).floor().clamp(1.0, self.n);
            if k - x <= self.squeeze || u >= self.big_h(k + 0.5) - self.h(k) {
                return k as u64;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(n: u64, s: f64) {
        let z = Zipf::new(n, s);
        let mut rng = SplitMix64::new(42);
        let draws = 200_000u64;
        let mut counts = vec![0u64; n as usize + 1];
        for _ in 0..draws {
            let k = z.sample(&mut rng);
            assert!((1..=n).contains(&k));
            counts[k as usize] += 1;
        }
        let norm: f64 = (1..=n).map(|k| (k as f64).powf(-s)).sum();
        for k in 1..=10.min(n) {
            let expect = draws as f64 * (k as f64).powf(-s) / norm;
            let got = counts[k as usize] as f64;
            // Binomial sd ≤ sqrt(expect); allow 5 sd (deterministic seed, so no flakes).
            assert!(
                (got - expect).abs() <= 5.0 * expect.sqrt() + 1.0,
                "n={n} s={s} rank {k}: got {got}, expected {expect:.0}"
            );
        }
    }

    #[test]
    fn matches_the_zipf_law() {
        check(1000, 0.99);
        check(1000, 1.0);
        check(100, 2.0);
        check(50_000, 0.5);
        check(1, 1.2);
    }

    #[test]
    fn higher_skew_is_hotter() {
        let mut rng = SplitMix64::new(3);
        let top = |s: f64, rng: &mut SplitMix64| {
            let z = Zipf::new(10_000, s);
            (0..20_000).filter(|_| z.sample(rng) <= 10).count()
        };
        let (cool, hot) = (top(0.6, &mut rng), top(1.4, &mut rng));
        assert!(hot > 2 * cool, "{cool} vs {hot}");
    }
}
