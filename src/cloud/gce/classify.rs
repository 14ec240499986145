//! Turning Compute's failures into the fleet's words: a finished operation's `error.errors[]`
//! into an [`OperationFailure`] (by the `code` strings, never the operation's HTTP status), and a
//! synchronous HTTP error into a [`CloudError`] (by the `reason`s Compute puts in its legacy
//! `errors[]` or its `details[ErrorInfo]`, then the HTTP status). Pure functions over the
//! client crate's types; no I/O, no clock except the one passed in.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use google_cloud_compute_v1::model::{operation, Operation};
use google_cloud_gax::error::rpc::{Status, StatusDetails};
use google_cloud_gax::error::Error as GaxError;

use crate::cloud::{CloudError, OperationFailure, OperationStatus, QuotaScope};

/// Operation error codes that mean "this zone has no capacity now": try another zone.
const STOCKOUT_CODES: &[&str] = &[
    "ZONE_RESOURCE_POOL_EXHAUSTED",
    "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS",
    "REGION_RESOURCE_POOL_EXHAUSTED",
    "GPU_STOCKOUT",
];

/// Reasons (legacy `errors[].reason` or `ErrorInfo.reason`) of a per-minute rate limit or of
/// too many operations in flight: both clear by waiting.
const RATE_LIMIT_REASONS: &[&str] = &[
    "rateLimitExceeded",
    "RATE_LIMIT_EXCEEDED",
    "CONCURRENT_OPERATIONS_QUOTA_EXCEEDED",
    "userRateLimitExceeded",
];

/// Reasons of a resource quota refused synchronously.
const QUOTA_REASONS: &[&str] = &["quotaExceeded", "QUOTA_EXCEEDED"];

/// What an operation returned by `wait` (or `insert`) says: DONE with errors is a failure
/// however the rest of it looks; anything not DONE (PENDING, RUNNING, unknown) is pending.
pub fn operation_status(op: &Operation) -> OperationStatus {
    match op.status {
        Some(operation::Status::Done) => match &op.error {
            Some(e) if !e.errors.is_empty() => OperationStatus::Failed(operation_failure(e)),
            _ => OperationStatus::Done,
        },
        _ => OperationStatus::Pending,
    }
}

/// Classifies the `error` of a DONE operation. A quota error wins over a stockout (it rules
/// out more zones); otherwise the first error's code decides.
pub fn operation_failure(err: &operation::Error) -> OperationFailure {
    let code_of = |e: &operation::error::Errors| e.code.clone().unwrap_or_default();
    let message_of = |e: &operation::error::Errors| e.message.clone().unwrap_or_default();
    if let Some(e) = err
        .errors
        .iter()
        .find(|e| e.code.as_deref() == Some("QUOTA_EXCEEDED"))
    {
        let region = e
            .error_details
            .iter()
            .filter_map(|d| d.quota_info.as_ref())
            .find_map(|q| q.dimensions.get("region").filter(|r| !r.is_empty()));
        let scope = match region {
            Some(r) => QuotaScope::Region(r.clone()),
            None => QuotaScope::Global,
        };
        return OperationFailure::Quota {
            scope,
            message: message_of(e),
        };
    }
    if let Some(e) = err
        .errors
        .iter()
        .find(|e| STOCKOUT_CODES.contains(&e.code.as_deref().unwrap_or_default()))
    {
        return OperationFailure::Stockout {
            code: code_of(e),
            message: message_of(e),
        };
    }
    match err.errors.first() {
        Some(e) => OperationFailure::Other {
            code: code_of(e),
            message: message_of(e),
        },
        None => OperationFailure::Other {
            code: "UNKNOWN".to_owned(),
            message: "the operation reported an error without entries".to_owned(),
        },
    }
}

/// What a synchronous failure says, gathered from whichever form it arrived in.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ErrorFacts {
    /// The HTTP status, when the server answered.
    pub http_status: Option<u16>,
    /// No usable answer: connection, I/O or timeout failure (or a transient credentials error).
    pub transport: bool,
    /// `errors[].reason` / `ErrorInfo.reason` values.
    pub reasons: Vec<String>,
    /// `quotaInfo.dimensions.region` from a detail, if any.
    pub quota_region: Option<String>,
    /// The error message.
    pub message: String,
}

impl ErrorFacts {
    /// Facts from an HTTP status and the error body the client crate parsed.
    pub fn from_status(http_status: Option<u16>, status: &Status) -> Self {
        let mut facts = ErrorFacts {
            http_status,
            message: status.message.clone(),
            ..Default::default()
        };
        for detail in &status.details {
            match detail {
                StatusDetails::ErrorInfo(info) => facts.reasons.push(info.reason.clone()),
                StatusDetails::Other(any) => {
                    // `{"quotaInfo": {...}}` carries no `@type`: the crate keeps it as raw JSON.
                    let raw = serde_json::to_value(any).unwrap_or_default();
                    if let Some(region) = raw
                        .pointer("/quotaInfo/dimensions/region")
                        .and_then(|r| r.as_str())
                        .filter(|r| !r.is_empty())
                    {
                        facts.quota_region = Some(region.to_owned());
                    }
                    if let Some(reason) = raw.get("reason").and_then(|r| r.as_str()) {
                        facts.reasons.push(reason.to_owned());
                    }
                }
                _ => {}
            }
        }
        facts
    }

    /// Facts from an HTTP error body the crate could not parse as a Google error (kept raw).
    pub fn from_body(http_status: Option<u16>, body: &[u8]) -> Self {
        if let Ok(status) = Status::try_from(&bytes::Bytes::copy_from_slice(body)) {
            return Self::from_status(http_status, &status);
        }
        let text = String::from_utf8_lossy(body);
        ErrorFacts {
            http_status,
            message: text.chars().take(300).collect(),
            ..Default::default()
        }
    }

    /// Facts from the client crate's error.
    pub fn from_gax(err: &GaxError) -> Self {
        let http_status = err.http_status_code();
        if let Some(status) = err.status() {
            return Self::from_status(http_status, status);
        }
        if let Some(body) = err.http_payload() {
            return Self::from_body(http_status, body);
        }
        let transport = err.is_io()
            || err.is_connect()
            || err.is_timeout()
            || err.is_transport()
            || (err.is_authentication() && credentials_transient(err));
        ErrorFacts {
            http_status,
            transport,
            message: err.to_string(),
            ..Default::default()
        }
    }
}

fn credentials_transient(err: &GaxError) -> bool {
    use std::error::Error as _;
    let mut source = err.source();
    while let Some(s) = source {
        if let Some(c) = s.downcast_ref::<google_cloud_gax::error::CredentialsError>() {
            return c.is_transient();
        }
        source = s.source();
    }
    false
}

/// Classifies a synchronous failure of `method`. Reasons decide before statuses: Compute sends
/// both rate limits and quota refusals as 403.
pub fn sync_error(method: &'static str, facts: &ErrorFacts, now: SystemTime) -> CloudError {
    let has = |set: &[&str]| facts.reasons.iter().any(|r| set.contains(&r.as_str()));
    let message = facts.message.clone();
    if facts.transport {
        return CloudError::Unavailable { method, message };
    }
    if facts.http_status == Some(429) || has(RATE_LIMIT_REASONS) {
        return CloudError::RateLimited {
            method,
            retry_after: until_next_minute(now),
        };
    }
    if has(QUOTA_REASONS) {
        let scope = match &facts.quota_region {
            Some(r) => QuotaScope::Region(r.clone()),
            None => QuotaScope::Global,
        };
        return CloudError::QuotaExceeded {
            method,
            scope,
            message,
        };
    }
    match facts.http_status {
        Some(404) => CloudError::NotFound {
            method,
            what: message,
        },
        Some(409) => CloudError::Conflict { method, message },
        Some(s) if s >= 500 => CloudError::Unavailable { method, message },
        None if message.is_empty() => CloudError::Unavailable {
            method,
            message: "no answer".to_owned(),
        },
        _ => CloudError::Failed { method, message },
    }
}

/// Time left until the next whole minute (Compute's rate quotas refill then), at least 1 s.
pub fn until_next_minute(now: SystemTime) -> Duration {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let into_minute = Duration::from_millis((since.as_millis() % 60_000) as u64);
    (Duration::from_secs(60) - into_minute).max(Duration::from_secs(1))
}

#[cfg(test)]
mod tests;
