//! The second stage of loading: raw values → the validated [`Config`], applying GitLab Runner's
//! defaults and rules. Every problem is recorded (with its key's line) and validation goes on, so
//! one run reports them all; the caller discards the result if any problem was found.

use std::path::PathBuf;
use std::time::Duration;

use super::diag::Diagnostics;
use super::error::WarningKind;
use super::gce::RawGce;
use super::machine::RawMachine;
use super::model::{
    Config, DockerConfig, ExecutorKind, GceConfig, LogFormat, MachineConfig, PullPolicy,
    RunnerConfig, Secret,
};
use super::raw::{RawConfig, RawDocker, RawRunner};
use super::toml_read::Field;
use super::{gce, machine, machine_options, units};

/// Default `state_dir`.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/flotilla";

/// Builds the configuration; problems go to `d`.
pub(super) fn build(d: &mut Diagnostics, raw: RawConfig) -> Config {
    let concurrent = match raw.concurrent {
        None => 1,
        Some(f) if f.value >= 1 => to_usize(f.value),
        Some(f) => {
            d.error(f.line, "concurrent", "must be at least 1");
            1
        }
    };
    if raw.runners.is_empty() {
        d.warn(1, "runners", WarningKind::NoRunners);
    }
    Config {
        concurrent,
        check_interval: positive_secs(raw.check_interval, 3),
        shutdown_timeout: positive_secs(raw.shutdown_timeout, 30),
        listen_address: raw
            .listen_address
            .map(|f| f.value.trim().to_string())
            .filter(|a| !a.is_empty())
            .map(|a| units::with_default_port(&a)),
        log_level: log_level(d, raw.log_level),
        log_format: log_format(d, raw.log_format),
        state_dir: state_dir(d, raw.state_dir),
        manager_id: manager_id(d, raw.manager_id),
        reconcile_interval: match raw.reconcile_interval {
            None => Duration::from_secs(60),
            Some(f) if f.value >= 1 => crate::time::secs(f.value.unsigned_abs()),
            Some(f) => {
                d.error(f.line, "reconcile_interval", "must be at least 1 (seconds)");
                Duration::from_secs(60)
            }
        },
        runners: raw.runners.into_iter().map(|r| runner(d, r)).collect(),
    }
}

fn runner(d: &mut Diagnostics, r: RawRunner) -> RunnerConfig {
    let p = |key: &str| format!("{}.{key}", r.path);
    let url = match r.url {
        None => {
            d.error(r.line, &p("url"), "required: the GitLab instance URL");
            String::new()
        }
        Some(f) => {
            let ok = ["http://", "https://"]
                .iter()
                .any(|s| f.value.strip_prefix(s).is_some_and(|host| !host.is_empty()));
            if !ok {
                let message = format!(
                    "invalid URL {:?}: must start with http:// or https://",
                    f.value
                );
                d.error(f.line, &p("url"), message);
            }
            f.value
        }
    };
    let token = match r.token {
        Some(f) if !f.value.trim().is_empty() => Secret(f.value.trim().to_string()),
        Some(f) => {
            d.error(f.line, &p("token"), "must not be empty");
            Secret::default()
        }
        None => {
            d.error(
                r.line,
                &p("token"),
                "required: the runner authentication token",
            );
            Secret::default()
        }
    };
    let limit = match r.limit {
        Some(f) if f.value < 0 => {
            d.error(
                f.line,
                &p("limit"),
                "must not be negative (0 means no limit)",
            );
            0
        }
        Some(f) => to_usize(f.value),
        None => 0,
    };
    let (environment, environment_line) = match r.environment {
        Some(f) => (f.value, f.line),
        None => (Vec::new(), r.line),
    };
    for entry in environment.iter().filter(|e| !e.contains('=')) {
        let message = format!("invalid entry {entry:?}: expected KEY=value");
        d.error(environment_line, &p("environment"), message);
    }
    let executor = executor(d, r.executor, r.line, &p("executor"));
    let network_line = r.docker.network_mode.as_ref().map(|f| f.line);
    docker_transport(d, &r.docker, executor, &p("docker"));
    let docker = docker(d, r.docker, &p("docker"));
    let (machine, gce) = match executor {
        ExecutorKind::Docker => (None, None),
        ExecutorKind::DockerMachine => {
            if let (Some("host"), Some(line)) = (docker.network_mode.as_deref(), network_line) {
                d.warn(
                    line,
                    &p("docker.network_mode"),
                    WarningKind::HostNetworkOnVm,
                );
            }
            let (machine, gce) = docker_machine(d, r.machine, r.gce, &r.path, r.line);
            (Some(machine), gce)
        }
    };
    RunnerConfig {
        name: r.name.map(|f| f.value).unwrap_or_default(),
        url,
        token,
        id: match r.id {
            Some(f) if f.value < 0 => {
                d.error(f.line, &p("id"), "must not be negative");
                0
            }
            Some(f) => f.value,
            None => 0,
        },
        token_obtained_at: token_time(d, r.token_obtained_at, &p("token_obtained_at")),
        token_expires_at: token_time(d, r.token_expires_at, &p("token_expires_at")),
        kept_short_token: None,
        executor,
        limit,
        request_concurrency: r
            .request_concurrency
            .map_or(1, |f| to_usize(f.value.max(1))),
        output_limit_kib: match r.output_limit {
            Some(f) if f.value > 0 => to_usize(f.value),
            _ => 4096,
        },
        environment,
        unhealthy_requests_limit: match r.unhealthy_requests_limit {
            Some(f) if f.value > 0 => u32::try_from(f.value).unwrap_or(u32::MAX),
            _ => 3,
        },
        unhealthy_interval: unhealthy_interval(d, r.unhealthy_interval, &p("unhealthy_interval")),
        docker,
        machine,
        gce,
        cache: super::cache::build(d, r.cache),
    }
}

/// `token_obtained_at` / `token_expires_at`: RFC 3339; empty or Go's zero time
/// (`0001-01-01T00:00:00Z`, what GitLab Runner writes for "never") is none.
fn token_time(
    d: &mut Diagnostics,
    f: Option<Field<String>>,
    path: &str,
) -> Option<chrono::DateTime<chrono::Utc>> {
    let f = f?;
    let text = f.value.trim();
    if text.is_empty() {
        return None;
    }
    match chrono::DateTime::parse_from_rfc3339(text) {
        Ok(t) if t.timestamp() <= GO_ZERO_TIME_SECS => None,
        Ok(t) => Some(t.with_timezone(&chrono::Utc)),
        Err(e) => {
            d.error(f.line, path, format!("invalid datetime {text:?}: {e}"));
            None
        }
    }
}

/// Go's zero `time.Time` in Unix seconds (year 1).
const GO_ZERO_TIME_SECS: i64 = -62_135_596_800;

/// `[runners.machine]` and the GCE definition of a `docker+machine` runner.
fn docker_machine(
    d: &mut Diagnostics,
    machine: Option<RawMachine>,
    table: Option<RawGce>,
    runner_path: &str,
    runner_line: usize,
) -> (MachineConfig, Option<GceConfig>) {
    let (machine, carried) = machine::build(d, machine, runner_path, runner_line);
    let options = carried.options.as_ref();
    let mapped = match carried.driver {
        Some(driver) if driver.value == "google" => {
            let line = options.map_or(carried.line, |f| f.line);
            let entries = options.map_or(&[][..], |f| &f.value[..]);
            Some(machine_options::map(d, entries, &carried.path, line))
        }
        Some(driver) => {
            let message = format!(
                "MachineDriver {:?}: only the google driver is supported",
                driver.value
            );
            d.error(
                driver.line,
                &format!("{}.MachineDriver", carried.path),
                message,
            );
            return (machine, None);
        }
        None => {
            if let Some(f) = options.filter(|f| !f.value.is_empty()) {
                d.error(
                    f.line,
                    &format!("{}.MachineOptions", carried.path),
                    "MachineOptions need MachineDriver = \"google\"",
                );
            }
            None
        }
    };
    let gce = gce::build(d, table, mapped, runner_path, runner_line);
    (machine, gce)
}

fn executor(
    d: &mut Diagnostics,
    f: Option<Field<String>>,
    line: usize,
    path: &str,
) -> ExecutorKind {
    const SUPPORTED: &str = "supported executors: docker+machine, docker";
    let Some(f) = f else {
        d.error(line, path, format!("required: {SUPPORTED}"));
        return ExecutorKind::Docker;
    };
    match f.value.as_str() {
        "docker" => ExecutorKind::Docker,
        "docker+machine" => ExecutorKind::DockerMachine,
        other => {
            let message = format!("executor {other:?} is not supported; {SUPPORTED}");
            d.error(f.line, path, message);
            ExecutorKind::Docker
        }
    }
}

fn unhealthy_interval(d: &mut Diagnostics, f: Option<Field<String>>, path: &str) -> Duration {
    const DEFAULT: Duration = Duration::from_secs(3600);
    let Some(f) = f else { return DEFAULT };
    match units::parse_go_duration(&f.value) {
        Ok(d) if d.is_zero() => DEFAULT,
        Ok(d) => d,
        Err(message) => {
            d.error(f.line, path, message.to_string());
            DEFAULT
        }
    }
}

fn docker(d: &mut Diagnostics, raw: RawDocker, path: &str) -> DockerConfig {
    let p = |key: &str| format!("{path}.{key}");
    let defaults = DockerConfig::default();
    let mut pull_policy = Vec::new();
    if let Some(f) = raw.pull_policy {
        for name in &f.value {
            match PullPolicy::parse(name) {
                Some(policy) => pull_policy.push(policy),
                None => d.error(
                    f.line,
                    &p("pull_policy"),
                    format!("unknown pull policy {name:?}: use always, if-not-present or never"),
                ),
            }
        }
    }
    let helper_image = non_empty(raw.helper_image).and_then(|f| {
        if f.value.contains("gitlab-runner-helper") {
            d.warn(f.line, &p("helper_image"), WarningKind::GitlabHelperImage);
            None
        } else {
            Some(f.value)
        }
    });
    DockerConfig {
        host: non_empty(raw.host).map(|f| f.value),
        image: raw.image.map(|f| f.value).unwrap_or_default(),
        privileged: raw.privileged.is_some_and(|f| f.value),
        pull_policy: if pull_policy.is_empty() {
            defaults.pull_policy
        } else {
            pull_policy
        },
        volumes: raw.volumes.map(|f| f.value).unwrap_or_default(),
        network_mode: non_empty(raw.network_mode).map(|f| f.value),
        nano_cpus: parsed(d, non_empty(raw.cpus), &p("cpus"), units::parse_cpus),
        memory_bytes: parsed(d, non_empty(raw.memory), &p("memory"), units::parse_memory),
        helper_image,
        helper_image_archive: non_empty(raw.helper_image_archive).map(|f| f.value.into()),
        wait_for_services_timeout: match raw.wait_for_services_timeout.map(|f| f.value) {
            None | Some(0) => defaults.wait_for_services_timeout,
            Some(secs) if secs < 0 => None,
            Some(secs) => Some(crate::time::secs(secs.unsigned_abs())),
        },
        services_privileged: raw.services_privileged.map(|f| f.value),
        allowed_services: allowed_services(d, raw.allowed_services, &p("allowed_services")),
        services_limit: raw.services_limit.and_then(|f| u32::try_from(f.value).ok()),
        allowed_images: allowed_services(d, raw.allowed_images, &p("allowed_images")),
        allowed_pull_policies: allowed_pull_policies(
            d,
            raw.allowed_pull_policies,
            &p("allowed_pull_policies"),
        ),
    }
}

/// `host`, `tls_verify` and `tls_cert_path`: what reaches a Docker engine must not be open to the
/// network. A `tcp://` host is refused (Flotilla has no TLS to a configured host, and plain TCP
/// gives anyone who reaches the port root on it); `tls_verify = true` and `tls_cert_path` are
/// refused since they would not be honoured, except `tls_verify = true` with docker+machine,
/// whose VMs Flotilla always reaches over its own mutual TLS. `tls_verify = false` is what
/// `gitlab-runner register` writes: accepted silently.
fn docker_transport(d: &mut Diagnostics, raw: &RawDocker, executor: ExecutorKind, path: &str) {
    let p = |key: &str| format!("{path}.{key}");
    if let Some(host) = &raw.host {
        let h = host.value.trim();
        if h.starts_with("tcp://") || h.starts_with("http://") {
            d.error(
                host.line,
                &p("host"),
                format!(
                    "{h:?}: a Docker host over plain TCP is refused (anyone who reaches the port \
                     is root on that host) and TLS to a configured host is not supported; use a \
                     unix:// socket"
                ),
            );
        }
    }
    if let Some(f) = raw.tls_verify.as_ref().filter(|f| f.value) {
        if executor != ExecutorKind::DockerMachine {
            d.error(
                f.line,
                &p("tls_verify"),
                "tls_verify = true is not supported: Flotilla has no TLS to a configured Docker \
                 host (use a unix:// socket)",
            );
        }
    }
    if let Some(f) = raw
        .tls_cert_path
        .as_ref()
        .filter(|f| !f.value.trim().is_empty())
    {
        d.error(
            f.line,
            &p("tls_cert_path"),
            "not supported: Flotilla has no TLS to a configured Docker host (docker+machine VMs \
             are reached over Flotilla's own certificates)",
        );
    }
}

/// `allowed_pull_policies`, each a known policy (GitLab Runner: "unsupported
/// allowed_pull_policies config").
fn allowed_pull_policies(
    d: &mut Diagnostics,
    f: Option<Field<Vec<String>>>,
    path: &str,
) -> Vec<PullPolicy> {
    let Some(f) = f else { return Vec::new() };
    let mut out = Vec::new();
    for name in &f.value {
        match PullPolicy::parse(name) {
            Some(policy) => out.push(policy),
            None => d.error(
                f.line,
                path,
                format!("unsupported allowed_pull_policies config: {name:?} (use always, if-not-present or never)"),
            ),
        }
    }
    out
}

/// `allowed_services` / `allowed_images`, each pattern checked to be a valid glob.
fn allowed_services(d: &mut Diagnostics, f: Option<Field<Vec<String>>>, path: &str) -> Vec<String> {
    let Some(f) = f else { return Vec::new() };
    for pattern in &f.value {
        if let Err(e) = globset::GlobBuilder::new(pattern).build() {
            d.error(f.line, path, format!("invalid pattern {pattern:?}: {e}"));
        }
    }
    f.value
}

fn log_level(d: &mut Diagnostics, f: Option<Field<String>>) -> String {
    let Some(f) = f else {
        return "info".to_string();
    };
    let level = match f.value.to_ascii_lowercase().as_str() {
        "trace" => "trace",
        "debug" => "debug",
        "info" => "info",
        "warn" | "warning" => "warn",
        "error" | "fatal" | "panic" => "error",
        _ => {
            let message = format!(
                "unknown log level {:?}: use debug, info, warn, error, fatal or panic",
                f.value
            );
            d.error(f.line, "log_level", message);
            "info"
        }
    };
    level.to_string()
}

fn log_format(d: &mut Diagnostics, f: Option<Field<String>>) -> LogFormat {
    let Some(f) = f else { return LogFormat::Text };
    match f.value.as_str() {
        "runner" | "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        other => {
            let message = format!("unknown log format {other:?}: use runner, text or json");
            d.error(f.line, "log_format", message);
            LogFormat::Text
        }
    }
}

fn state_dir(d: &mut Diagnostics, f: Option<Field<String>>) -> PathBuf {
    match f {
        None => PathBuf::from(DEFAULT_STATE_DIR),
        Some(f) if f.value.trim().is_empty() => {
            d.error(f.line, "state_dir", "must not be empty");
            PathBuf::from(DEFAULT_STATE_DIR)
        }
        Some(f) => PathBuf::from(f.value),
    }
}

/// The manager id ends up in GCE label values: lowercase letters, digits, `-` and `_`, ≤ 63.
fn manager_id(d: &mut Diagnostics, f: Option<Field<String>>) -> Option<String> {
    let f = f?;
    let valid = !f.value.is_empty()
        && f.value.len() <= 63
        && f.value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !valid {
        let message = format!(
            "invalid manager id {:?}: use 1 to 63 lowercase letters, digits, '-' or '_'",
            f.value
        );
        d.error(f.line, "manager_id", message);
    }
    Some(f.value)
}

fn positive_secs(f: Option<Field<i64>>, default: u64) -> Duration {
    match f {
        Some(f) if f.value > 0 => crate::time::secs(f.value.unsigned_abs()),
        _ => Duration::from_secs(default),
    }
}

fn parsed<T, E: std::fmt::Display>(
    d: &mut Diagnostics,
    f: Option<Field<String>>,
    path: &str,
    parse: impl Fn(&str) -> Result<T, E>,
) -> Option<T> {
    let f = f?;
    parse(&f.value)
        .map_err(|message| d.error(f.line, path, message.to_string()))
        .ok()
}

fn non_empty(f: Option<Field<String>>) -> Option<Field<String>> {
    f.filter(|f| !f.value.trim().is_empty())
}

fn to_usize(value: i64) -> usize {
    usize::try_from(value).unwrap_or(usize::MAX)
}
