//! Delegation and delegated tasks, end to end: the real `pedmd`, the typed client and the
//! real `pedm` binary.

mod common;

use common::*;
use jiff::{SignedDuration, Timestamp};
use pedm_api::delegation::*;
use pedm_api::{
    ApiError, AuditQuery, Client, CreateGroup, CreateRole, CreateTarget, GrantState, Reason,
    RequestState, TargetKind,
};
use std::collections::BTreeMap;
use uuid::Uuid;

const RESET_PASSWORD: &str = r#"{
  "name": "reset-password",
  "description": "Set a user's password (chpasswd; the password goes to stdin)",
  "targets": ["env=prod", "env=staging"],
  "run_as": "root",
  "argv": ["/usr/sbin/chpasswd"],
  "stdin": "{user}:{password}\n",
  "params": [
    {"name": "user", "pattern": "[a-z_][a-z0-9_-]*", "max_len": 32,
     "protected": ["root", "admin", "postgres"]},
    {"name": "password", "secret": true, "max_len": 128}
  ]
}"#;

fn restart_nginx() -> TaskDef {
    serde_json::from_value(serde_json::json!({
        "name": "restart-nginx",
        "targets": ["env=prod"],
        "argv": ["/usr/bin/systemctl", "restart", "{unit}"],
        "params": [{"name": "unit", "kind": "enum", "values": ["nginx.service"]}],
    }))
    .unwrap()
}

struct World {
    s: Server,
    admin: Client,
    hd1: Client,
    hd2: Client,
    carol: Client,
    dave: Client,
}

/// web1 (env=prod, roles root and docker) and web2 (env=staging); users hd1, hd2 (group
/// helpdesk), carol and dave; the reset-password task (defined with the CLI) and
/// restart-nginx.
async fn world() -> World {
    let s = Server::start();
    standard_targets(&s).await;
    let admin = s.admin();
    admin
        .create_target(&CreateTarget {
            name: "web2".into(),
            kind: TargetKind::Host,
            description: None,
            labels: [("env".to_string(), "staging".to_string())].into(),
        })
        .await
        .unwrap();
    admin
        .create_role(
            "web2",
            &CreateRole {
                run_as: Some("root".into()),
                ..CreateRole::new("root", "1h")
            },
        )
        .await
        .unwrap();
    let mut tokens = vec![];
    for u in ["hd1", "hd2", "carol", "dave"] {
        tokens.push(user_with_token(&s, u, false).await);
    }
    admin
        .create_group(&CreateGroup {
            name: "helpdesk".into(),
            description: None,
        })
        .await
        .unwrap();
    for u in ["hd1", "hd2"] {
        admin.add_group_member("helpdesk", u).await.unwrap();
    }

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("reset-password.json");
    std::fs::write(&file, RESET_PASSWORD).unwrap();
    let out = s.cli(&s.admin_token, &["task", "define", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("reset-password"), "{}", stdout(&out));
    admin
        .define_task(&DefineTask {
            task: restart_nginx(),
            replace: false,
        })
        .await
        .unwrap();

    let mut t = tokens.into_iter().map(|t| s.client(&t));
    World {
        hd1: t.next().unwrap(),
        hd2: t.next().unwrap(),
        carol: t.next().unwrap(),
        dave: t.next().unwrap(),
        admin,
        s,
    }
}

fn status(e: ApiError) -> (u16, String) {
    match e {
        ApiError::Server {
            status, message, ..
        } => (status, message),
        other => panic!("not a server error: {other}"),
    }
}

fn params(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
    kv.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

async fn check(
    c: &Client,
    target: &str,
    task: &str,
    p: &[(&str, &str)],
) -> Result<TaskChecked, (u16, String)> {
    c.check_task(
        task,
        &CheckTask {
            target: target.into(),
            params: params(p),
        },
    )
    .await
    .map_err(status)
}

fn in_secs(s: i64) -> Timestamp {
    Timestamp::now() + SignedDuration::from_secs(s)
}

fn to_group(group: &str, tasks: &[&str], scope: &[&str], until: Timestamp) -> CreateDelegation {
    CreateDelegation {
        group: Some(group.into()),
        tasks: tasks.iter().map(|s| s.to_string()).collect(),
        scope: scope.iter().map(|s| s.to_string()).collect(),
        expires_at: Some(until),
        reason: Some("help desk password resets".into()),
        ..Default::default()
    }
}

fn to_user(
    user: &str,
    parent: Option<Uuid>,
    tasks: &[&str],
    scope: &[&str],
    until: Timestamp,
) -> CreateDelegation {
    CreateDelegation {
        parent,
        user: Some(user.into()),
        tasks: tasks.iter().map(|s| s.to_string()).collect(),
        scope: scope.iter().map(|s| s.to_string()).collect(),
        expires_at: Some(until),
        ..Default::default()
    }
}

async fn events(admin: &Client, action: &str) -> Vec<pedm_api::AuditEvent> {
    admin
        .audit_events(&AuditQuery {
            action: Some(action.into()),
            ..Default::default()
        })
        .await
        .unwrap()
}

/// Applies the set in force plus `extra`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helpdesk_runs_only_the_delegated_task_in_scope_with_safe_parameters() {
    let w = world().await;

    // Task definitions are checked; only manage_targets defines them.
    let mut bad = restart_nginx();
    bad.name = "bad".into();
    bad.argv[0] = "systemctl".into();
    let (code, msg) = status(
        w.admin
            .define_task(&DefineTask {
                task: bad.clone(),
                replace: false,
            })
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 422, "{msg}");
    assert!(msg.contains("argv[0]"), "{msg}");
    bad.argv[0] = "/usr/bin/systemctl".into();
    bad.argv.push("{nope}".into());
    let (code, msg) = status(
        w.admin
            .define_task(&DefineTask {
                task: bad,
                replace: false,
            })
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 422);
    assert!(msg.contains("{nope}"), "{msg}");
    let (code, _) = status(
        w.hd1
            .define_task(&DefineTask {
                task: restart_nginx(),
                replace: true,
            })
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 403);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.json");
    std::fs::write(
        &file,
        RESET_PASSWORD.replace("/usr/sbin/chpasswd", "chpasswd"),
    )
    .unwrap();
    let out = w.s.cli(
        &w.s.admin_token,
        &["task", "define", file.to_str().unwrap(), "--replace"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("argv[0]"), "{}", stderr(&out));

    // The admin delegates reset-password to the help desk on env=prod (CLI).
    let out = w.s.cli(
        &w.s.admin_token,
        &[
            "--json",
            "delegate",
            "create",
            "--group",
            "helpdesk",
            "--task",
            "reset-password",
            "--scope",
            "env=prod",
            "--for",
            "1h",
            "--reason",
            "password resets",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let d: Delegation = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(d.state, DelegationState::Active);
    assert!(d.expires_at <= in_secs(3600));

    // A help-desk member may run it on web1, with safe values.
    let ok = check(
        &w.hd1,
        "web1",
        "reset-password",
        &[("user", "bob"), ("password", "n3w-Pass")],
    )
    .await
    .unwrap();
    assert_eq!(ok.delegation, d.id);
    assert_eq!(ok.argv, vec!["/usr/sbin/chpasswd"]);
    assert!(ok.stdin);
    assert_eq!(ok.run_as, "root");
    check(
        &w.hd2,
        "web1",
        "reset-password",
        &[("user", "bob"), ("password", "x")],
    )
    .await
    .unwrap();

    // Outside the scope, another task, someone else: refused (and audited).
    let before = events(&w.admin, "task.run").await.len();
    for (c, target, task) in [
        (&w.hd1, "web2", "reset-password"),
        (&w.hd1, "web1", "restart-nginx"),
        (&w.carol, "web1", "reset-password"),
    ] {
        let (code, msg) = check(c, target, task, &[("unit", "nginx.service")])
            .await
            .unwrap_err();
        assert_eq!(code, 403, "{target} {task}: {msg}");
    }
    let denied = events(&w.admin, "task.run").await;
    assert_eq!(denied.len(), before + 3);
    assert!(
        denied
            .iter()
            .all(|e| e.outcome == pedm_api::Outcome::Denied)
    );

    // Injection attempts never get through `render`, and say which parameter and why.
    let long = "a".repeat(33);
    for (user, why) in [
        ("-oProxyCommand=sh", "'-'"),
        ("root", "protected"),
        ("admin", "protected"),
        ("bob; rm -rf /", "pattern"),
        ("bob\nroot", "control character"),
        ("bob\0", "control character"),
        (long.as_str(), "33 characters"),
    ] {
        let (code, msg) = check(
            &w.hd1,
            "web1",
            "reset-password",
            &[("user", user), ("password", "x")],
        )
        .await
        .unwrap_err();
        assert_eq!(code, 422, "{user:?}: {msg}");
        assert!(
            msg.contains("parameter user") && msg.contains(why),
            "{user:?}: {msg}"
        );
    }
    // A newline in the password would add a line to chpasswd's input.
    let (code, msg) = check(
        &w.hd1,
        "web1",
        "reset-password",
        &[("user", "bob"), ("password", "x\nroot:owned")],
    )
    .await
    .unwrap_err();
    assert_eq!(code, 422);
    assert!(msg.contains("parameter password"), "{msg}");
    assert!(!msg.contains("owned"), "secret value in an error: {msg}");
    let (code, msg) = check(
        &w.hd1,
        "web1",
        "reset-password",
        &[("user", "bob"), ("password", "x"), ("shell", "/bin/sh")],
    )
    .await
    .unwrap_err();
    assert_eq!(code, 422);
    assert!(msg.contains("shell"), "{msg}");

    // Secrets never reach the audit log.
    let all = w.admin.audit_events(&AuditQuery::default()).await.unwrap();
    let text = serde_json::to_string(&all).unwrap();
    assert!(!text.contains("n3w-Pass"));

    // The CLI shows the task and the delegation.
    let out =
        w.s.cli(&w.s.admin_token, &["task", "show", "reset-password"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("protected root,admin,postgres"),
        "{}",
        stdout(&out)
    );
    let out = w.s.cli(&w.s.admin_token, &["delegate", "list"]);
    assert!(stdout(&out).contains(&d.id.to_string()), "{}", stdout(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelegation_is_never_wider_and_revocation_cascades() {
    let w = world().await;
    let root = w
        .admin
        .create_delegation(&CreateDelegation {
            redelegate: true,
            ..to_group(
                "helpdesk",
                &["reset-password"],
                &["env=prod"],
                in_secs(3600),
            )
        })
        .await
        .unwrap();

    // Wider than what hd1 holds: tasks, scope, time. Each refusal names what is wider.
    let before = events(&w.admin, "delegation.create").await.len();
    for (body, what) in [
        (
            to_user(
                "carol",
                Some(root.id),
                &["reset-password", "restart-nginx"],
                &["web1"],
                in_secs(600),
            ),
            "restart-nginx",
        ),
        (
            to_user(
                "carol",
                Some(root.id),
                &["reset-password"],
                &["env=staging"],
                in_secs(600),
            ),
            "scope env=staging",
        ),
        (
            to_user(
                "carol",
                Some(root.id),
                &["reset-password"],
                &["web2"],
                in_secs(600),
            ),
            "scope web2",
        ),
        (
            to_user(
                "carol",
                Some(root.id),
                &["reset-password"],
                &["web1"],
                in_secs(7200),
            ),
            "deadline",
        ),
    ] {
        let (code, msg) = status(w.hd1.create_delegation(&body).await.unwrap_err());
        assert_eq!(code, 403, "{msg}");
        assert!(msg.contains("wider") && msg.contains(what), "{what}: {msg}");
    }
    let denied: Vec<_> = events(&w.admin, "delegation.create")
        .await
        .into_iter()
        .skip(before)
        .collect();
    assert_eq!(denied.len(), 4);
    assert!(
        denied
            .iter()
            .all(|e| e.outcome == pedm_api::Outcome::Denied && e.actor == "hd1")
    );

    // Someone who is not its delegate cannot pass it on.
    let (code, _) = status(
        w.carol
            .create_delegation(&to_user(
                "dave",
                Some(root.id),
                &["reset-password"],
                &["web1"],
                in_secs(600),
            ))
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 403);

    // A subset is fine: hd1 → carol (may pass on), carol → dave (may not).
    let child = w
        .hd1
        .create_delegation(&CreateDelegation {
            redelegate: true,
            ..to_user(
                "carol",
                Some(root.id),
                &["reset-password"],
                &["web1"],
                in_secs(1800),
            )
        })
        .await
        .unwrap();
    let grandchild = w
        .carol
        .create_delegation(&to_user(
            "dave",
            Some(child.id),
            &["reset-password"],
            &["web1"],
            in_secs(900),
        ))
        .await
        .unwrap();
    let p = [("user", "bob"), ("password", "x")];
    assert_eq!(
        check(&w.dave, "web1", "reset-password", &p)
            .await
            .unwrap()
            .delegation,
        grandchild.id
    );
    // Without the allow flag: refused.
    let (code, msg) = status(
        w.dave
            .create_delegation(&to_user(
                "hd2",
                Some(grandchild.id),
                &["reset-password"],
                &["web1"],
                in_secs(60),
            ))
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 403);
    assert!(msg.contains("does not allow re-delegation"), "{msg}");
    // A root delegation needs policy: carol may not delegate on her own.
    let (code, _) = status(
        w.carol
            .create_delegation(&to_user(
                "dave",
                None,
                &["reset-password"],
                &["web1"],
                in_secs(60),
            ))
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 403);

    // Revoking the root ends the children and the grandchildren, each with its event.
    let (code, _) = status(
        w.admin
            .revoke_delegation(root.id, &Reason { reason: None })
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 400, "a reason is required");
    let out = w.s.cli(
        &w.s.admin_token,
        &[
            "--json",
            "delegate",
            "revoke",
            &root.id.to_string(),
            "--reason",
            "audit finding",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let r: RevokedDelegations = serde_json::from_str(&stdout(&out)).unwrap();
    let ids: Vec<Uuid> = r.delegations.iter().map(|d| d.id).collect();
    assert_eq!(ids, vec![root.id, child.id, grandchild.id]);
    for id in ids {
        let d = w.admin.get_delegation(id).await.unwrap();
        assert_eq!(d.state, DelegationState::Revoked);
    }
    let revoked = events(&w.admin, "delegation.revoked").await;
    assert_eq!(revoked.len(), 3);
    for c in [&w.hd1, &w.carol, &w.dave] {
        let (code, _) = check(c, "web1", "reset-password", &p).await.unwrap_err();
        assert_eq!(code, 403);
    }
    let (code, _) = status(
        w.admin
            .revoke_delegation(
                root.id,
                &Reason {
                    reason: Some("again".into()),
                },
            )
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 409);
    // Live listing is empty, --all shows them revoked.
    assert!(
        w.admin
            .list_delegations(&DelegationQuery::default())
            .await
            .unwrap()
            .is_empty()
    );
    let out = w.s.cli(&w.s.admin_token, &["delegate", "list", "--all"]);
    assert_eq!(
        stdout(&out).matches("revoked").count(),
        3,
        "{}",
        stdout(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_delegation_stops_at_once() {
    let w = world().await;
    let d = w
        .admin
        .create_delegation(&to_group(
            "helpdesk",
            &["reset-password"],
            &["web1"],
            in_secs(2),
        ))
        .await
        .unwrap();
    let p = [("user", "bob"), ("password", "x")];
    check(&w.hd1, "web1", "reset-password", &p).await.unwrap();
    sleep_past(d.expires_at).await;
    let (code, msg) = check(&w.hd1, "web1", "reset-password", &p)
        .await
        .unwrap_err();
    assert_eq!(code, 403, "{msg}");
    assert_eq!(
        w.admin.get_delegation(d.id).await.unwrap().state,
        DelegationState::Expired
    );
    let all = w
        .admin
        .list_delegations(&DelegationQuery { all: Some(true) })
        .await
        .unwrap();
    assert_eq!(all[0].state, DelegationState::Expired);
    // Nothing can be passed on from it either.
    let (code, _) = status(
        w.hd1
            .create_delegation(&to_user(
                "carol",
                Some(d.id),
                &["reset-password"],
                &["web1"],
                in_secs(60),
            ))
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delegated_role_is_granted_without_approvers_until_the_deadline() {
    let w = world().await;
    let admin_name = w.admin.whoami().await.unwrap().user.name;
    let d = w
        .admin
        .create_delegation(&CreateDelegation {
            roles: vec!["root".into()],
            ..to_user("hd1", None, &[], &["web1"], in_secs(600))
        })
        .await
        .unwrap();

    // root needs an approver, but the delegation pre-approved it: granted at once, for at
    // most the delegation's remaining time.
    let r = w
        .hd1
        .create_request(&req("web1", "root", "1h", "disk full"))
        .await
        .unwrap();
    assert_eq!(r.request.state, RequestState::Approved);
    let g = r.grant.expect("granted");
    assert!(
        g.expires_at <= d.expires_at,
        "{} > {}",
        g.expires_at,
        d.expires_at
    );
    assert!(r.request.duration_secs <= 600);
    assert_eq!(r.request.decided_by.as_deref(), Some(admin_name.as_str()));
    assert!(
        r.request
            .decision_reason
            .as_deref()
            .unwrap()
            .contains(&d.id.to_string())
    );
    let approved = events(&w.admin, "request.approved").await;
    assert!(
        approved
            .iter()
            .any(|e| e.data["delegation"] == d.id.to_string())
    );

    // Not on another target, not for someone else.
    let r2 = w
        .hd1
        .create_request(&req("web2", "root", "30m", "x"))
        .await
        .unwrap();
    assert_eq!(r2.request.state, RequestState::Pending);
    let r3 = w
        .carol
        .create_request(&req("web1", "root", "30m", "x"))
        .await
        .unwrap();
    assert_eq!(r3.request.state, RequestState::Pending);

    // A forbid still wins.
    add_policy(
        &w.admin,
        "no-root-for-hd1.cedar",
        r#"@id("no-root-for-hd1")
forbid (principal == Pedm::User::"hd1", action == Pedm::Action::"request", resource)
when { resource.name == "root" };"#,
    )
    .await;
    let r4 = w
        .hd1
        .create_request(&req("web1", "root", "30m", "x"))
        .await
        .unwrap();
    assert_eq!(r4.request.state, RequestState::Denied);

    // Revoking the delegation ends the grant it pre-approved.
    let out = w
        .admin
        .revoke_delegation(
            d.id,
            &Reason {
                reason: Some("done".into()),
            },
        )
        .await
        .unwrap();
    assert_eq!(out.grants.len(), 1);
    assert_eq!(out.grants[0].id, g.id);
    assert_eq!(
        w.admin.get_grant(g.id).await.unwrap().state,
        GrantState::Revoked
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_hands_a_delegable_grant_on_within_its_time() {
    let w = world().await;
    // docker is auto-approved on web1 (max 1h).
    let parent = w
        .hd1
        .create_request(&req("web1", "docker", "20m", "deploy"))
        .await
        .unwrap()
        .grant
        .unwrap();
    let body = |to: &str, d: &str| DelegateGrant {
        to: to.into(),
        duration: d.into(),
        reason: Some("pairing".into()),
    };

    // Policy does not mark docker delegable yet: refused and audited.
    let (code, msg) = status(
        w.hd1
            .delegate_grant(parent.id, &body("carol", "10m"))
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 403, "{msg}");
    assert!(msg.contains("delegate"), "{msg}");
    assert!(
        events(&w.admin, "grant.delegate")
            .await
            .iter()
            .any(|e| e.outcome == pedm_api::Outcome::Denied)
    );

    add_policy(
        &w.admin,
        "docker-delegable.cedar",
        r#"@id("docker-delegable")
permit (principal, action == Pedm::Action::"delegate", resource is Pedm::Role)
when { resource.name == "docker" };"#,
    )
    .await;

    // Only the holder hands it on.
    let (code, _) = status(
        w.carol
            .delegate_grant(parent.id, &body("dave", "10m"))
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 403);

    // Asking for more than is left gives what is left: capped at the parent's expiry (CLI).
    let hd1_token = {
        let t = w
            .admin
            .create_token(&pedm_api::CreateToken {
                user: Some("hd1".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        t.token
    };
    let out = w.s.cli(
        &hd1_token,
        &[
            "--json",
            "grant",
            "delegate",
            &parent.id.to_string(),
            "--to",
            "carol",
            "--duration",
            "45m",
            "--reason",
            "pairing",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let child: pedm_api::Grant = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(child.user, "carol");
    assert_eq!(
        (child.target.as_str(), child.role.as_str()),
        ("web1", "docker")
    );
    assert!(child.expires_at <= parent.expires_at);
    assert!(child.expires_at > parent.expires_at - SignedDuration::from_secs(60));
    let delegated = events(&w.admin, "grant.delegated").await;
    assert_eq!(delegated.len(), 1);
    assert_eq!(delegated[0].data["parent_grant"], parent.id.to_string());
    assert_eq!(delegated[0].data["grant"], child.id.to_string());

    // carol hands part of hers on to dave.
    let grandchild = w
        .carol
        .delegate_grant(child.id, &body("dave", "5m"))
        .await
        .unwrap();
    assert!(grandchild.expires_at <= child.expires_at);

    // root is not delegable under this policy: refused even to its holder.
    let r = w
        .hd1
        .create_request(&req("web1", "root", "30m", "x"))
        .await
        .unwrap();
    let root_grant = w
        .admin
        .approve_request(r.request.id, &pedm_api::Decide { comment: None })
        .await
        .unwrap()
        .grant
        .unwrap();
    let (code, _) = status(
        w.hd1
            .delegate_grant(root_grant.id, &body("carol", "5m"))
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 403);

    // Ending the parent ends what was handed on from it.
    w.admin
        .revoke_grant(
            parent.id,
            &Reason {
                reason: Some("incident over".into()),
            },
        )
        .await
        .unwrap();
    for (id, from) in [(child.id, parent.id), (grandchild.id, child.id)] {
        let g = w.admin.get_grant(id).await.unwrap();
        assert_eq!(g.state, GrantState::Revoked, "{id}");
        assert!(g.end_reason.unwrap().contains(&from.to_string()));
    }
    let ended = events(&w.admin, "grant.revoked").await;
    assert!(
        ended
            .iter()
            .any(|e| e.data["parent_grant"] == parent.id.to_string())
    );
    assert!(
        ended
            .iter()
            .any(|e| e.data["parent_grant"] == child.id.to_string())
    );
}

/// What the agent will receive: `ControlPlane::host_tasks` in process (the store, the
/// built-in decider and a manual clock), its JSON, and `TaskDef::render` on the other side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_tasks_carry_what_the_agent_needs() {
    use pedm_core::clock::ManualClock;
    use pedm_core::decision::BuiltinDecider;
    use pedm_core::model::Actor;
    use pedm_core::service::{ControlPlane, Limits, NewDelegation};
    use pedm_store::SqliteStore;
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        SqliteStore::open(&dir.path().join("pedm.db"))
            .await
            .unwrap(),
    );
    let start = Timestamp::from_second(1_800_000_000).unwrap();
    let clock = Arc::new(ManualClock::new(start));
    let cp = ControlPlane::new(
        store,
        Arc::new(BuiltinDecider),
        clock.clone(),
        Limits::default(),
    );
    let sys = Actor::system();
    for (t, env) in [("web1", "prod"), ("web2", "staging")] {
        cp.create_target(
            &sys,
            t,
            TargetKind::Host,
            None,
            [("env".to_string(), env.to_string())].into(),
        )
        .await
        .unwrap();
    }
    for u in ["hd1", "hd2", "carol"] {
        cp.create_user(&sys, u, None, None, false).await.unwrap();
    }
    cp.create_group(&sys, "helpdesk", None).await.unwrap();
    cp.add_group_member(&sys, "helpdesk", "hd1").await.unwrap();
    cp.add_group_member(&sys, "helpdesk", "hd2").await.unwrap();
    cp.define_task(&sys, serde_json::from_str(RESET_PASSWORD).unwrap(), false)
        .await
        .unwrap();
    cp.define_task(&sys, restart_nginx(), false).await.unwrap();
    let d = cp
        .create_delegation(
            &sys,
            NewDelegation {
                parent: None,
                delegate: Delegatee {
                    kind: DelegateKind::Group,
                    name: "helpdesk".into(),
                },
                tasks: vec!["reset-password".into()],
                roles: vec![],
                scope: vec!["env=prod".into()],
                expires_at: start + SignedDuration::from_secs(3600),
                redelegate: false,
                reason: None,
            },
        )
        .await
        .unwrap();

    let tasks = cp.host_tasks("web1").await.unwrap();
    let names: Vec<&str> = tasks.iter().map(|t| t.task.name.as_str()).collect();
    assert_eq!(names, vec!["reset-password", "restart-nginx"]);
    assert_eq!(tasks[0].delegations.len(), 1);
    assert_eq!(tasks[0].delegations[0].delegation, d.id);
    assert_eq!(tasks[0].delegations[0].users, vec!["hd1", "hd2"]);
    assert!(tasks[1].delegations.is_empty());
    // web2 is outside the delegation's scope; the task applies there, nobody may run it.
    let web2 = cp.host_tasks("web2").await.unwrap();
    assert_eq!(web2.len(), 1);
    assert!(web2[0].delegations.is_empty());

    // The agent's side: JSON in, decide, render.
    let json = serde_json::to_string(&tasks).unwrap();
    let got: Vec<HostTask> = serde_json::from_str(&json).unwrap();
    assert_eq!(got, tasks);
    let now = start + SignedDuration::from_secs(60);
    assert_eq!(got[0].allowed_for("hd2", now), Some(d.id));
    assert_eq!(got[0].allowed_for("carol", now), None);
    let run = got[0]
        .task
        .render(&params(&[("user", "bob"), ("password", "pw")]))
        .unwrap();
    assert_eq!(run.argv, vec!["/usr/sbin/chpasswd"]);
    assert_eq!(run.stdin.as_deref(), Some("bob:pw\n"));
    assert!(
        got[0]
            .task
            .render(&params(&[("user", "root"), ("password", "pw")]))
            .is_err()
    );

    // The server-side check agrees, and stops at the deadline.
    let hd1 = Actor {
        user: "hd1".into(),
        admin: false,
        groups: vec![],
        token_id: None,
        external: false,
        sponsor: None,
        workload: None,
        via_agent: false,
    };
    assert_eq!(
        cp.may_run_task(&hd1, "web1", "reset-password")
            .await
            .unwrap(),
        d.id
    );
    assert!(
        cp.may_run_task(&hd1, "web2", "reset-password")
            .await
            .is_err()
    );
    clock.advance(SignedDuration::from_secs(3600));
    assert!(
        cp.may_run_task(&hd1, "web1", "reset-password")
            .await
            .is_err()
    );
    assert!(
        cp.host_tasks("web1").await.unwrap()[0]
            .delegations
            .is_empty()
    );
    assert_eq!(
        got[0].allowed_for("hd1", start + SignedDuration::from_secs(3600)),
        None
    );
}

/// A grant handed on ends with its parent on every path: release, and the expiry pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handed_on_grants_end_with_their_parent_on_release_and_expiry() {
    use pedm_core::clock::ManualClock;
    use pedm_core::decision::BuiltinDecider;
    use pedm_core::model::Actor;
    use pedm_core::service::{ControlPlane, Limits, NewRequest, NewRole};
    use pedm_store::SqliteStore;
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        SqliteStore::open(&dir.path().join("pedm.db"))
            .await
            .unwrap(),
    );
    let start = Timestamp::from_second(1_800_000_000).unwrap();
    let clock = Arc::new(ManualClock::new(start));
    let cp = Arc::new(ControlPlane::new(
        store,
        Arc::new(BuiltinDecider),
        clock.clone(),
        Limits::default(),
    ));
    let sys = Actor::system();
    cp.create_target(&sys, "web1", TargetKind::Host, None, Default::default())
        .await
        .unwrap();
    cp.create_role(
        &sys,
        NewRole {
            target: "web1".into(),
            name: "docker".into(),
            description: None,
            max_duration_secs: 3600,
            auto_approve: true,
            run_as: None,
            noexec: false,
            allow_setuid: false,
            record_input: false,
            intercept: false,
            limits: Default::default(),
            watch_paths: vec![],
            ssh: Default::default(),
        },
    )
    .await
    .unwrap();
    for (u, admin) in [("ann", true), ("bea", false), ("cid", false)] {
        cp.create_user(&sys, u, None, None, admin).await.unwrap();
    }
    let actor = |u: &str, admin| Actor {
        user: u.into(),
        admin,
        groups: vec![],
        token_id: None,
        external: false,
        sponsor: None,
        workload: None,
        via_agent: false,
    };
    let (ann, bea) = (actor("ann", true), actor("bea", false));
    let docker = |why: &str| NewRequest {
        target: "web1".into(),
        role: "docker".into(),
        duration_secs: 1200,
        justification: why.into(),
        task: None,
        ticket: None,
        break_glass: false,
        starts_at: None,
    };

    // Release: ann (an admin: the built-in rule lets admins delegate) hands hers to bea,
    // bea (not an admin) may not hand it on further.
    let (_, g) = cp
        .create_request(&ann, docker("deploy"), Default::default())
        .await
        .unwrap();
    let g = g.unwrap();
    let child = cp
        .delegate_grant(&ann, g.id, "bea", 600, None)
        .await
        .unwrap();
    assert!(
        cp.delegate_grant(&bea, child.id, "cid", 60, None)
            .await
            .is_err()
    );
    cp.release_grant(&ann, g.id, None).await.unwrap();
    let child = cp.get_grant(&bea, child.id).await.unwrap();
    assert_eq!(child.state, GrantState::Revoked);

    // Expiry: the child is capped at the parent's expiry and both end in the pass.
    let (_, g) = cp
        .create_request(&ann, docker("deploy again"), Default::default())
        .await
        .unwrap();
    let g = g.unwrap();
    let child = cp
        .delegate_grant(&ann, g.id, "bea", 3600, None)
        .await
        .unwrap();
    assert_eq!(child.expires_at, g.expires_at);
    clock.advance(SignedDuration::from_secs(1200));
    let pass = cp.expire_due().await.unwrap();
    assert!(pass.grants_expired >= 1);
    for id in [g.id, child.id] {
        assert_eq!(
            cp.get_grant(&ann, id).await.unwrap().state,
            GrantState::Expired
        );
    }
}

/// A delegation holds only while the policy in force still lets its delegator delegate: a
/// forbid added later stops its pre-approval at once, and a scope entry that matches no
/// target (so policy could not judge it) is refused when the delegation is made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delegations_are_judged_by_the_policy_in_force_at_each_use() {
    let w = world().await;
    let (code, msg) = status(
        w.admin
            .create_delegation(&CreateDelegation {
                roles: vec!["root".into()],
                ..to_user("hd1", None, &[], &["env=nowhere"], in_secs(600))
            })
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 422, "{msg}");
    assert!(msg.contains("env=nowhere matches no target"), "{msg}");

    w.admin
        .create_delegation(&CreateDelegation {
            roles: vec!["root".into()],
            ..to_user("hd1", None, &[], &["web1"], in_secs(600))
        })
        .await
        .unwrap();
    let r = w
        .hd1
        .create_request(&req("web1", "root", "10m", "first"))
        .await
        .unwrap();
    assert_eq!(r.request.state, RequestState::Approved);
    w.hd1
        .release_grant(r.grant.unwrap().id, &Reason { reason: None })
        .await
        .unwrap();
    // Policy now says admins may not delegate root: the old delegation pre-approves nothing.
    add_policy(
        &w.admin,
        "no-root-delegation.cedar",
        "@id(\"no-root-delegation\")\nforbid (principal, action == Pedm::Action::\"delegate\", resource is Pedm::Role)\nwhen { resource.name == \"root\" };\n",
    )
    .await;
    let r = w
        .hd1
        .create_request(&req("web1", "root", "10m", "second"))
        .await
        .unwrap();
    assert_eq!(r.request.state, RequestState::Pending, "{:?}", r.request);
}
