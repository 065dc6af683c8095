//! A request's risk score (how unusual it is for its requester), computed by the server from
//! the requester's own history, shown to approvers and read by policy as `context.risk`.

mod common;

use common::*;
use pedm_api::*;

const RISKY_NEEDS_TWO: &str = r#"
@id("risky-needs-two")
@approvals("2")
permit (principal, action == Pedm::Action::"request", resource)
when { context.risk >= 40 };
"#;

fn codes(r: &Request) -> Vec<String> {
    r.context
        .risk
        .as_ref()
        .expect("every request is scored")
        .reasons
        .iter()
        .map(|x| x.code.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn risk_grows_with_what_is_unusual_and_policy_asks_more_of_risky_requests() {
    let (hook, mut rx) = receiver().await;
    let s = Server::start_with(Options {
        config: Some(format!(
            "[policy]\nrisk_alert_score = 40\n\n\
             [[notify.webhook]]\nname = \"soc\"\nurl = \"{hook}\"\nsecret = \"k\"\n\
             format = \"generic\"\nkinds = [\"request.risky\"]\n"
        )),
        ..Default::default()
    });
    let a = s.admin();
    a.create_target(&CreateTarget {
        name: "db1".into(),
        kind: TargetKind::Host,
        description: None,
        labels: Default::default(),
    })
    .await
    .unwrap();
    a.create_role("db1", &CreateRole::new("admin", "8h"))
        .await
        .unwrap();
    add_policy(&a, "risk.cedar", RISKY_NEEDS_TWO).await;
    let alice = s.client(&user_with_token(&s, "alice", false).await);

    // The first request on db1: new target, and no trusted device (35 < 40: one approval).
    let r1 = alice
        .create_request(&req("db1", "admin", "30m", "first look"))
        .await
        .unwrap()
        .request;
    assert_eq!(codes(&r1), ["first_on_target", "untrusted_device"]);
    assert_eq!(r1.context.risk.as_ref().unwrap().score, 35);
    assert_eq!(r1.approvals_required, 1, "{r1:?}");
    let g = a
        .approve_request(r1.id, &Decide::default())
        .await
        .unwrap()
        .grant
        .expect("granted");
    a.revoke_grant(
        g.id,
        &Reason {
            reason: Some("done".into()),
        },
    )
    .await
    .unwrap();

    // Two more of the same, both denied.
    for _ in 0..2 {
        let r = alice
            .create_request(&req("db1", "admin", "30m", "again"))
            .await
            .unwrap()
            .request;
        assert_eq!(codes(&r), ["untrusted_device"], "db1 is known now");
        a.deny_request(
            r.id,
            &Decide {
                comment: Some("not now".into()),
            },
        )
        .await
        .unwrap();
    }

    // Then four hours (she asks for 30 minutes), right after two denials: 40, and the
    // risk-based permit asks for two approvals.
    let r4 = alice
        .create_request(&req("db1", "admin", "4h", "need longer"))
        .await
        .unwrap()
        .request;
    assert_eq!(
        codes(&r4),
        [
            "longer_than_usual",
            "untrusted_device",
            "denied_then_retried"
        ]
    );
    let risk = r4.context.risk.clone().unwrap();
    assert_eq!(risk.score, 40);
    assert_eq!(r4.approvals_required, 2, "{r4:?}");
    assert_eq!(r4.policy.as_deref(), Some("risky-needs-two"));

    // It reached the alert score: a high-severity notice, the first one (35 and 10 raised
    // none), and the score is in the audit record.
    let n = rx.recv().await.expect("a notification");
    assert_eq!(n["kind"], "request.risky", "{n}");
    assert_eq!(n["severity"], "high");
    assert_eq!(n["data"]["request"], r4.id.to_string(), "{n}");
    assert_eq!(n["data"]["risk"]["score"], 40);
    let created = audit_of(&s, "request.created").await;
    let last = created.last().expect("request.created");
    assert_eq!(last.data["risk"]["score"], 40, "{:?}", last.data);

    // Approvers see it with its reasons.
    let o = s.cli(&s.admin_token, &["request", "show", &r4.id.to_string()]);
    let out = stdout(&o);
    assert!(
        out.contains("40: 4h asked; they usually ask for 30m of this role"),
        "{out}"
    );
    let page = console_page(&s, &s.admin_token, &format!("/ui/requests/{}", r4.id)).await;
    assert!(page.contains("id=\"risk\">40: 4h asked"), "{page}");
}
