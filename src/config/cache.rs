//! `[runners.cache]` and `[runners.cache.gcs]`: where a runner keeps job caches. Reads the tables
//! (GitLab Runner's spelling: `Type`, `Path`, `Shared`, `MaxUploadedArchiveSize`, `BucketName`,
//! `CredentialsFile`, `AccessID`, `PrivateKey`) plus Flotilla's own endpoint keys, and validates
//! them into a [`CacheConfig`]. Knows nothing of how the cache is used (`crate::cache` does).
//!
//! Types: unset → the local cache volume; `gcs` → Google Cloud Storage through signed URLs;
//! `s3` and `azure` → not supported: one warning, and the local volume is used instead.

use std::path::PathBuf;

use toml_edit::Item;

use super::diag::Diagnostics;
use super::error::WarningKind;
use super::known_keys;
use super::secret::Secret;
use super::toml_read::{check_keys, get, integer, string, Field, Scope};

/// Google's production endpoints, the defaults of the endpoint keys.
const GCS_ENDPOINT: &str = "https://storage.googleapis.com";
const IAM_ENDPOINT: &str = "https://iamcredentials.googleapis.com";
const METADATA_ENDPOINT: &str = "http://metadata.google.internal";

/// `[runners.cache]`, validated.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CacheConfig {
    /// Where archives are kept.
    pub storage: CacheStorage,
    /// `Path`: a prefix of every object name.
    pub path: String,
    /// `Shared`: object names carry no `runner/<short token>` part, so runners share caches.
    pub shared: bool,
    /// `MaxUploadedArchiveSize` in bytes (0 = no limit).
    pub max_uploaded_archive_size: u64,
}

/// Where a runner's cache archives live.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum CacheStorage {
    /// A Docker volume per runner on the job's Docker host, mounted at `/cache` in the helper.
    #[default]
    Local,
    /// A Google Cloud Storage bucket (`Type = "gcs"`).
    Gcs(GcsCacheConfig),
}

/// `[runners.cache.gcs]`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct GcsCacheConfig {
    /// `BucketName`.
    pub bucket_name: String,
    /// Which credentials sign the URLs.
    pub credentials: GcsCredentials,
    /// Flotilla's `endpoint`: the storage XML API base URL (tests point it at the fake).
    pub endpoint: String,
    /// Flotilla's `iam_endpoint`: the IAM Credentials API base URL (for `signBlob`).
    pub iam_endpoint: String,
    /// Flotilla's `metadata_endpoint`: the metadata server base URL.
    pub metadata_endpoint: String,
}

/// The credentials that sign cache URLs, in GitLab Runner's order of preference.
#[derive(Debug, Clone, PartialEq)]
pub enum GcsCredentials {
    /// `CredentialsFile`: a service account key file (JSON, `type = "service_account"`).
    File(PathBuf),
    /// `AccessID` + `PrivateKey` (PEM).
    Key {
        /// The service account's email.
        access_id: String,
        /// The PEM private key.
        private_key: Secret,
    },
    /// Neither: the metadata server's service account signs through IAM `signBlob`.
    MetadataServer,
}

/// `[runners.cache]` as read from the file.
#[derive(Default)]
pub(super) struct RawCache {
    pub path: String,
    pub kind: Option<Field<String>>,
    pub prefix: Option<Field<String>>,
    pub shared: Option<Field<bool>>,
    pub max_uploaded_archive_size: Option<Field<i64>>,
    pub gcs: Option<RawGcsCache>,
}

/// `[runners.cache.gcs]` as read from the file.
#[derive(Default)]
pub(super) struct RawGcsCache {
    pub line: usize,
    pub path: String,
    pub bucket_name: Option<Field<String>>,
    pub credentials_file: Option<Field<String>>,
    pub access_id: Option<Field<String>>,
    pub private_key: Option<Field<String>>,
    pub endpoint: Option<Field<String>>,
    pub iam_endpoint: Option<Field<String>>,
    pub metadata_endpoint: Option<Field<String>>,
}

/// Reads `[runners.cache]` (the caller found the table).
pub(super) fn read(d: &mut Diagnostics, s: &Scope<'_>) -> RawCache {
    check_keys(d, s, &known_keys::CACHE);
    let gcs = s.sub_table(d, "gcs").map(|g| {
        check_keys(d, &g, &known_keys::CACHE_GCS);
        RawGcsCache {
            line: g.line,
            path: g.path.clone(),
            bucket_name: string(d, &g, "BucketName"),
            credentials_file: string(d, &g, "CredentialsFile"),
            access_id: string(d, &g, "AccessID"),
            private_key: string(d, &g, "PrivateKey"),
            endpoint: string(d, &g, "endpoint"),
            iam_endpoint: string(d, &g, "iam_endpoint"),
            metadata_endpoint: string(d, &g, "metadata_endpoint"),
        }
    });
    RawCache {
        path: s.path.clone(),
        kind: string(d, s, "Type"),
        prefix: string(d, s, "Path"),
        shared: get(d, s, "Shared", "a boolean", Item::as_bool),
        max_uploaded_archive_size: integer(d, s, "MaxUploadedArchiveSize"),
        gcs,
    }
}

/// Validates `[runners.cache]`; no table means the local cache volume.
pub(super) fn build(d: &mut Diagnostics, raw: Option<RawCache>) -> CacheConfig {
    let Some(raw) = raw else {
        return CacheConfig::default();
    };
    let p = |key: &str| format!("{}.{key}", raw.path);
    let max_uploaded_archive_size = match &raw.max_uploaded_archive_size {
        Some(f) if f.value < 0 => {
            d.error(
                f.line,
                &p("MaxUploadedArchiveSize"),
                "must not be negative (0 means no limit)",
            );
            0
        }
        Some(f) => f.value.unsigned_abs(),
        None => 0,
    };
    let storage = match raw.kind.as_ref().map(|f| (f.value.trim(), f.line)) {
        None | Some(("", _)) => CacheStorage::Local,
        Some(("gcs", line)) => match raw.gcs {
            Some(gcs) => gcs_config(d, gcs).map_or(CacheStorage::Local, CacheStorage::Gcs),
            None => {
                d.error(
                    line,
                    &p("gcs"),
                    "required with Type \"gcs\": a [runners.cache.gcs] table with BucketName",
                );
                CacheStorage::Local
            }
        },
        Some(("s3" | "azure", line)) => {
            d.warn(line, &p("Type"), WarningKind::CacheTypeNotSupported);
            CacheStorage::Local
        }
        Some((other, line)) => {
            d.error(
                line,
                &p("Type"),
                format!("unknown cache type {other:?}: use \"gcs\", or leave it unset for the local cache volume"),
            );
            CacheStorage::Local
        }
    };
    CacheConfig {
        storage,
        path: raw.prefix.map(|f| f.value).unwrap_or_default(),
        shared: raw.shared.is_some_and(|f| f.value),
        max_uploaded_archive_size,
    }
}

fn gcs_config(d: &mut Diagnostics, raw: RawGcsCache) -> Option<GcsCacheConfig> {
    let p = |key: &str| format!("{}.{key}", raw.path);
    let set = |f: Option<Field<String>>| f.filter(|f| !f.value.trim().is_empty());
    let bucket_name = match set(raw.bucket_name) {
        Some(f) => f.value.trim().to_string(),
        None => {
            d.error(
                raw.line,
                &p("BucketName"),
                "required: the bucket that holds the cache",
            );
            return None;
        }
    };
    let credentials = match (
        set(raw.credentials_file),
        set(raw.access_id),
        set(raw.private_key),
    ) {
        (Some(file), _, _) => GcsCredentials::File(PathBuf::from(file.value)),
        (None, Some(id), Some(key)) => GcsCredentials::Key {
            access_id: id.value.trim().to_string(),
            private_key: Secret(key.value),
        },
        (None, Some(f), None) => {
            d.error(
                f.line,
                &p("PrivateKey"),
                "required with AccessID (or give CredentialsFile, or neither to sign with the \
                 metadata server's service account)",
            );
            return None;
        }
        (None, None, Some(f)) => {
            d.error(f.line, &p("AccessID"), "required with PrivateKey");
            return None;
        }
        (None, None, None) => GcsCredentials::MetadataServer,
    };
    let mut endpoint = |f: Option<Field<String>>, key: &str, default: &str| match set(f) {
        None => Some(default.to_string()),
        Some(f) => {
            let value = f.value.trim().trim_end_matches('/').to_string();
            if value.starts_with("http://") || value.starts_with("https://") {
                Some(value)
            } else {
                d.error(
                    f.line,
                    &p(key),
                    format!(
                        "invalid URL {:?}: must start with http:// or https://",
                        f.value
                    ),
                );
                None
            }
        }
    };
    Some(GcsCacheConfig {
        bucket_name,
        credentials,
        endpoint: endpoint(raw.endpoint, "endpoint", GCS_ENDPOINT)?,
        iam_endpoint: endpoint(raw.iam_endpoint, "iam_endpoint", IAM_ENDPOINT)?,
        metadata_endpoint: endpoint(
            raw.metadata_endpoint,
            "metadata_endpoint",
            METADATA_ENDPOINT,
        )?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, ConfigError};

    fn load(cache: &str) -> Result<crate::config::Loaded, ConfigError> {
        let text = format!(
            "[[runners]]\nurl = \"https://gitlab.example\"\ntoken = \"t0ken-for-tests\"\n\
             executor = \"docker\"\n{cache}"
        );
        Config::from_toml_str(&text, "config.toml")
    }

    fn errors(cache: &str) -> Vec<String> {
        match load(cache) {
            Ok(_) => panic!("loaded: {cache}"),
            Err(e) => e.problems().iter().map(|p| p.to_string()).collect(),
        }
    }

    #[test]
    fn no_table_means_the_local_volume() {
        let loaded = load("").unwrap();
        assert_eq!(loaded.config.runners[0].cache, CacheConfig::default());
        assert_eq!(loaded.config.runners[0].cache.storage, CacheStorage::Local);
    }

    #[test]
    fn reads_gcs_with_a_credentials_file() {
        let loaded = load(
            "[runners.cache]\nType = \"gcs\"\nPath = \"ci\"\nShared = true\n\
             MaxUploadedArchiveSize = 1000\n[runners.cache.gcs]\nBucketName = \"b\"\n\
             CredentialsFile = \"/etc/key.json\"\nendpoint = \"http://127.0.0.1:9/\"\n",
        )
        .unwrap();
        let cache = &loaded.config.runners[0].cache;
        assert_eq!(cache.path, "ci");
        assert!(cache.shared);
        assert_eq!(cache.max_uploaded_archive_size, 1000);
        let CacheStorage::Gcs(gcs) = &cache.storage else {
            panic!("not gcs: {cache:?}");
        };
        assert_eq!(gcs.bucket_name, "b");
        assert_eq!(
            gcs.credentials,
            GcsCredentials::File("/etc/key.json".into())
        );
        assert_eq!(gcs.endpoint, "http://127.0.0.1:9");
        assert_eq!(gcs.iam_endpoint, IAM_ENDPOINT);
        assert_eq!(gcs.metadata_endpoint, METADATA_ENDPOINT);
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    }

    #[test]
    fn gcs_without_credentials_uses_the_metadata_server_and_hides_a_key() {
        let loaded =
            load("[runners.cache]\nType = \"gcs\"\n[runners.cache.gcs]\nBucketName = \"b\"\n")
                .unwrap();
        let CacheStorage::Gcs(gcs) = &loaded.config.runners[0].cache.storage else {
            panic!("not gcs");
        };
        assert_eq!(gcs.credentials, GcsCredentials::MetadataServer);
        let loaded = load(
            "[runners.cache]\nType = \"gcs\"\n[runners.cache.gcs]\nBucketName = \"b\"\n\
             AccessID = \"sa@p.iam.gserviceaccount.com\"\nPrivateKey = \"not-a-real-key\"\n",
        )
        .unwrap();
        let debug = format!("{:?}", loaded.config.runners[0].cache);
        assert!(debug.contains("sa@p.iam.gserviceaccount.com"), "{debug}");
        assert!(!debug.contains("not-a-real-key"), "{debug}");
    }

    #[test]
    fn bad_gcs_tables_are_errors() {
        let e = errors("[runners.cache]\nType = \"gcs\"\n");
        assert!(e[0].contains("runners[0].cache.gcs: required"), "{e:?}");
        let e = errors(
            "[runners.cache]\nType = \"gcs\"\n[runners.cache.gcs]\nCredentialsFile = \"/k\"\n",
        );
        assert!(
            e[0].contains("runners[0].cache.gcs.BucketName: required"),
            "{e:?}"
        );
        let e = errors(
            "[runners.cache]\nType = \"gcs\"\n[runners.cache.gcs]\nBucketName = \"b\"\nAccessID = \"a\"\n",
        );
        assert!(
            e[0].contains("cache.gcs.PrivateKey: required with AccessID"),
            "{e:?}"
        );
        let e = errors(
            "[runners.cache]\nType = \"gcs\"\n[runners.cache.gcs]\nBucketName = \"b\"\nendpoint = \"localhost\"\n",
        );
        assert!(e[0].contains("cache.gcs.endpoint: invalid URL"), "{e:?}");
        let e = errors("[runners.cache]\nType = \"ftp\"\n");
        assert!(
            e[0].contains("runners[0].cache.Type: unknown cache type \"ftp\""),
            "{e:?}"
        );
        let e = errors("[runners.cache]\nMaxUploadedArchiveSize = -1\n");
        assert!(e[0].contains("must not be negative"), "{e:?}");
        let e = errors("[runners.cache]\nType = \"gcs\"\n[runners.cache.gcs]\nBucketName = \"b\"\nBucketNme = \"c\"\n");
        assert!(e[0].contains("did you mean \"BucketName\""), "{e:?}");
    }

    #[test]
    fn s3_and_azure_warn_and_fall_back_to_the_local_volume() {
        for kind in ["s3", "azure"] {
            let loaded = load(&format!(
                "[runners.cache]\nType = \"{kind}\"\n[runners.cache.{kind}]\nBucketName = \"b\"\n"
            ))
            .unwrap();
            assert_eq!(loaded.config.runners[0].cache.storage, CacheStorage::Local);
            let warnings: Vec<String> = loaded.warnings.iter().map(|w| w.to_string()).collect();
            assert!(
                warnings
                    .iter()
                    .any(|w| w.contains("runners[0].cache.Type: ")
                        && w.contains("not supported")
                        && w.contains("local cache volume")),
                "{warnings:?}"
            );
        }
    }
}
