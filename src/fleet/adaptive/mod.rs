//! The adaptive warm pool (`[runners.machine] IdleCountPolicy = "adaptive"`): how many VMs to
//! keep available (idle + creating + acquired, GitLab Runner's "available") from the demand the
//! pool observed, instead of a fixed IdleCount. Owns the demand estimate — job arrivals over a
//! short and a long window, the time a new VM takes to be ready, the size of recent bursts, the
//! waits of the jobs served — and the decision made from it. Pure: the caller (the pool actor)
//! feeds events with their `Instant`s and asks for a target; no clock is read here, so unit
//! tests drive it with hand-made demand curves.
//!
//! The target: a job finds a VM within the SLO's wait ([`SLO_WAIT`]) unless more jobs came in
//! the last *lead time* (the time to ready less that wait) than the pool keeps available — the
//! VMs made for them are still booting. That count is Poisson with mean `rate × lead time`
//! (arrivals are random; each takes a VM whose replacement boots), so the pool keeps its
//! quantile at a level the SLO feedback loop (`feedback`) learns from the waits it caused, plus
//! a fading headroom after a burst, and never less than the coordinator's reported backlog. The
//! rate leaves a burst's excess out (a burst is served on demand; it does not say the next
//! minutes will be busier). It is clamped between a floor (IdleCountMin, or the IdleCount of an
//! active period) and a ceiling (IdleCount). Surplus idle VMs are drained after
//! [`Estimate::drain_after`], two boots' worth of idling, except as many as the jobs of one
//! time to ready will take ([`Estimate::drain_keep`]): deleting those and booting their
//! replacements would cost more than letting them wait; the pool is back to the floor minutes
//! after a peak. Jobs waiting on demand are served fresh first (`demand::Waiters::next`).

mod feedback;
mod poisson;

pub use feedback::{SloFeedback, SLO_WAIT, TARGET_WITHIN};
pub use poisson::poisson_quantile;

use super::schedule::{IdleSettings, Schedule};
use crate::config::IdleCountPolicy;
use chrono::{DateTime, Utc};
use std::collections::VecDeque;
use std::time::Duration;
use tokio::time::Instant;

/// The short rate window: follows a ramp within minutes.
pub const SHORT_WINDOW: Duration = Duration::from_secs(120);
/// The long rate window: smooths the short one's noise; forgotten ten minutes after a peak.
pub const LONG_WINDOW: Duration = Duration::from_secs(600);
/// Arrivals are counted per one of these to tell bursts.
pub const BURST_BUCKET: Duration = Duration::from_secs(60);
/// A burst under way is told by the arrivals of this window.
pub const FAST_WINDOW: Duration = Duration::from_secs(20);
/// A minute is a burst for the arrivals beyond the steady rate's count plus this many standard
/// deviations (of a Poisson count): a busy minute of random arrivals is not one.
pub const BURST_SIGMAS: f64 = 3.0;
/// How long a burst leaves headroom, fading linearly: bursts are mostly independent, so
/// headroom kept long after one mostly idles.
pub const BURST_MEMORY: Duration = Duration::from_secs(600);
/// The share of the recent largest burst kept as headroom (before it fades).
pub const BURST_SHARE: f64 = 0.25;
/// Time-to-ready samples kept (the most recent ones).
pub const READY_SAMPLES: usize = 32;
/// The time to ready assumed before any VM was made (GCE insert + boot, a bad hour's p90).
pub const DEFAULT_TIME_TO_READY: Duration = Duration::from_secs(60);
/// Surplus idle VMs are kept this many times the time to ready, except the
/// [`Estimate::drain_keep`] the next jobs will take, kept however long they idle. Measured
/// (seeds 5 and 8): 8 boots with nothing kept beyond the target left 255–276 VMs a day
/// drained unused (105–114 k idle VM-s); 2 boots with the allowance, 56–110 (12–25 k), for
/// 2–4 % fewer idle VM-seconds in all.
pub const DRAIN_AFTER_READIES: u32 = 2;
/// Surplus idle VMs are never drained faster than this (a target's jitter is not a peak's end).
pub const MIN_DRAIN_AFTER: Duration = Duration::from_secs(120);

/// A job waiting on demand longer than this is served before newer ones, even those that
/// could still make the SLO (see `demand::Waiters::next`).
pub const STARVED_AFTER: Duration = Duration::from_secs(180);

/// The floor and ceiling of the adaptive target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Never fewer available VMs than this (IdleCountMin, or an active period's IdleCount).
    pub floor: u32,
    /// Never more than this (IdleCount).
    pub ceiling: u32,
}

/// What the estimator decided, with the observations behind it (exported as metrics).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    /// VMs to keep available (idle, creating or acquired): the pool's IdleCount now.
    pub desired_idle: u32,
    /// Observed job arrivals per second: the larger of the short and long windows, a burst's
    /// excess left out, or a burst under way's own rate.
    pub arrival_rate: f64,
    /// Observed time from insert to dockerd answering (mean of the recent VMs).
    pub time_to_ready: Duration,
    /// The quantile of the arrivals during one lead time the pool is sized at (the SLO
    /// feedback loop's).
    pub quantile: f64,
    /// Headroom kept for a burst like the recent ones, in VMs.
    pub burst_headroom: u32,
    /// Surplus idle VMs kept beyond the target however long they idle: those the jobs of one
    /// time to ready will take (a VM deleted and made again costs a boot).
    pub drain_keep: u32,
    /// How long a surplus idle VM is kept: [`DRAIN_AFTER_READIES`] × the time to ready, at
    /// least [`MIN_DRAIN_AFTER`].
    pub drain_after: Duration,
}

impl Bounds {
    /// The bounds of an adaptive pool: IdleCountMin of `[runners.machine]` — or the IdleCount of
    /// the `period` active now, whichever is larger — as the floor, `[runners.machine]`
    /// IdleCount as the ceiling (raised to the floor if a period asks for more).
    pub fn new(base: &IdleSettings, period: Option<&IdleSettings>) -> Bounds {
        let floor = base
            .idle_count_min
            .max(period.map_or(0, |p| p.idle_count.max(p.idle_count_min)));
        Bounds {
            floor,
            ceiling: base.idle_count.max(floor),
        }
    }
}

impl Estimate {
    /// The idle settings the pool's policy applies for this estimate: IdleCount = the target
    /// (no scale factor), surplus idle VMs kept for the shorter of `idle_time` and
    /// [`Estimate::drain_after`].
    pub fn idle_settings(&self, idle_time: std::time::Duration) -> IdleSettings {
        IdleSettings {
            idle_count: self.desired_idle,
            idle_count_min: 0,
            idle_scale_factor: 0.0,
            idle_time: idle_time.min(self.drain_after),
        }
    }
}

/// The idle settings a pool applies: `in_force` (the schedule's) for a static pool or while
/// draining, else the adaptive estimate's.
pub fn in_force(
    in_force: IdleSettings,
    policy: IdleCountPolicy,
    estimate: Option<&Estimate>,
    draining: bool,
) -> IdleSettings {
    match (policy, estimate) {
        (IdleCountPolicy::Adaptive, Some(e)) if !draining => e.idle_settings(in_force.idle_time),
        _ => in_force,
    }
}

/// Idle VMs a pool keeps from removal beyond its IdleCount: the adaptive estimate's
/// [`Estimate::drain_keep`], 0 for a static pool or while draining.
pub fn drain_keep(policy: IdleCountPolicy, estimate: Option<&Estimate>, draining: bool) -> u32 {
    match (policy, estimate) {
        (IdleCountPolicy::Adaptive, Some(e)) if !draining => e.drain_keep,
        _ => 0,
    }
}

/// One closed minute of arrivals.
#[derive(Debug, Clone, Copy)]
struct Minute {
    start: Instant,
    /// Its arrivals beyond the burst threshold (0 for an ordinary minute).
    burst: f64,
}

/// The demand one pool observed. Owned by the pool actor; memory is bounded by the arrivals of
/// [`LONG_WINDOW`] and one entry per minute of the longer of it and [`BURST_MEMORY`].
#[derive(Debug, Default)]
pub struct DemandEstimator {
    /// Arrival times within [`LONG_WINDOW`], oldest first.
    arrivals: VecDeque<Instant>,
    /// The minute being counted: (start, arrivals so far).
    bucket: Option<(Instant, u32)>,
    /// Closed minutes within the longer of [`LONG_WINDOW`] and [`BURST_MEMORY`], oldest first.
    minutes: VecDeque<Minute>,
    /// The first arrival seen (rates are taken over at most the time since).
    first: Option<Instant>,
    /// Recent times to ready, oldest first.
    ready: VecDeque<Duration>,
    /// The SLO feedback loop: the quantile the pool is sized at.
    feedback: SloFeedback,
    /// The estimate [`DemandEstimator::target`] made last.
    last: Option<Estimate>,
}

impl DemandEstimator {
    /// An estimator that has seen nothing.
    pub fn new() -> DemandEstimator {
        DemandEstimator::default()
    }

    /// A job asked for a VM at `now` (one arrival).
    pub fn arrival(&mut self, now: Instant) {
        self.first.get_or_insert(now);
        self.forget(now);
        match &mut self.bucket {
            Some((start, n)) if now.duration_since(*start) < BURST_BUCKET => *n += 1,
            _ => {
                self.close_bucket();
                self.bucket = Some((now, 1));
            }
        }
        self.arrivals.push_back(now);
    }

    /// A VM became ready `took` after its creation started.
    pub fn ready(&mut self, took: Duration) {
        if self.ready.len() >= READY_SAMPLES {
            self.ready.pop_front();
        }
        self.ready.push_back(took);
    }

    /// A job that asked for a VM got one after waiting `wait` (the SLO feedback).
    pub fn served(&mut self, wait: Duration) {
        self.feedback.served(wait);
    }

    /// The SLO feedback loop's state.
    pub fn feedback(&self) -> &SloFeedback {
        &self.feedback
    }

    fn forget(&mut self, now: Instant) {
        while self
            .arrivals
            .front()
            .is_some_and(|t| now.duration_since(*t) > LONG_WINDOW)
        {
            self.arrivals.pop_front();
        }
        let keep = LONG_WINDOW.max(BURST_MEMORY);
        while self
            .minutes
            .front()
            .is_some_and(|m| now.duration_since(m.start) > keep)
        {
            self.minutes.pop_front();
        }
    }

    /// The arrivals (`n`) of the minute starting at `start` beyond what the steady rate before
    /// it explains.
    fn burst_part(&self, n: u32, start: Instant) -> f64 {
        let expected = self.rate_before(start, LONG_WINDOW) * BURST_BUCKET.as_secs_f64();
        (f64::from(n) - expected - BURST_SIGMAS * expected.max(1.0).sqrt()).max(0.0)
    }

    /// Ends the minute being counted (no later arrival is recorded yet when this runs).
    fn close_bucket(&mut self) {
        if let Some((start, n)) = self.bucket.take() {
            let burst = self.burst_part(n, start);
            self.minutes.push_back(Minute { start, burst });
        }
    }

    /// The burst arrivals of the minute being counted.
    fn open_burst(&self) -> f64 {
        self.bucket
            .map_or(0.0, |(start, n)| self.burst_part(n, start))
    }

    /// The largest recent burst, faded by its age.
    fn burst_now(&self, now: Instant) -> f64 {
        let memory = BURST_MEMORY.as_secs_f64();
        if memory <= 0.0 {
            return 0.0;
        }
        let fade =
            |start: Instant| (1.0 - now.duration_since(start).as_secs_f64() / memory).max(0.0);
        self.minutes
            .iter()
            .map(|m| m.burst * fade(m.start))
            .chain(std::iter::once(self.open_burst()))
            .fold(0.0, f64::max)
    }

    /// Arrivals per second over `window` up to `now`, a burst's excess (the minute being
    /// counted's included) left out.
    fn rate_over(&self, now: Instant, window: Duration) -> f64 {
        let open = self.open_burst();
        self.rate_until(now, window, |t| t <= now, open)
    }

    /// The same over the `window` before the minute starting at `start` (its own arrivals
    /// left out).
    fn rate_before(&self, start: Instant, window: Duration) -> f64 {
        self.rate_until(start, window, |t| t < start, 0.0)
    }

    fn rate_until(
        &self,
        end: Instant,
        window: Duration,
        counts: impl Fn(Instant) -> bool,
        open_burst: f64,
    ) -> f64 {
        let within = |t: Instant| counts(t) && end.duration_since(t) <= window;
        let n = self
            .arrivals
            .iter()
            .rev()
            .skip_while(|t| !counts(**t))
            .take_while(|t| within(**t))
            .count();
        let bursts: f64 = self
            .minutes
            .iter()
            .rev()
            .skip_while(|m| !counts(m.start))
            .take_while(|m| within(m.start))
            .map(|m| m.burst)
            .sum::<f64>()
            + open_burst;
        // Before a whole window was seen, over the time seen (at least a bucket).
        let seen = self.first.map_or(window, |f| end.duration_since(f));
        let span = window.min(seen).max(BURST_BUCKET);
        (n as f64 - bursts).max(0.0) / span.as_secs_f64()
    }

    /// The arrival rate of the last [`FAST_WINDOW`] while it is a burst (beyond the steady
    /// `long` rate's count by [`BURST_SIGMAS`] deviations), else 0: a burst under way is
    /// expected to go on for a while, so VMs made now serve its later jobs.
    fn burst_rate(&self, now: Instant, long: f64) -> f64 {
        let fast = FAST_WINDOW;
        let n = self
            .arrivals
            .iter()
            .rev()
            .take_while(|t| now.duration_since(**t) <= fast)
            .count() as f64;
        let expected = long * fast.as_secs_f64();
        if n > expected + BURST_SIGMAS * expected.max(1.0).sqrt() {
            n / fast.as_secs_f64()
        } else {
            0.0
        }
    }

    /// The mean of the recent times to ready, or [`DEFAULT_TIME_TO_READY`] before any.
    pub fn time_to_ready(&self) -> Duration {
        if self.ready.is_empty() {
            return DEFAULT_TIME_TO_READY;
        }
        self.ready.iter().sum::<Duration>() / self.ready.len() as u32
    }

    /// The mean of the recent times to ready less [`SLO_WAIT`] (0 for a VM faster than it):
    /// how long before a job a VM must be started for the job to wait no longer than the SLO.
    pub fn lead_time(&self) -> Duration {
        if self.ready.is_empty() {
            return DEFAULT_TIME_TO_READY.saturating_sub(SLO_WAIT);
        }
        let sum: Duration = self.ready.iter().map(|t| t.saturating_sub(SLO_WAIT)).sum();
        sum / self.ready.len() as u32
    }

    /// The estimate [`DemandEstimator::target`] made last, if any.
    pub fn last(&self) -> Option<&Estimate> {
        self.last.as_ref()
    }

    /// The estimate at `now` for a pool on `schedule` read at wall-clock `wall` (periods are
    /// floors), and the IdleCount in force to export as desired idle: the target for an
    /// adaptive pool, the schedule's IdleCount for a static one.
    pub fn target(
        &mut self,
        schedule: &Schedule,
        policy: IdleCountPolicy,
        now: Instant,
        wall: DateTime<Utc>,
        backlog: u32,
    ) -> (Estimate, u32) {
        let period = schedule.active_period(wall);
        let bounds = Bounds::new(&schedule.base(), period.as_ref());
        let e = self.estimate(now, backlog, bounds);
        self.last = Some(e);
        let desired = match policy {
            IdleCountPolicy::Adaptive => e.desired_idle,
            IdleCountPolicy::Static => schedule.active(wall).idle_count,
        };
        (e, desired)
    }

    /// The target at `now`, given the coordinator's backlog (`job_info.queue_size` less the job
    /// handed out; 0 when unknown) and the bounds in force.
    pub fn estimate(&mut self, now: Instant, backlog: u32, bounds: Bounds) -> Estimate {
        if self
            .bucket
            .is_some_and(|(start, _)| now.duration_since(start) >= BURST_BUCKET)
        {
            self.close_bucket();
        }
        self.forget(now);
        let long = self.rate_over(now, LONG_WINDOW);
        let rate = self.rate_over(now, SHORT_WINDOW).max(long);
        let rate = rate.max(self.burst_rate(now, long));
        let ttr = self.time_to_ready();
        let quantile = self.feedback.quantile();
        let lead = self.lead_time();
        // Jobs arriving while the VMs made for the ones before them boot.
        let in_flight = rate * lead.as_secs_f64();
        // At least one while any job came in the window: a trickle still finds a VM ready.
        let covered = if rate > 0.0 {
            f64::from(poisson_quantile(in_flight, quantile).max(1))
        } else {
            0.0
        };
        let headroom = (self.burst_now(now) * BURST_SHARE).ceil();
        let wanted = (covered + headroom).max(f64::from(backlog));
        let ceiling = bounds.ceiling.max(bounds.floor);
        // `wanted` is finite and ≥ 0; the cast saturates at u32::MAX.
        let desired = (wanted as u32).clamp(bounds.floor, ceiling);
        Estimate {
            desired_idle: desired,
            arrival_rate: rate,
            time_to_ready: ttr,
            quantile,
            burst_headroom: headroom as u32,
            // Finite and ≥ 0; the cast saturates.
            drain_keep: (rate * ttr.as_secs_f64()).ceil() as u32,
            drain_after: (ttr * DRAIN_AFTER_READIES).max(MIN_DRAIN_AFTER),
        }
    }
}

#[cfg(test)]
mod tests;
