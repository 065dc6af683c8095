//! The configuration checked and converted for use ([`Resolved`]): durations parsed, files
//! read, settings that depend on each other checked together. Any problem names its key.

use super::*;

/// Values checked and converted for use.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub database_url: String,
    pub key_encryption_key: Option<PathBuf>,
    pub previous_key_encryption_keys: Vec<PathBuf>,
    pub admin_user: String,
    pub json_logs: bool,
    pub limits: pedm_core::service::Limits,
    pub max_body_bytes: usize,
    pub request_timeout: std::time::Duration,
    pub policy_options: pedm_policy::EngineOptions,
    /// Approvals a policy change needs (0: none).
    pub policy_approvals: u32,
    /// Invariants every applied policy set must keep (`[policy] properties`).
    pub policy_properties: Vec<pedm_core::policy_check::Property>,
    /// `[policy] require_owner`.
    pub policy_owners_required: bool,
    pub notify: pedm_notify::NotifyConfig,
    pub oncall: Option<crate::oncall::OnCallConfig>,
    pub tickets: crate::tickets::TicketsConfig,
    pub audit_signing_key: PathBuf,
    pub audit_checkpoint_interval: std::time::Duration,
    /// `[audit] retention` in seconds (`None`: never pruned).
    pub audit_retention_secs: Option<i64>,
    /// `None`: derived from the key.
    pub audit_origin: Option<String>,
    pub audit_witnesses: Vec<crate::witness::WitnessTarget>,
    pub provision: ProvisionConfig,
    /// `None`: reconciliation is off.
    pub reconcile_interval: Option<std::time::Duration>,
    pub agent_signing_key: PathBuf,
    pub recordings_dir: PathBuf,
    pub max_recording_bytes: u64,
    pub agent_cert_lifetime_secs: i64,
    pub agent_enroll_ttl_secs: i64,
    /// `[tls]`: both files, or `None` (plain HTTP).
    pub tls: Option<(PathBuf, PathBuf)>,
    pub tls_watch_interval: std::time::Duration,
    /// `[[auth.oidc]]` providers, checked, secrets read.
    pub oidc: Vec<crate::oidc::OidcSettings>,
    /// `[[auth.workload]]` trusts (checked: `crate::workload::resolve` accepts them).
    pub workload: Vec<crate::workload::WorkloadConfig>,
    /// `[scim] enabled`: whether `/scim/v2` answers.
    pub scim: bool,
    /// `[[alerts.exec]]`, compiled.
    pub exec_alerts: Vec<pedm_core::alert::ExecAlert>,
    /// `[ssh]`: the user and host CA key files (the first of each signs).
    pub ssh_user_ca_keys: Vec<PathBuf>,
    pub ssh_host_ca_keys: Vec<PathBuf>,
    pub ssh_max_host_cert_secs: i64,
    pub console: pedm_console::Settings,
    /// `[sudo_log]`, when on.
    pub sudo_log: Option<crate::sudo_log::Settings>,
    /// `[privacy] seal_personal_data` (checked: a KEK is configured).
    pub seal_personal_data: bool,
    /// `[oidc_issuer]`, when on: the issuer URL and its key files (the first signs).
    pub oidc_issuer: Option<(String, Vec<PathBuf>)>,
}

impl Config {
    /// Defaults, then the file (if any), then `PEDM_*` environment variables.
    pub fn load(file: Option<&Path>, base: Config) -> anyhow::Result<Config> {
        let mut fig = Figment::from(Serialized::defaults(base));
        if let Some(f) = file {
            if !f.exists() {
                bail!("configuration file {} does not exist", f.display());
            }
            fig = fig.merge(Toml::file(f));
        }
        // Only keys of this file: PEDM_URL, PEDM_TOKEN, PEDM_LOG... belong to others.
        const KEYS: [&str; 12] = [
            "tls",
            "agents",
            "policy",
            "listen",
            "data_dir",
            "database_url",
            "key_encryption_key",
            "admin_user",
            "log_format",
            "limits",
            "http",
            "audit",
        ];
        fig = fig.merge(
            Env::prefixed("PEDM_")
                .filter(|k| {
                    let k = k.as_str().to_ascii_lowercase();
                    KEYS.iter()
                        .any(|top| k == *top || k.starts_with(&format!("{top}__")))
                })
                .split("__"),
        );
        fig.extract().context("invalid configuration")
    }

    pub fn resolve(&self) -> anyhow::Result<Resolved> {
        let listen: SocketAddr = self.listen.parse().with_context(|| {
            format!(
                "listen: {:?} is not an address like 127.0.0.1:8470",
                self.listen
            )
        })?;
        let secs =
            |field: &str, v: &str| parse_duration(v).with_context(|| format!("{field}: {v:?}"));
        let database_url = if self.database_url.trim().is_empty() {
            format!("sqlite://{}", self.data_dir.join("pedm.db").display())
        } else {
            self.database_url.trim().to_string()
        };
        if !matches!(self.log_format.as_str(), "text" | "json") {
            bail!("log_format: {:?} must be text or json", self.log_format);
        }
        if self.http.max_body_bytes < 1024 {
            bail!(
                "http.max_body_bytes: {} is below the minimum of 1024",
                self.http.max_body_bytes
            );
        }
        let limits = pedm_core::service::Limits {
            max_duration_secs: secs("limits.max_duration", &self.limits.max_duration)?,
            pending_ttl_secs: secs("limits.pending_ttl", &self.limits.pending_ttl)?,
            step_up_wait_secs: secs("limits.step_up_wait", &self.limits.step_up_wait)?,
            recommend_min_sample: self.policy.recommend_min_sample,
            sensitive_labels: self.policy.sensitive_labels.clone(),
            default_token_lifetime_secs: secs(
                "auth.default_token_lifetime",
                &self.auth.default_token_lifetime,
            )?,
            external_max_secs: secs("limits.external_max", &self.limits.external_max)?,
            external_notice_secs: secs("limits.external_notice", &self.limits.external_notice)?,
            risk_alert_score: match self.policy.risk_alert_score {
                n if n > 100 => bail!("policy.risk_alert_score: {n} is more than 100"),
                n => n,
            },
            ..Default::default()
        };
        Ok(Resolved {
            listen,
            data_dir: self.data_dir.clone(),
            database_url,
            key_encryption_key: match self.key_encryption_key.trim() {
                "" if !self.previous_key_encryption_keys.is_empty() => bail!(
                    "previous_key_encryption_keys is set without key_encryption_key: name the \
                     KEK that replaces them"
                ),
                "" => None,
                p => Some(PathBuf::from(p)),
            },
            previous_key_encryption_keys: self
                .previous_key_encryption_keys
                .iter()
                .map(|p| PathBuf::from(p.trim()))
                .collect(),
            seal_personal_data: match (
                self.privacy.seal_personal_data,
                self.key_encryption_key.trim(),
            ) {
                (true, "") => bail!(
                    "privacy.seal_personal_data needs key_encryption_key: the keys of data \
                     subjects are kept wrapped under it"
                ),
                (on, _) => on,
            },
            admin_user: self.admin_user.clone(),
            json_logs: self.log_format == "json",
            limits,
            max_body_bytes: self.http.max_body_bytes,
            request_timeout: std::time::Duration::from_secs(secs(
                "http.request_timeout",
                &self.http.request_timeout,
            )? as u64),
            policy_options: pedm_policy::EngineOptions::with_timezone(
                &self.policy.default_timezone,
            )
            .map_err(|e| anyhow::anyhow!("policy.default_timezone: {e}"))?,
            policy_approvals: match self.policy.require_approvals {
                n if n > 100 => bail!("policy.require_approvals: {n} is more than 100"),
                n => n,
            },
            policy_properties: match &self.policy.properties {
                Some(path) => read_properties(path)?,
                None => vec![],
            },
            policy_owners_required: self.policy.require_owner,
            notify: self.notify.clone(),
            oncall: self.oncall.clone(),
            tickets: self.tickets.clone(),
            audit_signing_key: if self.audit.signing_key.trim().is_empty() {
                self.data_dir.join("audit.key")
            } else {
                PathBuf::from(self.audit.signing_key.trim())
            },
            audit_checkpoint_interval: match secs(
                "audit.checkpoint_interval",
                &self.audit.checkpoint_interval,
            )? {
                n if n >= 1 => std::time::Duration::from_secs(n as u64),
                _ => bail!("audit.checkpoint_interval: must be at least 1s"),
            },
            audit_retention_secs: match self.audit.retention.trim() {
                "" => None,
                r => match secs("audit.retention", r)? {
                    n if n >= 1 => Some(n),
                    _ => bail!("audit.retention: must be at least 1s"),
                },
            },
            audit_origin: match self.audit.origin.trim() {
                "" => None,
                o if o.contains(char::is_whitespace) || o.chars().any(char::is_control) => {
                    bail!("audit.origin: {o:?} must not contain spaces or control characters")
                }
                o => Some(o.to_string()),
            },
            audit_witnesses: self
                .audit
                .witnesses
                .iter()
                .enumerate()
                .map(|(i, w)| {
                    let key: pedm_audit::VerifierKey = w
                        .key
                        .parse()
                        .with_context(|| format!("audit.witnesses[{i}].key"))?;
                    if key.alg != pedm_audit::note::ALG_COSIGNATURE_V1 {
                        bail!("audit.witnesses[{i}].key: not a witness (cosigner) key");
                    }
                    if !w.url.starts_with("http://") && !w.url.starts_with("https://") {
                        bail!(
                            "audit.witnesses[{i}].url: {:?} is not an http(s) URL",
                            w.url
                        );
                    }
                    if let Some(ca) = &w.ca_file {
                        pedm_notify::tls::ca_roots(ca)
                            .map_err(|e| anyhow::anyhow!("audit.witnesses[{i}].{e}"))?;
                    }
                    Ok(crate::witness::WitnessTarget {
                        url: w.url.clone(),
                        key,
                        ca_file: w.ca_file.clone(),
                    })
                })
                .collect::<anyhow::Result<_>>()?,
            provision: {
                for t in self.provision.roles.keys() {
                    if !self.provision.targets.contains_key(t) {
                        bail!("provision.roles.{t}: no [provision.targets.{t}] is configured");
                    }
                }
                self.provision.clone()
            },
            agent_signing_key: match self.agents.signing_key.trim() {
                "" => self.data_dir.join("agent.key"),
                p => PathBuf::from(p),
            },
            recordings_dir: match self.agents.recordings_dir.trim() {
                "" => self.data_dir.join("recordings"),
                p => PathBuf::from(p),
            },
            max_recording_bytes: self.agents.max_recording_bytes,
            agent_cert_lifetime_secs: match secs(
                "agents.client_cert_lifetime",
                &self.agents.client_cert_lifetime,
            )? {
                n if (300..=30 * 86_400).contains(&n) => n,
                _ => bail!("agents.client_cert_lifetime: must be between 5m and 30d"),
            },
            agent_enroll_ttl_secs: match secs(
                "agents.enroll_token_lifetime",
                &self.agents.enroll_token_lifetime,
            )? {
                n if (60..=7 * 86_400).contains(&n) => n,
                _ => bail!("agents.enroll_token_lifetime: must be between 1m and 7d"),
            },
            tls: match (&self.tls.cert, &self.tls.key) {
                (Some(c), Some(k)) => Some((c.clone(), k.clone())),
                (None, None) => None,
                (Some(_), None) => bail!("tls.key: missing (tls.cert is set)"),
                (None, Some(_)) => bail!("tls.cert: missing (tls.key is set)"),
            },
            tls_watch_interval: match self.tls.watch_interval.as_deref() {
                None => std::time::Duration::from_secs(5),
                Some(v) => match secs("tls.watch_interval", v)? {
                    n if n >= 1 => std::time::Duration::from_secs(n as u64),
                    _ => bail!("tls.watch_interval: must be at least 1s"),
                },
            },
            oidc: crate::oidc::config::resolve(&self.auth.oidc)?,
            console: self.console.resolve()?,
            sudo_log: match self.sudo_log.listen.trim() {
                "" => None,
                addr => Some(crate::sudo_log::Settings {
                    listen: addr
                        .parse()
                        .map_err(|e| anyhow::anyhow!("sudo_log.listen: {addr:?}: {e}"))?,
                    record_input: self.sudo_log.record_input,
                    commit_interval: match secs(
                        "sudo_log.commit_interval",
                        &self.sudo_log.commit_interval,
                    )? {
                        n if (1..=60).contains(&n) => std::time::Duration::from_secs(n as u64),
                        _ => bail!("sudo_log.commit_interval: must be between 1s and 60s"),
                    },
                    abandon_after: match secs(
                        "sudo_log.abandon_after",
                        &self.sudo_log.abandon_after,
                    )? {
                        n if n >= 1 => std::time::Duration::from_secs(n as u64),
                        _ => bail!("sudo_log.abandon_after: must be at least 1s"),
                    },
                    max_recording_bytes: self.agents.max_recording_bytes,
                }),
            },
            scim: self.scim.enabled,
            ssh_user_ca_keys: match self.ssh.user_ca_keys.as_slice() {
                [] => vec![self.data_dir.join("ssh").join("user_ca")],
                keys => keys.to_vec(),
            },
            ssh_host_ca_keys: match self.ssh.host_ca_keys.as_slice() {
                [] => vec![self.data_dir.join("ssh").join("host_ca")],
                keys => keys.to_vec(),
            },
            oidc_issuer: match self.oidc_issuer.url.trim() {
                "" => None,
                url => Some((
                    url.to_string(),
                    match self.oidc_issuer.keys.as_slice() {
                        [] => vec![self.data_dir.join("oidc.key")],
                        keys => keys.to_vec(),
                    },
                )),
            },
            ssh_max_host_cert_secs: match secs(
                "ssh.max_host_cert_lifetime",
                &self.ssh.max_host_cert_lifetime,
            )? {
                n if n >= 60 => n,
                _ => bail!("ssh.max_host_cert_lifetime: must be at least 1m"),
            },
            exec_alerts: self
                .alerts
                .exec
                .iter()
                .map(|a| pedm_core::alert::ExecAlert::new(&a.name, &a.pattern))
                .collect::<Result<_, _>>()
                .map_err(|e| anyhow::anyhow!("alerts.exec: {e}"))?,
            workload: {
                crate::workload::resolve(&self.auth.workload)?;
                self.auth.workload.clone()
            },
            reconcile_interval: match secs(
                "provision.reconcile_interval",
                &self.provision.reconcile_interval,
            )? {
                0 => None,
                n => Some(std::time::Duration::from_secs(n as u64)),
            },
        })
    }
}

impl ConsoleConfig {
    pub(super) fn resolve(&self) -> anyhow::Result<pedm_console::Settings> {
        let secs = |field: &str, v: &str| -> anyhow::Result<i64> {
            let n = parse_duration(v).with_context(|| format!("console.{field}: {v:?}"))?;
            if n < 60 {
                bail!("console.{field}: must be at least 1m");
            }
            Ok(n)
        };
        let idle_secs = secs("idle_timeout", &self.idle_timeout)?;
        let session_secs = secs("session_lifetime", &self.session_lifetime)?;
        if idle_secs > session_secs {
            bail!("console.idle_timeout: longer than console.session_lifetime");
        }
        let url = self.public_url.trim().trim_end_matches('/');
        let public_url = if url.is_empty() {
            None
        } else {
            let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
            let host = rest.split(':').next().unwrap_or("");
            let loopback =
                matches!(host, "127.0.0.1" | "localhost" | "[") || rest.starts_with("[::1]");
            if !(scheme == "https" || (scheme == "http" && loopback)) {
                bail!(
                    "console.public_url: {url:?} must be an https:// address \
                     (plain http only on loopback)"
                );
            }
            if rest.is_empty() || rest.contains(['/', '?', '#', '@']) {
                bail!("console.public_url: {url:?} must be scheme://host[:port], without a path");
            }
            Some(url.to_string())
        };
        Ok(pedm_console::Settings {
            idle_secs,
            session_secs,
            public_url,
        })
    }
}
