//! File changes under a role's watched paths, on the real binaries: what a session writes
//! there is recorded as `session.file_changed` (path, writer, session), including by a
//! process that exits at once; what others on the host write there meanwhile is not the
//! session's and is not recorded as such; the host's mount table is untouched. Root only;
//! skipped with the reason printed otherwise.

mod common;

use common::agent::*;
use common::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_session_writes_under_a_watched_path_is_recorded_and_nothing_else() {
    if !root_or_skip("what_a_session_writes_under_a_watched_path_is_recorded_and_nothing_else") {
        return;
    }
    let (s, agent, alice, client) = setup("pedmfc").await;
    let dir = tempfile::tempdir().unwrap();
    let watched = std::fs::canonicalize(dir.path()).unwrap();
    let w = watched.to_str().unwrap();
    let out = s.cli(
        &s.admin_token,
        &["role", "update", "web1", "root", "--watch-path", w],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(&format!("watches {w}")),
        "{}",
        stdout(&out)
    );
    let g = grant(&client, "30m").await;
    agent.wait_snapshot(1, None);

    // The session writes two files (one through cp, which exits at once) and one outside;
    // meanwhile the host (this test) writes one of its own under the watched path.
    std::fs::write(watched.join("host-before"), "x").unwrap();
    let script = format!(
        "echo one > {w}/a; cp {w}/a {w}/b; echo elsewhere > /tmp/pedm-fc-{}; \
         grep -c {w} /proc/self/mountinfo",
        g.id
    );
    let out = agent.exec(&alice, &["/bin/sh", "-c", &script]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "1", "the session sees its bind mount");
    std::fs::write(watched.join("host-after"), "x").unwrap();
    let _ = std::fs::remove_file(format!("/tmp/pedm-fc-{}", g.id));
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(w), "the host's mount table is untouched");

    let events = eventually(Duration::from_secs(30), "the file changes", || async {
        let ev = s
            .admin()
            .audit_events(&pedm_api::AuditQuery {
                action: Some("session.file_changed".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        (ev.len() >= 2).then_some(ev)
    })
    .await;
    let mut paths: Vec<String> = events
        .iter()
        .map(|e| e.data["file"]["path"].as_str().unwrap().to_string())
        .collect();
    paths.sort();
    paths.dedup();
    assert_eq!(
        paths,
        vec![format!("{w}/a"), format!("{w}/b")],
        "{events:?}"
    );
    for e in &events {
        assert_eq!(e.actor, alice.name);
        assert_eq!(e.data["file"]["op"], "written");
        assert!(e.data["file"]["pid"].as_i64().unwrap() > 0);
        assert_eq!(e.data["grant"], serde_json::json!(g.id));
        assert!(e.data["session"].is_string());
    }

    // A watched path that does not exist on the host refuses the session, naming it.
    let out = s.cli(
        &s.admin_token,
        &[
            "role",
            "update",
            "web1",
            "root",
            "--watch-path",
            "/nonexistent-pedm-dir",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    s.admin()
        .revoke_grant(
            g.id,
            &pedm_api::Reason {
                reason: Some("next".into()),
            },
        )
        .await
        .unwrap();
    agent.wait_snapshot(0, None);
    grant(&client, "30m").await;
    agent.wait_snapshot(1, None);
    let out = agent.exec(&alice, &["/bin/true"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("/nonexistent-pedm-dir"),
        "{}",
        stderr(&out)
    );
}
