//! Locks through the real binaries: an admin stops a person or a host at once. Requests are
//! refused with the lock named, the person's live host sessions end within moments (their
//! grants leave the agent's snapshot), their execs are refused, and everything works again
//! once the lock is lifted. The agent part needs root (real Linux users, a root daemon) and
//! is skipped with the reason printed otherwise.

mod common;

use common::agent::*;
use common::*;
use pedm_api::lock::CreateLock;
use pedm_api::{AuditQuery, Outcome, RequestState};

fn lock_user(user: &str, reason: &str) -> CreateLock {
    CreateLock {
        user: Some(user.into()),
        host: None,
        duration: "1h".into(),
        reason: reason.into(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_locked_person_or_host_gets_nothing_new_until_the_lock_is_lifted() {
    let s = Server::start();
    standard_targets(&s).await;
    let alice = s.client(&user_with_token(&s, "alice", false).await);
    let bob = s.client(&user_with_token(&s, "bob", false).await);

    // Through the CLI, as an on-call admin would.
    let out = s.cli(
        &s.admin_token,
        &[
            "--json", "lock", "add", "--user", "alice", "--for", "1h", "-r", "phished",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let lock: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = lock["id"].as_str().unwrap().to_string();
    let e = alice
        .create_request(&req("web1", "docker", "30m", "deploy"))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(403), "{e:?}");
    assert!(
        e.to_string().contains("phished") && e.to_string().contains(&id),
        "{e}"
    );
    // Others are not stopped.
    let r = bob
        .create_request(&req("web1", "docker", "30m", "deploy"))
        .await
        .unwrap();
    assert_eq!(r.request.state, RequestState::Approved);
    let listed = s.cli(&s.admin_token, &["lock", "list"]);
    assert!(stdout(&listed).contains("alice") && stdout(&listed).contains("in force"));

    // A host lock stops everyone's requests for it.
    s.admin()
        .add_lock(&CreateLock {
            user: None,
            host: Some("web1".into()),
            duration: "10m".into(),
            reason: "forensics".into(),
        })
        .await
        .unwrap();
    let e = bob
        .create_request(&req("web1", "root", "30m", "disk"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("host web1 is locked"), "{e}");

    // Bad input changes nothing; people without manage_grants cannot lock.
    let before = s.admin().list_locks(true).await.unwrap();
    for (body, status) in [
        (
            CreateLock {
                host: Some("web1".into()),
                ..lock_user("bob", "x")
            },
            400,
        ),
        (lock_user("nobody", "x"), 404),
        (
            CreateLock {
                duration: "31d".into(),
                ..lock_user("bob", "x")
            },
            422,
        ),
        (lock_user("bob", "  "), 400),
    ] {
        let e = s.admin().add_lock(&body).await.unwrap_err();
        assert_eq!(e.status(), Some(status), "{body:?}: {e}");
    }
    let e = bob
        .add_lock(&lock_user("alice", "revenge"))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(403));
    assert_eq!(s.admin().list_locks(true).await.unwrap(), before);

    // Lifted: alice may ask again (the host lock still stops web1, so lift it too).
    let out = s.cli(&s.admin_token, &["lock", "lift", &id]);
    assert!(out.status.success(), "{}", stderr(&out));
    for l in s.admin().list_locks(false).await.unwrap() {
        s.admin().lift_lock(l.id).await.unwrap();
    }
    assert!(s.admin().list_locks(false).await.unwrap().is_empty());
    let r = alice
        .create_request(&req("web1", "docker", "30m", "deploy"))
        .await
        .unwrap();
    assert_eq!(r.request.state, RequestState::Approved);
    let e = s
        .admin()
        .lift_lock(lock["id"].as_str().unwrap().parse().unwrap())
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(409), "lifted once");
    let events = s
        .admin()
        .audit_events(&AuditQuery::default())
        .await
        .unwrap();
    let count = |action: &str, outcome: Outcome| {
        events
            .iter()
            .filter(|e| e.action == action && e.outcome == outcome)
            .count()
    };
    assert_eq!(count("lock.added", Outcome::Success), 2);
    assert_eq!(count("lock.lifted", Outcome::Success), 2);
    assert_eq!(count("request.create", Outcome::Denied), 2);
    assert_eq!(count("lock.add", Outcome::Denied), 1, "bob's attempt");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_ends_the_live_sessions_and_refuses_execs() {
    if !root_or_skip("a_lock_ends_the_live_sessions_and_refuses_execs") {
        return;
    }
    let (s, agent, alice, client) = setup("pedmlk").await;
    grant(&client, "30m").await;
    agent.wait_snapshot(1, None);
    let (mut child, line) = agent.exec_running(
        &alice,
        &["/bin/sh", "-c", "echo started; exec /bin/sleep 1000"],
    );
    assert_eq!(line, "started\n");

    s.admin()
        .add_lock(&lock_user(&alice.name, "investigating"))
        .await
        .unwrap();
    // The agent is told at once; the session ends with its grant gone from the snapshot.
    agent.wait_snapshot(0, None);
    let status = child.wait().unwrap();
    assert!(!status.success(), "the session was ended");
    let out = agent.exec(&alice, &["/bin/true"]);
    assert!(!out.status.success(), "an exec under a lock ran");

    let lock = s.admin().list_locks(false).await.unwrap().remove(0);
    s.admin().lift_lock(lock.id).await.unwrap();
    agent.wait_snapshot(1, None);
    let out = agent.exec(&alice, &["/bin/true"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_kills_one_live_session_and_its_record_says_why() {
    if !root_or_skip("an_admin_kills_one_live_session_and_its_record_says_why") {
        return;
    }
    let (s, agent, alice, client) = setup("pedmkl").await;
    grant(&client, "30m").await;
    agent.wait_snapshot(1, None);
    let start = |tag: &str| {
        let script = format!("echo {tag}; exec /bin/sleep 1000");
        let (child, line) = agent.exec_running(&alice, &["/bin/sh", "-c", &script]);
        assert_eq!(line.trim(), tag);
        child
    };
    let mut doomed = start("doomed");
    let mut spared = start("spared");
    // An admin finds the live session in the audit log (exec.allowed names it).
    let allowed = s
        .admin()
        .audit_events(&AuditQuery {
            action: Some("exec.allowed".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let id = allowed
        .iter()
        .find(|e| e.data["argv"].to_string().contains("doomed"))
        .and_then(|e| e.data["session"].as_str())
        .expect("the session's exec.allowed")
        .to_string();
    let out = s.cli(
        &s.admin_token,
        &["session", "kill", &id, "-r", "crypto miner"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!doomed.wait().unwrap().success());
    assert!(
        spared.try_wait().unwrap().is_none(),
        "only that session ends"
    );
    let recorded = eventually(
        std::time::Duration::from_secs(20),
        "the killed session",
        || async {
            s.admin()
                .list_sessions(&pedm_api::SessionQuery::default())
                .await
                .ok()?
                .into_iter()
                .find(|x| x.id.to_string() == id)
        },
    )
    .await;
    let ended_by = recorded.ended_by.unwrap_or_default();
    assert!(
        ended_by.contains("killed by admin: crypto miner"),
        "{ended_by}"
    );
    let again = s.cli(&s.admin_token, &["session", "kill", &id, "-r", "twice"]);
    assert!(stderr(&again).contains("ended"), "{}", stderr(&again));
    let _ = spared.kill();
}
