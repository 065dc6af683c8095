//! Recently authenticated tokens, so a request does not read the token, its user and the user's
//! groups from the store every time.
//!
//! What may be cached and for how long:
//! * only tokens that authenticated successfully (every failure takes the full path and is
//!   recorded);
//! * the presented secret is checked against the cached hash on every use, and expiry against
//!   the current time, so neither is ever cached as "ok";
//! * revocation, disabling a user, changing admin rights or group membership **through this
//!   instance** empties the cache before the call that made the change returns (see
//!   [`AuthCache::invalidate`]): the next request sees the change at once. An authentication
//!   that read the store before such a change never caches what it read (a generation number
//!   guards the insert).
//! * changes made by **another instance** (several `pedmd` on one PostgreSQL database) or
//!   directly in the database are seen once the entry is older than [`TTL`]: a token revoked
//!   elsewhere keeps working here for at most that long.

use crate::model::{TokenRecord, User};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long an entry is trusted without reading the store again.
pub const TTL: Duration = Duration::from_secs(1);
/// Entries kept at most; past this the cache starts over (it refills in one request per token).
const MAX_ENTRIES: usize = 10_000;

#[derive(Clone)]
pub(crate) struct Authenticated {
    pub(crate) record: TokenRecord,
    pub(crate) user: User,
    pub(crate) groups: Vec<String>,
    /// The user's external-account record, if any (its expiry is checked at every hit).
    pub(crate) external: Option<crate::external::ExternalAccount>,
}

struct Entry {
    value: Authenticated,
    fetched: Instant,
}

#[derive(Default)]
struct Inner {
    /// Bumped by every invalidation.
    generation: u64,
    entries: HashMap<String, Entry>,
}

#[derive(Default)]
pub(crate) struct AuthCache {
    inner: Mutex<Inner>,
}

impl AuthCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The fresh entry for token `id`, if any.
    pub(crate) fn get(&self, id: &str) -> Option<Authenticated> {
        let inner = self.lock();
        let e = inner.entries.get(id)?;
        (e.fetched.elapsed() < TTL).then(|| e.value.clone())
    }

    /// To be read before the store is: [`Self::insert`] keeps its value only if no
    /// invalidation happened since.
    pub(crate) fn generation(&self) -> u64 {
        self.lock().generation
    }

    pub(crate) fn insert(&self, generation: u64, value: Authenticated) {
        let mut inner = self.lock();
        if inner.generation != generation {
            return;
        }
        if inner.entries.len() >= MAX_ENTRIES {
            inner.entries.clear();
        }
        inner.entries.insert(
            value.record.id.clone(),
            Entry {
                value,
                fetched: Instant::now(),
            },
        );
    }

    /// Forgets everything: called after every change to users, groups or tokens.
    pub(crate) fn invalidate(&self) {
        let mut inner = self.lock();
        inner.generation += 1;
        inner.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(id: &str) -> Authenticated {
        let now = jiff::Timestamp::now();
        Authenticated {
            record: TokenRecord {
                id: id.into(),
                user: "alice".into(),
                description: None,
                secret_hash: [0; 32],
                created_at: now,
                expires_at: None,
                revoked_at: None,
                workload: None,
                agent: false,
            },
            user: User {
                name: "alice".into(),
                display_name: None,
                email: None,
                admin: false,
                disabled: false,
                created_at: now,
            },
            groups: vec!["ops".into()],
            external: None,
        }
    }

    #[test]
    fn invalidation_forgets_everything() {
        let c = AuthCache::default();
        c.insert(c.generation(), value("a"));
        assert!(c.get("a").is_some());
        assert!(c.get("b").is_none());
        c.invalidate();
        assert!(c.get("a").is_none());
    }

    #[test]
    fn what_was_read_before_an_invalidation_is_not_kept() {
        let c = AuthCache::default();
        // An authentication reads the generation, then the store ...
        let g = c.generation();
        // ... while a revocation commits and invalidates ...
        c.invalidate();
        // ... so what it read (possibly from before the revocation) is not cached.
        c.insert(g, value("a"));
        assert!(c.get("a").is_none());
        c.insert(c.generation(), value("a"));
        assert!(c.get("a").is_some());
    }

    #[test]
    fn the_cache_stays_bounded() {
        let c = AuthCache::default();
        for i in 0..MAX_ENTRIES + 5 {
            c.insert(c.generation(), value(&i.to_string()));
        }
        assert!(c.lock().entries.len() <= MAX_ENTRIES);
    }
}
