//! Unit tests of the adaptive policy's decisions on hand-made demand curves.

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
    // At 30 jobs/min (0.5/s) and 40 s to ready, of which the SLO's 10 s may be waited: 15
    // jobs come while the VMs made for the ones before them boot; the quantile the loop
    // starts at (90 %) is 20.
    let last = *targets.last().unwrap();
    assert!((19..=22).contains(&last), "{targets:?}");
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
    // 62 jobs in the 2-minute window would be 0.52/s; only what 3 deviations allow remains.
    assert!(
        e.arrival_rate < 0.17,
        "the burst's excess is not taken for a higher steady rate (0.1/s): {e:?}"
    );
    targets.extend(drive(&mut est, start, 22..80, per_minute, OPEN));
    let steady = targets[19];
    assert!(
        targets[20] >= steady + 15,
        "a burst under way: VMs for its later jobs: {targets:?}"
    );
    let after = targets[21];
    assert!(
        after >= steady + 8,
        "a burst of 50 keeps a quarter of its excess as headroom: {targets:?}"
    );
    assert!(targets[26] < after, "the headroom fades: {targets:?}");
    // Ten minutes later (`BURST_MEMORY`) the burst is forgotten: back to steady.
    assert_eq!(targets[32], steady, "{targets:?}");
    assert_eq!(targets[79], steady, "{targets:?}");
}

#[test]
fn late_jobs_raise_the_target_and_on_time_ones_lower_it() {
    let start = Instant::now();
    let mut est = DemandEstimator::new();
    booted(&mut est, 40);
    let per_minute = |_| 18;
    let steady = *drive(&mut est, start, 0..30, per_minute, OPEN)
        .last()
        .unwrap();
    // Bursts served on demand: 60 jobs waited a boot.
    for _ in 0..60 {
        est.served(Duration::from_secs(40));
    }
    let raised = *drive(&mut est, start, 30..31, per_minute, OPEN)
        .last()
        .unwrap();
    assert!(raised >= steady + 2, "{steady} → {raised}");
    assert!(est.feedback().quantile() > 0.96);
    // Then hours of jobs that all found a VM: the margin is given back, and more.
    for _ in 0..6000 {
        est.served(Duration::ZERO);
    }
    let lowered = *drive(&mut est, start, 31..32, per_minute, OPEN)
        .last()
        .unwrap();
    assert!(lowered < steady, "{steady} → {lowered}");
    assert_eq!(est.feedback().within(), 6000.0 / 6060.0);
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
        quantile: 0.9,
        burst_headroom: 0,
        drain_keep: 0,
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
    assert_eq!(
        est.lead_time(),
        Duration::from_secs(80),
        "less the SLO's wait"
    );
    est.ready(Duration::from_secs(5));
    assert!(
        est.lead_time() < Duration::from_secs(80),
        "a fast VM counts as 0"
    );
    booted(&mut est, 90);
    let e = est.estimate(Instant::now(), 0, OPEN);
    assert_eq!(
        e.drain_after,
        Duration::from_secs(90) * DRAIN_AFTER_READIES,
        "a few boots"
    );
    assert!(e.drain_after >= MIN_DRAIN_AFTER);
}

#[test]
fn surplus_kept_for_the_jobs_of_one_time_to_ready() {
    let start = Instant::now();
    let mut est = DemandEstimator::new();
    booted(&mut est, 40);
    drive(&mut est, start, 0..15, |_| 18, OPEN);
    let e = est.estimate(start + Duration::from_secs(15 * 60 - 1), 0, OPEN);
    // 0.3 jobs/s × 40 s: the 12 surplus idle VMs the next jobs take before a new one boots.
    assert!((11..=13).contains(&e.drain_keep), "{e:?}");
    let quiet = est.estimate(start + Duration::from_secs(40 * 60), 0, OPEN);
    assert_eq!(quiet.drain_keep, 0, "nothing kept once demand is gone");
}
