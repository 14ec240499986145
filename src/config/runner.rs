//! `[[runners]]`: one runner entry — its identity (`url`, `token`), its executor and its limits.
//! Owns the entry whole: its validated type ([`RunnerConfig`]), its raw struct, its reading from
//! the TOML table and its building. Each sub-table is owned by its own section file and called
//! from here: `docker` (`[runners.docker]`), `machine` and `gce` with `machine_options`
//! (`docker+machine` only), `autoscaler` (`docker-autoscaler`, carried over onto the
//! docker+machine code path, with `gce`), `cache`.

use std::time::Duration;

use toml_edit::Item;

use super::autoscaler::{AutoscalerMapping, RawAutoscaler};
use super::cache::{CacheConfig, RawCache};
use super::diag::Diagnostics;
use super::docker::{DockerConfig, RawDocker};
use super::error::WarningKind;
use super::gce::{GceConfig, RawGce};
use super::known_keys;
use super::machine::{MachineConfig, RawMachine};
use super::secret::Secret;
use super::tls::{RawTls, TlsFiles};
use super::toml_read::{
    check_keys, check_keys_quietly, datetime, integer, is_empty, string, string_list, Field, Scope,
};
use super::units::{self, to_usize};
use super::{autoscaler, cache, docker, gce, machine, machine_options};

/// The executor whose `[runners.machine]` and `[runners.gce]` are read.
const DOCKER_MACHINE: &str = "docker+machine";
/// GitLab Runner's successor to docker+machine, whose `[runners.autoscaler]` (and Flotilla's
/// `[runners.gce]`) are read and carried over onto the docker+machine code path.
const DOCKER_AUTOSCALER: &str = "docker-autoscaler";

/// `executor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecutorKind {
    /// Containers on a Docker engine the manager reaches directly.
    Docker,
    /// Containers on one-job GCE VMs.
    DockerMachine,
}

impl ExecutorKind {
    /// The name GitLab Runner uses (`info.executor`, metrics).
    pub fn as_str(self) -> &'static str {
        match self {
            ExecutorKind::Docker => "docker",
            ExecutorKind::DockerMachine => "docker+machine",
        }
    }
}

/// A runner's identity across reloads and token rotations: its URL and GitLab `id` where known,
/// else its URL and short token (as GitLab Runner; a rename is not a new runner).
#[derive(Debug, Clone)]
pub struct RunnerIdentity {
    /// The coordinator URL as configured (trailing `/` removed).
    pub url: String,
    /// The runner's short token (for logs; part of the identity only when `id` is 0).
    pub short_token: String,
    /// GitLab's runner `id` (0: unknown).
    pub id: i64,
}

impl RunnerIdentity {
    fn key(&self) -> (&str, i64, &str) {
        if self.id > 0 {
            (&self.url, self.id, "")
        } else {
            (&self.url, 0, &self.short_token)
        }
    }
}

impl PartialEq for RunnerIdentity {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for RunnerIdentity {}

impl std::hash::Hash for RunnerIdentity {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key().hash(state);
    }
}

impl PartialOrd for RunnerIdentity {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for RunnerIdentity {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key().cmp(&other.key())
    }
}

/// One `[[runners]]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct RunnerConfig {
    /// `name` (a description for people; not the identity).
    pub name: String,
    /// `url` of the coordinator.
    pub url: String,
    /// `token`: the runner authentication token.
    pub token: Secret,
    /// `id`: GitLab's id of the runner (0 when the file has none).
    pub id: i64,
    /// `token_obtained_at`: when the token was issued (absent: unknown).
    pub token_obtained_at: Option<chrono::DateTime<chrono::Utc>>,
    /// `token_expires_at`: when the token expires (absent, empty or Go's zero time: never).
    pub token_expires_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The short token the runner's labels, metric series and cache path keep after a token
    /// rotation in this process (set by the manager, never read from the file).
    pub kept_short_token: Option<String>,
    /// `executor`.
    pub executor: ExecutorKind,
    /// `limit`: jobs at once for this runner (0 = no limit but `concurrent`).
    pub limit: usize,
    /// `request_concurrency`: job requests in flight at once (default 1).
    pub request_concurrency: usize,
    /// `output_limit` in KiB (default 4096).
    pub output_limit_kib: usize,
    /// `environment`: `KEY=value` entries added to every job.
    pub environment: Vec<String>,
    /// `unhealthy_requests_limit` (default 3).
    pub unhealthy_requests_limit: u32,
    /// `unhealthy_interval` (default 1 h).
    pub unhealthy_interval: Duration,
    /// `[runners.docker]`.
    pub docker: DockerConfig,
    /// `[runners.machine]` (docker+machine only).
    pub machine: Option<MachineConfig>,
    /// `[runners.gce]`, merged with a carried-over `MachineDriver = "google"` + `MachineOptions`
    /// (docker+machine only).
    pub gce: Option<GceConfig>,
    /// `[runners.cache]`: where job caches are kept.
    pub cache: CacheConfig,
    /// How a `docker-autoscaler` runner's `[runners.autoscaler]` was carried over onto the
    /// docker+machine code path (`executor` is then [`ExecutorKind::DockerMachine`]).
    pub autoscaler: Option<AutoscalerMapping>,
    /// `tls-ca-file`, `tls-cert-file`, `tls-key-file`: TLS toward GitLab.
    pub tls: TlsFiles,
}

impl RunnerConfig {
    /// The short token as GitLab Runner shortens it (`helpers/shorten_token.go`).
    pub fn short_token(&self) -> String {
        match &self.kept_short_token {
            Some(kept) => kept.clone(),
            None => short_token(self.token.expose()),
        }
    }

    /// The identity used to match runners across reloads.
    pub fn identity(&self) -> RunnerIdentity {
        RunnerIdentity {
            url: self.url.trim_end_matches('/').to_string(),
            short_token: self.short_token(),
            id: self.id,
        }
    }
}

/// Shortens a token as GitLab Runner does: strip a known prefix, then keep 9 characters.
pub fn short_token(token: &str) -> String {
    let mut rest = token;
    for prefix in ["glrtr-", "glcbt-"] {
        if let Some(r) = rest.strip_prefix(prefix) {
            rest = r;
        }
    }
    if let Some(r) = rest.strip_prefix("glrt-") {
        rest = r;
    }
    for prefix in ["t1_", "t2_", "t3_"] {
        if let Some(r) = rest.strip_prefix(prefix) {
            rest = r;
        }
    }
    // `get`, not indexing: a token is config input and may hold multi-byte characters.
    if rest.starts_with("GR")
        && rest
            .get(2..9)
            .is_some_and(|h| h.chars().all(|c| c.is_ascii_hexdigit()))
    {
        rest = &rest[9..];
    }
    rest.chars().take(9).collect()
}

/// One `[[runners]]` entry as written (no `Debug`: it holds the runner token in clear).
#[derive(Default)]
pub(super) struct RawRunner {
    /// The line of the `[[runners]]` header.
    pub line: usize,
    /// The key path of the entry (`runners[0]`).
    pub path: String,
    pub name: Option<Field<String>>,
    pub url: Option<Field<String>>,
    pub token: Option<Field<String>>,
    pub id: Option<Field<i64>>,
    /// A TOML datetime or an RFC 3339 string in the file (kept as written).
    pub token_obtained_at: Option<Field<String>>,
    pub token_expires_at: Option<Field<String>>,
    pub executor: Option<Field<String>>,
    pub limit: Option<Field<i64>>,
    pub request_concurrency: Option<Field<i64>>,
    pub output_limit: Option<Field<i64>>,
    pub environment: Option<Field<Vec<String>>>,
    pub unhealthy_requests_limit: Option<Field<i64>>,
    pub unhealthy_interval: Option<Field<String>>,
    pub docker: RawDocker,
    /// `[runners.machine]`, read only with executor `docker+machine`.
    pub machine: Option<RawMachine>,
    /// `[runners.gce]`, read only with executor `docker+machine`.
    pub gce: Option<RawGce>,
    /// `[runners.cache]`.
    pub cache: Option<RawCache>,
    /// `[runners.autoscaler]`, read only with executor `docker-autoscaler`.
    pub autoscaler: Option<RawAutoscaler>,
    pub tls: RawTls,
}

/// Reads one `[[runners]]` entry and the sub-tables its executor uses.
pub(super) fn read(d: &mut Diagnostics, s: Scope<'_>) -> RawRunner {
    check_keys(d, &s, &known_keys::RUNNER);
    let executor = s.table.get("executor").and_then(Item::as_str);
    let autoscaler = match executor {
        Some(DOCKER_AUTOSCALER) => s
            .sub_table(d, "autoscaler")
            .map(|a| autoscaler::read(d, &a)),
        _ => {
            if let Some(item) = s.table.get("autoscaler").filter(|i| !is_empty(i)) {
                let line = d.line_of(item.span(), s.line);
                d.warn(line, &s.child_path("autoscaler"), WarningKind::NotSupported);
            }
            None
        }
    };
    let (machine, gce) = if executor == Some(DOCKER_MACHINE) {
        (
            s.sub_table(d, "machine").map(|m| machine::read(d, &m)),
            s.sub_table(d, "gce").map(|g| gce::read(d, &g)),
        )
    } else if executor == Some(DOCKER_AUTOSCALER) {
        ignore_machine(d, &s);
        (None, s.sub_table(d, "gce").map(|g| gce::read(d, &g)))
    } else {
        if s.table.contains_key("gce") {
            d.error(
                s.key_line(d, "gce"),
                &s.child_path("gce"),
                "[runners.gce] requires executor \"docker+machine\" or \"docker-autoscaler\"",
            );
        }
        ignore_machine(d, &s);
        (None, None)
    };
    let cache = s.sub_table(d, "cache").map(|c| cache::read(d, &c));
    let docker = match s.sub_table(d, "docker") {
        Some(docker) => docker::read(d, &docker),
        None => RawDocker::default(),
    };
    RawRunner {
        line: s.line,
        path: s.path.clone(),
        name: string(d, &s, "name"),
        url: string(d, &s, "url"),
        token: string(d, &s, "token"),
        id: integer(d, &s, "id"),
        token_obtained_at: datetime(d, &s, "token_obtained_at"),
        token_expires_at: datetime(d, &s, "token_expires_at"),
        executor: string(d, &s, "executor"),
        limit: integer(d, &s, "limit"),
        request_concurrency: integer(d, &s, "request_concurrency"),
        output_limit: integer(d, &s, "output_limit"),
        environment: string_list(d, &s, "environment"),
        unhealthy_requests_limit: integer(d, &s, "unhealthy_requests_limit"),
        unhealthy_interval: string(d, &s, "unhealthy_interval"),
        tls: super::tls::read(d, &s),
        docker,
        machine,
        gce,
        cache,
        autoscaler,
    }
}

/// `[runners.machine]` of an executor that does not read it: checked, then one warning.
fn ignore_machine(d: &mut Diagnostics, s: &Scope<'_>) {
    if let Some(machine) = s.sub_table(d, "machine") {
        check_machine(d, &machine);
        if !is_empty(machine_item(s)) {
            d.warn(machine.line, &machine.path, WarningKind::NotSupported);
        }
    }
}

fn machine_item<'t>(s: &Scope<'t>) -> &'t Item {
    s.table.get("machine").unwrap_or(&Item::None)
}

/// `[runners.machine]` of a runner whose executor does not use it: ignored as a whole (one
/// warning, by the caller), but its keys are checked so a typo is caught early.
fn check_machine(d: &mut Diagnostics, s: &Scope<'_>) {
    check_keys_quietly(d, s, &known_keys::MACHINE);
    match s.table.get("autoscaling") {
        None => {}
        Some(Item::ArrayOfTables(periods)) => {
            for (i, t) in periods.iter().enumerate() {
                let scope = Scope {
                    table: t,
                    path: format!("{}.autoscaling[{i}]", s.path),
                    line: d.line_of(t.span(), s.line),
                };
                check_keys_quietly(d, &scope, &known_keys::MACHINE_AUTOSCALING);
            }
        }
        Some(other) => {
            let found = other.type_name();
            d.error(
                s.key_line(d, "autoscaling"),
                &s.child_path("autoscaling"),
                format!("expected [[runners.machine.autoscaling]] entries, found {found}"),
            );
        }
    }
}

/// Builds one runner entry; problems go to `d`.
pub(super) fn build(d: &mut Diagnostics, r: RawRunner) -> RunnerConfig {
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
    let mut autoscaler_mapping = None;
    let mut limit = match r.limit {
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
    let autoscaled = r.executor.as_ref().map(|f| f.value.as_str()) == Some(DOCKER_AUTOSCALER);
    let tls = super::tls::build(d, r.tls, r.line, &p(""));
    let executor = executor(d, r.executor, r.line, &p("executor"));
    let network_line = r.docker.network_mode.as_ref().map(|f| f.line);
    let on_vm = executor == ExecutorKind::DockerMachine;
    docker::check_transport(d, &r.docker, on_vm, &p("docker"));
    let docker = docker::build(d, r.docker, &p("docker"));
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
            if autoscaled {
                let (machine, gce, mapping, max_instances) =
                    docker_autoscaler(d, r.autoscaler, r.gce, &r.path, r.line);
                if max_instances > 0 && (limit == 0 || max_instances < limit) {
                    limit = max_instances;
                }
                autoscaler_mapping = Some(mapping);
                (Some(machine), gce)
            } else {
                let (machine, gce) = docker_machine(d, r.machine, r.gce, &r.path, r.line);
                (Some(machine), gce)
            }
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
        cache: cache::build(d, r.cache),
        autoscaler: autoscaler_mapping,
        tls,
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

/// A `docker-autoscaler` runner on the docker+machine code path: its warm-pool policy, its GCE
/// definition (`[runners.gce]` over what `plugin_config` gives), the mapping in words and
/// `max_instances`.
fn docker_autoscaler(
    d: &mut Diagnostics,
    raw: Option<RawAutoscaler>,
    table: Option<RawGce>,
    runner_path: &str,
    runner_line: usize,
) -> (MachineConfig, Option<GceConfig>, AutoscalerMapping, usize) {
    let carried = autoscaler::build(d, raw, runner_path, runner_line);
    let (mut machine, _) = machine::build(d, Some(carried.machine), runner_path, runner_line);
    machine.runner_name_prefix = false;
    let mut table = table.unwrap_or_else(|| RawGce {
        line: runner_line,
        path: format!("{runner_path}.gce"),
        ..RawGce::default()
    });
    table.credentials_file = table.credentials_file.or(carried.credentials_file);
    table.endpoint = table.endpoint.or(carried.endpoint);
    let gce =
        gce::build(d, Some(table), Some(carried.gce), runner_path, runner_line).map(|mut g| {
            g.docker_machine_tag = false;
            let group = carried.mapping.instance_group.clone();
            g.labels
                .insert(autoscaler::INSTANCE_GROUP_LABEL.to_string(), group);
            g
        });
    (machine, gce, carried.mapping, carried.max_instances)
}

/// Why a runner's `executor` is not one Flotilla runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Unsupported {
    /// One of GitLab Runner's executors: the runner is skipped, the file still loads.
    NotRunByFlotilla,
    /// No GitLab Runner executor has this name: an error.
    Unknown,
}

/// Sorts an `executor` value: the executors Flotilla runs, GitLab Runner 19.x's others (its
/// `main.go` provider registry), or an unknown name. The one place to add an executor.
pub(super) fn executor_kind(name: &str) -> Result<ExecutorKind, Unsupported> {
    match name {
        "docker" => Ok(ExecutorKind::Docker),
        DOCKER_MACHINE | DOCKER_AUTOSCALER => Ok(ExecutorKind::DockerMachine),
        "shell" | "custom" | "instance" | "docker-windows" | "kubernetes" | "ssh" | "parallels"
        | "virtualbox" => Err(Unsupported::NotRunByFlotilla),
        _ => Err(Unsupported::Unknown),
    }
}

fn executor(
    d: &mut Diagnostics,
    f: Option<Field<String>>,
    line: usize,
    path: &str,
) -> ExecutorKind {
    const SUPPORTED: &str = "supported executors: docker+machine, docker-autoscaler, docker";
    let Some(f) = f else {
        d.error(line, path, format!("required: {SUPPORTED}"));
        return ExecutorKind::Docker;
    };
    executor_kind(&f.value).unwrap_or_else(|_| {
        let message = format!("executor {:?} is not supported; {SUPPORTED}", f.value);
        d.error(f.line, path, message);
        ExecutorKind::Docker
    })
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

#[cfg(test)]
mod tests {
    use super::short_token;
    use crate::testing::{expected_short_token, fake_runner_token, random_alnum};

    #[test]
    fn short_tokens_match_gitlab_runner() {
        let token = fake_runner_token();
        assert_eq!(short_token(&token), expected_short_token(&token));
        let tail = random_alnum(16);
        assert_eq!(short_token(&format!("glrt-{tail}")), tail[..9]);
        let tail = random_alnum(12);
        assert_eq!(short_token(&format!("GR1348941{tail}")), tail[..9]);
        assert_eq!(short_token("xyz"), "xyz");
    }

    #[test]
    fn short_token_never_cuts_inside_a_character() {
        assert_eq!(short_token("GRéééééééé"), "GRééééééé");
        assert_eq!(short_token("glrt-GR13489éabc"), "GR13489éa");
    }
}
