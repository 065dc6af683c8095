//! Locks: `pedm lock add|list|lift` (see `pedm_core::lock`).

use super::AppState;
use super::error::{ApiErr, ApiResult};
use super::extract::{Body, Caller, Path, Query};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use pedm_api::ErrorBody;
use pedm_api::lock::*;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(add_lock, list_locks))
        .routes(routes!(lift_lock))
        .routes(routes!(kill_session))
}

/// End a live host session (`manage_grants`): the agent running it ends it within moments,
/// with the reason; the uploaded session's `ended_by` says so. 409 if it was uploaded (ended)
/// already.
#[utoipa::path(post, path = "/sessions/{id}/kill", tag = "sessions", request_body = KillSession,
    params(("id" = Uuid, Path)),
    responses((status = 200, body = Lock), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn kill_session(
    State(s): State<AppState>,
    c: Caller,
    Path(id): Path<Uuid>,
    Body(b): Body<KillSession>,
) -> ApiResult<Json<Lock>> {
    Ok(Json(s.cp.kill_session(&c.actor, id, &b.reason).await?))
}

/// Lock a user or a host (`manage_grants`): their live sessions end within moments, new
/// requests and execs are refused until it is lifted or runs out. Nothing is revoked.
#[utoipa::path(post, path = "/locks", tag = "grants", request_body = CreateLock,
    responses((status = 201, body = Lock), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
async fn add_lock(
    State(s): State<AppState>,
    c: Caller,
    Body(b): Body<CreateLock>,
) -> ApiResult<(StatusCode, Json<Lock>)> {
    let (kind, name) = match (b.user, b.host) {
        (Some(u), None) => (LockKind::User, u),
        (None, Some(h)) => (LockKind::Host, h),
        _ => {
            return Err(ApiErr::new(
                StatusCode::BAD_REQUEST,
                "invalid",
                "give exactly one of user and host",
            ));
        }
    };
    let secs = super::routes::parse_duration_field("duration", &b.duration)?;
    let lock =
        s.cp.add_lock(&c.actor, kind, &name, secs, &b.reason)
            .await?;
    Ok((StatusCode::CREATED, Json(lock)))
}

/// Locks in force, newest first; `all=true` adds lifted and expired ones (`manage_grants`).
#[utoipa::path(get, path = "/locks", tag = "grants", params(LockQuery),
    responses((status = 200, body = Vec<Lock>), (status = 403, body = ErrorBody)))]
async fn list_locks(
    State(s): State<AppState>,
    c: Caller,
    Query(q): Query<LockQuery>,
) -> ApiResult<Json<Vec<Lock>>> {
    Ok(Json(
        s.cp.list_locks(&c.actor, q.all.unwrap_or(false)).await?,
    ))
}

/// Lift a lock before it runs out (`manage_grants`).
#[utoipa::path(post, path = "/locks/{id}/lift", tag = "grants", params(("id" = Uuid, Path)),
    responses((status = 200, body = Lock), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn lift_lock(
    State(s): State<AppState>,
    c: Caller,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Lock>> {
    Ok(Json(s.cp.lift_lock(&c.actor, id).await?))
}
