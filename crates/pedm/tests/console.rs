//! The web console end to end: pedmd serving `/ui/`, driven by Debian's real Chromium
//! (tests skip with the reason printed where it is not installed), and its security checked
//! with a plain HTTP client.

mod common;

use common::browser::{Driver, XSS, check_page, sign_in, start_console, wait_for, wait_until};
use common::*;
use fantoccini::Locator;
use pedm_api::RequestState;

/// A requester asks in one browser, an approver approves in another, the requester's page
/// updates without a reload, the grant counts down and ends on screen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_approved_in_another_browser_updates_live_and_expires_on_screen() {
    let Some((driver, s, alice)) = start_console().await else {
        return;
    };
    let bob = user_with_token(&s, "bob", true).await;

    let requester = driver.browser("alice", 1280).await;
    let approver = driver.browser("bob", 390).await; // a phone's width
    // The accessibility check can fail: an unlabelled field and an image without text are
    // serious violations to it.
    requester
        .goto("data:text/html,<html lang=en><title>t</title><img src=x><input>")
        .await
        .unwrap();
    let found = common::browser::axe_serious(&requester).await;
    assert!(
        found.iter().any(|v| v.starts_with("image-alt")),
        "{found:?}"
    );
    assert!(found.iter().any(|v| v.starts_with("label")), "{found:?}");
    sign_in(&requester, &s.url, &alice).await;
    sign_in(&approver, &s.url, &bob).await;

    // Ask, previewing first: the page says what policy will do before anything is made.
    requester
        .goto(&format!("{}/ui/request", s.url))
        .await
        .unwrap();
    let role = wait_for(&requester, "#role").await;
    role.select_by_value("web1/root").await.unwrap();
    let duration = requester.find(Locator::Css("#duration")).await.unwrap();
    duration.clear().await.unwrap();
    duration.send_keys("20s").await.unwrap();
    requester
        .find(Locator::Css("#justification"))
        .await
        .unwrap()
        .send_keys(XSS)
        .await
        .unwrap();
    requester
        .find(Locator::Css("#preview"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let preview = wait_for(&requester, "#preview-result").await;
    let text = preview.text().await.unwrap();
    assert!(text.contains("Needs approval: 1 of any approver"), "{text}");
    assert!(text.contains("request-with-approval"), "{text}");
    assert!(
        text.contains("Approvers will see risk") && text.contains("first elevation on web1"),
        "{text}"
    );
    // The form kept what was typed, and nothing was created by the preview.
    assert!(
        s.admin()
            .list_requests(&Default::default())
            .await
            .unwrap()
            .is_empty()
    );
    check_page(&requester, "request-access").await;
    requester
        .find(Locator::Css("#submit"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let state = wait_for(&requester, "#request-state").await;
    assert_eq!(state.text().await.unwrap(), "pending");
    let shown = requester
        .find(Locator::Css("#justification"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(shown, XSS, "the justification is shown as typed, as text");
    check_page(&requester, "request").await;

    // My access, listening for changes; a marker proves the page is never reloaded.
    requester
        .goto(&format!("{}/ui/access", s.url))
        .await
        .unwrap();
    wait_until(
        &requester,
        "the live stream",
        "document.documentElement.dataset.liveConnected",
    )
    .await;
    requester
        .execute("window.__sameDocument = 42; return 0;", vec![])
        .await
        .unwrap();
    assert!(requester.find(Locator::Css("#no-grants")).await.is_ok());

    // The approver's inbox (phone width) shows it, the hostile text inert.
    approver.goto(&format!("{}/ui/inbox", s.url)).await.unwrap();
    let card = wait_for(&approver, "#inbox li").await;
    let card_text = card.text().await.unwrap();
    assert!(
        card_text.contains("alice asks for root on web1"),
        "{card_text}"
    );
    assert!(card_text.contains(XSS), "{card_text}");
    assert!(
        card_text.contains("First request in 90 days."),
        "{card_text}"
    );
    check_page(&approver, "inbox-phone").await;
    let id = card.attr("id").await.unwrap().unwrap();
    let id = id.trim_start_matches("inbox-").to_string();
    approver
        .find(Locator::Css(&format!("#comment-{id}")))
        .await
        .unwrap()
        .send_keys("ok for the certificate rotation")
        .await
        .unwrap();
    approver
        .find(Locator::Css(&format!("#approve-{id}")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let decided = wait_for(&approver, "#request-state").await;
    assert_eq!(decided.text().await.unwrap(), "approved");

    // The requester's page shows the grant without a reload, counting down.
    let row = wait_for(&requester, "#grants tr[data-state=active]").await;
    let same: serde_json::Value = requester
        .execute("return window.__sameDocument;", vec![])
        .await
        .unwrap();
    assert_eq!(same, 42, "the page was updated in place, not reloaded");
    let first = row
        .find(Locator::Css("time"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(first.ends_with("s left"), "{first}");
    wait_until(
        &requester,
        "the countdown to tick",
        &format!("document.querySelector('#grants time').textContent !== {first:?}"),
    )
    .await;
    check_page(&requester, "my-access").await;
    // And it ends on screen: the expiry comes as an event, the row moves to ended grants.
    let ended = wait_for(&requester, "#ended tr[data-state=expired]").await;
    assert!(ended.text().await.unwrap().contains("web1 / root"));
    assert!(requester.find(Locator::Css("#no-grants")).await.is_ok());
    let same: serde_json::Value = requester
        .execute("return window.__sameDocument;", vec![])
        .await
        .unwrap();
    assert_eq!(same, 42);
    // Nothing the requester typed ever ran, in either browser.
    for b in [&requester, &approver] {
        let pwned = b
            .execute("return window.pwned === undefined;", vec![])
            .await
            .unwrap();
        assert_eq!(pwned, true);
    }
    // The same audit trail as the API: approved by bob with the comment.
    let r = s.admin().list_requests(&Default::default()).await.unwrap();
    assert_eq!(r[0].state, RequestState::Approved);
    let ev = audit_of(&s, "request.approved").await;
    assert_eq!(ev[0].actor, "bob");
    requester.close().await.unwrap();
    approver.close().await.unwrap();
}

/// Single sign-on in the browser against the real OpenID provider (`oidc-provider`): the
/// button, the provider's redirects, the callback, a session for the person it vouched for
/// (created just in time); a callback this browser did not start is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sso_sign_in_through_the_real_provider() {
    let Some(driver) = Driver::start().await else {
        return;
    };
    const SECRET: &str = "console-client-secret-0123456789abcdef";
    let idp = common::idp::Idp::start(serde_json::json!({
        "clients": [{
            "client_id": "pedm-console",
            "client_secret": SECRET,
            "application_type": "native",
            "redirect_uris": ["http://127.0.0.1/ui/auth/callback"],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "client_secret_basic",
        }],
        "accounts": {
            "alice": { "preferred_username": "alice", "email": "alice@example.com",
                       "groups": ["ops"] },
        }
    }));
    let port = free_port();
    let s = Server::start_with(Options {
        port: Some(port),
        config: Some(format!(
            r#"
[console]
public_url = "http://127.0.0.1:{port}"

[[auth.oidc]]
name = "corp"
issuer = "{}"
client_id = "pedm-console"
client_secret_env = "PEDM_TEST_OIDC_SECRET"
"#,
            idp.issuer
        )),
        env: vec![("PEDM_TEST_OIDC_SECRET".into(), SECRET.into())],
        ..Default::default()
    });
    idp.admin("login-as", serde_json::json!({ "account": "alice" }))
        .await;
    let b = driver.browser("alice", 1280).await;
    b.goto(&format!("{}/ui/sign-in", s.url)).await.unwrap();
    check_page(&b, "sign-in").await;
    wait_for(&b, "#sso-corp").await.click().await.unwrap();
    let who = wait_for(&b, "#who").await;
    assert_eq!(who.text().await.unwrap(), "alice");
    assert!(
        b.current_url()
            .await
            .unwrap()
            .path()
            .ends_with("/ui/access")
    );
    let ev = audit_of(&s, "console.sign_in").await;
    assert_eq!(ev[0].actor, "alice");
    assert_eq!(ev[0].data["method"], "sso");
    assert_eq!(ev[0].data["provider"], "corp");
    assert_eq!(audit_of(&s, "sso.login").await.len(), 1);

    // A callback this browser never started (a login CSRF, or a stolen code): refused.
    let other = driver.browser("mallory", 1280).await;
    other
        .goto(&format!(
            "{}/ui/auth/callback?code=stolen&state=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            s.url
        ))
        .await
        .unwrap();
    let err = wait_for(&other, "#error").await.text().await.unwrap();
    assert!(err.contains("not started in this browser"), "{err}");
    assert!(other.find(Locator::Css("#who")).await.is_err());
    b.close().await.unwrap();
    other.close().await.unwrap();
}

/// An admin edits a policy in the page, simulates it against what was recorded, applies it
/// and sees its diff; an auditor sees the log verified, filters it, and exports it, and the
/// export verifies offline with the public key alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_applies_a_policy_and_an_auditor_verifies_and_exports() {
    let Some((driver, s, alice)) = start_console().await else {
        return;
    };
    // History to simulate against: an auto-approved request.
    s.client(&alice)
        .create_request(&req("web1", "docker", "10m", "deploy"))
        .await
        .unwrap();
    let b = driver.browser("admin", 1280).await;
    sign_in(&b, &s.url, &s.admin_token).await;
    b.goto(&format!("{}/ui/policies", s.url)).await.unwrap();
    wait_for(&b, "#versions").await;
    b.find(Locator::Css("#edit"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let file = wait_for(&b, "#file").await;
    file.clear().await.unwrap();
    file.send_keys("no-auto.cedar").await.unwrap();
    let text = b.find(Locator::Css("#text")).await.unwrap();
    text.clear().await.unwrap();
    text.send_keys(
        "@id(\"no-auto-approval\")\nforbid (principal, action == Pedm::Action::\"request\", resource)\nwhen { resource.auto_approve };\n",
    )
    .await
    .unwrap();
    b.find(Locator::Css("#comment"))
        .await
        .unwrap()
        .send_keys("stop auto-approval for now")
        .await
        .unwrap();
    b.find(Locator::Css("#simulate"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let summary = wait_for(&b, "#sim-summary").await.text().await.unwrap();
    assert!(
        summary.contains("1 would be decided differently"),
        "{summary}"
    );
    let change = b
        .find(Locator::Css("#sim-changes tbody tr"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        change.contains("auto_approve") && change.contains("deny"),
        "{change}"
    );
    // The blast radius: alice (everyone, in fact) loses the auto-approved role.
    let blast = b
        .find(Locator::Css("#blast"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        blast
            .lines()
            .any(|l| l.contains("loses") && l.contains("alice") && l.contains("web1 / docker")),
        "{blast}"
    );
    check_page(&b, "policy-simulate").await;
    assert_eq!(
        s.admin().policy_versions().await.unwrap().len(),
        1,
        "simulating applies nothing"
    );
    b.find(Locator::Css("#apply"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    // The draft page has a diff too: wait for the applied version's page.
    wait_until(
        &b,
        "the diff page",
        "location.pathname === '/ui/policies/diff'",
    )
    .await;
    let diff = wait_for(&b, "#diff").await.text().await.unwrap();
    assert!(diff.contains("+++ b/no-auto.cedar"), "{diff}");
    assert!(diff.contains("+forbid (principal"), "{diff}");
    assert!(
        b.current_url()
            .await
            .unwrap()
            .query()
            .unwrap_or("")
            .contains("from=1&to=2")
    );
    check_page(&b, "policy-diff").await;
    // In force: the same request is now denied, and the change is on record.
    let r = s
        .client(&alice)
        .create_request(&req("web1", "docker", "10m", "deploy again"))
        .await
        .unwrap();
    assert_eq!(r.request.state, RequestState::Denied);
    let ev = audit_of(&s, "policy.applied").await;
    assert_eq!(ev.last().unwrap().actor, "admin");

    // The auditor's view: verified, filterable, exportable.
    b.goto(&format!("{}/ui/audit", s.url)).await.unwrap();
    let status = wait_for(&b, "#verification").await.text().await.unwrap();
    assert!(status.starts_with("Verified: all "), "{status}");
    wait_for(&b, "#f-action")
        .await
        .send_keys("policy.applied")
        .await
        .unwrap();
    b.find(Locator::Css("#filter"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_until(
        &b,
        "the filtered log",
        "location.search.includes('action=policy.applied')",
    )
    .await;
    let rows = b.find_all(Locator::Css("#events tbody tr")).await.unwrap();
    assert_eq!(rows.len(), 2, "the default set and this change");
    for r in &rows {
        assert_eq!(
            r.attr("data-action").await.unwrap().as_deref(),
            Some("policy.applied")
        );
    }
    check_page(&b, "audit").await;
    // The export link's download, fetched in the page with the session, verifies offline.
    let href = b
        .find(Locator::Css("#export-jsonl"))
        .await
        .unwrap()
        .attr("href")
        .await
        .unwrap()
        .unwrap();
    let export = b
        .execute_async(
            "const done = arguments[arguments.length - 1];\
             fetch(arguments[0], {credentials: 'same-origin'}).then(r => r.text()).then(done);",
            vec![serde_json::Value::String(href)],
        )
        .await
        .unwrap();
    let export = export.as_str().unwrap().to_string();
    assert!(export.lines().count() > 10, "{export}");
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("audit.jsonl");
    std::fs::write(&f, &export).unwrap();
    let key = s.cli(&s.admin_token, &["audit", "pubkey"]);
    let key = stdout(&key).trim().to_string();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_pedm"))
        .args(["audit", "verify", "--file"])
        .arg(&f)
        .args(["--pubkey", &key, "--require-covered"])
        .env("PEDM_URL", "http://127.0.0.1:9")
        .env_remove("PEDM_TOKEN")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    // Break-glass: reviewed in the page, one at a time, with what the review found.
    add_policy(
        &s.admin(),
        "break-glass.cedar",
        r#"@id("anyone-break-glass") @break_glass("true")
permit (principal, action == Pedm::Action::"request", resource);"#,
    )
    .await;
    let mut emergency = req("web1", "root", "10m", "site down <b>now</b>");
    emergency.break_glass = true;
    let bg = s
        .client(&alice)
        .create_request(&emergency)
        .await
        .unwrap()
        .request;
    b.goto(&format!("{}/ui/break-glass", s.url)).await.unwrap();
    let card = wait_for(&b, &format!("#bg-{}", bg.id)).await;
    assert_eq!(
        card.attr("data-open").await.unwrap().as_deref(),
        Some("true")
    );
    assert!(card.text().await.unwrap().contains("site down <b>now</b>"));
    check_page(&b, "break-glass").await;
    b.find(Locator::Css(&format!("#finding-{}", bg.id)))
        .await
        .unwrap()
        .send_keys("outage INC-7, access used as described")
        .await
        .unwrap();
    b.find(Locator::Css(&format!("#close-{}", bg.id)))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for(&b, &format!("#bg-{}[data-open=false]", bg.id)).await;
    let reviewed = s.admin().get_request(bg.id).await.unwrap().request;
    let review = reviewed.review.unwrap();
    assert_eq!(review.reviewed_by.as_deref(), Some("admin"));
    assert_eq!(
        review.comment.as_deref(),
        Some("outage INC-7, access used as described")
    );

    // Reports: the two elevations held (one break-glass), charted and tabled.
    b.goto(&format!("{}/ui/reports?days=7", s.url))
        .await
        .unwrap();
    assert_eq!(wait_for(&b, "#total").await.text().await.unwrap(), "2");
    assert_eq!(
        b.find(Locator::Css("#break-glass-count"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "1"
    );
    let bars = b
        .find_all(Locator::Css("#per-role svg rect"))
        .await
        .unwrap();
    assert_eq!(bars.len(), 2, "web1/docker and web1/root");
    // No provisioned target here: nothing standing, no drift, said in words.
    for empty in ["#no-drift", "#no-standing"] {
        assert!(b.find(Locator::Css(empty)).await.is_ok(), "{empty}");
    }
    check_page(&b, "reports").await;

    // The admin overview: people, targets with roles; a token revoked here stops working.
    b.goto(&format!("{}/ui/admin", s.url)).await.unwrap();
    let users = wait_for(&b, "#users").await.text().await.unwrap();
    assert!(
        users.contains("alice") && users.contains("admin"),
        "{users}"
    );
    let targets = b
        .find(Locator::Css("#targets"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        targets.contains("docker (up to 1h, auto-approved, runs as root)"),
        "{targets}"
    );
    check_page(&b, "admin").await;
    let doomed = s
        .client(&alice)
        .create_token(&pedm_api::CreateToken::default())
        .await
        .unwrap();
    b.refresh().await.unwrap();
    wait_for(&b, &format!("#revoke-{}", doomed.info.id))
        .await
        .click()
        .await
        .unwrap();
    wait_for(&b, &format!("#token-{}[data-live=false]", doomed.info.id)).await;
    let e = s.client(&doomed.token).whoami().await.unwrap_err();
    assert_eq!(e.status(), Some(401), "{e}");
    assert_eq!(
        audit_of(&s, "token.revoked").await.last().unwrap().actor,
        "admin"
    );

    // A non-auditor gets no audit link and a refusal, recorded.
    let a = driver.browser("alice", 1280).await;
    sign_in(&a, &s.url, &alice).await;
    assert!(a.find(Locator::Css("a[href='/ui/audit']")).await.is_err());
    assert!(
        a.find(Locator::Css("a[href='/ui/break-glass']"))
            .await
            .is_err()
    );
    a.goto(&format!("{}/ui/audit", s.url)).await.unwrap();
    let err = wait_for(&a, "#error").await.text().await.unwrap();
    assert!(err.starts_with("forbidden"), "{err}");
    assert!(
        audit_of(&s, "audit.read")
            .await
            .iter()
            .any(|e| e.actor == "alice")
    );
    b.close().await.unwrap();
    a.close().await.unwrap();
}

/// A recording replays in the page (the vendored asciinema-player) while it matches the
/// SHA-256 in its audit record; edited on disk, it is refused instead of played.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recording_replays_in_the_page_only_while_it_matches_its_record() {
    let Some((driver, s, alice)) = start_console().await else {
        return;
    };
    let g = s
        .client(&alice)
        .create_request(&req("web1", "docker", "10m", "look at the logs"))
        .await
        .unwrap()
        .grant
        .unwrap();
    let host = s.admin().register_host("web1").await.unwrap();
    let host = pedm_api::Client::new(&s.url, Some(host.token)).unwrap();
    let cast = concat!(
        "{\"version\":2,\"width\":80,\"height\":24}\n",
        "[0.1,\"o\",\"hello from the recording\\r\\n\"]\n",
        "[0.2,\"o\",\"\\u001b]52;c;ZXZpbA==\\u0007\"]\n",
        "[0.3,\"o\",\"all done\\r\\n\"]\n"
    );
    let now = jiff::Timestamp::now();
    let id = upload_session(
        &host,
        g.id,
        "alice",
        "root",
        &["/usr/bin/journalctl", "-f"],
        now,
        now,
        cast,
    )
    .await;

    let b = driver.browser("alice", 1280).await;
    sign_in(&b, &s.url, &alice).await;
    b.goto(&format!("{}/ui/sessions", s.url)).await.unwrap();
    let link = wait_for(&b, "#sessions tbody a").await;
    link.click().await.unwrap();
    wait_for(&b, "#recording-verified").await;
    wait_until(
        &b,
        "the player to show the recording",
        "document.querySelector('#player') && \
         document.querySelector('#player').textContent.includes('all done')",
    )
    .await;
    let shown: serde_json::Value = b
        .execute(
            "return document.querySelector('#player').textContent;",
            vec![],
        )
        .await
        .unwrap();
    assert!(shown.as_str().unwrap().contains("hello from the recording"));
    check_page(&b, "session-replay").await;

    // Edited after upload: not played, and the recording itself is refused.
    let stored = s.data_dir.join("recordings").join(format!("{id}.cast"));
    std::fs::write(&stored, cast.replace("all done", "all fine")).unwrap();
    b.refresh().await.unwrap();
    let p = wait_for(&b, "#recording-problem")
        .await
        .text()
        .await
        .unwrap();
    assert!(p.contains("does not match its audit record"), "{p}");
    assert!(b.find(Locator::Css("#player")).await.is_err());
    let status: serde_json::Value = b
        .execute_async(
            "const done = arguments[arguments.length - 1];\
             fetch(arguments[0]).then(r => done(r.status));",
            vec![serde_json::Value::String(format!(
                "/ui/sessions/{id}/recording"
            ))],
        )
        .await
        .unwrap();
    assert_eq!(status, 409);
    b.close().await.unwrap();
}

/// A reviewer keeps and revokes access review items in the page; their own item offers no
/// form (the core would refuse it), and what they decide is what the API then reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reviewer_decides_access_review_items_in_the_page() {
    let Some((driver, s, _alice)) = start_console().await else {
        return;
    };
    let a = s.admin();
    let rita = user_with_token(&s, "rita", false).await;
    a.create_group(&pedm_api::CreateGroup {
        name: "reviewers".into(),
        description: None,
    })
    .await
    .unwrap();
    a.add_group_member("reviewers", "rita").await.unwrap();
    let v = a
        .start_review(&pedm_api::review::StartReview {
            name: "console-q4".into(),
            kinds: vec![pedm_api::review::ItemKind::Eligibility],
            targets: vec![],
            due: "7d".into(),
            default: None,
            reviewers: "reviewers".into(),
            escalate_to: None,
            unused_days: None,
        })
        .await
        .unwrap();
    let item = |user: &str, role: &str| {
        v.items
            .iter()
            .find(|i| i.user == user && i.role.as_deref() == Some(role))
            .unwrap_or_else(|| panic!("{user} {role}: {:#?}", v.items))
            .id
    };
    let (alice_root, alice_docker, rita_root) = (
        item("alice", "root"),
        item("alice", "docker"),
        item("rita", "root"),
    );

    let b = driver.browser("rita", 1280).await;
    sign_in(&b, &s.url, &rita).await;
    b.goto(&format!("{}/ui/reviews", s.url)).await.unwrap();
    wait_for(&b, "#reviews").await;
    check_page(&b, "reviews").await;
    b.goto(&format!("{}/ui/reviews/{}", s.url, v.campaign.id))
        .await
        .unwrap();
    wait_for(&b, "#items").await;
    // Her own eligibility has no buttons.
    let own = wait_for(&b, &format!("#item-{rita_root}")).await;
    assert!(
        own.find(Locator::Css("button")).await.is_err(),
        "no form on her own item"
    );
    check_page(&b, "review").await;
    common::browser::fill(&b, &format!("#comment-{alice_root}"), "no longer on call").await;
    common::browser::click(&b, &format!("#revoke-{alice_root}")).await;
    wait_until(
        &b,
        "the revoked item",
        &format!("document.querySelector('#item-{alice_root}').dataset.state === 'decided'"),
    )
    .await;
    let text = wait_for(&b, &format!("#item-{alice_root} .outcome"))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        text.starts_with("revoked by rita: no longer on call"),
        "{text}"
    );
    common::browser::fill(&b, &format!("#comment-{alice_docker}"), "deploys weekly").await;
    common::browser::click(&b, &format!("#keep-{alice_docker}")).await;
    wait_until(
        &b,
        "the kept item",
        &format!("document.querySelector('#item-{alice_docker}').dataset.state === 'decided'"),
    )
    .await;
    let after = a.get_review("console-q4", false).await.unwrap();
    let state = |id| after.items.iter().find(|i| i.id == id).unwrap().state;
    use pedm_api::review::ItemState;
    assert_eq!(state(alice_root), ItemState::Revoked);
    assert_eq!(state(alice_docker), ItemState::Kept);
    assert_eq!(state(rita_root), ItemState::Pending);
    assert!(
        b.find(Locator::Css("#close-campaign")).await.is_err(),
        "a reviewer cannot close the campaign"
    );

    // The admin closes it early: the rest takes the default (revoke).
    let admin = driver.browser("admin", 1280).await;
    sign_in(&admin, &s.url, &s.admin_token).await;
    admin
        .goto(&format!("{}/ui/reviews/{}", s.url, v.campaign.id))
        .await
        .unwrap();
    common::browser::click(&admin, "#close-campaign").await;
    wait_until(
        &admin,
        "the closed campaign",
        "document.querySelector('#campaign-summary').textContent.startsWith('closed')",
    )
    .await;
    let closed = a.get_review("console-q4", false).await.unwrap();
    assert_eq!(
        closed.campaign.stage,
        pedm_api::review::CampaignStage::Closed
    );
    let state = |id| closed.items.iter().find(|i| i.id == id).unwrap().state;
    assert_eq!(state(rita_root), ItemState::Revoked, "the default");
    assert_eq!(state(alice_docker), ItemState::Kept);
}
