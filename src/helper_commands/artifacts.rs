//! `flotilla helper artifacts-uploader` and `artifacts-downloader` (GitLab Runner's
//! `commands/helpers/artifacts_uploader.go` / `artifacts_downloader.go`): run in the job's helper
//! container with the project directory as working directory. The uploader collects `--path` /
//! `--exclude` / `--untracked`, writes a zip, gzip or raw file into a temporary file and streams
//! it to `POST jobs/:id/artifacts`; the downloader fetches a dependency's archive into a
//! temporary file and extracts it into the working directory.
//!
//! The job token comes from the environment variable [`TOKEN_ENV`], which the stage script sets
//! for this one command; it is never an argument (argv shows in process lists and traces).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::archive::{self, ArchiveError, Collected, Selection};
use crate::coordinator::{ArtifactUpload, ArtifactsClient, ArtifactsError, JobCredentials};
use crate::go_bool::parse_go_bool;

pub use super::contract::TOKEN_ENV;

/// Why an artifacts command failed; the command prints it after `FATAL: ` and exits 1. No
/// variant holds the job token.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactsCommandError {
    /// The stage script did not export the job token.
    #[error("missing job token: the stage script must set {TOKEN_ENV}")]
    MissingToken,
    /// The working directory could not be read.
    #[error("unable to get the working directory: {0}")]
    WorkingDirectory(std::io::Error),
    /// The async runtime could not start.
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    /// `--id` was missing or not positive.
    #[error("missing build ID (--id)")]
    MissingId,
    /// `--artifact-format` named a format the uploader cannot write.
    #[error(transparent)]
    Format(#[from] UnsupportedFormat),
    /// Selecting the files failed.
    #[error(transparent)]
    Collect(ArchiveError),
    /// A temporary file could not be made.
    #[error("creating a temporary file: {0}")]
    TempFile(std::io::Error),
    /// Writing the archive failed.
    #[error("creating the artifacts archive: {0}")]
    WriteArchive(ArchiveError),
    /// The coordinator URL is not usable.
    #[error(transparent)]
    Client(ArtifactsError),
    /// The upload or download failed; `doing` is GitLab Runner's line for the transfer.
    #[error("{doing} {source}")]
    Transfer {
        /// What was being done (`Uploading artifacts to coordinator...`).
        doing: String,
        /// The client's error (never the token or a signed URL).
        source: ArtifactsError,
    },
    /// Extracting the downloaded archive failed.
    #[error("extracting the artifacts: {0}")]
    Extract(ArchiveError),
}

/// An `--artifact-format` the uploader does not write.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unsupported artifact format {0:?} (zip, gzip or raw)")]
pub struct UnsupportedFormat(pub String);

/// The upload name when `--name` is empty or `.` (`DefaultUploadName`).
const DEFAULT_UPLOAD_NAME: &str = "default";

/// `artifacts-uploader` flags (GitLab Runner's, minus `--token`).
#[derive(Debug, Clone, clap::Args)]
pub struct UploaderArgs {
    /// The coordinator URL, as the runner is configured.
    #[arg(long)]
    pub url: String,
    /// The job id.
    #[arg(long)]
    pub id: i64,
    /// A file, directory or glob pattern to archive (repeatable).
    #[arg(long = "path")]
    pub paths: Vec<String>,
    /// A glob pattern of paths to leave out (repeatable).
    #[arg(long)]
    pub exclude: Vec<String>,
    /// Also archive the files git does not track.
    #[arg(long)]
    pub untracked: bool,
    /// The archive's name (`artifacts` → `artifacts.zip`).
    #[arg(long, default_value = "artifacts")]
    pub name: String,
    /// When GitLab may delete the artifacts (`1 week`, `never`, …).
    #[arg(long)]
    pub expire_in: Option<String>,
    /// `zip` (default), `gzip` or `raw`.
    #[arg(long)]
    pub artifact_format: Option<String>,
    /// `archive` (default), `junit`, `dotenv`, … .
    #[arg(long)]
    pub artifact_type: Option<String>,
    /// TLS toward GitLab.
    #[command(flatten)]
    pub tls: TlsArgs,
}

/// GitLab Runner's helper TLS flags; in a job they come from the runner's file variables.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TlsArgs {
    /// PEM certificates to trust for GitLab besides the system's.
    #[arg(long = "tls-ca-file", env = "CI_SERVER_TLS_CA_FILE")]
    pub ca_file: Option<std::path::PathBuf>,
    /// PEM client certificate to present to GitLab.
    #[arg(long = "tls-cert-file", env = "CI_SERVER_TLS_CERT_FILE")]
    pub cert_file: Option<std::path::PathBuf>,
    /// Its PEM private key.
    #[arg(long = "tls-key-file", env = "CI_SERVER_TLS_KEY_FILE")]
    pub key_file: Option<std::path::PathBuf>,
}

impl TlsArgs {
    fn files(&self) -> crate::config::TlsFiles {
        let set = |p: &Option<std::path::PathBuf>| p.clone().filter(|p| !p.as_os_str().is_empty());
        crate::config::TlsFiles {
            ca_file: set(&self.ca_file),
            cert_file: set(&self.cert_file),
            key_file: set(&self.key_file),
        }
    }
}

/// `artifacts-downloader` flags (GitLab Runner's, minus `--token`).
#[derive(Debug, Clone, clap::Args)]
pub struct DownloaderArgs {
    /// The coordinator URL, as the runner is configured.
    #[arg(long)]
    pub url: String,
    /// The id of the job whose artifacts to download.
    #[arg(long)]
    pub id: i64,
    /// Ask for a redirect to object storage on the first attempt (`FF_USE_DIRECT_DOWNLOAD`,
    /// on by default as in GitLab Runner).
    #[arg(
        long,
        env = "FF_USE_DIRECT_DOWNLOAD",
        default_value_t = true,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        default_missing_value = "true",
        value_parser = parse_go_bool
    )]
    pub direct_download: bool,
    /// TLS toward GitLab.
    #[command(flatten)]
    pub tls: TlsArgs,
}

/// An artifacts format the uploader can write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A zip archive (`artifacts.zip`).
    Zip,
    /// One gzip member per file (`junit.gz`): reports.
    Gzip,
    /// One file as it is.
    Raw,
}

impl Format {
    /// Parses `--artifact-format` (empty means zip).
    pub fn parse(value: Option<&str>) -> Result<Format, UnsupportedFormat> {
        match value.unwrap_or("") {
            "" | "zip" => Ok(Format::Zip),
            "gzip" => Ok(Format::Gzip),
            "raw" => Ok(Format::Raw),
            other => Err(UnsupportedFormat(other.to_string())),
        }
    }
}

/// The multipart file name GitLab Runner gives an upload (`artifactFilename`).
pub fn artifact_filename(name: &str, format: Format) -> String {
    let base = Path::new(name)
        .file_name()
        .map(|b| b.to_string_lossy().into_owned())
        .filter(|b| !b.is_empty() && b != ".")
        .unwrap_or_else(|| DEFAULT_UPLOAD_NAME.to_string());
    match format {
        Format::Zip => format!("{base}.zip"),
        Format::Gzip => format!("{base}.gz"),
        Format::Raw => base,
    }
}

/// Runs the uploader in the current directory with the token from [`TOKEN_ENV`].
pub fn run_uploader(args: UploaderArgs) -> ExitCode {
    let outcome =
        token_and_dir().and_then(|(token, wd)| runtime()?.block_on(upload(&args, &token, &wd)));
    exit(outcome)
}

/// Runs the downloader in the current directory with the token from [`TOKEN_ENV`].
pub fn run_downloader(args: DownloaderArgs) -> ExitCode {
    let outcome =
        token_and_dir().and_then(|(token, wd)| runtime()?.block_on(download(&args, &token, &wd)));
    exit(outcome)
}

fn token_and_dir() -> Result<(String, PathBuf), ArtifactsCommandError> {
    let token = std::env::var(TOKEN_ENV)
        .ok()
        .filter(|t| !t.is_empty())
        .ok_or(ArtifactsCommandError::MissingToken)?;
    let wd = std::env::current_dir().map_err(ArtifactsCommandError::WorkingDirectory)?;
    Ok((token, wd))
}

fn runtime() -> Result<tokio::runtime::Runtime, ArtifactsCommandError> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ArtifactsCommandError::Runtime)
}

fn exit(outcome: Result<(), ArtifactsCommandError>) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            println!("FATAL: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Collects, archives and uploads from `wd`. No file selected is not an error (as upstream).
pub async fn upload(
    args: &UploaderArgs,
    token: &str,
    wd: &Path,
) -> Result<(), ArtifactsCommandError> {
    if args.id <= 0 {
        return Err(ArtifactsCommandError::MissingId);
    }
    let format = Format::parse(args.artifact_format.as_deref())?;
    let selection = Selection {
        paths: args.paths.clone(),
        exclude: args.exclude.clone(),
        untracked: args.untracked,
    };
    let collected = archive::collect(wd, &selection).map_err(ArtifactsCommandError::Collect)?;
    for message in &collected.messages {
        println!("{message}");
    }
    if collected.files.is_empty() {
        println!("ERROR: No files to upload");
        return Ok(());
    }
    let file = write_archive(wd, &collected, format)?;
    let upload = ArtifactUpload {
        file: file.path().to_path_buf(),
        filename: artifact_filename(&args.name, format),
        artifact_type: args.artifact_type.clone(),
        artifact_format: args.artifact_format.clone(),
        expire_in: args.expire_in.clone(),
    };
    let job = JobCredentials {
        id: args.id,
        token: token.to_string(),
    };
    let prefix = match args.artifact_type.as_deref().filter(|t| !t.is_empty()) {
        Some(kind) => format!("Uploading artifacts as {kind:?} to coordinator..."),
        None => "Uploading artifacts to coordinator...".to_string(),
    };
    let client = ArtifactsClient::with_tls(&args.url, &args.tls.files())
        .map_err(ArtifactsCommandError::Client)?;
    client
        .upload(&job, &upload)
        .await
        .map_err(|source| ArtifactsCommandError::Transfer {
            doing: prefix.clone(),
            source,
        })?;
    println!("{prefix} 201 Created");
    Ok(())
}

/// Writes the archive of `collected` into a temporary file (removed when dropped).
fn write_archive(
    wd: &Path,
    collected: &Collected,
    format: Format,
) -> Result<tempfile::NamedTempFile, ArtifactsCommandError> {
    let mut file = tempfile::NamedTempFile::new().map_err(ArtifactsCommandError::TempFile)?;
    let written = {
        let out = file.as_file_mut();
        match format {
            Format::Zip => archive::write_zip(wd, &collected.files, out),
            Format::Gzip => archive::write_gzip(wd, &collected.files, out),
            Format::Raw => archive::write_raw(wd, &collected.files, out),
        }
    };
    written.map_err(ArtifactsCommandError::WriteArchive)?;
    Ok(file)
}

/// Downloads job `args.id`'s archive and extracts it into `wd`.
pub async fn download(
    args: &DownloaderArgs,
    token: &str,
    wd: &Path,
) -> Result<(), ArtifactsCommandError> {
    if args.id <= 0 {
        return Err(ArtifactsCommandError::MissingId);
    }
    let job = JobCredentials {
        id: args.id,
        token: token.to_string(),
    };
    let file = tempfile::NamedTempFile::new().map_err(ArtifactsCommandError::TempFile)?;
    let client = ArtifactsClient::with_tls(&args.url, &args.tls.files())
        .map_err(ArtifactsCommandError::Client)?;
    client
        .download(&job, args.direct_download, file.path())
        .await
        .map_err(|source| ArtifactsCommandError::Transfer {
            doing: "Downloading artifacts from coordinator...".to_string(),
            source,
        })?;
    println!("Downloading artifacts from coordinator... ok");
    archive::extract_zip(file.path(), wd).map_err(ArtifactsCommandError::Extract)?;
    Ok(())
}

#[cfg(test)]
mod tests;
