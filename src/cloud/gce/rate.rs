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
            let current = tat.map_or(now, |t| t.max(now));
            let allowed_at = current.checked_sub(self.tolerance).unwrap_or(now);
            *tat = Some(current + self.interval);
            allowed_at
        };
        if allowed_at > now {
            tokio::time::sleep_until(allowed_at).await;
            true
        } else {
            false
        }
    }
}

/// `flotilla_gce_api_calls_total{method,result}` and `flotilla_gce_rate_limit_waits_total`.
/// Created once per [`super::GceCloud`]; the vectors are shared handles.
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

    #[tokio::test(start_paused = true)]
    async fn bursts_then_spaces_calls() {
        // 60/min = one per second, burst 3.
        let rl = RateLimiter::new(60, 3);
        let start = Instant::now();
        let mut waited = Vec::new();
        for _ in 0..5 {
            waited.push(rl.acquire().await);
        }
        assert_eq!(waited, [false, false, false, true, true]);
        assert_eq!(start.elapsed(), Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn refills_while_idle() {
        let rl = RateLimiter::new(120, 1);
        assert!(!rl.acquire().await);
        assert!(rl.acquire().await);
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!rl.acquire().await);
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_each_get_a_slot() {
        let rl = std::sync::Arc::new(RateLimiter::new(600, 1));
        let start = Instant::now();
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let rl = rl.clone();
                tokio::spawn(async move { rl.acquire().await })
            })
            .collect();
        for t in tasks {
            t.await.expect("task");
        }
        // 4 calls at 100 ms spacing: the last leaves 300 ms after the first.
        assert_eq!(start.elapsed(), Duration::from_millis(300));
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
