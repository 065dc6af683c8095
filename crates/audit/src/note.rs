//! Checkpoints as C2SP signed notes (`tlog-checkpoint`, `signed-note`, `tlog-cosignature`), so
//! that tools outside pedm can check them and witnesses can cosign them.
//!
//! A checkpoint note is the body
//!
//! ```text
//! <origin>\n
//! <size>\n                    decimal
//! <root>\n                    standard base64 of the 32-byte RFC 6962 root
//! ```
//!
//! then an empty line, then one or more signature lines `— <key name> <base64(key ID ||
//! signature)>\n` (U+2014, a space). The log's own signature is Ed25519 over the body, with the
//! key name = the origin and key ID = `SHA-256(name || 0x0A || 0x01 || public key)[:4]`. A
//! witness's cosignature (`cosignature/v1`) is Ed25519 over `cosignature/v1\ntime <t>\n` ||
//! body, key ID = `SHA-256(name || 0x0A || 0x04 || public key)[:4]`, and its signature field is
//! `key ID || t (u64 big-endian) || signature`.
//!
//! Verifier keys (vkeys) are written `<name>+<key ID as 8 hex digits>+<base64(type || public
//! key)>` with type 0x01 (note signer) or 0x04 (cosigner).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use sha2::{Digest, Sha256};

use crate::checkpoint::{PublicKey, SigningKey};
use crate::merkle::Hash;

/// Signature type of an Ed25519 note signer.
pub const ALG_ED25519: u8 = 0x01;
/// Signature type of an Ed25519 `cosignature/v1` cosigner (a witness).
pub const ALG_COSIGNATURE_V1: u8 = 0x04;
const DASH: &str = "\u{2014} ";

/// Why a note was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    #[error("malformed checkpoint note: {0}")]
    Malformed(String),
    #[error("malformed verifier key: {0}")]
    BadKey(String),
    #[error("the note carries no valid signature by {0}")]
    Unsigned(String),
    #[error("checkpoint note is for origin {found:?}, expected {expected:?}")]
    WrongOrigin { expected: String, found: String },
}

/// `SHA-256(name || "\n" || alg || key)[:4]`.
pub fn key_id(name: &str, alg: u8, key: &[u8; 32]) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([b'\n', alg]);
    h.update(key);
    let d = h.finalize();
    [d[0], d[1], d[2], d[3]]
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name
            .chars()
            .any(|c| c.is_whitespace() || c == '+' || c.is_control())
}

/// The checkpoint body (what the log signs).
pub fn checkpoint_body(origin: &str, size: u64, root: &Hash) -> String {
    format!("{origin}\n{size}\n{}\n", B64.encode(root))
}

/// The text of a verifier key.
pub fn vkey(name: &str, alg: u8, key: &[u8; 32]) -> String {
    let mut material = vec![alg];
    material.extend_from_slice(key);
    format!(
        "{name}+{}+{}",
        hex::encode(key_id(name, alg, key)),
        B64.encode(material)
    )
}

/// A parsed verifier key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifierKey {
    pub name: String,
    pub alg: u8,
    pub key: [u8; 32],
}

impl VerifierKey {
    pub fn id(&self) -> [u8; 4] {
        key_id(&self.name, self.alg, &self.key)
    }

    fn public(&self) -> Result<ed25519_dalek::VerifyingKey, NoteError> {
        ed25519_dalek::VerifyingKey::from_bytes(&self.key)
            .map_err(|e| NoteError::BadKey(format!("{}: not an Ed25519 key: {e}", self.name)))
    }
}

impl std::fmt::Display for VerifierKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&vkey(&self.name, self.alg, &self.key))
    }
}

impl std::str::FromStr for VerifierKey {
    type Err = NoteError;
    fn from_str(s: &str) -> Result<Self, NoteError> {
        let s = s.trim();
        // Names have no '+'; the base64 may.
        let mut parts = s.splitn(3, '+');
        let (Some(name), Some(id), Some(b64)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(NoteError::BadKey(format!(
                "{s:?} is not <name>+<key id hex>+<base64 key>"
            )));
        };
        if !valid_name(name) {
            return Err(NoteError::BadKey(format!("bad key name {name:?}")));
        }
        let material = B64
            .decode(b64)
            .map_err(|e| NoteError::BadKey(format!("{name}: base64: {e}")))?;
        let (&alg, key) = material
            .split_first()
            .ok_or_else(|| NoteError::BadKey(format!("{name}: empty key")))?;
        if alg != ALG_ED25519 && alg != ALG_COSIGNATURE_V1 {
            return Err(NoteError::BadKey(format!(
                "{name}: key type {alg:#04x} is not Ed25519 (0x01) or cosignature/v1 (0x04)"
            )));
        }
        let key: [u8; 32] = key
            .try_into()
            .map_err(|_| NoteError::BadKey(format!("{name}: an Ed25519 key is 32 bytes")))?;
        let k = VerifierKey {
            name: name.to_string(),
            alg,
            key,
        };
        if hex::encode(k.id()) != id.to_ascii_lowercase() {
            return Err(NoteError::BadKey(format!(
                "{name}: key id {id} does not match the key"
            )));
        }
        Ok(k)
    }
}

/// One signature line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteSignature {
    pub name: String,
    pub key_id: [u8; 4],
    /// The bytes after the key ID (64 for the log, 8 + 64 for a cosignature).
    pub sig: Vec<u8>,
}

impl NoteSignature {
    pub fn line(&self) -> String {
        let mut b = self.key_id.to_vec();
        b.extend_from_slice(&self.sig);
        format!("{DASH}{} {}\n", self.name, B64.encode(b))
    }

    /// Parses `— <name> <base64>` (with or without the final newline).
    pub fn parse(line: &str) -> Result<Self, NoteError> {
        let rest = line
            .strip_suffix('\n')
            .unwrap_or(line)
            .strip_prefix(DASH)
            .ok_or_else(|| NoteError::Malformed(format!("{line:?} is not a signature line")))?;
        let (name, b64) = rest
            .split_once(' ')
            .ok_or_else(|| NoteError::Malformed(format!("signature line {line:?}")))?;
        let b = B64
            .decode(b64)
            .map_err(|e| NoteError::Malformed(format!("signature of {name}: {e}")))?;
        if b.len() < 5 || !valid_name(name) {
            return Err(NoteError::Malformed(format!("signature line {line:?}")));
        }
        Ok(NoteSignature {
            name: name.to_string(),
            key_id: [b[0], b[1], b[2], b[3]],
            sig: b[4..].to_vec(),
        })
    }
}

/// A checkpoint note, parsed (signatures not yet checked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointNote {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
    pub signatures: Vec<NoteSignature>,
}

impl CheckpointNote {
    pub fn body(&self) -> String {
        checkpoint_body(&self.origin, self.size, &self.root)
    }

    /// The whole note: body, empty line, signature lines.
    pub fn text(&self) -> String {
        let mut s = self.body();
        s.push('\n');
        for sig in &self.signatures {
            s.push_str(&sig.line());
        }
        s
    }

    pub fn parse(text: &str) -> Result<Self, NoteError> {
        let bad = |m: &str| NoteError::Malformed(m.to_string());
        let (body, sigs) = text
            .split_once("\n\n")
            .ok_or_else(|| bad("no empty line between the body and the signatures"))?;
        let mut lines = body.split('\n');
        let origin = lines
            .next()
            .filter(|o| !o.is_empty())
            .ok_or_else(|| bad("no origin"))?;
        let size_text = lines.next().ok_or_else(|| bad("no size line"))?;
        let size: u64 = size_text
            .parse()
            .ok()
            .filter(|s: &u64| s.to_string() == size_text)
            .ok_or_else(|| bad(&format!("size {size_text:?} is not a decimal number")))?;
        let root_text = lines.next().ok_or_else(|| bad("no root hash line"))?;
        let root: Hash = B64
            .decode(root_text)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| bad(&format!("root {root_text:?} is not 32 bytes of base64")))?;
        // Extension lines are allowed by the format; pedm writes none and keeps none.
        if lines.any(|l| !l.is_empty()) {
            return Err(bad("extension lines are not supported"));
        }
        if origin.chars().any(|c| c.is_control()) {
            return Err(bad("control character in the origin"));
        }
        let mut signatures = vec![];
        for l in sigs.split_inclusive('\n') {
            if !l.ends_with('\n') {
                return Err(bad("the last signature line does not end with a newline"));
            }
            signatures.push(NoteSignature::parse(l)?);
        }
        if signatures.is_empty() {
            return Err(bad("no signature lines"));
        }
        Ok(CheckpointNote {
            origin: origin.to_string(),
            size,
            root,
            signatures,
        })
    }

    /// Checks the log's signature (key name = `key.name`, Ed25519) and the origin.
    pub fn verify_log(&self, key: &VerifierKey) -> Result<(), NoteError> {
        if self.origin != key.name {
            return Err(NoteError::WrongOrigin {
                expected: key.name.clone(),
                found: self.origin.clone(),
            });
        }
        let public = key.public()?;
        let body = self.body();
        let ok = self.signatures.iter().any(|s| {
            s.name == key.name
                && s.key_id == key.id()
                && <[u8; 64]>::try_from(s.sig.as_slice()).is_ok_and(|sig| {
                    public
                        .verify_strict(body.as_bytes(), &ed25519_dalek::Signature::from_bytes(&sig))
                        .is_ok()
                })
        });
        ok.then_some(())
            .ok_or_else(|| NoteError::Unsigned(key.to_string()))
    }

    /// The time of a valid cosignature by `witness`, if the note carries one.
    pub fn cosigned_by(&self, witness: &VerifierKey) -> Option<u64> {
        let public = witness.public().ok()?;
        let id = witness.id();
        self.signatures.iter().find_map(|s| {
            if s.name != witness.name || s.key_id != id || s.sig.len() != 72 {
                return None;
            }
            let t = u64::from_be_bytes(s.sig[..8].try_into().ok()?);
            let sig: [u8; 64] = s.sig[8..].try_into().ok()?;
            let msg = cosigned_message(t, &self.body());
            public
                .verify_strict(msg.as_bytes(), &ed25519_dalek::Signature::from_bytes(&sig))
                .is_ok()
                .then_some(t)
        })
    }

    /// Adds signature lines (e.g. a witness's response), skipping ones already present.
    pub fn add_signatures(&mut self, lines: &str) -> Result<(), NoteError> {
        for l in lines.split_inclusive('\n').filter(|l| !l.trim().is_empty()) {
            let s = NoteSignature::parse(l)?;
            if !self.signatures.contains(&s) {
                self.signatures.push(s);
            }
        }
        Ok(())
    }
}

fn cosigned_message(time: u64, body: &str) -> String {
    format!("cosignature/v1\ntime {time}\n{body}")
}

impl SigningKey {
    /// The log's note verifier key for `origin`.
    pub fn note_vkey(&self, origin: &str) -> VerifierKey {
        VerifierKey {
            name: origin.to_string(),
            alg: ALG_ED25519,
            key: self.public_key().to_bytes(),
        }
    }

    /// The checkpoint `(size, root)` as a signed note of the log `origin`.
    pub fn sign_note(&self, origin: &str, size: u64, root: &Hash) -> CheckpointNote {
        let body = checkpoint_body(origin, size, root);
        CheckpointNote {
            origin: origin.to_string(),
            size,
            root: *root,
            signatures: vec![NoteSignature {
                name: origin.to_string(),
                key_id: key_id(origin, ALG_ED25519, &self.public_key().to_bytes()),
                sig: self.sign_raw(body.as_bytes()).to_vec(),
            }],
        }
    }

    /// A witness's verifier key named `name`.
    pub fn cosigner_vkey(&self, name: &str) -> VerifierKey {
        VerifierKey {
            name: name.to_string(),
            alg: ALG_COSIGNATURE_V1,
            key: self.public_key().to_bytes(),
        }
    }

    /// A `cosignature/v1` of `note` at `time` (seconds since the epoch) by the witness `name`.
    pub fn cosign(&self, name: &str, time: u64, note: &CheckpointNote) -> NoteSignature {
        let msg = cosigned_message(time, &note.body());
        let mut sig = time.to_be_bytes().to_vec();
        sig.extend_from_slice(&self.sign_raw(msg.as_bytes()));
        NoteSignature {
            name: name.to_string(),
            key_id: key_id(name, ALG_COSIGNATURE_V1, &self.public_key().to_bytes()),
            sig,
        }
    }
}

/// A public key as the note verifier key of the log `origin`.
pub fn log_vkey(key: &PublicKey, origin: &str) -> VerifierKey {
    VerifierKey {
        name: origin.to_string(),
        alg: ALG_ED25519,
        key: key.to_bytes(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_round_trip_and_verify() {
        let log = SigningKey::from_seed(&[7; 32]);
        let note = log.sign_note("example.com/log", 42, &[9; 32]);
        let text = note.text();
        assert!(text.starts_with("example.com/log\n42\nCQkJ"), "{text}");
        let parsed = CheckpointNote::parse(&text).unwrap();
        assert_eq!(parsed, note);
        let vk: VerifierKey = log
            .note_vkey("example.com/log")
            .to_string()
            .parse()
            .unwrap();
        parsed.verify_log(&vk).unwrap();
        // Another origin, another key, an altered size: refused.
        assert!(matches!(
            parsed.verify_log(&log.note_vkey("other")),
            Err(NoteError::WrongOrigin { .. })
        ));
        let other = SigningKey::from_seed(&[8; 32]);
        assert!(
            parsed
                .verify_log(&other.note_vkey("example.com/log"))
                .is_err()
        );
        let forged = CheckpointNote::parse(&text.replacen("\n42\n", "\n43\n", 1)).unwrap();
        assert!(forged.verify_log(&vk).is_err());

        let w = SigningKey::from_seed(&[5; 32]);
        let mut cosigned = parsed.clone();
        cosigned
            .add_signatures(&w.cosign("w1", 1_700_000_000, &parsed).line())
            .unwrap();
        let wk: VerifierKey = w.cosigner_vkey("w1").to_string().parse().unwrap();
        assert_eq!(cosigned.cosigned_by(&wk), Some(1_700_000_000));
        assert_eq!(parsed.cosigned_by(&wk), None);
        assert_eq!(forged.cosigned_by(&wk), None);
        let reparsed = CheckpointNote::parse(&cosigned.text()).unwrap();
        assert_eq!(reparsed.cosigned_by(&wk), Some(1_700_000_000));
    }

    #[test]
    fn malformed_notes_and_keys_are_named() {
        for bad in [
            "",
            "o\n1\n",
            "o\n01\nAAAA\n\n",
            "o\n1\nAAAA\n\n— o AAAAAAA=\n",
            "o\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\n",
        ] {
            assert!(CheckpointNote::parse(bad).is_err(), "{bad:?}");
        }
        assert!("nope".parse::<VerifierKey>().is_err());
        let k = SigningKey::from_seed(&[1; 32]).note_vkey("x").to_string();
        assert!(k.replace("x+", "y+").parse::<VerifierKey>().is_err());
    }
}
