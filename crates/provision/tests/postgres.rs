//! The PostgreSQL provisioner against a real throwaway cluster (PostgreSQL 15 here).
//!
//! The shared cluster is switched from trust to SCRAM password authentication for every
//! role but `postgres`, so "connect with the returned password" really checks the password.

use std::sync::OnceLock;
use std::time::Duration;

use pedm_provision::{GrantSpec, PostgresConfig, PostgresProvisioner, ProvisionError, Provisioner};
use pedm_store::testing::TestPostgres;
use serde_json::json;
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

/// One cluster for the tests that do not stop it. `None` when PostgreSQL is not installed.
fn shared() -> Option<&'static TestPostgres> {
    static PG: OnceLock<Option<TestPostgres>> = OnceLock::new();
    PG.get_or_init(|| {
        let pg = TestPostgres::start_or_skip()?;
        require_passwords(&pg);
        Some(pg)
    })
    .as_ref()
}

/// Rewrites pg_hba.conf: trust for `postgres` (the admin), SCRAM for everyone else.
fn require_passwords(pg: &TestPostgres) {
    let url = pg.url();
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async move {
                let mut c = PgConnection::connect(&url).await.unwrap();
                let hba: String = sqlx::query_scalar("SHOW hba_file")
                    .fetch_one(&mut c)
                    .await
                    .unwrap();
                std::fs::write(
                    &hba,
                    "local all all trust\n\
                     host all postgres 127.0.0.1/32 trust\n\
                     host all all 127.0.0.1/32 scram-sha-256\n",
                )
                .unwrap();
                sqlx::query("CREATE ROLE hba_probe LOGIN PASSWORD 'right'")
                    .execute(&mut c)
                    .await
                    .unwrap();
                let _: bool = sqlx::query_scalar("SELECT pg_reload_conf()")
                    .fetch_one(&mut c)
                    .await
                    .unwrap();
                // Wait until a wrong password is refused.
                let probe = url.replace("postgres@", "hba_probe:wrong@");
                for _ in 0..100 {
                    if PgConnection::connect(&probe).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                panic!("pg_hba.conf change did not take effect");
            })
    })
    .join()
    .unwrap();
}

fn spec(user: &str, settings: serde_json::Value) -> GrantSpec {
    GrantSpec {
        grant_id: Uuid::now_v7(),
        user: user.into(),
        target: "db".into(),
        role: "rw".into(),
        run_as: None,
        expires_at: jiff::Timestamp::now() + jiff::SignedDuration::from_hours(1),
        settings,
    }
}

async fn connect(url: &str) -> PgConnection {
    PgConnection::connect(url).await.unwrap()
}

/// A login's `VALID UNTIL`, in Unix seconds.
async fn valid_until(c: &mut PgConnection, login: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT floor(extract(epoch FROM rolvaliduntil))::bigint FROM pg_roles WHERE rolname = $1",
    )
    .bind(login)
    .fetch_one(c)
    .await
    .unwrap()
}

async fn exec(c: &mut PgConnection, sql: &'static str) {
    sqlx::raw_sql(sql).execute(&mut *c).await.unwrap();
}

fn sqlstate(e: &sqlx::Error) -> Option<String> {
    e.as_database_error()
        .and_then(|d| d.code())
        .map(|c| c.to_string())
}

/// `postgres://LOGIN:PASSWORD@127.0.0.1:PORT/DB` from the admin URL of DB.
fn url_as(admin_url: &str, login: &str, password: &str) -> String {
    admin_url.replace("postgres@", &format!("{login}:{password}@"))
}

async fn insert(url: &str, table: &str) -> Result<(), sqlx::Error> {
    let mut c = PgConnection::connect(url).await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {table} VALUES (1)"
    )))
    .execute(&mut c)
    .await?;
    Ok(())
}

fn provisioner(url: &str) -> PostgresProvisioner {
    PostgresProvisioner::new(&PostgresConfig::new(url)).unwrap()
}

#[tokio::test]
async fn grant_role_really_grants_and_revokes() {
    let Some(pg) = shared() else { return };
    let url = pg.fresh_database("grant_role").unwrap();
    let mut admin = connect(&url).await;
    exec(
        &mut admin,
        "CREATE ROLE gr_readwrite NOLOGIN; CREATE TABLE gr_t (x int); \
         GRANT INSERT ON gr_t TO gr_readwrite; \
         CREATE ROLE gr_alice LOGIN PASSWORD 'alice-pw-1'",
    )
    .await;
    let alice = url_as(&url, "gr_alice", "alice-pw-1");
    let p = provisioner(&url);
    let g = spec(
        "alice",
        json!({"mode": "grant_role", "pg_role": "gr_readwrite", "login": "gr_{user}"}),
    );

    let e = insert(&alice, "gr_t").await.unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("42501"), "{e}");
    assert!(!p.observe(&g).await.unwrap().present);

    let out = p.grant(&g).await.unwrap();
    assert_eq!(out.secret, None);
    assert!(out.detail.contains("gr_readwrite"), "{}", out.detail);
    insert(&alice, "gr_t").await.unwrap();
    assert!(p.observe(&g).await.unwrap().present);
    // Granting twice succeeds.
    p.grant(&g).await.unwrap();

    // A session opened while the role was held loses it too.
    let mut open = connect(&alice).await;
    p.revoke(&g).await.unwrap();
    let e = insert(&alice, "gr_t").await.unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("42501"), "{e}");
    let e = sqlx::raw_sql("INSERT INTO gr_t VALUES (2)")
        .execute(&mut open)
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("42501"), "{e}");
    assert!(!p.observe(&g).await.unwrap().present);
    // Revoking what is gone succeeds.
    p.revoke(&g).await.unwrap();

    // A login that does not exist: refused (permanent), not retryable.
    let ghost = spec(
        "ghost",
        json!({"mode": "grant_role", "pg_role": "gr_readwrite"}),
    );
    let e = p.grant(&ghost).await.unwrap_err();
    assert!(matches!(e, ProvisionError::Refused(_)), "{e:?}");
    assert!(!e.is_retryable());

    // terminate_sessions: the login's sessions end on revoke.
    let g2 = spec(
        "alice",
        json!({"mode": "grant_role", "pg_role": "gr_readwrite", "login": "gr_{user}",
               "terminate_sessions": true}),
    );
    p.grant(&g2).await.unwrap();
    let mut open = connect(&alice).await;
    exec(&mut open, "SET ROLE gr_readwrite").await;
    p.revoke(&g2).await.unwrap();
    assert!(sqlx::raw_sql("SELECT 1").execute(&mut open).await.is_err());
}

#[tokio::test]
async fn temp_login_with_password_expiry_and_session_termination() {
    let Some(pg) = shared() else { return };
    let url = pg.fresh_database("temp_login").unwrap();
    let mut admin = connect(&url).await;
    exec(
        &mut admin,
        "CREATE ROLE tl_readwrite NOLOGIN; CREATE TABLE tl_t (x int); \
         GRANT INSERT ON tl_t TO tl_readwrite",
    )
    .await;
    let p = provisioner(&url);
    let g = spec(
        "Bob.Smith",
        json!({"mode": "temp_login", "pg_role": "tl_readwrite"}),
    );
    let id = g.grant_id.simple().to_string();
    let login = format!("pedm_bob_smith_{}", &id[id.len() - 8..]);

    let out = p.grant(&g).await.unwrap();
    let password = out.secret.clone().expect("a generated password");
    assert!(password.len() >= 24);
    assert!(out.detail.contains(&login), "{}", out.detail);
    assert!(!out.detail.contains(&password));
    assert!(!format!("{out:?}").contains(&password));

    // The password works, a wrong one does not, and the login can use the role.
    insert(&url_as(&url, &login, &password), "tl_t")
        .await
        .unwrap();
    assert!(
        PgConnection::connect(&url_as(&url, &login, "wrong"))
            .await
            .is_err()
    );
    // VALID UNTIL is the grant's expiry.
    let until = valid_until(&mut admin, &login).await;
    assert_eq!(until, g.expires_at.as_second());
    let seen = p.observe(&g).await.unwrap();
    assert!(seen.present, "{seen:?}");
    // An extension moves VALID UNTIL; a role granted to an existing login keeps no end.
    assert!(p.keeps_expiry(&g));
    assert!(!p.keeps_expiry(&spec(
        "bob",
        json!({"mode": "grant_role", "pg_role": "tl_readwrite"})
    )));
    let mut later = g.clone();
    later.expires_at = g.expires_at + jiff::SignedDuration::from_mins(30);
    let moved = p.extend(&later).await.unwrap();
    assert!(moved.contains(&login), "{moved}");
    let until = valid_until(&mut admin, &login).await;
    assert_eq!(until, later.expires_at.as_second());
    insert(&url_as(&url, &login, &password), "tl_t")
        .await
        .unwrap();

    // Granting again (a retry) hands out a fresh working password.
    let again = p.grant(&g).await.unwrap().secret.unwrap();
    assert_ne!(again, password);
    assert!(
        PgConnection::connect(&url_as(&url, &login, &password))
            .await
            .is_err()
    );
    let mut open = connect(&url_as(&url, &login, &again)).await;
    exec(&mut open, "SELECT 1").await;

    p.revoke(&g).await.unwrap();
    // The open session was terminated, the role is gone, nobody can log in.
    assert!(sqlx::raw_sql("SELECT 1").execute(&mut open).await.is_err());
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
            .bind(&login)
            .fetch_one(&mut admin)
            .await
            .unwrap();
    assert!(!exists);
    assert!(
        PgConnection::connect(&url_as(&url, &login, &again))
            .await
            .is_err()
    );
    assert!(!p.observe(&g).await.unwrap().present);
    p.revoke(&g).await.unwrap();
    // Extending a login that is gone is refused, not retried for ever.
    let gone = p.extend(&later).await.unwrap_err();
    assert!(!gone.is_retryable(), "{gone}");

    // A login that came to own an object is still dropped (ownership goes to the admin).
    let g3 = spec(
        "carol",
        json!({"mode": "temp_login", "pg_role": "tl_readwrite"}),
    );
    let pw = p.grant(&g3).await.unwrap().secret.unwrap();
    let id = g3.grant_id.simple().to_string();
    let login3 = format!("pedm_carol_{}", &id[id.len() - 8..]);
    exec(&mut admin, "GRANT CREATE ON SCHEMA public TO tl_readwrite").await;
    let mut c = connect(&url_as(&url, &login3, &pw)).await;
    exec(&mut c, "CREATE TABLE carol_t (x int)").await;
    drop(c);
    p.revoke(&g3).await.unwrap();
    let owner: String =
        sqlx::query_scalar("SELECT tableowner::text FROM pg_tables WHERE tablename = 'carol_t'")
            .fetch_one(&mut admin)
            .await
            .unwrap();
    assert_eq!(owner, "postgres");
}

async fn roles_snapshot(c: &mut PgConnection) -> (Vec<String>, i64) {
    let roles: Vec<String> = sqlx::query_scalar("SELECT rolname::text FROM pg_roles ORDER BY 1")
        .fetch_all(&mut *c)
        .await
        .unwrap();
    let members: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_auth_members")
        .fetch_one(&mut *c)
        .await
        .unwrap();
    (roles, members)
}

#[tokio::test]
async fn hostile_names_are_refused_and_change_nothing() {
    // A cluster of its own: "nothing changed" is checked on roles and memberships, which are
    // cluster-wide, and the other tests grant and create them on the shared one meanwhile.
    let Some(pg) = TestPostgres::start_or_skip() else {
        return;
    };
    require_passwords(&pg);
    let url = pg.fresh_database("hostile").unwrap();
    let mut admin = connect(&url).await;
    exec(&mut admin, "CREATE ROLE x; CREATE ROLE ho_rw").await;
    let before = roles_snapshot(&mut admin).await;
    let p = provisioner(&url);
    let hostile = ["bob\"; DROP ROLE x; --", "a'b"];
    let mut cases = Vec::new();
    for h in hostile {
        for mode in ["grant_role", "temp_login"] {
            cases.push(spec(h, json!({"mode": mode, "pg_role": "ho_rw"})));
            cases.push(spec("bob", json!({"mode": mode, "pg_role": h})));
        }
        cases.push(spec(
            "bob",
            json!({"mode": "grant_role", "pg_role": "ho_rw", "login": h}),
        ));
    }
    for g in &cases {
        let e = p.grant(g).await.unwrap_err();
        assert!(matches!(e, ProvisionError::Invalid(_)), "{g:?}: {e:?}");
        assert!(!e.is_retryable());
        let e = p.revoke(g).await.unwrap_err();
        assert!(matches!(e, ProvisionError::Invalid(_)), "{g:?}: {e:?}");
        let e = p.observe(g).await.unwrap_err();
        assert!(matches!(e, ProvisionError::Invalid(_)), "{g:?}: {e:?}");
    }
    assert_eq!(roles_snapshot(&mut admin).await, before);
}

#[tokio::test]
async fn discover_lists_superusers_and_privileged_roles() {
    let Some(pg) = shared() else { return };
    let url = pg.fresh_database("discover").unwrap();
    let mut admin = connect(&url).await;
    exec(
        &mut admin,
        "CREATE ROLE disc_creator LOGIN CREATEROLE; CREATE ROLE disc_priv NOLOGIN; \
         CREATE ROLE disc_team NOLOGIN IN ROLE disc_priv; \
         CREATE ROLE disc_member LOGIN IN ROLE disc_team; CREATE ROLE disc_plain LOGIN",
    )
    .await;
    let mut config = PostgresConfig::new(&url);
    config.privileged_roles = vec!["disc_priv".into()];
    let p = PostgresProvisioner::new(&config).unwrap();
    let found = p.discover().await.unwrap();
    let has = |account: &str, privilege: &str| {
        found
            .iter()
            .any(|s| s.account == account && s.privilege == privilege)
    };
    assert!(has("postgres", "superuser"), "{found:#?}");
    assert!(has("disc_creator", "createrole"), "{found:#?}");
    assert!(has("disc_team", "member:disc_priv"), "{found:#?}");
    assert!(has("disc_member", "member:disc_priv"), "{found:#?}");
    assert!(
        !found.iter().any(|s| s.account == "disc_plain"),
        "{found:#?}"
    );
}

#[tokio::test]
async fn revoke_while_the_cluster_is_down_is_retryable_and_succeeds_later() {
    let Some(pg) = TestPostgres::start_or_skip() else {
        return;
    };
    let url = pg.fresh_database("down").unwrap();
    let mut admin = connect(&url).await;
    exec(
        &mut admin,
        "CREATE ROLE dn_rw NOLOGIN; CREATE ROLE dn_dave LOGIN",
    )
    .await;
    drop(admin);
    let mut config = PostgresConfig::new(&url);
    config.timeout = Duration::from_secs(3);
    let p = PostgresProvisioner::new(&config).unwrap();
    let g = spec(
        "dave",
        json!({"mode": "grant_role", "pg_role": "dn_rw", "login": "dn_{user}"}),
    );
    p.grant(&g).await.unwrap();
    assert!(p.observe(&g).await.unwrap().present);

    pg.stop().unwrap();
    let e = p.revoke(&g).await.unwrap_err();
    assert!(matches!(e, ProvisionError::Unreachable(_)), "{e:?}");
    assert!(e.is_retryable());
    // The password-free URL is shown; a real one would be redacted.
    assert!(e.to_string().contains("127.0.0.1"), "{e}");

    pg.start_again().unwrap();
    p.revoke(&g).await.unwrap();
    assert!(!p.observe(&g).await.unwrap().present);
}

#[test]
fn urls_with_passwords_are_redacted_in_debug_and_errors() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut config = PostgresConfig::new("postgres://admin:hunter2@127.0.0.1:1/x");
        config.timeout = Duration::from_secs(2);
        assert!(!format!("{config:?}").contains("hunter2"));
        let p = PostgresProvisioner::new(&config).unwrap();
        assert!(!format!("{p:?}").contains("hunter2"));
        let e = p.discover().await.unwrap_err();
        assert!(e.is_retryable(), "{e:?}");
        assert!(!e.to_string().contains("hunter2"), "{e}");
        assert!(e.to_string().contains("admin:***@"), "{e}");
    });
}

async fn member(c: &mut PgConnection, account: &str) -> bool {
    sqlx::query_scalar("SELECT pg_has_role($1, 'rs_rw', 'MEMBER')")
        .bind(account)
        .fetch_one(c)
        .await
        .unwrap()
}

/// Drift removal: a membership granted by hand is revoked (really: the INSERT it allowed is
/// refused); one held through another role is refused with the role named; attributes, the
/// admin login and the bootstrap superuser are never touched.
#[tokio::test]
async fn remove_standing_revokes_hand_granted_memberships_only() {
    let Some(pg) = shared() else { return };
    let url = pg.fresh_database("remove_standing").unwrap();
    let mut admin = connect(&url).await;
    exec(
        &mut admin,
        "CREATE ROLE rs_rw NOLOGIN; CREATE TABLE rs_t (x int); GRANT INSERT ON rs_t TO rs_rw; \
         CREATE ROLE rs_bob LOGIN PASSWORD 'bob-pw-1'; GRANT rs_rw TO rs_bob; \
         CREATE ROLE rs_team NOLOGIN; GRANT rs_rw TO rs_team; \
         CREATE ROLE rs_carol LOGIN IN ROLE rs_team; \
         CREATE ROLE rs_admin LOGIN SUPERUSER PASSWORD 'admin-pw-1'; \
         GRANT rs_rw TO postgres; GRANT rs_rw TO rs_admin",
    )
    .await;
    let bob = url_as(&url, "rs_bob", "bob-pw-1");
    insert(&bob, "rs_t").await.unwrap();
    let mut config = PostgresConfig::new(&url);
    config.privileged_roles = vec!["rs_rw".into()];
    let p = PostgresProvisioner::new(&config).unwrap();
    let found = p.discover().await.unwrap();
    let find = |account: &str, privilege: &str| {
        found
            .iter()
            .find(|s| s.account == account && s.privilege == privilege)
            .unwrap_or_else(|| panic!("{account} {privilege} not in {found:#?}"))
            .clone()
    };

    let bob_rw = find("rs_bob", "member:rs_rw");
    assert_eq!(p.removable(&bob_rw), Ok(()));
    let detail = p.remove_standing(&bob_rw).await.unwrap();
    assert!(detail.contains("revoked"), "{detail}");
    assert!(!member(&mut admin, "rs_bob").await);
    let e = insert(&bob, "rs_t").await.unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("42501"), "{e}");
    // Removing what is gone succeeds.
    let again = p.remove_standing(&bob_rw).await.unwrap();
    assert!(again.contains("nothing to remove"), "{again}");

    // Held through another role: refused, naming it; removing that role's membership ends it.
    let e = p
        .remove_standing(&find("rs_carol", "member:rs_rw"))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, ProvisionError::Refused(m) if m.contains("rs_team")),
        "{e:?}"
    );
    p.remove_standing(&find("rs_team", "member:rs_rw"))
        .await
        .unwrap();
    assert!(!member(&mut admin, "rs_carol").await);

    // The login pedm connects as (here the bootstrap superuser too) and attributes: never.
    let postgres_rw = find("postgres", "member:rs_rw");
    assert!(
        p.removable(&postgres_rw)
            .unwrap_err()
            .contains("connects as")
    );
    assert!(matches!(
        p.remove_standing(&postgres_rw).await,
        Err(ProvisionError::Invalid(_))
    ));
    let superuser = find("postgres", "superuser");
    assert!(p.removable(&superuser).is_err());
    assert!(p.removable(&find("rs_admin", "superuser")).is_err());
    // Connected as another superuser, the bootstrap superuser is still protected (checked in
    // the target), and so is the role the connection runs as.
    let as_admin =
        PostgresProvisioner::new(&PostgresConfig::new(url_as(&url, "rs_admin", "admin-pw-1")))
            .unwrap();
    assert_eq!(as_admin.removable(&postgres_rw), Ok(()));
    let e = as_admin.remove_standing(&postgres_rw).await.unwrap_err();
    assert!(
        matches!(&e, ProvisionError::Invalid(m) if m.contains("bootstrap")),
        "{e:?}"
    );
    // Once it has looked at the target, it knows without asking again.
    as_admin.discover().await.unwrap();
    assert!(
        as_admin
            .removable(&postgres_rw)
            .unwrap_err()
            .contains("bootstrap")
    );
    assert!(member(&mut admin, "postgres").await);
    assert!(
        as_admin
            .removable(&find("rs_admin", "member:rs_rw"))
            .is_err()
    );
    assert!(member(&mut admin, "rs_admin").await);
    // Hostile names never reach the target.
    let mut hostile = bob_rw.clone();
    hostile.account = "x\"; DROP TABLE rs_t; --".into();
    assert!(matches!(
        p.remove_standing(&hostile).await,
        Err(ProvisionError::Invalid(_))
    ));
}
