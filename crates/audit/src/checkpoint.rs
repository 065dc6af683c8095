//! Signed checkpoints: `(size, Merkle root, time)` signed with the server's Ed25519 key.
//!
//! The signed bytes are the UTF-8 text body ([`Checkpoint::body`]):
//!
//! ```text
//! pedm-audit-checkpoint/v1\n
//! <key_id>\n                 16 lowercase hex digits
//! <size>\n                   decimal, no leading zeros
//! <root>\n                   64 lowercase hex digits (RFC 6962 root of the first `size` events)
//! <time>\n                   RFC 3339 UTC as jiff prints it, e.g. 2026-11-02T10:00:00.123456Z
//! ```
//!
//! signed with pure Ed25519 (RFC 8032) and checked with `verify_strict`. Times are truncated to
//! whole microseconds when signing so that any store can keep them exactly.
//!
//! Key forms: public key `ed25519:<base64 of the 32-byte key>`; key id = the first 8 bytes of
//! SHA-256(public key bytes), as hex; secret key file `ed25519-secret:<base64 of the 32-byte
//! seed>\n`, created with mode 0600 and refused at load if group or others may read it.

use std::fmt;
use std::io::Write;
use std::path::Path;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::merkle::Hash;

/// First line of the signed body.
pub const CHECKPOINT_BODY_HEADER: &str = "pedm-audit-checkpoint/v1";
const PUBLIC_PREFIX: &str = "ed25519:";
const SECRET_PREFIX: &str = "ed25519-secret:";

/// What the server asserts: the first `size` events have Merkle root `root`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    pub size: u64,
    #[serde(with = "hex32")]
    pub root: Hash,
    pub time: Timestamp,
    pub key_id: String,
}

impl Checkpoint {
    /// The exact bytes that are signed (see the module docs).
    pub fn body(&self) -> String {
        format!(
            "{CHECKPOINT_BODY_HEADER}\n{}\n{}\n{}\n{}\n",
            self.key_id,
            self.size,
            hex::encode(self.root),
            self.time
        )
    }
}

/// A checkpoint and its Ed25519 signature over [`Checkpoint::body`].
///
/// JSON form (flat): `{"size":N,"root":"<hex>","time":"<RFC 3339>","key_id":"<hex>","signature":"<base64>"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "SignedRepr", into = "SignedRepr")]
pub struct SignedCheckpoint {
    pub checkpoint: Checkpoint,
    pub signature: [u8; 64],
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignedRepr {
    size: u64,
    #[serde(with = "hex32")]
    root: Hash,
    time: Timestamp,
    key_id: String,
    signature: String,
}

impl From<SignedCheckpoint> for SignedRepr {
    fn from(s: SignedCheckpoint) -> Self {
        let c = s.checkpoint;
        SignedRepr {
            size: c.size,
            root: c.root,
            time: c.time,
            key_id: c.key_id,
            signature: B64.encode(s.signature),
        }
    }
}

impl TryFrom<SignedRepr> for SignedCheckpoint {
    type Error = String;
    fn try_from(r: SignedRepr) -> Result<Self, String> {
        let sig = B64
            .decode(r.signature.as_bytes())
            .map_err(|e| format!("signature: {e}"))?;
        let signature: [u8; 64] = sig
            .try_into()
            .map_err(|_| "signature: expected 64 bytes".to_string())?;
        Ok(SignedCheckpoint {
            checkpoint: Checkpoint {
                size: r.size,
                root: r.root,
                time: r.time,
                key_id: r.key_id,
            },
            signature,
        })
    }
}

/// Why a checkpoint was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint was made by key {found}, expected key {expected}")]
    WrongKey { expected: String, found: String },
    #[error("checkpoint signature does not verify (altered checkpoint or forged signature)")]
    BadSignature,
}

/// Checks `signed` against `key`: the key id must be `key`'s, and the signature valid over the
/// body.
pub fn verify(signed: &SignedCheckpoint, key: &PublicKey) -> Result<(), CheckpointError> {
    if signed.checkpoint.key_id != key.key_id {
        return Err(CheckpointError::WrongKey {
            expected: key.key_id.clone(),
            found: signed.checkpoint.key_id.clone(),
        });
    }
    let sig = ed25519_dalek::Signature::from_bytes(&signed.signature);
    key.key
        .verify_strict(signed.checkpoint.body().as_bytes(), &sig)
        .map_err(|_| CheckpointError::BadSignature)
}

/// Problems with key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: mode {mode:o} lets group or others read the signing key; chmod 600 it")]
    Permissions { path: String, mode: u32 },
    #[error("malformed key: {0}")]
    Format(String),
    #[error("no randomness available: {0}")]
    Random(String),
}

/// An Ed25519 public key that verifies checkpoints. Text form `ed25519:<base64>`.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    key: ed25519_dalek::VerifyingKey,
    key_id: String,
}

impl PublicKey {
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, KeyError> {
        let key = ed25519_dalek::VerifyingKey::from_bytes(bytes)
            .map_err(|e| KeyError::Format(format!("not an Ed25519 public key: {e}")))?;
        Ok(Self::from_dalek(key))
    }

    fn from_dalek(key: ed25519_dalek::VerifyingKey) -> Self {
        let d = Sha256::digest(key.as_bytes());
        PublicKey {
            key,
            key_id: hex::encode(&d[..8]),
        }
    }

    pub fn to_bytes(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// First 8 bytes of SHA-256(public key), hex.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Checks a signature made by [`SigningKey::sign_for`] with the same `context`.
    pub fn verify_for(
        &self,
        context: &str,
        message: &[u8],
        signature: &[u8; 64],
    ) -> Result<(), CheckpointError> {
        let sig = ed25519_dalek::Signature::from_bytes(signature);
        self.key
            .verify_strict(&with_context(context, message), &sig)
            .map_err(|_| CheckpointError::BadSignature)
    }

    /// Reads the text form (`ed25519:<base64>`, surrounding whitespace ignored) from a file.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let s = std::fs::read_to_string(path).map_err(|source| KeyError::Io {
            path: path.display().to_string(),
            source,
        })?;
        s.parse()
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PUBLIC_PREFIX}{}", B64.encode(self.key.as_bytes()))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self}, key_id {})", self.key_id)
    }
}

impl FromStr for PublicKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        let b = s.trim().strip_prefix(PUBLIC_PREFIX).ok_or_else(|| {
            KeyError::Format(format!("public key must start with {PUBLIC_PREFIX}"))
        })?;
        let v = B64
            .decode(b)
            .map_err(|e| KeyError::Format(format!("public key base64: {e}")))?;
        let bytes: [u8; 32] = v
            .try_into()
            .map_err(|_| KeyError::Format("public key must be 32 bytes".into()))?;
        Self::from_bytes(&bytes)
    }
}

impl Serialize for PublicKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The server's checkpoint signing key (Ed25519). `Debug` does not print the secret.
#[derive(Clone)]
pub struct SigningKey {
    key: ed25519_dalek::SigningKey,
    public: PublicKey,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey(public {})", self.public)
    }
}

impl SigningKey {
    /// A new random key (OS randomness).
    pub fn generate() -> Result<Self, KeyError> {
        let mut seed = Zeroizing::new([0u8; 32]);
        getrandom::fill(&mut seed[..]).map_err(|e| KeyError::Random(e.to_string()))?;
        Ok(Self::from_seed(&seed))
    }

    /// The key whose RFC 8032 secret seed is `seed`.
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        let key = ed25519_dalek::SigningKey::from_bytes(seed);
        let public = PublicKey::from_dalek(key.verifying_key());
        SigningKey { key, public }
    }

    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    pub fn key_id(&self) -> &str {
        self.public.key_id()
    }

    /// Signs `(size, root, time)`; `time` is truncated to whole microseconds.
    pub fn sign_checkpoint(&self, size: u64, root: Hash, time: Timestamp) -> SignedCheckpoint {
        let time = Timestamp::from_microsecond(time.as_microsecond()).unwrap_or(time);
        self.sign(Checkpoint {
            size,
            root,
            time,
            key_id: self.key_id().to_string(),
        })
    }

    /// Signs a checkpoint as given (its `key_id` should be this key's).
    pub fn sign(&self, checkpoint: Checkpoint) -> SignedCheckpoint {
        use ed25519_dalek::Signer;
        let signature = self.key.sign(checkpoint.body().as_bytes()).to_bytes();
        SignedCheckpoint {
            checkpoint,
            signature,
        }
    }

    /// Pure Ed25519 over `message`: only for the fixed formats of [`crate::note`].
    pub(crate) fn sign_raw(&self, message: &[u8]) -> [u8; 64] {
        use ed25519_dalek::Signer;
        self.key.sign(message).to_bytes()
    }

    /// Signs `message` for one purpose: the signed bytes are `context`, a newline, then the
    /// message, so a signature made for one purpose (an agent's grant snapshot) can never
    /// pass for another (a checkpoint, whose body starts with its own header line).
    pub fn sign_for(&self, context: &str, message: &[u8]) -> [u8; 64] {
        use ed25519_dalek::Signer;
        self.key.sign(&with_context(context, message)).to_bytes()
    }

    /// The secret text form `ed25519-secret:<base64 seed>\n`.
    pub fn to_secret_text(&self) -> Zeroizing<String> {
        let seed = Zeroizing::new(self.key.to_bytes());
        Zeroizing::new(format!("{SECRET_PREFIX}{}\n", B64.encode(&seed[..])))
    }

    /// Parses the secret text form (surrounding whitespace ignored).
    pub fn from_secret_text(s: &str) -> Result<Self, KeyError> {
        let b = s.trim().strip_prefix(SECRET_PREFIX).ok_or_else(|| {
            KeyError::Format(format!("signing key must start with {SECRET_PREFIX}"))
        })?;
        let v = Zeroizing::new(
            B64.decode(b)
                .map_err(|e| KeyError::Format(format!("signing key base64: {e}")))?,
        );
        let seed: &[u8; 32] = v
            .as_slice()
            .try_into()
            .map_err(|_| KeyError::Format("signing key must be 32 bytes".into()))?;
        Ok(Self::from_seed(seed))
    }

    /// Writes the key to a new file (fails if it exists), mode 0600, synced to disk.
    pub fn save(&self, path: &Path) -> Result<(), KeyError> {
        use std::os::unix::fs::OpenOptionsExt;
        let io = |source| KeyError::Io {
            path: path.display().to_string(),
            source,
        };
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        f.write_all(self.to_secret_text().as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)
    }

    /// Reads a key written by [`save`](Self::save). Refuses a file that group or others can read.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        use std::io::Read;
        use std::os::unix::fs::PermissionsExt;
        let io = |source| KeyError::Io {
            path: path.display().to_string(),
            source,
        };
        let mut f = std::fs::File::open(path).map_err(io)?;
        let mode = f.metadata().map_err(io)?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(KeyError::Permissions {
                path: path.display().to_string(),
                mode: mode & 0o7777,
            });
        }
        let mut s = Zeroizing::new(String::new());
        f.read_to_string(&mut s).map_err(io)?;
        Self::from_secret_text(&s)
    }
}

pub(crate) mod hex32 {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(b: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(b))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(s.as_bytes(), &mut out).map_err(serde::de::Error::custom)?;
        Ok(out)
    }
}

fn with_context(context: &str, message: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(context.len() + 1 + message.len());
    m.extend_from_slice(context.as_bytes());
    m.push(b'\n');
    m.extend_from_slice(message);
    m
}

#[cfg(test)]
mod context_tests {
    use super::*;

    #[test]
    fn a_signature_is_valid_only_for_its_context_message_and_key() {
        let key = SigningKey::from_seed(&[3; 32]);
        let sig = key.sign_for("pedm-test-v1", b"hello");
        let public = key.public_key();
        public.verify_for("pedm-test-v1", b"hello", &sig).unwrap();
        assert!(public.verify_for("pedm-other-v1", b"hello", &sig).is_err());
        assert!(public.verify_for("pedm-test-v1", b"hellO", &sig).is_err());
        let other = SigningKey::from_seed(&[4; 32]);
        assert!(
            other
                .public_key()
                .verify_for("pedm-test-v1", b"hello", &sig)
                .is_err()
        );
    }
}
