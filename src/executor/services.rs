//! The job's `services`: containers started before the build container (GitLab Runner starts
//! them in `prepare_executor`), reachable from the job by their aliases, waited for, and removed
//! with the rest of the job's objects (they carry the job's `com.flotilla.*` labels).
//!
//! As GitLab Runner's `executors/docker/services.go`: every service gets the hostnames derived
//! from its image name (`tutum/wordpress:latest` → `tutum__wordpress` and `tutum-wordpress`) plus
//! its `alias` list; its environment is the job's public variables plus its own `variables`
//! (passed as container `Env`, as GitLab Runner does: the engine needs them to start the service;
//! masked project variables are not public and never reach it); `entrypoint` and `command`
//! replace the image's. How aliases resolve depends on the network (DESIGN.md, Test kit):
//! - a user-defined network (the per-job one by default, or a named one): DNS aliases on it;
//! - `host`: every container shares the host's network, so aliases become `alias:127.0.0.1`
//!   entries in the build container's `/etc/hosts`;
//! - `bridge` and other built-in modes: `alias:<service address>` entries in `/etc/hosts`.
//!
//! Waiting (`wait_for_services_timeout`) runs `flotilla helper wait-for-ports` in a short-lived
//! container from the helper image on the same network; a service whose ports do not open in
//! time gets GitLab Runner's warning with its logs in the trace, and the job goes on.

use super::auth::RegistryAuths;
use super::container::BUILDS_DIR;
use super::error::ExecError;
use super::pull;
use super::section::RunnerLog;
use crate::config::{DockerConfig, PullPolicy};
use crate::job::{Image, JobVariable, Variables};
use bollard::container::LogOutput;
use bollard::models::{
    ContainerCreateBody, EndpointSettings, HostConfig, HostConfigLogConfig, Mount, MountType,
    NetworkingConfig, RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
    StartContainerOptions, WaitContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::StreamExt;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// Label naming what a container is for (`service`, `wait`); the job's labels come with it.
pub const LABEL_TYPE: &str = "com.flotilla.type";
/// Label with the service's image name (service containers only).
pub const LABEL_SERVICE: &str = "com.flotilla.service";

/// How much of a container's log goes into the trace (GitLab Runner's `ServiceLogOutputLimit`).
const LOG_LIMIT: usize = 64 * 1024;
/// At most this many exposed ports are waited for per service (as GitLab Runner).
const MAX_PORTS: usize = 20;

/// How the job's containers are networked (`[runners.docker] network_mode`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Networking {
    /// A user-defined network (the per-job one, or one named by `network_mode`): aliases are
    /// DNS names on it.
    UserDefined(String),
    /// `host`: every container shares the host's network; aliases resolve to 127.0.0.1.
    Host,
    /// `bridge`, `default`, `none`, `container:…`: no DNS aliases.
    BuiltIn(String),
}

impl Networking {
    /// The networking `network_mode` names.
    pub(super) fn from_mode(mode: &str) -> Self {
        match mode {
            "host" => Networking::Host,
            "bridge" | "default" | "none" => Networking::BuiltIn(mode.to_string()),
            m if m.starts_with("container:") => Networking::BuiltIn(mode.to_string()),
            m => Networking::UserDefined(m.to_string()),
        }
    }

    /// The `HostConfig.NetworkMode` value.
    pub(super) fn mode(&self) -> String {
        match self {
            Networking::UserDefined(name) | Networking::BuiltIn(name) => name.clone(),
            Networking::Host => "host".into(),
        }
    }

    /// The create request's network endpoint with `aliases` (user-defined networks only).
    pub(super) fn endpoint(&self, aliases: &[String]) -> Option<NetworkingConfig> {
        match self {
            Networking::UserDefined(name) if !aliases.is_empty() => Some(NetworkingConfig {
                endpoints_config: Some(HashMap::from([(
                    name.clone(),
                    EndpointSettings {
                        aliases: Some(aliases.to_vec()),
                        ..Default::default()
                    },
                )])),
            }),
            _ => None,
        }
    }
}

/// A service image name taken apart as GitLab Runner's `services.SplitNameAndVersion` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ServiceName {
    /// Registry (without port) and path: `domain.tld/namespace/service`; empty when invalid.
    pub service: String,
    /// The tag, `@sha256:…` for a digest-only reference, or `latest`.
    pub version: String,
    /// The reference to pull (`:latest` added when it has neither tag nor digest).
    pub image: String,
    /// The hostnames derived from `service`: `/` → `__`, and `/` → `-` when different.
    pub aliases: Vec<String>,
}

/// Takes a service image reference apart; an invalid reference gives an empty `service`.
pub(super) fn split_name_and_version(reference: &str) -> ServiceName {
    static PATTERN: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let pattern = PATTERN.get_or_init(|| {
        let domain_part = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])";
        let domain = format!(r"{domain_part}(?:\.{domain_part})*(?::[0-9]+)?");
        let path = r"[a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*";
        let name = format!(r"(?:{domain}/)?{path}(?:/{path})*");
        let tag = r"[\w][\w.-]{0,127}";
        let digest = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}";
        regex::Regex::new(&format!(r"^({name})(?::({tag}))?(?:@({digest}))?$"))
            .expect("the reference pattern is valid")
    });
    let Some(found) = pattern.captures(reference) else {
        return ServiceName {
            service: String::new(),
            version: "latest".into(),
            image: reference.to_string(),
            aliases: Vec::new(),
        };
    };
    let name = found.get(1).map_or("", |m| m.as_str());
    let service = without_port(name);
    let (image, version) = match (found.get(2), found.get(3)) {
        (Some(tag), _) => (reference.to_string(), tag.as_str().to_string()),
        (None, Some(digest)) => (reference.to_string(), format!("@{}", digest.as_str())),
        (None, None) => (format!("{name}:latest"), "latest".to_string()),
    };
    let alias = service.replace('/', "__");
    let alternative = service.replace('/', "-");
    let mut aliases = vec![alias.clone()];
    if alternative != alias {
        aliases.push(alternative);
    }
    ServiceName {
        service,
        version,
        image,
        aliases,
    }
}

/// `domain.tld:8080/ns/app` → `domain.tld/ns/app` (only the registry part can hold a port).
fn without_port(name: &str) -> String {
    let (first, rest) = match name.split_once('/') {
        Some((first, rest)) => (first, Some(rest)),
        None => (name, None),
    };
    let host = match first.split_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => first,
    };
    match rest {
        Some(rest) => format!("{host}/{rest}"),
        None => host.to_string(),
    }
}

/// The environment of a service container: the job's public variables, then the service's own
/// (a later key wins), each expanded with the others (GitLab Runner's `getServiceVariables`).
pub(super) fn service_env(job_vars: &Variables, definition: &Image) -> Vec<String> {
    let mut list: Vec<JobVariable> = job_vars.iter().filter(|v| v.public).cloned().collect();
    list.extend(definition.variables.iter().cloned());
    let combined = Variables::new(list);
    combined
        .effective()
        .into_iter()
        .map(|v| {
            let value = if v.raw {
                v.value.clone()
            } else {
                combined.expand(&v.value)
            };
            format!("{}={value}", v.key)
        })
        .collect()
}

/// A started service container.
#[derive(Debug, Clone)]
pub(super) struct StartedService {
    /// The container's id.
    pub id: String,
    /// The container's name (`<job base>-<service slug>-<index>`).
    pub name: String,
    /// The hostnames the job reaches it by.
    pub aliases: Vec<String>,
    /// The address other containers reach it at: its name on a user-defined network,
    /// 127.0.0.1 in host mode, its IP address otherwise.
    pub address: String,
}

impl StartedService {
    /// `/etc/hosts` entries for the build container (`alias:address`); none on user-defined
    /// networks, where aliases are DNS names.
    pub(super) fn extra_hosts(&self, networking: &Networking) -> Vec<String> {
        match networking {
            Networking::UserDefined(_) => Vec::new(),
            _ => self
                .aliases
                .iter()
                .map(|alias| format!("{alias}:{}", self.address))
                .collect(),
        }
    }
}

/// What starting the job's services needs, borrowed from the job's run.
pub(super) struct Services<'a> {
    pub docker: &'a Docker,
    pub settings: &'a DockerConfig,
    pub log: &'a RunnerLog,
    pub variables: &'a Variables,
    pub auths: &'a RegistryAuths,
    pub labels: &'a HashMap<String, String>,
    /// The prefix of the job's container names.
    pub name_prefix: &'a str,
    pub builds_volume: &'a str,
    pub networking: &'a Networking,
}

impl Services<'_> {
    /// Pulls and starts every service in `definitions`, in order. A service whose hostnames are
    /// all taken by earlier ones is skipped with a warning, as in GitLab Runner. An image that
    /// cannot be pulled or a container that cannot start fails the job.
    pub(super) async fn start_all(
        &self,
        definitions: &[Image],
    ) -> Result<Vec<StartedService>, ExecError> {
        if let Some(limit) = self.settings.services_limit {
            if definitions.len() > limit as usize {
                return Err(ExecError::Configuration(format!(
                    "too many services requested: {}, only {limit} allowed",
                    definitions.len()
                )));
            }
        }
        let mut taken: HashSet<String> = HashSet::new();
        let mut started = Vec::new();
        for (index, definition) in definitions.iter().enumerate() {
            let reference = self.variables.expand(&definition.name).trim().to_string();
            self.check_allowed(&reference)?;
            let parsed = split_name_and_version(&reference);
            if parsed.service.is_empty() {
                return Err(ExecError::Configuration(format!(
                    "invalid service image name: {reference:?}"
                )));
            }
            let mut wanted = parsed.aliases.clone();
            let own = Image {
                alias: self.variables.expand(&definition.alias),
                ..Image::default()
            };
            wanted.extend(own.aliases());
            let mut aliases = Vec::new();
            for alias in wanted {
                if taken.contains(&alias) {
                    self.log.warning(&format!(
                        "Service {reference} is already created. Ignoring."
                    ));
                } else if !aliases.contains(&alias) {
                    aliases.push(alias);
                }
            }
            if aliases.is_empty() {
                continue;
            }
            taken.extend(aliases.iter().cloned());
            let service = self.start_one(index, &parsed, definition, aliases).await?;
            started.push(service);
        }
        Ok(started)
    }

    /// Refuses a service image `allowed_services` does not match (GitLab Runner's
    /// `VerifyAllowedImage`: doublestar globs, an empty list allows all), listing the patterns.
    fn check_allowed(&self, image: &str) -> Result<(), ExecError> {
        let allowed = &self.settings.allowed_services;
        if allowed.is_empty() || allowed.iter().any(|p| glob_matches(p, image)) {
            return Ok(());
        }
        self.log.line("");
        self.log.error(&format!(
            "The {image:?} image is not present on list of allowed services:"
        ));
        for pattern in allowed {
            self.log.line(&format!("- {pattern}"));
        }
        self.log.line("");
        self.log.line(
            "Please check runner's allowed_services configuration: \
             https://docs.gitlab.com/runner/configuration/advanced-configuration.html",
        );
        Err(ExecError::Configuration(format!(
            "disallowed service image {image:?}"
        )))
    }

    async fn start_one(
        &self,
        index: usize,
        parsed: &ServiceName,
        definition: &Image,
        aliases: Vec<String>,
    ) -> Result<StartedService, ExecError> {
        let display = if parsed.version.starts_with('@') {
            format!("{}{}", parsed.service, parsed.version)
        } else {
            format!("{}:{}", parsed.service, parsed.version)
        };
        self.log.line(&format!("Starting service {display} ..."));
        let policies = pull::image_pull_policies(Some(definition), self.settings)?;
        let platform = definition.docker_platform();
        pull::ensure_image(
            self.docker,
            self.log,
            &parsed.image,
            &policies,
            platform.as_deref(),
            self.auths,
        )
        .await?;

        let name = format!(
            "{}-{}-{index}",
            self.name_prefix,
            parsed.service.replace('/', "__")
        );
        let mut labels = self.labels.clone();
        labels.insert(LABEL_TYPE.into(), "service".into());
        labels.insert(LABEL_SERVICE.into(), parsed.service.clone());
        let non_empty = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
        let body = ContainerCreateBody {
            image: Some(parsed.image.clone()),
            env: Some(service_env(self.variables, definition)),
            cmd: non_empty(&definition.command),
            entrypoint: non_empty(&definition.entrypoint),
            user: definition.docker_user(),
            labels: Some(labels),
            host_config: Some(HostConfig {
                privileged: Some(
                    self.settings
                        .services_privileged
                        .unwrap_or(self.settings.privileged),
                ),
                network_mode: Some(self.networking.mode()),
                restart_policy: Some(RestartPolicy {
                    name: Some(RestartPolicyNameEnum::NO),
                    maximum_retry_count: None,
                }),
                // Logs are kept so a service that does not come up can show them.
                log_config: Some(HostConfigLogConfig {
                    typ: Some("json-file".into()),
                    config: None,
                }),
                mounts: Some(vec![Mount {
                    target: Some(BUILDS_DIR.into()),
                    source: Some(self.builds_volume.into()),
                    typ: Some(MountType::VOLUME),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            networking_config: self.networking.endpoint(&aliases),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::new().name(&name).build();
        let created = self
            .docker
            .create_container(Some(options), body)
            .await
            .map_err(|e| ExecError::docker(format!("creating service container {name}"), e))?;
        self.docker
            .start_container(&created.id, None::<StartContainerOptions>)
            .await
            .map_err(|e| ExecError::docker(format!("starting service container {name}"), e))?;
        let address = match self.networking {
            Networking::UserDefined(_) => name.clone(),
            Networking::Host => "127.0.0.1".into(),
            Networking::BuiltIn(_) => self.container_ip(&created.id).await?,
        };
        Ok(StartedService {
            id: created.id,
            name,
            aliases,
            address,
        })
    }

    /// The IP address of a container on a built-in network (`bridge`).
    async fn container_ip(&self, id: &str) -> Result<String, ExecError> {
        let found = self
            .docker
            .inspect_container(id, None)
            .await
            .map_err(|e| ExecError::docker("inspecting a service container", e))?;
        let ip = found
            .network_settings
            .and_then(|n| n.networks)
            .and_then(|n| n.into_values().find_map(|e| e.ip_address))
            .filter(|ip| !ip.is_empty());
        Ok(ip.unwrap_or_else(|| "127.0.0.1".into()))
    }

    /// Waits for every service's ports at once, each up to `timeout`; a service that does not
    /// come up gets GitLab Runner's warning and its logs in the trace. Never fails the job.
    pub(super) async fn wait_all(
        &self,
        started: &[StartedService],
        timeout: Duration,
        helper_image: &str,
    ) {
        if started.is_empty() {
            return;
        }
        self.log.line(&format!(
            "Waiting for services to be up and running (timeout {} seconds)...",
            timeout.as_secs()
        ));
        let waits = started
            .iter()
            .map(|service| self.wait_one(service, timeout, helper_image));
        futures_util::future::join_all(waits).await;
    }

    async fn wait_one(&self, service: &StartedService, timeout: Duration, helper_image: &str) {
        let Err(failure) = self.health_check(service, timeout, helper_image).await else {
            return;
        };
        let mut text = format!(
            "\n\x1b[0;33m*** WARNING:\x1b[0;m Service {} probably didn't start properly.\n\n\
             Health check error:\n{}\n",
            service.name,
            failure.error.trim()
        );
        if let Some(logs) = failure.logs {
            text.push_str(&format!("\nHealth check container logs:\n{logs}\n"));
        }
        let logs = read_logs(self.docker, &service.id).await;
        text.push_str(&format!("\nService container logs:\n{logs}\n"));
        text.push_str("\n\x1b[0;33m*********\x1b[0;m\n");
        for line in text.lines() {
            self.log.line(line);
        }
    }

    /// Runs the wait container for `service`; why it failed (and its logs) otherwise.
    async fn health_check(
        &self,
        service: &StartedService,
        timeout: Duration,
        helper_image: &str,
    ) -> Result<(), HealthCheckFailure> {
        let plain = |error: String| HealthCheckFailure { error, logs: None };
        let ports = self.exposed_ports(&service.id).await.map_err(plain)?;
        if ports.is_empty() {
            return Err(plain(format!(
                "service {:?} has no exposed ports",
                service.name
            )));
        }
        // As the helper container: the helper image is pulled only when missing.
        pull::ensure_image(
            self.docker,
            self.log,
            helper_image,
            &[PullPolicy::IfNotPresent],
            None,
            self.auths,
        )
        .await
        .map_err(|e| plain(e.to_string()))?;
        let name = format!("{}-wait-for-service", service.name);
        let mut cmd = vec![
            "flotilla".to_string(),
            "helper".into(),
            "wait-for-ports".into(),
            "--host".into(),
            service.address.clone(),
        ];
        for port in &ports {
            cmd.push("--port".into());
            cmd.push(port.to_string());
        }
        let mut labels = self.labels.clone();
        labels.insert(LABEL_TYPE.into(), "wait".into());
        let body = ContainerCreateBody {
            image: Some(helper_image.to_string()),
            cmd: Some(cmd),
            labels: Some(labels),
            host_config: Some(HostConfig {
                network_mode: Some(self.networking.mode()),
                log_config: Some(HostConfigLogConfig {
                    typ: Some("json-file".into()),
                    config: None,
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::new().name(&name).build();
        let created = self
            .docker
            .create_container(Some(options), body)
            .await
            .map_err(|e| plain(format!("create service container: {e}")))?;
        let result = self.run_wait_container(&created.id, &name, timeout).await;
        let result = match result {
            Ok(()) => Ok(()),
            Err(error) => Err(HealthCheckFailure {
                error,
                logs: Some(read_logs(self.docker, &created.id).await),
            }),
        };
        let force = RemoveContainerOptionsBuilder::new().force(true).build();
        // The job's cleanup removes it too (it carries the job's labels) should this fail.
        let _ = self.docker.remove_container(&created.id, Some(force)).await;
        result
    }

    /// Starts the wait container and waits for its exit, at most `timeout`.
    async fn run_wait_container(
        &self,
        id: &str,
        name: &str,
        timeout: Duration,
    ) -> Result<(), String> {
        self.docker
            .start_container(id, None::<StartContainerOptions>)
            .await
            .map_err(|e| format!("start service container: {e}"))?;
        let options = WaitContainerOptionsBuilder::new()
            .condition("not-running")
            .build();
        let mut wait = self.docker.wait_container(id, Some(options));
        match tokio::time::timeout(timeout, wait.next()).await {
            Err(_) => Err(format!("service {name:?} timeout")),
            Ok(Some(Ok(done))) if done.status_code == 0 => Ok(()),
            Ok(Some(Ok(done))) => Err(format!(
                "service {name:?} health check: exit code {}",
                done.status_code
            )),
            Ok(Some(Err(bollard::errors::Error::DockerContainerWaitError { code, error }))) => Err(
                format!("service {name:?} health check: exit code {code} {error}"),
            ),
            Ok(Some(Err(e))) => Err(format!("service {name:?} health check: {e}")),
            Ok(None) => Err(format!(
                "service {name:?} health check: the engine ended the wait without an exit code"
            )),
        }
    }

    /// The TCP ports to wait for: `HEALTHCHECK_TCP_PORT` from the container's environment if
    /// set, else its exposed TCP ports (at most 20, sorted), as GitLab Runner.
    async fn exposed_ports(&self, id: &str) -> Result<Vec<u16>, String> {
        let found = self
            .docker
            .inspect_container(id, None)
            .await
            .map_err(|e| format!("inspecting the service container: {e}"))?;
        let config = found.config.unwrap_or_default();
        ports_to_wait_for(
            &config.env.unwrap_or_default(),
            &config.exposed_ports.unwrap_or_default(),
        )
    }
}

/// Whether `image` matches the doublestar glob `pattern` (`*` stays within a path segment,
/// `**` crosses them). A pattern that does not compile matches nothing (config validation
/// reports it).
fn glob_matches(pattern: &str, image: &str) -> bool {
    globset::GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .map(|g| g.compile_matcher().is_match(image))
        .unwrap_or(false)
}

/// Why a health check failed, with the wait container's logs when it ran.
struct HealthCheckFailure {
    error: String,
    logs: Option<String>,
}

/// The ports to wait for from a container's `Env` and `ExposedPorts` keys (`8080/tcp`, or a
/// range `8000-8002/tcp`).
pub(super) fn ports_to_wait_for(env: &[String], exposed: &[String]) -> Result<Vec<u16>, String> {
    for entry in env {
        if let Some((key, value)) = entry.split_once('=') {
            if key.eq_ignore_ascii_case("HEALTHCHECK_TCP_PORT") {
                return value
                    .trim()
                    .parse::<u16>()
                    .map(|p| vec![p])
                    .map_err(|_| format!("invalid health check tcp port: {value}"));
            }
        }
    }
    let mut ports = Vec::new();
    for key in exposed {
        let (range, proto) = key.split_once('/').unwrap_or((key, "tcp"));
        if proto != "tcp" {
            continue;
        }
        let (start, end) = range.split_once('-').unwrap_or((range, range));
        let (Ok(start), Ok(end)) = (start.parse::<u16>(), end.parse::<u16>()) else {
            continue;
        };
        for port in start..=end {
            if ports.len() >= MAX_PORTS {
                break;
            }
            ports.push(port);
        }
    }
    ports.sort_unstable();
    Ok(ports)
}

/// Up to 64 KiB of a container's stdout and stderr, with timestamps; the error text if the
/// engine cannot give them.
async fn read_logs(docker: &Docker, id: &str) -> String {
    let options = LogsOptionsBuilder::new()
        .stdout(true)
        .stderr(true)
        .timestamps(true)
        .build();
    let mut stream = docker.logs(id, Some(options));
    let mut out: Vec<u8> = Vec::new();
    while let Some(item) = stream.next().await {
        match item {
            Ok(LogOutput::StdOut { message } | LogOutput::StdErr { message })
            | Ok(LogOutput::Console { message }) => {
                let room = LOG_LIMIT.saturating_sub(out.len());
                out.extend_from_slice(&message[..message.len().min(room)]);
                if out.len() >= LOG_LIMIT {
                    break;
                }
            }
            Ok(LogOutput::StdIn { .. }) => {}
            Err(e) => {
                if out.is_empty() {
                    return e.to_string();
                }
                break;
            }
        }
    }
    String::from_utf8_lossy(&out).trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_split_and_aliases_derive_as_gitlab_runner() {
        let digest = "sha256:123456789012345678901234567890123456789012345678901234567890abcd";
        let cases: Vec<(String, &str, String, String, Vec<&str>)> = vec![
            (
                "service".into(),
                "service",
                "latest".into(),
                "service:latest".into(),
                vec!["service"],
            ),
            (
                "service:version".into(),
                "service",
                "version".into(),
                "service:version".into(),
                vec!["service"],
            ),
            (
                "tutum/wordpress:latest".into(),
                "tutum/wordpress",
                "latest".into(),
                "tutum/wordpress:latest".into(),
                vec!["tutum__wordpress", "tutum-wordpress"],
            ),
            (
                "namespace/service".into(),
                "namespace/service",
                "latest".into(),
                "namespace/service:latest".into(),
                vec!["namespace__service", "namespace-service"],
            ),
            (
                "domain.tld:8080/namespace/service:version".into(),
                "domain.tld/namespace/service",
                "version".into(),
                "domain.tld:8080/namespace/service:version".into(),
                vec![
                    "domain.tld__namespace__service",
                    "domain.tld-namespace-service",
                ],
            ),
            (
                "subdomain.domain.tld:8080/service".into(),
                "subdomain.domain.tld/service",
                "latest".into(),
                "subdomain.domain.tld:8080/service:latest".into(),
                vec![
                    "subdomain.domain.tld__service",
                    "subdomain.domain.tld-service",
                ],
            ),
            (
                format!("namespace/service@{digest}"),
                "namespace/service",
                format!("@{digest}"),
                format!("namespace/service@{digest}"),
                vec!["namespace__service", "namespace-service"],
            ),
            (
                format!("domain.tld:8080/service:1.2@{digest}"),
                "domain.tld/service",
                "1.2".into(),
                format!("domain.tld:8080/service:1.2@{digest}"),
                vec!["domain.tld__service", "domain.tld-service"],
            ),
        ];
        for (reference, service, version, image, aliases) in cases {
            let parsed = split_name_and_version(&reference);
            assert_eq!(parsed.service, service, "{reference}");
            assert_eq!(parsed.version, version, "{reference}");
            assert_eq!(parsed.image, image, "{reference}");
            assert_eq!(parsed.aliases, aliases, "{reference}");
        }
        let invalid = split_name_and_version("Not A Valid/Ref");
        assert!(invalid.service.is_empty());
        assert!(invalid.aliases.is_empty());
    }

    #[test]
    fn service_env_has_public_job_variables_then_its_own_expanded() {
        let job = Variables::new(vec![
            JobVariable::plain("CI_JOB_ID", "7"),
            JobVariable::plain("SHARED", "from-job"),
            JobVariable {
                key: "SECRET".into(),
                value: "hidden".into(),
                public: false,
                masked: true,
                ..JobVariable::default()
            },
        ]);
        let definition = Image {
            variables: vec![
                JobVariable {
                    key: "SHARED".into(),
                    value: "svc-$CI_JOB_ID".into(),
                    ..JobVariable::default()
                },
                JobVariable {
                    key: "RAW".into(),
                    value: "$CI_JOB_ID".into(),
                    raw: true,
                    ..JobVariable::default()
                },
            ],
            ..Image::default()
        };
        let env = service_env(&job, &definition);
        assert_eq!(env, vec!["CI_JOB_ID=7", "SHARED=svc-7", "RAW=$CI_JOB_ID"]);
        assert!(!env.iter().any(|e| e.contains("hidden")));
    }

    #[test]
    fn ports_come_from_the_healthcheck_variable_or_the_exposed_tcp_ports() {
        let exposed = vec!["9000/tcp".to_string(), "53/udp".into(), "80/tcp".into()];
        assert_eq!(ports_to_wait_for(&[], &exposed).unwrap(), vec![80, 9000]);
        let env = vec!["A=1".to_string(), "healthcheck_tcp_port=6379".into()];
        assert_eq!(ports_to_wait_for(&env, &exposed).unwrap(), vec![6379]);
        assert!(ports_to_wait_for(&["HEALTHCHECK_TCP_PORT=x".into()], &[]).is_err());
        let range = vec!["8000-8100/tcp".to_string()];
        assert_eq!(ports_to_wait_for(&[], &range).unwrap().len(), MAX_PORTS);
        assert!(ports_to_wait_for(&[], &[]).unwrap().is_empty());
    }

    #[test]
    fn allowed_service_patterns_are_doublestar_globs() {
        assert!(glob_matches("postgres:*", "postgres:16"));
        assert!(glob_matches(
            "registry.example.com/**",
            "registry.example.com/a/b:1"
        ));
        assert!(!glob_matches(
            "registry.example.com/*",
            "registry.example.com/a/b:1"
        ));
        assert!(glob_matches("*/redis:*", "library/redis:7"));
        assert!(!glob_matches("redis:*", "evil.io/redis:7"));
        assert!(!glob_matches("[", "anything"));
    }

    #[test]
    fn networking_modes_decide_how_aliases_resolve() {
        let service = StartedService {
            id: "id".into(),
            name: "svc".into(),
            aliases: vec!["redis".into(), "cache".into()],
            address: "127.0.0.1".into(),
        };
        let host = Networking::from_mode("host");
        assert_eq!(host, Networking::Host);
        assert_eq!(
            service.extra_hosts(&host),
            vec!["redis:127.0.0.1", "cache:127.0.0.1"]
        );
        assert!(host.endpoint(&service.aliases).is_none());
        let own = Networking::from_mode("flotilla-job-network");
        assert!(service.extra_hosts(&own).is_empty());
        let endpoint = own.endpoint(&service.aliases).unwrap();
        let settings = &endpoint.endpoints_config.unwrap()["flotilla-job-network"];
        assert_eq!(settings.aliases.as_deref().unwrap(), ["redis", "cache"]);
        assert_eq!(
            Networking::from_mode("bridge"),
            Networking::BuiltIn("bridge".into())
        );
    }
}
