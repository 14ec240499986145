//! `tls-ca-file`, `tls-cert-file` and `tls-key-file` of a `[[runners]]` entry (GitLab Runner's
//! `RunnerCredentials` keys): the files that secure the connection to GitLab. Owns their
//! reading and checking; only the paths are kept (the coordinator reads the files when it
//! builds the runner's HTTP client, so a key never sits in the configuration or its Debug).

use super::diag::Diagnostics;
use super::toml_read::{string, Field, Scope};
use std::path::PathBuf;

/// The TLS files of one runner toward GitLab; all `None`: the system's roots, no client
/// certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct TlsFiles {
    /// `tls-ca-file`: PEM certificates trusted for GitLab's server certificate (besides the
    /// system's roots); also handed to jobs as `CI_SERVER_TLS_CA_FILE` for git.
    pub ca_file: Option<PathBuf>,
    /// `tls-cert-file`: PEM client certificate (chain) presented to GitLab (mutual TLS).
    pub cert_file: Option<PathBuf>,
    /// `tls-key-file`: PEM private key of `cert_file`.
    pub key_file: Option<PathBuf>,
}

impl TlsFiles {
    /// Whether any file is set.
    pub fn is_set(&self) -> bool {
        self.ca_file.is_some() || self.cert_file.is_some() || self.key_file.is_some()
    }
}

/// The three keys as written.
#[derive(Default)]
pub(super) struct RawTls {
    ca: Option<Field<String>>,
    cert: Option<Field<String>>,
    key: Option<Field<String>>,
}

/// Reads the three keys of a `[[runners]]` table.
pub(super) fn read(d: &mut Diagnostics, s: &Scope<'_>) -> RawTls {
    RawTls {
        ca: string(d, s, "tls-ca-file"),
        cert: string(d, s, "tls-cert-file"),
        key: string(d, s, "tls-key-file"),
    }
}

/// The runner's files; a certificate without its key (or the reverse) is an error, as the
/// client could not present it. `runner_line` and `prefix` place the problems.
pub(super) fn build(d: &mut Diagnostics, r: RawTls, runner_line: usize, prefix: &str) -> TlsFiles {
    let path = |f: Option<Field<String>>| {
        f.map(|f| f.value.trim().to_string())
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let line = |f: &Option<Field<String>>| f.as_ref().map_or(runner_line, |f| f.line);
    let (cert_line, key_line) = (line(&r.cert), line(&r.key));
    let files = TlsFiles {
        ca_file: path(r.ca),
        cert_file: path(r.cert),
        key_file: path(r.key),
    };
    match (&files.cert_file, &files.key_file) {
        (Some(_), None) => d.error(
            cert_line,
            &format!("{prefix}tls-cert-file"),
            "set without tls-key-file: a client certificate needs its key",
        ),
        (None, Some(_)) => d.error(
            key_line,
            &format!("{prefix}tls-key-file"),
            "set without tls-cert-file: a client key needs its certificate",
        ),
        _ => {}
    }
    files
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn runner(keys: &str) -> String {
        format!(
            "[[runners]]\nname = \"r\"\nurl = \"https://gitlab.example.com\"\ntoken = \"{}\"\nexecutor = \"docker\"\n{keys}\n",
            format_args!("glrt-{}", "t".repeat(20))
        )
    }

    #[test]
    fn files_load_without_warnings_and_a_lone_half_of_the_pair_is_an_error() {
        let loaded = Config::from_toml_str(
            &runner(
                "tls-ca-file = \"/ca.crt\"\ntls-cert-file = \"/c.pem\"\ntls-key-file = \"/k.pem\"",
            ),
            "t.toml",
        )
        .expect("loads");
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        let tls = &loaded.config.runners[0].tls;
        assert_eq!(
            tls.ca_file.as_deref(),
            Some(std::path::Path::new("/ca.crt"))
        );
        assert!(tls.is_set());
        let empty = Config::from_toml_str(&runner("tls-ca-file = \"\""), "t.toml").expect("loads");
        assert!(!empty.config.runners[0].tls.is_set());
        let e = Config::from_toml_str(&runner("tls-cert-file = \"/c.pem\""), "t.toml")
            .expect_err("a certificate without its key")
            .to_string();
        assert!(
            e.contains("tls-cert-file") && e.contains("tls-key-file"),
            "{e}"
        );
    }
}
