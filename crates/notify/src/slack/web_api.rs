//! Delivery to Slack: the configured apps, their Web API calls (retried on transport errors,
//! 5xx, 429 and `ratelimited`, honouring `Retry-After`), private answers through an
//! interaction's `response_url`, and the counts `pedm notify status` shows.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::watch;

use super::{SlackApp, SlackConfig, escape_mrkdwn};
use crate::SinkStats;

const ATTEMPTS: u32 = 6;

/// The configured apps and the Web API client.
pub struct Slack {
    pub apps: Vec<Arc<SlackApp>>,
    client: reqwest::Client,
    /// Per app, in order: notices shown, given up on, attempts beyond the first.
    counts: Vec<[AtomicU64; 3]>,
    /// Notices queued, taken from the queue, not queued (full).
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
    /// Checks every `[[notify.slack]]` and reads its secrets.
    pub fn new(configs: Vec<SlackConfig>) -> Result<Slack, String> {
        let apps = configs
            .into_iter()
            .map(|c| c.load().map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .user_agent(concat!("pedm/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("notify.slack: {e}"))?;
        let counts = apps.iter().map(|_| Default::default()).collect();
        Ok(Slack {
            apps,
            client,
            counts,
            queue: Default::default(),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.apps.is_empty()
    }

    /// A notice was queued for the apps (`true`), or dropped because the queue was full.
    pub fn queued(&self, accepted: bool) {
        self.queue[if accepted { 0 } else { 2 }].fetch_add(1, Ordering::Relaxed);
    }

    /// A notice was taken from the queue.
    pub fn taken(&self) {
        self.queue[1].fetch_add(1, Ordering::Relaxed);
    }

    /// `app` showed a notice, or gave up on it.
    pub fn shown(&self, app: &SlackApp, ok: bool) {
        self.count(app, if ok { 0 } else { 1 });
    }

    /// Counts per app since start (the queue is shared by the apps).
    pub fn stats(&self) -> Vec<SinkStats> {
        let q = |i: usize| self.queue[i].load(Ordering::Relaxed);
        self.apps
            .iter()
            .zip(&self.counts)
            .map(|(a, c)| SinkStats {
                name: a.config.name.clone(),
                queued: q(0).saturating_sub(q(1)) as usize,
                enqueued: q(0),
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

    /// One Web API method (`chat.postMessage`, `views.open`, ...), JSON in and out.
    pub async fn call(
        &self,
        app: &SlackApp,
        method: &str,
        body: &Value,
    ) -> Result<Value, CallError> {
        self.call_with(app, method, Args::Json(body)).await
    }

    async fn call_with(
        &self,
        app: &SlackApp,
        method: &str,
        args: Args<'_>,
    ) -> Result<Value, CallError> {
        let url = format!("{}/{method}", app.config.api_url.trim_end_matches('/'));
        let outcome = self.call_once(app, &url, args).await;
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

    async fn call_once(
        &self,
        app: &SlackApp,
        url: &str,
        args: Args<'_>,
    ) -> Result<Value, CallError> {
        let req = self.client.post(url).bearer_auth(&app.bot_token);
        let req = match args {
            Args::Json(body) => req.json(body),
            Args::Form(fields) => req.form(fields),
        };
        let resp = req
            .send()
            .await
            .map_err(|e| CallError::Retry(format!("cannot reach Slack: {e}"), None))?;
        let status = resp.status();
        let retry_after = crate::retry_after(resp.headers());
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
            "text": escape_mrkdwn(text),
        });
        if let Err(e) = self.client.post(response_url).json(&body).send().await {
            tracing::warn!(app = %app.config.name, error = %e, "cannot answer in Slack");
        }
    }
}

/// Arguments of a Web API call: JSON for the methods that write, a form for the ones that
/// read (`users.info` and `users.lookupByEmail` take form or query arguments).
enum Args<'a> {
    Json(&'a Value),
    Form(&'a [(&'a str, &'a str)]),
}

/// What Slack says of one of its users (`users.info`, `users.lookupByEmail`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlackUser {
    pub id: String,
    /// The workspace the user belongs to (another one for a Slack Connect guest).
    pub team_id: String,
    pub email: Option<String>,
    /// Slack's `is_email_confirmed`.
    pub email_confirmed: bool,
    pub deleted: bool,
    pub is_bot: bool,
}

impl SlackUser {
    fn from_api(u: &Value) -> Option<SlackUser> {
        Some(SlackUser {
            id: u["id"].as_str()?.to_string(),
            team_id: u["team_id"].as_str().unwrap_or_default().to_string(),
            email: u["profile"]["email"]
                .as_str()
                .filter(|e| !e.is_empty())
                .map(str::to_string),
            email_confirmed: u["is_email_confirmed"].as_bool() == Some(true),
            deleted: u["deleted"].as_bool() == Some(true),
            is_bot: u["is_bot"].as_bool() == Some(true),
        })
    }

    /// The confirmed address of a live person of `team`, or why it cannot vouch for one.
    pub fn confirmed_email(&self, team: &str) -> Result<&str, String> {
        if self.team_id != team {
            return Err(format!(
                "Slack user {} belongs to workspace {:?}, not {team}",
                self.id, self.team_id
            ));
        }
        if self.deleted || self.is_bot {
            return Err(format!("Slack user {} is deactivated or a bot", self.id));
        }
        match &self.email {
            Some(e) if self.email_confirmed => Ok(e),
            Some(_) => Err(format!(
                "Slack has not confirmed the address of {}",
                self.id
            )),
            None => Err(format!(
                "Slack shows no address for {} (does the app have users:read.email?)",
                self.id
            )),
        }
    }
}

impl Slack {
    /// `users.info`: who a Slack user is.
    pub async fn user_info(&self, app: &SlackApp, user: &str) -> Result<SlackUser, CallError> {
        let v = self
            .call_with(app, "users.info", Args::Form(&[("user", user)]))
            .await?;
        SlackUser::from_api(&v["user"])
            .ok_or_else(|| CallError::Refused("users.info answered without a user".into()))
    }

    /// `users.lookupByEmail`: the Slack user with this address, if any.
    pub async fn user_by_email(
        &self,
        app: &SlackApp,
        email: &str,
    ) -> Result<Option<SlackUser>, CallError> {
        match self
            .call_with(app, "users.lookupByEmail", Args::Form(&[("email", email)]))
            .await
        {
            Ok(v) => Ok(SlackUser::from_api(&v["user"])),
            Err(CallError::Refused(e)) if e == "users_not_found" => Ok(None),
            Err(e) => Err(e),
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
