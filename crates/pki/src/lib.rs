//! pedm's signing keys: for OpenSSH, the user and host certificate authorities
//! ([`SshAuthority`], which implements the core's [`pedm_core::ssh::SshCa`] port) and the key
//! revocation list ([`krl`]); the OpenID Connect issuer's ([`oidc`]); secrets sealed under a
//! key-encryption key to be shared through the database ([`sealed`]). One auditable place for
//! key material: the server uses it, the core only sees ports.

pub mod krl;
pub mod oidc;
pub mod personal;
pub mod sealed;

use jiff::Timestamp;
use pedm_core::ssh::{CertKind, CertRequest, RevokedCert, SignedCert, SshCa, SshCaError};
use ssh_key::certificate::{Builder, CertType};
use ssh_key::rand_core::OsRng;
use ssh_key::{Algorithm, HashAlg, LineEnding, PrivateKey, PublicKey};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("cannot read the SSH CA key {path}: {why}")]
    Read { path: PathBuf, why: String },
    #[error("cannot write the SSH CA key {path}: {why}")]
    Write { path: PathBuf, why: String },
    #[error("no key configured for the SSH {0} CA")]
    NoKey(&'static str),
}

/// One CA: the key that signs, and every key hosts or clients should still trust.
struct Authority {
    signer: PrivateKey,
    /// The signer's public key first, then older keys kept for trust after a rotation.
    trusted: Vec<PublicKey>,
}

impl Authority {
    fn load(paths: &[PathBuf], what: &'static str) -> Result<Authority, PkiError> {
        let (first, older) = paths.split_first().ok_or(PkiError::NoKey(what))?;
        let signer = load_or_create(first, what)?;
        let mut trusted = vec![signer.public_key().clone()];
        for p in older {
            trusted.push(load_public(p)?);
        }
        Ok(Authority { signer, trusted })
    }
}

/// Reads an OpenSSH private key from `path`, or makes an Ed25519 one there (mode 0600).
fn load_or_create(path: &Path, what: &str) -> Result<PrivateKey, PkiError> {
    let read_err = |why: String| PkiError::Read {
        path: path.to_owned(),
        why,
    };
    if path.exists() {
        let key = PrivateKey::read_openssh_file(path).map_err(|e| read_err(e.to_string()))?;
        if key.is_encrypted() {
            return Err(read_err("it is encrypted (pedmd needs it unlocked)".into()));
        }
        return Ok(key);
    }
    let write_err = |why: String| PkiError::Write {
        path: path.to_owned(),
        why,
    };
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| write_err(e.to_string()))?;
    }
    let mut key =
        PrivateKey::random(&mut OsRng, Algorithm::Ed25519).map_err(|e| write_err(e.to_string()))?;
    key.set_comment(format!("pedm SSH {what} CA"));
    key.write_openssh_file(path, LineEnding::LF)
        .map_err(|e| write_err(e.to_string()))?;
    tracing::info!(file = %path.display(), key = %key.fingerprint(HashAlg::Sha256),
        "created the SSH {what} CA key");
    Ok(key)
}

/// An older CA key kept for trust: its private key file, or only its `.pub`.
fn load_public(path: &Path) -> Result<PublicKey, PkiError> {
    let text = std::fs::read_to_string(path).map_err(|e| PkiError::Read {
        path: path.to_owned(),
        why: e.to_string(),
    })?;
    if let Ok(k) = PublicKey::from_openssh(text.trim()) {
        return Ok(k);
    }
    PrivateKey::from_openssh(&text)
        .map(|k| k.public_key().clone())
        .map_err(|e| PkiError::Read {
            path: path.to_owned(),
            why: format!("neither a public nor a private OpenSSH key: {e}"),
        })
}

/// pedmd's two SSH certificate authorities: users (grants) and hosts.
pub struct SshAuthority {
    user: Authority,
    host: Authority,
}

impl SshAuthority {
    /// Loads both CAs. The first key of each list signs (made if missing); the others are
    /// older keys still published for trust.
    pub fn load(user_keys: &[PathBuf], host_keys: &[PathBuf]) -> Result<Self, PkiError> {
        Ok(SshAuthority {
            user: Authority::load(user_keys, "user")?,
            host: Authority::load(host_keys, "host")?,
        })
    }

    fn authority(&self, kind: CertKind) -> &Authority {
        match kind {
            CertKind::User => &self.user,
            CertKind::Host => &self.host,
        }
    }
}

fn unix(t: Timestamp, field: &str) -> Result<u64, SshCaError> {
    u64::try_from(t.as_second())
        .map_err(|_| SshCaError::Signing(format!("{field} {t} is before 1970")))
}

/// The subject key, refused if it is not a plain key OpenSSH would accept from a user.
fn subject_key(line: &str) -> Result<PublicKey, SshCaError> {
    let key = PublicKey::from_openssh(line.trim())
        .map_err(|e| SshCaError::BadKey(format!("not an OpenSSH public key line: {e}")))?;
    match key.algorithm() {
        Algorithm::Ed25519
        | Algorithm::Ecdsa { .. }
        | Algorithm::SkEd25519
        | Algorithm::SkEcdsaSha2NistP256 => Ok(key),
        Algorithm::Rsa { .. } => match key.key_data().rsa() {
            Some(rsa)
                if rsa
                    .n
                    .as_positive_bytes()
                    .is_some_and(|n| n.len() * 8 >= 2048) =>
            {
                Ok(key)
            }
            _ => Err(SshCaError::BadKey(
                "RSA keys shorter than 2048 bits are not certified".into(),
            )),
        },
        other => Err(SshCaError::BadKey(format!(
            "{} keys are not certified (use ssh-ed25519)",
            other.as_str()
        ))),
    }
}

impl SshCa for SshAuthority {
    fn sign(&self, req: &CertRequest) -> Result<SignedCert, SshCaError> {
        let key = subject_key(&req.public_key)?;
        let ca = self.authority(req.kind);
        let signing = |e: ssh_key::Error| SshCaError::Signing(e.to_string());
        let mut b = Builder::new_with_random_nonce(
            &mut OsRng,
            key.key_data().clone(),
            unix(req.valid_after, "valid_after")?,
            unix(req.valid_before, "valid_before")?,
        )
        .map_err(signing)?;
        b.serial(req.serial).map_err(signing)?;
        b.key_id(req.key_id.clone()).map_err(signing)?;
        b.cert_type(match req.kind {
            CertKind::User => CertType::User,
            CertKind::Host => CertType::Host,
        })
        .map_err(signing)?;
        for p in &req.principals {
            b.valid_principal(p.clone()).map_err(signing)?;
        }
        for (name, value) in &req.critical_options {
            b.critical_option(name.clone(), value.clone())
                .map_err(signing)?;
        }
        for name in &req.extensions {
            b.extension(name.clone(), String::new()).map_err(signing)?;
        }
        let cert = b.sign(&ca.signer).map_err(signing)?;
        Ok(SignedCert {
            certificate: cert.to_openssh().map_err(signing)?,
            key_fingerprint: key.fingerprint(HashAlg::Sha256).to_string(),
            ca_fingerprint: ca.signer.fingerprint(HashAlg::Sha256).to_string(),
        })
    }

    fn public_keys(&self, kind: CertKind) -> Vec<String> {
        self.authority(kind)
            .trusted
            .iter()
            .filter_map(|k| k.to_openssh().ok())
            .collect()
    }

    fn krl(&self, revoked: &[RevokedCert], now: Timestamp) -> Result<Vec<u8>, SshCaError> {
        krl::build(&self.user.trusted, revoked, now)
    }
}

#[cfg(test)]
mod tests;
