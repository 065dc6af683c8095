//! Host agents over HTTP: registration (people), the signed snapshot and its event stream,
//! exec reports and session uploads (agents, authenticated by their host token), and reading
//! recorded sessions (people).

use super::AppState;
use super::error::{ApiErr, ApiResult};
use super::extract::{Body, Caller, Path, Query, bearer_token};
use crate::agents::AgentHub;
use crate::tls::client_auth::PeerCert;
use crate::tls::client_ca::host_of;
use axum::Json;
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures_util::StreamExt;
use pedm_api::agent::*;
use pedm_api::{ErrorBody, Session};
use pedm_core::host::SessionFilter;
use sha2::{Digest, Sha256};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

/// How often an agent's event stream carries a fresh snapshot even when nothing changed here
/// (another instance sharing the database may have changed a grant).
const RESYNC_EVERY: Duration = Duration::from_secs(30);

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register_host))
        .routes(routes!(list_hosts))
        .routes(routes!(revoke_host))
        .routes(routes!(agent_enroll))
        .routes(routes!(agent_renew))
        .routes(routes!(agent_snapshot))
        .routes(routes!(agent_events))
        .routes(routes!(agent_reports))
        .routes(routes!(agent_undelivered))
        .routes(routes!(agent_task_run_result))
        .routes(routes!(list_sessions))
        .routes(routes!(get_session))
        .routes(routes!(get_recording))
        .merge(
            OpenApiRouter::new()
                .routes(routes!(upload_session))
                // Recordings are large; the handler enforces `agents.max_recording_bytes`.
                .layer(axum::extract::DefaultBodyLimit::disable()),
        )
}

/// The agent of a registered host, authenticated by its host token.
pub struct HostCaller {
    pub host: String,
}

impl FromRequestParts<AppState> for HostCaller {
    type Rejection = ApiErr;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiErr> {
        let source = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip().to_string());
        // Over HTTPS an agent is its client certificate (verified at the handshake); the
        // registration token only enrolls it.
        if let Some(PeerCert(der)) = parts.extensions.get::<PeerCert>() {
            let Some((host, serial)) = host_of(der) else {
                return Err(ApiErr::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthenticated",
                    "the client certificate names no host",
                ));
            };
            let h = state.cp.authenticate_host_cert(&host, &serial).await?;
            return Ok(HostCaller { host: h.name });
        }
        if state
            .agents
            .as_ref()
            .is_some_and(|a| a.tls.client_ca.is_some())
        {
            return Err(ApiErr::new(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "over HTTPS agents authenticate with their client certificate: enroll with \
                 pedm-agent enroll",
            ));
        }
        let token = bearer_token(parts)?;
        let host = state
            .cp
            .authenticate_host(&token, source.as_deref())
            .await?;
        Ok(HostCaller { host })
    }
}

pub(super) fn hub(s: &AppState) -> ApiResult<&Arc<AgentHub>> {
    s.agents.as_ref().ok_or_else(|| {
        ApiErr::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "host agents are not configured on this server",
        )
    })
}

fn internal(what: &str, e: impl std::fmt::Display) -> ApiErr {
    tracing::error!(error = %e, "{what}");
    ApiErr::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        format!("{what} failed"),
    )
}

/// Registers the agent of a host target, or replaces its token (manage_targets). The token is
/// shown once.
#[utoipa::path(post, path = "/hosts/{name}/register", tag = "hosts",
    params(("name" = String, Path, description = "a target of kind host")),
    responses((status = 200, body = HostRegistered), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 422, description = "the target is not of kind host", body = ErrorBody)))]
async fn register_host(
    State(s): State<AppState>,
    c: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<HostRegistered>> {
    let hub = hub(&s)?;
    let r = s.cp.register_host(&c.actor, &name).await?;
    Ok(Json(HostRegistered {
        host: r.host.name,
        token_id: r.minted.id,
        token: r.minted.token,
        server_key: hub.public_key(),
        rotated: r.rotated,
        enroll_expires_at: r.host.enroll_expires_at,
    }))
}

/// The client CA and certificate lifetime, or why agents do not use certificates here.
fn client_ca(s: &AppState) -> ApiResult<(&Arc<crate::tls::client_ca::ClientCa>, i64)> {
    let hub = hub(s)?;
    match &hub.tls.client_ca {
        Some(ca) => Ok((ca, hub.tls.cert_lifetime_secs)),
        None => Err(ApiErr::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "this server speaks plain HTTP: agents present their host token, no certificate",
        )),
    }
}

fn issue(
    ca: &crate::tls::client_ca::ClientCa,
    csr: &str,
    host: &str,
    lifetime: i64,
) -> ApiResult<crate::tls::client_ca::Issued> {
    if csr.len() > 16 * 1024 {
        return Err(ApiErr::invalid("invalid csr: longer than 16 KiB"));
    }
    ca.issue(
        csr,
        &crate::tls::client_ca::Peer::Host(host.to_string()),
        lifetime,
    )
    .map_err(|e| ApiErr::from(pedm_core::Error::unprocessable("csr", e)))
}

/// Enrolls an agent over HTTPS: the registration token of `pedm host register` (once, before
/// it expires) and a CSR for the key the agent made; the answer is a short-lived client
/// certificate for this host. Refusals are recorded.
#[utoipa::path(post, path = "/agent/enroll", tag = "hosts", request_body = AgentCsr,
    responses((status = 200, body = AgentCertificate), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 404, description = "plain HTTP: agents use their token", body = ErrorBody)))]
async fn agent_enroll(
    State(s): State<AppState>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Body(b): Body<AgentCsr>,
) -> ApiResult<Json<AgentCertificate>> {
    let (ca, lifetime) = client_ca(&s)?;
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            ApiErr::new(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "enroll with the registration token as the bearer token",
            )
        })?;
    let source = remote.ip().to_string();
    let host = s.cp.check_enrollment(token, Some(&source)).await?;
    let issued = issue(ca, &b.csr, &host.name, lifetime)?;
    s.cp.finish_enrollment(&host, &issued.serial, issued.not_after)
        .await?;
    Ok(Json(AgentCertificate {
        certificate: issued.cert_pem,
        ca: ca.cert_pem.clone(),
        serial: issued.serial,
        not_after: issued.not_after,
    }))
}

/// Renews an agent's client certificate: authenticated by its current one, a CSR for a new
/// key.
#[utoipa::path(post, path = "/agent/renew", tag = "hosts", request_body = AgentCsr,
    responses((status = 200, body = AgentCertificate), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn agent_renew(
    State(s): State<AppState>,
    h: HostCaller,
    Body(b): Body<AgentCsr>,
) -> ApiResult<Json<AgentCertificate>> {
    let (ca, lifetime) = client_ca(&s)?;
    let issued = issue(ca, &b.csr, &h.host, lifetime)?;
    s.cp.record_host_cert(&h.host, &issued.serial, issued.not_after)
        .await?;
    Ok(Json(AgentCertificate {
        certificate: issued.cert_pem,
        ca: ca.cert_pem.clone(),
        serial: issued.serial,
        not_after: issued.not_after,
    }))
}

/// Revokes a host (manage_targets): over HTTPS its certificates are refused at the TLS
/// handshake from now on (by every instance within seconds), its token everywhere; `pedm
/// host register` enrolls it again.
#[utoipa::path(post, path = "/hosts/{name}/revoke", tag = "hosts", request_body = pedm_api::Reason,
    params(("name" = String, Path)),
    responses((status = 200, body = HostView), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn revoke_host(
    State(s): State<AppState>,
    c: Caller,
    Path(name): Path<String>,
    Body(b): Body<pedm_api::Reason>,
) -> ApiResult<Json<HostView>> {
    let h = s.cp.revoke_host(&c.actor, &name, b.reason).await?;
    if let Some(hub) = &s.agents {
        hub.tls.revoked.insert(&format!("host:{}", h.name));
        hub.host_changed(&h.name);
    }
    Ok(Json(h.into()))
}

/// Registered hosts and when their agents were last heard from (manage_targets).
#[utoipa::path(get, path = "/hosts", tag = "hosts",
    responses((status = 200, body = Vec<HostView>), (status = 403, body = ErrorBody)))]
async fn list_hosts(State(s): State<AppState>, c: Caller) -> ApiResult<Json<Vec<HostView>>> {
    let hosts = s.cp.list_hosts(&c.actor).await?;
    Ok(Json(hosts.into_iter().map(Into::into).collect()))
}

/// The signed snapshot of what this host enforces (agents only).
#[utoipa::path(get, path = "/agent/snapshot", tag = "hosts",
    responses((status = 200, body = SignedSnapshot), (status = 401, body = ErrorBody)))]
async fn agent_snapshot(
    State(s): State<AppState>,
    h: HostCaller,
) -> ApiResult<Json<SignedSnapshot>> {
    let hub = hub(&s)?;
    let snap = s.cp.host_snapshot(&h.host).await?;
    Ok(Json(hub.sign(snap)))
}

/// Server-sent events for an agent: a `snapshot` event (a signed snapshot) at once, whenever
/// this host's grants change (a revocation reaches the host within moments), and every 30 s;
/// a `task` event (a signed task run order) when someone runs a delegated task here from
/// the console.
#[utoipa::path(get, path = "/agent/events", tag = "hosts",
    responses((status = 200, description = "text/event-stream of `snapshot` events"),
        (status = 401, body = ErrorBody)))]
async fn agent_events(State(s): State<AppState>, h: HostCaller) -> ApiResult<Response> {
    let hub = hub(&s)?.clone();
    let cp = s.cp.clone();
    let host = h.host;
    let mut changes = hub.subscribe();
    // Fail now (with a proper status) rather than inside the stream if the store is down.
    let first = hub.sign(cp.host_snapshot(&host).await?);
    let stream = async_stream(4, move |tx| async move {
        // Task runs ordered in the console come this way while the stream is open.
        let mut connected = hub.tasks.connect(&host);
        let event = |snap: &SignedSnapshot| {
            Event::default()
                .event("snapshot")
                .json_data(snap)
                .unwrap_or_default()
        };
        if tx.send(event(&first)).await.is_err() {
            return;
        }
        let mut tick = tokio::time::interval(RESYNC_EVERY);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                changed = changes.recv() => match changed {
                    Ok(Some(h)) if h != host => continue,
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
                Some(order) = connected.orders.recv() => {
                    let ev = Event::default().event("task").json_data(&order).unwrap_or_default();
                    if tx.send(ev).await.is_err() {
                        return;
                    }
                    continue;
                }
                _ = tx.closed() => return,
            }
            // A revoked host's stream ends; its certificate opens no new one.
            if hub.tls.revoked.contains(&format!("host:{host}")) {
                return;
            }
            match cp.host_snapshot(&host).await {
                Ok(snap) => {
                    if tx.send(event(&hub.sign(snap))).await.is_err() {
                        return;
                    }
                }
                // The agent keeps its last snapshot; the next tick tries again.
                Err(e) => tracing::warn!(host, error = %e, "cannot build an agent snapshot"),
            }
        }
    });
    Ok(Sse::new(stream.map(Ok::<_, Infallible>))
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// A stream fed by a task through a channel of `capacity` events (the task ends when the
/// client goes away).
pub(super) fn async_stream<F, Fut>(capacity: usize, f: F) -> impl futures_util::Stream<Item = Event>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Event>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, mut rx) = tokio::sync::mpsc::channel(capacity);
    tokio::spawn(f(tx));
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// Exec decisions the agent made (possibly while offline). Each report id is accepted once.
#[utoipa::path(post, path = "/agent/reports", tag = "hosts", request_body = AgentReports,
    responses((status = 200, body = ReportsAccepted), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody)))]
async fn agent_reports(
    State(s): State<AppState>,
    h: HostCaller,
    Body(body): Body<AgentReports>,
) -> ApiResult<Json<ReportsAccepted>> {
    let r = s.cp.record_agent_reports(&h.host, body.reports).await?;
    Ok(Json(ReportsAccepted {
        accepted: r.accepted,
        duplicates: r.duplicates,
    }))
}

/// Records the agent holds that this server refused (they stay on the host): each becomes an
/// `agent.undelivered` audit event and a high-severity notice, once.
#[utoipa::path(post, path = "/agent/undelivered", tag = "hosts", request_body = UndeliveredItems,
    responses((status = 200, description = "how many were new: {\"recorded\": n}"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn agent_undelivered(
    State(s): State<AppState>,
    h: HostCaller,
    Body(body): Body<UndeliveredItems>,
) -> ApiResult<Json<serde_json::Value>> {
    let n = s.cp.record_undelivered(&h.host, body.items).await?;
    metrics::counter!("pedm_agent_undelivered_total", "host" => h.host.clone()).increment(n as u64);
    Ok(Json(serde_json::json!({ "recorded": n })))
}

/// How a task run this server handed to the host ended (agents): `task.run_finished` in the
/// audit log, and the page that asked shows it.
#[utoipa::path(post, path = "/agent/task-runs/{id}", tag = "hosts", request_body = TaskRunResult,
    params(("id" = Uuid, Path, description = "the run's id, from its order")),
    responses((status = 200, description = "{\"recorded\": true}"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn agent_task_run_result(
    State(s): State<AppState>,
    h: HostCaller,
    Path(id): Path<Uuid>,
    Body(result): Body<TaskRunResult>,
) -> ApiResult<Json<serde_json::Value>> {
    let hub = hub(&s)?;
    let run = hub
        .tasks
        .finish(&h.host, id, result)
        .map_err(|m| ApiErr::new(StatusCode::NOT_FOUND, "not_found", m))?;
    if let Some((end, _)) = &run.end {
        s.cp.task_run_ended(&run.host, run.id, &run.user, &run.task, end)
            .await?;
    }
    Ok(Json(serde_json::json!({ "recorded": true })))
}

/// Uploads a session recording (asciicast v2 body) with its description in the
/// `X-Pedm-Session` header. Uploading the same session again is accepted once.
#[utoipa::path(put, path = "/agent/sessions/{id}", tag = "hosts",
    params(("id" = Uuid, Path, description = "the session id the agent chose")),
    responses((status = 200, body = SessionStored), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 413, body = ErrorBody)))]
async fn upload_session(
    State(s): State<AppState>,
    h: HostCaller,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> ApiResult<Json<SessionStored>> {
    let hub = hub(&s)?;
    let meta: SessionUpload = headers
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| URL_SAFE_NO_PAD.decode(v.trim()).ok())
        .ok_or_else(|| {
            ApiErr::invalid(format!(
                "missing or malformed {SESSION_HEADER} header (base64url of the session's JSON)"
            ))
        })
        .and_then(|b| {
            serde_json::from_slice(&b)
                .map_err(|e| ApiErr::invalid(format!("invalid {SESSION_HEADER}: {e}")))
        })?;
    if meta.recording_bytes > hub.max_recording_bytes {
        return Err(too_large(hub.max_recording_bytes));
    }
    if let Some(existing) = s.cp.store().session(id).await.map_err(store_err)? {
        // Sent again after a lost answer: nothing to store.
        if existing.recording_sha256 == meta.recording_sha256 && existing.host == h.host {
            return Ok(Json(SessionStored { new: false }));
        }
        return Err(ApiErr::new(
            StatusCode::CONFLICT,
            "conflict",
            format!("session {id} was recorded before with a different recording"),
        ));
    }
    let dir = &hub.recordings_dir;
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|e| internal("creating the recordings directory", e))?;
    let part = dir.join(format!("{id}.cast.part-{}", Uuid::now_v7()));
    let result = receive(&part, body, hub.max_recording_bytes).await;
    let (bytes, sha) = match result {
        Ok(v) => v,
        Err(e) => {
            let _ = tokio::fs::remove_file(&part).await;
            return Err(e);
        }
    };
    if bytes != meta.recording_bytes || sha != meta.recording_sha256 {
        let _ = tokio::fs::remove_file(&part).await;
        return Err(ApiErr::invalid(format!(
            "recording does not match its description: received {bytes} bytes with SHA-256 {sha}, \
             expected {} bytes with SHA-256 {}",
            meta.recording_bytes, meta.recording_sha256
        )));
    }
    let final_path = dir.join(format!("{id}.cast"));
    tokio::fs::rename(&part, &final_path)
        .await
        .map_err(|e| internal("storing a recording", e))?;
    let session = Session {
        id,
        grant_id: meta.grant_id,
        delegation_id: meta.delegation_id,
        task: meta.task,
        params: meta.params,
        host: h.host.clone(),
        user: meta.user,
        run_as: meta.run_as,
        argv: meta.argv,
        binary_sha256: meta.binary_sha256,
        shell: meta.shell,
        started_at: meta.started_at,
        ended_at: meta.ended_at,
        exit_code: meta.exit_code,
        signal: meta.signal,
        ended_by: meta.ended_by,
        recording_sha256: sha,
        recording_bytes: bytes as i64,
        uploaded_at: meta.ended_at,
        via: None,
    };
    match s.cp.record_session(&h.host, session).await {
        Ok(new) => Ok(Json(SessionStored { new })),
        Err(e) => {
            // Refused (wrong grant) or conflicting: keep no file that no row points to.
            if !matches!(e, pedm_core::Error::Store(_)) {
                let _ = tokio::fs::remove_file(&final_path).await;
            }
            Err(e.into())
        }
    }
}

fn too_large(max: u64) -> ApiErr {
    ApiErr::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("recording is larger than agents.max_recording_bytes ({max} bytes)"),
    )
}

fn store_err(e: pedm_core::store::StoreError) -> ApiErr {
    ApiErr::from(pedm_core::Error::from(e))
}

/// Streams the body to `path` (fsynced), hashing it. Returns (bytes, SHA-256 hex).
async fn receive(
    path: &std::path::Path,
    body: axum::body::Body,
    max: u64,
) -> ApiResult<(u64, String)> {
    let mut file = tokio::fs::File::create(path)
        .await
        .map_err(|e| internal("creating a recording file", e))?;
    let mut hasher = Sha256::new();
    let mut total: u64 = 0;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiErr::invalid(format!("reading the recording: {e}")))?;
        total += chunk.len() as u64;
        if total > max {
            return Err(too_large(max));
        }
        hasher.update(&chunk);
        file.write_all(&chunk)
            .await
            .map_err(|e| internal("writing a recording", e))?;
    }
    file.sync_all()
        .await
        .map_err(|e| internal("writing a recording", e))?;
    Ok((total, hex::encode(hasher.finalize())))
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct SessionQuery {
    user: Option<String>,
    host: Option<String>,
    grant: Option<Uuid>,
    limit: Option<u32>,
}

/// Recorded sessions, newest first: the caller's own, or anyone's with read_audit.
#[utoipa::path(get, path = "/sessions", tag = "hosts", params(SessionQuery),
    responses((status = 200, body = Vec<Session>), (status = 403, body = ErrorBody)))]
async fn list_sessions(
    State(s): State<AppState>,
    c: Caller,
    Query(q): Query<SessionQuery>,
) -> ApiResult<Json<Vec<Session>>> {
    let filter = SessionFilter {
        user: q.user,
        host: q.host,
        grant: q.grant,
        limit: q.limit,
        ..Default::default()
    };
    Ok(Json(s.cp.list_sessions(&c.actor, filter).await?))
}

/// One recorded session.
#[utoipa::path(get, path = "/sessions/{id}", tag = "hosts",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = Session), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn get_session(
    State(s): State<AppState>,
    c: Caller,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Session>> {
    Ok(Json(s.cp.get_session(&c.actor, id).await?))
}

/// The session's asciicast v2 recording, as uploaded (its SHA-256 is in the session and in
/// the audit log).
#[utoipa::path(get, path = "/sessions/{id}/recording", tag = "hosts",
    params(("id" = Uuid, Path)),
    responses((status = 200, description = "application/x-asciicast"),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_recording(
    State(s): State<AppState>,
    c: Caller,
    Path(id): Path<Uuid>,
) -> ApiResult<Response> {
    let hub = hub(&s)?;
    let session = s.cp.get_session(&c.actor, id).await?;
    let path = hub.recordings_dir.join(format!("{}.cast", session.id));
    let file = tokio::fs::File::open(&path).await.map_err(|e| {
        tracing::error!(file = %path.display(), error = %e, "recording missing");
        ApiErr::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("the recording of session {id} is not in this server's recordings directory"),
        )
    })?;
    let body = axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(file));
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-asciicast".to_string()),
            (
                header::HeaderName::from_static("x-pedm-recording-sha256"),
                session.recording_sha256,
            ),
        ],
        body,
    )
        .into_response())
}
