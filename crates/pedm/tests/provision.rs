//! Provisioning end to end through the API, against a throwaway PostgreSQL cluster: the
//! privilege is really there while the grant is active and really gone after it ends, a
//! revoke survives the target being down, hostile settings change nothing, discovery lists
//! the superuser, drift is reported (and removed where the target says so, also after the
//! target was down). Skipped (with the reason printed) when PostgreSQL binaries are missing.

mod common;

use common::*;
use pedm_api::{AuditQuery, CreateRole, CreateTarget, Decide, Grant, TargetKind};
use pedm_store::testing::TestPostgres;
use sqlx::{Connection, PgConnection};
use std::time::Duration;
use uuid::Uuid;

async fn admin_exec(url: &str, sql: &'static str) {
    let mut c = PgConnection::connect(url).await.unwrap();
    sqlx::raw_sql(sql).execute(&mut c).await.unwrap();
}

/// Connects as `user` and tries the INSERT only `readwrite` may do.
async fn insert_as(pg: &TestPostgres, db: &str, user: &str, password: &str) -> Result<(), String> {
    let url = format!("postgres://{user}:{password}@127.0.0.1:{}/{db}", pg.port());
    let mut c = PgConnection::connect(&url)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    sqlx::query("INSERT INTO ledger (note) VALUES ('pedm')")
        .execute(&mut c)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// `account` holds `role` in the cluster of `url` (directly or through another role).
async fn pg_member(url: &str, account: &str, role: &str) -> bool {
    let mut c = PgConnection::connect(url).await.unwrap();
    sqlx::query_scalar("SELECT pg_has_role($1, $2, 'MEMBER')")
        .bind(account)
        .bind(role)
        .fetch_one(&mut c)
        .await
        .unwrap()
}

/// Audit events with `action` whose data names `account`, oldest first.
async fn events_about(s: &Server, action: &str, account: &str) -> Vec<pedm_api::AuditEvent> {
    s.admin()
        .audit_events(&AuditQuery {
            action: Some(action.into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.data["account"] == account)
        .collect()
}

/// Waits until at least `n` events `action` name `account`.
async fn wait_events(
    s: &Server,
    action: &str,
    account: &str,
    n: usize,
    secs: u64,
) -> Vec<pedm_api::AuditEvent> {
    eventually(
        Duration::from_secs(secs),
        &format!("{n} {action} about {account}"),
        || async move {
            let ev = events_about(s, action, account).await;
            (ev.len() >= n).then_some(ev)
        },
    )
    .await
}

async fn grant_state(s: &Server, id: Uuid) -> Grant {
    s.admin().get_grant(id).await.unwrap()
}

async fn wait_provision(s: &Server, id: Uuid, state: &str, secs: u64) -> Grant {
    eventually(
        Duration::from_secs(secs),
        &format!("grant {id} provision state {state}"),
        || async move {
            let g = grant_state(s, id).await;
            (g.provision_state.as_str() == state).then_some(g)
        },
    )
    .await
}

async fn events(s: &Server, action: &str, grant: Uuid) -> Vec<pedm_api::AuditEvent> {
    s.admin()
        .audit_events(&AuditQuery {
            action: Some(action.into()),
            subject: Some(format!("grant:{grant}")),
            ..Default::default()
        })
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_grant_role_is_switched_on_and_off() {
    let Some(pg) = TestPostgres::start_or_skip() else {
        return;
    };
    let db_url = pg.fresh_database("provision_e2e").unwrap();
    let db = db_url.rsplit('/').next().unwrap().to_string();
    admin_exec(
        &db_url,
        "CREATE TABLE ledger (note text);
         CREATE ROLE readwrite NOLOGIN;
         GRANT INSERT ON ledger TO readwrite;
         CREATE ROLE alice LOGIN PASSWORD 'alice-pw';
         GRANT USAGE ON SCHEMA public TO alice;",
    )
    .await;
    assert!(
        insert_as(&pg, &db, "alice", "alice-pw")
            .await
            .unwrap_err()
            .contains("permission denied"),
        "alice must start without the privilege"
    );

    let config = format!(
        r#"
[provision]
reconcile_interval = "1s"

[provision.targets.db]
kind = "postgres"
url = "{db_url}"
timeout = "2s"
privileged_roles = ["readwrite"]

[provision.roles.db.readwrite]
mode = "grant_role"
pg_role = "readwrite"

[provision.roles.db.tmp]
mode = "temp_login"
pg_role = "readwrite"

[provision.roles.db.evil]
mode = "grant_role"
pg_role = "readwrite\"; DROP TABLE ledger; --"
"#
    );
    let mut s = Server::start_with(Options {
        config: Some(config),
        ..Default::default()
    });
    let a = s.admin();
    a.create_target(&CreateTarget {
        name: "db".into(),
        kind: TargetKind::Postgres,
        description: None,
        labels: Default::default(),
    })
    .await
    .unwrap();
    for (role, auto) in [("readwrite", false), ("evil", true), ("tmp", true)] {
        a.create_role(
            "db",
            &CreateRole {
                auto_approve: auto,
                ..CreateRole::new(role, "1h")
            },
        )
        .await
        .unwrap();
    }
    let alice_token = user_with_token(&s, "alice", false).await;
    let alice = s.client(&alice_token);

    // request → approve → provisioning → active, and the INSERT works as alice.
    let created = alice
        .create_request(&req("db", "readwrite", "4s", "load the ledger"))
        .await
        .unwrap();
    let decided = a
        .approve_request(created.request.id, &Decide::default())
        .await
        .unwrap();
    let g = decided.grant.expect("approved with a grant");
    assert!(
        matches!(g.provision_state.as_str(), "provisioning" | "active"),
        "{g:?}"
    );
    let g = wait_provision(&s, g.id, "active", 15).await;
    assert!(g.provision_detail.unwrap().contains("readwrite"));
    insert_as(&pg, &db, "alice", "alice-pw").await.unwrap();
    assert_eq!(events(&s, "provision.granted", g.id).await.len(), 1);
    // No secret for grant_role; the holder is told so.
    let o = s.cli(&alice_token, &["grant", "secret", &g.id.to_string()]);
    assert!(!o.status.success());

    // Expiry → revoked in the target.
    let g = wait_provision(&s, g.id, "revoked", 20).await;
    assert_eq!(g.state.as_str(), "expired");
    let e = insert_as(&pg, &db, "alice", "alice-pw").await.unwrap_err();
    assert!(e.contains("permission denied"), "{e}");
    assert_eq!(events(&s, "provision.revoked", g.id).await.len(), 1);
    let shown = String::from_utf8_lossy(
        &s.cli(&alice_token, &["grant", "show", &g.id.to_string()])
            .stdout,
    )
    .to_string();
    assert!(shown.contains("revoked"), "{shown}");

    // Target down during the revoke: revoke_pending and provision.failed, then retried until
    // the target is back.
    let created = alice
        .create_request(&req("db", "readwrite", "3s", "again"))
        .await
        .unwrap();
    let g = a
        .approve_request(created.request.id, &Decide::default())
        .await
        .unwrap()
        .grant
        .unwrap();
    wait_provision(&s, g.id, "active", 15).await;
    insert_as(&pg, &db, "alice", "alice-pw").await.unwrap();
    pg.stop().unwrap();
    let pending = wait_provision(&s, g.id, "revoke_pending", 20).await;
    assert_eq!(pending.state.as_str(), "expired");
    eventually(Duration::from_secs(20), "provision.failed", || {
        let s = &s;
        async move {
            let ev = events(s, "provision.failed", g.id).await;
            (!ev.is_empty()).then_some(ev)
        }
    })
    .await;
    assert_eq!(
        grant_state(&s, g.id).await.provision_state.as_str(),
        "revoke_pending"
    );
    // The pending revoke is a durable job: pedmd crashes meanwhile, the target comes back,
    // and the restarted server finishes the revoke.
    s.kill();
    pg.start_again().unwrap();
    s.start_again();
    wait_provision(&s, g.id, "revoked", 60).await;
    let e = insert_as(&pg, &db, "alice", "alice-pw").await.unwrap_err();
    assert!(e.contains("permission denied"), "{e}");

    // Hostile settings: refused at grant, grant failed, nothing changed in PostgreSQL.
    let created = alice
        .create_request(&req("db", "evil", "1h", "try it"))
        .await
        .unwrap();
    let g = created.grant.expect("auto-approved");
    let failed = wait_provision(&s, g.id, "failed", 15).await;
    assert!(failed.provision_detail.unwrap().contains("invalid"));
    let mut c = PgConnection::connect(&db_url).await.unwrap();
    let tables: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_tables WHERE tablename = 'ledger'")
            .fetch_one(&mut c)
            .await
            .unwrap();
    assert_eq!(tables, 1);
    let memberships: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.member \
         WHERE r.rolname = 'alice'",
    )
    .fetch_one(&mut c)
    .await
    .unwrap();
    assert_eq!(memberships, 0);

    // A temporary login: its password is handed to the holder once, through the CLI.
    let g = alice
        .create_request(&req("db", "tmp", "10m", "one-off fix"))
        .await
        .unwrap()
        .grant
        .expect("auto-approved");
    let active = wait_provision(&s, g.id, "active", 15).await;
    let detail = active.provision_detail.unwrap();
    let login = detail.split('"').nth(1).unwrap().to_string();
    assert!(login.starts_with("pedm_alice_"), "{detail}");
    let o = s.cli(&alice_token, &["grant", "secret", &g.id.to_string()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let password = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert!(password.len() >= 16);
    insert_as(&pg, &db, &login, &password).await.unwrap();
    let again = s.cli(&alice_token, &["grant", "secret", &g.id.to_string()]);
    assert!(!again.status.success(), "a secret is handed over once");
    assert!(
        !s.log().contains(&password),
        "the password must not be logged"
    );
    let audit = a.audit_events(&AuditQuery::default()).await.unwrap();
    assert!(!audit.iter().any(|e| e.data.to_string().contains(&password)));
    // Extended, the login's own end (VALID UNTIL) moves with the grant; the login stays.
    let valid_until = |login: String| {
        let db_url = db_url.clone();
        async move {
            let mut c = PgConnection::connect(&db_url).await.unwrap();
            sqlx::query_scalar::<_, i64>(
                "SELECT floor(extract(epoch FROM rolvaliduntil))::bigint FROM pg_roles \
                 WHERE rolname = $1",
            )
            .bind(login)
            .fetch_one(&mut c)
            .await
            .unwrap()
        }
    };
    assert_eq!(valid_until(login.clone()).await, g.expires_at.as_second());
    let extended = alice
        .extend_grant(
            g.id,
            &pedm_api::ExtendGrant {
                by: "30m".into(),
                justification: "the fix takes longer".into(),
                ticket: None,
            },
        )
        .await
        .unwrap()
        .grant
        .expect("extended at once");
    assert!(extended.expires_at > g.expires_at);
    let moved = eventually(Duration::from_secs(20), "provision.extended", || {
        let s = &s;
        async move {
            let ev = events(s, "provision.extended", g.id).await;
            (!ev.is_empty()).then_some(ev)
        }
    })
    .await;
    assert!(moved[0].data["detail"].as_str().unwrap().contains(&login));
    assert_eq!(
        valid_until(login.clone()).await,
        extended.expires_at.as_second()
    );
    insert_as(&pg, &db, &login, &password).await.unwrap();
    alice
        .release_grant(g.id, &pedm_api::Reason { reason: None })
        .await
        .unwrap();
    wait_provision(&s, g.id, "revoked", 20).await;
    let logins: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_roles WHERE rolname = $1")
        .bind(&login)
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert_eq!(logins, 0, "the temporary login is dropped");

    // Discovery lists the superuser; alice may not discover.
    let o = s.cli(&s.admin_token, &["--json", "discover", "db"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let found: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        found
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["account"] == "postgres" && p["privilege"] == "superuser"),
        "{found}"
    );
    assert_eq!(alice.discover("db").await.unwrap_err().status(), Some(403));

    // The standing report over every provisioned target, as CSV and JSON.
    let o = s.cli(&s.admin_token, &["report", "standing", "--format", "csv"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let csv = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(csv.starts_with("TARGET,ACCOUNT,PRIVILEGE,SOURCE"), "{csv}");
    assert!(
        csv.lines().any(|l| l.starts_with("db,postgres,superuser")),
        "{csv}"
    );
    let report = a.standing_report().await.unwrap();
    assert!(report.errors.is_empty(), "{report:?}");
    assert!(report.rows.iter().all(|r| r.target == "db"));
    assert_eq!(
        alice.standing_report().await.unwrap_err().status(),
        Some(403)
    );

    // Drift: standing access added by hand is reported; pedm's own grants never are.
    admin_exec(&db_url, "CREATE ROLE bob LOGIN; GRANT readwrite TO bob;").await;
    let drift = eventually(Duration::from_secs(20), "drift reported", || {
        let a = &a;
        async move {
            let ev = a
                .audit_events(&AuditQuery {
                    action: Some("provision.drift".into()),
                    ..Default::default()
                })
                .await
                .unwrap();
            ev.iter()
                .any(|e| e.data["account"] == "bob" && e.data["privilege"] == "member:readwrite")
                .then_some(ev)
        }
    })
    .await;
    assert!(
        !drift.iter().any(|e| e.data["account"]
            .as_str()
            .is_some_and(|a| a == "alice" || a.starts_with("pedm_alice_"))),
        "{drift:?}"
    );
    assert_eq!(
        drift.iter().filter(|e| e.data["account"] == "bob").count(),
        1,
        "reported once"
    );
    // remove_drift is off for this target: bob keeps the role; nothing is queued.
    assert!(
        drift
            .iter()
            .all(|e| e.data.get("removal").is_none() && e.data.get("job").is_none()),
        "{drift:?}"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(pg_member(&db_url, "bob", "readwrite").await);
    assert!(
        events_about(&s, "provision.drift_removed", "bob")
            .await
            .is_empty()
    );
}

/// `remove_drift = true`: a role granted by hand is reported and revoked (the INSERT it
/// allowed is refused afterwards), also when the target is unavailable when the removal first
/// runs and pedmd crashes meanwhile; `keep`-listed accounts and the login pedm connects as
/// keep theirs; memberships pedm granted are never touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_drift_is_removed_when_the_target_says_so() {
    let Some(pg) = TestPostgres::start_or_skip() else {
        return;
    };
    let db_url = pg.fresh_database("drift_removal_e2e").unwrap();
    let db = db_url.rsplit('/').next().unwrap().to_string();
    admin_exec(
        &db_url,
        "CREATE TABLE ledger (note text);
         CREATE ROLE readwrite NOLOGIN;
         GRANT INSERT ON ledger TO readwrite;
         CREATE ROLE alice_db LOGIN PASSWORD 'alice-pw';
         CREATE ROLE someone LOGIN PASSWORD 'someone-pw';
         CREATE ROLE breakglass LOGIN PASSWORD 'bg-pw';
         GRANT USAGE ON SCHEMA public TO alice_db, someone, breakglass;
         GRANT readwrite TO someone;
         GRANT readwrite TO breakglass;
         GRANT readwrite TO postgres;",
    )
    .await;
    insert_as(&pg, &db, "someone", "someone-pw").await.unwrap();

    // The target is unavailable for the first removal: a lock on the role catalog makes the
    // REVOKE time out (discovery still reads it).
    let mut locker = PgConnection::connect(&db_url).await.unwrap();
    sqlx::raw_sql("BEGIN; LOCK TABLE pg_auth_members IN SHARE MODE;")
        .execute(&mut locker)
        .await
        .unwrap();

    let config = format!(
        r#"
[provision]
reconcile_interval = "1s"

[provision.targets.db]
kind = "postgres"
url = "{db_url}"
timeout = "2s"
privileged_roles = ["readwrite"]
remove_drift = true
keep = ["breakglass"]

[provision.roles.db.readwrite]
mode = "grant_role"
pg_role = "readwrite"
login = "{{user}}_db"
"#
    );
    let mut s = Server::start_with(Options {
        config: Some(config),
        ..Default::default()
    });
    let drift = wait_events(&s, "provision.drift", "someone", 1, 20).await;
    assert_eq!(drift[0].data["privilege"], "member:readwrite");
    assert_eq!(drift[0].data["removal"], "queued", "{:?}", drift[0].data);
    let failed = wait_events(&s, "provision.failed", "someone", 1, 20).await;
    assert_eq!(failed[0].subject.as_deref(), Some("target:db"));
    assert_eq!(failed[0].data["permanent"], false, "{:?}", failed[0].data);
    assert_eq!(failed[0].data["action"], "remove_drift");
    assert!(pg_member(&db_url, "someone", "readwrite").await);

    // The cluster goes down, pedmd crashes with the removal pending; both come back and the
    // durable job finishes it.
    drop(locker);
    pg.stop().unwrap();
    s.kill();
    pg.start_again().unwrap();
    s.start_again();
    let removed = wait_events(&s, "provision.drift_removed", "someone", 1, 60).await;
    assert_eq!(removed.len(), 1);
    assert_eq!(removed[0].subject.as_deref(), Some("target:db"));
    assert!(
        removed[0].data["detail"]
            .as_str()
            .unwrap()
            .contains("revoked"),
        "{:?}",
        removed[0].data
    );
    assert_eq!(removed[0].data["job"], drift[0].data["job"]);
    assert!(!pg_member(&db_url, "someone", "readwrite").await);
    let e = insert_as(&pg, &db, "someone", "someone-pw")
        .await
        .unwrap_err();
    assert!(e.contains("permission denied"), "{e}");

    // Kept on purpose, and the login pedm connects as (the bootstrap superuser): reported
    // with the reason, never removed.
    let kept = wait_events(&s, "provision.drift", "breakglass", 1, 20).await;
    assert_eq!(kept[0].data["removal"], "kept");
    assert!(
        kept[0].data["reason"].as_str().unwrap().contains("keep"),
        "{:?}",
        kept[0].data
    );
    let own = wait_events(&s, "provision.drift", "postgres", 1, 20).await;
    assert!(
        own.iter().any(|e| e.data["privilege"] == "member:readwrite"
            && e.data["removal"] == "kept"
            && e.data["reason"].as_str().unwrap().contains("connects as")),
        "{own:?}"
    );
    assert!(pg_member(&db_url, "breakglass", "readwrite").await);
    insert_as(&pg, &db, "breakglass", "bg-pw").await.unwrap();
    assert!(pg_member(&db_url, "postgres", "readwrite").await);

    // A pedm grant's membership is not drift (here given to the login `alice_db` by the
    // role's `login` template): alice keeps it while drift is removed around her (someone
    // gets the role by hand again and loses it again).
    let a = s.admin();
    a.create_target(&CreateTarget {
        name: "db".into(),
        kind: TargetKind::Postgres,
        description: None,
        labels: Default::default(),
    })
    .await
    .unwrap();
    a.create_role(
        "db",
        &CreateRole {
            auto_approve: true,
            ..CreateRole::new("readwrite", "1h")
        },
    )
    .await
    .unwrap();
    let alice = s.client(&user_with_token(&s, "alice", false).await);
    let g = alice
        .create_request(&req("db", "readwrite", "1h", "month-end close"))
        .await
        .unwrap()
        .grant
        .expect("auto-approved");
    wait_provision(&s, g.id, "active", 15).await;
    admin_exec(&db_url, "GRANT readwrite TO someone;").await;
    wait_events(&s, "provision.drift_removed", "someone", 2, 30).await;
    assert!(!pg_member(&db_url, "someone", "readwrite").await);
    insert_as(&pg, &db, "alice_db", "alice-pw").await.unwrap();
    assert!(
        events_about(&s, "provision.drift", "alice_db")
            .await
            .is_empty()
    );
    assert!(
        events_about(&s, "provision.drift_removed", "alice_db")
            .await
            .is_empty()
    );
    assert_eq!(
        grant_state(&s, g.id).await.provision_state.as_str(),
        "active"
    );
}

/// `id -Gn` shows the group while the grant is active and not after: a real Linux user and
/// group, provisioned by the server for its own host. Needs root.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linux_group_membership_is_switched_on_and_off() {
    if !nix::unistd::geteuid().is_root() {
        println!("SKIP: creating Linux users and groups needs root");
        return;
    }
    let tag = &Uuid::now_v7().simple().to_string()[20..];
    let (user, group) = (format!("pu{tag}"), format!("pg{tag}"));
    let run = |args: &[&str]| {
        let o = std::process::Command::new(args[0])
            .args(&args[1..])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    run(&["groupadd", &group]);
    run(&[
        "useradd",
        "--no-create-home",
        "--shell",
        "/usr/sbin/nologin",
        &user,
    ]);
    struct Cleanup(String, String);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::process::Command::new("userdel").arg(&self.0).status();
            let _ = std::process::Command::new("groupdel").arg(&self.1).status();
        }
    }
    let _cleanup = Cleanup(user.clone(), group.clone());
    let groups_of = |u: &str| {
        let o = std::process::Command::new("id")
            .args(["-Gn", u])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout)
            .split_whitespace()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert!(!groups_of(&user).contains(&group));

    let s = Server::start_with(Options {
        config: Some(format!(
            "[provision.targets.web1]\nkind = \"linux_group\"\n\n[provision.roles.web1.docker]\ngroup = \"{group}\"\n"
        )),
        ..Default::default()
    });
    standard_targets(&s).await;
    let token = user_with_token(&s, &user, false).await;
    let g = s
        .client(&token)
        .create_request(&req("web1", "docker", "3s", "run the build"))
        .await
        .unwrap()
        .grant
        .expect("auto-approved");
    wait_provision(&s, g.id, "active", 15).await;
    assert!(groups_of(&user).contains(&group), "{:?}", groups_of(&user));
    let g = wait_provision(&s, g.id, "revoked", 20).await;
    assert_eq!(g.state.as_str(), "expired");
    assert!(!groups_of(&user).contains(&group), "{:?}", groups_of(&user));
    assert_eq!(events(&s, "provision.revoked", g.id).await.len(), 1);
}

/// `remove_drift = true` on a Linux host: a membership added by hand (`gpasswd -a`) is
/// removed (`id -Gn`), a `keep`-listed one stays. Needs root.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linux_group_drift_is_removed_when_the_target_says_so() {
    if !nix::unistd::geteuid().is_root() {
        println!("SKIP: creating Linux users and groups needs root");
        return;
    }
    let tag = &Uuid::now_v7().simple().to_string()[20..];
    let (drifter, keeper, group) = (format!("pd{tag}"), format!("pk{tag}"), format!("pg{tag}"));
    let run = |args: &[&str]| {
        let o = std::process::Command::new(args[0])
            .args(&args[1..])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    struct Cleanup(Vec<String>, String);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            for u in &self.0 {
                let _ = std::process::Command::new("userdel").arg(u).status();
            }
            let _ = std::process::Command::new("groupdel").arg(&self.1).status();
        }
    }
    run(&["groupadd", &group]);
    let _cleanup = Cleanup(vec![drifter.clone(), keeper.clone()], group.clone());
    for u in [&drifter, &keeper] {
        run(&[
            "useradd",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            u,
        ]);
        run(&["gpasswd", "-a", u, &group]);
    }
    let groups_of = |u: &str| {
        let o = std::process::Command::new("id")
            .args(["-Gn", u])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout)
            .split_whitespace()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert!(groups_of(&drifter).contains(&group));

    let s = Server::start_with(Options {
        config: Some(format!(
            "[provision]\nreconcile_interval = \"1s\"\n\n\
             [provision.targets.web1]\nkind = \"linux_group\"\n\
             privileged_groups = [\"{group}\"]\nremove_drift = true\nkeep = [\"{keeper}\"]\n"
        )),
        ..Default::default()
    });
    let removed = wait_events(&s, "provision.drift_removed", &drifter, 1, 30).await;
    assert_eq!(removed[0].data["privilege"], format!("group:{group}"));
    assert!(
        !groups_of(&drifter).contains(&group),
        "{:?}",
        groups_of(&drifter)
    );
    let kept = wait_events(&s, "provision.drift", &keeper, 1, 20).await;
    assert_eq!(kept[0].data["removal"], "kept");
    assert!(
        groups_of(&keeper).contains(&group),
        "{:?}",
        groups_of(&keeper)
    );
    assert!(
        events_about(&s, "provision.drift_removed", &keeper)
            .await
            .is_empty()
    );
}

/// An access review over standing privileges: discovery's finding becomes an item (no grant
/// explains it), and revoking it removes the privilege from the target.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_access_review_revokes_a_standing_privilege_in_the_target() {
    let Some(pg) = TestPostgres::start_or_skip() else {
        return;
    };
    let db_url = pg.fresh_database("review_standing").unwrap();
    admin_exec(
        &db_url,
        "CREATE ROLE readwrite NOLOGIN;
         CREATE ROLE someone LOGIN PASSWORD 'someone-pw';
         GRANT readwrite TO someone;",
    )
    .await;
    let config = format!(
        r#"
[provision]
reconcile_interval = "1h"

[provision.targets.db]
kind = "postgres"
url = "{db_url}"
timeout = "2s"
privileged_roles = ["readwrite"]
remove_drift = true

[provision.roles.db.readwrite]
mode = "grant_role"
pg_role = "readwrite"
login = "{{user}}_db"
"#
    );
    let s = Server::start_with(Options {
        config: Some(config),
        ..Default::default()
    });
    // The start-up pass has run (it found someone); the next is an hour away.
    wait_events(&s, "provision.drift", "someone", 1, 20).await;
    admin_exec(
        &db_url,
        "CREATE ROLE mallory LOGIN PASSWORD 'm-pw'; GRANT readwrite TO mallory;",
    )
    .await;
    let a = s.admin();
    a.create_target(&CreateTarget {
        name: "db".into(),
        kind: TargetKind::Postgres,
        description: None,
        labels: [("owner".to_string(), "dba".to_string())].into(),
    })
    .await
    .unwrap();
    a.create_group(&pedm_api::CreateGroup {
        name: "dba".into(),
        description: None,
    })
    .await
    .unwrap();
    let v = a
        .start_review(&pedm_api::review::StartReview {
            name: "standing-q".into(),
            kinds: vec![pedm_api::review::ItemKind::Standing],
            targets: vec!["db".into()],
            due: "7d".into(),
            default: None,
            reviewers: "dba".into(),
            escalate_to: None,
            unused_days: None,
        })
        .await
        .expect("started");
    let item = v
        .items
        .iter()
        .find(|i| i.user == "mallory")
        .unwrap_or_else(|| panic!("{:#?}", v.items));
    assert_eq!(item.role.as_deref(), Some("member:readwrite"));
    assert_eq!(
        item.reviewer.to_string(),
        "group dba",
        "the target's owner label"
    );
    assert!(
        item.detail.contains("no grant explains it"),
        "{}",
        item.detail
    );
    assert!(pg_member(&db_url, "mallory", "readwrite").await);

    let done = a
        .decide_review_item(
            item.id,
            &pedm_api::review::DecideItem {
                decision: pedm_api::review::ReviewDecision::Revoke,
                comment: "nobody knows who mallory is".into(),
            },
        )
        .await
        .expect("revoked");
    assert!(
        done.outcome
            .as_deref()
            .unwrap_or("")
            .starts_with("removal queued"),
        "{done:?}"
    );
    wait_events(&s, "provision.drift_removed", "mallory", 1, 20).await;
    assert!(!pg_member(&db_url, "mallory", "readwrite").await);
}
