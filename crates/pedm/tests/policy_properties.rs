//! Policy properties (invariants proved over every user, role and context on every apply,
//! and by `pedm policy check`) and the blast radius of a draft set (`pedm policy simulate`),
//! on a constructed organisation whose every answer is known.

mod common;

use common::*;
use pedm_api::*;
use std::time::Duration;

const ADMIN: &str = r#"
@id("admins-administer")
permit (principal, action in [Pedm::Action::"manage_users", Pedm::Action::"manage_targets",
    Pedm::Action::"manage_policies", Pedm::Action::"manage_grants", Pedm::Action::"read_audit"], resource)
when { principal.admin };

@id("admins-approve")
permit (principal, action == Pedm::Action::"approve", resource)
when { principal.admin };
"#;

/// The set put in force first: ops may ask for anything on db-prod with two approvals, devs
/// get web-dev/deploy at once (not external accounts).
const ACCESS: &str = r#"
@id("ops-prod")
@approvals("2")
permit (principal in Pedm::Group::"ops", action == Pedm::Action::"request", resource in Pedm::Target::"db-prod");

@id("ops-app")
@approvals("1")
permit (principal in Pedm::Group::"ops", action == Pedm::Action::"request", resource in Pedm::Target::"app-prod");

@id("dev-web")
@auto_approve("true")
permit (principal in Pedm::Group::"dev", action == Pedm::Action::"request", resource in Pedm::Target::"web-dev")
when { !principal.external };
"#;

fn src(name: &str, text: &str) -> PolicySource {
    PolicySource {
        name: name.into(),
        text: text.into(),
    }
}

fn write_set(dir: &std::path::Path, name: &str, access: &str) -> std::path::PathBuf {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("admin.cedar"), ADMIN).unwrap();
    std::fs::write(d.join("access.cedar"), access).unwrap();
    d
}

/// alice (ops), bob (dev), carol (external, in dev, sponsored by alice); db-prod (env=prod,
/// tier=0: root, read), app-prod (env=prod: root), web-dev (deploy, auto-approved role).
async fn organisation(s: &Server) {
    let a = s.admin();
    for u in ["alice", "bob"] {
        user_with_token(s, u, false).await;
    }
    a.create_external_user(&pedm_api::external::CreateExternalUser {
        name: "carol".into(),
        display_name: None,
        sponsor: "alice".into(),
        expires: "1h".into(),
    })
    .await
    .expect("carol");
    for (g, members) in [("ops", &["alice"][..]), ("dev", &["bob", "carol"][..])] {
        a.create_group(&CreateGroup {
            name: g.into(),
            description: None,
        })
        .await
        .unwrap();
        for m in members {
            a.add_group_member(g, m).await.unwrap();
        }
    }
    for (t, labels) in [
        ("db-prod", vec![("env", "prod"), ("tier", "0")]),
        ("app-prod", vec![("env", "prod")]),
        ("web-dev", vec![("env", "dev")]),
    ] {
        a.create_target(&CreateTarget {
            name: t.into(),
            kind: TargetKind::Host,
            description: None,
            labels: labels
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        })
        .await
        .unwrap();
    }
    for (t, role, run_as, auto) in [
        ("db-prod", "root", "root", false),
        ("db-prod", "read", "reader", false),
        ("app-prod", "root", "root", false),
        ("web-dev", "deploy", "deploy", true),
    ] {
        a.create_role(
            t,
            &CreateRole {
                auto_approve: auto,
                run_as: Some(run_as.into()),
                ..CreateRole::new(role, "1h")
            },
        )
        .await
        .unwrap();
    }
}

fn properties_config(dir: &std::path::Path) -> String {
    let props = dir.join("properties.toml");
    std::fs::write(&props, EXAMPLE_PROPERTIES).unwrap();
    format!("[policy]\nproperties = \"{}\"\n", props.display())
}

fn start(dir: &std::path::Path) -> Server {
    Server::start_with(Options {
        config: Some(properties_config(dir)),
        ..Default::default()
    })
}

#[tokio::test]
async fn an_apply_that_breaks_a_property_is_refused_with_a_counterexample() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start();
    organisation(&s).await;
    // Properties configured on an installation whose policies already break one: the server
    // says so at start, and `policy check` shows the counterexample.
    s.reconfigure(Some(&properties_config(dir.path())), &[]);
    let log = eventually(
        Duration::from_secs(10),
        "the start-up property check",
        || async {
            let l = s.log();
            l.contains("break a policy property").then_some(l)
        },
    )
    .await;
    assert!(
        log.contains("no external account is ever auto-approved"),
        "{log}"
    );
    let t = &s.admin_token;

    // The default set (in force since the start) auto-approves roles their owner marked so,
    // for everyone: carol, an external account, gets web-dev/deploy at once.
    let o = s.cli(t, &["--json", "policy", "check"]);
    assert!(!o.status.success(), "a broken property exits non-zero");
    let r: PropertyReport = serde_json::from_slice(&o.stdout).unwrap();
    let external = r
        .properties
        .iter()
        .find(|p| p.name == "no external account is ever auto-approved")
        .unwrap();
    assert!(!external.holds, "{r:?}");
    let c = external.counterexample.as_ref().unwrap();
    assert_eq!(
        (
            c.user.as_str(),
            c.target.as_str(),
            c.role.as_str(),
            c.decision.as_str()
        ),
        ("carol", "web-dev", "deploy", "auto_approve")
    );
    assert_eq!(c.policy.as_deref(), Some("auto-approved-roles"));
    assert_eq!(r.coverage.users, 4, "admin, alice, bob, carol: {r:?}");
    assert_eq!(r.coverage.roles, 4);
    assert!(r.coverage.complete);
    assert!(
        stderr(&o).contains("policy properties broken"),
        "{}",
        stderr(&o)
    );

    // A set that keeps all three goes in.
    let good = write_set(dir.path(), "good", ACCESS);
    let o = s.cli(t, &["policy", "apply", good.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let version = s.admin().policies().await.unwrap().version;
    let o = s.cli(t, &["policy", "check"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(stdout(&o).matches("holds").count(), 3, "{}", stdout(&o));

    // A night shift: ops get app-prod/root at once from 22:00. The property only breaks at
    // night, and only on app-prod (db-prod's two-approval permit is stricter and wins).
    let night = ACCESS.replace(
        "@id(\"ops-app\")\n@approvals(\"1\")\npermit (principal in Pedm::Group::\"ops\", action == Pedm::Action::\"request\", resource in Pedm::Target::\"app-prod\");",
        "@id(\"ops-app\")\n@approvals(\"1\")\npermit (principal in Pedm::Group::\"ops\", action == Pedm::Action::\"request\", resource in Pedm::Target::\"app-prod\")\nwhen { context.time.hour < 22 };\n\n@id(\"night-shift\")\n@auto_approve(\"true\")\npermit (principal in Pedm::Group::\"ops\", action == Pedm::Action::\"request\", resource in Pedm::Target::\"app-prod\")\nwhen { context.time.hour >= 22 };",
    );
    assert_ne!(night, ACCESS);
    let bad = write_set(dir.path(), "night", &night);
    let o = s.cli(t, &["policy", "apply", bad.to_str().unwrap()]);
    assert!(!o.status.success(), "refused");
    let e = stderr(&o);
    assert!(
        e.contains("no root on prod without an approval unless break-glass")
            && e.contains("alice asking for app-prod/root")
            && e.contains("night-shift")
            && e.contains("22:00"),
        "{e}"
    );
    assert!(!e.contains("tier-0"), "db-prod keeps two approvals: {e}");
    assert_eq!(
        s.admin().policies().await.unwrap().version,
        version,
        "the set in force stays"
    );
    let ev = audit_of(&s, "policy.rejected").await;
    let last = ev.last().expect("a policy.rejected event");
    assert_eq!(
        last.data["properties"][0]["name"],
        "no root on prod without an approval unless break-glass"
    );
    assert_eq!(
        last.data["properties"][0]["counterexample"]["user"],
        "alice"
    );
    assert_eq!(
        last.data["properties"][0]["counterexample"]["policy"],
        "night-shift"
    );

    // The same draft checked without applying, with the server's properties and with a local
    // file (bad ones are refused and named).
    let o = s.cli(
        t,
        &[
            "--json",
            "policy",
            "check",
            "--policies",
            bad.to_str().unwrap(),
        ],
    );
    assert!(!o.status.success());
    let r: PropertyReport = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r.broken().count(), 1, "{r:?}");
    assert!(
        r.coverage.varied.iter().any(|v| v.starts_with("time:")),
        "{:?}",
        r.coverage.varied
    );
    let local = dir.path().join("local.toml");
    std::fs::write(
        &local,
        "[[property]]\nname = \"bob never gets db-prod\"\nwhere = { users = [\"bob\"], targets = [\"db-prod\"] }\nrequire = { deny = true }\n",
    )
    .unwrap();
    let o = s.cli(
        t,
        &[
            "policy",
            "check",
            "--policies",
            bad.to_str().unwrap(),
            "--properties",
            local.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    std::fs::write(&local, "[[property]]\nname = \"nothing\"\nrequire = {}\n").unwrap();
    let o = s.cli(
        t,
        &["policy", "check", "--properties", local.to_str().unwrap()],
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("`require` names nothing"),
        "{}",
        stderr(&o)
    );
    std::fs::write(
        &local,
        "[[property]]\nname = \"x\"\nrequire = { deny = true }\nwho = 1\n",
    )
    .unwrap();
    let o = s.cli(
        t,
        &["policy", "check", "--properties", local.to_str().unwrap()],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("local.toml"), "{}", stderr(&o));

    // Only policy managers may ask.
    let bob = s.client(&user_with_token(&s, "dave", false).await);
    let e = bob
        .check_policies(&CheckPolicies::default())
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(403), "{e}");
}

#[tokio::test]
async fn blast_radius_names_exactly_who_gains_and_loses_what() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path());
    organisation(&s).await;
    s.admin()
        .apply_policies(&ApplyPolicies {
            sources: vec![src("admin.cedar", ADMIN), src("access.cedar", ACCESS)],
            comment: None,
        })
        .await
        .unwrap();

    // dan is alice's twin (ops, nothing else): the policies cannot tell them apart. lab1 and
    // lab2 are twins too (env=lab, a role `shell`), named by no policy.
    let a = s.admin();
    user_with_token(&s, "dan", false).await;
    a.add_group_member("ops", "dan").await.unwrap();
    for t in ["lab1", "lab2"] {
        a.create_target(&CreateTarget {
            name: t.into(),
            kind: TargetKind::Host,
            description: None,
            labels: [("env".to_string(), "lab".to_string())].into(),
        })
        .await
        .unwrap();
        a.create_role(t, &CreateRole::new("shell", "1h"))
            .await
            .unwrap();
    }

    // The draft: ops keep only db-prod/read; devs may ask for db-prod/read with two
    // approvals, and for anything labelled env=lab with one; web-dev/deploy needs one
    // approval instead of none.
    let draft = ACCESS
        .replace(
            "permit (principal in Pedm::Group::\"ops\", action == Pedm::Action::\"request\", resource in Pedm::Target::\"db-prod\");",
            "permit (principal in Pedm::Group::\"ops\", action == Pedm::Action::\"request\", resource == Pedm::Role::\"db-prod/read\");\n\n@id(\"dev-read\")\n@approvals(\"2\")\npermit (principal in Pedm::Group::\"dev\", action == Pedm::Action::\"request\", resource == Pedm::Role::\"db-prod/read\")\nwhen { !principal.external };",
        )
        .replace("@id(\"dev-web\")\n@auto_approve(\"true\")", "@id(\"dev-web\")\n@approvals(\"1\")")
        + "\n@id(\"dev-lab\")\n@approvals(\"1\")\npermit (principal in Pedm::Group::\"dev\", action == Pedm::Action::\"request\", resource)\nwhen { resource.labels.contains(\"env=lab\") };\n";
    let d = write_set(dir.path(), "draft", &draft);
    let o = s.cli(
        &s.admin_token,
        &[
            "--json",
            "policy",
            "simulate",
            "--policies",
            d.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let r: SimulationReport = serde_json::from_slice(&o.stdout).unwrap();
    let b = r.blast_radius.expect("a blast radius");
    let got: Vec<(ChangeKind, &str, &str, &str, &str, &str)> = b
        .changes
        .iter()
        .map(|c| {
            (
                c.kind.clone(),
                c.user.as_str(),
                c.target.as_str(),
                c.role.as_str(),
                c.before.as_str(),
                c.after.as_str(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (
                ChangeKind::Gains,
                "bob",
                "db-prod",
                "read",
                "deny",
                "approval(any approver:2)"
            ),
            (
                ChangeKind::Loses,
                "alice",
                "db-prod",
                "root",
                "approval(any approver:2)",
                "deny"
            ),
            (
                ChangeKind::Loses,
                "dan",
                "db-prod",
                "root",
                "approval(any approver:2)",
                "deny"
            ),
            (
                ChangeKind::Gains,
                "bob",
                "lab1",
                "shell",
                "deny",
                "approval(any approver:1)"
            ),
            (
                ChangeKind::Gains,
                "carol",
                "lab1",
                "shell",
                "deny",
                "approval(any approver:1)"
            ),
            (
                ChangeKind::Gains,
                "bob",
                "lab2",
                "shell",
                "deny",
                "approval(any approver:1)"
            ),
            (
                ChangeKind::Gains,
                "carol",
                "lab2",
                "shell",
                "deny",
                "approval(any approver:1)"
            ),
            (
                ChangeKind::Changes,
                "bob",
                "web-dev",
                "deploy",
                "auto_approve",
                "approval(any approver:1)"
            ),
        ]
    );
    assert_eq!(b.truncated, 0);
    assert_eq!(b.coverage.users, 5);
    assert_eq!(
        (b.coverage.principal_classes, b.coverage.role_classes),
        (4, 5),
        "alice and dan decided once, lab1/shell and lab2/shell once"
    );
    // The draft keeps the properties; simulate says so.
    let props = r.properties.expect("the configured properties");
    assert_eq!(props.broken().count(), 0, "{props:?}");

    // The text form lists the same, one line each.
    let o = s.cli(
        &s.admin_token,
        &["policy", "simulate", "--policies", d.to_str().unwrap()],
    );
    let out = stdout(&o);
    assert_eq!(out.matches("+ gains").count(), 5, "{out}");
    assert_eq!(out.matches("- loses").count(), 2, "{out}");
    assert_eq!(out.matches("~ changes").count(), 1, "{out}");
}

#[tokio::test]
async fn a_bad_properties_file_stops_the_start_and_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let props = dir.path().join("props.toml");
    std::fs::write(
        &props,
        "[[property]]\nname = \"x\"\nwhere = { target_labels = [\"prod\"] }\nrequire = { deny = true }\n",
    )
    .unwrap();
    let log = Server::try_start_with(Options {
        config: Some(format!("[policy]\nproperties = \"{}\"\n", props.display())),
        ..Default::default()
    })
    .err()
    .expect("refuses to start");
    assert!(
        log.contains("props.toml") && log.contains("not key=value"),
        "{log}"
    );
}

#[tokio::test]
async fn a_proposal_is_proved_again_when_its_last_approval_comes() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start();
    organisation(&s).await;
    // A second admin, made before two-person control is on.
    let second = s.client(&user_with_token(&s, "admin2", true).await);
    let a = s.admin();
    a.create_group(&CreateGroup {
        name: "web".into(),
        description: None,
    })
    .await
    .unwrap();
    a.add_group_member("web", "bob").await.unwrap();
    s.reconfigure(
        Some(&format!(
            "{}require_approvals = 1\n",
            properties_config(dir.path())
        )),
        &[],
    );
    let a = s.admin();

    // The web team gets web-dev/deploy at once: only bob is in it, so every property holds
    // and the set waits as a proposal.
    let web = format!(
        "{ACCESS}\n@id(\"web-team\")\n@auto_approve(\"true\")\npermit (principal in Pedm::Group::\"web\", action == Pedm::Action::\"request\", resource in Pedm::Target::\"web-dev\");\n"
    );
    let submitted = a
        .submit_policies(&ApplyPolicies {
            sources: vec![src("admin.cedar", ADMIN), src("access.cedar", &web)],
            comment: None,
        })
        .await
        .unwrap();
    let pedm_api::policy_review::PolicySubmitted::Pending(p) = submitted else {
        panic!("expected a proposal: {submitted:?}");
    };
    let version = a.policies().await.unwrap().version;

    // carol, an external account, joins the web team; the last approval is then refused.
    a.add_group_member("web", "carol").await.unwrap();
    let e = second
        .approve_policy_proposal(p.id, None)
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(422), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("no external account is ever auto-approved")
            && msg.contains("carol asking for web-dev/deploy")
            && msg.contains("web-team"),
        "{msg}"
    );
    assert_eq!(
        a.policies().await.unwrap().version,
        version,
        "nothing applied"
    );
    assert_eq!(
        a.policy_proposal(p.id).await.unwrap().state,
        pedm_api::policy_review::ProposalState::Pending
    );
}

/// No policy changes, but the directory does: an external account joins a group that a
/// permit auto-approves. The server proves the properties again and raises the alarm.
#[tokio::test]
async fn a_directory_change_that_breaks_a_property_raises_an_alert() {
    let dir = tempfile::tempdir().unwrap();
    let (hook, mut notices) = receiver().await;
    let s = Server::start_with(Options {
        config: Some(format!(
            "{}\n[[notify.webhook]]\nname = \"soc\"\nurl = \"{hook}\"\nsecret = \"k\"\n\
             format = \"generic\"\nkinds = [\"policy.property_broken\"]\n",
            properties_config(dir.path())
        )),
        ..Default::default()
    });
    organisation(&s).await;
    // ops deploy to web-dev at once; no external account is in ops, so the property holds.
    let access = format!(
        "{ACCESS}\n@id(\"ops-web\")\n@auto_approve(\"true\")\npermit (principal in \
         Pedm::Group::\"ops\", action == Pedm::Action::\"request\", resource in \
         Pedm::Target::\"web-dev\");\n"
    );
    let set = write_set(dir.path(), "ops-web", &access);
    let o = s.cli(&s.admin_token, &["policy", "apply", set.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(audit_of(&s, "policy.property_broken").await.is_empty());

    // carol (external) joins ops: nothing about the policies changed, the property breaks.
    s.admin().add_group_member("ops", "carol").await.unwrap();
    let n = notices.recv().await.expect("an alert");
    assert_eq!(n["kind"], "policy.property_broken");
    assert_eq!(n["severity"], "high");
    assert_eq!(
        n["data"]["property"],
        "no external account is ever auto-approved"
    );
    let why = n["data"]["counterexample"].as_str().unwrap();
    assert!(
        why.contains("carol") && why.contains("web-dev/deploy"),
        "{why}"
    );
    let ev = audit_of(&s, "policy.property_broken").await;
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].data["counterexample"]["user"], "carol");
    assert_eq!(ev[0].data["counterexample"]["policy"], "ops-web");
}
