//! Locks: an admin stops a person or a host from using privilege for a while, at once (a
//! compromised account, a host under investigation). While a lock holds, the person's or the
//! host's grants are left out of every agent's snapshot (so their live sessions end and new
//! execs are refused), and new requests by the person or for the host are refused. Grants are
//! not revoked: when the lock is lifted or runs out, those still valid work again.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// What a lock stops.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum LockKind {
    /// A person: their requests, and their grants on every host.
    User,
    /// A host target: requests for it, and every grant on it.
    Host,
    /// One live host session (`pedm session kill`): its agent ends it. The subject is the
    /// session id.
    Session,
}

impl LockKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            LockKind::User => "user",
            LockKind::Host => "host",
            LockKind::Session => "session",
        }
    }

    pub fn parse(s: &str) -> Option<LockKind> {
        match s {
            "user" => Some(LockKind::User),
            "host" => Some(LockKind::Host),
            "session" => Some(LockKind::Session),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Lock {
    pub id: Uuid,
    pub kind: LockKind,
    /// The user or host name.
    pub subject: String,
    pub reason: String,
    pub created_by: String,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    /// Lifted before it ran out.
    pub lifted_at: Option<Timestamp>,
    pub lifted_by: Option<String>,
}

impl Lock {
    /// Why what it stops is refused, for the one refused.
    pub fn refusal(&self) -> String {
        format!(
            "{} {} is locked until {} ({}): lock {}",
            self.kind.as_str(),
            self.subject,
            self.expires_at,
            self.reason,
            self.id
        )
    }

    /// Whether the lock holds at `now`.
    pub fn holds(&self, now: Timestamp) -> bool {
        self.lifted_at.is_none() && now < self.expires_at
    }

    /// Whether it stops `kind` named `name` (names compare without regard to case).
    pub fn stops(&self, kind: &LockKind, name: &str, now: Timestamp) -> bool {
        self.kind == *kind && self.subject.eq_ignore_ascii_case(name) && self.holds(now)
    }
}

/// Row changes about locks (see [`crate::store::Write::Lock`]).
#[derive(Debug, Clone)]
pub enum LockWrite {
    /// Fails with AlreadyExists if the id is taken.
    Insert(Lock),
    /// Fails with Conflict if it is lifted already, NotFound if absent.
    Lift { id: Uuid, at: Timestamp, by: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_holds_until_it_runs_out_or_is_lifted() {
        let t = |s: i64| Timestamp::from_second(s).unwrap();
        let mut l = Lock {
            id: Uuid::nil(),
            kind: LockKind::User,
            subject: "Bob".into(),
            reason: "phished".into(),
            created_by: "admin".into(),
            created_at: t(0),
            expires_at: t(100),
            lifted_at: None,
            lifted_by: None,
        };
        assert!(l.stops(&LockKind::User, "bob", t(99)));
        assert!(!l.stops(&LockKind::Host, "bob", t(99)));
        assert!(!l.holds(t(100)));
        l.lifted_at = Some(t(50));
        assert!(!l.holds(t(60)));
    }
}
