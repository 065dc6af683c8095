//! Amazon Web Services: IAM and IAM Identity Center through the official AWS SDK for Rust.
//!
//! A role's settings pick exactly one thing a grant switches on:
//!
//! | settings | grant | revoke | privilege (as discovery reports it) |
//! |---|---|---|---|
//! | `policy_arn` | `AttachUserPolicy` to the IAM user `login` (or `AttachRolePolicy` to the IAM role `login` with `principal = "role"`) | `DetachUserPolicy` / `DetachRolePolicy` | `policy:<arn>` |
//! | `group` | `AddUserToGroup` | `RemoveUserFromGroup` | `group:<name>` |
//! | `permission_set_arn` + `account_id` | `CreateAccountAssignment` of the permission set in the account to the Identity Center user named `login` (waits until AWS says it succeeded) | `DeleteAccountAssignment` | `permission_set:<arn>@<account>` |
//!
//! `login` is a template (`{user}` = the pedm user name), default the pedm user name; the
//! account discovery reports is the IAM user name, `role/<name>` for an IAM role, the
//! Identity Center user name, or `group/<display name>` for an Identity Center group.
//! A role with only `assume_role_arn` switches nothing on and is used for temporary
//! credentials alone; its grant is provisioned all the same, so that an early end reaches
//! AWS (below).
//!
//! Temporary credentials ([`Provisioner::credentials`], `pedm aws credentials --grant ID`):
//! `sts:AssumeRole` of the role's `assume_role_arn` with `SourceIdentity` = the pedm user,
//! session tags `pedm-grant`, `pedm-user`, `pedm-role` (CloudTrail ties every action to the
//! grant), `DurationSeconds` = the grant's remaining time (at least STS's minimum of 15
//! minutes, at most `max_session`), and a session policy that denies everything after the
//! grant's end, so AWS itself enforces the end to the second even where STS's minimum
//! outlasts it. The answer is the AWS CLI's `credential_process` JSON, or
//! ([`Provisioner::console_sign_in`], `pedm aws console`) a console sign-in URL from AWS's
//! federation endpoint for such a session. A grant that ends early (revoked, released)
//! denies its sessions in the assumed role's inline policy `pedm-revoked-sessions` until its
//! planned end (see `sts.rs`): pedm needs `iam:GetRolePolicy` and `iam:PutRolePolicy` on
//! the roles it hands out.
//!
//! Discovery: every IAM user and role with one of `privileged_policies` attached, members of
//! every IAM group with one attached (`group:<name>`), and, with `[identity_center]`, every
//! user or group assigned a permission set in the configured accounts (all permission sets
//! provisioned there, or only `privileged_permission_sets`). Drift removal detaches,
//! removes from the group, or deletes the assignment. The identity pedm itself calls AWS as
//! (`sts:GetCallerIdentity`) is never removed.
//!
//! Credentials come from the SDK's standard chain (environment, `profile` in the shared
//! files or `credentials_file`, web identity, ECS, EC2 instance metadata), never from
//! pedm's configuration and never logged. `endpoint_url` points every service at one
//! endpoint (the tests' moto server); production leaves it unset. Errors: throttling, 5xx,
//! timeouts and connection failures are [`ProvisionError::Unreachable`] (after the SDK's own
//! three attempts with backoff); other AWS errors are [`ProvisionError::Refused`] with
//! AWS's code and message.

mod iam;
mod identity_center;
mod names;
mod sts;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_iam::config::http::HttpResponse;
use aws_sdk_iam::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_ssoadmin::types::PrincipalType;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;

use crate::config::ConfigError;
use crate::{
    Credentials, GrantOutcome, GrantSpec, Observed, ProvisionError, Provisioner, StandingPrivilege,
    check_settings, login_from_settings, setting_str, truncate,
};
use names::*;

/// `kind = "aws"` in the server configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsConfig {
    /// The region for STS and Identity Center (IAM is global). Default `us-east-1`.
    #[serde(default = "default_region")]
    pub region: String,
    /// One endpoint for every AWS service (an emulator in tests). Unset in production.
    #[serde(default)]
    pub endpoint_url: Option<String>,
    /// The profile of the shared config/credentials files to use (default: the SDK's choice,
    /// `AWS_PROFILE` or `default`).
    #[serde(default)]
    pub profile: Option<String>,
    /// A credentials file to read `profile` from instead of `~/.aws/credentials` (e.g. one
    /// readable only by pedmd's service user).
    #[serde(default)]
    pub credentials_file: Option<PathBuf>,
    /// Managed policies whose holders discovery reports.
    #[serde(default = "default_privileged_policies")]
    pub privileged_policies: Vec<String>,
    /// IAM Identity Center, for permission-set roles and their discovery.
    #[serde(default)]
    pub identity_center: Option<IdentityCenterConfig>,
    /// The longest temporary credentials issued, whatever the grant's remaining time
    /// (AWS allows at most the role's `MaxSessionDuration`, 1 to 12 hours). Default 1 hour.
    #[serde(default = "default_max_session", with = "pedm_notify::duration")]
    pub max_session: Duration,
    /// Longest one AWS operation may take, retries included.
    #[serde(default = "default_timeout", with = "pedm_notify::duration")]
    pub timeout: Duration,
    /// AWS's federation endpoint, for console sign-in URLs (`pedm aws console`); the
    /// regional ones are `https://REGION.signin.aws.amazon.com/federation`.
    #[serde(default = "default_federation_url")]
    pub federation_url: String,
    /// Where a console sign-in lands.
    #[serde(default = "default_console_url")]
    pub console_url: String,
}

/// `[provision.targets.<name>.identity_center]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityCenterConfig {
    /// `arn:aws:sso:::instance/ssoins-…`.
    pub instance_arn: String,
    /// `d-…`: the identity store whose user names are pedm's logins.
    pub identity_store_id: String,
    /// The AWS accounts whose assignments discovery reads.
    #[serde(default)]
    pub accounts: Vec<String>,
    /// Permission sets whose assignments discovery reports; empty: every permission set
    /// provisioned to each account.
    #[serde(default)]
    pub privileged_permission_sets: Vec<String>,
}

fn default_region() -> String {
    "us-east-1".into()
}
fn default_privileged_policies() -> Vec<String> {
    [
        "AdministratorAccess",
        "IAMFullAccess",
        "PowerUserAccess",
        "AWSOrganizationsFullAccess",
    ]
    .iter()
    .map(|p| format!("arn:aws:iam::aws:policy/{p}"))
    .collect()
}
fn default_max_session() -> Duration {
    Duration::from_secs(3600)
}
fn default_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_federation_url() -> String {
    "https://signin.aws.amazon.com/federation".into()
}
fn default_console_url() -> String {
    "https://console.aws.amazon.com/".into()
}

/// STS's shortest session.
const MIN_SESSION: Duration = Duration::from_secs(900);
/// STS's longest role session.
const MAX_SESSION: Duration = Duration::from_secs(12 * 3600);

impl AwsConfig {
    pub fn new() -> Self {
        AwsConfig {
            region: default_region(),
            endpoint_url: None,
            profile: None,
            credentials_file: None,
            privileged_policies: default_privileged_policies(),
            identity_center: None,
            max_session: default_max_session(),
            timeout: default_timeout(),
            federation_url: default_federation_url(),
            console_url: default_console_url(),
        }
    }
}

impl Default for AwsConfig {
    fn default() -> Self {
        Self::new()
    }
}

/// The SDK clients, made on first use (loading the credential chain is asynchronous).
struct Clients {
    iam: aws_sdk_iam::Client,
    sts: aws_sdk_sts::Client,
    sso: aws_sdk_ssoadmin::Client,
    ids: aws_sdk_identitystore::Client,
}

pub struct AwsProvisioner {
    config: AwsConfig,
    clients: OnceCell<Clients>,
    /// For the federation endpoint (console sign-in), which no SDK covers.
    http: reqwest::Client,
    /// The account pedm calls AWS as, learnt by discovery: never removed.
    own_account: Mutex<Option<String>>,
}

impl AwsProvisioner {
    pub fn new(config: AwsConfig) -> Result<Self, ConfigError> {
        if config.region.is_empty()
            || !config
                .region
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(ConfigError(format!(
                "region {:?} is not an AWS region name",
                config.region
            )));
        }
        if let Some(u) = &config.endpoint_url
            && !(u.starts_with("https://") || u.starts_with("http://"))
        {
            return Err(ConfigError(format!(
                "endpoint_url {u:?} must be an http:// or https:// URL"
            )));
        }
        if config.timeout.is_zero() {
            return Err(ConfigError("timeout must be greater than zero".into()));
        }
        if config.max_session < MIN_SESSION || config.max_session > MAX_SESSION {
            return Err(ConfigError(
                "max_session must be between 15 minutes and 12 hours (what STS allows)".into(),
            ));
        }
        for p in &config.privileged_policies {
            check_policy_arn(p).map_err(|e| ConfigError(format!("privileged_policies: {e}")))?;
        }
        if let Some(ic) = &config.identity_center {
            if !ic.instance_arn.starts_with("arn:aws") || !ic.instance_arn.contains(":instance/") {
                return Err(ConfigError(format!(
                    "identity_center.instance_arn {:?} is not an Identity Center instance ARN",
                    ic.instance_arn
                )));
            }
            if !name_ok(&ic.identity_store_id, 64) {
                return Err(ConfigError(format!(
                    "identity_center.identity_store_id {:?} is not an identity store id",
                    ic.identity_store_id
                )));
            }
            for a in &ic.accounts {
                check_account_id(a)
                    .map_err(|e| ConfigError(format!("identity_center.accounts: {e}")))?;
            }
            for p in &ic.privileged_permission_sets {
                check_permission_set_arn(p).map_err(|e| {
                    ConfigError(format!("identity_center.privileged_permission_sets: {e}"))
                })?;
            }
        }
        for (what, u) in [
            ("federation_url", &config.federation_url),
            ("console_url", &config.console_url),
        ] {
            check_https(what, u)?;
        }
        let http = crate::http_client(config.timeout, None)?;
        Ok(AwsProvisioner {
            config,
            clients: OnceCell::new(),
            http,
            own_account: Mutex::new(None),
        })
    }

    async fn clients(&self) -> &Clients {
        self.clients
            .get_or_init(|| async {
                let c = &self.config;
                let mut loader = aws_config::defaults(BehaviorVersion::latest())
                    .region(aws_config::Region::new(c.region.clone()))
                    .retry_config(RetryConfig::standard().with_max_attempts(3))
                    .timeout_config(
                        TimeoutConfig::builder()
                            .operation_timeout(c.timeout)
                            .connect_timeout(c.timeout.min(Duration::from_secs(5)))
                            .build(),
                    );
                if let Some(u) = &c.endpoint_url {
                    loader = loader.endpoint_url(u.clone());
                }
                if let Some(p) = &c.profile {
                    loader = loader.profile_name(p.clone());
                }
                if let Some(f) = &c.credentials_file {
                    use aws_runtime::env_config::file::{EnvConfigFileKind, EnvConfigFiles};
                    loader = loader.profile_files(
                        EnvConfigFiles::builder()
                            .include_default_config_file(true)
                            .with_file(EnvConfigFileKind::Credentials, f)
                            .build(),
                    );
                }
                let shared = loader.load().await;
                Clients {
                    iam: aws_sdk_iam::Client::new(&shared),
                    sts: aws_sdk_sts::Client::new(&shared),
                    sso: aws_sdk_ssoadmin::Client::new(&shared),
                    ids: aws_sdk_identitystore::Client::new(&shared),
                }
            })
            .await
    }

    fn identity_center(&self) -> Result<&IdentityCenterConfig, ProvisionError> {
        self.config.identity_center.as_ref().ok_or_else(|| {
            ProvisionError::invalid(
                "permission_set_arn needs [identity_center] in the target's configuration",
            )
        })
    }

    /// The account pedm calls AWS as, as discovery names accounts (`NAME` for an IAM user,
    /// `role/NAME` for an assumed role).
    async fn caller_account(&self) -> Result<Option<String>, ProvisionError> {
        let out = self
            .clients()
            .await
            .sts
            .get_caller_identity()
            .send()
            .await
            .map_err(|e| classify("sts:GetCallerIdentity", e))?;
        let own = out.arn().and_then(account_of_arn);
        *self.own_account.lock().unwrap_or_else(|e| e.into_inner()) = own.clone();
        Ok(own)
    }
}

/// An `https://` URL, or `http://` to a loopback address (a test's stand-in): a console
/// session's secrets are sent to it.
fn check_https(what: &str, u: &str) -> Result<(), ConfigError> {
    let url = reqwest::Url::parse(u).map_err(|e| ConfigError(format!("{what} {u:?}: {e}")))?;
    let host = url.host_str().unwrap_or_default();
    let loopback = host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|a| a.is_loopback());
    if url.scheme() == "https" || (url.scheme() == "http" && loopback) {
        Ok(())
    } else {
        Err(ConfigError(format!(
            "{what} {u:?} must be an https:// URL (http:// only to a loopback address)"
        )))
    }
}

/// `arn:aws:iam::1:user/path/NAME` → `NAME`; `arn:aws:sts::1:assumed-role/ROLE/session` and
/// `arn:aws:iam::1:role/path/ROLE` → `role/ROLE`.
fn account_of_arn(arn: &str) -> Option<String> {
    let resource = arn.splitn(6, ':').nth(5)?;
    let mut parts = resource.split('/');
    match parts.next()? {
        "user" => resource.rsplit('/').next().map(str::to_string),
        "role" => resource.rsplit('/').next().map(|r| format!("role/{r}")),
        "assumed-role" => parts.next().map(|r| format!("role/{r}")),
        _ => None,
    }
}

/// Whom a policy is attached to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Principal {
    User(String),
    Role(String),
}

impl Principal {
    fn account(&self) -> String {
        match self {
            Principal::User(u) => u.clone(),
            Principal::Role(r) => format!("role/{r}"),
        }
    }
    fn from_account(account: &str) -> Result<Self, ProvisionError> {
        match account.strip_prefix("role/") {
            Some(r) => Ok(Principal::Role(check_iam_name("role", r)?.to_string())),
            None => Ok(Principal::User(
                check_iam_name("user", account)?.to_string(),
            )),
        }
    }
}

/// What a role's settings switch on.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Mode {
    Policy {
        principal: Principal,
        arn: String,
    },
    Group {
        user: String,
        group: String,
    },
    PermissionSet {
        user: String,
        permission_set: String,
        account: String,
    },
}

const SETTINGS: &[&str] = &[
    "login",
    "principal",
    "policy_arn",
    "group",
    "permission_set_arn",
    "account_id",
    "assume_role_arn",
];

impl Mode {
    /// `Ok(None)`: a credentials-only role (nothing switched on).
    fn of(g: &GrantSpec) -> Result<Option<Mode>, ProvisionError> {
        check_settings(g, SETTINGS)?;
        let login = login_from_settings(g)?;
        let policy = setting_str(g, "policy_arn")?;
        let group = setting_str(g, "group")?;
        let ps = setting_str(g, "permission_set_arn")?;
        let account = setting_str(g, "account_id")?;
        let principal = setting_str(g, "principal")?;
        if let Some(a) = setting_str(g, "assume_role_arn")? {
            check_role_arn(a)?;
        }
        if [policy.is_some(), group.is_some(), ps.is_some()]
            .iter()
            .filter(|x| **x)
            .count()
            > 1
        {
            return Err(ProvisionError::invalid(
                "settings: give one of policy_arn, group or permission_set_arn",
            ));
        }
        if principal.is_some() && policy.is_none() {
            return Err(ProvisionError::invalid(
                "settings.principal applies to policy_arn only",
            ));
        }
        if account.is_some() != ps.is_some() {
            return Err(ProvisionError::invalid(
                "settings: permission_set_arn and account_id go together",
            ));
        }
        Ok(Some(if let Some(arn) = policy {
            check_policy_arn(arn)?;
            let principal = match principal.unwrap_or("user") {
                "user" => Principal::User(check_iam_name("login", &login)?.to_string()),
                "role" => Principal::Role(check_iam_name("login", &login)?.to_string()),
                other => {
                    return Err(ProvisionError::invalid(format!(
                        "settings.principal must be \"user\" or \"role\", not {other:?}"
                    )));
                }
            };
            Mode::Policy {
                principal,
                arn: arn.to_string(),
            }
        } else if let Some(group) = group {
            Mode::Group {
                user: check_iam_name("login", &login)?.to_string(),
                group: check_iam_name("group", group)?.to_string(),
            }
        } else if let (Some(ps), Some(account)) = (ps, account) {
            check_permission_set_arn(ps)?;
            check_account_id(account)?;
            Mode::PermissionSet {
                user: check_identity_center_name(&login)?.to_string(),
                permission_set: ps.to_string(),
                account: account.to_string(),
            }
        } else {
            return Ok(None);
        }))
    }

    fn privilege(&self) -> String {
        match self {
            Mode::Policy { arn, .. } => format!("policy:{arn}"),
            Mode::Group { group, .. } => format!("group:{group}"),
            Mode::PermissionSet {
                permission_set,
                account,
                ..
            } => format!("permission_set:{permission_set}@{account}"),
        }
    }

    fn account(&self) -> String {
        match self {
            Mode::Policy { principal, .. } => principal.account(),
            Mode::Group { user, .. } | Mode::PermissionSet { user, .. } => user.clone(),
        }
    }
}

/// The role a sessions-only role (no policy, group or permission set) hands out sessions
/// of: such a grant switches nothing on, and its early end denies its sessions.
fn sessions_role(g: &GrantSpec) -> Result<&str, ProvisionError> {
    setting_str(g, "assume_role_arn")?.ok_or_else(|| {
        ProvisionError::invalid(
            "the role names no policy_arn, group, permission_set_arn or assume_role_arn: \
             nothing to switch on",
        )
    })
}

/// An SDK error sorted into retry-later or permanent.
fn classify<E>(what: &str, e: SdkError<E, HttpResponse>) -> ProvisionError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match &e {
        SdkError::ServiceError(se) => {
            let status = se.raw().status().as_u16();
            let code = se.err().code().unwrap_or("unknown error");
            let msg = format!(
                "{what}: {code}: {} (HTTP {status})",
                truncate(se.err().message().unwrap_or(""), 500)
            );
            let throttled = code.contains("Throttl")
                || code == "RequestLimitExceeded"
                || code == "TooManyRequestsException"
                || code == "ServiceUnavailable";
            if status >= 500 || status == 429 || throttled {
                ProvisionError::Unreachable(msg)
            } else {
                ProvisionError::Refused(msg)
            }
        }
        SdkError::ConstructionFailure(_) => {
            ProvisionError::Invalid(format!("{what}: {}", DisplayErrorContext(&e)))
        }
        _ => ProvisionError::Unreachable(format!(
            "{what}: {}",
            truncate(&DisplayErrorContext(&e).to_string(), 500)
        )),
    }
}

/// The AWS error code of a service error, if it is one.
fn code_of<E: ProvideErrorMetadata>(e: &SdkError<E, HttpResponse>) -> Option<&str> {
    e.as_service_error().and_then(|s| s.code())
}

#[async_trait]
impl Provisioner for AwsProvisioner {
    fn kind(&self) -> &'static str {
        "aws"
    }

    async fn grant(&self, g: &GrantSpec) -> Result<GrantOutcome, ProvisionError> {
        let Some(mode) = Mode::of(g)? else {
            let role_arn = sessions_role(g)?;
            return Ok(GrantOutcome {
                secret: None,
                detail: format!(
                    "nothing switched on in AWS: sessions of {role_arn} for {} through pedm",
                    g.user
                ),
            });
        };
        let c = self.clients().await;
        let detail = match &mode {
            Mode::Policy { principal, arn } => iam::attach(&c.iam, principal, arn).await?,
            Mode::Group { user, group } => iam::add_to_group(&c.iam, user, group).await?,
            Mode::PermissionSet {
                user,
                permission_set,
                account,
            } => {
                let ic = self.identity_center()?;
                identity_center::assign(c, ic, user, permission_set, account, self.config.timeout)
                    .await?
            }
        };
        Ok(GrantOutcome {
            secret: None,
            detail,
        })
    }

    async fn revoke(&self, g: &GrantSpec) -> Result<(), ProvisionError> {
        let mode = Mode::of(g)?;
        let role_arn = setting_str(g, "assume_role_arn")?;
        if mode.is_none() {
            sessions_role(g)?;
        }
        let c = self.clients().await;
        // Sessions already issued outlive an early end unless AWS is told to deny them (a
        // planned end needs nothing: their session policy ends them).
        let now = Timestamp::now();
        if let Some(role_arn) = role_arn
            && now < g.expires_at
        {
            sts::deny_sessions(&c.iam, role_arn, g, now).await?;
        }
        let Some(mode) = mode else {
            return Ok(());
        };
        match &mode {
            Mode::Policy { principal, arn } => iam::detach(&c.iam, principal, arn).await,
            Mode::Group { user, group } => iam::remove_from_group(&c.iam, user, group).await,
            Mode::PermissionSet {
                user,
                permission_set,
                account,
            } => {
                let ic = self.identity_center()?;
                identity_center::unassign(
                    c,
                    ic,
                    PrincipalType::User,
                    user,
                    permission_set,
                    account,
                    self.config.timeout,
                )
                .await
                .map(|_| ())
            }
        }
    }

    async fn observe(&self, g: &GrantSpec) -> Result<Observed, ProvisionError> {
        let c = self.clients().await;
        let Some(mode) = Mode::of(g)? else {
            let role_arn = sessions_role(g)?;
            let denied = sts::sessions_denied(&c.iam, role_arn, g).await?;
            return Ok(Observed {
                present: !denied,
                detail: format!(
                    "sessions of {role_arn} for grant {} are {}",
                    g.grant_id,
                    if denied { "denied" } else { "allowed" }
                ),
            });
        };
        let present = match &mode {
            Mode::Policy { principal, arn } => iam::has_policy(&c.iam, principal, arn).await?,
            Mode::Group { user, group } => iam::in_group(&c.iam, user, group).await?,
            Mode::PermissionSet {
                user,
                permission_set,
                account,
            } => {
                let ic = self.identity_center()?;
                identity_center::user_assigned(c, ic, user, permission_set, account).await?
            }
        };
        Ok(Observed {
            present,
            detail: format!(
                "{} {} {}",
                mode.account(),
                if present { "holds" } else { "does not hold" },
                mode.privilege()
            ),
        })
    }

    async fn discover(&self) -> Result<Vec<StandingPrivilege>, ProvisionError> {
        let c = self.clients().await;
        self.caller_account().await?;
        let mut found: BTreeSet<StandingPrivilege> =
            iam::discover(&c.iam, &self.config.privileged_policies)
                .await?
                .into_iter()
                .collect();
        if let Some(ic) = &self.config.identity_center {
            found.extend(identity_center::discover(c, ic).await?);
        }
        Ok(found.into_iter().collect())
    }

    fn account(&self, g: &GrantSpec) -> Option<String> {
        Mode::of(g).ok().flatten().map(|m| m.account())
    }

    fn provisions(&self, g: &GrantSpec) -> Result<(), String> {
        match Mode::of(g) {
            Ok(Some(_)) => Ok(()),
            Ok(None) => sessions_role(g).map(|_| ()).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        }
    }

    fn privilege(&self, g: &GrantSpec) -> Option<String> {
        Mode::of(g).ok().flatten().map(|m| m.privilege())
    }

    fn removable(&self, p: &StandingPrivilege) -> Result<(), String> {
        Standing::parse(p).map_err(|e| e.to_string())?;
        let own = self.own_account.lock().unwrap_or_else(|e| e.into_inner());
        if own.as_deref() == Some(p.account.as_str()) {
            return Err(format!(
                "{} is the identity pedm calls AWS as: never removed",
                p.account
            ));
        }
        Ok(())
    }

    async fn remove_standing(&self, p: &StandingPrivilege) -> Result<String, ProvisionError> {
        let standing = Standing::parse(p)?;
        if self.caller_account().await?.as_deref() == Some(p.account.as_str()) {
            return Err(ProvisionError::invalid(format!(
                "{} is the identity pedm calls AWS as: never removed",
                p.account
            )));
        }
        let c = self.clients().await;
        match standing {
            Standing::Policy(principal, arn) => {
                iam::detach(&c.iam, &principal, &arn).await?;
                Ok(format!("detached {arn} from {}", principal.account()))
            }
            Standing::Group(user, group) => {
                iam::remove_from_group(&c.iam, &user, &group).await?;
                Ok(format!("removed {user} from IAM group {group}"))
            }
            Standing::PermissionSet(account, ps, aws_account) => {
                let ic = self.identity_center()?;
                let (kind, name) = match account.strip_prefix("group/") {
                    Some(group) => (PrincipalType::Group, group),
                    None => (PrincipalType::User, account.as_str()),
                };
                identity_center::unassign(c, ic, kind, name, &ps, &aws_account, self.config.timeout)
                    .await
            }
        }
    }

    async fn credentials(
        &self,
        g: &GrantSpec,
        now: Timestamp,
    ) -> Result<Credentials, ProvisionError> {
        let (session, role_arn) = self.session(g, now).await?;
        Ok(sts::credential_process(&session, g, role_arn))
    }

    async fn console_sign_in(
        &self,
        g: &GrantSpec,
        now: Timestamp,
    ) -> Result<Credentials, ProvisionError> {
        let (session, _) = self.session(g, now).await?;
        sts::console_sign_in(
            &self.http,
            &self.config.federation_url,
            &self.config.console_url,
            &session,
            now,
        )
        .await
    }
}

impl AwsProvisioner {
    /// A role session of the role's `assume_role_arn` for `g`'s holder, for the grant's
    /// remaining time (at least STS's minimum, at most `max_session`).
    async fn session<'g>(
        &self,
        g: &'g GrantSpec,
        now: Timestamp,
    ) -> Result<(sts::Session, &'g str), ProvisionError> {
        Mode::of(g)?;
        let Some(role_arn) = setting_str(g, "assume_role_arn")? else {
            return Err(ProvisionError::invalid(format!(
                "role {} on {} has no assume_role_arn: there is no AWS role to hand out \
                 credentials for",
                g.role, g.target
            )));
        };
        let remaining = g.expires_at.duration_since(now);
        if remaining.is_negative() || remaining.is_zero() {
            return Err(ProvisionError::invalid(format!(
                "grant {} has ended",
                g.grant_id
            )));
        }
        let remaining = Duration::try_from(remaining).unwrap_or(Duration::ZERO);
        let duration = remaining.clamp(MIN_SESSION, self.config.max_session);
        let c = self.clients().await;
        Ok((sts::assume(&c.sts, g, role_arn, duration).await?, role_arn))
    }
}

/// A standing privilege as discovery reported it, parsed back for removal.
enum Standing {
    Policy(Principal, String),
    Group(String, String),
    /// (user name or `group/<display name>`, permission set ARN, account id)
    PermissionSet(String, String, String),
}

impl Standing {
    fn parse(p: &StandingPrivilege) -> Result<Standing, ProvisionError> {
        if let Some(arn) = p.privilege.strip_prefix("policy:") {
            check_policy_arn(arn)?;
            return Ok(Standing::Policy(
                Principal::from_account(&p.account)?,
                arn.to_string(),
            ));
        }
        if let Some(group) = p.privilege.strip_prefix("group:") {
            return Ok(Standing::Group(
                check_iam_name("user", &p.account)?.to_string(),
                check_iam_name("group", group)?.to_string(),
            ));
        }
        if let Some(rest) = p.privilege.strip_prefix("permission_set:")
            && let Some((ps, account)) = rest.rsplit_once('@')
        {
            check_permission_set_arn(ps)?;
            check_account_id(account)?;
            let who = p.account.strip_prefix("group/").unwrap_or(&p.account);
            check_identity_center_name(who)?;
            return Ok(Standing::PermissionSet(
                p.account.clone(),
                ps.to_string(),
                account.to_string(),
            ));
        }
        Err(ProvisionError::invalid(format!(
            "{:?} is not a privilege the aws provisioner reports",
            p.privilege
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_spec;
    use serde_json::json;

    #[test]
    fn settings_pick_one_mode() {
        let m = |s| Mode::of(&test_spec("alice", s));
        assert_eq!(
            m(json!({"policy_arn": "arn:aws:iam::aws:policy/ReadOnlyAccess"})).unwrap(),
            Some(Mode::Policy {
                principal: Principal::User("alice".into()),
                arn: "arn:aws:iam::aws:policy/ReadOnlyAccess".into()
            })
        );
        let role = m(json!({"policy_arn": "arn:aws:iam::123456789012:policy/x",
            "principal": "role", "login": "ops-{user}"}))
        .unwrap()
        .unwrap();
        assert_eq!(role.account(), "role/ops-alice");
        assert_eq!(
            role.privilege(),
            "policy:arn:aws:iam::123456789012:policy/x"
        );
        assert_eq!(
            m(json!({"assume_role_arn": "arn:aws:iam::123456789012:role/r"})).unwrap(),
            None
        );
        for bad in [
            json!({"policy_arn": "arn:aws:iam::aws:policy/A", "group": "g"}),
            json!({"policy_arn": "not-an-arn"}),
            json!({"policy_arn": "arn:aws:iam::aws:policy/A;rm -rf"}),
            json!({"group": "admins", "principal": "role"}),
            json!({"permission_set_arn": "arn:aws:sso:::permissionSet/ssoins-1/ps-1"}),
            json!({"permission_set_arn": "arn:aws:sso:::permissionSet/ssoins-1/ps-1", "account_id": "12"}),
            json!({"group": "admins", "login": "a b"}),
            json!({"group": "admins", "bogus": 1}),
            json!({"assume_role_arn": "arn:aws:iam::1:user/x"}),
        ] {
            assert!(
                matches!(m(bad.clone()), Err(ProvisionError::Invalid(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn arns_name_accounts_as_discovery_does() {
        assert_eq!(
            account_of_arn("arn:aws:iam::123456789012:user/ops/pedm").as_deref(),
            Some("pedm")
        );
        assert_eq!(
            account_of_arn("arn:aws:sts::123456789012:assumed-role/PedmControl/i-1").as_deref(),
            Some("role/PedmControl")
        );
        assert_eq!(
            account_of_arn("arn:aws:sts::123456789012:federated-user/x"),
            None
        );
    }

    #[test]
    fn configuration_is_checked() {
        let ok = AwsProvisioner::new(AwsConfig::new());
        assert!(ok.is_ok());
        let mut bad = AwsConfig::new();
        bad.region = "us east".into();
        assert!(AwsProvisioner::new(bad).is_err());
        let mut bad = AwsConfig::new();
        bad.max_session = Duration::from_secs(60);
        assert!(AwsProvisioner::new(bad).is_err());
        let mut bad = AwsConfig::new();
        bad.privileged_policies = vec!["AdministratorAccess".into()];
        assert!(AwsProvisioner::new(bad).is_err());
        // A console session's secrets go to the federation endpoint: TLS, or loopback.
        for (url, ok) in [
            ("https://eu-west-1.signin.aws.amazon.com/federation", true),
            ("http://127.0.0.1:9/federation", true),
            ("http://[::1]:9/federation", true),
            ("http://signin.example.com/federation", false),
            ("ftp://127.0.0.1/x", false),
            ("not a url", false),
        ] {
            let mut c = AwsConfig::new();
            c.federation_url = url.into();
            assert_eq!(AwsProvisioner::new(c).is_ok(), ok, "{url}");
        }
    }
}
