//! Flotilla's test kit: faithful fakes of the services Flotilla talks to, served on loopback for
//! integration tests, the demo and benchmarks: the fake GitLab (Runner API v4, see [`gitlab`]) and
//! the fake Compute Engine (Compute v1 REST with a TLS proxy per VM to the local Docker engine,
//! see [`gce`]), and the fake Cloud Storage with IAM signBlob and a metadata server for cache
//! tests (see [`gcs`]), and job arrivals for the autoscaling simulation ([`arrivals`]). Nothing
//! here is used by the `flotilla` binary itself.

#![forbid(unsafe_code)]

pub mod arrivals;
pub mod demo;
pub mod docker;
pub mod gce;
pub mod gcs;
pub mod gitlab;
pub mod tls_front;

pub use docker::{Behaviour, DockerStats, FakeDocker, FakeDockerOptions};
pub use gce::{FakeGce, FakeGceError, FakeGceOptions, GceFault, ZoneSpec};
pub use gcs::{FakeGcs, TestServiceAccount};
pub use gitlab::{
    AdminJob, FakeGitlab, FakeGitlabOptions, Fault, FeatureCheck, GitRepos, GitlabHandle,
    JobRecord, JobState, RecordedRequest, Repo, StoredArtifact,
};
pub use tls_front::TlsFront;
