//! The HTTP surface of the fake: Compute v1 routes under `/compute/v1/projects/{p}/...` (as the
//! official client builds them from `with_endpoint`), the per-call middleware (call log, latency,
//! rate limits, 503s) and the admin routes (`/admin/faults`, `/admin/instances`, `/admin/calls`).
//! The list routes honour the `fields` system parameter (partial responses, `fields.rs`); other
//! unknown query parameters (`$alt`, `$apiVersion`, `prettyPrint`, ...) and body fields are
//! ignored.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::{from_fn_with_state, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use tokio::time::{sleep_until, Instant};

use super::error::ApiError;
use super::faults::GceFault;
use super::fields::FieldMask;
use super::filter::Filter;
use super::model::{zone_link, CallRecord, OpStatus, LINK_BASE};
use super::state::Shared;
use super::{lifecycle, validate, ZoneSpec};

type Params = Query<HashMap<String, String>>;
type ApiResult = Result<Json<Value>, ApiError>;

const ZONE: &str = "/compute/v1/projects/{project}/zones/{zone}";

/// The fake's router, state applied.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let api = Router::new()
        .route(&format!("{ZONE}/instances"), get(list).post(insert))
        .route(
            &format!("{ZONE}/instances/{{name}}"),
            get(get_instance).delete(delete),
        )
        .route(
            "/compute/v1/projects/{project}/aggregated/instances",
            get(aggregated),
        )
        .route(&format!("{ZONE}/operations"), get(list_operations))
        .route(&format!("{ZONE}/operations/{{op}}"), get(get_operation))
        .route(
            &format!("{ZONE}/operations/{{op}}/wait"),
            post(wait_operation),
        )
        .route_layer(from_fn_with_state(shared.clone(), per_call));
    let admin = Router::new()
        .route("/admin/faults", post(admin_fault))
        .route("/admin/instances", get(admin_instances))
        .route("/admin/calls", get(admin_calls));
    api.merge(admin).with_state(shared)
}

/// Compute method name of a matched route.
fn api_name(method: &Method, route: &str) -> &'static str {
    let tail = route
        .rsplit_once("/zones/{zone}/")
        .map(|(_, t)| t)
        .unwrap_or(route);
    match (method.as_str(), tail) {
        ("POST", "instances") => "instances.insert",
        ("GET", "instances") => "instances.list",
        ("GET", "instances/{name}") => "instances.get",
        ("DELETE", "instances/{name}") => "instances.delete",
        ("GET", "operations") => "zoneOperations.list",
        ("GET", "operations/{op}") => "zoneOperations.get",
        ("POST", "operations/{op}/wait") => "zoneOperations.wait",
        ("GET", _) if route.ends_with("/aggregated/instances") => "instances.aggregatedList",
        _ => "unknown",
    }
}

/// Per-call middleware: injected latency, 503s and rate limits, then the call log.
async fn per_call(
    State(shared): State<Arc<Shared>>,
    matched: MatchedPath,
    req: Request,
    next: Next,
) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let api = api_name(&method, matched.as_str());
    let zone = path
        .split("/zones/")
        .nth(1)
        .and_then(|t| t.split('/').next());
    let region = zone
        .and_then(|z| shared.zone(z))
        .or(shared.opts.zones.first())
        .map(|z| z.region.clone())
        .unwrap_or_default();
    let (latency, verdict) = {
        let mut st = shared.lock();
        (st.faults.latency, st.faults.on_call(&region))
    };
    if !latency.is_zero() {
        tokio::select! {
            _ = tokio::time::sleep(latency) => {}
            _ = shared.cancel.cancelled() => {}
        }
    }
    let response = match verdict {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    };
    let status = response.status().as_u16();
    let record = CallRecord {
        api: api.to_owned(),
        method: method.to_string(),
        path,
        status,
    };
    shared.lock().calls.push(record);
    response
}

/// The configured zone for a zonal call, or Compute's error.
fn zone_of(shared: &Shared, project: &str, zone: &str) -> Result<ZoneSpec, ApiError> {
    check_project(shared, project)?;
    shared
        .zone(zone)
        .cloned()
        .ok_or_else(|| ApiError::invalid_field("zone", zone, "Unknown zone."))
}

fn check_project(shared: &Shared, project: &str) -> Result<(), ApiError> {
    if project == shared.opts.project {
        Ok(())
    } else {
        Err(ApiError::not_found(&format!("projects/{project}")))
    }
}

fn request_id(q: &HashMap<String, String>) -> Option<String> {
    q.get("requestId").filter(|r| !r.is_empty()).cloned()
}

async fn insert(
    State(s): State<Arc<Shared>>,
    Path((project, zone)): Path<(String, String)>,
    Query(q): Params,
    body: Bytes,
) -> ApiResult {
    let zone = zone_of(&s, &project, &zone)?;
    let body: Value =
        serde_json::from_slice(&body).map_err(|e| ApiError::parse_error(&e.to_string()))?;
    let spec = validate::insert_spec(&project, &zone.name, body)?;
    lifecycle::insert(&s, &zone, request_id(&q), spec).map(Json)
}

async fn get_instance(
    State(s): State<Arc<Shared>>,
    Path((project, zone, name)): Path<(String, String, String)>,
) -> ApiResult {
    let zone = zone_of(&s, &project, &zone)?;
    let st = s.lock();
    st.instances
        .get(&(zone.name.clone(), name.clone()))
        .map(|i| Json(i.to_json(&project)))
        .ok_or_else(|| {
            ApiError::not_found(&format!(
                "projects/{project}/zones/{}/instances/{name}",
                zone.name
            ))
        })
}

async fn delete(
    State(s): State<Arc<Shared>>,
    Path((project, zone, name)): Path<(String, String, String)>,
    Query(q): Params,
) -> ApiResult {
    let zone = zone_of(&s, &project, &zone)?;
    lifecycle::delete(&s, &zone, &name, request_id(&q)).map(Json)
}

/// `filter`, `maxResults` and `pageToken` of a list call.
struct Listing {
    filter: Filter,
    max: usize,
    after: Option<String>,
}

impl Listing {
    fn parse(q: &HashMap<String, String>) -> Result<Self, ApiError> {
        let raw = q.get("filter").map(String::as_str).unwrap_or_default();
        let filter = Filter::parse(raw)
            .map_err(|e| ApiError::invalid_field("filter", raw, &e.to_string()))?;
        let max = match q
            .get("maxResults")
            .map(String::as_str)
            .filter(|m| !m.is_empty())
        {
            None => 500,
            Some(m) => match m.parse::<usize>() {
                Ok(0) => 500,
                Ok(n) if n <= 500 => n,
                _ => {
                    return Err(ApiError::invalid_field(
                        "maxResults",
                        m,
                        "Must be between 0 and 500.",
                    ))
                }
            },
        };
        let after =
            match q
                .get("pageToken")
                .map(String::as_str)
                .filter(|t| !t.is_empty())
            {
                None => None,
                Some(t) => Some(decode_token(t).ok_or_else(|| {
                    ApiError::invalid_field("pageToken", t, "Invalid page token.")
                })?),
            };
        Ok(Self { filter, max, after })
    }

    /// Filters `items` (sorted by key), keeps one page, and gives the next page's token.
    fn page(&self, items: Vec<(String, Value)>) -> (Vec<(String, Value)>, Option<String>) {
        let mut rest = items
            .into_iter()
            .filter(|(k, _)| self.after.as_ref().is_none_or(|a| k > a))
            .filter(|(_, v)| self.filter.matches(v));
        let page: Vec<_> = rest.by_ref().take(self.max).collect();
        let more = rest.next().is_some();
        let token = page.last().filter(|_| more).map(|(k, _)| encode_token(k));
        (page, token)
    }
}

fn encode_token(key: &str) -> String {
    key.bytes().map(|b| format!("{b:02x}")).collect()
}

fn decode_token(token: &str) -> Option<String> {
    let bytes = token.as_bytes();
    if bytes.len() & 1 == 1 {
        return None;
    }
    let raw: Option<Vec<u8>> = bytes
        .chunks(2)
        .map(|c| {
            std::str::from_utf8(c)
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect();
    String::from_utf8(raw?).ok()
}

fn list_reply(kind: &str, self_link: String, items: Vec<Value>, next: Option<String>) -> Value {
    let mut v =
        json!({"kind": kind, "id": self_link.trim_start_matches(LINK_BASE), "selfLink": self_link});
    if !items.is_empty() {
        v["items"] = Value::Array(items);
    }
    if let Some(t) = next {
        v["nextPageToken"] = json!(t);
    }
    v
}

async fn list(
    State(s): State<Arc<Shared>>,
    Path((project, zone)): Path<(String, String)>,
    Query(q): Params,
) -> ApiResult {
    let zone = zone_of(&s, &project, &zone)?;
    let listing = Listing::parse(&q)?;
    let items: Vec<(String, Value)> = {
        let st = s.lock();
        let in_zone = st.instances.iter().filter(|((z, _), _)| *z == zone.name);
        in_zone
            .map(|((_, n), i)| (n.clone(), i.to_json(&project)))
            .collect()
    };
    let (page, next) = listing.page(items);
    let link = format!("{}/instances", zone_link(&project, &zone.name));
    let items = page.into_iter().map(|(_, v)| v).collect();
    with_fields(&q, list_reply("compute#instanceList", link, items, next))
}

/// `reply`, or the part of it the `fields` parameter selects.
fn with_fields(q: &HashMap<String, String>, reply: Value) -> ApiResult {
    match q.get("fields").map(String::as_str) {
        None => Ok(Json(reply)),
        Some(raw) => {
            let mask = FieldMask::parse(raw).map_err(|e| {
                ApiError::invalid_field("fields", raw, &format!("Invalid FieldMask: {e}."))
            })?;
            Ok(Json(mask.apply(&reply)))
        }
    }
}

async fn aggregated(
    State(s): State<Arc<Shared>>,
    Path(project): Path<String>,
    Query(q): Params,
) -> ApiResult {
    check_project(&s, &project)?;
    let listing = Listing::parse(&q)?;
    let partial = q.get("returnPartialSuccess").is_some_and(|v| v == "true");
    let (items, unreachable) = {
        let st = s.lock();
        let unreachable = st.faults.unreachable.clone();
        let items: Vec<(String, Value)> = st
            .instances
            .iter()
            .filter(|((z, _), _)| !unreachable.contains(z))
            .map(|((z, n), i)| (format!("{z}/{n}"), i.to_json(&project)))
            .collect();
        (items, unreachable)
    };
    if !unreachable.is_empty() && !partial {
        // Without the opt-in, a scope that cannot be read fails the whole call.
        return Err(ApiError::unavailable());
    }
    let (page, next) = listing.page(items);
    let mut scopes: Map<String, Value> = Map::new();
    for (key, inst) in page {
        let zone = key.split('/').next().unwrap_or_default();
        let scope = scopes
            .entry(format!("zones/{zone}"))
            .or_insert_with(|| json!({"instances": []}));
        if let Some(list) = scope["instances"].as_array_mut() {
            list.push(inst);
        }
    }
    let link = format!("{LINK_BASE}/projects/{project}/aggregated/instances");
    let mut reply = json!({"kind": "compute#instanceAggregatedList", "id": format!("projects/{project}/aggregated/instances"),
                           "selfLink": link, "items": scopes});
    if let Some(t) = next {
        reply["nextPageToken"] = json!(t);
    }
    if !unreachable.is_empty() {
        reply["unreachables"] = json!(unreachable
            .iter()
            .map(|z| format!("zones/{z}"))
            .collect::<Vec<_>>());
    }
    with_fields(&q, reply)
}

async fn list_operations(
    State(s): State<Arc<Shared>>,
    Path((project, zone)): Path<(String, String)>,
    Query(q): Params,
) -> ApiResult {
    let zone = zone_of(&s, &project, &zone)?;
    let listing = Listing::parse(&q)?;
    let items: Vec<(String, Value)> = {
        let st = s.lock();
        let mut ops: Vec<_> = st
            .operations
            .values()
            .filter(|o| o.zone == zone.name)
            .collect();
        ops.sort_by_key(|o| o.seq);
        ops.into_iter()
            .map(|o| (format!("{:020}", o.seq), o.to_json(&project)))
            .collect()
    };
    let (page, next) = listing.page(items);
    let link = format!("{}/operations", zone_link(&project, &zone.name));
    let items = page.into_iter().map(|(_, v)| v).collect();
    Ok(Json(list_reply("compute#operationList", link, items, next)))
}

fn operation_json(
    s: &Shared,
    project: &str,
    zone: &str,
    op: &str,
) -> Result<(Value, bool), ApiError> {
    let st = s.lock();
    st.operations
        .get(&(zone.to_owned(), op.to_owned()))
        .map(|o| (o.to_json(project), o.status == OpStatus::Done))
        .ok_or_else(|| {
            ApiError::not_found(&format!("projects/{project}/zones/{zone}/operations/{op}"))
        })
}

async fn get_operation(
    State(s): State<Arc<Shared>>,
    Path((project, zone, op)): Path<(String, String, String)>,
) -> ApiResult {
    let zone = zone_of(&s, &project, &zone)?;
    operation_json(&s, &project, &zone.name, &op).map(|(v, _)| Json(v))
}

/// `zoneOperations.wait`: returns when the operation is DONE, or at the wait cap (not DONE), or
/// at shutdown. Wakes on state changes only.
async fn wait_operation(
    State(s): State<Arc<Shared>>,
    Path((project, zone, op)): Path<(String, String, String)>,
) -> ApiResult {
    let zone = zone_of(&s, &project, &zone)?;
    let deadline = Instant::now() + s.opts.wait_cap;
    loop {
        let changed = s.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let (json, done) = operation_json(&s, &project, &zone.name, &op)?;
        if done {
            return Ok(Json(json));
        }
        tokio::select! {
            _ = changed => {}
            _ = sleep_until(deadline) => return Ok(Json(json)),
            _ = s.cancel.cancelled() => return Ok(Json(json)),
        }
    }
}

async fn admin_fault(State(s): State<Arc<Shared>>, Json(fault): Json<GceFault>) -> Response {
    match super::apply_fault(&s, fault) {
        Ok(()) => Json(json!({})).into_response(),
        Err(e) => {
            let status = match e {
                lifecycle::FakeGceError::NotFound { .. } => StatusCode::NOT_FOUND,
                _ => StatusCode::BAD_REQUEST,
            };
            (status, Json(json!({"error": e.to_string()}))).into_response()
        }
    }
}

async fn admin_instances(State(s): State<Arc<Shared>>) -> Json<Value> {
    let views: Vec<_> = s.lock().instances.values().map(|i| i.view()).collect();
    Json(json!(views))
}

async fn admin_calls(State(s): State<Arc<Shared>>) -> Json<Value> {
    Json(json!(s.lock().calls))
}
