//! Every kind of bad input gets a clear error with the right status and changes nothing;
//! security refusals are recorded in the audit log.

mod common;

use common::*;
use pedm_api::*;
use std::time::Duration;

/// Everything that a refused call must not have changed.
#[derive(Debug, PartialEq)]
struct Snapshot {
    requests: usize,
    grants: usize,
    successful_events: usize,
}

async fn snapshot(s: &Server) -> Snapshot {
    let a = s.admin();
    let events = a.audit_events(&AuditQuery::default()).await.unwrap();
    Snapshot {
        requests: a
            .list_requests(&RequestQuery::default())
            .await
            .unwrap()
            .len(),
        grants: a.list_grants(&GrantQuery::default()).await.unwrap().len(),
        successful_events: events
            .iter()
            .filter(|e| e.outcome == Outcome::Success)
            .count(),
    }
}

async fn denied_events(s: &Server) -> Vec<AuditEvent> {
    s.admin()
        .audit_events(&AuditQuery::default())
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.outcome == Outcome::Denied)
        .collect()
}

fn assert_err(r: Result<impl std::fmt::Debug, ApiError>, status: u16, needle: &str) {
    let e = r.expect_err("should fail");
    assert_eq!(e.status(), Some(status), "{e}");
    assert!(
        e.to_string()
            .to_lowercase()
            .contains(&needle.to_lowercase()),
        "error {e:?} should mention {needle:?}"
    );
}

#[tokio::test]
async fn bad_requests_are_refused_and_change_nothing() {
    let s = Server::start();
    standard_targets(&s).await;
    let alice = s.client(&user_with_token(&s, "alice", false).await);
    let before = snapshot(&s).await;

    assert_err(
        alice.create_request(&req("nope", "root", "10m", "x")).await,
        404,
        "target nope",
    );
    assert_err(
        alice.create_request(&req("web1", "king", "10m", "x")).await,
        404,
        "role king",
    );
    assert_err(
        alice.create_request(&req("web1", "root", "0m", "x")).await,
        400,
        "greater than zero",
    );
    assert_err(
        alice.create_request(&req("web1", "root", "0", "x")).await,
        400,
        "greater than zero",
    );
    assert_err(
        alice.create_request(&req("web1", "root", "-5m", "x")).await,
        400,
        "negative",
    );
    assert_err(
        alice
            .create_request(&req("web1", "root", "soon", "x"))
            .await,
        400,
        "duration",
    );
    assert_err(
        alice.create_request(&req("web1", "root", "2h", "x")).await,
        422,
        "longer than the 1h",
    );
    assert_err(
        alice
            .create_request(&req("web1", "root", "10m", "   "))
            .await,
        400,
        "justification",
    );
    let long = "x".repeat(5000);
    assert_err(
        alice
            .create_request(&req("web1", "root", "10m", &long))
            .await,
        400,
        "justification",
    );
    let mut bad_ticket = req("web1", "root", "10m", "ok");
    bad_ticket.ticket = Some("a\u{7}b".into());
    assert_err(alice.create_request(&bad_ticket).await, 400, "ticket");

    assert_eq!(snapshot(&s).await, before);
}

#[tokio::test]
async fn malformed_and_oversized_bodies() {
    let s = Server::start_with(Options {
        env: vec![("PEDM_HTTP__MAX_BODY_BYTES".into(), "4096".into())],
        ..Default::default()
    });
    standard_targets(&s).await;
    let before = snapshot(&s).await;
    let http = reqwest::Client::new();
    let url = format!("{}/api/v1/requests", s.url);
    let send = |body: String, ct: &'static str| {
        http.post(&url)
            .bearer_auth(&s.admin_token)
            .header("content-type", ct)
            .body(body)
            .send()
    };

    let r = send("{\"target\": \"web1\", ".into(), "application/json")
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let b: ErrorBody = r.json().await.unwrap();
    assert_eq!(b.error.code, "invalid");
    assert!(
        b.error.message.contains("malformed JSON"),
        "{}",
        b.error.message
    );

    let r = send(
        r#"{"target":"web1","role":"root","duration":"1m"}"#.into(),
        "application/json",
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 400);
    let b: ErrorBody = r.json().await.unwrap();
    assert!(
        b.error.message.contains("justification"),
        "{}",
        b.error.message
    );

    let r = send(
        r#"{"target":"web1","role":"root","duration":"1m","justification":"x","admin":true}"#
            .into(),
        "application/json",
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 400, "unknown fields are refused");
    let b: ErrorBody = r.json().await.unwrap();
    assert!(b.error.message.contains("admin"), "{}", b.error.message);

    let r = send("{}".into(), "text/plain").await.unwrap();
    assert_eq!(r.status(), 415);

    let huge = format!(
        r#"{{"target":"web1","role":"root","duration":"1m","justification":"{}"}}"#,
        "y".repeat(10_000)
    );
    let r = send(huge, "application/json").await.unwrap();
    assert_eq!(r.status(), 413);
    let b: ErrorBody = r.json().await.unwrap();
    assert_eq!(b.error.code, "payload_too_large");

    let r = http
        .get(format!("{}/api/v1/requests/not-a-uuid", s.url))
        .bearer_auth(&s.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    let r = http
        .get(format!("{}/api/v1/requests?state=bogus", s.url))
        .bearer_auth(&s.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let b: ErrorBody = r.json().await.unwrap();
    assert!(b.error.message.contains("state"), "{}", b.error.message);

    assert_eq!(snapshot(&s).await, before);
}

#[tokio::test]
async fn bad_expired_and_revoked_tokens_are_refused_and_recorded() {
    let s = Server::start();
    let admin = s.admin();
    let denied_before = denied_events(&s).await.len();

    assert_err(s.anonymous().whoami().await, 401, "missing");
    assert_err(
        s.client("pedm_0123456789abcdef_wrongsecret").whoami().await,
        401,
        "invalid token",
    );
    assert_err(s.client("garbage").whoami().await, 401, "invalid token");
    // The right id with a wrong secret is refused too.
    let id = s.admin_token.split('_').nth(1).unwrap();
    assert_err(
        s.client(&format!("pedm_{id}_forged")).whoami().await,
        401,
        "invalid token",
    );

    admin
        .create_user(&CreateUser {
            name: "alice".into(),
            display_name: None,
            email: None,
            admin: false,
        })
        .await
        .unwrap();
    let short = admin
        .create_token(&CreateToken {
            user: Some("alice".into()),
            expires_in: Some("1s".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let alice = s.client(&short.token);
    alice.whoami().await.expect("fresh token works");
    let e = eventually(Duration::from_secs(10), "token expiry", || async {
        alice.whoami().await.err()
    })
    .await;
    assert_eq!(e.status(), Some(401));
    assert!(e.to_string().contains("expired"), "{e}");

    let t = admin
        .create_token(&CreateToken {
            user: Some("alice".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    s.client(&t.token).whoami().await.unwrap();
    admin.revoke_token(&t.info.id).await.unwrap();
    assert_err(s.client(&t.token).whoami().await, 401, "revoked");
    assert_err(admin.revoke_token(&t.info.id).await, 409, "already revoked");

    // Disabled users' tokens stop working.
    let t2 = admin
        .create_token(&CreateToken {
            user: Some("alice".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    admin
        .update_user(
            "alice",
            &UpdateUser {
                disabled: Some(true),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_err(s.client(&t2.token).whoami().await, 401, "invalid token");

    let denied = denied_events(&s).await;
    let auth_failures: Vec<_> = denied[denied_before..]
        .iter()
        .filter(|e| e.action == "auth.failed")
        .collect();
    assert!(
        auth_failures.len() >= 5,
        "auth failures recorded: {auth_failures:?}"
    );
    // The secret never lands in the log.
    let all = serde_json::to_string(&denied).unwrap();
    assert!(!all.contains("forged") && !all.contains("wrongsecret"));
    assert!(!all.contains(short.token.splitn(3, '_').nth(2).unwrap()));
}

#[tokio::test]
async fn non_admins_cannot_administer() {
    let s = Server::start();
    standard_targets(&s).await;
    let alice = s.client(&user_with_token(&s, "alice", false).await);
    let before = snapshot(&s).await;
    let denied_before = denied_events(&s).await.len();

    assert_err(
        alice
            .create_user(&CreateUser {
                name: "eve".into(),
                display_name: None,
                email: None,
                admin: true,
            })
            .await,
        403,
        "not permitted",
    );
    assert_err(
        alice
            .create_target(&CreateTarget {
                name: "db1".into(),
                kind: TargetKind::Postgres,
                description: None,
                labels: Default::default(),
            })
            .await,
        403,
        "not permitted",
    );
    assert_err(
        alice.list_users().await,
        403,
        "not permitted to manage_users",
    );
    assert_err(
        alice
            .create_token(&CreateToken {
                user: Some("admin".into()),
                ..Default::default()
            })
            .await,
        403,
        "not permitted",
    );
    assert_err(
        alice.audit_events(&AuditQuery::default()).await,
        403,
        "not permitted",
    );
    assert_err(
        alice
            .list_requests(&RequestQuery {
                requester: Some("admin".into()),
                ..Default::default()
            })
            .await,
        403,
        "only admins",
    );

    let denied = denied_events(&s).await;
    assert_eq!(
        denied.len() - denied_before,
        6,
        "each refusal recorded: {denied:?}"
    );
    assert!(denied[denied_before..].iter().all(|e| e.actor == "alice"));
    assert_eq!(snapshot(&s).await, before);

    // Admin-side validation: names, kinds, durations.
    let admin = s.admin();
    assert_err(
        admin
            .create_user(&CreateUser {
                name: "bad name;".into(),
                display_name: None,
                email: None,
                admin: false,
            })
            .await,
        400,
        "not a valid user name",
    );
    assert_err(
        admin
            .create_user(&CreateUser {
                name: "alice".into(),
                display_name: None,
                email: None,
                admin: false,
            })
            .await,
        409,
        "alice",
    );
    assert_err(
        admin
            .create_role("web1", &CreateRole::new("big", "30d"))
            .await,
        422,
        "server limit",
    );
    assert_err(
        admin.create_role("nope", &CreateRole::new("r", "1h")).await,
        404,
        "target nope",
    );
}

/// Anyone who reaches the server may fail to authenticate, but not grow the audit log at
/// will: past the first few failures of a source in a window, they become one aggregated
/// event with the count (recorded when the window closes, or at shutdown).
#[tokio::test]
async fn failed_authentication_is_aggregated_per_source() {
    let mut s = Server::start();
    let forged = s.client("pedm_0123456789abcdef_forgedsecretforgedsecret");
    for _ in 0..300 {
        assert_err(forged.whoami().await, 401, "invalid token");
    }
    let failed = |s: &Server| {
        let admin = s.admin();
        async move {
            admin
                .audit_events(&AuditQuery {
                    action: Some("auth.failed".into()),
                    limit: Some(1000),
                    ..Default::default()
                })
                .await
                .unwrap()
        }
    };
    let now = failed(&s).await;
    assert!(
        now.len() <= 10,
        "{} auth.failed events for 300 attempts",
        now.len()
    );
    // A graceful stop records what was counted.
    s.restart();
    let after = failed(&s).await;
    let total: u64 = after
        .iter()
        .map(|e| e.data["count"].as_u64().unwrap_or(1))
        .sum();
    assert_eq!(total, 300, "{after:?}");
    let agg = after
        .iter()
        .find(|e| e.data["aggregated"] == true)
        .expect("an aggregated event");
    assert_eq!(agg.data["source"], "127.0.0.1");
    assert!(agg.data["first"].is_string() && agg.data["last"].is_string());
}

/// Nobody, not even an admin, can leave pedm without an admin able to sign in: revoking the
/// last live admin token, or taking the rights of the last admin who has one, is refused
/// (and the refusal recorded) until another admin can sign in.
#[tokio::test]
async fn the_last_admin_cannot_be_locked_out() {
    let s = Server::start();
    let admin = s.admin();
    let me = admin.whoami().await.unwrap();
    let my_token = me.token.as_ref().unwrap().id.clone();
    let e = admin.revoke_token(&my_token).await.unwrap_err();
    assert_eq!(e.status(), Some(409), "{e}");
    assert!(
        e.to_string()
            .contains("last live token of an enabled admin"),
        "{e}"
    );
    assert!(admin.whoami().await.is_ok(), "still signed in");
    let refused = denied_events(&s).await;
    assert!(refused.iter().any(|ev| ev.action == "token.revoke"));

    // With a second admin able to sign in, both work.
    let ops = s.client(&user_with_token(&s, "ops", true).await);
    let e = admin
        .update_user(
            "ops",
            &UpdateUser {
                disabled: Some(true),
                ..Default::default()
            },
        )
        .await;
    assert!(
        e.is_ok(),
        "another admin may be disabled while one can sign in"
    );
    let e = ops.whoami().await.unwrap_err();
    assert_eq!(e.status(), Some(401));
    // ops is disabled: the bootstrap admin is the last one again.
    let e = admin.revoke_token(&my_token).await.unwrap_err();
    assert_eq!(e.status(), Some(409), "{e}");
}

#[tokio::test]
async fn names_differing_only_by_case_and_control_characters_are_refused() {
    let s = Server::start();
    standard_targets(&s).await;
    let admin = s.admin();
    let alice = s.client(&user_with_token(&s, "alice", false).await);
    let before = snapshot(&s).await;
    let user = |name: &str| CreateUser {
        name: name.into(),
        display_name: None,
        email: None,
        admin: true,
    };
    // `ADMIN` next to `admin` would read as the same person in logs and approvals.
    assert_err(
        admin.create_user(&user("ADMIN")).await,
        409,
        "without regard to case",
    );
    assert_err(
        admin.create_user(&user("Alice")).await,
        409,
        "without regard to case",
    );
    admin
        .create_group(&CreateGroup {
            name: "leads".into(),
            description: None,
        })
        .await
        .unwrap();
    assert_err(
        admin
            .create_group(&CreateGroup {
                name: "LEADS".into(),
                description: None,
            })
            .await,
        409,
        "without regard to case",
    );
    assert_err(
        admin
            .create_target(&CreateTarget {
                name: "WEB1".into(),
                kind: TargetKind::Host,
                description: None,
                labels: Default::default(),
            })
            .await,
        409,
        "without regard to case",
    );
    // Control characters in free text: ESC (terminal escapes), NUL, a carriage return.
    for bad in ["fix \u{1b}]0;pwned\u{7} it", "nul \0 here", "line\rover"] {
        assert_err(
            alice
                .create_request(&req("web1", "docker", "30m", bad))
                .await,
            400,
            "justification",
        );
    }
    let mut r = req("web1", "docker", "30m", "deploy");
    r.ticket = Some("CHG\u{1b}[31m-1".into());
    assert_err(alice.create_request(&r).await, 400, "ticket");
    assert_eq!(snapshot(&s).await.requests, before.requests);
    assert_eq!(snapshot(&s).await.grants, before.grants);
    // Newline and tab are fine in a justification.
    alice
        .create_request(&req(
            "web1",
            "docker",
            "30m",
            "deploy:\n\t1. build\n\t2. push",
        ))
        .await
        .expect("multi-line justification");
}

#[tokio::test]
async fn oversized_headers_and_targets_get_json_errors() {
    let s = Server::start();
    let http = reqwest::Client::new();
    let json_error = |r: reqwest::Response, status: u16, code: &'static str| async move {
        assert_eq!(r.status().as_u16(), status);
        let body: serde_json::Value = r.json().await.expect("a JSON error body");
        assert_eq!(body["error"]["code"], code, "{body}");
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let url = format!("{}/api/v1/whoami", s.url);
    let mut many = http.get(&url).bearer_auth(&s.admin_token);
    for i in 0..150 {
        many = many.header(format!("x-filler-{i}"), "x");
    }
    let msg = json_error(many.send().await.unwrap(), 431, "headers_too_large").await;
    assert!(msg.contains("at most 100"), "{msg}");
    let big = http
        .get(&url)
        .bearer_auth(&s.admin_token)
        .header("x-big", "a".repeat(70_000))
        .send()
        .await
        .unwrap();
    let msg = json_error(big, 431, "headers_too_large").await;
    assert!(msg.contains("bytes"), "{msg}");
    let long = http
        .get(format!("{url}?q={}", "a".repeat(9_000)))
        .bearer_auth(&s.admin_token)
        .send()
        .await
        .unwrap();
    json_error(long, 414, "uri_too_long").await;
    // Within the limits, the same call works.
    let ok = http
        .get(&url)
        .bearer_auth(&s.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status().as_u16(), 200);
}

#[tokio::test]
async fn the_last_admin_token_cannot_be_revoked() {
    let s = Server::start();
    let admin = s.admin();
    let mine = admin
        .list_tokens(&TokenQuery {
            user: Some("admin".into()),
        })
        .await
        .unwrap();
    assert_eq!(mine.len(), 1);
    // Revoking the only admin token would lock everyone out: refused, and it still works.
    assert_err(
        admin.revoke_token(&mine[0].id).await,
        409,
        "last live token",
    );
    admin.whoami().await.expect("still valid");
    // With a second admin holding a token, it may go.
    let other = s.client(&user_with_token(&s, "admin2", true).await);
    admin.revoke_token(&mine[0].id).await.expect("revoke");
    assert_eq!(admin.whoami().await.unwrap_err().status(), Some(401));
    other.whoami().await.expect("the other admin still works");
}

/// A body must be a JSON object: serde alone would read `[]` as a struct with every field at
/// its default (here: a token for the caller, minted from an empty array).
#[tokio::test]
async fn a_body_that_is_not_an_object_is_refused_and_mints_nothing() {
    let s = Server::start();
    let admin = s.admin();
    let before = admin
        .list_tokens(&TokenQuery::default())
        .await
        .unwrap()
        .len();
    let http = reqwest::Client::new();
    for body in ["[]", "[null, null, null]", "\"x\"", "7", "null"] {
        let r = http
            .post(format!("{}/api/v1/tokens", s.url))
            .bearer_auth(&s.admin_token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 400, "{body}");
        let e: serde_json::Value = r.json().await.unwrap();
        assert_eq!(e["error"]["code"], "invalid", "{body}: {e}");
        assert!(
            e["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("JSON object")),
            "{body}: {e}"
        );
    }
    let after = admin
        .list_tokens(&TokenQuery::default())
        .await
        .unwrap()
        .len();
    assert_eq!(before, after, "no token was minted");
}

/// 400 is for what the published schema rules out; what it cannot state (a duration beyond
/// this role's maximum) is 422, and both name the field.
#[tokio::test]
async fn schema_valid_requests_the_server_cannot_act_on_are_422() {
    let s = Server::start();
    standard_targets(&s).await;
    let alice = s.client(&user_with_token(&s, "alice", false).await);
    let doc: serde_json::Value = reqwest::get(format!("{}/api/v1/openapi.json", s.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let pattern =
        doc["components"]["schemas"]["CreateRequest"]["properties"]["duration"]["pattern"]
            .as_str()
            .expect("the duration field states its pattern");
    assert_eq!(pattern, pedm_core::syntax::DURATION);
    assert!(
        doc["paths"]["/api/v1/requests"]["post"]["responses"]["422"].is_object(),
        "422 is documented"
    );
    // Matches the pattern, beyond the role's 1h: 422.
    assert_err(
        alice.create_request(&req("web1", "root", "2h", "x")).await,
        422,
        "duration",
    );
    // Outside the pattern: 400.
    assert_err(
        alice
            .create_request(&req("web1", "root", "2 fortnights", "x"))
            .await,
        400,
        "duration",
    );
}

/// What hyper refuses before pedm's code runs (a request it cannot parse) still gets pedm's
/// JSON error body, and the server goes on serving.
#[tokio::test]
async fn unparsable_requests_get_a_json_error_too() {
    use std::io::{Read, Write};
    let s = Server::start();
    let addr = s.url.trim_start_matches("http://").to_string();
    for garbage in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nbad\x01name: v\r\n\r\n",
    ] {
        let mut c = std::net::TcpStream::connect(&addr).unwrap();
        c.write_all(garbage).unwrap();
        let mut answer = String::new();
        c.read_to_string(&mut answer).unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").expect("a head and a body");
        assert!(head.starts_with("HTTP/1.1 400 "), "{answer}");
        assert!(head.contains("content-type: application/json"), "{answer}");
        let v: serde_json::Value = serde_json::from_str(body).expect("a JSON body");
        assert_eq!(v["error"]["code"], "invalid", "{answer}");
    }
    let ok = reqwest::get(format!("{}/healthz", s.url)).await.unwrap();
    assert_eq!(ok.status().as_u16(), 200);
}
