//! The first stage of loading: the file's values in GitLab Runner's spelling, type-checked but not
//! yet validated, each with the line it came from so the validator can point at it. Built by
//! `reader`, consumed by `validate`; nothing else sees these types (no `Debug`: they hold the
//! runner token in clear).

/// A value and the 1-based line of its key.
pub(super) struct Field<T> {
    /// The value as written.
    pub value: T,
    /// The line of its key.
    pub line: usize,
}

/// The top-level keys.
#[derive(Default)]
pub(super) struct RawConfig {
    pub concurrent: Option<Field<i64>>,
    pub check_interval: Option<Field<i64>>,
    pub shutdown_timeout: Option<Field<i64>>,
    pub listen_address: Option<Field<String>>,
    pub log_level: Option<Field<String>>,
    pub log_format: Option<Field<String>>,
    pub state_dir: Option<Field<String>>,
    pub manager_id: Option<Field<String>>,
    pub reconcile_interval: Option<Field<i64>>,
    /// The `[[runners]]` entries found (possibly none).
    pub runners: Vec<RawRunner>,
}

/// One `[[runners]]` entry.
#[derive(Default)]
pub(super) struct RawRunner {
    /// The line of the `[[runners]]` header.
    pub line: usize,
    /// The key path of the entry (`runners[0]`).
    pub path: String,
    pub name: Option<Field<String>>,
    pub url: Option<Field<String>>,
    pub token: Option<Field<String>>,
    pub executor: Option<Field<String>>,
    pub limit: Option<Field<i64>>,
    pub request_concurrency: Option<Field<i64>>,
    pub output_limit: Option<Field<i64>>,
    pub environment: Option<Field<Vec<String>>>,
    pub unhealthy_requests_limit: Option<Field<i64>>,
    pub unhealthy_interval: Option<Field<String>>,
    pub docker: RawDocker,
    /// `[runners.machine]`, read only with executor `docker+machine`.
    pub machine: Option<RawMachine>,
    /// `[runners.gce]`, read only with executor `docker+machine`.
    pub gce: Option<RawGce>,
    /// `[runners.cache]`.
    pub cache: Option<super::cache::RawCache>,
}

/// `[runners.docker]` (all keys absent when the table is).
#[derive(Default)]
pub(super) struct RawDocker {
    pub host: Option<Field<String>>,
    pub image: Option<Field<String>>,
    pub privileged: Option<Field<bool>>,
    /// A string or an array of strings in the file.
    pub pull_policy: Option<Field<Vec<String>>>,
    pub volumes: Option<Field<Vec<String>>>,
    pub network_mode: Option<Field<String>>,
    pub cpus: Option<Field<String>>,
    pub memory: Option<Field<String>>,
    pub helper_image: Option<Field<String>>,
    pub wait_for_services_timeout: Option<Field<i64>>,
    pub services_privileged: Option<Field<bool>>,
    pub allowed_services: Option<Field<Vec<String>>>,
    pub services_limit: Option<Field<i64>>,
    pub allowed_images: Option<Field<Vec<String>>>,
    pub allowed_pull_policies: Option<Field<Vec<String>>>,
    pub tls_verify: Option<Field<bool>>,
    pub tls_cert_path: Option<Field<String>>,
}

/// `[runners.machine]`.
#[derive(Default)]
pub(super) struct RawMachine {
    /// The line of the table header.
    pub line: usize,
    /// The key path of the table (`runners[0].machine`).
    pub path: String,
    pub idle_count: Option<Field<i64>>,
    pub idle_count_min: Option<Field<i64>>,
    /// A float or an integer in the file.
    pub idle_scale_factor: Option<Field<f64>>,
    pub idle_time: Option<Field<i64>>,
    pub max_builds: Option<Field<i64>>,
    pub max_growth_rate: Option<Field<i64>>,
    pub machine_name: Option<Field<String>>,
    pub machine_driver: Option<Field<String>>,
    /// Each entry with its own line (an array may span many).
    pub machine_options: Option<Field<Vec<Field<String>>>>,
    /// The `[[runners.machine.autoscaling]]` entries.
    pub autoscaling: Vec<RawPeriod>,
}

/// One `[[runners.machine.autoscaling]]` entry.
#[derive(Default)]
pub(super) struct RawPeriod {
    /// The line of the entry's header.
    pub line: usize,
    /// The key path of the entry (`runners[0].machine.autoscaling[1]`).
    pub path: String,
    /// Each expression with its own line.
    pub periods: Option<Field<Vec<Field<String>>>>,
    pub timezone: Option<Field<String>>,
    pub idle_count: Option<Field<i64>>,
    pub idle_count_min: Option<Field<i64>>,
    pub idle_scale_factor: Option<Field<f64>>,
    pub idle_time: Option<Field<i64>>,
}

/// `[runners.gce]`: Flotilla's own keys.
#[derive(Default)]
pub(super) struct RawGce {
    /// The line of the table header.
    pub line: usize,
    /// The key path of the table (`runners[0].gce`).
    pub path: String,
    pub project: Option<Field<String>>,
    pub zones: Option<Field<Vec<String>>>,
    pub machine_type: Option<Field<String>>,
    pub image: Option<Field<String>>,
    pub disk_size_gb: Option<Field<i64>>,
    pub disk_type: Option<Field<String>>,
    pub network: Option<Field<String>>,
    pub subnetwork: Option<Field<String>>,
    pub use_internal_ip: Option<Field<bool>>,
    pub internal_ip_only: Option<Field<bool>>,
    pub tags: Option<Field<Vec<String>>>,
    /// A table of strings in the file, in its order.
    pub labels: Option<Field<Vec<(String, String)>>>,
    pub service_account: Option<Field<String>>,
    pub scopes: Option<Field<Vec<String>>>,
    pub spot: Option<Field<bool>>,
    pub endpoint: Option<Field<String>>,
    pub credentials_file: Option<Field<String>>,
    pub create_timeout: Option<Field<i64>>,
    pub docker_port: Option<Field<i64>>,
    pub api_rate_per_minute: Option<Field<i64>>,
    pub zone_cooldown: Option<Field<i64>>,
    pub queue_aware_scaling: Option<Field<bool>>,
}
