//! Single sign-on against a real, certified OpenID provider: panva's `oidc-provider` run by
//! `scripts/test-idp/idp.mjs` (installed by `scripts/install-test-deps`). Every login goes
//! through the real `pedm login` binary; the test plays the browser over HTTP (a cookie jar
//! following the provider's redirects, the device form posted like a person would).
//!
//! Attacks where a real provider cannot be made to misbehave (wrong issuer or audience,
//! expired token, `alg: none`, a replayed nonce) use the test IdP's `/admin/tamper`: the
//! provider's NEXT token response carries an altered ID token (re-signed with the provider's
//! real key, or unsigned for `none`, or the previous token replayed). pedmd receives it from
//! the real token endpoint through the same code path as any login, so what is tested is
//! exactly what a real callback would exercise.

mod common;

use common::idp::{
    Idp, SECRET, authorize, browser, corp_idp, login_code, pedm, server_for, session_token,
};
use common::*;
use pedm_api::*;
use serde_json::{Value, json};
use std::time::Duration;

/// The newest audit event of `action`.
async fn last_event(s: &Server, action: &str) -> AuditEvent {
    s.admin()
        .audit_events(&AuditQuery {
            action: Some(action.into()),
            ..Default::default()
        })
        .await
        .expect("audit")
        .pop()
        .unwrap_or_else(|| panic!("no {action} event"))
}

const POLICY: &str = r#"
@id("admins-administer")
permit (principal, action in [Pedm::Action::"manage_users", Pedm::Action::"manage_targets",
    Pedm::Action::"manage_policies", Pedm::Action::"manage_grants", Pedm::Action::"read_audit"], resource)
when { principal.admin };

@id("ops-root")
@auto_approve("true")
@max_duration("1h")
permit (principal in Pedm::Group::"ops", action == Pedm::Action::"request", resource)
when { resource.name == "root" };
"#;

async fn ops_policy(s: &Server) {
    standard_targets(s).await;
    s.admin()
        .apply_policies(&ApplyPolicies {
            sources: vec![PolicySource {
                name: "sso".into(),
                text: POLICY.into(),
            }],
            comment: None,
        })
        .await
        .expect("policy");
}

#[tokio::test(flavor = "multi_thread")]
async fn code_flow_creates_the_user_and_idp_groups_decide_policy_until_removed_at_the_idp() {
    let idp = corp_idp();
    let s = server_for(&idp);
    ops_policy(&s).await;
    let home = tempfile::tempdir().unwrap();

    let (ok, out, err) = login_code(&s, &idp, home.path(), "alice").await;
    assert!(ok, "pedm login failed: {err}");
    let shown: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(shown["user"], "alice");
    assert_eq!(shown["groups"], json!(["ops", "staff"]));
    assert!(!out.contains("pedm_"), "the token is not printed");
    let token = session_token(home.path());

    // Just in time: the user exists now, with the groups of the claim.
    let alice = s.client(&token);
    let me = alice.whoami().await.unwrap();
    assert_eq!(me.user.name, "alice");
    assert_eq!(me.groups, vec!["ops", "staff"]);
    // Mail goes to the address the provider vouched for.
    assert_eq!(me.user.email.as_deref(), Some("alice@example.com"));
    // The CLI uses the session file when no token is given; the token is a "session".
    let (ok, out, err) = pedm(&s.url, home.path(), &["token", "list", "--json"]).finish();
    assert!(ok, "{err}");
    let list: Vec<TokenInfo> = serde_json::from_str(&out).unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].kind, "session");
    assert!(list[0].expires_at.is_some());
    // The refresh token never reaches the client nor the audit log.
    let login = last_event(&s, "sso.login").await;
    assert_eq!(login.actor, "alice");
    assert!(
        !login
            .data
            .to_string()
            .to_lowercase()
            .contains("refresh_token")
    );

    // A hand-kept membership, which SSO must leave alone.
    s.admin()
        .create_group(&CreateGroup {
            name: "oncall".into(),
            description: None,
        })
        .await
        .unwrap();
    s.admin().add_group_member("oncall", "alice").await.unwrap();

    // The Cedar policy names the IdP's group: granted at once.
    let r = alice
        .create_request(&req("web1", "root", "30m", "fix the disk"))
        .await
        .expect("ops may request root");
    assert_eq!(r.request.state, RequestState::Approved);

    // Removed from ops at the IdP: the next refresh (`pedm login` on a live session) says so.
    idp.admin(
        "account",
        json!({ "account": "alice", "claims": { "groups": ["staff"] } }),
    )
    .await;
    let (ok, out, err) = pedm(&s.url, home.path(), &["login", "--json"]).finish();
    assert!(ok, "refresh failed: {err}");
    let shown: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["refreshed"], true);
    let new_token = session_token(home.path());
    assert_ne!(new_token, token, "the session token is rotated");
    let old = s.client(&token).whoami().await.unwrap_err();
    assert_eq!(
        old.status(),
        Some(401),
        "the previous session token is revoked"
    );
    let alice = s.client(&new_token);
    let me = alice.whoami().await.unwrap();
    assert_eq!(
        me.groups,
        vec!["oncall", "staff"],
        "ops gone, hand-kept oncall kept"
    );
    let refused = alice
        .create_request(&req("web1", "root", "30m", "fix the disk again"))
        .await;
    match refused {
        Err(e) => assert_eq!(e.status(), Some(403), "{e}"),
        Ok(r) => assert_eq!(r.request.state, RequestState::Denied),
    }
    let ev = last_event(&s, "sso.refresh").await;
    assert_eq!(ev.data["groups_removed"], json!(["ops"]));

    // Logout: revoked on the server, the file deleted.
    let (ok, _, err) = pedm(&s.url, home.path(), &["logout"]).finish();
    assert!(ok, "{err}");
    assert!(!home.path().join("pedm/session").exists());
    assert_eq!(alice.whoami().await.unwrap_err().status(), Some(401));
    last_event(&s, "sso.logout").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn device_flow_logs_in_through_the_verification_page() {
    let idp = corp_idp();
    let s = server_for(&idp);
    let home = tempfile::tempdir().unwrap();
    idp.admin("login-as", json!({ "account": "bob" })).await;

    let mut run = pedm(&s.url, home.path(), &["login", "--device", "--json"]);
    let complete = run.wait_line("verification URL", |l| {
        l.strip_prefix("(or open ")
            .map(|u| u.trim_end_matches(')').to_string())
    });
    let code = reqwest::Url::parse(&complete)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "user_code")
        .map(|(_, v)| v.to_string())
        .expect("user_code in the URL");
    assert!(
        run.seen.iter().any(|l| l.contains(&code)),
        "the user code is printed"
    );
    // The person opens the page, submits the code, confirms it.
    let b = browser();
    let page = b.get(&complete).send().await.unwrap().text().await.unwrap();
    let xsrf = |html: &str| {
        let i = html.find("name=\"xsrf\" value=\"").expect("xsrf field") + 19;
        html[i..].split('"').next().unwrap().to_string()
    };
    let form = |fields: &[(&str, &str)]| {
        fields
            .iter()
            .map(|(k, v)| format!("{k}={}", v.replace('-', "%2D")))
            .collect::<Vec<_>>()
            .join("&")
    };
    let device_url = format!("{}/device", idp.issuer);
    let confirm = b
        .post(&device_url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[("xsrf", &xsrf(&page)), ("user_code", &code)]))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let done = b
        .post(&device_url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[
            ("xsrf", &xsrf(&confirm)),
            ("user_code", &code),
            ("confirm", "yes"),
        ]))
        .send()
        .await
        .unwrap();
    assert!(done.status().is_success(), "{}", done.status());

    let (ok, out, err) = run.finish();
    assert!(ok, "pedm login --device failed: {err}");
    let shown: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["user"], "bob");
    assert_eq!(shown["groups"], json!(["staff"]));
    let me = s
        .client(&session_token(home.path()))
        .whoami()
        .await
        .unwrap();
    assert_eq!(me.user.name, "bob");
}

/// One tampered login: the CLI fails, pedmd records `sso.login` denied with `reason`.
async fn tampered_login(s: &Server, idp: &Idp, tamper: Value, reason: &str) {
    let home = tempfile::tempdir().unwrap();
    idp.admin("tamper", tamper.clone()).await;
    let (ok, _, err) = login_code(s, idp, home.path(), "carol").await;
    assert!(!ok, "{tamper}: login must fail");
    assert!(
        err.to_lowercase().contains(&reason.to_lowercase()),
        "{tamper}: stderr should name {reason:?}: {err}"
    );
    assert!(!home.path().join("pedm/session").exists());
    let ev = last_event(s, "sso.login").await;
    assert_eq!(ev.outcome, Outcome::Denied, "{tamper}");
    let why = ev.data["reason"].as_str().unwrap_or("").to_lowercase();
    assert!(
        why.contains(&reason.to_lowercase()),
        "{tamper}: event reason {why:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_and_replayed_id_tokens_are_refused() {
    let idp = corp_idp();
    let s = server_for(&idp);
    // A first good login, whose ID token the replay below sends again.
    let home = tempfile::tempdir().unwrap();
    let (ok, _, err) = login_code(&s, &idp, home.path(), "carol").await;
    assert!(ok, "{err}");

    tampered_login(
        &s,
        &idp,
        json!({ "mode": "claims", "claims": { "iss": "http://127.0.0.1:1/evil" } }),
        "issuer",
    )
    .await;
    tampered_login(
        &s,
        &idp,
        json!({ "mode": "claims", "claims": { "aud": "another-client" } }),
        "audience",
    )
    .await;
    let now = jiff::Timestamp::now().as_second();
    tampered_login(
        &s,
        &idp,
        json!({ "mode": "claims", "claims": { "exp": now - 600, "iat": now - 900 } }),
        "expired",
    )
    .await;
    tampered_login(
        &s,
        &idp,
        json!({ "mode": "claims", "claims": { "nbf": now + 900 } }),
        "not valid yet",
    )
    .await;
    tampered_login(&s, &idp, json!({ "mode": "none" }), "signature").await;
    // A real, still valid token of an earlier login: its nonce belongs to another flow.
    tampered_login(&s, &idp, json!({ "mode": "replay" }), "nonce").await;
    // An access token that is not the one the ID token was issued with.
    tampered_login(
        &s,
        &idp,
        json!({ "mode": "claims", "claims": { "at_hash": "AAAAAAAAAAAAAAAAAAAAAA" } }),
        "at_hash",
    )
    .await;
    // An HMAC token "signed" with the client secret (HS/RS confusion): refused, the
    // verifier holds no symmetric key.
    tampered_login(
        &s,
        &idp,
        json!({ "mode": "hs256", "secret": SECRET }),
        "algorithm",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_or_reused_state_is_refused() {
    let idp = corp_idp();
    let s = server_for(&idp);
    let home = tempfile::tempdir().unwrap();

    // The browser comes back with another state: the CLI refuses before calling the server.
    let mut run = pedm(&s.url, home.path(), &["login", "--no-browser"]);
    let url = run.wait_line("authorisation URL", |l| {
        l.starts_with("http").then(|| l.to_string())
    });
    let mut cb = authorize(&idp, "carol", &url).await;
    let code = cb
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.to_string())
        .unwrap();
    cb.query_pairs_mut()
        .clear()
        .append_pair("code", &code)
        .append_pair("state", "attacker-chosen-state-aaaaaaaaaaaaaaaaaaaaaaa");
    let _ = reqwest::get(cb).await;
    let (ok, _, err) = run.finish();
    assert!(!ok);
    assert!(err.contains("state"), "{err}");

    // At the server: a state no flow was started with, and one used twice.
    let anon = s.anonymous();
    let bad = anon
        .sso_finish(&sso::SsoFinish {
            state: "x".repeat(43),
            code: code.clone(),
            code_verifier: "v".repeat(43),
        })
        .await
        .unwrap_err();
    assert_eq!(bad.status(), Some(401), "{bad}");
    let ev = last_event(&s, "sso.login").await;
    assert_eq!(ev.outcome, Outcome::Denied);
    assert!(ev.data["reason"].as_str().unwrap().contains("state"));

    let (ok, _, err) = login_code(&s, &idp, home.path(), "carol").await;
    assert!(ok, "{err}");
    // The finished flow's state cannot be finished again (replayed callback).
    let again = anon
        .sso_finish(&sso::SsoFinish {
            state: "y".repeat(43),
            code,
            code_verifier: "v".repeat(43),
        })
        .await
        .unwrap_err();
    assert_eq!(again.status(), Some(401));
    // Only loopback redirects are accepted for the code.
    let foreign = anon
        .sso_start(&sso::SsoStart {
            provider: None,
            redirect_uri: "http://evil.example:8080/callback".into(),
            state: "s".repeat(43),
            code_challenge: "c".repeat(43),
        })
        .await
        .unwrap_err();
    assert_eq!(foreign.status(), Some(400));
    assert!(foreign.to_string().contains("redirect_uri"), "{foreign}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_rotated_at_the_idp_is_fetched_and_login_still_works() {
    let idp = corp_idp();
    let s = server_for(&idp);
    let home = tempfile::tempdir().unwrap();
    let (ok, _, err) = login_code(&s, &idp, home.path(), "alice").await;
    assert!(ok, "{err}");
    let kid = idp.admin("rotate", json!({})).await;
    assert_eq!(kid["kid"], "k2");
    // pedmd only knows k1; the new token is signed with k2 (and k1 is unpublished). The JWKS
    // refetch is rate-limited to one per 10 s, so let that much pass (the scenario, not a
    // synchronisation).
    tokio::time::sleep(oidc_refetch_wait()).await;
    let home2 = tempfile::tempdir().unwrap();
    let (ok, _, err) = login_code(&s, &idp, home2.path(), "alice").await;
    assert!(ok, "login after rotation failed: {err}\n{}", s.log());
    assert!(s.log().contains("refetched the provider's signing keys"));
    // The rotated key also serves the refresh of the first session.
    let first = s.client(&session_token(home.path()));
    let refreshed = first.sso_refresh().await;
    assert!(refreshed.is_ok(), "refresh after rotation: {refreshed:?}");
}

fn oidc_refetch_wait() -> Duration {
    Duration::from_secs(10)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_user_disabled_at_the_idp_cannot_refresh_and_one_disabled_in_pedm_cannot_log_in() {
    let idp = corp_idp();
    let s = server_for(&idp);
    let home = tempfile::tempdir().unwrap();
    let (ok, _, err) = login_code(&s, &idp, home.path(), "bob").await;
    assert!(ok, "{err}");
    let token = session_token(home.path());

    idp.admin("account", json!({ "account": "bob", "disabled": true }))
        .await;
    let c = s.client(&token);
    let e = c.sso_refresh().await.unwrap_err();
    assert_eq!(e.status(), Some(401), "{e}");
    let ev = last_event(&s, "sso.refresh").await;
    assert_eq!(ev.outcome, Outcome::Denied);
    assert_eq!(ev.data["session_ended"], true);
    // The IdP said no: the session ended with it.
    assert_eq!(c.whoami().await.unwrap_err().status(), Some(401));

    // Disabled in pedm: the provider still vouches, pedm refuses.
    idp.admin("account", json!({ "account": "bob", "disabled": false }))
        .await;
    s.admin()
        .update_user(
            "bob",
            &UpdateUser {
                disabled: Some(true),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let home2 = tempfile::tempdir().unwrap();
    let (ok, _, err) = login_code(&s, &idp, home2.path(), "bob").await;
    assert!(!ok);
    assert!(err.contains("disabled"), "{err}");
    let ev = last_event(&s, "sso.login").await;
    assert_eq!(ev.outcome, Outcome::Denied);
    assert!(ev.data["reason"].as_str().unwrap().contains("disabled"));

    // A hand-made account of the same name is never taken over by a login.
    s.admin()
        .create_user(&CreateUser {
            name: "carol".into(),
            display_name: None,
            email: None,
            admin: true,
        })
        .await
        .unwrap();
    let (ok, _, err) = login_code(&s, &idp, home2.path(), "carol").await;
    assert!(!ok);
    assert!(err.contains("not linked"), "{err}");
}
