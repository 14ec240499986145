//! `flotilla helper cache-archiver` and `cache-extractor` (GitLab Runner's
//! `commands/helpers/cache_archiver.go` / `cache_extractor.go`), run in the job's helper container
//! from the project directory. Each reads one spec (`crate::cache::ArchiveSpec` or
//! `RestoreSpec`, JSON) from the environment variable the stage script exported, so signed URLs
//! never appear in argv; they are never printed either.
//!
//! The archiver zips the cache's `paths` (literal paths or globs, directories recursively) and,
//! with `untracked`, every file git does not track, then writes the archive to the cache volume
//! (left alone when unchanged) or PUTs it to a signed URL with the signed headers. The extractor
//! tries each source in order (key, `fallback_keys`, `CACHE_FALLBACK_KEY`): a missing archive or
//! a 404 means "no cache for this key", and the next source is tried. Cache problems never fail
//! the job: both commands exit 0 after a warning, as GitLab Runner's stage script does.
//!
//! Selecting, zipping and extracting files is `super::archive`'s (shared with artifacts).

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use super::archive::{self, ArchiveError, Selection};
use super::contract::SPEC_ENV;
use crate::cache::{ArchiveSpec, Location, RestoreSpec, Target};

/// Arguments of both commands.
#[derive(Debug, clap::Args)]
pub struct CacheArgs {
    /// The environment variable holding the spec (JSON).
    #[arg(long, default_value = SPEC_ENV)]
    pub spec_env: String,
    /// The project directory (paths are relative to it).
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
}

/// Why a cache operation failed (messages hold no URL).
#[derive(Debug, thiserror::Error)]
enum CacheError {
    #[error("{0}")]
    Io(String),
    #[error("no cache found")]
    NotFound,
    #[error("{0}")]
    Http(String),
    #[error(transparent)]
    Archive(#[from] ArchiveError),
}

fn io_err(what: &str, e: io::Error) -> CacheError {
    CacheError::Io(format!("{what}: {e}"))
}

/// Why a spec could not be read: never its contents, which hold signed URLs.
#[derive(Debug, thiserror::Error)]
enum SpecError {
    #[error("{0} is not set")]
    Unset(String),
    #[error("{name} is not a cache spec (line {line}, column {column})")]
    Malformed {
        name: String,
        line: usize,
        column: usize,
    },
}

fn read_spec<T: serde::de::DeserializeOwned>(name: &str) -> Result<T, SpecError> {
    let text = std::env::var(name).map_err(|_| SpecError::Unset(name.to_string()))?;
    serde_json::from_str(&text).map_err(|e| SpecError::Malformed {
        name: name.to_string(),
        line: e.line(),
        column: e.column(),
    })
}

fn warn(text: &str) {
    println!("\x1b[0;33mWARNING: {text}\x1b[0;m");
}

fn runtime() -> Result<tokio::runtime::Runtime, CacheError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| io_err("starting the runtime", e))
}

/// `cache-archiver`: builds and stores one cache archive.
pub fn archiver(args: CacheArgs) -> ExitCode {
    let spec: ArchiveSpec = match read_spec(&args.spec_env) {
        Ok(spec) => spec,
        Err(e) => {
            warn(&e.to_string());
            return ExitCode::FAILURE;
        }
    };
    println!("Creating cache {}...", spec.key);
    match archive(&spec, &args.dir) {
        Ok(message) => {
            println!("{message}");
            println!("\x1b[32;1mCreated cache\x1b[0;m");
        }
        Err(e) => {
            warn(&e.to_string());
            warn("Failed to create cache");
        }
    }
    ExitCode::SUCCESS
}

fn archive(spec: &ArchiveSpec, dir: &Path) -> Result<String, CacheError> {
    let selection = Selection {
        paths: spec.paths.clone(),
        exclude: Vec::new(),
        untracked: spec.untracked,
    };
    let collected = archive::collect(dir, &selection)?;
    for message in &collected.messages {
        println!("{message}");
    }
    let files = collected.files;
    if files.is_empty() {
        warn("No files to archive.");
    }
    let scratch_dir = match &spec.target {
        Target::File(path) => {
            let parent = Path::new(path).parent().unwrap_or(Path::new("/"));
            fs::create_dir_all(parent).map_err(|e| io_err(&parent.display().to_string(), e))?;
            parent.to_path_buf()
        }
        Target::Url { .. } => std::env::temp_dir(),
    };
    let mut scratch = tempfile::NamedTempFile::new_in(&scratch_dir)
        .map_err(|e| io_err("creating the archive", e))?;
    archive::write_zip(dir, &files, scratch.as_file_mut())?;
    let size = scratch
        .as_file()
        .metadata()
        .map_err(|e| io_err("archive", e))?
        .len();
    println!(
        "{} files and directories archived ({size} bytes)",
        files.len()
    );
    match &spec.target {
        Target::File(path) => {
            if same_content(scratch.path(), Path::new(path)) {
                return Ok("Archive is up to date!".into());
            }
            scratch.persist(path).map_err(|e| io_err(path, e.error))?;
            Ok("Cache archive saved to the cache volume".into())
        }
        Target::Url { url, headers } => {
            if spec.max_size > 0 && size > spec.max_size {
                return Err(CacheError::Io(format!(
                    "archive size {size} is over MaxUploadedArchiveSize {}: not uploaded",
                    spec.max_size
                )));
            }
            let rt = runtime()?;
            rt.block_on(upload(
                url,
                headers,
                scratch.path(),
                size,
                Duration::from_secs(spec.timeout_secs),
            ))?;
            Ok("Uploading cache.zip to the cache bucket: done".into())
        }
    }
}

/// Whether two files hold the same bytes.
fn same_content(a: &Path, b: &Path) -> bool {
    match (fs::read(a), fs::read(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

async fn upload(
    url: &str,
    headers: &[(String, String)],
    path: &Path,
    size: u64,
    timeout: Duration,
) -> Result<(), CacheError> {
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| io_err("archive", e))?;
    let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file));
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .map_err(|e| CacheError::Http(e.without_url().to_string()))?;
    let mut request = client
        .put(url)
        .header(reqwest::header::CONTENT_LENGTH, size)
        .body(body);
    for (k, v) in headers {
        request = request.header(k, v);
    }
    let response = request
        .send()
        .await
        .map_err(|e| CacheError::Http(format!("upload failed: {}", e.without_url())))?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let body = response.text().await.unwrap_or_default();
    Err(CacheError::Http(format!(
        "upload failed: HTTP {status}{}",
        gcs_code(&body)
            .map(|c| format!(" ({c})"))
            .unwrap_or_default()
    )))
}

/// The `<Code>` of a GCS XML error body.
fn gcs_code(body: &str) -> Option<&str> {
    let start = body.find("<Code>")? + "<Code>".len();
    let end = body[start..].find("</Code>")? + start;
    Some(&body[start..end])
}

/// `cache-extractor`: restores the first archive found among the sources.
pub fn extractor(args: CacheArgs) -> ExitCode {
    let spec: RestoreSpec = match read_spec(&args.spec_env) {
        Ok(spec) => spec,
        Err(e) => {
            warn(&e.to_string());
            return ExitCode::FAILURE;
        }
    };
    if spec.sources.is_empty() {
        warn(&format!("No cache source for {}", spec.key));
        return ExitCode::SUCCESS;
    }
    for (i, source) in spec.sources.iter().enumerate() {
        if i > 0 {
            println!("Trying fallback cache key {}...", source.key);
        }
        println!("Checking cache for {}...", source.key);
        match extract_one(&source.location, &args.dir, spec.timeout_secs) {
            Ok(count) => {
                println!("{count} files and directories extracted");
                println!("\x1b[32;1mSuccessfully extracted cache\x1b[0;m");
                return ExitCode::SUCCESS;
            }
            Err(CacheError::NotFound) => {
                warn(&format!("No cache found for {}", source.key));
                warn("Failed to extract cache");
            }
            Err(e) => {
                warn(&e.to_string());
                warn("Failed to extract cache");
            }
        }
    }
    ExitCode::SUCCESS
}

fn extract_one(location: &Location, dir: &Path, timeout_secs: u64) -> Result<usize, CacheError> {
    fs::create_dir_all(dir).map_err(|e| io_err(&dir.display().to_string(), e))?;
    match location {
        Location::File(path) => match fs::metadata(path) {
            Ok(_) => Ok(archive::extract_zip(Path::new(path), dir)?),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(CacheError::NotFound),
            Err(e) => Err(io_err(path, e)),
        },
        Location::Url(url) => {
            let mut scratch =
                tempfile::NamedTempFile::new().map_err(|e| io_err("scratch file", e))?;
            let rt = runtime()?;
            rt.block_on(download(
                url,
                scratch.as_file_mut(),
                Duration::from_secs(timeout_secs),
            ))?;
            Ok(archive::extract_zip(scratch.path(), dir)?)
        }
    }
}

async fn download(url: &str, out: &mut File, timeout: Duration) -> Result<(), CacheError> {
    use futures_util::StreamExt as _;
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .map_err(|e| CacheError::Http(e.without_url().to_string()))?;
    println!("Downloading cache.zip from the cache bucket");
    let response = client
        .get(url)
        .send()
        .await
        .map_err(|e| CacheError::Http(format!("download failed: {}", e.without_url())))?;
    let status = response.status();
    if status == reqwest::StatusCode::NOT_FOUND {
        return Err(CacheError::NotFound);
    }
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        return Err(CacheError::Http(format!(
            "download failed: HTTP {status}{}",
            gcs_code(&body)
                .map(|c| format!(" ({c})"))
                .unwrap_or_default()
        )));
    }
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|e| CacheError::Http(format!("download failed: {}", e.without_url())))?;
        out.write_all(&chunk)
            .map_err(|e| io_err("scratch file", e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(dir: &Path, rel: &str, content: &str) {
        let p = dir.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    }

    #[test]
    fn local_archive_is_left_alone_when_unchanged_and_missing_key_falls_back() {
        let project = tempfile::tempdir().unwrap();
        let cache = tempfile::tempdir().unwrap();
        touch(project.path(), "deps/lib.txt", "v1");
        let target = cache.path().join("runner/t/project/1/k/cache.zip");
        let spec = ArchiveSpec {
            key: "k".into(),
            when: crate::cache::key::When::OnSuccess,
            paths: vec!["deps".into()],
            untracked: false,
            target: Target::File(target.display().to_string()),
            timeout_secs: 60,
            max_size: 0,
        };
        assert_eq!(
            archive(&spec, project.path()).unwrap(),
            "Cache archive saved to the cache volume"
        );
        assert_eq!(
            archive(&spec, project.path()).unwrap(),
            "Archive is up to date!"
        );

        let restored = tempfile::tempdir().unwrap();
        let missing = Location::File(cache.path().join("nope/cache.zip").display().to_string());
        assert!(matches!(
            extract_one(&missing, restored.path(), 60),
            Err(CacheError::NotFound)
        ));
        let found = Location::File(target.display().to_string());
        extract_one(&found, restored.path(), 60).unwrap();
        assert_eq!(
            fs::read_to_string(restored.path().join("deps/lib.txt")).unwrap(),
            "v1"
        );
    }

    #[test]
    fn an_archive_over_max_uploaded_archive_size_is_not_uploaded() {
        let project = tempfile::tempdir().unwrap();
        touch(project.path(), "big/file", &"x".repeat(4096));
        let spec = ArchiveSpec {
            key: "k".into(),
            when: crate::cache::key::When::OnSuccess,
            paths: vec!["big".into()],
            untracked: false,
            // Nothing listens there: the size check must come before any request.
            target: Target::Url {
                url: "http://127.0.0.1:9/bucket/object".into(),
                headers: Vec::new(),
            },
            timeout_secs: 5,
            max_size: 100,
        };
        let e = archive(&spec, project.path()).unwrap_err().to_string();
        assert!(e.contains("over MaxUploadedArchiveSize 100"), "{e}");
    }

    #[test]
    fn gcs_error_codes_are_read_from_xml() {
        assert_eq!(
            gcs_code("<?xml version='1.0'?><Error><Code>NoSuchKey</Code></Error>"),
            Some("NoSuchKey")
        );
        assert_eq!(gcs_code("plain"), None);
    }
}
