//! `POST /integrations/tickets/{system}`: a ticket system says a ticket changed (a Jira
//! webhook, a ServiceNow business rule). Signed with the system's `webhook_secret_file`
//! (`X-Hub-Signature: sha256=…`); the body only names the ticket, which pedm looks up again
//! in the system before ending anything, so a replayed push repeats a harmless lookup.

use super::AppState;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::net::SocketAddr;

use crate::tickets::Pushed;

pub(super) async fn pushed(
    State(s): State<AppState>,
    Path(system): Path<String>,
    extensions: axum::http::Extensions,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let signature = headers.get("x-hub-signature").and_then(|v| v.to_str().ok());
    match s.tickets.pushed(&s.cp, &system, &body, signature).await {
        Pushed::UnknownSystem => (
            StatusCode::NOT_FOUND,
            "no ticket system of that name takes pushes\n",
        )
            .into_response(),
        Pushed::Unauthenticated(why) => {
            let source = extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|p| p.0.ip().to_string());
            if let Err(e) =
                s.cp.integration_auth_failed("tickets", why, source.as_deref())
                    .await
            {
                tracing::error!(error = %e, "could not record a refused ticket push");
            }
            (StatusCode::UNAUTHORIZED, format!("{why}\n")).into_response()
        }
        Pushed::Unreadable(why) => (StatusCode::BAD_REQUEST, format!("{why}\n")).into_response(),
        Pushed::Checked { key, ended } => (
            StatusCode::ACCEPTED,
            axum::Json(json!({ "ticket": key, "grants_ended": ended })),
        )
            .into_response(),
    }
}
