//! External (vendor) accounts through the real binaries: created with a sponsor and an expiry
//! (`pedm user add --external`), seen by policy as `principal.external`, refused everything
//! after the expiry, their grants ended, the sponsor told once beforehand, extended by the
//! sponsor, and listed with what they did in `pedm report external`.

mod common;

use common::*;
use pedm_api::external::{CreateExternalUser, ExtendExternalUser};
use pedm_api::{ApiError, AuditQuery, CreateToken, GrantQuery, GrantState};
use std::time::Duration;

/// Vendors get only the `docker` role here (the README's example also limits the hours; the
/// test runs at any hour).
const VENDORS: &str = r#"
@id("vendors-docker-only")
forbid (principal, action == Pedm::Action::"request", resource)
when { principal.external && resource.name != "docker" };

@id("vendors-of-alice-only")
forbid (principal, action == Pedm::Action::"request", resource)
when { principal.external && !(principal has sponsor && principal.sponsor == "alice") };
"#;

fn server(hook: &str, notice: &str) -> Server {
    Server::start_with(Options {
        config: Some(format!(
            "[limits]\nexternal_max = \"1h\"\nexternal_notice = \"{notice}\"\n\n\
             [[notify.webhook]]\nname = \"sponsors\"\nurl = \"{hook}\"\nsecret = \"k\"\n\
             format = \"generic\"\nkinds = [\"user.\"]\n"
        )),
        ..Default::default()
    })
}

async fn token_for(s: &Server, user: &str) -> String {
    s.admin()
        .create_token(&CreateToken {
            user: Some(user.into()),
            ..Default::default()
        })
        .await
        .expect("token")
        .token
}

async fn events(s: &Server, action: &str, subject: &str) -> Vec<pedm_api::AuditEvent> {
    s.admin()
        .audit_events(&AuditQuery {
            action: Some(action.into()),
            subject: Some(subject.into()),
            ..Default::default()
        })
        .await
        .expect("audit")
}

fn status(e: &ApiError) -> u16 {
    match e {
        ApiError::Server { status, .. } => *status,
        other => panic!("expected an HTTP error, got {other}"),
    }
}

#[tokio::test]
async fn vendor_is_allowed_by_policy_until_expiry_then_refused_and_sponsor_told_once() {
    let (hook, mut rx) = receiver().await;
    let s = server(&hook, "4s");
    standard_targets(&s).await;
    let alice = user_with_token(&s, "alice", false).await;
    add_policy(&s.admin(), "vendors.cedar", VENDORS).await;

    // Created with the CLI, as the README shows.
    let out = s.cli(
        &s.admin_token,
        &[
            "user",
            "add",
            "vendor1",
            "--external",
            "--expires",
            "7s",
            "--sponsor",
            "alice",
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let created: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(created["external"]["sponsor"], "alice");
    assert_eq!(created["user"]["admin"], false);
    let expires_at: jiff::Timestamp = created["external"]["expires_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();

    let vendor = s.client(&token_for(&s, "vendor1").await);
    // Policy sees `principal.external`: docker is allowed (auto-approved), root is refused by
    // the vendors' forbid.
    let g = vendor
        .create_request(&req("web1", "docker", "30m", "vendor maintenance window"))
        .await
        .expect("docker for the vendor");
    let grant = g.grant.expect("auto-approved grant");
    assert_eq!(grant.state, GrantState::Active);
    assert!(
        grant.expires_at <= expires_at,
        "a vendor's grant never outlives the account: {} > {expires_at}",
        grant.expires_at
    );
    let root = vendor
        .create_request(&req("web1", "root", "30m", "vendor wants root"))
        .await;
    match root {
        Ok(r) => assert_eq!(
            r.request.state,
            pedm_api::RequestState::Denied,
            "{:?}",
            r.request
        ),
        Err(e) => assert!(e.to_string().contains("vendors-docker-only"), "{e}"),
    }
    // A plain user is not external: the forbid does not touch alice.
    let a = s
        .client(&alice)
        .create_request(&req("web1", "root", "30m", "alice needs root"))
        .await
        .expect("alice's request");
    assert_eq!(a.request.state, pedm_api::RequestState::Pending);

    // The sponsor is told before the expiry, through the webhook notifier.
    let n = tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("a notification within 20 s")
        .expect("receiver open");
    assert_eq!(n["kind"], "user.external_expiring", "{n}");
    assert_eq!(n["data"]["sponsor"], "alice", "{n}");
    assert_eq!(n["data"]["user"], "vendor1", "{n}");
    assert!(
        jiff::Timestamp::now() < expires_at,
        "the notice came before the expiry"
    );

    // At the expiry the scheduler records it once, and the grant has ended.
    let expired = eventually(Duration::from_secs(30), "user.expired", || async {
        let e = events(&s, "user.expired", "user:vendor1").await;
        (!e.is_empty()).then_some(e)
    })
    .await;
    assert_eq!(expired[0].actor, "system");
    assert_eq!(expired[0].data["sponsor"], "alice");
    let ended = s.admin().get_grant(grant.id).await.unwrap();
    assert_ne!(ended.state, GrantState::Active, "{ended:?}");

    // Refused everything, with an error naming the expiry.
    let e = vendor.whoami().await.expect_err("expired vendor refused");
    assert_eq!(status(&e), 401);
    assert!(e.to_string().contains("expired"), "{e}");
    let out = s.cli(
        &token_for(&s, "vendor1").await,
        &[
            "request",
            "create",
            "--target",
            "web1",
            "--role",
            "docker",
            "--duration",
            "5m",
            "--reason",
            "again",
        ],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("external account vendor1 expired"),
        "{}",
        stderr(&out)
    );
    let failed = s
        .admin()
        .audit_events(&AuditQuery {
            action: Some("auth.failed".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        failed
            .iter()
            .any(|e| e.data["reason"] == "expired external account"),
        "{failed:?}"
    );

    // Exactly once: the expiry notice arrives next, and no second notice or expiry follows
    // another scheduler pass (creating a user wakes the scheduler).
    let n = tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("the expiry notification")
        .expect("receiver open");
    assert_eq!(n["kind"], "user.external_expired", "{n}");
    user_with_token(&s, "carol", false).await;
    let again = eventually(Duration::from_secs(10), "a later audit event", || async {
        let e = events(&s, "user.created", "user:carol").await;
        (!e.is_empty()).then_some(())
    });
    again.await;
    assert_eq!(events(&s, "user.expired", "user:vendor1").await.len(), 1);
    assert_eq!(
        events(&s, "user.expiry_notice", "user:vendor1").await.len(),
        1
    );
    assert!(rx.try_recv().is_err(), "no second notification");

    // The sponsor extends the account: it works again, recorded with who did it.
    let out = s.cli(&alice, &["user", "extend", "vendor1", "--expires", "30m"]);
    assert!(out.status.success(), "{}", stderr(&out));
    vendor.whoami().await.expect("extended vendor signs in");
    let ext = events(&s, "user.extended", "user:vendor1").await;
    assert_eq!(ext.len(), 1);
    assert_eq!(ext[0].actor, "alice");
    assert_eq!(ext[0].data["was_expired"], true);

    // The report lists the external account and what it did.
    let out = s.cli(&s.admin_token, &["report", "external", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let rows: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let row = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["account"]["user"] == "vendor1")
        .expect("vendor1 in the report");
    assert_eq!(row["account"]["sponsor"], "alice");
    assert_eq!(row["live"], true);
    let elevations = row["elevations"].as_array().unwrap();
    assert_eq!(elevations.len(), 1, "{row}");
    assert_eq!(elevations[0]["role"], "docker");
    assert!(
        row["actions"]["request.created"].as_u64().unwrap_or(0) >= 1,
        "{row}"
    );
    let table = s.cli(&s.admin_token, &["report", "external"]);
    assert!(stdout(&table).contains("vendor1"), "{}", stdout(&table));
}

#[tokio::test]
async fn expiry_revokes_live_grants_and_only_sponsor_or_admin_extends() {
    let (hook, _rx) = receiver().await;
    let s = server(&hook, "1s");
    standard_targets(&s).await;
    let alice = user_with_token(&s, "alice", false).await;
    let bob = user_with_token(&s, "bob", false).await;
    let admin = s.admin();
    admin
        .create_external_user(&CreateExternalUser {
            name: "vendor2".into(),
            display_name: Some("Acme support".into()),
            sponsor: "alice".into(),
            expires: "50m".into(),
        })
        .await
        .expect("vendor2");
    let vendor = s.client(&token_for(&s, "vendor2").await);
    let grant = vendor
        .create_request(&req("web1", "docker", "40m", "vendor work"))
        .await
        .unwrap()
        .grant
        .expect("grant");

    // Someone who is neither the sponsor nor an admin may not extend (a denied event).
    let e = s
        .client(&bob)
        .extend_external_user(
            "vendor2",
            &ExtendExternalUser {
                expires: "40m".into(),
            },
        )
        .await
        .expect_err("bob is not the sponsor");
    assert_eq!(status(&e), 403);
    let denied = events(&s, "user.extend", "user:vendor2").await;
    assert_eq!(denied.len(), 1);
    assert_eq!(denied[0].actor, "bob");
    // Past the configured maximum: refused, naming the limit.
    let e = s
        .client(&alice)
        .extend_external_user(
            "vendor2",
            &ExtendExternalUser {
                expires: "2h".into(),
            },
        )
        .await
        .expect_err("over the maximum");
    assert_eq!(status(&e), 422);
    assert!(e.to_string().contains("external_max"), "{e}");

    // The sponsor cuts the account short: at the new expiry the live grant is revoked by the
    // scheduler, once, and the vendor is refused.
    let x = s
        .client(&alice)
        .extend_external_user(
            "vendor2",
            &ExtendExternalUser {
                expires: "3s".into(),
            },
        )
        .await
        .expect("sponsor moves the expiry");
    assert!(x.expires_at < grant.expires_at);
    let expired = eventually(Duration::from_secs(30), "user.expired", || async {
        let e = events(&s, "user.expired", "user:vendor2").await;
        (!e.is_empty()).then_some(e)
    })
    .await;
    assert_eq!(expired[0].data["grants_ended"][0], grant.id.to_string());
    let g = admin.get_grant(grant.id).await.unwrap();
    assert_eq!(g.state, GrantState::Revoked);
    assert_eq!(g.ended_by.as_deref(), Some("system"));
    let revoked = events(&s, "grant.revoked", &format!("grant:{}", grant.id)).await;
    assert_eq!(revoked.len(), 1, "{revoked:?}");
    assert!(
        revoked[0].data["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("external account vendor2 expired")
    );
    let live = admin
        .list_grants(&GrantQuery {
            user: Some("vendor2".into()),
            state: Some("active".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(live.is_empty(), "{live:?}");
    assert_eq!(status(&vendor.whoami().await.unwrap_err()), 401);
}

#[tokio::test]
async fn bad_external_accounts_are_refused_and_change_nothing() {
    let (hook, _rx) = receiver().await;
    let s = server(&hook, "24h");
    user_with_token(&s, "alice", false).await;
    let admin = s.admin();
    admin
        .create_external_user(&CreateExternalUser {
            name: "vendor3".into(),
            display_name: None,
            sponsor: "alice".into(),
            expires: "1h".into(),
        })
        .await
        .expect("vendor3");
    let bad = |name: &str, sponsor: &str, expires: &str| CreateExternalUser {
        name: name.into(),
        display_name: None,
        sponsor: sponsor.into(),
        expires: expires.into(),
    };
    // Malformed input is 400; well-formed input the server cannot act on is 422.
    for (body, needle, code) in [
        (bad("v4", "nobody", "1h"), "sponsor", 422),
        (
            bad("v4", "vendor3", "1h"),
            "external and cannot sponsor",
            422,
        ),
        (bad("v4", "alice", "2h"), "external_max", 422),
        (bad("system", "alice", "1h"), "reserved", 422),
        (bad("v4", "alice", "0s"), "expires", 400),
        (bad("v4", "alice", "soon"), "expires", 400),
        (bad("v4", "v4", "1h"), "sponsor", 422),
    ] {
        let e = admin
            .create_external_user(&body)
            .await
            .expect_err("refused");
        assert_eq!(status(&e), code, "{e}");
        assert!(e.to_string().contains(needle), "{needle}: {e}");
    }
    let users = admin.list_users().await.unwrap();
    assert!(users.iter().all(|u| u.name != "v4"), "{users:?}");
    // The CLI refuses --external without a sponsor or an expiry before calling the server.
    let out = s.cli(
        &s.admin_token,
        &["user", "add", "v5", "--external", "--expires", "1h"],
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--sponsor"), "{}", stderr(&out));
    // A non-admin cannot create one.
    let alice = s.client(&token_for(&s, "alice").await);
    let e = alice
        .create_external_user(&bad("v6", "alice", "1h"))
        .await
        .expect_err("not an admin");
    assert_eq!(status(&e), 403);
    // Extending a plain user is refused.
    let e = admin
        .extend_external_user(
            "alice",
            &ExtendExternalUser {
                expires: "1h".into(),
            },
        )
        .await
        .expect_err("alice is not external");
    assert_eq!(status(&e), 422);
    // An external account never becomes an admin.
    let out = s.cli(&s.admin_token, &["user", "set-admin", "vendor3", "true"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("external account and cannot be an administrator"),
        "{}",
        stderr(&out)
    );
    assert!(
        admin
            .list_users()
            .await
            .unwrap()
            .iter()
            .any(|u| u.name == "vendor3" && !u.admin)
    );
    let listed = admin.list_external_users().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].user, "vendor3");
}

/// The same on PostgreSQL with two instances sharing the database: each notice and each
/// expiry is recorded once, the grant revoked once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_postgres_two_instances_expire_an_external_account_once() {
    let Some(pg) = pedm_store::testing::TestPostgres::start_or_skip() else {
        return;
    };
    let db = pg.fresh_database("external").expect("database");
    let config = "[limits]\nexternal_max = \"1h\"\nexternal_notice = \"2s\"\n".to_string();
    let a = Server::start_with(Options {
        database_url: Some(db.clone()),
        config: Some(config.clone()),
        ..Default::default()
    });
    let b = Server::start_with(Options {
        database_url: Some(db),
        admin_token: Some(a.admin_token.clone()),
        config: Some(config),
        ..Default::default()
    });
    standard_targets(&a).await;
    let alice = user_with_token(&a, "alice", false).await;
    a.admin()
        .create_external_user(&CreateExternalUser {
            name: "vendor9".into(),
            display_name: None,
            sponsor: "alice".into(),
            expires: "50m".into(),
        })
        .await
        .expect("vendor9");
    let vendor = b.client(&token_for(&a, "vendor9").await);
    let grant = vendor
        .create_request(&req("web1", "docker", "40m", "vendor work"))
        .await
        .unwrap()
        .grant
        .expect("grant");
    // Extended (shortened) through B: both instances now hold the account's deadlines.
    b.client(&alice)
        .extend_external_user(
            "vendor9",
            &ExtendExternalUser {
                expires: "4s".into(),
            },
        )
        .await
        .expect("sponsor moves the expiry");
    eventually(Duration::from_secs(60), "user.expired", || async {
        let e = events(&a, "user.expired", "user:vendor9").await;
        (!e.is_empty()).then_some(())
    })
    .await;
    // Wake both schedulers once more (a new user may bring a deadline), then count.
    user_with_token(&a, "carol", false).await;
    user_with_token(&b, "dave", false).await;
    assert_eq!(events(&b, "user.expired", "user:vendor9").await.len(), 1);
    assert_eq!(
        events(&b, "user.expiry_notice", "user:vendor9").await.len(),
        1
    );
    let g = b.admin().get_grant(grant.id).await.unwrap();
    assert_eq!(g.state, GrantState::Revoked);
    assert_eq!(
        events(&b, "grant.revoked", &format!("grant:{}", grant.id))
            .await
            .len(),
        1
    );
    assert_eq!(status(&vendor.whoami().await.unwrap_err()), 401);
    assert!(
        a.admin()
            .list_external_users()
            .await
            .unwrap()
            .iter()
            .any(|x| x.user == "vendor9" && x.expired_at.is_some())
    );
}
