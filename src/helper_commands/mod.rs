//! `flotilla helper …`: the commands the helper image runs inside a job's helper container
//! (GitLab Runner's `gitlab-runner-helper`): artifacts upload/download, cache archive/extract,
//! waiting for service ports. The executor writes shell scripts that call them; they read their
//! secrets (job token, signed URLs) from the environment of that script, never from argv shown in
//! the trace.
//!
//! Each command lives in its own file and adds one variant to [`HelperCommand`]; `contract.rs`
//! holds the names the executor's scripts and these commands share.

mod archive;
pub mod artifacts;
mod cache;
pub mod contract;
mod ports;

pub use ports::WaitForPorts;

/// Zip extraction, public only for the fuzz targets in `fuzz/`.
#[doc(hidden)]
pub use archive::{extract_zip, ArchiveError};

use std::process::ExitCode;

/// One helper command (`flotilla helper <command>`).
#[derive(Debug, clap::Subcommand)]
pub enum HelperCommand {
    /// Print the helper's version (the executor checks the image carries a Flotilla helper).
    Version,
    /// Collect files and upload them as the job's artifacts (GitLab Runner's
    /// `artifacts-uploader`; the job token comes from `FLOTILLA_JOB_TOKEN`).
    ArtifactsUploader(artifacts::UploaderArgs),
    /// Download a dependency's artifacts and extract them into the working directory (GitLab
    /// Runner's `artifacts-downloader`; the token comes from `FLOTILLA_JOB_TOKEN`).
    ArtifactsDownloader(artifacts::DownloaderArgs),
    /// Zip a job cache and store it (local cache volume or a signed URL); reads its spec from
    /// `FLOTILLA_CACHE_SPEC`.
    CacheArchiver(cache::CacheArgs),
    /// Restore a job cache (key, then fallback keys); reads its spec from `FLOTILLA_CACHE_SPEC`.
    CacheExtractor(cache::CacheArgs),
    /// Wait until a TCP connection to every given port of a host succeeds (service health
    /// check; the executor bounds the wait).
    WaitForPorts(WaitForPorts),
}

/// Runs a helper command to its end; the process exit code.
pub fn run(command: HelperCommand) -> ExitCode {
    match command {
        HelperCommand::Version => {
            println!("flotilla-helper {}", crate::VERSION);
            ExitCode::SUCCESS
        }
        HelperCommand::ArtifactsUploader(args) => artifacts::run_uploader(args),
        HelperCommand::ArtifactsDownloader(args) => artifacts::run_downloader(args),
        HelperCommand::CacheArchiver(args) => cache::archiver(args),
        HelperCommand::CacheExtractor(args) => cache::extractor(args),
        HelperCommand::WaitForPorts(args) => ports::run(&args),
    }
}
