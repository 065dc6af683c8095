//! Provisioner configuration, as it appears in the server's TOML, and building provisioners
//! from it.
//!
//! ```toml
//! [provision.targets.prod-db]
//! kind = "postgres"
//! url = "postgres://pedm_admin:secret@db.internal:5432/postgres"
//! privileged_roles = ["readwrite", "pg_write_all_data"]
//! timeout = "10s"
//!
//! [provision.targets.web-1]
//! kind = "linux_group"
//! privileged_groups = ["sudo", "wheel", "admin", "root", "docker"]
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

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::{
    CommandConfig, CommandProvisioner, LinuxGroupConfig, LinuxGroupProvisioner, PostgresConfig,
    PostgresProvisioner, Provisioner, WebhookConfig, WebhookProvisioner,
};

/// A configuration that cannot work (bad URL, relative program path, …).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// One target's provisioner: `kind` plus that kind's settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ProvisionerConfig {
    Postgres(PostgresConfig),
    LinuxGroup(LinuxGroupConfig),
    Command(CommandConfig),
    Webhook(WebhookConfig),
}

impl ProvisionerConfig {
    /// The [`Provisioner::kind`] this builds.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Postgres(_) => "postgres",
            Self::LinuxGroup(_) => "linux_group",
            Self::Command(_) => "command",
            Self::Webhook(_) => "webhook",
        }
    }
}

/// Builds the provisioner for `target` (the name is used in logs, and passed to commands and
/// webhooks). Checks the configuration; connects to nothing yet. Call inside a Tokio runtime.
pub fn build(
    target: &str,
    config: &ProvisionerConfig,
) -> Result<Arc<dyn Provisioner>, ConfigError> {
    let p: Arc<dyn Provisioner> = match config {
        ProvisionerConfig::Postgres(c) => Arc::new(PostgresProvisioner::new(c)?),
        ProvisionerConfig::LinuxGroup(c) => Arc::new(LinuxGroupProvisioner::new(c.clone())?),
        ProvisionerConfig::Command(c) => Arc::new(CommandProvisioner::new(target, c.clone())?),
        ProvisionerConfig::Webhook(c) => Arc::new(WebhookProvisioner::new(target, c.clone())?),
    };
    Ok(p)
}

/// [`build`] for every target of the `[provision.targets]` table; the first error names its target.
pub fn build_all(
    configs: &BTreeMap<String, ProvisionerConfig>,
) -> Result<BTreeMap<String, Arc<dyn Provisioner>>, ConfigError> {
    configs
        .iter()
        .map(|(name, c)| {
            build(name, c)
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
        targets: BTreeMap<String, ProvisionerConfig>,
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
        assert_eq!(targets["web-1"].kind(), "linux_group");
        let built = build_all(&targets).unwrap();
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
        let err = build_all(&bad.provision.targets).err().unwrap();
        assert!(err.0.starts_with("provision.targets.x: "), "{err}");
        let bad: File =
            toml::from_str("[provision.targets.x]\nkind = \"postgres\"\nurl = \"mysql://x\"\n")
                .unwrap();
        assert!(build_all(&bad.provision.targets).is_err());
    }
}
