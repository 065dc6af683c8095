//! Console sign-in, the idle and absolute timeouts of a browser session, and sign-out.
//!
//! Signing in always mints a new token (a session is never the pasted token itself, and a
//! fresh one per sign-in is the "rotated at login" the console needs); that token's expiry is
//! the absolute timeout. Every request checks the idle timeout against `last_seen_at`; a
//! session found idle is ended and its token revoked on the spot, so neither the console nor
//! the API accepts it again.

use super::{ControlPlane, Result, subject};
use crate::Error;
use crate::audit::{NewAuditEvent, Outcome};
use crate::model::*;
use crate::service::SsoLogin;
use crate::store::{Changeset, Write};
use crate::web_session::{
    METHOD_SSO, METHOD_TOKEN, TOUCH_INTERVAL_SECS, WebSession, WebSessionWrite,
};
use jiff::SignedDuration;
use serde_json::json;

/// A console session just opened: the token for the cookie (shown once) and the session.
pub struct WebSignIn {
    pub token: String,
    pub session: WebSession,
}

impl ControlPlane {
    /// Exchanges a pedm token pasted into the sign-in page for a console session of
    /// `ttl_secs`. The pasted token is checked like any API call (failures recorded); a
    /// workload's or an AI agent's token cannot open a browser session (it would be a full
    /// session of the person).
    pub async fn web_sign_in_with_token(
        &self,
        presented: &str,
        source: Option<&str>,
        ttl_secs: i64,
    ) -> Result<WebSignIn> {
        let actor = self.authenticate(presented, source).await?;
        if actor.workload.is_some() || actor.via_agent {
            let whose = if actor.via_agent {
                "an AI agent's"
            } else {
                "a workload's"
            };
            return Err(self
                .refuse(
                    &actor,
                    "console.sign_in",
                    subject("user", &actor.user),
                    format!("{whose} token cannot open a console session"),
                )
                .await);
        }
        let now = self.now();
        let (record, token) =
            self.session_token(&actor.user, "console session".into(), ttl_secs, now)?;
        let expires_at = record.expires_at;
        let session = new_session(&record, METHOD_TOKEN, None, source);
        let cs = Changeset::new()
            .write(Write::InsertToken(record.clone()))
            .write(Write::WebSession(WebSessionWrite::Insert(session.clone())))
            .event(
                self.event(&actor, "console.sign_in", subject("token", &record.id))
                    .data(
                        json!({ "method": METHOD_TOKEN, "with_token": actor.token_id,
                                  "source": source, "expires_at": expires_at }),
                    ),
            );
        self.store.commit(cs).await?;
        Ok(WebSignIn { token, session })
    }

    /// Opens a console session on the token an SSO login just minted.
    pub async fn web_sign_in_sso(
        &self,
        login: SsoLogin,
        provider: &str,
        source: Option<&str>,
    ) -> Result<WebSignIn> {
        let session = new_session(&login.record, METHOD_SSO, Some(provider), source);
        let ev = NewAuditEvent::new(
            self.now(),
            &login.user,
            "console.sign_in",
            subject("token", &login.record.id),
        )
        .data(
            json!({ "method": METHOD_SSO, "provider": provider, "source": source,
                      "expires_at": login.record.expires_at }),
        );
        self.store
            .commit(
                Changeset::new()
                    .write(Write::WebSession(WebSessionWrite::Insert(session.clone())))
                    .event(ev),
            )
            .await?;
        Ok(WebSignIn {
            token: login.token,
            session,
        })
    }

    /// The console session the actor's token backs, checked: refused if the token backs
    /// none (an API token in a cookie), if it was signed out, or if it has been idle longer
    /// than `idle_secs` (then it is ended, its token revoked, and that recorded).
    pub async fn web_session_check(&self, actor: &Actor, idle_secs: i64) -> Result<WebSession> {
        let Some(token_id) = actor.token_id.as_deref() else {
            return Err(Error::Unauthenticated("not a console session".into()));
        };
        let Some(session) = self.store.web_session(token_id).await? else {
            return Err(Error::Unauthenticated("not a console session".into()));
        };
        if session.ended_at.is_some() {
            return Err(Error::Unauthenticated("signed out".into()));
        }
        let now = self.now();
        let idle = now.duration_since(session.last_seen_at);
        if idle > SignedDuration::from_secs(idle_secs) {
            self.end_web_session(
                actor,
                &session,
                "console.session_timed_out",
                Outcome::Denied,
            )
            .await?;
            return Err(Error::Unauthenticated(
                "the session was idle too long: sign in again".into(),
            ));
        }
        if idle > SignedDuration::from_secs(TOUCH_INTERVAL_SECS) {
            self.store
                .commit(
                    Changeset::new().write(Write::WebSession(WebSessionWrite::Touch {
                        token_id: token_id.into(),
                        at: now,
                    })),
                )
                .await?;
        }
        Ok(session)
    }

    /// Signs the actor's console session out: ended, its token revoked.
    pub async fn web_sign_out(&self, actor: &Actor) -> Result<()> {
        let session = match actor.token_id.as_deref() {
            Some(t) => self.store.web_session(t).await?,
            None => None,
        };
        let Some(session) = session.filter(|s| s.ended_at.is_none()) else {
            return Err(Error::Conflict("no open console session".into()));
        };
        self.end_web_session(actor, &session, "console.sign_out", Outcome::Success)
            .await
    }

    async fn end_web_session(
        &self,
        actor: &Actor,
        session: &WebSession,
        action: &str,
        outcome: Outcome,
    ) -> Result<()> {
        let now = self.now();
        let cs = Changeset::new()
            .write(Write::WebSession(WebSessionWrite::End {
                token_id: session.token_id.clone(),
                at: now,
            }))
            .write(Write::RevokeToken {
                id: session.token_id.clone(),
                at: now,
            })
            .event(
                self.event(actor, action, subject("token", &session.token_id))
                    .outcome(outcome)
                    .data(json!({ "last_seen_at": session.last_seen_at,
                                  "created_at": session.created_at })),
            );
        self.commit_identity(cs).await?;
        Ok(())
    }
}

fn new_session(
    record: &TokenRecord,
    method: &str,
    provider: Option<&str>,
    source: Option<&str>,
) -> WebSession {
    WebSession {
        token_id: record.id.clone(),
        user: record.user.clone(),
        method: method.into(),
        provider: provider.map(Into::into),
        source: source.map(Into::into),
        created_at: record.created_at,
        last_seen_at: record.created_at,
        ended_at: None,
    }
}

impl ControlPlane {
    /// Records a console request refused for a security reason (a missing or wrong CSRF
    /// token, a cross-site post) and returns the error to answer with.
    pub async fn web_refuse(&self, actor: &Actor, why: &str) -> Error {
        let sub = actor.token_id.as_deref().and_then(|t| subject("token", t));
        self.refuse(actor, "console.refused", sub, why.into()).await
    }
}
