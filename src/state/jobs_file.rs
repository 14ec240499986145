//! `jobs.json` and its one writer. The list lives in memory; a change bumps its version and,
//! unless a write is already under way, starts one on tokio's blocking threads (inline outside a
//! runtime). The writer serializes the list as it is *then*, writes it durably
//! ([`write_atomically`]: temp file, fsync, rename, directory fsync) and loops while newer
//! changes arrived meanwhile, so all the changes made during one write go to disk together in
//! the next (group commit): with many jobs starting and ending at once the file is written a
//! few times a second, not three times per job. Only one write runs at a time, so an older
//! snapshot never replaces a newer one. A caller that needs its change on disk waits for its
//! version ([`JobsFile::durable`]). A change that may wait ([`JobsFile::change_soon`]: a job
//! that ended) rides with the next write, or starts one of its own after [`SOON`]; so a job
//! costs one write, not two, when jobs come one after another.

use super::error::StateError;
use super::write::write_atomically;
use super::RunningJob;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// How long a change made with [`JobsFile::change_soon`] waits for another write to carry it
/// before a write starts for it alone.
pub(super) const SOON: Duration = Duration::from_secs(1);

/// The in-memory list and its writer's state.
pub(super) struct JobsFile {
    path: PathBuf,
    inner: Mutex<Inner>,
    /// What the writer has done, for the callers waiting on a version.
    status: watch::Sender<Status>,
    /// Writes done (for tests and for the record).
    writes: AtomicU64,
    /// Held by tests to stop the writer just before it writes.
    #[cfg(test)]
    pub(super) gate: Mutex<()>,
}

struct Inner {
    list: Vec<RunningJob>,
    /// Bumped by every change.
    version: u64,
    /// The newest version a write was started for (whatever its outcome).
    attempted: u64,
    /// A writer is running (it picks up every change made before it stops).
    writing: bool,
    /// A write is due [`SOON`] for a change made with [`JobsFile::change_soon`].
    write_due: bool,
}

/// The writer's progress.
#[derive(Clone, Default)]
struct Status {
    /// The newest version a write finished for (whatever its outcome).
    attempted: u64,
    /// The newest version durably written.
    written: u64,
    /// Why the last write failed (cleared by a success).
    error: Option<Arc<StateError>>,
}

impl JobsFile {
    /// The file at `path` holding `list` (as read at open: version 0 is what is on disk).
    pub(super) fn new(path: PathBuf, list: Vec<RunningJob>) -> JobsFile {
        JobsFile {
            path,
            inner: Mutex::new(Inner {
                list,
                version: 0,
                attempted: 0,
                writing: false,
                write_due: false,
            }),
            status: watch::Sender::new(Status::default()),
            writes: AtomicU64::new(0),
            #[cfg(test)]
            gate: Mutex::new(()),
        }
    }

    /// A copy of the list.
    pub(super) fn list(&self) -> Vec<RunningJob> {
        self.lock().list.clone()
    }

    /// Whether a writer is running now (tests wait for it to stop).
    #[cfg(test)]
    pub(super) fn writing(&self) -> bool {
        self.lock().writing
    }

    /// How many times the file was written.
    pub(super) fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    /// Changes the list in memory only: the change reaches the disk with the next change that
    /// is written (for what a crash may lose without harm).
    pub(super) fn change_lazily(&self, change: impl FnOnce(&mut Vec<RunningJob>)) {
        change(&mut self.lock().list);
    }

    /// Changes the list and makes sure a write carries it within [`SOON`]: the next write
    /// started for another change, or one of its own (for what a crash may lose without harm,
    /// but an orderly stop must not: see [`JobsFile::flush`]).
    pub(super) fn change_soon(self: &Arc<Self>, change: impl FnOnce(&mut Vec<RunningJob>)) {
        let schedule = {
            let mut inner = self.lock();
            change(&mut inner.list);
            inner.version += 1;
            let schedule = !inner.writing && !inner.write_due;
            inner.write_due |= schedule;
            schedule
        };
        if !schedule {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let file = self.clone();
                drop(runtime.spawn(async move {
                    tokio::time::sleep(SOON).await;
                    file.write_unwritten();
                }));
            }
            Err(_) => self.write_unwritten(),
        }
    }

    /// Writes the changes no write has carried yet, if any, and waits for that write.
    pub(super) async fn flush(self: &Arc<Self>) -> Result<(), StateError> {
        let version = self.lock().version;
        self.write_unwritten();
        self.durable(version).await
    }

    /// Starts a write if a change was made since the last one began and none runs now.
    fn write_unwritten(self: &Arc<Self>) {
        let start = {
            let mut inner = self.lock();
            inner.write_due = false;
            let start = !inner.writing && inner.version > inner.attempted;
            inner.writing |= start;
            start
        };
        if start {
            self.start_writer();
        }
    }

    /// Changes the list and makes sure a write will carry it; the version to wait for with
    /// [`JobsFile::durable`].
    pub(super) fn change(self: &Arc<Self>, change: impl FnOnce(&mut Vec<RunningJob>)) -> u64 {
        let version = {
            let mut inner = self.lock();
            change(&mut inner.list);
            inner.version += 1;
            inner.version
        };
        // A change waiting for [`SOON`] rides along; its timer then finds nothing to write.
        self.write_unwritten();
        version
    }

    /// Waits until `version` is on disk, or a write that carried it failed.
    pub(super) async fn durable(&self, version: u64) -> Result<(), StateError> {
        let mut rx = self.status.subscribe();
        let status = match rx
            .wait_for(|s| s.written >= version || s.attempted >= version)
            .await
        {
            Ok(status) => status.clone(),
            // Not expected: `self` holds the sender.
            Err(e) => return Err(StateError::Writer(e.to_string())),
        };
        if status.written >= version {
            return Ok(());
        }
        Err(status
            .error
            .as_deref()
            .map(duplicate)
            .unwrap_or_else(|| StateError::Writer("the write failed".into())))
    }

    /// Runs the writer on a blocking thread (inline outside a runtime). If the runtime is
    /// shutting down and drops the task unrun, the write happens where it is dropped.
    fn start_writer(self: &Arc<Self>) {
        let writer = Writer(Some(self.clone()));
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(move || writer.run())),
            Err(_) => writer.run(),
        }
    }

    /// Writes the newest list until no change is left unwritten, then stops (blocking). A write
    /// that follows another begins no sooner than [`spacing`] after it, gathering the changes
    /// made meanwhile.
    fn write_pending(&self) {
        let mut last: Option<(tokio::time::Instant, usize)> = None;
        loop {
            if let Some((began, jobs)) = last {
                let wait = spacing(jobs).saturating_sub(began.elapsed());
                if !wait.is_zero() {
                    std::thread::sleep(wait);
                }
            }
            let began = tokio::time::Instant::now();
            let (version, bytes) = {
                let mut inner = self.lock();
                if inner.version <= inner.attempted {
                    inner.writing = false;
                    return;
                }
                last = Some((began, inner.list.len()));
                inner.attempted = inner.version;
                // Compact: at 2,000 jobs running the list is serialized several times a
                // second, under the lock the job tasks change it with.
                let bytes = serde_json::to_vec(&inner.list).unwrap_or_else(|_| b"[]".to_vec());
                (inner.version, bytes)
            };
            #[cfg(test)]
            drop(self.gate.lock().unwrap_or_else(|p| p.into_inner()));
            let result = write_atomically(&self.path, &bytes);
            self.writes.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = &result {
                tracing::error!(error = %e, "cannot update the state directory's job list");
            }
            self.status.send_modify(|s| {
                s.attempted = version;
                match result {
                    Ok(()) => {
                        s.written = version;
                        s.error = None;
                    }
                    Err(e) => s.error = Some(Arc::new(e)),
                }
            });
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// How long after a write of a list of `jobs` jobs began the next may begin: 100 µs a job, at
/// most 250 ms. Each write serializes the whole list and fsyncs it, so at 2,000 jobs running
/// back-to-back writes were a tenth of the manager's CPU; spaced, the cost per second stays
/// flat whatever the count (a job's acknowledgement, which waits for its entry, may wait that
/// long), and a short list (the common case) is written at once.
pub(super) fn spacing(jobs: usize) -> std::time::Duration {
    let per_job = std::time::Duration::from_micros(100);
    (per_job * u32::try_from(jobs).unwrap_or(u32::MAX)).min(std::time::Duration::from_millis(250))
}

/// The writer as a value: run, or dropped unrun (a runtime shutting down), it writes.
struct Writer(Option<Arc<JobsFile>>);

impl Writer {
    fn run(mut self) {
        if let Some(file) = self.0.take() {
            file.write_pending();
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if let Some(file) = self.0.take() {
            file.write_pending();
        }
    }
}

/// A copy of a write error for each caller that waited on it.
fn duplicate(e: &StateError) -> StateError {
    match e {
        StateError::Io { path, source } => StateError::Io {
            path: path.clone(),
            source: std::io::Error::new(source.kind(), source.to_string()),
        },
        other => StateError::Writer(other.to_string()),
    }
}
