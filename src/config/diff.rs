//! What changed between two configurations, for the reload log line, and which changes need a
//! restart. Runners are matched by [`RunnerConfig::identity`] (URL + short token), so a rename is
//! a change of name, not a new runner. Tokens are never printed: only short tokens. The machine
//! and GCE settings hold no secrets (a credentials file is named by its path only).

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::time::Duration;

use super::docker::DockerConfig;
use super::gce::GceConfig;
use super::global::Config;
use super::machine::MachineConfig;
use super::runner::{RunnerConfig, RunnerIdentity};

/// Human-readable lines saying what changed from `old` to `new` (empty when nothing did).
pub fn diff(old: &Config, new: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let mut field = |name: &str, a: String, b: String| {
        if a != b {
            out.push(format!("{name}: {a} → {b}"));
        }
    };
    field("concurrent", show(&old.concurrent), show(&new.concurrent));
    field(
        "check_interval",
        secs(old.check_interval),
        secs(new.check_interval),
    );
    field(
        "shutdown_timeout",
        secs(old.shutdown_timeout),
        secs(new.shutdown_timeout),
    );
    field(
        "listen_address",
        show(&old.listen_address),
        show(&new.listen_address),
    );
    field("log_level", show(&old.log_level), show(&new.log_level));
    field("log_format", show(&old.log_format), show(&new.log_format));
    field("state_dir", show(&old.state_dir), show(&new.state_dir));
    field("manager_id", show(&old.manager_id), show(&new.manager_id));
    field(
        "reconcile_interval",
        secs(old.reconcile_interval),
        secs(new.reconcile_interval),
    );

    let index = |c: &Config| -> BTreeMap<RunnerIdentity, usize> {
        c.runners
            .iter()
            .enumerate()
            .map(|(i, r)| (r.identity(), i))
            .collect()
    };
    let (old_ids, new_ids) = (index(old), index(new));
    for (id, &i) in &old_ids {
        if !new_ids.contains_key(id) {
            out.push(format!("{}: removed", label(&old.runners[i])));
        }
    }
    for (id, &i) in &new_ids {
        match old_ids.get(id) {
            None => out.push(format!("{}: added", label(&new.runners[i]))),
            Some(&j) => runner_diff(&old.runners[j], &new.runners[i], &mut out),
        }
    }
    out
}

/// The global keys whose change takes effect only after a restart.
pub fn restart_required(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut keys = Vec::new();
    if old.listen_address != new.listen_address {
        keys.push("listen_address");
    }
    if old.state_dir != new.state_dir {
        keys.push("state_dir");
    }
    if old.manager_id != new.manager_id {
        keys.push("manager_id");
    }
    keys
}

fn runner_diff(old: &RunnerConfig, new: &RunnerConfig, out: &mut Vec<String>) {
    let who = label(new);
    let mut field = |name: &str, a: String, b: String| {
        if a != b {
            out.push(format!("{who}: {name}: {a} → {b}"));
        }
    };
    field("name", show(&old.name), show(&new.name));
    field(
        "executor",
        old.executor.as_str().into(),
        new.executor.as_str().into(),
    );
    field("limit", show(&old.limit), show(&new.limit));
    field(
        "request_concurrency",
        show(&old.request_concurrency),
        show(&new.request_concurrency),
    );
    field(
        "output_limit",
        show(&old.output_limit_kib),
        show(&new.output_limit_kib),
    );
    field(
        "unhealthy_requests_limit",
        show(&old.unhealthy_requests_limit),
        show(&new.unhealthy_requests_limit),
    );
    field(
        "unhealthy_interval",
        secs(old.unhealthy_interval),
        secs(new.unhealthy_interval),
    );
    docker_diff(&old.docker, &new.docker, &mut field);
    match (&old.machine, &new.machine) {
        (Some(a), Some(b)) => machine_diff(a, b, &mut field),
        (a, b) => field("machine", presence(a), presence(b)),
    }
    match (&old.gce, &new.gce) {
        (Some(a), Some(b)) => gce_diff(a, b, &mut field),
        (a, b) => field("gce", presence(a), presence(b)),
    }
    let changed = changed_variables(&old.environment, &new.environment);
    if !changed.is_empty() {
        out.push(format!(
            "{who}: environment: changed {}",
            changed.join(", ")
        ));
    }
    if old.cache != new.cache {
        out.push(format!("{who}: cache: changed"));
    }
    if old.token != new.token {
        out.push(format!("{who}: token: changed"));
    }
}

fn docker_diff(
    old: &DockerConfig,
    new: &DockerConfig,
    field: &mut impl FnMut(&str, String, String),
) {
    field("docker.host", show(&old.host), show(&new.host));
    field("docker.image", show(&old.image), show(&new.image));
    field(
        "docker.privileged",
        show(&old.privileged),
        show(&new.privileged),
    );
    let policies =
        |d: &DockerConfig| -> Vec<&str> { d.pull_policy.iter().map(|p| p.as_str()).collect() };
    field(
        "docker.pull_policy",
        show(&policies(old)),
        show(&policies(new)),
    );
    field("docker.volumes", show(&old.volumes), show(&new.volumes));
    field(
        "docker.network_mode",
        show(&old.network_mode),
        show(&new.network_mode),
    );
    field(
        "docker.cpus (nano)",
        show(&old.nano_cpus),
        show(&new.nano_cpus),
    );
    field(
        "docker.memory (bytes)",
        show(&old.memory_bytes),
        show(&new.memory_bytes),
    );
    field(
        "docker.helper_image",
        show(&old.helper_image),
        show(&new.helper_image),
    );
    field(
        "docker.helper_image_archive",
        show(&old.helper_image_archive),
        show(&new.helper_image_archive),
    );
    field(
        "docker.wait_for_services_timeout",
        show(&old.wait_for_services_timeout),
        show(&new.wait_for_services_timeout),
    );
    field(
        "docker.services_privileged",
        show(&old.services_privileged),
        show(&new.services_privileged),
    );
    field(
        "docker.allowed_services",
        show(&old.allowed_services),
        show(&new.allowed_services),
    );
    field(
        "docker.allowed_images",
        show(&old.allowed_images),
        show(&new.allowed_images),
    );
    field(
        "docker.allowed_pull_policies",
        show(&old.allowed_pull_policies),
        show(&new.allowed_pull_policies),
    );
    field(
        "docker.services_limit",
        show(&old.services_limit),
        show(&new.services_limit),
    );
}

fn machine_diff(
    old: &MachineConfig,
    new: &MachineConfig,
    field: &mut impl FnMut(&str, String, String),
) {
    field(
        "machine.IdleCount",
        show(&old.idle_count),
        show(&new.idle_count),
    );
    field(
        "machine.IdleCountMin",
        show(&old.idle_count_min),
        show(&new.idle_count_min),
    );
    field(
        "machine.IdleScaleFactor",
        show(&old.idle_scale_factor),
        show(&new.idle_scale_factor),
    );
    field("machine.IdleTime", secs(old.idle_time), secs(new.idle_time));
    field(
        "machine.MaxBuilds",
        show(&old.max_builds),
        show(&new.max_builds),
    );
    field(
        "machine.MaxGrowthRate",
        show(&old.max_growth_rate),
        show(&new.max_growth_rate),
    );
    field(
        "machine.IdleCountPolicy",
        old.idle_count_policy.as_str().to_string(),
        new.idle_count_policy.as_str().to_string(),
    );
    field(
        "machine.MachineName",
        show(&old.machine_name),
        show(&new.machine_name),
    );
    if old.autoscaling != new.autoscaling {
        field(
            "machine.autoscaling",
            format!("{} periods", old.autoscaling.len()),
            format!("{} periods (changed)", new.autoscaling.len()),
        );
    }
}

fn gce_diff(old: &GceConfig, new: &GceConfig, field: &mut impl FnMut(&str, String, String)) {
    let mut f = |name: &str, a: String, b: String| field(&format!("gce.{name}"), a, b);
    f("project", show(&old.project), show(&new.project));
    f("zones", show(&old.zones), show(&new.zones));
    f(
        "machine_type",
        show(&old.machine_type),
        show(&new.machine_type),
    );
    f("image", show(&old.image), show(&new.image));
    f(
        "disk_size_gb",
        show(&old.disk_size_gb),
        show(&new.disk_size_gb),
    );
    f("disk_type", show(&old.disk_type), show(&new.disk_type));
    f("network", show(&old.network), show(&new.network));
    f("subnetwork", show(&old.subnetwork), show(&new.subnetwork));
    f(
        "use_internal_ip",
        show(&old.use_internal_ip),
        show(&new.use_internal_ip),
    );
    f(
        "internal_ip_only",
        show(&old.internal_ip_only),
        show(&new.internal_ip_only),
    );
    f("tags", show(&old.tags), show(&new.tags));
    f("labels", show(&old.labels), show(&new.labels));
    f(
        "service_account",
        show(&old.service_account),
        show(&new.service_account),
    );
    f("scopes", show(&old.scopes), show(&new.scopes));
    f("spot", show(&old.spot), show(&new.spot));
    f("endpoint", show(&old.endpoint), show(&new.endpoint));
    f(
        "credentials_file",
        show(&old.credentials_file),
        show(&new.credentials_file),
    );
    f(
        "create_timeout",
        secs(old.create_timeout),
        secs(new.create_timeout),
    );
    f(
        "docker_port",
        show(&old.docker_port),
        show(&new.docker_port),
    );
    f(
        "api_rate_per_minute",
        show(&old.api_rate_per_minute),
        show(&new.api_rate_per_minute),
    );
    f(
        "zone_cooldown",
        secs(old.zone_cooldown),
        secs(new.zone_cooldown),
    );
    f(
        "queue_aware_scaling",
        show(&old.queue_aware),
        show(&new.queue_aware),
    );
    f(
        "docker_machine_tag",
        show(&old.docker_machine_tag),
        show(&new.docker_machine_tag),
    );
}

/// `set` or `unset`, for a section that appears or goes away.
fn presence<T>(section: &Option<T>) -> String {
    if section.is_some() { "set" } else { "unset" }.to_string()
}

/// The names of the `KEY=value` entries added, removed or changed (values may be secrets, so
/// only names are printed).
fn changed_variables(old: &[String], new: &[String]) -> Vec<String> {
    let parse = |entries: &[String]| -> BTreeMap<String, String> {
        entries
            .iter()
            .map(|e| match e.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (e.clone(), String::new()),
            })
            .collect()
    };
    let (old, new) = (parse(old), parse(new));
    let mut names: Vec<String> = old
        .keys()
        .chain(new.keys())
        .filter(|k| old.get(*k) != new.get(*k))
        .cloned()
        .collect();
    names.sort();
    names.dedup();
    names
}

/// `runner "name" (https://gitlab.example.com, token abcdefghi)`.
fn label(r: &RunnerConfig) -> String {
    let id = r.identity();
    format!("runner {:?} ({}, token {})", r.name, id.url, id.short_token)
}

fn show<T: Debug + ?Sized>(value: &T) -> String {
    format!("{value:?}")
}

fn secs(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}
