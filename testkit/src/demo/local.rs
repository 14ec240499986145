//! `testkit demo --local`: the demo on the local `docker` executor. Starts the fake GitLab with
//! the sample jobs (one job uploads artifacts that a second, enqueued once the first succeeded,
//! downloads) and a sample repository it serves over git, writes a config.toml for the local
//! docker executor (host networking, so the helper container reaches the fake), runs the real
//! `flotilla run` as a child process, prints each job's trace and final state as GitLab would
//! show them, drains flotilla with SIGQUIT and returns whether every job reached the state it
//! was meant to.

use super::child::Flotilla;
use super::samples::{samples, test_sample, IMAGE};
use crate::{FakeGitlab, FakeGitlabOptions, JobState};
use std::path::Path;
use std::time::Duration;

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

/// Runs the local demo with the `flotilla` binary at `flotilla`.
pub(super) async fn run(flotilla: &Path) -> anyhow::Result<bool> {
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
    let dir = tempfile::Builder::new()
        .prefix("flotilla-demo-")
        .tempdir()?;
    let dir = dir.path();
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
    let child = Flotilla::spawn(flotilla, &config_path, None)?;

    let mut all_as_expected = true;
    for (sample, id) in samples.iter().zip(&ids) {
        all_as_expected &= report(&gitlab, *id, &sample.name, sample.expect).await?;
    }
    // Artifacts between two jobs: `test` depends on `build`, as a later stage would.
    let build = samples.iter().zip(&ids).find(|(s, _)| s.name == "build");
    if let Some((_, build_id)) = build {
        let size = gitlab
            .artifacts(*build_id)
            .first()
            .map_or(0, |a| a.bytes.len());
        let test = test_sample(*build_id, size);
        let test_id = gitlab.enqueue(&token, test.payload);
        all_as_expected &= report(&gitlab, test_id, &test.name, test.expect).await?;
    }

    let status = child.drain(Duration::from_secs(60)).await?;
    println!("flotilla exited after SIGQUIT: {status}");
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
