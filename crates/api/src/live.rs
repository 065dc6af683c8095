//! Sessions watched as they happen: the agent streams each session's recording events to
//! pedmd (`POST /agent/sessions/{id}/live`), people list live sessions and watch one
//! (`GET /sessions/live`, `GET /sessions/{id}/live` as server-sent events).
//!
//! The stream is the recording's own asciicast v2 event lines (`[time, "o", "..."]`), so a
//! watcher sees exactly what is recorded (input only where the role records it, never with
//! echo off), plus `[time, "x", {...}]` lines for the commands an intercepting session runs.
//! The recording on the host stays the source of truth: a stream may miss events (a slow or
//! unreachable server never holds up the session), and says how many it missed.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The first line of an agent's live stream: what the session is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveHeader {
    /// The grant it runs under; `None` for a delegated task.
    pub grant_id: Option<Uuid>,
    #[serde(default)]
    pub delegation_id: Option<Uuid>,
    pub user: String,
    pub run_as: String,
    pub argv: Vec<String>,
    pub started_at: Timestamp,
    /// The terminal size (80x24 for piped sessions).
    pub width: u32,
    pub height: u32,
}

/// How often an agent sends an empty line on a quiet stream (the server ends a stream idle
/// for two minutes).
pub const KEEPALIVE: std::time::Duration = std::time::Duration::from_secs(30);

/// The longest event line a live stream may carry; longer output arrives in several events.
pub const MAX_LIVE_LINE: usize = 1 << 20;

/// A session streaming to this server now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LiveSession {
    pub id: Uuid,
    pub host: String,
    pub grant_id: Option<Uuid>,
    pub delegation_id: Option<Uuid>,
    pub user: String,
    pub run_as: String,
    pub argv: Vec<String>,
    #[schema(value_type = String, format = DateTime)]
    pub started_at: Timestamp,
    pub width: u32,
    pub height: u32,
    /// Event bytes received so far.
    pub streamed_bytes: u64,
    /// People watching now.
    pub watchers: u32,
}

/// What a watcher receives: server-sent events named `header` (a [`LiveSession`]), `event`
/// (one asciicast event line, as a JSON array), `gap` (`{"missed": n}`: events this watcher
/// or the stream lost) and `end` (`{"reason": "..."}`).
pub const WATCH_EVENTS: &[&str] = &["header", "event", "gap", "end"];
