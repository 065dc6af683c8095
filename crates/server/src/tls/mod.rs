//! HTTPS for `pedmd`: rustls 0.23 with the aws-lc-rs provider, TLS 1.2 and 1.3 only, ALPN
//! `h2` and `http/1.1`. The certificate and key are PEM files read through a
//! [`ReloadingCert`] resolver, so SIGHUP or a change of either file swaps them for new
//! handshakes while open connections go on with what they negotiated. `--dev` makes its own
//! local CA and server certificate ([`dev`]).

pub mod client_auth;
pub mod client_ca;
pub mod dev;
mod reload;

pub use reload::{ReloadingCert, watch_for_reload};

use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;

/// `[tls]` in the configuration file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain (the server's certificate first).
    pub cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of that certificate.
    pub key: Option<PathBuf>,
    /// How often the files are checked for changes (`5s`; SIGHUP reloads at once).
    pub watch_interval: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("tls: {0}")]
    Config(String),
}

/// The one crypto provider pedm uses (see STACK.md: aws-lc-rs everywhere).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A server configuration answering with whatever `certs` currently holds: TLS 1.3 and 1.2
/// only (rustls has no older versions), ALPN `h2` then `http/1.1`; client certificates
/// optional, checked by `clients` when given (agents), none asked for otherwise.
pub fn server_config(
    certs: Arc<ReloadingCert>,
    clients: Option<Arc<client_auth::HostCertVerifier>>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match clients {
        Some(v) => builder.with_client_cert_verifier(v),
        None => builder.with_no_client_auth(),
    };
    let mut cfg = builder.with_cert_resolver(certs);
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// The sudo log server's configuration: the same certificate, a host certificate required,
/// no ALPN (sudo offers none).
pub fn log_server_config(
    certs: Arc<ReloadingCert>,
    hosts: Arc<client_auth::HostCertVerifier>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(hosts)
        .with_cert_resolver(certs);
    Ok(Arc::new(cfg))
}
