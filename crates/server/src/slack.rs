//! Slack apps (`[[notify.slack]]`): every request waiting for approval is posted as a message
//! with Approve and Deny buttons, and that message is updated as the request moves (who
//! approved, what is still needed, granted, denied, expired, ended). High-severity notices go
//! to their channel as plain messages.
//!
//! Delivery never touches the request path: the observer only queues; one task per server
//! calls Slack's Web API in order, retrying transport errors, 5xx and rate limits with backoff.
//! Which message shows which request is kept in the database (`integration_state`), so a
//! restart or another instance updates the same message. The clicks come back through
//! [`crate::http::slack`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use pedm_core::model::{ApprovalDecision, Grant, GrantState, Request, RequestState};
use pedm_core::notice::{Notice, Observer};
use pedm_core::service::ControlPlane;
use pedm_notify::Severity;
use pedm_notify::slack::{RequestCard, SlackApp, notice_blocks};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

/// The integration name in `integration_state` and in audit actions (`slack.refused`).
pub const INTEGRATION: &str = "slack";
/// How long a message reference is kept (a request is long decided by then).
const MESSAGE_TTL_SECS: i64 = 90 * 86_400;
const QUEUE: usize = 10_000;
const ATTEMPTS: u32 = 6;

/// The configured apps and the Web API client.
pub struct Slack {
    pub apps: Vec<Arc<SlackApp>>,
    client: reqwest::Client,
    /// Per app, in order: notices shown, given up on, attempts beyond the first.
    counts: Vec<[AtomicU64; 3]>,
    /// Notices queued, notices taken from the queue, notices not queued (full).
    queue: [AtomicU64; 3],
}

/// Why a Web API call failed.
#[derive(Debug)]
pub enum CallError {
    /// Worth another try (transport, 5xx, rate limited), after the given wait if Slack said.
    Retry(String, Option<Duration>),
    /// Slack refused it (`ok: false` with an error other than rate limiting, or a 4xx).
    Refused(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Retry(e, _) | CallError::Refused(e) => f.write_str(e),
        }
    }
}

impl Slack {
    pub fn new(configs: Vec<pedm_notify::slack::SlackConfig>) -> anyhow::Result<Slack> {
        let mut apps = vec![];
        for c in configs {
            apps.push(Arc::new(c.load().map_err(anyhow::Error::msg)?));
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .user_agent(concat!("pedm/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let counts = apps.iter().map(|_| Default::default()).collect();
        Ok(Slack {
            apps,
            client,
            counts,
            queue: Default::default(),
        })
    }

    /// Counts per app since start, for `pedm notify status`.
    pub fn status(&self) -> Vec<pedm_api::ChannelStatus> {
        let q = |i: usize| self.queue[i].load(Ordering::Relaxed);
        self.apps
            .iter()
            .zip(&self.counts)
            .map(|(a, c)| pedm_api::ChannelStatus {
                name: a.config.name.clone(),
                kind: "slack".into(),
                queued: q(0).saturating_sub(q(1)),
                delivered: c[0].load(Ordering::Relaxed),
                failed: c[1].load(Ordering::Relaxed),
                dropped: q(2),
                retries: c[2].load(Ordering::Relaxed),
            })
            .collect()
    }

    fn count(&self, app: &SlackApp, what: usize) {
        if let Some(i) = self
            .apps
            .iter()
            .position(|a| a.config.name == app.config.name)
        {
            self.counts[i][what].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.apps.is_empty()
    }

    /// The app installed in workspace `team`.
    pub fn app_for_team(&self, team: &str) -> Option<&Arc<SlackApp>> {
        self.apps.iter().find(|a| a.config.team_id == team)
    }

    /// One Web API method (`chat.postMessage`, `views.open`, ...), JSON in and out.
    pub async fn call(
        &self,
        app: &SlackApp,
        method: &str,
        body: &Value,
    ) -> Result<Value, CallError> {
        let url = format!("{}/{method}", app.config.api_url.trim_end_matches('/'));
        let outcome = self.call_once(app, &url, body).await;
        let label = match &outcome {
            Ok(_) => "ok",
            Err(CallError::Retry(..)) => "retry",
            Err(CallError::Refused(_)) => "refused",
        };
        metrics::counter!("pedm_slack_calls_total", "app" => app.config.name.clone(),
                          "method" => method.to_string(), "outcome" => label)
        .increment(1);
        outcome
    }

    async fn call_once(&self, app: &SlackApp, url: &str, body: &Value) -> Result<Value, CallError> {
        let resp = self
            .client
            .post(url)
            .bearer_auth(&app.bot_token)
            .json(body)
            .send()
            .await
            .map_err(|e| CallError::Retry(format!("cannot reach Slack: {e}"), None))?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        if status.as_u16() == 429 || status.is_server_error() {
            return Err(CallError::Retry(
                format!("Slack answered {status}"),
                retry_after,
            ));
        }
        if !status.is_success() {
            return Err(CallError::Refused(format!("Slack answered {status}")));
        }
        let v: Value = resp
            .json()
            .await
            .map_err(|e| CallError::Retry(format!("unreadable answer from Slack: {e}"), None))?;
        if v["ok"] == json!(true) {
            return Ok(v);
        }
        let error = v["error"].as_str().unwrap_or("unknown error").to_string();
        if error == "ratelimited" {
            return Err(CallError::Retry(error, retry_after));
        }
        Err(CallError::Refused(error))
    }

    /// [`call`](Self::call) with retries and backoff (1 s, 2 s, 4 s, ... or Slack's
    /// `Retry-After`), giving up after a few attempts or at shutdown.
    pub async fn call_retrying(
        &self,
        app: &SlackApp,
        method: &str,
        body: &Value,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<Value, CallError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.call(app, method, body).await {
                Err(CallError::Retry(e, wait)) if attempt < ATTEMPTS => {
                    self.count(app, 2);
                    let wait = wait.unwrap_or(Duration::from_secs(1 << (attempt - 1)));
                    tracing::warn!(app = %app.config.name, method, error = %e, attempt,
                                   "Slack call failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = shutdown.changed() => return Err(CallError::Retry(e, None)),
                    }
                }
                other => return other,
            }
        }
    }

    /// Answers a user privately through an interaction's `response_url`, which must be
    /// Slack's (or, for a stand-in, under the configured API's origin).
    pub async fn respond(&self, app: &SlackApp, response_url: &str, text: &str) {
        if !response_url_allowed(&app.config.api_url, response_url) {
            tracing::warn!(app = %app.config.name, "refusing a response_url outside Slack");
            return;
        }
        let body = json!({
            "response_type": "ephemeral",
            "replace_original": false,
            "text": pedm_notify::slack::escape_mrkdwn(text),
        });
        if let Err(e) = self.client.post(response_url).json(&body).send().await {
            tracing::warn!(app = %app.config.name, error = %e, "cannot answer in Slack");
        }
    }
}

fn response_url_allowed(api_url: &str, url: &str) -> bool {
    let origin = |u: &str| {
        reqwest::Url::parse(u)
            .ok()
            .map(|u| u.origin().ascii_serialization())
    };
    url.starts_with("https://hooks.slack.com/")
        || (origin(url).is_some() && origin(url) == origin(api_url))
}

/// Queues the notices Slack shows; never blocks.
pub struct SlackObserver(pub mpsc::Sender<Notice>, pub Arc<Slack>);

impl Observer for SlackObserver {
    fn notice(&self, notice: &Notice) {
        let wanted = match notice {
            Notice::RequestPending(_)
            | Notice::RequestDecided(_)
            | Notice::GrantStarted(_)
            | Notice::GrantExtended(_)
            | Notice::GrantEnded(_)
            | Notice::RequestFollowUp { .. } => true,
            n => crate::notify::notification(n).severity == Severity::High,
        };
        if !wanted {
            return;
        }
        if self.0.try_send(notice.clone()).is_ok() {
            self.1.queue[0].fetch_add(1, Ordering::Relaxed);
        } else {
            self.1.queue[2].fetch_add(1, Ordering::Relaxed);
            metrics::counter!("pedm_slack_dropped_total").increment(1);
            tracing::warn!("the Slack queue is full: a notice was not shown in Slack");
        }
    }
}

/// The queue the observer feeds and [`run`] drains.
pub fn queue() -> (mpsc::Sender<Notice>, mpsc::Receiver<Notice>) {
    mpsc::channel(QUEUE)
}

/// Shows each queued notice in every app, in order, until shutdown.
pub async fn run(
    slack: Arc<Slack>,
    cp: Arc<ControlPlane>,
    mut rx: mpsc::Receiver<Notice>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let notice = tokio::select! {
            n = rx.recv() => match n { Some(n) => n, None => return },
            _ = shutdown.changed() => return,
        };
        slack.queue[1].fetch_add(1, Ordering::Relaxed);
        for app in &slack.apps {
            let shown = show(&slack, &cp, app, &notice, &mut shutdown).await;
            slack.count(app, if shown.is_ok() { 0 } else { 1 });
            if let Err(e) = shown {
                metrics::counter!("pedm_slack_failed_total", "app" => app.config.name.clone())
                    .increment(1);
                tracing::error!(app = %app.config.name, error = %e, "could not show a notice in Slack");
            }
        }
    }
}

async fn show(
    slack: &Slack,
    cp: &ControlPlane,
    app: &SlackApp,
    notice: &Notice,
    shutdown: &mut watch::Receiver<bool>,
) -> anyhow::Result<()> {
    if let Notice::RequestFollowUp { request, .. } = notice {
        let key = message_key(app, request);
        let Some(existing) = cp.integration_value(INTEGRATION, &key).await? else {
            return Ok(());
        };
        let Some((channel, ts)) = existing.split_once(' ') else {
            return Ok(());
        };
        let n = crate::notify::notification(notice);
        let body = json!({
            "channel": channel, "thread_ts": ts, "reply_broadcast": true,
            "text": pedm_notify::slack::escape_mrkdwn(&pedm_notify::slack::fit(&n.summary, 3000)),
            "blocks": notice_blocks(&n.summary),
        });
        slack
            .call_retrying(app, "chat.postMessage", &body, shutdown)
            .await
            .map_err(|e| anyhow::anyhow!("chat.postMessage: {e}"))?;
        return Ok(());
    }
    let request = match notice {
        Notice::RequestPending(r) | Notice::RequestDecided(r) => Some(r.clone()),
        Notice::GrantStarted(g) | Notice::GrantExtended(g) | Notice::GrantEnded(g) => {
            cp.store().request(g.request_id).await?
        }
        _ => None,
    };
    let Some(request) = request else {
        let n = crate::notify::notification(notice);
        let body = json!({
            "channel": app.config.channel_for(&n.kind),
            "text": pedm_notify::slack::escape_mrkdwn(&pedm_notify::slack::fit(&n.summary, 3000)),
            "blocks": notice_blocks(&n.summary),
            "unfurl_links": false,
        });
        slack
            .call_retrying(app, "chat.postMessage", &body, shutdown)
            .await
            .map_err(|e| anyhow::anyhow!("chat.postMessage: {e}"))?;
        return Ok(());
    };
    let key = message_key(app, &request);
    let card = card(cp, &request).await?;
    let existing = cp.integration_value(INTEGRATION, &key).await?;
    match existing.as_deref().and_then(|v| v.split_once(' ')) {
        Some((channel, ts)) => {
            let body = json!({ "channel": channel, "ts": ts, "text": card.text(),
                               "blocks": card.blocks() });
            slack
                .call_retrying(app, "chat.update", &body, shutdown)
                .await
                .map_err(|e| anyhow::anyhow!("chat.update: {e}"))?;
        }
        // Only a request that waits for someone gets a message; one decided at once by
        // policy (or expired before it was ever shown) does not.
        None if request.state == RequestState::Pending => {
            let body = json!({ "channel": app.config.channel, "text": card.text(),
                               "blocks": card.blocks(), "unfurl_links": false });
            let posted = slack
                .call_retrying(app, "chat.postMessage", &body, shutdown)
                .await
                .map_err(|e| anyhow::anyhow!("chat.postMessage: {e}"))?;
            let (Some(channel), Some(ts)) = (posted["channel"].as_str(), posted["ts"].as_str())
            else {
                anyhow::bail!("chat.postMessage answered without channel and ts");
            };
            cp.integration_put(
                INTEGRATION,
                &key,
                &format!("{channel} {ts}"),
                Some(MESSAGE_TTL_SECS),
            )
            .await?;
        }
        None => {}
    }
    Ok(())
}

fn message_key(app: &SlackApp, r: &Request) -> String {
    format!("message:{}:{}", app.config.name, r.id)
}

/// The card for a request as it stands now: its approvals, what it still waits for, its
/// grant.
pub async fn card(cp: &ControlPlane, r: &Request) -> anyhow::Result<RequestCard> {
    let approvals = cp.store().approvals(r.id).await?;
    let grant: Option<Grant> = match r.grant_id {
        Some(id) => cp.store().grant(id).await?.map(|g| g.as_of(cp.now())),
        None => None,
    };
    let mut status: Vec<String> = approvals
        .iter()
        .map(|a| {
            let verb = match a.decision {
                ApprovalDecision::Approve => "Approved",
                ApprovalDecision::Deny => "Denied",
            };
            let mut line = format!("{verb} by {}", a.approver);
            if let Some(c) = &a.comment {
                line.push_str(&format!(": {c}"));
            }
            line
        })
        .collect();
    match r.state {
        RequestState::Pending => {
            let tiers = r.tiers().len();
            for (i, t) in r.outstanding(&approvals) {
                let who = t.group.as_deref().unwrap_or("any approver");
                let step = if tiers > 1 {
                    format!(" (step {} of {tiers})", i + 1)
                } else {
                    String::new()
                };
                status.push(format!("Waiting for {} of {who}{step}", t.required));
            }
            status.push(format!("Expires unanswered at {}", r.pending_until));
        }
        RequestState::Approved => {}
        RequestState::Denied
            if approvals
                .iter()
                .any(|a| a.decision == ApprovalDecision::Deny) => {}
        other => status.push(format!(
            "{}{}{}",
            capital(other.as_str()),
            r.decided_by
                .as_deref()
                .map(|b| format!(" by {b}"))
                .unwrap_or_default(),
            r.decision_reason
                .as_deref()
                .map(|w| format!(": {w}"))
                .unwrap_or_default()
        )),
    }
    if let Some(g) = grant {
        status.push(match g.state {
            GrantState::Active => format!("Granted to {} until {}", g.user, g.expires_at),
            ended => format!(
                "Grant {} at {}",
                ended.as_str(),
                g.ended_at.map(|t| t.to_string()).unwrap_or_default()
            ),
        });
    }
    Ok(RequestCard {
        id: r.id.to_string(),
        requester: r.requester.clone(),
        target: r.target.clone(),
        role: r.role.clone(),
        duration: pedm_core::duration::format_duration(r.duration_secs),
        justification: r.justification.clone(),
        ticket: r.ticket.clone(),
        policy: r.policy.clone(),
        status,
        pending: r.state == RequestState::Pending,
        extends: r.context.extends.map(|g| g.to_string()),
    })
}

fn capital(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}
