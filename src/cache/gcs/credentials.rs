//! Who signs cache URLs: a service account private key (from `CredentialsFile` or
//! `AccessID` + `PrivateKey`), or the metadata server's service account through IAM Credentials
//! `signBlob`. RSA signing uses aws-lc-rs (already the TLS crypto provider), not a second RSA
//! implementation.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{RsaKeyPair, RSA_PKCS1_SHA256};
use base64::Engine as _;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::PrivateKeyDer;
use serde::Deserialize;

use super::GcsError;
use crate::config::{GcsCacheConfig, GcsCredentials};

/// A resolved signer: a key pair, or the metadata server's account. `Debug` shows no key.
pub enum SigningKey {
    /// Sign locally with the service account's private key.
    Local {
        /// The service account email.
        access_id: String,
        /// Its RSA key.
        key: RsaKeyPair,
    },
    /// Sign through IAM Credentials `signBlob` as the metadata server's service account.
    Iam {
        /// The service account email the metadata server names.
        access_id: String,
    },
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SigningKey::Local { access_id, .. } => {
                write!(f, "SigningKey::Local({access_id}, [key])")
            }
            SigningKey::Iam { access_id } => write!(f, "SigningKey::Iam({access_id})"),
        }
    }
}

impl SigningKey {
    /// The service account email (`X-Goog-Credential`).
    pub fn access_id(&self) -> &str {
        match self {
            SigningKey::Local { access_id, .. } | SigningKey::Iam { access_id } => access_id,
        }
    }

    /// Parses a PEM RSA private key (PKCS#8 as in key files, or PKCS#1).
    pub fn from_pem(access_id: &str, pem: &str) -> Result<SigningKey, GcsError> {
        // The parser's error may quote the input: say only what kind of problem it was.
        let der = PrivateKeyDer::from_pem_slice(pem.as_bytes())
            .map_err(|_| GcsError::PrivateKey("not a PEM private key".into()))?;
        let key = match &der {
            PrivateKeyDer::Pkcs8(k) => RsaKeyPair::from_pkcs8(k.secret_pkcs8_der()),
            PrivateKeyDer::Pkcs1(k) => RsaKeyPair::from_der(k.secret_pkcs1_der()),
            _ => {
                return Err(GcsError::PrivateKey(
                    "not an RSA key (PKCS#8 or PKCS#1 expected)".into(),
                ))
            }
        }
        .map_err(|e| GcsError::PrivateKey(format!("rejected: {e}")))?;
        Ok(SigningKey::Local {
            access_id: access_id.to_string(),
            key,
        })
    }

    /// The RSA-SHA256 (PKCS#1 v1.5) signature of `message`.
    pub async fn sign(
        &self,
        message: &[u8],
        config: &GcsCacheConfig,
        http: &reqwest::Client,
    ) -> Result<Vec<u8>, GcsError> {
        match self {
            SigningKey::Local { key, .. } => {
                let mut signature = vec![0; key.public_modulus_len()];
                key.sign(
                    &RSA_PKCS1_SHA256,
                    &SystemRandom::new(),
                    message,
                    &mut signature,
                )
                .map_err(|_| GcsError::PrivateKey("signing failed".into()))?;
                Ok(signature)
            }
            SigningKey::Iam { access_id } => sign_blob(config, http, access_id, message).await,
        }
    }
}

/// A service account key file (the fields GitLab Runner reads).
#[derive(Deserialize)]
struct KeyFile {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    client_email: String,
    #[serde(default)]
    private_key: String,
}

/// Resolves the configured credentials into a signer.
pub(super) async fn resolve(
    config: &GcsCacheConfig,
    http: &reqwest::Client,
) -> Result<SigningKey, GcsError> {
    match &config.credentials {
        GcsCredentials::File(path) => {
            let shown = path.display().to_string();
            let file_error = |message: String| GcsError::CredentialsFile {
                path: shown.clone(),
                message,
            };
            let text = tokio::fs::read_to_string(path)
                .await
                .map_err(|e| file_error(format!("cannot read: {e}")))?;
            let file: KeyFile = serde_json::from_str(&text)
                .map_err(|e| file_error(format!("not a key file: {e}")))?;
            if file.kind != "service_account" {
                return Err(file_error(format!(
                    "unsupported credentials file type {:?} (a service account key is needed)",
                    file.kind
                )));
            }
            SigningKey::from_pem(&file.client_email, &file.private_key)
        }
        GcsCredentials::Key {
            access_id,
            private_key,
        } => SigningKey::from_pem(access_id, private_key.expose()),
        GcsCredentials::MetadataServer => {
            let access_id = metadata_get(config, http, "instance/service-accounts/default/email")
                .await?
                .trim()
                .to_string();
            Ok(SigningKey::Iam { access_id })
        }
    }
}

/// GET from the metadata server (`Metadata-Flavor: Google`).
async fn metadata_get(
    config: &GcsCacheConfig,
    http: &reqwest::Client,
    path: &str,
) -> Result<String, GcsError> {
    let remote = |message: String| GcsError::Remote {
        what: "metadata server",
        message,
    };
    let url = format!("{}/computeMetadata/v1/{path}", config.metadata_endpoint);
    let response = http
        .get(&url)
        .header("Metadata-Flavor", "Google")
        .send()
        .await
        .map_err(|e| remote(format!("GET {path}: {}", e.without_url())))?;
    let status = response.status();
    if !status.is_success() {
        return Err(remote(format!("GET {path}: HTTP {status}")));
    }
    response
        .text()
        .await
        .map_err(|e| remote(format!("GET {path}: {}", e.without_url())))
}

#[derive(Deserialize)]
struct Token {
    access_token: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SignBlobResponse {
    signed_blob: String,
}

/// IAM Credentials `signBlob` as `access_id`, authorized by the metadata server's token.
async fn sign_blob(
    config: &GcsCacheConfig,
    http: &reqwest::Client,
    access_id: &str,
    message: &[u8],
) -> Result<Vec<u8>, GcsError> {
    let token_text = metadata_get(config, http, "instance/service-accounts/default/token").await?;
    let token: Token = serde_json::from_str(&token_text).map_err(|e| GcsError::Remote {
        what: "metadata server",
        message: format!("token answer is not JSON with access_token: {e}"),
    })?;
    let remote = |message: String| GcsError::Remote {
        what: "IAM Credentials signBlob",
        message,
    };
    let b64 = base64::engine::general_purpose::STANDARD;
    let url = format!(
        "{}/v1/projects/-/serviceAccounts/{access_id}:signBlob",
        config.iam_endpoint
    );
    let response = http
        .post(&url)
        .bearer_auth(&token.access_token)
        .json(&serde_json::json!({ "payload": b64.encode(message) }))
        .send()
        .await
        .map_err(|e| remote(e.without_url().to_string()))?;
    let status = response.status();
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        let body: String = body.chars().take(300).collect();
        return Err(remote(format!("HTTP {status}: {body}")));
    }
    let answer: SignBlobResponse = response
        .json()
        .await
        .map_err(|e| remote(format!("answer is not JSON with signedBlob: {e}")))?;
    b64.decode(answer.signed_blob.as_bytes())
        .map_err(|e| remote(format!("signedBlob is not base64: {e}")))
}
