//! pedmd's client CA: it signs the short-lived client certificates agents authenticate with.
//! ECDSA P-256, made once under `<data_dir>/tls/client-ca.{pem,key}` (key mode 0600) and reused.
//! A certificate names its host only as the URI `urn:pedm:host:<name>` in its subject
//! alternative names; the agent's key never leaves the agent (it sends a CSR, whose signature
//! proves it holds the key).

use super::TlsError;
use super::dev::{create_private_dir, err, write_file};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::pki_types::CertificateDer;
use std::path::Path;

/// The URI prefix of a host's name in its client certificate.
pub const HOST_URI: &str = "urn:pedm:host:";
/// The URI prefix of a trusted device's id in its certificate.
pub const DEVICE_URI: &str = "urn:pedm:device:";

/// Who a client certificate is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    Host(String),
    Device(String),
}

impl Peer {
    fn uri(&self) -> String {
        match self {
            Peer::Host(h) => format!("{HOST_URI}{h}"),
            Peer::Device(d) => format!("{DEVICE_URI}{d}"),
        }
    }

    /// `host:NAME` or `device:ID`: its key in the revocation list.
    pub fn key(&self) -> String {
        match self {
            Peer::Host(h) => format!("host:{h}"),
            Peer::Device(d) => format!("device:{d}"),
        }
    }
}

pub struct ClientCa {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate (PEM), sent to agents with their certificate.
    pub cert_pem: String,
    pub cert_der: CertificateDer<'static>,
}

/// A client certificate just issued.
pub struct Issued {
    pub cert_pem: String,
    /// Hex, lower case.
    pub serial: String,
    pub not_after: jiff::Timestamp,
}

fn ca_params() -> Result<CertificateParams, rcgen::Error> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name
        .push(DnType::CommonName, "pedm agent client CA");
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(p)
}

impl ClientCa {
    /// Loads the CA from `data_dir`, making it on first use.
    pub fn ensure(data_dir: &Path) -> Result<ClientCa, TlsError> {
        let dir = data_dir.join("tls");
        create_private_dir(&dir)?;
        let (cert_path, key_path) = (dir.join("client-ca.pem"), dir.join("client-ca.key"));
        fn rc(p: &Path) -> impl Fn(rcgen::Error) -> TlsError + '_ {
            move |e| err(p, e)
        }
        if !(cert_path.exists() && key_path.exists()) {
            let key =
                KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(rc(&key_path))?;
            let mut params = ca_params().map_err(rc(&cert_path))?;
            let now = time::OffsetDateTime::now_utc();
            params.not_before = now - time::Duration::hours(1);
            params.not_after = now + time::Duration::days(3650);
            let cert = params.self_signed(&key).map_err(rc(&cert_path))?;
            write_file(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
            write_file(&cert_path, cert.pem().as_bytes(), 0o644)?;
        }
        let read =
            |p: &Path| std::fs::read_to_string(p).map_err(|e| err(p, format!("cannot read: {e}")));
        let key = KeyPair::from_pem(&read(&key_path)?).map_err(rc(&key_path))?;
        let cert_pem = read(&cert_path)?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key).map_err(rc(&cert_path))?;
        let cert_der = rustls::pki_types::pem::PemObject::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| err(&cert_path, e))?;
        Ok(ClientCa {
            issuer,
            cert_pem,
            cert_der,
        })
    }

    /// Signs a client certificate for `host` with the key of `csr_pem` (whose signature is
    /// checked), valid for `lifetime_secs` from now. Nothing else of the CSR is used.
    pub fn issue(&self, csr_pem: &str, peer: &Peer, lifetime_secs: i64) -> Result<Issued, String> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| format!("the certificate signing request is not valid: {e}"))?;
        let uri = peer.uri();
        let mut p = CertificateParams::default();
        p.distinguished_name
            .push(DnType::CommonName, format!("pedm {}", peer.key()));
        p.subject_alt_names = vec![SanType::URI(
            uri.try_into().map_err(|e: rcgen::Error| e.to_string())?,
        )];
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let serial: [u8; 16] = pedm_core::token::random_bytes();
        let mut serial = serial.to_vec();
        serial[0] &= 0x7f; // positive
        p.serial_number = Some(SerialNumber::from_slice(&serial));
        let now = time::OffsetDateTime::now_utc();
        p.not_before = now - time::Duration::minutes(5);
        let end = now + time::Duration::seconds(lifetime_secs);
        p.not_after = end;
        let cert = CertificateSigningRequestParams {
            params: p,
            public_key: csr.public_key,
        }
        .signed_by(&self.issuer)
        .map_err(|e| format!("signing failed: {e}"))?;
        let not_after =
            jiff::Timestamp::from_second(end.unix_timestamp()).map_err(|e| e.to_string())?;
        Ok(Issued {
            cert_pem: cert.pem(),
            serial: hex::encode(&serial),
            not_after,
        })
    }
}

/// Who a client certificate (DER) is for, and its serial (hex); `None` if it names nobody.
pub fn peer_of(der: &[u8]) -> Option<(Peer, String)> {
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let serial = hex::encode(cert.raw_serial());
    let san = cert.subject_alternative_name().ok()??;
    let peer = san.value.general_names.iter().find_map(|n| match n {
        GeneralName::URI(u) => {
            if let Some(h) = u.strip_prefix(HOST_URI) {
                pedm_core::model::validate_name("host", h)
                    .ok()
                    .map(|_| Peer::Host(h.to_string()))
            } else {
                u.strip_prefix(DEVICE_URI)
                    .filter(|d| d.len() == 16 && d.bytes().all(|b| b.is_ascii_hexdigit()))
                    .map(|d| Peer::Device(d.to_string()))
            }
        }
        _ => None,
    })?;
    Some((peer, serial))
}

/// The host a client certificate names, and its serial.
pub fn host_of(der: &[u8]) -> Option<(String, String)> {
    match peer_of(der)? {
        (Peer::Host(h), serial) => Some((h, serial)),
        _ => None,
    }
}

/// The device a client certificate names.
pub fn device_of(der: &[u8]) -> Option<String> {
    match peer_of(der)? {
        (Peer::Device(d), _) => Some(d),
        _ => None,
    }
}
