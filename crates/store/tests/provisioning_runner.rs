//! The control plane's provisioning jobs over a real store (SQLite) with a scripted target:
//! retries with backoff, one-time secrets, permanent failures, revokes that are never dropped,
//! grants ended before they were switched on.

use async_trait::async_trait;
use jiff::{SignedDuration, Timestamp};
use pedm_core::clock::ManualClock;
use pedm_core::decision::BuiltinDecider;
use pedm_core::model::*;
use pedm_core::notice::{Notice, Observer};
use pedm_core::provisioning::{FailureKind, ProvisionFailure, Provisioned, ProvisioningPort};
use pedm_core::service::{ControlPlane, Limits, NewRequest, NewRole};
use pedm_core::store::{AuditFilter, Store};
use pedm_store::SqliteStore;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

type Answer<T> = Result<T, FailureKind>;

#[derive(Default)]
struct Script {
    grants: Mutex<VecDeque<Answer<Option<String>>>>,
    revokes: Mutex<VecDeque<Answer<()>>>,
    calls: Mutex<Vec<String>>,
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
        Ok(vec![])
    }
}

#[derive(Default)]
struct Seen(Mutex<Vec<String>>);
impl Observer for Seen {
    fn notice(&self, n: &Notice) {
        if let Notice::RevokeFailing { error, .. } = n {
            self.0.lock().unwrap().push(error.clone());
        }
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
    cp.create_user(&sys, "alice", None, false).await.unwrap();
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
        self.store
            .audit_events(&AuditFilter {
                action: Some(action.into()),
                ..Default::default()
            })
            .await
            .unwrap()
            .len()
    }
}

#[tokio::test]
async fn targets_without_a_provisioner_are_active_at_once() {
    let e = env().await;
    let g = e.grant("web").await;
    assert_eq!(g.provision_state, ProvisionState::Active);
    assert!(e.store.grant_jobs(g.id).await.unwrap().is_empty());
    e.cp.release_grant(&alice(), g.id, None).await.unwrap();
    assert_eq!(e.state(&g).await.provision_state, ProvisionState::Active);
    assert!(e.store.grant_jobs(g.id).await.unwrap().is_empty());
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
