//! The fake's shared state: instances, operations, request ids, faults and the call log behind one
//! mutex, plus the `Notify` every change is announced on (operation waiters and test helpers
//! wake on it instead of polling), the cancellation token and the tracker of every task.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};

use rand::Rng;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::docker::DockerOps;
use super::faults::Faults;
use super::model::{timestamp, CallRecord, Instance, OpStatus, Operation};
use super::proxy::AddressPool;
use super::{FakeGceOptions, ZoneSpec};

/// The `user` of operations made through the API.
pub(crate) const API_USER: &str = "flotilla-test@flotilla-test.iam.gserviceaccount.com";

/// Everything the server, the lifecycle tasks and the [`super::FakeGce`] handle share. Made once
/// by `FakeGce::start`, dropped when the last task and the handle are gone.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) opts: FakeGceOptions,
    /// A std mutex: every critical section is short and never spans an `.await`.
    state: Mutex<State>,
    /// Announces every state change (`notify_waiters`); waiters re-check under the lock.
    pub(crate) changed: Notify,
    /// Cancelled by shutdown; each instance's `life` token is a child of it.
    pub(crate) cancel: CancellationToken,
    /// Tracks the server, lifecycle, proxy and connection tasks.
    pub(crate) tracker: TaskTracker,
    pub(crate) docker: DockerOps,
    /// Separate from `state` because binding an address awaits.
    pub(crate) addresses: Mutex<AddressPool>,
}

impl Shared {
    /// Fresh state for `opts`.
    pub(crate) fn new(opts: FakeGceOptions) -> Self {
        let docker = DockerOps::new(opts.docker_socket.clone());
        Self {
            opts,
            state: Mutex::new(State::default()),
            changed: Notify::new(),
            cancel: CancellationToken::new(),
            tracker: TaskTracker::new(),
            docker,
            addresses: Mutex::new(AddressPool::new()),
        }
    }

    /// Locks the state (a poisoned lock is taken over: the state stays usable for the test).
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on the state, then wakes everyone waiting for a change.
    pub(crate) fn update<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let r = f(&mut self.lock());
        self.changed.notify_waiters();
        r
    }

    /// The zone named `name`, if configured.
    pub(crate) fn zone(&self, name: &str) -> Option<&ZoneSpec> {
        self.opts.zones.iter().find(|z| z.name == name)
    }

    /// The next loopback address, without binding anything on it.
    pub(crate) fn allocate_address(&self) -> std::net::Ipv4Addr {
        self.addresses
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .allocate()
    }
}

/// Key of a zonal resource: (zone, name).
pub(crate) type Key = (String, String);

/// The mutable part of the fake.
#[derive(Debug, Default)]
pub(crate) struct State {
    pub(crate) instances: BTreeMap<Key, Instance>,
    pub(crate) operations: BTreeMap<Key, Operation>,
    /// (zone, requestId) → operation name, for idempotent retries.
    pub(crate) request_ids: HashMap<Key, String>,
    pub(crate) faults: Faults,
    pub(crate) calls: Vec<CallRecord>,
    seq: u64,
}

impl State {
    /// Adds an operation and returns its name. System events are named `systemevent-…`.
    pub(crate) fn add_operation(
        &mut self,
        zone: &str,
        op_type: &str,
        target: &str,
        target_id: u64,
        user: &str,
        status: OpStatus,
    ) -> String {
        let mut rng = rand::rng();
        let ms = chrono::Utc::now().timestamp_millis();
        let name = if user == "system" {
            format!("systemevent-{ms}-{:013x}", rng.random::<u64>() >> 12)
        } else {
            format!(
                "operation-{ms}-{:013x}-{:08x}-{:08x}",
                rng.random::<u64>() >> 12,
                rng.random::<u32>(),
                rng.random::<u32>()
            )
        };
        self.seq += 1;
        let now = timestamp();
        let done = status == OpStatus::Done;
        let op = Operation {
            seq: self.seq,
            id: new_id(),
            name: name.clone(),
            zone: zone.to_owned(),
            op_type: op_type.to_owned(),
            target: target.to_owned(),
            target_id,
            user: user.to_owned(),
            status,
            status_message: None,
            insert_time: now.clone(),
            start_time: (status != OpStatus::Pending).then(|| now.clone()),
            end_time: done.then_some(now),
            error: None,
        };
        self.operations.insert((zone.to_owned(), name.clone()), op);
        name
    }

    /// The operation `name` in `zone`, mutably.
    pub(crate) fn op_mut(&mut self, zone: &str, name: &str) -> Option<&mut Operation> {
        self.operations.get_mut(&(zone.to_owned(), name.to_owned()))
    }

    /// Marks an operation RUNNING (from PENDING).
    pub(crate) fn start_op(&mut self, zone: &str, name: &str) {
        if let Some(op) = self.op_mut(zone, name) {
            if op.status == OpStatus::Pending {
                op.status = OpStatus::Running;
                op.start_time = Some(timestamp());
            }
        }
    }

    /// Marks an operation DONE, with an error if it failed. A DONE operation is never changed.
    pub(crate) fn finish_op(
        &mut self,
        zone: &str,
        name: &str,
        error: Option<super::model::OpError>,
    ) {
        if let Some(op) = self.op_mut(zone, name) {
            if op.status != OpStatus::Done {
                let now = timestamp();
                op.start_time.get_or_insert_with(|| now.clone());
                op.end_time = Some(now);
                op.status = OpStatus::Done;
                op.error = error;
            }
        }
    }

    /// The instance `name` in `zone` if it is still the one with `id` (names can be reused).
    pub(crate) fn instance_if(&mut self, zone: &str, name: &str, id: u64) -> Option<&mut Instance> {
        self.instances
            .get_mut(&(zone.to_owned(), name.to_owned()))
            .filter(|i| i.id == id)
    }

    /// Removes the instance `name` in `zone` if it is still the one with `id`.
    pub(crate) fn remove_if(&mut self, zone: &str, name: &str, id: u64) -> Option<Instance> {
        let key = (zone.to_owned(), name.to_owned());
        if self.instances.get(&key).is_some_and(|i| i.id == id) {
            self.instances.remove(&key)
        } else {
            None
        }
    }
}

/// A fresh 19-digit resource id.
pub(crate) fn new_id() -> u64 {
    rand::rng().random_range(1_000_000_000_000_000_000..u64::MAX / 2)
}
