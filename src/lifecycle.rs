//! Signals have one owner: SIGQUIT, SIGTERM, SIGINT and SIGHUP become [`Control`] messages on a
//! channel that the manager's main loop selects on. Nothing else in the program looks at signals.
//! A change of the configuration file is one more source of [`Control::Reload`]
//! ([`watch_config_file`]).

use futures_util::StreamExt;
use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc;

/// What the operator asked the manager to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// SIGQUIT: stop taking jobs, let running ones finish, then exit.
    Drain,
    /// SIGTERM/SIGINT: stop running jobs, report them, clean up, exit within `shutdown_timeout`.
    Abort,
    /// SIGHUP: reload the configuration file.
    Reload,
}

impl Control {
    /// The control a signal number stands for.
    pub fn from_signal(signal: i32) -> Option<Control> {
        match signal {
            SIGQUIT => Some(Control::Drain),
            SIGTERM | SIGINT => Some(Control::Abort),
            SIGHUP => Some(Control::Reload),
            _ => None,
        }
    }
}

/// Starts listening for the four signals; each one received is sent on the returned channel.
/// The listening task ends when `stop` is cancelled or the receiver is dropped.
pub fn listen_for_signals(
    tracker: &tokio_util::task::TaskTracker,
    stop: tokio_util::sync::CancellationToken,
) -> std::io::Result<mpsc::Receiver<Control>> {
    let (tx, rx) = mpsc::channel(16);
    send_signals_to(tracker, stop, tx)?;
    Ok(rx)
}

/// [`listen_for_signals`] onto an existing channel (shared with [`watch_config_file`]).
pub fn send_signals_to(
    tracker: &tokio_util::task::TaskTracker,
    stop: tokio_util::sync::CancellationToken,
    tx: mpsc::Sender<Control>,
) -> std::io::Result<()> {
    let mut signals = signal_hook_tokio::Signals::new([SIGQUIT, SIGTERM, SIGINT, SIGHUP])?;
    let handle = signals.handle();
    tracker.spawn(async move {
        loop {
            let signal = tokio::select! {
                _ = stop.cancelled() => break,
                signal = signals.next() => signal,
            };
            let Some(signal) = signal else { break };
            let Some(control) = Control::from_signal(signal) else {
                continue;
            };
            if tx.send(control).await.is_err() {
                break;
            }
        }
        handle.close();
    });
    Ok(())
}

/// How long the configuration file must stay unchanged before a reload: an editor's or Chef's
/// write comes as several events (write temp file, rename over the old one).
pub const RELOAD_DEBOUNCE: Duration = Duration::from_millis(500);

/// Sends [`Control::Reload`] when the file at `path` changes. Watches the file's directory (not
/// the file), so a rename over it — how editors and Chef replace files — is seen as well as a
/// write in place; events are debounced by [`RELOAD_DEBOUNCE`]. Ends when `stop` is cancelled
/// or the receiver is dropped.
pub fn watch_config_file(
    tracker: &tokio_util::task::TaskTracker,
    stop: tokio_util::sync::CancellationToken,
    path: &Path,
    tx: mpsc::Sender<Control>,
) -> notify::Result<()> {
    use notify::Watcher;
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let dir = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let Some(name) = path.file_name().map(|n| n.to_os_string()) else {
        return Err(notify::Error::generic(
            "the configuration path names no file",
        ));
    };
    // Unbounded: the notify thread must not block; the task below drains it at once.
    let (events_tx, mut events) = mpsc::unbounded_channel::<()>();
    let mut watcher =
        notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
            Ok(event) if event.paths.iter().any(|p| p.file_name() == Some(&name)) => {
                if !matches!(event.kind, notify::EventKind::Access(_)) {
                    let _ = events_tx.send(());
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "watching the configuration file failed"),
        })?;
    watcher.watch(&dir, notify::RecursiveMode::NonRecursive)?;
    tracker.spawn(async move {
        // Owned by the task: dropping it stops the watch.
        let _watcher = watcher;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                event = events.recv() => if event.is_none() { break },
            }
            // Quiet for RELOAD_DEBOUNCE: the write is complete.
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(RELOAD_DEBOUNCE) => break,
                    event = events.recv() => if event.is_none() { return },
                }
            }
            tracing::info!(file = %path.display(), "configuration file changed: reloading");
            if tx.send(Control::Reload).await.is_err() {
                break;
            }
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_map_to_controls() {
        assert_eq!(Control::from_signal(SIGQUIT), Some(Control::Drain));
        assert_eq!(Control::from_signal(SIGTERM), Some(Control::Abort));
        assert_eq!(Control::from_signal(SIGINT), Some(Control::Abort));
        assert_eq!(Control::from_signal(SIGHUP), Some(Control::Reload));
        assert_eq!(Control::from_signal(9), None);
    }

    /// Waits up to 10 s for the next control.
    async fn next(rx: &mut mpsc::Receiver<Control>) -> Option<Control> {
        tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .ok()
            .flatten()
    }

    #[tokio::test]
    async fn a_rewrite_or_a_rename_over_the_file_is_one_debounced_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "concurrent = 1\n").unwrap();
        let tracker = tokio_util::task::TaskTracker::new();
        let stop = tokio_util::sync::CancellationToken::new();
        let (tx, mut rx) = mpsc::channel(16);
        watch_config_file(&tracker, stop.clone(), &path, tx).unwrap();

        // An unrelated file in the directory is not a reload.
        std::fs::write(dir.path().join("other.txt"), "x").unwrap();
        // Several writes in a burst: one reload.
        for i in 0..5 {
            std::fs::write(&path, format!("concurrent = {i}\n")).unwrap();
        }
        assert_eq!(next(&mut rx).await, Some(Control::Reload));
        // Chef and editors: write a temporary file, rename it over the old one.
        let temp = dir.path().join(".config.toml.tmp");
        std::fs::write(&temp, "concurrent = 9\n").unwrap();
        std::fs::rename(&temp, &path).unwrap();
        assert_eq!(next(&mut rx).await, Some(Control::Reload));
        assert!(
            tokio::time::timeout(RELOAD_DEBOUNCE * 4, rx.recv())
                .await
                .is_err(),
            "one reload per change, none for the other file"
        );
        stop.cancel();
        tracker.close();
        tracker.wait().await;
    }
}
