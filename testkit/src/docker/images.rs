//! Images on the fake engine: inspect (`GET /images/{name}/json`, 404 `No such image`), pull
//! (`POST /images/create`, every reference "exists" and arrives at once, with dockerd's JSON
//! progress stream), load (`POST /images/load`: a `docker save` tarball whose
//! `manifest.json` names the tags) and list. No layers are stored: an image is its name.

use std::sync::Arc;

use axum::extract::Request;
use axum::http::Method;
use axum::response::Response;
use serde_json::{json, Value};

use super::normalize_image;
use super::routes::{json_response, query};
use super::state::{ApiError, Engine};

/// Routes `/images/…` (`parts` is the path split on `/`).
pub(crate) async fn route(
    engine: &Arc<Engine>,
    method: &Method,
    parts: &[&str],
    req: Request,
) -> Result<Response, ApiError> {
    match (method, parts) {
        (&Method::GET, ["images", "json"]) => Ok(list(engine)),
        (&Method::POST, ["images", "create"]) => pull(engine, &req),
        (&Method::POST, ["images", "load"]) => load(engine, req).await,
        (&Method::GET, ["images", name @ .., "json"]) if !name.is_empty() => {
            inspect(engine, &name.join("/"))
        }
        _ => Err(ApiError::new(
            404,
            format!("page not found: {method} /{}", parts.join("/")),
        )),
    }
}

fn image_json(name: &str) -> Value {
    json!({
        "Id": format!("sha256:{}", "0".repeat(64)),
        "RepoTags": [name],
        "RepoDigests": [],
        "Created": "2026-01-01T00:00:00Z",
        "Size": 0,
        "Architecture": "amd64",
        "Os": "linux",
        "Config": {"Cmd": ["sh"], "Env": []},
        "RootFS": {"Type": "layers", "Layers": []},
    })
}

fn inspect(engine: &Engine, name: &str) -> Result<Response, ApiError> {
    let norm = normalize_image(name);
    if engine.lock().images.contains(&norm) {
        Ok(json_response(200, image_json(&norm)))
    } else {
        Err(ApiError::new(404, format!("No such image: {name}")))
    }
}

fn list(engine: &Engine) -> Response {
    let inner = engine.lock();
    let all: Vec<Value> = inner
        .images
        .iter()
        .map(|name| {
            json!({
                "Id": format!("sha256:{}", "0".repeat(64)), "ParentId": "", "RepoTags": [name],
                "RepoDigests": [], "Created": 0, "Size": 0, "SharedSize": -1, "Labels": {},
                "Containers": -1,
            })
        })
        .collect();
    json_response(200, Value::Array(all))
}

fn pull(engine: &Engine, req: &Request) -> Result<Response, ApiError> {
    let q = query(req);
    let Some(from) = q.get("fromImage").filter(|f| !f.is_empty()) else {
        return Err(ApiError::new(400, "fromImage is required"));
    };
    let name = match q.get("tag").filter(|t| !t.is_empty()) {
        Some(tag) if !from.contains('@') => format!("{from}:{tag}"),
        _ => from.clone(),
    };
    let norm = normalize_image(&name);
    let tag = norm.rsplit_once(':').map(|(_, t)| t).unwrap_or("latest");
    engine.lock().images.insert(norm.clone());
    let lines = [
        json!({"status": format!("Pulling from {}", norm.rsplit_once(':').map_or(norm.as_str(), |(n, _)| n)), "id": tag}),
        json!({"status": "Digest: sha256:0000000000000000000000000000000000000000000000000000000000000000"}),
        json!({"status": format!("Status: Downloaded newer image for {norm}")}),
    ];
    let body: String = lines.iter().map(|l| format!("{l}\r\n")).collect();
    Ok(axum::response::IntoResponse::into_response((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )))
}

async fn load(engine: &Engine, req: Request) -> Result<Response, ApiError> {
    let bytes = axum::body::to_bytes(req.into_body(), 1 << 30)
        .await
        .map_err(|e| ApiError::new(400, format!("reading the image archive: {e}")))?;
    let tags = manifest_tags(&bytes).map_err(|m| ApiError::new(500, m))?;
    let mut inner = engine.lock();
    let mut out = String::new();
    for t in &tags {
        inner.images.insert(normalize_image(t));
        out.push_str(&json!({"stream": format!("Loaded image: {t}\n")}).to_string());
        out.push_str("\r\n");
    }
    Ok(axum::response::IntoResponse::into_response((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        out,
    )))
}

/// The `RepoTags` of every image in a `docker save` tarball's `manifest.json`.
fn manifest_tags(tar: &[u8]) -> Result<Vec<String>, String> {
    let mut at = 0usize;
    while at + 512 <= tar.len() {
        let header = &tar[at..at + 512];
        if header.iter().all(|b| *b == 0) {
            break;
        }
        let name_end = header[..100].iter().position(|b| *b == 0).unwrap_or(100);
        let name = String::from_utf8_lossy(&header[..name_end]);
        let size_field = String::from_utf8_lossy(&header[124..136]);
        let size =
            usize::from_str_radix(size_field.trim_matches(|c: char| c == '\0' || c == ' '), 8)
                .map_err(|_| format!("invalid tar header for {name}"))?;
        let data = at + 512;
        if data + size > tar.len() {
            return Err("unexpected EOF".into());
        }
        if name.trim_start_matches("./") == "manifest.json" {
            let manifest: Value = serde_json::from_slice(&tar[data..data + size])
                .map_err(|e| format!("invalid manifest.json: {e}"))?;
            return Ok(manifest
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|m| {
                    m.get("RepoTags")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default()
                })
                .filter_map(|t| t.as_str().map(str::to_owned))
                .collect());
        }
        at = data + size.div_ceil(512) * 512;
    }
    Err("open /var/lib/docker/tmp/docker-import/manifest.json: no such file or directory".into())
}

#[cfg(test)]
mod tests {
    use super::manifest_tags;

    fn entry(name: &str, data: &[u8]) -> Vec<u8> {
        let mut h = vec![0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        let size = format!("{:011o}\0", data.len());
        h[124..136].copy_from_slice(size.as_bytes());
        let mut out = h;
        out.extend_from_slice(data);
        out.resize(512 + data.len().div_ceil(512) * 512, 0);
        out
    }

    #[test]
    fn load_reads_tags_from_the_manifest() {
        let mut tar = entry("layer.tar", &[7u8; 700]);
        tar.extend(entry(
            "manifest.json",
            br#"[{"Config":"c.json","RepoTags":["helper:1"],"Layers":[]}]"#,
        ));
        tar.extend(vec![0u8; 1024]);
        assert_eq!(manifest_tags(&tar).unwrap(), vec!["helper:1".to_owned()]);
        assert!(manifest_tags(&entry("other", b"x")).is_err());
    }
}
