//! The certificates of a VM's Docker mTLS, made with rcgen: the manager's CA (in memory only,
//! one per process), the manager's client certificate (clientAuth) and each VM's server
//! certificate (serverAuth, the VM name as DNS SAN). Every certificate gets its own
//! distinguished name: rcgen's default CN is the same for all, so a leaf signed by a
//! default-named CA would look self-signed and fail verification. Owns certificate making only;
//! TLS configuration and connecting live in `tls`.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};

/// A CA with its signing key, able to sign leaves.
pub(crate) type Issuer = CertifiedIssuer<'static, KeyPair>;

/// A certificate and its private key, both PEM.
pub(crate) struct Leaf {
    /// The certificate (PEM).
    pub(crate) cert_pem: String,
    /// The private key (PKCS#8 PEM).
    pub(crate) key_pem: String,
    /// The private key (PKCS#8 DER), for rustls.
    pub(crate) key_der: Vec<u8>,
    /// The certificate (DER), for rustls.
    pub(crate) cert_der: Vec<u8>,
}

/// Parameters with a fresh distinguished name holding only `cn` (and the organisation), and
/// `sans` as DNS names.
fn named(sans: Vec<String>, cn: &str) -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::new(sans)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Flotilla");
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    Ok(params)
}

/// A new self-signed CA whose name carries `tag` (unique per process).
pub(crate) fn new_ca(tag: &str) -> Result<Issuer, rcgen::Error> {
    let mut params = named(Vec::new(), &format!("flotilla docker ca {tag}"))?;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    CertifiedIssuer::self_signed(params, KeyPair::generate()?)
}

/// A leaf signed by `ca`: named `cn`, with `sans` as DNS names and `usage` as its only EKU.
fn leaf(
    ca: &Issuer,
    cn: &str,
    sans: Vec<String>,
    usage: ExtendedKeyUsagePurpose,
) -> Result<Leaf, rcgen::Error> {
    let key = KeyPair::generate()?;
    let mut params = named(sans, cn)?;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![usage];
    params.use_authority_key_identifier_extension = true;
    let cert = params.signed_by(&key, ca)?;
    Ok(Leaf {
        cert_pem: cert.pem(),
        cert_der: cert.der().to_vec(),
        key_pem: key.serialize_pem(),
        key_der: key.serialize_der(),
    })
}

/// The manager's client certificate (clientAuth), named after `tag`.
pub(crate) fn client_leaf(ca: &Issuer, tag: &str) -> Result<Leaf, rcgen::Error> {
    leaf(
        ca,
        &format!("flotilla manager {tag}"),
        Vec::new(),
        ExtendedKeyUsagePurpose::ClientAuth,
    )
}

/// A VM's server certificate (serverAuth), named after and valid for `vm_name`.
pub(crate) fn server_leaf(ca: &Issuer, vm_name: &str) -> Result<Leaf, rcgen::Error> {
    leaf(
        ca,
        vm_name,
        vec![vm_name.to_owned()],
        ExtendedKeyUsagePurpose::ServerAuth,
    )
}
