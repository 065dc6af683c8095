//! Alerts on the exec stream (`[[alerts.exec]]`): a command a host reports that matches a
//! pattern, allowed or refused, becomes an `exec.alert` audit event and a high-severity
//! webhook notification at once; others raise nothing. A pattern that does not compile
//! stops pedmd from starting, naming it. A session far longer than its person's usual
//! raises `session.unusually_long`.

mod common;

use common::*;
use pedm_api::AuditQuery;
use pedm_api::agent::{AgentReport, AgentReports};
use serde_json::json;

fn report(verdict: &str, argv: &[&str]) -> AgentReport {
    serde_json::from_value(json!({
        "id": uuid::Uuid::now_v7(), "at": jiff::Timestamp::now(), "user": "alice",
        "verdict": verdict, "grant": null, "session": uuid::Uuid::now_v7(),
        "argv": argv, "binary_sha256": null, "reason": "policy",
        "exec": {"pid": 4242, "ppid": 4241, "cwd": "/root", "path": argv[0]},
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_matching_command_raises_an_alert_at_once() {
    let (hook, mut rx) = receiver().await;
    let s = Server::start_with(Options {
        config: Some(format!(
            "[[alerts.exec]]\nname = \"shadow-read\"\npattern = '/etc/(g?shadow|sudoers)'\n\n\
             [[alerts.exec]]\nname = \"auditd-stopped\"\n\
             pattern = 'systemctl\\s+(stop|disable|mask)\\s+auditd'\n\n\
             [[notify.webhook]]\nname = \"soc\"\nurl = \"{hook}\"\nsecret = \"k\"\n\
             format = \"generic\"\nkinds = [\"exec.alert\"]\n"
        )),
        ..Default::default()
    });
    standard_targets(&s).await;
    let reg = s.cli(&s.admin_token, &["--json", "host", "register", "web1"]);
    assert!(reg.status.success(), "{}", stderr(&reg));
    let reg: serde_json::Value = serde_json::from_slice(&reg.stdout).unwrap();
    let host = s.client(reg["token"].as_str().unwrap());
    host.agent_reports(&AgentReports {
        reports: vec![
            report("allowed", &["/usr/bin/ls", "-l", "/etc"]),
            report("denied", &["/usr/bin/cat", "/etc/shadow"]),
            report("allowed", &["/usr/bin/systemctl", "stop", "auditd"]),
        ],
    })
    .await
    .unwrap();

    let first = rx.recv().await.expect("a notification");
    let second = rx.recv().await.expect("a notification");
    let mut got = [first, second];
    got.sort_by_key(|n| n["data"]["alert"].as_str().unwrap_or("").to_string());
    assert_eq!(got[0]["data"]["alert"], "auditd-stopped", "{}", got[0]);
    assert_eq!(got[0]["severity"], "high");
    assert_eq!(got[0]["data"]["allowed"], true);
    assert_eq!(got[1]["data"]["alert"], "shadow-read", "{}", got[1]);
    assert!(
        got[1]["summary"].as_str().unwrap().contains("tried to run"),
        "{}",
        got[1]
    );
    let alerts = s
        .admin()
        .audit_events(&AuditQuery {
            action: Some("exec.alert".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut names: Vec<&str> = alerts
        .iter()
        .filter_map(|e| e.data["alert"].as_str())
        .collect();
    names.sort();
    assert_eq!(names, ["auditd-stopped", "shadow-read"]);
    assert!(
        alerts
            .iter()
            .all(|e| e.data["host"] == "web1" && e.actor == "alice")
    );
    assert!(rx.try_recv().is_err(), "ls raised nothing");
}

#[test]
fn a_pattern_that_does_not_compile_stops_pedmd() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("pedmd.toml");
    std::fs::write(
        &cfg,
        "[[alerts.exec]]\nname = \"broken\"\npattern = \"(\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pedmd"))
        .arg("--config")
        .arg(&cfg)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--listen")
        .arg("127.0.0.1:0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("alert broken"), "{}", stderr(&out));
}

/// A session far longer than its person's usual on that host and account raises an alert;
/// one without enough history to judge does not.
#[tokio::test(flavor = "multi_thread")]
async fn a_session_far_longer_than_usual_raises_an_alert() {
    let (hook, mut rx) = receiver().await;
    let s = Server::start_with(Options {
        config: Some(format!(
            "[[notify.webhook]]\nname = \"soc\"\nurl = \"{hook}\"\nsecret = \"k\"\n\
             format = \"generic\"\nkinds = [\"session.unusually_long\"]\n"
        )),
        ..Default::default()
    });
    standard_targets(&s).await;
    let alice = user_with_token(&s, "alice", false).await;
    let g = s
        .client(&alice)
        .create_request(&req("web1", "docker", "1h", "logs"))
        .await
        .unwrap()
        .grant
        .unwrap();
    let reg = s.admin().register_host("web1").await.unwrap();
    let host = pedm_api::Client::new(&s.url, Some(reg.token)).unwrap();
    let cast = "{\"version\":2,\"width\":80,\"height\":24}\n[0.1,\"o\",\"ok\\r\\n\"]\n";
    let now = jiff::Timestamp::now();
    let upload = |minutes: i64| {
        let end = now + jiff::SignedDuration::from_mins(minutes);
        upload_session(
            &host,
            g.id,
            "alice",
            "docker",
            &["/usr/bin/docker", "ps"],
            now,
            end,
            cast,
        )
    };
    // Two hours with no history: nothing to compare with.
    upload(120).await;
    for _ in 0..3 {
        upload(5).await;
    }
    assert!(audit_of(&s, "session.unusually_long").await.is_empty());
    // Two hours again, where alice's sessions as docker on web1 usually last five minutes.
    let long = upload(120).await;
    let n = rx.recv().await.expect("an alert");
    assert_eq!(n["kind"], "session.unusually_long");
    assert_eq!(n["severity"], "high");
    assert_eq!(n["data"]["session"], long.to_string());
    assert_eq!(n["data"]["usual_secs"], 300);
    assert_eq!(n["data"]["duration_secs"], 7200);
    let ev = audit_of(&s, "session.unusually_long").await;
    assert_eq!(ev.len(), 1, "{ev:?}");
}
