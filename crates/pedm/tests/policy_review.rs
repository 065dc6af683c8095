//! Two-person control of policy changes (`policy.require_approvals`), through the API and the
//! CLI: an apply becomes a pending proposal that changes no decision; its author cannot
//! approve it; each admin counts once; the last approval puts it in force; rejected and stale
//! proposals never take effect; every step is an audit event. Off, apply is immediate.

mod common;

use common::*;
use pedm_api::policy_review::ProposalState;
use pedm_api::*;

const NO_DOCKER: &str = r#"
@id("no-docker")
forbid (principal, action == Pedm::Action::"request", resource)
when { resource.name == "docker" };
"#;

const NO_ROOT: &str = r#"
@id("no-root")
forbid (principal, action == Pedm::Action::"request", resource)
when { resource.name == "root" };
"#;

struct Admins {
    alice: (String, Client),
    bob: (String, Client),
    carol: (String, Client),
    dev: (String, Client),
}

async fn people(s: &Server) -> Admins {
    standard_targets(s).await;
    let mut made = vec![];
    for (name, admin) in [
        ("alice", true),
        ("bob", true),
        ("carol", true),
        ("dev", false),
    ] {
        let t = user_with_token(s, name, admin).await;
        let c = s.client(&t);
        made.push((t, c));
    }
    let mut it = made.into_iter();
    let mut next = || it.next().expect("person");
    Admins {
        alice: next(),
        bob: next(),
        carol: next(),
        dev: next(),
    }
}

/// The set in force plus one more file.
async fn with_file(s: &Server, name: &str, text: &str) -> Vec<PolicySource> {
    let mut sources = s.admin().policies().await.expect("policies").sources;
    sources.push(PolicySource {
        name: name.into(),
        text: text.into(),
    });
    sources
}

/// Writes the sources into a fresh directory for `pedm policy apply DIR`.
fn policy_dir(sources: &[PolicySource]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for s in sources {
        std::fs::write(dir.path().join(&s.name), &s.text).expect("write policy");
    }
    dir
}

/// What policy decides for the developer's docker request now (a grant it gives is released
/// at once, so the next call is decided afresh).
async fn docker_state(dev: &Client) -> RequestState {
    let d = dev
        .create_request(&req("web1", "docker", "10m", "build"))
        .await
        .expect("request");
    if let Some(g) = d.grant {
        dev.release_grant(g.id, &Reason::default())
            .await
            .expect("release");
    }
    d.request.state
}

#[tokio::test]
async fn two_other_admins_must_approve_a_policy_change() {
    // Admins are made before two-person control is switched on (under it, making one needs
    // the approval of others, and only each admin mints their own tokens).
    let mut s = Server::start();
    let p = people(&s).await;
    s.reconfigure(Some("[policy]\nrequire_approvals = 2\n"), &[]);
    assert_eq!(docker_state(&p.dev.1).await, RequestState::Approved);

    // Apply through the CLI: stored as a pending proposal, nothing changes.
    let dir = policy_dir(&with_file(&s, "no-docker.cedar", NO_DOCKER).await);
    let o = s.cli(
        &p.alice.0,
        &["policy", "apply", dir.path().to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("pending as proposal 1") && out.contains("waits for 2 approvals"),
        "{out}"
    );
    assert_eq!(s.admin().policies().await.unwrap().version, 1);
    assert_eq!(docker_state(&p.dev.1).await, RequestState::Approved);
    // A direct apply through the typed client says it was not applied.
    let e = p
        .alice
        .1
        .apply_policies(&ApplyPolicies {
            sources: with_file(&s, "no-docker.cedar", NO_DOCKER).await,
            comment: None,
        })
        .await
        .unwrap_err();
    assert!(e.to_string().contains("pending as proposal 1"), "{e}");
    // A broken set is refused at once, not stored as a proposal.
    let e = p
        .alice
        .1
        .submit_policies(&ApplyPolicies {
            sources: with_file(&s, "bad.cedar", "permit (principal, action, resource").await,
            comment: None,
        })
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(422), "{e}");

    // Other admins see it with its diff.
    let o = s.cli(&p.bob.0, &["policy", "pending"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("policy proposal 1 by alice") && out.contains("+@id(\"no-docker\")"),
        "{out}"
    );
    let pending = p.bob.1.policy_proposals(false).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(
        (
            pending[0].base_version,
            pending[0].required,
            pending[0].stale
        ),
        (1, 2, false)
    );

    // The author cannot approve their own; a non-admin cannot approve.
    let o = s.cli(&p.alice.0, &["policy", "approve", "1"]);
    assert_ne!(o.status.code(), Some(0));
    assert!(
        stderr(&o).contains("cannot approve their own"),
        "{}",
        stderr(&o)
    );
    let e = p.dev.1.approve_policy_proposal(1, None).await.unwrap_err();
    assert_eq!(e.status(), Some(403), "{e}");

    // One approval is not enough; the same admin counts once.
    let after_one = p
        .bob
        .1
        .approve_policy_proposal(1, Some("looks right".into()))
        .await
        .unwrap();
    assert_eq!(after_one.state, ProposalState::Pending);
    assert_eq!(after_one.approvals.len(), 1);
    assert_eq!(s.admin().policies().await.unwrap().version, 1);
    assert_eq!(docker_state(&p.dev.1).await, RequestState::Approved);
    let e = p.bob.1.approve_policy_proposal(1, None).await.unwrap_err();
    assert_eq!(e.status(), Some(409), "{e}");
    assert!(e.to_string().contains("already approved"), "{e}");

    // The second other admin puts it in force: decisions change.
    let o = s.cli(&p.carol.0, &["policy", "approve", "1", "--comment", "ok"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("in force as version 2"),
        "{}",
        stdout(&o)
    );
    assert_eq!(s.admin().policies().await.unwrap().version, 2);
    assert_eq!(docker_state(&p.dev.1).await, RequestState::Denied);
    let done = p.bob.1.policy_proposal(1).await.unwrap();
    assert_eq!(done.state, ProposalState::Applied);
    assert_eq!(done.applied_version, Some(2));
    assert!(p.bob.1.policy_proposals(false).await.unwrap().is_empty());
    let e = p
        .alice
        .1
        .reject_policy_proposal(1, "late")
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(409), "{e}");

    // Every step is in the audit log.
    let proposed = audit_of(&s, "policy.proposed").await;
    assert_eq!(proposed.len(), 1);
    assert_eq!(proposed[0].actor, "alice");
    assert!(
        proposed[0].data["diff"]
            .as_str()
            .unwrap()
            .contains("no-docker")
    );
    let approved = audit_of(&s, "policy.approved").await;
    assert_eq!(
        approved
            .iter()
            .map(|e| e.actor.as_str())
            .collect::<Vec<_>>(),
        ["bob", "carol"]
    );
    let applied = audit_of(&s, "policy.applied").await;
    let last = applied.last().unwrap();
    assert_eq!(last.actor, "carol");
    assert_eq!(last.data["proposal"], 1);
    assert_eq!(last.data["proposed_by"], "alice");
    assert_eq!(
        last.data["approved_by"],
        serde_json::json!(["bob", "carol"])
    );
    let refused: Vec<_> = audit_of(&s, "policy.approve")
        .await
        .into_iter()
        .filter(|e| e.outcome == Outcome::Denied)
        .map(|e| e.actor)
        .collect();
    assert_eq!(refused, ["alice", "dev", "bob"], "self, non-admin, twice");
}

#[tokio::test]
async fn rejected_and_stale_proposals_never_take_effect() {
    // The setting through the environment this time.
    let mut s = Server::start();
    let p = people(&s).await;
    s.reconfigure(None, &[("PEDM_POLICY__REQUIRE_APPROVALS", "2")]);
    let no_docker = with_file(&s, "no-docker.cedar", NO_DOCKER).await;
    let no_root = with_file(&s, "no-root.cedar", NO_ROOT).await;
    let submit = |c: &Client, sources: &Vec<PolicySource>| {
        let c = c.clone();
        let body = ApplyPolicies {
            sources: sources.clone(),
            comment: None,
        };
        async move { c.submit_policies(&body).await.expect("submit") }
    };
    let id = |x: policy_review::PolicySubmitted| match x {
        policy_review::PolicySubmitted::Pending(p) => p.id,
        other => panic!("not pending: {other:?}"),
    };
    assert_eq!(id(submit(&p.alice.1, &no_docker).await), 1);
    assert_eq!(id(submit(&p.alice.1, &no_root).await), 2);
    // The same set again on the same base is the same proposal.
    assert_eq!(id(submit(&p.bob.1, &no_docker).await), 1);

    // Rejecting needs a comment (the CLI insists, so does the API).
    let o = s.cli(&p.bob.0, &["policy", "reject", "2"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let e = p.bob.1.reject_policy_proposal(2, "  ").await.unwrap_err();
    assert_eq!(e.status(), Some(400), "{e}");
    assert!(e.to_string().contains("comment"), "{e}");
    let o = s.cli(
        &p.bob.0,
        &[
            "policy",
            "reject",
            "2",
            "--comment",
            "root stays requestable",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let rejected = p.alice.1.policy_proposal(2).await.unwrap();
    assert_eq!(rejected.state, ProposalState::Rejected);
    assert_eq!(rejected.decided_by.as_deref(), Some("bob"));
    // A rejected proposal cannot be approved into force.
    let e = p
        .carol
        .1
        .approve_policy_proposal(2, None)
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(409), "{e}");
    assert_eq!(s.admin().policies().await.unwrap().version, 1);

    // The same change again: a new proposal on version 1. Then proposal 1 takes effect...
    assert_eq!(id(submit(&p.alice.1, &no_root).await), 3);
    p.bob.1.approve_policy_proposal(1, None).await.unwrap();
    p.carol.1.approve_policy_proposal(3, None).await.unwrap();
    let one = p.carol.1.approve_policy_proposal(1, None).await.unwrap();
    assert_eq!(one.applied_version, Some(2));
    // ...so proposal 3, written against version 1, is stale and refused: approving it would
    // silently undo proposal 1.
    let listed = p.bob.1.policy_proposals(false).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].id == 3 && listed[0].stale, "{listed:?}");
    let o = s.cli(&p.bob.0, &["policy", "pending"]);
    assert!(stdout(&o).contains("STALE"), "{}", stdout(&o));
    let e = p.bob.1.approve_policy_proposal(3, None).await.unwrap_err();
    assert_eq!(e.status(), Some(409), "{e}");
    assert!(e.to_string().contains("version 2 is in force now"), "{e}");
    let v = s.admin().policies().await.unwrap();
    assert_eq!(v.version, 2);
    assert!(v.sources.iter().any(|s| s.name == "no-docker.cedar"));
    assert!(!v.sources.iter().any(|s| s.name == "no-root.cedar"));
    assert_eq!(
        p.dev
            .1
            .create_request(&req("web1", "root", "10m", "fix"))
            .await
            .unwrap()
            .request
            .state,
        RequestState::Pending,
        "root is still requestable: neither rejected nor stale proposal took effect"
    );

    let rejections: Vec<_> = audit_of(&s, "policy.rejected")
        .await
        .into_iter()
        .filter(|e| e.subject.as_deref() == Some("policy-proposal:2"))
        .collect();
    assert_eq!(rejections.len(), 1);
    assert_eq!(rejections[0].data["comment"], "root stays requestable");
    let stale_refusals = audit_of(&s, "policy.approve")
        .await
        .into_iter()
        .filter(|e| {
            e.outcome == Outcome::Denied && e.subject.as_deref() == Some("policy-proposal:3")
        })
        .count();
    assert_eq!(stale_refusals, 1);
}

#[tokio::test]
async fn without_the_setting_apply_is_immediate() {
    let s = Server::start();
    let p = people(&s).await;
    let dir = policy_dir(&with_file(&s, "no-docker.cedar", NO_DOCKER).await);
    let o = s.cli(
        &p.alice.0,
        &["policy", "apply", dir.path().to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("policy version 2 in force"),
        "{}",
        stdout(&o)
    );
    assert_eq!(docker_state(&p.dev.1).await, RequestState::Denied);
    assert!(p.bob.1.policy_proposals(true).await.unwrap().is_empty());
    assert!(audit_of(&s, "policy.proposed").await.is_empty());
    let e = p.bob.1.approve_policy_proposal(1, None).await.unwrap_err();
    assert_eq!(e.status(), Some(404), "{e}");
}

#[tokio::test]
async fn openapi_documents_policy_proposals() {
    let s = Server::start();
    let doc: serde_json::Value = reqwest::get(format!("{}/api/v1/openapi.json", s.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let paths = &doc["paths"];
    for path in [
        "/api/v1/policies/proposals",
        "/api/v1/policies/proposals/{id}",
        "/api/v1/policies/proposals/{id}/approve",
        "/api/v1/policies/proposals/{id}/reject",
    ] {
        assert!(paths.get(path).is_some(), "openapi lacks {path}");
    }
    let apply = &paths["/api/v1/policies"]["post"]["responses"];
    assert!(
        apply.get("200").is_some() && apply.get("202").is_some(),
        "{apply}"
    );
    let all = &paths["/api/v1/policies/proposals"]["get"]["parameters"][0];
    assert_eq!(
        (all["name"].as_str(), all["in"].as_str()),
        (Some("all"), Some("query"))
    );
    let schemas = &doc["components"]["schemas"];
    for name in ["PolicyProposal", "ProposalState", "DecideProposal"] {
        assert!(schemas.get(name).is_some(), "openapi lacks schema {name}");
    }
}

/// On PostgreSQL, with two instances sharing it: a proposal made through one is approved
/// through both; the two last approvals racing on different instances apply it exactly once,
/// and both instances then decide with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn proposals_on_postgres_with_two_instances() {
    let Some(pg) = pedm_store::testing::TestPostgres::start_or_skip() else {
        return;
    };
    let db = pg.fresh_database("proposals").expect("database");
    let config = "[policy]\nrequire_approvals = 2\n";
    let mut a = Server::start_with(Options {
        database_url: Some(db.clone()),
        ..Default::default()
    });
    let p = people(&a).await;
    let dave = a.client(&user_with_token(&a, "dave", true).await);
    a.reconfigure(Some(config), &[]);
    let b = Server::start_with(Options {
        database_url: Some(db),
        admin_token: Some(a.admin_token.clone()),
        config: Some(config.into()),
        ..Default::default()
    });
    let sources = with_file(&a, "no-docker.cedar", NO_DOCKER).await;
    let proposed = p
        .alice
        .1
        .submit_policies(&ApplyPolicies {
            sources,
            comment: Some("no docker".into()),
        })
        .await
        .unwrap();
    assert!(matches!(
        proposed,
        policy_review::PolicySubmitted::Pending(ref x) if x.id == 1
    ));
    // Through B: listed, and one approval.
    assert_eq!(
        b.client(&p.bob.0)
            .policy_proposals(false)
            .await
            .unwrap()
            .len(),
        1
    );
    b.client(&p.bob.0)
        .approve_policy_proposal(1, None)
        .await
        .unwrap();
    // The last approval, twice at once on two instances: one applies, the other is refused.
    let carol_b = b.client(&p.carol.0);
    let (x, y) = tokio::join!(
        carol_b.approve_policy_proposal(1, None),
        dave.approve_policy_proposal(1, None)
    );
    let applied: Vec<_> = [&x, &y]
        .into_iter()
        .filter_map(|r| r.as_ref().ok())
        .filter(|p| p.state == ProposalState::Applied)
        .collect();
    assert_eq!(applied.len(), 1, "{x:?} {y:?}");
    assert_eq!(applied[0].applied_version, Some(2));
    let loser = [&x, &y].into_iter().find_map(|r| r.as_ref().err());
    assert_eq!(loser.and_then(|e| e.status()), Some(409), "{x:?} {y:?}");
    assert_eq!(a.admin().policy_versions().await.unwrap().len(), 2);
    // The instance that applied it decides with it at once; the other follows the newest
    // version within its polling interval (5 s), as for any apply. Both, whichever won.
    for (server, name) in [(&a, "A"), (&b, "B")] {
        let dev = server.client(&p.dev.0);
        eventually(
            std::time::Duration::from_secs(20),
            &format!("the approved version on instance {name}"),
            || async {
                let d = dev
                    .create_request(&req("web1", "docker", "10m", "x"))
                    .await
                    .ok()?;
                if let Some(g) = &d.grant {
                    dev.release_grant(g.id, &Reason::default()).await.ok()?;
                }
                (d.request.state == RequestState::Denied).then_some(())
            },
        )
        .await;
    }
}

#[tokio::test]
async fn approvers_are_notified_of_each_step() {
    let (url, mut rx) = receiver().await;
    let mut s = Server::start();
    let p = people(&s).await;
    s.reconfigure(
        Some(&format!(
            "[policy]\nrequire_approvals = 1\n\n[[notify.webhook]]\nname = \"admins\"\n\
             url = \"{url}\"\nsecret = \"k\"\nformat = \"generic\"\nkinds = [\"policy.\"]\n"
        )),
        &[],
    );
    let sources = with_file(&s, "no-docker.cedar", NO_DOCKER).await;
    p.alice
        .1
        .submit_policies(&ApplyPolicies {
            sources,
            comment: None,
        })
        .await
        .unwrap();
    p.bob.1.approve_policy_proposal(1, None).await.unwrap();
    let mut kinds = vec![];
    while kinds.len() < 2 {
        let n = tokio::time::timeout(std::time::Duration::from_secs(20), rx.recv())
            .await
            .expect("a notification within 20 s")
            .expect("receiver open");
        assert_eq!(n["data"]["proposal"], 1, "{n}");
        kinds.push(n["kind"].as_str().unwrap_or_default().to_string());
    }
    kinds.sort();
    assert_eq!(kinds, ["policy.applied", "policy.proposed"]);
}

/// Who decides approvals, for the held-changes test: admins administer; members of `helpers`
/// approve (named in a condition); `security` is an approval tier; `devs` only request.
const APPROVERS: &str = r#"
@id("admins-administer")
permit (principal, action in [Pedm::Action::"manage_users", Pedm::Action::"manage_targets",
    Pedm::Action::"manage_policies", Pedm::Action::"manage_grants", Pedm::Action::"read_audit"], resource)
when { principal.admin };

@id("helpers-approve")
permit (principal, action == Pedm::Action::"approve", resource)
when { principal in Pedm::Group::"helpers" };

@id("devs-root")
@approvals("security:1")
permit (principal in Pedm::Group::"devs", action == Pedm::Action::"request", resource)
when { resource.name == "root" };
"#;

#[tokio::test]
async fn changes_to_who_approves_are_held_like_policy_changes() {
    let mut s = Server::start();
    let p = people(&s).await;
    let admin = s.admin();
    admin
        .apply_policies(&ApplyPolicies {
            sources: vec![PolicySource {
                name: "approvers.cedar".into(),
                text: APPROVERS.into(),
            }],
            comment: None,
        })
        .await
        .expect("policies");
    for g in ["security", "helpers", "devs"] {
        admin
            .create_group(&CreateGroup {
                name: g.into(),
                description: None,
            })
            .await
            .expect("group");
    }
    let mallory = user_with_token(&s, "mallory", false).await;
    s.reconfigure(Some("[policy]\nrequire_approvals = 1\n"), &[]);
    let alice = &p.alice.1;
    let members = |g: &'static str| {
        let admin = s.admin();
        async move {
            admin
                .list_groups()
                .await
                .expect("groups")
                .into_iter()
                .find(|x| x.name == g)
                .expect("group")
                .members
        }
    };

    // An approval tier's group: held, through the CLI; nothing changes yet.
    let o = s.cli(&p.alice.0, &["group", "add-member", "security", "mallory"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("NOT done yet")
            && out.contains("add mallory to approver group security")
            && out.contains("pending as proposal 1"),
        "{out}"
    );
    assert!(members("security").await.is_empty());
    // Asking again returns the same proposal.
    let again = alice.add_group_member("security", "mallory").await.unwrap();
    assert!(
        matches!(again, policy_review::Held::Pending(ref x) if x.id == 1),
        "{again:?}"
    );
    // A group a permit lets approve (named only in a condition): held too.
    let helpers = alice.add_group_member("helpers", "mallory").await.unwrap();
    assert!(
        matches!(helpers, policy_review::Held::Pending(ref x) if x.id == 2),
        "{helpers:?}"
    );
    // A group that decides nothing: done at once.
    let devs = alice.add_group_member("devs", "mallory").await.unwrap();
    assert!(
        matches!(devs, policy_review::Held::Done(ref g) if g.members == ["mallory"]),
        "{devs:?}"
    );

    // The proposer cannot approve; another admin can, and the change is made then.
    let e = alice.approve_policy_proposal(1, None).await.unwrap_err();
    assert_eq!(e.status(), Some(403), "{e}");
    let done = p
        .bob
        .1
        .approve_policy_proposal(1, Some("vetted".into()))
        .await
        .unwrap();
    assert_eq!(done.state, ProposalState::Applied);
    assert_eq!(members("security").await, ["mallory"]);
    let added = audit_of(&s, "group.member_added").await;
    let held = added
        .iter()
        .find(|e| e.subject.as_deref() == Some("group:security"))
        .expect("member added to security");
    assert_eq!(held.actor, "bob");
    assert_eq!(held.data["proposed_by"], "alice");
    assert_eq!(held.data["approved_by"], serde_json::json!(["bob"]));
    // The held change is listed with what it does.
    let o = s.cli(&p.carol.0, &["policy", "pending"]);
    assert!(
        stdout(&o).contains("add mallory to approver group helpers"),
        "{}",
        stdout(&o)
    );
    p.carol
        .1
        .reject_policy_proposal(2, "not needed")
        .await
        .unwrap();
    assert!(members("helpers").await.is_empty());

    // Making an administrator: held; rejected, nothing changes.
    let o = s.cli(&p.alice.0, &["user", "set-admin", "dev", "true"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("make dev an administrator"),
        "{}",
        stdout(&o)
    );
    let dev = || async {
        s.admin()
            .list_users()
            .await
            .unwrap()
            .into_iter()
            .find(|u| u.name == "dev")
            .unwrap()
    };
    assert!(!dev().await.admin);
    p.bob.1.reject_policy_proposal(3, "no").await.unwrap();
    assert!(!dev().await.admin);
    // Creating one outright is refused: create, then make (held).
    let e = alice
        .create_user(&CreateUser {
            name: "puppet".into(),
            display_name: None,
            email: None,
            admin: true,
        })
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(422), "{e}");
    assert!(
        s.admin()
            .list_users()
            .await
            .unwrap()
            .iter()
            .all(|u| u.name != "puppet")
    );

    // A token speaks for its holder: nobody mints one for an admin or an approver.
    for holder in ["bob", "mallory"] {
        let e = alice
            .create_token(&CreateToken {
                user: Some(holder.into()),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.status(), Some(403), "{holder}: {e}");
    }
    let refused = audit_of(&s, "token.create").await;
    assert_eq!(
        refused
            .iter()
            .filter(|e| e.outcome == Outcome::Denied)
            .count(),
        2,
        "{refused:?}"
    );
    // ... but for someone who decides nothing, and for oneself, as before.
    alice
        .create_token(&CreateToken {
            user: Some("dev".into()),
            ..Default::default()
        })
        .await
        .expect("token for dev");
    s.client(&mallory)
        .create_token(&CreateToken::default())
        .await
        .expect("mallory mints her own");

    // Taking power away is never held.
    let g = alice
        .remove_group_member("security", "mallory")
        .await
        .unwrap();
    assert!(g.members.is_empty());
}
