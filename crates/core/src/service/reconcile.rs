//! Reconciliation: what the targets hold against what pedm granted. Discovery on request
//! and the standing-privilege report; standing privileges no live grant explains are
//! reported as drift (and removed where the target says so, by
//! durable jobs); live grants whose privilege was taken away by hand are switched on again,
//! or fail loudly.

use super::provision::job_updated;
use super::*;
use crate::provisioning::{DriftAction, FailureKind};
use crate::store::AuditFilter;

impl ControlPlane {
    /// Standing privileged accounts in a target (the assessment phase). Needs
    /// `manage_targets`.
    pub async fn discover_target(
        &self,
        actor: &Actor,
        target: &str,
    ) -> Result<Vec<StandingPrivilege>> {
        self.require_admin(actor, AdminAction::ManageTargets, "target.discover")
            .await?;
        let port = match &self.provisioning {
            Some(p) if p.handles(target) => p.clone(),
            _ => {
                return Err(Error::NotFound(format!(
                    "a provisioner for target {target}"
                )));
            }
        };
        let found = port.discover(target).await.map_err(|f| match f.kind {
            FailureKind::Unreachable => {
                Error::Conflict(format!("target {target} is unreachable: {}", f.message))
            }
            _ => Error::Internal(format!("discovering {target}: {}", f.message)),
        })?;
        let cs = Changeset::new().event(
            self.event(actor, "target.discovered", subject("target", target))
                .data(json!({ "target": target, "standing_privileges": found.len() })),
        );
        self.store.commit(cs).await?;
        Ok(found)
    }

    /// Standing privileges over every target with a provisioner (auditors: `read_audit`).
    /// A privilege a live pedm grant gave (exactly that account and privilege) is marked
    /// with the grant (`temporary_grant`): it is not standing.
    /// A target that cannot be read is listed under `errors`; the others still report.
    pub async fn standing_report(&self, actor: &Actor) -> Result<StandingReport> {
        self.require_admin(actor, AdminAction::ReadAudit, "report.standing")
            .await?;
        let mut report = StandingReport::default();
        let Some(port) = self.provisioning.clone() else {
            return Ok(report);
        };
        for target in port.targets() {
            let holders = self.live_holders(port.as_ref(), &target).await?;
            match port.discover(&target).await {
                Ok(found) => report.rows.extend(found.into_iter().map(|p| StandingRow {
                    temporary_grant: explained_by(&holders, &p),
                    target: target.clone(),
                    account: p.account,
                    privilege: p.privilege,
                    source: p.source,
                })),
                Err(f) => report.errors.push(TargetError {
                    target: target.clone(),
                    error: f.message,
                }),
            }
        }
        report.rows.sort();
        Ok(report)
    }

    /// One reconciliation pass: discovers every provisioned target and records a
    /// `provision.drift` event for each standing privilege that no live pedm grant explains
    /// (the account is neither a holder of a grant being provisioned, active or being revoked
    /// on that target, nor the account such a grant was given in the target
    /// ([`crate::provisioning::ProvisioningPort::grant_account`]), nor a temporary login
    /// `pedm_<holder>_…`). Where the target removes
    /// drift ([`crate::provisioning::ProvisioningPort::drift_action`]), the event and a
    /// `remove_drift` job are committed together (`"removal": "queued"`); a removal of the
    /// same finding still pending (queued earlier, or by another instance) is not doubled
    /// (`"removal": "pending"`); a finding that stays says why (`"removal": "kept"`).
    /// `reported` remembers what was already reported, so each finding is recorded once per
    /// process; a finding that disappears is forgotten and reported again if it comes back.
    /// A reported finding that is to be removed and still there with no removal pending (put
    /// back by hand right after its removal, or its removal was refused) is queued again, with
    /// its event (`"again": true`), on every pass. Returns how many findings were recorded.
    pub async fn reconcile(
        &self,
        reported: &mut std::collections::BTreeSet<(String, String, String)>,
    ) -> Result<usize> {
        let Some(port) = self.provisioning.clone() else {
            return Ok(0);
        };
        let sys = Actor::system();
        let mut new = 0;
        for target in port.targets() {
            // Grants read before and after discovery: a grant that starts or finishes being
            // revoked while the target is read is still recognised.
            let mut holders = self.live_holders(port.as_ref(), &target).await?;
            let found = match port.discover(&target).await {
                Ok(f) => f,
                Err(f) => {
                    tracing::warn!(%target, error = %f, "reconciliation could not read the target");
                    continue;
                }
            };
            holders.extend(self.live_holders(port.as_ref(), &target).await?);
            reported.retain(|(t, a, p)| {
                *t != target || found.iter().any(|f| f.account == *a && f.privilege == *p)
            });
            for p in found {
                if explained_by(&holders, &p).is_some() {
                    continue;
                }
                let key = (target.clone(), p.account.clone(), p.privilege.clone());
                let action = port.drift_action(&target, &p);
                // Reported already: only a removal is worth another look (the finding came
                // back after it was removed, or its removal failed).
                let again = reported.contains(&key);
                if again && action != DriftAction::Remove {
                    continue;
                }
                let mut data = json!({
                    "target": target, "account": p.account,
                    "privilege": p.privilege, "source": p.source,
                });
                let drift = |data: &serde_json::Value| {
                    self.event(&sys, "provision.drift", subject("target", &target))
                        .data(data.clone())
                };
                let mut job = None;
                match action {
                    DriftAction::Report => {}
                    DriftAction::Keep(why) => {
                        data["removal"] = json!("kept");
                        data["reason"] = json!(why);
                    }
                    DriftAction::Remove => {
                        let now = self.now();
                        let j = ProvisionJob {
                            id: Uuid::now_v7(),
                            grant_id: None,
                            action: ProvisionAction::RemoveDrift,
                            drift: Some(DriftFinding::new(&target, &p)),
                            attempts: 0,
                            next_attempt_at: now,
                            last_error: None,
                            done: false,
                            created_at: now,
                        };
                        data["removal"] = json!("queued");
                        data["job"] = json!(j.id);
                        if again {
                            data["again"] = json!(true);
                        }
                        job = Some(j);
                    }
                }
                let queued = job.is_some();
                let mut cs = Changeset::new().event(drift(&data));
                if let Some(j) = job {
                    cs = cs.write(Write::InsertJob(j));
                }
                match self.store.commit(cs).await {
                    Ok(_) if queued => self.jobs_changed.notify_one(),
                    Ok(_) => {}
                    // The same finding's removal is already queued and not done yet: nothing
                    // new if this process reported it already.
                    Err(StoreError::AlreadyExists(_)) if queued && again => continue,
                    Err(StoreError::AlreadyExists(_)) if queued => {
                        data["removal"] = json!("pending");
                        if let Some(m) = data.as_object_mut() {
                            m.remove("job");
                        }
                        self.store
                            .commit(Changeset::new().event(drift(&data)))
                            .await?;
                    }
                    Err(e) => return Err(e.into()),
                }
                reported.insert(key);
                new += 1;
            }
            self.verify_live_grants(port.as_ref(), &target).await?;
        }
        Ok(new)
    }

    /// Runs one `remove_drift` job: unless a live grant now explains the account (the holder
    /// asked pedm for it meanwhile: the job is dropped, `provision.drift_skipped`), asks the
    /// target to take the privilege away. Success: `provision.drift_removed`. Unreachable:
    /// `provision.failed` and a retry with backoff, like any job. Refused or invalid (a
    /// privilege held through another role, removal since turned off): `provision.failed`,
    /// permanent for this job; the next reconciliation pass queues a new one while the drift
    /// is there and removal is on.
    pub(super) async fn run_drift_removal(
        &self,
        port: &dyn crate::provisioning::ProvisioningPort,
        job: ProvisionJob,
    ) -> Result<()> {
        let Some(d) = job.drift.clone() else {
            return self.abandon_job(job, "the job names no finding").await;
        };
        let sys = Actor::system();
        let about = subject("target", &d.target);
        let expected = job.attempts;
        let mut next = job.clone();
        next.attempts += 1;
        let base = json!({
            "target": d.target, "account": d.account, "privilege": d.privilege,
            "source": d.source, "action": job.action, "job": job.id, "attempt": next.attempts,
        });
        let with = |extra: serde_json::Value| {
            let mut v = base.clone();
            if let (Some(m), Some(e)) = (v.as_object_mut(), extra.as_object()) {
                m.extend(e.clone());
            }
            v
        };
        let mut notice = None;
        let mut removed = false;
        let cs =
            if explained_by(&self.live_holders(port, &d.target).await?, &d.standing()).is_some() {
                next.done = true;
                next.last_error = Some("cancelled: a pedm grant now explains it".into());
                job_updated(next, expected).event(
                    self.event(&sys, "provision.drift_skipped", about)
                        .data(with(
                            json!({ "reason": "a live pedm grant explains it now" }),
                        )),
                )
            } else {
                match port.remove_standing(&d.target, &d.standing()).await {
                    Ok(detail) => {
                        next.done = true;
                        next.last_error = None;
                        removed = true;
                        job_updated(next, expected).event(
                            self.event(&sys, "provision.drift_removed", about)
                                .data(with(json!({ "detail": detail }))),
                        )
                    }
                    Err(f) if f.is_retryable() => {
                        self.retry_later(&sys, next, expected, about, &f, with)
                    }
                    Err(f) => {
                        tracing::warn!(target = %d.target, account = %d.account,
                        privilege = %d.privilege, error = %f, "drift removal refused");
                        if f.kind == FailureKind::Refused {
                            notice = Some(Notice::DriftRemovalRefused {
                                target: d.target.clone(),
                                account: d.account.clone(),
                                privilege: d.privilege.clone(),
                                error: f.message.clone(),
                            });
                        }
                        next.done = true;
                        next.last_error = Some(f.message.clone());
                        job_updated(next, expected).event(
                            self.event(&sys, "provision.failed", about)
                                .outcome(Outcome::Failure)
                                .data(with(json!({ "error": f.message, "permanent": true }))),
                        )
                    }
                }
            };
        let cs = match notice {
            Some(n) => cs.notice(n),
            None => cs,
        };
        match self.commit(cs).await {
            Ok(_) => {}
            // Another runner recorded this attempt.
            Err(StoreError::Conflict(e)) => {
                tracing::info!(job = %job.id, error = %e, "drift removal job changed underneath");
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        }
        if removed {
            // A grant of exactly this privilege may have started between the check above and
            // the removal: it gets its privilege back at once (and reconciliation checks
            // every live grant's privilege on each pass besides).
            let now_explained =
                explained_by(&self.live_holders(port, &d.target).await?, &d.standing());
            if let Some(id) = now_explained
                && let Some(g) = self.store.grant(id).await?
            {
                self.reapply(port, &g, "a drift removal ran while this grant started")
                    .await?;
            }
        }
        Ok(())
    }

    /// Asks the target whether each active grant's privilege is still there; one taken away
    /// by hand is put back (`provision.reapplied`). If the target refuses, the grant's
    /// provisioning is `failed` and a high-severity notice goes out. Targets that cannot be
    /// asked about a grant are skipped.
    async fn verify_live_grants(
        &self,
        port: &dyn crate::provisioning::ProvisioningPort,
        target: &str,
    ) -> Result<()> {
        let grants = self
            .store
            .grants(&GrantFilter {
                target: Some(target.to_string()),
                state: Some(GrantState::Active),
                limit: Some(5000),
                ..Default::default()
            })
            .await?;
        let now = self.now();
        for g in grants {
            let g = g.as_of(now);
            if g.state != GrantState::Active
                || g.provision_state != ProvisionState::Active
                || port.role_provisioned(&g).is_err()
            {
                continue;
            }
            match port.observe(&g).await {
                Ok((true, _)) => {}
                Ok((false, seen)) => {
                    tracing::warn!(grant = %g.id, %target, %seen, "a live grant's privilege is missing");
                    self.reapply(port, &g, &format!("missing from the target: {seen}"))
                        .await?;
                }
                // Not something this target can be asked: nothing to check.
                Err(f) if f.kind == FailureKind::Invalid => {}
                Err(f) => {
                    tracing::warn!(grant = %g.id, %target, error = %f, "could not check a live grant");
                }
            }
        }
        Ok(())
    }

    /// Puts a live grant's privilege in place again, recording why.
    async fn reapply(
        &self,
        port: &dyn crate::provisioning::ProvisioningPort,
        g: &Grant,
        why: &str,
    ) -> Result<()> {
        // As stored now, not as read at the start of the pass.
        let Some(g) = self.store.grant(g.id).await? else {
            return Ok(());
        };
        let g = &g.as_of(self.now());
        if g.state != GrantState::Active
            || !matches!(
                g.provision_state,
                ProvisionState::Active | ProvisionState::Provisioning
            )
        {
            return Ok(());
        }
        let run_as = self
            .store
            .role(&g.target, &g.role)
            .await?
            .and_then(|r| r.run_as);
        let sys = Actor::system();
        let about = subject("grant", g.id);
        let data = json!({
            "grant": g.id, "user": g.user, "target": g.target, "role": g.role, "reason": why,
        });
        let with = |extra: serde_json::Value| {
            let mut v = data.clone();
            if let (Some(m), Some(e)) = (v.as_object_mut(), extra.as_object()) {
                m.extend(e.clone());
            }
            v
        };
        let mut notice = None;
        let cs = match port.grant(g, run_as.as_deref()).await {
            Ok(out) => {
                // Ended while it was put back: its revoke may have run before, so take it
                // away again.
                let ended = self
                    .store
                    .grant(g.id)
                    .await?
                    .is_none_or(|now| now.as_of(self.now()).state != GrantState::Active);
                let mut cs =
                    Changeset::new().event(self.event(&sys, "provision.reapplied", about).data(
                        with(json!({ "detail": out.detail, "ended_meanwhile": ended })),
                    ));
                if ended {
                    cs = cs.write(Write::InsertJob(self.new_job(
                        g.id,
                        ProvisionAction::Revoke,
                        self.now(),
                    )));
                }
                if let Some(secret) = out.secret {
                    cs = cs.write(Write::PutGrantSecret {
                        grant_id: g.id,
                        secret,
                    });
                }
                cs
            }
            Err(f) if f.is_retryable() => Changeset::new().event(
                self.event(&sys, "provision.failed", about)
                    .outcome(Outcome::Failure)
                    .data(with(json!({ "error": f.message, "permanent": false,
                                       "reapply": true }))),
            ),
            Err(f) => {
                notice = Some(Notice::GrantPrivilegeMissing {
                    grant: Box::new(g.clone()),
                    error: f.message.clone(),
                });
                Changeset::new()
                    .write(Write::SetProvisionState {
                        grant_id: g.id,
                        from: vec![ProvisionState::Active, ProvisionState::Provisioning],
                        to: ProvisionState::Failed,
                        detail: Some(format!("{why}; putting it back failed: {}", f.message)),
                    })
                    .event(
                        self.event(&sys, "provision.failed", about)
                            .outcome(Outcome::Failure)
                            .data(with(json!({ "error": f.message, "permanent": true,
                                               "reapply": true }))),
                    )
            }
        };
        let cs = match notice {
            Some(n) => cs.notice(n),
            None => cs,
        };
        match self.commit(cs).await {
            Ok(_) => self.jobs_changed.notify_one(),
            // The grant ended meanwhile: its revoke job takes care of the target.
            Err(StoreError::Conflict(_)) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }

    /// The drift findings already reported and not removed since, from the audit log: what
    /// [`ControlPlane::reconcile`] starts from after a restart, so standing drift is not
    /// reported again as new.
    pub async fn known_drift(
        &self,
    ) -> Result<std::collections::BTreeSet<(String, String, String)>> {
        let mut events = Vec::new();
        for action in ["provision.drift", "provision.drift_removed"] {
            events.extend(
                self.store
                    .audit_events(&AuditFilter {
                        action: Some(action.into()),
                        ..Default::default()
                    })
                    .await?,
            );
        }
        events.sort_by_key(|e| e.seq);
        let mut known = std::collections::BTreeSet::new();
        for e in events {
            let field = |k: &str| e.data.get(k).and_then(|v| v.as_str()).map(String::from);
            let (Some(t), Some(a), Some(p)) =
                (field("target"), field("account"), field("privilege"))
            else {
                continue;
            };
            if e.action == "provision.drift" {
                known.insert((t, a, p));
            } else {
                known.remove(&(t, a, p));
            }
        }
        Ok(known)
    }

    /// What grants on `target` whose privilege may be in place (provisioning, active, being
    /// revoked) explain: the account the grant was given in the target (where the port knows
    /// it, and the holder's name) with exactly the privilege it gives
    /// ([`crate::provisioning::ProvisioningPort::grant_privilege`]). A grant of a role the
    /// target does not provision explains nothing.
    pub(super) async fn live_holders(
        &self,
        port: &dyn crate::provisioning::ProvisioningPort,
        target: &str,
    ) -> Result<Vec<Explains>> {
        let mut out = Vec::new();
        for g in self
            .store
            .grants(&GrantFilter {
                target: Some(target.to_string()),
                limit: Some(5000),
                ..Default::default()
            })
            .await?
        {
            if !matches!(
                g.provision_state,
                ProvisionState::Provisioning
                    | ProvisionState::Active
                    | ProvisionState::RevokePending
            ) || port.role_provisioned(&g).is_err()
            {
                continue;
            }
            let privilege = port.grant_privilege(&g);
            if let Some(a) = port.grant_account(&g) {
                out.push(Explains {
                    account: a,
                    privilege: privilege.clone(),
                    holder: g.user.clone(),
                    grant: g.id,
                });
            }
            out.push(Explains {
                account: g.user.clone(),
                privilege,
                holder: g.user,
                grant: g.id,
            });
        }
        Ok(out)
    }
}

/// One live grant's privilege in a target, as reconciliation counts it.
#[derive(Debug, Clone)]
pub(super) struct Explains {
    account: String,
    /// `None`: the account is the grant's own (a temporary login), all it holds is pedm's.
    privilege: Option<String>,
    holder: String,
    grant: Uuid,
}

impl Explains {
    fn covers(&self, p: &StandingPrivilege) -> bool {
        if p.account.starts_with(&format!("pedm_{}_", self.holder)) {
            return true;
        }
        if p.account != self.account {
            return false;
        }
        match &self.privilege {
            None => true,
            Some(x) => *x == p.privilege || x.strip_prefix("role:") == Some(p.privilege.as_str()),
        }
    }
}

/// The live grant that explains a standing privilege, if any: exactly the privilege a grant
/// gives its account (see `live_holders`), or anything a temporary login `pedm_<holder>_…`
/// made for one holds.
pub(super) fn explained_by(holders: &[Explains], p: &StandingPrivilege) -> Option<Uuid> {
    holders.iter().find(|h| h.covers(p)).map(|h| h.grant)
}
