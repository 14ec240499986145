//! The `flotilla` command: flags, logging, configuration, then
//! `flotilla::manager::run_reloadable`. Thin on purpose.

use clap::{CommandFactory, Parser, Subcommand};
use flotilla::config::{Config, LogFormat};
use flotilla::logging::{Level, Overrides};
use std::path::PathBuf;
use std::process::ExitCode;

/// jemalloc, not glibc's malloc: a round of short jobs left glibc's per-thread arenas ≈ 2 KB
/// a job bigger, where jemalloc gives freed pages back (BENCHMARKS.md, "jemalloc").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Exit code for a configuration that cannot be used (EX_USAGE... sysexits' EX_DATAERR family).
const EXIT_BAD_CONFIG: u8 = 64;

#[derive(Parser)]
#[command(
    name = "flotilla",
    version,
    about = "Autoscaling GitLab CI runner manager for Google Compute Engine"
)]
struct Cli {
    /// Log at debug level (GitLab Runner's `--debug`), whatever the file says.
    #[arg(long, env = "RUNNER_DEBUG")]
    debug: bool,
    /// Log level for this run, over `log_level`: debug, info, warn, error, fatal or panic.
    #[arg(short = 'l', long, env = "LOG_LEVEL", value_parser = ["trace", "debug", "info", "warn", "warning", "error", "fatal", "panic"])]
    log_level: Option<String>,
    /// Log format for this run, over `log_format`: runner, text or json.
    #[arg(long, env = "LOG_FORMAT", value_parser = ["runner", "text", "json"])]
    log_format: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the manager: poll the coordinator and run jobs until stopped.
    Run(RunArgs),
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

/// `flotilla run`, with the flags GitLab Runner's `run` takes (what `gitlab-runner install`
/// writes into its service unit).
#[derive(clap::Args)]
struct RunArgs {
    #[command(flatten)]
    config: flotilla::register::args::ConfigArg,
    /// Change to this directory first (relative paths of the file resolve from here).
    #[arg(short = 'd', long)]
    working_directory: Option<PathBuf>,
    /// The service's name (accepted for GitLab Runner's units; only logged here).
    #[arg(short = 'n', long = "service")]
    service: Option<String>,
    /// Accepted for GitLab Runner's units: jobs run in containers, so this does not change
    /// who runs them (only logged).
    #[arg(short = 'u', long)]
    user: Option<String>,
    /// Accepted for GitLab Runner's units: logs go to stderr, which systemd's journal keeps.
    #[arg(long, env = "LOG_SYSLOG")]
    syslog: bool,
    /// Metrics server address for this run, over `listen_address` (`host`, `host:port`).
    #[arg(long, env = "LISTEN_ADDRESS")]
    listen_address: Option<String>,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a configuration file: prints warnings, and errors with key path and line.
    Check {
        /// The file to check (default: `-c`, `CONFIG_FILE`, then /etc/flotilla/config.toml).
        file: Option<PathBuf>,
        #[command(flatten)]
        config: flotilla::register::args::ConfigArg,
    },
}

fn main() -> ExitCode {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    // `FLOTILLA_CONFIG`, Flotilla's first name for it, stays an alias of `CONFIG_FILE`. Set
    // before any thread starts.
    if std::env::var_os("CONFIG_FILE").is_none() {
        if let Some(path) = std::env::var_os("FLOTILLA_CONFIG") {
            std::env::set_var("CONFIG_FILE", path);
        }
    }
    flotilla::logging::install_panic_hook();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return command_line_error(e),
    };
    let overrides = match overrides(&cli) {
        Ok(overrides) => overrides,
        Err(e) => return command_line_error(e),
    };
    match cli.command {
        Command::Config {
            command: ConfigCommand::Check { file, config },
        } => check_config(&file.unwrap_or(config.config)),
        Command::Run(args) => run(&args, overrides),
        Command::Helper(command) => flotilla::helper_commands::run(command),
        Command::Register(args) => registration(flotilla::register::register(*args)),
        Command::Verify(args) => registration(flotilla::register::verify(args)),
        Command::Unregister(args) => registration(flotilla::register::unregister(args)),
        Command::ResetToken(args) => registration(flotilla::register::reset_token(args)),
        Command::List(args) => registration(async move { flotilla::register::list(args) }),
    }
}

/// Prints an error that ends the process before logging is set up: `error: <msg>` in text, a
/// `fatal` JSON line otherwise (GitLab Runner's `logrus.Fatal`).
fn fatal(format: LogFormat, msg: &str, fields: &[(&str, &str)]) {
    let msg = match format {
        LogFormat::Text => format!("error: {msg}"),
        LogFormat::Json => msg.to_string(),
    };
    flotilla::logging::print_before_logging(format, Level::Fatal, &msg, fields);
}

/// What `--debug`, `--log-level` and `--log-format` fix for this run.
fn overrides(cli: &Cli) -> Result<Overrides, clap::Error> {
    let invalid = |what: &str| {
        Cli::command().error(
            clap::error::ErrorKind::InvalidValue,
            format!("invalid {what}"),
        )
    };
    let level = match (&cli.log_level, cli.debug) {
        (_, true) => Some("debug".to_string()),
        (Some(level), false) => Some(
            flotilla::logging::tracing_level(level)
                .ok_or_else(|| invalid("--log-level"))?
                .to_string(),
        ),
        (None, false) => None,
    };
    let format = match &cli.log_format {
        Some(format) => {
            Some(flotilla::logging::parse_format(format).ok_or_else(|| invalid("--log-format"))?)
        }
        None => None,
    };
    Ok(Overrides { level, format })
}

/// A command line clap refused: help and version as clap prints them; an error in the shape
/// the logs would have (a JSON line with `--log-format json` or `log_format = "json"`).
fn command_line_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        e.exit();
    }
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let format = flotilla::logging::format_before_logging(
        &args,
        |key| std::env::var(key).ok(),
        std::path::Path::new(flotilla::register::args::DEFAULT_CONFIG),
    );
    if format == LogFormat::Text {
        e.exit();
    }
    let text = e.render().to_string();
    // The reason, without the usage lines that follow it.
    let msg = text.trim().trim_start_matches("error: ");
    let msg = msg.split("\n\n").next().unwrap_or(msg);
    flotilla::logging::print_before_logging(format, Level::Fatal, msg, &[]);
    ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2))
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
    match Config::load(file) {
        Ok(loaded) => {
            let warnings = loaded.warnings;
            for warning in &warnings {
                eprintln!("warning: {warning}");
            }
            for (i, runner) in loaded.config.runners.iter().enumerate() {
                if let Some(mapping) = &runner.autoscaler {
                    println!(
                        "runners[{i}] {:?}: executor docker-autoscaler: {mapping}",
                        runner.name
                    );
                }
            }
            let host = flotilla::config::host_zone();
            for note in flotilla::config::check_notes(&loaded.config, &host) {
                println!("{note}");
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

fn run(args: &RunArgs, overrides: Overrides) -> ExitCode {
    let path = args.config.config.as_path();
    let early_format = || {
        overrides.format.unwrap_or_else(|| {
            let args: Vec<std::ffi::OsString> = vec!["--config".into(), path.into()];
            flotilla::logging::format_before_logging(&args, |_| None, path)
        })
    };
    if let Some(dir) = &args.working_directory {
        if let Err(e) = std::env::set_current_dir(dir) {
            let msg = format!(
                "cannot change to the working directory {}: {e}",
                dir.display()
            );
            fatal(early_format(), &msg, &[]);
            return ExitCode::FAILURE;
        }
    }
    let mut loaded = match Config::load(path) {
        Ok(loaded) => loaded,
        Err(e) => {
            let file = path.display().to_string();
            let format = early_format();
            let msg = match format {
                LogFormat::Json => format!("cannot use {file}: {e}"),
                LogFormat::Text => format!("cannot use {file}:\n{e}"),
            };
            fatal(format, &msg, &[("file", &file)]);
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    if let Some(address) = &args.listen_address {
        loaded.config.listen_address = Some(flotilla::config::listen_address_with_port(address));
    }
    let (logging, errors) = flotilla::logging::init(
        &loaded.config.log_level,
        loaded.config.log_format,
        overrides,
    );
    for warning in &loaded.warnings {
        tracing::warn!(%warning, "configuration");
    }
    match flotilla::nofile::raise() {
        Ok((soft, hard)) => tracing::debug!(?soft, ?hard, "open files limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open files limit"),
    }
    if let Some(dir) = &args.working_directory {
        tracing::info!(directory = %dir.display(), "working directory");
    }
    if args.service.is_some() || args.user.is_some() || args.syslog {
        tracing::info!(
            service = args.service.as_deref().unwrap_or_default(),
            user = args.user.as_deref().unwrap_or_default(),
            syslog = args.syslog,
            "GitLab Runner service flags accepted: jobs run in containers whatever --user says, and logs go to stderr (the journal)"
        );
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
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
            ExitCode::FAILURE
        }
    }
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
