//! The commands' error type. Messages name the file, the runner (by name or short token) and
//! what to do next; never a token.

use super::api::ApiError;
use super::file::FileError;

/// Why a registration command failed (the file is untouched unless the message says otherwise).
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The configuration file cannot be read or rewritten.
    #[error(transparent)]
    File(#[from] FileError),
    /// A GitLab call failed.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The state directory (for the system id) cannot be used.
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    /// A required value was not given and cannot be asked for.
    #[error("the {0} needs to be entered (give it as a flag or its environment variable)")]
    Missing(&'static str),
    /// A flag's value is not valid.
    #[error("{0}")]
    Invalid(String),
    /// A server-side flag given with an authentication token.
    #[error("{flag}: Runner configuration other than name and executor configuration is reserved (specifically --locked, --access-level, --run-untagged, --maximum-timeout, --paused, --tag-list, and --maintenance-note) and cannot be specified when registering with a runner authentication token. This configuration is specified on the GitLab server. Please try again without specifying any of those arguments.")]
    ServerSideFlag {
        /// The flag, `--tag-list`.
        flag: &'static str,
    },
    /// No runner of the file matches.
    #[error("no runner matches {0} in the configuration file")]
    NoMatch(String),
    /// Some runners failed (each already reported).
    #[error("{0}")]
    Failed(String),
    /// An interactive prompt failed.
    #[error("cannot read the answer: {0}")]
    Prompt(String),
}
