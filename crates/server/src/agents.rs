//! Host agents: signing the snapshots they enforce, telling them when a host's grants change,
//! and where their session recordings are kept.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use pedm_api::agent::{HostGrant, PolicyBundle, SNAPSHOT_CONTEXT, SignedSnapshot, Snapshot};
use pedm_audit::SigningKey;
use pedm_core::notice::{Notice, Observer};
use pedm_core::service::HostSnapshot;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::broadcast;

pub struct AgentHub {
    key: SigningKey,
    timezone: String,
    pub recordings_dir: PathBuf,
    pub max_recording_bytes: u64,
    /// Names of hosts whose grants changed (`None`: every host, e.g. a new policy version).
    changes: broadcast::Sender<Option<String>>,
    pub tls: AgentTls,
    /// Sessions streaming to this instance now.
    pub live: crate::live::LiveHub,
    /// Delegated tasks run from the console, on their way to agents and back.
    pub tasks: crate::task_dispatch::TaskDispatcher,
}

/// Client certificates for agents (servers that speak TLS).
pub struct AgentTls {
    /// `None`: plain HTTP, where agents present their host token.
    pub client_ca: Option<Arc<crate::tls::client_ca::ClientCa>>,
    /// Hosts refused at the handshake.
    pub revoked: Arc<crate::tls::client_auth::RevokedHosts>,
    pub cert_lifetime_secs: i64,
    /// Lifetime of a person's device certificate.
    pub device_cert_lifetime_secs: i64,
}

impl AgentHub {
    pub fn new(
        key: SigningKey,
        timezone: String,
        recordings_dir: PathBuf,
        max_recording_bytes: u64,
        tls: AgentTls,
    ) -> Self {
        AgentHub {
            key,
            timezone,
            recordings_dir,
            max_recording_bytes,
            changes: broadcast::channel(1024).0,
            tls,
            live: Default::default(),
            tasks: Default::default(),
        }
    }

    /// Hands a checked task run to its host's agent (see [`crate::task_dispatch`]).
    pub fn dispatch_task(&self, order: &pedm_core::service::TaskRunOrder) -> Result<(), String> {
        self.tasks.dispatch(&self.key, order)
    }

    pub fn public_key(&self) -> String {
        self.key.public_key().to_string()
    }

    /// Changes to hosts' grants, for the agents' event streams.
    pub fn subscribe(&self) -> broadcast::Receiver<Option<String>> {
        self.changes.subscribe()
    }

    /// `host`'s agent should look again (its grants changed, or it was revoked).
    pub fn host_changed(&self, host: &str) {
        let _ = self.changes.send(Some(host.to_string()));
    }

    /// Every agent should fetch a new snapshot (a policy version was applied).
    pub fn all_changed(&self) {
        let _ = self.changes.send(None);
    }

    pub fn sign(&self, s: HostSnapshot) -> SignedSnapshot {
        let snapshot = Snapshot {
            host: s.target.name,
            issued_at: s.at,
            seq: s.seq,
            target_kind: s.target.kind.to_string(),
            target_labels: s.target.labels,
            grants: s
                .grants
                .into_iter()
                .map(|g| HostGrant {
                    id: g.grant.id,
                    request_id: g.grant.request_id,
                    user: g.grant.user,
                    groups: g.groups,
                    admin: g.admin,
                    external: g.external,
                    sponsor: g.sponsor,
                    role: g.grant.role,
                    run_as: g.role.run_as,
                    role_auto_approve: g.role.auto_approve,
                    noexec: g.role.noexec,
                    allow_setuid: g.role.allow_setuid,
                    record_input: g.role.record_input,
                    intercept: g.role.intercept,
                    limits: g.role.limits,
                    watch_paths: g.role.watch_paths,
                    starts_at: g.grant.starts_at,
                    expires_at: g.grant.expires_at,
                })
                .collect(),
            tasks: s.tasks,
            killed_sessions: s
                .killed_sessions
                .into_iter()
                .map(|(id, reason)| pedm_api::agent::KilledSession { id, reason })
                .collect(),
            policy: s.policy.map(|p| PolicyBundle {
                version: p.version,
                sources: p.sources,
                timezone: Some(self.timezone.clone()),
            }),
        };
        // Plain structs of strings, numbers and maps: serialising cannot fail.
        let text = serde_json::to_string(&snapshot).unwrap_or_default();
        let signature = self.key.sign_for(SNAPSHOT_CONTEXT, text.as_bytes());
        SignedSnapshot {
            snapshot: text,
            key_id: self.key.key_id().to_string(),
            signature: B64.encode(signature),
        }
    }
}

impl Observer for AgentHub {
    fn notice(&self, notice: &Notice) {
        let host = match notice {
            Notice::GrantStarted(g) | Notice::GrantExtended(g) | Notice::GrantEnded(g) => &g.target,
            Notice::BreakGlass { grant, .. } => &grant.target,
            Notice::DelegationsChanged | Notice::LocksChanged => {
                self.all_changed();
                return;
            }
            _ => return,
        };
        // Nobody listening is fine: agents fetch a snapshot when they connect.
        let _ = self.changes.send(Some(host.clone()));
    }
}
