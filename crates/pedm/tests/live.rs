//! Sessions watched as they happen, on the real binaries: the agent streams a running
//! session to pedmd, `pedm session live` lists it, `pedm session watch` shows its terminal
//! while it runs (and records who watched), people without the right are refused, and a
//! watcher who does not read never holds the session up. Root only (real Linux users, a root
//! daemon); skipped with the reason printed otherwise.

mod common;

use common::agent::*;
use common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// `pedm session watch ID` as a running process, its stdout lines sent to a channel.
fn watch(s: &Server, token: &str, id: uuid::Uuid) -> (std::process::Child, mpsc::Receiver<String>) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pedm"));
    c.args(["session", "watch", &id.to_string()])
        .env("PEDM_URL", &s.url)
        .env("PEDM_TOKEN", token)
        .env_remove("PEDM_TOKEN_FILE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(ca) = s.ca() {
        c.env("PEDM_CA", ca);
    }
    let mut child = c.spawn().expect("run pedm session watch");
    let out = child.stdout.take().expect("stdout");
    (child, lines_of(out))
}

/// `pedm exec -- ARGV` as `user`, running, its stdout lines sent to a channel (read to the
/// end: a caller that stops reading would end the session).
fn run(
    agent: &Agent,
    user: &LinuxUser,
    argv: &[&str],
) -> (std::process::Child, mpsc::Receiver<String>) {
    let mut args = vec!["exec", "--"];
    args.extend_from_slice(argv);
    let mut child = agent
        .pedm_as(user, &args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run pedm exec");
    let out = child.stdout.take().expect("stdout");
    (child, lines_of(out))
}

fn lines_of(out: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits for a line containing `what` (30 s at most: a bound, not a measure).
fn expect_line(rx: &mpsc::Receiver<String>, what: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) if l.contains(what) => return l,
            Ok(_) => {}
            Err(e) => panic!("no line with {what:?} from the watcher: {e}"),
        }
    }
}

/// The id of the one live session of `user`, once the server lists it.
async fn live_session(s: &Server, user: &str) -> pedm_api::live::LiveSession {
    eventually(
        Duration::from_secs(30),
        "the session listed as live",
        || async {
            let out = s.cli(&s.admin_token, &["--json", "session", "live"]);
            assert!(out.status.success(), "{}", stderr(&out));
            let list: Vec<pedm_api::live::LiveSession> =
                serde_json::from_slice(&out.stdout).unwrap();
            list.into_iter().find(|l| l.user == user)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_session_is_watched_live_and_the_watching_is_recorded() {
    if !root_or_skip("a_running_session_is_watched_live_and_the_watching_is_recorded") {
        return;
    }
    let (s, agent, alice, client) = setup("pedmlv").await;
    grant(&client, "30m").await;
    agent.wait_snapshot(1, None);
    let dir = tempfile::tempdir().unwrap();
    // Two FIFOs: one read each, so a write's close cannot end the second read early.
    let fifos = ["go1", "go2"].map(|f| dir.path().join(f));
    for f in &fifos {
        assert!(Command::new("mkfifo").arg(f).status().unwrap().success());
    }
    let [one, two] = fifos.each_ref().map(|f| f.to_str().unwrap().to_string());
    // Prints, waits for the test, prints what it was sent, waits again, ends.
    let script =
        format!("echo first-line; read a < {one}; echo \"second $a\"; read b < {two}; echo bye");
    let (mut session, session_out) = run(&agent, &alice, &["/bin/sh", "-c", &script]);
    expect_line(&session_out, "first-line");

    let live = live_session(&s, &alice.name).await;
    assert_eq!(live.host, "web1");
    assert_eq!(live.run_as, "root");
    assert!(
        live.argv.iter().any(|a| a.contains("first-line")),
        "{:?}",
        live.argv
    );
    let listed = stdout(&s.cli(&s.admin_token, &["session", "live"]));
    assert!(listed.contains(&live.id.to_string()), "{listed}");

    // The watcher sees what was already on the screen, then what comes while it watches.
    let (mut watcher, lines) = watch(&s, &s.admin_token, live.id);
    expect_line(&lines, "first-line");
    std::fs::write(&fifos[0], "hello\n").unwrap();
    expect_line(&lines, "second hello");
    assert!(
        session.try_wait().unwrap().is_none(),
        "seen while the session still runs"
    );
    // The session's owner may watch too; another person may not, and that is recorded.
    let mut seen_by_owner = String::new();
    let ended = client
        .watch_session(live.id, |name, data| {
            if name == "event" {
                seen_by_owner.push_str(data);
            }
            !seen_by_owner.contains("second hello")
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\nagent: {}\nserver: {}", agent.log_text(), s.log()));
    assert!(!ended, "the owner stopped watching once it saw the line");
    let bob = user_with_token(&s, "bob", false).await;
    let e = s
        .client(&bob)
        .watch_session(live.id, |_, _| true)
        .await
        .unwrap_err();
    assert_eq!(
        e.status(),
        Some(403),
        "{e:?}\nagent: {}\nserver: {}",
        agent.log_text(),
        s.log()
    );
    assert!(
        s.client(&bob).live_sessions().await.unwrap().is_empty(),
        "bob sees no one else's live sessions"
    );

    // The session ends: the watcher says so and exits.
    std::fs::write(&fifos[1], "done\n").unwrap();
    expect_line(&session_out, "bye");
    assert!(session.wait().unwrap().success());
    expect_line(&lines, "bye");
    let status = watcher.wait().unwrap();
    let mut err = String::new();
    watcher
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "{err}");
    assert!(err.contains("the session ended"), "{err}");
    assert!(
        err.contains(&format!("of {} as root on web1", alice.name)),
        "{err}"
    );

    let events = s
        .admin()
        .audit_events(&pedm_api::AuditQuery {
            action: Some("session.watched".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let watchers: Vec<&str> = events.iter().map(|e| e.actor.as_str()).collect();
    assert!(watchers.contains(&"admin"), "{watchers:?}");
    assert!(watchers.contains(&alice.name.as_str()), "{watchers:?}");
    let refused = s
        .admin()
        .audit_events(&pedm_api::AuditQuery {
            action: Some("session.watch".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        refused.iter().any(|e| e.actor == "bob"),
        "the refusal is recorded: {refused:?}"
    );
    // Over: no longer live, and watching it now says where to look instead.
    eventually(
        Duration::from_secs(30),
        "the session no longer live",
        || async {
            let out = s.cli(&s.admin_token, &["--json", "session", "live"]);
            let list: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
            list.is_empty().then_some(())
        },
    )
    .await;
    let out = s.cli(&s.admin_token, &["session", "watch", &live.id.to_string()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not streaming"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_who_does_not_read_never_holds_the_session_up() {
    if !root_or_skip("a_watcher_who_does_not_read_never_holds_the_session_up") {
        return;
    }
    let (s, agent, alice, client) = setup("pedmls").await;
    grant(&client, "30m").await;
    agent.wait_snapshot(1, None);
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("go");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    // Waits until the test has a watcher in place, then writes 40 MB.
    let script = format!(
        "echo ready; read a < {}; head -c 30000000 /dev/zero | od -v | head -c 40000000",
        fifo.to_str().unwrap()
    );
    let mut session = agent
        .pedm_as(&alice, &["exec", "--", "/bin/sh", "-c", &script])
        .stdout(Stdio::piped())
        .spawn()
        .expect("run pedm exec");
    let mut out = session.stdout.take().unwrap();
    let mut ready = [0u8; 6];
    out.read_exact(&mut ready).unwrap();
    assert_eq!(&ready, b"ready\n");
    let live = live_session(&s, &alice.name).await;
    // A watcher that connects and then never reads a byte.
    let mut stalled = std::net::TcpStream::connect(s.url.trim_start_matches("http://")).unwrap();
    write!(
        stalled,
        "GET /api/v1/sessions/{}/live HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n",
        live.id, s.admin_token
    )
    .unwrap();
    let mut head = [0u8; 12];
    stalled.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    std::fs::write(&fifo, "go\n").unwrap();
    // The session runs to its end; its output went to the caller in full.
    let mut rest = Vec::new();
    out.read_to_end(&mut rest).unwrap();
    assert!(session.wait().unwrap().success());
    assert_eq!(rest.len(), 40_000_000);
    // And the recording has all of it, whatever the watcher missed.
    let recorded = eventually(Duration::from_secs(60), "the recording", || async {
        client
            .list_sessions(&pedm_api::SessionQuery::default())
            .await
            .unwrap()
            .into_iter()
            .find(|x| x.id == live.id)
    })
    .await;
    assert!(
        recorded.recording_bytes > 40_000_000,
        "{}",
        recorded.recording_bytes
    );
    drop(stalled);
}
