//! The Poisson quantile the adaptive warm pool sizes itself with: how many VMs cover the jobs
//! that arrive while replacements boot, at a chosen probability.

/// The smallest `k` with P(N ≤ k) ≥ `p` for N Poisson with mean `mean` (0 for a mean of 0 or
/// not finite). Summed term by term from ten standard deviations below the mean (the mass
/// below is negligible), the first term from Stirling's series, so large means do not
/// underflow.
pub fn poisson_quantile(mean: f64, p: f64) -> u32 {
    if mean <= 0.0 || !mean.is_finite() {
        return 0;
    }
    let start = (mean - 10.0 * mean.sqrt()).floor().max(0.0);
    let mut term = (start * mean.ln() - mean - ln_factorial(start)).exp();
    let mut cdf = term;
    let mut k = start;
    let last = mean + 20.0 * mean.sqrt() + 20.0;
    while cdf < p && k < last {
        k += 1.0;
        term *= mean / k;
        cdf += term;
    }
    // `k` is a whole number ≥ 0; the cast saturates.
    k as u32
}

/// ln(n!) for a whole `n` ≥ 0: exact below 20, Stirling's series above.
fn ln_factorial(n: f64) -> f64 {
    if n < 20.0 {
        return (1..=n as u32).map(|i| f64::from(i).ln()).sum();
    }
    n * n.ln() - n + 0.5 * (2.0 * std::f64::consts::PI * n).ln() + 1.0 / (12.0 * n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poisson_quantile_matches_the_distribution() {
        // P(N ≤ 25) = 0.888 and P(N ≤ 26) = 0.922 for a mean of 20.
        assert_eq!(poisson_quantile(20.0, 0.9), 26);
        // P(N ≤ 16) = 0.863, P(N ≤ 17) = 0.911 for 12.6.
        assert_eq!(poisson_quantile(12.6, 0.9), 17);
        // P(N = 0) = 0.94 for 0.06: a trickle's quantile is 0 (the caller keeps one).
        assert_eq!(poisson_quantile(0.06, 0.9), 0);
        assert_eq!(poisson_quantile(0.0, 0.9), 0);
        assert_eq!(poisson_quantile(f64::NAN, 0.9), 0);
        let mut last = 0;
        for tenth in 0..6000 {
            let q = poisson_quantile(f64::from(tenth) / 10.0, 0.9);
            assert!(q >= last, "monotonic in the mean at {tenth}");
            last = q;
        }
        // Large means do not underflow: about 1000 + 1.28·√1000 ≈ 1041, and the median is
        // the mean.
        assert!((1038..=1043).contains(&poisson_quantile(1000.0, 0.9)));
        assert_eq!(poisson_quantile(1000.0, 0.5), 1000);
    }
}
