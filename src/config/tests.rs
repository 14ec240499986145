//! Loading whole files: GitLab Runner's own output, typos, many errors at once, value syntaxes,
//! the example file, and reload diffs.

use std::sync::LazyLock;
use std::time::Duration;

use super::*;
use crate::testing::{expected_short_token, fake_runner_token};

/// The runner token of [`with_runner`] and [`REGISTER`], made once per test run.
static TOKEN: LazyLock<String> = LazyLock::new(fake_runner_token);

/// What GitLab Runner's `register` writes, with [`TOKEN`] for its `@TOKEN@`.
static REGISTER: LazyLock<String> = LazyLock::new(|| {
    include_str!("../../tests/fixtures/config_gitlab_runner_register.toml")
        .replace("@TOKEN@", &TOKEN)
});
const EXAMPLE: &str = include_str!("../../config.example.toml");

/// A minimal valid file with `extra` appended inside `[[runners]]` (before `[runners.docker]`)
/// and `docker` inside `[runners.docker]`.
fn with_runner(extra: &str, docker: &str) -> String {
    let token = &*TOKEN;
    format!(
        "concurrent = 2\n\
         [[runners]]\n\
         name = \"r\"\n\
         url = \"https://gitlab.example.com/\"\n\
         token = \"{token}\"\n\
         executor = \"docker\"\n\
         {extra}\n\
         [runners.docker]\n\
         {docker}\n"
    )
}

fn load(text: &str) -> Loaded {
    match Config::from_toml_str(text, "config.toml") {
        Ok(loaded) => loaded,
        Err(e) => panic!("expected the file to load, got:\n{e}"),
    }
}

#[test]
fn restricting_docker_keys_fail_closed_unless_at_their_default() {
    for (docker, key) in [
        ("user = \"nobody\"", "user"),
        ("allowed_users = [\"nobody\"]", "allowed_users"),
        (
            "allowed_privileged_images = [\"docker:*\"]",
            "allowed_privileged_images",
        ),
        (
            "allowed_privileged_services = [\"docker:*\"]",
            "allowed_privileged_services",
        ),
        ("cap_drop = [\"NET_RAW\"]", "cap_drop"),
        ("security_opt = [\"no-new-privileges\"]", "security_opt"),
        ("disable_cache = true", "disable_cache"),
    ] {
        let errors = errors(&with_runner("", docker));
        assert!(
            errors.iter().any(|e| e.contains(&format!(
                "runners[0].docker.{key}: not supported, and it restricts"
            ))),
            "{key}: {errors:#?}"
        );
    }
    let defaults =
        "user = \"\"\ncap_drop = []\ndisable_cache = false\ntls_verify = false\nmemory_swap = \"\"";
    let loaded = load(&with_runner("", defaults));
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    // A key that only grants more stays a warning.
    let loaded = load(&with_runner("", "cap_add = [\"NET_ADMIN\"]"));
    assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
}

#[test]
fn allowed_images_and_pull_policies_are_read_and_checked() {
    let docker = "allowed_images = [\"alpine:*\", \"registry.example.com/**\"]\n\
                  allowed_pull_policies = [\"if-not-present\"]";
    let config = load(&with_runner("", docker)).config;
    let d = &config.runners[0].docker;
    assert_eq!(
        d.allowed_images,
        vec!["alpine:*", "registry.example.com/**"]
    );
    assert_eq!(d.allowed_pull_policies, vec![PullPolicy::IfNotPresent]);
    let errors = errors(&with_runner("", "allowed_pull_policies = [\"sometimes\"]"));
    assert!(
        errors
            .iter()
            .any(|e| e.contains("unsupported allowed_pull_policies config: \"sometimes\"")),
        "{errors:#?}"
    );
}

#[test]
fn a_docker_host_is_reached_only_without_network_exposure() {
    for (docker, wanted) in [
        (
            "host = \"tcp://10.0.0.5:2375\"",
            "docker.host: \"tcp://10.0.0.5:2375\": a Docker host over plain TCP is refused",
        ),
        (
            "tls_verify = true",
            "docker.tls_verify: tls_verify = true is not supported",
        ),
        (
            "tls_cert_path = \"/certs\"",
            "docker.tls_cert_path: not supported",
        ),
    ] {
        let errors = errors(&with_runner("", docker));
        assert!(
            errors.iter().any(|e| e.contains(wanted)),
            "{docker}: {errors:#?}"
        );
    }
    let loaded = load(&with_runner(
        "",
        "host = \"unix:///var/run/docker.sock\"\ntls_verify = false",
    ));
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
}

#[test]
fn huge_durations_are_clamped_not_overflowing() {
    let text = format!(
        "shutdown_timeout = {max}\nreconcile_interval = {max}\n{}",
        with_runner("", "wait_for_services_timeout = 9223372036854775807"),
        max = i64::MAX
    );
    let config = load(&text).config;
    assert_eq!(config.shutdown_timeout, crate::time::FAR_FUTURE);
    assert_eq!(config.reconcile_interval, crate::time::FAR_FUTURE);
    let at = crate::time::deadline_after(config.shutdown_timeout);
    let _ = at + config.reconcile_interval; // representable
}

fn errors(text: &str) -> Vec<String> {
    match Config::from_toml_str(text, "config.toml") {
        Ok(_) => panic!("expected errors"),
        Err(e) => e.to_string().lines().map(str::to_string).collect(),
    }
}

#[test]
fn gitlab_runner_register_output_loads_without_warnings() {
    let loaded = load(&REGISTER);
    let c = &loaded.config;
    assert_eq!(c.concurrent, 1);
    assert_eq!(
        c.check_interval,
        Duration::from_secs(3),
        "0 means the default"
    );
    assert_eq!(
        c.shutdown_timeout,
        Duration::from_secs(30),
        "0 means the default"
    );
    assert_eq!(c.runners.len(), 1);
    let r = &c.runners[0];
    assert_eq!(r.name, "docker-runner-1");
    assert_eq!(r.executor, ExecutorKind::Docker);
    assert_eq!(r.docker.image, "alpine:latest");
    assert_eq!(r.docker.volumes, vec!["/cache".to_string()]);
    assert_eq!(r.docker.pull_policy, vec![PullPolicy::Always]);
    assert_eq!(r.output_limit_kib, 4096);
    assert_eq!(r.request_concurrency, 1);
    assert_eq!(r.unhealthy_requests_limit, 3);
    assert_eq!(r.unhealthy_interval, Duration::from_secs(3600));
    assert!(r.id > 0, "GitLab Runner's id is read");
    assert!(r.token_obtained_at.is_some(), "a TOML datetime is read");
    assert_eq!(r.token_expires_at, None, "Go's zero time means never");

    let warnings: Vec<String> = loaded.warnings.iter().map(|w| w.to_string()).collect();
    assert!(
        warnings.is_empty(),
        "connection_max_age = \"15m0s\" and session_timeout = 1800 are what register writes: \
         no warning: {warnings:#?}"
    );
    assert!(
        !warnings.iter().any(|w| w.contains("runners[0].docker.")),
        "keys at GitLab Runner's default (tls_verify = false, disable_cache = false, \
         network_mtu = 0, …) earn no warning: {warnings:#?}"
    );
    assert!(
        !warnings.iter().any(|w| w.contains("runners[0].cache")),
        "MaxUploadedArchiveSize = 0 and empty s3/gcs/azure tables earn no warning: {warnings:#?}"
    );
    assert_eq!(r.cache, crate::config::CacheConfig::default());
    assert!(
        !warnings.iter().any(|w| w.contains("custom_build_dir")),
        "an empty table earns no warning: {warnings:#?}"
    );
    assert!(
        !warnings
            .iter()
            .any(|w| w.contains(&expected_short_token(&TOKEN))),
        "no token in warnings"
    );
}

#[test]
fn typo_is_an_error_with_line_and_suggestion() {
    let text = with_runner("", "imagee = \"alpine\"");
    assert_eq!(
        errors(&text),
        vec!["config.toml:9: runners[0].docker.imagee: unknown key; did you mean \"image\"?"]
    );
}

#[test]
fn unknown_key_without_neighbour_has_no_suggestion() {
    let text = format!("frobnicate = 1\n{}", with_runner("", ""));
    assert_eq!(
        errors(&text),
        vec!["config.toml:1: frobnicate: unknown key"]
    );
}

#[test]
fn every_error_is_reported() {
    let text = "concurrent = 0\n\
                log_level = \"loud\"\n\
                [[runners]]\n\
                url = \"ftp://gitlab.example.com\"\n\
                token = \"\"\n\
                executor = \"shel\"\n\
                limit = \"many\"\n\
                [runners.docker]\n\
                memory = \"lots\"\n\
                privilegd = true\n\
                pull_policy = [\"sometimes\"]\n";
    let errors = errors(text);
    let expected = [
        "config.toml:1: concurrent: must be at least 1",
        "config.toml:2: log_level: unknown log level \"loud\"",
        "config.toml:4: runners[0].url: invalid URL \"ftp://gitlab.example.com\"",
        "config.toml:5: runners[0].token: must not be empty",
        "config.toml:6: runners[0].executor: executor \"shel\" is not supported",
        "config.toml:7: runners[0].limit: expected an integer, found string",
        "config.toml:9: runners[0].docker.memory: invalid memory size \"lots\"",
        "config.toml:10: runners[0].docker.privilegd: unknown key; did you mean \"privileged\"?",
        "config.toml:11: runners[0].docker.pull_policy: unknown pull policy \"sometimes\"",
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
fn pull_policy_is_a_string_or_an_array() {
    let one = load(&with_runner("", "pull_policy = \"if-not-present\""));
    assert_eq!(
        one.config.runners[0].docker.pull_policy,
        vec![PullPolicy::IfNotPresent]
    );
    let many = load(&with_runner("", "pull_policy = [\"never\", \"always\"]"));
    assert_eq!(
        many.config.runners[0].docker.pull_policy,
        vec![PullPolicy::Never, PullPolicy::Always]
    );
    let wrong = errors(&with_runner("", "pull_policy = 3"));
    assert_eq!(
        wrong,
        vec!["config.toml:9: runners[0].docker.pull_policy: expected a string or an array of strings, found integer"]
    );
}

#[test]
fn memory_and_cpus_are_parsed() {
    let loaded = load(&with_runner("", "memory = \"512m\"\ncpus = \"1.5\""));
    let docker = &loaded.config.runners[0].docker;
    assert_eq!(docker.memory_bytes, Some(512 * 1024 * 1024));
    assert_eq!(docker.nano_cpus, Some(1_500_000_000));
    let bad = errors(&with_runner("", "cpus = \"fast\""));
    assert!(bad[0].starts_with("config.toml:9: runners[0].docker.cpus: invalid cpus \"fast\""));
}

#[test]
fn zero_runners_is_valid_with_a_warning() {
    let loaded = load("concurrent = 1\n");
    assert!(loaded.config.runners.is_empty());
    let warnings: Vec<String> = loaded.warnings.iter().map(|w| w.to_string()).collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("runners: no [[runners]] entry"),
        "{warnings:?}"
    );
}

#[test]
fn token_times_are_read_from_datetimes_and_strings() {
    let text = with_runner(
        "id = 42\ntoken_obtained_at = 2026-01-01T00:00:00Z\n\
         token_expires_at = \"2026-01-05T00:00:00Z\"\n",
        "",
    );
    let r = &load(&text).config.runners[0];
    assert_eq!(r.id, 42);
    assert_eq!(
        r.token_obtained_at.map(|t| t.to_rfc3339()).as_deref(),
        Some("2026-01-01T00:00:00+00:00")
    );
    assert_eq!(
        r.token_expires_at.map(|t| t.to_rfc3339()).as_deref(),
        Some("2026-01-05T00:00:00+00:00")
    );
    for never in ["\"\"", "0001-01-01T00:00:00Z", "\"0001-01-01T00:00:00Z\""] {
        let text = with_runner(&format!("token_expires_at = {never}\n"), "");
        assert_eq!(
            load(&text).config.runners[0].token_expires_at,
            None,
            "{never}"
        );
    }
    let bad = errors(&with_runner("token_expires_at = \"soon\"\n", ""));
    assert!(
        bad.iter()
            .any(|e| e.contains("token_expires_at: invalid datetime")),
        "{bad:?}"
    );
}

#[test]
fn bad_url_is_an_error() {
    let text = with_runner("", "").replace("https://gitlab.example.com/", "gitlab.example.com");
    let errors = errors(&text);
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].starts_with("config.toml:4: runners[0].url: invalid URL"),
        "{errors:?}"
    );
}

#[test]
fn machine_keys_are_checked_then_ignored() {
    let ok = load(&with_runner("[runners.machine]\nIdleCount = 2\n[[runners.machine.autoscaling]]\nPeriods = [\"* * * * * * *\"]", ""));
    let warnings: Vec<String> = ok.warnings.iter().map(|w| w.to_string()).collect();
    assert_eq!(
        warnings,
        vec!["config.toml:7: runners[0].machine: ignored: not supported"]
    );
    let typo = errors(&with_runner("[runners.machine]\nIdleCont = 2", ""));
    assert_eq!(
        typo,
        vec![
            "config.toml:8: runners[0].machine.IdleCont: unknown key; did you mean \"IdleCount\"?"
        ]
    );
}

#[test]
fn global_values_and_defaults() {
    let text = format!(
        "log_level = \"fatal\"\nlog_format = \"runner\"\nlisten_address = \"0.0.0.0\"\n\
         manager_id = \"mgr-1\"\nreconcile_interval = 30\n{}",
        with_runner(
            "unhealthy_interval = \"1h30m\"\nrequest_concurrency = 0",
            ""
        )
    );
    let c = load(&text).config;
    assert_eq!(c.log_level, "error");
    assert_eq!(c.log_format, LogFormat::Text);
    assert_eq!(c.listen_address.as_deref(), Some("0.0.0.0:9252"));
    assert_eq!(c.manager_id.as_deref(), Some("mgr-1"));
    assert_eq!(c.reconcile_interval, Duration::from_secs(30));
    assert_eq!(c.state_dir, std::path::PathBuf::from(DEFAULT_STATE_DIR));
    assert_eq!(c.runners[0].unhealthy_interval, Duration::from_secs(5400));
    assert_eq!(c.runners[0].request_concurrency, 1);
}

#[test]
fn gitlab_helper_image_is_ignored_with_a_warning() {
    let loaded = load(&with_runner(
        "",
        "helper_image = \"registry.gitlab.com/gitlab-org/gitlab-runner/gitlab-runner-helper:x86_64-latest\"",
    ));
    assert_eq!(loaded.config.runners[0].docker.helper_image, None);
    assert_eq!(loaded.warnings.len(), 1);
    assert!(loaded.warnings[0]
        .to_string()
        .starts_with("config.toml:9: runners[0].docker.helper_image: ignored"));
}

#[test]
fn syntax_error_has_a_line() {
    let errors = errors("concurrent = 1\n[[runners]\n");
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].starts_with("config.toml:2: invalid TOML"),
        "{errors:?}"
    );
}

#[test]
fn example_file_loads_cleanly() {
    let loaded = load(EXAMPLE);
    assert!(loaded.warnings.is_empty(), "{:#?}", loaded.warnings);
}

#[test]
fn diff_names_changes_without_tokens() {
    let old = load(&with_runner("", "image = \"alpine\"")).config;
    let renamed =
        with_runner("limit = 3", "image = \"debian\"").replace("name = \"r\"", "name = \"s\"");
    let new = load(&format!("listen_address = \":9000\"\n{renamed}")).config;
    let lines = diff(&old, &new);
    let all = lines.join("\n");
    let short = expected_short_token(&TOKEN);
    assert!(
        all.contains(&format!(
            "runner \"s\" (https://gitlab.example.com, token {short}): name: \"r\" → \"s\""
        )),
        "{all}"
    );
    assert!(all.contains("limit: 0 → 3"), "{all}");
    assert!(
        all.contains("docker.image: \"alpine\" → \"debian\""),
        "{all}"
    );
    assert!(
        all.contains("listen_address: None → Some(\":9000\")"),
        "{all}"
    );
    assert!(
        !all.contains("added") && !all.contains("removed"),
        "a rename is not a new runner: {all}"
    );
    assert!(!all.contains("glrt-"), "no full token: {all}");
    assert_eq!(restart_required(&old, &new), vec!["listen_address"]);

    let other = fake_runner_token();
    let other_token = with_runner("", "").replace(TOKEN.as_str(), &other);
    let swapped = diff(&old, &load(&other_token).config).join("\n");
    assert!(
        swapped.contains(&format!("token {short}): removed")),
        "{swapped}"
    );
    let other_short = expected_short_token(&other);
    assert!(
        swapped.contains(&format!("token {other_short}): added")),
        "{swapped}"
    );
    assert!(!swapped.contains(&other), "{swapped}");
    assert!(diff(&old, &old).is_empty());
}

#[test]
fn check_file_reads_from_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.toml");
    std::fs::write(&path, &*REGISTER).expect("write");
    let warnings = check_file(&path).expect("valid file");
    assert!(warnings.is_empty(), "{warnings:#?}");
    let missing = check_file(&dir.path().join("nope.toml")).expect_err("missing file");
    assert_eq!(missing.kind(), "read");
}

#[test]
fn wait_for_services_timeout_defaults_disables_and_sets() {
    let docker = |text: &str| {
        load(&with_runner("", text)).config.runners[0]
            .docker
            .clone()
    };
    let default = Some(Duration::from_secs(30));
    assert_eq!(docker("").wait_for_services_timeout, default);
    assert_eq!(
        docker("wait_for_services_timeout = 0").wait_for_services_timeout,
        default
    );
    assert_eq!(
        docker("wait_for_services_timeout = -1").wait_for_services_timeout,
        None
    );
    let set = docker("wait_for_services_timeout = 5\nservices_privileged = true");
    assert_eq!(set.wait_for_services_timeout, Some(Duration::from_secs(5)));
    assert_eq!(set.services_privileged, Some(true));
    assert!(load(&with_runner("", "wait_for_services_timeout = 5"))
        .warnings
        .is_empty());
    assert!(
        errors(&with_runner("", "wait_for_services_timeout = \"5s\""))[0]
            .contains("wait_for_services_timeout")
    );
}

#[test]
fn allowed_services_and_services_limit_load() {
    let docker = |text: &str| {
        load(&with_runner("", text)).config.runners[0]
            .docker
            .clone()
    };
    let d = docker("allowed_services = [\"postgres:*\", \"reg.io/**\"]\nservices_limit = 2");
    assert_eq!(d.allowed_services, vec!["postgres:*", "reg.io/**"]);
    assert_eq!(d.services_limit, Some(2));
    assert_eq!(docker("services_limit = -1").services_limit, None);
    assert_eq!(docker("").services_limit, None);
    let bad = errors(&with_runner("", "allowed_services = [\"[oops\"]"));
    assert!(
        bad[0].contains("allowed_services") && bad[0].contains("[oops"),
        "{bad:?}"
    );
}
