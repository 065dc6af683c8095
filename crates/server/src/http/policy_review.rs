//! Two-person control of policy changes over HTTP: pending proposals, approve, reject.
//! Parse, call the control plane, shape the answer.

use super::AppState;
use super::error::ApiResult;
use super::extract::{Body, Caller, Path, Query};
use axum::Json;
use axum::extract::State;
use pedm_api::ErrorBody;
use pedm_api::policy_review::{DecideProposal, PolicyProposal, ProposalQuery};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_policy_proposals))
        .routes(routes!(get_policy_proposal))
        .routes(routes!(approve_policy_proposal))
        .routes(routes!(reject_policy_proposal))
}

/// Policy proposals waiting for approval (every one with `all=true`), newest first, each
/// with its diff against the version it was written for and whether that is still in force.
#[utoipa::path(get, path = "/policies/proposals", tag = "policies", params(ProposalQuery),
    responses((status = 200, body = Vec<PolicyProposal>), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody)))]
async fn list_policy_proposals(
    State(s): State<AppState>,
    c: Caller,
    Query(q): Query<ProposalQuery>,
) -> ApiResult<Json<Vec<PolicyProposal>>> {
    Ok(Json(
        s.cp.list_policy_proposals(&c.actor, q.all.unwrap_or(false))
            .await?,
    ))
}

/// One policy proposal.
#[utoipa::path(get, path = "/policies/proposals/{id}", tag = "policies",
    params(("id" = i64, Path)),
    responses((status = 200, body = PolicyProposal), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn get_policy_proposal(
    State(s): State<AppState>,
    c: Caller,
    Path(id): Path<i64>,
) -> ApiResult<Json<PolicyProposal>> {
    Ok(Json(s.cp.get_policy_proposal(&c.actor, id).await?))
}

/// Approve a pending policy proposal (`manage_policies`; never one's own, once per admin).
/// The approval that completes the count puts the set in force as the next version; a
/// proposal written against a version no longer in force is refused (409).
#[utoipa::path(post, path = "/policies/proposals/{id}/approve", tag = "policies",
    request_body = DecideProposal, params(("id" = i64, Path)),
    responses((status = 200, body = PolicyProposal), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
async fn approve_policy_proposal(
    State(s): State<AppState>,
    c: Caller,
    Path(id): Path<i64>,
    Body(b): Body<DecideProposal>,
) -> ApiResult<Json<PolicyProposal>> {
    Ok(Json(
        s.cp.approve_policy_proposal(&c.actor, id, b.comment)
            .await?,
    ))
}

/// Reject a pending policy proposal, with a comment: it never takes effect.
#[utoipa::path(post, path = "/policies/proposals/{id}/reject", tag = "policies",
    request_body = DecideProposal, params(("id" = i64, Path)),
    responses((status = 200, body = PolicyProposal), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
async fn reject_policy_proposal(
    State(s): State<AppState>,
    c: Caller,
    Path(id): Path<i64>,
    Body(b): Body<DecideProposal>,
) -> ApiResult<Json<PolicyProposal>> {
    Ok(Json(
        s.cp.reject_policy_proposal(&c.actor, id, b.comment).await?,
    ))
}
