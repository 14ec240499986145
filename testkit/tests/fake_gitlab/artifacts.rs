//! `POST/GET jobs/:id/artifacts` and the object storage: GitLab's answers to bad tokens, jobs
//! that are not running, bodies without a `file` part, wrong types and formats, duplicates; the
//! direct-download redirect and the storage refusing a `JOB-TOKEN`.

use reqwest::StatusCode;
use serde_json::json;

use crate::{client, header, start};
use testkit::FakeGitlabOptions;

const BOUNDARY: &str = "flotilla-test-boundary";

/// A multipart body with one part named `part` holding `data`.
fn multipart(part: &str, filename: &str, data: &[u8]) -> Vec<u8> {
    let mut body = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{part}\"; filename=\"{filename}\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(data);
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    body
}

/// A zip holding one small file.
fn small_zip() -> Vec<u8> {
    use std::io::Write as _;
    let mut cursor = std::io::Cursor::new(Vec::new());
    let mut zip = zip::ZipWriter::new(&mut cursor);
    zip.start_file("a.txt", zip::write::SimpleFileOptions::default())
        .unwrap();
    zip.write_all(b"a").unwrap();
    zip.finish().unwrap();
    cursor.into_inner()
}

async fn upload(url: &str, id: i64, token: &str, query: &str, body: Vec<u8>) -> reqwest::Response {
    client()
        .post(format!("{url}/api/v4/jobs/{id}/artifacts?{query}"))
        .header("JOB-TOKEN", token)
        .header(
            "Content-Type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(body)
        .send()
        .await
        .expect("POST artifacts")
}

#[tokio::test]
async fn uploads_are_checked_as_gitlab_checks_them() {
    let (fake, runner) = start(FakeGitlabOptions {
        max_artifacts_bytes: 4096,
        ..FakeGitlabOptions::default()
    })
    .await;
    let id = fake.enqueue(crate::RUNNER, json!({}));
    let (_, token, _) = runner.take_job().await;
    let url = fake.url();
    let zip = small_zip();

    // Awaiting the two-phase ack: not running yet.
    let resp = upload(
        &url,
        id,
        &token,
        "",
        multipart("file", "artifacts.zip", &zip),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(header(&resp, "job-status").as_deref(), Some("pending"));
    let resp = runner
        .put(id, json!({"token": token, "state": "running"}))
        .await;
    assert_eq!(resp.status(), StatusCode::OK);

    let cases: Vec<(&str, &str, Vec<u8>, StatusCode)> = vec![
        (
            "glcbt-wrong",
            "",
            multipart("file", "artifacts.zip", &zip),
            StatusCode::FORBIDDEN,
        ),
        (
            &token,
            "",
            multipart("other", "artifacts.zip", &zip),
            StatusCode::BAD_REQUEST,
        ),
        (
            &token,
            "artifact_type=bogus",
            multipart("file", "x.zip", &zip),
            StatusCode::BAD_REQUEST,
        ),
        (
            &token,
            "artifact_type=junit&artifact_format=zip",
            multipart("file", "junit.zip", &zip),
            StatusCode::BAD_REQUEST,
        ),
        (
            &token,
            "",
            multipart("file", "artifacts.zip", b"not a zip"),
            StatusCode::BAD_REQUEST,
        ),
        (
            &token,
            "",
            multipart("file", "artifacts.zip", &[0u8; 5000]),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            &token,
            "expire_in=1+day",
            multipart("file", "artifacts.zip", &zip),
            StatusCode::CREATED,
        ),
        (
            &token,
            "",
            multipart("file", "artifacts.zip", &zip),
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (i, (tok, query, body, want)) in cases.into_iter().enumerate() {
        let resp = upload(&url, id, tok, query, body).await;
        assert_eq!(resp.status(), want, "case {i}: {query}");
    }
    let stored = fake.artifacts(id);
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(stored[0].expire_in.as_deref(), Some("1 day"));
    assert_eq!(stored[0].zip_file("a.txt").unwrap(), b"a");
}

#[tokio::test]
async fn downloads_need_a_running_jobs_token_and_storage_refuses_it() {
    let (fake, runner) = start(FakeGitlabOptions::default()).await;
    let id = fake.enqueue(crate::RUNNER, json!({}));
    let (_, token, _) = runner.take_job().await;
    runner
        .put(id, json!({"token": token, "state": "running"}))
        .await;
    let zip = small_zip();
    let url = fake.url();
    let resp = upload(
        &url,
        id,
        &token,
        "",
        multipart("file", "artifacts.zip", &zip),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::CREATED);

    let get = |path: String, token: Option<String>| {
        let mut req = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
            .get(path);
        if let Some(t) = token {
            req = req.header("JOB-TOKEN", t);
        }
        req.send()
    };
    let artifacts = format!("{url}/api/v4/jobs/{id}/artifacts");
    let resp = get(artifacts.clone(), None).await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let resp = get(
        format!("{url}/api/v4/jobs/9999/artifacts"),
        Some(token.clone()),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let resp = get(artifacts.clone(), Some(token.clone())).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.bytes().await.unwrap().to_vec(), zip);

    let resp = get(
        format!("{artifacts}?direct_download=true"),
        Some(token.clone()),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::FOUND);
    let location = header(&resp, "location").expect("a Location");
    assert!(location.starts_with(&fake.object_store_url()), "{location}");
    assert_ne!(
        fake.object_store_url(),
        url,
        "object storage is another origin"
    );
    let resp = get(location.clone(), Some(token.clone())).await.unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::BAD_REQUEST,
        "a JOB-TOKEN is refused"
    );
    let resp = get(location, None).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.bytes().await.unwrap().to_vec(), zip);

    // Once the job finished, its token no longer authenticates.
    runner
        .put(id, json!({"token": token, "state": "success"}))
        .await;
    let resp = get(artifacts, Some(token)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}
