//! The control plane's provisioning jobs over a real store (SQLite) with a scripted target:
//! retries with backoff, one-time secrets, permanent failures, revokes that are never dropped,
//! grants ended before they were switched on; drift reported, and removed when the target
//! says so.

use async_trait::async_trait;
use jiff::{SignedDuration, Timestamp};
use pedm_core::clock::ManualClock;
use pedm_core::decision::BuiltinDecider;
use pedm_core::model::*;
use pedm_core::notice::{Notice, Observer};
use pedm_core::provisioning::{
    DriftAction, FailureKind, ProvisionFailure, Provisioned, ProvisioningPort,
};
use pedm_core::service::{ControlPlane, Limits, NewRequest, NewRole};
use pedm_core::store::{AuditFilter, Store};
use pedm_store::SqliteStore;
use std::collections::{BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

type Answer<T> = Result<T, FailureKind>;

#[derive(Default)]
struct Script {
    grants: Mutex<VecDeque<Answer<Option<String>>>>,
    revokes: Mutex<VecDeque<Answer<()>>>,
    calls: Mutex<Vec<String>>,
    /// What discovery finds on `db`.
    standing: Mutex<Vec<StandingPrivilege>>,
    /// Drift removal on, and the accounts it keeps.
    remove_drift: Mutex<Option<Vec<String>>>,
    removals: Mutex<VecDeque<Answer<()>>>,
    /// What `observe` says about every grant; `None`: the target cannot be asked.
    present: Mutex<Option<bool>>,
    /// Set: `remove_standing` says it started (first) and waits to be let go (second).
    removal_gate: Mutex<Option<(Arc<Notify>, Arc<Notify>)>>,
}

fn fail(kind: FailureKind) -> ProvisionFailure {
    ProvisionFailure {
        kind,
        message: format!("scripted {kind:?}"),
    }
}

#[async_trait]
impl ProvisioningPort for Script {
    fn handles(&self, target: &str) -> bool {
        target == "db"
    }
    fn targets(&self) -> Vec<String> {
        vec!["db".into()]
    }
    async fn grant(&self, g: &Grant, _: Option<&str>) -> Result<Provisioned, ProvisionFailure> {
        self.calls.lock().unwrap().push(format!("grant {}", g.role));
        match self.grants.lock().unwrap().pop_front().unwrap_or(Ok(None)) {
            Ok(secret) => Ok(Provisioned {
                secret,
                detail: "granted".into(),
            }),
            Err(k) => Err(fail(k)),
        }
    }
    async fn revoke(&self, g: &Grant, _: Option<&str>) -> Result<(), ProvisionFailure> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("revoke {}", g.role));
        self.revokes
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(Ok(()))
            .map_err(fail)
    }
    async fn discover(&self, _: &str) -> Result<Vec<StandingPrivilege>, ProvisionFailure> {
        Ok(self.standing.lock().unwrap().clone())
    }
    async fn observe(&self, g: &Grant) -> Result<(bool, String), ProvisionFailure> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("observe {}", g.role));
        match *self.present.lock().unwrap() {
            Some(p) => Ok((p, if p { "there" } else { "gone" }.into())),
            None => Err(fail(FailureKind::Invalid)),
        }
    }
    /// Roles are granted to the login `<user>_db` (a `login = "{user}_db"` template).
    fn grant_account(&self, g: &Grant) -> Option<String> {
        Some(format!("{}_db", g.user))
    }
    /// Every role here is membership of `rw` (`rw` and `rw2` overlap).
    fn grant_privilege(&self, _: &Grant) -> Option<String> {
        Some("member:rw".into())
    }
    fn drift_action(&self, _: &str, p: &StandingPrivilege) -> DriftAction {
        match &*self.remove_drift.lock().unwrap() {
            None => DriftAction::Report,
            Some(keep) if keep.contains(&p.account) => DriftAction::Keep("kept on purpose".into()),
            Some(_) => DriftAction::Remove,
        }
    }
    async fn remove_standing(
        &self,
        target: &str,
        p: &StandingPrivilege,
    ) -> Result<String, ProvisionFailure> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("remove {target} {} {}", p.account, p.privilege));
        let gate = self.removal_gate.lock().unwrap().clone();
        if let Some((started, proceed)) = gate {
            started.notify_one();
            proceed.notified().await;
        }
        match self.removals.lock().unwrap().pop_front().unwrap_or(Ok(())) {
            Ok(()) => {
                self.standing
                    .lock()
                    .unwrap()
                    .retain(|s| !(s.account == p.account && s.privilege == p.privilege));
                Ok(format!("removed {} from {}", p.privilege, p.account))
            }
            Err(k) => Err(fail(k)),
        }
    }
}

fn member(account: &str) -> StandingPrivilege {
    StandingPrivilege {
        account: account.into(),
        privilege: "member:rw".into(),
        source: "pg_auth_members".into(),
    }
}

/// The errors of high-severity provisioning notices, prefixed with their kind (revoke
/// failures bare, as the older tests read them).
#[derive(Default)]
struct Seen(Mutex<Vec<String>>);
impl Observer for Seen {
    fn notice(&self, n: &Notice) {
        let seen = match n {
            Notice::RevokeFailing { error, .. } => error.clone(),
            Notice::DriftRemovalRefused { account, error, .. } => {
                format!("drift refused {account}: {error}")
            }
            Notice::GrantPrivilegeMissing { grant, error } => {
                format!("missing {}: {error}", grant.id)
            }
            _ => return,
        };
        self.0.lock().unwrap().push(seen);
    }
}

struct Env {
    _dir: tempfile::TempDir,
    cp: ControlPlane,
    store: Arc<dyn Store>,
    clock: Arc<ManualClock>,
    script: Arc<Script>,
    seen: Arc<Seen>,
}

fn alice() -> Actor {
    Actor {
        user: "alice".into(),
        admin: false,
        groups: vec![],
        token_id: None,
        external: false,
        sponsor: None,
        workload: None,
        via_agent: false,
    }
}

async fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(&dir.path().join("pedm.db"))
            .await
            .unwrap(),
    );
    let clock = Arc::new(ManualClock::new(
        Timestamp::from_second(1_800_000_000).unwrap(),
    ));
    let script = Arc::new(Script::default());
    let seen = Arc::new(Seen::default());
    let cp = ControlPlane::new(
        store.clone(),
        Arc::new(BuiltinDecider),
        clock.clone(),
        Limits::default(),
    )
    .with_provisioning(script.clone())
    .with_observer(seen.clone());
    let sys = Actor::system();
    cp.bootstrap("admin").await.unwrap();
    cp.create_user(&sys, "alice", None, None, false)
        .await
        .unwrap();
    for t in ["db", "web"] {
        cp.create_target(&sys, t, TargetKind::Postgres, None, Default::default())
            .await
            .unwrap();
        cp.create_role(
            &sys,
            NewRole {
                target: t.into(),
                name: "rw".into(),
                description: None,
                max_duration_secs: 3600,
                auto_approve: true,
                run_as: None,
                noexec: false,
                allow_setuid: false,
                record_input: false,
                intercept: false,
                limits: Default::default(),
                watch_paths: vec![],
                ssh: Default::default(),
            },
        )
        .await
        .unwrap();
    }
    Env {
        _dir: dir,
        cp,
        store,
        clock,
        script,
        seen,
    }
}

impl Env {
    async fn grant(&self, target: &str) -> Grant {
        let (_, g) = self
            .cp
            .create_request(
                &alice(),
                NewRequest {
                    target: target.into(),
                    role: "rw".into(),
                    duration_secs: 600,
                    justification: "testing provisioning".into(),
                    task: None,
                    ticket: None,
                    break_glass: false,
                    starts_at: None,
                },
                RequestContext::default(),
            )
            .await
            .unwrap();
        g.expect("auto-approved")
    }
    async fn state(&self, g: &Grant) -> Grant {
        self.store.grant(g.id).await.unwrap().unwrap()
    }
    fn advance(&self, secs: i64) {
        self.clock.advance(SignedDuration::from_secs(secs));
    }
    async fn actions(&self, action: &str) -> usize {
        self.events(action).await.len()
    }
    async fn events(&self, action: &str) -> Vec<pedm_core::audit::AuditEvent> {
        self.store
            .audit_events(&AuditFilter {
                action: Some(action.into()),
                ..Default::default()
            })
            .await
            .unwrap()
    }
    /// The `provision.drift` events about `account`, oldest first.
    async fn drift(&self, account: &str) -> Vec<serde_json::Value> {
        self.events("provision.drift")
            .await
            .into_iter()
            .filter(|e| e.data["account"] == account)
            .map(|e| e.data)
            .collect()
    }
    fn calls(&self) -> Vec<String> {
        self.script.calls.lock().unwrap().clone()
    }
}

#[tokio::test]
async fn targets_without_a_provisioner_are_active_at_once() {
    let e = env().await;
    let g = e.grant("web").await;
    assert_eq!(g.provision_state, ProvisionState::Active);
    assert!(e.store.grant_jobs(g.id).await.unwrap().is_empty());
    e.cp.release_grant(&alice(), g.id, None).await.unwrap();
    // Nothing to take away, and the state says the grant's privilege is gone.
    assert_eq!(e.state(&g).await.provision_state, ProvisionState::Revoked);
    assert!(e.store.grant_jobs(g.id).await.unwrap().is_empty());
}

impl Env {
    async fn grant_role(&self, role: &str) -> Grant {
        if self.store.role("db", role).await.unwrap().is_none() {
            self.cp
                .create_role(
                    &Actor::system(),
                    NewRole {
                        target: "db".into(),
                        name: role.into(),
                        description: None,
                        max_duration_secs: 3600,
                        auto_approve: true,
                        run_as: None,
                        noexec: false,
                        allow_setuid: false,
                        record_input: false,
                        intercept: false,
                        limits: Default::default(),
                        watch_paths: vec![],
                        ssh: Default::default(),
                    },
                )
                .await
                .unwrap();
        }
        let (_, g) = self
            .cp
            .create_request(
                &alice(),
                NewRequest {
                    target: "db".into(),
                    role: role.into(),
                    duration_secs: 600,
                    justification: "testing overlap".into(),
                    task: None,
                    ticket: None,
                    break_glass: false,
                    starts_at: None,
                },
                RequestContext::default(),
            )
            .await
            .unwrap();
        g.expect("auto-approved")
    }
}

/// Two live grants give alice's login the same membership. Ending both at the same moment:
/// exactly one revoke reaches the target (the live grants are counted in the transaction
/// that ends each one; the second to commit sees the first ended and revokes).
#[tokio::test]
async fn overlapping_grants_ending_together_revoke_exactly_once() {
    let e = env().await;
    let g1 = e.grant_role("rw").await;
    let g2 = e.grant_role("rw2").await;
    e.cp.run_due_jobs().await.unwrap();
    assert_eq!(e.state(&g1).await.provision_state, ProvisionState::Active);
    assert_eq!(e.state(&g2).await.provision_state, ProvisionState::Active);
    let who = alice();
    let (a, b) = tokio::join!(
        e.cp.release_grant(&who, g1.id, None),
        e.cp.release_grant(&who, g2.id, None)
    );
    a.unwrap();
    b.unwrap();
    e.cp.run_due_jobs().await.unwrap();
    let revokes = e.calls().iter().filter(|c| c.starts_with("revoke")).count();
    assert_eq!(revokes, 1, "{:?}", e.calls());
    let (s1, s2) = (e.state(&g1).await, e.state(&g2).await);
    assert_eq!(s1.provision_state, ProvisionState::Revoked);
    assert_eq!(s2.provision_state, ProvisionState::Revoked);
    let kept = [&s1, &s2]
        .iter()
        .filter(|g| {
            g.provision_detail
                .as_deref()
                .is_some_and(|d| d.contains("left in place"))
        })
        .count();
    assert_eq!(kept, 1, "{s1:?} {s2:?}");
}

/// A revoke job that finds a new live grant of the same privilege when it runs leaves the
/// privilege in place for it (`provision.revoke_skipped`).
#[tokio::test]
async fn a_revoke_job_leaves_a_privilege_a_newer_grant_needs() {
    let e = env().await;
    let g1 = e.grant_role("rw").await;
    e.cp.run_due_jobs().await.unwrap();
    e.cp.release_grant(&alice(), g1.id, None).await.unwrap();
    assert_eq!(
        e.state(&g1).await.provision_state,
        ProvisionState::RevokePending
    );
    let g2 = e.grant_role("rw2").await;
    e.cp.run_due_jobs().await.unwrap();
    assert!(
        !e.calls().iter().any(|c| c.starts_with("revoke")),
        "{:?}",
        e.calls()
    );
    assert_eq!(e.actions("provision.revoke_skipped").await, 1);
    assert_eq!(e.state(&g1).await.provision_state, ProvisionState::Revoked);
    assert_eq!(e.state(&g2).await.provision_state, ProvisionState::Active);
}

#[tokio::test]
async fn unreachable_target_is_retried_and_the_secret_is_read_once() {
    let e = env().await;
    e.script
        .grants
        .lock()
        .unwrap()
        .extend([Err(FailureKind::Unreachable), Ok(Some("pw-123".into()))]);
    let g = e.grant("db").await;
    assert_eq!(g.provision_state, ProvisionState::Provisioning);
    assert_eq!(e.store.grant_jobs(g.id).await.unwrap().len(), 1);

    assert_eq!(e.cp.run_due_jobs().await.unwrap(), 1);
    assert_eq!(
        e.state(&g).await.provision_state,
        ProvisionState::Provisioning
    );
    assert_eq!(e.actions("provision.failed").await, 1);
    let job = &e.store.grant_jobs(g.id).await.unwrap()[0];
    assert_eq!(job.attempts, 1);
    assert!(!job.done);
    // Not due yet: nothing runs.
    assert_eq!(e.cp.run_due_jobs().await.unwrap(), 0);
    e.advance(2);
    assert_eq!(e.cp.run_due_jobs().await.unwrap(), 1);
    let now = e.state(&g).await;
    assert_eq!(now.provision_state, ProvisionState::Active);
    assert_eq!(e.actions("provision.granted").await, 1);
    assert_eq!(e.store.next_job_at().await.unwrap(), None);

    // The secret: never in the audit log; the holder only, once.
    let all = e.store.audit_events(&AuditFilter::default()).await.unwrap();
    assert!(!all.iter().any(|ev| ev.data.to_string().contains("pw-123")));
    let bob = Actor {
        user: "bob".into(),
        ..alice()
    };
    assert!(e.cp.take_grant_secret(&bob, g.id).await.is_err());
    assert_eq!(
        e.cp.take_grant_secret(&alice(), g.id).await.unwrap(),
        "pw-123"
    );
    assert!(e.cp.take_grant_secret(&alice(), g.id).await.is_err());

    // Ending: revoke pending until the target confirms.
    let ended = e.cp.release_grant(&alice(), g.id, None).await.unwrap();
    assert_eq!(ended.provision_state, ProvisionState::RevokePending);
    assert_eq!(e.cp.run_due_jobs().await.unwrap(), 1);
    assert_eq!(e.state(&g).await.provision_state, ProvisionState::Revoked);
    assert_eq!(e.actions("provision.revoked").await, 1);
}

#[tokio::test]
async fn secret_is_deleted_when_the_grant_ends() {
    let e = env().await;
    e.script
        .grants
        .lock()
        .unwrap()
        .push_back(Ok(Some("pw".into())));
    let g = e.grant("db").await;
    e.cp.run_due_jobs().await.unwrap();
    assert!(e.store.grant_secret(g.id).await.unwrap().is_some());
    e.cp.release_grant(&alice(), g.id, None).await.unwrap();
    assert!(e.store.grant_secret(g.id).await.unwrap().is_none());
}

#[tokio::test]
async fn invalid_grant_fails_without_touching_the_target_again() {
    let e = env().await;
    e.script
        .grants
        .lock()
        .unwrap()
        .push_back(Err(FailureKind::Invalid));
    let g = e.grant("db").await;
    e.cp.run_due_jobs().await.unwrap();
    let now = e.state(&g).await;
    assert_eq!(now.provision_state, ProvisionState::Failed);
    assert!(now.provision_detail.unwrap().contains("Invalid"));
    // Nothing was sent, so nothing to clean up.
    assert_eq!(e.store.next_job_at().await.unwrap(), None);
    // Ending a failed grant queues nothing either.
    e.cp.release_grant(&alice(), g.id, None).await.unwrap();
    assert_eq!(e.store.next_job_at().await.unwrap(), None);
    assert_eq!(e.state(&g).await.provision_state, ProvisionState::Failed);
}

#[tokio::test]
async fn refused_grant_fails_and_is_revoked_anyway() {
    let e = env().await;
    e.script
        .grants
        .lock()
        .unwrap()
        .push_back(Err(FailureKind::Refused));
    let g = e.grant("db").await;
    e.cp.run_due_jobs().await.unwrap();
    assert_eq!(e.state(&g).await.provision_state, ProvisionState::Failed);
    // The target may be half-granted: a revoke job runs.
    assert_eq!(e.cp.run_due_jobs().await.unwrap(), 1);
    assert_eq!(
        e.script.calls.lock().unwrap().clone(),
        vec!["grant rw".to_string(), "revoke rw".to_string()]
    );
    assert_eq!(e.state(&g).await.provision_state, ProvisionState::Failed);
    assert_eq!(e.store.next_job_at().await.unwrap(), None);
}

#[tokio::test]
async fn a_refused_revoke_is_never_dropped_and_alerts() {
    let e = env().await;
    e.script.revokes.lock().unwrap().extend([
        Err(FailureKind::Unreachable),
        Err(FailureKind::Refused),
        Ok(()),
    ]);
    let g = e.grant("db").await;
    e.cp.run_due_jobs().await.unwrap();
    e.cp.release_grant(&alice(), g.id, None).await.unwrap();
    e.cp.run_due_jobs().await.unwrap(); // unreachable: backoff
    assert_eq!(
        e.state(&g).await.provision_state,
        ProvisionState::RevokePending
    );
    e.advance(2);
    e.cp.run_due_jobs().await.unwrap(); // refused: at the cap, with an alert
    assert_eq!(e.seen.0.lock().unwrap().len(), 1);
    assert_eq!(
        e.state(&g).await.provision_state,
        ProvisionState::RevokePending
    );
    e.advance(299);
    assert_eq!(e.cp.run_due_jobs().await.unwrap(), 0);
    e.advance(1);
    assert_eq!(e.cp.run_due_jobs().await.unwrap(), 1);
    assert_eq!(e.state(&g).await.provision_state, ProvisionState::Revoked);
    assert_eq!(e.actions("provision.failed").await, 2);
}

#[tokio::test]
async fn an_unreachable_revoke_alerts_once_after_three_attempts_and_goes_on() {
    let e = env().await;
    e.script.revokes.lock().unwrap().extend([
        Err(FailureKind::Unreachable),
        Err(FailureKind::Unreachable),
        Err(FailureKind::Unreachable),
        Err(FailureKind::Unreachable),
        Ok(()),
    ]);
    let g = e.grant("db").await;
    e.cp.run_due_jobs().await.unwrap();
    e.cp.release_grant(&alice(), g.id, None).await.unwrap();
    for attempt in 1..=4 {
        assert_eq!(e.cp.run_due_jobs().await.unwrap(), 1, "attempt {attempt}");
        let alerts = e.seen.0.lock().unwrap().clone();
        assert_eq!(
            alerts.len(),
            usize::from(attempt >= 3),
            "attempt {attempt}: {alerts:?}"
        );
        e.advance(20);
    }
    let alerts = e.seen.0.lock().unwrap().clone();
    assert!(
        alerts[0].starts_with("target unreachable for 3 attempts, still retrying"),
        "{alerts:?}"
    );
    assert_eq!(e.cp.run_due_jobs().await.unwrap(), 1);
    assert_eq!(e.state(&g).await.provision_state, ProvisionState::Revoked);
    assert_eq!(e.actions("provision.failed").await, 4);
}

#[tokio::test]
async fn a_grant_ended_before_it_was_switched_on_is_only_revoked() {
    let e = env().await;
    let g = e.grant("db").await;
    let ended = e.cp.release_grant(&alice(), g.id, None).await.unwrap();
    assert_eq!(ended.provision_state, ProvisionState::RevokePending);
    let jobs = e.store.grant_jobs(g.id).await.unwrap();
    assert!(jobs[0].done && jobs[0].action == ProvisionAction::Grant);
    e.cp.run_due_jobs().await.unwrap();
    assert_eq!(
        e.script.calls.lock().unwrap().clone(),
        vec!["revoke rw".to_string()]
    );
    assert_eq!(e.state(&g).await.provision_state, ProvisionState::Revoked);
}

#[tokio::test]
async fn drift_is_only_reported_when_removal_is_off() {
    let e = env().await;
    e.script.standing.lock().unwrap().push(member("bob"));
    let mut reported = BTreeSet::new();
    assert_eq!(e.cp.reconcile(&mut reported).await.unwrap(), 1);
    assert_eq!(
        e.cp.reconcile(&mut reported).await.unwrap(),
        0,
        "reported once"
    );
    let drift = e.drift("bob").await;
    assert_eq!(drift.len(), 1);
    assert_eq!(drift[0]["privilege"], "member:rw");
    assert!(drift[0].get("removal").is_none(), "{}", drift[0]);
    assert_eq!(e.store.next_job_at().await.unwrap(), None);
    assert_eq!(e.cp.run_due_jobs().await.unwrap(), 0);
    assert!(e.calls().is_empty());
}

#[tokio::test]
async fn drift_removal_is_queued_once_retried_and_recorded() {
    let e = env().await;
    // alice holds a live grant: her memberships (her own name, and the login the role's
    // settings give it to) are pedm's and never drift.
    let g = e.grant("db").await;
    e.cp.run_due_jobs().await.unwrap();
    assert_eq!(e.state(&g).await.provision_state, ProvisionState::Active);
    *e.script.remove_drift.lock().unwrap() = Some(vec!["ops".into()]);
    e.script.standing.lock().unwrap().extend([
        member("alice"),
        member("alice_db"),
        member("bob"),
        member("ops"),
    ]);
    e.script
        .removals
        .lock()
        .unwrap()
        .extend([Err(FailureKind::Unreachable), Ok(())]);

    let mut reported = BTreeSet::new();
    assert_eq!(e.cp.reconcile(&mut reported).await.unwrap(), 2);
    assert!(e.drift("alice").await.is_empty());
    assert!(e.drift("alice_db").await.is_empty());
    let ops = e.drift("ops").await;
    assert_eq!(ops[0]["removal"], "kept");
    assert_eq!(ops[0]["reason"], "kept on purpose");
    let bob = e.drift("bob").await;
    assert_eq!(bob[0]["removal"], "queued");
    let job_id = bob[0]["job"].as_str().unwrap().to_string();

    // Target unreachable: provision.failed about the target, retried with backoff.
    assert_eq!(e.cp.run_due_jobs().await.unwrap(), 1);
    let failed = e.events("provision.failed").await;
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].subject.as_deref(), Some("target:db"));
    assert_eq!(failed[0].data["account"], "bob");
    assert_eq!(failed[0].data["permanent"], false);
    assert_eq!(e.cp.run_due_jobs().await.unwrap(), 0);

    // Found again meanwhile (another instance, or a restart): the pending removal is not
    // doubled.
    let mut fresh = BTreeSet::new();
    assert_eq!(e.cp.reconcile(&mut fresh).await.unwrap(), 2);
    let bob = e.drift("bob").await;
    assert_eq!(bob.len(), 2);
    assert_eq!(bob[1]["removal"], "pending");
    e.advance(2);
    assert_eq!(e.cp.run_due_jobs().await.unwrap(), 1, "one job, not two");
    let removed = e.events("provision.drift_removed").await;
    assert_eq!(removed.len(), 1);
    assert_eq!(removed[0].subject.as_deref(), Some("target:db"));
    assert_eq!(removed[0].data["account"], "bob");
    assert_eq!(removed[0].data["job"], job_id.as_str());
    assert_eq!(removed[0].data["attempt"], 2);
    assert_eq!(
        e.calls()
            .iter()
            .filter(|c| c.starts_with("remove"))
            .cloned()
            .collect::<Vec<_>>(),
        ["remove db bob member:rw", "remove db bob member:rw"]
    );
    assert_eq!(e.store.next_job_at().await.unwrap(), None);
    // Gone from the target: forgotten; nothing new on the next pass.
    assert_eq!(e.cp.reconcile(&mut reported).await.unwrap(), 0);
}

#[tokio::test]
async fn drift_removal_is_dropped_when_a_grant_now_explains_it() {
    let e = env().await;
    *e.script.remove_drift.lock().unwrap() = Some(vec![]);
    e.script.standing.lock().unwrap().push(member("alice"));
    let mut reported = BTreeSet::new();
    assert_eq!(e.cp.reconcile(&mut reported).await.unwrap(), 1);
    // alice asks pedm for the role before the removal runs: her grant keeps it.
    e.grant("db").await;
    assert_eq!(e.cp.run_due_jobs().await.unwrap(), 2);
    assert_eq!(e.calls(), ["grant rw"]);
    let skipped = e.events("provision.drift_skipped").await;
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0].data["account"], "alice");
    assert_eq!(e.actions("provision.drift_removed").await, 0);
    assert_eq!(e.store.next_job_at().await.unwrap(), None);
}

#[tokio::test]
async fn a_refused_drift_removal_is_queued_again_by_the_next_pass() {
    let e = env().await;
    *e.script.remove_drift.lock().unwrap() = Some(vec![]);
    e.script.standing.lock().unwrap().push(member("bob"));
    e.script
        .removals
        .lock()
        .unwrap()
        .push_back(Err(FailureKind::Refused));
    let mut reported = BTreeSet::new();
    e.cp.reconcile(&mut reported).await.unwrap();
    assert_eq!(e.cp.run_due_jobs().await.unwrap(), 1);
    let failed = e.events("provision.failed").await;
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].data["permanent"], true);
    // The job is not retried by itself...
    e.advance(3600);
    assert_eq!(e.cp.run_due_jobs().await.unwrap(), 0);
    assert_eq!(e.store.next_job_at().await.unwrap(), None);
    // ...but the drift is still there: the next pass queues a new removal, once.
    assert_eq!(e.cp.reconcile(&mut reported).await.unwrap(), 1);
    assert_eq!(e.cp.reconcile(&mut reported).await.unwrap(), 0);
    let bob = e.drift("bob").await;
    assert_eq!(bob.len(), 2);
    assert_eq!(bob[1]["removal"], "queued");
    assert_eq!(bob[1]["again"], true);
    assert_eq!(e.cp.run_due_jobs().await.unwrap(), 1);
    assert_eq!(e.actions("provision.drift_removed").await, 1);
}

#[tokio::test]
async fn drift_put_back_before_the_next_pass_is_removed_again() {
    let e = env().await;
    *e.script.remove_drift.lock().unwrap() = Some(vec![]);
    e.script.standing.lock().unwrap().push(member("bob"));
    let mut reported = BTreeSet::new();
    assert_eq!(e.cp.reconcile(&mut reported).await.unwrap(), 1);
    e.cp.run_due_jobs().await.unwrap();
    assert_eq!(e.actions("provision.drift_removed").await, 1);
    // Granted by hand again before any pass saw it gone.
    e.script.standing.lock().unwrap().push(member("bob"));
    assert_eq!(e.cp.reconcile(&mut reported).await.unwrap(), 1);
    e.cp.run_due_jobs().await.unwrap();
    assert_eq!(e.actions("provision.drift_removed").await, 2);
    assert!(e.script.standing.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_grant_that_starts_while_its_privilege_is_removed_as_drift_gets_it_back() {
    let e = env().await;
    *e.script.remove_drift.lock().unwrap() = Some(vec![]);
    e.script.standing.lock().unwrap().push(member("alice_db"));
    let mut reported = BTreeSet::new();
    assert_eq!(e.cp.reconcile(&mut reported).await.unwrap(), 1);
    let (started, proceed) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    *e.script.removal_gate.lock().unwrap() = Some((started.clone(), proceed.clone()));
    // The removal checked that no grant explains alice_db; alice's grant starts before the
    // REVOKE lands.
    let (ran, g) = tokio::join!(e.cp.run_due_jobs(), async {
        started.notified().await;
        let g = e.grant("db").await;
        proceed.notify_one();
        g
    });
    ran.unwrap();
    let calls = e.calls();
    let removed_at = calls.iter().position(|c| c.starts_with("remove")).unwrap();
    assert!(
        calls[removed_at..].iter().any(|c| c == "grant rw"),
        "the grant's privilege was not put back after the removal: {calls:?}"
    );
    let reapplied = e.events("provision.reapplied").await;
    assert_eq!(reapplied.len(), 1);
    assert_eq!(reapplied[0].data["grant"], g.id.to_string());
    assert!(
        reapplied[0].data["reason"]
            .as_str()
            .unwrap()
            .contains("drift removal")
    );
}

#[tokio::test]
async fn a_privilege_taken_away_by_hand_is_put_back_or_the_grant_fails_loudly() {
    let e = env().await;
    let g = e.grant("db").await;
    e.cp.run_due_jobs().await.unwrap();
    assert_eq!(e.state(&g).await.provision_state, ProvisionState::Active);
    let mut reported = BTreeSet::new();
    // There: nothing done.
    *e.script.present.lock().unwrap() = Some(true);
    e.cp.reconcile(&mut reported).await.unwrap();
    assert_eq!(e.actions("provision.reapplied").await, 0);
    // Gone (someone revoked it by hand): put back, with a fresh secret for the holder.
    *e.script.present.lock().unwrap() = Some(false);
    e.script
        .grants
        .lock()
        .unwrap()
        .push_back(Ok(Some("new-password".into())));
    e.cp.reconcile(&mut reported).await.unwrap();
    let reapplied = e.events("provision.reapplied").await;
    assert_eq!(reapplied.len(), 1, "{reapplied:?}");
    assert!(
        reapplied[0].data["reason"]
            .as_str()
            .unwrap()
            .contains("gone")
    );
    assert_eq!(
        e.cp.take_grant_secret(&alice(), g.id).await.unwrap(),
        "new-password"
    );
    assert_eq!(e.state(&g).await.provision_state, ProvisionState::Active);
    // Unreachable while putting it back: recorded, tried again next pass, still active.
    e.script
        .grants
        .lock()
        .unwrap()
        .push_back(Err(FailureKind::Unreachable));
    e.cp.reconcile(&mut reported).await.unwrap();
    assert_eq!(e.state(&g).await.provision_state, ProvisionState::Active);
    // Refused: the grant's provisioning fails, with a high-severity notice.
    e.script
        .grants
        .lock()
        .unwrap()
        .push_back(Err(FailureKind::Refused));
    e.cp.reconcile(&mut reported).await.unwrap();
    let failed = e.state(&g).await;
    assert_eq!(failed.provision_state, ProvisionState::Failed);
    assert!(
        failed
            .provision_detail
            .unwrap()
            .contains("putting it back failed")
    );
    let seen = e.seen.0.lock().unwrap().clone();
    assert!(
        seen.iter()
            .any(|s| s.starts_with(&format!("missing {}", g.id))),
        "{seen:?}"
    );
    let permanent: Vec<_> = e
        .events("provision.failed")
        .await
        .into_iter()
        .filter(|ev| ev.data["reapply"] == true)
        .map(|ev| ev.data["permanent"].clone())
        .collect();
    assert_eq!(
        permanent,
        vec![serde_json::json!(false), serde_json::json!(true)]
    );
    // A failed grant is not checked again.
    let observed = e
        .calls()
        .iter()
        .filter(|c| c.starts_with("observe"))
        .count();
    e.cp.reconcile(&mut reported).await.unwrap();
    assert_eq!(
        e.calls()
            .iter()
            .filter(|c| c.starts_with("observe"))
            .count(),
        observed
    );
}

#[tokio::test]
async fn a_refused_drift_removal_alerts_and_findings_survive_a_restart() {
    let e = env().await;
    *e.script.remove_drift.lock().unwrap() = Some(vec![]);
    e.script
        .standing
        .lock()
        .unwrap()
        .extend([member("bob"), member("carol")]);
    e.script
        .removals
        .lock()
        .unwrap()
        .extend([Err(FailureKind::Refused), Ok(())]);
    let mut reported = BTreeSet::new();
    assert_eq!(e.cp.reconcile(&mut reported).await.unwrap(), 2);
    e.cp.run_due_jobs().await.unwrap();
    let seen = e.seen.0.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(
        seen[0].starts_with("drift refused bob: scripted Refused"),
        "{seen:?}"
    );
    assert_eq!(e.actions("provision.drift_removed").await, 1);

    // A restart: the process's memory is gone, the audit log remembers bob (still there),
    // not carol (removed).
    let known = e.cp.known_drift().await.unwrap();
    assert_eq!(
        known,
        BTreeSet::from([("db".to_string(), "bob".to_string(), "member:rw".to_string())])
    );
    // Report-only now: bob is not reported again as new.
    *e.script.remove_drift.lock().unwrap() = None;
    let mut restarted = known;
    assert_eq!(e.cp.reconcile(&mut restarted).await.unwrap(), 0);
    assert_eq!(e.drift("bob").await.len(), 1);
    // carol coming back is new again.
    e.script.standing.lock().unwrap().push(member("carol"));
    assert_eq!(e.cp.reconcile(&mut restarted).await.unwrap(), 1);
    assert_eq!(e.drift("carol").await.len(), 2);
}
