//! The fake GitLab: a faithful stand-in for GitLab's Runner API v4 (jobs/request with Workhorse
//! long polling, job update with the two-phase ack, trace PATCH with Content-Range/416, runner
//! verify/unregister/registration/token reset, job artifacts with a fake object storage on its own port), on loopback,
//! for Flotilla's integration tests, demo and benchmarks. It rejects what GitLab rejects, with GitLab's status codes and headers, and injects faults on
//! demand. This module owns the public API ([`FakeGitlab`], [`GitlabHandle`], options); the
//! handlers are in `request.rs`/`update.rs`, the state in `state.rs`. Notes on fidelity (what
//! GitLab's source does and where the fake is stricter) are in the handlers' doc comments.
//!
//! Extension point: [`FakeGitlab::start_with`] merges extra routes (git smart HTTP)
//! built from a [`GitlabHandle`], which can resolve job tokens with [`GitlabHandle::job_by_token`].
//! [`FakeGitlab::start_with_git`] serves real repositories (`git.rs`).
//! Artifacts are built in (`artifacts.rs`): read what a job uploaded with
//! [`GitlabHandle::artifacts`].

mod admin;
mod artifacts;
mod faults;
mod git;
mod http;
mod jobs;
mod request;
mod runners;
mod server;
mod state;
mod update;

use std::net::{Ipv4Addr, SocketAddr};
use std::ops::Deref;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::Router;
use parking_lot::Mutex;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use admin::AdminJob;
pub use artifacts::{StoredArtifact, DEFAULT_MAX_ARTIFACTS_BYTES};
pub use faults::Fault;
pub use git::{GitRepos, Repo};
pub use jobs::{FeatureCheck, DEFAULT_FAILURE_REASONS};
pub use state::{JobRecord, JobState, RecordedRequest};
/// The fake's `Content-Range` parser, public only for the fuzz targets in `fuzz/`.
#[doc(hidden)]
pub use update::parse_range;

use jobs::{complete_job, JobDefaults};
use state::{new_job_token, JobEntry, Shared, State};

/// GitLab's default job log limit (`ci_jobs_trace_size_limit`, 100 MB).
pub const DEFAULT_TRACE_LIMIT_BYTES: u64 = 100 * 1024 * 1024;

/// How to start a [`FakeGitlab`]. `Default` gives: loopback on a free port, no long polling,
/// GitLab's 100 MB trace limit, strict feature check.
#[derive(Debug, Clone)]
pub struct FakeGitlabOptions {
    /// How long a poll whose `last_update` is current is held (Workhorse's
    /// `apiCiLongPollingDuration`); zero answers at once.
    pub long_poll: Duration,
    /// Trace size beyond which a PATCH gets 403 and the job fails with `trace_size_exceeded`.
    pub trace_limit_bytes: u64,
    /// CI_SERVER_URL (and repo URL base) that jobs see; default: the fake's own URL.
    pub advertised_url: Option<String>,
    /// `X-GitLab-Trace-Update-Interval` sent with each accepted PATCH.
    pub trace_update_interval_secs: Option<u64>,
    /// Address to listen on; must be a loopback address. Default `127.0.0.1:0`.
    pub listen: SocketAddr,
    /// Which runner features jobs are checked against before hand-out.
    pub feature_check: FeatureCheck,
    /// Artifact uploads above this many bytes get 413 (GitLab's `max_artifacts_size`, 100 MB).
    pub max_artifacts_bytes: u64,
}

impl Default for FakeGitlabOptions {
    fn default() -> Self {
        FakeGitlabOptions {
            long_poll: Duration::ZERO,
            trace_limit_bytes: DEFAULT_TRACE_LIMIT_BYTES,
            advertised_url: None,
            trace_update_interval_secs: None,
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            feature_check: FeatureCheck::default(),
            max_artifacts_bytes: DEFAULT_MAX_ARTIFACTS_BYTES,
        }
    }
}

/// Access to a running fake's state, without keeping its server alive: what handlers of
/// extension routes hold. [`FakeGitlab`] derefs to it, so all these methods are on the fake.
#[derive(Clone)]
pub struct GitlabHandle {
    shared: Arc<Shared>,
}

impl GitlabHandle {
    /// The base URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        self.shared.url.clone()
    }

    /// Registers a runner token (several may be registered; registering twice is a no-op).
    pub fn add_runner(&self, token: &str) {
        let mut st = self.shared.state.lock();
        if !st.runners.contains_key(token) {
            st.next_runner_id += 1;
            let id = st.next_runner_id;
            st.runners.insert(token.to_owned(), id);
        }
        st.queue(token);
    }

    /// Enqueues `job` for `runner_token` and returns its id. Always sets `id` and a random
    /// `glcbt-` job `token`; fills any missing standard field (`job_info`, `git_info`,
    /// `runner_info.timeout` 3600, `features`, `steps`, CI_JOB_ID / CI_JOB_TOKEN (masked) /
    /// CI_SERVER_URL variables, empty `services`/`cache`/`credentials`/`dependencies`, a
    /// dependency's missing `token` set to this job's token, as current GitLab sends it). A
    /// fake-only `_requires: ["feature", …]` key lists extra runner features the job needs.
    /// The token need not be registered yet: the job waits for a runner with that token.
    pub fn enqueue(&self, runner_token: &str, job: serde_json::Value) -> i64 {
        let token = new_job_token();
        let mut st = self.shared.state.lock();
        let runner_token = &runners::current_token(&st, runner_token);
        st.next_job_id += 1;
        let id = st.next_job_id;
        let defaults = JobDefaults {
            id,
            token: &token,
            server_url: self.shared.advertised_url(),
        };
        let (payload, requires) = complete_job(job, &defaults);
        let record = JobRecord {
            id,
            token: token.clone(),
            payload,
            state: JobState::Pending,
            failure_reason: None,
            exit_code: None,
            trace: Vec::new(),
            debug_trace: false,
            reported_checksum: None,
            reported_bytesize: None,
            checksum_mismatch: false,
            two_phase: false,
            cancel_gracefully: false,
            enqueued_at: Instant::now(),
            handed_out_at: None,
            runner_manager: None,
            acknowledged_at: None,
            finished_at: None,
            patch_calls: 0,
            put_calls: 0,
        };
        st.jobs.insert(id, JobEntry { record, requires });
        let queue = st.queue(runner_token);
        queue.pending.push_back(id);
        queue.tick();
        drop(st);
        self.shared.changed.notify_waiters();
        id
    }

    /// A snapshot of job `id`.
    pub fn job(&self, id: i64) -> Option<JobRecord> {
        self.shared
            .state
            .lock()
            .jobs
            .get(&id)
            .map(|e| e.record.clone())
    }

    /// The job whose token is `token` (for extension routes authenticating `gitlab-ci-token`).
    pub fn job_by_token(&self, token: &str) -> Option<JobRecord> {
        let st = self.shared.state.lock();
        st.jobs
            .values()
            .find(|e| e.record.token == token)
            .map(|e| e.record.clone())
    }

    /// Waits until job `id` satisfies `pred`, woken by job changes (no polling loop); fails
    /// after `timeout` with the last state seen.
    pub async fn wait_job(
        &self,
        id: i64,
        timeout: Duration,
        pred: impl Fn(&JobRecord) -> bool,
    ) -> anyhow::Result<JobRecord> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Registered before the check, so a change between the two is not missed.
            let changed = self.shared.changed.notified();
            let current = self.job(id);
            if let Some(rec) = &current {
                if pred(rec) {
                    return Ok(rec.clone());
                }
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                anyhow::bail!(
                    "job {id} did not reach the expected condition within {timeout:?}; last seen: {current:?}"
                );
            }
        }
    }

    /// Number of `jobs/request` long polls being held right now.
    pub fn held_polls(&self) -> usize {
        self.shared.held_polls.load(Ordering::SeqCst)
    }

    /// Waits (woken by changes, no polling loop) until exactly `n` long polls (or requests
    /// delayed by [`Fault::SlowRequest`]) are held, e.g.
    /// to enqueue only once a runner's poll is parked.
    pub async fn wait_held_polls(&self, n: usize, timeout: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.shared.changed.notified();
            if self.held_polls() == n {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                anyhow::bail!(
                    "{} long polls held after {timeout:?}, expected {n}",
                    self.held_polls()
                );
            }
        }
    }

    /// Cancels job `id` as GitLab does: pending or awaiting ack → `canceled`; running →
    /// `canceling` if its runner advertised `cancel_gracefully` (the runner then sees
    /// `Job-Status: canceling`), else `canceled`. Finished jobs are left alone.
    pub fn cancel(&self, id: i64) {
        self.shared.state.lock().cancel(id);
        self.shared.changed.notify_waiters();
    }

    /// The artifacts uploaded for job `id` (or stored with [`GitlabHandle::put_artifact`]), in
    /// upload order.
    pub fn artifacts(&self, id: i64) -> Vec<StoredArtifact> {
        self.shared.state.lock().artifacts.of_job(id)
    }

    /// Stores an artifact for job `id` as if its runner had uploaded it (for a dependency that
    /// never ran in the test).
    pub fn put_artifact(&self, id: i64, artifact: StoredArtifact) {
        self.shared.state.lock().artifacts.put(id, artifact);
        self.shared.changed.notify_waiters();
    }

    /// The fake object storage's base URL (its own loopback port), where direct artifact
    /// downloads are redirected.
    pub fn object_store_url(&self) -> String {
        self.shared.objstore_url.clone()
    }

    /// Injects a fault (see [`Fault`]).
    pub fn inject(&self, fault: Fault) {
        self.shared.state.lock().faults.inject(fault);
    }

    /// Removes every pending fault (the outage is over).
    pub fn clear_faults(&self) {
        self.shared.state.lock().faults.clear();
    }

    /// The runner-API requests received so far (the last 20,000), oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.state.lock().requests.iter().cloned().collect()
    }

    /// Ids of jobs as they start running (the ack of a two-phase runner, else the hand-out),
    /// sent from the handler at the moment `acknowledged_at` is taken.
    pub fn subscribe_acks(&self) -> broadcast::Receiver<i64> {
        self.shared.acks.subscribe()
    }
}

/// Stops the server when the last [`FakeGitlab`] clone is dropped.
struct Guard {
    shared: Arc<Shared>,
    tracker: TaskTracker,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.shared.cancel.cancel();
    }
}

/// A running fake GitLab on loopback. Cheap to clone; dropping the last clone stops the server
/// (held polls end at once); [`FakeGitlab::shutdown`] also waits for the server task.
#[derive(Clone)]
pub struct FakeGitlab {
    handle: GitlabHandle,
    guard: Arc<Guard>,
}

impl Deref for FakeGitlab {
    type Target = GitlabHandle;

    fn deref(&self) -> &GitlabHandle {
        &self.handle
    }
}

impl FakeGitlab {
    /// Starts a fake with the runner and admin APIs only.
    pub async fn start(opts: FakeGitlabOptions) -> anyhow::Result<FakeGitlab> {
        Self::start_with(opts, |_| Router::new()).await
    }

    /// Starts a fake whose router also merges `extra(handle)`: the extension point for routes
    /// served beside the Runner API (git smart HTTP). Extra routes are recorded in
    /// [`GitlabHandle::requests`] like the others.
    pub async fn start_with(
        opts: FakeGitlabOptions,
        extra: impl FnOnce(GitlabHandle) -> Router,
    ) -> anyhow::Result<FakeGitlab> {
        anyhow::ensure!(
            opts.listen.ip().is_loopback(),
            "fake gitlab listens on loopback only, not {}",
            opts.listen
        );
        let listener = tokio::net::TcpListener::bind(opts.listen)
            .await
            .with_context(|| format!("binding fake gitlab to {}", opts.listen))?;
        let addr = listener.local_addr().context("fake gitlab local address")?;
        let objstore_listener = tokio::net::TcpListener::bind((opts.listen.ip(), 0))
            .await
            .context("binding the fake object storage")?;
        let objstore_addr = objstore_listener
            .local_addr()
            .context("fake object storage local address")?;
        let (acks, _) = broadcast::channel(4096);
        let shared = Arc::new(Shared {
            opts,
            url: format!("http://{addr}"),
            objstore_url: format!("http://{objstore_addr}"),
            state: Mutex::new(State::default()),
            changed: tokio::sync::Notify::new(),
            acks,
            cancel: CancellationToken::new(),
            held_polls: AtomicUsize::new(0),
        });
        let handle = GitlabHandle {
            shared: shared.clone(),
        };
        let app = server::router(handle.clone(), extra(handle.clone()));
        let tracker = TaskTracker::new();
        server::serve(&tracker, listener, app, &shared);
        let objstore = server::object_store_router(shared.clone());
        server::serve(&tracker, objstore_listener, objstore, &shared);
        tracker.close();
        Ok(FakeGitlab {
            handle,
            guard: Arc::new(Guard { shared, tracker }),
        })
    }

    /// Starts a fake that also serves the repositories it returns over smart HTTP at
    /// `/<namespace>/<project>.git` (basic auth `gitlab-ci-token` + a running job's token).
    /// A job's default `git_info.repo_url` names its `job_info.project_full_path`.
    pub async fn start_with_git(opts: FakeGitlabOptions) -> anyhow::Result<(FakeGitlab, GitRepos)> {
        let repos = GitRepos::new()?;
        let served = repos.clone();
        let fake = Self::start_with(opts, move |handle| served.router(handle)).await?;
        Ok((fake, repos))
    }

    /// Stops the server and waits for its task to end.
    pub async fn shutdown(&self) {
        self.guard.shared.cancel.cancel();
        self.guard.tracker.wait().await;
    }

    /// A handle that does not keep the server alive.
    pub fn handle(&self) -> GitlabHandle {
        self.handle.clone()
    }
}
