//! `gitlab_runner_errors_total{level}`: warnings and errors logged, counted by a tracing
//! [`Layer`] that `main` installs next to its formatter, as GitLab Runner counts them with a
//! logrus hook. The counter exists before the manager's registry does (logging starts first);
//! the manager registers it on its registry. Levels are GitLab Runner's (logrus) names; tracing
//! has no `panic` or `fatal` events, so those series stay at 0.

use prometheus::{IntCounterVec, Opts, Registry};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// Every `level` value, GitLab Runner's order.
pub const LEVELS: [&str; 4] = ["panic", "fatal", "error", "warning"];

/// The counter. Cheap to clone (a shared handle).
#[derive(Clone)]
pub struct ErrorCounter {
    counts: IntCounterVec,
}

impl std::fmt::Debug for ErrorCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ErrorCounter").finish_non_exhaustive()
    }
}

impl Default for ErrorCounter {
    fn default() -> Self {
        Self::new()
    }
}

impl ErrorCounter {
    /// A counter with every level at 0, not yet registered.
    pub fn new() -> ErrorCounter {
        // Constant name and labels: creation cannot fail.
        let counts = IntCounterVec::new(
            Opts::new(
                "gitlab_runner_errors_total",
                "The  number of catched errors.",
            ),
            &["level"],
        )
        .expect("constant metric definition");
        for level in LEVELS {
            counts.with_label_values(&[level]);
        }
        ErrorCounter { counts }
    }

    /// Registers the counter on `registry`.
    pub fn register(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        registry.register(Box::new(self.counts.clone()))
    }

    /// The layer that feeds this counter.
    pub fn layer(&self) -> ErrorLayer {
        ErrorLayer {
            counter: self.clone(),
        }
    }

    /// How many events of `level` were counted.
    pub fn get(&self, level: &str) -> u64 {
        self.counts.with_label_values(&[level]).get()
    }
}

/// Counts WARN events as `warning` and ERROR events as `error`.
pub struct ErrorLayer {
    counter: ErrorCounter,
}

impl<S: Subscriber> Layer<S> for ErrorLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let level = match *event.metadata().level() {
            Level::ERROR => "error",
            Level::WARN => "warning",
            _ => return,
        };
        self.counter.counts.with_label_values(&[level]).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn counts_warnings_and_errors_only() {
        let counter = ErrorCounter::new();
        let subscriber = tracing_subscriber::registry().with(counter.layer());
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!("one");
            tracing::warn!("two");
            tracing::error!("three");
            tracing::info!("not counted");
        });
        assert_eq!(counter.get("warning"), 2);
        assert_eq!(counter.get("error"), 1);
        assert_eq!(counter.get("fatal"), 0);
        let registry = Registry::new();
        counter.register(&registry).expect("registers");
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&registry.gather())
            .expect("encodes");
        assert!(text.contains("gitlab_runner_errors_total{level=\"panic\"} 0"));
        assert!(text.contains("gitlab_runner_errors_total{level=\"warning\"} 2"));
    }
}
