//! Targets and roles read from the store, kept in memory: every request reads its target and
//! role, and a read is a round trip (to SQLite's connection thread, or to PostgreSQL). So are
//! the two guards every request passes: the locks in force (two reads a request) and whether
//! the person is an external account (one more).
//!
//! Only targets and roles that were found are kept; an external-account answer is kept either
//! way (most people are not external accounts). Locks are kept as the set not lifted when read
//! (each is checked against its end on every use). Any changeset with a write not known to
//! leave what is kept alone (a role update, a lock) empties that part when it commits
//! ([`may_change`], [`may_change_guards`]), and a read that began before that never keeps
//! what it read (generation check): this instance's own changes are seen at once. On PostgreSQL other
//! instances write too, and their changes cannot empty this cache: there a row is kept at most
//! a second ([`Catalog::new`] with a time to live), so a role changed through another instance
//! is seen here within 1 s, as the authentication cache sees a revoked token.

use pedm_core::external::ExternalAccount;
use pedm_core::lock::Lock;
use pedm_core::model::{Role, Target};
use pedm_core::store::Write;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Rows kept at most (each map); past this the cache starts over.
const MAX_ENTRIES: usize = 10_000;

#[derive(Default)]
struct Inner {
    generation: u64,
    targets: HashMap<String, (Target, Instant)>,
    roles: HashMap<(String, String), (Role, Instant)>,
    /// Bumped when a write may change locks or external accounts.
    guard_generation: u64,
    unlifted_locks: Option<(Vec<Lock>, Instant)>,
    externals: HashMap<String, (Option<ExternalAccount>, Instant)>,
}

pub(crate) struct Catalog {
    inner: Mutex<Inner>,
    /// How long a row is kept (`None`: until a local write empties the cache).
    ttl: Option<Duration>,
}

impl Catalog {
    pub(crate) fn new(ttl: Option<Duration>) -> Self {
        Catalog {
            inner: Mutex::default(),
            ttl,
        }
    }

    fn fresh(&self, kept_at: &Instant) -> bool {
        self.ttl.is_none_or(|ttl| kept_at.elapsed() < ttl)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// To be read before the store is, and handed to `keep_*`.
    pub(crate) fn generation(&self) -> u64 {
        self.lock().generation
    }

    pub(crate) fn target(&self, name: &str) -> Option<Target> {
        self.lock()
            .targets
            .get(name)
            .filter(|(_, at)| self.fresh(at))
            .map(|(t, _)| t.clone())
    }

    pub(crate) fn role(&self, target: &str, name: &str) -> Option<Role> {
        self.lock()
            .roles
            .get(&(target.to_string(), name.to_string()))
            .filter(|(_, at)| self.fresh(at))
            .map(|(r, _)| r.clone())
    }

    pub(crate) fn keep_target(&self, generation: u64, t: &Target) {
        let mut inner = self.lock();
        if inner.generation == generation {
            if inner.targets.len() >= MAX_ENTRIES {
                inner.targets.clear();
            }
            inner
                .targets
                .insert(t.name.clone(), (t.clone(), Instant::now()));
        }
    }

    pub(crate) fn keep_role(&self, generation: u64, r: &Role) {
        let mut inner = self.lock();
        if inner.generation == generation {
            if inner.roles.len() >= MAX_ENTRIES {
                inner.roles.clear();
            }
            inner.roles.insert(
                (r.target.clone(), r.name.clone()),
                (r.clone(), Instant::now()),
            );
        }
    }

    /// Forgets everything (after a commit of writes that [`may_change`] a kept row).
    pub(crate) fn invalidate(&self) {
        let mut inner = self.lock();
        inner.generation += 1;
        inner.targets.clear();
        inner.roles.clear();
    }

    /// To be read before locks or external accounts are, and handed to `keep_*`.
    pub(crate) fn guard_generation(&self) -> u64 {
        self.lock().guard_generation
    }

    /// The locks not lifted when last read, if that is fresh (whether each is still in force
    /// is for the reader to check against its end).
    pub(crate) fn unlifted_locks(&self) -> Option<Vec<Lock>> {
        self.lock()
            .unlifted_locks
            .as_ref()
            .filter(|(_, at)| self.fresh(at))
            .map(|(l, _)| l.clone())
    }

    pub(crate) fn keep_unlifted_locks(&self, generation: u64, locks: &[Lock]) {
        let mut inner = self.lock();
        if inner.guard_generation == generation {
            inner.unlifted_locks = Some((locks.to_vec(), Instant::now()));
        }
    }

    /// `Some(answer)` when whether `user` is an external account is known and fresh.
    pub(crate) fn external(&self, user: &str) -> Option<Option<ExternalAccount>> {
        self.lock()
            .externals
            .get(user)
            .filter(|(_, at)| self.fresh(at))
            .map(|(x, _)| x.clone())
    }

    pub(crate) fn keep_external(&self, generation: u64, user: &str, x: &Option<ExternalAccount>) {
        let mut inner = self.lock();
        if inner.guard_generation == generation {
            if inner.externals.len() >= MAX_ENTRIES {
                inner.externals.clear();
            }
            inner
                .externals
                .insert(user.to_string(), (x.clone(), Instant::now()));
        }
    }

    /// Forgets the locks and external accounts (after a commit of writes that
    /// [`may_change_guards`]).
    pub(crate) fn invalidate_guards(&self) {
        let mut inner = self.lock();
        inner.guard_generation += 1;
        inner.unlifted_locks = None;
        inner.externals.clear();
    }
}

/// What a write may change of what is kept: `(targets and roles, locks and external
/// accounts)`. Only writes known to leave something alone say `false` for it. Every kind of
/// write is named (no catch-all), so a new one cannot be added without deciding.
fn may_touch(w: &Write) -> (bool, bool) {
    match w {
        Write::InsertUser(_)
        | Write::UpdateUser(_)
        | Write::InsertGroup(_)
        | Write::AddGroupMember { .. }
        | Write::RemoveGroupMember { .. }
        | Write::InsertToken(_)
        | Write::RevokeToken { .. }
        // Inserting a target or role changes nothing kept: only found rows are.
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
        | Write::Review(_)
        | Write::Privacy(_)
        | Write::Device(_)
        | Write::Sso(_)
        | Write::RequireGrantsActive { .. }
        | Write::EndGrant { .. } => (false, false),
        Write::Delegation(_)
        | Write::SshCertificate(_)
        | Write::WebSession(_)
        | Write::Integration(_)
        | Write::ExtendGrant { .. }
        | Write::StartScheduledGrant { .. }
        | Write::PurgeOutbox { .. }
        | Write::PruneAudit { .. }
        | Write::UpdateRole(_) => (true, false),
        Write::External(_) | Write::Lock(_) | Write::Scim(_) => (false, true),
    }
}

/// Whether committing `writes` may change or delete a stored target or role.
pub(crate) fn may_change(writes: &[Write]) -> bool {
    writes.iter().any(|w| may_touch(w).0)
}

/// Whether committing `writes` may change a lock or an external account.
pub(crate) fn may_change_guards(writes: &[Write]) -> bool {
    writes.iter().any(|w| may_touch(w).1)
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
        let c = Catalog::new(None);
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
    fn with_a_time_to_live_rows_are_served_only_while_fresh() {
        let c = Catalog::new(Some(Duration::ZERO));
        c.keep_target(c.generation(), &target("web1"));
        assert!(c.target("web1").is_none(), "served past its time to live");
        let c = Catalog::new(Some(Duration::from_secs(3600)));
        c.keep_target(c.generation(), &target("web1"));
        assert!(c.target("web1").is_some());
    }

    #[test]
    fn a_lock_or_external_account_read_before_a_guard_write_is_not_kept() {
        let c = Catalog::new(None);
        let g = c.guard_generation();
        c.invalidate_guards();
        c.keep_unlifted_locks(g, &[]);
        c.keep_external(g, "alice", &None);
        assert!(c.unlifted_locks().is_none());
        assert!(c.external("alice").is_none());
        c.keep_unlifted_locks(c.guard_generation(), &[]);
        c.keep_external(c.guard_generation(), "alice", &None);
        assert_eq!(c.unlifted_locks(), Some(vec![]));
        assert_eq!(
            c.external("alice"),
            Some(None),
            "a negative answer is kept too"
        );
        // Targets and roles do not touch them.
        c.invalidate();
        assert!(c.external("alice").is_some());
    }

    #[test]
    fn only_lock_and_external_account_writes_change_the_guards() {
        let lift = Write::Lock(pedm_core::lock::LockWrite::Lift {
            id: uuid::Uuid::nil(),
            at: jiff::Timestamp::UNIX_EPOCH,
            by: "admin".into(),
        });
        assert!(may_change_guards(&[lift]));
        assert!(!may_change_guards(&[Write::InsertTarget(target("db1"))]));
        assert!(!may_change_guards(&[]));
    }

    #[test]
    fn inserting_targets_changes_nothing_kept() {
        assert!(!may_change(&[]));
        assert!(!may_change(&[Write::InsertTarget(target("db1"))]));
    }
}
