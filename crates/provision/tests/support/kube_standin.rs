//! A protocol-faithful stand-in of the Kubernetes API server's RBAC and SelfSubjectReview
//! endpoints, written from the Kubernetes API reference (rbac.authorization.k8s.io/v1,
//! authentication.k8s.io/v1): the same paths and verbs, `metav1.Status` error bodies with
//! their reasons (`Unauthorized`, `NotFound`, `AlreadyExists`, `Conflict`, `Invalid`),
//! `resourceVersion` checked on replace, list pagination with `limit` and `continue`, and
//! `429` with `Retry-After` when told to throttle; bearer tokens are static ones, bound
//! service-account tokens (refused once their Secret is gone), or ID tokens of a trusted OIDC
//! issuer checked as the API server's OIDC authenticator does. It exists because no Kubernetes API server
//! runs on this machine; `scripts/cloud-clients/kube_check.py` drives it with the official
//! `kubernetes` Python client so it cannot drift from the real API unnoticed.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::standin::{StandIn, serve_tls};

const GROUP: &str = "rbac.authorization.k8s.io";

#[derive(Default)]
pub struct KubeState {
    /// bearer token → username.
    pub tokens: BTreeMap<String, String>,
    /// (namespace, name) → binding; namespace "" for ClusterRoleBindings.
    pub bindings: BTreeMap<(String, String), Value>,
    pub resource_version: u64,
    /// Answer 503 (no Retry-After) to everything.
    pub down: bool,
    /// Answer the next N requests 429 with `Retry-After: 1`.
    pub throttle: u32,
    /// Requests answered 429 so far.
    pub throttled: u32,
    /// Items per list page.
    pub page_size: usize,
    /// (namespace, name) of service accounts.
    pub service_accounts: std::collections::BTreeSet<(String, String)>,
    /// (namespace, name) → uid of Secrets.
    pub secrets: BTreeMap<(String, String), String>,
    /// Token → (username, the Secret it is bound to): valid while that Secret exists.
    pub bound_tokens: BTreeMap<String, (String, (String, String))>,
    /// The `expirationSeconds` of each TokenRequest, in order.
    pub token_requests: Vec<u64>,
    /// An OIDC issuer the API server trusts, as `--oidc-issuer-url` makes it.
    pub oidc: Option<OidcTrust>,
}

/// An OIDC issuer the API server trusts (`--oidc-issuer-url`, `--oidc-client-id`,
/// `--oidc-username-claim=sub`, `--oidc-username-prefix`), with the P-256 keys fetched from
/// its JWKS. The real API server also insists on `https://`; here pedmd may be plain HTTP on
/// loopback.
pub struct OidcTrust {
    pub issuer: String,
    pub audience: String,
    pub prefix: String,
    /// kid → uncompressed point.
    pub keys: BTreeMap<String, Vec<u8>>,
}

impl OidcTrust {
    /// The username of a valid ID token (signature by a published key, `iss`, `aud`, `exp`,
    /// `nbf`), as the API server's OIDC authenticator decides it.
    fn user(&self, token: &str) -> Option<String> {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let parts: Vec<&str> = token.split('.').collect();
        let [header, payload, sig] = parts.as_slice() else {
            return None;
        };
        let header: Value = serde_json::from_slice(&b64.decode(header).ok()?).ok()?;
        if header["alg"] != "ES256" {
            return None;
        }
        let key = self.keys.get(header["kid"].as_str()?)?;
        let signed = &token[..token.rfind('.')?];
        aws_lc_rs::signature::UnparsedPublicKey::new(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED,
            key,
        )
        .verify(signed.as_bytes(), &b64.decode(sig).ok()?)
        .ok()?;
        let claims: Value = serde_json::from_slice(&b64.decode(payload).ok()?).ok()?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?
            .as_secs() as i64;
        let aud_ok = match &claims["aud"] {
            Value::String(a) => *a == self.audience,
            Value::Array(a) => a.iter().any(|a| *a == self.audience.as_str()),
            _ => false,
        };
        (claims["iss"] == self.issuer.as_str()
            && aud_ok
            && claims["exp"].as_i64()? > now
            && claims["nbf"].as_i64().unwrap_or(0) <= now)
            .then(|| {
                format!(
                    "{}{}",
                    self.prefix,
                    claims["sub"].as_str().unwrap_or_default()
                )
            })
            .filter(|u| u.len() > self.prefix.len())
    }
}

pub struct KubeStandIn {
    pub state: Arc<Mutex<KubeState>>,
    pub tls: StandIn,
}

impl KubeStandIn {
    /// Trusts `issuer` as the API server does at start: its discovery document (whose
    /// `issuer` must be exactly `issuer`), then the P-256 keys of its `jwks_uri`.
    pub async fn trust_oidc(&self, issuer: &str, audience: &str, prefix: &str) {
        let get = |url: String| async move {
            reqwest::get(&url)
                .await
                .and_then(|r| r.error_for_status())
                .unwrap_or_else(|e| panic!("{url}: {e}"))
                .json::<Value>()
                .await
                .expect("JSON")
        };
        let discovery = get(format!("{issuer}/.well-known/openid-configuration")).await;
        assert_eq!(discovery["issuer"], issuer, "{discovery}");
        let jwks = get(discovery["jwks_uri"]
            .as_str()
            .expect("jwks_uri")
            .to_string())
        .await;
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut keys = BTreeMap::new();
        for k in jwks["keys"].as_array().expect("keys") {
            if k["kty"] == "EC" && k["crv"] == "P-256" {
                let mut point = vec![4u8];
                point.extend(b64.decode(k["x"].as_str().unwrap()).unwrap());
                point.extend(b64.decode(k["y"].as_str().unwrap()).unwrap());
                keys.insert(k["kid"].as_str().unwrap().to_string(), point);
            }
        }
        assert!(!keys.is_empty(), "{jwks}");
        self.state.lock().unwrap().oidc = Some(OidcTrust {
            issuer: issuer.to_string(),
            audience: audience.to_string(),
            prefix: prefix.to_string(),
            keys,
        });
    }

    pub async fn start(tokens: &[(&str, &str)]) -> KubeStandIn {
        let state = Arc::new(Mutex::new(KubeState {
            tokens: tokens
                .iter()
                .map(|(t, u)| (t.to_string(), u.to_string()))
                .collect(),
            page_size: 2,
            ..Default::default()
        }));
        let rbac = "/apis/rbac.authorization.k8s.io/v1";
        let app = Router::new()
            .route(
                &format!("{rbac}/clusterrolebindings"),
                get(list_cluster).post(create_cluster),
            )
            .route(
                &format!("{rbac}/clusterrolebindings/{{name}}"),
                get(one_cluster).put(one_cluster).delete(one_cluster),
            )
            .route(&format!("{rbac}/rolebindings"), get(list_all_namespaced))
            .route(
                &format!("{rbac}/namespaces/{{ns}}/rolebindings"),
                get(list_namespaced).post(create_namespaced),
            )
            .route(
                &format!("{rbac}/namespaces/{{ns}}/rolebindings/{{name}}"),
                get(one_namespaced)
                    .put(one_namespaced)
                    .delete(one_namespaced),
            )
            .route(
                "/apis/authentication.k8s.io/v1/selfsubjectreviews",
                post(self_subject_review),
            )
            .route(
                "/api/v1/namespaces/{ns}/serviceaccounts",
                post(create_service_account),
            )
            .route(
                "/api/v1/namespaces/{ns}/serviceaccounts/{name}/token",
                post(token_request),
            )
            .route("/api/v1/namespaces/{ns}/secrets", post(create_secret))
            .route(
                "/api/v1/namespaces/{ns}/secrets/{name}",
                get(one_secret).delete(one_secret),
            )
            .with_state(state.clone());
        KubeStandIn {
            state,
            tls: serve_tls(app).await,
        }
    }

    /// Plants a binding as an admin's `kubectl create` would.
    pub fn plant(&self, namespace: Option<&str>, name: &str, cluster_role: &str, subjects: Value) {
        let mut s = self.state.lock().unwrap();
        s.resource_version += 1;
        let rv = s.resource_version.to_string();
        let kind = if namespace.is_some() {
            "RoleBinding"
        } else {
            "ClusterRoleBinding"
        };
        let mut meta = json!({"name": name, "resourceVersion": rv, "uid": format!("uid-{rv}")});
        if let Some(ns) = namespace {
            meta["namespace"] = json!(ns);
        }
        s.bindings.insert(
            (namespace.unwrap_or("").to_string(), name.to_string()),
            json!({
                "apiVersion": format!("{GROUP}/v1"), "kind": kind, "metadata": meta,
                "roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": cluster_role},
                "subjects": subjects,
            }),
        );
    }

    /// Every binding that binds `cluster_role` (in `namespace`) to `kind`/`name`.
    pub fn holds(
        &self,
        namespace: Option<&str>,
        cluster_role: &str,
        kind: &str,
        name: &str,
    ) -> bool {
        let s = self.state.lock().unwrap();
        s.bindings.iter().any(|((ns, _), b)| {
            ns == namespace.unwrap_or("")
                && b["roleRef"]["name"] == cluster_role
                && b["subjects"]
                    .as_array()
                    .is_some_and(|l| l.iter().any(|x| x["kind"] == kind && x["name"] == name))
        })
    }

    /// Deletes every binding of `cluster_role` to `kind`/`name` (an admin's `kubectl delete`).
    pub fn delete_matching(
        &self,
        namespace: Option<&str>,
        cluster_role: &str,
        kind: &str,
        name: &str,
    ) {
        let mut s = self.state.lock().unwrap();
        s.bindings.retain(|(ns, _), b| {
            !(ns == namespace.unwrap_or("")
                && b["roleRef"]["name"] == cluster_role
                && b["subjects"]
                    .as_array()
                    .is_some_and(|l| l.iter().any(|x| x["kind"] == kind && x["name"] == name)))
        });
    }
}

type Shared = State<Arc<Mutex<KubeState>>>;

fn status(code: StatusCode, reason: &str, message: &str) -> Response {
    (
        code,
        axum::Json(json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": message, "reason": reason, "code": code.as_u16(),
        })),
    )
        .into_response()
}

/// Authentication and the test's fault switches; the caller's username.
#[allow(clippy::result_large_err)] // the error is the answer itself, made once per refusal
fn gate(s: &mut KubeState, headers: &HeaderMap) -> Result<String, Response> {
    if s.down {
        return Err(status(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "the server is currently unable to handle the request",
        ));
    }
    if s.throttle > 0 {
        s.throttle -= 1;
        s.throttled += 1;
        let mut r = status(
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyRequests",
            "too many requests, please try again later",
        );
        r.headers_mut()
            .insert("Retry-After", axum::http::HeaderValue::from_static("1"));
        return Err(r);
    }
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if let Some(u) = token.and_then(|t| s.tokens.get(t)) {
        return Ok(u.clone());
    }
    if let Some(u) = token.and_then(|t| s.oidc.as_ref()?.user(t)) {
        return Ok(u);
    }
    // A bound service-account token is valid while the object it is bound to exists.
    match token.and_then(|t| s.bound_tokens.get(t)) {
        Some((u, secret)) if s.secrets.contains_key(secret) => Ok(u.clone()),
        _ => Err(status(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "Unauthorized",
        )),
    }
}

async fn self_subject_review(State(st): Shared, headers: HeaderMap) -> Response {
    let mut s = st.lock().unwrap();
    let user = match gate(&mut s, &headers) {
        Ok(u) => u,
        Err(r) => return r,
    };
    (
        StatusCode::CREATED,
        axum::Json(json!({
            "apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview",
            "metadata": {"creationTimestamp": null},
            "status": {"userInfo": {"username": user, "groups": ["system:authenticated"]}},
        })),
    )
        .into_response()
}

fn list(
    s: &KubeState,
    namespace: Option<&str>,
    all: bool,
    q: &BTreeMap<String, String>,
) -> Response {
    let kind = if namespace.is_some() || all {
        "RoleBindingList"
    } else {
        "ClusterRoleBindingList"
    };
    let items: Vec<&Value> = s
        .bindings
        .iter()
        .filter(|((ns, _), _)| match (namespace, all) {
            (_, true) => !ns.is_empty(),
            (Some(n), _) => ns == n,
            (None, _) => ns.is_empty(),
        })
        .map(|(_, v)| v)
        .collect();
    let start: usize = q.get("continue").and_then(|c| c.parse().ok()).unwrap_or(0);
    let limit: usize = q
        .get("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(usize::MAX)
        .min(s.page_size.max(1));
    let page: Vec<&Value> = items.iter().skip(start).take(limit).copied().collect();
    let next = start + page.len();
    let mut meta = json!({"resourceVersion": s.resource_version.to_string()});
    if next < items.len() {
        meta["continue"] = json!(next.to_string());
    }
    axum::Json(
        json!({"apiVersion": format!("{GROUP}/v1"), "kind": kind, "metadata": meta, "items": page}),
    )
    .into_response()
}

async fn list_cluster(
    State(st): Shared,
    headers: HeaderMap,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    let mut s = st.lock().unwrap();
    if let Err(r) = gate(&mut s, &headers) {
        return r;
    }
    list(&s, None, false, &q)
}

async fn list_all_namespaced(
    State(st): Shared,
    headers: HeaderMap,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    let mut s = st.lock().unwrap();
    if let Err(r) = gate(&mut s, &headers) {
        return r;
    }
    list(&s, None, true, &q)
}

async fn list_namespaced(
    State(st): Shared,
    headers: HeaderMap,
    Path(ns): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    let mut s = st.lock().unwrap();
    if let Err(r) = gate(&mut s, &headers) {
        return r;
    }
    list(&s, Some(&ns), false, &q)
}

fn create(s: &mut KubeState, namespace: Option<&str>, body: &Bytes) -> Response {
    let kind = if namespace.is_some() {
        "RoleBinding"
    } else {
        "ClusterRoleBinding"
    };
    let Ok(mut v) = serde_json::from_slice::<Value>(body) else {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "the body is not JSON",
        );
    };
    let Some(name) = v["metadata"]["name"].as_str().map(str::to_string) else {
        return status(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            &format!(
                "{kind}.{GROUP} \"\" is invalid: metadata.name: Required value: name or generateName is required"
            ),
        );
    };
    if v["roleRef"]["name"].as_str().is_none_or(str::is_empty) {
        return status(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            &format!("{kind}.{GROUP} \"{name}\" is invalid: roleRef.name: Required value"),
        );
    }
    let key = (namespace.unwrap_or("").to_string(), name.clone());
    if s.bindings.contains_key(&key) {
        let plural = if namespace.is_some() {
            "rolebindings"
        } else {
            "clusterrolebindings"
        };
        return status(
            StatusCode::CONFLICT,
            "AlreadyExists",
            &format!("{plural}.{GROUP} \"{name}\" already exists"),
        );
    }
    s.resource_version += 1;
    v["metadata"]["resourceVersion"] = json!(s.resource_version.to_string());
    v["metadata"]["uid"] = json!(format!("uid-{}", s.resource_version));
    if let Some(ns) = namespace {
        v["metadata"]["namespace"] = json!(ns);
    }
    v["apiVersion"] = json!(format!("{GROUP}/v1"));
    v["kind"] = json!(kind);
    s.bindings.insert(key, v.clone());
    (StatusCode::CREATED, axum::Json(v)).into_response()
}

async fn create_cluster(State(st): Shared, headers: HeaderMap, body: Bytes) -> Response {
    let mut s = st.lock().unwrap();
    if let Err(r) = gate(&mut s, &headers) {
        return r;
    }
    create(&mut s, None, &body)
}

async fn create_namespaced(
    State(st): Shared,
    headers: HeaderMap,
    Path(ns): Path<String>,
    body: Bytes,
) -> Response {
    let mut s = st.lock().unwrap();
    if let Err(r) = gate(&mut s, &headers) {
        return r;
    }
    create(&mut s, Some(&ns), &body)
}

fn one(
    s: &mut KubeState,
    method: &Method,
    namespace: Option<&str>,
    name: &str,
    body: &Bytes,
) -> Response {
    let plural = if namespace.is_some() {
        "rolebindings"
    } else {
        "clusterrolebindings"
    };
    let key = (namespace.unwrap_or("").to_string(), name.to_string());
    let Some(current) = s.bindings.get(&key).cloned() else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("{plural}.{GROUP} \"{name}\" not found"),
        );
    };
    match *method {
        Method::GET => axum::Json(current).into_response(),
        Method::DELETE => {
            s.bindings.remove(&key);
            axum::Json(json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                "details": {"name": name, "group": GROUP, "kind": plural, "uid": current["metadata"]["uid"]},
            }))
            .into_response()
        }
        _ => {
            let Ok(mut v) = serde_json::from_slice::<Value>(body) else {
                return status(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "the body is not JSON",
                );
            };
            if v["metadata"]["resourceVersion"] != current["metadata"]["resourceVersion"] {
                return status(
                    StatusCode::CONFLICT,
                    "Conflict",
                    &format!(
                        "Operation cannot be fulfilled on {plural}.{GROUP} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
                    ),
                );
            }
            s.resource_version += 1;
            v["metadata"]["resourceVersion"] = json!(s.resource_version.to_string());
            s.bindings.insert(key, v.clone());
            axum::Json(v).into_response()
        }
    }
}

async fn one_cluster(
    State(st): Shared,
    method: Method,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    let mut s = st.lock().unwrap();
    if let Err(r) = gate(&mut s, &headers) {
        return r;
    }
    one(&mut s, &method, None, &name, &body)
}

async fn one_namespaced(
    State(st): Shared,
    method: Method,
    headers: HeaderMap,
    Path((ns, name)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let mut s = st.lock().unwrap();
    if let Err(r) = gate(&mut s, &headers) {
        return r;
    }
    one(&mut s, &method, Some(&ns), &name, &body)
}

async fn create_service_account(
    State(st): Shared,
    headers: HeaderMap,
    Path(ns): Path<String>,
    body: Bytes,
) -> Response {
    let mut s = st.lock().unwrap();
    if let Err(r) = gate(&mut s, &headers) {
        return r;
    }
    let Ok(mut v) = serde_json::from_slice::<Value>(&body) else {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "the body is not JSON",
        );
    };
    let Some(name) = v["metadata"]["name"].as_str().map(str::to_string) else {
        return status(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            "ServiceAccount \"\" is invalid: metadata.name: Required value",
        );
    };
    if !s.service_accounts.insert((ns.clone(), name.clone())) {
        return status(
            StatusCode::CONFLICT,
            "AlreadyExists",
            &format!("serviceaccounts \"{name}\" already exists"),
        );
    }
    s.resource_version += 1;
    v["metadata"]["uid"] = json!(format!("uid-{}", s.resource_version));
    v["metadata"]["namespace"] = json!(ns);
    (StatusCode::CREATED, axum::Json(v)).into_response()
}

async fn create_secret(
    State(st): Shared,
    headers: HeaderMap,
    Path(ns): Path<String>,
    body: Bytes,
) -> Response {
    let mut s = st.lock().unwrap();
    if let Err(r) = gate(&mut s, &headers) {
        return r;
    }
    let Ok(mut v) = serde_json::from_slice::<Value>(&body) else {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "the body is not JSON",
        );
    };
    let Some(name) = v["metadata"]["name"].as_str().map(str::to_string) else {
        return status(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            "Secret \"\" is invalid: metadata.name: Required value",
        );
    };
    let key = (ns.clone(), name.clone());
    if s.secrets.contains_key(&key) {
        return status(
            StatusCode::CONFLICT,
            "AlreadyExists",
            &format!("secrets \"{name}\" already exists"),
        );
    }
    s.resource_version += 1;
    let uid = format!("uid-{}", s.resource_version);
    s.secrets.insert(key, uid.clone());
    v["metadata"]["uid"] = json!(uid);
    v["metadata"]["namespace"] = json!(ns);
    (StatusCode::CREATED, axum::Json(v)).into_response()
}

async fn one_secret(
    State(st): Shared,
    method: Method,
    headers: HeaderMap,
    Path((ns, name)): Path<(String, String)>,
) -> Response {
    let mut s = st.lock().unwrap();
    if let Err(r) = gate(&mut s, &headers) {
        return r;
    }
    let key = (ns.clone(), name.clone());
    let Some(uid) = s.secrets.get(&key).cloned() else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("secrets \"{name}\" not found"),
        );
    };
    if method == Method::DELETE {
        s.secrets.remove(&key);
        return axum::Json(json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Success", "details": {"name": name, "kind": "secrets", "uid": uid}}))
        .into_response();
    }
    axum::Json(
        json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": name, "namespace": ns, "uid": uid}}),
    )
    .into_response()
}

async fn token_request(
    State(st): Shared,
    headers: HeaderMap,
    Path((ns, name)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let mut s = st.lock().unwrap();
    if let Err(r) = gate(&mut s, &headers) {
        return r;
    }
    if !s.service_accounts.contains(&(ns.clone(), name.clone())) {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("serviceaccounts \"{name}\" not found"),
        );
    }
    let Ok(v) = serde_json::from_slice::<Value>(&body) else {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "the body is not JSON",
        );
    };
    let seconds = v["spec"]["expirationSeconds"].as_u64().unwrap_or(3600);
    if seconds < 600 {
        return status(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            "TokenRequest.authentication.k8s.io \"\" is invalid: spec.expirationSeconds: \
             Invalid value: may not specify a duration less than 10 minutes",
        );
    }
    let bound = &v["spec"]["boundObjectRef"];
    let secret = (
        ns.clone(),
        bound["name"].as_str().unwrap_or_default().to_string(),
    );
    if bound["kind"] != "Secret"
        || s.secrets.get(&secret).map(String::as_str) != bound["uid"].as_str()
    {
        return status(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            "TokenRequest.authentication.k8s.io \"\" is invalid: spec.boundObjectRef: the bound \
             object does not exist or its uid differs",
        );
    }
    s.token_requests.push(seconds);
    s.resource_version += 1;
    let token = format!("sa-token-{}", s.resource_version);
    let user = format!("system:serviceaccount:{ns}:{name}");
    s.bound_tokens.insert(token.clone(), (user, secret));
    let end = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(seconds as i64);
    (
        StatusCode::CREATED,
        axum::Json(json!({
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "spec": v["spec"],
            "status": {"token": token,
                "expirationTimestamp": end.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()},
        })),
    )
        .into_response()
}
