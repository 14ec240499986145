//! The wall clock a pool reads for its autoscaling periods. In production it is the system's
//! (`Utc::now()`); a simulation anchors it at a chosen moment and lets it advance with tokio's
//! clock, so cron periods and their time zones follow `tokio::time::pause`d time like every
//! other timer of the pool (backoff, cool-downs, the rate limiter, IdleTime).

use chrono::{DateTime, Utc};
use tokio::time::Instant;

/// Where "now" comes from for periods. Made with the settings ([`super::FleetSettings`]);
/// copied into the pool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WallClock {
    /// `None`: the system clock. `Some((wall, at))`: `wall` at tokio instant `at`.
    anchor: Option<(DateTime<Utc>, Instant)>,
}

impl WallClock {
    /// The system clock.
    pub fn system() -> WallClock {
        WallClock { anchor: None }
    }

    /// A clock that reads `start` now and advances with `tokio::time::Instant` (paused or not).
    pub fn starting_at(start: DateTime<Utc>) -> WallClock {
        WallClock {
            anchor: Some((start, Instant::now())),
        }
    }

    /// The wall-clock time now.
    pub fn now(&self) -> DateTime<Utc> {
        match self.anchor {
            None => Utc::now(),
            Some((wall, at)) => {
                let elapsed = chrono::Duration::from_std(Instant::now().duration_since(at))
                    .unwrap_or(chrono::Duration::MAX);
                wall.checked_add_signed(elapsed).unwrap_or(wall)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn an_anchored_clock_follows_paused_time() {
        let start = Utc.with_ymd_and_hms(2026, 1, 5, 0, 0, 0).unwrap();
        let clock = WallClock::starting_at(start);
        assert_eq!(clock.now(), start);
        tokio::time::sleep(Duration::from_secs(9 * 3600)).await;
        assert_eq!(
            clock.now(),
            Utc.with_ymd_and_hms(2026, 1, 5, 9, 0, 0).unwrap()
        );
        let system = WallClock::system().now();
        assert!((Utc::now() - system).num_seconds().abs() < 5);
    }
}
