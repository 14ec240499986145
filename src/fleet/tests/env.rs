//! The test bench of a pool: a fake cloud, a fake connector, the pool, and waits on
//! conditions in virtual time.

use super::fake_cloud::{FakeCloud, FakeConnector};
use super::settings;
use crate::fleet::{start, FleetHandle, FleetSettings, FleetSnapshot, RunnerRegistry};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{sleep, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub struct Env {
    pub cloud: FakeCloud,
    pub conn: FakeConnector,
    pub handle: FleetHandle,
    pub tracker: TaskTracker,
    pub cancel: CancellationToken,
    pub s: FleetSettings,
}

impl Env {
    pub fn start(s: FleetSettings, cloud: FakeCloud) -> Env {
        Env::start_in(s, cloud, RunnerRegistry::new())
    }

    /// A pool sharing `registry` (several runners of one process).
    pub fn start_in(s: FleetSettings, cloud: FakeCloud, registry: RunnerRegistry) -> Env {
        let conn = FakeConnector::new(&cloud);
        let tracker = TaskTracker::new();
        let cancel = CancellationToken::new();
        let handle = start(
            s.clone(),
            Arc::new(cloud.clone()),
            Arc::new(conn.clone()),
            registry,
            &tracker,
            cancel.clone(),
        )
        .expect("pool starts");
        Env {
            cloud,
            conn,
            handle,
            tracker,
            cancel,
            s,
        }
    }

    /// Waits (virtual time) until `cond` holds on a snapshot, failing after `limit`.
    pub async fn until(
        &self,
        what: &str,
        limit: Duration,
        cond: impl Fn(&FleetSnapshot) -> bool,
    ) -> FleetSnapshot {
        let deadline = Instant::now() + limit;
        loop {
            let snap = self.handle.snapshot().await;
            if cond(&snap) {
                return snap;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {snap:#?}"
            );
            sleep(Duration::from_millis(500)).await;
        }
    }

    /// Waits until `cond` holds on the fake cloud.
    pub async fn until_cloud(
        &self,
        what: &str,
        limit: Duration,
        cond: impl Fn(&FakeCloud) -> bool,
    ) {
        let deadline = Instant::now() + limit;
        while !cond(&self.cloud) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {:?}",
                self.cloud.names()
            );
            sleep(Duration::from_millis(500)).await;
        }
    }

    pub async fn stop(self) {
        self.cancel.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

pub fn with(f: impl FnOnce(&mut FleetSettings)) -> FleetSettings {
    let mut s = settings();
    f(&mut s);
    s
}

pub const MIN: Duration = Duration::from_secs(60);
