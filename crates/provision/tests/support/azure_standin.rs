//! A stand-in for the three Azure APIs the `azure` provisioner calls, because Azure's APIs
//! cannot run on this machine. Written from Microsoft's REST reference and checked once
//! with the official Python client (`scripts/cloud-clients/azure_check.py`):
//!
//! - Entra ID's token endpoint, `POST /{tenant}/oauth2/v2.0/token` (client credentials;
//!   `invalid_client` 401 for a wrong secret);
//! - Azure Resource Manager role assignments, `{scope}/providers/Microsoft.Authorization/
//!   roleAssignments[/{name}]?api-version=…`: `PUT` (201, 409 `RoleAssignmentExists`),
//!   `GET`, `DELETE` (200 with the assignment, 204 when there is none), listing with
//!   `$filter=atScope()` or `principalId eq '…'` and `nextLink` pages; a missing
//!   `api-version` is 400 `MissingApiVersionParameter`, a missing or unknown bearer token
//!   401 `AuthenticationFailed`;
//! - Microsoft Graph v1.0: `users/{upn or id}`, `directoryObjects/{id}`, group members
//!   (`members/$ref` add and remove, listing with `@odata.nextLink`).
//!
//! One URL serves all three (the provisioner takes `authority_url`, `management_url` and
//! `graph_url` separately). Test controls: directory objects, planted assignments, `down`
//! (503 with `Retry-After`), `throttle_next(n)` (429 with `Retry-After: 1`), the page size,
//! the number of token requests, forgetting every issued token.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::standin::{StandIn, serve_tls};

/// The API versions of role assignments ARM takes (the stand-in answers them all alike).
const API_VERSIONS: &[&str] = &[
    "2015-07-01",
    "2018-01-01-preview",
    "2020-04-01-preview",
    "2020-10-01-preview",
    "2022-04-01",
];
const MARKER: &str = "/providers/microsoft.authorization/roleassignments";

#[derive(Clone)]
struct Assignment {
    scope: String,
    role_definition_id: String,
    principal_id: String,
    principal_type: String,
    created: String,
}

enum Object {
    User {
        upn: String,
    },
    Group {
        name: String,
        members: BTreeSet<String>,
    },
    ServicePrincipal {
        app_id: String,
        name: String,
    },
}

struct Inner {
    url: String,
    tenant: String,
    client_id: String,
    client_secret: String,
    tokens: BTreeSet<String>,
    token_requests: usize,
    /// Directory objects by lower-case object id.
    objects: BTreeMap<String, Object>,
    /// Role assignments by lower-case name.
    assignments: BTreeMap<String, Assignment>,
    down: bool,
    throttle: usize,
    throttled: usize,
    page_size: usize,
}

type Shared = Arc<Mutex<Inner>>;

pub struct AzureStandIn {
    pub url: String,
    pub ca_file: PathBuf,
    state: Shared,
    _server: StandIn,
}

fn lock(s: &Shared) -> MutexGuard<'_, Inner> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

fn new_id() -> String {
    Uuid::now_v7().to_string()
}

impl AzureStandIn {
    pub async fn start(tenant: &str, client_id: &str, client_secret: &str) -> Self {
        let state: Shared = Arc::new(Mutex::new(Inner {
            url: String::new(),
            tenant: tenant.into(),
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            tokens: BTreeSet::new(),
            token_requests: 0,
            objects: BTreeMap::new(),
            assignments: BTreeMap::new(),
            down: false,
            throttle: 0,
            throttled: 0,
            page_size: 100,
        }));
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(state.clone());
        let server = serve_tls(app).await;
        lock(&state).url = server.url.clone();
        AzureStandIn {
            url: server.url.clone(),
            ca_file: server.ca_file.clone(),
            state,
            _server: server,
        }
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        lock(&self.state)
    }

    /// A user; its object id.
    pub fn add_user(&self, upn: &str) -> String {
        let id = new_id();
        self.inner()
            .objects
            .insert(id.clone(), Object::User { upn: upn.into() });
        id
    }

    pub fn add_group(&self, name: &str) -> String {
        let id = new_id();
        self.inner().objects.insert(
            id.clone(),
            Object::Group {
                name: name.into(),
                members: BTreeSet::new(),
            },
        );
        id
    }

    pub fn add_service_principal(&self, app_id: &str, name: &str) -> String {
        let id = new_id();
        self.inner().objects.insert(
            id.clone(),
            Object::ServicePrincipal {
                app_id: app_id.into(),
                name: name.into(),
            },
        );
        id
    }

    pub fn user_id(&self, upn: &str) -> String {
        self.inner()
            .objects
            .iter()
            .find_map(|(id, o)| match o {
                Object::User { upn: u } if u.eq_ignore_ascii_case(upn) => Some(id.clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no user {upn} in the stand-in"))
    }

    /// An assignment made by hand (the portal); its name.
    pub fn plant(&self, scope: &str, role: &str, principal: &str) -> String {
        let mut s = self.inner();
        let principal_type = match s.objects.get(principal) {
            Some(Object::User { .. }) => "User",
            Some(Object::Group { .. }) => "Group",
            Some(Object::ServicePrincipal { .. }) => "ServicePrincipal",
            None => panic!("no principal {principal}"),
        };
        let name = new_id();
        let a = Assignment {
            scope: scope.into(),
            role_definition_id: role_definition_id(scope, role),
            principal_id: principal.into(),
            principal_type: principal_type.into(),
            created: jiff::Timestamp::now().to_string(),
        };
        s.assignments.insert(name.clone(), a);
        name
    }

    /// Whether `principal` holds `role` (a GUID) at exactly `scope`.
    pub fn has(&self, scope: &str, role: &str, principal: &str) -> bool {
        self.inner()
            .assignments
            .values()
            .any(|a| matches(a, scope, role, principal))
    }

    /// An admin deletes `principal`'s `role` at `scope` by hand.
    pub fn remove(&self, scope: &str, role: &str, principal: &str) {
        self.inner()
            .assignments
            .retain(|_, a| !matches(a, scope, role, principal));
    }

    pub fn assignment_count(&self) -> usize {
        self.inner().assignments.len()
    }

    pub fn is_member(&self, group: &str, id: &str) -> bool {
        matches!(self.inner().objects.get(group),
            Some(Object::Group { members, .. }) if members.contains(id))
    }

    pub fn remove_member(&self, group: &str, id: &str) {
        if let Some(Object::Group { members, .. }) = self.inner().objects.get_mut(group) {
            members.remove(id);
        }
    }

    /// While down every request is answered 503 with `Retry-After: 1`.
    pub fn set_down(&self, down: bool) {
        self.inner().down = down;
    }

    /// The next `n` requests are answered 429 with `Retry-After: 1`.
    pub fn throttle_next(&self, n: usize) {
        self.inner().throttle = n;
    }

    /// How many requests were answered 429.
    pub fn throttled(&self) -> usize {
        self.inner().throttled
    }

    pub fn token_requests(&self) -> usize {
        self.inner().token_requests
    }

    /// Every token issued so far stops working (as when it is revoked or expires early).
    pub fn forget_tokens(&self) {
        self.inner().tokens.clear();
    }

    /// A token the stand-in takes, as the token endpoint would issue one.
    pub fn issue_token(&self) -> String {
        let t = format!("standin-token-{}", Uuid::now_v7().simple());
        self.inner().tokens.insert(t.clone());
        t
    }

    pub fn set_page_size(&self, n: usize) {
        self.inner().page_size = n;
    }
}

fn role_guid(id: &str) -> &str {
    id.rsplit('/').next().unwrap_or(id)
}

fn role_definition_id(scope: &str, role: &str) -> String {
    let sub: Vec<&str> = scope.split('/').take(3).collect();
    format!(
        "{}/providers/Microsoft.Authorization/roleDefinitions/{role}",
        sub.join("/")
    )
}

fn matches(a: &Assignment, scope: &str, role: &str, principal: &str) -> bool {
    a.scope.eq_ignore_ascii_case(scope)
        && role_guid(&a.role_definition_id).eq_ignore_ascii_case(role)
        && a.principal_id.eq_ignore_ascii_case(principal)
}

fn is_guid(s: &str) -> bool {
    s.len() == 36 && Uuid::parse_str(s).is_ok()
}

/// `%XX` decoded (paths and form bodies).
fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Some(v) = std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn pairs(q: &str) -> BTreeMap<String, String> {
    reqwest::Url::parse(&format!("http://x/?{q}"))
        .map(|u| u.query_pairs().into_owned().collect())
        .unwrap_or_default()
}

fn reply(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

/// ARM's and Graph's error body.
fn error(status: StatusCode, code: &str, message: &str) -> Response {
    reply(status, json!({"error": {"code": code, "message": message}}))
}

async fn handle(
    State(s): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut st = lock(&s);
    if st.down {
        let mut r = error(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "The service is temporarily unavailable. Please retry later.",
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        return r;
    }
    if st.throttle > 0 {
        st.throttle -= 1;
        st.throttled += 1;
        let mut r = error(
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyRequests",
            "The request is being throttled as the limit has been reached for operation type \
             - Write_ObservationWindow_00:05:00.",
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        return r;
    }
    let path = uri.path().to_string();
    let query = pairs(uri.query().unwrap_or(""));
    if method == Method::POST && path.ends_with("/oauth2/v2.0/token") {
        return token(&mut st, &path, &body);
    }
    let authed = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| st.tokens.contains(t));
    if let Some(rest) = path.strip_prefix("/v1.0/") {
        if !authed {
            return error(
                StatusCode::UNAUTHORIZED,
                "InvalidAuthenticationToken",
                "Access token validation failure. Invalid audience.",
            );
        }
        let segs: Vec<String> = rest.split('/').map(decode).collect();
        return graph(&mut st, &method, &segs, &query, &body);
    }
    if !authed {
        let (code, msg) = if headers.contains_key(header::AUTHORIZATION) {
            ("InvalidAuthenticationToken", "The access token is invalid.")
        } else {
            (
                "AuthenticationFailed",
                "Authentication failed. The 'Authorization' header is missing.",
            )
        };
        return error(StatusCode::UNAUTHORIZED, code, msg);
    }
    arm(&mut st, &method, &path, &query, &body)
}

fn token(st: &mut Inner, path: &str, body: &Bytes) -> Response {
    st.token_requests += 1;
    let f = pairs(&String::from_utf8_lossy(body));
    let get = |k: &str| f.get(k).map(String::as_str).unwrap_or("");
    let aad = |status: StatusCode, code: &str, desc: &str| {
        reply(
            status,
            json!({"error": code, "error_description": desc, "error_codes": [],
                   "timestamp": jiff::Timestamp::now().to_string(),
                   "trace_id": new_id(), "correlation_id": new_id()}),
        )
    };
    if path != format!("/{}/oauth2/v2.0/token", st.tenant) {
        return aad(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "AADSTS90002: Tenant not found.",
        );
    }
    if get("grant_type") != "client_credentials" {
        return aad(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "AADSTS70003: The app requested an unsupported grant type.",
        );
    }
    if get("client_id") != st.client_id {
        return aad(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            &format!(
                "AADSTS700016: Application with identifier '{}' was not found in the directory.",
                get("client_id")
            ),
        );
    }
    if get("client_secret") != st.client_secret {
        return aad(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in \
             the request is the client secret value, not the client secret ID.",
        );
    }
    if !get("scope").ends_with("/.default") {
        return aad(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "AADSTS1002012: The provided value for scope is not valid. Client credential \
             flows must have a scope value with /.default suffixed to the resource identifier.",
        );
    }
    let t = format!("standin-token-{}", Uuid::now_v7().simple());
    st.tokens.insert(t.clone());
    reply(
        StatusCode::OK,
        json!({"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599,
               "access_token": t}),
    )
}

// ---------------------------------------------------------------------------------------
// Azure Resource Manager: role assignments
// ---------------------------------------------------------------------------------------

fn render(name: &str, a: &Assignment) -> Value {
    json!({
        "properties": {
            "roleDefinitionId": a.role_definition_id,
            "principalId": a.principal_id,
            "principalType": a.principal_type,
            "scope": a.scope,
            "condition": null,
            "conditionVersion": null,
            "createdOn": a.created,
            "updatedOn": a.created,
            "createdBy": null,
            "updatedBy": null,
            "delegatedManagedIdentityResourceId": null,
            "description": null,
        },
        "id": format!("{}/providers/Microsoft.Authorization/roleAssignments/{name}", a.scope),
        "type": "Microsoft.Authorization/roleAssignments",
        "name": name,
    })
}

/// `a` at or above `scope` (a prefix of it, segment-wise).
fn at_or_above(a: &str, scope: &str) -> bool {
    let (a, s) = (a.to_ascii_lowercase(), scope.to_ascii_lowercase());
    s == a || s.starts_with(&format!("{a}/"))
}

fn below(a: &str, scope: &str) -> bool {
    at_or_above(scope, a) && !a.eq_ignore_ascii_case(scope)
}

fn arm(
    st: &mut Inner,
    method: &Method,
    path: &str,
    query: &BTreeMap<String, String>,
    body: &Bytes,
) -> Response {
    let lower = path.to_ascii_lowercase();
    let Some(at) = lower.find(MARKER) else {
        return error(
            StatusCode::NOT_FOUND,
            "InvalidResourceType",
            "The resource type could not be found in the namespace.",
        );
    };
    let Some(version) = query.get("api-version") else {
        return error(
            StatusCode::BAD_REQUEST,
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        );
    };
    if !API_VERSIONS.contains(&version.as_str()) {
        return error(
            StatusCode::BAD_REQUEST,
            "InvalidApiVersionParameter",
            &format!(
                "The api-version '{version}' is invalid. The supported versions are '{}'.",
                API_VERSIONS.join(",")
            ),
        );
    }
    // Clients that join "/{scope}" with a scope starting with "/" send "//subscriptions/…".
    let scope = format!("/{}", path[..at].trim_start_matches('/'));
    let valid_scope = {
        let parts: Vec<&str> = scope[1..].split('/').collect();
        parts.len() >= 2 && parts[0].eq_ignore_ascii_case("subscriptions") && is_guid(parts[1])
    };
    if !valid_scope {
        return error(
            StatusCode::BAD_REQUEST,
            "InvalidScope",
            &format!("The scope '{scope}' is not valid."),
        );
    }
    let rest = &path[at + MARKER.len()..];
    match (method, rest.strip_prefix('/')) {
        (&Method::GET, None) if rest.is_empty() => list(st, &scope, query),
        (m, Some(name)) if !name.is_empty() && !name.contains('/') => {
            if !is_guid(name) {
                return error(
                    StatusCode::BAD_REQUEST,
                    "InvalidRoleAssignmentId",
                    &format!(
                        "The role assignment ID '{name}' is not valid. The role assignment ID \
                         must be a GUID."
                    ),
                );
            }
            let key = name.to_ascii_lowercase();
            match *m {
                Method::GET => match st.assignments.get(&key) {
                    Some(a) if a.scope.eq_ignore_ascii_case(&scope) => {
                        reply(StatusCode::OK, render(&key, a))
                    }
                    _ => error(
                        StatusCode::NOT_FOUND,
                        "RoleAssignmentNotFound",
                        &format!("The role assignment '{name}' is not found."),
                    ),
                },
                Method::DELETE => {
                    let here = st
                        .assignments
                        .get(&key)
                        .is_some_and(|a| a.scope.eq_ignore_ascii_case(&scope));
                    match here.then(|| st.assignments.remove(&key)).flatten() {
                        Some(a) => reply(StatusCode::OK, render(&key, &a)),
                        None => StatusCode::NO_CONTENT.into_response(),
                    }
                }
                Method::PUT => create(st, &scope, &key, body),
                _ => error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "MethodNotAllowed",
                    "The requested method is not allowed.",
                ),
            }
        }
        _ => error(
            StatusCode::NOT_FOUND,
            "InvalidResourceType",
            "The resource type could not be found in the namespace.",
        ),
    }
}

fn create(st: &mut Inner, scope: &str, name: &str, body: &Bytes) -> Response {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "InvalidRequestContent",
            "The request content was invalid and could not be deserialized.",
        );
    };
    let p = &v["properties"];
    let (Some(role_id), Some(principal)) =
        (p["roleDefinitionId"].as_str(), p["principalId"].as_str())
    else {
        return error(
            StatusCode::BAD_REQUEST,
            "InvalidRequestContent",
            "The request content was invalid: roleDefinitionId and principalId are required.",
        );
    };
    if p.get("condition").is_some_and(|c| !c.is_null()) {
        return error(
            StatusCode::BAD_REQUEST,
            "InvalidRequestContent",
            "pedm's stand-in does not take conditions.",
        );
    }
    let lower = role_id.to_ascii_lowercase();
    let parts: Vec<&str> = lower.split('/').collect();
    let role_ok = parts.len() == 7
        && parts[1] == "subscriptions"
        && parts[3] == "providers"
        && parts[4] == "microsoft.authorization"
        && parts[5] == "roledefinitions"
        && is_guid(parts[6]);
    if !role_ok {
        return error(
            StatusCode::BAD_REQUEST,
            "InvalidRoleDefinitionId",
            &format!("The role definition ID '{role_id}' is not valid."),
        );
    }
    let principal = principal.to_ascii_lowercase();
    let actual = match st.objects.get(&principal) {
        Some(Object::User { .. }) => "User",
        Some(Object::Group { .. }) => "Group",
        Some(Object::ServicePrincipal { .. }) => "ServicePrincipal",
        None => {
            return error(
                StatusCode::BAD_REQUEST,
                "PrincipalNotFound",
                &format!(
                    "Principal {} does not exist in the directory {}. Check that you have the \
                     correct principal ID.",
                    principal.replace('-', ""),
                    st.tenant
                ),
            );
        }
    };
    let principal_type = p["principalType"].as_str().unwrap_or(actual);
    if principal_type != actual {
        return error(
            StatusCode::BAD_REQUEST,
            "UnmatchedPrincipalType",
            &format!(
                "The PrincipalId '{principal}' has type '{actual}' , which is different from \
                 specified PrincipalType '{principal_type}'."
            ),
        );
    }
    let role = role_guid(role_id).to_string();
    if let Some(existing) = st.assignments.get(name) {
        return if matches(existing, scope, &role, &principal) {
            reply(StatusCode::CREATED, render(name, existing))
        } else {
            error(
                StatusCode::BAD_REQUEST,
                "RoleAssignmentUpdateNotPermitted",
                "Tenant ID, application ID, principal ID, and scope are not allowed to be \
                 updated.",
            )
        };
    }
    if st
        .assignments
        .values()
        .any(|a| matches(a, scope, &role, &principal))
    {
        return error(
            StatusCode::CONFLICT,
            "RoleAssignmentExists",
            "The role assignment already exists.",
        );
    }
    let a = Assignment {
        scope: scope.into(),
        role_definition_id: role_id.into(),
        principal_id: principal,
        principal_type: principal_type.into(),
        created: jiff::Timestamp::now().to_string(),
    };
    let out = render(name, &a);
    st.assignments.insert(name.into(), a);
    reply(StatusCode::CREATED, out)
}

fn list(st: &Inner, scope: &str, query: &BTreeMap<String, String>) -> Response {
    let filter = query.get("$filter").map(String::as_str).unwrap_or("");
    let keep: Box<dyn Fn(&Assignment) -> bool> = if filter.is_empty() {
        Box::new(|a| at_or_above(&a.scope, scope) || below(&a.scope, scope))
    } else if filter == "atScope()" {
        Box::new(|a| at_or_above(&a.scope, scope))
    } else if let Some(id) = filter
        .strip_prefix("principalId eq '")
        .and_then(|r| r.strip_suffix('\''))
    {
        let id = id.to_ascii_lowercase();
        Box::new(move |a| {
            a.principal_id == id && (at_or_above(&a.scope, scope) || below(&a.scope, scope))
        })
    } else {
        return error(
            StatusCode::BAD_REQUEST,
            "UnsupportedQuery",
            &format!("The filter '{filter}' is not supported."),
        );
    };
    let all: Vec<Value> = st
        .assignments
        .iter()
        .filter(|(_, a)| keep(a))
        .map(|(n, a)| render(n, a))
        .collect();
    let skip: usize = query
        .get("$skiptoken")
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    let page: Vec<Value> = all.iter().skip(skip).take(st.page_size).cloned().collect();
    let mut out = json!({"value": page});
    if skip + st.page_size < all.len() {
        let mut next = reqwest::Url::parse(&format!(
            "{}{scope}/providers/Microsoft.Authorization/roleAssignments",
            st.url
        ))
        .expect("a URL");
        {
            let mut q = next.query_pairs_mut();
            if let Some(v) = query.get("api-version") {
                q.append_pair("api-version", v);
            }
            if !filter.is_empty() {
                q.append_pair("$filter", filter);
            }
            q.append_pair("$skiptoken", &(skip + st.page_size).to_string());
        }
        out["nextLink"] = json!(next.as_str());
    }
    reply(StatusCode::OK, out)
}

// ---------------------------------------------------------------------------------------
// Microsoft Graph v1.0
// ---------------------------------------------------------------------------------------

fn not_found(what: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "Request_ResourceNotFound",
        &format!(
            "Resource '{what}' does not exist or one of its queried reference-property objects \
             are not present."
        ),
    )
}

fn object_json(id: &str, o: &Object) -> Value {
    match o {
        Object::User { upn } => json!({"@odata.type": "#microsoft.graph.user", "id": id,
            "userPrincipalName": upn, "displayName": upn}),
        Object::Group { name, .. } => {
            json!({"@odata.type": "#microsoft.graph.group", "id": id, "displayName": name})
        }
        Object::ServicePrincipal { app_id, name } => json!({
            "@odata.type": "#microsoft.graph.servicePrincipal", "id": id, "appId": app_id,
            "displayName": name}),
    }
}

fn graph(
    st: &mut Inner,
    method: &Method,
    segs: &[String],
    query: &BTreeMap<String, String>,
    body: &Bytes,
) -> Response {
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    match (method, segs.as_slice()) {
        (&Method::GET, ["users", key]) => {
            let found = st.objects.iter().find(|(id, o)| {
                matches!(o, Object::User { upn } if upn.eq_ignore_ascii_case(key)
                    || id.eq_ignore_ascii_case(key))
            });
            match found {
                Some((id, Object::User { upn })) => reply(
                    StatusCode::OK,
                    json!({"@odata.context": format!("{}/v1.0/$metadata#users/$entity", st.url),
                           "id": id, "userPrincipalName": upn}),
                ),
                _ => not_found(key),
            }
        }
        (&Method::GET, ["directoryObjects", id]) => {
            match st.objects.get(&id.to_ascii_lowercase()) {
                Some(o) => reply(StatusCode::OK, object_json(id, o)),
                None => not_found(id),
            }
        }
        (&Method::POST, ["groups", gid, "members", "$ref"]) => {
            let Ok(v) = serde_json::from_slice::<Value>(body) else {
                return error(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "Unable to read JSON request payload.",
                );
            };
            let prefix = format!("{}/v1.0/directoryObjects/", st.url);
            let Some(id) = v["@odata.id"]
                .as_str()
                .and_then(|r| r.strip_prefix(&prefix))
                .map(str::to_ascii_lowercase)
            else {
                return error(
                    StatusCode::BAD_REQUEST,
                    "Request_BadRequest",
                    "Invalid URL format specified in @odata.id for members.",
                );
            };
            if !st.objects.contains_key(&id) {
                return not_found(&id);
            }
            match st.objects.get_mut(&gid.to_ascii_lowercase()) {
                Some(Object::Group { members, .. }) => {
                    if members.insert(id) {
                        StatusCode::NO_CONTENT.into_response()
                    } else {
                        error(
                            StatusCode::BAD_REQUEST,
                            "Request_BadRequest",
                            "One or more added object references already exist for the \
                             following modified properties: 'members'.",
                        )
                    }
                }
                _ => not_found(gid),
            }
        }
        (&Method::DELETE, ["groups", gid, "members", id, "$ref"]) => {
            match st.objects.get_mut(&gid.to_ascii_lowercase()) {
                Some(Object::Group { members, .. }) => {
                    if members.remove(&id.to_ascii_lowercase()) {
                        StatusCode::NO_CONTENT.into_response()
                    } else {
                        not_found(id)
                    }
                }
                _ => not_found(gid),
            }
        }
        (&Method::GET, ["groups", gid, "members"]) => {
            let Some(Object::Group { members, .. }) = st.objects.get(&gid.to_ascii_lowercase())
            else {
                return not_found(gid);
            };
            let all: Vec<Value> = members
                .iter()
                .filter_map(|m| st.objects.get(m).map(|o| object_json(m, o)))
                .collect();
            let skip: usize = query
                .get("$skiptoken")
                .and_then(|t| t.parse().ok())
                .unwrap_or(0);
            let page: Vec<Value> = all.iter().skip(skip).take(st.page_size).cloned().collect();
            let mut out = json!({
                "@odata.context": format!("{}/v1.0/$metadata#directoryObjects", st.url),
                "value": page});
            if skip + st.page_size < all.len() {
                out["@odata.nextLink"] = json!(format!(
                    "{}/v1.0/groups/{gid}/members?$select=id&$skiptoken={}",
                    st.url,
                    skip + st.page_size
                ));
            }
            reply(StatusCode::OK, out)
        }
        _ => error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "Resource not found for the segment.",
        ),
    }
}
