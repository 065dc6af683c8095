//! SCIM provisioning (see [`crate::scim`]): the clients' tokens, and the users and groups an
//! identity provider pushes. Every change a client makes is recorded with the actor
//! `scim:<client>`; deprovisioning (`active: false`, DELETE) disables the user, revokes their
//! tokens and SSO sessions and ends their live grants in one changeset.

use super::*;
use crate::scim::{
    MemberChange, ScimClient, ScimError, ScimGroupLink, ScimGroupView, ScimLink, ScimToken,
    ScimUserView, ScimWrite, UserChange,
};
use crate::sso::SsoWrite;

type SResult<T> = std::result::Result<T, ScimError>;

/// Free text from the identity provider: trimmed, bounded, no control characters.
fn idp_text(field: &str, v: Option<String>, max: usize) -> SResult<Option<String>> {
    trimmed(field, v, max).map_err(|e| ScimError::InvalidValue(e.to_string()))
}

fn idp_name(kind: &str, name: &str) -> SResult<()> {
    validate_name(kind, name).map_err(|e| ScimError::InvalidValue(e.to_string()))?;
    if name == SYSTEM_ACTOR || name == POLICY_ACTOR || name == "anonymous" {
        return Err(ScimError::InvalidValue(format!("{name:?} is reserved")));
    }
    Ok(())
}

impl ControlPlane {
    // ------------------------------------------------------------ tokens (admins)

    /// Mints a SCIM client's token (needs `manage_users`). Returns the record and the token,
    /// shown once.
    pub async fn create_scim_token(
        &self,
        actor: &Actor,
        name: &str,
    ) -> Result<(ScimToken, String)> {
        self.require_admin(actor, AdminAction::ManageUsers, "scim.token_create")
            .await?;
        validate_name("SCIM client", name)?;
        let minted = crate::scim::mint_token();
        let rec = ScimToken {
            id: minted.id.clone(),
            name: name.to_string(),
            secret_hash: minted.secret_hash,
            created_at: self.now(),
            created_by: actor.user.clone(),
            revoked_at: None,
        };
        let cs = Changeset::new()
            .write(Write::Scim(ScimWrite::InsertToken(rec.clone())))
            .event(
                self.event(actor, "scim.token_created", subject("scim_token", &rec.id))
                    .data(json!({ "client": name })),
            );
        self.store.commit(cs).await?;
        Ok((rec, minted.token))
    }

    /// Every SCIM token (needs `manage_users`).
    pub async fn list_scim_tokens(&self, actor: &Actor) -> Result<Vec<ScimToken>> {
        self.require_admin(actor, AdminAction::ManageUsers, "scim.token_list")
            .await?;
        Ok(self.store.scim_tokens().await?)
    }

    /// Revokes a SCIM token (needs `manage_users`): the client is refused from the next call.
    pub async fn revoke_scim_token(&self, actor: &Actor, id: &str) -> Result<ScimToken> {
        self.require_admin(actor, AdminAction::ManageUsers, "scim.token_revoke")
            .await?;
        let Some(rec) = self.store.scim_token(id).await? else {
            return Err(Error::NotFound(format!("SCIM token {id}")));
        };
        let now = self.now();
        let cs = Changeset::new()
            .write(Write::Scim(ScimWrite::RevokeToken {
                id: id.to_string(),
                at: now,
            }))
            .event(
                self.event(actor, "scim.token_revoked", subject("scim_token", id))
                    .data(json!({ "client": rec.name })),
            );
        self.store.commit(cs).await?;
        Ok(ScimToken {
            revoked_at: Some(now),
            ..rec
        })
    }

    /// Resolves a SCIM bearer token to its client. Failures are recorded like the API's
    /// (`auth.failed`, kind `scim`), never with the secret.
    pub async fn scim_authenticate(
        &self,
        presented: &str,
        source: Option<&str>,
    ) -> SResult<ScimClient> {
        let now = self.now();
        let parsed = crate::scim::parse_token(presented);
        let record = match parsed {
            Some((id, _)) => self.store.scim_token(id).await.map_err(Error::from)?,
            None => None,
        };
        let why = match (parsed, &record) {
            (None, _) => Some("malformed SCIM token"),
            (Some(_), None) => Some("unknown SCIM token"),
            (Some((_, secret)), Some(r)) if !token::verify(secret, &r.secret_hash) => {
                Some("wrong secret")
            }
            (Some(_), Some(r)) if r.revoked_at.is_some() => Some("revoked SCIM token"),
            _ => None,
        };
        match (why, record) {
            (None, Some(r)) => Ok(ScimClient {
                token_id: r.id,
                name: r.name,
            }),
            (why, _) => {
                let why = why.unwrap_or("unknown SCIM token");
                let ev = NewAuditEvent::new(
                    now,
                    "anonymous",
                    "auth.failed",
                    parsed.and_then(|(id, _)| subject("scim_token", id)),
                )
                .outcome(Outcome::Denied)
                .data(json!({ "reason": why, "source": source, "kind": "scim" }));
                self.record_auth_failure(ev, source, why, "scim").await?;
                Err(ScimError::Unauthenticated)
            }
        }
    }

    // ------------------------------------------------------------ users

    async fn scim_view(&self, link: ScimLink) -> SResult<ScimUserView> {
        let user = self
            .store
            .user(&link.user)
            .await
            .map_err(Error::from)?
            .ok_or_else(|| ScimError::NotFound(format!("User {}", link.user)))?;
        let groups = self
            .store
            .groups_of(&user.name)
            .await
            .map_err(Error::from)?;
        Ok(ScimUserView { user, link, groups })
    }

    /// The link of a user this client manages (not deleted), found without regard to case.
    async fn scim_own_link(&self, client: &ScimClient, id: &str) -> SResult<ScimLink> {
        let links = self.store.scim_links().await.map_err(Error::from)?;
        links
            .into_iter()
            .find(|l| {
                l.user.eq_ignore_ascii_case(id) && l.client == client.name && l.deleted_at.is_none()
            })
            .ok_or_else(|| ScimError::NotFound(format!("User {id}")))
    }

    /// The users this client manages (deleted ones left out), by name.
    pub async fn scim_users(&self, client: &ScimClient) -> SResult<Vec<ScimUserView>> {
        let mut out = vec![];
        for l in self.store.scim_links().await.map_err(Error::from)? {
            if l.client == client.name && l.deleted_at.is_none() {
                out.push(self.scim_view(l).await?);
            }
        }
        Ok(out)
    }

    pub async fn scim_user(&self, client: &ScimClient, id: &str) -> SResult<ScimUserView> {
        let l = self.scim_own_link(client, id).await?;
        self.scim_view(l).await
    }

    /// Creates a user (never an admin) managed by `client`, or adopts an existing plain user
    /// of that name that no other client manages. `active: false` creates it disabled.
    pub async fn scim_create_user(
        &self,
        client: &ScimClient,
        user_name: &str,
        change: UserChange,
    ) -> SResult<ScimUserView> {
        let actor = client.actor();
        idp_name("userName", user_name)?;
        let display_name = idp_text("displayName", change.display_name.flatten(), 200)?;
        let external_id = idp_text("externalId", change.external_id.flatten(), 200)?;
        let active = change.active.unwrap_or(true);
        let existing = self
            .store
            .users()
            .await
            .map_err(Error::from)?
            .into_iter()
            .find(|u| u.name.eq_ignore_ascii_case(user_name));
        let now = self.now();
        let link = |name: &str| ScimLink {
            user: name.to_string(),
            client: client.name.clone(),
            external_id: external_id.clone(),
            deleted_at: None,
        };
        let Some(mut user) = existing else {
            let user = User {
                name: user_name.to_string(),
                display_name,
                email: None,
                admin: false,
                disabled: !active,
                created_at: now,
            };
            let cs = Changeset::new()
                .write(Write::InsertUser(user.clone()))
                .write(Write::Scim(ScimWrite::Link(link(user_name))))
                .event(
                    self.event(&actor, "user.created", subject("user", user_name))
                        .data(json!({
                            "admin": false, "display_name": user.display_name,
                            "disabled": user.disabled, "scim": client.name,
                        })),
                );
            self.commit_identity(cs).await.map_err(|e| match e {
                StoreError::AlreadyExists(_) => {
                    ScimError::Uniqueness(format!("userName {user_name} is taken"))
                }
                e => Error::from(e).into(),
            })?;
            return self.scim_view(link(user_name)).await;
        };
        if user.admin {
            return Err(ScimError::Uniqueness(format!(
                "userName {user_name} is taken by an administrator, whom SCIM never manages"
            )));
        }
        if self
            .store
            .external_account(&user.name)
            .await
            .map_err(Error::from)?
            .is_some()
        {
            return Err(ScimError::Uniqueness(format!(
                "userName {user_name} is taken by an external account"
            )));
        }
        if let Some(l) = self
            .store
            .scim_link(&user.name)
            .await
            .map_err(Error::from)?
            && l.deleted_at.is_none()
        {
            return Err(ScimError::Uniqueness(format!(
                "userName {user_name} is already provisioned{}",
                if l.client == client.name {
                    String::new()
                } else {
                    " by another SCIM client".to_string()
                }
            )));
        }
        // Adopt: the user becomes this client's; its state follows the provider.
        let was_disabled = user.disabled;
        if display_name.is_some() {
            user.display_name = display_name;
        }
        // One changeset: the link, and the provider's state (enabled) when it says active.
        let mut cs = Changeset::new()
            .write(Write::Scim(ScimWrite::Link(link(&user.name))))
            .event(
                self.event(&actor, "user.scim_adopted", subject("user", &user.name))
                    .data(json!({ "scim": client.name })),
            );
        let l = link(&user.name);
        if active {
            user.disabled = false;
            cs = cs.write(Write::UpdateUser(user.clone())).event(
                self.event(&actor, "user.updated", subject("user", &user.name))
                    .data(json!({
                        "admin": false, "disabled": false, "scim": client.name,
                        "reactivated": was_disabled,
                    })),
            );
        }
        self.commit_identity(cs).await.map_err(Error::from)?;
        if !active {
            self.scim_deprovision(client, &user, l.clone(), false)
                .await?;
        }
        self.scim_view(l).await
    }

    /// Applies a change the provider made (PUT or PATCH): display name, external id, and
    /// `active` (false deprovisions, true reactivates).
    pub async fn scim_update_user(
        &self,
        client: &ScimClient,
        id: &str,
        user_name: Option<&str>,
        change: UserChange,
    ) -> SResult<ScimUserView> {
        let actor = client.actor();
        let mut link = self.scim_own_link(client, id).await?;
        if let Some(n) = user_name
            && !n.eq_ignore_ascii_case(&link.user)
        {
            idp_name("userName", n)?;
            return Err(ScimError::Mutability(format!(
                "userName {} cannot change (pedm does not rename users)",
                link.user
            )));
        }
        let mut user = self
            .store
            .user(&link.user)
            .await
            .map_err(Error::from)?
            .ok_or_else(|| ScimError::NotFound(format!("User {id}")))?;
        let mut writes = vec![];
        if let Some(d) = change.display_name {
            let d = idp_text("displayName", d, 200)?;
            if d != user.display_name {
                user.display_name = d;
                writes.push(Write::UpdateUser(user.clone()));
            }
        }
        if let Some(x) = change.external_id {
            let x = idp_text("externalId", x, 200)?;
            if x != link.external_id {
                link.external_id = x;
                writes.push(Write::Scim(ScimWrite::Link(link.clone())));
            }
        }
        let reactivate = change.active == Some(true) && user.disabled;
        if reactivate {
            user.disabled = false;
            writes.retain(|w| !matches!(w, Write::UpdateUser(_)));
            writes.push(Write::UpdateUser(user.clone()));
        }
        if !writes.is_empty() {
            let mut cs = Changeset::new();
            cs.writes = writes;
            let cs = cs.event(
                self.event(&actor, "user.updated", subject("user", &user.name))
                    .data(json!({
                        "admin": user.admin, "disabled": user.disabled,
                        "display_name": user.display_name, "scim": client.name,
                        "reactivated": reactivate,
                    })),
            );
            self.commit_identity(cs).await.map_err(Error::from)?;
        }
        if change.active == Some(false) && !user.disabled {
            self.scim_deprovision(client, &user, link.clone(), false)
                .await?;
        }
        self.scim_view(link).await
    }

    /// DELETE: deprovisions the user and forgets it for the client (it is no longer listed;
    /// a later create of the same name adopts it again). pedm keeps the user for the audit.
    pub async fn scim_delete_user(&self, client: &ScimClient, id: &str) -> SResult<()> {
        let link = self.scim_own_link(client, id).await?;
        let user = self
            .store
            .user(&link.user)
            .await
            .map_err(Error::from)?
            .ok_or_else(|| ScimError::NotFound(format!("User {id}")))?;
        self.scim_deprovision(client, &user, link, true).await
    }

    /// Disables `user`, revokes every live token (SSO sessions included) and ends every live
    /// grant (the same writes as `grant revoke`, so provisioned privileges are taken back and
    /// agents end the host sessions), in one changeset with `user.deprovisioned`.
    async fn scim_deprovision(
        &self,
        client: &ScimClient,
        user: &User,
        mut link: ScimLink,
        delete: bool,
    ) -> SResult<()> {
        let actor = client.actor();
        for attempt in 0.. {
            let now = self.now();
            if delete {
                link.deleted_at = Some(now);
            }
            let mut u = self
                .store
                .user(&user.name)
                .await
                .map_err(Error::from)?
                .ok_or_else(|| ScimError::NotFound(format!("User {}", user.name)))?;
            u.disabled = true;
            let mut cs = Changeset::new()
                .write(Write::UpdateUser(u))
                .write(Write::Scim(ScimWrite::Link(link.clone())));
            let mut tokens = vec![];
            for t in self
                .store
                .tokens(Some(&user.name))
                .await
                .map_err(Error::from)?
            {
                if t.revoked_at.is_none() {
                    cs = cs.write(Write::RevokeToken {
                        id: t.id.clone(),
                        at: now,
                    });
                    tokens.push(t.id);
                }
            }
            let sessions = self
                .store
                .sso_session_ids(Some(&user.name))
                .await
                .map_err(Error::from)?;
            for s in &sessions {
                cs = cs.write(Write::Sso(SsoWrite::DeleteSession {
                    token_id: s.clone(),
                }));
            }
            let live = self
                .store
                .grants(&GrantFilter {
                    user: Some(user.name.clone()),
                    state: Some(GrantState::Active),
                    ..Default::default()
                })
                .await
                .map_err(Error::from)?;
            let reason = format!("deprovisioned by SCIM client {}", client.name);
            let mut ended = vec![];
            for g in live {
                if now >= g.expires_at
                    || cs
                        .writes
                        .iter()
                        .any(|w| matches!(w, Write::EndGrant { id, .. } if *id == g.id))
                {
                    continue;
                }
                ended.extend(
                    self.end_grant_writes(
                        &actor,
                        &g,
                        GrantState::Revoked,
                        Some(reason.clone()),
                        now,
                        &mut cs,
                    )
                    .await?,
                );
            }
            let grant_ids: Vec<Uuid> = ended
                .iter()
                .filter(|g| g.user == user.name)
                .map(|g| g.id)
                .collect();
            let cs = cs.event(
                self.event(&actor, "user.deprovisioned", subject("user", &user.name))
                    .data(json!({
                        "scim": client.name, "deleted": delete, "tokens_revoked": tokens,
                        "sso_sessions_ended": sessions, "grants_revoked": grant_ids,
                    })),
            );
            match self.commit_identity(cs).await {
                Ok(_) => {
                    if ended
                        .iter()
                        .any(|e| e.provision_state == ProvisionState::RevokePending)
                    {
                        self.jobs_changed.notify_one();
                    }
                    return Ok(());
                }
                // A grant or token ended at the same moment: read again.
                Err(StoreError::Conflict(_)) if attempt < 3 => continue,
                Err(e) => return Err(Error::from(e).into()),
            }
        }
        unreachable!("the loop returns")
    }

    // ------------------------------------------------------------ groups

    async fn scim_group_view(&self, link: ScimGroupLink) -> SResult<ScimGroupView> {
        let group = self
            .store
            .group(&link.group)
            .await
            .map_err(Error::from)?
            .ok_or_else(|| ScimError::NotFound(format!("Group {}", link.group)))?;
        Ok(ScimGroupView { group, link })
    }

    async fn scim_own_group(&self, client: &ScimClient, id: &str) -> SResult<ScimGroupLink> {
        self.store
            .scim_group_links()
            .await
            .map_err(Error::from)?
            .into_iter()
            .find(|l| l.group.eq_ignore_ascii_case(id) && l.client == client.name)
            .ok_or_else(|| ScimError::NotFound(format!("Group {id}")))
    }

    /// The groups this client manages, by name.
    pub async fn scim_groups(&self, client: &ScimClient) -> SResult<Vec<ScimGroupView>> {
        let mut out = vec![];
        for l in self.store.scim_group_links().await.map_err(Error::from)? {
            if l.client == client.name {
                out.push(self.scim_group_view(l).await?);
            }
        }
        Ok(out)
    }

    pub async fn scim_group(&self, client: &ScimClient, id: &str) -> SResult<ScimGroupView> {
        let l = self.scim_own_group(client, id).await?;
        self.scim_group_view(l).await
    }

    /// The pedm names of members given by id: each must be a user this client manages.
    async fn scim_members(&self, client: &ScimClient, ids: &[String]) -> SResult<Vec<String>> {
        let links = self.store.scim_links().await.map_err(Error::from)?;
        let mut out: Vec<String> = vec![];
        for id in ids {
            let Some(l) = links.iter().find(|l| {
                l.user.eq_ignore_ascii_case(id) && l.client == client.name && l.deleted_at.is_none()
            }) else {
                return Err(ScimError::InvalidValue(format!(
                    "member {id:?} is not a user provisioned by this client"
                )));
            };
            if !out.contains(&l.user) {
                out.push(l.user.clone());
            }
        }
        Ok(out)
    }

    /// Creates a group managed by `client` with its members. Refused if the name is taken
    /// (a group pedm's admins made is never taken over).
    pub async fn scim_create_group(
        &self,
        client: &ScimClient,
        display_name: &str,
        external_id: Option<String>,
        members: &[String],
    ) -> SResult<ScimGroupView> {
        let actor = client.actor();
        idp_name("displayName", display_name)?;
        let external_id = idp_text("externalId", external_id, 200)?;
        let members = self.scim_members(client, members).await?;
        self.scim_guard_approvers(client, display_name, &members)
            .await?;
        if self
            .store
            .groups()
            .await
            .map_err(Error::from)?
            .iter()
            .any(|g| g.name.eq_ignore_ascii_case(display_name))
        {
            return Err(ScimError::Uniqueness(format!(
                "group {display_name} exists"
            )));
        }
        let group = Group {
            name: display_name.to_string(),
            description: Some(format!("provisioned by SCIM client {}", client.name)),
            members: vec![],
            created_at: self.now(),
        };
        let link = ScimGroupLink {
            group: display_name.to_string(),
            client: client.name.clone(),
            external_id,
        };
        let mut cs = Changeset::new()
            .write(Write::InsertGroup(group))
            .write(Write::Scim(ScimWrite::LinkGroup(link.clone())))
            .event(
                self.event(&actor, "group.created", subject("group", display_name))
                    .data(json!({ "scim": client.name })),
            );
        for m in &members {
            cs = cs
                .write(Write::AddGroupMember {
                    group: display_name.to_string(),
                    user: m.clone(),
                })
                .event(
                    self.event(&actor, "group.member_added", subject("group", display_name))
                        .data(json!({ "user": m, "scim": client.name })),
                );
        }
        self.commit_identity(cs).await.map_err(|e| match e {
            StoreError::AlreadyExists(_) => {
                ScimError::Uniqueness(format!("group {display_name} exists"))
            }
            e => Error::from(e).into(),
        })?;
        self.scim_group_view(link).await
    }

    /// Refuses (403, audited) adding members to a group that decides approvals while
    /// two-person control is on: one admin's SCIM token must not do what that admin alone
    /// cannot (`policy.require_approvals`). Removals always go through.
    async fn scim_guard_approvers(
        &self,
        client: &ScimClient,
        group: &str,
        added: &[String],
    ) -> SResult<()> {
        if added.is_empty() || self.policy_approvals == 0 || !self.is_approver_group(group) {
            return Ok(());
        }
        let why = format!(
            "{group} decides approvals and policy.require_approvals is on: its members are \
             added in pedm (pedm group add-member, held for approval), not by SCIM"
        );
        Err(self
            .refuse(
                &client.actor(),
                "group.update",
                subject("group", group),
                why,
            )
            .await
            .into())
    }

    /// Changes a managed group's membership (and external id). Additions to a group that
    /// decides approvals are refused under two-person control ([`Self::scim_guard_approvers`]).
    pub async fn scim_update_group(
        &self,
        client: &ScimClient,
        id: &str,
        display_name: Option<&str>,
        external_id: Option<Option<String>>,
        change: MemberChange,
    ) -> SResult<ScimGroupView> {
        let actor = client.actor();
        let mut link = self.scim_own_group(client, id).await?;
        if let Some(n) = display_name
            && !n.eq_ignore_ascii_case(&link.group)
        {
            idp_name("displayName", n)?;
            return Err(ScimError::Mutability(format!(
                "displayName {} cannot change (pedm does not rename groups)",
                link.group
            )));
        }
        let group = self
            .store
            .group(&link.group)
            .await
            .map_err(Error::from)?
            .ok_or_else(|| ScimError::NotFound(format!("Group {id}")))?;
        let current: Vec<String> = group.members.clone();
        let has = |set: &[String], m: &str| set.iter().any(|x| x.eq_ignore_ascii_case(m));
        let target: Vec<String> = match &change {
            MemberChange::Replace(ids) => self.scim_members(client, ids).await?,
            MemberChange::Edit { add, remove } => {
                let add = self.scim_members(client, add).await?;
                let mut t: Vec<String> = current
                    .iter()
                    .filter(|m| !remove.iter().any(|r| r.eq_ignore_ascii_case(m)))
                    .cloned()
                    .collect();
                for a in add {
                    if !has(&t, &a) {
                        t.push(a);
                    }
                }
                t
            }
        };
        let added: Vec<String> = target
            .iter()
            .filter(|m| !has(&current, m))
            .cloned()
            .collect();
        self.scim_guard_approvers(client, &link.group, &added)
            .await?;
        let mut cs = Changeset::new();
        if let Some(x) = external_id {
            let x = idp_text("externalId", x, 200)?;
            if x != link.external_id {
                link.external_id = x;
                cs = cs.write(Write::Scim(ScimWrite::LinkGroup(link.clone())));
            }
        }
        for m in current.iter().filter(|m| !has(&target, m)) {
            cs = cs
                .write(Write::RemoveGroupMember {
                    group: link.group.clone(),
                    user: m.clone(),
                })
                .event(
                    self.event(
                        &actor,
                        "group.member_removed",
                        subject("group", &link.group),
                    )
                    .data(json!({ "user": m, "scim": client.name })),
                );
        }
        for m in &added {
            cs = cs
                .write(Write::AddGroupMember {
                    group: link.group.clone(),
                    user: m.clone(),
                })
                .event(
                    self.event(&actor, "group.member_added", subject("group", &link.group))
                        .data(json!({ "user": m, "scim": client.name })),
                );
        }
        if !cs.writes.is_empty() {
            if cs.events.is_empty() {
                cs = cs.event(
                    self.event(&actor, "group.updated", subject("group", &link.group))
                        .data(json!({ "external_id": link.external_id, "scim": client.name })),
                );
            }
            self.commit_identity(cs).await.map_err(|e| match e {
                StoreError::NotFound(m) => ScimError::NotFound(m),
                e => Error::from(e).into(),
            })?;
        }
        self.scim_group_view(link).await
    }

    /// DELETE of a group: every member removed and the group released from the client.
    /// pedm keeps the (empty) group: policies may name it.
    pub async fn scim_delete_group(&self, client: &ScimClient, id: &str) -> SResult<()> {
        let actor = client.actor();
        let link = self.scim_own_group(client, id).await?;
        let view = self.scim_group_view(link.clone()).await?;
        let mut cs = Changeset::new();
        for m in &view.group.members {
            cs = cs.write(Write::RemoveGroupMember {
                group: link.group.clone(),
                user: m.clone(),
            });
        }
        let cs = cs
            .write(Write::Scim(ScimWrite::UnlinkGroup {
                group: link.group.clone(),
            }))
            .event(
                self.event(&actor, "group.scim_deleted", subject("group", &link.group))
                    .data(json!({
                        "scim": client.name, "members_removed": view.group.members,
                    })),
            );
        self.commit_identity(cs).await.map_err(Error::from)?;
        Ok(())
    }
}
