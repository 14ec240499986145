//! How instances come and go: insert (operation PENDING→RUNNING→DONE, instance
//! PROVISIONING→STAGING→RUNNING over the zone's boot latency, addresses and Docker proxy at
//! RUNNING, or an injected failure), delete (STOPPING, containers killed, gone), preemption (a
//! system operation, then TERMINATED or gone), vanishing, and foreign instances. Every task is
//! spawned on the shared tracker and ends on the instance's `life` token or on shutdown.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;

use super::error::ApiError;
use super::faults::InsertFate;
use super::model::{timestamp, Instance, OpError, OpStatus, Status};
use super::proxy;
use super::state::{new_id, Shared, API_USER};
use super::validate::{self, InsertSpec};
use super::ZoneSpec;

/// Why a Rust-API or admin request on the fake could not be carried out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FakeGceError {
    /// The zone is not one of the fake's zones.
    #[error("unknown zone {0:?}")]
    UnknownZone(String),
    /// No such instance.
    #[error("no instance {name:?} in zone {zone:?}")]
    NotFound {
        /// Zone name.
        zone: String,
        /// Instance name.
        name: String,
    },
    /// The name is taken in that zone.
    #[error("instance {name:?} already exists in zone {zone:?}")]
    AlreadyExists {
        /// Zone name.
        zone: String,
        /// Instance name.
        name: String,
    },
    /// The instance is not RUNNING (preemption needs a running VM).
    #[error("instance {name:?} is {status}, not RUNNING")]
    NotRunning {
        /// Instance name.
        name: String,
        /// Its status.
        status: String,
    },
    /// The name or labels fail Compute's validation.
    #[error("invalid instance: {0}")]
    Invalid(String),
}

fn resource(project: &str, zone: &str, name: &str) -> String {
    format!("projects/{project}/zones/{zone}/instances/{name}")
}

/// `instances.insert`: the operation JSON, or the synchronous error.
pub(crate) fn insert(
    shared: &Arc<Shared>,
    zone: &ZoneSpec,
    request_id: Option<String>,
    spec: InsertSpec,
) -> Result<Value, ApiError> {
    let project = &shared.opts.project;
    let mut st = shared.lock();
    if let Some(rid) = &request_id {
        let existing = st.request_ids.get(&(zone.name.clone(), rid.clone()));
        if let Some(op) = existing.and_then(|n| st.operations.get(&(zone.name.clone(), n.clone())))
        {
            return Ok(op.to_json(project));
        }
    }
    if let Some(err) = st.faults.sync_quota(&zone.region) {
        return Err(err);
    }
    let key = (zone.name.clone(), spec.name.clone());
    if st.instances.contains_key(&key) {
        return Err(ApiError::already_exists(&resource(
            project, &zone.name, &spec.name,
        )));
    }
    let fate = st.faults.insert_fate(&zone.name, &zone.region);
    let id = new_id();
    let op = st.add_operation(
        &zone.name,
        "insert",
        &spec.name,
        id,
        API_USER,
        OpStatus::Pending,
    );
    if let Some(rid) = request_id {
        st.request_ids.insert((zone.name.clone(), rid), op.clone());
    }
    let life = shared.cancel.child_token();
    let boot = Boot {
        zone: zone.clone(),
        name: spec.name.clone(),
        id,
        op: op.clone(),
        fate,
        metadata: spec.metadata.clone(),
        wants_nat: spec.wants_nat,
        life: life.clone(),
    };
    st.instances.insert(
        key,
        new_instance(id, &zone.name, spec, Some(op.clone()), life),
    );
    let reply = st
        .operations
        .get(&(zone.name.clone(), op))
        .map(|o| o.to_json(project));
    drop(st);
    shared.changed.notify_waiters();
    shared.tracker.spawn(boot.run(shared.clone()));
    reply.ok_or_else(ApiError::unavailable)
}

fn new_instance(
    id: u64,
    zone: &str,
    spec: InsertSpec,
    pending_insert: Option<String>,
    life: CancellationToken,
) -> Instance {
    Instance {
        id,
        zone: zone.to_owned(),
        spec,
        status: Status::Provisioning,
        status_message: None,
        network_ip: None,
        nat_ip: None,
        created: timestamp(),
        last_start: None,
        last_stop: None,
        pending_insert,
        life,
    }
}

/// The boot of one inserted instance, run as a tracked task.
struct Boot {
    zone: ZoneSpec,
    name: String,
    id: u64,
    op: String,
    fate: InsertFate,
    metadata: Vec<(String, String)>,
    wants_nat: bool,
    life: CancellationToken,
}

/// Sleeps until `deadline`; false if `life` ended first.
async fn sleep_or_end(life: &CancellationToken, deadline: Instant) -> bool {
    tokio::select! {
        _ = life.cancelled() => false,
        _ = sleep_until(deadline) => true,
    }
}

impl Boot {
    async fn run(self, shared: Arc<Shared>) {
        let start = Instant::now();
        let latency = self.zone.boot_latency;
        let zone = self.zone.name.as_str();
        shared.update(|st| st.start_op(zone, &self.op));
        if !sleep_or_end(&self.life, start + latency / 2).await {
            return;
        }
        let project = shared.opts.project.as_str();
        let error = match &self.fate {
            InsertFate::Stockout { with_details } => {
                Some(OpError::stockout(project, zone, *with_details))
            }
            InsertFate::Quota(q) => Some(OpError::quota(q)),
            InsertFate::Boot | InsertFate::Hang => None,
        };
        if let Some(error) = error {
            shared.update(|st| {
                if st.remove_if(zone, &self.name, self.id).is_some() {
                    st.finish_op(zone, &self.op, Some(error));
                }
            });
            return;
        }
        shared.update(|st| {
            if let Some(i) = st.instance_if(zone, &self.name, self.id) {
                i.status = Status::Staging;
            }
        });
        if matches!(self.fate, InsertFate::Hang) {
            // The VM never comes up; only a delete or shutdown ends this.
            self.life.cancelled().await;
            return;
        }
        if !sleep_or_end(&self.life, start + latency).await {
            return;
        }
        let net = bring_up(&shared, &self.name, &self.metadata, self.wants_nat).await;
        let up = shared.update(|st| {
            if self.life.is_cancelled() {
                return false;
            }
            let Some(i) = st.instance_if(zone, &self.name, self.id) else {
                return false;
            };
            i.network_ip = Some(net.network_ip);
            i.nat_ip = net.nat_ip;
            i.status = Status::Running;
            i.last_start = Some(timestamp());
            i.pending_insert = None;
            st.finish_op(zone, &self.op, None);
            true
        });
        let proxied = net.tls.is_some();
        if let (true, Some(config)) = (up, net.tls) {
            for listener in net.listeners {
                let socket = shared.opts.docker_socket.clone();
                proxy::spawn(
                    &shared.tracker,
                    self.life.clone(),
                    listener,
                    config.clone(),
                    socket,
                );
            }
        }
        // The startup script's last step, once dockerd serves: the readiness marker.
        let marker = self
            .metadata
            .iter()
            .find(|(k, _)| k == proxy::META_READY_VOLUME)
            .map(|(_, v)| v.clone());
        if let (true, true, Some(volume)) = (up, proxied, marker) {
            if shared.lock().faults.startup_completes(zone) {
                shared.docker.create_ready_marker(&self.name, &volume).await;
            }
        }
    }
}

/// A booted VM's network: its addresses and, when its metadata holds TLS material, the bound
/// proxy listeners.
struct Network {
    network_ip: Ipv4Addr,
    nat_ip: Option<Ipv4Addr>,
    tls: Option<Arc<rustls::ServerConfig>>,
    listeners: Vec<TcpListener>,
}

async fn bring_up(
    shared: &Shared,
    name: &str,
    metadata: &[(String, String)],
    wants_nat: bool,
) -> Network {
    let tls = proxy::server_config(metadata).unwrap_or_else(|e| {
        tracing::warn!(vm = name, error = %e, "fake gce: no docker proxy for this instance");
        None
    });
    let mut listeners = Vec::new();
    let proxied = tls.is_some();
    let network_ip = address(shared, name, proxied, &mut listeners).await;
    let nat_ip = if wants_nat {
        Some(address(shared, name, proxied, &mut listeners).await)
    } else {
        None
    };
    Network {
        network_ip,
        nat_ip,
        tls,
        listeners,
    }
}

/// One address for a VM; with `proxied`, bound on the Docker port (listener pushed to `out`).
async fn address(
    shared: &Shared,
    name: &str,
    proxied: bool,
    out: &mut Vec<TcpListener>,
) -> Ipv4Addr {
    if proxied {
        match proxy::bind(&shared.addresses, shared.opts.docker_port).await {
            Ok((ip, l)) => {
                out.push(l);
                return ip;
            }
            Err(e) => tracing::warn!(vm = name, error = %e, "fake gce: docker proxy bind failed"),
        }
    }
    shared.allocate_address()
}

/// `instances.delete`: the operation JSON, or 404.
pub(crate) fn delete(
    shared: &Arc<Shared>,
    zone: &ZoneSpec,
    name: &str,
    request_id: Option<String>,
) -> Result<Value, ApiError> {
    let project = &shared.opts.project;
    let z = zone.name.as_str();
    let mut st = shared.lock();
    if let Some(rid) = &request_id {
        let existing = st.request_ids.get(&(z.to_owned(), rid.clone()));
        if let Some(op) = existing.and_then(|n| st.operations.get(&(z.to_owned(), n.clone()))) {
            return Ok(op.to_json(project));
        }
    }
    let Some(inst) = st.instances.get_mut(&(z.to_owned(), name.to_owned())) else {
        return Err(ApiError::not_found(&resource(project, z, name)));
    };
    let id = inst.id;
    inst.status = Status::Stopping;
    inst.life.cancel();
    if let Some(pending) = inst.pending_insert.take() {
        st.finish_op(
            z,
            &pending,
            Some(OpError::deleted_while_creating(&resource(project, z, name))),
        );
    }
    let op = st.add_operation(z, "delete", name, id, API_USER, OpStatus::Pending);
    if let Some(rid) = request_id {
        st.request_ids.insert((z.to_owned(), rid), op.clone());
    }
    let reply = st
        .operations
        .get(&(z.to_owned(), op.clone()))
        .map(|o| o.to_json(project));
    drop(st);
    shared.changed.notify_waiters();
    let (shared2, zone, name) = (shared.clone(), z.to_owned(), name.to_owned());
    shared.tracker.spawn(async move {
        shared2.update(|st| st.start_op(&zone, &op));
        tokio::select! {
            _ = shared2.cancel.cancelled() => return,
            _ = shared2.docker.kill_vm_containers(&name) => {}
        }
        let deadline = Instant::now() + shared2.opts.delete_latency;
        if !sleep_or_end(&shared2.cancel, deadline).await {
            return;
        }
        shared2.update(|st| {
            let gone = st.remove_if(&zone, &name, id).is_some();
            tracing::debug!(vm = %name, gone, "fake gce: instance deleted");
            st.finish_op(&zone, &op, None);
        });
    });
    reply.ok_or_else(ApiError::unavailable)
}

/// Spot preemption of a RUNNING instance: a DONE `compute.instances.preempted` system operation
/// at once; the proxy stops; after the containers are killed the instance is deleted
/// (`instanceTerminationAction: DELETE`) or TERMINATED.
pub(crate) fn preempt(shared: &Arc<Shared>, zone: &str, name: &str) -> Result<(), FakeGceError> {
    let mut st = shared.lock();
    let Some(inst) = st.instances.get_mut(&(zone.to_owned(), name.to_owned())) else {
        return Err(FakeGceError::NotFound {
            zone: zone.to_owned(),
            name: name.to_owned(),
        });
    };
    if inst.status != Status::Running {
        let status = inst.status.as_str().to_owned();
        return Err(FakeGceError::NotRunning {
            name: name.to_owned(),
            status,
        });
    }
    let id = inst.id;
    let deletes = inst.spec.scheduling.deletes_on_termination();
    inst.status = Status::Stopping;
    inst.life.cancel();
    let op = st.add_operation(
        zone,
        "compute.instances.preempted",
        name,
        id,
        "system",
        OpStatus::Done,
    );
    if let Some(o) = st.op_mut(zone, &op) {
        o.status_message = Some("Instance was preempted.".to_owned());
    }
    drop(st);
    shared.changed.notify_waiters();
    let (shared2, zone, name) = (shared.clone(), zone.to_owned(), name.to_owned());
    shared.tracker.spawn(async move {
        tokio::select! {
            _ = shared2.cancel.cancelled() => return,
            _ = shared2.docker.kill_vm_containers(&name) => {}
        }
        shared2.update(|st| {
            if deletes {
                st.remove_if(&zone, &name, id);
            } else if let Some(i) = st.instance_if(&zone, &name, id) {
                i.status = Status::Terminated;
                i.nat_ip = None;
                i.last_stop = Some(timestamp());
            }
        });
    });
    Ok(())
}

/// The instance disappears without an operation (someone else deleted it).
pub(crate) fn vanish(shared: &Arc<Shared>, zone: &str, name: &str) -> Result<(), FakeGceError> {
    let project = shared.opts.project.clone();
    let removed = shared.update(|st| {
        let inst = st.instances.remove(&(zone.to_owned(), name.to_owned()))?;
        inst.life.cancel();
        if let Some(pending) = &inst.pending_insert {
            let err = OpError::deleted_while_creating(&resource(&project, zone, name));
            st.finish_op(zone, pending, Some(err));
        }
        Some(inst)
    });
    if removed.is_none() {
        return Err(FakeGceError::NotFound {
            zone: zone.to_owned(),
            name: name.to_owned(),
        });
    }
    let (shared2, name) = (shared.clone(), name.to_owned());
    shared.tracker.spawn(async move {
        tokio::select! {
            _ = shared2.cancel.cancelled() => {}
            _ = shared2.docker.kill_vm_containers(&name) => {}
        }
    });
    Ok(())
}

/// A RUNNING instance that no insert made (another manager's VM, a leftover): it has an address
/// but no Docker proxy.
pub(crate) fn create_foreign(
    shared: &Arc<Shared>,
    zone: &str,
    name: &str,
    labels: BTreeMap<String, String>,
) -> Result<(), FakeGceError> {
    if shared.zone(zone).is_none() {
        return Err(FakeGceError::UnknownZone(zone.to_owned()));
    }
    let body = json!({
        "name": name,
        "machineType": format!("zones/{zone}/machineTypes/e2-small"),
        "labels": labels,
        "networkInterfaces": [{"network": "global/networks/default"}],
    });
    let spec = validate::insert_spec(&shared.opts.project, zone, body)
        .map_err(|e| FakeGceError::Invalid(format!("{e:?}")))?;
    let ip = shared.allocate_address();
    shared.update(|st| {
        let key = (zone.to_owned(), name.to_owned());
        if st.instances.contains_key(&key) {
            return Err(FakeGceError::AlreadyExists {
                zone: zone.to_owned(),
                name: name.to_owned(),
            });
        }
        let mut inst = new_instance(new_id(), zone, spec, None, shared.cancel.child_token());
        inst.status = Status::Running;
        inst.network_ip = Some(ip);
        inst.last_start = Some(timestamp());
        st.instances.insert(key, inst);
        Ok(())
    })
}
