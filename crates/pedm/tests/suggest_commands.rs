//! Command rules learned from what people ran (`pedm policy simulate --suggest-commands`),
//! on the real binaries: the commands a role's holders ran (first commands and, with
//! intercept, the commands inside a shell) are counted, and the proposed policy, applied as
//! written, lets exactly those run and refuses the rest. Root only; skipped otherwise.

mod common;

use common::agent::*;
use common::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_suggested_allowlist_covers_what_was_run_and_nothing_else() {
    if !root_or_skip("the_suggested_allowlist_covers_what_was_run_and_nothing_else") {
        return;
    }
    let (s, agent, alice, client) = setup("pedmsg").await;
    let t = &s.admin_token;
    let out = s.cli(
        t,
        &["role", "update", "web1", "root", "--intercept", "true"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    grant(&client, "30m").await;
    agent.wait_snapshot(1, None);
    for argv in [
        &["/usr/bin/id"][..],
        &["/bin/echo", "hello", "world"],
        &["/bin/echo", "hello", "world"],
        &["/bin/sh", "-c", "/bin/true; /usr/bin/id -u"],
    ] {
        let out = agent.exec(&alice, argv);
        assert!(out.status.success(), "{argv:?}: {}", stderr(&out));
    }
    // Reports reach the server from the agent's outbox.
    let report = eventually(Duration::from_secs(30), "the exec reports", || async {
        let out = s.cli(
            t,
            &[
                "--json",
                "policy",
                "simulate",
                "--suggest-commands",
                "--since",
                "1h",
            ],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        let r: pedm_api::CommandSuggestions = serde_json::from_slice(&out.stdout).unwrap();
        (r.events >= 6).then_some(r)
    })
    .await;
    assert_eq!(report.roles.len(), 1);
    let role = &report.roles[0];
    assert_eq!((role.target.as_str(), role.role.as_str()), ("web1", "root"));
    let count = |path: &str, args: &str| {
        role.commands
            .iter()
            .find(|c| c.path == path && c.args == args)
            .map(|c| (c.count, c.users.clone()))
    };
    assert_eq!(
        count("/usr/bin/echo", "hello world"),
        Some((2, vec![alice.name.clone()])),
        "{:?}",
        role.commands
    );
    assert_eq!(count("/usr/bin/id", "").map(|c| c.0), Some(1));
    assert_eq!(
        count("/usr/bin/id", "-u").map(|c| c.0),
        Some(1),
        "{:?}",
        role.commands
    );
    assert_eq!(
        count("/usr/bin/true", "").map(|c| c.0),
        Some(1),
        "inside the shell: {:?}",
        role.commands
    );
    assert_eq!(role.commands[0].path, "/usr/bin/echo", "most run first");

    // Applied next to the policies in force, exactly the commands run are allowed.
    let dir = tempfile::tempdir().unwrap();
    for src in s.admin().policies().await.unwrap().sources {
        std::fs::write(dir.path().join(&src.name), &src.text).unwrap();
    }
    let out = s.cli(
        t,
        &[
            "policy",
            "simulate",
            "--suggest-commands",
            "--since",
            "1h",
            "--target",
            "web1",
            "--output",
            dir.path().to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let file = dir.path().join("commands-web1-root.cedar");
    assert!(
        stdout(&out).contains(file.to_str().unwrap()),
        "{}",
        stdout(&out)
    );
    let out = s.cli(
        t,
        &["--json", "policy", "apply", dir.path().to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let applied: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let version = applied["version"].as_i64().unwrap();
    agent.wait_snapshot(1, Some(version));
    let out = agent.exec(&alice, &["/bin/echo", "hello", "world"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = agent.exec(&alice, &["/usr/bin/id"]);
    assert!(out.status.success(), "{}", stderr(&out));
    for refused in [
        &["/usr/bin/whoami"][..],
        &["/bin/echo", "something", "else"],
    ] {
        let out = agent.exec(&alice, refused);
        assert!(!out.status.success(), "{refused:?} ran");
        assert!(
            stderr(&out).contains("commands-web1-root"),
            "{}",
            stderr(&out)
        );
    }
    // Other roles, and other targets, are untouched by a filter that excludes them.
    let out = s.cli(
        t,
        &[
            "--json",
            "policy",
            "simulate",
            "--suggest-commands",
            "--target",
            "db1",
        ],
    );
    let r: pedm_api::CommandSuggestions = serde_json::from_slice(&out.stdout).unwrap();
    assert!(r.roles.is_empty());
    // Reading what people ran needs read_audit.
    let e = client
        .suggest_commands(&pedm_api::CommandSuggestionQuery::default())
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(403));
}
