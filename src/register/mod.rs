//! Runner registration and the token's life, in GitLab Runner's spelling: `flotilla register`,
//! `verify`, `unregister`, `list` and `reset-token` (`add.rs`, `manage.rs`, their flags in
//! `args.rs`), GitLab's runner-management calls (`api.rs`), and the locked, byte-keeping
//! rewrite of `config.toml` (`file.rs`) that the commands and the manager's token rotation
//! share. Never imports the manager.

mod add;
pub mod api;
pub mod args;
mod error;
pub mod file;
mod manage;
mod prompt;
mod system;

#[cfg(test)]
mod tests;

pub use add::register;
pub use error::CommandError;
pub use manage::{list, reset_token, unregister, verify};
