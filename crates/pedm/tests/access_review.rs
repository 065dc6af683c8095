//! Access reviews: a quarterly campaign over a constructed organisation. Reviewers keep and
//! revoke through the CLI and the API; revocations change real state (a group membership, a
//! delegation, an external account, a policy proposal that forbids an eligibility); items
//! nobody decided take the campaign's default at its due date; every step is audited.

mod common;

use common::smtp::MailServer;
use common::*;
use pedm_api::review::*;
use pedm_api::*;
use std::time::Duration;

const POLICIES: &str = r#"
@id("admins-administer")
permit (principal, action in [Pedm::Action::"manage_users", Pedm::Action::"manage_targets",
    Pedm::Action::"manage_policies", Pedm::Action::"manage_grants", Pedm::Action::"read_audit"], resource)
when { principal.admin };

@id("admins-approve")
permit (principal, action == Pedm::Action::"approve", resource)
when { principal.admin };

@id("admins-delegate")
permit (principal, action == Pedm::Action::"delegate", resource)
when { principal.admin };

@id("ops-prod")
@approvals("1")
permit (principal in Pedm::Group::"ops", action == Pedm::Action::"request", resource in Pedm::Target::"db-prod");

@id("dev-web")
@auto_approve("true")
permit (principal in Pedm::Group::"dev", action == Pedm::Action::"request", resource in Pedm::Target::"web-dev");
"#;

struct Org {
    tokens: std::collections::BTreeMap<&'static str, String>,
}

impl Org {
    fn token(&self, u: &str) -> &str {
        &self.tokens[u]
    }
}

/// ops: alice, dave; dev: bob, carol (external, sponsored by alice); reviewers: rita;
/// security: sam. db-prod is owned by olga (its `owner` label); web-dev has no owner.
async fn organisation(s: &Server) -> Org {
    let a = s.admin();
    let mut tokens = std::collections::BTreeMap::new();
    for u in ["alice", "bob", "dave", "olga", "rita", "sam"] {
        tokens.insert(u, user_with_token(s, u, false).await);
    }
    a.create_external_user(&pedm_api::external::CreateExternalUser {
        name: "carol".into(),
        display_name: None,
        sponsor: "alice".into(),
        expires: "30d".into(),
    })
    .await
    .expect("carol");
    let carol = a
        .create_token(&CreateToken {
            user: Some("carol".into()),
            ..Default::default()
        })
        .await
        .expect("carol's token")
        .token;
    tokens.insert("carol", carol);
    for (g, members) in [
        ("ops", &["alice", "dave"][..]),
        ("dev", &["bob", "carol"][..]),
        ("reviewers", &["rita"][..]),
        ("security", &["sam"][..]),
    ] {
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
        ("db-prod", vec![("env", "prod"), ("owner", "olga")]),
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
    for (t, role, auto) in [("db-prod", "root", false), ("web-dev", "deploy", true)] {
        a.create_role(
            t,
            &CreateRole {
                auto_approve: auto,
                run_as: Some("root".into()),
                ..CreateRole::new(role, "1h")
            },
        )
        .await
        .unwrap();
    }
    a.apply_policies(&ApplyPolicies {
        sources: vec![PolicySource {
            name: "org.cedar".into(),
            text: POLICIES.into(),
        }],
        comment: None,
    })
    .await
    .expect("policies");
    Org { tokens }
}

fn find<'a>(v: &'a CampaignView, kind: ItemKind, user: &str, what: &str) -> &'a ReviewItem {
    v.items
        .iter()
        .find(|i| {
            i.kind == kind
                && i.user == user
                && (i.role.as_deref() == Some(what)
                    || i.group.as_deref() == Some(what)
                    || what.is_empty())
        })
        .unwrap_or_else(|| panic!("no {kind} item for {user} {what}: {:#?}", v.items))
}

fn decide(
    s: &Server,
    token: &str,
    verb: &str,
    item: &ReviewItem,
    comment: &str,
) -> std::process::Output {
    s.cli(
        token,
        &[
            "--json",
            "review",
            verb,
            &item.id.to_string(),
            "--comment",
            comment,
        ],
    )
}

#[tokio::test]
async fn a_quarterly_campaign_keeps_and_revokes_real_access_and_audits_every_step() {
    let s = Server::start();
    let org = organisation(&s).await;
    let a = s.admin();
    // Evidence: bob deployed on web-dev (auto-approved); alice got db-prod/root approved.
    let bob = s.client(org.token("bob"));
    bob.create_request(&req("web-dev", "deploy", "30m", "release 4.2"))
        .await
        .expect("bob's deploy");
    let alice = s.client(org.token("alice"));
    let r = alice
        .create_request(&req("db-prod", "root", "30m", "index rebuild"))
        .await
        .expect("alice's request");
    a.approve_request(r.request.id, &Decide { comment: None })
        .await
        .expect("approved");
    // A delegation the admin gave dave.
    let delegation = a
        .create_delegation(&pedm_api::delegation::CreateDelegation {
            user: Some("dave".into()),
            roles: vec!["deploy".into()],
            scope: vec!["web-dev".into()],
            expires_in: Some("30d".into()),
            reason: Some("release duty".into()),
            ..Default::default()
        })
        .await
        .expect("delegation");

    // And one to the reviewers group: rita's own access, whoever reviews it.
    a.create_delegation(&pedm_api::delegation::CreateDelegation {
        group: Some("reviewers".into()),
        roles: vec!["deploy".into()],
        scope: vec!["web-dev".into()],
        expires_in: Some("30d".into()),
        reason: Some("reviewers deploy fixes".into()),
        ..Default::default()
    })
    .await
    .expect("group delegation");

    // Bad input changes nothing: an unknown reviewer group, an unknown kind.
    let t = &s.admin_token;
    let o = s.cli(
        t,
        &[
            "review",
            "start",
            "--name",
            "2026-Q4",
            "--due",
            "14d",
            "--reviewers",
            "nobody",
        ],
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("reviewer group nobody"),
        "{}",
        stderr(&o)
    );
    let o = s.cli(
        t,
        &[
            "review",
            "start",
            "--name",
            "2026-Q4",
            "--due",
            "14d",
            "--reviewers",
            "reviewers",
            "--kinds",
            "eligibility,bogus",
        ],
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("unknown item kind \"bogus\""),
        "{}",
        stderr(&o)
    );
    assert!(a.list_reviews().await.unwrap().is_empty());

    // The campaign: everything, 14 days, undecided items flagged, escalation to security.
    let o = s.cli(
        t,
        &[
            "--json",
            "review",
            "start",
            "--name",
            "2026-Q4",
            "--due",
            "14d",
            "--reviewers",
            "reviewers",
            "--escalate-to",
            "security",
            "--default",
            "flag",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v: CampaignView = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v.campaign.stage, CampaignStage::Open);
    assert_eq!(v.campaign.default_action, DefaultAction::Flag);

    // Eligibility from the policies: ops on db-prod (owned by olga: she reviews), dev on
    // web-dev (no owner: the reviewers group). Nobody else may request anything.
    let alice_root = find(&v, ItemKind::Eligibility, "alice", "root");
    assert_eq!(alice_root.reviewer.to_string(), "user olga");
    assert!(
        alice_root.detail.contains("approval"),
        "{}",
        alice_root.detail
    );
    assert_eq!(alice_root.usage.grants, 1, "{:?}", alice_root.usage);
    assert_eq!(alice_root.suggested, None, "used: not pre-marked");
    let dave_root = find(&v, ItemKind::Eligibility, "dave", "root");
    assert_eq!(dave_root.usage.requests, 0);
    assert_eq!(
        dave_root.suggested,
        Some(ReviewDecision::Revoke),
        "unused for 90 days"
    );
    let bob_deploy = find(&v, ItemKind::Eligibility, "bob", "deploy");
    assert_eq!(bob_deploy.reviewer.to_string(), "group reviewers");
    assert!(
        bob_deploy.detail.contains("auto_approve"),
        "{}",
        bob_deploy.detail
    );
    assert_eq!((bob_deploy.usage.requests, bob_deploy.usage.grants), (1, 1));
    let mut eligible: Vec<(&str, &str)> = v
        .items
        .iter()
        .filter(|i| i.kind == ItemKind::Eligibility)
        .map(|i| (i.user.as_str(), i.role.as_deref().unwrap_or("")))
        .collect();
    eligible.sort();
    assert_eq!(
        eligible,
        [
            ("alice", "root"),
            ("bob", "deploy"),
            ("carol", "deploy"),
            ("dave", "root")
        ],
        "the admin (no permit to request) and the other groups' members are not eligible"
    );
    // Memberships of every group pedm owns, the delegation (its giver reviews), the external
    // account (its sponsor reviews).
    for (u, g) in [
        ("alice", "ops"),
        ("dave", "ops"),
        ("bob", "dev"),
        ("carol", "dev"),
        ("rita", "reviewers"),
        ("sam", "security"),
    ] {
        assert_eq!(
            find(&v, ItemKind::Membership, u, g).reviewer.to_string(),
            "group reviewers"
        );
    }
    let deleg = find(&v, ItemKind::Delegation, "dave", "");
    assert_eq!(deleg.delegation, Some(delegation.id));
    let admin_name = a.whoami().await.unwrap().user.name;
    assert_eq!(deleg.reviewer.to_string(), format!("user {admin_name}"));
    let carol_ext = find(&v, ItemKind::External, "carol", "");
    assert_eq!(carol_ext.reviewer.to_string(), "user alice");

    // A reviewer sees only their items; an outsider sees none and is refused (audited).
    let o = s.cli(org.token("olga"), &["--json", "review", "show", "2026-Q4"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let mine: CampaignView = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        mine.items
            .iter()
            .all(|i| i.reviewer.to_string() == "user olga"),
        "{mine:#?}"
    );
    assert_eq!(mine.items.len(), 2, "alice's and dave's db-prod/root");
    let o = s.cli(org.token("bob"), &["review", "show", "2026-Q4"]);
    assert!(!o.status.success());
    assert!(!audit_of(&s, "review.read").await.is_empty());

    // Nobody decides what is not theirs, nor their own access, nor without a comment.
    let o = decide(&s, org.token("bob"), "revoke", dave_root, "not mine");
    assert!(!o.status.success());
    assert!(stderr(&o).contains("user olga to review"), "{}", stderr(&o));
    let rita_own = find(&v, ItemKind::Membership, "rita", "reviewers");
    let o = decide(&s, org.token("rita"), "keep", rita_own, "I need it");
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("may not review their own access"),
        "{}",
        stderr(&o)
    );
    let group_deleg = find(&v, ItemKind::Delegation, "reviewers", "");
    let o = decide(&s, org.token("rita"), "keep", group_deleg, "we need it");
    assert!(
        stderr(&o).contains("may not review their own access"),
        "a member of the delegate group: {}",
        stderr(&o)
    );
    let o = decide(&s, org.token("olga"), "revoke", dave_root, "   ");
    assert!(!o.status.success());
    assert!(stderr(&o).contains("comment"), "{}", stderr(&o));
    let refused = audit_of(&s, "review.revoke").await;
    assert!(
        refused
            .iter()
            .any(|e| e.outcome == pedm_api::Outcome::Denied),
        "{refused:?}"
    );

    // olga keeps alice's root (used last week) and revokes dave's (never used).
    let o = decide(
        &s,
        org.token("olga"),
        "keep",
        alice_root,
        "on call for the database",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = decide(
        &s,
        org.token("olga"),
        "revoke",
        dave_root,
        "moved to the web team",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let done: ReviewItem = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(done.state, ItemState::Revoked);
    assert!(
        done.outcome.as_deref().unwrap().contains("policy proposal"),
        "{done:?}"
    );
    let o = decide(&s, org.token("olga"), "keep", dave_root, "changed my mind");
    assert!(!o.status.success(), "decided once");
    assert!(stderr(&o).contains("revoked already"), "{}", stderr(&o));

    // rita takes bob out of dev: at once, in the group itself.
    let bob_dev = find(&v, ItemKind::Membership, "bob", "dev");
    let o = decide(&s, org.token("rita"), "revoke", bob_dev, "left the team");
    assert!(o.status.success(), "{}", stderr(&o));
    let dev = a
        .list_groups()
        .await
        .unwrap()
        .into_iter()
        .find(|g| g.name == "dev")
        .unwrap();
    assert!(!dev.members.contains(&"bob".to_string()), "{dev:?}");
    let removed = audit_of(&s, "group.member_removed").await;
    assert_eq!(removed.last().unwrap().data["user"], "bob");
    assert_eq!(removed.last().unwrap().actor, "rita");
    let denied = bob
        .create_request(&req("web-dev", "deploy", "30m", "again"))
        .await;
    assert!(
        denied.is_err() || denied.unwrap().grant.is_none(),
        "bob no longer gets web-dev"
    );

    // The admin revokes the delegation they gave: it ends.
    let o = decide(&s, t, "revoke", deleg, "release duty rotated");
    assert!(o.status.success(), "{}", stderr(&o));
    let d = a.get_delegation(delegation.id).await.unwrap();
    assert!(d.revoked_at.is_some(), "{d:?}");
    assert!(d.revoke_reason.unwrap().contains("access review 2026-Q4"));

    // alice ends carol's external account: carol is refused from then on.
    assert!(s.client(org.token("carol")).whoami().await.is_ok());
    let o = decide(&s, org.token("alice"), "revoke", carol_ext, "contract over");
    assert!(o.status.success(), "{}", stderr(&o));
    let e = s.client(org.token("carol")).whoami().await.unwrap_err();
    assert_eq!(e.status(), Some(401), "{e}");
    assert!(!audit_of(&s, "user.expiry_moved").await.is_empty());

    // The admin closes early: the rest is flagged, dave's revoked eligibility becomes a
    // policy proposal that another admin must approve.
    let o = s.cli(t, &["--json", "review", "close", "2026-Q4"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let closed: CampaignView = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(closed.campaign.stage, CampaignStage::Closed);
    let c = closed.campaign.counts;
    assert_eq!((c.kept, c.revoked, c.pending), (1, 4, 0), "{c:?}");
    assert_eq!(c.flagged as usize, closed.items.len() - 5);
    assert!(
        closed
            .items
            .iter()
            .filter(|i| i.state == ItemState::Flagged)
            .all(|i| i.outcome.as_deref() == Some("not reviewed: flagged"))
    );
    let proposal = closed.campaign.proposal.expect("a proposal");
    let p = a.policy_proposal(proposal).await.unwrap();
    assert!(p.diff.contains("forbid"), "{}", p.diff);
    assert!(p.diff.contains("Pedm::User::\"dave\""), "{}", p.diff);
    assert!(!p.diff.contains("\"alice\""), "alice was kept: {}", p.diff);
    // Closed: nothing more is decided.
    let o = decide(
        &s,
        t,
        "keep",
        find(&closed, ItemKind::Membership, "sam", "security"),
        "late",
    );
    assert!(!o.status.success());
    // Until the proposal is approved dave may still ask; after, he may not.
    let dave = s.client(org.token("dave"));
    let before = dave
        .create_request(&req("db-prod", "root", "30m", "before"))
        .await;
    assert!(before.is_ok(), "{before:?}");
    a.approve_policy_proposal(proposal, None)
        .await
        .expect("approved");
    let after = dave
        .create_request(&req("db-prod", "root", "30m", "after"))
        .await
        .expect("decided");
    assert_eq!(after.request.state, RequestState::Denied);
    assert_eq!(
        after.request.policy.as_deref(),
        Some("access-review-2026-Q4-1")
    );
    // alice (kept) still may: she holds the grant approved before, and asking again is
    // refused for that reason, not by the review's policy.
    let still = alice
        .create_request(&req("db-prod", "root", "30m", "still"))
        .await;
    match &still {
        Ok(r) => assert_ne!(r.request.state, RequestState::Denied, "{r:?}"),
        Err(e) => assert!(!e.to_string().contains("access-review"), "{e}"),
    }

    for action in [
        "review.started",
        "review.kept",
        "review.revoked",
        "review.flagged",
        "review.closed",
    ] {
        assert!(!audit_of(&s, action).await.is_empty(), "{action}");
    }
    // A second campaign of the same name is refused.
    let o = s.cli(
        t,
        &[
            "review",
            "start",
            "--name",
            "2026-Q4",
            "--due",
            "1d",
            "--reviewers",
            "reviewers",
        ],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("exists already"), "{}", stderr(&o));
}

#[tokio::test]
async fn undecided_items_are_reminded_escalated_and_revoked_by_default_at_the_due_date() {
    let (url, mut notices) = receiver().await;
    let mut smtp = MailServer::start(None);
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let s = Server::start_with(Options {
        config: Some(format!(
            "[[notify.webhook]]\nname = \"governance\"\nurl = \"{url}\"\nsecret = \"k\"\n\
             format = \"generic\"\n\n{}",
            smtp.config(&base)
        )),
        port: Some(port),
        ..Default::default()
    });
    let org = organisation(&s).await;
    let a = s.admin();
    for u in ["rita", "sam", "admin"] {
        let o = s.cli(
            &s.admin_token,
            &["user", "set-email", u, &format!("{u}@example.com")],
        );
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let v = s
        .client(&s.admin_token)
        .start_review(&StartReview {
            name: "memberships".into(),
            kinds: vec![ItemKind::Membership],
            targets: vec![],
            due: "4s".into(),
            default: None,
            reviewers: "reviewers".into(),
            escalate_to: Some("security".into()),
            unused_days: None,
        })
        .await
        .expect("started");
    assert!(v.items.iter().all(|i| i.kind == ItemKind::Membership));
    assert_eq!(
        v.campaign.default_action,
        DefaultAction::Revoke,
        "revoke unless told"
    );
    // rita keeps one before the due date.
    let keep = find(&v, ItemKind::Membership, "alice", "ops");
    s.client(org.token("rita"))
        .decide_review_item(
            keep.id,
            &DecideItem {
                decision: ReviewDecision::Keep,
                comment: "database on call".into(),
            },
        )
        .await
        .expect("kept");
    // The follow-up loop reminds, escalates to security, then closes with the default.
    let closed = eventually(Duration::from_secs(30), "the campaign to close", || async {
        let v = a.get_review("memberships", false).await.ok()?;
        (v.campaign.stage == CampaignStage::Closed).then_some(v)
    })
    .await;
    let reminded = audit_of(&s, "review.reminder").await;
    let escalated = audit_of(&s, "review.escalated").await;
    assert_eq!(reminded.len(), 1, "once");
    assert_eq!(escalated.len(), 1, "once");
    assert_eq!(escalated[0].data["escalate_to"], "security");
    // Escalation handed the undecided items to security.
    assert!(
        closed
            .items
            .iter()
            .filter(|i| i.state != ItemState::Kept)
            .all(|i| i.reviewer.to_string() == "group security")
    );
    // Every undecided membership was removed, by the system, as the default.
    let c = closed.campaign.counts;
    assert_eq!(c.kept, 1);
    assert_eq!(c.revoked as usize, closed.items.len() - 1);
    let groups = a.list_groups().await.unwrap();
    let members = |g: &str| groups.iter().find(|x| x.name == g).unwrap().members.clone();
    assert_eq!(members("ops"), ["alice"]);
    assert!(members("dev").is_empty());
    assert!(members("security").is_empty());
    let revoked = audit_of(&s, "review.revoked").await;
    assert!(
        revoked
            .iter()
            .all(|e| e.actor == "system" && e.data["by_default"] == true),
        "{revoked:?}"
    );
    // Reviewers were told through the notifiers: started, reminder, escalated, closed.
    let mut kinds = vec![];
    while !kinds.iter().any(|k| k == "review.closed") {
        let n = notices.recv().await.expect("a notification");
        kinds.push(n["kind"].as_str().unwrap_or("").to_string());
    }
    // And by mail: rita (the reviewers) of her items, sam (security) of the escalated ones,
    // each with a link to the campaign's page; the admin who started it of the outcome.
    let (mut told_rita, mut told_sam, mut told_admin) = (false, false, false);
    while !(told_rita && told_sam && told_admin) {
        let m = smtp.next_mail().await;
        let subject = m.header("Subject").unwrap_or_default();
        if m.to.iter().any(|t| t.contains("admin@")) {
            assert_eq!(
                subject,
                format!(
                    "pedm access review memberships closed: 1 kept, {} revoked, 0 flagged",
                    c.revoked
                )
            );
            told_admin = true;
        }
        if m.to.iter().any(|t| t.contains("rita@")) && subject.contains("items to keep or revoke") {
            told_rita = true;
        }
        if m.to.iter().any(|t| t.contains("sam@")) && subject.contains("escalated to you") {
            assert!(
                m.part("text/plain")
                    .contains(&format!("/ui/reviews/{}", v.campaign.id)),
                "{}",
                m.raw
            );
            told_sam = true;
        }
    }
    for k in [
        "review.started",
        "review.reminder",
        "review.escalated",
        "review.closed",
    ] {
        assert!(kinds.iter().any(|x| x == k), "{k}: {kinds:?}");
    }
}

#[tokio::test]
async fn every_policy_names_its_owner_and_an_overdue_one_is_announced_once() {
    let (url, mut notices) = receiver().await;
    let s = Server::start_with(Options {
        config: Some(format!(
            "[policy]\nrequire_owner = true\n\n[[notify.webhook]]\nname = \"governance\"\n\
             url = \"{url}\"\nsecret = \"k\"\nformat = \"generic\"\n"
        )),
        ..Default::default()
    });
    let t = &s.admin_token;
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let admin = r#"@id("admins")
@owner("platform")
@review_by("2099-01-01")
permit (principal, action, resource) when { principal.admin };
"#;
    // A set whose policy names no owner is refused, naming it; so is a date that is not one.
    let unowned = write(
        "unowned.cedar",
        &format!(
            "{admin}\n@id(\"ops\")\npermit (principal, action == Pedm::Action::\"request\", resource);\n"
        ),
    );
    let o = s.cli(t, &["policy", "apply", unowned.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("every policy needs @owner") && stderr(&o).contains("ops in"),
        "{}",
        stderr(&o)
    );
    let bad_date = write("bad.cedar", &admin.replace("2099-01-01", "next spring"));
    let o = s.cli(t, &["policy", "apply", bad_date.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("@review_by(\"next spring\")"),
        "{}",
        stderr(&o)
    );
    let before = s.admin().policy_versions().await.unwrap().len();

    // Owned, one of them past its review date.
    let owned = write(
        "owned.cedar",
        &format!(
            "{admin}\n@id(\"ops\")\n@owner(\"dba\")\n@review_by(\"2026-01-15\")\n\
             permit (principal, action == Pedm::Action::\"request\", resource);\n"
        ),
    );
    let o = s.cli(t, &["policy", "apply", owned.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(s.admin().policy_versions().await.unwrap().len(), before + 1);
    let o = s.cli(t, &["--json", "policy", "owners"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let all: Vec<PolicyOwnership> = serde_json::from_slice(&o.stdout).unwrap();
    let status: Vec<(&str, &str, &str)> = all
        .iter()
        .map(|p| {
            (
                p.policy.as_str(),
                p.owner.as_deref().unwrap_or(""),
                p.status.as_str(),
            )
        })
        .collect();
    assert_eq!(
        status,
        [("admins", "platform", "ok"), ("ops", "dba", "overdue")]
    );
    let o = s.cli(t, &["policy", "owners", "--overdue"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("dba") && !stdout(&o).contains("platform"),
        "{}",
        stdout(&o)
    );

    // The owner is told, through the notifiers and the audit log.
    let n = loop {
        let n = notices.recv().await.expect("a notification");
        if n["kind"] == "policy.review_overdue" {
            break n;
        }
    };
    assert_eq!(n["data"]["policy"], "ops");
    assert_eq!(n["data"]["owner"], "dba");
    let events = audit_of(&s, "policy.review_overdue").await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].data["review_by"], "2026-01-15");
}

#[tokio::test]
async fn an_evidence_bundle_verifies_offline_and_fails_after_any_change() {
    let s = Server::start();
    let org = organisation(&s).await;
    let a = s.admin();
    s.client(org.token("bob"))
        .create_request(&req("web-dev", "deploy", "30m", "release 4.3"))
        .await
        .expect("bob's deploy");
    let v = a
        .start_review(&StartReview {
            name: "evidence-q".into(),
            kinds: vec![ItemKind::Membership],
            targets: vec![],
            due: "7d".into(),
            default: None,
            reviewers: "reviewers".into(),
            escalate_to: None,
            unused_days: None,
        })
        .await
        .unwrap();
    let item = find(&v, ItemKind::Membership, "dave", "ops");
    s.client(org.token("rita"))
        .decide_review_item(
            item.id,
            &DecideItem {
                decision: ReviewDecision::Revoke,
                comment: "left ops".into(),
            },
        )
        .await
        .unwrap();
    let t = &s.admin_token;
    let month = jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .strftime("%Y-%m")
        .to_string();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bundle");
    let out_s = out.to_str().unwrap();

    // Bad input: a period that is none.
    let o = s.cli(
        t,
        &[
            "report",
            "evidence",
            "--framework",
            "soc2",
            "--period",
            "2026-Q9",
            "--output",
            out_s,
        ],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("period \"2026-Q9\""), "{}", stderr(&o));
    assert!(!out.exists(), "nothing written");
    // Auditors only.
    let o = s.cli(
        org.token("bob"),
        &[
            "report",
            "evidence",
            "--framework",
            "soc2",
            "--period",
            &month,
            "--output",
            out_s,
        ],
    );
    assert!(!o.status.success());

    let o = s.cli(
        t,
        &[
            "report",
            "evidence",
            "--framework",
            "soc2",
            "--period",
            &month,
            "--output",
            out_s,
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let read = |n: &str| std::fs::read_to_string(out.join(n)).unwrap();
    let elevations = read("elevations.csv");
    assert!(elevations.starts_with("user,target,role,"), "{elevations}");
    assert!(
        elevations
            .lines()
            .any(|l| l.starts_with("bob,web-dev,deploy,") && l.contains("release 4.3")),
        "{elevations}"
    );
    assert!(elevations.lines().next().unwrap().contains(",sessions,"));
    let reviews = read("access_reviews.csv");
    assert!(
        reviews.lines().any(|l| l.contains("evidence-q")
            && l.contains(",dave,")
            && l.contains("revoked")
            && l.contains("left ops")),
        "{reviews}"
    );
    let versions: serde_json::Value = serde_json::from_str(&read("policy_versions.json")).unwrap();
    assert!(
        versions.as_array().unwrap().len() >= 2,
        "the default set and the organisation's"
    );
    let summary = read("summary.html");
    for c in ["CC6.1", "CC6.2", "CC6.3", "CC7.2", "<svg"] {
        assert!(summary.contains(c), "{c}");
    }
    assert!(!summary.contains("<script"), "no scripts in the summary");
    let manifest: serde_json::Value = serde_json::from_str(&read("manifest.json")).unwrap();
    assert_eq!(manifest["framework"], "soc2");
    assert_eq!(manifest["files"].as_array().unwrap().len(), 8);

    let key = stdout(&s.cli(t, &["audit", "pubkey"])).trim().to_string();
    let verify = |key: &str| s.cli(t, &["report", "verify-bundle", out_s, "--pubkey", key]);
    let o = verify(&key);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).starts_with("VERIFIED: soc2 evidence"),
        "{}",
        stdout(&o)
    );

    // Any change fails, naming it: an edited file, an added one, a removed one, another key.
    let path = out.join("elevations.csv");
    std::fs::write(&path, elevations.replace("bob,", "eve,")).unwrap();
    let o = verify(&key);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("elevations.csv was changed"),
        "{}",
        stderr(&o)
    );
    std::fs::write(&path, &elevations).unwrap();
    assert!(verify(&key).status.success(), "restored");
    std::fs::write(out.join("notes.txt"), "added later").unwrap();
    let o = verify(&key);
    assert!(
        stderr(&o).contains("notes.txt is not in the signed manifest"),
        "{}",
        stderr(&o)
    );
    std::fs::remove_file(out.join("notes.txt")).unwrap();
    let html = out.join("summary.html");
    std::fs::remove_file(&html).unwrap();
    let o = verify(&key);
    assert!(
        stderr(&o).contains("summary.html is missing"),
        "{}",
        stderr(&o)
    );
    std::fs::write(&html, &summary).unwrap();
    let manifest_text = read("manifest.json");
    std::fs::write(
        out.join("manifest.json"),
        manifest_text.replace("\"soc2\"", "\"gdpr\""),
    )
    .unwrap();
    let o = verify(&key);
    assert!(stderr(&o).contains("signature"), "{}", stderr(&o));
    std::fs::write(out.join("manifest.json"), &manifest_text).unwrap();
    let other = pedm_audit::SigningKey::generate().unwrap();
    let o = verify(&other.public_key().to_string());
    assert!(!o.status.success());
    assert!(verify(&key).status.success());

    // The same period for HIPAA maps the same files to its controls; the bundle's making is
    // itself on record.
    let hipaa = dir.path().join("hipaa");
    let o = s.cli(
        t,
        &[
            "report",
            "evidence",
            "--framework",
            "hipaa",
            "--period",
            &month,
            "--output",
            hipaa.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        std::fs::read_to_string(hipaa.join("summary.html"))
            .unwrap()
            .contains("164.312(b)")
    );
    let made = audit_of(&s, "report.evidence").await;
    let denied = made
        .iter()
        .filter(|e| e.outcome == pedm_api::Outcome::Denied)
        .count();
    assert_eq!(
        (made.len() - denied, denied),
        (2, 1),
        "two bundles, bob refused"
    );
}
