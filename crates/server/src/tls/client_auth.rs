//! Client certificates at the handshake: a certificate is optional (people and browsers
//! present none), but one that is presented must chain to pedmd's client CA, be within its
//! validity, be for client authentication, and not name a revoked host; otherwise the
//! handshake fails. Which routes need one is the HTTP layer's business ([`PeerCert`]).

use super::client_ca::peer_of;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};
use std::collections::HashSet;
use std::sync::{Arc, RwLock};

/// The verified client certificate of a connection (DER), put into each request's
/// extensions by the server loop.
#[derive(Clone, Debug)]
pub struct PeerCert(pub Arc<Vec<u8>>);

/// Hosts and devices whose certificates are refused at the handshake (`host:NAME`,
/// `device:ID`), kept current by the server (on revocation here, and by polling the store
/// for other instances' revocations).
#[derive(Default, Debug)]
pub struct RevokedHosts(RwLock<HashSet<String>>);

impl RevokedHosts {
    pub fn replace(&self, hosts: impl IntoIterator<Item = String>) {
        let set: HashSet<String> = hosts.into_iter().collect();
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = set;
    }
    pub fn insert(&self, host: &str) {
        self.0
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(host.to_string());
    }
    pub fn contains(&self, host: &str) -> bool {
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(host)
    }
}

#[derive(Debug)]
pub struct HostCertVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    revoked: Arc<RevokedHosts>,
    /// Whether a connection without a certificate is refused at the handshake (the sudo log
    /// server: only hosts speak to it).
    mandatory: bool,
}

impl HostCertVerifier {
    /// A certificate optional (the HTTPS API: people present none).
    pub fn new(
        ca: CertificateDer<'static>,
        revoked: Arc<RevokedHosts>,
    ) -> Result<Arc<Self>, super::TlsError> {
        Self::build(ca, revoked, false)
    }

    /// The same checks, with a certificate required (the sudo log server: only hosts).
    pub fn required(
        ca: CertificateDer<'static>,
        revoked: Arc<RevokedHosts>,
    ) -> Result<Arc<Self>, super::TlsError> {
        Self::build(ca, revoked, true)
    }

    fn build(
        ca: CertificateDer<'static>,
        revoked: Arc<RevokedHosts>,
        mandatory: bool,
    ) -> Result<Arc<Self>, super::TlsError> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(ca)
            .map_err(|e| super::TlsError::Config(format!("client CA: {e}")))?;
        let inner = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), super::provider())
            .allow_unauthenticated()
            .build()
            .map_err(|e| super::TlsError::Config(format!("client verifier: {e}")))?;
        Ok(Arc::new(HostCertVerifier {
            inner,
            revoked,
            mandatory,
        }))
    }
}

impl ClientCertVerifier for HostCertVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let ok = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        match peer_of(end_entity) {
            Some((peer, _)) if self.revoked.contains(&peer.key()) => {
                metrics::counter!("pedm_revoked_host_handshakes_total").increment(1);
                Err(Error::InvalidCertificate(CertificateError::Revoked))
            }
            Some(_) => Ok(ok),
            None => Err(Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
