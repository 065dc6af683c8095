//! The auditor's pages: the log filtered (by actor, action, target, request, time), newest
//! first in pages, one event in full, the verification status of the whole chain against
//! its signed checkpoints, and the exports (JSON Lines, CSV, OCSF) exactly as the API
//! serves them. Reading needs `read_audit` (asked of the core, refusals recorded).

use crate::Console;
use crate::error::{PageError, PageResult};
use crate::pages::{html, nav};
use crate::session::Viewer;
use crate::view::{Nav, short_time};
use askama::Template;
use async_trait::async_trait;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::routing::get;
use jiff::Timestamp;
use pedm_core::store::AuditFilter;
use serde::{Deserialize, Serialize};

/// The newest signed checkpoint.
#[derive(Debug, Clone)]
pub struct CheckpointInfo {
    pub size: u64,
    pub time: Timestamp,
    pub key_id: String,
}

#[derive(Debug, Clone)]
pub struct AuditStatus {
    /// Events checked against the signed checkpoints, or what is wrong with the log.
    pub verified: Result<u64, String>,
    pub newest_checkpoint: Option<CheckpointInfo>,
}

/// The server's audit signer, as the console needs it.
#[async_trait]
pub trait AuditIntegrity: Send + Sync + 'static {
    /// Checks the whole log against its checkpoints now.
    async fn status(&self) -> AuditStatus;
    /// The download the API's `GET /audit/export?format=` gives (`format` is one of jsonl,
    /// csv, ocsf; the caller has checked the viewer may read the log).
    async fn export(&self, format: &str) -> Response;
}

pub fn router() -> Router<Console> {
    Router::new()
        .route("/ui/audit", get(audit))
        .route("/ui/audit/events/{seq}", get(event))
        .route("/ui/audit/export", get(export))
}

const PAGE: u32 = 100;

#[derive(Default, Deserialize, Serialize)]
struct AuditQuery {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    actor: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    action: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    target: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    request: String,
    /// `YYYY-MM-DD` (UTC) or an RFC 3339 time: from (inclusive).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    since: String,
    /// Up to (exclusive).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    until: String,
    /// Events before this sequence number (the next page).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    before: Option<i64>,
}

fn parse_time(field: &str, v: &str) -> PageResult<Option<Timestamp>> {
    let v = v.trim();
    if v.is_empty() {
        return Ok(None);
    }
    if let Ok(t) = v.parse::<Timestamp>() {
        return Ok(Some(t));
    }
    v.parse::<jiff::civil::Date>()
        .ok()
        .and_then(|d| d.to_zoned(jiff::tz::TimeZone::UTC).ok())
        .map(|z| Some(z.timestamp()))
        .ok_or_else(|| {
            PageError::Invalid(format!(
                "invalid {field}: {v:?} is not a date (2026-12-01) or a time (RFC 3339)"
            ))
        })
}

fn opt(s: &str) -> Option<String> {
    Some(s.trim().to_string()).filter(|s| !s.is_empty())
}

struct EventRow {
    seq: i64,
    at: String,
    at_short: String,
    actor: String,
    action: String,
    outcome: String,
    subject: String,
}

struct StatusView {
    ok: bool,
    text: String,
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    nav: Option<Nav>,
    q: AuditQuery,
    rows: Vec<EventRow>,
    older: Option<String>,
    status: Option<StatusView>,
}

async fn status_view(c: &Console) -> Option<StatusView> {
    let st = c.audit.as_ref()?.status().await;
    let cp = st
        .newest_checkpoint
        .map(|k| {
            format!(
                "; newest signed checkpoint: {} events at {} (key {})",
                k.size,
                short_time(k.time),
                k.key_id
            )
        })
        .unwrap_or_else(|| "; no checkpoint signed yet".into());
    Some(match st.verified {
        Ok(n) => StatusView {
            ok: true,
            text: format!("Verified: all {n} events chain and match their signed checkpoints{cp}"),
        },
        Err(why) => StatusView {
            ok: false,
            text: format!("NOT VERIFIED: {why}{cp}"),
        },
    })
}

async fn audit(
    State(c): State<Console>,
    v: Viewer,
    Query(q): Query<AuditQuery>,
) -> PageResult<Response> {
    c.cp.require_audit_reader(&v.actor).await?;
    let request = match opt(&q.request) {
        None => None,
        Some(r) => Some(
            uuid::Uuid::parse_str(&r)
                .map_err(|_| PageError::Invalid(format!("invalid request id {r:?}")))?,
        ),
    };
    let filter = AuditFilter {
        actor: opt(&q.actor),
        action: opt(&q.action),
        target: opt(&q.target),
        request,
        since: parse_time("since", &q.since)?,
        until: parse_time("until", &q.until)?,
        before_seq: q.before,
        newest_first: true,
        limit: Some(PAGE),
        ..Default::default()
    };
    let events = c.cp.audit_events(&v.actor, filter).await?;
    let older = match events.last() {
        Some(e) if events.len() == PAGE as usize => {
            let next = AuditQuery {
                before: Some(e.seq),
                ..AuditQuery {
                    actor: q.actor.clone(),
                    action: q.action.clone(),
                    target: q.target.clone(),
                    request: q.request.clone(),
                    since: q.since.clone(),
                    until: q.until.clone(),
                    before: None,
                }
            };
            serde_urlencoded::to_string(&next).ok()
        }
        _ => None,
    };
    let rows = events
        .iter()
        .map(|e| EventRow {
            seq: e.seq,
            at: e.at.to_string(),
            at_short: short_time(e.at),
            actor: e.actor.clone(),
            action: e.action.clone(),
            outcome: e.outcome.as_str().to_string(),
            subject: e.subject.clone().unwrap_or_default(),
        })
        .collect();
    let status = status_view(&c).await;
    html(AuditPage {
        nav: nav(&c, &v, "audit"),
        status,
        q,
        rows,
        older,
    })
}

#[derive(Template)]
#[template(path = "audit_event.html")]
struct EventPage {
    nav: Option<Nav>,
    seq: i64,
    at: String,
    actor: String,
    action: String,
    outcome: String,
    subject: String,
    data: String,
    hash: String,
    prev_hash: String,
}

async fn event(
    State(c): State<Console>,
    v: Viewer,
    Path(seq): Path<String>,
) -> PageResult<Response> {
    let seq: i64 = seq
        .parse()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| PageError::Invalid(format!("invalid event number {seq:?}")))?;
    let found =
        c.cp.audit_events(
            &v.actor,
            AuditFilter {
                after_seq: Some(seq - 1),
                limit: Some(1),
                ..Default::default()
            },
        )
        .await?;
    let Some(e) = found.into_iter().next().filter(|e| e.seq == seq) else {
        return Err(PageError::Core(pedm_core::Error::NotFound(format!(
            "audit event {seq}"
        ))));
    };
    html(EventPage {
        nav: nav(&c, &v, "audit"),
        seq: e.seq,
        at: e.at.to_string(),
        actor: e.actor.clone(),
        action: e.action.clone(),
        outcome: e.outcome.as_str().to_string(),
        subject: e.subject.clone().unwrap_or_default(),
        data: serde_json::to_string_pretty(&e.data).unwrap_or_default(),
        hash: hex::encode(e.hash),
        prev_hash: hex::encode(e.prev_hash),
    })
}

#[derive(Deserialize)]
struct ExportQuery {
    #[serde(default)]
    format: String,
}

async fn export(
    State(c): State<Console>,
    v: Viewer,
    Query(q): Query<ExportQuery>,
) -> PageResult<Response> {
    c.cp.require_audit_reader(&v.actor).await?;
    if !matches!(q.format.as_str(), "jsonl" | "csv" | "ocsf") {
        return Err(PageError::Invalid(format!(
            "invalid format: {:?} is not one of jsonl, csv, ocsf",
            q.format
        )));
    }
    let Some(a) = &c.audit else {
        return Err(PageError::Core(pedm_core::Error::NotFound(
            "audit exports (checkpoint signing is not configured)".into(),
        )));
    };
    Ok(a.export(&q.format).await)
}
