//! A stand-in for Slack, because the real Slack cannot be reached from the test machine.
//!
//! It is protocol-faithful to Slack's documentation where pedm depends on it:
//! * Web API methods `chat.postMessage` (a user id as `channel` posts in the app's direct
//!   conversation with that user, answered with its `D…` id), `chat.update`, `views.open`
//!   under `/api/`: JSON bodies; `users.info` and `users.lookupByEmail`: form bodies, user
//!   objects shaped as Slack's (`team_id`, `deleted`, `is_bot`, `is_email_confirmed`,
//!   `profile.email`), `user_not_found` / `users_not_found`;
//!   `Authorization: Bearer <bot token>` (else `{"ok":false,"error":"invalid_auth"}`),
//!   HTTP 200 with `ok:false` and Slack's error names (`channel_not_found`,
//!   `message_not_found`, `invalid_blocks`), 429/503 when told to be down;
//!   every `blocks` and `view` is checked against Block Kit's rules.
//! * `response_url`s under `/response/N`, recording what the app answers privately.
//! * The app-facing side: interaction payloads (`block_actions`, `view_submission`) and slash
//!   commands as `application/x-www-form-urlencoded` bodies, signed with
//!   `X-Slack-Signature: v0=HMAC-SHA256(secret, "v0:<ts>:<body>")` and
//!   `X-Slack-Request-Timestamp`, shaped as in Slack's payload reference.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

pub const TEAM: &str = "T0PEDM";
pub const CHANNEL: &str = "C0APPROVE";
pub const BOT_TOKEN: &str = "xoxb-test-bot-token";
pub const SIGNING_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";

/// One Web API call or response_url post the app made.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: String,
    pub body: Value,
    /// What the stand-in answered (`ts` of a posted message, ...).
    pub answer: Value,
}

#[derive(Default)]
struct Inner {
    calls: Mutex<Vec<Call>>,
    messages: Mutex<Vec<(String, String)>>,
    changed: Notify,
    next_ts: AtomicU64,
    /// Answer this many calls with 503 (Slack down).
    down_for: AtomicU32,
    /// The workspace's people, as `users.info` shows them.
    users: Mutex<Vec<Value>>,
}

pub struct FakeSlack {
    pub url: String,
    inner: Arc<Inner>,
    http: reqwest::Client,
    next_response: AtomicU32,
}

impl FakeSlack {
    pub async fn start() -> FakeSlack {
        let inner = Arc::new(Inner::default());
        let app = axum::Router::new()
            .route("/api/{method}", axum::routing::post(web_api))
            .route("/response/{n}", axum::routing::post(response_url))
            .with_state(inner.clone());
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
        FakeSlack {
            url,
            inner,
            http: reqwest::Client::new(),
            next_response: AtomicU32::new(0),
        }
    }

    /// The `[[notify.slack]]` section for pedmd.
    pub fn config(&self) -> String {
        format!(
            "[[notify.slack]]\nname = \"corp\"\nteam_id = \"{TEAM}\"\nbot_token = \"{BOT_TOKEN}\"\n\
             signing_secret = \"{SIGNING_SECRET}\"\nchannel = \"{CHANNEL}\"\n\
             api_url = \"{}/api\"\n",
            self.url
        )
    }

    /// A person in Slack: `id` of workspace `team`, with `email` (confirmed or not).
    pub fn add_user(&self, id: &str, team: &str, email: &str, confirmed: bool) {
        self.inner.users.lock().unwrap().push(json!({
            "id": id, "team_id": team, "name": id.to_lowercase(), "deleted": false,
            "is_bot": false, "is_email_confirmed": confirmed,
            "profile": { "real_name": id, "display_name": id.to_lowercase(), "email": email },
        }));
    }

    /// Answers the next `n` calls with 503.
    pub fn go_down_for(&self, n: u32) {
        self.inner.down_for.store(n, Ordering::SeqCst);
    }

    pub fn calls(&self) -> Vec<Call> {
        self.inner.calls.lock().unwrap().clone()
    }

    /// Waits (at most 30 s) for a call after the first `after` that matches.
    pub async fn wait_call(&self, after: usize, what: &str, pred: impl Fn(&Call) -> bool) -> Call {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let changed = self.inner.changed.notified();
            if let Some(c) = self.calls().into_iter().skip(after).find(|c| pred(c)) {
                return c;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                panic!("Slack never saw {what}; calls: {:#?}", self.calls());
            }
        }
    }

    /// A fresh `response_url` under this stand-in.
    pub fn response_url(&self) -> String {
        let n = self.next_response.fetch_add(1, Ordering::SeqCst);
        format!("{}/response/{n}", self.url)
    }

    /// Posts a signed form to pedmd as Slack would, signed at `at` (Unix seconds) with
    /// `secret`; returns status and body.
    pub async fn post_signed(
        &self,
        url: &str,
        form: &[(&str, &str)],
        secret: &str,
        at: i64,
    ) -> (u16, String, Vec<(String, String)>) {
        let body = serde_urlencoded::to_string(form).unwrap();
        let sig = pedm_notify::slack::sign(secret.as_bytes(), at, body.as_bytes());
        let headers = vec![
            ("X-Slack-Request-Timestamp".to_string(), at.to_string()),
            ("X-Slack-Signature".to_string(), sig),
        ];
        let (status, text) = self.post_raw(url, &body, &headers).await;
        (status, text, headers)
    }

    /// Posts a form to pedmd as Slack would, signed now with the app's real secret.
    pub async fn send(&self, url: &str, form: &[(&str, &str)]) -> (u16, String) {
        let now = jiff::Timestamp::now().as_second();
        let (status, body, _) = self.post_signed(url, form, SIGNING_SECRET, now).await;
        (status, body)
    }

    /// Waits for a `method` call after the first `after` whose blocks contain `text`.
    pub async fn wait_blocks(&self, after: usize, method: &str, text: &str) -> Call {
        self.wait_call(after, &format!("{method} showing {text:?}"), |c| {
            c.method == method && c.body["blocks"].to_string().contains(text)
        })
        .await
    }

    /// Posts a form body with exactly these headers (a replay, a forgery).
    pub async fn post_raw(
        &self,
        url: &str,
        body: &str,
        headers: &[(String, String)],
    ) -> (u16, String) {
        let mut r = self
            .http
            .post(url)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body.to_string());
        for (k, v) in headers {
            r = r.header(k, v);
        }
        let resp = r.send().await.unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }
}

/// A `block_actions` payload: `user` clicked the button `action_id` carrying `value` on the
/// message `ts` in the approvals channel.
pub fn button_click(
    user: &str,
    action_id: &str,
    value: &str,
    ts: &str,
    response_url: &str,
) -> Value {
    json!({
        "type": "block_actions",
        "user": { "id": user, "username": user.to_lowercase(), "name": user.to_lowercase(),
                  "team_id": TEAM },
        "api_app_id": "A0PEDM",
        "token": "verification-token-unused",
        "container": { "type": "message", "message_ts": ts, "channel_id": CHANNEL,
                       "is_ephemeral": false },
        "trigger_id": format!("{ts}.98765.abcdef"),
        "team": { "id": TEAM, "domain": "corp" },
        "enterprise": null,
        "is_enterprise_install": false,
        "channel": { "id": CHANNEL, "name": "approvals" },
        "message": { "type": "message", "ts": ts, "bot_id": "B0PEDM" },
        "state": { "values": {} },
        "response_url": response_url,
        "actions": [{
            "action_id": action_id, "block_id": "pedm_decide",
            "text": { "type": "plain_text", "text": "Approve", "emoji": true },
            "value": value, "type": "button", "action_ts": "1700000000.000001"
        }]
    })
}

/// A `view_submission` payload of the modal `callback_id` by `user`, with `private_metadata`
/// and plain-text inputs (block id = action id) holding these values.
pub fn view_submission(
    user: &str,
    callback_id: &str,
    private_metadata: &str,
    inputs: &[(&str, &str)],
) -> Value {
    let values: serde_json::Map<String, Value> = inputs
        .iter()
        .map(|(id, value)| {
            (
                id.to_string(),
                json!({ *id: { "type": "plain_text_input", "value": value } }),
            )
        })
        .collect();
    json!({
        "type": "view_submission",
        "team": { "id": TEAM, "domain": "corp" },
        "user": { "id": user, "username": user.to_lowercase(), "name": user.to_lowercase(),
                  "team_id": TEAM },
        "api_app_id": "A0PEDM",
        "token": "verification-token-unused",
        "trigger_id": "12345.98765.abcdef",
        "view": {
            "id": "V0PEDM", "team_id": TEAM, "type": "modal", "callback_id": callback_id,
            "private_metadata": private_metadata, "hash": "156772938.1827394",
            "state": { "values": values }
        },
        "response_urls": []
    })
}

/// A `view_submission` payload for the deny modal with `reason`.
pub fn deny_submission(user: &str, request: &str, reason: &str) -> Value {
    view_submission(user, "pedm_deny", request, &[("reason", reason)])
}

/// A `view_submission` of the `/pedm request` form by `user` with its five fields.
pub fn request_submission(user: &str, fields: [&str; 5]) -> Value {
    let ids = ["target", "role", "duration", "justification", "ticket"];
    let inputs: Vec<(&str, &str)> = ids.into_iter().zip(fields).collect();
    view_submission(user, "pedm_request", "", &inputs)
}

/// The form of a `/pedm` slash command typed by `user`.
pub fn slash_command<'a>(
    user: &'a str,
    text: &'a str,
    response_url: &'a str,
) -> Vec<(&'a str, &'a str)> {
    vec![
        ("token", "verification-token-unused"),
        ("team_id", TEAM),
        ("team_domain", "corp"),
        ("channel_id", CHANNEL),
        ("channel_name", "approvals"),
        ("user_id", user),
        ("user_name", user),
        ("command", "/pedm"),
        ("text", text),
        ("api_app_id", "A0PEDM"),
        ("response_url", response_url),
        ("trigger_id", "13345224609.738474920.8088930838d88f008e0"),
    ]
}

fn record(inner: &Inner, method: &str, body: Value, answer: Value) {
    inner.calls.lock().unwrap().push(Call {
        method: method.into(),
        body,
        answer,
    });
    inner.changed.notify_waiters();
}

async fn web_api(
    State(inner): State<Arc<Inner>>,
    Path(method): Path<String>,
    headers: HeaderMap,
    raw: axum::body::Bytes,
) -> Response {
    // Slack takes JSON for the methods that write and form arguments for every method.
    let form = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
    let body: Value = if form {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(&raw).unwrap();
        Value::Object(pairs.into_iter().map(|(k, v)| (k, json!(v))).collect())
    } else {
        match serde_json::from_slice(&raw) {
            Ok(v) => v,
            Err(_) => return Json(json!({ "ok": false, "error": "invalid_json" })).into_response(),
        }
    };
    if method.starts_with("users.") && !form {
        return Json(json!({ "ok": false, "error": "invalid_arguments" })).into_response();
    }
    if inner
        .down_for
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        record(
            &inner,
            &format!("{method} (refused: down)"),
            body,
            Value::Null,
        );
        return (StatusCode::SERVICE_UNAVAILABLE, "down").into_response();
    }
    let fail = |e: &str| Json(json!({ "ok": false, "error": e })).into_response();
    if headers.get("authorization").and_then(|v| v.to_str().ok())
        != Some(&format!("Bearer {BOT_TOKEN}"))
    {
        return fail("invalid_auth");
    }
    let problems = match method.as_str() {
        "views.open" => pedm_notify::slack::block_kit_problems(&body["view"]),
        _ if body.get("blocks").is_some() => {
            pedm_notify::slack::block_kit_problems(&body["blocks"])
        }
        _ => vec![],
    };
    if !problems.is_empty() {
        record(
            &inner,
            &format!("{method} (refused: invalid_blocks)"),
            body,
            json!(problems),
        );
        return Json(json!({ "ok": false, "error": "invalid_blocks", "errors": problems }))
            .into_response();
    }
    let channel = body["channel"].as_str().unwrap_or_default().to_string();
    let answer = match method.as_str() {
        "chat.postMessage" => {
            let known = |id: &str| inner.users.lock().unwrap().iter().any(|u| u["id"] == id);
            let channel = match channel.chars().next() {
                Some('C') => channel,
                // A user id: the app's direct conversation with them.
                Some('U' | 'W') if known(&channel) => format!("D{}", &channel[1..]),
                // A direct conversation opened before.
                Some('D') if known(&format!("U{}", &channel[1..])) => channel,
                _ => return fail("channel_not_found"),
            };
            let n = inner.next_ts.fetch_add(1, Ordering::SeqCst) + 1;
            let ts = format!("1700000000.{n:06}");
            inner
                .messages
                .lock()
                .unwrap()
                .push((channel.clone(), ts.clone()));
            json!({ "ok": true, "channel": channel, "ts": ts,
                    "message": { "type": "message", "text": body["text"], "ts": ts } })
        }
        "chat.update" => {
            let ts = body["ts"].as_str().unwrap_or_default().to_string();
            if !inner
                .messages
                .lock()
                .unwrap()
                .contains(&(channel.clone(), ts.clone()))
            {
                return fail("message_not_found");
            }
            json!({ "ok": true, "channel": channel, "ts": ts, "text": body["text"] })
        }
        "views.open" => {
            if body["trigger_id"].as_str().is_none_or(str::is_empty) {
                return fail("invalid_trigger_id");
            }
            json!({ "ok": true, "view": { "id": "V0PEDM", "type": "modal" } })
        }
        "users.info" => {
            let users = inner.users.lock().unwrap();
            match users.iter().find(|u| u["id"] == body["user"]) {
                Some(u) => json!({ "ok": true, "user": u }),
                None => return fail("user_not_found"),
            }
        }
        "users.lookupByEmail" => {
            let users = inner.users.lock().unwrap();
            match users
                .iter()
                .find(|u| u["profile"]["email"] == body["email"] && u["deleted"] == false)
            {
                Some(u) => json!({ "ok": true, "user": u }),
                None => return fail("users_not_found"),
            }
        }
        _ => return fail("unknown_method"),
    };
    record(&inner, &method, body, answer.clone());
    Json(answer).into_response()
}

async fn response_url(
    State(inner): State<Arc<Inner>>,
    Path(n): Path<u32>,
    Json(body): Json<Value>,
) -> &'static str {
    record(&inner, &format!("response/{n}"), body, Value::Null);
    "ok"
}
