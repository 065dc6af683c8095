//! Workload identities: a CI job exchanges the OIDC token its platform issued for a short-lived
//! pedm token (RFC 8693, `POST /oauth/token`), and policy decides on what the platform
//! asserted (`principal.workload`). The platform here is the test IdP (panva's `oidc-provider`,
//! `scripts/test-idp/idp.mjs`) minting tokens with its real signing key through `/admin/mint`,
//! as a CI issuer would; pedmd discovers it and fetches its keys like any issuer.

mod common;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::idp::Idp;
use common::*;
use pedm_api::*;
use serde_json::{Value, json};
use std::process::{Command, Stdio};

const POLICY: &str = r#"
@id("admins-administer")
permit (principal, action in [Pedm::Action::"manage_users", Pedm::Action::"manage_targets",
    Pedm::Action::"manage_policies", Pedm::Action::"manage_grants", Pedm::Action::"read_audit"], resource)
when { principal.admin };

// The deploy workflow on main may deploy, auto-approved, for at most 15 minutes.
@id("deploy-from-main")
@auto_approve("true")
@max_duration("15m")
permit (principal, action == Pedm::Action::"request", resource)
when {
    resource.name == "deployer" &&
    principal has workload && principal.workload.trust == "github" &&
    principal.workload has repository && principal.workload.repository == "org/app" &&
    principal.workload has git_ref && principal.workload.git_ref == "refs/heads/main"
};
"#;

fn config(idp: &Idp) -> String {
    format!(
        r#"
[[auth.workload]]
name = "github"
issuer = "{}"
audience = "pedm-ci"
user = "ci-deployer"
token_lifetime = "10m"
required_claims = {{ repository_owner = "org" }}
"#,
        idp.issuer
    )
}

async fn setup(idp: &Idp) -> Server {
    let s = Server::start_with(Options {
        config: Some(config(idp)),
        ..Default::default()
    });
    let a = s.admin();
    standard_targets(&s).await;
    a.create_role("web1", &CreateRole::new("deployer", "1h"))
        .await
        .expect("role");
    a.apply_policies(&ApplyPolicies {
        sources: vec![PolicySource {
            name: "ci.cedar".into(),
            text: POLICY.into(),
        }],
        comment: None,
    })
    .await
    .expect("policy");
    s
}

/// Claims of a GitHub Actions job of `org/app` on `git_ref`.
fn github(git_ref: &str) -> Value {
    json!({
        "sub": format!("repo:org/app:ref:{git_ref}"),
        "aud": "pedm-ci",
        "repository": "org/app",
        "repository_owner": "org",
        "ref": git_ref,
        "workflow_ref": format!("org/app/.github/workflows/deploy.yml@{git_ref}"),
        "environment": "production",
    })
}

async fn mint(idp: &Idp, claims: Value, ttl: i64) -> String {
    let r = idp
        .admin("mint", json!({ "claims": claims, "ttl": ttl }))
        .await;
    r["token"].as_str().expect("token").to_string()
}

/// `POST /oauth/token` with this form: (status, body).
async fn post_form(s: &Server, form: &[(&str, &str)]) -> (u16, Value) {
    let body = form
        .iter()
        .map(|(k, v)| format!("{k}={}", urlencode(v)))
        .collect::<Vec<_>>()
        .join("&");
    let r = reqwest::Client::new()
        .post(format!("{}/oauth/token", s.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .expect("post");
    let status = r.status().as_u16();
    assert_eq!(
        r.headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok()),
        Some("no-store")
    );
    (status, r.json().await.expect("json"))
}

fn urlencode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

const EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ID_TOKEN: &str = "urn:ietf:params:oauth:token-type:id_token";

async fn exchange_raw(s: &Server, token: &str) -> (u16, Value) {
    post_form(
        s,
        &[
            ("grant_type", EXCHANGE),
            ("subject_token", token),
            ("subject_token_type", ID_TOKEN),
        ],
    )
    .await
}

async fn deploy(c: &Client) -> RequestState {
    c.create_request(&req("web1", "deployer", "10m", "deploy build 42"))
        .await
        .expect("request")
        .request
        .state
}

#[tokio::test]
async fn a_ci_job_exchanges_its_platform_token_and_policy_decides_on_its_claims() {
    let idp = Idp::start(json!({}));
    let s = setup(&idp).await;

    // Through the CLI, as a CI step would: the token in an environment variable, the pedm
    // token alone on stdout.
    let main = mint(&idp, github("refs/heads/main"), 300).await;
    let o = Command::new(env!("CARGO_BIN_EXE_pedm"))
        .args(["token", "exchange", "--subject-token-env", "CI_ID_TOKEN"])
        .env("PEDM_URL", &s.url)
        .env_remove("PEDM_TOKEN")
        .env_remove("PEDM_TOKEN_FILE")
        .env("CI_ID_TOKEN", &main)
        .stdin(Stdio::null())
        .output()
        .expect("pedm");
    assert!(o.status.success(), "{}", stderr(&o));
    let token = stdout(&o).trim().to_string();
    assert!(token.starts_with("pedm_"), "{token}");
    assert!(stderr(&o).contains("valid for 600s"), "{}", stderr(&o));
    let ci = s.client(&token);
    assert_eq!(ci.whoami().await.unwrap().user.name, "ci-deployer");
    assert_eq!(deploy(&ci).await, RequestState::Approved);

    // The same repository on a feature branch: a valid exchange, but policy says no.
    let feature = mint(&idp, github("refs/heads/feature"), 300).await;
    let t = s
        .anonymous()
        .exchange_workload_token(&feature)
        .await
        .unwrap();
    assert_eq!((t.token_type.as_str(), t.expires_in), ("Bearer", 600));
    assert_eq!(
        deploy(&s.client(&t.access_token)).await,
        RequestState::Denied
    );
    // A person is not a workload: the same rule never matches them.
    let alice = s.client(&user_with_token(&s, "alice", false).await);
    assert_eq!(deploy(&alice).await, RequestState::Denied);

    // The exchange is recorded with what the platform asserted.
    let ev = s
        .admin()
        .audit_events(&AuditQuery {
            action: Some("token.exchanged".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(ev.len(), 2);
    assert_eq!(ev[0].actor, "ci-deployer");
    let w = &ev[0].data["workload"];
    assert_eq!(w["repository"], "org/app");
    assert_eq!(w["trust"], "github");
    assert_eq!(w["subject"], "repo:org/app:ref:refs/heads/main");
    // The workload user was created on first use, not an admin.
    let users = s.admin().list_users().await.unwrap();
    let u = users
        .iter()
        .find(|u| u.name == "ci-deployer")
        .expect("user");
    assert!(!u.admin);
}

#[tokio::test]
async fn bad_exchanges_are_refused_recorded_and_mint_nothing() {
    let idp = Idp::start(json!({}));
    let s = setup(&idp).await;
    let good = github("refs/heads/main");
    let with = |k: &str, v: Value| {
        let mut c = good.clone();
        c[k] = v;
        c
    };
    let mut cases: Vec<(&str, String)> = vec![
        (
            "wrong audience",
            mint(&idp, with("aud", json!("someone-else")), 300).await,
        ),
        ("expired", mint(&idp, good.clone(), -600).await),
        (
            "required claim differs",
            mint(&idp, with("repository_owner", json!("evil")), 300).await,
        ),
        (
            "control characters",
            mint(&idp, with("repository", json!("org/app\u{1b}[2J")), 300).await,
        ),
        (
            "unknown issuer",
            mint(&idp, with("iss", json!("https://evil.example")), 300).await,
        ),
    ];
    // Unsigned (`alg: none`) and a payload altered after signing.
    let signed = mint(&idp, good.clone(), 300).await;
    let parts: Vec<&str> = signed.split('.').collect();
    let payload: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    let mut evil = payload.clone();
    evil["ref"] = json!("refs/heads/main-evil");
    let evil = URL_SAFE_NO_PAD.encode(evil.to_string());
    let none = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
    cases.push(("alg none", format!("{none}.{}.", parts[1])));
    cases.push((
        "altered payload",
        format!("{}.{evil}.{}", parts[0], parts[2]),
    ));
    cases.push(("not a JWT", "hello".into()));
    // What each refusal names.
    let needle = |what: &str| match what {
        "wrong audience" => "audiences",
        "expired" => "expired",
        "required claim differs" => "repository_owner",
        "control characters" => "claim repository",
        "unknown issuer" | "not a JWT" => "not a configured workload issuer",
        "alg none" => "No signature",
        _ => "bad signature",
    };
    for (what, token) in &cases {
        let (status, body) = exchange_raw(&s, token).await;
        assert_eq!(status, 400, "{what}: {body}");
        assert_eq!(body["error"], "invalid_grant", "{what}: {body}");
        let why = body["error_description"].as_str().unwrap_or("");
        assert!(why.contains(needle(what)), "{what}: {why}");
        assert!(
            !body["error_description"]
                .as_str()
                .unwrap_or("")
                .contains(token.as_str()),
            "{what}: the answer repeats the token"
        );
    }
    let refused = s
        .admin()
        .audit_events(&AuditQuery {
            action: Some("token.exchange".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(refused.len(), cases.len(), "{refused:?}");
    assert!(refused.iter().all(|e| e.outcome == Outcome::Denied));
    // Nothing was minted, no user was made.
    assert!(
        s.admin()
            .list_users()
            .await
            .unwrap()
            .iter()
            .all(|u| u.name != "ci-deployer")
    );

    // Malformed requests: OAuth errors naming the problem.
    let (st, b) = post_form(&s, &[("grant_type", "password"), ("username", "x")]).await;
    assert_eq!(
        (st, b["error"].as_str()),
        (400, Some("unsupported_grant_type")),
        "{b}"
    );
    let (st, b) = post_form(
        &s,
        &[("grant_type", EXCHANGE), ("subject_token_type", ID_TOKEN)],
    )
    .await;
    assert_eq!(
        (st, b["error"].as_str()),
        (400, Some("invalid_request")),
        "{b}"
    );
    assert!(
        b["error_description"]
            .as_str()
            .unwrap()
            .contains("subject_token"),
        "{b}"
    );
    let (st, b) = post_form(
        &s,
        &[
            ("grant_type", EXCHANGE),
            ("subject_token", &signed),
            (
                "subject_token_type",
                "urn:ietf:params:oauth:token-type:saml2",
            ),
        ],
    )
    .await;
    assert_eq!(
        (st, b["error"].as_str()),
        (400, Some("invalid_request")),
        "{b}"
    );

    // A workload never acts as an administrator: once its user is one, exchanges stop.
    let (st, _) = exchange_raw(&s, &signed).await;
    assert_eq!(st, 200);
    s.admin()
        .update_user(
            "ci-deployer",
            &UpdateUser {
                admin: Some(true),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let (st, b) = exchange_raw(&s, &signed).await;
    assert_eq!(
        (st, b["error"].as_str()),
        (400, Some("invalid_grant")),
        "{b}"
    );
    assert!(
        b["error_description"]
            .as_str()
            .unwrap()
            .contains("administrator"),
        "{b}"
    );
}

#[tokio::test]
async fn without_a_configured_trust_there_is_no_exchange() {
    let s = Server::start();
    let (st, b) = exchange_raw(&s, "a.b.c").await;
    assert_eq!(
        (st, b["error"].as_str()),
        (400, Some("unsupported_grant_type")),
        "{b}"
    );
}
