//! The little that is persisted in `state_dir`: `manager-id` (made once; sent to GitLab as
//! `system_id` and used as the VMs' owner label) and `jobs.json` (the jobs this process has
//! received and not yet finished, so the next start can fail them at once after a crash).
//! A job task holds its entry as a [`JobRecord`] guard, whose drop removes it.
//! Both files are written atomically (temp file + rename) with mode 0600. Nothing else is kept:
//! the coordinator is the truth about jobs and the cloud about VMs.

mod error;
mod jobs_file;
#[cfg(test)]
mod tests;
mod write;

pub use error::StateError;

use crate::job::FinalState;
use crate::trace::JobTrace;
use jobs_file::JobsFile;
use serde::{Deserialize, Serialize};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use write::{remove, write_atomically, write_atomically_from};

/// One job received and not yet finished (an entry of `jobs.json`).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunningJob {
    /// The job id.
    pub id: i64,
    /// The coordinator URL of the runner that took it.
    pub url: String,
    /// The job token (needed to fail the job after a crash).
    pub token: String,
    /// Whether the job was acknowledged (`PUT state=running` answered).
    #[serde(default)]
    pub acknowledged: bool,
    /// The final state the job ended with but could not send, kept by
    /// [`JobRecord::keep_pending`]; `None` while the job runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_final: Option<FinalState>,
}

impl std::fmt::Debug for RunningJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningJob")
            .field("id", &self.id)
            .field("url", &self.url)
            .field("acknowledged", &self.acknowledged)
            .field("pending_final", &self.pending_final)
            .finish_non_exhaustive()
    }
}

/// The opened state directory. Created once at start; shared by the job tasks.
///
/// Every write of `jobs.json` or of a kept trace runs on tokio's blocking threads
/// (`spawn_blocking`), never on a runtime worker: an fsync may take long on a busy disk.
/// `jobs.json` has one writer that coalesces the changes made while it writes (`jobs_file.rs`).
#[derive(Clone)]
pub struct StateDir {
    dir: PathBuf,
    /// The in-memory copy of `jobs.json` and its writer.
    jobs: Arc<JobsFile>,
    /// `state_dir/lock`, held (flock, exclusive) for as long as any clone lives, when opened by
    /// [`StateDir::open_exclusive`]; the kernel releases it when the process dies.
    _lock: Option<Arc<std::fs::File>>,
}

impl StateDir {
    /// Opens (creating with mode 0700 if needed) the state directory, and reads `jobs.json`.
    pub fn open(dir: &Path) -> Result<StateDir, StateError> {
        let io = |source| StateError::Io {
            path: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
        let path = dir.join("jobs.json");
        let jobs = read_jobs(&path)?;
        Ok(StateDir {
            dir: dir.to_path_buf(),
            jobs: Arc::new(JobsFile::new(path, jobs)),
            _lock: None,
        })
    }

    /// [`StateDir::open`] for `flotilla run`: first takes an exclusive lock on `state_dir/lock`
    /// (never waiting), so a second manager on the same directory refuses to start instead of
    /// overwriting `jobs.json` and deleting the first one's VMs. Other commands use `open` and
    /// work beside a running manager.
    pub fn open_exclusive(dir: &Path) -> Result<StateDir, StateError> {
        let path = dir.join("lock");
        let io = |source| StateError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(StateError::Locked { path }),
            Err(std::fs::TryLockError::Error(source)) => {
                return Err(StateError::Io { path, source })
            }
        }
        let mut state = StateDir::open(dir)?;
        state._lock = Some(Arc::new(file));
        Ok(state)
    }

    /// The manager id: `configured` when given, else the persisted one, else a new one made and
    /// persisted now (`s_` and 12 hex digits, like GitLab Runner's `system_id`). Called once at
    /// start, before any job.
    pub fn manager_id(&self, configured: Option<&str>) -> Result<String, StateError> {
        match configured {
            Some(id) => Ok(id.to_string()),
            None => self.persisted_id("manager-id", "s_"),
        }
    }

    /// This host's id (`state_dir/host-id`, made once: `h_` and 12 hex digits): the
    /// `flotilla-host` label of every VM it makes, so that two hosts configured with one
    /// `manager_id` are told apart.
    pub fn host_id(&self) -> Result<String, StateError> {
        self.persisted_id("host-id", "h_")
    }

    /// The id in file `name`, or a new one (`prefix` and 12 hex) made and persisted now.
    fn persisted_id(&self, name: &str, prefix: &str) -> Result<String, StateError> {
        let path = self.dir.join(name);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let value = text.trim().to_string();
                let valid = !value.is_empty()
                    && value.len() <= 63
                    && value.chars().all(|c| {
                        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-'
                    });
                if valid {
                    Ok(value)
                } else {
                    Err(StateError::InvalidManagerId { path, value })
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let id = format!(
                    "{prefix}{}",
                    &uuid::Uuid::new_v4().simple().to_string()[..12]
                );
                write_atomically(&path, format!("{id}\n").as_bytes())?;
                Ok(id)
            }
            Err(source) => Err(StateError::Io { path, source }),
        }
    }

    /// The jobs the previous process left unfinished (read at open).
    pub fn leftover_jobs(&self) -> Vec<RunningJob> {
        self.jobs.list()
    }

    /// How many times `jobs.json` was written since open.
    pub fn jobs_file_writes(&self) -> u64 {
        self.jobs.writes()
    }

    /// Records `job` as received (before it is acknowledged) and returns the guard that forgets
    /// it again, with the result of writing `jobs.json`. The guard is returned even when the
    /// write failed (the caller then fails the job without running it).
    pub async fn record_job(&self, job: RunningJob) -> (JobRecord, Result<(), StateError>) {
        let record = JobRecord {
            state: self.clone(),
            id: job.id,
            url: job.url.clone(),
            fate: AtomicU8::new(ARMED),
            trace_kept: AtomicBool::new(false),
        };
        let written = self.add_job(job).await;
        (record, written)
    }

    /// Records a job as received (before it is acknowledged).
    pub async fn add_job(&self, job: RunningJob) -> Result<(), StateError> {
        self.update(move |jobs| {
            jobs.retain(|j| !(j.id == job.id && j.url == job.url));
            jobs.push(job);
        })
        .await
    }

    /// Marks a recorded job as acknowledged, in memory: the mark reaches `jobs.json` with the
    /// next write (another job's receipt, or this one's end). Nothing depends on it being on
    /// disk — a job left after a crash is failed either way; the flag only shows in the log —
    /// so it costs no write of its own.
    pub fn mark_acknowledged(&self, id: i64, url: &str) {
        self.jobs.change_lazily(|jobs| {
            for job in jobs.iter_mut().filter(|j| j.id == id && j.url == url) {
                job.acknowledged = true;
            }
        });
    }

    /// Forgets a job (its final state was sent, or it was dropped), and its kept trace.
    pub async fn remove_job(&self, id: i64, url: &str) -> Result<(), StateError> {
        self.update(|jobs| jobs.retain(|j| !(j.id == id && j.url == url)))
            .await?;
        let trace = self.kept_trace_path(id, url);
        blocking(move || remove(&trace)).await
    }

    /// Forgets a job whose final state was delivered and that never had a kept trace (no file
    /// to look for), without waiting: the change reaches `jobs.json` with the next write, at
    /// most [`jobs_file::SOON`] later. A crash before then leaves the job listed, and the next
    /// start's attempt to fail it is refused by the coordinator (the job is over): harmless.
    fn forget_job_soon(&self, id: i64, url: &str) {
        self.jobs
            .change_soon(|jobs| jobs.retain(|j| !(j.id == id && j.url == url)));
    }

    /// Writes what a delivered job's removal left unwritten, and waits: for an orderly stop.
    pub async fn flush(&self) -> Result<(), StateError> {
        self.jobs.flush().await
    }

    /// Where the trace of a job kept with its final state is stored:
    /// `state_dir/traces/<id>-<crc32 of the URL>.log`.
    pub fn kept_trace_path(&self, id: i64, url: &str) -> PathBuf {
        self.dir
            .join("traces")
            .join(format!("{id}-{:08x}.log", crc32fast::hash(url.as_bytes())))
    }

    /// Keeps a recorded job with the final state it could not send and a copy of its trace
    /// (already bounded by `output_limit`): the trace first, so a kept state always has it.
    async fn keep_pending(
        &self,
        id: i64,
        url: &str,
        state: FinalState,
        trace: &JobTrace,
    ) -> Result<(), StateError> {
        let path = self.kept_trace_path(id, url);
        let trace = trace.clone();
        blocking(move || {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|source| StateError::Io {
                    path: dir.to_path_buf(),
                    source,
                })?;
            }
            write_atomically_from(&path, |file| copy_trace(&trace, file))
        })
        .await?;
        self.update(|jobs| {
            for job in jobs.iter_mut().filter(|j| j.id == id && j.url == url) {
                job.pending_final = Some(state.clone());
            }
        })
        .await
    }

    /// Changes the list, then waits until a write carried the change.
    async fn update(&self, change: impl FnOnce(&mut Vec<RunningJob>)) -> Result<(), StateError> {
        let version = self.jobs.change(change);
        self.jobs.durable(version).await
    }

    /// Changes the list without waiting for the write (from a `Drop`).
    fn update_in_background(&self, change: impl FnOnce(&mut Vec<RunningJob>)) {
        self.jobs.change(change);
    }
}

/// Reads `jobs.json` (absent or blank: no job).
fn read_jobs(path: &Path) -> Result<Vec<RunningJob>, StateError> {
    let path = path.to_path_buf();
    match std::fs::read(&path) {
        Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => Ok(Vec::new()),
        Ok(bytes) => {
            serde_json::from_slice(&bytes).map_err(|source| StateError::Corrupt { path, source })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(StateError::Io { path, source }),
    }
}

/// Runs a blocking state write on tokio's blocking threads.
async fn blocking(
    write: impl FnOnce() -> Result<(), StateError> + Send + 'static,
) -> Result<(), StateError> {
    tokio::task::spawn_blocking(write)
        .await
        .unwrap_or_else(|e| Err(StateError::Writer(e.to_string())))
}

/// Copies every stored byte of `trace` into `file`, 1 MiB at a time.
fn copy_trace(trace: &JobTrace, file: &mut std::fs::File) -> std::io::Result<()> {
    use std::io::Write;
    let mut offset = 0;
    loop {
        let chunk = trace.read_at(offset, 1 << 20)?;
        if chunk.is_empty() {
            return Ok(());
        }
        file.write_all(&chunk)?;
        offset += chunk.len() as u64;
    }
}

/// The guard removes the entry when dropped.
const ARMED: u8 = 0;
/// The entry was kept with its final state: it outlives the guard.
const KEPT: u8 = 1;
/// The entry was removed on purpose: nothing left to do.
const DONE: u8 = 2;

/// A job's entry in `jobs.json`, held by its job task from receipt to the end.
///
/// Made by [`StateDir::record_job`]. Dropping it removes the entry, however the task ends (a
/// normal end, an early return, a panic, the task being dropped at shutdown), so no exit can
/// forget it — unless [`JobRecord::keep_pending`] kept the job with the final state it could
/// not send (and its trace), for a later start to deliver; then only
/// [`JobRecord::delivered`] removes it (GitLab Runner keeps no such record; without it a
/// coordinator outage loses the state).
#[must_use = "dropping the record forgets the job at once"]
pub struct JobRecord {
    state: StateDir,
    id: i64,
    url: String,
    /// [`ARMED`], [`KEPT`] or [`DONE`].
    fate: AtomicU8,
    /// [`JobRecord::keep_pending`] began writing the job's trace file (so its end looks for it).
    trace_kept: AtomicBool,
}

impl JobRecord {
    /// The job id.
    pub fn id(&self) -> i64 {
        self.id
    }

    /// Marks the job as acknowledged (`PUT state=running` answered); written with the next
    /// write of `jobs.json` ([`StateDir::mark_acknowledged`]).
    pub fn acknowledged(&self) {
        self.state.mark_acknowledged(self.id, &self.url);
    }

    /// Keeps the job in `jobs.json` with `state`, the final state it ended with and has not sent
    /// yet, and its trace beside it, so that the entry outlives the guard. The entry's
    /// [`RunningJob::pending_final`] then holds it for the next start.
    pub async fn keep_pending(
        &self,
        state: FinalState,
        trace: &JobTrace,
    ) -> Result<(), StateError> {
        self.trace_kept.store(true, Ordering::SeqCst);
        self.state
            .keep_pending(self.id, &self.url, state, trace)
            .await?;
        self.fate.store(KEPT, Ordering::SeqCst);
        Ok(())
    }

    /// The final state was delivered (or the coordinator no longer wants it): forgets the job,
    /// and its kept trace now if it had one (then waiting for `jobs.json`; otherwise the entry
    /// goes with the next write, within a second).
    pub async fn delivered(&self) -> Result<(), StateError> {
        self.fate.store(DONE, Ordering::SeqCst);
        if self.trace_kept.load(Ordering::SeqCst) {
            self.state.remove_job(self.id, &self.url).await
        } else {
            self.state.forget_job_soon(self.id, &self.url);
            Ok(())
        }
    }
}

impl Drop for JobRecord {
    fn drop(&mut self) {
        if self.fate.load(Ordering::SeqCst) != ARMED {
            return;
        }
        let (id, url) = (self.id, self.url.clone());
        self.state
            .update_in_background(move |jobs| jobs.retain(|j| !(j.id == id && j.url == url)));
    }
}

impl std::fmt::Debug for JobRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobRecord")
            .field("id", &self.id)
            .field("url", &self.url)
            .field("fate", &self.fate.load(Ordering::Relaxed))
            .finish()
    }
}
