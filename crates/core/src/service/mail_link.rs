//! Approval links in mail: a link names one request and the one approver it was sent to, is
//! signed by the server, expires with the request (or sooner), and acts once.
//!
//! The link only identifies; it never authenticates. Opening it needs a console session of
//! the approver it names (anyone else is refused and recorded), and acting needs a POST with
//! that session's CSRF token, which then goes through `decide_request` like the API. So a
//! forwarded or leaked link is useless to anyone else, and a link that was used is refused.
//!
//! Token: `base64url(JSON {r, a, e, n})` `.` `base64url(HMAC-SHA256(key, first part))`. The
//! key is made once and kept in the integration state every instance shares.

use super::{ControlPlane, Result, subject};
use crate::Error;
use crate::integration::{IntegrationEntry, IntegrationWrite};
use crate::model::{Actor, ApprovalDecision, Grant, Request, RequestState, User};
use crate::store::{Changeset, StoreError, Write};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{KeyInit, Mac};
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// The integration name in `integration_state` and in audit actions (`email.refused`).
pub const MAIL: &str = "email";
const KEY: &str = "link-key";
/// Tokens longer than this are not even decoded.
const MAX_TOKEN: usize = 1024;

#[derive(Debug, Serialize, Deserialize)]
struct LinkClaims {
    /// The request.
    r: Uuid,
    /// The approver the link was sent to.
    a: String,
    /// Expiry, Unix seconds.
    e: i64,
    /// Single-use nonce.
    n: String,
}

impl ControlPlane {
    /// The signing key for mail links, made by the first instance that needs one.
    async fn mail_link_key(&self) -> Result<Vec<u8>> {
        for _ in 0..2 {
            if let Some(e) = self.store.integration_entry(MAIL, KEY).await?
                && let Ok(k) = hex::decode(&e.value)
                && k.len() == 32
            {
                return Ok(k);
            }
            let mut k = [0u8; 32];
            getrandom::fill(&mut k).map_err(|e| Error::Internal(format!("randomness: {e}")))?;
            let now = self.now();
            let claim = IntegrationWrite::Claim {
                entry: IntegrationEntry {
                    integration: MAIL.into(),
                    key: KEY.into(),
                    value: hex::encode(k),
                    expires_at: None,
                },
                now,
            };
            match self
                .store
                .commit(Changeset::new().write(Write::Integration(claim)))
                .await
            {
                Ok(_) => return Ok(k.to_vec()),
                // Another instance made one at the same moment: read theirs.
                Err(StoreError::AlreadyExists(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Internal(
            "no mail link key could be read or made".into(),
        ))
    }

    /// A link token for `approver` to decide `request`, valid until the request's pending
    /// deadline or `ttl_secs` from now, whichever comes first.
    pub async fn mail_link(
        &self,
        request: &Request,
        approver: &str,
        ttl_secs: i64,
    ) -> Result<String> {
        let key = self.mail_link_key().await?;
        let until = request
            .pending_until
            .min(self.now() + SignedDuration::from_secs(ttl_secs));
        let mut n = [0u8; 16];
        getrandom::fill(&mut n).map_err(|e| Error::Internal(format!("randomness: {e}")))?;
        let claims = LinkClaims {
            r: request.id,
            a: approver.to_string(),
            e: until.as_second(),
            n: hex::encode(n),
        };
        let body =
            B64.encode(serde_json::to_vec(&claims).map_err(|e| Error::Internal(e.to_string()))?);
        let mut m = HmacSha256::new_from_slice(&key).expect("HMAC accepts any key length");
        m.update(body.as_bytes());
        Ok(format!("{body}.{}", B64.encode(m.finalize().into_bytes())))
    }

    /// Checks a mail link for `actor` (signature, expiry, addressee, not used yet) and
    /// returns the request it names. Every refusal is recorded as `email.refused`.
    pub async fn open_mail_link(&self, actor: &Actor, token: &str) -> Result<Request> {
        let claims = self.mail_link_claims(actor, token).await?;
        self.load_request(claims.r).await
    }

    /// Decides the request a mail link names, as `actor`, once: the link is spent first, then
    /// the decision goes the API's way (tiers, self-approval, policy).
    pub async fn decide_by_mail_link(
        &self,
        actor: &Actor,
        token: &str,
        decision: ApprovalDecision,
        comment: Option<String>,
    ) -> Result<(Request, Option<Grant>)> {
        let claims = self.mail_link_claims(actor, token).await?;
        let ttl = (claims.e - self.now().as_second()).max(1);
        if !self
            .integration_claim(MAIL, &format!("used:{}", claims.n), ttl)
            .await?
        {
            return Err(self
                .refuse_mail_link(actor, Some(claims.r), "the link was used already")
                .await);
        }
        self.decide_request(actor, claims.r, decision, comment)
            .await
    }

    async fn mail_link_claims(&self, actor: &Actor, token: &str) -> Result<LinkClaims> {
        let claims = match self.verify_mail_link(token).await? {
            Some(c) => c,
            None => {
                return Err(self
                    .refuse_mail_link(actor, None, "the link is not one pedm signed")
                    .await);
            }
        };
        if claims.a != actor.user {
            let why = format!(
                "the link was sent to another approver, not to {}",
                actor.user
            );
            return Err(self.refuse_mail_link(actor, Some(claims.r), &why).await);
        }
        if self.now().as_second() >= claims.e {
            return Err(self
                .refuse_mail_link(actor, Some(claims.r), "the link has expired")
                .await);
        }
        if self
            .integration_value(MAIL, &format!("used:{}", claims.n))
            .await?
            .is_some()
        {
            return Err(self
                .refuse_mail_link(actor, Some(claims.r), "the link was used already")
                .await);
        }
        Ok(claims)
    }

    async fn verify_mail_link(&self, token: &str) -> Result<Option<LinkClaims>> {
        if token.len() > MAX_TOKEN {
            return Ok(None);
        }
        let Some((body, mac)) = token.split_once('.') else {
            return Ok(None);
        };
        let Ok(mac) = B64.decode(mac) else {
            return Ok(None);
        };
        let key = self.mail_link_key().await?;
        let mut m = HmacSha256::new_from_slice(&key).expect("HMAC accepts any key length");
        m.update(body.as_bytes());
        // Constant-time comparison.
        if m.verify_slice(&mac).is_err() {
            return Ok(None);
        }
        Ok(B64
            .decode(body)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok()))
    }

    /// Records a refused mail link (`email.refused`) and says why.
    async fn refuse_mail_link(&self, actor: &Actor, request: Option<Uuid>, why: &str) -> Error {
        let ev = self
            .event(
                actor,
                "email.refused",
                request.and_then(|r| subject("request", r)),
            )
            .outcome(crate::audit::Outcome::Denied)
            .data(json!({ "reason": why }));
        if let Err(e) = self.store.commit(Changeset::new().event(ev)).await {
            tracing::error!(error = %e, "could not record a refused mail link");
        }
        match why {
            w if w.contains("used already") || w.contains("expired") => {
                Error::Conflict(format!("{w}; open the request in the console instead"))
            }
            w => Error::Forbidden(w.to_string()),
        }
    }

    /// Who may decide `req` right now and has a mail address (see
    /// [`current_approvers`](Self::current_approvers)).
    pub async fn approvers_to_mail(&self, req: &Request) -> Result<Vec<User>> {
        let mut all = self.current_approvers(req).await?;
        all.retain(|u| u.email.is_some());
        Ok(all)
    }

    /// Who may decide `req` right now: members of the groups of the step it waits for (or
    /// every user when the step names no group), and of its escalation group once escalated,
    /// that policy lets decide it — not the requester, nor anyone who decided already.
    pub async fn current_approvers(&self, req: &Request) -> Result<Vec<User>> {
        if req.state != RequestState::Pending {
            return Ok(vec![]);
        }
        let approvals = self.store.approvals(req.id).await?;
        let outstanding = req.outstanding(&approvals);
        let Some((step, _)) = outstanding.first() else {
            return Ok(vec![]);
        };
        let mut groups: Vec<String> = outstanding
            .iter()
            .filter(|(s, _)| s == step)
            .filter_map(|(_, t)| t.group.clone())
            .collect();
        let any_group = outstanding
            .iter()
            .any(|(s, t)| s == step && t.group.is_none());
        if let Some(g) = req
            .follow_up
            .as_ref()
            .and_then(|f| f.escalated_to(req.created_at, self.now()))
        {
            groups.push(g.to_string());
        }
        let candidates: Vec<User> = if any_group {
            self.store.users().await?
        } else {
            let mut names = std::collections::BTreeSet::new();
            for g in self.store.groups().await? {
                if groups.contains(&g.name) {
                    names.extend(g.members);
                }
            }
            let mut users = vec![];
            for n in names {
                if let Some(u) = self.store.user(&n).await? {
                    users.push(u);
                }
            }
            users
        };
        let target = self.store.target(&req.target).await?;
        let role = self.store.role(&req.target, &req.role).await?;
        let mut out = vec![];
        for u in candidates {
            if u.disabled
                || u.name == req.requester
                || approvals.iter().any(|a| a.approver == u.name)
            {
                continue;
            }
            if let Some(x) = self.store.external_account(&u.name).await?
                && !x.live(self.now())
            {
                continue;
            }
            let actor = self.actor_of(&u).await?;
            if self
                .decision_tier_on(&actor, req, &approvals, target.as_ref(), role.as_ref())
                .is_ok()
            {
                out.push(u);
            }
        }
        Ok(out)
    }

    /// When a link made now for `req` would stop working (for the mail's text).
    pub fn mail_link_until(&self, req: &Request, ttl_secs: i64) -> Timestamp {
        req.pending_until
            .min(self.now() + SignedDuration::from_secs(ttl_secs))
    }
}
