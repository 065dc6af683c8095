//! External accounts: vendors and contractors let in for a bounded time.
//!
//! An external account is an ordinary [`crate::model::User`] with an
//! [`ExternalAccount`] record beside it (its own table, so nothing about plain users
//! changes): the *sponsor* (an enabled, non-external user who answers for them) and the
//! *expiry*. After the expiry the account authenticates no more; the scheduler ends its live
//! grants (`user.expired`, once) and tells the sponsor beforehand (`user.expiry_notice`,
//! once per expiry). The sponsor or an admin may move the expiry (`user.extended`), within
//! the server's maximum.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// The external part of a user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ExternalAccount {
    pub user: String,
    /// Who answers for the account: an enabled user who is not external.
    pub sponsor: String,
    /// The account is refused everything from this moment.
    pub expires_at: Timestamp,
    pub created_at: Timestamp,
    pub created_by: String,
    /// When the sponsor was told about `expires_at` (cleared by an extension).
    pub notified_at: Option<Timestamp>,
    /// When the scheduler recorded the expiry (cleared by an extension).
    pub expired_at: Option<Timestamp>,
}

impl ExternalAccount {
    /// Whether the account may act at `now`.
    pub fn live(&self, now: Timestamp) -> bool {
        now < self.expires_at
    }
}

/// Row changes about external accounts (see [`crate::store::Write::External`]).
#[derive(Debug, Clone)]
pub enum ExternalWrite {
    /// Fails with AlreadyExists if the user has a record, NotFound if the user is absent.
    Insert(ExternalAccount),
    /// Moves the expiry and clears `notified_at` and `expired_at`; fails with Conflict
    /// unless the stored expiry is still `seen` (two extensions at once: one wins).
    Extend {
        user: String,
        seen: Timestamp,
        expires_at: Timestamp,
    },
    /// Records that the sponsor was told; fails with Conflict unless the expiry is still
    /// `expires_at` and nobody recorded it yet (told once per expiry).
    Notified {
        user: String,
        expires_at: Timestamp,
        at: Timestamp,
    },
    /// Records the expiry; fails with Conflict unless the expiry is still `expires_at` and
    /// nobody recorded it yet (expired once).
    Expired {
        user: String,
        expires_at: Timestamp,
        at: Timestamp,
    },
}
