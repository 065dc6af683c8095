//! pedmd on PostgreSQL: the life cycle, and two server instances sharing one database
//! (high availability) without deciding or ending anything twice.

mod common;

use common::*;
use pedm_api::*;
use pedm_store::testing::TestPostgres;
use std::time::Duration;

async fn verify_audit_chain(s: &Server) -> usize {
    let events = s
        .admin()
        .audit_events(&AuditQuery::default())
        .await
        .unwrap();
    pedm_core::audit::verify_chain(pedm_core::audit::GENESIS_HASH, 1, &events)
        .expect("audit chain verifies");
    events.len()
}

/// Two instances on database `db`; the second shares the first's admin token.
fn two_servers(db: &str) -> (Server, Server) {
    let a = Server::start_with(Options {
        database_url: Some(db.to_string()),
        ..Default::default()
    });
    let b = Server::start_with(Options {
        database_url: Some(db.to_string()),
        admin_token: Some(a.admin_token.clone()),
        ..Default::default()
    });
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_servers_on_one_database_decide_and_expire_exactly_once() {
    let Some(pg) = TestPostgres::start_or_skip() else {
        return;
    };
    let db = pg.fresh_database("ha").expect("database");
    let (a, b) = two_servers(&db);
    assert!(
        !b.data_path().join("admin.token").exists(),
        "the second instance must not bootstrap a second admin"
    );
    standard_targets(&a).await;
    // Written through A, visible through B.
    assert_eq!(b.admin().get_target("web1").await.unwrap().roles.len(), 2);

    let alice_token = user_with_token(&a, "alice", false).await;
    let mut approvers = vec![];
    for i in 0..6 {
        let t = user_with_token(&a, &format!("approver{i}"), true).await;
        // Half the approvers talk to each server.
        approvers.push(if i % 2 == 0 {
            a.client(&t)
        } else {
            b.client(&t)
        });
    }
    for round in 0..3 {
        // A requester per round: a second live grant of one role would be refused.
        let alice_a = if round == 0 {
            a.client(&alice_token)
        } else {
            a.client(&user_with_token(&a, &format!("alice{round}"), false).await)
        };
        let id = alice_a
            .create_request(&req("web1", "root", "10m", &format!("round {round}")))
            .await
            .unwrap()
            .request
            .id;
        let handles: Vec<_> = approvers
            .iter()
            .cloned()
            .map(|c| tokio::spawn(async move { c.approve_request(id, &Decide::default()).await }))
            .collect();
        let mut wins = 0;
        for h in handles {
            match h.await.unwrap() {
                Ok(_) => wins += 1,
                Err(e) => assert_eq!(e.status(), Some(409), "{e}"),
            }
        }
        assert_eq!(wins, 1, "exactly one approval wins across two servers");
    }

    // Both schedulers see the grant; it ends once.
    let g = b
        .client(&alice_token)
        .create_request(&req("web1", "docker", "2s", "quick"))
        .await
        .unwrap()
        .grant
        .unwrap();
    let admin = a.admin();
    // (Reads show a grant past its end as expired at once; the scheduler's write follows.)
    let expired_events = || async {
        admin
            .audit_events(&AuditQuery {
                action: Some("grant.expired".into()),
                subject: Some(format!("grant:{}", g.id)),
                ..Default::default()
            })
            .await
            .unwrap()
    };
    let ended = eventually(
        Duration::from_secs(40),
        "grant expiry on a shared database",
        || async {
            let g = admin.get_grant(g.id).await.unwrap();
            let recorded = !expired_events().await.is_empty();
            (g.state == GrantState::Expired && g.ended_at.is_some() && recorded).then_some(g)
        },
    )
    .await;
    assert!(ended.ended_at.unwrap() >= g.expires_at);
    let expired = expired_events().await;
    assert_eq!(expired.len(), 1, "ended exactly once: {expired:?}");

    // Two writers, one unforked chain.
    let n = verify_audit_chain(&a).await;
    assert!(n > 30, "{n} events");
}

/// Locks are read from memory (every request checks two): a lock made through one instance
/// must still stop requests on the other, within the second the cache may keep what it read,
/// and a lift must free them there too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lock_made_through_one_instance_stops_requests_on_the_other() {
    let Some(pg) = TestPostgres::start_or_skip() else {
        return;
    };
    let db = pg.fresh_database("locks_ha").expect("database");
    let (a, b) = two_servers(&db);
    standard_targets(&a).await;
    let alice = b.client(&user_with_token(&a, "alice", false).await);
    let body = req("web1", "docker", "10m", "deploy");
    // Served: approved, or (asked again) told the grant is already held: 409.
    let ask = || async {
        match alice.create_request(&body).await {
            Ok(_) => Ok(()),
            Err(e) if e.status() == Some(409) => Ok(()),
            Err(e) => Err(e),
        }
    };
    // B has read the locks (none) and keeps that.
    ask().await.unwrap();

    let lock = a
        .admin()
        .add_lock(&pedm_api::lock::CreateLock {
            user: Some("alice".into()),
            host: None,
            duration: "1h".into(),
            reason: "phished".into(),
        })
        .await
        .unwrap();
    let refusal = eventually(
        Duration::from_secs(10),
        "instance B refusing a locked person",
        || async {
            match ask().await {
                Err(e) if e.status() == Some(403) => Some(e.to_string()),
                Err(e) => panic!("{e}"),
                Ok(_) => None,
            }
        },
    )
    .await;
    assert!(refusal.contains(&lock.id.to_string()), "{refusal}");

    a.admin().lift_lock(lock.id).await.unwrap();
    eventually(
        Duration::from_secs(10),
        "instance B serving a person whose lock was lifted",
        || async {
            match ask().await {
                Ok(()) => Some(()),
                Err(e) if e.status() == Some(403) => None,
                Err(e) => panic!("{e}"),
            }
        },
    )
    .await;
}

#[tokio::test]
async fn lifecycle_and_restart_on_postgres() {
    let Some(pg) = TestPostgres::start_or_skip() else {
        return;
    };
    let db = pg.fresh_database("life").expect("database");
    let mut s = Server::start_with(Options {
        database_url: Some(db),
        ..Default::default()
    });
    standard_targets(&s).await;
    let alice_token = user_with_token(&s, "alice", false).await;
    let alice = s.client(&alice_token);
    let r = alice
        .create_request(&req("web1", "root", "5m", "investigate"))
        .await
        .unwrap()
        .request;
    let d = s
        .admin()
        .approve_request(
            r.id,
            &Decide {
                comment: Some("ok".into()),
            },
        )
        .await
        .unwrap();
    let g = d.grant.unwrap();
    let short = alice
        .create_request(&req("web1", "docker", "1s", "short"))
        .await
        .unwrap()
        .grant
        .unwrap();

    s.kill();
    sleep_past(short.expires_at).await;
    s.start_again();
    let admin = s.admin();
    eventually(
        Duration::from_secs(10),
        "overdue grant ends after restart",
        || async {
            (admin.get_grant(short.id).await.unwrap().state == GrantState::Expired).then_some(())
        },
    )
    .await;
    assert_eq!(
        admin.get_grant(g.id).await.unwrap().state,
        GrantState::Active
    );
    let released = s
        .client(&alice_token)
        .release_grant(g.id, &Reason::default())
        .await
        .unwrap();
    assert_eq!(released.state, GrantState::Released);
    verify_audit_chain(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn while_the_database_is_away_answers_are_503_with_retry_after_never_wrong() {
    let Some(pg) = TestPostgres::start_or_skip() else {
        return;
    };
    let db = pg.fresh_database("outage").expect("database");
    let s = Server::start_with(Options {
        database_url: Some(db),
        ..Default::default()
    });
    standard_targets(&s).await;
    let alice_token = user_with_token(&s, "alice", false).await;
    let before = s
        .client(&alice_token)
        .create_request(&req("web1", "docker", "1h", "deploy"))
        .await
        .unwrap()
        .grant
        .unwrap();
    let events = verify_audit_chain(&s).await;

    pg.stop().expect("stopping PostgreSQL");
    let http = reqwest::Client::new();
    for (method, path) in [
        (
            reqwest::Method::GET,
            format!("/api/v1/grants/{}", before.id),
        ),
        (reqwest::Method::POST, "/api/v1/requests".to_string()),
    ] {
        let r = http
            .request(method.clone(), format!("{}{path}", s.url))
            .bearer_auth(&alice_token)
            .json(&req("web1", "root", "1h", "while the database is away"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 503, "{method} {path}");
        assert_eq!(
            r.headers().get("retry-after").and_then(|v| v.to_str().ok()),
            Some("1")
        );
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(
            body["error"]["message"],
            "storage is unavailable; try again"
        );
    }

    pg.start_again().expect("starting PostgreSQL again");
    let alice = s.client(&alice_token);
    let after = eventually(Duration::from_secs(30), "the database is back", || {
        let alice = alice.clone();
        async move {
            alice
                .create_request(&req("web1", "docker", "1h", "deploy again"))
                .await
                .ok()
        }
    })
    .await;
    assert!(after.grant.is_some());
    // Nothing was half-written while it was away: the chain goes on from where it was.
    assert!(verify_audit_chain(&s).await > events);
    let mine = alice.list_requests(&Default::default()).await.unwrap();
    assert!(
        mine.iter()
            .all(|r| r.justification != "while the database is away"),
        "a request answered 503 was stored"
    );
}

#[tokio::test]
async fn instances_given_one_kek_share_the_first_ones_signing_keys() {
    let Some(pg) = TestPostgres::start_or_skip() else {
        return;
    };
    let db = pg.fresh_database("kek").expect("database");
    let keys = tempfile::tempdir().expect("tempdir");
    let kek = kek_file(keys.path(), "kek");

    // One instance with its own key files grows into several: its identity is kept.
    let mut a = Server::start_with(Options {
        database_url: Some(db.clone()),
        ..Default::default()
    });
    standard_targets(&a).await;
    let audit_key = a.anonymous().audit_pubkey().await.unwrap().public_key;
    let agent_key = a.admin().register_host("web1").await.unwrap().server_key;
    a.reconfigure(Some(&with_kek(&kek)), &[]);
    assert_eq!(
        a.anonymous().audit_pubkey().await.unwrap().public_key,
        audit_key
    );

    let b = Server::start_with(Options {
        database_url: Some(db.clone()),
        admin_token: Some(a.admin_token.clone()),
        config: Some(with_kek(&kek)),
        ..Default::default()
    });
    assert_eq!(
        b.anonymous().audit_pubkey().await.unwrap().public_key,
        audit_key,
        "the second instance signs checkpoints with the first one's key"
    );
    assert_eq!(
        b.admin().register_host("web1").await.unwrap().server_key,
        agent_key,
        "agents get one server key whichever instance they reach"
    );
    for f in ["audit.key", "agent.key"] {
        assert!(
            !b.data_path().join(f).exists(),
            "{f}: the second instance made no key of its own"
        );
    }
    // Sealed once per key, recorded once, never in clear.
    let shared = audit_of(&a, "key.shared").await;
    let mut subjects: Vec<_> = shared.iter().filter_map(|e| e.subject.clone()).collect();
    subjects.sort();
    assert_eq!(subjects, ["key:agent", "key:audit"]);
    let mut c = <sqlx::PgConnection as sqlx::Connection>::connect(&db)
        .await
        .unwrap();
    let sealed: Vec<String> =
        sqlx::query_scalar("SELECT value FROM integration_state WHERE integration = 'sealed-keys'")
            .fetch_all(&mut c)
            .await
            .unwrap();
    assert_eq!(sealed.len(), 2);
    let secret = std::fs::read_to_string(a.data_path().join("audit.key")).unwrap();
    for v in &sealed {
        assert!(v.starts_with("v1:") && !v.contains(secret.trim()), "{v}");
    }

    // Checkpoints signed by either instance verify with the one public key.
    a.admin().sign_audit_checkpoint().await.unwrap();
    user_with_token(&b, "carol", false).await;
    b.admin().sign_audit_checkpoint().await.unwrap();
    let o = b.cli(&b.admin_token, &["audit", "verify", "--pubkey", &audit_key]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));

    // An instance with another KEK does not start: never a second identity.
    let other = kek_file(keys.path(), "other");
    let log = Server::try_start_with(Options {
        database_url: Some(db),
        admin_token: Some(a.admin_token.clone()),
        config: Some(with_kek(&other)),
        ..Default::default()
    })
    .err()
    .expect("a wrong KEK stops pedmd");
    assert!(
        log.contains("sealed under another key-encryption key"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_instance_killed_under_load_loses_nothing_it_acknowledged() {
    let Some(pg) = TestPostgres::start_or_skip() else {
        return;
    };
    let db = pg.fresh_database("killed").expect("database");
    let (mut a, b, clients) = common::load::two_instances(
        Options {
            database_url: Some(db.clone()),
            ..Default::default()
        },
        Options {
            database_url: Some(db),
            ..Default::default()
        },
    )
    .await;
    // Requests to the killed instance get no answer; nothing else may fail.
    let mut load = common::load::Load::start(clients, "3s", |_, e| e.status().is_none());
    load.wait_acked(100, Duration::from_secs(60), "before the kill")
        .await;
    // SIGKILL while its committer is busy with the load: a batch in flight is rolled back
    // whole by PostgreSQL, and none of it was acknowledged.
    a.kill();
    let at_kill = load.acked();
    load.wait_acked(
        at_kill + 200,
        Duration::from_secs(60),
        "the other instance goes on",
    )
    .await;
    let seen = load.finish().await;
    println!(
        "acknowledged {} requests ({at_kill} before the kill), {} got no answer",
        seen.acked.len(),
        seen.refused
    );
    // The survivor's scheduler ends the killed instance's grants too, each once.
    common::load::assert_stored_and_expired_once(&[b.admin()], &seen).await;
    let n = common::load::assert_chain_verifies(&b.admin()).await;
    // The killed instance comes back onto the same log.
    a.start_again();
    assert!(common::load::assert_chain_verifies(&a.admin()).await >= n);
}
