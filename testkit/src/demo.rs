//! `testkit demo`: the README's demo. Starts the fake GitLab with a few sample jobs (one job
//! uploads artifacts that a second, enqueued once the first succeeded, downloads) and a sample
//! repository it serves over git, writes a config.toml for the local docker executor (host
//! networking, so the helper container reaches the fake), runs the real `flotilla run` as a child
//! process, prints each job's trace and final state as GitLab would show them, drains flotilla
//! with SIGQUIT and exits 0 when every job reached the state it was meant to.

use crate::{FakeGitlab, FakeGitlabOptions, GitRepos, JobState};
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

const IMAGE: &str = "flotilla-test/busybox:latest";

/// A sample job: a name, its payload, and the state it should end in.
struct Sample {
    name: &'static str,
    payload: Value,
    expect: JobState,
}

fn job(name: &str, script: &[&str], after: &[&str], extra_vars: Value) -> Value {
    let mut variables = vec![json!({"key": "GIT_STRATEGY", "value": "none", "public": true})];
    if let Some(more) = extra_vars.as_array() {
        variables.extend(more.iter().cloned());
    }
    let mut steps =
        vec![json!({"name": "script", "script": script, "timeout": 600, "when": "on_success"})];
    if !after.is_empty() {
        steps.push(
            json!({"name": "after_script", "script": after, "timeout": 300, "when": "always"}),
        );
    }
    json!({
        "job_info": {"name": name, "stage": "test", "project_full_path": "demo/app"},
        "image": {"name": IMAGE},
        "steps": steps,
        "variables": variables,
    })
}

/// The sample repository `demo/app`: a first commit that the pipeline runs on, and a later one
/// on `main` that the job must not see. Returns the job payload cloning it.
fn clone_sample(repos: &GitRepos) -> anyhow::Result<Value> {
    let repo = repos.create("demo/app")?;
    let sha = repo.commit(
        "main",
        &[
            (
                "README.md",
                "# demo/app\nThis file comes from the pipeline's commit.\n",
            ),
            ("src/main.sh", "echo built from source\n"),
        ],
        "first commit",
    )?;
    let pipeline = 4242;
    repo.set_ref(&format!("refs/pipelines/{pipeline}"), &sha)?;
    repo.commit(
        "main",
        &[(
            "README.md",
            "# demo/app\nA later commit the job must not see.\n",
        )],
        "later commit",
    )?;
    let mut payload = job(
        "clone",
        &["cat README.md", "sh src/main.sh"],
        &[],
        json!([{"key": "GIT_STRATEGY", "value": "clone", "public": true}]),
    );
    payload["job_info"]["pipeline_id"] = json!(pipeline);
    payload["git_info"] = json!({
        "ref": "main",
        "sha": sha,
        "depth": 20,
        "refspecs": [
            format!("+refs/pipelines/{pipeline}:refs/pipelines/{pipeline}"),
            "+refs/heads/main:refs/remotes/origin/main",
        ],
    });
    Ok(payload)
}

/// A job that builds `dist/` and uploads it as artifacts (its scratch files excluded); the
/// `test` job, enqueued once it succeeded, downloads them before its script.
fn build_sample() -> Value {
    let mut payload = job(
        "build",
        &[
            "mkdir -p dist",
            "echo \"built by job $CI_JOB_ID\" > dist/app.txt",
            "echo scratch > dist/build.tmp",
        ],
        &[],
        json!([]),
    );
    payload["artifacts"] = json!([{
        "name": "artifacts", "paths": ["dist/"], "exclude": ["dist/*.tmp"], "when": "on_success",
        "artifact_type": "archive", "artifact_format": "zip", "expire_in": "1 week"
    }]);
    payload
}

/// The job that depends on `build` (id `build_id`): its artifacts are there before its script.
fn test_sample(build_id: i64, archive_size: usize) -> Value {
    let mut payload = job("test", &["ls dist", "cat dist/app.txt"], &[], json!([]));
    payload["dependencies"] = json!([{
        "id": build_id, "name": "build",
        "artifacts_file": {"filename": "artifacts.zip", "size": archive_size}
    }]);
    payload
}

fn samples(repos: &GitRepos) -> anyhow::Result<Vec<Sample>> {
    Ok(vec![
        Sample {
            name: "clone",
            payload: clone_sample(repos)?,
            expect: JobState::Success,
        },
        Sample {
            name: "hello",
            payload: job(
                "hello",
                &[
                    "echo \"Hello from job $CI_JOB_ID on $CI_RUNNER_SHORT_TOKEN\"",
                    "uname -a",
                    "ls $CI_PROJECT_DIR/.. ",
                ],
                &[],
                json!([]),
            ),
            expect: JobState::Success,
        },
        Sample {
            name: "secrets",
            payload: job(
                "secrets",
                &[
                    "echo \"the password is $DEMO_PASSWORD\"",
                    "echo \"and the job token is $CI_JOB_TOKEN\"",
                ],
                &[],
                json!([{"key": "DEMO_PASSWORD", "value": "hunter2-hunter2", "masked": true, "public": false}]),
            ),
            expect: JobState::Success,
        },
        Sample {
            name: "build",
            payload: build_sample(),
            expect: JobState::Success,
        },
        Sample {
            name: "failing",
            payload: job(
                "failing",
                &["echo about to fail", "exit 3"],
                &["echo \"after_script sees CI_JOB_STATUS=$CI_JOB_STATUS\""],
                json!([]),
            ),
            expect: JobState::Failed,
        },
    ])
}

fn config(url: &str, token: &str, state_dir: &Path) -> String {
    format!(
        r#"concurrent = 2
check_interval = 1
log_level = "info"
state_dir = "{}"

[[runners]]
name = "demo"
url = "{url}"
token = "{token}"
executor = "docker"
[runners.docker]
image = "{IMAGE}"
pull_policy = ["if-not-present"]
network_mode = "host"
"#,
        state_dir.display()
    )
}

/// Runs the demo with the `flotilla` binary at `flotilla`.
pub async fn run(flotilla: &Path) -> anyhow::Result<bool> {
    let (gitlab, repos) = FakeGitlab::start_with_git(FakeGitlabOptions {
        trace_update_interval_secs: Some(1),
        ..FakeGitlabOptions::default()
    })
    .await?;
    let token = format!(
        "glrt-t1_demo{:012x}",
        rand::random::<u64>() & 0xffff_ffff_ffff
    );
    gitlab.add_runner(&token);
    let dir = tempfile_dir()?;
    let config_path = dir.join("config.toml");
    std::fs::write(
        &config_path,
        config(&gitlab.url(), &token, &dir.join("state")),
    )?;
    println!(
        "fake GitLab at {}; config at {}",
        gitlab.url(),
        config_path.display()
    );

    let samples = samples(&repos)?;
    let ids: Vec<i64> = samples
        .iter()
        .map(|s| gitlab.enqueue(&token, s.payload.clone()))
        .collect();
    println!(
        "enqueued {} jobs; starting `flotilla run -c {}`\n",
        ids.len(),
        config_path.display()
    );
    let mut child = tokio::process::Command::new(flotilla)
        .arg("run")
        .arg("-c")
        .arg(&config_path)
        .spawn()?;

    let mut all_as_expected = true;
    for (sample, id) in samples.iter().zip(&ids) {
        all_as_expected &= report(&gitlab, *id, sample.name, sample.expect).await?;
    }
    // Artifacts between two jobs: `test` depends on `build`, as a later stage would.
    let build = samples.iter().zip(&ids).find(|(s, _)| s.name == "build");
    if let Some((_, build_id)) = build {
        let size = gitlab
            .artifacts(*build_id)
            .first()
            .map_or(0, |a| a.bytes.len());
        let test_id = gitlab.enqueue(&token, test_sample(*build_id, size));
        all_as_expected &= report(&gitlab, test_id, "test", JobState::Success).await?;
    }

    if let Some(pid) = child.id() {
        let _ = std::process::Command::new("kill")
            .args(["-QUIT", &pid.to_string()])
            .status();
    }
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait()).await??;
    println!("flotilla exited after SIGQUIT: {status}");
    let _ = std::fs::remove_dir_all(&dir);
    Ok(all_as_expected && status.success())
}

/// Waits for job `id` to finish, prints its trace and final state as GitLab shows them; whether
/// it ended as `expect`.
async fn report(
    gitlab: &FakeGitlab,
    id: i64,
    name: &str,
    expect: JobState,
) -> anyhow::Result<bool> {
    let record = gitlab
        .wait_job(id, Duration::from_secs(300), |j| j.state.is_finished())
        .await?;
    println!("──────── job {id} ({name}) ────────");
    print!("{}", record.trace_text());
    let reason = record.failure_reason.clone().unwrap_or_default();
    let exit = record
        .exit_code
        .map(|c| format!(" exit_code={c}"))
        .unwrap_or_default();
    let ok = record.state == expect;
    println!(
        "──────── final state: {}{}{} (expected {}: {}) ────────\n",
        record.state.gitlab_status(),
        if reason.is_empty() {
            String::new()
        } else {
            format!(" failure_reason={reason}")
        },
        exit,
        expect.gitlab_status(),
        if ok { "ok" } else { "UNEXPECTED" }
    );
    Ok(ok)
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("flotilla-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
