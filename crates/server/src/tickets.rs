//! Ticket systems (`[[tickets.system]]`): Jira (REST API v2, `GET /rest/api/2/issue/{key}`),
//! ServiceNow (Table API, `change_request` or another table such as `incident`) and any
//! other system that answers a GET with JSON (`kind = "http"`, fields read by JSON pointer)
//! check a request's ticket before policy decides ([`TicketChecker`] for the core); a grant's
//! ticket gets a comment when the grant starts and ends; and a grant whose ticket closes ends
//! then, not only at its timeout: checked every `poll`, and at once when the system pushes a
//! change (`POST /integrations/tickets/{system}`, signed; the push only says which ticket to
//! look at again, so a forged body cannot end anything the system does not confirm).
//!
//! Credentials (`authorization_file`: the whole `Authorization` header value) are read once,
//! never logged. A system that does not answer fails the check closed, unless
//! `on_unavailable = "approval"` sends such requests to approvers.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use jiff::Timestamp;
use pedm_core::model::{Grant, GrantState};
use pedm_core::notice::Notice;
use pedm_core::service::ControlPlane;
use pedm_core::ticket::{TicketCheck, TicketChecker, TicketFacts};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TicketKind {
    Jira,
    Servicenow,
    /// Any system that answers `GET url` (with `{key}` in it) with a JSON document.
    Http,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnUnavailable {
    /// Refuse the request (fail closed).
    #[default]
    Deny,
    /// Let it wait for an approver, whatever policy says.
    Approval,
}

/// `[[tickets.system]]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TicketSystemConfig {
    pub name: String,
    pub kind: TicketKind,
    /// `https://corp.atlassian.net`, `https://corp.service-now.com`.
    pub url: String,
    /// A file holding the `Authorization` header's value (`Basic …`, `Bearer …`).
    #[serde(default)]
    pub authorization_file: Option<PathBuf>,
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Which tickets this system checks (a regular expression over the key, e.g.
    /// `^(OPS|CHG)-[0-9]+$`); the first system that matches checks a ticket.
    pub keys: String,
    /// ServiceNow table (default `change_request`; `incident` for incidents).
    #[serde(default)]
    pub table: Option<String>,
    /// States a ticket must be in to back a request; empty: any state not closed.
    #[serde(default)]
    pub allowed_states: Vec<String>,
    /// States in which a ticket is over: it backs no request, and its grants end.
    #[serde(default = "default_closed")]
    pub closed_states: Vec<String>,
    /// The requester must be the ticket's assignee (by login or mail address).
    #[serde(default)]
    pub require_assignee: bool,
    #[serde(default)]
    pub on_unavailable: OnUnavailable,
    /// Write the grant's id to the ticket when it starts and ends.
    #[serde(default)]
    pub comment: bool,
    /// End a grant when its ticket closes.
    #[serde(default)]
    pub end_grants_when_closed: bool,
    /// How often live grants' tickets are looked at (default `1m`).
    #[serde(default = "default_poll", with = "pedm_notify::duration")]
    pub poll: Duration,
    #[serde(default = "default_timeout", with = "pedm_notify::duration")]
    pub timeout: Duration,
    /// `kind = "http"`: JSON pointers (RFC 6901) into the answer. `state_pointer` is
    /// required; window times are RFC 3339.
    #[serde(default)]
    pub state_pointer: Option<String>,
    #[serde(default)]
    pub assignee_pointer: Option<String>,
    #[serde(default)]
    pub priority_pointer: Option<String>,
    #[serde(default)]
    pub window_start_pointer: Option<String>,
    #[serde(default)]
    pub window_end_pointer: Option<String>,
    /// `kind = "http"`: where comments are POSTed (`{key}` in it), as `{"key", "text"}`.
    #[serde(default)]
    pub comment_url: Option<String>,
    /// A file holding the secret the system signs its pushes with (`X-Hub-Signature:
    /// sha256=<HMAC-SHA256 of the body, hex>`, as Jira's webhooks do); no file: pushes refused.
    #[serde(default)]
    pub webhook_secret_file: Option<PathBuf>,
    /// Where the pushed body names the ticket (default: Jira `/issue/key`, ServiceNow
    /// `/number`, http `/key`).
    #[serde(default)]
    pub webhook_key_pointer: Option<String>,
}

fn default_closed() -> Vec<String> {
    ["Done", "Closed", "Resolved", "Cancelled", "Canceled"]
        .map(String::from)
        .to_vec()
}
fn default_poll() -> Duration {
    Duration::from_secs(60)
}
fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

/// `[tickets]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TicketsConfig {
    #[serde(default)]
    pub system: Vec<TicketSystemConfig>,
}

struct System {
    config: TicketSystemConfig,
    keys: regex::Regex,
    authorization: Option<String>,
    webhook_secret: Option<String>,
    client: reqwest::Client,
}

/// What a pushed change did.
#[derive(Debug, PartialEq, Eq)]
pub enum Pushed {
    /// No system of that name takes pushes.
    UnknownSystem,
    /// Missing or wrong signature.
    Unauthenticated(&'static str),
    /// Signed, but no ticket key where the configuration says.
    Unreadable(String),
    /// Looked at again: this many grants ended.
    Checked { key: String, ended: usize },
}

/// What one lookup found.
enum Lookup {
    Found {
        facts: TicketFacts,
        /// ServiceNow's record id, for comments.
        sys_id: Option<String>,
    },
    Missing,
    Failed(String),
}

/// The configured systems.
pub struct Tickets {
    systems: Vec<System>,
}

impl Tickets {
    pub fn new(config: &TicketsConfig) -> anyhow::Result<Tickets> {
        let mut systems = vec![];
        for c in &config.system {
            let what = format!("tickets.system {}", c.name);
            if !(c.url.starts_with("https://") || c.url.starts_with("http://127.")) {
                bail!("{what}: url must be https:// (plain http only on loopback)");
            }
            let keys = regex::Regex::new(&c.keys).with_context(|| format!("{what}: keys"))?;
            let read = |p: &Option<PathBuf>, field: &str| -> anyhow::Result<Option<String>> {
                match p {
                    None => Ok(None),
                    Some(p) => Ok(Some(
                        std::fs::read_to_string(p)
                            .with_context(|| format!("{what}: {field} {}", p.display()))?
                            .trim()
                            .to_string(),
                    )),
                }
            };
            let authorization = read(&c.authorization_file, "authorization_file")?;
            let webhook_secret = read(&c.webhook_secret_file, "webhook_secret_file")?;
            if webhook_secret.as_deref().is_some_and(|s| s.len() < 16) {
                bail!("{what}: webhook_secret_file must hold at least 16 characters");
            }
            let pointers = [
                &c.state_pointer,
                &c.assignee_pointer,
                &c.priority_pointer,
                &c.window_start_pointer,
                &c.window_end_pointer,
                &c.webhook_key_pointer,
            ];
            if pointers
                .iter()
                .filter_map(|p| p.as_deref())
                .any(|p| !p.starts_with('/'))
            {
                bail!("{what}: JSON pointers start with / (e.g. /fields/status)");
            }
            if c.kind == TicketKind::Http {
                if !c.url.contains("{key}") {
                    bail!("{what}: url must name the ticket with {{key}} (kind = \"http\")");
                }
                if c.state_pointer.is_none() {
                    bail!("{what}: state_pointer is required (kind = \"http\")");
                }
                if c.comment
                    && c.comment_url
                        .as_deref()
                        .is_none_or(|u| !u.contains("{key}"))
                {
                    bail!(
                        "{what}: comment = true needs comment_url with {{key}} (kind = \"http\")"
                    );
                }
            }
            let builder = reqwest::Client::builder()
                .timeout(c.timeout)
                .user_agent(concat!("pedm/", env!("CARGO_PKG_VERSION")));
            let client = pedm_notify::tls::with_ca(builder, c.ca_file.as_deref())
                .map_err(anyhow::Error::msg)?
                .build()
                .with_context(|| what.clone())?;
            systems.push(System {
                config: c.clone(),
                keys,
                authorization,
                webhook_secret,
                client,
            });
        }
        Ok(Tickets { systems })
    }

    pub fn is_empty(&self) -> bool {
        self.systems.is_empty()
    }

    fn system_for(&self, key: &str) -> Option<&System> {
        self.systems.iter().find(|s| s.keys.is_match(key))
    }

    fn named(&self, name: &str) -> Option<&System> {
        self.systems.iter().find(|s| s.config.name == name)
    }

    /// A change pushed by system `name`: checks the signature over `body`, reads which
    /// ticket it is about, looks that ticket up again and ends its grants if the system now
    /// says it is closed (and the system binds grants to tickets).
    pub async fn pushed(
        &self,
        cp: &ControlPlane,
        name: &str,
        body: &[u8],
        signature: Option<&str>,
    ) -> Pushed {
        let Some(s) = self.named(name) else {
            return Pushed::UnknownSystem;
        };
        let Some(secret) = &s.webhook_secret else {
            return Pushed::UnknownSystem;
        };
        let Some(sig) = signature.and_then(|v| v.trim().strip_prefix("sha256=")) else {
            return Pushed::Unauthenticated("no X-Hub-Signature: sha256=…");
        };
        if !hub_signature_matches(secret.as_bytes(), body, sig) {
            return Pushed::Unauthenticated("the signature does not match");
        }
        let doc: Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => return Pushed::Unreadable(format!("the body is not JSON: {e}")),
        };
        let pointer = s
            .config
            .webhook_key_pointer
            .as_deref()
            .unwrap_or(match s.config.kind {
                TicketKind::Jira => "/issue/key",
                TicketKind::Servicenow => "/number",
                TicketKind::Http => "/key",
            });
        let Some(key) = doc
            .pointer(pointer)
            .and_then(Value::as_str)
            .filter(|k| s.keys.is_match(k))
        else {
            return Pushed::Unreadable(format!(
                "no ticket key of this system at {pointer} in the body"
            ));
        };
        metrics::counter!("pedm_ticket_pushes_total", "system" => s.config.name.clone())
            .increment(1);
        let mut ended = 0;
        match cp.live_ticket_grants().await {
            Ok(live) => {
                for (g, facts) in live {
                    if facts.system == s.config.name
                        && facts.key == key
                        && end_if_closed(s, cp, &g, &facts).await
                    {
                        ended += 1;
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "could not read live grants for their tickets"),
        }
        Pushed::Checked {
            key: key.to_string(),
            ended,
        }
    }
}

/// `sig_hex` is the HMAC-SHA256 of `body` under `secret` (compared in constant time).
fn hub_signature_matches(secret: &[u8], body: &[u8], sig_hex: &str) -> bool {
    use hmac::{KeyInit, Mac};
    let Ok(given) = hex::decode(sig_hex) else {
        return false;
    };
    let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&given).is_ok()
}

impl System {
    fn get(&self, url: &str) -> reqwest::RequestBuilder {
        let mut r = self.client.get(url).header("Accept", "application/json");
        if let Some(a) = &self.authorization {
            r = r.header("Authorization", a);
        }
        r
    }

    fn send_json(
        &self,
        method: reqwest::Method,
        url: &str,
        body: &Value,
    ) -> reqwest::RequestBuilder {
        let mut r = self
            .client
            .request(method, url)
            .header("Accept", "application/json")
            .json(body);
        if let Some(a) = &self.authorization {
            r = r.header("Authorization", a);
        }
        r
    }

    fn base(&self) -> &str {
        self.config.url.trim_end_matches('/')
    }

    fn table(&self) -> &str {
        self.config.table.as_deref().unwrap_or("change_request")
    }

    /// Reads `key` (which matched `keys`, so it holds no URL syntax we did not allow).
    async fn lookup(&self, key: &str, requester: &str, email: Option<&str>) -> Lookup {
        let enc = utf8_percent(key);
        if self.config.kind == TicketKind::Http {
            return self.lookup_http(key, &enc, requester, email).await;
        }
        let (url, jira) = match self.config.kind {
            TicketKind::Jira => (
                format!(
                    "{}/rest/api/2/issue/{enc}?fields=status,assignee,priority",
                    self.base()
                ),
                true,
            ),
            TicketKind::Servicenow => (
                format!(
                    "{}/api/now/table/{}?sysparm_query=number%3D{enc}&sysparm_limit=1\
                     &sysparm_display_value=all&sysparm_fields=sys_id,number,state,priority,\
                     assigned_to.user_name,assigned_to.email,start_date,end_date",
                    self.base(),
                    self.table()
                ),
                false,
            ),
            TicketKind::Http => unreachable!("answered above"),
        };
        let answer = match self.get(&url).send().await {
            Ok(a) => a,
            Err(e) => return Lookup::Failed(transport(&e)),
        };
        let status = answer.status();
        if status == reqwest::StatusCode::NOT_FOUND && jira {
            return Lookup::Missing;
        }
        if !status.is_success() {
            return Lookup::Failed(format!("HTTP {}", status.as_u16()));
        }
        let body: Value = match answer.json().await {
            Ok(b) => b,
            Err(_) => return Lookup::Failed("an answer that is not JSON".into()),
        };
        let name = self.config.name.clone();
        let matches = |who: &[Option<&str>]| {
            who.iter().flatten().any(|w| {
                w.eq_ignore_ascii_case(requester)
                    || email.is_some_and(|e| w.eq_ignore_ascii_case(e))
            })
        };
        if jira {
            let f = &body["fields"];
            let assignee = &f["assignee"];
            let login = assignee["name"].as_str();
            let mail = assignee["emailAddress"].as_str();
            let Some(state) = f["status"]["name"].as_str() else {
                return Lookup::Failed("an issue without fields.status.name".into());
            };
            return Lookup::Found {
                facts: TicketFacts {
                    system: name,
                    key: key.to_string(),
                    state: state.to_string(),
                    priority: f["priority"]["name"].as_str().map(String::from),
                    assignee: mail.or(login).map(String::from),
                    assigned_to_requester: matches(&[login, mail]),
                    window_start: None,
                    window_end: None,
                },
                sys_id: None,
            };
        }
        let Some(rec) = body["result"].as_array().and_then(|r| r.first()) else {
            return Lookup::Missing;
        };
        // `sysparm_display_value=all`: each field is {display_value, value}.
        let display = |f: &str| {
            rec[f]["display_value"]
                .as_str()
                .or(rec[f].as_str())
                .filter(|s| !s.is_empty())
        };
        let value = |f: &str| {
            rec[f]["value"]
                .as_str()
                .or(rec[f].as_str())
                .filter(|s| !s.is_empty())
        };
        // Table API date-times ("2026-12-05 22:00:00") are UTC in `value`.
        let when = |f: &str| {
            value(f).and_then(|v| {
                format!("{}Z", v.replace(' ', "T"))
                    .parse::<Timestamp>()
                    .ok()
            })
        };
        let Some(state) = display("state") else {
            return Lookup::Failed("a record without state".into());
        };
        let login = value("assigned_to.user_name");
        let mail = value("assigned_to.email");
        Lookup::Found {
            facts: TicketFacts {
                system: name,
                key: key.to_string(),
                state: state.to_string(),
                priority: display("priority").map(String::from),
                assignee: mail.or(login).map(String::from),
                assigned_to_requester: matches(&[login, mail]),
                window_start: when("start_date"),
                window_end: when("end_date"),
            },
            sys_id: value("sys_id").map(String::from),
        }
    }

    /// `kind = "http"`: GET the ticket's URL, read the fields by JSON pointer.
    async fn lookup_http(
        &self,
        key: &str,
        enc: &str,
        requester: &str,
        email: Option<&str>,
    ) -> Lookup {
        let url = self.config.url.replace("{key}", enc);
        let answer = match self.get(&url).send().await {
            Ok(a) => a,
            Err(e) => return Lookup::Failed(transport(&e)),
        };
        if answer.status() == reqwest::StatusCode::NOT_FOUND {
            return Lookup::Missing;
        }
        if !answer.status().is_success() {
            return Lookup::Failed(format!("HTTP {}", answer.status().as_u16()));
        }
        let Ok(doc) = answer.json::<Value>().await else {
            return Lookup::Failed("an answer that is not JSON".into());
        };
        let field = |p: &Option<String>| {
            p.as_deref()
                .and_then(|p| doc.pointer(p))
                .and_then(|v| match v {
                    Value::String(s) => Some(s.clone()),
                    Value::Number(n) => Some(n.to_string()),
                    _ => None,
                })
                .filter(|s| !s.is_empty())
        };
        let Some(state) = field(&self.config.state_pointer) else {
            return Lookup::Failed("an answer without the state field".into());
        };
        let assignee = field(&self.config.assignee_pointer);
        let when = |p: &Option<String>| field(p).and_then(|v| v.parse::<Timestamp>().ok());
        Lookup::Found {
            facts: TicketFacts {
                system: self.config.name.clone(),
                key: key.to_string(),
                state,
                priority: field(&self.config.priority_pointer),
                assigned_to_requester: assignee.as_deref().is_some_and(|a| {
                    a.eq_ignore_ascii_case(requester)
                        || email.is_some_and(|e| a.eq_ignore_ascii_case(e))
                }),
                assignee,
                window_start: when(&self.config.window_start_pointer),
                window_end: when(&self.config.window_end_pointer),
            },
            sys_id: None,
        }
    }

    fn closed(&self, state: &str) -> bool {
        self.config
            .closed_states
            .iter()
            .any(|c| c.eq_ignore_ascii_case(state))
    }

    /// Writes `text` on the ticket: a Jira comment, a ServiceNow work note.
    async fn comment(&self, key: &str, text: &str) -> anyhow::Result<()> {
        let url = match self.config.kind {
            TicketKind::Jira => {
                let url = format!(
                    "{}/rest/api/2/issue/{}/comment",
                    self.base(),
                    utf8_percent(key)
                );
                self.send_json(reqwest::Method::POST, &url, &json!({ "body": text }))
            }
            TicketKind::Servicenow => {
                let Lookup::Found {
                    sys_id: Some(id), ..
                } = self.lookup(key, "", None).await
                else {
                    bail!("{} has no record {key} to write on", self.config.name);
                };
                let url = format!(
                    "{}/api/now/table/{}/{}",
                    self.base(),
                    self.table(),
                    utf8_percent(&id)
                );
                self.send_json(reqwest::Method::PATCH, &url, &json!({ "work_notes": text }))
            }
            TicketKind::Http => {
                let Some(template) = &self.config.comment_url else {
                    bail!("{} has no comment_url", self.config.name);
                };
                let url = template.replace("{key}", &utf8_percent(key));
                self.send_json(
                    reqwest::Method::POST,
                    &url,
                    &json!({ "key": key, "text": text }),
                )
            }
        };
        let answer = url
            .send()
            .await
            .map_err(|e| anyhow::anyhow!(transport(&e)))?;
        if !answer.status().is_success() {
            bail!("HTTP {}", answer.status().as_u16());
        }
        Ok(())
    }
}

/// A transport error without the URL (which may carry a query someone finds sensitive).
fn transport(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "no answer in time".into()
    } else if e.is_connect() {
        "cannot connect".into()
    } else {
        "transport error".into()
    }
}

/// Percent-encodes everything but unreserved characters.
fn utf8_percent(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[async_trait::async_trait]
impl TicketChecker for Tickets {
    async fn check(&self, key: &str, requester: &str, email: Option<&str>) -> TicketCheck {
        let Some(s) = self.system_for(key) else {
            return TicketCheck::NotHandled;
        };
        let system = s.config.name.clone();
        let facts = match s.lookup(key, requester, email).await {
            Lookup::Found { facts, .. } => facts,
            Lookup::Missing => {
                return TicketCheck::Refused {
                    reason: format!("ticket {key} does not exist in {system}"),
                    system,
                };
            }
            Lookup::Failed(error) => {
                metrics::counter!("pedm_ticket_checks_total", "system" => system.clone(),
                    "outcome" => "unavailable")
                .increment(1);
                return TicketCheck::Unavailable {
                    system,
                    error,
                    to_approvers: s.config.on_unavailable == OnUnavailable::Approval,
                };
            }
        };
        let refused = |why: String| TicketCheck::Refused {
            reason: format!("ticket {key} in {system}: {why}"),
            system: system.clone(),
        };
        metrics::counter!("pedm_ticket_checks_total", "system" => system.clone(),
            "outcome" => "answered")
        .increment(1);
        if s.closed(&facts.state) {
            return refused(format!("it is {} (closed)", facts.state));
        }
        if !s.config.allowed_states.is_empty()
            && !s
                .config
                .allowed_states
                .iter()
                .any(|a| a.eq_ignore_ascii_case(&facts.state))
        {
            return refused(format!(
                "it is {}, not one of {}",
                facts.state,
                s.config.allowed_states.join(", ")
            ));
        }
        if s.config.require_assignee && !facts.assigned_to_requester {
            return refused(format!(
                "it is assigned to {}, not to {requester}",
                facts.assignee.as_deref().unwrap_or("nobody")
            ));
        }
        TicketCheck::Valid(facts)
    }
}

/// Ticket comments as an outbox channel: grant starts and ends written on their tickets.
pub struct TicketChannel {
    pub tickets: Arc<Tickets>,
    pub cp: Arc<ControlPlane>,
}

#[async_trait::async_trait]
impl crate::outbox::Channel for TicketChannel {
    fn name(&self) -> String {
        "tickets".into()
    }

    fn wants(&self, notice: &Notice) -> bool {
        matches!(notice, Notice::GrantStarted(_) | Notice::GrantEnded(_))
    }

    async fn deliver(
        &self,
        _item: &pedm_core::notice::OutboxItem,
        notice: &Notice,
        _delivery_id: uuid::Uuid,
        shutdown: &mut watch::Receiver<bool>,
    ) -> crate::outbox::Outcome {
        let (Notice::GrantStarted(g) | Notice::GrantEnded(g)) = notice else {
            return crate::outbox::Outcome::Done;
        };
        for wait in [1, 5, 30] {
            if comment_on(&self.tickets, &self.cp, g).await {
                return crate::outbox::Outcome::Done;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(wait)) => {}
                _ = shutdown.changed() => return crate::outbox::Outcome::Interrupted,
            }
        }
        if comment_on(&self.tickets, &self.cp, g).await {
            crate::outbox::Outcome::Done
        } else {
            crate::outbox::Outcome::GaveUp
        }
    }
}

/// Ends grants whose tickets closed, polling the systems that bind grants to tickets.
pub async fn run(
    tickets: Arc<Tickets>,
    cp: Arc<ControlPlane>,
    mut shutdown: watch::Receiver<bool>,
) {
    let Some(poll) = tickets
        .systems
        .iter()
        .filter(|s| s.config.end_grants_when_closed)
        .map(|s| s.config.poll)
        .min()
    else {
        return;
    };
    let mut tick = tokio::time::interval(poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => end_closed(&tickets, &cp).await,
            _ = shutdown.changed() => return,
        }
    }
}

/// Writes `g`'s start or end on its ticket; false when the system would not take it.
async fn comment_on(tickets: &Tickets, cp: &ControlPlane, g: &Grant) -> bool {
    let r = match cp.store().request(g.request_id).await {
        Ok(Some(r)) => r,
        Ok(None) => return true,
        Err(e) => {
            tracing::error!(grant = %g.id, error = %e, "could not read a grant's request for its ticket");
            return false;
        }
    };
    let Some(facts) = r.context.ticket else {
        return true;
    };
    let Some(s) = tickets.named(&facts.system).filter(|s| s.config.comment) else {
        return true;
    };
    let text = if g.state == GrantState::Active {
        format!(
            "pedm grant {}: {} holds {} on {} from {} until {} (request {}).",
            g.id, g.user, g.role, g.target, g.starts_at, g.expires_at, g.request_id
        )
    } else {
        format!(
            "pedm grant {} ({} on {} for {}) ended: {}{}.",
            g.id,
            g.role,
            g.target,
            g.user,
            g.state,
            g.end_reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        )
    };
    let outcome = s.comment(&facts.key, &text).await;
    metrics::counter!("pedm_ticket_comments_total", "system" => s.config.name.clone(),
        "outcome" => if outcome.is_ok() { "written" } else { "failed" })
    .increment(1);
    if let Err(e) = &outcome {
        tracing::warn!(system = %s.config.name, ticket = %facts.key, error = %e,
            "could not write on the ticket");
    }
    outcome.is_ok()
}

/// Ends every live grant whose ticket is now closed in a system that binds grants to tickets.
async fn end_closed(tickets: &Tickets, cp: &ControlPlane) {
    let live = match cp.live_ticket_grants().await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "could not read live grants for their tickets");
            return;
        }
    };
    for (g, facts) in live {
        if let Some(s) = tickets.named(&facts.system) {
            end_if_closed(s, cp, &g, &facts).await;
        }
    }
}

/// Looks `facts`' ticket up again and ends `g` if the system binds grants to tickets and now
/// says the ticket is closed (or gone). True if it ended `g`.
async fn end_if_closed(s: &System, cp: &ControlPlane, g: &Grant, facts: &TicketFacts) -> bool {
    if !s.config.end_grants_when_closed {
        return false;
    }
    let state = match s.lookup(&facts.key, "", None).await {
        Lookup::Found { facts, .. } => facts.state,
        Lookup::Missing => "deleted".into(),
        // Unreachable now: the grant runs to its timeout unless a later look sees it closed.
        Lookup::Failed(_) => return false,
    };
    if !(s.closed(&state) || state == "deleted") {
        return false;
    }
    let why = format!("ticket {} is {state} in {}", facts.key, s.config.name);
    match cp.end_grant_as_system(g.id, why).await {
        Ok(_) => {
            metrics::counter!("pedm_grants_ended_by_ticket_total").increment(1);
            true
        }
        Err(pedm_core::Error::Conflict(_)) => false,
        Err(e) => {
            tracing::error!(grant = %g.id, error = %e, "could not end a grant whose ticket closed");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_signature_matches_the_documented_example() {
        // GitHub's documented X-Hub-Signature-256 example (the scheme Jira's webhooks share).
        let secret = b"It's a Secret to Everybody";
        let sig = "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert!(hub_signature_matches(secret, b"Hello, World!", sig));
        assert!(!hub_signature_matches(secret, b"Hello, World?", sig));
        assert!(!hub_signature_matches(b"another", b"Hello, World!", sig));
        assert!(!hub_signature_matches(secret, b"Hello, World!", "not hex"));
    }

    #[test]
    fn a_generic_system_must_say_where_the_ticket_and_its_state_are() {
        let config = |extra: Value| -> TicketsConfig {
            let mut system = json!({"name": "h", "kind": "http", "keys": "^I-[0-9]+$"});
            if let (Some(s), Some(e)) = (system.as_object_mut(), extra.as_object()) {
                s.extend(e.clone());
            }
            serde_json::from_value(json!({ "system": [system] })).unwrap()
        };
        let url = "https://h.example/t/{key}";
        for (extra, problem) in [
            (
                json!({"url": "https://h.example/t", "state_pointer": "/s"}),
                "{key}",
            ),
            (json!({"url": url}), "state_pointer"),
            (json!({"url": url, "state_pointer": "s"}), "JSON pointers"),
            (
                json!({"url": url, "state_pointer": "/s", "comment": true}),
                "comment_url",
            ),
        ] {
            let e = Tickets::new(&config(extra.clone())).err().expect("refused");
            assert!(format!("{e:#}").contains(problem), "{extra}: {e:#}");
        }
        assert!(Tickets::new(&config(json!({"url": url, "state_pointer": "/s"}))).is_ok());
    }
}
