//! What the executor tells about a job's progress while it runs: build stages opening and
//! closing (GitLab Runner's `OnBuildStageStartFn` / `OnBuildStageEndFn`) and the executor's own
//! stage (`docker_prepare`, `docker_run`, `docker_cleanup`, as GitLab Runner's docker executor
//! names them). The manager implements it over the job's metrics; the executor imports nothing
//! of them. A leaf below `section` and `ctx`.

/// Receives a job's stage changes. Calls are cheap and never block on I/O.
pub trait StageObserver: Send + Sync {
    /// Build stage `stage` starts (`prepare_executor`, `get_sources`, `step_script`, …).
    fn stage_started(&self, stage: &str);
    /// Build stage `stage` ended, however it ended.
    fn stage_ended(&self, stage: &str);
    /// The executor entered `stage`.
    fn executor_stage(&self, stage: &'static str);
}

/// GitLab Runner's docker executor stage while it prepares the job's containers.
pub const EXECUTOR_PREPARE: &str = "docker_prepare";
/// … while it runs the job's stages.
pub const EXECUTOR_RUN: &str = "docker_run";
/// … while it removes the job's containers, volumes and network.
pub const EXECUTOR_CLEANUP: &str = "docker_cleanup";
