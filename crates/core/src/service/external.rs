//! External (vendor) accounts: creation with a sponsor and an expiry, extension, the
//! scheduler's sponsor notice and expiry, and the report of what they did (see
//! [`crate::external`]).

use super::*;
use crate::external::{ExternalAccount, ExternalWrite};
use crate::service::report::ElevationRow;
use serde::{Deserialize, Serialize};

/// One external account in the report: its record and what it did in the window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ExternalReportRow {
    pub account: ExternalAccount,
    /// Whether the account can still sign in (not expired, not disabled).
    pub live: bool,
    pub disabled: bool,
    /// Every elevation it held in the window.
    pub elevations: Vec<ElevationRow>,
    /// How many audit events it caused in the window, by action (e.g. `request.created`).
    pub actions: BTreeMap<String, u64>,
}

impl ControlPlane {
    /// Whether `user` is an external account, and its sponsor.
    pub(super) async fn external_of(&self, user: &str) -> Result<(bool, Option<String>)> {
        Ok(match self.store.external_account(user).await? {
            Some(x) => (true, Some(x.sponsor)),
            None => (false, None),
        })
    }

    /// `user` as policy sees them when they act outside a request of their own (a holder, a
    /// delegator, a colleague handed a grant): their groups, admin flag and external status;
    /// no token, no workload.
    pub(super) async fn actor_of(&self, user: &User) -> Result<Actor> {
        let (external, sponsor) = self.external_of(&user.name).await?;
        Ok(Actor {
            user: user.name.clone(),
            admin: user.admin,
            groups: self.store.groups_of(&user.name).await?,
            token_id: None,
            external,
            sponsor,
            workload: None,
            via_agent: false,
        })
    }

    /// Caps `g` at its holder's external-account expiry; refuses it once that has passed.
    pub(super) async fn cap_to_external_expiry(&self, g: &mut Grant, now: Timestamp) -> Result<()> {
        if let Some(x) = self.store.external_account(&g.user).await? {
            if !x.live(now) {
                return Err(Error::Conflict(format!(
                    "external account {} expired at {}: it can hold no grant",
                    x.user, x.expires_at
                )));
            }
            g.expires_at = g.expires_at.min(x.expires_at);
        }
        Ok(())
    }

    /// `now + secs`, checked against the server's maximum lifetime of an external account.
    fn external_expiry(&self, now: Timestamp, secs: i64) -> Result<Timestamp> {
        let max = self.limits.external_max_secs;
        if secs <= 0 {
            return Err(Error::invalid("expires", "must be a positive duration"));
        }
        if secs > max {
            return Err(Error::unprocessable(
                "expires",
                format!(
                    "{} is longer than the maximum for an external account ({}, \
                     limits.external_max)",
                    format_duration(secs),
                    format_duration(max)
                ),
            ));
        }
        now.checked_add(SignedDuration::from_secs(secs))
            .map_err(|_| Error::invalid("expires", "is too large"))
    }

    /// Creates an external (vendor) user: never an admin, with a sponsor (an enabled user who
    /// is not external) and an expiry at most `limits.external_max` away.
    pub async fn create_external_user(
        &self,
        actor: &Actor,
        name: &str,
        display_name: Option<String>,
        sponsor: &str,
        expires_in_secs: i64,
    ) -> Result<(User, ExternalAccount)> {
        self.require_admin(actor, AdminAction::ManageUsers, "user.create")
            .await?;
        validate_name("user", name)?;
        if name == SYSTEM_ACTOR || name == POLICY_ACTOR || name == "anonymous" {
            return Err(Error::unprocessable(
                "user",
                format!("{name:?} is reserved"),
            ));
        }
        let display_name = trimmed("display_name", display_name, 200)?;
        let now = self.now();
        let expires_at = self.external_expiry(now, expires_in_secs)?;
        let Some(s) = self.store.user(sponsor).await? else {
            return Err(Error::unprocessable(
                "sponsor",
                format!("user {sponsor} does not exist"),
            ));
        };
        if s.name.eq_ignore_ascii_case(name) {
            return Err(Error::unprocessable(
                "sponsor",
                "an account cannot sponsor itself",
            ));
        }
        if s.disabled {
            return Err(Error::unprocessable(
                "sponsor",
                format!("user {sponsor} is disabled"),
            ));
        }
        if self.store.external_account(&s.name).await?.is_some() {
            return Err(Error::unprocessable(
                "sponsor",
                format!("user {sponsor} is itself external and cannot sponsor"),
            ));
        }
        let user = User {
            name: name.to_string(),
            display_name,
            email: None,
            admin: false,
            disabled: false,
            created_at: now,
        };
        let account = ExternalAccount {
            user: user.name.clone(),
            sponsor: s.name.clone(),
            expires_at,
            created_at: now,
            created_by: actor.user.clone(),
            notified_at: None,
            expired_at: None,
        };
        let cs = Changeset::new()
            .write(Write::InsertUser(user.clone()))
            .write(Write::External(ExternalWrite::Insert(account.clone())))
            .event(
                self.event(actor, "user.created", subject("user", name))
                    .data(json!({
                        "admin": false, "display_name": user.display_name, "external": true,
                        "sponsor": account.sponsor, "expires_at": expires_at,
                    })),
            );
        self.commit_identity(cs).await.map_err(|e| match e {
            StoreError::AlreadyExists(_) => Error::AlreadyExists(format!(
                "user {name} (an existing name equal to it without regard to case)"
            )),
            e => e.into(),
        })?;
        self.deadline_changed.notify_one();
        Ok((user, account))
    }

    /// Moves an external account's expiry to `now + secs` (its sponsor or an admin); revives
    /// an expired one. The sponsor is told again before the new expiry.
    pub async fn extend_external_user(
        &self,
        actor: &Actor,
        name: &str,
        expires_in_secs: i64,
    ) -> Result<ExternalAccount> {
        let Some(mut x) = self.store.external_account(name).await? else {
            if self.store.user(name).await?.is_some() {
                return Err(Error::unprocessable(
                    "user",
                    format!("{name} is not an external account"),
                ));
            }
            return Err(Error::NotFound(format!("external account {name}")));
        };
        if actor.user != x.sponsor && !self.holds(actor, AdminAction::ManageUsers) {
            return Err(self
                .refuse(
                    actor,
                    "user.extend",
                    subject("user", name),
                    format!(
                        "only the sponsor ({}) or an admin may extend {name}",
                        x.sponsor
                    ),
                )
                .await);
        }
        let now = self.now();
        let expires_at = self.external_expiry(now, expires_in_secs)?;
        let cs = Changeset::new()
            .write(Write::External(ExternalWrite::Extend {
                user: x.user.clone(),
                seen: x.expires_at,
                expires_at,
            }))
            .event(
                self.event(actor, "user.extended", subject("user", &x.user))
                    .data(json!({
                        "sponsor": x.sponsor, "from": x.expires_at, "to": expires_at,
                        "was_expired": !x.live(now),
                    })),
            );
        self.commit_identity(cs).await.map_err(|e| match e {
            StoreError::Conflict(m) => Error::Conflict(m),
            e => e.into(),
        })?;
        self.deadline_changed.notify_one();
        x.expires_at = expires_at;
        x.notified_at = None;
        x.expired_at = None;
        Ok(x)
    }

    /// Every external account (needs `manage_users`).
    pub async fn list_external_users(&self, actor: &Actor) -> Result<Vec<ExternalAccount>> {
        self.require_admin(actor, AdminAction::ManageUsers, "user.list")
            .await?;
        Ok(self.store.external_accounts().await?)
    }

    /// The next moment the scheduler has something to do for an external account: a sponsor
    /// notice or an expiry.
    pub(super) async fn next_external_deadline(&self) -> Result<Option<Timestamp>> {
        let lead = SignedDuration::from_secs(self.limits.external_notice_secs);
        let mut next: Option<Timestamp> = None;
        for x in self.store.external_accounts().await? {
            if x.expired_at.is_none() {
                next = Some(next.map_or(x.expires_at, |n| n.min(x.expires_at)));
            }
            if x.notified_at.is_none() && x.expired_at.is_none() {
                let at = x.expires_at.checked_sub(lead).unwrap_or(x.expires_at);
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        }
        Ok(next)
    }

    /// Tells sponsors whose accounts expire within the lead time (once per expiry) and
    /// expires accounts past their expiry: their live grants end (`grant.revoked`), then
    /// `user.expired` is recorded once. Returns how many accounts expired.
    pub(super) async fn external_due(&self) -> Result<usize> {
        let sys = Actor::system();
        let now = self.now();
        let lead = SignedDuration::from_secs(self.limits.external_notice_secs);
        let mut expired = 0;
        for x in self.store.external_accounts().await? {
            if x.expired_at.is_some() {
                continue;
            }
            let notice_at = x.expires_at.checked_sub(lead).unwrap_or(x.expires_at);
            if x.notified_at.is_none() && now >= notice_at && now < x.expires_at {
                let cs = Changeset::new()
                    .write(Write::External(ExternalWrite::Notified {
                        user: x.user.clone(),
                        expires_at: x.expires_at,
                        at: now,
                    }))
                    .event(
                        self.event(&sys, "user.expiry_notice", subject("user", &x.user))
                            .data(json!({ "sponsor": x.sponsor, "expires_at": x.expires_at })),
                    )
                    .notice(Notice::ExternalExpiring {
                        user: x.user.clone(),
                        sponsor: x.sponsor.clone(),
                        expires_at: x.expires_at,
                    });
                match self.commit(cs).await {
                    Ok(_) => {}
                    Err(StoreError::Conflict(_)) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            if now < x.expires_at {
                continue;
            }
            // End what the account still holds, then record the expiry (a crash in between
            // repeats the ends, which the store refuses twice).
            let live = self
                .store
                .grants(&GrantFilter {
                    user: Some(x.user.clone()),
                    state: Some(GrantState::Active),
                    ..Default::default()
                })
                .await?;
            let mut ended = vec![];
            for g in live {
                if now >= g.expires_at {
                    continue; // the grant's own expiry ends it
                }
                let id = g.id;
                match self
                    .end_grant(
                        &sys,
                        g,
                        GrantState::Revoked,
                        Some(format!("external account {} expired", x.user)),
                    )
                    .await
                {
                    Ok(_) => ended.push(id),
                    Err(Error::Conflict(_)) => {}
                    Err(e) => return Err(e),
                }
            }
            let cs = Changeset::new()
                .write(Write::External(ExternalWrite::Expired {
                    user: x.user.clone(),
                    expires_at: x.expires_at,
                    at: now,
                }))
                .event(
                    self.event(&sys, "user.expired", subject("user", &x.user))
                        .data(json!({
                            "sponsor": x.sponsor, "expires_at": x.expires_at,
                            "grants_ended": ended,
                        })),
                )
                .notice(Notice::ExternalExpired {
                    user: x.user.clone(),
                    sponsor: x.sponsor.clone(),
                    expires_at: x.expires_at,
                });
            match self.commit_identity(cs).await {
                Ok(_) => expired += 1,
                Err(StoreError::Conflict(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(expired)
    }

    /// Every external account with what it did since `since`: its elevations and its audit
    /// events by action (needs `read_audit`).
    pub async fn external_report(
        &self,
        actor: &Actor,
        since: Timestamp,
    ) -> Result<Vec<ExternalReportRow>> {
        let elevations = self.elevation_report(actor, since).await?;
        let now = self.now();
        let mut rows = vec![];
        for x in self.store.external_accounts().await? {
            let disabled = self.store.user(&x.user).await?.is_none_or(|u| u.disabled);
            let mut actions = BTreeMap::new();
            let mut after = None;
            loop {
                let page = self
                    .store
                    .audit_events(&AuditFilter {
                        actor: Some(x.user.clone()),
                        since: Some(since),
                        after_seq: after,
                        limit: Some(1000),
                        ..Default::default()
                    })
                    .await?;
                for e in &page {
                    *actions.entry(e.action.clone()).or_insert(0u64) += 1;
                }
                match page.last() {
                    Some(e) if page.len() == 1000 => after = Some(e.seq),
                    _ => break,
                }
            }
            rows.push(ExternalReportRow {
                live: x.live(now) && !disabled,
                disabled,
                elevations: elevations
                    .iter()
                    .filter(|r| r.user == x.user)
                    .cloned()
                    .collect(),
                actions,
                account: x,
            });
        }
        Ok(rows)
    }
}
