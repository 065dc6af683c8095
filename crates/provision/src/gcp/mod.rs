//! Google Cloud: IAM bindings on a project, folder or organisation through the Resource
//! Manager v3 API (`getIamPolicy` / `setIamPolicy`).
//!
//! A role's settings: `role` (`roles/compute.admin`, or a custom role
//! `projects/P/roles/R` / `organizations/N/roles/R`) and `member` (a template, `{user}` = the
//! pedm user name, default `user:{user}`; it must start with `user:`, `group:` or
//! `serviceAccount:`, e.g. `user:{user}@example.com`). The account is the member, the
//! privilege `role:<role>`.
//!
//! A grant adds a conditional binding of the role to the member, the condition titled with
//! the grant id and expiring at the grant's end (`request.time < timestamp("…")`), so Google
//! itself stops honouring it then even if pedm is down; revoke removes that binding only
//! (pedm also removes it at expiry). `extend` rewrites the condition's end. Every change is a
//! read-modify-write with the etag read: when someone else changed the policy in between,
//! Google answers 409 `ABORTED` and pedm reads again and reapplies its change (at most
//! [`MAX_CONFLICTS`] times), so it never overwrites anyone's change and never drops other
//! bindings or members.
//!
//! Discovery: every member of a binding of a privileged role (`privileged_roles`: by
//! default `roles/owner`, `roles/editor` and any role ending in `Admin` or `.admin`) that
//! does not expire (no condition, or one without `request.time <`). Drift removal takes the
//! member out of that binding. The service account pedm calls Google Cloud as is never
//! removed.
//!
//! Authentication: a service-account key file (`credentials_file`, the JWT bearer grant at
//! its `token_uri`), or else the GCE/GKE metadata server (workload identity). Errors: 429,
//! 5xx, timeouts and connection failures are [`ProvisionError::Unreachable`] (a 429 or 503
//! with `Retry-After` is retried after the stated time while that fits in `timeout`); other
//! 4xx are [`ProvisionError::Refused`] with Google's `error.status` and `error.message`.

mod api;
mod auth;
mod policy;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::config::ConfigError;
use crate::{
    GrantOutcome, GrantSpec, Observed, ProvisionError, Provisioner, StandingPrivilege,
    check_settings, setting_str,
};
use auth::{ServiceAccountKey, Source, Tokens};
use policy::GrantBinding;

/// Read-modify-write attempts that meet a concurrent change before giving up (retryable).
const MAX_CONFLICTS: u32 = 5;
/// `Retry-After` waits within one call, at most.
const MAX_WAITS: u32 = 5;
const MAX_ANSWER: usize = 4 * 1024 * 1024;

/// `kind = "gcp"` in the server configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcpConfig {
    /// Whose IAM policy: `projects/ID`, `folders/NUMBER` or `organizations/NUMBER`.
    pub resource: String,
    /// A service-account key JSON file (`client_email`, `private_key`, `token_uri`); when
    /// absent, tokens come from the metadata server (GCE, GKE workload identity).
    #[serde(default)]
    pub credentials_file: Option<PathBuf>,
    /// The metadata server. Default `http://metadata.google.internal`.
    #[serde(default = "default_metadata_url")]
    pub metadata_url: String,
    /// Resource Manager. Default `https://cloudresourcemanager.googleapis.com`.
    #[serde(default = "default_endpoint_url")]
    pub endpoint_url: String,
    /// PEM CA certificate(s) trusted besides the system's roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Longest one operation may take, waits for `Retry-After` and conflict retries included.
    #[serde(default = "default_timeout", with = "pedm_notify::duration")]
    pub timeout: Duration,
    /// Roles whose unconditional holders discovery reports: a role name, or `*SUFFIX` for
    /// every role ending in SUFFIX.
    #[serde(default = "default_privileged_roles")]
    pub privileged_roles: Vec<String>,
}

fn default_metadata_url() -> String {
    "http://metadata.google.internal".into()
}
fn default_endpoint_url() -> String {
    "https://cloudresourcemanager.googleapis.com".into()
}
fn default_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_privileged_roles() -> Vec<String> {
    ["roles/owner", "roles/editor", "*Admin", "*.admin"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

impl GcpConfig {
    pub fn new(resource: impl Into<String>) -> Self {
        GcpConfig {
            resource: resource.into(),
            credentials_file: None,
            metadata_url: default_metadata_url(),
            endpoint_url: default_endpoint_url(),
            ca_file: None,
            timeout: default_timeout(),
            privileged_roles: default_privileged_roles(),
        }
    }
}

pub struct GcpProvisioner {
    config: GcpConfig,
    endpoint: String,
    client: reqwest::Client,
    tokens: Tokens,
}

impl std::fmt::Debug for GcpProvisioner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GcpProvisioner")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl GcpProvisioner {
    /// Checks the configuration and reads the key file (if any); connects to nothing.
    pub fn new(config: GcpConfig) -> Result<Self, ConfigError> {
        check_resource(&config.resource).map_err(ConfigError)?;
        for (what, u) in [
            ("endpoint_url", &config.endpoint_url),
            ("metadata_url", &config.metadata_url),
        ] {
            let url =
                reqwest::Url::parse(u).map_err(|e| ConfigError(format!("{what} {u:?}: {e}")))?;
            if !matches!(url.scheme(), "http" | "https") || url.query().is_some() {
                return Err(ConfigError(format!(
                    "{what} {u:?} must be an http:// or https:// URL without a query"
                )));
            }
        }
        if config.timeout.is_zero() {
            return Err(ConfigError("timeout must be greater than zero".into()));
        }
        for r in &config.privileged_roles {
            let ok = match r.strip_prefix('*') {
                Some(suffix) => {
                    !suffix.is_empty()
                        && suffix
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || "._/".contains(c))
                }
                None => check_role(r).is_ok(),
            };
            if !ok {
                return Err(ConfigError(format!(
                    "privileged_roles: {r:?} is neither a role name nor *SUFFIX"
                )));
            }
        }
        let source = match &config.credentials_file {
            Some(path) => Source::Key(Box::new(ServiceAccountKey::load(path)?)),
            None => Source::Metadata(config.metadata_url.trim_end_matches('/').to_string()),
        };
        let client = crate::http_client(config.timeout, config.ca_file.as_deref())?;
        Ok(GcpProvisioner {
            endpoint: config.endpoint_url.trim_end_matches('/').to_string(),
            config,
            client,
            tokens: Tokens::new(source),
        })
    }

    fn privileged(&self, role: &str) -> bool {
        self.config
            .privileged_roles
            .iter()
            .any(|p| match p.strip_prefix('*') {
                Some(suffix) => role.ends_with(suffix),
                None => p == role,
            })
    }

    /// The account pedm calls Google Cloud as, as a member.
    fn own_member(email: &str) -> String {
        format!("serviceAccount:{email}")
    }

    fn protected(&self, account: &str, own: Option<&str>) -> Result<(), String> {
        if let Some(email) = own
            && Self::own_member(email).eq_ignore_ascii_case(account)
        {
            return Err(format!(
                "{account} is the identity pedm calls Google Cloud as: never removed"
            ));
        }
        Ok(())
    }
}

/// `projects/ID` (or number), `folders/NUMBER`, `organizations/NUMBER`.
fn check_resource(r: &str) -> Result<(), String> {
    let digits = |s: &str| !s.is_empty() && s.len() <= 32 && s.chars().all(|c| c.is_ascii_digit());
    let ok = match r.split_once('/') {
        Some(("projects", id)) => digits(id) || project_id_ok(id),
        Some(("folders" | "organizations", n)) => digits(n),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "resource {r:?} is not projects/ID, folders/NUMBER or organizations/NUMBER"
        ))
    }
}

/// A project id: 6–30 lower-case letters, digits and hyphens, starting with a letter, not
/// ending with a hyphen.
fn project_id_ok(id: &str) -> bool {
    (6..=30).contains(&id.len())
        && id.starts_with(|c: char| c.is_ascii_lowercase())
        && !id.ends_with('-')
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// `roles/NAME`, `projects/ID/roles/NAME` or `organizations/NUMBER/roles/NAME`.
fn check_role(r: &str) -> Result<(), ProvisionError> {
    let name_ok = |n: &str| {
        !n.is_empty()
            && n.len() <= 128
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
    };
    let parts: Vec<&str> = r.split('/').collect();
    let ok = match parts.as_slice() {
        ["roles", name] => name_ok(name),
        ["projects", id, "roles", name] => project_id_ok(id) && name_ok(name),
        ["organizations", n, "roles", name] => {
            !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()) && name_ok(name)
        }
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(ProvisionError::invalid(format!(
            "role {r:?} is not an IAM role (roles/NAME, projects/ID/roles/NAME or \
             organizations/NUMBER/roles/NAME)"
        )))
    }
}

/// A member as IAM writes it (`user:…`, `group:…`, `serviceAccount:…`, `domain:…`,
/// `allUsers`, …): printable ASCII without spaces.
fn member_ok(m: &str) -> bool {
    !m.is_empty() && m.len() <= 512 && m.chars().all(|c| c.is_ascii_graphic())
}

/// What a role's settings give a grant's holder.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Binding {
    role: String,
    member: String,
}

const SETTINGS: &[&str] = &["role", "member"];

impl Binding {
    fn of(g: &GrantSpec) -> Result<Binding, ProvisionError> {
        check_settings(g, SETTINGS)?;
        let role = setting_str(g, "role")?.ok_or_else(|| {
            ProvisionError::invalid("settings.role is required (e.g. roles/compute.admin)")
        })?;
        check_role(role)?;
        let member = setting_str(g, "member")?
            .unwrap_or("user:{user}")
            .replace("{user}", &g.user);
        let kind_ok = ["user:", "group:", "serviceAccount:"]
            .iter()
            .any(|p| member.strip_prefix(p).is_some_and(|rest| !rest.is_empty()));
        if !kind_ok || !member_ok(&member) {
            return Err(ProvisionError::invalid(format!(
                "member {member:?} is not user:…, group:… or serviceAccount:… without spaces"
            )));
        }
        Ok(Binding {
            role: role.to_string(),
            member,
        })
    }

    fn grant_binding<'a>(&'a self, g: &GrantSpec, title: &'a str) -> GrantBinding<'a> {
        GrantBinding {
            role: &self.role,
            member: &self.member,
            title,
            description: format!(
                "pedm grant {} for {}, ends {}",
                g.grant_id,
                g.user,
                policy::rfc3339(g.expires_at)
            ),
            expression: policy::expression(g.expires_at),
        }
    }
}

/// A standing privilege as discovery reported it: `(role, member)`.
fn parse_standing(p: &StandingPrivilege) -> Result<(String, String), ProvisionError> {
    let role = p.privilege.strip_prefix("role:").ok_or_else(|| {
        ProvisionError::invalid(format!(
            "{:?} is not a privilege the gcp provisioner reports",
            p.privilege
        ))
    })?;
    check_role(role)?;
    if !member_ok(&p.account) {
        return Err(ProvisionError::invalid(format!(
            "{:?} is not an IAM member",
            p.account
        )));
    }
    Ok((role.to_string(), p.account.clone()))
}

#[async_trait]
impl Provisioner for GcpProvisioner {
    fn kind(&self) -> &'static str {
        "gcp"
    }

    async fn grant(&self, g: &GrantSpec) -> Result<GrantOutcome, ProvisionError> {
        let b = Binding::of(g)?;
        let title = g.grant_id.to_string();
        let want = b.grant_binding(g, &title);
        let resource = &self.config.resource;
        let detail = self
            .modify(|p| {
                let changed = policy::put_grant(p, &want);
                let did = if changed { "bound" } else { "already bound" };
                Ok((
                    changed,
                    format!(
                        "{did} {} to {} on {resource} until {} (condition {title})",
                        b.member,
                        b.role,
                        policy::rfc3339(g.expires_at)
                    ),
                ))
            })
            .await?;
        Ok(GrantOutcome {
            secret: None,
            detail,
        })
    }

    async fn revoke(&self, g: &GrantSpec) -> Result<(), ProvisionError> {
        let b = Binding::of(g)?;
        let title = g.grant_id.to_string();
        self.modify(|p| {
            Ok((
                policy::remove_grant(p, &b.role, &b.member, &title),
                String::new(),
            ))
        })
        .await
        .map(|_| ())
    }

    async fn observe(&self, g: &GrantSpec) -> Result<Observed, ProvisionError> {
        let b = Binding::of(g)?;
        let title = g.grant_id.to_string();
        let p = self.policy(Instant::now() + self.config.timeout).await?;
        let end = policy::find_grant(&p, &b.role, &b.member, &title)
            .map(|found| found.get("condition").and_then(policy::condition_end));
        let now = Timestamp::now();
        Ok(match end {
            None => Observed {
                present: false,
                detail: format!("{} holds no binding of {} for this grant", b.member, b.role),
            },
            Some(Some(end)) if end > now => Observed {
                present: true,
                detail: format!("{} holds {} until {end}", b.member, b.role),
            },
            Some(end) => Observed {
                present: false,
                detail: format!(
                    "{}'s binding of {} has ended ({})",
                    b.member,
                    b.role,
                    end.map_or("no end in its condition".into(), |e| e.to_string())
                ),
            },
        })
    }

    fn keeps_expiry(&self, g: &GrantSpec) -> bool {
        Binding::of(g).is_ok()
    }

    async fn extend(&self, g: &GrantSpec) -> Result<String, ProvisionError> {
        let b = Binding::of(g)?;
        let title = g.grant_id.to_string();
        let want = b.grant_binding(g, &title);
        let resource = &self.config.resource;
        self.modify(|p| {
            if policy::find_grant(p, &b.role, &b.member, &title).is_none() {
                return Err(ProvisionError::refused(format!(
                    "{} holds no binding of {} on {resource} for grant {title}: nothing to extend",
                    b.member, b.role
                )));
            }
            Ok((
                policy::put_grant(p, &want),
                format!(
                    "{}'s binding of {} on {resource} now ends {}",
                    b.member,
                    b.role,
                    policy::rfc3339(g.expires_at)
                ),
            ))
        })
        .await
    }

    async fn discover(&self) -> Result<Vec<StandingPrivilege>, ProvisionError> {
        // Learn who pedm is first, so that removable() protects it.
        self.tokens.email(&self.client).await?;
        let p = self.policy(Instant::now() + self.config.timeout).await?;
        let source = format!("IAM policy of {}", self.config.resource);
        let mut found: Vec<StandingPrivilege> = policy::standing(&p, |r| self.privileged(r))
            .into_iter()
            .map(|(account, role)| StandingPrivilege {
                account,
                privilege: format!("role:{role}"),
                source: source.clone(),
            })
            .collect();
        found.sort();
        found.dedup();
        Ok(found)
    }

    fn account(&self, g: &GrantSpec) -> Option<String> {
        Binding::of(g).ok().map(|b| b.member)
    }

    fn provisions(&self, g: &GrantSpec) -> Result<(), String> {
        Binding::of(g).map(|_| ()).map_err(|e| e.to_string())
    }

    fn privilege(&self, g: &GrantSpec) -> Option<String> {
        Binding::of(g).ok().map(|b| format!("role:{}", b.role))
    }

    fn removable(&self, p: &StandingPrivilege) -> Result<(), String> {
        parse_standing(p).map_err(|e| e.to_string())?;
        self.protected(&p.account, self.tokens.known_email().as_deref())
    }

    async fn remove_standing(&self, p: &StandingPrivilege) -> Result<String, ProvisionError> {
        let (role, member) = parse_standing(p)?;
        let own = self.tokens.email(&self.client).await?;
        self.protected(&member, Some(&own))
            .map_err(ProvisionError::Invalid)?;
        let resource = &self.config.resource;
        self.modify(|pol| {
            let changed = policy::remove_standing(pol, &role, &member);
            Ok((
                changed,
                if changed {
                    format!("removed {member} from {role} on {resource}")
                } else {
                    format!("{member} no longer held {role} on {resource}")
                },
            ))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_spec;
    use serde_json::json;

    #[test]
    fn settings_are_checked() {
        let b = |s| Binding::of(&test_spec("alice", s));
        assert_eq!(
            b(json!({"role": "roles/compute.admin", "member": "user:{user}@example.com"})).unwrap(),
            Binding {
                role: "roles/compute.admin".into(),
                member: "user:alice@example.com".into()
            }
        );
        assert_eq!(
            b(json!({"role": "projects/my-proj-1/roles/custom.x"}))
                .unwrap()
                .member,
            "user:alice"
        );
        assert!(b(json!({"role": "organizations/123/roles/r_1"})).is_ok());
        for bad in [
            json!({}),
            json!({"role": "owner"}),
            json!({"role": "roles/"}),
            json!({"role": "roles/a b"}),
            json!({"role": "roles/x\"y"}),
            json!({"role": "projects/P/roles/x"}),
            json!({"role": "roles/owner", "member": "domain:example.com"}),
            json!({"role": "roles/owner", "member": "user:"}),
            json!({"role": "roles/owner", "member": "user:a b@example.com"}),
            json!({"role": "roles/owner", "member": "user:a\n@example.com"}),
            json!({"role": "roles/owner", "bogus": 1}),
            json!({"role": 7}),
        ] {
            assert!(
                matches!(b(bad.clone()), Err(ProvisionError::Invalid(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_grant_binding_ends_at_the_grant_end() {
        let g = test_spec("alice", json!({"role": "roles/editor"}));
        let b = Binding::of(&g).unwrap();
        let title = g.grant_id.to_string();
        let w = b.grant_binding(&g, &title);
        assert_eq!(
            w.expression,
            "request.time < timestamp(\"2027-01-15T08:00:00Z\")"
        );
        assert!(w.description.contains(&title) && w.description.contains("alice"));
    }

    #[test]
    fn configuration_is_checked() {
        assert!(GcpProvisioner::new(GcpConfig::new("projects/my-project")).is_ok());
        assert!(GcpProvisioner::new(GcpConfig::new("folders/1234")).is_ok());
        assert!(GcpProvisioner::new(GcpConfig::new("organizations/1234")).is_ok());
        for bad in [
            "projects/ab",
            "projects/My-Project",
            "projects/x;rm",
            "folders/abc",
            "organizations/",
            "buckets/x",
            "projects/my-project/extra",
        ] {
            assert!(GcpProvisioner::new(GcpConfig::new(bad)).is_err(), "{bad}");
        }
        let mut c = GcpConfig::new("projects/my-project");
        c.privileged_roles = vec!["owner".into()];
        assert!(GcpProvisioner::new(c).is_err());
        let mut c = GcpConfig::new("projects/my-project");
        c.endpoint_url = "ftp://x".into();
        assert!(GcpProvisioner::new(c).is_err());
        let mut c = GcpConfig::new("projects/my-project");
        c.credentials_file = Some("/nonexistent/key.json".into());
        assert!(GcpProvisioner::new(c).is_err());
    }

    #[test]
    fn privileged_roles_match_names_and_suffixes() {
        let p = GcpProvisioner::new(GcpConfig::new("projects/my-project")).unwrap();
        for r in [
            "roles/owner",
            "roles/editor",
            "roles/iam.securityAdmin",
            "roles/compute.admin",
            "organizations/1/roles/netAdmin",
        ] {
            assert!(p.privileged(r), "{r}");
        }
        for r in ["roles/viewer", "roles/compute.viewer", "roles/owners"] {
            assert!(!p.privileged(r), "{r}");
        }
    }

    #[test]
    fn pedms_own_identity_is_protected() {
        let p = GcpProvisioner::new(GcpConfig::new("projects/my-project")).unwrap();
        let sp = |account: &str| StandingPrivilege {
            account: account.into(),
            privilege: "role:roles/owner".into(),
            source: String::new(),
        };
        let own = Some("pedm@my-project.iam.gserviceaccount.com");
        let e = p
            .protected(
                "serviceAccount:pedm@my-project.iam.gserviceaccount.com",
                own,
            )
            .unwrap_err();
        assert!(e.contains("the identity pedm calls Google Cloud as"), "{e}");
        assert!(p.protected("user:eve@example.com", own).is_ok());
        assert!(parse_standing(&sp("user:eve@example.com")).is_ok());
        let mut bad = sp("user:eve@example.com");
        bad.privilege = "group:x".into();
        assert!(parse_standing(&bad).is_err());
        assert!(parse_standing(&sp("user:a b")).is_err());
    }
}
