//! Two-person control of policy changes over HTTP: the bodies and the client methods.
//!
//! | route | what |
//! |---|---|
//! | `POST /policies` | 200 with the version in force, or 202 with a proposal when changes need approvals |
//! | `GET /policies/proposals` | pending proposals (`?all=true`: every one), with their diffs |
//! | `GET /policies/proposals/{id}` | one proposal |
//! | `POST /policies/proposals/{id}/approve` | approve (never one's own); the last approval applies it |
//! | `POST /policies/proposals/{id}/reject` | reject, with a comment |
//! | `PUT /groups/{g}/members/{u}`, `PATCH /users/{u}` | 202 with a proposal when the change adds an approver or an admin |

use crate::ApplyPolicies;
use crate::client::{ApiError, Client};
use reqwest::Method;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

pub use pedm_core::policy_review::{
    ApproverChange, PolicyProposal, ProposalApproval, ProposalState,
};

// With the other wire types (`crate::types`): the client returns them too.
pub use crate::types::{Held, PolicySubmitted};

#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ProposalQuery {
    /// Every proposal (applied and rejected too), not only the pending ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all: Option<bool>,
}

/// A decision on a policy proposal: optional to approve, required to reject.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecideProposal {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

impl Client {
    /// Submits a policy set: applied at once, or stored as a proposal when the server
    /// requires approvals for policy changes.
    pub async fn submit_policies(&self, body: &ApplyPolicies) -> Result<PolicySubmitted, ApiError> {
        self.send(Method::POST, "/policies", body).await
    }
    pub async fn policy_proposals(&self, all: bool) -> Result<Vec<PolicyProposal>, ApiError> {
        self.get_q(
            "/policies/proposals",
            &ProposalQuery {
                all: all.then_some(true),
            },
        )
        .await
    }
    pub async fn policy_proposal(&self, id: i64) -> Result<PolicyProposal, ApiError> {
        self.get(&format!("/policies/proposals/{id}")).await
    }
    /// Approves a proposal; the returned proposal is `applied` if this was the last approval.
    pub async fn approve_policy_proposal(
        &self,
        id: i64,
        comment: Option<String>,
    ) -> Result<PolicyProposal, ApiError> {
        self.send(
            Method::POST,
            &format!("/policies/proposals/{id}/approve"),
            &DecideProposal { comment },
        )
        .await
    }
    /// Rejects a proposal (a comment is required); it never takes effect.
    pub async fn reject_policy_proposal(
        &self,
        id: i64,
        comment: &str,
    ) -> Result<PolicyProposal, ApiError> {
        self.send(
            Method::POST,
            &format!("/policies/proposals/{id}/reject"),
            &DecideProposal {
                comment: Some(comment.to_string()),
            },
        )
        .await
    }
}
