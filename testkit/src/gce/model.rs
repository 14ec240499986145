//! The fake's resources (instances and operations) and their JSON rendering in Compute's wire
//! shape: camelCase, uint64 ids as strings, full `https://www.googleapis.com/...` links. Also the
//! plain views handed to tests ([`InstanceView`], [`CallRecord`]). Owns no locking or timing.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::Serialize;
use serde_json::{json, Map, Value};
use tokio_util::sync::CancellationToken;

use super::error::{ApiError, QuotaSpec};
use super::validate::InsertSpec;

/// Prefix of every self link the fake writes.
pub(crate) const LINK_BASE: &str = "https://www.googleapis.com/compute/v1";

/// Now, as Compute writes timestamps (RFC 3339 with milliseconds and an offset).
pub(crate) fn timestamp() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, false)
}

/// `projects/P/zones/Z` link of a zone.
pub(crate) fn zone_link(project: &str, zone: &str) -> String {
    format!("{LINK_BASE}/projects/{project}/zones/{zone}")
}

/// Instance status values the fake uses (Compute has more; clients must accept unknown ones).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    Provisioning,
    Staging,
    Running,
    Stopping,
    Terminated,
}

impl Status {
    /// Compute's spelling.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Provisioning => "PROVISIONING",
            Self::Staging => "STAGING",
            Self::Running => "RUNNING",
            Self::Stopping => "STOPPING",
            Self::Terminated => "TERMINATED",
        }
    }
}

/// An instance's scheduling as the fake understood it from the insert request, with Compute's
/// defaults filled in (Spot and preemptible VMs: no automatic restart, TERMINATE on maintenance,
/// termination action STOP unless DELETE was asked for).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Scheduling {
    /// `STANDARD` or `SPOT`.
    pub provisioning_model: String,
    /// Legacy preemptible flag.
    pub preemptible: bool,
    /// `STOP` or `DELETE` for Spot/preemptible VMs; what a preemption does to the instance.
    pub instance_termination_action: Option<String>,
    /// Whether Compute restarts the VM after a host failure.
    pub automatic_restart: bool,
    /// `MIGRATE` or `TERMINATE`.
    pub on_host_maintenance: String,
}

impl Scheduling {
    /// Reads `scheduling` from an insert body; `None` gives on-demand defaults.
    pub(crate) fn from_request(raw: Option<&Value>) -> Result<Self, ApiError> {
        let field = |k: &str| raw.and_then(|s| s.get(k)).filter(|v| !v.is_null());
        let flag = |k: &str| {
            field(k).and_then(|v| match v {
                Value::Bool(b) => Some(*b),
                Value::String(s) => Some(s == "true"),
                _ => None,
            })
        };
        let model = field("provisioningModel")
            .and_then(Value::as_str)
            .unwrap_or("STANDARD");
        if model != "STANDARD" && model != "SPOT" {
            let f = "resource.scheduling.provisioningModel";
            return Err(ApiError::invalid_field(
                f,
                model,
                "Unknown provisioning model.",
            ));
        }
        let preemptible = flag("preemptible").unwrap_or(false);
        let spot_like = model == "SPOT" || preemptible;
        let automatic_restart = flag("automaticRestart").unwrap_or(!spot_like);
        if spot_like && automatic_restart {
            return Err(ApiError::invalid_field(
                "resource.scheduling.automaticRestart",
                "true",
                "Preemptible and Spot instances cannot be automatically restarted.",
            ));
        }
        let default_maintenance = if spot_like { "TERMINATE" } else { "MIGRATE" };
        let on_host_maintenance = field("onHostMaintenance")
            .and_then(Value::as_str)
            .unwrap_or(default_maintenance)
            .to_owned();
        let action = field("instanceTerminationAction").and_then(Value::as_str);
        if let Some(a) = action.filter(|a| *a != "STOP" && *a != "DELETE") {
            let f = "resource.scheduling.instanceTerminationAction";
            return Err(ApiError::invalid_field(f, a, "Must be STOP or DELETE."));
        }
        let instance_termination_action = match action {
            Some(a) => Some(a.to_owned()),
            None if spot_like => Some("STOP".to_owned()),
            None => None,
        };
        Ok(Self {
            provisioning_model: model.to_owned(),
            preemptible,
            instance_termination_action,
            automatic_restart,
            on_host_maintenance,
        })
    }

    /// Whether a preemption deletes the instance (else it ends TERMINATED).
    pub(crate) fn deletes_on_termination(&self) -> bool {
        self.instance_termination_action.as_deref() == Some("DELETE")
    }

    fn to_json(&self) -> Value {
        let mut v = json!({
            "provisioningModel": self.provisioning_model,
            "preemptible": self.preemptible,
            "automaticRestart": self.automatic_restart,
            "onHostMaintenance": self.on_host_maintenance,
        });
        if let Some(a) = &self.instance_termination_action {
            v["instanceTerminationAction"] = json!(a);
        }
        v
    }
}

/// One instance held by the fake. Created by an insert (or a foreign instance), removed by a
/// delete, a `DELETE` preemption or a vanish.
#[derive(Debug)]
pub(crate) struct Instance {
    pub(crate) id: u64,
    pub(crate) zone: String,
    pub(crate) spec: InsertSpec,
    pub(crate) status: Status,
    pub(crate) status_message: Option<String>,
    pub(crate) network_ip: Option<Ipv4Addr>,
    pub(crate) nat_ip: Option<Ipv4Addr>,
    pub(crate) created: String,
    pub(crate) last_start: Option<String>,
    pub(crate) last_stop: Option<String>,
    /// Name of the insert operation while it is not DONE (a delete then fails it with 409).
    pub(crate) pending_insert: Option<String>,
    /// Cancelled when the instance stops existing as a running VM: ends its boot task and proxy.
    pub(crate) life: CancellationToken,
}

impl Instance {
    /// The instance as `instances.get` returns it.
    pub(crate) fn to_json(&self, project: &str) -> Value {
        let zl = zone_link(project, &self.zone);
        let name = &self.spec.name;
        let body = &self.spec.body;
        let mut v = json!({
            "kind": "compute#instance",
            "id": self.id.to_string(),
            "creationTimestamp": self.created,
            "name": name,
            "machineType": format!("{zl}/machineTypes/{}", self.spec.machine_type),
            "status": self.status.as_str(),
            "zone": zl,
            "canIpForward": false,
            "networkInterfaces": [self.nic(project)],
            "disks": self.disks(project),
            "metadata": {
                "kind": "compute#metadata",
                "fingerprint": fingerprint(self.id),
                "items": self.spec.metadata.iter()
                    .map(|(k, v)| json!({"key": k, "value": v})).collect::<Vec<_>>(),
            },
            "selfLink": format!("{zl}/instances/{name}"),
            "scheduling": self.spec.scheduling.to_json(),
            "cpuPlatform": "Unknown CPU Platform",
            "labels": self.spec.labels,
            "labelFingerprint": fingerprint(self.id ^ 1),
            "startRestricted": false,
            "deletionProtection": false,
            "fingerprint": fingerprint(self.id ^ 2),
        });
        if let Some(m) = &self.status_message {
            v["statusMessage"] = json!(m);
        }
        if let Some(t) = &self.last_start {
            v["lastStartTimestamp"] = json!(t);
        }
        if let Some(t) = &self.last_stop {
            v["lastStopTimestamp"] = json!(t);
        }
        for key in [
            "tags",
            "serviceAccounts",
            "description",
            "hostname",
            "guestAccelerators",
        ] {
            if let Some(x) = body.get(key).filter(|x| !x.is_null()) {
                v[key] = x.clone();
            }
        }
        v
    }

    fn nic(&self, project: &str) -> Value {
        let req = self.spec.body.pointer("/networkInterfaces/0");
        let network = req
            .and_then(|n| n.get("network"))
            .and_then(Value::as_str)
            .unwrap_or("global/networks/default");
        let mut nic = json!({
            "kind": "compute#networkInterface",
            "name": "nic0",
            "network": absolute(project, network),
            "stackType": "IPV4_ONLY",
            "fingerprint": fingerprint(self.id ^ 3),
        });
        if let Some(sub) = req
            .and_then(|n| n.get("subnetwork"))
            .and_then(Value::as_str)
        {
            nic["subnetwork"] = json!(absolute(project, sub));
        }
        if let Some(ip) = self.network_ip {
            nic["networkIP"] = json!(ip.to_string());
        }
        if self.spec.wants_nat {
            let requested = req.and_then(|n| n.pointer("/accessConfigs/0"));
            let name = requested
                .and_then(|a| a.get("name"))
                .and_then(Value::as_str);
            let mut ac = json!({
                "kind": "compute#accessConfig",
                "type": "ONE_TO_ONE_NAT",
                "name": name.unwrap_or("External NAT"),
                "networkTier": "PREMIUM",
            });
            if let Some(ip) = self.nat_ip {
                ac["natIP"] = json!(ip.to_string());
            }
            nic["accessConfigs"] = json!([ac]);
        }
        nic
    }

    fn disks(&self, project: &str) -> Value {
        let requested = self.spec.body.get("disks").and_then(Value::as_array);
        let zl = zone_link(project, &self.zone);
        let disks = requested
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .enumerate();
        let out: Vec<Value> = disks
            .map(|(i, d)| {
                let boot = d.get("boot").and_then(Value::as_bool).unwrap_or(i == 0);
                let size = d.pointer("/initializeParams/diskSizeGb").map(int_string);
                let disk_name = if i == 0 {
                    self.spec.name.clone()
                } else {
                    format!("{}-{i}", self.spec.name)
                };
                json!({
                    "kind": "compute#attachedDisk",
                    "type": "PERSISTENT",
                    "mode": "READ_WRITE",
                    "source": format!("{zl}/disks/{disk_name}"),
                    "deviceName": format!("persistent-disk-{i}"),
                    "index": i,
                    "boot": boot,
                    "autoDelete": d.get("autoDelete").and_then(Value::as_bool).unwrap_or(true),
                    "interface": "SCSI",
                    "diskSizeGb": size.unwrap_or_else(|| "10".to_owned()),
                })
            })
            .collect();
        Value::Array(out)
    }

    /// The plain view tests read.
    pub(crate) fn view(&self) -> InstanceView {
        InstanceView {
            id: self.id,
            name: self.spec.name.clone(),
            zone: self.zone.clone(),
            status: self.status.as_str().to_owned(),
            labels: self.spec.labels.clone(),
            network_ip: self.network_ip,
            nat_ip: self.nat_ip,
            metadata_keys: self.spec.metadata.iter().map(|(k, _)| k.clone()).collect(),
            scheduling: self.spec.scheduling.clone(),
        }
    }
}

/// `global/networks/default` → full link; full links are kept.
fn absolute(project: &str, path: &str) -> String {
    if path.starts_with("https://") {
        path.to_owned()
    } else if path.starts_with("projects/") {
        format!("{LINK_BASE}/{path}")
    } else {
        format!("{LINK_BASE}/projects/{project}/{path}")
    }
}

/// int64 fields arrive as strings or numbers; they leave as strings.
fn int_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn fingerprint(seed: u64) -> String {
    format!("{:016x}", seed.wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

/// Operation status values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpStatus {
    Pending,
    Running,
    Done,
}

/// The `error` of a finished operation plus its `httpErrorStatusCode`/`httpErrorMessage`.
#[derive(Debug, Clone)]
pub(crate) struct OpError {
    pub(crate) http_status: u16,
    pub(crate) http_message: &'static str,
    pub(crate) errors: Vec<Value>,
}

impl OpError {
    /// `ZONE_RESOURCE_POOL_EXHAUSTED[_WITH_DETAILS]`, 503.
    pub(crate) fn stockout(project: &str, zone: &str, with_details: bool) -> Self {
        let base = format!(
            "The zone 'projects/{project}/zones/{zone}' does not have enough resources available \
             to fulfill the request."
        );
        let (code, message) = if with_details {
            (
                "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS",
                format!("{base}  '(resource type:compute)'."),
            )
        } else {
            (
                "ZONE_RESOURCE_POOL_EXHAUSTED",
                format!("{base}  Try a different zone, or try again later."),
            )
        };
        let details = json!([
            {"help": {"links": [{"description": "Troubleshooting documentation",
                                  "url": "https://cloud.google.com/compute/docs/resource-error"}]}},
            {"localizedMessage": {"locale": "en-US", "message": message}},
        ]);
        Self {
            http_status: 503,
            http_message: "SERVICE UNAVAILABLE",
            errors: vec![json!({"code": code, "message": message, "errorDetails": details})],
        }
    }

    /// `QUOTA_EXCEEDED` with `quotaInfo`, 403.
    pub(crate) fn quota(quota: &QuotaSpec) -> Self {
        let message = quota.message();
        let details = json!([
            {"quotaInfo": quota.quota_info()},
            {"localizedMessage": {"locale": "en-US", "message": message}},
        ]);
        Self {
            http_status: 403,
            http_message: "FORBIDDEN",
            errors: vec![
                json!({"code": "QUOTA_EXCEEDED", "message": message, "errorDetails": details}),
            ],
        }
    }

    /// The insert of an instance that was deleted before it finished, 409.
    pub(crate) fn deleted_while_creating(resource: &str) -> Self {
        Self {
            http_status: 409,
            http_message: "CONFLICT",
            errors: vec![json!({"code": "CONFLICT",
                "message": format!("The resource '{resource}' was deleted while it was being created.")})],
        }
    }
}

/// One zonal operation, user-made (insert, delete) or a system event (preemption).
#[derive(Debug, Clone)]
pub(crate) struct Operation {
    /// Creation order, for listing.
    pub(crate) seq: u64,
    pub(crate) id: u64,
    pub(crate) name: String,
    pub(crate) zone: String,
    pub(crate) op_type: String,
    pub(crate) target: String,
    pub(crate) target_id: u64,
    pub(crate) user: String,
    pub(crate) status: OpStatus,
    pub(crate) status_message: Option<String>,
    pub(crate) insert_time: String,
    pub(crate) start_time: Option<String>,
    pub(crate) end_time: Option<String>,
    pub(crate) error: Option<OpError>,
}

impl Operation {
    /// The operation as `zoneOperations.get` returns it.
    pub(crate) fn to_json(&self, project: &str) -> Value {
        let zl = zone_link(project, &self.zone);
        let (status, progress) = match self.status {
            OpStatus::Pending => ("PENDING", 0),
            OpStatus::Running => ("RUNNING", 0),
            OpStatus::Done => ("DONE", 100),
        };
        let mut v = Map::new();
        let mut put = |k: &str, x: Value| {
            v.insert(k.to_owned(), x);
        };
        put("kind", json!("compute#operation"));
        put("id", json!(self.id.to_string()));
        put("name", json!(self.name));
        put("zone", json!(zl));
        put("operationType", json!(self.op_type));
        put(
            "targetLink",
            json!(format!("{zl}/instances/{}", self.target)),
        );
        put("targetId", json!(self.target_id.to_string()));
        put("status", json!(status));
        put("progress", json!(progress));
        put("user", json!(self.user));
        put("insertTime", json!(self.insert_time));
        put("selfLink", json!(format!("{zl}/operations/{}", self.name)));
        if let Some(t) = &self.start_time {
            put("startTime", json!(t));
        }
        if let Some(t) = &self.end_time {
            put("endTime", json!(t));
        }
        if let Some(m) = &self.status_message {
            put("statusMessage", json!(m));
        }
        if let Some(e) = &self.error {
            put("error", json!({"errors": e.errors}));
            put("httpErrorStatusCode", json!(e.http_status));
            put("httpErrorMessage", json!(e.http_message));
        }
        Value::Object(v)
    }
}

/// A snapshot of one instance, for test assertions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstanceView {
    /// The instance id (Compute's uint64).
    pub id: u64,
    /// Instance name.
    pub name: String,
    /// Zone name (`us-central1-a`).
    pub zone: String,
    /// Compute status string (`PROVISIONING`, `RUNNING`, `TERMINATED`, ...).
    pub status: String,
    /// Labels as created.
    pub labels: BTreeMap<String, String>,
    /// The loopback address standing in for the internal IP, once RUNNING.
    pub network_ip: Option<Ipv4Addr>,
    /// The loopback address standing in for the external IP, when an accessConfig was asked for.
    pub nat_ip: Option<Ipv4Addr>,
    /// Metadata keys in request order (values are not copied: they may hold keys).
    pub metadata_keys: Vec<String>,
    /// Scheduling with Compute's defaults filled in.
    pub scheduling: Scheduling,
}

/// One API call the fake answered, for "GCE calls per VM" style assertions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CallRecord {
    /// Compute method name, e.g. `instances.insert`, `zoneOperations.wait`.
    pub api: String,
    /// HTTP method.
    pub method: String,
    /// Request path (no query).
    pub path: String,
    /// HTTP status answered.
    pub status: u16,
}
