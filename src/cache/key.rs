//! Cache keys as GitLab Runner computes them (`shells/abstract.go`: `newCacheConfig`,
//! `sanitizeCacheKey`, `extractCacheOrFallbackCachesWrapper`; `common/cache.go`: policy and
//! `when`) and object names (`cache/cache.go`: `generateObjectName`). Pure functions, no I/O.

/// The outcome of sanitizing a key: the key to use (if any) and a warning for the trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sanitized {
    /// The key to use; `None` when nothing usable is left.
    pub key: Option<String>,
    /// Why the key changed or was dropped, for the trace.
    pub warning: Option<String>,
}

/// Sanitizes a cache key as GitLab Runner's `sanitizeCacheKey`: `%2F`/`%2E` decoded, `\` turned
/// into `/`, the path cleaned inside a virtual root (no `..` escapes it), trailing whitespace
/// trimmed from the last segments (dropping those left empty).
pub fn sanitize(raw: &str) -> Sanitized {
    if raw.is_empty() {
        return Sanitized {
            key: None,
            warning: None,
        };
    }
    let decoded = raw
        .replace("%2e", ".")
        .replace("%2E", ".")
        .replace("%2f", "/")
        .replace("%2F", "/")
        .replace('\\', "/");
    let mut segments = clean_segments(&decoded);
    while let Some(last) = segments.last_mut() {
        let trimmed = last.trim_end().to_string();
        if trimmed.is_empty() {
            segments.pop();
        } else {
            *last = trimmed;
            break;
        }
    }
    let key = clean_segments(&segments.join("/")).join("/");
    if key.is_empty() {
        return Sanitized {
            key: None,
            warning: Some(format!("cache key {raw:?} could not be sanitized")),
        };
    }
    let warning = (key != raw).then(|| format!("cache key {raw:?} sanitized to {key:?}"));
    Sanitized {
        key: Some(key),
        warning,
    }
}

/// The segments of `path` cleaned as Go's `path.Clean` would clean `"/" + path`: empty and `.`
/// segments dropped, `..` removing the one before (never going above the root).
fn clean_segments(path: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s.to_string()),
        }
    }
    out
}

/// Go's `path.Join`: the non-empty parts joined with `/` and cleaned (relative result).
fn join(parts: &[&str]) -> String {
    let joined = parts
        .iter()
        .filter(|p| !p.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join("/");
    let mut out: Vec<&str> = Vec::new();
    for segment in joined.split('/') {
        match segment {
            "" | "." => {}
            ".." if out.last().is_some_and(|s| *s != "..") => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    out.join("/")
}

/// The key of a cache entry before sanitizing: the expanded `key`, or `<job name>/<ref>` when the
/// job gives none.
pub fn raw_key(
    user_key: &str,
    job_name: &str,
    git_ref: &str,
    expand: impl Fn(&str) -> String,
) -> String {
    if user_key.is_empty() {
        clean_segments(&format!("{job_name}/{git_ref}")).join("/")
    } else {
        expand(user_key)
    }
}

/// Whether a `CACHE_FALLBACK_KEY` may be used: GitLab Runner refuses one ending in `-protected`
/// (so unprotected branches cannot read protected branches' caches).
pub fn fallback_key_allowed(key: &str) -> bool {
    !key.ends_with("-protected")
}

/// Why an object name could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ObjectNameError {
    /// The key would leave the project's prefix.
    #[error("computed cache path outside of project bucket. Please remove `../` from cache key")]
    OutsideProject,
}

/// The object name of a cache archive: `[Path/][runner/<short token>/]project/<id>/<key>`, as
/// GitLab Runner's `generateObjectName` (no runner part when the cache is `Shared`).
pub fn object_name(
    path: &str,
    shared: bool,
    short_token: &str,
    project_id: i64,
    key: &str,
) -> Result<String, ObjectNameError> {
    let runner = if shared {
        String::new()
    } else {
        join(&["runner", short_token])
    };
    let project_id = project_id.to_string();
    let base = join(&[path, &runner, "project", &project_id]);
    let full = join(&[&base, key]);
    if !full.starts_with(&format!("{base}/")) {
        return Err(ObjectNameError::OutsideProject);
    }
    Ok(full)
}

/// `cache:policy`: whether the job downloads, uploads, or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// `pull-push` (the default).
    PullPush,
    /// `pull`: download only.
    Pull,
    /// `push`: upload only.
    Push,
}

/// A cache `policy` that is none of `pull-push`, `pull`, `push` (after expansion).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown cache policy {0:?}")]
pub struct UnknownPolicy(pub String);

impl Policy {
    /// Parses an expanded policy.
    pub fn parse(value: &str) -> Result<Policy, UnknownPolicy> {
        match value {
            "" | "pull-push" => Ok(Policy::PullPush),
            "pull" => Ok(Policy::Pull),
            "push" => Ok(Policy::Push),
            other => Err(UnknownPolicy(other.to_string())),
        }
    }

    /// Whether the cache is downloaded before the job.
    pub fn pulls(self) -> bool {
        matches!(self, Policy::PullPush | Policy::Pull)
    }

    /// Whether the cache is uploaded after the job.
    pub fn pushes(self) -> bool {
        matches!(self, Policy::PullPush | Policy::Push)
    }
}

/// `cache:when`: after which job results the cache is saved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum When {
    /// Only when the job succeeded (the default).
    OnSuccess,
    /// Only when the job failed.
    OnFailure,
    /// Whatever the result.
    Always,
}

impl When {
    /// Parses `when`; empty and unknown values mean `on_success`, as GitLab Runner's `ShouldCache`.
    pub fn parse(value: &str) -> When {
        match value {
            "on_failure" => When::OnFailure,
            "always" => When::Always,
            _ => When::OnSuccess,
        }
    }

    /// Whether the cache is saved after a job that `succeeded` (or not).
    pub fn saves(self, succeeded: bool) -> bool {
        match self {
            When::OnSuccess => succeeded,
            When::OnFailure => !succeeded,
            When::Always => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitizes_like_gitlab_runner() {
        let cases: &[(&str, Option<&str>, bool)] = &[
            ("key", Some("key"), false),
            ("a/b/c", Some("a/b/c"), false),
            ("../../etc/passwd", Some("etc/passwd"), true),
            ("a%2Fb", Some("a/b"), true),
            ("a%2e%2e/b", Some("a../b"), true),
            ("%2e%2e/%2e%2e/x", Some("x"), true),
            (r"a\b", Some("a/b"), true),
            ("key  ", Some("key"), true),
            ("a/b /  /", Some("a/b"), true),
            ("/abs/key/", Some("abs/key"), true),
            ("..", None, true),
            ("  ", None, true),
            ("", None, false),
        ];
        for (raw, want, warns) in cases {
            let got = sanitize(raw);
            assert_eq!(got.key.as_deref(), *want, "{raw:?}");
            assert_eq!(got.warning.is_some(), *warns, "{raw:?}: {got:?}");
        }
        assert_eq!(
            sanitize("k ").warning.as_deref(),
            Some(r#"cache key "k " sanitized to "k""#)
        );
    }

    #[test]
    fn empty_key_is_job_name_and_ref() {
        let expand = |s: &str| s.replace("$CI_COMMIT_REF_SLUG", "main");
        assert_eq!(raw_key("", "build", "main", expand), "build/main");
        assert_eq!(raw_key("", "", "main", expand), "main");
        assert_eq!(
            raw_key("deps-$CI_COMMIT_REF_SLUG", "build", "main", expand),
            "deps-main"
        );
    }

    #[test]
    fn protected_fallback_keys_are_refused() {
        assert!(fallback_key_allowed("main"));
        assert!(!fallback_key_allowed("main-protected"));
        assert!(fallback_key_allowed("protected-main"));
    }

    #[test]
    fn object_names_as_generate_object_name() {
        assert_eq!(
            object_name("", false, "abcdef123", 42, "key").unwrap(),
            "runner/abcdef123/project/42/key"
        );
        assert_eq!(
            object_name("ci/cache/", true, "abcdef123", 42, "a/b").unwrap(),
            "ci/cache/project/42/a/b"
        );
        assert_eq!(
            object_name("/p", false, "t", 1, "k").unwrap(),
            "p/runner/t/project/1/k"
        );
        assert_eq!(
            object_name("", false, "t", 1, "../2/k"),
            Err(ObjectNameError::OutsideProject)
        );
        assert_eq!(
            object_name("", true, "t", 1, "."),
            Err(ObjectNameError::OutsideProject)
        );
    }

    #[test]
    fn policies_and_when() {
        assert_eq!(Policy::parse(""), Ok(Policy::PullPush));
        assert!(Policy::parse("pull").unwrap().pulls());
        assert!(!Policy::parse("pull").unwrap().pushes());
        assert!(Policy::parse("push").unwrap().pushes());
        assert!(!Policy::parse("push").unwrap().pulls());
        assert!(Policy::parse("pul").is_err());
        assert!(When::parse("").saves(true));
        assert!(!When::parse("on_success").saves(false));
        assert!(When::parse("on_failure").saves(false));
        assert!(!When::parse("on_failure").saves(true));
        assert!(When::parse("always").saves(false));
    }
}
