//! Files in and out of archives, as GitLab Runner's helper does it (`file_archiver.go`, the
//! zip / gzip / raw archivers and the zip extractor): which files `paths` / `exclude` /
//! `untracked` select in the project directory, writing them as a zip, a multi-member gzip or a
//! raw file, and extracting a zip into the project directory without letting an entry land
//! outside it. Synchronous file-system code, run by the helper commands; no network.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::io::{self, Write};
use std::path::{Component, Path, PathBuf};

use globset::{GlobBuilder, GlobMatcher};

/// Characters that make a path a glob pattern (doublestar's).
const GLOB_CHARS: &[char] = &['*', '?', '[', '{'];

/// What went wrong collecting, archiving or extracting.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The zip library failed.
    #[error("{path}: {source}")]
    Zip {
        /// The archive or entry.
        path: String,
        /// The underlying error.
        #[source]
        source: zip::result::ZipError,
    },
    /// The format cannot hold what was selected.
    #[error("{0}")]
    Unsupported(String),
    /// An archive entry would be written outside the destination.
    #[error("refusing archive entry {0:?}: it would be written outside the project directory")]
    Escapes(String),
    /// The archive expands to more than Flotilla extracts.
    #[error("refusing to extract more than {limit} bytes (Flotilla's limit)")]
    TooLarge {
        /// The cap, in bytes.
        limit: u64,
    },
}

fn io_error(path: impl AsRef<Path>) -> impl FnOnce(io::Error) -> ArchiveError {
    let path = path.as_ref().display().to_string();
    move |source| ArchiveError::Io { path, source }
}

/// The kind of a selected path (from `lstat`: symbolic links are not followed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A directory.
    Dir,
    /// A regular file.
    File,
    /// A symbolic link to this target.
    Symlink(PathBuf),
}

/// What to collect, as the uploader's flags say (variables already expanded).
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// `--path`: files, directories (recursively) or glob patterns (`*`, `**`, `?`, `[…]`, `{a,b}`).
    pub paths: Vec<String>,
    /// `--exclude`: glob patterns matched against each collected path.
    pub exclude: Vec<String>,
    /// `--untracked`: add the files `git ls-files --others` lists.
    pub untracked: bool,
}

/// The collected files: relative slash paths (sorted) and what they are, plus the report lines
/// GitLab Runner prints (`found N matching…`, warnings, `excluded N files`).
#[derive(Debug, Default)]
pub struct Collected {
    /// Relative path → kind, sorted as GitLab Runner sorts them.
    pub files: BTreeMap<String, Entry>,
    /// What to print, in order.
    pub messages: Vec<String>,
}

/// Lexically normalizes `path` (`.` and `..` resolved without touching the file system), as
/// Go's `filepath.Clean`. `None` when `..` climbs above the start of a relative path.
fn normalize(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            other => out.push(other),
        }
    }
    Some(out)
}

/// `path` relative to `wd` (both as given; `path` may be absolute), or `None` when it lies
/// outside `wd`.
fn relative_in(wd: &Path, path: &str) -> Option<PathBuf> {
    let joined = normalize(&wd.join(path))?;
    let rel = joined.strip_prefix(normalize(wd)?).ok()?;
    Some(rel.to_path_buf())
}

/// A doublestar-like matcher: `*` stays within one path segment, `**` spans segments.
fn matcher(pattern: &str) -> Result<GlobMatcher, globset::Error> {
    Ok(GlobBuilder::new(pattern)
        .literal_separator(true)
        .backslash_escape(true)
        .build()?
        .compile_matcher())
}

/// Splits a pattern into its leading directories without glob characters and the rest
/// (doublestar's `SplitPattern`): `out/**/*.txt` → (`out`, `**/*.txt`).
fn split_pattern(pattern: &str) -> (&str, &str) {
    let Some(first_glob) = pattern.find(GLOB_CHARS) else {
        return (pattern, "");
    };
    match pattern[..first_glob].rfind('/') {
        Some(slash) => (&pattern[..slash], &pattern[slash + 1..]),
        None => (".", pattern),
    }
}

fn to_slash(path: &Path) -> String {
    path.to_string_lossy().replace('\\', "/")
}

/// Collects what `selection` names in `wd` (the project directory).
pub fn collect(wd: &Path, selection: &Selection) -> Result<Collected, ArchiveError> {
    let mut excludes = Vec::new();
    for pattern in &selection.exclude {
        let rel = match relative_in(wd, pattern) {
            Some(rel) => to_slash(&rel),
            None => pattern.clone(),
        };
        match matcher(&rel) {
            Ok(m) => excludes.push((pattern.clone(), m)),
            Err(e) => {
                return Err(ArchiveError::Unsupported(format!(
                    "invalid exclude pattern {pattern:?}: {e}"
                )))
            }
        }
    }
    let mut out = Collected::default();
    let mut excluded: HashMap<String, u64> = HashMap::new();
    for path in &selection.paths {
        collect_path(wd, path, &excludes, &mut out, &mut excluded)?;
    }
    if selection.untracked {
        collect_untracked(wd, &excludes, &mut out, &mut excluded);
    }
    let mut rules: Vec<_> = excluded.into_iter().collect();
    rules.sort();
    for (rule, count) in rules {
        out.messages.push(format!("{rule}: excluded {count} files"));
    }
    Ok(out)
}

/// Adds `rel` (relative to `wd`) unless an exclude pattern matches it; whether it was added.
fn consider(
    wd: &Path,
    rel: &str,
    excludes: &[(String, GlobMatcher)],
    out: &mut Collected,
    excluded: &mut HashMap<String, u64>,
) -> Result<bool, ArchiveError> {
    if let Some((rule, _)) = excludes.iter().find(|(_, m)| m.is_match(rel)) {
        *excluded.entry(rule.clone()).or_default() += 1;
        return Ok(false);
    }
    let full = wd.join(rel);
    let meta = match fs::symlink_metadata(&full) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io_error(&full)(e)),
    };
    // The entry itself may be a link (archived as a link, never followed), but the directories
    // leading to it must not leave `wd` through one (`ln -s /cache x`, then `paths: [x/…]`).
    if !parent_inside(wd, &full) {
        out.messages.push(format!(
            "WARNING: {rel}: leaves the project directory through a symbolic link; skipped"
        ));
        return Ok(false);
    }
    let entry = if meta.file_type().is_symlink() {
        Entry::Symlink(fs::read_link(&full).map_err(io_error(&full))?)
    } else if meta.is_dir() {
        Entry::Dir
    } else {
        Entry::File
    };
    out.files.insert(rel.to_string(), entry);
    Ok(true)
}

/// Whether the directory holding `full`, with symbolic links resolved, is inside `wd` (also
/// resolved). Unresolvable paths count as outside.
fn parent_inside(wd: &Path, full: &Path) -> bool {
    let (Ok(wd_real), Some(parent)) = (fs::canonicalize(wd), full.parent()) else {
        return false;
    };
    fs::canonicalize(parent).is_ok_and(|p| p.starts_with(&wd_real))
}

fn collect_path(
    wd: &Path,
    path: &str,
    excludes: &[(String, GlobMatcher)],
    out: &mut Collected,
    excluded: &mut HashMap<String, u64>,
) -> Result<(), ArchiveError> {
    if path.is_empty() {
        out.messages
            .push("WARNING: No matching files. Path is empty.".into());
        return Ok(());
    }
    let (base, pattern) = split_pattern(path);
    let Some(base_rel) = relative_in(wd, base) else {
        out.messages.push(format!(
            "WARNING: processPath: artifact path is not a subpath of project directory: {path}"
        ));
        return Ok(());
    };
    let glob = if pattern.is_empty() {
        None
    } else {
        let full = to_slash(&base_rel.join(pattern));
        match matcher(full.trim_start_matches("./")) {
            Ok(m) => Some(m),
            Err(e) => {
                out.messages.push(format!("WARNING: {path}: {e}"));
                return Ok(());
            }
        }
    };
    let root = wd.join(&base_rel);
    let mut found = 0u64;
    // Paths under a directory that matched are taken whole (GitLab Runner walks each match).
    let mut matched_dirs: BTreeSet<PathBuf> = BTreeSet::new();
    for item in walkdir::WalkDir::new(&root)
        .follow_links(false)
        .follow_root_links(false)
        .sort_by_file_name()
    {
        let item = match item {
            Ok(item) => item,
            Err(e) if e.io_error().map(io::Error::kind) == Some(io::ErrorKind::NotFound) => break,
            Err(e) => {
                out.messages.push(format!("WARNING: {path}: {e}"));
                continue;
            }
        };
        let Ok(rel) = item.path().strip_prefix(wd) else {
            continue;
        };
        let rel_text = to_slash(rel);
        let rel_text = if rel_text.is_empty() {
            ".".to_string()
        } else {
            rel_text
        };
        let selected = match &glob {
            None => true,
            Some(glob) => {
                glob.is_match(&rel_text) || rel.ancestors().any(|a| matched_dirs.contains(a))
            }
        };
        if !selected {
            continue;
        }
        if item.file_type().is_dir() {
            matched_dirs.insert(rel.to_path_buf());
        }
        if consider(wd, &rel_text, excludes, out, excluded)? {
            found += 1;
        }
    }
    if found == 0 {
        out.messages.push(format!(
            "WARNING: {path}: no matching files. Ensure that the artifact path is relative to \
             the working directory ({})",
            wd.display()
        ));
    } else {
        out.messages.push(format!(
            "{path}: found {found} matching artifact files and directories"
        ));
    }
    Ok(())
}

/// Adds what `git ls-files -o -z` lists in `wd` (untracked files, ignored ones included).
fn collect_untracked(
    wd: &Path,
    excludes: &[(String, GlobMatcher)],
    out: &mut Collected,
    excluded: &mut HashMap<String, u64>,
) {
    let output = std::process::Command::new("git")
        .args(["ls-files", "-o", "-z"])
        .current_dir(wd)
        .output();
    let output = match output {
        Ok(o) if o.status.success() => o.stdout,
        Ok(o) => {
            let err = String::from_utf8_lossy(&o.stderr).trim().to_string();
            out.messages.push(format!("WARNING: untracked: {err}"));
            return;
        }
        Err(e) => {
            out.messages
                .push(format!("WARNING: untracked: cannot run git: {e}"));
            return;
        }
    };
    let mut found = 0u64;
    for name in output.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let rel = String::from_utf8_lossy(name).into_owned();
        match consider(wd, &rel, excludes, out, excluded) {
            Ok(true) => found += 1,
            Ok(false) => {}
            Err(e) => out.messages.push(format!("WARNING: {e}")),
        }
    }
    if found == 0 {
        out.messages.push("WARNING: untracked: no files".into());
    } else {
        out.messages.push(format!("untracked: found {found} files"));
    }
}

/// The zip timestamp of a file's modification time (zip stores local-less DOS time; UTC here).
fn zip_time(meta: &fs::Metadata) -> zip::DateTime {
    let modified = meta
        .modified()
        .ok()
        .map(chrono::DateTime::<chrono::Utc>::from)
        .map(|t| t.naive_utc());
    modified
        .and_then(|t| zip::DateTime::try_from(t).ok())
        .unwrap_or_default()
}

#[cfg(unix)]
fn mode_of(meta: &fs::Metadata) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    meta.permissions().mode() & 0o7777
}

#[cfg(not(unix))]
fn mode_of(_meta: &fs::Metadata) -> u32 {
    0o644
}

/// Writes `files` (relative to `wd`) as a zip archive into `out`.
pub fn write_zip<W: Write + io::Seek>(
    wd: &Path,
    files: &BTreeMap<String, Entry>,
    out: W,
) -> Result<(), ArchiveError> {
    use zip::write::SimpleFileOptions;
    let zip_error = |path: &str| {
        let path = path.to_string();
        move |source| ArchiveError::Zip { path, source }
    };
    let mut zip = zip::ZipWriter::new(out);
    for (name, entry) in files {
        if name == "." {
            continue;
        }
        let full = wd.join(name);
        let meta = fs::symlink_metadata(&full).map_err(io_error(&full))?;
        let options = SimpleFileOptions::default()
            .unix_permissions(mode_of(&meta))
            .last_modified_time(zip_time(&meta));
        match entry {
            Entry::Dir => zip
                .add_directory(format!("{name}/"), options)
                .map_err(zip_error(name))?,
            Entry::Symlink(target) => zip
                .add_symlink(name.as_str(), to_slash(target), options)
                .map_err(zip_error(name))?,
            Entry::File => {
                let options = options
                    .compression_method(zip::CompressionMethod::Deflated)
                    .large_file(meta.len() >= u64::from(u32::MAX));
                zip.start_file(name.as_str(), options)
                    .map_err(zip_error(name))?;
                let mut file = fs::File::open(&full).map_err(io_error(&full))?;
                io::copy(&mut file, &mut zip).map_err(io_error(&full))?;
            }
        }
    }
    zip.finish().map_err(zip_error("archive"))?;
    Ok(())
}

/// Writes each file as its own gzip member (name and modification time in the header), as
/// GitLab Runner's gzip archiver does for reports. Only regular files can be sent so.
pub fn write_gzip<W: Write>(
    wd: &Path,
    files: &BTreeMap<String, Entry>,
    mut out: W,
) -> Result<(), ArchiveError> {
    for (name, entry) in files {
        if *entry != Entry::File {
            return Err(ArchiveError::Unsupported(format!(
                "{name}: the --artifact-format=gzip is only supported for regular files"
            )));
        }
        let full = wd.join(name);
        let meta = fs::metadata(&full).map_err(io_error(&full))?;
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| u32::try_from(d.as_secs()).unwrap_or(0));
        let base = Path::new(name)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut gz = flate2::GzBuilder::new()
            .filename(base)
            .comment(name.as_str())
            .mtime(mtime)
            .write(&mut out, flate2::Compression::default());
        let mut file = fs::File::open(&full).map_err(io_error(&full))?;
        io::copy(&mut file, &mut gz).map_err(io_error(&full))?;
        gz.finish().map_err(io_error(&full))?;
    }
    Ok(())
}

/// Copies the one selected file as it is (`--artifact-format=raw`).
pub fn write_raw<W: Write>(
    wd: &Path,
    files: &BTreeMap<String, Entry>,
    mut out: W,
) -> Result<(), ArchiveError> {
    let mut names = files.iter();
    let (name, entry) = match (names.next(), names.next()) {
        (Some(one), None) => one,
        (None, _) => return Err(ArchiveError::Unsupported("no file to send as raw".into())),
        (Some(_), Some(_)) => {
            return Err(ArchiveError::Unsupported(format!(
                "only one file can be sent as raw, but {} were selected",
                files.len()
            )))
        }
    };
    if *entry != Entry::File {
        return Err(ArchiveError::Unsupported(format!(
            "{name}: only a regular file can be sent as raw"
        )));
    }
    let full = wd.join(name);
    let mut file = fs::File::open(&full).map_err(io_error(&full))?;
    io::copy(&mut file, &mut out).map_err(io_error(&full))?;
    Ok(())
}

mod extract;

pub use extract::extract_zip;

#[cfg(test)]
mod tests;
