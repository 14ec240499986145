//! The slow cloud work of a pool, one worker task per job: create one VM (insert, wait for the
//! operation, take its address from the pool's next shared listing, wait for dockerd), start
//! deleting one VM (the pool confirms the deletion from a later listing instead of waiting on
//! the operation), check one VM with a get, list this manager's VMs. A VM's lifetime thus costs
//! three Compute calls besides the shared lists: insert, wait, delete. A worker owns no table
//! state: it reports one [`Event`] to the actor and ends. Rate limits are waited out here (and
//! reported so the actor holds new work back); operations are awaited with `Cloud::wait`, which
//! blocks, never by polling.

use super::access::VmDockerAccess;
use super::zones::ZoneFailure;
use crate::cloud::{
    Cloud, CloudError, Instance, InstanceSpec, InstanceStatus, ListScope, Listing,
    OperationFailure, OperationRef, OperationStatus, QuotaScope,
};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{sleep, Instant};
use tokio_util::sync::CancellationToken;

/// Attempts of a call that failed with a transient error (`Unavailable`) before giving up.
const TRANSIENT_ATTEMPTS: u32 = 4;
/// A `wait` that returns `Pending` faster than this is spaced out to it (guards a cloud that
/// does not block, so a bug can never become a polling storm).
const MIN_WAIT_SPACING: Duration = Duration::from_secs(1);

/// What a worker reports.
#[derive(Debug)]
pub(super) enum Event {
    /// A creation ended.
    Created {
        name: String,
        result: Result<Ready, CreateFailure>,
    },
    /// A deletion attempt ended (`Failed`: the actor decides on a retry).
    Deleted {
        name: String,
        outcome: DeleteOutcome,
    },
    /// A creation worker whose insert finished asks for the VM as the next listing shows it
    /// (`None`: a listing begun after the ask did not show it running with an address).
    AddressWanted {
        name: String,
        asked: Instant,
        reply: oneshot::Sender<Option<Instance>>,
    },
    /// A held VM missing from a listing was checked with a get.
    Checked {
        name: String,
        result: Result<Option<Instance>, CloudError>,
    },
    /// A listing by the manager label ended.
    Listed {
        started: Instant,
        result: Result<Listing, CloudError>,
    },
    /// A call hit the cloud's rate limit: hold new work until then.
    RateLimited { until: Instant },
}

/// How one deletion attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DeleteOutcome {
    /// Compute accepted the delete: a later listing confirms the VM is gone.
    Accepted,
    /// The VM did not exist (404).
    Gone,
    /// The call failed.
    Failed,
}

/// A VM whose dockerd answered.
#[derive(Debug)]
pub(super) struct Ready {
    pub docker: bollard::Docker,
    /// How long each phase of the creation took.
    pub phases: super::metrics::CreatePhases,
}

/// Why a creation failed.
#[derive(Debug)]
pub(super) enum CreateFailure {
    /// The zone had no capacity (no VM was made).
    Stockout(String),
    /// A quota ran out in this scope (no VM was made).
    Quota(QuotaScope, String),
    /// Not ready within `create_timeout`.
    Timeout { may_exist: bool },
    /// Canceled by the pool (shutdown).
    Canceled { may_exist: bool },
    /// Anything else.
    Other { message: String, may_exist: bool },
}

impl CreateFailure {
    /// Whether a VM may exist and must be deleted.
    pub fn may_exist(&self) -> bool {
        match self {
            CreateFailure::Stockout(_) | CreateFailure::Quota(..) => false,
            CreateFailure::Timeout { may_exist }
            | CreateFailure::Canceled { may_exist }
            | CreateFailure::Other { may_exist, .. } => *may_exist,
        }
    }

    /// The cloud's words, for the log.
    pub fn detail(&self) -> &str {
        match self {
            CreateFailure::Stockout(m) | CreateFailure::Quota(_, m) => m,
            CreateFailure::Other { message, .. } => message,
            CreateFailure::Timeout { .. } => "not ready within create_timeout",
            CreateFailure::Canceled { .. } => "canceled",
        }
    }

    /// The zone failure to record for it; None when no zone is to blame (or it was canceled).
    pub fn blame(&self) -> Option<ZoneFailure> {
        match self {
            CreateFailure::Stockout(_) => Some(ZoneFailure::Stockout),
            CreateFailure::Quota(scope, _) => Some(ZoneFailure::Quota(scope.clone())),
            CreateFailure::Timeout { .. } => Some(ZoneFailure::CreateTimeout),
            CreateFailure::Other { .. } | CreateFailure::Canceled { .. } => None,
        }
    }

    /// A closed-set name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            CreateFailure::Stockout(_) => "stockout",
            CreateFailure::Quota(..) => "quota",
            CreateFailure::Timeout { .. } => "timeout",
            CreateFailure::Canceled { .. } => "canceled",
            CreateFailure::Other { .. } => "other",
        }
    }
}

/// What every worker shares.
#[derive(Clone)]
pub(super) struct Ctx {
    pub cloud: Arc<dyn Cloud>,
    pub access: Arc<dyn VmDockerAccess>,
    pub events: mpsc::UnboundedSender<Event>,
}

impl Ctx {
    fn report(&self, e: Event) {
        // The actor is gone only when the pool was aborted: nothing left to tell.
        let _ = self.events.send(e);
    }

    /// Waits out a rate limit, telling the actor first.
    async fn rate_limited(&self, retry_after: Duration) {
        let until = crate::time::deadline_after(retry_after.max(Duration::from_millis(100)));
        self.report(Event::RateLimited { until });
        tokio::time::sleep_until(until).await;
    }
}

/// How to create one VM.
pub(super) struct CreatePlan {
    pub spec: InstanceSpec,
    pub request_id: String,
    /// `create_timeout`: from the insert to dockerd answering.
    pub timeout: Duration,
    pub docker_port: u16,
    pub use_internal_ip: bool,
}

/// Creates one VM and reports [`Event::Created`]. `cancel` is the VM's own token (shutdown).
pub(super) async fn create(ctx: Ctx, plan: CreatePlan, cancel: CancellationToken) {
    let name = plan.spec.name.clone();
    let inserted = AtomicBool::new(false);
    let result = tokio::select! {
        _ = cancel.cancelled() => Err(CreateFailure::Canceled { may_exist: inserted.load(Ordering::SeqCst) }),
        r = create_flow(&ctx, &plan, &inserted) => r,
    };
    ctx.report(Event::Created { name, result });
}

fn other(message: impl Into<String>, may_exist: bool) -> CreateFailure {
    CreateFailure::Other {
        message: message.into(),
        may_exist,
    }
}

/// `create_timeout` runs from the insert on: time spent waiting out Compute's rate limit before
/// it says nothing about the zone, so it neither times the VM out nor counts against the zone.
async fn create_flow(
    ctx: &Ctx,
    plan: &CreatePlan,
    inserted: &AtomicBool,
) -> Result<Ready, CreateFailure> {
    let started = Instant::now();
    let op = insert(ctx, &plan.spec, &plan.request_id, plan.timeout, inserted).await?;
    let insert_took = started.elapsed();
    match tokio::time::timeout(plan.timeout, until_ready(ctx, plan, &op, insert_took)).await {
        Ok(r) => r,
        Err(_) => Err(CreateFailure::Timeout { may_exist: true }),
    }
}

/// From an accepted insert to dockerd answering.
async fn until_ready(
    ctx: &Ctx,
    plan: &CreatePlan,
    op: &OperationRef,
    insert_took: Duration,
) -> Result<Ready, CreateFailure> {
    let spec = &plan.spec;
    let accepted = Instant::now();
    match await_operation(ctx, op).await {
        Ok(()) => {}
        Err(OpEnd::Failed(OperationFailure::Stockout { code, message })) => {
            return Err(CreateFailure::Stockout(format!("{code}: {message}")))
        }
        Err(OpEnd::Failed(OperationFailure::Quota { scope, message })) => {
            return Err(CreateFailure::Quota(scope, message))
        }
        Err(OpEnd::Failed(OperationFailure::Other { code, message })) => {
            return Err(other(
                format!("insert operation failed: {code}: {message}"),
                true,
            ))
        }
        Err(OpEnd::Error(e)) => return Err(other(format!("waiting for insert: {e}"), true)),
    }
    let running = Instant::now();
    let ip = address(ctx, spec, plan.use_internal_ip).await?;
    let addr = SocketAddr::new(ip, plan.docker_port);
    // Readiness: dockerd answers over mTLS. Backoff from 250 ms to 5 s; the caller's timeout
    // (create_timeout) ends the loop.
    let mut delay = Duration::from_millis(250);
    loop {
        match ctx.access.connect(&spec.name, addr).await {
            Ok(docker) => match ctx.access.ping(&spec.name, &docker).await {
                Ok(()) => {
                    let phases = super::metrics::CreatePhases {
                        insert: insert_took,
                        running: running.duration_since(accepted),
                        docker_ready: running.elapsed(),
                    };
                    return Ok(Ready { docker, phases });
                }
                Err(e) => tracing::debug!(vm = %spec.name, error = %e, "dockerd not answering yet"),
            },
            Err(e) => tracing::debug!(vm = %spec.name, error = %e, "cannot connect to dockerd yet"),
        }
        sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// Sends the insert until Compute accepts it; each call is bounded by `timeout` (after which the
/// VM may exist), rate-limit waits between calls are not.
/// `sent` is set before each request goes out: from then on the VM may exist even if the
/// answer never arrives (a shutdown cancels the wait), so a canceled creation deletes it.
async fn insert(
    ctx: &Ctx,
    spec: &InstanceSpec,
    request_id: &str,
    timeout: Duration,
    sent: &AtomicBool,
) -> Result<OperationRef, CreateFailure> {
    let mut transient = 0;
    loop {
        sent.store(true, Ordering::SeqCst);
        let Ok(answer) = tokio::time::timeout(timeout, ctx.cloud.insert(spec, request_id)).await
        else {
            return Err(CreateFailure::Timeout { may_exist: true });
        };
        match answer {
            Ok(op) => return Ok(op),
            Err(CloudError::RateLimited { retry_after, .. }) => ctx.rate_limited(retry_after).await,
            Err(CloudError::QuotaExceeded { scope, message, .. }) => {
                return Err(CreateFailure::Quota(scope, message))
            }
            // Same requestId: a retried insert cannot make a second VM.
            Err(CloudError::Unavailable { message, .. }) if transient + 1 < TRANSIENT_ATTEMPTS => {
                transient += 1;
                tracing::debug!(vm = %spec.name, %message, "insert unavailable, retrying");
                sleep(Duration::from_secs(2u64 << transient)).await;
            }
            Err(e @ CloudError::Conflict { .. }) => {
                return Err(other(format!("insert: {e}"), true))
            }
            Err(e) => return Err(other(format!("insert: {e}"), false)),
        }
    }
}

enum OpEnd {
    Failed(OperationFailure),
    Error(CloudError),
}

/// Loops on `Cloud::wait` until the operation ends.
async fn await_operation(ctx: &Ctx, op: &OperationRef) -> Result<(), OpEnd> {
    let mut transient = 0;
    loop {
        let called = Instant::now();
        match ctx.cloud.wait(op).await {
            Ok(OperationStatus::Done) => return Ok(()),
            Ok(OperationStatus::Failed(f)) => return Err(OpEnd::Failed(f)),
            Ok(OperationStatus::Pending) => {
                transient = 0;
                tokio::time::sleep_until(called + MIN_WAIT_SPACING).await;
            }
            Err(CloudError::RateLimited { retry_after, .. }) => ctx.rate_limited(retry_after).await,
            Err(CloudError::Unavailable { .. }) if transient + 1 < TRANSIENT_ATTEMPTS => {
                transient += 1;
                sleep(Duration::from_secs(2u64 << transient)).await;
            }
            Err(e) => return Err(OpEnd::Error(e)),
        }
    }
}

/// The VM's address: from the pool's next shared listing (no call of its own), or — when a
/// listing begun after the insert finished did not show it — from one get.
async fn address(ctx: &Ctx, spec: &InstanceSpec, internal: bool) -> Result<IpAddr, CreateFailure> {
    let (reply, answer) = oneshot::channel();
    ctx.report(Event::AddressWanted {
        name: spec.name.clone(),
        asked: Instant::now(),
        reply,
    });
    let listed = match answer.await {
        Ok(listed) => listed,
        Err(_) => return Err(CreateFailure::Canceled { may_exist: true }),
    };
    let mut transient = 0;
    loop {
        let found = match &listed {
            Some(i) => Ok(Some(i.clone())),
            None => ctx.cloud.get(&spec.zone, &spec.name).await,
        };
        match found {
            Ok(Some(i)) => {
                let ip = if internal {
                    i.internal_ip
                } else {
                    i.external_ip
                };
                return match (ip, &i.status) {
                    (Some(ip), InstanceStatus::Running) => Ok(ip),
                    (_, status) => Err(other(
                        format!(
                            "VM is {status:?} with no {} IP after its insert finished",
                            if internal { "internal" } else { "external" }
                        ),
                        true,
                    )),
                };
            }
            Ok(None) => return Err(other("VM vanished right after its insert finished", false)),
            Err(CloudError::RateLimited { retry_after, .. }) => ctx.rate_limited(retry_after).await,
            Err(CloudError::Unavailable { .. }) if transient + 1 < TRANSIENT_ATTEMPTS => {
                transient += 1;
                sleep(Duration::from_secs(2u64 << transient)).await;
            }
            Err(e) => return Err(other(format!("get: {e}"), true)),
        }
    }
}

/// One deletion attempt (rate limits waited out, not counted): the delete call only, its
/// operation is not awaited; reports [`Event::Deleted`].
pub(super) async fn delete(ctx: Ctx, zone: String, name: String, cancel: CancellationToken) {
    let attempt = async {
        loop {
            match ctx.cloud.delete(&zone, &name).await {
                Ok(_) => return DeleteOutcome::Accepted,
                Err(CloudError::NotFound { .. }) => return DeleteOutcome::Gone,
                Err(CloudError::RateLimited { retry_after, .. }) => {
                    ctx.rate_limited(retry_after).await
                }
                Err(e) => {
                    tracing::warn!(vm = %name, error = %e, "delete failed");
                    return DeleteOutcome::Failed;
                }
            }
        }
    };
    let outcome = tokio::select! {
        _ = cancel.cancelled() => DeleteOutcome::Failed,
        o = attempt => o,
    };
    ctx.report(Event::Deleted { name, outcome });
}

/// Gets one VM a listing did not show (rate limits waited out); reports [`Event::Checked`].
pub(super) async fn check(ctx: Ctx, zone: String, name: String, cancel: CancellationToken) {
    let run = async {
        loop {
            match ctx.cloud.get(&zone, &name).await {
                Err(CloudError::RateLimited { retry_after, .. }) => {
                    ctx.rate_limited(retry_after).await
                }
                r => return r,
            }
        }
    };
    let result = tokio::select! {
        _ = cancel.cancelled() => return,
        r = run => r,
    };
    ctx.report(Event::Checked { name, result });
}

/// Lists every VM with `labels` across the project; reports [`Event::Listed`].
pub(super) async fn list(ctx: Ctx, labels: BTreeMap<String, String>, cancel: CancellationToken) {
    let started = Instant::now();
    let run = async {
        loop {
            match ctx.cloud.list(&ListScope::Aggregated, &labels).await {
                Err(CloudError::RateLimited { retry_after, .. }) => {
                    ctx.rate_limited(retry_after).await
                }
                r => return r,
            }
        }
    };
    let result = tokio::select! {
        _ = cancel.cancelled() => return,
        r = run => r,
    };
    ctx.report(Event::Listed { started, result });
}
