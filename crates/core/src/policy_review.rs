//! Two-person control of policy changes: a policy set applied while
//! `policy.require_approvals = N` (N > 0) is stored as a *proposal* on top of the version in
//! force, and takes effect only once N admins other than its author approved it.
//!
//! Proposals have their own sequence of numbers (1, 2, ...), distinct from policy versions:
//! several may wait at once, each naming the version it was written against (`base_version`).
//! Only a proposal whose base is still the version in force can take effect, and it becomes
//! exactly `base_version + 1` (the store refuses any other number), so a proposal approved after
//! another change took effect is refused instead of silently undoing that change.

use crate::model::PolicySource;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ProposalState {
    /// Waiting for approvals.
    Pending,
    /// Approved by enough admins: it is (or was) a policy version, `applied_version`.
    Applied,
    /// Rejected: it never takes effect.
    Rejected,
}

impl ProposalState {
    pub fn as_str(self) -> &'static str {
        match self {
            ProposalState::Pending => "pending",
            ProposalState::Applied => "applied",
            ProposalState::Rejected => "rejected",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(ProposalState::Pending),
            "applied" => Some(ProposalState::Applied),
            "rejected" => Some(ProposalState::Rejected),
            _ => None,
        }
    }
}

impl std::fmt::Display for ProposalState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A change to who decides approvals, held for the same approvals as a policy change. Only
/// additions are held: taking someone out of an approver group or their admin rights away
/// never widens anyone's power, and must be quick in an incident.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ApproverChange {
    /// Add `user` to `group`, a group that decides approvals.
    GroupMember { group: String, user: String },
    /// Make `user` an administrator.
    Admin { user: String },
}

impl ApproverChange {
    /// The user the change is about.
    pub fn user(&self) -> &str {
        match self {
            ApproverChange::GroupMember { user, .. } | ApproverChange::Admin { user } => user,
        }
    }
}

impl std::fmt::Display for ApproverChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApproverChange::GroupMember { group, user } => {
                write!(f, "add {user} to approver group {group}")
            }
            ApproverChange::Admin { user } => write!(f, "make {user} an administrator"),
        }
    }
}

/// One admin's approval of a proposal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProposalApproval {
    pub approver: String,
    pub at: Timestamp,
    pub comment: Option<String>,
}

/// A policy set waiting for (or past) the approvals that put it in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PolicyProposal {
    /// The proposal's number (its own sequence, not a policy version).
    pub id: i64,
    /// The policy version in force when it was proposed; it takes effect as `base_version + 1`
    /// and only while `base_version` is still in force.
    pub base_version: i64,
    pub created_at: Timestamp,
    pub created_by: String,
    pub comment: Option<String>,
    /// SHA-256 over the sources, hex (as for policy versions).
    pub digest: String,
    pub sources: Vec<PolicySource>,
    /// Unified diff against `base_version`.
    pub diff: String,
    /// Approvals needed (from `policy.require_approvals` when it was proposed).
    pub required: i64,
    pub state: ProposalState,
    /// Oldest first; one per approver.
    pub approvals: Vec<ProposalApproval>,
    /// When it was applied or rejected, by whom (the last approver, or the rejecter).
    pub decided_at: Option<Timestamp>,
    pub decided_by: Option<String>,
    /// The rejecter's comment.
    pub decision_comment: Option<String>,
    /// The policy version it became.
    pub applied_version: Option<i64>,
    /// Set for a change to who approves instead of a policy set (`sources` is then empty and
    /// the proposal never goes stale).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change: Option<ApproverChange>,
    /// Pending, but `base_version` is no longer the version in force: it can only be
    /// rejected (apply it again on top of the current version). Computed when read, not
    /// stored.
    #[serde(default)]
    pub stale: bool,
}

/// Row changes about proposals (see [`crate::store::Write::PolicyReview`]).
#[derive(Debug, Clone)]
pub enum PolicyReviewWrite {
    /// Stores a new pending proposal (its `approvals` are ignored). Fails with AlreadyExists
    /// if the number is taken.
    Propose(Box<PolicyProposal>),
    /// Records one approval. Fails with Conflict unless the proposal is pending and has
    /// exactly `seen` approvals (so of two concurrent approvals one is refused and retried,
    /// and none is lost), or if this approver approved it already; NotFound if absent.
    Approve {
        id: i64,
        approval: ProposalApproval,
        seen: i64,
    },
    /// Applies or rejects it. Fails with Conflict unless it is still pending, NotFound if
    /// absent. `Pending` as the new state is a Backend error.
    Close {
        id: i64,
        state: ProposalState,
        at: Timestamp,
        by: String,
        comment: Option<String>,
        applied_version: Option<i64>,
    },
}
