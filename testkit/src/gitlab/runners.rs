//! The fake GitLab's runner-management endpoints, with GitLab's statuses and bodies
//! (`lib/api/ci/runner.rb`): `POST /runners` (legacy registration token: 201
//! `{id, token, token_expires_at}`, 403 "invalid token supplied", 410 "runner registration
//! disallowed"), `POST /runners/verify` (200 `{id, token, token_expires_at}`, records the
//! runner manager of `system_id`), `DELETE /runners` (204), `DELETE /runners/managers` (204;
//! 404 for an unknown manager) and `POST /runners/reset_authentication_token` (201
//! `{token, token_expires_at}`; the old token gets 403 from then on). A missing field is 400
//! `{"error": "<field> is missing"}`; an unknown or expired token is 403 `{"message": "403
//! Forbidden"}`. The admin side (registration tokens, token lifetime) is on `GitlabHandle`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::http::{
    forbidden, json_response, message, parse_params, require_str, Params, Rejection,
};
use super::state::{Shared, State as FakeState};
use super::GitlabHandle;

/// The token `token` became through resets (itself if never reset).
pub(crate) fn current_token(st: &FakeState, token: &str) -> String {
    let mut current = token.to_owned();
    // Bounded: a reset chain cannot loop, but a corrupt map must not hang the fake.
    for _ in 0..64 {
        match st.registration.replaced.get(&current) {
            Some(next) => current = next.clone(),
            None => break,
        }
    }
    current
}

/// A new runner token with `prefix` (`glrt-` created in GitLab, `glrtr-` from a registration
/// token).
fn new_runner_token(prefix: &str) -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    let tail: String = (0..20)
        .map(|_| {
            let i = rng.random_range(0..36u8);
            char::from(if i < 10 { b'0' + i } else { b'a' + i - 10 })
        })
        .collect();
    format!("{prefix}{tail}")
}

/// Issues `token` to runner `id` with the configured lifetime; returns its expiry (JSON).
fn issue(st: &mut FakeState, token: &str, id: i64) -> Value {
    st.runners.insert(token.to_owned(), id);
    st.queue(token);
    match st.registration.token_ttl {
        Some(ttl) => {
            let at = chrono::Utc::now() + ttl;
            st.registration.expires.insert(token.to_owned(), at);
            json!(at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        }
        None => Value::Null,
    }
}

/// The expiry of `token` as GitLab renders it (`null`: never).
fn expiry(st: &FakeState, token: &str) -> Value {
    st.registration
        .expires
        .get(token)
        .map_or(Value::Null, |at| {
            json!(at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        })
}

/// Parses the body and resolves the valid runner of its `token` (400 / 403 otherwise).
fn runner(
    app: &Shared,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<(String, i64, Params), Rejection> {
    let params = parse_params(headers, body)?;
    let token = require_str(&params, "token")?;
    match app.state.lock().valid_runner(&token) {
        Some(id) => Ok((token, id, params)),
        None => Err(Box::new(forbidden())),
    }
}

/// `POST /api/v4/runners`: creates a runner with a registration token.
pub(crate) async fn register(
    State(app): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params = match parse_params(&headers, &body) {
        Ok(p) => p,
        Err(resp) => return *resp,
    };
    let token = match require_str(&params, "token") {
        Ok(t) => t,
        Err(resp) => return *resp,
    };
    let mut st = app.state.lock();
    if st.registration.disallowed {
        return message(
            StatusCode::GONE,
            "410 Gone - runner registration disallowed",
        );
    }
    if !st.registration.registration_tokens.contains(&token) {
        return message(
            StatusCode::FORBIDDEN,
            "403 Forbidden - invalid token supplied",
        );
    }
    st.next_runner_id += 1;
    let id = st.next_runner_id;
    let runner_token = new_runner_token("glrtr-");
    let expires = issue(&mut st, &runner_token, id);
    let mut recorded = params.clone();
    recorded.remove("token");
    st.registration.created.insert(id, Value::Object(recorded));
    json_response(
        StatusCode::CREATED,
        &json!({ "id": id, "token": runner_token, "token_expires_at": expires }),
    )
}

/// `POST /api/v4/runners/verify`: the runner's id, token and expiry; records the manager.
pub(crate) async fn verify(
    State(app): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match runner(&app, &headers, &body) {
        Ok((token, id, params)) => {
            let mut st = app.state.lock();
            if let Some(system_id) = params.get("system_id").and_then(Value::as_str) {
                let managers = st.registration.managers.entry(id).or_default();
                managers.insert(system_id.to_owned());
            }
            let expires = expiry(&st, &token);
            json_response(
                StatusCode::OK,
                &json!({ "id": id, "token": token, "token_expires_at": expires }),
            )
        }
        Err(resp) => *resp,
    }
}

/// `DELETE /api/v4/runners`: 204 and the runner is forgotten.
pub(crate) async fn delete_runner(
    State(app): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match runner(&app, &headers, &body) {
        Ok((token, id, _)) => {
            let mut st = app.state.lock();
            st.runners.remove(&token);
            st.registration.managers.remove(&id);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(resp) => *resp,
    }
}

/// `DELETE /api/v4/runners/managers`: 204 and the manager of `system_id` is forgotten (the
/// runner stays); 404 when the runner has no such manager.
pub(crate) async fn delete_manager(
    State(app): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (id, params) = match runner(&app, &headers, &body) {
        Ok((_, id, params)) => (id, params),
        Err(resp) => return *resp,
    };
    let system_id = match require_str(&params, "system_id") {
        Ok(s) => s,
        Err(resp) => return *resp,
    };
    let mut st = app.state.lock();
    let removed = st
        .registration
        .managers
        .get_mut(&id)
        .is_some_and(|m| m.remove(&system_id));
    if removed {
        StatusCode::NO_CONTENT.into_response()
    } else {
        message(StatusCode::NOT_FOUND, "404 Not Found")
    }
}

/// `POST /api/v4/runners/reset_authentication_token`: a new token; the old one is 403 from now.
pub(crate) async fn reset_token(
    State(app): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (old, id) = match runner(&app, &headers, &body) {
        Ok((token, id, _)) => (token, id),
        Err(resp) => return *resp,
    };
    let mut st = app.state.lock();
    let prefix = if old.starts_with("glrtr-") {
        "glrtr-"
    } else if old.starts_with("glrt-") {
        "glrt-"
    } else {
        ""
    };
    let new = new_runner_token(prefix);
    st.runners.remove(&old);
    st.registration.expires.remove(&old);
    let expires = issue(&mut st, &new, id);
    // Jobs waiting for the old token wait for the new one.
    if let Some(queue) = st.queues.remove(&old) {
        st.queues.insert(new.clone(), queue);
    }
    st.registration.replaced.insert(old, new.clone());
    json_response(
        StatusCode::CREATED,
        &json!({ "token": new, "token_expires_at": expires }),
    )
}

/// The admin side of registration, for tests.
impl GitlabHandle {
    /// Makes `token` a legacy registration token `POST /runners` accepts.
    pub fn add_registration_token(&self, token: &str) {
        let mut st = self.shared.state.lock();
        st.registration.registration_tokens.insert(token.to_owned());
    }

    /// Makes `POST /runners` answer 410 "runner registration disallowed".
    pub fn disallow_registration(&self) {
        self.shared.state.lock().registration.disallowed = true;
    }

    /// Tokens issued from now on (registration, reset) expire after `ttl`.
    pub fn set_token_ttl(&self, ttl: std::time::Duration) {
        let ttl = chrono::TimeDelta::from_std(ttl).unwrap_or(chrono::TimeDelta::MAX);
        self.shared.state.lock().registration.token_ttl = Some(ttl);
    }

    /// Registers runner `token` (as `add_runner`) with an expiry: 403 after `expires_at`.
    pub fn add_runner_expiring(&self, token: &str, expires_at: chrono::DateTime<chrono::Utc>) {
        self.add_runner(token);
        let mut st = self.shared.state.lock();
        st.registration.expires.insert(token.to_owned(), expires_at);
    }

    /// The runner id of a valid token.
    pub fn runner_id(&self, token: &str) -> Option<i64> {
        self.shared.state.lock().valid_runner(token)
    }

    /// The runner's token now (after any resets) given any token it ever had.
    pub fn current_runner_token(&self, token: &str) -> String {
        current_token(&self.shared.state.lock(), token)
    }

    /// Deletes the runner of `token` in GitLab (an admin removing it in the UI).
    pub fn delete_runner(&self, token: &str) {
        let mut st = self.shared.state.lock();
        if let Some(id) = st.runners.remove(token) {
            st.registration.managers.remove(&id);
        }
    }

    /// Whether runner id `id` still exists (not unregistered).
    pub fn runner_exists(&self, id: i64) -> bool {
        self.shared.state.lock().runners.values().any(|v| *v == id)
    }

    /// The runner managers (system ids) of runner `id`.
    pub fn runner_managers(&self, id: i64) -> Vec<String> {
        let st = self.shared.state.lock();
        st.registration
            .managers
            .get(&id)
            .map(|m| m.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The `POST /runners` parameters (without the token) runner `id` was created with.
    pub fn created_runner(&self, id: i64) -> Option<Value> {
        self.shared
            .state
            .lock()
            .registration
            .created
            .get(&id)
            .cloned()
    }
}
