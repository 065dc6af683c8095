//! Notifications survive a crash: a notice is written to the outbox with the change that
//! causes it, and a channel's cursor moves only past what was delivered, so pedmd killed while
//! a webhook receiver is down delivers after the restart, with the same delivery id
//! (`X-Pedm-Delivery`) the receiver saw before: at least once, deduplicated by id.

mod common;

use axum::http::{HeaderMap, StatusCode};
use common::*;
use pedm_api::RequestState;
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// One delivery attempt as the receiver saw it.
#[derive(Debug, Clone)]
struct Attempt {
    id: String,
    kind: String,
    body: Value,
    accepted: bool,
}

/// A webhook receiver that answers 503 until `accept` is set, reporting every attempt.
async fn flaky_receiver(accept: Arc<Mutex<bool>>) -> (String, mpsc::UnboundedReceiver<Attempt>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |h: HeaderMap, body: axum::body::Bytes| {
            let (tx, accept) = (tx.clone(), accept.clone());
            async move {
                let accepted = *accept.lock().unwrap();
                let header = |n: &str| {
                    h.get(n)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string()
                };
                let _ = tx.send(Attempt {
                    id: header("x-pedm-delivery"),
                    kind: header("x-pedm-kind"),
                    body: serde_json::from_slice(&body).unwrap_or(Value::Null),
                    accepted,
                });
                if accepted {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                }
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (url, rx)
}

async fn next_attempt(rx: &mut mpsc::UnboundedReceiver<Attempt>, kind: &str) -> Attempt {
    loop {
        let a = tokio::time::timeout(Duration::from_secs(60), rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no delivery of {kind}"))
            .expect("receiver");
        if a.kind == kind {
            return a;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_notification_outlives_a_crash_and_keeps_its_delivery_id() {
    let accept = Arc::new(Mutex::new(false));
    let (url, mut attempts) = flaky_receiver(accept.clone()).await;
    let mut s = Server::start_with(Options {
        config: Some(format!(
            "[notify]\nretry = {{ base = \"50ms\", max = \"200ms\", attempts = 1000 }}\n\
             [[notify.webhook]]\nname = \"ops\"\nurl = \"{url}\"\nkinds = [\"request.\"]\n"
        )),
        ..Default::default()
    });
    app_target(&s, false).await;
    let alice = s.client(&user_with_token(&s, "alice", false).await);
    let first = alice
        .create_request(&req("app", "deploy", "30m", "release 42"))
        .await
        .unwrap();
    assert_eq!(first.request.state, RequestState::Pending);

    // The receiver is down: pedmd keeps trying the same notification.
    let tried = next_attempt(&mut attempts, "request.pending").await;
    assert!(!tried.accepted);
    assert_eq!(
        tried.body["data"]["request"]["id"],
        first.request.id.to_string()
    );
    let again = next_attempt(&mut attempts, "request.pending").await;
    assert_eq!(again.id, tried.id, "a retry carries the same delivery id");

    // pedmd dies mid-retry; the receiver comes back; pedmd starts again on the same data.
    s.kill();
    *accept.lock().unwrap() = true;
    while attempts.try_recv().is_ok() {}
    s.start_again();
    let delivered = next_attempt(&mut attempts, "request.pending").await;
    assert!(delivered.accepted);
    assert_eq!(
        delivered.id, tried.id,
        "the same notification, not a new one"
    );
    assert_eq!(
        delivered.body["data"]["request"]["id"],
        first.request.id.to_string()
    );
    assert_eq!(delivered.body["id"], tried.id);

    // Delivered once and in order: the next notice comes after it, and the first is not
    // sent again.
    s.admin()
        .create_role("app", &pedm_api::CreateRole::new("read", "1h"))
        .await
        .unwrap();
    let second = alice
        .create_request(&req("app", "read", "30m", "a look"))
        .await
        .unwrap();
    let second_id = second.request.id;
    let next = next_attempt(&mut attempts, "request.pending").await;
    assert_eq!(next.body["data"]["request"]["id"], second_id.to_string());
    assert_ne!(next.id, tried.id);
    eventually(Duration::from_secs(30), "an empty backlog", || async {
        (metric(&s, "pedm_outbox_backlog", "channel=\"webhook:ops\"").await == 0.0).then_some(())
    })
    .await;
    let status = s.cli(&s.admin_token, &["--json", "notify", "status"]);
    assert!(status.status.success(), "{}", stderr(&status));
    let status: Vec<pedm_api::ChannelStatus> = serde_json::from_slice(&status.stdout).unwrap();
    let ops = status
        .iter()
        .find(|c| c.name == "ops")
        .expect("the ops channel");
    assert!(ops.delivered >= 1, "{ops:?}");
    // The console's admin page lists the same channel with the same deliveries.
    let page = console_page(&s, &s.admin_token, "/ui/admin").await;
    let row = format!(
        "<tr id=\"channel-ops\"><td>ops</td><td>webhook</td><td>0</td><td>{}</td>",
        ops.delivered
    );
    assert!(page.contains(&row), "{row}\n{page}");
}
