//! `pedmd --dev`: a local CA and a server certificate for `localhost`, `127.0.0.1` and `::1`,
//! kept under `<data_dir>/tls/`. The CA (ECDSA P-256, 10 years) is made once and reused on
//! every restart, so a client told to trust it (`PEDM_CA`) keeps trusting the server; the
//! server certificate (90 days) is issued again from it at each start, so it never expires
//! under a long-running development setup. Keys are written with mode 0600.

use super::TlsError;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use std::path::{Path, PathBuf};

/// Where the development TLS files are.
#[derive(Debug, Clone)]
pub struct DevTls {
    /// The CA certificate clients trust (`PEDM_CA`).
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl DevTls {
    pub fn paths(data_dir: &Path) -> DevTls {
        let d = data_dir.join("tls");
        DevTls {
            ca_cert: d.join("dev-ca.pem"),
            ca_key: d.join("dev-ca.key"),
            cert: d.join("server.pem"),
            key: d.join("server.key"),
        }
    }
}

pub(super) fn err(p: &Path, m: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: p.display().to_string(),
        message: m.to_string(),
    }
}

/// The CA's parameters: fixed, so that the issuer name of a server certificate signed after a
/// restart matches the CA certificate written at the first start.
fn ca_params() -> Result<CertificateParams, rcgen::Error> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name
        .push(DnType::CommonName, "pedm development CA");
    p.distinguished_name
        .push(DnType::OrganizationName, "pedm (pedmd --dev)");
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(p)
}

/// Makes (first start) or reuses the CA, and issues a fresh server certificate from it.
pub fn ensure(data_dir: &Path) -> Result<DevTls, TlsError> {
    let paths = DevTls::paths(data_dir);
    let dir = paths.ca_cert.parent().unwrap_or(data_dir);
    create_private_dir(dir)?;
    fn rc(p: &Path) -> impl Fn(rcgen::Error) -> TlsError + '_ {
        move |e| err(p, e)
    }

    let ca_key = if paths.ca_key.exists() && paths.ca_cert.exists() {
        let pem = std::fs::read_to_string(&paths.ca_key)
            .map_err(|e| err(&paths.ca_key, format!("cannot read: {e}")))?;
        KeyPair::from_pem(&pem).map_err(rc(&paths.ca_key))?
    } else {
        let key =
            KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(rc(&paths.ca_key))?;
        let mut params = ca_params().map_err(rc(&paths.ca_cert))?;
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::days(3650);
        let cert = params.self_signed(&key).map_err(rc(&paths.ca_cert))?;
        write_file(&paths.ca_key, key.serialize_pem().as_bytes(), 0o600)?;
        write_file(&paths.ca_cert, cert.pem().as_bytes(), 0o644)?;
        key
    };
    let issuer = Issuer::new(ca_params().map_err(rc(&paths.ca_cert))?, ca_key);

    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(rc(&paths.key))?;
    let mut params = CertificateParams::new(vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ])
    .map_err(rc(&paths.cert))?;
    params
        .distinguished_name
        .push(DnType::CommonName, "pedmd development server");
    params.is_ca = IsCa::NoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(90);
    let cert = params.signed_by(&key, &issuer).map_err(rc(&paths.cert))?;
    write_file(&paths.key, key.serialize_pem().as_bytes(), 0o600)?;
    write_file(&paths.cert, cert.pem().as_bytes(), 0o644)?;
    Ok(paths)
}

pub(super) fn create_private_dir(dir: &Path) -> Result<(), TlsError> {
    use std::os::unix::fs::DirBuilderExt;
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| err(dir, format!("cannot create: {e}")))?;
    }
    Ok(())
}

/// Writes through a temporary file and a rename, so a reader never sees half a file, with
/// `mode` set at creation (a key is never readable by others, not even for a moment).
pub(super) fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TlsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| err(&tmp, format!("cannot create: {e}")))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| err(&tmp, format!("cannot write: {e}")))?;
    std::fs::rename(&tmp, path).map_err(|e| err(path, format!("cannot write: {e}")))
}
