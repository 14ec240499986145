//! The configuration: `config.toml` in GitLab Runner's spelling, parsed into an immutable snapshot
//! ([`Config`]) that the manager swaps on reload. Owns parsing, validation and the compatibility
//! policy; knows nothing of what the rest of the program does with the values.

mod model;

pub use model::*;
