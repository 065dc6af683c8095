//! Scheduled access (`pedm request ... --start 2026-12-05T22:00Z`): a request for a later
//! window is decided now (policy sees `context.starts_in_secs`, and `context.time` is the
//! window's start), approved into a `scheduled` grant that holds nothing in the target, and
//! switched on by the scheduler at its start — exactly once across instances — then off at
//! its end like any grant. Revoking or releasing it before then ends it with nothing to undo.

use super::*;
use crate::model::{GrantFilter, ProvisionState};

/// How far ahead a window may start.
pub const MAX_SCHEDULE_AHEAD_SECS: i64 = 30 * 86_400;
/// A start this close to now (or past it by this little: clocks differ) means "now".
const NOW_TOLERANCE_SECS: i64 = 5;

impl ControlPlane {
    /// The window's start a request asks for, checked: `None` for now (or a start within a
    /// few seconds of it), refused when in the past, beyond [`MAX_SCHEDULE_AHEAD_SECS`], or on a
    /// request that cannot wait (break-glass, an extension, a held exec).
    pub(super) fn scheduled_start(
        &self,
        new: &NewRequest,
        context: &RequestContext,
        now: Timestamp,
    ) -> Result<Option<Timestamp>> {
        let Some(start) = new.starts_at else {
            return Ok(None);
        };
        let ahead = start.duration_since(now).as_secs();
        if ahead < -NOW_TOLERANCE_SECS {
            return Err(Error::unprocessable(
                "start",
                format!("{start} is in the past (now is {now})"),
            ));
        }
        if ahead <= NOW_TOLERANCE_SECS {
            return Ok(None);
        }
        if new.break_glass {
            return Err(Error::unprocessable(
                "start",
                "break-glass access is for now: it cannot be scheduled",
            ));
        }
        if context.extends.is_some() || context.step_up.is_some() {
            return Err(Error::unprocessable(
                "start",
                "an extension or a held command cannot be scheduled",
            ));
        }
        if ahead > MAX_SCHEDULE_AHEAD_SECS {
            return Err(Error::unprocessable(
                "start",
                format!(
                    "{start} is more than {} ahead",
                    format_duration(MAX_SCHEDULE_AHEAD_SECS)
                ),
            ));
        }
        Ok(Some(start))
    }

    /// Refuses (and records) a scheduled window that overlaps a grant of the same role the
    /// requester holds or has scheduled, unless a permit allows parallel grants.
    pub(super) async fn refuse_overlap(
        &self,
        actor: &Actor,
        target: &str,
        role: &str,
        start: Timestamp,
        end: Timestamp,
    ) -> Result<()> {
        let mut held = vec![];
        for state in [GrantState::Active, GrantState::Scheduled] {
            held.extend(
                self.store
                    .grants(&GrantFilter {
                        user: Some(actor.user.clone()),
                        target: Some(target.to_string()),
                        state: Some(state),
                        limit: Some(1000),
                        held_between: None,
                    })
                    .await?,
            );
        }
        let Some(g) = held
            .iter()
            .find(|g| g.role == role && g.starts_at < end && start < g.expires_at)
        else {
            return Ok(());
        };
        let why = format!(
            "the window {start} to {end} overlaps grant {} of role {role} on {target} ({} to \
             {}): extend that grant, or start after it ends",
            g.id, g.starts_at, g.expires_at
        );
        let ev = self
            .event(actor, "request.create", subject("grant", g.id))
            .outcome(Outcome::Denied)
            .data(json!({ "reason": why, "target": target, "role": role, "grant": g.id }));
        self.store.commit(Changeset::new().event(ev)).await?;
        Err(Error::Conflict(why))
    }

    /// Switches on every scheduled grant whose window has started (the ones whose window
    /// has already ended, while no instance ran, end as expired with nothing to undo). Each
    /// starts once: the store refuses to start a grant that is no longer scheduled.
    pub(super) async fn start_due_grants(&self) -> Result<u64> {
        let sys = Actor::system();
        let mut started = 0;
        loop {
            let now = self.now();
            let due = self.store.due_scheduled_grants(now, 500).await?;
            let n = due.len();
            for g in due {
                let outcome = if g.expires_at <= now {
                    self.end_grant(
                        &sys,
                        g,
                        GrantState::Expired,
                        Some("its window passed before it could start".into()),
                    )
                    .await
                    .map(|_| false)
                } else {
                    self.start_scheduled(&sys, g).await.map(|_| true)
                };
                match outcome {
                    Ok(true) => started += 1,
                    Ok(false) => {}
                    // Another instance took it.
                    Err(Error::Conflict(_)) => {}
                    Err(e) => return Err(e),
                }
            }
            if n < 500 {
                return Ok(started);
            }
        }
    }

    async fn start_scheduled(&self, actor: &Actor, mut g: Grant) -> Result<Grant> {
        g.state = GrantState::Active;
        g.provision_state = ProvisionState::Active;
        g.provision_detail = None;
        if self.provisioned(&g.target) {
            match self.provisioning.as_ref().map(|p| p.role_provisioned(&g)) {
                Some(Err(why)) => g.provision_detail = Some(format!("not provisioned: {why}")),
                _ => g.provision_state = ProvisionState::Provisioning,
            }
        }
        let mut cs = Changeset::new()
            .write(Write::StartScheduledGrant {
                id: g.id,
                provision_state: g.provision_state,
                provision_detail: g.provision_detail.clone(),
            })
            .event(self.grant_started_event(actor, &g))
            .notice(Notice::GrantStarted(g.clone()));
        if let Some(job) = self.grant_job(&g) {
            cs = cs.write(job);
        }
        match self.commit(cs).await {
            Ok(_) => {}
            Err(StoreError::Conflict(e)) => return Err(Error::Conflict(e)),
            Err(e) => return Err(e.into()),
        }
        self.jobs_changed.notify_one();
        self.deadline_changed.notify_one();
        Ok(g)
    }
}
