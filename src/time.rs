//! Durations that come from outside the process (the job payload, the config file, a cloud or
//! coordinator header) clamped so that `Instant + Duration` never overflows: a job timeout of
//! 2^63−1 seconds must mean "no practical limit", not a panic in the job task. A leaf module:
//! imports nothing of the crate.

use std::time::Duration;

/// The longest wait Flotilla arms a timer for: 30 years (tokio's own "far future").
pub const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);

/// `d`, at most [`FAR_FUTURE`].
pub fn clamp(d: Duration) -> Duration {
    d.min(FAR_FUTURE)
}

/// Whole seconds, at most [`FAR_FUTURE`].
pub fn secs(s: u64) -> Duration {
    Duration::from_secs(s.min(FAR_FUTURE.as_secs()))
}

/// The instant `d` from now (`d` clamped), which never overflows.
pub fn deadline_after(d: Duration) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    now.checked_add(clamp(d)).unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_durations_are_clamped_and_never_overflow() {
        assert_eq!(secs(i64::MAX as u64), FAR_FUTURE);
        assert_eq!(clamp(Duration::MAX), FAR_FUTURE);
        assert_eq!(secs(90), Duration::from_secs(90));
        let at = deadline_after(Duration::MAX);
        assert!(at > tokio::time::Instant::now() + Duration::from_secs(86_400 * 365));
        // Sums as the fleet makes them (idle since + IdleTime + 1 ms) stay representable.
        let _ = at + FAR_FUTURE + Duration::from_millis(1);
    }
}
