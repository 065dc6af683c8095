//! The control plane: every operation a person or the scheduler performs, with its rules.
//!
//! Each method takes the authenticated [`Actor`], checks what the actor may do, validates the
//! input, builds a [`Changeset`] (rows plus the audit events that record them) and commits it.
//! Refusals of security decisions are committed as `denied` audit events before the error is
//! returned; bad input changes nothing.

use crate::Error;
use crate::audit::{NewAuditEvent, Outcome};
use crate::clock::Clock;
use crate::decision::{Decider, RequestDecision, RequestInput};
use crate::duration::format_duration;
use crate::model::*;
use crate::store::{AuditFilter, Changeset, Store, StoreError, Write};
use crate::token::{self, MintedToken};
use jiff::{SignedDuration, Timestamp};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::Notify;
use uuid::Uuid;

type Result<T> = std::result::Result<T, Error>;

/// Bounds every request must respect, whatever the role says.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Longest grant anyone may ask for, in seconds.
    pub max_duration_secs: i64,
    /// How long a request may wait for a decision before it expires, in seconds.
    pub pending_ttl_secs: i64,
    pub max_justification_chars: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_duration_secs: 7 * 86_400,
            pending_ttl_secs: 86_400,
            max_justification_chars: 2_000,
        }
    }
}

/// What a requester asks for.
#[derive(Debug, Clone)]
pub struct NewRequest {
    pub target: String,
    pub role: String,
    pub duration_secs: i64,
    pub justification: String,
    pub task: Option<String>,
    pub ticket: Option<String>,
}

#[derive(Debug, Clone)]
pub struct NewRole {
    pub target: String,
    pub name: String,
    pub description: Option<String>,
    pub max_duration_secs: i64,
    pub auto_approve: bool,
    pub run_as: Option<String>,
}

/// What the scheduler ended in one pass.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExpiryPass {
    pub grants_expired: usize,
    pub requests_expired: usize,
}

pub struct ControlPlane {
    store: Arc<dyn Store>,
    decider: Arc<dyn Decider>,
    clock: Arc<dyn Clock>,
    limits: Limits,
    /// Woken when a new deadline may be earlier than the one the scheduler sleeps until.
    deadline_changed: Arc<Notify>,
}

fn subject(kind: &str, id: impl std::fmt::Display) -> Option<String> {
    Some(format!("{kind}:{id}"))
}

fn trimmed(field: &str, v: Option<String>, max: usize) -> Result<Option<String>> {
    match v.map(|s| s.trim().to_string()) {
        None => Ok(None),
        Some(s) if s.is_empty() => Ok(None),
        Some(s) if s.chars().count() > max => Err(Error::invalid(
            field,
            format!("is longer than {max} characters"),
        )),
        Some(s) if s.chars().any(|c| c.is_control()) => {
            Err(Error::invalid(field, "contains control characters"))
        }
        Some(s) => Ok(Some(s)),
    }
}

impl ControlPlane {
    pub fn new(
        store: Arc<dyn Store>,
        decider: Arc<dyn Decider>,
        clock: Arc<dyn Clock>,
        limits: Limits,
    ) -> Self {
        ControlPlane {
            store,
            decider,
            clock,
            limits,
            deadline_changed: Arc::new(Notify::new()),
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Timestamps are kept at microsecond precision so they survive every store unchanged
    /// (the audit hash covers them).
    pub fn now(&self) -> Timestamp {
        let t = self.clock.now();
        Timestamp::from_microsecond(t.as_microsecond()).unwrap_or(t)
    }

    pub fn deadline_changed(&self) -> Arc<Notify> {
        self.deadline_changed.clone()
    }

    fn event(&self, actor: &Actor, action: &str, subject: Option<String>) -> NewAuditEvent {
        NewAuditEvent::new(self.now(), &actor.user, action, subject)
    }

    /// Records a refused attempt and returns the error to report.
    async fn refuse(
        &self,
        actor: &Actor,
        action: &str,
        subject: Option<String>,
        why: String,
    ) -> Error {
        let ev = self
            .event(actor, action, subject)
            .outcome(Outcome::Denied)
            .data(json!({ "reason": why }));
        if let Err(e) = self.store.commit(Changeset::new().event(ev)).await {
            tracing::error!(error = %e, "could not record a refused attempt");
        }
        Error::Forbidden(why)
    }

    async fn require_admin(&self, actor: &Actor, action: &str) -> Result<()> {
        if actor.admin {
            Ok(())
        } else {
            Err(self
                .refuse(
                    actor,
                    action,
                    None,
                    format!(
                        "{action} needs admin rights; {} is not an admin",
                        actor.user
                    ),
                )
                .await)
        }
    }

    // ---------------------------------------------------------------- identity

    /// Resolves a presented API token to an actor. Failures are recorded (never with the
    /// secret) and reported without saying which part was wrong.
    pub async fn authenticate(&self, presented: &str, source: Option<&str>) -> Result<Actor> {
        let now = self.now();
        let fail = |token_id: Option<&str>, why: &str| {
            NewAuditEvent::new(
                now,
                "anonymous",
                "auth.failed",
                token_id.and_then(|id| subject("token", id)),
            )
            .outcome(Outcome::Denied)
            .data(json!({ "reason": why, "source": source }))
        };
        let Some((id, secret)) = token::parse(presented) else {
            self.store
                .commit(Changeset::new().event(fail(None, "malformed token")))
                .await?;
            return Err(Error::Unauthenticated("invalid token".into()));
        };
        let record = self.store.token(id).await?;
        let user = match &record {
            Some(r) => self.store.user(&r.user).await?,
            None => None,
        };
        let why = match (&record, &user) {
            (None, _) => Some("unknown token"),
            (Some(r), _) if !token::verify(secret, &r.secret_hash) => Some("wrong secret"),
            (Some(r), _) if r.revoked_at.is_some() => Some("revoked token"),
            (Some(r), _) if !r.is_live(now) => Some("expired token"),
            (Some(_), None) => Some("token of a deleted user"),
            (Some(_), Some(u)) if u.disabled => Some("disabled user"),
            _ => None,
        };
        if let Some(why) = why {
            self.store
                .commit(Changeset::new().event(fail(Some(id), why)))
                .await?;
            let msg = match why {
                "expired token" => "token has expired",
                "revoked token" => "token has been revoked",
                _ => "invalid token",
            };
            return Err(Error::Unauthenticated(msg.into()));
        }
        let (Some(record), Some(user)) = (record, user) else {
            return Err(Error::Unauthenticated("invalid token".into()));
        };
        Ok(Actor {
            groups: self.store.groups_of(&user.name).await?,
            user: user.name,
            admin: user.admin,
            token_id: Some(record.id),
        })
    }

    /// On an empty store, creates the first admin and a token for it. Returns the token only
    /// when it was created now.
    pub async fn bootstrap(&self, admin_name: &str) -> Result<Option<MintedToken>> {
        validate_name("user", admin_name)?;
        if self.store.user_count().await? > 0 {
            return Ok(None);
        }
        let now = self.now();
        let minted = token::mint();
        let user = User {
            name: admin_name.to_string(),
            display_name: Some("bootstrap admin".into()),
            admin: true,
            disabled: false,
            created_at: now,
        };
        let rec = TokenRecord {
            id: minted.id.clone(),
            user: user.name.clone(),
            description: Some("bootstrap admin token".into()),
            secret_hash: minted.secret_hash,
            created_at: now,
            expires_at: None,
            revoked_at: None,
        };
        let sys = Actor::system();
        let cs = Changeset::new()
            .write(Write::InsertUser(user.clone()))
            .write(Write::InsertToken(rec))
            .event(
                self.event(&sys, "user.created", subject("user", &user.name))
                    .data(json!({ "admin": true, "bootstrap": true })),
            )
            .event(
                self.event(&sys, "token.created", subject("token", &minted.id))
                    .data(json!({ "user": user.name, "bootstrap": true })),
            );
        match self.store.commit(cs).await {
            Ok(_) => Ok(Some(minted)),
            // Another instance bootstrapped at the same moment.
            Err(StoreError::AlreadyExists(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn whoami(&self, actor: &Actor) -> Result<(User, Option<TokenRecord>)> {
        let user = self
            .store
            .user(&actor.user)
            .await?
            .ok_or_else(|| Error::NotFound(format!("user {}", actor.user)))?;
        let token = match &actor.token_id {
            Some(id) => self.store.token(id).await?,
            None => None,
        };
        Ok((user, token))
    }

    pub async fn create_user(
        &self,
        actor: &Actor,
        name: &str,
        display_name: Option<String>,
        admin: bool,
    ) -> Result<User> {
        self.require_admin(actor, "user.create").await?;
        validate_name("user", name)?;
        if name == SYSTEM_ACTOR || name == POLICY_ACTOR || name == "anonymous" {
            return Err(Error::invalid("user", format!("{name:?} is reserved")));
        }
        let display_name = trimmed("display_name", display_name, 200)?;
        let user = User {
            name: name.to_string(),
            display_name,
            admin,
            disabled: false,
            created_at: self.now(),
        };
        let cs = Changeset::new()
            .write(Write::InsertUser(user.clone()))
            .event(
                self.event(actor, "user.created", subject("user", name))
                    .data(json!({ "admin": admin, "display_name": user.display_name })),
            );
        self.store.commit(cs).await.map_err(|e| match e {
            StoreError::AlreadyExists(_) => Error::AlreadyExists(format!("user {name}")),
            e => e.into(),
        })?;
        Ok(user)
    }

    /// Enables/disables a user or changes admin rights.
    pub async fn update_user(
        &self,
        actor: &Actor,
        name: &str,
        admin: Option<bool>,
        disabled: Option<bool>,
    ) -> Result<User> {
        self.require_admin(actor, "user.update").await?;
        let mut user = self
            .store
            .user(name)
            .await?
            .ok_or_else(|| Error::NotFound(format!("user {name}")))?;
        if name == actor.user && (admin == Some(false) || disabled == Some(true)) {
            return Err(Error::invalid(
                "user",
                "you cannot remove your own admin rights or disable yourself",
            ));
        }
        if let Some(a) = admin {
            user.admin = a;
        }
        if let Some(d) = disabled {
            user.disabled = d;
        }
        let cs = Changeset::new()
            .write(Write::UpdateUser(user.clone()))
            .event(
                self.event(actor, "user.updated", subject("user", name))
                    .data(json!({ "admin": user.admin, "disabled": user.disabled })),
            );
        self.store.commit(cs).await?;
        Ok(user)
    }

    pub async fn list_users(&self, actor: &Actor) -> Result<Vec<User>> {
        self.require_admin(actor, "user.list").await?;
        Ok(self.store.users().await?)
    }

    pub async fn create_group(
        &self,
        actor: &Actor,
        name: &str,
        description: Option<String>,
    ) -> Result<Group> {
        self.require_admin(actor, "group.create").await?;
        validate_name("group", name)?;
        let group = Group {
            name: name.to_string(),
            description: trimmed("description", description, 500)?,
            members: vec![],
            created_at: self.now(),
        };
        let cs = Changeset::new()
            .write(Write::InsertGroup(group.clone()))
            .event(self.event(actor, "group.created", subject("group", name)));
        self.store.commit(cs).await.map_err(|e| match e {
            StoreError::AlreadyExists(_) => Error::AlreadyExists(format!("group {name}")),
            e => e.into(),
        })?;
        Ok(group)
    }

    pub async fn set_group_member(
        &self,
        actor: &Actor,
        group: &str,
        user: &str,
        member: bool,
    ) -> Result<Group> {
        self.require_admin(actor, "group.update").await?;
        if self.store.group(group).await?.is_none() {
            return Err(Error::NotFound(format!("group {group}")));
        }
        if self.store.user(user).await?.is_none() {
            return Err(Error::NotFound(format!("user {user}")));
        }
        let (w, action) = if member {
            (
                Write::AddGroupMember {
                    group: group.into(),
                    user: user.into(),
                },
                "group.member_added",
            )
        } else {
            (
                Write::RemoveGroupMember {
                    group: group.into(),
                    user: user.into(),
                },
                "group.member_removed",
            )
        };
        let cs = Changeset::new().write(w).event(
            self.event(actor, action, subject("group", group))
                .data(json!({ "user": user })),
        );
        self.store.commit(cs).await?;
        self.store
            .group(group)
            .await?
            .ok_or_else(|| Error::NotFound(format!("group {group}")))
    }

    pub async fn list_groups(&self, actor: &Actor) -> Result<Vec<Group>> {
        self.require_admin(actor, "group.list").await?;
        Ok(self.store.groups().await?)
    }

    /// Mints a token for `user` (default: the actor). Only admins mint for others.
    pub async fn create_token(
        &self,
        actor: &Actor,
        user: Option<&str>,
        description: Option<String>,
        ttl_secs: Option<i64>,
    ) -> Result<(TokenRecord, String)> {
        let user = user.unwrap_or(&actor.user);
        if user != actor.user {
            self.require_admin(actor, "token.create").await?;
        }
        if self.store.user(user).await?.is_none() {
            return Err(Error::NotFound(format!("user {user}")));
        }
        let now = self.now();
        let expires_at = match ttl_secs {
            None => None,
            Some(s) if s <= 0 => {
                return Err(Error::invalid("expires_in", "must be greater than zero"));
            }
            Some(s) => Some(
                now.checked_add(SignedDuration::from_secs(s))
                    .map_err(|_| Error::invalid("expires_in", "is too large"))?,
            ),
        };
        let minted = token::mint();
        let rec = TokenRecord {
            id: minted.id.clone(),
            user: user.to_string(),
            description: trimmed("description", description, 200)?,
            secret_hash: minted.secret_hash,
            created_at: now,
            expires_at,
            revoked_at: None,
        };
        let cs = Changeset::new()
            .write(Write::InsertToken(rec.clone()))
            .event(
                self.event(actor, "token.created", subject("token", &rec.id))
                    .data(json!({ "user": user, "expires_at": expires_at })),
            );
        self.store.commit(cs).await?;
        Ok((rec, minted.token))
    }

    pub async fn list_tokens(&self, actor: &Actor, user: Option<&str>) -> Result<Vec<TokenRecord>> {
        match user {
            Some(u) if u == actor.user => Ok(self.store.tokens(Some(u)).await?),
            Some(u) => {
                self.require_admin(actor, "token.list").await?;
                Ok(self.store.tokens(Some(u)).await?)
            }
            None if actor.admin => Ok(self.store.tokens(None).await?),
            None => Ok(self.store.tokens(Some(&actor.user)).await?),
        }
    }

    pub async fn revoke_token(&self, actor: &Actor, id: &str) -> Result<TokenRecord> {
        let rec = self
            .store
            .token(id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("token {id}")))?;
        if rec.user != actor.user && !actor.admin {
            return Err(self
                .refuse(
                    actor,
                    "token.revoke",
                    subject("token", id),
                    format!("token {id} belongs to another user"),
                )
                .await);
        }
        let now = self.now();
        let cs = Changeset::new()
            .write(Write::RevokeToken {
                id: id.to_string(),
                at: now,
            })
            .event(
                self.event(actor, "token.revoked", subject("token", id))
                    .data(json!({ "user": rec.user })),
            );
        self.store.commit(cs).await.map_err(|e| match e {
            StoreError::Conflict(_) => Error::Conflict(format!("token {id} is already revoked")),
            e => e.into(),
        })?;
        Ok(TokenRecord {
            revoked_at: Some(now),
            ..rec
        })
    }

    // ---------------------------------------------------------------- targets and roles

    pub async fn create_target(
        &self,
        actor: &Actor,
        name: &str,
        kind: TargetKind,
        description: Option<String>,
        labels: BTreeMap<String, String>,
    ) -> Result<Target> {
        self.require_admin(actor, "target.create").await?;
        validate_name("target", name)?;
        for (k, v) in &labels {
            validate_name("label key", k)?;
            if v.len() > 128 || v.chars().any(|c| c.is_control()) {
                return Err(Error::invalid(
                    "label value",
                    format!("value of label {k} must be at most 128 printable characters"),
                ));
            }
        }
        let target = Target {
            name: name.to_string(),
            kind,
            description: trimmed("description", description, 500)?,
            labels,
            created_at: self.now(),
        };
        let cs = Changeset::new()
            .write(Write::InsertTarget(target.clone()))
            .event(
                self.event(actor, "target.created", subject("target", name))
                    .data(json!({ "kind": kind, "labels": target.labels })),
            );
        self.store.commit(cs).await.map_err(|e| match e {
            StoreError::AlreadyExists(_) => Error::AlreadyExists(format!("target {name}")),
            e => e.into(),
        })?;
        Ok(target)
    }

    pub async fn list_targets(&self) -> Result<Vec<Target>> {
        Ok(self.store.targets().await?)
    }

    pub async fn get_target(&self, name: &str) -> Result<(Target, Vec<Role>)> {
        let t = self
            .store
            .target(name)
            .await?
            .ok_or_else(|| Error::NotFound(format!("target {name}")))?;
        let roles = self.store.roles(Some(name)).await?;
        Ok((t, roles))
    }

    pub async fn create_role(&self, actor: &Actor, r: NewRole) -> Result<Role> {
        self.require_admin(actor, "role.create").await?;
        validate_name("role", &r.name)?;
        if self.store.target(&r.target).await?.is_none() {
            return Err(Error::NotFound(format!("target {}", r.target)));
        }
        if r.max_duration_secs <= 0 {
            return Err(Error::invalid("max_duration", "must be greater than zero"));
        }
        if r.max_duration_secs > self.limits.max_duration_secs {
            return Err(Error::invalid(
                "max_duration",
                format!(
                    "{} is over the server limit of {}",
                    format_duration(r.max_duration_secs),
                    format_duration(self.limits.max_duration_secs)
                ),
            ));
        }
        if let Some(u) = &r.run_as {
            validate_name("run_as", u)?;
        }
        let role = Role {
            target: r.target.clone(),
            name: r.name.clone(),
            description: trimmed("description", r.description, 500)?,
            max_duration_secs: r.max_duration_secs,
            auto_approve: r.auto_approve,
            run_as: r.run_as,
            created_at: self.now(),
        };
        let cs = Changeset::new()
            .write(Write::InsertRole(role.clone()))
            .event(
                self.event(
                    actor,
                    "role.created",
                    subject("role", format!("{}/{}", r.target, r.name)),
                )
                .data(json!({
                    "max_duration_secs": role.max_duration_secs,
                    "auto_approve": role.auto_approve,
                    "run_as": role.run_as,
                })),
            );
        self.store.commit(cs).await.map_err(|e| match e {
            StoreError::AlreadyExists(_) => {
                Error::AlreadyExists(format!("role {} on target {}", r.name, r.target))
            }
            e => e.into(),
        })?;
        Ok(role)
    }

    pub async fn list_roles(&self, target: Option<&str>) -> Result<Vec<Role>> {
        if let Some(t) = target
            && self.store.target(t).await?.is_none()
        {
            return Err(Error::NotFound(format!("target {t}")));
        }
        Ok(self.store.roles(target).await?)
    }

    // ---------------------------------------------------------------- requests

    pub async fn create_request(
        &self,
        actor: &Actor,
        new: NewRequest,
        context: RequestContext,
    ) -> Result<(Request, Option<Grant>)> {
        let target = self
            .store
            .target(&new.target)
            .await?
            .ok_or_else(|| Error::NotFound(format!("target {}", new.target)))?;
        let role = self
            .store
            .role(&new.target, &new.role)
            .await?
            .ok_or_else(|| {
                Error::NotFound(format!("role {} on target {}", new.role, new.target))
            })?;
        if new.duration_secs <= 0 {
            return Err(Error::invalid("duration", "must be greater than zero"));
        }
        let max = role.max_duration_secs.min(self.limits.max_duration_secs);
        if new.duration_secs > max {
            return Err(Error::invalid(
                "duration",
                format!(
                    "{} is longer than the {} allowed for role {} on {}",
                    format_duration(new.duration_secs),
                    format_duration(max),
                    role.name,
                    target.name
                ),
            ));
        }
        let justification = new.justification.trim().to_string();
        if justification.is_empty() {
            return Err(Error::invalid(
                "justification",
                "is required: say why you need this privilege",
            ));
        }
        if justification.chars().count() > self.limits.max_justification_chars {
            return Err(Error::invalid(
                "justification",
                format!(
                    "is longer than {} characters",
                    self.limits.max_justification_chars
                ),
            ));
        }
        let task = trimmed("task", new.task, 200)?;
        let ticket = trimmed("ticket", new.ticket, 200)?;

        let decision = self.decider.decide_request(&RequestInput {
            principal: actor,
            target: &target,
            role: &role,
            duration_secs: new.duration_secs,
            justification: &justification,
            task: task.as_deref(),
            ticket: ticket.as_deref(),
            source_addr: context.source_addr.as_deref(),
        });

        let now = self.now();
        let mut req = Request {
            id: Uuid::now_v7(),
            requester: actor.user.clone(),
            target: target.name.clone(),
            role: role.name.clone(),
            duration_secs: new.duration_secs,
            justification,
            task,
            ticket,
            context,
            state: RequestState::Pending,
            created_at: now,
            pending_until: now
                .checked_add(SignedDuration::from_secs(self.limits.pending_ttl_secs))
                .map_err(|_| Error::Internal("pending deadline overflow".into()))?,
            decided_at: None,
            decided_by: None,
            decision_reason: None,
            grant_id: None,
            approvals_required: 0,
            version: 1,
        };
        let created = self
            .event(actor, "request.created", subject("request", req.id))
            .data(json!({
                "target": req.target, "role": req.role, "duration_secs": req.duration_secs,
                "justification": req.justification, "task": req.task, "ticket": req.ticket,
                "source_addr": req.context.source_addr,
            }));
        let mut cs = Changeset::new();
        let mut grant = None;
        match decision {
            RequestDecision::Deny { reason } => {
                req.state = RequestState::Denied;
                req.decided_at = Some(now);
                req.decided_by = Some(POLICY_ACTOR.into());
                req.decision_reason = Some(reason.clone());
                cs = cs
                    .write(Write::InsertRequest(req.clone()))
                    .event(created)
                    .event(
                        self.event(actor, "request.denied", subject("request", req.id))
                            .outcome(Outcome::Denied)
                            .data(json!({ "by": POLICY_ACTOR, "reason": reason })),
                    );
            }
            RequestDecision::AutoApprove { reason } => {
                req.state = RequestState::Approved;
                req.decided_at = Some(now);
                req.decided_by = Some(POLICY_ACTOR.into());
                req.decision_reason = Some(reason.clone());
                let g = self.new_grant(&req, now)?;
                req.grant_id = Some(g.id);
                cs = cs
                    .write(Write::InsertRequest(req.clone()))
                    .write(Write::InsertGrant(g.clone()))
                    .event(created)
                    .event(
                        self.event(actor, "request.approved", subject("request", req.id))
                            .data(json!({ "by": POLICY_ACTOR, "reason": reason })),
                    )
                    .event(self.grant_started_event(actor, &g));
                grant = Some(g);
            }
            RequestDecision::NeedsApproval { approvals } => {
                req.approvals_required = approvals.max(1);
                cs = cs.write(Write::InsertRequest(req.clone())).event(created);
            }
        }
        self.store.commit(cs).await?;
        self.deadline_changed.notify_one();
        Ok((req, grant))
    }

    fn new_grant(&self, req: &Request, now: Timestamp) -> Result<Grant> {
        Ok(Grant {
            id: Uuid::now_v7(),
            request_id: req.id,
            user: req.requester.clone(),
            target: req.target.clone(),
            role: req.role.clone(),
            starts_at: now,
            expires_at: now
                .checked_add(SignedDuration::from_secs(req.duration_secs))
                .map_err(|_| Error::invalid("duration", "is too large"))?,
            state: GrantState::Active,
            ended_at: None,
            ended_by: None,
            end_reason: None,
        })
    }

    fn grant_started_event(&self, actor: &Actor, g: &Grant) -> NewAuditEvent {
        self.event(actor, "grant.started", subject("grant", g.id))
            .data(json!({
                "request": g.request_id, "user": g.user, "target": g.target, "role": g.role,
                "expires_at": g.expires_at,
            }))
    }

    async fn load_request(&self, id: Uuid) -> Result<Request> {
        self.store
            .request(id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("request {id}")))
    }

    /// Requesters see their own requests; admins see all.
    pub async fn get_request(&self, actor: &Actor, id: Uuid) -> Result<(Request, Vec<Approval>)> {
        let req = self.load_request(id).await?;
        if req.requester != actor.user && !actor.admin {
            return Err(self
                .refuse(
                    actor,
                    "request.read",
                    subject("request", id),
                    format!("request {id} belongs to another user"),
                )
                .await);
        }
        let approvals = self.store.approvals(id).await?;
        Ok((req, approvals))
    }

    pub async fn list_requests(
        &self,
        actor: &Actor,
        mut filter: RequestFilter,
    ) -> Result<Vec<Request>> {
        if !actor.admin {
            match &filter.requester {
                Some(r) if *r != actor.user => {
                    return Err(self
                        .refuse(
                            actor,
                            "request.list",
                            None,
                            format!("only admins may list requests of {r}"),
                        )
                        .await);
                }
                _ => filter.requester = Some(actor.user.clone()),
            }
        }
        Ok(self.store.requests(&filter).await?)
    }

    pub async fn cancel_request(
        &self,
        actor: &Actor,
        id: Uuid,
        reason: Option<String>,
    ) -> Result<Request> {
        let reason = trimmed("reason", reason, 500)?;
        let mut req = self.load_request(id).await?;
        if req.requester != actor.user {
            return Err(self
                .refuse(
                    actor,
                    "request.cancel",
                    subject("request", id),
                    format!("only the requester may cancel request {id}"),
                )
                .await);
        }
        if req.state != RequestState::Pending {
            return Err(Error::Conflict(format!(
                "request {id} is {}, only pending requests can be cancelled",
                req.state
            )));
        }
        let now = self.now();
        req.state = RequestState::Cancelled;
        req.decided_at = Some(now);
        req.decided_by = Some(actor.user.clone());
        req.decision_reason = reason.clone();
        req.version += 1;
        let cs = Changeset::new()
            .write(Write::UpdateRequest(req.clone()))
            .event(
                self.event(actor, "request.cancelled", subject("request", id))
                    .data(json!({ "reason": reason })),
            );
        self.store.commit(cs).await.map_err(|e| concurrent(e, id))?;
        Ok(req)
    }

    /// Records one approver's decision. Enough approvals grant the request; a denial ends it.
    pub async fn decide_request(
        &self,
        actor: &Actor,
        id: Uuid,
        decision: ApprovalDecision,
        comment: Option<String>,
    ) -> Result<(Request, Option<Grant>)> {
        let comment = trimmed("comment", comment, 1000)?;
        if decision == ApprovalDecision::Deny && comment.is_none() {
            return Err(Error::invalid(
                "comment",
                "is required when denying: say why",
            ));
        }
        let mut req = self.load_request(id).await?;
        let action = match decision {
            ApprovalDecision::Approve => "request.approve",
            ApprovalDecision::Deny => "request.deny",
        };
        if req.requester == actor.user {
            return Err(self
                .refuse(
                    actor,
                    action,
                    subject("request", id),
                    format!("{} cannot {} their own request", actor.user, decision),
                )
                .await);
        }
        if let Err(why) = self.decider.may_approve(actor, &req) {
            return Err(self
                .refuse(actor, action, subject("request", id), why)
                .await);
        }
        if req.state != RequestState::Pending {
            return Err(Error::Conflict(format!(
                "request {id} is already {}, not pending",
                req.state
            )));
        }
        let approvals = self.store.approvals(id).await?;
        if approvals.iter().any(|a| a.approver == actor.user) {
            return Err(Error::Conflict(format!(
                "{} has already decided request {id}",
                actor.user
            )));
        }
        let now = self.now();
        let approval = Approval {
            request_id: id,
            approver: actor.user.clone(),
            decision,
            comment: comment.clone(),
            at: now,
        };
        req.version += 1;
        let mut cs = Changeset::new().write(Write::InsertApproval(approval));
        let mut grant = None;
        match decision {
            ApprovalDecision::Deny => {
                req.state = RequestState::Denied;
                req.decided_at = Some(now);
                req.decided_by = Some(actor.user.clone());
                req.decision_reason = comment.clone();
                cs = cs.write(Write::UpdateRequest(req.clone())).event(
                    self.event(actor, "request.denied", subject("request", id))
                        .data(json!({ "by": actor.user, "comment": comment })),
                );
            }
            ApprovalDecision::Approve => {
                let count = approvals
                    .iter()
                    .filter(|a| a.decision == ApprovalDecision::Approve)
                    .count()
                    + 1;
                cs = cs.event(
                    self.event(actor, "request.approval_recorded", subject("request", id))
                        .data(json!({
                            "by": actor.user, "comment": comment,
                            "approvals": count, "required": req.approvals_required,
                        })),
                );
                if count as u32 >= req.approvals_required {
                    req.state = RequestState::Approved;
                    req.decided_at = Some(now);
                    req.decided_by = Some(actor.user.clone());
                    req.decision_reason = comment.clone();
                    let g = self.new_grant(&req, now)?;
                    req.grant_id = Some(g.id);
                    cs = cs
                        .write(Write::InsertGrant(g.clone()))
                        .event(
                            self.event(actor, "request.approved", subject("request", id))
                                .data(json!({ "by": actor.user })),
                        )
                        .event(self.grant_started_event(actor, &g));
                    grant = Some(g);
                }
                cs.writes.insert(1, Write::UpdateRequest(req.clone()));
            }
        }
        self.store.commit(cs).await.map_err(|e| concurrent(e, id))?;
        if grant.is_some() {
            self.deadline_changed.notify_one();
        }
        Ok((req, grant))
    }

    // ---------------------------------------------------------------- grants

    async fn load_grant(&self, id: Uuid) -> Result<Grant> {
        self.store
            .grant(id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("grant {id}")))
    }

    pub async fn get_grant(&self, actor: &Actor, id: Uuid) -> Result<Grant> {
        let g = self.load_grant(id).await?;
        if g.user != actor.user && !actor.admin {
            return Err(self
                .refuse(
                    actor,
                    "grant.read",
                    subject("grant", id),
                    format!("grant {id} belongs to another user"),
                )
                .await);
        }
        Ok(g)
    }

    pub async fn list_grants(&self, actor: &Actor, mut filter: GrantFilter) -> Result<Vec<Grant>> {
        if !actor.admin {
            match &filter.user {
                Some(u) if *u != actor.user => {
                    return Err(self
                        .refuse(
                            actor,
                            "grant.list",
                            None,
                            format!("only admins may list grants of {u}"),
                        )
                        .await);
                }
                _ => filter.user = Some(actor.user.clone()),
            }
        }
        Ok(self.store.grants(&filter).await?)
    }

    /// The holder gives a grant back before it expires.
    pub async fn release_grant(
        &self,
        actor: &Actor,
        id: Uuid,
        reason: Option<String>,
    ) -> Result<Grant> {
        let reason = trimmed("reason", reason, 500)?;
        let g = self.load_grant(id).await?;
        if g.user != actor.user {
            return Err(self
                .refuse(
                    actor,
                    "grant.release",
                    subject("grant", id),
                    format!("only the holder may release grant {id}; admins revoke"),
                )
                .await);
        }
        self.end_grant(actor, g, GrantState::Released, reason).await
    }

    /// An admin ends someone's grant, with a reason.
    pub async fn revoke_grant(
        &self,
        actor: &Actor,
        id: Uuid,
        reason: Option<String>,
    ) -> Result<Grant> {
        let reason = trimmed("reason", reason, 500)?;
        let g = self.load_grant(id).await?;
        self.require_admin(actor, "grant.revoke").await?;
        if reason.is_none() {
            return Err(Error::invalid(
                "reason",
                "is required when revoking a grant",
            ));
        }
        self.end_grant(actor, g, GrantState::Revoked, reason).await
    }

    async fn end_grant(
        &self,
        actor: &Actor,
        mut g: Grant,
        state: GrantState,
        reason: Option<String>,
    ) -> Result<Grant> {
        if g.state != GrantState::Active {
            return Err(Error::Conflict(format!(
                "grant {} has already ended ({})",
                g.id, g.state
            )));
        }
        let now = self.now();
        let action = match state {
            GrantState::Released => "grant.released",
            GrantState::Revoked => "grant.revoked",
            GrantState::Expired => "grant.expired",
            GrantState::Active => {
                return Err(Error::Internal("cannot end a grant as active".into()));
            }
        };
        let cs = Changeset::new()
            .write(Write::EndGrant {
                id: g.id,
                state,
                at: now,
                by: actor.user.clone(),
                reason: reason.clone(),
            })
            .event(
                self.event(actor, action, subject("grant", g.id))
                    .data(json!({
                        "user": g.user, "target": g.target, "role": g.role,
                        "expires_at": g.expires_at, "reason": reason,
                    })),
            );
        self.store.commit(cs).await.map_err(|e| match e {
            StoreError::Conflict(_) => Error::Conflict(format!("grant {} has already ended", g.id)),
            e => e.into(),
        })?;
        g.state = state;
        g.ended_at = Some(now);
        g.ended_by = Some(actor.user.clone());
        g.end_reason = reason;
        Ok(g)
    }

    // ---------------------------------------------------------------- expiry

    /// The earliest moment something must be ended: a grant expiring or a request going stale.
    pub async fn next_deadline(&self) -> Result<Option<Timestamp>> {
        let g = self.store.next_grant_deadline().await?;
        let r = self.store.next_request_deadline().await?;
        Ok(match (g, r) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        })
    }

    /// Ends every grant and pending request whose deadline has passed. Each ends exactly once:
    /// the store refuses to end what another pass (or instance) already ended.
    pub async fn expire_due(&self) -> Result<ExpiryPass> {
        const BATCH: u32 = 500;
        let sys = Actor::system();
        let mut pass = ExpiryPass::default();
        loop {
            let now = self.now();
            let due = self.store.overdue_grants(now, BATCH).await?;
            let n = due.len();
            for g in due {
                match self
                    .end_grant(
                        &sys,
                        g,
                        GrantState::Expired,
                        Some("reached its expiry time".into()),
                    )
                    .await
                {
                    Ok(_) => pass.grants_expired += 1,
                    Err(Error::Conflict(_)) => {}
                    Err(e) => return Err(e),
                }
            }
            if n < BATCH as usize {
                break;
            }
        }
        loop {
            let now = self.now();
            let due = self.store.overdue_requests(now, BATCH).await?;
            let n = due.len();
            for mut req in due {
                let id = req.id;
                req.state = RequestState::Expired;
                req.decided_at = Some(now);
                req.decided_by = Some(SYSTEM_ACTOR.into());
                req.decision_reason = Some("no decision before the deadline".into());
                req.version += 1;
                let cs = Changeset::new()
                    .write(Write::UpdateRequest(req.clone()))
                    .event(
                        self.event(&sys, "request.expired", subject("request", id))
                            .data(json!({ "pending_until": req.pending_until })),
                    );
                match self.store.commit(cs).await {
                    Ok(_) => pass.requests_expired += 1,
                    Err(StoreError::Conflict(_)) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            if n < BATCH as usize {
                break;
            }
        }
        Ok(pass)
    }

    // ---------------------------------------------------------------- audit

    pub async fn audit_events(
        &self,
        actor: &Actor,
        filter: AuditFilter,
    ) -> Result<Vec<crate::audit::AuditEvent>> {
        self.require_admin(actor, "audit.read").await?;
        Ok(self.store.audit_events(&filter).await?)
    }
}

fn concurrent(e: StoreError, id: Uuid) -> Error {
    match e {
        StoreError::Conflict(_) => Error::Conflict(format!(
            "request {id} was changed by someone else at the same moment; it is no longer pending"
        )),
        e => e.into(),
    }
}
