//! The TLS file variables a job gets from its runner's `tls-ca-file` / `tls-cert-file` /
//! `tls-key-file` (GitLab Runner's `Build.GetCITLSVariables`): `CI_SERVER_TLS_CA_FILE` with the
//! CA certificates, and `CI_SERVER_TLS_CERT_FILE` with `CI_SERVER_TLS_KEY_FILE` for the client
//! pair, all file variables (the job sees a path). The helper's git uses them for the
//! repository's host (`executor/git/remote.rs`). Owns only reading the files for a job.

use crate::config::TlsFiles;
use crate::job::JobVariable;
use std::path::Path;

fn file_variable(key: &str, path: &Path, public: bool) -> Option<JobVariable> {
    match std::fs::read_to_string(path) {
        Ok(value) if !value.trim().is_empty() => Some(JobVariable {
            key: key.into(),
            value,
            public,
            file: true,
            raw: true,
            ..JobVariable::default()
        }),
        Ok(_) => None,
        Err(e) => {
            tracing::warn!(variable = key, file = %path.display(), error = %e, "cannot read the runner's TLS file for the job");
            None
        }
    }
}

/// The variables, in GitLab Runner's order; none for a runner without TLS files. The key is
/// not public, as in GitLab Runner.
pub(super) fn tls_variables(files: &TlsFiles) -> Vec<JobVariable> {
    let mut vars = Vec::new();
    if let Some(ca) = &files.ca_file {
        vars.extend(file_variable("CI_SERVER_TLS_CA_FILE", ca, true));
    }
    if let (Some(cert), Some(key)) = (&files.cert_file, &files.key_file) {
        let pair = (
            file_variable("CI_SERVER_TLS_CERT_FILE", cert, true),
            file_variable("CI_SERVER_TLS_KEY_FILE", key, false),
        );
        if let (Some(cert), Some(key)) = pair {
            vars.push(cert);
            vars.push(key);
        }
    }
    vars
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_and_pair_become_file_variables() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (ca, cert, key) = (
            dir.path().join("ca.pem"),
            dir.path().join("c.pem"),
            dir.path().join("k.pem"),
        );
        for (p, text) in [
            (&ca, "CA PEM\n"),
            (&cert, "CERT PEM\n"),
            (&key, "KEY PEM\n"),
        ] {
            std::fs::write(p, text).expect("write");
        }
        let vars = tls_variables(&TlsFiles {
            ca_file: Some(ca.clone()),
            cert_file: Some(cert),
            key_file: Some(key),
        });
        let keys: Vec<_> = vars
            .iter()
            .map(|v| (v.key.as_str(), v.file, v.public))
            .collect();
        assert_eq!(
            keys,
            [
                ("CI_SERVER_TLS_CA_FILE", true, true),
                ("CI_SERVER_TLS_CERT_FILE", true, true),
                ("CI_SERVER_TLS_KEY_FILE", true, false)
            ]
        );
        assert_eq!(vars[0].value, "CA PEM\n");
        assert!(tls_variables(&TlsFiles::default()).is_empty());
        let only_ca = tls_variables(&TlsFiles {
            ca_file: Some(ca),
            ..TlsFiles::default()
        });
        assert_eq!(only_ca.len(), 1);
    }
}
