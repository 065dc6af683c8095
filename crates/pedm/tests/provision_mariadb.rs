//! MariaDB provisioning end to end through pedmd: a temporary account made for the grant, its
//! password handed to the holder once (`pedm grant secret`), the account's live connection
//! killed and the account dropped when the grant is released, and a hand-granted SUPER found
//! by discovery and removed as drift. Against a real throwaway MariaDB server; skipped (with
//! the reason printed) when MariaDB is not installed.

mod common;
#[path = "../../provision/tests/support/mariadb.rs"]
mod mariadb;

use common::*;
use mariadb::TestMariaDb;
use pedm_api::{AuditQuery, CreateRole, CreateTarget, TargetKind};
use sqlx::{Connection, MySqlConnection};
use std::time::Duration;

async fn read_as(db: &TestMariaDb, user: &str, pw: &str) -> Result<i32, String> {
    let mut c = MySqlConnection::connect(&db.url_as(user, pw))
        .await
        .map_err(|e| e.to_string())?;
    sqlx::query_scalar("SELECT x FROM app.t")
        .fetch_one(&mut c)
        .await
        .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mariadb_temporary_accounts_and_drift_through_pedmd() {
    let Some(db) = TestMariaDb::start_or_skip() else {
        return;
    };
    db.root_sql(
        "CREATE DATABASE app; CREATE TABLE app.t (x INT); INSERT INTO app.t VALUES (7); \
         CREATE ROLE readwrite; GRANT SELECT ON app.* TO readwrite; \
         GRANT readwrite TO 'pedm_admin'@'127.0.0.1' WITH ADMIN OPTION; \
         CREATE USER 'eve'@'%' IDENTIFIED BY 'x'; GRANT SUPER ON *.* TO 'eve'@'%'; \
         CREATE USER 'alice'@'%' IDENTIFIED BY 'alice-pw';",
    );
    let config = format!(
        r#"
[provision]
reconcile_interval = "1s"

[provision.targets.appdb]
kind = "mariadb"
url = "{url}"
timeout = "2s"
remove_drift = true

[provision.roles.appdb.tmp]
mode = "temp_user"
db_role = "readwrite"

[provision.roles.appdb.rw]
mode = "grant_role"
db_role = "readwrite"
"#,
        url = db.url()
    );
    let s = Server::start_with(Options {
        config: Some(config),
        ..Default::default()
    });
    let a = s.admin();
    a.create_target(&CreateTarget {
        name: "appdb".into(),
        kind: TargetKind::Mariadb,
        description: None,
        labels: Default::default(),
    })
    .await
    .unwrap();
    for name in ["tmp", "rw"] {
        let role = CreateRole {
            auto_approve: true,
            ..CreateRole::new(name, "1h")
        };
        a.create_role("appdb", &role).await.unwrap();
    }
    let token = user_with_token(&s, "alice", false).await;
    let alice = s.client(&token);
    let g = alice
        .create_request(&req("appdb", "tmp", "30m", "fix the report"))
        .await
        .unwrap()
        .grant
        .unwrap();
    let g = wait_provision(&s, g.id, "active").await;
    let detail = g.provision_detail.unwrap_or_default();
    assert!(detail.contains("created user pedm_alice_"), "{detail}");
    let user = detail
        .split_whitespace()
        .find(|w| w.starts_with("pedm_alice_"))
        .unwrap()
        .split('@')
        .next()
        .unwrap()
        .to_string();
    // The password, once, to its holder.
    let o = s.cli(&token, &["grant", "secret", &g.id.to_string()]);
    let pw = stdout(&o).trim().to_string();
    assert!(o.status.success() && pw.len() == 32, "{}", stderr(&o));
    assert!(
        !s.cli(&token, &["grant", "secret", &g.id.to_string()])
            .status
            .success()
    );
    assert_eq!(read_as(&db, &user, &pw).await.unwrap(), 7);
    let mut live = MySqlConnection::connect(&db.url_as(&user, &pw))
        .await
        .unwrap();

    // Released early: the live connection is killed, the account is gone.
    alice
        .release_grant(g.id, &pedm_api::Reason { reason: None })
        .await
        .unwrap();
    wait_provision(&s, g.id, "revoked").await;
    let still: Result<i32, _> = sqlx::query_scalar("SELECT x FROM app.t")
        .fetch_one(&mut live)
        .await;
    assert!(still.is_err(), "the holder's connection outlived the grant");
    assert!(read_as(&db, &user, &pw).await.is_err());

    // eve's hand-granted SUPER is drift: found, removed, recorded.
    let removed = eventually(Duration::from_secs(30), "eve's SUPER removed", || {
        let a = a.clone();
        async move {
            let ev = a
                .audit_events(&AuditQuery {
                    action: Some("provision.drift_removed".into()),
                    ..Default::default()
                })
                .await
                .unwrap();
            ev.into_iter()
                .find(|e| e.data.to_string().contains("eve@%"))
        }
    })
    .await;
    assert!(
        removed.data.to_string().contains("global:SUPER"),
        "{:?}",
        removed.data
    );
    assert!(!db.root_sql("SHOW GRANTS FOR 'eve'@'%'").contains("SUPER"));
    // The admin account and root stay as they are.
    assert!(
        db.root_sql("SHOW GRANTS FOR 'pedm_admin'@'127.0.0.1'")
            .contains("ALL PRIVILEGES")
    );
    assert!(
        db.root_sql("SHOW GRANTS FOR 'root'@'localhost'")
            .contains("ALL PRIVILEGES")
    );

    // A role granted by pedm and taken away by hand is put back by the next pass.
    let g = alice
        .create_request(&req("appdb", "rw", "30m", "read the report"))
        .await
        .unwrap()
        .grant
        .unwrap();
    wait_provision(&s, g.id, "active").await;
    assert_eq!(read_as(&db, "alice", "alice-pw").await.unwrap(), 7);
    db.root_sql("REVOKE readwrite FROM 'alice'@'%'");
    assert!(read_as(&db, "alice", "alice-pw").await.is_err());
    wait_event(&s, "provision.reapplied", &format!("grant:{}", g.id)).await;
    assert_eq!(read_as(&db, "alice", "alice-pw").await.unwrap(), 7);

    let o = s.cli(&s.admin_token, &["discover", "appdb"]);
    let found = stdout(&o);
    assert!(
        found.contains("pedm_admin@127.0.0.1") && !found.contains("eve@%"),
        "{found}"
    );
}
