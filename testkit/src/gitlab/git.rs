//! Real git repositories served by the fake GitLab over smart HTTP, as GitLab (Workhorse +
//! Gitaly) serves them at `/<namespace>/<project>.git/…`: `git http-backend` runs as a CGI
//! subprocess per request, its output streamed back. Access needs HTTP basic auth as user
//! `gitlab-ci-token` with the token of a job that is running (GitLab's `CI_JOB_TOKEN` rule);
//! anything else gets GitLab's 401 `HTTP Basic: Access denied`.
//!
//! [`GitRepos`] owns the repositories (bare, in a temporary directory removed on drop) and makes
//! them for tests: commits of given files, refs (`refs/pipelines/<id>`), submodule links.
//! [`FakeGitlab::start_with_git`](super::FakeGitlab::start_with_git) starts a fake serving them.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use anyhow::{bail, Context as _};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use futures_util::StreamExt as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_util::io::ReaderStream;

use super::{GitlabHandle, JobState};

/// Largest request body a git client sends here (want/have negotiation; pushes are refused).
const MAX_REQUEST_BYTES: usize = 16 << 20;
/// Largest CGI header block accepted from `git http-backend`.
const MAX_CGI_HEADER_BYTES: usize = 64 << 10;

/// The repositories a fake GitLab serves, under one temporary directory (removed when the last
/// clone is dropped). Cheap to clone.
#[derive(Clone)]
pub struct GitRepos {
    root: Arc<tempfile::TempDir>,
}

impl GitRepos {
    /// An empty set of repositories.
    pub fn new() -> anyhow::Result<Self> {
        let root = tempfile::Builder::new()
            .prefix("fake-gitlab-repos-")
            .tempdir()
            .context("creating the repositories' directory")?;
        Ok(GitRepos {
            root: Arc::new(root),
        })
    }

    /// Creates the bare repository `path` (`group/project`, served at `/group/project.git`)
    /// with `main` as its default branch.
    pub fn create(&self, path: &str) -> anyhow::Result<Repo> {
        let valid = !path.is_empty()
            && path.split('/').all(|p| {
                !p.is_empty()
                    && p != "."
                    && p != ".."
                    && p.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            });
        if !valid {
            bail!("not a project path: {path:?}");
        }
        let dir = self.root.path().join(format!("{path}.git"));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        git(
            &dir,
            &["init", "--bare", "--quiet", "--initial-branch=main"],
        )?;
        // http-backend serves only repositories marked for export, or all with
        // GIT_HTTP_EXPORT_ALL; mark this one so nothing else under the root is ever served.
        std::fs::write(dir.join("git-daemon-export-ok"), b"")
            .context("marking the repository for export")?;
        Ok(Repo {
            dir,
            path: path.to_string(),
        })
    }

    /// The routes serving the repositories for the fake whose jobs `handle` resolves.
    pub fn router(&self, handle: GitlabHandle) -> Router {
        Router::new()
            .route("/{*path}", any(serve))
            .with_state(Arc::new(Served {
                repos: self.clone(),
                handle,
            }))
    }

    fn root(&self) -> &Path {
        self.root.path()
    }
}

/// One bare repository and what tests do to it.
#[derive(Debug, Clone)]
pub struct Repo {
    dir: PathBuf,
    path: String,
}

impl Repo {
    /// Its project path (`group/project`).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Commits `files` (path, content) on top of `branch` (created from nothing on first use)
    /// and returns the new commit's sha. Files not listed stay as they were.
    pub fn commit(
        &self,
        branch: &str,
        files: &[(&str, &str)],
        message: &str,
    ) -> anyhow::Result<String> {
        let work = tempfile::tempdir().context("a scratch work tree")?;
        let index = work.path().join("index");
        let tree_dir = work.path().join("tree");
        std::fs::create_dir(&tree_dir)?;
        let refname = format!("refs/heads/{branch}");
        let parent = self.resolve(&refname);
        let env = |cmd: &mut std::process::Command| {
            cmd.env("GIT_INDEX_FILE", &index)
                .env("GIT_WORK_TREE", &tree_dir);
        };
        if let Some(parent) = &parent {
            git_with(&self.dir, &["read-tree", parent], env)?;
        }
        for (path, content) in files {
            let file = tree_dir.join(path);
            if let Some(dir) = file.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(&file, content)?;
            git_with(&self.dir, &["update-index", "--add", "--", path], env)?;
        }
        self.commit_index(&refname, parent.as_deref(), message, env)
    }

    /// Commits a submodule link at `at` to commit `sha` of the repository at `url`, with its
    /// `.gitmodules` entry, on top of `branch`; the new commit's sha.
    pub fn add_submodule(
        &self,
        branch: &str,
        at: &str,
        url: &str,
        sha: &str,
    ) -> anyhow::Result<String> {
        let gitmodules = format!("[submodule \"{at}\"]\n\tpath = {at}\n\turl = {url}\n");
        let work = tempfile::tempdir().context("a scratch work tree")?;
        let index = work.path().join("index");
        let tree_dir = work.path().join("tree");
        std::fs::create_dir(&tree_dir)?;
        let refname = format!("refs/heads/{branch}");
        let parent = self.resolve(&refname);
        let env = |cmd: &mut std::process::Command| {
            cmd.env("GIT_INDEX_FILE", &index)
                .env("GIT_WORK_TREE", &tree_dir);
        };
        if let Some(parent) = &parent {
            git_with(&self.dir, &["read-tree", parent], env)?;
        }
        std::fs::write(tree_dir.join(".gitmodules"), gitmodules)?;
        git_with(
            &self.dir,
            &["update-index", "--add", "--", ".gitmodules"],
            env,
        )?;
        git_with(
            &self.dir,
            &[
                "update-index",
                "--add",
                "--cacheinfo",
                &format!("160000,{sha},{at}"),
            ],
            env,
        )?;
        self.commit_index(
            &refname,
            parent.as_deref(),
            &format!("add submodule {at}"),
            env,
        )
    }

    /// Points `refname` (e.g. `refs/pipelines/7`) at `sha`.
    pub fn set_ref(&self, refname: &str, sha: &str) -> anyhow::Result<()> {
        git(&self.dir, &["update-ref", refname, sha]).map(|_| ())
    }

    fn resolve(&self, refname: &str) -> Option<String> {
        git(&self.dir, &["rev-parse", "--verify", "--quiet", refname]).ok()
    }

    fn commit_index(
        &self,
        refname: &str,
        parent: Option<&str>,
        message: &str,
        env: impl Fn(&mut std::process::Command),
    ) -> anyhow::Result<String> {
        let tree = git_with(&self.dir, &["write-tree"], &env)?;
        let mut args = vec!["commit-tree", tree.as_str(), "-m", message];
        if let Some(parent) = parent {
            args.extend(["-p", parent]);
        }
        let sha = git_with(&self.dir, &args, |cmd| {
            env(cmd);
            cmd.env("GIT_AUTHOR_NAME", "Fake GitLab")
                .env("GIT_AUTHOR_EMAIL", "fake@gitlab.test")
                .env("GIT_COMMITTER_NAME", "Fake GitLab")
                .env("GIT_COMMITTER_EMAIL", "fake@gitlab.test");
        })?;
        git(&self.dir, &["update-ref", refname, &sha])?;
        Ok(sha)
    }
}

/// Runs `git args` in the bare repository `dir`; its trimmed stdout.
fn git(dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    git_with(dir, args, |_| {})
}

fn git_with(
    dir: &Path,
    args: &[&str],
    env: impl Fn(&mut std::process::Command),
) -> anyhow::Result<String> {
    let mut cmd = std::process::Command::new("git");
    cmd.arg("--git-dir").arg(dir).args(args);
    env(&mut cmd);
    let out = cmd
        .output()
        .with_context(|| format!("running git {args:?}"))?;
    if !out.status.success() {
        bail!(
            "git {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// State of the git routes.
struct Served {
    repos: GitRepos,
    handle: GitlabHandle,
}

/// `/<namespace>/<project>.git/<service>`: authenticates, then hands the request to
/// `git http-backend`.
async fn serve(State(served): State<Arc<Served>>, req: Request) -> Response {
    let path = req.uri().path().to_string();
    let Some(split) = path.find(".git/") else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let repo_dir = served.repos.root().join(&path[1..split + 4]);
    if !repo_dir.is_dir() || path.contains("/../") {
        return (
            StatusCode::NOT_FOUND,
            "The project you were looking for could not be found.",
        )
            .into_response();
    }
    if !job_token_allowed(&served.handle, req.headers()) {
        return denied();
    }
    // Pushes are not GitLab's business with a job token.
    let query = req.uri().query().unwrap_or_default().to_string();
    if path.ends_with("/git-receive-pack") || query.contains("service=git-receive-pack") {
        return (
            StatusCode::FORBIDDEN,
            "You are not allowed to push code to this project.",
        )
            .into_response();
    }
    match http_backend(served.repos.root(), &path, &query, req).await {
        Ok(response) => response,
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("git http-backend: {e:#}"),
        )
            .into_response(),
    }
}

/// GitLab's answer to missing or wrong credentials on git HTTP.
fn denied() -> Response {
    let mut response = (
        StatusCode::UNAUTHORIZED,
        "HTTP Basic: Access denied. If a password was provided for Git authentication, the \
         password was incorrect or you're required to use a token instead of a password.\n",
    )
        .into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"GitLab\""),
    );
    response
}

/// Whether the request carries `gitlab-ci-token:<token of a running job>`.
fn job_token_allowed(handle: &GitlabHandle, headers: &HeaderMap) -> bool {
    let Some((user, password)) = basic_auth(headers) else {
        return false;
    };
    user == "gitlab-ci-token"
        && handle
            .job_by_token(&password)
            .is_some_and(|job| matches!(job.state, JobState::Running | JobState::Canceling))
}

fn basic_auth(headers: &HeaderMap) -> Option<(String, String)> {
    use base64::Engine as _;
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// Runs `git http-backend` as a CGI for one request: the body goes to its stdin, its CGI
/// headers become the response's, the rest of its stdout is streamed as the body.
async fn http_backend(
    root: &Path,
    path: &str,
    query: &str,
    req: Request,
) -> anyhow::Result<Response> {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, MAX_REQUEST_BYTES)
        .await
        .context("reading the request body")?;
    let header = |name: header::HeaderName| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let mut cmd = tokio::process::Command::new("git");
    cmd.arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_PROJECT_ROOT", root)
        .env("PATH_INFO", path)
        .env("QUERY_STRING", query)
        .env("REQUEST_METHOD", parts.method.as_str())
        .env("CONTENT_TYPE", header(header::CONTENT_TYPE))
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("REMOTE_USER", "gitlab-ci-token")
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("SERVER_PROTOCOL", "HTTP/1.1")
        .env("GATEWAY_INTERFACE", "CGI/1.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    let encoding = header(header::CONTENT_ENCODING);
    if !encoding.is_empty() {
        cmd.env("HTTP_CONTENT_ENCODING", encoding);
    }
    if let Some(protocol) = parts
        .headers
        .get("git-protocol")
        .and_then(|v| v.to_str().ok())
    {
        cmd.env("GIT_PROTOCOL", protocol);
    }
    let mut child = cmd.spawn().context("starting git http-backend")?;
    let mut stdin = child.stdin.take().context("http-backend stdin")?;
    let mut stdout = child.stdout.take().context("http-backend stdout")?;

    // Feed the body while reading the headers: the backend may answer before it read it all.
    let feed = async move {
        // A backend that stops reading early has answered already; its output tells.
        let _ = stdin.write_all(&body).await;
        let _ = stdin.shutdown().await;
    };
    let read_headers = async {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            if let Some(end) = header_end(&buf) {
                return Ok::<_, anyhow::Error>((buf[..end.0].to_vec(), buf[end.1..].to_vec()));
            }
            if buf.len() > MAX_CGI_HEADER_BYTES {
                bail!("no end of the CGI headers");
            }
            let n = stdout.read(&mut chunk).await?;
            if n == 0 {
                bail!("http-backend ended before its headers");
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    let ((), headers) = tokio::join!(feed, read_headers);
    let (head, rest) = headers?;

    let mut builder = Response::builder().status(StatusCode::OK);
    for line in String::from_utf8_lossy(&head).lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value
                .split_whitespace()
                .next()
                .and_then(|c| c.parse::<u16>().ok())
                .and_then(|c| StatusCode::from_u16(c).ok())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            builder = builder.status(code);
        } else {
            builder = builder.header(name.trim(), value);
        }
    }
    // The child lives as long as the body stream: its output is the body; dropping the stream
    // (a client gone) kills it.
    let stream =
        futures_util::stream::once(
            async move { Ok::<_, std::io::Error>(bytes::Bytes::from(rest)) },
        )
        .chain(ReaderStream::new(stdout))
        .map(move |item| {
            let _keep_alive = &child;
            item
        });
    builder
        .body(Body::from_stream(stream))
        .context("building the response")
}

/// Where the CGI header block ends: (end of headers, start of body).
fn header_end(buf: &[u8]) -> Option<(usize, usize)> {
    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
        return Some((i, i + 4));
    }
    buf.windows(2)
        .position(|w| w == b"\n\n")
        .map(|i| (i, i + 2))
}
