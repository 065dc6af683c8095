//! Service-account tokens for `pedm kube credentials`: the holder's service account, a Secret
//! per grant that the tokens are bound to (deleting it on revoke makes the API server refuse
//! them at once), and TokenRequest answered as kubectl's ExecCredential.

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
                 service account to issue tokens for (settings.service_account)",
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
            value: json!({
                "apiVersion": "client.authentication.k8s.io/v1",
                "kind": "ExecCredential",
                "status": {
                    "token": token,
                    "expirationTimestamp": expires_at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
                },
            }),
            detail: format!(
                "token of service account {ns}/{} bound to secret {secret}, until {expires_at}",
                b.subject
            ),
        })
    }
}
