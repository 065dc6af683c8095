//! The pages of admins and auditors, in process through the console's HTTP interface: every
//! pending request, reports of drift and standing privilege, delegations given in the page,
//! people and groups managed there. Each change goes through the same core call as the API.

mod common;

use axum::http::StatusCode;
use common::*;
use jiff::SignedDuration;
use pedm_core::model::*;
use std::sync::Arc;

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

/// Targets, roles and tokens are made in the page through the same core calls as the API:
/// recorded as the admin, bad input refused naming the problem with nothing made, a token
/// shown once and working, nothing for non-admins.
#[tokio::test]
async fn admins_make_targets_roles_and_tokens_in_the_page() {
    let w = world().await;
    let bob = w.sign_in("bob").await;
    let csrf = csrf_of(&w, &bob).await;
    let page = body(w.get("/ui/admin", &bob).await).await;
    assert!(page.contains("id=\"register-web1\""), "{page}");
    let targets = |w: &World| {
        let cp = w.cp.clone();
        async move { cp.list_targets().await.unwrap() }
    };
    // Bad kind, bad labels: each named, nothing made.
    for (form, says) in [
        ("name=db1&kind=mainframe", "one of host, postgres"),
        (
            "name=db1&kind=postgres&labels=env%3Dprod%0Aoops",
            "line 2 is not key=value",
        ),
        (
            "name=db1&kind=postgres&labels=a%3D1%0Aa%3D2",
            "\"a\" is given twice",
        ),
        ("name=%3Cdb%3E&kind=postgres", "target"),
    ] {
        let r = w
            .post(
                "/ui/admin/targets",
                &bob,
                &format!("csrf={csrf}&{form}"),
                &[],
            )
            .await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{form}");
        let text = body(r).await;
        assert!(text.contains(&says.replace('"', "&#34;")), "{form}: {text}");
    }
    assert_eq!(targets(&w).await.len(), 1, "only web1");
    let r = w.post("/ui/admin/targets", &bob, &format!("csrf={csrf}&name=db1&kind=postgres&description=orders&labels=env%3Dprod%0D%0Ateam%3Ddata"), &[])
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "{}", body(r).await);
    let db1 = targets(&w)
        .await
        .into_iter()
        .find(|t| t.name == "db1")
        .unwrap();
    assert_eq!(db1.kind, TargetKind::Postgres);
    assert_eq!(db1.labels.get("env").map(String::as_str), Some("prod"));
    assert_eq!(db1.labels.get("team").map(String::as_str), Some("data"));

    // A role on it; a duration that is none is named.
    let r = w
        .post(
            "/ui/admin/roles",
            &bob,
            &format!("csrf={csrf}&target=db1&name=readonly&max_duration=forever"),
            &[],
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(body(r).await.contains("max_duration"));
    let r = w.post("/ui/admin/roles", &bob, &format!(
            "csrf={csrf}&target=db1&name=readonly&max_duration=2h&auto_approve=yes&record_input=yes"
        ), &[])
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "{}", body(r).await);
    let (_, roles) = w.cp.get_target("db1").await.unwrap();
    assert_eq!(roles.len(), 1);
    assert_eq!(roles[0].name, "readonly");
    assert_eq!(roles[0].max_duration_secs, 7200);
    assert!(roles[0].auto_approve && roles[0].record_input && !roles[0].noexec);
    let page = body(w.get("/ui/admin", &bob).await).await;
    assert!(
        page.contains("readonly (up to 2h, auto-approved)"),
        "{page}"
    );

    // A token for alice, shown once in the answer and working as hers.
    let r = w
        .post(
            "/ui/admin/tokens",
            &bob,
            &format!("csrf={csrf}&user=alice&description=ci&expires_in=1d"),
            &[],
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers()
            .get("cache-control")
            .map(|v| v.to_str().unwrap()),
        Some("no-store")
    );
    let page = body(r).await;
    let start = page.find("<pre id=\"minted-secret\">").unwrap() + 24;
    let token = &page[start..start + page[start..].find('<').unwrap()];
    let actor = w.cp.authenticate(token, None).await.unwrap();
    assert_eq!(actor.user, "alice");
    let tokens =
        w.cp.list_tokens(&Actor::system(), Some("alice"))
            .await
            .unwrap();
    let minted = tokens.iter().find(|t| token.contains(&t.id)).unwrap();
    assert_eq!(minted.description.as_deref(), Some("ci"));
    assert_eq!(
        minted.expires_at.unwrap().duration_since(minted.created_at),
        SignedDuration::from_hours(24)
    );
    let r = w
        .post(
            "/ui/admin/tokens",
            &bob,
            &format!("csrf={csrf}&user=alice&expires_in=soon"),
            &[],
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(body(r).await.contains("expires_in"));
    // Without the agents' hub (this world has none) a host cannot be registered: said so.
    let r = w
        .post(
            "/ui/admin/hosts/web1/register",
            &bob,
            &format!("csrf={csrf}"),
            &[],
        )
        .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    for action in ["target.created", "role.created", "token.created"] {
        let ev = w.events(action).await;
        assert!(ev.iter().any(|e| e.actor == "bob"), "{action}: {ev:?}");
    }

    // Not an admin: refused and recorded, nothing made.
    let carol = w.sign_in("carol").await;
    let csrf = csrf_of(&w, &carol).await;
    let r = w
        .post(
            "/ui/admin/targets",
            &carol,
            &format!("csrf={csrf}&name=db2&kind=postgres"),
            &[],
        )
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = w
        .post(
            "/ui/admin/tokens",
            &carol,
            &format!("csrf={csrf}&user=alice"),
            &[],
        )
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(targets(&w).await.iter().all(|t| t.name != "db2"));
    for action in ["target.create", "token.create"] {
        let ev = w.events(action).await;
        assert!(ev.iter().any(|e| e.actor == "carol"), "{action}: {ev:?}");
    }
    // A forged post without the session's CSRF token makes nothing.
    let r = w
        .post("/ui/admin/targets", &bob, "name=db3&kind=postgres", &[])
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(targets(&w).await.iter().all(|t| t.name != "db3"));
}
