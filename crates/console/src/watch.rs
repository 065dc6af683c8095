//! Live sessions in the page: those streaming to this instance now (the server's live hub,
//! behind the [`HostAgents`] port), watched with the vendored asciinema-player's
//! `eventsource` driver, and ended by whoever the core lets end one (`manage_grants`: a
//! session lock the agent carries out within a second, as `pedm session kill` does).
//!
//! Who may watch is the core's rule (their own sessions, or anyone's with `read_audit`), and
//! every watch is recorded (`session.watched`), as is a refusal. The stream carries what the
//! agent streamed (asciicast event lines it checked are JSON arrays); the player renders it
//! as terminal text, never as markup.

use crate::Console;
use crate::error::{PageError, PageResult};
use crate::pages::{html, nav, parse_id};
use crate::session::{Posted, Viewer};
use crate::view::{Nav, short_time};
use askama::Template;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use futures_util::{Stream, StreamExt};
use pedm_core::decision::AdminAction;
use pedm_core::text::terminal_safe;
use serde::Deserialize;
use std::convert::Infallible;
use std::pin::Pin;
use uuid::Uuid;

/// A session streaming to this instance now.
#[derive(Debug, Clone)]
pub struct LiveInfo {
    pub id: Uuid,
    pub host: String,
    pub user: String,
    pub run_as: String,
    pub argv: Vec<String>,
    pub grant_id: Option<Uuid>,
    pub delegation_id: Option<Uuid>,
    pub started_at: jiff::Timestamp,
    pub width: u32,
    pub height: u32,
    pub watchers: u32,
}

/// What a watcher receives after the backlog.
#[derive(Debug, Clone)]
pub enum LiveItem {
    /// One asciicast event line (a JSON array on one line).
    Line(String),
    /// This watcher fell behind and missed this many lines.
    Missed(u64),
    /// The stream ended, and why.
    End(String),
}

/// One watch of a live session: the recent screen, then what follows (`events` ends after
/// its [`LiveItem::End`]).
pub struct LiveWatch {
    pub info: LiveInfo,
    pub backlog: Vec<String>,
    pub events: Pin<Box<dyn Stream<Item = LiveItem> + Send>>,
}

/// The host agents' side of this instance (the server's agent hub).
pub trait HostAgents: Send + Sync {
    /// The key agents check the server's snapshots with (given with a host's token).
    fn server_key(&self) -> String;
    /// Every session streaming here now, oldest first.
    fn live(&self) -> Vec<LiveInfo>;
    /// Starts watching one (`None`: not streaming here).
    fn watch(&self, id: Uuid) -> Option<LiveWatch>;
    /// Hands a checked task run to its host's agent. `Err`: no agent can be reached from
    /// this instance (why).
    fn run_task(&self, order: &pedm_core::service::TaskRunOrder) -> Result<(), String>;
    /// A run handed out by this instance, with its end once the agent reported it.
    fn task_run(&self, id: Uuid) -> Option<TaskRunView>;
}

/// A task run handed to an agent, as the page shows it.
#[derive(Debug, Clone)]
pub struct TaskRunView {
    pub id: Uuid,
    pub host: String,
    pub user: String,
    pub task: String,
    pub requested_at: jiff::Timestamp,
    /// How it ended and its output (the last bytes); `None`: still running.
    pub end: Option<(pedm_core::service::TaskRunEnd, String)>,
}

pub fn router() -> Router<Console> {
    Router::new()
        .route("/ui/sessions/live/{id}", get(page))
        .route("/ui/sessions/live/{id}/events", get(events))
        .route("/ui/sessions/live/{id}/terminate", post(terminate))
}

pub(crate) struct LiveRow {
    pub id: String,
    pub host: String,
    pub user: String,
    pub run_as: String,
    pub command: String,
    pub started: String,
    pub watchers: u32,
}

fn row(l: &LiveInfo) -> LiveRow {
    LiveRow {
        id: l.id.to_string(),
        host: l.host.clone(),
        user: l.user.clone(),
        run_as: l.run_as.clone(),
        command: terminal_safe(&l.argv.join(" ")).into_owned(),
        started: short_time(l.started_at),
        watchers: l.watchers,
    }
}

/// The live sessions `v` may see (for the sessions list).
pub(crate) fn visible(c: &Console, v: &Viewer) -> Vec<LiveRow> {
    c.agents
        .as_ref()
        .map(|hub| {
            hub.live()
                .iter()
                .filter(|l| c.cp.may_see_sessions_of(&v.actor, &l.user))
                .map(row)
                .collect()
        })
        .unwrap_or_default()
}

fn not_streaming(id: Uuid) -> PageError {
    PageError::Core(pedm_core::Error::NotFound(format!(
        "session {id} is not streaming to this server (it ended, never started, or its host \
         streams to another instance); ended sessions are under Sessions once uploaded"
    )))
}

/// The session, if it streams here and `v` may watch it. A refusal is the core's (recorded).
async fn watchable(c: &Console, v: &Viewer, id: Uuid) -> PageResult<LiveInfo> {
    let hub = c.agents.as_ref().ok_or_else(|| not_streaming(id))?;
    let info = hub
        .live()
        .into_iter()
        .find(|l| l.id == id)
        .ok_or_else(|| not_streaming(id))?;
    if !c.cp.may_see_sessions_of(&v.actor, &info.user) {
        // Refused and recorded by the same call the stream makes.
        c.cp.watch_session(&v.actor, id, &info.host, &info.user)
            .await?;
    }
    Ok(info)
}

#[derive(Template)]
#[template(path = "session_live.html")]
struct LivePage {
    nav: Option<Nav>,
    s: LiveRow,
    grant: String,
    may_terminate: bool,
    csrf: String,
}

/// The player's terminal emulator needs WebAssembly, as for replays.
const PLAYER_CSP: &str = "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; \
     form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

pub(crate) fn with_player_csp(mut r: Response) -> Response {
    r.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(PLAYER_CSP),
    );
    r
}

async fn page(State(c): State<Console>, v: Viewer, Path(id): Path<String>) -> PageResult<Response> {
    let info = watchable(&c, &v, parse_id(&id)?).await?;
    let r = html(LivePage {
        nav: nav(&c, &v, "sessions"),
        grant: info
            .grant_id
            .map(|g| g.to_string())
            .or(info.delegation_id.map(|d| format!("delegation {d}")))
            .unwrap_or_default(),
        may_terminate: c.cp.may(&v.actor, AdminAction::ManageGrants),
        csrf: v.csrf.clone(),
        s: row(&info),
    })?;
    Ok(with_player_csp(r))
}

/// The stream the player reads (its `eventsource` driver): a message with the terminal's
/// size, the recent screen and what follows as asciicast event arrays, a `missed` event when
/// this watcher fell behind, and `done` when the session's stream ends.
async fn events(
    State(c): State<Console>,
    v: Viewer,
    Path(id): Path<String>,
) -> PageResult<Response> {
    let id = parse_id(&id)?;
    let hub = c.agents.clone().ok_or_else(|| not_streaming(id))?;
    let watch = hub.watch(id).ok_or_else(|| not_streaming(id))?;
    c.cp.watch_session(&v.actor, id, &watch.info.host, &watch.info.user)
        .await?;
    let size = serde_json::json!({ "cols": watch.info.width, "rows": watch.info.height });
    let head = std::iter::once(Event::default().data(size.to_string()))
        .chain(watch.backlog.into_iter().map(|l| Event::default().data(l)));
    let rest = watch.events.map(|item| match item {
        LiveItem::Line(l) => Event::default().data(l),
        LiveItem::Missed(n) => Event::default().event("missed").data(n.to_string()),
        LiveItem::End(why) => Event::default().event("done").data(why),
    });
    let stream = futures_util::stream::iter(head)
        .chain(rest)
        .map(Ok::<_, Infallible>);
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

#[derive(Deserialize)]
struct TerminateForm {
    #[serde(default)]
    reason: String,
}

async fn terminate(
    State(c): State<Console>,
    Path(id): Path<String>,
    p: Posted<TerminateForm>,
) -> PageResult<Response> {
    let id = parse_id(&id)?;
    let reason = p.form.reason.trim();
    if reason.is_empty() {
        return Err(PageError::Invalid(
            "reason: say why the session is ended (the person sees it)".into(),
        ));
    }
    c.cp.kill_session(&p.viewer.actor, id, reason).await?;
    Ok(Redirect::to(&format!("/ui/sessions?terminated={id}")).into_response())
}
