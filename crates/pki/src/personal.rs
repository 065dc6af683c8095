//! The cipher behind sealed personal data in the audit log (`pedm_core::privacy`).
//!
//! Each data subject has a random 256-bit key, stored wrapped under the key-encryption key
//! ([`crate::sealed`], bound to the key id). A value is sealed with AES-256-GCM-SIV (RFC 8452)
//! under a fixed nonce with the key id as associated data: deterministic by design — the same
//! value under the same key gives the same text, so sealed names can still be filtered on —
//! and GCM-SIV's misuse resistance means a repeated nonce reveals only that two values are
//! equal, nothing else. Once the subject key is deleted, what was sealed under it cannot be
//! opened by anyone, the KEK's holder included.

use crate::sealed::{KeyEncryptionKey, sealed_by};
use aws_lc_rs::aead::{AES_256_GCM_SIV, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use pedm_core::privacy::{PersonalDataCipher, PrivacyError, SubjectKey};
use zeroize::Zeroizing;

/// Subject keys wrapped under the current KEK, opened with it or an older one (while a KEK
/// change is under way).
pub struct PersonalDataKeys {
    current: KeyEncryptionKey,
    previous: Vec<KeyEncryptionKey>,
}

fn what(key_id: &str) -> String {
    format!("personal data key {key_id}")
}

impl PersonalDataKeys {
    pub fn new(current: KeyEncryptionKey, previous: Vec<KeyEncryptionKey>) -> Self {
        PersonalDataKeys { current, previous }
    }

    fn unwrap(&self, key: &SubjectKey) -> Result<LessSafeKey, PrivacyError> {
        let by = sealed_by(&key.wrapped);
        let kek = std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|k| Some(k.id()) == by)
            .unwrap_or(&self.current);
        let raw = kek
            .open(&what(&key.key_id), &key.wrapped)
            .map_err(|e| PrivacyError::Key(e.to_string()))?;
        let unbound = UnboundKey::new(&AES_256_GCM_SIV, &raw)
            .map_err(|e| PrivacyError::Key(format!("subject key {}: {e}", key.key_id)))?;
        Ok(LessSafeKey::new(unbound))
    }
}

impl PersonalDataCipher for PersonalDataKeys {
    fn new_key(&self) -> Result<(String, String), PrivacyError> {
        let rng = SystemRandom::new();
        let mut raw = Zeroizing::new([0u8; 32]);
        let mut id = [0u8; 8];
        rng.fill(raw.as_mut())
            .and_then(|()| rng.fill(&mut id))
            .map_err(|e| PrivacyError::Crypto(e.to_string()))?;
        let key_id: String = id.iter().map(|b| format!("{b:02x}")).collect();
        let wrapped = self
            .current
            .seal(&what(&key_id), raw.as_ref())
            .map_err(|e| PrivacyError::Key(e.to_string()))?;
        Ok((key_id, wrapped))
    }

    fn seal(&self, key: &SubjectKey, plain: &str) -> Result<String, PrivacyError> {
        let k = self.unwrap(key)?;
        let mut buf = plain.as_bytes().to_vec();
        k.seal_in_place_append_tag(
            Nonce::assume_unique_for_key([0; NONCE_LEN]),
            Aad::from(key.key_id.as_bytes()),
            &mut buf,
        )
        .map_err(|e| PrivacyError::Crypto(e.to_string()))?;
        Ok(B64.encode(buf))
    }

    fn open(&self, key: &SubjectKey, sealed: &str) -> Result<String, PrivacyError> {
        let k = self.unwrap(key)?;
        let mut buf = B64
            .decode(sealed)
            .map_err(|_| PrivacyError::Crypto("sealed value is not base64url".into()))?;
        let plain = k
            .open_in_place(
                Nonce::assume_unique_for_key([0; NONCE_LEN]),
                Aad::from(key.key_id.as_bytes()),
                &mut buf,
            )
            .map_err(|_| PrivacyError::Crypto("sealed value does not authenticate".into()))?;
        String::from_utf8(plain.to_vec())
            .map_err(|_| PrivacyError::Crypto("sealed value is not UTF-8".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kek(b: u8) -> KeyEncryptionKey {
        KeyEncryptionKey::from_bytes(&[b; 32]).unwrap()
    }

    fn subject(c: &PersonalDataKeys) -> SubjectKey {
        let (key_id, wrapped) = c.new_key().unwrap();
        SubjectKey {
            subject: "alice".into(),
            key_id,
            wrapped,
            created_at: jiff::Timestamp::UNIX_EPOCH,
            hold: None,
        }
    }

    #[test]
    fn sealing_is_deterministic_per_key_and_opens_only_with_it() {
        let c = PersonalDataKeys::new(kek(1), vec![]);
        let a = subject(&c);
        let b = subject(&c);
        assert_eq!(a.key_id.len(), 16);
        assert_ne!(a.key_id, b.key_id);
        let s = c.seal(&a, "alice").unwrap();
        assert_eq!(s, c.seal(&a, "alice").unwrap());
        assert_ne!(s, c.seal(&b, "alice").unwrap());
        assert_ne!(s, c.seal(&a, "alicf").unwrap());
        assert!(!s.contains("alice"));
        assert_eq!(c.open(&a, &s).unwrap(), "alice");
        assert!(c.open(&b, &s).is_err());
        // The same wrapped key under another key id (associated data) does not open.
        let swapped = SubjectKey {
            key_id: b.key_id.clone(),
            ..a.clone()
        };
        assert!(c.open(&swapped, &s).is_err());
    }

    #[test]
    fn keys_wrapped_under_the_previous_kek_still_open() {
        let old = PersonalDataKeys::new(kek(1), vec![]);
        let a = subject(&old);
        let s = old.seal(&a, "free text").unwrap();
        let new = PersonalDataKeys::new(kek(2), vec![kek(1)]);
        assert_eq!(new.open(&a, &s).unwrap(), "free text");
        let other = PersonalDataKeys::new(kek(3), vec![]);
        assert!(other.open(&a, &s).is_err());
    }
}
