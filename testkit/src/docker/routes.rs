//! The fake engine's HTTP surface: one dispatcher that strips the `/v1.NN` prefix, routes by
//! method and path as the Engine API does, and answers with Docker's status codes, JSON shapes
//! and `{"message": …}` errors. Containers and the system endpoints live
//! here; attach is `attach.rs`'s, images `images.rs`'s, volumes and networks `objects.rs`'s.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::state::{
    exit_locked, labels_match, new_id, now, parse_filters, ApiError, Container, Engine, Life,
    Status, Volume,
};
use super::{attach, images, normalize_image, objects};

/// The API version the fake speaks (and reports).
pub(crate) const API_VERSION: &str = "1.41";
/// Largest request body read (image loads included).
const BODY_LIMIT: usize = 1 << 30;

/// The router: everything goes through [`dispatch`].
pub(crate) fn router(engine: Arc<Engine>) -> Router {
    Router::new().fallback(dispatch).with_state(engine)
}

/// A JSON answer.
pub(crate) fn json_response(status: u16, body: Value) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        json_response(self.status, json!({ "message": self.message }))
    }
}

/// The query string as a map (last value wins), percent-decoded.
pub(crate) fn query(req: &Request) -> HashMap<String, String> {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    };
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(p), String::new()),
        })
        .collect()
}

fn truthy(q: &HashMap<String, String>, key: &str) -> bool {
    matches!(q.get(key).map(String::as_str), Some("1" | "true" | "True"))
}

pub(crate) async fn body_json(req: Request) -> Result<Value, ApiError> {
    let bytes = axum::body::to_bytes(req.into_body(), BODY_LIMIT)
        .await
        .map_err(|e| ApiError::new(400, format!("reading the request body: {e}")))?;
    if bytes.is_empty() {
        return Ok(json!({}));
    }
    serde_json::from_slice(&bytes).map_err(|e| ApiError::new(400, format!("invalid JSON: {e}")))
}

/// Routes one request.
async fn dispatch(State(engine): State<Arc<Engine>>, req: Request) -> Response {
    let path = req.uri().path().to_owned();
    let path = match path.strip_prefix("/v") {
        Some(rest) if rest.starts_with(|c: char| c.is_ascii_digit()) => rest
            .find('/')
            .map(|i| rest[i..].to_owned())
            .unwrap_or_default(),
        _ => path,
    };
    let method = req.method().clone();
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let result = match (&method, parts.as_slice()) {
        (&Method::GET | &Method::HEAD, ["_ping"]) => return ping(),
        (&Method::GET, ["version"]) => Ok(version()),
        (&Method::GET, ["info"]) => Ok(info(&engine)),
        (&Method::POST, ["containers", "create"]) => create(&engine, req).await,
        (&Method::GET, ["containers", "json"]) => list(&engine, &req),
        (&Method::GET, ["containers", id, "json"]) => inspect(&engine, id),
        (&Method::POST, ["containers", id, "start"]) => {
            let _answering = engine.start_in_flight();
            tokio::time::sleep(engine.opts.start_latency).await;
            start(&engine, id)
        }
        (&Method::POST, ["containers", id, "attach"]) => attach::attach(&engine, id, req),
        (&Method::POST, ["containers", id, "wait"]) => wait(&engine, id, &req),
        (&Method::POST, ["containers", id, "kill"]) => kill(&engine, id),
        (&Method::POST, ["containers", id, "stop"]) => stop(&engine, id),
        (&Method::GET, ["containers", id, "logs"]) => logs(&engine, id),
        (&Method::DELETE, ["containers", id]) => remove(&engine, id, &req),
        (&Method::POST, ["volumes", "create"]) => objects::volume_create(&engine, req).await,
        (&Method::GET, ["volumes"]) => objects::volume_list(&engine, &req),
        (&Method::GET, ["volumes", name]) => objects::volume_inspect(&engine, name),
        (&Method::DELETE, ["volumes", name]) => objects::volume_remove(&engine, name),
        (&Method::POST, ["networks", "create"]) => objects::network_create(&engine, req).await,
        (&Method::GET, ["networks"]) => objects::network_list(&engine, &req),
        (&Method::DELETE, ["networks", id]) => objects::network_remove(&engine, id),
        (_, ["images", ..]) | (_, ["distribution", ..]) => {
            images::route(&engine, &method, &parts, req).await
        }
        _ => Err(ApiError::new(
            404,
            format!("page not found: {method} {path}"),
        )),
    };
    result.unwrap_or_else(IntoResponse::into_response)
}

fn ping() -> Response {
    (
        StatusCode::OK,
        [
            ("API-Version", API_VERSION),
            ("Docker-Experimental", "false"),
            ("OSType", "linux"),
            ("Cache-Control", "no-cache, no-store, must-revalidate"),
            ("Content-Type", "text/plain; charset=utf-8"),
        ],
        "OK",
    )
        .into_response()
}

fn version() -> Response {
    json_response(
        200,
        json!({
            "Platform": {"Name": "Flotilla fake Docker Engine"},
            "Version": "20.10.0-fake",
            "ApiVersion": API_VERSION,
            "MinAPIVersion": "1.12",
            "GitCommit": "fake",
            "GoVersion": "none",
            "Os": "linux",
            "Arch": "amd64",
            "KernelVersion": "fake",
        }),
    )
}

fn info(engine: &Engine) -> Response {
    let s = engine.stats();
    json_response(
        200,
        json!({
            "ID": "FAKE",
            "Containers": s.containers,
            "ContainersRunning": s.running,
            "Images": engine.lock().images.len(),
            "OperatingSystem": "fake",
            "OSType": "linux",
            "Architecture": "x86_64",
            "NCPU": 2,
            "ServerVersion": "20.10.0-fake",
        }),
    )
}

pub(crate) fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.len() >= 2
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

pub(crate) fn string_map(v: &Value) -> HashMap<String, String> {
    v.as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

async fn create(engine: &Arc<Engine>, req: Request) -> Result<Response, ApiError> {
    let q = query(&req);
    let body = body_json(req).await?;
    let name = q.get("name").cloned().unwrap_or_default();
    let name = name.trim_start_matches('/').to_owned();
    if !name.is_empty() && !valid_name(&name) {
        return Err(ApiError::new(
            400,
            format!("Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"),
        ));
    }
    let Some(image) = body.get("Image").and_then(Value::as_str) else {
        return Err(ApiError::new(400, "No command specified"));
    };
    let image = normalize_image(image);
    let host = body.get("HostConfig").cloned().unwrap_or(json!({}));
    let mut volumes = Vec::new();
    for m in host
        .get("Mounts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if m.get("Type").and_then(Value::as_str) == Some("volume") {
            let source = m.get("Source").and_then(Value::as_str).unwrap_or("");
            volumes.push(if source.is_empty() {
                new_id()
            } else {
                source.to_owned()
            });
        }
    }
    let network = host
        .get("NetworkMode")
        .and_then(Value::as_str)
        .filter(|m| {
            !m.is_empty()
                && !["default", "bridge", "host", "none"].contains(m)
                && !m.starts_with("container:")
        })
        .map(str::to_owned);
    let mut inner = engine.lock();
    if !inner.images.contains(&image) {
        return Err(ApiError::new(404, format!("No such image: {image}")));
    }
    if let Some(n) = &network {
        if inner.network_id(n).is_none() {
            return Err(ApiError::new(404, format!("network {n} not found")));
        }
    }
    let id = new_id();
    let name = if name.is_empty() {
        format!("fake_{}", &id[..12])
    } else {
        name
    };
    if let Some(other) = inner.names.get(&name) {
        return Err(ApiError::new(
            409,
            format!(
                "Conflict. The container name \"/{name}\" is already in use by container \"{other}\". You have to remove (or rename) that container to be able to reuse that name."
            ),
        ));
    }
    for v in &volumes {
        inner.volumes.entry(v.clone()).or_insert_with(|| Volume {
            name: v.clone(),
            labels: HashMap::new(),
            created_at: now(),
        });
    }
    let (life, _) = tokio::sync::watch::channel(Life {
        status: Status::Created,
        exit_code: 0,
        exits: 0,
    });
    let c = Container {
        id: id.clone(),
        name: name.clone(),
        image,
        labels: string_map(body.get("Labels").unwrap_or(&Value::Null)),
        open_stdin: body.get("OpenStdin").and_then(Value::as_bool) == Some(true),
        config: body,
        volumes,
        network,
        life,
        attached: None,
        kill: CancellationToken::new(),
        created_at: now(),
        started_at: "0001-01-01T00:00:00Z".into(),
        finished_at: "0001-01-01T00:00:00Z".into(),
    };
    inner.names.insert(name, id.clone());
    inner.containers.insert(id.clone(), c);
    engine
        .created
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Ok(json_response(201, json!({"Id": id, "Warnings": []})))
}

fn summary(c: &Container) -> Value {
    let life = *c.life.borrow();
    json!({
        "Id": c.id,
        "Names": [format!("/{}", c.name)],
        "Image": c.image,
        "ImageID": "",
        "Command": "",
        "Created": 0,
        "Labels": c.labels,
        "State": life.status.as_str(),
        "Status": match life.status {
            Status::Running => "Up".to_owned(),
            Status::Exited => format!("Exited ({})", life.exit_code),
            Status::Created => "Created".to_owned(),
            Status::Removed => "Removal In Progress".to_owned(),
        },
    })
}

fn list(engine: &Engine, req: &Request) -> Result<Response, ApiError> {
    let q = query(req);
    let filters = parse_filters(q.get("filters").map(String::as_str))?;
    let all = truthy(&q, "all");
    let inner = engine.lock();
    let out: Vec<Value> = inner
        .containers
        .values()
        .filter(|c| all || c.life.borrow().status == Status::Running)
        .filter(|c| labels_match(&c.labels, filters.get("label").map_or(&[], |v| v)))
        .filter(|c| {
            filters.get("name").is_none_or(|names| {
                names
                    .iter()
                    .any(|n| c.name.contains(n.trim_start_matches('/')))
            })
        })
        .filter(|c| {
            filters
                .get("status")
                .is_none_or(|s| s.iter().any(|s| s == c.life.borrow().status.as_str()))
        })
        .map(summary)
        .collect();
    Ok(json_response(200, Value::Array(out)))
}

fn inspect(engine: &Engine, id: &str) -> Result<Response, ApiError> {
    let inner = engine.lock();
    let id = inner.resolve(id)?;
    let c = &inner.containers[&id];
    let life = *c.life.borrow();
    Ok(json_response(
        200,
        json!({
            "Id": c.id,
            "Created": c.created_at,
            "Path": "sh",
            "Args": [],
            "State": {
                "Status": life.status.as_str(),
                "Running": life.status == Status::Running,
                "Paused": false,
                "Restarting": false,
                "OOMKilled": false,
                "Dead": false,
                "Pid": if life.status == Status::Running { 4242 } else { 0 },
                "ExitCode": life.exit_code,
                "Error": "",
                "StartedAt": c.started_at,
                "FinishedAt": c.finished_at,
            },
            "Image": format!("sha256:{}", "0".repeat(64)),
            "Name": format!("/{}", c.name),
            "RestartCount": 0,
            "Driver": "overlay2",
            "Platform": "linux",
            "HostConfig": c.config.get("HostConfig").cloned().unwrap_or(json!({})),
            "Config": {
                "Image": c.image,
                "Labels": c.labels,
                "OpenStdin": c.open_stdin,
                "Cmd": c.config.get("Cmd").cloned().unwrap_or(Value::Null),
                "Env": c.config.get("Env").cloned().unwrap_or(json!([])),
            },
            "NetworkSettings": {"Networks": {}, "IPAddress": ""},
            "Mounts": [],
        }),
    ))
}

fn start(engine: &Arc<Engine>, id: &str) -> Result<Response, ApiError> {
    let mut inner = engine.lock();
    let (id, c) = inner.container_mut(id)?;
    let life = *c.life.borrow();
    match life.status {
        Status::Running => return Ok(StatusCode::NOT_MODIFIED.into_response()),
        Status::Removed => {
            return Err(ApiError::new(
                409,
                format!("container {id} is marked for removal and cannot be started"),
            ))
        }
        Status::Created | Status::Exited => {}
    }
    c.kill = CancellationToken::new();
    c.started_at = now();
    c.life.send_replace(Life {
        status: Status::Running,
        ..life
    });
    engine.note_running();
    let attached = c.attached.take();
    let behaviour = engine.behaviour(&c.image);
    let kill = c.kill.clone();
    let open_stdin = c.open_stdin;
    drop(inner);
    attach::spawn_process(engine.clone(), id, behaviour, attached, open_stdin, kill);
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn wait(engine: &Engine, id: &str, req: &Request) -> Result<Response, ApiError> {
    let q = query(req);
    let condition = q
        .get("condition")
        .cloned()
        .unwrap_or_else(|| "not-running".into());
    if !["not-running", "next-exit", "removed"].contains(&condition.as_str()) {
        return Err(ApiError::new(
            400,
            format!("invalid condition: \"{condition}\""),
        ));
    }
    let mut rx = {
        let inner = engine.lock();
        let id = inner.resolve(id)?;
        inner.containers[&id].life.subscribe()
    };
    let first = *rx.borrow_and_update();
    let stop = engine.stopping();
    // Headers go at once, the body when the condition holds (as dockerd does).
    let body = async_stream_once(async move {
        let done = |l: &Life| match condition.as_str() {
            "next-exit" => l.exits > first.exits,
            "removed" => l.status == Status::Removed,
            _ => l.status != Status::Running,
        };
        let got = tokio::select! {
            r = rx.wait_for(done) => r.ok().map(|l| *l),
            _ = stop.cancelled() => None,
        };
        let last = got.unwrap_or_else(|| *rx.borrow());
        let mut text = json!({"StatusCode": last.exit_code, "Error": null}).to_string();
        text.push('\n');
        text
    });
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response())
}

/// A body of one chunk produced by `fut`.
fn async_stream_once<F>(fut: F) -> Body
where
    F: std::future::Future<Output = String> + Send + 'static,
{
    let stream = futures_util::stream::once(async move {
        Ok::<_, std::convert::Infallible>(bytes::Bytes::from(fut.await))
    });
    Body::from_stream(stream)
}

/// Ends container `id` with exit code 137 (as SIGKILL does) if it runs: its full id, and
/// whether it was running.
fn exit_if_running(engine: &Engine, id: &str) -> Result<(String, bool), ApiError> {
    let mut inner = engine.lock();
    let (id, c) = inner.container_mut(id)?;
    let exited = exit_locked(engine, c, 137);
    Ok((id, exited))
}

fn kill(engine: &Engine, id: &str) -> Result<Response, ApiError> {
    match exit_if_running(engine, id)? {
        (_, true) => Ok(StatusCode::NO_CONTENT.into_response()),
        (id, false) => Err(ApiError::new(
            409,
            format!("Cannot kill container: {id}: Container {id} is not running"),
        )),
    }
}

fn stop(engine: &Engine, id: &str) -> Result<Response, ApiError> {
    let (_, exited) = exit_if_running(engine, id)?;
    let status = if exited {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::NOT_MODIFIED
    };
    Ok(status.into_response())
}

fn logs(engine: &Engine, id: &str) -> Result<Response, ApiError> {
    // Containers here use the `none` log driver as the executor makes them; like dockerd
    // the fake keeps no logs, so an empty stream is all there is.
    let inner = engine.lock();
    inner.resolve(id)?;
    Ok((
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "application/vnd.docker.multiplexed-stream",
        )],
        Body::empty(),
    )
        .into_response())
}

fn remove(engine: &Engine, id: &str, req: &Request) -> Result<Response, ApiError> {
    let q = query(req);
    let mut inner = engine.lock();
    let (id, c) = inner.container_mut(id)?;
    if c.life.borrow().status == Status::Running {
        if !truthy(&q, "force") {
            return Err(ApiError::new(
                409,
                format!("You cannot remove a running container {id}. Stop the container before attempting removal or force remove"),
            ));
        }
        exit_locked(engine, c, 137);
    }
    let Some(c) = inner.containers.remove(&id) else {
        return Err(ApiError::no_container(&id));
    };
    inner.names.remove(&c.name);
    let life = *c.life.borrow();
    c.life.send_replace(Life {
        status: Status::Removed,
        ..life
    });
    Ok(StatusCode::NO_CONTENT.into_response())
}
