//! OpenID Connect providers (`[[auth.oidc]]`): discovery, the provider's keys (refetched on an
//! unknown key id, at most once per [`JWKS_REFETCH_EVERY`]), the token endpoint (code, device
//! code and refresh grants, authenticated with the client secret, which never leaves the
//! server) and ID-token verification: signature with an asymmetric algorithm the key allows
//! (never `none`, never HMAC), `iss`, `aud`, `exp`, `nbf`, `iat` within the allowed clock skew,
//! `nonce` when the flow sent one, `at_hash` when the token carries one.

pub mod http_client;

pub mod config;

pub use config::OidcSettings;
use http_client::Adapter;
use openidconnect::core::{
    CoreAuthDisplay, CoreClaimName, CoreClaimType, CoreClientAuthMethod, CoreGenderClaim,
    CoreGrantType, CoreIdTokenVerifier, CoreJsonWebKey, CoreJsonWebKeySet,
    CoreJweContentEncryptionAlgorithm, CoreJweKeyManagementAlgorithm, CoreJwsSigningAlgorithm,
    CoreResponseMode, CoreResponseType, CoreSubjectIdentifierType,
};
use openidconnect::{
    AdditionalProviderMetadata, ClientId, EmptyAdditionalClaims, IdToken, IssuerUrl, Nonce,
    ProviderMetadata,
};
use pedm_core::sso::VerifiedIdentity;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Digest;
use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::RwLock;

/// The shortest time between two JWKS fetches caused by unknown key ids.
pub const JWKS_REFETCH_EVERY: Duration = Duration::from_secs(10);

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct DeviceMeta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_authorization_endpoint: Option<String>,
}
impl AdditionalProviderMetadata for DeviceMeta {}

type Metadata = ProviderMetadata<
    DeviceMeta,
    CoreAuthDisplay,
    CoreClientAuthMethod,
    CoreClaimName,
    CoreClaimType,
    CoreGrantType,
    CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm,
    CoreJsonWebKey,
    CoreResponseMode,
    CoreResponseType,
    CoreSubjectIdentifierType,
>;

type PedmIdToken = IdToken<
    EmptyAdditionalClaims,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;

/// Why a sign-on step failed. The message names the reason; it never contains a token.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    /// The provider could not be reached or answered nonsense (503).
    #[error("identity provider unavailable: {0}")]
    Unavailable(String),
    /// The provider refused (a code, a refresh token) or the token failed a check (401).
    #[error("{0}")]
    Refused(String),
}

struct Discovered {
    meta: Metadata,
    jwks: CoreJsonWebKeySet,
    jwks_fetched: Instant,
}

/// What a token endpoint answered.
pub struct TokenAnswer {
    pub id_token: Option<String>,
    pub access_token: Option<String>,
    pub refresh_token: Option<String>,
}

/// A device authorisation the provider started.
pub struct DeviceStart {
    pub device_code: String,
    pub user_code: String,
    pub verification_uri: String,
    pub verification_uri_complete: Option<String>,
    pub expires_in: u64,
    pub interval: u64,
}

/// The answer to one poll of the device flow.
pub enum DevicePoll {
    Pending { slow_down: bool },
    Done(TokenAnswer),
}

pub struct Provider {
    pub settings: OidcSettings,
    http: Adapter,
    state: RwLock<Option<Discovered>>,
}

impl Provider {
    pub fn new(settings: OidcSettings) -> Self {
        Provider {
            settings,
            http: Adapter(http_client::client()),
            state: RwLock::new(None),
        }
    }

    async fn discover(&self) -> Result<(), OidcError> {
        if self.state.read().await.is_some() {
            return Ok(());
        }
        let issuer = IssuerUrl::new(self.settings.issuer.clone())
            .map_err(|e| OidcError::Unavailable(format!("issuer URL: {e}")))?;
        let f = self.http.as_fn();
        // Checks that the document's `issuer` is exactly the configured one.
        let meta = Metadata::discover_async(issuer, &f)
            .await
            .map_err(|e| OidcError::Unavailable(format!("discovery failed: {e}")))?;
        let jwks = meta.jwks().clone();
        *self.state.write().await = Some(Discovered {
            meta,
            jwks,
            jwks_fetched: Instant::now(),
        });
        Ok(())
    }

    /// Refetches the provider's keys unless they were fetched less than
    /// [`JWKS_REFETCH_EVERY`] ago. Returns whether it did.
    async fn refetch_jwks(&self) -> Result<bool, OidcError> {
        let mut guard = self.state.write().await;
        let Some(d) = guard.as_mut() else {
            return Ok(false);
        };
        if d.jwks_fetched.elapsed() < JWKS_REFETCH_EVERY {
            return Ok(false);
        }
        let f = self.http.as_fn();
        let jwks = CoreJsonWebKeySet::fetch_async(d.meta.jwks_uri(), &f)
            .await
            .map_err(|e| OidcError::Unavailable(format!("fetching the provider's keys: {e}")))?;
        d.jwks = jwks;
        d.jwks_fetched = Instant::now();
        tracing::info!(provider = %self.settings.name, "refetched the provider's signing keys");
        Ok(true)
    }

    async fn endpoint(&self, which: &str) -> Result<String, OidcError> {
        self.discover().await?;
        let guard = self.state.read().await;
        let d = guard
            .as_ref()
            .ok_or_else(|| OidcError::Unavailable("not discovered".into()))?;
        let url = match which {
            "authorization" => Some(d.meta.authorization_endpoint().url().to_string()),
            "token" => d.meta.token_endpoint().map(|u| u.url().to_string()),
            "device" => d
                .meta
                .additional_metadata()
                .device_authorization_endpoint
                .clone(),
            _ => None,
        };
        url.ok_or_else(|| {
            OidcError::Unavailable(format!("the provider announces no {which} endpoint"))
        })
    }

    /// The URL the person's browser is sent to for an authorisation-code + PKCE (S256) flow.
    pub async fn authorization_url(
        &self,
        redirect_uri: &str,
        state: &str,
        nonce: &str,
        code_challenge: &str,
    ) -> Result<String, OidcError> {
        let base = self.endpoint("authorization").await?;
        let mut url = reqwest::Url::parse(&base)
            .map_err(|e| OidcError::Unavailable(format!("authorization endpoint: {e}")))?;
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.settings.client_id)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("scope", &self.settings.scopes.join(" "))
            .append_pair("state", state)
            .append_pair("nonce", nonce)
            .append_pair("code_challenge", code_challenge)
            .append_pair("code_challenge_method", "S256");
        Ok(url.to_string())
    }

    async fn token_call(
        &self,
        url: &str,
        form: &[(&str, &str)],
    ) -> Result<Result<Value, (String, String)>, OidcError> {
        let resp = self
            .http
            .0
            .post(url)
            .basic_auth(
                form_urlencode(&self.settings.client_id),
                Some(form_urlencode(self.settings.client_secret.expose())),
            )
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(
                form.iter()
                    .map(|(k, v)| format!("{}={}", url_encode(k), url_encode(v)))
                    .collect::<Vec<_>>()
                    .join("&"),
            )
            .send()
            .await
            .map_err(|e| OidcError::Unavailable(e.without_url().to_string()))?;
        let status = resp.status();
        let body: Value = resp
            .json()
            .await
            .map_err(|e| OidcError::Unavailable(format!("unreadable answer: {e}")))?;
        if status.is_success() {
            Ok(Ok(body))
        } else {
            let err = body["error"].as_str().unwrap_or("error").to_string();
            let desc = body["error_description"]
                .as_str()
                .unwrap_or("")
                .chars()
                .take(200)
                .collect();
            Ok(Err((err, desc)))
        }
    }

    fn answer(v: &Value) -> TokenAnswer {
        let s = |k: &str| v[k].as_str().map(str::to_string);
        TokenAnswer {
            id_token: s("id_token"),
            access_token: s("access_token"),
            refresh_token: s("refresh_token"),
        }
    }

    pub async fn exchange_code(
        &self,
        code: &str,
        verifier: &str,
        redirect_uri: &str,
    ) -> Result<TokenAnswer, OidcError> {
        let url = self.endpoint("token").await?;
        let form = [
            ("grant_type", "authorization_code"),
            ("code", code),
            ("code_verifier", verifier),
            ("redirect_uri", redirect_uri),
        ];
        match self.token_call(&url, &form).await? {
            Ok(v) => Ok(Self::answer(&v)),
            Err((e, d)) => Err(OidcError::Refused(format!(
                "the provider refused the code: {e} {d}"
            ))),
        }
    }

    pub async fn refresh(&self, refresh_token: &str) -> Result<TokenAnswer, OidcError> {
        let url = self.endpoint("token").await?;
        let form = [
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ];
        match self.token_call(&url, &form).await? {
            Ok(v) => Ok(Self::answer(&v)),
            Err((e, d)) => Err(OidcError::Refused(format!(
                "the provider refused the refresh: {e} {d}"
            ))),
        }
    }

    pub async fn device_start(&self) -> Result<DeviceStart, OidcError> {
        let url = self.endpoint("device").await?;
        let scopes = self.settings.scopes.join(" ");
        let form = [
            ("client_id", self.settings.client_id.as_str()),
            ("scope", &scopes),
        ];
        let v = match self.token_call(&url, &form).await? {
            Ok(v) => v,
            Err((e, d)) => {
                return Err(OidcError::Refused(format!(
                    "the provider refused the device authorisation: {e} {d}"
                )));
            }
        };
        let s = |k: &str| {
            v[k].as_str()
                .map(str::to_string)
                .ok_or_else(|| OidcError::Unavailable(format!("device answer lacks {k}")))
        };
        Ok(DeviceStart {
            device_code: s("device_code")?,
            user_code: s("user_code")?,
            verification_uri: s("verification_uri")?,
            verification_uri_complete: v["verification_uri_complete"].as_str().map(Into::into),
            expires_in: v["expires_in"].as_u64().unwrap_or(600).min(1800),
            interval: v["interval"].as_u64().unwrap_or(5).clamp(1, 60),
        })
    }

    pub async fn device_poll(&self, device_code: &str) -> Result<DevicePoll, OidcError> {
        let url = self.endpoint("token").await?;
        let form = [
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("device_code", device_code),
            ("client_id", self.settings.client_id.as_str()),
        ];
        match self.token_call(&url, &form).await? {
            Ok(v) => Ok(DevicePoll::Done(Self::answer(&v))),
            Err((e, _)) if e == "authorization_pending" => {
                Ok(DevicePoll::Pending { slow_down: false })
            }
            Err((e, _)) if e == "slow_down" => Ok(DevicePoll::Pending { slow_down: true }),
            Err((e, d)) => Err(OidcError::Refused(format!(
                "the provider ended the device authorisation: {e} {d}"
            ))),
        }
    }

    /// Verifies an ID token and maps its claims. `nonce`: the one the flow sent (required to
    /// match), or `None` where the flow sent none (device flow, refresh).
    pub async fn verify(
        &self,
        id_token: &str,
        nonce: Option<&str>,
        access_token: Option<&str>,
    ) -> Result<VerifiedIdentity, OidcError> {
        let (subject, payload) = self.verify_claims(id_token, nonce, access_token).await?;
        self.map_identity(&payload, subject)
            .map_err(OidcError::Refused)
    }

    /// Verifies a token's signature and standard claims (`iss`, `aud` = the client id, `exp`,
    /// `nbf`, `iat`, `nonce`, `at_hash`) and returns its subject and payload.
    pub async fn verify_claims(
        &self,
        id_token: &str,
        nonce: Option<&str>,
        access_token: Option<&str>,
    ) -> Result<(String, Value), OidcError> {
        self.discover().await?;
        match self.verify_once(id_token, nonce, access_token).await {
            Err(Retry::UnknownKey) => {
                if self.refetch_jwks().await? {
                    match self.verify_once(id_token, nonce, access_token).await {
                        Ok(v) => Ok(v),
                        Err(Retry::UnknownKey) => Err(OidcError::Refused(
                            "ID token signed with a key the provider does not publish".into(),
                        )),
                        Err(Retry::Fail(e)) => Err(e),
                    }
                } else {
                    Err(OidcError::Refused(
                        "ID token signed with an unknown key (keys refetched too recently)".into(),
                    ))
                }
            }
            Err(Retry::Fail(e)) => Err(e),
            Ok(v) => Ok(v),
        }
    }

    async fn verify_once(
        &self,
        raw: &str,
        nonce: Option<&str>,
        access_token: Option<&str>,
    ) -> Result<(String, Value), Retry> {
        let refused = |m: String| Retry::Fail(OidcError::Refused(m));
        let token = PedmIdToken::from_str(raw)
            .map_err(|e| refused(format!("ID token is malformed: {e}")))?;
        let guard = self.state.read().await;
        let d = guard
            .as_ref()
            .ok_or_else(|| Retry::Fail(OidcError::Unavailable("not discovered".into())))?;
        let issuer = IssuerUrl::new(self.settings.issuer.clone())
            .map_err(|e| Retry::Fail(OidcError::Unavailable(e.to_string())))?;
        let skew = self.settings.clock_skew;
        let skew_c = chrono::Duration::seconds(skew.as_secs() as i64);
        // Public-client verifier: no client secret, so no HMAC key can ever verify a token.
        let verifier = CoreIdTokenVerifier::new_public_client(
            ClientId::new(self.settings.client_id.clone()),
            issuer,
            d.jwks.clone(),
        )
        .set_allowed_algs([
            CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
            CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha384,
            CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha512,
            CoreJwsSigningAlgorithm::RsaSsaPssSha256,
            CoreJwsSigningAlgorithm::RsaSsaPssSha384,
            CoreJwsSigningAlgorithm::RsaSsaPssSha512,
            CoreJwsSigningAlgorithm::EcdsaP256Sha256,
            CoreJwsSigningAlgorithm::EcdsaP384Sha384,
            CoreJwsSigningAlgorithm::EdDsa,
        ])
        // exp is checked against now - skew: a token is accepted at most `skew` late.
        .set_time_fn(move || chrono::Utc::now() - skew_c)
        .set_issue_time_verifier_fn(move |iat| {
            if iat > chrono::Utc::now() + skew_c {
                Err(format!("issued in the future ({iat})"))
            } else {
                Ok(())
            }
        });
        let expected = nonce.map(|n| Nonce::new(n.to_string()));
        let claims = match &expected {
            Some(n) => token.claims(&verifier, n),
            None => token.claims(&verifier, |_: Option<&Nonce>| Ok(())),
        };
        let claims = match claims {
            Ok(c) => c,
            Err(openidconnect::ClaimsVerificationError::SignatureVerification(
                openidconnect::SignatureVerificationError::NoMatchingKey,
            )) => return Err(Retry::UnknownKey),
            Err(e) => {
                let mut why = format!("ID token rejected: {e}");
                let mut cur = std::error::Error::source(&e);
                while let Some(c) = cur {
                    why.push_str(&format!(": {c}"));
                    cur = c.source();
                }
                return Err(refused(why));
            }
        };
        // The payload, for nbf, at_hash and the configured claims (signature checked above).
        let payload = payload_json(raw).map_err(refused)?;
        let now = jiff::Timestamp::now().as_second();
        if let Some(nbf) = payload.get("nbf").and_then(Value::as_i64)
            && nbf > now + skew.as_secs() as i64
        {
            return Err(refused("ID token is not valid yet (nbf)".into()));
        }
        if let (Some(at), Some(at_hash)) = (access_token, payload.get("at_hash")) {
            let alg = header_alg(raw).map_err(refused)?;
            let want =
                at_hash_of(at, &alg).ok_or_else(|| refused(format!("at_hash with alg {alg}")))?;
            let ok: bool = subtle::ConstantTimeEq::ct_eq(
                want.as_bytes(),
                at_hash.as_str().unwrap_or("").as_bytes(),
            )
            .into();
            if !ok {
                return Err(refused(
                    "ID token's at_hash does not match the access token".into(),
                ));
            }
        }
        Ok((claims.subject().to_string(), payload))
    }

    fn map_identity(&self, p: &Value, subject: String) -> Result<VerifiedIdentity, String> {
        let s = &self.settings;
        let email = p.get("email").and_then(Value::as_str).map(str::to_string);
        if !s.allowed_email_domains.is_empty() {
            let e = email
                .as_deref()
                .ok_or("the ID token has no email, and allowed_email_domains is set")?;
            if p.get("email_verified").and_then(Value::as_bool) == Some(false) {
                return Err("the email address is not verified".into());
            }
            let domain = e.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
            if !s
                .allowed_email_domains
                .iter()
                .any(|d| d.eq_ignore_ascii_case(domain))
            {
                return Err(format!("email domain {domain:?} is not allowed"));
            }
        }
        let raw_name = p
            .get(&s.username_claim)
            .and_then(Value::as_str)
            .ok_or_else(|| format!("the ID token has no {} claim", s.username_claim))?;
        let user = if s.username_strip_domain {
            raw_name.split('@').next().unwrap_or(raw_name)
        } else {
            raw_name
        }
        .to_string();
        pedm_core::model::validate_name("user", &user).map_err(|_| {
            format!(
                "claim {} gives {user:?}, not a valid user name",
                s.username_claim
            )
        })?;
        let mut groups: Vec<String> = match p.get(&s.groups_claim) {
            None | Some(Value::Null) => vec![],
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(Value::as_str)
                .filter(|g| {
                    let ok = pedm_core::model::validate_name("group", g).is_ok();
                    if !ok {
                        tracing::warn!(provider = %s.name, group = %g, "ignoring a group that is not a valid name");
                    }
                    ok
                })
                .map(str::to_string)
                .collect(),
            Some(_) => return Err(format!("claim {} is not a list", s.groups_claim)),
        };
        groups.sort();
        groups.dedup();
        // An address the provider says it has not verified is not used for anything.
        let email =
            email.filter(|_| p.get("email_verified").and_then(Value::as_bool) != Some(false));
        Ok(VerifiedIdentity {
            provider: s.name.clone(),
            issuer: s.issuer.clone(),
            subject,
            user,
            email,
            groups,
        })
    }
}

enum Retry {
    UnknownKey,
    Fail(OidcError),
}

fn form_urlencode(s: &str) -> String {
    // RFC 6749 §2.3.1: client id and secret are form-urlencoded before Basic encoding.
    url_encode(s)
}

fn url_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn b64(part: &str) -> Result<Vec<u8>, String> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .map_err(|e| format!("ID token is malformed: {e}"))
}

/// A JWT's payload, not verified: only to pick which trust should verify it.
pub fn unverified_payload(raw: &str) -> Result<Value, String> {
    payload_json(raw)
}

fn payload_json(raw: &str) -> Result<Value, String> {
    let part = raw.split('.').nth(1).ok_or("ID token is malformed")?;
    serde_json::from_slice(&b64(part)?).map_err(|e| format!("ID token payload: {e}"))
}

fn header_alg(raw: &str) -> Result<String, String> {
    let part = raw.split('.').next().ok_or("ID token is malformed")?;
    let h: Value =
        serde_json::from_slice(&b64(part)?).map_err(|e| format!("ID token header: {e}"))?;
    h["alg"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| "ID token header has no alg".into())
}

/// OIDC Core 3.1.3.6: base64url of the left half of the hash of the access token, with the
/// hash of the ID token's algorithm.
fn at_hash_of(access_token: &str, alg: &str) -> Option<String> {
    use base64::Engine;
    let digest: Vec<u8> = match alg {
        "RS256" | "PS256" | "ES256" => sha2::Sha256::digest(access_token.as_bytes()).to_vec(),
        "RS384" | "PS384" | "ES384" => sha2::Sha384::digest(access_token.as_bytes()).to_vec(),
        "RS512" | "PS512" | "EdDSA" => sha2::Sha512::digest(access_token.as_bytes()).to_vec(),
        _ => return None,
    };
    Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..digest.len() / 2]))
}

/// The configured providers by name.
#[derive(Default)]
pub struct Providers {
    pub by_name: BTreeMap<String, Arc<Provider>>,
    /// Used when a login names no provider: the first configured.
    pub default: Option<String>,
}

impl Providers {
    pub fn new(settings: Vec<OidcSettings>) -> Self {
        let default = settings.first().map(|s| s.name.clone());
        let by_name = settings
            .into_iter()
            .map(|s| (s.name.clone(), Arc::new(Provider::new(s))))
            .collect();
        Providers { by_name, default }
    }

    pub fn get(&self, name: Option<&str>) -> Option<Arc<Provider>> {
        let n = name.or(self.default.as_deref())?;
        self.by_name.get(n).cloned()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn at_hash_matches_the_spec_example() {
        // OIDC Core A.3's access token and at_hash.
        assert_eq!(
            super::at_hash_of("jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y", "RS256").as_deref(),
            Some("77QmUPtjPfzWtF2AnpK9RQ")
        );
    }
}
