//! What a new user meets in the first hour (issue 23, items 7–10): output that cannot carry
//! an attacker's escape sequences or formulas, durations that need a unit, tokens with a
//! lifetime, a malformed token named, one word for the reason of a decision, approval
//! progress, usage lines without the token placeholder, break-glass loud without a webhook,
//! `host register` printing the token alone.

mod common;

use common::*;
use std::time::Duration;

fn ok(o: &std::process::Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        stdout(o),
        stderr(o)
    );
    stdout(o)
}

fn json(o: &std::process::Output) -> serde_json::Value {
    serde_json::from_str(&ok(o)).unwrap()
}

/// Applies the default policies plus `extra` through the CLI.
fn apply_with_defaults(s: &Server, extra: &str) {
    let dir = tempfile::tempdir().unwrap();
    let defaults = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../server/src/default_policies.cedar"
    ))
    .unwrap();
    std::fs::write(dir.path().join("defaults.cedar"), defaults).unwrap();
    std::fs::write(dir.path().join("extra.cedar"), extra).unwrap();
    ok(&s.cli(
        &s.admin_token,
        &["policy", "apply", dir.path().to_str().unwrap()],
    ));
}

/// Item 7: a justification with ESC/OSC sequences that starts like a formula reaches CSV
/// and tables neutralised.
#[tokio::test]
async fn reports_neutralise_escapes_and_formulas() {
    let s = Server::start();
    standard_targets(&s).await;
    let alice = user_with_token(&s, "alice", false).await;
    // Control characters are refused at input (defence in depth)...
    let escapes = "fix \u{1b}]0;pwned\u{7}\u{1b}[2J\u{9b}31m done";
    let o = s.cli(
        &alice,
        &[
            "request",
            "create",
            "--target",
            "web1",
            "--role",
            "docker",
            "--duration",
            "10m",
            "--justification",
            escapes,
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("control characters"), "{}", stderr(&o));
    // ...so a formula is what a justification can still carry.
    let evil = "=HYPERLINK(\"http://evil\",\"x\") done";
    let o = s.cli(
        &alice,
        &[
            "request",
            "create",
            "--target",
            "web1",
            "--role",
            "docker",
            "--duration",
            "10m",
            "--justification",
            evil,
        ],
    );
    ok(&o);
    // Escapes still reach the log from hosts (the argv a person typed there): the exports
    // must neutralise them.
    let reg = s.cli(&s.admin_token, &["--json", "host", "register", "web1"]);
    let reg: serde_json::Value = serde_json::from_str(&ok(&reg)).unwrap();
    let host = s.client(reg["token"].as_str().unwrap());
    let report: pedm_api::agent::AgentReport = serde_json::from_value(serde_json::json!({
        "id": uuid::Uuid::now_v7(), "at": jiff::Timestamp::now(), "user": "alice",
        "verdict": "denied", "grant": null, "session": null,
        "argv": ["/bin/echo", "\u{1b}]0;pwned\u{7}\u{1b}[2J\u{9b}31m", "=cmd|' /C calc'!A0"],
        "binary_sha256": null, "reason": "no grant"
    }))
    .unwrap();
    host.agent_reports(&pedm_api::agent::AgentReports {
        reports: vec![report],
    })
    .await
    .unwrap();
    let o = s.cli(
        &s.admin_token,
        &["report", "elevations", "--since", "1d", "--format", "csv"],
    );
    let csv = ok(&o);
    assert!(
        !csv.chars()
            .any(|c| c.is_control() && c != '\n' && c != '\r'),
        "{csv:?}"
    );
    assert!(!csv.contains(",=HYPERLINK"), "{csv}");
    assert!(csv.contains("'=HYPERLINK"), "{csv}");
    // The same in a table.
    let o = s.cli(&s.admin_token, &["report", "elevations", "--since", "1d"]);
    let table = ok(&o);
    assert!(
        !table.chars().any(|c| c.is_control() && c != '\n'),
        "{table:?}"
    );
    // And the audit export's CSV.
    let o = s.cli(&s.admin_token, &["audit", "export", "--format", "csv"]);
    let export = ok(&o);
    assert!(
        !export
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\r'),
        "{export:?}"
    );
    assert!(
        export.contains("pwned"),
        "the host's report is exported: {export}"
    );
    // And the table of audit events.
    let o = s.cli(
        &s.admin_token,
        &["audit", "list", "--action", "exec.denied"],
    );
    let listed = ok(&o);
    assert!(
        !listed.chars().any(|c| c.is_control() && c != '\n'),
        "{listed:?}"
    );
}

/// Item 8: a duration without a unit is refused naming the units (CLI and API); a token
/// minted without `--expires-in` expires (90 days by default), `never` must be said; a
/// handed-on grant cut to the time left says so.
#[tokio::test]
async fn durations_need_units_and_tokens_expire_by_default() {
    let s = Server::start();
    standard_targets(&s).await;
    let alice = user_with_token(&s, "alice", false).await;
    let o = s.cli(
        &alice,
        &[
            "request",
            "create",
            "--target",
            "web1",
            "--role",
            "docker",
            "--duration",
            "5",
            "--justification",
            "x",
        ],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("no unit") && stderr(&o).contains("s, m, h, d, w"),
        "{}",
        stderr(&o)
    );
    let e = s
        .client(&alice)
        .create_request(&req("web1", "docker", "5", "x"))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(400), "{e}");
    assert!(e.to_string().contains("no unit"), "{e}");

    let created = json(&s.cli(
        &s.admin_token,
        &["--json", "token", "create", "--user", "alice"],
    ));
    let expires: jiff::Timestamp = created["info"]["expires_at"]
        .as_str()
        .expect("a default expiry")
        .parse()
        .unwrap();
    let days = (expires.as_second() - jiff::Timestamp::now().as_second()) / 86_400;
    assert!((89..=90).contains(&days), "{days} days");
    let forever = json(&s.cli(
        &s.admin_token,
        &[
            "--json",
            "token",
            "create",
            "--user",
            "alice",
            "--expires-in",
            "never",
        ],
    ));
    assert!(forever["info"]["expires_at"].is_null(), "{forever}");

    // The admin hands a 10m grant on for 30m: cut, and said.
    let g = s
        .admin()
        .create_request(&req("web1", "docker", "10m", "build"))
        .await
        .unwrap()
        .grant
        .unwrap();
    let o = s.cli(
        &s.admin_token,
        &[
            "grant",
            "delegate",
            &g.id.to_string(),
            "--to",
            "alice",
            "--duration",
            "30m",
        ],
    );
    ok(&o);
    assert!(
        stderr(&o).contains("asked for 30m") && stderr(&o).contains(&g.id.to_string()),
        "{}",
        stderr(&o)
    );
}

/// Item 9: a malformed token is named (exit 2, not "unreachable"); `--reason` everywhere
/// with `--comment` accepted; progress after a partial approval; no token placeholder in
/// usage lines.
#[tokio::test]
async fn tokens_reasons_progress_and_usage() {
    let s = Server::start();
    standard_targets(&s).await;
    let o = pedm_cli(&s.url, "pedm_abc\n_def", &["whoami"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("PEDM_TOKEN") && stderr(&o).contains("newline"),
        "{}",
        stderr(&o)
    );
    assert!(!stderr(&o).contains("unreachable"), "{}", stderr(&o));

    let o = pedm_cli(
        &s.url,
        "pedm_abc_def",
        &["request", "create", "--target", "x"],
    );
    assert_eq!(o.status.code(), Some(2));
    let usage = stderr(&o);
    assert!(usage.contains("Usage: pedm request create"), "{usage}");
    assert!(!usage.contains("--token"), "{usage}");

    apply_with_defaults(
        &s,
        r#"@id("root-three") @approvals("3")
permit (principal, action == Pedm::Action::"request", resource)
when { resource.name == "root" };"#,
    );
    let alice = user_with_token(&s, "alice", false).await;
    let bob = user_with_token(&s, "bob", true).await;
    let id = s
        .client(&alice)
        .create_request(&req("web1", "root", "10m", "patch"))
        .await
        .unwrap()
        .request
        .id
        .to_string();
    let o = s.cli(&bob, &["request", "approve", &id, "--reason", "fine"]);
    let out = ok(&o);
    assert!(out.contains("1 of 3: waiting for any approver:2"), "{out}");
    let shown = ok(&s.cli(&bob, &["request", "show", &id]));
    assert!(
        shown.contains("1 of 3: waiting for any approver:2"),
        "{shown}"
    );
    // `--comment` still works for deny; `--reason` for release.
    let carol = user_with_token(&s, "carol", true).await;
    ok(&s.cli(&carol, &["request", "deny", &id, "--comment", "no"]));
    let g = s
        .client(&alice)
        .create_request(&req("web1", "docker", "10m", "x"))
        .await
        .unwrap()
        .grant
        .unwrap();
    ok(&s.cli(
        &alice,
        &["grant", "release", &g.id.to_string(), "--comment", "done"],
    ));
}

/// Item 10: break-glass without a webhook is loud (WARN line, counter at /metrics, the CLI
/// shouts about unreviewed ones); `host register` prints the token alone on stdout.
#[tokio::test]
async fn break_glass_is_loud_and_host_tokens_print_alone() {
    let s = Server::start();
    standard_targets(&s).await;
    apply_with_defaults(
        &s,
        r#"@id("anyone-break-glass") @break_glass("true")
permit (principal, action == Pedm::Action::"request", resource);"#,
    );
    let alice = user_with_token(&s, "alice", false).await;
    let mut r = req("web1", "root", "10m", "site down");
    r.break_glass = true;
    let got = s.client(&alice).create_request(&r).await.unwrap();
    assert!(got.grant.is_some());

    let log = eventually(Duration::from_secs(5), "a WARN line", || async {
        let log = s.log();
        log.lines()
            .any(|l| l.contains("WARN") && l.contains("BREAK-GLASS"))
            .then_some(log)
    })
    .await;
    assert!(log.contains("alice"), "{log}");
    let metrics = reqwest::get(format!("{}/metrics", s.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("pedm_break_glass_total") && l.ends_with(" 1")),
        "{metrics}"
    );
    let o = s.cli(&s.admin_token, &["breakglass", "list"]);
    ok(&o);
    assert!(
        stderr(&o).contains("NOT REVIEWED") && stderr(&o).contains(&got.request.id.to_string()),
        "{}",
        stderr(&o)
    );

    let o = s.cli(&s.admin_token, &["host", "register", "web1"]);
    let out = ok(&o);
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.starts_with("pedm_"), "{out}");
    assert!(stderr(&o).contains("server key"), "{}", stderr(&o));
}

/// Item 5: `policy simulate` never recommends auto-approval for a role that runs as root on
/// an `env=prod` target, nor below the minimum sample (20 by default, shown).
#[tokio::test]
async fn simulate_never_recommends_auto_approving_root_or_small_samples() {
    let s = Server::start();
    standard_targets(&s).await;
    let a = s.admin();
    a.create_target(&pedm_api::CreateTarget {
        name: "dev1".into(),
        kind: pedm_api::TargetKind::Host,
        description: None,
        labels: Default::default(),
    })
    .await
    .unwrap();
    a.create_role(
        "dev1",
        &pedm_api::CreateRole {
            run_as: Some("syslog".into()),
            ..pedm_api::CreateRole::new("logs", "1h")
        },
    )
    .await
    .unwrap();
    let bob = s.client(&user_with_token(&s, "bob", true).await);
    for i in 0..3 {
        let who = s.client(&user_with_token(&s, &format!("dev{i}"), false).await);
        for (target, role) in [("web1", "root"), ("dev1", "logs")] {
            let r = who
                .create_request(&req(target, role, "10m", "work"))
                .await
                .unwrap()
                .request;
            bob.approve_request(r.id, &pedm_api::Decide::default())
                .await
                .unwrap();
        }
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../server/src/default_policies.cedar"
        ),
        dir.path().join("defaults.cedar"),
    )
    .unwrap();
    let args = [
        "policy",
        "simulate",
        "--policies",
        dir.path().to_str().unwrap(),
        "--since",
        "1h",
    ];
    let mut with_json = vec!["--json"];
    with_json.extend(args);
    let report: pedm_api::SimulationReport =
        serde_json::from_str(&ok(&s.cli(&s.admin_token, &with_json))).unwrap();
    assert!(report.auto_approve_candidates.is_empty(), "{report:?}");
    assert_eq!(report.min_sample, 20);
    let why = |pair: &str| {
        report
            .not_recommended
            .iter()
            .find(|n| n.starts_with(pair))
            .cloned()
            .unwrap_or_else(|| panic!("{pair} in {report:?}"))
    };
    assert!(why("web1/root").contains("runs as root"), "{report:?}");
    assert!(
        why("dev1/logs").contains("minimum sample of 20"),
        "{report:?}"
    );
    let text = ok(&s.cli(&s.admin_token, &args));
    assert!(text.contains("at least 20 decisions"), "{text}");
}
