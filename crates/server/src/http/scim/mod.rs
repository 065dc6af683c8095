//! SCIM 2.0 (RFC 7643/7644) at `/scim/v2`, for identity providers pushing users and groups,
//! and the admin routes for SCIM clients' tokens under `/api/v1/scim/tokens`. Parse, call the
//! control plane, shape the answer: every body is `application/scim+json`, every error the
//! SCIM error schema.

use super::AppState;
use super::error::ApiResult;
use super::extract::{Body, Caller, Path as ApiPath};
use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use pedm_api::ErrorBody;
use pedm_api::scim::*;
use pedm_core::scim::{
    MemberChange, ScimClient, ScimError, ScimGroupView, ScimUserView, UserChange,
};
use protocol::{group_patch, parse_filter, user_patch};
use serde::Deserialize;
use serde_json::{Value, json};
use std::net::SocketAddr;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

// ---------------------------------------------------------------- admin routes (/api/v1)

pub fn admin_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_scim_tokens, create_scim_token))
        .routes(routes!(revoke_scim_token))
}

/// Every SCIM client's token (admin); secrets are never shown again.
#[utoipa::path(get, path = "/scim/tokens", tag = "identity",
    responses((status = 200, body = Vec<ScimToken>), (status = 403, body = ErrorBody)))]
async fn list_scim_tokens(State(s): State<AppState>, c: Caller) -> ApiResult<Json<Vec<ScimToken>>> {
    Ok(Json(s.cp.list_scim_tokens(&c.actor).await?))
}

/// Create a SCIM client's bearer token (admin); the token is shown once.
#[utoipa::path(post, path = "/scim/tokens", tag = "identity",
    request_body = CreateScimToken,
    responses((status = 201, body = CreatedScimToken), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody)))]
async fn create_scim_token(
    State(s): State<AppState>,
    c: Caller,
    Body(b): Body<CreateScimToken>,
) -> ApiResult<(StatusCode, Json<CreatedScimToken>)> {
    let (record, token) = s.cp.create_scim_token(&c.actor, &b.name).await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedScimToken { record, token }),
    ))
}

/// Revoke a SCIM client's token (admin): the client is refused from its next call.
#[utoipa::path(post, path = "/scim/tokens/{id}/revoke", tag = "identity",
    params(("id" = String, Path)),
    responses((status = 200, body = ScimToken), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn revoke_scim_token(
    State(s): State<AppState>,
    c: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<ScimToken>> {
    Ok(Json(s.cp.revoke_scim_token(&c.actor, &id).await?))
}

// ---------------------------------------------------------------- /scim/v2

mod discovery;
mod projection;
mod protocol;

use discovery::{resource_type, resource_types, schema, schemas, service_provider_config};
use projection::Projection;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/ServiceProviderConfig", get(service_provider_config))
        .route("/ResourceTypes", get(resource_types))
        .route("/ResourceTypes/{id}", get(resource_type))
        .route("/Schemas", get(schemas))
        .route("/Schemas/{id}", get(schema))
        .route("/Users", get(list_users).post(create_user))
        .route("/Users/.search", post(search_users))
        .route(
            "/Users/{id}",
            get(get_user)
                .put(replace_user)
                .patch(patch_user)
                .delete(delete_user),
        )
        .route("/Groups", get(list_groups).post(create_group))
        .route("/Groups/.search", post(search_groups))
        .route("/.search", post(search_everything))
        .route(
            "/Groups/{id}",
            get(get_group)
                .put(replace_group)
                .patch(patch_group)
                .delete(delete_group),
        )
        .fallback(scim_not_found)
}

/// A SCIM error response.
struct ScimErr(ScimError);

impl From<ScimError> for ScimErr {
    fn from(e: ScimError) -> Self {
        ScimErr(e)
    }
}

impl From<pedm_core::Error> for ScimErr {
    fn from(e: pedm_core::Error) -> Self {
        ScimErr(ScimError::Core(e))
    }
}

impl IntoResponse for ScimErr {
    fn into_response(self) -> Response {
        let (status, scim_type) = self.0.status();
        let detail = match &self.0 {
            ScimError::Core(pedm_core::Error::Store(inner)) => {
                tracing::error!(error = %inner, "storage failure");
                "storage is unavailable; try again".to_string()
            }
            ScimError::Core(pedm_core::Error::Internal(inner)) => {
                tracing::error!(error = %inner, "internal error");
                "internal error".to_string()
            }
            e => e.to_string(),
        };
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = ScimErrorBody {
            schemas: vec![ERROR_SCHEMA.into()],
            status: status.as_u16().to_string(),
            scim_type: scim_type.map(str::to_string),
            detail,
        };
        let mut r = scim_json(status, serde_json::to_value(body).unwrap_or(Value::Null));
        if status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"pedm-scim\""),
            );
        }
        r
    }
}

type SResult<T> = Result<T, ScimErr>;

fn scim_json(status: StatusCode, v: Value) -> Response {
    let mut r = (status, Json(v)).into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    r
}

fn ok(v: Value) -> SResult<Response> {
    Ok(scim_json(StatusCode::OK, v))
}

async fn scim_not_found() -> Response {
    ScimErr(ScimError::NotFound("resource".into())).into_response()
}

/// The authenticated SCIM client. `/scim/v2` is 404 unless `[scim] enabled`.
struct Scim(ScimClient);

impl FromRequestParts<AppState> for Scim {
    type Rejection = ScimErr;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ScimErr> {
        if !state.scim {
            return Err(ScimErr(ScimError::NotFound(
                "SCIM (it is off: [scim] enabled = false)".into(),
            )));
        }
        let source = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip().to_string());
        let presented = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .map(str::trim)
            .unwrap_or("");
        Ok(Scim(
            state
                .cp
                .scim_authenticate(presented, source.as_deref())
                .await?,
        ))
    }
}

/// A JSON body (`application/scim+json` or `application/json`).
fn body<T: serde::de::DeserializeOwned>(b: &Bytes) -> SResult<T> {
    serde_json::from_slice(b).map_err(|e| {
        ScimErr(ScimError::InvalidSyntax(format!(
            "the body is not a valid SCIM resource: {e}"
        )))
    })
}

/// `GET /Users?…` (RFC 7644 §3.4.2); numbers arrive as text, checked here.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListQuery {
    filter: Option<String>,
    start_index: Option<String>,
    count: Option<String>,
    attributes: Option<String>,
    excluded_attributes: Option<String>,
}

/// `GET /Users/{id}?attributes=…`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ResourceQuery {
    attributes: Option<String>,
    excluded_attributes: Option<String>,
}

impl ResourceQuery {
    fn projection(&self) -> SResult<Projection> {
        Ok(Projection::from_query(
            self.attributes.as_deref(),
            self.excluded_attributes.as_deref(),
        )?)
    }
}

/// The body of `POST …/.search` (RFC 7644 §3.4.3): the query parameters as JSON.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SearchRequest {
    #[serde(default)]
    schemas: Vec<String>,
    filter: Option<String>,
    start_index: Option<i64>,
    count: Option<i64>,
    #[serde(default)]
    attributes: Vec<String>,
    #[serde(default)]
    excluded_attributes: Vec<String>,
}

/// A list request, whether it came as a query string or a `/.search` body.
struct Listing {
    filter: Option<String>,
    start_index: Option<i64>,
    count: Option<i64>,
    projection: Projection,
}

impl TryFrom<ListQuery> for Listing {
    type Error = ScimErr;
    fn try_from(q: ListQuery) -> SResult<Listing> {
        let num = |v: &Option<String>, what: &str| -> SResult<Option<i64>> {
            v.as_deref()
                .map(|s| {
                    s.trim().parse::<i64>().map_err(|_| {
                        ScimErr(ScimError::InvalidValue(format!(
                            "{what} must be an integer"
                        )))
                    })
                })
                .transpose()
        };
        Ok(Listing {
            start_index: num(&q.start_index, "startIndex")?,
            count: num(&q.count, "count")?,
            projection: Projection::from_query(
                q.attributes.as_deref(),
                q.excluded_attributes.as_deref(),
            )?,
            filter: q.filter,
        })
    }
}

const SEARCH_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:SearchRequest";

impl TryFrom<SearchRequest> for Listing {
    type Error = ScimErr;
    fn try_from(r: SearchRequest) -> SResult<Listing> {
        if !r.schemas.iter().any(|s| s == SEARCH_SCHEMA) {
            return Err(ScimErr(ScimError::InvalidSyntax(format!(
                "a search request's schemas must be [\"{SEARCH_SCHEMA}\"]"
            ))));
        }
        Ok(Listing {
            projection: Projection::new(
                r.attributes.iter().map(String::as_str).collect(),
                r.excluded_attributes.iter().map(String::as_str).collect(),
            )?,
            filter: r.filter,
            start_index: r.start_index,
            count: r.count,
        })
    }
}

const MAX_PAGE: usize = 200;

fn page(items: Vec<Value>, q: &Listing) -> SResult<Response> {
    // RFC 7644 §3.4.2.4: startIndex < 1 is 1, count < 0 is 0.
    let start = q.start_index.unwrap_or(1).max(1) as usize;
    let count = q.count.unwrap_or(MAX_PAGE as i64).clamp(0, MAX_PAGE as i64) as usize;
    let total = items.len();
    let resources: Vec<Value> = items
        .into_iter()
        .skip(start - 1)
        .take(count)
        .map(|mut r| {
            q.projection.apply(&mut r);
            r
        })
        .collect();
    ok(json!(ListResponse {
        schemas: vec![LIST_SCHEMA.into()],
        total_results: total,
        start_index: start,
        items_per_page: resources.len(),
        resources,
    }))
}

fn user_json(v: &ScimUserView) -> Value {
    json!(ScimUser {
        schemas: vec![USER_SCHEMA.into()],
        id: Some(v.user.name.clone()),
        user_name: Some(v.user.name.clone()),
        external_id: v.link.external_id.clone(),
        display_name: v.user.display_name.clone(),
        active: Some(Value::Bool(!v.user.disabled)),
        groups: v
            .groups
            .iter()
            .map(|g| Ref {
                value: g.clone(),
                display: None,
                reference: Some(format!("/scim/v2/Groups/{g}")),
            })
            .collect(),
        meta: Some(Meta {
            resource_type: "User".into(),
            created: Some(v.user.created_at.to_string()),
            location: Some(format!("/scim/v2/Users/{}", v.user.name)),
        }),
    })
}

fn group_json(v: &ScimGroupView) -> Value {
    json!(ScimGroup {
        schemas: vec![GROUP_SCHEMA.into()],
        id: Some(v.group.name.clone()),
        display_name: Some(v.group.name.clone()),
        external_id: v.link.external_id.clone(),
        members: v
            .group
            .members
            .iter()
            .map(|m| Ref {
                value: m.clone(),
                display: None,
                reference: Some(format!("/scim/v2/Users/{m}")),
            })
            .collect(),
        meta: Some(Meta {
            resource_type: "Group".into(),
            created: Some(v.group.created_at.to_string()),
            location: Some(format!("/scim/v2/Groups/{}", v.group.name)),
        }),
    })
}

fn active_of(v: &Option<Value>) -> SResult<Option<bool>> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(Some(true)),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(Some(false)),
        Some(_) => Err(ScimErr(ScimError::InvalidValue(
            "active must be a boolean".into(),
        ))),
    }
}

fn user_name_of(u: &ScimUser) -> SResult<&str> {
    u.user_name
        .as_deref()
        .ok_or_else(|| ScimErr(ScimError::InvalidValue("userName is required".into())))
}

// ---------------------------------------------------------------- users

async fn list_users(
    State(s): State<AppState>,
    Scim(c): Scim,
    Query(q): Query<ListQuery>,
) -> SResult<Response> {
    users(&s, &c, q.try_into()?).await
}

async fn search_users(State(s): State<AppState>, Scim(c): Scim, b: Bytes) -> SResult<Response> {
    users(&s, &c, body::<SearchRequest>(&b)?.try_into()?).await
}

async fn users(s: &AppState, c: &ScimClient, q: Listing) -> SResult<Response> {
    let users = s.cp.scim_users(c).await?;
    fn keys(u: &ScimUserView) -> (&str, Option<&str>) {
        (&u.user.name, u.link.external_id.as_deref())
    }
    resources(users, &q, "username", keys, user_json)
}

/// A listing: filtered (`eq` on the name attribute, which is also the `id`, or on
/// `externalId`), paged and projected.
fn resources<T>(
    mut items: Vec<T>,
    q: &Listing,
    name_attribute: &str,
    keys: impl Fn(&T) -> (&str, Option<&str>),
    to_json: impl Fn(&T) -> Value,
) -> SResult<Response> {
    if let Some(f) = &q.filter {
        let f = parse_filter(f, &[name_attribute, "externalid", "id"])?;
        items.retain(|item| {
            let (name, external_id) = keys(item);
            match f.attribute.as_str() {
                "externalid" => external_id == Some(f.value.as_str()),
                _ => name.eq_ignore_ascii_case(&f.value),
            }
        });
    }
    page(items.iter().map(to_json).collect(), q)
}

async fn create_user(State(s): State<AppState>, Scim(c): Scim, b: Bytes) -> SResult<Response> {
    let u: ScimUser = body(&b)?;
    let change = UserChange {
        display_name: Some(u.display_name.clone()),
        external_id: Some(u.external_id.clone()),
        active: active_of(&u.active)?,
    };
    let v = s.cp.scim_create_user(&c, user_name_of(&u)?, change).await?;
    Ok(scim_json(StatusCode::CREATED, user_json(&v)))
}

async fn get_user(
    State(s): State<AppState>,
    Scim(c): Scim,
    Path(id): Path<String>,
    Query(q): Query<ResourceQuery>,
) -> SResult<Response> {
    let projection = q.projection()?;
    let mut v = user_json(&s.cp.scim_user(&c, &id).await?);
    projection.apply(&mut v);
    ok(v)
}

async fn replace_user(
    State(s): State<AppState>,
    Scim(c): Scim,
    Path(id): Path<String>,
    b: Bytes,
) -> SResult<Response> {
    let u: ScimUser = body(&b)?;
    let change = UserChange {
        display_name: Some(u.display_name.clone()),
        external_id: Some(u.external_id.clone()),
        // PUT replaces: an absent `active` is the default, true.
        active: Some(active_of(&u.active)?.unwrap_or(true)),
    };
    let v =
        s.cp.scim_update_user(&c, &id, Some(user_name_of(&u)?), change)
            .await?;
    ok(user_json(&v))
}

async fn patch_user(
    State(s): State<AppState>,
    Scim(c): Scim,
    Path(id): Path<String>,
    b: Bytes,
) -> SResult<Response> {
    let p: PatchRequest = body(&b)?;
    let change = user_patch(&p.operations)?;
    let v = s.cp.scim_update_user(&c, &id, None, change).await?;
    ok(user_json(&v))
}

async fn delete_user(
    State(s): State<AppState>,
    Scim(c): Scim,
    Path(id): Path<String>,
) -> SResult<Response> {
    s.cp.scim_delete_user(&c, &id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---------------------------------------------------------------- groups

async fn list_groups(
    State(s): State<AppState>,
    Scim(c): Scim,
    Query(q): Query<ListQuery>,
) -> SResult<Response> {
    groups(&s, &c, q.try_into()?).await
}

async fn search_groups(State(s): State<AppState>, Scim(c): Scim, b: Bytes) -> SResult<Response> {
    groups(&s, &c, body::<SearchRequest>(&b)?.try_into()?).await
}

async fn groups(s: &AppState, c: &ScimClient, q: Listing) -> SResult<Response> {
    let groups = s.cp.scim_groups(c).await?;
    fn keys(g: &ScimGroupView) -> (&str, Option<&str>) {
        (&g.group.name, g.link.external_id.as_deref())
    }
    resources(groups, &q, "displayname", keys, group_json)
}

fn ids(refs: &[Ref]) -> Vec<String> {
    refs.iter().map(|r| r.value.clone()).collect()
}

async fn create_group(State(s): State<AppState>, Scim(c): Scim, b: Bytes) -> SResult<Response> {
    let g: ScimGroup = body(&b)?;
    let name = g
        .display_name
        .as_deref()
        .ok_or_else(|| ScimErr(ScimError::InvalidValue("displayName is required".into())))?;
    let v =
        s.cp.scim_create_group(&c, name, g.external_id.clone(), &ids(&g.members))
            .await?;
    Ok(scim_json(StatusCode::CREATED, group_json(&v)))
}

async fn get_group(
    State(s): State<AppState>,
    Scim(c): Scim,
    Path(id): Path<String>,
    Query(q): Query<ResourceQuery>,
) -> SResult<Response> {
    let projection = q.projection()?;
    let mut v = group_json(&s.cp.scim_group(&c, &id).await?);
    projection.apply(&mut v);
    ok(v)
}

/// `POST /.search` over every resource type: not offered (RFC 7644 §3.12 answers 501); search
/// `/Users/.search` or `/Groups/.search`.
async fn search_everything(Scim(_): Scim) -> SResult<Response> {
    Err(ScimErr(ScimError::NotImplemented(
        "searching several resource types at once; use /Users/.search or /Groups/.search".into(),
    )))
}

async fn replace_group(
    State(s): State<AppState>,
    Scim(c): Scim,
    Path(id): Path<String>,
    b: Bytes,
) -> SResult<Response> {
    let g: ScimGroup = body(&b)?;
    let v =
        s.cp.scim_update_group(
            &c,
            &id,
            g.display_name.as_deref(),
            Some(g.external_id.clone()),
            MemberChange::Replace(ids(&g.members)),
        )
        .await?;
    ok(group_json(&v))
}

async fn patch_group(
    State(s): State<AppState>,
    Scim(c): Scim,
    Path(id): Path<String>,
    b: Bytes,
) -> SResult<Response> {
    let p: PatchRequest = body(&b)?;
    let (change, external_id, display_name) = group_patch(&p.operations)?;
    let v =
        s.cp.scim_update_group(&c, &id, display_name.as_deref(), external_id, change)
            .await?;
    ok(group_json(&v))
}

async fn delete_group(
    State(s): State<AppState>,
    Scim(c): Scim,
    Path(id): Path<String>,
) -> SResult<Response> {
    s.cp.scim_delete_group(&c, &id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
