//! The Docker TLS proxy of a fake VM: certificates made with rcgen go into the instance's
//! metadata; a client with a certificate from that CA reaches the local engine's `/_ping`, any
//! other client is refused, and deleting the VM kills its labelled containers and its proxy.

use std::sync::Arc;
use std::time::Duration;

use testkit::gce::{FakeGceOptions, META_CA, META_CERT, META_KEY, VM_LABEL};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{create_running, send, start, unique, wait_done, zone_url, ZA};

/// A CA, a server certificate for `vm` signed by it, and a client certificate; PEM strings.
struct Pki {
    ca: String,
    server_cert: String,
    server_key: String,
    client_cert: String,
    client_key: String,
}

fn pki(vm: &str, tag: &str) -> Pki {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair, KeyUsagePurpose,
    };
    let named = |sans: Vec<String>, cn: String| {
        let mut p = CertificateParams::new(sans).expect("params");
        p.distinguished_name.push(DnType::CommonName, cn);
        p
    };
    let mut ca_params = named(vec![], format!("flotilla test ca {tag}"));
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca =
        CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("key")).expect("ca");
    let server_key = KeyPair::generate().expect("key");
    let mut sp = named(vec![vm.to_owned()], format!("{vm} docker"));
    sp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server = sp.signed_by(&server_key, &ca).expect("server cert");
    let client_key = KeyPair::generate().expect("key");
    let mut cp = named(vec![], format!("flotilla manager {tag}"));
    cp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client = cp.signed_by(&client_key, &ca).expect("client cert");
    Pki {
        ca: ca.pem(),
        server_cert: server.pem(),
        server_key: server_key.serialize_pem(),
        client_cert: client.pem(),
        client_key: client_key.serialize_pem(),
    }
}

/// Connects with `client` credentials (trusting `trust`'s CA), sends GET /_ping, returns the reply
/// or the error text.
async fn ping(addr: &str, vm: &str, trust: &Pki, client: Option<&Pki>) -> Result<String, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    let ca = CertificateDer::from_pem_slice(trust.ca.as_bytes()).map_err(|e| e.to_string())?;
    roots.add(ca).map_err(|e| e.to_string())?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let config = match client {
        Some(c) => {
            let cert = CertificateDer::from_pem_slice(c.client_cert.as_bytes())
                .map_err(|e| e.to_string())?;
            let key = PrivateKeyDer::from_pem_slice(c.client_key.as_bytes())
                .map_err(|e| e.to_string())?;
            builder
                .with_client_auth_cert(vec![cert], key)
                .map_err(|e| e.to_string())?
        }
        None => builder.with_no_client_auth(),
    };
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from(vm.to_owned()).map_err(|e| e.to_string())?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let io = async {
        let mut tls = connector.connect(name, tcp).await?;
        tls.write_all(b"GET /_ping HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n")
            .await?;
        let mut out = String::new();
        tls.read_to_string(&mut out).await?;
        Ok::<_, std::io::Error>(out)
    };
    tokio::time::timeout(Duration::from_secs(10), io)
        .await
        .map_err(|_| "timed out".to_owned())?
        .map_err(|e| e.to_string())
}

fn docker(args: &[&str]) -> Option<String> {
    let out = std::process::Command::new("docker")
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

#[tokio::test]
async fn docker_tls_proxy_requires_the_client_certificate() {
    if !std::path::Path::new("/var/run/docker.sock").exists() {
        println!("note: no /var/run/docker.sock; the docker proxy test is skipped");
        return;
    }
    let fake = start().await;
    let vm = unique("runner-tls");
    let good = pki(&vm, "good");
    let meta = [
        (META_CA, good.ca.clone()),
        (META_CERT, good.server_cert.clone()),
        (META_KEY, good.server_key.clone()),
    ];
    let view = create_running(&fake, ZA, &vm, &meta).await;
    let nic = &view["networkInterfaces"][0];
    let port = FakeGceOptions::default().docker_port;
    for ip in [&nic["networkIP"], &nic["accessConfigs"][0]["natIP"]] {
        let addr = format!("{}:{port}", ip.as_str().unwrap_or_default());
        let reply = ping(&addr, &vm, &good, Some(&good))
            .await
            .expect("ping through the proxy");
        assert!(
            reply.starts_with("HTTP/1.1 200") && reply.ends_with("OK"),
            "{reply}"
        );
    }
    let addr = format!("{}:{port}", nic["networkIP"].as_str().unwrap_or_default());
    let other = pki(&vm, "other");
    let refused = ping(&addr, &vm, &good, Some(&other)).await;
    assert!(
        refused.is_err(),
        "a client cert from another CA must be refused: {refused:?}"
    );
    let anonymous = ping(&addr, &vm, &good, None).await;
    assert!(
        anonymous.is_err(),
        "a client without a cert must be refused: {anonymous:?}"
    );

    // Deleting the VM kills its containers and closes its proxy.
    let image = "flotilla-test/busybox:latest";
    let container = match docker(&["image", "inspect", image]) {
        Some(_) => {
            let label = format!("{VM_LABEL}={vm}");
            let id = docker(&["run", "-d", "--label", &label, image, "sleep", "300"]);
            assert!(id.is_some(), "docker run {image} failed");
            id
        }
        None => {
            println!("note: image {image} not found (scripts/build-test-images.sh builds it); container kill not checked");
            None
        }
    };
    let (_, op) =
        send(reqwest::Client::new().delete(format!("{}/instances/{vm}", zone_url(&fake, ZA))))
            .await;
    wait_done(&fake, ZA, op["name"].as_str().unwrap_or_default()).await;
    if let Some(id) = container {
        let left = docker(&["ps", "-aq", "--filter", &format!("label={VM_LABEL}={vm}")]);
        assert_eq!(left.as_deref(), Some(""), "container {id} must be gone");
    }
    assert!(
        ping(&addr, &vm, &good, Some(&good)).await.is_err(),
        "proxy closed after delete"
    );
    fake.shutdown().await;
}
