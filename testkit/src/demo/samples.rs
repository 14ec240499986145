//! The demo's jobs as GitLab would send them: `clone` (a repository the fake serves over git),
//! `hello`, `secrets` (masking), `build` (uploads artifacts), `failing` (exit 3 with
//! `after_script`), `test` (downloads `build`'s artifacts, enqueued once `build` succeeded) and,
//! for docker+machine, short `work-N` jobs that make the burst larger than the warm pool.
//! Plain payloads: nothing here talks to a fake except [`clone_sample`] creating its repository.

use crate::{GitRepos, JobState};
use serde_json::{json, Value};

/// The image every demo job runs in (made by `scripts/build-test-images.sh`).
pub(super) const IMAGE: &str = "flotilla-test/busybox:latest";

/// A sample job: a name, its payload, and the state it should end in.
pub(super) struct Sample {
    /// The job's name, as GitLab shows it.
    pub name: String,
    /// The job payload (`POST /jobs/request` answer) without the fields the fake adds.
    pub payload: Value,
    /// The state the job is meant to end in.
    pub expect: JobState,
}

impl Sample {
    fn new(name: &str, payload: Value, expect: JobState) -> Sample {
        Sample {
            name: name.to_owned(),
            payload,
            expect,
        }
    }
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
pub(super) fn test_sample(build_id: i64, archive_size: usize) -> Sample {
    let mut payload = job("test", &["ls dist", "cat dist/app.txt"], &[], json!([]));
    payload["dependencies"] = json!([{
        "id": build_id, "name": "build",
        "artifacts_file": {"filename": "artifacts.zip", "size": archive_size}
    }]);
    Sample::new("test", payload, JobState::Success)
}

/// The sample jobs of both demos, in the order they are enqueued (`test` comes later).
pub(super) fn samples(repos: &GitRepos) -> anyhow::Result<Vec<Sample>> {
    Ok(vec![
        Sample::new("clone", clone_sample(repos)?, JobState::Success),
        Sample::new(
            "hello",
            job(
                "hello",
                &[
                    "echo \"Hello from job $CI_JOB_ID on $CI_RUNNER_SHORT_TOKEN\"",
                    "uname -a",
                    "ls $CI_PROJECT_DIR/.. ",
                ],
                &[],
                json!([]),
            ),
            JobState::Success,
        ),
        Sample::new(
            "secrets",
            job(
                "secrets",
                &[
                    "echo \"the password is $DEMO_PASSWORD\"",
                    "echo \"and the job token is $CI_JOB_TOKEN\"",
                ],
                &[],
                json!([{"key": "DEMO_PASSWORD", "value": "hunter2-hunter2", "masked": true, "public": false}]),
            ),
            JobState::Success,
        ),
        Sample::new("build", build_sample(), JobState::Success),
        Sample::new(
            "failing",
            job(
                "failing",
                &["echo about to fail", "exit 3"],
                &["echo \"after_script sees CI_JOB_STATUS=$CI_JOB_STATUS\""],
                json!([]),
            ),
            JobState::Failed,
        ),
    ])
}

/// `n` short jobs (`work-1` …) that print a few lines a second apart, so jobs overlap.
pub(super) fn work_samples(n: usize) -> Vec<Sample> {
    (1..=n)
        .map(|i| {
            let name = format!("work-{i}");
            let script = [
                "echo \"step 1 of 3 on $(hostname)\"".to_owned(),
                "sleep 1".to_owned(),
                "echo \"step 2 of 3\"".to_owned(),
                format!("sleep {}", 1 + i % 3),
                "echo \"step 3 of 3: done\"".to_owned(),
            ];
            let script: Vec<&str> = script.iter().map(String::as_str).collect();
            Sample::new(
                &name,
                job(&name, &script, &[], json!([])),
                JobState::Success,
            )
        })
        .collect()
}
