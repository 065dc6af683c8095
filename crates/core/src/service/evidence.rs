//! What a compliance evidence bundle is made of (see [`crate::evidence`]): the record of one
//! period, read for an auditor. The transport renders, signs and checkpoints it.

use super::report::ElevationRow;
use super::*;
use crate::access_review::CampaignView;
use crate::host::{Session, SessionFilter};
use crate::store::AuditFilter;

/// The record of `[since, until)`.
#[derive(Debug, Clone)]
pub struct EvidenceData {
    pub elevations: Vec<ElevationRow>,
    /// Break-glass requests made in the period, with their review.
    pub break_glass: Vec<Request>,
    /// Campaigns open at some moment of the period, with every item.
    pub reviews: Vec<CampaignView>,
    /// The version in force at `since` (if any), then every version applied in the period.
    pub policy_versions: Vec<PolicyVersion>,
    pub sessions: Vec<Session>,
    /// `provision.drift` and `provision.drift_removed` events of the period.
    pub drift: Vec<crate::audit::AuditEvent>,
}

impl ControlPlane {
    /// The record of `[since, until)` for an evidence bundle (needs `read_audit`; recorded as
    /// `report.evidence`).
    pub async fn evidence(
        &self,
        actor: &Actor,
        framework: &str,
        since: Timestamp,
        until: Timestamp,
    ) -> Result<EvidenceData> {
        self.require_admin(actor, AdminAction::ReadAudit, "report.evidence")
            .await?;
        if until <= since {
            return Err(Error::unprocessable("period", "ends before it starts"));
        }
        let mut elevations = self.elevation_report(actor, since).await?;
        elevations.retain(|r| r.started_at < until);
        let break_glass = self
            .store
            .requests(&RequestFilter {
                since: Some(since),
                ..Default::default()
            })
            .await?
            .into_iter()
            .filter(|r| r.break_glass && r.created_at < until)
            .collect();
        let mut reviews = vec![];
        for k in self.store.review_campaigns().await? {
            if k.created_at >= until || k.closed_at.is_some_and(|c| c < since) {
                continue;
            }
            let items = self.store.review_items(k.id).await?;
            reviews.push(CampaignView { campaign: k, items });
        }
        reviews.sort_by_key(|v| v.campaign.created_at);
        let versions = self.store.policy_versions().await?;
        let mut policy_versions: Vec<PolicyVersion> = versions
            .iter()
            .filter(|v| v.created_at < since)
            .max_by_key(|v| v.version)
            .cloned()
            .into_iter()
            .collect();
        policy_versions.extend(
            versions
                .into_iter()
                .filter(|v| v.created_at >= since && v.created_at < until),
        );
        policy_versions.sort_by_key(|v| v.version);
        let mut sessions: Vec<Session> = self
            .store
            .sessions(&SessionFilter {
                since: Some(since),
                until: Some(until),
                ..Default::default()
            })
            .await?;
        sessions.sort_by_key(|s| (s.started_at, s.id));
        let mut drift = vec![];
        for action in ["provision.drift", "provision.drift_removed"] {
            drift.extend(
                self.store
                    .audit_events(&AuditFilter {
                        action: Some(action.into()),
                        since: Some(since),
                        until: Some(until),
                        ..Default::default()
                    })
                    .await?,
            );
        }
        drift.sort_by_key(|e| e.seq);
        let ev = self
            .event(actor, "report.evidence", None)
            .data(json!({ "framework": framework, "since": since, "until": until }));
        self.store.commit(Changeset::new().event(ev)).await?;
        Ok(EvidenceData {
            elevations,
            break_glass,
            reviews,
            policy_versions,
            sessions,
            drift,
        })
    }
}
