//! The job image: which one (the job's `image.name`, else `[runners.docker] image`, with
//! variables expanded), and getting it onto the engine by the pull policies in order (the job's
//! `image.pull_policy` if it gives one, else the runner's), as GitLab Runner's pull manager does.
//! Pulls authenticate with the job's [`RegistryAuths`] (`auth.rs`).

use super::auth::RegistryAuths;
use super::error::{is_not_found, ExecError};
use super::section::RunnerLog;
use crate::config::{DockerConfig, PullPolicy};
use crate::job::{Image, JobPayload, Variables};
use bollard::query_parameters::CreateImageOptionsBuilder;
use bollard::Docker;
use futures_util::StreamExt;

/// The image name to run the job in, expanded; an error when neither job nor runner names one.
pub(super) fn resolve_image(
    job: &JobPayload,
    settings: &DockerConfig,
    vars: &Variables,
) -> Result<String, ExecError> {
    let raw = job
        .image
        .as_ref()
        .map(|i| i.name.as_str())
        .filter(|n| !n.trim().is_empty())
        .unwrap_or(settings.image.as_str());
    let name = vars.expand(raw).trim().to_string();
    if name.is_empty() {
        return Err(ExecError::Configuration(
            "no image to run the job in: the job names no `image` and `[runners.docker] image` \
             is not set"
                .into(),
        ));
    }
    Ok(name)
}

/// The pull policies for this job, in the order to try them.
pub(super) fn pull_policies(
    job: &JobPayload,
    settings: &DockerConfig,
) -> Result<Vec<PullPolicy>, ExecError> {
    image_pull_policies(job.image.as_ref(), settings)
}

/// The pull policies for `image` (the job's or a service's): its own, else the runner's,
/// limited to `allowed_pull_policies`.
pub(super) fn image_pull_policies(
    image: Option<&Image>,
    settings: &DockerConfig,
) -> Result<Vec<PullPolicy>, ExecError> {
    let requested = super::allowed::requested_pull_policies(image, settings)
        .map_err(|e| ExecError::Configuration(e.to_string()))?;
    super::allowed::restrict_pull_policies(image, settings, requested)
        .map_err(|e| ExecError::Configuration(e.to_string()))
}

/// Makes `image` present on the engine following `policies`; logs as GitLab Runner does.
pub(super) async fn ensure_image(
    docker: &Docker,
    log: &RunnerLog,
    image: &str,
    policies: &[PullPolicy],
    platform: Option<&str>,
    auths: &RegistryAuths,
) -> Result<(), ExecError> {
    let mut last_error = String::from("no pull policy given");
    for policy in policies {
        match policy {
            PullPolicy::Never | PullPolicy::IfNotPresent => {
                if let Some(found) = inspect(docker, image).await? {
                    if *policy == PullPolicy::IfNotPresent {
                        log.line(&format!(
                            "Using locally found image version due to \"{}\" pull policy",
                            policy.as_str()
                        ));
                    }
                    log.line(&found);
                    return Ok(());
                }
                if *policy == PullPolicy::Never {
                    last_error = format!(
                        "image {image:?} is not present on the host and the pull policy is \"never\""
                    );
                    log.warning(&format!(
                        "Failed to pull image with policy \"never\": {last_error}"
                    ));
                    continue;
                }
            }
            PullPolicy::Always => {}
        }
        match pull(docker, log, image, platform, auths).await {
            Ok(()) => {
                if let Some(found) = inspect(docker, image).await? {
                    log.line(&found);
                }
                return Ok(());
            }
            Err(e) => {
                last_error = e.to_string();
                log.warning(&format!(
                    "Failed to pull image with policy \"{}\": {last_error}",
                    policy.as_str()
                ));
            }
        }
    }
    let names: Vec<&str> = policies.iter().map(|p| p.as_str()).collect();
    Err(ExecError::ImagePull(format!(
        "failed to pull image {image:?} with specified policies [{}]: {last_error}",
        names.join(" ")
    )))
}

/// `Using docker image <id> for <name> [with digest <digest>] ...` when present, else `None`.
async fn inspect(docker: &Docker, image: &str) -> Result<Option<String>, ExecError> {
    match docker.inspect_image(image).await {
        Ok(found) => {
            let id = found.id.unwrap_or_default();
            let digest = found
                .repo_digests
                .and_then(|d| d.into_iter().next())
                .map(|d| format!(" with digest {d}"))
                .unwrap_or_default();
            Ok(Some(format!(
                "Using docker image {id} for {image}{digest} ..."
            )))
        }
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(ExecError::docker(format!("inspecting image {image:?}"), e)),
    }
}

/// Pulls `image` with the credentials `auths` has for its registry; the engine's message on
/// failure.
async fn pull(
    docker: &Docker,
    log: &RunnerLog,
    image: &str,
    platform: Option<&str>,
    auths: &RegistryAuths,
) -> Result<(), PullError> {
    let (repo, tag) = split_reference(image);
    let mut options = CreateImageOptionsBuilder::new().from_image(&repo).tag(&tag);
    if let Some(p) = platform {
        options = options.platform(p);
    }
    let found = auths.for_image(image);
    if let Some(found) = found {
        log.line(&format!(
            "Authenticating with credentials from {}",
            found.source
        ));
    }
    log.line(&format!("Pulling docker image {image} ..."));
    let auth = found.map(|f| f.credentials.clone());
    let mut progress = docker.create_image(Some(options.build()), None, auth);
    while let Some(item) = progress.next().await {
        match item {
            Ok(info) => {
                if let Some(detail) = info.error_detail.and_then(|d| d.message) {
                    return Err(PullError::Engine(detail));
                }
            }
            Err(e) => return Err(PullError::Docker(e)),
        }
    }
    Ok(())
}

/// Why one pull failed: the engine's message, as it wrote it.
#[derive(Debug, thiserror::Error)]
enum PullError {
    /// The engine reported an error in the pull's progress stream.
    #[error("{0}")]
    Engine(String),
    /// The Docker API call failed.
    #[error(transparent)]
    Docker(bollard::errors::Error),
}

/// `(repository, tag or digest)`; a reference without either gets `latest`.
fn split_reference(image: &str) -> (String, String) {
    if let Some((repo, digest)) = image.split_once('@') {
        return (repo.to_string(), digest.to_string());
    }
    let last_slash = image.rfind('/').map(|i| i + 1).unwrap_or(0);
    match image[last_slash..].rfind(':') {
        Some(colon) => {
            let at = last_slash + colon;
            (image[..at].to_string(), image[at + 1..].to_string())
        }
        None => (image.to_string(), "latest".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{Image, JobVariable};

    fn job_with_image(name: &str, policies: &[&str]) -> JobPayload {
        JobPayload {
            image: Some(Image {
                name: name.into(),
                pull_policy: policies.iter().map(|p| p.to_string()).collect(),
                ..Image::default()
            }),
            ..JobPayload::default()
        }
    }

    #[test]
    fn the_job_image_wins_and_is_expanded() {
        let vars = Variables::new(vec![JobVariable::plain("TAG", "1.2")]);
        let settings = DockerConfig {
            image: "fallback".into(),
            ..DockerConfig::default()
        };
        let job = job_with_image("app:$TAG", &[]);
        assert_eq!(resolve_image(&job, &settings, &vars).unwrap(), "app:1.2");
        let none = JobPayload::default();
        assert_eq!(resolve_image(&none, &settings, &vars).unwrap(), "fallback");
        let err = resolve_image(&none, &DockerConfig::default(), &vars).unwrap_err();
        assert!(matches!(err, ExecError::Configuration(_)), "{err}");
    }

    #[test]
    fn job_policies_override_the_runner_and_unknown_ones_fail() {
        let settings = DockerConfig {
            pull_policy: vec![PullPolicy::IfNotPresent],
            ..DockerConfig::default()
        };
        let job = job_with_image("x", &["never", "always"]);
        assert_eq!(
            pull_policies(&job, &settings).unwrap(),
            vec![PullPolicy::Never, PullPolicy::Always]
        );
        let job = job_with_image("x", &[]);
        assert_eq!(
            pull_policies(&job, &settings).unwrap(),
            vec![PullPolicy::IfNotPresent]
        );
        let job = job_with_image("x", &["sometimes"]);
        assert!(pull_policies(&job, &settings).is_err());
    }

    #[test]
    fn references_split_into_repository_and_tag() {
        let cases = [
            ("busybox", ("busybox", "latest")),
            ("busybox:1.36", ("busybox", "1.36")),
            ("reg:5000/a/b", ("reg:5000/a/b", "latest")),
            ("reg:5000/a/b:v1", ("reg:5000/a/b", "v1")),
            ("a/b@sha256:abc", ("a/b", "sha256:abc")),
        ];
        for (image, (repo, tag)) in cases {
            assert_eq!(split_reference(image), (repo.into(), tag.into()), "{image}");
        }
    }
}
