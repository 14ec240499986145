//! The test kit's fake Docker Engine (issue 13): it answers bollard as dockerd does (status
//! codes, error messages, hijacked attach with multiplexed frames, wait conditions), the
//! `docker` executor runs whole jobs on it, and the fake GCE's VMs forward their mutual-TLS
//! Docker endpoint to it so docker+machine jobs run on it too.

use crate::harness::{config, fake_gitlab, job, InProcessManager, DEADLINE, TEST_IMAGE};
use bollard::models::{ContainerCreateBody, NetworkCreateRequest, VolumeCreateRequest};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, KillContainerOptions,
    RemoveContainerOptionsBuilder, StartContainerOptions, WaitContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::StreamExt;
use std::collections::HashMap;
use std::time::Duration;
use testkit::{
    Behaviour, FakeDocker, FakeDockerOptions, FakeGce, FakeGceOptions, FakeGitlabOptions, JobState,
    ZoneSpec,
};
use tokio::io::AsyncWriteExt;

const LINE: &str = "fake-engine-line";

fn options() -> FakeDockerOptions {
    FakeDockerOptions {
        images: vec![TEST_IMAGE.to_owned()],
        behaviours: HashMap::from([(
            TEST_IMAGE.to_owned(),
            Behaviour {
                run_time: Duration::from_millis(300),
                line_every: Some(Duration::from_millis(100)),
                line: LINE.to_owned(),
                exit_code: 0,
            },
        )]),
        default: Behaviour::default(),
        start_latency: Duration::ZERO,
    }
}

async fn client(fake: &FakeDocker) -> Docker {
    Docker::connect_with_unix(
        &fake.socket().to_string_lossy(),
        30,
        bollard::API_DEFAULT_VERSION,
    )
    .expect("client")
    .negotiate_version()
    .await
    .expect("negotiate the API version with the fake")
}

fn status_of(e: &bollard::errors::Error) -> u16 {
    match e {
        bollard::errors::Error::DockerResponseServerError { status_code, .. } => *status_code,
        other => panic!("expected an engine error, got {other:?}"),
    }
}

#[tokio::test]
async fn fake_engine_answers_as_dockerd_does() {
    let fake = FakeDocker::start(options()).await.expect("fake docker");
    let docker = client(&fake).await;
    docker.ping().await.expect("ping");
    assert_eq!(
        docker
            .version()
            .await
            .expect("version")
            .api_version
            .as_deref(),
        Some("1.41")
    );
    let missing = docker.inspect_image("nope:1").await.unwrap_err();
    assert_eq!(status_of(&missing), 404);
    assert!(docker.inspect_image("flotilla-test/busybox").await.is_ok());

    let body = |image: &str| ContainerCreateBody {
        image: Some(image.into()),
        open_stdin: Some(true),
        stdin_once: Some(true),
        attach_stdin: Some(true),
        attach_stdout: Some(true),
        labels: Some(HashMap::from([("it.fake".into(), "1".into())])),
        ..Default::default()
    };
    let named = |n: &str| Some(CreateContainerOptionsBuilder::new().name(n).build());
    let e = docker
        .create_container(named("c-missing"), body("nope:1"))
        .await
        .unwrap_err();
    assert_eq!(status_of(&e), 404);
    let id = docker
        .create_container(named("c-one"), body(TEST_IMAGE))
        .await
        .expect("create")
        .id;
    let e = docker
        .create_container(named("c-one"), body(TEST_IMAGE))
        .await
        .unwrap_err();
    assert_eq!(status_of(&e), 409, "a taken name is a conflict");
    let e = docker
        .kill_container("c-one", None::<KillContainerOptions>)
        .await
        .unwrap_err();
    assert_eq!(status_of(&e), 409, "killing a created container");

    // Attach (hijacked), start, write the "script", read the frames, wait for the exit code.
    let attach = AttachContainerOptionsBuilder::new()
        .stdin(true)
        .stdout(true)
        .stderr(true)
        .stream(true)
        .build();
    let mut io = docker
        .attach_container(&id, Some(attach))
        .await
        .expect("attach");
    docker
        .start_container(&id, None::<StartContainerOptions>)
        .await
        .expect("start");
    let e = docker.remove_container(&id, None).await.unwrap_err();
    assert_eq!(
        status_of(&e),
        409,
        "removing a running container without force"
    );
    io.input.write_all(b"echo hi\n").await.expect("stdin");
    io.input.shutdown().await.expect("close stdin");
    let mut out = String::new();
    while let Some(item) = io.output.next().await {
        out.push_str(&item.expect("frame").to_string());
    }
    assert_eq!(
        out.matches(LINE).count(),
        4,
        "lines at 0, 100, 200, 300 ms: {out}"
    );
    let wait = WaitContainerOptionsBuilder::new()
        .condition("not-running")
        .build();
    let done = docker
        .wait_container(&id, Some(wait))
        .next()
        .await
        .expect("a wait answer")
        .expect("exit 0");
    assert_eq!(done.status_code, 0);
    let inspected = docker.inspect_container(&id, None).await.expect("inspect");
    assert_eq!(
        inspected
            .state
            .and_then(|s| s.status)
            .map(|s| s.to_string()),
        Some("exited".to_owned())
    );

    // Volumes in use and networks by name behave as the engine's.
    docker
        .create_volume(VolumeCreateRequest {
            name: Some("v-one".into()),
            ..Default::default()
        })
        .await
        .expect("volume");
    let network = NetworkCreateRequest {
        name: "n-one".into(),
        ..Default::default()
    };
    docker
        .create_network(network.clone())
        .await
        .expect("network");
    let e = docker.create_network(network).await.unwrap_err();
    assert_eq!(status_of(&e), 409);
    docker
        .remove_network("n-one")
        .await
        .expect("remove network");
    let e = docker.remove_network("n-one").await.unwrap_err();
    assert_eq!(status_of(&e), 404);
    let force = RemoveContainerOptionsBuilder::new().force(true).build();
    docker
        .remove_container(&id, Some(force))
        .await
        .expect("remove");
    let e = docker.inspect_container(&id, None).await.unwrap_err();
    assert_eq!(status_of(&e), 404);
    docker
        .remove_volume(
            "v-one",
            None::<bollard::query_parameters::RemoveVolumeOptions>,
        )
        .await
        .expect("remove volume");
    assert_eq!(fake.stats().containers, 0);
}

/// The harness's `docker` runner configuration with `extra_runner`, its engine the fake.
fn config_on(
    fake: &FakeDocker,
    gitlab: &testkit::FakeGitlab,
    token: &str,
    state_dir: &std::path::Path,
    extra_runner: &str,
) -> String {
    crate::harness::config_text(&gitlab.url(), token, state_dir, "", extra_runner).replace(
        "[runners.docker]\n",
        &format!("[runners.docker]\nhost = \"{}\"\n", fake.host()),
    )
}

/// Enqueues `n` jobs echoing a line, waits for each to finish and checks it succeeded; their
/// records.
async fn jobs_to_success(
    gitlab: &testkit::FakeGitlab,
    token: &str,
    n: usize,
) -> Vec<testkit::JobRecord> {
    let ids: Vec<i64> = (0..n)
        .map(|_| gitlab.enqueue(token, job(&["echo from-the-job"], &[])))
        .collect();
    let mut records = Vec::new();
    for id in ids {
        let rec = gitlab
            .wait_job(id, DEADLINE, |j| j.state.is_finished())
            .await
            .expect("the job finishes");
        assert_eq!(rec.state, JobState::Success, "{}", rec.trace_text());
        records.push(rec);
    }
    records
}

#[tokio::test]
async fn docker_executor_runs_jobs_on_the_fake_engine() {
    let fake = FakeDocker::start(options()).await.expect("fake docker");
    let (gitlab, token) = fake_gitlab(FakeGitlabOptions::default()).await;
    let state_dir = tempfile::tempdir().expect("tempdir");
    let text = config_on(&fake, &gitlab, &token, state_dir.path(), "");
    let manager = InProcessManager::start_with(config(&text), state_dir, Default::default());
    for rec in jobs_to_success(&gitlab, &token, 3).await {
        let trace = rec.trace_text();
        assert!(
            trace.contains(LINE),
            "the fake's output reaches the trace: {trace}"
        );
    }
    manager.drain().await;
    let stats = fake.stats();
    assert!(stats.created >= 3, "{stats:?}");
    assert_eq!(stats.containers, 0, "every container removed: {stats:?}");
    assert_eq!(stats.volumes, 0, "every volume removed: {stats:?}");
}

/// A burst of jobs on one shared engine whose starts are slow (as dockerd's are under a burst):
/// the manager keeps at most `STARTS_IN_FLIGHT` starts waiting on the engine, and every job
/// still runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_jobs_keeps_the_engines_starts_in_flight_bounded() {
    let jobs = 40;
    let fake = FakeDocker::start(FakeDockerOptions {
        start_latency: Duration::from_secs(1),
        ..options()
    })
    .await
    .expect("fake docker");
    let (gitlab, token) = fake_gitlab(FakeGitlabOptions::default()).await;
    let state_dir = tempfile::tempdir().expect("tempdir");
    let text = config_on(
        &fake,
        &gitlab,
        &token,
        state_dir.path(),
        "request_concurrency = 4",
    )
    .replace("concurrent = 4\n", &format!("concurrent = {jobs}\n"));
    let manager = InProcessManager::start_with(config(&text), state_dir, Default::default());
    jobs_to_success(&gitlab, &token, jobs).await;
    manager.drain().await;
    let stats = fake.stats();
    let bound = flotilla::executor::STARTS_IN_FLIGHT as u64;
    assert!(
        stats.peak_starts_in_flight <= bound,
        "{} starts in flight at once (at most {bound}): {stats:?}",
        stats.peak_starts_in_flight
    );
    assert!(
        stats.peak_starts_in_flight > 1,
        "the starts never overlapped, so the bound was not exercised: {stats:?}"
    );
}

#[tokio::test]
async fn machine_jobs_run_on_the_fake_engine_through_vm_tls() {
    let fake = FakeDocker::start(options()).await.expect("fake docker");
    let (gitlab, token) = fake_gitlab(FakeGitlabOptions::default()).await;
    let zone = "us-central1-a";
    let gce = FakeGce::start(FakeGceOptions {
        zones: vec![ZoneSpec::new(zone, Duration::ZERO)],
        docker_socket: fake.socket().to_path_buf(),
        wait_cap: Duration::from_secs(3),
        ..FakeGceOptions::default()
    })
    .await
    .expect("fake gce");
    let state_dir = tempfile::tempdir().expect("tempdir");
    let text = format!(
        r#"
concurrent = 2
check_interval = 1
shutdown_timeout = 20
state_dir = "{state}"
manager_id = "it-fake-{rand:08x}"
[[runners]]
name = "it-fake-docker"
url = "{url}"
token = "{token}"
executor = "docker+machine"
limit = 2
[runners.machine]
MachineName = "itfd-%s"
IdleCount = 1
MaxBuilds = 1
[runners.gce]
project = "{project}"
zones = ["{zone}"]
endpoint = "{endpoint}"
create_timeout = 30
[runners.docker]
image = "{TEST_IMAGE}"
pull_policy = ["if-not-present"]
network_mode = "host"
"#,
        state = state_dir.path().display(),
        rand = rand::random::<u32>(),
        url = gitlab.url(),
        project = gce.project(),
        endpoint = gce.endpoint(),
    );
    let manager = InProcessManager::start_with(config(&text), state_dir, Default::default());
    let id = gitlab.enqueue(&token, job(&["echo on-a-vm"], &[]));
    let rec = gitlab
        .wait_job(id, DEADLINE, |j| j.state.is_finished())
        .await
        .expect("the job finishes");
    let trace = rec.trace_text();
    assert_eq!(rec.state, JobState::Success, "{trace}");
    assert!(trace.contains(LINE), "{trace}");
    assert!(trace.contains("Running on VM runner-"), "{trace}");
    manager.drain().await;
    assert!(
        gce.instances().is_empty(),
        "VMs left: {:?}",
        gce.instances()
    );
    gce.shutdown().await;
    assert!(fake.stats().created >= 1);
}
