//! `testkit demo`: the README's demo. By default it shows what Flotilla is for: the real
//! `flotilla run` with `executor = "docker+machine"` against the fake Compute Engine (VMs that
//! are mutual-TLS endpoints to the local Docker engine) and the fake GitLab — a warm pool in two
//! zones, a burst of jobs larger than the pool, one zone stocked out part-way — with a live
//! progress line, each job's final state with its VM and zone, a summary table and a check that
//! nothing is left (`machine.rs`). `--local` keeps the older demo on the local `docker` executor
//! (`local.rs`). Not product code: the product is reached only through its binary, its config
//! file, its HTTP endpoints and what it sends to the fakes.

mod child;
mod leftovers;
mod local;
mod machine;
mod outcome;
mod progress;
mod samples;
mod summary;

use std::path::PathBuf;

/// What `testkit demo` was asked for.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// The `flotilla` binary to run.
    pub flotilla: PathBuf,
    /// Run the local `docker` executor demo instead of docker+machine.
    pub local: bool,
    /// Print every job's trace at the end (docker+machine; the local demo always prints them).
    pub traces: bool,
}

/// Runs the demo; `Ok(true)` when every job ended as expected (and, for docker+machine, nothing
/// was left behind and flotilla exited 0 after its drain).
pub async fn run(opts: &DemoOptions) -> anyhow::Result<bool> {
    if opts.local {
        local::run(&opts.flotilla).await
    } else {
        machine::run(opts).await
    }
}
