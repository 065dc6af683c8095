//! Tasks and delegations: defining tasks, delegating tasks and roles and passing them on
//! (never more than one holds), revoking with cascade, checking a task run, the tasks a host's
//! agent enforces. Handing a grant on to a colleague is `peer_delegation.rs`.
//!
//! A delegation works only while its whole chain holds, checked at every use: each link not
//! revoked and before its deadline, each delegator still enabled, and each re-delegator still
//! a delegate of the link above. Re-delegation is authorised by the parent's `redelegate`
//! flag; a delegation without a parent needs the Cedar `delegate` action on every task and
//! role it covers, on every target of its scope at creation time.

use super::*;
use crate::decision::Delegable;
use crate::delegation::*;

/// Longest a delegation may last.
pub const MAX_DELEGATION_SECS: i64 = 366 * 86_400;
/// Deepest chain of re-delegations.
const MAX_CHAIN: usize = 16;
const MAX_ITEMS: usize = 100;

/// What a delegator hands on.
#[derive(Debug, Clone)]
pub struct NewDelegation {
    /// Pass on part of this delegation (its delegate must be the actor, and it must allow it).
    pub parent: Option<Uuid>,
    pub delegate: Delegatee,
    pub tasks: Vec<String>,
    pub roles: Vec<String>,
    pub scope: Vec<String>,
    pub expires_at: Timestamp,
    pub redelegate: bool,
    pub reason: Option<String>,
}

/// What revoking a delegation ended: the delegation and everything passed on from it, and the
/// grants they had pre-approved (with the grants handed on from those).
#[derive(Debug, Clone)]
pub struct RevokedDelegation {
    pub delegations: Vec<Delegation>,
    pub grants: Vec<Grant>,
}

/// A task run that would be accepted now.
#[derive(Debug, Clone)]
pub struct TaskCheck {
    pub delegation: DelegationId,
    pub task: TaskDef,
    pub rendered: RenderedTask,
}

/// What a chain of delegations is asked to allow.
#[derive(Clone, Copy)]
pub(super) enum Item<'a> {
    Task(&'a str),
    Role(&'a str),
}

fn chain_allows(chain: &[Delegation], target: &Target, item: Item<'_>) -> bool {
    chain.iter().all(|d| {
        d.in_scope(target)
            && match item {
                Item::Task(t) => d.tasks.iter().any(|x| x == t),
                Item::Role(r) => d.roles.iter().any(|x| x == r),
            }
    })
}

fn names(field: &str, kind: &str, v: Vec<String>) -> Result<Vec<String>> {
    if v.len() > MAX_ITEMS {
        return Err(Error::invalid(
            field,
            format!("at most {MAX_ITEMS} entries"),
        ));
    }
    let mut out = Vec::with_capacity(v.len());
    for n in v {
        let n = n.trim().to_string();
        validate_name(kind, &n).map_err(|e| Error::invalid(field, e.to_string()))?;
        out.push(n);
    }
    out.sort();
    out.dedup();
    Ok(out)
}

impl ControlPlane {
    // ---------------------------------------------------------------- tasks

    /// Defines a task (or, with `replace`, changes one). Needs `manage_targets`.
    pub async fn define_task(
        &self,
        actor: &Actor,
        mut def: TaskDef,
        replace: bool,
    ) -> Result<TaskDef> {
        self.require_admin(actor, AdminAction::ManageTargets, "task.define")
            .await?;
        def.defined_by = Some(actor.user.clone());
        def.defined_at = Some(self.now());
        def.validate()?;
        let existed = self.store.task(&def.name).await?.is_some();
        let name = def.name.clone();
        let cs = Changeset::new()
            .write(Write::Delegation(DelegationWrite::DefineTask {
                task: def.clone(),
                replace,
            }))
            .event(
                self.event(actor, "task.defined", subject("task", &name))
                    .data(json!({ "replaced": existed, "definition": def })),
            );
        self.store.commit(cs).await.map_err(|e| match e {
            StoreError::AlreadyExists(_) => {
                Error::AlreadyExists(format!("task {name} (define it with replace to change it)"))
            }
            e => e.into(),
        })?;
        self.notify(Notice::DelegationsChanged);
        Ok(def)
    }

    pub async fn list_tasks(&self, _actor: &Actor) -> Result<Vec<TaskDef>> {
        Ok(self.store.tasks().await?)
    }

    pub async fn get_task(&self, _actor: &Actor, name: &str) -> Result<TaskDef> {
        self.load_task(name).await
    }

    async fn load_task(&self, name: &str) -> Result<TaskDef> {
        self.store
            .task(name)
            .await?
            .ok_or_else(|| Error::NotFound(format!("task {name}")))
    }

    pub(super) async fn load_target(&self, name: &str) -> Result<Target> {
        self.store
            .target(name)
            .await?
            .ok_or_else(|| Error::NotFound(format!("target {name}")))
    }

    /// Records a refused delegation operation with what was asked, and returns the error.
    pub(super) async fn refuse_delegation(
        &self,
        actor: &Actor,
        action: &str,
        subject: Option<String>,
        why: String,
        asked: serde_json::Value,
    ) -> Error {
        let ev = self
            .event(actor, action, subject)
            .outcome(Outcome::Denied)
            .data(json!({ "reason": why, "asked": asked }));
        if let Err(e) = self.store.commit(Changeset::new().event(ev)).await {
            tracing::error!(error = %e, "could not record a refused attempt");
        }
        Error::Forbidden(why)
    }

    // ---------------------------------------------------------------- chains

    /// The delegation and its ancestors (itself first) if the whole chain holds at `now`;
    /// `Err` says which link does not.
    async fn live_chain(
        &self,
        d: &Delegation,
        now: Timestamp,
    ) -> Result<std::result::Result<Vec<Delegation>, String>> {
        let mut chain = vec![d.clone()];
        while let Some(cur) = chain.last() {
            if !cur.is_live(now) {
                return Ok(Err(format!(
                    "delegation {} is {}",
                    cur.id,
                    cur.state_at(now)
                )));
            }
            match self.store.user(&cur.delegator).await? {
                Some(u) if !u.disabled => {}
                None if cur.delegator == SYSTEM_ACTOR => {}
                _ => {
                    return Ok(Err(format!(
                        "{}, who made delegation {}, is disabled",
                        cur.delegator, cur.id
                    )));
                }
            }
            let Some(pid) = cur.parent else { break };
            if chain.len() >= MAX_CHAIN {
                return Ok(Err(format!(
                    "delegation {} is more than {MAX_CHAIN} re-delegations deep",
                    d.id
                )));
            }
            let Some(parent) = self.store.delegation(pid).await? else {
                return Ok(Err(format!("delegation {pid} no longer exists")));
            };
            let groups = self.store.groups_of(&cur.delegator).await?;
            if !parent.delegate.covers(&cur.delegator, &groups) {
                return Ok(Err(format!(
                    "{} is no longer a delegate of delegation {pid}",
                    cur.delegator
                )));
            }
            chain.push(parent);
        }
        Ok(Ok(chain))
    }

    /// Live delegations whose delegate is `user` (or one of the user's groups now) and whose
    /// whole chain allows `item` on `target`, with the earliest deadline of each chain.
    pub(super) async fn allowing(
        &self,
        user: &str,
        target: &Target,
        item: Item<'_>,
        now: Timestamp,
    ) -> Result<Vec<(Delegation, Timestamp)>> {
        let groups = self.store.groups_of(user).await?;
        let live = self
            .store
            .delegations(&DelegationFilter {
                live_at: Some(now),
                ..Default::default()
            })
            .await?;
        let mut out = vec![];
        for d in live {
            if !d.delegate.covers(user, &groups) {
                continue;
            }
            if let Some(until) = self.chain_deadline(&d, target, item, now).await? {
                out.push((d.at(now), until));
            }
        }
        Ok(out)
    }

    /// When `d` stops allowing `item` on `target`: the earliest deadline along its chain, or
    /// `None` if the chain does not hold now or does not cover the item.
    async fn chain_deadline(
        &self,
        d: &Delegation,
        target: &Target,
        item: Item<'_>,
        now: Timestamp,
    ) -> Result<Option<Timestamp>> {
        if !chain_allows(std::slice::from_ref(d), target, item) {
            return Ok(None);
        }
        let Ok(chain) = self.live_chain(d, now).await? else {
            return Ok(None);
        };
        if !chain_allows(&chain, target, item) {
            return Ok(None);
        }
        // The policy in force now must still let the root delegator delegate this item on
        // this target: a role or target created after the delegation, or a policy changed
        // since, is never pre-approved on the strength of an old decision.
        if let Some(root) = chain.last()
            && !self.may_still_delegate(root, target, item, now).await?
        {
            return Ok(None);
        }
        Ok(Some(
            chain
                .iter()
                .map(|c| c.expires_at)
                .min()
                .unwrap_or(d.expires_at),
        ))
    }

    /// Whether the policy in force lets `root`'s delegator delegate `item` on `target` now.
    async fn may_still_delegate(
        &self,
        root: &Delegation,
        target: &Target,
        item: Item<'_>,
        now: Timestamp,
    ) -> Result<bool> {
        if root.delegator == SYSTEM_ACTOR {
            return Ok(true);
        }
        let Some(user) = self.store.user(&root.delegator).await? else {
            return Ok(false);
        };
        let actor = self.actor_of(&user).await?;
        let secs = root.expires_at.duration_since(now).as_secs().max(1);
        let decider = self.decider();
        let verdict = match item {
            Item::Task(name) => decider.may_delegate(&actor, target, Delegable::Task(name), secs),
            Item::Role(name) => match self.store.role(&target.name, name).await? {
                Some(role) => decider.may_delegate(&actor, target, Delegable::Role(&role), secs),
                None => return Ok(false),
            },
        };
        if let Err(why) = &verdict {
            tracing::info!(delegation = %root.id, target = %target.name, why, "delegation no longer allowed by policy");
        }
        Ok(verdict.is_ok())
    }

    /// The live delegation that pre-approves `role` on `target` for `actor` (the one lasting
    /// longest, with at least a second left) and the moment it ends.
    pub(super) async fn delegation_for_role(
        &self,
        actor: &Actor,
        target: &Target,
        role: &str,
        now: Timestamp,
    ) -> Result<Option<(Delegation, Timestamp)>> {
        let found = self
            .allowing(&actor.user, target, Item::Role(role), now)
            .await?;
        Ok(found
            .into_iter()
            .filter(|(_, until)| until.duration_since(now).as_secs() >= 1)
            .max_by_key(|(_, until)| *until))
    }

    /// Active grants handed on from grant `id` (peer delegation).
    pub(super) async fn handed_on_grants(&self, id: Uuid) -> Result<Vec<Grant>> {
        let links = self
            .store
            .grant_links(&GrantLinkFilter {
                parent_grant: Some(id),
                ..Default::default()
            })
            .await?;
        let mut out = vec![];
        for l in links {
            if let Some(g) = self.store.grant(l.grant_id).await?
                && g.state == GrantState::Active
            {
                out.push(g);
            }
        }
        Ok(out)
    }

    // ---------------------------------------------------------------- delegations

    /// Creates a delegation. Without a parent, policy must let the actor `delegate` every task
    /// and role on every target of the scope; with one, the actor must be its delegate, it
    /// must allow re-delegation, and the new one must be within it (tasks, roles, scope and
    /// deadline). Refusals are audited and name what is wider.
    pub async fn create_delegation(&self, actor: &Actor, new: NewDelegation) -> Result<Delegation> {
        let now = self.now();
        validate_name(
            match new.delegate.kind {
                DelegateKind::User => "user",
                DelegateKind::Group => "group",
            },
            &new.delegate.name,
        )?;
        let tasks = names("tasks", "task", new.tasks)?;
        let roles = names("roles", "role", new.roles)?;
        if tasks.is_empty() && roles.is_empty() {
            return Err(Error::invalid(
                "tasks",
                "a delegation needs at least one task or role",
            ));
        }
        let mut scope_items = new.scope.clone();
        scope_items
            .iter_mut()
            .for_each(|s| *s = s.trim().to_string());
        scope_items.sort();
        scope_items.dedup();
        let scope = parse_scope(&scope_items).map_err(|e| match e {
            ScopeError::Syntax(m) => Error::invalid("scope", m),
            ScopeError::Contradiction(m) => Error::unprocessable("scope", m),
        })?;
        let reason = trimmed("reason", new.reason, 500)?;
        if new.expires_at <= now {
            return Err(Error::unprocessable("expires_at", "is not in the future"));
        }
        let secs = new.expires_at.duration_since(now).as_secs();
        if secs > MAX_DELEGATION_SECS {
            return Err(Error::unprocessable(
                "expires_at",
                format!("is more than {} away", format_duration(MAX_DELEGATION_SECS)),
            ));
        }
        match new.delegate.kind {
            DelegateKind::User => {
                if new.delegate.name == actor.user {
                    return Err(Error::unprocessable(
                        "user",
                        "you cannot delegate to yourself",
                    ));
                }
                if self.store.user(&new.delegate.name).await?.is_none() {
                    return Err(Error::NotFound(format!("user {}", new.delegate.name)));
                }
            }
            DelegateKind::Group => {
                if self.store.group(&new.delegate.name).await?.is_none() {
                    return Err(Error::NotFound(format!("group {}", new.delegate.name)));
                }
            }
        }
        let mut defs = vec![];
        for t in &tasks {
            defs.push(self.load_task(t).await?);
        }
        let targets = self.store.targets().await?;
        // A scope entry that names nothing now would pre-approve whatever matches it later,
        // which policy never saw.
        if let Some(empty) = scope.iter().find(|i| !targets.iter().any(|t| i.matches(t))) {
            return Err(Error::unprocessable(
                "scope",
                format!("{empty} matches no target (create the target first)"),
            ));
        }
        let in_scope: Vec<&Target> = targets
            .iter()
            .filter(|t| scope_matches(&scope, t))
            .collect();
        let asked = json!({
            "parent": new.parent, "delegate": new.delegate, "tasks": tasks, "roles": roles,
            "scope": scope_items, "expires_at": new.expires_at, "redelegate": new.redelegate,
        });
        let refuse = |why: String| {
            self.refuse_delegation(actor, "delegation.create", None, why, asked.clone())
        };

        match new.parent {
            None => {
                let decider = self.decider();
                for def in &defs {
                    let on: Vec<&&Target> = in_scope.iter().filter(|t| def.applies_to(t)).collect();
                    if on.is_empty() {
                        return Err(Error::unprocessable(
                            "tasks",
                            format!(
                                "task {} applies to no target of the scope {}",
                                def.name,
                                scope_items.join(", ")
                            ),
                        ));
                    }
                    for t in on {
                        if let Err(why) =
                            decider.may_delegate(actor, t, Delegable::Task(&def.name), secs)
                        {
                            return Err(refuse(why).await);
                        }
                    }
                }
                for r in &roles {
                    let mut found = false;
                    for t in &in_scope {
                        let Some(role) = self.store.role(&t.name, r).await? else {
                            continue;
                        };
                        found = true;
                        if let Err(why) =
                            decider.may_delegate(actor, t, Delegable::Role(&role), secs)
                        {
                            return Err(refuse(why).await);
                        }
                    }
                    if !found {
                        return Err(Error::unprocessable(
                            "roles",
                            format!(
                                "no target of the scope {} has a role {r}",
                                scope_items.join(", ")
                            ),
                        ));
                    }
                }
            }
            Some(pid) => {
                let parent = self
                    .store
                    .delegation(pid)
                    .await?
                    .ok_or_else(|| Error::NotFound(format!("delegation {pid}")))?;
                let groups = self.store.groups_of(&actor.user).await?;
                if !parent.delegate.covers(&actor.user, &groups) {
                    return Err(refuse(format!(
                        "{} is not a delegate of delegation {pid} ({})",
                        actor.user, parent.delegate
                    ))
                    .await);
                }
                let chain = match self.live_chain(&parent, now).await? {
                    Ok(c) => c,
                    Err(why) => {
                        return Err(
                            refuse(format!("delegation {pid} cannot be passed on: {why}")).await,
                        );
                    }
                };
                if !parent.redelegate {
                    return Err(
                        refuse(format!("delegation {pid} does not allow re-delegation")).await,
                    );
                }
                let mut wider = vec![];
                let extra: Vec<&str> = tasks
                    .iter()
                    .filter(|t| !parent.tasks.contains(t))
                    .map(String::as_str)
                    .collect();
                if !extra.is_empty() {
                    wider.push(format!(
                        "tasks {} are not delegated to you",
                        extra.join(", ")
                    ));
                }
                let extra: Vec<&str> = roles
                    .iter()
                    .filter(|r| !parent.roles.contains(r))
                    .map(String::as_str)
                    .collect();
                if !extra.is_empty() {
                    wider.push(format!(
                        "roles {} are not delegated to you",
                        extra.join(", ")
                    ));
                }
                let parent_scope =
                    parse_scope(&parent.scope).map_err(|e| Error::Internal(e.to_string()))?;
                let excess = scope_excess(&parent_scope, &scope, |n| {
                    targets.iter().find(|t| t.name == n).cloned()
                });
                if !excess.is_empty() {
                    let ex: Vec<String> = excess.iter().map(ToString::to_string).collect();
                    wider.push(format!(
                        "scope {} is outside {}",
                        ex.join(", "),
                        parent.scope.join(", ")
                    ));
                }
                let until = chain
                    .iter()
                    .map(|c| c.expires_at)
                    .min()
                    .unwrap_or(parent.expires_at);
                if new.expires_at > until {
                    wider.push(format!("deadline {} is later than {until}", new.expires_at));
                }
                if !wider.is_empty() {
                    return Err(refuse(format!(
                        "wider than delegation {pid}: {}",
                        wider.join("; ")
                    ))
                    .await);
                }
            }
        }

        let d = Delegation {
            id: Uuid::now_v7(),
            parent: new.parent,
            delegator: actor.user.clone(),
            delegate: new.delegate,
            tasks,
            roles,
            scope: scope_items,
            expires_at: new.expires_at,
            redelegate: new.redelegate,
            reason,
            created_at: now,
            revoked_at: None,
            revoked_by: None,
            revoke_reason: None,
            state: DelegationState::Active,
        };
        let cs = Changeset::new()
            .write(Write::Delegation(DelegationWrite::Insert(d.clone())))
            .event(
                self.event(actor, "delegation.created", subject("delegation", d.id))
                    .data(json!({
                        "parent": d.parent, "delegate": d.delegate, "tasks": d.tasks,
                        "roles": d.roles, "scope": d.scope, "expires_at": d.expires_at,
                        "redelegate": d.redelegate, "reason": d.reason,
                    })),
            );
        self.store.commit(cs).await?;
        self.notify(Notice::DelegationsChanged);
        Ok(d)
    }

    /// Delegations the actor may see: all with `read_audit`, otherwise those they made or that
    /// are for them (or a group of theirs). Only live ones unless `include_ended`.
    pub async fn list_delegations(
        &self,
        actor: &Actor,
        include_ended: bool,
    ) -> Result<Vec<Delegation>> {
        let now = self.now();
        let all = self
            .store
            .delegations(&DelegationFilter {
                live_at: (!include_ended).then_some(now),
                limit: Some(1_000),
                ..Default::default()
            })
            .await?;
        let everyone = self.holds(actor, AdminAction::ReadAudit);
        let groups = self.store.groups_of(&actor.user).await?;
        Ok(all
            .into_iter()
            .filter(|d| {
                everyone || d.delegator == actor.user || d.delegate.covers(&actor.user, &groups)
            })
            .map(|d| d.at(now))
            .collect())
    }

    pub async fn get_delegation(&self, actor: &Actor, id: Uuid) -> Result<Delegation> {
        let d = self.load_delegation(id).await?;
        let groups = self.store.groups_of(&actor.user).await?;
        if d.delegator != actor.user
            && !d.delegate.covers(&actor.user, &groups)
            && !self.holds(actor, AdminAction::ReadAudit)
        {
            return Err(self
                .refuse(
                    actor,
                    "delegation.read",
                    subject("delegation", id),
                    format!("delegation {id} is neither from nor for {}", actor.user),
                )
                .await);
        }
        Ok(d.at(self.now()))
    }

    async fn load_delegation(&self, id: Uuid) -> Result<Delegation> {
        self.store
            .delegation(id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("delegation {id}")))
    }

    /// Ends a delegation and, in the same changeset, every delegation passed on from it and
    /// every active grant they pre-approved (each with its event). Allowed to its delegator,
    /// the delegator of any delegation above it, and holders of `manage_grants`. A reason is
    /// required.
    pub async fn revoke_delegation(
        &self,
        actor: &Actor,
        id: Uuid,
        reason: Option<String>,
    ) -> Result<RevokedDelegation> {
        let reason = trimmed("reason", reason, 500)?
            .ok_or_else(|| Error::invalid("reason", "is required when revoking a delegation"))?;
        let d = self.load_delegation(id).await?;
        let mut allowed = d.delegator == actor.user || self.holds(actor, AdminAction::ManageGrants);
        let mut up = d.parent;
        let mut depth = 0;
        while let (false, Some(pid)) = (allowed, up) {
            depth += 1;
            let Some(p) = self.store.delegation(pid).await? else {
                break;
            };
            allowed = p.delegator == actor.user;
            up = if depth < MAX_CHAIN { p.parent } else { None };
        }
        if !allowed {
            return Err(self
                .refuse(
                    actor,
                    "delegation.revoke",
                    subject("delegation", id),
                    format!(
                        "only {} (who made delegation {id}), those above them, or holders of \
                         manage_grants may revoke it",
                        d.delegator
                    ),
                )
                .await);
        }
        if d.revoked_at.is_some() {
            return Err(Error::Conflict(format!(
                "delegation {id} is already revoked"
            )));
        }
        self.revoke_delegation_tree(actor, id, reason, Changeset::new())
            .await
    }

    /// Revokes delegation `id`, every delegation passed on from it and every active grant
    /// they pre-approved, in one changeset with `extra` (the caller checked the right to).
    pub(super) async fn revoke_delegation_tree(
        &self,
        actor: &Actor,
        id: Uuid,
        reason: String,
        extra: Changeset,
    ) -> Result<RevokedDelegation> {
        for attempt in 0.. {
            let now = self.now();
            // The delegation and everything passed on from it, not revoked yet.
            let mut all = vec![self.load_delegation(id).await?];
            if all[0].revoked_at.is_some() {
                return Err(Error::Conflict(format!(
                    "delegation {id} is already revoked"
                )));
            }
            let mut i = 0;
            while i < all.len() && all.len() < 10_000 {
                let children = self
                    .store
                    .delegations(&DelegationFilter {
                        parent: Some(all[i].id),
                        ..Default::default()
                    })
                    .await?;
                all.extend(children.into_iter().filter(|c| c.revoked_at.is_none()));
                i += 1;
            }
            let mut cs = extra.clone();
            for x in &all {
                cs.writes.push(Write::Delegation(DelegationWrite::Revoke {
                    id: x.id,
                    at: now,
                    by: actor.user.clone(),
                    reason: reason.clone(),
                }));
                let mut data = json!({
                    "reason": reason, "delegate": x.delegate, "delegator": x.delegator,
                    "expires_at": x.expires_at,
                });
                if x.id != id {
                    data["cascade_from"] = json!(id);
                }
                cs.events.push(
                    self.event(actor, "delegation.revoked", subject("delegation", x.id))
                        .data(data),
                );
            }
            let mut ended = vec![];
            for x in &all {
                let links = self
                    .store
                    .grant_links(&GrantLinkFilter {
                        delegation: Some(x.id),
                        ..Default::default()
                    })
                    .await?;
                for l in links {
                    let Some(g) = self.store.grant(l.grant_id).await? else {
                        continue;
                    };
                    if g.state != GrantState::Active || ended.iter().any(|e: &Grant| e.id == g.id) {
                        continue;
                    }
                    let why = format!(
                        "delegation {} that pre-approved it was revoked: {reason}",
                        x.id
                    );
                    ended.extend(
                        self.end_grant_writes(
                            actor,
                            &g,
                            GrantState::Revoked,
                            Some(why),
                            now,
                            &mut cs,
                        )
                        .await?,
                    );
                }
            }
            match self.commit(cs.notice(Notice::DelegationsChanged)).await {
                Ok(_) => {
                    if ended
                        .iter()
                        .any(|g| g.provision_state == ProvisionState::RevokePending)
                    {
                        self.jobs_changed.notify_one();
                    }
                    let delegations = all
                        .into_iter()
                        .map(|mut x| {
                            x.revoked_at = Some(now);
                            x.revoked_by = Some(actor.user.clone());
                            x.revoke_reason = Some(reason.clone());
                            x.at(now)
                        })
                        .collect();
                    return Ok(RevokedDelegation {
                        delegations,
                        grants: ended,
                    });
                }
                // Something in the cascade changed at the same moment: read again.
                Err(StoreError::Conflict(_)) if attempt < 3 => {}
                Err(e) => return Err(e.into()),
            }
        }
        unreachable!("the loop returns")
    }

    // ---------------------------------------------------------------- tasks on hosts

    /// Whether `actor` may run `task` on `target` now, and under which delegation (the one
    /// lasting longest). A refusal is audited (`task.run`, denied) and says why.
    pub async fn may_run_task(
        &self,
        actor: &Actor,
        target: &str,
        task: &str,
    ) -> Result<DelegationId> {
        let def = self.load_task(task).await?;
        let t = self.load_target(target).await?;
        self.may_run(actor, &t, &def).await
    }

    async fn may_run(&self, actor: &Actor, t: &Target, def: &TaskDef) -> Result<DelegationId> {
        let now = self.now();
        let refuse = |why: String| {
            self.refuse_delegation(
                actor,
                "task.run",
                subject("task", &def.name),
                why,
                json!({ "target": t.name, "task": def.name }),
            )
        };
        if !def.applies_to(t) {
            return Err(refuse(format!(
                "task {} does not apply to target {}",
                def.name, t.name
            ))
            .await);
        }
        match self.store.user(&actor.user).await? {
            Some(u) if !u.disabled => {}
            _ => return Err(refuse(format!("user {} is disabled or unknown", actor.user)).await),
        }
        let found = self
            .allowing(&actor.user, t, Item::Task(&def.name), now)
            .await?;
        match found.into_iter().max_by_key(|(_, until)| *until) {
            Some((d, _)) => Ok(d.id),
            None => Err(refuse(format!(
                "no live delegation lets {} run task {} on {}",
                actor.user, def.name, t.name
            ))
            .await),
        }
    }

    /// [`Self::may_run_task`] and the command the parameters give ([`TaskDef::render`]): what
    /// the agent would run. Bad parameters are refused naming the parameter; secret values are
    /// never part of an error or an event.
    pub async fn check_task(
        &self,
        actor: &Actor,
        target: &str,
        task: &str,
        params: &BTreeMap<String, String>,
    ) -> Result<TaskCheck> {
        let def = self.load_task(task).await?;
        let t = self.load_target(target).await?;
        let delegation = self.may_run(actor, &t, &def).await?;
        let rendered = def.render(params)?;
        Ok(TaskCheck {
            delegation,
            task: def,
            rendered,
        })
    }

    /// Every task that applies to host `host`, with the live delegations that let people run
    /// it there now (for the agent's signed snapshot).
    pub async fn host_tasks(&self, host: &str) -> Result<Vec<HostTask>> {
        let now = self.now();
        let target = self.load_target(host).await?;
        let live = self
            .store
            .delegations(&DelegationFilter {
                live_at: Some(now),
                ..Default::default()
            })
            .await?;
        let mut out = vec![];
        for task in self.store.tasks().await? {
            if !task.applies_to(&target) {
                continue;
            }
            let mut delegations = vec![];
            for d in &live {
                let item = Item::Task(&task.name);
                let Some(expires_at) = self.chain_deadline(d, &target, item, now).await? else {
                    continue;
                };
                let candidates = match d.delegate.kind {
                    DelegateKind::User => vec![d.delegate.name.clone()],
                    DelegateKind::Group => match self.store.group(&d.delegate.name).await? {
                        Some(g) => g.members,
                        None => vec![],
                    },
                };
                let mut users = vec![];
                for u in candidates {
                    if let Some(user) = self.store.user(&u).await?
                        && !user.disabled
                    {
                        users.push(u);
                    }
                }
                users.sort();
                delegations.push(TaskDelegation {
                    delegation: d.id,
                    delegate: d.delegate.clone(),
                    users,
                    expires_at,
                });
            }
            out.push(HostTask { task, delegations });
        }
        Ok(out)
    }
}
