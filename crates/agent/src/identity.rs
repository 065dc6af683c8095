//! The agent's client certificate (servers that speak HTTPS): a key made here (never sent
//! anywhere), a certificate from pedmd's client CA obtained with a CSR — first with the
//! registration token (`pedm-agent enroll`), then renewed with the current certificate once
//! two thirds of its life are gone.

use anyhow::{Context, anyhow};
use pedm_api::Client;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the certificate and its key live.
#[derive(Debug, Clone)]
pub struct IdentityFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A new P-256 key (PEM) and a CSR for it (PEM).
pub fn new_key_and_csr(host: &str) -> anyhow::Result<(String, String)> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("pedm host {host}"));
    let csr = params.serialize_request(&key)?;
    Ok((key.serialize_pem(), csr.pem()?))
}

/// `(not_before, not_after)` of a PEM certificate, in Unix seconds.
pub fn validity(cert_pem: &str) -> anyhow::Result<(i64, i64)> {
    use x509_parser::prelude::*;
    let (_, pem) = parse_x509_pem(cert_pem.as_bytes()).map_err(|e| anyhow!("certificate: {e}"))?;
    let cert = pem.parse_x509().map_err(|e| anyhow!("certificate: {e}"))?;
    let v = cert.validity();
    Ok((v.not_before.timestamp(), v.not_after.timestamp()))
}

impl IdentityFiles {
    /// Writes both files (mode 0600; each replaced atomically, the key first).
    pub fn write(&self, cert_pem: &str, key_pem: &str) -> anyhow::Result<()> {
        crate::outbox::write_atomically(&self.key, key_pem.as_bytes())
            .with_context(|| format!("cannot write {}", self.key.display()))?;
        crate::outbox::write_atomically(&self.cert, cert_pem.as_bytes())
            .with_context(|| format!("cannot write {}", self.cert.display()))
    }

    /// The certificate and key as one PEM (what the HTTP client takes).
    pub fn read(&self) -> anyhow::Result<(String, Vec<u8>)> {
        let cert = std::fs::read_to_string(&self.cert)
            .with_context(|| format!("cert_file: cannot read {}", self.cert.display()))?;
        let key = std::fs::read(&self.key)
            .with_context(|| format!("key_file: cannot read {}", self.key.display()))?;
        let mut pem = cert.clone().into_bytes();
        pem.extend_from_slice(&key);
        Ok((cert, pem))
    }

    /// A client authenticating with these files.
    pub fn client(&self, server: &str, ca_file: Option<&Path>) -> anyhow::Result<Client> {
        let (_, pem) = self.read()?;
        Client::with_identity(server, ca_file, &pem).map_err(|e| anyhow!("{e}"))
    }

    /// How long until the certificate should be renewed (two thirds of its life).
    pub fn renew_in(&self) -> anyhow::Result<Duration> {
        let (cert, _) = self.read()?;
        let (from, to) = validity(&cert)?;
        let at = from + (to - from) * 2 / 3;
        let now = jiff::Timestamp::now().as_second();
        Ok(Duration::from_secs((at - now).max(0) as u64))
    }

    /// Renews through `client` (authenticated with the current certificate): a new key, a
    /// CSR, the new certificate written over the old.
    pub async fn renew(&self, client: &Client, host: &str) -> anyhow::Result<jiff::Timestamp> {
        let (key, csr) = new_key_and_csr(host)?;
        let issued = client
            .agent_renew(&csr)
            .await
            .map_err(|e| anyhow!("renewing the client certificate: {e}"))?;
        self.write(&issued.certificate, &key)?;
        Ok(issued.not_after)
    }
}
