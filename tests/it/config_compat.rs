//! Issue 15 with the real binary: a runner whose executor Flotilla does not run is reported by
//! `config check` and never polled by `run` while the others run (also after a reload), and
//! `config check` names the time zone each autoscaling period is read in, from `TZ`.

use crate::harness::*;
use crate::process::Running;
use std::process::Command;
use testkit::{FakeGitlabOptions, JobState};

const SKIPPED: &str = "skipped: executor not supported";

fn shell_runner(url: &str, token: &str) -> String {
    format!(
        "\n[[runners]]\nname = \"shell-runner\"\nurl = \"{url}\"\ntoken = \"{token}\"\n\
         executor = \"shell\"\nshell = \"bash\"\nbuilds_dir = \"/builds\"\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shell_runner_is_skipped_while_the_docker_runner_runs() {
    ensure_test_image();
    let (gitlab, token) = fake_gitlab(FakeGitlabOptions::default()).await;
    let shell_token = runner_token();
    gitlab.add_runner(&shell_token);
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("config.toml");
    let text = config_text(&gitlab.url(), &token, &dir.path().join("state"), "", "")
        + &shell_runner(&gitlab.url(), &shell_token);
    std::fs::write(&config_path, &text).unwrap();

    let out = Command::new(flotilla_bin())
        .args(["config", "check"])
        .arg(&config_path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains(&format!(
            "runners[1] \"shell-runner\": executor \"shell\": {SKIPPED}"
        )),
        "{stdout}"
    );
    assert!(stderr.contains(SKIPPED), "{stderr}");

    let mut manager = Running::start(&config_path, dir.path(), "skip");
    let shell_job = gitlab.enqueue(&shell_token, job(&["echo never"], &[]));
    let id = gitlab.enqueue(&token, job(&["echo docker-ran"], &[]));
    let record = gitlab
        .wait_job(id, DEADLINE, |j| j.state.is_finished())
        .await
        .unwrap();
    assert_eq!(record.state, JobState::Success, "{}", record.trace_text());
    manager.log_shows(SKIPPED, DEADLINE).await;

    // A reload (the file edited) warns again and still leaves the shell runner out.
    std::fs::write(&config_path, format!("{text}\n# edited\n")).unwrap();
    manager.signal("HUP");
    eventually("the skip warned again on reload", DEADLINE, || {
        manager.log().matches(SKIPPED).count() >= 2
    })
    .await;
    let second = gitlab.enqueue(&token, job(&["echo after-reload"], &[]));
    gitlab
        .wait_job(second, DEADLINE, |j| j.state == JobState::Success)
        .await
        .unwrap();

    let requests = gitlab.requests();
    let with_token = |t: &str| {
        requests
            .iter()
            .filter(|r| String::from_utf8_lossy(&r.body).contains(t))
            .count()
    };
    assert!(with_token(&token) > 0, "the docker runner polled");
    assert_eq!(with_token(&shell_token), 0, "the shell runner never polled");
    assert_eq!(gitlab.job(shell_job).unwrap().state, JobState::Pending);
    manager.signal("TERM");
    let status = manager.wait_exit(DEADLINE).await;
    assert!(status.success(), "{status:?}\n{}", manager.log());
}

#[test]
fn config_check_names_the_zone_of_each_period_from_tz() {
    let text = fixture_with_token("config_gitlab_runner_docker_machine_google.toml").replacen(
        "      Timezone = \"UTC\"\n",
        "",
        1,
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, text).unwrap();
    let check = |tz: &str| {
        let out = Command::new(flotilla_bin())
            .args(["config", "check"])
            .arg(&path)
            .env("TZ", tz)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let tokyo = check("Asia/Tokyo");
    let period = |out: &str, i: usize| {
        out.lines()
            .find(|l| l.contains(&format!("machine.autoscaling[{i}]")))
            .unwrap_or_else(|| panic!("no line for period {i}:\n{out}"))
            .to_string()
    };
    assert!(
        period(&tokyo, 0).ends_with("read in Asia/Tokyo (host local time, from TZ=Asia/Tokyo)"),
        "{tokyo}"
    );
    assert!(
        period(&tokyo, 1).ends_with("read in America/New_York (Timezone)"),
        "{tokyo}"
    );
    let berlin = check(":Europe/Berlin");
    assert!(
        period(&berlin, 0)
            .ends_with("read in Europe/Berlin (host local time, from TZ=:Europe/Berlin)"),
        "{berlin}"
    );
    let empty = check("");
    assert!(
        period(&empty, 0).contains("read in UTC (host local time, TZ is empty: UTC)"),
        "{empty}"
    );
}
