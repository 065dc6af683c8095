//! Scheduled access (`pedm request create --start`): a window that starts later is decided
//! now, holds nothing in the target until its start, is switched on there at the start (once)
//! and off at its end; revoked before its start, it never reaches the target. Policy sees
//! `context.starts_in_secs`.

mod common;

use common::*;
use pedm_api::{Decide, GrantState, Outcome, RequestState};

fn at(secs_from_now: i64) -> jiff::Timestamp {
    jiff::Timestamp::now() + jiff::SignedDuration::from_secs(secs_from_now)
}

fn scheduled(
    target: &str,
    role: &str,
    duration: &str,
    start: jiff::Timestamp,
) -> pedm_api::CreateRequest {
    pedm_api::CreateRequest {
        start: Some(start.to_string()),
        ..req(target, role, duration, "maintenance tonight")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_window_is_switched_on_at_its_start_and_off_at_its_end() {
    let tmp = tempfile::tempdir().unwrap();
    let (config, log) = logging_target(tmp.path());
    let s = Server::start_with(Options {
        config: Some(config),
        ..Default::default()
    });
    app_target(&s, true).await;
    let alice_token = user_with_token(&s, "alice", false).await;
    let alice = s.client(&alice_token);

    // Through the CLI: decided at once (auto-approved role), nothing in the target yet.
    let start = at(8).round(jiff::Unit::Second).unwrap();
    let out = s.cli(
        &alice_token,
        &[
            "request",
            "create",
            "--target",
            "app",
            "--role",
            "deploy",
            "--duration",
            "4s",
            "-r",
            "deploy window",
            "--start",
            &start.to_string(),
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let created: pedm_api::RequestCreated = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(created.request.state, RequestState::Approved);
    let g = created.grant.expect("a grant");
    assert_eq!(g.state, GrantState::Scheduled);
    assert_eq!(g.starts_at, start);
    assert_eq!(g.expires_at, start + jiff::SignedDuration::from_secs(4));
    let scheduled_ev = wait_event(&s, "grant.scheduled", &format!("grant:{}", g.id)).await;
    assert_eq!(scheduled_ev.data["starts_at"], start.to_string());
    assert!(calls(&log).is_empty(), "{:?}", calls(&log));
    let list = s.cli(&alice_token, &["grant", "list"]);
    assert!(stdout(&list).contains("starts in"), "{}", stdout(&list));
    // Not live before its start.
    assert_eq!(
        alice.get_grant(g.id).await.unwrap().state,
        GrantState::Scheduled
    );

    // At the start the scheduler switches it on in the target, once.
    let started = wait_event(&s, "grant.started", &format!("grant:{}", g.id)).await;
    assert!(
        started.at >= start,
        "started at {} before {start}",
        started.at
    );
    wait_provision(&s, g.id, "active").await;
    // And off at its end.
    let ended = wait_event(&s, "grant.expired", &format!("grant:{}", g.id)).await;
    assert!(ended.at >= g.expires_at);
    wait_provision(&s, g.id, "revoked").await;
    assert_eq!(calls(&log), ["grant", "revoke"]);
    assert_eq!(audit_of(&s, "grant.started").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_window_revoked_before_its_start_never_reaches_the_target_and_bad_windows_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (config, log) = logging_target(tmp.path());
    let s = Server::start_with(Options {
        config: Some(config),
        ..Default::default()
    });
    app_target(&s, true).await;
    let alice = s.client(&user_with_token(&s, "alice", false).await);

    let g = alice
        .create_request(&scheduled("app", "deploy", "30m", at(3600)))
        .await
        .unwrap()
        .grant
        .unwrap();
    assert_eq!(g.state, GrantState::Scheduled);
    // A second window overlapping the first is refused, naming it.
    let e = alice
        .create_request(&scheduled("app", "deploy", "30m", at(3600 + 600)))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(409), "{e}");
    assert!(e.to_string().contains(&g.id.to_string()), "{e}");
    // One after it is fine.
    let later = alice
        .create_request(&scheduled("app", "deploy", "30m", at(3 * 3600)))
        .await
        .unwrap()
        .grant
        .unwrap();
    assert_eq!(later.state, GrantState::Scheduled);

    // Released by its holder before the start: ended, nothing to undo in the target.
    let released = alice
        .release_grant(g.id, &pedm_api::Reason::default())
        .await
        .unwrap();
    assert_eq!(released.state, GrantState::Released);
    assert_eq!(released.provision_state.as_str(), "revoked");
    let revoked = s
        .admin()
        .revoke_grant(
            later.id,
            &pedm_api::Reason {
                reason: Some("change cancelled".into()),
            },
        )
        .await
        .unwrap();
    assert_eq!(revoked.state, GrantState::Revoked);
    assert!(calls(&log).is_empty(), "{:?}", calls(&log));

    // Bad windows: each refused with the field named, nothing made.
    let before = alice.list_grants(&Default::default()).await.unwrap().len();
    let past = alice
        .create_request(&scheduled("app", "deploy", "30m", at(-3600)))
        .await
        .unwrap_err();
    assert_eq!(past.status(), Some(422), "{past}");
    assert!(past.to_string().contains("start"), "{past}");
    let far = alice
        .create_request(&scheduled("app", "deploy", "30m", at(31 * 86_400)))
        .await
        .unwrap_err();
    assert_eq!(far.status(), Some(422), "{far}");
    let glass = alice
        .create_request(&pedm_api::CreateRequest {
            break_glass: true,
            ..scheduled("app", "deploy", "30m", at(3600))
        })
        .await
        .unwrap_err();
    assert_eq!(glass.status(), Some(422), "{glass}");
    let mut garbled = scheduled("app", "deploy", "30m", at(3600));
    garbled.start = Some("tonight at ten".into());
    let e = alice.create_request(&garbled).await.unwrap_err();
    assert_eq!(e.status(), Some(400), "{e}");
    assert!(e.to_string().contains("RFC 3339"), "{e}");
    assert_eq!(
        alice.list_grants(&Default::default()).await.unwrap().len(),
        before
    );
}

#[tokio::test]
async fn policy_sees_how_far_ahead_and_approvers_decide_a_window() {
    let s = Server::start();
    standard_targets(&s).await;
    add_policy(
        &s.admin(),
        "no-far-windows.cedar",
        "@id(\"no-far-windows\")\nforbid (principal, action == Pedm::Action::\"request\", resource)\n\
         when { context.starts_in_secs > 604800 };\n",
    )
    .await;
    let alice = s.client(&user_with_token(&s, "alice", false).await);
    let bob = s.client(&user_with_token(&s, "bob", true).await);

    let far = alice
        .create_request(&scheduled("web1", "root", "1h", at(8 * 86_400)))
        .await
        .unwrap()
        .request;
    assert_eq!(far.state, RequestState::Denied);
    assert_eq!(far.policy.as_deref(), Some("no-far-windows"));

    let start = at(2 * 86_400);
    let r = alice
        .create_request(&scheduled("web1", "root", "1h", start))
        .await
        .unwrap()
        .request;
    assert_eq!(r.state, RequestState::Pending);
    // Nobody approving after the window ended would make sense: it waits at most until then.
    assert!(r.pending_until <= start + jiff::SignedDuration::from_secs(3600));
    let pedm_api::Decided {
        request: decided,
        grant,
    } = bob
        .approve_request(r.id, &Decide { comment: None })
        .await
        .unwrap();
    assert_eq!(decided.state, RequestState::Approved);
    let g = grant.expect("a grant");
    assert_eq!(g.state, GrantState::Scheduled);
    let ev = wait_event(&s, "grant.scheduled", &format!("grant:{}", g.id)).await;
    assert_eq!(ev.outcome, Outcome::Success);
}
