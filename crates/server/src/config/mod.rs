//! Server configuration: one TOML file, every key overridable by environment variables
//! (`PEDM_LISTEN`, `PEDM_DATA_DIR`, `PEDM_LIMITS__MAX_DURATION`, ...), then by flags.

use anyhow::{Context, bail};
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use pedm_core::duration::parse_duration;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

mod resolve;
pub use resolve::Resolved;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address to listen on. Port 0 picks a free port (printed at start).
    pub listen: String,
    /// Where the embedded database and the bootstrap admin token live.
    pub data_dir: PathBuf,
    /// `sqlite://PATH` or `postgres://...` (several hosts, `postgres://u@h1,h2/pedm`, follow
    /// the writable primary); empty means `sqlite://<data_dir>/pedm.db`.
    pub database_url: String,
    /// A file holding a 256-bit key-encryption key (base64, mode 0600). When set, the audit
    /// and agent signing keys are sealed into the database under it and shared by every
    /// instance given the same file (see `shared_keys`); empty: each instance's own key files.
    #[serde(default)]
    pub key_encryption_key: String,
    /// Older KEK files, during a change of KEK: a key sealed under one of them is opened and
    /// sealed again under `key_encryption_key` (recorded as `key.resealed`).
    #[serde(default)]
    pub previous_key_encryption_keys: Vec<String>,
    /// Name of the admin created on first start.
    pub admin_user: String,
    /// `text` or `json`.
    pub log_format: String,
    pub limits: LimitsConfig,
    pub http: HttpConfig,
    pub policy: PolicyConfig,
    /// Webhooks for new requests, decisions, grants and break-glass (`[[notify.webhook]]`).
    pub notify: pedm_notify::NotifyConfig,
    /// Who is on call (`principal.on_call`): `[oncall] file` or `url`.
    #[serde(default)]
    pub oncall: Option<crate::oncall::OnCallConfig>,
    /// Ticket systems requests' tickets are checked against (`[[tickets.system]]`).
    #[serde(default)]
    pub tickets: crate::tickets::TicketsConfig,
    pub audit: AuditConfig,
    /// Provisioners: `[provision.targets.<target>]` (kind and connection) and
    /// `[provision.roles.<target>.<role>]` (what a grant of that role does).
    #[serde(default)]
    pub provision: ProvisionConfig,
    /// Host agents: the key their grant snapshots are signed with, where session recordings
    /// are kept.
    #[serde(default)]
    pub agents: AgentsConfig,
    /// API tokens.
    #[serde(default)]
    pub auth: AuthConfig,
    /// HTTPS: `[tls] cert`, `key` (PEM files, reloaded on SIGHUP or when they change).
    #[serde(default)]
    pub tls: crate::tls::TlsConfig,
    /// The SCIM 2.0 endpoint identity providers push users and groups to (`/scim/v2`).
    #[serde(default)]
    pub scim: ScimConfig,
    /// `[[alerts.exec]]`: patterns on reported commands that raise a high-severity alert.
    #[serde(default)]
    pub alerts: AlertsConfig,
    /// SSH certificate authorities for `ssh` targets (`[ssh]`).
    #[serde(default)]
    pub ssh: SshConfig,
    /// The web console under `/ui/` (`[console]`).
    #[serde(default)]
    pub console: ConsoleConfig,
    /// `[sudo_log]`: pedmd as a sudo log server (off unless `listen` is set).
    pub sudo_log: SudoLogConfig,
    /// `[privacy]`: personal data in the audit log sealed per data subject.
    #[serde(default)]
    pub privacy: PrivacyConfig,
    /// `[oidc_issuer]`: pedmd as an OpenID Connect issuer (off unless `url` is set).
    #[serde(default)]
    pub oidc_issuer: OidcIssuerConfig,
}

/// `[oidc_issuer]`: pedmd issues ES256 ID tokens for grant holders to systems that trust it
/// (Kubernetes targets with `oidc_audience`), and serves `<url>/.well-known/openid-configuration`
/// and the JWKS for them to check.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OidcIssuerConfig {
    /// The issuer URL relying parties are configured with: how they reach pedmd (`https://`).
    pub url: String,
    /// P-256 PKCS#8 key files: the first signs (made, mode 0600, if missing), the rest are
    /// older keys still published after a rotation. Empty means `[<data_dir>/oidc.key]`.
    /// Instances sharing a database must share them.
    pub keys: Vec<PathBuf>,
}

/// `[console]`: session timeouts, and the address browsers reach pedmd at (needed for
/// single sign-on in the console: the provider sends people back to
/// `<public_url>/ui/auth/callback`, which must be registered with it).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleConfig {
    /// A session unused this long ends (`30m`).
    pub idle_timeout: String,
    /// A session ends this long after sign-in, used or not (`8h`).
    pub session_lifetime: String,
    /// `https://pedm.example.com`; empty: sign-in with a pasted token only.
    pub public_url: String,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        ConsoleConfig {
            idle_timeout: "30m".into(),
            session_lifetime: "8h".into(),
            public_url: String::new(),
        }
    }
}

/// `[ssh]`: the CA keys (OpenSSH private key files). The first of each list signs and is
/// made (Ed25519, mode 0600) if missing; the rest are older keys still published for trust
/// after a rotation (private or `.pub` files). Instances sharing a database must share them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SshConfig {
    /// Empty means `[<data_dir>/ssh/user_ca]`.
    pub user_ca_keys: Vec<PathBuf>,
    /// Empty means `[<data_dir>/ssh/host_ca]`.
    pub host_ca_keys: Vec<PathBuf>,
    /// Longest a host certificate may be signed for (`365d`).
    pub max_host_cert_lifetime: String,
}

impl Default for SshConfig {
    fn default() -> Self {
        SshConfig {
            user_ca_keys: vec![],
            host_ca_keys: vec![],
            max_host_cert_lifetime: "365d".into(),
        }
    }
}

/// `[sudo_log]`: hosts with stock sudo send their event and I/O logs here
/// (`log_servers=` in sudoers), over TLS with their pedm client certificate.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SudoLogConfig {
    /// `address:port` to listen on (sudo's TLS port is 30344); empty: off. Needs `[tls]`.
    pub listen: String,
    /// Keep what was typed (`ttyin`/`stdin`) when sudo sends it; off: sudo cannot tell a
    /// password typed at a prompt from a command.
    pub record_input: bool,
    /// How often received I/O is made durable and acknowledged to sudo (`1s`).
    pub commit_interval: String,
    /// A log whose connection dropped and that is not resumed within this is finished as it
    /// stands (`1h`).
    pub abandon_after: String,
}

impl Default for SudoLogConfig {
    fn default() -> Self {
        SudoLogConfig {
            listen: String::new(),
            record_input: false,
            commit_interval: "1s".into(),
            abandon_after: "1h".into(),
        }
    }
}

/// `[privacy]`: `seal_personal_data = true` seals names, emails, addresses and free text in
/// new audit events under a key per person (wrapped under `key_encryption_key`, which it
/// needs), so that `pedm privacy erase` can make them unreadable without breaking the chain.
/// Events written before it was switched on stay as they were.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrivacyConfig {
    pub seal_personal_data: bool,
}

/// `[alerts]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    pub exec: Vec<ExecAlertConfig>,
}

/// `[[alerts.exec]] name = "shadow-read", pattern = "/etc/(g?shadow|sudoers)"`: a regular
/// expression (`regex` crate syntax) found anywhere in the command line.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecAlertConfig {
    pub name: String,
    pub pattern: String,
}

/// `[scim]`: off unless `enabled = true`. Clients authenticate with SCIM tokens
/// (`pedm scim token create`), never with API tokens.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScimConfig {
    pub enabled: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Lifetime of a token minted without `--expires-in` (a token that never expires must
    /// be asked for with `--expires-in never`).
    pub default_token_lifetime: String,
    /// OpenID Connect providers people sign in with (`[[auth.oidc]]`, see `crate::oidc`).
    #[serde(default)]
    pub oidc: Vec<crate::oidc::config::OidcConfig>,
    /// Platforms whose tokens CI jobs and services exchange for pedm tokens
    /// (`[[auth.workload]]`, see `crate::workload`).
    #[serde(default)]
    pub workload: Vec<crate::workload::WorkloadConfig>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            default_token_lifetime: "90d".into(),
            oidc: vec![],
            workload: vec![],
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentsConfig {
    /// Ed25519 key that signs the snapshots agents enforce; created (mode 0600) if missing.
    /// Empty means `<data_dir>/agent.key`. Instances sharing a database must share this key.
    pub signing_key: String,
    /// Where uploaded session recordings are stored. Empty means `<data_dir>/recordings`.
    /// Instances sharing a database must share this directory.
    pub recordings_dir: String,
    /// Largest recording accepted, in bytes.
    pub max_recording_bytes: u64,
    /// Over HTTPS, agents authenticate with client certificates from pedmd's client CA
    /// (`<data_dir>/tls/client-ca.*`; instances sharing a database must share it): how long
    /// one is valid (`24h`, between 5m and 30d). Agents renew at two thirds of it.
    pub client_cert_lifetime: String,
    /// How long `pedm host register`'s token may enroll the agent (once), over HTTPS (`1h`).
    pub enroll_token_lifetime: String,
}

impl Default for AgentsConfig {
    fn default() -> Self {
        AgentsConfig {
            signing_key: String::new(),
            recordings_dir: String::new(),
            max_recording_bytes: 4 << 30,
            client_cert_lifetime: "24h".into(),
            enroll_token_lifetime: "1h".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProvisionConfig {
    /// How often to compare what the targets hold with what pedm granted and record drift
    /// (`15m`; `0s` turns it off). Drift is removed too on targets with `remove_drift = true`.
    pub reconcile_interval: String,
    /// Per target: `kind` and its settings, `remove_drift` (default false) and `keep`
    /// (accounts whose standing privileges are never removed), see
    /// [`pedm_provision::TargetConfig`].
    pub targets: BTreeMap<String, pedm_provision::TargetConfig>,
    pub roles: BTreeMap<String, BTreeMap<String, serde_json::Value>>,
}

impl Default for ProvisionConfig {
    fn default() -> Self {
        ProvisionConfig {
            reconcile_interval: "15m".into(),
            targets: BTreeMap::new(),
            roles: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Ed25519 key that signs audit checkpoints; created (mode 0600) if missing. Empty means
    /// `<data_dir>/audit.key`.
    pub signing_key: String,
    /// How often a checkpoint is signed when the log grew (`60s`).
    pub checkpoint_interval: String,
    /// Origin line of the checkpoint notes (a schema-less URL naming this log); empty means
    /// `pedm.audit/<key id>`.
    #[serde(default)]
    pub origin: String,
    /// Witnesses every new checkpoint is submitted to (`[[audit.witnesses]] url, key`).
    #[serde(default)]
    pub witnesses: Vec<WitnessConfig>,
    /// How long events are kept before `pedm audit archive` may move them to an archive
    /// segment and prune them (`400d`); empty: never pruned.
    #[serde(default)]
    pub retention: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WitnessConfig {
    /// Submission prefix: `<url>/add-checkpoint` is called.
    pub url: String,
    /// The witness's cosigner key: `<name>+<key id>+<base64>`.
    pub key: String,
    /// PEM CA certificate(s) trusted for an `https://` witness besides the system's roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Zone of `context.time` for policies without `@timezone` (IANA name).
    pub default_timezone: String,
    /// `policy simulate` recommends auto-approval only after this many decisions.
    #[serde(default = "default_min_sample")]
    pub recommend_min_sample: usize,
    /// Target labels that make a role sensitive (never recommended for auto-approval);
    /// `env=prod` always is.
    #[serde(default = "default_sensitive_labels")]
    pub sensitive_labels: Vec<String>,
    /// Two-person control: a policy change takes effect only after this many admins other
    /// than its author approve it (`pedm policy approve`). 0 (the default): applied at once.
    #[serde(default)]
    pub require_approvals: u32,
    /// A request whose risk score (0..100) reaches this raises a high-severity notice
    /// (`request.risky`) through every notifier; 0: never.
    #[serde(default = "default_risk_alert_score")]
    pub risk_alert_score: u32,
    /// A TOML file of policy properties (`[[property]]`, see `pedm_core::policy_check`):
    /// invariants every applied policy set must keep, proved on every apply.
    #[serde(default)]
    pub properties: Option<PathBuf>,
    /// Every policy must name its owner and its next review date (`@owner("dba")`,
    /// `@review_by("2027-03-31")`): an apply without them is refused.
    #[serde(default)]
    pub require_owner: bool,
}

/// Reads and checks a policy properties file; every error names the file.
fn read_properties(
    path: &std::path::Path,
) -> anyhow::Result<Vec<pedm_core::policy_check::Property>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("policy.properties: cannot read {}: {e}", path.display()))?;
    let file: pedm_core::policy_check::PropertyFile = Figment::from(Toml::string(&text))
        .extract()
        .map_err(|e| anyhow::anyhow!("policy.properties: {}: {e}", path.display()))?;
    if file.properties.is_empty() {
        bail!(
            "policy.properties: {} states no [[property]]",
            path.display()
        );
    }
    pedm_core::policy_check::check_all(&file.properties)
        .map_err(|e| anyhow::anyhow!("policy.properties: {}: {e}", path.display()))?;
    Ok(file.properties)
}

fn default_risk_alert_score() -> u32 {
    60
}

fn default_min_sample() -> usize {
    20
}

fn default_sensitive_labels() -> Vec<String> {
    vec!["env=prod".into()]
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Longest grant anyone may request (`7d`).
    pub max_duration: String,
    /// How long a request waits for a decision before it expires (`24h`).
    pub pending_ttl: String,
    /// How long an exec held for step-up approval waits for approvers (`5m`).
    #[serde(default = "default_step_up_wait")]
    pub step_up_wait: String,
    /// Longest an external (vendor) account may live from its creation or extension (`90d`).
    #[serde(default = "default_external_max")]
    pub external_max: String,
    /// How long before an external account expires its sponsor is told (`24h`).
    #[serde(default = "default_external_notice")]
    pub external_notice: String,
}

fn default_step_up_wait() -> String {
    "5m".into()
}

fn default_external_max() -> String {
    "90d".into()
}

fn default_external_notice() -> String {
    "24h".into()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Longest a request may take before the server answers 408.
    pub request_timeout: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:8470".into(),
            data_dir: PathBuf::from("/var/lib/pedm"),
            database_url: String::new(),
            key_encryption_key: String::new(),
            previous_key_encryption_keys: Vec::new(),
            admin_user: "admin".into(),
            log_format: "text".into(),
            limits: LimitsConfig {
                max_duration: "7d".into(),
                pending_ttl: "24h".into(),
                step_up_wait: default_step_up_wait(),
                external_max: default_external_max(),
                external_notice: default_external_notice(),
            },
            http: HttpConfig {
                max_body_bytes: 64 * 1024,
                request_timeout: "30s".into(),
            },
            policy: PolicyConfig {
                default_timezone: "UTC".into(),
                recommend_min_sample: default_min_sample(),
                sensitive_labels: default_sensitive_labels(),
                require_approvals: 0,
                risk_alert_score: default_risk_alert_score(),
                properties: None,
                require_owner: false,
            },
            notify: pedm_notify::NotifyConfig::default(),
            oncall: None,
            tickets: Default::default(),
            audit: AuditConfig {
                signing_key: String::new(),
                checkpoint_interval: "60s".into(),
                retention: String::new(),
                origin: String::new(),
                witnesses: vec![],
            },
            provision: ProvisionConfig::default(),
            agents: AgentsConfig::default(),
            auth: AuthConfig::default(),
            tls: crate::tls::TlsConfig::default(),
            scim: ScimConfig::default(),
            alerts: AlertsConfig::default(),
            ssh: SshConfig::default(),
            console: ConsoleConfig::default(),
            sudo_log: SudoLogConfig::default(),
            privacy: PrivacyConfig::default(),
            oidc_issuer: OidcIssuerConfig::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_settings_are_checked() {
        let with = |idle: &str, life: &str, url: &str| ConsoleConfig {
            idle_timeout: idle.into(),
            session_lifetime: life.into(),
            public_url: url.into(),
        };
        let ok = with("15m", "4h", "https://pedm.example.com/")
            .resolve()
            .unwrap();
        assert_eq!((ok.idle_secs, ok.session_secs), (900, 14_400));
        assert_eq!(ok.public_url.as_deref(), Some("https://pedm.example.com"));
        let local = with("30m", "8h", "http://127.0.0.1:8470")
            .resolve()
            .unwrap();
        assert_eq!(local.public_url.as_deref(), Some("http://127.0.0.1:8470"));
        for (c, names) in [
            (with("2h", "1h", ""), "longer than console.session_lifetime"),
            (
                with("10s", "1h", ""),
                "console.idle_timeout: must be at least 1m",
            ),
            (with("30m", "soon", ""), "console.session_lifetime"),
            (
                with("30m", "8h", "http://pedm.example.com"),
                "plain http only on loopback",
            ),
            (
                with("30m", "8h", "https://pedm.example.com/ui"),
                "without a path",
            ),
            (
                with("30m", "8h", "https://user@pedm.example.com"),
                "without a path",
            ),
        ] {
            let e = format!("{:#}", c.resolve().unwrap_err());
            assert!(e.contains(names), "{e}");
        }
    }

    #[test]
    fn an_old_kek_needs_the_new_one() {
        let c = Config {
            previous_key_encryption_keys: vec!["/etc/pedm/kek.old".into()],
            ..Config::default()
        };
        let e = format!("{:#}", c.resolve().unwrap_err());
        assert!(e.contains("without key_encryption_key"), "{e}");
        let c = Config {
            key_encryption_key: "/etc/pedm/kek".into(),
            ..c
        };
        let r = c.resolve().unwrap();
        assert_eq!(r.key_encryption_key, Some(PathBuf::from("/etc/pedm/kek")));
        assert_eq!(
            r.previous_key_encryption_keys,
            [PathBuf::from("/etc/pedm/kek.old")]
        );
    }

    #[test]
    fn file_then_env_override() {
        let dir = std::env::temp_dir().join(format!("pedm-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("pedmd.toml");
        std::fs::write(
            &f,
            "listen = \"127.0.0.1:9999\"\n[limits]\npending_ttl = \"2h\"\n",
        )
        .unwrap();
        let c = Config::load(Some(&f), Config::default()).unwrap();
        let r = c.resolve().unwrap();
        assert_eq!(r.listen.port(), 9999);
        assert_eq!(r.limits.pending_ttl_secs, 7200);
        assert_eq!(r.limits.max_duration_secs, 7 * 86_400);
    }

    #[test]
    fn provision_targets_take_drift_rules() {
        let dir = std::env::temp_dir().join(format!("pedm-cfg-drift-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("pedmd.toml");
        std::fs::write(
            &f,
            "[provision.targets.db]\nkind = \"postgres\"\nurl = \"postgres://a@b/c\"\n\
             remove_drift = true\nkeep = [\"postgres\", \"etl\"]\n\
             [provision.targets.web]\nkind = \"linux_group\"\n",
        )
        .unwrap();
        let r = Config::load(Some(&f), Config::default())
            .unwrap()
            .resolve()
            .unwrap();
        let db = &r.provision.targets["db"];
        assert!(db.remove_drift);
        assert_eq!(db.keep, ["postgres", "etl"]);
        assert_eq!(db.provisioner.kind(), "postgres");
        assert!(!r.provision.targets["web"].remove_drift);
        std::fs::write(
            &f,
            "[provision.targets.db]\nkind = \"linux_group\"\nremove_drfit = true\n",
        )
        .unwrap();
        assert!(Config::load(Some(&f), Config::default()).is_err());
    }

    #[test]
    fn policy_approvals_from_the_file_and_bounded() {
        let dir = std::env::temp_dir().join(format!("pedm-cfg-approvals-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("pedmd.toml");
        std::fs::write(&f, "[policy]\nrequire_approvals = 2\n").unwrap();
        let r = Config::load(Some(&f), Config::default())
            .unwrap()
            .resolve()
            .unwrap();
        assert_eq!(r.policy_approvals, 2);
        assert_eq!(r.policy_options.default_timezone.iana_name(), Some("UTC"));
        assert_eq!(Config::default().resolve().unwrap().policy_approvals, 0);
        let mut c = Config::default();
        c.policy.require_approvals = 101;
        let e = format!("{:#}", c.resolve().unwrap_err());
        assert!(e.contains("policy.require_approvals"), "{e}");
        std::fs::write(&f, "[policy]\nrequire_approvals = -1\n").unwrap();
        assert!(Config::load(Some(&f), Config::default()).is_err());
    }

    #[test]
    fn bad_values_are_named() {
        let c = Config {
            listen: "nowhere".into(),
            ..Config::default()
        };
        let e = format!("{:#}", c.resolve().unwrap_err());
        assert!(e.contains("listen"), "{e}");
        let mut c = Config::default();
        c.limits.max_duration = "forever".into();
        let e = format!("{:#}", c.resolve().unwrap_err());
        assert!(e.contains("limits.max_duration"), "{e}");
    }
}
