//! What a host agent reports: each exec it decided, what happens inside a session (an
//! exec with `intercept`, a file written under a watched path), in the form the server
//! records them (`exec.allowed`/`exec.denied`, `session.exec`, `session.file_changed`,
//! `host.login`).

use jiff::Timestamp;
use uuid::Uuid;

/// What an agent decided about one exec attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ExecVerdict {
    Allowed,
    Denied,
}

/// One report from an agent: an exec decision it made, possibly while offline.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AgentReport {
    /// Chosen by the agent; a report sent twice is accepted once.
    pub id: Uuid,
    pub at: Timestamp,
    /// The person, as the host's kernel identified them.
    pub user: String,
    pub verdict: ExecVerdict,
    pub grant: Option<Uuid>,
    pub session: Option<Uuid>,
    /// A delegated task run: the task and the delegation that allowed it.
    #[serde(default)]
    pub task: Option<String>,
    #[serde(default)]
    pub delegation: Option<Uuid>,
    /// The command as run; cut to [`super::REPORT_ARGV_BYTES`] by the agent when longer (then
    /// `argv_sha256` identifies the whole of it).
    pub argv: Vec<String>,
    pub binary_sha256: Option<String>,
    /// Why it was refused, or the policy that allowed it.
    pub reason: Option<String>,
    /// Set when `argv` was cut: hex SHA-256 of the whole argv (each argument followed by a
    /// NUL byte) and its size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub argv_sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub argv_bytes: Option<u64>,
    /// For refusals aggregated by the agent: how many there were (from `at` to `last_at`);
    /// `argv` and `reason` are those of the last one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_at: Option<Timestamp>,
    /// Set for an exec inside a session (a role with `intercept`): recorded as
    /// `session.exec` rather than `exec.allowed`/`exec.denied`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<SessionExec>,
    /// Set for a file a session wrote under its role's watched paths: recorded as
    /// `session.file_changed` (the verdict is `allowed`, the argv empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<SessionFile>,
    /// How the decision was asked for when not through `pedm exec`: `sudo` (the sudo plugin:
    /// recorded as `exec.allowed`/`exec.denied` with `via`) or `login` (the PAM module: a
    /// login to the host, recorded as `host.login`; `argv` is the PAM service and the remote
    /// host when known).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<ReportVia>,
}

/// Who asked the agent, when not `pedm exec` or `pedm shell`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ReportVia {
    Sudo,
    Login,
}

impl AgentReport {
    /// A report of something in session `session` under `grant` (an exec inside it, a file
    /// it wrote), with nothing else set.
    pub fn in_session(
        user: &str,
        grant: Uuid,
        session: Uuid,
        verdict: ExecVerdict,
        argv: Vec<String>,
    ) -> AgentReport {
        AgentReport {
            id: Uuid::now_v7(),
            at: Timestamp::now(),
            user: user.to_string(),
            verdict,
            grant: Some(grant),
            session: Some(session),
            task: None,
            delegation: None,
            argv,
            binary_sha256: None,
            reason: None,
            argv_sha256: None,
            argv_bytes: None,
            count: None,
            last_at: None,
            exec: None,
            file: None,
            via: None,
        }
    }
}

/// A file a session changed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SessionFile {
    pub path: String,
    /// `written` (written and closed), `deleted`, `dir_removed` or `renamed` (to `to`).
    pub op: String,
    /// The process that changed it.
    pub pid: i32,
    /// Where a renamed file went.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
}

/// The process side of a `session.exec` report.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SessionExec {
    pub pid: i32,
    pub ppid: i32,
    /// The caller's working directory.
    pub cwd: String,
    /// The program as the caller named it, made absolute.
    pub path: String,
    /// The program the agent resolved it to (symlinks followed, as policy saw it:
    /// `resource.path`); absent when it could not be resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved: Option<String>,
}
