//! Service containers on the real local engine: a service answers the job by its aliases (its
//! own and the ones derived from its image name) on the per-job network and in host mode, with
//! its own variables plus the job's public ones; a service whose port never opens gets GitLab
//! Runner's warning with its logs in the trace within `wait_for_services_timeout`, and the job
//! goes on; everything is removed afterwards. `GIT_STRATEGY=none`: no container needs the fakes.

use crate::support::{
    assert_nothing_left, docker, ensure_test_images, trace_text, wait_for_text, BUSYBOX,
};
use flotilla::config::{DockerConfig, PullPolicy};
use flotilla::executor::{run_job, JobOutcome};
use flotilla::job::JobPayload;
use serde_json::{json, Value};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A job id no other test (or test process) uses at the same time.
fn fresh_job_id() -> i64 {
    2_000_000_000 + i64::from(rand::random::<u32>() >> 4)
}

/// A bash loop that GETs `path` from `host:port` until it answers (at most ~30 s), then prints
/// the answer. Bash's `/dev/tcp` resolves names with glibc, which the job image (the helper
/// image, a Debian root) has: the static busybox's resolver cannot read `/etc/hosts` or DNS.
fn fetch(host: &str, port: u16, path: &str) -> String {
    format!(
        "for i in $(seq 1 300); do \
           if (exec 3<>/dev/tcp/{host}/{port} && printf 'GET {path} HTTP/1.0\\r\\n\\r\\n' >&3 \
               && cat <&3) > /tmp/out 2>/dev/null && grep -q 200 /tmp/out; then break; fi; \
           sleep 0.1; \
         done; cat /tmp/out"
    )
}

/// A job in `image` (the helper image: it has bash and glibc) with `services`, running `script`.
async fn job_with_services(script: &[String], services: Value, variables: Value) -> JobPayload {
    let id = fresh_job_id();
    let mut vars = vec![
        json!({"key": "GIT_STRATEGY", "value": "none", "public": true}),
        json!({"key": "CI_JOB_ID", "value": id.to_string(), "public": true}),
    ];
    vars.extend(variables.as_array().cloned().unwrap_or_default());
    serde_json::from_value(json!({
        "id": id,
        "token": "job-token-not-used",
        "job_info": {"project_id": 9, "project_full_path": "group/svc"},
        "runner_info": {"timeout": 120},
        "image": {"name": helper_image().await},
        "services": services,
        "steps": [{"name": "script", "script": script, "when": "on_success"}],
        "variables": vars,
    }))
    .expect("a valid job payload")
}

/// An httpd service on `port` serving `PONG-<greeting>-<job id>` at `/` and its environment at
/// `/env.txt`.
fn httpd_service(alias: &str, port: u16) -> Value {
    json!({
        "name": BUSYBOX,
        "alias": alias,
        "command": ["sh", "-c", format!(
            "mkdir -p /www && echo \"PONG-$SVC_GREETING-$CI_JOB_ID\" > /www/index.html \
             && env > /www/env.txt && exec httpd -f -p {port} -h /www"
        )],
        "variables": [
            {"key": "SVC_GREETING", "value": "hello"},
            {"key": "HEALTHCHECK_TCP_PORT", "value": port.to_string()},
        ],
    })
}

/// Runner settings: images from the engine's store, the test build's helper image.
async fn settings(network_mode: Option<&str>, wait: Option<Duration>) -> DockerConfig {
    DockerConfig {
        network_mode: network_mode.map(str::to_string),
        pull_policy: vec![PullPolicy::IfNotPresent],
        wait_for_services_timeout: wait,
        helper_image: Some(helper_image().await),
        ..DockerConfig::default()
    }
}

use crate::harness::helper_image;

/// Runs `job` to its end; its outcome and trace, after checking nothing of it is left.
async fn run(job: JobPayload, settings: DockerConfig) -> (JobOutcome, String) {
    run_with(job, settings, |_| {}).await
}

/// As [`run`], handing the job's trace and abort token to `watch` once the job has started.
async fn run_with(
    job: JobPayload,
    settings: DockerConfig,
    watch: impl FnOnce((flotilla::trace::JobTrace, CancellationToken)),
) -> (JobOutcome, String) {
    ensure_test_images();
    let docker = docker().await;
    let crate::executor::Started {
        run, trace, job_id, ..
    } = crate::executor::start(job);
    watch((trace.clone(), run.abort.clone()));
    let outcome = run_job(&docker, &settings, run).await;
    let text = trace_text(&trace);
    assert_nothing_left(&docker, job_id).await;
    (outcome, text)
}

/// A TCP port nothing listens on right now.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}

#[tokio::test]
async fn a_service_answers_the_job_by_its_aliases_on_the_per_job_network() {
    let job = job_with_services(
        &[
            fetch("web", 8080, "/"),
            fetch("cache-db", 8080, "/"),
            fetch("flotilla-test-busybox", 8080, "/"),
            format!(
                "{} > /dev/null; grep SVC_GREETING /tmp/out; grep -c JOB_SECRET /tmp/out || true",
                fetch("web", 8080, "/env.txt")
            ),
            "getent hosts build".into(),
        ],
        json!([httpd_service("web,cache-db", 8080)]),
        json!([{"key": "JOB_SECRET", "value": "masked-and-private", "public": false, "masked": true}]),
    )
    .await;
    let id = job.id;
    let (outcome, text) = run(job, settings(None, Some(Duration::from_secs(60))).await).await;
    assert_eq!(outcome, JobOutcome::Succeeded, "{text}");
    assert!(
        text.contains("Starting service flotilla-test/busybox:latest ..."),
        "{text}"
    );
    assert!(
        text.contains("Waiting for services to be up and running (timeout 60 seconds)"),
        "{text}"
    );
    assert!(!text.contains("probably didn't start properly"), "{text}");
    let pong = format!("PONG-hello-{id}");
    assert_eq!(
        text.matches(&pong).count(),
        3,
        "three aliases answer:\n{text}"
    );
    assert!(text.contains("\nSVC_GREETING=hello"), "{text}");
    assert!(
        text.contains("build\n"),
        "the job container is `build`:\n{text}"
    );
    assert!(!text.contains("masked-and-private"), "{text}");
    assert!(
        text.contains("\n0\n"),
        "a non-public variable reached the service:\n{text}"
    );
}

#[tokio::test]
async fn a_service_answers_by_its_alias_in_host_network_mode() {
    let port = free_port();
    let job = job_with_services(
        &[fetch("web", port, "/"), "cat /etc/hosts".into()],
        json!([httpd_service("web", port)]),
        json!([]),
    )
    .await;
    let id = job.id;
    let (outcome, text) = run(
        job,
        settings(Some("host"), Some(Duration::from_secs(60))).await,
    )
    .await;
    assert_eq!(outcome, JobOutcome::Succeeded, "{text}");
    assert!(text.contains(&format!("PONG-hello-{id}")), "{text}");
    assert!(
        text.contains("127.0.0.1\tweb") || text.contains("127.0.0.1 web"),
        "{text}"
    );
    assert!(!text.contains("probably didn't start properly"), "{text}");
}

#[tokio::test]
async fn a_service_that_never_opens_its_port_is_reported_with_its_logs_and_the_job_goes_on() {
    let closed = free_port();
    let job = job_with_services(
        &["echo job-went-on".into()],
        json!([{
            "name": BUSYBOX,
            "alias": "broken",
            "command": ["sh", "-c", "echo broken-service-says-hi; exec sleep 300"],
            "variables": [{"key": "HEALTHCHECK_TCP_PORT", "value": closed.to_string()}],
        }]),
        json!([]),
    )
    .await;
    let began = tokio::time::Instant::now();
    let (outcome, text) = run(
        job,
        settings(Some("host"), Some(Duration::from_secs(3))).await,
    )
    .await;
    assert_eq!(outcome, JobOutcome::Succeeded, "{text}");
    assert!(
        began.elapsed() < Duration::from_secs(45),
        "{:?}",
        began.elapsed()
    );
    assert!(text.contains("*** WARNING:"), "{text}");
    assert!(text.contains("probably didn't start properly."), "{text}");
    assert!(text.contains("Health check error:"), "{text}");
    assert!(text.contains("timeout"), "{text}");
    assert!(
        text.contains(&format!(
            "waiting for TCP connection to 127.0.0.1 on [{closed}]"
        )),
        "{text}"
    );
    assert!(text.contains("Service container logs:"), "{text}");
    assert!(text.contains("broken-service-says-hi"), "{text}");
    assert!(text.contains("job-went-on"), "{text}");
}

#[tokio::test]
async fn a_service_without_exposed_ports_is_reported_and_waiting_can_be_turned_off() {
    let service = json!([{
        "name": BUSYBOX,
        "command": ["sh", "-c", "echo no-ports-here; exec sleep 300"],
    }]);
    let job = job_with_services(&["echo done".into()], service.clone(), json!([])).await;
    let (outcome, text) = run(job, settings(None, Some(Duration::from_secs(5))).await).await;
    assert_eq!(outcome, JobOutcome::Succeeded, "{text}");
    assert!(text.contains("has no exposed ports"), "{text}");
    // The service's logs are read as soon as it is found to have no ports, which may be before
    // it printed anything: the logs of a failing service are checked by the test above, whose
    // wait gives the service time to print.

    let job = job_with_services(&["echo done".into()], service, json!([])).await;
    let (outcome, text) = run(job, settings(None, None).await).await;
    assert_eq!(outcome, JobOutcome::Succeeded, "{text}");
    assert!(text.contains("Starting service"), "{text}");
    assert!(!text.contains("Waiting for services"), "{text}");
}

#[tokio::test]
async fn services_outside_allowed_services_or_over_the_limit_fail_the_job() {
    let service = json!([{"name": BUSYBOX, "command": ["sleep", "300"]}]);
    let job = job_with_services(&["echo never".into()], service.clone(), json!([])).await;
    let mut s = settings(None, None).await;
    s.allowed_services = vec!["postgres:*".into(), "registry.example.com/**".into()];
    let (outcome, text) = run(job, s).await;
    assert!(
        matches!(&outcome, JobOutcome::SystemFailure { reason, message }
            if *reason == flotilla::job::FailureReason::RunnerConfigurationError
                && message.contains("disallowed service image")),
        "{outcome:?}\n{text}"
    );
    assert!(
        text.contains(&format!(
            "The \"{BUSYBOX}\" image is not present on list of allowed services:"
        )),
        "{text}"
    );
    assert!(text.contains("- registry.example.com/**"), "{text}");
    assert!(!text.contains("Starting service"), "{text}");

    let job = job_with_services(&["echo allowed".into()], service.clone(), json!([])).await;
    let mut s = settings(None, None).await;
    s.allowed_services = vec!["flotilla-test/*:*".into()];
    let (outcome, text) = run(job, s).await;
    assert_eq!(outcome, JobOutcome::Succeeded, "{text}");

    let job = job_with_services(&["echo never".into()], service, json!([])).await;
    let mut s = settings(None, None).await;
    s.services_limit = Some(0);
    let (outcome, text) = run(job, s).await;
    assert!(
        matches!(&outcome, JobOutcome::SystemFailure { message, .. }
            if message.contains("too many services requested: 1, only 0 allowed")),
        "{outcome:?}\n{text}"
    );
}

#[tokio::test]
async fn a_service_image_that_cannot_be_had_fails_the_job_as_an_image_pull_failure() {
    let job = job_with_services(
        &["echo never".into()],
        json!([{"name": "flotilla-test/no-such-service:1"}]),
        json!([]),
    )
    .await;
    let mut s = settings(None, None).await;
    s.pull_policy = vec![PullPolicy::Never];
    let (outcome, text) = run(job, s).await;
    assert!(
        matches!(&outcome, JobOutcome::SystemFailure { reason, .. }
            if *reason == flotilla::job::FailureReason::ImagePullFailure),
        "{outcome:?}\n{text}"
    );
    assert!(text.contains("flotilla-test/no-such-service:1"), "{text}");
    assert!(!text.contains("never\n"), "{text}");
}

/// End to end: the fake GitLab hands out a job with a service (GitLab fails such jobs as
/// `runner_unsupported` unless the runner advertises `services`, `service_variables` and
/// `service_multiple_aliases`), the manager runs it in host mode, the service answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_from_gitlab_reaches_its_service_by_alias() {
    use crate::harness::{config, config_text, fake_gitlab, finished, InProcessManager};
    ensure_test_images();
    let (gitlab, token) = fake_gitlab(testkit::FakeGitlabOptions::default()).await;
    let state_dir = tempfile::tempdir().expect("tempdir");
    let text = config_text(&gitlab.url(), &token, state_dir.path(), "", "")
        + &format!(
            "helper_image = \"{}\"\nwait_for_services_timeout = 60\n",
            helper_image().await
        );
    let manager = InProcessManager::start_with(
        config(&text),
        state_dir,
        flotilla::manager::Hooks::default(),
    );
    let port = free_port();
    let payload = json!({
        "image": {"name": helper_image().await},
        "services": [httpd_service("web, api", port)],
        "steps": [{"name": "script", "script": [fetch("api", port, "/")], "timeout": 3600,
                   "when": "on_success", "allow_failure": false}],
        "variables": [
            {"key": "GIT_STRATEGY", "value": "none", "public": true},
            {"key": "CI_JOB_ID", "value": "e2e", "public": true},
        ],
    });
    let id = gitlab.enqueue(&token, payload);
    let (record, trace) = finished(&gitlab, id).await;
    assert_eq!(record.state, testkit::JobState::Success, "trace:\n{trace}");
    assert!(trace.contains("PONG-hello-e2e"), "trace:\n{trace}");
    assert!(
        !trace.contains("probably didn't start properly"),
        "trace:\n{trace}"
    );
    assert!(crate::harness::containers_of_job(&token, id).is_empty());
    manager.drain().await;
}

#[tokio::test]
async fn an_abort_while_waiting_for_services_removes_them() {
    let closed = free_port();
    let job = job_with_services(
        &["echo never".into()],
        json!([{
            "name": BUSYBOX,
            "command": ["sleep", "300"],
            "variables": [{"key": "HEALTHCHECK_TCP_PORT", "value": closed.to_string()}],
        }]),
        json!([]),
    )
    .await;
    let began = tokio::time::Instant::now();
    let (outcome, text) = run_with(
        job,
        settings(Some("host"), Some(Duration::from_secs(120))).await,
        |(trace, abort)| {
            tokio::spawn(async move {
                wait_for_text(&trace, "Waiting for services", Duration::from_secs(60)).await;
                abort.cancel();
            });
        },
    )
    .await;
    // `run` has checked that no container (service or wait), volume or network is left.
    assert_eq!(outcome, JobOutcome::Canceled, "{text}");
    assert!(
        began.elapsed() < Duration::from_secs(60),
        "{:?}",
        began.elapsed()
    );
    assert!(!text.contains("never\n"), "{text}");
}

#[tokio::test]
async fn on_the_default_bridge_aliases_point_at_the_service_address() {
    let job = job_with_services(
        &[fetch("web", 8080, "/")],
        json!([httpd_service("web", 8080)]),
        json!([]),
    )
    .await;
    let id = job.id;
    let (outcome, text) = run(
        job,
        settings(Some("bridge"), Some(Duration::from_secs(60))).await,
    )
    .await;
    assert_eq!(outcome, JobOutcome::Succeeded, "{text}");
    assert!(text.contains(&format!("PONG-hello-{id}")), "{text}");
    assert!(!text.contains("probably didn't start properly"), "{text}");
}

/// GitLab Runner's labels (`com.gitlab.gitlab-runner.*`) on a running job's build and service
/// containers, its network and its builds volume, beside Flotilla's own.
#[tokio::test]
async fn a_running_jobs_objects_carry_gitlab_runner_labels() {
    use bollard::query_parameters::{
        ListContainersOptionsBuilder, ListNetworksOptionsBuilder, ListVolumesOptionsBuilder,
    };
    use std::collections::HashMap;
    ensure_test_images();
    let docker = docker().await;
    let mut job = job_with_services(
        &["echo labelled-$((40+2))".into(), "sleep 60".into()],
        json!([{"name": BUSYBOX, "alias": "idle", "command": ["sleep", "120"]}]),
        json!([]),
    )
    .await;
    let sha = "a".repeat(40);
    let before_sha = "b".repeat(40);
    job.git_info.sha = sha.clone();
    job.git_info.before_sha = before_sha.clone();
    job.git_info.git_ref = "main".into();
    job.git_info.repo_url = format!(
        "http://gitlab-ci-token:{}@127.0.0.1:1/group/svc.git",
        "x".repeat(20)
    );
    job.job_info.pipeline_id = 4242;
    let crate::executor::Started {
        run, trace, job_id, ..
    } = crate::executor::start(job);
    let abort = run.abort.clone();
    let settings = settings(None, None).await;
    let task = {
        let docker = docker.clone();
        tokio::spawn(async move { run_job(&docker, &settings, run).await })
    };
    wait_for_text(&trace, "labelled-42", Duration::from_secs(60)).await;

    let filter = HashMap::from([(
        "label",
        vec![format!("com.gitlab.gitlab-runner.job.id={job_id}")],
    )]);
    let containers = docker
        .list_containers(Some(
            ListContainersOptionsBuilder::new()
                .all(true)
                .filters(&filter)
                .build(),
        ))
        .await
        .expect("listing containers");
    let mut types: Vec<String> = Vec::new();
    for container in &containers {
        let labels = container.labels.clone().unwrap_or_default();
        let get = |k: &str| {
            labels
                .get(&format!("com.gitlab.gitlab-runner.{k}"))
                .cloned()
                .unwrap_or_else(|| panic!("no label {k} on {container:?}"))
        };
        assert_eq!(get("job.id"), job_id.to_string());
        assert_eq!(
            get("job.url"),
            format!("http://127.0.0.1:1/group/svc/-/jobs/{job_id}")
        );
        assert_eq!(get("job.sha"), sha);
        assert_eq!(get("job.before_sha"), before_sha);
        assert_eq!(get("job.ref"), "main");
        assert_eq!(get("job.timeout"), "2m0s");
        assert_eq!(get("project.id"), "9");
        assert_eq!(get("project.runner_id"), "0");
        assert_eq!(get("pipeline.id"), "4242");
        assert_eq!(get("runner.id"), "ittest");
        assert_eq!(get("runner.local_id"), "0");
        assert_eq!(get("runner.system_id"), "");
        assert_eq!(get("managed"), "true");
        assert_eq!(
            labels.get("com.flotilla.job-id"),
            Some(&job_id.to_string()),
            "Flotilla's labels stay"
        );
        if get("type") == "service" {
            assert_eq!(get("service"), "flotilla-test/busybox");
            assert_eq!(get("service.version"), "latest");
        }
        types.push(get("type"));
    }
    types.sort();
    assert_eq!(types, ["build", "service"], "{containers:?}");
    let networks = docker
        .list_networks(Some(
            ListNetworksOptionsBuilder::new().filters(&filter).build(),
        ))
        .await
        .expect("listing networks");
    assert_eq!(networks.len(), 1, "the per-job network: {networks:?}");
    let volumes = docker
        .list_volumes(Some(
            ListVolumesOptionsBuilder::new().filters(&filter).build(),
        ))
        .await
        .expect("listing volumes")
        .volumes
        .unwrap_or_default();
    assert!(
        volumes.iter().any(|v| v
            .labels
            .get("com.gitlab.gitlab-runner.type")
            .is_some_and(|t| t == "cache")),
        "the builds volume: {volumes:?}"
    );

    abort.cancel();
    let outcome = tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .expect("the job ends after an abort")
        .expect("the job task");
    assert_ne!(outcome, JobOutcome::Succeeded);
    assert_nothing_left(&docker, job_id).await;
}
