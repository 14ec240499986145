//! The job's objects on the engine and running a script in a container: the builds volume, the
//! per-job network, the build and helper containers (each created once and started once per
//! stage, as GitLab Runner's docker executor does with the build container), and one stage's
//! run — attach, start, write the script to stdin, stream stdout/stderr into the trace as
//! produced, wait for the exit code.
//!
//! Containers use the `none` log driver: output travels only through attach, so dockerd does not
//! store every byte a second time. Variables reach the container only inside the script.

use super::error::{is_not_found, ExecError};
use super::script;
use crate::config::DockerConfig;
use crate::trace::{JobTrace, StreamKind, TraceStream, WORK_STREAM};
use bollard::container::AttachContainerResults;
use bollard::models::{
    ContainerCreateBody, ContainerStateStatusEnum, HostConfig, HostConfigLogConfig, Mount,
    MountType, MountVolumeOptions, NetworkingConfig, VolumeCreateRequest,
};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, KillContainerOptionsBuilder,
    StartContainerOptions, WaitContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::StreamExt;
use std::collections::HashMap;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// Where the builds volume is mounted in job containers.
pub(super) const BUILDS_DIR: &str = "/builds";

/// Which of the job's containers a script runs in (for messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    /// The container from the job's image (user steps, `after_script`).
    Build,
    /// The helper container (git, cache, artifacts).
    Helper,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Build => "build container",
            Role::Helper => "helper container",
        })
    }
}

/// How long a killed container may take to be reported stopped.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Creates the job's builds volume.
pub(super) async fn create_volume(
    docker: &Docker,
    name: &str,
    labels: &HashMap<String, String>,
) -> Result<(), ExecError> {
    let request = VolumeCreateRequest {
        name: Some(name.to_string()),
        labels: Some(labels.clone()),
        ..Default::default()
    };
    docker
        .create_volume(request)
        .await
        .map(|_| ())
        .map_err(|e| ExecError::docker(format!("creating the volume {name}"), e))
}

/// What a job container (the build container, or the helper container) is made of.
pub(super) struct BuildContainer<'a> {
    /// Which of the job's containers this is.
    pub role: Role,
    /// Its name (fixed in advance, so cleanup finds it).
    pub name: &'a str,
    /// The job image.
    pub image: &'a str,
    /// The job's `image.entrypoint`, when it gives one (`[""]` clears the image's).
    pub entrypoint: Option<Vec<String>>,
    /// The job's `executor_opts.docker.user`.
    pub user: Option<String>,
    /// `[runners.docker]`.
    pub settings: &'a DockerConfig,
    /// The job's builds volume, mounted at [`BUILDS_DIR`].
    pub builds_volume: &'a str,
    /// The runner's local cache volume, mounted at `/cache` (helper container only); it takes
    /// the place of a `/cache` entry of `[runners.docker] volumes`.
    pub cache_volume: Option<&'a str>,
    /// `host`, a network name, or the per-job network.
    pub network_mode: Option<String>,
    /// Its endpoint on a user-defined network, with DNS aliases (`build`).
    pub network_endpoint: Option<NetworkingConfig>,
    /// `/etc/hosts` entries (`alias:address`) for services reached without DNS aliases.
    pub extra_hosts: Vec<String>,
    /// The job's labels.
    pub labels: &'a HashMap<String, String>,
}

/// The container path of a `[runners.docker] volumes` entry (`/path`, `host:/path[:mode]`).
fn volume_target(volume: &str) -> &str {
    let mut parts = volume.split(':');
    match (parts.next(), parts.next()) {
        (Some(_), Some(target)) => target.trim_end_matches('/'),
        (Some(only), None) => only.trim_end_matches('/'),
        _ => volume,
    }
}

impl BuildContainer<'_> {
    /// The job's labels with GitLab Runner's container `type`: `build` for the job's image,
    /// `predefined` for the helper (GitLab Runner's name for its helper-image containers).
    fn container_labels(&self) -> HashMap<String, String> {
        let mut labels = self.labels.clone();
        let (key, value) = super::gitlab_labels::type_label(match self.role {
            Role::Build => "build",
            Role::Helper => "predefined",
        });
        labels.insert(key, value);
        labels
    }

    /// The create request: `sh -c <bash detection>` reading its script from stdin.
    fn body(&self) -> ContainerCreateBody {
        let mut mounts = vec![Mount {
            target: Some(BUILDS_DIR.into()),
            source: Some(self.builds_volume.into()),
            typ: Some(MountType::VOLUME),
            ..Default::default()
        }];
        let mut binds = Vec::new();
        if let Some(cache) = self.cache_volume {
            mounts.push(Mount {
                target: Some(crate::cache::LOCAL_CACHE_DIR.into()),
                source: Some(cache.into()),
                typ: Some(MountType::VOLUME),
                ..Default::default()
            });
        }
        for volume in &self.settings.volumes {
            if self.cache_volume.is_some() && volume_target(volume) == crate::cache::LOCAL_CACHE_DIR
            {
                continue;
            }
            if volume.contains(':') {
                binds.push(volume.clone());
            } else {
                mounts.push(Mount {
                    target: Some(volume.clone()),
                    typ: Some(MountType::VOLUME),
                    volume_options: Some(MountVolumeOptions {
                        labels: Some(self.labels.clone()),
                        ..Default::default()
                    }),
                    ..Default::default()
                });
            }
        }
        ContainerCreateBody {
            image: Some(self.image.to_string()),
            cmd: Some(match self.role {
                Role::Build => script::container_command(),
                Role::Helper => script::helper_command(),
            }),
            entrypoint: self.entrypoint.clone(),
            user: self.user.clone(),
            labels: Some(self.container_labels()),
            attach_stdin: Some(true),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            open_stdin: Some(true),
            stdin_once: Some(true),
            tty: Some(false),
            host_config: Some(HostConfig {
                privileged: Some(self.settings.privileged),
                nano_cpus: self.settings.nano_cpus,
                memory: self.settings.memory_bytes,
                network_mode: self.network_mode.clone(),
                log_config: Some(HostConfigLogConfig {
                    typ: Some("none".into()),
                    config: None,
                }),
                mounts: Some(mounts),
                binds: (!binds.is_empty()).then_some(binds),
                extra_hosts: (!self.extra_hosts.is_empty()).then(|| self.extra_hosts.clone()),
                ..Default::default()
            }),
            networking_config: self.network_endpoint.clone(),
            ..Default::default()
        }
    }

    /// Creates the container; its id.
    pub(super) async fn create(&self, docker: &Docker) -> Result<String, ExecError> {
        let options = CreateContainerOptionsBuilder::new().name(self.name).build();
        docker
            .create_container(Some(options), self.body())
            .await
            .map(|created| created.id)
            .map_err(|e| ExecError::docker(format!("creating the {}", self.role), e))
    }
}

/// A trace stream flushed when dropped, so output held back before a kill is not lost.
struct FlushOnDrop(TraceStream);

impl Drop for FlushOnDrop {
    fn drop(&mut self) {
        self.0.flush();
    }
}

/// Runs `script` in the (stopped) container `id`: attach, start (holding one of
/// `start_slots`, when the engine is shared, until the engine answers), feed stdin, stream
/// output into the trace as produced, then the container's exit code. Dropping the future
/// leaves the container running: the caller kills it.
pub(super) async fn run_script(
    docker: &Docker,
    start_slots: Option<&tokio::sync::Semaphore>,
    role: Role,
    id: &str,
    script: &str,
    trace: &JobTrace,
) -> Result<i64, ExecError> {
    let attach = AttachContainerOptionsBuilder::new()
        .stdin(true)
        .stdout(true)
        .stderr(true)
        .stream(true)
        .build();
    let AttachContainerResults {
        mut output,
        mut input,
    } = docker
        .attach_container(id, Some(attach))
        .await
        .map_err(|e| ExecError::docker(format!("attaching to the {role}"), e))?;
    {
        // A closed semaphore (never: nothing closes it) would mean no bound, not no start.
        let _slot = match start_slots {
            Some(slots) => slots.acquire().await.ok(),
            None => None,
        };
        docker
            .start_container(id, None::<StartContainerOptions>)
            .await
            .map_err(|e| ExecError::docker(format!("starting the {role}"), e))?;
    }

    let mut stdout = FlushOnDrop(trace.stream(WORK_STREAM, StreamKind::Stdout));
    let mut stderr = FlushOnDrop(trace.stream(WORK_STREAM, StreamKind::Stderr));
    let feed = async {
        let written = async {
            input.write_all(script.as_bytes()).await?;
            input.flush().await?;
            input.shutdown().await
        }
        .await;
        // A script that exits early stops reading; its exit code tells the story.
        if let Err(e) = written {
            tracing::debug!(error = %e, "writing the script to the container's stdin");
        }
    };
    let pump = super::pump::pump(&mut output, &mut stdout.0, &mut stderr.0);
    let ((), pumped) = tokio::join!(feed, pump);
    drop((stdout, stderr));
    pumped.map_err(|e| ExecError::HostLost(format!("reading the {role}'s output failed: {e}")))?;
    let code = wait_exit(docker, role, id).await?;
    // A container removed under the job (`docker rm -f`, a VM being torn down) also "exits":
    // the engine marks it removing before it kills it, so its state tells the two apart.
    let removed = || ExecError::HostLost(format!("the {role} was removed while the job ran"));
    match docker.inspect_container(id, None).await {
        Ok(found) => {
            let status = found.state.and_then(|s| s.status);
            match status {
                Some(ContainerStateStatusEnum::REMOVING | ContainerStateStatusEnum::DEAD) => {
                    Err(removed())
                }
                _ => Ok(code),
            }
        }
        Err(e) if is_not_found(&e) => Err(removed()),
        Err(e) => Err(ExecError::docker(format!("inspecting the {role}"), e)),
    }
}

/// The exit code of container `id` once it is not running.
async fn wait_exit(docker: &Docker, role: Role, id: &str) -> Result<i64, ExecError> {
    let options = WaitContainerOptionsBuilder::new()
        .condition("not-running")
        .build();
    match docker.wait_container(id, Some(options)).next().await {
        Some(Ok(done)) => Ok(done.status_code),
        // bollard reports non-zero exits as errors; an empty message is a plain exit.
        Some(Err(bollard::errors::Error::DockerContainerWaitError { code, error }))
            if error.is_empty() =>
        {
            Ok(code)
        }
        Some(Err(bollard::errors::Error::DockerContainerWaitError { error, .. })) => Err(
            ExecError::HostLost(format!("waiting for the {role} failed: {error}")),
        ),
        Some(Err(e)) if is_not_found(&e) => Err(ExecError::HostLost(format!(
            "the {role} was removed while the job ran"
        ))),
        Some(Err(e)) => Err(ExecError::docker(format!("waiting for the {role}"), e)),
        None => Err(ExecError::HostLost(format!(
            "the engine ended the wait for the {role} without an exit code"
        ))),
    }
}

/// Kills container `id` (SIGKILL) and waits until it is reported stopped, so that it can be
/// started again for `after_script`. A container already stopped is fine.
pub(super) async fn kill(docker: &Docker, role: Role, id: &str) -> Result<(), ExecError> {
    let options = KillContainerOptionsBuilder::new().signal("SIGKILL").build();
    match docker.kill_container(id, Some(options)).await {
        Ok(()) => {}
        // 409: not running.
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 409, ..
        }) => {}
        Err(e) => return Err(ExecError::docker(format!("killing the {role}"), e)),
    }
    match tokio::time::timeout(STOP_TIMEOUT, wait_exit(docker, role, id)).await {
        Ok(result) => result.map(|_| ()),
        Err(_) => Err(ExecError::HostLost(format!(
            "the {role} did not stop within {}s of being killed",
            STOP_TIMEOUT.as_secs()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_container_reads_stdin_logs_nothing_and_carries_no_env() {
        let settings = DockerConfig {
            volumes: vec!["/cache".into(), "/srv/data:/data:ro".into()],
            privileged: true,
            memory_bytes: Some(1 << 30),
            ..DockerConfig::default()
        };
        let labels = HashMap::from([("com.flotilla.job-id".to_string(), "1".to_string())]);
        let spec = BuildContainer {
            role: Role::Build,
            name: "c",
            image: "img",
            entrypoint: None,
            user: None,
            settings: &settings,
            builds_volume: "vol",
            cache_volume: None,
            network_mode: Some("host".into()),
            network_endpoint: None,
            extra_hosts: vec!["redis:127.0.0.1".into()],
            labels: &labels,
        };
        let body = spec.body();
        let kind = |body: &ContainerCreateBody| {
            body.labels.as_ref().unwrap()["com.gitlab.gitlab-runner.type"].clone()
        };
        assert_eq!(kind(&body), "build");
        assert_eq!(
            kind(
                &BuildContainer {
                    role: Role::Helper,
                    ..spec
                }
                .body()
            ),
            "predefined"
        );
        assert_eq!(body.env, None);
        assert_eq!(body.open_stdin, Some(true));
        assert_eq!(body.stdin_once, Some(true));
        assert_eq!(body.cmd.as_ref().unwrap()[..2], ["sh", "-c"]);
        let host = body.host_config.unwrap();
        assert_eq!(host.log_config.unwrap().typ.as_deref(), Some("none"));
        assert_eq!(host.binds, Some(vec!["/srv/data:/data:ro".to_string()]));
        let mounts = host.mounts.unwrap();
        assert_eq!(mounts.len(), 2);
        assert_eq!(mounts[0].source.as_deref(), Some("vol"));
        assert_eq!(mounts[0].target.as_deref(), Some(BUILDS_DIR));
        assert_eq!(mounts[1].target.as_deref(), Some("/cache"));
        assert_eq!(host.network_mode.as_deref(), Some("host"));
        assert_eq!(host.extra_hosts, Some(vec!["redis:127.0.0.1".to_string()]));
        assert_eq!(host.privileged, Some(true));
        assert_eq!(host.memory, Some(1 << 30));
    }

    #[test]
    fn the_cache_volume_takes_the_place_of_a_cache_entry_in_volumes() {
        let settings = DockerConfig {
            volumes: vec!["/cache/".into(), "/srv:/cache:ro".into(), "/other".into()],
            ..DockerConfig::default()
        };
        let labels = HashMap::new();
        let spec = BuildContainer {
            role: Role::Helper,
            name: "h",
            image: "img",
            entrypoint: None,
            user: None,
            settings: &settings,
            builds_volume: "vol",
            cache_volume: Some("flotilla-runner-abc-cache"),
            network_mode: None,
            network_endpoint: None,
            extra_hosts: Vec::new(),
            labels: &labels,
        };
        let host = spec.body().host_config.unwrap();
        let mounts = host.mounts.unwrap();
        let targets: Vec<_> = mounts
            .iter()
            .map(|m| m.target.as_deref().unwrap())
            .collect();
        assert_eq!(targets, vec![BUILDS_DIR, "/cache", "/other"]);
        assert_eq!(
            mounts[1].source.as_deref(),
            Some("flotilla-runner-abc-cache")
        );
        assert_eq!(host.binds, None);
    }
}
