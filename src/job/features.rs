//! The feature booleans a runner advertises in `info.features` (GitLab Runner's
//! `common.FeaturesInfo`, same keys in the same order). GitLab hands a job needing an unadvertised
//! feature to the runner anyway and fails it as `runner_unsupported`, so each is true exactly when
//! Flotilla implements it.

use serde::{Deserialize, Serialize};

/// The `features` block of `info`. Every key is always serialized.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FeaturesInfo {
    pub variables: bool,
    pub image: bool,
    pub services: bool,
    pub artifacts: bool,
    pub cache: bool,
    pub fallback_cache_keys: bool,
    pub shared: bool,
    pub upload_multiple_artifacts: bool,
    pub upload_raw_artifacts: bool,
    pub session: bool,
    pub terminal: bool,
    pub refspecs: bool,
    pub masking: bool,
    pub proxy: bool,
    pub raw_variables: bool,
    pub artifacts_exclude: bool,
    pub multi_build_steps: bool,
    pub trace_reset: bool,
    pub trace_checksum: bool,
    pub trace_size: bool,
    pub vault_secrets: bool,
    pub cancelable: bool,
    pub return_exit_code: bool,
    pub service_variables: bool,
    pub service_multiple_aliases: bool,
    pub image_executor_opts: bool,
    pub service_executor_opts: bool,
    pub cancel_gracefully: bool,
    pub native_steps_integration: bool,
    pub two_phase_job_commit: bool,
    pub job_inputs: bool,
}

impl FeaturesInfo {
    /// What Flotilla's docker executor implements today: variables (with `file` and `raw`), the
    /// job image and services (with their variables, multiple aliases and docker executor
    /// options), masking, multiple script steps, the trace protocol (reset, checksum, size),
    /// graceful cancel, exit codes, the two-phase commit, fetching the payload's git refspecs,
    /// artifacts (zip archives, gzip and raw reports, exclusions) and caches with fallback keys.
    pub fn implemented() -> Self {
        FeaturesInfo {
            variables: true,
            image: true,
            cache: true,
            fallback_cache_keys: true,
            services: true,
            masking: true,
            raw_variables: true,
            multi_build_steps: true,
            trace_reset: true,
            trace_checksum: true,
            trace_size: true,
            cancelable: true,
            return_exit_code: true,
            service_variables: true,
            service_multiple_aliases: true,
            image_executor_opts: true,
            service_executor_opts: true,
            cancel_gracefully: true,
            two_phase_job_commit: true,
            refspecs: true,
            artifacts: true,
            upload_multiple_artifacts: true,
            upload_raw_artifacts: true,
            artifacts_exclude: true,
            ..FeaturesInfo::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> serde_json::Value {
        let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        serde_json::from_str(&text).unwrap()
    }

    #[test]
    fn serializes_every_key_in_gitlab_runner_order() {
        let all_on = fixture("request_info_features_all_enabled.json");
        let ours = serde_json::to_value(FeaturesInfo::implemented()).unwrap();
        let theirs: Vec<&String> = all_on.as_object().unwrap().keys().collect();
        let mine: Vec<&String> = ours.as_object().unwrap().keys().collect();
        assert_eq!(mine, theirs);
        let off: FeaturesInfo =
            serde_json::from_value(fixture("request_info_features_all_disabled.json")).unwrap();
        assert_eq!(off, FeaturesInfo::default());
    }
}
