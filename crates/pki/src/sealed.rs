//! Secrets sealed under a key-encryption key (KEK), so that several `pedmd` instances sharing
//! one database can share one signing identity without a key file copied by hand: the first
//! instance seals its key into the database; the others, given the same KEK file, open it.
//!
//! AES-256-GCM (aws-lc-rs) with a random 96-bit nonce per seal; the sealed text names what it
//! holds as associated data, so a sealed audit key cannot be passed off as the agents' key. The
//! sealed text is `v1:<KEK id>:<base64(nonce ‖ ciphertext ‖ tag)>`, where the KEK id (first 8
//! bytes of SHA-256 over a label and the KEK, hex) lets a wrong KEK be named as such rather than
//! as a corrupt blob.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use zeroize::Zeroizing;

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("key-encryption key {path}: {why}")]
    Kek { path: String, why: String },
    #[error(
        "{what} was sealed under another key-encryption key (KEK id {sealed}; this instance's \
         is {ours}): give every instance the same KEK file"
    )]
    WrongKek {
        what: String,
        sealed: String,
        ours: String,
    },
    #[error("sealed {what}: {why}")]
    Corrupt { what: String, why: String },
    #[error("sealing: {0}")]
    Crypto(String),
}

/// A 256-bit key-encryption key, read from a file holding its base64 (mode 0600 or stricter).
pub struct KeyEncryptionKey {
    key: LessSafeKey,
    id: String,
}

impl std::fmt::Debug for KeyEncryptionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyEncryptionKey(id {})", self.id)
    }
}

const VERSION: &str = "v1";

impl KeyEncryptionKey {
    /// Reads the KEK file: base64 of exactly 32 random bytes (`head -c 32 /dev/urandom |
    /// base64 > kek`), readable by its owner only.
    pub fn load(path: &Path) -> Result<Self, SealError> {
        let fail = |why: String| SealError::Kek {
            path: path.display().to_string(),
            why,
        };
        let meta = std::fs::metadata(path).map_err(|e| fail(e.to_string()))?;
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(fail(format!(
                "mode {mode:o} lets others read it; chmod 600 it"
            )));
        }
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?);
        let bytes = Zeroizing::new(
            B64.decode(text.trim())
                .map_err(|e| fail(format!("not base64: {e}")))?,
        );
        let raw: &[u8; 32] = bytes.as_slice().try_into().map_err(|_| {
            fail(format!(
                "holds {} bytes; a KEK is 32 random bytes in base64",
                bytes.len()
            ))
        })?;
        Self::from_bytes(raw)
    }

    pub fn from_bytes(raw: &[u8; 32]) -> Result<Self, SealError> {
        let unbound =
            UnboundKey::new(&AES_256_GCM, raw).map_err(|e| SealError::Crypto(e.to_string()))?;
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        ctx.update(b"pedm key-encryption key\n");
        ctx.update(raw);
        let id = hex_prefix(ctx.finish().as_ref());
        Ok(KeyEncryptionKey {
            key: LessSafeKey::new(unbound),
            id,
        })
    }

    /// First 8 bytes of SHA-256 over a label and the key, hex: names the KEK, reveals nothing.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Seals `secret`, bound to `what` (which must be given again to open it).
    pub fn seal(&self, what: &str, secret: &[u8]) -> Result<String, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|e| SealError::Crypto(e.to_string()))?;
        let mut buf = secret.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(what.as_bytes()),
                &mut buf,
            )
            .map_err(|e| SealError::Crypto(e.to_string()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        Ok(format!("{VERSION}:{}:{}", self.id, B64.encode(out)))
    }

    /// Opens what [`seal`](Self::seal) made for `what`.
    pub fn open(&self, what: &str, sealed: &str) -> Result<Zeroizing<Vec<u8>>, SealError> {
        let corrupt = |why: &str| SealError::Corrupt {
            what: what.to_string(),
            why: why.to_string(),
        };
        let mut parts = sealed.splitn(3, ':');
        let (Some(VERSION), Some(id), Some(body)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(corrupt("not in the v1:<KEK id>:<base64> form"));
        };
        if id != self.id {
            return Err(SealError::WrongKek {
                what: what.to_string(),
                sealed: id.to_string(),
                ours: self.id.clone(),
            });
        }
        let raw = B64.decode(body).map_err(|_| corrupt("not base64"))?;
        if raw.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return Err(corrupt("too short"));
        }
        let (nonce, ciphertext) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| corrupt("bad nonce"))?;
        let mut buf = Zeroizing::new(ciphertext.to_vec());
        let len = self
            .key
            .open_in_place(nonce, Aad::from(what.as_bytes()), &mut buf)
            .map_err(|_| corrupt("does not authenticate (altered, or sealed as something else)"))?
            .len();
        buf.truncate(len);
        Ok(buf)
    }
}

/// The id of the KEK `sealed` was sealed under, if it is in the sealed form.
pub fn sealed_by(sealed: &str) -> Option<&str> {
    let mut parts = sealed.splitn(3, ':');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(VERSION), Some(id), Some(_)) => Some(id),
        _ => None,
    }
}

fn hex_prefix(digest: &[u8]) -> String {
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kek(byte: u8) -> KeyEncryptionKey {
        KeyEncryptionKey::from_bytes(&[byte; 32]).unwrap()
    }

    #[test]
    fn opens_what_it_sealed_and_nothing_else() {
        let k = kek(1);
        let sealed = k.seal("audit signing key", b"secret").unwrap();
        assert!(!sealed.contains("secret"));
        assert_eq!(
            &k.open("audit signing key", &sealed).unwrap()[..],
            b"secret"
        );
        // Two seals of one secret differ (random nonce).
        assert_ne!(sealed, k.seal("audit signing key", b"secret").unwrap());
        // Bound to what it is.
        let e = k.open("agent snapshot signing key", &sealed).unwrap_err();
        assert!(e.to_string().contains("does not authenticate"), "{e}");
        // Another KEK is named as such.
        let e = kek(2).open("audit signing key", &sealed).unwrap_err();
        assert!(matches!(e, SealError::WrongKek { .. }), "{e}");
        // One flipped bit anywhere in the body is refused.
        let (head, body) = sealed.rsplit_once(':').unwrap();
        let mut raw = B64.decode(body).unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        let altered = format!("{head}:{}", B64.encode(raw));
        assert!(k.open("audit signing key", &altered).is_err());
        assert!(k.open("audit signing key", "v1:zz").is_err());
        assert_eq!(sealed_by(&sealed), Some(k.id()));
        assert_eq!(sealed_by("v1:zz"), None);
    }

    #[test]
    fn the_kek_file_must_be_private_and_32_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("kek");
        std::fs::write(&p, B64.encode([7u8; 32])).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = KeyEncryptionKey::load(&p).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(KeyEncryptionKey::load(&p).unwrap().id(), kek(7).id());
        std::fs::write(&p, B64.encode([7u8; 16])).unwrap();
        let e = KeyEncryptionKey::load(&p).unwrap_err().to_string();
        assert!(e.contains("16 bytes"), "{e}");
    }
}
