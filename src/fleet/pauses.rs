//! When the pool holds new VM creations back: after the cloud's rate limit (until its quota
//! refills) and after creations failing for reasons no zone explains (exponential backoff).
//! Zone-specific failures cool the zone instead (`zones`). Owned by the actor; `plan` sees one
//! flag.

use std::time::Duration;
use tokio::time::Instant;

/// Longest pause after creations failing for reasons no zone explains.
const MAX_FAILURE_BACKOFF: Duration = Duration::from_secs(300);

/// The pool's pauses on creation.
#[derive(Debug, Default)]
pub(super) struct Pauses {
    api_paused_until: Option<Instant>,
    failure_backoff_until: Option<Instant>,
    consecutive_failures: u32,
}

impl Pauses {
    /// The cloud rate-limited a call until `until`: true when this starts a pause (to log once).
    pub fn rate_limited(&mut self, until: Instant, now: Instant) -> bool {
        let starts = self.api_paused_until.is_none_or(|t| t <= now);
        self.api_paused_until = Some(self.api_paused_until.map_or(until, |t| t.max(until)));
        starts
    }

    /// A creation failed for no zone's fault: back off 5 s, doubling, up to 5 min.
    pub fn creation_failed(&mut self, now: Instant) {
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        let exp = self.consecutive_failures.min(10) - 1;
        let d = (Duration::from_secs(5) * (1u32 << exp)).min(MAX_FAILURE_BACKOFF);
        self.failure_backoff_until = Some(now + d);
    }

    /// A VM became ready: the failure backoff ends.
    pub fn creation_succeeded(&mut self) {
        self.consecutive_failures = 0;
        self.failure_backoff_until = None;
    }

    /// Whether new creations wait at `now`.
    pub fn holds_creation(&self, now: Instant) -> bool {
        self.api_paused_until.is_some_and(|t| t > now)
            || self.failure_backoff_until.is_some_and(|t| t > now)
    }

    /// The pause ends (wake-ups).
    pub fn ends(&self) -> impl Iterator<Item = Instant> {
        self.api_paused_until
            .into_iter()
            .chain(self.failure_backoff_until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_backoff_doubles_up_to_five_minutes_and_ends_on_success() {
        let now = Instant::now();
        let mut p = Pauses::default();
        let mut seen = Vec::new();
        for _ in 0..8 {
            p.creation_failed(now);
            seen.push(p.failure_backoff_until.map(|t| t - now));
        }
        let secs: Vec<u64> = seen.iter().map(|d| d.map_or(0, |d| d.as_secs())).collect();
        assert_eq!(secs, [5, 10, 20, 40, 80, 160, 300, 300]);
        assert!(p.holds_creation(now));
        p.creation_succeeded();
        assert!(!p.holds_creation(now));
    }

    #[test]
    fn a_rate_limit_pause_is_reported_once_and_only_extended() {
        let now = Instant::now();
        let mut p = Pauses::default();
        assert!(p.rate_limited(now + Duration::from_secs(10), now));
        assert!(!p.rate_limited(now + Duration::from_secs(5), now));
        assert_eq!(
            p.ends().collect::<Vec<_>>(),
            [now + Duration::from_secs(10)]
        );
        assert!(!p.holds_creation(now + Duration::from_secs(10)));
        assert!(p.rate_limited(now + Duration::from_secs(20), now + Duration::from_secs(10)));
    }
}
