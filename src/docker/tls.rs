//! A VM's identity and the manager's mutual-TLS connection to its dockerd. One [`DockerCa`] is
//! made per manager process and lives in memory only; it signs a server certificate per VM (the
//! VM name as DNS SAN, handed to the VM through instance metadata) and the manager's client
//! certificate. [`DockerCa::connect`] dials a VM by address but verifies it by name, since the
//! address is unknown when the certificate is written. Owns the certificates' use and the bollard
//! client; dialing is in `transport`, certificate making in `certs`.

use std::net::SocketAddr;
use std::sync::Arc;

use bollard::Docker;
use rustls::client::Resumption;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};

use super::certs::{self, Issuer};
use super::transport::{pooled_docker, VmTlsDialer};

/// Metadata key of the CA certificate (PEM) a VM's dockerd trusts for clients.
pub const META_CA: &str = "flotilla-docker-ca";
/// Metadata key of a VM's server certificate (PEM).
pub const META_CERT: &str = "flotilla-docker-cert";
/// Metadata key of a VM's server private key (PEM).
pub const META_KEY: &str = "flotilla-docker-key";
/// Metadata key of the port dockerd listens on (the startup script defaults to 2376).
pub const META_PORT: &str = "flotilla-docker-port";
/// Metadata key GCE runs as the VM's startup script on every boot.
pub const META_STARTUP_SCRIPT: &str = "startup-script";
/// The VM startup script (`scripts/vm-startup.sh`): installs the TLS material from metadata and
/// makes dockerd serve it; the value of [`META_STARTUP_SCRIPT`].
pub const STARTUP_SCRIPT: &str = include_str!("../../scripts/vm-startup.sh");

/// TLS sessions kept for resumption, one per VM name: a VM's later connections (its job's, once
/// the readiness check's has closed) skip both certificate signatures. rustls keeps 256 by
/// default, which a fleet of thousands of VMs would cycle through in seconds.
const RESUMED_SESSIONS: usize = 4096;
/// Why certificates could not be made or a VM's dockerd could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// rcgen failed making the CA or the manager's client certificate.
    #[error("making the Docker CA: {0}")]
    Ca(#[source] rcgen::Error),
    /// rcgen failed making a VM's server certificate.
    #[error("making the Docker server certificate of VM {vm}: {source}")]
    ServerCert {
        /// The VM.
        vm: String,
        /// What failed.
        #[source]
        source: rcgen::Error,
    },
    /// The VM name is not a valid DNS name, so no certificate can name it.
    #[error("VM name {vm:?} is not a valid DNS name: {source}")]
    BadName {
        /// The VM.
        vm: String,
        /// What failed.
        #[source]
        source: rustls::pki_types::InvalidDnsNameError,
    },
    /// rustls refused the CA or the client certificate.
    #[error("building the Docker TLS client configuration: {0}")]
    Config(#[source] rustls::Error),
    /// The VM's dockerd could not be reached, failed verification, or refused us.
    #[error("cannot reach dockerd of VM {vm} at {addr}: {}", crate::error_chain::chain(.source))]
    Connect {
        /// The VM.
        vm: String,
        /// The address dialed.
        addr: SocketAddr,
        /// What failed (the TLS cause is in its source chain).
        #[source]
        source: bollard::errors::Error,
    },
}

/// What a VM needs to serve Docker over mTLS, all PEM: the CA that signs clients, its server
/// certificate and key. `Debug` hides the key.
#[derive(Clone, PartialEq, Eq)]
pub struct VmTlsMaterial {
    /// The CA certificate (metadata `flotilla-docker-ca`).
    pub ca_pem: String,
    /// The VM's server certificate (metadata `flotilla-docker-cert`).
    pub cert_pem: String,
    /// The VM's private key (metadata `flotilla-docker-key`).
    pub key_pem: String,
}

impl VmTlsMaterial {
    /// The three metadata items `(key, value)` carrying this material.
    pub fn metadata_items(&self) -> [(&'static str, &str); 3] {
        [
            (META_CA, self.ca_pem.as_str()),
            (META_CERT, self.cert_pem.as_str()),
            (META_KEY, self.key_pem.as_str()),
        ]
    }
}

impl std::fmt::Debug for VmTlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VmTlsMaterial")
            .field("ca_pem", &format_args!("<{} bytes>", self.ca_pem.len()))
            .field("cert_pem", &format_args!("<{} bytes>", self.cert_pem.len()))
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// The manager's Docker CA: signs VM server certificates and holds the client certificate the
/// manager presents. Made once per process; never written anywhere.
pub struct DockerCa {
    ca: Issuer,
    ca_pem: String,
    tag: String,
    client: Arc<ClientConfig>,
}

impl std::fmt::Debug for DockerCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerCa")
            .field("tag", &self.tag)
            .finish_non_exhaustive()
    }
}

impl DockerCa {
    /// Makes a fresh CA (named with a random tag) and the manager's client certificate.
    pub fn new() -> Result<DockerCa, TlsError> {
        let tag = uuid::Uuid::new_v4().simple().to_string();
        let tag = tag[..12].to_owned();
        let ca = certs::new_ca(&tag).map_err(TlsError::Ca)?;
        let client = certs::client_leaf(&ca, &tag).map_err(TlsError::Ca)?;
        let mut roots = RootCertStore::empty();
        roots.add(ca.der().clone()).map_err(TlsError::Config)?;
        let provider = Arc::new(vm_provider());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(client.key_der));
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Config)?
            .with_root_certificates(roots)
            .with_client_auth_cert(vec![CertificateDer::from(client.cert_der)], key)
            .map_err(TlsError::Config)?;
        config.resumption = Resumption::in_memory_sessions(RESUMED_SESSIONS);
        Ok(DockerCa {
            ca_pem: ca.pem(),
            ca,
            tag,
            client: Arc::new(config),
        })
    }

    /// The CA certificate (PEM).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// A server certificate for `vm_name` (DNS SAN, serverAuth), signed by this CA, with its
    /// key and the CA certificate: what goes into the VM's metadata.
    pub fn server_material(&self, vm_name: &str) -> Result<VmTlsMaterial, TlsError> {
        server_name(vm_name)?;
        let leaf =
            certs::server_leaf(&self.ca, vm_name).map_err(|source| TlsError::ServerCert {
                vm: vm_name.to_owned(),
                source,
            })?;
        Ok(VmTlsMaterial {
            ca_pem: self.ca_pem.clone(),
            cert_pem: leaf.cert_pem,
            key_pem: leaf.key_pem,
        })
    }

    /// A Docker client for VM `vm_name`'s dockerd at `addr`, without contacting it: connections
    /// dial `addr` and verify the server as `vm_name` against this CA, presenting the client
    /// certificate. The API version is bollard's default until negotiated.
    pub fn client(&self, vm_name: &str, addr: SocketAddr) -> Result<Docker, TlsError> {
        let connector = VmTlsDialer {
            addr,
            name: server_name(vm_name)?,
            tls: tokio_rustls::TlsConnector::from(self.client.clone()),
        };
        // The URI only feeds the Host header; the connector decides where bytes go.
        pooled_docker(connector, format!("https://{vm_name}:{}", addr.port())).map_err(|source| {
            TlsError::Connect {
                vm: vm_name.to_owned(),
                addr,
                source,
            }
        })
    }

    /// Connects to VM `vm_name`'s dockerd at `addr` (see [`DockerCa::client`]) and negotiates
    /// the API version, which contacts the engine once: an unreachable, unverifiable or
    /// refusing dockerd fails here.
    pub async fn connect(&self, vm_name: &str, addr: SocketAddr) -> Result<Docker, TlsError> {
        let docker = self.client(vm_name, addr)?;
        docker
            .negotiate_version()
            .await
            .map_err(|source| TlsError::Connect {
                vm: vm_name.to_owned(),
                addr,
                source,
            })
    }
}

/// The crypto provider toward VMs: aws-lc-rs's, with TLS 1.3's mandatory suite
/// (`TLS13_AES_128_GCM_SHA256`) first, as Go's crypto/tls (dockerd's) orders them on CPUs with
/// AES instructions. The default puts AES-256 with SHA-384 first, whose hashing has no CPU
/// instructions where SHA-256 has: at 2,000 VMs the handshakes' SHA-384 alone was ≈ 2 % of the
/// manager's CPU. Every suite stays offered.
fn vm_provider() -> rustls::crypto::CryptoProvider {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider
        .cipher_suites
        .sort_by_key(|suite| suite.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    provider
}

/// `vm_name` as a TLS server name (a DNS name; GCE instance names always are).
fn server_name(vm_name: &str) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(vm_name.to_owned()).map_err(|source| TlsError::BadName {
        vm: vm_name.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::client::danger::ServerCertVerifier;
    use rustls::client::WebPkiServerVerifier;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::UnixTime;

    /// Verifies `material`'s server certificate as `name` against `ca_pem`.
    fn verify(ca_pem: &str, material: &VmTlsMaterial, name: &str) -> Result<(), rustls::Error> {
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).expect("ca pem"))
            .expect("ca cert");
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .expect("verifier");
        let cert = CertificateDer::from_pem_slice(material.cert_pem.as_bytes()).expect("cert pem");
        let name = ServerName::try_from(name.to_owned()).expect("name");
        verifier
            .verify_server_cert(&cert, &[], &name, &[], UnixTime::now())
            .map(|_| ())
    }

    #[test]
    fn server_certificates_verify_by_vm_name_against_their_own_ca_only() {
        let ca = DockerCa::new().expect("ca");
        let m = ca.server_material("runner-abc-1").expect("material");
        assert_eq!(m.ca_pem, ca.ca_pem());
        verify(ca.ca_pem(), &m, "runner-abc-1").expect("valid for its name");
        let wrong = verify(ca.ca_pem(), &m, "runner-abc-2").unwrap_err();
        assert!(wrong.to_string().contains("not valid for name"), "{wrong}");
        let other = DockerCa::new().expect("other ca");
        assert!(verify(other.ca_pem(), &m, "runner-abc-1").is_err());
        PrivateKeyDer::from_pem_slice(m.key_pem.as_bytes()).expect("key pem parses");
    }

    #[test]
    fn material_debug_hides_the_key_and_metadata_uses_the_documented_keys() {
        let ca = DockerCa::new().expect("ca");
        let m = ca.server_material("vm-1").expect("material");
        let shown = format!("{m:?}");
        assert!(shown.contains("redacted"), "{shown}");
        assert!(!shown.contains("PRIVATE KEY"), "{shown}");
        let keys: Vec<_> = m.metadata_items().iter().map(|(k, _)| *k).collect();
        assert_eq!(
            keys,
            [
                "flotilla-docker-ca",
                "flotilla-docker-cert",
                "flotilla-docker-key"
            ]
        );
        assert!(m.metadata_items()[2].1.contains("PRIVATE KEY"));
    }

    #[test]
    fn the_startup_script_is_embedded_and_reads_the_same_keys() {
        assert!(STARTUP_SCRIPT.starts_with("#!/usr/bin/env bash"));
        for key in [META_CA, META_CERT, META_KEY, META_PORT] {
            assert!(STARTUP_SCRIPT.contains(key), "{key}");
        }
    }

    #[test]
    fn names_that_are_not_dns_names_are_refused() {
        let ca = DockerCa::new().expect("ca");
        let err = ca.server_material("not a name").unwrap_err();
        assert!(matches!(err, TlsError::BadName { .. }), "{err}");
        let addr: SocketAddr = "127.0.0.1:2376".parse().expect("addr");
        assert!(matches!(
            ca.client("bad name!", addr),
            Err(TlsError::BadName { .. })
        ));
    }

    #[test]
    fn vms_are_offered_the_mandatory_tls13_suite_first_and_every_default_suite() {
        let ours: Vec<_> = vm_provider()
            .cipher_suites
            .iter()
            .map(|s| s.suite())
            .collect();
        assert_eq!(ours[0], rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
        let mut defaults: Vec<_> = rustls::crypto::aws_lc_rs::default_provider()
            .cipher_suites
            .iter()
            .map(|s| s.suite())
            .collect();
        let mut sorted = ours.clone();
        sorted.sort_by_key(|s| u16::from(*s));
        defaults.sort_by_key(|s| u16::from(*s));
        assert_eq!(sorted, defaults, "a suite was dropped or added");
    }
}
