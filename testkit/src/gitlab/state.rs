//! The fake GitLab's memory: runners and their queues, jobs with their state machine and trace,
//! pending faults and the log of recorded requests. Everything sits in one [`State`] behind one
//! `parking_lot::Mutex` (held only for short, non-async sections) in [`Shared`], which also
//! carries the notifications: `changed` wakes [`wait_job`](super::FakeGitlab::wait_job) callers
//! on any job change, each runner queue's `notify` ends held long polls, and `acks` broadcasts
//! the id of each job that starts running. HTTP handling lives in `api.rs`, not here.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use rand::distr::{Alphanumeric, SampleString};
use serde::Serialize;
use tokio::sync::{broadcast, Notify};
use tokio_util::sync::CancellationToken;

use super::artifacts::ArtifactStore;
use super::faults::Faults;
use super::FakeGitlabOptions;

/// Where a job is in GitLab's state machine, as the fake models it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Enqueued, not handed out yet.
    Pending,
    /// Handed out to a runner that advertised `two_phase_job_commit`; waiting for its
    /// `PUT state=running` (GitLab still reports the job as `pending`).
    AwaitingAck,
    /// Running on a runner.
    Running,
    /// Cancel requested while running (graceful cancel); the runner learns it from
    /// `Job-Status: canceling` and ends the job.
    Canceling,
    /// Finished: success.
    Success,
    /// Finished: failed (see `failure_reason`).
    Failed,
    /// Finished: canceled.
    Canceled,
}

impl JobState {
    /// The status string GitLab puts in `Job-Status` for a job in this state.
    pub fn gitlab_status(self) -> &'static str {
        match self {
            JobState::Pending | JobState::AwaitingAck => "pending",
            JobState::Running => "running",
            JobState::Canceling => "canceling",
            JobState::Success => "success",
            JobState::Failed => "failed",
            JobState::Canceled => "canceled",
        }
    }

    /// Whether the job has ended (success, failed or canceled).
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            JobState::Success | JobState::Failed | JobState::Canceled
        )
    }

    /// GitLab's `processing_on_runner?`: running or canceling.
    pub(crate) fn processing_on_runner(self) -> bool {
        matches!(self, JobState::Running | JobState::Canceling)
    }
}

/// A snapshot of one job as the fake GitLab sees it. Created by
/// [`FakeGitlab::enqueue`](super::FakeGitlab::enqueue); read with
/// [`FakeGitlab::job`](super::FakeGitlab::job) or [`FakeGitlab::wait_job`](super::FakeGitlab::wait_job).
/// Its `Debug` hides the job token and the payload (which holds the token and masked variables).
#[derive(Clone)]
pub struct JobRecord {
    /// Job id.
    pub id: i64,
    /// The job token (secret).
    pub token: String,
    /// The job payload as handed out (filled defaults, queue metrics once handed out).
    pub payload: serde_json::Value,
    /// Current state.
    pub state: JobState,
    /// `failure_reason` of a failed job (unknown reasons stored as `unknown_failure`).
    pub failure_reason: Option<String>,
    /// `exit_code` sent with the final update, if any.
    pub exit_code: Option<i64>,
    /// The stored trace bytes.
    pub trace: Vec<u8>,
    /// Whether a trace PATCH at offset 0 carried `debug_trace=true`.
    pub debug_trace: bool,
    /// `output.checksum` (or the deprecated top-level `checksum`) last reported with a PUT.
    pub reported_checksum: Option<String>,
    /// `output.bytesize` last reported with a PUT.
    pub reported_bytesize: Option<u64>,
    /// Whether the final update's checksum or bytesize disagreed with the stored trace (GitLab
    /// only logs this; the fake records it for assertions).
    pub checksum_mismatch: bool,
    /// Whether the runner that took the job advertised `two_phase_job_commit`.
    pub two_phase: bool,
    /// Whether the runner that took the job advertised `cancel_gracefully`.
    pub cancel_gracefully: bool,
    /// When the job was enqueued.
    pub enqueued_at: Instant,
    /// When a `jobs/request` handed it out (taken in the handler).
    pub handed_out_at: Option<Instant>,
    /// The `system_id` of the runner manager it was handed out to (GitLab records the runner
    /// manager of every build), if the request named one.
    pub runner_manager: Option<String>,
    /// When it started running: the ack `PUT state=running` for two-phase runners, the hand-out
    /// otherwise (taken in the handler).
    pub acknowledged_at: Option<Instant>,
    /// When it reached a finished state.
    pub finished_at: Option<Instant>,
    /// Number of trace PATCH requests received for this job (faulted ones included).
    pub patch_calls: u32,
    /// Number of PUT requests received for this job (faulted ones included).
    pub put_calls: u32,
}

impl fmt::Debug for JobRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobRecord")
            .field("id", &self.id)
            .field("token", &"[MASKED]")
            .field("state", &self.state)
            .field("failure_reason", &self.failure_reason)
            .field("exit_code", &self.exit_code)
            .field("trace_len", &self.trace.len())
            .field("reported_checksum", &self.reported_checksum)
            .field("reported_bytesize", &self.reported_bytesize)
            .field("checksum_mismatch", &self.checksum_mismatch)
            .field("patch_calls", &self.patch_calls)
            .field("put_calls", &self.put_calls)
            .finish_non_exhaustive()
    }
}

impl JobRecord {
    /// The trace as (lossy) UTF-8 text.
    pub fn trace_text(&self) -> String {
        String::from_utf8_lossy(&self.trace).into_owned()
    }

    /// `crc32:%08x` of the stored trace, as GitLab Runner computes its checksum.
    pub fn trace_checksum(&self) -> String {
        format!("crc32:{:08x}", crc32fast::hash(&self.trace))
    }
}

/// Header names whose values are secrets and are hidden by `RecordedRequest`'s `Debug`.
const SECRET_HEADERS: [&str; 5] = [
    "job-token",
    "runner-token",
    "private-token",
    "authorization",
    "cookie",
];

/// One request the fake received on the runner API (admin calls are not recorded).
#[derive(Clone)]
pub struct RecordedRequest {
    /// HTTP method, e.g. `PATCH`.
    pub method: String,
    /// Path, e.g. `/api/v4/jobs/1/trace`.
    pub path: String,
    /// Raw query string, if any.
    pub query: Option<String>,
    /// Headers in arrival order, names lowercased.
    pub headers: Vec<(String, String)>,
    /// The body, cut at 64 KiB.
    pub body: Vec<u8>,
    /// Whether `body` was cut.
    pub body_truncated: bool,
    /// When the request arrived.
    pub at: Instant,
    /// The status the fake answered with (recorded once the handler returned; a long poll is
    /// recorded when it ends).
    pub status: u16,
}

impl RecordedRequest {
    /// The first value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON, if it is JSON.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

impl fmt::Debug for RecordedRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(n, v)| {
                let shown = if SECRET_HEADERS.contains(&n.as_str()) {
                    "[MASKED]"
                } else {
                    v.as_str()
                };
                (n.as_str(), shown)
            })
            .collect();
        f.debug_struct("RecordedRequest")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("query", &self.query)
            .field("headers", &headers)
            .field("body_len", &self.body.len())
            .finish_non_exhaustive()
    }
}

/// A runner token's job queue (exists for registered runners and for tokens jobs were enqueued to).
pub(crate) struct RunnerQueue {
    /// Opaque queue version (GitLab's `runner:build_queue:<token>` value), sent in
    /// `X-GitLab-Last-Update`; changes on every enqueue.
    pub version: String,
    /// Pending job ids, oldest first.
    pub pending: VecDeque<i64>,
    /// Woken (`notify_waiters`) when the version changes, to end held long polls.
    pub notify: Arc<Notify>,
}

impl RunnerQueue {
    fn new() -> Self {
        RunnerQueue {
            version: new_queue_version(),
            pending: VecDeque::new(),
            notify: Arc::new(Notify::new()),
        }
    }

    /// A new version, and wake held polls.
    pub fn tick(&mut self) {
        self.version = new_queue_version();
        self.notify.notify_waiters();
    }
}

fn new_queue_version() -> String {
    Alphanumeric.sample_string(&mut rand::rng(), 24)
}

/// A random job token with GitLab's `glcbt-` prefix.
pub(crate) fn new_job_token() -> String {
    format!("glcbt-{}", Alphanumeric.sample_string(&mut rand::rng(), 20))
}

/// A job and what only the fake needs to know about it.
pub(crate) struct JobEntry {
    pub record: JobRecord,
    /// Extra runner features the job needs (from the fake-only `_requires` key).
    pub requires: Vec<String>,
}

/// Most requests kept by the request log (the oldest are dropped beyond it).
pub(crate) const MAX_RECORDED_REQUESTS: usize = 20_000;

/// Everything mutable. Guarded by `Shared::state`.
#[derive(Default)]
pub(crate) struct State {
    /// Registered runner tokens → runner id.
    pub runners: HashMap<String, i64>,
    /// Queues by runner token.
    pub queues: HashMap<String, RunnerQueue>,
    pub jobs: BTreeMap<i64, JobEntry>,
    pub next_job_id: i64,
    pub next_runner_id: i64,
    pub faults: Faults,
    /// Uploaded job artifacts and object-storage keys.
    pub artifacts: ArtifactStore,
    pub requests: VecDeque<RecordedRequest>,
    /// Runner registration: tokens, managers, expiry (`runners.rs`).
    pub registration: Registration,
}

/// What the runner-management endpoints keep (`runners.rs`).
#[derive(Default)]
pub(crate) struct Registration {
    /// Legacy registration tokens `POST /runners` accepts.
    pub registration_tokens: std::collections::HashSet<String>,
    /// `POST /runners` answers 410 (GitLab's "allow runner registration token" off).
    pub disallowed: bool,
    /// Lifetime of tokens issued from now on (`None`: they never expire).
    pub token_ttl: Option<chrono::TimeDelta>,
    /// Runner tokens with an expiry.
    pub expires: HashMap<String, chrono::DateTime<chrono::Utc>>,
    /// Runner managers (system ids) by runner id.
    pub managers: HashMap<i64, std::collections::BTreeSet<String>>,
    /// The `POST /runners` parameters of runners created with a registration token, by id.
    pub created: HashMap<i64, serde_json::Value>,
    /// Old runner token → the token a reset replaced it with (jobs enqueued to the old one
    /// go to the runner's queue).
    pub replaced: HashMap<String, String>,
}

impl State {
    /// The runner id of `token` if it is registered and not expired (GitLab's
    /// `authenticate_runner!`).
    pub fn valid_runner(&self, token: &str) -> Option<i64> {
        let id = *self.runners.get(token)?;
        match self.registration.expires.get(token) {
            Some(at) if *at <= chrono::Utc::now() => None,
            _ => Some(id),
        }
    }

    /// The queue of `token`, created if missing.
    pub fn queue(&mut self, token: &str) -> &mut RunnerQueue {
        self.queues
            .entry(token.to_owned())
            .or_insert_with(RunnerQueue::new)
    }

    /// Moves a job to a finished state, stamping `finished_at`.
    pub fn finish(&mut self, id: i64, state: JobState, failure_reason: Option<String>) {
        if let Some(entry) = self.jobs.get_mut(&id) {
            entry.record.state = state;
            if failure_reason.is_some() {
                entry.record.failure_reason = failure_reason;
            }
            entry.record.finished_at = Some(Instant::now());
        }
        for queue in self.queues.values_mut() {
            queue.pending.retain(|j| *j != id);
        }
    }

    /// GitLab's cancel: a job not running yet is canceled at once; a running job goes to
    /// `canceling` when its runner cancels gracefully, else straight to `canceled`.
    pub fn cancel(&mut self, id: i64) {
        let Some(entry) = self.jobs.get_mut(&id) else {
            return;
        };
        match entry.record.state {
            JobState::Running if entry.record.cancel_gracefully => {
                entry.record.state = JobState::Canceling;
            }
            JobState::Pending | JobState::AwaitingAck | JobState::Running => {
                self.finish(id, JobState::Canceled, None);
            }
            JobState::Canceling | JobState::Success | JobState::Failed | JobState::Canceled => {}
        }
    }
}

/// State shared by the server's handlers and every [`FakeGitlab`](super::FakeGitlab) clone.
pub(crate) struct Shared {
    pub opts: FakeGitlabOptions,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The fake object storage's base URL (its own port), `http://127.0.0.1:PORT`.
    pub objstore_url: String,
    pub state: Mutex<State>,
    /// Any job changed (state, trace, calls).
    pub changed: Notify,
    /// Ids of jobs that started running.
    pub acks: broadcast::Sender<i64>,
    /// Cancelled when the fake shuts down: held polls and delays end at once.
    pub cancel: CancellationToken,
    /// Number of `jobs/request` polls being held right now (changes notify `changed`).
    pub held_polls: AtomicUsize,
}

impl Shared {
    /// CI_SERVER_URL as jobs see it.
    pub fn advertised_url(&self) -> &str {
        self.opts.advertised_url.as_deref().unwrap_or(&self.url)
    }
}
