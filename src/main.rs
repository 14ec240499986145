//! The `flotilla` command: flags, logging, configuration, then
//! `flotilla::manager::run_reloadable`. Thin on purpose.

use clap::{Parser, Subcommand};
use flotilla::config::{Config, LogFormat};
use flotilla::manager::LogReloadError;
use std::path::PathBuf;
use std::process::ExitCode;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Layer};

/// Exit code for a configuration that cannot be used (EX_USAGE... sysexits' EX_DATAERR family).
const EXIT_BAD_CONFIG: u8 = 64;

#[derive(Parser)]
#[command(
    name = "flotilla",
    version,
    about = "Autoscaling GitLab CI runner manager for Google Compute Engine"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the manager: poll the coordinator and run jobs until stopped.
    Run {
        /// The configuration file.
        #[arg(
            short,
            long,
            env = "FLOTILLA_CONFIG",
            default_value = "/etc/flotilla/config.toml"
        )]
        config: PathBuf,
    },
    /// Work with configuration files.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Register a runner with GitLab and add it to the configuration file.
    Register(Box<flotilla::register::args::RegisterArgs>),
    /// Check the runners of the configuration file with GitLab (--delete removes gone ones).
    Verify(flotilla::register::args::VerifyArgs),
    /// Unregister runners from GitLab and remove them from the configuration file.
    Unregister(flotilla::register::args::UnregisterArgs),
    /// List the runners of the configuration file.
    List(flotilla::register::args::ConfigArg),
    /// Reset runners' authentication tokens and save the new ones.
    ResetToken(flotilla::register::args::ResetTokenArgs),
    /// Commands the helper image runs inside a job's helper container.
    #[command(subcommand, hide = true)]
    Helper(flotilla::helper_commands::HelperCommand),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a configuration file: prints warnings, and errors with key path and line.
    Check {
        /// The file to check.
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = Cli::parse();
    match cli.command {
        Command::Config {
            command: ConfigCommand::Check { file },
        } => check_config(&file),
        Command::Run { config } => run(&config),
        Command::Helper(command) => flotilla::helper_commands::run(command),
        Command::Register(args) => registration(flotilla::register::register(*args)),
        Command::Verify(args) => registration(flotilla::register::verify(args)),
        Command::Unregister(args) => registration(flotilla::register::unregister(args)),
        Command::ResetToken(args) => registration(flotilla::register::reset_token(args)),
        Command::List(args) => registration(async move { flotilla::register::list(args) }),
    }
}

/// Runs a registration command on a small runtime; its error is printed, exit code 1.
fn registration(
    command: impl std::future::Future<Output = Result<(), flotilla::register::CommandError>>,
) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn check_config(file: &std::path::Path) -> ExitCode {
    match flotilla::config::check_file(file) {
        Ok(warnings) => {
            for warning in &warnings {
                eprintln!("warning: {warning}");
            }
            println!("{}: OK ({} warnings)", file.display(), warnings.len());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(EXIT_BAD_CONFIG)
        }
    }
}

fn run(path: &std::path::Path) -> ExitCode {
    let loaded = match Config::load(path) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("error: cannot use {}:\n{e}", path.display());
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    let (logging, errors) = init_logging(&loaded.config.log_level, loaded.config.log_format);
    for warning in &loaded.warnings {
        tracing::warn!(%warning, "configuration");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let tracker = tokio_util::task::TaskTracker::new();
        let stop = tokio_util::sync::CancellationToken::new();
        let (tx, controls) = tokio::sync::mpsc::channel(16);
        flotilla::lifecycle::send_signals_to(&tracker, stop.clone(), tx.clone())?;
        if let Err(e) =
            flotilla::lifecycle::watch_config_file(&tracker, stop.clone(), path, tx.clone())
        {
            tracing::warn!(file = %path.display(), error = %e, "cannot watch the configuration file: reload with SIGHUP");
        }
        drop(tx);
        let source = flotilla::manager::ConfigSource {
            path: path.to_path_buf(),
            logging: Some(logging),
        };
        let result = flotilla::manager::run_reloadable(
            loaded.config,
            Some(source),
            controls,
            flotilla::manager::Hooks {
                errors: Some(errors),
                final_update_backoff: final_update_backoff_override(),
                ..Default::default()
            },
        )
        .await;
        stop.cancel();
        tracker.close();
        tracker.wait().await;
        result.map_err(anyhow::Error::from)
    });
    // Tasks still running (an abort's second signal leaves some) are not waited for.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "flotilla stopped on an error");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
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
    // Colours only on a terminal: journald and log files get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match format {
        LogFormat::Json => layer.json().boxed(),
        LogFormat::Text => layer.boxed(),
    }
}

/// Starts logging at `level` in `format`; returns what a configuration reload calls to change
/// both (tracing-subscriber's reload layers: the filter and the output layer are swapped live),
/// and the counter of warnings and errors logged (`gitlab_runner_errors_total`).
fn init_logging(
    level: &str,
    format: LogFormat,
) -> (
    flotilla::manager::LogReload,
    flotilla::metrics::ErrorCounter,
) {
    let filter = log_filter(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, filter_handle) = reload::Layer::new(filter);
    let (output, output_handle) = reload::Layer::new(log_output(format));
    let errors = flotilla::metrics::ErrorCounter::new();
    tracing_subscriber::registry()
        .with(filter)
        .with(errors.layer())
        .with(output)
        .init();
    let reload = std::sync::Arc::new(move |level: &str, format: LogFormat| {
        let filter = log_filter(level)?;
        filter_handle
            .reload(filter)
            .map_err(|source| LogReloadError::Swap {
                what: "level",
                source,
            })?;
        output_handle
            .reload(log_output(format))
            .map_err(|source| LogReloadError::Swap {
                what: "format",
                source,
            })
    });
    (reload, errors)
}

/// `FLOTILLA_FINAL_UPDATE_BACKOFF_MS`: the first wait between final-update attempts in
/// milliseconds (default GitLab Runner's 1000, doubling up to 60 min). A test knob: the
/// integration tests shorten it so a coordinator outage of seconds stands for one of minutes.
fn final_update_backoff_override() -> Option<std::time::Duration> {
    let ms = std::env::var("FLOTILLA_FINAL_UPDATE_BACKOFF_MS").ok()?;
    ms.trim()
        .parse::<u64>()
        .ok()
        .filter(|ms| *ms > 0)
        .map(std::time::Duration::from_millis)
}
