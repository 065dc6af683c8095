//! Who is on call now (`principal.on_call` in policy), from `[oncall]`: a JSON file or an
//! HTTP endpoint in the shape of PagerDuty's `GET /oncalls` answer, refreshed in the
//! background:
//!
//! ```json
//! {"oncalls": [{"user": {"id": "PXPGF42", "summary": "Bob", "email": "bob@example.com"},
//!               "start": "2026-12-06T08:00:00Z", "end": "2026-12-06T20:00:00Z"}]}
//! ```
//!
//! `start`/`end` may be null (a permanent entry). `user_field` says which field is the pedm
//! user name (`email_local_part`, the default, takes `bob` from `bob@example.com`).
//!
//! Fails closed: with no successful refresh for `max_age`, nobody counts as on call (a policy
//! that auto-approves on-call engineers then routes them to approvers), and
//! `pedm_oncall_stale` is 1.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use jiff::Timestamp;
use pedm_core::service::ControlPlane;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// `[oncall]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnCallConfig {
    /// A JSON file in the `oncalls` shape, read again at every refresh.
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// Or an endpoint answering that shape (PagerDuty: `https://api.pagerduty.com/oncalls`).
    #[serde(default)]
    pub url: Option<String>,
    /// The `Authorization` header for `url`, read from this file (PagerDuty:
    /// `Token token=<key>`); never logged.
    #[serde(default)]
    pub authorization_file: Option<PathBuf>,
    /// A CA (PEM) to trust for `url` besides the system's.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// How often to refresh (default `1m`).
    #[serde(default = "default_refresh")]
    pub refresh: String,
    /// Without a successful refresh for this long, nobody is on call (default `5m`).
    #[serde(default = "default_max_age")]
    pub max_age: String,
    /// `email_local_part` (default), `email`, `summary` or `id`.
    #[serde(default = "default_user_field")]
    pub user_field: String,
}

fn default_refresh() -> String {
    "1m".into()
}
fn default_max_age() -> String {
    "5m".into()
}
fn default_user_field() -> String {
    "email_local_part".into()
}

#[derive(Deserialize)]
struct OnCalls {
    oncalls: Vec<Entry>,
}

#[derive(Deserialize)]
struct Entry {
    user: EntryUser,
    #[serde(default)]
    start: Option<Timestamp>,
    #[serde(default)]
    end: Option<Timestamp>,
}

#[derive(Deserialize)]
struct EntryUser {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    summary: Option<String>,
    #[serde(default)]
    email: Option<String>,
}

#[derive(Debug, Clone)]
struct Shift {
    user: String,
    start: Option<Timestamp>,
    end: Option<Timestamp>,
}

#[derive(Default)]
struct Snapshot {
    fetched: Option<Instant>,
    shifts: Vec<Shift>,
}

/// The on-call schedule as last read. Without `[oncall]`, nobody is ever on call.
pub struct OnCall {
    config: Option<OnCallConfig>,
    refresh: Duration,
    max_age: Duration,
    client: reqwest::Client,
    snapshot: RwLock<Snapshot>,
}

fn duration(what: &str, v: &str) -> anyhow::Result<Duration> {
    let secs =
        pedm_core::duration::parse_duration(v).map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
    Ok(Duration::from_secs(secs.max(1) as u64))
}

impl OnCall {
    pub fn new(config: Option<OnCallConfig>) -> anyhow::Result<OnCall> {
        let mut client = reqwest::Client::builder().timeout(Duration::from_secs(10));
        let (mut refresh, mut max_age) = (Duration::from_secs(60), Duration::from_secs(300));
        if let Some(c) = &config {
            if c.file.is_some() == c.url.is_some() {
                bail!("oncall: set exactly one of file and url");
            }
            if let Some(u) = &c.url
                && !(u.starts_with("https://") || u.starts_with("http://127."))
            {
                bail!("oncall.url: must be https:// (plain http only on loopback)");
            }
            if !matches!(
                c.user_field.as_str(),
                "email_local_part" | "email" | "summary" | "id"
            ) {
                bail!("oncall.user_field: use email_local_part, email, summary or id");
            }
            refresh = duration("oncall.refresh", &c.refresh)?;
            max_age = duration("oncall.max_age", &c.max_age)?;
            client = pedm_notify::tls::with_ca(client, c.ca_file.as_deref())
                .map_err(anyhow::Error::msg)?;
        }
        Ok(OnCall {
            config,
            refresh,
            max_age,
            client: client.build()?,
            snapshot: RwLock::default(),
        })
    }

    /// Whether `user` is on call now (false when the schedule is stale or unconfigured).
    pub fn is_on_call(&self, user: &str) -> bool {
        let Ok(s) = self.snapshot.read() else {
            return false;
        };
        if s.fetched.is_none_or(|f| f.elapsed() > self.max_age) {
            return false;
        }
        let now = Timestamp::now();
        s.shifts.iter().any(|sh| {
            sh.user == user && sh.start.is_none_or(|t| t <= now) && sh.end.is_none_or(|t| now < t)
        })
    }

    async fn fetch(&self, c: &OnCallConfig) -> anyhow::Result<Vec<Shift>> {
        let body = match (&c.file, &c.url) {
            (Some(f), _) => tokio::fs::read(f)
                .await
                .with_context(|| format!("oncall.file {}", f.display()))?,
            (None, Some(u)) => {
                let mut r = self.client.get(u);
                if let Some(a) = &c.authorization_file {
                    let v = tokio::fs::read_to_string(a)
                        .await
                        .with_context(|| format!("oncall.authorization_file {}", a.display()))?;
                    r = r.header(reqwest::header::AUTHORIZATION, v.trim());
                }
                let resp = r.send().await.context("oncall.url")?;
                if !resp.status().is_success() {
                    bail!("oncall.url answered {}", resp.status());
                }
                resp.bytes().await.context("oncall.url")?.to_vec()
            }
            (None, None) => bail!("oncall: no source"),
        };
        let parsed: OnCalls =
            serde_json::from_slice(&body).context("not an {\"oncalls\": [...]} document")?;
        Ok(parsed
            .oncalls
            .into_iter()
            .filter_map(|e| {
                let u = e.user;
                let user = match c.user_field.as_str() {
                    "email_local_part" => u
                        .email
                        .and_then(|m| m.split('@').next().map(str::to_string)),
                    "email" => u.email,
                    "summary" => u.summary,
                    _ => u.id,
                }?;
                Some(Shift {
                    user,
                    start: e.start,
                    end: e.end,
                })
            })
            .collect())
    }

    /// Reads the schedule once; on failure the last one stays until it is `max_age` old.
    pub async fn refresh_once(&self) -> anyhow::Result<()> {
        let Some(c) = &self.config else {
            return Ok(());
        };
        match self.fetch(c).await {
            Ok(shifts) => {
                let now = Timestamp::now();
                let on = shifts
                    .iter()
                    .filter(|s| s.start.is_none_or(|t| t <= now) && s.end.is_none_or(|t| now < t))
                    .count();
                if let Ok(mut s) = self.snapshot.write() {
                    *s = Snapshot {
                        fetched: Some(Instant::now()),
                        shifts,
                    };
                }
                metrics::gauge!("pedm_oncall_users").set(on as f64);
                metrics::gauge!("pedm_oncall_stale").set(0.0);
                metrics::counter!("pedm_oncall_refreshes_total", "outcome" => "ok").increment(1);
                Ok(())
            }
            Err(e) => {
                metrics::counter!("pedm_oncall_refreshes_total", "outcome" => "failed")
                    .increment(1);
                let stale = self
                    .snapshot
                    .read()
                    .map(|s| s.fetched.is_none_or(|f| f.elapsed() > self.max_age))
                    .unwrap_or(true);
                metrics::gauge!("pedm_oncall_stale").set(if stale { 1.0 } else { 0.0 });
                Err(e)
            }
        }
    }

    /// Ends the grants given while on call (`@while_on_call`) whose holders are no longer on
    /// call (a stale schedule counts as nobody on call: fail closed). Returns how many.
    pub async fn end_off_call(&self, cp: &ControlPlane) -> usize {
        let live = match cp.live_on_call_grants().await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "could not read the grants bound to on-call shifts");
                return 0;
            }
        };
        let mut ended = 0;
        for g in live {
            if self.is_on_call(&g.user) {
                continue;
            }
            let why = format!("{} is no longer on call", g.user);
            match cp.end_grant_as_system(g.id, why).await {
                Ok(_) => {
                    ended += 1;
                    metrics::counter!("pedm_grants_ended_off_call_total").increment(1);
                }
                Err(pedm_core::Error::Conflict(_)) => {}
                Err(e) => {
                    tracing::error!(grant = %g.id, error = %e, "could not end a grant whose holder's shift ended")
                }
            }
        }
        ended
    }

    /// Refreshes every `refresh` until shutdown, ending the grants of shifts that ended.
    pub async fn run(self: Arc<Self>, cp: Arc<ControlPlane>, mut shutdown: watch::Receiver<bool>) {
        if self.config.is_none() {
            return;
        }
        loop {
            if let Err(e) = self.refresh_once().await {
                tracing::warn!(error = %format!("{e:#}"), "cannot read the on-call schedule");
            }
            self.end_off_call(&cp).await;
            tokio::select! {
                _ = tokio::time::sleep(self.refresh) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}
