//! Flotilla: an autoscaling CI runner manager for GitLab on Google Compute Engine.
//!
//! `main.rs` parses flags and loads the configuration, then calls
//! [`manager::run_reloadable`]; tests call [`manager::run_with`] (the same function without a
//! configuration file to reload) with the test kit's fakes. See `ARCHITECTURE.md` for the map of the code.
#![forbid(unsafe_code)]

pub mod cache;
pub mod cloud;
pub mod config;
pub mod coordinator;
pub mod docker;
pub mod error_chain;
pub mod executor;
pub mod fleet;
pub mod go_bool;
pub mod helper_commands;
pub mod job;
pub mod lifecycle;
pub mod logging;
pub mod manager;
pub mod metrics;
pub mod nofile;
pub mod redact;
pub mod register;
pub mod state;
pub mod time;
pub mod trace;

#[cfg(test)]
mod props;
#[cfg(test)]
mod testing;

/// Flotilla's version, as sent to GitLab in `info.version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
