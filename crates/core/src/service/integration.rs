//! What chat and mail integrations need from the control plane: their small durable state,
//! replay protection shared by every instance, the pedm user behind a chat identity, and a
//! record of what they refused.
//!
//! A chat identity is linked like an SSO identity, as (issuer, subject) — e.g. `slack:T0123`
//! and a Slack user id — so one table and one uniqueness rule cover both.

use super::{ControlPlane, Result, subject};
use crate::Error;
use crate::audit::{NewAuditEvent, Outcome};
use crate::integration::{IntegrationEntry, IntegrationWrite};
use crate::model::Actor;
use crate::sso::SsoWrite;
use crate::store::{Changeset, StoreError, Write};
use jiff::SignedDuration;
use serde_json::json;

impl ControlPlane {
    /// The live value an integration keeps under `key`.
    pub async fn integration_value(&self, integration: &str, key: &str) -> Result<Option<String>> {
        let now = self.now();
        Ok(self
            .store
            .integration_entry(integration, key)
            .await?
            .filter(|e| e.live(now))
            .map(|e| e.value))
    }

    /// Keeps `value` under `key` (replacing any), for `ttl_secs` or for ever.
    pub async fn integration_put(
        &self,
        integration: &str,
        key: &str,
        value: &str,
        ttl_secs: Option<i64>,
    ) -> Result<()> {
        let expires_at = ttl_secs.map(|s| self.now() + SignedDuration::from_secs(s));
        self.store
            .commit(
                Changeset::new().write(Write::Integration(IntegrationWrite::Put(
                    IntegrationEntry {
                        integration: integration.into(),
                        key: key.into(),
                        value: value.into(),
                        expires_at,
                    },
                ))),
            )
            .await?;
        Ok(())
    }

    /// Takes `key` once for `ttl_secs`, on every instance sharing the database: `false` when
    /// it was taken already (a replayed callback). Expired keys are purged on the way.
    pub async fn integration_claim(
        &self,
        integration: &str,
        key: &str,
        ttl_secs: i64,
    ) -> Result<bool> {
        let now = self.now();
        let claim = IntegrationWrite::Claim {
            entry: IntegrationEntry {
                integration: integration.into(),
                key: key.into(),
                value: now.to_string(),
                expires_at: Some(now + SignedDuration::from_secs(ttl_secs)),
            },
            now,
        };
        let cs = Changeset::new()
            .write(Write::Integration(IntegrationWrite::Purge { before: now }))
            .write(Write::Integration(claim));
        match self.store.commit(cs).await {
            Ok(_) => Ok(true),
            Err(StoreError::AlreadyExists(_)) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// The pedm user linked to a chat identity, as policy sees them; `None` when nobody is
    /// linked, or the user is gone, disabled or an expired external account.
    pub async fn linked_actor(&self, issuer: &str, subject_id: &str) -> Result<Option<Actor>> {
        let Some(name) = self.store.sso_identity(issuer, subject_id).await? else {
            return Ok(None);
        };
        let Some(user) = self.store.user(&name).await?.filter(|u| !u.disabled) else {
            return Ok(None);
        };
        if let Some(x) = self.store.external_account(&name).await?
            && !x.live(self.now())
        {
            return Ok(None);
        }
        Ok(Some(self.actor_of(&user).await?))
    }

    /// The subjects `user` is known by at a chat issuer (`slack:T…`), linked by code or by
    /// verified address.
    pub async fn linked_subjects(&self, user: &str, issuer: &str) -> Result<Vec<String>> {
        Ok(self
            .store
            .identities_of(user)
            .await?
            .into_iter()
            .filter(|(i, _)| i == issuer)
            .map(|(_, s)| s)
            .collect())
    }

    /// The one enabled pedm user whose mail address is `email` and came from an identity
    /// provider (the user signs in through SSO, which replaces the address with the
    /// provider's verified one at each login), or why there is none.
    pub async fn user_by_verified_email(
        &self,
        email: &str,
    ) -> Result<std::result::Result<crate::model::User, String>> {
        let email = email.trim();
        let mut found = vec![];
        for u in self.store.users().await? {
            if u.disabled
                || !u
                    .email
                    .as_deref()
                    .is_some_and(|e| e.eq_ignore_ascii_case(email))
            {
                continue;
            }
            if self.signs_in_through_idp(&u.name).await? {
                found.push(u);
            }
        }
        Ok(match found.len() {
            1 => Ok(found.remove(0)),
            0 => Err(format!(
                "no pedm user signs in through the identity provider with the address {email}"
            )),
            n => Err(format!("{n} pedm users have the address {email}")),
        })
    }

    /// Whether `user` has an identity at an OpenID provider (issuers are URLs; chat
    /// workspaces are `slack:T…`): their address is then the provider's verified one, as SSO
    /// replaces it at each login.
    async fn signs_in_through_idp(&self, user: &str) -> Result<bool> {
        Ok(self
            .store
            .identities_of(user)
            .await?
            .iter()
            .any(|(issuer, _)| issuer.starts_with("https://") || issuer.starts_with("http://")))
    }

    /// Links a chat identity to the pedm user whose provider-verified address the chat
    /// confirmed for it (`identity.linked`, `via` says how), and returns that user as policy
    /// sees them; `Err` with the reason when no single user has that address, or it is
    /// linked to someone already.
    pub async fn link_by_verified_email(
        &self,
        issuer: &str,
        subject_id: &str,
        email: &str,
        via: &str,
    ) -> Result<std::result::Result<Actor, String>> {
        let user = match self.user_by_verified_email(email).await? {
            Ok(u) => u,
            Err(why) => return Ok(Err(why)),
        };
        if let Some(x) = self.store.external_account(&user.name).await?
            && !x.live(self.now())
        {
            return Ok(Err(format!("{} is an expired external account", user.name)));
        }
        let cs = Changeset::new()
            .write(Write::Sso(SsoWrite::LinkIdentity {
                issuer: issuer.into(),
                subject: subject_id.into(),
                user: user.name.clone(),
            }))
            .event(
                NewAuditEvent::new(
                    self.now(),
                    "system",
                    "identity.linked",
                    subject("user", &user.name),
                )
                .data(json!({ "issuer": issuer, "subject": subject_id, "via": via,
                              "email": email })),
            );
        match self.store.commit(cs).await {
            Ok(_) => Ok(Ok(self.actor_of(&user).await?)),
            Err(StoreError::AlreadyExists(_)) => Ok(Err(format!(
                "{issuer} user {subject_id} is linked to a pedm user already"
            ))),
            Err(e) => Err(e.into()),
        }
    }

    /// Links a chat identity to `actor` (who proved, by signing in to pedm, that it is theirs
    /// to link, while the chat vouched for the other side): `identity.linked`. Conflict when
    /// the identity is linked already, to anyone.
    pub async fn link_identity(
        &self,
        actor: &Actor,
        issuer: &str,
        subject_id: &str,
        via: &str,
    ) -> Result<()> {
        if actor.workload.is_some() {
            return Err(self
                .refuse(
                    actor,
                    "identity.link",
                    subject("user", &actor.user),
                    "a workload cannot link a chat identity".into(),
                )
                .await);
        }
        let cs = Changeset::new()
            .write(Write::Sso(SsoWrite::LinkIdentity {
                issuer: issuer.into(),
                subject: subject_id.into(),
                user: actor.user.clone(),
            }))
            .event(
                self.event(actor, "identity.linked", subject("user", &actor.user))
                    .data(json!({ "issuer": issuer, "subject": subject_id, "via": via })),
            );
        match self.store.commit(cs).await {
            Ok(_) => Ok(()),
            Err(StoreError::AlreadyExists(_)) => Err(Error::Conflict(format!(
                "{issuer} user {subject_id} is linked to a pedm user already"
            ))),
            Err(e) => Err(e.into()),
        }
    }

    /// A callback claiming to come from an integration failed its check (bad signature,
    /// stale, replayed): recorded as `auth.failed` with `kind` = the integration, aggregated
    /// per source like every failed authentication.
    pub async fn integration_auth_failed(
        &self,
        integration: &'static str,
        reason: &str,
        source: Option<&str>,
    ) -> Result<()> {
        let ev = NewAuditEvent::new(self.now(), "anonymous", "auth.failed", None)
            .outcome(Outcome::Denied)
            .data(json!({ "reason": reason, "source": source, "kind": integration }));
        self.record_auth_failure(ev, source, reason, integration)
            .await
    }

    /// An authentic call from an integration that pedm refused (an unlinked chat user, ...):
    /// `<integration>.refused`, with who asked and why.
    pub async fn integration_refused(
        &self,
        integration: &str,
        who: &str,
        sub: Option<String>,
        reason: &str,
        data: serde_json::Value,
    ) -> Result<()> {
        let ev = NewAuditEvent::new(
            self.now(),
            "anonymous",
            &format!("{integration}.refused"),
            sub,
        )
        .outcome(Outcome::Denied)
        .data(json!({ "reason": reason, "caller": who, "asked": data }));
        self.store.commit(Changeset::new().event(ev)).await?;
        Ok(())
    }
}
