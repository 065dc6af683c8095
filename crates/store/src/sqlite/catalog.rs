//! Targets and roles read from this SQLite store, kept in memory: every request reads its
//! target and role, and a read is a round trip to a connection thread.
//!
//! Only rows that were found are kept. Targets and roles are only ever inserted (no write
//! changes or deletes one), so a kept row cannot go stale; should such a write appear, any
//! changeset with a write not known to leave them alone empties the cache when it commits
//! ([`may_change`], [`Catalog::invalidate`]), and a read that began before that never keeps what it read
//! (generation check). Not used on PostgreSQL, where other instances write too.

use pedm_core::model::{Role, Target};
use pedm_core::store::Write;
use std::collections::HashMap;
use std::sync::Mutex;

/// Rows kept at most (each map); past this the cache starts over.
const MAX_ENTRIES: usize = 10_000;

#[derive(Default)]
struct Inner {
    generation: u64,
    targets: HashMap<String, Target>,
    roles: HashMap<(String, String), Role>,
}

#[derive(Default)]
pub(crate) struct Catalog {
    inner: Mutex<Inner>,
}

impl Catalog {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// To be read before the store is, and handed to `keep_*`.
    pub(crate) fn generation(&self) -> u64 {
        self.lock().generation
    }

    pub(crate) fn target(&self, name: &str) -> Option<Target> {
        self.lock().targets.get(name).cloned()
    }

    pub(crate) fn role(&self, target: &str, name: &str) -> Option<Role> {
        self.lock()
            .roles
            .get(&(target.to_string(), name.to_string()))
            .cloned()
    }

    pub(crate) fn keep_target(&self, generation: u64, t: &Target) {
        let mut inner = self.lock();
        if inner.generation == generation {
            if inner.targets.len() >= MAX_ENTRIES {
                inner.targets.clear();
            }
            inner.targets.insert(t.name.clone(), t.clone());
        }
    }

    pub(crate) fn keep_role(&self, generation: u64, r: &Role) {
        let mut inner = self.lock();
        if inner.generation == generation {
            if inner.roles.len() >= MAX_ENTRIES {
                inner.roles.clear();
            }
            inner
                .roles
                .insert((r.target.clone(), r.name.clone()), r.clone());
        }
    }

    /// Forgets everything (after a commit of writes that [`may_change`] a kept row).
    pub(crate) fn invalidate(&self) {
        let mut inner = self.lock();
        inner.generation += 1;
        inner.targets.clear();
        inner.roles.clear();
    }
}

/// Whether committing `writes` may change or delete a stored target or role: unless every one
/// is known to leave them alone (inserting one changes nothing that is kept: only found rows
/// are).
pub(crate) fn may_change(writes: &[Write]) -> bool {
    !writes.iter().all(|w| {
        matches!(
            w,
            Write::InsertUser(_)
                | Write::UpdateUser(_)
                | Write::InsertGroup(_)
                | Write::AddGroupMember { .. }
                | Write::RemoveGroupMember { .. }
                | Write::InsertToken(_)
                | Write::RevokeToken { .. }
                | Write::InsertTarget(_)
                | Write::InsertRole(_)
                | Write::InsertRequest(_)
                | Write::UpdateRequest(_)
                | Write::InsertApproval(_)
                | Write::InsertGrant(_)
                | Write::InsertPolicyVersion(_)
                | Write::SetProvisionState { .. }
                | Write::InsertJob(_)
                | Write::UpdateJob { .. }
                | Write::PutGrantSecret { .. }
                | Write::DeleteGrantSecret { .. }
                | Write::Host(_)
                | Write::PolicyReview(_)
                | Write::External(_)
                | Write::Scim(_)
                | Write::Device(_)
                | Write::Lock(_)
                | Write::Sso(_)
                | Write::RequireGrantsActive { .. }
                | Write::EndGrant { .. }
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use pedm_core::model::TargetKind;

    fn target(name: &str) -> Target {
        Target {
            name: name.into(),
            kind: TargetKind::Host,
            description: None,
            labels: Default::default(),
            created_at: jiff::Timestamp::UNIX_EPOCH,
        }
    }

    #[test]
    fn a_read_from_before_an_invalidation_is_not_kept() {
        let c = Catalog::default();
        let g = c.generation();
        c.invalidate();
        c.keep_target(g, &target("web1"));
        assert!(c.target("web1").is_none());
        c.keep_target(c.generation(), &target("web1"));
        assert_eq!(c.target("web1").map(|t| t.name), Some("web1".into()));
        c.invalidate();
        assert!(c.target("web1").is_none());
    }

    #[test]
    fn inserting_targets_changes_nothing_kept() {
        assert!(!may_change(&[]));
        assert!(!may_change(&[Write::InsertTarget(target("db1"))]));
    }
}
