//! Wire tests of the coordinator client against the axum stub (`stub.rs`): request bodies and
//! headers, long-poll bookkeeping, retries (`request.rs`); trace PATCHes, keep-alive, the final
//! update and log hygiene (`trace.rs`). This file holds the shared fixtures.

mod artifacts;
mod request;
mod trace;

use std::sync::LazyLock;
use std::time::Duration;

use super::stub::{reply, Recorded, Stub};
use super::*;
use crate::config::Secret;
use crate::trace::{JobTrace, StreamKind, TraceSettings, WORK_STREAM};

/// The runner's token, made once per test run.
static RUNNER_TOKEN: LazyLock<String> = LazyLock::new(crate::testing::fake_runner_token);
const JOB_TOKEN: &str = "glcbt-JOBSECRETabc";

fn settings() -> ClientSettings {
    ClientSettings {
        trace_interval: Duration::from_millis(40),
        keepalive_interval: Duration::from_secs(60),
        final_update_backoff: Duration::from_millis(10),
        ..ClientSettings::default()
    }
}

fn runner(stub: &Stub) -> RunnerEndpoint {
    runner_at(&stub.url)
}

fn runner_at(url: &str) -> RunnerEndpoint {
    RunnerEndpoint {
        url: url.to_string(),
        token: Secret(RUNNER_TOKEN.clone()),
        system_id: "s_0123456789ab".into(),
        short_token: crate::config::short_token(&RUNNER_TOKEN),
        tls: Default::default(),
    }
}

fn job() -> JobCredentials {
    JobCredentials {
        id: 42,
        token: JOB_TOKEN.into(),
    }
}

fn trace_of(bytes: &[u8]) -> JobTrace {
    let trace = JobTrace::new(TraceSettings {
        limit_bytes: 64 * 1024 * 1024,
        timestamps: false,
        ..TraceSettings::default()
    })
    .unwrap();
    let mut stream = trace.stream(WORK_STREAM, StreamKind::Stdout);
    stream.write(bytes);
    stream.flush();
    trace.finish();
    assert_eq!(
        trace.len(),
        bytes.len() as u64,
        "the test trace stores bytes as given"
    );
    trace
}

fn success() -> FinalState {
    FinalState {
        state: JobState::Success,
        failure_reason: None,
        exit_code: None,
    }
}

/// Stub answering PATCH with 202 and PUT with 200.
fn happy(rec: &Recorded) -> axum::response::Response {
    if rec.is_patch() {
        reply(202, &[], "")
    } else {
        reply(200, &[], "")
    }
}

fn counter(registry: &prometheus::Registry, name: &str, labels: &[(&str, &str)]) -> u64 {
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&registry.gather())
        .unwrap();
    text.lines()
        .filter(|line| line.starts_with(&format!("{name}{{")))
        .filter(|line| {
            labels
                .iter()
                .all(|(k, v)| line.contains(&format!("{k}=\"{v}\"")))
        })
        .map(|line| line.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}
