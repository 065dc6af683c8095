//! `[[auth.workload]]`: platforms whose OIDC tokens CI jobs and services exchange for a
//! short-lived pedm token (RFC 8693, `POST /oauth/token`). Each trust names an issuer, the
//! audience its tokens must carry, the pedm user they act as, the claims that must hold
//! exactly (`required_claims`, checked before anything is minted) and where each field of
//! `principal.workload` is read from.

use crate::oidc::{OidcError, OidcSettings, Provider};
use anyhow::{Context, bail};
use pedm_core::workload::{WorkloadIdentity, valid_claim};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Longest lifetime an exchanged token may be given.
pub const MAX_TOKEN_LIFETIME_SECS: i64 = 3600;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadConfig {
    /// A short name, shown to policy as `principal.workload.trust`.
    pub name: String,
    /// The issuer exactly as its discovery document states it
    /// (`https://token.actions.githubusercontent.com`).
    pub issuer: String,
    /// The `aud` its tokens must carry for pedm (GitHub: the `audience` the job asks for).
    pub audience: String,
    /// The pedm user the exchanged tokens act as (created on first use, never an admin).
    pub user: String,
    /// Lifetime of an exchanged token (`15m`, at most `1h`).
    #[serde(default = "default_lifetime")]
    pub token_lifetime: String,
    /// Clock difference tolerated on `exp`, `nbf`, `iat` (`60s`, at most `5m`).
    #[serde(default = "default_skew")]
    pub clock_skew: String,
    /// Claims that must be present with exactly these string values
    /// (`repository_owner = "my-org"`); a token without them is refused.
    #[serde(default)]
    pub required_claims: BTreeMap<String, String>,
    /// Where each field of `principal.workload` comes from (a claim name; `a/b` for a
    /// nested claim). Defaults fit GitHub Actions and Kubernetes.
    #[serde(default)]
    pub claims: ClaimNames,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClaimNames {
    pub repository: String,
    pub git_ref: String,
    pub environment: String,
    pub workflow: String,
    pub namespace: String,
    pub service_account: String,
}

impl Default for ClaimNames {
    fn default() -> Self {
        ClaimNames {
            repository: "repository".into(),
            git_ref: "ref".into(),
            environment: "environment".into(),
            workflow: "workflow_ref".into(),
            namespace: "kubernetes.io/namespace".into(),
            service_account: "kubernetes.io/serviceaccount/name".into(),
        }
    }
}

fn default_lifetime() -> String {
    "15m".into()
}
fn default_skew() -> String {
    "60s".into()
}

/// One checked trust with its verifier.
pub struct Trust {
    pub name: String,
    pub issuer: String,
    pub user: String,
    pub token_lifetime_secs: i64,
    required_claims: BTreeMap<String, String>,
    claims: ClaimNames,
    verifier: Provider,
}

/// Every configured trust, in configuration order.
#[derive(Default)]
pub struct Trusts(pub Vec<Arc<Trust>>);

pub fn resolve(list: &[WorkloadConfig]) -> anyhow::Result<Trusts> {
    let mut out: Vec<Arc<Trust>> = vec![];
    for (i, c) in list.iter().enumerate() {
        let at = format!("auth.workload[{i}] ({})", c.name);
        pedm_core::model::validate_name("trust", &c.name).with_context(|| at.clone())?;
        if out.iter().any(|t| t.name == c.name) {
            bail!("{at}: name {:?} is used twice", c.name);
        }
        let url = reqwest::Url::parse(&c.issuer).with_context(|| format!("{at}: issuer"))?;
        let loopback = matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
        if url.scheme() != "https" && !(url.scheme() == "http" && loopback) {
            bail!("{at}: issuer must be an https URL (http only on loopback)");
        }
        if c.audience.trim().is_empty() {
            bail!("{at}: audience is empty");
        }
        pedm_core::model::validate_name("user", &c.user).with_context(|| format!("{at}: user"))?;
        if [
            pedm_core::model::SYSTEM_ACTOR,
            pedm_core::model::POLICY_ACTOR,
            "anonymous",
        ]
        .contains(&c.user.as_str())
        {
            bail!("{at}: user {:?} is reserved", c.user);
        }
        let lifetime = pedm_core::duration::parse_duration(&c.token_lifetime)
            .with_context(|| format!("{at}: token_lifetime {:?}", c.token_lifetime))?;
        if !(60..=MAX_TOKEN_LIFETIME_SECS).contains(&lifetime) {
            bail!("{at}: token_lifetime must be between 1m and 1h");
        }
        let skew = pedm_core::duration::parse_duration(&c.clock_skew)
            .with_context(|| format!("{at}: clock_skew {:?}", c.clock_skew))?;
        if !(0..=300).contains(&skew) {
            bail!("{at}: clock_skew must be at most 5m");
        }
        out.push(Arc::new(Trust {
            name: c.name.clone(),
            issuer: c.issuer.clone(),
            user: c.user.clone(),
            token_lifetime_secs: lifetime,
            required_claims: c.required_claims.clone(),
            claims: c.claims.clone(),
            verifier: Provider::new(OidcSettings::verifier(
                &c.name,
                &c.issuer,
                &c.audience,
                Duration::from_secs(skew as u64),
            )),
        }));
    }
    Ok(Trusts(out))
}

/// A claim by name; `a/b` reads `b` inside the object `a`.
fn claim<'a>(payload: &'a Value, name: &str) -> Option<&'a Value> {
    if let Some(v) = payload.get(name) {
        return Some(v);
    }
    name.split('/')
        .try_fold(payload, |v, part| v.get(part))
        .filter(|_| name.contains('/'))
}

impl Trust {
    /// Verifies `token` as this trust's issuer would have it and reads the identity.
    pub async fn verify(&self, token: &str) -> Result<WorkloadIdentity, OidcError> {
        let (subject, payload) = self.verifier.verify_claims(token, None, None).await?;
        let refused = |m: String| OidcError::Refused(m);
        for (name, want) in &self.required_claims {
            match claim(&payload, name).and_then(Value::as_str) {
                Some(v) if v == want => {}
                Some(_) => return Err(refused(format!("claim {name} has another value"))),
                None => return Err(refused(format!("the token has no {name} claim"))),
            }
        }
        if !valid_claim(&subject) {
            return Err(refused(
                "the token's subject is empty, too long or not printable".into(),
            ));
        }
        let read = |name: &str| -> Result<Option<String>, OidcError> {
            match claim(&payload, name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(v)) if valid_claim(v) => Ok(Some(v.clone())),
                Some(_) => Err(refused(format!(
                    "claim {name} is not a printable string of at most {} characters",
                    pedm_core::workload::MAX_CLAIM_CHARS
                ))),
            }
        };
        let c = &self.claims;
        Ok(WorkloadIdentity {
            trust: self.name.clone(),
            issuer: self.issuer.clone(),
            subject,
            repository: read(&c.repository)?,
            git_ref: read(&c.git_ref)?,
            environment: read(&c.environment)?,
            workflow: read(&c.workflow)?,
            namespace: read(&c.namespace)?,
            service_account: read(&c.service_account)?,
        })
    }
}

impl Trusts {
    /// The trusts for a token's (unverified) issuer, in configuration order.
    pub fn for_issuer(&self, issuer: &str) -> Vec<Arc<Trust>> {
        self.0
            .iter()
            .filter(|t| t.issuer == issuer)
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::claim;
    use serde_json::json;

    #[test]
    fn nested_claims_are_read_by_path() {
        let p = json!({"kubernetes.io": {"namespace": "ci", "serviceaccount": {"name": "deployer"}},
                       "repository": "org/app"});
        assert_eq!(claim(&p, "repository"), Some(&json!("org/app")));
        assert_eq!(claim(&p, "kubernetes.io/namespace"), Some(&json!("ci")));
        assert_eq!(
            claim(&p, "kubernetes.io/serviceaccount/name"),
            Some(&json!("deployer"))
        );
        assert_eq!(claim(&p, "missing/name"), None);
        assert_eq!(claim(&p, "missing"), None);
    }
}
