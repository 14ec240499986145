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

use super::script::quote;
use crate::job::{go_arch, JobPayload, Variables};

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

/// The `GIT_*` variables, read as GitLab Runner reads them.
struct Settings {
    checkout: bool,
    clean_flags: Vec<String>,
    fetch_flags: Vec<String>,
    lfs: bool,
    submodules: SubmoduleStrategy,
    submodule_paths: Vec<String>,
    submodule_depth: i64,
    submodule_update_flags: Vec<String>,
    force_https: bool,
}

impl Settings {
    fn of(sources: &Sources<'_>) -> Result<Self, GitError> {
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
fn parse_bool(s: &str) -> Option<bool> {
    match s.trim() {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Origin (without credentials) and the `insteadOf` rewrites that add them.
struct RemoteUrls {
    /// Origin: the repository URL without user information.
    plain: String,
    /// `(authenticated, plain)` pairs, most specific first, without duplicates.
    instead_ofs: Vec<(String, String)>,
}

impl RemoteUrls {
    /// GitLab Runner's `GitAuthHelper`: the repository URL as given (it carries the job
    /// token), the server's base URL, the repository's base URL and, with
    /// `GIT_SUBMODULE_FORCE_HTTPS`, the SSH forms of the server, each rewritten to carry
    /// `gitlab-ci-token:<job token>`.
    fn of(sources: &Sources<'_>, settings: &Settings) -> Result<Self, GitError> {
        let raw = sources.job.git_info.repo_url.trim();
        // The error names no part of the URL: it may carry the token.
        let repo = url::Url::parse(raw).map_err(|e| GitError::RepoUrl(e.to_string()))?;
        let mut plain = repo.clone();
        let _ = plain.set_username("");
        let _ = plain.set_password(None);
        let plain_text = plain.to_string();
        let token = &sources.job.token;
        if plain_text.contains(&format!("{token}@"))
            || !matches!(repo.scheme(), "http" | "https" | "ssh" | "git" | "file")
        {
            return Err(GitError::RepoUrl(format!(
                "scheme {:?} is not one git fetches over, or its credentials cannot be separated",
                repo.scheme()
            )));
        }
        let mut instead_ofs = Vec::new();
        if plain_text != repo.as_str() {
            instead_ofs.push((repo.to_string(), plain_text.clone()));
        }
        let authed = |u: &url::Url| {
            let mut a = u.clone();
            let _ = a.set_username("gitlab-ci-token");
            let _ = a.set_password(Some(token));
            a
        };
        let server = sources
            .vars
            .expanded("CI_SERVER_URL")
            .and_then(|s| url::Url::parse(s.trim()).ok())
            .filter(is_http);
        if let Some(base) = &server {
            instead_ofs.push((trimmed(&authed(base)), trimmed(base)));
            if settings.force_https {
                instead_ofs.extend(ssh_instead_ofs(&trimmed(&authed(base)), sources.vars, base));
            }
        }
        if is_http(&repo) {
            let mut base = plain.clone();
            base.set_path("");
            base.set_query(None);
            instead_ofs.push((trimmed(&authed(&base)), trimmed(&base)));
        }
        let mut seen = std::collections::HashSet::new();
        instead_ofs.retain(|pair| seen.insert(pair.clone()));
        Ok(RemoteUrls {
            plain: plain_text,
            instead_ofs,
        })
    }
}

fn is_http(u: &url::Url) -> bool {
    matches!(u.scheme(), "http" | "https")
}

/// The URL as text without a trailing `/`.
fn trimmed(u: &url::Url) -> String {
    u.as_str().trim_end_matches('/').to_string()
}

/// `git@host:` and `ssh://git@host[:port]` rewritten to `base` (GitLab Runner's
/// `sshInsteadOfs`, with `GIT_SUBMODULE_FORCE_HTTPS`).
fn ssh_instead_ofs(base: &str, vars: &Variables, server: &url::Url) -> Vec<(String, String)> {
    let host = vars
        .expanded("CI_SERVER_SHELL_SSH_HOST")
        .filter(|h| !h.trim().is_empty())
        .or_else(|| {
            vars.expanded("CI_SERVER_HOST")
                .filter(|h| !h.trim().is_empty())
        })
        .or_else(|| server.host_str().map(str::to_string))
        .unwrap_or_default();
    let port = vars
        .expanded("CI_SERVER_SHELL_SSH_PORT")
        .unwrap_or_default();
    if port.is_empty() || port == "22" {
        vec![
            (format!("{base}/"), format!("git@{host}:")),
            (base.to_string(), format!("ssh://git@{host}")),
        ]
    } else {
        vec![(base.to_string(), format!("ssh://git@{host}:{port}"))]
    }
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

/// Go's `regexp.QuoteMeta`: a regular expression matching `s` literally (git's value patterns).
fn quote_meta(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn join(args: &[&str]) -> String {
    args.iter().map(|a| quote(a)).collect::<Vec<_>>().join(" ")
}

/// The script's lines, written in order.
#[derive(Default)]
struct Writer {
    lines: Vec<String>,
}

impl Writer {
    /// A raw shell line.
    fn line(&mut self, line: &str) {
        self.lines.push(line.to_string());
    }

    /// A command, every argument quoted.
    fn cmd(&mut self, args: &[&str]) {
        self.lines.push(join(args));
    }

    /// Prints `text` as it is.
    fn print(&mut self, text: &str) {
        self.lines.push(format!("printf '%s\\n' {}", quote(text)));
    }

    /// Prints `text` as a notice (bold green).
    fn notice(&mut self, text: &str) {
        self.print(&notice(text));
    }

    /// Prints `text` as a warning (yellow).
    fn warning(&mut self, text: &str) {
        self.print(&format!("{YELLOW}WARNING: {text}{RESET}"));
    }

    /// Deletes what `find` finds under `dir` of type `kind` named `name`, if `dir` exists.
    fn find_delete(&mut self, dir: &str, kind: &str, name: &str) {
        let action = if kind == "d" {
            "-prune -exec rm -rf {} +"
        } else {
            "-delete"
        };
        self.lines.push(format!(
            "if [ -d {d} ]; then find {d} -type {kind} -name {n} {action}; fi",
            d = quote(dir),
            n = quote(name)
        ));
    }
}

#[cfg(test)]
mod tests;
