//! The notification itself: what happened, how urgent, and the details.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Well-known notification kinds. Kinds are dotted strings so that sinks can
/// subscribe to a family with a prefix (`"request."`).
pub mod kinds {
    /// A new request is waiting for approval.
    pub const REQUEST_PENDING: &str = "request.pending";
    /// A request still waits: its approvers are reminded.
    pub const REQUEST_REMINDED: &str = "request.reminded";
    /// A request still waits: it is escalated to its escalation group.
    pub const REQUEST_ESCALATED: &str = "request.escalated";
    /// A request was approved, denied, cancelled or expired unanswered.
    pub const REQUEST_DECIDED: &str = "request.decided";
    /// A grant became active on its target.
    pub const GRANT_STARTED: &str = "grant.started";
    /// An active grant's expiry moved later (an approved extension).
    pub const GRANT_EXTENDED: &str = "grant.extended";
    /// A grant was approved for a window that starts later (scheduled access).
    pub const GRANT_SCHEDULED: &str = "grant.scheduled";
    /// An active grant ends soon (`[notify] expiry_warning` before its end).
    pub const GRANT_EXPIRING: &str = "grant.expiring";
    /// A grant was released, revoked or expired.
    pub const GRANT_ENDED: &str = "grant.ended";
    /// An emergency elevation was granted without approval.
    pub const BREAK_GLASS: &str = "break_glass";
    /// A target refuses to take a privilege away: it stays until someone intervenes.
    pub const REVOKE_FAILING: &str = "provision.revoke_failing";
    /// A target refuses to remove a standing privilege pedm found as drift.
    pub const DRIFT_REMOVAL_REFUSED: &str = "provision.drift_removal_refused";
    /// A live grant's privilege was missing from its target and could not be put back.
    pub const GRANT_PRIVILEGE_MISSING: &str = "provision.privilege_missing";
    /// A host agent holds a record the server refused to take.
    pub const AGENT_UNDELIVERED: &str = "agent.undelivered";
    /// An external account expires soon: its sponsor should extend it or let it go.
    pub const EXTERNAL_EXPIRING: &str = "user.external_expiring";
    /// An external account reached its expiry.
    pub const EXTERNAL_EXPIRED: &str = "user.external_expired";
    /// A reported exec matched an alert pattern (high severity).
    pub const EXEC_ALERT: &str = "exec.alert";
    /// A request's risk score reached `policy.risk_alert_score` (high severity).
    pub const REQUEST_RISKY: &str = "request.risky";
}

/// How urgent a notification is. Ordered: `Info < High`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Routine workflow events.
    #[default]
    Info,
    /// Needs attention now (break-glass, revocation failures, ...).
    High,
}

impl Severity {
    /// Lower-case name as used on the wire and in configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::High => "high",
        }
    }
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One notification. The generic webhook payload is exactly this, as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// Unique per notification (UUID v7). Sent as `X-Pedm-Delivery` and kept
    /// the same across retries, so receivers can deduplicate.
    pub id: Uuid,
    /// What happened, e.g. `request.pending` (see [`kinds`]).
    pub kind: String,
    /// How urgent it is.
    pub severity: Severity,
    /// When it happened (RFC 3339 on the wire).
    pub at: jiff::Timestamp,
    /// One human-readable line.
    pub summary: String,
    /// Structured details (request id, requester, target, role, ...).
    pub data: serde_json::Value,
}

impl Notification {
    /// A new notification with a fresh v7 id, stamped now.
    pub fn new(
        kind: impl Into<String>,
        severity: Severity,
        summary: impl Into<String>,
        data: serde_json::Value,
    ) -> Self {
        Notification {
            id: Uuid::now_v7(),
            kind: kind.into(),
            severity,
            at: jiff::Timestamp::now(),
            summary: summary.into(),
            data,
        }
    }
}
