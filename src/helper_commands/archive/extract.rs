//! Extraction of a zip into a directory (GitLab Runner's zip extractor), refusing any entry that
//! would land outside it: absolute paths, `..`, and paths through a symbolic link an earlier
//! entry made. Directories, files with their permissions, and symbolic links are restored.

use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use super::{io_error, ArchiveError};

/// The most bytes one extraction writes (Flotilla's own cap against zip bombs; GitLab Runner has
/// none): 16 GiB, far above GitLab's default maximum artifacts size.
pub const MAX_EXTRACTED_BYTES: u64 = 16 << 30;

/// An entry's path under `dest`, refusing absolute paths and `..` components.
fn entry_path(dest: &Path, name: &str) -> Result<PathBuf, ArchiveError> {
    let relative = Path::new(name);
    let mut clean = PathBuf::new();
    for component in relative.components() {
        match component {
            Component::Normal(part) => clean.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(ArchiveError::Escapes(name.to_string()))
            }
        }
    }
    if clean.as_os_str().is_empty() {
        return Err(ArchiveError::Escapes(name.to_string()));
    }
    Ok(dest.join(clean))
}

/// Makes directory `dir` after checking that its deepest existing ancestor, with symbolic
/// links resolved, is inside `dest_real`: an earlier symlink entry must not redirect later
/// entries outside, and no directory is made through such a link.
fn safe_dir(dest_real: &Path, dir: &Path, name: &str) -> Result<(), ArchiveError> {
    let existing = dir
        .ancestors()
        .find(|a| fs::symlink_metadata(a).is_ok())
        .unwrap_or(dest_real);
    let real = fs::canonicalize(existing).map_err(io_error(existing))?;
    if !real.starts_with(dest_real) {
        return Err(ArchiveError::Escapes(name.to_string()));
    }
    fs::create_dir_all(dir).map_err(io_error(dir))
}

/// Makes the parent directory of `path` safely and removes a symbolic link at `path` (a file
/// is never written through an existing link).
fn prepare_parent(dest_real: &Path, path: &Path, name: &str) -> Result<(), ArchiveError> {
    safe_dir(dest_real, path.parent().unwrap_or(dest_real), name)?;
    if fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        fs::remove_file(path).map_err(io_error(path))?;
    }
    Ok(())
}

/// Extracts the zip at `archive` into `dest` (which must exist): directories, files with their
/// permissions, symbolic links. An entry with an absolute path or `..`, or one that would land
/// outside `dest` through a symbolic link, fails the extraction. The number of entries.
pub fn extract_zip(archive: &Path, dest: &Path) -> Result<usize, ArchiveError> {
    extract_zip_capped(archive, dest, MAX_EXTRACTED_BYTES)
}

/// [`extract_zip`] writing at most `limit` bytes of file content in all (the sizes the archive
/// declares are not trusted: the bytes written are counted).
pub fn extract_zip_capped(archive: &Path, dest: &Path, limit: u64) -> Result<usize, ArchiveError> {
    let mut written = 0u64;
    let zip_error = |path: String| move |source| ArchiveError::Zip { path, source };
    let file = fs::File::open(archive).map_err(io_error(archive))?;
    let mut zip = zip::ZipArchive::new(io::BufReader::new(file))
        .map_err(zip_error(archive.display().to_string()))?;
    let dest_real = fs::canonicalize(dest).map_err(io_error(dest))?;
    for index in 0..zip.len() {
        let mut entry = zip
            .by_index(index)
            .map_err(zip_error(format!("{} entry {index}", archive.display())))?;
        let name = entry
            .name()
            .map_err(zip_error(format!("{} entry {index}", archive.display())))?
            .into_owned();
        let path = entry_path(&dest_real, &name)?;
        if entry.is_dir() {
            safe_dir(&dest_real, &path, &name)?;
            continue;
        }
        prepare_parent(&dest_real, &path, &name)?;
        if entry.is_symlink() {
            let mut target = String::new();
            io::Read::read_to_string(&mut entry, &mut target).map_err(io_error(&path))?;
            if fs::symlink_metadata(&path).is_ok() {
                remove_any(&path)?;
            }
            symlink(&target, &path)?;
            continue;
        }
        let mut out = fs::File::create(&path).map_err(io_error(&path))?;
        let room = limit.saturating_sub(written);
        let copied = io::copy(
            &mut io::Read::take(&mut entry, room.saturating_add(1)),
            &mut out,
        )
        .map_err(io_error(&path))?;
        written = written.saturating_add(copied);
        if written > limit {
            drop(out);
            let _ = fs::remove_file(&path);
            return Err(ArchiveError::TooLarge { limit });
        }
        set_mode(&path, entry.unix_mode())?;
    }
    Ok(zip.len())
}

fn remove_any(path: &Path) -> Result<(), ArchiveError> {
    let meta = fs::symlink_metadata(path).map_err(io_error(path))?;
    if meta.is_dir() {
        fs::remove_dir_all(path).map_err(io_error(path))
    } else {
        fs::remove_file(path).map_err(io_error(path))
    }
}

#[cfg(unix)]
fn symlink(target: &str, path: &Path) -> Result<(), ArchiveError> {
    std::os::unix::fs::symlink(target, path).map_err(io_error(path))
}

#[cfg(not(unix))]
fn symlink(_target: &str, path: &Path) -> Result<(), ArchiveError> {
    Err(ArchiveError::Unsupported(format!(
        "{}: symbolic links are not supported here",
        path.display()
    )))
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: Option<u32>) -> Result<(), ArchiveError> {
    use std::os::unix::fs::PermissionsExt as _;
    // Permission bits only: setuid, setgid and sticky never come from an archive.
    if let Some(mode) = mode.map(|m| m & 0o777).filter(|m| *m != 0) {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io_error(path))?;
    }
    Ok(())
}

#[cfg(not(unix))]
fn set_mode(_path: &Path, _mode: Option<u32>) -> Result<(), ArchiveError> {
    Ok(())
}
