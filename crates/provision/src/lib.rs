//! Provisioners: switch a grant's privilege on and off in the real target, check whether it
//! is there right now, and discover standing privileged accounts that exist regardless of
//! pedm.
//!
//! One trait, [`Provisioner`], ten implementations:
//!
//! | kind | type | what a grant does |
//! |---|---|---|
//! | `postgres` | [`PostgresProvisioner`] | `GRANT role TO login`, or a short-lived `LOGIN` role with `VALID UNTIL` and a generated password |
//! | `mariadb` | [`MariaDbProvisioner`] | `GRANT role TO 'login'@'host'` as its default role, or a short-lived account with a generated password; connections killed on revoke |
//! | `linux_group` | [`LinuxGroupProvisioner`] | temporary membership of a local group (`gpasswd -a`/`-d`) |
//! | `command` | [`CommandProvisioner`] | runs an admin-configured executable with the grant as JSON on stdin |
//! | `webhook` | [`WebhookProvisioner`] | a signed HTTP POST |
//! | `plugin` | [`PluginProvisioner`] | a request to a long-running program over the versioned stdio protocol (`docs/provisioner-protocol.md`) |
//! | `aws` | [`AwsProvisioner`] | attaches an IAM managed policy, adds to an IAM group, or creates an IAM Identity Center account assignment; hands out STS credentials bounded by the grant |
//! | `azure` | [`AzureProvisioner`] | creates an Azure RBAC role assignment at a scope (Resource Manager), or adds to an Entra ID group (Microsoft Graph) |
//! | `gcp` | [`GcpProvisioner`] | a conditional IAM binding on a project, folder or organisation, expiring at the grant's end (Resource Manager `setIamPolicy` with etag concurrency) |
//! | `kubernetes` | [`KubernetesProvisioner`] | a ClusterRoleBinding or RoleBinding of a ClusterRole or Role to the holder (a user or group subject) |
//!
//! Every operation is idempotent: granting twice, or revoking what is already gone, succeeds.
//!
//! Drift removal: [`Provisioner::remove_standing`] takes away a standing privilege found by
//! [`Provisioner::discover`] that pedm did not grant, when the target's configuration says
//! so (`remove_drift = true`, see [`TargetConfig`]); accounts listed in `keep` and the
//! accounts each provisioner protects (the PostgreSQL bootstrap superuser and the admin
//! login, `root`, the identity pedm calls AWS, Azure, Google Cloud or the Kubernetes API
//! server as, Kubernetes `system:` subjects) are never touched. PostgreSQL removes role
//! memberships (`REVOKE`), MariaDB role grants, Linux groups supplementary memberships
//! (`gpasswd -d`); AWS detaches managed policies, removes IAM group members and deletes
//! Identity Center assignments; Azure deletes
//! the role assignment (after reading it again: still that role, scope and principal); Google
//! Cloud takes the member out of the bindings of that role that do not expire (etag
//! read-modify-write); Kubernetes takes the subject out of the ClusterRoleBindings and
//! RoleBindings of that ClusterRole, deleting a binding it was the only subject of; commands,
//! webhooks and plugins get a `remove_standing` action; everything else is only reported.
//! Errors say whether to retry ([`ProvisionError::is_retryable`]): only
//! [`ProvisionError::Unreachable`] is worth retrying.
//!
//! Secrets (generated passwords, URLs with passwords, webhook keys) never appear in `Debug`
//! output, logs or error messages. [`GrantOutcome::secret`] is meant to be handed to the
//! requester once and not stored.
//!
//! The server builds provisioners from its configuration with [`build`] /
//! [`build_all`] (see [`ProvisionerConfig`] for the TOML shape).

mod aws;
mod azure;
mod command;
mod config;
mod gcp;
mod kubernetes;
mod linux;
mod mariadb;
mod plugin;
mod postgres;
mod scram;
mod webhook;

pub use aws::{AwsConfig, AwsProvisioner, IdentityCenterConfig};
pub use azure::{AzureConfig, AzureProvisioner};
pub use command::{CommandConfig, CommandProvisioner, MAX_CAPTURE};
pub use config::{ConfigError, ProvisionerConfig, TargetConfig, build, build_all, build_with};

pub use gcp::{GcpConfig, GcpProvisioner};
pub use kubernetes::{KubernetesConfig, KubernetesProvisioner};
pub use linux::{LinuxGroupConfig, LinuxGroupProvisioner, parse_sudoers};
pub use mariadb::{MariaDbConfig, MariaDbProvisioner};
pub use plugin::{OPERATIONS, PROTOCOL_VERSION, PluginConfig, PluginHello, PluginProvisioner};
pub use postgres::{PostgresConfig, PostgresProvisioner, redact_url};
pub use webhook::{WebhookConfig, WebhookProvisioner};

use async_trait::async_trait;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// What to provision: one grant on one target. The server fills it from the grant, the role
/// and the role's provisioner settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GrantSpec {
    pub grant_id: Uuid,
    /// The pedm user name of the grant holder.
    pub user: String,
    /// The pedm target name.
    pub target: String,
    /// The pedm role name.
    pub role: String,
    /// The role's run-as account, if it has one (passed through to command and webhook
    /// provisioners; PostgreSQL and Linux groups do not use it).
    #[serde(default)]
    pub run_as: Option<String>,
    pub expires_at: Timestamp,
    /// The role's provisioner settings (what each provisioner reads is documented on it).
    #[serde(default)]
    pub settings: serde_json::Value,
}

/// What a successful grant produced.
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct GrantOutcome {
    /// A credential for the requester (e.g. a generated password): hand it over once, never
    /// log or store it. Not shown by `Debug`.
    pub secret: Option<String>,
    /// What was done, for the audit log (never contains the secret).
    pub detail: String,
}

impl std::fmt::Debug for GrantOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrantOutcome")
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("detail", &self.detail)
            .finish()
    }
}

/// pedmd's OpenID Connect issuer, for targets that trust its ID tokens (a Kubernetes API
/// server started with `--oidc-issuer-url` = pedmd's issuer URL).
pub trait IdTokenSigner: Send + Sync {
    /// The issuer URL (`iss`).
    fn issuer(&self) -> &str;
    /// `claims`, with `iss` added, as a signed compact JWS.
    fn sign(&self, claims: serde_json::Map<String, serde_json::Value>) -> Result<String, String>;
}

/// Short-lived credentials for a grant's holder, in the shape the target's own tools read
/// (for `aws`, the AWS CLI's `credential_process` JSON). `value` holds secrets: hand it to
/// the holder, never log or store it; `Debug` does not show it.
#[derive(Clone, PartialEq)]
pub struct Credentials {
    /// `aws`, `aws-console`, `kubernetes`.
    pub kind: &'static str,
    /// When they stop working (never after the grant's end).
    pub expires_at: Timestamp,
    pub value: serde_json::Value,
    /// What was issued, for the audit log (no secret).
    pub detail: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("kind", &self.kind)
            .field("expires_at", &self.expires_at)
            .field("value", &"<redacted>")
            .field("detail", &self.detail)
            .finish()
    }
}

/// Whether the grant's privilege is in the target right now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observed {
    pub present: bool,
    /// What was seen (e.g. `member of "readwrite"`, `valid until …`).
    #[serde(default)]
    pub detail: String,
}

/// A privileged account found in a target, whoever created it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct StandingPrivilege {
    /// The account holding the privilege: a login, a user name, or `%group` for a sudoers
    /// group specification.
    pub account: String,
    /// What it holds, e.g. `superuser`, `createrole`, `member:readwrite`, `group:sudo`,
    /// `uid0`, `sudo:(ALL:ALL) ALL`.
    pub privilege: String,
    /// Where it was found (a catalog, a group, a file and line).
    #[serde(default)]
    pub source: String,
}

/// Why a provisioning step failed. Only [`ProvisionError::Unreachable`] is worth retrying.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProvisionError {
    /// The target could not be reached or answered "not now" (down, timeout, connection
    /// refused, lock contention, HTTP 5xx/429, exit status 75): retry later.
    #[error("target unreachable: {0}")]
    Unreachable(String),
    /// The target was reached and refused (missing role or user, permission denied, HTTP
    /// 4xx, non-zero exit): retrying the same thing will fail the same way.
    #[error("target refused: {0}")]
    Refused(String),
    /// The request or settings are wrong before anything was sent (hostile or malformed
    /// names, unknown mode, missing setting). Nothing was changed.
    #[error("invalid: {0}")]
    Invalid(String),
}

impl ProvisionError {
    /// True for [`ProvisionError::Unreachable`] only.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unreachable(_))
    }
    pub(crate) fn invalid(msg: impl Into<String>) -> Self {
        Self::Invalid(msg.into())
    }
    pub(crate) fn refused(msg: impl Into<String>) -> Self {
        Self::Refused(msg.into())
    }
    pub(crate) fn unreachable(msg: impl Into<String>) -> Self {
        Self::Unreachable(msg.into())
    }
}

/// Switches one kind of privilege on and off in one target.
#[async_trait]
pub trait Provisioner: Send + Sync {
    /// `postgres`, `mariadb`, `linux_group`, `command`, `webhook`, `plugin`, `aws`, `azure`,
    /// `gcp` or `kubernetes`.
    fn kind(&self) -> &'static str;
    /// Puts the privilege in place. Granting what is already there succeeds (and may hand
    /// out a fresh secret).
    async fn grant(&self, g: &GrantSpec) -> Result<GrantOutcome, ProvisionError>;
    /// Takes the privilege away. Revoking what is already gone succeeds.
    async fn revoke(&self, g: &GrantSpec) -> Result<(), ProvisionError>;
    /// Is the privilege there right now?
    async fn observe(&self, g: &GrantSpec) -> Result<Observed, ProvisionError>;
    /// Whether the target keeps `g`'s end of its own (a temporary login's `VALID UNTIL`),
    /// which [`Provisioner::extend`] then moves when the grant is extended. Default: no.
    fn keeps_expiry(&self, g: &GrantSpec) -> bool {
        let _ = g;
        false
    }
    /// Moves the end the target keeps to `g.expires_at`; returns what was done.
    async fn extend(&self, g: &GrantSpec) -> Result<String, ProvisionError> {
        let _ = g;
        Err(ProvisionError::invalid(format!(
            "the {} provisioner keeps no expiry of its own",
            self.kind()
        )))
    }
    /// Privileged accounts that exist in the target regardless of pedm.
    async fn discover(&self) -> Result<Vec<StandingPrivilege>, ProvisionError>;

    /// The account in the target a grant's privilege is given to (a PostgreSQL login, a
    /// Linux user), when it follows from the grant and its settings alone; `None` when
    /// unknown (commands, webhooks) or the settings are invalid. Reconciliation uses it to
    /// recognise pedm's own grants.
    fn account(&self, g: &GrantSpec) -> Option<String> {
        let _ = g;
        None
    }

    /// Whether this target switches `g`'s role on and off at all: `Err(why not)` for a role
    /// the target's configuration does not provision (e.g. a `linux_group` role without a
    /// `group`), decided from the settings alone. Such a grant is not provisioned there and
    /// says why. Default: every role is provisioned.
    fn provisions(&self, g: &GrantSpec) -> Result<(), String> {
        let _ = g;
        Ok(())
    }

    /// What privilege `g` gives its [`Provisioner::account`] in the target (e.g.
    /// `group:docker`, `member:readwrite`), decided from the settings alone: two live grants
    /// with the same account and privilege share it, and revoking one must leave it for the
    /// other. `None` when each grant's privilege is its own (a temporary login). Default: the
    /// pedm role (`role:<name>`).
    fn privilege(&self, g: &GrantSpec) -> Option<String> {
        Some(format!("role:{}", g.role))
    }

    /// Whether drift found in this target is to be removed (`remove_drift` in the target's
    /// configuration, see [`TargetConfig`]); when false it is only reported.
    fn removes_drift(&self) -> bool {
        false
    }

    /// Whether [`Provisioner::remove_standing`] would take `p` away, decided without
    /// touching the target: `Err(why not)` for what it never removes (privileges it cannot
    /// take away, accounts it protects, accounts listed in `keep`).
    fn removable(&self, p: &StandingPrivilege) -> Result<(), String> {
        let _ = p;
        Err(format!(
            "the {} provisioner does not remove standing privileges",
            self.kind()
        ))
    }

    /// Short-lived credentials for `g`'s holder that stop working no later than the grant
    /// (`now` is the control plane's clock). Default: this kind issues none.
    async fn credentials(
        &self,
        g: &GrantSpec,
        now: Timestamp,
    ) -> Result<Credentials, ProvisionError> {
        let _ = (g, now);
        Err(ProvisionError::invalid(format!(
            "the {} provisioner issues no credentials",
            self.kind()
        )))
    }

    /// A sign-in to the target's web console for `g`'s holder, ending no later than the
    /// grant (`value.url` is the sign-in URL, a secret). Default: this kind offers none.
    async fn console_sign_in(
        &self,
        g: &GrantSpec,
        now: Timestamp,
    ) -> Result<Credentials, ProvisionError> {
        let _ = (g, now);
        Err(ProvisionError::invalid(format!(
            "the {} provisioner offers no console sign-in",
            self.kind()
        )))
    }

    /// Takes away a standing privilege that [`Provisioner::discover`] reported and pedm did
    /// not grant (drift removal); returns what was done. Removing what is already gone
    /// succeeds. Whatever [`Provisioner::removable`] refuses is [`ProvisionError::Invalid`]
    /// (nothing is sent); protections that need the target (e.g. the PostgreSQL bootstrap
    /// superuser) are checked there again.
    async fn remove_standing(&self, p: &StandingPrivilege) -> Result<String, ProvisionError> {
        self.removable(p).map_err(ProvisionError::Invalid)?;
        Err(ProvisionError::invalid(format!(
            "the {} provisioner does not remove standing privileges",
            self.kind()
        )))
    }
}

/// Settings field `login`: a template for the account name in the target, `{user}` replaced
/// by the pedm user name; the pedm user name itself when absent.
pub(crate) fn login_from_settings(g: &GrantSpec) -> Result<String, ProvisionError> {
    match g.settings.get("login") {
        None | Some(serde_json::Value::Null) => Ok(g.user.clone()),
        Some(serde_json::Value::String(t)) => Ok(t.replace("{user}", &g.user)),
        Some(other) => Err(ProvisionError::invalid(format!(
            "settings.login must be a string, not {other}"
        ))),
    }
}

/// A string field of the role settings.
pub(crate) fn setting_str<'a>(
    g: &'a GrantSpec,
    key: &str,
) -> Result<Option<&'a str>, ProvisionError> {
    match g.settings.get(key) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(ProvisionError::invalid(format!(
            "settings.{key} must be a string, not {other}"
        ))),
    }
}

/// A boolean field of the role settings.
pub(crate) fn setting_bool(
    g: &GrantSpec,
    key: &str,
    default: bool,
) -> Result<bool, ProvisionError> {
    match g.settings.get(key) {
        None | Some(serde_json::Value::Null) => Ok(default),
        Some(serde_json::Value::Bool(b)) => Ok(*b),
        Some(other) => Err(ProvisionError::invalid(format!(
            "settings.{key} must be true or false, not {other}"
        ))),
    }
}

/// `settings` must be a JSON object (or absent/null) holding only `allowed` keys.
pub(crate) fn check_settings(g: &GrantSpec, allowed: &[&str]) -> Result<(), ProvisionError> {
    match &g.settings {
        serde_json::Value::Null => Ok(()),
        serde_json::Value::Object(m) => {
            if let Some(k) = m.keys().find(|k| !allowed.contains(&k.as_str())) {
                return Err(ProvisionError::invalid(format!(
                    "unknown setting {k:?} (expected one of: {})",
                    allowed.join(", ")
                )));
            }
            Ok(())
        }
        other => Err(ProvisionError::invalid(format!(
            "settings must be a JSON object, not {other}"
        ))),
    }
}

/// A database error sorted into retry-later or permanent: `server` names a server's error
/// (`SQLSTATE 08006`, `error 1205`) and says whether it passes; connection-level failures
/// pass, bad configuration is invalid, anything else is a refusal.
pub(crate) fn classify_sqlx(
    what: &str,
    e: sqlx::Error,
    server: impl FnOnce(&dyn sqlx::error::DatabaseError) -> (String, bool),
) -> ProvisionError {
    match &e {
        sqlx::Error::Database(db) => {
            let (code, transient) = server(db.as_ref());
            let msg = format!("{what}: {} ({code})", db.message());
            if transient {
                ProvisionError::Unreachable(msg)
            } else {
                ProvisionError::Refused(msg)
            }
        }
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => ProvisionError::Unreachable(format!("{what}: {e}")),
        sqlx::Error::Configuration(_) => ProvisionError::Invalid(format!("{what}: {e}")),
        _ => ProvisionError::Refused(format!("{what}: {e}")),
    }
}

/// The name of a grant's temporary account: `pedm_<user>_<last 8 hex of the grant id>`, the
/// pedm user name lower-cased with `.` and `-` as `_`, cut to `max_user` characters.
/// Refuses a user name that is not a pedm one; the caller checks the target's own rules.
pub(crate) fn temp_account_name(g: &GrantSpec, max_user: usize) -> Result<String, ProvisionError> {
    let s = &g.user;
    let valid = !s.is_empty()
        && s.len() <= 64
        && s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !valid {
        return Err(ProvisionError::invalid(format!(
            "user {s:?} is not a valid pedm user name"
        )));
    }
    let user: String = s
        .chars()
        .map(|c| match c {
            '.' | '-' => '_',
            c => c.to_ascii_lowercase(),
        })
        .take(max_user)
        .collect();
    let id = g.grant_id.simple().to_string();
    Ok(format!("pedm_{user}_{}", &id[id.len() - 8..]))
}

/// A grant of `user` on target `db`, role `rw`, with `settings` (unit tests).
#[cfg(test)]
pub(crate) fn test_spec(user: &str, settings: serde_json::Value) -> GrantSpec {
    GrantSpec {
        grant_id: Uuid::parse_str("0190f0e2-7b3c-7d4e-8f00-0123456789ab").unwrap(),
        user: user.into(),
        target: "db".into(),
        role: "rw".into(),
        run_as: None,
        expires_at: Timestamp::from_second(1_800_000_000).unwrap(),
        settings,
    }
}

/// The HTTP client of the provisioners that call an API: pedm's user agent, redirects never
/// followed (a credential must not follow one elsewhere), `timeout` for the whole call and the
/// connection, and `ca_file` trusted besides the system's roots.
pub(crate) fn http_client(
    timeout: std::time::Duration,
    ca_file: Option<&std::path::Path>,
) -> Result<reqwest::Client, ConfigError> {
    let builder = reqwest::Client::builder()
        .user_agent(concat!("pedm-provision/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .connect_timeout(timeout);
    pedm_notify::tls::with_ca(builder, ca_file)
        .map_err(ConfigError)?
        .build()
        .map_err(|e| ConfigError(format!("HTTP client: {e}")))
}

/// Why a request got no answer, in a few words (never the URL or what was sent).
pub(crate) fn transport_error(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "could not connect".to_string()
    } else {
        e.to_string()
    }
}

/// Cuts `s` to at most `max` bytes on a character boundary, marking the cut.
pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… [truncated]", &s[..end])
}
