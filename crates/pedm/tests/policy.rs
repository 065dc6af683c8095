//! Cedar policies through the API and the CLI: apply (validated, versioned, audited), what
//! policies decide (groups, labels, tiers, N of M, max duration, source network), break-glass
//! with its review and a signed high-severity webhook, policy test cases and simulation.

mod common;

use axum::body::Bytes;
use axum::http::HeaderMap;
use common::*;
use pedm_api::*;
use std::time::Duration;
use tokio::sync::mpsc;

const POLICIES: &str = r#"
@id("admins-administer")
permit (principal, action in [Pedm::Action::"manage_users", Pedm::Action::"manage_targets",
    Pedm::Action::"manage_policies", Pedm::Action::"manage_grants", Pedm::Action::"read_audit"], resource)
when { principal.admin };

// Leads and security approve production requests.
@id("leads-and-security-approve")
permit (principal, action == Pedm::Action::"approve", resource)
when { principal in Pedm::Group::"leads" || principal in Pedm::Group::"security" };

// Developers get docker anywhere at once, for up to 30 minutes, several grants at once.
@id("dev-docker")
@allow_parallel("true")
@auto_approve("true")
@max_duration("30m")
permit (principal in Pedm::Group::"devs", action == Pedm::Action::"request", resource)
when { resource.name == "docker" };

// Developers get root on production only after a lead and then two of security approve.
@id("dev-prod-root")
@approvals("leads:1, security:2")
@max_duration("1h")
permit (principal in Pedm::Group::"devs", action == Pedm::Action::"request", resource)
when { resource.name == "root" && resource.labels.contains("env=prod") };

// Nobody requests from outside loopback (this test's "office network").
@id("office-network-only")
forbid (principal, action == Pedm::Action::"request", resource)
unless { context has source_ip && context.source_ip.isInRange(ip("127.0.0.0/8")) };

// On-call may break the glass on production.
@id("oncall-break-glass")
@break_glass("true")
@max_duration("30m")
permit (principal in Pedm::Group::"oncall", action == Pedm::Action::"request", resource)
when { resource.labels.contains("env=prod") };
"#;

fn src(name: &str, text: &str) -> PolicySource {
    PolicySource {
        name: name.into(),
        text: text.into(),
    }
}

async fn make_group(s: &Server, group: &str, members: &[&str]) {
    let a = s.admin();
    a.create_group(&CreateGroup {
        name: group.into(),
        description: None,
    })
    .await
    .unwrap();
    for m in members {
        a.add_group_member(group, m).await.unwrap();
    }
}

struct People {
    dev: Client,
    lead: Client,
    sec1: Client,
    sec2: Client,
    oncall: Client,
    outsider: Client,
}

async fn setup(s: &Server) -> People {
    standard_targets(s).await;
    let mut tokens = vec![];
    for u in ["dev", "lead", "sec1", "sec2", "oncall", "outsider"] {
        tokens.push(s.client(&user_with_token(s, u, false).await));
    }
    make_group(s, "devs", &["dev"]).await;
    make_group(s, "leads", &["lead"]).await;
    make_group(s, "security", &["sec1", "sec2"]).await;
    make_group(s, "oncall", &["oncall"]).await;
    let v = s
        .admin()
        .apply_policies(&ApplyPolicies {
            sources: vec![src("prod.cedar", POLICIES)],
            comment: Some("tiers".into()),
        })
        .await
        .expect("apply");
    assert_eq!(v.version, 2, "version 1 is the default set");
    let mut it = tokens.into_iter();
    People {
        dev: it.next().unwrap(),
        lead: it.next().unwrap(),
        sec1: it.next().unwrap(),
        sec2: it.next().unwrap(),
        oncall: it.next().unwrap(),
        outsider: it.next().unwrap(),
    }
}

#[tokio::test]
async fn policies_decide_requests_with_tiers_and_limits() {
    let s = Server::start();
    let p = setup(&s).await;

    // Auto-approved by policy, with the policy named.
    let d = p
        .dev
        .create_request(&req("web1", "docker", "20m", "build"))
        .await
        .unwrap();
    assert_eq!(d.request.state, RequestState::Approved);
    assert_eq!(d.request.policy.as_deref(), Some("dev-docker"));
    assert!(d.grant.is_some());
    // The policy's max duration is enforced: longer is a recorded denial naming the policy.
    let r = p
        .dev
        .create_request(&req("web1", "docker", "45m", "build"))
        .await
        .unwrap()
        .request;
    assert_eq!(r.state, RequestState::Denied);
    assert!(
        r.decision_reason
            .as_deref()
            .unwrap_or("")
            .contains("maximum of dev-docker"),
        "{r:?}"
    );

    // Not a developer: no policy permits, and the denial says so.
    let r = p
        .outsider
        .create_request(&req("web1", "docker", "10m", "curious"))
        .await
        .unwrap();
    assert_eq!(r.request.state, RequestState::Denied);
    assert!(
        r.request
            .decision_reason
            .as_deref()
            .unwrap_or("")
            .contains("no policy permits"),
        "{:?}",
        r.request
    );

    // Root on prod: lead first, then two of security.
    let r = p
        .dev
        .create_request(&req("web1", "root", "30m", "patch"))
        .await
        .unwrap()
        .request;
    assert_eq!(r.state, RequestState::Pending);
    assert_eq!(r.approvals_required, 3);
    assert_eq!(r.policy.as_deref(), Some("dev-prod-root"));
    assert_eq!(
        r.approval_tiers,
        vec![
            ApprovalTier {
                group: Some("leads".into()),
                required: 1
            },
            ApprovalTier {
                group: Some("security".into()),
                required: 2
            }
        ]
    );
    // Security cannot go before the lead; outsiders and admins without the right group can't approve.
    let e = p
        .sec1
        .approve_request(r.id, &Decide::default())
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(403));
    assert!(e.to_string().contains("group leads"), "{e}");
    let e = p
        .outsider
        .approve_request(r.id, &Decide::default())
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(403));
    assert!(
        e.to_string().contains("no policy lets outsider approve"),
        "{e}"
    );
    // Approvers see what waits for them, and only that.
    let mine = p
        .lead
        .list_requests(&RequestQuery {
            approvable: Some(true),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(mine.iter().map(|r| r.id).collect::<Vec<_>>(), vec![r.id]);
    assert!(
        p.sec1
            .list_requests(&RequestQuery {
                approvable: Some(true),
                ..Default::default()
            })
            .await
            .unwrap()
            .is_empty()
    );

    let d = p
        .lead
        .approve_request(
            r.id,
            &Decide {
                comment: Some("ok".into()),
            },
        )
        .await
        .unwrap();
    assert_eq!(d.request.state, RequestState::Pending);
    assert!(d.grant.is_none());
    let e = p
        .lead
        .approve_request(r.id, &Decide::default())
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(409), "twice: {e}");
    let d = p
        .sec1
        .approve_request(r.id, &Decide::default())
        .await
        .unwrap();
    assert_eq!(
        d.request.state,
        RequestState::Pending,
        "one of two security approvals"
    );
    let d = p
        .sec2
        .approve_request(r.id, &Decide::default())
        .await
        .unwrap();
    assert_eq!(d.request.state, RequestState::Approved);
    assert!(d.grant.is_some());
    let detail = p.dev.get_request(r.id).await.unwrap();
    let tiers: Vec<(String, u32)> = detail
        .approvals
        .iter()
        .map(|a| (a.approver.clone(), a.tier))
        .collect();
    assert_eq!(
        tiers,
        vec![("lead".into(), 0), ("sec1".into(), 1), ("sec2".into(), 1)]
    );

    // Over the role's (and the policy's) 1h for root on prod.
    let e = p
        .dev
        .create_request(&req("web1", "root", "2h", "long"))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(422));
}

#[tokio::test]
async fn bad_policies_are_refused_and_the_old_set_stays() {
    let s = Server::start();
    let p = setup(&s).await;
    let admin = s.admin();
    let before = admin.policies().await.unwrap();

    let cases = [
        ("syntax", "permit (principal, action, resource"),
        (
            "schema",
            r#"permit (principal, action == Pedm::Action::"request", resource) when { resource.colour == "red" };"#,
        ),
        (
            "entity",
            r#"permit (principal == Pedm::Robot::"r2", action == Pedm::Action::"request", resource);"#,
        ),
        (
            "annotations",
            r#"@auto_approve("true") @approvals("2") permit (principal, action == Pedm::Action::"request", resource);"#,
        ),
    ];
    for (what, text) in cases {
        let e = admin
            .apply_policies(&ApplyPolicies {
                sources: vec![src("bad.cedar", text)],
                comment: None,
            })
            .await
            .unwrap_err();
        assert_eq!(e.status(), Some(422), "{what}: {e}");
    }
    // Over the 1 MiB policy limit: refused before parsing, naming the limit.
    let big = "// x\n".repeat(300_000);
    let e = admin
        .apply_policies(&ApplyPolicies {
            sources: vec![src("big.cedar", &big)],
            comment: None,
        })
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(400), "{e}");
    assert!(e.to_string().contains("limit is 1048576"), "{e}");
    // A 10 MB file is refused by the CLI before anything is sent.
    let dir = tempfile::tempdir().unwrap();
    let huge = dir.path().join("huge.cedar");
    std::fs::write(&huge, "// x\n".repeat(2_000_000)).unwrap();
    let o = s.cli(&s.admin_token, &["policy", "apply", huge.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("limited to 1 MiB"), "{}", stderr(&o));
    // A set that would lock the applying admin out is refused.
    let e = admin
        .apply_policies(&ApplyPolicies {
            sources: vec![src(
                "lock.cedar",
                r#"permit (principal, action == Pedm::Action::"request", resource);"#,
            )],
            comment: None,
        })
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(422), "{e}");
    assert!(e.to_string().contains("lock you out"), "{e}");
    assert_eq!(
        admin.policies().await.unwrap(),
        before,
        "old set still in force"
    );
    // ...and still decides.
    assert_eq!(
        p.dev
            .create_request(&req("web1", "docker", "10m", "x"))
            .await
            .unwrap()
            .request
            .state,
        RequestState::Approved
    );
    let rejected = admin
        .audit_events(&AuditQuery {
            action: Some("policy.rejected".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        rejected.len(),
        4,
        "each set refused by the engine is recorded"
    );
    let applied = admin
        .audit_events(&AuditQuery {
            action: Some("policy.applied".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(applied.len(), 2);
    let diff = applied[1].data["diff"].as_str().unwrap();
    assert!(
        diff.contains("+@id(\"dev-prod-root\")") && diff.contains("b/prod.cedar"),
        "{diff}"
    );
    assert_eq!(admin.policy_versions().await.unwrap().len(), 2);
    // Non-admins cannot apply.
    let e = p
        .dev
        .apply_policies(&ApplyPolicies {
            sources: vec![src("x.cedar", POLICIES)],
            comment: None,
        })
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(403));
}

async fn receiver(secret: &'static str) -> (String, mpsc::UnboundedReceiver<serde_json::Value>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let tx = tx.clone();
            async move {
                let h = |k: &str| {
                    headers
                        .get(k)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string()
                };
                pedm_notify::verify_signature(
                    secret.as_bytes(),
                    &h("x-pedm-timestamp"),
                    &h("x-pedm-signature"),
                    &body,
                    jiff::Timestamp::now(),
                    Duration::from_secs(300),
                )
                .expect("valid signature");
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                let _ = tx.send(v);
                "ok"
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (url, rx)
}

async fn next_of_kind(
    rx: &mut mpsc::UnboundedReceiver<serde_json::Value>,
    kind: &str,
) -> serde_json::Value {
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let v = rx.recv().await.expect("receiver open");
            if v["kind"] == kind {
                return v;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {kind} notification"))
}

#[tokio::test]
async fn break_glass_is_immediate_loud_and_reviewed() {
    let (url, mut rx) = receiver("s3cret-hmac-key").await;
    let s = Server::start_with(Options {
        config: Some(format!(
            "[[notify.webhook]]\nname = \"security\"\nurl = \"{url}\"\nsecret = \"s3cret-hmac-key\"\n"
        )),
        ..Default::default()
    });
    let p = setup(&s).await;

    // A normal pending request notifies approvers.
    let r = p
        .dev
        .create_request(&req("web1", "root", "30m", "patch"))
        .await
        .unwrap()
        .request;
    let n = next_of_kind(&mut rx, "request.pending").await;
    assert_eq!(n["data"]["request"]["id"], r.id.to_string());

    // Break-glass without a break-glass policy for this user is refused.
    let mut bg = req("web1", "root", "20m", "prod is down, INC-9");
    bg.break_glass = true;
    let denied = p.dev.create_request(&bg).await.unwrap().request;
    assert_eq!(denied.state, RequestState::Denied);

    let got = p.oncall.create_request(&bg).await.unwrap();
    assert_eq!(got.request.state, RequestState::Approved);
    assert!(got.request.break_glass);
    assert_eq!(
        got.request.review.as_ref().unwrap().state,
        ReviewState::Open
    );
    let grant = got.grant.expect("granted at once");
    let n = next_of_kind(&mut rx, "break_glass").await;
    assert_eq!(n["severity"], "high");
    assert_eq!(n["data"]["grant"]["id"], grant.id.to_string());
    // Over the break-glass policy's 30m: refused.
    let mut long = bg.clone();
    long.duration = "45m".into();
    let r = p.oncall.create_request(&long).await.unwrap();
    assert_eq!(r.request.state, RequestState::Denied);
    assert!(r.grant.is_none());

    let admin = s.admin();
    let open = admin
        .break_glass(&BreakGlassQuery { open: Some(true) })
        .await
        .unwrap();
    assert_eq!(
        open.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![got.request.id]
    );
    // The comment is mandatory; the user cannot review their own use.
    assert_eq!(
        admin
            .review_break_glass(got.request.id, &Decide::default())
            .await
            .unwrap_err()
            .status(),
        Some(400)
    );
    assert_eq!(
        p.oncall
            .review_break_glass(
                got.request.id,
                &Decide {
                    comment: Some("fine".into())
                }
            )
            .await
            .unwrap_err()
            .status(),
        Some(403)
    );
    let reviewed = admin
        .review_break_glass(
            got.request.id,
            &Decide {
                comment: Some("INC-9 confirmed".into()),
            },
        )
        .await
        .unwrap();
    let review = reviewed.review.unwrap();
    assert_eq!(review.state, ReviewState::Closed);
    assert_eq!(review.reviewed_by.as_deref(), Some("admin"));
    assert!(
        admin
            .break_glass(&BreakGlassQuery { open: Some(true) })
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        admin
            .review_break_glass(
                got.request.id,
                &Decide {
                    comment: Some("again".into())
                }
            )
            .await
            .unwrap_err()
            .status(),
        Some(409)
    );
}

#[tokio::test]
async fn policy_cli_apply_test_and_simulate() {
    let s = Server::start();
    let p = setup(&s).await;
    let t = &s.admin_token;
    let dir = tempfile::tempdir().unwrap();

    // History: dev asks for docker three times (auto) and root once (approved by people).
    for _ in 0..3 {
        p.dev
            .create_request(&req("web1", "docker", "10m", "build"))
            .await
            .unwrap();
    }
    let r = p
        .dev
        .create_request(&req("web1", "root", "10m", "patch"))
        .await
        .unwrap()
        .request;
    p.lead
        .approve_request(r.id, &Decide::default())
        .await
        .unwrap();
    p.sec1
        .approve_request(r.id, &Decide::default())
        .await
        .unwrap();
    p.sec2
        .approve_request(r.id, &Decide::default())
        .await
        .unwrap();

    // A candidate that stops auto-approving docker.
    let candidate = POLICIES.replace(
        "@auto_approve(\"true\")\n@max_duration(\"30m\")",
        "@approvals(\"leads:1\")\n@max_duration(\"30m\")",
    );
    std::fs::create_dir(dir.path().join("candidate")).unwrap();
    std::fs::write(dir.path().join("candidate/prod.cedar"), &candidate).unwrap();
    let cand = dir.path().join("candidate");
    let o = s.cli(
        t,
        &[
            "--json",
            "policy",
            "simulate",
            "--policies",
            cand.to_str().unwrap(),
            "--since",
            "1h",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let report: SimulationReport = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report.evaluated, 4);
    assert_eq!(report.changes.len(), 3, "{report:?}");
    assert!(
        report
            .changes
            .iter()
            .all(|c| c.recorded == "auto_approve" && c.candidate == "approval(leads:1)")
    );
    assert!(
        report
            .unused_eligibilities
            .contains(&"oncall-break-glass".to_string()),
        "{report:?}"
    );

    // Policy test cases against local files: pass, then a failing expectation exits 1.
    let cases = dir.path().join("cases.toml");
    std::fs::write(
        &cases,
        r#"
[[case]]
name = "devs get docker at once"
principal = { user = "dev", groups = ["devs"] }
target = { name = "web1", kind = "host", labels = { env = "prod" } }
role = { name = "docker" }
context = { source_ip = "127.0.0.1", duration = "30m" }
expect = "auto_approve"

[[case]]
name = "root on prod needs a lead then two of security"
principal = { user = "dev", groups = ["devs"] }
target = { name = "web1", kind = "host", labels = { env = "prod" } }
role = { name = "root" }
context = { source_ip = "127.0.0.1", duration = "30m" }
expect = "needs_approval"
approvals = "leads:1, security:2"

[[case]]
name = "not from outside the office"
principal = { user = "dev", groups = ["devs"] }
target = { name = "web1", kind = "host", labels = { env = "prod" } }
role = { name = "docker" }
context = { source_ip = "203.0.113.9", duration = "30m" }
expect = "deny"
policy = "office-network-only"
"#,
    )
    .unwrap();
    let prod = dir.path().join("prod.cedar");
    std::fs::write(&prod, POLICIES).unwrap();
    let o = s.cli(
        t,
        &[
            "policy",
            "test",
            cases.to_str().unwrap(),
            "--policies",
            prod.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}\n{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("3 passed, 0 failed"), "{}", stdout(&o));
    // Against the set in force on the server (same policies): passes too.
    let o = s.cli(t, &["policy", "test", cases.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    // Against the candidate, the first case fails.
    let o = s.cli(
        t,
        &[
            "policy",
            "test",
            cases.to_str().unwrap(),
            "--policies",
            cand.to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("FAIL  devs get docker at once"),
        "{}",
        stdout(&o)
    );

    // Apply from the CLI; list and show.
    let o = s.cli(
        t,
        &[
            "policy",
            "apply",
            cand.to_str().unwrap(),
            "--comment",
            "tighten docker",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("policy version 3"), "{}", stdout(&o));
    let o = s.cli(t, &["policy", "list"]);
    assert!(stdout(&o).contains("tighten docker"), "{}", stdout(&o));
    let o = s.cli(t, &["policy", "show", "2"]);
    assert!(
        stdout(&o).contains("@auto_approve(\"true\")"),
        "{}",
        stdout(&o)
    );
    let r = p
        .dev
        .create_request(&req("web1", "docker", "10m", "build"))
        .await
        .unwrap()
        .request;
    assert_eq!(
        r.state,
        RequestState::Pending,
        "the new version is in force"
    );
    let bad = dir.path().join("bad.cedar");
    std::fs::write(&bad, "permit (principal, action, resource").unwrap();
    let o = s.cli(t, &["policy", "apply", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("bad.cedar"),
        "names the file: {}",
        stderr(&o)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_instance_follows_applied_policies() {
    let Some(pg) = pedm_store::testing::TestPostgres::start_or_skip() else {
        return;
    };
    let db = pg.fresh_database("policies").expect("database");
    let a = Server::start_with(Options {
        database_url: Some(db.clone()),
        ..Default::default()
    });
    let b = Server::start_with(Options {
        database_url: Some(db),
        admin_token: Some(a.admin_token.clone()),
        ..Default::default()
    });
    let p = setup(&a).await;
    let dev_on_b = b.client(&user_with_token(&a, "dev2", false).await);
    a.admin().add_group_member("devs", "dev2").await.unwrap();
    let _ = p;
    // Applied through A (in setup); B picks it up within its follow interval.
    let r = eventually(
        Duration::from_secs(20),
        "policy version 2 on the second instance",
        || async {
            // Under the old (default) policies a second live docker grant is refused.
            let r = dev_on_b
                .create_request(&req("web1", "docker", "10m", "x"))
                .await
                .ok()?
                .request;
            (r.policy.as_deref() == Some("dev-docker")).then_some(r)
        },
    )
    .await;
    assert_eq!(r.state, RequestState::Approved);
}
