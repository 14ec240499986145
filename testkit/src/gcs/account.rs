//! Test service accounts: RSA key pairs generated at run time (never committed), with the key
//! file Google issues (`type = "service_account"`, `client_email`, `private_key` in PKCS#8 PEM).

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    KeyPair, RsaKeyPair, UnparsedPublicKey, RSA_PKCS1_2048_8192_SHA256, RSA_PKCS1_SHA256,
};
use base64::Engine as _;

/// A service account with a freshly generated 2048-bit RSA key.
pub struct TestServiceAccount {
    /// Its email (`client_email`, the `AccessID`).
    pub email: String,
    key: RsaKeyPair,
    pkcs8: Vec<u8>,
}

impl std::fmt::Debug for TestServiceAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TestServiceAccount({})", self.email)
    }
}

impl TestServiceAccount {
    /// Generates a key for `email`.
    pub fn generate(email: &str) -> anyhow::Result<Self> {
        let key = RsaKeyPair::generate(KeySize::Rsa2048)
            .map_err(|_| anyhow::anyhow!("generating an RSA key"))?;
        let pkcs8 = key
            .as_der()
            .map_err(|_| anyhow::anyhow!("encoding the RSA key"))?
            .as_ref()
            .to_vec();
        Ok(TestServiceAccount {
            email: email.to_string(),
            key,
            pkcs8,
        })
    }

    /// The private key in PEM (PKCS#8), as in a key file's `private_key`.
    pub fn private_key_pem(&self) -> String {
        let label = ["PRIVATE", "KEY"].join(" ");
        let b64 = base64::engine::general_purpose::STANDARD.encode(&self.pkcs8);
        let mut pem = format!("-----BEGIN {label}-----\n");
        for chunk in b64.as_bytes().chunks(64) {
            pem.push_str(&String::from_utf8_lossy(chunk));
            pem.push('\n');
        }
        pem.push_str(&format!("-----END {label}-----\n"));
        pem
    }

    /// A service account key file (JSON) as the Cloud console downloads it.
    pub fn key_file_json(&self) -> String {
        serde_json::json!({
            "type": "service_account",
            "project_id": "flotilla-test",
            "private_key_id": "0123456789abcdef",
            "private_key": self.private_key_pem(),
            "client_email": self.email,
            "client_id": "1",
            "token_uri": "https://oauth2.googleapis.com/token",
        })
        .to_string()
    }

    /// The public key (PKCS#1 `RSAPublicKey` DER).
    pub fn public_key_der(&self) -> Vec<u8> {
        self.key.public_key().as_ref().to_vec()
    }

    /// Signs `message` with RSA-SHA256 (PKCS#1 v1.5), as IAM `signBlob` does.
    pub fn sign(&self, message: &[u8]) -> anyhow::Result<Vec<u8>> {
        let mut signature = vec![0; self.key.public_modulus_len()];
        self.key
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                message,
                &mut signature,
            )
            .map_err(|_| anyhow::anyhow!("signing"))?;
        Ok(signature)
    }
}

/// Whether `signature` is `public_key_der`'s RSA-SHA256 signature of `message`.
pub fn verify(public_key_der: &[u8], message: &[u8], signature: &[u8]) -> bool {
    UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, public_key_der)
        .verify(message, signature)
        .is_ok()
}
