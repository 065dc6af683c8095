//! Ticket systems (`[[tickets.system]]`): Jira (REST API v2, `GET /rest/api/2/issue/{key}`)
//! and ServiceNow (Table API, `change_request` or another table such as `incident`) check a
//! request's ticket before policy decides ([`TicketChecker`] for the core); a grant's ticket
//! gets a comment when the grant starts and ends; and a grant whose ticket closes ends then,
//! not only at its timeout (checked every `poll`).
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
    client: reqwest::Client,
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
            let authorization = match &c.authorization_file {
                None => None,
                Some(p) => Some(
                    std::fs::read_to_string(p)
                        .with_context(|| format!("{what}: authorization_file {}", p.display()))?
                        .trim()
                        .to_string(),
                ),
            };
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
        let Some(s) = tickets
            .named(&facts.system)
            .filter(|s| s.config.end_grants_when_closed)
        else {
            continue;
        };
        let state = match s.lookup(&facts.key, "", None).await {
            Lookup::Found { facts, .. } => facts.state,
            Lookup::Missing => "deleted".into(),
            // Unreachable now: the grant runs to its timeout unless a later poll sees it closed.
            Lookup::Failed(_) => continue,
        };
        if !(s.closed(&state) || state == "deleted") {
            continue;
        }
        let why = format!("ticket {} is {state} in {}", facts.key, s.config.name);
        match cp.end_grant_for_ticket(g.id, why).await {
            Ok(_) => metrics::counter!("pedm_grants_ended_by_ticket_total").increment(1),
            Err(pedm_core::Error::Conflict(_)) => {}
            Err(e) => {
                tracing::error!(grant = %g.id, error = %e, "could not end a grant whose ticket closed")
            }
        }
    }
}
