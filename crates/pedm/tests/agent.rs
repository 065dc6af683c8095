//! The host agent end to end: the real `pedmd`, the real `pedm-agent` (root) and the real
//! `pedm` run as real Linux users created by the test. Skipped, with the reason printed, when
//! not running as root.

mod common;

use common::agent::*;
use common::*;
use pedm_api::{AuditQuery, Client, CreateTarget, Reason, SessionQuery, TargetKind};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_runs_only_what_a_live_grant_and_policy_allow() {
    if !root_or_skip("exec_runs_only_what_a_live_grant_and_policy_allow") {
        return;
    }
    let (s, agent, alice, client) = setup("pedmta").await;

    // No grant: refused, exit 1, and the refusal is in the audit log.
    let out = agent.exec(&alice, &["/usr/bin/id", "-u"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("holds no active grant on web1"),
        "{}",
        stderr(&out)
    );

    let g = grant(&client, "30m").await;
    agent.wait_snapshot(1, None);

    // Allowed: runs as root, found through the secure PATH, exit status passed through.
    let out = agent.exec(&alice, &["id", "-u"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "0\n");
    let out = agent.exec(&alice, &["/bin/sh", "-c", "echo to-stderr >&2; exit 7"]);
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(stderr(&out), "to-stderr\n");

    // stdin reaches the command.
    let mut child = agent
        .pedm_as(&alice, &["exec", "--", "/bin/cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"through stdin\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "through stdin\n");

    // The environment is rebuilt: injection attempts never reach the command.
    let out = agent
        .pedm_as(&alice, &["exec", "--", "/usr/bin/env"])
        .env("LD_PRELOAD", "/tmp/evil.so")
        .env("LD_LIBRARY_PATH", "/tmp")
        .env("BASH_ENV", "/tmp/evil.sh")
        .env("IFS", "x")
        .env("PATH", "/tmp/evil:/usr/bin:/bin")
        .env("SHELLOPTS", "xtrace")
        .env("TERM", "() { :; }; echo pwned")
        .env("LANG", "C.UTF-8")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let env = stdout(&out);
    for bad in [
        "LD_PRELOAD",
        "LD_LIBRARY_PATH",
        "BASH_ENV",
        "IFS=",
        "SHELLOPTS",
        "pwned",
    ] {
        assert!(!env.contains(bad), "{bad} reached the command:\n{env}");
    }
    let lines: Vec<&str> = env.lines().collect();
    assert!(
        lines.contains(&"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
        "{env}"
    );
    assert!(
        lines.contains(&"USER=root") && lines.contains(&"HOME=/root"),
        "{env}"
    );
    assert!(
        lines.contains(&format!("PEDM_USER={}", alice.name).as_str()),
        "{env}"
    );
    assert!(
        lines.contains(&"LANG=C.UTF-8"),
        "safe variables are kept: {env}"
    );

    // Relative paths and binaries the caller could have changed are refused.
    let out = agent.exec(&alice, &["./pedm", "--version"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("relative"), "{}", stderr(&out));
    // A binary in a world-writable directory (/tmp) is refused...
    let in_tmp = agent.dir.path().join("true-in-tmp");
    std::fs::copy("/bin/true", &in_tmp).unwrap();
    let out = agent.exec(&alice, &[in_tmp.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("/tmp is writable"),
        "{}",
        stderr(&out)
    );
    // ...and so is one the caller owns, even in a root-owned directory.
    let safe_dir = tempfile::Builder::new()
        .prefix("pedm-test-")
        .tempdir_in("/opt")
        .unwrap();
    std::fs::set_permissions(safe_dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let own = safe_dir.path().join("alices-true");
    std::fs::copy("/bin/true", &own).unwrap();
    nix::unistd::chown(&own, Some(alice.uid.into()), None).unwrap();
    let out = agent.exec(&alice, &[own.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(own.to_str().unwrap()),
        "{}",
        stderr(&out)
    );
    let root_owned = safe_dir.path().join("roots-true");
    std::fs::copy("/bin/true", &root_owned).unwrap();
    assert!(
        agent
            .exec(&alice, &[root_owned.to_str().unwrap()])
            .status
            .success()
    );

    // A blocklist policy: the agent gets the new version and refuses that command only.
    add_policy(
        &s.admin(),
        "blocklist.cedar",
        "@id(\"no-rm\")\nforbid (principal, action == Pedm::Action::\"exec\", resource)\n\
               when { resource.path == \"/usr/bin/rm\" };\n",
    )
    .await;
    agent.wait_snapshot(1, Some(2));
    let out = agent.exec(&alice, &["rm", "-f", "/nonexistent-pedm-file"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("no-rm"), "{}", stderr(&out));
    assert!(agent.exec(&alice, &["/bin/true"]).status.success());

    // Shells need a policy of their own: the default policies allow none.
    let out = agent.pedm_as(&alice, &["shell"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("a shell"), "{}", stderr(&out));

    // An allowlist instead of the default "any command": only what it names runs.
    let mut sources = s.admin().policies().await.unwrap().sources;
    for src in &mut sources {
        if let Some(at) = src.text.find("@id(\"grant-holders-exec\")") {
            src.text.truncate(at);
        }
    }
    sources.push(pedm_api::PolicySource {
        name: "allowlist.cedar".into(),
        text: "@id(\"only-id\")\npermit (principal, action == Pedm::Action::\"exec\", resource)\n\
               when { resource.path == \"/usr/bin/id\" && !resource.shell };\n"
            .into(),
    });
    s.admin()
        .apply_policies(&pedm_api::ApplyPolicies {
            sources,
            comment: Some("allowlist".into()),
        })
        .await
        .unwrap();
    agent.wait_snapshot(1, Some(3));
    let out = agent.exec(&alice, &["/bin/true"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("not allowed by policy"),
        "{}",
        stderr(&out)
    );
    assert!(agent.exec(&alice, &["id", "-u"]).status.success());

    // Every decision reached the audit log, attributed to the person, with the grant.
    let denied = eventually(Duration::from_secs(20), "exec.denied events", || async {
        let ev = s
            .admin()
            .audit_events(&AuditQuery {
                action: Some("exec.denied".into()),
                actor: Some(alice.name.clone()),
                ..Default::default()
            })
            .await
            .unwrap();
        (ev.len() >= 6).then_some(ev)
    })
    .await;
    assert!(
        denied
            .iter()
            .any(|e| e.data["reason"].as_str().unwrap_or("").contains("no-rm"))
    );
    let allowed = eventually(Duration::from_secs(20), "exec.allowed events", || async {
        let ev = s
            .admin()
            .audit_events(&AuditQuery {
                action: Some("exec.allowed".into()),
                actor: Some(alice.name.clone()),
                ..Default::default()
            })
            .await
            .unwrap();
        (ev.len() >= 6).then_some(ev)
    })
    .await;
    assert_eq!(allowed[0].data["grant"], g.id.to_string());
    assert_eq!(allowed[0].data["argv"][0], "/usr/bin/id");
}

/// Reads `child`'s stdout until a line equals `line`.
fn read_until_line(r: &mut impl BufRead, line: &str) {
    let mut buf = String::new();
    loop {
        buf.clear();
        assert!(
            r.read_line(&mut buf).unwrap() > 0,
            "stdout ended before {line:?}"
        );
        if buf.trim_end() == line {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_and_expired_grants_end_running_sessions() {
    if !root_or_skip("revoked_and_expired_grants_end_running_sessions") {
        return;
    }
    let (s, agent, bob, client) = setup("pedmtb").await;
    let g = grant(&client, "30m").await;
    agent.wait_snapshot(1, None);

    // Revoked while a long command runs: it is hung up and new commands are refused.
    let long = [
        "exec",
        "--",
        "/bin/sh",
        "-c",
        "echo started; exec sleep 1000",
    ];
    let mut child = agent
        .pedm_as(&bob, &long)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    read_until_line(&mut out, "started");
    s.admin()
        .revoke_grant(
            g.id,
            &Reason {
                reason: Some("incident over".into()),
            },
        )
        .await
        .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(128 + libc_sighup()), "hung up");
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(err.contains("grant revoked"), "{err}");
    let out = agent.exec(&bob, &["/bin/true"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "refused at once after the revocation"
    );

    // Expired: the session ends at expiry, by the agent's own clock.
    let g2 = grant(&client, "3s").await;
    agent.wait_snapshot(1, None);
    let mut child = agent
        .pedm_as(&bob, &long)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    read_until_line(&mut out, "started");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(128 + libc_sighup()));
    let ended = jiff::Timestamp::now();
    assert!(ended >= g2.expires_at, "not ended before the grant's end");
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(err.contains("grant expired"), "{err}");
    let out = agent.exec(&bob, &["/bin/true"]);
    assert_eq!(out.status.code(), Some(1));

    // Both sessions were recorded with how they ended.
    let sessions = eventually(Duration::from_secs(20), "two recorded sessions", || async {
        let l = client
            .list_sessions(&SessionQuery::default())
            .await
            .unwrap();
        (l.len() == 2).then_some(l)
    })
    .await;
    assert_eq!(sessions[0].grant_id, Some(g2.id));
    assert_eq!(sessions[0].ended_by.as_deref(), Some("grant expired"));
    assert_eq!(sessions[1].ended_by.as_deref(), Some("grant revoked"));
    assert_eq!(sessions[1].signal, Some(libc_sighup()));
}

fn libc_sighup() -> i32 {
    nix::sys::signal::Signal::SIGHUP as i32
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_go_on_offline_and_arrive_once_after_the_server_returns() {
    if !root_or_skip("sessions_go_on_offline_and_arrive_once_after_the_server_returns") {
        return;
    }
    let (mut s, mut agent, carol, client) = setup("pedmtc").await;
    let g = grant(&client, "30m").await;
    agent.wait_snapshot(1, None);

    // A session is running when the server goes away; it goes on.
    let script =
        "echo started; read line; echo \"got $line\"; printf 'caf\\303\\251 \\342\\234\\223\\n'";
    let mut child = agent
        .pedm_as(&carol, &["exec", "--", "/bin/sh", "-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout_r = BufReader::new(child.stdout.take().unwrap());
    read_until_line(&mut stdout_r, "started");
    s.kill();
    child.stdin.take().unwrap().write_all(b"hello\n").unwrap();
    let mut rest = Vec::new();
    stdout_r.read_to_end(&mut rest).unwrap();
    assert!(child.wait().unwrap().success());
    let received = [b"started\n".as_slice(), &rest].concat();
    assert_eq!(String::from_utf8_lossy(&rest), "got hello\ncafé ✓\n");

    // Offline, and even after the agent restarts offline, the signed grant is enforced.
    agent.restart();
    let out = agent.exec(&carol, &["id", "-u"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "0\n");

    // The server returns: both recordings and every report arrive.
    s.start_again();
    let mut sessions = vec![];
    for _ in 0..1200 {
        sessions = client
            .list_sessions(&SessionQuery::default())
            .await
            .unwrap_or_default();
        if sessions.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(
        sessions.len(),
        2,
        "two uploaded sessions; agent log:\n{}",
        agent.log_text()
    );
    let first = sessions
        .iter()
        .find(|x| x.argv.contains(&"-c".to_string()))
        .unwrap();
    assert_eq!(first.grant_id, Some(g.id));
    assert_eq!(first.exit_code, Some(0));

    // The recording holds exactly what the caller saw, and its hash is the audited one.
    let out = s.cli(
        &s.admin_token,
        &["session", "export", &first.id.to_string()],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let cast = pedm_agent::recording::parse(&out.stdout[..]).unwrap();
    assert_eq!(cast.output().as_bytes(), &received[..]);
    assert!(
        cast.events
            .iter()
            .all(|e| e.kind != pedm_agent::recording::EventKind::Input),
        "input is not recorded unless the role says --record-input"
    );
    let recorded = s
        .admin()
        .audit_events(&AuditQuery {
            action: Some("session.recorded".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(recorded.len(), 2, "each session recorded once");
    let ev = recorded
        .iter()
        .find(|e| e.subject.as_deref() == Some(&format!("session:{}", first.id)))
        .unwrap();
    assert_eq!(ev.data["recording_sha256"], first.recording_sha256);
    let listed = s.cli(&s.admin_token, &["session", "list", "--user", &carol.name]);
    assert!(
        stdout(&listed).contains(&first.id.to_string()),
        "{}",
        stdout(&listed)
    );
    let shown = s.cli(&s.admin_token, &["session", "show", &first.id.to_string()]);
    assert!(
        stdout(&shown).contains(&first.recording_sha256),
        "{}",
        stdout(&shown)
    );
    assert!(stdout(&shown).contains("exit 0"), "{}", stdout(&shown));
    // Others' sessions are not for every user.
    let other = user_with_token(&s, "eve", false).await;
    let out = s.cli(&other, &["session", "show", &first.id.to_string()]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let played = s.cli(
        &s.admin_token,
        &["session", "play", &first.id.to_string(), "--speed", "1000"],
    );
    assert!(stdout(&played).contains("got hello"), "{}", stderr(&played));

    // Sent again (a lost answer): accepted once, nothing recorded twice.
    let reports = s
        .admin()
        .audit_events(&AuditQuery {
            action: Some("exec.allowed".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(reports.len(), 2, "one exec.allowed per session");
    let host_client = Client::new(&s.url, Some(read_host_token(&agent))).unwrap();
    let again: pedm_api::agent::AgentReport = serde_json::from_value(serde_json::json!({
        "id": reports[0].data["report"],
        "at": reports[0].at,
        "user": carol.name,
        "verdict": "allowed",
        "grant": g.id,
        "session": first.id,
        "argv": ["/bin/sh"],
        "binary_sha256": null,
        "reason": null,
    }))
    .unwrap();
    let r = host_client
        .agent_reports(&pedm_api::agent::AgentReports {
            reports: vec![again],
        })
        .await
        .unwrap();
    assert_eq!((r.accepted, r.duplicates), (0, 1));
    let after = s
        .admin()
        .audit_events(&AuditQuery {
            action: Some("exec.allowed".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(after.len(), 2);

    // A recording that does not match its description is refused and changes nothing.
    let bogus = agent.dir.path().join("bogus.cast");
    std::fs::write(&bogus, b"{\"version\":2}\n").unwrap();
    let meta = pedm_api::agent::SessionUpload {
        grant_id: Some(g.id),
        delegation_id: None,
        task: None,
        params: None,
        user: carol.name.clone(),
        run_as: "root".into(),
        argv: vec!["/bin/true".into()],
        binary_sha256: None,
        shell: false,
        started_at: jiff::Timestamp::now(),
        ended_at: jiff::Timestamp::now(),
        exit_code: Some(0),
        signal: None,
        ended_by: None,
        recording_sha256: "00".repeat(32),
        recording_bytes: 14,
    };
    let e = host_client
        .upload_session(
            uuid::Uuid::now_v7(),
            &meta,
            tokio::fs::File::open(&bogus).await.unwrap(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(400), "{e}");
    assert_eq!(
        client
            .list_sessions(&SessionQuery::default())
            .await
            .unwrap()
            .len(),
        2
    );
}

fn read_host_token(agent: &Agent) -> String {
    std::fs::read_to_string(agent.dir.path().join("agent.token"))
        .unwrap()
        .trim()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_are_registered_by_admins_and_agents_need_their_token() {
    let s = Server::start();
    let a = s.admin();
    a.create_target(&CreateTarget {
        name: "db1".into(),
        kind: TargetKind::Postgres,
        description: None,
        labels: Default::default(),
    })
    .await
    .unwrap();
    // Only host targets run agents; unknown targets are named.
    let out = s.cli(&s.admin_token, &["host", "register", "db1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("kind host"), "{}", stderr(&out));
    let out = s.cli(&s.admin_token, &["host", "register", "nope"]);
    assert!(stderr(&out).contains("nope"), "{}", stderr(&out));
    standard_targets(&s).await;
    // Users may not register hosts; the refusal is audited.
    let user = user_with_token(&s, "mallory", false).await;
    let out = s.cli(&user, &["host", "register", "web1"]);
    assert_eq!(out.status.code(), Some(1));
    let first = a.register_host("web1").await.unwrap();
    let agent = Client::new(&s.url, Some(first.token.clone())).unwrap();
    agent.agent_snapshot().await.unwrap();
    // A user token is not a host token, and a rotated host token stops working.
    let as_user = Client::new(&s.url, Some(user.clone())).unwrap();
    assert_eq!(
        as_user.agent_snapshot().await.unwrap_err().status(),
        Some(401)
    );
    let second = a.register_host("web1").await.unwrap();
    assert!(second.rotated);
    assert_eq!(
        agent.agent_snapshot().await.unwrap_err().status(),
        Some(401)
    );
    let agent = Client::new(&s.url, Some(second.token)).unwrap();
    let snap = agent.agent_snapshot().await.unwrap();
    // The snapshot verifies with the registered key, and not once altered.
    let key: pedm_audit::PublicKey = second.server_key.parse().unwrap();
    pedm_agent::snapshot::verify(&snap, &key, "web1").unwrap();
    let mut forged = snap.clone();
    forged.snapshot = forged.snapshot.replace("\"grants\":[]", "\"grants\":[ ]");
    assert!(pedm_agent::snapshot::verify(&forged, &key, "web1").is_err());
    assert!(pedm_agent::snapshot::verify(&snap, &key, "web2").is_err());
    let hosts = s.cli(&s.admin_token, &["host", "list"]);
    assert!(stdout(&hosts).contains("web1"), "{}", stdout(&hosts));
    let failed = a
        .audit_events(&AuditQuery {
            action: Some("auth.failed".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(failed.iter().any(|e| e.data["kind"] == "host"));
    let denied = a
        .audit_events(&AuditQuery {
            action: Some("host.register".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(denied.iter().any(|e| e.actor == "mallory"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminals_signals_and_shells_pass_through() {
    if !root_or_skip("terminals_signals_and_shells_pass_through") {
        return;
    }
    let (s, agent, dave, client) = setup("pedmtd").await;
    grant(&client, "30m").await;
    agent.wait_snapshot(1, None);
    let pedm = agent.dir.path().join("pedm");
    let pedm = pedm.to_str().unwrap();

    // With a terminal (`script` gives pedm one), the command gets a pseudo-terminal of the
    // caller's size.
    let out = agent
        .pedm_as(&dave, &["exec", "--", "/bin/true"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let mut c = std::process::Command::new("script");
    c.args([
        "-q",
        "-e",
        "-c",
        // (Not `sh -c '...'`: a shell on a terminal is a shell, which this policy forbids.)
        &format!("stty rows 33 cols 111; {pedm} exec -- tty && {pedm} exec -- stty size"),
        "/dev/null",
    ]);
    let out = as_user(c, &agent, &dave).output().unwrap();
    let text = stdout(&out);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    assert!(text.contains("/dev/pts/"), "{text}");
    assert!(text.contains("33 111"), "{text}");

    // A signal the caller gets is passed to the command (no terminal: pipes).
    let script = "trap 'echo got TERM; exit 3' TERM; echo ready; while :; do sleep 0.05; done";
    let mut child = agent
        .pedm_as(&dave, &["exec", "--", "/bin/sh", "-c", script])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    read_until_line(&mut out, "ready");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    read_until_line(&mut out, "got TERM");
    assert_eq!(child.wait().unwrap().code(), Some(3));

    // A shell, once a policy permits shells for this role.
    add_policy(
        &s.admin(),
        "shells.cedar",
        "@id(\"root-shells\")\npermit (principal, action == Pedm::Action::\"exec\", resource)\n\
         when { resource.shell && resource.role == \"root\" };\n",
    )
    .await;
    agent.wait_snapshot(1, Some(2));
    let mut c = std::process::Command::new("script");
    c.args(["-q", "-e", "-c", &format!("{pedm} shell"), "/dev/null"]);
    let mut child = as_user(c, &agent, &dave)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"echo \"uid=$(id -u) user=$USER\"; exit 4\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("uid=0 user=root"), "{text}");
    assert_eq!(out.status.code(), Some(4), "{text}");
    let sessions = eventually(Duration::from_secs(20), "the shell session", || async {
        let l = client
            .list_sessions(&SessionQuery::default())
            .await
            .unwrap();
        l.into_iter().find(|x| x.shell)
    })
    .await;
    assert_eq!(sessions.exit_code, Some(4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helpdesk_resets_a_password_through_a_delegated_task_and_nothing_else() {
    if !root_or_skip("helpdesk_resets_a_password_through_a_delegated_task_and_nothing_else") {
        return;
    }
    let (s, agent, helpdesk, _client) = setup("pedmth").await;
    let victim = LinuxUser::create("pedmtv");
    let admin = &s.admin_token;
    let task = serde_json::json!({
        "name": "reset-password",
        "description": "Set a user's password",
        "targets": ["web1"],
        "run_as": "root",
        "argv": ["/usr/sbin/chpasswd"],
        "stdin": "{user}:{password}\n",
        "params": [
            {"name": "user", "pattern": "[a-z_][a-z0-9_-]*", "max_len": 32,
             "protected": ["root", "admin"]},
            {"name": "password", "secret": true, "max_len": 128}
        ]
    });
    let file = agent.dir.path().join("reset-password.json");
    std::fs::write(&file, task.to_string()).unwrap();
    let ok = |o: &std::process::Output| assert!(o.status.success(), "{}{}", stdout(o), stderr(o));
    ok(&s.cli(admin, &["task", "define", file.to_str().unwrap()]));
    ok(&s.cli(admin, &["group", "add", "helpdesk"]));
    ok(&s.cli(admin, &["group", "add-member", "helpdesk", &helpdesk.name]));
    let out = s.cli(
        admin,
        &[
            "--json",
            "delegate",
            "create",
            "--group",
            "helpdesk",
            "--task",
            "reset-password",
            "--scope",
            "web1",
            "--for",
            "1h",
        ],
    );
    ok(&out);
    let delegation: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let delegation = delegation["id"].as_str().unwrap().to_string();
    agent.wait_for("the delegation", |l| {
        l.contains("snapshot in force") && l.contains("delegations=1")
    });

    // The reset works: the password really is the new one. The secret comes on stdin.
    let run = |params: &[&str], input: &str| {
        let mut args = vec!["task", "run", "reset-password"];
        for p in params {
            args.extend(["-p", p]);
        }
        let mut child = agent
            .pedm_as(&helpdesk, &args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let user_param = format!("user={}", victim.name);
    let out = run(&[&user_param, "password=-"], "Tr0ub4dor&3\n");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        password_is(&victim.name, "Tr0ub4dor&3"),
        "the password was set"
    );

    // Protected accounts and injection attempts are refused, and nothing changes.
    let root_before = shadow_hash("root");
    for bad in [
        "user=root",
        "user=-e",
        "user=bob;id",
        "user=bob\nroot",
        "user=ROOT",
        &format!("user={}", "a".repeat(40)),
    ] {
        let out = run(&[bad, "password=-"], "pwned\n");
        assert_eq!(out.status.code(), Some(1), "{bad:?} was not refused");
        assert!(stderr(&out).contains("user"), "{bad:?}: {}", stderr(&out));
    }
    assert_eq!(shadow_hash("root"), root_before);
    assert!(password_is(&victim.name, "Tr0ub4dor&3"));
    // An unknown parameter is refused too.
    let out = run(&[&user_param, "password=-", "shell=/bin/sh"], "x\n");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));

    // Nothing else as root: no grant, so no command; no other task.
    let out = agent.exec(&helpdesk, &["/usr/bin/id", "-u"]);
    assert_eq!(out.status.code(), Some(1));
    let out = agent
        .pedm_as(&helpdesk, &["task", "run", "reboot"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no task reboot"), "{}", stderr(&out));

    // The run is a recorded session, with its parameters but never the secret.
    let sessions = eventually(Duration::from_secs(20), "the task session", || async {
        let l = s
            .admin()
            .list_sessions(&SessionQuery {
                user: Some(helpdesk.name.clone()),
                ..Default::default()
            })
            .await
            .unwrap();
        (l.len() == 1).then_some(l)
    })
    .await;
    let session = &sessions[0];
    assert_eq!(session.task.as_deref(), Some("reset-password"));
    assert_eq!(
        session.delegation_id.map(|d| d.to_string()),
        Some(delegation.clone())
    );
    assert_eq!(session.grant_id, None);
    let params = session.params.as_ref().unwrap();
    assert_eq!(params["user"], victim.name);
    assert_ne!(params["password"], "Tr0ub4dor&3");
    let out = s.cli(admin, &["session", "export", &session.id.to_string()]);
    ok(&out);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("Tr0ub4dor"));
    let audit = s.cli(admin, &["--json", "audit", "list"]);
    assert!(
        !stdout(&audit).contains("Tr0ub4dor"),
        "the secret reached the audit log"
    );
    let denied = s
        .admin()
        .audit_events(&AuditQuery {
            action: Some("exec.denied".into()),
            actor: Some(helpdesk.name.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(denied.iter().any(|e| e.data["task"] == "reset-password"));

    // Revoking the delegation stops it on the host at once.
    ok(&s.cli(
        admin,
        &["delegate", "revoke", &delegation, "--reason", "moved team"],
    ));
    agent.wait_for("the revocation", |l| {
        l.contains("snapshot in force") && l.contains("delegations=0")
    });
    let out = run(&[&user_param, "password=-"], "again\n");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no live delegation"),
        "{}",
        stderr(&out)
    );
    assert!(password_is(&victim.name, "Tr0ub4dor&3"));
}
