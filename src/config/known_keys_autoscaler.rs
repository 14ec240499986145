//! The compatibility table of `[runners.autoscaler]` (GitLab Runner's `docker-autoscaler`
//! executor), kept beside `known_keys` so the autoscaler's keys have one home: the keys Flotilla
//! carries over onto its own GCE fleet; every other key of GitLab Runner 19.x's (the generated
//! `known_keys_gitlab`) is accepted and ignored with a warning.
//!
//! Sources: the `toml:` tags of `AutoscalerConfig`, `ConnectorConfig` and
//! `AutoscalerPolicyConfig` in GitLab Runner 19.x's `common/config.go`, and the instance group
//! settings of `fleeting-plugin-googlecloud` (`name`, `project`, `zone`, `credentials_file`,
//! `endpoint`).

use super::known_keys::Section;

/// `[runners.autoscaler]`.
pub(super) const AUTOSCALER: Section = Section {
    gitlab: "runners.autoscaler",
    restricting: &[],
    supported: &[
        "plugin",
        "capacity_per_instance",
        "max_use_count",
        "max_instances",
        "plugin_config",
        "connector_config",
        "policy",
        "delete_instances_on_shutdown",
    ],
    older: &[],
};

/// `[runners.autoscaler.plugin_config]` of the googlecloud plugin: every key is read.
pub(super) const PLUGIN_CONFIG: Section = Section {
    // A free-form map in GitLab Runner (the plugin's own settings).
    gitlab: "",
    restricting: &[],
    supported: &["name", "project", "zone", "credentials_file", "endpoint"],
    older: &[],
};

/// `[runners.autoscaler.connector_config]`: Flotilla reaches each VM's dockerd over mutual TLS,
/// so only the address choice and the OS carry over.
pub(super) const CONNECTOR: Section = Section {
    gitlab: "runners.autoscaler.connector_config",
    restricting: &[],
    supported: &["use_external_addr", "os"],
    older: &[],
};

/// `[[runners.autoscaler.policy]]`.
pub(super) const POLICY: Section = Section {
    gitlab: "runners.autoscaler.policy",
    restricting: &[],
    supported: &[
        "periods",
        "timezone",
        "idle_count",
        "idle_time",
        "scale_factor",
        "scale_factor_limit",
    ],
    older: &[],
};

#[cfg(test)]
mod tests {
    use super::super::known_keys_gitlab::gitlab_keys;
    use super::*;

    #[test]
    fn every_carried_over_key_is_a_gitlab_runner_19_key() {
        for section in [&AUTOSCALER, &CONNECTOR, &POLICY] {
            let gitlab = gitlab_keys(section.gitlab).expect("a GitLab Runner section");
            for key in section.supported {
                assert!(gitlab.contains(key), "{key} is not in {}", section.gitlab);
                assert!(!section.is_ignored(key), "{key} is both read and ignored");
            }
        }
    }
}
