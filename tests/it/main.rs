//! Flotilla's integration tests: one binary, one module per subsystem, run against the real
//! local Docker engine and the test kit's fakes.
//!
//! - `support`: shared helpers (test images, Docker connection, waiting on a trace).
//! - `executor`: job stages in containers on the local engine.

mod executor;
mod support;
