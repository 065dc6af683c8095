//! Hosts that run `pedm-agent`, and the sessions their agents record.
//!
//! A host is a target of kind `host` whose agent holds a host token (`pedm host register`).
//! The agent authenticates with it to fetch the signed snapshot of its grants, to report
//! exec decisions and to upload session recordings. Everything an agent reports carries an id
//! the agent chose, so a report sent twice (after a lost answer) is accepted once.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A registered host agent. The token's secret is never stored, only its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Host {
    /// The name of its target (kind `host`).
    pub name: String,
    pub token_id: String,
    #[serde(skip)]
    pub token_hash: [u8; 32],
    pub registered_at: Timestamp,
    pub registered_by: String,
    /// When the agent last talked to the server.
    pub last_seen_at: Option<Timestamp>,
    /// Until when the registration token may enroll the agent for a client certificate
    /// (once); `None`: it never expires (plain-HTTP servers, where the token is the
    /// agent's credential).
    #[serde(default)]
    pub enroll_expires_at: Option<Timestamp>,
    /// When the agent enrolled (the registration token is spent then).
    #[serde(default)]
    pub enrolled_at: Option<Timestamp>,
    /// When an admin revoked the host: its certificates are refused at the handshake, its
    /// token everywhere, until it is registered again.
    #[serde(default)]
    pub revoked_at: Option<Timestamp>,
    /// Serial (hex) and end of the newest client certificate issued to the agent.
    #[serde(default)]
    pub cert_serial: Option<String>,
    #[serde(default)]
    pub cert_not_after: Option<Timestamp>,
}

/// One recorded session on a host: a command or shell run under a grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Session {
    /// Chosen by the agent when the session started.
    pub id: Uuid,
    /// The grant it ran under; `None` for a delegated task.
    pub grant_id: Option<Uuid>,
    /// The delegation a task ran under.
    pub delegation_id: Option<Uuid>,
    /// The task and its parameters (secret ones redacted), for a delegated task.
    pub task: Option<String>,
    pub params: Option<std::collections::BTreeMap<String, String>>,
    pub host: String,
    /// The person, as the host's kernel identified them (peer credentials).
    pub user: String,
    pub run_as: String,
    /// The command as run: the resolved absolute path, then the arguments.
    pub argv: Vec<String>,
    /// SHA-256 of the binary that ran (hex).
    pub binary_sha256: Option<String>,
    pub shell: bool,
    pub started_at: Timestamp,
    pub ended_at: Timestamp,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// Why the agent ended it ("grant revoked", "grant expired"), when it did.
    pub ended_by: Option<String>,
    /// SHA-256 (hex) and size of the asciicast v2 recording.
    pub recording_sha256: String,
    pub recording_bytes: i64,
    pub uploaded_at: Timestamp,
    /// How it reached pedm when not from pedm-agent: `sudo_log`, sudo's own I/O log sent
    /// by a host's stock sudo to pedmd's log server (the host's sudo decided; `grant_id` is
    /// the live grant that explains it, if any).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<SessionVia>,
}

/// Where a session recording came from, when not from pedm-agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum SessionVia {
    SudoLog,
}

impl SessionVia {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionVia::SudoLog => "sudo_log",
        }
    }

    pub fn parse(s: &str) -> Option<SessionVia> {
        match s {
            "sudo_log" => Some(SessionVia::SudoLog),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct SessionFilter {
    pub user: Option<String>,
    pub host: Option<String>,
    pub grant: Option<Uuid>,
    /// Only sessions started at or after this moment, and before `until`.
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
    pub limit: Option<u32>,
}

/// Row changes about hosts and their reports (see [`crate::store::Write::Host`]).
#[derive(Debug, Clone)]
pub enum HostWrite {
    /// Registers a host or replaces its token (the old one stops working at once).
    /// Fails with NotFound if there is no target of that name.
    Register(Host),
    /// Records contact from the agent. Fails with NotFound if the host is absent.
    Seen { name: String, at: Timestamp },
    /// Spends the registration token `token_id` for a first client certificate. Fails with
    /// Conflict unless the host is registered with that token, not enrolled yet and not
    /// revoked; NotFound if absent.
    Enroll {
        name: String,
        token_id: String,
        at: Timestamp,
        serial: String,
        not_after: Timestamp,
    },
    /// Records a renewed client certificate. Fails with Conflict if the host is revoked or
    /// not enrolled, NotFound if absent.
    Certify {
        name: String,
        serial: String,
        not_after: Timestamp,
    },
    /// Revokes the host. Fails with Conflict if it is revoked already, NotFound if absent.
    Revoke { name: String, at: Timestamp },
    /// Remembers a report id; fails with AlreadyExists if it was accepted before.
    Receipt {
        id: Uuid,
        host: String,
        at: Timestamp,
    },
    /// Fails with AlreadyExists if the session id is taken, NotFound if the grant is absent.
    InsertSession(Box<Session>),
}
