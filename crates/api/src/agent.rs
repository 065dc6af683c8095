//! What the server and a host's `pedm-agent` exchange over HTTP.
//!
//! The server hands an agent a [`SignedSnapshot`]: every grant the host enforces, the policy in
//! force and the time it was issued, signed with the server's agent key (Ed25519). The agent
//! verifies it with the public key it was given at registration and keeps it on disk, so it
//! can decide, and expire grants, while the server is unreachable. A newer snapshot replaces an
//! older one; a grant missing from it has ended, and its sessions are ended.

use jiff::Timestamp;
use pedm_core::model::{PolicySource, SessionLimits};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use uuid::Uuid;

pub use pedm_core::model::{HeldExec, StepUp};
pub use pedm_core::service::{
    AgentReport, ExecVerdict, REPORT_ARGV_BYTES, ReportVia, SessionExec, SessionFile, Undelivered,
};

/// The signing context of snapshots (see `pedm_audit::SigningKey::sign_for`).
pub const SNAPSHOT_CONTEXT: &str = "pedm-agent-snapshot-v1";

/// The content of a snapshot: what the agent enforces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The host it is for: an agent refuses a snapshot for another host.
    pub host: String,
    pub issued_at: Timestamp,
    /// Snapshots only move forward: an agent refuses one with a lower `seq` than the one it
    /// holds (the server's audit log size when it read the state, so a clock stepping back
    /// changes nothing). 0 from servers before it existed: then `issued_at` orders them.
    #[serde(default)]
    pub seq: i64,
    pub target_kind: String,
    pub target_labels: BTreeMap<String, String>,
    pub grants: Vec<HostGrant>,
    pub policy: Option<PolicyBundle>,
    /// The tasks that apply to the host, with the delegations that let people run them.
    #[serde(default)]
    pub tasks: Vec<pedm_core::delegation::HostTask>,
    /// Sessions an admin killed (`pedm session kill`): the agent running one ends it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub killed_sessions: Vec<KilledSession>,
}

/// A session to end, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KilledSession {
    pub id: uuid::Uuid,
    pub reason: String,
}

/// An active grant on the host, with what a local policy decision needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostGrant {
    pub id: Uuid,
    pub request_id: Uuid,
    pub user: String,
    pub groups: Vec<String>,
    pub admin: bool,
    /// The holder is an external account (`principal.external`), and its sponsor.
    #[serde(default)]
    pub external: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sponsor: Option<String>,
    pub role: String,
    /// The account commands run as; `None` means root.
    pub run_as: Option<String>,
    pub role_auto_approve: bool,
    /// The role's `noexec`: the session's program may not start another one.
    #[serde(default)]
    pub noexec: bool,
    /// The role's `allow_setuid`: without it sessions run with `no_new_privs`.
    #[serde(default)]
    pub allow_setuid: bool,
    /// The role's `record_input`: what the user types is recorded (never with echo off).
    #[serde(default)]
    pub record_input: bool,
    /// The role's `intercept`: every exec in the session is decided and recorded.
    #[serde(default)]
    pub intercept: bool,
    /// The role's resource limits on everything the grant's sessions run.
    #[serde(default, skip_serializing_if = "SessionLimits::is_none")]
    pub limits: SessionLimits,
    /// The role's watched paths: files the grant's sessions write under them are reported.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub watch_paths: Vec<String>,
    pub starts_at: Timestamp,
    pub expires_at: Timestamp,
}

/// The policies in force, for the agent's own engine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyBundle {
    pub version: i64,
    pub sources: Vec<PolicySource>,
    /// The engine's default time zone (policies may name their own with `@timezone`).
    pub timezone: Option<String>,
}

/// A snapshot as sent and stored: the exact JSON text that was signed, and the signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SignedSnapshot {
    /// JSON of a [`Snapshot`]; verified as these bytes, then parsed.
    pub snapshot: String,
    pub key_id: String,
    /// Base64 (standard) of the 64-byte Ed25519 signature.
    pub signature: String,
}

/// What an agent's event stream carries.
#[derive(Debug, Clone)]
pub enum AgentEvent {
    /// The grants and tasks to enforce now.
    Snapshot(SignedSnapshot),
    /// A task to run now.
    Task(SignedTaskDispatch),
}

/// Signing context of a [`TaskDispatch`].
pub const TASK_DISPATCH_CONTEXT: &str = "pedm-agent-task-dispatch-v1";

/// A delegated task someone asked pedmd (the console) to run on this host: the `task` event
/// of `/agent/events`, signed like a snapshot. The agent checks it as it checks a local run
/// (the delegation in its snapshot, the parameters against the definition), runs it as the
/// task's account with its output recorded, and answers `POST /agent/task-runs/{id}`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskDispatch {
    /// The run's id (the agent runs each once).
    pub id: Uuid,
    /// The host it is for: an agent refuses one for another host.
    pub host: String,
    /// Who asked, as pedmd authenticated them.
    pub user: String,
    pub task: String,
    /// May hold secret values: never log them.
    pub params: BTreeMap<String, String>,
    /// Not run after this (a dispatch delayed or replayed is refused).
    pub expires_at: Timestamp,
}

impl std::fmt::Debug for TaskDispatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskDispatch")
            .field("id", &self.id)
            .field("host", &self.host)
            .field("user", &self.user)
            .field("task", &self.task)
            .field("params", &"<not shown>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// A [`TaskDispatch`] as sent: the exact JSON text that was signed, and the signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedTaskDispatch {
    pub dispatch: String,
    pub key_id: String,
    /// Base64 (standard) of the 64-byte Ed25519 signature.
    pub signature: String,
}

/// Most output a dispatched run reports back (its last bytes; the recording has all of it).
pub const TASK_OUTPUT_BYTES: usize = 64 * 1024;

/// `POST /api/v1/agent/task-runs/{id}`: how a dispatched task run ended on the host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskRunResult {
    /// The recorded session (uploaded like any other); `None` when it did not run.
    #[serde(default)]
    pub session: Option<Uuid>,
    #[serde(default)]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub signal: Option<i32>,
    /// Why the agent did not run it.
    #[serde(default)]
    pub refused: Option<String>,
    /// Its output (standard output and error as they came), the last
    /// [`TASK_OUTPUT_BYTES`] of it, as UTF-8 (invalid bytes replaced).
    #[serde(default)]
    pub output: String,
}

/// `POST /api/v1/hosts/{name}/register`: the host token, shown once.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HostRegistered {
    pub host: String,
    pub token: String,
    pub token_id: String,
    /// The key the agent verifies snapshots with (`ed25519:<base64>`).
    pub server_key: String,
    /// An earlier token of this host was replaced and no longer works.
    pub rotated: bool,
    /// Over HTTPS the token only enrolls the agent (once), until then.
    #[serde(default)]
    pub enroll_expires_at: Option<Timestamp>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HostView {
    pub name: String,
    pub token_id: String,
    pub registered_at: Timestamp,
    pub registered_by: String,
    pub last_seen_at: Option<Timestamp>,
    /// Over HTTPS: until when the registration token may enroll the agent.
    #[serde(default)]
    pub enroll_expires_at: Option<Timestamp>,
    #[serde(default)]
    pub enrolled_at: Option<Timestamp>,
    #[serde(default)]
    pub revoked_at: Option<Timestamp>,
    /// End of the newest client certificate issued to the agent.
    #[serde(default)]
    pub cert_not_after: Option<Timestamp>,
}

impl From<pedm_core::host::Host> for HostView {
    fn from(h: pedm_core::host::Host) -> Self {
        HostView {
            name: h.name,
            token_id: h.token_id,
            registered_at: h.registered_at,
            registered_by: h.registered_by,
            last_seen_at: h.last_seen_at,
            enroll_expires_at: h.enroll_expires_at,
            enrolled_at: h.enrolled_at,
            revoked_at: h.revoked_at,
            cert_not_after: h.cert_not_after,
        }
    }
}

/// `POST /api/v1/agent/enroll` and `/agent/renew`: a PEM certificate signing request for the
/// key the agent made (the key never leaves the host).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentCsr {
    pub csr: String,
}

/// A client certificate issued to an agent.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AgentCertificate {
    /// PEM.
    pub certificate: String,
    /// pedmd's client CA (PEM).
    pub ca: String,
    /// Hex.
    pub serial: String,
    pub not_after: Timestamp,
}

/// `POST /api/v1/agent/reports`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AgentReports {
    pub reports: Vec<AgentReport>,
}

/// `POST /api/v1/agent/undelivered`: records the agent holds that the server refused.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UndeliveredItems {
    pub items: Vec<Undelivered>,
}

/// Cuts `argv` to at most `max` bytes (each argument counted with one separator byte): whole arguments while they fit, then a part of the next one, cut on a character
/// boundary. Returns the argv unchanged with `None`, or the cut one with the hex SHA-256 of
/// the whole (each argument followed by a NUL byte) and its size.
pub fn cut_argv(argv: &[String], max: usize) -> (Vec<String>, Option<(String, u64)>) {
    use sha2::Digest;
    let total: usize = argv.iter().map(|a| a.len() + 1).sum();
    if total <= max {
        return (argv.to_vec(), None);
    }
    let mut hasher = sha2::Sha256::new();
    for a in argv {
        hasher.update(a.as_bytes());
        hasher.update([0u8]);
    }
    let mut out = vec![];
    let mut room = max;
    for a in argv {
        if a.len() < room {
            out.push(a.clone());
            room -= a.len() + 1;
            continue;
        }
        let mut end = room.saturating_sub(1);
        while end > 0 && !a.is_char_boundary(end) {
            end -= 1;
        }
        if end > 0 {
            out.push(a[..end].to_string());
        }
        break;
    }
    (out, Some((hex::encode(hasher.finalize()), total as u64)))
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReportsAccepted {
    pub accepted: usize,
    /// Reports accepted by an earlier call (sent again after a lost answer).
    pub duplicates: usize,
}

/// Header of `PUT /api/v1/agent/sessions/{id}`: base64url (no padding) of the JSON of a
/// [`SessionUpload`]; the body is the asciicast v2 recording.
pub const SESSION_HEADER: &str = "x-pedm-session";

/// What an agent says about a session it uploads; the server checks the recording's size and
/// SHA-256 against it and the grant against the host and user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionUpload {
    /// The grant it ran under; `None` for a delegated task.
    pub grant_id: Option<Uuid>,
    /// The delegation a task ran under, and the task with its parameters (secrets redacted).
    #[serde(default)]
    pub delegation_id: Option<Uuid>,
    #[serde(default)]
    pub task: Option<String>,
    #[serde(default)]
    pub params: Option<BTreeMap<String, String>>,
    pub user: String,
    pub run_as: String,
    pub argv: Vec<String>,
    pub binary_sha256: Option<String>,
    pub shell: bool,
    pub started_at: Timestamp,
    pub ended_at: Timestamp,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub ended_by: Option<String>,
    pub recording_sha256: String,
    pub recording_bytes: u64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SessionStored {
    /// False when the same session had been uploaded before.
    pub new: bool,
}
