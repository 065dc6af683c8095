//! Reminders and escalation of requests nobody answers: each step once, across two pedmd
//! instances on one PostgreSQL; escalation lets the escalation group decide.

mod common;

use common::*;
use pedm_api::{Decide, RequestState};
use pedm_store::testing::TestPostgres;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reminder_then_escalation_once_across_two_instances() {
    let Some(pg) = TestPostgres::start_or_skip() else {
        return;
    };
    let (hook, mut received) = receiver().await;
    let config = format!(
        "[[notify.webhook]]\nname = \"approvers\"\nurl = \"{hook}\"\nkinds = [\"request.\"]\n"
    );
    let db = pg.fresh_database("follow_up").expect("database");
    let a = Server::start_with(Options {
        database_url: Some(db.clone()),
        config: Some(config.clone()),
        ..Default::default()
    });
    let b = Server::start_with(Options {
        database_url: Some(db),
        config: Some(config),
        admin_token: Some(a.admin_token.clone()),
        ..Default::default()
    });
    standard_targets(&a).await;
    let admin = a.admin();
    // Requests needing approval wait for security; nobody answering, approvers are reminded
    // after 2 s and the request goes to the leads after 4 s.
    edit_approval_policy(
        &admin,
        "follow-ups",
        &[(
            "@approvals(\"1\")",
            "@approvals(\"security:1\")\n@remind_after(\"2s\")\n@escalate_after(\"4s\")\n\
             @escalate_to(\"leads\")",
        )],
    )
    .await;
    let alice = a.client(&user_with_token(&a, "alice", false).await);
    let lead = b.client(&user_with_token(&a, "lead", true).await);
    for (group, member) in [("security", "sec"), ("leads", "lead")] {
        if member != "lead" {
            user_with_token(&a, member, true).await;
        }
        admin
            .create_group(&pedm_api::CreateGroup {
                name: group.into(),
                description: None,
            })
            .await
            .unwrap();
        admin.add_group_member(group, member).await.unwrap();
    }

    let r = alice
        .create_request(&req(
            "web1",
            "root",
            "10m",
            "patch before the window closes",
        ))
        .await
        .unwrap()
        .request;
    assert_eq!(
        r.follow_up.as_ref().and_then(|f| f.escalate_to.as_deref()),
        Some("leads")
    );
    // Before the escalation a lead is not an approver of this step.
    let e = lead
        .approve_request(r.id, &Decide::default())
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(403), "{e}");
    assert!(e.to_string().contains("group security"), "{e}");

    // Both instances try each step; exactly one takes it (the other finds it taken).
    let subject = format!("request:{}", r.id);
    for step in ["request.reminded", "request.escalated"] {
        eventually(Duration::from_secs(60), step, || async {
            let done = metric(&a, "pedm_request_follow_ups_total", step).await
                + metric(&b, "pedm_request_follow_ups_total", step).await;
            let skipped = metric(&a, "pedm_request_follow_ups_taken_elsewhere_total", step).await
                + metric(&b, "pedm_request_follow_ups_taken_elsewhere_total", step).await;
            (done + skipped >= 2.0).then_some(())
        })
        .await;
        let events: Vec<_> = audit_of(&a, step)
            .await
            .into_iter()
            .filter(|e| e.subject.as_deref() == Some(subject.as_str()))
            .collect();
        assert_eq!(events.len(), 1, "{step}: {events:?}");
        assert_eq!(events[0].data["waiting_for"], "1 of security");
    }
    let escalated = wait_event(&a, "request.escalated", &subject).await;
    assert_eq!(escalated.data["escalated_to"], "leads");
    // The approvers' webhook heard each step once (whichever instance took it).
    let mut kinds = vec![];
    while kinds.len() < 3 {
        let n = tokio::time::timeout(Duration::from_secs(30), received.recv())
            .await
            .expect("a notification")
            .expect("the receiver runs");
        kinds.push(n["kind"].as_str().unwrap_or_default().to_string());
    }
    assert_eq!(
        kinds,
        ["request.pending", "request.reminded", "request.escalated"]
    );

    // Escalated: the lead may now decide the step it waits for.
    let d = lead
        .approve_request(r.id, &Decide::default())
        .await
        .unwrap();
    assert_eq!(d.request.state, RequestState::Approved);
    assert!(d.grant.is_some());
}
