//! The server certificate behind an `Arc` that SIGHUP or a file change swaps. A file that does
//! not load (unreadable, not PEM, key not matching the certificate) keeps the old pair in
//! service, is logged as an error and counted in `pedm_tls_reload_failures_total`.

use super::{TlsError, provider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};
use tokio::sync::watch;

/// What a file looked like when last read: a change of any of these triggers a reload.
type Stamp = Option<(SystemTime, u64, u64)>;

#[derive(Debug)]
pub struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    seen: Mutex<(Stamp, Stamp)>,
}

impl ReloadingCert {
    /// Loads the pair; an error here stops the server from starting.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let seen = (stamp(cert), stamp(key));
        let ck = read_pair(cert, key)?;
        Ok(ReloadingCert {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: RwLock::new(Arc::new(ck)),
            seen: Mutex::new(seen),
        })
    }

    /// Reads the files again and swaps them in; on error the old pair stays.
    pub fn reload(&self) -> Result<String, TlsError> {
        let seen = (stamp(&self.cert), stamp(&self.key));
        if let Ok(mut s) = self.seen.lock() {
            *s = seen;
        }
        let ck = read_pair(&self.cert, &self.key)?;
        let fp = fingerprint(&ck);
        if let Ok(mut cur) = self.current.write() {
            *cur = Arc::new(ck);
        }
        Ok(fp)
    }

    /// Whether either file changed since it was last read.
    fn changed(&self) -> bool {
        let now = (stamp(&self.cert), stamp(&self.key));
        self.seen.lock().map(|s| *s != now).unwrap_or(false)
    }

    /// SHA-256 of the certificate now served (hex), for logs.
    pub fn fingerprint(&self) -> String {
        self.current
            .read()
            .map(|c| fingerprint(&c))
            .unwrap_or_default()
    }

    fn reload_logged(&self, why: &str) {
        match self.reload() {
            Ok(fp) => tracing::info!(
                trigger = why,
                cert = %self.cert.display(),
                sha256 = %fp,
                "TLS certificate reloaded"
            ),
            Err(e) => {
                metrics::counter!("pedm_tls_reload_failures_total").increment(1);
                tracing::error!(
                    trigger = why,
                    error = %e,
                    still_serving = %self.fingerprint(),
                    "TLS certificate NOT reloaded: keeping the previous certificate"
                );
            }
        }
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|c| c.clone())
    }
}

fn stamp(p: &Path) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(p).ok()?;
    Some((m.modified().ok()?, m.len(), m.ino()))
}

fn fingerprint(ck: &CertifiedKey) -> String {
    ck.cert
        .first()
        .map(|c| hex::encode(Sha256::digest(c.as_ref())))
        .unwrap_or_default()
}

fn file_err(p: &Path, message: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: p.display().to_string(),
        message: message.to_string(),
    }
}

/// Reads a PEM chain and key and checks that the key belongs to the first certificate.
pub(crate) fn read_pair(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| file_err(cert, format!("cannot read the certificate: {e}")))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_err(cert, format!("not a PEM certificate chain: {e}")))?;
    if chain.is_empty() {
        return Err(file_err(cert, "holds no CERTIFICATE block"));
    }
    let k = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| file_err(key, format!("not a PEM private key: {e}")))?;
    CertifiedKey::from_der(chain, k, &provider()).map_err(|e| {
        file_err(
            key,
            format!("does not fit the certificate {}: {e}", cert.display()),
        )
    })
}

/// Reloads `certs` on SIGHUP and when either file changes (checked every `every`), until
/// `shutdown`. The signal handler is installed before this returns, so a SIGHUP right after
/// start no longer terminates the process.
pub fn watch_for_reload(
    certs: Arc<ReloadingCert>,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = hup.recv() => certs.reload_logged("SIGHUP"),
                _ = tick.tick() => {
                    if certs.changed() {
                        certs.reload_logged("file change");
                    }
                }
                _ = shutdown.changed() => return,
            }
        }
    });
    Ok(())
}
