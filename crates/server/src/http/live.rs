//! Live sessions over HTTP: agents stream a session's events as it runs (one long request
//! per session), people list live sessions and watch one as server-sent events.

use super::AppState;
use super::agents::{HostCaller, async_stream, hub};
use super::error::{ApiErr, ApiResult};
use super::extract::{Caller, Path};
use crate::live::{Live, LiveEvent};
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use pedm_api::ErrorBody;
use pedm_api::live::{LiveHeader, LiveSession, MAX_LIVE_LINE};
use std::convert::Infallible;
use std::time::Duration;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

/// A stream that carries nothing for this long is over (agents send a keep-alive line
/// every [`pedm_api::live::KEEPALIVE`]).
const IDLE: Duration = Duration::from_secs(120);
/// The header line's limit.
const MAX_HEADER: usize = 64 * 1024;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(live_sessions))
        .routes(routes!(watch_session))
        .merge(
            OpenApiRouter::new()
                .routes(routes!(agent_live))
                // A stream lasts as long as its session; lines are limited one by one.
                .layer(axum::extract::DefaultBodyLimit::disable()),
        )
}

/// Streams a session's events as it runs (agents). The body is newline-delimited: a
/// `LiveHeader` JSON line, then asciicast v2 event lines as the recording gets them (empty
/// lines keep the stream alive). Answered when the stream ends.
#[utoipa::path(post, path = "/agent/sessions/{id}/live", tag = "hosts",
    params(("id" = Uuid, Path, description = "the session id the agent chose")),
    responses((status = 204, description = "the stream ended"), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
async fn agent_live(
    State(s): State<AppState>,
    h: HostCaller,
    Path(id): Path<Uuid>,
    body: axum::body::Body,
) -> ApiResult<StatusCode> {
    let hub = hub(&s)?.clone();
    let mut lines = Lines::new(body);
    let first = match tokio::time::timeout(IDLE, lines.next(MAX_HEADER)).await {
        Ok(Ok(Some(l))) => l,
        Ok(Ok(None)) | Err(_) => return Err(ApiErr::invalid("the stream has no header line")),
        Ok(Err(e)) => return Err(e),
    };
    let header: LiveHeader = serde_json::from_slice(&first)
        .map_err(|e| ApiErr::invalid(format!("invalid live header: {e}")))?;
    s.cp.check_live_session(
        &h.host,
        id,
        header.grant_id,
        header.delegation_id,
        &header.user,
        &header.argv,
    )
    .await?;
    let live = hub
        .live
        .begin(id, &h.host, header)
        .map_err(|e| ApiErr::new(StatusCode::CONFLICT, "conflict", e))?;
    let outcome = feed(&live, &mut lines).await;
    let reason = match &outcome {
        Ok(()) => "the session ended".to_string(),
        Err(e) => format!("the agent's stream broke off: {}", e.message),
    };
    hub.live.end(&live, &reason);
    outcome.map(|()| StatusCode::NO_CONTENT)
}

/// Publishes the stream's event lines until it ends.
async fn feed(live: &Live, lines: &mut Lines) -> ApiResult<()> {
    loop {
        let line = match tokio::time::timeout(IDLE, lines.next(MAX_LIVE_LINE)).await {
            Err(_) => return Err(ApiErr::invalid("the stream was idle too long")),
            Ok(r) => match r? {
                None => return Ok(()),
                Some(l) => l,
            },
        };
        if line.is_empty() {
            continue; // keep-alive
        }
        // Each line becomes one server-sent event's data: one line of UTF-8 JSON.
        let shaped = line.first() == Some(&b'[')
            && line.last() == Some(&b']')
            && !line.contains(&b'\r')
            && std::str::from_utf8(&line).is_ok();
        if !shaped {
            return Err(ApiErr::invalid(
                "a live event line is not an asciicast event (a JSON array on one line)",
            ));
        }
        live.push(line);
    }
}

/// Newline-delimited lines of a request body.
struct Lines {
    body: axum::body::BodyDataStream,
    buf: Vec<u8>,
    done: bool,
}

impl Lines {
    fn new(body: axum::body::Body) -> Lines {
        Lines {
            body: body.into_data_stream(),
            buf: Vec::new(),
            done: false,
        }
    }

    /// The next line (without its newline), at most `max` bytes; `None` at the end.
    async fn next(&mut self, max: usize) -> ApiResult<Option<Bytes>> {
        loop {
            if let Some(nl) = self.buf.iter().position(|b| *b == b'\n') {
                let mut line: Vec<u8> = self.buf.drain(..=nl).collect();
                line.pop();
                return Ok(Some(Bytes::from(line)));
            }
            if self.buf.len() > max {
                return Err(ApiErr::invalid(format!(
                    "a live stream line is longer than {max} bytes"
                )));
            }
            if self.done {
                // A last line without its newline is cut off, not an event.
                return Ok(None);
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.buf.extend_from_slice(&chunk),
                Some(Err(e)) => {
                    return Err(ApiErr::invalid(format!("reading the live stream: {e}")));
                }
                None => self.done = true,
            }
        }
    }
}

/// Sessions streaming to this server now: the caller's own, or anyone's with read_audit.
/// (Each instance knows the sessions its agents stream to it.)
#[utoipa::path(get, path = "/sessions/live", tag = "hosts",
    responses((status = 200, body = Vec<LiveSession>), (status = 401, body = ErrorBody)))]
async fn live_sessions(State(s): State<AppState>, c: Caller) -> ApiResult<Json<Vec<LiveSession>>> {
    let hub = hub(&s)?;
    Ok(Json(
        hub.live
            .list()
            .into_iter()
            .filter(|l| s.cp.may_see_sessions_of(&c.actor, &l.user))
            .collect(),
    ))
}

/// Watches a live session as server-sent events: `header` (the session), then `event` (one
/// asciicast event line each, recent ones first for a session already under way), `gap`
/// (`{"missed": n}` when this watcher fell behind) and `end` (`{"reason": ...}`). Watching is
/// recorded as `session.watched`.
#[utoipa::path(get, path = "/sessions/{id}/live", tag = "hosts",
    params(("id" = Uuid, Path)),
    responses((status = 200, description = "text/event-stream"),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn watch_session(
    State(s): State<AppState>,
    c: Caller,
    Path(id): Path<Uuid>,
) -> ApiResult<Response> {
    let hub = hub(&s)?;
    let live = hub.live.get(id).ok_or_else(|| {
        ApiErr::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "session {id} is not streaming to this server (it ended, never started, or \
                 its host streams to another instance)"
            ),
        )
    })?;
    s.cp.watch_session(&c.actor, id, &live.host, &live.header.user)
        .await?;
    let watcher = live.watch();
    let stream = async_stream(64, move |tx| async move {
        let mut w = watcher;
        let json = |name: &str, v: serde_json::Value| {
            Event::default()
                .event(name)
                .json_data(v)
                .unwrap_or_default()
        };
        let line = |l: &Bytes| {
            Event::default()
                .event("event")
                .data(String::from_utf8_lossy(l))
        };
        let info = serde_json::to_value(w.live.info()).unwrap_or_default();
        if tx.send(json("header", info)).await.is_err() {
            return;
        }
        for l in std::mem::take(&mut w.backlog) {
            if tx.send(line(&l)).await.is_err() {
                return;
            }
        }
        loop {
            let ev = tokio::select! {
                ev = w.rx.recv() => ev,
                _ = tx.closed() => return,
            };
            let out = match ev {
                Ok(LiveEvent::Line(l)) => line(&l),
                Ok(LiveEvent::End(reason)) => {
                    let _ = tx
                        .send(json("end", serde_json::json!({ "reason": reason })))
                        .await;
                    return;
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    json("gap", serde_json::json!({ "missed": n }))
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                    let _ = tx
                        .send(json(
                            "end",
                            serde_json::json!({ "reason": "the stream closed" }),
                        ))
                        .await;
                    return;
                }
            };
            if tx.send(out).await.is_err() {
                return;
            }
        }
    });
    Ok(Sse::new(stream.map(Ok::<_, Infallible>))
        .keep_alive(KeepAlive::default())
        .into_response())
}
