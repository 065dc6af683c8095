//! Grants: reading, release, revocation, expiry.

use super::*;

impl ControlPlane {
    // ---------------------------------------------------------------- grants

    async fn load_grant(&self, id: Uuid) -> Result<Grant> {
        self.store
            .grant(id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("grant {id}")))
    }

    pub async fn get_grant(&self, actor: &Actor, id: Uuid) -> Result<Grant> {
        let g = self.load_grant(id).await?;
        if g.user != actor.user && !self.holds(actor, AdminAction::ReadAudit) {
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
        if !self.holds(actor, AdminAction::ReadAudit) {
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
        self.require_admin(actor, AdminAction::ManageGrants, "grant.revoke")
            .await?;
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
        let mut cs = Changeset::new().write(Write::EndGrant {
            id: g.id,
            state,
            at: now,
            by: actor.user.clone(),
            reason: reason.clone(),
        });
        let revoke = self.revoke_writes(&g, now).await?;
        let queued = !revoke.is_empty();
        cs.writes.extend(revoke);
        let cs = cs
            .write(Write::DeleteGrantSecret {
                grant_id: g.id,
                must_exist: false,
            })
            .event(
                self.event(actor, action, subject("grant", g.id))
                    .data(json!({
                        "user": g.user, "target": g.target, "role": g.role, "request": g.request_id,
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
        if queued {
            g.provision_state = ProvisionState::RevokePending;
            self.jobs_changed.notify_one();
        }
        self.notify(Notice::GrantEnded(g.clone()));
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
                    Ok(_) => {
                        pass.requests_expired += 1;
                        self.notify(Notice::RequestDecided(req));
                    }
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
        self.require_admin(actor, AdminAction::ReadAudit, "audit.read")
            .await?;
        Ok(self.store.audit_events(&filter).await?)
    }
}
