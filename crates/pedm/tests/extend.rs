//! Extending a live grant: policy decides (at once, by approvers, or no), within the role's
//! maximum, and the privilege is never taken away and given back in the target.

mod common;

use common::*;
use pedm_api::{Decide, ExtendGrant, GrantState, Outcome, Reason, RequestState};
use std::time::Duration;

fn extend(by: &str, why: &str) -> ExtendGrant {
    ExtendGrant {
        by: by.into(),
        justification: why.into(),
        ticket: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn extend_at_once_without_a_gap_in_the_target() {
    let tmp = tempfile::tempdir().unwrap();
    let (config, log) = logging_target(tmp.path());
    let s = Server::start_with(Options {
        config: Some(config),
        ..Default::default()
    });
    app_target(&s, true).await;
    let alice_token = user_with_token(&s, "alice", false).await;
    let alice = s.client(&alice_token);
    let bob = s.client(&user_with_token(&s, "bob", false).await);
    let g = alice
        .create_request(&req("app", "deploy", "20m", "ship release 42"))
        .await
        .unwrap()
        .grant
        .unwrap();
    let g = wait_provision(&s, g.id, "active").await;
    assert_eq!(calls(&log), ["grant"]);

    // Auto-approved role: the extension is granted at once, on the same grant.
    let out = s.cli(
        &alice_token,
        &[
            "grant",
            "extend",
            &g.id.to_string(),
            "--by",
            "20m",
            "-r",
            "the migration is slow",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains(&g.id.to_string()), "{}", stdout(&out));
    let after = alice.get_grant(g.id).await.unwrap();
    assert_eq!(after.state, GrantState::Active);
    assert_eq!(after.provision_state.as_str(), "active");
    assert_eq!(
        after.expires_at,
        g.expires_at + jiff::SignedDuration::from_mins(20)
    );
    let extended = wait_event(&s, "grant.extended", &format!("grant:{}", g.id)).await;
    assert_eq!(extended.actor, "alice");
    assert_eq!(extended.data["by_secs"], 1200);
    // Nothing was taken away and given back.
    assert_eq!(calls(&log), ["grant"]);
    assert!(audit_of(&s, "grant.started").await.len() == 1);

    // Past the role's maximum (40m left + 30m > 1h): refused, nothing changed.
    let e = alice
        .extend_grant(g.id, &extend("30m", "more"))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(422), "{e}");
    assert!(e.to_string().contains("more than the 1h allowed"), "{e}");
    assert_eq!(
        alice.get_grant(g.id).await.unwrap().expires_at,
        after.expires_at
    );

    // Only the holder may ask; the refusal is recorded.
    let e = bob
        .extend_grant(g.id, &extend("5m", "mine now"))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(403), "{e}");
    let refused = wait_event(&s, "grant.extend", &format!("grant:{}", g.id)).await;
    assert_eq!(
        (refused.actor.as_str(), refused.outcome),
        ("bob", Outcome::Denied)
    );

    // Policy sees `context.extension`: here long extensions are forbidden.
    add_policy(
        &s.admin(),
        "short-extensions",
        "@id(\"short-extensions\")\nforbid(principal, action == Pedm::Action::\"request\", resource)\n  \
         when { context.extension && context.duration_secs > 600 };\n",
    )
    .await;
    let out = s.cli(
        &alice_token,
        &[
            "grant",
            "extend",
            &g.id.to_string(),
            "--by",
            "15m",
            "-r",
            "longer",
        ],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("short-extensions"),
        "{}",
        stderr(&out)
    );
    let ok = alice
        .extend_grant(g.id, &extend("5m", "a little longer"))
        .await
        .unwrap();
    assert_eq!(ok.request.state, RequestState::Approved);
    assert_eq!(ok.request.grant_id, Some(g.id));

    // Asking for the role again while holding it is asking for more time on the same grant
    // (up to the duration from now): an extension, decided as one.
    let again = alice
        .create_request(&req("app", "deploy", "55m", "still deploying"))
        .await
        .unwrap();
    assert_eq!(again.request.context.extends, Some(g.id));
    assert_eq!(again.request.state, RequestState::Approved);
    let longer = again.grant.expect("the same grant, longer");
    assert_eq!(longer.id, g.id);
    assert!(longer.expires_at > ok.grant.as_ref().unwrap().expires_at);
    // Asking for less than is left is pointless: refused, naming the grant.
    let e = alice
        .create_request(&req("app", "deploy", "10m", "again"))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(409), "{e}");
    assert!(
        e.to_string()
            .contains(&format!("pedm grant extend {}", g.id)),
        "{e}"
    );
    assert_eq!(calls(&log), ["grant"]);

    // A released grant is not extended; the revoke is the first one the target sees.
    alice.release_grant(g.id, &Reason::default()).await.unwrap();
    let e = alice
        .extend_grant(g.id, &extend("5m", "too late"))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(409), "{e}");
    wait_provision(&s, g.id, "revoked").await;
    assert_eq!(calls(&log), ["grant", "revoke"]);
}

#[tokio::test]
async fn extension_waits_for_approvers_like_a_request() {
    let s = Server::start();
    standard_targets(&s).await;
    let alice = s.client(&user_with_token(&s, "alice", false).await);
    let bob = s.client(&user_with_token(&s, "bob", true).await);
    let id = alice
        .create_request(&req("web1", "root", "10m", "patch"))
        .await
        .unwrap()
        .request
        .id;
    let g = bob
        .approve_request(id, &Decide::default())
        .await
        .unwrap()
        .grant
        .unwrap();

    let asked = alice
        .extend_grant(g.id, &extend("15m", "the patch needs a reboot"))
        .await
        .unwrap();
    assert_eq!(asked.request.state, RequestState::Pending);
    assert!(asked.grant.is_none());
    assert_eq!(asked.request.context.extends, Some(g.id));
    assert_eq!(asked.request.duration_secs, 900);
    // One pending extension per grant.
    let e = alice
        .extend_grant(g.id, &extend("5m", "again"))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(409), "{e}");
    assert!(e.to_string().contains("already waiting"), "{e}");
    // Approvers see it like any request, and cannot be the holder.
    let e = alice
        .approve_request(asked.request.id, &Decide::default())
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(403), "{e}");
    let before = alice.get_grant(g.id).await.unwrap();
    assert_eq!(before.expires_at, g.expires_at);

    let decided = bob
        .approve_request(asked.request.id, &Decide::default())
        .await
        .unwrap();
    assert_eq!(decided.request.state, RequestState::Approved);
    assert_eq!(decided.request.grant_id, Some(g.id));
    let extended = decided.grant.expect("the extended grant");
    assert_eq!(extended.id, g.id);
    assert_eq!(
        extended.expires_at,
        g.expires_at + jiff::SignedDuration::from_mins(15)
    );
    let now = alice.get_grant(g.id).await.unwrap();
    assert_eq!(
        (now.state, now.expires_at),
        (GrantState::Active, extended.expires_at)
    );
    let ev = wait_event(&s, "grant.extended", &format!("grant:{}", g.id)).await;
    assert_eq!(ev.actor, "bob");
    assert_eq!(ev.data["request"], asked.request.id.to_string());
}

#[tokio::test]
async fn an_extended_grant_outlives_its_first_expiry_and_ends_once_at_the_new_one() {
    let s = Server::start();
    standard_targets(&s).await;
    let alice = s.client(&user_with_token(&s, "alice", false).await);
    let g = alice
        .create_request(&req("web1", "docker", "2s", "quick look"))
        .await
        .unwrap()
        .grant
        .unwrap();
    let extended = alice
        .extend_grant(g.id, &extend("3s", "a bit more"))
        .await
        .unwrap()
        .grant
        .unwrap();
    assert_eq!(
        extended.expires_at,
        g.expires_at + jiff::SignedDuration::from_secs(3)
    );
    // The scenario: time passes beyond the first expiry.
    sleep_past(g.expires_at).await;
    assert_eq!(
        alice.get_grant(g.id).await.unwrap().state,
        GrantState::Active
    );
    let ended = eventually(Duration::from_secs(30), "the grant to expire", || async {
        let now = alice.get_grant(g.id).await.unwrap();
        (now.state == GrantState::Expired).then_some(now)
    })
    .await;
    assert!(
        ended.ended_at.is_some_and(|at| at >= extended.expires_at),
        "ended at {:?}, before its new expiry {}",
        ended.ended_at,
        extended.expires_at
    );
    let expired = audit_of(&s, "grant.expired").await;
    assert_eq!(
        expired
            .iter()
            .filter(|e| e.subject.as_deref() == Some(&format!("grant:{}", g.id)))
            .count(),
        1
    );
}
