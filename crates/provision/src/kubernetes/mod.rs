//! Kubernetes RBAC: a ClusterRoleBinding (or a RoleBinding in one namespace) for the grant's
//! holder, through the API server's REST API.
//!
//! Role settings: `cluster_role = "cluster-admin"` (or `role = "NAME"`, a namespaced Role),
//! `namespace = "payments"` (a RoleBinding there; without it a ClusterRoleBinding, which
//! `role` cannot use), `subject = "{user}"` (a template, default the pedm user name; e.g.
//! `{user}@example.com` as the cluster's OIDC usernames look) and `subject_kind = "User"` or
//! `"Group"`. The binding's name is `pedm-` and a hash of subject, role and namespace, so two
//! live grants of one holder for one role share it (the core leaves it in place until the last
//! one ends), and it is labelled `app.kubernetes.io/managed-by=pedm` and `pedm.dev/grant=<id>`
//! (the grant that created it). Granting creates it (an existing one with the same name
//! is taken as it is when it binds the same role to the same subject, refused otherwise);
//! revoking deletes it (gone = success).
//!
//! Service accounts and `pedm kube credentials`: with `service_account = "pedm-{user}"`
//! (lower-cased; `service_account_namespace`, default `pedm`) the binding's subject is that
//! service account, made at the first grant, and [`Provisioner::credentials`] issues a token
//! for it with the TokenRequest API, bound to a Secret `pedm-grant-<id>` made for the grant
//! (`boundObjectRef`), lasting the grant's remaining time (at least the API server's 10
//! minutes, at most `max_token`), as kubectl's `client.authentication.k8s.io/v1`
//! ExecCredential. Revoking deletes that Secret first: the API server then refuses every token
//! bound to it at once, whatever its expiry.
//!
//! ID tokens: for a cluster that trusts pedmd's OIDC issuer (`[oidc_issuer]` in pedmd,
//! `--oidc-issuer-url` and `--oidc-client-id` = `oidc_audience` in the API server, username
//! claim `sub`, prefix `oidc_username_prefix`), a role bound to the User
//! `<prefix><user>` gets an ES256 ID token of pedmd's instead: `sub` = the pedm user, `aud` =
//! `oidc_audience`, ending with the grant (at most `max_token`), carrying `pedm_grant`. The
//! cluster checks it against pedmd's JWKS; revoking deletes the binding, so the token, still
//! valid until it expires, authorizes nothing.
//!
//! Discovery: every ClusterRoleBinding, and every RoleBinding in any namespace, that binds one
//! of `privileged_cluster_roles` (default `cluster-admin`, `admin`) to a User or Group:
//! `account` = the subject (`group/<name>` for a group), `privilege` =
//! `clusterrole:<name>` or `clusterrole:<name>@<namespace>`. Drift removal removes the subject
//! from that binding (the binding itself when it was the only subject). Never removed: the
//! identity pedm calls the API server as (`SelfSubjectReview`), and `system:` users and groups
//! (the cluster's own components).
//!
//! Authentication: a bearer token read from `token_file` at each call (a service account's
//! projected token is rotated by the kubelet), default the in-cluster path; the API server's
//! CA from `ca_file`. Errors: 429 and 5xx (after waiting out `Retry-After` within the
//! timeout), timeouts and connection failures are [`ProvisionError::Unreachable`]; other
//! statuses are [`ProvisionError::Refused`] with the API server's `Status` message.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

mod tokens;

use crate::config::ConfigError;
use crate::{
    Credentials, GrantOutcome, GrantSpec, Observed, ProvisionError, Provisioner, StandingPrivilege,
    check_settings, setting_str, truncate,
};

const RBAC: &str = "/apis/rbac.authorization.k8s.io/v1";
const IN_CLUSTER_TOKEN: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";
const MAX_BODY: usize = 8 * 1024 * 1024;

/// `kind = "kubernetes"` in the server configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesConfig {
    /// The API server, `https://…`.
    pub api_url: String,
    /// The API server's CA (PEM), besides the system's roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// A file holding the bearer token pedm calls the API server with (read at each call).
    #[serde(default = "default_token_file")]
    pub token_file: PathBuf,
    /// ClusterRoles whose bindings discovery reports.
    #[serde(default = "default_privileged")]
    pub privileged_cluster_roles: Vec<String>,
    /// Longest one operation may take, retries after `Retry-After` included.
    #[serde(default = "default_timeout", with = "pedm_notify::duration")]
    pub timeout: Duration,
    /// The longest service-account token `credentials` issues, whatever the grant's
    /// remaining time (the API server's minimum is 10 minutes). Default 1 hour.
    #[serde(default = "default_max_token", with = "pedm_notify::duration")]
    pub max_token: Duration,
    /// The audiences of issued tokens (default: the API server's own).
    #[serde(default)]
    pub token_audiences: Vec<String>,
    /// For a cluster that trusts pedmd's OIDC issuer (`[oidc_issuer]`): the client id it
    /// expects (`--oidc-client-id`, or the audience in its structured authentication
    /// configuration). With it, `pedm kube credentials` for a User-bound role is an ID token
    /// of pedmd's.
    #[serde(default)]
    pub oidc_audience: Option<String>,
    /// What the cluster puts before the token's `sub` (the pedm user) to name the user
    /// (`--oidc-username-prefix`): a role's User subject must be this prefix and the user.
    #[serde(default = "default_oidc_prefix")]
    pub oidc_username_prefix: String,
}

fn default_oidc_prefix() -> String {
    "pedm:".into()
}

fn default_token_file() -> PathBuf {
    PathBuf::from(IN_CLUSTER_TOKEN)
}
fn default_privileged() -> Vec<String> {
    vec!["cluster-admin".into(), "admin".into()]
}
fn default_timeout() -> Duration {
    Duration::from_secs(20)
}
fn default_max_token() -> Duration {
    Duration::from_secs(3600)
}
/// The shortest token the API server issues.
const MIN_TOKEN: Duration = Duration::from_secs(600);

impl KubernetesConfig {
    pub fn new(api_url: impl Into<String>) -> Self {
        KubernetesConfig {
            api_url: api_url.into(),
            ca_file: None,
            token_file: default_token_file(),
            privileged_cluster_roles: default_privileged(),
            timeout: default_timeout(),
            max_token: default_max_token(),
            token_audiences: Vec::new(),
            oidc_audience: None,
            oidc_username_prefix: default_oidc_prefix(),
        }
    }
}

pub struct KubernetesProvisioner {
    config: KubernetesConfig,
    base: String,
    http: reqwest::Client,
    /// The user pedm calls the API server as, learnt by discovery: never removed.
    own: Mutex<Option<String>>,
    /// pedmd's OIDC issuer, for `oidc_audience`.
    id_tokens: Option<std::sync::Arc<dyn crate::IdTokenSigner>>,
}

/// DNS-1123 subdomain names (namespaces are labels, at most 63).
fn dns_name_ok(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// RBAC role names are path segments: no `/`, `%`, spaces or controls; `:` is allowed
/// (`system:…`).
fn role_name_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s != "."
        && s != ".."
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-.:_@".contains(c))
}

fn subject_ok(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.chars().all(|c| c.is_ascii_graphic())
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum RoleRef {
    ClusterRole(String),
    Role(String),
}

impl RoleRef {
    fn json(&self) -> Value {
        let (kind, name) = match self {
            RoleRef::ClusterRole(n) => ("ClusterRole", n),
            RoleRef::Role(n) => ("Role", n),
        };
        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": name})
    }
    fn privilege(&self, namespace: Option<&str>) -> String {
        let (kind, name) = match self {
            RoleRef::ClusterRole(n) => ("clusterrole", n),
            RoleRef::Role(n) => ("role", n),
        };
        match namespace {
            Some(ns) => format!("{kind}:{name}@{ns}"),
            None => format!("{kind}:{name}"),
        }
    }
}

/// What a role's settings bind.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Binding {
    role: RoleRef,
    namespace: Option<String>,
    /// `User`, `Group` or `ServiceAccount`.
    subject_kind: &'static str,
    subject: String,
    /// A service account's namespace.
    subject_namespace: Option<String>,
}

const SETTINGS: &[&str] = &[
    "cluster_role",
    "role",
    "namespace",
    "subject",
    "subject_kind",
    "service_account",
    "service_account_namespace",
];

/// Where pedm's per-holder service accounts live unless the role says otherwise.
const DEFAULT_SA_NAMESPACE: &str = "pedm";

impl Binding {
    fn of(g: &GrantSpec) -> Result<Binding, ProvisionError> {
        check_settings(g, SETTINGS)?;
        let namespace = setting_str(g, "namespace")?.map(str::to_string);
        if let Some(ns) = &namespace
            && !dns_name_ok(ns, 63)
        {
            return Err(ProvisionError::invalid(format!(
                "settings.namespace {ns:?} is not a namespace name"
            )));
        }
        let role = match (setting_str(g, "cluster_role")?, setting_str(g, "role")?) {
            (Some(c), None) => RoleRef::ClusterRole(c.to_string()),
            (None, Some(r)) if namespace.is_some() => RoleRef::Role(r.to_string()),
            (None, Some(_)) => {
                return Err(ProvisionError::invalid(
                    "settings.role (a namespaced Role) needs settings.namespace",
                ));
            }
            (Some(_), Some(_)) => {
                return Err(ProvisionError::invalid(
                    "settings: give cluster_role or role, not both",
                ));
            }
            (None, None) => {
                return Err(ProvisionError::invalid(
                    "the role names no cluster_role or role: nothing to bind",
                ));
            }
        };
        let (RoleRef::ClusterRole(name) | RoleRef::Role(name)) = &role;
        if !role_name_ok(name) {
            return Err(ProvisionError::invalid(format!(
                "{name:?} is not an RBAC role name"
            )));
        }
        if let Some(template) = setting_str(g, "service_account")? {
            if setting_str(g, "subject")?.is_some() || setting_str(g, "subject_kind")?.is_some() {
                return Err(ProvisionError::invalid(
                    "settings: service_account binds a service account; subject and subject_kind \
                     do not apply",
                ));
            }
            let name = template.replace("{user}", &g.user.to_ascii_lowercase());
            let sa_ns = setting_str(g, "service_account_namespace")?
                .unwrap_or(DEFAULT_SA_NAMESPACE)
                .to_string();
            if !dns_name_ok(&name, 253) || !dns_name_ok(&sa_ns, 63) {
                return Err(ProvisionError::invalid(format!(
                    "service account {sa_ns}/{name} is not a valid name (lower-case letters, \
                     digits, - and .)"
                )));
            }
            return Ok(Binding {
                role,
                namespace,
                subject_kind: "ServiceAccount",
                subject: name,
                subject_namespace: Some(sa_ns),
            });
        }
        if setting_str(g, "service_account_namespace")?.is_some() {
            return Err(ProvisionError::invalid(
                "settings.service_account_namespace needs settings.service_account",
            ));
        }
        let subject_kind = match setting_str(g, "subject_kind")?.unwrap_or("User") {
            "User" => "User",
            "Group" => "Group",
            other => {
                return Err(ProvisionError::invalid(format!(
                    "settings.subject_kind must be \"User\" or \"Group\", not {other:?}"
                )));
            }
        };
        let subject = setting_str(g, "subject")?
            .unwrap_or("{user}")
            .replace("{user}", &g.user);
        if !subject_ok(&subject) || subject.starts_with("system:") {
            return Err(ProvisionError::invalid(format!(
                "subject {subject:?} is not a user or group pedm may bind (no spaces; not system:)"
            )));
        }
        Ok(Binding {
            role,
            namespace,
            subject_kind,
            subject,
            subject_namespace: None,
        })
    }

    fn subject_json(&self) -> Value {
        match &self.subject_namespace {
            Some(ns) => json!({"kind": "ServiceAccount", "name": self.subject, "namespace": ns}),
            None => json!({"apiGroup": "rbac.authorization.k8s.io", "kind": self.subject_kind,
                "name": self.subject}),
        }
    }

    /// `pedm-` and 20 hex digits of a hash of what is bound: one binding per subject, role
    /// and namespace.
    fn name(&self) -> String {
        let mut h = Sha256::new();
        for part in [
            self.subject_kind,
            &self.subject,
            self.subject_namespace.as_deref().unwrap_or(""),
            &self.role.privilege(self.namespace.as_deref()),
        ] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        let hex: String = h
            .finalize()
            .iter()
            .take(10)
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("pedm-{hex}")
    }

    fn account(&self) -> String {
        match (self.subject_kind, &self.subject_namespace) {
            ("Group", _) => format!("group/{}", self.subject),
            (_, Some(ns)) => format!("system:serviceaccount:{ns}:{}", self.subject),
            _ => self.subject.clone(),
        }
    }

    fn path(&self) -> String {
        collection(self.namespace.as_deref())
    }
}

/// The bindings collection: cluster-wide or in `namespace`.
fn collection(namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) => format!("{RBAC}/namespaces/{ns}/rolebindings"),
        None => format!("{RBAC}/clusterrolebindings"),
    }
}

impl KubernetesProvisioner {
    pub fn new(config: KubernetesConfig) -> Result<Self, ConfigError> {
        let url = reqwest::Url::parse(&config.api_url)
            .map_err(|e| ConfigError(format!("api_url {:?}: {e}", config.api_url)))?;
        if url.scheme() != "https" && url.scheme() != "http" {
            return Err(ConfigError(format!(
                "api_url {:?} must be an https:// URL",
                config.api_url
            )));
        }
        if config.timeout.is_zero() {
            return Err(ConfigError("timeout must be greater than zero".into()));
        }
        if config.max_token < MIN_TOKEN {
            return Err(ConfigError(
                "max_token must be at least 10 minutes (the API server's minimum)".into(),
            ));
        }
        if let Some(r) = config
            .privileged_cluster_roles
            .iter()
            .find(|r| !role_name_ok(r))
        {
            return Err(ConfigError(format!(
                "privileged_cluster_roles: {r:?} is not an RBAC role name"
            )));
        }
        let http = crate::http_client(config.timeout, config.ca_file.as_deref())?;
        Ok(KubernetesProvisioner {
            base: config.api_url.trim_end_matches('/').to_string(),
            config,
            http,
            own: Mutex::new(None),
            id_tokens: None,
        })
    }

    /// pedmd's OIDC issuer, whose tokens `credentials` hands out with `oidc_audience`.
    pub fn with_id_tokens(
        mut self,
        signer: Option<std::sync::Arc<dyn crate::IdTokenSigner>>,
    ) -> Self {
        self.id_tokens = signer;
        self
    }

    fn token(&self) -> Result<String, ProvisionError> {
        let t = std::fs::read_to_string(&self.config.token_file).map_err(|e| {
            ProvisionError::invalid(format!(
                "cannot read the token file {}: {e}",
                self.config.token_file.display()
            ))
        })?;
        Ok(t.trim().to_string())
    }

    /// One API call; `Ok(None)` for 404. Waits out `Retry-After` on 429/503 within the
    /// timeout.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Option<Value>, ProvisionError> {
        let what = format!("{method} {path}");
        let started = Instant::now();
        loop {
            let mut req = self
                .http
                .request(method.clone(), format!("{}{path}", self.base))
                .bearer_auth(self.token()?)
                .header("Accept", "application/json");
            if let Some(b) = body {
                req = req.json(b);
            }
            let resp = req.send().await.map_err(|e| {
                ProvisionError::unreachable(format!("{what}: {}", crate::transport_error(&e)))
            })?;
            let status = resp.status();
            let retry_after = pedm_notify::retry_after(resp.headers());
            let bytes = resp.bytes().await.map_err(|e| {
                ProvisionError::unreachable(format!(
                    "{what}: reading the answer: {}",
                    crate::transport_error(&e)
                ))
            })?;
            if bytes.len() > MAX_BODY {
                return Err(ProvisionError::refused(format!(
                    "{what}: answer larger than {MAX_BODY} bytes"
                )));
            }
            let parsed = serde_json::from_slice::<Value>(&bytes);
            if status.is_success() {
                // An answer that is not what the API server sends is an error, never an
                // empty success (discovery would report nothing).
                return match parsed {
                    Ok(v) if v.is_object() => Ok(Some(v)),
                    _ => Err(ProvisionError::refused(format!(
                        "{what}: HTTP {} with an answer that is not a JSON object",
                        status.as_u16()
                    ))),
                };
            }
            let value = parsed.unwrap_or(Value::Null);
            if status == reqwest::StatusCode::NOT_FOUND {
                return Ok(None);
            }
            let message = value["message"]
                .as_str()
                .map(|m| truncate(m, 500))
                .unwrap_or_else(|| truncate(&String::from_utf8_lossy(&bytes), 200));
            let reason = value["reason"].as_str().unwrap_or("");
            let msg = format!("{what}: HTTP {} {reason}: {message}", status.as_u16());
            let transient = status.as_u16() == 429 || status.is_server_error();
            if transient {
                if let Some(wait) = retry_after
                    && started.elapsed() + wait < self.config.timeout
                {
                    tokio::time::sleep(wait).await;
                    continue;
                }
                return Err(ProvisionError::Unreachable(msg));
            }
            if status == reqwest::StatusCode::CONFLICT {
                return Err(ProvisionError::Refused(format!("conflict: {msg}")));
            }
            return Err(ProvisionError::Refused(msg));
        }
    }

    async fn get_binding(&self, b: &Binding) -> Result<Option<Value>, ProvisionError> {
        self.call(
            reqwest::Method::GET,
            &format!("{}/{}", b.path(), b.name()),
            None,
        )
        .await
    }

    /// The user pedm calls the API server as (`SelfSubjectReview`).
    async fn own_user(&self) -> Result<Option<String>, ProvisionError> {
        let review = self
            .call(
                reqwest::Method::POST,
                "/apis/authentication.k8s.io/v1/selfsubjectreviews",
                Some(&json!({
                    "apiVersion": "authentication.k8s.io/v1",
                    "kind": "SelfSubjectReview",
                })),
            )
            .await?;
        let own = review
            .as_ref()
            .and_then(|r| r["status"]["userInfo"]["username"].as_str())
            .map(str::to_string);
        *self.own.lock().unwrap_or_else(|e| e.into_inner()) = own.clone();
        Ok(own)
    }

    async fn list(&self, path: &str) -> Result<Vec<Value>, ProvisionError> {
        let mut out = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let page = match &next {
                Some(c) => format!("{path}?limit=500&continue={}", urlencode(c)),
                None => format!("{path}?limit=500"),
            };
            let Some(v) = self.call(reqwest::Method::GET, &page, None).await? else {
                return Ok(out);
            };
            match v.get("items") {
                Some(Value::Array(items)) => out.extend(items.iter().cloned()),
                Some(Value::Null) => {}
                _ => {
                    return Err(ProvisionError::refused(format!(
                        "GET {path}: the answer is not a list (no items)"
                    )));
                }
            }
            match v["metadata"]["continue"].as_str() {
                Some(c) if !c.is_empty() => next = Some(c.to_string()),
                _ => return Ok(out),
            }
        }
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Whether binding `v` binds `b`'s role to `b`'s subject.
fn binds(v: &Value, b: &Binding) -> bool {
    v["roleRef"] == b.role.json()
        && v["subjects"].as_array().is_some_and(|s| {
            s.iter().any(|s| {
                s["kind"] == b.subject_kind
                    && s["name"] == b.subject.as_str()
                    && b.subject_namespace
                        .as_deref()
                        .is_none_or(|ns| s["namespace"] == ns)
            })
        })
}

/// A standing privilege as discovery reported it, parsed back for removal.
struct Standing {
    namespace: Option<String>,
    cluster_role: String,
    subject_kind: &'static str,
    subject: String,
}

impl Standing {
    fn parse(p: &StandingPrivilege) -> Result<Standing, ProvisionError> {
        let Some(rest) = p.privilege.strip_prefix("clusterrole:") else {
            return Err(ProvisionError::invalid(format!(
                "{:?} is not a privilege the kubernetes provisioner reports",
                p.privilege
            )));
        };
        let (role, namespace) = match rest.split_once('@') {
            Some((r, ns)) => (r, Some(ns.to_string())),
            None => (rest, None),
        };
        if !role_name_ok(role) || namespace.as_deref().is_some_and(|ns| !dns_name_ok(ns, 63)) {
            return Err(ProvisionError::invalid(format!(
                "{:?} is not a privilege the kubernetes provisioner reports",
                p.privilege
            )));
        }
        let (subject_kind, subject) = match p.account.strip_prefix("group/") {
            Some(g) => ("Group", g.to_string()),
            None => ("User", p.account.clone()),
        };
        if !subject_ok(&subject) {
            return Err(ProvisionError::invalid(format!(
                "{:?} is not a subject",
                p.account
            )));
        }
        if subject.starts_with("system:") {
            return Err(ProvisionError::invalid(format!(
                "{} is one of the cluster's own (system:): never removed",
                p.account
            )));
        }
        Ok(Standing {
            namespace,
            cluster_role: role.to_string(),
            subject_kind,
            subject,
        })
    }
}

#[async_trait]
impl Provisioner for KubernetesProvisioner {
    fn kind(&self) -> &'static str {
        "kubernetes"
    }

    async fn grant(&self, g: &GrantSpec) -> Result<GrantOutcome, ProvisionError> {
        let b = Binding::of(g)?;
        if let Some(ns) = &b.subject_namespace {
            self.ensure_service_account(ns, &b.subject, g).await?;
        }
        let name = b.name();
        let what = format!(
            "{} {name} binding {} to {} {}",
            if b.namespace.is_some() {
                "RoleBinding"
            } else {
                "ClusterRoleBinding"
            },
            b.role.privilege(b.namespace.as_deref()),
            b.subject_kind,
            b.subject
        );
        let (kind, ns_meta) = match &b.namespace {
            Some(ns) => ("RoleBinding", json!(ns)),
            None => ("ClusterRoleBinding", Value::Null),
        };
        let mut metadata = json!({
            "name": name,
            "labels": {
                "app.kubernetes.io/managed-by": "pedm",
                "pedm.dev/grant": g.grant_id.to_string(),
            },
            "annotations": {
                "pedm.dev/user": g.user,
                "pedm.dev/expires-at": g.expires_at.to_string(),
            },
        });
        if !ns_meta.is_null() {
            metadata["namespace"] = ns_meta;
        }
        let body = json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": kind,
            "metadata": metadata,
            "roleRef": b.role.json(),
            "subjects": [b.subject_json()],
        });
        match self
            .call(reqwest::Method::POST, &b.path(), Some(&body))
            .await
        {
            Ok(_) => Ok(GrantOutcome {
                secret: None,
                detail: format!("created {what}"),
            }),
            Err(ProvisionError::Refused(m)) if m.starts_with("conflict:") => {
                // Already there (a grant again, or a second live grant sharing it): it must
                // be what pedm would have made.
                match self.get_binding(&b).await? {
                    Some(v) if binds(&v, &b) => Ok(GrantOutcome {
                        secret: None,
                        detail: format!("{what} already in place"),
                    }),
                    _ => Err(ProvisionError::refused(format!(
                        "{name} exists and binds something else; pedm leaves it alone"
                    ))),
                }
            }
            Err(e) => Err(e),
        }
    }

    async fn revoke(&self, g: &GrantSpec) -> Result<(), ProvisionError> {
        let b = Binding::of(g)?;
        if let Some(ns) = &b.subject_namespace {
            // The tokens bound to the grant's Secret stop working the moment it is gone.
            self.call(
                reqwest::Method::DELETE,
                &format!(
                    "/api/v1/namespaces/{ns}/secrets/{}",
                    tokens::grant_secret_name(g)
                ),
                None,
            )
            .await?;
        }
        match self.get_binding(&b).await? {
            None => return Ok(()),
            // Someone else's binding that happens to have pedm's name: not pedm's to delete.
            Some(v) if v["metadata"]["labels"]["app.kubernetes.io/managed-by"] != "pedm" => {
                return Err(ProvisionError::refused(format!(
                    "{} is not managed by pedm; left alone",
                    b.name()
                )));
            }
            Some(_) => {}
        }
        self.call(
            reqwest::Method::DELETE,
            &format!("{}/{}", b.path(), b.name()),
            None,
        )
        .await?;
        Ok(())
    }

    async fn observe(&self, g: &GrantSpec) -> Result<Observed, ProvisionError> {
        let b = Binding::of(g)?;
        let present = self.get_binding(&b).await?.is_some_and(|v| binds(&v, &b));
        Ok(Observed {
            present,
            detail: format!(
                "{} {} {}",
                b.account(),
                if present { "holds" } else { "does not hold" },
                b.role.privilege(b.namespace.as_deref())
            ),
        })
    }

    async fn discover(&self) -> Result<Vec<StandingPrivilege>, ProvisionError> {
        self.own_user().await?;
        let mut out = Vec::new();
        let cluster = self.list(&collection(None)).await?;
        let namespaced = self.list(&format!("{RBAC}/rolebindings")).await?;
        for (items, namespaced) in [(cluster, false), (namespaced, true)] {
            for v in items {
                if v["roleRef"]["kind"] != "ClusterRole" {
                    continue;
                }
                let Some(role) = v["roleRef"]["name"].as_str() else {
                    continue;
                };
                if !self
                    .config
                    .privileged_cluster_roles
                    .iter()
                    .any(|r| r == role)
                {
                    continue;
                }
                let ns = namespaced
                    .then(|| v["metadata"]["namespace"].as_str())
                    .flatten();
                let name = v["metadata"]["name"].as_str().unwrap_or("?");
                for s in v["subjects"].as_array().into_iter().flatten() {
                    let (Some(kind), Some(subject)) = (s["kind"].as_str(), s["name"].as_str())
                    else {
                        continue;
                    };
                    let account = match kind {
                        "User" => subject.to_string(),
                        "Group" => format!("group/{subject}"),
                        // Service accounts: reported under their username.
                        "ServiceAccount" => format!(
                            "system:serviceaccount:{}:{subject}",
                            s["namespace"].as_str().or(ns).unwrap_or("default")
                        ),
                        _ => continue,
                    };
                    out.push(StandingPrivilege {
                        account,
                        privilege: match ns {
                            Some(ns) => format!("clusterrole:{role}@{ns}"),
                            None => format!("clusterrole:{role}"),
                        },
                        source: match ns {
                            Some(ns) => format!("RoleBinding {ns}/{name}"),
                            None => format!("ClusterRoleBinding {name}"),
                        },
                    });
                }
            }
        }
        out.sort();
        out.dedup_by(|a, b| a.account == b.account && a.privilege == b.privilege);
        Ok(out)
    }

    fn account(&self, g: &GrantSpec) -> Option<String> {
        Binding::of(g).ok().map(|b| b.account())
    }

    fn provisions(&self, g: &GrantSpec) -> Result<(), String> {
        Binding::of(g).map(|_| ()).map_err(|e| e.to_string())
    }

    fn privilege(&self, g: &GrantSpec) -> Option<String> {
        Binding::of(g)
            .ok()
            .map(|b| b.role.privilege(b.namespace.as_deref()))
    }

    async fn credentials(
        &self,
        g: &GrantSpec,
        now: jiff::Timestamp,
    ) -> Result<Credentials, ProvisionError> {
        let b = Binding::of(g)?;
        if b.subject_namespace.is_none() && self.config.oidc_audience.is_some() {
            return self.id_token(g, &b, now);
        }
        self.service_account_token(g, now).await
    }

    fn removable(&self, p: &StandingPrivilege) -> Result<(), String> {
        Standing::parse(p).map_err(|e| e.to_string())?;
        let own = self.own.lock().unwrap_or_else(|e| e.into_inner());
        if own.as_deref() == Some(p.account.as_str()) {
            return Err(format!(
                "{} is the identity pedm calls the API server as: never removed",
                p.account
            ));
        }
        Ok(())
    }

    async fn remove_standing(&self, p: &StandingPrivilege) -> Result<String, ProvisionError> {
        let s = Standing::parse(p)?;
        if self.own_user().await?.as_deref() == Some(p.account.as_str()) {
            return Err(ProvisionError::invalid(format!(
                "{} is the identity pedm calls the API server as: never removed",
                p.account
            )));
        }
        let path = match &s.namespace {
            Some(ns) => format!("{RBAC}/namespaces/{ns}/rolebindings"),
            None => format!("{RBAC}/clusterrolebindings"),
        };
        let mut done = Vec::new();
        for v in self.list(&path).await? {
            if v["roleRef"]["kind"] != "ClusterRole"
                || v["roleRef"]["name"] != s.cluster_role.as_str()
            {
                continue;
            }
            let subjects = v["subjects"].as_array().cloned().unwrap_or_default();
            let keep: Vec<Value> = subjects
                .iter()
                .filter(|x| !(x["kind"] == s.subject_kind && x["name"] == s.subject.as_str()))
                .cloned()
                .collect();
            if keep.len() == subjects.len() {
                continue;
            }
            let Some(name) = v["metadata"]["name"].as_str() else {
                continue;
            };
            if keep.is_empty() {
                self.call(reqwest::Method::DELETE, &format!("{path}/{name}"), None)
                    .await?;
                done.push(format!("deleted binding {name}"));
            } else {
                // Replace with the resourceVersion read: a concurrent change makes this a
                // conflict rather than overwriting it.
                let mut updated = v.clone();
                updated["subjects"] = Value::Array(keep);
                self.call(
                    reqwest::Method::PUT,
                    &format!("{path}/{name}"),
                    Some(&updated),
                )
                .await?;
                done.push(format!("removed {} from binding {name}", p.account));
            }
        }
        Ok(if done.is_empty() {
            format!("nothing to remove: {} holds no {}", p.account, p.privilege)
        } else {
            done.join("; ")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_spec;

    #[test]
    fn settings_name_one_binding() {
        let b = |s| Binding::of(&test_spec("alice", s));
        let cluster = b(json!({"cluster_role": "view"})).unwrap();
        assert_eq!(cluster.role.privilege(None), "clusterrole:view");
        assert_eq!(cluster.path(), format!("{RBAC}/clusterrolebindings"));
        let ns = b(json!({"cluster_role": "admin", "namespace": "payments",
            "subject": "{user}@example.com"}))
        .unwrap();
        assert_eq!(ns.account(), "alice@example.com");
        assert_eq!(
            ns.role.privilege(Some("payments")),
            "clusterrole:admin@payments"
        );
        assert_ne!(cluster.name(), ns.name());
        assert_eq!(
            cluster.name(),
            b(json!({"cluster_role": "view"})).unwrap().name()
        );
        let group =
            b(json!({"cluster_role": "view", "subject_kind": "Group", "subject": "sre"})).unwrap();
        assert_eq!(group.account(), "group/sre");
        for bad in [
            json!({}),
            json!({"role": "deployer"}),
            json!({"cluster_role": "a", "role": "b", "namespace": "x"}),
            json!({"cluster_role": "../secrets"}),
            json!({"cluster_role": "view", "namespace": "Bad_NS"}),
            json!({"cluster_role": "view", "subject": "system:masters"}),
            json!({"cluster_role": "view", "subject": "a b"}),
            json!({"cluster_role": "view", "subject_kind": "ServiceAccount"}),
            json!({"cluster_role": "view", "verbs": ["*"]}),
        ] {
            assert!(
                matches!(b(bad.clone()), Err(ProvisionError::Invalid(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn standing_parses_back_and_protects_system() {
        let p = |a: &str, pr: &str| StandingPrivilege {
            account: a.into(),
            privilege: pr.into(),
            source: String::new(),
        };
        let s = Standing::parse(&p("group/sre", "clusterrole:admin@payments")).unwrap();
        assert_eq!(
            (s.subject_kind, s.subject.as_str(), s.namespace.as_deref()),
            ("Group", "sre", Some("payments"))
        );
        assert!(
            Standing::parse(&p(
                "system:kube-controller-manager",
                "clusterrole:cluster-admin"
            ))
            .is_err()
        );
        assert!(Standing::parse(&p("eve", "role:x")).is_err());
    }
}
