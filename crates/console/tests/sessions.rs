//! The console's sessions and form protection through its HTTP interface, in process, with a
//! manual clock (so the idle and absolute timeouts are tested without waiting): sign-in by
//! token, cookie flags, security headers, CSRF and cross-site refusals (recorded, nothing
//! changed), another person's request out of reach, sign-out, idle and absolute timeouts.

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::*;
use jiff::SignedDuration;
use pedm_core::model::*;
use pedm_core::service::TokenLifetime;

#[tokio::test]
async fn sign_in_sets_a_host_only_secure_httponly_cookie_and_pages_carry_strict_headers() {
    let w = world().await;
    let t = w.token("alice").await;
    let r = w
        .send(
            Request::post("/ui/sign-in")
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from(format!("token={t}")))
                .unwrap(),
        )
        .await;
    let set = r.headers()[header::SET_COOKIE].to_str().unwrap();
    assert!(set.starts_with("__Host-pedm_session=pedm_"), "{set}");
    for flag in [
        "; Path=/",
        "; Secure",
        "; HttpOnly",
        "; SameSite=Lax",
        "; Max-Age=3600",
    ] {
        assert!(set.contains(flag), "{flag} missing: {set}");
    }
    assert!(!set.contains("Domain"), "{set}");
    let ev = w.events("console.sign_in").await;
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].actor, "alice");
    assert!(
        !ev[0].data.to_string().contains(&t),
        "no token in the audit log"
    );

    let cookie = w.sign_in("alice").await;
    let page = w.get("/ui/access", &cookie).await;
    assert_eq!(page.status(), StatusCode::OK);
    let h = page.headers();
    let csp = h[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(h[header::X_FRAME_OPTIONS], "DENY");
    assert_eq!(h[header::CACHE_CONTROL], "no-store");
    assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    let html = body(page).await;
    assert!(
        !html.contains("<script>") && !html.contains(" on"),
        "no inline script"
    );

    // A wrong token: a page naming the refusal, no cookie.
    let r = w
        .send(
            Request::post("/ui/sign-in")
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from("token=pedm_0123456789abcdef_nope"))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.headers().get(header::SET_COOKIE).is_none());
    assert!(body(r).await.contains("not signed in: invalid token"));
    // Without a session every page sends people to sign in.
    let r = w.get("/ui/inbox", "pedm_0123456789abcdef_nope").await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()[header::LOCATION], "/ui/sign-in");
}

#[tokio::test]
async fn a_sign_in_posted_from_another_site_is_refused() {
    let w = world().await;
    let t = w.token("alice").await;
    for (k, v) in [
        ("sec-fetch-site", "cross-site"),
        ("origin", "https://evil.example"),
    ] {
        let r = w
            .send(
                Request::post("/ui/sign-in")
                    .header(header::HOST, "pedm.example.com")
                    .header(k, v)
                    .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .body(Body::from(format!("token={t}")))
                    .unwrap(),
            )
            .await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{k}: {v}");
        assert!(r.headers().get(header::SET_COOKIE).is_none());
    }
    assert!(w.events("console.sign_in").await.is_empty());
}

/// An AI agent's token (`pedm token create --for-agent`) cannot become a console session: that
/// would be a full session of its person. Refused and recorded.
#[tokio::test]
async fn an_ai_agents_token_opens_no_console_session() {
    let w = world().await;
    let (_, agent) =
        w.cp.create_agent_token(
            &Actor::system(),
            Some("alice"),
            None,
            TokenLifetime::Secs(3600),
        )
        .await
        .unwrap();
    let r = w
        .send(
            Request::post("/ui/sign-in")
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from(format!("token={agent}")))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(r.headers().get(header::SET_COOKIE).is_none());
    let page = body(r).await;
    assert!(page.contains("AI agent"), "{page}");
    let refused = w.events("console.sign_in").await;
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].outcome, pedm_core::audit::Outcome::Denied);
    // Nor is the agent token itself a session when put in the cookie.
    assert_ne!(w.get("/ui/", &agent).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn state_changes_need_the_sessions_csrf_token_and_refusals_are_recorded() {
    let w = world().await;
    let req = w.ask("alice").await;
    let bob = w.sign_in("bob").await;
    let csrf = csrf_of(&w, &bob).await;
    let path = format!("/ui/requests/{}/decide", req.id);
    let alice = w.sign_in("alice").await;
    let alices_csrf = csrf_of(&w, &alice).await;
    for (form, extra, why) in [
        ("decision=approve".to_string(), vec![], "without a token"),
        (
            format!("decision=approve&csrf={}", "0".repeat(64)),
            vec![],
            "a wrong token",
        ),
        (
            format!("decision=approve&csrf={alices_csrf}"),
            vec![],
            "another session's token",
        ),
        (
            format!("decision=approve&csrf={csrf}"),
            vec![("sec-fetch-site", "cross-site")],
            "from another site",
        ),
    ] {
        let r = w.post(&path, &bob, &form, &extra).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{why}");
    }
    let refused = w.events("console.refused").await;
    assert_eq!(refused.len(), 4);
    assert!(
        refused
            .iter()
            .all(|e| e.actor == "bob" && e.outcome == pedm_core::audit::Outcome::Denied)
    );
    let (still, _) = w.cp.get_request(&Actor::system(), req.id).await.unwrap();
    assert_eq!(still.state, RequestState::Pending, "nothing changed");

    // With it, the same decision path as the API.
    let r = w
        .post(
            &path,
            &bob,
            &format!("decision=approve&comment=fine&csrf={csrf}"),
            &[],
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let (done, approvals) = w.cp.get_request(&Actor::system(), req.id).await.unwrap();
    assert_eq!(done.state, RequestState::Approved);
    assert_eq!(approvals[0].approver, "bob");
    assert_eq!(approvals[0].comment.as_deref(), Some("fine"));
    assert_eq!(w.events("request.approved").await[0].actor, "bob");

    // Her next request (after that grant's 10 minutes) shows the approver what came before.
    w.clock.advance(SignedDuration::from_mins(11));
    w.cp.expire_due().await.unwrap();
    let again = w.ask("alice").await;
    let page = body(w.get(&format!("/ui/requests/{}", again.id), &bob).await).await;
    assert!(
        page.contains(
            "In 90 days: 1 earlier request (1 approved, 0 denied), 1 for this role; \
             0 sessions recorded; last granted"
        ),
        "{page}"
    );
}

#[tokio::test]
async fn a_non_approver_neither_sees_nor_decides_anothers_request() {
    let w = world().await;
    let req = w.ask("alice").await;
    let carol = w.sign_in("carol").await;
    let inbox = body(w.get("/ui/inbox", &carol).await).await;
    assert!(inbox.contains("Nothing waits for you"), "{inbox}");
    assert!(!inbox.contains(&req.id.to_string()));
    let page = w.get(&format!("/ui/requests/{}", req.id), &carol).await;
    assert_eq!(page.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        w.approve(&carol, req.id).await.status(),
        StatusCode::FORBIDDEN
    );
    // The requester cannot approve their own either.
    let alice = w.sign_in("alice").await;
    assert_eq!(
        w.approve(&alice, req.id).await.status(),
        StatusCode::FORBIDDEN
    );
    let (still, _) = w.cp.get_request(&Actor::system(), req.id).await.unwrap();
    assert_eq!(still.state, RequestState::Pending);
}

#[tokio::test]
async fn sign_out_idle_and_absolute_timeouts_end_the_session_and_its_token() {
    let w = world().await;
    // Sign out: the cookie is cleared and the token behind it no longer works anywhere.
    let c = w.sign_in("alice").await;
    let csrf = csrf_of(&w, &c).await;
    let r = w
        .post("/ui/sign-out", &c, &format!("csrf={csrf}"), &[])
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(
        r.headers()[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    assert_eq!(
        w.get("/ui/access", &c).await.status(),
        StatusCode::SEE_OTHER
    );
    assert!(
        w.cp.authenticate(&c, None).await.is_err(),
        "the API refuses it too"
    );
    assert_eq!(w.events("console.sign_out").await.len(), 1);

    // Idle: used within 15 minutes it lives on; left alone for longer it is over.
    let c = w.sign_in("alice").await;
    for _ in 0..4 {
        w.clock.advance(SignedDuration::from_mins(10));
        assert_eq!(w.get("/ui/access", &c).await.status(), StatusCode::OK);
    }
    w.clock.advance(SignedDuration::from_mins(16));
    let r = w.get("/ui/access", &c).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()[header::LOCATION], "/ui/sign-in");
    assert!(w.cp.authenticate(&c, None).await.is_err());
    let ev = w.events("console.session_timed_out").await;
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].outcome, pedm_core::audit::Outcome::Denied);

    // Absolute: an hour after sign-in, however busy.
    let c = w.sign_in("alice").await;
    for _ in 0..5 {
        w.clock.advance(SignedDuration::from_mins(10));
        assert_eq!(w.get("/ui/access", &c).await.status(), StatusCode::OK);
    }
    w.clock.advance(SignedDuration::from_mins(11));
    assert_eq!(
        w.get("/ui/access", &c).await.status(),
        StatusCode::SEE_OTHER
    );

    // An API token in the cookie is not a console session.
    let api = w.token("alice").await;
    assert_eq!(
        w.get("/ui/access", &api).await.status(),
        StatusCode::SEE_OTHER
    );
}

/// More pending requests than any one read used to return: the inbox still starts with the
/// oldest, pages through all of them, and says how many wait.
#[tokio::test]
async fn the_inbox_pages_through_every_pending_request_oldest_first() {
    let w = world().await;
    let sys = Actor::system();
    let n = 1_010;
    let mut first = None;
    for i in 0..n {
        let name = format!("u{i}");
        w.cp.create_user(&sys, &name, None, None, false)
            .await
            .unwrap();
        let r = w.ask(&name).await;
        first.get_or_insert(r.id);
        w.clock.advance(SignedDuration::from_millis(10));
    }
    let bob = w.sign_in("bob").await;
    let page = body(w.get("/ui/inbox", &bob).await).await;
    assert!(
        page.contains(&format!("1–50 of {n} waiting")),
        "{}",
        &page[..page.len().min(2000)]
    );
    let oldest = page
        .find(&first.unwrap().to_string())
        .expect("the oldest is on page one");
    // Its card is the first one (the card's own opening tag precedes its id).
    assert_eq!(
        page[..oldest].matches("<li class=\"card").count(),
        1,
        "and comes first"
    );
    let last = body(w.get("/ui/inbox?page=20", &bob).await).await;
    assert!(last.contains(&format!("1001–{n} of {n} waiting")), "{last}");
    assert!(!last.contains("id=\"next\""));
}

/// A grant's one-time secret is revealed to its holder once, by a POST, and never again.
#[tokio::test]
async fn a_grants_secret_is_revealed_once_to_its_holder() {
    let w = world().await;
    let req = w.ask("alice").await;
    let bob = w.sign_in("bob").await;
    assert_eq!(
        w.approve(&bob, req.id).await.status(),
        StatusCode::SEE_OTHER
    );
    let csrf = csrf_of(&w, &bob).await;
    let (done, _) = w.cp.get_request(&Actor::system(), req.id).await.unwrap();
    let grant = done.grant_id.expect("granted");
    w.cp.store()
        .commit(
            pedm_core::store::Changeset::new().write(pedm_core::store::Write::PutGrantSecret {
                grant_id: grant,
                secret: "s3cr<et>&".into(),
            }),
        )
        .await
        .unwrap();
    // Not the holder: refused, and the secret stays.
    let r = w
        .post(
            &format!("/ui/grants/{grant}/secret"),
            &bob,
            &format!("csrf={csrf}"),
            &[],
        )
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let alice = w.sign_in("alice").await;
    let csrf = csrf_of(&w, &alice).await;
    let page = body(
        w.post(
            &format!("/ui/grants/{grant}/secret"),
            &alice,
            &format!("csrf={csrf}"),
            &[],
        )
        .await,
    )
    .await;
    assert!(
        page.contains("<pre id=\"secret\">s3cr&#60;et&#62;&#38;</pre>"),
        "{page}"
    );
    let again = body(
        w.post(
            &format!("/ui/grants/{grant}/secret"),
            &alice,
            &format!("csrf={csrf}"),
            &[],
        )
        .await,
    )
    .await;
    assert!(again.contains("No secret waits for this grant"), "{again}");
    let reads = w.events("grant.secret_read").await;
    let outcomes: Vec<_> = reads
        .iter()
        .map(|e| (e.actor.as_str(), e.outcome))
        .collect();
    use pedm_core::audit::Outcome;
    assert_eq!(
        outcomes,
        [("bob", Outcome::Denied), ("alice", Outcome::Success)]
    );
}

/// Delegations: the delegate sees one given to them, with what it passes on; one passed on
/// shows what it was narrowed from; the delegator revokes it in the page (a reason is
/// required), which ends the one passed on from it too.
#[tokio::test]
async fn delegations_are_listed_with_their_attenuation_and_revoked_with_a_reason() {
    use pedm_core::delegation::{DelegateKind, Delegatee};
    use pedm_core::service::NewDelegation;
    let w = world().await;
    let bob =
        w.cp.authenticate(&w.token("bob").await, None)
            .await
            .unwrap();
    let until = w.cp.now() + SignedDuration::from_hours(4);
    let to = |name: &str| Delegatee {
        kind: DelegateKind::User,
        name: name.into(),
    };
    let d =
        w.cp.create_delegation(
            &bob,
            NewDelegation {
                parent: None,
                delegate: to("alice"),
                tasks: vec![],
                roles: vec!["root".into()],
                scope: vec!["web1".into()],
                expires_at: until,
                redelegate: true,
                reason: Some("on call this week".into()),
            },
        )
        .await
        .unwrap();
    let alice =
        w.cp.authenticate(&w.token("alice").await, None)
            .await
            .unwrap();
    let passed =
        w.cp.create_delegation(
            &alice,
            NewDelegation {
                parent: Some(d.id),
                delegate: to("carol"),
                tasks: vec![],
                roles: vec!["root".into()],
                scope: vec!["web1".into()],
                expires_at: until - SignedDuration::from_hours(2),
                redelegate: false,
                reason: Some("covering tonight".into()),
            },
        )
        .await
        .unwrap();
    let carol = w.sign_in("carol").await;
    let page = body(w.get("/ui/delegations", &carol).await).await;
    assert!(page.contains("alice → user carol"), "{page}");
    // Carol learns where hers came from, not what bob gave alice.
    assert!(
        page.contains(&format!("Passed on from {}</p>", d.id)),
        "{page}"
    );
    // Alice, who passed it on, sees both: how much narrower it is.
    let alices = w.sign_in("alice").await;
    let page = body(w.get("/ui/delegations", &alices).await).await;
    assert!(
        page.contains(&format!(
            "Passed on from {} (from bob: roles root; may pass on; scope web1)",
            d.id
        )),
        "{page}"
    );
    // Carol may not revoke what bob gave alice; bob revokes, but not without a reason.
    let bobs = w.sign_in("bob").await;
    let csrf = csrf_of(&w, &bobs).await;
    let path = format!("/ui/delegations/{}/revoke", d.id);
    let r = w
        .post(&path, &bobs, &format!("csrf={csrf}&reason="), &[])
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(body(r).await.contains("reason"));
    let r = w
        .post(
            &path,
            &bobs,
            &format!("csrf={csrf}&reason=rotation+ended"),
            &[],
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let page = body(w.get("/ui/delegations", &carol).await).await;
    assert!(
        page.contains(&format!(
            "id=\"delegation-{}\" data-state=\"revoked\"",
            passed.id
        )),
        "what was passed on ends with it: {page}"
    );
}

/// My access: the holder asks for more time on a grant; it is an extension request that
/// approvers decide (the role needs approval here), and approving it moves the expiry.
#[tokio::test]
async fn a_grant_is_extended_from_my_access() {
    let w = world().await;
    let req = w.ask("alice").await;
    let bob = w.sign_in("bob").await;
    assert_eq!(
        w.approve(&bob, req.id).await.status(),
        StatusCode::SEE_OTHER
    );
    let (done, _) = w.cp.get_request(&Actor::system(), req.id).await.unwrap();
    let grant = done.grant_id.expect("granted");
    let before = w.cp.get_grant(&Actor::system(), grant).await.unwrap();
    let alice = w.sign_in("alice").await;
    let page = body(w.get("/ui/access", &alice).await).await;
    assert!(page.contains(&format!("id=\"extend-{grant}\"")), "{page}");
    let csrf = csrf_of(&w, &alice).await;
    let path = format!("/ui/grants/{grant}/extend");
    let extend = |form: String| {
        let (w, path, alice) = (&w, &path, &alice);
        async move { w.post(path, alice, &form, &[]).await }
    };
    // Without the session's CSRF token: refused, nothing asked.
    let r = extend("by=10m&justification=more".into()).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = extend(format!("csrf={csrf}&by=ten&justification=more")).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = extend(format!(
        "csrf={csrf}&by=10m&justification=the+reboot+takes+long"
    ))
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let to = r.headers()[header::LOCATION].to_str().unwrap().to_string();
    let ext: uuid::Uuid = to.trim_start_matches("/ui/requests/").parse().unwrap();
    let (asked, _) = w.cp.get_request(&Actor::system(), ext).await.unwrap();
    assert_eq!(asked.context.extends, Some(grant));
    assert_eq!(asked.state, pedm_core::model::RequestState::Pending);
    assert_eq!(w.approve(&bob, ext).await.status(), StatusCode::SEE_OTHER);
    let after = w.cp.get_grant(&Actor::system(), grant).await.unwrap();
    assert_eq!(
        after.expires_at,
        before.expires_at + jiff::SignedDuration::from_mins(10)
    );
}
