//! The executor on the real local Docker engine, in `flotilla-test/busybox`: outcomes (success,
//! script failure, timeout, graceful cancel, abort, missing image),
//! output streamed into the trace, `after_script`, file variables, variables kept out of the
//! container's `Env`, and that nothing with the job's labels is left behind.

use crate::support::{
    assert_nothing_left, docker, ensure_test_images, inspect_build_container, plain_trace,
    trace_text, wait_for_text, wait_until_nothing_left, BUSYBOX,
};
use flotilla::config::{DockerConfig, PullPolicy};
use flotilla::executor::{run_job, ContainerLabels, JobOutcome, JobRun};
use flotilla::job::{FailureReason, JobPayload, RunnerEnvironment};
use flotilla::trace::JobTrace;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const RUNNER: &str = "ittest";
const WAIT: Duration = Duration::from_secs(60);

/// A job id no other test (or test process) uses at the same time.
fn fresh_job_id() -> i64 {
    1_000_000 + i64::from(rand::random::<u32>() >> 2)
}

/// A job running `script` (and `after_script` when given) in busybox, GIT_STRATEGY=none.
pub(crate) fn job(script: &[&str], after: Option<&[&str]>, extra: Value) -> JobPayload {
    let mut steps = vec![json!({"name": "script", "script": script, "when": "on_success"})];
    if let Some(after) = after {
        steps.push(json!({"name": "after_script", "script": after, "when": "always"}));
    }
    let mut payload = json!({
        "id": fresh_job_id(),
        "token": "job-token-not-used",
        "job_info": {"project_id": 7, "project_full_path": "group/app"},
        "runner_info": {"timeout": 120},
        "image": {"name": BUSYBOX, "pull_policy": ["if-not-present"]},
        "steps": steps,
        "variables": [{"key": "GIT_STRATEGY", "value": "none", "public": true}],
        "features": {"trace_sections": true},
    });
    merge(&mut payload, extra);
    serde_json::from_value(payload).expect("a valid job payload")
}

/// Overlays `extra` onto `base` (objects merged, `variables` appended).
fn merge(base: &mut Value, extra: Value) {
    let (Some(base), Value::Object(extra)) = (base.as_object_mut(), extra) else {
        return;
    };
    for (key, value) in extra {
        match (key.as_str(), base.get_mut(&key)) {
            ("variables", Some(Value::Array(list))) => {
                list.extend(value.as_array().cloned().unwrap_or_default())
            }
            ("runner_info" | "image", Some(Value::Object(obj))) => {
                if let Value::Object(fields) = value {
                    obj.extend(fields);
                }
            }
            _ => {
                base.insert(key, value);
            }
        }
    }
}

/// Host networking, images only from the engine's store.
pub(crate) fn host_settings() -> DockerConfig {
    DockerConfig {
        network_mode: Some("host".into()),
        pull_policy: vec![PullPolicy::IfNotPresent],
        ..DockerConfig::default()
    }
}

/// A job ready for `run_job`, with the handles a test watches it by.
pub(crate) struct Started {
    pub(crate) run: JobRun,
    pub(crate) trace: JobTrace,
    pub(crate) cancel: CancellationToken,
    pub(crate) abort: CancellationToken,
    pub(crate) job_id: i64,
}

/// `job` as the manager would hand it to the executor (the runner's variables, labels, tokens).
pub(crate) fn start(job: JobPayload) -> Started {
    let env = RunnerEnvironment {
        short_token: RUNNER.into(),
        builds_dir: "/builds".into(),
        version: "test".into(),
        ..RunnerEnvironment::default()
    };
    let variables = env.job_variables(&job);
    let trace = plain_trace();
    let cancel = CancellationToken::new();
    let abort = CancellationToken::new();
    let job_id = job.id;
    let run = JobRun {
        job: Arc::new(job),
        variables,
        trace: trace.clone(),
        labels: ContainerLabels {
            job_id,
            runner: RUNNER.into(),
            vm: String::new(),
            ..Default::default()
        },
        cancel: cancel.clone(),
        abort: abort.clone(),
        cache: Default::default(),
        coordinator_url: String::new(),
        stages: None,
        start_slots: None,
    };
    Started {
        run,
        trace,
        cancel,
        abort,
        job_id,
    }
}

/// Runs `job` to its end with `settings`; its outcome and trace text.
pub(crate) async fn run_to_end(
    job: JobPayload,
    settings: DockerConfig,
) -> (JobOutcome, String, i64) {
    ensure_test_images();
    let docker = docker().await;
    let started = start(job);
    let outcome = run_job(&docker, &settings, started.run).await;
    let text = trace_text(&started.trace);
    assert_nothing_left(&docker, started.job_id).await;
    (outcome, text, started.job_id)
}

#[tokio::test]
async fn a_passing_script_streams_its_output_and_succeeds() {
    let job = job(
        &[
            "echo \"hello from job $CI_JOB_ID in $(pwd)\"",
            "echo to-stderr >&2",
        ],
        None,
        json!({"variables": [{"key": "CI_JOB_ID", "value": "77", "public": true}]}),
    );
    let (outcome, text, _) = run_to_end(job, host_settings()).await;
    assert_eq!(outcome, JobOutcome::Succeeded, "{text}");
    assert!(text.contains("Preparing the \"docker\" executor"), "{text}");
    assert!(
        text.contains(&format!("Using Docker executor with image {BUSYBOX} ...")),
        "{text}"
    );
    assert!(text.contains("section_start:"), "{text}");
    assert!(text.contains(":step_script\r\x1b[0K"), "{text}");
    assert!(text.contains("Skipping Git repository setup"), "{text}");
    assert!(
        text.contains("\x1b[32;1m$ echo to-stderr >&2\x1b[0;m"),
        "{text}"
    );
    assert!(
        text.contains("hello from job 77 in /builds/group/app"),
        "{text}"
    );
    assert!(text.contains("to-stderr"), "{text}");
}

#[tokio::test]
async fn a_failing_line_stops_the_script_with_its_exit_code_and_after_script_runs() {
    let job = job(
        &["echo before-failure", "exit 7", "echo never-reached"],
        Some(&["echo after-status=$CI_JOB_STATUS", "exit 3"]),
        json!({}),
    );
    let (outcome, text, _) = run_to_end(job, host_settings()).await;
    assert_eq!(outcome, JobOutcome::ScriptFailed(7), "{text}");
    assert!(text.contains("before-failure"), "{text}");
    assert!(!text.contains("never-reached"), "{text}");
    assert!(text.contains("after-status=failed"), "{text}");
    assert!(
        text.contains("after_script failed, but job will continue unaffected"),
        "{text}"
    );
}

#[tokio::test]
async fn a_job_past_its_timeout_is_killed_and_after_script_still_runs() {
    let job = job(
        &["sleep 30"],
        Some(&["echo after-status=$CI_JOB_STATUS"]),
        json!({"runner_info": {"timeout": 2}}),
    );
    let began = tokio::time::Instant::now();
    let (outcome, text, _) = run_to_end(job, host_settings()).await;
    assert_eq!(outcome, JobOutcome::TimedOut, "{text}");
    assert!(
        began.elapsed() < Duration::from_secs(25),
        "{:?}",
        began.elapsed()
    );
    assert!(text.contains("after-status=timedout"), "{text}");
}

#[tokio::test]
async fn a_graceful_cancel_stops_the_script_and_runs_after_script() {
    ensure_test_images();
    let docker = docker().await;
    let job = job(
        &["echo ready-$((40+2))", "sleep 30", "echo not-after-cancel"],
        Some(&["echo after-status=$CI_JOB_STATUS"]),
        json!({}),
    );
    let started = start(job);
    let task = {
        let docker = docker.clone();
        let run = started.run;
        tokio::spawn(async move { run_job(&docker, &host_settings(), run).await })
    };
    wait_for_text(&started.trace, "ready-42", WAIT).await;
    started.cancel.cancel();
    let outcome = tokio::time::timeout(WAIT, task)
        .await
        .expect("the job ends after a cancel")
        .expect("the job task");
    let text = trace_text(&started.trace);
    assert_eq!(outcome, JobOutcome::Canceled, "{text}");
    assert!(text.contains("after-status=canceled"), "{text}");
    assert!(!text.contains("not-after-cancel"), "{text}");
    assert_nothing_left(&docker, started.job_id).await;
}

#[tokio::test]
async fn an_abort_stops_everything_at_once_without_after_script() {
    ensure_test_images();
    let docker = docker().await;
    let job = job(
        &["echo ready-$((40+2))", "sleep 30"],
        Some(&["echo after-script-ran"]),
        json!({}),
    );
    let started = start(job);
    let task = {
        let docker = docker.clone();
        let run = started.run;
        tokio::spawn(async move { run_job(&docker, &host_settings(), run).await })
    };
    wait_for_text(&started.trace, "ready-42", WAIT).await;
    let aborted = tokio::time::Instant::now();
    started.abort.cancel();
    let outcome = tokio::time::timeout(WAIT, task)
        .await
        .expect("the job ends after an abort")
        .expect("the job task");
    assert!(
        aborted.elapsed() < Duration::from_secs(15),
        "abort took {:?}",
        aborted.elapsed()
    );
    let text = trace_text(&started.trace);
    assert_eq!(outcome, JobOutcome::Canceled, "{text}");
    assert!(!text.contains("after-script-ran"), "{text}");
    assert_nothing_left(&docker, started.job_id).await;
}

#[tokio::test]
async fn a_missing_image_with_pull_policy_never_is_an_image_pull_failure() {
    let job = job(
        &["true"],
        None,
        json!({"image": {"name": "flotilla-test/does-not-exist:1", "pull_policy": ["never"]}}),
    );
    let (outcome, text, _) = run_to_end(job, host_settings()).await;
    match outcome {
        JobOutcome::SystemFailure { reason, message } => {
            assert_eq!(reason, FailureReason::ImagePullFailure);
            assert!(
                message.contains("flotilla-test/does-not-exist:1"),
                "{message}"
            );
        }
        other => panic!("expected an image pull failure, got {other:?}; trace:\n{text}"),
    }
}

#[tokio::test]
async fn a_file_variable_is_a_readable_file() {
    let job = job(
        &[
            "test -f \"$MY_FILE\"",
            "echo \"content=$(cat \"$MY_FILE\")\"",
            "echo \"path=$MY_FILE\"",
        ],
        None,
        json!({"variables": [{"key": "MY_FILE", "value": "line one\nit's two", "file": true}]}),
    );
    let (outcome, text, _) = run_to_end(job, host_settings()).await;
    assert_eq!(outcome, JobOutcome::Succeeded, "{text}");
    assert!(text.contains("content=line one\nit's two"), "{text}");
    assert!(
        text.contains("path=/builds/group/app.tmp/MY_FILE"),
        "{text}"
    );
}

#[tokio::test]
async fn variables_stay_out_of_the_container_env_on_a_per_job_network() {
    ensure_test_images();
    let docker = docker().await;
    let secret = "s3cr3t-value-not-in-env";
    let job = job(
        &[
            "echo ready-$((40+2))",
            "test \"$MY_SECRET\" = s3cr3t-value-not-in-env",
            "sleep 30",
        ],
        None,
        json!({"variables": [
            {"key": "MY_SECRET", "value": secret, "masked": true},
            {"key": "FF_NETWORK_PER_BUILD", "value": "true", "public": true},
        ]}),
    );
    let started = start(job);
    let settings = DockerConfig {
        network_mode: None,
        network_per_build: flotilla::config::SubnetPool::parse("172.31.0.0/16", 28).unwrap(),
        ..host_settings()
    };
    let task = {
        let docker = docker.clone();
        let run = started.run;
        tokio::spawn(async move { run_job(&docker, &settings, run).await })
    };
    wait_for_text(&started.trace, "$ sleep 30", WAIT).await;
    let inspected = inspect_build_container(&docker, started.job_id).await;
    let config = inspected.config.expect("container config");
    let env = config.env.unwrap_or_default().join("\n");
    assert!(!env.contains(secret), "secret in Env: {env}");
    assert!(!env.contains("MY_SECRET"), "variable in Env: {env}");
    assert!(!env.contains("CI_JOB_ID"), "variable in Env: {env}");
    let labels = config.labels.unwrap_or_default();
    assert_eq!(
        labels.get("com.flotilla.runner").map(String::as_str),
        Some(RUNNER)
    );
    assert_eq!(
        labels.get("com.flotilla.managed").map(String::as_str),
        Some("true")
    );
    let host = inspected.host_config.expect("host config");
    let network = host.network_mode.unwrap_or_default();
    let prefix = format!("flotilla-{RUNNER}-{}-", started.job_id);
    assert!(
        network.starts_with(&prefix) && network.ends_with("-network"),
        "a per-job network, got {network:?}"
    );
    // A /28 carved from the pool, not a /16 or /20 from the engine's default pools.
    let made = docker
        .inspect_network(&network, None)
        .await
        .expect("the job's network");
    let subnets: Vec<String> = made
        .ipam
        .and_then(|i| i.config)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|c| c.subnet)
        .collect();
    assert!(
        matches!(subnets.as_slice(), [one] if one.starts_with("172.31.") && one.ends_with("/28")),
        "{subnets:?}"
    );
    let log_type = host.log_config.and_then(|l| l.typ);
    assert_eq!(log_type.as_deref(), Some("none"));

    started.cancel.cancel();
    let outcome = tokio::time::timeout(WAIT, task)
        .await
        .expect("the job ends after a cancel")
        .expect("the job task");
    assert_eq!(
        outcome,
        JobOutcome::Canceled,
        "{}",
        trace_text(&started.trace)
    );
    assert_nothing_left(&docker, started.job_id).await;
}

/// As GitLab Runner without `FF_NETWORK_PER_BUILD`: with `network_mode` unset the job gets no
/// network of its own; its containers are on the engine's default bridge.
#[tokio::test]
async fn without_the_feature_flag_a_job_makes_no_network() {
    ensure_test_images();
    let docker = docker().await;
    let job = job(&["echo ready-$((40+2))", "sleep 30"], None, json!({}));
    let started = start(job);
    let settings = DockerConfig {
        network_mode: None,
        ..host_settings()
    };
    let task = {
        let docker = docker.clone();
        let run = started.run;
        tokio::spawn(async move { run_job(&docker, &settings, run).await })
    };
    wait_for_text(&started.trace, "$ sleep 30", WAIT).await;
    let inspected = inspect_build_container(&docker, started.job_id).await;
    let network = inspected.host_config.and_then(|h| h.network_mode);
    assert!(
        matches!(network.as_deref(), None | Some("" | "default" | "bridge")),
        "the default bridge, got {network:?}"
    );
    let filters = std::collections::HashMap::from([(
        "label",
        vec![format!("com.flotilla.job-id={}", started.job_id)],
    )]);
    let options = bollard::query_parameters::ListNetworksOptionsBuilder::new()
        .filters(&filters)
        .build();
    let networks = docker.list_networks(Some(options)).await.expect("networks");
    assert!(
        networks.is_empty(),
        "no network of the job's own: {networks:?}"
    );
    started.cancel.cancel();
    let outcome = tokio::time::timeout(WAIT, task)
        .await
        .expect("the job ends after a cancel")
        .expect("the job task");
    assert_eq!(
        outcome,
        JobOutcome::Canceled,
        "{}",
        trace_text(&started.trace)
    );
    assert_nothing_left(&docker, started.job_id).await;
}

#[tokio::test]
async fn a_dropped_job_still_removes_its_containers() {
    ensure_test_images();
    let docker = docker().await;
    let job = job(&["echo ready-$((40+2))", "sleep 30"], None, json!({}));
    let started = start(job);
    let task = {
        let docker = docker.clone();
        let run = started.run;
        tokio::spawn(async move { run_job(&docker, &host_settings(), run).await })
    };
    wait_for_text(&started.trace, "ready-42", WAIT).await;
    task.abort();
    assert!(task.await.expect_err("the task was aborted").is_cancelled());
    wait_until_nothing_left(&docker, started.job_id, WAIT).await;
}

#[tokio::test]
async fn a_container_removed_under_the_job_is_a_lost_host() {
    ensure_test_images();
    let docker = docker().await;
    let job = job(
        &["echo ready-$((40+2))", "sleep 30"],
        Some(&["echo after-script-ran"]),
        json!({}),
    );
    let started = start(job);
    let task = {
        let docker = docker.clone();
        let run = started.run;
        tokio::spawn(async move { run_job(&docker, &host_settings(), run).await })
    };
    wait_for_text(&started.trace, "ready-42", WAIT).await;
    let id = inspect_build_container(&docker, started.job_id)
        .await
        .id
        .expect("a container id");
    let force = bollard::query_parameters::RemoveContainerOptionsBuilder::new()
        .force(true)
        .build();
    docker
        .remove_container(&id, Some(force))
        .await
        .expect("removing the build container");
    let outcome = tokio::time::timeout(WAIT, task)
        .await
        .expect("the job ends when its container goes")
        .expect("the job task");
    let text = trace_text(&started.trace);
    assert!(
        matches!(outcome, JobOutcome::HostLost(_)),
        "{outcome:?}\n{text}"
    );
    assert!(!text.contains("after-script-ran"), "{text}");
    assert_nothing_left(&docker, started.job_id).await;
}
