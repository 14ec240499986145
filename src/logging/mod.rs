//! The process's logging, set up by `main`: the level filter, the output in text or GitLab
//! Runner's JSON shape (`logrus.rs`), both swapped live on a configuration reload unless the
//! command line fixed them (`--debug`, `--log-level`, `--log-format` win over the file, as in
//! GitLab Runner), the errors-counting layer, and what is printed before logging is set up
//! (`early.rs`: command-line and configuration errors, panics) in the same shape. Owns nothing
//! else: what to log is each module's business.

mod early;
mod logrus;

pub use early::{format_before_logging, install_panic_hook, print_before_logging};
pub use logrus::{Level, LogrusJson};

use crate::config::LogFormat;
use crate::manager::{LogReload, LogReloadError};
use crate::metrics::ErrorCounter;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Layer};

/// Whether the process logs JSON right now: read by the panic hook, which runs outside the
/// subscriber. Written at set-up and at each reload (a relaxed flag: a panic racing a reload
/// may print in either shape).
static JSON: AtomicBool = AtomicBool::new(false);

/// Whether output outside the subscriber (panics) should be a JSON line.
pub(crate) fn json_now() -> bool {
    JSON.load(Ordering::Relaxed)
}

/// What the command line fixed for this run; a reload of the file does not change these.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `--log-level` (or `--debug`), already a tracing level.
    pub level: Option<String>,
    /// `--log-format`.
    pub format: Option<LogFormat>,
}

/// GitLab Runner's (logrus's) level names as tracing levels: `warning` is `warn`, `fatal` and
/// `panic` are `error`. `None` for anything else.
pub fn tracing_level(level: &str) -> Option<&'static str> {
    Some(match level.to_ascii_lowercase().as_str() {
        "trace" => "trace",
        "debug" => "debug",
        "info" => "info",
        "warn" | "warning" => "warn",
        "error" | "fatal" | "panic" => "error",
        _ => return None,
    })
}

/// `runner`/`text` or `json`, as `--log-format` and `log_format` spell them.
pub fn parse_format(format: &str) -> Option<LogFormat> {
    match format {
        "runner" | "text" => Some(LogFormat::Text),
        "json" => Some(LogFormat::Json),
        _ => None,
    }
}

/// The logging filter for `level`: the HTTP and Docker client crates log request bodies
/// (container environments, tokens) at debug, so they stay at warn whatever the level.
fn log_filter(level: &str) -> Result<EnvFilter, LogReloadError> {
    let directives = format!(
        "{level},bollard=warn,hyper=warn,hyper_util=warn,reqwest=warn,h2=warn,rustls=warn,tower=warn,axum=warn"
    );
    EnvFilter::try_new(&directives).map_err(|source| LogReloadError::Level {
        level: level.to_string(),
        source,
    })
}

/// The output layer for `format` (stderr).
fn log_output<S>(format: LogFormat) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    JSON.store(format == LogFormat::Json, Ordering::Relaxed);
    match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .event_format(LogrusJson)
            .boxed(),
        LogFormat::Text => {
            // Colours only on a terminal: journald and log files get plain text.
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(ansi)
                .boxed()
        }
    }
}

/// Starts logging at `level` in `format` (each unless `overrides` fixes it); returns what a
/// configuration reload calls to change both (tracing-subscriber's reload layers: the filter
/// and the output layer are swapped live; what the command line fixed stays), and the counter
/// of warnings and errors logged (`gitlab_runner_errors_total`).
pub fn init(level: &str, format: LogFormat, overrides: Overrides) -> (LogReload, ErrorCounter) {
    let overrides = Arc::new(overrides);
    let level = overrides.level.as_deref().unwrap_or(level);
    let format = overrides.format.unwrap_or(format);
    let filter = log_filter(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, filter_handle) = reload::Layer::new(filter);
    let (output, output_handle) = reload::Layer::new(log_output(format));
    let errors = ErrorCounter::new();
    tracing_subscriber::registry()
        .with(filter)
        .with(errors.layer())
        .with(output)
        .init();
    let reload: LogReload = Arc::new(move |level: &str, format: LogFormat| {
        let filter = log_filter(overrides.level.as_deref().unwrap_or(level))?;
        filter_handle
            .reload(filter)
            .map_err(|source| LogReloadError::Swap {
                what: "level",
                source,
            })?;
        output_handle
            .reload(log_output(overrides.format.unwrap_or(format)))
            .map_err(|source| LogReloadError::Swap {
                what: "format",
                source,
            })
    });
    (reload, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logrus_levels_map_onto_tracing_levels() {
        assert_eq!(tracing_level("warning"), Some("warn"));
        assert_eq!(tracing_level("WARN"), Some("warn"));
        assert_eq!(tracing_level("fatal"), Some("error"));
        assert_eq!(tracing_level("panic"), Some("error"));
        assert_eq!(tracing_level("debug"), Some("debug"));
        assert_eq!(tracing_level("loud"), None);
        assert_eq!(parse_format("runner"), Some(LogFormat::Text));
        assert_eq!(parse_format("json"), Some(LogFormat::Json));
        assert_eq!(parse_format("xml"), None);
    }
}
