//! The first stage of loading the document's spine (`[global]`, `[[runners]]`,
//! `[runners.docker]`; the sections with their own files keep their raw structs there): the
//! file's values in GitLab Runner's spelling, type-checked but not yet validated, each with the
//! line it came from so the validator can point at it. Built by `reader`, consumed by
//! `validate`; nothing else sees these types (no `Debug`: they hold the
//! runner token in clear).

use super::gce::RawGce;
use super::machine::RawMachine;
use super::toml_read::Field;

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
    pub id: Option<Field<i64>>,
    /// A TOML datetime or an RFC 3339 string in the file (kept as written).
    pub token_obtained_at: Option<Field<String>>,
    pub token_expires_at: Option<Field<String>>,
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
    pub helper_image_archive: Option<Field<String>>,
    pub wait_for_services_timeout: Option<Field<i64>>,
    pub services_privileged: Option<Field<bool>>,
    pub allowed_services: Option<Field<Vec<String>>>,
    pub services_limit: Option<Field<i64>>,
    pub allowed_images: Option<Field<Vec<String>>>,
    pub allowed_pull_policies: Option<Field<Vec<String>>>,
    pub tls_verify: Option<Field<bool>>,
    pub tls_cert_path: Option<Field<String>>,
}
