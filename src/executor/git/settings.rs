//! The `GIT_*` variables of the get_sources script, read as GitLab Runner's `common/build.go`
//! reads them (defaults, `none`, Go's booleans).

use super::GitError;
use super::{Sources, SubmoduleStrategy, CLEAN_FLAGS_DEFAULT, FETCH_FLAGS_DEFAULT};

/// The `GIT_*` variables, read as GitLab Runner reads them.
pub(super) struct Settings {
    /// `GIT_CHECKOUT` (default true).
    pub checkout: bool,
    /// `GIT_CLEAN_FLAGS` (default `-ffdx`; `none`: no clean).
    pub clean_flags: Vec<String>,
    /// `GIT_FETCH_EXTRA_FLAGS` (default `--prune --quiet`; `none`: none).
    pub fetch_flags: Vec<String>,
    /// Whether LFS objects are pulled (not when `GIT_LFS_SKIP_SMUDGE` is true).
    pub lfs: bool,
    /// `GIT_SUBMODULE_STRATEGY`.
    pub submodules: SubmoduleStrategy,
    /// `GIT_SUBMODULE_PATHS`, split on whitespace.
    pub submodule_paths: Vec<String>,
    /// `GIT_SUBMODULE_DEPTH`, else the payload's depth.
    pub submodule_depth: i64,
    /// `GIT_SUBMODULE_UPDATE_FLAGS`.
    pub submodule_update_flags: Vec<String>,
    /// `GIT_SUBMODULE_FORCE_HTTPS`: SSH submodule URLs rewritten to the server's HTTPS.
    pub force_https: bool,
}

impl Settings {
    /// The settings of the job `sources` describes.
    pub(super) fn of(sources: &Sources<'_>) -> Result<Self, GitError> {
        let get = |key: &str| sources.vars.expanded(key).unwrap_or_default();
        let flags = |key: &str, default: &str| {
            let value = get(key);
            let value = if value.trim().is_empty() {
                default.to_string()
            } else {
                value
            };
            if value.trim() == "none" {
                Vec::new()
            } else {
                value.split_whitespace().map(str::to_string).collect()
            }
        };
        let submodules = match get("GIT_SUBMODULE_STRATEGY").trim() {
            "" | "none" => SubmoduleStrategy::None,
            "normal" => SubmoduleStrategy::Normal,
            "recursive" => SubmoduleStrategy::Recursive,
            other => return Err(GitError::SubmoduleStrategy(other.to_string())),
        };
        let paths = get("GIT_SUBMODULE_PATHS");
        let submodule_paths: Vec<String> = paths.split_whitespace().map(str::to_string).collect();
        if submodule_paths.iter().any(|p| p == ":(exclude)") {
            return Err(GitError::SubmodulePaths(paths));
        }
        Ok(Settings {
            checkout: parse_bool(&get("GIT_CHECKOUT")).unwrap_or(true),
            clean_flags: flags("GIT_CLEAN_FLAGS", CLEAN_FLAGS_DEFAULT),
            fetch_flags: flags("GIT_FETCH_EXTRA_FLAGS", FETCH_FLAGS_DEFAULT),
            lfs: !parse_bool(&get("GIT_LFS_SKIP_SMUDGE")).unwrap_or(false),
            submodules,
            submodule_paths,
            submodule_depth: get("GIT_SUBMODULE_DEPTH")
                .trim()
                .parse()
                .unwrap_or(sources.job.git_info.depth),
            submodule_update_flags: get("GIT_SUBMODULE_UPDATE_FLAGS")
                .split_whitespace()
                .map(str::to_string)
                .collect(),
            force_https: parse_bool(&get("GIT_SUBMODULE_FORCE_HTTPS")).unwrap_or(false),
        })
    }
}

/// Go's `strconv.ParseBool`.
pub(super) fn parse_bool(s: &str) -> Option<bool> {
    match s.trim() {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}
