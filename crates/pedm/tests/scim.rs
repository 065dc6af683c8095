//! SCIM 2.0 provisioning through the real binaries, driven by a real SCIM client: `scim2-cli`
//! (PyPI, installed into target/scim-venv by scripts/install-test-deps) for its compliance
//! suite (scim2-tester) and for creating users and groups, and raw HTTP where a test needs the
//! payloads identity providers are known to send (Microsoft Entra's capitalised PATCH ops and
//! string booleans). An identity provider pushes users and groups, the groups decide Cedar
//! policy, a leaver is deprovisioned at once (grants revoked, tokens refused), and what pedm
//! owns stays out of a SCIM client's reach.

mod common;

use common::*;
use pedm_api::*;
use pedm_store::testing::TestPostgres;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::{Command, Output};

fn scim2() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let bin = target.join("scim-venv/bin/scim2");
    assert!(
        bin.is_file(),
        "scim2-cli is not installed at {}: run scripts/install-test-deps",
        bin.display()
    );
    bin
}

/// Runs `scim2 --url <pedmd>/scim/v2 <args>` with the token in SCIM_CLI_HEADERS (never on
/// the command line), `stdin` fed if given.
fn run_scim2(s: &Server, token: &str, args: &[&str], stdin: Option<&str>) -> Output {
    use std::io::Write;
    let mut c = Command::new(scim2());
    c.arg("--url")
        .arg(format!("{}/scim/v2", s.url))
        .args(args)
        .env("SCIM_CLI_HEADERS", format!("Authorization: Bearer {token}"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().expect("scim2 runs");
    let mut input = child.stdin.take().expect("stdin");
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).expect("stdin written");
    }
    drop(input);
    child.wait_with_output().expect("scim2 ends")
}

fn scim_json(o: &Output) -> Value {
    assert!(
        o.status.success(),
        "scim2 failed: {}{}",
        stdout(o),
        stderr(o)
    );
    serde_json::from_str(stdout(o).trim())
        .unwrap_or_else(|e| panic!("scim2 printed no JSON ({e}): {}", stdout(o)))
}

fn server(extra: &str, database_url: Option<String>) -> Server {
    Server::start_with(Options {
        config: Some(format!("[scim]\nenabled = true\n{extra}")),
        database_url,
        ..Default::default()
    })
}

/// `pedm scim token create NAME`: the token alone on stdout.
fn scim_token(s: &Server, name: &str) -> String {
    let out = s.cli(&s.admin_token, &["scim", "token", "create", name]);
    assert!(out.status.success(), "{}", stderr(&out));
    let token = stdout(&out).trim().to_string();
    assert!(token.starts_with("pedmscim_"), "{token}");
    assert!(stderr(&out).contains("shown once"));
    token
}

/// A raw SCIM call (as an identity provider's connector makes it).
async fn call(
    s: &Server,
    token: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let http = reqwest::Client::new();
    let mut r = http
        .request(method.parse().unwrap(), format!("{}/scim/v2{path}", s.url))
        .bearer_auth(token);
    if let Some(b) = body {
        r = r
            .header("content-type", "application/scim+json")
            .body(b.to_string());
    }
    let resp = r.send().await.expect("pedmd answers");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn patch(ops: Value) -> Value {
    json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": ops})
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

@id("approvers-approve")
permit (principal in Pedm::Group::"approvers", action == Pedm::Action::"approve", resource);
"#;

async fn ops_policy(s: &Server) {
    standard_targets(s).await;
    s.admin()
        .apply_policies(&ApplyPolicies {
            sources: vec![PolicySource {
                name: "scim".into(),
                text: POLICY.into(),
            }],
            comment: None,
        })
        .await
        .expect("policy");
}

/// The compliance suite of scim2-tester, run by `scim2 test` against pedmd. One finding is
/// pedm's choice and expected: removing `active` is refused (a user's state is never left
/// undefined: an identity provider deprovisions with `active: false` or DELETE).
fn compliance(s: &Server) {
    let token = scim_token(s, "tester");
    let out = run_scim2(s, &token, &["test"], None);
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    let mut errors = vec![];
    for (i, l) in lines.iter().enumerate() {
        if l.starts_with("ERROR") {
            errors.push(format!("{l} {}", lines.get(i + 1).unwrap_or(&"").trim()));
        }
    }
    let successes = lines.iter().filter(|l| l.starts_with("SUCCESS")).count();
    assert!(
        successes >= 40,
        "the suite hardly ran ({successes} checks passed):\n{text}{}",
        stderr(&out)
    );
    assert_eq!(
        errors,
        [
            "ERROR check_remove_attribute Failed to remove attribute 'active': active cannot be removed"
        ],
        "\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_scim_compliance_suite_passes() {
    let s = server("", None);
    compliance(&s);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_scim_compliance_suite_passes_on_postgres() {
    let Some(pg) = TestPostgres::start_or_skip() else {
        return;
    };
    let s = server("", Some(pg.fresh_database("scim").expect("database")));
    compliance(&s);
}

async fn provision_and_deprovision(s: &Server) {
    ops_policy(s).await;
    let token = scim_token(s, "okta");

    // Each kind of token only where it belongs.
    let (status, _) = call(s, &s.admin_token, "GET", "/Users", None).await;
    assert_eq!(status, 401, "an API token is no SCIM token");
    let as_api = s.client(&token).list_users().await.unwrap_err();
    assert_eq!(as_api.status(), Some(401), "a SCIM token is no API token");

    // The provider pushes alice and an empty ops group (scim2-cli, as a connector would).
    let alice = scim_json(&run_scim2(
        s,
        &token,
        &[
            "create",
            "user",
            "--user-name",
            "alice",
            "--display-name",
            "Alice Liddell",
            "--external-id",
            "00u1",
            "--active",
            "true",
        ],
        None,
    ));
    assert_eq!(alice["id"], "alice");
    assert_eq!(alice["active"], true);
    let user = s
        .admin()
        .list_users()
        .await
        .unwrap()
        .into_iter()
        .find(|u| u.name == "alice")
        .expect("alice is a pedm user");
    assert!(!user.admin && !user.disabled);
    assert_eq!(user.display_name.as_deref(), Some("Alice Liddell"));
    let group = scim_json(&run_scim2(
        s,
        &token,
        &[
            "create",
            "group",
            "--display-name",
            "ops",
            "--external-id",
            "g1",
        ],
        None,
    ));
    assert_eq!(group["id"], "ops");
    let created = audit_of(s, "user.created").await;
    let created = created
        .iter()
        .find(|e| e.subject.as_deref() == Some("user:alice"))
        .expect("alice's creation is recorded");
    assert_eq!(created.actor, "scim:okta");

    // Not yet in ops: policy says no.
    let alice_token = s
        .admin()
        .create_token(&CreateToken {
            user: Some("alice".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .token;
    let alice_api = s.client(&alice_token);
    let refused = alice_api
        .create_request(&req("web1", "root", "30m", "disk full"))
        .await
        .unwrap();
    assert_eq!(refused.request.state, RequestState::Denied, "{refused:?}");

    // Entra adds her (capitalised op, members as an array of values).
    let (status, g) = call(
        s,
        &token,
        "PATCH",
        "/Groups/ops",
        Some(patch(
            json!([{"op": "Add", "path": "members", "value": [{"value": "alice"}]}]),
        )),
    )
    .await;
    assert_eq!(status, 200, "{g}");
    assert_eq!(
        g["members"],
        json!([{"value": "alice", "$ref": "/scim/v2/Users/alice"}])
    );
    let r = alice_api
        .create_request(&req("web1", "root", "30m", "disk full"))
        .await
        .expect("ops may request root");
    assert_eq!(r.request.state, RequestState::Approved);
    let grant = r.grant.expect("granted at once");
    // The user resource shows the group the provider put her in.
    let (_, u) = call(s, &token, "GET", "/Users/alice?attributes=groups", None).await;
    assert_eq!(u["groups"][0]["value"], "ops");
    assert!(u.get("displayName").is_none(), "attributes= narrows: {u}");

    // Filters as connectors use them to find a user before creating it.
    let (_, list) = call(
        s,
        &token,
        "GET",
        "/Users?filter=userName%20eq%20%22ALICE%22",
        None,
    )
    .await;
    assert_eq!(list["totalResults"], 1, "{list}");
    let (_, list) = call(
        s,
        &token,
        "GET",
        "/Users?filter=externalId%20eq%20%2200u1%22",
        None,
    )
    .await;
    assert_eq!(list["Resources"][0]["id"], "alice");

    // She leaves: Entra's deprovisioning PATCH (string boolean). Everything ends at once.
    let (status, u) = call(
        s,
        &token,
        "PATCH",
        "/Users/alice",
        Some(patch(
            json!([{"op": "Replace", "path": "active", "value": "False"}]),
        )),
    )
    .await;
    assert_eq!(status, 200, "{u}");
    assert_eq!(u["active"], false);
    let g = s.admin().get_grant(grant.id).await.unwrap();
    assert_eq!(g.state, GrantState::Revoked, "{g:?}");
    assert_eq!(alice_api.whoami().await.unwrap_err().status(), Some(401));
    let ev = &audit_of(s, "user.deprovisioned").await[0];
    assert_eq!(ev.actor, "scim:okta");
    assert_eq!(ev.data["grants_revoked"], json!([grant.id]));
    assert_eq!(ev.data["tokens_revoked"].as_array().map(Vec::len), Some(1));

    // Rehired: enabled again, but no old token comes back to life.
    let (status, u) = call(
        s,
        &token,
        "PATCH",
        "/Users/alice",
        Some(patch(json!([{"op": "replace", "value": {"active": true}}]))),
    )
    .await;
    assert_eq!((status, &u["active"]), (200, &json!(true)));
    assert_eq!(alice_api.whoami().await.unwrap_err().status(), Some(401));

    // DELETE: gone for the provider, kept (disabled) by pedm for the audit.
    let out = run_scim2(s, &token, &["delete", "user", "alice"], None);
    assert!(out.status.success(), "{}", stderr(&out));
    let (status, _) = call(s, &token, "GET", "/Users/alice", None).await;
    assert_eq!(status, 404);
    let kept = s
        .admin()
        .list_users()
        .await
        .unwrap()
        .into_iter()
        .find(|u| u.name == "alice")
        .expect("pedm keeps the user");
    assert!(kept.disabled);

    // The provider's token revoked: refused from the next call, and recorded.
    let id = token.split('_').nth(1).unwrap().to_string();
    let out = s.cli(&s.admin_token, &["scim", "token", "revoke", &id]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (status, body) = call(s, &token, "GET", "/Users", None).await;
    assert_eq!(status, 401);
    assert_eq!(
        body["schemas"][0],
        "urn:ietf:params:scim:api:messages:2.0:Error"
    );
    let failed = audit_of(s, "auth.failed").await;
    assert!(
        failed.iter().any(|e| e.data["kind"] == "scim"
            && e.data["reason"] == "revoked SCIM token"
            && !e.data.to_string().contains(&token)),
        "{failed:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_identity_provider_provisions_groups_that_decide_policy_and_deprovisions_leavers() {
    provision_and_deprovision(&server("", None)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn provisioning_on_postgres() {
    let Some(pg) = TestPostgres::start_or_skip() else {
        return;
    };
    provision_and_deprovision(&server("", Some(pg.fresh_database("prov").expect("db")))).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_scim_client_cannot_reach_what_pedm_owns() {
    let mut s = server("", None);
    ops_policy(&s).await;
    // Two-person control from here on (the policy above was applied before it).
    s.reconfigure(
        Some("[scim]\nenabled = true\n[policy]\nrequire_approvals = 1\n"),
        &[],
    );
    let token = scim_token(&s, "okta");
    let users_before = s.admin().list_users().await.unwrap();

    // The administrator is not adopted (nor is any admin).
    let (status, body) = call(
        &s,
        &token,
        "POST",
        "/Users",
        Some(json!({"schemas": [pedm_api::scim::USER_SCHEMA], "userName": "admin"})),
    )
    .await;
    assert!(status == 403 || status == 409, "{status} {body}");
    assert!(
        body["detail"].as_str().unwrap_or("").contains("admin"),
        "{body}"
    );

    // Hostile names and bodies: refused with the SCIM error shape, nothing created.
    for (name, why) in [
        ("../etc", "path"),
        ("al\u{1b}[31mice", "escape sequence"),
        ("", "empty"),
    ] {
        let (status, body) = call(
            &s,
            &token,
            "POST",
            "/Users",
            Some(json!({"schemas": [pedm_api::scim::USER_SCHEMA], "userName": name})),
        )
        .await;
        assert_eq!(status, 400, "{why}: {body}");
        assert_eq!(body["scimType"], "invalidValue", "{why}: {body}");
    }
    let (status, body) = call(&s, &token, "POST", "/Users", Some(json!("{not json"))).await;
    assert_eq!(
        (status, body["scimType"].as_str()),
        (400, Some("invalidSyntax"))
    );
    let (status, body) = call(
        &s,
        &token,
        "GET",
        "/Users?filter=userName%20co%20%22a%22",
        None,
    )
    .await;
    assert_eq!(
        (status, body["scimType"].as_str()),
        (400, Some("invalidFilter"))
    );
    assert_eq!(s.admin().list_users().await.unwrap(), users_before);

    // A user made by hand is adopted, not duplicated: from now on the provider decides.
    let carol = s.client(&user_with_token(&s, "carol", false).await);
    let carol_user = || json!({"schemas": [pedm_api::scim::USER_SCHEMA], "userName": "Carol"});
    let (status, body) = call(&s, &token, "POST", "/Users", Some(carol_user())).await;
    assert_eq!((status, &body["id"]), (201, &json!("carol")), "{body}");
    let adopted = audit_of(&s, "user.scim_adopted").await;
    assert!(
        adopted
            .iter()
            .any(|e| e.subject.as_deref() == Some("user:carol"))
    );
    let (status, body) = call(&s, &token, "POST", "/Users", Some(carol_user())).await;
    assert_eq!(
        (status, body["scimType"].as_str()),
        (409, Some("uniqueness")),
        "{body}"
    );
    let (status, _) = call(&s, &token, "DELETE", "/Users/carol", None).await;
    assert_eq!(status, 204);
    assert_eq!(
        carol.whoami().await.unwrap_err().status(),
        Some(401),
        "her hand-made token too"
    );

    // A group pedm's admins made is never taken over.
    s.admin()
        .create_group(&CreateGroup {
            name: "oncall".into(),
            description: None,
        })
        .await
        .unwrap();
    let (status, body) = call(
        &s,
        &token,
        "POST",
        "/Groups",
        Some(json!({"schemas": [pedm_api::scim::GROUP_SCHEMA], "displayName": "oncall"})),
    )
    .await;
    assert_eq!(
        (status, body["scimType"].as_str()),
        (409, Some("uniqueness")),
        "{body}"
    );

    // Under two-person control, nobody becomes an approver by SCIM: one admin's SCIM token
    // must not do what that admin alone cannot.
    let bob = scim_json(&run_scim2(
        &s,
        &token,
        &["create", "user", "--user-name", "bob"],
        None,
    ));
    assert_eq!(bob["id"], "bob");
    let (status, body) = call(
        &s,
        &token,
        "POST",
        "/Groups",
        Some(
            json!({"schemas": [pedm_api::scim::GROUP_SCHEMA], "displayName": "approvers",
                    "members": [{"value": "bob"}]}),
        ),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or("")
            .contains("decides approvals"),
        "{body}"
    );
    let (status, _) = call(
        &s,
        &token,
        "POST",
        "/Groups",
        Some(json!({"schemas": [pedm_api::scim::GROUP_SCHEMA], "displayName": "approvers"})),
    )
    .await;
    assert_eq!(status, 201, "an empty approver group is harmless");
    let (status, _) = call(
        &s,
        &token,
        "PATCH",
        "/Groups/approvers",
        Some(patch(
            json!([{"op": "add", "path": "members", "value": [{"value": "bob"}]}]),
        )),
    )
    .await;
    assert_eq!(status, 403);
    let denied = audit_of(&s, "group.update").await;
    assert!(
        denied
            .iter()
            .any(|e| e.actor == "scim:okta" && e.outcome == Outcome::Denied),
        "{denied:?}"
    );
    let approvers = s
        .admin()
        .list_groups()
        .await
        .unwrap()
        .into_iter()
        .find(|g| g.name == "approvers")
        .unwrap();
    assert!(approvers.members.is_empty());

    // Nor does a provisioned user become an administrator through the API.
    let e = s
        .admin()
        .update_user(
            "bob",
            &UpdateUser {
                admin: Some(true),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(422), "{e:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn scim_is_off_unless_enabled() {
    let s = Server::start();
    let out = s.cli(&s.admin_token, &["scim", "token", "create", "okta"]);
    assert!(
        out.status.success(),
        "tokens can be made ahead: {}",
        stderr(&out)
    );
    let token = stdout(&out).trim().to_string();
    let (status, body) = call(&s, &token, "GET", "/Users", None).await;
    assert_eq!(status, 404, "{body}");
    // Tokens are an admin's business.
    let alice = user_with_token(&s, "alice", false).await;
    let out = s.cli(&alice, &["scim", "token", "create", "mine"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("403") || stderr(&out).to_lowercase().contains("forbidden"),
        "{}",
        stderr(&out)
    );
}
