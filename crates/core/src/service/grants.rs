//! Grants: reading, release, revocation, expiry.

use super::*;

/// Grants being ended at once by one expiry pass.
const EXPIRE_CONCURRENCY: usize = 256;

impl ControlPlane {
    // ---------------------------------------------------------------- grants

    pub(super) async fn load_grant(&self, id: Uuid) -> Result<Grant> {
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
        Ok(g.as_of(self.now()))
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
        // Present grants as they stand now (see `Grant::as_of`): an active grant past its
        // expiry is listed as expired, not active, even before the scheduler ends it. For
        // `expired`, the overdue active ones are read first, so one that the scheduler ends
        // between the two reads is seen (twice, then deduplicated) rather than missed.
        let now = self.now();
        let mut out: Vec<Grant> = vec![];
        if filter.state == Some(GrantState::Expired) {
            let overdue = self
                .store
                .grants(&GrantFilter {
                    state: Some(GrantState::Active),
                    ..filter.clone()
                })
                .await?;
            out.extend(
                overdue
                    .into_iter()
                    .map(|g| g.as_of(now))
                    .filter(|g| g.state == GrantState::Expired),
            );
        }
        let seen: std::collections::HashSet<Uuid> = out.iter().map(|g| g.id).collect();
        out.extend(
            self.store
                .grants(&filter)
                .await?
                .into_iter()
                .filter(|g| !seen.contains(&g.id))
                .map(|g| g.as_of(now))
                .filter(|g| filter.state.is_none_or(|s| g.state == s)),
        );
        if let Some(l) = filter.limit {
            out.truncate(l as usize);
        }
        Ok(out)
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

    pub(super) async fn end_grant(
        &self,
        actor: &Actor,
        mut g: Grant,
        state: GrantState,
        reason: Option<String>,
    ) -> Result<Grant> {
        // Grants handed on from this one (peer delegation) end in the same changeset. If one
        // of them ends at the same moment the changeset is refused: read again and retry.
        for attempt in 0.. {
            if !matches!(g.state, GrantState::Active | GrantState::Scheduled) {
                return Err(Error::Conflict(format!(
                    "grant {} has already ended ({})",
                    g.id, g.state
                )));
            }
            let now = self.now();
            if state != GrantState::Expired && now >= g.expires_at {
                // Past its expiry: it ends as expired (the scheduler records it), not as
                // released or revoked after the fact.
                self.deadline_changed.notify_one();
                return Err(Error::Conflict(format!(
                    "grant {} has already ended (expired at {})",
                    g.id, g.expires_at
                )));
            }
            let mut cs = Changeset::new();
            let ended = self
                .end_grant_writes(actor, &g, state, reason.clone(), now, &mut cs)
                .await?;
            match self.commit(cs).await {
                Ok(_) => {
                    if ended
                        .iter()
                        .any(|e| e.provision_state == ProvisionState::RevokePending)
                    {
                        self.jobs_changed.notify_one();
                    }
                    return ended
                        .into_iter()
                        .next()
                        .ok_or_else(|| Error::Internal("no grant ended".into()));
                }
                // A grant handed on, or one sharing the privilege, ended at the same moment.
                Err(StoreError::Conflict(_)) if attempt < 3 => {
                    g = self.load_grant(g.id).await?;
                }
                Err(StoreError::Conflict(_)) => {
                    return Err(Error::Conflict(format!("grant {} has already ended", g.id)));
                }
                Err(e) => return Err(e.into()),
            }
        }
        unreachable!("the loop returns")
    }

    /// Adds to `cs` what ending `g` takes (the end, its revoke job, deleting its secret, its
    /// event) and the same for every active grant handed on from it, at any depth (they end
    /// as `revoked`, or `expired` when it expires). Returns the grants as they will be once
    /// `cs` commits, `g` first.
    pub(super) async fn end_grant_writes(
        &self,
        actor: &Actor,
        g: &Grant,
        state: GrantState,
        reason: Option<String>,
        now: Timestamp,
        cs: &mut Changeset,
    ) -> Result<Vec<Grant>> {
        let action = |state: GrantState| match state {
            GrantState::Released => Ok("grant.released"),
            GrantState::Revoked => Ok("grant.revoked"),
            GrantState::Expired => Ok("grant.expired"),
            GrantState::Active | GrantState::Scheduled => {
                Err(Error::Internal(format!("cannot end a grant as {state}")))
            }
        };
        let child_state = match state {
            GrantState::Expired => GrantState::Expired,
            _ => GrantState::Revoked,
        };
        let mut out = vec![];
        let mut queue = vec![(g.clone(), state, reason, None::<Uuid>)];
        while let Some((mut g, state, reason, parent)) = queue.pop() {
            let action = action(state)?;
            let ending: Vec<Uuid> = cs
                .writes
                .iter()
                .filter_map(|w| match w {
                    Write::EndGrant { id, .. } => Some(*id),
                    _ => None,
                })
                .collect();
            let plan = self.revoke_plan(&g, now, &ending).await?;
            if let Some(p) = plan.precondition {
                cs.writes.push(p);
            }
            cs.writes.push(Write::EndGrant {
                id: g.id,
                state,
                at: now,
                by: actor.user.clone(),
                reason: reason.clone(),
            });
            cs.writes.extend(plan.writes);
            cs.writes.push(Write::DeleteGrantSecret {
                grant_id: g.id,
                must_exist: false,
            });
            let mut data = json!({
                "user": g.user, "target": g.target, "role": g.role, "request": g.request_id,
                "expires_at": g.expires_at, "reason": reason,
            });
            if let Some(p) = parent {
                data["parent_grant"] = json!(p);
            }
            if !plan.kept_for.is_empty() {
                data["privilege_kept_for"] = json!(plan.kept_for);
            }
            cs.events
                .push(self.event(actor, action, subject("grant", g.id)).data(data));
            for child in self.handed_on_grants(g.id).await? {
                if out.len() + queue.len() < 10_000 {
                    let why = format!("grant {} it was handed on from ended ({state})", g.id);
                    queue.push((child, child_state, Some(why), Some(g.id)));
                }
            }
            g.state = state;
            g.ended_at = Some(now);
            g.ended_by = Some(actor.user.clone());
            g.end_reason = reason;
            if let Some(p) = plan.state {
                g.provision_state = p;
            }
            cs.notices.push(Notice::GrantEnded(g.clone()));
            out.push(g);
        }
        Ok(out)
    }

    // ---------------------------------------------------------------- expiry

    /// The earliest moment something must be ended: a grant expiring or a request going stale.
    pub async fn next_deadline(&self) -> Result<Option<Timestamp>> {
        let g = self.store.next_grant_deadline().await?;
        let r = self.store.next_request_deadline().await?;
        let x = self.next_external_deadline().await?;
        Ok([g, r, x].into_iter().flatten().min())
    }

    /// Ends every grant and pending request whose deadline has passed. Each ends exactly once:
    /// the store refuses to end what another pass (or instance) already ended.
    ///
    /// Overdue grants are read a page at a time and ended concurrently (up to
    /// [`EXPIRE_CONCURRENCY`] changesets in flight), so a store that commits several
    /// changesets per transaction (SQLite's group commit) ends thousands per second.
    pub async fn expire_due(self: &Arc<Self>) -> Result<ExpiryPass> {
        const BATCH: u32 = 500;
        let sys = Actor::system();
        let mut pass = ExpiryPass {
            grants_started: self.start_due_grants().await?,
            ..Default::default()
        };
        loop {
            let now = self.now();
            let due = self.store.overdue_grants(now, BATCH).await?;
            let n = due.len();
            let mut running = tokio::task::JoinSet::new();
            let mut failed = None;
            let mut tally = |r: std::result::Result<Result<Grant>, tokio::task::JoinError>| match r
            {
                Ok(Ok(_)) => pass.grants_expired += 1,
                Ok(Err(Error::Conflict(_))) => {}
                Ok(Err(e)) => {
                    failed.get_or_insert(e);
                }
                Err(e) => {
                    failed.get_or_insert(Error::Internal(format!("expiry task: {e}")));
                }
            };
            for g in due {
                if running.len() >= EXPIRE_CONCURRENCY
                    && let Some(r) = running.join_next().await
                {
                    tally(r);
                }
                let (cp, sys) = (self.clone(), sys.clone());
                running.spawn(async move {
                    cp.end_grant(
                        &sys,
                        g,
                        GrantState::Expired,
                        Some("reached its expiry time".into()),
                    )
                    .await
                });
            }
            while let Some(r) = running.join_next().await {
                tally(r);
            }
            if let Some(e) = failed {
                return Err(e);
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
                    )
                    .notice(Notice::RequestDecided(req));
                match self.commit(cs).await {
                    Ok(_) => {
                        pass.requests_expired += 1;
                    }
                    Err(StoreError::Conflict(_)) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            if n < BATCH as usize {
                break;
            }
        }
        pass.accounts_expired = self.external_due().await?;
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
