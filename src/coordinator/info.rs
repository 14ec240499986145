//! The `info` block sent with every job request and job update (GitLab Runner's
//! `common.VersionInfo`): who we are, where we run and which features we implement. Owns the
//! spelling of the platform and architecture; knows nothing of HTTP.

use serde::Serialize;

use crate::job::FeaturesInfo;

/// Flotilla's source revision, from `FLOTILLA_REVISION` at build time (`unknown` otherwise).
pub const REVISION: &str = match option_env!("FLOTILLA_REVISION") {
    Some(rev) => rev,
    None => "unknown",
};

/// The `info` object of `jobs/request` and `PUT jobs/:id`. Built once by [`super::Coordinator::new`].
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct VersionInfo {
    /// Always `flotilla`.
    pub name: &'static str,
    /// [`crate::VERSION`].
    pub version: &'static str,
    /// [`REVISION`].
    pub revision: &'static str,
    /// Operating system, Go spelling (`linux`).
    pub platform: &'static str,
    /// Architecture, Go spelling (`amd64`, `arm64`).
    pub architecture: &'static str,
    /// Executor name (`docker`).
    pub executor: String,
    /// Shell of the generated scripts (`bash`).
    pub shell: &'static str,
    /// Every feature key, always all present.
    pub features: FeaturesInfo,
    /// Executor configuration GitLab reads (`gpus` only; always present).
    pub config: InfoConfig,
}

/// The `info.config` object.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct InfoConfig {
    /// GPUs requested for job containers; empty = none.
    pub gpus: String,
}

impl VersionInfo {
    /// The block for this build, with the given executor and features.
    pub fn new(executor: &str, features: FeaturesInfo) -> Self {
        VersionInfo {
            name: "flotilla",
            version: crate::VERSION,
            revision: REVISION,
            platform: go_os(std::env::consts::OS),
            architecture: go_arch(std::env::consts::ARCH),
            executor: executor.to_string(),
            shell: "bash",
            features,
            config: InfoConfig::default(),
        }
    }
}

/// `User-Agent: flotilla <version> (<os>/<arch>)`.
pub fn user_agent() -> String {
    format!(
        "flotilla {} ({}/{})",
        crate::VERSION,
        go_os(std::env::consts::OS),
        go_arch(std::env::consts::ARCH)
    )
}

/// Rust's `std::env::consts::OS` in Go's `runtime.GOOS` spelling.
fn go_os(os: &'static str) -> &'static str {
    match os {
        "macos" => "darwin",
        other => other,
    }
}

/// Rust's `std::env::consts::ARCH` in Go's `runtime.GOARCH` spelling, which GitLab shows.
pub fn go_arch(arch: &'static str) -> &'static str {
    match arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        "loongarch64" => "loong64",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn architectures_use_go_names() {
        assert_eq!(go_arch("x86_64"), "amd64");
        assert_eq!(go_arch("aarch64"), "arm64");
        assert_eq!(go_arch("s390x"), "s390x");
    }

    #[test]
    fn info_has_the_keys_gitlab_reads() {
        let info =
            serde_json::to_value(VersionInfo::new("docker", FeaturesInfo::implemented())).unwrap();
        assert_eq!(info["name"], "flotilla");
        assert_eq!(info["version"], crate::VERSION);
        assert_eq!(info["platform"], "linux");
        assert_eq!(info["executor"], "docker");
        assert_eq!(info["shell"], "bash");
        assert_eq!(info["config"], serde_json::json!({"gpus": ""}));
        assert_eq!(info["features"].as_object().unwrap().len(), 31);
        assert!(user_agent().starts_with(&format!("flotilla {} (linux/", crate::VERSION)));
    }
}
