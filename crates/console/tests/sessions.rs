//! The console's sessions and form protection through its HTTP interface, in process, with a
//! manual clock (so the idle and absolute timeouts are tested without waiting): sign-in by
//! token, cookie flags, security headers, CSRF and cross-site refusals (recorded, nothing
//! changed), another person's request out of reach, sign-out, idle and absolute timeouts.

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, Response, StatusCode, header};
use jiff::{SignedDuration, Timestamp};
use pedm_console::{Console, LiveChanges, Settings};
use pedm_core::clock::ManualClock;
use pedm_core::decision::BuiltinDecider;
use pedm_core::model::*;
use pedm_core::service::{ControlPlane, Limits, NewRequest, NewRole, TokenLifetime};
use pedm_core::store::AuditFilter;
use pedm_store::SqliteStore;
use std::net::SocketAddr;
use std::sync::Arc;
use tower::ServiceExt;

struct World {
    cp: Arc<ControlPlane>,
    clock: Arc<ManualClock>,
    app: axum::Router,
    _dir: tempfile::TempDir,
}

async fn world() -> World {
    world_with(|cp| cp).await
}

/// A world whose control plane `setup` may extend (a provisioning port, ...).
async fn world_with(setup: impl FnOnce(ControlPlane) -> ControlPlane) -> World {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        SqliteStore::open(&dir.path().join("pedm.db"))
            .await
            .unwrap(),
    );
    let clock = Arc::new(ManualClock::new(
        Timestamp::from_second(1_800_000_000).unwrap(),
    ));
    let live = Arc::new(LiveChanges::default());
    let cp = Arc::new(setup(
        ControlPlane::new(
            store,
            Arc::new(BuiltinDecider),
            clock.clone(),
            Limits::default(),
        )
        .with_observer(live.clone()),
    ));
    let sys = Actor::system();
    for (u, admin) in [("alice", false), ("bob", true), ("carol", false)] {
        cp.create_user(&sys, u, None, None, admin).await.unwrap();
    }
    cp.create_target(&sys, "web1", TargetKind::Host, None, Default::default())
        .await
        .unwrap();
    cp.create_role(
        &sys,
        NewRole {
            target: "web1".into(),
            name: "root".into(),
            description: None,
            max_duration_secs: 3600,
            auto_approve: false,
            run_as: Some("root".into()),
            noexec: false,
            allow_setuid: false,
            record_input: false,
            intercept: false,
            limits: Default::default(),
            watch_paths: vec![],
            ssh: Default::default(),
        },
    )
    .await
    .unwrap();
    let settings = Settings {
        idle_secs: 15 * 60,
        session_secs: 3600,
        public_url: None,
    };
    let app = Console::new(cp.clone(), settings, live).router();
    World {
        cp,
        clock,
        app,
        _dir: dir,
    }
}

impl World {
    async fn token(&self, user: &str) -> String {
        self.cp
            .create_token(&Actor::system(), Some(user), None, TokenLifetime::Default)
            .await
            .unwrap()
            .1
    }

    async fn send(&self, req: Request<Body>) -> Response<Body> {
        let mut req = req;
        req.extensions_mut()
            .insert(ConnectInfo(SocketAddr::from(([192, 0, 2, 7], 40000))));
        self.app.clone().oneshot(req).await.unwrap()
    }

    async fn get(&self, path: &str, cookie: &str) -> Response<Body> {
        self.send(
            Request::get(path)
                .header(header::COOKIE, format!("__Host-pedm_session={cookie}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
    }

    async fn post(
        &self,
        path: &str,
        cookie: &str,
        form: &str,
        extra: &[(&str, &str)],
    ) -> Response<Body> {
        let mut b = Request::post(path)
            .header(header::COOKIE, format!("__Host-pedm_session={cookie}"))
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        for (k, v) in extra {
            b = b.header(*k, *v);
        }
        self.send(b.body(Body::from(form.to_string())).unwrap())
            .await
    }

    /// Approves request `id` through the page with the session's CSRF token.
    async fn approve(&self, cookie: &str, id: uuid::Uuid) -> Response<Body> {
        let csrf = csrf_of(self, cookie).await;
        let path = format!("/ui/requests/{id}/decide");
        self.post(&path, cookie, &format!("decision=approve&csrf={csrf}"), &[])
            .await
    }

    /// Signs in with `user`'s token; returns the session cookie's value.
    async fn sign_in(&self, user: &str) -> String {
        let t = self.token(user).await;
        let r = self
            .send(
                Request::post("/ui/sign-in")
                    .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .body(Body::from(format!("token={t}")))
                    .unwrap(),
            )
            .await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        let set = r.headers()[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .to_string();
        let value = set
            .strip_prefix("__Host-pedm_session=")
            .and_then(|v| v.split(';').next())
            .unwrap()
            .to_string();
        assert_ne!(value, t, "the session is a new token, not the pasted one");
        value
    }

    async fn events(&self, action: &str) -> Vec<pedm_core::audit::AuditEvent> {
        self.cp
            .audit_events(
                &Actor::system(),
                AuditFilter {
                    action: Some(action.into()),
                    ..Default::default()
                },
            )
            .await
            .unwrap()
    }

    async fn ask(&self, user: &str) -> pedm_core::model::Request {
        let actor = self
            .cp
            .authenticate(&self.token(user).await, None)
            .await
            .unwrap();
        self.cp
            .create_request(
                &actor,
                NewRequest {
                    target: "web1".into(),
                    role: "root".into(),
                    duration_secs: 600,
                    justification: "rotate the certificate".into(),
                    task: None,
                    ticket: None,
                    break_glass: false,
                    starts_at: None,
                },
                Default::default(),
            )
            .await
            .unwrap()
            .0
    }
}

async fn body(r: Response<Body>) -> String {
    String::from_utf8(
        axum::body::to_bytes(r.into_body(), 1 << 20)
            .await
            .unwrap()
            .to_vec(),
    )
    .unwrap()
}

async fn csrf_of(w: &World, cookie: &str) -> String {
    let page = body(w.get("/ui/access", cookie).await).await;
    let at = page.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    page[at..at + 64].to_string()
}

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

/// Admins (and auditors) may view every pending request, deciding only those they may; for
/// anyone else that view is refused and recorded.
#[tokio::test]
async fn admins_view_all_pending_and_decide_only_what_is_theirs_to_decide() {
    let w = world().await;
    let alices = w.ask("alice").await;
    w.clock.advance(SignedDuration::from_secs(1));
    let bobs = w.ask("bob").await;
    let bob = w.sign_in("bob").await;
    let inbox = body(w.get("/ui/inbox", &bob).await).await;
    assert!(inbox.contains(&alices.id.to_string()), "{inbox}");
    assert!(
        !inbox.contains(&bobs.id.to_string()),
        "his own is not his to decide"
    );
    assert!(inbox.contains("href=\"/ui/inbox?all=true\""), "{inbox}");
    let all = body(w.get("/ui/inbox?all=true", &bob).await).await;
    assert!(all.contains("All pending requests"), "{all}");
    assert!(all.contains("1–2 of 2 waiting"), "{all}");
    assert!(
        all.contains(&format!("id=\"approve-{}\"", alices.id)),
        "{all}"
    );
    assert!(
        !all.contains(&format!("id=\"approve-{}\"", bobs.id)),
        "{all}"
    );
    assert!(
        all.contains(&format!("id=\"not-yours-{}\"", bobs.id)),
        "{all}"
    );
    // Oldest first.
    assert!(all.find(&alices.id.to_string()) < all.find(&bobs.id.to_string()));
    let live = body(w.get("/ui/inbox/live?all=true", &bob).await).await;
    assert!(live.contains(&bobs.id.to_string()), "{live}");

    let carol = w.sign_in("carol").await;
    let mine = body(w.get("/ui/inbox", &carol).await).await;
    assert!(
        !mine.contains("all-pending"),
        "no link for those who may not"
    );
    let refused = w.get("/ui/inbox?all=true", &carol).await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let page = body(refused).await;
    assert!(!page.contains(&alices.id.to_string()));
    let ev = w.events("request.list").await;
    assert!(
        ev.iter().any(|e| e.actor == "carol"
            && e.outcome == pedm_core::audit::Outcome::Denied
            && e.data.to_string().contains("every pending request")),
        "{ev:?}"
    );
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

/// Targets as a provisioner sees them: `db` holds what `standing` says; `db2` cannot be read.
struct Targets {
    standing: Vec<StandingPrivilege>,
}

#[async_trait::async_trait]
impl pedm_core::provisioning::ProvisioningPort for Targets {
    fn handles(&self, target: &str) -> bool {
        target == "db" || target == "db2"
    }
    fn targets(&self) -> Vec<String> {
        vec!["db".into(), "db2".into()]
    }
    async fn grant(
        &self,
        _: &Grant,
        _: Option<&str>,
    ) -> Result<pedm_core::provisioning::Provisioned, pedm_core::provisioning::ProvisionFailure>
    {
        Ok(Default::default())
    }
    async fn revoke(
        &self,
        _: &Grant,
        _: Option<&str>,
    ) -> Result<(), pedm_core::provisioning::ProvisionFailure> {
        Ok(())
    }
    async fn discover(
        &self,
        target: &str,
    ) -> Result<Vec<StandingPrivilege>, pedm_core::provisioning::ProvisionFailure> {
        match target {
            "db" => Ok(self.standing.clone()),
            _ => Err(pedm_core::provisioning::ProvisionFailure {
                kind: pedm_core::provisioning::FailureKind::Unreachable,
                message: "connection refused".into(),
            }),
        }
    }
}

/// The reports page lists the standing privileges the targets hold now and the drift found
/// in the window, names escaped, a target that cannot be read said so; for auditors only.
#[tokio::test]
async fn reports_show_standing_privilege_and_drift() {
    let standing = |account: &str, privilege: &str| StandingPrivilege {
        account: account.into(),
        privilege: privilege.into(),
        source: "pg_roles".into(),
    };
    let port = Targets {
        standing: vec![
            standing("postgres", "superuser"),
            standing("mallory", "member:readwrite"),
            standing("<b>x</b>", "superuser"),
        ],
    };
    let w = world_with(|cp| cp.with_provisioning(Arc::new(port))).await;
    // One reconciliation pass reports each finding as drift.
    assert_eq!(w.cp.reconcile(&mut Default::default()).await.unwrap(), 3);
    let bob = w.sign_in("bob").await;
    let page = body(w.get("/ui/reports", &bob).await).await;
    let table = |id: &str| {
        let start = page
            .find(&format!("id=\"{id}\""))
            .unwrap_or_else(|| panic!("{id}: {page}"));
        let end = start + page[start..].find("</table>").unwrap();
        page[start..end].to_string()
    };
    let listed = table("standing-privileges");
    for row in [
        "<td>db</td><td>postgres</td><td>superuser</td>",
        "<td>mallory</td><td>member:readwrite</td>",
    ] {
        assert!(listed.contains(row), "{row} in {listed}");
    }
    assert!(
        listed.contains("&#60;b&#62;x&#60;/b&#62;") && !listed.contains("<b>x"),
        "{listed}"
    );
    assert!(page.contains("<dd id=\"standing-count\">3</dd>"), "{page}");
    assert!(
        page.contains("Target db2 could not be read: connection refused"),
        "{page}"
    );
    let drift = table("drift-findings");
    assert!(
        drift.contains("<td>mallory</td><td>member:readwrite</td><td>reported</td>"),
        "{drift}"
    );
    assert!(page.contains("<dd id=\"drift-count\">3</dd>"), "{page}");
    // Outside the window, the drift is gone from the report; the standing privileges are not.
    w.clock.advance(SignedDuration::from_hours(24 * 8));
    let bob = w.sign_in("bob").await;
    let later = body(w.get("/ui/reports?days=7", &bob).await).await;
    assert!(later.contains("id=\"no-drift\""), "{later}");
    assert!(later.contains("<dd id=\"standing-count\">3</dd>"));

    let carol = w.sign_in("carol").await;
    assert_eq!(
        w.get("/ui/reports", &carol).await.status(),
        StatusCode::FORBIDDEN
    );
}

/// A delegation is given in the page and passed on from there, through the same rules as the
/// API: what the page sends is checked by the core (a bad duration or a widening is refused and
/// nothing is made).
#[tokio::test]
async fn a_delegation_is_given_and_passed_on_in_the_page() {
    let w = world().await;
    let bob = w.sign_in("bob").await;
    let csrf = csrf_of(&w, &bob).await;
    let page = body(w.get("/ui/delegations", &bob).await).await;
    assert!(page.contains("id=\"give-submit\""), "{page}");
    let give = |cookie: &str, form: String| {
        let cookie = cookie.to_string();
        let w = &w;
        async move { w.post("/ui/delegations", &cookie, &form, &[]).await }
    };
    // A duration pedm cannot read names the field; nothing is made.
    let r = give(
        &bob,
        format!("csrf={csrf}&to_kind=user&to=alice&roles=root&scope=web1&for=soon&reason=x"),
    )
    .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(body(r).await.contains("invalid for"));
    let sys = Actor::system();
    assert!(w.cp.list_delegations(&sys, true).await.unwrap().is_empty());
    let r = give(
        &bob,
        format!(
            "csrf={csrf}&to_kind=user&to=alice&roles=root&scope=web1&for=4h&redelegate=yes\
             &reason=on+call+%3Cb%3Ethis%3C%2Fb%3E+week"
        ),
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "{}", body(r).await);
    let given = w.cp.list_delegations(&sys, true).await.unwrap();
    assert_eq!(given.len(), 1);
    let d = &given[0];
    assert_eq!(
        (
            d.delegator.as_str(),
            d.delegate.name.as_str(),
            &d.roles,
            d.redelegate
        ),
        ("bob", "alice", &vec!["root".to_string()], true)
    );
    assert_eq!(d.expires_at, w.cp.now() + SignedDuration::from_hours(4));
    let ev = w.events("delegation.created").await;
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0].actor, "bob");

    // alice may pass it on, narrower only: the page offers hers as the parent.
    let alice = w.sign_in("alice").await;
    let page = body(w.get("/ui/delegations", &alice).await).await;
    assert!(
        page.contains(&format!("<option value=\"{}\">", d.id)),
        "{page}"
    );
    assert!(
        page.contains("on call &#60;b&#62;this&#60;/b&#62; week"),
        "{page}"
    );
    let csrf = csrf_of(&w, &alice).await;
    let wider = give(
        &alice,
        format!(
            "csrf={csrf}&to_kind=user&to=carol&roles=root&scope=web2&for=1h&parent={}",
            d.id
        ),
    )
    .await;
    assert!(
        wider.status().is_client_error(),
        "passing on more than was given: {}",
        wider.status()
    );
    let narrower = give(
        &alice,
        format!(
            "csrf={csrf}&to_kind=user&to=carol&roles=root&scope=web1&for=1h&parent={}",
            d.id
        ),
    )
    .await;
    assert_eq!(narrower.status(), StatusCode::SEE_OTHER);
    let all = w.cp.list_delegations(&sys, true).await.unwrap();
    assert!(
        all.iter()
            .any(|x| x.parent == Some(d.id) && x.delegate.name == "carol"),
        "{all:?}"
    );
    // Without the session's CSRF token, nothing is given.
    let forged = give(
        &alice,
        "csrf=wrong&to_kind=user&to=mallory&roles=root&scope=web1&for=1h".into(),
    )
    .await;
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    assert_eq!(w.cp.list_delegations(&sys, true).await.unwrap().len(), 2);
}

/// People and groups are managed in the page through the same core calls as the API:
/// recorded as the admin, bad input refused naming the problem, nothing for non-admins.
#[tokio::test]
async fn admins_manage_people_and_groups_in_the_page() {
    let w = world().await;
    let bob = w.sign_in("bob").await;
    let csrf = csrf_of(&w, &bob).await;
    let post = |cookie: &str, path: &str, form: String| {
        let (cookie, path) = (cookie.to_string(), path.to_string());
        let w = &w;
        async move { w.post(&path, &cookie, &form, &[]).await }
    };
    let sys = Actor::system();
    // A new person, their name hostile markup: refused as a user name, nothing made.
    let r = post(
        &bob,
        "/ui/admin/users",
        format!("csrf={csrf}&name=%3Cb%3Edave"),
    )
    .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(body(r).await.contains("user"));
    assert!(
        w.cp.list_users(&sys)
            .await
            .unwrap()
            .iter()
            .all(|u| u.name != "dave")
    );
    let r = post(
        &bob,
        "/ui/admin/users",
        format!(
            "csrf={csrf}&name=dave&display_name=%3Cscript%3Ex%3C%2Fscript%3E&email=dave%40example.com"
        ),
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "{}", body(r).await);
    let page = body(w.get("/ui/admin", &bob).await).await;
    assert!(page.contains("id=\"user-dave\""), "{page}");
    assert!(
        page.contains("&#60;script&#62;x&#60;/script&#62;"),
        "{page}"
    );
    assert!(!page.contains("<script>x"), "{page}");
    // Changed: disabled, another address; an unknown choice changes nothing.
    let r = post(
        &bob,
        "/ui/admin/users/dave",
        format!("csrf={csrf}&admin=maybe"),
    )
    .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = post(
        &bob,
        "/ui/admin/users/dave",
        format!("csrf={csrf}&admin=keep&state=disabled&email=d%40example.com"),
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let dave =
        w.cp.list_users(&sys)
            .await
            .unwrap()
            .into_iter()
            .find(|u| u.name == "dave")
            .unwrap();
    assert!(dave.disabled);
    assert!(!dave.admin);
    assert_eq!(dave.email.as_deref(), Some("d@example.com"));
    // A group with a member, then without.
    let r = post(
        &bob,
        "/ui/admin/groups",
        format!("csrf={csrf}&name=ops&description=on+call"),
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let r = post(
        &bob,
        "/ui/admin/groups/ops/members",
        format!("csrf={csrf}&user=alice"),
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let page = body(w.get("/ui/admin", &bob).await).await;
    assert!(page.contains("id=\"remove-ops-alice\""), "{page}");
    let group = |w: &World| {
        let cp = w.cp.clone();
        async move {
            cp.list_groups(&Actor::system())
                .await
                .unwrap()
                .into_iter()
                .find(|g| g.name == "ops")
                .unwrap()
        }
    };
    assert_eq!(group(&w).await.members, ["alice"]);
    let r = post(
        &bob,
        "/ui/admin/groups/ops/members/alice/remove",
        format!("csrf={csrf}"),
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(group(&w).await.members.is_empty());
    for action in ["user.created", "user.updated", "group.created"] {
        let ev = w.events(action).await;
        assert!(ev.iter().any(|e| e.actor == "bob"), "{action}: {ev:?}");
    }

    // Not an admin: refused and recorded, nothing made.
    let carol = w.sign_in("carol").await;
    let csrf = csrf_of(&w, &carol).await;
    let r = post(
        &carol,
        "/ui/admin/users",
        format!("csrf={csrf}&name=eve&admin=yes"),
    )
    .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(
        w.cp.list_users(&sys)
            .await
            .unwrap()
            .iter()
            .all(|u| u.name != "eve")
    );
    let ev = w.events("user.create").await;
    assert!(ev.iter().any(|e| e.actor == "carol"), "{ev:?}");
}
