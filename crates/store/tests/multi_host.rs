//! A `database_url` with several hosts: the store writes to whichever is the writable primary,
//! and follows it when it moves, without a restart.
//!
//! Two real clusters stand in for a primary and a standby: "standby" here means a server whose
//! sessions are read-only (`default_transaction_read_only`), which is what pedmd's check sees
//! on a real standby too (the Patroni failover itself is tested in
//! `crates/pedm/tests/postgres_ha.rs`).

use jiff::Timestamp;
use pedm_core::model::User;
use pedm_core::store::{Changeset, Store, StoreError, Write};
use pedm_store::PostgresStore;
use pedm_store::testing::TestPostgres;
use sqlx::Connection;
use std::time::{Duration, Instant};

fn user(name: &str) -> User {
    User {
        name: name.into(),
        display_name: None,
        email: None,
        admin: false,
        disabled: false,
        created_at: Timestamp::now(),
    }
}

async fn set_read_only(pg: &TestPostgres, on: bool) {
    let mut c = sqlx::PgConnection::connect(&pg.url())
        .await
        .expect("connect");
    let sql = if on {
        "ALTER SYSTEM SET default_transaction_read_only = on"
    } else {
        "ALTER SYSTEM RESET default_transaction_read_only"
    };
    sqlx::query(sql)
        .execute(&mut c)
        .await
        .expect("alter system");
    sqlx::query("SELECT pg_reload_conf()")
        .execute(&mut c)
        .await
        .expect("reload");
}

async fn has_user(pg: &TestPostgres, name: &str) -> bool {
    let mut c = sqlx::PgConnection::connect(&pg.url())
        .await
        .expect("connect");
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM users WHERE name = $1")
        .bind(name)
        .fetch_one(&mut c)
        .await
        .expect("count");
    n == 1
}

/// A loopback port nothing listens on.
fn dead_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

#[tokio::test]
async fn writes_go_to_the_writable_host_and_follow_it_when_it_moves() {
    let (Some(a), Some(b)) = (TestPostgres::start_or_skip(), TestPostgres::start_or_skip()) else {
        return;
    };
    // b gets the schema while writable, as a replica would have it, then turns "standby".
    PostgresStore::connect(&b.url())
        .await
        .expect("migrate b")
        .close()
        .await;
    set_read_only(&b, true).await;

    let url = format!(
        "postgres://postgres@127.0.0.1:{},127.0.0.1:{},127.0.0.1:{}/pedm",
        dead_port(),
        b.port(),
        a.port()
    );
    let store = PostgresStore::connect(&url).await.expect("connect");
    store
        .commit(Changeset::new().write(Write::InsertUser(user("alice"))))
        .await
        .expect("write to the primary");
    assert!(
        has_user(&a, "alice").await,
        "alice is on a, the writable host"
    );

    // The primary moves: a turns read-only, b writable.
    set_read_only(&a, true).await;
    set_read_only(&b, false).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut refused = 0;
    loop {
        match store
            .commit(Changeset::new().write(Write::InsertUser(user("bob"))))
            .await
        {
            Ok(_) => break,
            // While the store has not moved yet, a write fails (a 503 for the caller); it
            // never lands on the read-only host.
            Err(StoreError::Backend(e)) => {
                refused += 1;
                assert!(
                    Instant::now() < deadline,
                    "the store did not follow the primary within 20 s: {e}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    println!("writes refused before the store moved: {refused}");
    assert!(has_user(&b, "bob").await, "bob is on b, the new primary");
    assert!(
        !has_user(&a, "bob").await,
        "nothing was written to the old one"
    );
    // Reads come from the new primary too.
    assert!(store.user("bob").await.expect("read").is_some());
    assert!(
        store.user("alice").await.expect("read").is_none(),
        "alice is only on a"
    );
    store.close().await;
}

#[tokio::test]
async fn no_writable_host_is_an_error_that_names_each_host() {
    let Some(b) = TestPostgres::start_or_skip() else {
        return;
    };
    set_read_only(&b, true).await;
    let dead = dead_port();
    let url = format!(
        "postgres://postgres:hunter2@127.0.0.1:{dead},127.0.0.1:{}/pedm",
        b.port()
    );
    let e = PostgresStore::connect(&url)
        .await
        .err()
        .expect("no primary: connect fails")
        .to_string();
    assert!(e.contains(&format!("127.0.0.1:{dead}")), "{e}");
    assert!(
        e.contains(&format!("127.0.0.1:{}: a standby", b.port())),
        "{e}"
    );
    assert!(
        !e.contains("hunter2"),
        "the password is not in the error: {e}"
    );
}
