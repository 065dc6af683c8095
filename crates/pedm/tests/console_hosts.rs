//! The console's pages about hosts, end to end in Debian's real Chromium (skipped with the
//! reason printed where it is not installed): a host's agent registered in the page, a
//! session watched live and ended there, a delegated task run from the page on a real
//! `pedm-agent` (root only: real Linux users and a root daemon).

mod common;

use common::agent::*;
use common::browser::{
    Driver, XSS, check_page, click, fill, sign_in, start_console, wait_for, wait_until,
};
use common::*;
use fantoccini::Locator;

/// A host's agent is registered in the page (its token shown once, and it works); a session
/// streaming from it is listed, watched in the page as it runs (output appears without a
/// reload, hostile output stays text), its end shown; an admin ends one from the page with a
/// reason; its owner may watch but not end it; every watch is recorded. The host's side is
/// the agent's live stream (`POST /agent/sessions/{id}/live`), spoken here by the API client
/// with the token the page gave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_session_is_watched_in_the_page_and_an_admin_terminates_it() {
    let Some((driver, s, alice)) = start_console().await else {
        return;
    };
    let g = s
        .client(&alice)
        .create_request(&req("web1", "docker", "10m", "follow the deploy"))
        .await
        .unwrap()
        .grant
        .unwrap();
    // The admin registers the host's agent in the page; the token shown once is the agent's.
    let adm = driver.browser("admin", 1280).await;
    sign_in(&adm, &s.url, &s.admin_token).await;
    adm.goto(&format!("{}/ui/admin", s.url)).await.unwrap();
    wait_for(&adm, "#register-web1").await;
    click(&adm, "#register-web1").await;
    let token = wait_for(&adm, "#minted-secret").await.text().await.unwrap();
    let page = adm.source().await.unwrap();
    assert!(page.contains("pedm-agent enroll"), "{page}");
    let host = pedm_api::Client::new(&s.url, Some(token.trim().to_string())).unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    let lines = futures_util::stream::poll_fn(move |cx| {
        rx.poll_recv(cx).map(|l| l.map(Ok::<_, std::io::Error>))
    });
    let id = uuid::Uuid::now_v7();
    let feed = tokio::spawn(async move { host.stream_live(id, lines).await });
    let send = |line: String| tx.send(format!("{line}\n").into_bytes()).unwrap();
    send(
        serde_json::to_string(&pedm_api::live::LiveHeader {
            grant_id: Some(g.id),
            delegation_id: None,
            user: "alice".into(),
            run_as: "root".into(),
            argv: vec![
                "/usr/bin/tail".into(),
                "-f".into(),
                "/var/log/deploy".into(),
            ],
            started_at: jiff::Timestamp::now(),
            width: 80,
            height: 24,
        })
        .unwrap(),
    );
    send(r#"[0.1,"o","hello from the live session\r\n"]"#.into());

    // The owner finds it under Sessions and watches it; there is no way to end it for her.
    let a = driver.browser("alice", 1280).await;
    sign_in(&a, &s.url, &alice).await;
    a.goto(&format!("{}/ui/sessions", s.url)).await.unwrap();
    wait_for(&a, "#live-sessions tbody a").await;
    click(&a, "#live-sessions tbody a").await;
    let shows = |what: &str| {
        format!(
            "document.querySelector('#live-player') && \
             document.querySelector('#live-player').textContent.includes('{what}')"
        )
    };
    wait_until(
        &a,
        "the backlog on screen",
        &shows("hello from the live session"),
    )
    .await;
    assert!(a.find(Locator::Css("#terminate")).await.is_err());
    // What comes next shows up without a reload, markup in it as text.
    let hostile = XSS.replace('\\', "\\\\").replace('"', "\\\"");
    send(format!(r#"[0.5,"o","second line {hostile}\r\n"]"#));
    wait_until(&a, "the new line on screen", &shows("second line")).await;
    let pwned: serde_json::Value = a
        .execute("return window.pwned === undefined;", vec![])
        .await
        .unwrap();
    assert_eq!(pwned, serde_json::Value::Bool(true));
    // Her forged post (with her own CSRF token) is refused by the core and recorded.
    let status: serde_json::Value = a
        .execute_async(
            "const done = arguments[arguments.length - 1];\
             const body = new URLSearchParams({ csrf: document.querySelector('input[name=csrf]').value, reason: 'mine' });\
             fetch(arguments[0], { method: 'POST', body }).then(r => done(r.status));",
            vec![serde_json::Value::String(format!(
                "/ui/sessions/live/{id}/terminate"
            ))],
        )
        .await
        .unwrap();
    assert_eq!(status, 403);

    // Bob, neither its owner nor an auditor, does not see it and may not watch it.
    let bob = user_with_token(&s, "bob", false).await;
    let b = driver.browser("bob", 1280).await;
    sign_in(&b, &s.url, &bob).await;
    b.goto(&format!("{}/ui/sessions", s.url)).await.unwrap();
    wait_for(&b, "#no-live").await;
    b.goto(&format!("{}/ui/sessions/live/{id}", s.url))
        .await
        .unwrap();
    let refused = b.source().await.unwrap();
    assert!(refused.contains("read_audit"), "{refused}");
    b.close().await.unwrap();

    // The admin watches too and ends it with a reason.
    adm.goto(&format!("{}/ui/sessions/live/{id}", s.url))
        .await
        .unwrap();
    wait_until(&adm, "the screen so far", &shows("second line")).await;
    check_page(&adm, "session-live").await;
    fill(&adm, "#terminate-reason", "deploy frozen").await;
    click(&adm, "#terminate-button").await;
    let notice = wait_for(&adm, "#terminated").await.text().await.unwrap();
    assert!(notice.contains(&id.to_string()), "{notice}");
    let locks = s.admin().list_locks(false).await.unwrap();
    assert!(
        locks
            .iter()
            .any(|l| l.subject == id.to_string() && l.reason == "deploy frozen"),
        "{locks:?}"
    );

    // The agent ends the session (here: its stream ends); the owner's page says so.
    drop(tx);
    feed.await.unwrap().unwrap();
    wait_until(
        &a,
        "the end on screen",
        "document.documentElement.getAttribute('data-live-ended') === 'true'",
    )
    .await;
    let state = a
        .find(Locator::Css("#live-state"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(state.contains("ended"), "{state}");

    let watched = audit_of(&s, "session.watched").await;
    let by: Vec<&str> = watched.iter().map(|e| e.actor.as_str()).collect();
    assert!(by.contains(&"alice") && by.contains(&"admin"), "{by:?}");
    let refused = audit_of(&s, "session.watch").await;
    assert!(refused.iter().any(|e| e.actor == "bob"), "{refused:?}");
    a.close().await.unwrap();
    adm.close().await.unwrap();
}

/// A help-desk technician, delegated one task, runs it from the page with its typed
/// parameters as a form: the real agent checks the order against its signed snapshot, runs
/// it (the password really changes), and the page shows the end without a reload. The
/// secret is in no page, event or recording; a protected account is refused naming the
/// parameter; someone without the delegation has nothing to run and a forged post is refused
/// and recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delegated_task_runs_from_the_page_on_the_host() {
    if !root_or_skip("a_delegated_task_runs_from_the_page_on_the_host") {
        return;
    }
    let Some(driver) = Driver::start().await else {
        return;
    };
    let (s, agent, helpdesk, _client) = setup("pedmct").await;
    let victim = LinuxUser::create("pedmcv");
    let admin = &s.admin_token;
    let task = serde_json::json!({
        "name": "reset-password",
        "description": "Set a user's password",
        "targets": ["web1"],
        "run_as": "root",
        "argv": ["/bin/sh", "-c", "chpasswd && echo \"password set for $0\"", "{user}"],
        "stdin": "{user}:{password}\n",
        "params": [
            {"name": "user", "description": "the account", "pattern": "[a-z_][a-z0-9_-]*",
             "max_len": 32, "protected": ["root", "admin"]},
            {"name": "password", "secret": true, "max_len": 128}
        ]
    });
    let file = agent.dir.path().join("reset-password.json");
    std::fs::write(&file, task.to_string()).unwrap();
    let ok = |o: &std::process::Output| assert!(o.status.success(), "{}{}", stdout(o), stderr(o));
    ok(&s.cli(admin, &["task", "define", file.to_str().unwrap()]));
    ok(&s.cli(admin, &["group", "add", "helpdesk"]));
    ok(&s.cli(admin, &["group", "add-member", "helpdesk", &helpdesk.name]));
    ok(&s.cli(
        admin,
        &[
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
    ));
    agent.wait_for("the delegation", |l| {
        l.contains("snapshot in force") && l.contains("delegations=1")
    });
    let token = s
        .admin()
        .create_token(&pedm_api::CreateToken {
            user: Some(helpdesk.name.clone()),
            ..Default::default()
        })
        .await
        .unwrap()
        .token;

    let b = driver.browser("helpdesk", 1280).await;
    sign_in(&b, &s.url, &token).await;
    b.goto(&format!("{}/ui/tasks", s.url)).await.unwrap();
    wait_for(&b, "#task-0").await;
    let heading = b
        .find(Locator::Css("#task-0-h"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(heading, "reset-password on web1");
    let kind = b
        .find(Locator::Css("#task-0-password"))
        .await
        .unwrap()
        .attr("type")
        .await
        .unwrap();
    assert_eq!(
        kind.as_deref(),
        Some("password"),
        "a secret is a password field"
    );
    check_page(&b, "tasks").await;
    let secret = "N3w-Secret&<b>";
    fill(&b, "#task-0-user", &victim.name).await;
    fill(&b, "#task-0-password", secret).await;
    click(&b, "#task-0-run").await;
    // The run's page updates itself when the agent reports the end.
    wait_for(&b, "#run-state").await;
    wait_until(
        &b,
        "the run's end on screen",
        "document.querySelector('#run-state').getAttribute('data-state') !== 'running'",
    )
    .await;
    let state = b
        .find(Locator::Css("#run-state"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        state.contains("exit 0"),
        "{state}\nagent: {}",
        agent.log_text()
    );
    let output = wait_for(&b, "#run-output").await.text().await.unwrap();
    assert_eq!(
        output.trim_end(),
        format!("password set for {}", victim.name)
    );
    assert!(password_is(&victim.name, secret), "the password was set");
    assert!(!b.source().await.unwrap().contains("N3w-Secret"));
    check_page(&b, "task-run").await;

    // A protected account: refused by the core naming the parameter, nothing runs.
    let root_before = shadow_hash("root");
    b.goto(&format!("{}/ui/tasks", s.url)).await.unwrap();
    wait_for(&b, "#task-0").await;
    fill(&b, "#task-0-user", "root").await;
    fill(&b, "#task-0-password", "pwned").await;
    click(&b, "#task-0-run").await;
    let refused = wait_for(&b, "#error").await.text().await.unwrap();
    assert!(refused.contains("user"), "{refused}");
    assert_eq!(shadow_hash("root"), root_before);

    // The record: asked (secret redacted) and ended, by the host, with the session.
    let events = |action: &'static str| audit_of(&s, action);
    let asked = events("task.run_requested").await;
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert_eq!(asked[0].actor, helpdesk.name);
    assert_eq!(asked[0].data["params"]["password"], "<redacted>");
    assert_eq!(asked[0].data["params"]["user"], victim.name.as_str());
    let ended = events("task.run_finished").await;
    assert_eq!(ended.len(), 1, "{ended:?}");
    assert_eq!(ended[0].actor, "host:web1");
    assert_eq!(ended[0].data["exit_code"], 0);
    let session: uuid::Uuid = serde_json::from_value(ended[0].data["session"].clone()).unwrap();
    let all =
        serde_json::to_string(&s.admin().audit_events(&Default::default()).await.unwrap()).unwrap();
    assert!(!all.contains("N3w-Secret"), "the secret is in no event");
    // The session is recorded like a run on the host, and the secret is not in it.
    let recorded = eventually(
        std::time::Duration::from_secs(30),
        "the run's session uploaded",
        || async {
            s.admin()
                .list_sessions(&Default::default())
                .await
                .unwrap()
                .into_iter()
                .find(|x| x.id == session)
        },
    )
    .await;
    assert_eq!(recorded.task.as_deref(), Some("reset-password"));
    assert_eq!(recorded.user, helpdesk.name);
    let cast = std::fs::read_to_string(
        s.data_dir
            .join("recordings")
            .join(format!("{session}.cast")),
    )
    .unwrap();
    assert!(cast.contains("password set for"), "{cast}");
    assert!(!cast.contains("N3w-Secret"), "{cast}");

    // Without the delegation: nothing to run, and a forged post is refused and recorded.
    let carol = user_with_token(&s, "carol", false).await;
    let c = driver.browser("carol", 1280).await;
    sign_in(&c, &s.url, &carol).await;
    c.goto(&format!("{}/ui/tasks", s.url)).await.unwrap();
    wait_for(&c, "#no-tasks").await;
    let status: serde_json::Value = c
        .execute_async(
            "const done = arguments[arguments.length - 1];\
             const body = new URLSearchParams({ csrf: document.querySelector('input[name=csrf]').value, \
               host: 'web1', task: 'reset-password', 'param.user': arguments[0], 'param.password': 'x' });\
             fetch('/ui/tasks/run', { method: 'POST', body }).then(r => done(r.status));",
            vec![serde_json::Value::String(victim.name.clone())],
        )
        .await
        .unwrap();
    assert_eq!(status, 403);
    assert!(password_is(&victim.name, secret), "unchanged");
    let denied = events("task.run").await;
    assert!(denied.iter().any(|e| e.actor == "carol"), "{denied:?}");
    b.close().await.unwrap();
    c.close().await.unwrap();
}
