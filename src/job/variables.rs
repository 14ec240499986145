//! Job variables: the payload's list, the runner-owned `CI_*` ones in GitLab Runner's order
//! (protocol §2.3: the later wins), and `$VAR` expansion.

use super::de::null_default;
use serde::{Deserialize, Serialize};

/// One variable as GitLab sends it (`internal` is runner-only and never on the wire).
#[derive(Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default)]
pub struct JobVariable {
    #[serde(deserialize_with = "null_default")]
    pub key: String,
    #[serde(deserialize_with = "null_default")]
    pub value: String,
    #[serde(deserialize_with = "null_default")]
    pub public: bool,
    #[serde(deserialize_with = "null_default")]
    pub masked: bool,
    /// The value is written to a file and the variable holds the file's path.
    #[serde(deserialize_with = "null_default")]
    pub file: bool,
    /// `$` in the value is not expanded.
    #[serde(deserialize_with = "null_default")]
    pub raw: bool,
}

impl JobVariable {
    /// A public, plain variable (as the runner adds them).
    pub fn plain(key: impl Into<String>, value: impl Into<String>) -> Self {
        JobVariable {
            key: key.into(),
            value: value.into(),
            public: true,
            ..JobVariable::default()
        }
    }
}

/// Values can be secrets: `Debug` shows the key and the flags only.
impl std::fmt::Debug for JobVariable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobVariable")
            .field("key", &self.key)
            .field("masked", &self.masked)
            .field("file", &self.file)
            .field("raw", &self.raw)
            .finish_non_exhaustive()
    }
}

/// An ordered list of variables in which a later entry of the same key wins.
#[derive(Debug, Clone, Default)]
pub struct Variables(Vec<JobVariable>);

impl Variables {
    /// Wraps a list, keeping its order.
    pub fn new(list: Vec<JobVariable>) -> Self {
        Variables(list)
    }

    /// Appends one variable (it wins over earlier ones of the same key).
    pub fn push(&mut self, var: JobVariable) {
        self.0.push(var);
    }

    /// The value of `key` as the job sees it (last one wins), not expanded.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|v| v.key == key)
            .map(|v| v.value.as_str())
    }

    /// The value of `key` with other variables expanded in it (unless raw).
    pub fn expanded(&self, key: &str) -> Option<String> {
        let var = self.0.iter().rev().find(|v| v.key == key)?;
        Some(if var.raw {
            var.value.clone()
        } else {
            self.expand(&var.value)
        })
    }

    /// Expands `$VAR` and `${VAR}` in `text` with these variables.
    pub fn expand(&self, text: &str) -> String {
        expand(text, |k| self.get(k).map(str::to_string))
    }

    /// [`Variables::expand`] stopped at `limit` bytes.
    pub fn expand_capped(&self, text: &str, limit: usize) -> Result<String, TooLarge> {
        expand_capped(text, |k| self.get(k).map(str::to_string), limit)
    }

    /// The effective variables, one per key, each at the position of its last definition.
    pub fn effective(&self) -> Vec<&JobVariable> {
        let mut seen = std::collections::HashSet::new();
        let mut out: Vec<&JobVariable> = self
            .0
            .iter()
            .rev()
            .filter(|v| seen.insert(v.key.as_str()))
            .collect();
        out.reverse();
        out
    }

    /// Values of masked variables (non-empty), for the trace masker.
    pub fn masked_values(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .0
            .iter()
            .filter(|v| v.masked && !v.value.is_empty())
            .map(|v| v.value.clone())
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Every variable, in order.
    pub fn iter(&self) -> impl Iterator<Item = &JobVariable> {
        self.0.iter()
    }
}

/// Expands `$NAME` and `${NAME}` with `lookup` (unknown names become empty, `$$` stays `$`), as
/// Go's `os.Expand` does for GitLab Runner. Unbounded: text from a job goes through
/// [`expand_capped`] first (see `job/limits.rs`).
pub fn expand(text: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    expand_capped(text, lookup, usize::MAX).unwrap_or_default()
}

/// An expansion stopped because its result would be longer than its cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("expands to more than {limit} bytes")]
pub struct TooLarge {
    /// The cap, in bytes.
    pub limit: usize,
}

/// [`expand`] that stops as soon as the result would exceed `limit` bytes, so a value such as
/// `$A$A$A…` never grows past the cap in memory.
pub fn expand_capped(
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
    limit: usize,
) -> Result<String, TooLarge> {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len().min(limit));
    let push = |out: &mut String, s: &str| {
        if out.len().saturating_add(s.len()) > limit {
            return Err(TooLarge { limit });
        }
        out.push_str(s);
        Ok(())
    };
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'$' || i + 1 >= bytes.len() {
            let ch = text[i..].chars().next().unwrap_or('$');
            let mut buf = [0u8; 4];
            push(&mut out, ch.encode_utf8(&mut buf))?;
            i += ch.len_utf8();
            continue;
        }
        let next = bytes[i + 1];
        if next == b'$' {
            push(&mut out, "$")?;
            i += 2;
        } else if next == b'{' {
            match text[i + 2..].find('}') {
                Some(end) => {
                    let name = &text[i + 2..i + 2 + end];
                    push(&mut out, &lookup(name).unwrap_or_default())?;
                    i += 3 + end;
                }
                None => {
                    push(&mut out, &text[i..])?;
                    break;
                }
            }
        } else if next == b'_' || next.is_ascii_alphanumeric() {
            let len = bytes[i + 1..]
                .iter()
                .take_while(|b| **b == b'_' || b.is_ascii_alphanumeric())
                .count();
            let name = &text[i + 1..i + 1 + len];
            push(&mut out, &lookup(name).unwrap_or_default())?;
            i += 1 + len;
        } else {
            push(&mut out, "$")?;
            i += 1;
        }
    }
    Ok(out)
}

/// What the runner knows about itself and the job's place on the host, from which it adds its own
/// variables around the payload's.
#[derive(Debug, Clone, Default)]
pub struct RunnerEnvironment {
    /// The runner's short token (9 characters, not a secret in GitLab's eyes).
    pub short_token: String,
    /// `[[runners]] environment` entries, `KEY=value`.
    pub environment: Vec<String>,
    /// The builds directory inside containers (`/builds`).
    pub builds_dir: String,
    /// The slot number of this job among the runner's concurrent ones.
    pub concurrent_id: u32,
    /// Flotilla's version, sent as `CI_RUNNER_VERSION`.
    pub version: String,
    /// Flotilla's revision.
    pub revision: String,
    /// The runner's TLS file variables (`CI_SERVER_TLS_CA_FILE`, …), read by the manager.
    pub tls: Vec<JobVariable>,
}

impl RunnerEnvironment {
    /// The directory the project is checked out into.
    pub fn project_dir(&self, job: &super::JobPayload) -> String {
        let path = if job.job_info.project_full_path.is_empty() {
            format!("project-{}", job.job_info.project_id)
        } else {
            job.job_info.project_full_path.clone()
        };
        format!("{}/{}", self.builds_dir.trim_end_matches('/'), path)
    }

    /// Every variable the job sees, in GitLab Runner's order (later wins).
    pub fn job_variables(&self, job: &super::JobPayload) -> Variables {
        let mut vars = Variables::default();
        if let Some(image) = job.image.as_ref().filter(|i| !i.name.is_empty()) {
            vars.push(JobVariable::plain("CI_JOB_IMAGE", &image.name));
        }
        vars.push(JobVariable::plain(
            "CI_RUNNER_SHORT_TOKEN",
            &self.short_token,
        ));
        for entry in &self.environment {
            if let Some((k, v)) = entry.split_once('=') {
                vars.push(JobVariable::plain(k, v));
            }
        }
        let project_dir = self.project_dir(job);
        vars.push(JobVariable::plain("CI_BUILDS_DIR", &self.builds_dir));
        vars.push(JobVariable::plain("CI_PROJECT_DIR", &project_dir));
        vars.push(JobVariable::plain(
            "CI_CONCURRENT_ID",
            self.concurrent_id.to_string(),
        ));
        vars.push(JobVariable::plain(
            "CI_CONCURRENT_PROJECT_ID",
            self.concurrent_id.to_string(),
        ));
        vars.push(JobVariable::plain("CI_SERVER", "yes"));
        vars.push(JobVariable::plain("CI_JOB_STATUS", "running"));
        vars.push(JobVariable::plain(
            "CI_JOB_TIMEOUT",
            job.timeout_secs().to_string(),
        ));
        for v in &self.tls {
            vars.push(v.clone());
        }
        for v in &job.variables {
            vars.push(v.clone());
        }
        vars.push(JobVariable::plain("CI_DISPOSABLE_ENVIRONMENT", "true"));
        vars.push(JobVariable::plain("CI_RUNNER_VERSION", &self.version));
        vars.push(JobVariable::plain("CI_RUNNER_REVISION", &self.revision));
        vars.push(JobVariable::plain(
            "CI_RUNNER_EXECUTABLE_ARCH",
            format!("linux/{}", go_arch()),
        ));
        vars.push(JobVariable::plain(
            "RUNNER_TEMP_PROJECT_DIR",
            format!("{project_dir}.tmp"),
        ));
        vars
    }
}

/// The architecture as Go (and so GitLab) names it.
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expansion_follows_go_os_expand() {
        let vars = Variables::new(vec![
            JobVariable::plain("A", "1"),
            JobVariable::plain("B", "x$A"),
            JobVariable::plain("A", "2"),
        ]);
        assert_eq!(vars.get("A"), Some("2"));
        assert_eq!(vars.expand("$A-${A}-$MISSING-$$-$"), "2-2--$-$");
        assert_eq!(vars.expanded("B").as_deref(), Some("x2"));
        assert_eq!(vars.expand("é$A é"), "é2 é");
    }

    #[test]
    fn raw_variables_are_not_expanded() {
        let mut raw = JobVariable::plain("R", "$A");
        raw.raw = true;
        let vars = Variables::new(vec![JobVariable::plain("A", "1"), raw]);
        assert_eq!(vars.expanded("R").as_deref(), Some("$A"));
    }

    #[test]
    fn runner_variables_come_in_gitlab_runner_order() {
        let job: crate::job::JobPayload = serde_json::from_value(serde_json::json!({
            "id": 3, "token": "t",
            "job_info": {"project_full_path": "group/app"},
            "variables": [{"key": "CI_JOB_ID", "value": "3"}, {"key": "CI_SERVER", "value": "no"},
                          {"key": "S", "value": "hide", "masked": true}],
        }))
        .unwrap();
        let env = RunnerEnvironment {
            short_token: "abcdefghi".into(),
            environment: vec!["CI_BUILDS_DIR=/elsewhere".into(), "MY=1".into()],
            builds_dir: "/builds".into(),
            ..Default::default()
        };
        let vars = env.job_variables(&job);
        assert_eq!(vars.get("CI_PROJECT_DIR"), Some("/builds/group/app"));
        assert_eq!(
            vars.get("CI_BUILDS_DIR"),
            Some("/builds"),
            "runner-owned wins over environment"
        );
        assert_eq!(
            vars.get("CI_SERVER"),
            Some("no"),
            "the payload wins over runner defaults"
        );
        assert_eq!(vars.get("MY"), Some("1"));
        assert_eq!(vars.get("CI_DISPOSABLE_ENVIRONMENT"), Some("true"));
        assert_eq!(vars.masked_values(), vec!["hide"]);
        let keys: Vec<&str> = vars.effective().iter().map(|v| v.key.as_str()).collect();
        let pos = |k| keys.iter().position(|x| *x == k).unwrap();
        assert!(pos("CI_RUNNER_SHORT_TOKEN") < pos("CI_JOB_ID"));
        assert!(pos("CI_JOB_ID") < pos("CI_RUNNER_VERSION"));
    }
}
