//! The compatibility table of `[runners.autoscaler]` (GitLab Runner's `docker-autoscaler`
//! executor), kept beside `known_keys` so the autoscaler's keys have one home: the keys Flotilla
//! carries over onto its own GCE fleet, and the ones it accepts and ignores with a warning.
//!
//! Sources: the `toml:` tags of `AutoscalerConfig`, `ConnectorConfig` and
//! `AutoscalerPolicyConfig` in GitLab Runner 19.x's `common/config.go`, and the instance group
//! settings of `fleeting-plugin-googlecloud` (`name`, `project`, `zone`, `credentials_file`,
//! `endpoint`).

use super::known_keys::Section;

/// `[runners.autoscaler]`.
pub(super) const AUTOSCALER: Section = Section {
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
    ignored: &[
        "instance_ready_command",
        "instance_acquire_timeout",
        "update_interval",
        "update_interval_when_expecting",
        "deletion_retry_interval",
        "shutdown_deletion_interval",
        "shutdown_deletion_retries",
        "failure_threshold",
        "scale_throttle",
        "reservation_throttling",
        "log_internal_ip",
        "log_external_ip",
        "vm_isolation",
        "state_storage",
        "instance_operation_time_buckets",
        "instance_creation_time_buckets",
        "instance_is_running_time_buckets",
        "instance_deletion_time_buckets",
        "instance_readiness_time_buckets",
        "instance_life_duration_buckets",
    ],
};

/// `[runners.autoscaler.plugin_config]` of the googlecloud plugin: every key is read.
pub(super) const PLUGIN_CONFIG: Section = Section {
    restricting: &[],
    supported: &["name", "project", "zone", "credentials_file", "endpoint"],
    ignored: &[],
};

/// `[runners.autoscaler.connector_config]`: Flotilla reaches each VM's dockerd over mutual TLS,
/// so only the address choice and the OS carry over.
pub(super) const CONNECTOR: Section = Section {
    restricting: &[],
    supported: &["use_external_addr", "os"],
    ignored: &[
        "arch",
        "protocol",
        "protocol_port",
        "username",
        "password",
        "key_path",
        "use_static_credentials",
        "keepalive",
        "timeout",
    ],
};

/// `[[runners.autoscaler.policy]]`.
pub(super) const POLICY: Section = Section {
    restricting: &[],
    supported: &[
        "periods",
        "timezone",
        "idle_count",
        "idle_time",
        "scale_factor",
        "scale_factor_limit",
    ],
    ignored: &["preemptive_mode"],
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_autoscaler_key_is_both_supported_and_ignored() {
        for section in [&AUTOSCALER, &PLUGIN_CONFIG, &CONNECTOR, &POLICY] {
            for key in section.supported {
                assert!(!section.is_ignored(key), "{key} is in both lists");
            }
        }
    }
}
