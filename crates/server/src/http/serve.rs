//! Serving the router over TCP with hyper's own limits set above pedm's, so that oversized
//! headers are refused by pedm's middleware with the same JSON error body as every other error.
//! What hyper still answers itself: a request line or header block it cannot parse (400), and
//! headers beyond [`HYPER_MAX_HEADERS`] or [`HYPER_MAX_BUF`] bytes (431); the connection
//! wrapper of [`super::parse_errors`] gives those the JSON body too.

use super::ApiErr;
use axum::Router;
use axum::extract::{ConnectInfo, Request};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper::server::conn::http1::Builder;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;

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

/// Serves `app` on `listener` until `shutdown` completes, then lets open connections finish
/// (at most [`DRAIN`]). Handlers can extract `ConnectInfo<SocketAddr>`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let mut builder = Builder::new();
    builder
        .timer(TokioTimer::new())
        .max_headers(HYPER_MAX_HEADERS)
        .max_buf_size(HYPER_MAX_BUF);
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
        let svc = app
            .clone()
            .layer(axum::Extension(ConnectInfo::<SocketAddr>(remote)));
        let io = TokioIo::new(super::parse_errors::JsonParseErrors::new(stream));
        let conn = builder.serve_connection(io, TowerToHyperService::new(svc));
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
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
