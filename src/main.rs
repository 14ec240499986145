//! The `flotilla` command: flags, logging, configuration, then `flotilla::run`. Thin on purpose.

use clap::{Parser, Subcommand};
use flotilla::config::{Config, LogFormat};
use std::path::PathBuf;
use std::process::ExitCode;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

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
    /// Commands the helper image runs inside a job's helper container.
    #[command(subcommand, hide = true)]
    Helper(flotilla::helper::HelperCommand),
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
        Command::Helper(command) => flotilla::helper::run(command),
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
    let errors = init_logging(&loaded.config.log_level, loaded.config.log_format);
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
        let controls = flotilla::lifecycle::listen_for_signals(&tracker, stop.clone())?;
        let hooks = flotilla::manager::Hooks {
            errors: Some(errors),
            ..Default::default()
        };
        let result = flotilla::manager::run_with(loaded.config, controls, hooks).await;
        stop.cancel();
        tracker.close();
        tracker.wait().await;
        result.map_err(anyhow::Error::from)
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "flotilla stopped on an error");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs at `log_level`, except for the HTTP and Docker client crates, which log request bodies
/// (container environments, tokens) at debug: they stay at warn whatever the level. Returns the
/// counter of warnings and errors logged (`gitlab_runner_errors_total`).
fn init_logging(level: &str, format: LogFormat) -> flotilla::metrics::ErrorCounter {
    let directives = format!(
        "{level},bollard=warn,hyper=warn,hyper_util=warn,reqwest=warn,h2=warn,rustls=warn,tower=warn,axum=warn"
    );
    let filter = EnvFilter::try_new(&directives).unwrap_or_else(|_| EnvFilter::new("info"));
    let errors = flotilla::metrics::ErrorCounter::new();
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let subscriber = tracing_subscriber::registry()
        .with(filter)
        .with(errors.layer());
    match format {
        LogFormat::Json => subscriber.with(fmt.json()).init(),
        LogFormat::Text => subscriber.with(fmt).init(),
    }
    errors
}
