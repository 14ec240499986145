//! The helper container and `get_sources`: stages that run in the helper image (this build's
//! `flotilla` on the Debian base, from `harness::helper_image`), on the real local engine; jobs
//! from the fake GitLab clone real repositories it serves over smart HTTP.

use crate::executor::{host_settings, job, run_to_end};
use crate::harness::{
    config, config_text, containers_of_job, ensure_test_image, finished, helper_image, init_crypto,
    runner_token, InProcessManager, TEST_IMAGE,
};
use flotilla::config::DockerConfig;
use flotilla::executor::JobOutcome;
use flotilla::job::FailureReason;
use serde_json::{json, Value};
use testkit::{FakeGitlab, FakeGitlabOptions, GitRepos, JobState, Repo};

/// Host networking with this build's helper image.
async fn helper_settings() -> DockerConfig {
    DockerConfig {
        helper_image: Some(helper_image().await),
        ..host_settings()
    }
}

fn strategy(value: &str) -> serde_json::Value {
    json!({"variables": [{"key": "GIT_STRATEGY", "value": value, "public": true}]})
}

#[tokio::test]
async fn git_strategy_empty_runs_in_the_helper_container() {
    let settings = helper_settings().await;
    let image = settings.helper_image.clone().unwrap_or_default();
    let job = job(
        &["ls -A \"$CI_PROJECT_DIR\" | wc -l", "echo in $(pwd)"],
        None,
        strategy("empty"),
    );
    let (outcome, text, _) = run_to_end(job, settings).await;
    assert_eq!(outcome, JobOutcome::Succeeded, "{text}");
    assert!(
        text.contains(&format!("for {image}")),
        "the helper image was used: {text}"
    );
    assert!(
        text.contains("Skipping Git repository setup and creating an empty build directory"),
        "{text}"
    );
    assert!(text.contains("Skipping Git submodules setup"), "{text}");
    assert!(text.contains("in /builds/group/app"), "{text}");
}

#[tokio::test]
async fn git_strategy_none_starts_no_helper_container() {
    let settings = DockerConfig {
        helper_image: Some("flotilla-helper:does-not-exist".into()),
        ..host_settings()
    };
    let job = job(&["echo ran"], None, strategy("none"));
    let (outcome, text, _) = run_to_end(job, settings).await;
    assert_eq!(outcome, JobOutcome::Succeeded, "{text}");
    assert!(text.contains("Skipping Git repository setup"), "{text}");
    assert!(!text.contains("flotilla-helper"), "{text}");
}

#[tokio::test]
async fn a_missing_helper_image_fails_the_job_clearly() {
    let missing = format!("flotilla-helper:missing-{:08x}", rand::random::<u32>());
    let settings = DockerConfig {
        helper_image: Some(missing.clone()),
        ..host_settings()
    };
    let job = job(&["echo never"], None, strategy("empty"));
    let (outcome, text, _) = run_to_end(job, settings).await;
    match outcome {
        JobOutcome::SystemFailure { reason, message } => {
            assert_eq!(reason, FailureReason::RunnerConfigurationError);
            assert!(message.contains(&missing), "{message}");
            assert!(message.contains("build-helper-image.sh"), "{message}");
        }
        other => panic!("expected a configuration failure, got {other:?}\n{text}"),
    }
    assert!(!text.contains("never\n"), "{text}");
}

/// A fake GitLab serving repositories, the manager in-process with this build's helper image
/// on host networking.
struct GitSetup {
    gitlab: FakeGitlab,
    repos: GitRepos,
    token: String,
    manager: InProcessManager,
}

async fn git_setup() -> GitSetup {
    ensure_test_image();
    init_crypto();
    let image = helper_image().await;
    let (gitlab, repos) = FakeGitlab::start_with_git(FakeGitlabOptions::default())
        .await
        .expect("start the fake GitLab with git");
    let token = runner_token();
    gitlab.add_runner(&token);
    let state_dir = tempfile::tempdir().expect("tempdir");
    // `[runners.docker]` is the config text's last table: the key lands in it.
    let text = format!(
        "{}helper_image = \"{image}\"\n",
        config_text(&gitlab.url(), &token, state_dir.path(), "", "")
    );
    let manager = InProcessManager::start_with(config(&text), state_dir, Default::default());
    GitSetup {
        gitlab,
        repos,
        token,
        manager,
    }
}

/// A project path no other test uses.
fn project_path(name: &str) -> String {
    format!("group/{name}-{:08x}", rand::random::<u32>())
}

/// A job of project `path` at `sha` (ref `main`, pipeline `pipeline`), running `script` in
/// busybox with the given extra variables.
fn git_job(path: &str, sha: &str, pipeline: i64, script: &[&str], vars: &[(&str, &str)]) -> Value {
    let variables: Vec<Value> = vars
        .iter()
        .map(|(k, v)| json!({"key": k, "value": v, "public": true}))
        .collect();
    json!({
        "image": {"name": TEST_IMAGE},
        "job_info": {"project_full_path": path, "pipeline_id": pipeline},
        "git_info": {
            "ref": "main",
            "sha": sha,
            "depth": 20,
            "refspecs": [
                format!("+refs/pipelines/{pipeline}:refs/pipelines/{pipeline}"),
                "+refs/heads/main:refs/remotes/origin/main",
            ],
        },
        "steps": [{"name": "script", "script": script, "timeout": 3600, "when": "on_success", "allow_failure": false}],
        "variables": variables,
    })
}

/// A repository whose pipeline ref points at a first commit, with a second commit on `main`
/// after it: (repo, first sha, pipeline id).
fn repo_with_two_commits(repos: &GitRepos, name: &str) -> (Repo, String, i64) {
    let repo = repos.create(&project_path(name)).expect("create repo");
    let first = repo
        .commit("main", &[("README.md", "first version\n")], "first")
        .expect("first commit");
    let pipeline = 10_000 + i64::from(rand::random::<u16>());
    repo.set_ref(&format!("refs/pipelines/{pipeline}"), &first)
        .expect("pipeline ref");
    repo.commit("main", &[("README.md", "second version\n")], "second")
        .expect("second commit");
    (repo, first, pipeline)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_clones_the_payload_sha_not_the_branch_head() {
    let s = git_setup().await;
    let (repo, first, pipeline) = repo_with_two_commits(&s.repos, "clone");
    let id = s.gitlab.enqueue(
        &s.token,
        git_job(
            repo.path(),
            &first,
            pipeline,
            &["cat README.md", "ls -a"],
            &[("GIT_STRATEGY", "clone")],
        ),
    );
    let (record, trace) = finished(&s.gitlab, id).await;
    assert_eq!(record.state, JobState::Success, "trace:\n{trace}");
    assert!(trace.contains("first version"), "trace:\n{trace}");
    assert!(!trace.contains("second version"), "trace:\n{trace}");
    assert!(
        trace.contains("Fetching changes with git depth set to 20..."),
        "trace:\n{trace}"
    );
    assert!(
        trace.contains("Created fresh repository."),
        "trace:\n{trace}"
    );
    assert!(
        trace.contains(&format!(
            "Checking out {} as detached HEAD (ref is main)...",
            &first[..8]
        )),
        "trace:\n{trace}"
    );
    assert!(
        trace.contains("Skipping Git submodules setup"),
        "trace:\n{trace}"
    );
    assert!(!trace.contains(&record.token), "trace:\n{trace}");
    assert!(!trace.contains("gitlab-ci-token:"), "trace:\n{trace}");
    assert!(containers_of_job(&s.token, id).is_empty());
    s.manager.drain().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_by_default_into_git_clone_path_checks_out_the_sha() {
    let s = git_setup().await;
    let (repo, first, pipeline) = repo_with_two_commits(&s.repos, "fetch");
    // allow_git_fetch (the fake's default) and no GIT_STRATEGY: fetch.
    let id = s.gitlab.enqueue(
        &s.token,
        git_job(
            repo.path(),
            &first,
            pipeline,
            &["cat README.md", "echo \"at $(pwd) = $CI_PROJECT_DIR\""],
            &[("GIT_CLONE_PATH", "$CI_BUILDS_DIR/custom/place")],
        ),
    );
    let (record, trace) = finished(&s.gitlab, id).await;
    assert_eq!(record.state, JobState::Success, "trace:\n{trace}");
    assert!(trace.contains("first version"), "trace:\n{trace}");
    assert!(
        trace.contains("at /builds/custom/place = /builds/custom/place"),
        "trace:\n{trace}"
    );
    assert!(
        trace.contains("Fetching changes with git depth set to 20..."),
        "trace:\n{trace}"
    );
    s.manager.drain().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_job_token_fails_the_job_clearly_without_showing_it() {
    let s = git_setup().await;
    let (repo, first, pipeline) = repo_with_two_commits(&s.repos, "denied");
    let wrong = format!("wrong{:016x}", rand::random::<u64>());
    let host = s.gitlab.url().replace("http://", "");
    let mut job = git_job(
        repo.path(),
        &first,
        pipeline,
        &["echo never"],
        &[("GET_SOURCES_ATTEMPTS", "2")],
    );
    job["git_info"]["repo_url"] = json!(format!(
        "http://gitlab-ci-token:{wrong}@{host}/{}.git",
        repo.path()
    ));
    let id = s.gitlab.enqueue(&s.token, job);
    let (record, trace) = finished(&s.gitlab, id).await;
    assert_eq!(record.state, JobState::Failed, "trace:\n{trace}");
    assert_eq!(
        record.failure_reason.as_deref(),
        Some("script_failure"),
        "trace:\n{trace}"
    );
    assert!(
        trace.contains("HTTP Basic: Access denied") || trace.contains("Authentication failed"),
        "trace:\n{trace}"
    );
    assert!(!trace.contains(&wrong), "the wrong token leaked:\n{trace}");
    // Two attempts, the worktree cleared between them.
    assert_eq!(
        trace.matches("Authentication failed").count(),
        2,
        "trace:\n{trace}"
    );
    assert!(
        trace.contains("Deleting tracked and untracked files..."),
        "trace:\n{trace}"
    );
    assert!(!trace.contains("\nnever"), "trace:\n{trace}");
    s.manager.drain().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_same_host_submodule_authenticates_with_the_job_token() {
    let s = git_setup().await;
    let sub = s.repos.create(&project_path("sub")).expect("sub repo");
    let sub_sha = sub
        .commit("main", &[("sub.txt", "from the submodule\n")], "sub")
        .expect("sub commit");
    let main = s.repos.create(&project_path("super")).expect("main repo");
    main.commit("main", &[("README.md", "super\n")], "first")
        .expect("commit");
    let sub_url = format!("{}/{}.git", s.gitlab.url(), sub.path());
    let head = main
        .add_submodule("main", "lib/sub", &sub_url, &sub_sha)
        .expect("submodule");
    let pipeline = 20_000 + i64::from(rand::random::<u16>());
    main.set_ref(&format!("refs/pipelines/{pipeline}"), &head)
        .expect("pipeline ref");
    let id = s.gitlab.enqueue(
        &s.token,
        git_job(
            main.path(),
            &head,
            pipeline,
            &["cat lib/sub/sub.txt"],
            &[
                ("GIT_STRATEGY", "clone"),
                ("GIT_SUBMODULE_STRATEGY", "normal"),
            ],
        ),
    );
    let (record, trace) = finished(&s.gitlab, id).await;
    assert_eq!(record.state, JobState::Success, "trace:\n{trace}");
    assert!(
        trace.contains("Updating/initializing submodules with git depth set to 20..."),
        "trace:\n{trace}"
    );
    assert!(trace.contains("from the submodule"), "trace:\n{trace}");
    assert!(!trace.contains("gitlab-ci-token:"), "trace:\n{trace}");
    s.manager.drain().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merge_request_refspec_is_fetched_since_refspecs_is_advertised() {
    let s = git_setup().await;
    let (repo, first, pipeline) = repo_with_two_commits(&s.repos, "mr");
    repo.set_ref("refs/merge-requests/3/head", &first)
        .expect("merge request ref");
    let mut job = git_job(repo.path(), &first, pipeline, &["cat README.md"], &[]);
    job["git_info"]["ref"] = json!("refs/merge-requests/3/head");
    job["git_info"]["refspecs"] = json!([
        format!("+refs/pipelines/{pipeline}:refs/pipelines/{pipeline}"),
        "+refs/merge-requests/3/head:refs/remotes/origin/merge-requests/3/head",
    ]);
    // The fake fails a merge request job as runner_unsupported unless `refspecs` is advertised.
    let id = s.gitlab.enqueue(&s.token, job);
    let (record, trace) = finished(&s.gitlab, id).await;
    assert_eq!(record.state, JobState::Success, "trace:\n{trace}");
    assert!(trace.contains("first version"), "trace:\n{trace}");
    assert!(
        trace.contains("(ref is refs/merge-requests/3/head)"),
        "trace:\n{trace}"
    );
    s.manager.drain().await;
}
