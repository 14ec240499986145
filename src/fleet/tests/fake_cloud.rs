//! An in-memory [`Cloud`] for pool tests: VMs boot after a latency in tokio time, operations
//! block in `wait` until done (as `zoneOperations.wait`), and faults are injectable (stockout
//! and quota per zone, rate limits, unreachable zones, vanishing or terminated VMs). A deleted
//! VM goes when its operation is done, awaited or not. It counts
//! calls and checks, on every insert, how many VMs of a runner exist at once.

use crate::cloud::{
    Cloud, CloudError, Instance, InstanceSpec, InstanceStatus, ListScope, Listing,
    OperationFailure, OperationRef, OperationStatus, QuotaScope,
};
use crate::fleet::{VmAccessError, VmDockerAccess};
use async_trait::async_trait;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// How long one `wait` call blocks at most before answering `Pending`.
pub const WAIT_BLOCK: Duration = Duration::from_secs(120);

#[derive(Debug, Clone)]
struct Vm {
    inst: Instance,
    running_at: Instant,
    spec_metadata: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
enum OpKind {
    Insert { outcome: Option<OperationFailure> },
    Delete { name: String },
}

#[derive(Debug, Clone)]
struct Op {
    kind: OpKind,
    done_at: Instant,
}

/// Fault switches and counters; lock, change, unlock.
#[derive(Debug, Default)]
pub struct State {
    vms: BTreeMap<String, Vm>,
    ops: BTreeMap<String, Op>,
    requests: BTreeMap<String, String>,
    next: u64,
    /// Zones whose inserts fail with a stockout in the operation.
    pub stockout: BTreeSet<String>,
    /// Zones whose inserts fail with QUOTA_EXCEEDED in this scope.
    pub quota: BTreeMap<String, QuotaScope>,
    /// The next this many calls (any method) answer `RateLimited`.
    pub rate_limited_calls: u32,
    /// `retry_after` of those.
    pub retry_after: Duration,
    /// Zones an aggregated list cannot reach.
    pub unreachable: BTreeSet<String>,
    /// VMs the next list leaves out (once each), as a listing that missed them.
    pub omit_from_next_list: BTreeSet<String>,
    /// Boot latency (insert to RUNNING).
    pub boot: Duration,
    /// Deletion latency.
    pub delete_latency: Duration,
    /// How long an insert call takes to answer once Compute has taken the request (the VM
    /// exists meanwhile, answer or not, as when a client stops waiting mid-request).
    pub insert_latency: Duration,
    /// The next this many delete calls fail with `Unavailable`.
    pub failing_deletes: u32,
    /// Calls per method.
    pub calls: BTreeMap<&'static str, u32>,
    /// Insert calls per zone.
    pub inserts_per_zone: BTreeMap<String, u32>,
    /// (method, name or zone, time) of every call, in order.
    pub log: Vec<(&'static str, String, Instant)>,
    /// The most VMs of one runner label that existed at once.
    pub peak_per_runner: BTreeMap<String, usize>,
}

/// The fake cloud; clone to share.
#[derive(Clone, Default)]
pub struct FakeCloud {
    pub state: Arc<Mutex<State>>,
}

impl FakeCloud {
    pub fn new() -> FakeCloud {
        let c = FakeCloud::default();
        {
            let mut s = c.lock();
            s.boot = Duration::from_secs(20);
            s.delete_latency = Duration::from_secs(10);
            s.retry_after = Duration::from_secs(60);
        }
        c
    }

    /// The state, with deletions whose operation is done carried out (as Compute does, whether
    /// or not anyone waits on the operation).
    pub fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        let mut s = self.state.lock().unwrap();
        let now = Instant::now();
        let done: Vec<(String, String)> = s
            .ops
            .iter()
            .filter(|(_, o)| o.done_at <= now)
            .filter_map(|(op, o)| match &o.kind {
                OpKind::Delete { name } => Some((op.clone(), name.clone())),
                OpKind::Insert { .. } => None,
            })
            .collect();
        for (op, name) in done {
            s.ops.remove(&op);
            s.vms.remove(&name);
        }
        s
    }

    fn call(&self, method: &'static str, what: &str) -> Result<(), CloudError> {
        let mut s = self.lock();
        *s.calls.entry(method).or_default() += 1;
        s.log.push((method, what.to_string(), Instant::now()));
        if s.rate_limited_calls > 0 {
            s.rate_limited_calls -= 1;
            return Err(CloudError::RateLimited {
                method,
                retry_after: s.retry_after,
            });
        }
        Ok(())
    }

    pub fn calls(&self, method: &str) -> u32 {
        self.lock().calls.get(method).copied().unwrap_or(0)
    }

    /// The insert as Compute takes it (the answer waits [`State::insert_latency`]).
    fn take_insert(
        &self,
        spec: &InstanceSpec,
        request_id: &str,
    ) -> Result<OperationRef, CloudError> {
        self.call("insert", &spec.zone)?;
        let now = Instant::now();
        let mut s = self.lock();
        *s.inserts_per_zone.entry(spec.zone.clone()).or_default() += 1;
        if let Some(op) = s.requests.get(request_id) {
            return Ok(OperationRef {
                zone: spec.zone.clone(),
                name: op.clone(),
            });
        }
        if s.vms.contains_key(&spec.name) {
            return Err(CloudError::Conflict {
                method: "insert",
                message: format!("{} already exists", spec.name),
            });
        }
        s.next += 1;
        let op_name = format!("op-{}", s.next);
        s.requests.insert(request_id.to_string(), op_name.clone());
        let outcome = if s.stockout.contains(&spec.zone) {
            Some(OperationFailure::Stockout {
                code: "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS".into(),
                message: format!("no capacity in {}", spec.zone),
            })
        } else {
            s.quota
                .get(&spec.zone)
                .map(|scope| OperationFailure::Quota {
                    scope: scope.clone(),
                    message: "QUOTA_EXCEEDED CPUS".into(),
                })
        };
        let done_at = if outcome.is_some() {
            now + Duration::from_secs(2)
        } else {
            let n = s.next;
            let ip = IpAddr::V4(Ipv4Addr::new(10, 0, (n / 250) as u8, (n % 250) as u8 + 1));
            let running_at = now + s.boot;
            s.vms.insert(
                spec.name.clone(),
                Vm {
                    inst: Instance {
                        name: spec.name.clone(),
                        zone: spec.zone.clone(),
                        status: InstanceStatus::Running,
                        internal_ip: Some(ip),
                        external_ip: Some(ip),
                        labels: spec.labels.clone(),
                    },
                    running_at,
                    spec_metadata: spec.metadata.clone(),
                },
            );
            if let Some(runner) = spec.labels.get(crate::fleet::RUNNER_LABEL) {
                let n = s
                    .vms
                    .values()
                    .filter(|v| v.inst.labels.get(crate::fleet::RUNNER_LABEL) == Some(runner))
                    .count();
                let peak = s.peak_per_runner.entry(runner.clone()).or_default();
                *peak = (*peak).max(n);
            }
            running_at
        };
        s.ops.insert(
            op_name.clone(),
            Op {
                kind: OpKind::Insert { outcome },
                done_at,
            },
        );
        Ok(OperationRef {
            zone: spec.zone.clone(),
            name: op_name,
        })
    }

    /// Names of existing VMs (any status).
    pub fn names(&self) -> Vec<String> {
        self.lock().vms.keys().cloned().collect()
    }

    pub fn exists(&self, name: &str) -> bool {
        self.lock().vms.contains_key(name)
    }

    /// Puts a VM there directly (leftovers, other managers).
    pub fn add(&self, name: &str, zone: &str, labels: &[(&str, &str)]) {
        let inst = Instance {
            name: name.into(),
            zone: zone.into(),
            status: InstanceStatus::Running,
            internal_ip: Some(IpAddr::V4(Ipv4Addr::new(10, 9, 9, 9))),
            external_ip: None,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        self.lock().vms.insert(
            name.into(),
            Vm {
                inst,
                running_at: Instant::now(),
                spec_metadata: vec![],
            },
        );
    }

    /// The VM disappears without a trace (as a spot VM deleted on preemption).
    pub fn vanish(&self, name: &str) {
        self.lock().vms.remove(name);
    }

    /// The VM is stopped behind the manager's back.
    pub fn terminate(&self, name: &str) {
        if let Some(vm) = self.lock().vms.get_mut(name) {
            vm.inst.status = InstanceStatus::Terminated;
        }
    }

    /// Whether VM `name` is RUNNING now (the fake connector's readiness).
    pub fn running(&self, name: &str) -> bool {
        let now = Instant::now();
        self.lock()
            .vms
            .get(name)
            .is_some_and(|v| v.running_at <= now && v.inst.status == InstanceStatus::Running)
    }

    /// Metadata of VM `name` as inserted.
    pub fn metadata(&self, name: &str) -> Vec<(String, String)> {
        self.lock()
            .vms
            .get(name)
            .map(|v| v.spec_metadata.clone())
            .unwrap_or_default()
    }

    fn status_at(vm: &Vm, now: Instant) -> InstanceStatus {
        if vm.inst.status == InstanceStatus::Running && vm.running_at > now {
            InstanceStatus::Provisioning
        } else {
            vm.inst.status.clone()
        }
    }
}

#[async_trait]
impl Cloud for FakeCloud {
    async fn insert(
        &self,
        spec: &InstanceSpec,
        request_id: &str,
    ) -> Result<OperationRef, CloudError> {
        let answer = self.take_insert(spec, request_id);
        let latency = self.lock().insert_latency;
        if answer.is_ok() {
            tokio::time::sleep(latency).await;
        }
        answer
    }

    async fn wait(&self, op: &OperationRef) -> Result<OperationStatus, CloudError> {
        self.call("wait", &op.name)?;
        let Some(o) = self.lock().ops.get(&op.name).cloned() else {
            return Err(CloudError::NotFound {
                method: "wait",
                what: op.name.clone(),
            });
        };
        let now = Instant::now();
        if o.done_at > now + WAIT_BLOCK {
            tokio::time::sleep(WAIT_BLOCK).await;
            return Ok(OperationStatus::Pending);
        }
        tokio::time::sleep_until(o.done_at).await;
        Ok(match o.kind {
            OpKind::Insert {
                outcome: Some(f), ..
            } => OperationStatus::Failed(f),
            OpKind::Insert { .. } => OperationStatus::Done,
            OpKind::Delete { name } => {
                self.lock().vms.remove(&name);
                OperationStatus::Done
            }
        })
    }

    async fn get(&self, zone: &str, name: &str) -> Result<Option<Instance>, CloudError> {
        self.call("get", name)?;
        let now = Instant::now();
        let s = self.lock();
        Ok(s.vms
            .get(name)
            .filter(|v| v.inst.zone == zone)
            .map(|v| Instance {
                status: Self::status_at(v, now),
                ..v.inst.clone()
            }))
    }

    async fn list(
        &self,
        scope: &ListScope,
        labels: &BTreeMap<String, String>,
    ) -> Result<Listing, CloudError> {
        self.call("list", &format!("{scope:?}"))?;
        let now = Instant::now();
        let mut s = self.lock();
        let omit = std::mem::take(&mut s.omit_from_next_list);
        let instances = s
            .vms
            .values()
            .filter(|v| !omit.contains(&v.inst.name))
            .filter(|v| {
                labels
                    .iter()
                    .all(|(k, val)| v.inst.labels.get(k) == Some(val))
            })
            .filter(|v| match scope {
                ListScope::Zone(z) => &v.inst.zone == z,
                ListScope::Aggregated => !s.unreachable.contains(&v.inst.zone),
            })
            .map(|v| Instance {
                status: Self::status_at(v, now),
                ..v.inst.clone()
            })
            .collect();
        Ok(Listing {
            instances,
            unreachable_zones: s.unreachable.iter().cloned().collect(),
        })
    }

    async fn delete(&self, zone: &str, name: &str) -> Result<OperationRef, CloudError> {
        self.call("delete", name)?;
        let mut s = self.lock();
        if s.failing_deletes > 0 {
            s.failing_deletes -= 1;
            return Err(CloudError::Unavailable {
                method: "delete",
                message: "503".into(),
            });
        }
        if s.vms.get(name).is_none_or(|v| v.inst.zone != zone) {
            return Err(CloudError::NotFound {
                method: "delete",
                what: name.into(),
            });
        }
        s.next += 1;
        let op_name = format!("op-{}", s.next);
        let done_at = Instant::now() + s.delete_latency;
        s.ops.insert(
            op_name.clone(),
            Op {
                kind: OpKind::Delete { name: name.into() },
                done_at,
            },
        );
        if let Some(vm) = s.vms.get_mut(name) {
            vm.inst.status = InstanceStatus::Stopping;
        }
        Ok(OperationRef {
            zone: zone.into(),
            name: op_name,
        })
    }
}

/// A connector whose dockerd answers once the fake cloud says the VM runs (plus `docker_delay`),
/// or never when `never_ready`.
#[derive(Clone)]
pub struct FakeConnector {
    pub cloud: FakeCloud,
    pub never_ready: Arc<Mutex<bool>>,
    pub pings: Arc<Mutex<u32>>,
}

impl FakeConnector {
    pub fn new(cloud: &FakeCloud) -> FakeConnector {
        FakeConnector {
            cloud: cloud.clone(),
            never_ready: Arc::default(),
            pings: Arc::default(),
        }
    }
}

#[async_trait]
impl VmDockerAccess for FakeConnector {
    fn vm_metadata(&self, vm_name: &str) -> Result<Vec<(String, String)>, VmAccessError> {
        Ok(vec![(
            "flotilla-docker-ca".into(),
            format!("CA for {vm_name}"),
        )])
    }

    async fn connect(
        &self,
        vm_name: &str,
        addr: SocketAddr,
    ) -> Result<bollard::Docker, VmAccessError> {
        bollard::Docker::connect_with_http(
            &format!("http://{addr}"),
            5,
            bollard::API_DEFAULT_VERSION,
        )
        .map_err(|e| VmAccessError::Connect {
            vm: vm_name.to_string(),
            source: Box::new(e),
        })
    }

    async fn ping(&self, vm_name: &str, _docker: &bollard::Docker) -> Result<(), VmAccessError> {
        *self.pings.lock().unwrap() += 1;
        if *self.never_ready.lock().unwrap() || !self.cloud.running(vm_name) {
            return Err(VmAccessError::Ping {
                vm: vm_name.to_string(),
                source: "connection refused".into(),
            });
        }
        Ok(())
    }
}
