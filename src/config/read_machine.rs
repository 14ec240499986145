//! Reads `[runners.machine]` (with its `[[runners.machine.autoscaling]]` entries) and
//! `[runners.gce]` of a `docker+machine` runner into raw structs, the same way `reader` reads the
//! rest: keys checked against `known_keys`, values type-checked, each kept with its line. Array
//! entries that carry their own meaning (`MachineOptions`, `Periods`) keep their own lines.

use toml_edit::{Item, Value};

use super::diag::Diagnostics;
use super::known_keys;
use super::raw::{Field, RawGce, RawMachine, RawPeriod};
use super::reader::{check_keys, get, integer, string, string_list, Scope};

/// Reads `[runners.machine]`.
pub(super) fn machine(d: &mut Diagnostics, s: &Scope<'_>) -> RawMachine {
    check_keys(d, s, &known_keys::MACHINE);
    RawMachine {
        line: s.line,
        path: s.path.clone(),
        idle_count: integer(d, s, "IdleCount"),
        idle_count_min: integer(d, s, "IdleCountMin"),
        idle_scale_factor: float(d, s, "IdleScaleFactor"),
        idle_time: integer(d, s, "IdleTime"),
        max_builds: integer(d, s, "MaxBuilds"),
        max_growth_rate: integer(d, s, "MaxGrowthRate"),
        machine_name: string(d, s, "MachineName"),
        machine_driver: string(d, s, "MachineDriver"),
        idle_count_policy: string(d, s, "IdleCountPolicy"),
        machine_options: string_items(d, s, "MachineOptions"),
        autoscaling: periods(d, s),
    }
}

/// The `[[runners.machine.autoscaling]]` entries, in order.
fn periods(d: &mut Diagnostics, s: &Scope<'_>) -> Vec<RawPeriod> {
    let Some(item) = s.table.get("autoscaling") else {
        return Vec::new();
    };
    let line = s.key_line(d, "autoscaling");
    let tables: Vec<(&dyn toml_edit::TableLike, usize)> = match item {
        Item::ArrayOfTables(entries) => entries
            .iter()
            .map(|t| (t as &dyn toml_edit::TableLike, d.line_of(t.span(), line)))
            .collect(),
        Item::Value(Value::Array(entries)) if entries.iter().all(|v| v.is_inline_table()) => {
            entries
                .iter()
                .filter_map(|v| v.as_inline_table())
                .map(|t| (t as &dyn toml_edit::TableLike, d.line_of(t.span(), line)))
                .collect()
        }
        other => {
            let found = other.type_name();
            d.error(
                line,
                &s.child_path("autoscaling"),
                format!("expected [[runners.machine.autoscaling]] entries, found {found}"),
            );
            return Vec::new();
        }
    };
    tables
        .into_iter()
        .enumerate()
        .map(|(i, (table, line))| {
            let p = Scope {
                table,
                path: format!("{}.autoscaling[{i}]", s.path),
                line,
            };
            check_keys(d, &p, &known_keys::MACHINE_AUTOSCALING);
            RawPeriod {
                line: p.line,
                path: p.path.clone(),
                periods: string_items(d, &p, "Periods"),
                timezone: string(d, &p, "Timezone"),
                idle_count: integer(d, &p, "IdleCount"),
                idle_count_min: integer(d, &p, "IdleCountMin"),
                idle_scale_factor: float(d, &p, "IdleScaleFactor"),
                idle_time: integer(d, &p, "IdleTime"),
            }
        })
        .collect()
}

/// Reads `[runners.gce]`.
pub(super) fn gce(d: &mut Diagnostics, s: &Scope<'_>) -> RawGce {
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

fn boolean(d: &mut Diagnostics, s: &Scope<'_>, key: &str) -> Option<Field<bool>> {
    get(d, s, key, "a boolean", Item::as_bool)
}

/// A float; an integer is taken as one too (`IdleScaleFactor = 1`).
fn float(d: &mut Diagnostics, s: &Scope<'_>, key: &str) -> Option<Field<f64>> {
    get(d, s, key, "a number", |item| {
        item.as_float()
            .or_else(|| item.as_integer().map(|i| i as f64))
    })
}

/// An array of strings, each entry with its own line; a wrong entry is reported and skipped.
fn string_items(
    d: &mut Diagnostics,
    s: &Scope<'_>,
    key: &str,
) -> Option<Field<Vec<Field<String>>>> {
    let item = s.table.get(key)?;
    let line = s.key_line(d, key);
    let Some(array) = item.as_array() else {
        let found = item.type_name();
        d.error(
            line,
            &s.child_path(key),
            format!("expected an array of strings, found {found}"),
        );
        return None;
    };
    let mut entries = Vec::new();
    for value in array.iter() {
        let entry_line = d.line_of(value.span(), line);
        match value.as_str() {
            Some(text) => entries.push(Field {
                value: text.to_string(),
                line: entry_line,
            }),
            None => {
                let found = value.type_name();
                d.error(
                    entry_line,
                    &s.child_path(key),
                    format!("expected a string, found {found}"),
                );
            }
        }
    }
    Some(Field {
        value: entries,
        line,
    })
}
