//! Compliance reports built from store reads.

use super::{ControlPlane, Result};
use crate::decision::AdminAction;
use crate::model::{Actor, ApprovalDecision, GrantFilter, GrantState};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// One elevation (grant) in a report window: who held what, when, for how long, why, and who
/// let them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ElevationRow {
    pub grant_id: Uuid,
    pub request_id: Uuid,
    pub user: String,
    pub target: String,
    pub role: String,
    /// When the request was made.
    pub requested_at: Option<Timestamp>,
    pub started_at: Timestamp,
    /// When it ended; `None` while active.
    pub ended_at: Option<Timestamp>,
    /// Scheduled end.
    pub expires_at: Timestamp,
    /// Seconds the privilege was held (so far, for an active grant).
    pub held_secs: i64,
    pub state: GrantState,
    pub justification: Option<String>,
    pub ticket: Option<String>,
    /// Who approved, in order; empty when granted by policy.
    pub approvers: Vec<String>,
    /// Who decided the request (an approver, or `policy`).
    pub decided_by: Option<String>,
    pub break_glass: bool,
    pub ended_by: Option<String>,
    pub end_reason: Option<String>,
    /// Host sessions recorded under the grant.
    #[serde(default)]
    pub sessions: u64,
}

impl ControlPlane {
    /// Every grant that was held at some moment in `[since, now]`, oldest start first (needs
    /// `read_audit`).
    pub async fn elevation_report(
        &self,
        actor: &Actor,
        since: Timestamp,
    ) -> Result<Vec<ElevationRow>> {
        self.require_admin(actor, AdminAction::ReadAudit, "report.read")
            .await?;
        let now = self.now();
        let grants = self
            .store
            .grants(&GrantFilter {
                held_between: Some((since, now)),
                ..Default::default()
            })
            .await?;
        let mut rows = Vec::new();
        for g in grants {
            let g = g.as_of(now);
            let end = g.ended_at.unwrap_or(if g.state == GrantState::Active {
                now.min(g.expires_at)
            } else {
                g.expires_at
            });
            if end < since || g.starts_at > now {
                continue;
            }
            let request = self.store.request(g.request_id).await?;
            let approvals = self.store.approvals(g.request_id).await?;
            let mut approvals: Vec<_> = approvals
                .into_iter()
                .filter(|a| a.decision == ApprovalDecision::Approve)
                .collect();
            approvals.sort_by_key(|a| (a.tier, a.at));
            let sessions = self
                .store
                .sessions(&crate::host::SessionFilter {
                    grant: Some(g.id),
                    ..Default::default()
                })
                .await?
                .len() as u64;
            rows.push(ElevationRow {
                sessions,
                grant_id: g.id,
                request_id: g.request_id,
                user: g.user,
                target: g.target,
                role: g.role,
                requested_at: request.as_ref().map(|r| r.created_at),
                started_at: g.starts_at,
                ended_at: g.ended_at,
                expires_at: g.expires_at,
                held_secs: end.duration_since(g.starts_at).as_secs().max(0),
                state: g.state,
                justification: request.as_ref().map(|r| r.justification.clone()),
                ticket: request.as_ref().and_then(|r| r.ticket.clone()),
                approvers: approvals.into_iter().map(|a| a.approver).collect(),
                decided_by: request.as_ref().and_then(|r| r.decided_by.clone()),
                break_glass: request.as_ref().is_some_and(|r| r.break_glass),
                ended_by: g.ended_by,
                end_reason: g.end_reason,
            });
        }
        rows.sort_by_key(|r| (r.started_at, r.grant_id));
        Ok(rows)
    }
}
