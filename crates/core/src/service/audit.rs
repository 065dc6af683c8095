//! Authorisation for the audit-log operations whose cryptography lives outside the core
//! (checkpoints, proofs, exports): the server asks here before it reads or signs.

use super::{ControlPlane, Result};
use crate::decision::AdminAction;
use crate::model::Actor;

impl ControlPlane {
    /// Fails (and records the refusal as `audit.read`) unless `actor` holds `read_audit`.
    pub async fn require_audit_reader(&self, actor: &Actor) -> Result<()> {
        self.require_admin(actor, AdminAction::ReadAudit, "audit.read")
            .await
    }

    /// Whether `actor` holds an administrative right, asked without recording anything: for
    /// what a page offers (each action asks again, and records a refusal).
    pub fn may(&self, actor: &Actor, right: AdminAction) -> bool {
        self.holds(actor, right)
    }
}
