//! Origin and credentials: the clone URL without user information for origin, and the
//! `url.<authenticated>.insteadOf <plain>` rewrites (GitLab Runner's `GitAuthHelper`) that give git
//! the job token for the project, the server and same-host submodules.

use super::settings::Settings;
use super::{GitError, Sources};
use crate::job::Variables;

/// Origin (without credentials) and the `insteadOf` rewrites that add them.
pub(super) struct RemoteUrls {
    /// Origin: the repository URL without user information.
    pub plain: String,
    /// `(authenticated, plain)` pairs, most specific first, without duplicates.
    pub instead_ofs: Vec<(String, String)>,
}

impl RemoteUrls {
    /// GitLab Runner's `GitAuthHelper`: the repository URL as given (it carries the job
    /// token), the server's base URL, the repository's base URL and, with
    /// `GIT_SUBMODULE_FORCE_HTTPS`, the SSH forms of the server, each rewritten to carry
    /// `gitlab-ci-token:<job token>`.
    pub(super) fn of(sources: &Sources<'_>, settings: &Settings) -> Result<Self, GitError> {
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

/// GitLab Runner's `writeGitSSLConfig`: when the job has `CI_SERVER_TLS_CA_FILE` (and the
/// client pair `CI_SERVER_TLS_CERT_FILE` / `CI_SERVER_TLS_KEY_FILE`), git is told to use
/// them for the repository's host (`http.<scheme://host>.sslCAInfo`, `.sslCert`, `.sslKey`)
/// in the external config, so clones and same-host submodules trust the runner's CA. The
/// values are the file variables' paths, expanded when the script runs.
pub(super) fn ssl_config_lines(ext: &str, plain: &str, vars: &Variables) -> Vec<String> {
    let Ok(repo) = url::Url::parse(plain) else {
        return Vec::new();
    };
    if !is_http(&repo) {
        return Vec::new();
    }
    let host = trimmed(&repo.join("/").unwrap_or(repo));
    [
        ("CI_SERVER_TLS_CA_FILE", "sslCAInfo"),
        ("CI_SERVER_TLS_CERT_FILE", "sslCert"),
        ("CI_SERVER_TLS_KEY_FILE", "sslKey"),
    ]
    .into_iter()
    .filter(|(var, _)| vars.get(var).is_some_and(|v| !v.is_empty()))
    .map(|(var, key)| {
        format!(
            "git config --file {} {} \"${var}\"",
            super::quote(ext),
            super::quote(&format!("http.{host}.{key}"))
        )
    })
    .collect()
}
