//! The `get_sources` script, as GitLab Runner 19 writes it (`shells/abstract.go`
//! `writeGetSourcesScript`, `writeCloneFetchCmds`, `writeRefspecFetchCmd`, `writeCheckoutCmd`,
//! `writeSubmoduleUpdateCmd`; `common/build.go` for the `GIT_*` variables): the strategy from
//! `GIT_STRATEGY`, stale lock files and configs removed, a git template and an external config
//! under the job's temporary directory, `git init` + `git fetch` of the payload's refspecs, a
//! detached checkout of the payload's `sha`, `git clean`, `git lfs pull`, submodules, and the
//! payload's pre/post get_sources hooks. Pure text building: the lines returned run in the helper
//! container through `JobCtx::run_helper_stage`, which exports the job's variables first.
//!
//! Credentials stay out of origin and out of the trace: origin is the URL without credentials,
//! and the authenticated URLs reach git only as `url.<authenticated>.insteadOf <plain>` entries in
//! the external config (for the project, and for the server's base so that same-host submodules
//! authenticate too). No line that prints anything contains a credential.

mod remote;
mod settings;
mod writer;

use super::script::quote;
use crate::job::{go_arch, JobPayload, Variables};
use remote::RemoteUrls;
use settings::Settings;
use writer::{join, quote_meta, Writer};

const BOLD_GREEN: &str = "\x1b[32;1m";
const YELLOW: &str = "\x1b[0;33m";
const RESET: &str = "\x1b[0;m";
/// GitLab Runner's default `GIT_CLEAN_FLAGS`.
const CLEAN_FLAGS_DEFAULT: &str = "-ffdx";
/// GitLab Runner's default `GIT_FETCH_EXTRA_FLAGS`.
const FETCH_FLAGS_DEFAULT: &str = "--prune --quiet";
/// The external git config's file name (GitLab Runner's `externalGitConfigFile`).
const EXT_CONFIG: &str = ".gitlab-runner.ext.conf";
/// Files under `.git` a killed git may leave behind, which fail the next fetch.
const STALE_FILES: [&str; 5] = [
    "index.lock",
    "shallow.lock",
    "HEAD.lock",
    "hooks/post-checkout",
    "config.lock",
];

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

/// `GIT_SUBMODULE_STRATEGY`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SubmoduleStrategy {
    None,
    Normal,
    Recursive,
}

/// What the get_sources script is made from.
pub(super) struct Sources<'a> {
    /// The job (its `git_info`, `token` and `hooks`).
    pub job: &'a JobPayload,
    /// The job's variables (`GIT_*`, `CI_SERVER_*`).
    pub vars: &'a Variables,
    /// The resolved strategy.
    pub strategy: GitStrategy,
    /// `CI_PROJECT_DIR`.
    pub project_dir: &'a str,
    /// `RUNNER_TEMP_PROJECT_DIR`: the git template and the external config go there.
    pub tmp_dir: &'a str,
}

/// A job whose sources cannot be had as asked.
#[derive(Debug, thiserror::Error)]
pub(super) enum GitError {
    /// `git_info.repo_url` is not a URL.
    #[error("the job's repository URL cannot be parsed: {0}")]
    RepoUrl(String),
    /// `GIT_SUBMODULE_STRATEGY` has an unknown value.
    #[error("unknown GIT_SUBMODULE_STRATEGY {0:?} (use none, normal or recursive)")]
    SubmoduleStrategy(String),
    /// `GIT_SUBMODULE_PATHS` holds a bare `:(exclude)`.
    #[error("GIT_SUBMODULE_PATHS: invalid submodule pathspec {0:?}")]
    SubmodulePaths(String),
}

/// A line as GitLab Runner's `Noticef` prints it (bold green).
pub(super) fn notice(text: &str) -> String {
    format!("{BOLD_GREEN}{text}{RESET}")
}

/// The lines printed for a strategy that touches no repository, already formatted.
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
    let mut w = Writer::default();
    let dir = sources.project_dir;
    match sources.strategy {
        GitStrategy::None => {
            for line in skipped_lines(GitStrategy::None) {
                w.print(&line);
            }
        }
        GitStrategy::Empty => {
            w.notice("Skipping Git repository setup and creating an empty build directory");
            w.line("cd /");
            w.cmd(&["rm", "-rf", dir]);
            w.cmd(&["mkdir", "-p", dir]);
            w.notice("Skipping Git checkout");
            w.notice("Skipping Git submodules setup");
        }
        GitStrategy::Clone | GitStrategy::Fetch => {
            let settings = Settings::of(sources)?;
            let urls = RemoteUrls::of(sources, &settings)?;
            w.line("export GIT_TERMINAL_PROMPT=0");
            w.line("export GCM_INTERACTIVE=Never");
            hooks(&mut w, sources.job, "pre_get_sources_script");
            fetch(&mut w, sources, &settings, &urls);
            if settings.checkout {
                checkout(&mut w, sources, &settings);
            } else {
                w.notice("Skipping Git checkout");
            }
            submodules(&mut w, sources, &settings);
            hooks(&mut w, sources.job, "post_get_sources_script");
        }
    }
    Ok(w.lines)
}

/// Lock files, configs and hooks a previous job may have left, the template, the external
/// config, then `git init` and `git fetch` (GitLab Runner's `handleGetSourcesStrategy` and
/// `writeRefspecFetchCmd`; its native `git clone` path is behind a feature flag and not used).
fn fetch(w: &mut Writer, sources: &Sources<'_>, settings: &Settings, urls: &RemoteUrls) {
    let dir = sources.project_dir;
    let git_dir = format!("{dir}/.git");
    let tmp = sources.tmp_dir.trim_end_matches('/');
    let template = format!("{tmp}/git-template");
    let template_config = format!("{template}/config");
    let ext = format!("{tmp}/{EXT_CONFIG}");
    let with_submodules = settings.submodules != SubmoduleStrategy::None;
    let modules = format!("{git_dir}/modules");

    if settings.lfs {
        w.line("export GIT_LFS_SKIP_SMUDGE=1");
    }
    for file in STALE_FILES {
        w.cmd(&["rm", "-f", &format!("{git_dir}/{file}")]);
        if with_submodules {
            w.find_delete(&modules, "f", file.rsplit('/').next().unwrap_or(file));
        }
    }
    w.find_delete(&format!("{git_dir}/refs"), "f", "*.lock");
    // Configs and hooks are where a previous job could plant code that git would run.
    for d in [template.as_str(), git_dir.as_str()] {
        w.cmd(&["rm", "-f", &format!("{d}/config")]);
        w.cmd(&["rm", "-rf", &format!("{d}/hooks")]);
    }
    if with_submodules {
        w.find_delete(&modules, "f", "config");
        w.find_delete(&modules, "d", "hooks");
    }

    w.cmd(&["mkdir", "-p", &template]);
    for (key, value) in [
        ("init.defaultBranch", "none"),
        ("fetch.recurseSubmodules", "false"),
        ("credential.interactive", "never"),
        ("gc.autoDetach", "false"),
    ] {
        w.cmd(&["git", "config", "-f", &template_config, key, value]);
    }
    w.cmd(&["rm", "-f", &ext]);
    for (authed, plain) in &urls.instead_ofs {
        w.cmd(&[
            "git",
            "config",
            "--file",
            &ext,
            "--replace-all",
            &format!("url.{authed}.insteadOf"),
            plain,
            &format!("^{}$", quote_meta(plain)),
        ]);
    }
    for line in remote::ssl_config_lines(&ext, &urls.plain, sources.vars) {
        w.line(&line);
    }
    let include_pattern = format!("{}$", quote_meta(EXT_CONFIG));
    w.cmd(&[
        "git",
        "config",
        "--file",
        &template_config,
        "--replace-all",
        "include.path",
        &ext,
        &include_pattern,
    ]);
    w.line(&format!("export GLR_EXT_GIT_CONFIG_PATH={}", quote(&ext)));

    if sources.strategy == GitStrategy::Clone {
        w.line("cd /");
        w.cmd(&["rm", "-rf", dir]);
    }
    let depth = sources.job.git_info.depth;
    if depth > 0 {
        w.notice(&format!(
            "Fetching changes with git depth set to {depth}..."
        ));
    } else {
        w.notice("Fetching changes...");
    }
    let format = sources.job.git_info.repo_object_format.trim();
    if format.is_empty() || format == "sha1" {
        w.cmd(&["git", "init", dir, "--template", &template]);
    } else {
        w.cmd(&[
            "git",
            "init",
            dir,
            "--template",
            &template,
            "--object-format",
            format,
        ]);
    }
    w.cmd(&["cd", dir]);
    w.line(&format!(
        "if git remote add origin {} >/dev/null 2>&1; then",
        quote(&urls.plain)
    ));
    w.notice("Created fresh repository.");
    w.line("else");
    w.cmd(&["git", "remote", "set-url", "origin", &urls.plain]);
    w.cmd(&[
        "git",
        "config",
        "--file",
        ".git/config",
        "--replace-all",
        "include.path",
        &ext,
        &include_pattern,
    ]);
    w.line("fi");

    let user_agent = format!(
        "http.userAgent=flotilla {} linux/{}",
        crate::VERSION,
        go_arch()
    );
    let mut args: Vec<&str> = vec![
        "git",
        "-c",
        &user_agent,
        "fetch",
        "origin",
        "--no-recurse-submodules",
    ];
    args.extend(sources.job.git_info.refspecs.iter().map(String::as_str));
    let depth_text = depth.to_string();
    if depth > 0 {
        args.extend(["--depth", depth_text.as_str()]);
    }
    args.extend(settings.fetch_flags.iter().map(String::as_str));
    if depth > 0 {
        w.cmd(&args);
    } else {
        w.line("if [ -f .git/shallow ]; then");
        let mut unshallow = args.clone();
        unshallow.push("--unshallow");
        w.cmd(&unshallow);
        w.line("else");
        w.cmd(&args);
        w.line("fi");
    }
}

/// The detached checkout of the payload's `sha`, `git clean`, `git lfs pull`.
fn checkout(w: &mut Writer, sources: &Sources<'_>, settings: &Settings) {
    let info = &sources.job.git_info;
    let short: String = info.sha.chars().take(8).collect();
    w.notice(&format!(
        "Checking out {short} as detached HEAD (ref is {})...",
        info.git_ref
    ));
    w.cmd(&[
        "git",
        "-c",
        "submodule.recurse=false",
        "checkout",
        "-f",
        "-q",
        &info.sha,
    ]);
    if !settings.clean_flags.is_empty() {
        let mut args = vec!["git", "clean"];
        args.extend(settings.clean_flags.iter().map(String::as_str));
        w.cmd(&args);
    }
    if settings.lfs {
        w.line("if git lfs version >/dev/null 2>&1; then");
        w.cmd(&["git", "lfs", "pull"]);
        w.line("fi");
    }
}

/// `GIT_SUBMODULE_STRATEGY` normal / recursive (GitLab Runner's `writeSubmoduleUpdateCmd`).
fn submodules(w: &mut Writer, sources: &Sources<'_>, settings: &Settings) {
    let recursive = match settings.submodules {
        SubmoduleStrategy::None => {
            w.notice("Skipping Git submodules setup");
            return;
        }
        SubmoduleStrategy::Normal => false,
        SubmoduleStrategy::Recursive => true,
    };
    let depth = settings.submodule_depth;
    w.notice(&match (recursive, depth > 0) {
        (true, true) => {
            format!("Updating/initializing submodules recursively with git depth set to {depth}...")
        }
        (true, false) => "Updating/initializing submodules recursively...".into(),
        (false, true) => {
            format!("Updating/initializing submodules with git depth set to {depth}...")
        }
        (false, false) => "Updating/initializing submodules...".into(),
    });
    let ext = format!("{}/{EXT_CONFIG}", sources.tmp_dir.trim_end_matches('/'));
    let include = format!("include.path={ext}");
    let mut path_args: Vec<&str> = Vec::new();
    if !settings.submodule_paths.is_empty() {
        path_args.push("--");
        path_args.extend(settings.submodule_paths.iter().map(String::as_str));
    }
    let recursive_flag: &[&str] = if recursive { &["--recursive"] } else { &[] };

    w.cmd(&["git", "submodule", "init"]);
    let mut sync = vec!["git", "submodule", "sync"];
    sync.extend(recursive_flag);
    sync.extend(&path_args);

    let depth_text = depth.to_string();
    let mut update = vec![
        "git",
        "-c",
        include.as_str(),
        "submodule",
        "update",
        "--init",
    ];
    update.extend(recursive_flag);
    if depth > 0 {
        update.extend(["--depth", depth_text.as_str()]);
    }
    update.extend(settings.submodule_update_flags.iter().map(String::as_str));
    update.extend(&path_args);

    let mut foreach = vec!["git", "submodule", "foreach"];
    foreach.extend(recursive_flag);
    let clean_flags = if settings.clean_flags.is_empty() {
        CLEAN_FLAGS_DEFAULT.to_string()
    } else {
        settings.clean_flags.join(" ")
    };
    let clean = format!("git clean {clean_flags}");
    let with = |cmd: &str| {
        let mut args = foreach.clone();
        args.push(cmd);
        args.iter().map(|a| quote(a)).collect::<Vec<_>>().join(" ")
    };

    w.cmd(&sync);
    w.line(&with(&clean));
    w.line(&with("git reset --hard"));
    w.line(&format!("if {}; then", join(&update)));
    w.notice("Updated submodules");
    w.cmd(&sync);
    w.line("else");
    w.warning("Updating submodules failed. Retrying...");
    w.cmd(&sync);
    w.cmd(&update);
    w.line(&with("git reset --hard"));
    w.line("fi");
    w.line(&with(&clean));
    w.notice("Configuring submodules to use parent git credentials...");
    let mut configure = vec!["git", "submodule", "foreach", "--recursive"];
    let set_include = format!("git config --replace-all include.path {}", quote(&ext));
    configure.push(&set_include);
    w.cmd(&configure);
    if settings.lfs {
        w.line("if git lfs version >/dev/null 2>&1; then");
        w.notice("Pulling LFS files...");
        let mut lfs = vec!["git", "-c", include.as_str(), "submodule", "foreach"];
        lfs.extend(recursive_flag);
        lfs.push("git lfs pull");
        w.cmd(&lfs);
        w.line("fi");
    }
}

/// The payload's `hooks` entry `name`, each line shown as `$ line` and run.
fn hooks(w: &mut Writer, job: &JobPayload, name: &str) {
    for hook in job.hooks.iter().filter(|h| h.name == name) {
        for line in &hook.script {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let shown = match line.split_once('\n') {
                Some((first, _)) => format!("$ {first} # collapsed multi-line command"),
                None => format!("$ {line}"),
            };
            w.notice(&shown);
            w.line(line);
        }
    }
}

#[cfg(test)]
mod tests;
