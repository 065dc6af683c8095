//! Data subjects' rights over the audit log (see [`crate::privacy`]): erasure by destroying the
//! subject's key, and legal holds that stop it. Both need `manage_users`; each attempt is
//! audited, refusals included.

use super::*;
use crate::privacy::{Erasure, LegalHold, PrivacyStatus, PrivacyWrite, pseudonym};

impl ControlPlane {
    fn require_sealing(&self) -> Result<()> {
        if self.store.seals_personal_data() {
            return Ok(());
        }
        Err(Error::unprocessable(
            "privacy",
            "personal data in the audit log is not sealed here: set [privacy] \
             seal_personal_data = true (with a key_encryption_key) first",
        ))
    }

    /// A data subject's key and legal hold.
    pub async fn privacy_status(&self, actor: &Actor, user: &str) -> Result<PrivacyStatus> {
        self.require_admin(actor, AdminAction::ManageUsers, "privacy.status")
            .await?;
        validate_name("user", user)?;
        let key = self.store.subject_key(user).await?;
        Ok(PrivacyStatus {
            user: user.to_string(),
            sealing: self.store.seals_personal_data(),
            key_id: key.as_ref().map(|k| k.key_id.clone()),
            hold: key.and_then(|k| k.hold),
        })
    }

    /// Sets (`reason` given) or lifts (`None`) a legal hold on a subject's personal data.
    pub async fn privacy_hold(
        &self,
        actor: &Actor,
        user: &str,
        reason: Option<&str>,
    ) -> Result<PrivacyStatus> {
        let action = match reason {
            Some(_) => "privacy.hold_set",
            None => "privacy.hold_lifted",
        };
        self.require_admin(actor, AdminAction::ManageUsers, action)
            .await?;
        self.require_sealing()?;
        validate_name("user", user)?;
        let hold = match reason {
            Some(r) => Some(LegalHold {
                reason: trimmed("reason", Some(r.to_string()), 500)?
                    .ok_or_else(|| Error::invalid("reason", "is required: say why"))?,
                by: actor.user.clone(),
                at: self.now(),
            }),
            None => None,
        };
        let held = self
            .store
            .subject_key(user)
            .await?
            .is_some_and(|k| k.hold.is_some());
        if hold.is_none() && !held {
            return Err(Error::Conflict(format!("{user} is not under legal hold")));
        }
        // The event names the subject, so their key exists (it is made first) by the time
        // the hold is written.
        let cs = Changeset::new()
            .write(Write::Privacy(PrivacyWrite::SetHold {
                subject: user.to_string(),
                hold: hold.clone(),
            }))
            .event(
                self.event(actor, action, subject("user", user))
                    .data(json!({ "hold_reason": hold.as_ref().map(|h| h.reason.clone()) })),
            );
        self.store.commit(cs).await?;
        self.privacy_status(actor, user).await
    }

    /// Erases a data subject (GDPR Art. 17): their key is destroyed, so every audit value
    /// sealed under it reads `[erased]` while the chain still verifies; their name and free
    /// text leave the operational tables. Refused while they may still sign in (disable them
    /// first), hold a grant or wait on a request, or are under legal hold.
    pub async fn privacy_erase(&self, actor: &Actor, user: &str, reason: &str) -> Result<Erasure> {
        self.require_admin(actor, AdminAction::ManageUsers, "privacy.erase")
            .await?;
        self.require_sealing()?;
        validate_name("user", user)?;
        let reason = trimmed("reason", Some(reason.to_string()), 500)?
            .ok_or_else(|| Error::invalid("reason", "is required: say why"))?;
        let refuse = |why: String| self.refuse(actor, "privacy.erase", subject("user", user), why);
        if user == actor.user {
            return Err(refuse(format!("{user} cannot erase themselves")).await);
        }
        if let Some(u) = self.store.user(user).await?
            && !u.disabled
        {
            return Err(refuse(format!(
                "{user} is an active user: disable them first (erasure is for people who left)"
            ))
            .await);
        }
        let live = self
            .store
            .grants(&GrantFilter {
                user: Some(user.to_string()),
                ..Default::default()
            })
            .await?
            .into_iter()
            .filter(|g| matches!(g.state, GrantState::Active | GrantState::Scheduled))
            .count();
        let pending = self
            .store
            .requests(&RequestFilter {
                requester: Some(user.to_string()),
                state: Some(RequestState::Pending),
                ..Default::default()
            })
            .await?
            .len();
        if live + pending > 0 {
            return Err(refuse(format!(
                "{user} has {live} live grant(s) and {pending} pending request(s): revoke and \
                 deny them first"
            ))
            .await);
        }
        let key = self.store.subject_key(user).await?;
        if let Some(h) = key.as_ref().and_then(|k| k.hold.as_ref()) {
            return Err(refuse(format!(
                "{user} is under legal hold since {} ({}): lift it first",
                h.at, h.reason
            ))
            .await);
        }
        // Without a key yet (nothing of theirs sealed so far) but still in the directory, the
        // event makes one, and the erasure scrubs their rows.
        let key_id = match key {
            Some(k) => k.key_id,
            None if self.store.user(user).await?.is_none() => {
                return Err(Error::NotFound(format!(
                    "personal data of {user} (erased already, or never known here)"
                )));
            }
            None => {
                self.store
                    .commit(Changeset::new().event(self.event(
                        actor,
                        "privacy.subject_keyed",
                        subject("user", user),
                    )))
                    .await?;
                self.store
                    .subject_key(user)
                    .await?
                    .ok_or_else(|| Error::Internal(format!("no key was made for {user}")))?
                    .key_id
            }
        };
        let pseudonym = pseudonym(&key_id);
        let cs = Changeset::new()
            .write(Write::Privacy(PrivacyWrite::Erase {
                subject: user.to_string(),
                pseudonym: pseudonym.clone(),
            }))
            .event(
                self.event(actor, "privacy.erased", subject("user", user))
                    .data(json!({ "key_id": key_id, "pseudonym": pseudonym, "why": reason })),
            );
        let events = self.commit_identity(cs).await?;
        Ok(Erasure {
            user: user.to_string(),
            key_id,
            pseudonym,
            event_seq: events.first().map_or(0, |e| e.seq),
        })
    }
}
