//! Google Cloud Storage V4 signed URLs (`GOOG4-RSA-SHA256`), as Google documents them
//! ("Signing process for V4 signed URLs"): the canonical request, the string to sign, and the
//! URL with its query parameters. Pure functions; the signature itself comes from the caller
//! (a private key, or IAM `signBlob`).

use chrono::{DateTime, Utc};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// The algorithm name in the URL and the string to sign.
pub const ALGORITHM: &str = "GOOG4-RSA-SHA256";

/// The longest validity Google accepts (7 days).
pub const MAX_EXPIRES_SECS: u64 = 604_800;

/// Characters left as they are in query values: RFC 3986 unreserved.
const QUERY: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Characters left as they are in the path: unreserved and `/`.
const PATH: &AsciiSet = &QUERY.remove(b'/');

/// What to sign.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// `GET`, `HEAD` or `PUT`.
    pub method: &'a str,
    /// The endpoint (`https://storage.googleapis.com`), without a trailing `/`.
    pub endpoint: &'a str,
    /// The bucket.
    pub bucket: &'a str,
    /// The object name (not encoded).
    pub object: &'a str,
    /// Headers the client must send, besides `host` (names in any case).
    pub headers: &'a [(String, String)],
    /// The service account email.
    pub access_id: &'a str,
    /// When the signature is made.
    pub now: DateTime<Utc>,
    /// How long the URL is valid, in seconds (clamped to [`MAX_EXPIRES_SECS`]).
    pub expires_secs: u64,
}

/// A request ready to sign: its string to sign, and what the URL is made of.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The string the signature is computed over.
    pub string_to_sign: String,
    /// The canonical request (for tests and debugging; holds no secret).
    pub canonical_request: String,
    base: String,
    query: String,
}

impl Prepared {
    /// The signed URL for a signature (raw bytes of the RSA-SHA256 signature).
    pub fn url(&self, signature: &[u8]) -> String {
        format!(
            "{}?{}&X-Goog-Signature={}",
            self.base,
            self.query,
            hex::encode(signature)
        )
    }
}

/// The `host` an endpoint URL names (authority without user info).
fn host_of(endpoint: &str) -> &str {
    let rest = endpoint
        .split_once("://")
        .map_or(endpoint, |(_, rest)| rest);
    rest.split('/').next().unwrap_or(rest)
}

/// The path prefix an endpoint URL carries (usually empty).
fn path_prefix_of(endpoint: &str) -> &str {
    let rest = endpoint
        .split_once("://")
        .map_or(endpoint, |(_, rest)| rest);
    rest.find('/')
        .map_or("", |i| rest[i..].trim_end_matches('/'))
}

/// Builds the canonical request and the string to sign for `req`.
pub fn prepare(req: &Request<'_>) -> Prepared {
    let datetime = req.now.format("%Y%m%dT%H%M%SZ").to_string();
    let date = req.now.format("%Y%m%d").to_string();
    let scope = format!("{date}/auto/storage/goog4_request");
    let host = host_of(req.endpoint);

    let mut headers: Vec<(String, String)> = req
        .headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), canonical_header_value(v)))
        .filter(|(k, _)| k != "host")
        .collect();
    headers.push(("host".into(), host.to_string()));
    headers.sort();
    let signed_headers = headers
        .iter()
        .map(|(k, _)| k.as_str())
        .collect::<Vec<_>>()
        .join(";");
    let canonical_headers: String = headers.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();

    let credential = format!("{}/{scope}", req.access_id);
    let mut query = [
        ("X-Goog-Algorithm", ALGORITHM.to_string()),
        ("X-Goog-Credential", credential),
        ("X-Goog-Date", datetime.clone()),
        (
            "X-Goog-Expires",
            req.expires_secs.clamp(1, MAX_EXPIRES_SECS).to_string(),
        ),
        ("X-Goog-SignedHeaders", signed_headers.clone()),
    ]
    .into_iter()
    .map(|(k, v)| (encode_query(k), encode_query(&v)))
    .collect::<Vec<_>>();
    query.sort();
    let query = query
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");

    let path = format!(
        "{}/{}/{}",
        path_prefix_of(req.endpoint),
        encode_path(req.bucket),
        encode_path(req.object)
    );
    let canonical_request = format!(
        "{}\n{path}\n{query}\n{canonical_headers}\n{signed_headers}\nUNSIGNED-PAYLOAD",
        req.method
    );
    let hash = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical_request.as_bytes());
    let string_to_sign = format!(
        "{ALGORITHM}\n{datetime}\n{scope}\n{}",
        hex::encode(hash.as_ref())
    );
    let scheme_and_host = &req.endpoint[..req.endpoint.len() - path_prefix_of(req.endpoint).len()];
    Prepared {
        string_to_sign,
        canonical_request,
        base: format!("{}{path}", scheme_and_host.trim_end_matches('/')),
        query,
    }
}

/// A header value as canonical headers carry it: trimmed, inner whitespace runs made one space.
fn canonical_header_value(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn encode_query(s: &str) -> String {
    utf8_percent_encode(s, QUERY).to_string()
}

fn encode_path(s: &str) -> String {
    utf8_percent_encode(s, PATH).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn request<'a>(headers: &'a [(String, String)]) -> Request<'a> {
        Request {
            method: "PUT",
            endpoint: "https://storage.googleapis.com",
            bucket: "example-bucket",
            object: "runner/abc/project/1/my key",
            headers,
            access_id: "sa@project.iam.gserviceaccount.com",
            now: Utc.with_ymd_and_hms(2019, 2, 1, 9, 0, 0).unwrap(),
            expires_secs: 900,
        }
    }

    #[test]
    fn canonical_request_follows_googles_layout() {
        let headers = vec![
            (
                "Content-Type".to_string(),
                "application/octet-stream".to_string(),
            ),
            (
                "X-Goog-Meta-Cachekey".to_string(),
                "  my   key ".to_string(),
            ),
        ];
        let p = prepare(&request(&headers));
        let expected = "PUT\n\
            /example-bucket/runner/abc/project/1/my%20key\n\
            X-Goog-Algorithm=GOOG4-RSA-SHA256\
            &X-Goog-Credential=sa%40project.iam.gserviceaccount.com%2F20190201%2Fauto%2Fstorage%2Fgoog4_request\
            &X-Goog-Date=20190201T090000Z&X-Goog-Expires=900\
            &X-Goog-SignedHeaders=content-type%3Bhost%3Bx-goog-meta-cachekey\n\
            content-type:application/octet-stream\n\
            host:storage.googleapis.com\n\
            x-goog-meta-cachekey:my key\n\
            \n\
            content-type;host;x-goog-meta-cachekey\n\
            UNSIGNED-PAYLOAD";
        assert_eq!(p.canonical_request, expected);
        let lines: Vec<&str> = p.string_to_sign.lines().collect();
        assert_eq!(lines[0], "GOOG4-RSA-SHA256");
        assert_eq!(lines[1], "20190201T090000Z");
        assert_eq!(lines[2], "20190201/auto/storage/goog4_request");
        assert_eq!(lines[3].len(), 64);
        let url = p.url(&[0xab, 0xcd]);
        assert!(url.starts_with(
            "https://storage.googleapis.com/example-bucket/runner/abc/project/1/my%20key?X-Goog-Algorithm="
        ));
        assert!(url.ends_with("&X-Goog-Signature=abcd"), "{url}");
    }

    #[test]
    fn endpoint_with_port_and_path_and_clamped_expiry() {
        let mut req = request(&[]);
        req.endpoint = "http://127.0.0.1:8080/storage";
        req.method = "GET";
        req.expires_secs = 30 * 86_400;
        let p = prepare(&req);
        assert!(p.canonical_request.contains("\nhost:127.0.0.1:8080\n"));
        assert!(p
            .canonical_request
            .starts_with("GET\n/storage/example-bucket/runner/abc/project/1/my%20key\n"));
        assert!(p.canonical_request.contains("X-Goog-Expires=604800"));
        assert!(p
            .url(&[1])
            .starts_with("http://127.0.0.1:8080/storage/example-bucket/"));
    }
}
