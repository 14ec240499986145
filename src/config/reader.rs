//! Walks the parsed TOML document (toml_edit keeps every key's position) and fills the raw
//! structs: checks each table's keys against the compatibility table (`known_keys`), warns about
//! ignored GitLab Runner keys, reports unknown keys with a suggestion and values of the wrong
//! type. Never stops at the first problem.

use toml_edit::{Item, TableLike, Value};

use super::diag::Diagnostics;
use super::error::WarningKind;
use super::known_keys::{self, Section};
use super::raw::{Field, RawConfig, RawDocker, RawRunner};
use super::read_machine;

/// The executor whose `[runners.machine]` and `[runners.gce]` are read.
const DOCKER_MACHINE: &str = "docker+machine";

/// A table being read: its contents, its key path and the line of its header.
pub(super) struct Scope<'t> {
    pub table: &'t dyn TableLike,
    pub path: String,
    pub line: usize,
}

impl<'t> Scope<'t> {
    pub fn child_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    pub fn key_line(&self, d: &Diagnostics, key: &str) -> usize {
        let span = self
            .table
            .get_key_value(key)
            .and_then(|(k, item)| k.span().or_else(|| item.span()));
        d.line_of(span, self.line)
    }

    /// The sub-table at `key`, if present; an error if `key` holds something else.
    pub fn sub_table(&self, d: &mut Diagnostics, key: &str) -> Option<Scope<'t>> {
        let item = self.table.get(key)?;
        let line = self.key_line(d, key);
        match item.as_table_like() {
            Some(table) => Some(Scope {
                table,
                path: self.child_path(key),
                line,
            }),
            None => {
                let found = item.type_name();
                d.error(
                    line,
                    &self.child_path(key),
                    format!("expected a table, found {found}"),
                );
                None
            }
        }
    }
}

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
            s.sub_table(d, "machine")
                .map(|m| read_machine::machine(d, &m)),
            s.sub_table(d, "gce").map(|g| read_machine::gce(d, &g)),
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

/// Warns about ignored keys and reports unknown ones.
pub(super) fn check_keys(d: &mut Diagnostics, s: &Scope<'_>, section: &Section) {
    check_keys_with(d, s, section, true);
}

/// Reports unknown keys only (the caller warns about the whole table).
fn check_keys_quietly(d: &mut Diagnostics, s: &Scope<'_>, section: &Section) {
    check_keys_with(d, s, section, false);
}

fn check_keys_with(d: &mut Diagnostics, s: &Scope<'_>, section: &Section, warn_ignored: bool) {
    for (key, item) in s.table.iter() {
        if section.is_supported(key) {
            continue;
        }
        let line = s.key_line(d, key);
        let path = s.child_path(key);
        if section.is_ignored(key) {
            if is_default(item) {
                continue;
            }
            if section.is_restricting(key) {
                d.error(
                    line,
                    &path,
                    "not supported, and it restricts what jobs may do: Flotilla refuses to start \
                     rather than run jobs without it (remove it, or set GitLab Runner's default)",
                );
            } else if warn_ignored {
                d.warn(line, &path, WarningKind::NotSupported);
            }
            continue;
        }
        d.error(line, &path, unknown("key", key, section));
    }
}

/// "unknown key", with a "did you mean" when a known name is close.
pub(super) fn unknown(what: &str, name: &str, section: &Section) -> String {
    match suggest(name, section.all()) {
        Some(near) => format!("unknown {what}; did you mean \"{near}\"?"),
        None => format!("unknown {what}"),
    }
}

/// The known key closest to `key`, if one is close enough to be a likely typo.
fn suggest(key: &str, known: impl Iterator<Item = &'static str>) -> Option<&'static str> {
    let normalize = |s: &str| s.to_ascii_lowercase().replace('-', "_");
    let wanted = normalize(key);
    let limit = (wanted.chars().count() / 3).max(1);
    known
        .map(|k| (strsim::damerau_levenshtein(&wanted, &normalize(k)), k))
        .filter(|(distance, _)| *distance <= limit)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, k)| k)
}

/// Whether an item is at GitLab Runner's default for a key of its type (false, 0, "", or
/// empty): setting an ignored key to it changes nothing, so it is neither a warning nor an error.
fn is_default(item: &Item) -> bool {
    match item {
        Item::Value(Value::Boolean(b)) => !*b.value(),
        Item::Value(Value::Integer(i)) => *i.value() == 0,
        Item::Value(Value::Float(f)) => *f.value() == 0.0,
        Item::Value(Value::String(s)) => s.value().is_empty(),
        _ => is_empty(item),
    }
}

/// Whether an item holds no value at all (an empty array, or `[runners.cache]` with only empty
/// sub-tables, as `gitlab-runner register` writes): ignoring it changes nothing, so it earns no
/// warning.
pub(super) fn is_empty(item: &Item) -> bool {
    match item {
        Item::None => true,
        Item::Table(t) => t.iter().all(|(_, i)| is_empty(i)),
        Item::ArrayOfTables(a) => a.iter().all(|t| t.iter().all(|(_, i)| is_empty(i))),
        Item::Value(Value::InlineTable(t)) => t.is_empty(),
        Item::Value(Value::Array(a)) => a.is_empty(),
        Item::Value(_) => false,
    }
}

/// Reads `key` with `convert`; a value `convert` rejects is a type error.
pub(super) fn get<T>(
    d: &mut Diagnostics,
    s: &Scope<'_>,
    key: &str,
    expected: &str,
    convert: impl Fn(&Item) -> Option<T>,
) -> Option<Field<T>> {
    let item = s.table.get(key)?;
    let line = s.key_line(d, key);
    match convert(item) {
        Some(value) => Some(Field { value, line }),
        None => {
            let found = item.type_name();
            d.error(
                line,
                &s.child_path(key),
                format!("expected {expected}, found {found}"),
            );
            None
        }
    }
}

pub(super) fn string(d: &mut Diagnostics, s: &Scope<'_>, key: &str) -> Option<Field<String>> {
    get(d, s, key, "a string", |item| {
        item.as_str().map(str::to_string)
    })
}

pub(super) fn integer(d: &mut Diagnostics, s: &Scope<'_>, key: &str) -> Option<Field<i64>> {
    get(d, s, key, "an integer", Item::as_integer)
}

pub(super) fn string_list(
    d: &mut Diagnostics,
    s: &Scope<'_>,
    key: &str,
) -> Option<Field<Vec<String>>> {
    get(d, s, key, "an array of strings", strings)
}

fn strings(item: &Item) -> Option<Vec<String>> {
    item.as_array()?
        .iter()
        .map(|v| v.as_str().map(str::to_string))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::suggest;

    #[test]
    fn suggestions_catch_typos_case_and_dashes() {
        let known = ["image", "privileged", "tls-ca-file", "IdleCount"];
        assert_eq!(suggest("imagee", known.into_iter()), Some("image"));
        assert_eq!(
            suggest("priviledged", known.into_iter()),
            Some("privileged")
        );
        assert_eq!(
            suggest("tls_ca_file", known.into_iter()),
            Some("tls-ca-file")
        );
        assert_eq!(suggest("idlecount", known.into_iter()), Some("IdleCount"));
        assert_eq!(suggest("frobnicate", known.into_iter()), None);
    }
}
