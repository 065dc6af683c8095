//! Data subjects' rights over the audit log: erasure and legal holds (see
//! `pedm_core::privacy`). Parse, call the control plane, shape the answer.

use super::AppState;
use super::error::ApiResult;
use super::extract::{Body, Caller, Path};
use axum::Json;
use axum::extract::State;
use pedm_api::ErrorBody;
use pedm_api::privacy::*;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(privacy_status))
        .routes(routes!(privacy_hold))
        .routes(routes!(privacy_release))
        .routes(routes!(privacy_erase))
}

/// A data subject's key and legal hold (`manage_users`).
#[utoipa::path(get, path = "/privacy/subjects/{user}", tag = "privacy",
    params(("user" = String, Path)),
    responses((status = 200, body = PrivacyStatus), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody)))]
async fn privacy_status(
    State(s): State<AppState>,
    c: Caller,
    Path(user): Path<String>,
) -> ApiResult<Json<PrivacyStatus>> {
    Ok(Json(s.cp.privacy_status(&c.actor, &user).await?))
}

/// Put a data subject's personal data under legal hold (`manage_users`): erasure is refused
/// until the hold is lifted.
#[utoipa::path(post, path = "/privacy/hold", tag = "privacy", request_body = SubjectAct,
    responses((status = 200, body = PrivacyStatus), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn privacy_hold(
    State(s): State<AppState>,
    c: Caller,
    Body(b): Body<SubjectAct>,
) -> ApiResult<Json<PrivacyStatus>> {
    Ok(Json(
        s.cp.privacy_hold(&c.actor, &b.user, Some(&b.reason))
            .await?,
    ))
}

/// Lift a legal hold (`manage_users`).
#[utoipa::path(post, path = "/privacy/release", tag = "privacy", request_body = ReleaseHold,
    responses((status = 200, body = PrivacyStatus), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
async fn privacy_release(
    State(s): State<AppState>,
    c: Caller,
    Body(b): Body<ReleaseHold>,
) -> ApiResult<Json<PrivacyStatus>> {
    Ok(Json(s.cp.privacy_hold(&c.actor, &b.user, None).await?))
}

/// Erase a data subject (`manage_users`): their key is destroyed, so their personal data in
/// the audit log reads `[erased]` while the log still verifies; their name and free text
/// leave the other tables. Refused (403, audited) for an active user, one with live grants or
/// pending requests, or under legal hold.
#[utoipa::path(post, path = "/privacy/erase", tag = "privacy", request_body = SubjectAct,
    responses((status = 200, body = Erasure), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
async fn privacy_erase(
    State(s): State<AppState>,
    c: Caller,
    Body(b): Body<SubjectAct>,
) -> ApiResult<Json<Erasure>> {
    Ok(Json(
        s.cp.privacy_erase(&c.actor, &b.user, &b.reason).await?,
    ))
}
