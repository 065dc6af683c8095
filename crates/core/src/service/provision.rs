//! Provisioning jobs: creating them with the grants they serve, running them, handing a
//! grant's secret to its holder once. What the targets hold against what pedm granted
//! (discovery, drift, privileges taken away by hand) is in `reconcile.rs`.

use super::*;
use crate::provisioning::{FailureKind, MAX_BACKOFF, ProvisionFailure, backoff};

/// The changeset that records a job's attempt (`next`), if nobody else recorded it since
/// `expected` attempts.
pub(super) fn job_updated(next: ProvisionJob, expected: i64) -> Changeset {
    Changeset::new().write(Write::UpdateJob {
        job: next,
        expected_attempts: expected,
    })
}

/// After this many unreachable attempts at a revoke, a high-severity notice says the
/// privilege is still in the target (the retries go on).
pub const UNREACHABLE_REVOKE_ALERT: i64 = 3;

impl ControlPlane {
    /// Whether grants on `target` are switched on and off by a provisioner.
    pub(super) fn provisioned(&self, target: &str) -> bool {
        self.provisioning
            .as_ref()
            .is_some_and(|p| p.handles(target))
    }

    pub(super) fn new_job(
        &self,
        grant_id: Uuid,
        action: ProvisionAction,
        at: Timestamp,
    ) -> ProvisionJob {
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
                held_between: None,
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
        let live = g.clone().as_of(self.now()).state == GrantState::Active;
        let cs = match job.action {
            ProvisionAction::Grant => {
                if g.state != GrantState::Active
                    || g.provision_state != ProvisionState::Provisioning
                {
                    // Ended (or settled) before it was switched on: nothing to do.
                    next.done = true;
                    job_updated(next, expected)
                } else {
                    match port.grant(&g, run_as.as_deref()).await {
                        Ok(out) => {
                            next.done = true;
                            next.last_error = None;
                            let mut cs =
                                job_updated(next, expected).write(Write::SetProvisionState {
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
                            let mut cs =
                                job_updated(next, expected).write(Write::SetProvisionState {
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
                let mut cs = job_updated(next, expected);
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
            ProvisionAction::Extend if !live || g.provision_state != ProvisionState::Active => {
                if live && g.provision_state == ProvisionState::Provisioning {
                    // The grant job may have read the old end: move it once that job is done.
                    let f = ProvisionFailure {
                        kind: FailureKind::Unreachable,
                        message: "waiting for the grant to be switched on".into(),
                    };
                    self.retry_later(&sys, next, expected, subject("grant", g.id), &f, with)
                } else {
                    // Ended, or never switched on: its revoke takes care of the target.
                    next.done = true;
                    job_updated(next, expected)
                }
            }
            ProvisionAction::Extend => match port.extend(&g).await {
                Ok(detail) => {
                    next.done = true;
                    next.last_error = None;
                    job_updated(next, expected).event(
                        self.event(&sys, "provision.extended", subject("grant", g.id))
                            .data(with(json!({ "detail": detail, "until": g.expires_at }))),
                    )
                }
                Err(f) if f.is_retryable() => {
                    self.retry_later(&sys, next, expected, subject("grant", g.id), &f, with)
                }
                Err(f) => {
                    // The privilege is there until the target's own end; say so loudly.
                    next.done = true;
                    next.last_error = Some(f.message.clone());
                    job_updated(next, expected).event(
                        self.event(&sys, "provision.failed", subject("grant", g.id))
                            .outcome(Outcome::Failure)
                            .data(with(json!({ "error": f.message, "permanent": true }))),
                    )
                }
            },
            ProvisionAction::Revoke => match port.revoke(&g, run_as.as_deref()).await {
                Ok(()) => {
                    next.done = true;
                    next.last_error = None;
                    let mut cs = job_updated(next, expected);
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
                    // The privilege outlives its grant while the target stays out of reach:
                    // retried all along, and people told once it has failed a few times.
                    if next.attempts == UNREACHABLE_REVOKE_ALERT {
                        notice = Some(Notice::RevokeFailing {
                            grant: Box::new(g.clone()),
                            error: format!(
                                "target unreachable for {} attempts, still retrying: {}",
                                next.attempts, f.message
                            ),
                        });
                    }
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
                    job_updated(next.clone(), expected).event(
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
        let cs = match notice {
            Some(n) => cs.notice(n),
            None => cs,
        };
        match self.commit(cs).await {
            Ok(_) => Ok(()),
            // Another runner recorded this attempt, or the grant ended meanwhile (its revoke
            // job takes care of the target).
            Err(StoreError::Conflict(e)) => {
                tracing::info!(job = %job.id, error = %e, "provisioning job changed underneath");
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    pub(super) fn retry_later(
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
        job_updated(next, expected).event(
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

    /// Asks the target whether `id`'s privilege is there and compares with what its
    /// provisioning state says (the holder, or `read_audit`): `active` expects it present;
    /// `revoked`/`failed` expect it absent unless another live grant of the holder still
    /// needs the same privilege (then present, and the detail names that grant);
    /// `provisioning`/`revoke_pending` expect nothing yet. A grant nothing was provisioned
    /// for is not asked about.
    pub async fn verify_grant(&self, actor: &Actor, id: Uuid) -> Result<GrantCheck> {
        let g = self.get_grant(actor, id).await?;
        let mut check = GrantCheck {
            grant_id: g.id,
            provision_state: g.provision_state,
            expected: None,
            present: None,
            detail: String::new(),
            consistent: true,
        };
        let port = match &self.provisioning {
            Some(p) if p.handles(&g.target) && p.role_provisioned(&g).is_ok() => p.clone(),
            _ => {
                check.detail = "nothing is provisioned in the target for this grant".into();
                return Ok(check);
            }
        };
        let sharing = self.sharing_grants(&g).await?;
        let (expected, why) = match g.provision_state {
            ProvisionState::Active if g.state == GrantState::Active => {
                (Some(true), "the grant is active".to_string())
            }
            ProvisionState::Provisioning | ProvisionState::RevokePending => (
                None,
                format!(
                    "being switched {}",
                    if g.provision_state == ProvisionState::Provisioning {
                        "on"
                    } else {
                        "off"
                    }
                ),
            ),
            _ if !sharing.is_empty() => (
                Some(true),
                format!("still needed by live grant {}", join_ids(&sharing)),
            ),
            _ => (Some(false), format!("the grant is {}", g.provision_state)),
        };
        check.expected = expected;
        match port.observe(&g).await {
            Ok((present, seen)) => {
                check.present = Some(present);
                check.detail = format!("{seen}; expected because {why}");
                check.consistent = expected.is_none_or(|e| e == present);
            }
            Err(f) => {
                check.detail = format!("could not ask the target: {}; {why}", f.message);
            }
        }
        Ok(check)
    }

    /// The targets that have a provisioner.
    pub fn provisioned_targets(&self) -> Vec<String> {
        self.provisioning
            .as_ref()
            .map(|p| p.targets())
            .unwrap_or_default()
    }

    /// Marks a job that cannot run (its row is malformed) done, so it is not retried forever.
    pub(super) async fn abandon_job(&self, job: ProvisionJob, why: &str) -> Result<()> {
        tracing::error!(job = %job.id, why, "provisioning job abandoned");
        let expected = job.attempts;
        let mut next = job;
        next.done = true;
        next.last_error = Some(format!("abandoned: {why}"));
        let cs = job_updated(next.clone(), expected).event(
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
