//! Job payloads of the fake GitLab: filling in what Rails would send with every job (ids,
//! token, `job_info`, `git_info`, `runner_info`, predefined variables, `features`), and the
//! runner-feature check that fails a job as `runner_unsupported` instead of handing it to a
//! runner that did not advertise what it needs. Pure functions over `serde_json::Value`; no
//! locking or HTTP here.

use serde_json::{json, Map, Value};

/// Which runner features a job is checked against before hand-out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FeatureCheck {
    /// Only what GitLab itself checks (`Ci::Build::RUNNER_FEATURES` and EE's `vault_secrets`):
    /// `upload_multiple_artifacts` (artifact reports), `refspecs` (merge-request refs),
    /// `artifacts_exclude`, `multi_build_steps` (a `release` step), `fallback_cache_keys`,
    /// `vault_secrets` (secrets), plus `return_exit_code` and anything listed in the fake-only
    /// `_requires` key (exit codes are not visible in the payload).
    GitLab,
    /// GitLab's checks plus the capabilities the payload visibly uses: `image`, `services`,
    /// `artifacts`, `cache`, `variables`, `masking` (a masked variable), `raw_variables`,
    /// `image_executor_opts`, `service_executor_opts`, `service_variables`, `job_inputs`.
    /// Catches a runner that advertises less (or more) than it should. The default.
    #[default]
    Strict,
}

/// Failure reasons sent in `features.failure_reasons` when the job does not set them
/// (GitLab sends every `CommitStatus` failure reason; this is the subset a runner may use).
pub const DEFAULT_FAILURE_REASONS: [&str; 10] = [
    "unknown_failure",
    "script_failure",
    "api_failure",
    "stuck_or_timeout_failure",
    "runner_system_failure",
    "missing_dependency_failure",
    "runner_unsupported",
    "job_execution_timeout",
    "archived_failure",
    "trace_size_exceeded",
];

/// Inserts `value` under `key` unless the object already has it.
fn fill(obj: &mut Map<String, Value>, key: &str, value: Value) {
    obj.entry(key.to_owned()).or_insert(value);
}

/// The object under `key`, created (or replaced when not an object) if needed.
fn object<'a>(obj: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    let slot = obj
        .entry(key.to_owned())
        .or_insert_with(|| Value::Object(Map::new()));
    if !slot.is_object() {
        *slot = Value::Object(Map::new());
    }
    match slot {
        Value::Object(map) => map,
        _ => unreachable!("just made an object"),
    }
}

/// What [`complete_job`] needs to know besides the payload.
pub(crate) struct JobDefaults<'a> {
    pub id: i64,
    pub token: &'a str,
    /// CI_SERVER_URL (and the base of the default repo URL).
    pub server_url: &'a str,
}

/// Fills `id`, `token` and every standard field the payload lacks (a dependency's missing
/// `token` becomes this job's, as current GitLab sends it); returns the payload and the
/// features listed in the fake-only `_requires` key (removed from the payload).
pub(crate) fn complete_job(job: Value, d: &JobDefaults<'_>) -> (Value, Vec<String>) {
    let mut obj = match job {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    let requires = match obj.remove("_requires") {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    };
    obj.insert("id".into(), json!(d.id));
    obj.insert("token".into(), json!(d.token));
    fill(&mut obj, "allow_git_fetch", json!(true));

    let pipeline_id = 1000 + d.id;
    let info = object(&mut obj, "job_info");
    fill(info, "id", json!(d.id));
    fill(info, "name", json!("test"));
    fill(info, "stage", json!("test"));
    fill(info, "pipeline_id", json!(pipeline_id));
    fill(info, "project_id", json!(1));
    fill(info, "project_name", json!("project"));
    fill(info, "project_full_path", json!("group/project"));
    fill(info, "namespace_id", json!(1));
    fill(info, "root_namespace_id", json!(1));
    fill(info, "organization_id", json!(1));
    fill(info, "instance_id", json!("fake-instance"));
    fill(
        info,
        "instance_uuid",
        json!("00000000-0000-4000-8000-000000000000"),
    );
    fill(info, "user_id", json!(1));
    fill(info, "time_in_queue_seconds", json!(0.0));
    fill(
        info,
        "project_jobs_running_on_instance_runners_count",
        json!("+Inf"),
    );
    fill(info, "queue_size", json!(0));
    fill(info, "queue_depth", json!(0));

    // GitLab's clone URL names the project's full path.
    let project_path = info["project_full_path"]
        .as_str()
        .unwrap_or("group/project")
        .to_owned();
    let base = d.server_url.trim_end_matches('/');
    let repo_url = match base.split_once("://") {
        Some((scheme, rest)) => {
            format!(
                "{scheme}://gitlab-ci-token:{}@{rest}/{project_path}.git",
                d.token
            )
        }
        None => format!("{base}/{project_path}.git"),
    };
    let git = object(&mut obj, "git_info");
    fill(git, "repo_url", json!(repo_url));
    fill(git, "repo_object_format", json!("sha1"));
    fill(git, "ref", json!("main"));
    fill(
        git,
        "sha",
        json!("0123456789abcdef0123456789abcdef01234567"),
    );
    fill(
        git,
        "before_sha",
        json!("0000000000000000000000000000000000000000"),
    );
    fill(git, "ref_type", json!("branch"));
    fill(
        git,
        "refspecs",
        json!([
            format!("+refs/pipelines/{pipeline_id}:refs/pipelines/{pipeline_id}"),
            "+refs/heads/main:refs/remotes/origin/main"
        ]),
    );
    fill(git, "depth", json!(20));
    fill(git, "protected", json!(false));

    let runner = object(&mut obj, "runner_info");
    fill(runner, "timeout", json!(3600));
    fill(runner, "runner_session_url", Value::Null);

    let features = object(&mut obj, "features");
    fill(features, "trace_sections", json!(true));
    fill(features, "failure_reasons", json!(DEFAULT_FAILURE_REASONS));
    fill(features, "token_mask_prefixes", json!([]));

    fill(
        &mut obj,
        "steps",
        json!([{
            "name": "script", "script": ["echo hello"], "timeout": 3600,
            "when": "on_success", "allow_failure": false
        }]),
    );
    for key in ["services", "cache", "credentials", "dependencies"] {
        fill(&mut obj, key, json!([]));
    }
    // Current GitLab sends the consuming job's own token in `dependencies[].token`; a test names
    // only `id`, `name` and `artifacts_file`.
    if let Some(Value::Array(deps)) = obj.get_mut("dependencies") {
        for dep in deps.iter_mut().filter_map(Value::as_object_mut) {
            fill(dep, "token", json!(d.token));
        }
    }
    complete_variables(&mut obj, d);
    (Value::Object(obj), requires)
}

/// Prepends CI_JOB_ID, CI_JOB_TOKEN (masked) and CI_SERVER_URL unless the job defines them.
fn complete_variables(obj: &mut Map<String, Value>, d: &JobDefaults<'_>) {
    let mut vars = match obj.remove("variables") {
        Some(Value::Array(items)) => items,
        _ => Vec::new(),
    };
    let has = |vars: &[Value], key: &str| vars.iter().any(|v| v["key"] == key);
    let mut predefined = Vec::new();
    let defaults = [
        ("CI_JOB_ID", d.id.to_string(), true, false),
        ("CI_JOB_TOKEN", d.token.to_owned(), false, true),
        ("CI_SERVER_URL", d.server_url.to_owned(), true, false),
    ];
    for (key, value, public, masked) in defaults {
        if !has(&vars, key) {
            predefined
                .push(json!({"key": key, "value": value, "public": public, "masked": masked}));
        }
    }
    predefined.append(&mut vars);
    obj.insert("variables".into(), Value::Array(predefined));
}

fn non_empty(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        Value::String(s) => !s.is_empty(),
        _ => true,
    }
}

fn items(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or(&[])
}

/// The runner features `job` needs, under `check`, plus the explicit `requires`.
pub(crate) fn required_features(
    job: &Value,
    requires: &[String],
    check: FeatureCheck,
) -> Vec<String> {
    let mut need: Vec<&str> = Vec::new();
    let artifacts = items(&job["artifacts"]);
    let reports = artifacts
        .iter()
        .any(|a| a["artifact_type"].as_str().is_some_and(|t| t != "archive"));
    if reports {
        need.push("upload_multiple_artifacts");
    }
    let git = &job["git_info"];
    let mr_ref = git["ref"]
        .as_str()
        .is_some_and(|r| r.starts_with("refs/merge-requests/"))
        || items(&git["refspecs"]).iter().any(|r| {
            r.as_str()
                .is_some_and(|r| r.contains("refs/merge-requests/"))
        });
    if mr_ref {
        need.push("refspecs");
    }
    if artifacts.iter().any(|a| non_empty(&a["exclude"])) {
        need.push("artifacts_exclude");
    }
    let steps = items(&job["steps"]);
    if steps.iter().any(|s| s["name"] == "release") {
        need.push("multi_build_steps");
    }
    let cache = items(&job["cache"]);
    if cache.iter().any(|c| non_empty(&c["fallback_keys"])) {
        need.push("fallback_cache_keys");
    }
    if non_empty(&job["secrets"]) {
        need.push("vault_secrets");
    }
    if check == FeatureCheck::Strict {
        let image = &job["image"];
        let services = items(&job["services"]);
        let vars = items(&job["variables"]);
        let strict = [
            ("image", non_empty(image)),
            ("image_executor_opts", non_empty(&image["executor_opts"])),
            ("services", !services.is_empty()),
            (
                "service_executor_opts",
                services.iter().any(|s| non_empty(&s["executor_opts"])),
            ),
            (
                "service_variables",
                services.iter().any(|s| non_empty(&s["variables"])),
            ),
            ("artifacts", !artifacts.is_empty()),
            ("cache", !cache.is_empty()),
            ("variables", !vars.is_empty()),
            ("masking", vars.iter().any(|v| v["masked"] == true)),
            ("raw_variables", vars.iter().any(|v| v["raw"] == true)),
            ("job_inputs", non_empty(&job["inputs"])),
        ];
        need.extend(strict.iter().filter(|(_, used)| *used).map(|(f, _)| *f));
    }
    let mut out: Vec<String> = need.into_iter().map(str::to_owned).collect();
    out.extend(requires.iter().cloned());
    out
}

/// The first needed feature the runner's `info.features` does not advertise as true.
pub(crate) fn first_unsupported(needed: &[String], features: &Value) -> Option<String> {
    needed
        .iter()
        .find(|f| features[f.as_str()] != Value::Bool(true))
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> JobDefaults<'static> {
        JobDefaults {
            id: 5,
            token: "glcbt-secret",
            server_url: "http://127.0.0.1:8080",
        }
    }

    #[test]
    fn fills_missing_fields_and_keeps_given_ones() {
        let job = json!({
            "job_info": {"name": "build"},
            "variables": [{"key": "CI_SERVER_URL", "value": "https://other", "public": true}],
            "_requires": ["return_exit_code"]
        });
        let (job, requires) = complete_job(job, &defaults());
        assert_eq!(requires, vec!["return_exit_code".to_owned()]);
        assert!(job.get("_requires").is_none());
        assert_eq!(job["id"], 5);
        assert_eq!(job["token"], "glcbt-secret");
        assert_eq!(job["job_info"]["name"], "build");
        assert_eq!(job["job_info"]["stage"], "test");
        assert_eq!(job["runner_info"]["timeout"], 3600);
        assert_eq!(job["features"]["trace_sections"], true);
        assert_eq!(
            job["git_info"]["repo_url"],
            "http://gitlab-ci-token:glcbt-secret@127.0.0.1:8080/group/project.git"
        );
        let vars = job["variables"].as_array().unwrap();
        let keys: Vec<&str> = vars.iter().map(|v| v["key"].as_str().unwrap()).collect();
        assert_eq!(keys, ["CI_JOB_ID", "CI_JOB_TOKEN", "CI_SERVER_URL"]);
        assert_eq!(vars[1]["masked"], true);
        assert_eq!(
            vars[2]["value"], "https://other",
            "the job's own value wins"
        );
    }

    #[test]
    fn dependencies_get_the_consuming_jobs_token_unless_given() {
        let job = json!({"dependencies": [
            {"id": 1, "name": "build", "artifacts_file": {"filename": "artifacts.zip", "size": 3}},
            {"id": 2, "name": "lint", "token": "glcbt-given"}
        ]});
        let (job, _) = complete_job(job, &defaults());
        assert_eq!(job["dependencies"][0]["token"], "glcbt-secret");
        assert_eq!(job["dependencies"][1]["token"], "glcbt-given");
    }

    #[test]
    fn feature_table_follows_the_payload() {
        let (job, req) = complete_job(
            json!({
                "services": [{"name": "postgres"}],
                "artifacts": [{"name": "a", "paths": ["x"], "exclude": ["x/y"], "artifact_type": "archive"}],
                "steps": [{"name": "release", "script": []}],
            }),
            &defaults(),
        );
        let gitlab = required_features(&job, &req, FeatureCheck::GitLab);
        assert_eq!(gitlab, ["artifacts_exclude", "multi_build_steps"]);
        let strict = required_features(&job, &req, FeatureCheck::Strict);
        for f in [
            "services",
            "artifacts",
            "variables",
            "masking",
            "artifacts_exclude",
        ] {
            assert!(strict.iter().any(|s| s == f), "{f} missing from {strict:?}");
        }
        assert!(
            !strict.iter().any(|s| s == "refspecs"),
            "plain branch refspecs need nothing"
        );
        let features = json!({"services": true, "artifacts": true, "variables": true, "masking": true,
                              "artifacts_exclude": true, "multi_build_steps": false});
        assert_eq!(
            first_unsupported(&strict, &features).as_deref(),
            Some("multi_build_steps")
        );
    }
}
