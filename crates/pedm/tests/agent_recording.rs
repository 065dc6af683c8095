//! Recording hygiene on the real binaries: what a user types is recorded only for roles that
//! ask for it, and never while the terminal does not echo it (a password prompt); replay
//! withholds the control sequences that would act on the viewer's terminal (OSC 52
//! clipboard writes here) unless `--raw`. Root only (real Linux users, a root daemon);
//! skipped with the reason printed otherwise.

mod common;

use common::agent::*;
use common::*;
use pedm_agent::recording::{EventKind, parse};
use pedm_api::SessionQuery;
use std::time::Duration;

/// Prints an OSC 52 clipboard write between `x` and `y`, then asks for a password with echo
/// off (as `sudo`, `passwd` and `read -s` do) and then for a line typed in the open.
const SCRIPT: &str = "printf 'x\\033]52;c;ZXZpbA==\\007y\\n'; stty -echo; echo ready; \
    read -r pw; stty echo; echo got; read -r x; echo \"length ${#pw}, then $x\"";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_stay_out_of_recordings_and_replay_does_not_act_on_the_viewer() {
    if !root_or_skip("passwords_stay_out_of_recordings_and_replay_does_not_act_on_the_viewer") {
        return;
    }
    let (s, agent, alice, client) = setup("pedmrc").await;
    let out = s.cli(
        &s.admin_token,
        &[
            "role",
            "add",
            "web1",
            "typed",
            "--max-duration",
            "1h",
            "--auto-approve",
            "--run-as",
            "root",
            "--record-input",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let listed = s.cli(&s.admin_token, &["role", "list", "web1"]);
    assert!(
        stdout(&listed).contains("input recorded"),
        "{}",
        stdout(&listed)
    );
    add_policy(
        &s.admin(),
        "typed-shells.cedar",
        "@id(\"typed-shells\")\npermit (principal, action == Pedm::Action::\"exec\", resource)\n\
         when { resource.shell && resource.role == \"typed\" };\n",
    )
    .await;
    client
        .create_request(&req("web1", "typed", "30m", "rotate the database password"))
        .await
        .unwrap()
        .grant
        .expect("auto-approved");
    agent.wait_snapshot(1, None);

    let out = scripted_session(
        &agent,
        &alice,
        &["/bin/sh", "-c", SCRIPT],
        serde_json::json!([
            {"wait": "ready"}, {"type": "hunter2\r"},
            {"wait": "got"}, {"type": "visible\r"},
        ]),
    );
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let exited: serde_json::Value = serde_json::from_str(stdout(&out).trim()).expect("Exited");
    assert_eq!(exited["code"], 0, "{exited}");

    let session = eventually(Duration::from_secs(20), "the uploaded session", || async {
        let l = s
            .admin()
            .list_sessions(&SessionQuery {
                user: Some(alice.name.clone()),
                ..Default::default()
            })
            .await
            .ok()?;
        l.into_iter().next()
    })
    .await;
    let id = session.id.to_string();
    let export = s.cli(&s.admin_token, &["session", "export", &id]);
    assert!(export.status.success(), "{}", stderr(&export));
    let raw = stdout(&export);
    assert!(
        !raw.contains("hunter2"),
        "the password is in the recording:\n{raw}"
    );
    let cast = parse(raw.as_bytes()).expect("asciicast");
    let typed: String = cast
        .events
        .iter()
        .filter(|e| e.kind == EventKind::Input)
        .map(|e| e.data.as_str())
        .collect();
    assert_eq!(typed, "visible\r");
    assert_eq!(
        cast.markers(),
        ["input not recorded: typed with echo off", "exit 0"]
    );
    assert!(
        cast.output().contains("length 7, then visible"),
        "the program got both"
    );

    // Replay: the clipboard write is withheld and counted; --raw passes it.
    let play = s.cli(&s.admin_token, &["session", "play", &id, "--speed", "1000"]);
    assert!(play.status.success(), "{}", stderr(&play));
    assert!(stdout(&play).contains("xy"), "{:?}", stdout(&play));
    assert!(!stdout(&play).contains("\u{1b}]52"), "{:?}", stdout(&play));
    assert!(
        stderr(&play).contains("withheld 1 clipboard write (OSC 52); --raw replays them"),
        "{}",
        stderr(&play)
    );
    let play = s.cli(
        &s.admin_token,
        &["session", "play", &id, "--speed", "1000", "--raw"],
    );
    assert!(
        stdout(&play).contains("x\u{1b}]52;c;ZXZpbA==\u{7}y"),
        "{:?}",
        stdout(&play)
    );
}
