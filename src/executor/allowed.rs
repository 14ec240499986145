//! The operator's allow-lists for what a job asks to run, checked before anything is pulled:
//! `allowed_images` for the job's image (GitLab Runner's `VerifyAllowedImage`: doublestar globs,
//! the runner's own default image always allowed, an empty list allows all) and
//! `allowed_pull_policies` for the image's and every service's pull policies (GitLab Runner's
//! `ComputeEffectivePullPolicies`: the requested policies limited to the allowed ones, an error
//! when none is left), with GitLab Runner's wording. Pure; no I/O.

use crate::config::{DockerConfig, PullPolicy};
use crate::job::{Image, JobPayload, Variables};

/// Why a job may not run: the trace lines to show (GitLab Runner's) and the error for the
/// final `ERROR: Job failed (system failure): …` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Lines for the trace, before the final error line.
    pub lines: Vec<String>,
    /// The error itself.
    pub error: String,
}

/// Why the pull policies for an image cannot be used (GitLab Runner's wording).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PullPolicyError {
    /// The job asked for a policy that does not exist.
    #[error(
        "unknown pull policy {policy:?} for image {image:?} (use always, if-not-present or never)"
    )]
    Unknown {
        /// The policy as the job spelt it.
        policy: String,
        /// The image it was asked for.
        image: String,
    },
    /// No requested policy is in `allowed_pull_policies`.
    #[error("pull_policy ({requested}) defined in {source_name} is not one of the allowed_pull_policies ({allowed})")]
    NotAllowed {
        /// The requested policies, as Go prints a slice.
        requested: String,
        /// Where they were defined: the pipeline or the runner's config.
        source_name: &'static str,
        /// The allowed policies, as Go prints a slice.
        allowed: String,
    },
}

/// Checks the job's image against `allowed_images` and every pull policy the job would use
/// against `allowed_pull_policies`.
pub fn check_job(
    settings: &DockerConfig,
    job: &JobPayload,
    vars: &Variables,
) -> Result<(), Refusal> {
    if let Some(image) = job.image.as_ref().filter(|i| !i.name.trim().is_empty()) {
        let name = vars.expand(&image.name).trim().to_string();
        check_image(settings, &name)?;
    }
    for image in job.image.iter().chain(&job.services) {
        let requested = requested_pull_policies(Some(image), settings).map_err(|e| Refusal {
            lines: Vec::new(),
            error: e.to_string(),
        })?;
        restrict_pull_policies(Some(image), settings, requested).map_err(|e| Refusal {
            lines: Vec::new(),
            error: e.to_string(),
        })?;
    }
    Ok(())
}

/// `VerifyAllowedImage` for the job's image, with GitLab Runner's lines.
fn check_image(settings: &DockerConfig, image: &str) -> Result<(), Refusal> {
    let allowed = &settings.allowed_images;
    if allowed.is_empty()
        || allowed
            .iter()
            .any(|p| super::image_glob::glob_matches(p, image))
        || image == settings.image
    {
        return Ok(());
    }
    let mut lines = vec![
        String::new(),
        format!("\x1b[31;1mERROR: The {image:?} image is not present on list of allowed images:\x1b[0;m"),
    ];
    lines.extend(allowed.iter().map(|p| format!("- {p}")));
    lines.push(String::new());
    lines.push(
        "Please check runner's allowed_images configuration: \
         https://docs.gitlab.com/runner/configuration/advanced-configuration/"
            .to_string(),
    );
    Err(Refusal {
        lines,
        error: format!("disallowed image {image:?} (not in allowed_images)"),
    })
}

/// The pull policies asked for `image`: its own (`image.pull_policy` in the job), else the
/// runner's `pull_policy`, else `always`.
pub(super) fn requested_pull_policies(
    image: Option<&Image>,
    settings: &DockerConfig,
) -> Result<Vec<PullPolicy>, PullPolicyError> {
    let from_job = image.map(|i| i.pull_policy.as_slice()).unwrap_or_default();
    if from_job.is_empty() {
        return Ok(if settings.pull_policy.is_empty() {
            vec![PullPolicy::Always]
        } else {
            settings.pull_policy.clone()
        });
    }
    from_job
        .iter()
        .map(|p| {
            PullPolicy::parse(p.trim()).ok_or_else(|| PullPolicyError::Unknown {
                policy: p.clone(),
                image: image.map(|i| i.name.clone()).unwrap_or_default(),
            })
        })
        .collect()
}

/// `requested` limited to `allowed_pull_policies` (all of it when that is empty); an error in
/// GitLab Runner's words when nothing is left.
pub(super) fn restrict_pull_policies(
    image: Option<&Image>,
    settings: &DockerConfig,
    requested: Vec<PullPolicy>,
) -> Result<Vec<PullPolicy>, PullPolicyError> {
    let allowed = &settings.allowed_pull_policies;
    if allowed.is_empty() {
        return Ok(requested);
    }
    let kept: Vec<PullPolicy> = requested
        .iter()
        .copied()
        .filter(|p| allowed.contains(p))
        .collect();
    if !kept.is_empty() {
        return Ok(kept);
    }
    let from_job = image.is_some_and(|i| !i.pull_policy.is_empty());
    // GitLab Runner also says "Runner config (default)" when `pull_policy` is unset; the
    // validated config no longer tells an unset key from `["always"]`.
    let source = if from_job {
        "GitLab pipeline config"
    } else {
        "Runner config"
    };
    Err(PullPolicyError::NotAllowed {
        requested: go_list(&requested),
        source_name: source,
        allowed: go_list(allowed),
    })
}

/// A list as Go's `%v` prints a slice: `[always if-not-present]`.
fn go_list(policies: &[PullPolicy]) -> String {
    let names: Vec<&str> = policies.iter().map(|p| p.as_str()).collect();
    format!("[{}]", names.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(images: &[&str], policies: &[PullPolicy]) -> DockerConfig {
        DockerConfig {
            image: "alpine:3.20".into(),
            allowed_images: images.iter().map(|s| s.to_string()).collect(),
            allowed_pull_policies: policies.to_vec(),
            ..DockerConfig::default()
        }
    }

    fn job(image: &str, policies: &[&str]) -> JobPayload {
        JobPayload {
            image: Some(Image {
                name: image.into(),
                pull_policy: policies.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn an_image_outside_allowed_images_is_refused_in_gitlab_runners_words() {
        let s = settings(&["alpine:*", "registry.example.com/**"], &[]);
        let vars = Variables::default();
        let refusal = check_job(&s, &job("evil/miner:latest", &[]), &vars).unwrap_err();
        assert!(
            refusal.lines[1].contains(
                "ERROR: The \"evil/miner:latest\" image is not present on list of allowed images:"
            ),
            "{refusal:?}"
        );
        assert_eq!(refusal.lines[2], "- alpine:*");
        assert!(refusal
            .lines
            .last()
            .unwrap()
            .contains("allowed_images configuration"));
        assert!(refusal.error.contains("allowed_images"));
        for ok in [
            "alpine:3.19",
            "registry.example.com/group/app:1",
            "alpine:3.20",
        ] {
            check_job(&s, &job(ok, &[]), &vars).unwrap();
        }
        // Unset: every image.
        check_job(&settings(&[], &[]), &job("anything", &[]), &vars).unwrap();
    }

    #[test]
    fn the_image_name_is_expanded_before_the_check() {
        let s = settings(&["alpine:*"], &[]);
        let vars = Variables::new(vec![crate::job::JobVariable::plain("IMG", "evil")]);
        assert!(check_job(&s, &job("$IMG:1", &[]), &vars).is_err());
    }

    #[test]
    fn a_pull_policy_outside_allowed_pull_policies_is_refused_with_its_source() {
        let s = settings(&[], &[PullPolicy::IfNotPresent]);
        let vars = Variables::default();
        let refusal = check_job(&s, &job("alpine", &["always"]), &vars).unwrap_err();
        assert_eq!(
            refusal.error,
            "pull_policy ([always]) defined in GitLab pipeline config is not one of the \
             allowed_pull_policies ([if-not-present])"
        );
        let refusal = check_job(&s, &job("alpine", &[]), &vars).unwrap_err();
        assert!(
            refusal
                .error
                .contains("([always]) defined in Runner config is"),
            "{refusal:?}"
        );
        // The requested ones limited to the allowed ones.
        let image = job("alpine", &["always", "if-not-present"]).image.unwrap();
        let requested = requested_pull_policies(Some(&image), &s).unwrap();
        assert_eq!(
            restrict_pull_policies(Some(&image), &s, requested).unwrap(),
            vec![PullPolicy::IfNotPresent]
        );
    }
}
