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
//!
//! Files: this one (starting services, their networking and environment, `allowed_services`),
//! `names` (image names taken apart, derived hostnames), `wait` (the health check and the
//! warning).

mod names;
mod wait;

use names::{split_name_and_version, ServiceName};

use super::auth::RegistryAuths;
use super::container::BUILDS_DIR;
use super::error::ExecError;
use super::image_glob::glob_matches;
use super::pull;
use super::section::RunnerLog;
use crate::config::DockerConfig;
use crate::job::{Image, JobVariable, Variables};
use bollard::models::{
    ContainerCreateBody, EndpointSettings, HostConfig, HostConfigLogConfig, Mount, MountType,
    NetworkingConfig, RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{CreateContainerOptionsBuilder, StartContainerOptions};
use bollard::Docker;
use std::collections::{HashMap, HashSet};

/// Label naming what a container is for (`service`, `wait`); the job's labels come with it.
pub const LABEL_TYPE: &str = "com.flotilla.type";
/// Label with the service's image name (service containers only).
pub const LABEL_SERVICE: &str = "com.flotilla.service";

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
    /// The job's engine.
    pub docker: &'a Docker,
    /// `[runners.docker]`: pull policies, privileges, limits, allowed images.
    pub settings: &'a DockerConfig,
    /// The job's runner lines (what starts, warnings).
    pub log: &'a RunnerLog,
    /// The job's variables (names expanded with them; public ones go to services).
    pub variables: &'a Variables,
    /// Registry credentials for the service and helper images.
    pub auths: &'a RegistryAuths,
    /// The job's `com.flotilla.*` labels.
    pub labels: &'a HashMap<String, String>,
    /// The prefix of the job's container names.
    pub name_prefix: &'a str,
    /// The job's builds volume, mounted at `/builds` as in the build container.
    pub builds_volume: &'a str,
    /// How the job's containers are networked.
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
        labels.extend([
            crate::executor::gitlab_labels::type_label("service"),
            (
                crate::executor::gitlab_labels::key("service"),
                parsed.service.clone(),
            ),
            (
                crate::executor::gitlab_labels::key("service.version"),
                parsed.version.clone(),
            ),
        ]);
        let non_empty = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
        let body = ContainerCreateBody {
            image: Some(parsed.image.clone()),
            env: Some(service_env(self.variables, definition)),
            cmd: non_empty(&definition.command),
            entrypoint: non_empty(&definition.entrypoint),
            user: definition.docker_user(),
            labels: Some(labels),
            host_config: Some(host_config(
                self.settings,
                self.networking,
                self.builds_volume,
            )),
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
}

/// A service container's host settings: `services_privileged` (else `privileged`), the job's
/// network mode, no restarts, logs kept (`json-file`) so a service that does not come up can
/// show them, and the builds volume at `/builds` as GitLab Runner mounts it.
fn host_config(
    settings: &DockerConfig,
    networking: &Networking,
    builds_volume: &str,
) -> HostConfig {
    HostConfig {
        privileged: Some(settings.services_privileged.unwrap_or(settings.privileged)),
        network_mode: Some(networking.mode()),
        restart_policy: Some(RestartPolicy {
            name: Some(RestartPolicyNameEnum::NO),
            maximum_retry_count: None,
        }),
        log_config: Some(HostConfigLogConfig {
            typ: Some("json-file".into()),
            config: None,
        }),
        mounts: Some(vec![Mount {
            target: Some(BUILDS_DIR.into()),
            source: Some(builds_volume.into()),
            typ: Some(MountType::VOLUME),
            ..Default::default()
        }]),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn services_privileged_overrides_privileged_and_logs_are_kept() {
        let mut settings = DockerConfig {
            privileged: true,
            ..DockerConfig::default()
        };
        let host = Networking::Host;
        assert_eq!(host_config(&settings, &host, "v").privileged, Some(true));
        settings.services_privileged = Some(false);
        let config = host_config(&settings, &host, "v");
        assert_eq!(config.privileged, Some(false));
        assert_eq!(config.network_mode.as_deref(), Some("host"));
        assert_eq!(config.log_config.unwrap().typ.as_deref(), Some("json-file"));
        assert_eq!(config.mounts.unwrap()[0].source.as_deref(), Some("v"));
        settings.privileged = false;
        settings.services_privileged = Some(true);
        assert_eq!(host_config(&settings, &host, "v").privileged, Some(true));
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
