//! The `get_sources` script, as GitLab Runner 19 writes it (`shells/abstract.go`
//! `writeGetSourcesScript` and friends): the strategy from `GIT_STRATEGY`, then fetch, checkout,
//! submodules and LFS. Pure text building: the lines returned run in the helper container through
//! `JobCtx::run_helper_stage`, which exports the job's variables first.
//!
//! The job token never appears in a printed line: origin is the URL without credentials, and
//! the authenticated URL reaches git only through `url.<authenticated>.insteadOf <plain>` in the
//! repository's config.

use super::script::quote;
use crate::job::{JobPayload, Variables};

const BOLD_GREEN: &str = "\x1b[32;1m";
const RESET: &str = "\x1b[0;m";

/// `GIT_STRATEGY`, resolved as GitLab Runner's `GetGitStrategy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum GitStrategy {
    /// A fresh repository in an emptied project directory.
    Clone,
    /// Reuse the project directory's repository when there is one.
    Fetch,
    /// Touch nothing.
    None,
    /// An empty project directory, no repository.
    Empty,
}

impl GitStrategy {
    /// The job's strategy: `GIT_STRATEGY`, else (unset or unknown) `fetch` when the coordinator
    /// allows it and `clone` otherwise.
    pub(super) fn of(job: &JobPayload, vars: &Variables) -> Self {
        match vars.expanded("GIT_STRATEGY").as_deref().map(str::trim) {
            Some("clone") => GitStrategy::Clone,
            Some("fetch") => GitStrategy::Fetch,
            Some("none") => GitStrategy::None,
            Some("empty") => GitStrategy::Empty,
            _ if job.allow_git_fetch => GitStrategy::Fetch,
            _ => GitStrategy::Clone,
        }
    }
}

/// What the get_sources script is made from.
pub(super) struct Sources<'a> {
    /// The resolved strategy.
    pub strategy: GitStrategy,
    /// `CI_PROJECT_DIR`.
    pub project_dir: &'a str,
}

/// A job whose sources cannot be had as asked.
#[derive(Debug, thiserror::Error)]
pub(super) enum GitError {
    /// Not implemented yet.
    #[error("{0}")]
    Unsupported(String),
}

/// A line as GitLab Runner's `Noticef` prints it (bold green).
pub(super) fn notice(text: &str) -> String {
    format!("{BOLD_GREEN}{text}{RESET}")
}

/// The shell line printing `text` as a notice.
fn echo_notice(text: &str) -> String {
    format!("printf '%s\\n' {}", quote(&notice(text)))
}

/// The lines printed for a strategy that touches no repository (`none`), already formatted.
pub(super) fn skipped_lines(strategy: GitStrategy) -> Vec<String> {
    let setup = match strategy {
        GitStrategy::Empty => "Skipping Git repository setup and creating an empty build directory",
        _ => "Skipping Git repository setup",
    };
    [
        setup,
        "Skipping Git checkout",
        "Skipping Git submodules setup",
    ]
    .into_iter()
    .map(notice)
    .collect()
}

/// The get_sources script's lines for `sources`.
pub(super) fn get_sources_script(sources: &Sources<'_>) -> Result<Vec<String>, GitError> {
    let dir = quote(sources.project_dir);
    match sources.strategy {
        GitStrategy::None => Ok(skipped_lines(GitStrategy::None)
            .iter()
            .map(|l| format!("printf '%s\\n' {}", quote(l)))
            .collect()),
        GitStrategy::Empty => Ok(vec![
            echo_notice("Skipping Git repository setup and creating an empty build directory"),
            "cd /".into(),
            format!("rm -rf {dir}"),
            format!("mkdir -p {dir}"),
            echo_notice("Skipping Git checkout"),
            echo_notice("Skipping Git submodules setup"),
        ]),
        GitStrategy::Clone | GitStrategy::Fetch => Err(GitError::Unsupported(
            "fetching sources with git is not supported yet (use GIT_STRATEGY=none or empty)"
                .into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::JobVariable;

    fn job(allow_git_fetch: bool) -> JobPayload {
        let mut job: JobPayload = serde_json::from_str(include_str!(
            "../../tests/fixtures/job_response_full_valid.json"
        ))
        .expect("fixture parses");
        job.allow_git_fetch = allow_git_fetch;
        job
    }

    fn vars(pairs: &[(&str, &str)]) -> Variables {
        Variables::new(
            pairs
                .iter()
                .map(|(k, v)| JobVariable::plain(*k, *v))
                .collect(),
        )
    }

    #[test]
    fn the_strategy_follows_git_strategy_then_allow_git_fetch() {
        for (value, allow, expected) in [
            ("clone", true, GitStrategy::Clone),
            ("fetch", false, GitStrategy::Fetch),
            ("none", true, GitStrategy::None),
            ("empty", false, GitStrategy::Empty),
            ("", true, GitStrategy::Fetch),
            ("", false, GitStrategy::Clone),
            ("bogus", false, GitStrategy::Clone),
        ] {
            let v = vars(&[("GIT_STRATEGY", value)]);
            assert_eq!(GitStrategy::of(&job(allow), &v), expected, "{value:?}");
        }
        assert_eq!(GitStrategy::of(&job(true), &vars(&[])), GitStrategy::Fetch);
        let expanded = vars(&[("S", "none"), ("GIT_STRATEGY", "$S")]);
        assert_eq!(GitStrategy::of(&job(false), &expanded), GitStrategy::None);
    }

    #[test]
    fn empty_recreates_the_project_directory() {
        let lines = get_sources_script(&Sources {
            strategy: GitStrategy::Empty,
            project_dir: "/builds/g/p",
        })
        .unwrap();
        let script = lines.join("\n");
        assert!(
            script.contains("rm -rf '/builds/g/p'\nmkdir -p '/builds/g/p'"),
            "{script}"
        );
        assert!(
            script.contains("creating an empty build directory"),
            "{script}"
        );
    }
}
