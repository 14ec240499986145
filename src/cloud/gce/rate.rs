//! The client side of Compute's per-minute rate quotas: a GCRA token bucket ([`RateLimiter`])
//! every API call (waits included) passes before it is sent, and the API-call counters
//! ([`GceMetrics`]) on the injected registry. Owns no HTTP.

use std::sync::Mutex;
use std::time::Duration;

use prometheus::{IntCounter, IntCounterVec, Opts, Registry};
use tokio::time::Instant;

/// Spaces calls `60 s / rate` apart on average, allowing a burst of `burst` calls at once.
/// Each caller reserves the next free slot under a short lock and sleeps outside it, so calls
/// leave in arrival order and the lock is never held across an await.
#[derive(Debug)]
pub struct RateLimiter {
    interval: Duration,
    tolerance: Duration,
    /// Theoretical arrival time of the next call (GCRA's TAT); `None` before the first call.
    tat: Mutex<Option<Instant>>,
}

impl RateLimiter {
    /// `per_minute` calls per minute (at least 1), up to `burst` (at least 1) back to back.
    pub fn new(per_minute: u32, burst: u32) -> Self {
        let interval = Duration::from_secs(60) / per_minute.max(1);
        let tolerance = interval * (burst.max(1) - 1);
        Self {
            interval,
            tolerance,
            tat: Mutex::new(None),
        }
    }

    /// The default burst for a rate: ten seconds' worth, at least one call.
    pub fn default_burst(per_minute: u32) -> u32 {
        (per_minute / 6).max(1)
    }

    /// Waits for a slot; returns whether the caller had to wait.
    pub async fn acquire(&self) -> bool {
        let now = Instant::now();
        let allowed_at = {
            // A poisoned lock only means another caller panicked mid-update: the value is a
            // plain Instant and still usable.
            let mut tat = self.tat.lock().unwrap_or_else(|p| p.into_inner());
            self.reserve(&mut tat, now)
        };
        if allowed_at > now {
            tokio::time::sleep_until(allowed_at).await;
            true
        } else {
            false
        }
    }

    /// One GCRA step: reserves the next slot at `now` and returns when it may be used.
    fn reserve(&self, tat: &mut Option<Instant>, now: Instant) -> Instant {
        let current = tat.map_or(now, |t| t.max(now));
        let allowed_at = current.checked_sub(self.tolerance).unwrap_or(now).max(now);
        *tat = Some(current + self.interval);
        allowed_at
    }
}

/// Every Compute method the client calls (the `method` label).
pub const METHODS: [&str; 6] = [
    "instances.insert",
    "instances.get",
    "instances.list",
    "instances.aggregatedList",
    "instances.delete",
    "zoneOperations.wait",
];

/// Every result but `timeout` (which only `zoneOperations.wait` has): `ok` and each
/// [`crate::cloud::CloudError::kind`].
pub const RESULTS: [&str; 7] = [
    "ok",
    "rate_limited",
    "quota_exceeded",
    "not_found",
    "conflict",
    "unavailable",
    "failed",
];

/// `flotilla_gce_api_calls_total{method,result}` and `flotilla_gce_rate_limit_waits_total`.
/// Created once per process by the manager and shared by every [`super::GceCloud`] (one per
/// project), so all projects count on the one registry; the vectors are shared handles. Every
/// `method` × `result` series exists from the start at 0.
#[derive(Debug, Clone)]
pub struct GceMetrics {
    calls: IntCounterVec,
    waits: IntCounter,
}

impl GceMetrics {
    /// Creates the counters and registers them on `registry`.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let calls = IntCounterVec::new(
            Opts::new(
                "flotilla_gce_api_calls_total",
                "Compute Engine API calls (every attempt) by method and result.",
            ),
            &["method", "result"],
        )?;
        let waits = IntCounter::new(
            "flotilla_gce_rate_limit_waits_total",
            "Compute Engine API calls delayed by the client-side rate limit.",
        )?;
        registry.register(Box::new(calls.clone()))?;
        registry.register(Box::new(waits.clone()))?;
        for method in METHODS {
            for result in RESULTS {
                calls.with_label_values(&[method, result]);
            }
        }
        calls.with_label_values(&["zoneOperations.wait", "timeout"]);
        Ok(Self { calls, waits })
    }

    /// Counts one attempt of `method` ending in `result` (`ok`, `timeout` or a
    /// [`crate::cloud::CloudError::kind`]).
    pub fn call(&self, method: &'static str, result: &'static str) {
        self.calls.with_label_values(&[method, result]).inc();
    }

    /// Counts one call delayed by the rate limiter.
    pub fn waited(&self) {
        self.waits.inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `n` reservations at the given offsets (ms) and returns each delay (ms).
    fn delays(rl: &RateLimiter, offsets_ms: &[u64]) -> Vec<u64> {
        let base = Instant::now();
        let mut tat = None;
        offsets_ms
            .iter()
            .map(|o| {
                let now = base + Duration::from_millis(*o);
                let at = rl.reserve(&mut tat, now);
                (at - now).as_millis() as u64
            })
            .collect()
    }

    #[test]
    fn bursts_then_spaces_calls() {
        // 60/min = one per second, burst 3: three at once, then one a second.
        let rl = RateLimiter::new(60, 3);
        assert_eq!(delays(&rl, &[0, 0, 0, 0, 0]), [0, 0, 0, 1000, 2000]);
    }

    #[test]
    fn refills_while_idle() {
        let rl = RateLimiter::new(120, 1);
        // 500 ms spacing; after 5 s idle the bucket is full again (but holds only one).
        assert_eq!(delays(&rl, &[0, 0, 5000, 5000]), [0, 500, 0, 500]);
    }

    #[tokio::test]
    async fn concurrent_callers_each_get_a_slot() {
        // 6000/min = 10 ms spacing, no burst: 5 concurrent callers span at least 40 ms.
        let rl = std::sync::Arc::new(RateLimiter::new(6000, 1));
        let start = Instant::now();
        let tasks: Vec<_> = (0..5)
            .map(|_| {
                let rl = rl.clone();
                tokio::spawn(async move { rl.acquire().await })
            })
            .collect();
        let mut waited = 0;
        for t in tasks {
            waited += usize::from(t.await.expect("task"));
        }
        assert_eq!(waited, 4);
        assert!(start.elapsed() >= Duration::from_millis(40));
    }

    #[test]
    fn metrics_register_once() {
        let registry = Registry::new();
        let m = GceMetrics::register(&registry).expect("registers");
        m.call("instances.get", "ok");
        m.waited();
        assert!(GceMetrics::register(&registry).is_err());
        let families = registry.gather();
        assert_eq!(families.len(), 2);
    }
}
