//! The request → grant → end life cycle, driven over HTTP against the real `pedmd`.

mod common;

use common::*;
use pedm_api::*;
use std::time::Duration;

async fn events(s: &Server, action: &str, subject: &str) -> Vec<AuditEvent> {
    s.admin()
        .audit_events(&AuditQuery {
            action: Some(action.into()),
            subject: Some(subject.into()),
            ..Default::default()
        })
        .await
        .expect("audit")
}

#[tokio::test]
async fn approval_flow_from_request_to_release() {
    let s = Server::start();
    standard_targets(&s).await;
    let alice = s.client(&user_with_token(&s, "alice", false).await);
    let bob = s.client(&user_with_token(&s, "bob", true).await);

    let mut r = req("web1", "root", "30m", "apply security patch");
    r.ticket = Some("CHG-42".into());
    let created = alice.create_request(&r).await.expect("create");
    assert_eq!(created.request.state, RequestState::Pending);
    assert!(created.grant.is_none());
    assert_eq!(created.request.requester, "alice");
    assert_eq!(created.request.ticket.as_deref(), Some("CHG-42"));
    assert_eq!(
        created.request.context.source_addr.as_deref(),
        Some("127.0.0.1")
    );
    let id = created.request.id;

    // alice cannot approve her own request, and the refusal is recorded.
    let e = alice
        .approve_request(id, &Decide::default())
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(403), "{e}");
    assert!(e.to_string().contains("own request"), "{e}");
    let refused = events(&s, "request.approve", &format!("request:{id}")).await;
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].outcome, Outcome::Denied);
    assert_eq!(refused[0].actor, "alice");

    // The pending request is listed for the approver.
    let pending = bob
        .list_requests(&RequestQuery {
            state: Some("pending".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(pending.iter().map(|r| r.id).collect::<Vec<_>>(), vec![id]);

    let decided = bob
        .approve_request(
            id,
            &Decide {
                comment: Some("go ahead".into()),
            },
        )
        .await
        .expect("approve");
    assert_eq!(decided.request.state, RequestState::Approved);
    assert_eq!(decided.request.decided_by.as_deref(), Some("bob"));
    let grant = decided.grant.expect("grant");
    assert_eq!(grant.state, GrantState::Active);
    assert_eq!(grant.user, "alice");
    assert_eq!(
        grant.expires_at.duration_since(grant.starts_at),
        jiff::SignedDuration::from_secs(1800)
    );

    // Approving twice is a conflict and changes nothing.
    let e = bob
        .approve_request(id, &Decide::default())
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(409), "{e}");

    let detail = alice.get_request(id).await.unwrap();
    assert_eq!(detail.approvals.len(), 1);
    assert_eq!(detail.approvals[0].approver, "bob");
    assert_eq!(detail.request.grant_id, Some(grant.id));

    // Someone else's grant: not visible to alice's colleague, not releasable by the admin.
    let carol = s.client(&user_with_token(&s, "carol", false).await);
    assert_eq!(
        carol.get_grant(grant.id).await.unwrap_err().status(),
        Some(403)
    );
    assert_eq!(
        bob.release_grant(grant.id, &Reason::default())
            .await
            .unwrap_err()
            .status(),
        Some(403)
    );

    let released = alice
        .release_grant(
            grant.id,
            &Reason {
                reason: Some("done".into()),
            },
        )
        .await
        .expect("release");
    assert_eq!(released.state, GrantState::Released);
    assert_eq!(released.ended_by.as_deref(), Some("alice"));
    let e = alice
        .release_grant(grant.id, &Reason::default())
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(409), "{e}");
    assert!(e.to_string().contains("already ended"), "{e}");

    assert_eq!(
        events(&s, "grant.started", &format!("grant:{}", grant.id))
            .await
            .len(),
        1
    );
    assert_eq!(
        events(&s, "grant.released", &format!("grant:{}", grant.id))
            .await
            .len(),
        1
    );
    // Everything about the request, its grant included, in one query.
    let about = s
        .admin()
        .audit_events(&AuditQuery {
            request: Some(id),
            ..Default::default()
        })
        .await
        .unwrap();
    let actions: Vec<&str> = about.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "request.created",
            "request.approve",
            "request.approval_recorded",
            "request.approved",
            "grant.started",
            "grant.released"
        ],
        "{about:?}"
    );
    let on_target = s
        .admin()
        .audit_events(&AuditQuery {
            target: Some("web1".into()),
            action: Some("grant.released".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(on_target.len(), 1);
}

#[tokio::test]
async fn deny_cancel_and_revoke() {
    let s = Server::start();
    standard_targets(&s).await;
    let alice = s.client(&user_with_token(&s, "alice", false).await);
    let admin = s.admin();

    let r1 = alice
        .create_request(&req("web1", "root", "10m", "debug"))
        .await
        .unwrap()
        .request;
    let e = admin
        .deny_request(r1.id, &Decide::default())
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(400), "deny without comment: {e}");
    let d = admin
        .deny_request(
            r1.id,
            &Decide {
                comment: Some("use staging".into()),
            },
        )
        .await
        .unwrap();
    assert_eq!(d.request.state, RequestState::Denied);
    assert!(d.grant.is_none());
    let e = admin
        .approve_request(r1.id, &Decide::default())
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(409));
    assert!(e.to_string().contains("denied"), "{e}");

    let r2 = alice
        .create_request(&req("web1", "root", "10m", "debug"))
        .await
        .unwrap()
        .request;
    let c = alice
        .cancel_request(
            r2.id,
            &Reason {
                reason: Some("not needed".into()),
            },
        )
        .await
        .unwrap();
    assert_eq!(c.state, RequestState::Cancelled);
    assert_eq!(
        alice
            .cancel_request(r2.id, &Reason::default())
            .await
            .unwrap_err()
            .status(),
        Some(409)
    );

    // Someone else's request cannot be cancelled or read.
    let r3 = alice
        .create_request(&req("web1", "root", "10m", "debug"))
        .await
        .unwrap()
        .request;
    let mallory = s.client(&user_with_token(&s, "mallory", false).await);
    assert_eq!(
        mallory
            .cancel_request(r3.id, &Reason::default())
            .await
            .unwrap_err()
            .status(),
        Some(403)
    );
    assert_eq!(
        mallory.get_request(r3.id).await.unwrap_err().status(),
        Some(403)
    );
    assert_eq!(
        mallory
            .approve_request(r3.id, &Decide::default())
            .await
            .unwrap_err()
            .status(),
        Some(403),
        "non-admin approver"
    );
    assert_eq!(
        alice.get_request(r3.id).await.unwrap().request.state,
        RequestState::Pending
    );

    // Auto-approved role: granted at once; an admin revokes with a reason.
    let auto = alice
        .create_request(&req("web1", "docker", "15m", "build image"))
        .await
        .unwrap();
    assert_eq!(auto.request.state, RequestState::Approved);
    assert_eq!(auto.request.decided_by.as_deref(), Some("policy"));
    let g = auto.grant.expect("auto grant");
    assert_eq!(
        admin
            .revoke_grant(g.id, &Reason::default())
            .await
            .unwrap_err()
            .status(),
        Some(400),
        "revoke needs a reason"
    );
    assert_eq!(
        alice
            .revoke_grant(
                g.id,
                &Reason {
                    reason: Some("x".into())
                }
            )
            .await
            .unwrap_err()
            .status(),
        Some(403)
    );
    let revoked = admin
        .revoke_grant(
            g.id,
            &Reason {
                reason: Some("incident 7".into()),
            },
        )
        .await
        .unwrap();
    assert_eq!(revoked.state, GrantState::Revoked);
    assert_eq!(revoked.end_reason.as_deref(), Some("incident 7"));
    assert_eq!(
        admin
            .revoke_grant(
                g.id,
                &Reason {
                    reason: Some("again".into())
                }
            )
            .await
            .unwrap_err()
            .status(),
        Some(409)
    );
}

#[tokio::test]
async fn grants_and_stale_requests_expire_on_time() {
    let s = Server::start_with(Options {
        env: vec![("PEDM_LIMITS__PENDING_TTL".into(), "2s".into())],
        ..Default::default()
    });
    standard_targets(&s).await;
    let alice = s.client(&user_with_token(&s, "alice", false).await);
    let admin = s.admin();

    let g = alice
        .create_request(&req("web1", "docker", "2s", "quick fix"))
        .await
        .unwrap()
        .grant
        .expect("grant");
    let pending = alice
        .create_request(&req("web1", "root", "5m", "needs approval"))
        .await
        .unwrap()
        .request;

    let ended = eventually(Duration::from_secs(15), "grant expiry", || async {
        let g = admin.get_grant(g.id).await.unwrap();
        (g.state != GrantState::Active).then_some(g)
    })
    .await;
    assert_eq!(ended.state, GrantState::Expired);
    assert_eq!(ended.ended_by.as_deref(), Some("system"));
    let ended_at = ended.ended_at.expect("ended_at");
    assert!(
        ended_at >= ended.expires_at,
        "ended {ended_at} before expiry {}",
        ended.expires_at
    );

    let expired = eventually(Duration::from_secs(15), "request expiry", || async {
        let r = admin.get_request(pending.id).await.unwrap().request;
        (r.state != RequestState::Pending).then_some(r)
    })
    .await;
    assert_eq!(expired.state, RequestState::Expired);
    assert!(expired.decided_at.unwrap() >= expired.pending_until);
    // An expired request can no longer be approved.
    assert_eq!(
        admin
            .approve_request(pending.id, &Decide::default())
            .await
            .unwrap_err()
            .status(),
        Some(409)
    );
    assert_eq!(
        events(&s, "grant.expired", &format!("grant:{}", g.id))
            .await
            .len(),
        1
    );
    assert_eq!(
        events(&s, "request.expired", &format!("request:{}", pending.id))
            .await
            .len(),
        1
    );
}

#[tokio::test]
async fn grants_that_expired_while_down_end_right_after_start_exactly_once() {
    let mut s = Server::start();
    standard_targets(&s).await;
    let alice_token = user_with_token(&s, "alice", false).await;
    let alice = s.client(&alice_token);
    let bob = s.client(&user_with_token(&s, "bob", false).await);
    let short = alice
        .create_request(&req("web1", "docker", "1s", "short"))
        .await
        .unwrap()
        .grant
        .unwrap();
    // Another holder: a second live grant of one role for alice would be refused.
    let long = bob
        .create_request(&req("web1", "docker", "1h", "long"))
        .await
        .unwrap()
        .grant
        .unwrap();

    // Down across the expiry, killed without a chance to tidy up.
    s.kill();
    sleep_past(short.expires_at).await;
    s.start_again();

    let admin = s.admin();
    let ended = eventually(
        Duration::from_secs(10),
        "overdue grant ends after restart",
        || async {
            let g = admin.get_grant(short.id).await.unwrap();
            (g.state == GrantState::Expired).then_some(g)
        },
    )
    .await;
    assert!(ended.ended_at.unwrap() >= short.expires_at);
    assert_eq!(
        admin.get_grant(long.id).await.unwrap().state,
        GrantState::Active
    );

    // A second restart does not end it again.
    s.restart();
    let admin = s.admin();
    assert_eq!(
        events(&s, "grant.expired", &format!("grant:{}", short.id))
            .await
            .len(),
        1
    );
    assert_eq!(
        admin.get_grant(long.id).await.unwrap().state,
        GrantState::Active
    );
    // The token survived the restarts (state is durable).
    s.client(&alice_token)
        .whoami()
        .await
        .expect("token still valid");
}

#[tokio::test]
async fn an_expired_grant_is_never_answered_active_after_a_restart() {
    // Enough overdue grants that the first expiry pass after the restart is still running
    // when the first answers go out: each answer must already show them expired.
    let mut s = Server::start();
    standard_targets(&s).await;
    let alice = s.client(&user_with_token(&s, "alice", false).await);
    // One grant per user (a second live grant of a role may be refused by policy).
    let mut holders = vec![alice.clone()];
    for i in 1..400 {
        holders.push(s.client(&user_with_token(&s, &format!("dev{i}"), false).await));
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (i, c) in holders.into_iter().enumerate() {
        tasks.spawn(async move {
            c.create_request(&req("web1", "docker", "2s", &format!("short {i}")))
                .await
                .expect("request")
                .grant
                .expect("auto-approved")
        });
    }
    let mut grants = vec![];
    while let Some(g) = tasks.join_next().await {
        grants.push(g.unwrap());
    }
    let last = grants.iter().map(|g| g.expires_at).max().unwrap();
    s.kill();
    sleep_past(last).await;
    s.start_again();

    let admin = s.admin();
    let active = admin
        .list_grants(&GrantQuery {
            state: Some("active".into()),
            limit: Some(1000),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(active.is_empty(), "{} listed active", active.len());
    for g in [&grants[0], &grants[199], &grants[399]] {
        let now = admin.get_grant(g.id).await.unwrap();
        assert_eq!(now.state, GrantState::Expired, "{now:?}");
        assert!(now.ended_at.is_some_and(|t| t <= jiff::Timestamp::now()));
    }
    let mine = alice.list_grants(&GrantQuery::default()).await.unwrap();
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0].state, GrantState::Expired);
    let expired = admin
        .list_grants(&GrantQuery {
            state: Some("expired".into()),
            limit: Some(1000),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(expired.len(), 400);
    let report = admin
        .elevation_report(&ReportQuery { since: None })
        .await
        .unwrap();
    assert!(report.iter().all(|r| r.state != GrantState::Active));
    // Releasing it now is refused: it has ended.
    let r = alice
        .release_grant(mine[0].id, &Reason { reason: None })
        .await;
    assert_eq!(r.unwrap_err().status(), Some(409));
}

#[tokio::test]
async fn concurrent_approvals_exactly_one_wins() {
    let s = Server::start();
    standard_targets(&s).await;
    let alice = s.client(&user_with_token(&s, "alice", false).await);
    let mut approvers = vec![];
    for i in 0..8 {
        approvers.push(s.client(&user_with_token(&s, &format!("approver{i}"), true).await));
    }
    for round in 0..3 {
        // A requester per round: a second live grant of one role for alice would be refused.
        let alice = if round == 0 {
            alice.clone()
        } else {
            s.client(&user_with_token(&s, &format!("alice{round}"), false).await)
        };
        let id = alice
            .create_request(&req("web1", "root", "10m", &format!("round {round}")))
            .await
            .unwrap()
            .request
            .id;
        let results = futures_join(approvers.iter().map(|a| {
            let a = a.clone();
            async move { a.approve_request(id, &Decide::default()).await }
        }))
        .await;
        let ok: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(ok.len(), 1, "exactly one approval wins: {results:?}");
        for r in results.iter().filter_map(|r| r.as_ref().err()) {
            assert_eq!(r.status(), Some(409), "{r}");
        }
        let grants = s
            .admin()
            .list_grants(&GrantQuery {
                user: Some(if round == 0 {
                    "alice".into()
                } else {
                    format!("alice{round}")
                }),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(grants.iter().filter(|g| g.request_id == id).count(), 1);
        assert_eq!(
            events(&s, "request.approved", &format!("request:{id}"))
                .await
                .len(),
            1
        );
    }
}

async fn futures_join<F: std::future::Future + Send + 'static>(
    futs: impl Iterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = vec![];
    for h in handles {
        out.push(h.await.expect("task"));
    }
    out
}
