//! Each command through the real binary against the fake GitLab.

use super::{config_checks, flotilla, no_token, Output, Setup};
use crate::harness::{runner_token, token_with_prefix};

fn c(setup: &Setup) -> String {
    setup.path.display().to_string()
}

/// `flotilla COMMAND -c FILE ARGS…` on the setup's file.
async fn on_file(setup: &Setup, command: &str, args: &[&str]) -> Output {
    let path = c(setup);
    let mut argv = vec![command, "-c", &path];
    argv.extend_from_slice(args);
    flotilla(&argv, &[]).await
}

/// `flotilla register -n -c FILE --url URL --executor docker --docker-image alpine ARGS…` with
/// `env`: the flags every docker registration here shares.
async fn register_docker(setup: &Setup, args: &[&str], env: &[(&str, &str)]) -> Output {
    let (path, url) = (c(setup), setup.gitlab.url());
    let mut argv = vec![
        "register",
        "-n",
        "-c",
        &path,
        "--url",
        &url,
        "--executor",
        "docker",
        "--docker-image",
        "alpine",
    ];
    argv.extend_from_slice(args);
    flotilla(&argv, env).await
}

/// The requests the fake got on `path` (method, JSON body).
fn calls(setup: &Setup, method: &str, path: &str) -> Vec<serde_json::Value> {
    setup
        .gitlab
        .requests()
        .into_iter()
        .filter(|r| r.method == method && r.path == path)
        .map(|r| {
            assert_eq!(
                r.header("content-type"),
                Some("application/json"),
                "{method} {path}"
            );
            assert!(r.query.is_none(), "nothing in the URL: {:?}", r.query);
            r.json().expect("a JSON body")
        })
        .collect()
}

#[tokio::test]
async fn register_with_an_authentication_token_verifies_and_appends_keeping_every_byte() {
    let setup = Setup::start().await;
    let token = setup.new_runner();
    let token = token.as_str();
    let out = flotilla(
        &[
            "register",
            "--non-interactive",
            "-c",
            &c(&setup),
            "--url",
            &format!("{}/", setup.gitlab.url()),
            "--name",
            "third",
            "--description",
            "third",
            "--executor",
            "docker",
            "--docker-image",
            "alpine:3.20",
            "--docker-privileged=false",
            "--limit",
            "2",
            "--request-concurrency=2",
        ],
        &[("CI_SERVER_TOKEN", token)],
    )
    .await;
    assert!(out.ok, "{}", out.all);
    no_token(&out.all, &[token]);
    let text = setup.text();
    assert!(
        text.starts_with(&setup.original),
        "the existing file is kept:\n{text}"
    );
    let added = &text[setup.original.len()..];
    let id = setup.gitlab.runner_id(token).unwrap();
    for line in [
        "name = \"third\"".to_string(),
        format!("url = \"{}\"", setup.gitlab.url()),
        format!("id = {id}"),
        format!("token = \"{token}\""),
        "token_expires_at = 0001-01-01T00:00:00Z".to_string(),
        "executor = \"docker\"".to_string(),
        "limit = 2".to_string(),
        "request_concurrency = 2".to_string(),
        "image = \"alpine:3.20\"".to_string(),
        "privileged = false".to_string(),
        "volumes = [\"/cache\"]".to_string(),
    ] {
        assert!(added.contains(&line), "missing {line:?} in\n{added}");
    }
    assert!(added.contains("token_obtained_at = 20"), "{added}");
    let verify = calls(&setup, "POST", "/api/v4/runners/verify");
    assert_eq!(verify.len(), 1);
    assert_eq!(verify[0]["token"], token);
    let system_id = verify[0]["system_id"].as_str().unwrap().to_string();
    assert!(
        system_id.starts_with("s_") && system_id.len() == 14,
        "{system_id}"
    );
    let persisted = std::fs::read_to_string(setup.dir.path().join("state/manager-id")).unwrap();
    assert_eq!(
        persisted.trim(),
        system_id,
        "the manager's own id is the system id"
    );
    assert!(
        calls(&setup, "POST", "/api/v4/runners").is_empty(),
        "never POST /runners with glrt-"
    );
    config_checks(&setup.path).await;
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&setup.path).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
}

#[tokio::test]
async fn a_server_side_flag_with_an_authentication_token_is_refused_before_any_request() {
    let setup = Setup::start().await;
    let unknown = runner_token();
    for flag in [
        "--locked=false",
        "--tag-list=a,b",
        "--paused",
        "--maximum-timeout=60",
    ] {
        let out = register_docker(&setup, &["--token", &unknown, flag], &[]).await;
        assert!(!out.ok, "{flag} accepted");
        let name = flag.split('=').next().unwrap();
        assert!(
            out.all.contains(name),
            "the message names {name}: {}",
            out.all
        );
        no_token(&out.all, &[&unknown]);
    }
    assert!(setup.gitlab.requests().is_empty(), "no request was sent");
    assert_eq!(setup.text(), setup.original);
    // Their defaults pass, as in GitLab Runner (it compares values).
    let token = setup.new_runner();
    let token = token.as_str();
    let out = register_docker(
        &setup,
        &[
            "--name",
            "d",
            "--locked",
            "--paused=false",
            "--run-untagged=false",
        ],
        &[("CI_SERVER_TOKEN", token), ("RUNNER_TAG_LIST", "")],
    )
    .await;
    assert!(out.ok, "{}", out.all);
}

#[tokio::test]
async fn a_registration_token_that_is_an_authentication_token_verifies_and_warns() {
    let setup = Setup::start().await;
    let token = setup.new_runner();
    let token = token.as_str();
    let out = register_docker(
        &setup,
        &["--tag-list", "x", "--name", "r"],
        &[("REGISTRATION_TOKEN", token)],
    )
    .await;
    assert!(out.ok, "{}", out.all);
    assert!(
        out.all.contains("--tag-list") && out.all.contains("ignored"),
        "{}",
        out.all
    );
    assert_eq!(calls(&setup, "POST", "/api/v4/runners/verify").len(), 1);
    assert!(calls(&setup, "POST", "/api/v4/runners").is_empty());
    assert!(setup.text().contains(token));
}

#[tokio::test]
async fn a_403_from_verify_leaves_the_file_as_it_was() {
    let setup = Setup::start().await;
    let unknown = runner_token();
    let out = register_docker(&setup, &["--name", "r"], &[("CI_SERVER_TOKEN", &unknown)]).await;
    assert!(!out.ok);
    assert!(out.all.contains("403"), "{}", out.all);
    no_token(&out.all, &[&unknown]);
    assert_eq!(setup.text(), setup.original);
}

#[tokio::test]
async fn a_legacy_registration_creates_the_runner_and_403_and_410_leave_the_file() {
    let setup = Setup::start().await;
    let args = |name: &'static str| {
        vec![
            "register",
            "-n",
            "--executor",
            "docker+machine",
            "--docker-image",
            "alpine",
            "--name",
            name,
            "--tag-list",
            "gce, linux",
            "--locked=false",
            "--access-level",
            "ref_protected",
            "--maximum-timeout",
            "600",
            "--maintenance-note",
            "on call: ci",
            "--machine-idle-nodes",
            "1",
            "--machine-idle-time",
            "600",
            "--machine-max-builds",
            "10",
            "--machine-machine-driver",
            "google",
            "--machine-machine-name",
            "ci-%s",
            "--machine-machine-options",
            "google-project=p1",
            "--machine-machine-options",
            "google-zone=europe-west1-b",
        ]
    };
    // 403: unknown registration token.
    let url = setup.gitlab.url();
    let path = c(&setup);
    let with = |mut v: Vec<&'static str>| {
        let mut owned: Vec<String> = v.drain(..).map(str::to_string).collect();
        owned.extend([
            "-c".to_string(),
            path.clone(),
            "--url".to_string(),
            url.clone(),
        ]);
        owned
    };
    let run = |v: Vec<String>, token: String| async move {
        let refs: Vec<&str> = v.iter().map(String::as_str).collect();
        flotilla(&refs, &[("REGISTRATION_TOKEN", &token)]).await
    };
    // Registration tokens (GitLab's `GR1348941` prefix), made at run time.
    let unknown = token_with_prefix("GR1348941");
    let known = token_with_prefix("GR1348941");
    let out = run(with(args("legacy")), unknown.clone()).await;
    assert!(!out.ok);
    assert!(
        out.all.contains("403") && out.all.contains("invalid token supplied"),
        "{}",
        out.all
    );
    no_token(&out.all, &[&unknown]);
    assert_eq!(setup.text(), setup.original);

    setup.gitlab.add_registration_token(&known);
    let out = run(with(args("legacy")), known.clone()).await;
    assert!(out.ok, "{}", out.all);
    no_token(&out.all, &[&known]);
    let created = calls(&setup, "POST", "/api/v4/runners");
    let body = created.last().unwrap();
    assert_eq!(body["description"], "legacy");
    assert_eq!(body["tag_list"], "gce,linux");
    assert_eq!(body["run_untagged"], false);
    assert_eq!(body["locked"], false);
    assert_eq!(body["access_level"], "ref_protected");
    assert_eq!(body["maximum_timeout"], 600);
    assert_eq!(body["paused"], false);
    assert_eq!(body["maintenance_note"], "on call: ci");
    assert_eq!(body["info"]["name"], "flotilla");
    assert_eq!(body["info"]["executor"], "docker+machine");
    let text = setup.text();
    assert!(text.starts_with(&setup.original));
    for line in [
        "IdleCount = 1",
        "IdleTime = 600",
        "MaxBuilds = 10",
        "MachineDriver = \"google\"",
        "MachineName = \"ci-%s\"",
        "MachineOptions = [\"google-project=p1\", \"google-zone=europe-west1-b\"]",
        "token = \"glrtr-",
    ] {
        assert!(text.contains(line), "missing {line:?}:\n{text}");
    }
    assert!(
        !text.contains("[runners.gce]"),
        "written as GitLab Runner writes it"
    );
    config_checks(&setup.path).await;

    // 410: registration tokens disabled on the instance.
    let before = setup.text();
    setup.gitlab.disallow_registration();
    let out = run(with(args("again")), known.clone()).await;
    assert!(!out.ok);
    assert!(out.all.contains("410"), "{}", out.all);
    assert_eq!(setup.text(), before);
}

#[tokio::test]
async fn verify_fails_on_a_gone_runner_and_delete_removes_only_it() {
    let setup = Setup::start().await;
    let out = on_file(&setup, "verify", &[]).await;
    assert!(out.ok, "{}", out.all);
    // An admin deletes the second runner in GitLab.
    setup.gitlab.delete_runner(&setup.second);
    let before = setup.text();
    let out = on_file(&setup, "verify", &[]).await;
    assert!(!out.ok);
    assert!(out.all.contains("Failed to verify runners"), "{}", out.all);
    no_token(&out.all, &[&setup.second, &setup.first]);
    assert_eq!(
        setup.text(),
        before,
        "without --delete the file is not touched"
    );
    let out = on_file(&setup, "verify", &["--delete"]).await;
    assert!(out.ok, "{}", out.all);
    let start = setup.original.find("\n# The second runner.").unwrap();
    assert_eq!(
        setup.text(),
        setup.original[..start],
        "only the gone runner's entry is removed"
    );
    let verifies = calls(&setup, "POST", "/api/v4/runners/verify");
    assert!(verifies
        .iter()
        .all(|b| b["system_id"].as_str().is_some_and(|s| s.starts_with("s_"))));
}

#[tokio::test]
async fn unregister_deletes_a_manager_for_glrt_and_the_runner_otherwise() {
    let setup = Setup::start().await;
    // GitLab knows this host's manager of the first runner once it verified.
    let out = on_file(&setup, "verify", &["-n", "first"]).await;
    assert!(out.ok, "{}", out.all);
    let first_id = setup.gitlab.runner_id(&setup.first).unwrap();
    assert_eq!(setup.gitlab.runner_managers(first_id).len(), 1);
    let out = on_file(&setup, "unregister", &["--name", "first"]).await;
    assert!(out.ok, "{}", out.all);
    no_token(&out.all, &[&setup.first]);
    let managers = calls(&setup, "DELETE", "/api/v4/runners/managers");
    assert_eq!(managers.len(), 1);
    assert!(managers[0]["system_id"].as_str().unwrap().starts_with("s_"));
    assert!(setup.gitlab.runner_managers(first_id).is_empty());
    assert!(
        setup.gitlab.runner_exists(first_id),
        "a runner created in GitLab stays there"
    );
    let first = setup.original.find("\n# The first runner.").unwrap();
    let second = setup.original.find("\n# The second runner.").unwrap();
    let expected = format!("{}{}", &setup.original[..first], &setup.original[second..]);
    assert_eq!(setup.text(), expected);

    let second_id = setup.gitlab.runner_id(&setup.second).unwrap();
    let out = on_file(&setup, "unregister", &["--all-runners"]).await;
    assert!(out.ok, "{}", out.all);
    assert_eq!(calls(&setup, "DELETE", "/api/v4/runners").len(), 1);
    assert!(!setup.gitlab.runner_exists(second_id));
    let text = setup.text();
    assert!(!text.contains("[[runners]]"), "{text}");
    assert!(text.starts_with(
        "# Fleet config: managed by hand.\nconcurrent = 4   # two runners, two jobs each\n"
    ));
    config_checks(&setup.path).await;

    // A name that is not in the file: an error, nothing sent.
    let before = setup.gitlab.requests().len();
    let out = on_file(&setup, "unregister", &["--name", "nobody"]).await;
    assert!(!out.ok);
    assert_eq!(setup.gitlab.requests().len(), before);
}

#[tokio::test]
async fn reset_token_writes_the_new_token_and_the_old_one_is_refused() {
    let setup = Setup::start().await;
    setup
        .gitlab
        .set_token_ttl(std::time::Duration::from_secs(3600 * 24));
    let out = on_file(&setup, "reset-token", &["--name", "second"]).await;
    assert!(out.ok, "{}", out.all);
    let new = setup.gitlab.current_runner_token(&setup.second);
    assert_ne!(new, setup.second);
    no_token(&out.all, &[&setup.second, &new]);
    let text = setup.text();
    assert!(text.contains(&format!("token = \"{new}\"")), "{text}");
    let first = setup.original.find("\n# The second runner.").unwrap();
    assert_eq!(
        &text[..first],
        &setup.original[..first],
        "the first runner's bytes are kept"
    );
    assert!(
        text.contains("token_obtained_at = 20") && text.contains("token_expires_at = 20"),
        "{text}"
    );
    assert!(
        setup.gitlab.runner_id(&setup.second).is_none(),
        "the old token is refused"
    );
    // verify now passes with the new token.
    let out = on_file(&setup, "verify", &[]).await;
    assert!(out.ok, "{}", out.all);
    config_checks(&setup.path).await;
}

#[tokio::test]
async fn list_shows_each_runner_with_its_short_token_only() {
    let setup = Setup::start().await;
    let out = on_file(&setup, "list", &[]).await;
    assert!(out.ok, "{}", out.all);
    no_token(&out.all, &[&setup.first, &setup.second]);
    let url = setup.gitlab.url();
    // Short tokens: the 9 characters after the `glrt-t1_` / `glrtr-` prefix.
    let first = &setup.first["glrt-t1_".len()..][..9];
    let second = &setup.second["glrtr-".len()..][..9];
    assert!(
        out.all
            .contains(&format!("first\tExecutor=docker Token={first} URL={url}")),
        "{}",
        out.all
    );
    assert!(
        out.all
            .contains(&format!("second\tExecutor=docker Token={second} URL={url}")),
        "{}",
        out.all
    );
}
