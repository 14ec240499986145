//! Loading `docker-autoscaler` runners: a GitLab Runner 19.x file with the googlecloud fleeting
//! plugin carried over onto the docker+machine settings, and each rule of the mapping with the
//! line it reports.

use std::time::Duration;

use super::*;

const FIXTURE: &str =
    include_str!("../../tests/fixtures/config_gitlab_runner_docker_autoscaler_googlecloud.toml");

/// A docker-autoscaler runner whose `[runners.autoscaler]` is on line 6, `autoscaler` right
/// after it, then `[runners.autoscaler.plugin_config]` with a name and `plugin`, then `more`.
fn runner(autoscaler: &str, plugin: &str, more: &str) -> String {
    let token = format!("glrt-{}", "a".repeat(20));
    format!(
        "[[runners]]\n\
         name = \"a\"\n\
         url = \"https://gitlab.example.com/\"\n\
         token = \"{token}\"\n\
         executor = \"docker-autoscaler\"\n\
         [runners.autoscaler]\n\
         {autoscaler}\n\
         [runners.autoscaler.plugin_config]\n\
         name = \"group-a\"\n\
         project = \"p\"\n\
         zone = \"us-east1-b\"\n\
         {plugin}\n\
         {more}\n"
    )
}

fn load(text: &str) -> Loaded {
    match Config::from_toml_str(text, "config.toml") {
        Ok(loaded) => loaded,
        Err(e) => panic!("expected the file to load, got:\n{e}"),
    }
}

fn errors(text: &str) -> String {
    match Config::from_toml_str(text, "config.toml") {
        Ok(loaded) => panic!("expected errors, got {:#?}", loaded.config),
        Err(e) => e.to_string(),
    }
}

#[test]
fn gitlab_runner_docker_autoscaler_file_is_carried_over_onto_the_gce_fleet() {
    let loaded = load(FIXTURE);
    let r = &loaded.config.runners[0];
    assert_eq!(r.executor, ExecutorKind::DockerMachine);
    assert_eq!(r.limit, 10, "max_instances");

    let m = r.machine.as_ref().expect("machine settings");
    assert_eq!(m.machine_name, "ci-runners-group-%s");
    assert_eq!(m.max_builds, 1, "max_use_count");
    assert_eq!(m.idle_count, 0, "outside every policy");
    assert_eq!(m.autoscaling.len(), 2);
    let always = &m.autoscaling[0];
    assert_eq!(always.periods, vec!["* * * * * * *"]);
    assert_eq!(
        always.idle_count, 5,
        "scale_factor_limit caps the scaled idle count"
    );
    assert_eq!(always.idle_count_min, 1, "idle_count is the floor");
    assert_eq!(always.idle_scale_factor, 0.5);
    assert_eq!(always.idle_time, Duration::from_secs(1200));
    let weekend = &m.autoscaling[1];
    assert_eq!(weekend.periods, vec!["* * * * * sat,sun *"]);
    assert_eq!(weekend.timezone, "Europe/Berlin");
    assert_eq!(weekend.idle_count, 0);
    assert_eq!(weekend.idle_scale_factor, 0.0);
    assert_eq!(weekend.idle_time, Duration::from_secs(300));

    let g = r.gce.as_ref().expect("gce settings");
    assert_eq!(g.project, "gitlab-ci-fake-420211");
    assert_eq!(g.zones, vec!["europe-west1-c"]);
    assert!(!g.use_internal_ip, "use_external_addr = true");
    assert_eq!(
        g.credentials_file.as_deref(),
        Some(std::path::Path::new(
            "/home/gitlab-runner/.config/gcloud/fleeting-sa.json"
        ))
    );
    assert_eq!(
        g.labels.get(INSTANCE_GROUP_LABEL).map(String::as_str),
        Some("ci-runners-group")
    );
    assert!(!g.docker_machine_tag);
    assert_eq!(g.machine_type, "e2-standard-2", "Flotilla's default");

    let mapping = r.autoscaler.as_ref().expect("the mapping");
    assert_eq!(mapping.instance_group, "ci-runners-group");
    let shown = mapping.to_string();
    for expected in [
        "instance group \"ci-runners-group\"",
        "VM names \"ci-runners-group-%s\"",
        "max_instances 10 → limit 10",
        "max_use_count 1 → MaxBuilds 1",
        "Periods [\"* * * * * sat,sun *\"]",
        "use_internal_ip false",
        "not carried over (ignored, see the warnings): runners[0].autoscaler.instance_ready_command, \
         runners[0].autoscaler.connector_config.username",
    ] {
        assert!(shown.contains(expected), "{expected:?} not in:\n{shown}");
    }
    let warned: Vec<&str> = loaded.warnings.iter().map(|w| w.path.as_str()).collect();
    assert!(
        warned.contains(&"runners[0].autoscaler.instance_ready_command"),
        "{warned:?}"
    );
}

#[test]
fn capacity_per_instance_above_one_is_refused() {
    let e = errors(&runner(
        "plugin = \"googlecloud\"\ncapacity_per_instance = 4",
        "",
        "",
    ));
    assert!(
        e.contains(
            "config.toml:8: runners[0].autoscaler.capacity_per_instance: capacity_per_instance = \
             4: Flotilla runs one job per VM at a time"
        ),
        "{e}"
    );
    load(&runner(
        "plugin = \"googlecloud\"\ncapacity_per_instance = 1",
        "",
        "",
    ));
}

#[test]
fn the_plugin_must_be_googlecloud_in_any_spelling() {
    for plugin in [
        "googlecloud",
        "fleeting-plugin-googlecloud",
        "gitlab/fleeting-plugin-googlecloud:latest",
    ] {
        load(&runner(&format!("plugin = \"{plugin}\""), "", ""));
    }
    let e = errors(&runner("plugin = \"aws\"", "", ""));
    assert!(e.contains("config.toml:7: runners[0].autoscaler.plugin: plugin \"aws\": only the googlecloud plugin"), "{e}");
    let e = errors(&runner("", "", ""));
    assert!(e.contains("runners[0].autoscaler.plugin: required"), "{e}");
}

#[test]
fn policies_are_checked_in_the_autoscalers_words() {
    let policy = "[[runners.autoscaler.policy]]\n\
                  periods = [\"* * * * * *\"]\n\
                  timezone = \"Mars/Olympus\"\n\
                  idle_time = \"soon\"\n\
                  idle_count = -1\n";
    let e = errors(&runner("plugin = \"googlecloud\"", "", policy));
    for expected in [
        "config.toml:14: runners[0].autoscaler.policy[0].periods: invalid period \"* * * * * *\": \
         expected 5 fields",
        "config.toml:17: runners[0].autoscaler.policy[0].idle_count: must not be negative",
    ] {
        assert!(e.contains(expected), "{expected:?} not in:\n{e}");
    }
    let policy = "[[runners.autoscaler.policy]]\n\
                  timezone = \"Mars/Olympus\"\n\
                  idle_time = \"soon\"\n";
    let e = errors(&runner("plugin = \"googlecloud\"", "", policy));
    assert!(e.contains("config.toml:14: runners[0].autoscaler.policy[0].timezone: unknown time zone \"Mars/Olympus\""), "{e}");
}

#[test]
fn the_instance_group_name_is_required_and_a_gce_name() {
    let e = errors(&runner("plugin = \"googlecloud\"", "", "").replace("name = \"group-a\"\n", ""));
    assert!(
        e.contains("runners[0].autoscaler.plugin_config.name: required"),
        "{e}"
    );
    let e = errors(&runner("plugin = \"googlecloud\"", "", "").replace("group-a", "Group_A"));
    assert!(e.contains("invalid instance group name \"Group_A\""), "{e}");
    let e = errors(&runner("plugin = \"googlecloud\"", "regoin = \"x\"", ""));
    assert!(
        e.contains("runners[0].autoscaler.plugin_config.regoin: unknown key"),
        "{e}"
    );
}

#[test]
fn runner_limit_and_gce_table_combine_with_the_autoscaler() {
    let text = runner(
        "plugin = \"googlecloud\"\nmax_instances = 8",
        "endpoint = \"http://127.0.0.1:1\"",
        "[runners.gce]\nmachine_type = \"n2-standard-4\"\ncreate_timeout = 30",
    )
    .replace("executor =", "limit = 3\nexecutor =");
    let loaded = load(&text);
    let r = &loaded.config.runners[0];
    assert_eq!(r.limit, 3, "the lower of limit and max_instances");
    let g = r.gce.as_ref().expect("gce");
    assert_eq!(g.machine_type, "n2-standard-4");
    assert_eq!(g.create_timeout, Duration::from_secs(30));
    assert_eq!(g.endpoint.as_deref(), Some("http://127.0.0.1:1"));
    let m = r.machine.as_ref().expect("machine");
    assert!(m.autoscaling.is_empty());
    assert_eq!(m.max_builds, 0);
}

#[test]
fn an_autoscaler_table_on_another_executor_is_warned_and_ignored() {
    let text = runner("plugin = \"googlecloud\"", "", "")
        .replace("executor = \"docker-autoscaler\"", "executor = \"docker\"");
    let loaded = load(&text);
    let warned: Vec<&str> = loaded.warnings.iter().map(|w| w.path.as_str()).collect();
    assert_eq!(warned, vec!["runners[0].autoscaler"]);
    assert!(loaded.config.runners[0].autoscaler.is_none());
}

#[test]
fn example_docker_autoscaler_runner_loads() {
    let example = include_str!("../../config.example.toml");
    let start = example
        .find("executor = \"docker-autoscaler\"")
        .and_then(|at| example[..at].rfind("# [[runners]]"))
        .expect("a commented docker-autoscaler example");
    let runner: String = example[start..]
        .lines()
        .take_while(|line| !line.trim().is_empty())
        .filter_map(|line| line.trim_start().strip_prefix("# "))
        .map(|line| format!("{line}\n"))
        .collect();
    let loaded = load(&runner);
    assert!(loaded.warnings.is_empty(), "{:#?}", loaded.warnings);
    let r = &loaded.config.runners[0];
    assert_eq!(r.limit, 20);
    assert_eq!(
        r.gce.as_ref().map(|g| g.machine_type.as_str()),
        Some("e2-standard-4")
    );
    assert_eq!(r.machine.as_ref().map(|m| m.autoscaling.len()), Some(2));
}
