//! Tasks, delegations and peer delegation of grants over HTTP. Parse, call the control plane,
//! shape the answer.

use super::AppState;
use super::error::{ApiErr, ApiResult};
use super::extract::{Body, Caller, Path, Query};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use pedm_api::delegation::*;
use pedm_api::{ErrorBody, Grant, Reason, parse_duration};
use pedm_core::service::NewDelegation;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_tasks, define_task))
        .routes(routes!(get_task))
        .routes(routes!(check_task))
        .routes(routes!(list_delegations, create_delegation))
        .routes(routes!(get_delegation))
        .routes(routes!(revoke_delegation))
        .routes(routes!(delegate_grant))
}

fn duration(field: &str, v: &str) -> ApiResult<i64> {
    parse_duration(v).map_err(|e| ApiErr::invalid(format!("invalid {field}: {e}")))
}

// ------------------------------------------------------------------ tasks

/// Every task definition.
#[utoipa::path(get, path = "/tasks", tag = "delegation",
    responses((status = 200, body = Vec<TaskDef>)))]
async fn list_tasks(State(s): State<AppState>, c: Caller) -> ApiResult<Json<Vec<TaskDef>>> {
    Ok(Json(s.cp.list_tasks(&c.actor).await?))
}

/// Define a task, or replace its definition (`manage_targets`).
#[utoipa::path(post, path = "/tasks", tag = "delegation", request_body = DefineTask,
    responses((status = 201, body = TaskDef), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn define_task(
    State(s): State<AppState>,
    c: Caller,
    Body(b): Body<DefineTask>,
) -> ApiResult<(StatusCode, Json<TaskDef>)> {
    let t = s.cp.define_task(&c.actor, b.task, b.replace).await?;
    Ok((StatusCode::CREATED, Json(t)))
}

/// One task definition.
#[utoipa::path(get, path = "/tasks/{name}", tag = "delegation", params(("name" = String, Path)),
    responses((status = 200, body = TaskDef), (status = 404, body = ErrorBody)))]
async fn get_task(
    State(s): State<AppState>,
    c: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<TaskDef>> {
    Ok(Json(s.cp.get_task(&c.actor, &name).await?))
}

/// Whether the caller may run the task on the target now with these parameters: the
/// delegation that allows it and the exact command (stdin is never shown).
#[utoipa::path(post, path = "/tasks/{name}/check", tag = "delegation", request_body = CheckTask,
    params(("name" = String, Path)),
    responses((status = 200, body = TaskChecked), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn check_task(
    State(s): State<AppState>,
    c: Caller,
    Path(name): Path<String>,
    Body(b): Body<CheckTask>,
) -> ApiResult<Json<TaskChecked>> {
    let r =
        s.cp.check_task(&c.actor, &b.target, &name, &b.params)
            .await?;
    Ok(Json(TaskChecked {
        delegation: r.delegation,
        task: r.task.name,
        target: b.target,
        run_as: r.task.run_as,
        argv: r.rendered.argv,
        stdin: r.rendered.stdin.is_some(),
    }))
}

// ------------------------------------------------------------------ delegations

/// Delegations from or for the caller (all of them with `read_audit`); live ones unless
/// `all=true`.
#[utoipa::path(get, path = "/delegations", tag = "delegation", params(DelegationQuery),
    responses((status = 200, body = Vec<Delegation>)))]
async fn list_delegations(
    State(s): State<AppState>,
    c: Caller,
    Query(q): Query<DelegationQuery>,
) -> ApiResult<Json<Vec<Delegation>>> {
    Ok(Json(
        s.cp.list_delegations(&c.actor, q.all.unwrap_or(false))
            .await?,
    ))
}

/// Delegate tasks and/or roles to a user or a group, on a scope, until a deadline; or pass
/// on part of a delegation (`parent`).
#[utoipa::path(post, path = "/delegations", tag = "delegation", request_body = CreateDelegation,
    responses((status = 201, body = Delegation), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn create_delegation(
    State(s): State<AppState>,
    c: Caller,
    Body(b): Body<CreateDelegation>,
) -> ApiResult<(StatusCode, Json<Delegation>)> {
    let delegate = match (b.user, b.group) {
        (Some(name), None) => Delegatee {
            kind: DelegateKind::User,
            name,
        },
        (None, Some(name)) => Delegatee {
            kind: DelegateKind::Group,
            name,
        },
        _ => {
            return Err(ApiErr::invalid(
                "invalid delegate: give exactly one of user or group",
            ));
        }
    };
    let expires_at = match (b.expires_at, b.expires_in.as_deref()) {
        (Some(t), None) => t,
        (None, Some(d)) => {
            let secs = duration("expires_in", d)?;
            s.cp.now()
                .checked_add(jiff::SignedDuration::from_secs(secs))
                .map_err(|_| ApiErr::invalid("invalid expires_in: is too large"))?
        }
        _ => {
            return Err(ApiErr::invalid(
                "invalid expires_at: give exactly one of expires_at or expires_in",
            ));
        }
    };
    let d =
        s.cp.create_delegation(
            &c.actor,
            NewDelegation {
                parent: b.parent,
                delegate,
                tasks: b.tasks,
                roles: b.roles,
                scope: b.scope,
                expires_at,
                redelegate: b.redelegate,
                reason: b.reason,
            },
        )
        .await?;
    Ok((StatusCode::CREATED, Json(d)))
}

/// One delegation (its delegator, its delegates, or `read_audit`).
#[utoipa::path(get, path = "/delegations/{id}", tag = "delegation", params(("id" = Uuid, Path)),
    responses((status = 200, body = Delegation), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn get_delegation(
    State(s): State<AppState>,
    c: Caller,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Delegation>> {
    Ok(Json(s.cp.get_delegation(&c.actor, id).await?))
}

/// End a delegation and everything delegated from it, with the grants they pre-approved
/// (a reason is required).
#[utoipa::path(post, path = "/delegations/{id}/revoke", tag = "delegation", request_body = Reason,
    params(("id" = Uuid, Path)),
    responses((status = 200, body = RevokedDelegations), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn revoke_delegation(
    State(s): State<AppState>,
    c: Caller,
    Path(id): Path<Uuid>,
    Body(b): Body<Reason>,
) -> ApiResult<Json<RevokedDelegations>> {
    let r = s.cp.revoke_delegation(&c.actor, id, b.reason).await?;
    Ok(Json(RevokedDelegations {
        delegations: r.delegations,
        grants: r.grants,
    }))
}

// ------------------------------------------------------------------ peer delegation

/// Hand a grant you hold on to a colleague for part of its remaining time, where policy lets
/// you `delegate` its role. The new grant ends no later than yours, and with it.
#[utoipa::path(post, path = "/grants/{id}/delegate", tag = "grants", request_body = DelegateGrant,
    params(("id" = Uuid, Path)),
    responses((status = 201, body = Grant), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn delegate_grant(
    State(s): State<AppState>,
    c: Caller,
    Path(id): Path<Uuid>,
    Body(b): Body<DelegateGrant>,
) -> ApiResult<(StatusCode, Json<Grant>)> {
    let secs = duration("duration", &b.duration)?;
    let g =
        s.cp.delegate_grant(&c.actor, id, &b.to, secs, b.reason)
            .await?;
    Ok((StatusCode::CREATED, Json(g)))
}
