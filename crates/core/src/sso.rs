//! Single sign-on: identities an OpenID provider vouched for, the pedm sessions they opened,
//! group memberships that came from the provider, and login flows in progress.
//!
//! The core knows nothing of OIDC on the wire: the server verifies an ID token and hands the
//! core a [`VerifiedIdentity`]; the core creates the user just in time, replaces the
//! provider-sourced group memberships, mints the session token and records it all.

use jiff::Timestamp;

/// What a verified ID token says about its subject (after every check the server makes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedIdentity {
    /// The configured provider's name (`[[auth.oidc]] name`).
    pub provider: String,
    pub issuer: String,
    pub subject: String,
    /// The pedm user name the configured claim gave (already a valid name).
    pub user: String,
    pub email: Option<String>,
    /// Group names from the configured claim (already valid names, deduplicated, sorted).
    pub groups: Vec<String>,
}

/// A pedm session opened by an SSO login: its token, and the provider's refresh token, which
/// never leaves the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SsoSession {
    pub token_id: String,
    pub provider: String,
    pub issuer: String,
    pub subject: String,
    /// Never returned to a client, never logged, never in an audit event.
    pub refresh_token: Option<String>,
    pub created_at: Timestamp,
}

/// A login in progress, kept between its start and its finish (single use).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SsoFlow {
    /// SHA-256 (hex) of the flow's handle: the `state` of an authorisation-code flow, or the
    /// random handle given to the CLI for a device flow. The handle itself is not stored.
    pub id: String,
    pub provider: String,
    /// `code` or `device`.
    pub kind: String,
    /// The nonce sent to the provider (code flow).
    pub nonce: Option<String>,
    /// The loopback redirect the code flow was started with.
    pub redirect_uri: Option<String>,
    /// The provider's device code (device flow). Server-side only.
    pub device_code: Option<String>,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
}

/// Row changes of SSO state.
#[derive(Debug, Clone)]
pub enum SsoWrite {
    /// Links (issuer, subject) to a pedm user; AlreadyExists if that pair is linked already.
    LinkIdentity {
        issuer: String,
        subject: String,
        user: String,
    },
    /// Marks a membership as sourced from the provider (the membership itself is an ordinary
    /// `AddGroupMember`); no-op if marked already.
    MarkIdpGroup { user: String, group: String },
    /// Unmarks it; no-op if not marked.
    UnmarkIdpGroup { user: String, group: String },
    /// NotFound if the token does not exist.
    InsertSession(SsoSession),
    /// No-op if absent.
    DeleteSession { token_id: String },
    /// AlreadyExists if the id is taken.
    InsertFlow(SsoFlow),
    /// Deletes a flow; Conflict if it is not there (so a flow finishes once).
    TakeFlow { id: String },
    /// Deletes every flow that expired before `now` (started, never finished).
    PurgeFlows { now: Timestamp },
}
