//! `[[auth.oidc]]`: the OpenID providers people sign in with.

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// A short name (`pedm login --provider NAME`); the first provider is the default.
    pub name: String,
    /// The issuer URL exactly as the provider's discovery document states it.
    pub issuer: String,
    pub client_id: String,
    /// File holding the client secret (first line), or…
    #[serde(default)]
    pub client_secret_file: String,
    /// …the environment variable holding it. The secret is never logged.
    #[serde(default)]
    pub client_secret_env: String,
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// Claim giving the pedm user name (`preferred_username`).
    #[serde(default = "default_username_claim")]
    pub username_claim: String,
    /// Use only the part before `@` of the user-name claim (for `email`).
    #[serde(default)]
    pub username_strip_domain: bool,
    /// Claim listing the groups (`groups`).
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// If not empty, the (verified) email's domain must be one of these.
    #[serde(default)]
    pub allowed_email_domains: Vec<String>,
    /// Lifetime of a pedm session token (`8h`).
    #[serde(default = "default_session_lifetime")]
    pub session_lifetime: String,
    /// Clock difference tolerated on `exp`, `nbf`, `iat` (`60s`, at most `5m`).
    #[serde(default = "default_clock_skew")]
    pub clock_skew: String,
}

fn default_scopes() -> Vec<String> {
    ["openid", "email", "profile", "groups"]
        .map(String::from)
        .to_vec()
}
fn default_username_claim() -> String {
    "preferred_username".into()
}
fn default_groups_claim() -> String {
    "groups".into()
}
fn default_session_lifetime() -> String {
    "8h".into()
}
fn default_clock_skew() -> String {
    "60s".into()
}

/// A secret that does not print.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// A provider's checked settings.
#[derive(Debug, Clone)]
pub struct OidcSettings {
    pub name: String,
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Secret,
    pub scopes: Vec<String>,
    pub username_claim: String,
    pub username_strip_domain: bool,
    pub groups_claim: String,
    pub allowed_email_domains: Vec<String>,
    pub session_lifetime_secs: i64,
    pub clock_skew: Duration,
}

impl OidcSettings {
    /// Settings that only verify tokens of `issuer` for `audience` (workload identities: no
    /// client secret, no login flows).
    pub fn verifier(name: &str, issuer: &str, audience: &str, clock_skew: Duration) -> Self {
        OidcSettings {
            name: name.into(),
            issuer: issuer.into(),
            client_id: audience.into(),
            client_secret: Secret(String::new()),
            scopes: vec![],
            username_claim: String::new(),
            username_strip_domain: false,
            groups_claim: String::new(),
            allowed_email_domains: vec![],
            session_lifetime_secs: 0,
            clock_skew,
        }
    }
}

pub fn resolve(list: &[OidcConfig]) -> anyhow::Result<Vec<OidcSettings>> {
    let mut out: Vec<OidcSettings> = vec![];
    for (i, c) in list.iter().enumerate() {
        let at = format!("auth.oidc[{i}] ({})", c.name);
        pedm_core::model::validate_name("provider", &c.name).with_context(|| at.clone())?;
        if out.iter().any(|o| o.name == c.name) {
            bail!("{at}: name {:?} is used twice", c.name);
        }
        let url = reqwest::Url::parse(&c.issuer).with_context(|| format!("{at}: issuer"))?;
        let loopback = matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
        if url.scheme() != "https" && !(url.scheme() == "http" && loopback) {
            bail!("{at}: issuer must be an https URL (http only on loopback)");
        }
        if c.client_id.trim().is_empty() {
            bail!("{at}: client_id is empty");
        }
        let secret = match (c.client_secret_file.trim(), c.client_secret_env.trim()) {
            ("", "") => bail!("{at}: set client_secret_file or client_secret_env"),
            (f, "") => std::fs::read_to_string(f)
                .with_context(|| format!("{at}: reading client_secret_file {f}"))?
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string(),
            ("", e) => std::env::var(e)
                .with_context(|| format!("{at}: environment variable {e} is not set"))?,
            _ => bail!("{at}: set only one of client_secret_file and client_secret_env"),
        };
        if secret.is_empty() {
            bail!("{at}: the client secret is empty");
        }
        if !c.scopes.iter().any(|s| s == "openid") {
            bail!("{at}: scopes must include openid");
        }
        let lifetime = pedm_core::duration::parse_duration(&c.session_lifetime)
            .with_context(|| format!("{at}: session_lifetime {:?}", c.session_lifetime))?;
        if !(60..=7 * 86_400).contains(&lifetime) {
            bail!("{at}: session_lifetime must be between 1m and 7d");
        }
        let skew = pedm_core::duration::parse_duration(&c.clock_skew)
            .with_context(|| format!("{at}: clock_skew {:?}", c.clock_skew))?;
        if !(0..=300).contains(&skew) {
            bail!("{at}: clock_skew must be at most 5m");
        }
        out.push(OidcSettings {
            name: c.name.clone(),
            issuer: c.issuer.clone(),
            client_id: c.client_id.clone(),
            client_secret: Secret(secret),
            scopes: c.scopes.clone(),
            username_claim: c.username_claim.clone(),
            username_strip_domain: c.username_strip_domain,
            groups_claim: c.groups_claim.clone(),
            allowed_email_domains: c.allowed_email_domains.clone(),
            session_lifetime_secs: lifetime,
            clock_skew: Duration::from_secs(skew as u64),
        });
    }
    Ok(out)
}
