//! Step-up approval inside a session, on the real binaries: under an `--intercept` role, a
//! command that policy marks `@step_up` is held at its `execve`, shows up for approvers
//! (`pedm request list --approvable`, with the full argv), runs the moment it is approved and
//! fails with EACCES when denied; the user's terminal says what it waits for, and the audit
//! log has both outcomes. Root only, with seccomp user notification; skipped otherwise.

mod common;

use common::agent::*;
use common::*;
use std::process::Stdio;
use std::time::Duration;

const POLICY: &str = "@id(\"audited-shells\")\n\
    permit (principal, action == Pedm::Action::\"exec\", resource)\n\
    when { resource.role == \"audited\" && (resource.shell || resource.path == \"/usr/bin/dash\") };\n\
    @id(\"id-needs-approval\")\n@step_up(\"\")\n\
    permit (principal, action == Pedm::Action::\"exec\", resource)\n\
    when { resource.role == \"audited\" && resource.path == \"/usr/bin/id\" };\n";

/// The pending step-up request of `argv0` (through the CLI, as the admin approver sees it).
async fn pending_step_up(s: &Server, argv0: &str) -> serde_json::Value {
    eventually(
        Duration::from_secs(20),
        "a pending step-up request",
        || async {
            let out = s.cli(
                &s.admin_token,
                &["--json", "request", "list", "--approvable"],
            );
            assert!(out.status.success(), "{}", stderr(&out));
            let list: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).ok()?;
            list.into_iter().find(|r| {
                r["context"]["step_up"]["exec"]["argv"][0] == argv0 && r["state"] == "pending"
            })
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_up_command_waits_for_approval_and_runs_or_fails_with_eacces() {
    if !root_or_skip("a_step_up_command_waits_for_approval_and_runs_or_fails_with_eacces") {
        return;
    }
    if !pedm_agent::contain::execs::available() {
        println!("SKIP step_up: no seccomp user notification here");
        return;
    }
    let (s, agent, alice, client) = setup("pedmsu").await;
    add_role(&s, "audited", "root", &["--intercept"]);
    // The audited role runs nothing by the default exec permit: only shells, and `id` once
    // approved.
    edit_policies(&s.admin(), "step-up for id", |sources| {
        for src in sources.iter_mut() {
            src.text = src.text.replace(
                "when { !resource.shell };",
                "when { !resource.shell && resource.role != \"audited\" };",
            );
        }
        sources.push(pedm_api::PolicySource {
            name: "step-up.cedar".into(),
            text: POLICY.into(),
        });
    })
    .await;
    let grant = client
        .create_request(&req(
            "web1",
            "audited",
            "30m",
            "restart after the config change",
        ))
        .await
        .unwrap()
        .grant
        .expect("auto-approved")
        .id
        .to_string();
    agent.wait_snapshot(1, None);
    let script = "/usr/bin/id -u; echo rc=$?; /usr/bin/whoami; echo whoami=$?";
    let run = || {
        agent
            .pedm_as(
                &alice,
                &["exec", "--grant", &grant, "--", "/bin/sh", "-c", script],
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run pedm exec")
    };

    // Approved: the held exec runs as the grant's run-as user.
    let held = run();
    let pending = pending_step_up(&s, "/usr/bin/id").await;
    let step = &pending["context"]["step_up"]["exec"];
    assert_eq!(step["argv"], serde_json::json!(["/usr/bin/id", "-u"]));
    assert_eq!(step["path"], "/usr/bin/id");
    assert_eq!(step["grant"], grant.as_str());
    assert_eq!(pending["requester"], alice.name.as_str());
    assert_eq!(pending["policy"], "id-needs-approval");
    let id = pending["id"].as_str().unwrap().to_string();
    // The detail view names the command and the session.
    let shown = s.cli(&s.admin_token, &["request", "show", &id]);
    assert!(
        stdout(&shown).contains("\"/usr/bin/id\" \"-u\""),
        "{}",
        stdout(&shown)
    );
    assert!(
        stdout(&shown).contains("step-up session:"),
        "{}",
        stdout(&shown)
    );
    // Nobody approves their own.
    let own = client
        .approve_request(id.parse().unwrap(), &pedm_api::Decide { comment: None })
        .await
        .expect_err("alice approved her own step-up");
    assert!(own.to_string().contains("their own"), "{own}");
    let ok = s.cli(&s.admin_token, &["request", "approve", &id]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    let out = held.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "0\nrc=0\nwhoami=126\n",
        "id ran as root once approved; whoami (neither permitted nor approvable) was refused \
         at once: {}",
        stderr(&out)
    );
    let told = stderr(&out);
    assert!(told.contains("needs approval"), "{told}");
    assert!(told.contains(&id), "{told}");
    assert!(told.contains("approved by admin"), "{told}");

    // Denied: the exec fails with EACCES (the shell's 126) and says why.
    let held = run();
    let pending = pending_step_up(&s, "/usr/bin/id").await;
    let id2 = pending["id"].as_str().unwrap().to_string();
    assert_ne!(id2, id);
    let no = s.cli(
        &s.admin_token,
        &[
            "request",
            "deny",
            &id2,
            "--comment",
            "not during the freeze",
        ],
    );
    assert!(no.status.success(), "{}", stderr(&no));
    let out = held.wait_with_output().unwrap();
    assert_eq!(stdout(&out), "rc=126\nwhoami=126\n", "{}", stderr(&out));
    assert!(
        stderr(&out).contains("not during the freeze"),
        "{}",
        stderr(&out)
    );

    // Both outcomes are in the audit log as session.exec events of the one command.
    let events = eventually(
        Duration::from_secs(20),
        "two session.exec of id",
        || async {
            let ids: Vec<_> = audit_of(&s, "session.exec")
                .await
                .into_iter()
                .filter(|e| e.data["exec"]["path"] == "/usr/bin/id")
                .collect();
            (ids.len() == 2).then_some(ids)
        },
    )
    .await;
    let allowed = events
        .iter()
        .find(|e| e.outcome == pedm_api::Outcome::Success)
        .expect("the approved exec");
    assert!(
        allowed.data["reason"].as_str().unwrap_or("").contains(&id),
        "{allowed:?}"
    );
    let denied = events
        .iter()
        .find(|e| e.outcome == pedm_api::Outcome::Denied)
        .expect("the denied exec");
    assert!(
        denied.data["reason"]
            .as_str()
            .unwrap_or("")
            .contains("denied"),
        "{denied:?}"
    );
    // Nobody decides: after `limits.step_up_wait` the exec fails too, saying so.
    let mut s = s;
    s.reconfigure(
        Some("[limits]\nmax_duration = \"7d\"\npending_ttl = \"24h\"\nstep_up_wait = \"2s\"\n"),
        &[],
    );
    let held = run();
    let pending = pending_step_up(&s, "/usr/bin/id").await;
    let id3 = pending["id"].as_str().unwrap().to_string();
    let out = held.wait_with_output().unwrap();
    assert_eq!(stdout(&out), "rc=126\nwhoami=126\n", "{}", stderr(&out));
    let told = stderr(&out);
    assert!(told.contains(&id3), "{told}");
    assert!(
        told.contains("not decided in time") || told.contains("expired"),
        "{told}"
    );

    // No grant came of either.
    let r = s.admin().get_request(id.parse().unwrap()).await.unwrap();
    assert_eq!(r.request.state, pedm_api::RequestState::Approved);
    assert_eq!(r.request.grant_id, None);

    // Another host cannot ask approval for this host's grant: refused, and recorded.
    s.admin()
        .create_target(&pedm_api::CreateTarget {
            name: "web2".into(),
            kind: pedm_api::TargetKind::Host,
            description: None,
            labels: Default::default(),
        })
        .await
        .unwrap();
    let out = s.cli(&s.admin_token, &["--json", "host", "register", "web2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let reg: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let web2 = s.client(reg["token"].as_str().unwrap());
    let held = pedm_api::agent::HeldExec {
        grant: grant.parse().unwrap(),
        session: uuid::Uuid::now_v7(),
        argv: vec!["/usr/bin/id".into()],
        path: "/usr/bin/id".into(),
        sha256: None,
        cwd: "/".into(),
        pid: 4242,
        shell: false,
    };
    let requests = || {
        let out = s.cli(&s.admin_token, &["--json", "request", "list"]);
        serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout)
            .unwrap()
            .len()
    };
    let before = requests();
    let e = web2
        .agent_step_up(&held)
        .await
        .expect_err("web2 asked approval for web1's grant");
    assert!(e.to_string().contains("not for host web2"), "{e}");
    let refusals = audit_of(&s, "session.step_up").await;
    assert_eq!(refusals.len(), 1, "{refusals:?}");
    assert_eq!(refusals[0].outcome, pedm_api::Outcome::Denied);
    // Bad input is named and changes nothing.
    for (bad, field) in [
        (
            pedm_api::agent::HeldExec {
                path: "usr/bin/id".into(),
                ..held.clone()
            },
            "path",
        ),
        (
            pedm_api::agent::HeldExec {
                argv: vec![],
                ..held.clone()
            },
            "argv",
        ),
    ] {
        let e = web2
            .agent_step_up(&bad)
            .await
            .expect_err("bad input accepted");
        assert!(e.to_string().contains(field), "{e}");
    }
    assert_eq!(requests(), before, "a refused step-up made a request");
}
