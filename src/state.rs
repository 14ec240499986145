//! The little that is persisted in `state_dir`: `manager-id` (made once; sent to GitLab as
//! `system_id` and used as the VMs' owner label) and `jobs.json` (the jobs this process has
//! received and not yet finished, so the next start can fail them at once after a crash).
//! A job task holds its entry as a [`JobRecord`] guard, whose drop removes it.
//! Both files are written atomically (temp file + rename) with mode 0600. Nothing else is kept:
//! the coordinator is the truth about jobs and the cloud about VMs.

use crate::job::FinalState;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Why the state directory could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// A file could not be read, written or created.
    #[error("state directory {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// `jobs.json` is not what this program writes.
    #[error("{path} is corrupt ({source}); move it away to start")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The decode error.
        #[source]
        source: serde_json::Error,
    },
    /// Another process holds the directory's lock (`flotilla run` on the same `state_dir`).
    #[error(
        "{path} is locked by another `flotilla run` on this state_dir; stop it, or give this \
         one its own state_dir (two managers on one state_dir overwrite each other's jobs and \
         delete each other's VMs)"
    )]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// `manager-id` (or `host-id`) holds something that cannot be an id.
    #[error("{path} holds an invalid id {value:?}: use [a-z0-9_-], at most 63 characters")]
    InvalidManagerId {
        /// The file.
        path: PathBuf,
        /// What it holds.
        value: String,
    },
}

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
#[derive(Clone)]
pub struct StateDir {
    dir: PathBuf,
    /// The in-memory copy of `jobs.json`; a std mutex because it is held only across a small
    /// synchronous write, never across an await.
    jobs: Arc<Mutex<Vec<RunningJob>>>,
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
        let state = StateDir {
            dir: dir.to_path_buf(),
            jobs: Arc::default(),
            _lock: None,
        };
        let jobs = state.read_jobs()?;
        *state.lock() = jobs;
        Ok(state)
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
    /// persisted now (`s_` and 12 hex digits, like GitLab Runner's `system_id`).
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
        self.lock().clone()
    }

    /// Records `job` as received (before it is acknowledged) and returns the guard that forgets
    /// it again, with the result of writing `jobs.json`. The guard is returned even when the
    /// write failed: the in-memory list holds the job, and the next write carries it.
    pub fn record_job(&self, job: RunningJob) -> (JobRecord, Result<(), StateError>) {
        let record = JobRecord {
            state: self.clone(),
            id: job.id,
            url: job.url.clone(),
            armed: true,
        };
        let written = self.add_job(job);
        (record, written)
    }

    /// Records a job as received (before it is acknowledged).
    pub fn add_job(&self, job: RunningJob) -> Result<(), StateError> {
        let mut jobs = self.lock();
        jobs.retain(|j| !(j.id == job.id && j.url == job.url));
        jobs.push(job);
        self.write_jobs(&jobs)
    }

    /// Marks a recorded job as acknowledged.
    pub fn mark_acknowledged(&self, id: i64, url: &str) -> Result<(), StateError> {
        let mut jobs = self.lock();
        for job in jobs.iter_mut().filter(|j| j.id == id && j.url == url) {
            job.acknowledged = true;
        }
        self.write_jobs(&jobs)
    }

    /// Forgets a job (its final state was sent, or it was dropped).
    pub fn remove_job(&self, id: i64, url: &str) -> Result<(), StateError> {
        let mut jobs = self.lock();
        jobs.retain(|j| !(j.id == id && j.url == url));
        self.write_jobs(&jobs)
    }

    /// Keeps a recorded job with the final state it could not send.
    fn keep_pending(&self, id: i64, url: &str, state: FinalState) -> Result<(), StateError> {
        let mut jobs = self.lock();
        for job in jobs.iter_mut().filter(|j| j.id == id && j.url == url) {
            job.pending_final = Some(state.clone());
        }
        self.write_jobs(&jobs)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<RunningJob>> {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn jobs_path(&self) -> PathBuf {
        self.dir.join("jobs.json")
    }

    fn read_jobs(&self) -> Result<Vec<RunningJob>, StateError> {
        let path = self.jobs_path();
        match std::fs::read(&path) {
            Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => Ok(Vec::new()),
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|source| StateError::Corrupt { path, source }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(source) => Err(StateError::Io { path, source }),
        }
    }

    fn write_jobs(&self, jobs: &[RunningJob]) -> Result<(), StateError> {
        let bytes = serde_json::to_vec_pretty(jobs).unwrap_or_else(|_| b"[]".to_vec());
        write_atomically(&self.jobs_path(), &bytes)
    }
}

/// A job's entry in `jobs.json`, held by its job task from receipt to the end.
///
/// Made by [`StateDir::record_job`]. Dropping it removes the entry, however the task ends (a
/// normal end, an early return, a panic, the task being dropped at shutdown), so no exit can
/// forget it. The one way to leave the entry is [`JobRecord::keep_pending`], which consumes the
/// guard and keeps the job with the final state that could not be sent, for a later start to
/// deliver (GitLab Runner keeps no such record; without it a coordinator outage loses the state).
#[must_use = "dropping the record forgets the job at once"]
pub struct JobRecord {
    state: StateDir,
    id: i64,
    url: String,
    /// Cleared by `keep_pending`: the entry then outlives the guard.
    armed: bool,
}

impl JobRecord {
    /// The job id.
    pub fn id(&self) -> i64 {
        self.id
    }

    /// Marks the job as acknowledged (`PUT state=running` answered).
    pub fn acknowledged(&self) -> Result<(), StateError> {
        self.state.mark_acknowledged(self.id, &self.url)
    }

    /// Keeps the job in `jobs.json` with `state`, the final state it ended with and could not
    /// send, instead of removing it on drop. The entry's
    /// [`RunningJob::pending_final`] then holds it for the next start.
    pub fn keep_pending(mut self, state: FinalState) -> Result<(), StateError> {
        self.armed = false;
        self.state.keep_pending(self.id, &self.url, state)
    }
}

impl Drop for JobRecord {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Err(e) = self.state.remove_job(self.id, &self.url) {
            tracing::error!(job = self.id, error = %e, "cannot remove the job from the state directory");
        }
    }
}

impl std::fmt::Debug for JobRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobRecord")
            .field("id", &self.id)
            .field("url", &self.url)
            .field("armed", &self.armed)
            .finish()
    }
}

/// Writes `bytes` to `path` through a temp file in the same directory, fsynced, then renamed,
/// then the directory fsynced (without it the rename itself may be lost at a power cut), so a
/// crash leaves either the old or the new content. Mode 0600.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
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
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| StateError::Io {
            path: dir.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: i64) -> RunningJob {
        RunningJob {
            id,
            url: "http://gitlab".into(),
            token: format!("tok{id}"),
            acknowledged: false,
            pending_final: None,
        }
    }

    #[test]
    fn jobs_survive_a_restart_until_removed() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        state.add_job(job(1)).unwrap();
        state.add_job(job(2)).unwrap();
        state.mark_acknowledged(2, "http://gitlab").unwrap();
        state.remove_job(1, "http://gitlab").unwrap();
        let again = StateDir::open(dir.path()).unwrap();
        let left = again.leftover_jobs();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].id, 2);
        assert!(left[0].acknowledged);
        let mode = std::fs::metadata(dir.path().join("jobs.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn only_one_manager_holds_a_state_dir() {
        let dir = tempfile::tempdir().unwrap();
        let first = StateDir::open_exclusive(dir.path()).unwrap();
        let second = StateDir::open_exclusive(dir.path()).err().unwrap();
        assert!(matches!(second, StateError::Locked { .. }), "{second}");
        assert!(second.to_string().contains("another `flotilla run`"));
        // Other commands read beside it.
        assert!(StateDir::open(dir.path()).is_ok());
        let clone = first.clone();
        drop(first);
        assert!(
            StateDir::open_exclusive(dir.path()).is_err(),
            "a clone keeps the lock"
        );
        drop(clone);
        StateDir::open_exclusive(dir.path()).unwrap();
    }

    #[test]
    fn the_manager_id_is_made_once() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        let id = state.manager_id(None).unwrap();
        assert!(id.starts_with("s_") && id.len() == 14, "{id}");
        assert_eq!(
            StateDir::open(dir.path())
                .unwrap()
                .manager_id(None)
                .unwrap(),
            id
        );
        assert_eq!(state.manager_id(Some("fixed")).unwrap(), "fixed");
    }

    #[test]
    fn a_corrupt_jobs_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("jobs.json"), "{not json").unwrap();
        let err = StateDir::open(dir.path()).err().unwrap();
        assert!(err.to_string().contains("corrupt"), "{err}");
    }

    #[test]
    fn a_record_forgets_its_job_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        let (record, written) = state.record_job(job(1));
        written.unwrap();
        let (other, written) = state.record_job(job(2));
        written.unwrap();
        record.acknowledged().unwrap();
        assert!(StateDir::open(dir.path()).unwrap().leftover_jobs()[0].acknowledged);
        drop(record);
        let left = StateDir::open(dir.path()).unwrap().leftover_jobs();
        assert_eq!(left.iter().map(|j| j.id).collect::<Vec<_>>(), [2]);
        drop(other);
        assert!(StateDir::open(dir.path())
            .unwrap()
            .leftover_jobs()
            .is_empty());
    }

    #[test]
    fn keep_pending_leaves_the_job_with_its_final_state() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        let (record, written) = state.record_job(job(3));
        written.unwrap();
        let final_state = FinalState::failed(crate::job::FailureReason::ScriptFailure, Some(2));
        record.keep_pending(final_state.clone()).unwrap();
        let left = StateDir::open(dir.path()).unwrap().leftover_jobs();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].id, 3);
        assert_eq!(left[0].pending_final, Some(final_state));
    }

    #[test]
    fn debug_hides_the_job_token() {
        assert!(!format!("{:?}", job(7)).contains("tok7"));
    }
}
