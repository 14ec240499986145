//! The job payload of `POST /api/v4/jobs/request` (GitLab Runner's `common/spec/spec.go`).
//! Decoding is lenient as GitLab's own senders vary: unknown fields are ignored, nulls accepted,
//! and `entrypoint`/`command`/`pull_policy` may be a string or an array.

use super::de::{
    count_or_more, lenient_i64, lenient_opt_f64, lenient_opt_i64, null_default, string_or_int,
    string_or_vec,
};
use super::variables::JobVariable;
use serde::{Deserialize, Serialize};

/// The two fields without which a 201 is not a job at all ("no job", as GitLab Runner treats an
/// undecodable answer). Decoded first, so that a job whose full parse fails can still be
/// acknowledged and failed.
#[derive(Clone, Deserialize)]
pub struct JobHandle {
    /// The job id.
    pub id: i64,
    /// The job token (secret).
    pub token: String,
}

/// The token is a secret: `Debug` shows the id only.
impl std::fmt::Debug for JobHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobHandle")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// Why a payload that has an id and a token cannot be run.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    /// The JSON does not have the shape of a job: where and what kind of error, never serde's
    /// message (which quotes the offending value, perhaps a masked variable).
    #[error("the job payload could not be decoded: {kind} at `{path}`")]
    Decode {
        /// The field path, e.g. `variables[2].masked` (names and indices only).
        path: String,
        /// See [`super::de::json_error_kind`].
        kind: &'static str,
    },
    /// The job asks for what Flotilla does not support.
    #[error("the job asks for what this runner does not support: {0}")]
    Unsupported(String),
}

/// A job as GitLab hands it to a runner. Its `Debug` shows no secret (token, clone URL,
/// credentials, variable values).
#[derive(Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct JobPayload {
    pub id: i64,
    pub token: String,
    #[serde(deserialize_with = "null_default")]
    pub allow_git_fetch: bool,
    #[serde(deserialize_with = "null_default")]
    pub job_info: JobInfo,
    #[serde(deserialize_with = "null_default")]
    pub git_info: GitInfo,
    #[serde(deserialize_with = "null_default")]
    pub runner_info: RunnerInfo,
    #[serde(deserialize_with = "null_default")]
    pub variables: Vec<JobVariable>,
    #[serde(deserialize_with = "null_default")]
    pub steps: Vec<Step>,
    #[serde(deserialize_with = "null_default")]
    pub image: Option<Image>,
    #[serde(deserialize_with = "null_default")]
    pub services: Vec<Image>,
    #[serde(deserialize_with = "null_default")]
    pub artifacts: Vec<Artifact>,
    #[serde(deserialize_with = "null_default")]
    pub cache: Vec<Cache>,
    #[serde(deserialize_with = "null_default")]
    pub credentials: Vec<Credential>,
    #[serde(deserialize_with = "null_default")]
    pub dependencies: Vec<Dependency>,
    #[serde(deserialize_with = "null_default")]
    pub features: JobFeatures,
    #[serde(deserialize_with = "null_default")]
    pub hooks: Vec<Hook>,
    /// Step-runner steps as a JSON string; Flotilla does not run native steps.
    #[serde(deserialize_with = "null_default")]
    pub run: Option<String>,
    /// Secrets from external managers; Flotilla does not resolve them.
    #[serde(deserialize_with = "null_default")]
    pub secrets: Option<serde_json::Value>,
}

impl std::fmt::Debug for JobPayload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobPayload")
            .field("id", &self.id)
            .field("name", &self.job_info.name)
            .field("project_id", &self.job_info.project_id)
            .field("steps", &self.steps.len())
            .field("variables", &self.variables)
            .finish_non_exhaustive()
    }
}

impl JobPayload {
    /// Decodes a full payload and checks it asks for nothing Flotilla cannot do.
    pub fn parse(value: serde_json::Value) -> Result<JobPayload, PayloadError> {
        let job: JobPayload =
            serde_path_to_error::deserialize(value).map_err(|e| PayloadError::Decode {
                path: e.path().to_string(),
                kind: super::de::json_error_kind(e.inner()),
            })?;
        job.check_supported()?;
        Ok(job)
    }

    /// Rejects what GitLab Runner also rejects (unknown `executor_opts`) and what Flotilla does
    /// not implement (native `run` steps, external secrets).
    pub fn check_supported(&self) -> Result<(), PayloadError> {
        if self.run.as_deref().is_some_and(|r| !r.trim().is_empty()) {
            return Err(PayloadError::Unsupported(
                "native step-runner steps (`run:`) are not supported".into(),
            ));
        }
        if let Some(secrets) = &self.secrets {
            if secrets.as_object().is_some_and(|m| !m.is_empty()) {
                return Err(PayloadError::Unsupported(
                    "external secrets (`secrets:`) are not supported".into(),
                ));
            }
        }
        if let Some(image) = &self.image {
            image.check_executor_opts("image")?;
        }
        for service in &self.services {
            service.check_executor_opts("service")?;
        }
        Ok(())
    }

    /// The job timeout in seconds (`runner_info.timeout`; 7200 when unset, as GitLab Runner).
    pub fn timeout_secs(&self) -> u64 {
        if self.runner_info.timeout > 0 {
            // Clamped so that a deadline from it never overflows.
            crate::time::secs(self.runner_info.timeout.unsigned_abs()).as_secs()
        } else {
            7200
        }
    }

    /// The steps named `script`, `release`, … in order (everything but `after_script`).
    pub fn user_steps(&self) -> impl Iterator<Item = &Step> {
        self.steps.iter().filter(|s| s.name != "after_script")
    }

    /// The `after_script` step, if the job has one with lines in it.
    pub fn after_script(&self) -> Option<&Step> {
        self.steps
            .iter()
            .find(|s| s.name == "after_script" && !s.script.is_empty())
    }
}

/// `job_info`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct JobInfo {
    #[serde(deserialize_with = "null_default")]
    pub name: String,
    #[serde(deserialize_with = "null_default")]
    pub stage: String,
    #[serde(deserialize_with = "lenient_i64")]
    pub project_id: i64,
    #[serde(deserialize_with = "null_default")]
    pub project_name: String,
    #[serde(deserialize_with = "null_default")]
    pub project_full_path: String,
    #[serde(deserialize_with = "lenient_i64")]
    pub pipeline_id: i64,
    /// Seconds the job waited in GitLab's queue; `None` when not sent.
    #[serde(deserialize_with = "lenient_opt_f64")]
    pub time_in_queue_seconds: Option<f64>,
    /// Pending jobs this runner could take, as GitLab counted when it handed this one out.
    #[serde(deserialize_with = "lenient_opt_i64")]
    pub queue_size: Option<i64>,
    /// How deep in that queue this job was.
    #[serde(deserialize_with = "lenient_opt_i64")]
    pub queue_depth: Option<i64>,
    /// The project's jobs running on instance runners (`"3+"` reads as 3).
    #[serde(
        rename = "project_jobs_running_on_instance_runners_count",
        deserialize_with = "count_or_more"
    )]
    pub project_jobs_running: Option<u64>,
    /// The job's page, `<repository URL without credentials and .git>/-/jobs/<id>` (GitLab
    /// Runner's `JobURL`), from the payload's `git_info.repo_url` and `id`; empty without them.
    #[serde(skip)]
    pub job_url: String,
}

impl JobInfo {
    /// The `job_info` of a raw payload, read leniently and never failing: what is missing or
    /// unreadable stays at its default. Read once when a job arrives, before (and whether or
    /// not) the whole payload parses.
    pub fn from_payload(payload: &serde_json::Value) -> JobInfo {
        let mut info: JobInfo = payload
            .get("job_info")
            .and_then(|info| JobInfo::deserialize(info).ok())
            .unwrap_or_default();
        let repo = payload
            .pointer("/git_info/repo_url")
            .and_then(|u| u.as_str());
        if let (Some(repo), Some(id)) = (repo, payload.get("id").and_then(|i| i.as_i64())) {
            let clean = crate::redact::url(repo);
            info.job_url = format!("{}/-/jobs/{id}", clean.trim_end_matches(".git"));
        }
        info
    }

    /// The backlog GitLab reported with the job: `queue_size` (pending jobs this runner could
    /// take when the job was handed out, this one included), less the job itself.
    pub fn backlog(&self) -> u64 {
        self.queue_size
            .and_then(|n| u64::try_from(n).ok())
            .unwrap_or(0)
            .saturating_sub(1)
    }
}

/// `git_info`. Its `Debug` shows the clone URL without its credentials.
#[derive(Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct GitInfo {
    /// The clone URL; carries the job token as `gitlab-ci-token:<token>@` (secret).
    #[serde(deserialize_with = "null_default")]
    pub repo_url: String,
    #[serde(deserialize_with = "null_default")]
    pub repo_object_format: String,
    #[serde(rename = "ref", deserialize_with = "null_default")]
    pub git_ref: String,
    #[serde(deserialize_with = "null_default")]
    pub sha: String,
    #[serde(deserialize_with = "null_default")]
    pub before_sha: String,
    #[serde(deserialize_with = "null_default")]
    pub ref_type: String,
    #[serde(deserialize_with = "null_default")]
    pub refspecs: Vec<String>,
    #[serde(deserialize_with = "lenient_i64")]
    pub depth: i64,
    #[serde(deserialize_with = "null_default")]
    pub protected: Option<bool>,
}

impl std::fmt::Debug for GitInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitInfo")
            .field("repo_url", &crate::redact::url(&self.repo_url))
            .field("ref", &self.git_ref)
            .field("sha", &self.sha)
            .field("ref_type", &self.ref_type)
            .field("depth", &self.depth)
            .finish_non_exhaustive()
    }
}

/// `runner_info`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct RunnerInfo {
    /// The job timeout in seconds.
    #[serde(deserialize_with = "lenient_i64")]
    pub timeout: i64,
}

/// When a step runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepWhen {
    #[default]
    OnSuccess,
    OnFailure,
    Always,
}

/// One of `steps`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct Step {
    #[serde(deserialize_with = "null_default")]
    pub name: String,
    #[serde(deserialize_with = "null_default")]
    pub script: Vec<String>,
    #[serde(deserialize_with = "lenient_i64")]
    pub timeout: i64,
    #[serde(deserialize_with = "null_default")]
    pub when: StepWhen,
    #[serde(deserialize_with = "null_default")]
    pub allow_failure: bool,
}

/// A port a service exposes.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct Port {
    #[serde(deserialize_with = "lenient_i64")]
    pub number: i64,
    #[serde(deserialize_with = "null_default")]
    pub protocol: String,
    #[serde(deserialize_with = "null_default")]
    pub name: String,
}

/// The job `image`, or one of `services`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct Image {
    #[serde(deserialize_with = "null_default")]
    pub name: String,
    /// One alias, or several separated by commas or spaces (services).
    #[serde(deserialize_with = "null_default")]
    pub alias: String,
    #[serde(deserialize_with = "string_or_vec")]
    pub command: Vec<String>,
    #[serde(deserialize_with = "string_or_vec")]
    pub entrypoint: Vec<String>,
    #[serde(deserialize_with = "null_default")]
    pub ports: Vec<Port>,
    #[serde(deserialize_with = "null_default")]
    pub variables: Vec<JobVariable>,
    #[serde(deserialize_with = "string_or_vec")]
    pub pull_policy: Vec<String>,
    #[serde(deserialize_with = "null_default")]
    pub executor_opts: serde_json::Value,
}

impl Image {
    /// The aliases of a service, split as GitLab Runner splits them.
    pub fn aliases(&self) -> Vec<String> {
        self.alias
            .split([',', ' '])
            .filter(|a| !a.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// `executor_opts.docker.platform`.
    pub fn docker_platform(&self) -> Option<String> {
        self.executor_opts
            .pointer("/docker/platform")
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    }

    /// `executor_opts.docker.user` (string or integer).
    pub fn docker_user(&self) -> Option<String> {
        let v = self.executor_opts.pointer("/docker/user")?;
        string_or_int(v.clone()).ok().flatten()
    }

    /// Unknown `executor_opts` keys fail the job, as in GitLab Runner.
    fn check_executor_opts(&self, what: &str) -> Result<(), PayloadError> {
        let Some(opts) = self.executor_opts.as_object() else {
            return Ok(());
        };
        for (executor, inner) in opts {
            let known: &[&str] = match executor.as_str() {
                "docker" => &["platform", "user"],
                "kubernetes" => &["user"],
                _ => {
                    return Err(PayloadError::Unsupported(format!(
                        "{what} {:?}: unknown executor_opts section {executor:?}",
                        self.name
                    )))
                }
            };
            if let Some(fields) = inner.as_object() {
                if let Some(bad) = fields.keys().find(|k| !known.contains(&k.as_str())) {
                    return Err(PayloadError::Unsupported(format!(
                        "{what} {:?}: unsupported executor_opts.{executor}.{bad}",
                        self.name
                    )));
                }
            }
        }
        Ok(())
    }
}

/// One of `artifacts`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct Artifact {
    #[serde(deserialize_with = "null_default")]
    pub name: String,
    #[serde(deserialize_with = "null_default")]
    pub untracked: bool,
    #[serde(deserialize_with = "null_default")]
    pub paths: Vec<String>,
    #[serde(deserialize_with = "null_default")]
    pub exclude: Vec<String>,
    #[serde(deserialize_with = "null_default")]
    pub when: String,
    #[serde(deserialize_with = "null_default")]
    pub artifact_type: String,
    #[serde(deserialize_with = "null_default")]
    pub artifact_format: String,
    #[serde(deserialize_with = "null_default")]
    pub expire_in: String,
}

/// One of `cache`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct Cache {
    #[serde(deserialize_with = "null_default")]
    pub key: String,
    #[serde(deserialize_with = "null_default")]
    pub untracked: bool,
    #[serde(deserialize_with = "null_default")]
    pub policy: String,
    #[serde(deserialize_with = "null_default")]
    pub paths: Vec<String>,
    #[serde(deserialize_with = "null_default")]
    pub when: String,
    #[serde(deserialize_with = "null_default")]
    pub fallback_keys: Vec<String>,
}

/// One of `credentials`. Its `Debug` hides the password.
#[derive(Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct Credential {
    #[serde(rename = "type", deserialize_with = "null_default")]
    pub kind: String,
    #[serde(deserialize_with = "null_default")]
    pub url: String,
    #[serde(deserialize_with = "null_default")]
    pub username: String,
    #[serde(deserialize_with = "null_default")]
    pub password: String,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("kind", &self.kind)
            .field("url", &self.url)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// `dependencies[].artifacts_file`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct ArtifactsFile {
    #[serde(deserialize_with = "null_default")]
    pub filename: String,
    #[serde(deserialize_with = "lenient_i64")]
    pub size: i64,
}

/// One of `dependencies`.
#[derive(Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct Dependency {
    #[serde(deserialize_with = "lenient_i64")]
    pub id: i64,
    #[serde(deserialize_with = "null_default")]
    pub token: String,
    #[serde(deserialize_with = "null_default")]
    pub name: String,
    #[serde(deserialize_with = "null_default")]
    pub artifacts_file: Option<ArtifactsFile>,
}

/// The token is a secret: `Debug` shows the id and name only.
impl std::fmt::Debug for Dependency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dependency")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("artifacts_file", &self.artifacts_file)
            .finish_non_exhaustive()
    }
}

/// `features` of the job (what GitLab tells the runner about this job).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct JobFeatures {
    #[serde(deserialize_with = "null_default")]
    pub trace_sections: bool,
    #[serde(deserialize_with = "null_default")]
    pub token_mask_prefixes: Vec<String>,
    #[serde(deserialize_with = "null_default")]
    pub failure_reasons: Vec<String>,
}

/// One of `hooks`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct Hook {
    #[serde(deserialize_with = "null_default")]
    pub name: String,
    #[serde(deserialize_with = "null_default")]
    pub script: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> serde_json::Value {
        let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
    }

    #[test]
    fn a_huge_job_timeout_is_clamped() {
        let job = JobPayload::parse(serde_json::json!({
            "id": 1, "token": "t", "runner_info": {"timeout": i64::MAX},
        }))
        .unwrap();
        assert_eq!(job.timeout_secs(), crate::time::FAR_FUTURE.as_secs());
        let _ = crate::time::deadline_after(std::time::Duration::from_secs(job.timeout_secs()));
    }

    #[test]
    fn the_full_upstream_fixture_parses() {
        let job = JobPayload::parse(fixture("job_response_full_valid.json")).unwrap();
        assert_eq!(job.id, 10);
        assert_eq!(job.token, "job-token");
        assert_eq!(job.git_info.git_ref, "main");
        assert_eq!(job.timeout_secs(), 3600);
        assert_eq!(job.steps.len(), 2);
        assert_eq!(job.after_script().unwrap().script, vec!["ls -ls"]);
        let image = job.image.as_ref().unwrap();
        assert_eq!(image.entrypoint, vec!["/bin/sh"]);
        assert_eq!(image.docker_platform().as_deref(), Some("arm64/v8"));
        assert_eq!(job.services[0].aliases(), vec!["db-pg"]);
        assert_eq!(
            job.dependencies[0].artifacts_file.as_ref().unwrap().size,
            13631488
        );
        assert!(job.variables[0].file);
    }

    #[test]
    fn unknown_executor_opts_are_unsupported() {
        let value = fixture("job_response_full_unsupported_executor_opts.json");
        let handle: JobHandle = serde_json::from_value(value.clone()).unwrap();
        assert_eq!(handle.id, 10);
        let err = JobPayload::parse(value).unwrap_err();
        assert!(matches!(err, PayloadError::Unsupported(_)), "{err}");
    }

    #[test]
    fn step_runner_fixtures_decode_and_are_refused() {
        for name in [
            "job_response_run_native_steps_after_validate.json",
            "job_response_run_native_steps_input.json",
            "job_response_run_steps_shim_after_validate.json",
            "job_response_run_steps_shim_input.json",
        ] {
            let mut value = fixture(name);
            value["id"] = 5.into();
            value["token"] = "t".into();
            let job: JobPayload =
                serde_json::from_value(value.clone()).unwrap_or_else(|e| panic!("{name}: {e}"));
            if job.run.is_some() {
                let err = JobPayload::parse(value).unwrap_err();
                assert!(matches!(err, PayloadError::Unsupported(_)), "{name}: {err}");
            }
        }
    }

    #[test]
    fn nulls_strings_and_numbers_in_odd_shapes_are_accepted() {
        let job = JobPayload::parse(serde_json::json!({
            "id": 1, "token": "t", "variables": null, "services": null,
            "image": {"name": "alpine", "entrypoint": null, "command": "sleep 1",
                      "pull_policy": "if-not-present", "executor_opts": {"docker": {"user": 1000}}},
            "job_info": {"project_id": "77", "queue_size": 3, "unknown": true},
            "runner_info": {"timeout": null},
            "something_new": {"x": 1}
        }))
        .unwrap();
        let image = job.image.clone().unwrap();
        assert!(image.entrypoint.is_empty());
        assert_eq!(image.command, vec!["sleep 1"]);
        assert_eq!(image.pull_policy, vec!["if-not-present"]);
        assert_eq!(image.docker_user().as_deref(), Some("1000"));
        assert_eq!(job.job_info.project_id, 77);
        assert_eq!(job.timeout_secs(), 7200);
    }

    #[test]
    fn debug_shows_no_secret() {
        let job = JobPayload::parse(fixture("job_response_full_valid.json")).unwrap();
        let handle: JobHandle =
            serde_json::from_value(fixture("job_response_full_valid.json")).unwrap();
        let mut job = job;
        job.git_info.repo_url =
            "https://gitlab-ci-token:job-token@gitlab.example.com/g/p.git".into();
        job.dependencies[0].token = "job-token".into();
        for text in [
            format!("{job:?}"),
            format!("{handle:?}"),
            format!("{:?}", job.credentials),
            format!("{:?}", job.git_info),
            format!("{:?}", job.dependencies),
        ] {
            assert!(!text.contains("job-token"), "{text}");
            assert!(!text.contains("testTokenHere1234"), "{text}");
        }
    }

    #[test]
    fn a_payload_of_the_wrong_shape_is_a_decode_error() {
        let err = JobPayload::parse(serde_json::json!({"id": 1, "token": "t", "steps": "x"}));
        assert!(matches!(err, Err(PayloadError::Decode { .. })));
    }

    #[test]
    fn a_decode_error_names_the_field_but_never_the_value() {
        let cases = [
            (
                serde_json::json!({"id": 1, "token": "t", "variables": [
                    {"key": "A", "value": "ok"},
                    {"key": "PASS", "value": "hunter2-secret", "masked": "hunter2-secret"},
                ]}),
                "variables[1].masked",
            ),
            (
                serde_json::json!({"id": 1, "token": "t", "variables": [{"key": 5, "value": 7}]}),
                "variables[0].key",
            ),
            (
                serde_json::json!({"id": 1, "token": "t", "steps": {"hunter2-secret": 1}}),
                "steps",
            ),
        ];
        for (payload, path) in cases {
            let err = JobPayload::parse(payload).unwrap_err().to_string();
            assert!(!err.contains("hunter2"), "{err}");
            assert!(
                err.contains(&format!("wrong type or value at `{path}`")),
                "{err}"
            );
        }
    }

    #[test]
    fn job_info_is_read_leniently_from_a_raw_payload() {
        use serde_json::json;
        let info = JobInfo::from_payload(&json!({"job_info": {
            "time_in_queue_seconds": 4.5, "queue_size": 3, "queue_depth": "x",
            "project_jobs_running_on_instance_runners_count": "3+", "project_id": "12"
        }}));
        assert_eq!(info.time_in_queue_seconds, Some(4.5));
        assert_eq!(info.queue_size, Some(3));
        assert_eq!(info.queue_depth, None);
        assert_eq!(info.project_jobs_running, Some(3));
        assert_eq!(info.project_id, 12);
        assert_eq!(info.backlog(), 2);
        let table = [
            json!({}),
            json!({"job_info": null}),
            json!({"job_info": "not an object"}),
            json!({"job_info": {"queue_size": -4, "time_in_queue_seconds": null}}),
        ];
        for payload in table {
            let info = JobInfo::from_payload(&payload);
            assert_eq!(info.time_in_queue_seconds, None, "{payload}");
            assert_eq!(info.backlog(), 0, "{payload}");
        }
    }
}
