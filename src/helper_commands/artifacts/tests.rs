//! The helper commands' work (without the process around them) against the fake GitLab over
//! real HTTP: a project directory uploaded as a zip with exclusions, a junit report as gzip,
//! a dependency downloaded through object storage and extracted.

use super::*;
use serde_json::json;
use testkit::{FakeGitlab, FakeGitlabOptions};

const RUNNER: &str = "runner-token-helper-test";

async fn running_job(fake: &FakeGitlab) -> (i64, String) {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    fake.add_runner(RUNNER);
    fake.enqueue(RUNNER, json!({}));
    let body = json!({"token": RUNNER, "info": {"features": {
        "variables": true, "image": true, "artifacts": true, "upload_multiple_artifacts": true,
        "masking": true, "multi_build_steps": true, "return_exit_code": true
    }}});
    let job: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/api/v4/jobs/request", fake.url()))
        .json(&body)
        .send()
        .await
        .expect("jobs/request")
        .json()
        .await
        .expect("a job");
    (
        job["id"].as_i64().expect("id"),
        job["token"].as_str().expect("token").to_string(),
    )
}

fn write(dir: &Path, rel: &str, content: &str) {
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

fn uploader(url: &str, id: i64) -> UploaderArgs {
    UploaderArgs {
        url: url.to_string(),
        id,
        paths: Vec::new(),
        exclude: Vec::new(),
        untracked: false,
        name: "artifacts".into(),
        expire_in: None,
        artifact_format: None,
        artifact_type: None,
        tls: Default::default(),
    }
}

#[test]
fn filenames_follow_gitlab_runner() {
    let cases = [
        ("artifacts", Format::Zip, "artifacts.zip"),
        ("junit", Format::Gzip, "junit.gz"),
        ("report.json", Format::Raw, "report.json"),
        ("", Format::Zip, "default.zip"),
        (".", Format::Zip, "default.zip"),
        ("dir/name", Format::Zip, "name.zip"),
    ];
    for (name, format, want) in cases {
        assert_eq!(artifact_filename(name, format), want, "{name:?}");
    }
    assert_eq!(Format::parse(None), Ok(Format::Zip));
    assert_eq!(Format::parse(Some("gzip")), Ok(Format::Gzip));
    assert!(Format::parse(Some("tar"))
        .unwrap_err()
        .to_string()
        .contains("unsupported"));
}

#[test]
fn the_direct_download_flag_reads_go_booleans() {
    use clap::Parser as _;
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: DownloaderArgs,
    }
    let parse = |extra: &[&str]| {
        let mut argv = vec!["x", "--url", "http://gitlab", "--id", "3"];
        argv.extend_from_slice(extra);
        Cli::try_parse_from(argv).map(|c| c.args.direct_download)
    };
    assert!(parse(&["--direct-download"]).unwrap());
    assert!(!parse(&["--direct-download", "0"]).unwrap());
    assert!(parse(&["--direct-download=True"]).unwrap());
    assert!(parse(&["--direct-download", "maybe"]).is_err());
    for (value, want) in [("1", true), ("f", false), ("FALSE", false)] {
        assert_eq!(parse_go_bool(value), Ok(want), "{value}");
    }
}

#[tokio::test]
async fn upload_then_download_into_another_project() {
    let fake = FakeGitlab::start(FakeGitlabOptions::default())
        .await
        .unwrap();
    let (producer, producer_token) = running_job(&fake).await;
    let project = tempfile::tempdir().unwrap();
    write(project.path(), "dist/app.txt", "app");
    write(project.path(), "dist/debug.log", "noise");
    write(project.path(), "junit.xml", "<testsuites/>");

    let mut args = uploader(&fake.url(), producer);
    args.paths = vec!["dist/".into()];
    args.exclude = vec!["dist/*.log".into()];
    args.expire_in = Some("2 days".into());
    upload(&args, &producer_token, project.path())
        .await
        .expect("archive upload");
    let mut report = uploader(&fake.url(), producer);
    report.paths = vec!["junit.xml".into()];
    report.name = "junit".into();
    report.artifact_type = Some("junit".into());
    report.artifact_format = Some("gzip".into());
    upload(&report, &producer_token, project.path())
        .await
        .expect("report upload");

    let stored = fake.artifacts(producer);
    assert_eq!(stored.len(), 2, "{stored:?}");
    assert_eq!(stored[0].filename, "artifacts.zip");
    assert_eq!(
        stored[0].zip_entries().unwrap(),
        vec!["dist/", "dist/app.txt"]
    );
    assert_eq!(stored[0].expire_in.as_deref(), Some("2 days"));
    assert_eq!(stored[1].filename, "junit.gz");
    assert_eq!(stored[1].artifact_type, "junit");
    assert_eq!(stored[1].gunzip().unwrap(), b"<testsuites/>");

    // A second job downloads the first's archive with its own token.
    let (_consumer, consumer_token) = running_job(&fake).await;
    let other = tempfile::tempdir().unwrap();
    let args = DownloaderArgs {
        url: fake.url(),
        id: producer,
        direct_download: true,
        tls: Default::default(),
    };
    download(&args, &consumer_token, other.path())
        .await
        .expect("download");
    assert_eq!(
        std::fs::read_to_string(other.path().join("dist/app.txt")).unwrap(),
        "app"
    );
    assert!(!other.path().join("dist/debug.log").exists());
    let objects = fake
        .requests()
        .into_iter()
        .filter(|r| r.path.starts_with("/objects/"))
        .count();
    assert_eq!(objects, 1, "the direct download went to object storage");
}

#[tokio::test]
async fn nothing_selected_uploads_nothing_and_a_bad_token_fails() {
    let fake = FakeGitlab::start(FakeGitlabOptions::default())
        .await
        .unwrap();
    let (id, token) = running_job(&fake).await;
    let project = tempfile::tempdir().unwrap();
    let mut args = uploader(&fake.url(), id);
    args.paths = vec!["missing/**".into()];
    upload(&args, &token, project.path())
        .await
        .expect("no files is not an error");
    assert!(fake.artifacts(id).is_empty());

    write(project.path(), "a.txt", "a");
    args.paths = vec!["a.txt".into()];
    let err = upload(&args, "glcbt-wrong", project.path())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("403 Forbidden"), "{err}");
    assert!(!err.contains("glcbt-wrong"), "{err}");
}
