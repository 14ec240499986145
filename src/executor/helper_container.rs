//! The job's helper container: the helper image (git, git-lfs and the `flotilla helper`
//! commands) running the non-user stages — get_sources, cache, artifacts — in the job's builds
//! volume, with the same network mode as the build container.
//!
//! The container is created on the first stage that needs it (a job whose stages have nothing to
//! do starts none), then started once per stage with that stage's script on stdin, like the build
//! container. It carries the job's labels and a name from [`Names`](super::cleanup::Names), so
//! the job's cleanup removes it on every path.

use super::container::{self, BuildContainer, Role};
use super::ctx::{Ended, Interrupt, JobCtx};
use super::error::ExecError;
use super::helper_load;
use super::pull;
use super::script::StepScript;
use super::section::stage_description;
use crate::config::{DockerConfig, PullPolicy};
use crate::job::Variables;
use std::future::Future;

/// The helper image to use: `[runners.docker] helper_image`, else `flotilla-helper:<version>`
/// (what `scripts/build-helper-image.sh` tags by default).
pub(super) fn helper_image(settings: &DockerConfig) -> String {
    settings
        .helper_image
        .as_deref()
        .map(str::trim)
        .filter(|image| !image.is_empty())
        .map(str::to_string)
        .unwrap_or_else(|| format!("flotilla-helper:{}", crate::VERSION))
}

impl JobCtx<'_> {
    /// Runs `lines` as one shell script in the job's helper container, in the project directory,
    /// with `vars` exported (inside the script, never as container `Env`); the script's exit
    /// code. The lines are not echoed: a stage prints its own messages. With no lines, nothing
    /// runs and no container is made (exit code 0). `name` names the stage in errors; sections
    /// and headers are the caller's.
    pub(super) async fn run_helper_stage(
        &self,
        name: &str,
        lines: &[String],
        vars: &Variables,
    ) -> Result<i64, ExecError> {
        if lines.is_empty() {
            return Ok(0);
        }
        let id = self.helper_container().await?;
        let project_dir = self.project_dir();
        let tmp_dir = self.tmp_dir();
        let script = StepScript {
            variables: vars,
            project_dir: &project_dir,
            tmp_dir: &tmp_dir,
            lines,
            echo: false,
        }
        .render();
        tracing::debug!(
            job_id = self.run.labels.job_id,
            stage = name,
            "running a helper stage"
        );
        container::run_script(
            self.docker,
            self.run.start_slots.as_deref(),
            Role::Helper,
            &id,
            &script,
            &self.run.trace,
        )
        .await
    }

    /// Stops the helper container's running stage at once, if the helper container exists.
    pub(super) async fn kill_helper(&self) -> Result<(), ExecError> {
        match self.helper.get() {
            Some(id) => container::kill(self.docker, Role::Helper, id).await,
            None => Ok(()),
        }
    }

    /// The helper container's id, creating it (and getting its image) on first use.
    async fn helper_container(&self) -> Result<String, ExecError> {
        self.helper
            .get_or_try_init(|| async {
                let image = helper_image(self.settings);
                if let Some(archive) = &self.settings.helper_image_archive {
                    helper_load::load_if_absent(self.docker, &self.log, &image, archive).await?;
                }
                pull::ensure_image(
                    self.docker,
                    &self.log,
                    &image,
                    &[PullPolicy::IfNotPresent],
                    None,
                    &self.auths,
                )
                .await
                .map_err(|e| {
                    ExecError::Configuration(format!(
                        "the helper image {image:?} could not be had ({e}); build it with \
                         scripts/build-helper-image.sh and name it in [runners.docker] \
                         helper_image"
                    ))
                })?;
                let cache_volume = self.run.cache.local_volume.as_deref();
                if let Some(volume) = cache_volume {
                    // The runner's cache volume outlives the job: no job label, so the job's
                    // cleanup leaves it.
                    let mut labels = self.labels().clone();
                    labels.remove(super::LABEL_JOB_ID);
                    labels.extend([super::gitlab_labels::type_label("cache")]);
                    container::create_volume(self.docker, volume, &labels).await?;
                }
                BuildContainer {
                    role: Role::Helper,
                    cache_volume,
                    name: &self.names.helper_container,
                    image: &image,
                    // `[""]` clears an entrypoint the image may have: the script runs as is.
                    entrypoint: Some(vec![String::new()]),
                    user: None,
                    settings: self.settings,
                    builds_volume: &self.names.builds_volume,
                    network_mode: self.network_mode(),
                    network_endpoint: None,
                    extra_hosts: Vec::new(),
                    labels: self.labels(),
                }
                .create(self.docker)
                .await
            })
            .await
            .cloned()
    }
}

impl JobCtx<'_> {
    /// Runs a non-user stage in its trace section (`name`, with GitLab Runner's header),
    /// bounded by the job timeout and the graceful cancel. `stage` says how it ended: an exit
    /// code (0 = on to the next stage), or an error. An interrupted stage's helper container
    /// is killed.
    pub(super) async fn helper_section<F>(&self, name: &str, stage: F) -> Result<(), Ended>
    where
        F: Future<Output = Result<i64, ExecError>>,
    {
        self.log.start(name, &stage_description(name));
        let result = self.bounded(self.deadline, stage).await;
        self.log.end(name);
        match result {
            Ok(Ok(0)) => Ok(()),
            Ok(Ok(code)) => Err(Ended::Failed(i32::try_from(code).unwrap_or(i32::MAX))),
            Ok(Err(e)) => Err(Ended::Error(e)),
            Err(interrupt) => {
                interrupt.warn(&self.log, name);
                match self.kill_helper().await {
                    Ok(()) => Err(Ended::Interrupted(interrupt)),
                    Err(e) => Err(Ended::Error(e)),
                }
            }
        }
    }
}

impl JobCtx<'_> {
    /// Runs a stage after `after_script` (cache archive, artifacts upload) in its section,
    /// bounded by the job's timeout only: a graceful cancel does not cut it short.
    pub(super) async fn after_job_section<F>(&self, name: &str, stage: F) -> Result<(), Ended>
    where
        F: Future<Output = Result<i64, ExecError>>,
    {
        self.log.start(name, &stage_description(name));
        let result = tokio::time::timeout_at(self.deadline, stage).await;
        self.log.end(name);
        match result {
            Ok(Ok(0)) => Ok(()),
            Ok(Ok(code)) => Err(Ended::Failed(i32::try_from(code).unwrap_or(i32::MAX))),
            Ok(Err(e)) => Err(Ended::Error(e)),
            Err(_elapsed) => {
                Interrupt::TimedOut.warn(&self.log, name);
                match self.kill_helper().await {
                    Ok(()) => Err(Ended::Interrupted(Interrupt::TimedOut)),
                    Err(e) => Err(Ended::Error(e)),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_helper_image_defaults_to_this_version() {
        let mut settings = DockerConfig::default();
        assert_eq!(
            helper_image(&settings),
            format!("flotilla-helper:{}", crate::VERSION)
        );
        settings.helper_image = Some("  ".into());
        assert_eq!(
            helper_image(&settings),
            format!("flotilla-helper:{}", crate::VERSION)
        );
        settings.helper_image = Some("registry.example/flotilla-helper:1".into());
        assert_eq!(
            helper_image(&settings),
            "registry.example/flotilla-helper:1"
        );
    }
}
