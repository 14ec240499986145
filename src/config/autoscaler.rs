//! `[runners.autoscaler]` of a `docker-autoscaler` runner (GitLab Runner's successor to
//! docker+machine, with the `googlecloud` fleeting plugin), carried over onto Flotilla's own GCE
//! fleet: the instance group `name` becomes the VM name prefix and a label, `max_instances` caps
//! the runner's `limit`, `max_use_count` becomes MaxBuilds, the policies become autoscaling
//! periods (`autoscaler_policy`), `plugin_config` project/zone/credentials_file/endpoint and
//! `connector_config.use_external_addr` become GCE settings. Owns the section's raw struct, its
//! reading, this mapping and the words `flotilla config check` prints about it
//! ([`AutoscalerMapping`]). Keys with no counterpart are warned about by the key check.

use std::fmt;

use super::autoscaler_policy::{self, non_negative, RawPolicy};
use super::diag::Diagnostics;
use super::gce::GceSettings;
use super::gce_checks::Val;
use super::known_keys_autoscaler::{AUTOSCALER, CONNECTOR, PLUGIN_CONFIG};
use super::machine::RawMachine;
use super::toml_read::{boolean, check_keys, integer, string, Field, Scope};
use super::units::to_usize;

/// The label each VM of a carried-over instance group carries, valued with the group's name.
pub const INSTANCE_GROUP_LABEL: &str = "flotilla-instance-group";

/// How a `docker-autoscaler` runner was carried over, for `flotilla config check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutoscalerMapping {
    /// `plugin_config.name`: the instance group.
    pub instance_group: String,
    /// `plugin` as written.
    pub plugin: String,
    /// One line per key carried over: what it became.
    pub mapped: Vec<String>,
    /// Key paths set to something Flotilla does not carry over (each also a warning).
    pub not_mapped: Vec<String>,
}

impl fmt::Display for AutoscalerMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "instance group {:?} (plugin {:?}) runs on Flotilla's GCE fleet (the docker+machine \
             code path):",
            self.instance_group, self.plugin
        )?;
        for line in &self.mapped {
            write!(f, "\n  {line}")?;
        }
        if !self.not_mapped.is_empty() {
            write!(
                f,
                "\n  not carried over (ignored, see the warnings): {}",
                self.not_mapped.join(", ")
            )?;
        }
        Ok(())
    }
}

/// `[runners.autoscaler]` as written.
pub(super) struct RawAutoscaler {
    pub line: usize,
    pub path: String,
    pub plugin: Option<Field<String>>,
    pub capacity_per_instance: Option<Field<i64>>,
    pub max_use_count: Option<Field<i64>>,
    pub max_instances: Option<Field<i64>>,
    pub delete_instances_on_shutdown: Option<Field<bool>>,
    pub name: Option<Field<String>>,
    pub project: Option<Field<String>>,
    pub zone: Option<Field<String>>,
    pub credentials_file: Option<Field<String>>,
    pub endpoint: Option<Field<String>>,
    pub use_external_addr: Option<Field<bool>>,
    pub os: Option<Field<String>>,
    pub policies: Vec<RawPolicy>,
    /// Ignored keys set to something else than their default.
    pub not_mapped: Vec<String>,
}

/// Reads `[runners.autoscaler]` and its sub-tables.
pub(super) fn read(d: &mut Diagnostics, s: &Scope<'_>) -> RawAutoscaler {
    let before = d.warnings.len();
    check_keys(d, s, &AUTOSCALER);
    let plugin = s.sub_table(d, "plugin_config");
    if let Some(p) = &plugin {
        check_keys(d, p, &PLUGIN_CONFIG);
    }
    let connector = s.sub_table(d, "connector_config");
    if let Some(c) = &connector {
        check_keys(d, c, &CONNECTOR);
    }
    let policies = autoscaler_policy::read_all(d, s);
    let not_mapped = d.warnings[before..]
        .iter()
        .map(|w| w.path.clone())
        .collect();
    let from = |d: &mut Diagnostics, t: &Option<Scope<'_>>, key: &str| {
        t.as_ref().and_then(|t| string(d, t, key))
    };
    RawAutoscaler {
        line: s.line,
        path: s.path.clone(),
        plugin: string(d, s, "plugin"),
        capacity_per_instance: integer(d, s, "capacity_per_instance"),
        max_use_count: integer(d, s, "max_use_count"),
        max_instances: integer(d, s, "max_instances"),
        delete_instances_on_shutdown: boolean(d, s, "delete_instances_on_shutdown"),
        name: from(d, &plugin, "name"),
        project: from(d, &plugin, "project"),
        zone: from(d, &plugin, "zone"),
        credentials_file: from(d, &plugin, "credentials_file"),
        endpoint: from(d, &plugin, "endpoint"),
        use_external_addr: connector
            .as_ref()
            .and_then(|c| boolean(d, c, "use_external_addr")),
        os: from(d, &connector, "os"),
        policies,
        not_mapped,
    }
}

/// What a `docker-autoscaler` runner becomes on the docker+machine code path.
pub(super) struct Carried {
    /// The `[runners.machine]` it amounts to (valid: checked here with the autoscaler's words).
    pub machine: RawMachine,
    /// The GCE settings `plugin_config` and `connector_config` give.
    pub gce: GceSettings,
    /// `plugin_config.credentials_file`.
    pub credentials_file: Option<Field<String>>,
    /// `plugin_config.endpoint`.
    pub endpoint: Option<Field<String>>,
    /// `max_instances` (0: no cap).
    pub max_instances: usize,
    /// What each key became.
    pub mapping: AutoscalerMapping,
}

/// Maps `[runners.autoscaler]`; problems go to `d`.
pub(super) fn build(
    d: &mut Diagnostics,
    raw: Option<RawAutoscaler>,
    runner_path: &str,
    runner_line: usize,
) -> Carried {
    let raw = raw.unwrap_or_else(|| {
        d.error(
            runner_line,
            &format!("{runner_path}.autoscaler"),
            "executor \"docker-autoscaler\" needs [runners.autoscaler] with plugin = \
             \"googlecloud\" and [runners.autoscaler.plugin_config] name (the instance group)",
        );
        empty(runner_path, runner_line)
    });
    let p = |key: &str| format!("{}.{key}", raw.path);
    let mut mapped = Vec::new();
    let plugin = plugin(d, raw.plugin, raw.line, &p("plugin"));
    if let Some(f) = raw
        .capacity_per_instance
        .filter(|f| f.value != 1 && f.value != 0)
    {
        d.error(
            f.line,
            &p("capacity_per_instance"),
            format!(
                "capacity_per_instance = {}: Flotilla runs one job per VM at a time; set it to 1 \
                 (more VMs run the same jobs: raise max_instances instead)",
                f.value
            ),
        );
    }
    let group = instance_group(d, raw.name, raw.line, &p("plugin_config.name"));
    let machine_name = format!("{group}-%s");
    mapped.push(format!(
        "plugin_config.name {group:?} → VM names {machine_name:?} (MachineName) and label \
         {INSTANCE_GROUP_LABEL}={group}"
    ));
    let max_instances = non_negative(d, raw.max_instances, &p("max_instances"));
    if let Some(n) = max_instances.as_ref().filter(|f| f.value > 0) {
        mapped.push(format!(
            "max_instances {} → limit {} (VMs and jobs at once; the lower of it and the runner's \
             limit)",
            n.value, n.value
        ));
    }
    let max_builds = non_negative(d, raw.max_use_count, &p("max_use_count"));
    if let Some(n) = &max_builds {
        mapped.push(format!("max_use_count {} → MaxBuilds {}", n.value, n.value));
    }
    let cap = max_instances
        .as_ref()
        .map_or(0, |f| u32::try_from(f.value).unwrap_or(u32::MAX));
    let mut autoscaling = Vec::new();
    for policy in raw.policies {
        if let Some(converted) = autoscaler_policy::convert(d, policy, cap) {
            mapped.push(converted.note);
            autoscaling.push(converted.period);
        }
    }
    if autoscaling.is_empty() {
        mapped.push("no policy → IdleCount 0: a VM is made for each job".to_string());
    }
    let gce = settings(d, &raw.project, &raw.zone, &raw.use_external_addr, &p);
    for (key, f) in [("project", &raw.project), ("zone", &raw.zone)] {
        if let Some(f) = f {
            mapped.push(format!("plugin_config.{key} {:?} → GCE {key}", f.value));
        }
    }
    if let Some(f) = &raw.use_external_addr {
        mapped.push(format!(
            "connector_config.use_external_addr {} → use_internal_ip {}",
            f.value, !f.value
        ));
    }
    if let Some(f) = raw.os.filter(|f| !f.value.is_empty() && f.value != "linux") {
        d.error(
            f.line,
            &p("connector_config.os"),
            format!("os {:?}: Flotilla runs Linux VMs only", f.value),
        );
    }
    for (key, f) in [
        ("credentials_file", &raw.credentials_file),
        ("endpoint", &raw.endpoint),
    ] {
        if f.is_some() {
            mapped.push(format!("plugin_config.{key} → [runners.gce] {key}"));
        }
    }
    mapped.push(match raw.delete_instances_on_shutdown {
        Some(f) if f.value => "delete_instances_on_shutdown true → as always in Flotilla: idle \
                               VMs are deleted on shutdown"
            .to_string(),
        _ => "delete_instances_on_shutdown false (GitLab Runner's default): differs — Flotilla deletes idle VMs on \
              shutdown and finds leftovers by label at start"
            .to_string(),
    });
    let machine = RawMachine {
        line: raw.line,
        path: raw.path.clone(),
        max_builds,
        machine_name: Some(Field {
            value: machine_name,
            line: raw.line,
        }),
        autoscaling,
        ..RawMachine::default()
    };
    Carried {
        machine,
        gce,
        credentials_file: raw.credentials_file.filter(|f| !f.value.trim().is_empty()),
        endpoint: raw.endpoint.filter(|f| !f.value.trim().is_empty()),
        max_instances: max_instances.map_or(0, |f| to_usize(f.value)),
        mapping: AutoscalerMapping {
            instance_group: group,
            plugin,
            mapped,
            not_mapped: raw.not_mapped,
        },
    }
}

fn empty(runner_path: &str, runner_line: usize) -> RawAutoscaler {
    RawAutoscaler {
        line: runner_line,
        path: format!("{runner_path}.autoscaler"),
        plugin: None,
        capacity_per_instance: None,
        max_use_count: None,
        max_instances: None,
        delete_instances_on_shutdown: None,
        name: None,
        project: None,
        zone: None,
        credentials_file: None,
        endpoint: None,
        use_external_addr: None,
        os: None,
        policies: Vec::new(),
        not_mapped: Vec::new(),
    }
}

/// The GCE settings of `plugin_config` and `connector_config`, marked as carried over.
fn settings(
    d: &mut Diagnostics,
    project: &Option<Field<String>>,
    zone: &Option<Field<String>>,
    external: &Option<Field<bool>>,
    p: &dyn Fn(&str) -> String,
) -> GceSettings {
    let val = |value, line, key: &str| Val {
        value,
        line,
        path: p(key),
        carried: true,
    };
    fn text(f: &Option<Field<String>>) -> Option<&Field<String>> {
        f.as_ref().filter(|f| !f.value.trim().is_empty())
    }
    if let Some(f) = zone.as_ref().filter(|f| f.value.trim().is_empty()) {
        d.error(f.line, &p("plugin_config.zone"), "must not be empty");
    }
    GceSettings {
        project: text(project)
            .map(|f| val(f.value.trim().to_string(), f.line, "plugin_config.project")),
        zones: text(zone).map(|f| Val {
            value: vec![f.value.trim().to_string()],
            line: f.line,
            path: p("plugin_config.zone"),
            carried: true,
        }),
        use_internal_ip: external.as_ref().map(|f| Val {
            value: !f.value,
            line: f.line,
            path: p("connector_config.use_external_addr"),
            carried: true,
        }),
        ..GceSettings::default()
    }
}

/// `plugin`: the googlecloud fleeting plugin in any of its spellings (`googlecloud`,
/// `fleeting-plugin-googlecloud`, `gitlab/fleeting-plugin-googlecloud`, an OCI reference or a
/// path ending so), with an optional `:version`.
fn plugin(d: &mut Diagnostics, f: Option<Field<String>>, line: usize, path: &str) -> String {
    let Some(f) = f else {
        d.error(line, path, "required: plugin = \"googlecloud\"");
        return String::new();
    };
    if !is_googlecloud(&f.value) {
        let message = format!(
            "plugin {:?}: only the googlecloud plugin is supported (Flotilla runs its own GCE \
             fleet), e.g. plugin = \"googlecloud\"",
            f.value
        );
        d.error(f.line, path, message);
    }
    f.value
}

/// Whether `plugin` names fleeting-plugin-googlecloud.
pub(super) fn is_googlecloud(plugin: &str) -> bool {
    let plugin = plugin.trim();
    let last = plugin.rsplit('/').next().unwrap_or(plugin);
    let name = last.split_once(':').map_or(last, |(name, _version)| name);
    matches!(name, "googlecloud" | "fleeting-plugin-googlecloud")
}

/// `plugin_config.name`: the instance group, a Compute Engine resource name.
fn instance_group(
    d: &mut Diagnostics,
    f: Option<Field<String>>,
    line: usize,
    path: &str,
) -> String {
    let Some(f) = f.filter(|f| !f.value.trim().is_empty()) else {
        d.error(line, path, "required: the instance group's name");
        return "flotilla".to_string();
    };
    let name = f.value.trim();
    let valid = name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !valid {
        let message = format!(
            "invalid instance group name {name:?}: lowercase letters, digits and '-', starting \
             with a letter, at most 63 characters (it becomes the prefix of VM names)"
        );
        d.error(f.line, path, message);
        return "flotilla".to_string();
    }
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::is_googlecloud;

    #[test]
    fn every_spelling_of_the_googlecloud_plugin_is_known() {
        for p in [
            "googlecloud",
            "googlecloud:0.1.0",
            "fleeting-plugin-googlecloud",
            "gitlab/fleeting-plugin-googlecloud",
            "gitlab/fleeting-plugin-googlecloud:latest",
            "registry.gitlab.com/gitlab-org/fleeting/plugins/googlecloud:0.3",
            "/usr/local/bin/fleeting-plugin-googlecloud",
        ] {
            assert!(is_googlecloud(p), "{p}");
        }
        for p in ["aws", "gitlab/fleeting-plugin-aws:1.0", "googlecloudx", ""] {
            assert!(!is_googlecloud(p), "{p}");
        }
    }
}
