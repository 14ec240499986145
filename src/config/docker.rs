//! `[runners.docker]`: how a runner's job containers are made. Owns the section whole: its
//! validated type ([`DockerConfig`], [`PullPolicy`]), its raw struct, its reading from the TOML
//! table (keys checked against `known_keys`, each value with its line) and its building with
//! GitLab Runner's defaults. Knows nothing of how the containers are run (`crate::executor`).

use std::time::Duration;

use toml_edit::Item;

use super::diag::Diagnostics;
use super::error::WarningKind;
use super::known_keys;
use super::subnet::{self, SubnetPool};
use super::toml_read::{check_keys, get, integer, string, string_list, strings, Field, Scope};
use super::units;

/// `pull_policy` entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPolicy {
    /// Pull every time.
    Always,
    /// Pull when the image is not present.
    IfNotPresent,
    /// Never pull; a missing image fails the job.
    Never,
}

impl PullPolicy {
    /// The spelling in config and in job payloads.
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "always",
            PullPolicy::IfNotPresent => "if-not-present",
            PullPolicy::Never => "never",
        }
    }

    /// Parses the config/payload spelling.
    pub fn parse(s: &str) -> Option<PullPolicy> {
        match s {
            "always" => Some(PullPolicy::Always),
            "if-not-present" => Some(PullPolicy::IfNotPresent),
            "never" => Some(PullPolicy::Never),
            _ => None,
        }
    }
}

/// `[runners.docker]`.
#[derive(Debug, Clone, PartialEq)]
pub struct DockerConfig {
    /// `host`: the Docker endpoint (`unix://…`, `tcp://…`); local defaults when unset.
    pub host: Option<String>,
    /// `image`: the default job image.
    pub image: String,
    /// `privileged`.
    pub privileged: bool,
    /// `pull_policy` (default `["always"]`, as GitLab Runner).
    pub pull_policy: Vec<PullPolicy>,
    /// `volumes`: `host:container[:mode]` binds or `container` paths for anonymous volumes.
    pub volumes: Vec<String>,
    /// `network_mode` (`host`, `bridge`, a network name); when unset, the engine's default
    /// bridge, or a per-job network when the job sets `FF_NETWORK_PER_BUILD`.
    pub network_mode: Option<String>,
    /// `network_per_build_pool` and `network_per_build_prefix` (Flotilla's own): where the
    /// per-job networks' subnets come from.
    pub network_per_build: SubnetPool,
    /// `cpus` as nano-CPUs (e.g. "1.5" → 1_500_000_000).
    pub nano_cpus: Option<i64>,
    /// `memory` in bytes (e.g. "512m").
    pub memory_bytes: Option<i64>,
    /// `helper_image`.
    pub helper_image: Option<String>,
    /// `helper_image_archive` (Flotilla's own): a `docker save` tarball of the helper image on
    /// the manager's host, loaded over the Docker API onto an engine that lacks the image.
    pub helper_image_archive: Option<std::path::PathBuf>,
    /// `wait_for_services_timeout`: how long to wait for each service's ports (30 s; 0 in the
    /// file means the default, a negative value turns the wait off → `None`).
    pub wait_for_services_timeout: Option<Duration>,
    /// `services_privileged`: run service containers privileged (`privileged` when unset).
    pub services_privileged: Option<bool>,
    /// `allowed_services`: glob patterns (`*`, `**`) a job's service images must match; empty
    /// allows every image.
    pub allowed_services: Vec<String>,
    /// `services_limit`: most services per job; `None` (the default, or -1) = no limit.
    pub services_limit: Option<u32>,
    /// `allowed_images`: glob patterns (`*`, `**`) the job's image must match; empty allows
    /// every image.
    pub allowed_images: Vec<String>,
    /// `allowed_pull_policies`: the pull policies a job may use; empty allows every one.
    pub allowed_pull_policies: Vec<PullPolicy>,
}

impl Default for DockerConfig {
    fn default() -> Self {
        DockerConfig {
            host: None,
            image: String::new(),
            privileged: false,
            pull_policy: vec![PullPolicy::Always],
            volumes: Vec::new(),
            network_mode: None,
            network_per_build: SubnetPool::default(),
            nano_cpus: None,
            memory_bytes: None,
            helper_image: None,
            helper_image_archive: None,
            wait_for_services_timeout: Some(DEFAULT_WAIT_FOR_SERVICES),
            services_privileged: None,
            allowed_services: Vec::new(),
            services_limit: None,
            allowed_images: Vec::new(),
            allowed_pull_policies: Vec::new(),
        }
    }
}

/// GitLab Runner's default `wait_for_services_timeout`.
pub const DEFAULT_WAIT_FOR_SERVICES: Duration = Duration::from_secs(30);

/// `[runners.docker]` as written (all keys absent when the table is; no `Debug`, as every raw
/// struct).
#[derive(Default)]
pub(super) struct RawDocker {
    pub host: Option<Field<String>>,
    pub image: Option<Field<String>>,
    pub privileged: Option<Field<bool>>,
    /// A string or an array of strings in the file.
    pub pull_policy: Option<Field<Vec<String>>>,
    pub volumes: Option<Field<Vec<String>>>,
    pub network_mode: Option<Field<String>>,
    pub network_per_build_pool: Option<Field<String>>,
    pub network_per_build_prefix: Option<Field<i64>>,
    pub cpus: Option<Field<String>>,
    pub memory: Option<Field<String>>,
    pub helper_image: Option<Field<String>>,
    pub helper_image_archive: Option<Field<String>>,
    pub wait_for_services_timeout: Option<Field<i64>>,
    pub services_privileged: Option<Field<bool>>,
    pub allowed_services: Option<Field<Vec<String>>>,
    pub services_limit: Option<Field<i64>>,
    pub allowed_images: Option<Field<Vec<String>>>,
    pub allowed_pull_policies: Option<Field<Vec<String>>>,
    pub tls_verify: Option<Field<bool>>,
    pub tls_cert_path: Option<Field<String>>,
}

/// Reads `[runners.docker]`.
pub(super) fn read(d: &mut Diagnostics, s: &Scope<'_>) -> RawDocker {
    check_keys(d, s, &known_keys::DOCKER);
    RawDocker {
        host: string(d, s, "host"),
        image: string(d, s, "image"),
        privileged: get(d, s, "privileged", "a boolean", Item::as_bool),
        pull_policy: get(
            d,
            s,
            "pull_policy",
            "a string or an array of strings",
            |item| match item.as_str() {
                Some(one) => Some(vec![one.to_string()]),
                None => strings(item),
            },
        ),
        volumes: string_list(d, s, "volumes"),
        network_mode: string(d, s, "network_mode"),
        network_per_build_pool: string(d, s, "network_per_build_pool"),
        network_per_build_prefix: integer(d, s, "network_per_build_prefix"),
        cpus: string(d, s, "cpus"),
        memory: string(d, s, "memory"),
        helper_image: string(d, s, "helper_image"),
        helper_image_archive: string(d, s, "helper_image_archive"),
        wait_for_services_timeout: integer(d, s, "wait_for_services_timeout"),
        services_privileged: get(d, s, "services_privileged", "a boolean", Item::as_bool),
        allowed_services: string_list(d, s, "allowed_services"),
        services_limit: integer(d, s, "services_limit"),
        allowed_images: string_list(d, s, "allowed_images"),
        allowed_pull_policies: string_list(d, s, "allowed_pull_policies"),
        tls_verify: get(d, s, "tls_verify", "a boolean", Item::as_bool),
        tls_cert_path: string(d, s, "tls_cert_path"),
    }
}

/// Builds `[runners.docker]` (`path` is its key path); problems go to `d`.
pub(super) fn build(d: &mut Diagnostics, raw: RawDocker, path: &str) -> DockerConfig {
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
        network_per_build: subnet_pool(
            d,
            raw.network_per_build_pool,
            raw.network_per_build_prefix,
            &p("network_per_build_pool"),
        ),
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
/// refused since they would not be honoured, except `tls_verify = true` with docker+machine
/// (`on_vm`), whose VMs Flotilla always reaches over its own mutual TLS. `tls_verify = false` is
/// what `gitlab-runner register` writes: accepted silently.
pub(super) fn check_transport(d: &mut Diagnostics, raw: &RawDocker, on_vm: bool, path: &str) {
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
        if !on_vm {
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

/// `network_per_build_pool` (an IPv4 range) cut into `/network_per_build_prefix` subnets; the
/// defaults when unset; an error naming the key when they do not make a pool.
fn subnet_pool(
    d: &mut Diagnostics,
    pool: Option<Field<String>>,
    prefix: Option<Field<i64>>,
    key: &str,
) -> SubnetPool {
    let line = pool
        .as_ref()
        .map(|f| f.line)
        .or(prefix.as_ref().map(|f| f.line));
    let cidr = non_empty(pool).map_or_else(|| subnet::DEFAULT_POOL.to_string(), |f| f.value);
    let len = match prefix.map(|f| f.value) {
        None => subnet::DEFAULT_PREFIX,
        Some(v) => u8::try_from(v).unwrap_or(u8::MAX),
    };
    SubnetPool::parse(&cidr, len).unwrap_or_else(|e| {
        d.error(line.unwrap_or_default(), key, e);
        SubnetPool::default()
    })
}
