//! The adaptive warm pool's SLO feedback loop: the share of jobs that found a VM within
//! [`SLO_WAIT`] steers the quantile the pool is sized at. Each job served nudges the quantile
//! (in log-odds): up by a step for a job that waited longer, down by a small fraction of it
//! for one that did not, the fraction chosen so that the nudges cancel exactly when
//! [`TARGET_WITHIN`] of the jobs are within the SLO. So the pool learns how much margin a day
//! needs (its bursts, its boot-time tail, how fast its rate moves) from the waits it caused,
//! instead of a constant tuned to one day; misses (a burst served on demand) are paid back by
//! a higher quantile for the jobs after them.

use std::time::Duration;

/// The wait a job should not exceed (the SLO's, GitLab.com's 10 s).
pub const SLO_WAIT: Duration = Duration::from_secs(10);
/// The share of jobs the loop holds within [`SLO_WAIT`]: above the SLO's 95 %, a margin for
/// what one day's loop cannot pay back before it ends.
pub const TARGET_WITHIN: f64 = 0.96;
/// The quantile before any job was served.
pub const INITIAL_QUANTILE: f64 = 0.9;
/// The log-odds step: a late job raises the quantile by `STEP × TARGET_WITHIN`, an on-time
/// one lowers it by `STEP × (1 − TARGET_WITHIN)`; 60 late jobs raise 0.9 to about 0.97, and
/// the 1 440 on-time jobs after them bring it back. Small on purpose: a burst's late jobs are
/// one event, not sixty; paid back over many jobs, most of the payback falls in busy hours,
/// where a VM more saves the most jobs, not in the night after a night-time burst. Measured
/// (BENCHMARKS.md): 0.05 kept the quantile high all night after a night burst (38 % saving on
/// such a day, 41 % with 0.02); 0.01 let the day end below 95.5 % within the SLO.
pub const STEP: f64 = 0.02;
/// The quantile never goes below this (a pool that misses nothing still covers the median).
pub const MIN_QUANTILE: f64 = 0.5;
/// Nor above this.
pub const MAX_QUANTILE: f64 = 0.999;

fn logit(p: f64) -> f64 {
    (p / (1.0 - p)).ln()
}

/// The loop's state: the quantile in log-odds, and the jobs it has seen.
#[derive(Debug, Clone, Copy)]
pub struct SloFeedback {
    level: f64,
    served: u64,
    late: u64,
}

impl Default for SloFeedback {
    fn default() -> SloFeedback {
        SloFeedback {
            level: logit(INITIAL_QUANTILE),
            served: 0,
            late: 0,
        }
    }
}

impl SloFeedback {
    /// A job got its VM after waiting `wait`.
    pub fn served(&mut self, wait: Duration) {
        self.served += 1;
        let late = wait > SLO_WAIT;
        self.late += u64::from(late);
        // E[step] = 0 exactly when P(late) = 1 − TARGET_WITHIN.
        let step = if late {
            STEP * TARGET_WITHIN
        } else {
            -STEP * (1.0 - TARGET_WITHIN)
        };
        self.level = (self.level + step).clamp(logit(MIN_QUANTILE), logit(MAX_QUANTILE));
    }

    /// The quantile to size the pool at now.
    pub fn quantile(&self) -> f64 {
        1.0 / (1.0 + (-self.level).exp())
    }

    /// The share of the jobs served so far that were within [`SLO_WAIT`] (1 before any).
    pub fn within(&self) -> f64 {
        if self.served == 0 {
            return 1.0;
        }
        1.0 - self.late as f64 / self.served as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LATE: Duration = Duration::from_secs(30);
    const ON_TIME: Duration = Duration::ZERO;

    #[test]
    fn late_jobs_raise_the_quantile_and_on_time_ones_lower_it() {
        let mut f = SloFeedback::default();
        assert!((f.quantile() - INITIAL_QUANTILE).abs() < 1e-9);
        for _ in 0..60 {
            f.served(LATE);
        }
        let after_burst = f.quantile();
        assert!(after_burst > 0.96, "60 late jobs: {after_burst}");
        for _ in 0..600 {
            f.served(ON_TIME);
        }
        let later = f.quantile();
        assert!(later < after_burst && later > INITIAL_QUANTILE, "{later}");
        for _ in 0..100_000 {
            f.served(ON_TIME);
        }
        assert!(
            (f.quantile() - MIN_QUANTILE).abs() < 1e-9,
            "a pool that misses nothing shrinks"
        );
        for _ in 0..100_000 {
            f.served(LATE);
        }
        assert!((f.quantile() - MAX_QUANTILE).abs() < 1e-9, "bounded above");
        assert!(f.within() < 0.6);
    }

    #[test]
    fn settles_where_the_target_share_is_met() {
        // 1 late job in 25 (96 % within) leaves the quantile where it was.
        let mut f = SloFeedback::default();
        let start = f.quantile();
        for i in 0..2500 {
            f.served(if i % 25 == 0 { LATE } else { ON_TIME });
        }
        assert!(
            (f.quantile() - start).abs() < 0.01,
            "{} vs {start}",
            f.quantile()
        );
        assert!((f.within() - TARGET_WITHIN).abs() < 1e-9);
        // 1 in 10 late: it climbs.
        for i in 0..1000 {
            f.served(if i % 10 == 0 { LATE } else { ON_TIME });
        }
        assert!(f.quantile() > start + 0.05, "{}", f.quantile());
        // Waits of exactly the SLO are within it.
        let q = f.quantile();
        f.served(SLO_WAIT);
        assert!(f.quantile() < q);
    }
}
