use std::os::unix::fs::PermissionsExt;

use jiff::Timestamp;
use pedm_audit::{
    CheckpointError, KeyError, PublicKey, SignedCheckpoint, SigningKey, root, verify,
};

fn key(b: u8) -> SigningKey {
    SigningKey::from_seed(&[b; 32])
}

fn t() -> Timestamp {
    "2026-11-02T10:00:00.123456789Z".parse().unwrap()
}

#[test]
fn body_is_the_documented_text() {
    let k = key(1);
    let s = k.sign_checkpoint(42, [0xab; 32], t());
    assert_eq!(
        s.checkpoint.body(),
        format!(
            "pedm-audit-checkpoint/v1\n{}\n42\n{}\n2026-11-02T10:00:00.123456Z\n",
            k.key_id(),
            "ab".repeat(32)
        )
    );
    assert_eq!(k.key_id().len(), 16);
    assert!(k.key_id().bytes().all(|b| b.is_ascii_hexdigit()));
}

#[test]
fn sign_verify_and_reject() {
    let k = key(1);
    let other = key(2);
    let s = k.sign_checkpoint(3, root(&[[1; 32], [2; 32], [3; 32]]), t());
    assert_eq!(verify(&s, k.public_key()), Ok(()));

    // Wrong public key.
    assert!(matches!(
        verify(&s, other.public_key()),
        Err(CheckpointError::WrongKey { .. })
    ));
    // Signed by another key that claims our key id.
    let mut forged = other.sign(s.checkpoint.clone());
    forged.checkpoint.key_id = k.key_id().to_string();
    assert_eq!(
        verify(&forged, k.public_key()),
        Err(CheckpointError::BadSignature)
    );
    // Any altered field.
    let mut a = s.clone();
    a.checkpoint.size += 1;
    assert_eq!(
        verify(&a, k.public_key()),
        Err(CheckpointError::BadSignature)
    );
    let mut a = s.clone();
    a.checkpoint.root[7] ^= 1;
    assert_eq!(
        verify(&a, k.public_key()),
        Err(CheckpointError::BadSignature)
    );
    let mut a = s.clone();
    a.checkpoint.time = a
        .checkpoint
        .time
        .checked_add(jiff::SignedDuration::from_secs(1))
        .unwrap();
    assert_eq!(
        verify(&a, k.public_key()),
        Err(CheckpointError::BadSignature)
    );
    let mut a = s.clone();
    a.signature[0] ^= 1;
    assert_eq!(
        verify(&a, k.public_key()),
        Err(CheckpointError::BadSignature)
    );
}

#[test]
fn json_round_trip() {
    let k = key(3);
    let s = k.sign_checkpoint(7, [9; 32], t());
    let j = serde_json::to_string(&s).unwrap();
    assert!(j.starts_with(r#"{"size":7,"root":"0909"#), "{j}");
    assert!(j.contains(r#""signature":""#));
    let back: SignedCheckpoint = serde_json::from_str(&j).unwrap();
    assert_eq!(back, s);
    assert_eq!(verify(&back, k.public_key()), Ok(()));
    // Unknown fields are refused.
    let extra = j.replacen('{', r#"{"extra":1,"#, 1);
    assert!(serde_json::from_str::<SignedCheckpoint>(&extra).is_err());
}

#[test]
fn public_key_text_form() {
    let k = key(4);
    let text = k.public_key().to_string();
    assert!(text.starts_with("ed25519:"));
    let p: PublicKey = format!("  {text}\n").parse().unwrap();
    assert_eq!(&p, k.public_key());
    assert_eq!(p.key_id(), k.key_id());
    assert!("ed25519:AAAA".parse::<PublicKey>().is_err());
    assert!(
        text.replace("ed25519:", "rsa:")
            .parse::<PublicKey>()
            .is_err()
    );
}

#[test]
fn key_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.key");
    let k = SigningKey::generate().unwrap();
    k.save(&path).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let loaded = SigningKey::load(&path).unwrap();
    assert_eq!(loaded.public_key(), k.public_key());
    assert!(!format!("{loaded:?}").contains(&*k.to_secret_text()));

    // Never overwrites.
    assert!(matches!(key(5).save(&path), Err(KeyError::Io { .. })));
    // Refuses a readable key.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(matches!(
        SigningKey::load(&path),
        Err(KeyError::Permissions { mode: 0o644, .. })
    ));
    // Public key file.
    let pubpath = dir.path().join("audit.pub");
    std::fs::write(&pubpath, format!("{}\n", k.public_key())).unwrap();
    assert_eq!(&PublicKey::load(&pubpath).unwrap(), k.public_key());
    // Two generated keys differ.
    assert_ne!(SigningKey::generate().unwrap().public_key(), k.public_key());
}
