//! Microsoft Azure: RBAC role assignments through the Azure Resource Manager REST API and
//! Entra ID group membership through Microsoft Graph.
//!
//! A role's settings pick one thing a grant switches on:
//!
//! | settings | grant | revoke | privilege |
//! |---|---|---|---|
//! | `role_definition_id` (a GUID or a full `…/providers/Microsoft.Authorization/roleDefinitions/<guid>`), `scope` (optional, default the target's) | a condition-free role assignment (`PUT …/roleAssignments/<new uuid>`) for the holder at exactly that scope, unless one is there | `DELETE` of every such assignment | `role:<guid>@<scope>` |
//! | `group_id` (a GUID) | `POST /groups/{id}/members/$ref` | `DELETE /groups/{id}/members/{user}/$ref` | `group:<guid>` |
//!
//! `login` is a template (`{user}` = the pedm user name, e.g. `{user}@contoso.com`), default
//! the pedm user name: the holder's userPrincipalName, resolved to an object id through
//! Graph (`GET /v1.0/users/{upn}`; an unknown user is a refusal naming it, except on revoke
//! and observe, where a user who no longer exists holds nothing).
//!
//! Discovery lists the role assignments at the target's `scope` and above
//! (`$filter=atScope()`; those at management-group or tenant-root scope are not read) whose
//! role definition is one of `privileged_roles` (default Owner,
//! User Access Administrator and Contributor) and names each principal as Graph knows it: a
//! user by its userPrincipalName, a group as `group/<displayName>`, a service principal as
//! `sp/<appId>`, anything Graph cannot find as `unknown/<objectId>`. The source names the
//! assignment (`Azure RBAC role assignment <name>`), which drift removal deletes after
//! checking it still gives that role to that principal. pedm's own service principal
//! (`sp/<client_id>`) is never removed.
//!
//! Authentication: Entra ID client credentials (`client_id` with `client_secret` or
//! `client_secret_file`, read on each token fetch so a rotated file takes effect), one
//! token for ARM and one for Graph, each cached until a minute before it expires. The
//! secret and the tokens never appear in `Debug`, logs or errors. Errors: 429 and 5xx are
//! retried as `Retry-After` says while that fits in `timeout`, then are
//! [`ProvisionError::Unreachable`], as are timeouts and connection failures; a 401 on a
//! cached token fetches a new one once; other 4xx are [`ProvisionError::Refused`] with the
//! API's error code and message.

mod api;
mod ids;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::config::ConfigError;
use crate::{
    GrantOutcome, GrantSpec, Observed, ProvisionError, Provisioner, StandingPrivilege,
    check_settings, login_from_settings, setting_str,
};
use api::{Api, Client, refused};
use ids::{BUILT_IN, Scope, guid, privileged_role, role_definition};

/// ARM's role assignments API version.
const API_VERSION: &str = "2022-04-01";
/// The `source` of a discovered role assignment, followed by its name.
const SOURCE: &str = "Azure RBAC role assignment ";

/// `kind = "azure"` in the server configuration.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AzureConfig {
    /// The Entra ID tenant (directory) id or domain.
    pub tenant_id: String,
    /// The application (client) id pedm authenticates as.
    pub client_id: String,
    /// Its client secret. Not shown by `Debug`. Give this or `client_secret_file`.
    #[serde(default)]
    pub client_secret: Option<String>,
    /// A file holding the client secret (trailing whitespace ignored).
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    /// Where discovery looks and the default scope of role assignments:
    /// `/subscriptions/<id>[/resourceGroups/<name>[/providers/<namespace>/<type>/<name>]]`.
    pub scope: String,
    #[serde(default = "default_authority")]
    pub authority_url: String,
    #[serde(default = "default_management")]
    pub management_url: String,
    #[serde(default = "default_graph")]
    pub graph_url: String,
    /// An extra CA to trust (a proxy's, or the tests' stand-in).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Longest one request may take, waits for `Retry-After` included.
    #[serde(default = "default_timeout", with = "pedm_notify::duration")]
    pub timeout: Duration,
    /// Role definitions whose assignments discovery reports: GUIDs, full role definition ids,
    /// or built-in role names (Owner, User Access Administrator, Contributor, Role Based
    /// Access Control Administrator, Reader).
    #[serde(default = "default_privileged_roles")]
    pub privileged_roles: Vec<String>,
}

fn default_authority() -> String {
    "https://login.microsoftonline.com".into()
}
fn default_management() -> String {
    "https://management.azure.com".into()
}
fn default_graph() -> String {
    "https://graph.microsoft.com".into()
}
fn default_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_privileged_roles() -> Vec<String> {
    BUILT_IN[..3].iter().map(|(_, id)| id.to_string()).collect()
}

impl std::fmt::Debug for AzureConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureConfig")
            .field("tenant_id", &self.tenant_id)
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("client_secret_file", &self.client_secret_file)
            .field("scope", &self.scope)
            .field("authority_url", &self.authority_url)
            .field("management_url", &self.management_url)
            .field("graph_url", &self.graph_url)
            .field("ca_file", &self.ca_file)
            .field("timeout", &self.timeout)
            .field("privileged_roles", &self.privileged_roles)
            .finish()
    }
}

impl AzureConfig {
    /// The client secret, from the configuration or its file.
    fn secret(&self) -> Result<String, ProvisionError> {
        if let Some(s) = &self.client_secret {
            return Ok(s.clone());
        }
        let Some(path) = &self.client_secret_file else {
            return Err(ProvisionError::invalid("no client_secret configured"));
        };
        let s = std::fs::read_to_string(path).map_err(|e| {
            ProvisionError::invalid(format!("client_secret_file {}: {e}", path.display()))
        })?;
        let s = s.trim_end().to_string();
        if s.is_empty() {
            return Err(ProvisionError::invalid(format!(
                "client_secret_file {} is empty",
                path.display()
            )));
        }
        Ok(s)
    }
}

/// What a role's settings switch on, for whom.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Mode {
    Role {
        upn: String,
        role: String,
        scope: Scope,
    },
    Group {
        upn: String,
        group: String,
    },
}

const SETTINGS: &[&str] = &["login", "role_definition_id", "scope", "group_id"];

/// userPrincipalNames: letters, digits and `._-+@'`, which is also all a URL path needs.
fn check_upn(s: &str) -> Result<String, ProvisionError> {
    let ok = !s.is_empty()
        && s.len() <= 113
        && !s.starts_with('.')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-+@'".contains(c));
    if ok {
        Ok(s.to_string())
    } else {
        Err(ProvisionError::invalid(format!(
            "login {s:?} is not a userPrincipalName (letters, digits and ._-+@')"
        )))
    }
}

impl Mode {
    fn of(g: &GrantSpec, target_scope: &Scope) -> Result<Mode, ProvisionError> {
        check_settings(g, SETTINGS)?;
        let upn = check_upn(&login_from_settings(g)?)?;
        let role = setting_str(g, "role_definition_id")?;
        let scope = setting_str(g, "scope")?;
        let group = setting_str(g, "group_id")?;
        match (role, group) {
            (Some(role), None) => Ok(Mode::Role {
                upn,
                role: role_definition(role)?,
                scope: match scope {
                    Some(s) => Scope::parse(s)?,
                    None => target_scope.clone(),
                },
            }),
            (None, Some(group)) if scope.is_none() => Ok(Mode::Group {
                upn,
                group: guid("group_id", group)?,
            }),
            (None, Some(_)) => Err(ProvisionError::invalid(
                "settings.scope applies to role_definition_id only",
            )),
            _ => Err(ProvisionError::invalid(
                "settings: give one of role_definition_id or group_id",
            )),
        }
    }

    fn upn(&self) -> &str {
        match self {
            Mode::Role { upn, .. } | Mode::Group { upn, .. } => upn,
        }
    }

    fn privilege(&self) -> String {
        match self {
            Mode::Role { role, scope, .. } => privilege(role, scope),
            Mode::Group { group, .. } => format!("group:{group}"),
        }
    }
}

fn privilege(role: &str, scope: &Scope) -> String {
    format!("role:{role}@{}", scope.0)
}

/// A role assignment as ARM lists it.
#[derive(Debug, Clone)]
struct Assignment {
    name: String,
    role: String,
    principal: String,
    scope: Scope,
}

impl Assignment {
    /// `None` for what pedm cannot read (other scope shapes such as management groups).
    fn of(v: &Value) -> Option<Assignment> {
        let p = v.get("properties")?;
        Some(Assignment {
            name: v.get("name")?.as_str()?.to_string(),
            role: role_definition(p.get("roleDefinitionId")?.as_str()?).ok()?,
            principal: guid("principal", p.get("principalId")?.as_str()?).ok()?,
            scope: Scope::parse(p.get("scope")?.as_str()?).ok()?,
        })
    }
}

pub struct AzureProvisioner {
    config: AzureConfig,
    scope: Scope,
    privileged: BTreeSet<String>,
    client: Client,
}

impl std::fmt::Debug for AzureProvisioner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureProvisioner")
            .field("config", &self.config)
            .finish()
    }
}

fn url_ok(what: &str, u: &str) -> Result<String, ConfigError> {
    let trimmed = u.trim_end_matches('/');
    match reqwest::Url::parse(trimmed) {
        Ok(p)
            if matches!(p.scheme(), "https" | "http")
                && p.query().is_none()
                && p.username().is_empty()
                && p.password().is_none() =>
        {
            Ok(trimmed.to_string())
        }
        _ => Err(ConfigError(format!(
            "{what} {u:?} must be an https:// URL without credentials or query"
        ))),
    }
}

impl AzureProvisioner {
    pub fn new(mut config: AzureConfig) -> Result<Self, ConfigError> {
        let tenant_ok = !config.tenant_id.is_empty()
            && config.tenant_id.len() <= 256
            && config
                .tenant_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-.".contains(c));
        if !tenant_ok {
            return Err(ConfigError(format!(
                "tenant_id {:?} is not a tenant id or domain",
                config.tenant_id
            )));
        }
        guid("client_id", &config.client_id).map_err(|e| ConfigError(e.to_string()))?;
        config.client_id = config.client_id.to_ascii_lowercase();
        match (&config.client_secret, &config.client_secret_file) {
            (Some(s), None) if !s.is_empty() => {}
            (None, Some(_)) => {}
            _ => {
                return Err(ConfigError(
                    "give exactly one of client_secret (non-empty) or client_secret_file".into(),
                ));
            }
        }
        let scope = Scope::parse(&config.scope).map_err(|e| ConfigError(e.to_string()))?;
        config.authority_url = url_ok("authority_url", &config.authority_url)?;
        config.management_url = url_ok("management_url", &config.management_url)?;
        config.graph_url = url_ok("graph_url", &config.graph_url)?;
        if config.timeout.is_zero() {
            return Err(ConfigError("timeout must be greater than zero".into()));
        }
        let privileged = config
            .privileged_roles
            .iter()
            .map(|r| privileged_role(r))
            .collect::<Result<_, _>>()
            .map_err(|e| ConfigError(format!("privileged_roles: {e}")))?;
        let client = Client::new(&config)?;
        Ok(AzureProvisioner {
            config,
            scope,
            privileged,
            client,
        })
    }

    fn mode(&self, g: &GrantSpec) -> Result<Mode, ProvisionError> {
        Mode::of(g, &self.scope)
    }

    /// The object id of the user `upn`; `None` when Graph knows no such user.
    async fn user_id(&self, upn: &str) -> Result<Option<String>, ProvisionError> {
        let what = format!("looking up user {upn}");
        let url = self
            .client
            .graph_url(&["users", upn], &[("$select", "id")])?;
        let r = self
            .client
            .call(Api::Graph, &what, Method::GET, &url, None)
            .await?;
        if r.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !r.status.is_success() {
            return Err(refused(&what, &r));
        }
        let id = r.body.get("id").and_then(Value::as_str).unwrap_or("");
        guid("user id", id)
            .map(Some)
            .map_err(|_| ProvisionError::refused(format!("{what}: Graph answered no id")))
    }

    async fn must_user_id(&self, upn: &str) -> Result<String, ProvisionError> {
        self.user_id(upn).await?.ok_or_else(|| {
            ProvisionError::refused(format!("user {upn} does not exist in the directory"))
        })
    }

    /// Role assignments at `scope` matching `filter`.
    async fn assignments(
        &self,
        scope: &Scope,
        filter: &str,
    ) -> Result<Vec<Assignment>, ProvisionError> {
        let url = self.client.url(
            Api::Arm,
            &scope.assignments_path(),
            &[("api-version", API_VERSION), ("$filter", filter)],
        )?;
        let items = self
            .client
            .list(
                Api::Arm,
                &format!("listing role assignments at {}", scope.0),
                url,
            )
            .await?;
        Ok(items.iter().filter_map(Assignment::of).collect())
    }

    /// `principal`'s assignments of `role` at exactly `scope`.
    async fn held(
        &self,
        principal: &str,
        role: &str,
        scope: &Scope,
    ) -> Result<Vec<Assignment>, ProvisionError> {
        let filter = format!("principalId eq '{principal}'");
        Ok(self
            .assignments(scope, &filter)
            .await?
            .into_iter()
            .filter(|a| a.principal == principal && a.role == role && a.scope == *scope)
            .collect())
    }

    async fn delete_assignment(&self, scope: &Scope, name: &str) -> Result<(), ProvisionError> {
        let name = guid("role assignment name", name)?;
        let what = format!("deleting role assignment {name} at {}", scope.0);
        let url = self.client.url(
            Api::Arm,
            &format!("{}/{name}", scope.assignments_path()),
            &[("api-version", API_VERSION)],
        )?;
        let r = self
            .client
            .call(Api::Arm, &what, Method::DELETE, &url, None)
            .await?;
        match r.status {
            StatusCode::OK | StatusCode::NO_CONTENT | StatusCode::NOT_FOUND => Ok(()),
            _ => Err(refused(&what, &r)),
        }
    }

    async fn assign(&self, upn: &str, role: &str, scope: &Scope) -> Result<String, ProvisionError> {
        let principal = self.must_user_id(upn).await?;
        if let Some(a) = self.held(&principal, role, scope).await?.first() {
            return Ok(format!(
                "{upn} already holds role {role} at {} (assignment {})",
                scope.0, a.name
            ));
        }
        let name = Uuid::now_v7().to_string();
        let what = format!("assigning role {role} to {upn} at {}", scope.0);
        let url = self.client.url(
            Api::Arm,
            &format!("{}/{name}", scope.assignments_path()),
            &[("api-version", API_VERSION)],
        )?;
        let body = json!({"properties": {
            "roleDefinitionId": scope.role_definition_id(role),
            "principalId": principal,
            "principalType": "User",
        }});
        let r = self
            .client
            .call(Api::Arm, &what, Method::PUT, &url, Some(&body))
            .await?;
        let exists = r.status == StatusCode::CONFLICT
            && r.body.pointer("/error/code").and_then(Value::as_str)
                == Some("RoleAssignmentExists");
        if r.status.is_success() || exists {
            Ok(format!(
                "assigned role {role} to {upn} at {} (assignment {name})",
                scope.0
            ))
        } else {
            Err(refused(&what, &r))
        }
    }

    async fn unassign(&self, upn: &str, role: &str, scope: &Scope) -> Result<(), ProvisionError> {
        let Some(principal) = self.user_id(upn).await? else {
            return Ok(());
        };
        for a in self.held(&principal, role, scope).await? {
            self.delete_assignment(&a.scope, &a.name).await?;
        }
        Ok(())
    }

    async fn add_member(&self, upn: &str, group: &str) -> Result<String, ProvisionError> {
        let id = self.must_user_id(upn).await?;
        let what = format!("adding {upn} to group {group}");
        let url = self
            .client
            .graph_url(&["groups", group, "members", "$ref"], &[])?;
        let body =
            json!({"@odata.id": format!("{}/v1.0/directoryObjects/{id}", self.config.graph_url)});
        let r = self
            .client
            .call(Api::Graph, &what, Method::POST, &url, Some(&body))
            .await?;
        let already = r.status == StatusCode::BAD_REQUEST
            && r.body
                .pointer("/error/message")
                .and_then(Value::as_str)
                .is_some_and(|m| m.contains("already exist"));
        if r.status.is_success() || already {
            Ok(format!("added {upn} to group {group}"))
        } else {
            Err(refused(&what, &r))
        }
    }

    async fn remove_member(&self, upn: &str, group: &str) -> Result<(), ProvisionError> {
        let Some(id) = self.user_id(upn).await? else {
            return Ok(());
        };
        let what = format!("removing {upn} from group {group}");
        let url = self
            .client
            .graph_url(&["groups", group, "members", &id, "$ref"], &[])?;
        let r = self
            .client
            .call(Api::Graph, &what, Method::DELETE, &url, None)
            .await?;
        if r.status.is_success() || r.status == StatusCode::NOT_FOUND {
            Ok(())
        } else {
            Err(refused(&what, &r))
        }
    }

    async fn is_member(&self, upn: &str, group: &str) -> Result<bool, ProvisionError> {
        let Some(id) = self.user_id(upn).await? else {
            return Ok(false);
        };
        let url = self
            .client
            .graph_url(&["groups", group, "members"], &[("$select", "id")])?;
        let members = self
            .client
            .list(
                Api::Graph,
                &format!("listing members of group {group}"),
                url,
            )
            .await?;
        Ok(members.iter().any(|m| {
            m.get("id")
                .and_then(Value::as_str)
                .is_some_and(|m| m.eq_ignore_ascii_case(&id))
        }))
    }

    /// How discovery names the principal `id` (see the module documentation).
    async fn principal_account(&self, id: &str) -> Result<String, ProvisionError> {
        let what = format!("looking up directory object {id}");
        let url = self.client.graph_url(&["directoryObjects", id], &[])?;
        let r = self
            .client
            .call(Api::Graph, &what, Method::GET, &url, None)
            .await?;
        if r.status == StatusCode::NOT_FOUND {
            return Ok(format!("unknown/{id}"));
        }
        if !r.status.is_success() {
            return Err(refused(&what, &r));
        }
        let field = |k: &str| r.body.get(k).and_then(Value::as_str).unwrap_or("");
        Ok(match field("@odata.type") {
            "#microsoft.graph.user" => field("userPrincipalName").to_string(),
            "#microsoft.graph.group" => format!("group/{}", field("displayName")),
            "#microsoft.graph.servicePrincipal" => {
                format!("sp/{}", field("appId").to_ascii_lowercase())
            }
            _ => format!("unknown/{id}"),
        })
    }

    fn own_account(&self) -> String {
        format!("sp/{}", self.config.client_id)
    }
}

/// A role assignment discovery reported, parsed back for removal.
struct Standing {
    role: String,
    scope: Scope,
    name: String,
}

impl Standing {
    fn parse(p: &StandingPrivilege) -> Result<Standing, ProvisionError> {
        let bad = || {
            ProvisionError::invalid(format!(
                "{:?} from {:?} is not a role assignment the azure provisioner reports",
                p.privilege, p.source
            ))
        };
        let (role, scope) = p
            .privilege
            .strip_prefix("role:")
            .and_then(|r| r.split_once('@'))
            .ok_or_else(bad)?;
        let name = p.source.strip_prefix(SOURCE).ok_or_else(bad)?;
        Ok(Standing {
            role: guid("role definition", role)?,
            scope: Scope::parse(scope)?,
            name: guid("role assignment name", name)?,
        })
    }
}

#[async_trait]
impl Provisioner for AzureProvisioner {
    fn kind(&self) -> &'static str {
        "azure"
    }

    async fn grant(&self, g: &GrantSpec) -> Result<GrantOutcome, ProvisionError> {
        let detail = match self.mode(g)? {
            Mode::Role { upn, role, scope } => self.assign(&upn, &role, &scope).await?,
            Mode::Group { upn, group } => self.add_member(&upn, &group).await?,
        };
        Ok(GrantOutcome {
            secret: None,
            detail,
        })
    }

    async fn revoke(&self, g: &GrantSpec) -> Result<(), ProvisionError> {
        match self.mode(g)? {
            Mode::Role { upn, role, scope } => self.unassign(&upn, &role, &scope).await,
            Mode::Group { upn, group } => self.remove_member(&upn, &group).await,
        }
    }

    async fn observe(&self, g: &GrantSpec) -> Result<Observed, ProvisionError> {
        let mode = self.mode(g)?;
        let present = match &mode {
            Mode::Role { upn, role, scope } => match self.user_id(upn).await? {
                Some(id) => !self.held(&id, role, scope).await?.is_empty(),
                None => false,
            },
            Mode::Group { upn, group } => self.is_member(upn, group).await?,
        };
        Ok(Observed {
            present,
            detail: format!(
                "{} {} {}",
                mode.upn(),
                if present { "holds" } else { "does not hold" },
                mode.privilege()
            ),
        })
    }

    async fn discover(&self) -> Result<Vec<StandingPrivilege>, ProvisionError> {
        let found = self.assignments(&self.scope, "atScope()").await?;
        let mut names: BTreeMap<String, String> = BTreeMap::new();
        let mut out = BTreeSet::new();
        for a in found
            .into_iter()
            .filter(|a| self.privileged.contains(&a.role))
        {
            let account = match names.get(&a.principal) {
                Some(n) => n.clone(),
                None => {
                    let n = self.principal_account(&a.principal).await?;
                    names.insert(a.principal.clone(), n.clone());
                    n
                }
            };
            out.insert(StandingPrivilege {
                account,
                privilege: privilege(&a.role, &a.scope),
                source: format!("{SOURCE}{}", a.name),
            });
        }
        Ok(out.into_iter().collect())
    }

    fn account(&self, g: &GrantSpec) -> Option<String> {
        self.mode(g).ok().map(|m| m.upn().to_string())
    }

    fn provisions(&self, g: &GrantSpec) -> Result<(), String> {
        self.mode(g).map(|_| ()).map_err(|e| e.to_string())
    }

    fn privilege(&self, g: &GrantSpec) -> Option<String> {
        self.mode(g).ok().map(|m| m.privilege())
    }

    fn removable(&self, p: &StandingPrivilege) -> Result<(), String> {
        Standing::parse(p).map_err(|e| e.to_string())?;
        if p.account.eq_ignore_ascii_case(&self.own_account()) {
            return Err(format!(
                "{} is the identity pedm calls Azure as: never removed",
                p.account
            ));
        }
        Ok(())
    }

    async fn remove_standing(&self, p: &StandingPrivilege) -> Result<String, ProvisionError> {
        self.removable(p).map_err(ProvisionError::Invalid)?;
        let s = Standing::parse(p)?;
        let what = format!("reading role assignment {} at {}", s.name, s.scope.0);
        let url = self.client.url(
            Api::Arm,
            &format!("{}/{}", s.scope.assignments_path(), s.name),
            &[("api-version", API_VERSION)],
        )?;
        let r = self
            .client
            .call(Api::Arm, &what, Method::GET, &url, None)
            .await?;
        if r.status == StatusCode::NOT_FOUND {
            return Ok(format!("role assignment {} is already gone", s.name));
        }
        if !r.status.is_success() {
            return Err(refused(&what, &r));
        }
        // The name must still mean what discovery saw: that role, that principal.
        let a = Assignment::of(&r.body)
            .ok_or_else(|| ProvisionError::refused(format!("{what}: unreadable answer")))?;
        let account = self.principal_account(&a.principal).await?;
        if a.role != s.role || a.scope != s.scope || account != p.account {
            return Err(ProvisionError::refused(format!(
                "role assignment {} now gives {} at {} to {account}, not what discovery \
                 reported: left alone",
                s.name, a.role, a.scope.0
            )));
        }
        if account.eq_ignore_ascii_case(&self.own_account()) {
            return Err(ProvisionError::invalid(format!(
                "{account} is the identity pedm calls Azure as: never removed"
            )));
        }
        self.delete_assignment(&s.scope, &s.name).await?;
        Ok(format!(
            "deleted role assignment {} (role {} at {}) of {}",
            s.name, s.role, s.scope.0, p.account
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_spec;

    const SUB: &str = "00000000-1111-2222-3333-444444444444";
    const OWNER: &str = "8e3af657-a8ff-443c-a75c-2fe8c4bcb635";

    fn config() -> AzureConfig {
        toml_config("")
    }

    fn toml_config(extra: &str) -> AzureConfig {
        let text = format!(
            "tenant_id = \"contoso.onmicrosoft.com\"\n\
             client_id = \"11111111-2222-3333-4444-555555555555\"\n\
             client_secret = \"s3cr3t-value\"\nscope = \"/subscriptions/{SUB}\"\n{extra}"
        );
        toml::from_str(&text).unwrap()
    }

    #[test]
    fn settings_pick_one_mode() {
        let target = Scope::parse(&format!("/subscriptions/{SUB}")).unwrap();
        let m = |s| Mode::of(&test_spec("alice", s), &target);
        let role = m(json!({"role_definition_id": OWNER, "login": "{user}@contoso.com"})).unwrap();
        assert_eq!(role.upn(), "alice@contoso.com");
        assert_eq!(
            role.privilege(),
            format!("role:{OWNER}@/subscriptions/{SUB}")
        );
        let rg = m(json!({"role_definition_id": OWNER,
            "scope": format!("/subscriptions/{SUB}/resourceGroups/rg")}))
        .unwrap();
        assert_eq!(
            rg.privilege(),
            format!("role:{OWNER}@/subscriptions/{SUB}/resourceGroups/rg")
        );
        let group = m(json!({"group_id": "AAAAAAAA-bbbb-cccc-dddd-eeeeeeeeeeee"})).unwrap();
        assert_eq!(
            group.privilege(),
            "group:aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
        );
        for bad in [
            json!({}),
            json!({"role_definition_id": OWNER, "group_id": OWNER}),
            json!({"group_id": OWNER, "scope": format!("/subscriptions/{SUB}")}),
            json!({"role_definition_id": "Owner"}),
            json!({"role_definition_id": OWNER, "scope": "/subscriptions/x"}),
            json!({"group_id": "admins"}),
            json!({"group_id": OWNER, "login": "a/b@contoso.com"}),
            json!({"group_id": OWNER, "login": "{user}?x"}),
            json!({"group_id": OWNER, "bogus": 1}),
            json!({"group_id": 7}),
        ] {
            assert!(
                matches!(m(bad.clone()), Err(ProvisionError::Invalid(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn configuration_is_checked_and_the_secret_hidden() {
        let c = config();
        assert_eq!(c.authority_url, "https://login.microsoftonline.com");
        assert_eq!(c.privileged_roles.len(), 3);
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("s3cr3t"), "{dbg}");
        let p = AzureProvisioner::new(c).unwrap();
        assert!(!format!("{p:?}").contains("s3cr3t"));
        assert_eq!(p.own_account(), "sp/11111111-2222-3333-4444-555555555555");
        let named = toml_config(
            "privileged_roles = [\"Owner\", \"acdd72a7-3385-48ef-bd42-f606fba81ae7\"]\n",
        );
        assert_eq!(AzureProvisioner::new(named).unwrap().privileged.len(), 2);
        for extra in [
            "privileged_roles = [\"Global Administrator\"]\n",
            "management_url = \"ftp://x\"\n",
            "graph_url = \"https://user:pw@graph.example\"\n",
            "client_secret_file = \"/etc/pedm/azure-secret\"\n",
        ] {
            assert!(
                AzureProvisioner::new(toml_config(extra)).is_err(),
                "{extra}"
            );
        }
        let mut c = config();
        c.scope = "/subscriptions/x".into();
        assert!(AzureProvisioner::new(c).is_err());
        let mut c = config();
        c.tenant_id = "a/b".into();
        assert!(AzureProvisioner::new(c).is_err());
        assert!(
            toml::from_str::<AzureConfig>(&format!(
                "tenant_id = \"t\"\nclient_id = \"c\"\nscope = \"/subscriptions/{SUB}\"\nbogus = 1\n"
            ))
            .is_err()
        );
    }

    #[test]
    fn standing_privileges_parse_back_and_pedm_is_protected() {
        let p = AzureProvisioner::new(config()).unwrap();
        let sp = |account: &str, source: &str| StandingPrivilege {
            account: account.into(),
            privilege: format!("role:{OWNER}@/subscriptions/{SUB}"),
            source: source.into(),
        };
        let src = format!("{SOURCE}aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee");
        assert_eq!(p.removable(&sp("eve@contoso.com", &src)), Ok(()));
        assert!(
            p.removable(&sp("sp/11111111-2222-3333-4444-555555555555", &src))
                .unwrap_err()
                .contains("the identity pedm calls Azure as")
        );
        assert!(p.removable(&sp("eve@contoso.com", "admin portal")).is_err());
        let mut g = sp("eve@contoso.com", &src);
        g.privilege = "group:aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee".into();
        assert!(p.removable(&g).is_err());
    }
}
