//! Group commit on SQLite: several changesets share one transaction, each in its own savepoint.
//!
//! To put a known set of changesets into one batch, a test holds the database's write lock from
//! a second connection: the committer takes a first changeset and waits for the lock, the others
//! queue behind it, and once the lock is released they are all taken together (the committer's
//! counters confirm: exactly two transactions).

use jiff::Timestamp;
use pedm_core::audit::{AuditEvent, GENESIS_HASH, NewAuditEvent, verify_chain};
use pedm_core::model::*;
use pedm_core::store::{AuditFilter, Changeset, Store, StoreError, Write};
use pedm_store::SqliteStore;
use sqlx::Connection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

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

fn request(requester: &str) -> Request {
    Request {
        id: Uuid::now_v7(),
        requester: requester.into(),
        target: "web1".into(),
        role: "root".into(),
        duration_secs: 1800,
        justification: "fix the disk".into(),
        task: None,
        ticket: None,
        context: RequestContext {
            source_addr: None,
            device: BTreeMap::new(),
            step_up: None,
            extends: None,
            starts_at: None,
            ticket: None,
            via_agent: false,
            while_on_call: false,
            risk: None,
        },
        state: RequestState::Approved,
        created_at: t(0),
        pending_until: t(600),
        decided_at: Some(t(0)),
        decided_by: Some("policy".into()),
        decision_reason: None,
        grant_id: None,
        approvals_required: 0,
        approval_tiers: vec![],
        policy: None,
        break_glass: false,
        review: None,
        follow_up: None,
        version: 1,
    }
}

fn grant_for(r: &Request) -> Grant {
    Grant {
        id: Uuid::now_v7(),
        request_id: r.id,
        user: r.requester.clone(),
        target: r.target.clone(),
        role: r.role.clone(),
        starts_at: t(0),
        expires_at: t(1800),
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
        .data(serde_json::json!({ "subject": subject }))
}

/// `w` with `events` events whose subject is `subject`.
fn cs(w: Write, subject: &str, events: usize) -> Changeset {
    let mut c = Changeset::new().write(w);
    for i in 0..events {
        c = c.event(ev(&format!("test.{i}"), subject));
    }
    c
}

async fn open(dir: &Path) -> Arc<SqliteStore> {
    Arc::new(SqliteStore::open(&dir.join("pedm.db")).await.unwrap())
}

/// All events, checked to form one valid chain from genesis that ends at the stored head.
async fn whole_chain(s: &dyn Store) -> Vec<AuditEvent> {
    let all = s.audit_events(&AuditFilter::default()).await.unwrap();
    let last = verify_chain(GENESIS_HASH, 1, &all).unwrap();
    let head = s.audit_head().await.unwrap();
    match all.last() {
        Some(e) => assert_eq!(head, Some((e.seq, last))),
        None => assert_eq!(head, None),
    }
    all
}

async fn until(what: &str, mut ok: impl FnMut() -> bool) {
    for _ in 0..6_000 {
        if ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("timed out waiting until {what}");
}

type Outcome = Result<Vec<AuditEvent>, StoreError>;

/// While the committer is held up (by a lock another connection holds): commits `plug` and
/// waits until the committer has taken it, queues `batch` behind it one by one (so the batch's
/// order is the order given), then runs `release`, which lets the committer go on. Checks that
/// the plug and then the whole batch were one transaction each, as the committer's counters
/// say; returns their results, the batch's in its order.
async fn plug_then_batch(
    s: Arc<dyn Store>,
    stats: impl Fn() -> pedm_store::GroupCommitStats,
    plug: Changeset,
    batch: Vec<Changeset>,
    release: impl std::future::Future<Output = ()>,
) -> (Outcome, Vec<Outcome>) {
    let before = stats();
    assert_eq!(before.queued, 0);
    let plug = {
        let s = s.clone();
        tokio::spawn(async move { s.commit(plug).await })
    };
    until("the committer took the first changeset", || {
        stats().changesets == before.changesets + 1
    })
    .await;
    let n = batch.len();
    let mut tasks = vec![];
    for (i, c) in batch.into_iter().enumerate() {
        let s = s.clone();
        tasks.push(tokio::spawn(async move { s.commit(c).await }));
        until("the changeset is queued", || stats().queued == i + 1).await;
    }
    release.await;
    let plug = plug.await.unwrap();
    let mut results = vec![];
    for t in tasks {
        results.push(t.await.unwrap());
    }
    let after = stats();
    assert_eq!(
        (after.transactions, after.changesets),
        (before.transactions + 2, before.changesets + 1 + n as u64),
        "the plug and then the whole batch, one transaction each"
    );
    (plug, results)
}

/// Commits `plug` and then `batch` so that all of `batch` goes into one transaction: the write
/// lock is held from another connection until the committer has taken `plug` (and waits for the
/// lock) and every changeset of `batch` is queued. `meanwhile` runs in the lock holder's
/// transaction before it commits. Returns the results of `plug` and `batch`, in its order.
async fn in_one_batch(
    s: &Arc<SqliteStore>,
    plug: Changeset,
    batch: Vec<Changeset>,
    meanwhile: &[&str],
) -> (Outcome, Vec<Outcome>) {
    let mut lock = SqliteConnection::connect_with(
        &SqliteConnectOptions::new()
            .filename(s.path())
            .busy_timeout(Duration::from_secs(10)),
    )
    .await
    .unwrap();
    sqlx::raw_sql("BEGIN IMMEDIATE")
        .execute(&mut lock)
        .await
        .unwrap();
    let release = async move {
        for sql in meanwhile {
            sqlx::raw_sql(sqlx::AssertSqlSafe(*sql))
                .execute(&mut lock)
                .await
                .unwrap();
        }
        sqlx::raw_sql("COMMIT").execute(&mut lock).await.unwrap();
    };
    let stats = {
        let s = s.clone();
        move || s.group_commit_stats()
    };
    plug_then_batch(s.clone(), stats, plug, batch, release).await
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    Ok,
    Exists,
    Conflict,
    NotFound,
    /// One of the two concurrent ends of the same grant.
    EndsGrant,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failures_in_a_batch_are_isolated_and_the_rest_is_durable() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path()).await;

    // Before the batch: alice, a revoked token, an active grant.
    let r = request("alice");
    let g = grant_for(&r);
    let setup = [
        cs(Write::InsertUser(user("alice")), "setup", 1),
        cs(
            Write::InsertToken(TokenRecord {
                id: "tok1".into(),
                user: "alice".into(),
                description: None,
                secret_hash: [7; 32],
                created_at: t(0),
                expires_at: None,
                revoked_at: None,
                workload: None,
                agent: false,
            }),
            "setup",
            1,
        ),
        cs(
            Write::RevokeToken {
                id: "tok1".into(),
                at: t(1),
            },
            "setup",
            1,
        ),
        Changeset::new()
            .write(Write::InsertRequest(r.clone()))
            .write(Write::InsertGrant(g.clone()))
            .event(ev("setup.grant", "setup")),
    ];
    for c in setup {
        s.commit(c).await.unwrap();
    }
    let setup_events = whole_chain(&*s).await.len();

    // Successes with 1 to 3 events each, and between them every kind of refused precondition,
    // including two ends of the same grant.
    let mut batch = vec![];
    let mut expect = vec![];
    let end = |state, by: &str| Write::EndGrant {
        id: g.id,
        state,
        at: t(100),
        by: by.into(),
        reason: None,
    };
    // (changeset, expectation, rows a refused changeset must not leave behind)
    let mut leftovers = vec![];
    let mut granted = vec![];
    for i in 0..40 {
        // Successes: one write, or several (a user, a request and its grant).
        let subject = format!("ok:{i}");
        let mut c = Changeset::new().write(Write::InsertUser(user(&format!("u{i}"))));
        if i % 2 == 1 {
            let r = request(&format!("u{i}"));
            let g = grant_for(&r);
            granted.push(g.id);
            c = c
                .write(Write::InsertRequest(r))
                .write(Write::InsertGrant(g));
        }
        for k in 0..1 + i % 3 {
            c = c.event(ev(&format!("test.{k}"), &subject));
        }
        batch.push(c);
        expect.push(Expect::Ok);

        // Refusals: of the first write, or of a later one after earlier writes were applied
        // (which the changeset's savepoint must undo).
        let subject = format!("fail:{i}");
        let partial = format!("partial{i}");
        let (writes, e) = match i % 8 {
            0 => (vec![Write::InsertUser(user("alice"))], Expect::Exists),
            1 => (
                vec![Write::RevokeToken {
                    id: "tok1".into(),
                    at: t(2),
                }],
                Expect::Conflict,
            ),
            2 => (
                vec![Write::EndGrant {
                    id: Uuid::now_v7(),
                    state: GrantState::Revoked,
                    at: t(2),
                    by: "bob".into(),
                    reason: None,
                }],
                Expect::NotFound,
            ),
            3 => (
                vec![Write::UpdateUser(user(&format!("ghost{i}")))],
                Expect::NotFound,
            ),
            4 => (
                vec![
                    Write::InsertUser(user(&partial)),
                    Write::InsertUser(user("alice")),
                ],
                Expect::Exists,
            ),
            5 => {
                // A second grant for the request that already has one.
                let mut r2 = request(&partial);
                r2.id = Uuid::now_v7();
                let mut g2 = grant_for(&r);
                g2.id = Uuid::now_v7();
                (
                    vec![
                        Write::InsertUser(user(&partial)),
                        Write::InsertRequest(r2),
                        Write::InsertGrant(g2),
                    ],
                    Expect::Exists,
                )
            }
            6 => (
                vec![
                    Write::InsertUser(user(&partial)),
                    Write::EndGrant {
                        id: Uuid::now_v7(),
                        state: GrantState::Revoked,
                        at: t(2),
                        by: "bob".into(),
                        reason: None,
                    },
                ],
                Expect::NotFound,
            ),
            _ => continue,
        };
        if writes.len() > 1 {
            leftovers.push(partial);
        }
        let mut c = Changeset::new();
        c.writes = writes;
        c = c
            .event(ev("test.0", &subject))
            .event(ev("test.1", &subject));
        batch.push(c);
        expect.push(e);
    }
    // The two ends of one grant: in the middle of the batch, each with its own events.
    batch.insert(17, cs(end(GrantState::Revoked, "admin"), "end:revoked", 2));
    expect.insert(17, Expect::EndsGrant);
    batch.insert(31, cs(end(GrantState::Expired, "system"), "end:expired", 1));
    expect.insert(31, Expect::EndsGrant);

    let (plug, results) = in_one_batch(
        &s,
        cs(Write::InsertUser(user("plug")), "plug", 1),
        batch,
        &[],
    )
    .await;
    plug.unwrap();

    let mut ok_events = 0;
    let mut ends = vec![];
    for (i, (r, e)) in results.into_iter().zip(&expect).enumerate() {
        match (e, r) {
            (Expect::Ok, Ok(evs)) => ok_events += evs.len(),
            (Expect::Exists, Err(StoreError::AlreadyExists(_)))
            | (Expect::Conflict, Err(StoreError::Conflict(_)))
            | (Expect::NotFound, Err(StoreError::NotFound(_))) => {}
            (Expect::EndsGrant, r) => ends.push((i, r)),
            (e, r) => panic!("changeset {i}: expected {e:?}, got {r:?}"),
        }
    }
    // Exactly once inside one batch: one end wins (the one queued first), the other is refused.
    assert_eq!(ends.len(), 2);
    let (winner, loser) = match (&ends[0].1, &ends[1].1) {
        (Ok(_), Err(_)) => (&ends[0], &ends[1]),
        (Err(_), Ok(_)) => (&ends[1], &ends[0]),
        r => panic!("exactly one end of the grant must win: {r:?}"),
    };
    ok_events += winner.1.as_ref().map_or(0, Vec::len);
    assert!(
        matches!(&loser.1, Err(StoreError::Conflict(m)) if m.contains("not active")),
        "{:?}",
        loser.1
    );
    // (index in the batch, state, ended_by, subject of its events)
    let (won_state, won_by, lost_subject) = if winner.0 == 17 {
        (GrantState::Revoked, "admin", "end:expired")
    } else {
        (GrantState::Expired, "system", "end:revoked")
    };

    // Durable: a fresh store on the same file sees exactly the successes.
    s.close().await;
    drop(s);
    let s = open(dir.path()).await;
    let chain = whole_chain(&*s).await;
    assert_eq!(chain.len(), setup_events + 1 + ok_events);
    assert!(
        chain
            .iter()
            .all(|e| !e.subject.as_deref().unwrap_or("").starts_with("fail:")),
        "no event of a refused changeset is stored"
    );
    assert!(
        !chain
            .iter()
            .any(|e| e.subject.as_deref() == Some(lost_subject)),
        "the losing end left no event"
    );
    for i in 0..40 {
        let u = s
            .user(&format!("u{i}"))
            .await
            .unwrap()
            .expect("user stored");
        assert_eq!(u.display_name.as_deref(), Some(&*format!("u{i} the user")));
        let subject = format!("ok:{i}");
        let n = chain
            .iter()
            .filter(|e| e.subject.as_deref() == Some(&*subject))
            .count();
        assert_eq!(n, 1 + i % 3, "events of changeset ok:{i}");
    }
    for i in 0..40 {
        assert!(s.user(&format!("ghost{i}")).await.unwrap().is_none());
    }
    assert!(!leftovers.is_empty());
    for name in &leftovers {
        assert!(
            s.user(name).await.unwrap().is_none(),
            "{name}: the applied part of a refused changeset was rolled back"
        );
    }
    assert_eq!(
        s.requests(&RequestFilter::default()).await.unwrap().len(),
        1 + granted.len(),
        "no request of a refused changeset"
    );
    for id in granted {
        assert_eq!(
            s.grant(id).await.unwrap().unwrap().state,
            GrantState::Active
        );
    }
    let ended = s.grant(g.id).await.unwrap().unwrap();
    assert_eq!(ended.state, won_state);
    assert_eq!(ended.ended_by.as_deref(), Some(won_by));
    assert!(s.token("tok1").await.unwrap().unwrap().revoked_at == Some(t(1)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backend_error_fails_the_whole_batch() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path()).await;
    s.commit(cs(Write::InsertUser(user("alice")), "setup", 1))
        .await
        .unwrap();
    let head = s.audit_head().await.unwrap();

    let batch = (0..10)
        .map(|i| cs(Write::InsertUser(user(&format!("u{i}"))), "batch", 1))
        .collect();
    // The chain head row disappears (as if edited by hand) while the batch waits: the first
    // changeset to append finds it missing, which is no precondition but a broken store.
    let (plug, results) = in_one_batch(
        &s,
        cs(Write::InsertUser(user("plug")), "plug", 1),
        batch,
        &["DELETE FROM audit_head"],
    )
    .await;
    assert!(matches!(plug, Err(StoreError::Corrupt(_))), "{plug:?}");
    for r in results {
        assert!(
            matches!(&r, Err(StoreError::Corrupt(m)) if m.contains("audit_head")),
            "{r:?}"
        );
    }
    // Nothing of the batch is kept, not even the changesets before the failing one.
    for i in 0..10 {
        assert!(s.user(&format!("u{i}")).await.unwrap().is_none());
    }
    assert!(s.user("plug").await.unwrap().is_none());
    let events = s.audit_events(&AuditFilter::default()).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(head.map(|h| h.0), Some(1));
    // The committer keeps working for the next batch (here: a head-less store is still
    // refused as corrupt, with nothing written).
    let r = s
        .commit(cs(Write::InsertUser(user("later")), "later", 1))
        .await;
    assert!(matches!(r, Err(StoreError::Corrupt(_))), "{r:?}");
    assert!(s.user("later").await.unwrap().is_none());
}

/// `committers` tasks (spread over `stores` round-robin), each 20 changesets of one event:
/// users of its own, a user name every committer tries (index 7) and an end of grant `gid`
/// (index 13). Returns how many won the contested name, won the end, and the others that
/// committed; any other refusal panics.
async fn race(stores: &[Arc<dyn Store>], committers: usize, gid: Uuid) -> (usize, usize, usize) {
    let mut tasks = vec![];
    for c in 0..committers {
        let s = stores[c % stores.len()].clone();
        tasks.push(tokio::spawn(async move {
            let mut out = vec![];
            for i in 0..20 {
                let w = match i {
                    7 => Write::InsertUser(user("contested")),
                    13 => Write::EndGrant {
                        id: gid,
                        state: GrantState::Revoked,
                        at: t(5),
                        by: format!("c{c}"),
                        reason: None,
                    },
                    _ => Write::InsertUser(user(&format!("c{c}-{i}"))),
                };
                out.push((i, s.commit(cs(w, &format!("c{c}:{i}"), 1)).await));
            }
            out
        }));
    }
    let (mut contested, mut ends, mut ok) = (0, 0, 0);
    for t in tasks {
        for (i, r) in t.await.unwrap() {
            match (i, r) {
                (7, Ok(_)) => contested += 1,
                (7, Err(StoreError::AlreadyExists(_))) => {}
                (13, Ok(_)) => ends += 1,
                (13, Err(StoreError::Conflict(_))) => {}
                (_, Ok(_)) => ok += 1,
                (i, Err(e)) => panic!("changeset {i}: {e}"),
            }
        }
    }
    (contested, ends, ok)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_concurrent_committers_keep_one_chain() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path()).await;
    let r = request("alice");
    let g = grant_for(&r);
    s.commit(
        Changeset::new()
            .write(Write::InsertRequest(r))
            .write(Write::InsertGrant(g.clone())),
    )
    .await
    .unwrap();

    // 64 committers, each 20 changesets: its own users, a user name every committer tries
    // (one wins), and one end of the same grant (one wins).
    let (contested, ends, ok) = race(&[s.clone() as Arc<dyn Store>], 64, g.id).await;
    assert_eq!((contested, ends, ok), (1, 1, 64 * 18));
    let stats = s.group_commit_stats();
    assert_eq!(stats.changesets, 1 + 64 * 20);
    assert!(stats.transactions <= stats.changesets);
    println!(
        "{} changesets in {} transactions",
        stats.changesets, stats.transactions
    );

    s.close().await;
    drop(s);
    let s = open(dir.path()).await;
    assert_eq!(whole_chain(&*s).await.len(), 64 * 18 + 2);
    assert_eq!(s.users().await.unwrap().len(), 64 * 18 + 1);
}

// ------------------------------------------------------------------------------ PostgreSQL
//
// The same group commit on PostgreSQL, where a failed statement spoils the whole transaction
// (the batch is applied again with a savepoint per changeset) and several instances share the
// chain (their batches are ordered by the head row's lock). A batch is formed by holding that
// lock from another connection while the changesets queue.

mod postgres {
    use super::*;
    use pedm_store::PostgresStore;
    use pedm_store::testing::TestPostgres;
    use sqlx::postgres::PgConnection;

    fn cluster() -> Option<&'static TestPostgres> {
        static PG: std::sync::OnceLock<Option<TestPostgres>> = std::sync::OnceLock::new();
        PG.get_or_init(TestPostgres::start_or_skip).as_ref()
    }

    async fn fresh(test: &str) -> Option<(String, Arc<PostgresStore>)> {
        let url = cluster()?.fresh_database(test).unwrap();
        let s = Arc::new(PostgresStore::connect(&url).await.unwrap());
        Some((url, s))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_refusal_in_a_batch_is_rolled_back_alone_and_the_rest_commits() {
        let Some((url, s)) = fresh("gc_isolated").await else {
            return;
        };
        let r = request("alice");
        let g = grant_for(&r);
        for c in [
            cs(Write::InsertUser(user("alice")), "setup", 1),
            Changeset::new()
                .write(Write::InsertRequest(r.clone()))
                .write(Write::InsertGrant(g.clone()))
                .event(ev("setup.grant", "setup")),
        ] {
            s.commit(c).await.unwrap();
        }
        let end = |by: &str| Write::EndGrant {
            id: g.id,
            state: GrantState::Revoked,
            at: t(5),
            by: by.into(),
            reason: None,
        };
        // A unique violation (a failed statement in PostgreSQL) and a lost race, between
        // successes of one to three events.
        let batch = vec![
            cs(Write::InsertUser(user("bob")), "bob", 1),
            cs(Write::InsertUser(user("alice")), "alice-again", 2),
            cs(end("first"), "end-1", 1),
            cs(Write::InsertUser(user("carol")), "carol", 3),
            cs(end("second"), "end-2", 1),
            cs(Write::InsertUser(user("dave")), "dave", 2),
        ];
        let results = commit_as_one_batch(&url, &s, batch).await;
        let shape: Vec<Result<usize, &'static str>> = results
            .iter()
            .map(|r| match r {
                Ok(evs) => Ok(evs.len()),
                Err(StoreError::AlreadyExists(_)) => Err("exists"),
                Err(StoreError::Conflict(_)) => Err("conflict"),
                Err(e) => panic!("{e}"),
            })
            .collect();
        assert_eq!(
            shape,
            [Ok(1), Err("exists"), Ok(1), Ok(3), Err("conflict"), Ok(2)]
        );

        // Durable, in order, one chain; the refused changesets left nothing.
        s.close().await;
        let s = PostgresStore::connect(&url).await.unwrap();
        let chain = whole_chain(&s).await;
        let subjects: Vec<&str> = chain.iter().filter_map(|e| e.subject.as_deref()).collect();
        assert_eq!(
            subjects,
            [
                "setup", "setup", "plug", "bob", "end-1", "carol", "carol", "carol", "dave", "dave"
            ]
        );
        let users: Vec<String> = s
            .users()
            .await
            .unwrap()
            .into_iter()
            .map(|u| u.name)
            .collect();
        assert_eq!(users, ["alice", "bob", "carol", "dave", "plug"]);
        let ended = s.grant(g.id).await.unwrap().unwrap();
        assert_eq!(ended.ended_by.as_deref(), Some("first"));
    }

    /// Holds the chain head from another connection, so that a "plug" (the user `plug`, one
    /// event with subject `plug`) and then `batch` are one transaction each
    /// ([`plug_then_batch`]); returns the batch's results.
    async fn commit_as_one_batch(
        url: &str,
        s: &Arc<PostgresStore>,
        batch: Vec<Changeset>,
    ) -> Vec<Outcome> {
        let mut lock = PgConnection::connect(url).await.unwrap();
        sqlx::raw_sql("BEGIN; SELECT 1 FROM audit_head WHERE id = 1 FOR UPDATE")
            .execute(&mut lock)
            .await
            .unwrap();
        let release = async move {
            sqlx::raw_sql("COMMIT").execute(&mut lock).await.unwrap();
        };
        let stats = {
            let s = s.clone();
            move || s.group_commit_stats()
        };
        let plug = cs(Write::InsertUser(user("plug")), "plug", 1);
        let (plug, results) = plug_then_batch(s.clone(), stats, plug, batch, release).await;
        plug.unwrap();
        results
    }

    /// The command ids (`cmin`) that inserted `ids` into `table`: one per statement.
    async fn inserting_statements(url: &str, table: &str, ids: &[Uuid]) -> usize {
        let mut c = PgConnection::connect(url).await.unwrap();
        let ids: Vec<String> = ids.iter().map(Uuid::to_string).collect();
        let sql = match table {
            "requests" => "SELECT COUNT(DISTINCT cmin::text) FROM requests WHERE id = ANY($1)",
            "grants" => "SELECT COUNT(DISTINCT cmin::text) FROM grants WHERE id = ANY($1)",
            other => panic!("no query for {other}"),
        };
        let n: i64 = sqlx::query_scalar(sql)
            .bind(&ids)
            .fetch_one(&mut c)
            .await
            .unwrap();
        n as usize
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_batchs_requests_and_grants_are_inserted_a_few_rows_per_statement() {
        let Some((url, s)) = fresh("gc_multi_row").await else {
            return;
        };
        s.commit(cs(Write::InsertUser(user("alice")), "setup", 1))
            .await
            .unwrap();
        let requests: Vec<Request> = (0..8).map(|_| request("alice")).collect();
        let grants: Vec<Grant> = requests.iter().map(grant_for).collect();
        let batch = requests
            .iter()
            .zip(&grants)
            .map(|(r, g)| {
                Changeset::new()
                    .write(Write::InsertRequest(r.clone()))
                    .write(Write::InsertGrant(g.clone()))
                    .event(ev("request.created", &r.id.to_string()))
            })
            .collect();
        for r in commit_as_one_batch(&url, &s, batch).await {
            assert_eq!(r.unwrap().len(), 1);
        }
        let rids: Vec<Uuid> = requests.iter().map(|r| r.id).collect();
        let gids: Vec<Uuid> = grants.iter().map(|g| g.id).collect();
        assert_eq!(inserting_statements(&url, "requests", &rids).await, 1);
        assert_eq!(inserting_statements(&url, "grants", &gids).await, 1);
        for g in &grants {
            assert_eq!(s.grant(g.id).await.unwrap().as_ref(), Some(g));
        }
        assert_eq!(whole_chain(&*s).await.len(), 1 + 1 + 8);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn refused_requests_and_grants_in_a_batch_are_rolled_back_alone() {
        let Some((url, s)) = fresh("gc_multi_row_refusals").await else {
            return;
        };
        s.commit(cs(Write::InsertUser(user("alice")), "setup", 1))
            .await
            .unwrap();
        let (r1, r2, r4) = (request("alice"), request("alice"), request("alice"));
        let (g1, g4) = (grant_for(&r1), grant_for(&r4));
        let g2_taken_id = Grant {
            id: g1.id,
            ..grant_for(&r2)
        };
        let second_for_r1 = grant_for(&r1);
        let pair = |r: &Request, g: &Grant, subject: &str| {
            Changeset::new()
                .write(Write::InsertRequest(r.clone()))
                .write(Write::InsertGrant(g.clone()))
                .event(ev("pair.a", subject))
                .event(ev("pair.b", subject))
        };
        let batch = vec![
            pair(&r1, &g1, "r1"),
            // A grant id taken by the changeset before, in the same batch.
            pair(&r2, &g2_taken_id, "r2"),
            // Needs g1 in the table already.
            cs(
                Write::EndGrant {
                    id: g1.id,
                    state: GrantState::Revoked,
                    at: t(5),
                    by: "carol".into(),
                    reason: None,
                },
                "end-g1",
                1,
            ),
            // A request id taken.
            cs(Write::InsertRequest(r1.clone()), "r1-again", 1),
            pair(&r4, &g4, "r4"),
            // A second grant for a request.
            cs(Write::InsertGrant(second_for_r1.clone()), "g1-again", 1),
        ];
        let results = commit_as_one_batch(&url, &s, batch).await;
        let shape: Vec<Result<usize, String>> = results
            .into_iter()
            .map(|r| match r {
                Ok(evs) => Ok(evs.len()),
                Err(StoreError::AlreadyExists(m)) => Err(m),
                Err(e) => panic!("{e}"),
            })
            .collect();
        assert_eq!(
            shape,
            [
                Ok(2),
                Err(format!("grant {} already exists", g1.id)),
                Ok(1),
                Err(format!("request {} already exists", r1.id)),
                Ok(2),
                Err(format!("a grant for request {} already exists", r1.id)),
            ]
        );
        assert!(s.request(r2.id).await.unwrap().is_none(), "r2 rolled back");
        assert!(s.grant(second_for_r1.id).await.unwrap().is_none());
        let ended = s.grant(g1.id).await.unwrap().unwrap();
        assert_eq!(
            (ended.state, ended.ended_by.as_deref()),
            (GrantState::Revoked, Some("carol"))
        );
        assert_eq!(s.grant(g4.id).await.unwrap().as_ref(), Some(&g4));
        let chain = whole_chain(&*s).await;
        let subjects: Vec<&str> = chain.iter().filter_map(|e| e.subject.as_deref()).collect();
        assert_eq!(
            subjects,
            ["setup", "plug", "r1", "r1", "end-g1", "r4", "r4"]
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn two_instances_under_concurrent_committers_keep_one_chain() {
        let Some((url, first)) = fresh("gc_two_instances").await else {
            return;
        };
        let second = Arc::new(PostgresStore::connect(&url).await.unwrap());
        let r = request("alice");
        let g = grant_for(&r);
        first
            .commit(
                Changeset::new()
                    .write(Write::InsertRequest(r))
                    .write(Write::InsertGrant(g.clone())),
            )
            .await
            .unwrap();
        // 2 × 16 committers, each 20 changesets: its own users, a contested user name and one
        // end of the same grant (one of each wins).
        let stores = [first.clone() as Arc<dyn Store>, second.clone()];
        let (contested, ends, ok) = race(&stores, 32, g.id).await;
        assert_eq!((contested, ends, ok), (1, 1, 32 * 18));
        for s in [&first, &second] {
            let stats = s.group_commit_stats();
            println!(
                "{} changesets in {} transactions",
                stats.changesets, stats.transactions
            );
            assert!(stats.transactions <= stats.changesets);
        }
        assert_eq!(whole_chain(&*first).await.len(), 32 * 18 + 2);
        assert_eq!(first.users().await.unwrap().len(), 32 * 18 + 1);
    }
}
