//! The `flotilla run` child process of a demo: started on a config file (its output inherited or
//! sent to a log file), drained with SIGQUIT at the end, killed if the demo itself fails first
//! (`kill_on_drop`). Owns only the process, not what it does.

use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::Context as _;

/// A running `flotilla run -c <config>`. Made by [`Flotilla::spawn`]; [`Flotilla::drain`] ends
/// it as an operator would; dropping it kills the process.
pub(super) struct Flotilla {
    child: tokio::process::Child,
}

impl Flotilla {
    /// Starts `binary run -c config`; its stdout and stderr go to `log` when given, else they
    /// are inherited.
    pub(super) fn spawn(binary: &Path, config: &Path, log: Option<&Path>) -> anyhow::Result<Self> {
        let mut cmd = tokio::process::Command::new(binary);
        cmd.arg("run").arg("-c").arg(config).kill_on_drop(true);
        if let Some(log) = log {
            let out = std::fs::File::create(log)
                .with_context(|| format!("creating flotilla's log {}", log.display()))?;
            let err = out.try_clone().context("duplicating the log file handle")?;
            cmd.stdin(Stdio::null())
                .stdout(Stdio::from(out))
                .stderr(Stdio::from(err));
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        Ok(Flotilla { child })
    }

    /// Whether the process already exited (and how), without waiting.
    pub(super) fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Sends SIGQUIT (drain: running jobs finish, every VM is deleted) and waits up to `within`
    /// for the process to exit; a process that already exited gives its status.
    pub(super) async fn drain(mut self, within: Duration) -> anyhow::Result<ExitStatus> {
        if let Some(status) = self.exited() {
            return Ok(status);
        }
        if let Some(pid) = self.child.id() {
            let status = std::process::Command::new("kill")
                .args(["-QUIT", &pid.to_string()])
                .status()
                .context("running kill -QUIT")?;
            anyhow::ensure!(status.success(), "kill -QUIT {pid} failed: {status}");
        }
        tokio::time::timeout(within, self.child.wait())
            .await
            .with_context(|| format!("flotilla did not exit within {within:?} of SIGQUIT"))?
            .context("waiting for flotilla")
    }
}
