//! An `aws` target end to end through pedmd, against moto in server mode (the AWS API
//! emulator, PyPI, installed into target/aws-venv by scripts/install-test-deps): a grant
//! attaches its IAM policy and its end detaches it; a revoke while AWS is out of reach is
//! retried, alerts after three attempts and completes when AWS is back; `pedm aws
//! credentials` hands the holder STS credentials that the real AWS CLI takes as its
//! `credential_process`, tagged with the grant; nobody else gets them, and a role without an
//! AWS role to assume says so. `pedm aws console` signs in through AWS's federation endpoint
//! (a stand-in here, below: no emulator has it), and a grant that ends early denies its
//! sessions in the role's inline policy.

mod common;

#[allow(dead_code)]
#[path = "../../provision/tests/support/moto.rs"]
mod moto;

use common::*;
use moto::{ACCOUNT, Moto, credentials_file, venv_bin};
use pedm_api::{CreateRole, CreateTarget, TargetKind};
use std::process::Command;

const READ_ONLY: &str = "arn:aws:iam::aws:policy/ReadOnlyAccess";
const ADMIN: &str = "arn:aws:iam::aws:policy/AdministratorAccess";

struct World {
    _dir: tempfile::TempDir,
    moto: Moto,
    federation: Federation,
    iam: aws_sdk_iam::Client,
    s: Server,
    /// The notifications pedmd sends to its webhook.
    notices: tokio::sync::mpsc::UnboundedReceiver<serde_json::Value>,
}

/// A stand-in for AWS's sign-in federation endpoint (`https://signin.aws.amazon.com/federation`),
/// which moto does not emulate, written from AWS's IAM User Guide ("Enabling custom identity
/// broker access to the AWS console") and AWS's own toolkit, which sends the request as a form
/// in a POST body: `Action=getSigninToken`, `SessionType=json`, optional `SessionDuration`
/// (900–43200 seconds), `Session` = `{"sessionId", "sessionKey", "sessionToken"}`; the answer
/// is `{"SigninToken": …}`. It refuses (HTTP 400) what AWS would refuse for its shape; that
/// the session's credentials are real is checked by the test against moto.
struct Federation {
    url: String,
    seen: Seen,
}

/// Every form the federation stand-in received, and the token it answered.
type Seen = std::sync::Arc<std::sync::Mutex<Vec<(Form, String)>>>;
type Form = std::collections::HashMap<String, String>;

async fn federation() -> Federation {
    use axum::response::IntoResponse;
    let seen: Seen = Default::default();
    let app = axum::Router::new()
        .route(
            "/federation",
            axum::routing::post(
                |axum::extract::State(seen): axum::extract::State<Seen>,
                 axum::Form(f): axum::Form<Form>| async move {
                    let session: Option<serde_json::Value> =
                        f.get("Session").and_then(|s| serde_json::from_str(s).ok());
                    let duration_ok = f
                        .get("SessionDuration")
                        .is_none_or(|d| d.parse::<u64>().is_ok_and(|d| (900..=43200).contains(&d)));
                    let session_ok = session.is_some_and(|s| {
                        ["sessionId", "sessionKey", "sessionToken"]
                            .iter()
                            .all(|k| s[k].as_str().is_some_and(|v| !v.is_empty()))
                    });
                    if f.get("Action").map(String::as_str) != Some("getSigninToken")
                        || !duration_ok
                        || !session_ok
                    {
                        return (axum::http::StatusCode::BAD_REQUEST, "bad request")
                            .into_response();
                    }
                    let token = format!("signin-{}", uuid::Uuid::new_v4().simple());
                    seen.lock().unwrap().push((f, token.clone()));
                    axum::Json(serde_json::json!({"SigninToken": token})).into_response()
                },
            ),
        )
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/federation", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Federation { url, seen }
}

async fn world() -> World {
    let moto = Moto::start().await;
    let federation = federation().await;
    let iam = aws_sdk_iam::Client::new(&moto.sdk().await);
    for u in ["alice", "bob"] {
        iam.create_user()
            .user_name(u)
            .send()
            .await
            .expect("IAM user");
    }
    iam.create_role()
        .role_name("pedm-admin")
        .assume_role_policy_document(
            serde_json::json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
                "Principal": {"AWS": format!("arn:aws:iam::{ACCOUNT}:root")},
                "Action": ["sts:AssumeRole", "sts:SetSourceIdentity", "sts:TagSession"]}]})
            .to_string(),
        )
        .send()
        .await
        .expect("IAM role");
    iam.attach_role_policy()
        .role_name("pedm-admin")
        .policy_arn(ADMIN)
        .send()
        .await
        .expect("role policy");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (hook, notices) = receiver().await;
    let config = format!(
        r#"
[[notify.webhook]]
name = "security"
url = "{hook}"
secret = "k"

[provision.targets.aws-prod]
kind = "aws"
endpoint_url = "{url}"
credentials_file = "{creds}"
timeout = "5s"
federation_url = "{fed}"

[provision.roles.aws-prod.readonly]
policy_arn = "{READ_ONLY}"

[provision.roles.aws-prod.admin]
assume_role_arn = "arn:aws:iam::{ACCOUNT}:role/pedm-admin"
"#,
        url = moto.url(),
        creds = credentials_file(dir.path()).display(),
        fed = federation.url,
    );
    let s = Server::start_with(Options {
        config: Some(config),
        ..Default::default()
    });
    let a = s.admin();
    a.create_target(&CreateTarget {
        name: "aws-prod".into(),
        kind: TargetKind::Aws,
        description: Some("the production AWS account".into()),
        labels: Default::default(),
    })
    .await
    .unwrap();
    for role in ["readonly", "admin"] {
        a.create_role(
            "aws-prod",
            &CreateRole {
                auto_approve: true,
                ..CreateRole::new(role, "1h")
            },
        )
        .await
        .unwrap();
    }
    World {
        _dir: dir,
        moto,
        federation,
        iam,
        s,
        notices,
    }
}

async fn attached(iam: &aws_sdk_iam::Client, user: &str) -> bool {
    iam.list_attached_user_policies()
        .user_name(user)
        .send()
        .await
        .expect("listing policies")
        .attached_policies()
        .iter()
        .any(|p| p.policy_arn() == Some(READ_ONLY))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_grant_attaches_its_policy_until_it_ends_and_a_revoke_survives_aws_being_away() {
    let mut w = world().await;
    let token = user_with_token(&w.s, "alice", false).await;
    let alice = w.s.client(&token);

    // A short grant: attached while it lasts, detached by expiry.
    let g = alice
        .create_request(&req(
            "aws-prod",
            "readonly",
            "3s",
            "read the billing console",
        ))
        .await
        .unwrap()
        .grant
        .unwrap();
    let active = wait_provision(&w.s, g.id, "active").await;
    assert_eq!(
        active.provision_detail.as_deref(),
        Some(format!("attached {READ_ONLY} to IAM user alice").as_str())
    );
    assert!(attached(&w.iam, "alice").await);
    wait_provision(&w.s, g.id, "revoked").await;
    assert!(!attached(&w.iam, "alice").await, "detached at expiry");

    // AWS out of reach while a grant is released: retried, alerted, then done.
    let g = alice
        .create_request(&req(
            "aws-prod",
            "readonly",
            "30m",
            "read the billing console",
        ))
        .await
        .unwrap()
        .grant
        .unwrap();
    wait_provision(&w.s, g.id, "active").await;
    assert!(attached(&w.iam, "alice").await);
    w.moto.down();
    alice
        .release_grant(g.id, &pedm_api::Reason { reason: None })
        .await
        .unwrap();
    let alert = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        loop {
            let v = w.notices.recv().await.expect("receiver open");
            if v["kind"] == "provision.revoke_failing" {
                return v;
            }
        }
    })
    .await
    .expect("a provision.revoke_failing notification");
    assert_eq!(alert["severity"], "high", "{alert}");
    assert!(
        alert.to_string().contains("unreachable for 3 attempts"),
        "{alert}"
    );
    let failed = audit_of(&w.s, "provision.failed").await;
    assert!(
        failed.len() >= 3
            && failed.iter().all(|e| {
                e.data["error"]
                    .as_str()
                    .is_some_and(|m| m.contains("dispatch failure"))
                    && e.data["permanent"] == false
            }),
        "{failed:#?}"
    );
    assert!(
        attached(&w.iam, "alice").await,
        "still there while AWS was away"
    );
    w.moto.up().await;
    wait_provision(&w.s, g.id, "revoked").await;
    assert!(
        !attached(&w.iam, "alice").await,
        "detached once AWS was back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pedm_aws_credentials_feed_the_real_aws_cli_and_only_the_holder() {
    let w = world().await;
    let alice_token = user_with_token(&w.s, "alice", false).await;
    let bob_token = user_with_token(&w.s, "bob", false).await;
    let alice = w.s.client(&alice_token);
    let g = alice
        .create_request(&req("aws-prod", "admin", "30m", "rotate the KMS key"))
        .await
        .unwrap()
        .grant
        .unwrap();
    // Nothing is switched on, but the grant is provisioned: its early end reaches AWS.
    let active = wait_provision(&w.s, g.id, "active").await;
    assert!(
        active
            .provision_detail
            .as_deref()
            .is_some_and(|d| d.contains("nothing switched on")),
        "{active:?}"
    );

    // The real AWS CLI with `credential_process = pedm aws credentials --target aws-prod`.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    std::fs::write(
        &config,
        format!(
            "[profile pedm]\nregion = us-east-1\ncredential_process = {} aws credentials --target aws-prod\n",
            env!("CARGO_BIN_EXE_pedm")
        ),
    )
    .unwrap();
    let out = Command::new(venv_bin("aws"))
        .args([
            "sts",
            "get-caller-identity",
            "--profile",
            "pedm",
            "--output",
            "json",
        ])
        .env("AWS_CONFIG_FILE", &config)
        .env("AWS_SHARED_CREDENTIALS_FILE", dir.path().join("none"))
        .env("AWS_ENDPOINT_URL", w.moto.url())
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_PROFILE")
        .env("PEDM_URL", &w.s.url)
        .env("PEDM_TOKEN", &alice_token)
        .env_remove("PEDM_TOKEN_FILE")
        .output()
        .expect("running aws");
    assert!(out.status.success(), "aws: {}", stderr(&out));
    let who: serde_json::Value = serde_json::from_slice(&out.stdout).expect("aws prints JSON");
    let arn = who["Arn"].as_str().unwrap_or_default();
    let short = &g.id.simple().to_string()[24..];
    assert_eq!(
        arn,
        format!("arn:aws:sts::{ACCOUNT}:assumed-role/pedm-admin/pedm-alice-{short}"),
        "{who}"
    );

    // What was issued is in the audit log, without the secret.
    let issued = audit_of(&w.s, "grant.credentials_issued").await;
    assert_eq!(issued.len(), 1, "{issued:#?}");
    assert_eq!(issued[0].actor, "alice");
    assert_eq!(
        issued[0].subject.as_deref(),
        Some(format!("grant:{}", g.id).as_str())
    );
    let text = issued[0].data.to_string();
    assert!(text.contains("source identity alice"), "{text}");
    let printed = w.s.cli(
        &alice_token,
        &["aws", "credentials", "--grant", &g.id.to_string()],
    );
    let creds: serde_json::Value = serde_json::from_slice(&printed.stdout).expect("JSON");
    assert_eq!(creds["Version"], 1);
    let secret = creds["SecretAccessKey"].as_str().expect("a secret key");
    for e in audit_of(&w.s, "grant.credentials_issued").await {
        assert!(
            !e.data.to_string().contains(secret),
            "the secret is in the audit log"
        );
    }
    // Never after the grant's end.
    let expires: jiff::Timestamp = creds["Expiration"].as_str().unwrap().parse().unwrap();
    let grant = alice.get_grant(g.id).await.unwrap();
    assert!(
        expires <= grant.expires_at,
        "{expires} after {}",
        grant.expires_at
    );

    // Someone else's grant: refused and recorded.
    let o = w.s.cli(
        &bob_token,
        &["aws", "credentials", "--grant", &g.id.to_string()],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("belongs to alice"), "{}", stderr(&o));
    assert!(o.stdout.is_empty());
    let refused = audit_of(&w.s, "grant.credentials").await;
    assert!(
        refused
            .iter()
            .any(|e| e.actor == "bob" && e.outcome.as_str() == "denied"),
        "{refused:#?}"
    );

    // A role with no AWS role to assume says so.
    let ro = alice
        .create_request(&req(
            "aws-prod",
            "readonly",
            "30m",
            "read the billing console",
        ))
        .await
        .unwrap()
        .grant
        .unwrap();
    wait_provision(&w.s, ro.id, "active").await;
    let o = w.s.cli(
        &alice_token,
        &["aws", "credentials", "--grant", &ro.id.to_string()],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("no assume_role_arn"), "{}", stderr(&o));

    // Once the grant is released, no more credentials.
    alice
        .release_grant(g.id, &pedm_api::Reason { reason: None })
        .await
        .unwrap();
    let o = w.s.cli(
        &alice_token,
        &["aws", "credentials", "--grant", &g.id.to_string()],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("not in force"), "{}", stderr(&o));
}

/// `aws` run against moto with `env` (credentials of a session, or moto's own).
fn aws_cli(w: &World, args: &[&str], env: &[(&str, &str)]) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(venv_bin("aws"));
    cmd.args(args)
        .args(["--output", "json", "--region", "us-east-1"])
        .env("AWS_CONFIG_FILE", dir.path().join("none"))
        .env("AWS_SHARED_CREDENTIALS_FILE", credentials_file(dir.path()))
        .env("AWS_ENDPOINT_URL", w.moto.url())
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("running aws");
    assert!(out.status.success(), "aws {args:?}: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).expect("aws prints JSON")
}

/// The statements of the revoked-sessions policy on `pedm-admin` (none if it is absent).
fn revoked_statements(w: &World) -> Vec<serde_json::Value> {
    let listed = aws_cli(
        w,
        &["iam", "list-role-policies", "--role-name", "pedm-admin"],
        &[],
    );
    if !listed["PolicyNames"]
        .as_array()
        .is_some_and(|n| n.iter().any(|n| n == "pedm-revoked-sessions"))
    {
        return Vec::new();
    }
    let p = aws_cli(
        w,
        &[
            "iam",
            "get-role-policy",
            "--role-name",
            "pedm-admin",
            "--policy-name",
            "pedm-revoked-sessions",
        ],
        &[],
    );
    p["PolicyDocument"]["Statement"]
        .as_array()
        .cloned()
        .expect("statements")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pedm_aws_console_signs_in_as_the_grant_and_an_early_end_denies_its_sessions() {
    let w = world().await;
    let alice_token = user_with_token(&w.s, "alice", false).await;
    let alice = w.s.client(&alice_token);
    let g = alice
        .create_request(&req("aws-prod", "admin", "30m", "check the IAM console"))
        .await
        .unwrap()
        .grant
        .unwrap();
    wait_provision(&w.s, g.id, "active").await;

    // The URL alone on stdout: AWS's login action with the token the endpoint gave.
    let o =
        w.s.cli(&alice_token, &["aws", "console", "--target", "aws-prod"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let printed = String::from_utf8(o.stdout.clone()).unwrap();
    let url = reqwest::Url::parse(printed.trim()).expect("a URL");
    assert_eq!(printed.trim_end().lines().count(), 1, "{printed}");
    assert!(url.as_str().starts_with(&w.federation.url), "{url}");
    let q: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
    let (form, token) = w.federation.seen.lock().unwrap()[0].clone();
    assert_eq!(q["Action"], "login");
    assert_eq!(q["Destination"], "https://console.aws.amazon.com/");
    assert_eq!(q["SigninToken"], token);
    assert!(stderr(&o).contains("15 minutes"), "{}", stderr(&o));

    // What reached the endpoint is a session of the grant's role, tagged with the grant,
    // for no longer than the grant (and at least the 15 minutes AWS allows).
    assert_eq!(form["SessionType"], "json");
    let duration: u64 = form["SessionDuration"].parse().unwrap();
    assert!((900..=1800).contains(&duration), "{duration}");
    let session: serde_json::Value = serde_json::from_str(&form["Session"]).unwrap();
    let key = |k: &str| session[k].as_str().unwrap().to_string();
    let as_session = [
        ("AWS_ACCESS_KEY_ID", key("sessionId")),
        ("AWS_SECRET_ACCESS_KEY", key("sessionKey")),
        ("AWS_SESSION_TOKEN", key("sessionToken")),
    ];
    let env: Vec<(&str, &str)> = as_session.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let who = aws_cli(&w, &["sts", "get-caller-identity"], &env);
    let short = &g.id.simple().to_string()[24..];
    assert_eq!(
        who["Arn"],
        format!("arn:aws:sts::{ACCOUNT}:assumed-role/pedm-admin/pedm-alice-{short}")
    );

    // Recorded, without the secret key or the sign-in token.
    let issued = audit_of(&w.s, "grant.credentials_issued").await;
    assert_eq!(issued.len(), 1, "{issued:#?}");
    assert_eq!(issued[0].data["kind"], "aws-console");
    let text = issued[0].data.to_string();
    assert!(
        !text.contains(&key("sessionKey")) && !text.contains(&token),
        "{text}"
    );

    // Not for a role without an AWS role to assume, nor for someone else.
    let bob_token = user_with_token(&w.s, "bob", false).await;
    let o = w.s.cli(
        &bob_token,
        &["aws", "console", "--grant", &g.id.to_string()],
    );
    assert!(!o.status.success() && o.stdout.is_empty());
    assert!(stderr(&o).contains("belongs to alice"), "{}", stderr(&o));
    assert_eq!(w.federation.seen.lock().unwrap().len(), 1);

    // No statement while the grant runs; an early end denies its sessions until its planned
    // end (moto does not evaluate policy conditions: the policy AWS would evaluate is what
    // is checked), and the target says so.
    assert!(revoked_statements(&w).is_empty());
    alice
        .release_grant(g.id, &pedm_api::Reason { reason: None })
        .await
        .unwrap();
    wait_provision(&w.s, g.id, "revoked").await;
    let statements = revoked_statements(&w);
    assert_eq!(statements.len(), 1, "{statements:#?}");
    let st = &statements[0];
    assert_eq!(st["Effect"], "Deny");
    assert_eq!(st["Action"], "*");
    assert_eq!(
        st["Condition"]["StringEquals"]["aws:PrincipalTag/pedm-grant"],
        g.id.to_string()
    );
    let until: jiff::Timestamp = st["Condition"]["DateLessThan"]["aws:CurrentTime"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(until > jiff::Timestamp::now(), "{until}");
    let check = alice.verify_grant(g.id).await.unwrap();
    assert_eq!(check.present, Some(false), "{check:?}");
    assert!(check.detail.contains("denied"), "{check:?}");
    assert!(check.consistent, "{check:?}");

    // A grant that runs to its planned end adds nothing: its session policy ends it.
    let short = alice
        .create_request(&req("aws-prod", "admin", "3s", "a quick look"))
        .await
        .unwrap()
        .grant
        .unwrap();
    wait_provision(&w.s, short.id, "revoked").await;
    let statements = revoked_statements(&w);
    assert_eq!(statements.len(), 1, "{statements:#?}");
}
