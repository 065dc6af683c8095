//! Step-up over HTTP: a host agent asks approval for an exec it holds in a session, then
//! follows the request until approvers decide (people decide it as any other request).

use super::AppState;
use super::agents::HostCaller;
use super::error::ApiResult;
use super::extract::{Body, Path};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use pedm_api::agent::HeldExec;
use pedm_api::{ErrorBody, Request};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(ask_step_up))
        .routes(routes!(step_up_state))
}

/// An exec held in a session until approved (the server's policy must mark it `@step_up`):
/// becomes a pending request of the grant's holder that approvers see.
#[utoipa::path(post, path = "/agent/step-ups", tag = "hosts", request_body = HeldExec,
    responses((status = 201, body = Request), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn ask_step_up(
    State(s): State<AppState>,
    h: HostCaller,
    Body(ask): Body<HeldExec>,
) -> ApiResult<(StatusCode, Json<Request>)> {
    let r = s.cp.request_step_up(&h.host, ask).await?;
    Ok((StatusCode::CREATED, Json(r)))
}

/// A step-up request this host asked for, as it stands.
#[utoipa::path(get, path = "/agent/step-ups/{id}", tag = "hosts",
    params(("id" = Uuid, Path, description = "the request id")),
    responses((status = 200, body = Request), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn step_up_state(
    State(s): State<AppState>,
    h: HostCaller,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Request>> {
    Ok(Json(s.cp.step_up_state(&h.host, id).await?))
}
