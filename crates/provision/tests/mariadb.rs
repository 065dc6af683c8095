//! The MariaDB provisioner against a real throwaway MariaDB server (Debian's
//! mariadb-server, 10.11 here), logging in as the accounts it makes with the real protocol.

#[path = "support/mariadb.rs"]
mod support;

use std::sync::OnceLock;

use pedm_provision::{
    GrantSpec, MariaDbConfig, MariaDbProvisioner, ProvisionError, Provisioner, StandingPrivilege,
    TargetConfig, build,
};
use serde_json::json;
use sqlx::{Connection, MySqlConnection};
use support::TestMariaDb;
use uuid::Uuid;

/// One server for the tests that do not stop it.
fn shared() -> Option<&'static TestMariaDb> {
    static DB: OnceLock<Option<TestMariaDb>> = OnceLock::new();
    DB.get_or_init(|| {
        let db = TestMariaDb::start_or_skip()?;
        db.root_sql(
            "CREATE DATABASE app; CREATE TABLE app.t (x INT); INSERT INTO app.t VALUES (42); \
             CREATE ROLE readwrite; GRANT SELECT, INSERT ON app.* TO readwrite; \
             CREATE ROLE dba; GRANT ALL PRIVILEGES ON *.* TO dba; \
             GRANT readwrite TO 'pedm_admin'@'127.0.0.1' WITH ADMIN OPTION; \
             GRANT dba TO 'pedm_admin'@'127.0.0.1' WITH ADMIN OPTION;",
        );
        Some(db)
    })
    .as_ref()
}

fn spec(user: &str, settings: serde_json::Value) -> GrantSpec {
    GrantSpec {
        grant_id: Uuid::now_v7(),
        user: user.into(),
        target: "appdb".into(),
        role: "rw".into(),
        run_as: None,
        expires_at: jiff::Timestamp::now() + jiff::SignedDuration::from_hours(1),
        settings,
    }
}

async fn connect(url: &str) -> Result<MySqlConnection, sqlx::Error> {
    MySqlConnection::connect(url).await
}

async fn can_read(c: &mut MySqlConnection) -> Result<i32, sqlx::Error> {
    sqlx::query_scalar("SELECT x FROM app.t").fetch_one(c).await
}

#[tokio::test]
async fn grant_role_is_the_default_role_and_revoke_ends_live_connections() {
    let Some(db) = shared() else { return };
    db.root_sql("CREATE USER 'alice'@'%' IDENTIFIED BY 'alice-pw';");
    let p = MariaDbProvisioner::new(&MariaDbConfig::new(db.url())).unwrap();
    let g = spec(
        "alice",
        json!({"mode": "grant_role", "db_role": "readwrite"}),
    );
    let alice = db.url_as("alice", "alice-pw");

    let mut before = connect(&alice).await.unwrap();
    assert!(
        can_read(&mut before).await.is_err(),
        "no access before the grant"
    );
    let out = p.grant(&g).await.unwrap();
    assert!(out.secret.is_none());
    assert!(out.detail.contains("readwrite"), "{}", out.detail);
    p.grant(&g).await.unwrap(); // idempotent
    // The role is in force at login, without SET ROLE.
    let mut during = connect(&alice).await.unwrap();
    assert_eq!(can_read(&mut during).await.unwrap(), 42);
    let seen = p.observe(&g).await.unwrap();
    assert!(seen.present, "{}", seen.detail);
    assert_eq!(p.account(&g).as_deref(), Some("alice@%"));

    p.revoke(&g).await.unwrap();
    // The connection that had the role is gone; a new one has no access.
    assert!(
        can_read(&mut during).await.is_err(),
        "a live connection kept the role"
    );
    let mut after = connect(&alice).await.unwrap();
    assert!(can_read(&mut after).await.is_err());
    assert!(!p.observe(&g).await.unwrap().present);
    p.revoke(&g).await.unwrap(); // idempotent
    // A missing account or role is a refusal that names it, not a success.
    let nobody = spec(
        "nobody",
        json!({"mode": "grant_role", "db_role": "readwrite"}),
    );
    let e = p.grant(&nobody).await.unwrap_err();
    assert!(matches!(e, ProvisionError::Refused(_)), "{e:?}");
    p.revoke(&nobody).await.unwrap();
}

#[tokio::test]
async fn temp_user_with_a_password_only_its_holder_sees() {
    let Some(db) = shared() else { return };
    let p = MariaDbProvisioner::new(&MariaDbConfig::new(db.url())).unwrap();
    let g = spec(
        "Bob.Smith",
        json!({"mode": "temp_user", "db_role": "readwrite"}),
    );
    let login = p.account(&g).unwrap();
    let user = login.strip_suffix("@%").unwrap().to_string();
    assert!(user.starts_with("pedm_bob_smith_"), "{user}");

    let first = p.grant(&g).await.unwrap();
    let pw1 = first.secret.clone().unwrap();
    assert_eq!(pw1.len(), 32);
    assert!(!first.detail.contains(&pw1));
    assert!(!format!("{first:?}").contains(&pw1));
    let mut c = connect(&db.url_as(&user, &pw1)).await.unwrap();
    assert_eq!(can_read(&mut c).await.unwrap(), 42);
    // The server got a hash, never the password.
    let stored = db.root_sql(&format!(
        "SELECT authentication_string FROM mysql.user WHERE User = '{user}'"
    ));
    assert!(
        stored.trim().starts_with('*') && !stored.contains(&pw1),
        "{stored}"
    );

    // A retry resets the password: the old one stops working.
    let pw2 = p.grant(&g).await.unwrap().secret.unwrap();
    assert_ne!(pw1, pw2);
    assert!(connect(&db.url_as(&user, &pw1)).await.is_err());
    let mut c2 = connect(&db.url_as(&user, &pw2)).await.unwrap();
    assert!(p.observe(&g).await.unwrap().present);

    p.revoke(&g).await.unwrap();
    assert!(
        can_read(&mut c).await.is_err(),
        "a live connection outlived the revoke"
    );
    assert!(can_read(&mut c2).await.is_err());
    assert!(connect(&db.url_as(&user, &pw2)).await.is_err());
    let seen = p.observe(&g).await.unwrap();
    assert!(
        !seen.present && seen.detail.contains("no account"),
        "{}",
        seen.detail
    );
    p.revoke(&g).await.unwrap(); // idempotent
}

#[tokio::test]
async fn hostile_names_are_refused_and_change_nothing() {
    let Some(db) = shared() else { return };
    let p = MariaDbProvisioner::new(&MariaDbConfig::new(db.url())).unwrap();
    let users = || db.root_sql("SELECT User, Host FROM mysql.user ORDER BY 1, 2");
    let before = users();
    for settings in [
        json!({"mode": "grant_role", "db_role": "readwrite", "login": "x'@'%'; DROP USER root; --"}),
        json!({"mode": "grant_role", "db_role": "read`write"}),
        json!({"mode": "grant_role", "db_role": "readwrite", "host": "%' IDENTIFIED BY 'x"}),
        json!({"mode": "temp_user", "db_role": "readwrite", "host": "a b"}),
    ] {
        let g = spec("alice", settings.clone());
        assert!(
            matches!(p.grant(&g).await, Err(ProvisionError::Invalid(_))),
            "{settings}"
        );
        assert!(matches!(
            p.revoke(&g).await,
            Err(ProvisionError::Invalid(_))
        ));
    }
    // Nothing dropped, nothing made (other tests share the server: only additions by them).
    let after = users();
    assert!(
        before.lines().all(|l| after.contains(l)),
        "{before}\n{after}"
    );
    assert!(!after.contains('\''), "{after}");
    assert!(after.contains("root\tlocalhost"));
    for bad in ["postgres://x/y", "mysql://a@b/c?ssl-mode=bogus"] {
        assert!(
            MariaDbProvisioner::new(&MariaDbConfig::new(bad)).is_err(),
            "{bad}"
        );
    }
    let mut c = MariaDbConfig::new(db.url());
    c.privileges = vec!["SUPER; DROP".into()];
    assert!(MariaDbProvisioner::new(&c).is_err());
}

#[tokio::test]
async fn standing_privileges_are_found_and_drift_removed_but_never_from_protected_accounts() {
    let Some(db) = shared() else { return };
    db.root_sql(
        "CREATE USER 'eve'@'%' IDENTIFIED BY 'x'; GRANT SUPER ON *.* TO 'eve'@'%'; \
         CREATE USER 'mallory'@'10.%' IDENTIFIED BY 'x'; \
         GRANT SELECT ON *.* TO 'mallory'@'10.%' WITH GRANT OPTION; \
         CREATE USER 'carol'@'%' IDENTIFIED BY 'x'; GRANT dba TO 'carol'@'%';",
    );
    let mut config = MariaDbConfig::new(db.url());
    config.privileged_roles = vec!["dba".into()];
    let mut target = TargetConfig::new(pedm_provision::ProvisionerConfig::Mariadb(config));
    target.remove_drift = true;
    let p = build("appdb", &target).unwrap();
    let found = p.discover().await.unwrap();
    let has = |account: &str, privilege: &str| {
        found
            .iter()
            .any(|s| s.account == account && s.privilege == privilege)
    };
    assert!(has("eve@%", "global:SUPER"), "{found:?}");
    assert!(has("mallory@10.%", "global:GRANT OPTION"), "{found:?}");
    assert!(has("carol@%", "member:dba"), "{found:?}");
    assert!(has("pedm_admin@127.0.0.1", "global:SUPER"), "{found:?}");
    assert!(has("root@localhost", "global:SUPER"), "{found:?}");

    for (account, privilege) in [
        ("eve@%", "global:SUPER"),
        ("mallory@10.%", "global:GRANT OPTION"),
        ("carol@%", "member:dba"),
    ] {
        let sp = StandingPrivilege {
            account: account.into(),
            privilege: privilege.into(),
            source: String::new(),
        };
        let done = p.remove_standing(&sp).await.unwrap();
        assert!(done.contains("revoked"), "{done}");
        // Again: gone already, nothing to do.
        let again = p.remove_standing(&sp).await.unwrap();
        assert!(again.contains("nothing to remove"), "{again}");
    }
    let found = p.discover().await.unwrap();
    assert!(
        !found
            .iter()
            .any(|s| ["eve@%", "mallory@10.%", "carol@%"].contains(&s.account.as_str())),
        "{found:?}"
    );
    // mallory keeps SELECT: only the grant option went.
    assert!(
        db.root_sql("SHOW GRANTS FOR 'mallory'@'10.%'")
            .contains("GRANT SELECT ON *.*")
    );
    for (account, privilege) in [
        ("root@localhost", "global:SUPER"),
        ("pedm_admin@127.0.0.1", "global:SUPER"),
        ("eve@%", "global:SELECT"),
        ("eve@%", "attribute"),
    ] {
        let sp = StandingPrivilege {
            account: account.into(),
            privilege: privilege.into(),
            source: String::new(),
        };
        assert!(p.removable(&sp).is_err(), "{account} {privilege}");
        assert!(matches!(
            p.remove_standing(&sp).await,
            Err(ProvisionError::Invalid(_))
        ));
    }
    assert!(
        db.root_sql("SHOW GRANTS FOR 'pedm_admin'@'127.0.0.1'")
            .contains("ALL PRIVILEGES")
    );
}

#[tokio::test]
async fn revoke_while_the_server_is_down_is_retryable_and_succeeds_later() {
    let Some(db) = TestMariaDb::start_or_skip() else {
        return;
    };
    db.root_sql(
        "CREATE DATABASE app; CREATE TABLE app.t (x INT); CREATE ROLE readwrite; \
         GRANT SELECT ON app.* TO readwrite; \
         GRANT readwrite TO 'pedm_admin'@'127.0.0.1' WITH ADMIN OPTION;",
    );
    let p = MariaDbProvisioner::new(&MariaDbConfig::new(db.url())).unwrap();
    let g = spec("dora", json!({"mode": "temp_user", "db_role": "readwrite"}));
    let pw = p.grant(&g).await.unwrap().secret.unwrap();
    let user = p.account(&g).unwrap().replace("@%", "");
    db.stop();
    let e = p.revoke(&g).await.unwrap_err();
    assert!(e.is_retryable(), "{e:?}");
    db.start_again();
    // Nothing lost: the account is still there until the retry, then gone.
    connect(&db.url_as(&user, &pw)).await.unwrap();
    p.revoke(&g).await.unwrap();
    assert!(connect(&db.url_as(&user, &pw)).await.is_err());
    assert!(
        db.root_sql(&format!(
            "SELECT User FROM mysql.user WHERE User = '{user}'"
        ))
        .is_empty()
    );
}
