//! What the control plane tells the outside world after a change is committed (webhooks,
//! chat, pagers). Observers must not block: they queue and return.
//!
//! A [durable](Notice::durable) notice is also written to the outbox in the transaction of
//! the change that causes it (`Changeset::notice`), so integrations deliver it at least once
//! even if the process dies right after the commit.

use crate::model::{Grant, Request};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Notice {
    /// A request waits for approvers.
    RequestPending(Request),
    /// A request was approved, denied, cancelled or expired.
    RequestDecided(Request),
    /// A request still waits: its approvers are reminded, or it is escalated to a group.
    RequestFollowUp {
        request: Box<Request>,
        /// `request.reminded` or `request.escalated`.
        step: String,
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
    /// An active grant ends within the configured warning time: its holder may extend it.
    GrantExpiring(Grant),
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
    /// A request scored at least `policy.risk_alert_score` ([`crate::risk`]): high
    /// severity, whatever the policies decided of it.
    RiskyRequest(Box<Request>),
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
        step: String,
        actor: String,
        proposal: Box<crate::policy_review::PolicyProposal>,
    },
    /// A delegated task run from pedmd ended on its host (or was refused there).
    TaskRunFinished {
        run: uuid::Uuid,
        host: String,
        user: String,
        task: String,
        exit_code: Option<i32>,
        refused: Option<String>,
    },
    /// An external account expires within the notice lead time: its sponsor should extend
    /// it or let it go. Sent once per expiry.
    ExternalExpiring {
        user: String,
        sponsor: String,
        expires_at: jiff::Timestamp,
    },
    /// An access review step: reviewers told of their items (`review.started`), reminded of
    /// undecided ones (`review.reminder`), the escalation group handed them
    /// (`review.escalated`), each with `reviewer` and how many wait; or the campaign ended
    /// (`review.closed`, no reviewer, `pending` 0).
    AccessReview {
        step: String,
        campaign: uuid::Uuid,
        name: String,
        reviewer: Option<crate::delegation::Delegatee>,
        pending: u64,
        due_at: jiff::Timestamp,
    },
    /// A recorded session lasted far longer than its person's usual on that host and account
    /// (high severity).
    LongSession {
        session: uuid::Uuid,
        host: String,
        user: String,
        run_as: String,
        duration_secs: i64,
        usual_secs: i64,
    },
    /// A change to users, groups, targets or roles made the policies in force break a
    /// configured property (high severity).
    PropertyBroken {
        property: String,
        counterexample: String,
    },
    /// A policy's review date (`@review_by`) has passed: its owner should review it.
    PolicyReviewOverdue {
        policy: String,
        file: String,
        owner: Option<String>,
        review_by: String,
    },
    /// An external account reached its expiry: it can no longer sign in and its grants ended.
    ExternalExpired {
        user: String,
        sponsor: String,
        expires_at: jiff::Timestamp,
    },
}

impl Notice {
    /// Whether integrations must see it even across a crash (everything but the wake-ups of
    /// host agents, which fetch their state again anyway).
    pub fn durable(&self) -> bool {
        !matches!(self, Notice::DelegationsChanged | Notice::LocksChanged)
    }
}

/// A durable notice as kept in the outbox: its place in the outbox (the idempotency key of
/// its deliveries) and the audit event it came with.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxItem {
    /// Increases in commit order; never reused.
    pub seq: i64,
    /// The last audit event of the changeset that wrote it (`None` without events).
    pub event_seq: Option<i64>,
    pub at: jiff::Timestamp,
    /// `None` when the stored notice no longer reads as one (written by another version):
    /// skipped and counted, never guessed at.
    pub notice: Option<Notice>,
}

pub trait Observer: Send + Sync + 'static {
    fn notice(&self, notice: &Notice);
}
