//! Walks the parsed TOML document (toml_edit keeps every key's position) and fills the raw
//! structs: checks each table's keys against the compatibility table (`known_keys`), warns about
//! ignored GitLab Runner keys, reports unknown keys with a suggestion and values of the wrong
//! type. Never stops at the first problem.

use toml_edit::{Item, TableLike, Value};

use super::diag::Diagnostics;
use super::error::WarningKind;
use super::known_keys;
use super::raw::{RawConfig, RawDocker, RawRunner};
use super::toml_read::{
    check_keys, check_keys_quietly, datetime, get, integer, is_empty, string, string_list, strings,
    Scope,
};
use super::{gce, machine};

/// The executor whose `[runners.machine]` and `[runners.gce]` are read.
const DOCKER_MACHINE: &str = "docker+machine";

/// Reads the whole document.
pub(super) fn read(d: &mut Diagnostics, root: &dyn TableLike) -> RawConfig {
    let s = Scope {
        table: root,
        path: String::new(),
        line: 1,
    };
    check_keys(d, &s, &known_keys::GLOBAL);
    RawConfig {
        concurrent: integer(d, &s, "concurrent"),
        check_interval: integer(d, &s, "check_interval"),
        shutdown_timeout: integer(d, &s, "shutdown_timeout"),
        listen_address: string(d, &s, "listen_address"),
        log_level: string(d, &s, "log_level"),
        log_format: string(d, &s, "log_format"),
        state_dir: string(d, &s, "state_dir"),
        manager_id: string(d, &s, "manager_id"),
        reconcile_interval: integer(d, &s, "reconcile_interval"),
        runners: runner_scopes(d, &s)
            .into_iter()
            .map(|r| read_runner(d, r))
            .collect(),
    }
}

/// The `[[runners]]` tables (also accepted: an inline array of inline tables).
fn runner_scopes<'t>(d: &mut Diagnostics, s: &Scope<'t>) -> Vec<Scope<'t>> {
    let Some(item) = s.table.get("runners") else {
        return Vec::new();
    };
    let line = s.key_line(d, "runners");
    let scope = |table: &'t dyn TableLike, i: usize, line: usize| Scope {
        table,
        path: format!("runners[{i}]"),
        line,
    };
    match item {
        Item::ArrayOfTables(entries) => entries
            .iter()
            .enumerate()
            .map(|(i, t)| scope(t, i, d.line_of(t.span(), line)))
            .collect(),
        Item::Value(Value::Array(entries)) => {
            let mut out = Vec::new();
            for (i, v) in entries.iter().enumerate() {
                match v.as_inline_table() {
                    Some(t) => out.push(scope(t, i, d.line_of(t.span(), line))),
                    None => d.error(
                        d.line_of(v.span(), line),
                        &format!("runners[{i}]"),
                        format!("expected a table, found {}", v.type_name()),
                    ),
                }
            }
            out
        }
        other => {
            let found = other.type_name();
            d.error(
                line,
                "runners",
                format!("expected [[runners]] entries (an array of tables), found {found}"),
            );
            Vec::new()
        }
    }
}

fn read_runner(d: &mut Diagnostics, s: Scope<'_>) -> RawRunner {
    check_keys(d, &s, &known_keys::RUNNER);
    let (machine, gce) = if s.table.get("executor").and_then(Item::as_str) == Some(DOCKER_MACHINE) {
        (
            s.sub_table(d, "machine").map(|m| machine::read(d, &m)),
            s.sub_table(d, "gce").map(|g| gce::read(d, &g)),
        )
    } else {
        if s.table.contains_key("gce") {
            d.error(
                s.key_line(d, "gce"),
                &s.child_path("gce"),
                "[runners.gce] requires executor \"docker+machine\"",
            );
        }
        if let Some(machine) = s.sub_table(d, "machine") {
            check_machine(d, &machine);
            if !is_empty(machine_item(&s)) {
                d.warn(machine.line, &machine.path, WarningKind::NotSupported);
            }
        }
        (None, None)
    };
    let cache = s.sub_table(d, "cache").map(|c| super::cache::read(d, &c));
    let docker = match s.sub_table(d, "docker") {
        Some(docker) => read_docker(d, &docker),
        None => RawDocker::default(),
    };
    RawRunner {
        line: s.line,
        path: s.path.clone(),
        name: string(d, &s, "name"),
        url: string(d, &s, "url"),
        token: string(d, &s, "token"),
        id: integer(d, &s, "id"),
        token_obtained_at: datetime(d, &s, "token_obtained_at"),
        token_expires_at: datetime(d, &s, "token_expires_at"),
        executor: string(d, &s, "executor"),
        limit: integer(d, &s, "limit"),
        request_concurrency: integer(d, &s, "request_concurrency"),
        output_limit: integer(d, &s, "output_limit"),
        environment: string_list(d, &s, "environment"),
        unhealthy_requests_limit: integer(d, &s, "unhealthy_requests_limit"),
        unhealthy_interval: string(d, &s, "unhealthy_interval"),
        docker,
        machine,
        gce,
        cache,
    }
}

fn machine_item<'t>(s: &Scope<'t>) -> &'t Item {
    s.table.get("machine").unwrap_or(&Item::None)
}

fn read_docker(d: &mut Diagnostics, s: &Scope<'_>) -> RawDocker {
    check_keys(d, s, &known_keys::DOCKER);
    RawDocker {
        host: string(d, s, "host"),
        image: string(d, s, "image"),
        privileged: get(d, s, "privileged", "a boolean", Item::as_bool),
        pull_policy: get(
            d,
            s,
            "pull_policy",
            "a string or an array of strings",
            |item| match item.as_str() {
                Some(one) => Some(vec![one.to_string()]),
                None => strings(item),
            },
        ),
        volumes: string_list(d, s, "volumes"),
        network_mode: string(d, s, "network_mode"),
        cpus: string(d, s, "cpus"),
        memory: string(d, s, "memory"),
        helper_image: string(d, s, "helper_image"),
        helper_image_archive: string(d, s, "helper_image_archive"),
        wait_for_services_timeout: integer(d, s, "wait_for_services_timeout"),
        services_privileged: get(d, s, "services_privileged", "a boolean", Item::as_bool),
        allowed_services: string_list(d, s, "allowed_services"),
        services_limit: integer(d, s, "services_limit"),
        allowed_images: string_list(d, s, "allowed_images"),
        allowed_pull_policies: string_list(d, s, "allowed_pull_policies"),
        tls_verify: get(d, s, "tls_verify", "a boolean", Item::as_bool),
        tls_cert_path: string(d, s, "tls_cert_path"),
    }
}

/// `[runners.machine]` of a runner whose executor does not use it: ignored as a whole (one
/// warning, by the caller), but its keys are checked so a typo is caught early.
fn check_machine(d: &mut Diagnostics, s: &Scope<'_>) {
    check_keys_quietly(d, s, &known_keys::MACHINE);
    match s.table.get("autoscaling") {
        None => {}
        Some(Item::ArrayOfTables(periods)) => {
            for (i, t) in periods.iter().enumerate() {
                let scope = Scope {
                    table: t,
                    path: format!("{}.autoscaling[{i}]", s.path),
                    line: d.line_of(t.span(), s.line),
                };
                check_keys_quietly(d, &scope, &known_keys::MACHINE_AUTOSCALING);
            }
        }
        Some(other) => {
            let found = other.type_name();
            d.error(
                s.key_line(d, "autoscaling"),
                &s.child_path("autoscaling"),
                format!("expected [[runners.machine.autoscaling]] entries, found {found}"),
            );
        }
    }
}
