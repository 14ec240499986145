//! The compatibility table: for each section of `config.toml`, the keys Flotilla reads and the keys
//! GitLab Runner documents that Flotilla accepts but ignores (with one warning each). A key in
//! neither list is an error. This is the one place to edit when Flotilla learns a key.
//!
//! Sources: GitLab Runner's `docs/configuration/advanced-configuration.md` and the `toml:` tags of
//! `common/config.go`.

/// The keys of one section.
pub(super) struct Section {
    /// Keys Flotilla reads (including sub-tables it descends into).
    pub supported: &'static [&'static str],
    /// Keys GitLab Runner documents that Flotilla ignores with a warning.
    pub ignored: &'static [&'static str],
    /// Ignored keys that restrict what a job may do: set to anything but GitLab Runner's
    /// default, they are an error, so an operator's restriction never silently does not apply.
    pub restricting: &'static [&'static str],
}

impl Section {
    /// Whether `key` is read by Flotilla.
    pub fn is_supported(&self, key: &str) -> bool {
        self.supported.contains(&key)
    }

    /// Whether `key` restricts jobs and is not implemented (an error unless at its default).
    pub fn is_restricting(&self, key: &str) -> bool {
        self.restricting.contains(&key)
    }

    /// Whether `key` is a GitLab Runner key that Flotilla ignores.
    pub fn is_ignored(&self, key: &str) -> bool {
        self.ignored.contains(&key)
    }

    /// Every key this section knows, for "did you mean" suggestions.
    pub fn all(&self) -> impl Iterator<Item = &'static str> {
        self.supported.iter().chain(self.ignored.iter()).copied()
    }
}

/// The global (top-level) section.
pub(super) const GLOBAL: Section = Section {
    restricting: &[],
    supported: &[
        "concurrent",
        "check_interval",
        "shutdown_timeout",
        "listen_address",
        "log_level",
        "log_format",
        "runners",
        // Flotilla's own keys.
        "state_dir",
        "manager_id",
        "reconcile_interval",
    ],
    ignored: &[
        "sentry_dsn",
        "connection_max_age",
        "user",
        "labels",
        "session_server",
        "machine",
    ],
};

/// One `[[runners]]` entry.
pub(super) const RUNNER: Section = Section {
    restricting: &[],
    supported: &[
        "name",
        "url",
        "token",
        "id",
        "token_obtained_at",
        "token_expires_at",
        "executor",
        "limit",
        "request_concurrency",
        "output_limit",
        "environment",
        "unhealthy_requests_limit",
        "unhealthy_interval",
        "docker",
        // Read with executor docker+machine only; ignored with a warning otherwise.
        "machine",
        // Flotilla's own table (docker+machine only).
        "gce",
        "cache",
        "autoscaler",
    ],
    ignored: &[
        "tls-ca-file",
        "tls-cert-file",
        "tls-key-file",
        "shell",
        "builds_dir",
        "cache_dir",
        "clone_url",
        "pre_clone_script",
        "post_clone_script",
        "pre_get_sources_script",
        "post_get_sources_script",
        "pre_build_script",
        "post_build_script",
        "debug_trace_disabled",
        "safe_directory_checkout",
        "clean_git_config",
        "feature_flags",
        "strict_check_interval",
        "job_status_final_update_retry_limit",
        "prepare_timeout",
        "get_sources_timeout",
        "labels",
        "custom_build_dir",
        "referees",
        "artifact",
        "instance",
        "kubernetes",
        "custom",
        "ssh",
        "parallels",
        "virtualbox",
    ],
};

/// `[runners.docker]`.
pub(super) const DOCKER: Section = Section {
    restricting: &[
        "user",
        "allowed_users",
        "allowed_privileged_images",
        "allowed_privileged_services",
        "cap_drop",
        "security_opt",
        "services_security_opt",
        "disable_cache",
        "userns_mode",
        "isolation",
        "memory_swap",
        "memory_reservation",
        "cpuset_cpus",
        "cpuset_mems",
        "cpu_shares",
        "service_cpuset_cpus",
        "service_cpu_shares",
        "service_cpus",
        "service_memory",
        "service_memory_swap",
        "service_memory_reservation",
        "ulimit",
    ],
    supported: &[
        "host",
        "image",
        "privileged",
        "pull_policy",
        "volumes",
        "network_mode",
        "cpus",
        "memory",
        "helper_image",
        "helper_image_archive",
        "wait_for_services_timeout",
        "services_privileged",
        "allowed_services",
        "services_limit",
        "allowed_images",
        "allowed_pull_policies",
        "tls_verify",
        "tls_cert_path",
    ],
    ignored: &[
        "hostname",
        "runtime",
        "memory_swap",
        "memory_reservation",
        "cpuset_cpus",
        "cpuset_mems",
        "cpu_shares",
        "dns",
        "dns_search",
        "disable_entrypoint_overwrite",
        "user",
        "allowed_users",
        "group_add",
        "userns_mode",
        "cap_add",
        "cap_drop",
        "oom_kill_disable",
        "oom_score_adjust",
        "security_opt",
        "services_security_opt",
        "devices",
        "device_cgroup_rules",
        "services_devices",
        "gpus",
        "disable_cache",
        "volume_driver",
        "volume_driver_ops",
        "cache_dir",
        "extra_hosts",
        "volumes_from",
        "ipcmode",
        "mac_address",
        "links",
        "services",
        "service_cpuset_cpus",
        "service_cpu_shares",
        "service_cpus",
        "service_gpus",
        "service_memory",
        "service_memory_swap",
        "service_memory_reservation",
        "allowed_privileged_images",
        "allowed_privileged_services",
        "isolation",
        "shm_size",
        "tmpfs",
        "services_tmpfs",
        "sysctls",
        "helper_image_flavor",
        "helper_image_autoset_arch_and_os",
        "container_labels",
        "log_options",
        "enable_ipv6",
        "ulimit",
        "network_mtu",
    ],
};

/// `[runners.cache]`.
pub(super) const CACHE: Section = Section {
    restricting: &[],
    supported: &["Type", "Path", "Shared", "MaxUploadedArchiveSize", "gcs"],
    ignored: &["s3", "azure"],
};

/// `[runners.cache.gcs]`: GitLab Runner's keys, then Flotilla's endpoint overrides (for tests).
pub(super) const CACHE_GCS: Section = Section {
    restricting: &[],
    supported: &[
        "BucketName",
        "CredentialsFile",
        "AccessID",
        "PrivateKey",
        "endpoint",
        "iam_endpoint",
        "metadata_endpoint",
    ],
    ignored: &["UniverseDomain"],
};

/// `[runners.machine]` (read with executor docker+machine; with another executor only checked for
/// typos, then ignored as a whole with one warning).
pub(super) const MACHINE: Section = Section {
    restricting: &[],
    supported: &[
        "IdleCount",
        "IdleCountMin",
        "IdleCountPolicy",
        "IdleScaleFactor",
        "IdleTime",
        "MaxBuilds",
        "MaxGrowthRate",
        "MachineDriver",
        "MachineName",
        "MachineOptions",
        "autoscaling",
    ],
    ignored: &[
        "MachineOptionsWithName",
        "MaxRemovalAttempts",
        // Deprecated in GitLab Runner, replaced by [[runners.machine.autoscaling]].
        "OffPeakPeriods",
        "OffPeakTimezone",
        "OffPeakIdleCount",
        "OffPeakIdleTime",
    ],
};

/// `[[runners.machine.autoscaling]]`.
pub(super) const MACHINE_AUTOSCALING: Section = Section {
    restricting: &[],
    supported: &[
        "Periods",
        "Timezone",
        "IdleCount",
        "IdleCountMin",
        "IdleScaleFactor",
        "IdleTime",
    ],
    ignored: &[],
};

/// `[runners.gce]`: Flotilla's own table, so nothing is ignored.
pub(super) const GCE: Section = Section {
    restricting: &[],
    supported: &[
        "project",
        "zones",
        "machine_type",
        "image",
        "disk_size_gb",
        "disk_type",
        "network",
        "subnetwork",
        "use_internal_ip",
        "internal_ip_only",
        "tags",
        "labels",
        "service_account",
        "scopes",
        "spot",
        "endpoint",
        "credentials_file",
        "create_timeout",
        "docker_port",
        "api_rate_per_minute",
        "zone_cooldown",
        "queue_aware_scaling",
    ],
    ignored: &[],
};

/// `MachineOptions` with `MachineDriver = "google"`: the options (without the leading `--`) of
/// docker-machine's google driver (GitLab's fork) and of `docker-machine create` itself. Supported
/// ones are mapped onto `[runners.gce]`; ignored ones earn a warning each.
///
/// Sources: `drivers/google/google.go` `GetCreateFlags` and `commands/commands.go` create flags
/// of gitlab-org/ci-cd/docker-machine.
pub(super) const MACHINE_OPTIONS: Section = Section {
    restricting: &[],
    supported: &[
        "google-project",
        "google-zone",
        "google-machine-type",
        "google-machine-image",
        "google-disk-size",
        "google-disk-type",
        "google-network",
        "google-subnetwork",
        "google-preemptible",
        "google-use-internal-ip",
        "google-use-internal-ip-only",
        "google-tags",
        "google-label",
        "google-service-account",
        "google-scopes",
    ],
    ignored: &[
        "google-username",
        "google-open-port",
        "google-use-existing",
        "google-address",
        "google-min-cpu-platform",
        "google-accelerator",
        "google-maintenance-policy",
        "google-metadata",
        "google-metadata-from-file",
        "google-skip-firewall-create",
        "google-provisioned-iops",
        "google-provisioned-throughput",
        "google-operation-backoff-initial-interval",
        "google-operation-backoff-randomization-factor",
        "google-operation-backoff-multipler",
        "google-operation-backoff-multiplier",
        "google-operation-backoff-max-interval",
        "google-operation-backoff-max-elapsed-time",
        "google-bulk-insert",
        "google-region",
        "google-flex-machine-type",
        "google-location-zone",
        "google-flex-stockout-cooldown",
        "google-flex-stockout-probe-lease",
        "engine-env",
        "engine-insecure-registry",
        "engine-install-url",
        "engine-label",
        "engine-opt",
        "engine-registry-mirror",
        "engine-storage-driver",
        "swarm",
        "swarm-image",
        "swarm-master",
        "swarm-discovery",
        "swarm-strategy",
        "swarm-opt",
        "swarm-join-opt",
        "swarm-host",
        "swarm-addr",
        "swarm-experimental",
        "tls-san",
    ],
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restricting_keys_are_ignored_keys() {
        for key in DOCKER.restricting {
            assert!(DOCKER.is_ignored(key), "{key}");
        }
    }

    #[test]
    fn no_key_is_both_supported_and_ignored() {
        for section in [
            &GLOBAL,
            &RUNNER,
            &DOCKER,
            &CACHE,
            &CACHE_GCS,
            &MACHINE,
            &MACHINE_AUTOSCALING,
            &GCE,
            &MACHINE_OPTIONS,
        ] {
            for key in section.supported {
                assert!(!section.is_ignored(key), "{key} is in both lists");
            }
        }
    }
}
