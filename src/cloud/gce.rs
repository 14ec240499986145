//! [`GceCloud`]: the [`Cloud`] trait on Compute Engine, through the official
//! `google-cloud-compute-v1` client (instances and zone operations; the aggregated list is sent by
//! hand, see `aggregated.rs`). Owns credentials, the client-side rate limit, retries of
//! transient failures, the API-call metrics and the translation of Compute's errors; it makes
//! no scaling decision and never retries a rate limit or a quota refusal (the fleet does).
//!
//! Every HTTP attempt — waits and retries included — first takes a slot from the rate limiter
//! and is counted in `flotilla_gce_api_calls_total{method,result}`. The crate's own retry loop
//! is switched off (`NeverRetry`) so that this holds; instead each call is retried here a few
//! times with short backoff on 5xx/transport errors. Every call we make is idempotent: inserts
//! and deletes carry a `requestId`, `zoneOperations.wait` is a read sent as POST.

mod aggregated;
pub mod body;
pub mod classify;
mod rate;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use google_cloud_auth::credentials::{anonymous, service_account, Credentials};
use google_cloud_compute_v1::client::{Instances, ZoneOperations};
use google_cloud_compute_v1::model::Operation;
use google_cloud_gax::error::Error as GaxError;
use google_cloud_gax::retry_policy::NeverRetry;

use self::aggregated::{AggregatedLister, PageRequest, DEFAULT_ENDPOINT};
use self::body::{instance_body, instance_from_model, label_filter};
use self::classify::{operation_status, sync_error, ErrorFacts};
pub use self::rate::{GceMetrics, RateLimiter};
use super::{
    Cloud, CloudError, Instance, InstanceSpec, ListScope, Listing, OperationRef, OperationStatus,
};

/// A listing stops with an error after this many pages (a server repeating tokens).
const MAX_PAGES: usize = 10_000;

/// How to build a [`GceCloud`]. Made by the manager from `[runners.gce]`; [`GceCloudSettings::new`]
/// fills the defaults.
#[derive(Debug, Clone)]
pub struct GceCloudSettings {
    /// The project VMs live in.
    pub project: String,
    /// API root (host only, e.g. `http://127.0.0.1:PORT`); set → anonymous credentials (tests).
    pub endpoint: Option<String>,
    /// A service-account JSON key; `None` → Application Default Credentials.
    pub credentials_file: Option<PathBuf>,
    /// Client-side ceiling on API calls per minute (every attempt counts).
    pub api_rate_per_minute: u32,
    /// Where the API-call counters are registered (when `metrics` is `None`).
    pub registry: prometheus::Registry,
    /// Counters already registered and shared with other clients (one per project): the
    /// manager makes one [`GceMetrics`] for every project, so the registry holds them once.
    pub metrics: Option<GceMetrics>,
    /// Our own limit on one `zoneOperations.wait` call (Compute holds it ~2 min): keep it above
    /// ~130 s in production. A wait that hits it reports [`OperationStatus::Pending`].
    pub wait_timeout: Duration,
    /// `maxResults` of list calls (1–500).
    pub page_size: u32,
    /// Extra attempts after a 5xx/transport failure.
    pub unavailable_retries: u32,
    /// First backoff between those attempts (doubled each time, capped at 5 s).
    pub retry_backoff: Duration,
}

impl GceCloudSettings {
    /// Settings for `project` with production defaults: Compute's public endpoint, ADC, 600
    /// calls per minute, 150 s wait timeout, 500 per page, 3 retries from 250 ms.
    pub fn new(project: impl Into<String>, registry: prometheus::Registry) -> Self {
        Self {
            project: project.into(),
            endpoint: None,
            credentials_file: None,
            api_rate_per_minute: 600,
            registry,
            metrics: None,
            wait_timeout: Duration::from_secs(150),
            page_size: 500,
            unavailable_retries: 3,
            retry_backoff: Duration::from_millis(250),
        }
    }
}

/// Compute Engine as a [`Cloud`]. Built once by the manager ([`GceCloud::new`]) and shared
/// (`Arc<dyn Cloud>`); the clients inside are cheap handles over one connection pool each.
pub struct GceCloud {
    project: String,
    instances: Instances,
    operations: ZoneOperations,
    aggregated: AggregatedLister,
    limiter: RateLimiter,
    metrics: GceMetrics,
    wait_timeout: Duration,
    page_size: u32,
    retries: u32,
    backoff: Duration,
}

impl std::fmt::Debug for GceCloud {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GceCloud")
            .field("project", &self.project)
            .field("limiter", &self.limiter)
            .field("wait_timeout", &self.wait_timeout)
            .finish_non_exhaustive()
    }
}

fn setup_error(what: &str, e: impl std::fmt::Display) -> CloudError {
    CloudError::Failed {
        method: "setup",
        message: format!("{what}: {e}"),
    }
}

/// Anonymous credentials for a test endpoint, a service-account key file, or ADC.
fn credentials(settings: &GceCloudSettings) -> Result<Credentials, CloudError> {
    if settings.endpoint.is_some() {
        return Ok(anonymous::Builder::new().build());
    }
    if let Some(path) = &settings.credentials_file {
        let raw = std::fs::read(path)
            .map_err(|e| setup_error(&format!("reading {}", path.display()), e))?;
        // The key itself never reaches an error message: only serde's position info does.
        let key: serde_json::Value = serde_json::from_slice(&raw)
            .map_err(|e| setup_error(&format!("parsing {} as JSON", path.display()), e))?;
        return service_account::Builder::new(key)
            .build()
            .map_err(|e| setup_error(&format!("service account key {}", path.display()), e));
    }
    google_cloud_auth::credentials::Builder::default()
        .build()
        .map_err(|e| setup_error("application default credentials", e))
}

fn gax(method: &'static str, e: &GaxError) -> CloudError {
    sync_error(method, &ErrorFacts::from_gax(e), SystemTime::now())
}

fn operation_ref(
    method: &'static str,
    zone: &str,
    op: &Operation,
) -> Result<OperationRef, CloudError> {
    match op.name.as_deref().filter(|n| !n.is_empty()) {
        Some(name) => Ok(OperationRef {
            zone: zone.to_owned(),
            name: name.to_owned(),
        }),
        None => Err(CloudError::Failed {
            method,
            message: "the reply carried no operation name".to_owned(),
        }),
    }
}

impl GceCloud {
    /// Builds the clients and registers the metrics. Fails on unreadable credentials or a
    /// registry that already holds the counters.
    pub async fn new(settings: GceCloudSettings) -> Result<GceCloud, CloudError> {
        let creds = credentials(&settings)?;
        let endpoint = settings
            .endpoint
            .clone()
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_owned());
        let instances = Instances::builder()
            .with_endpoint(endpoint.clone())
            .with_credentials(creds.clone())
            .with_retry_policy(NeverRetry)
            .build()
            .await
            .map_err(|e| setup_error("building the instances client", e))?;
        let operations = ZoneOperations::builder()
            .with_endpoint(endpoint.clone())
            .with_credentials(creds.clone())
            .with_retry_policy(NeverRetry)
            .build()
            .await
            .map_err(|e| setup_error("building the zone operations client", e))?;
        let aggregated = AggregatedLister::new(
            &endpoint,
            &settings.project,
            creds,
            Duration::from_secs(120),
        )?;
        let metrics = match settings.metrics.clone() {
            Some(shared) => shared,
            None => GceMetrics::register(&settings.registry)
                .map_err(|e| setup_error("registering gce metrics", e))?,
        };
        let rate = settings.api_rate_per_minute.max(1);
        Ok(GceCloud {
            project: settings.project,
            instances,
            operations,
            aggregated,
            limiter: RateLimiter::new(rate, RateLimiter::default_burst(rate)),
            metrics,
            wait_timeout: settings.wait_timeout,
            page_size: settings.page_size.clamp(1, 500),
            retries: settings.unavailable_retries,
            backoff: settings.retry_backoff,
        })
    }

    /// Runs `attempt` through the rate limiter, counts it, and retries it on `Unavailable`.
    /// `label` names a successful result for the metric.
    async fn call_with<T, F, Fut>(
        &self,
        method: &'static str,
        label: fn(&T) -> &'static str,
        mut attempt: F,
    ) -> Result<T, CloudError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, CloudError>>,
    {
        let mut tries = 0u32;
        loop {
            if self.limiter.acquire().await {
                self.metrics.waited();
            }
            match attempt().await {
                Ok(v) => {
                    self.metrics.call(method, label(&v));
                    return Ok(v);
                }
                Err(e) => {
                    self.metrics.call(method, e.kind());
                    if !matches!(e, CloudError::Unavailable { .. }) || tries >= self.retries {
                        return Err(e);
                    }
                    let delay =
                        (self.backoff * 2u32.saturating_pow(tries)).min(Duration::from_secs(5));
                    tracing::debug!(method, error = %e, ?delay, "gce: retrying");
                    tokio::time::sleep(delay).await;
                    tries += 1;
                }
            }
        }
    }

    async fn call<T, F, Fut>(&self, method: &'static str, attempt: F) -> Result<T, CloudError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, CloudError>>,
    {
        self.call_with(method, |_| "ok", attempt).await
    }

    async fn list_zone(&self, zone: &str, filter: Option<String>) -> Result<Listing, CloudError> {
        const M: &str = "instances.list";
        let mut out = Listing::default();
        let mut token: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let page = self
                .call(M, || {
                    let req = self
                        .instances
                        .list()
                        .set_project(&self.project)
                        .set_zone(zone)
                        .set_max_results(self.page_size)
                        .set_or_clear_filter(filter.clone())
                        .set_or_clear_page_token(token.clone());
                    async move { req.send().await.map_err(|e| gax(M, &e)) }
                })
                .await?;
            out.instances
                .extend(page.items.iter().map(|i| instance_from_model(i, zone)));
            match page.next_page_token.filter(|t| !t.is_empty()) {
                Some(t) => token = Some(t),
                None => return Ok(out),
            }
        }
        Err(too_many_pages(M))
    }

    async fn list_aggregated(&self, filter: Option<String>) -> Result<Listing, CloudError> {
        const M: &str = "instances.aggregatedList";
        let mut out = Listing::default();
        let mut unreachable = BTreeSet::new();
        let mut token: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let req = PageRequest {
                filter: filter.as_deref(),
                max_results: self.page_size,
                page_token: token.as_deref(),
            };
            let page = self.call(M, || self.aggregated.page(&req)).await?;
            out.instances.extend(page.instances);
            unreachable.extend(page.unreachable_zones);
            match page.next_page_token {
                Some(t) => token = Some(t),
                None => {
                    out.unreachable_zones = unreachable.into_iter().collect();
                    return Ok(out);
                }
            }
        }
        Err(too_many_pages(M))
    }
}

fn too_many_pages(method: &'static str) -> CloudError {
    CloudError::Failed {
        method,
        message: format!("more than {MAX_PAGES} pages: the server keeps returning page tokens"),
    }
}

#[async_trait]
impl Cloud for GceCloud {
    async fn insert(
        &self,
        spec: &InstanceSpec,
        request_id: &str,
    ) -> Result<OperationRef, CloudError> {
        const M: &str = "instances.insert";
        let body = instance_body(spec);
        // Retrying is safe: the same requestId returns the first attempt's operation.
        let op = self
            .call(M, || {
                let req = self
                    .instances
                    .insert()
                    .set_project(&self.project)
                    .set_zone(&spec.zone)
                    .set_request_id(request_id)
                    .set_body(body.clone());
                async move { req.send().await.map_err(|e| gax(M, &e)) }
            })
            .await?;
        operation_ref(M, &spec.zone, &op)
    }

    async fn wait(&self, op: &OperationRef) -> Result<OperationStatus, CloudError> {
        const M: &str = "zoneOperations.wait";
        let label = |r: &Option<Operation>| if r.is_some() { "ok" } else { "timeout" };
        let reply = self
            .call_with(M, label, || {
                let req = self
                    .operations
                    .wait()
                    .set_project(&self.project)
                    .set_zone(&op.zone)
                    .set_operation(&op.name);
                async move {
                    match tokio::time::timeout(self.wait_timeout, req.send()).await {
                        Err(_) => Ok(None),
                        Ok(Ok(op)) => Ok(Some(op)),
                        Ok(Err(e)) => Err(gax(M, &e)),
                    }
                }
            })
            .await?;
        match reply {
            Some(reply) => Ok(operation_status(&reply)),
            None => {
                tracing::warn!(zone = %op.zone, operation = %op.name, timeout = ?self.wait_timeout,
                    "gce: zoneOperations.wait did not answer in time; treating the operation as pending");
                Ok(OperationStatus::Pending)
            }
        }
    }

    async fn get(&self, zone: &str, name: &str) -> Result<Option<Instance>, CloudError> {
        const M: &str = "instances.get";
        let reply = self
            .call(M, || {
                let req = self
                    .instances
                    .get()
                    .set_project(&self.project)
                    .set_zone(zone)
                    .set_instance(name);
                async move { req.send().await.map_err(|e| gax(M, &e)) }
            })
            .await;
        match reply {
            Ok(i) => Ok(Some(instance_from_model(&i, zone))),
            Err(CloudError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn list(
        &self,
        scope: &ListScope,
        labels: &BTreeMap<String, String>,
    ) -> Result<Listing, CloudError> {
        let filter = label_filter(labels);
        match scope {
            ListScope::Zone(zone) => self.list_zone(zone, filter).await,
            ListScope::Aggregated => self.list_aggregated(filter).await,
        }
    }

    async fn delete(&self, zone: &str, name: &str) -> Result<OperationRef, CloudError> {
        const M: &str = "instances.delete";
        // One requestId for every attempt: a retry after a lost reply gets the same operation.
        let request_id = uuid::Uuid::new_v4().to_string();
        let op = self
            .call(M, || {
                let req = self
                    .instances
                    .delete()
                    .set_project(&self.project)
                    .set_zone(zone)
                    .set_instance(name)
                    .set_request_id(&request_id);
                async move { req.send().await.map_err(|e| gax(M, &e)) }
            })
            .await?;
        operation_ref(M, zone, &op)
    }
}
