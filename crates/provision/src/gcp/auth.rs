//! Access tokens for Google Cloud: the OAuth 2.0 JWT bearer grant with a service-account
//! key (an RS256 assertion signed with the key, exchanged at the key's `token_uri`), or the
//! GCE/GKE metadata server (workload identity). Tokens are cached until shortly before
//! they expire. Neither tokens nor keys ever appear in `Debug` output, logs or errors.

use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rsa::pkcs1v15::SigningKey;
use rsa::sha2::Sha256;
use rsa::signature::{SignatureEncoding, Signer};
use serde::Deserialize;
use serde_json::json;

use crate::config::ConfigError;
use crate::{ProvisionError, truncate};

/// What every call to Resource Manager needs.
const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// The assertion's audience: Google's token endpoint, whatever `token_uri` it is sent to
/// (as google-auth does; Google's token endpoint checks for this).
const AUDIENCE: &str = "https://oauth2.googleapis.com/token";
/// Where the metadata server hands out the attached service account's token and email.
const METADATA_TOKEN: &str = "/computeMetadata/v1/instance/service-accounts/default/token";
const METADATA_EMAIL: &str = "/computeMetadata/v1/instance/service-accounts/default/email";
/// A token is replaced this long before it expires (at most half its life).
const EARLY: Duration = Duration::from_secs(300);
const MAX_ANSWER: usize = 64 * 1024;

/// A service-account key file's fields pedm uses (the file has more).
#[derive(Deserialize)]
struct KeyFile {
    client_email: String,
    private_key: String,
    #[serde(default)]
    private_key_id: Option<String>,
    #[serde(default)]
    token_uri: Option<String>,
}

/// A loaded service-account key.
pub(super) struct ServiceAccountKey {
    pub email: String,
    key_id: Option<String>,
    token_uri: String,
    key: SigningKey<Sha256>,
}

impl std::fmt::Debug for ServiceAccountKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccountKey")
            .field("email", &self.email)
            .field("token_uri", &self.token_uri)
            .field("key", &"<redacted>")
            .finish()
    }
}

impl ServiceAccountKey {
    /// Reads a service-account key JSON file (`client_email`, `private_key` PEM,
    /// `token_uri`). Errors name the file and the field, never the key.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let shown = path.display();
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("credentials_file {shown}: {e}")))?;
        let file: KeyFile = serde_json::from_str(&text).map_err(|e| {
            // serde_json's message names the line and column, not the content.
            ConfigError(format!(
                "credentials_file {shown} is not a service-account key file: {e}"
            ))
        })?;
        Self::from_parts(
            file.client_email,
            &file.private_key,
            file.private_key_id,
            file.token_uri
                .unwrap_or_else(|| "https://oauth2.googleapis.com/token".into()),
        )
        .map_err(|e| ConfigError(format!("credentials_file {shown}: {e}")))
    }

    fn from_parts(
        email: String,
        pem: &str,
        key_id: Option<String>,
        token_uri: String,
    ) -> Result<Self, String> {
        use rsa::pkcs1::DecodeRsaPrivateKey;
        use rsa::pkcs8::DecodePrivateKey;
        if email.is_empty() || !email.contains('@') || !email.chars().all(|c| c.is_ascii_graphic())
        {
            return Err(format!("client_email {email:?} is not an email address"));
        }
        if !token_uri.starts_with("https://") {
            return Err(format!("token_uri {token_uri:?} must be an https:// URL"));
        }
        let key = rsa::RsaPrivateKey::from_pkcs8_pem(pem)
            .or_else(|_| rsa::RsaPrivateKey::from_pkcs1_pem(pem))
            .map_err(|_| "private_key is not an RSA private key in PEM".to_string())?;
        Ok(ServiceAccountKey {
            email,
            key_id,
            token_uri,
            key: SigningKey::<Sha256>::new(key),
        })
    }

    /// The signed JWT bearer assertion, valid for an hour from `now` (Unix seconds).
    pub fn assertion(&self, now: i64) -> Result<String, ProvisionError> {
        let mut header = json!({"alg": "RS256", "typ": "JWT"});
        if let Some(kid) = &self.key_id {
            header["kid"] = json!(kid);
        }
        let claims = json!({
            "iss": self.email,
            "scope": SCOPE,
            "aud": AUDIENCE,
            "iat": now,
            "exp": now + 3600,
        });
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = self
            .key
            .try_sign(input.as_bytes())
            .map_err(|e| ProvisionError::invalid(format!("signing the token request: {e}")))?;
        Ok(format!(
            "{input}.{}",
            URL_SAFE_NO_PAD.encode(signature.to_bytes())
        ))
    }
}

/// Where tokens come from.
#[derive(Debug)]
pub(super) enum Source {
    Key(Box<ServiceAccountKey>),
    /// The metadata server's base URL.
    Metadata(String),
}

struct Cached {
    token: String,
    renew_at: Instant,
}

/// Access tokens from one [`Source`], cached.
pub(super) struct Tokens {
    source: Source,
    cache: tokio::sync::Mutex<Option<Cached>>,
    /// The service account's email, once known (from the key, or asked of the metadata server).
    email: std::sync::Mutex<Option<String>>,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

impl Tokens {
    pub fn new(source: Source) -> Self {
        let email = match &source {
            Source::Key(k) => Some(k.email.clone()),
            Source::Metadata(_) => None,
        };
        Tokens {
            source,
            cache: tokio::sync::Mutex::new(None),
            email: std::sync::Mutex::new(email),
        }
    }

    /// A valid access token (cached, or a fresh one).
    pub async fn token(&self, client: &reqwest::Client) -> Result<String, ProvisionError> {
        let mut cache = self.cache.lock().await;
        if let Some(c) = cache.as_ref()
            && Instant::now() < c.renew_at
        {
            return Ok(c.token.clone());
        }
        let answer = match &self.source {
            Source::Key(k) => {
                let assertion = k.assertion(jiff::Timestamp::now().as_second())?;
                let req = client
                    .post(&k.token_uri)
                    .form(&[("grant_type", JWT_BEARER), ("assertion", &assertion)]);
                fetch(req, &format!("token request to {}", k.token_uri)).await?
            }
            Source::Metadata(base) => {
                let url = format!("{base}{METADATA_TOKEN}");
                let req = client.get(&url).header("Metadata-Flavor", "Google");
                fetch(req, &format!("token request to {url}")).await?
            }
        };
        let answer: TokenAnswer = serde_json::from_slice(&answer).map_err(|e| {
            ProvisionError::refused(format!("the token endpoint's answer is not a token: {e}"))
        })?;
        let life = Duration::from_secs(answer.expires_in.unwrap_or(3600));
        *cache = Some(Cached {
            token: answer.access_token.clone(),
            renew_at: Instant::now() + life - EARLY.min(life / 2),
        });
        Ok(answer.access_token)
    }

    /// Drops the cached token (Google said it is no longer valid).
    pub async fn forget(&self) {
        *self.cache.lock().await = None;
    }

    /// The service account's email if already known.
    pub fn known_email(&self) -> Option<String> {
        self.email.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The service account's email, asking the metadata server if need be.
    pub async fn email(&self, client: &reqwest::Client) -> Result<String, ProvisionError> {
        if let Some(e) = self.known_email() {
            return Ok(e);
        }
        let Source::Metadata(base) = &self.source else {
            return Err(ProvisionError::invalid("no service account email"));
        };
        let url = format!("{base}{METADATA_EMAIL}");
        let req = client.get(&url).header("Metadata-Flavor", "Google");
        let body = fetch(req, &url).await?;
        let email = String::from_utf8_lossy(&body).trim().to_string();
        if email.is_empty() || !email.chars().all(|c| c.is_ascii_graphic()) {
            return Err(ProvisionError::refused(format!(
                "{url} answered no service account email"
            )));
        }
        *self.email.lock().unwrap_or_else(|e| e.into_inner()) = Some(email.clone());
        Ok(email)
    }
}

/// Sends a token or metadata request; the body of a 2xx answer. The request carries a
/// signed assertion at most: errors say what failed, never what was sent.
async fn fetch(req: reqwest::RequestBuilder, what: &str) -> Result<Vec<u8>, ProvisionError> {
    let resp = req.send().await.map_err(|e| {
        ProvisionError::unreachable(format!("{what}: {}", crate::transport_error(&e)))
    })?;
    let status = resp.status();
    let body = super::api::read_limited(resp, MAX_ANSWER)
        .await
        .map_err(|e| ProvisionError::unreachable(format!("{what}: reading the answer: {e}")))?;
    if status.is_success() {
        return Ok(body);
    }
    // OAuth errors: {"error": "invalid_grant", "error_description": "…"}.
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let code = v["error"].as_str().unwrap_or("");
    let text = v["error_description"].as_str().unwrap_or("");
    let msg = format!(
        "{what}: HTTP {status}: {}",
        truncate(format!("{code} {text}").trim(), 500)
    );
    if status.is_server_error() || status.as_u16() == 429 || status.as_u16() == 408 {
        Err(ProvisionError::Unreachable(msg))
    } else {
        Err(ProvisionError::Refused(msg))
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A 2048-bit RSA key made for these tests only (PKCS#8 PEM), as in a key file.
    pub const TEST_KEY: &str = include_str!("../../tests/support/gcp_test_key.pem");

    #[test]
    fn the_assertion_is_an_rs256_jwt_the_public_key_verifies() {
        use rsa::pkcs1v15::{Signature, VerifyingKey};
        use rsa::pkcs8::DecodePrivateKey;
        use rsa::signature::Verifier;
        let k = ServiceAccountKey::from_parts(
            "pedm@p.iam.gserviceaccount.com".into(),
            TEST_KEY,
            Some("k1".into()),
            "https://oauth2.googleapis.com/token".into(),
        )
        .unwrap();
        let jwt = k.assertion(1_800_000_000).unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(claims["iss"], "pedm@p.iam.gserviceaccount.com");
        assert_eq!(claims["aud"], "https://oauth2.googleapis.com/token");
        assert_eq!(claims["scope"], SCOPE);
        assert_eq!(claims["exp"], 1_800_003_600);
        let header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(header, json!({"alg": "RS256", "typ": "JWT", "kid": "k1"}));
        let public = rsa::RsaPrivateKey::from_pkcs8_pem(TEST_KEY)
            .unwrap()
            .to_public_key();
        let sig =
            Signature::try_from(URL_SAFE_NO_PAD.decode(parts[2]).unwrap().as_slice()).unwrap();
        VerifyingKey::<Sha256>::new(public)
            .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &sig)
            .unwrap();
        // The key never shows.
        let dbg = format!("{k:?}");
        assert!(
            dbg.contains("<redacted>") && !dbg.contains("PRIVATE"),
            "{dbg}"
        );
    }

    #[test]
    fn bad_keys_are_refused_without_showing_them() {
        for (email, pem, uri) in [
            (
                "pedm@x",
                "-----BEGIN PRIVATE KEY-----\nnotakey\n-----END PRIVATE KEY-----\n",
                "https://t/token",
            ),
            ("not an email", TEST_KEY, "https://t/token"),
            ("pedm@x", TEST_KEY, "http://t/token"),
        ] {
            let e = ServiceAccountKey::from_parts(email.into(), pem, None, uri.into()).unwrap_err();
            assert!(!e.contains("notakey") && !e.contains("BEGIN"), "{e}");
        }
    }
}
