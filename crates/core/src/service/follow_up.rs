//! Reminders and escalation of requests nobody answers (the deciding permit's
//! `@remind_after`, `@escalate_after`, `@escalate_to`).
//!
//! Each step happens once per request across every instance sharing the database: its claim
//! (`integration_state`, key `reminded:<id>` / `escalated:<id>`) and its audit event commit
//! together, and the instance that loses the claim does nothing. Steps are found by time, so a
//! restart catches up on what came due while the server was down. Escalation's effect on who
//! may decide is a function of time alone (see `FollowUp::escalated_to`); the step here only
//! tells people.

use super::{ControlPlane, Result, subject};
use crate::audit::NewAuditEvent;
use crate::integration::{IntegrationEntry, IntegrationWrite};
use crate::model::*;
use crate::notice::Notice;
use crate::store::{Changeset, StoreError, Write};
use jiff::{SignedDuration, Timestamp};
use serde_json::json;

const CLAIMS: &str = "follow-up";

impl ControlPlane {
    /// Runs the reminders and escalations that are due; returns when the next one is.
    pub async fn follow_up_due(&self) -> Result<Option<Timestamp>> {
        let now = self.now();
        let (pending, approvals) = self.pending_with_approvals().await?;
        let waiting: Vec<Request> = pending
            .into_iter()
            .filter(|r| r.follow_up.is_some() && r.pending_until > now)
            .collect();
        if waiting.is_empty() {
            return Ok(None);
        }
        let mut next: Option<Timestamp> = None;
        for r in waiting {
            let Some(f) = r.follow_up.clone() else {
                continue;
            };
            for (step, after) in [
                ("request.reminded", f.remind_after_secs),
                ("request.escalated", f.escalate_after_secs),
            ] {
                let Some(after) = after else { continue };
                let due = r.created_at + SignedDuration::from_secs(after);
                if due > now {
                    next = Some(next.map_or(due, |n| n.min(due)));
                    continue;
                }
                let given = approvals.get(&r.id).map(Vec::as_slice).unwrap_or(&[]);
                let waiting_for = r
                    .outstanding(given)
                    .into_iter()
                    .next()
                    .map(|(_, t)| {
                        format!(
                            "{} of {}",
                            t.required,
                            t.group.as_deref().unwrap_or("any approver")
                        )
                    })
                    .unwrap_or_default();
                let escalated_to = (step == "request.escalated")
                    .then(|| f.escalate_to.clone())
                    .flatten();
                let claim = IntegrationWrite::Claim {
                    entry: IntegrationEntry {
                        integration: CLAIMS.into(),
                        key: format!("{step}:{}", r.id),
                        value: now.to_string(),
                        // Past the request's own deadline nothing asks again.
                        expires_at: Some(r.pending_until + SignedDuration::from_hours(24)),
                    },
                    now,
                };
                let ev = NewAuditEvent::new(now, SYSTEM_ACTOR, step, subject("request", r.id))
                    .data(json!({
                        "after_secs": after, "waiting_for": waiting_for,
                        "escalated_to": escalated_to, "requester": r.requester,
                    }));
                let cs = Changeset::new()
                    .write(Write::Integration(claim))
                    .event(ev)
                    .notice(Notice::RequestFollowUp {
                        request: Box::new(r.clone()),
                        step: step.to_string(),
                        waiting_for,
                        escalated_to,
                    });
                match self.commit(cs).await {
                    Ok(_) => {
                        metrics::counter!("pedm_request_follow_ups_total", "step" => step)
                            .increment(1);
                    }
                    // Another instance took this step.
                    Err(StoreError::AlreadyExists(_)) => {
                        metrics::counter!(
                            "pedm_request_follow_ups_taken_elsewhere_total", "step" => step
                        )
                        .increment(1);
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(next)
    }
}
