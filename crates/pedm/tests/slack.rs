//! Approving from Slack, end to end: pedmd posts each request waiting for approval to a Slack
//! channel with Approve/Deny buttons and keeps that message up to date; the clicks come back
//! signed and go through the same decision path as the API.
//!
//! Slack itself cannot be reached from the test machine, so the suite starts a
//! protocol-faithful stand-in (`common::slack`, built from Slack's Web API, Block Kit and
//! request-signing documentation) and sends signed payloads shaped as Slack documents them.

mod common;

use common::idp::{SECRET, corp_idp, login_code};
use common::slack::{
    CHANNEL, FakeSlack, SIGNING_SECRET, TEAM, button_click, deny_submission, request_submission,
    slash_command,
};
use common::*;
use pedm_api::{Outcome, Reason, RequestState, SlackLink};
use serde_json::Value;
use std::time::Duration;

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

fn form(v: &[(String, String)]) -> Vec<(&str, &str)> {
    v.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

fn text_of(blocks: &Value) -> String {
    blocks.to_string()
}

/// The code a `/pedm link` answer carries.
fn link_code(answer: &str) -> String {
    let v: Value = serde_json::from_str(answer).expect("a JSON answer");
    assert_eq!(v["response_type"], "ephemeral", "{v}");
    let text = v["text"].as_str().unwrap_or_default();
    text.split_whitespace()
        .find(|w| w.starts_with("pedm-slack."))
        .map(|w| w.trim_end_matches('`').to_string())
        .unwrap_or_else(|| panic!("no code in {text}"))
}

#[tokio::test]
async fn approve_and_deny_from_slack() {
    let slack = FakeSlack::start().await;
    let s = Server::start_with(Options {
        config: Some(slack.config()),
        ..Default::default()
    });
    standard_targets(&s).await;
    let alice_token = user_with_token(&s, "alice", false).await;
    let bob_token = user_with_token(&s, "bob", true).await;
    let alice = s.client(&alice_token);
    let bob = s.client(&bob_token);
    let interactions = format!("{}/integrations/slack/interactions", s.url);
    let commands = format!("{}/integrations/slack/commands", s.url);

    // bob links his Slack user: /pedm link in Slack, then the code in the CLI.
    let (status, answer) = slack
        .send(
            &commands,
            &slash_command("U0BOB", "link", &slack.response_url()),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let bob_code = link_code(&answer);
    let out = s.cli(&bob_token, &["link", "slack", &bob_code]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("linked Slack user U0BOB"),
        "{}",
        stdout(&out)
    );
    // The same code cannot link the Slack user to someone else, and a forged one is refused
    // and recorded.
    let e = alice
        .link_slack(&SlackLink {
            code: bob_code.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(409), "{e}");
    let forged = bob_code.replace("U0BOB", "U0EVE");
    let e = alice
        .link_slack(&SlackLink { code: forged })
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(400), "{e}");
    assert!(e.to_string().contains("not valid for this server"), "{e}");
    let refused = audit_of(&s, "slack.refused").await;
    assert!(
        refused.iter().any(|e| e.actor == "anonymous"
            && e.data["caller"] == "alice"
            && e.data["reason"]
                .as_str()
                .unwrap_or_default()
                .contains("link code")),
        "{refused:?}"
    );
    // alice links hers through the API.
    let (_, answer) = slack
        .send(
            &commands,
            &slash_command("U0ALICE", "link", &slack.response_url()),
        )
        .await;
    let linked = alice
        .link_slack(&SlackLink {
            code: link_code(&answer),
        })
        .await
        .expect("alice links");
    assert_eq!(
        (
            linked.team.as_str(),
            linked.slack_user.as_str(),
            linked.user.as_str()
        ),
        (TEAM, "U0ALICE", "alice")
    );

    // A request that needs approval is posted with its facts and the two buttons.
    let mut r = req("web1", "root", "30m", "patch <!channel> *now*");
    r.ticket = Some("CHG-7".into());
    let id = alice.create_request(&r).await.unwrap().request.id;
    let posted = slack
        .wait_blocks(0, "chat.postMessage", &id.to_string())
        .await;
    assert_eq!(posted.body["channel"], CHANNEL);
    let blocks = text_of(&posted.body["blocks"]);
    for fact in [
        "alice",
        "web1",
        "root",
        "30m",
        "CHG-7",
        "pedm_approve",
        "pedm_deny",
        "Waiting for 1 of any approver",
        // Her first elevation on web1: approvers see how unusual it is.
        "Risk ",
        "first elevation on web1",
    ] {
        assert!(blocks.contains(fact), "{fact} missing from {blocks}");
    }
    // What alice typed is shown as plain text; the fallback text is escaped mrkdwn.
    assert!(
        !posted.body["text"]
            .as_str()
            .unwrap_or_default()
            .contains('<')
    );
    let calls_after_post = slack.calls().len();
    let ts = posted.answer["ts"]
        .as_str()
        .expect("a message ts")
        .to_string();
    let approve = |user: &str, url: &str| {
        let p = button_click(user, "pedm_approve", &id.to_string(), &ts, url).to_string();
        vec![("payload".to_string(), p)]
    };

    // A click signed with another secret, or signed too long ago, is refused and recorded.
    let (status, body, _) = slack
        .post_signed(
            &interactions,
            &form(&approve("U0BOB", &slack.response_url())),
            "not-the-secret",
            now(),
        )
        .await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("signature does not match"), "{body}");
    let (status, body, _) = slack
        .post_signed(
            &interactions,
            &form(&approve("U0BOB", &slack.response_url())),
            SIGNING_SECRET,
            now() - 400,
        )
        .await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("stale"), "{body}");
    let failed = audit_of(&s, "auth.failed").await;
    assert!(
        failed.iter().any(|e| e.data["kind"] == "slack"
            && e.data["reason"]
                .as_str()
                .unwrap_or_default()
                .contains("signature")),
        "{failed:?}"
    );

    // A Slack user nobody linked is told privately, and it is recorded.
    let url = slack.response_url();
    let (status, _) = slack
        .send(&interactions, &form(&approve("U0CAROL", &url)))
        .await;
    assert_eq!(status, 200);
    let reply = slack
        .wait_call(0, "the refusal to carol", |c| url.ends_with(&c.method))
        .await;
    assert_eq!(reply.body["response_type"], "ephemeral");
    assert!(
        reply.body["text"]
            .as_str()
            .unwrap_or_default()
            .contains("not linked"),
        "{reply:?}"
    );
    let ev = wait_event(&s, "slack.refused", &format!("request:{id}")).await;
    assert_eq!(ev.outcome, Outcome::Denied);
    assert_eq!(ev.data["caller"], format!("slack:{TEAM}/U0CAROL"));

    // alice cannot approve her own request from Slack either: the core refuses and records.
    let url = slack.response_url();
    slack
        .send(&interactions, &form(&approve("U0ALICE", &url)))
        .await;
    let reply = slack
        .wait_call(0, "the refusal to alice", |c| url.ends_with(&c.method))
        .await;
    assert!(
        reply.body["text"]
            .as_str()
            .unwrap_or_default()
            .contains("own request"),
        "{reply:?}"
    );
    let self_approval = wait_event(&s, "request.approve", &format!("request:{id}")).await;
    assert_eq!(
        (self_approval.actor.as_str(), self_approval.outcome),
        ("alice", Outcome::Denied)
    );
    assert_eq!(
        alice.get_request(id).await.unwrap().request.state,
        RequestState::Pending
    );

    // bob approves with one click: granted, and the message says so without buttons.
    let bob_click =
        serde_urlencoded::to_string(form(&approve("U0BOB", &slack.response_url()))).unwrap();
    let at = now();
    let signed = vec![
        ("X-Slack-Request-Timestamp".to_string(), at.to_string()),
        (
            "X-Slack-Signature".to_string(),
            pedm_notify::slack::sign(SIGNING_SECRET.as_bytes(), at, bob_click.as_bytes()),
        ),
    ];
    let (status, body) = slack.post_raw(&interactions, &bob_click, &signed).await;
    assert_eq!(status, 200, "{body}");
    let detail = bob.get_request(id).await.unwrap();
    assert_eq!(detail.request.state, RequestState::Approved);
    assert_eq!(detail.approvals[0].approver, "bob");
    let grant = detail.request.grant_id.expect("a grant");
    let updated = slack
        .wait_blocks(calls_after_post, "chat.update", "Granted to alice")
        .await;
    assert_eq!(
        (
            updated.body["channel"].as_str(),
            updated.body["ts"].as_str()
        ),
        (Some(CHANNEL), Some(ts.as_str()))
    );
    let blocks = text_of(&updated.body["blocks"]);
    assert!(blocks.contains("Approved by bob"), "{blocks}");
    assert!(!blocks.contains("pedm_approve"), "{blocks}");

    // The very same signed click again is a replay: refused and recorded.
    let (status, body) = slack.post_raw(&interactions, &bob_click, &signed).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("replayed"), "{body}");
    let failed = audit_of(&s, "auth.failed").await;
    assert!(
        failed.iter().any(|e| e.data["kind"] == "slack"
            && e.data["reason"]
                .as_str()
                .unwrap_or_default()
                .contains("replayed")),
        "{failed:?}"
    );

    // Releasing the grant shows on the message too.
    let n = slack.calls().len();
    alice
        .release_grant(grant, &Reason::default())
        .await
        .unwrap();
    slack.wait_blocks(n, "chat.update", "Grant released").await;

    // Deny asks for a reason in a modal; its submission denies with that reason.
    let id2 = alice
        .create_request(&req("web1", "root", "10m", "again"))
        .await
        .unwrap()
        .request
        .id;
    let n = slack.calls().len();
    slack
        .wait_blocks(0, "chat.postMessage", &id2.to_string())
        .await;
    let click = button_click(
        "U0BOB",
        "pedm_deny",
        &id2.to_string(),
        &ts,
        &slack.response_url(),
    )
    .to_string();
    let (status, _) = slack
        .send(&interactions, &[("payload", click.as_str())])
        .await;
    assert_eq!(status, 200);
    let modal = slack
        .wait_call(n, "the deny modal", |c| c.method == "views.open")
        .await;
    assert_eq!(modal.body["view"]["private_metadata"], id2.to_string());
    assert_eq!(
        alice.get_request(id2).await.unwrap().request.state,
        RequestState::Pending
    );
    let submit =
        deny_submission("U0BOB", &id2.to_string(), "wait for the <b>window</b>").to_string();
    let (status, body) = slack
        .send(&interactions, &[("payload", submit.as_str())])
        .await;
    assert_eq!((status, body.as_str()), (200, ""));
    let denied = alice.get_request(id2).await.unwrap();
    assert_eq!(denied.request.state, RequestState::Denied);
    assert_eq!(
        denied.approvals[0].comment.as_deref(),
        Some("wait for the <b>window</b>")
    );
    slack
        .wait_blocks(n, "chat.update", "Denied by bob: wait for")
        .await;
    // An empty reason is refused in the modal itself (pedm requires one).
    let id3 = alice
        .create_request(&req("web1", "root", "10m", "third"))
        .await
        .unwrap()
        .request
        .id;
    let submit = deny_submission("U0BOB", &id3.to_string(), "  ").to_string();
    let (_, body) = slack
        .send(&interactions, &[("payload", submit.as_str())])
        .await;
    let v: Value = serde_json::from_str(&body).expect("a modal error answer");
    assert_eq!(v["response_action"], "errors", "{v}");
    assert!(
        v["errors"]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("say why"),
        "{v}"
    );
    assert_eq!(
        alice.get_request(id3).await.unwrap().request.state,
        RequestState::Pending
    );

    // Requesters can ask from Slack: /pedm request.
    let (_, answer) = slack
        .send(
            &commands,
            &slash_command(
                "U0ALICE",
                "request web1 docker 10m deploy the hotfix",
                &slack.response_url(),
            ),
        )
        .await;
    assert!(answer.contains("granted until"), "{answer}");
    let (_, answer) = slack
        .send(
            &commands,
            &slash_command(
                "U0CAROL",
                "request web1 docker 10m x",
                &slack.response_url(),
            ),
        )
        .await;
    assert!(answer.contains("not linked"), "{answer}");
}

#[tokio::test]
async fn slack_down_is_retried_and_counted() {
    let slack = FakeSlack::start().await;
    let (hook, mut received) = receiver().await;
    let s = Server::start_with(Options {
        config: Some(format!(
            "[[notify.webhook]]\nname = \"audit-hook\"\nurl = \"{hook}\"\n{}",
            slack.config()
        )),
        ..Default::default()
    });
    standard_targets(&s).await;
    let alice = s.client(&user_with_token(&s, "alice", false).await);
    slack.go_down_for(2);
    let id = alice
        .create_request(&req("web1", "root", "30m", "while Slack is down"))
        .await
        .expect("the request path does not wait for Slack")
        .request
        .id;
    slack
        .wait_blocks(0, "chat.postMessage", &id.to_string())
        .await;
    let refused = slack
        .calls()
        .iter()
        .filter(|c| c.method.contains("refused: down"))
        .count();
    assert_eq!(refused, 2);
    let retried = metric(
        &s,
        "pedm_slack_calls_total",
        "method=\"chat.postMessage\",outcome=\"retry\"",
    )
    .await;
    assert_eq!(retried, 2.0);

    // `pedm notify status` shows both channels with what they did (counted once each
    // delivery is answered); only for auditors.
    received.recv().await.expect("the webhook's notification");
    let status = || {
        let out = s.cli(&s.admin_token, &["--json", "notify", "status"]);
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_str::<Vec<pedm_api::ChannelStatus>>(&stdout(&out)).unwrap()
    };
    let rows = eventually(
        Duration::from_secs(30),
        "both deliveries counted",
        || async {
            let rows = status();
            (rows.iter().filter(|r| r.delivered == 1).count() == 2).then_some(rows)
        },
    )
    .await;
    let row = |name: &str| {
        rows.iter()
            .find(|r| r.name == name)
            .unwrap_or_else(|| panic!("{name} missing from {rows:?}"))
    };
    let corp = row("corp");
    assert_eq!(
        (corp.kind.as_str(), corp.retries, corp.failed),
        ("slack", 2, 0)
    );
    let hook = row("audit-hook");
    assert_eq!((hook.kind.as_str(), hook.failed), ("webhook", 0));
    let e = alice.notify_status().await.unwrap_err();
    assert_eq!(e.status(), Some(403), "{e}");
}

/// The three ways Slack meets people without a `/pedm link`: a Slack user acts as the pedm
/// user whose address the identity provider verified (when Slack confirms it is theirs),
/// `/pedm request` without a reason opens a form, and approvers get the request (and its
/// reminder) as a direct message that follows the request like the channel's.
#[tokio::test]
async fn verified_addresses_request_form_and_direct_messages() {
    let idp = corp_idp();
    let slack = FakeSlack::start().await;
    let s = Server::start_with(Options {
        config: Some(format!(
            "{}{}dm_approvers = true\nmap_by_email = true\n",
            idp.pedmd_config(),
            slack.config()
        )),
        env: vec![("PEDM_TEST_OIDC_SECRET".into(), SECRET.into())],
        ..Default::default()
    });
    standard_targets(&s).await;
    let admin = s.admin();
    edit_approval_policy(
        &admin,
        "remind in Slack",
        &[(
            "@approvals(\"1\")",
            "@approvals(\"1\")\n@remind_after(\"2s\")",
        )],
    )
    .await;
    // alice and carol sign in through the identity provider (which verifies their addresses);
    // carol approves. dave's address was typed by an admin: the provider never vouched for it.
    for who in ["alice", "carol"] {
        let home = tempfile::tempdir().unwrap();
        let (ok, _, err) = login_code(&s, &idp, home.path(), who).await;
        assert!(ok, "{who} signs in: {err}");
    }
    let make_admin = pedm_api::UpdateUser {
        admin: Some(true),
        ..Default::default()
    };
    admin.update_user("carol", &make_admin).await.unwrap();
    user_with_token(&s, "dave", true).await;
    let dave_email = pedm_api::UpdateUser {
        email: Some("dave@example.com".into()),
        ..Default::default()
    };
    admin.update_user("dave", &dave_email).await.unwrap();
    slack.add_user("U0ALICE", TEAM, "alice@example.com", true);
    slack.add_user("U0CAROL", TEAM, "carol@example.com", true);
    slack.add_user("U0DAVE", TEAM, "dave@example.com", true);
    slack.add_user("U0MAL", TEAM, "bob@example.com", false);
    slack.add_user("W0GUEST", "T0OTHER", "carol@example.com", true);
    let interactions = format!("{}/integrations/slack/interactions", s.url);
    let commands = format!("{}/integrations/slack/commands", s.url);

    // alice, never linked, asks without a reason: a form opens, filled with what she typed.
    let (status, answer) = slack
        .send(
            &commands,
            &slash_command("U0ALICE", "request web1 root 30m", &slack.response_url()),
        )
        .await;
    assert_eq!((status, answer.as_str()), (200, ""));
    let opened = slack
        .wait_call(0, "the request form", |c| c.method == "views.open")
        .await;
    assert_eq!(opened.body["view"]["callback_id"], "pedm_request");
    let initial =
        |block: usize| opened.body["view"]["blocks"][block]["element"]["initial_value"].clone();
    assert_eq!(
        [initial(0), initial(1), initial(2)],
        ["web1", "root", "30m"]
    );
    assert!(initial(3).is_null(), "no reason was typed");
    let linked = wait_event(&s, "identity.linked", "user:alice").await;
    assert_eq!(
        (
            linked.actor.as_str(),
            &linked.data["via"],
            &linked.data["subject"]
        ),
        (
            "system",
            &serde_json::json!("slack verified email"),
            &serde_json::json!("U0ALICE")
        )
    );

    // A duration pedm cannot read is pointed out on its field; nothing is requested.
    let submit = |duration: &str, why: &str| {
        request_submission("U0ALICE", ["web1", "root", duration, why, "CHG-9"])
    };
    let (status, answer) = slack
        .send(
            &interactions,
            &[("payload", &submit("soon", "patch").to_string())],
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let v: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(v["response_action"], "errors", "{v}");
    assert!(
        v["errors"]["duration"].as_str().unwrap().contains("soon"),
        "{v}"
    );
    assert!(alice_requests(&s).await.is_empty());
    // With a reason, the request is made as alice and the form says so.
    let (status, answer) = slack
        .send(
            &interactions,
            &[(
                "payload",
                &submit("30m", "patch CVE-2026-1 <@U0CAROL>").to_string(),
            )],
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let v: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(v["response_action"], "update", "{v}");
    let requests = alice_requests(&s).await;
    assert_eq!(requests.len(), 1);
    let r = &requests[0];
    assert_eq!(
        (r.state, r.ticket.as_deref(), r.justification.as_str()),
        (
            RequestState::Pending,
            Some("CHG-9"),
            "patch CVE-2026-1 <@U0CAROL>"
        )
    );
    let id = r.id.to_string();
    assert!(v["view"].to_string().contains(&id), "{v}");

    // The channel gets the card, and so does carol, the one approver, directly; alice (the
    // requester) and dave (not an approver) do not.
    let posted = slack.wait_blocks(0, "chat.postMessage", &id).await;
    assert_eq!(posted.body["channel"], CHANNEL);
    let dm = slack
        .wait_call(0, "the direct message to carol", |c| {
            c.method == "chat.postMessage" && c.body["channel"] == "U0CAROL"
        })
        .await;
    assert!(dm.body["blocks"].to_string().contains("pedm_approve"));
    let dm_channel = dm.answer["channel"].as_str().unwrap().to_string();
    let dm_ts = dm.answer["ts"].as_str().unwrap().to_string();
    assert!(dm_channel.starts_with('D'), "{dm_channel}");
    // Two seconds on, the reminder goes to the channel's thread and to carol's message.
    slack
        .wait_call(0, "the reminder in carol's direct message", |c| {
            c.method == "chat.postMessage"
                && c.body["channel"] == dm_channel.as_str()
                && c.body["thread_ts"] == dm_ts.as_str()
        })
        .await;
    assert!(
        !slack.calls().iter().any(|c| c.method == "chat.postMessage"
            && ["U0ALICE", "U0DAVE"].contains(&c.body["channel"].as_str().unwrap_or_default())),
        "only approvers get direct messages"
    );

    // Who Slack cannot vouch for acts as nobody: an unconfirmed address, a guest from another
    // workspace, an address no provider verified.
    for (user, why) in [
        ("U0MAL", "not confirmed"),
        ("W0GUEST", "belongs to workspace"),
        ("U0DAVE", "signs in through the identity provider"),
    ] {
        let url = slack.response_url();
        let click = button_click(user, "pedm_approve", &id, &dm_ts, &url);
        let (status, _) = slack
            .send(&interactions, &[("payload", &click.to_string())])
            .await;
        assert_eq!(status, 200);
        let answered_at = format!("response/{}", url.rsplit('/').next().unwrap());
        let said = slack
            .wait_call(0, "the private refusal", |c| c.method == answered_at)
            .await;
        assert!(
            said.body["text"].as_str().unwrap().contains(why),
            "{user}: {said:?}"
        );
        let refused = audit_of(&s, "slack.refused").await;
        assert!(
            refused
                .iter()
                .any(|e| e.data["caller"] == format!("slack:{TEAM}/{user}")
                    && e.data["reason"].as_str().unwrap_or_default().contains(why)),
            "{user}: {refused:?}"
        );
    }
    assert_eq!(alice_requests(&s).await[0].state, RequestState::Pending);

    // carol approves from her direct message; both messages then show it.
    let url = slack.response_url();
    let click = button_click("U0CAROL", "pedm_approve", &id, &dm_ts, &url);
    let seen = slack.calls().len();
    let (status, _) = slack
        .send(&interactions, &[("payload", &click.to_string())])
        .await;
    assert_eq!(status, 200);
    for channel in [CHANNEL, dm_channel.as_str()] {
        slack
            .wait_call(seen, "the updated card", |c| {
                c.method == "chat.update"
                    && c.body["channel"] == channel
                    && c.body["blocks"].to_string().contains("Approved by carol")
            })
            .await;
    }
    assert_eq!(alice_requests(&s).await[0].state, RequestState::Approved);
    let linked = wait_event(&s, "identity.linked", "user:carol").await;
    assert_eq!(linked.data["subject"], "U0CAROL");
}

async fn alice_requests(s: &Server) -> Vec<pedm_api::Request> {
    s.admin()
        .list_requests(&pedm_api::RequestQuery {
            requester: Some("alice".into()),
            ..Default::default()
        })
        .await
        .unwrap()
}

/// Hostile and malformed Slack callbacks, correctly signed (the signature is checked by the
/// `slack_verify` fuzz target and `notify/tests/signatures.rs`; this is what comes after it):
/// Slack-shaped payloads whose fields are the values pedm acts on or anything else (wrong
/// types, nesting, unicode, a real pending request's id), payloads that are not JSON, and
/// slash commands with any text. None may fail the server (5xx) and, from people no pedm user
/// linked, none may decide, create or change a request.
#[test]
fn hostile_slack_callbacks_never_fail_the_server_and_decide_nothing() {
    use pedm_notify::slack::{APPROVE_ACTION, DENY_ACTION, DENY_VIEW, REQUEST_VIEW};
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestCaseError, TestRunner};
    use serde_json::json;

    let rt = tokio::runtime::Runtime::new().unwrap();
    let (slack, s, pending) = rt.block_on(async {
        let slack = FakeSlack::start().await;
        let s = Server::start_with(Options {
            config: Some(slack.config()),
            ..Default::default()
        });
        standard_targets(&s).await;
        let alice = s.client(&user_with_token(&s, "alice", false).await);
        let r = alice
            .create_request(&req("web1", "root", "30m", "needs an approver"))
            .await
            .unwrap()
            .request;
        assert_eq!(r.state, RequestState::Pending);
        (slack, s, r)
    });
    let interactions = format!("{}/integrations/slack/interactions", s.url);
    let commands = format!("{}/integrations/slack/commands", s.url);

    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON has no NaN", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,40}".prop_map(Value::from),
    ];
    let anything = leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(".{0,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    });
    // A field: one of the values pedm acts on, or anything at all.
    let field = |known: Vec<Value>| {
        prop_oneof![3 => proptest::sample::select(known), 1 => anything.clone()].boxed()
    };
    let id = Value::from(pending.id.to_string());
    let shaped = (
        field(vec!["block_actions".into(), "view_submission".into()]),
        field(vec![TEAM.into(), "T0OTHER".into()]),
        field(vec!["U0NOBODY".into(), "".into()]),
        field(vec![APPROVE_ACTION.into(), DENY_ACTION.into()]),
        field(vec![id.clone(), "not-a-uuid".into()]),
        field(vec![DENY_VIEW.into(), REQUEST_VIEW.into()]),
        field(vec![id, "".into()]),
        field(vec![
            "web1".into(),
            "root".into(),
            "1h".into(),
            "x".repeat(5000).into(),
        ]),
        field(vec![
            slack.response_url().into(),
            "http://169.254.169.254/".into(),
        ]),
    )
        .prop_map(
            |(kind, team, user, action, value, view, meta, input, url)| {
                json!({
                    "type": kind,
                    "team": { "id": team },
                    "user": { "id": user, "team_id": team },
                    "trigger_id": "1.2.3",
                    "response_url": url,
                    "actions": [{ "action_id": action, "value": value }],
                    "view": {
                        "callback_id": view,
                        "private_metadata": meta,
                        "state": { "values": {
                            "reason": { "reason": { "value": input } },
                            "target": { "target": { "value": input } },
                            "role": { "role": { "value": input } },
                            "duration": { "duration": { "value": input } },
                            "justification": { "justification": { "value": input } }
                        } }
                    }
                })
                .to_string()
            },
        );
    #[derive(Debug, Clone)]
    enum Case {
        Interaction(String),
        Command {
            team: String,
            user: String,
            text: String,
        },
    }
    let cases = prop_oneof![
        3 => shaped.prop_map(Case::Interaction),
        1 => anything.clone().prop_map(|v| Case::Interaction(v.to_string())),
        1 => ".{0,200}".prop_map(Case::Interaction),
        2 => (
            prop_oneof![Just(TEAM.to_string()), ".{0,12}"],
            prop_oneof![Just("U0NOBODY".to_string()), ".{0,12}"],
            prop_oneof![
                Just("request web1 root 1h because".to_string()),
                Just("link".to_string()),
                ".{0,120}",
            ],
        )
            .prop_map(|(team, user, text)| Case::Command { team, user, text }),
    ];

    let mut runner = TestRunner::new(Config {
        cases: 200,
        failure_persistence: None,
        ..Config::default()
    });
    let statuses = std::sync::Mutex::new(std::collections::BTreeMap::<u16, usize>::new());
    let result = runner.run(&cases, |case| {
        let (status, body) = rt.block_on(async {
            match &case {
                Case::Interaction(payload) => {
                    slack.send(&interactions, &[("payload", payload)]).await
                }
                Case::Command { team, user, text } => {
                    let mut f = slash_command(user, text, "http://127.0.0.1:9/");
                    for (k, v) in f.iter_mut() {
                        if *k == "team_id" {
                            *v = team;
                        }
                    }
                    slack.send(&commands, &f).await
                }
            }
        });
        if status >= 500 {
            return Err(TestCaseError::fail(format!("{status}: {body}")));
        }
        *statuses.lock().unwrap().entry(status).or_default() += 1;
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    // The cases got past the signature to the handlers: answered (200) and refused as
    // malformed (400) alike.
    let statuses = statuses.into_inner().unwrap();
    println!("statuses: {statuses:?}");
    assert!(statuses.get(&200).is_some_and(|n| *n > 20), "{statuses:?}");
    assert!(statuses.get(&400).is_some_and(|n| *n > 10), "{statuses:?}");

    rt.block_on(async {
        let admin = s.admin();
        let all = admin
            .list_requests(&pedm_api::RequestQuery::default())
            .await
            .unwrap();
        assert_eq!(all.len(), 1, "only alice's request exists: {all:?}");
        assert_eq!(all[0].state, RequestState::Pending);
        assert_eq!(all[0].version, pending.version, "unchanged");
    });
}
