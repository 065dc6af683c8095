//! Console (browser) sessions. A session is backed by a pedm token minted at sign-in: the
//! token's expiry is the session's absolute timeout and revoking the token ends the session.
//! The session row adds what a browser session needs on top: when it was last used (the idle
//! timeout is checked against it on every request) and when it was signed out.

use jiff::Timestamp;

/// How the person proved who they are when the session began.
pub const METHOD_TOKEN: &str = "token";
pub const METHOD_SSO: &str = "sso";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebSession {
    /// The token that backs it (the browser's cookie holds that token).
    pub token_id: String,
    pub user: String,
    /// [`METHOD_TOKEN`] or [`METHOD_SSO`].
    pub method: String,
    /// The provider's name for an SSO sign-in.
    pub provider: Option<String>,
    /// Where the sign-in came from (the client's address).
    pub source: Option<String>,
    pub created_at: Timestamp,
    /// Updated at most once per [`TOUCH_INTERVAL_SECS`] (one write per minute, not one per
    /// page view).
    pub last_seen_at: Timestamp,
    pub ended_at: Option<Timestamp>,
}

/// How stale `last_seen_at` may be before a request writes it again.
pub const TOUCH_INTERVAL_SECS: i64 = 30;

#[derive(Debug, Clone)]
pub enum WebSessionWrite {
    /// AlreadyExists if the token backs a session already; NotFound if the token is absent.
    Insert(WebSession),
    /// Sets `last_seen_at`; no-op if absent or ended.
    Touch { token_id: String, at: Timestamp },
    /// Sets `ended_at`; Conflict if absent or ended already (a session ends once).
    End { token_id: String, at: Timestamp },
}
