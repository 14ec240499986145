//! `scripts/runner_upgrade.sh` in pid-file mode against real managers, and the systemd unit.

use super::*;
use crate::process::Running;
use std::process::Command;
use testkit::JobState;

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_drains_the_manager_runs_config_management_and_starts_it_again() {
    ensure_test_image();
    let (gitlab, token_a) = fake_gitlab(fast_trace()).await;
    let token_b = runner_token();
    gitlab.add_runner(&token_b);
    let dir = tempfile::tempdir().unwrap();
    let gate_a = Gate::start().await;
    let gate_b = Gate::start().await;
    let write = |name: &str, token: &str| {
        let path = dir.path().join(format!("{name}.toml"));
        let state = dir.path().join(format!("state-{name}"));
        std::fs::write(&path, config_text(&gitlab.url(), token, &state, "", "")).unwrap();
        path
    };
    let (config_a, config_b) = (write("a", &token_a), write("b", &token_b));
    let mut manager_a = Running::start(&config_a, dir.path(), "a");
    let mut manager_b = Running::start(&config_b, dir.path(), "b");
    let pid_file = dir.path().join("a.pid");
    std::fs::write(&pid_file, manager_a.child.id().to_string()).unwrap();
    let job_a = gitlab.enqueue(&token_a, job(&["echo job-a", &gate_a.wait_line()], &[]));
    let job_b = gitlab.enqueue(&token_b, job(&["echo job-b", &gate_b.wait_line()], &[]));
    trace_shows(&gitlab, job_a, "job-a").await;
    trace_shows(&gitlab, job_b, "job-b").await;

    // A stub config-management command on PATH, and stub agent controls.
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let marker = dir.path().join("chef-ran");
    let stub = bin.join("chef-client");
    std::fs::write(
        &stub,
        format!("#!/bin/sh\necho converged > '{}'\n", marker.display()),
    )
    .unwrap();
    Command::new("chmod").arg("+x").arg(&stub).status().unwrap();
    let agent = dir.path().join("agent");
    let path_var = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let log_file = dir.path().join("a-upgraded.log");
    let script_out = dir.path().join("upgrade.out");
    let upgrade = tokio::process::Command::new(script("runner_upgrade.sh"))
        .arg("update")
        .env("PATH", path_var)
        .env("FLOTILLA_PID_FILE", &pid_file)
        .env(
            "FLOTILLA_START_COMMAND",
            format!(
                "'{}' run --config '{}'",
                flotilla_bin().display(),
                config_a.display()
            ),
        )
        .env("FLOTILLA_LOG_FILE", &log_file)
        .env(
            "FLOTILLA_CM_SUSPEND",
            format!("echo suspended > '{}'", agent.display()),
        )
        .env(
            "FLOTILLA_CM_RESUME",
            format!("echo resumed > '{}'", agent.display()),
        )
        .env("FLOTILLA_PROGRESS_SECONDS", "1")
        .stdout(std::fs::File::create(&script_out).unwrap())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run runner_upgrade.sh");

    manager_a.log_shows("graceful shutdown", DEADLINE).await;
    assert_eq!(std::fs::read_to_string(&agent).unwrap().trim(), "suspended");
    assert!(!marker.exists(), "config management waits for the drain");
    eventually("the script shows the drain's progress", DEADLINE, || {
        std::fs::read_to_string(&script_out).is_ok_and(|o| o.contains("waiting for flotilla"))
    })
    .await;
    gate_a.open();
    // Reaped here (the manager is this test's child: a zombie would look alive to the script).
    let drained = manager_a.wait_exit(DEADLINE).await;
    assert!(drained.success(), "{drained:?}\n{}", manager_a.log());
    let out = tokio::time::timeout(DEADLINE, upgrade.wait_with_output())
        .await
        .expect("the upgrade ends")
        .unwrap();
    let stdout = std::fs::read_to_string(&script_out).unwrap();
    assert!(
        out.status.success(),
        "{:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("waiting for flotilla"),
        "progress shown: {stdout}"
    );
    assert_eq!(gitlab.job(job_a).unwrap().state, JobState::Success);
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap().trim(),
        "converged"
    );
    assert_eq!(std::fs::read_to_string(&agent).unwrap().trim(), "resumed");

    // The new manager runs jobs; the other manager's job was never touched.
    let new_pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_ne!(new_pid as u32, manager_a.child.id());
    let after = gitlab.enqueue(&token_a, job(&["echo after-upgrade"], &[]));
    let (record, _) = finished(&gitlab, after).await;
    assert_eq!(record.state, JobState::Success);
    assert_eq!(gitlab.job(job_b).unwrap().state, JobState::Running);
    assert!(!manager_b.log().contains("graceful shutdown"));
    gate_b.open();
    let (record, _) = finished(&gitlab, job_b).await;
    assert_eq!(record.state, JobState::Success);

    let quit = Command::new("kill")
        .args(["-QUIT", &new_pid.to_string()])
        .status()
        .unwrap();
    assert!(
        quit.success(),
        "the recorded pid is the new manager:\n{}",
        std::fs::read_to_string(&log_file).unwrap_or_default()
    );
    // Not this test's child (a zombie would look alive): its end is read from its log.
    eventually("the upgraded manager exits", DEADLINE, || {
        std::fs::read_to_string(&log_file).is_ok_and(|l| l.contains("flotilla stopped"))
    })
    .await;
    manager_b.signal("QUIT");
    assert!(manager_b.wait_exit(DEADLINE).await.success());
}

#[test]
fn the_upgrade_script_rejects_bad_usage_and_is_shellcheck_clean() {
    let out = Command::new(script("runner_upgrade.sh"))
        .arg("upgrade")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let out = Command::new(script("runner_upgrade.sh"))
        .args(["--timeout-minutes", "soon", "stop"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    // A pid file naming no process: nothing to drain, nothing to wait for.
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("gone.pid");
    std::fs::write(&pid_file, "999999\n").unwrap();
    let out = Command::new(script("runner_upgrade.sh"))
        .args(["--pid-file"])
        .arg(&pid_file)
        .args(["--cm-suspend", "true", "stop"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("not running"));
    let shellcheck = Command::new("shellcheck")
        .arg(script("runner_upgrade.sh"))
        .output();
    match shellcheck {
        Ok(out) => assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        ),
        Err(e) => panic!("shellcheck is needed (scripts/prepare.sh installs it): {e}"),
    }
}

#[test]
fn the_systemd_unit_verifies_and_drains_on_stop() {
    let unit = std::fs::read_to_string(script("flotilla.service")).unwrap();
    for line in [
        "KillSignal=SIGQUIT",
        "TimeoutStopSec=7200",
        "Restart=on-failure",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "PrivateTmp=yes",
    ] {
        assert!(unit.lines().any(|l| l == line), "{line} missing:\n{unit}");
    }
    let Ok(probe) = Command::new("systemd-analyze").arg("--version").output() else {
        println!("skipped systemd-analyze verify: systemd-analyze is not installed");
        return;
    };
    assert!(probe.status.success());
    // verify checks that ExecStart exists: point it at the test build.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flotilla.service");
    std::fs::write(
        &path,
        unit.replace("/usr/bin/flotilla", &flotilla_bin().display().to_string()),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
