//! Access reviews over HTTP: campaigns started, read and closed, items kept or revoked; and
//! the owners and review dates of the policies in force.
//! Parse, call the control plane, shape the answer.

use super::AppState;
use super::error::ApiResult;
use super::extract::{Body, Caller, Path, Query};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use pedm_api::ErrorBody;
use pedm_api::review::*;
use pedm_core::access_review::{NewCampaign, ReviewScope};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(start_review, list_reviews))
        .routes(routes!(get_review))
        .routes(routes!(close_review))
        .routes(routes!(decide_item))
        .routes(routes!(policy_owners))
}

/// Each policy in force with its `@owner` and `@review_by` and whether it is overdue
/// (policy managers and auditors); `overdue=true`: only those past their review date.
#[utoipa::path(get, path = "/policies/owners", tag = "policies", params(OwnersQuery),
    responses((status = 200, body = Vec<PolicyOwnership>), (status = 403, body = ErrorBody)))]
async fn policy_owners(
    State(s): State<AppState>,
    c: Caller,
    Query(q): Query<OwnersQuery>,
) -> ApiResult<Json<Vec<PolicyOwnership>>> {
    Ok(Json(
        s.cp.policy_owners(&c.actor, q.overdue.unwrap_or(false))
            .await?,
    ))
}

/// Open an access review campaign (`manage_grants`): every eligibility, group membership,
/// delegation, external account and standing privilege in scope becomes an item for its
/// reviewer, with its usage; unused ones are pre-marked for removal.
#[utoipa::path(post, path = "/reviews", tag = "reviews", request_body = StartReview,
    responses((status = 201, body = CampaignView), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn start_review(
    State(s): State<AppState>,
    c: Caller,
    Body(b): Body<StartReview>,
) -> ApiResult<(StatusCode, Json<CampaignView>)> {
    let due_in_secs = super::routes::parse_duration_field("due", &b.due)?;
    let new = NewCampaign {
        name: b.name,
        scope: ReviewScope {
            kinds: b.kinds,
            targets: b.targets,
        },
        due_in_secs,
        default_action: b.default.unwrap_or(DefaultAction::Revoke),
        reviewers: b.reviewers,
        escalate_to: b.escalate_to,
        unused_days: b.unused_days,
    };
    let view = s.cp.start_review(&c.actor, new).await?;
    Ok((StatusCode::CREATED, Json(view)))
}

/// Campaigns, newest first: all for admins and auditors, those with items for the caller
/// otherwise.
#[utoipa::path(get, path = "/reviews", tag = "reviews",
    responses((status = 200, body = Vec<Campaign>), (status = 403, body = ErrorBody)))]
async fn list_reviews(State(s): State<AppState>, c: Caller) -> ApiResult<Json<Vec<Campaign>>> {
    Ok(Json(s.cp.list_reviews(&c.actor).await?))
}

/// A campaign (by id or name) with the items the caller may see (`mine=true`: only theirs).
#[utoipa::path(get, path = "/reviews/{campaign}", tag = "reviews",
    params(("campaign" = String, Path), ReviewQuery),
    responses((status = 200, body = CampaignView), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn get_review(
    State(s): State<AppState>,
    c: Caller,
    Path(campaign): Path<String>,
    Query(q): Query<ReviewQuery>,
) -> ApiResult<Json<CampaignView>> {
    Ok(Json(
        s.cp.review_view(&c.actor, &campaign, q.mine.unwrap_or(false))
            .await?,
    ))
}

/// End a campaign before its due date (`manage_grants`): undecided items take its default,
/// revoked eligibilities become one policy proposal.
#[utoipa::path(post, path = "/reviews/{campaign}/close", tag = "reviews",
    params(("campaign" = String, Path)),
    responses((status = 200, body = CampaignView), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn close_review(
    State(s): State<AppState>,
    c: Caller,
    Path(campaign): Path<String>,
) -> ApiResult<Json<CampaignView>> {
    Ok(Json(s.cp.close_review(&c.actor, &campaign).await?))
}

/// Keep or revoke one item, with a comment (its reviewer, or `manage_grants`; never the
/// person under review). A revocation takes effect at once.
#[utoipa::path(post, path = "/review-items/{id}/decide", tag = "reviews", request_body = DecideItem,
    params(("id" = Uuid, Path)),
    responses((status = 200, body = ReviewItem), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn decide_item(
    State(s): State<AppState>,
    c: Caller,
    Path(id): Path<Uuid>,
    Body(b): Body<DecideItem>,
) -> ApiResult<Json<ReviewItem>> {
    Ok(Json(
        s.cp.decide_review_item(&c.actor, id, b.decision, Some(b.comment))
            .await?,
    ))
}
