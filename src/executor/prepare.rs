//! `prepare_executor`: the job's image (pulled under its policies), builds volume, per-job
//! network, services (started and waited for) and build container. GitLab Runner's
//! `executors/docker` `Prepare`.

use super::container::{self, BuildContainer, Role};
use super::ctx::JobCtx;
use super::error::ExecError;
use super::helper_container;
use super::pull;
use super::services::{Networking, Services};

impl JobCtx<'_> {
    /// Image, volume, network and build container; the container's id.
    pub(super) async fn prepare(&self) -> Result<String, ExecError> {
        let job = &self.run.job;
        let image = pull::resolve_image(job, self.settings, &self.run.variables)?;
        self.log
            .line(&format!("Using Docker executor with image {image} ..."));
        for warning in self.auths.warnings() {
            self.log.warning(warning);
        }
        let policies = pull::pull_policies(job, self.settings)?;
        let job_image = job.image.as_ref();
        let platform = job_image.and_then(|i| i.docker_platform());
        pull::ensure_image(
            self.docker,
            &self.log,
            &image,
            &policies,
            platform.as_deref(),
            &self.auths,
        )
        .await?;
        let mut volume_labels = self.labels().clone();
        volume_labels.extend([super::gitlab_labels::type_label("cache")]);
        container::create_volume(self.docker, &self.names.builds_volume, &volume_labels).await?;
        if self.settings.network_mode.is_none() {
            container::create_network(self.docker, &self.names.network, self.labels()).await?;
        }
        let networking = Networking::from_mode(&self.network_mode());
        let extra_hosts = self.start_services(&networking).await?;
        let entrypoint = job_image
            .map(|i| i.entrypoint.clone())
            .filter(|e| !e.is_empty());
        BuildContainer {
            role: Role::Build,
            name: &self.names.build_container,
            image: &image,
            entrypoint,
            user: job_image.and_then(|i| i.docker_user()),
            settings: self.settings,
            builds_volume: &self.names.builds_volume,
            cache_volume: None,
            network_mode: Some(self.network_mode()),
            network_endpoint: networking
                .endpoint(&["build".to_string(), self.names.build_container.clone()]),
            extra_hosts,
            labels: self.labels(),
        }
        .create(self.docker)
        .await
    }

    /// Starts the job's services and waits for them; the build container's `/etc/hosts`
    /// entries for them (host and built-in network modes).
    async fn start_services(&self, networking: &Networking) -> Result<Vec<String>, ExecError> {
        if self.run.job.services.is_empty() {
            return Ok(Vec::new());
        }
        let services = Services {
            docker: self.docker,
            settings: self.settings,
            log: &self.log,
            variables: &self.run.variables,
            auths: &self.auths,
            labels: self.labels(),
            name_prefix: &self.names.prefix,
            builds_volume: &self.names.builds_volume,
            networking,
        };
        let started = services.start_all(&self.run.job.services).await?;
        if let Some(timeout) = self.settings.wait_for_services_timeout {
            let helper = helper_container::helper_image(self.settings);
            services.wait_all(&started, timeout, &helper).await;
        }
        Ok(started
            .iter()
            .flat_map(|s| s.extra_hosts(networking))
            .collect())
    }
}
