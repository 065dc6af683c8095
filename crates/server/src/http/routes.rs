//! Handlers: parse, call the control plane, shape the answer. No rules live here.

use super::AppState;
use super::error::{ApiErr, ApiResult};
use super::extract::{Body, Caller, Path, Query};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use pedm_api::*;
use pedm_core::model::{GrantFilter, RequestFilter};
use pedm_core::service::{Held, NewRequest, NewRole, RoleChange};
use pedm_core::store::AuditFilter;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(whoami))
        .routes(routes!(requestable))
        .routes(routes!(list_users, create_user))
        .routes(routes!(update_user))
        .routes(routes!(list_groups, create_group))
        .routes(routes!(add_group_member, remove_group_member))
        .routes(routes!(list_tokens, create_token))
        .routes(routes!(revoke_token))
        .routes(routes!(list_targets, create_target))
        .routes(routes!(get_target))
        .routes(routes!(list_roles, create_role))
        .routes(routes!(update_role))
        .routes(routes!(list_requests, create_request))
        .routes(routes!(get_request))
        .routes(routes!(cancel_request))
        .routes(routes!(approve_request))
        .routes(routes!(deny_request))
        .routes(routes!(list_grants))
        .routes(routes!(get_grant))
        .routes(routes!(release_grant))
        .routes(routes!(extend_grant))
        .routes(routes!(revoke_grant))
        .routes(routes!(grant_secret))
        .routes(routes!(grant_credentials))
        .routes(routes!(verify_grant))
        .routes(routes!(discover_target))
        .routes(routes!(standing_report))
        .routes(routes!(list_audit_events))
        .routes(routes!(review_break_glass))
        .routes(routes!(list_break_glass))
        .merge(policy_router())
}

/// Policy sets may be up to 1 MiB of Cedar; their routes accept bodies a little larger than
/// that (JSON escaping), everything else keeps the server's small limit.
fn policy_router() -> OpenApiRouter<AppState> {
    const POLICY_BODY_LIMIT: usize = 2 * 1024 * 1024;
    OpenApiRouter::new()
        .routes(routes!(get_policies, apply_policies))
        .routes(routes!(list_policy_versions))
        .routes(routes!(get_policy_version))
        .routes(routes!(simulate_policies))
        .routes(routes!(check_policies))
        .routes(routes!(suggest_commands))
        .merge(super::policy_review::router())
        .layer(axum::extract::DefaultBodyLimit::max(POLICY_BODY_LIMIT))
}

pub(super) fn parse_duration_field(field: &str, v: &str) -> ApiResult<i64> {
    parse_duration(v).map_err(|e| ApiErr::invalid(format!("invalid {field}: {e}")))
}

fn parse_enum<T: std::str::FromStr<Err = String>>(
    field: &str,
    v: Option<&str>,
) -> ApiResult<Option<T>> {
    v.map(|s| {
        s.parse::<T>()
            .map_err(|e| ApiErr::invalid(format!("invalid {field}: {e}")))
    })
    .transpose()
}

/// A window start written as a duration back from `now` (`30d`) or an RFC 3339 time;
/// 30 days when absent or empty.
pub(super) fn parse_since(v: Option<&str>, now: jiff::Timestamp) -> ApiResult<jiff::Timestamp> {
    let v = v.filter(|v| !v.is_empty()).unwrap_or("30d");
    if v.trim() != v {
        return Err(ApiErr::invalid(format!(
            "invalid since: {v:?} has white space around it"
        )));
    }
    if let Ok(t) = v.parse::<jiff::Timestamp>() {
        return Ok(t);
    }
    let secs = parse_duration(v).map_err(|e| {
        ApiErr::invalid(format!(
            "invalid since: {v:?} is neither a duration like 30d nor an RFC 3339 time ({e})"
        ))
    })?;
    now.checked_sub(jiff::SignedDuration::from_secs(secs))
        .map_err(|e| ApiErr::invalid(format!("invalid since: {e}")))
}

pub(super) fn parse_time(field: &str, v: Option<&str>) -> ApiResult<Option<jiff::Timestamp>> {
    v.map(|s| {
        s.parse::<jiff::Timestamp>().map_err(|e| {
            ApiErr::invalid(format!(
                "invalid {field}: {s:?} is not an RFC 3339 time ({e})"
            ))
        })
    })
    .transpose()
}

// ------------------------------------------------------------------ identity

/// The caller, their groups and the token they used.
#[utoipa::path(get, path = "/whoami", tag = "identity",
    responses((status = 200, body = WhoAmI), (status = 401, body = ErrorBody)))]
async fn whoami(State(s): State<AppState>, c: Caller) -> ApiResult<Json<WhoAmI>> {
    let (user, token) = s.cp.whoami(&c.actor).await?;
    Ok(Json(WhoAmI {
        user,
        groups: c.actor.groups,
        token: token.map(Into::into),
    }))
}

/// The roles the caller may ask for now, each as policy judges a one-minute request made
/// now (with a ticket where policy refuses it without one): granted at once or after which
/// approvals, and for how long at most. Roles policy refuses are left out.
#[utoipa::path(get, path = "/me/requestable", tag = "requests",
    responses((status = 200, body = Vec<Requestable>), (status = 401, body = ErrorBody)))]
async fn requestable(State(s): State<AppState>, c: Caller) -> ApiResult<Json<Vec<Requestable>>> {
    let context = request_context(&s, &c).await?;
    let roles = s.cp.requestable_roles(&c.actor, context).await?;
    Ok(Json(
        roles
            .into_iter()
            .map(|r| Requestable {
                target: r.role.target,
                target_kind: r.target_kind,
                role: r.role.name,
                description: r.role.description,
                max_duration: pedm_core::duration::format_duration(r.preview.max_duration_secs),
                max_duration_secs: r.preview.max_duration_secs,
                outcome: match r.preview.outcome {
                    pedm_core::service::PreviewOutcome::GrantedAtOnce => "granted_at_once",
                    _ => "needs_approval",
                }
                .into(),
                approvals: pedm_core::service::tiers_text(&r.preview.tiers),
                policy: r.preview.policy,
                reason: r.preview.reason,
                ticket_required: r.ticket_required,
            })
            .collect(),
    ))
}

/// All users (admin).
#[utoipa::path(get, path = "/users", tag = "identity",
    responses((status = 200, body = Vec<User>), (status = 403, body = ErrorBody)))]
async fn list_users(State(s): State<AppState>, c: Caller) -> ApiResult<Json<Vec<User>>> {
    Ok(Json(s.cp.list_users(&c.actor).await?))
}

/// Create a user (admin).
#[utoipa::path(post, path = "/users", tag = "identity", request_body = CreateUser,
    responses((status = 201, body = User), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn create_user(
    State(s): State<AppState>,
    c: Caller,
    Body(b): Body<CreateUser>,
) -> ApiResult<(StatusCode, Json<User>)> {
    let u =
        s.cp.create_user(&c.actor, &b.name, b.display_name, b.email, b.admin)
            .await?;
    Ok((StatusCode::CREATED, Json(u)))
}

/// 200 with what is done, or 202 with the proposal that holds it.
fn held<T: serde::Serialize>(h: Held<T>) -> axum::response::Response {
    use axum::response::IntoResponse;
    match h {
        Held::Done(v) => Json(v).into_response(),
        Held::Pending(p) => (StatusCode::ACCEPTED, Json(p)).into_response(),
    }
}

/// Change a user's admin rights or disable/enable them (admin). While changes to who
/// approves need approvals (`policy.require_approvals`), making someone an administrator is
/// held as a proposal (202) until enough other admins approve it.
#[utoipa::path(patch, path = "/users/{name}", tag = "identity", request_body = UpdateUser,
    params(("name" = String, Path)),
    responses((status = 200, body = User),
        (status = 202, description = "Held for approval", body = pedm_api::policy_review::PolicyProposal),
        (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
async fn update_user(
    State(s): State<AppState>,
    c: Caller,
    Path(name): Path<String>,
    Body(b): Body<UpdateUser>,
) -> ApiResult<axum::response::Response> {
    Ok(held(
        s.cp.update_user(&c.actor, &name, b.admin, b.disabled, b.email)
            .await?,
    ))
}

/// All groups with their members (admin).
#[utoipa::path(get, path = "/groups", tag = "identity",
    responses((status = 200, body = Vec<Group>), (status = 403, body = ErrorBody)))]
async fn list_groups(State(s): State<AppState>, c: Caller) -> ApiResult<Json<Vec<Group>>> {
    Ok(Json(s.cp.list_groups(&c.actor).await?))
}

/// Create a group (admin).
#[utoipa::path(post, path = "/groups", tag = "identity", request_body = CreateGroup,
    responses((status = 201, body = Group), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn create_group(
    State(s): State<AppState>,
    c: Caller,
    Body(b): Body<CreateGroup>,
) -> ApiResult<(StatusCode, Json<Group>)> {
    let g = s.cp.create_group(&c.actor, &b.name, b.description).await?;
    Ok((StatusCode::CREATED, Json(g)))
}

/// Add a user to a group (admin). While changes to who approves need approvals
/// (`policy.require_approvals`), adding someone to a group the policy lets decide approvals
/// is held as a proposal (202) until enough other admins approve it.
#[utoipa::path(put, path = "/groups/{group}/members/{user}", tag = "identity",
    params(("group" = String, Path), ("user" = String, Path)),
    responses((status = 200, body = Group),
        (status = 202, description = "Held for approval", body = pedm_api::policy_review::PolicyProposal),
        (status = 404, body = ErrorBody)))]
async fn add_group_member(
    State(s): State<AppState>,
    c: Caller,
    Path((group, user)): Path<(String, String)>,
) -> ApiResult<axum::response::Response> {
    Ok(held(s.cp.add_group_member(&c.actor, &group, &user).await?))
}

/// Remove a user from a group (admin).
#[utoipa::path(delete, path = "/groups/{group}/members/{user}", tag = "identity",
    params(("group" = String, Path), ("user" = String, Path)),
    responses((status = 200, body = Group), (status = 404, body = ErrorBody)))]
async fn remove_group_member(
    State(s): State<AppState>,
    c: Caller,
    Path((group, user)): Path<(String, String)>,
) -> ApiResult<Json<Group>> {
    Ok(Json(
        s.cp.remove_group_member(&c.actor, &group, &user).await?,
    ))
}

/// The caller's tokens, or (admin) anyone's.
#[utoipa::path(get, path = "/tokens", tag = "identity", params(TokenQuery),
    responses((status = 200, body = Vec<TokenInfo>)))]
async fn list_tokens(
    State(s): State<AppState>,
    c: Caller,
    Query(q): Query<TokenQuery>,
) -> ApiResult<Json<Vec<TokenInfo>>> {
    let t = s.cp.list_tokens(&c.actor, q.user.as_deref()).await?;
    let sessions = s.cp.sso_session_ids().await?;
    Ok(Json(
        t.into_iter()
            .map(|t| {
                let session = sessions.contains(&t.id);
                let mut info = TokenInfo::from(t);
                if session {
                    info.kind = "session".into();
                }
                info
            })
            .collect(),
    ))
}

/// Mint a token. The secret is in this response only. `for_agent`: a token for an AI agent
/// acting for its holder (`pedm mcp`), with the narrow rights of the agent allow-list; it
/// must expire (`never` is refused with 422).
#[utoipa::path(post, path = "/tokens", tag = "identity", request_body = CreateToken,
    responses((status = 201, body = CreatedToken), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 404, description = "the user does not exist", body = ErrorBody)))]
async fn create_token(
    State(s): State<AppState>,
    c: Caller,
    Body(b): Body<CreateToken>,
) -> ApiResult<(StatusCode, Json<CreatedToken>)> {
    // Absent: the server's default lifetime; a token that never expires is asked for by name.
    let ttl = match b.expires_in.as_deref().map(str::trim) {
        None => pedm_core::service::TokenLifetime::Default,
        Some("never") => pedm_core::service::TokenLifetime::Never,
        Some(v) => pedm_core::service::TokenLifetime::Secs(parse_duration_field("expires_in", v)?),
    };
    let (rec, token) = if b.for_agent {
        s.cp.create_agent_token(&c.actor, b.user.as_deref(), b.description, ttl)
            .await?
    } else {
        s.cp.create_token(&c.actor, b.user.as_deref(), b.description, ttl)
            .await?
    };
    Ok((
        StatusCode::CREATED,
        Json(CreatedToken {
            token,
            info: rec.into(),
        }),
    ))
}

/// Revoke a token (its owner or an admin).
#[utoipa::path(post, path = "/tokens/{id}/revoke", tag = "identity", params(("id" = String, Path)),
    responses((status = 200, body = TokenInfo), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn revoke_token(
    State(s): State<AppState>,
    c: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<TokenInfo>> {
    Ok(Json(s.cp.revoke_token(&c.actor, &id).await?.into()))
}

// ------------------------------------------------------------------ targets

/// All targets.
#[utoipa::path(get, path = "/targets", tag = "targets", responses((status = 200, body = Vec<Target>)))]
async fn list_targets(State(s): State<AppState>, _c: Caller) -> ApiResult<Json<Vec<Target>>> {
    Ok(Json(s.cp.list_targets().await?))
}

/// Register a target (admin).
#[utoipa::path(post, path = "/targets", tag = "targets", request_body = CreateTarget,
    responses((status = 201, body = Target), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn create_target(
    State(s): State<AppState>,
    c: Caller,
    Body(b): Body<CreateTarget>,
) -> ApiResult<(StatusCode, Json<Target>)> {
    let t =
        s.cp.create_target(&c.actor, &b.name, b.kind, b.description, b.labels)
            .await?;
    Ok((StatusCode::CREATED, Json(t)))
}

/// A target and its roles.
#[utoipa::path(get, path = "/targets/{name}", tag = "targets", params(("name" = String, Path)),
    responses((status = 200, body = TargetDetail), (status = 404, body = ErrorBody)))]
async fn get_target(
    State(s): State<AppState>,
    _c: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<TargetDetail>> {
    let (target, roles) = s.cp.get_target(&name).await?;
    Ok(Json(TargetDetail { target, roles }))
}

/// Roles of a target.
#[utoipa::path(get, path = "/targets/{name}/roles", tag = "targets", params(("name" = String, Path)),
    responses((status = 200, body = Vec<Role>), (status = 404, body = ErrorBody)))]
async fn list_roles(
    State(s): State<AppState>,
    _c: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Vec<Role>>> {
    Ok(Json(s.cp.list_roles(Some(&name)).await?))
}

/// Define a role on a target (admin).
#[utoipa::path(post, path = "/targets/{name}/roles", tag = "targets", request_body = CreateRole,
    params(("name" = String, Path)),
    responses((status = 201, body = Role), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn create_role(
    State(s): State<AppState>,
    c: Caller,
    Path(target): Path<String>,
    Body(b): Body<CreateRole>,
) -> ApiResult<(StatusCode, Json<Role>)> {
    let max = parse_duration_field("max_duration", &b.max_duration)?;
    let role =
        s.cp.create_role(
            &c.actor,
            NewRole {
                target,
                name: b.name,
                description: b.description,
                max_duration_secs: max,
                auto_approve: b.auto_approve,
                run_as: b.run_as,
                noexec: b.noexec,
                allow_setuid: b.allow_setuid,
                record_input: b.record_input,
                intercept: b.intercept,
                limits: b.limits,
                watch_paths: b.watch_paths,
                ssh: b.ssh,
            },
        )
        .await?;
    Ok((StatusCode::CREATED, Json(role)))
}

/// Change a role's settings (admin): maximum duration, auto-approval, host session controls.
#[utoipa::path(patch, path = "/targets/{name}/roles/{role}", tag = "targets",
    request_body = UpdateRole,
    params(("name" = String, Path), ("role" = String, Path)),
    responses((status = 200, body = Role), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
async fn update_role(
    State(s): State<AppState>,
    c: Caller,
    Path((target, role)): Path<(String, String)>,
    Body(b): Body<UpdateRole>,
) -> ApiResult<Json<Role>> {
    let max_duration_secs = b
        .max_duration
        .as_deref()
        .map(|d| parse_duration_field("max_duration", d))
        .transpose()?;
    let change = RoleChange {
        description: b.description,
        max_duration_secs,
        auto_approve: b.auto_approve,
        noexec: b.noexec,
        allow_setuid: b.allow_setuid,
        record_input: b.record_input,
        intercept: b.intercept,
        limits: b.limits,
        watch_paths: b.watch_paths,
        ssh: b.ssh,
    };
    Ok(Json(
        s.cp.update_role(&c.actor, &target, &role, change).await?,
    ))
}

/// Command rules learned from what people ran: per role, the commands its holders ran in
/// the period (first commands and, with intercept, every command inside sessions), with
/// counts, users and a Cedar policy allowing exactly those (needs read_audit).
#[utoipa::path(get, path = "/policies/suggestions/commands", tag = "policies",
    params(CommandSuggestionQuery),
    responses((status = 200, body = CommandSuggestions), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody)))]
async fn suggest_commands(
    State(s): State<AppState>,
    c: Caller,
    Query(q): Query<CommandSuggestionQuery>,
) -> ApiResult<Json<CommandSuggestions>> {
    let since = parse_since(q.since.as_deref(), s.cp.now())?;
    Ok(Json(
        s.cp.suggest_commands(&c.actor, since, q.target.as_deref(), q.role.as_deref())
            .await?,
    ))
}

// ------------------------------------------------------------------ requests

/// Requests: the caller's own, or (admin) anyone's.
#[utoipa::path(get, path = "/requests", tag = "requests", params(RequestQuery),
    responses((status = 200, body = Vec<Request>), (status = 400, body = ErrorBody)))]
async fn list_requests(
    State(s): State<AppState>,
    c: Caller,
    Query(q): Query<RequestQuery>,
) -> ApiResult<Json<Vec<Request>>> {
    // Every parameter is checked, even those `approvable` makes moot.
    let filter = RequestFilter {
        requester: q.requester,
        state: parse_enum("state", q.state.as_deref())?,
        target: q.target,
        limit: q.limit,
        since: parse_time("since", q.since.as_deref())?,
        review: None,
    };
    if q.approvable == Some(true) {
        return Ok(Json(s.cp.approvable_requests(&c.actor).await?));
    }
    Ok(Json(s.cp.list_requests(&c.actor, filter).await?))
}

/// Where a request comes from: the caller's address and device.
async fn request_context(s: &AppState, c: &Caller) -> ApiResult<RequestContext> {
    Ok(RequestContext {
        source_addr: c.source.clone(),
        device: s.cp.device_context(&c.actor, c.device.as_deref()).await?,
        step_up: None,
        extends: None,
        starts_at: None,
        ticket: None,
        // The control plane sets it again from the actor; never from the body.
        via_agent: c.actor.via_agent,
        while_on_call: false,
        risk: None,
    })
}

/// Ask for a role on a target for a duration, with a justification.
#[utoipa::path(post, path = "/requests", tag = "requests", request_body = CreateRequest,
    responses((status = 201, body = RequestCreated), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn create_request(
    State(s): State<AppState>,
    c: Caller,
    Body(b): Body<CreateRequest>,
) -> ApiResult<(StatusCode, Json<RequestCreated>)> {
    let duration_secs = parse_duration_field("duration", &b.duration)?;
    let starts_at = b
        .start
        .as_deref()
        .map(|t| {
            t.parse::<jiff::Timestamp>().map_err(|e| {
                ApiErr::invalid(format!(
                    "invalid start {t:?}: an RFC 3339 time such as 2026-12-05T22:00:00Z ({e})"
                ))
            })
        })
        .transpose()?;
    let context = request_context(&s, &c).await?;
    let (request, grant) =
        s.cp.create_request(
            &c.actor,
            NewRequest {
                target: b.target,
                role: b.role,
                duration_secs,
                justification: b.justification,
                task: b.task,
                ticket: b.ticket,
                break_glass: b.break_glass,
                starts_at,
            },
            context,
        )
        .await?;
    metrics::counter!("pedm_requests_created_total", "state" => request.state.as_str())
        .increment(1);
    Ok((StatusCode::CREATED, Json(RequestCreated { request, grant })))
}

/// A request with its approvals.
#[utoipa::path(get, path = "/requests/{id}", tag = "requests", params(("id" = Uuid, Path)),
    responses((status = 200, body = RequestDetail), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_request(
    State(s): State<AppState>,
    c: Caller,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<RequestDetail>> {
    let (request, approvals) = s.cp.get_request(&c.actor, id).await?;
    Ok(Json(RequestDetail { request, approvals }))
}

/// Withdraw a pending request (the requester).
#[utoipa::path(post, path = "/requests/{id}/cancel", tag = "requests", request_body = Reason,
    params(("id" = Uuid, Path)),
    responses((status = 200, body = Request), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn cancel_request(
    State(s): State<AppState>,
    c: Caller,
    Path(id): Path<Uuid>,
    Body(b): Body<Reason>,
) -> ApiResult<Json<Request>> {
    Ok(Json(s.cp.cancel_request(&c.actor, id, b.reason).await?))
}

/// Approve a pending request (never one's own).
#[utoipa::path(post, path = "/requests/{id}/approve", tag = "requests", request_body = Decide,
    params(("id" = Uuid, Path)),
    responses((status = 200, body = Decided), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn approve_request(
    State(s): State<AppState>,
    c: Caller,
    Path(id): Path<Uuid>,
    Body(b): Body<Decide>,
) -> ApiResult<Json<Decided>> {
    let (request, grant) =
        s.cp.decide_request(&c.actor, id, ApprovalDecision::Approve, b.comment)
            .await?;
    Ok(Json(Decided { request, grant }))
}

/// Deny a pending request, with a comment.
#[utoipa::path(post, path = "/requests/{id}/deny", tag = "requests", request_body = Decide,
    params(("id" = Uuid, Path)),
    responses((status = 200, body = Decided), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn deny_request(
    State(s): State<AppState>,
    c: Caller,
    Path(id): Path<Uuid>,
    Body(b): Body<Decide>,
) -> ApiResult<Json<Decided>> {
    let (request, grant) =
        s.cp.decide_request(&c.actor, id, ApprovalDecision::Deny, b.comment)
            .await?;
    Ok(Json(Decided { request, grant }))
}

// ------------------------------------------------------------------ grants

/// Grants: the caller's own, or (admin) anyone's.
#[utoipa::path(get, path = "/grants", tag = "grants", params(GrantQuery),
    responses((status = 200, body = Vec<Grant>), (status = 400, body = ErrorBody)))]
async fn list_grants(
    State(s): State<AppState>,
    c: Caller,
    Query(q): Query<GrantQuery>,
) -> ApiResult<Json<Vec<Grant>>> {
    let filter = GrantFilter {
        user: q.user,
        state: parse_enum("state", q.state.as_deref())?,
        target: q.target,
        limit: q.limit,
        held_between: None,
    };
    Ok(Json(s.cp.list_grants(&c.actor, filter).await?))
}

/// One grant.
#[utoipa::path(get, path = "/grants/{id}", tag = "grants", params(("id" = Uuid, Path)),
    responses((status = 200, body = Grant), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_grant(
    State(s): State<AppState>,
    c: Caller,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Grant>> {
    Ok(Json(s.cp.get_grant(&c.actor, id).await?))
}

/// Ask to lengthen an active grant you hold: policy decides as for a request of its role
/// (`context.extension`); granted at once (201 with the grant's new expiry) or pending
/// approvers. The privilege stays in the target throughout.
#[utoipa::path(post, path = "/grants/{id}/extend", tag = "grants", request_body = ExtendGrant,
    params(("id" = Uuid, Path)),
    responses((status = 201, body = RequestCreated), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn extend_grant(
    State(s): State<AppState>,
    c: Caller,
    Path(id): Path<Uuid>,
    Body(b): Body<ExtendGrant>,
) -> ApiResult<(StatusCode, Json<RequestCreated>)> {
    let by = parse_duration_field("by", &b.by)?;
    let context = request_context(&s, &c).await?;
    let (request, grant) =
        s.cp.extend_grant(&c.actor, id, by, b.justification, b.ticket, context)
            .await?;
    Ok((StatusCode::CREATED, Json(RequestCreated { request, grant })))
}

/// Give a grant back before it expires (the holder).
#[utoipa::path(post, path = "/grants/{id}/release", tag = "grants", request_body = Reason,
    params(("id" = Uuid, Path)),
    responses((status = 200, body = Grant), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn release_grant(
    State(s): State<AppState>,
    c: Caller,
    Path(id): Path<Uuid>,
    Body(b): Body<Reason>,
) -> ApiResult<Json<Grant>> {
    Ok(Json(s.cp.release_grant(&c.actor, id, b.reason).await?))
}

/// End someone's grant now, with a reason (admin).
#[utoipa::path(post, path = "/grants/{id}/revoke", tag = "grants", request_body = Reason,
    params(("id" = Uuid, Path)),
    responses((status = 200, body = Grant), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn revoke_grant(
    State(s): State<AppState>,
    c: Caller,
    Path(id): Path<Uuid>,
    Body(b): Body<Reason>,
) -> ApiResult<Json<Grant>> {
    Ok(Json(s.cp.revoke_grant(&c.actor, id, b.reason).await?))
}

/// The secret the grant produced (e.g. a generated password): the holder reads it once.
#[utoipa::path(get, path = "/grants/{id}/secret", tag = "grants", params(("id" = Uuid, Path)),
    responses((status = 200, body = GrantSecret), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn grant_secret(
    State(s): State<AppState>,
    c: Caller,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<GrantSecret>> {
    let secret = s.cp.take_grant_secret(&c.actor, id).await?;
    Ok(Json(GrantSecret {
        grant_id: id,
        secret,
    }))
}

/// Short-lived credentials for the caller's grant from its target (for an `aws` target: STS
/// credentials as `credential_process` JSON, or with `form: console` a console sign-in URL,
/// ending no later than the grant). Each issue is audited (`grant.credentials_issued`), never
/// with the secret.
#[utoipa::path(post, path = "/grants/{id}/credentials", tag = "grants", params(("id" = Uuid, Path)),
    request_body = IssueCredentials,
    responses((status = 201, body = GrantCredentials),
        (status = 403, description = "someone else's grant, or a grant not in force", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 422, description = "the target or role issues no credentials", body = ErrorBody),
        (status = 502, description = "the target's API failed or refused", body = ErrorBody)))]
async fn grant_credentials(
    State(s): State<AppState>,
    c: Caller,
    Path(id): Path<Uuid>,
    Body(b): Body<IssueCredentials>,
) -> ApiResult<(StatusCode, Json<GrantCredentials>)> {
    let form = match b.form {
        CredentialsForm::Tools => pedm_core::provisioning::CredentialsForm::Tools,
        CredentialsForm::Console => pedm_core::provisioning::CredentialsForm::Console,
    };
    let issued = s.cp.issue_grant_credentials(&c.actor, id, form).await?;
    Ok((
        StatusCode::CREATED,
        Json(GrantCredentials {
            grant_id: id,
            kind: issued.kind,
            expires_at: issued.expires_at,
            credentials: issued.value,
        }),
    ))
}

/// Whether the grant's privilege is in its target as its provisioning state says (the holder,
/// or auditors).
#[utoipa::path(get, path = "/grants/{id}/verify", tag = "grants", params(("id" = Uuid, Path)),
    responses((status = 200, body = GrantCheck), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn verify_grant(
    State(s): State<AppState>,
    c: Caller,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<GrantCheck>> {
    Ok(Json(s.cp.verify_grant(&c.actor, id).await?))
}

/// Standing privileged accounts in a target with a provisioner (admin: manage_targets).
#[utoipa::path(get, path = "/targets/{name}/discover", tag = "targets", params(("name" = String, Path)),
    responses((status = 200, body = Vec<StandingPrivilege>), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn discover_target(
    State(s): State<AppState>,
    c: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Vec<StandingPrivilege>>> {
    Ok(Json(s.cp.discover_target(&c.actor, &name).await?))
}

/// Standing privileges over every target with a provisioner (read_audit).
#[utoipa::path(get, path = "/reports/standing", tag = "audit",
    responses((status = 200, body = StandingReport), (status = 403, body = ErrorBody)))]
async fn standing_report(State(s): State<AppState>, c: Caller) -> ApiResult<Json<StandingReport>> {
    Ok(Json(s.cp.standing_report(&c.actor).await?))
}

// ------------------------------------------------------------------ audit

/// Audit events in order (admin).
#[utoipa::path(get, path = "/audit/events", tag = "audit", params(AuditQuery),
    responses((status = 200, body = Vec<AuditEvent>), (status = 403, body = ErrorBody)))]
async fn list_audit_events(
    State(s): State<AppState>,
    c: Caller,
    Query(q): Query<AuditQuery>,
) -> ApiResult<Json<Vec<AuditEvent>>> {
    let filter = AuditFilter {
        after_seq: q.after,
        actor: q.actor,
        target: q.target,
        request: q.request,
        action: q.action,
        subject: q.subject,
        since: parse_time("since", q.since.as_deref())?,
        until: parse_time("until", q.until.as_deref())?,
        limit: q.limit,
        before_seq: q.before,
        newest_first: q.newest_first.unwrap_or(false),
        sealed: q.sealed.unwrap_or(false),
    };
    Ok(Json(s.cp.audit_events(&c.actor, filter).await?))
}

// ------------------------------------------------------------------ break-glass

/// Close the review of a break-glass grant, with what it found (admin; not the requester).
#[utoipa::path(post, path = "/requests/{id}/review", tag = "requests", request_body = Decide,
    params(("id" = Uuid, Path)),
    responses((status = 200, body = Request), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn review_break_glass(
    State(s): State<AppState>,
    c: Caller,
    Path(id): Path<Uuid>,
    Body(b): Body<Decide>,
) -> ApiResult<Json<Request>> {
    Ok(Json(
        s.cp.review_break_glass(&c.actor, id, b.comment).await?,
    ))
}

/// Break-glass grants; by default only those whose review is still open.
#[utoipa::path(get, path = "/breakglass", tag = "requests", params(BreakGlassQuery),
    responses((status = 200, body = Vec<Request>), (status = 403, body = ErrorBody)))]
async fn list_break_glass(
    State(s): State<AppState>,
    c: Caller,
    Query(q): Query<BreakGlassQuery>,
) -> ApiResult<Json<Vec<Request>>> {
    Ok(Json(
        s.cp.break_glass_requests(&c.actor, q.open.unwrap_or(true))
            .await?,
    ))
}

// ------------------------------------------------------------------ policies

/// The policy set in force.
#[utoipa::path(get, path = "/policies", tag = "policies",
    responses((status = 200, body = PolicyVersion), (status = 403, body = ErrorBody)))]
async fn get_policies(State(s): State<AppState>, c: Caller) -> ApiResult<Json<PolicyVersion>> {
    Ok(Json(s.cp.get_policies(&c.actor, None).await?))
}

/// Apply a new policy set. It is validated strictly against the schema; on any error the
/// set in force stays. Every applied version is kept and audited with its diff. When policy
/// changes need approvals (`policy.require_approvals`), the set is stored as a pending
/// proposal instead (202) and takes effect once enough other admins approve it.
#[utoipa::path(post, path = "/policies", tag = "policies", request_body = ApplyPolicies,
    responses((status = 200, description = "In force", body = PolicyVersion),
        (status = 202, description = "Pending approval", body = pedm_api::policy_review::PolicyProposal),
        (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
async fn apply_policies(
    State(s): State<AppState>,
    c: Caller,
    Body(b): Body<ApplyPolicies>,
) -> ApiResult<axum::response::Response> {
    use axum::response::IntoResponse;
    Ok(
        match s.cp.submit_policies(&c.actor, b.sources, b.comment).await? {
            pedm_core::service::PolicySubmission::Applied(v) => Json(v).into_response(),
            pedm_core::service::PolicySubmission::Pending(p) => {
                (StatusCode::ACCEPTED, Json(p)).into_response()
            }
        },
    )
}

/// Every applied policy version, newest first.
#[utoipa::path(get, path = "/policies/versions", tag = "policies",
    responses((status = 200, body = Vec<PolicyVersion>), (status = 403, body = ErrorBody)))]
async fn list_policy_versions(
    State(s): State<AppState>,
    c: Caller,
) -> ApiResult<Json<Vec<PolicyVersion>>> {
    Ok(Json(s.cp.list_policy_versions(&c.actor).await?))
}

/// One applied policy version.
#[utoipa::path(get, path = "/policies/versions/{version}", tag = "policies",
    params(("version" = i64, Path)),
    responses((status = 200, body = PolicyVersion), (status = 404, body = ErrorBody)))]
async fn get_policy_version(
    State(s): State<AppState>,
    c: Caller,
    Path(version): Path<i64>,
) -> ApiResult<Json<PolicyVersion>> {
    Ok(Json(s.cp.get_policies(&c.actor, Some(version)).await?))
}

/// Prove policy properties (given, or the server's `[policy] properties`) for a set (given,
/// or the one in force) over every user, role and context pedm knows; each broken one with a
/// counterexample. Changes nothing.
#[utoipa::path(post, path = "/policies/check", tag = "policies", request_body = CheckPolicies,
    responses((status = 200, body = PropertyReport), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn check_policies(
    State(s): State<AppState>,
    c: Caller,
    Body(b): Body<CheckPolicies>,
) -> ApiResult<Json<PropertyReport>> {
    Ok(Json(
        s.cp.check_policies(&c.actor, b.sources, b.properties)
            .await?,
    ))
}

/// Replay recorded requests against a candidate set: every decision that would change, and
/// recommendations (auto-approval candidates, unused eligibilities).
#[utoipa::path(post, path = "/policies/simulate", tag = "policies", request_body = SimulatePolicies,
    responses((status = 200, body = SimulationReport), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody)))]
async fn simulate_policies(
    State(s): State<AppState>,
    c: Caller,
    Body(b): Body<SimulatePolicies>,
) -> ApiResult<Json<SimulationReport>> {
    let since = parse_since(b.since.as_deref(), s.cp.now())?;
    Ok(Json(
        s.cp.simulate_policies(&c.actor, b.sources, since).await?,
    ))
}
