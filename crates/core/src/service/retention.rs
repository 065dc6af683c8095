//! Audit retention: the oldest events, once archived to a segment that verifies on its own
//! (`pedm audit archive`), pruned from the database — their content goes, their hashes stay,
//! and an `audit.pruned` event records what went, so a verifier can tell a pruning from a
//! removal. The Merkle arithmetic (peaks, root) is the caller's (`pedm-audit`); this checks
//! the rules.

use super::*;
use crate::audit::{PRUNED_STATE, PrunedPrefix};
use crate::integration::{IntegrationEntry, IntegrationWrite};

impl ControlPlane {
    /// `[audit] retention`: events older than this may be archived and pruned.
    pub fn with_audit_retention(mut self, secs: Option<i64>) -> Self {
        self.audit_retention_secs = secs;
        self
    }

    pub fn audit_retention_secs(&self) -> Option<i64> {
        self.audit_retention_secs
    }

    /// The pruned start of the log, if any (for exports and verifiers).
    pub async fn pruned_prefix(&self) -> Result<Option<PrunedPrefix>> {
        let Some(e) = self
            .store
            .integration_entry(PRUNED_STATE.0, PRUNED_STATE.1)
            .await?
        else {
            return Ok(None);
        };
        serde_json::from_str(&e.value)
            .map(Some)
            .map_err(|e| Error::Internal(format!("the pruned audit state is unreadable: {e}")))
    }

    /// Prunes events `1..=prefix.through` (their archive verified by the caller, their root
    /// checked against the signed checkpoint of that size). Refused (audited) without a
    /// retention period, for events younger than it, while any legal hold is set, or for a
    /// range not beyond what is pruned already.
    pub async fn prune_audit(&self, actor: &Actor, prefix: PrunedPrefix) -> Result<PrunedPrefix> {
        self.require_admin(actor, AdminAction::ManagePolicies, "audit.prune")
            .await?;
        let refuse = |why: String| self.refuse(actor, "audit.prune", None, why);
        let Some(retention) = self.audit_retention_secs else {
            return Err(refuse(
                "no retention period is configured ([audit] retention): nothing may be pruned"
                    .into(),
            )
            .await);
        };
        let after = self.pruned_prefix().await?.map_or(0, |p| p.through);
        if prefix.through <= after {
            return Err(Error::Conflict(format!(
                "events 1..={after} are pruned already; nothing up to {} is left",
                prefix.through
            )));
        }
        let last = self
            .store
            .audit_events(&AuditFilter {
                after_seq: Some(prefix.through - 1),
                limit: Some(1),
                sealed: true,
                ..Default::default()
            })
            .await?
            .into_iter()
            .next()
            .filter(|e| e.seq == prefix.through)
            .ok_or_else(|| Error::NotFound(format!("audit event {}", prefix.through)))?;
        let cutoff = self
            .now()
            .checked_sub(jiff::SignedDuration::from_secs(retention))
            .map_err(|e| Error::Internal(e.to_string()))?;
        if last.at >= cutoff {
            return Err(refuse(format!(
                "event {} is from {}, within the retention period ({}): it must be kept",
                prefix.through,
                last.at,
                format_duration(retention)
            ))
            .await);
        }
        let holds = self.store.legal_holds().await?;
        if !holds.is_empty() {
            let who: Vec<String> = holds
                .iter()
                .map(|k| {
                    format!(
                        "{} ({})",
                        k.subject,
                        k.hold.as_ref().map_or("", |h| &h.reason)
                    )
                })
                .collect();
            return Err(refuse(format!(
                "legal hold on {}: the log is kept whole until it is lifted",
                who.join(", ")
            ))
            .await);
        }
        let prefix = PrunedPrefix {
            at: self.now(),
            by: actor.user.clone(),
            ..prefix
        };
        let state = serde_json::to_string(&prefix)
            .map_err(|e| Error::Internal(format!("encoding the pruned state: {e}")))?;
        let cs = Changeset::new()
            .write(Write::PruneAudit {
                after,
                through: prefix.through,
            })
            .write(Write::Integration(IntegrationWrite::Put(
                IntegrationEntry {
                    integration: PRUNED_STATE.0.into(),
                    key: PRUNED_STATE.1.into(),
                    value: state,
                    expires_at: None,
                },
            )))
            .event(self.event(actor, "audit.pruned", None).data(json!({
                "through": prefix.through,
                "root": prefix.root,
                "last_hash": prefix.hash,
                "archive_sha256": prefix.archive_sha256,
                "retention": format_duration(retention),
            })));
        self.store.commit(cs).await?;
        Ok(prefix)
    }
}
