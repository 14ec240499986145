//! Flotilla's integration tests: one binary, one module per subsystem, run against the real
//! local Docker engine and the test kit's fakes over real HTTP on 127.0.0.1.
//!
//! - `architecture`: the import graph of `src/` has no cycle and no file is over 500 lines of logic.
//! - `artifacts`: jobs uploading artifacts and dependencies downloading them (helper image).
//! - `cache`: job caches end to end (local volume; GCS through the fake with signed URLs).
//! - `cli`: issue 15's logs and command line through the binary (JSON log lines, global log
//!   flags, `CONFIG_FILE`, GitLab Runner's service unit flags).
//! - `cloud_gce`: the GCE `Cloud` against the fake Compute Engine.
//! - `config_compat`: issue 15 — GitLab Runner 19.x files with the real binary (skipped
//!   executors, the time zone of autoscaling periods).
//! - `support`: shared helpers (test images, Docker connection, waiting on a trace).
//! - `harness`: a fake GitLab, a config pointing at it, the manager in-process or as a binary.
//! - `executor`: job stages in containers on the local engine.
//! - `fake_docker`: the test kit's fake Docker Engine against bollard, the `docker` executor
//!   and docker+machine VMs (issue 13).
//! - `hardening`: issue 12 — leftovers of a killed process removed at start, hostile jobs.
//! - `jobs`: whole jobs from the fake GitLab through the manager.
//! - `intake`: issue 13 — jobs taken without waiting for `check_interval` under long polling.
//! - `lifecycle`: drains, aborts, hot reload, `kill -9` loops and the upgrade script (issue 5).
//! - `process`: the real `flotilla` binary (crash recovery, log secrecy, `config check`).
//! - `mock_coordinator`: the happy path against `gitlab-runner-mock`.
//! - `sources`: the helper container and `get_sources` (git over smart HTTP from the fake GitLab).
//! - `helper_archive`: the helper image loaded from a `docker save` tarball onto an engine
//!   lacking it (`helper_image_archive`).
//! - `docker_tls`: a fake GCE VM's dockerd over mutual TLS, verified by VM name.
//! - `gitlab_tls`: the fake GitLab behind a private CA and mutual TLS (`tls-ca-file`,
//!   `tls-cert-file`, `tls-key-file`), jobs and git clones through it (issue 15 item 7).
//! - `metrics_parity`: process, configuration and stage series and `/debug/jobs/list` on the
//!   running manager (issue 15 item 6).
//! - `vm_startup`: the VM startup script against a fake metadata server, in a scratch root.
//! - `registration`: register, verify, unregister, list, reset-token and token rotation (issue 10).
//! - `registry`: private images pulled with the job's credentials from Debian's docker-registry.
//! - `services`: service containers (aliases, variables, waiting for ports, host mode).
//! - `observability`: `/metrics` scraped by a real Prometheus, every dashboard expression and the
//!   alert rules checked with it and promtool, the status page rendered by headless Chromium.
//! - `prom`: a real Prometheus server and promtool for those checks.
//! - `many_jobs`: issue 13 — 40 (and, ignored, 150) `docker` jobs at once on the default engine,
//!   without and with `FF_NETWORK_PER_BUILD`.
//! - `machine_e2e`: docker+machine jobs on fake GCE VMs end to end (warm pool, MaxBuilds, IdleTime,
//!   limit and MaxGrowthRate, stockouts, rate limits, preemption, leftovers, shutdowns).

mod architecture;
mod artifacts;
mod cache;
mod cli;
mod cloud_gce;
mod config_compat;
mod docker_tls;
mod executor;
mod fake_docker;
mod gitlab_tls;
mod hardening;
mod harness;
mod helper_archive;
mod intake;
mod jobs;
mod lifecycle;
mod machine_e2e;
mod many_jobs;
mod metrics_parity;
mod mock_coordinator;
mod observability;
mod process;
mod prom;
mod registration;
mod registry;
mod services;
mod sources;
mod support;
mod vm_startup;
