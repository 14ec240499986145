//! What a job leaves on the engine and how it is removed: the names of the job's build and helper
//! containers, builds volume and per-job network (fixed before anything is created, so cleanup can find them
//! even when a create request was cut off), the `com.flotilla.*` labels they all carry, and the
//! removal itself — run explicitly on every return path of `run_job`, and by a drop guard when
//! the job's future is dropped before it got there.

use super::error::is_not_found;
use super::ContainerLabels;
use bollard::query_parameters::{
    ListContainersOptionsBuilder, RemoveContainerOptionsBuilder, RemoveVolumeOptions,
    WaitContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::StreamExt;
use std::collections::HashMap;
use std::time::Duration;

/// How long cleanup waits for objects another party is removing (or still holds).
const CONFLICT_WAIT: Duration = Duration::from_secs(10);

/// Label with the job id.
pub const LABEL_JOB_ID: &str = "com.flotilla.job-id";
/// Label with the runner's short token.
pub const LABEL_RUNNER: &str = "com.flotilla.runner";
/// Label with the VM name (empty on the local docker executor).
pub const LABEL_VM: &str = "com.flotilla.vm";
/// Label marking everything Flotilla made (`true`).
pub const LABEL_MANAGED: &str = "com.flotilla.managed";
/// Label with the manager id (`system_id`, one per `state_dir`): what the next start of the
/// same manager removes after a crash.
pub const LABEL_MANAGER: &str = "com.flotilla.manager";
/// Label with the id of the process run that made the object (never removed by that run's own
/// leftover cleanup).
pub const LABEL_RUN: &str = "com.flotilla.run";

/// The labels of every container, volume and network of a job.
pub(super) fn labels(l: &ContainerLabels) -> HashMap<String, String> {
    HashMap::from([
        (LABEL_JOB_ID.to_string(), l.job_id.to_string()),
        (LABEL_RUNNER.to_string(), l.runner.clone()),
        (LABEL_VM.to_string(), l.vm.clone()),
        (LABEL_MANAGED.to_string(), "true".to_string()),
        (LABEL_MANAGER.to_string(), l.manager.clone()),
        (LABEL_RUN.to_string(), l.run.clone()),
    ])
}

/// The names of a job's objects on the engine: `flotilla-<runner>-<job id>-<role>`.
#[derive(Debug, Clone)]
pub(super) struct Names {
    /// The common prefix of the job's names (`flotilla-<runner>-<job id>-<random>`); service
    /// containers are named `<prefix>-<service>-<index>`.
    pub prefix: String,
    /// The container running user steps and `after_script`.
    pub build_container: String,
    /// The container running non-user stages (git, cache, artifacts) from the helper image;
    /// created only when a stage needs it.
    pub helper_container: String,
    /// The volume mounted at `/builds`.
    pub builds_volume: String,
    /// The per-job bridge network: only with `FF_NETWORK_PER_BUILD` and `network_mode` unset.
    pub network: Option<String>,
}

impl Names {
    /// Names for the job `labels` describes; a network name when the job gets its own network.
    pub(super) fn new(l: &ContainerLabels, own_network: bool) -> Self {
        let runner: String = l
            .runner
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        let runner = if runner.is_empty() {
            "local".into()
        } else {
            runner
        };
        // A random suffix: two coordinators may hand out the same job id to runners with the
        // same short token on one engine; names must never collide.
        let base = format!(
            "flotilla-{runner}-{}-{:06x}",
            l.job_id,
            rand::random::<u32>() & 0xff_ffff
        );
        Names {
            build_container: format!("{base}-build"),
            helper_container: format!("{base}-helper"),
            builds_volume: format!("{base}-builds"),
            network: own_network.then(|| format!("{base}-network")),
            prefix: base,
        }
    }
}

/// Removes a job's objects: every container with the job's labels (force, with anonymous
/// volumes) and the named build and helper containers, then the builds volume, then the per-job network.
/// Idempotent: what is already gone is skipped. Failures are logged, not returned: a host that
/// went away takes its objects with it.
pub(super) async fn remove_job_objects(docker: &Docker, names: &Names, l: &ContainerLabels) {
    let mut containers = vec![
        names.build_container.clone(),
        names.helper_container.clone(),
    ];
    let filters = HashMap::from([(
        "label",
        vec![
            format!("{LABEL_JOB_ID}={}", l.job_id),
            format!("{LABEL_RUNNER}={}", l.runner),
        ],
    )]);
    let list = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&filters)
        .build();
    match docker.list_containers(Some(list)).await {
        Ok(found) => containers.extend(found.into_iter().filter_map(|c| c.id)),
        Err(e) => tracing::warn!(job_id = l.job_id, error = %e, "listing the job's containers"),
    }
    let force = RemoveContainerOptionsBuilder::new()
        .force(true)
        .v(true)
        .build();
    for name in &containers {
        match docker.remove_container(name, Some(force.clone())).await {
            Ok(()) => {}
            Err(e) if is_not_found(&e) => {}
            // Someone else is removing it (409): wait until it is gone, or the volume stays busy.
            Err(e) if is_conflict(&e) => wait_removed(docker, name).await,
            Err(e) => tracing::warn!(job_id = l.job_id, container = %name, error = %e,
                "removing a job container"),
        }
    }
    remove_volume(docker, &names.builds_volume, l.job_id).await;
    let Some(network) = &names.network else {
        return;
    };
    match docker.remove_network(network).await {
        Ok(()) => {}
        Err(e) if is_not_found(&e) => {}
        Err(e) => tracing::warn!(job_id = l.job_id, network = %network, error = %e,
            "removing the job network"),
    }
}

/// Waits (bounded) until container `name` is removed.
async fn wait_removed(docker: &Docker, name: &str) {
    let options = WaitContainerOptionsBuilder::new()
        .condition("removed")
        .build();
    let mut wait = docker.wait_container(name, Some(options));
    // Any answer (removed, 404, an error) ends the wait; only the bound matters here.
    let _ = tokio::time::timeout(CONFLICT_WAIT, wait.next()).await;
}

/// Removes the builds volume, retrying briefly while a container being removed still holds it.
async fn remove_volume(docker: &Docker, name: &str, job_id: i64) {
    let mut delay = Duration::from_millis(100);
    let give_up = tokio::time::Instant::now() + CONFLICT_WAIT;
    loop {
        match docker
            .remove_volume(name, None::<RemoveVolumeOptions>)
            .await
        {
            Ok(()) => return,
            Err(e) if is_not_found(&e) => return,
            Err(e) if is_conflict(&e) && tokio::time::Instant::now() + delay < give_up => {
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            Err(e) => {
                tracing::warn!(job_id, volume = %name, error = %e, "removing the builds volume");
                return;
            }
        }
    }
}

fn is_conflict(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 409,
            ..
        }
    )
}

/// Removes the job's objects if it is dropped while still armed. Created at the start of
/// `run_job`; disarmed after the explicit cleanup on the normal path has finished.
pub(super) struct CleanupGuard {
    docker: Docker,
    names: Names,
    labels: ContainerLabels,
    armed: bool,
}

impl CleanupGuard {
    /// An armed guard for the job's objects.
    pub(super) fn new(docker: Docker, names: Names, labels: ContainerLabels) -> Self {
        CleanupGuard {
            docker,
            names,
            labels,
            armed: true,
        }
    }

    /// Removes the job's objects now; disarms only once removal has run to its end, so a drop
    /// in the middle still leaves the work to `Drop`.
    pub(super) async fn run(mut self) {
        remove_job_objects(&self.docker, &self.names, &self.labels).await;
        self.armed = false;
    }
}

impl Drop for CleanupGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        // The job's future was dropped before its own cleanup finished: nobody is left to await
        // a cleanup, so it runs detached on the current runtime. This is the one untracked task
        // of the executor, bounded by the engine's request timeout; without a runtime (process
        // exit) the fleet's reconcile removes what remains with the VM.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let docker = self.docker.clone();
            let names = self.names.clone();
            let labels = self.labels.clone();
            tracing::warn!(
                job_id = labels.job_id,
                "job dropped before cleanup; cleaning up"
            );
            handle.spawn(async move { remove_job_objects(&docker, &names, &labels).await });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_valid_docker_names_and_carry_the_job() {
        let l = ContainerLabels {
            job_id: 42,
            runner: "ab/c:d".into(),
            vm: String::new(),
            ..Default::default()
        };
        let n = Names::new(&l, true);
        let pattern =
            regex::Regex::new(r"^flotilla-ab-c-d-42-[0-9a-f]{6}-(build|helper|builds|network)$")
                .unwrap();
        for name in [
            &n.build_container,
            &n.helper_container,
            &n.builds_volume,
            n.network.as_ref().unwrap(),
        ] {
            assert!(pattern.is_match(name), "{name}");
        }
        assert!(n.build_container.ends_with("-build"));
        assert!(n.builds_volume.ends_with("-builds"));
        assert_ne!(
            Names::new(&l, true).build_container,
            n.build_container,
            "unique per run"
        );
        let labels = labels(&l);
        assert_eq!(labels[LABEL_JOB_ID], "42");
        assert_eq!(labels[LABEL_MANAGED], "true");
        assert_eq!(labels[LABEL_VM], "");
        assert_eq!(Names::new(&l, false).network, None, "no network by default");
    }
}
