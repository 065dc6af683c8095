//! A stand-in of Google Cloud Resource Manager v3 IAM, because Google Cloud's IAM cannot run
//! on this machine. Written from Google's REST reference and checked with the official
//! Python client (`scripts/cloud-clients/gcp_check.py`):
//!
//! - `POST /v3/{resource=projects/*|folders/*|organizations/*}:getIamPolicy` (body
//!   `{"options": {"requestedPolicyVersion": N}}`) and `:setIamPolicy` (body `{"policy",
//!   "updateMask"}`), answering `{"version", "etag", "bindings"}` as Google does (empty
//!   fields left out, the etag base64 and new on every write); a write with a stale etag is
//!   409 `ABORTED`, one without an etag overwrites; conditional bindings need version 3 and a
//!   condition title; a version-1 read of a policy with conditions gets the `_withcond_`
//!   roles Google shows old clients;
//! - errors as `{"error": {"code", "message", "status"}}`: no or unknown bearer token 401
//!   `UNAUTHENTICATED`, an unknown resource 403 `PERMISSION_DENIED`, a bad body 400
//!   `INVALID_ARGUMENT`, throttling 429 `RESOURCE_EXHAUSTED` with `Retry-After`, down 503
//!   `UNAVAILABLE` with `Retry-After`;
//! - `POST /token`: the OAuth 2.0 JWT bearer grant, the assertion's RS256 signature checked
//!   against the test key's public key (and its `iss`, `aud` = Google's token endpoint,
//!   `scope`, `iat`/`exp`);
//! - the metadata server's `GET /computeMetadata/v1/instance/service-accounts/default/token`
//!   and `/email` (header `Metadata-Flavor: Google` required), as `METADATA_ACCOUNT`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rsa::pkcs1v15::{Signature, VerifyingKey};
use rsa::pkcs8::DecodePrivateKey;
use rsa::sha2::Sha256;
use rsa::signature::Verifier;
use serde_json::{Value, json};

use crate::standin::{StandIn, serve_tls};

/// The test key (PKCS#8 PEM), made for these tests only; the stand-in knows its public half.
pub const TEST_KEY: &str = include_str!("gcp_test_key.pem");
/// The service account whose key is [`TEST_KEY`]: who pedm calls Google Cloud as.
pub const SERVICE_ACCOUNT: &str = "pedm-test@pedm-standin.iam.gserviceaccount.com";
/// The service account the stand-in's metadata server says the machine runs as.
pub const METADATA_ACCOUNT: &str = "pedm-vm@pedm-standin.iam.gserviceaccount.com";
const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

/// One request the stand-in answered: when, what (`getIamPolicy`, `setIamPolicy`,
/// `token`, …) and the HTTP status.
#[derive(Debug, Clone)]
pub struct Seen {
    pub at: Instant,
    pub method: String,
    pub status: u16,
}

struct Policy {
    version: i64,
    etag: u64,
    bindings: Vec<Value>,
}

struct Inner {
    policies: BTreeMap<String, Policy>,
    tokens: BTreeSet<String>,
    verifying: VerifyingKey<Sha256>,
    down: bool,
    throttle: u32,
    conflict_next: bool,
    etags: u64,
    seen: Vec<Seen>,
}

type Shared = Arc<Mutex<Inner>>;

pub struct GcpStandIn {
    pub server: StandIn,
    state: Shared,
}

fn error(code: u16, status: &str, message: &str) -> Response {
    let mut r = (
        StatusCode::from_u16(code).expect("a status"),
        axum::Json(json!({"error": {"code": code, "message": message, "status": status}})),
    )
        .into_response();
    if code == 401 {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"https://accounts.google.com/\""),
        );
    }
    r
}

fn retry_after(mut r: Response, secs: u32) -> Response {
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    r
}

fn etag_of(n: u64) -> String {
    // Google's etags are 8 opaque bytes, base64 in JSON.
    let mut b = [0u8; 8];
    b[0] = 0x07;
    b[1..].copy_from_slice(&n.to_be_bytes()[1..]);
    STANDARD.encode(b)
}

impl Inner {
    fn next_etag(&mut self) -> u64 {
        self.etags += 1;
        self.etags
    }

    fn policy_json(&self, resource: &str, requested: i64) -> Value {
        let p = &self.policies[resource];
        let conditional = p.bindings.iter().any(|b| b.get("condition").is_some());
        let mut bindings = p.bindings.clone();
        let mut version = p.version.max(1);
        if conditional && requested < 3 {
            // What Google shows a client that did not ask for conditions.
            version = 1;
            for b in &mut bindings {
                if let Some(obj) = b.as_object_mut()
                    && obj.remove("condition").is_some()
                {
                    let role = obj["role"].as_str().unwrap_or("").to_string();
                    obj.insert(
                        "role".into(),
                        json!(format!("{role}_withcond_0123456789abcdef")),
                    );
                }
            }
        }
        let mut out = json!({"version": version, "etag": etag_of(p.etag)});
        if !bindings.is_empty() {
            out["bindings"] = json!(bindings);
        }
        out
    }
}

fn resource_ok(r: &str) -> bool {
    match r.split_once('/') {
        Some(("projects" | "folders" | "organizations", id)) => !id.is_empty() && !id.contains('/'),
        _ => false,
    }
}

fn member_ok(m: &str) -> bool {
    [
        "user:",
        "group:",
        "serviceAccount:",
        "domain:",
        "deleted:",
        "principal://",
        "principalSet://",
    ]
    .iter()
    .any(|p| {
        m.strip_prefix(p)
            .is_some_and(|r| !r.is_empty() && !r.contains(char::is_whitespace))
    }) || m == "allUsers"
        || m == "allAuthenticatedUsers"
}

/// The bindings of a `setIamPolicy` body, checked as Google checks them.
fn check_bindings(policy: &Value) -> Result<(i64, Vec<Value>), String> {
    let version = policy.get("version").and_then(Value::as_i64).unwrap_or(0);
    if ![0, 1, 3].contains(&version) {
        return Err(format!("Invalid policy version {version}."));
    }
    let mut out = Vec::new();
    for b in policy
        .get("bindings")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let role = b.get("role").and_then(Value::as_str).unwrap_or("");
        if !(role.starts_with("roles/") || role.contains("/roles/")) {
            return Err(format!(
                "Role ({role}) does not exist in the resource's hierarchy."
            ));
        }
        let members: Vec<&str> = b
            .get("members")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|m| m.as_str().unwrap_or(""))
            .collect();
        if let Some(bad) = members.iter().find(|m| !member_ok(m)) {
            return Err(format!("Invalid member: {bad}"));
        }
        if let Some(c) = b.get("condition") {
            if version < 3 {
                return Err("Conditions are only supported in policy version 3.".into());
            }
            let title = c.get("title").and_then(Value::as_str).unwrap_or("");
            let expr = c.get("expression").and_then(Value::as_str).unwrap_or("");
            if title.is_empty() || expr.is_empty() {
                return Err("Condition title and expression are required.".into());
            }
            if title.len() > 100 {
                return Err("Condition title is longer than 100 characters.".into());
            }
        }
        if !members.is_empty() {
            out.push(b.clone());
        }
    }
    Ok((version, out))
}

async fn v3(
    State(s): State<Shared>,
    UrlPath(path): UrlPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (resource, method) = path.rsplit_once(':').unwrap_or((path.as_str(), ""));
    let mut st = s.lock().expect("stand-in state");
    let resp = answer(&mut st, resource, method, &headers, &body);
    st.seen.push(Seen {
        at: Instant::now(),
        method: method.to_string(),
        status: resp.status().as_u16(),
    });
    resp
}

fn authorized(st: &Inner, headers: &HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| st.tokens.contains(t))
}

fn answer(
    st: &mut Inner,
    resource: &str,
    method: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    if st.down {
        return retry_after(
            error(503, "UNAVAILABLE", "The service is currently unavailable."),
            30,
        );
    }
    if st.throttle > 0 {
        st.throttle -= 1;
        return retry_after(
            error(
                429,
                "RESOURCE_EXHAUSTED",
                "Quota exceeded for quota metric 'Read requests' and limit 'Read requests per minute' of service 'cloudresourcemanager.googleapis.com'.",
            ),
            1,
        );
    }
    if !authorized(st, headers) {
        return error(
            401,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.",
        );
    }
    if !resource_ok(resource) || !matches!(method, "getIamPolicy" | "setIamPolicy") {
        return error(
            404,
            "NOT_FOUND",
            "The requested URL was not found on this server.",
        );
    }
    if !st.policies.contains_key(resource) {
        return error(
            403,
            "PERMISSION_DENIED",
            "The caller does not have permission",
        );
    }
    let req: Value = if body.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice(body) {
            Ok(v @ Value::Object(_)) => v,
            _ => {
                return error(
                    400,
                    "INVALID_ARGUMENT",
                    "Invalid JSON payload received. Unexpected token.",
                );
            }
        }
    };
    if method == "getIamPolicy" {
        let requested = req["options"]["requestedPolicyVersion"]
            .as_i64()
            .unwrap_or(0);
        return axum::Json(st.policy_json(resource, requested)).into_response();
    }
    let Some(policy) = req.get("policy").filter(|p| p.is_object()) else {
        return error(
            400,
            "INVALID_ARGUMENT",
            "Request contains an invalid argument.",
        );
    };
    if st.conflict_next {
        // Someone else's read-modify-write lands between the caller's read and write.
        st.conflict_next = false;
        let n = st.next_etag();
        let p = st.policies.get_mut(resource).expect("checked above");
        p.bindings
            .push(json!({"role": "roles/viewer", "members": ["user:someone-else@example.com"]}));
        p.etag = n;
    }
    let current = st.policies[resource].etag;
    if let Some(sent) = policy.get("etag").and_then(Value::as_str) {
        let same = STANDARD.decode(sent).ok() == STANDARD.decode(etag_of(current)).ok();
        if !same {
            return error(
                409,
                "ABORTED",
                "There were concurrent policy changes. Please retry the whole read-modify-write with exponential backoff. The request's ETag '\\007\\006' did not match the current policy's ETag '\\007\\006'.",
            );
        }
    }
    let (version, bindings) = match check_bindings(policy) {
        Ok(v) => v,
        Err(m) => return error(400, "INVALID_ARGUMENT", &m),
    };
    let conditional = bindings.iter().any(|b| b.get("condition").is_some());
    let n = st.next_etag();
    let p = st.policies.get_mut(resource).expect("checked above");
    p.bindings = bindings;
    p.version = if conditional { 3 } else { version.max(1) };
    p.etag = n;
    axum::Json(st.policy_json(resource, 3)).into_response()
}

fn oauth_error(error: &str, description: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

/// The JWT bearer grant.
async fn token(State(s): State<Shared>, body: Bytes) -> Response {
    let mut st = s.lock().expect("stand-in state");
    let resp = token_answer(&mut st, &body);
    st.seen.push(Seen {
        at: Instant::now(),
        method: "token".into(),
        status: resp.status().as_u16(),
    });
    resp
}

fn token_answer(st: &mut Inner, body: &[u8]) -> Response {
    if st.down {
        return retry_after(
            error(503, "UNAVAILABLE", "The service is currently unavailable."),
            30,
        );
    }
    // application/x-www-form-urlencoded is a URL query's syntax.
    let form: HashMap<String, String> =
        match reqwest::Url::parse(&format!("http://form/?{}", String::from_utf8_lossy(body))) {
            Ok(u) => u.query_pairs().into_owned().collect(),
            Err(_) => return oauth_error("invalid_request", "Malformed request body."),
        };
    if form.get("grant_type").map(String::as_str)
        != Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
    {
        return oauth_error("unsupported_grant_type", "Invalid grant_type.");
    }
    let Some(assertion) = form.get("assertion") else {
        return oauth_error("invalid_request", "Missing required parameter: assertion");
    };
    let parts: Vec<&str> = assertion.split('.').collect();
    let decode = |p: &str| -> Option<Value> {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).ok()?).ok()
    };
    let (Some(head), Some(claims), true) = (
        parts.first().and_then(|p| decode(p)),
        parts.get(1).and_then(|p| decode(p)),
        parts.len() == 3,
    ) else {
        return oauth_error("invalid_grant", "Invalid JWT.");
    };
    if head["alg"] != "RS256" {
        return oauth_error("invalid_grant", "Invalid JWT: unsupported algorithm.");
    }
    let signed = format!("{}.{}", parts[0], parts[1]);
    let good = URL_SAFE_NO_PAD
        .decode(parts[2])
        .ok()
        .and_then(|b| Signature::try_from(b.as_slice()).ok())
        .is_some_and(|sig| st.verifying.verify(signed.as_bytes(), &sig).is_ok());
    if !good {
        return oauth_error("invalid_grant", "Invalid JWT Signature.");
    }
    let now = jiff::Timestamp::now().as_second();
    let (iat, exp) = (
        claims["iat"].as_i64().unwrap_or(0),
        claims["exp"].as_i64().unwrap_or(0),
    );
    if claims["iss"] != SERVICE_ACCOUNT {
        return oauth_error("invalid_grant", "Invalid JWT: unknown issuer.");
    }
    // What Google's token endpoint accepts (google-auth always sends the first).
    let audiences = [
        "https://oauth2.googleapis.com/token",
        "https://www.googleapis.com/oauth2/v4/token",
        "https://accounts.google.com/o/oauth2/token",
    ];
    if !audiences.iter().any(|a| claims["aud"] == *a) {
        return oauth_error("invalid_grant", "Invalid JWT: Failed audience check.");
    }
    if iat > now + 300 || exp <= now || exp - iat > 3600 {
        return oauth_error(
            "invalid_grant",
            "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe.",
        );
    }
    if !claims["scope"]
        .as_str()
        .unwrap_or("")
        .split(' ')
        .any(|s| s == SCOPE)
    {
        return oauth_error(
            "invalid_scope",
            "Invalid OAuth scope or ID token audience provided.",
        );
    }
    axum::Json(issue(st)).into_response()
}

fn issue(st: &mut Inner) -> Value {
    let t = format!("ya29.standin-{}", uuid::Uuid::now_v7().simple());
    st.tokens.insert(t.clone());
    json!({"access_token": t, "expires_in": 3599, "token_type": "Bearer"})
}

fn metadata_ok(headers: &HeaderMap) -> bool {
    headers.get("metadata-flavor").and_then(|v| v.to_str().ok()) == Some("Google")
}

fn with_flavor(mut r: Response) -> Response {
    r.headers_mut()
        .insert("metadata-flavor", HeaderValue::from_static("Google"));
    r
}

async fn metadata_token(State(s): State<Shared>, headers: HeaderMap) -> Response {
    if !metadata_ok(&headers) {
        return (
            StatusCode::FORBIDDEN,
            "Missing Metadata-Flavor:Google header.",
        )
            .into_response();
    }
    let mut st = s.lock().expect("stand-in state");
    with_flavor(axum::Json(issue(&mut st)).into_response())
}

async fn metadata_email(headers: HeaderMap) -> Response {
    if !metadata_ok(&headers) {
        return (
            StatusCode::FORBIDDEN,
            "Missing Metadata-Flavor:Google header.",
        )
            .into_response();
    }
    with_flavor(METADATA_ACCOUNT.into_response())
}

impl GcpStandIn {
    /// Serves an empty IAM policy for each of `resources`.
    pub async fn start(resources: &[&str]) -> GcpStandIn {
        let public = rsa::RsaPrivateKey::from_pkcs8_pem(TEST_KEY)
            .expect("the test key")
            .to_public_key();
        let mut policies = BTreeMap::new();
        for (n, r) in resources.iter().enumerate() {
            policies.insert(
                r.to_string(),
                Policy {
                    version: 1,
                    etag: n as u64 + 1,
                    bindings: Vec::new(),
                },
            );
        }
        let state: Shared = Arc::new(Mutex::new(Inner {
            etags: policies.len() as u64,
            policies,
            tokens: BTreeSet::new(),
            verifying: VerifyingKey::new(public),
            down: false,
            throttle: 0,
            conflict_next: false,
            seen: Vec::new(),
        }));
        let app = Router::new()
            .route("/v3/{*path}", post(v3))
            .route("/token", post(token))
            .route(
                "/computeMetadata/v1/instance/service-accounts/default/token",
                get(metadata_token),
            )
            .route(
                "/computeMetadata/v1/instance/service-accounts/default/email",
                get(metadata_email),
            )
            .with_state(state.clone());
        let server = serve_tls(app).await;
        GcpStandIn { server, state }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.state.lock().expect("stand-in state")
    }

    /// A service-account key file for [`SERVICE_ACCOUNT`] whose `token_uri` is the stand-in.
    pub fn key_file(&self, dir: &Path) -> PathBuf {
        let path = dir.join("gcp-key.json");
        let key = json!({
            "type": "service_account",
            "project_id": "pedm-standin",
            "private_key_id": "0123456789abcdef0123456789abcdef01234567",
            "private_key": TEST_KEY,
            "client_email": SERVICE_ACCOUNT,
            "client_id": "100000000000000000001",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": format!("{}/token", self.server.url),
        });
        std::fs::write(&path, key.to_string()).expect("writing the key file");
        path
    }

    /// The bindings of `resource`'s policy as stored.
    pub fn bindings(&self, resource: &str) -> Vec<Value> {
        self.inner().policies[resource].bindings.clone()
    }

    /// Replaces `resource`'s bindings as an admin would (the etag changes).
    pub fn set_bindings(&self, resource: &str, bindings: Vec<Value>) {
        let mut st = self.inner();
        let n = st.next_etag();
        let p = st.policies.get_mut(resource).expect("a known resource");
        if bindings.iter().any(|b| b.get("condition").is_some()) {
            p.version = 3;
        }
        p.bindings = bindings;
        p.etag = n;
    }

    /// Adds a binding as an admin would.
    pub fn plant(&self, resource: &str, binding: Value) {
        let mut b = self.bindings(resource);
        b.push(binding);
        self.set_bindings(resource, b);
    }

    /// While down, every request is answered 503 `UNAVAILABLE` with `Retry-After: 30`.
    pub fn set_down(&self, down: bool) {
        self.inner().down = down;
    }

    /// The next `n` requests are answered 429 `RESOURCE_EXHAUSTED` with `Retry-After: 1`.
    pub fn throttle_next(&self, n: u32) {
        self.inner().throttle = n;
    }

    /// The next `setIamPolicy` finds the policy changed since it was read: someone else's
    /// binding (`roles/viewer` for `user:someone-else@example.com`) added, the etag new.
    pub fn conflict_next(&self) {
        self.inner().conflict_next = true;
    }

    /// Every request answered so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.inner().seen.clone()
    }
}
