//! Volumes and networks on the fake engine: create (a volume that exists is returned again, a
//! network name that exists is a 409), list with `label`/`name` filters, remove (404 when
//! missing, 409 for a volume a container uses, 403 for a network with running endpoints), in
//! the Engine API's shapes.

use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::routes::{body_json, json_response, query, string_map, valid_name};
use super::state::{
    labels_match, new_id, now, parse_filters, ApiError, Engine, Network, Status, Volume,
};

fn volume_json(v: &Volume) -> Value {
    json!({
        "Name": v.name,
        "Driver": "local",
        "Mountpoint": format!("/var/lib/docker/volumes/{}/_data", v.name),
        "Labels": v.labels,
        "Scope": "local",
        "Options": {},
        "CreatedAt": v.created_at,
    })
}

pub(crate) async fn volume_create(engine: &Engine, req: Request) -> Result<Response, ApiError> {
    let body = body_json(req).await?;
    let name = body
        .get("Name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
        .unwrap_or_else(new_id);
    if !valid_name(&name) {
        return Err(ApiError::new(
            400,
            format!("create {name}: \"{name}\" includes invalid characters for a local volume name, only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed. If you intended to pass a host directory, use absolute path"),
        ));
    }
    let mut inner = engine.lock();
    let v = inner.volumes.entry(name.clone()).or_insert_with(|| Volume {
        name,
        labels: string_map(body.get("Labels").unwrap_or(&Value::Null)),
        created_at: now(),
    });
    Ok(json_response(201, volume_json(v)))
}

pub(crate) fn volume_list(engine: &Engine, req: &Request) -> Result<Response, ApiError> {
    let filters = parse_filters(query(req).get("filters").map(String::as_str))?;
    let inner = engine.lock();
    let vols: Vec<Value> = inner
        .volumes
        .values()
        .filter(|v| labels_match(&v.labels, filters.get("label").map_or(&[], |x| x)))
        .map(volume_json)
        .collect();
    Ok(json_response(200, json!({"Volumes": vols, "Warnings": []})))
}

/// `GET /volumes/{name}`: the volume, or 404 as dockerd says it.
pub(crate) fn volume_inspect(engine: &Engine, name: &str) -> Result<Response, ApiError> {
    let inner = engine.lock();
    match inner.volumes.get(name) {
        Some(v) => Ok(json_response(200, volume_json(v))),
        None => Err(ApiError::new(404, format!("get {name}: no such volume"))),
    }
}

pub(crate) fn volume_remove(engine: &Engine, name: &str) -> Result<Response, ApiError> {
    let mut inner = engine.lock();
    if !inner.volumes.contains_key(name) {
        return Err(ApiError::new(404, format!("get {name}: no such volume")));
    }
    let users: Vec<String> = inner
        .containers
        .values()
        .filter(|c| c.volumes.iter().any(|v| v == name))
        .map(|c| c.id.clone())
        .collect();
    if !users.is_empty() {
        return Err(ApiError::new(
            409,
            format!("remove {name}: volume is in use - [{}]", users.join(", ")),
        ));
    }
    inner.volumes.remove(name);
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(crate) async fn network_create(engine: &Engine, req: Request) -> Result<Response, ApiError> {
    let body = body_json(req).await?;
    let Some(name) = body.get("Name").and_then(Value::as_str).map(str::to_owned) else {
        return Err(ApiError::new(400, "network name is required"));
    };
    let mut inner = engine.lock();
    if inner.networks.values().any(|n| n.name == name) {
        return Err(ApiError::new(
            409,
            format!("network with name {name} already exists"),
        ));
    }
    let id = new_id();
    inner.networks.insert(
        id.clone(),
        Network {
            id: id.clone(),
            name,
            driver: body
                .get("Driver")
                .and_then(Value::as_str)
                .unwrap_or("bridge")
                .to_owned(),
            labels: string_map(body.get("Labels").unwrap_or(&Value::Null)),
            created_at: now(),
        },
    );
    Ok(json_response(201, json!({"Id": id, "Warning": ""})))
}

pub(crate) fn network_list(engine: &Engine, req: &Request) -> Result<Response, ApiError> {
    let filters = parse_filters(query(req).get("filters").map(String::as_str))?;
    let inner = engine.lock();
    let out: Vec<Value> = inner
        .networks
        .values()
        .filter(|n| labels_match(&n.labels, filters.get("label").map_or(&[], |x| x)))
        .filter(|n| {
            filters
                .get("name")
                .is_none_or(|names| names.iter().any(|x| n.name.contains(x.as_str())))
        })
        .map(|n| {
            json!({
                "Name": n.name, "Id": n.id, "Created": n.created_at, "Scope": "local",
                "Driver": n.driver, "EnableIPv6": false, "Internal": false, "Attachable": false,
                "Ingress": false, "Containers": {}, "Options": {}, "Labels": n.labels,
            })
        })
        .collect();
    Ok(json_response(200, Value::Array(out)))
}

pub(crate) fn network_remove(engine: &Engine, name_or_id: &str) -> Result<Response, ApiError> {
    let mut inner = engine.lock();
    let Some(id) = inner.network_id(name_or_id) else {
        return Err(ApiError::new(
            404,
            format!("network {name_or_id} not found"),
        ));
    };
    let name = inner.networks[&id].name.clone();
    let in_use = inner.containers.values().any(|c| {
        c.life.borrow().status == Status::Running
            && c.network.as_deref().is_some_and(|n| n == name || n == id)
    });
    if in_use {
        return Err(ApiError::new(
            403,
            format!("error while removing network: network {name} id {id} has active endpoints"),
        ));
    }
    inner.networks.remove(&id);
    Ok(StatusCode::NO_CONTENT.into_response())
}
