//! What the control plane tells the outside world after a change is committed (webhooks,
//! chat, pagers). Observers must not block: they queue and return.

use crate::model::{Grant, Request};

#[derive(Debug, Clone)]
pub enum Notice {
    /// A request waits for approvers.
    RequestPending(Request),
    /// A request was approved, denied, cancelled or expired.
    RequestDecided(Request),
    /// A request still waits: its approvers are reminded, or it is escalated to a group.
    RequestFollowUp {
        request: Box<Request>,
        /// `request.reminded` or `request.escalated`.
        step: &'static str,
        /// What it waits for, e.g. `1 of security`.
        waiting_for: String,
        /// The escalation group (for `request.escalated`).
        escalated_to: Option<String>,
    },
    GrantStarted(Grant),
    /// A grant approved for a window that starts later (scheduled access): nothing is
    /// switched on until then, when `GrantStarted` follows.
    GrantScheduled(Grant),
    /// An active grant's expiry moved later (an approved extension); its privilege stayed.
    GrantExtended(Grant),
    GrantEnded(Grant),
    /// Emergency access was granted without approval: high severity.
    BreakGlass {
        request: Box<Request>,
        grant: Box<Grant>,
    },
    /// A privilege could not be taken away from a target and the target refuses (not merely
    /// unreachable): it stays in place until someone intervenes. High severity; repeated at
    /// every failed attempt.
    RevokeFailing {
        grant: Box<Grant>,
        error: String,
    },
    /// A target refused to remove a standing privilege found as drift: it stays until
    /// someone intervenes. High severity.
    DriftRemovalRefused {
        target: String,
        account: String,
        privilege: String,
        error: String,
    },
    /// A live grant's privilege was gone from its target (taken away by hand) and could not
    /// be put back: the holder lacks what pedm says they have. High severity.
    GrantPrivilegeMissing {
        grant: Box<Grant>,
        error: String,
    },
    /// A host agent holds a record (an exec report or a session) that the server refused:
    /// it is kept on the host, but is missing here. High severity.
    AgentUndelivered {
        host: String,
        item: uuid::Uuid,
        kind: String,
        error: String,
    },
    /// A task was defined or a delegation created or ended: host agents should fetch what
    /// they may now run.
    DelegationsChanged,
    /// A lock was added or lifted: host agents should fetch their grants again.
    LocksChanged,
    /// A reported exec matched an alert (`[[alerts.exec]]`): high severity.
    ExecAlert {
        alert: String,
        host: String,
        user: String,
        argv: Vec<String>,
        allowed: bool,
        session: Option<uuid::Uuid>,
    },
    /// A policy proposal was made, approved, rejected or applied (`step` is the audit action:
    /// `policy.proposed`, `policy.approved`, `policy.rejected`, `policy.applied`): approvers
    /// should look at it.
    PolicyProposal {
        step: &'static str,
        actor: String,
        proposal: Box<crate::policy_review::PolicyProposal>,
    },
    /// An external account expires within the notice lead time: its sponsor should extend
    /// it or let it go. Sent once per expiry.
    ExternalExpiring {
        user: String,
        sponsor: String,
        expires_at: jiff::Timestamp,
    },
    /// An external account reached its expiry: it can no longer sign in and its grants ended.
    ExternalExpired {
        user: String,
        sponsor: String,
        expires_at: jiff::Timestamp,
    },
}

pub trait Observer: Send + Sync + 'static {
    fn notice(&self, notice: &Notice);
}
