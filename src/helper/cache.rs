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

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{self, Read, Seek, Write};
use std::path::{Component, Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use crate::cache::{ArchiveSpec, Location, RestoreSpec, Target, SPEC_ENV};

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
    #[error("invalid archive: {0}")]
    Zip(String),
}

fn io_err(what: &str, e: io::Error) -> CacheError {
    CacheError::Io(format!("{what}: {e}"))
}

fn read_spec<T: serde::de::DeserializeOwned>(name: &str) -> Result<T, String> {
    let text = std::env::var(name).map_err(|_| format!("{name} is not set"))?;
    serde_json::from_str(&text).map_err(|e| format!("{name} is not a cache spec: {e}"))
}

fn warn(text: &str) {
    println!("\x1b[0;33mWARNING: {text}\x1b[0;m");
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the runtime: {e}"))
}

/// `cache-archiver`: builds and stores one cache archive.
pub fn archiver(args: CacheArgs) -> ExitCode {
    let spec: ArchiveSpec = match read_spec(&args.spec_env) {
        Ok(spec) => spec,
        Err(e) => {
            warn(&e);
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
    let files = collect(dir, &spec.paths, spec.untracked)?;
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
    write_zip(dir, &files, scratch.as_file_mut())?;
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
            let rt = runtime().map_err(CacheError::Io)?;
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
            warn(&e);
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
    match location {
        Location::File(path) => {
            let file = match File::open(path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(CacheError::NotFound),
                Err(e) => return Err(io_err(path, e)),
            };
            extract_zip(file, dir)
        }
        Location::Url(url) => {
            let mut scratch = tempfile::tempfile().map_err(|e| io_err("scratch file", e))?;
            let rt = runtime().map_err(CacheError::Io)?;
            rt.block_on(download(
                url,
                &mut scratch,
                Duration::from_secs(timeout_secs),
            ))?;
            scratch
                .seek(io::SeekFrom::Start(0))
                .map_err(|e| io_err("scratch file", e))?;
            extract_zip(scratch, dir)
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

/// Whether a relative path names something inside `.git` (never archived nor extracted).
fn in_git_dir(rel: &Path) -> bool {
    rel.components().next() == Some(Component::Normal(".git".as_ref()))
}

/// A path relative to the project that stays inside it (no `..`, not absolute).
fn inside(rel: &Path) -> bool {
    rel.components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

/// Every file, directory and symlink the archive holds, relative to `dir`, sorted.
fn collect(dir: &Path, paths: &[String], untracked: bool) -> Result<BTreeSet<PathBuf>, CacheError> {
    let mut out = BTreeSet::new();
    let mut globs = globset::GlobSetBuilder::new();
    let mut any_glob = false;
    for raw in paths {
        let cleaned = raw.trim_start_matches("./").trim_end_matches('/');
        if cleaned.is_empty() {
            continue;
        }
        let rel = Path::new(cleaned);
        if !inside(rel) {
            warn(&format!("{raw}: not inside the project directory, skipped"));
            continue;
        }
        if cleaned.contains(['*', '?', '[', '{']) {
            match globset::GlobBuilder::new(cleaned)
                .literal_separator(true)
                .build()
            {
                Ok(g) => {
                    globs.add(g);
                    any_glob = true;
                }
                Err(e) => warn(&format!("{raw}: invalid pattern: {e}")),
            }
            continue;
        }
        if fs::symlink_metadata(dir.join(rel)).is_ok() {
            add_tree(dir, rel, &mut out);
        } else {
            warn(&format!("{raw}: no matching files"));
        }
    }
    if any_glob {
        let set = globs
            .build()
            .map_err(|e| CacheError::Io(format!("patterns: {e}")))?;
        let mut all = BTreeSet::new();
        add_tree(dir, Path::new(""), &mut all);
        for rel in all {
            if set.is_match(&rel) {
                add_tree(dir, &rel, &mut out);
            }
        }
    }
    if untracked {
        let listed = std::process::Command::new("git")
            .args(["ls-files", "-o", "-z"])
            .current_dir(dir)
            .output();
        match listed {
            Ok(o) if o.status.success() => {
                for name in o.stdout.split(|b| *b == 0).filter(|n| !n.is_empty()) {
                    let rel = PathBuf::from(String::from_utf8_lossy(name).into_owned());
                    if inside(&rel) {
                        add_tree(dir, &rel, &mut out);
                    }
                }
            }
            Ok(o) => warn(&format!(
                "untracked files: git ls-files failed: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => warn(&format!("untracked files: cannot run git: {e}")),
        }
    }
    // Parent directories of everything listed, so modes survive and empty dirs are kept.
    let parents: Vec<PathBuf> = out
        .iter()
        .flat_map(|p| {
            p.ancestors()
                .skip(1)
                .map(Path::to_path_buf)
                .collect::<Vec<_>>()
        })
        .filter(|p| !p.as_os_str().is_empty())
        .collect();
    out.extend(parents);
    out.retain(|p| !in_git_dir(p));
    Ok(out)
}

/// Adds `rel` and, for a directory (not followed through symlinks), everything below it.
fn add_tree(dir: &Path, rel: &Path, out: &mut BTreeSet<PathBuf>) {
    if in_git_dir(rel) {
        return;
    }
    let full = dir.join(rel);
    let Ok(meta) = fs::symlink_metadata(&full) else {
        return;
    };
    if !rel.as_os_str().is_empty() {
        out.insert(rel.to_path_buf());
    }
    if meta.is_dir() {
        let Ok(entries) = fs::read_dir(&full) else {
            return;
        };
        for entry in entries.flatten() {
            add_tree(dir, &rel.join(entry.file_name()), out);
        }
    }
}

fn zip_time(meta: &fs::Metadata) -> zip::DateTime {
    use chrono::{Datelike, Timelike};
    let modified: chrono::DateTime<chrono::Utc> = meta
        .modified()
        .map(Into::into)
        .unwrap_or_else(|_| chrono::Utc::now());
    let n = modified.naive_utc();
    zip::DateTime::from_date_and_time(
        u16::try_from(n.year()).unwrap_or(1980),
        u8::try_from(n.month()).unwrap_or(1),
        u8::try_from(n.day()).unwrap_or(1),
        u8::try_from(n.hour()).unwrap_or(0),
        u8::try_from(n.minute()).unwrap_or(0),
        u8::try_from(n.second()).unwrap_or(0),
    )
    .unwrap_or_default()
}

/// Writes `files` (relative to `dir`, sorted) into a zip archive.
fn write_zip(dir: &Path, files: &BTreeSet<PathBuf>, out: &mut File) -> Result<(), CacheError> {
    use std::os::unix::fs::PermissionsExt as _;
    let zerr = |e: zip::result::ZipError| CacheError::Zip(e.to_string());
    let mut zip = zip::ZipWriter::new(out);
    for rel in files {
        let full = dir.join(rel);
        let Ok(meta) = fs::symlink_metadata(&full) else {
            continue;
        };
        let name = rel.to_string_lossy().into_owned();
        let options = zip::write::SimpleFileOptions::default()
            .last_modified_time(zip_time(&meta))
            .unix_permissions(meta.permissions().mode() & 0o7777)
            .large_file(meta.len() >= u64::from(u32::MAX));
        if meta.file_type().is_symlink() {
            let target = fs::read_link(&full).map_err(|e| io_err(&name, e))?;
            zip.add_symlink(name, target.to_string_lossy(), options)
                .map_err(zerr)?;
        } else if meta.is_dir() {
            zip.add_directory(format!("{name}/"), options)
                .map_err(zerr)?;
        } else {
            let mut f = File::open(&full).map_err(|e| io_err(&name, e))?;
            zip.start_file(name.clone(), options).map_err(zerr)?;
            io::copy(&mut f, &mut zip).map_err(|e| io_err(&name, e))?;
        }
    }
    zip.finish().map_err(zerr)?;
    Ok(())
}

/// Extracts an archive into `dir`; the number of entries. Entries outside `dir` or in `.git`
/// are skipped.
fn extract_zip<R: Read + Seek>(reader: R, dir: &Path) -> Result<usize, CacheError> {
    use std::os::unix::fs::PermissionsExt as _;
    let zerr = |e: zip::result::ZipError| CacheError::Zip(e.to_string());
    let mut archive = zip::ZipArchive::new(reader).map_err(zerr)?;
    let mut count = 0;
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).map_err(zerr)?;
        let Some(rel) = entry.enclosed_name() else {
            let name = entry.name().map(|n| n.into_owned()).unwrap_or_default();
            warn(&format!("{name}: outside the project directory, skipped"));
            continue;
        };
        if in_git_dir(&rel) {
            continue;
        }
        let target = dir.join(&rel);
        let shown = rel.display().to_string();
        if entry.is_dir() {
            fs::create_dir_all(&target).map_err(|e| io_err(&shown, e))?;
        } else {
            if let Some(parent) = target.parent() {
                fs::create_dir_all(parent).map_err(|e| io_err(&shown, e))?;
            }
            if fs::symlink_metadata(&target).is_ok_and(|m| !m.is_dir()) {
                fs::remove_file(&target).map_err(|e| io_err(&shown, e))?;
            }
            if entry.is_symlink() {
                let mut link = String::new();
                entry
                    .read_to_string(&mut link)
                    .map_err(|e| io_err(&shown, e))?;
                std::os::unix::fs::symlink(&link, &target).map_err(|e| io_err(&shown, e))?;
                count += 1;
                continue;
            }
            let mut out = File::create(&target).map_err(|e| io_err(&shown, e))?;
            io::copy(&mut entry, &mut out).map_err(|e| io_err(&shown, e))?;
        }
        if let Some(mode) = entry.unix_mode() {
            let _ = fs::set_permissions(&target, fs::Permissions::from_mode(mode & 0o7777));
        }
        count += 1;
    }
    Ok(count)
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
    fn collects_paths_globs_and_skips_git_and_escapes() {
        let d = tempfile::tempdir().unwrap();
        touch(d.path(), "vendor/a/x.txt", "x");
        touch(d.path(), "vendor/b.txt", "b");
        touch(d.path(), "build/out.o", "o");
        touch(d.path(), "build/out.txt", "t");
        touch(d.path(), ".git/config", "c");
        let paths = vec![
            "vendor/".to_string(),
            "build/*.o".to_string(),
            "../outside".to_string(),
            ".git".to_string(),
            "missing".to_string(),
        ];
        let got: Vec<String> = collect(d.path(), &paths, false)
            .unwrap()
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        assert_eq!(
            got,
            vec![
                "build",
                "build/out.o",
                "vendor",
                "vendor/a",
                "vendor/a/x.txt",
                "vendor/b.txt"
            ]
        );
    }

    #[test]
    fn zip_round_trip_keeps_modes_symlinks_and_contents() {
        use std::os::unix::fs::PermissionsExt as _;
        let src = tempfile::tempdir().unwrap();
        touch(src.path(), "vendor/run.sh", "#!/bin/sh\n");
        fs::set_permissions(
            src.path().join("vendor/run.sh"),
            fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        std::os::unix::fs::symlink("run.sh", src.path().join("vendor/link")).unwrap();
        let files = collect(src.path(), &["vendor".into()], false).unwrap();
        let mut archive = tempfile::tempfile().unwrap();
        write_zip(src.path(), &files, &mut archive).unwrap();
        archive.seek(io::SeekFrom::Start(0)).unwrap();
        let dst = tempfile::tempdir().unwrap();
        touch(dst.path(), "vendor/run.sh", "old");
        let n = extract_zip(archive, dst.path()).unwrap();
        assert_eq!(n, 3);
        let run = dst.path().join("vendor/run.sh");
        assert_eq!(fs::read_to_string(&run).unwrap(), "#!/bin/sh\n");
        assert_eq!(
            fs::metadata(&run).unwrap().permissions().mode() & 0o777,
            0o755
        );
        assert_eq!(
            fs::read_link(dst.path().join("vendor/link")).unwrap(),
            PathBuf::from("run.sh")
        );
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
    fn gcs_error_codes_are_read_from_xml() {
        assert_eq!(
            gcs_code("<?xml version='1.0'?><Error><Code>NoSuchKey</Code></Error>"),
            Some("NoSuchKey")
        );
        assert_eq!(gcs_code("plain"), None);
    }
}
