//! Provisioner configuration, as it appears in the server's TOML, and building provisioners
//! from it.
//!
//! ```toml
//! [provision.targets.prod-db]
//! kind = "postgres"
//! url = "postgres://pedm_admin:secret@db.internal:5432/postgres"
//! privileged_roles = ["readwrite", "pg_write_all_data"]
//! timeout = "10s"
//! remove_drift = true                  # REVOKE memberships pedm did not grant
//! keep = ["postgres", "etl_service"]  # standing on purpose: reported, never removed
//!
//! [provision.targets.web-1]
//! kind = "linux_group"
//! privileged_groups = ["sudo", "wheel", "admin", "root", "docker"]
//! sensitive_groups = ["root", "sudo", "wheel", "adm", "docker"]  # need allow_privileged
//! remove_drift = true                  # gpasswd -d members pedm did not add
//! keep = ["breakglass"]
//!
//! [provision.roles.web-1.docker]       # no implicit role → group mapping
//! group = "docker"
//! allow_privileged = true              # docker is a sensitive group
//!
//! [provision.targets.aws-prod]
//! kind = "command"
//! program = "/usr/local/libexec/pedm-aws"
//! args = ["--account", "prod"]
//! timeout = "60s"
//! env = { AWS_PROFILE = "pedm" }
//!
//! [provision.targets.saas]
//! kind = "webhook"
//! url = "https://hooks.example.com/pedm"
//! secret = "…"
//! timeout = "10s"
//! ```
//!
//! Every target also takes `remove_drift` (default `false`: drift is only reported) and
//! `keep` (accounts never removed), see [`TargetConfig`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::{
    AwsConfig, AwsProvisioner, AzureConfig, AzureProvisioner, CommandConfig, CommandProvisioner,
    GrantOutcome, GrantSpec, KubernetesConfig, KubernetesProvisioner, LinuxGroupConfig,
    LinuxGroupProvisioner, MariaDbConfig, MariaDbProvisioner, Observed, PluginConfig,
    PluginProvisioner, PostgresConfig, PostgresProvisioner, ProvisionError, Provisioner,
    StandingPrivilege, WebhookConfig, WebhookProvisioner,
};
use crate::{GcpConfig, GcpProvisioner};

/// A configuration that cannot work (bad URL, relative program path, …).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// One target's provisioner: `kind` plus that kind's settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ProvisionerConfig {
    Postgres(PostgresConfig),
    Mariadb(MariaDbConfig),
    LinuxGroup(LinuxGroupConfig),
    Command(CommandConfig),
    Webhook(WebhookConfig),
    /// An external program speaking the provisioner protocol (docs/provisioner-protocol.md).
    Plugin(PluginConfig),
    /// Amazon Web Services: IAM and IAM Identity Center.
    Aws(AwsConfig),
    /// Microsoft Azure: RBAC role assignments and Entra ID groups.
    Azure(AzureConfig),
    /// Google Cloud: IAM bindings through Resource Manager.
    Gcp(GcpConfig),
    /// Kubernetes RBAC bindings.
    Kubernetes(KubernetesConfig),
}

impl ProvisionerConfig {
    /// The [`Provisioner::kind`] this builds.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Postgres(_) => "postgres",
            Self::Mariadb(_) => "mariadb",
            Self::LinuxGroup(_) => "linux_group",
            Self::Command(_) => "command",
            Self::Webhook(_) => "webhook",
            Self::Plugin(_) => "plugin",
            Self::Aws(_) => "aws",
            Self::Azure(_) => "azure",
            Self::Gcp(_) => "gcp",
            Self::Kubernetes(_) => "kubernetes",
        }
    }
}

/// One `[provision.targets.<name>]` table: the provisioner (`kind` and that kind's settings)
/// and what reconciliation may do with drift found in the target.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TargetConfig {
    /// Remove standing privileges that no pedm grant explains (drift) instead of only
    /// reporting them. Default `false`.
    #[serde(default)]
    pub remove_drift: bool,
    /// Accounts that hold standing privileges on purpose (break-glass, service accounts):
    /// their drift is reported, never removed. Each provisioner also protects accounts of its
    /// own whatever this says (see [`Provisioner::removable`]).
    #[serde(default)]
    pub keep: Vec<String>,
    #[serde(flatten)]
    pub provisioner: ProvisionerConfig,
}

impl TargetConfig {
    /// A target that only reports drift.
    pub fn new(provisioner: ProvisionerConfig) -> Self {
        TargetConfig {
            remove_drift: false,
            keep: Vec::new(),
            provisioner,
        }
    }
}

impl From<ProvisionerConfig> for TargetConfig {
    fn from(p: ProvisionerConfig) -> Self {
        TargetConfig::new(p)
    }
}

/// Builds the provisioner for `target` (the name is used in logs, and passed to commands and
/// webhooks), with the target's drift rules. Checks the configuration; connects to nothing
/// yet. Call inside a Tokio runtime.
pub fn build(target: &str, config: &TargetConfig) -> Result<Arc<dyn Provisioner>, ConfigError> {
    build_with(target, config, None)
}

/// [`build`], with pedmd's OIDC issuer when configured (Kubernetes targets with
/// `oidc_audience` hand out its tokens).
pub fn build_with(
    target: &str,
    config: &TargetConfig,
    id_tokens: Option<&Arc<dyn crate::IdTokenSigner>>,
) -> Result<Arc<dyn Provisioner>, ConfigError> {
    let inner: Arc<dyn Provisioner> = match &config.provisioner {
        ProvisionerConfig::Postgres(c) => Arc::new(PostgresProvisioner::new(c)?),
        ProvisionerConfig::Mariadb(c) => Arc::new(MariaDbProvisioner::new(c)?),
        ProvisionerConfig::LinuxGroup(c) => Arc::new(LinuxGroupProvisioner::new(c.clone())?),
        ProvisionerConfig::Command(c) => Arc::new(CommandProvisioner::new(target, c.clone())?),
        ProvisionerConfig::Webhook(c) => Arc::new(WebhookProvisioner::new(target, c.clone())?),
        ProvisionerConfig::Plugin(c) => Arc::new(PluginProvisioner::new(target, c.clone())?),
        ProvisionerConfig::Aws(c) => Arc::new(AwsProvisioner::new(c.clone())?),
        ProvisionerConfig::Azure(c) => Arc::new(AzureProvisioner::new(c.clone())?),
        ProvisionerConfig::Gcp(c) => Arc::new(GcpProvisioner::new(c.clone())?),
        ProvisionerConfig::Kubernetes(c) => {
            Arc::new(KubernetesProvisioner::new(c.clone())?.with_id_tokens(id_tokens.cloned()))
        }
    };
    if let Some(k) = config
        .keep
        .iter()
        .find(|k| k.trim().is_empty() || k.trim() != *k)
    {
        return Err(ConfigError(format!(
            "keep: {k:?} is not an account name (empty or surrounded by spaces)"
        )));
    }
    Ok(Arc::new(DriftRules {
        inner,
        remove_drift: config.remove_drift,
        keep: config.keep.iter().cloned().collect(),
    }))
}

/// A provisioner with its target's drift rules: removes drift only when `remove_drift` is
/// on, never from an account in `keep`, and checks both again when asked to remove (a job
/// queued before the configuration changed is refused).
struct DriftRules {
    inner: Arc<dyn Provisioner>,
    remove_drift: bool,
    keep: BTreeSet<String>,
}

#[async_trait]
impl Provisioner for DriftRules {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
    async fn grant(&self, g: &GrantSpec) -> Result<GrantOutcome, ProvisionError> {
        self.inner.grant(g).await
    }
    async fn revoke(&self, g: &GrantSpec) -> Result<(), ProvisionError> {
        self.inner.revoke(g).await
    }
    async fn observe(&self, g: &GrantSpec) -> Result<Observed, ProvisionError> {
        self.inner.observe(g).await
    }
    fn keeps_expiry(&self, g: &GrantSpec) -> bool {
        self.inner.keeps_expiry(g)
    }
    async fn extend(&self, g: &GrantSpec) -> Result<String, ProvisionError> {
        self.inner.extend(g).await
    }
    async fn discover(&self) -> Result<Vec<StandingPrivilege>, ProvisionError> {
        self.inner.discover().await
    }
    fn account(&self, g: &GrantSpec) -> Option<String> {
        self.inner.account(g)
    }
    fn provisions(&self, g: &GrantSpec) -> Result<(), String> {
        self.inner.provisions(g)
    }
    fn privilege(&self, g: &GrantSpec) -> Option<String> {
        self.inner.privilege(g)
    }
    fn removes_drift(&self) -> bool {
        self.remove_drift
    }
    fn removable(&self, p: &StandingPrivilege) -> Result<(), String> {
        if !self.remove_drift {
            return Err("remove_drift is off for this target".into());
        }
        if self.keep.contains(&p.account) {
            return Err(format!("{} is listed in keep", p.account));
        }
        self.inner.removable(p)
    }
    async fn remove_standing(&self, p: &StandingPrivilege) -> Result<String, ProvisionError> {
        self.removable(p).map_err(ProvisionError::Invalid)?;
        self.inner.remove_standing(p).await
    }
    async fn credentials(
        &self,
        g: &GrantSpec,
        now: jiff::Timestamp,
    ) -> Result<crate::Credentials, ProvisionError> {
        self.inner.credentials(g, now).await
    }
    async fn console_sign_in(
        &self,
        g: &GrantSpec,
        now: jiff::Timestamp,
    ) -> Result<crate::Credentials, ProvisionError> {
        self.inner.console_sign_in(g, now).await
    }
}

/// [`build`] for every target of the `[provision.targets]` table; the first error names its target.
pub fn build_all(
    configs: &BTreeMap<String, TargetConfig>,
    id_tokens: Option<&Arc<dyn crate::IdTokenSigner>>,
) -> Result<BTreeMap<String, Arc<dyn Provisioner>>, ConfigError> {
    configs
        .iter()
        .map(|(name, c)| {
            build_with(name, c, id_tokens)
                .map(|p| (name.clone(), p))
                .map_err(|e| ConfigError(format!("provision.targets.{name}: {e}")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct File {
        provision: Provision,
    }

    /// The shape of the server's `[provision]` section that holds the targets.
    #[derive(Deserialize)]
    struct Provision {
        targets: BTreeMap<String, TargetConfig>,
    }

    #[tokio::test]
    async fn parses_and_builds_the_documented_example() {
        let doc = include_str!("config.rs");
        let toml_text: String = doc
            .lines()
            .skip_while(|l| !l.starts_with("//! ```toml"))
            .skip(1)
            .take_while(|l| !l.starts_with("//! ```"))
            .map(|l| l.trim_start_matches("//!").trim_start())
            .collect::<Vec<_>>()
            .join("\n");
        let file: File = toml::from_str(&toml_text).unwrap();
        let targets = file.provision.targets;
        assert_eq!(targets.len(), 4);
        assert_eq!(targets["web-1"].provisioner.kind(), "linux_group");
        assert!(targets["prod-db"].remove_drift && !targets["saas"].remove_drift);
        assert_eq!(targets["prod-db"].keep, ["postgres", "etl_service"]);
        assert!(targets["aws-prod"].keep.is_empty());
        let built = build_all(&targets, None).unwrap();
        assert_eq!(built["prod-db"].kind(), "postgres");
        assert_eq!(built["aws-prod"].kind(), "command");
        assert_eq!(built["saas"].kind(), "webhook");
        // Secrets stay out of Debug output.
        let dbg = format!("{:?}", targets);
        assert!(!dbg.contains("secret@"), "{dbg}");
        assert!(!dbg.contains("\"…\""), "{dbg}");
    }

    #[test]
    fn refuses_unknown_fields_and_kinds() {
        for bad in [
            "[provision.targets.x]\nkind = \"postgres\"\nurl = \"postgres://a@b/c\"\nbogus = 1\n",
            "[provision.targets.x]\nkind = \"ldap\"\n",
            "[provision.targets.x]\nkind = \"command\"\n",
            "[provision.targets.x]\nkind = \"linux_group\"\nremove_drfit = true\n",
            "[provision.targets.x]\nkind = \"linux_group\"\nremove_drift = \"yes\"\n",
            "[provision.targets.x]\nkind = \"linux_group\"\nkeep = \"root\"\n",
        ] {
            assert!(toml::from_str::<File>(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn build_checks_values() {
        let bad: File = toml::from_str(
            "[provision.targets.x]\nkind = \"command\"\nprogram = \"relative/path\"\n",
        )
        .unwrap();
        let err = build_all(&bad.provision.targets, None).err().unwrap();
        assert!(err.0.starts_with("provision.targets.x: "), "{err}");
        let bad: File =
            toml::from_str("[provision.targets.x]\nkind = \"postgres\"\nurl = \"mysql://x\"\n")
                .unwrap();
        assert!(build_all(&bad.provision.targets, None).is_err());
    }

    #[tokio::test]
    async fn drift_rules_decide_what_is_removed() {
        let parse = |extra: &str| -> TargetConfig {
            let f: File = toml::from_str(&format!(
                "[provision.targets.x]\nkind = \"linux_group\"\nprivileged_groups = [\"docker\"]\n{extra}"
            ))
            .unwrap();
            f.provision.targets["x"].clone()
        };
        let member = |account: &str| StandingPrivilege {
            account: account.into(),
            privilege: "group:docker".into(),
            source: "getent group docker".into(),
        };
        // Off by default: nothing is removable, and a removal asked anyway changes nothing.
        let off = build("x", &parse("")).unwrap();
        assert!(!off.removes_drift());
        assert!(off.removable(&member("bob")).unwrap_err().contains("off"));
        assert!(matches!(
            off.remove_standing(&member("bob")).await,
            Err(ProvisionError::Invalid(_))
        ));
        let on = build("x", &parse("remove_drift = true\nkeep = [\"ops\"]\n")).unwrap();
        assert!(on.removes_drift());
        assert_eq!(on.removable(&member("bob")), Ok(()));
        assert!(on.removable(&member("ops")).unwrap_err().contains("keep"));
        assert!(matches!(
            on.remove_standing(&member("ops")).await,
            Err(ProvisionError::Invalid(_))
        ));
        // The provisioner's own protections hold whatever `keep` says.
        assert!(on.removable(&member("root")).is_err());
        let uid0 = StandingPrivilege {
            account: "toor".into(),
            privilege: "uid0".into(),
            source: "getent passwd".into(),
        };
        assert!(on.removable(&uid0).is_err());
        assert!(build("x", &parse("keep = [\"\"]\n")).is_err());
    }
}
