//! Users, groups and API tokens: creation, admin rights, membership, minting and revocation,
//! with the lock-out rules (the last admin keeps a way in) and, under two-person control,
//! the changes to who approves held as proposals (see `policy_review`).

use super::*;
use crate::policy_review::ApproverChange;

impl ControlPlane {
    pub async fn create_user(
        &self,
        actor: &Actor,
        name: &str,
        display_name: Option<String>,
        email: Option<String>,
        admin: bool,
    ) -> Result<User> {
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
        let email = email.as_deref().map(validate_email).transpose()?;
        if admin && self.policy_approvals > 0 {
            return Err(Error::unprocessable(
                "admin",
                "while changes to who approves need approvals (policy.require_approvals), \
                 create the user first, then make them an administrator (held for approval)",
            ));
        }
        let user = User {
            name: name.to_string(),
            display_name,
            email,
            admin,
            disabled: false,
            created_at: self.now(),
        };
        let cs = Changeset::new()
            .write(Write::InsertUser(user.clone()))
            .event(
                self.event(actor, "user.created", subject("user", name)).data(
                    json!({ "admin": admin, "display_name": user.display_name, "email": user.email }),
                ),
            );
        self.store.commit(cs).await.map_err(|e| match e {
            StoreError::AlreadyExists(_) => Error::AlreadyExists(format!(
                "user {name} (an existing name equal to it without regard to case)"
            )),
            e => e.into(),
        })?;
        Ok(user)
    }

    /// Enables/disables a user, changes admin rights, or sets the mail address (`Some("")`
    /// clears it).
    pub async fn update_user(
        &self,
        actor: &Actor,
        name: &str,
        admin: Option<bool>,
        disabled: Option<bool>,
        email: Option<String>,
    ) -> Result<Held<User>> {
        self.require_admin(actor, AdminAction::ManageUsers, "user.update")
            .await?;
        let email = match email.as_deref().map(str::trim) {
            None => None,
            Some("") => Some(None),
            Some(e) => Some(Some(validate_email(e)?)),
        };
        let mut user = self
            .store
            .user(name)
            .await?
            .ok_or_else(|| Error::NotFound(format!("user {name}")))?;
        if name == actor.user && (admin == Some(false) || disabled == Some(true)) {
            return Err(Error::unprocessable(
                "user",
                "you cannot remove your own admin rights or disable yourself",
            ));
        }
        if admin == Some(true) && self.store.external_account(name).await?.is_some() {
            return Err(Error::unprocessable(
                "admin",
                format!("{name} is an external account and cannot be an administrator"),
            ));
        }
        // An identity provider can disable a SCIM user at any moment; an administrator must
        // not be one whose rights a directory push can change behind pedm's back.
        if admin == Some(true)
            && self
                .store
                .scim_link(name)
                .await?
                .is_some_and(|l| l.deleted_at.is_none())
        {
            return Err(Error::unprocessable(
                "admin",
                format!("{name} is provisioned by SCIM and cannot be an administrator"),
            ));
        }
        if admin == Some(true) && !user.admin && self.policy_approvals > 0 {
            if disabled.is_some() || email.is_some() {
                return Err(Error::unprocessable(
                    "admin",
                    "while changes to who approves need approvals (policy.require_approvals), \
                     make someone an administrator on its own, without other changes",
                ));
            }
            let change = ApproverChange::Admin { user: user.name };
            return Ok(Held::Pending(Box::new(
                self.propose_approver_change(actor, change).await?,
            )));
        }
        let demoted =
            user.admin && !user.disabled && (admin == Some(false) || disabled == Some(true));
        if demoted && !self.another_admin_can_sign_in(name).await? {
            return Err(Error::Conflict(format!(
                "{name} is the last enabled admin with a live token: removing their rights would \
                 leave nobody able to administer pedm"
            )));
        }
        if let Some(a) = admin {
            user.admin = a;
        }
        if let Some(d) = disabled {
            user.disabled = d;
        }
        if let Some(e) = email {
            user.email = e;
        }
        let cs = Changeset::new()
            .write(Write::UpdateUser(user.clone()))
            .event(
            self.event(actor, "user.updated", subject("user", name))
                .data(
                    json!({ "admin": user.admin, "disabled": user.disabled, "email": user.email }),
                ),
        );
        self.commit_identity(cs).await?;
        Ok(Held::Done(user))
    }

    pub async fn list_users(&self, actor: &Actor) -> Result<Vec<User>> {
        self.require_admin(actor, AdminAction::ManageUsers, "user.list")
            .await?;
        Ok(self.store.users().await?)
    }

    pub async fn create_group(
        &self,
        actor: &Actor,
        name: &str,
        description: Option<String>,
    ) -> Result<Group> {
        self.require_admin(actor, AdminAction::ManageUsers, "group.create")
            .await?;
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
            StoreError::AlreadyExists(_) => Error::AlreadyExists(format!(
                "group {name} (an existing name equal to it without regard to case)"
            )),
            e => e.into(),
        })?;
        Ok(group)
    }

    /// Adds `user` to `group`; held for approvals when the group decides approvals and
    /// `policy.require_approvals` is on.
    pub async fn add_group_member(
        &self,
        actor: &Actor,
        group: &str,
        user: &str,
    ) -> Result<Held<Group>> {
        self.set_group_member(actor, group, user, true).await
    }

    /// Removes `user` from `group` (never held: it widens nobody's power).
    pub async fn remove_group_member(
        &self,
        actor: &Actor,
        group: &str,
        user: &str,
    ) -> Result<Group> {
        match self.set_group_member(actor, group, user, false).await? {
            Held::Done(g) => Ok(g),
            Held::Pending(p) => Err(Error::Internal(format!(
                "removing a member was held as proposal {}",
                p.id
            ))),
        }
    }

    async fn set_group_member(
        &self,
        actor: &Actor,
        group: &str,
        user: &str,
        member: bool,
    ) -> Result<Held<Group>> {
        self.require_admin(actor, AdminAction::ManageUsers, "group.update")
            .await?;
        let Some(g) = self.store.group(group).await? else {
            return Err(Error::NotFound(format!("group {group}")));
        };
        let Some(u) = self.store.user(user).await? else {
            return Err(Error::NotFound(format!("user {user}")));
        };
        if member
            && self.policy_approvals > 0
            && !g.members.iter().any(|m| m.eq_ignore_ascii_case(&u.name))
            && self.is_approver_group(&g.name)
        {
            let change = ApproverChange::GroupMember {
                group: g.name,
                user: u.name,
            };
            return Ok(Held::Pending(Box::new(
                self.propose_approver_change(actor, change).await?,
            )));
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
        self.commit_identity(cs).await?;
        self.store
            .group(group)
            .await?
            .map(Held::Done)
            .ok_or_else(|| Error::NotFound(format!("group {group}")))
    }

    pub async fn list_groups(&self, actor: &Actor) -> Result<Vec<Group>> {
        self.require_admin(actor, AdminAction::ManageUsers, "group.list")
            .await?;
        Ok(self.store.groups().await?)
    }

    /// Mints a token for `user` (default: the actor). Only admins mint for others. An AI
    /// agent mints nothing.
    pub async fn create_token(
        &self,
        actor: &Actor,
        user: Option<&str>,
        description: Option<String>,
        lifetime: TokenLifetime,
    ) -> Result<(TokenRecord, String)> {
        self.mint_token(actor, user, description, lifetime, false)
            .await
    }

    /// Mints a token for an AI agent acting for `user` (default: the actor; see
    /// `Actor::via_agent`), under the rules of [`Self::create_token`]; it must expire.
    pub async fn create_agent_token(
        &self,
        actor: &Actor,
        user: Option<&str>,
        description: Option<String>,
        lifetime: TokenLifetime,
    ) -> Result<(TokenRecord, String)> {
        self.mint_token(actor, user, description, lifetime, true)
            .await
    }

    async fn mint_token(
        &self,
        actor: &Actor,
        user: Option<&str>,
        description: Option<String>,
        lifetime: TokenLifetime,
        agent: bool,
    ) -> Result<(TokenRecord, String)> {
        if actor.via_agent {
            return Err(self
                .refuse(
                    actor,
                    "token.create",
                    None,
                    format!("token.create: {}", super::AGENT_HOLDS_NO_RIGHTS),
                )
                .await);
        }
        if agent && matches!(lifetime, TokenLifetime::Never) {
            return Err(Error::unprocessable(
                "expires_in",
                "an AI agent's token must expire: give a lifetime such as 8h",
            ));
        }
        let user = user.unwrap_or(&actor.user);
        if user != actor.user {
            self.require_admin(actor, AdminAction::ManageUsers, "token.create")
                .await?;
        }
        let Some(holder) = self.store.user(user).await? else {
            return Err(Error::NotFound(format!("user {user}")));
        };
        // A token is the holder's voice: minted for an admin or approver by someone else, it
        // would let one person approve as two.
        if holder.name != actor.user
            && self.policy_approvals > 0
            && self.decides_approvals(&holder).await?
        {
            let why = format!(
                "{} decides approvals; while changes need approvals \
                 (policy.require_approvals), only they can mint their own tokens",
                holder.name
            );
            return Err(self
                .refuse(actor, "token.create", subject("user", &holder.name), why)
                .await);
        }
        let now = self.now();
        let ttl_secs = match lifetime {
            TokenLifetime::Default => Some(self.limits.default_token_lifetime_secs),
            TokenLifetime::Never => None,
            TokenLifetime::Secs(s) => Some(s),
        };
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
            workload: None,
            agent,
        };
        let cs = Changeset::new()
            .write(Write::InsertToken(rec.clone()))
            .event(
                self.event(actor, "token.created", subject("token", &rec.id))
                    .data(json!({ "user": user, "expires_at": expires_at, "agent": agent })),
            );
        self.store.commit(cs).await?;
        Ok((rec, minted.token))
    }

    pub async fn list_tokens(&self, actor: &Actor, user: Option<&str>) -> Result<Vec<TokenRecord>> {
        match user {
            Some(u) if u == actor.user => Ok(self.store.tokens(Some(u)).await?),
            Some(u) => {
                self.require_admin(actor, AdminAction::ManageUsers, "token.list")
                    .await?;
                Ok(self.store.tokens(Some(u)).await?)
            }
            None if self.holds(actor, AdminAction::ManageUsers) => {
                Ok(self.store.tokens(None).await?)
            }
            None => Ok(self.store.tokens(Some(&actor.user)).await?),
        }
    }

    /// Whether an enabled admin other than `except` holds a live token.
    async fn another_admin_can_sign_in(&self, except: &str) -> Result<bool> {
        let now = self.now();
        let admins: std::collections::HashSet<String> = self
            .store
            .users()
            .await?
            .into_iter()
            .filter(|u| u.admin && !u.disabled && u.name != except)
            .map(|u| u.name)
            .collect();
        Ok(self
            .store
            .tokens(None)
            .await?
            .iter()
            .any(|t| t.is_live(now) && !t.agent && admins.contains(&t.user)))
    }

    /// Whether `rec` is the only live token left to any enabled admin.
    /// (An AI agent's token administers nothing, so it never counts.)
    async fn last_admin_token(&self, rec: &TokenRecord, now: Timestamp) -> Result<bool> {
        if !rec.is_live(now) || rec.agent {
            return Ok(false);
        }
        let admins: std::collections::HashSet<String> = self
            .store
            .users()
            .await?
            .into_iter()
            .filter(|u| u.admin && !u.disabled)
            .map(|u| u.name)
            .collect();
        if !admins.contains(&rec.user) {
            return Ok(false);
        }
        let others = self
            .store
            .tokens(None)
            .await?
            .into_iter()
            .filter(|t| t.id != rec.id && t.is_live(now) && !t.agent && admins.contains(&t.user))
            .count();
        Ok(others == 0)
    }

    pub async fn revoke_token(&self, actor: &Actor, id: &str) -> Result<TokenRecord> {
        let rec = self
            .store
            .token(id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("token {id}")))?;
        if rec.user != actor.user && !self.holds(actor, AdminAction::ManageUsers) {
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
        if self.last_admin_token(&rec, now).await? {
            let why = format!(
                "token {id} is the last live token of an enabled admin: revoking it would leave \
                 nobody able to administer pedm; create another admin token first"
            );
            let ev = self
                .event(actor, "token.revoke", subject("token", id))
                .outcome(Outcome::Denied)
                .data(json!({ "reason": why }));
            self.store.commit(Changeset::new().event(ev)).await?;
            return Err(Error::Conflict(why));
        }
        let cs = Changeset::new()
            .write(Write::RevokeToken {
                id: id.to_string(),
                at: now,
            })
            .event(
                self.event(actor, "token.revoked", subject("token", id))
                    .data(json!({ "user": rec.user })),
            );
        self.commit_identity(cs).await.map_err(|e| match e {
            StoreError::Conflict(_) => Error::Conflict(format!("token {id} is already revoked")),
            e => e.into(),
        })?;
        Ok(TokenRecord {
            revoked_at: Some(now),
            ..rec
        })
    }
}
