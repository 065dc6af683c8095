//! Single sign-on: the domain half of an OIDC login, refresh and logout (the protocol half,
//! verifying what the provider sent, is the server's). Users are created just in time, the
//! memberships that came from the provider are replaced on every login and refresh (hand-kept
//! memberships are left alone), and every refusal is an audit event naming its reason.

use super::{ControlPlane, Result, subject};
use crate::Error;
use crate::audit::{NewAuditEvent, Outcome};
use crate::model::*;
use crate::sso::{SsoFlow, SsoSession, SsoWrite, VerifiedIdentity};
use crate::store::{Changeset, StoreError, Write};
use crate::token;
use jiff::{SignedDuration, Timestamp};
use serde_json::json;

/// A session token just minted: the record and the token string (shown once).
pub struct SsoLogin {
    pub record: TokenRecord,
    pub token: String,
    pub user: String,
    pub groups: Vec<String>,
}

impl ControlPlane {
    fn sso_event(&self, actor: &str, action: &str, sub: Option<String>) -> NewAuditEvent {
        NewAuditEvent::new(self.now(), actor, action, sub)
    }

    /// Records a refused SSO step (`action`, outcome denied, with the reason; never a token)
    /// and returns the error to answer with.
    pub async fn sso_refuse(
        &self,
        action: &str,
        provider: &str,
        who: Option<&str>,
        reason: &str,
    ) -> Error {
        let ev = self
            .sso_event(
                who.unwrap_or("anonymous"),
                action,
                subject("provider", provider),
            )
            .outcome(Outcome::Denied)
            .data(json!({ "provider": provider, "reason": reason }));
        if let Err(e) = self.store.commit(Changeset::new().event(ev)).await {
            tracing::error!(error = %e, "could not record a refused sign-on");
        }
        Error::Unauthenticated(format!("sign-on refused: {reason}"))
    }

    /// Stores a login flow until it finishes (single use, bounded life); flows started and
    /// never finished are purged once expired, so unauthenticated starts cannot pile up.
    pub async fn sso_begin_flow(&self, flow: SsoFlow) -> Result<()> {
        self.store
            .commit(
                Changeset::new()
                    .write(Write::Sso(SsoWrite::PurgeFlows { now: self.now() }))
                    .write(Write::Sso(SsoWrite::InsertFlow(flow))),
            )
            .await?;
        Ok(())
    }

    /// Takes a login flow by its id (the hash of its handle): once only, and only before it
    /// expires. A refusal is recorded.
    pub async fn sso_take_flow(&self, id: &str, kind: &str) -> Result<SsoFlow> {
        let flow = self.store.sso_flow(id).await?;
        let Some(flow) = flow.filter(|f| f.kind == kind) else {
            return Err(self
                .sso_refuse(
                    "sso.login",
                    "-",
                    None,
                    "unknown or already used login state",
                )
                .await);
        };
        let taken = self
            .store
            .commit(Changeset::new().write(Write::Sso(SsoWrite::TakeFlow { id: id.into() })))
            .await;
        match taken {
            Ok(_) => {}
            Err(StoreError::Conflict(_)) => {
                return Err(self
                    .sso_refuse(
                        "sso.login",
                        &flow.provider,
                        None,
                        "unknown or already used login state",
                    )
                    .await);
            }
            Err(e) => return Err(e.into()),
        }
        if self.now() >= flow.expires_at {
            return Err(self
                .sso_refuse("sso.login", &flow.provider, None, "the login flow expired")
                .await);
        }
        Ok(flow)
    }

    /// Reads a flow without taking it (a device flow is polled several times).
    pub async fn sso_flow(&self, id: &str) -> Result<Option<SsoFlow>> {
        Ok(self.store.sso_flow(id).await?)
    }

    /// Ends a flow (a finished or failed device flow).
    pub async fn sso_drop_flow(&self, id: &str) -> Result<()> {
        match self
            .store
            .commit(Changeset::new().write(Write::Sso(SsoWrite::TakeFlow { id: id.into() })))
            .await
        {
            Ok(_) | Err(StoreError::Conflict(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// The group changes that bring `user`'s provider-sourced memberships to `wanted`.
    async fn sso_group_writes(
        &self,
        user: &str,
        user_exists: bool,
        wanted: &[String],
        cs: &mut Changeset,
    ) -> Result<(Vec<String>, Vec<String>)> {
        let (marked, member_of) = if user_exists {
            (
                self.store.sso_groups(user).await?,
                self.store.groups_of(user).await?,
            )
        } else {
            (vec![], vec![])
        };
        let now = self.now();
        let (mut added, mut removed) = (vec![], vec![]);
        for g in wanted {
            if member_of.iter().any(|m| m.eq_ignore_ascii_case(g)) {
                // Hand-kept (or already sourced): leave as is.
                continue;
            }
            if self.store.group(g).await?.is_none() {
                cs.writes.push(Write::InsertGroup(Group {
                    name: g.clone(),
                    description: Some("created by single sign-on".into()),
                    members: vec![],
                    created_at: now,
                }));
                cs.events.push(
                    self.sso_event("system", "group.created", subject("group", g))
                        .data(json!({ "source": "sso" })),
                );
            }
            cs.writes.push(Write::AddGroupMember {
                group: g.clone(),
                user: user.into(),
            });
            cs.writes.push(Write::Sso(SsoWrite::MarkIdpGroup {
                user: user.into(),
                group: g.clone(),
            }));
            added.push(g.clone());
        }
        for g in marked {
            if wanted.iter().any(|w| w.eq_ignore_ascii_case(&g)) {
                continue;
            }
            cs.writes.push(Write::RemoveGroupMember {
                group: g.clone(),
                user: user.into(),
            });
            cs.writes.push(Write::Sso(SsoWrite::UnmarkIdpGroup {
                user: user.into(),
                group: g.clone(),
            }));
            removed.push(g);
        }
        for g in &added {
            cs.events.push(
                self.sso_event("system", "group.member_added", subject("group", g))
                    .data(json!({ "user": user, "source": "sso" })),
            );
        }
        for g in &removed {
            cs.events.push(
                self.sso_event("system", "group.member_removed", subject("group", g))
                    .data(json!({ "user": user, "source": "sso" })),
            );
        }
        Ok((added, removed))
    }

    /// A session token of `ttl_secs` for `user` (an SSO login, a console sign-in): the record
    /// to store and the token to hand out once.
    pub(super) fn session_token(
        &self,
        user: &str,
        description: String,
        ttl_secs: i64,
        now: Timestamp,
    ) -> Result<(TokenRecord, String)> {
        let expires_at = now
            .checked_add(SignedDuration::from_secs(ttl_secs))
            .map_err(|_| Error::Internal("session lifetime too large".into()))?;
        let minted = token::mint();
        Ok((
            TokenRecord {
                id: minted.id,
                user: user.into(),
                description: Some(description),
                secret_hash: minted.secret_hash,
                created_at: now,
                expires_at: Some(expires_at),
                revoked_at: None,
                workload: None,
                agent: false,
            },
            minted.token,
        ))
    }

    /// A first or renewed login: the user (created just in time on first login, refused if
    /// disabled in pedm or if a hand-made user of that name is not linked to this identity),
    /// provider groups replaced, a session token of `ttl_secs` minted.
    pub async fn sso_login(
        &self,
        id: &VerifiedIdentity,
        refresh_token: Option<String>,
        ttl_secs: i64,
    ) -> Result<SsoLogin> {
        let now = self.now();
        let linked = self.store.sso_identity(&id.issuer, &id.subject).await?;
        let mut cs = Changeset::new();
        // The provider's verified address is where mail goes; one pedm would not send to
        // (spaces, a second recipient) is left out rather than refusing the login.
        let email = id.email.as_deref().and_then(|e| validate_email(e).ok());
        let (name, existed) = match linked {
            Some(name) => (name, true),
            None => {
                if self.store.user(&id.user).await?.is_some() {
                    return Err(self
                        .sso_refuse(
                            "sso.login",
                            &id.provider,
                            Some(&id.user),
                            &format!(
                                "a user named {} exists and is not linked to this identity",
                                id.user
                            ),
                        )
                        .await);
                }
                cs.writes.push(Write::InsertUser(User {
                    name: id.user.clone(),
                    display_name: id.email.clone(),
                    email: email.clone(),
                    admin: false,
                    disabled: false,
                    created_at: now,
                }));
                cs.writes.push(Write::Sso(SsoWrite::LinkIdentity {
                    issuer: id.issuer.clone(),
                    subject: id.subject.clone(),
                    user: id.user.clone(),
                }));
                cs.events.push(
                    self.sso_event("system", "user.created", subject("user", &id.user))
                        .data(json!({ "source": "sso", "provider": id.provider,
                                      "issuer": id.issuer, "subject": id.subject })),
                );
                (id.user.clone(), false)
            }
        };
        if existed {
            match self.store.user(&name).await? {
                None => {
                    return Err(self
                        .sso_refuse("sso.login", &id.provider, Some(&name), "user was deleted")
                        .await);
                }
                Some(u) if u.disabled => {
                    return Err(self
                        .sso_refuse(
                            "sso.login",
                            &id.provider,
                            Some(&name),
                            "user is disabled in pedm",
                        )
                        .await);
                }
                Some(u) if email.is_some() && u.email != email => {
                    let before = u.email.clone();
                    cs.writes.push(Write::UpdateUser(User {
                        email: email.clone(),
                        ..u
                    }));
                    cs.events.push(
                        self.sso_event("system", "user.updated", subject("user", &name))
                            .data(json!({ "email": email, "email_before": before,
                                          "source": "sso", "provider": id.provider })),
                    );
                }
                Some(_) => {}
            }
        }
        let (added, removed) = self
            .sso_group_writes(&name, existed, &id.groups, &mut cs)
            .await?;
        let (record, token) = self.session_token(
            &name,
            format!("session (sso {})", id.provider),
            ttl_secs,
            now,
        )?;
        cs.writes.push(Write::InsertToken(record.clone()));
        cs.writes
            .push(Write::Sso(SsoWrite::InsertSession(SsoSession {
                token_id: record.id.clone(),
                provider: id.provider.clone(),
                issuer: id.issuer.clone(),
                subject: id.subject.clone(),
                refresh_token,
                created_at: now,
            })));
        cs.events.push(
            self.sso_event(&name, "sso.login", subject("token", &record.id))
                .data(json!({
                    "provider": id.provider, "issuer": id.issuer, "subject": id.subject,
                    "groups": id.groups, "groups_added": added, "groups_removed": removed,
                    "expires_at": record.expires_at,
                })),
        );
        self.commit_identity(cs).await?;
        let groups = self.store.groups_of(&name).await?;
        Ok(SsoLogin {
            record,
            token,
            user: name,
            groups,
        })
    }

    /// The SSO session the actor authenticated with; refused (recorded) if the actor's token
    /// is not one.
    pub async fn sso_session_of(&self, actor: &Actor, action: &str) -> Result<SsoSession> {
        let session = match &actor.token_id {
            Some(t) => self.store.sso_session(t).await?,
            None => None,
        };
        match session {
            Some(s) => Ok(s),
            None => Err(self
                .refuse(
                    actor,
                    action,
                    None,
                    "this token is not a single sign-on session".into(),
                )
                .await),
        }
    }

    /// A refresh: the provider vouched again for the session's identity (`id`); groups are
    /// replaced and the session token is rotated (the old one revoked, a new one minted).
    pub async fn sso_refresh(
        &self,
        actor: &Actor,
        old: &SsoSession,
        id: &VerifiedIdentity,
        refresh_token: Option<String>,
        ttl_secs: i64,
    ) -> Result<SsoLogin> {
        if id.issuer != old.issuer || id.subject != old.subject {
            return Err(self
                .sso_refuse(
                    "sso.refresh",
                    &old.provider,
                    Some(&actor.user),
                    "the provider answered for another identity",
                )
                .await);
        }
        let now = self.now();
        let mut cs = Changeset::new();
        let (added, removed) = self
            .sso_group_writes(&actor.user, true, &id.groups, &mut cs)
            .await?;
        let (record, token) = self.session_token(
            &actor.user,
            format!("session (sso {})", old.provider),
            ttl_secs,
            now,
        )?;
        cs.writes.push(Write::RevokeToken {
            id: old.token_id.clone(),
            at: now,
        });
        cs.writes.push(Write::Sso(SsoWrite::DeleteSession {
            token_id: old.token_id.clone(),
        }));
        cs.writes.push(Write::InsertToken(record.clone()));
        cs.writes
            .push(Write::Sso(SsoWrite::InsertSession(SsoSession {
                token_id: record.id.clone(),
                provider: old.provider.clone(),
                issuer: old.issuer.clone(),
                subject: old.subject.clone(),
                refresh_token: refresh_token.or_else(|| old.refresh_token.clone()),
                created_at: now,
            })));
        cs.events.push(
            self.sso_event(&actor.user, "sso.refresh", subject("token", &record.id))
                .data(json!({
                    "provider": old.provider, "previous_token": old.token_id,
                    "groups": id.groups, "groups_added": added, "groups_removed": removed,
                    "expires_at": record.expires_at,
                })),
        );
        self.commit_identity(cs).await.map_err(|e| match e {
            StoreError::Conflict(_) => {
                Error::Conflict("the session was refreshed or ended meanwhile".into())
            }
            e => e.into(),
        })?;
        let groups = self.store.groups_of(&actor.user).await?;
        Ok(SsoLogin {
            record,
            token,
            user: actor.user.clone(),
            groups,
        })
    }

    /// Ends an SSO session: its token revoked, the provider's refresh token forgotten.
    /// `refused` records why the server ended it (e.g. the provider refused a refresh).
    pub async fn sso_end(
        &self,
        actor: &Actor,
        session: &SsoSession,
        refused: Option<&str>,
    ) -> Result<()> {
        let now = self.now();
        let (action, outcome, data) = match refused {
            None => (
                "sso.logout",
                Outcome::Success,
                json!({ "provider": session.provider }),
            ),
            Some(r) => (
                "sso.refresh",
                Outcome::Denied,
                json!({ "provider": session.provider, "reason": r, "session_ended": true }),
            ),
        };
        let cs = Changeset::new()
            .write(Write::RevokeToken {
                id: session.token_id.clone(),
                at: now,
            })
            .write(Write::Sso(SsoWrite::DeleteSession {
                token_id: session.token_id.clone(),
            }))
            .event(
                self.sso_event(&actor.user, action, subject("token", &session.token_id))
                    .outcome(outcome)
                    .data(data),
            );
        self.commit_identity(cs).await.map_err(|e| match e {
            StoreError::Conflict(_) => Error::Conflict("the session has already ended".into()),
            e => e.into(),
        })?;
        Ok(())
    }

    /// Ids of the tokens that are SSO sessions, for marking them in token lists.
    pub async fn sso_session_ids(&self) -> Result<std::collections::HashSet<String>> {
        Ok(self
            .store
            .sso_session_ids(None)
            .await?
            .into_iter()
            .collect())
    }
}
