//! Serving a protocol-faithful stand-in of a cloud API over HTTPS on a free loopback port,
//! with a certificate from a CA made for the test (its PEM in `ca_file`, which the
//! provisioner under test is configured to trust with `ca_file`, and the official Python
//! clients with `REQUESTS_CA_BUNDLE`/`SSL_CERT_FILE`).
//!
//! Stand-ins exist only where the real service cannot run on this machine (Azure, Google
//! Cloud, Kubernetes); each test that uses one says so.

use std::path::PathBuf;
use std::sync::Arc;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

pub struct StandIn {
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    /// The PEM of the CA that signed the stand-in's certificate.
    pub ca_file: PathBuf,
    _dir: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves `app` over HTTPS (HTTP/1.1 and HTTP/2) until the [`StandIn`] is dropped.
pub async fn serve_tls(app: axum::Router) -> StandIn {
    let _ = tokio_rustls::rustls::crypto::aws_lc_rs::default_provider().install_default();
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "pedm test stand-in CA");
    let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().expect("server key");
    let params = rcgen::CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])
        .expect("params");
    let cert = params.signed_by(&key, &issuer).expect("server certificate");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let ca_file = dir.path().join("standin-ca.pem");
    std::fs::write(&ca_file, ca_cert.pem()).expect("writing the CA");

    let mut config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .expect("TLS configuration");
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a free port");
    let url = format!("https://{}", listener.local_addr().expect("its address"));
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let app = app.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let _ = Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), TowerToHyperService::new(app))
                    .await;
            });
        }
    });
    StandIn {
        url,
        ca_file,
        _dir: dir,
        task,
    }
}

/// The Python of the providers' official clients (scripts/install-cloud-clients).
pub fn cloud_python() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let python = target.join("cloud-venv/bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run scripts/install-test-deps",
        python.display()
    );
    python
}

/// A script of scripts/cloud-clients.
pub fn cloud_script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../scripts/cloud-clients")
        .join(name)
}
