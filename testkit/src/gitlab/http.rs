//! Request and response helpers shared by the fake GitLab's handlers: parsing a body the way
//! Grape does (JSON by `Content-Type`), Grape's and Rails' error bodies, and the `token`
//! parameter check. No state is touched here.

use axum::body::Bytes;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

/// Request parameters parsed from a body.
pub(crate) type Params = Map<String, Value>;

/// An early answer to a request that failed validation (boxed: responses are large).
pub(crate) type Rejection = Box<Response>;

/// `{"message": msg}` with `status`, as Rails' `error!`/`forbidden!` render.
pub(crate) fn message(status: StatusCode, msg: &str) -> Response {
    json_response(status, &json!({ "message": msg }))
}

/// A JSON body with `Content-Type: application/json`.
pub(crate) fn json_response(status: StatusCode, body: &Value) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    (
        status,
        [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        bytes,
    )
        .into_response()
}

/// Grape's parameter validation failure: 400 `{"error": msg}`.
pub(crate) fn grape_error(msg: &str) -> Response {
    json_response(StatusCode::BAD_REQUEST, &json!({ "error": msg }))
}

/// 403 `{"message": "403 Forbidden"}` (bad token, unknown job: nothing more is said).
pub(crate) fn forbidden() -> Response {
    message(StatusCode::FORBIDDEN, "403 Forbidden")
}

/// An injected fault's answer: `status` with a Rails-style message body.
pub(crate) fn injected(status: u16) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let text = format!(
        "{} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("Injected")
    );
    message(status, &text)
}

/// Parses a request body as Grape would for these endpoints: `application/json` bodies are
/// parsed (an empty one gives no parameters; invalid JSON or a non-object is 400);
/// `text/plain` has no parser, so its body gives no parameters (and the endpoint then reports
/// the missing `token`); any other or missing `Content-Type` is 415. Form-encoded bodies, which
/// Rack would parse, are refused too: GitLab Runner never sends them.
pub(crate) fn parse_params(headers: &HeaderMap, body: &Bytes) -> Result<Params, Rejection> {
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match mime.as_str() {
        "application/json" => {
            if body.iter().all(u8::is_ascii_whitespace) {
                return Ok(Params::new());
            }
            match serde_json::from_slice::<Value>(body) {
                Ok(Value::Object(map)) => Ok(map),
                Ok(_) => Err(Box::new(grape_error("body must be a JSON object"))),
                Err(e) => Err(Box::new(message(
                    StatusCode::BAD_REQUEST,
                    &format!("400 Bad request - invalid JSON: {e}"),
                ))),
            }
        }
        "text/plain" => Ok(Params::new()),
        _ => Err(Box::new(json_response(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            &json!({ "error": format!("The provided content-type '{content_type}' is not supported.") }),
        ))),
    }
}

/// The required string parameter `name`: 400 `"<name> is missing"` / `"<name> is invalid"`.
pub(crate) fn require_str(params: &Params, name: &str) -> Result<String, Rejection> {
    match params.get(name) {
        None | Some(Value::Null) => Err(Box::new(grape_error(&format!("{name} is missing")))),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        Some(_) => Err(Box::new(grape_error(&format!("{name} is invalid")))),
    }
}

/// `Job-Status: status` as a header pair.
pub(crate) fn job_status(status: &'static str) -> (&'static str, HeaderValue) {
    ("job-status", HeaderValue::from_static(status))
}

/// A header value from a string we built (digits, tokens); falls back to empty.
pub(crate) fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(content_type: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(CONTENT_TYPE, HeaderValue::from_str(content_type).unwrap());
        h
    }

    #[test]
    fn parses_like_grape() {
        let body = Bytes::from_static(br#"{"token":"t"}"#);
        let p = parse_params(&headers("application/json; charset=utf-8"), &body).unwrap();
        assert_eq!(require_str(&p, "token").unwrap(), "t");
        let p = parse_params(&headers("text/plain"), &body).unwrap();
        assert!(require_str(&p, "token").is_err());
        let err = parse_params(&HeaderMap::new(), &body).unwrap_err();
        assert_eq!(err.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        let err =
            parse_params(&headers("application/json"), &Bytes::from_static(b"{")).unwrap_err();
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
    }
}
