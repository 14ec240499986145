//! Issue 15, items 4 and 5, through the real binary: with `log_format = "json"` every line the
//! process prints is a logrus JSON line (`level`, `msg`, `time`, fields flat), command-line and
//! configuration errors included, and a failed job request carries its whole cause (refused,
//! TLS verification) with the runner and the URL without credentials; GitLab Runner's global
//! `--debug`/`--log-level`/`--log-format`, `CONFIG_FILE` (and `FLOTILLA_CONFIG`), and the
//! service unit `gitlab-runner install` writes, with the binary name changed.

use crate::harness::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use testkit::FakeGitlabOptions;

const DEADLINE: Duration = Duration::from_secs(60);

/// Environment variables the binary reads; cleared so the runner's own environment never
/// changes what a test runs.
const READ_ENV: &[&str] = &[
    "CONFIG_FILE",
    "FLOTILLA_CONFIG",
    "LOG_LEVEL",
    "LOG_FORMAT",
    "RUNNER_DEBUG",
    "LISTEN_ADDRESS",
    "LOG_SYSLOG",
];

/// A `flotilla` process with stdout and stderr collected in files.
struct Proc {
    child: Child,
    out: PathBuf,
    err: PathBuf,
}

impl Proc {
    fn start(dir: &Path, name: &str, args: &[&str], env: &[(&str, &str)]) -> Proc {
        let out = dir.join(format!("{name}.out"));
        let err = dir.join(format!("{name}.err"));
        let mut command = Command::new(flotilla_bin());
        command
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap());
        for key in READ_ENV {
            command.env_remove(key);
        }
        command.envs(env.iter().copied());
        let child = command.spawn().expect("start flotilla");
        Proc { child, out, err }
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    /// Waits until stderr has a line for which `found` holds; that line.
    async fn line_where(&mut self, what: &str, found: impl Fn(&str) -> bool) -> String {
        let end = tokio::time::Instant::now() + DEADLINE;
        loop {
            if let Some(line) = self.stderr().lines().find(|l| found(l)) {
                return line.to_string();
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "flotilla exited ({status}) before {what}:\n{}",
                    self.stderr()
                );
            }
            assert!(
                tokio::time::Instant::now() < end,
                "no {what} in time:\n{}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGTERM, then waits for the exit; the exit status.
    async fn stop(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.wait().await
    }

    async fn wait(&mut self) -> std::process::ExitStatus {
        let end = tokio::time::Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(tokio::time::Instant::now() < end, "flotilla did not exit");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- stderr ----\n{}", self.stderr());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every line of `text` parsed as GitLab Runner's JSON log line: `level` one of logrus's
/// names, `msg` a string, `time` RFC 3339, and no nested `fields`/`span`/`spans` object.
fn logrus_lines(text: &str) -> Vec<serde_json::Map<String, Value>> {
    text.lines()
        .map(|line| {
            let value: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line:?}\nin:\n{text}"));
            let Value::Object(map) = value else {
                panic!("not a JSON object: {line}");
            };
            let level = map.get("level").and_then(Value::as_str).unwrap_or("");
            assert!(
                ["trace", "debug", "info", "warning", "error", "fatal", "panic"].contains(&level),
                "level {level:?}: {line}"
            );
            assert!(map.get("msg").is_some_and(Value::is_string), "msg: {line}");
            let time = map.get("time").and_then(Value::as_str).unwrap_or("");
            assert!(
                chrono::DateTime::parse_from_rfc3339(time).is_ok(),
                "time {time:?}: {line}"
            );
            for nested in ["fields", "span", "spans", "target"] {
                assert!(map.get(nested).is_none(), "{nested} in {line}");
            }
            map
        })
        .collect()
}

/// A port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// A config.toml for one runner at `url` (no job ever comes), with `global` keys on top.
fn write_config(dir: &Path, url: &str, token: &str, global: &str) -> PathBuf {
    let path = dir.join("config.toml");
    let text = format!(
        "{global}\nconcurrent = 1\ncheck_interval = 1\nstate_dir = \"{state}\"\n\n\
         [[runners]]\nname = \"cli-runner\"\nurl = \"{url}\"\ntoken = \"{token}\"\n\
         executor = \"docker\"\nrequest_concurrency = 1\n[runners.docker]\nimage = \"busybox\"\n",
        state = dir.join("state").display(),
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs the manager with JSON logs against `url` until a job request fails; that line, after
/// checking every line of stdout and stderr.
async fn failed_request_line(url: &str) -> serde_json::Map<String, Value> {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), url, &runner_token(), "log_format = \"json\"");
    let mut proc = Proc::start(
        dir.path(),
        "run",
        &["run", "-c", config.to_str().unwrap()],
        &[],
    );
    proc.line_where("a failed job request", |l| {
        l.contains("job request failed") && l.contains("\"url\"")
    })
    .await;
    let status = proc.stop().await;
    assert!(status.success(), "{status}: {}", proc.stderr());
    logrus_lines(&proc.stdout());
    let lines = logrus_lines(&proc.stderr());
    assert!(
        lines.iter().any(|l| l["msg"] == "flotilla starting"),
        "{}",
        proc.stderr()
    );
    lines
        .into_iter()
        .find(|l| l["msg"] == "job request failed" && l.contains_key("url"))
        .expect("the failed request line")
}

#[tokio::test]
async fn a_refused_job_request_is_one_json_line_with_its_cause_runner_and_clean_url() {
    let port = closed_port();
    let password = "p".repeat(12);
    let line = failed_request_line(&format!("http://bot:{password}@127.0.0.1:{port}")).await;
    assert_eq!(line["level"], "warning");
    let url = line["url"].as_str().unwrap();
    assert_eq!(url, format!("http://127.0.0.1:{port}/api/v4/jobs/request"));
    assert!(
        line["runner"].as_str().is_some_and(|r| r.len() == 9),
        "{line:?}"
    );
    let error = line["error"].as_str().unwrap();
    assert!(error.contains("error sending request"), "{error}");
    assert!(error.contains("Connection refused"), "the cause: {error}");
    assert!(!error.contains(&password), "{error}");
}

#[tokio::test]
async fn a_job_request_to_an_untrusted_certificate_names_the_tls_failure() {
    init_crypto();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let tls = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(tls));
    let server = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let _ = acceptor.accept(stream).await;
            });
        }
    });
    let line = failed_request_line(&format!("https://127.0.0.1:{port}")).await;
    server.abort();
    let error = line["error"].as_str().unwrap();
    assert!(
        error.contains("invalid peer certificate") && error.contains("UnknownIssuer"),
        "the TLS cause: {error}"
    );
}

/// A case of an early error: its name, arguments, environment and exit code.
type EarlyCase<'a> = (&'a str, &'a [&'a str], &'a [(&'a str, &'a str)], i32);

#[tokio::test]
async fn errors_before_logging_starts_are_json_lines_too() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "log_format = \"json\"\nconcurrent = \"four\"\n").unwrap();
    let bad = bad.to_str().unwrap();
    let cases: [EarlyCase<'_>; 4] = [
        ("bad config", &["run", "-c", bad], &[], 64),
        (
            "bad config by CONFIG_FILE",
            &["run"],
            &[("CONFIG_FILE", bad)],
            64,
        ),
        (
            "unknown flag",
            &["--log-format", "json", "run", "--bogus"],
            &[],
            2,
        ),
        (
            "unknown flag, LOG_FORMAT",
            &["run", "--nope"],
            &[("LOG_FORMAT", "json")],
            2,
        ),
    ];
    for (name, args, env, code) in cases {
        let mut proc = Proc::start(dir.path(), "early", args, env);
        let status = proc.wait().await;
        assert_eq!(status.code(), Some(code), "{name}: {}", proc.stderr());
        assert!(proc.stdout().is_empty(), "{name}: {}", proc.stdout());
        let lines = logrus_lines(&proc.stderr());
        assert_eq!(lines.len(), 1, "{name}: {}", proc.stderr());
        assert_eq!(lines[0]["level"], "fatal", "{name}");
        let msg = lines[0]["msg"].as_str().unwrap();
        assert!(
            msg.contains("concurrent") || msg.contains("unexpected argument"),
            "{name}: {msg}"
        );
    }
}

/// What `gitlab-runner install` writes into its systemd unit, with `flotilla` as the binary:
/// the global log flags override the file (debug JSON lines although the file says `error` and
/// `text`), the relative `--config` resolves in `--working-directory`, and `--listen-address`
/// serves the metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gitlab_runner_service_unit_command_line_runs() {
    let (gitlab, token) = fake_gitlab(FakeGitlabOptions::default()).await;
    let work = tempfile::tempdir().unwrap();
    write_config(
        work.path(),
        &gitlab.url(),
        &token,
        "log_level = \"error\"\nlog_format = \"text\"",
    );
    let elsewhere = tempfile::tempdir().unwrap();
    let port = closed_port();
    let listen = format!("127.0.0.1:{port}");
    let mut proc = Proc::start(
        elsewhere.path(),
        "unit",
        &[
            "--log-level",
            "debug",
            "--log-format",
            "json",
            "run",
            "--working-directory",
            work.path().to_str().unwrap(),
            "--config",
            "config.toml",
            "--service",
            "gitlab-runner",
            "--user",
            "gitlab-runner",
            "--syslog",
            "--listen-address",
            &listen,
        ],
        &[],
    );
    proc.line_where("a debug line", |l| l.contains("\"level\":\"debug\""))
        .await;
    let metrics = async {
        let end = tokio::time::Instant::now() + DEADLINE;
        loop {
            if let Ok(r) = reqwest::get(format!("http://{listen}/metrics")).await {
                return r.text().await.unwrap();
            }
            assert!(tokio::time::Instant::now() < end, "no metrics on {listen}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    .await;
    assert!(metrics.contains("gitlab_runner_"), "{metrics}");
    let status = proc.stop().await;
    assert!(status.success(), "{status}");
    let lines = logrus_lines(&proc.stderr());
    assert!(lines.iter().any(|l| l["msg"]
        .as_str()
        .is_some_and(|m| m.contains("GitLab Runner service flags accepted"))
        && l["user"] == "gitlab-runner"));
}

/// `CONFIG_FILE` names the file of every command (`run`, `list`, `config check`);
/// `FLOTILLA_CONFIG` still does; `--debug` before the command logs at debug level.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_file_comes_from_config_file_or_flotilla_config() {
    let (gitlab, token) = fake_gitlab(FakeGitlabOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &gitlab.url(), &token, "log_level = \"info\"");
    let config = config.to_str().unwrap();
    for (var, name) in [("CONFIG_FILE", "new"), ("FLOTILLA_CONFIG", "old")] {
        let mut proc = Proc::start(dir.path(), name, &["--debug", "run"], &[(var, config)]);
        proc.line_where("a debug line", |l| l.contains("DEBUG"))
            .await;
        let status = proc.stop().await;
        assert!(status.success(), "{var}: {status}");

        let mut list = Proc::start(dir.path(), "list", &["list"], &[(var, config)]);
        let status = list.wait().await;
        let out = format!("{}{}", list.stdout(), list.stderr());
        assert!(
            status.success() && out.contains("cli-runner"),
            "{var}: list: {out}"
        );

        let mut check = Proc::start(dir.path(), "check", &["config", "check"], &[(var, config)]);
        let status = check.wait().await;
        assert!(status.success(), "{var}: {}", check.stderr());
        assert!(check.stdout().contains("OK"), "{var}: {}", check.stdout());
    }
}
