//! What changed between two configurations, for the reload log line, and which changes need a
//! restart. Runners are matched by [`RunnerConfig::identity`] (URL + short token), so a rename is
//! a change of name, not a new runner. Tokens are never printed: only short tokens.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::time::Duration;

use super::model::{Config, DockerConfig, RunnerConfig, RunnerIdentity};

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
    let changed = changed_variables(&old.environment, &new.environment);
    if !changed.is_empty() {
        out.push(format!(
            "{who}: environment: changed {}",
            changed.join(", ")
        ));
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
