//! Webhooks to an HTTPS receiver whose certificate comes from a private CA: refused (the
//! certificate is verified) until the sink's `ca_file` names that CA; a `ca_file` that is no
//! CA stops the notifier from starting, naming the sink and the file.

use pedm_notify::{
    DeliveryEvent, Notification, Notifier, NotifierOptions, RetryPolicy, Severity, SinkConfig,
};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// An HTTPS receiver on 127.0.0.1 with a certificate from its own CA; every request body it
/// gets is sent on the channel. Returns its URL and the CA file.
async fn receiver(dir: &std::path::Path) -> (String, PathBuf, mpsc::Receiver<String>) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name.push(DnType::CommonName, "hook CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let ca_file = dir.join("hook-ca.pem");
    std::fs::write(&ca_file, ca_cert.pem()).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let chain = vec![CertificateDer::from_pem_slice(cert.pem().as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap();
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}/hook", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                let Ok(mut s) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Ok(n) = s.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some(i) = text.find("\r\n\r\n") {
                        let len: usize = text[..i]
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse().ok())?
                            })
                            .unwrap_or(0);
                        if buf.len() >= i + 4 + len {
                            let body = String::from_utf8_lossy(&buf[i + 4..i + 4 + len]);
                            let _ = tx.send(body.to_string()).await;
                            let _ = s
                                .write_all(
                                    b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                                )
                                .await;
                            let _ = s.shutdown().await;
                            return;
                        }
                    }
                }
            });
        }
    });
    (url, ca_file, rx)
}

fn options() -> NotifierOptions {
    NotifierOptions {
        queue_capacity: 8,
        retry: RetryPolicy {
            base: Duration::from_millis(5),
            max: Duration::from_millis(20),
            attempts: 1,
        },
    }
}

fn note() -> Notification {
    Notification::new(
        "request.pending",
        Severity::Info,
        "over TLS",
        serde_json::json!({"request_id": "r-1"}),
    )
}

async fn outcome(events: &mut tokio::sync::broadcast::Receiver<DeliveryEvent>) -> DeliveryEvent {
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if let e @ (DeliveryEvent::Delivered { .. } | DeliveryEvent::Failed { .. }) =
                events.recv().await.unwrap()
            {
                return e;
            }
        }
    })
    .await
    .expect("no delivery outcome")
}

#[tokio::test]
async fn a_private_ca_is_trusted_only_through_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    let (url, ca_file, mut got) = receiver(dir.path()).await;

    // Without ca_file: the certificate does not verify, nothing is sent.
    let (n, _h) = Notifier::start(vec![SinkConfig::new("plain", url.clone())], options()).unwrap();
    let mut events = n.subscribe();
    let mut attempts = n.subscribe();
    n.notify(note());
    assert!(
        matches!(outcome(&mut events).await, DeliveryEvent::Failed { .. }),
        "delivered to an untrusted certificate"
    );
    let why = loop {
        if let DeliveryEvent::Attempt { outcome, .. } = attempts.recv().await.unwrap() {
            break format!("{outcome:?}");
        }
    };
    // reqwest reports a certificate that does not verify as a failure to connect (the same
    // receiver accepts the delivery below once its CA is trusted).
    assert_eq!(why, "Connect");
    assert!(got.try_recv().is_err(), "the receiver got a body");

    // With ca_file: delivered.
    let sink = SinkConfig {
        ca_file: Some(ca_file.clone()),
        ..SinkConfig::new("private-ca", url)
    };
    let (n, _h) = Notifier::start(vec![sink], options()).unwrap();
    let mut events = n.subscribe();
    n.notify(note());
    assert!(
        matches!(outcome(&mut events).await, DeliveryEvent::Delivered { .. }),
        "not delivered with the CA trusted"
    );
    let body = got.recv().await.unwrap();
    assert!(body.contains("over TLS"), "{body}");
}

#[tokio::test]
async fn a_ca_file_that_is_no_certificate_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.pem");
    std::fs::write(&bad, "nothing here\n").unwrap();
    let sink = SinkConfig {
        ca_file: Some(bad),
        ..SinkConfig::new("hook", "https://127.0.0.1:9/x")
    };
    let e = match Notifier::start(vec![sink], options()) {
        Ok(_) => panic!("started with a bad ca_file"),
        Err(e) => e,
    };
    let e = e.to_string();
    assert!(e.contains("hook") && e.contains("bad.pem"), "{e}");
}
