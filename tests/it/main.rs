//! Flotilla's integration tests: one binary, modules inside. They use the real Docker engine and
//! the test kit's fakes over real HTTP on 127.0.0.1.

mod harness;
mod jobs;
mod mock_coordinator;
mod process;
