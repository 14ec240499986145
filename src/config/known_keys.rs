//! The compatibility table: for each section of `config.toml`, the keys Flotilla reads, and the
//! keys GitLab Runner has that Flotilla accepts but ignores (one warning each, none when set to
//! GitLab Runner's default). A key in neither is an error (a typo, with a "did you mean").
//!
//! GitLab Runner's keys come from `known_keys_gitlab` (generated from the `toml:` tags of
//! GitLab Runner 19.x's config structs by `scripts/gen-known-keys.py`; every 19.x key loads): a
//! section names its TOML path there, and anything not in `supported` is ignored. `older` adds
//! keys earlier GitLab Runner versions wrote. This is the one place to edit when Flotilla learns
//! a key.

use super::known_keys_gitlab::gitlab_keys;

/// The keys of one section.
pub(super) struct Section {
    /// The section's TOML path in GitLab Runner's key list (`known_keys_gitlab`); empty for a
    /// table GitLab Runner does not have.
    pub gitlab: &'static str,
    /// Keys Flotilla reads (including sub-tables it descends into).
    pub supported: &'static [&'static str],
    /// Keys Flotilla ignores with a warning beyond GitLab Runner 19.x's (older versions' keys,
    /// docker-machine options).
    pub older: &'static [&'static str],
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
        !self.is_supported(key) && (self.gitlab().contains(&key) || self.older.contains(&key))
    }

    /// GitLab Runner 19.x's keys of this section.
    fn gitlab(&self) -> &'static [&'static str] {
        gitlab_keys(self.gitlab).unwrap_or(&[])
    }

    /// Every key this section knows, for "did you mean" suggestions.
    pub fn all(&self) -> impl Iterator<Item = &'static str> {
        self.supported
            .iter()
            .chain(self.gitlab().iter())
            .chain(self.older.iter())
            .copied()
    }
}

/// A value as `gitlab-runner register` writes it.
pub(super) enum Written {
    /// A string.
    Str(&'static str),
    /// An integer.
    Int(i64),
}

/// Keys Flotilla ignores that `gitlab-runner register` writes with a value other than the
/// type's zero: at that value they earn no warning (GitLab Runner's defaults, nothing lost).
pub(super) const REGISTER_WRITES: &[(&str, Written)] = &[
    ("connection_max_age", Written::Str("15m0s")),
    ("session_timeout", Written::Int(1800)),
];

/// The global (top-level) section.
pub(super) const GLOBAL: Section = Section {
    gitlab: ".",
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
    older: &[],
};

/// One `[[runners]]` entry.
pub(super) const RUNNER: Section = Section {
    gitlab: "runners",
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
        "tls-ca-file",
        "tls-cert-file",
        "tls-key-file",
        "docker",
        // Read with executor docker+machine only; ignored with a warning otherwise.
        "machine",
        // Flotilla's own table (docker+machine only).
        "gce",
        "cache",
        "autoscaler",
    ],
    older: &["pre_clone_script", "post_clone_script"],
};

/// `[runners.docker]`.
pub(super) const DOCKER: Section = Section {
    gitlab: "runners.docker",
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
        // Flotilla's own: the range the FF_NETWORK_PER_BUILD networks' subnets come from.
        "network_per_build_pool",
        "network_per_build_prefix",
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
    older: &["helper_image_autoset_arch_and_os"],
};

/// `[runners.cache]`.
pub(super) const CACHE: Section = Section {
    gitlab: "runners.cache",
    restricting: &[],
    supported: &["Type", "Path", "Shared", "MaxUploadedArchiveSize", "gcs"],
    older: &[],
};

/// `[runners.cache.gcs]`: GitLab Runner's keys, then Flotilla's endpoint overrides (for tests).
pub(super) const CACHE_GCS: Section = Section {
    gitlab: "runners.cache.gcs",
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
    older: &[],
};

/// `[runners.machine]` (read with executor docker+machine; with another executor only checked for
/// typos, then ignored as a whole with one warning).
pub(super) const MACHINE: Section = Section {
    gitlab: "runners.machine",
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
    older: &[],
};

/// `[[runners.machine.autoscaling]]`.
pub(super) const MACHINE_AUTOSCALING: Section = Section {
    gitlab: "runners.machine.autoscaling",
    restricting: &[],
    supported: &[
        "Periods",
        "Timezone",
        "IdleCount",
        "IdleCountMin",
        "IdleScaleFactor",
        "IdleTime",
    ],
    older: &[],
};

/// `[runners.gce]`: Flotilla's own table, so nothing is ignored.
pub(super) const GCE: Section = Section {
    gitlab: "",
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
    older: &[],
};

/// `MachineOptions` with `MachineDriver = "google"`: the options (without the leading `--`) of
/// docker-machine's google driver (GitLab's fork) and of `docker-machine create` itself. Supported
/// ones are mapped onto `[runners.gce]`; ignored ones earn a warning each.
///
/// Sources: `drivers/google/google.go` `GetCreateFlags` and `commands/commands.go` create flags
/// of gitlab-org/ci-cd/docker-machine.
pub(super) const MACHINE_OPTIONS: Section = Section {
    gitlab: "",
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
    older: &[
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

    /// The extract `known_keys_gitlab` is generated from (`scripts/gen-known-keys.py`).
    const EXTRACT: &str = include_str!("../../tests/fixtures/gitlab-runner-19-keys.txt");

    fn extract() -> std::collections::BTreeMap<&'static str, Vec<&'static str>> {
        let mut sections = std::collections::BTreeMap::<_, Vec<_>>::new();
        for line in EXTRACT
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let (section, key) = line.split_once(' ').expect("SECTION KEY");
            sections.entry(section).or_default().push(key);
        }
        sections
    }

    #[test]
    fn gitlab_table_matches_the_extract() {
        let sections = extract();
        assert!(sections.len() > 50, "{}", sections.len());
        for (section, keys) in &sections {
            let mut table = gitlab_keys(section)
                .unwrap_or_else(|| panic!("{section} missing: regenerate known_keys_gitlab.rs"))
                .to_vec();
            table.sort_unstable();
            let mut keys = keys.clone();
            keys.sort_unstable();
            assert_eq!(table, keys, "{section}: regenerate known_keys_gitlab.rs");
        }
        // No section in the table that the extract lacks.
        let all = EXTRACT.lines().filter(|l| !l.starts_with('#')).count();
        let listed: usize = sections
            .keys()
            .filter_map(|s| gitlab_keys(s))
            .map(<[_]>::len)
            .sum();
        assert_eq!(all, listed);
    }

    #[test]
    fn every_gitlab_runner_19_key_of_a_read_section_is_known() {
        let sections = extract();
        for section in [
            &GLOBAL,
            &RUNNER,
            &DOCKER,
            &CACHE,
            &CACHE_GCS,
            &MACHINE,
            &MACHINE_AUTOSCALING,
        ] {
            let keys = &sections[section.gitlab];
            for key in keys {
                assert!(
                    section.is_supported(key) || section.is_ignored(key),
                    "{}.{key}",
                    section.gitlab
                );
            }
        }
        for (section, key) in [
            ("runners.docker", "cgroup_parent"),
            ("runners.docker", "pid_mode"),
            ("runners.docker", "volume_keep"),
            ("runners.docker", "service_cgroup_parent"),
            ("runners.docker", "service_slot_cgroup_template"),
            ("runners", "proxy_exec"),
            ("runners", "use_slot_cgroups"),
            ("runners", "slot_cgroup_template"),
            ("runners", "step_runner_image"),
            ("runners", "monitoring"),
            ("runners", "experimental"),
            (".", "experimental"),
        ] {
            assert!(sections[section].contains(&key), "{section}.{key}");
        }
    }

    #[test]
    fn restricting_keys_are_ignored_keys() {
        for key in DOCKER.restricting {
            assert!(DOCKER.is_ignored(key), "{key}");
        }
    }

    #[test]
    fn supported_keys_are_never_ignored() {
        for section in [&DOCKER, &MACHINE, &MACHINE_OPTIONS, &GCE, &CACHE] {
            for key in section.supported {
                assert!(!section.is_ignored(key), "{key} is in both lists");
            }
        }
        assert!(!GCE.is_ignored("cgroup_parent"));
    }
}
