//! GitLab Runner 19.x files (issue 15): what `register` writes loads without a warning, every
//! key of 19.x's config structs loads with warnings only (keys that restrict jobs excepted), and
//! runners with an executor Flotilla does not run are skipped, not refused.

use super::*;

const REGISTER_19: &str =
    include_str!("../../tests/fixtures/config_gitlab_runner_19_register.toml");

fn token(n: usize) -> String {
    format!("glrt-{}{n}", "t".repeat(20))
}

fn load(text: &str) -> Loaded {
    match Config::from_toml_str(text, "config.toml") {
        Ok(loaded) => loaded,
        Err(e) => panic!("expected the file to load, got:\n{e}"),
    }
}

fn runner(name: &str, executor: &str, n: usize, body: &str) -> String {
    format!(
        "[[runners]]\nname = \"{name}\"\nurl = \"https://gitlab.example.com\"\n\
         token = \"{}\"\nexecutor = \"{executor}\"\n{body}\n",
        token(n)
    )
}

#[test]
fn what_register_19_writes_loads_without_a_warning() {
    let text = REGISTER_19.replace("@TOKEN@", &token(1));
    let loaded = load(&text);
    assert!(loaded.warnings.is_empty(), "{:#?}", loaded.warnings);
    let r = &loaded.config.runners[0];
    assert_eq!(r.id, 4242);
    assert_eq!(r.token_expires_at, None);
    assert_eq!(r.docker.volumes, vec!["/cache".to_string()]);
    // Zero values in the cache storage tables are still no warning; a real value is one.
    let zeros = text.replace(
        "[runners.cache.s3]",
        "[runners.cache.s3]\n      Insecure = false\n      BucketName = \"\"",
    );
    assert!(load(&zeros).warnings.is_empty());
    let set = text.replace(
        "[runners.cache.azure]",
        "[runners.cache.azure]\n      ContainerName = \"c\"",
    );
    let warnings = load(&set).warnings;
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert_eq!(warnings[0].path, "runners[0].cache.azure");
}

#[test]
fn gitlab_runner_19_keys_load_with_warnings_only() {
    let global = "concurrent = 2\nconnection_max_age = \"15m0s\"\n\
                  [experimental]\n  [experimental.usage_logger]\n    enabled = true\n\
                  [machine]\n  [machine.shutdown_drain]\n    enabled = true\n";
    let body = "proxy_exec = true\nuse_slot_cgroups = true\nslot_cgroup_template = \"s-${slot}\"\n\
                step_runner_image = \"registry.example.com/step-runner:1\"\n\
                [runners.experimental]\n  [runners.experimental.boot_verify]\n    enabled = true\n\
                [runners.monitoring]\n  [[runners.monitoring.job_queuing_durations]]\n    \
                periods = [\"* * * * *\"]\n\
                [runners.docker]\nimage = \"alpine\"\ncgroup_parent = \"ci.slice\"\n\
                pid_mode = \"host\"\nvolume_keep = true\nservice_cgroup_parent = \"svc.slice\"\n\
                service_slot_cgroup_template = \"svc-${slot}\"\nenable_ipv6 = true\n\
                log_options = { max-size = \"10m\" }\n";
    let text = format!("{global}{}", runner("r", "docker", 1, body));
    let loaded = load(&text);
    let mut paths: Vec<&str> = loaded.warnings.iter().map(|w| w.path.as_str()).collect();
    paths.sort_unstable();
    assert_eq!(
        paths,
        [
            "experimental",
            "machine",
            "runners[0].docker.cgroup_parent",
            "runners[0].docker.enable_ipv6",
            "runners[0].docker.log_options",
            "runners[0].docker.pid_mode",
            "runners[0].docker.service_cgroup_parent",
            "runners[0].docker.service_slot_cgroup_template",
            "runners[0].docker.volume_keep",
            "runners[0].experimental",
            "runners[0].monitoring",
            "runners[0].proxy_exec",
            "runners[0].slot_cgroup_template",
            "runners[0].step_runner_image",
            "runners[0].use_slot_cgroups",
        ]
    );
    assert!(loaded
        .warnings
        .iter()
        .all(|w| w.kind == WarningKind::NotSupported));
}

#[test]
fn typos_and_restricting_keys_are_still_errors() {
    let text = runner(
        "r",
        "docker",
        1,
        "[runners.docker]\nimage = \"alpine\"\npid_mod = \"host\"",
    );
    let err = Config::from_toml_str(&text, "config.toml")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("docker.pid_mod: unknown key; did you mean \"pid_mode\""),
        "{err}"
    );
    let text = runner(
        "r",
        "docker",
        1,
        "[runners.docker]\nimage = \"alpine\"\ncap_drop = [\"ALL\"]",
    );
    let err = Config::from_toml_str(&text, "config.toml")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("docker.cap_drop: not supported, and it restricts"),
        "{err}"
    );
}

#[test]
fn runners_with_an_executor_flotilla_does_not_run_are_skipped() {
    let text = format!(
        "concurrent = 2\n{}{}{}",
        runner(
            "sh",
            "shell",
            1,
            "shell = \"bash\"\nbuilds_dir = \"/builds\""
        ),
        runner("dk", "docker", 2, "[runners.docker]\nimage = \"alpine\""),
        runner(
            "k8s",
            "kubernetes",
            3,
            "[runners.kubernetes]\nnamespace = \"ci\"\n[runners.kubernetes.volumes]\n"
        ),
    );
    let loaded = load(&text);
    let names: Vec<&str> = loaded
        .config
        .runners
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(names, ["dk"]);
    let skipped: Vec<(&str, &str, &str)> = loaded
        .config
        .skipped
        .iter()
        .map(|s| (s.path.as_str(), s.name.as_str(), s.executor.as_str()))
        .collect();
    assert_eq!(
        skipped,
        [
            ("runners[0]", "sh", "shell"),
            ("runners[2]", "k8s", "kubernetes")
        ]
    );
    let shown: Vec<String> = loaded.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(shown.len(), 2, "{shown:#?}");
    assert!(
        shown[0].ends_with(
            "runners[0]: runner \"sh\" (executor \"shell\") skipped: executor not supported \
             (it is never polled; the other runners run)"
        ),
        "{}",
        shown[0]
    );
    assert!(!format!("{:?}", loaded.config.skipped).contains(&token(1)));
    // An executor GitLab Runner does not have is still an error.
    let text = runner("x", "dokcer", 1, "");
    let err = Config::from_toml_str(&text, "config.toml")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("executor \"dokcer\" is not supported"),
        "{err}"
    );
}
