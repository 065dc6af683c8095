//! File changes under a role's watched paths, on the real binaries: what a session writes,
//! removes and renames there is recorded as `session.file_changed` (op, path, where a rename
//! went, the process, the session), including by a process that exits at once; what others
//! on the host write or remove there meanwhile is not the session's and is not recorded as
//! such, nor what the session does elsewhere; the host's mount table is untouched. Root only;
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
    std::fs::write(watched.join("host-removes"), "x").unwrap();
    let script = format!(
        "echo one > {w}/a; cp {w}/a {w}/b; echo elsewhere > /tmp/pedm-fc-{id}; \
         mv {w}/b {w}/c; rm {w}/a; mkdir {w}/d && rmdir {w}/d; rm /tmp/pedm-fc-{id}; \
         grep -c {w} /proc/self/mountinfo",
        id = g.id
    );
    let out = agent.exec(&alice, &["/bin/sh", "-c", &script]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "1", "the session sees its bind mount");
    std::fs::write(watched.join("host-after"), "x").unwrap();
    std::fs::remove_file(watched.join("host-removes")).unwrap();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(w), "the host's mount table is untouched");

    let events = eventually(Duration::from_secs(30), "the file changes", || async {
        let ev = audit_of(&s, "session.file_changed").await;
        (ev.len() >= 5).then_some(ev)
    })
    .await;
    // Writes (fanotify), the rename, the removals (the session's seccomp filter); nothing
    // the host did there, nothing the session did elsewhere.
    let mut seen: Vec<(String, String, String)> = events
        .iter()
        .map(|e| {
            let f = &e.data["file"];
            (
                f["op"].as_str().unwrap().to_string(),
                f["path"].as_str().unwrap().to_string(),
                f["to"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    seen.sort();
    seen.dedup();
    let change =
        |op: &str, path: &str, to: &str| (op.to_string(), format!("{w}/{path}"), to.to_string());
    assert_eq!(
        seen,
        vec![
            change("deleted", "a", ""),
            change("dir_removed", "d", ""),
            change("renamed", "b", &format!("{w}/c")),
            change("written", "a", ""),
            change("written", "b", ""),
        ],
        "{events:?}"
    );
    for e in &events {
        assert_eq!(e.actor, alice.name);
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
    revoke(&s, g.id, "next").await;
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
