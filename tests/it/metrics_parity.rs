//! Metrics parity with GitLab Runner 19 (issue 15 item 6), against the running manager over
//! HTTP: the process collector, the configuration access counters across reloads (a rejected
//! file, an applied one), real `stage` / `executor_stage` labels on `gitlab_runner_jobs`,
//! `gitlab_runner_job_stage_duration_seconds`, and `/debug/jobs/list` as GitLab Runner serves
//! it. The scrape keeps the same series whatever the number of jobs run.

use crate::harness::*;
use flotilla::lifecycle::Control;
use flotilla::manager::{ConfigSource, Hooks};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use testkit::JobState;
use tokio::sync::mpsc;

async fn get(url: &str) -> (u16, reqwest::header::HeaderMap, String) {
    let r = reqwest::get(url)
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let (status, headers) = (r.status().as_u16(), r.headers().clone());
    (status, headers, r.text().await.unwrap_or_default())
}

/// The value of the first sample line starting with `series ` (name and labels as written).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// The series (name and labels) of a scrape, without values.
fn series(text: &str) -> Vec<String> {
    let mut out: Vec<String> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.rsplit_once(' ').map(|(s, _)| s.to_string()))
        .filter(|s| !s.starts_with("process_"))
        .collect();
    out.sort();
    out
}

/// Polls `check` until it holds or [`DEADLINE`] passes; whether it held.
async fn until_deadline<F, Fut>(mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = tokio::time::Instant::now() + DEADLINE;
    while tokio::time::Instant::now() < end {
        if check().await {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    false
}

/// Scrapes `/metrics` until `check` holds on the text or [`DEADLINE`] passes.
async fn scrape_until(base: &str, check: impl Fn(&str) -> bool) -> bool {
    let url = format!("{base}/metrics");
    until_deadline(|| async { check(&get(&url).await.2) }).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stages_jobs_list_process_and_config_series_on_the_running_manager() {
    ensure_test_image();
    let (gitlab, token) = fake_gitlab(fast_trace()).await;
    let state_dir = tempfile::tempdir().expect("tempdir");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.toml");
    let text = config_text(
        &gitlab.url(),
        &token,
        state_dir.path(),
        "listen_address = \"127.0.0.1:0\"",
        "",
    );
    std::fs::write(&path, &text).expect("write config");
    let admin: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
    let hooks = Hooks {
        on_admin_listening: Some({
            let admin = admin.clone();
            Arc::new(move |addr| *admin.lock().unwrap() = Some(addr))
        }),
        ..Default::default()
    };
    let (controls, rx) = mpsc::channel(4);
    let source = ConfigSource {
        path: path.clone(),
        logging: None,
    };
    let task = tokio::spawn(flotilla::manager::run_reloadable(
        config(&text),
        Some(source),
        rx,
        hooks,
    ));
    eventually("the admin server listens", DEADLINE, || {
        admin.lock().unwrap().is_some()
    })
    .await;
    let base = format!("http://{}", admin.lock().unwrap().expect("address"));
    let metrics = || async { get(&format!("{base}/metrics")).await.2 };

    // Process collector and the start's configuration load.
    let m = metrics().await;
    let fds = value(&m, "process_open_fds").expect("process_open_fds");
    let max = value(&m, "process_max_fds").expect("process_max_fds");
    assert!(fds >= 3.0 && max >= fds, "{fds} / {max}");
    assert!(
        value(&m, "process_resident_memory_bytes").unwrap_or(0.0) > 1e6,
        "{m}"
    );
    assert!(value(&m, "process_cpu_seconds_total").is_some(), "{m}");
    let now = chrono::Utc::now().timestamp() as f64;
    let started = value(&m, "process_start_time_seconds").expect("start time");
    assert!(
        started <= now + 1.0 && started > now - 86_400.0,
        "{started}"
    );
    assert_eq!(
        value(&m, "gitlab_runner_configuration_loaded_total"),
        Some(1.0)
    );
    assert_eq!(
        value(&m, "gitlab_runner_configuration_loading_error_total"),
        Some(0.0)
    );

    // A running job: its stage and executor stage, on the gauge and in the jobs list.
    let short = flotilla::config::short_token(&token);
    let id = gitlab.enqueue(&token, job(&["echo stage-mark", "sleep 600"], &[]));
    trace_shows(&gitlab, id, "stage-mark").await;
    let m = metrics().await;
    let running = format!(
        "gitlab_runner_jobs{{executor_stage=\"docker_run\",runner=\"{short}\",runner_name=\"it-runner\",stage=\"step_script\",state=\"running\","
    );
    assert!(
        m.lines()
            .any(|l| l.starts_with(&running) && l.ends_with(" 1")),
        "{m}"
    );
    let prepare = format!(
        "gitlab_runner_job_stage_duration_seconds_count{{runner=\"{short}\",runner_name=\"it-runner\",stage=\"prepare_executor\","
    );
    assert!(m.lines().any(|l| l.starts_with(&prepare)), "{m}");
    let (status, headers, list) = get(&format!("{base}/debug/jobs/list")).await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-list-version"], "2");
    assert_eq!(headers["content-type"], "text/plain");
    let line = list.lines().next().unwrap_or_default();
    assert_eq!(list.lines().count(), 1, "{list}");
    assert!(line.starts_with("url=http"), "{line}");
    assert!(
        line.contains(&format!(
            "/-/jobs/{id} state=running stage=step_script executor_stage=docker_run duration="
        )),
        "{line}"
    );
    assert!(!line.contains("gitlab-ci-token"), "{line}");

    // Reloads: a broken file is counted as a loading error, a good one as a load.
    std::fs::write(&path, "concurrent = [").expect("write");
    controls.send(Control::Reload).await.expect("reload");
    let counted = scrape_until(&base, |m| {
        value(m, "gitlab_runner_configuration_loading_error_total") == Some(1.0)
    })
    .await;
    assert!(counted, "loading error counted");
    std::fs::write(&path, text.replace("concurrent = 4", "concurrent = 5")).expect("write");
    controls.send(Control::Reload).await.expect("reload");
    let loaded = scrape_until(&base, |m| {
        value(m, "gitlab_runner_configuration_loaded_total") == Some(2.0)
            && value(m, "gitlab_runner_concurrent") == Some(5.0)
    })
    .await;
    assert!(loaded, "applied reload counted");

    // The job ends: it leaves the list and the gauge; its script stage was observed.
    gitlab.cancel(id);
    let (record, _) = finished(&gitlab, id).await;
    assert!(record.state.is_finished());
    let gone =
        until_deadline(|| async { get(&format!("{base}/debug/jobs/list")).await.2.is_empty() })
            .await;
    assert!(gone, "the job left /debug/jobs/list");
    let after_one = metrics().await;
    assert!(
        !after_one
            .lines()
            .any(|l| l.starts_with("gitlab_runner_jobs{") && l.contains("state=\"running\"")),
        "{after_one}"
    );
    let script = format!(
        "gitlab_runner_job_stage_duration_seconds_count{{runner=\"{short}\",runner_name=\"it-runner\",stage=\"step_script\","
    );
    assert!(
        after_one.lines().any(|l| l.starts_with(&script)),
        "{after_one}"
    );

    // Jobs add no series: after the second of two alike jobs the scrape has the same series
    // as after the first (per-job values never become labels).
    let mut scrapes = Vec::new();
    for n in 0..2 {
        let id = gitlab.enqueue(&token, job(&[&format!("echo again-{n}")], &["echo after"]));
        let (record, trace) = finished(&gitlab, id).await;
        assert_eq!(record.state, JobState::Success, "{trace}");
        let quiet =
            until_deadline(|| async { get(&format!("{base}/debug/jobs/list")).await.2.is_empty() })
                .await;
        assert!(quiet, "job {id} left the list");
        scrapes.push(series(&metrics().await));
    }
    assert_eq!(scrapes[0], scrapes[1], "series grew with the job count");
    assert!(
        scrapes[1]
            .iter()
            .any(|s| s.contains("stage=\"after_script\"")),
        "{:?}",
        scrapes[1]
    );

    let _ = controls.send(Control::Drain).await;
    let joined = tokio::time::timeout(DEADLINE, task)
        .await
        .expect("manager exits after a drain");
    joined.expect("no panic").expect("manager ran cleanly");
}
