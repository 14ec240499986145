//! The `testkit` binary: runs a fake out of process for the demo and benchmarks, e.g.
//! `testkit fake-gitlab --listen 127.0.0.1:0 --runner-token T`, which prints
//! `listening on http://…` as its first stdout line and serves until killed (or Ctrl-C).
//! Jobs and faults are then driven through the fake's `/admin` HTTP API.

#![forbid(unsafe_code)]

use std::io::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, Subcommand};
use testkit::{FakeGitlab, FakeGitlabOptions};

#[derive(Parser)]
#[command(
    name = "testkit",
    about = "Fakes for Flotilla's tests, demo and benchmarks"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the fake GitLab Runner API (and its /admin API) on loopback.
    FakeGitlab {
        /// Loopback address to listen on.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// Hold polls whose last_update is current for this many seconds (0: no long polling).
        #[arg(long, default_value_t = 0)]
        long_poll_secs: u64,
        /// Runner token to register (repeatable).
        #[arg(long = "runner-token")]
        runner_tokens: Vec<String>,
        /// CI_SERVER_URL that jobs see (default: the fake's own URL).
        #[arg(long)]
        advertised_url: Option<String>,
        /// X-GitLab-Trace-Update-Interval to send with accepted trace PATCHes.
        #[arg(long)]
        trace_update_interval_secs: Option<u64>,
    },
    /// The README's demo: the real `flotilla run` with the docker+machine executor on the fake
    /// Compute Engine, jobs from the fake GitLab (`--local`: the local docker executor).
    Demo {
        /// The `flotilla` binary to run.
        #[arg(long, default_value = "target/release/flotilla")]
        flotilla: std::path::PathBuf,
        /// Run the jobs on the local `docker` executor instead (no VMs).
        #[arg(long)]
        local: bool,
        /// Print every job's trace at the end.
        #[arg(long)]
        traces: bool,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = Cli::parse();
    // The docker+machine demo keeps the fakes quiet: their info lines would break its live line.
    let default_filter = match &cli.command {
        Command::Demo { local: false, .. } => "warn",
        _ => "info",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Demo {
            flotilla,
            local,
            traces,
        } => {
            let opts = testkit::demo::DemoOptions {
                flotilla,
                local,
                traces,
            };
            if !testkit::demo::run(&opts).await? {
                anyhow::bail!("the demo did not end as expected (see above)");
            }
            println!("demo: every job ended as expected");
            Ok(())
        }
        Command::FakeGitlab {
            listen,
            long_poll_secs,
            runner_tokens,
            advertised_url,
            trace_update_interval_secs,
        } => {
            let fake = FakeGitlab::start(FakeGitlabOptions {
                listen,
                long_poll: Duration::from_secs(long_poll_secs),
                advertised_url,
                trace_update_interval_secs,
                ..FakeGitlabOptions::default()
            })
            .await?;
            for token in &runner_tokens {
                fake.add_runner(token);
            }
            let mut stdout = std::io::stdout().lock();
            writeln!(stdout, "listening on {}", fake.url())?;
            stdout.flush()?;
            drop(stdout);
            tokio::signal::ctrl_c().await?;
            fake.shutdown().await;
            Ok(())
        }
    }
}
