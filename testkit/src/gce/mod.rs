//! A faithful fake of Google Compute Engine's v1 REST API for Flotilla's tests: instances
//! (insert, get, list, aggregated list, delete) and zone operations (get, wait, list) on
//! `http://127.0.0.1:PORT`, with boot latency, Compute's validation and error shapes, injectable
//! faults, and — for every RUNNING instance — a loopback address with a mutual-TLS proxy to the
//! local Docker engine, so a manager can drive "VMs" exactly as it drives real ones. This file
//! holds the public handle; see `reference/gce-api.md` §6 for what "faithful" means here.

mod docker;
mod error;
mod faults;
mod fields;
mod filter;
mod lifecycle;
mod model;
mod proxy;
mod routes;
mod state;
mod validate;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::time::{sleep_until, Instant};

pub use docker::VM_LABEL;
pub use faults::GceFault;
pub use lifecycle::FakeGceError;
pub use model::{CallRecord, InstanceView, Scheduling};
pub use proxy::{META_CA, META_CERT, META_KEY};

use state::Shared;

/// One zone of the fake and how long its VMs take from insert to RUNNING.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneSpec {
    /// Zone name, e.g. `us-central1-a`.
    pub name: String,
    /// Region the zone belongs to, e.g. `us-central1` (quota faults are per region).
    pub region: String,
    /// Insert → RUNNING (the instance is STAGING from half of it on).
    pub boot_latency: Duration,
}

impl ZoneSpec {
    /// A zone whose region is its name without the last `-x` part.
    pub fn new(name: &str, boot_latency: Duration) -> Self {
        let region = name.rsplit_once('-').map(|(r, _)| r).unwrap_or(name);
        Self {
            name: name.to_owned(),
            region: region.to_owned(),
            boot_latency,
        }
    }
}

/// How to start a [`FakeGce`]. `Default` gives project `flotilla-test`, zones `us-central1-a`,
/// `us-central1-b` and `europe-west1-b` with 100 ms boot latency, Docker port 2376, a 120 s wait
/// cap and `/var/run/docker.sock`.
#[derive(Debug, Clone)]
pub struct FakeGceOptions {
    /// The only project the fake knows; others get 404.
    pub project: String,
    /// The zones the fake knows; others get 400 "Unknown zone".
    pub zones: Vec<ZoneSpec>,
    /// Port of each VM's Docker TLS proxy on its loopback address.
    pub docker_port: u16,
    /// How long `zoneOperations.wait` blocks at most (Compute: about 2 minutes).
    pub wait_cap: Duration,
    /// The local Docker engine the proxies forward to and containers are killed on.
    pub docker_socket: PathBuf,
    /// How long a deleted instance stays STOPPING after its containers are killed.
    pub delete_latency: Duration,
}

impl Default for FakeGceOptions {
    fn default() -> Self {
        let boot = Duration::from_millis(100);
        Self {
            project: "flotilla-test".to_owned(),
            zones: vec![
                ZoneSpec::new("us-central1-a", boot),
                ZoneSpec::new("us-central1-b", boot),
                ZoneSpec::new("europe-west1-b", boot),
            ],
            docker_port: 2376,
            wait_cap: Duration::from_secs(120),
            docker_socket: PathBuf::from("/var/run/docker.sock"),
            delete_latency: Duration::from_millis(50),
        }
    }
}

/// A running fake Compute Engine. Made by [`FakeGce::start`]; [`FakeGce::shutdown`] stops every
/// task and removes the containers of the instances still alive (dropping the handle only
/// cancels the tasks).
#[derive(Debug)]
pub struct FakeGce {
    shared: Arc<Shared>,
    addr: SocketAddr,
}

impl FakeGce {
    /// Starts the API server on `127.0.0.1:0`.
    pub async fn start(opts: FakeGceOptions) -> anyhow::Result<FakeGce> {
        anyhow::ensure!(
            !opts.zones.is_empty(),
            "the fake gce needs at least one zone"
        );
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .context("binding the fake gce api on 127.0.0.1")?;
        let addr = listener
            .local_addr()
            .context("reading the fake gce address")?;
        let shared = Arc::new(Shared::new(opts));
        let app = routes::router(shared.clone());
        let stop = shared.cancel.clone();
        shared.tracker.spawn(async move {
            let server = axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned());
            if let Err(e) = server.await {
                tracing::error!(error = %e, "fake gce: api server failed");
            }
        });
        tracing::info!(%addr, "fake gce: listening");
        Ok(FakeGce { shared, addr })
    }

    /// `http://127.0.0.1:PORT`, for `Instances::builder().with_endpoint(..)`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The project the fake serves.
    pub fn project(&self) -> &str {
        &self.shared.opts.project
    }

    /// Every instance, sorted by zone then name.
    pub fn instances(&self) -> Vec<InstanceView> {
        self.shared
            .lock()
            .instances
            .values()
            .map(|i| i.view())
            .collect()
    }

    /// How many instances are in each status.
    pub fn count_by_status(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for i in self.shared.lock().instances.values() {
            *out.entry(i.status.as_str().to_owned()).or_default() += 1;
        }
        out
    }

    /// Every API call answered so far, in order (admin calls excluded).
    pub fn calls(&self) -> Vec<CallRecord> {
        self.shared.lock().calls.clone()
    }

    /// Calls per Compute method (`instances.insert`, `zoneOperations.wait`, ...).
    pub fn call_counts(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for c in self.shared.lock().calls.iter() {
            *out.entry(c.api.clone()).or_default() += 1;
        }
        out
    }

    /// Injects a fault; a fault naming a missing instance or zone is logged and ignored (use
    /// [`FakeGce::try_inject`] to see that).
    pub fn inject(&self, fault: GceFault) {
        if let Err(e) = self.try_inject(fault) {
            tracing::warn!(error = %e, "fake gce: fault not applied");
        }
    }

    /// Injects a fault, reporting a missing instance or zone.
    pub fn try_inject(&self, fault: GceFault) -> Result<(), FakeGceError> {
        apply_fault(&self.shared, fault)
    }

    /// Adds a RUNNING instance no insert made (another manager's VM, a leftover), with
    /// `labels`; it has an address but no Docker proxy.
    pub fn create_foreign_instance(
        &self,
        zone: &str,
        name: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<(), FakeGceError> {
        lifecycle::create_foreign(&self.shared, zone, name, labels)
    }

    /// Waits until `pred` holds for the instances, or `timeout` passes; returns whether it held.
    /// Wakes on state changes, not on a timer.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        mut pred: impl FnMut(&[InstanceView]) -> bool,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let changed = self.shared.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if pred(&self.instances()) {
                return true;
            }
            tokio::select! {
                _ = changed => {}
                _ = sleep_until(deadline) => return pred(&self.instances()),
            }
        }
    }

    /// Stops the server, every proxy and lifecycle task, and removes the Docker containers of the
    /// instances still alive.
    pub async fn shutdown(self) {
        let names: Vec<String> = self
            .shared
            .lock()
            .instances
            .values()
            .map(|i| i.spec.name.clone())
            .collect();
        self.shared.cancel.cancel();
        self.shared.tracker.close();
        self.shared.tracker.wait().await;
        for name in names {
            self.shared.docker.kill_vm_containers(&name).await;
        }
    }
}

impl Drop for FakeGce {
    fn drop(&mut self) {
        self.shared.cancel.cancel();
    }
}

/// Applies a fault to the shared state (Rust API and `POST /admin/faults`).
fn apply_fault(shared: &Arc<Shared>, fault: GceFault) -> Result<(), FakeGceError> {
    let known = |zone: &str| match shared.zone(zone) {
        Some(_) => Ok(()),
        None => Err(FakeGceError::UnknownZone(zone.to_owned())),
    };
    match &fault {
        GceFault::Preempt { zone, name } => return lifecycle::preempt(shared, zone, name),
        GceFault::Vanish { zone, name } => return lifecycle::vanish(shared, zone, name),
        GceFault::Stockout { zone, .. }
        | GceFault::ZoneUnreachable { zone }
        | GceFault::NeverRunning { zone }
        | GceFault::StartupScriptFails { zone } => known(zone)?,
        _ => {}
    }
    shared.update(|st| st.faults.add(&fault));
    Ok(())
}
