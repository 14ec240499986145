//! The adaptive warm pool (`[runners.machine] IdleCountPolicy = "adaptive"`): how many VMs to
//! keep available (idle + creating + acquired, GitLab Runner's "available") from the demand the
//! pool observed, instead of a fixed IdleCount. Owns the demand estimate — job arrivals over a
//! short and a long window, the time a new VM takes to be ready, the size of recent bursts — and
//! the decision made from it. Pure: the caller (the pool actor) feeds events with their
//! `Instant`s and asks for a target; no clock is read here, so unit tests drive it with
//! hand-made demand curves.
//!
//! The target: jobs arriving while a replacement boots need VMs made before they came, so the
//! pool keeps `rate × time to ready` VMs on the way or ready (Little's law), plus a margin for
//! the randomness of arrivals (one standard deviation of a Poisson count, plus one), plus
//! headroom for
//! a burst like the recent ones, and never less than the coordinator's reported backlog. It is
//! clamped between a floor (IdleCountMin, or the IdleCount of an active period) and a ceiling
//! (IdleCount). Surplus idle VMs are drained after [`Estimate::drain_after`], a few boots'
//! worth of idling: long enough that a dip of the estimate does not delete VMs the next jobs
//! would take, short enough that the pool is back to the floor minutes after a peak.

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
/// Arrivals in one of these count as one burst sample.
pub const BURST_BUCKET: Duration = Duration::from_secs(60);
/// How long a burst is remembered for headroom.
pub const BURST_MEMORY: Duration = Duration::from_secs(1800);
/// The share of the recent largest burst kept as headroom.
pub const BURST_SHARE: f64 = 0.25;
/// Time-to-ready samples kept (the most recent ones).
pub const READY_SAMPLES: usize = 32;
/// The time to ready assumed before any VM was made (GCE insert + boot, a bad hour's p90).
pub const DEFAULT_TIME_TO_READY: Duration = Duration::from_secs(60);
/// Surplus idle VMs are kept this many times the time to ready: with one job per VM, jobs use
/// up a surplus by themselves while demand lasts, and a VM deleted on a dip of the estimate
/// would be made again (boot included) on the next rise.
pub const DRAIN_AFTER_READIES: u32 = 4;
/// Surplus idle VMs are never drained faster than this (a target's jitter is not a peak's end).
pub const MIN_DRAIN_AFTER: Duration = Duration::from_secs(120);
/// Standard deviations of the arrivals during one boot kept as margin.
pub const SPREAD: f64 = 1.0;

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
    /// Observed job arrivals per second (the larger of the short and long windows).
    pub arrival_rate: f64,
    /// Observed time from insert to dockerd answering (mean of the recent VMs).
    pub time_to_ready: Duration,
    /// Headroom kept for a burst like the recent ones, in VMs.
    pub burst_headroom: u32,
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

/// The demand one pool observed. Owned by the pool actor; memory is bounded by the arrivals of
/// [`LONG_WINDOW`] and one number per minute of [`BURST_MEMORY`].
#[derive(Debug, Default)]
pub struct DemandEstimator {
    /// Arrival times within [`LONG_WINDOW`], oldest first.
    arrivals: VecDeque<Instant>,
    /// The minute being counted: (start, arrivals so far).
    bucket: Option<(Instant, u32)>,
    /// Closed minutes: (start, arrivals beyond the long-window rate then), within
    /// [`BURST_MEMORY`], oldest first.
    bursts: VecDeque<(Instant, f64)>,
    /// The first arrival seen (rates are taken over at most the time since).
    first: Option<Instant>,
    /// Recent times to ready, oldest first.
    ready: VecDeque<Duration>,
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
        if self.ready.len() == READY_SAMPLES {
            self.ready.pop_front();
        }
        self.ready.push_back(took);
    }

    fn forget(&mut self, now: Instant) {
        while self
            .arrivals
            .front()
            .is_some_and(|t| now.duration_since(*t) > LONG_WINDOW)
        {
            self.arrivals.pop_front();
        }
        while self
            .bursts
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > BURST_MEMORY)
        {
            self.bursts.pop_front();
        }
    }

    /// Ends the minute being counted: keeps what it brought beyond the long-window rate at its
    /// end (no later arrival is recorded yet when this runs).
    fn close_bucket(&mut self) {
        if let Some((start, n)) = self.bucket.take() {
            let end = start + BURST_BUCKET;
            let expected = self.rate_over(end, LONG_WINDOW) * BURST_BUCKET.as_secs_f64();
            self.bursts.push_back((start, f64::from(n) - expected));
        }
    }

    /// The largest excess of a minute over the steady rate, the minute being counted included.
    fn largest_excess(&self, now: Instant) -> f64 {
        let open = self.bucket.map(|(_, n)| {
            f64::from(n) - self.rate_over(now, LONG_WINDOW) * BURST_BUCKET.as_secs_f64()
        });
        self.bursts
            .iter()
            .map(|(_, e)| *e)
            .chain(open)
            .fold(0.0, f64::max)
    }

    fn rate_over(&self, now: Instant, window: Duration) -> f64 {
        let n = self
            .arrivals
            .iter()
            .rev()
            .take_while(|t| now.duration_since(**t) <= window)
            .count();
        // Before a whole window was seen, over the time seen (at least a bucket).
        let seen = self.first.map_or(window, |f| now.duration_since(f));
        let span = window.min(seen).max(BURST_BUCKET);
        n as f64 / span.as_secs_f64()
    }

    /// The mean of the recent times to ready, or [`DEFAULT_TIME_TO_READY`] before any.
    pub fn time_to_ready(&self) -> Duration {
        if self.ready.is_empty() {
            return DEFAULT_TIME_TO_READY;
        }
        self.ready.iter().sum::<Duration>() / self.ready.len() as u32
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
        let rate = self
            .rate_over(now, SHORT_WINDOW)
            .max(self.rate_over(now, LONG_WINDOW));
        let ttr = self.time_to_ready();
        // Jobs expected while one VM boots, and the spread of that count.
        let in_flight = rate * ttr.as_secs_f64();
        let margin = if in_flight > 0.0 {
            SPREAD * in_flight.sqrt() + 1.0
        } else {
            0.0
        };
        // A burst is what a minute brought beyond the steady rate and its usual spread.
        let excess = (self.largest_excess(now) - margin).max(0.0);
        let headroom = (excess * BURST_SHARE).ceil();
        let wanted = (in_flight + margin + headroom)
            .ceil()
            .max(f64::from(backlog));
        let ceiling = bounds.ceiling.max(bounds.floor);
        // `wanted` is finite and ≥ 0; the cast saturates at u32::MAX.
        let desired = (wanted as u32).clamp(bounds.floor, ceiling);
        Estimate {
            desired_idle: desired,
            arrival_rate: rate,
            time_to_ready: ttr,
            burst_headroom: headroom as u32,
            drain_after: (ttr * DRAIN_AFTER_READIES).max(MIN_DRAIN_AFTER),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPEN: Bounds = Bounds {
        floor: 0,
        ceiling: 1000,
    };

    /// Feeds `per_minute(m)` evenly spread arrivals for each minute `m` in `minutes`, and
    /// returns the target at the end of each minute.
    fn drive(
        est: &mut DemandEstimator,
        start: Instant,
        minutes: std::ops::Range<u32>,
        per_minute: impl Fn(u32) -> u32,
        bounds: Bounds,
    ) -> Vec<u32> {
        let mut out = Vec::new();
        for m in minutes {
            let n = per_minute(m);
            let base = start + Duration::from_secs(60 * u64::from(m));
            for i in 0..n {
                est.arrival(base + Duration::from_secs(60) * i / n);
            }
            let end = base + Duration::from_secs(59);
            out.push(est.estimate(end, 0, bounds).desired_idle);
        }
        out
    }

    fn booted(est: &mut DemandEstimator, secs: u64) {
        for _ in 0..READY_SAMPLES {
            est.ready(Duration::from_secs(secs));
        }
    }

    #[test]
    fn nothing_seen_keeps_the_floor() {
        let mut est = DemandEstimator::new();
        let now = Instant::now();
        let e = est.estimate(now, 0, OPEN);
        assert_eq!(e.desired_idle, 0, "no demand, floor 0: made on demand");
        assert_eq!(e.time_to_ready, DEFAULT_TIME_TO_READY);
        let e = est.estimate(
            now,
            0,
            Bounds {
                floor: 3,
                ceiling: 10,
            },
        );
        assert_eq!(e.desired_idle, 3);
    }

    #[test]
    fn ramp_raises_the_target_with_the_rate_and_the_boot_time() {
        let start = Instant::now();
        let mut est = DemandEstimator::new();
        booted(&mut est, 40);
        // 1 job a minute rising by 1 each minute to 30 a minute.
        let targets = drive(&mut est, start, 0..30, |m| m + 1, OPEN);
        for w in targets.windows(2) {
            // (One VM of jitter: a minute's burst headroom against the rising long rate.)
            assert!(
                w[1] + 1 >= w[0],
                "a ramp never lowers the target: {targets:?}"
            );
        }
        assert!(
            targets[29] > targets[9] && targets[9] > targets[0],
            "{targets:?}"
        );
        // At 30 jobs/min (0.5/s) and 40 s to ready: 20 in flight + √20 + 1 ≈ 26.
        let last = *targets.last().unwrap();
        assert!((24..=30).contains(&last), "{targets:?}");
        // The same ramp with VMs that take twice as long wants about twice as many.
        let mut slow = DemandEstimator::new();
        booted(&mut slow, 80);
        let slow_last = *drive(&mut slow, start, 0..30, |m| m + 1, OPEN)
            .last()
            .unwrap();
        assert!(slow_last > last + last / 2, "{slow_last} vs {last}");
    }

    #[test]
    fn burst_leaves_headroom_that_fades() {
        let start = Instant::now();
        let mut est = DemandEstimator::new();
        booted(&mut est, 35);
        // Steady 6 jobs a minute, one minute of 56 (a burst of 50) at minute 20.
        let per_minute = |m| if m == 20 { 56 } else { 6 };
        let mut targets = drive(&mut est, start, 0..22, per_minute, OPEN);
        let e = est.estimate(start + Duration::from_secs(22 * 60 - 1), 0, OPEN);
        assert!(e.burst_headroom >= 8, "{e:?}");
        targets.extend(drive(&mut est, start, 22..80, per_minute, OPEN));
        let steady = targets[19];
        let after = targets[21];
        assert!(
            after >= steady + 8,
            "a burst of 50 keeps a quarter of its excess as headroom: {targets:?}"
        );
        // Thirty minutes later the burst is forgotten and the target is back to steady.
        assert_eq!(targets[79], steady, "{targets:?}");
    }

    #[test]
    fn quiet_night_drains_to_the_floor_and_periods_raise_it() {
        let start = Instant::now();
        let mut est = DemandEstimator::new();
        booted(&mut est, 35);
        // A busy hour (30 jobs/min) then nothing.
        let busy = drive(&mut est, start, 0..60, |_| 30, OPEN);
        let night = drive(&mut est, start, 60..80, |_| 0, OPEN);
        assert!(busy[59] > 10, "{busy:?}");
        assert_eq!(
            night[12], 0,
            "ten minutes after the peak the pool is empty: {night:?}"
        );
        let bounds = Bounds {
            floor: 4,
            ceiling: 50,
        };
        let e = est.estimate(start + Duration::from_secs(80 * 60), 0, bounds);
        assert_eq!(e.desired_idle, 4, "a period's IdleCount is a floor");
        // A trickle of a job every ten minutes keeps a few VMs, no more.
        let trickle = drive(&mut est, start, 80..140, |m| u32::from(m % 10 == 0), OPEN);
        assert!(trickle.iter().all(|t| (1..=3).contains(t)), "{trickle:?}");
    }

    #[test]
    fn ceiling_and_backlog() {
        let start = Instant::now();
        let mut est = DemandEstimator::new();
        booted(&mut est, 40);
        let capped = drive(
            &mut est,
            start,
            0..10,
            |_| 120,
            Bounds {
                floor: 0,
                ceiling: 25,
            },
        );
        assert_eq!(*capped.last().unwrap(), 25, "IdleCount is the ceiling");
        let mut quiet = DemandEstimator::new();
        let e = quiet.estimate(start, 7, OPEN);
        assert_eq!(
            e.desired_idle, 7,
            "a reported backlog is met even with no history"
        );
    }

    #[test]
    fn periods_are_floors_and_idle_count_the_ceiling() {
        let s = |idle_count, idle_count_min| IdleSettings {
            idle_count,
            idle_count_min,
            idle_scale_factor: 0.0,
            idle_time: Duration::from_secs(600),
        };
        let b = Bounds::new(&s(40, 2), None);
        assert_eq!((b.floor, b.ceiling), (2, 40));
        let b = Bounds::new(&s(40, 2), Some(&s(10, 0)));
        assert_eq!(
            (b.floor, b.ceiling),
            (10, 40),
            "a weekday period keeps 10 warm"
        );
        let b = Bounds::new(&s(40, 2), Some(&s(70, 0)));
        assert_eq!(
            (b.floor, b.ceiling),
            (70, 70),
            "a period above IdleCount raises both"
        );
        let e = Estimate {
            desired_idle: 6,
            arrival_rate: 0.1,
            time_to_ready: Duration::from_secs(40),
            burst_headroom: 0,
            drain_after: Duration::from_secs(40),
        };
        let idle = e.idle_settings(Duration::from_secs(600));
        assert_eq!(
            (idle.idle_count, idle.idle_time),
            (6, Duration::from_secs(40))
        );
        assert_eq!(
            e.idle_settings(Duration::from_secs(20)).idle_time,
            Duration::from_secs(20)
        );
    }

    #[test]
    fn time_to_ready_follows_recent_vms() {
        let mut est = DemandEstimator::new();
        booted(&mut est, 30);
        assert_eq!(est.time_to_ready(), Duration::from_secs(30));
        booted(&mut est, 90);
        assert_eq!(est.time_to_ready(), Duration::from_secs(90));
        let e = est.estimate(Instant::now(), 0, OPEN);
        assert_eq!(e.drain_after, Duration::from_secs(360), "four boots");
    }
}
