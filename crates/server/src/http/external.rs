//! External (vendor) accounts over HTTP. Parse, call the control plane, shape the answer.

use super::AppState;
use super::error::{ApiErr, ApiResult};
use super::extract::{Body, Caller, Path, Query};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use pedm_api::external::*;
use pedm_api::{ErrorBody, ReportQuery, parse_duration};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_external_users, create_external_user))
        .routes(routes!(extend_external_user))
        .routes(routes!(external_report))
}

fn expires(v: &str) -> ApiResult<i64> {
    parse_duration(v).map_err(|e| ApiErr::invalid(format!("invalid expires: {e}")))
}

/// Every external account with its sponsor and expiry (admin).
#[utoipa::path(get, path = "/external-users", tag = "identity",
    responses((status = 200, body = Vec<ExternalAccount>), (status = 403, body = ErrorBody)))]
async fn list_external_users(
    State(s): State<AppState>,
    c: Caller,
) -> ApiResult<Json<Vec<ExternalAccount>>> {
    Ok(Json(s.cp.list_external_users(&c.actor).await?))
}

/// Create an external (vendor) account with a sponsor and an expiry (admin).
#[utoipa::path(post, path = "/external-users", tag = "identity",
    request_body = CreateExternalUser,
    responses((status = 201, body = ExternalUser), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn create_external_user(
    State(s): State<AppState>,
    c: Caller,
    Body(b): Body<CreateExternalUser>,
) -> ApiResult<(StatusCode, Json<ExternalUser>)> {
    let secs = expires(&b.expires)?;
    let (user, external) =
        s.cp.create_external_user(&c.actor, &b.name, b.display_name, &b.sponsor, secs)
            .await?;
    Ok((StatusCode::CREATED, Json(ExternalUser { user, external })))
}

/// Move an external account's expiry (its sponsor or an admin); revives an expired one.
#[utoipa::path(post, path = "/external-users/{name}/extend", tag = "identity",
    request_body = ExtendExternalUser, params(("name" = String, Path)),
    responses((status = 200, body = ExternalAccount), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
async fn extend_external_user(
    State(s): State<AppState>,
    c: Caller,
    Path(name): Path<String>,
    Body(b): Body<ExtendExternalUser>,
) -> ApiResult<Json<ExternalAccount>> {
    let secs = expires(&b.expires)?;
    Ok(Json(
        s.cp.extend_external_user(&c.actor, &name, secs).await?,
    ))
}

/// Every external account with what it did in the window: its elevations and its audit
/// events by action (`read_audit`).
#[utoipa::path(get, path = "/reports/external", tag = "audit", params(ReportQuery),
    responses((status = 200, body = Vec<ExternalReportRow>), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody)))]
async fn external_report(
    State(s): State<AppState>,
    c: Caller,
    Query(q): Query<ReportQuery>,
) -> ApiResult<Json<Vec<ExternalReportRow>>> {
    let since = super::routes::parse_since(q.since.as_deref(), s.cp.now())?;
    Ok(Json(s.cp.external_report(&c.actor, since).await?))
}
