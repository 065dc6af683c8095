//! Sessions: those live now (see [`crate::watch`]) and the recorded ones (one's own, or
//! everyone's with `read_audit`), and a replay in
//! the page with the vendored asciinema-player. A recording is served only after its SHA-256
//! matches the one its audit record holds: an edited recording is refused, not played.

use crate::Console;
use crate::error::PageResult;
use crate::pages::{html, nav, parse_id};
use crate::session::Viewer;
use crate::view::{Nav, short_time};
use crate::watch::{LiveRow, with_player_csp};
use askama::Template;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use pedm_core::host::{Session, SessionFilter};
use pedm_core::text::terminal_safe;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;

pub fn router() -> Router<Console> {
    Router::new()
        .route("/ui/sessions", get(list))
        .route("/ui/sessions/{id}", get(detail))
        .route("/ui/sessions/{id}/recording", get(recording))
}

struct SessionRow {
    id: String,
    host: String,
    user: String,
    run_as: String,
    command: String,
    started: String,
    length: String,
    outcome: String,
}

fn row(s: &Session) -> SessionRow {
    let secs = s.ended_at.duration_since(s.started_at).as_secs().max(0);
    SessionRow {
        id: s.id.to_string(),
        host: s.host.clone(),
        user: s.user.clone(),
        run_as: s.run_as.clone(),
        command: match &s.task {
            Some(t) => format!("task {t}"),
            None if s.shell => "interactive shell".into(),
            None => terminal_safe(&s.argv.join(" ")).into_owned(),
        },
        started: short_time(s.started_at),
        length: pedm_core::duration::format_duration(secs.max(1)),
        outcome: match (s.exit_code, s.signal, &s.ended_by) {
            (_, _, Some(by)) => format!("ended: {by}"),
            (Some(c), _, _) => format!("exit {c}"),
            (_, Some(sig), _) => format!("signal {sig}"),
            _ => "unknown".into(),
        },
    }
}

#[derive(Template)]
#[template(path = "sessions.html")]
struct ListPage {
    nav: Option<Nav>,
    live: Vec<LiveRow>,
    rows: Vec<SessionRow>,
    /// A session just ended from its live page.
    terminated: Option<Uuid>,
}

#[derive(Deserialize)]
struct ListQuery {
    terminated: Option<String>,
}

async fn list(
    State(c): State<Console>,
    v: Viewer,
    Query(q): Query<ListQuery>,
) -> PageResult<Response> {
    let sessions =
        c.cp.list_sessions(
            &v.actor,
            SessionFilter {
                limit: Some(200),
                ..Default::default()
            },
        )
        .await?;
    html(ListPage {
        nav: nav(&c, &v, "sessions"),
        live: crate::watch::visible(&c, &v),
        rows: sessions.iter().map(row).collect(),
        terminated: q.terminated.as_deref().map(parse_id).transpose()?,
    })
}

#[derive(Template)]
#[template(path = "session.html")]
struct DetailPage {
    nav: Option<Nav>,
    s: SessionRow,
    grant: String,
    sha256: String,
    bytes: i64,
    /// Why it cannot be played, if it cannot.
    problem: Option<String>,
}

/// The recording, if it is here and its hash is the recorded one.
async fn checked_recording(c: &Console, s: &Session) -> Result<Vec<u8>, String> {
    let Some(dir) = &c.recordings else {
        return Err("recordings are not kept on this server".into());
    };
    let path = dir.join(format!("{}.cast", s.id));
    let bytes = tokio::fs::read(&path)
        .await
        .map_err(|_| "the recording is not in this server's recordings directory".to_string())?;
    let sha = hex::encode(Sha256::digest(&bytes));
    if sha != s.recording_sha256 {
        tracing::error!(session = %s.id, "recording does not match its recorded SHA-256");
        return Err(format!(
            "the recording does not match its audit record (SHA-256 {sha}, recorded {}): \
             it was changed after upload and is not played",
            s.recording_sha256
        ));
    }
    Ok(bytes)
}

async fn detail(
    State(c): State<Console>,
    v: Viewer,
    Path(id): Path<String>,
) -> PageResult<Response> {
    let s = c.cp.get_session(&v.actor, parse_id(&id)?).await?;
    let problem = checked_recording(&c, &s).await.err();
    let r = html(DetailPage {
        nav: nav(&c, &v, "sessions"),
        grant: s
            .grant_id
            .map(|g| g.to_string())
            .or(s.delegation_id.map(|d| format!("delegation {d}")))
            .unwrap_or_default(),
        sha256: s.recording_sha256.clone(),
        bytes: s.recording_bytes,
        s: row(&s),
        problem,
    })?;
    Ok(with_player_csp(r))
}

async fn recording(
    State(c): State<Console>,
    v: Viewer,
    Path(id): Path<String>,
) -> PageResult<Response> {
    let s = c.cp.get_session(&v.actor, parse_id(&id)?).await?;
    match checked_recording(&c, &s).await {
        Ok(bytes) => {
            Ok(([(header::CONTENT_TYPE, "application/x-asciicast")], bytes).into_response())
        }
        Err(why) => Ok((StatusCode::CONFLICT, why).into_response()),
    }
}
