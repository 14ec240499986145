//! GitLab Runner's own Docker labels (`com.gitlab.gitlab-runner.*`, from its
//! `executors/docker/internal/labels`), put on a job's containers, volumes and networks beside
//! Flotilla's `com.flotilla.*` ones, so cleanup scripts and cAdvisor dashboards written for
//! GitLab Runner keep working. Pure: the values come from the job payload, its variables and the
//! job's [`ContainerLabels`]; the `type` of each object is added where the object is made.
//! Flotilla's own cleanup never reads these labels.

use super::ContainerLabels;
use crate::job::{JobPayload, Variables};
use std::collections::HashMap;

/// GitLab Runner's label prefix.
pub const PREFIX: &str = "com.gitlab.gitlab-runner";

/// `com.gitlab.gitlab-runner.<name>`.
pub(super) fn key(name: &str) -> String {
    format!("{PREFIX}.{name}")
}

/// The `type` label of an object (`build`, `predefined`, `service`, `wait`, `cache`).
pub(super) fn type_label(kind: &str) -> (String, String) {
    (key("type"), kind.to_string())
}

/// The labels GitLab Runner's labeler gives every object of a job (its `Labels(nil)`).
pub(super) fn job_labels(
    job: &JobPayload,
    variables: &Variables,
    l: &ContainerLabels,
) -> HashMap<String, String> {
    let var = |name: &str| variables.get(name).unwrap_or_default().to_string();
    let pipeline_id = if job.job_info.pipeline_id > 0 {
        job.job_info.pipeline_id.to_string()
    } else {
        var("CI_PIPELINE_ID")
    };
    let numeric = |name: &str| {
        variables
            .get(name)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            .to_string()
    };
    [
        ("job.id", job.id.to_string()),
        ("job.url", job_url(&job.git_info.repo_url, job.id)),
        ("job.sha", job.git_info.sha.clone()),
        ("job.before_sha", job.git_info.before_sha.clone()),
        ("job.ref", job.git_info.git_ref.clone()),
        ("job.timeout", go_duration(job.timeout_secs())),
        ("project.id", job.job_info.project_id.to_string()),
        ("project.runner_id", numeric("CI_CONCURRENT_PROJECT_ID")),
        ("pipeline.id", pipeline_id),
        ("runner.id", l.runner.clone()),
        ("runner.local_id", numeric("CI_CONCURRENT_ID")),
        ("runner.system_id", l.manager.clone()),
        ("managed", "true".to_string()),
    ]
    .into_iter()
    .map(|(name, value)| (key(name), value))
    .collect()
}

/// GitLab Runner's `JobURL`: the repository URL without credentials, query, fragment and
/// `.git`, then `/-/jobs/<id>`.
fn job_url(repo_url: &str, id: i64) -> String {
    let clean = crate::redact::url(repo_url);
    let clean = clean.split('#').next().unwrap_or_default();
    format!("{}/-/jobs/{id}", clean.trim_end_matches(".git"))
}

/// Seconds as Go's `time.Duration.String()` writes whole seconds: `1h0m0s`, `1m30s`, `45s`.
fn go_duration(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s}s"),
        _ => format!("{h}h{m}m{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_written_as_go_writes_them() {
        for (secs, text) in [
            (0, "0s"),
            (45, "45s"),
            (90, "1m30s"),
            (3600, "1h0m0s"),
            (7200, "2h0m0s"),
            (3661, "1h1m1s"),
        ] {
            assert_eq!(go_duration(secs), text);
        }
    }

    #[test]
    fn the_job_url_drops_credentials_and_dot_git() {
        assert_eq!(
            job_url(
                "https://gitlab-ci-token:secret@gitlab.example.com/g/p.git",
                7
            ),
            "https://gitlab.example.com/g/p/-/jobs/7"
        );
        assert_eq!(
            job_url("http://127.0.0.1:8080/g/p", 8),
            "http://127.0.0.1:8080/g/p/-/jobs/8"
        );
    }
}
