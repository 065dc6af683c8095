//! End-to-end delivery against a real local HTTP receiver (axum on 127.0.0.1).
//! Synchronisation is by channels from the receiver and delivery events; the
//! only timeouts are safety nets that turn a hang into a failure.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use pedm_notify::{
    AttemptOutcome, DELIVERY_HEADER, DeliveryEvent, DropReason, FailReason, Format, Notification,
    Notifier, NotifierOptions, NotifyConfig, RetryPolicy, SIGNATURE_HEADER, Severity,
    SignatureError, SinkConfig, TIMESTAMP_HEADER, kinds, verify_signature,
};
use serde_json::{Value, json};
use tokio::sync::{Semaphore, broadcast, mpsc};

const SAFETY: Duration = Duration::from_secs(30);
const TOLERANCE: Duration = Duration::from_secs(300);

#[derive(Debug)]
struct Received {
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

impl Received {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("missing {name}"))
            .to_str()
            .unwrap()
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

type StatusFn = dyn Fn(usize) -> u16 + Send + Sync;

struct RxState {
    count: AtomicUsize,
    tx: mpsc::UnboundedSender<Received>,
    status: Box<StatusFn>,
    /// When set, each request waits for a permit before answering.
    gate: Option<Arc<Semaphore>>,
}

struct Receiver {
    addr: SocketAddr,
    rx: mpsc::UnboundedReceiver<Received>,
}

impl Receiver {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn next(&mut self) -> Received {
        tokio::time::timeout(SAFETY, self.rx.recv())
            .await
            .expect("receiver got nothing")
            .expect("receiver gone")
    }
}

async fn hook(
    State(s): State<Arc<RxState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let n = s.count.fetch_add(1, Ordering::SeqCst) + 1;
    let _ = s.tx.send(Received {
        path: uri.path().to_string(),
        headers,
        body,
    });
    if let Some(gate) = &s.gate {
        gate.acquire().await.unwrap().forget();
    }
    StatusCode::from_u16((s.status)(n)).unwrap()
}

async fn receiver_on(
    listener: tokio::net::TcpListener,
    status: impl Fn(usize) -> u16 + Send + Sync + 'static,
    gate: Option<Arc<Semaphore>>,
) -> Receiver {
    let (tx, rx) = mpsc::unbounded_channel();
    let state = Arc::new(RxState {
        count: AtomicUsize::new(0),
        tx,
        status: Box::new(status),
        gate,
    });
    let app = Router::new().fallback(hook).with_state(state);
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Receiver { addr, rx }
}

async fn receiver(status: impl Fn(usize) -> u16 + Send + Sync + 'static) -> Receiver {
    receiver_on(
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        status,
        None,
    )
    .await
}

fn fast_options(attempts: u32) -> NotifierOptions {
    NotifierOptions {
        queue_capacity: 64,
        retry: RetryPolicy {
            base: Duration::from_millis(5),
            max: Duration::from_millis(50),
            attempts,
        },
    }
}

fn signed(name: &str, url: String, secret: &str) -> SinkConfig {
    SinkConfig {
        secret: Some(secret.to_string()),
        ..SinkConfig::new(name, url)
    }
}

async fn next_event(
    events: &mut broadcast::Receiver<DeliveryEvent>,
    want: impl Fn(&DeliveryEvent) -> bool,
) -> DeliveryEvent {
    tokio::time::timeout(SAFETY, async {
        loop {
            let e = events.recv().await.expect("event stream ended");
            if want(&e) {
                return e;
            }
        }
    })
    .await
    .expect("expected delivery event did not come")
}

fn is_delivered(e: &DeliveryEvent) -> bool {
    matches!(e, DeliveryEvent::Delivered { .. })
}

fn pending(summary: &str) -> Notification {
    Notification::new(
        kinds::REQUEST_PENDING,
        Severity::Info,
        summary,
        json!({"request_id": "r-1", "requester": "alice", "target": "db1", "role": "readwrite"}),
    )
}

#[tokio::test]
async fn signed_delivery_verifies_and_rejects_tampering() {
    let mut rx = receiver(|_| 200).await;
    let (notifier, handle) = Notifier::start(
        vec![signed("sec", rx.url("/hook"), "s3cret")],
        fast_options(3),
    )
    .unwrap();
    let n = pending("alice requests readwrite on db1 for 1h");
    notifier.notify(n.clone());

    let got = rx.next().await;
    assert_eq!(got.path, "/hook");
    assert_eq!(got.header("content-type"), "application/json");
    assert_eq!(got.header(DELIVERY_HEADER), n.id.to_string());
    assert_eq!(got.header("x-pedm-kind"), "request.pending");
    let ts = got.header(TIMESTAMP_HEADER);
    let sig = got.header(SIGNATURE_HEADER);
    assert!(sig.starts_with("v1=") && sig.len() == 67, "{sig}");
    let now = jiff::Timestamp::now();
    assert_eq!(
        verify_signature(b"s3cret", ts, sig, &got.body, now, TOLERANCE),
        Ok(())
    );
    assert_eq!(
        verify_signature(b"wrong", ts, sig, &got.body, now, TOLERANCE),
        Err(SignatureError::Mismatch)
    );
    let mut tampered = got.body.to_vec();
    tampered.extend_from_slice(b" ");
    assert_eq!(
        verify_signature(b"s3cret", ts, sig, &tampered, now, TOLERANCE),
        Err(SignatureError::Mismatch)
    );
    let later = now + jiff::SignedDuration::from_secs(600);
    assert!(matches!(
        verify_signature(b"s3cret", ts, sig, &got.body, later, TOLERANCE),
        Err(SignatureError::OutsideTolerance { .. })
    ));

    // Generic payload is the notification itself.
    let back: Notification = serde_json::from_slice(&got.body).unwrap();
    assert_eq!(back, n);

    let stats = notifier.shutdown(SAFETY).await;
    assert_eq!(
        (stats[0].delivered, stats[0].failed, stats[0].dropped),
        (1, 0, 0)
    );
    handle.await.unwrap();
}

#[tokio::test]
async fn unsigned_sink_sends_no_signature_headers() {
    let mut rx = receiver(|_| 204).await;
    let (notifier, _h) =
        Notifier::start(vec![SinkConfig::new("plain", rx.url("/"))], fast_options(1)).unwrap();
    notifier.notify(pending("x"));
    let got = rx.next().await;
    assert!(got.headers.get(SIGNATURE_HEADER).is_none());
    assert!(got.headers.get(TIMESTAMP_HEADER).is_none());
    assert!(got.headers.get(DELIVERY_HEADER).is_some());
    assert_eq!(notifier.shutdown(SAFETY).await[0].delivered, 1);
}

#[tokio::test]
async fn rotation_signs_with_both_keys() {
    let mut rx = receiver(|_| 200).await;
    let sink = SinkConfig {
        previous_secret: Some("old".into()),
        ..signed("rot", rx.url("/"), "new")
    };
    let (notifier, _h) = Notifier::start(vec![sink], fast_options(1)).unwrap();
    notifier.notify(pending("x"));
    let got = rx.next().await;
    let (ts, sig) = (got.header(TIMESTAMP_HEADER), got.header(SIGNATURE_HEADER));
    let now = jiff::Timestamp::now();
    assert_eq!(sig.matches("v1=").count(), 2);
    for key in [&b"new"[..], b"old"] {
        assert_eq!(
            verify_signature(key, ts, sig, &got.body, now, TOLERANCE),
            Ok(())
        );
    }
}

#[tokio::test]
async fn server_errors_are_retried_with_the_same_delivery_id() {
    let mut rx = receiver(|n| if n <= 2 { 500 } else { 200 }).await;
    let (notifier, _h) =
        Notifier::start(vec![signed("s", rx.url("/"), "k")], fast_options(8)).unwrap();
    let mut events = notifier.subscribe();
    let n = pending("x");
    notifier.notify(n.clone());

    let done = next_event(&mut events, is_delivered).await;
    assert_eq!(
        done,
        DeliveryEvent::Delivered {
            sink: "s".into(),
            id: n.id,
            attempts: 3
        }
    );
    let ids: Vec<String> = [rx.next().await, rx.next().await, rx.next().await]
        .iter()
        .map(|r| {
            // Every attempt is signed afresh and verifies.
            let now = jiff::Timestamp::now();
            verify_signature(
                b"k",
                r.header(TIMESTAMP_HEADER),
                r.header(SIGNATURE_HEADER),
                &r.body,
                now,
                TOLERANCE,
            )
            .unwrap();
            r.header(DELIVERY_HEADER).to_string()
        })
        .collect();
    assert_eq!(ids, vec![n.id.to_string(); 3]);

    let stats = notifier.shutdown(SAFETY).await;
    assert_eq!(
        (stats[0].delivered, stats[0].retries, stats[0].failed),
        (1, 2, 0)
    );
    assert!(
        rx.rx.try_recv().is_err(),
        "delivered once: no request after the 200"
    );
}

#[tokio::test]
async fn too_many_requests_and_503_are_retried() {
    let mut rx = receiver(|n| match n {
        1 => 429,
        2 => 503,
        _ => 200,
    })
    .await;
    let (notifier, _h) =
        Notifier::start(vec![SinkConfig::new("s", rx.url("/"))], fast_options(8)).unwrap();
    let mut events = notifier.subscribe();
    notifier.notify(pending("x"));
    let mut outcomes = Vec::new();
    for _ in 0..3 {
        if let DeliveryEvent::Attempt { outcome, .. } =
            next_event(&mut events, |e| matches!(e, DeliveryEvent::Attempt { .. })).await
        {
            outcomes.push(outcome);
        }
    }
    assert_eq!(
        outcomes,
        [
            AttemptOutcome::Status(429),
            AttemptOutcome::Status(503),
            AttemptOutcome::Status(200)
        ]
    );
    for _ in 0..3 {
        rx.next().await;
    }
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    // The first notification gets 400, the next 200. Deliveries per sink are
    // in order, so a retry of the first would reach the receiver before the
    // second notification does.
    let mut rx = receiver(|n| if n == 1 { 400 } else { 200 }).await;
    let (notifier, _h) =
        Notifier::start(vec![SinkConfig::new("s", rx.url("/"))], fast_options(8)).unwrap();
    let mut events = notifier.subscribe();
    let (first, second) = (pending("first"), pending("second"));
    notifier.notify(first.clone());
    notifier.notify(second.clone());

    let failed = next_event(&mut events, |e| matches!(e, DeliveryEvent::Failed { .. })).await;
    assert_eq!(
        failed,
        DeliveryEvent::Failed {
            sink: "s".into(),
            id: first.id,
            attempts: 1,
            reason: FailReason::Refused(400)
        }
    );
    let delivered = next_event(&mut events, is_delivered).await;
    assert_eq!(
        delivered,
        DeliveryEvent::Delivered {
            sink: "s".into(),
            id: second.id,
            attempts: 1
        }
    );
    assert_eq!(
        rx.next().await.header(DELIVERY_HEADER),
        first.id.to_string()
    );
    assert_eq!(
        rx.next().await.header(DELIVERY_HEADER),
        second.id.to_string()
    );

    let stats = notifier.shutdown(SAFETY).await;
    assert_eq!(
        (stats[0].delivered, stats[0].failed, stats[0].retries),
        (1, 1, 0)
    );
    assert!(rx.rx.try_recv().is_err());
}

#[tokio::test]
async fn receiver_down_then_up_is_delivered() {
    // Reserve a port, then free it: connections are refused until the
    // receiver starts on it.
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = probe.local_addr().unwrap();
    drop(probe);

    let options = NotifierOptions {
        queue_capacity: 8,
        retry: RetryPolicy {
            base: Duration::from_millis(10),
            max: Duration::from_millis(100),
            attempts: 1000,
        },
    };
    let sink = signed("s", format!("http://{addr}/late"), "k");
    let (notifier, _h) = Notifier::start(vec![sink], options).unwrap();
    let mut events = notifier.subscribe();
    let n = pending("x");
    notifier.notify(n.clone());

    let refused = next_event(&mut events, |e| matches!(e, DeliveryEvent::Attempt { .. })).await;
    assert!(
        matches!(
            &refused,
            DeliveryEvent::Attempt {
                attempt: 1,
                outcome: AttemptOutcome::Connect,
                ..
            }
        ),
        "{refused:?}"
    );

    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let mut rx = receiver_on(listener, |_| 200, None).await;
    let got = rx.next().await;
    assert_eq!(got.header(DELIVERY_HEADER), n.id.to_string());
    let DeliveryEvent::Delivered { attempts, .. } = next_event(&mut events, is_delivered).await
    else {
        unreachable!()
    };
    assert!(attempts >= 2, "{attempts}");
}

#[tokio::test]
async fn notify_never_blocks_on_a_hung_receiver() {
    let gate = Arc::new(Semaphore::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut rx = receiver_on(listener, |_| 200, Some(gate.clone())).await;
    let sink = SinkConfig {
        timeout: Duration::from_secs(120),
        ..SinkConfig::new("slow", rx.url("/"))
    };
    let options = NotifierOptions {
        queue_capacity: 16,
        ..fast_options(3)
    };
    let (notifier, handle) = Notifier::start(vec![sink], options).unwrap();

    notifier.notify(pending("first"));
    // The sink task is now inside a request the receiver does not answer.
    rx.next().await;

    for i in 0..1000 {
        notifier.notify(pending(&format!("n{i}")));
    }
    // All 1,000 calls returned while the receiver still holds the first
    // request: no permit was ever released, and nothing else reached it.
    assert_eq!(gate.available_permits(), 0);
    assert!(rx.rx.try_recv().is_err());
    let s = &notifier.stats()[0];
    assert_eq!(s.enqueued + s.dropped, 1001);
    assert_eq!(s.enqueued, 1 + 16, "the in-flight one plus a full queue");
    assert_eq!(s.delivered, 0);

    // Let the receiver answer; shutdown drains the queue.
    gate.add_permits(1_000);
    let stats = notifier.shutdown(SAFETY).await;
    assert_eq!(stats[0].delivered, 17);
    assert_eq!(stats[0].dropped, 1000 - 16);
    assert_eq!(stats[0].queued, 0);
    handle.await.unwrap();
}

#[tokio::test]
async fn sinks_get_only_the_kinds_and_severities_they_asked_for() {
    let mut rx = receiver(|_| 200).await;
    let requests = SinkConfig {
        kinds: vec!["request.".into()],
        ..SinkConfig::new("requests", rx.url("/requests"))
    };
    let urgent = SinkConfig {
        min_severity: Severity::High,
        ..SinkConfig::new("urgent", rx.url("/urgent"))
    };
    let grants = SinkConfig {
        kinds: vec!["grant.*".into()],
        ..SinkConfig::new("grants", rx.url("/grants"))
    };
    let (notifier, _h) = Notifier::start(vec![requests, urgent, grants], fast_options(1)).unwrap();

    let send = |kind: &str, sev| notifier.notify(Notification::new(kind, sev, kind, json!({})));
    send(kinds::REQUEST_PENDING, Severity::Info);
    send(kinds::GRANT_STARTED, Severity::Info);
    send(kinds::BREAK_GLASS, Severity::Info);
    send(kinds::BREAK_GLASS, Severity::High);
    send(kinds::REQUEST_DECIDED, Severity::Info);
    send("requestx.other", Severity::Info);
    send(kinds::GRANT_ENDED, Severity::Info);

    // Shutdown drains every queue, so anything misrouted would have arrived.
    let stats = notifier.shutdown(SAFETY).await;
    let delivered: Vec<(String, u64)> = stats
        .iter()
        .map(|s| (s.name.clone(), s.delivered))
        .collect();
    assert_eq!(
        delivered,
        [
            ("requests".into(), 2),
            ("urgent".into(), 1),
            ("grants".into(), 2)
        ]
    );

    let mut by_path: std::collections::BTreeMap<String, Vec<(String, String)>> = Default::default();
    while let Ok(r) = rx.rx.try_recv() {
        let v = r.json();
        by_path.entry(r.path.clone()).or_default().push((
            v["kind"].as_str().unwrap().into(),
            v["severity"].as_str().unwrap().into(),
        ));
    }
    let pairs = |v: &[(&str, &str)]| {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        by_path["/requests"],
        pairs(&[("request.pending", "info"), ("request.decided", "info")])
    );
    assert_eq!(by_path["/urgent"], pairs(&[("break_glass", "high")]));
    assert_eq!(
        by_path["/grants"],
        pairs(&[("grant.started", "info"), ("grant.ended", "info")])
    );
}

#[tokio::test]
async fn slack_payload_shape_and_signature() {
    let mut rx = receiver(|_| 200).await;
    let sink = SinkConfig {
        format: Format::Slack,
        ..signed("slack", rx.url("/services/T0/B0/x"), "k")
    };
    let (notifier, _h) = Notifier::start(vec![sink], fast_options(1)).unwrap();
    let n = Notification::new(
        kinds::BREAK_GLASS,
        Severity::High,
        "bob used break-glass: root on web1 <!channel>",
        json!({"requester": "bob", "target": "web1", "role": "root", "duration_secs": 3600}),
    );
    notifier.notify(n.clone());
    let got = rx.next().await;
    let now = jiff::Timestamp::now();
    verify_signature(
        b"k",
        got.header(TIMESTAMP_HEADER),
        got.header(SIGNATURE_HEADER),
        &got.body,
        now,
        TOLERANCE,
    )
    .unwrap();

    let v = got.json();
    let text = v["text"].as_str().unwrap();
    assert!(text.starts_with(":rotating_light:"), "{text}");
    assert!(
        text.contains("bob used break-glass: root on web1 &lt;!channel&gt;"),
        "{text}"
    );
    let blocks = v["blocks"].as_array().unwrap();
    assert_eq!(blocks[0]["type"], "header");
    assert_eq!(blocks[0]["text"]["type"], "plain_text");
    assert!(
        blocks[0]["text"]["text"]
            .as_str()
            .unwrap()
            .starts_with(":rotating_light:")
    );
    assert_eq!(blocks[1]["type"], "section");
    assert_eq!(blocks[1]["text"]["type"], "mrkdwn");
    let fields: Vec<&str> = blocks[2]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["text"].as_str().unwrap())
        .collect();
    for want in [
        "*Kind*\nbreak_glass",
        "*Severity*\n*HIGH*",
        "*requester*\nbob",
        "*duration_secs*\n3600",
    ] {
        assert!(fields.contains(&want), "{want:?} not in {fields:?}");
    }
    assert_eq!(blocks[3]["type"], "context");
    assert!(
        blocks[3]["elements"][0]["text"]
            .as_str()
            .unwrap()
            .contains(&n.id.to_string())
    );

    // Info severity is not marked.
    notifier.notify(pending("routine"));
    let v = rx.next().await.json();
    assert_eq!(v["text"], "routine");
}

#[tokio::test]
async fn shutdown_gives_up_at_the_deadline_and_refuses_new_notifications() {
    let mut rx = receiver(|_| 503).await;
    let options = NotifierOptions {
        queue_capacity: 8,
        retry: RetryPolicy {
            base: Duration::from_secs(3600),
            max: Duration::from_secs(3600),
            attempts: 5,
        },
    };
    let (notifier, handle) =
        Notifier::start(vec![SinkConfig::new("s", rx.url("/"))], options).unwrap();
    let mut events = notifier.subscribe();
    notifier.notify(pending("a"));
    notifier.notify(pending("b"));
    rx.next().await; // first attempt of "a"; it now backs off for ~an hour

    let stats = notifier.shutdown(Duration::from_millis(50)).await;
    assert_eq!((stats[0].delivered, stats[0].failed), (0, 2));
    handle.await.unwrap();
    let failed = next_event(&mut events, |e| matches!(e, DeliveryEvent::Failed { .. })).await;
    assert!(
        matches!(
            failed,
            DeliveryEvent::Failed {
                reason: FailReason::Shutdown,
                attempts: 1,
                ..
            }
        ),
        "{failed:?}"
    );

    notifier.notify(pending("late"));
    let dropped = next_event(&mut events, |e| matches!(e, DeliveryEvent::Dropped { .. })).await;
    assert!(matches!(
        dropped,
        DeliveryEvent::Dropped {
            reason: DropReason::ShutDown,
            ..
        }
    ));
    assert_eq!(notifier.stats()[0].dropped, 1);
}

#[tokio::test]
async fn dropping_every_handle_still_delivers_the_queue() {
    let mut rx = receiver(|_| 200).await;
    let (notifier, handle) =
        Notifier::start(vec![SinkConfig::new("s", rx.url("/"))], fast_options(1)).unwrap();
    notifier.notify(pending("a"));
    drop(notifier);
    handle.await.unwrap();
    rx.next().await;
}

#[test]
fn debug_never_shows_secrets_or_url_tokens() {
    let sink = SinkConfig {
        previous_secret: Some("0ld-k3y".into()),
        ..signed(
            "slack",
            "https://hooks.slack.com/services/T000/B000/XXXXtoken".into(),
            "hunter2-secret",
        )
    };
    let shown = format!("{sink:?} {sink:#?}");
    for secret in ["hunter2-secret", "0ld-k3y", "XXXXtoken", "/services/"] {
        assert!(!shown.contains(secret), "{secret} leaked in {shown}");
    }
    assert!(
        shown.contains("<redacted>") && shown.contains("hooks.slack.com"),
        "{shown}"
    );
    let serialized = serde_json::to_string(&sink).unwrap();
    assert!(
        !serialized.contains("hunter2") && !serialized.contains("0ld-k3y"),
        "{serialized}"
    );
}

#[test]
fn config_reads_from_toml() {
    #[derive(serde::Deserialize)]
    struct ServerConfig {
        notify: NotifyConfig,
    }
    let text = r#"
        [notify]
        queue_capacity = 500
        retry = { base = "250ms", max = "1m", attempts = 6 }

        [[notify.webhook]]
        name = "security"
        url = "https://hooks.example.com/pedm"
        secret = "s"
        kinds = ["break_glass", "request."]
        min_severity = "info"
        timeout = "5s"

        [[notify.webhook]]
        name = "slack"
        url = "https://hooks.slack.com/services/T/B/X"
        format = "slack"
        min_severity = "high"
    "#;
    let cfg: ServerConfig = toml::from_str(text).unwrap();
    let (sinks, options) = cfg.notify.into_parts();
    assert_eq!(options.queue_capacity, 500);
    assert_eq!(
        options.retry,
        RetryPolicy {
            base: Duration::from_millis(250),
            max: Duration::from_secs(60),
            attempts: 6
        }
    );
    assert_eq!(sinks.len(), 2);
    assert_eq!(sinks[0].timeout, Duration::from_secs(5));
    assert_eq!(sinks[0].secret.as_deref(), Some("s"));
    assert!(sinks[0].accepts("request.pending", Severity::Info));
    assert!(!sinks[0].accepts("grant.started", Severity::High));
    assert_eq!(sinks[1].format, Format::Slack);
    assert_eq!(sinks[1].timeout, Duration::from_secs(10));
    assert!(!sinks[1].accepts("break_glass", Severity::Info));
    assert!(sinks[1].accepts("break_glass", Severity::High));
    pedm_notify::validate_sinks(&sinks).unwrap();

    // Defaults when the section is empty.
    let empty: ServerConfig = toml::from_str("[notify]").unwrap();
    assert_eq!(empty.notify.into_parts().1, NotifierOptions::default());

    // Typos and bad values are named.
    for (bad, needle) in [
        (
            "[[notify.webhook]]\nname='a'\nurl='http://x'\nsecert='s'",
            "secert",
        ),
        (
            "[[notify.webhook]]\nname='a'\nurl='http://x'\ntimeout='soon'",
            "soon",
        ),
        (
            "[[notify.webhook]]\nname='a'\nurl='http://x'\ntimeout='-5s'",
            "negative",
        ),
        (
            "[[notify.webhook]]\nname='a'\nurl='http://x'\nformat='teams'",
            "teams",
        ),
        (
            "[[notify.webhook]]\nname='a'\nurl='http://x'\nmin_severity='urgent'",
            "urgent",
        ),
    ] {
        let err = toml::from_str::<ServerConfig>(bad)
            .err()
            .unwrap_or_else(|| panic!("accepted {bad}"));
        assert!(err.to_string().contains(needle), "{needle}: {err}");
    }
}

#[tokio::test]
async fn bad_configuration_is_refused_at_start() {
    let ok = || SinkConfig::new("a", "https://example.com/hook");
    let cases: Vec<(Vec<SinkConfig>, NotifierOptions, &str)> = vec![
        (
            vec![SinkConfig {
                url: "not a url".into(),
                ..ok()
            }],
            NotifierOptions::default(),
            "not a valid URL",
        ),
        (
            vec![SinkConfig {
                url: "ftp://example.com/x".into(),
                ..ok()
            }],
            NotifierOptions::default(),
            "scheme",
        ),
        (
            vec![SinkConfig {
                name: " ".into(),
                ..ok()
            }],
            NotifierOptions::default(),
            "name is empty",
        ),
        (vec![ok(), ok()], NotifierOptions::default(), "same name"),
        (
            vec![SinkConfig {
                secret: Some(String::new()),
                ..ok()
            }],
            NotifierOptions::default(),
            "secret is empty",
        ),
        (
            vec![SinkConfig {
                timeout: Duration::ZERO,
                ..ok()
            }],
            NotifierOptions::default(),
            "timeout",
        ),
        (
            vec![SinkConfig {
                kinds: vec![String::new()],
                ..ok()
            }],
            NotifierOptions::default(),
            "kinds",
        ),
        (
            vec![ok()],
            NotifierOptions {
                queue_capacity: 0,
                ..Default::default()
            },
            "queue_capacity",
        ),
        (
            vec![ok()],
            NotifierOptions {
                retry: RetryPolicy {
                    attempts: 0,
                    ..Default::default()
                },
                ..Default::default()
            },
            "attempts",
        ),
    ];
    for (sinks, options, needle) in cases {
        let err = Notifier::start(sinks, options).expect_err("accepted bad config");
        assert!(err.to_string().contains(needle), "{needle}: {err}");
        let prefix = if err.sink.is_some() {
            "notify.webhook \""
        } else {
            "notify: "
        };
        assert!(err.to_string().starts_with(prefix), "{err}");
    }
    // No sinks is valid: notify is a no-op.
    let (n, h) = Notifier::start(vec![], NotifierOptions::default()).unwrap();
    n.notify(pending("x"));
    assert!(n.shutdown(SAFETY).await.is_empty());
    h.await.unwrap();
}
