//! On-call aware policy: `principal.on_call` from an endpoint in the shape of PagerDuty's
//! `GET /oncalls` (a stand-in started here: the real PagerDuty cannot be reached from the test
//! machine), refreshed in the background, failing closed when the schedule goes stale.

mod common;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use common::*;
use pedm_api::{Reason, RequestState};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Default)]
struct Schedule {
    oncalls: Arc<Mutex<Value>>,
    down: Arc<Mutex<bool>>,
}

async fn oncalls(State(s): State<Schedule>, headers: HeaderMap) -> (StatusCode, String) {
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Token token=pd-key") {
        return (
            StatusCode::UNAUTHORIZED,
            "{\"error\":{\"message\":\"Unauthorized\"}}".into(),
        );
    }
    if *s.down.lock().unwrap() {
        return (StatusCode::SERVICE_UNAVAILABLE, String::new());
    }
    let body = json!({ "oncalls": s.oncalls.lock().unwrap().clone(), "limit": 100,
                       "offset": 0, "more": false, "total": null });
    (StatusCode::OK, body.to_string())
}

/// A PagerDuty on-call entry for `email`, from `start` to `end` minutes from now.
fn entry(email: &str, start: i64, end: i64) -> Value {
    let at = |m: i64| (jiff::Timestamp::now() + jiff::SignedDuration::from_mins(m)).to_string();
    json!({
        "escalation_policy": { "id": "PT20YPA", "type": "escalation_policy_reference",
                               "summary": "Platform" },
        "escalation_level": 1,
        "schedule": { "id": "PI7DH85", "type": "schedule_reference", "summary": "Primary" },
        "user": { "id": format!("P{}", email.len()), "type": "user_reference",
                  "summary": email.split('@').next().unwrap_or_default(), "email": email },
        "start": at(start),
        "end": at(end),
    })
}

async fn refreshes(s: &Server, outcome: &str) -> u64 {
    metric(s, "pedm_oncall_refreshes_total", &format!("\"{outcome}\"")).await as u64
}

/// Waits until pedmd has read the schedule (with this outcome) twice more: the second read
/// certainly began after whatever changed before this call.
async fn two_more(s: &Server, outcome: &str) {
    let n = refreshes(s, outcome).await;
    eventually(
        Duration::from_secs(30),
        "two more refreshes",
        || async move { (refreshes(s, outcome).await >= n + 2).then_some(()) },
    )
    .await;
}

/// pedmd reading `oncalls` from a stand-in every second (stale after `max_age`), with the
/// default approval permit stepping aside for on-call engineers and `permit` (a policy with
/// its annotations) added.
async fn start(
    oncalls: Value,
    max_age: &str,
    permit: &str,
) -> (Server, Schedule, tempfile::TempDir) {
    let schedule = Schedule::default();
    *schedule.oncalls.lock().unwrap() = oncalls;
    let app = axum::Router::new()
        .route("/oncalls", axum::routing::get(self::oncalls))
        .with_state(schedule.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/oncalls", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    // Read at every refresh: the directory lives as long as the caller keeps it.
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("pd.key");
    std::fs::write(&key, "Token token=pd-key\n").unwrap();
    let s = Server::start_with(Options {
        config: Some(format!(
            "[oncall]\nurl = \"{url}\"\nauthorization_file = \"{}\"\nrefresh = \"1s\"\n\
             max_age = \"{max_age}\"\n",
            key.display()
        )),
        ..Default::default()
    });
    standard_targets(&s).await;
    edit_policies(&s.admin(), "on-call", |sources| {
        let d = sources
            .iter_mut()
            .find(|s| s.text.contains("@id(\"request-with-approval\")"))
            .expect("the default policy");
        d.text = d.text.replace(
            "when { !resource.auto_approve || context.via_agent };",
            "when { (!resource.auto_approve && !principal.on_call) || context.via_agent };",
        );
        d.text.push_str(permit);
    })
    .await;
    (s, schedule, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_call_engineers_are_auto_approved_while_on_call_only() {
    // On-call engineers get any role at once; everyone else needs the usual approval.
    let (s, schedule, _key) = start(
        json!([
            entry("bob@example.com", -60, 60),
            entry("carol@example.com", -120, -60),
        ]),
        "3s",
        "\n@id(\"on-call-engineers\")\n@auto_approve(\"true\")\n\
         permit (principal, action == Pedm::Action::\"request\", resource)\n\
         when { principal.on_call };\n",
    )
    .await;
    let bob = s.client(&user_with_token(&s, "bob", false).await);
    let carol = s.client(&user_with_token(&s, "carol", false).await);
    eventually(Duration::from_secs(30), "the first read", || async {
        (refreshes(&s, "ok").await >= 1).then_some(())
    })
    .await;

    let on = bob
        .create_request(&req("web1", "root", "30m", "paged: disk full"))
        .await
        .unwrap();
    assert_eq!(on.request.state, RequestState::Approved);
    assert_eq!(on.request.policy.as_deref(), Some("on-call-engineers"));
    let off = carol
        .create_request(&req("web1", "root", "30m", "my shift ended"))
        .await
        .unwrap();
    assert_eq!(off.request.state, RequestState::Pending);

    // bob's shift ends: his next request waits for approvers.
    *schedule.oncalls.lock().unwrap() = json!([entry("bob@example.com", -60, -1)]);
    two_more(&s, "ok").await;
    bob.release_grant(on.grant.unwrap().id, &Reason::default())
        .await
        .unwrap();
    let after = bob
        .create_request(&req("web1", "root", "30m", "one more thing"))
        .await
        .unwrap();
    assert_eq!(after.request.state, RequestState::Pending);
    bob.cancel_request(after.request.id, &Reason::default())
        .await
        .unwrap();

    // On call again, but the schedule cannot be read for longer than max_age: nobody is on
    // call (fail closed), and /metrics says the schedule is stale.
    *schedule.oncalls.lock().unwrap() = json!([entry("bob@example.com", -1, 60)]);
    two_more(&s, "ok").await;
    *schedule.down.lock().unwrap() = true;
    eventually(
        Duration::from_secs(30),
        "the schedule to go stale",
        || async { (metric(&s, "pedm_oncall_stale", "").await == 1.0).then_some(()) },
    )
    .await;
    let stale = bob
        .create_request(&req("web1", "root", "30m", "paged again"))
        .await
        .unwrap();
    assert_eq!(stale.request.state, RequestState::Pending);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_grant_given_for_on_call_ends_with_the_shift() {
    let (s, schedule, _key) = start(
        json!([entry("bob@example.com", -60, 60)]),
        "1h",
        "\n@id(\"on-call-for-the-shift\")\n@auto_approve(\"true\")\n@while_on_call(\"true\")\n\
         permit (principal, action == Pedm::Action::\"request\", resource)\n\
         when { principal.on_call };\n",
    )
    .await;
    let bob = s.client(&user_with_token(&s, "bob", false).await);
    eventually(Duration::from_secs(30), "the first read", || async {
        (refreshes(&s, "ok").await >= 1).then_some(())
    })
    .await;
    let on = bob
        .create_request(&req("web1", "root", "1h", "paged: disk full"))
        .await
        .unwrap();
    assert_eq!(on.request.policy.as_deref(), Some("on-call-for-the-shift"));
    assert!(on.request.context.while_on_call);
    let g = on.grant.expect("granted while on call");
    // Still on call: the grant stays.
    two_more(&s, "ok").await;
    assert_eq!(
        bob.get_grant(g.id).await.unwrap().state,
        pedm_api::GrantState::Active
    );
    // The shift ends: the grant ends with it, long before its hour.
    *schedule.oncalls.lock().unwrap() = json!([entry("bob@example.com", -60, -1)]);
    let ended = eventually(Duration::from_secs(30), "the grant to end", || async {
        let g = bob.get_grant(g.id).await.unwrap();
        (g.state != pedm_api::GrantState::Active).then_some(g)
    })
    .await;
    assert_eq!(ended.state, pedm_api::GrantState::Revoked);
    assert_eq!(ended.ended_by.as_deref(), Some("system"));
    assert_eq!(
        ended.end_reason.as_deref(),
        Some("bob is no longer on call")
    );
    wait_event(&s, "grant.revoked", &format!("grant:{}", g.id)).await;
}
