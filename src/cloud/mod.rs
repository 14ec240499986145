//! The cloud as the fleet sees it: a narrow [`Cloud`] trait (insert, wait for an operation, get,
//! list by label — zonal or aggregated — and delete) and the types it speaks. The GCE adapter
//! (`gce.rs`, on the official `google-cloud-compute-v1` client) is the only code that knows the
//! wire format; scaling decisions never see it. The cloud is the truth about VMs.
//!
//! Invariant: this module never imports `coordinator` or `executor`.

pub mod gce;

/// The Compute Engine implementation and how to build it.
pub use gce::{GceCloud, GceCloudSettings, GceMetrics, RateLimiter};

use async_trait::async_trait;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

/// What to create: one VM. Built by the fleet from `[runners.gce]`.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceSpec {
    /// Instance name (`[a-z]([-a-z0-9]{0,61}[a-z0-9])?`).
    pub name: String,
    /// The zone to create it in.
    pub zone: String,
    /// Machine type name (e.g. `e2-standard-4`).
    pub machine_type: String,
    /// Source image (`projects/…/global/images/family/…` or a full URL).
    pub image: String,
    /// Boot disk size.
    pub disk_size_gb: u64,
    /// Boot disk type (`pd-balanced`, …).
    pub disk_type: String,
    /// Network (`global/networks/default` or a name).
    pub network: String,
    /// Subnetwork, regional (`regions/<r>/subnetworks/<s>`), if any.
    pub subnetwork: Option<String>,
    /// Give the VM an ephemeral external IP (one accessConfig).
    pub external_ip: bool,
    /// Network tags.
    pub tags: Vec<String>,
    /// Labels (ownership labels included).
    pub labels: BTreeMap<String, String>,
    /// Metadata items (startup script, TLS material).
    pub metadata: Vec<(String, String)>,
    /// Service account email and scopes; none attached when `None`.
    pub service_account: Option<(String, Vec<String>)>,
    /// Spot VM (`provisioningModel = SPOT`, `instanceTerminationAction = DELETE`).
    pub spot: bool,
}

/// A VM's status as GCE reports it; unknown values are kept (GCE keeps adding some).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstanceStatus {
    Provisioning,
    Staging,
    Running,
    Stopping,
    Terminated,
    Other(String),
}

/// A VM as listed or fetched.
#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    /// Instance name.
    pub name: String,
    /// Zone name (short, e.g. `us-central1-a`).
    pub zone: String,
    /// Status.
    pub status: InstanceStatus,
    /// `networkInterfaces[0].networkIP`.
    pub internal_ip: Option<IpAddr>,
    /// `networkInterfaces[0].accessConfigs[0].natIP`.
    pub external_ip: Option<IpAddr>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
}

/// A running or finished zonal operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperationRef {
    /// Zone of the operation.
    pub zone: String,
    /// Operation name.
    pub name: String,
}

/// What one `wait` call found.
#[derive(Debug, Clone, PartialEq)]
pub enum OperationStatus {
    /// Not done yet (`wait` returned early): call again.
    Pending,
    /// Done without error.
    Done,
    /// Done with an error (capacity and quota failures arrive here, not as HTTP errors).
    Failed(OperationFailure),
}

/// Which zones a quota failure rules out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuotaScope {
    /// A region's quota (`quotaInfo.dimensions.region`): that region's zones.
    Region(String),
    /// A project-wide quota (no region dimension, e.g. `CPUS_ALL_REGIONS`): every zone.
    Global,
}

/// Why an operation failed, classified by its `error.errors[].code` strings.
#[derive(Debug, Clone, PartialEq)]
pub enum OperationFailure {
    /// `ZONE_RESOURCE_POOL_EXHAUSTED(_WITH_DETAILS)` and other stockouts: try another zone.
    Stockout { code: String, message: String },
    /// `QUOTA_EXCEEDED`: stop creating in the scope its details name.
    Quota { scope: QuotaScope, message: String },
    /// Anything else.
    Other { code: String, message: String },
}

/// Which VMs a list covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListScope {
    /// One zone (`instances.list`).
    Zone(String),
    /// Every zone of the project (`aggregated/instances`, partial success allowed).
    Aggregated,
}

/// A list's result.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Listing {
    /// Instances matching the label filter.
    pub instances: Vec<Instance>,
    /// Zones the aggregated list could not reach: their VMs are unknown, never "vanished".
    pub unreachable_zones: Vec<String>,
}

/// A failed cloud call.
#[derive(Debug, thiserror::Error)]
pub enum CloudError {
    /// 403 `rateLimitExceeded` / 429: wait (until `retry_after`, by default the next minute).
    #[error("cloud API rate limit exceeded ({method}); retry after {retry_after:?}")]
    RateLimited {
        method: &'static str,
        retry_after: Duration,
    },
    /// A synchronous 403 `quotaExceeded`.
    #[error("quota exceeded ({method}): {message}")]
    QuotaExceeded {
        method: &'static str,
        scope: QuotaScope,
        message: String,
    },
    /// 404.
    #[error("not found ({method}): {what}")]
    NotFound { method: &'static str, what: String },
    /// 409 `alreadyExists` or a conflicting operation.
    #[error("conflict ({method}): {message}")]
    Conflict {
        method: &'static str,
        message: String,
    },
    /// A 5xx or transport error after the client's retries.
    #[error("cloud API unavailable ({method}): {message}")]
    Unavailable {
        method: &'static str,
        message: String,
    },
    /// Anything else (bad request, permission denied, …): not retried.
    #[error("cloud API call {method} failed: {message}")]
    Failed {
        method: &'static str,
        message: String,
    },
}

impl CloudError {
    /// A closed-set name for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            CloudError::RateLimited { .. } => "rate_limited",
            CloudError::QuotaExceeded { .. } => "quota_exceeded",
            CloudError::NotFound { .. } => "not_found",
            CloudError::Conflict { .. } => "conflict",
            CloudError::Unavailable { .. } => "unavailable",
            CloudError::Failed { .. } => "failed",
        }
    }
}

/// The operations the fleet needs from a cloud. Implementations own retries, the client-side
/// rate limit (`api_rate_per_minute`) and the API-call metrics.
#[async_trait]
pub trait Cloud: Send + Sync + 'static {
    /// Starts creating a VM. `request_id` (a UUID) makes a retried insert return the same
    /// operation instead of a second VM; use a new one (and a new name) after a failed operation.
    async fn insert(
        &self,
        spec: &InstanceSpec,
        request_id: &str,
    ) -> Result<OperationRef, CloudError>;

    /// One `zoneOperations.wait` call (it blocks up to about two minutes and may return before
    /// the operation is done: loop on [`OperationStatus::Pending`]). A call that outlives the
    /// implementation's own timeout also reports `Pending`; bound the loop with a deadline.
    async fn wait(&self, op: &OperationRef) -> Result<OperationStatus, CloudError>;

    /// One VM, or `None` when it does not exist.
    async fn get(&self, zone: &str, name: &str) -> Result<Option<Instance>, CloudError>;

    /// VMs carrying every label of `labels`, across pages.
    async fn list(
        &self,
        scope: &ListScope,
        labels: &BTreeMap<String, String>,
    ) -> Result<Listing, CloudError>;

    /// Starts deleting a VM (`NotFound` when it is already gone).
    async fn delete(&self, zone: &str, name: &str) -> Result<OperationRef, CloudError>;
}
