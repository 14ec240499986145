//! Git over smart HTTP: only `gitlab-ci-token` with the token of a running job gets in; pushes,
//! unknown projects and other credentials get GitLab's answers; a real `git clone` works.

use reqwest::StatusCode;
use serde_json::json;
use testkit::{FakeGitlab, FakeGitlabOptions};

use crate::{client, header, Runner, RUNNER};

#[tokio::test]
async fn git_is_served_to_running_jobs_tokens_only() {
    let (fake, repos) = FakeGitlab::start_with_git(FakeGitlabOptions::default())
        .await
        .expect("fake gitlab with git");
    let runner = Runner::new(&fake);
    let repo = repos.create("group/app").expect("repo");
    let sha = repo
        .commit("main", &[("a.txt", "from the fake\n")], "first")
        .expect("commit");
    fake.enqueue(
        RUNNER,
        json!({"job_info": {"project_full_path": "group/app"}}),
    );
    let (id, token, job) = runner.take_job().await;
    let base = fake.url();
    let host = base.trim_start_matches("http://");
    assert_eq!(
        job["git_info"]["repo_url"],
        format!("http://gitlab-ci-token:{token}@{host}/group/app.git")
    );

    let http = client();
    let refs = format!("{base}/group/app.git/info/refs?service=git-upload-pack");
    let get = |user: &str, password: &str, url: &str| {
        http.get(url.to_string())
            .basic_auth(user.to_string(), Some(password.to_string()))
            .send()
    };
    // Handed out but not acknowledged yet: not running, so refused.
    let resp = get("gitlab-ci-token", &token, &refs).await.expect("GET");
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        header(&resp, "www-authenticate").as_deref(),
        Some("Basic realm=\"GitLab\"")
    );

    let ack = runner
        .put(id, json!({"token": token, "state": "running"}))
        .await;
    assert_eq!(ack.status(), StatusCode::OK);
    let resp = get("gitlab-ci-token", &token, &refs).await.expect("GET");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        header(&resp, "content-type").as_deref(),
        Some("application/x-git-upload-pack-advertisement")
    );
    let body = resp.text().await.expect("body");
    assert!(body.contains(&sha), "{body}");

    for (user, password) in [("gitlab-ci-token", "wrong"), ("root", token.as_str())] {
        let resp = get(user, password, &refs).await.expect("GET");
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{user}");
    }
    let anonymous = http.get(&refs).send().await.expect("GET");
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let push = format!("{base}/group/app.git/info/refs?service=git-receive-pack");
    let resp = get("gitlab-ci-token", &token, &push).await.expect("GET");
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let missing = format!("{base}/group/other.git/info/refs?service=git-upload-pack");
    let resp = get("gitlab-ci-token", &token, &missing).await.expect("GET");
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);

    // A real clone through the CGI, streamed both ways.
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("http://gitlab-ci-token:{token}@{host}/group/app.git");
    let out = tokio::process::Command::new("git")
        .args(["clone", "--quiet", &url])
        .arg(dir.path().join("app"))
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .await
        .expect("git clone");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let file = std::fs::read_to_string(dir.path().join("app/a.txt")).expect("cloned file");
    assert_eq!(file, "from the fake\n");
}

#[test]
fn repository_paths_are_checked() {
    let repos = testkit::GitRepos::new().expect("repos");
    for bad in ["", "../x", "a//b", "a/../b", "a b"] {
        assert!(repos.create(bad).is_err(), "{bad:?}");
    }
    let repo = repos.create("ns/sub/project").expect("nested namespace");
    assert_eq!(repo.path(), "ns/sub/project");
}
