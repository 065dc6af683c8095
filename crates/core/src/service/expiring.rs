//! Warnings before a grant ends (`[notify] expiry_warning`): once per grant and end (an
//! extension warns again before the new end), across instances (the warning is a claim in
//! `integration_state` committed with its `grant.expiry_warned` event and outbox notice).

use super::{ControlPlane, Result, subject};
use crate::integration::{IntegrationEntry, IntegrationWrite};
use crate::model::Actor;
use crate::notice::Notice;
use crate::store::{Changeset, StoreError, Write};
use jiff::SignedDuration;
use serde_json::json;

/// Grants warned per pass at most (the next pass takes the rest).
const BATCH: u32 = 1000;

impl ControlPlane {
    /// Warns holders `secs` before their grants end.
    pub fn with_expiry_warning(mut self, secs: i64) -> Self {
        self.expiry_warning_secs = Some(secs).filter(|s| *s > 0);
        self
    }

    /// Warns the holders of active grants that end within the warning time and have not been
    /// warned for this end. Grants that last no longer than the warning time are not warned.
    pub async fn warn_expiring(&self) -> Result<usize> {
        let Some(lead) = self.expiry_warning_secs.map(SignedDuration::from_secs) else {
            return Ok(0);
        };
        let now = self.now();
        let sys = Actor::system();
        let mut warned = 0;
        for g in self.store.overdue_grants(now + lead, BATCH).await? {
            if g.expires_at <= now || g.expires_at - lead <= g.starts_at {
                continue;
            }
            let claim = IntegrationWrite::Claim {
                entry: IntegrationEntry {
                    integration: "grant".into(),
                    key: format!("expiry-warned:{}:{}", g.id, g.expires_at.as_second()),
                    value: now.to_string(),
                    expires_at: Some(g.expires_at + SignedDuration::from_hours(24)),
                },
                now,
            };
            let left = g.expires_at.as_second() - now.as_second();
            let cs = Changeset::new()
                .write(Write::Integration(claim))
                .event(
                    self.event(&sys, "grant.expiry_warned", subject("grant", g.id))
                        .data(json!({
                            "user": g.user, "target": g.target, "role": g.role,
                            "expires_at": g.expires_at, "seconds_left": left,
                        })),
                )
                .notice(Notice::GrantExpiring(g));
            match self.commit(cs).await {
                Ok(_) => warned += 1,
                // Warned already (here or by another instance).
                Err(StoreError::AlreadyExists(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(warned)
    }
}
