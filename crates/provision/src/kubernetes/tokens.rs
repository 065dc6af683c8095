//! Service-account tokens for `pedm kube credentials`: the holder's service account, a Secret
//! per grant that the tokens are bound to (deleting it on revoke makes the API server refuse
//! them at once), and TokenRequest answered as kubectl's ExecCredential; or, for clusters
//! that trust pedmd's OIDC issuer, an ID token of pedmd's.

use std::time::Duration;

use serde_json::json;

use super::{Binding, KubernetesProvisioner, MIN_TOKEN};
use crate::{Credentials, GrantSpec, ProvisionError};

/// `pedm-grant-<id>`: the Secret a grant's service-account tokens are bound to.
pub(super) fn grant_secret_name(g: &GrantSpec) -> String {
    format!("pedm-grant-{}", g.grant_id)
}

impl KubernetesProvisioner {
    /// Creates the holder's service account unless it exists.
    pub(super) async fn ensure_service_account(
        &self,
        ns: &str,
        name: &str,
        g: &GrantSpec,
    ) -> Result<(), ProvisionError> {
        let body = json!({
            "apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": name, "namespace": ns,
                "labels": {"app.kubernetes.io/managed-by": "pedm"},
                "annotations": {"pedm.dev/user": g.user}},
        });
        match self
            .call(
                reqwest::Method::POST,
                &format!("/api/v1/namespaces/{ns}/serviceaccounts"),
                Some(&body),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(ProvisionError::Refused(m)) if m.starts_with("conflict:") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The grant's Secret (made once), whose uid its tokens are bound to: `(name, uid)`.
    async fn grant_secret(
        &self,
        ns: &str,
        g: &GrantSpec,
    ) -> Result<(String, String), ProvisionError> {
        let name = grant_secret_name(g);
        let body = json!({
            "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": name, "namespace": ns,
                "labels": {"app.kubernetes.io/managed-by": "pedm",
                    "pedm.dev/grant": g.grant_id.to_string()},
                "annotations": {"pedm.dev/user": g.user,
                    "pedm.dev/expires-at": g.expires_at.to_string()}},
        });
        let made = match self
            .call(
                reqwest::Method::POST,
                &format!("/api/v1/namespaces/{ns}/secrets"),
                Some(&body),
            )
            .await
        {
            Ok(v) => v,
            Err(ProvisionError::Refused(m)) if m.starts_with("conflict:") => {
                self.call(
                    reqwest::Method::GET,
                    &format!("/api/v1/namespaces/{ns}/secrets/{name}"),
                    None,
                )
                .await?
            }
            Err(e) => return Err(e),
        };
        let uid = made
            .as_ref()
            .and_then(|v| v["metadata"]["uid"].as_str())
            .ok_or_else(|| ProvisionError::refused(format!("secret {ns}/{name} has no uid")))?;
        Ok((name, uid.to_string()))
    }

    /// An ID token of pedmd's for `g`'s holder, as an ExecCredential: for a role bound to the
    /// User `<oidc_username_prefix><user>`, which is who the cluster takes the token for.
    pub(super) fn id_token(
        &self,
        g: &GrantSpec,
        b: &Binding,
        now: jiff::Timestamp,
    ) -> Result<Credentials, ProvisionError> {
        let (Some(audience), Some(signer)) = (&self.config.oidc_audience, &self.id_tokens) else {
            return Err(ProvisionError::invalid(
                "oidc_audience needs pedmd's OIDC issuer ([oidc_issuer] in pedmd's configuration)",
            ));
        };
        let user = format!("{}{}", self.config.oidc_username_prefix, g.user);
        if b.subject_kind != "User" || b.subject != user {
            return Err(ProvisionError::invalid(format!(
                "role {} on {} binds {} {}, but the cluster takes pedm's ID token for {g_user} as \
                 the User {user:?}: bind subject = \"{prefix}{{user}}\" (subject_kind User)",
                g.role,
                g.target,
                b.subject_kind,
                b.subject,
                g_user = g.user,
                prefix = self.config.oidc_username_prefix,
            )));
        }
        if g.expires_at <= now {
            return Err(ProvisionError::invalid(format!(
                "grant {} has ended",
                g.grant_id
            )));
        }
        let max = jiff::SignedDuration::try_from(self.config.max_token).unwrap_or_default();
        let expires_at = g.expires_at.min(now + max);
        let mut jti = [0u8; 16];
        getrandom::fill(&mut jti)
            .map_err(|e| ProvisionError::invalid(format!("randomness: {e}")))?;
        let jti: String = jti.iter().map(|b| format!("{b:02x}")).collect();
        let mut claims = serde_json::Map::new();
        for (k, v) in [
            ("sub", json!(g.user)),
            ("aud", json!(audience)),
            ("iat", json!(now.as_second())),
            ("nbf", json!(now.as_second())),
            ("exp", json!(expires_at.as_second())),
            ("jti", json!(jti)),
            ("preferred_username", json!(g.user)),
            ("pedm_grant", json!(g.grant_id.to_string())),
            ("pedm_role", json!(g.role)),
        ] {
            claims.insert(k.into(), v);
        }
        let token = signer.sign(claims).map_err(ProvisionError::Invalid)?;
        Ok(Credentials {
            kind: "kubernetes",
            expires_at,
            value: exec_credential(&token, expires_at),
            detail: format!(
                "ID token of {} for {user:?} (audience {audience}), until {expires_at}",
                signer.issuer()
            ),
        })
    }

    /// A token for `g`'s service account bound to the grant's Secret, as an ExecCredential.
    pub(super) async fn service_account_token(
        &self,
        g: &GrantSpec,
        now: jiff::Timestamp,
    ) -> Result<Credentials, ProvisionError> {
        let b = Binding::of(g)?;
        let Some(ns) = &b.subject_namespace else {
            return Err(ProvisionError::invalid(format!(
                "role {} on {} binds {} of the cluster's own authentication: there is no \
                 service account to issue tokens for (settings.service_account), and the \
                 target has no oidc_audience for pedm's own ID tokens",
                g.role,
                g.target,
                b.account()
            )));
        };
        let remaining = Duration::try_from(g.expires_at.duration_since(now)).unwrap_or_default();
        if remaining.is_zero() {
            return Err(ProvisionError::invalid(format!(
                "grant {} has ended",
                g.grant_id
            )));
        }
        let (secret, uid) = self.grant_secret(ns, g).await?;
        let seconds = remaining.clamp(MIN_TOKEN, self.config.max_token).as_secs();
        let mut spec = json!({
            "expirationSeconds": seconds,
            "boundObjectRef": {"kind": "Secret", "apiVersion": "v1", "name": secret, "uid": uid},
        });
        if !self.config.token_audiences.is_empty() {
            spec["audiences"] = json!(self.config.token_audiences);
        }
        let answer = self
            .call(
                reqwest::Method::POST,
                &format!(
                    "/api/v1/namespaces/{ns}/serviceaccounts/{}/token",
                    b.subject
                ),
                Some(
                    &json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                    "spec": spec}),
                ),
            )
            .await?
            .ok_or_else(|| {
                ProvisionError::refused(format!("service account {ns}/{} is gone", b.subject))
            })?;
        let token = answer["status"]["token"]
            .as_str()
            .ok_or_else(|| ProvisionError::refused("the TokenRequest answer has no token"))?;
        let token_end = answer["status"]["expirationTimestamp"]
            .as_str()
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            .unwrap_or(g.expires_at);
        let expires_at = token_end.min(g.expires_at);
        Ok(Credentials {
            kind: "kubernetes",
            expires_at,
            value: exec_credential(token, expires_at),
            detail: format!(
                "token of service account {ns}/{} bound to secret {secret}, until {expires_at}",
                b.subject
            ),
        })
    }
}

/// kubectl's `client.authentication.k8s.io/v1` ExecCredential.
fn exec_credential(token: &str, expires_at: jiff::Timestamp) -> serde_json::Value {
    json!({
        "apiVersion": "client.authentication.k8s.io/v1",
        "kind": "ExecCredential",
        "status": {
            "token": token,
            "expirationTimestamp": expires_at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        },
    })
}
