//! Runner registration and the token's life (issue 10): `flotilla register`, `verify`,
//! `unregister`, `list` and `reset-token` through the real binary against the fake GitLab
//! (`commands.rs`), token rotation during `run` with a job running (`rotation.rs`), and
//! register → run → unregister as a new user would (`new_user.rs`), and a docker+machine
//! runner keeping its pool across a rotation (`pool.rs`).

mod commands;
mod idle;
mod new_user;
mod pool;
mod rotation;

use crate::harness::{flotilla_bin, init_crypto, runner_token, token_with_prefix, DEADLINE};
use std::path::{Path, PathBuf};
use testkit::{FakeGitlab, FakeGitlabOptions};

/// A file with comments and two existing runners, as an operator keeps it (`STATE` is replaced
/// by the state directory, `FIRST` and `SECOND` by the runners' generated tokens).
pub(crate) const TWO_RUNNERS: &str = r#"# Fleet config: managed by hand.
concurrent = 4   # two runners, two jobs each
check_interval = 3
state_dir = "STATE"

# The first runner.
[[runners]]
  name = "first"
  url = "URL"
  token = "FIRST"   # keep me
  executor = "docker"
  [runners.docker]
    image = "alpine:3.20"   # pinned

# The second runner.
[[runners]]
  name = "second"
  url = "URL"
  token = "SECOND"
  executor = "docker"
  [runners.docker]
    image = "debian"
"#;

/// A fake GitLab, a temporary directory with `config.toml` holding `TWO_RUNNERS` (both runners
/// known to the fake) and a state directory.
pub(crate) struct Setup {
    pub gitlab: FakeGitlab,
    /// The first runner's token (`glrt-`, created in GitLab).
    pub first: String,
    /// The second runner's token (`glrtr-`, from a registration token).
    pub second: String,
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
    pub original: String,
}

impl Setup {
    pub(crate) async fn start() -> Setup {
        init_crypto();
        let gitlab = FakeGitlab::start(FakeGitlabOptions::default())
            .await
            .expect("start the fake GitLab");
        let first = runner_token();
        let second = token_with_prefix("glrtr-");
        gitlab.add_runner(&first);
        gitlab.add_runner(&second);
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("state");
        let original = TWO_RUNNERS
            .replace("FIRST", &first)
            .replace("SECOND", &second)
            .replace("STATE", &state.display().to_string())
            .replace("URL", &gitlab.url());
        let path = dir.path().join("config.toml");
        std::fs::write(&path, &original).expect("write config");
        Setup {
            gitlab,
            first,
            second,
            dir,
            path,
            original,
        }
    }

    /// A new runner token the fake GitLab knows (not in the file).
    pub(crate) fn new_runner(&self) -> String {
        let token = runner_token();
        self.gitlab.add_runner(&token);
        token
    }

    /// The file's text now.
    pub(crate) fn text(&self) -> String {
        std::fs::read_to_string(&self.path).expect("read config")
    }
}

/// What a command printed and how it ended.
pub(crate) struct Output {
    pub ok: bool,
    pub all: String,
}

/// Runs `flotilla ARGS` with only `env` in its environment (no CI_SERVER_URL leaking in from
/// a CI job), bounded by the test deadline.
pub(crate) async fn flotilla(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = tokio::process::Command::new(flotilla_bin());
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(DEADLINE, command.output())
        .await
        .expect("the command ended in time")
        .expect("run flotilla");
    Output {
        ok: output.status.success(),
        all: format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    }
}

/// `flotilla config check FILE` passes.
pub(crate) async fn config_checks(path: &Path) {
    let out = flotilla(&["config", "check", &path.display().to_string()], &[]).await;
    assert!(out.ok, "config check failed:\n{}", out.all);
}

/// Asserts no token of `tokens` appears in `text`.
pub(crate) fn no_token(text: &str, tokens: &[&str]) {
    for token in tokens {
        assert!(!text.contains(token), "a token was printed:\n{text}");
    }
}
