//! The README walk-through, run with the real `pedm` binary against the real `pedmd`.

mod common;

use common::*;
use std::time::Duration;

fn ok(o: &std::process::Output) -> String {
    assert!(
        o.status.success(),
        "pedm failed: {}\n{}",
        stderr(o),
        stdout(o)
    );
    stdout(o)
}

fn json(o: &std::process::Output) -> serde_json::Value {
    serde_json::from_str(&ok(o)).expect("json output")
}

#[tokio::test]
async fn readme_walk_through_from_request_to_expiry() {
    let s = Server::start();
    let admin = |args: &[&str]| s.cli(&s.admin_token, args);

    let who = json(&admin(&["--json", "whoami"]));
    assert_eq!(who["user"]["name"], "admin");
    assert_eq!(who["user"]["admin"], true);

    ok(&admin(&["user", "add", "alice", "--display-name", "Alice"]));
    ok(&admin(&["user", "add", "bob", "--admin"]));
    ok(&admin(&["group", "add", "oncall"]));
    ok(&admin(&["group", "add-member", "oncall", "alice"]));
    ok(&admin(&[
        "target", "add", "web1", "--kind", "host", "--label", "env=prod",
    ]));
    ok(&admin(&[
        "role",
        "add",
        "web1",
        "root",
        "--max-duration",
        "1h",
        "--run-as",
        "root",
    ]));
    let users = ok(&admin(&["user", "list"]));
    assert!(users.contains("alice") && users.contains("bob"), "{users}");
    let targets = ok(&admin(&["target", "show", "web1"]));
    assert!(
        targets.contains("root") && targets.contains("env=prod"),
        "{targets}"
    );

    let alice_token = ok(&admin(&["token", "create", "--user", "alice"]))
        .trim()
        .to_string();
    let bob_token = ok(&admin(&["token", "create", "--user", "bob"]))
        .trim()
        .to_string();
    assert!(
        alice_token.starts_with("pedm_"),
        "token alone on stdout: {alice_token:?}"
    );
    let alice = |args: &[&str]| s.cli(&alice_token, args);
    let bob = |args: &[&str]| s.cli(&bob_token, args);

    let who = json(&alice(&["--json", "whoami"]));
    assert_eq!(who["user"]["name"], "alice");
    assert_eq!(who["groups"], serde_json::json!(["oncall"]));

    let created = json(&alice(&[
        "--json",
        "request",
        "create",
        "--target",
        "web1",
        "--role",
        "root",
        "--duration",
        "3s",
        "--justification",
        "rotate TLS certificate",
        "--ticket",
        "CHG-1",
    ]));
    assert_eq!(created["request"]["state"], "pending");
    let id = created["request"]["id"].as_str().unwrap().to_string();

    let pending = ok(&bob(&["request", "list", "--state", "pending"]));
    assert!(
        pending.contains(&id) && pending.contains("rotate TLS certificate"),
        "{pending}"
    );

    // Self-approval is refused with a clear message and a failing status.
    let own = alice(&["request", "approve", &id]);
    assert_eq!(own.status.code(), Some(1));
    assert!(stderr(&own).contains("own request"), "{}", stderr(&own));

    let approved = json(&bob(&[
        "--json",
        "request",
        "approve",
        &id,
        "--comment",
        "ok",
    ]));
    assert_eq!(approved["request"]["state"], "approved");
    let grant_id = approved["grant"]["id"].as_str().unwrap().to_string();

    let grants = ok(&alice(&["grant", "list", "--state", "active"]));
    assert!(grants.contains(&grant_id), "{grants}");

    let ended = eventually(Duration::from_secs(15), "grant expiry", || {
        let g = json(&alice(&["--json", "grant", "show", &grant_id]));
        async move { (g["state"] != "active").then_some(g) }
    })
    .await;
    assert_eq!(ended["state"], "expired");

    let again = alice(&["grant", "release", &grant_id]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        stderr(&again).contains("already ended"),
        "{}",
        stderr(&again)
    );

    let audit = ok(&admin(&[
        "audit",
        "list",
        "--subject",
        &format!("grant:{grant_id}"),
    ]));
    assert!(
        audit.contains("grant.started") && audit.contains("grant.expired"),
        "{audit}"
    );
}

#[tokio::test]
async fn cli_errors_have_clear_messages_and_exit_codes() {
    let s = Server::start();
    standard_targets(&s).await;
    let t = &s.admin_token;

    let o = s.cli(
        t,
        &[
            "request",
            "create",
            "--target",
            "nope",
            "--role",
            "root",
            "--duration",
            "5m",
            "-r",
            "x",
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("target nope not found"),
        "{}",
        stderr(&o)
    );

    let o = s.cli(
        t,
        &[
            "request",
            "create",
            "--target",
            "web1",
            "--role",
            "root",
            "--duration",
            "5 parsecs",
            "-r",
            "x",
        ],
    );
    assert_eq!(
        o.status.code(),
        Some(2),
        "bad duration is a usage error: {}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("duration"), "{}", stderr(&o));

    let o = s.cli(
        t,
        &[
            "request",
            "create",
            "--target",
            "web1",
            "--role",
            "root",
            "--duration",
            "3h",
            "-r",
            "x",
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("longer than the 1h"), "{}", stderr(&o));

    let o = s.cli(t, &["grant", "show", "not-a-uuid"]);
    assert_eq!(o.status.code(), Some(2));

    let o = s.cli("pedm_0123456789abcdef_nope", &["whoami"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("invalid token"), "{}", stderr(&o));
    assert!(
        !stderr(&o).contains("pedm_0123456789abcdef_nope"),
        "token echoed"
    );

    let o = s.cli(t, &["completions", "bash"]);
    assert!(o.status.success());
    assert!(stdout(&o).contains("pedm"), "completion script");

    // Nothing above created a request.
    let list = json(&s.cli(t, &["--json", "request", "list"]));
    assert_eq!(list, serde_json::json!([]));
}

#[tokio::test]
async fn health_metrics_and_openapi() {
    let s = Server::start();
    let http = reqwest::Client::new();
    let h: serde_json::Value = http
        .get(format!("{}/healthz", s.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(h["status"], "ok");

    // Generate some traffic, then read it back from /metrics.
    s.admin().whoami().await.unwrap();
    let m = http
        .get(format!("{}/metrics", s.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(m.contains("pedm_http_requests_total"), "{m}");
    assert!(m.contains("route=\"/api/v1/whoami\""), "{m}");

    let doc: serde_json::Value = http
        .get(format!("{}/api/v1/openapi.json", s.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/api/v1/requests",
        "/api/v1/requests/{id}/approve",
        "/api/v1/grants/{id}/revoke",
        "/api/v1/whoami",
    ] {
        assert!(doc["paths"].get(path).is_some(), "openapi lacks {path}");
    }
    assert!(doc["components"]["schemas"].get("CreateRequest").is_some());

    let r = http.get(format!("{}/nowhere", s.url)).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let b: pedm_api::ErrorBody = r.json().await.unwrap();
    assert!(b.error.message.contains("/nowhere"));

    // The bootstrap token file is private.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(s.data_path().join("admin.token"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[tokio::test]
async fn a_role_changes_in_place_and_the_change_is_recorded() {
    let s = Server::start();
    standard_targets(&s).await;
    let t = &s.admin_token;
    let role = json(&s.cli(
        t,
        &[
            "--json",
            "role",
            "update",
            "web1",
            "root",
            "--intercept",
            "true",
            "--record-input",
            "true",
            "--max-duration",
            "30m",
        ],
    ));
    assert_eq!(
        (
            &role["intercept"],
            &role["record_input"],
            &role["max_duration_secs"]
        ),
        (
            &serde_json::json!(true),
            &serde_json::json!(true),
            &serde_json::json!(1800)
        )
    );
    assert_eq!(role["auto_approve"], false, "what was not given stays");
    let listed = ok(&s.cli(t, &["role", "list", "web1"]));
    assert!(
        listed.contains("intercept") && listed.contains("input recorded"),
        "{listed}"
    );
    // The grant limit follows at once.
    let alice = user_with_token(&s, "alice", false).await;
    let e = s
        .client(&alice)
        .create_request(&req("web1", "root", "45m", "disk"))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(422), "{e:?}");
    let ev = s
        .admin()
        .audit_events(&pedm_api::AuditQuery {
            action: Some("role.updated".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].data["before"]["intercept"], false);
    assert_eq!(ev[0].data["after"]["intercept"], true);
    assert_eq!(ev[0].subject.as_deref(), Some("role:web1/root"));

    // Refused without a change: bad values, unknown roles, people without the right.
    let o = s.cli(
        t,
        &["role", "update", "web1", "root", "--max-duration", "0s"],
    );
    assert_eq!(o.status.code(), Some(2), "a usage error: {}", stderr(&o));
    let o = s.cli(
        t,
        &["role", "update", "web1", "root", "--max-duration", "30d"],
    );
    assert!(
        stderr(&o).contains("over the server limit"),
        "{}",
        stderr(&o)
    );
    let o = s.cli(t, &["role", "update", "web1", "ghost", "--noexec", "true"]);
    assert!(
        stderr(&o).contains("role ghost on target web1 not found"),
        "{}",
        stderr(&o)
    );
    let o = s.cli(
        &alice,
        &["role", "update", "web1", "root", "--intercept", "false"],
    );
    assert!(!o.status.success());
    let again = json(&s.cli(t, &["--json", "role", "list", "web1"]));
    let root = again
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "root")
        .unwrap();
    assert_eq!(
        (&root["intercept"], &root["max_duration_secs"]),
        (&serde_json::json!(true), &serde_json::json!(1800))
    );
}

#[tokio::test]
async fn a_roles_resource_limits_are_set_merged_lifted_and_checked() {
    let s = Server::start();
    standard_targets(&s).await;
    let t = &s.admin_token;
    let role = json(&s.cli(
        t,
        &[
            "--json",
            "role",
            "update",
            "web1",
            "root",
            "--memory-max",
            "1G",
            "--pids-max",
            "128",
        ],
    ));
    assert_eq!(
        role["limits"],
        serde_json::json!({"memory_bytes": 1u64 << 30, "pids": 128})
    );
    // Only the limits named change; `none` lifts one.
    let role = json(&s.cli(
        t,
        &[
            "--json",
            "role",
            "update",
            "web1",
            "root",
            "--cpu-max",
            "150%",
            "--memory-max",
            "none",
        ],
    ));
    assert_eq!(
        role["limits"],
        serde_json::json!({"pids": 128, "cpu_percent": 150})
    );
    let listed = ok(&s.cli(t, &["role", "list", "web1"]));
    assert!(listed.contains("pids 128, cpu 150%"), "{listed}");
    let ev = s
        .admin()
        .audit_events(&pedm_api::AuditQuery {
            action: Some("role.updated".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(ev.len(), 2);
    assert_eq!(ev[0].data["before"]["limits"], serde_json::json!({}));
    assert_eq!(
        ev[1].data["after"]["limits"],
        serde_json::json!({"pids": 128, "cpu_percent": 150})
    );

    // Out of range: refused by the CLI before sending, and by the server naming the field.
    let o = s.cli(t, &["role", "update", "web1", "root", "--memory-max", "1M"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("outside"), "{}", stderr(&o));
    for (limits, field) in [
        (
            serde_json::json!({"memory_bytes": 1024}),
            "limits.memory_bytes",
        ),
        (serde_json::json!({"pids": 0}), "limits.pids"),
        (
            serde_json::json!({"cpu_percent": 100_001}),
            "limits.cpu_percent",
        ),
    ] {
        let r = reqwest::Client::new()
            .patch(format!("{}/api/v1/targets/web1/roles/root", s.url))
            .bearer_auth(t)
            .json(&serde_json::json!({ "limits": limits }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{limits}");
        let b: pedm_api::ErrorBody = r.json().await.unwrap();
        assert!(b.error.message.contains(field), "{}", b.error.message);
    }
    let again = json(&s.cli(t, &["--json", "role", "list", "web1"]));
    let root = again
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "root")
        .unwrap();
    assert_eq!(
        root["limits"],
        serde_json::json!({"pids": 128, "cpu_percent": 150})
    );
}

#[tokio::test]
async fn under_two_person_control_one_admin_cannot_switch_approvals_off_for_a_role() {
    let s = Server::start_with(Options {
        config: Some("[policy]\nrequire_approvals = 1\n".into()),
        ..Default::default()
    });
    standard_targets(&s).await;
    let t = &s.admin_token;
    let o = s.cli(
        t,
        &["role", "update", "web1", "root", "--auto-approve", "true"],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("require_approvals"), "{}", stderr(&o));
    let denied = s
        .admin()
        .audit_events(&pedm_api::AuditQuery {
            action: Some("role.update".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(denied.len(), 1);
    assert_eq!(denied[0].outcome, pedm_api::Outcome::Denied);
    // Narrowing goes through.
    let docker = json(&s.cli(
        t,
        &[
            "--json",
            "role",
            "update",
            "web1",
            "docker",
            "--auto-approve",
            "false",
        ],
    ));
    assert_eq!(docker["auto_approve"], false);
    let roles = s.admin().list_roles("web1").await.unwrap();
    assert!(roles.iter().all(|r| !r.auto_approve), "{roles:?}");
}
