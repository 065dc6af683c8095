//! Provisioning jobs: creating them with the grants they serve, running them, handing a
//! grant's secret to its holder once, discovery of standing privileges, and reconciliation
//! (drift reported, and removed where the target says so).

use super::*;
use crate::provisioning::{DriftAction, FailureKind, MAX_BACKOFF, ProvisionFailure, backoff};

impl ControlPlane {
    /// Whether grants on `target` are switched on and off by a provisioner.
    pub(super) fn provisioned(&self, target: &str) -> bool {
        self.provisioning
            .as_ref()
            .is_some_and(|p| p.handles(target))
    }

    fn new_job(&self, grant_id: Uuid, action: ProvisionAction, at: Timestamp) -> ProvisionJob {
        ProvisionJob {
            id: Uuid::now_v7(),
            grant_id: Some(grant_id),
            action,
            drift: None,
            attempts: 0,
            next_attempt_at: at,
            last_error: None,
            done: false,
            created_at: at,
        }
    }

    /// The job that switches a new grant on, if its target has a provisioner (the grant is
    /// then `provisioning`); goes into the changeset that creates the grant.
    pub(super) fn grant_job(&self, g: &Grant) -> Option<Write> {
        (g.provision_state == ProvisionState::Provisioning)
            .then(|| Write::InsertJob(self.new_job(g.id, ProvisionAction::Grant, g.starts_at)))
    }

    /// What ending `g` does to its privilege in the target (goes into the changeset that
    /// ends it):
    ///
    /// - never provisioned (no provisioner, or a role the target does not provision): the
    ///   provisioning state becomes `revoked` at once (there is nothing to take away);
    /// - another live grant of the same holder needs the same privilege on the target
    ///   (same account and [`crate::provisioning::ProvisioningPort::grant_privilege`]): the
    ///   privilege is left in place for it, the state becomes `revoked` with a detail naming
    ///   the other grants, and the changeset requires them to be still active
    ///   ([`Write::RequireGrantsActive`], counted in the same transaction that ends `g`);
    /// - otherwise a revoke job (the grant shows `revoke_pending` until the target
    ///   confirms), cancelling a grant job that has not run yet.
    ///
    /// `ending`: grants ended earlier in the same changeset (not counted as live).
    pub(super) async fn revoke_plan(
        &self,
        g: &Grant,
        now: Timestamp,
        ending: &[Uuid],
    ) -> Result<RevokePlan> {
        let from = g.provision_state;
        let mut plan = RevokePlan::default();
        if !matches!(from, ProvisionState::Provisioning | ProvisionState::Active) {
            // A failed grant already has its revoke job; an ended one is settled.
            return Ok(plan);
        }
        let jobs = self.store.grant_jobs(g.id).await?;
        if from == ProvisionState::Active && jobs.is_empty() {
            plan.writes.push(Write::SetProvisionState {
                grant_id: g.id,
                from: vec![from],
                to: ProvisionState::Revoked,
                detail: Some(match &g.provision_detail {
                    Some(d) => format!("grant ended ({d})"),
                    None => "grant ended; nothing was provisioned in the target".into(),
                }),
            });
            plan.state = Some(ProvisionState::Revoked);
            return Ok(plan);
        }
        for mut job in jobs {
            if !job.done && job.action == ProvisionAction::Grant {
                let expected = job.attempts;
                job.done = true;
                job.last_error = Some("cancelled: the grant ended first".into());
                plan.writes.push(Write::UpdateJob {
                    job,
                    expected_attempts: expected,
                });
            }
        }
        let sharing: Vec<Uuid> = self
            .sharing_grants(g)
            .await?
            .into_iter()
            .filter(|id| !ending.contains(id))
            .collect();
        if !sharing.is_empty() {
            let mut ids = sharing.clone();
            ids.push(g.id);
            plan.precondition = Some(Write::RequireGrantsActive { ids });
            plan.writes.push(Write::SetProvisionState {
                grant_id: g.id,
                from: vec![from],
                to: ProvisionState::Revoked,
                detail: Some(format!(
                    "privilege left in place: still needed by live grant {} of the same holder",
                    join_ids(&sharing)
                )),
            });
            plan.state = Some(ProvisionState::Revoked);
            plan.kept_for = sharing;
            return Ok(plan);
        }
        plan.writes.push(Write::SetProvisionState {
            grant_id: g.id,
            from: vec![from],
            to: ProvisionState::RevokePending,
            detail: None,
        });
        plan.writes.push(Write::InsertJob(self.new_job(
            g.id,
            ProvisionAction::Revoke,
            now,
        )));
        plan.state = Some(ProvisionState::RevokePending);
        Ok(plan)
    }

    /// Other live grants (active, privilege being provisioned or in place) of `g`'s holder
    /// on its target that need the same privilege for the same account.
    async fn sharing_grants(&self, g: &Grant) -> Result<Vec<Uuid>> {
        let Some(port) = self.provisioning.as_ref() else {
            return Ok(vec![]);
        };
        let Some(privilege) = port.grant_privilege(g) else {
            return Ok(vec![]);
        };
        let account = port.grant_account(g).unwrap_or_else(|| g.user.clone());
        let others = self
            .store
            .grants(&GrantFilter {
                user: Some(g.user.clone()),
                target: Some(g.target.clone()),
                state: Some(GrantState::Active),
                limit: Some(5000),
            })
            .await?;
        Ok(others
            .into_iter()
            .filter(|o| {
                o.id != g.id
                    && o.state == GrantState::Active
                    && matches!(
                        o.provision_state,
                        ProvisionState::Provisioning | ProvisionState::Active
                    )
                    && port.role_provisioned(o).is_ok()
                    && port.grant_privilege(o).as_deref() == Some(privilege.as_str())
                    && port.grant_account(o).unwrap_or_else(|| o.user.clone()) == account
            })
            .map(|o| o.id)
            .collect())
    }

    /// Runs every provisioning job that is due; returns how many ran.
    pub async fn run_due_jobs(&self) -> Result<usize> {
        let Some(port) = self.provisioning.clone() else {
            return Ok(0);
        };
        let due = self.store.due_jobs(self.now(), 100).await?;
        let n = due.len();
        for job in due {
            self.run_job(port.as_ref(), job).await?;
        }
        Ok(n)
    }

    async fn run_job(
        &self,
        port: &dyn crate::provisioning::ProvisioningPort,
        job: ProvisionJob,
    ) -> Result<()> {
        if job.action == ProvisionAction::RemoveDrift {
            return self.run_drift_removal(port, job).await;
        }
        let sys = Actor::system();
        let Some(g) = (match job.grant_id {
            Some(id) => self.store.grant(id).await?,
            None => None,
        }) else {
            return self.abandon_job(job, "the job names no grant").await;
        };
        let run_as = self
            .store
            .role(&g.target, &g.role)
            .await?
            .and_then(|r| r.run_as);
        let expected = job.attempts;
        let mut next = job.clone();
        next.attempts += 1;
        let base = json!({
            "grant": g.id, "user": g.user, "target": g.target, "role": g.role,
            "request": g.request_id, "action": job.action, "attempt": next.attempts,
        });
        let with = |extra: serde_json::Value| {
            let mut v = base.clone();
            if let (Some(m), Some(e)) = (v.as_object_mut(), extra.as_object()) {
                m.extend(e.clone());
            }
            v
        };
        let mut notice = None;
        let cs = match job.action {
            ProvisionAction::Grant => {
                if g.state != GrantState::Active
                    || g.provision_state != ProvisionState::Provisioning
                {
                    // Ended (or settled) before it was switched on: nothing to do.
                    next.done = true;
                    Changeset::new().write(Write::UpdateJob {
                        job: next,
                        expected_attempts: expected,
                    })
                } else {
                    match port.grant(&g, run_as.as_deref()).await {
                        Ok(out) => {
                            next.done = true;
                            next.last_error = None;
                            let mut cs = Changeset::new()
                                .write(Write::UpdateJob {
                                    job: next,
                                    expected_attempts: expected,
                                })
                                .write(Write::SetProvisionState {
                                    grant_id: g.id,
                                    from: vec![ProvisionState::Provisioning],
                                    to: ProvisionState::Active,
                                    detail: Some(out.detail.clone()),
                                });
                            if let Some(secret) = out.secret {
                                cs = cs.write(Write::PutGrantSecret {
                                    grant_id: g.id,
                                    secret,
                                });
                            }
                            cs.event(
                                self.event(&sys, "provision.granted", subject("grant", g.id))
                                    .data(with(json!({ "detail": out.detail }))),
                            )
                        }
                        Err(f) if f.is_retryable() => {
                            self.retry_later(&sys, next, expected, subject("grant", g.id), &f, with)
                        }
                        Err(f) => {
                            next.done = true;
                            next.last_error = Some(f.message.clone());
                            let mut cs = Changeset::new()
                                .write(Write::UpdateJob {
                                    job: next,
                                    expected_attempts: expected,
                                })
                                .write(Write::SetProvisionState {
                                    grant_id: g.id,
                                    from: vec![ProvisionState::Provisioning],
                                    to: ProvisionState::Failed,
                                    detail: Some(f.message.clone()),
                                });
                            // The target may be half-granted; only an invalid request is known
                            // to have changed nothing.
                            let cleanup = f.kind != FailureKind::Invalid;
                            if cleanup {
                                cs = cs.write(Write::InsertJob(self.new_job(
                                    g.id,
                                    ProvisionAction::Revoke,
                                    self.now(),
                                )));
                            }
                            cs.event(
                                self.event(&sys, "provision.failed", subject("grant", g.id))
                                    .outcome(Outcome::Failure)
                                    .data(with(json!({
                                        "error": f.message, "permanent": true,
                                        "revoke_queued": cleanup,
                                    }))),
                            )
                        }
                    }
                }
            }
            // Handled before the grant is read; kept here so a new action is not missed.
            ProvisionAction::RemoveDrift => {
                return self.run_drift_removal(port, job.clone()).await;
            }
            ProvisionAction::Revoke if !self.sharing_grants(&g).await?.is_empty() => {
                // A grant of the same privilege started since this one ended: taking it
                // away now would break that grant.
                let sharing = self.sharing_grants(&g).await?;
                next.done = true;
                next.last_error = None;
                let detail = format!(
                    "privilege left in place: still needed by live grant {} of the same holder",
                    join_ids(&sharing)
                );
                let mut cs = Changeset::new().write(Write::UpdateJob {
                    job: next,
                    expected_attempts: expected,
                });
                if g.provision_state == ProvisionState::RevokePending {
                    cs = cs.write(Write::SetProvisionState {
                        grant_id: g.id,
                        from: vec![ProvisionState::RevokePending],
                        to: ProvisionState::Revoked,
                        detail: Some(detail.clone()),
                    });
                }
                cs.event(
                    self.event(&sys, "provision.revoke_skipped", subject("grant", g.id))
                        .data(with(json!({ "reason": detail, "kept_for": sharing }))),
                )
            }
            ProvisionAction::Revoke => match port.revoke(&g, run_as.as_deref()).await {
                Ok(()) => {
                    next.done = true;
                    next.last_error = None;
                    let mut cs = Changeset::new().write(Write::UpdateJob {
                        job: next,
                        expected_attempts: expected,
                    });
                    if g.provision_state == ProvisionState::RevokePending {
                        cs = cs.write(Write::SetProvisionState {
                            grant_id: g.id,
                            from: vec![ProvisionState::RevokePending],
                            to: ProvisionState::Revoked,
                            detail: Some("privilege removed from the target".into()),
                        });
                    }
                    cs.event(
                        self.event(&sys, "provision.revoked", subject("grant", g.id))
                            .data(with(json!({}))),
                    )
                }
                Err(f) if f.is_retryable() => {
                    self.retry_later(&sys, next, expected, subject("grant", g.id), &f, with)
                }
                Err(f) => {
                    // Never dropped: keep trying at the longest interval, and tell people.
                    next.next_attempt_at = self.now() + MAX_BACKOFF;
                    next.last_error = Some(f.message.clone());
                    notice = Some(Notice::RevokeFailing {
                        grant: Box::new(g.clone()),
                        error: f.message.clone(),
                    });
                    Changeset::new()
                        .write(Write::UpdateJob {
                            job: next.clone(),
                            expected_attempts: expected,
                        })
                        .event(
                            self.event(&sys, "provision.failed", subject("grant", g.id))
                                .outcome(Outcome::Failure)
                                .data(with(json!({
                                    "error": f.message, "permanent": true,
                                    "retry_at": next.next_attempt_at,
                                }))),
                        )
                }
            },
        };
        match self.store.commit(cs).await {
            Ok(_) => {
                if let Some(n) = notice {
                    self.notify(n);
                }
                Ok(())
            }
            // Another runner recorded this attempt, or the grant ended meanwhile (its revoke
            // job takes care of the target).
            Err(StoreError::Conflict(e)) => {
                tracing::info!(job = %job.id, error = %e, "provisioning job changed underneath");
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    fn retry_later(
        &self,
        sys: &Actor,
        mut next: ProvisionJob,
        expected: i64,
        about: Option<String>,
        f: &ProvisionFailure,
        with: impl Fn(serde_json::Value) -> serde_json::Value,
    ) -> Changeset {
        let wait = backoff(next.attempts);
        next.next_attempt_at = self
            .now()
            .checked_add(SignedDuration::from_micros(wait.as_micros() as i64))
            .unwrap_or_else(|_| self.now());
        next.last_error = Some(f.message.clone());
        let at = next.next_attempt_at;
        Changeset::new()
            .write(Write::UpdateJob {
                job: next,
                expected_attempts: expected,
            })
            .event(
                self.event(sys, "provision.failed", about)
                    .outcome(Outcome::Failure)
                    .data(with(
                        json!({ "error": f.message, "permanent": false, "retry_at": at }),
                    )),
            )
    }

    /// Hands the secret a grant produced (e.g. a generated password) to its holder, once: it
    /// is deleted as it is read, and when the grant ends.
    pub async fn take_grant_secret(&self, actor: &Actor, id: Uuid) -> Result<String> {
        let g = self
            .store
            .grant(id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("grant {id}")))?;
        if g.user != actor.user {
            return Err(self
                .refuse(
                    actor,
                    "grant.secret_read",
                    subject("grant", id),
                    format!("only the holder may read the secret of grant {id}"),
                )
                .await);
        }
        let gone = || Error::NotFound(format!("a secret for grant {id} (none, or already read)"));
        let Some(secret) = self.store.grant_secret(id).await? else {
            return Err(gone());
        };
        let cs = Changeset::new()
            .write(Write::DeleteGrantSecret {
                grant_id: id,
                must_exist: true,
            })
            .event(
                self.event(actor, "grant.secret_read", subject("grant", id))
                    .data(json!({ "target": g.target, "role": g.role, "request": g.request_id })),
            );
        match self.store.commit(cs).await {
            Ok(_) => Ok(secret),
            Err(StoreError::Conflict(_)) => Err(gone()),
            Err(e) => Err(e.into()),
        }
    }

    /// The targets that have a provisioner.
    pub fn provisioned_targets(&self) -> Vec<String> {
        self.provisioning
            .as_ref()
            .map(|p| p.targets())
            .unwrap_or_default()
    }

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
    async fn run_drift_removal(
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
        let cs =
            if explained_by(&self.live_holders(port, &d.target).await?, &d.standing()).is_some() {
                next.done = true;
                next.last_error = Some("cancelled: a pedm grant now explains it".into());
                Changeset::new()
                    .write(Write::UpdateJob {
                        job: next,
                        expected_attempts: expected,
                    })
                    .event(
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
                        Changeset::new()
                            .write(Write::UpdateJob {
                                job: next,
                                expected_attempts: expected,
                            })
                            .event(
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
                        next.done = true;
                        next.last_error = Some(f.message.clone());
                        Changeset::new()
                            .write(Write::UpdateJob {
                                job: next,
                                expected_attempts: expected,
                            })
                            .event(
                                self.event(&sys, "provision.failed", about)
                                    .outcome(Outcome::Failure)
                                    .data(with(json!({ "error": f.message, "permanent": true }))),
                            )
                    }
                }
            };
        match self.store.commit(cs).await {
            Ok(_) => Ok(()),
            // Another runner recorded this attempt.
            Err(StoreError::Conflict(e)) => {
                tracing::info!(job = %job.id, error = %e, "drift removal job changed underneath");
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Marks a job that cannot run (its row is malformed) done, so it is not retried forever.
    async fn abandon_job(&self, job: ProvisionJob, why: &str) -> Result<()> {
        tracing::error!(job = %job.id, why, "provisioning job abandoned");
        let expected = job.attempts;
        let mut next = job;
        next.done = true;
        next.last_error = Some(format!("abandoned: {why}"));
        let cs = Changeset::new()
            .write(Write::UpdateJob {
                job: next.clone(),
                expected_attempts: expected,
            })
            .event(
                self.event(
                    &Actor::system(),
                    "provision.failed",
                    subject("job", next.id),
                )
                .outcome(Outcome::Failure)
                .data(json!({ "job": next.id, "action": next.action, "error": why,
                                  "permanent": true })),
            );
        match self.store.commit(cs).await {
            Ok(_) | Err(StoreError::Conflict(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
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

/// What ending a grant does to its privilege in the target ([`ControlPlane::revoke_plan`]).
#[derive(Debug, Default)]
pub(super) struct RevokePlan {
    /// Goes before the `EndGrant` (it lists the grant being ended).
    pub precondition: Option<Write>,
    pub writes: Vec<Write>,
    /// The grant's provisioning state once the changeset commits, if it changes.
    pub state: Option<ProvisionState>,
    /// Other live grants the privilege is left in place for.
    pub kept_for: Vec<Uuid>,
}

fn join_ids(ids: &[Uuid]) -> String {
    ids.iter()
        .map(Uuid::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
