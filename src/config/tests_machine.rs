//! Loading `docker+machine` runners: a GitLab Runner file carried over with `MachineDriver =
//! "google"` + `MachineOptions`, `[runners.gce]` beside or instead of it, and each rule of
//! `[runners.machine]` and `[runners.gce]` with the line it reports.

use std::collections::BTreeMap;
use std::sync::LazyLock;
use std::time::Duration;

use super::*;
use crate::testing::fake_runner_token;

/// The runner token of [`machine_runner`] and [`CARRIED`], made once per test run.
static TOKEN: LazyLock<String> = LazyLock::new(fake_runner_token);

/// The carried-over GitLab.com-style file, with [`TOKEN`] for its `@TOKEN@`.
static CARRIED: LazyLock<String> = LazyLock::new(|| {
    include_str!("../../tests/fixtures/config_gitlab_runner_docker_machine_google.toml")
        .replace("@TOKEN@", &TOKEN)
});
const EXAMPLE: &str = include_str!("../../config.example.toml");

/// A docker+machine runner: line 7 holds `[runners.machine]` (`machine` follows it),
/// then `[runners.gce]` with `gce`, then `[runners.docker]` with `docker`.
fn machine_runner(machine: &str, gce: &str, docker: &str) -> String {
    let token = &*TOKEN;
    format!(
        "[[runners]]\n\
         name = \"m\"\n\
         url = \"https://gitlab.example.com/\"\n\
         token = \"{token}\"\n\
         executor = \"docker+machine\"\n\
         # line 6\n\
         [runners.machine]\n\
         {machine}\n\
         [runners.gce]\n\
         {gce}\n\
         [runners.docker]\n\
         {docker}\n"
    )
}

/// `[runners.gce]` with the required keys, then `more`.
fn gce(more: &str) -> String {
    format!("project = \"p\"\nzones = [\"us-east1-b\"]\n{more}")
}

fn load(text: &str) -> Loaded {
    match Config::from_toml_str(text, "config.toml") {
        Ok(loaded) => loaded,
        Err(e) => panic!("expected the file to load, got:\n{e}"),
    }
}

fn errors(text: &str) -> Vec<String> {
    match Config::from_toml_str(text, "config.toml") {
        Ok(loaded) => panic!("expected errors, got {:#?}", loaded.config),
        Err(e) => e.to_string().lines().map(str::to_string).collect(),
    }
}

fn warnings(loaded: &Loaded) -> Vec<String> {
    loaded.warnings.iter().map(|w| w.to_string()).collect()
}

#[test]
fn carried_over_google_machine_options_load_with_warnings_only() {
    let loaded = load(&CARRIED);
    let r = &loaded.config.runners[0];
    assert_eq!(r.executor, ExecutorKind::DockerMachine);
    assert_eq!(r.limit, 20);

    let m = r.machine.as_ref().expect("machine settings");
    assert_eq!(m.idle_count, 50);
    assert_eq!(m.idle_count_min, 0, "no IdleScaleFactor: no floor");
    assert_eq!(m.idle_scale_factor, 0.0);
    assert_eq!(m.idle_time, Duration::from_secs(3600));
    assert_eq!(m.max_builds, 1);
    assert_eq!(m.max_growth_rate, 0);
    assert_eq!(m.machine_name, "runner-%s-srm");
    assert_eq!(m.autoscaling.len(), 2);
    assert_eq!(m.autoscaling[0].periods, vec!["* * * * * sat,sun *"]);
    assert_eq!(m.autoscaling[0].timezone, "UTC");
    assert_eq!(m.autoscaling[0].idle_count, 70);
    assert_eq!(m.autoscaling[0].idle_count_min, 0);
    assert_eq!(m.autoscaling[1].periods.len(), 2);
    assert_eq!(m.autoscaling[1].timezone, "America/New_York");
    assert_eq!(m.autoscaling[1].idle_count, 700);
    assert_eq!(m.autoscaling[1].idle_scale_factor, 1.5);
    assert_eq!(
        m.autoscaling[1].idle_count_min, 1,
        "IdleCountMin is 1 when IdleScaleFactor > 0, as GitLab Runner"
    );
    assert_eq!(m.autoscaling[1].idle_time, Duration::from_secs(3600));

    let g = r.gce.as_ref().expect("gce settings");
    let expected = GceConfig {
        project: "gitlab-ci-fake-155816".into(),
        zones: vec!["us-east1-d".into()],
        machine_type: "n1-standard-1".into(),
        image: "projects/gitlab-ci-fake-155816/global/images/runners-cos-stable-v20240101".into(),
        disk_size_gb: 25,
        disk_type: "pd-ssd".into(),
        network: "ci".into(),
        subnetwork: Some("shared-runners".into()),
        use_internal_ip: true,
        internal_ip_only: false,
        tags: vec!["gitlab-com".into(), "srm".into()],
        labels: BTreeMap::from([
            ("env".to_string(), "prod".to_string()),
            ("gl_resource_type".to_string(), "ci_ephemeral".to_string()),
        ]),
        service_account: Some("runners@gitlab-ci-fake-155816.iam.gserviceaccount.com".into()),
        scopes: vec![
            "https://www.googleapis.com/auth/logging.write".into(),
            "https://www.googleapis.com/auth/monitoring.write".into(),
        ],
        spot: true,
        endpoint: None,
        credentials_file: None,
        create_timeout: Duration::from_secs(600),
        docker_port: 2376,
        api_rate_per_minute: 600,
        zone_cooldown: Duration::from_secs(300),
        queue_aware: true,
        docker_machine_tag: true,
    };
    assert_eq!(g, &expected);

    let cache = &loaded.config.runners[0].cache;
    assert!(cache.shared);
    match &cache.storage {
        crate::config::CacheStorage::Gcs(gcs) => {
            assert_eq!(gcs.bucket_name, "bucket-name");
            assert_eq!(
                gcs.credentials,
                crate::config::GcsCredentials::File("/path/to/file".into())
            );
        }
        other => panic!("expected the gcs cache, got {other:?}"),
    }

    let mut warnings = warnings(&loaded);
    warnings.sort();
    let mut expected = vec![
        "config.toml:49: runners[0].machine.MachineOptions[google-username]: ignored: not supported",
        "config.toml:50: runners[0].machine.MachineOptions[google-open-port]: ignored: not supported",
        "config.toml:51: runners[0].machine.MachineOptions[google-operation-backoff-initial-interval]: ignored: not supported",
        "config.toml:52: runners[0].machine.MachineOptions[engine-opt]: ignored: not supported",
        "config.toml:53: runners[0].machine.MachineOptions[engine-registry-mirror]: ignored: not supported",
        "config.toml:55: runners[0].machine.OffPeakPeriods: ignored: not supported",
        "config.toml:56: runners[0].machine.OffPeakTimezone: ignored: not supported",
        "config.toml:57: runners[0].machine.OffPeakIdleCount: ignored: not supported",
        "config.toml:58: runners[0].machine.OffPeakIdleTime: ignored: not supported",
    ];
    expected.sort();
    assert_eq!(warnings, expected);
}

#[test]
fn gce_table_beside_machine_options_wins_and_warns_where_they_disagree() {
    let text = format!(
        "{}\n  [runners.gce]\n    endpoint = \"http://127.0.0.1:1\"\n    \
         project = \"gitlab-ci-fake-155816\"\n    zones = [\"us-east1-c\", \"us-east1-b\"]\n",
        *CARRIED
    );
    let loaded = load(&text);
    let g = loaded.config.runners[0].gce.as_ref().expect("gce settings");
    assert_eq!(g.endpoint.as_deref(), Some("http://127.0.0.1:1"));
    assert_eq!(g.zones, vec!["us-east1-c", "us-east1-b"]);
    assert_eq!(g.project, "gitlab-ci-fake-155816");
    assert_eq!(g.machine_type, "n1-standard-1", "still from MachineOptions");
    assert!(g.docker_machine_tag);
    let warnings = warnings(&loaded);
    let overrides: Vec<&String> = warnings
        .iter()
        .filter(|w| w.contains("overrides"))
        .collect();
    assert_eq!(
        overrides,
        vec![
            "config.toml:74: runners[0].gce.zones: overrides MachineOptions google-zone: \
             [\"us-east1-c\", \"us-east1-b\"] is used, not [\"us-east1-d\"]"
        ],
        "an agreeing project earns no warning"
    );
}

#[test]
fn gce_table_alone_takes_flotilla_defaults() {
    let loaded = load(&machine_runner("", &gce(""), ""));
    assert!(loaded.warnings.is_empty(), "{:#?}", loaded.warnings);
    let r = &loaded.config.runners[0];
    let m = r.machine.as_ref().expect("machine settings");
    assert_eq!(m.machine_name, "flotilla-%s");
    assert_eq!((m.idle_count, m.max_builds), (0, 0));
    let g = r.gce.as_ref().expect("gce settings");
    assert_eq!(g.machine_type, "e2-standard-2");
    assert_eq!(
        g.image,
        "projects/cos-cloud/global/images/family/cos-stable"
    );
    assert_eq!(g.disk_size_gb, 50);
    assert_eq!(g.disk_type, "pd-balanced");
    assert_eq!(g.network, "default");
    assert_eq!(g.subnetwork, None);
    assert!(g.use_internal_ip);
    assert!(!g.internal_ip_only);
    assert!(!g.spot);
    assert_eq!(g.service_account, None);
    assert!(g.scopes.is_empty() && g.tags.is_empty() && g.labels.is_empty());
    assert_eq!(g.create_timeout, Duration::from_secs(600));
    assert_eq!(g.docker_port, 2376);
    assert_eq!(g.api_rate_per_minute, 600);
    assert_eq!(g.zone_cooldown, Duration::from_secs(300));
    assert!(g.queue_aware, "queue-aware scale-out is on by default");
    assert!(!g.docker_machine_tag);
}

#[test]
fn queue_aware_scaling_can_be_switched_off() {
    let loaded = load(&machine_runner("", &gce("queue_aware_scaling = false"), ""));
    assert!(loaded.warnings.is_empty(), "{:#?}", loaded.warnings);
    let g = loaded.config.runners[0].gce.as_ref().expect("gce settings");
    assert!(!g.queue_aware);
    let errors = errors(&machine_runner(
        "",
        &gce("queue_aware_scaling = \"no\""),
        "",
    ));
    assert!(
        errors[0].starts_with("config.toml:12: runners[0].gce.queue_aware_scaling:"),
        "{errors:#?}"
    );
}

#[test]
fn machine_name_needs_a_placeholder() {
    let missing = errors(&machine_runner(
        "MachineName = \"runner-srm\"",
        &gce(""),
        "",
    ));
    assert_eq!(missing.len(), 1, "{missing:#?}");
    assert!(
        missing[0].starts_with(
            "config.toml:8: runners[0].machine.MachineName: invalid MachineName \"runner-srm\": \
             must contain %s"
        ),
        "{missing:#?}"
    );
    let upper = errors(&machine_runner("MachineName = \"Runner-%s\"", &gce(""), ""));
    assert!(upper[0].contains("lowercase letters"), "{upper:#?}");
}

#[test]
fn bad_periods_and_time_zones_are_errors_with_lines() {
    let machine = "IdleCount = 1\n\
                   [[runners.machine.autoscaling]]\n\
                   Periods = [\n\
                   \"* * 9-17 * * mon-fri *\",\n\
                   \"* 9-17 * * mon-fri\",\n\
                   \"* * 25 * * * *\",\n\
                   ]\n\
                   Timezone = \"Mars/Olympus\"\n\
                   [[runners.machine.autoscaling]]\n\
                   IdleCount = 2";
    let errors = errors(&machine_runner(machine, &gce(""), ""));
    let expected = [
        "config.toml:16: runners[0].machine.autoscaling[1].Periods: required",
        "config.toml:12: runners[0].machine.autoscaling[0].Periods: invalid period \
         \"* 9-17 * * mon-fri\": expected 7 fields",
        "config.toml:13: runners[0].machine.autoscaling[0].Periods: invalid period \
         \"* * 25 * * * *\"",
        "config.toml:15: runners[0].machine.autoscaling[0].Timezone: unknown time zone \
         \"Mars/Olympus\"",
    ];
    for e in expected {
        assert!(
            errors.iter().any(|line| line.starts_with(e)),
            "missing {e:?} in {errors:#?}"
        );
    }
    assert_eq!(errors.len(), expected.len(), "{errors:#?}");
}

#[test]
fn counts_must_not_be_negative() {
    let errors = errors(&machine_runner(
        "IdleCount = -1\nIdleScaleFactor = -0.5\nIdleTime = -3",
        &gce(""),
        "",
    ));
    assert_eq!(errors.len(), 3, "{errors:#?}");
    assert!(
        errors[0].starts_with("config.toml:8: runners[0].machine.IdleCount: must not be negative")
    );
    assert!(errors[1].starts_with("config.toml:9: runners[0].machine.IdleScaleFactor:"));
    assert!(
        errors[2].starts_with("config.toml:10: runners[0].machine.IdleTime: must not be negative")
    );
}

#[test]
fn internal_ip_only_needs_use_internal_ip() {
    let text = machine_runner(
        "",
        &gce("use_internal_ip = false\ninternal_ip_only = true"),
        "",
    );
    assert_eq!(
        errors(&text),
        vec![
            "config.toml:13: runners[0].gce.internal_ip_only: internal_ip_only = true needs \
             use_internal_ip = true: a VM without an external IP is reached over its internal IP"
        ]
    );
    let only = load(&machine_runner(
        "MachineDriver = \"google\"\nMachineOptions = [\"google-project=p\", \
         \"google-zone=us-east1-b\", \"google-use-internal-ip-only\"]",
        "",
        "",
    ));
    let g = only.config.runners[0].gce.as_ref().expect("gce settings");
    assert!(
        g.internal_ip_only && g.use_internal_ip,
        "docker-machine: -only implies use"
    );
}

#[test]
fn subnetwork_must_hold_every_zone() {
    let path_form = errors(&machine_runner(
        "",
        "project = \"p\"\nzones = [\"us-east1-b\", \"us-west1-a\"]\n\
         subnetwork = \"projects/p/regions/us-east1/subnetworks/ci\"",
        "",
    ));
    assert_eq!(path_form.len(), 1, "{path_form:#?}");
    assert!(
        path_form[0].starts_with(
            "config.toml:12: runners[0].gce.subnetwork: subnetwork \
             \"projects/p/regions/us-east1/subnetworks/ci\" is in region us-east1, but zone \
             \"us-west1-a\" is not"
        ),
        "{path_form:#?}"
    );
    let bare = errors(&machine_runner(
        "",
        "project = \"p\"\nzones = [\"us-east1-b\", \"europe-west4-a\"]\nsubnetwork = \"ci\"",
        "",
    ));
    assert!(
        bare[0].contains("the zones span regions europe-west4, us-east1"),
        "{bare:#?}"
    );
    load(&machine_runner(
        "",
        "project = \"p\"\nzones = [\"us-east1-b\", \"us-east1-c\"]\nsubnetwork = \"ci\"",
        "",
    ));
}

#[test]
fn unknown_machine_option_is_an_error_with_a_suggestion() {
    let errors = errors(&machine_runner(
        "MachineDriver = \"google\"\nMachineOptions = [\n\"google-project=p\",\n\
         \"google-zoen=us-east1-b\",\n\"google-zone=us-east1-b\",\n\"frobnicate\",\n]",
        "",
        "",
    ));
    assert_eq!(
        errors,
        vec![
            "config.toml:11: runners[0].machine.MachineOptions: unknown option \"google-zoen\"; \
             did you mean \"google-zone\"?",
            "config.toml:13: runners[0].machine.MachineOptions: unknown option \"frobnicate\"",
        ]
    );
}

#[test]
fn labels_follow_gce_rules() {
    let table = errors(&machine_runner(
        "",
        &gce(
            "labels = { team = \"ci\", Env = \"prod\", tier = \"Gold\", flotilla-runner = \"x\" }",
        ),
        "",
    ));
    let expected = [
        "config.toml:12: runners[0].gce.labels: invalid label key \"Env\"",
        "config.toml:12: runners[0].gce.labels: label key \"flotilla-runner\" is reserved",
        "config.toml:12: runners[0].gce.labels: invalid value \"Gold\" of label \"tier\"",
    ];
    for e in expected {
        assert!(
            table.iter().any(|line| line.starts_with(e)),
            "missing {e:?} in {table:#?}"
        );
    }
    assert_eq!(table.len(), expected.len(), "{table:#?}");

    let options = errors(&machine_runner(
        "MachineDriver = \"google\"\nMachineOptions = [\"google-project=p\", \
         \"google-zone=us-east1-b\", \"google-label=no-colon\"]",
        "",
        "",
    ));
    assert_eq!(
        options,
        vec![
            "config.toml:9: runners[0].machine.MachineOptions[google-label]: invalid label \
             \"no-colon\": expected key:value"
        ]
    );
    let good = load(&machine_runner("", &gce("labels = { team = \"ci\" }"), ""));
    let g = good.config.runners[0].gce.as_ref().expect("gce settings");
    assert_eq!(g.labels.get("team").map(String::as_str), Some("ci"));
}

#[test]
fn docker_machine_needs_the_google_driver_or_a_gce_table() {
    let none = errors(&machine_runner("", "", "").replace("[runners.gce]\n", ""));
    assert_eq!(
        none,
        vec![
            "config.toml:1: runners[0].gce: executor \"docker+machine\" needs a GCE definition: \
             [runners.gce], or [runners.machine] MachineDriver = \"google\" with MachineOptions"
        ]
    );
    let other = errors(&machine_runner(
        "MachineDriver = \"amazonec2\"",
        &gce(""),
        "",
    ));
    assert_eq!(
        other,
        vec![
            "config.toml:8: runners[0].machine.MachineDriver: MachineDriver \"amazonec2\": only \
             the google driver is supported"
        ]
    );
    let driverless = errors(&machine_runner(
        "MachineOptions = [\"google-project=p\"]",
        &gce(""),
        "",
    ));
    assert_eq!(
        driverless,
        vec![
            "config.toml:8: runners[0].machine.MachineOptions: MachineOptions need \
             MachineDriver = \"google\""
        ]
    );
}

#[test]
fn gce_keys_are_checked() {
    let errors = errors(&machine_runner(
        "",
        "projet = \"p\"\nzones = []\ndisk_size_gb = 5\ndocker_port = 70000\n\
         image = \"ubuntu\"\nendpoint = \"localhost:1\"\nscopes = [\"cloud-platform\"]",
        "",
    ));
    let expected = [
        "config.toml:10: runners[0].gce.projet: unknown key; did you mean \"project\"?",
        "config.toml:9: runners[0].gce.project: required: the Google Cloud project",
        "config.toml:11: runners[0].gce.zones: required: at least one zone",
        "config.toml:12: runners[0].gce.disk_size_gb: must be between 10 and 65536 (GB)",
        "config.toml:13: runners[0].gce.docker_port: must be a port number",
        "config.toml:14: runners[0].gce.image: invalid image \"ubuntu\"",
        "config.toml:15: runners[0].gce.endpoint: invalid URL \"localhost:1\"",
        "config.toml:16: runners[0].gce.scopes: scopes need a service_account",
    ];
    for e in expected {
        assert!(
            errors.iter().any(|line| line.starts_with(e)),
            "missing {e:?} in {errors:#?}"
        );
    }
    assert_eq!(errors.len(), expected.len(), "{errors:#?}");
}

#[test]
fn scopes_carried_without_a_service_account_are_dropped_with_a_warning() {
    let loaded = load(&machine_runner(
        "MachineDriver = \"google\"\nMachineOptions = [\"google-project=p\", \
         \"google-zone=us-east1-b\", \"google-scopes=https://www.googleapis.com/auth/logging.write\"]",
        "",
        "",
    ));
    let g = loaded.config.runners[0].gce.as_ref().expect("gce settings");
    assert!(g.scopes.is_empty());
    assert_eq!(g.service_account, None);
    assert!(!g.use_internal_ip, "docker-machine used the external IP");
    assert_eq!(
        warnings(&loaded),
        vec![
            "config.toml:9: runners[0].machine.MachineOptions[google-scopes]: ignored: scopes \
             without a service account (Flotilla attaches none unless google-service-account or \
             [runners.gce] service_account names one)"
        ]
    );
}

#[test]
fn host_network_on_vms_is_warned() {
    let loaded = load(&machine_runner("", &gce(""), "network_mode = \"host\""));
    assert_eq!(
        warnings(&loaded),
        vec![
            "config.toml:14: runners[0].docker.network_mode: network_mode \"host\" bypasses the \
             block of the metadata server (169.254.169.254) on the VMs: job containers can reach it"
        ]
    );
}

#[test]
fn gce_with_the_docker_executor_is_an_error() {
    let text = machine_runner("IdleCount = 1", &gce(""), "")
        .replace("executor = \"docker+machine\"", "executor = \"docker\"");
    let errors = errors(&text);
    assert_eq!(
        errors,
        vec!["config.toml:9: runners[0].gce: [runners.gce] requires executor \"docker+machine\" or \"docker-autoscaler\""]
    );
}

#[test]
fn diff_shows_machine_and_gce_changes() {
    let old = load(&machine_runner("IdleCount = 1", &gce(""), "")).config;
    let new = load(&machine_runner(
        "IdleCount = 3",
        &gce("endpoint = \"http://127.0.0.1:1\"\nspot = true"),
        "",
    ))
    .config;
    let all = diff(&old, &new).join("\n");
    assert!(all.contains("machine.IdleCount: 1 → 3"), "{all}");
    assert!(all.contains("gce.spot: false → true"), "{all}");
    assert!(
        all.contains("gce.endpoint: None → Some(\"http://127.0.0.1:1\")"),
        "{all}"
    );
    assert!(!all.contains(TOKEN.as_str()), "{all}");
    let docker = load(
        &machine_runner("", "", "")
            .replace("executor = \"docker+machine\"", "executor = \"docker\"")
            .replace("[runners.machine]\n", "")
            .replace("[runners.gce]\n", ""),
    )
    .config;
    let switched = diff(&docker, &new).join("\n");
    assert!(
        switched.contains("executor: docker → docker+machine"),
        "{switched}"
    );
    assert!(switched.contains("machine: unset → set"), "{switched}");
    assert!(switched.contains("gce: unset → set"), "{switched}");
}

/// The example file's commented docker+machine runner, uncommented, loads without a warning.
#[test]
fn example_docker_machine_runner_loads() {
    let start = EXAMPLE
        .find("# [[runners]]")
        .expect("a commented docker+machine example");
    let runner: String = EXAMPLE[start..]
        .lines()
        .take_while(|line| !line.trim().is_empty())
        .filter_map(|line| line.trim_start().strip_prefix("# "))
        .filter(|line| !line.starts_with('#') && !line.starts_with("--"))
        .map(|line| format!("{line}\n"))
        .collect();
    let loaded = load(&runner);
    assert!(loaded.warnings.is_empty(), "{:#?}", loaded.warnings);
    let r = &loaded.config.runners[0];
    assert_eq!(r.executor, ExecutorKind::DockerMachine);
    assert!(r.gce.is_some() && r.machine.is_some());
}

#[test]
fn idle_count_policy_is_static_by_default_adaptive_on_request_and_checked() {
    let policy = |machine: &str| {
        let loaded = load(&machine_runner(machine, &gce(""), "")).config;
        loaded.runners[0]
            .machine
            .as_ref()
            .map(|m| m.idle_count_policy)
    };
    assert_eq!(policy("IdleCount = 5"), Some(IdleCountPolicy::Static));
    assert_eq!(
        policy("IdleCount = 5\nIdleCountPolicy = \"static\""),
        Some(IdleCountPolicy::Static)
    );
    assert_eq!(
        policy("IdleCount = 50\nIdleCountMin = 2\nIdleCountPolicy = \"adaptive\""),
        Some(IdleCountPolicy::Adaptive)
    );
    let errors = errors(&machine_runner("IdleCountPolicy = \"smart\"", &gce(""), ""));
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(
        errors[0].starts_with(
            "config.toml:8: runners[0].machine.IdleCountPolicy: unknown IdleCountPolicy \"smart\""
        ),
        "{errors:#?}"
    );
}
