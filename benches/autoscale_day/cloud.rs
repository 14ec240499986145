//! The in-process cloud of the autoscaling simulation: a [`Cloud`] whose VMs exist only in a
//! table, boot in a time drawn from a seeded distribution (median 35 s, p90 70 s, a 1 % tail at
//! 200 s; the insert operation is done at 40 % of it, then dockerd answers at its end), behind
//! the same client-side rate limiter the GCE client uses. Every wait is a tokio timer, so a
//! paused runtime runs a day in seconds. Keeps the ledger the report is made from: when each
//! VM was inserted and when its deletion was asked for.

use async_trait::async_trait;
use flotilla::cloud::{
    Cloud, CloudError, Instance, InstanceSpec, InstanceStatus, ListScope, Listing, OperationRef,
    OperationStatus, RateLimiter,
};
use flotilla::fleet::{VmAccessError, VmDockerAccess};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// Median insert → dockerd answering.
const BOOT_MEDIAN_S: f64 = 35.0;
/// Its 90th percentile.
const BOOT_P90_S: f64 = 70.0;
/// The slow tail: this share of VMs takes [`BOOT_TAIL_S`].
const BOOT_TAIL_SHARE: f64 = 0.01;
const BOOT_TAIL_S: f64 = 200.0;
/// The insert operation is done (the VM RUNNING) at this share of the boot.
const INSERT_SHARE: f64 = 0.4;
/// A delete operation takes this long.
const DELETE_TAKES: Duration = Duration::from_secs(10);
/// `zoneOperations.wait` returns Pending after this long.
const WAIT_CAP: Duration = Duration::from_secs(120);

struct Vm {
    zone: String,
    labels: BTreeMap<String, String>,
    running_at: Instant,
    ready_at: Instant,
    ip: IpAddr,
    /// Index into the ledger.
    entry: usize,
}

/// One VM's life for the report: insert, and the moment its deletion was asked for.
#[derive(Debug, Clone)]
pub struct LedgerEntry {
    pub name: String,
    pub inserted: Instant,
    /// When its dockerd answers (insert + the drawn boot time).
    pub ready: Instant,
    pub deleted: Option<Instant>,
}

struct State {
    rng: StdRng,
    vms: BTreeMap<String, Vm>,
    ops: HashMap<String, Instant>,
    next_op: u64,
    next_ip: u32,
    ledger: Vec<LedgerEntry>,
    peak: usize,
}

/// The simulated Compute Engine. Shared by the pool's workers and the connector; a std
/// `Mutex`, never held across an await.
pub struct SimCloud {
    state: Mutex<State>,
    limiter: RateLimiter,
}

/// A standard normal draw (Box–Muller).
fn normal(rng: &mut StdRng) -> f64 {
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// One boot time: log-normal through the median and p90, or the tail.
fn boot_time(rng: &mut StdRng) -> Duration {
    if rng.random::<f64>() < BOOT_TAIL_SHARE {
        return Duration::from_secs_f64(BOOT_TAIL_S);
    }
    let sigma = (BOOT_P90_S / BOOT_MEDIAN_S).ln() / 1.281_551_565_5;
    let secs = BOOT_MEDIAN_S * (sigma * normal(rng)).exp();
    Duration::from_secs_f64(secs.clamp(5.0, BOOT_TAIL_S))
}

impl SimCloud {
    /// A cloud drawing boot times from `seed`, with `per_minute` API calls allowed.
    pub fn new(seed: u64, per_minute: u32) -> SimCloud {
        SimCloud {
            state: Mutex::new(State {
                rng: StdRng::seed_from_u64(seed),
                vms: BTreeMap::new(),
                ops: HashMap::new(),
                next_op: 0,
                next_ip: 1,
                ledger: Vec::new(),
                peak: 0,
            }),
            limiter: RateLimiter::new(per_minute, RateLimiter::default_burst(per_minute)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `name`'s dockerd answers now.
    pub fn is_ready(&self, name: &str) -> bool {
        self.lock()
            .vms
            .get(name)
            .is_some_and(|v| Instant::now() >= v.ready_at)
    }

    /// Every VM's insert and deletion so far.
    pub fn ledger(&self) -> Vec<LedgerEntry> {
        self.lock().ledger.clone()
    }

    /// The most VMs that existed at once.
    pub fn peak(&self) -> usize {
        self.lock().peak
    }

    fn operation(s: &mut State, done_at: Instant, zone: &str) -> OperationRef {
        s.next_op += 1;
        let name = format!("operation-{}", s.next_op);
        s.ops.insert(name.clone(), done_at);
        OperationRef {
            zone: zone.to_string(),
            name,
        }
    }
}

#[async_trait]
impl Cloud for SimCloud {
    async fn insert(
        &self,
        spec: &InstanceSpec,
        _request_id: &str,
    ) -> Result<OperationRef, CloudError> {
        self.limiter.acquire().await;
        let now = Instant::now();
        let mut s = self.lock();
        if s.vms.contains_key(&spec.name) {
            return Err(CloudError::Conflict {
                method: "instances.insert",
                message: format!("{} already exists", spec.name),
            });
        }
        let boot = boot_time(&mut s.rng);
        let running_at = now + boot.mul_f64(INSERT_SHARE);
        s.next_ip += 1;
        let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + s.next_ip));
        let entry = s.ledger.len();
        s.ledger.push(LedgerEntry {
            name: spec.name.clone(),
            inserted: now,
            ready: now + boot,
            deleted: None,
        });
        s.vms.insert(
            spec.name.clone(),
            Vm {
                zone: spec.zone.clone(),
                labels: spec.labels.clone(),
                running_at,
                ready_at: now + boot,
                ip,
                entry,
            },
        );
        s.peak = s.peak.max(s.vms.len());
        Ok(Self::operation(&mut s, running_at, &spec.zone))
    }

    async fn wait(&self, op: &OperationRef) -> Result<OperationStatus, CloudError> {
        self.limiter.acquire().await;
        let done_at = self.lock().ops.get(&op.name).copied();
        let Some(done_at) = done_at else {
            return Err(CloudError::NotFound {
                method: "zoneOperations.wait",
                what: op.name.clone(),
            });
        };
        let until = done_at.min(Instant::now() + WAIT_CAP);
        tokio::time::sleep_until(until).await;
        if Instant::now() >= done_at {
            self.lock().ops.remove(&op.name);
            Ok(OperationStatus::Done)
        } else {
            Ok(OperationStatus::Pending)
        }
    }

    async fn get(&self, _zone: &str, name: &str) -> Result<Option<Instance>, CloudError> {
        self.limiter.acquire().await;
        let s = self.lock();
        Ok(s.vms.get(name).map(|v| instance(name, v)))
    }

    async fn list(
        &self,
        scope: &ListScope,
        labels: &BTreeMap<String, String>,
    ) -> Result<Listing, CloudError> {
        self.limiter.acquire().await;
        let s = self.lock();
        let instances = s
            .vms
            .iter()
            .filter(|(_, v)| match scope {
                ListScope::Zone(z) => &v.zone == z,
                ListScope::Aggregated => true,
            })
            .filter(|(_, v)| labels.iter().all(|(k, val)| v.labels.get(k) == Some(val)))
            .map(|(n, v)| instance(n, v))
            .collect();
        Ok(Listing {
            instances,
            unreachable_zones: Vec::new(),
        })
    }

    async fn delete(&self, zone: &str, name: &str) -> Result<OperationRef, CloudError> {
        self.limiter.acquire().await;
        let now = Instant::now();
        let mut s = self.lock();
        let Some(vm) = s.vms.remove(name) else {
            return Err(CloudError::NotFound {
                method: "instances.delete",
                what: name.to_string(),
            });
        };
        s.ledger[vm.entry].deleted = Some(now);
        Ok(Self::operation(&mut s, now + DELETE_TAKES, zone))
    }
}

fn instance(name: &str, v: &Vm) -> Instance {
    let status = if Instant::now() >= v.running_at {
        InstanceStatus::Running
    } else {
        InstanceStatus::Provisioning
    };
    Instance {
        name: name.to_string(),
        zone: v.zone.clone(),
        status,
        internal_ip: Some(v.ip),
        external_ip: None,
        labels: v.labels.clone(),
    }
}

/// The connector of the simulation: a VM's dockerd "answers" once its boot time has passed.
/// No connection is ever made (the Docker client is built, never used).
pub struct SimConnector {
    pub cloud: Arc<SimCloud>,
    pub docker: bollard::Docker,
}

#[async_trait]
impl VmDockerAccess for SimConnector {
    fn vm_metadata(&self, _vm_name: &str) -> Result<Vec<(String, String)>, VmAccessError> {
        Ok(Vec::new())
    }

    async fn connect(
        &self,
        _vm_name: &str,
        _addr: SocketAddr,
    ) -> Result<bollard::Docker, VmAccessError> {
        Ok(self.docker.clone())
    }

    async fn ping(&self, vm_name: &str, _docker: &bollard::Docker) -> Result<(), VmAccessError> {
        if self.cloud.is_ready(vm_name) {
            Ok(())
        } else {
            Err(VmAccessError::Ping {
                vm: vm_name.to_string(),
                source: "dockerd is not answering yet".into(),
            })
        }
    }
}
