//! API tokens: `pedm_<id>_<secret>`. The id finds the record; the secret is checked against its
//! stored SHA-256 in constant time, so neither the lookup nor the comparison leaks the secret.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub const PREFIX: &str = "pedm_";

/// A freshly minted token: the string to hand out once, and what to store.
pub struct MintedToken {
    pub id: String,
    pub secret_hash: [u8; 32],
    /// The whole token as the user will present it. Shown once, never stored or logged.
    pub token: String,
}

pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    // The OS random source failing is not recoverable in a security product.
    getrandom::fill(&mut b).expect("operating system random source failed");
    b
}

pub fn mint() -> MintedToken {
    let id = hex::encode(random_bytes::<8>());
    let secret = URL_SAFE_NO_PAD.encode(random_bytes::<32>());
    MintedToken {
        secret_hash: hash_secret(&secret),
        token: format!("{PREFIX}{id}_{secret}"),
        id,
    }
}

pub fn hash_secret(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Splits a presented token into (id, secret). `None` if it is not of our form.
pub fn parse(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix(PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let id_ok = id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit());
    (id_ok && !secret.is_empty()).then_some((id, secret))
}

/// Constant-time check of a presented secret against the stored hash.
pub fn verify(secret: &str, stored_hash: &[u8; 32]) -> bool {
    hash_secret(secret).ct_eq(stored_hash).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mint_parse_verify() {
        let t = mint();
        let (id, secret) = parse(&t.token).expect("parses");
        assert_eq!(id, t.id);
        assert!(verify(secret, &t.secret_hash));
        assert!(!verify("wrong", &t.secret_hash));
        let other = mint();
        assert_ne!(other.token, t.token);
    }

    #[test]
    fn rejects_foreign_forms() {
        assert!(parse("Bearer x").is_none());
        assert!(parse("pedm_short_x").is_none());
        assert!(parse("pedm_0123456789abcdef_").is_none());
        assert!(parse("pedm_0123456789abcdef").is_none());
    }
}
