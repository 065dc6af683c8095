//! One conformance suite, run against both backends: every test below is instantiated as
//! `<name>::sqlite` (a fresh file in a temp dir) and `<name>::postgres` (a fresh database in a
//! cluster shared by this test binary, see `pedm_store::testing`).

use jiff::Timestamp;
use pedm_core::audit::{AuditEvent, GENESIS_HASH, NewAuditEvent, Outcome, verify_chain};
use pedm_core::model::*;
use pedm_core::store::{AuditFilter, Changeset, CheckpointRecord, Store, StoreError, Write};
use pedm_store::testing::{TestPgError, TestPostgres};
use pedm_store::{PostgresStore, SqliteStore};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use uuid::Uuid;

// ------------------------------------------------------------------------------ harness

enum Db {
    Sqlite(tempfile::TempDir),
    Postgres(String),
}

fn cluster() -> Option<&'static TestPostgres> {
    static PG: OnceLock<Result<TestPostgres, TestPgError>> = OnceLock::new();
    match PG.get_or_init(TestPostgres::start) {
        Ok(pg) => Some(pg),
        Err(e @ TestPgError::Unavailable(_)) => {
            println!("SKIP: {e}");
            None
        }
        Err(e) => panic!("{e}"),
    }
}

impl Db {
    fn sqlite() -> Db {
        Db::Sqlite(tempfile::tempdir().unwrap())
    }

    fn postgres(test: &str) -> Option<Db> {
        let url = cluster()?.fresh_database(test).unwrap();
        Some(Db::Postgres(url))
    }

    /// A new store instance (its own pools) on this test's database.
    async fn open(&self) -> Arc<dyn Store> {
        match self {
            Db::Sqlite(dir) => Arc::new(
                SqliteStore::open(&dir.path().join("pedm.db"))
                    .await
                    .unwrap(),
            ),
            Db::Postgres(url) => Arc::new(PostgresStore::connect(url).await.unwrap()),
        }
    }
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                super::$name(super::Db::sqlite()).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                let Some(db) = super::Db::postgres(stringify!($name)) else { return };
                super::$name(db).await
            }
        }
    )*};
}

#[path = "conformance/policy_review.rs"]
mod policy_review;
use policy_review::policy_proposals_and_approvals;
#[path = "conformance/devices.rs"]
mod devices;
use devices::devices_enrolled_approved_revoked;
#[path = "conformance/scim.rs"]
mod scim;
use scim::scim_tokens_and_links;
#[path = "conformance/access_reviews.rs"]
mod access_reviews;
use access_reviews::review_campaigns_and_items;
#[path = "conformance/privacy.rs"]
mod privacy;
use privacy::personal_data_sealed_opened_and_erased;
#[path = "conformance/locks.rs"]
mod locks;
use locks::locks_added_and_lifted;
#[path = "conformance/ssh.rs"]
mod ssh;
use ssh::ssh_certificates_and_what_to_revoke;
#[path = "conformance/web_sessions.rs"]
mod web_sessions;
use web_sessions::web_sessions_touched_and_ended;
#[path = "conformance/integration.rs"]
mod integration;
use integration::{identities_linked_both_ways, integration_state_put_claim_purge};
#[path = "conformance/outbox.rs"]
mod outbox;
use outbox::{leases_have_one_holder, outbox_in_commit_order_with_its_changeset};
#[path = "conformance/scheduled.rs"]
mod scheduled;
use scheduled::scheduled_grants_start_once;

conformance!(
    policy_proposals_and_approvals,
    devices_enrolled_approved_revoked,
    scim_tokens_and_links,
    locks_added_and_lifted,
    review_campaigns_and_items,
    personal_data_sealed_opened_and_erased,
    ssh_certificates_and_what_to_revoke,
    web_sessions_touched_and_ended,
    integration_state_put_claim_purge,
    identities_linked_both_ways,
    outbox_in_commit_order_with_its_changeset,
    leases_have_one_holder,
    scheduled_grants_start_once,
    tasks_delegations_and_grant_links,
    hosts_receipts_and_sessions,
    provisioning_jobs_and_secrets,
    drift_removal_jobs,
    empty_store,
    users_and_groups,
    tokens,
    targets_and_roles,
    requests_and_versions,
    approvals,
    grants_end_exactly_once,
    failed_changeset_writes_nothing,
    audit_chain_over_many_commits,
    audit_filters,
    event_times_are_stored_to_the_microsecond,
    concurrent_commits_keep_one_chain,
    concurrent_update_request_one_wins,
    concurrent_end_grant_one_wins,
    overlapping_grants_cannot_both_count_on_each_other,
    deadlines_and_overdue,
    request_and_grant_filters,
    reopen_keeps_everything,
    policy_versions_only_grow,
    audit_checkpoints_and_hashes,
    audit_rewind_to_the_last_event,
    audit_prune_keeps_hashes_and_drops_content,
    audit_target_and_request_filters,
);

// ------------------------------------------------------------------------------ fixtures

/// A whole number of microseconds, as the store keeps them.
fn t(secs: i64) -> Timestamp {
    Timestamp::from_second(1_700_000_000 + secs).unwrap()
}

fn user(name: &str) -> User {
    User {
        name: name.into(),
        display_name: Some(format!("{name} the user")),
        email: None,
        admin: false,
        disabled: false,
        created_at: t(0),
    }
}

fn target(name: &str) -> Target {
    Target {
        name: name.into(),
        kind: TargetKind::Host,
        description: Some("a host".into()),
        labels: BTreeMap::from([("env".into(), "prod".into()), ("team".into(), "db".into())]),
        created_at: t(1),
    }
}

fn role(target: &str, name: &str) -> Role {
    Role {
        target: target.into(),
        name: name.into(),
        description: None,
        max_duration_secs: 3600,
        auto_approve: true,
        run_as: Some("root".into()),
        noexec: true,
        allow_setuid: false,
        record_input: false,
        intercept: false,
        limits: pedm_core::model::SessionLimits {
            memory_bytes: Some(64 << 20),
            pids: Some(32),
            cpu_percent: None,
        },
        watch_paths: vec!["/etc".into(), "/srv/app".into()],
        ssh: Default::default(),
        created_at: t(2),
    }
}

fn token(id: &str, user: &str, created: i64) -> TokenRecord {
    TokenRecord {
        id: id.into(),
        user: user.into(),
        description: Some("ci".into()),
        secret_hash: [7; 32],
        created_at: t(created),
        expires_at: Some(t(created + 86_400)),
        revoked_at: None,
        workload: None,
        agent: false,
    }
}

fn request(requester: &str, target: &str, created: i64) -> Request {
    Request {
        id: Uuid::now_v7(),
        requester: requester.into(),
        target: target.into(),
        role: "root".into(),
        duration_secs: 1800,
        justification: "fix the disk".into(),
        task: None,
        ticket: Some("OPS-1".into()),
        context: RequestContext {
            source_addr: Some("10.0.0.1".into()),
            device: BTreeMap::from([("managed".into(), "true".into())]),
            step_up: None,
            extends: Some(Uuid::from_u128(7)),
            starts_at: None,
            ticket: None,
            via_agent: false,
            while_on_call: false,
            risk: None,
        },
        state: RequestState::Pending,
        created_at: t(created),
        pending_until: t(created + 600),
        decided_at: None,
        decided_by: None,
        decision_reason: None,
        grant_id: None,
        approvals_required: 3,
        approval_tiers: vec![
            ApprovalTier {
                group: Some("leads".into()),
                required: 1,
            },
            ApprovalTier {
                group: None,
                required: 2,
            },
        ],
        policy: Some("base.cedar#3".into()),
        break_glass: false,
        review: None,
        follow_up: Some(pedm_core::model::FollowUp {
            remind_after_secs: Some(300),
            escalate_after_secs: Some(900),
            escalate_to: Some("leads".into()),
        }),
        version: 1,
    }
}

fn grant_for(r: &Request, starts: i64) -> Grant {
    Grant {
        id: Uuid::now_v7(),
        request_id: r.id,
        user: r.requester.clone(),
        target: r.target.clone(),
        role: r.role.clone(),
        starts_at: t(starts),
        expires_at: t(starts + r.duration_secs),
        state: GrantState::Active,
        ended_at: None,
        ended_by: None,
        end_reason: None,
        provision_state: ProvisionState::Active,
        provision_detail: None,
    }
}

fn ev(action: &str, subject: &str) -> NewAuditEvent {
    NewAuditEvent::new(t(10), "alice", action, Some(subject.to_string()))
}

/// One write and its event.
fn cs(w: Write) -> Changeset {
    Changeset::new().write(w).event(ev("test.write", "test:1"))
}

async fn ok(s: &Arc<dyn Store>, c: Changeset) -> Vec<AuditEvent> {
    s.commit(c).await.unwrap()
}

/// Commits a changeset that must fail, checks nothing was appended to the audit chain, and
/// returns the error.
async fn fails(s: &Arc<dyn Store>, c: Changeset) -> StoreError {
    let before = s.audit_head().await.unwrap();
    let n = s.audit_events(&AuditFilter::default()).await.unwrap().len();
    let err = s
        .commit(c)
        .await
        .expect_err("changeset should have been refused");
    assert_eq!(
        s.audit_head().await.unwrap(),
        before,
        "{err}: audit head moved"
    );
    assert_eq!(
        s.audit_events(&AuditFilter::default()).await.unwrap().len(),
        n
    );
    err
}

#[track_caller]
fn conflict(e: StoreError, names: &str) {
    assert!(
        matches!(&e, StoreError::Conflict(m) if m.contains(names)),
        "{e:?}"
    );
}
#[track_caller]
fn exists(e: StoreError, names: &str) {
    assert!(
        matches!(&e, StoreError::AlreadyExists(m) if m.contains(names)),
        "{e:?}"
    );
}
#[track_caller]
fn not_found(e: StoreError, names: &str) {
    assert!(
        matches!(&e, StoreError::NotFound(m) if m.contains(names)),
        "{e:?}"
    );
}

/// All events, checked to form one valid chain from genesis.
async fn whole_chain(s: &Arc<dyn Store>) -> Vec<AuditEvent> {
    let all = s.audit_events(&AuditFilter::default()).await.unwrap();
    let last = verify_chain(GENESIS_HASH, 1, &all).unwrap();
    match all.last() {
        Some(e) => assert_eq!(s.audit_head().await.unwrap(), Some((e.seq, last))),
        None => assert_eq!(s.audit_head().await.unwrap(), None),
    }
    all
}

// -------------------------------------------------------------------------------- tests

async fn empty_store(db: Db) {
    let s = db.open().await;
    assert_eq!(s.user_count().await.unwrap(), 0);
    assert!(s.users().await.unwrap().is_empty());
    assert!(s.groups().await.unwrap().is_empty());
    assert!(s.tokens(None).await.unwrap().is_empty());
    assert!(s.roles(None).await.unwrap().is_empty());
    assert_eq!(s.audit_head().await.unwrap(), None);
    assert!(
        s.audit_events(&AuditFilter::default())
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(s.next_grant_deadline().await.unwrap(), None);
    assert_eq!(s.next_request_deadline().await.unwrap(), None);
    assert!(s.overdue_grants(t(1_000_000), 10).await.unwrap().is_empty());
    assert!(s.request(Uuid::now_v7()).await.unwrap().is_none());
    // An empty changeset is a no-op, not an error.
    assert!(ok(&s, Changeset::new()).await.is_empty());
}

async fn users_and_groups(db: Db) {
    let s = db.open().await;
    for n in ["carol", "alice", "bob"] {
        ok(&s, cs(Write::InsertUser(user(n)))).await;
    }
    exists(
        fails(&s, cs(Write::InsertUser(user("alice")))).await,
        "user alice",
    );
    assert_eq!(s.user_count().await.unwrap(), 3);
    let names: Vec<_> = s
        .users()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.name)
        .collect();
    assert_eq!(names, ["alice", "bob", "carol"]);
    assert_eq!(s.user("alice").await.unwrap(), Some(user("alice")));
    assert_eq!(s.user("nobody").await.unwrap(), None);

    let mut alice = user("alice");
    alice.admin = true;
    alice.disabled = true;
    alice.display_name = None;
    ok(&s, cs(Write::UpdateUser(alice.clone()))).await;
    assert_eq!(s.user("alice").await.unwrap(), Some(alice));
    not_found(
        fails(&s, cs(Write::UpdateUser(user("zed")))).await,
        "user zed",
    );

    let ops = Group {
        name: "ops".into(),
        description: Some("operations".into()),
        members: vec!["bob".into(), "alice".into()],
        created_at: t(3),
    };
    ok(&s, cs(Write::InsertGroup(ops.clone()))).await;
    exists(
        fails(&s, cs(Write::InsertGroup(ops.clone()))).await,
        "group ops",
    );
    let mut ghosts = ops.clone();
    ghosts.name = "ghosts".into();
    ghosts.members = vec!["alice".into(), "casper".into()];
    not_found(
        fails(&s, cs(Write::InsertGroup(ghosts))).await,
        "user casper",
    );
    assert!(s.group("ghosts").await.unwrap().is_none());
    let empty = Group {
        name: "dba".into(),
        description: None,
        members: vec![],
        created_at: t(4),
    };
    ok(&s, cs(Write::InsertGroup(empty.clone()))).await;

    let g = s.group("ops").await.unwrap().unwrap();
    assert_eq!(g.members, ["alice", "bob"]);
    assert_eq!(s.group("dba").await.unwrap(), Some(empty));

    let add = |g: &str, u: &str| Write::AddGroupMember {
        group: g.into(),
        user: u.into(),
    };
    let remove = |g: &str, u: &str| Write::RemoveGroupMember {
        group: g.into(),
        user: u.into(),
    };
    ok(&s, cs(add("dba", "carol"))).await;
    ok(&s, cs(add("dba", "carol"))).await; // already a member: no-op
    ok(&s, cs(add("dba", "alice"))).await;
    not_found(fails(&s, cs(add("nope", "carol"))).await, "group nope");
    not_found(fails(&s, cs(add("dba", "nobody"))).await, "user nobody");
    assert_eq!(s.groups_of("alice").await.unwrap(), ["dba", "ops"]);
    assert_eq!(s.groups_of("carol").await.unwrap(), ["dba"]);
    assert!(s.groups_of("nobody").await.unwrap().is_empty());

    ok(&s, cs(remove("ops", "alice"))).await;
    not_found(fails(&s, cs(remove("ops", "alice"))).await, "alice");
    assert_eq!(s.groups_of("alice").await.unwrap(), ["dba"]);

    let groups = s.groups().await.unwrap();
    let summary: Vec<_> = groups
        .iter()
        .map(|g| (g.name.as_str(), g.members.clone()))
        .collect();
    assert_eq!(
        summary,
        [
            ("dba", vec!["alice".to_string(), "carol".to_string()]),
            ("ops", vec!["bob".to_string()])
        ]
    );
    whole_chain(&s).await;
}

async fn tokens(db: Db) {
    let s = db.open().await;
    ok(&s, cs(Write::InsertUser(user("alice")))).await;
    ok(&s, cs(Write::InsertUser(user("bob")))).await;
    ok(&s, cs(Write::InsertToken(token("t1", "alice", 10)))).await;
    ok(&s, cs(Write::InsertToken(token("t2", "bob", 20)))).await;
    ok(&s, cs(Write::InsertToken(token("t3", "alice", 30)))).await;
    exists(
        fails(&s, cs(Write::InsertToken(token("t1", "bob", 40)))).await,
        "token t1",
    );
    not_found(
        fails(&s, cs(Write::InsertToken(token("t9", "zed", 40)))).await,
        "user zed",
    );

    assert_eq!(s.token("t1").await.unwrap(), Some(token("t1", "alice", 10)));
    assert_eq!(s.token("nope").await.unwrap(), None);
    let ids = |v: Vec<TokenRecord>| v.into_iter().map(|t| t.id).collect::<Vec<_>>();
    assert_eq!(ids(s.tokens(None).await.unwrap()), ["t3", "t2", "t1"]);
    assert_eq!(ids(s.tokens(Some("alice")).await.unwrap()), ["t3", "t1"]);

    let revoke = |id: &str| Write::RevokeToken {
        id: id.into(),
        at: t(50),
    };
    ok(&s, cs(revoke("t1"))).await;
    assert_eq!(
        s.token("t1").await.unwrap().unwrap().revoked_at,
        Some(t(50))
    );
    conflict(fails(&s, cs(revoke("t1"))).await, "token t1");
    not_found(fails(&s, cs(revoke("t404"))).await, "token t404");
    // A workload's token keeps what its platform asserted.
    let ci = TokenRecord {
        workload: Some(pedm_core::workload::WorkloadIdentity {
            trust: "github".into(),
            issuer: "https://token.actions.githubusercontent.com".into(),
            subject: "repo:org/app:ref:refs/heads/main".into(),
            repository: Some("org/app".into()),
            git_ref: Some("refs/heads/main".into()),
            ..Default::default()
        }),
        ..token("t4", "alice", 35)
    };
    ok(&s, cs(Write::InsertToken(ci.clone()))).await;
    assert_eq!(s.token("t4").await.unwrap(), Some(ci));
    // A token minted for an AI agent stays one.
    let agent = TokenRecord {
        agent: true,
        ..token("t5", "alice", 36)
    };
    ok(&s, cs(Write::InsertToken(agent.clone()))).await;
    assert_eq!(s.token("t5").await.unwrap(), Some(agent));
    assert!(!s.token("t1").await.unwrap().unwrap().agent);
    whole_chain(&s).await;
}

async fn targets_and_roles(db: Db) {
    let s = db.open().await;
    ok(&s, cs(Write::InsertTarget(target("web1")))).await;
    let mut db1 = target("db1");
    db1.kind = TargetKind::Postgres;
    db1.labels.clear();
    ok(&s, cs(Write::InsertTarget(db1.clone()))).await;
    exists(
        fails(&s, cs(Write::InsertTarget(target("web1")))).await,
        "target web1",
    );
    assert_eq!(s.target("web1").await.unwrap(), Some(target("web1")));
    assert_eq!(s.target("db1").await.unwrap(), Some(db1));
    let names: Vec<_> = s
        .targets()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, ["db1", "web1"]);

    ok(&s, cs(Write::InsertRole(role("web1", "root")))).await;
    ok(&s, cs(Write::InsertRole(role("web1", "docker")))).await;
    let mut rw = role("db1", "readwrite");
    rw.auto_approve = false;
    rw.run_as = None;
    ok(&s, cs(Write::InsertRole(rw.clone()))).await;
    exists(
        fails(&s, cs(Write::InsertRole(role("web1", "root")))).await,
        "role root",
    );
    not_found(
        fails(&s, cs(Write::InsertRole(role("nohost", "root")))).await,
        "target nohost",
    );

    assert_eq!(
        s.role("web1", "root").await.unwrap(),
        Some(role("web1", "root"))
    );
    assert_eq!(s.role("db1", "readwrite").await.unwrap(), Some(rw));
    assert_eq!(s.role("db1", "root").await.unwrap(), None);
    let pairs = |v: Vec<Role>| {
        v.into_iter()
            .map(|r| format!("{}/{}", r.target, r.name))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        pairs(s.roles(None).await.unwrap()),
        ["db1/readwrite", "web1/docker", "web1/root"]
    );
    assert_eq!(
        pairs(s.roles(Some("web1")).await.unwrap()),
        ["web1/docker", "web1/root"]
    );
    assert!(s.roles(Some("nohost")).await.unwrap().is_empty());
    whole_chain(&s).await;
}

async fn requests_and_versions(db: Db) {
    let s = db.open().await;
    let r = request("alice", "web1", 0);
    ok(&s, cs(Write::InsertRequest(r.clone()))).await;
    assert_eq!(s.request(r.id).await.unwrap(), Some(r.clone()));
    exists(
        fails(&s, cs(Write::InsertRequest(r.clone()))).await,
        &r.id.to_string(),
    );

    let mut v2 = r.clone();
    v2.version = 2;
    v2.state = RequestState::Approved;
    v2.decided_at = Some(t(5));
    v2.decided_by = Some("bob".into());
    v2.decision_reason = Some("ok".into());
    v2.grant_id = Some(Uuid::now_v7());
    v2.approvals_required = 0;
    v2.break_glass = true;
    v2.review = Some(Review {
        state: ReviewState::Open,
        reviewed_by: None,
        reviewed_at: None,
        comment: None,
    });
    ok(&s, cs(Write::UpdateRequest(v2.clone()))).await;
    let open = s
        .requests(&RequestFilter {
            review: Some(ReviewState::Open),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(open.iter().map(|r| r.id).collect::<Vec<_>>(), vec![r.id]);
    let since = s
        .requests(&RequestFilter {
            since: Some(t(1)),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(since.is_empty(), "created at 0, before the since bound");
    assert_eq!(s.request(r.id).await.unwrap(), Some(v2.clone()));

    // Stale: written against version 1 again, or skipping a version.
    conflict(
        fails(&s, cs(Write::UpdateRequest(v2.clone()))).await,
        &r.id.to_string(),
    );
    let mut v4 = v2.clone();
    v4.version = 4;
    conflict(
        fails(&s, cs(Write::UpdateRequest(v4))).await,
        &r.id.to_string(),
    );
    let mut ghost = request("alice", "web1", 0);
    ghost.version = 2;
    not_found(
        fails(&s, cs(Write::UpdateRequest(ghost.clone()))).await,
        &ghost.id.to_string(),
    );
    assert_eq!(s.request(r.id).await.unwrap(), Some(v2));
    whole_chain(&s).await;
}

async fn approvals(db: Db) {
    let s = db.open().await;
    let r = request("alice", "web1", 0);
    ok(&s, cs(Write::InsertRequest(r.clone()))).await;
    let a = |who: &str, at: i64, d: ApprovalDecision| Approval {
        request_id: r.id,
        approver: who.into(),
        decision: d,
        comment: Some(format!("{who} says so")),
        at: t(at),
        tier: 1,
    };
    ok(
        &s,
        cs(Write::InsertApproval(a(
            "carol",
            20,
            ApprovalDecision::Deny,
        ))),
    )
    .await;
    ok(
        &s,
        cs(Write::InsertApproval(a(
            "bob",
            10,
            ApprovalDecision::Approve,
        ))),
    )
    .await;
    let e = fails(
        &s,
        cs(Write::InsertApproval(a("bob", 30, ApprovalDecision::Deny))),
    )
    .await;
    conflict(e, "bob");
    let mut stray = a("bob", 1, ApprovalDecision::Approve);
    stray.request_id = Uuid::now_v7();
    not_found(
        fails(&s, cs(Write::InsertApproval(stray.clone()))).await,
        &stray.request_id.to_string(),
    );
    assert_eq!(
        s.approvals(r.id).await.unwrap(),
        [
            a("bob", 10, ApprovalDecision::Approve),
            a("carol", 20, ApprovalDecision::Deny)
        ]
    );
    assert!(s.approvals(Uuid::now_v7()).await.unwrap().is_empty());
    // Of pending requests only, all in one read.
    let mut done = request("dave", "web1", 5);
    done.state = RequestState::Approved;
    ok(&s, cs(Write::InsertRequest(done.clone()))).await;
    let mut d = a("erin", 40, ApprovalDecision::Approve);
    d.request_id = done.id;
    ok(&s, cs(Write::InsertApproval(d))).await;
    assert_eq!(
        s.pending_approvals().await.unwrap(),
        [
            a("bob", 10, ApprovalDecision::Approve),
            a("carol", 20, ApprovalDecision::Deny)
        ]
    );
}

async fn grants_end_exactly_once(db: Db) {
    let s = db.open().await;
    let r = request("alice", "web1", 0);
    let g = grant_for(&r, 100);
    ok(
        &s,
        Changeset::new()
            .write(Write::InsertRequest(r.clone()))
            .write(Write::InsertGrant(g.clone()))
            .event(ev("request.created", "request:1"))
            .event(ev("grant.created", "grant:1")),
    )
    .await;
    assert_eq!(s.grant(g.id).await.unwrap(), Some(g.clone()));
    // A second grant for the same request, whatever its id.
    let mut again = grant_for(&r, 200);
    exists(
        fails(&s, cs(Write::InsertGrant(again.clone()))).await,
        &r.id.to_string(),
    );
    again.id = g.id; // same grant id, another request
    again.request_id = Uuid::now_v7();
    exists(
        fails(&s, cs(Write::InsertGrant(again.clone()))).await,
        &format!("grant {}", g.id),
    );
    again.id = Uuid::now_v7(); // a request that does not exist
    not_found(
        fails(&s, cs(Write::InsertGrant(again.clone()))).await,
        &again.request_id.to_string(),
    );

    // An extension moves the expiry only from the expiry it was computed on.
    let extend = |from: i64, to: i64| Write::ExtendGrant {
        id: g.id,
        from: g.expires_at + jiff::SignedDuration::from_secs(from),
        to: g.expires_at + jiff::SignedDuration::from_secs(to),
    };
    ok(&s, cs(extend(0, 60))).await;
    assert_eq!(
        s.grant(g.id).await.unwrap().unwrap().expires_at,
        g.expires_at + jiff::SignedDuration::from_secs(60)
    );
    conflict(fails(&s, cs(extend(0, 120))).await, "no longer active");
    ok(&s, cs(extend(60, 0))).await;
    let nobody = Uuid::now_v7();
    not_found(
        fails(
            &s,
            cs(Write::ExtendGrant {
                id: nobody,
                from: g.expires_at,
                to: g.expires_at,
            }),
        )
        .await,
        &nobody.to_string(),
    );

    let end = |state: GrantState, id: Uuid| Write::EndGrant {
        id,
        state,
        at: t(500),
        by: "alice".into(),
        reason: Some("done".into()),
    };
    ok(&s, cs(end(GrantState::Released, g.id))).await;
    let ended = s.grant(g.id).await.unwrap().unwrap();
    assert_eq!(ended.state, GrantState::Released);
    assert_eq!(ended.ended_at, Some(t(500)));
    assert_eq!(ended.ended_by.as_deref(), Some("alice"));
    assert_eq!(ended.end_reason.as_deref(), Some("done"));
    conflict(
        fails(&s, cs(end(GrantState::Revoked, g.id))).await,
        &g.id.to_string(),
    );
    conflict(
        fails(&s, cs(end(GrantState::Expired, g.id))).await,
        "not active",
    );
    let nobody = Uuid::now_v7();
    not_found(
        fails(&s, cs(end(GrantState::Revoked, nobody))).await,
        &nobody.to_string(),
    );
    assert_eq!(
        s.grant(g.id).await.unwrap().unwrap().state,
        GrantState::Released
    );
    // An ended grant is not extended.
    conflict(fails(&s, cs(extend(0, 60))).await, "no longer active");
}

async fn failed_changeset_writes_nothing(db: Db) {
    let s = db.open().await;
    ok(&s, cs(Write::InsertUser(user("alice")))).await;
    let r = request("alice", "web1", 0);
    let g = grant_for(&r, 0);
    let all = |last: Write| {
        Changeset::new()
            .write(Write::InsertUser(user("bob")))
            .write(Write::InsertTarget(target("web1")))
            .write(Write::InsertRole(role("web1", "root")))
            .write(Write::InsertRequest(r.clone()))
            .write(Write::InsertGrant(g.clone()))
            .write(Write::InsertToken(token("t1", "bob", 0)))
            .write(Write::AddGroupMember {
                group: "nope".into(),
                user: "bob".into(),
            })
            .write(last)
            .event(ev("a", "x:1"))
            .event(ev("b", "x:2"))
    };
    // AddGroupMember on a missing group fails after six good writes.
    let e = fails(&s, all(Write::UpdateUser(user("alice")))).await;
    not_found(e, "group nope");
    assert!(s.user("bob").await.unwrap().is_none());
    assert!(s.target("web1").await.unwrap().is_none());
    assert!(s.roles(None).await.unwrap().is_empty());
    assert!(s.request(r.id).await.unwrap().is_none());
    assert!(s.grant(g.id).await.unwrap().is_none());
    assert!(s.token("t1").await.unwrap().is_none());
    assert_eq!(whole_chain(&s).await.len(), 1);

    // The same changeset without the bad write goes through, events and all.
    let mut good = all(Write::UpdateUser(user("alice")));
    good.writes.remove(6);
    let events = ok(&s, good).await;
    assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), [2, 3]);
    assert!(s.grant(g.id).await.unwrap().is_some());
    assert_eq!(whole_chain(&s).await.len(), 3);
}

async fn audit_chain_over_many_commits(db: Db) {
    let s = db.open().await;
    let mut returned = Vec::new();
    for i in 0..60i64 {
        let mut c = Changeset::new();
        for j in 0..=(i % 3) {
            c = c.event(
                NewAuditEvent::new(t(i), ["alice", "bob"][(i % 2) as usize], "thing.done", None)
                    .outcome(
                        [Outcome::Success, Outcome::Denied, Outcome::Failure][(j % 3) as usize],
                    )
                    .data(json!({
                        "i": i, "j": j,
                        "float": 0.1 + i as f64 / 7.0, "tiny": 1e-300, "big": u64::MAX,
                        "neg": -i, "text": "ünïcödé ✓ \"quoted\" \\ \n", "null": null,
                        "nested": {"z": [1, {"y": true}], "a": []},
                    })),
            );
        }
        returned.extend(ok(&s, c).await);
    }
    assert_eq!(returned.len(), 120);
    verify_chain(GENESIS_HASH, 1, &returned).unwrap();
    let stored = whole_chain(&s).await;
    // Byte-identical on read-back: same fields, same hashes.
    assert_eq!(stored, returned);
}

async fn audit_filters(db: Db) {
    let s = db.open().await;
    for i in 0..10i64 {
        let actor = if i % 2 == 0 { "alice" } else { "bob" };
        let action = if i < 5 {
            "request.created"
        } else {
            "grant.expired"
        };
        ok(
            &s,
            Changeset::new().event(NewAuditEvent::new(
                t(i * 10),
                actor,
                action,
                Some(format!("request:{}", i % 3)),
            )),
        )
        .await;
    }
    let seqs = |f: AuditFilter| {
        let s = s.clone();
        async move {
            s.audit_events(&f)
                .await
                .unwrap()
                .into_iter()
                .map(|e| e.seq)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        seqs(AuditFilter::default()).await,
        (1..=10).collect::<Vec<_>>()
    );
    assert_eq!(
        seqs(AuditFilter {
            after_seq: Some(7),
            ..Default::default()
        })
        .await,
        [8, 9, 10]
    );
    assert_eq!(
        seqs(AuditFilter {
            limit: Some(3),
            ..Default::default()
        })
        .await,
        [1, 2, 3]
    );
    assert_eq!(
        seqs(AuditFilter {
            after_seq: Some(2),
            limit: Some(2),
            ..Default::default()
        })
        .await,
        [3, 4]
    );
    // Paging backwards from the newest, with a filter.
    assert_eq!(
        seqs(AuditFilter {
            newest_first: true,
            limit: Some(3),
            ..Default::default()
        })
        .await,
        [10, 9, 8]
    );
    assert_eq!(
        seqs(AuditFilter {
            newest_first: true,
            before_seq: Some(8),
            actor: Some("bob".into()),
            limit: Some(2),
            ..Default::default()
        })
        .await,
        [6, 4]
    );
    assert_eq!(
        seqs(AuditFilter {
            actor: Some("bob".into()),
            ..Default::default()
        })
        .await,
        [2, 4, 6, 8, 10]
    );
    assert_eq!(
        seqs(AuditFilter {
            action: Some("grant.expired".into()),
            ..Default::default()
        })
        .await,
        [6, 7, 8, 9, 10]
    );
    assert_eq!(
        seqs(AuditFilter {
            subject: Some("request:0".into()),
            ..Default::default()
        })
        .await,
        [1, 4, 7, 10]
    );
    // since inclusive, until exclusive
    assert_eq!(
        seqs(AuditFilter {
            since: Some(t(30)),
            until: Some(t(60)),
            ..Default::default()
        })
        .await,
        [4, 5, 6]
    );
    assert_eq!(
        seqs(AuditFilter {
            actor: Some("alice".into()),
            action: Some("request.created".into()),
            since: Some(t(10)),
            ..Default::default()
        })
        .await,
        [3, 5]
    );
    assert!(
        seqs(AuditFilter {
            actor: Some("mallory".into()),
            ..Default::default()
        })
        .await
        .is_empty()
    );
    // A page read from the middle verifies from the previous event's hash.
    let all = whole_chain(&s).await;
    let page = s
        .audit_events(&AuditFilter {
            after_seq: Some(4),
            limit: Some(3),
            ..Default::default()
        })
        .await
        .unwrap();
    verify_chain(all[3].hash, 5, &page).unwrap();
}

async fn event_times_are_stored_to_the_microsecond(db: Db) {
    let s = db.open().await;
    let at = Timestamp::new(1_700_000_000, 123_456_789).unwrap();
    let out = ok(
        &s,
        Changeset::new().event(NewAuditEvent::new(at, "alice", "x.y", None)),
    )
    .await;
    assert_eq!(
        out[0].at,
        Timestamp::new(1_700_000_000, 123_456_000).unwrap()
    );
    assert_eq!(whole_chain(&s).await, out);
}

async fn concurrent_commits_keep_one_chain(db: Db) {
    // Several store instances (separate pools, as several pedmd processes would have).
    let stores = [db.open().await, db.open().await, db.open().await];
    let mut tasks = Vec::new();
    for task in 0..32 {
        let s = stores[task % stores.len()].clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..5 {
                let name = format!("u{task}x{i}");
                let c = Changeset::new()
                    .write(Write::InsertUser(user(&name)))
                    .event(NewAuditEvent::new(
                        t(i),
                        &name,
                        "user.created",
                        Some(format!("user:{name}")),
                    ))
                    .event(
                        NewAuditEvent::new(t(i), &name, "user.checked", None)
                            .data(json!({"task": task})),
                    );
                let out = s.commit(c).await.unwrap();
                assert_eq!(out[1].seq, out[0].seq + 1);
                assert_eq!(out[1].prev_hash, out[0].hash);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let s = db.open().await;
    let all = whole_chain(&s).await;
    assert_eq!(all.len(), 320);
    assert_eq!(s.user_count().await.unwrap(), 160);
}

async fn concurrent_update_request_one_wins(db: Db) {
    let stores = [db.open().await, db.open().await];
    let r = request("alice", "web1", 0);
    ok(&stores[0], cs(Write::InsertRequest(r.clone()))).await;
    let mut tasks = Vec::new();
    for i in 0..16 {
        let s = stores[i % 2].clone();
        let mut v2 = r.clone();
        v2.version = 2;
        v2.state = RequestState::Approved;
        v2.decided_by = Some(format!("approver{i}"));
        tasks.push(tokio::spawn(async move {
            s.commit(
                Changeset::new()
                    .write(Write::UpdateRequest(v2))
                    .event(ev("request.approved", "r:1")),
            )
            .await
        }));
    }
    let mut wins = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => wins += 1,
            Err(e) => conflict(e, &r.id.to_string()),
        }
    }
    assert_eq!(wins, 1);
    let stored = stores[0].request(r.id).await.unwrap().unwrap();
    assert_eq!(stored.version, 2);
    let approved = AuditFilter {
        action: Some("request.approved".into()),
        ..Default::default()
    };
    assert_eq!(stores[0].audit_events(&approved).await.unwrap().len(), 1);
    whole_chain(&stores[1]).await;
}

async fn concurrent_end_grant_one_wins(db: Db) {
    let stores = [db.open().await, db.open().await];
    let r = request("alice", "web1", 0);
    let g = grant_for(&r, 0);
    ok(
        &stores[0],
        Changeset::new()
            .write(Write::InsertRequest(r))
            .write(Write::InsertGrant(g.clone())),
    )
    .await;
    let mut tasks = Vec::new();
    for i in 0..16 {
        let s = stores[i % 2].clone();
        let end = Write::EndGrant {
            id: g.id,
            state: if i % 2 == 0 {
                GrantState::Revoked
            } else {
                GrantState::Expired
            },
            at: t(i as i64),
            by: format!("actor{i}"),
            reason: None,
        };
        tasks.push(tokio::spawn(async move {
            s.commit(Changeset::new().write(end).event(ev("grant.ended", "g:1")))
                .await
        }));
    }
    let mut wins = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => wins += 1,
            Err(e) => conflict(e, "not active"),
        }
    }
    assert_eq!(wins, 1);
    assert_eq!(whole_chain(&stores[0]).await.len(), 1);
}

/// Two grants sharing a privilege end at the same moment, each counting on the other to stay
/// live (`RequireGrantsActive` before its `EndGrant`): exactly one commits, the other is
/// refused (it then sees the first ended and revokes); the precondition alone changes nothing.
async fn overlapping_grants_cannot_both_count_on_each_other(db: Db) {
    let stores = [db.open().await, db.open().await];
    let (r1, r2) = (request("alice", "web1", 0), request("alice", "web1", 1));
    let (g1, g2) = (grant_for(&r1, 0), grant_for(&r2, 0));
    ok(
        &stores[0],
        Changeset::new()
            .write(Write::InsertRequest(r1))
            .write(Write::InsertRequest(r2))
            .write(Write::InsertGrant(g1.clone()))
            .write(Write::InsertGrant(g2.clone())),
    )
    .await;
    let both = vec![g1.id, g2.id];
    ok(
        &stores[0],
        cs(Write::RequireGrantsActive { ids: both.clone() }).event(ev("check", "g:0")),
    )
    .await;
    for round in 0..4 {
        let mut tasks = Vec::new();
        for (i, id) in [g1.id, g2.id].into_iter().enumerate() {
            let s = stores[i].clone();
            let c = Changeset::new()
                .write(Write::RequireGrantsActive { ids: both.clone() })
                .write(Write::EndGrant {
                    id,
                    state: GrantState::Released,
                    at: t(10),
                    by: "alice".into(),
                    reason: None,
                })
                .event(ev("grant.released", "g:1"));
            tasks.push(tokio::spawn(async move { s.commit(c).await }));
        }
        let mut wins = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(_) => wins += 1,
                Err(e) => conflict(e, "no longer active"),
            }
        }
        if round == 0 {
            assert_eq!(
                wins, 1,
                "exactly one of two overlapping grants counts on the other"
            );
        } else {
            assert_eq!(wins, 0, "both ended or counted on an ended grant");
        }
    }
    let e = fails(
        &stores[1],
        cs(Write::RequireGrantsActive {
            ids: vec![Uuid::now_v7()],
        }),
    )
    .await;
    not_found(e, "does not exist");
}

async fn deadlines_and_overdue(db: Db) {
    let s = db.open().await;
    // Pending requests with deadlines 600+{50, 10, 30}; an approved one with an earlier one.
    let mut reqs = Vec::new();
    for created in [50, 10, 30, 0] {
        reqs.push(request("alice", "web1", created));
    }
    reqs[3].state = RequestState::Approved;
    let mut c = Changeset::new();
    for r in &reqs {
        c = c.write(Write::InsertRequest(r.clone()));
    }
    // Active grants expiring at 100+1800 and 20+1800; an ended one expiring earlier.
    let g1 = grant_for(&reqs[0], 100);
    let g2 = grant_for(&reqs[1], 20);
    let mut g3 = grant_for(&reqs[2], 0);
    g3.state = GrantState::Revoked;
    for g in [&g1, &g2, &g3] {
        c = c.write(Write::InsertGrant(g.clone()));
    }
    ok(&s, c).await;

    assert_eq!(s.next_request_deadline().await.unwrap(), Some(t(610)));
    let ids = |v: Vec<Request>| v.into_iter().map(|r| r.id).collect::<Vec<_>>();
    assert!(s.overdue_requests(t(609), 10).await.unwrap().is_empty());
    assert_eq!(
        ids(s.overdue_requests(t(610), 10).await.unwrap()),
        [reqs[1].id]
    );
    assert_eq!(
        ids(s.overdue_requests(t(10_000), 10).await.unwrap()),
        [reqs[1].id, reqs[2].id, reqs[0].id]
    );
    assert_eq!(
        ids(s.overdue_requests(t(10_000), 2).await.unwrap()),
        [reqs[1].id, reqs[2].id]
    );

    assert_eq!(s.next_grant_deadline().await.unwrap(), Some(t(1820)));
    let gids = |v: Vec<Grant>| v.into_iter().map(|g| g.id).collect::<Vec<_>>();
    assert!(s.overdue_grants(t(1819), 10).await.unwrap().is_empty());
    assert_eq!(gids(s.overdue_grants(t(1820), 10).await.unwrap()), [g2.id]);
    assert_eq!(
        gids(s.overdue_grants(t(99_999), 10).await.unwrap()),
        [g2.id, g1.id]
    );
    assert_eq!(gids(s.overdue_grants(t(99_999), 1).await.unwrap()), [g2.id]);

    // Ending / deciding removes them from the schedule.
    let mut expired = reqs[1].clone();
    expired.state = RequestState::Expired;
    expired.version = 2;
    ok(
        &s,
        Changeset::new()
            .write(Write::UpdateRequest(expired))
            .write(Write::EndGrant {
                id: g2.id,
                state: GrantState::Expired,
                at: t(1820),
                by: "system".into(),
                reason: None,
            }),
    )
    .await;
    assert_eq!(s.next_request_deadline().await.unwrap(), Some(t(630)));
    assert_eq!(s.next_grant_deadline().await.unwrap(), Some(t(1900)));
}

async fn request_and_grant_filters(db: Db) {
    let s = db.open().await;
    let mut reqs = Vec::new();
    for (i, (who, tgt)) in [
        ("alice", "web1"),
        ("bob", "web1"),
        ("alice", "db1"),
        ("alice", "web1"),
        ("bob", "db1"),
    ]
    .into_iter()
    .enumerate()
    {
        let mut r = request(who, tgt, i as i64 * 10);
        if i % 2 == 1 {
            r.state = RequestState::Approved;
        }
        reqs.push(r);
    }
    let mut c = Changeset::new();
    for r in &reqs {
        c = c.write(Write::InsertRequest(r.clone()));
    }
    let mut grants = Vec::new();
    for (i, r) in reqs.iter().enumerate() {
        let mut g = grant_for(r, i as i64 * 10);
        if i == 2 {
            g.state = GrantState::Expired;
        }
        c = c.write(Write::InsertGrant(g.clone()));
        grants.push(g);
    }
    ok(&s, c).await;

    let rq = |f: RequestFilter| {
        let s = s.clone();
        async move {
            s.requests(&f)
                .await
                .unwrap()
                .into_iter()
                .map(|r| r.id)
                .collect::<Vec<_>>()
        }
    };
    let rid = |is: &[usize]| is.iter().map(|&i| reqs[i].id).collect::<Vec<_>>();
    assert_eq!(rq(RequestFilter::default()).await, rid(&[4, 3, 2, 1, 0]));
    assert_eq!(
        rq(RequestFilter {
            limit: Some(2),
            ..Default::default()
        })
        .await,
        rid(&[4, 3])
    );
    assert_eq!(
        rq(RequestFilter {
            requester: Some("alice".into()),
            ..Default::default()
        })
        .await,
        rid(&[3, 2, 0])
    );
    assert_eq!(
        rq(RequestFilter {
            state: Some(RequestState::Approved),
            ..Default::default()
        })
        .await,
        rid(&[3, 1])
    );
    assert_eq!(
        rq(RequestFilter {
            target: Some("db1".into()),
            ..Default::default()
        })
        .await,
        rid(&[4, 2])
    );
    assert_eq!(
        rq(RequestFilter {
            requester: Some("alice".into()),
            state: Some(RequestState::Pending),
            target: Some("web1".into()),
            limit: Some(5),
            ..Default::default()
        })
        .await,
        rid(&[0])
    );

    let gq = |f: GrantFilter| {
        let s = s.clone();
        async move {
            s.grants(&f)
                .await
                .unwrap()
                .into_iter()
                .map(|g| g.id)
                .collect::<Vec<_>>()
        }
    };
    let gid = |is: &[usize]| is.iter().map(|&i| grants[i].id).collect::<Vec<_>>();
    assert_eq!(gq(GrantFilter::default()).await, gid(&[4, 3, 2, 1, 0]));
    assert_eq!(
        gq(GrantFilter {
            user: Some("bob".into()),
            ..Default::default()
        })
        .await,
        gid(&[4, 1])
    );
    assert_eq!(
        gq(GrantFilter {
            state: Some(GrantState::Active),
            ..Default::default()
        })
        .await,
        gid(&[4, 3, 1, 0])
    );
    assert_eq!(
        gq(GrantFilter {
            target: Some("db1".into()),
            limit: Some(1),
            ..Default::default()
        })
        .await,
        gid(&[4])
    );
    assert_eq!(
        gq(GrantFilter {
            user: Some("alice".into()),
            state: Some(GrantState::Expired),
            target: Some("db1".into()),
            limit: None,
            held_between: None,
        })
        .await,
        gid(&[2])
    );
    // Held at some moment of a window: started by its end, expiring at its start or later.
    let held = |from: i64, to: i64| GrantFilter {
        held_between: Some((t(from), t(to))),
        ..Default::default()
    };
    assert_eq!(gq(held(25, 2000)).await, gid(&[4, 3, 2, 1, 0]));
    assert_eq!(gq(held(1815, 2000)).await, gid(&[4, 3, 2]));
    assert_eq!(gq(held(0, 15)).await, gid(&[1, 0]));
    assert!(gq(held(5000, 6000)).await.is_empty());
}

async fn reopen_keeps_everything(db: Db) {
    let r = request("alice", "web1", 0);
    let events = {
        let s = db.open().await;
        let mut out = ok(&s, cs(Write::InsertUser(user("alice")))).await;
        out.extend(ok(&s, cs(Write::InsertRequest(r.clone()))).await);
        out
    }; // dropped: pools close
    let s = db.open().await; // migrations again: already applied, no-op
    assert_eq!(s.user("alice").await.unwrap(), Some(user("alice")));
    assert_eq!(s.request(r.id).await.unwrap(), Some(r));
    assert_eq!(whole_chain(&s).await, events);
    // The chain continues where it stopped.
    let more = ok(&s, cs(Write::InsertUser(user("bob")))).await;
    assert_eq!(more[0].seq, 3);
    assert_eq!(more[0].prev_hash, events[1].hash);
}

// ------------------------------------------------------------------- backend specifics

#[tokio::test]
async fn sqlite_commits_are_durable_across_close() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/dir/pedm.db"); // parents created
    let s = SqliteStore::open(&path).await.unwrap();
    s.commit(cs(Write::InsertUser(user("alice"))))
        .await
        .unwrap();
    s.close().await;
    assert!(s.user("alice").await.is_err(), "closed store still answers");
    drop(s);
    let s = SqliteStore::open(&path).await.unwrap();
    assert_eq!(s.user("alice").await.unwrap(), Some(user("alice")));
    assert_eq!(s.path(), path);
}

#[tokio::test]
async fn open_store_dispatches_on_the_url() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.db");
    let s = pedm_store::open_store(&format!("sqlite://{}", a.display()))
        .await
        .unwrap();
    s.commit(cs(Write::InsertUser(user("alice"))))
        .await
        .unwrap();
    let s = pedm_store::open_store(&format!("sqlite:{}?mode=rwc", a.display()))
        .await
        .unwrap();
    assert_eq!(s.user_count().await.unwrap(), 1);

    for bad in ["sqlite::memory:", "sqlite://", "mysql://u:pw@h/db"] {
        let e = pedm_store::open_store(bad).await.err().expect(bad);
        assert!(matches!(e, StoreError::Backend(_)), "{bad}: {e:?}");
        assert!(!e.to_string().contains("pw@"), "{e}");
    }
    // An unreachable server: the error names it but never the password.
    let e = pedm_store::open_store("postgres://pedm:hunter2secret@127.0.0.1:1/pedm")
        .await
        .err()
        .unwrap();
    let msg = e.to_string();
    assert!(matches!(e, StoreError::Backend(_)), "{msg}");
    assert!(!msg.contains("hunter2secret"), "{msg}");
    assert!(msg.contains("127.0.0.1"), "{msg}");

    if let Some(pg) = cluster() {
        let url = pg.fresh_database("open_store").unwrap();
        let s = pedm_store::open_store(&url).await.unwrap();
        assert_eq!(s.user_count().await.unwrap(), 0);
        let s = pedm_store::open_store(&url.replace("postgres://", "postgresql://"))
            .await
            .unwrap();
        assert_eq!(s.user_count().await.unwrap(), 0);
    }
}

/// The harness can take the server away and bring it back (later tests simulate a target
/// down this way); the store reports the outage as a backend error and recovers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_is_a_backend_error_and_recovers() {
    // Its own cluster: stopping the shared one would break the other tests.
    let pg = match TestPostgres::start() {
        Ok(pg) => pg,
        Err(e @ TestPgError::Unavailable(_)) => return println!("SKIP: {e}"),
        Err(e) => panic!("{e}"),
    };
    let s = PostgresStore::connect(&pg.url()).await.unwrap();
    s.commit(cs(Write::InsertUser(user("alice"))))
        .await
        .unwrap();
    pg.stop().unwrap();
    assert!(!pg.is_running());
    let e = s
        .commit(cs(Write::InsertUser(user("bob"))))
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Backend(_)), "{e:?}");
    pg.start_again().unwrap();
    // The pool drops broken connections and reconnects.
    let mut recovered = false;
    for _ in 0..20 {
        match s.commit(cs(Write::InsertUser(user("bob")))).await {
            Ok(_) => {
                recovered = true;
                break;
            }
            Err(e) => eprintln!("after restart: {e}"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(recovered);
    assert_eq!(s.user_count().await.unwrap(), 2);
    let all = s.audit_events(&AuditFilter::default()).await.unwrap();
    verify_chain(GENESIS_HASH, 1, &all).unwrap();
    assert_eq!(all.len(), 2);
}

/// Targets and roles read are cached: this instance's own role change is seen at once; one
/// made through another instance sharing the PostgreSQL database is seen once the cached row
/// is a second old (it is never seen later than that, and never earlier than a re-read).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_role_changes_of_another_instance_are_seen_within_a_second() {
    let Some(Db::Postgres(url)) = Db::postgres("catalog_ttl") else {
        return;
    };
    let a = PostgresStore::connect(&url).await.unwrap();
    let b = PostgresStore::connect(&url).await.unwrap();
    a.commit(
        Changeset::new()
            .write(Write::InsertTarget(target("web1")))
            .write(Write::InsertRole(role("web1", "root"))),
    )
    .await
    .unwrap();
    async fn read(s: &PostgresStore) -> i64 {
        s.role("web1", "root")
            .await
            .unwrap()
            .unwrap()
            .max_duration_secs
    }
    let first = read(&a).await;
    assert_eq!(read(&b).await, first);

    // Through a: a sees it at once (its own write empties its cache).
    let mut changed = role("web1", "root");
    changed.max_duration_secs = first + 60;
    a.commit(Changeset::new().write(Write::UpdateRole(changed.clone())))
        .await
        .unwrap();
    assert_eq!(read(&a).await, first + 60);
    // b, which had it cached, sees it once its copy is a second old.
    let since = std::time::Instant::now();
    let mut seen = read(&b).await;
    while seen != first + 60 {
        assert!(
            since.elapsed() < std::time::Duration::from_secs(10),
            "another instance's role change never seen"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        seen = read(&b).await;
    }
}

async fn policy_versions_only_grow(db: Db) {
    let s = db.open().await;
    assert_eq!(s.policy_version(None).await.unwrap(), None);
    assert_eq!(s.latest_policy_version_number().await.unwrap(), None);
    let v = |n: i64| PolicyVersion {
        version: n,
        created_at: t(n),
        created_by: "admin".into(),
        comment: Some(format!("v{n}")),
        digest: format!("{n:064}"),
        sources: vec![PolicySource {
            name: "base.cedar".into(),
            text: format!("// {n}\npermit(principal, action, resource);"),
        }],
    };
    conflict(
        fails(&s, cs(Write::InsertPolicyVersion(v(2)))).await,
        "cannot follow",
    );
    ok(&s, cs(Write::InsertPolicyVersion(v(1)))).await;
    conflict(
        fails(&s, cs(Write::InsertPolicyVersion(v(1)))).await,
        "cannot follow",
    );
    ok(&s, cs(Write::InsertPolicyVersion(v(2)))).await;
    assert_eq!(s.policy_version(None).await.unwrap(), Some(v(2)));
    assert_eq!(s.policy_version(Some(1)).await.unwrap(), Some(v(1)));
    assert_eq!(s.policy_version(Some(9)).await.unwrap(), None);
    assert_eq!(s.latest_policy_version_number().await.unwrap(), Some(2));
    assert_eq!(s.policy_versions().await.unwrap(), vec![v(2), v(1)]);
    whole_chain(&s).await;
}

async fn audit_checkpoints_and_hashes(db: Db) {
    let s = db.open().await;
    assert_eq!(s.checkpoints().await.unwrap(), vec![]);
    assert_eq!(s.latest_checkpoint().await.unwrap(), None);
    assert_eq!(s.audit_hashes(1, 10).await.unwrap(), Vec::<[u8; 32]>::new());
    for i in 0..5i64 {
        ok(
            &s,
            Changeset::new().event(NewAuditEvent::new(t(i), "alice", "thing.done", None)),
        )
        .await;
    }
    let chain = whole_chain(&s).await;
    let hashes: Vec<[u8; 32]> = chain.iter().map(|e| e.hash).collect();
    assert_eq!(s.audit_hashes(1, 5).await.unwrap(), hashes);
    assert_eq!(s.audit_hashes(2, 3).await.unwrap(), hashes[1..3].to_vec());
    assert_eq!(s.audit_hashes(4, 99).await.unwrap(), hashes[3..].to_vec());

    let cp = |size: i64, root: u8| CheckpointRecord {
        size,
        root: [root; 32],
        time: t(size),
        key_id: "0011223344556677".into(),
        signature: vec![root; 64],
    };
    s.save_checkpoint(&cp(3, 1)).await.unwrap();
    s.save_checkpoint(&cp(5, 2)).await.unwrap();
    s.save_checkpoint(&cp(1, 3)).await.unwrap();
    // Same size and root again: idempotent.
    s.save_checkpoint(&cp(3, 1)).await.unwrap();
    // Same size, another root: a fork, refused, and the stored one stays.
    match s.save_checkpoint(&cp(3, 9)).await {
        Err(StoreError::Conflict(m)) => assert!(m.contains("size 3"), "{m}"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    let all = s.checkpoints().await.unwrap();
    assert_eq!(all, vec![cp(1, 3), cp(3, 1), cp(5, 2)]);
    assert_eq!(s.latest_checkpoint().await.unwrap(), Some(cp(5, 2)));
    // A range: after < size <= through, ascending.
    assert_eq!(
        s.checkpoints_between(1, 5).await.unwrap(),
        vec![cp(3, 1), cp(5, 2)]
    );
    assert_eq!(s.checkpoints_between(2, 3).await.unwrap(), vec![cp(3, 1)]);
    assert_eq!(s.checkpoints_between(3, 4).await.unwrap(), vec![]);
    assert_eq!(s.checkpoints_between(0, 1).await.unwrap(), vec![cp(1, 3)]);
    // Survives a reopen byte for byte.
    drop(s);
    let s = db.open().await;
    assert_eq!(s.checkpoints().await.unwrap(), all);
}

async fn audit_prune_keeps_hashes_and_drops_content(db: Db) {
    let s = db.open().await;
    let mut all = vec![];
    for i in 0..5 {
        all.extend(ok(&s, cs(Write::InsertUser(user(&format!("u{i}"))))).await);
    }
    let hashes = s.audit_hashes(1, 5).await.unwrap();
    ok(
        &s,
        cs(Write::PruneAudit {
            after: 0,
            through: 3,
        }),
    )
    .await;
    let left = s.audit_events(&AuditFilter::default()).await.unwrap();
    assert_eq!(
        left.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [4, 5, 6],
        "the pruned ones are left out; the prune's own event is 6"
    );
    assert_eq!(s.audit_hashes(1, 5).await.unwrap(), hashes);
    assert_eq!(left[0], all[3]);
    // Only content still there is pruned: a second pruning of the same range conflicts.
    let e = fails(
        &s,
        cs(Write::PruneAudit {
            after: 0,
            through: 3,
        }),
    )
    .await;
    assert!(matches!(e, StoreError::Conflict(_)), "{e:?}");
    ok(
        &s,
        cs(Write::PruneAudit {
            after: 3,
            through: 4,
        }),
    )
    .await;
    let left = s.audit_events(&AuditFilter::default()).await.unwrap();
    assert_eq!(left[0].seq, 5);
}

async fn audit_rewind_to_the_last_event(db: Db) {
    let s = db.open().await;
    for i in 0..5i64 {
        ok(
            &s,
            Changeset::new().event(NewAuditEvent::new(t(i), "alice", "thing.done", None)),
        )
        .await;
    }
    let cp = |size: i64| CheckpointRecord {
        size,
        root: [size as u8; 32],
        time: t(size),
        key_id: "0011223344556677".into(),
        signature: vec![1; 64],
    };
    for size in [3, 5, 7, 9] {
        s.save_checkpoint(&cp(size)).await.unwrap();
    }
    // Events after the size remain: refused, nothing changes.
    conflict(s.rewind_audit(3).await.unwrap_err(), "after 3");
    assert_eq!(s.checkpoints().await.unwrap().len(), 4);
    // At the last event: the checkpoints beyond it go, the head stays.
    assert_eq!(s.rewind_audit(5).await.unwrap(), 2);
    assert_eq!(s.checkpoints().await.unwrap(), vec![cp(3), cp(5)]);
    let head = s.audit_head().await.unwrap().expect("head");
    assert_eq!(head.0, 5);
    // The next event chains onto event 5.
    let next = ok(
        &s,
        Changeset::new().event(NewAuditEvent::new(t(6), "alice", "thing.done", None)),
    )
    .await;
    assert_eq!(next[0].seq, 6);
    assert_eq!(next[0].prev_hash, head.1);
}

async fn audit_target_and_request_filters(db: Db) {
    let s = db.open().await;
    let req = Uuid::now_v7();
    let other = Uuid::now_v7();
    let ev = |i: i64, action: &str, subject: String, data: serde_json::Value| {
        NewAuditEvent::new(t(i), "alice", action, Some(subject)).data(data)
    };
    let events = [
        ev(
            1,
            "target.created",
            "target:web1".into(),
            serde_json::json!({}),
        ),
        ev(
            2,
            "role.created",
            "role:web1/root".into(),
            serde_json::json!({}),
        ),
        ev(
            3,
            "request.created",
            format!("request:{req}"),
            serde_json::json!({"target": "web1"}),
        ),
        ev(
            4,
            "grant.started",
            "grant:g1".into(),
            serde_json::json!({"target": "web1", "request": req.to_string()}),
        ),
        ev(
            5,
            "request.created",
            format!("request:{other}"),
            serde_json::json!({"target": "web10"}),
        ),
        ev(
            6,
            "role.created",
            "role:web10/root".into(),
            serde_json::json!({}),
        ),
    ];
    for e in events {
        ok(&s, Changeset::new().event(e)).await;
    }
    let seqs = |f: AuditFilter| {
        let s = s.clone();
        async move {
            s.audit_events(&f)
                .await
                .unwrap()
                .into_iter()
                .map(|e| e.seq)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        seqs(AuditFilter {
            target: Some("web1".into()),
            ..Default::default()
        })
        .await,
        [1, 2, 3, 4]
    );
    assert_eq!(
        seqs(AuditFilter {
            request: Some(req),
            ..Default::default()
        })
        .await,
        [3, 4]
    );
    assert_eq!(
        seqs(AuditFilter {
            target: Some("web10".into()),
            ..Default::default()
        })
        .await,
        [5, 6]
    );
    assert!(
        seqs(AuditFilter {
            target: Some("x'; DROP TABLE audit_events; --".into()),
            ..Default::default()
        })
        .await
        .is_empty()
    );
}

fn job(grant: Uuid, action: ProvisionAction, at: i64) -> ProvisionJob {
    ProvisionJob {
        id: Uuid::now_v7(),
        grant_id: Some(grant),
        action,
        drift: None,
        attempts: 0,
        next_attempt_at: t(at),
        last_error: None,
        done: false,
        created_at: t(at),
    }
}

async fn provisioning_jobs_and_secrets(db: Db) {
    let s = db.open().await;
    let r = request("alice", "db1", 0);
    let mut g = grant_for(&r, 100);
    g.provision_state = ProvisionState::Provisioning;
    let j1 = job(g.id, ProvisionAction::Grant, 100);
    ok(
        &s,
        Changeset::new()
            .write(Write::InsertRequest(r.clone()))
            .write(Write::InsertGrant(g.clone()))
            .write(Write::InsertJob(j1.clone()))
            .event(ev("grant.started", "grant:1")),
    )
    .await;
    assert_eq!(s.grant(g.id).await.unwrap(), Some(g.clone()));
    assert_eq!(s.grant_jobs(g.id).await.unwrap(), vec![j1.clone()]);
    assert_eq!(s.next_job_at().await.unwrap(), Some(t(100)));
    assert!(s.due_jobs(t(99), 10).await.unwrap().is_empty());
    assert_eq!(s.due_jobs(t(100), 10).await.unwrap(), vec![j1.clone()]);
    exists(
        fails(&s, cs(Write::InsertJob(j1.clone()))).await,
        &j1.id.to_string(),
    );
    let orphan = job(Uuid::now_v7(), ProvisionAction::Grant, 0);
    not_found(
        fails(&s, cs(Write::InsertJob(orphan.clone()))).await,
        &orphan.grant_id.unwrap().to_string(),
    );

    // A retry: one attempt recorded, rescheduled. Recording the same attempt again conflicts.
    let mut retry = j1.clone();
    retry.attempts = 1;
    retry.next_attempt_at = t(200);
    retry.last_error = Some("target unreachable".into());
    let upd = |job: &ProvisionJob, expected: i64| Write::UpdateJob {
        job: job.clone(),
        expected_attempts: expected,
    };
    ok(&s, cs(upd(&retry, 0))).await;
    conflict(fails(&s, cs(upd(&retry, 0))).await, &j1.id.to_string());
    assert_eq!(s.grant_jobs(g.id).await.unwrap(), vec![retry.clone()]);
    assert_eq!(s.next_job_at().await.unwrap(), Some(t(200)));
    assert!(s.due_jobs(t(150), 10).await.unwrap().is_empty());

    // Success: job done, grant active, secret stored; all in one changeset.
    let mut done = retry.clone();
    done.attempts = 2;
    done.done = true;
    done.last_error = None;
    let set = |from: Vec<ProvisionState>, to: ProvisionState| Write::SetProvisionState {
        grant_id: g.id,
        from,
        to,
        detail: Some(format!("now {to}")),
    };
    ok(
        &s,
        Changeset::new()
            .write(upd(&done, 1))
            .write(set(
                vec![ProvisionState::Provisioning],
                ProvisionState::Active,
            ))
            .write(Write::PutGrantSecret {
                grant_id: g.id,
                secret: "s3cret".into(),
            })
            .event(ev("provision.granted", "grant:1")),
    )
    .await;
    assert_eq!(s.next_job_at().await.unwrap(), None);
    assert!(s.due_jobs(t(10_000), 10).await.unwrap().is_empty());
    conflict(fails(&s, cs(upd(&done, 2))).await, "done");
    let got = s.grant(g.id).await.unwrap().unwrap();
    assert_eq!(got.provision_state, ProvisionState::Active);
    assert_eq!(got.provision_detail.as_deref(), Some("now active"));
    conflict(
        fails(
            &s,
            cs(set(
                vec![ProvisionState::Provisioning],
                ProvisionState::Failed,
            )),
        )
        .await,
        "active",
    );
    let nobody = Uuid::now_v7();
    not_found(
        fails(
            &s,
            cs(Write::SetProvisionState {
                grant_id: nobody,
                from: vec![ProvisionState::Active],
                to: ProvisionState::Revoked,
                detail: None,
            }),
        )
        .await,
        &nobody.to_string(),
    );
    let mut missing = done.clone();
    missing.id = Uuid::now_v7();
    not_found(
        fails(&s, cs(upd(&missing, 2))).await,
        &missing.id.to_string(),
    );

    // The secret is read once: the delete that must find it wins once.
    assert_eq!(
        s.grant_secret(g.id).await.unwrap().as_deref(),
        Some("s3cret")
    );
    let take = Write::DeleteGrantSecret {
        grant_id: g.id,
        must_exist: true,
    };
    ok(&s, cs(take.clone())).await;
    conflict(fails(&s, cs(take)).await, &g.id.to_string());
    assert_eq!(s.grant_secret(g.id).await.unwrap(), None);
    ok(
        &s,
        cs(Write::DeleteGrantSecret {
            grant_id: g.id,
            must_exist: false,
        }),
    )
    .await;

    // Ending: revoke pending with a revoke job, in the same changeset as the end; a failed
    // precondition anywhere writes nothing.
    let j2 = job(g.id, ProvisionAction::Revoke, 300);
    let end = Write::EndGrant {
        id: g.id,
        state: GrantState::Expired,
        at: t(300),
        by: "system".into(),
        reason: None,
    };
    conflict(
        fails(
            &s,
            Changeset::new()
                .write(end.clone())
                .write(set(
                    vec![ProvisionState::Provisioning],
                    ProvisionState::RevokePending,
                ))
                .write(Write::InsertJob(j2.clone())),
        )
        .await,
        "active",
    );
    assert_eq!(
        s.grant(g.id).await.unwrap().unwrap().state,
        GrantState::Active
    );
    assert_eq!(s.grant_jobs(g.id).await.unwrap().len(), 1);
    ok(
        &s,
        Changeset::new()
            .write(end)
            .write(set(
                vec![ProvisionState::Provisioning, ProvisionState::Active],
                ProvisionState::RevokePending,
            ))
            .write(Write::InsertJob(j2.clone()))
            .event(ev("grant.expired", "grant:1")),
    )
    .await;
    let got = s.grant(g.id).await.unwrap().unwrap();
    assert_eq!(
        (got.state, got.provision_state),
        (GrantState::Expired, ProvisionState::RevokePending)
    );
    assert_eq!(s.due_jobs(t(300), 10).await.unwrap(), vec![j2.clone()]);
    assert_eq!(s.grant_jobs(g.id).await.unwrap().len(), 2);

    // Jobs survive reopening the store.
    drop(s);
    let s = db.open().await;
    assert_eq!(s.due_jobs(t(300), 10).await.unwrap(), vec![j2]);
}

fn drift_job(account: &str, privilege: &str, at: i64) -> ProvisionJob {
    ProvisionJob {
        id: Uuid::now_v7(),
        grant_id: None,
        action: ProvisionAction::RemoveDrift,
        drift: Some(DriftFinding {
            target: "db1".into(),
            account: account.into(),
            privilege: privilege.into(),
            source: "pg_auth_members".into(),
        }),
        attempts: 0,
        next_attempt_at: t(at),
        last_error: None,
        done: false,
        created_at: t(at),
    }
}

/// Drift removals are jobs of no grant: stored with their finding, run like any job, and
/// never queued twice for one (target, account, privilege) while one is pending.
async fn drift_removal_jobs(db: Db) {
    let s = db.open().await;
    let r = request("alice", "db1", 0);
    let g = grant_for(&r, 100);
    let gj = job(g.id, ProvisionAction::Grant, 100);
    let d1 = drift_job("bob", "member:readwrite", 50);
    ok(
        &s,
        Changeset::new()
            .write(Write::InsertRequest(r.clone()))
            .write(Write::InsertGrant(g.clone()))
            .write(Write::InsertJob(gj.clone()))
            .write(Write::InsertJob(d1.clone()))
            .event(ev("provision.drift", "target:db1")),
    )
    .await;
    assert_eq!(
        s.due_jobs(t(100), 10).await.unwrap(),
        vec![d1.clone(), gj.clone()]
    );
    assert_eq!(s.next_job_at().await.unwrap(), Some(t(50)));
    assert_eq!(s.grant_jobs(g.id).await.unwrap(), vec![gj.clone()]);

    // A second removal of the same finding while the first is pending: refused, nothing
    // written (not even the event that came with it); another privilege or account is fine.
    let dup = drift_job("bob", "member:readwrite", 60);
    exists(
        fails(
            &s,
            Changeset::new()
                .write(Write::InsertJob(dup.clone()))
                .event(ev("provision.drift", "target:db1")),
        )
        .await,
        "bob",
    );
    let d2 = drift_job("bob", "member:admin", 60);
    let d3 = drift_job("carol", "member:readwrite", 60);
    ok(&s, cs(Write::InsertJob(d2.clone()))).await;
    ok(&s, cs(Write::InsertJob(d3.clone()))).await;
    assert_eq!(s.due_jobs(t(100), 10).await.unwrap().len(), 4);

    // Attempts are recorded once, like any job; once done, the same finding may be queued
    // again (it came back).
    let mut retry = d1.clone();
    retry.attempts = 1;
    retry.next_attempt_at = t(200);
    retry.last_error = Some("target unreachable".into());
    let upd = |job: &ProvisionJob, expected: i64| Write::UpdateJob {
        job: job.clone(),
        expected_attempts: expected,
    };
    ok(&s, cs(upd(&retry, 0))).await;
    conflict(fails(&s, cs(upd(&retry, 0))).await, &d1.id.to_string());
    exists(fails(&s, cs(Write::InsertJob(dup.clone()))).await, "bob");
    let mut done = retry.clone();
    done.attempts = 2;
    done.done = true;
    done.last_error = None;
    ok(&s, cs(upd(&done, 1))).await;
    ok(&s, cs(Write::InsertJob(dup.clone()))).await;
    let due = s.due_jobs(t(1000), 10).await.unwrap();
    assert!(
        due.contains(&dup) && !due.iter().any(|j| j.id == d1.id),
        "{due:?}"
    );

    // Malformed jobs are refused.
    let mut with_grant = drift_job("dave", "member:readwrite", 70);
    with_grant.grant_id = Some(g.id);
    assert!(matches!(
        fails(&s, cs(Write::InsertJob(with_grant))).await,
        StoreError::Backend(_)
    ));
    let mut no_grant = job(g.id, ProvisionAction::Revoke, 70);
    no_grant.grant_id = None;
    assert!(matches!(
        fails(&s, cs(Write::InsertJob(no_grant))).await,
        StoreError::Backend(_)
    ));

    // They survive reopening the store.
    drop(s);
    let s = db.open().await;
    let due = s.due_jobs(t(1000), 10).await.unwrap();
    assert!(
        due.contains(&dup) && due.contains(&d2) && due.contains(&d3),
        "{due:?}"
    );
}

async fn hosts_receipts_and_sessions(db: Db) {
    use pedm_core::host::{Host, HostWrite, Session, SessionFilter};
    let s = db.open().await;
    ok(&s, cs(Write::InsertUser(user("alice")))).await;
    ok(&s, cs(Write::InsertTarget(target("web1")))).await;
    ok(&s, cs(Write::InsertRole(role("web1", "root")))).await;
    let host = |token_id: &str, hash: u8| Host {
        name: "web1".into(),
        token_id: token_id.into(),
        token_hash: [hash; 32],
        registered_at: t(3),
        registered_by: "admin".into(),
        last_seen_at: None,
        enroll_expires_at: Some(t(3600)),
        enrolled_at: None,
        revoked_at: None,
        cert_serial: None,
        cert_not_after: None,
    };
    // A host is a registered target; registering one that does not exist names it.
    let mut ghost = host("00000000000000aa", 1);
    ghost.name = "ghost".into();
    not_found(
        fails(&s, cs(Write::Host(HostWrite::Register(ghost)))).await,
        "ghost",
    );
    ok(
        &s,
        cs(Write::Host(HostWrite::Register(host(
            "00000000000000a1",
            1,
        )))),
    )
    .await;
    assert_eq!(s.host("web1").await.unwrap().unwrap().token_hash, [1; 32]);
    // Registering again replaces the token: the old id finds nothing any more.
    ok(
        &s,
        cs(Write::Host(HostWrite::Register(host(
            "00000000000000a2",
            2,
        )))),
    )
    .await;
    assert!(s.host_by_token("00000000000000a1").await.unwrap().is_none());
    let h = s.host_by_token("00000000000000a2").await.unwrap().unwrap();
    assert_eq!((h.name.as_str(), h.token_hash), ("web1", [2; 32]));
    assert_eq!(s.hosts().await.unwrap().len(), 1);
    assert_eq!(h.enroll_expires_at, Some(t(3600)));
    // Enrollment spends the current token once; renewals follow; a revoked host takes none.
    let enroll = |token_id: &str, serial: &str| {
        cs(Write::Host(HostWrite::Enroll {
            name: "web1".into(),
            token_id: token_id.into(),
            at: t(10),
            serial: serial.into(),
            not_after: t(100),
        }))
    };
    let certify = |serial: &str| {
        cs(Write::Host(HostWrite::Certify {
            name: "web1".into(),
            serial: serial.into(),
            not_after: t(200),
        }))
    };
    conflict(fails(&s, certify("s0")).await, "not enrolled");
    conflict(fails(&s, enroll("00000000000000a1", "s1")).await, "web1");
    ok(&s, enroll("00000000000000a2", "s1")).await;
    conflict(
        fails(&s, enroll("00000000000000a2", "s2")).await,
        "enrolled already",
    );
    ok(&s, certify("s3")).await;
    let h = s.host("web1").await.unwrap().unwrap();
    assert_eq!(
        (h.enrolled_at, h.cert_serial.as_deref(), h.cert_not_after),
        (Some(t(10)), Some("s3"), Some(t(200)))
    );
    let revoke = cs(Write::Host(HostWrite::Revoke {
        name: "web1".into(),
        at: t(30),
    }));
    ok(&s, revoke.clone()).await;
    conflict(fails(&s, revoke).await, "revoked already");
    conflict(fails(&s, certify("s4")).await, "revoked");
    assert_eq!(
        s.host("web1").await.unwrap().unwrap().revoked_at,
        Some(t(30))
    );
    // Registering again starts over: not revoked, not enrolled.
    ok(
        &s,
        cs(Write::Host(HostWrite::Register(host(
            "00000000000000a2",
            2,
        )))),
    )
    .await;
    let h = s.host("web1").await.unwrap().unwrap();
    assert_eq!(
        (h.revoked_at, h.enrolled_at, h.cert_serial),
        (None, None, None)
    );
    not_found(
        fails(
            &s,
            cs(Write::Host(HostWrite::Revoke {
                name: "db9".into(),
                at: t(30),
            })),
        )
        .await,
        "db9",
    );
    ok(
        &s,
        cs(Write::Host(HostWrite::Seen {
            name: "web1".into(),
            at: t(20),
        })),
    )
    .await;
    assert_eq!(
        s.host("web1").await.unwrap().unwrap().last_seen_at,
        Some(t(20))
    );
    not_found(
        fails(
            &s,
            cs(Write::Host(HostWrite::Seen {
                name: "web2".into(),
                at: t(20),
            })),
        )
        .await,
        "web2",
    );

    // A report id is accepted once; a duplicate writes nothing, not even its event.
    let id = Uuid::now_v7();
    let receipt = || {
        Write::Host(HostWrite::Receipt {
            id,
            host: "web1".into(),
            at: t(21),
        })
    };
    ok(&s, cs(receipt())).await;
    let before = whole_chain(&s).await.len();
    exists(fails(&s, cs(receipt())).await, &id.to_string());
    assert_eq!(whole_chain(&s).await.len(), before);

    let r = request("alice", "web1", 5);
    let g = grant_for(&r, 6);
    ok(&s, cs(Write::InsertRequest(r.clone()))).await;
    ok(&s, cs(Write::InsertGrant(g.clone()))).await;
    let session = |id: Uuid, grant: Uuid, started: i64| Session {
        id,
        grant_id: Some(grant),
        delegation_id: None,
        task: None,
        params: None,
        host: "web1".into(),
        user: "alice".into(),
        run_as: "root".into(),
        argv: vec!["/usr/bin/id".into(), "-u".into(), "it's \"quoted\"".into()],
        binary_sha256: Some("ab".repeat(32)),
        shell: false,
        started_at: t(started),
        ended_at: t(started + 1),
        exit_code: Some(0),
        signal: None,
        ended_by: Some("grant revoked".into()),
        recording_sha256: "cd".repeat(32),
        recording_bytes: 1234,
        uploaded_at: t(started + 2),
        via: None,
    };
    let first = session(Uuid::now_v7(), g.id, 30);
    let second = Session {
        exit_code: None,
        signal: Some(9),
        ended_by: None,
        ..session(Uuid::now_v7(), g.id, 40)
    };
    ok(
        &s,
        cs(Write::Host(HostWrite::InsertSession(Box::new(
            first.clone(),
        )))),
    )
    .await;
    ok(
        &s,
        cs(Write::Host(HostWrite::InsertSession(Box::new(
            second.clone(),
        )))),
    )
    .await;
    exists(
        fails(
            &s,
            cs(Write::Host(HostWrite::InsertSession(Box::new(
                first.clone(),
            )))),
        )
        .await,
        &first.id.to_string(),
    );
    not_found(
        fails(
            &s,
            cs(Write::Host(HostWrite::InsertSession(Box::new(session(
                Uuid::now_v7(),
                Uuid::now_v7(),
                50,
            ))))),
        )
        .await,
        "grant",
    );
    assert_eq!(s.session(first.id).await.unwrap().unwrap(), first);
    let all = s.sessions(&SessionFilter::default()).await.unwrap();
    assert_eq!(
        all,
        vec![second.clone(), first.clone()],
        "newest first, every field kept"
    );
    let by_grant = SessionFilter {
        grant: Some(g.id),
        limit: Some(1),
        ..Default::default()
    };
    assert_eq!(s.sessions(&by_grant).await.unwrap(), vec![second]);
    let other = SessionFilter {
        user: Some("bob".into()),
        ..Default::default()
    };
    assert!(s.sessions(&other).await.unwrap().is_empty());
    // A window on the start: from the newer one's start, and before it.
    let from = |since, until| SessionFilter {
        since,
        until,
        ..Default::default()
    };
    let all = s.sessions(&SessionFilter::default()).await.unwrap();
    let newest = all[0].started_at;
    let later = s.sessions(&from(Some(newest), None)).await.unwrap();
    assert!(!later.is_empty() && later.iter().all(|x| x.started_at >= newest));
    let earlier = s.sessions(&from(None, Some(newest))).await.unwrap();
    assert_eq!(
        later.len() + earlier.len(),
        all.len(),
        "the window splits them"
    );
}

async fn tasks_delegations_and_grant_links(db: Db) {
    use pedm_core::delegation::*;
    let s = db.open().await;
    ok(&s, cs(Write::InsertUser(user("alice")))).await;
    ok(&s, cs(Write::InsertTarget(target("web1")))).await;
    ok(&s, cs(Write::InsertRole(role("web1", "root")))).await;
    let dw = |w: DelegationWrite| cs(Write::Delegation(w));

    // Tasks: the definition round-trips; a second definition needs `replace`.
    let mut task: TaskDef = serde_json::from_value(json!({
        "name": "reset-password",
        "description": "Set a user's password",
        "targets": ["env=prod", "web1"],
        "argv": ["/usr/sbin/chpasswd"],
        "stdin": "{user}:{password}\n",
        "params": [
            {"name": "user", "pattern": "[a-z_][a-z0-9_-]*", "protected": ["root"], "max_len": 32},
            {"name": "password", "secret": true},
        ],
        "defined_by": "alice",
        "defined_at": t(5),
    }))
    .unwrap();
    assert_eq!(s.task("reset-password").await.unwrap(), None);
    ok(
        &s,
        dw(DelegationWrite::DefineTask {
            task: task.clone(),
            replace: false,
        }),
    )
    .await;
    assert_eq!(s.task("reset-password").await.unwrap(), Some(task.clone()));
    exists(
        fails(
            &s,
            dw(DelegationWrite::DefineTask {
                task: task.clone(),
                replace: false,
            }),
        )
        .await,
        "reset-password",
    );
    task.description = Some("changed".into());
    ok(
        &s,
        dw(DelegationWrite::DefineTask {
            task: task.clone(),
            replace: true,
        }),
    )
    .await;
    let mut other = task.clone();
    other.name = "another".into();
    ok(
        &s,
        dw(DelegationWrite::DefineTask {
            task: other.clone(),
            replace: true,
        }),
    )
    .await;
    assert_eq!(s.tasks().await.unwrap(), vec![other, task.clone()]);

    // Delegations: insert, read back, children by parent, live filter, revoke once.
    let deleg = |parent: Option<Uuid>, expires: i64| Delegation {
        id: Uuid::now_v7(),
        parent,
        delegator: "alice".into(),
        delegate: Delegatee {
            kind: DelegateKind::Group,
            name: "helpdesk".into(),
        },
        tasks: vec!["reset-password".into()],
        roles: vec!["root".into()],
        scope: vec!["env=prod".into()],
        expires_at: t(expires),
        redelegate: parent.is_none(),
        reason: Some("help desk".into()),
        created_at: t(6),
        revoked_at: None,
        revoked_by: None,
        revoke_reason: None,
        state: DelegationState::Active,
    };
    let root = deleg(None, 1000);
    ok(&s, dw(DelegationWrite::Insert(root.clone()))).await;
    assert_eq!(s.delegation(root.id).await.unwrap(), Some(root.clone()));
    exists(
        fails(&s, dw(DelegationWrite::Insert(root.clone()))).await,
        &root.id.to_string(),
    );
    let orphan = deleg(Some(Uuid::now_v7()), 500);
    not_found(
        fails(&s, dw(DelegationWrite::Insert(orphan))).await,
        "delegation",
    );
    let mut child = deleg(Some(root.id), 500);
    child.delegate = Delegatee {
        kind: DelegateKind::User,
        name: "bob".into(),
    };
    ok(&s, dw(DelegationWrite::Insert(child.clone()))).await;
    let by_parent = s
        .delegations(&DelegationFilter {
            parent: Some(root.id),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(by_parent, vec![child.clone()]);
    let live = |at: i64| {
        let s = s.clone();
        async move {
            s.delegations(&DelegationFilter {
                live_at: Some(t(at)),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_iter()
            .map(|d| d.id)
            .collect::<Vec<_>>()
        }
    };
    // Newest first; the child's deadline is earlier.
    assert_eq!(live(100).await, vec![child.id, root.id]);
    assert_eq!(live(500).await, vec![root.id]);
    assert_eq!(live(1000).await, Vec::<Uuid>::new());

    let revoke = |id: Uuid| {
        dw(DelegationWrite::Revoke {
            id,
            at: t(200),
            by: "alice".into(),
            reason: "left the team".into(),
        })
    };
    ok(&s, revoke(child.id)).await;
    conflict(fails(&s, revoke(child.id)).await, "already revoked");
    not_found(fails(&s, revoke(Uuid::now_v7())).await, "does not exist");
    let got = s.delegation(child.id).await.unwrap().unwrap();
    assert_eq!(got.revoked_at, Some(t(200)));
    assert_eq!(got.revoked_by.as_deref(), Some("alice"));
    assert_eq!(got.revoke_reason.as_deref(), Some("left the team"));
    assert_eq!(got.state, DelegationState::Revoked);
    assert_eq!(live(100).await, vec![root.id]);

    // Revoking two in one changeset where the second is already revoked writes nothing.
    let c = Changeset::new()
        .write(Write::Delegation(DelegationWrite::Revoke {
            id: root.id,
            at: t(201),
            by: "alice".into(),
            reason: "x".into(),
        }))
        .write(Write::Delegation(DelegationWrite::Revoke {
            id: child.id,
            at: t(201),
            by: "alice".into(),
            reason: "x".into(),
        }))
        .event(ev("delegation.revoked", "delegation:1"));
    conflict(fails(&s, c).await, "already revoked");
    assert_eq!(
        s.delegation(root.id).await.unwrap().unwrap().revoked_at,
        None
    );

    // Grant links: by delegation and by parent grant; one link per grant.
    let r1 = request("alice", "web1", 10);
    let g1 = grant_for(&r1, 11);
    let r2 = request("alice", "web1", 12);
    let g2 = grant_for(&r2, 13);
    for (r, g) in [(&r1, &g1), (&r2, &g2)] {
        ok(
            &s,
            Changeset::new()
                .write(Write::InsertRequest(r.clone()))
                .write(Write::InsertGrant(g.clone()))
                .event(ev("grant.started", "grant:1")),
        )
        .await;
    }
    let l1 = GrantLink {
        grant_id: g1.id,
        delegation: Some(root.id),
        parent_grant: None,
    };
    let l2 = GrantLink {
        grant_id: g2.id,
        delegation: None,
        parent_grant: Some(g1.id),
    };
    ok(&s, dw(DelegationWrite::LinkGrant(l1.clone()))).await;
    ok(&s, dw(DelegationWrite::LinkGrant(l2.clone()))).await;
    exists(
        fails(&s, dw(DelegationWrite::LinkGrant(l1.clone()))).await,
        &g1.id.to_string(),
    );
    not_found(
        fails(
            &s,
            dw(DelegationWrite::LinkGrant(GrantLink {
                grant_id: Uuid::now_v7(),
                delegation: None,
                parent_grant: None,
            })),
        )
        .await,
        "does not exist",
    );
    assert_eq!(s.grant_link(g2.id).await.unwrap(), Some(l2.clone()));
    assert_eq!(s.grant_link(Uuid::now_v7()).await.unwrap(), None);
    assert_eq!(
        s.grant_links(&GrantLinkFilter {
            delegation: Some(root.id),
            ..Default::default()
        })
        .await
        .unwrap(),
        vec![l1]
    );
    assert_eq!(
        s.grant_links(&GrantLinkFilter {
            parent_grant: Some(g1.id),
            ..Default::default()
        })
        .await
        .unwrap(),
        vec![l2]
    );
    whole_chain(&s).await;

    // Everything is still there after reopening.
    drop(s);
    let s = db.open().await;
    assert_eq!(s.task("reset-password").await.unwrap(), Some(task));
    assert_eq!(s.delegation(root.id).await.unwrap(), Some(root));
}
