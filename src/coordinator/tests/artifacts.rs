//! The artifacts client against the test kit's fake GitLab over real HTTP: upload with its
//! query parameters and multipart part, 413, a 307 followed with the body sent again, 5xx
//! retried, wrong tokens refused; download proxied and through the object-storage redirect
//! without the job token leaving for the other host.

use std::io::Write as _;
use std::time::Duration;

use serde_json::json;
use testkit::{FakeGitlab, FakeGitlabOptions, Fault, StoredArtifact};

use crate::coordinator::{ArtifactUpload, ArtifactsClient, ArtifactsError, JobCredentials};

const RUNNER: &str = "runner-token-artifacts-test";

async fn fake(opts: FakeGitlabOptions) -> FakeGitlab {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let fake = FakeGitlab::start(opts).await.expect("start fake gitlab");
    fake.add_runner(RUNNER);
    fake
}

/// Enqueues a job and takes it as a runner without two-phase commit, so it runs at once.
async fn running_job(fake: &FakeGitlab) -> JobCredentials {
    fake.enqueue(RUNNER, json!({}));
    let body = json!({"token": RUNNER, "info": {"features": {
        "variables": true, "image": true, "artifacts": true, "upload_multiple_artifacts": true,
        "masking": true, "multi_build_steps": true, "return_exit_code": true
    }}});
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v4/jobs/request", fake.url()))
        .json(&body)
        .send()
        .await
        .expect("jobs/request");
    assert_eq!(resp.status().as_u16(), 201);
    let job: serde_json::Value = resp.json().await.expect("job json");
    JobCredentials {
        id: job["id"].as_i64().expect("id"),
        token: job["token"].as_str().expect("token").to_owned(),
    }
}

fn client(fake: &FakeGitlab) -> ArtifactsClient {
    ArtifactsClient::new(&fake.url())
        .expect("client")
        .with_max_wait(Duration::from_millis(20))
}

/// A small zip with one file, written to a temp file.
fn zip_file(name: &str, content: &[u8]) -> tempfile::NamedTempFile {
    let mut out = tempfile::NamedTempFile::new().expect("temp file");
    {
        let mut zip = zip::ZipWriter::new(out.as_file_mut());
        zip.start_file(name, zip::write::SimpleFileOptions::default())
            .expect("start file");
        zip.write_all(content).expect("write");
        zip.finish().expect("finish zip");
    }
    out
}

fn archive_upload(file: &tempfile::NamedTempFile) -> ArtifactUpload {
    ArtifactUpload {
        file: file.path().to_path_buf(),
        filename: "artifacts.zip".into(),
        artifact_type: Some("archive".into()),
        artifact_format: Some("zip".into()),
        expire_in: Some("1 week".into()),
    }
}

#[tokio::test]
async fn upload_streams_the_file_with_type_format_and_expiry() {
    let fake = fake(FakeGitlabOptions::default()).await;
    let job = running_job(&fake).await;
    let file = zip_file("out/result.txt", b"built");
    client(&fake)
        .upload(&job, &archive_upload(&file))
        .await
        .expect("upload");
    let stored = fake.artifacts(job.id);
    assert_eq!(stored.len(), 1, "{stored:?}");
    let a = &stored[0];
    assert_eq!(a.artifact_type, "archive");
    assert_eq!(a.artifact_format, "zip");
    assert_eq!(a.expire_in.as_deref(), Some("1 week"));
    assert_eq!(a.filename, "artifacts.zip");
    assert_eq!(a.bytes, std::fs::read(file.path()).unwrap());
    assert_eq!(a.zip_file("out/result.txt").unwrap(), b"built");
    let post = fake
        .requests()
        .into_iter()
        .find(|r| r.method == "POST" && r.path.ends_with("/artifacts"))
        .expect("the upload was recorded");
    assert_eq!(post.header("job-token"), Some(job.token.as_str()));
    assert_eq!(
        post.header("transfer-encoding"),
        Some("chunked"),
        "streamed"
    );
    let query = post.query.unwrap_or_default();
    for want in [
        "artifact_type=archive",
        "artifact_format=zip",
        "expire_in=1+week",
    ] {
        assert!(query.contains(want), "{query}");
    }
}

#[tokio::test]
async fn upload_of_a_junit_report_goes_as_its_own_type() {
    let fake = fake(FakeGitlabOptions::default()).await;
    let job = running_job(&fake).await;
    let mut file = tempfile::NamedTempFile::new().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(b"<testsuites/>").unwrap();
    file.write_all(&gz.finish().unwrap()).unwrap();
    let upload = ArtifactUpload {
        file: file.path().to_path_buf(),
        filename: "junit.gz".into(),
        artifact_type: Some("junit".into()),
        artifact_format: Some("gzip".into()),
        expire_in: None,
    };
    client(&fake).upload(&job, &upload).await.expect("upload");
    let stored = fake.artifacts(job.id);
    assert_eq!(stored[0].artifact_type, "junit");
    assert_eq!(stored[0].gunzip().unwrap(), b"<testsuites/>");
    assert_eq!(stored[0].expire_in, None);
}

#[tokio::test]
async fn too_large_is_a_clear_error_and_not_retried() {
    let fake = fake(FakeGitlabOptions {
        max_artifacts_bytes: 64,
        ..FakeGitlabOptions::default()
    })
    .await;
    let job = running_job(&fake).await;
    let file = zip_file("big.bin", &[7u8; 4096]);
    let err = client(&fake)
        .upload(&job, &archive_upload(&file))
        .await
        .unwrap_err();
    assert!(matches!(err, ArtifactsError::TooLarge { .. }), "{err:?}");
    assert!(err.to_string().contains("too large"), "{err}");
    let posts = fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/artifacts"))
        .count();
    assert_eq!(posts, 1);
    assert!(fake.artifacts(job.id).is_empty());
}

#[tokio::test]
async fn a_307_is_followed_with_the_whole_body_sent_again_and_5xx_retried() {
    let fake = fake(FakeGitlabOptions::default()).await;
    let job = running_job(&fake).await;
    fake.inject(Fault::UploadArtifactsRedirect { times: 1 });
    fake.inject(Fault::UploadArtifactsStatus {
        status: 502,
        times: 1,
    });
    let file = zip_file("a.txt", b"again");
    client(&fake)
        .upload(&job, &archive_upload(&file))
        .await
        .expect("upload after a redirect and a 502");
    let statuses: Vec<u16> = fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/artifacts"))
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, vec![307, 502, 201]);
    assert_eq!(
        fake.artifacts(job.id)[0].zip_file("a.txt").unwrap(),
        b"again"
    );
}

#[tokio::test]
async fn wrong_token_and_finished_job_are_refused() {
    let fake = fake(FakeGitlabOptions::default()).await;
    let job = running_job(&fake).await;
    let file = zip_file("a.txt", b"x");
    let wrong = JobCredentials {
        id: job.id,
        token: "glcbt-not-the-token".into(),
    };
    let err = client(&fake)
        .upload(&wrong, &archive_upload(&file))
        .await
        .unwrap_err();
    assert!(matches!(err, ArtifactsError::Forbidden { .. }), "{err:?}");
    assert!(!err.to_string().contains("not-the-token"), "{err}");
    let err = client(&fake)
        .download(
            &wrong,
            false,
            tempfile::NamedTempFile::new().unwrap().path(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, ArtifactsError::Unauthorized { .. }),
        "{err:?}"
    );
}

async fn job_with_archive(fake: &FakeGitlab, content: &[u8]) -> i64 {
    let producer = fake.enqueue("runner-token-nobody", json!({}));
    let file = zip_file("dist/app.txt", content);
    fake.put_artifact(
        producer,
        StoredArtifact {
            artifact_type: "archive".into(),
            artifact_format: "zip".into(),
            expire_in: None,
            filename: "artifacts.zip".into(),
            bytes: std::fs::read(file.path()).unwrap(),
        },
    );
    producer
}

#[tokio::test]
async fn download_proxied_and_direct_without_the_token_leaving() {
    let fake = fake(FakeGitlabOptions::default()).await;
    let consumer = running_job(&fake).await;
    let producer = job_with_archive(&fake, b"payload").await;
    let dependency = JobCredentials {
        id: producer,
        token: consumer.token.clone(),
    };
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("artifacts.zip");
    for direct in [false, true] {
        let size = client(&fake)
            .download(&dependency, direct, &dest)
            .await
            .unwrap_or_else(|e| panic!("download (direct={direct}): {e}"));
        let stored = &fake.artifacts(producer)[0];
        assert_eq!(size, stored.bytes.len() as u64);
        assert_eq!(std::fs::read(&dest).unwrap(), stored.bytes);
    }
    let requests = fake.requests();
    let gets: Vec<_> = requests.iter().filter(|r| r.method == "GET").collect();
    assert_eq!(gets.len(), 3, "{gets:?}");
    assert_eq!(gets[0].status, 200);
    assert_eq!(gets[1].query.as_deref(), Some("direct_download=true"));
    assert_eq!(gets[1].status, 302);
    assert!(gets[2].path.starts_with("/objects/"), "{:?}", gets[2]);
    assert_eq!(gets[2].status, 200);
    assert_eq!(
        gets[2].header("job-token"),
        None,
        "the job token must not reach object storage"
    );
    assert!(gets[..2]
        .iter()
        .all(|r| r.header("job-token") == Some(consumer.token.as_str())));
}

#[tokio::test]
async fn download_of_a_missing_archive_or_job_is_a_clear_error() {
    let fake = fake(FakeGitlabOptions::default()).await;
    let consumer = running_job(&fake).await;
    let without = fake.enqueue("runner-token-nobody", json!({}));
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("a.zip");
    let err = client(&fake)
        .download(
            &JobCredentials {
                id: without,
                token: consumer.token.clone(),
            },
            true,
            &dest,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ArtifactsError::NotFound { .. }), "{err:?}");
    assert!(err.to_string().contains("no artifacts"), "{err}");
    let err = client(&fake)
        .download(
            &JobCredentials {
                id: 987_654,
                token: consumer.token.clone(),
            },
            false,
            &dest,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ArtifactsError::Forbidden { .. }), "{err:?}");
}

#[tokio::test]
async fn download_retries_a_503_then_succeeds() {
    let fake = fake(FakeGitlabOptions::default()).await;
    let consumer = running_job(&fake).await;
    let producer = job_with_archive(&fake, b"retry me").await;
    fake.inject(Fault::DownloadArtifactsStatus {
        status: 503,
        times: 2,
    });
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("a.zip");
    client(&fake)
        .download(
            &JobCredentials {
                id: producer,
                token: consumer.token,
            },
            true,
            &dest,
        )
        .await
        .expect("download after two 503s");
    assert_eq!(
        std::fs::read(&dest).unwrap(),
        fake.artifacts(producer)[0].bytes
    );
}
