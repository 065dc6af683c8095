//! Tickets checked against their systems: a request's ticket must exist, be in an allowed
//! state and (where configured) be the requester's; policy sees what the system said
//! (`context.ticket`); the grant's id is written on the ticket when it starts and ends; a grant
//! ends when its ticket closes; a system that cannot be asked fails closed, or sends the
//! request to approvers when configured so.
//!
//! Jira and ServiceNow cannot be reached from here: the suite starts protocol-faithful
//! stand-ins of the parts pedm uses (Jira REST API v2 `GET /rest/api/2/issue/{key}` and
//! `POST .../comment`; ServiceNow Table API `GET /api/now/table/change_request` with
//! `sysparm_display_value=all` and `PATCH .../{sys_id}` with `work_notes`), built from their
//! documentation, which refuse requests without the configured `Authorization`.

mod common;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use common::*;
use pedm_api::{GrantState, RequestState};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const AUTHORIZATION: &str = "Basic cGVkbTpzM2NyZXQ=";

#[derive(Default)]
struct Records {
    /// key → the record as the system answers it.
    records: HashMap<String, Value>,
    /// (key or sys_id, text) written by pedm.
    notes: Vec<(String, String)>,
    down: bool,
}

type Shared = Arc<Mutex<Records>>;

fn refused(h: &HeaderMap, s: &Shared) -> Option<axum::response::Response> {
    if s.lock().unwrap().down {
        return Some(StatusCode::SERVICE_UNAVAILABLE.into_response());
    }
    (h.get("authorization").and_then(|v| v.to_str().ok()) != Some(AUTHORIZATION))
        .then(|| StatusCode::UNAUTHORIZED.into_response())
}

async fn serve(app: axum::Router) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    url
}

/// A record by key (404 as Jira answers it), for the Jira and the generic stand-ins.
async fn record(
    State(s): State<Shared>,
    h: HeaderMap,
    Path(key): Path<String>,
) -> axum::response::Response {
    if let Some(r) = refused(&h, &s) {
        return r;
    }
    match s.lock().unwrap().records.get(&key) {
        Some(v) => axum::Json(v.clone()).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"errorMessages": ["Issue does not exist"]})),
        )
            .into_response(),
    }
}

/// A comment on a record: Jira's `{"body"}`, the generic `{"key", "text"}`.
async fn comment(
    State(s): State<Shared>,
    h: HeaderMap,
    Path(key): Path<String>,
    axum::Json(body): axum::Json<Value>,
) -> axum::response::Response {
    if let Some(r) = refused(&h, &s) {
        return r;
    }
    if let Some(k) = body.get("key") {
        assert_eq!(k, key.as_str());
    }
    let text = body["body"]
        .as_str()
        .or(body["text"].as_str())
        .unwrap_or_default()
        .to_string();
    s.lock().unwrap().notes.push((key, text));
    (StatusCode::CREATED, axum::Json(json!({"id": "10001"}))).into_response()
}

/// A system that answers a ticket at `record_path` and takes comments at `comment_path`.
async fn fake_system(records: Shared, record_path: &str, comment_path: &str) -> String {
    serve(
        axum::Router::new()
            .route(record_path, get(record))
            .route(comment_path, post(comment))
            .with_state(records),
    )
    .await
}

/// Jira: an issue by key, and comments on it.
async fn fake_jira(records: Shared) -> String {
    fake_system(
        records,
        "/rest/api/2/issue/{key}",
        "/rest/api/2/issue/{key}/comment",
    )
    .await
}

fn jira_issue(status: &str, assignee_email: &str) -> Value {
    json!({"key": "x", "fields": {
        "status": {"name": status},
        "priority": {"name": "High"},
        "assignee": {"name": assignee_email.split('@').next().unwrap(),
                     "emailAddress": assignee_email, "displayName": "Someone"},
    }})
}

/// ServiceNow: a change_request found by number, and a work note on it by sys_id.
async fn fake_servicenow(records: Shared) -> String {
    async fn query(
        State(s): State<Shared>,
        h: HeaderMap,
        Query(q): Query<HashMap<String, String>>,
    ) -> axum::response::Response {
        if let Some(r) = refused(&h, &s) {
            return r;
        }
        assert_eq!(
            q.get("sysparm_display_value").map(String::as_str),
            Some("all")
        );
        let number = q
            .get("sysparm_query")
            .and_then(|v| v.strip_prefix("number="))
            .unwrap_or_default();
        let found: Vec<Value> = s
            .lock()
            .unwrap()
            .records
            .get(number)
            .cloned()
            .into_iter()
            .collect();
        axum::Json(json!({ "result": found })).into_response()
    }
    async fn patch(
        State(s): State<Shared>,
        h: HeaderMap,
        Path(sys_id): Path<String>,
        axum::Json(body): axum::Json<Value>,
    ) -> axum::response::Response {
        if let Some(r) = refused(&h, &s) {
            return r;
        }
        let text = body["work_notes"].as_str().unwrap_or_default().to_string();
        s.lock().unwrap().notes.push((sys_id, text));
        axum::Json(json!({"result": {}})).into_response()
    }
    serve(
        axum::Router::new()
            .route("/api/now/table/change_request", get(query))
            .route(
                "/api/now/table/change_request/{sys_id}",
                axum::routing::patch(patch),
            )
            .with_state(records),
    )
    .await
}

/// A change as the Table API answers with `sysparm_display_value=all`.
fn change(sys_id: &str, state: &str, from_secs: i64, to_secs: i64) -> Value {
    let fmt = |secs: i64| {
        let t = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(secs);
        t.strftime("%Y-%m-%d %H:%M:%S").to_string()
    };
    let f = |v: &str| json!({"value": v, "display_value": v});
    json!({
        "sys_id": f(sys_id), "number": f("CHG"),
        "state": {"value": "-1", "display_value": state},
        "priority": {"value": "3", "display_value": "3 - Moderate"},
        "assigned_to.user_name": f("alice"), "assigned_to.email": f("alice@example.com"),
        "start_date": f(&fmt(from_secs)), "end_date": f(&fmt(to_secs)),
    })
}

fn config(kind: &str, url: &str, auth: &std::path::Path, extra: &str, log_target: &str) -> String {
    format!(
        "{log_target}\n[[tickets.system]]\nname = \"{kind}\"\nkind = \"{kind}\"\nurl = \"{url}\"\n\
         authorization_file = \"{}\"\ncomment = true\n{extra}\n",
        auth.display()
    )
}

async fn wait_note(records: &Shared, on: &str, containing: &str) -> String {
    eventually(Duration::from_secs(30), "a note on the ticket", || async {
        records
            .lock()
            .unwrap()
            .notes
            .iter()
            .find(|(k, t)| k == on && t.contains(containing))
            .map(|(_, t)| t.clone())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jira_tickets_are_checked_commented_and_end_their_grants() {
    let tmp = tempfile::tempdir().unwrap();
    let auth = tmp.path().join("jira-auth");
    std::fs::write(&auth, format!("{AUTHORIZATION}\n")).unwrap();
    let records = Shared::default();
    {
        let mut r = records.lock().unwrap();
        r.records.insert(
            "OPS-1".into(),
            jira_issue("In Progress", "alice@example.com"),
        );
        r.records
            .insert("OPS-2".into(), jira_issue("Done", "alice@example.com"));
        r.records
            .insert("OPS-3".into(), jira_issue("In Progress", "bob@example.com"));
    }
    let url = fake_jira(records.clone()).await;
    let (target, log) = logging_target(tmp.path());
    let s = Server::start_with(Options {
        config: Some(config(
            "jira",
            &url,
            &auth,
            "keys = \"^OPS-[0-9]+$\"\nallowed_states = [\"In Progress\"]\nrequire_assignee = true\n\
             end_grants_when_closed = true\npoll = \"1s\"",
            &target,
        )),
        ..Default::default()
    });
    app_target(&s, true).await;
    // Deploys need a ticket the system vouched for, in progress.
    add_policy(
        &s.admin(),
        "ticketed.cedar",
        "@id(\"ticketed-deploys\")\nforbid (principal, action == Pedm::Action::\"request\", resource)\n\
         unless { context has ticket && context.ticket.state == \"In Progress\" && \
         context.ticket.assigned_to_requester };\n",
    )
    .await;
    let alice_token = user_with_token(&s, "alice", false).await;
    let out = s.cli(
        &s.admin_token,
        &["user", "set-email", "alice", "alice@example.com"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let alice = s.client(&alice_token);
    let ticketed = |t: &str| pedm_api::CreateRequest {
        ticket: Some(t.into()),
        ..req("app", "deploy", "30m", "release 42")
    };

    let created = alice.create_request(&ticketed("OPS-1")).await.unwrap();
    assert_eq!(created.request.state, RequestState::Approved);
    let g = created.grant.expect("granted");
    let ev = wait_event(
        &s,
        "request.created",
        &format!("request:{}", created.request.id),
    )
    .await;
    assert_eq!(ev.data["ticket_checked"]["state"], "In Progress");
    assert_eq!(ev.data["ticket_checked"]["system"], "jira");
    let note = wait_note(&records, "OPS-1", &g.id.to_string()).await;
    assert!(note.contains("alice holds deploy on app"), "{note}");

    // Refused, each naming why, each recorded.
    for (ticket, why) in [
        ("OPS-404", "does not exist in jira"),
        ("OPS-2", "Done (closed)"),
        ("OPS-3", "assigned to bob@example.com, not to alice"),
    ] {
        let e = alice.create_request(&ticketed(ticket)).await.unwrap_err();
        assert_eq!(e.status(), Some(422), "{ticket}: {e}");
        assert!(e.to_string().contains(why), "{ticket}: {e}");
        let refused = wait_event(&s, "request.create", &format!("ticket:{ticket}")).await;
        assert_eq!(refused.outcome, pedm_api::Outcome::Denied);
    }
    // Without a ticket the policy refuses.
    let plain = alice
        .create_request(&req("app", "deploy", "30m", "no ticket"))
        .await
        .unwrap();
    assert_eq!(plain.request.state, RequestState::Denied);

    // The ticket closes: the grant ends then, and the ticket says so.
    records
        .lock()
        .unwrap()
        .records
        .insert("OPS-1".into(), jira_issue("Done", "alice@example.com"));
    let ended = eventually(Duration::from_secs(30), "the grant ended", || async {
        let g = alice.get_grant(g.id).await.unwrap();
        (g.state != GrantState::Active).then_some(g)
    })
    .await;
    assert_eq!(ended.state, GrantState::Revoked);
    assert_eq!(ended.ended_by.as_deref(), Some("system"));
    assert!(
        ended
            .end_reason
            .as_deref()
            .unwrap_or_default()
            .contains("OPS-1 is Done in jira"),
        "{:?}",
        ended.end_reason
    );
    wait_note(&records, "OPS-1", "ended").await;
    wait_provision(&s, g.id, "revoked").await;
    assert_eq!(calls(&log), ["grant", "revoke"]);

    // Jira down: the ticket cannot be checked, the request is refused (fail closed).
    records.lock().unwrap().records.insert(
        "OPS-5".into(),
        jira_issue("In Progress", "alice@example.com"),
    );
    records.lock().unwrap().down = true;
    let e = alice.create_request(&ticketed("OPS-5")).await.unwrap_err();
    assert_eq!(e.status(), Some(422), "{e}");
    assert!(
        e.to_string().contains("could not be checked in jira"),
        "{e}"
    );
    assert!(metric(&s, "pedm_ticket_checks_total", "outcome=\"unavailable\"").await >= 1.0);
    assert!(!s.log().contains(AUTHORIZATION), "the credential is logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn servicenow_change_windows_and_an_unreachable_system_sends_to_approvers() {
    let tmp = tempfile::tempdir().unwrap();
    let auth = tmp.path().join("snow-auth");
    std::fs::write(&auth, AUTHORIZATION).unwrap();
    let records = Shared::default();
    {
        let mut r = records.lock().unwrap();
        r.records
            .insert("CHG0000001".into(), change("a1", "Implement", -600, 3600));
        r.records
            .insert("CHG0000002".into(), change("a2", "Implement", -7200, -3600));
    }
    let url = fake_servicenow(records.clone()).await;
    let (target, _log) = logging_target(tmp.path());
    let s = Server::start_with(Options {
        config: Some(config(
            "servicenow",
            &url,
            &auth,
            "keys = \"^CHG[0-9]{7}$\"\non_unavailable = \"approval\"",
            &target,
        )),
        ..Default::default()
    });
    app_target(&s, true).await;
    // Outside its change's implementation window, nothing.
    add_policy(
        &s.admin(),
        "windows.cedar",
        "@id(\"change-windows\")\nforbid (principal, action == Pedm::Action::\"request\", resource)\n\
         when { context has ticket && !context.ticket.in_window };\n",
    )
    .await;
    let alice = s.client(&user_with_token(&s, "alice", false).await);
    let ticketed = |t: &str| pedm_api::CreateRequest {
        ticket: Some(t.into()),
        ..req("app", "deploy", "30m", "change")
    };

    let inside = alice.create_request(&ticketed("CHG0000001")).await.unwrap();
    assert_eq!(inside.request.state, RequestState::Approved);
    let g = inside.grant.unwrap();
    wait_note(&records, "a1", &g.id.to_string()).await;
    let ev = wait_event(
        &s,
        "request.created",
        &format!("request:{}", inside.request.id),
    )
    .await;
    assert_eq!(ev.data["ticket_checked"]["state"], "Implement");
    assert_eq!(ev.data["ticket_checked"]["priority"], "3 - Moderate");

    let outside = alice.create_request(&ticketed("CHG0000002")).await.unwrap();
    assert_eq!(outside.request.state, RequestState::Denied);
    assert_eq!(outside.request.policy.as_deref(), Some("change-windows"));

    // ServiceNow unreachable: configured to send such requests to people, so the request
    // waits for an approver although the role is auto-approved.
    alice
        .release_grant(g.id, &pedm_api::Reason::default())
        .await
        .unwrap();
    records.lock().unwrap().down = true;
    let waiting = alice.create_request(&ticketed("CHG0000003")).await.unwrap();
    assert_eq!(waiting.request.state, RequestState::Pending);
    assert!(
        waiting
            .request
            .decision_reason
            .as_deref()
            .unwrap_or_default()
            .contains("could not be checked in servicenow"),
        "{:?}",
        waiting.request.decision_reason
    );
}

/// Any other system: GET `/tickets/{key}` answers JSON, comments are POSTed beside it.
async fn fake_helpdesk(records: Shared) -> String {
    fake_system(records, "/tickets/{key}", "/tickets/{key}/comments").await
}

fn incident(state: &str, owner: &str) -> Value {
    json!({"key": "x", "fields": {"state": state, "owner": owner, "severity": 2}})
}

fn hub_signature(secret: &str, body: &str) -> String {
    use hmac::{KeyInit, Mac};
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn any_json_system_is_checked_and_a_signed_push_ends_grants_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let auth = tmp.path().join("helpdesk-auth");
    std::fs::write(&auth, AUTHORIZATION).unwrap();
    const SECRET: &str = "a-webhook-secret-of-some-length";
    let secret = tmp.path().join("helpdesk-webhook");
    std::fs::write(&secret, SECRET).unwrap();
    let records = Shared::default();
    records
        .lock()
        .unwrap()
        .records
        .insert("INC-7".into(), incident("Open", "alice"));
    let url = fake_helpdesk(records.clone()).await;
    let (target, log) = logging_target(tmp.path());
    // Polled hourly: only the push can end the grant within this test.
    let config = format!(
        "{target}\n[[tickets.system]]\nname = \"helpdesk\"\nkind = \"http\"\n\
         url = \"{url}/tickets/{{key}}\"\nauthorization_file = \"{}\"\nkeys = \"^INC-[0-9]+$\"\n\
         state_pointer = \"/fields/state\"\nassignee_pointer = \"/fields/owner\"\n\
         priority_pointer = \"/fields/severity\"\nrequire_assignee = true\ncomment = true\n\
         comment_url = \"{url}/tickets/{{key}}/comments\"\nend_grants_when_closed = true\n\
         poll = \"1h\"\nwebhook_secret_file = \"{}\"\n",
        auth.display(),
        secret.display()
    );
    let s = Server::start_with(Options {
        config: Some(config),
        ..Default::default()
    });
    app_target(&s, true).await;
    let alice = s.client(&user_with_token(&s, "alice", false).await);
    let created = alice
        .create_request(&pedm_api::CreateRequest {
            ticket: Some("INC-7".into()),
            ..req("app", "deploy", "30m", "incident 7")
        })
        .await
        .unwrap();
    let g = created.grant.expect("granted");
    let ev = wait_event(
        &s,
        "request.created",
        &format!("request:{}", created.request.id),
    )
    .await;
    assert_eq!(ev.data["ticket_checked"]["state"], "Open");
    assert_eq!(ev.data["ticket_checked"]["priority"], "2");
    assert_eq!(ev.data["ticket_checked"]["assigned_to_requester"], true);
    wait_note(&records, "INC-7", &g.id.to_string()).await;
    // Unknown to the system: refused.
    let e = alice
        .create_request(&pedm_api::CreateRequest {
            ticket: Some("INC-8".into()),
            ..req("app", "deploy", "30m", "no such incident")
        })
        .await
        .unwrap_err();
    assert!(e.to_string().contains("does not exist in helpdesk"), "{e}");

    let push = |body: &str, signature: Option<String>| {
        let mut r = reqwest::Client::new()
            .post(format!("{}/integrations/tickets/helpdesk", s.url))
            .body(body.to_string());
        if let Some(sig) = signature {
            r = r.header("X-Hub-Signature", sig);
        }
        r.send()
    };
    let body = r#"{"key": "INC-7", "event": "updated"}"#;
    // Forged or unsigned: refused and recorded; nothing looked at.
    for sig in [None, Some(hub_signature("another secret entirely", body))] {
        let r = push(body, sig).await.unwrap();
        assert_eq!(r.status(), 401);
    }
    let failed = audit_of(&s, "auth.failed").await;
    assert!(
        failed.iter().any(|e| e.data["kind"] == "tickets"),
        "{failed:?}"
    );
    // Signed, but the ticket is still open in the system: nothing ends (the body's word is
    // not taken for it).
    let r = push(
        r#"{"key": "INC-7", "state": "Resolved"}"#,
        Some(hub_signature(
            SECRET,
            r#"{"key": "INC-7", "state": "Resolved"}"#,
        )),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(r.json::<Value>().await.unwrap()["grants_ended"], 0);
    assert_eq!(
        alice.get_grant(g.id).await.unwrap().state,
        pedm_api::GrantState::Active
    );
    // Resolved in the system, then pushed: the grant ends at once.
    records
        .lock()
        .unwrap()
        .records
        .insert("INC-7".into(), incident("Resolved", "alice"));
    let r = push(body, Some(hub_signature(SECRET, body))).await.unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(r.json::<Value>().await.unwrap()["grants_ended"], 1);
    let ended = alice.get_grant(g.id).await.unwrap();
    assert_eq!(ended.state, GrantState::Revoked);
    assert!(
        ended
            .end_reason
            .as_deref()
            .unwrap_or_default()
            .contains("INC-7 is Resolved in helpdesk"),
        "{:?}",
        ended.end_reason
    );
    wait_provision(&s, g.id, "revoked").await;
    assert_eq!(calls(&log), ["grant", "revoke"]);
    // A system without a webhook secret, or none of that name: 404.
    let r = reqwest::Client::new()
        .post(format!("{}/integrations/tickets/nope", s.url))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}
