//! pedmd as an OpenID Connect issuer: ES256 ID tokens for a grant's holder, for systems that
//! trust pedm's tokens (a Kubernetes API server with `--oidc-issuer-url`), and the discovery
//! document and JWKS they fetch to check them.
//!
//! Keys are P-256 PKCS#8 files (made, mode 0600, if the first is missing); the first signs,
//! the rest are older keys still published after a rotation. Instances sharing a database
//! must share them.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair,
    UnparsedPublicKey,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde_json::{Map, Value, json};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum OidcKeyError {
    #[error("cannot read the OIDC signing key {path}: {why}")]
    Read { path: PathBuf, why: String },
    #[error("cannot write the OIDC signing key {path}: {why}")]
    Write { path: PathBuf, why: String },
    #[error("no OIDC signing key configured")]
    NoKey,
    #[error(
        "issuer {0:?} must be pedmd's https:// address without a path (http:// only on loopback)"
    )]
    Issuer(String),
    #[error("signing failed")]
    Signing,
}

/// A published public key: its key id and uncompressed point (`04 || x || y`).
struct Published {
    kid: String,
    point: Vec<u8>,
}

impl Published {
    fn of(point: &[u8]) -> Published {
        Published {
            kid: thumbprint(point),
            point: point.to_vec(),
        }
    }
    fn jwk(&self) -> Value {
        let (x, y) = coordinates(&self.point);
        json!({"kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256",
               "kid": self.kid, "x": B64.encode(x), "y": B64.encode(y)})
    }
}

fn coordinates(point: &[u8]) -> (&[u8], &[u8]) {
    // An uncompressed P-256 point: 0x04, 32 bytes of x, 32 of y.
    point[1..].split_at(32)
}

/// The RFC 7638 thumbprint of the key's JWK, as its key id.
fn thumbprint(point: &[u8]) -> String {
    let (x, y) = coordinates(point);
    let canonical = format!(
        r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
        B64.encode(x),
        B64.encode(y)
    );
    B64.encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes()).as_ref())
}

/// The issuer: its URL, the signing key, and every key it publishes.
pub struct OidcIssuer {
    issuer: String,
    signer: EcdsaKeyPair,
    published: Vec<Published>,
    rng: SystemRandom,
}

impl OidcIssuer {
    /// `issuer` is the URL relying parties are configured with: discovery is served at
    /// `<issuer>/.well-known/openid-configuration`.
    pub fn load(issuer: &str, keys: &[PathBuf]) -> Result<OidcIssuer, OidcKeyError> {
        check_issuer(issuer)?;
        let (first, older) = keys.split_first().ok_or(OidcKeyError::NoKey)?;
        let signer = load_or_create(first)?;
        let mut published = vec![Published::of(signer.public_key().as_ref())];
        for p in older {
            let k = read_key(p)?;
            published.push(Published::of(k.public_key().as_ref()));
        }
        Ok(OidcIssuer {
            issuer: issuer.trim_end_matches('/').to_string(),
            signer,
            published,
            rng: SystemRandom::new(),
        })
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// `claims` with `iss` set to this issuer, as a compact JWS (ES256, `kid` of the signing
    /// key).
    pub fn sign(&self, mut claims: Map<String, Value>) -> Result<String, OidcKeyError> {
        claims.insert("iss".into(), Value::String(self.issuer.clone()));
        let header = json!({"alg": "ES256", "typ": "JWT", "kid": self.published[0].kid});
        let signing_input = format!(
            "{}.{}",
            B64.encode(header.to_string()),
            B64.encode(Value::Object(claims).to_string())
        );
        // The fixed (r || s) form is what JWS's ES256 is (RFC 7518, 3.4).
        let sig = self
            .signer
            .sign(&self.rng, signing_input.as_bytes())
            .map_err(|_| OidcKeyError::Signing)?;
        Ok(format!("{signing_input}.{}", B64.encode(sig.as_ref())))
    }

    /// `/.well-known/openid-configuration`: what a relying party needs to check ID tokens.
    pub fn discovery(&self) -> Value {
        json!({
            "issuer": self.issuer,
            "jwks_uri": format!("{}{JWKS_PATH}", self.issuer),
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256"],
            "claims_supported": ["iss", "sub", "aud", "exp", "iat", "nbf", "jti",
                                 "preferred_username", "pedm_grant", "pedm_role"],
        })
    }

    /// The JWKS: every published key, the signing one first.
    pub fn jwks(&self) -> Value {
        json!({"keys": self.published.iter().map(Published::jwk).collect::<Vec<_>>()})
    }

    /// Whether `token` carries a valid signature by one of the published keys (for tests and
    /// self-checks; relying parties do this themselves).
    pub fn signature_ok(&self, token: &str) -> bool {
        let Some((input, sig)) = token.rsplit_once('.') else {
            return false;
        };
        let Ok(sig) = B64.decode(sig) else {
            return false;
        };
        self.published.iter().any(|p| {
            UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &p.point)
                .verify(input.as_bytes(), &sig)
                .is_ok()
        })
    }
}

/// Where the JWKS is served, under the issuer URL.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";

fn check_issuer(issuer: &str) -> Result<(), OidcKeyError> {
    let bad = || OidcKeyError::Issuer(issuer.to_string());
    let rest = if let Some(r) = issuer.strip_prefix("https://") {
        r
    } else if let Some(r) = issuer.strip_prefix("http://") {
        let host = r.split(['/', ':']).next().unwrap_or_default();
        if !(host == "localhost" || host == "127.0.0.1" || r.starts_with("[::1]")) {
            return Err(bad());
        }
        r
    } else {
        return Err(bad());
    };
    // pedmd serves discovery at its root: an issuer with a path would point elsewhere.
    let path = rest.find('/').map(|i| &rest[i..]).unwrap_or("");
    if rest.is_empty()
        || !(path.is_empty() || path == "/")
        || rest.contains(['?', '#'])
        || rest.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(bad());
    }
    Ok(())
}

fn read_key(path: &Path) -> Result<EcdsaKeyPair, OidcKeyError> {
    let der = std::fs::read(path).map_err(|e| OidcKeyError::Read {
        path: path.to_owned(),
        why: e.to_string(),
    })?;
    parse(path, &der)
}

fn parse(path: &Path, der: &[u8]) -> Result<EcdsaKeyPair, OidcKeyError> {
    EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der).map_err(|e| {
        OidcKeyError::Read {
            path: path.to_owned(),
            why: format!("not a P-256 PKCS#8 key: {e}"),
        }
    })
}

/// Reads the PKCS#8 key at `path`, or makes a P-256 one there (mode 0600).
fn load_or_create(path: &Path) -> Result<EcdsaKeyPair, OidcKeyError> {
    if path.exists() {
        return read_key(path);
    }
    let write_err = |why: String| OidcKeyError::Write {
        path: path.to_owned(),
        why,
    };
    let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
        .map_err(|e| write_err(e.to_string()))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| write_err(e.to_string()))?;
    }
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| write_err(e.to_string()))?;
        f.write_all(doc.as_ref())
            .and_then(|()| f.sync_all())
            .map_err(|e| write_err(e.to_string()))?;
    }
    tracing::info!(file = %path.display(), "created the OIDC issuer's signing key");
    parse(path, doc.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_against_the_published_keys_only() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("oidc.key");
        let i = OidcIssuer::load("https://pedm.example.com/", std::slice::from_ref(&key)).unwrap();
        assert_eq!(i.issuer(), "https://pedm.example.com");
        let mut claims = Map::new();
        claims.insert("sub".into(), "alice".into());
        let t = i.sign(claims).unwrap();
        assert!(i.signature_ok(&t));
        let parts: Vec<&str> = t.split('.').collect();
        let payload: Value = serde_json::from_slice(&B64.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(payload["iss"], "https://pedm.example.com");
        let header: Value = serde_json::from_slice(&B64.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(header["kid"], i.jwks()["keys"][0]["kid"]);
        // Tampered claims fail.
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            B64.encode(r#"{"sub":"root"}"#),
            parts[2]
        );
        assert!(!i.signature_ok(&forged));

        // The same key again after a restart; a rotated-in key publishes both.
        let again =
            OidcIssuer::load("https://pedm.example.com", std::slice::from_ref(&key)).unwrap();
        assert!(again.signature_ok(&t));
        let rotated = OidcIssuer::load(
            "https://pedm.example.com",
            &[dir.path().join("new.key"), key],
        )
        .unwrap();
        assert_eq!(rotated.jwks()["keys"].as_array().unwrap().len(), 2);
        assert!(rotated.signature_ok(&t));
        assert_ne!(rotated.jwks()["keys"][0]["kid"], i.jwks()["keys"][0]["kid"]);
    }

    #[test]
    fn issuers_are_https_or_loopback() {
        for (u, ok) in [
            ("https://pedm.example.com", true),
            ("http://127.0.0.1:8080", true),
            ("http://localhost:1", true),
            ("http://pedm.example.com", false),
            ("https://pedm.example.com/?x=1", false),
            ("https://pedm.example.com/oidc", false),
            ("https://pedm.example.com:8443/", true),
            ("pedm.example.com", false),
            ("https://", false),
        ] {
            assert_eq!(check_issuer(u).is_ok(), ok, "{u}");
        }
    }
}
