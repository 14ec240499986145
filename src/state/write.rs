//! Durable writes in the state directory: a file replaced atomically (temp file, fsync, rename,
//! directory fsync) from bytes or from a chunked source (a job's trace), and removals. Blocking:
//! the callers run it on tokio's blocking threads, never on a runtime worker thread.

use super::error::StateError;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Writes `bytes` to `path` through a temp file in the same directory, fsynced, then renamed,
/// then the directory fsynced (without it the rename itself may be lost at a power cut), so a
/// crash leaves either the old or the new content. Mode 0600.
pub(super) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    write_atomically_from(path, |file| file.write_all(bytes))
}

/// [`write_atomically`] with the content written by `fill` into the temp file.
pub(super) fn write_atomically_from(
    path: &Path,
    fill: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> Result<(), StateError> {
    let tmp = path.with_extension("tmp");
    let io = |source| StateError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    fill(&mut file).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    sync_dir(path)
}

/// Removes `path` (absent is fine), then fsyncs its directory.
pub(super) fn remove(path: &Path) -> Result<(), StateError> {
    match std::fs::remove_file(path) {
        Ok(()) => sync_dir(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(StateError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn sync_dir(path: &Path) -> Result<(), StateError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| StateError::Io {
            path: dir.to_path_buf(),
            source,
        })
}
