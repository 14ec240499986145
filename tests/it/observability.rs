//! Observability end to end: a manager with a docker+machine runner on the fake Compute Engine
//! runs jobs from the fake GitLab while a real Prometheus (Debian's package) scrapes its
//! `/metrics` every second. Every expression of every Grafana dashboard in `dashboards/` must
//! evaluate without error and return series; `promtool check metrics` must be clean on the
//! scraped text; the alert rules must pass `promtool check rules` and their unit tests; and the
//! `/status` page, rendered by headless Chromium, must list the runner, its VMs and the running
//! job. Prometheus/promtool and Chromium are required (`scripts/prepare.sh` installs them); set
//! `FLOTILLA_SKIP_PROMETHEUS` or `FLOTILLA_SKIP_BROWSER` to skip those parts on purpose.

use crate::harness::*;
use crate::prom::{self, Prometheus};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use testkit::{FakeGce, FakeGceOptions, ZoneSpec};

const ZONE_A: &str = "us-central1-a";
const ZONE_B: &str = "us-central1-b";

fn dashboards_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboards")
}

/// The config of one docker+machine runner keeping one warm VM, with the admin server on a
/// free loopback port.
fn machine_config(
    gitlab_url: &str,
    token: &str,
    gce: &FakeGce,
    state_dir: &Path,
    manager_id: &str,
) -> String {
    format!(
        r#"
concurrent = 4
check_interval = 1
shutdown_timeout = 20
log_level = "debug"
listen_address = "127.0.0.1:0"
state_dir = "{state}"
manager_id = "{manager_id}"
reconcile_interval = 3600

[[runners]]
name = "it-observed"
url = "{gitlab_url}"
token = "{token}"
executor = "docker+machine"
[runners.machine]
MachineName = "obs-%s"
IdleCount = 1
IdleTime = 600
[runners.gce]
project = "{project}"
zones = ["{ZONE_A}", "{ZONE_B}"]
endpoint = "{endpoint}"
create_timeout = 30
[runners.docker]
image = "{TEST_IMAGE}"
pull_policy = ["if-not-present"]
network_mode = "host"
"#,
        state = state_dir.display(),
        project = gce.project(),
        endpoint = gce.endpoint(),
    )
}

async fn get(url: &str) -> (u16, String) {
    let r = reqwest::get(url)
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = r.status().as_u16();
    (status, r.text().await.unwrap_or_default())
}

/// Renders `url` in headless Chromium and returns the DOM it built.
fn rendered_dom(url: &str) -> String {
    prom::require("chromium", "chromium", "FLOTILLA_SKIP_BROWSER");
    let profile = tempfile::tempdir().expect("tempdir");
    // Bounded: a browser that hangs on a loaded CI machine fails the test instead of stalling it.
    let mut cmd = Command::new("timeout");
    cmd.args([
        "120",
        "chromium",
        "--headless",
        "--disable-gpu",
        "--no-first-run",
        "--disable-dev-shm-usage",
        &format!("--user-data-dir={}", profile.path().display()),
        "--dump-dom",
        url,
    ]);
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if root {
        cmd.arg("--no-sandbox");
    }
    let out = cmd.output().expect("run chromium");
    let dom = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success() && dom.contains("</html>"),
        "chromium failed: {}\n{dom}",
        String::from_utf8_lossy(&out.stderr)
    );
    dom
}

/// The value of the series written exactly as `series` (name and labels) in a scrape; fails
/// the test when it is absent.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{series} not in:\n{text}"))
}

/// One metric family: type, label names (without `le`) and help text.
type Family = (String, BTreeSet<String>, String);

/// The families of a scrape in Prometheus' text format.
fn scraped_families(text: &str) -> BTreeMap<String, Family> {
    let mut out: BTreeMap<String, Family> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            out.entry(name.to_string()).or_default().2 = help.to_string();
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            out.entry(name.to_string()).or_default().0 = kind.to_string();
        } else if !line.starts_with('#') && !line.is_empty() {
            let name_end = line.find(['{', ' ']).unwrap_or(line.len());
            let mut name = &line[..name_end];
            for suffix in ["_bucket", "_sum", "_count"] {
                if let Some(base) = name.strip_suffix(suffix) {
                    if out.get(base).is_some_and(|f| f.0 == "histogram") {
                        name = base;
                    }
                }
            }
            let labels = line[name_end..]
                .strip_prefix('{')
                .and_then(|l| l.split_once('}'))
                .map_or("", |(l, _)| l);
            let names = labels
                .split("\",")
                .filter_map(|kv| {
                    kv.split_once('=')
                        .map(|(k, _)| k.trim_start_matches(',').to_string())
                })
                .filter(|k| k != "le" && !k.is_empty());
            out.entry(name.to_string()).or_default().1.extend(names);
        }
    }
    out
}

/// The README's metric table, between its markers.
fn readme_families() -> BTreeMap<String, Family> {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("read README.md");
    let start = readme
        .find("<!-- metrics:begin -->")
        .expect("README metrics:begin marker");
    let end = readme
        .find("<!-- metrics:end -->")
        .expect("README metrics:end marker");
    let mut out = BTreeMap::new();
    for row in readme[start..end].lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = row.trim_matches('|').split(" | ").map(str::trim).collect();
        assert_eq!(cells.len(), 4, "README metric row: {row}");
        let labels = cells[2]
            .split(", ")
            .map(|l| l.trim_matches('`').to_string())
            .filter(|l| l != "—")
            .collect();
        out.insert(
            cells[0].trim_matches('`').to_string(),
            (cells[1].to_string(), labels, cells[3].to_string()),
        );
    }
    out
}

/// The README lists exactly the metrics the registry serves, with their types, labels and
/// help texts.
fn readme_lists_every_metric(scrape: &str) {
    let scraped = scraped_families(scrape);
    let listed = readme_families();
    let missing: Vec<&String> = scraped
        .keys()
        .filter(|k| !listed.contains_key(*k))
        .collect();
    let extra: Vec<&String> = listed
        .keys()
        .filter(|k| !scraped.contains_key(*k))
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "README metric table out of date: not listed {missing:?}, not served {extra:?}"
    );
    for (name, family) in &scraped {
        assert_eq!(&listed[name], family, "README row of {name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboards_alerts_and_status_page_hold_on_a_real_prometheus() {
    ensure_test_image();
    let (gitlab, token) = fake_gitlab(fast_trace()).await;
    let gce = FakeGce::start(FakeGceOptions {
        zones: vec![
            ZoneSpec::new(ZONE_A, Duration::from_millis(300)),
            ZoneSpec::new(ZONE_B, Duration::from_millis(300)),
        ],
        wait_cap: Duration::from_secs(3),
        ..FakeGceOptions::default()
    })
    .await
    .expect("start the fake gce");
    let manager_id = format!("it-obs-{:08x}", rand::random::<u32>());
    let state_dir = tempfile::tempdir().expect("tempdir");
    let text = machine_config(&gitlab.url(), &token, &gce, state_dir.path(), &manager_id);
    let admin: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
    let hooks = flotilla::manager::Hooks {
        on_admin_listening: Some({
            let admin = admin.clone();
            Arc::new(move |addr| *admin.lock().unwrap() = Some(addr))
        }),
        ..Default::default()
    };
    let manager = InProcessManager::start_with(config(&text), state_dir, hooks);
    eventually("the admin server listens", DEADLINE, || {
        admin.lock().unwrap().is_some()
    })
    .await;
    let addr = admin.lock().unwrap().expect("address");
    let base = format!("http://{addr}");
    assert_eq!(get(&format!("{base}/health/live")).await.0, 200);

    // Jobs: one success, one script failure, then one that keeps running.
    let ok = gitlab.enqueue(&token, job(&["echo observed"], &[]));
    let failed = gitlab.enqueue(&token, job(&["exit 3"], &[]));
    for id in [ok, failed] {
        finished(&gitlab, id).await;
    }
    let long = gitlab.enqueue(&token, job(&["echo long-job-started", "sleep 600"], &[]));
    trace_shows(&gitlab, long, "long-job-started").await;
    assert_eq!(
        get(&format!("{base}/health/ready")).await,
        (200, "ready\n".to_string())
    );

    // The scraped text: no token, GitLab Runner's series with their label sets, lint-clean.
    let (status, metrics) = get(&format!("{base}/metrics")).await;
    assert_eq!(status, 200);
    readme_lists_every_metric(&metrics);
    assert!(
        !metrics.contains(&token),
        "the runner token leaked into /metrics"
    );
    let short = flotilla::config::short_token(&token);
    for needle in [
        "gitlab_runner_process_state_info{state=\"running\"} 1".to_string(),
        "gitlab_runner_concurrent 4".to_string(),
        format!("gitlab_runner_failed_jobs_total{{failure_reason=\"script_failure\",mode=\"traditional\",runner=\"{short}\",runner_name=\"it-observed\"}} 1"),
        format!("gitlab_runner_jobs{{executor_stage=\"docker_run\",runner=\"{short}\",runner_name=\"it-observed\",stage=\"step_script\",state=\"running\",system_id=\"{manager_id}\"}} 1"),
        "gitlab_runner_errors_total{level=\"warning\"}".to_string(),
        format!("gitlab_runner_autoscaling_machine_states{{executor=\"docker+machine\",state=\"stuck-on-removing\",target_machine_type=\"e2-standard-2\",target_project=\"{}\",target_region=\"us-central1\",target_zone=\"{ZONE_A}\"}} 0", gce.project()),
        "flotilla_gce_api_calls_total{method=\"instances.insert\",result=\"ok\"}".to_string(),
        format!("flotilla_vm_creation_phase_seconds_count{{phase=\"docker_ready\",zone=\"{ZONE_A}\"}}"),
    ] {
        assert!(metrics.contains(&needle), "{needle} missing from:\n{metrics}");
    }

    // The pool's events were counted: VMs made in zone A, the three jobs' VMs used.
    let targets = format!(
        "executor=\"docker+machine\",target_machine_type=\"e2-standard-2\",target_project=\"{}\",target_region=\"us-central1\",target_zone=\"{ZONE_A}\"",
        gce.project()
    );
    let created = sample(
        &metrics,
        &format!("gitlab_runner_autoscaling_actions_total{{action=\"created\",{targets}}}"),
    );
    let used = sample(
        &metrics,
        &format!("gitlab_runner_autoscaling_actions_total{{action=\"used\",{targets}}}"),
    );
    assert!(
        created >= 1.0 && used >= 3.0,
        "created {created}, used {used}:\n{metrics}"
    );
    let busy = sample(
        &metrics,
        &format!("flotilla_vm_seconds_total{{runner=\"{short}\",state=\"busy\"}}"),
    );
    assert!(busy > 0.0, "no busy VM time:\n{metrics}");

    // The status page and its JSON: runner, VMs, the running job, no token.
    let (status, json) = get(&format!("{base}/status.json")).await;
    assert_eq!(status, 200);
    assert!(!json.contains(&token));
    let report: Value = serde_json::from_str(&json).expect("status.json is JSON");
    let vms: Vec<String> = report["vms"]
        .as_array()
        .expect("vms")
        .iter()
        .map(|v| v["name"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(!vms.is_empty(), "no VM in {report:#}");
    assert!(
        report["vms"]
            .as_array()
            .expect("vms")
            .iter()
            .any(|v| v["state"] == "used"),
        "the long job's VM is not used: {report:#}"
    );
    assert_eq!(report["jobs"][0]["id"], long, "{report:#}");
    if std::env::var_os("FLOTILLA_SKIP_BROWSER").is_none() {
        let dom = rendered_dom(&format!("{base}/status"));
        for needle in [
            short.as_str(),
            "it-observed",
            &long.to_string(),
            "running",
            ZONE_A,
        ]
        .into_iter()
        .chain(vms.iter().map(String::as_str))
        {
            assert!(
                dom.contains(needle),
                "{needle} missing from the rendered page:\n{dom}"
            );
        }
        assert!(dom.contains("<table id=\"jobs\">"), "{dom}");
    }

    if !prom::skipped() {
        let dir = dashboards_dir();
        let (clean, out) = prom::promtool(&dir, &["check", "metrics"], Some(&metrics));
        assert!(
            clean && out.trim().is_empty(),
            "promtool check metrics:\n{out}"
        );
        let (ok, out) = prom::promtool(&dir, &["check", "rules", "alerts.yml"], None);
        assert!(ok, "promtool check rules:\n{out}");
        let (ok, out) = prom::promtool(&dir, &["test", "rules", "alerts_test.yml"], None);
        assert!(ok, "promtool test rules:\n{out}");
        every_alert_has_a_firing_and_a_quiet_case(&dir);

        let prometheus = Prometheus::start(addr).await;
        // Enough samples for every rate() over the 30 s rate interval.
        prometheus
            .wait_for(
                "count_over_time(up{job=\"flotilla\"}[1m]) >= 8 and up{job=\"flotilla\"} == 1",
                DEADLINE,
            )
            .await;
        let mut failures = Vec::new();
        let mut checked = 0;
        for file in ["fleet-overview.json", "autoscaling.json", "api-health.json"] {
            let text = std::fs::read_to_string(dir.join(file)).expect("read dashboard");
            let dashboard: Value = serde_json::from_str(&text).expect("dashboard is JSON");
            assert!(
                dashboard["schemaVersion"].as_u64() >= Some(39),
                "{file}: old schema"
            );
            let vars: Vec<&str> = dashboard["templating"]["list"]
                .as_array()
                .expect("templating")
                .iter()
                .filter_map(|v| v["name"].as_str())
                .collect();
            assert_eq!(vars, ["datasource", "instance"], "{file}: variables");
            for (panel, expr) in prom::dashboard_exprs(&dashboard) {
                checked += 1;
                match prometheus.query(&expr).await {
                    Ok(series) if series.is_empty() => {
                        failures.push(format!("{file} / {panel}: no series for {expr}"))
                    }
                    Ok(_) => {}
                    Err(e) => failures.push(format!("{file} / {panel}: {e} in {expr}")),
                }
            }
        }
        assert!(checked >= 25, "only {checked} panel expressions found");
        assert!(
            failures.is_empty(),
            "dashboard expressions failed:\n{}",
            failures.join("\n")
        );
    }

    // A drain shows as graceful-shutdown while the long job still runs.
    manager
        .controls
        .send(flotilla::lifecycle::Control::Drain)
        .await
        .expect("send drain");
    let end = tokio::time::Instant::now() + DEADLINE;
    loop {
        let (_, text) = get(&format!("{base}/metrics")).await;
        if sample(
            &text,
            "gitlab_runner_process_state_info{state=\"graceful-shutdown\"}",
        ) == 1.0
        {
            assert_eq!(
                sample(&text, "gitlab_runner_process_state_info{state=\"running\"}"),
                0.0
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "never graceful-shutdown:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    gitlab.cancel(long);
    finished(&gitlab, long).await;
    manager.drain().await;
    gce.shutdown().await;
}

/// Each alert of `alerts.yml` has a unit test case that expects it to fire and one that
/// expects it quiet in `alerts_test.yml`.
fn every_alert_has_a_firing_and_a_quiet_case(dir: &Path) {
    let rules = std::fs::read_to_string(dir.join("alerts.yml")).expect("alerts.yml");
    let tests = std::fs::read_to_string(dir.join("alerts_test.yml")).expect("alerts_test.yml");
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert!(alerts.len() >= 6, "alerts: {alerts:?}");
    let cases: Vec<(&str, bool)> = tests
        .split("- eval_time:")
        .skip(1)
        .filter_map(|case| {
            let name = case
                .lines()
                .find_map(|l| l.trim().strip_prefix("alertname: "))?;
            Some((name.trim(), !case.contains("exp_alerts: []")))
        })
        .collect();
    for alert in alerts {
        assert!(
            cases.contains(&(alert, true)),
            "no case makes {alert} fire in alerts_test.yml"
        );
        assert!(
            cases.contains(&(alert, false)),
            "no case keeps {alert} quiet in alerts_test.yml"
        );
    }
}

/// Kills the child if the test ends early.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The real binary: `main`'s tracing layer feeds `gitlab_runner_errors_total` (a configuration
/// warning counts), the process state is `running`, and SIGQUIT ends it cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_metrics_and_counts_logged_warnings() {
    ensure_test_image();
    let (gitlab, token) = fake_gitlab(testkit::FakeGitlabOptions::default()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let config_path = dir.path().join("config.toml");
    let extra = format!(
        "listen_address = \"127.0.0.1:{port}\"\nsentry_dsn = \"https://key@sentry.invalid/1\""
    );
    std::fs::write(
        &config_path,
        config_text(&gitlab.url(), &token, &dir.path().join("state"), &extra, ""),
    )
    .expect("write config");
    let log = std::fs::File::create(dir.path().join("flotilla.log")).expect("log");
    let mut child = KillOnDrop(
        Command::new(flotilla_bin())
            .args(["run", "--config"])
            .arg(&config_path)
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start flotilla"),
    );
    let child = &mut child.0;
    let url = format!("http://127.0.0.1:{port}/metrics");
    let end = tokio::time::Instant::now() + DEADLINE;
    let text = loop {
        if let Ok(r) = reqwest::get(&url).await {
            let text = r.text().await.unwrap_or_default();
            if text.contains("gitlab_runner_process_state_info{state=\"running\"} 1") {
                break text;
            }
        }
        let exited = child.try_wait().expect("try_wait");
        assert!(
            exited.is_none() && tokio::time::Instant::now() < end,
            "no metrics from the binary ({exited:?}):\n{}",
            std::fs::read_to_string(dir.path().join("flotilla.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        sample(&text, "gitlab_runner_errors_total{level=\"warning\"}") >= 1.0,
        "{text}"
    );
    assert!(!text.contains(&token));
    let status = Command::new("kill")
        .args(["-QUIT", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let end = tokio::time::Instant::now() + DEADLINE;
    let exit = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        assert!(tokio::time::Instant::now() < end, "flotilla did not exit");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(exit.success(), "exit {exit:?}");
}
