//! Serving the router over TCP (optionally TLS, see [`crate::tls`]) with hyper's own limits set
//! above pedm's, so that oversized headers are refused by pedm's middleware with the same JSON error body as every other error.
//! What hyper still answers itself: a request line or header block it cannot parse (400), and
//! headers beyond [`HYPER_MAX_HEADERS`] or [`HYPER_MAX_BUF`] bytes (431); the connection
//! wrapper of [`super::parse_errors`] gives those the JSON body too.

use super::ApiErr;
use super::parse_errors::JsonParseErrors;
pub use crate::tls::client_auth::PeerCert;
use axum::Router;
use axum::extract::{ConnectInfo, Request};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
pub use tokio_rustls::TlsAcceptor;

/// Headers pedm accepts in one request.
pub const MAX_HEADERS: usize = 100;
/// Bytes of header names and values pedm accepts in one request.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// Longest request target (path and query) pedm accepts.
pub const MAX_URI_BYTES: usize = 8 * 1024;
/// hyper's own limits, well above pedm's so that pedm answers first.
pub const HYPER_MAX_HEADERS: usize = 1_000;
pub const HYPER_MAX_BUF: usize = 1024 * 1024;
/// How long open connections get to finish after the shutdown signal.
const DRAIN: Duration = Duration::from_secs(10);

/// Refuses too many or too large headers, or too long a target, with a JSON error.
pub async fn header_limits(req: Request, next: Next) -> Response {
    let headers = req.headers();
    if headers.len() > MAX_HEADERS {
        return ApiErr::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            format!(
                "{} request headers; at most {MAX_HEADERS} are accepted",
                headers.len()
            ),
        )
        .into_response();
    }
    let bytes: usize = headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len())
        .sum();
    if bytes > MAX_HEADER_BYTES {
        return ApiErr::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            format!("request headers of {bytes} bytes; at most {MAX_HEADER_BYTES} are accepted"),
        )
        .into_response();
    }
    let target = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if target > MAX_URI_BYTES {
        return ApiErr::new(
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
            format!("a request target of {target} bytes; at most {MAX_URI_BYTES} are accepted"),
        )
        .into_response();
    }
    next.run(req).await
}

/// How long a client gets to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `app` on `listener` until `shutdown` completes, then lets open connections finish
/// (at most [`DRAIN`]). With `tls`, every connection is a TLS one (handshakes run on the
/// connection's own task, so a slow client does not hold up the accept loop); HTTP/2 or
/// HTTP/1.1 follows from ALPN (without TLS, HTTP/1.1 or HTTP/2 with prior knowledge).
/// Handlers can extract `ConnectInfo<SocketAddr>`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: impl std::future::Future<Output = ()>,
    tls: Option<TlsAcceptor>,
) -> std::io::Result<()> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .max_headers(HYPER_MAX_HEADERS)
        .max_buf_size(HYPER_MAX_BUF);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(HYPER_MAX_BUF as u32);
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors and the like: wait a little rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let app = app
            .clone()
            .layer(axum::Extension(ConnectInfo::<SocketAddr>(remote)));
        let watcher = graceful.watcher();
        let builder = builder.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let result = match tls {
                None => {
                    let svc = TowerToHyperService::new(app);
                    let conn =
                        builder.serve_connection(TokioIo::new(JsonParseErrors::new(stream)), svc);
                    watcher.watch(conn).await
                }
                Some(acceptor) => {
                    let stream = match tokio::time::timeout(
                        HANDSHAKE_TIMEOUT,
                        acceptor.accept(stream),
                    )
                    .await
                    {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            metrics::counter!("pedm_tls_handshake_failures_total").increment(1);
                            tracing::debug!(%remote, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%remote, "TLS handshake timed out");
                            return;
                        }
                    };
                    // A client certificate the handshake verified (agents), for the handlers.
                    let peer = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .map(|c| PeerCert(Arc::new(c.to_vec())));
                    let svc = TowerToHyperService::new(match peer {
                        Some(p) => app.layer(axum::Extension(p)),
                        None => app,
                    });
                    let conn =
                        builder.serve_connection(TokioIo::new(JsonParseErrors::new(stream)), svc);
                    watcher.watch(conn).await
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the drain time; closing them");
    }
    Ok(())
}
