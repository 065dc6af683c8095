//! Locks (see [`crate::lock`]): added and lifted by admins with `manage_grants`, honoured by
//! request creation and by every host snapshot.

use super::*;
use crate::lock::{Lock, LockKind, LockWrite};

/// The longest a lock may last (a longer stop is disabling the user or revoking the host).
pub const MAX_LOCK_SECS: i64 = 30 * 24 * 3600;

impl ControlPlane {
    /// Locks a user or a host target for `duration_secs`. Their live sessions end within
    /// moments (agents are told at once); nothing is revoked.
    pub async fn add_lock(
        &self,
        actor: &Actor,
        kind: LockKind,
        subject_name: &str,
        duration_secs: i64,
        reason: &str,
    ) -> Result<Lock> {
        self.require_admin(actor, AdminAction::ManageGrants, "lock.add")
            .await?;
        validate_name(kind.as_str(), subject_name)?;
        if duration_secs <= 0 {
            return Err(Error::invalid("duration", "must be more than zero"));
        }
        if duration_secs > MAX_LOCK_SECS {
            return Err(Error::unprocessable(
                "duration",
                format!(
                    "{} is longer than the {} a lock may last (disable the user or revoke \
                     the host instead)",
                    format_duration(duration_secs),
                    format_duration(MAX_LOCK_SECS)
                ),
            ));
        }
        let reason = trimmed("reason", Some(reason.to_string()), 500)?
            .ok_or_else(|| Error::invalid("reason", "is required: say why"))?;
        let name = match kind {
            LockKind::User => self
                .store
                .user(subject_name)
                .await?
                .map(|u| u.name)
                .ok_or_else(|| Error::NotFound(format!("user {subject_name}")))?,
            LockKind::Host => match self.store.target(subject_name).await? {
                Some(t) if t.kind == TargetKind::Host => t.name,
                Some(_) => {
                    return Err(Error::unprocessable(
                        "host",
                        format!("target {subject_name} is not a host"),
                    ));
                }
                None => return Err(Error::NotFound(format!("target {subject_name}"))),
            },
            LockKind::Session => {
                let id = Uuid::parse_str(subject_name)
                    .map_err(|_| Error::invalid("session", "is not a session id"))?;
                if let Some(s) = self.store.session(id).await? {
                    return Err(Error::Conflict(format!(
                        "session {id} ended at {} ({})",
                        s.ended_at,
                        s.ended_by.as_deref().unwrap_or("its command exited")
                    )));
                }
                id.to_string()
            }
        };
        let now = self.now();
        let lock = Lock {
            id: Uuid::now_v7(),
            kind,
            subject: name,
            reason,
            created_by: actor.user.clone(),
            created_at: now,
            expires_at: now
                .checked_add(jiff::SignedDuration::from_secs(duration_secs))
                .map_err(|e| Error::invalid("duration", e.to_string()))?,
            lifted_at: None,
            lifted_by: None,
        };
        let cs = Changeset::new()
            .write(Write::Lock(LockWrite::Insert(lock.clone())))
            .event(
                self.event(
                    actor,
                    "lock.added",
                    subject(lock.kind.as_str(), &lock.subject),
                )
                .data(json!({
                    "lock": lock.id, "reason": lock.reason, "expires_at": lock.expires_at,
                })),
            );
        self.store.commit(cs).await?;
        self.notify(Notice::LocksChanged);
        Ok(lock)
    }

    /// Ends a live host session (`pedm session kill`): a lock on the session, which every
    /// agent's next snapshot carries (pushed at once); the agent running it ends it with the
    /// reason, and the uploaded session says so. Refused if the session was uploaded already.
    pub async fn kill_session(&self, actor: &Actor, id: Uuid, reason: &str) -> Result<Lock> {
        self.add_lock(actor, LockKind::Session, &id.to_string(), 24 * 3600, reason)
            .await
    }

    /// Lifts a lock before it runs out.
    pub async fn lift_lock(&self, actor: &Actor, id: Uuid) -> Result<Lock> {
        self.require_admin(actor, AdminAction::ManageGrants, "lock.lift")
            .await?;
        let now = self.now();
        let cs = Changeset::new()
            .write(Write::Lock(LockWrite::Lift {
                id,
                at: now,
                by: actor.user.clone(),
            }))
            .event(
                self.event(actor, "lock.lifted", subject("lock", id))
                    .data(json!({ "lock": id })),
            );
        self.store.commit(cs).await.map_err(|e| match e {
            StoreError::NotFound(_) => Error::NotFound(format!("lock {id}")),
            StoreError::Conflict(m) => Error::Conflict(m),
            e => e.into(),
        })?;
        self.notify(Notice::LocksChanged);
        self.store
            .locks()
            .await?
            .into_iter()
            .find(|l| l.id == id)
            .ok_or_else(|| Error::NotFound(format!("lock {id}")))
    }

    /// Locks, newest first: those in force, or all of them with `all` (admins with
    /// `manage_grants`).
    pub async fn list_locks(&self, actor: &Actor, all: bool) -> Result<Vec<Lock>> {
        self.require_admin(actor, AdminAction::ManageGrants, "lock.list")
            .await?;
        let now = self.now();
        let mut locks = self.store.locks().await?;
        if !all {
            locks.retain(|l| l.holds(now));
        }
        Ok(locks)
    }

    /// The lock that stops `kind` named `name` now, if any.
    pub(super) async fn lock_on(&self, kind: LockKind, name: &str) -> Result<Option<Lock>> {
        let now = self.now();
        Ok(self
            .store
            .locks_in_force(now)
            .await?
            .into_iter()
            .find(|l| l.stops(&kind, name, now)))
    }
}
