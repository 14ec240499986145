//! A real Prometheus server (Debian's `prometheus` package) for the observability tests: started
//! on a free loopback port with a temporary config that scrapes one target every second, queried
//! through its HTTP API; and `promtool`. Both are required: a test FAILS when they are missing
//! (`scripts/prepare.sh` installs them), unless `FLOTILLA_SKIP_PROMETHEUS` is set.

use serde_json::Value;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Whether the Prometheus-backed checks are skipped on purpose.
pub fn skipped() -> bool {
    std::env::var_os("FLOTILLA_SKIP_PROMETHEUS").is_some()
}

/// Fails the test with a clear message when `tool` is not installed.
pub fn require(tool: &str, package: &str, skip_var: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "{tool} is not installed: `apt-get install -y {package}` (scripts/prepare.sh, which scripts/test.sh runs, does), or set {skip_var}=1 to skip this check"
    );
}

/// A running Prometheus; killed when dropped.
pub struct Prometheus {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl Prometheus {
    /// Starts Prometheus scraping `target` every second as job `flotilla`; retries on a port
    /// taken in between.
    pub async fn start(target: SocketAddr) -> Prometheus {
        require("prometheus", "prometheus", "FLOTILLA_SKIP_PROMETHEUS");
        let mut last_err = String::new();
        for _ in 0..3 {
            let dir = tempfile::tempdir().expect("tempdir");
            let config = dir.path().join("prometheus.yml");
            std::fs::write(
                &config,
                format!(
                    "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                     scrape_configs:\n  - job_name: flotilla\n    static_configs:\n      - targets: ['{target}']\n"
                ),
            )
            .expect("write prometheus.yml");
            let port = free_port();
            let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log file");
            let child = Command::new("prometheus")
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("start prometheus");
            let mut p = Prometheus {
                child,
                url: format!("http://127.0.0.1:{port}"),
                _dir: dir,
            };
            if p.wait_ready().await {
                return p;
            }
            last_err =
                std::fs::read_to_string(p._dir.path().join("prometheus.log")).unwrap_or_default();
        }
        panic!("prometheus did not become ready:\n{last_err}");
    }

    async fn wait_ready(&mut self) -> bool {
        let client = reqwest::Client::new();
        let end = tokio::time::Instant::now() + Duration::from_secs(30);
        while tokio::time::Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            let ready = client
                .get(format!("{}/-/ready", self.url))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    /// Runs an instant query; `Err` with Prometheus' error text when it fails, else the
    /// `data.result` array.
    pub async fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let response = reqwest::Client::new()
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", expr)])
            .send()
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        let body: Value = response
            .json()
            .await
            .map_err(|e| format!("not JSON: {e}"))?;
        if body["status"] != "success" {
            return Err(format!(
                "{}: {}",
                body["errorType"].as_str().unwrap_or("?"),
                body["error"].as_str().unwrap_or("?")
            ));
        }
        Ok(body["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// Waits until `expr` returns at least one series.
    pub async fn wait_for(&self, expr: &str, within: Duration) {
        let end = tokio::time::Instant::now() + within;
        loop {
            match self.query(expr).await {
                Ok(r) if !r.is_empty() => return,
                other => assert!(
                    tokio::time::Instant::now() < end,
                    "prometheus never returned a series for {expr}: {other:?}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// Runs `promtool args…` (with `stdin` piped in when given) in `dir`; returns whether it
/// succeeded and its combined output.
pub fn promtool(dir: &Path, args: &[&str], stdin: Option<&str>) -> (bool, String) {
    use std::io::Write;
    require("promtool", "prometheus", "FLOTILLA_SKIP_PROMETHEUS");
    let mut child = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin");
        pipe.write_all(input.as_bytes()).expect("write to promtool");
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().expect("promtool output");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Every panel expression of a Grafana dashboard, with the dashboard variables replaced for a
/// direct query: `$instance` matches every instance, `$__rate_interval` is 30 s (ten scrapes).
pub fn dashboard_exprs(dashboard: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut panels: Vec<&Value> = dashboard["panels"]
        .as_array()
        .map(|p| p.iter().collect())
        .unwrap_or_default();
    while let Some(panel) = panels.pop() {
        if let Some(inner) = panel["panels"].as_array() {
            panels.extend(inner.iter());
        }
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                let expr = expr
                    .replace("$instance", ".*")
                    .replace("${instance}", ".*")
                    .replace("$__rate_interval", "30s")
                    .replace("$__interval", "5s");
                out.push((panel["title"].as_str().unwrap_or("?").to_string(), expr));
            }
        }
    }
    out
}
