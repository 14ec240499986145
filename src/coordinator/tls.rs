//! The HTTP clients toward GitLab, one per set of TLS files (`tls-ca-file`, `tls-cert-file`,
//! `tls-key-file` of a runner, as GitLab Runner's `network/client.go`): the CA file's
//! certificates are trusted besides the system's roots, the certificate and key are presented
//! when GitLab asks for a client certificate. A client is built on first use and rebuilt when
//! one of its files changes (a renewed certificate applies without a restart). The files'
//! contents never reach a log, an error or `Debug`; errors name the key and the path.

use super::error::CoordinatorError;
use super::info::user_agent;
use crate::config::TlsFiles;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// The clients of one [`super::Coordinator`]: the plain one and one per set of TLS files.
pub(crate) struct Clients {
    plain: reqwest::Client,
    /// A std mutex: held only to look up or insert, never across an await.
    by_files: Mutex<HashMap<TlsFiles, Built>>,
}

struct Built {
    stamps: Vec<Option<SystemTime>>,
    client: reqwest::Client,
}

/// Longest wait for response headers: above the longest long-poll hold (GitLab Runner's
/// `ResponseHeaderTimeout`).
pub(crate) const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// Whole-request ceiling (`common.DefaultNetworkClientTimeout`).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60 * 60);

/// GitLab Runner's client settings, shared by every client: rustls, TLS ≥ 1.2, its timeouts.
fn builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .user_agent(user_agent())
        .connect_timeout(Duration::from_secs(30))
        .read_timeout(RESPONSE_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .tcp_keepalive(Duration::from_secs(30))
        .min_tls_version(reqwest::tls::Version::TLS_1_2)
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, CoordinatorError> {
    std::fs::read(path).map_err(|e| CoordinatorError::TlsFile {
        key,
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

fn invalid(key: &'static str, path: &Path, reason: impl std::fmt::Display) -> CoordinatorError {
    CoordinatorError::TlsFile {
        key,
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// A client for `files`, reading them now.
fn build(files: &TlsFiles) -> Result<reqwest::Client, CoordinatorError> {
    with_files(builder(), files)?
        .build()
        .map_err(CoordinatorError::Build)
}

/// `b` trusting `files`' CA and presenting its client pair, reading them now (also the helper
/// commands' artifacts client and `register`'s).
pub fn with_files(
    mut b: reqwest::ClientBuilder,
    files: &TlsFiles,
) -> Result<reqwest::ClientBuilder, CoordinatorError> {
    if let Some(ca) = &files.ca_file {
        let certs = reqwest::Certificate::from_pem_bundle(&read("tls-ca-file", ca)?)
            .map_err(|e| invalid("tls-ca-file", ca, e.without_url()))?;
        if certs.is_empty() {
            return Err(invalid("tls-ca-file", ca, "no PEM certificate in the file"));
        }
        b = b.tls_certs_merge(certs);
    }
    if let (Some(cert), Some(key)) = (&files.cert_file, &files.key_file) {
        let mut pem = read("tls-cert-file", cert)?;
        pem.push(b'\n');
        pem.extend(read("tls-key-file", key)?);
        // The error of a bad pair never quotes the PEM (reqwest's says only what is missing).
        let identity = reqwest::Identity::from_pem(&pem)
            .map_err(|e| invalid("tls-key-file", key, e.without_url()))?;
        b = b.identity(identity);
    }
    Ok(b)
}

/// The modification times of `files` (a missing file reads as `None`).
fn stamps(files: &TlsFiles) -> Vec<Option<SystemTime>> {
    [&files.ca_file, &files.cert_file, &files.key_file]
        .into_iter()
        .map(|p| {
            p.as_ref()
                .and_then(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        })
        .collect()
}

impl Clients {
    /// The plain client; the others come with their first use.
    pub(crate) fn new() -> Result<Clients, CoordinatorError> {
        Ok(Clients {
            plain: builder().build().map_err(CoordinatorError::Build)?,
            by_files: Mutex::default(),
        })
    }

    /// The client for `files`: the plain one when none is set; built (or rebuilt when a file
    /// changed) otherwise. A file that cannot be read or parsed is an error naming it.
    pub(crate) fn get(&self, files: &TlsFiles) -> Result<reqwest::Client, CoordinatorError> {
        if !files.is_set() {
            return Ok(self.plain.clone());
        }
        let now = stamps(files);
        if let Some(built) = self
            .by_files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(files)
            .filter(|b| b.stamps == now)
        {
            return Ok(built.client.clone());
        }
        let client = build(files)?;
        self.by_files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                files.clone(),
                Built {
                    stamps: now,
                    client: client.clone(),
                },
            );
        Ok(client)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_files_are_named_without_their_contents() {
        let dir = tempfile::tempdir().expect("tempdir");
        let clients = Clients::new().expect("clients");
        let missing = TlsFiles {
            ca_file: Some(dir.path().join("missing.crt")),
            ..TlsFiles::default()
        };
        let e = clients.get(&missing).expect_err("missing file").to_string();
        assert!(
            e.contains("tls-ca-file") && e.contains("missing.crt"),
            "{e}"
        );

        let secret = format!("not-a-key-{}", "s".repeat(12));
        let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        std::fs::write(&cert, "garbage").expect("write");
        std::fs::write(&key, &secret).expect("write");
        let pair = TlsFiles {
            cert_file: Some(cert),
            key_file: Some(key),
            ..TlsFiles::default()
        };
        let e = clients.get(&pair).expect_err("bad pair").to_string();
        assert!(e.contains("tls-key-file"), "{e}");
        assert!(!e.contains(&secret), "{e}");
        assert!(clients.get(&TlsFiles::default()).is_ok());
    }
}
