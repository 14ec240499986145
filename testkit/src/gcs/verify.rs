//! Checks a V4 signed URL request as Cloud Storage does: the algorithm, the credential scope, the
//! date and expiry, the signed headers (every signed header present, every `x-goog-*` header
//! signed), then the RSA-SHA256 signature over the canonical request rebuilt from what arrived,
//! against the service account's public key. Failures carry GCS's XML error codes.

use std::collections::HashMap;

use axum::http::{HeaderMap, Method, StatusCode};
use chrono::{DateTime, NaiveDateTime, Utc};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// RFC 3986 unreserved characters stay; everything else is encoded (query values).
const QUERY: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A refusal: HTTP status, GCS error code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The HTTP status.
    pub status: StatusCode,
    /// GCS's `<Code>`.
    pub code: &'static str,
    /// GCS's `<Message>`.
    pub message: String,
}

impl Refusal {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Refusal {
            status,
            code,
            message: message.into(),
        }
    }

    fn mismatch(message: impl Into<String>) -> Self {
        Refusal::new(StatusCode::FORBIDDEN, "SignatureDoesNotMatch", message)
    }
}

/// What a verified request was signed by and for.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The service account email.
    pub account: String,
    /// The signed header names (lowercase).
    pub signed_headers: Vec<String>,
}

/// Verifies the signed URL request (`raw_path` and `raw_query` exactly as received).
pub fn verify(
    method: &Method,
    raw_path: &str,
    raw_query: &str,
    headers: &HeaderMap,
    now: DateTime<Utc>,
    public_key: impl Fn(&str) -> Option<Vec<u8>>,
) -> Result<Verified, Refusal> {
    let mut params: HashMap<String, String> = HashMap::new();
    let mut canonical: Vec<(String, String)> = Vec::new();
    for pair in raw_query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = decode(k);
        let v = decode(v);
        if k != "X-Goog-Signature" {
            canonical.push((encode(&k), encode(&v)));
        }
        params.insert(k, v);
    }
    let param = |name: &str| {
        params.get(name).cloned().ok_or_else(|| {
            Refusal::new(
                StatusCode::BAD_REQUEST,
                "AuthorizationQueryParametersError",
                format!("Query parameter {name} is missing."),
            )
        })
    };
    let algorithm = param("X-Goog-Algorithm")?;
    if algorithm != "GOOG4-RSA-SHA256" {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "AuthorizationQueryParametersError",
            format!("Unsupported algorithm {algorithm}."),
        ));
    }
    let credential = param("X-Goog-Credential")?;
    let date_time = param("X-Goog-Date")?;
    let expires: i64 = param("X-Goog-Expires")?.parse().map_err(|_| {
        Refusal::new(
            StatusCode::BAD_REQUEST,
            "AuthorizationQueryParametersError",
            "X-Goog-Expires is not a number.",
        )
    })?;
    if !(1..=604_800).contains(&expires) {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "AuthorizationQueryParametersError",
            "X-Goog-Expires must be between 1 and 604800 seconds.",
        ));
    }
    let signed_headers_param = param("X-Goog-SignedHeaders")?;
    let signature_hex = param("X-Goog-Signature")?;

    let mut parts = credential.splitn(2, '/');
    let account = parts.next().unwrap_or_default().to_string();
    let scope = parts.next().unwrap_or_default();
    let signed_at = NaiveDateTime::parse_from_str(&date_time, "%Y%m%dT%H%M%SZ")
        .map_err(|_| {
            Refusal::new(
                StatusCode::BAD_REQUEST,
                "AuthorizationQueryParametersError",
                "X-Goog-Date is malformed.",
            )
        })?
        .and_utc();
    let expected_scope = format!("{}/auto/storage/goog4_request", &date_time[..8]);
    if scope != expected_scope {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "AuthorizationQueryParametersError",
            format!("Credential scope {scope:?} is not {expected_scope:?}."),
        ));
    }
    if now > signed_at + chrono::Duration::seconds(expires) {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "ExpiredToken",
            "Invalid argument: the signed URL has expired.",
        ));
    }
    if signed_at > now + chrono::Duration::minutes(15) {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "RequestNotYetValid",
            "The signed URL's X-Goog-Date is in the future.",
        ));
    }

    let signed_headers: Vec<String> = signed_headers_param
        .split(';')
        .map(str::to_string)
        .collect();
    if !signed_headers.iter().any(|h| h == "host") {
        return Err(Refusal::mismatch("The host header must be signed."));
    }
    for name in headers.keys() {
        let name = name.as_str();
        if name.starts_with("x-goog-") && !signed_headers.iter().any(|h| h == name) {
            return Err(Refusal::mismatch(format!(
                "Header {name} was sent but not signed."
            )));
        }
    }
    let mut canonical_headers = String::new();
    for name in &signed_headers {
        let values: Vec<String> = headers
            .get_all(name.as_str())
            .iter()
            .map(|v| {
                String::from_utf8_lossy(v.as_bytes())
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        if values.is_empty() {
            return Err(Refusal::mismatch(format!(
                "Signed header {name} is missing from the request."
            )));
        }
        canonical_headers.push_str(&format!("{name}:{}\n", values.join(",")));
    }
    canonical.sort();
    let query = canonical
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let canonical_request = format!(
        "{method}\n{raw_path}\n{query}\n{canonical_headers}\n{signed_headers_param}\nUNSIGNED-PAYLOAD"
    );
    let hash = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical_request.as_bytes());
    let string_to_sign = format!(
        "GOOG4-RSA-SHA256\n{date_time}\n{scope}\n{}",
        hex::encode(hash.as_ref())
    );
    let Some(key) = public_key(&account) else {
        return Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "AccessDenied",
            format!("{account} does not have storage.objects access."),
        ));
    };
    let signature = hex::decode(&signature_hex)
        .map_err(|_| Refusal::mismatch("X-Goog-Signature is not hex."))?;
    if !super::account::verify(&key, string_to_sign.as_bytes(), &signature) {
        return Err(Refusal::mismatch(format!(
            "The request signature we calculated does not match the signature you provided. \
             StringToSign: {string_to_sign:?}"
        )));
    }
    Ok(Verified {
        account,
        signed_headers,
    })
}

fn decode(s: &str) -> String {
    percent_decode_str(&s.replace('+', "%20"))
        .decode_utf8_lossy()
        .into_owned()
}

fn encode(s: &str) -> String {
    utf8_percent_encode(s, QUERY).to_string()
}
