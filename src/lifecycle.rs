//! Signals have one owner: SIGQUIT, SIGTERM, SIGINT and SIGHUP become [`Control`] messages on a
//! channel that the manager's main loop selects on. Nothing else in the program looks at signals.

use futures_util::StreamExt;
use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM};
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
    let mut signals = signal_hook_tokio::Signals::new([SIGQUIT, SIGTERM, SIGINT, SIGHUP])?;
    let handle = signals.handle();
    let (tx, rx) = mpsc::channel(16);
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
    Ok(rx)
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
}
