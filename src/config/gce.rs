//! Builds the [`GceConfig`] of a `docker+machine` runner from `[runners.gce]` and/or a carried-over
//! `MachineDriver = "google"` + `MachineOptions` (mapped by `machine_options`). Where both give a
//! setting, `[runners.gce]` wins, with a warning when the two disagree. Then Flotilla's defaults
//! and Compute Engine's rules apply: project and zones required, `internal_ip_only` only with
//! `use_internal_ip`, a subnetwork's region holding every zone, labels and tags as GCE takes them. Owns the section whole: its raw struct, its reading from the
//! TOML table and its building.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::path::PathBuf;
use std::time::Duration;

use super::diag::Diagnostics;
use super::error::WarningKind;
use super::gce_checks::{
    at_least_one, check_subnetwork_region, disk_size, endpoint, labels, named, required,
    service_account, tags, zones, Val,
};
use super::gce_names::{check_label_key, check_label_value, normalize_image};
use super::known_keys;
use super::toml_read::{boolean, check_keys, get, integer, string, string_list, Field, Scope};

/// `[runners.gce]`: how VMs are made on Compute Engine.
#[derive(Debug, Clone, PartialEq)]
pub struct GceConfig {
    /// `project`.
    pub project: String,
    /// `zones`: tried in order; a cooling zone is skipped.
    pub zones: Vec<String>,
    /// `machine_type` (default `e2-standard-2`).
    pub machine_type: String,
    /// `image` (default `projects/cos-cloud/global/images/family/cos-stable`).
    pub image: String,
    /// `disk_size_gb` (default 50).
    pub disk_size_gb: u64,
    /// `disk_type` (default `pd-balanced`).
    pub disk_type: String,
    /// `network` (default `default`).
    pub network: String,
    /// `subnetwork` (regional).
    pub subnetwork: Option<String>,
    /// `use_internal_ip` (default true): connect to the VM's internal IP.
    pub use_internal_ip: bool,
    /// `internal_ip_only` (default false): no external IP at all.
    pub internal_ip_only: bool,
    /// `tags` (the `flotilla-runner` tag is always added).
    pub tags: Vec<String>,
    /// `labels` added to every VM (besides the ownership labels).
    pub labels: BTreeMap<String, String>,
    /// `service_account` email (none attached when unset).
    pub service_account: Option<String>,
    /// `scopes` for that service account.
    pub scopes: Vec<String>,
    /// `spot`: Spot VMs (deleted on preemption).
    pub spot: bool,
    /// `endpoint`: the Compute API base (tests); anonymous credentials when set.
    pub endpoint: Option<String>,
    /// `credentials_file`: a service-account JSON key (else Application Default Credentials).
    pub credentials_file: Option<PathBuf>,
    /// `create_timeout` (default 600 s): insert to dockerd answering.
    pub create_timeout: Duration,
    /// `docker_port` (default 2376).
    pub docker_port: u16,
    /// `api_rate_per_minute` (default 600).
    pub api_rate_per_minute: u32,
    /// `zone_cooldown` (default 300 s, doubling up to 1 h).
    pub zone_cooldown: Duration,
    /// `queue_aware_scaling` (default true): also create VMs for the backlog GitLab reports
    /// (`job_info.queue_size`), besides the idle settings.
    pub queue_aware: bool,
    /// Also tag VMs `docker-machine` (a config carried over from MachineOptions).
    pub docker_machine_tag: bool,
}

/// Default `machine_type`.
pub(super) const DEFAULT_MACHINE_TYPE: &str = "e2-standard-2";
/// Default `image`: Container-Optimized OS (Docker preinstalled, fast boot).
pub(super) const DEFAULT_IMAGE: &str = "projects/cos-cloud/global/images/family/cos-stable";
/// Default `disk_type`.
pub(super) const DEFAULT_DISK_TYPE: &str = "pd-balanced";
/// Default `network`.
pub(super) const DEFAULT_NETWORK: &str = "default";
/// Default `create_timeout` in seconds.
pub(super) const DEFAULT_CREATE_TIMEOUT_SECS: u64 = 600;
/// Default `docker_port`.
pub(super) const DEFAULT_DOCKER_PORT: u16 = 2376;
/// Default `api_rate_per_minute`.
pub(super) const DEFAULT_API_RATE_PER_MINUTE: u32 = 600;
/// Default `zone_cooldown` in seconds.
pub(super) const DEFAULT_ZONE_COOLDOWN_SECS: u64 = 300;

/// The settings `[runners.gce]` shares with docker-machine's google driver.
#[derive(Default)]
pub(super) struct GceSettings {
    pub project: Option<Val<String>>,
    pub zones: Option<Val<Vec<String>>>,
    pub machine_type: Option<Val<String>>,
    /// Already normalized (`normalize_image`).
    pub image: Option<Val<String>>,
    pub disk_size_gb: Option<Val<i64>>,
    pub disk_type: Option<Val<String>>,
    pub network: Option<Val<String>>,
    pub subnetwork: Option<Val<String>>,
    pub use_internal_ip: Option<Val<bool>>,
    pub internal_ip_only: Option<Val<bool>>,
    pub tags: Option<Val<Vec<String>>>,
    /// Already checked against GCE's label rules.
    pub labels: Option<Val<BTreeMap<String, String>>>,
    pub service_account: Option<Val<String>>,
    pub scopes: Option<Val<Vec<String>>>,
    pub spot: Option<Val<bool>>,
}

/// Builds the GCE settings; `carried` is what `MachineOptions` gave (with `MachineDriver =
/// "google"`). `None` (with an error in `d`) when neither source is there.
pub(super) fn build(
    d: &mut Diagnostics,
    table: Option<RawGce>,
    carried: Option<GceSettings>,
    runner_path: &str,
    runner_line: usize,
) -> Option<GceConfig> {
    if table.is_none() && carried.is_none() {
        d.error(
            runner_line,
            &format!("{runner_path}.gce"),
            "executor \"docker+machine\" needs a GCE definition: [runners.gce], or \
             [runners.machine] MachineDriver = \"google\" with MachineOptions",
        );
        return None;
    }
    let docker_machine_tag = carried.is_some();
    let table = table.unwrap_or_else(|| RawGce {
        line: runner_line,
        path: format!("{runner_path}.gce"),
        ..RawGce::default()
    });
    let path = table.path.clone();
    let p = |key: &str| format!("{path}.{key}");
    let own = from_table(d, &table);
    let s = merge(d, own, carried.unwrap_or_default());

    let project = required(
        d,
        s.project,
        table.line,
        &p("project"),
        "the Google Cloud project",
    );
    if project.contains(char::is_whitespace) || project.contains('/') {
        d.error(
            table.line,
            &p("project"),
            format!("invalid project {project:?}"),
        );
    }
    let zones = zones(d, s.zones, table.line, &p("zones"));
    let subnetwork = s.subnetwork.map(|v| {
        check_subnetwork_region(d, &v, &zones);
        v.value
    });
    let use_internal_ip = s.use_internal_ip.is_none_or(|v| v.value);
    if let Some(only) = s.internal_ip_only.as_ref().filter(|v| v.value) {
        if !use_internal_ip {
            d.error(
                only.line,
                &only.path,
                "internal_ip_only = true needs use_internal_ip = true: a VM without an external \
                 IP is reached over its internal IP",
            );
        }
    }
    let (service_account, scopes) = service_account(d, s.service_account, s.scopes);
    Some(GceConfig {
        project,
        zones,
        machine_type: named(d, s.machine_type, "machine type", DEFAULT_MACHINE_TYPE),
        image: s
            .image
            .map_or_else(|| DEFAULT_IMAGE.to_string(), |v| v.value),
        disk_size_gb: disk_size(d, s.disk_size_gb),
        disk_type: named(d, s.disk_type, "disk type", DEFAULT_DISK_TYPE),
        network: s
            .network
            .map_or_else(|| DEFAULT_NETWORK.to_string(), |v| v.value),
        subnetwork,
        use_internal_ip,
        internal_ip_only: s.internal_ip_only.is_some_and(|v| v.value),
        tags: tags(d, s.tags),
        labels: labels(d, s.labels),
        service_account,
        scopes,
        spot: s.spot.is_some_and(|v| v.value),
        endpoint: endpoint(d, table.endpoint, &p("endpoint")),
        credentials_file: table
            .credentials_file
            .filter(|f| !f.value.trim().is_empty())
            .map(|f| PathBuf::from(f.value)),
        create_timeout: crate::time::secs(at_least_one(
            d,
            table.create_timeout,
            &p("create_timeout"),
            DEFAULT_CREATE_TIMEOUT_SECS,
        )),
        docker_port: match table.docker_port {
            None => DEFAULT_DOCKER_PORT,
            Some(f) => u16::try_from(f.value)
                .ok()
                .filter(|&port| port > 0)
                .unwrap_or_else(|| {
                    d.error(
                        f.line,
                        &p("docker_port"),
                        "must be a port number (1 to 65535)",
                    );
                    DEFAULT_DOCKER_PORT
                }),
        },
        api_rate_per_minute: u32::try_from(at_least_one(
            d,
            table.api_rate_per_minute,
            &p("api_rate_per_minute"),
            u64::from(DEFAULT_API_RATE_PER_MINUTE),
        ))
        .unwrap_or(u32::MAX),
        zone_cooldown: crate::time::secs(at_least_one(
            d,
            table.zone_cooldown,
            &p("zone_cooldown"),
            DEFAULT_ZONE_COOLDOWN_SECS,
        )),
        queue_aware: table.queue_aware_scaling.is_none_or(|f| f.value),
        docker_machine_tag,
    })
}

/// The shared settings of `[runners.gce]`, with the checks that need the key's own line.
fn from_table(d: &mut Diagnostics, t: &RawGce) -> GceSettings {
    fn own<T: Clone>(f: &Option<Field<T>>, path: &str, key: &str) -> Option<Val<T>> {
        f.as_ref().map(|f| Val {
            value: f.value.clone(),
            line: f.line,
            path: format!("{path}.{key}"),
            carried: false,
        })
    }
    let path = t.path.as_str();
    let text = |f: &Option<Field<String>>, key: &str| {
        own(f, path, key).filter(|v| !v.value.trim().is_empty())
    };
    let image = text(&t.image, "image").and_then(|v| match normalize_image(&v.value) {
        Ok(image) => Some(Val { value: image, ..v }),
        Err(message) => {
            d.error(v.line, &v.path, message.to_string());
            None
        }
    });
    let labels = own(&t.labels, path, "labels").map(|v| {
        let mut checked = BTreeMap::new();
        for (key, value) in v.value.iter() {
            match check_label_key(key).and_then(|()| check_label_value(key, value)) {
                Ok(()) => {
                    checked.insert(key.clone(), value.clone());
                }
                Err(message) => d.error(v.line, &v.path, message.to_string()),
            }
        }
        Val {
            value: checked,
            line: v.line,
            path: v.path,
            carried: false,
        }
    });
    GceSettings {
        project: text(&t.project, "project"),
        zones: own(&t.zones, path, "zones"),
        machine_type: text(&t.machine_type, "machine_type"),
        image,
        disk_size_gb: own(&t.disk_size_gb, path, "disk_size_gb"),
        disk_type: text(&t.disk_type, "disk_type"),
        network: text(&t.network, "network"),
        subnetwork: text(&t.subnetwork, "subnetwork"),
        use_internal_ip: own(&t.use_internal_ip, path, "use_internal_ip"),
        internal_ip_only: own(&t.internal_ip_only, path, "internal_ip_only"),
        tags: own(&t.tags, path, "tags"),
        labels,
        service_account: text(&t.service_account, "service_account"),
        scopes: own(&t.scopes, path, "scopes"),
        spot: own(&t.spot, path, "spot"),
    }
}

/// `[runners.gce]` (`own`) over `MachineOptions` (`carried`), warning where they disagree.
fn merge(d: &mut Diagnostics, own: GceSettings, carried: GceSettings) -> GceSettings {
    GceSettings {
        project: pick(d, own.project, carried.project, "google-project"),
        zones: pick(d, own.zones, carried.zones, "google-zone"),
        machine_type: pick(
            d,
            own.machine_type,
            carried.machine_type,
            "google-machine-type",
        ),
        image: pick(d, own.image, carried.image, "google-machine-image"),
        disk_size_gb: pick(
            d,
            own.disk_size_gb,
            carried.disk_size_gb,
            "google-disk-size",
        ),
        disk_type: pick(d, own.disk_type, carried.disk_type, "google-disk-type"),
        network: pick(d, own.network, carried.network, "google-network"),
        subnetwork: pick(d, own.subnetwork, carried.subnetwork, "google-subnetwork"),
        use_internal_ip: pick(
            d,
            own.use_internal_ip,
            carried.use_internal_ip,
            "google-use-internal-ip",
        ),
        internal_ip_only: pick(
            d,
            own.internal_ip_only,
            carried.internal_ip_only,
            "google-use-internal-ip-only",
        ),
        tags: pick(d, own.tags, carried.tags, "google-tags"),
        labels: pick(d, own.labels, carried.labels, "google-label"),
        service_account: pick(
            d,
            own.service_account,
            carried.service_account,
            "google-service-account",
        ),
        scopes: pick(d, own.scopes, carried.scopes, "google-scopes"),
        spot: pick(d, own.spot, carried.spot, "google-preemptible"),
    }
}

fn pick<T: PartialEq + Debug>(
    d: &mut Diagnostics,
    own: Option<Val<T>>,
    carried: Option<Val<T>>,
    option: &str,
) -> Option<Val<T>> {
    match (own, carried) {
        (Some(own), Some(carried)) => {
            if own.value != carried.value {
                let kind = WarningKind::GceOverridesMachineOption {
                    option: option.to_string(),
                    machine: format!("{:?}", carried.value),
                    gce: format!("{:?}", own.value),
                };
                d.warn(own.line, &own.path, kind);
            }
            Some(own)
        }
        (own, carried) => own.or(carried),
    }
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

/// Reads `[runners.gce]`.
pub(super) fn read(d: &mut Diagnostics, s: &Scope<'_>) -> RawGce {
    check_keys(d, s, &known_keys::GCE);
    RawGce {
        line: s.line,
        path: s.path.clone(),
        project: string(d, s, "project"),
        zones: string_list(d, s, "zones"),
        machine_type: string(d, s, "machine_type"),
        image: string(d, s, "image"),
        disk_size_gb: integer(d, s, "disk_size_gb"),
        disk_type: string(d, s, "disk_type"),
        network: string(d, s, "network"),
        subnetwork: string(d, s, "subnetwork"),
        use_internal_ip: boolean(d, s, "use_internal_ip"),
        internal_ip_only: boolean(d, s, "internal_ip_only"),
        tags: string_list(d, s, "tags"),
        labels: get(d, s, "labels", "a table of strings", |item| {
            item.as_table_like()?
                .iter()
                .map(|(k, v)| v.as_str().map(|v| (k.to_string(), v.to_string())))
                .collect()
        }),
        service_account: string(d, s, "service_account"),
        scopes: string_list(d, s, "scopes"),
        spot: boolean(d, s, "spot"),
        endpoint: string(d, s, "endpoint"),
        credentials_file: string(d, s, "credentials_file"),
        create_timeout: integer(d, s, "create_timeout"),
        docker_port: integer(d, s, "docker_port"),
        api_rate_per_minute: integer(d, s, "api_rate_per_minute"),
        zone_cooldown: integer(d, s, "zone_cooldown"),
        queue_aware_scaling: boolean(d, s, "queue_aware_scaling"),
    }
}
