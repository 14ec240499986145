//! The job as the coordinator describes it: payload types, variables, failure reasons and the
//! feature set a runner advertises. Plain data shared by `coordinator` (which produces it) and
//! `executor` (which consumes it); this module performs no I/O.

mod de;
mod failure;
mod features;
mod limits;
mod payload;
mod variables;

pub use de::json_error_kind;
pub use failure::FailureReason;
pub use features::FeaturesInfo;
pub use limits::{check_expansion, ExpansionError, MAX_EXPANDED_SCRIPT, MAX_EXPANDED_VALUE};
pub use payload::{
    Artifact, ArtifactsFile, Cache, Credential, Dependency, GitInfo, Hook, Image, JobFeatures,
    JobHandle, JobInfo, JobPayload, PayloadError, Port, RunnerInfo, Step, StepWhen,
};
pub use variables::{
    expand, expand_capped, go_arch, JobVariable, RunnerEnvironment, TooLarge, Variables,
};
