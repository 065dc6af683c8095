//! Compliance evidence bundles: a directory of files (CSV, JSON, an HTML summary), a manifest
//! naming each file with its SHA-256 and the controls it supports, the manifest's Ed25519
//! signature by the audit key, and two signed audit checkpoints with the consistency proof
//! between them (the log at the period's start is a prefix of the log at its end).
//!
//! [`verify_bundle`] checks all of it offline with the public key alone: a changed, missing or
//! added file, a manifest not signed by that key, a checkpoint not signed by it, or a log that
//! was rewritten between the two checkpoints fails.

use crate::checkpoint::{CheckpointError, PublicKey, SignedCheckpoint, SigningKey, verify};
use crate::merkle::{Hash, ProofError, verify_consistency};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// The signature's domain: a manifest signature is never valid as anything else.
pub const CONTEXT: &str = "pedm evidence bundle v1";
pub const FORMAT: &str = "pedm-evidence-v1";
pub const MANIFEST: &str = "manifest.json";
pub const SIGNATURE: &str = "manifest.sig";
pub const CHECKPOINTS: &str = "checkpoints.json";

/// What the bundle holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: String,
    /// `soc2`, `hipaa`, `gdpr`.
    pub framework: String,
    /// As asked for (`2026-Q3`).
    pub period: String,
    pub since: Timestamp,
    pub until: Timestamp,
    pub generated_at: Timestamp,
    pub generated_by: String,
    /// The audit key's id (first 8 bytes of SHA-256 of the public key, hex).
    pub key_id: String,
    pub files: Vec<FileEntry>,
    pub controls: Vec<Control>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    pub name: String,
    /// SHA-256 of its bytes, hex.
    pub sha256: String,
    pub bytes: u64,
    /// What it is, in words.
    pub what: String,
}

/// A control of the framework and the files that support it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Control {
    pub id: String,
    pub title: String,
    pub files: Vec<String>,
}

/// `checkpoints.json`: the log as signed at (or before) the period's start, as signed at the
/// bundle's making, and the RFC 6962 consistency proof from the first to the second.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoints {
    /// `None`: no checkpoint was signed before the period (the log starts in it).
    pub start: Option<SignedCheckpoint>,
    pub end: SignedCheckpoint,
    /// Hex hashes.
    pub consistency: Vec<String>,
}

/// A file's manifest entry.
pub fn entry(name: &str, what: &str, content: &[u8]) -> FileEntry {
    FileEntry {
        name: name.to_string(),
        sha256: hex::encode(Sha256::digest(content)),
        bytes: content.len() as u64,
        what: what.to_string(),
    }
}

/// The manifest's bytes and their signature (base64), as written to the bundle.
pub fn sign(key: &SigningKey, m: &Manifest) -> (Vec<u8>, String) {
    let mut bytes = serde_json::to_vec_pretty(m).expect("a manifest serialises");
    bytes.push(b'\n');
    let sig = B64.encode(key.sign_for(CONTEXT, &bytes));
    (bytes, format!("{sig}\n"))
}

/// Whether a file name may be in a bundle: a plain name, never a path.
pub fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BundleError {
    #[error("{0} is missing")]
    Missing(String),
    #[error("the manifest's signature is not the audit key's: {0}")]
    Signature(String),
    #[error("the manifest cannot be read: {0}")]
    Manifest(String),
    #[error("{name} was changed: its SHA-256 is {found}, the signed manifest says {expected}")]
    Changed {
        name: String,
        expected: String,
        found: String,
    },
    #[error("{0} is not in the signed manifest (added after signing)")]
    Unlisted(String),
    #[error("checkpoints: {0}")]
    Checkpoint(String),
}

/// What a verified bundle covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleReport {
    pub manifest: Manifest,
    /// Events in the log at the period's start checkpoint (0 without one) and at the end one.
    pub start_size: u64,
    pub end_size: u64,
}

fn checkpoint_err(e: CheckpointError) -> BundleError {
    BundleError::Checkpoint(e.to_string())
}

fn hash_of(s: &str) -> Result<Hash, BundleError> {
    let v = hex::decode(s).map_err(|e| BundleError::Checkpoint(format!("proof hash: {e}")))?;
    v.try_into()
        .map_err(|_| BundleError::Checkpoint("a proof hash is not 32 bytes".into()))
}

/// Checks a bundle's files (by name) offline with the audit public key.
pub fn verify_bundle(
    files: &BTreeMap<String, Vec<u8>>,
    key: &PublicKey,
) -> Result<BundleReport, BundleError> {
    let manifest_bytes = files
        .get(MANIFEST)
        .ok_or_else(|| BundleError::Missing(MANIFEST.into()))?;
    let sig_text = files
        .get(SIGNATURE)
        .ok_or_else(|| BundleError::Missing(SIGNATURE.into()))?;
    let sig: [u8; 64] = B64
        .decode(String::from_utf8_lossy(sig_text).trim())
        .ok()
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| BundleError::Signature("not a base64 Ed25519 signature".into()))?;
    key.verify_for(CONTEXT, manifest_bytes, &sig)
        .map_err(|e| BundleError::Signature(e.to_string()))?;
    let manifest: Manifest =
        serde_json::from_slice(manifest_bytes).map_err(|e| BundleError::Manifest(e.to_string()))?;
    if manifest.format != FORMAT {
        return Err(BundleError::Manifest(format!(
            "format {:?} is not {FORMAT}",
            manifest.format
        )));
    }
    for f in &manifest.files {
        let content = files
            .get(&f.name)
            .ok_or_else(|| BundleError::Missing(f.name.clone()))?;
        let found = hex::encode(Sha256::digest(content));
        if found != f.sha256 {
            return Err(BundleError::Changed {
                name: f.name.clone(),
                expected: f.sha256.clone(),
                found,
            });
        }
    }
    for name in files.keys() {
        if name != MANIFEST && name != SIGNATURE && !manifest.files.iter().any(|f| &f.name == name)
        {
            return Err(BundleError::Unlisted(name.clone()));
        }
    }
    let cps: Checkpoints = serde_json::from_slice(
        files
            .get(CHECKPOINTS)
            .ok_or_else(|| BundleError::Missing(CHECKPOINTS.into()))?,
    )
    .map_err(|e| BundleError::Checkpoint(e.to_string()))?;
    verify(&cps.end, key).map_err(checkpoint_err)?;
    if cps.end.checkpoint.time < manifest.until.min(manifest.generated_at) {
        return Err(BundleError::Checkpoint(format!(
            "the end checkpoint ({}) was signed before the period ended",
            cps.end.checkpoint.time
        )));
    }
    let (start_size, start_root) = match &cps.start {
        Some(s) => {
            verify(s, key).map_err(checkpoint_err)?;
            if s.checkpoint.time > manifest.since {
                return Err(BundleError::Checkpoint(format!(
                    "the start checkpoint ({}) was signed after the period began",
                    s.checkpoint.time
                )));
            }
            (s.checkpoint.size, s.checkpoint.root)
        }
        None => (0, crate::merkle::EMPTY_ROOT),
    };
    let proof = cps
        .consistency
        .iter()
        .map(|h| hash_of(h))
        .collect::<Result<Vec<_>, _>>()?;
    verify_consistency(
        start_size,
        cps.end.checkpoint.size,
        &start_root,
        &cps.end.checkpoint.root,
        &proof,
    )
    .map_err(|e: ProofError| {
        BundleError::Checkpoint(format!(
            "the log at the end is not the log at the start plus events: {e}"
        ))
    })?;
    Ok(BundleReport {
        manifest,
        start_size,
        end_size: cps.end.checkpoint.size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle::{consistency_proof, root};

    fn leaves(n: u8) -> Vec<Hash> {
        (0..n).map(|i| [i; 32]).collect()
    }

    fn bundle(key: &SigningKey) -> BTreeMap<String, Vec<u8>> {
        let t = |s: i64| Timestamp::from_second(s).unwrap();
        let all = leaves(7);
        let start = key.sign_checkpoint(3, root(&all[..3]), t(100));
        let end = key.sign_checkpoint(7, root(&all), t(900));
        let cps = Checkpoints {
            start: Some(start),
            end,
            consistency: consistency_proof(&all, 3, 7)
                .unwrap()
                .iter()
                .map(hex::encode)
                .collect(),
        };
        let mut files = BTreeMap::new();
        files.insert(CHECKPOINTS.to_string(), serde_json::to_vec(&cps).unwrap());
        files.insert("elevations.csv".to_string(), b"user\nalice\n".to_vec());
        let m = Manifest {
            format: FORMAT.into(),
            framework: "soc2".into(),
            period: "x".into(),
            since: t(200),
            until: t(800),
            generated_at: t(900),
            generated_by: "auditor".into(),
            key_id: key.public_key().key_id().to_string(),
            files: files.iter().map(|(n, c)| entry(n, "", c)).collect(),
            controls: vec![],
        };
        let (bytes, sig) = sign(key, &m);
        files.insert(MANIFEST.into(), bytes);
        files.insert(SIGNATURE.into(), sig.into_bytes());
        files
    }

    #[test]
    fn a_bundle_verifies_and_any_change_fails() {
        let key = SigningKey::generate().unwrap();
        let pk = key.public_key();
        let good = bundle(&key);
        let r = verify_bundle(&good, pk).unwrap();
        assert_eq!((r.start_size, r.end_size), (3, 7));

        let mut changed = good.clone();
        changed.insert("elevations.csv".into(), b"user\nmallory\n".to_vec());
        assert!(matches!(
            verify_bundle(&changed, pk),
            Err(BundleError::Changed { .. })
        ));
        let mut added = good.clone();
        added.insert("extra.csv".into(), vec![]);
        assert_eq!(
            verify_bundle(&added, pk),
            Err(BundleError::Unlisted("extra.csv".into()))
        );
        let mut gone = good.clone();
        gone.remove("elevations.csv");
        assert!(matches!(
            verify_bundle(&gone, pk),
            Err(BundleError::Missing(_))
        ));
        let mut resigned = good.clone();
        let m = resigned.get_mut(MANIFEST).unwrap();
        let i = m.len() - 3;
        m[i] ^= 1;
        assert!(matches!(
            verify_bundle(&resigned, pk),
            Err(BundleError::Signature(_))
        ));
        let other = SigningKey::generate().unwrap();
        assert!(matches!(
            verify_bundle(&good, other.public_key()),
            Err(BundleError::Signature(_))
        ));
        assert!(plain_name("sessions.csv") && !plain_name("../x") && !plain_name(".hidden"));
    }
}
