//! Table tests of the classifiers on recorded Compute shapes (`tests/fixtures/gce/`).

use super::*;
use google_cloud_compute_v1::model::Operation;
use std::time::{Duration, UNIX_EPOCH};

fn fixture(name: &str) -> &'static str {
    match name {
        "op_stockout" => include_str!("../../../../tests/fixtures/gce/op_stockout.json"),
        "op_stockout_with_details" => {
            include_str!("../../../../tests/fixtures/gce/op_stockout_with_details.json")
        }
        "op_quota_region" => include_str!("../../../../tests/fixtures/gce/op_quota_region.json"),
        "op_quota_global" => include_str!("../../../../tests/fixtures/gce/op_quota_global.json"),
        "op_running" => include_str!("../../../../tests/fixtures/gce/op_running.json"),
        "sync_not_found" => include_str!("../../../../tests/fixtures/gce/sync_not_found.json"),
        "sync_already_exists" => {
            include_str!("../../../../tests/fixtures/gce/sync_already_exists.json")
        }
        "sync_rate_limited" => {
            include_str!("../../../../tests/fixtures/gce/sync_rate_limited.json")
        }
        "sync_concurrent_ops" => {
            include_str!("../../../../tests/fixtures/gce/sync_concurrent_ops.json")
        }
        "sync_resource_exhausted" => {
            include_str!("../../../../tests/fixtures/gce/sync_resource_exhausted.json")
        }
        "sync_quota_exceeded" => {
            include_str!("../../../../tests/fixtures/gce/sync_quota_exceeded.json")
        }
        "sync_quota_exceeded_legacy" => {
            include_str!("../../../../tests/fixtures/gce/sync_quota_exceeded_legacy.json")
        }
        "sync_backend_error" => {
            include_str!("../../../../tests/fixtures/gce/sync_backend_error.json")
        }
        "sync_invalid" => include_str!("../../../../tests/fixtures/gce/sync_invalid.json"),
        other => panic!("no fixture {other}"),
    }
}

fn op_failure(name: &str) -> OperationFailure {
    let op: Operation = serde_json::from_str(fixture(name)).expect("operation fixture parses");
    let err = op.error.as_ref().expect("fixture has an error");
    operation_failure(err)
}

#[test]
fn operation_errors_by_code() {
    match op_failure("op_stockout") {
        OperationFailure::Stockout { code, message } => {
            assert_eq!(code, "ZONE_RESOURCE_POOL_EXHAUSTED");
            assert!(message.contains("does not have enough resources"));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        op_failure("op_stockout_with_details"),
        OperationFailure::Stockout { code, .. } if code == "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS"
    ));
    assert_eq!(
        op_failure("op_quota_region"),
        OperationFailure::Quota {
            scope: QuotaScope::Region("us-central1".into()),
            message: "Quota 'CPUS' exceeded.  Limit: 24.0 in region us-central1.".into(),
        }
    );
    assert!(matches!(
        op_failure("op_quota_global"),
        OperationFailure::Quota {
            scope: QuotaScope::Global,
            ..
        }
    ));
}

#[test]
fn operation_status_reads_done_and_error() {
    let parse = |name: &str| -> Operation { serde_json::from_str(fixture(name)).expect("parses") };
    assert_eq!(
        operation_status(&parse("op_running")),
        OperationStatus::Pending
    );
    assert!(matches!(
        operation_status(&parse("op_stockout")),
        OperationStatus::Failed(OperationFailure::Stockout { .. })
    ));
    let done: Operation =
        serde_json::from_value(serde_json::json!({"status": "DONE", "progress": 100}))
            .expect("parses");
    assert_eq!(operation_status(&done), OperationStatus::Done);
    let odd: Operation =
        serde_json::from_value(serde_json::json!({"status": "SOMETHING_NEW"})).expect("parses");
    assert_eq!(operation_status(&odd), OperationStatus::Pending);
}

#[test]
fn other_codes_and_gpu_stockout() {
    let op: Operation = serde_json::from_value(serde_json::json!({
        "status": "DONE",
        "error": {"errors": [{"code": "CONFLICT", "message": "deleted while being created"}]}
    }))
    .expect("parses");
    assert_eq!(
        operation_failure(op.error.as_ref().expect("error")),
        OperationFailure::Other {
            code: "CONFLICT".into(),
            message: "deleted while being created".into()
        }
    );
    let op: Operation = serde_json::from_value(serde_json::json!({
        "status": "DONE", "httpErrorStatusCode": 400,
        "error": {"errors": [{"code": "GPU_STOCKOUT", "message": "no gpus"}]}
    }))
    .expect("parses");
    assert!(matches!(
        operation_failure(op.error.as_ref().expect("error")),
        OperationFailure::Stockout { .. }
    ));
}

fn sync(name: &str, http: u16) -> CloudError {
    let facts = ErrorFacts::from_body(Some(http), fixture(name).as_bytes());
    // 12:00:45 → 15 s to the next minute.
    let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000 / 60 * 60 + 45);
    sync_error("instances.insert", &facts, now)
}

#[test]
fn sync_quota_exceeded_vs_rate_limit_exceeded() {
    // Both are 403s; only the reason tells them apart.
    match sync("sync_rate_limited", 403) {
        CloudError::RateLimited { retry_after, .. } => {
            assert_eq!(retry_after, Duration::from_secs(15))
        }
        other => panic!("{other:?}"),
    }
    match sync("sync_quota_exceeded", 403) {
        CloudError::QuotaExceeded { scope, message, .. } => {
            assert_eq!(scope, QuotaScope::Region("us-central1".into()));
            assert!(message.contains("CPUS"));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        sync("sync_quota_exceeded_legacy", 403),
        CloudError::QuotaExceeded {
            scope: QuotaScope::Global,
            ..
        }
    ));
}

#[test]
fn sync_errors_by_reason_then_status() {
    let cases = [
        ("sync_concurrent_ops", 403, "rate_limited"),
        ("sync_resource_exhausted", 429, "rate_limited"),
        ("sync_not_found", 404, "not_found"),
        ("sync_already_exists", 409, "conflict"),
        ("sync_backend_error", 503, "unavailable"),
        ("sync_invalid", 400, "failed"),
    ];
    for (name, http, kind) in cases {
        assert_eq!(sync(name, http).kind(), kind, "{name}");
    }
}

#[test]
fn unparsable_bodies_and_transport() {
    let now = UNIX_EPOCH;
    let facts = ErrorFacts::from_body(Some(502), b"<html>bad gateway</html>");
    assert_eq!(sync_error("m", &facts, now).kind(), "unavailable");
    let facts = ErrorFacts::from_body(Some(429), b"");
    assert_eq!(sync_error("m", &facts, now).kind(), "rate_limited");
    let facts = ErrorFacts {
        transport: true,
        message: "connection refused".into(),
        ..Default::default()
    };
    assert_eq!(sync_error("m", &facts, now).kind(), "unavailable");
}

#[test]
fn next_minute_boundary() {
    let at = |s: u64, ms: u64| UNIX_EPOCH + Duration::from_millis(s * 1000 + ms);
    assert_eq!(until_next_minute(at(120, 0)), Duration::from_secs(60));
    assert_eq!(
        until_next_minute(at(130, 500)),
        Duration::from_millis(49_500)
    );
    assert_eq!(until_next_minute(at(179, 900)), Duration::from_secs(1));
}
