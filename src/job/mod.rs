//! The job as the coordinator describes it: payload types, variables, failure reasons, the
//! feature set a runner advertises, and how a job ended (`outcome.rs`: the executor's outcome
//! and the pure mapping onto the final state GitLab is told). Plain data shared by `coordinator` (which produces it) and
//! `executor` (which consumes it); this module performs no I/O.

mod de;
mod failure;
mod features;
mod limits;
mod outcome;
mod payload;
mod variables;

pub use de::json_error_kind;
pub use failure::FailureReason;
pub use features::FeaturesInfo;
pub use limits::{check_expansion, ExpansionError, MAX_EXPANDED_SCRIPT, MAX_EXPANDED_VALUE};
pub use outcome::{final_state, EndContext, FinalState, JobOutcome, JobState};
pub use payload::{
    Artifact, ArtifactsFile, Cache, Credential, Dependency, GitInfo, Hook, Image, JobFeatures,
    JobHandle, JobInfo, JobPayload, PayloadError, Port, RunnerInfo, Step, StepWhen,
};
pub use variables::{
    expand, expand_capped, go_arch, JobVariable, RunnerEnvironment, TooLarge, Variables,
};
