//! The artifacts stages' scripts (GitLab Runner's `writeDownloadArtifactsScript` and
//! `writeUploadArtifacts` in `shells/abstract.go`): `download_artifacts` calls the helper's
//! `artifacts-downloader` once per dependency that has an `artifacts_file`;
//! `upload_artifacts_on_success` / `_on_failure` call `artifacts-uploader` once per artifact
//! whose `when` fits. Pure text building; the stages run these lines in the helper container.
//!
//! Tokens never appear in the lines: the script's variables carry them (masked), and each
//! command gets its token through the environment variable the helper reads
//! ([`crate::helper_commands::contract::TOKEN_ENV`]). Paths, exclusions and names are expanded here
//! with the job's variables, as GitLab Runner's helper expands them from its environment.
//! The helper reaches GitLab at the runner's configured `url` (else `CI_SERVER_URL`).

use super::ctx::{Ended, JobCtx};
use super::script::quote;
use crate::helper_commands::contract::{HELPER_BIN, TOKEN_ENV};
use crate::job::{Artifact, JobPayload, JobVariable, Variables};

/// The stage that fetches dependencies' artifacts.
const DOWNLOAD_STAGE: &str = "download_artifacts";

/// Variable holding the job's own token for the uploader.
const UPLOAD_TOKEN_VAR: &str = TOKEN_ENV;

/// What a helper stage runs: its lines and the variables they need beyond the job's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ArtifactsScript {
    /// Shell lines, run in order in the project directory; the first failing one fails the stage.
    pub lines: Vec<String>,
    /// Masked variables to add to the job's for this stage (tokens).
    pub variables: Vec<JobVariable>,
}

impl ArtifactsScript {
    /// The job's variables plus this script's own.
    pub(super) fn variables_with(&self, job: &Variables) -> Variables {
        let mut vars = job.clone();
        for v in &self.variables {
            vars.push(v.clone());
        }
        vars
    }
}

/// A green notice line, as GitLab Runner's `Noticef` prints it.
fn notice(text: &str) -> String {
    format!(
        "printf '%s\\n' {}",
        quote(&format!("\x1b[32;1m{text}\x1b[0;m"))
    )
}

fn masked(key: &str, value: &str) -> JobVariable {
    let mut var = JobVariable::plain(key, value);
    var.masked = true;
    var.public = false;
    var.raw = true;
    var
}

/// `download_artifacts`: one download per dependency with an `artifacts_file`; `None` when
/// there is none (the stage starts no container).
pub(super) fn download_script(job: &JobPayload, server_url: &str) -> Option<ArtifactsScript> {
    let mut script = ArtifactsScript {
        lines: Vec::new(),
        variables: Vec::new(),
    };
    for (index, dep) in job.dependencies.iter().enumerate() {
        let has_file = dep
            .artifacts_file
            .as_ref()
            .is_some_and(|f| !f.filename.is_empty());
        if !has_file {
            continue;
        }
        let token_var = format!("FLOTILLA_DEPENDENCY_TOKEN_{index}");
        script.variables.push(masked(&token_var, &dep.token));
        script.lines.push(notice(&format!(
            "Downloading artifacts for {} ({})...",
            dep.name, dep.id
        )));
        script.lines.push(format!(
            "{TOKEN_ENV}=\"${token_var}\" {HELPER_BIN} helper artifacts-downloader --url {} --id {}",
            quote(server_url),
            dep.id
        ));
    }
    (!script.lines.is_empty()).then_some(script)
}

/// Whether `artifact` is uploaded when the job succeeded (`on_success`) or failed.
fn uploads_when(artifact: &Artifact, on_success: bool) -> bool {
    match artifact.when.as_str() {
        "always" => true,
        "on_failure" => !on_success,
        // "", "on_success" and anything unknown: GitLab Runner's default.
        _ => on_success,
    }
}

/// `upload_artifacts_on_success` / `_on_failure`: one upload per artifact whose `when` fits
/// and that names something to archive; `None` when there is none.
pub(super) fn upload_script(
    job: &JobPayload,
    vars: &Variables,
    server_url: &str,
    on_success: bool,
) -> Option<ArtifactsScript> {
    let mut lines = Vec::new();
    for artifact in job.artifacts.iter().filter(|a| uploads_when(a, on_success)) {
        if let Some(line) = upload_line(job.id, artifact, vars, server_url) {
            lines.push(notice("Uploading artifacts..."));
            lines.push(line);
        }
    }
    if lines.is_empty() {
        return None;
    }
    Some(ArtifactsScript {
        lines,
        variables: vec![masked(UPLOAD_TOKEN_VAR, &job.token)],
    })
}

/// The uploader command for one artifact, `None` when it selects nothing (no path, exclusion
/// or `untracked`), as GitLab Runner skips it.
fn upload_line(
    job_id: i64,
    artifact: &Artifact,
    vars: &Variables,
    server_url: &str,
) -> Option<String> {
    let mut selection = Vec::new();
    for path in &artifact.paths {
        selection.push(format!("--path {}", quote(&vars.expand(path))));
    }
    for path in &artifact.exclude {
        selection.push(format!("--exclude {}", quote(&vars.expand(path))));
    }
    if artifact.untracked {
        selection.push("--untracked".into());
    }
    if selection.is_empty() {
        return None;
    }
    let mut line = format!(
        "{HELPER_BIN} helper artifacts-uploader --url {} --id {job_id} {}",
        quote(server_url),
        selection.join(" ")
    );
    let optional = [
        ("--name", vars.expand(&artifact.name)),
        ("--expire-in", artifact.expire_in.clone()),
        ("--artifact-format", artifact.artifact_format.clone()),
        ("--artifact-type", artifact.artifact_type.clone()),
    ];
    for (flag, value) in optional {
        if !value.is_empty() {
            line.push_str(&format!(" {flag} {}", quote(&value)));
        }
    }
    Some(line)
}

/// Where the helper reaches GitLab: the runner's configured `url` (as GitLab Runner's
/// `--url`), else `CI_SERVER_URL`; `None` when neither is set (stages are skipped, as GitLab
/// Runner skips them without a URL).
fn server_url(coordinator_url: &str, vars: &Variables) -> Option<String> {
    Some(coordinator_url.trim())
        .filter(|u| !u.is_empty())
        .map(str::to_string)
        .or_else(|| vars.expanded("CI_SERVER_URL"))
        .filter(|u| !u.trim().is_empty())
}

/// `ARTIFACT_DOWNLOAD_ATTEMPTS`, clamped to 1..=10 as GitLab Runner does (default 1).
fn download_attempts(vars: &Variables) -> u32 {
    vars.expanded("ARTIFACT_DOWNLOAD_ATTEMPTS")
        .and_then(|v| v.trim().parse::<i64>().ok())
        .map_or(1, |n| n.clamp(1, 10) as u32)
}

/// Runs `download_artifacts` in the helper container when a dependency has artifacts; each of
/// `ARTIFACT_DOWNLOAD_ATTEMPTS` attempts is its own section. A failure ends the job's way to its
/// script (GitLab Runner fails the job with the helper's exit code).
pub(super) async fn download_stage(ctx: &JobCtx<'_>) -> Result<(), Ended> {
    let vars = &ctx.run.variables;
    let Some(url) = server_url(&ctx.run.coordinator_url, vars) else {
        return Ok(());
    };
    let Some(script) = download_script(&ctx.run.job, &url) else {
        return Ok(());
    };
    let stage_vars = script.variables_with(vars);
    let mut result = Ok(());
    for _ in 0..download_attempts(vars) {
        result = ctx
            .helper_section(
                DOWNLOAD_STAGE,
                ctx.run_helper_stage(DOWNLOAD_STAGE, &script.lines, &stage_vars),
            )
            .await;
        if !matches!(result, Err(Ended::Failed(_))) {
            break;
        }
    }
    result
}

/// Runs `upload_artifacts_on_success` (the job succeeded) or `upload_artifacts_on_failure` when
/// an artifact's `when` fits.
pub(super) async fn upload_stage(ctx: &JobCtx<'_>, job_succeeded: bool) -> Result<(), Ended> {
    let vars = &ctx.run.variables;
    let Some(url) = server_url(&ctx.run.coordinator_url, vars) else {
        return Ok(());
    };
    let Some(script) = upload_script(&ctx.run.job, vars, &url, job_succeeded) else {
        return Ok(());
    };
    let name = if job_succeeded {
        "upload_artifacts_on_success"
    } else {
        "upload_artifacts_on_failure"
    };
    let stage_vars = script.variables_with(vars);
    ctx.after_job_section(name, ctx.run_helper_stage(name, &script.lines, &stage_vars))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{ArtifactsFile, Dependency};

    const URL: &str = "https://gitlab.example.com/";

    fn job() -> JobPayload {
        JobPayload {
            id: 7,
            token: "glcbt-SECRETjob".into(),
            ..JobPayload::default()
        }
    }

    fn artifact(when: &str, paths: &[&str]) -> Artifact {
        Artifact {
            name: "artifacts".into(),
            paths: paths.iter().map(|p| p.to_string()).collect(),
            when: when.into(),
            artifact_type: "archive".into(),
            artifact_format: "zip".into(),
            ..Artifact::default()
        }
    }

    #[test]
    fn downloads_only_dependencies_with_a_file_and_keeps_tokens_out_of_lines() {
        let mut job = job();
        let dep = |id, name: &str, file: Option<&str>| Dependency {
            id,
            token: format!("glcbt-SECRETdep{id}"),
            name: name.into(),
            artifacts_file: file.map(|f| ArtifactsFile {
                filename: f.into(),
                size: 10,
            }),
        };
        job.dependencies = vec![
            dep(3, "build", Some("artifacts.zip")),
            dep(4, "lint", None),
            dep(5, "docs", Some("")),
            dep(6, "pack", Some("artifacts.zip")),
        ];
        let script = download_script(&job, URL).expect("two downloads");
        let text = script.lines.join("\n");
        assert!(!text.contains("SECRET"), "{text}");
        assert!(
            text.contains("Downloading artifacts for build (3)..."),
            "{text}"
        );
        assert!(
            text.contains(
                "FLOTILLA_JOB_TOKEN=\"$FLOTILLA_DEPENDENCY_TOKEN_0\" flotilla helper \
             artifacts-downloader --url 'https://gitlab.example.com/' --id 3"
            ),
            "{text}"
        );
        assert!(text.contains("$FLOTILLA_DEPENDENCY_TOKEN_3\" flotilla helper artifacts-downloader --url 'https://gitlab.example.com/' --id 6"), "{text}");
        assert!(
            !text.contains("--id 4") && !text.contains("--id 5"),
            "{text}"
        );
        assert_eq!(script.variables.len(), 2);
        assert!(script.variables.iter().all(|v| v.masked));
        assert_eq!(script.variables[0].value, "glcbt-SECRETdep3");
        job.dependencies.truncate(0);
        assert_eq!(
            download_script(&job, URL),
            None,
            "no container without work"
        );
    }

    #[test]
    fn attempts_are_clamped_and_a_missing_server_url_skips() {
        let with = |key: &str, value: &str| Variables::new(vec![JobVariable::plain(key, value)]);
        assert_eq!(download_attempts(&Variables::default()), 1);
        assert_eq!(
            download_attempts(&with("ARTIFACT_DOWNLOAD_ATTEMPTS", "3")),
            3
        );
        assert_eq!(
            download_attempts(&with("ARTIFACT_DOWNLOAD_ATTEMPTS", "0")),
            1
        );
        assert_eq!(
            download_attempts(&with("ARTIFACT_DOWNLOAD_ATTEMPTS", "99")),
            10
        );
        assert_eq!(
            download_attempts(&with("ARTIFACT_DOWNLOAD_ATTEMPTS", "x")),
            1
        );
        assert_eq!(server_url("", &with("CI_SERVER_URL", " ")), None);
        assert_eq!(
            server_url("", &with("CI_SERVER_URL", URL)).as_deref(),
            Some(URL)
        );
        // The runner's configured url wins, as GitLab Runner's `--url`.
        assert_eq!(
            server_url("http://gitlab.internal:8080/", &with("CI_SERVER_URL", URL)).as_deref(),
            Some("http://gitlab.internal:8080/")
        );
    }

    #[test]
    fn uploads_honour_when_and_skip_empty_selections() {
        let mut job = job();
        job.artifacts = vec![
            artifact("on_success", &["dist/"]),
            artifact("on_failure", &["logs/"]),
            artifact("always", &["report.txt"]),
            artifact("", &[]),
        ];
        let vars = Variables::default();
        let success = upload_script(&job, &vars, URL, true)
            .unwrap()
            .lines
            .join("\n");
        assert!(success.contains("--path 'dist/'"), "{success}");
        assert!(success.contains("--path 'report.txt'"), "{success}");
        assert!(!success.contains("logs/"), "{success}");
        let failure = upload_script(&job, &vars, URL, false)
            .unwrap()
            .lines
            .join("\n");
        assert!(failure.contains("--path 'logs/'"), "{failure}");
        assert!(failure.contains("--path 'report.txt'"), "{failure}");
        assert!(!failure.contains("dist/"), "{failure}");

        job.artifacts = vec![artifact("on_failure", &["logs/"])];
        assert_eq!(upload_script(&job, &vars, URL, true), None);
    }

    #[test]
    fn upload_lines_expand_variables_and_carry_every_flag() {
        let mut job = job();
        let mut a = artifact("on_success", &["out/$TARGET/**"]);
        a.exclude = vec!["out/$TARGET/*.log".into()];
        a.untracked = true;
        a.name = "bin-$TARGET".into();
        a.expire_in = "1 week".into();
        let mut junit = artifact("always", &["rspec.xml"]);
        junit.name = "junit".into();
        junit.artifact_type = "junit".into();
        junit.artifact_format = "gzip".into();
        job.artifacts = vec![a, junit];
        let vars = Variables::new(vec![JobVariable::plain("TARGET", "x86")]);
        let script = upload_script(&job, &vars, URL, true).unwrap();
        let text = script.lines.join("\n");
        assert!(
            text.contains(
                "flotilla helper artifacts-uploader --url 'https://gitlab.example.com/' --id 7 \
             --path 'out/x86/**' --exclude 'out/x86/*.log' --untracked --name 'bin-x86' \
             --expire-in '1 week' --artifact-format 'zip' --artifact-type 'archive'"
            ),
            "{text}"
        );
        assert!(text.contains(
            "--path 'rspec.xml' --name 'junit' --artifact-format 'gzip' --artifact-type 'junit'"
        ), "{text}");
        assert!(!text.contains("SECRET"), "{text}");
        assert_eq!(
            script.variables,
            vec![masked("FLOTILLA_JOB_TOKEN", "glcbt-SECRETjob")]
        );
        let all = script.variables_with(&vars);
        assert_eq!(
            all.expanded("FLOTILLA_JOB_TOKEN").as_deref(),
            Some("glcbt-SECRETjob")
        );
    }
}
