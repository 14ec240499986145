//! Synchronous error replies of the fake Compute API, shaped like Compute's own: the legacy
//! `{error:{code,message,errors:[{domain,reason,message}]}}` body without `status`, and the newer
//! `RESOURCE_EXHAUSTED` body with `details[ErrorInfo]` for 429. Owns only the wire shape of an
//! error; which error a call gets is decided by the routes and the fault state.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

/// An error reply: an HTTP status and the JSON body Compute would send.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    status: StatusCode,
    body: Value,
}

impl ApiError {
    /// A legacy Compute error: one entry in `errors` with the given domain and reason.
    fn legacy(status: StatusCode, domain: &str, reason: &str, message: String) -> Self {
        let body = json!({"error": {
            "code": status.as_u16(),
            "message": message,
            "errors": [{"message": message, "domain": domain, "reason": reason}],
        }});
        Self { status, body }
    }

    /// 404 `notFound` for a resource path such as `projects/P/zones/Z/instances/N`.
    pub(crate) fn not_found(resource: &str) -> Self {
        Self::legacy(
            StatusCode::NOT_FOUND,
            "global",
            "notFound",
            format!("The resource '{resource}' was not found"),
        )
    }

    /// 409 `alreadyExists` for a resource path.
    pub(crate) fn already_exists(resource: &str) -> Self {
        Self::legacy(
            StatusCode::CONFLICT,
            "global",
            "alreadyExists",
            format!("The resource '{resource}' already exists"),
        )
    }

    /// 400 `invalid` with Compute's "Invalid value for field" wording.
    pub(crate) fn invalid_field(field: &str, value: &str, detail: &str) -> Self {
        Self::legacy(
            StatusCode::BAD_REQUEST,
            "global",
            "invalid",
            format!("Invalid value for field '{field}': '{value}'. {detail}"),
        )
    }

    /// 400 `required` for a missing field.
    pub(crate) fn required(field: &str) -> Self {
        Self::legacy(
            StatusCode::BAD_REQUEST,
            "global",
            "required",
            format!("Required field '{field}' not specified"),
        )
    }

    /// 400 `parseError` for a body that is not JSON.
    pub(crate) fn parse_error(detail: &str) -> Self {
        Self::legacy(
            StatusCode::BAD_REQUEST,
            "global",
            "parseError",
            format!("Parse Error: {detail}"),
        )
    }

    /// 503 `backendError`, as an injected outage.
    pub(crate) fn unavailable() -> Self {
        Self::legacy(
            StatusCode::SERVICE_UNAVAILABLE,
            "global",
            "backendError",
            "Internal error. Please try again or contact Google Support.".to_owned(),
        )
    }

    /// 403 `rateLimitExceeded` in the legacy body (domain `usageLimits`), as Compute sends it.
    pub(crate) fn rate_limited(region: &str) -> Self {
        Self::legacy(
            StatusCode::FORBIDDEN,
            "usageLimits",
            "rateLimitExceeded",
            rate_message(region),
        )
    }

    /// 429 `RESOURCE_EXHAUSTED` with an `ErrorInfo{reason: RATE_LIMIT_EXCEEDED}` detail, the shape
    /// other Google APIs use for the same condition.
    pub(crate) fn resource_exhausted(region: &str) -> Self {
        let message = rate_message(region);
        let body = json!({"error": {
            "code": 429,
            "message": message,
            "status": "RESOURCE_EXHAUSTED",
            "details": [{
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "RATE_LIMIT_EXCEEDED",
                "domain": "googleapis.com",
                "metadata": {
                    "service": "compute.googleapis.com",
                    "quota_metric": "compute.googleapis.com/read_requests",
                    "quota_limit": "ReadRequestsPerMinutePerProjectPerRegion",
                    "quota_location": region,
                },
            }],
        }});
        Self {
            status: StatusCode::TOO_MANY_REQUESTS,
            body,
        }
    }

    /// 403 `quotaExceeded`, synchronous, with the quota named in an `ErrorInfo` detail and the
    /// same `quotaInfo` shape the asynchronous operation error carries.
    pub(crate) fn quota_exceeded(quota: &QuotaSpec) -> Self {
        let mut err = Self::legacy(
            StatusCode::FORBIDDEN,
            "usageLimits",
            "quotaExceeded",
            quota.message(),
        );
        err.body["error"]["details"] = json!([
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "QUOTA_EXCEEDED",
                "domain": "compute.googleapis.com",
                "metadata": {"quota_metric": quota.metric_name(), "quota_limit": quota.limit_name()},
            },
            {"quotaInfo": quota.quota_info()},
        ]);
        err
    }

    /// The HTTP status of this reply.
    #[cfg(test)]
    pub(crate) fn status(&self) -> StatusCode {
        self.status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body)).into_response()
    }
}

fn rate_message(region: &str) -> String {
    format!(
        "Quota exceeded for quota metric 'Read requests' and limit 'Read requests per minute per \
         region' of service 'compute.googleapis.com' for consumer 'project_number:000000000000' \
         in region '{region}'."
    )
}

/// A resource quota that an injected fault reports as exceeded: `CPUS` in a region, or a global
/// quota such as `CPUS_ALL_REGIONS` when `region` is `None`.
#[derive(Debug, Clone)]
pub(crate) struct QuotaSpec {
    /// Quota name as Compute spells it in messages (`CPUS`, `CPUS_ALL_REGIONS`, `IN_USE_ADDRESSES`).
    pub(crate) quota: String,
    /// The region the quota is scoped to; `None` for a project-wide quota.
    pub(crate) region: Option<String>,
    /// The limit value reported.
    pub(crate) limit: f64,
}

impl QuotaSpec {
    /// `Quota 'CPUS' exceeded.  Limit: 24.0 in region us-central1.` (two spaces, as Compute writes).
    pub(crate) fn message(&self) -> String {
        match &self.region {
            Some(r) => format!(
                "Quota '{}' exceeded.  Limit: {:.1} in region {r}.",
                self.quota, self.limit
            ),
            None => format!(
                "Quota '{}' exceeded.  Limit: {:.1} globally.",
                self.quota, self.limit
            ),
        }
    }

    /// `compute.googleapis.com/cpus` for `CPUS`.
    pub(crate) fn metric_name(&self) -> String {
        format!("compute.googleapis.com/{}", self.quota.to_ascii_lowercase())
    }

    /// `CPUS-per-project-region`, or `CPUS-ALL-REGIONS-per-project` for a global quota.
    pub(crate) fn limit_name(&self) -> String {
        let base = self.quota.replace('_', "-");
        match self.region {
            Some(_) => format!("{base}-per-project-region"),
            None => format!("{base}-per-project"),
        }
    }

    /// The `quotaInfo` object of an `errorDetails` entry.
    pub(crate) fn quota_info(&self) -> Value {
        let dimensions = match &self.region {
            Some(r) => json!({"region": r}),
            None => json!({}),
        };
        json!({
            "metricName": self.metric_name(),
            "limitName": self.limit_name(),
            "dimensions": dimensions,
            "limit": self.limit,
        })
    }
}
