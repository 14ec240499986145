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

use super::archive::{self, Collected, Selection};
use crate::coordinator::{ArtifactUpload, ArtifactsClient, JobCredentials};

pub use super::contract::TOKEN_ENV;

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
}

/// A boolean as Go's `strconv.ParseBool` reads it (how GitLab Runner reads feature flags).
fn parse_go_bool(value: &str) -> Result<bool, String> {
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        other => Err(format!("{other:?} is not a boolean (true or false)")),
    }
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
    pub fn parse(value: Option<&str>) -> Result<Format, String> {
        match value.unwrap_or("") {
            "" | "zip" => Ok(Format::Zip),
            "gzip" => Ok(Format::Gzip),
            "raw" => Ok(Format::Raw),
            other => Err(format!(
                "unsupported artifact format {other:?} (zip, gzip or raw)"
            )),
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

fn token_and_dir() -> Result<(String, PathBuf), String> {
    let token = std::env::var(TOKEN_ENV)
        .ok()
        .filter(|t| !t.is_empty())
        .ok_or_else(|| format!("missing job token: the stage script must set {TOKEN_ENV}"))?;
    let wd =
        std::env::current_dir().map_err(|e| format!("unable to get the working directory: {e}"))?;
    Ok((token, wd))
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}

fn exit(outcome: Result<(), String>) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            println!("FATAL: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Collects, archives and uploads from `wd`. No file selected is not an error (as upstream).
pub async fn upload(args: &UploaderArgs, token: &str, wd: &Path) -> Result<(), String> {
    if args.id <= 0 {
        return Err("missing build ID (--id)".into());
    }
    let format = Format::parse(args.artifact_format.as_deref())?;
    let selection = Selection {
        paths: args.paths.clone(),
        exclude: args.exclude.clone(),
        untracked: args.untracked,
    };
    let collected = archive::collect(wd, &selection).map_err(|e| e.to_string())?;
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
    let client = ArtifactsClient::new(&args.url).map_err(|e| e.to_string())?;
    client
        .upload(&job, &upload)
        .await
        .map_err(|e| format!("{prefix} {e}"))?;
    println!("{prefix} 201 Created");
    Ok(())
}

/// Writes the archive of `collected` into a temporary file (removed when dropped).
fn write_archive(
    wd: &Path,
    collected: &Collected,
    format: Format,
) -> Result<tempfile::NamedTempFile, String> {
    let mut file =
        tempfile::NamedTempFile::new().map_err(|e| format!("creating a temporary file: {e}"))?;
    let written = {
        let out = file.as_file_mut();
        match format {
            Format::Zip => archive::write_zip(wd, &collected.files, out),
            Format::Gzip => archive::write_gzip(wd, &collected.files, out),
            Format::Raw => archive::write_raw(wd, &collected.files, out),
        }
    };
    written.map_err(|e| format!("creating the artifacts archive: {e}"))?;
    Ok(file)
}

/// Downloads job `args.id`'s archive and extracts it into `wd`.
pub async fn download(args: &DownloaderArgs, token: &str, wd: &Path) -> Result<(), String> {
    if args.id <= 0 {
        return Err("missing build ID (--id)".into());
    }
    let job = JobCredentials {
        id: args.id,
        token: token.to_string(),
    };
    let file =
        tempfile::NamedTempFile::new().map_err(|e| format!("creating a temporary file: {e}"))?;
    let client = ArtifactsClient::new(&args.url).map_err(|e| e.to_string())?;
    client
        .download(&job, args.direct_download, file.path())
        .await
        .map_err(|e| format!("Downloading artifacts from coordinator... {e}"))?;
    println!("Downloading artifacts from coordinator... ok");
    archive::extract_zip(file.path(), wd).map_err(|e| format!("extracting the artifacts: {e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests;
