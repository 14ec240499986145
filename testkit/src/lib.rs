//! Flotilla's test kit: faithful fakes of the services Flotilla talks to, served on loopback for
//! integration tests, the demo and benchmarks. Today: the fake GitLab (Runner API v4, see
//! [`gitlab`]). Nothing here is used by the `flotilla` binary itself.

#![forbid(unsafe_code)]

pub mod gitlab;

pub use gitlab::{
    AdminJob, FakeGitlab, FakeGitlabOptions, Fault, FeatureCheck, GitlabHandle, JobRecord,
    JobState, RecordedRequest,
};
