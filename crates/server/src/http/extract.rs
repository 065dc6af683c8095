//! Extractors: who is calling (from the bearer token only) and bodies/queries/paths whose
//! rejections become our JSON errors.

use super::AppState;
use super::error::ApiErr;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, MatchedPath};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use pedm_core::model::Actor;
use std::net::SocketAddr;

/// A JSON object body (`Content-Type: application/json`). serde would also read a struct from
/// a JSON array (`[]` as every field's default); a body that is not an object is refused.
pub struct Body<T>(pub T);

impl<S, T> FromRequest<S> for Body<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned,
{
    type Rejection = ApiErr;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiErr> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<mime::Mime>().ok())
            .is_some_and(|m| {
                m.type_() == "application"
                    && (m.subtype() == "json" || m.suffix().is_some_and(|s| s == "json"))
            });
        if !is_json {
            return Err(ApiErr::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "invalid",
                "request body must be JSON with Content-Type: application/json",
            ));
        }
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiErr::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "payload_too_large",
                        "request body is larger than the server accepts",
                    )
                } else {
                    ApiErr::new(e.status(), "invalid", e.body_text())
                }
            })?;
        let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
        if first.is_some_and(|b| *b != b'{') {
            return Err(ApiErr::invalid(
                "invalid request body: must be a JSON object",
            ));
        }
        let axum::Json(v) = axum::Json::<T>::from_bytes(&bytes)?;
        Ok(Body(v))
    }
}

#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiErr))]
pub struct Query<T>(pub T);

#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiErr))]
pub struct Path<T>(pub T);

/// The authenticated caller and where the call came from. An AI agent's token (see
/// `agent_scope`) is refused here for every operation its allow-list does not name.
pub struct Caller {
    pub actor: Actor,
    pub source: Option<String>,
    /// The enrolled device whose certificate the connection presented (not yet checked
    /// against the caller: see `ControlPlane::device_context`).
    pub device: Option<String>,
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiErr;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiErr> {
        let source = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip().to_string());
        let token = bearer_token(parts)?;
        let actor = state.cp.authenticate(&token, source.as_deref()).await?;
        if actor.via_agent {
            // An AI agent's token: only what the agent allow-list names (deny by default).
            let route = parts.extensions.get::<MatchedPath>().map(|p| p.as_str());
            if !route.is_some_and(|r| super::agent_scope::allows(&parts.method, r)) {
                let op = format!("{} {}", parts.method, route.unwrap_or(parts.uri.path()));
                return Err(state.cp.refuse_agent(&actor, &op).await.into());
            }
        }
        let device = parts
            .extensions
            .get::<crate::tls::client_auth::PeerCert>()
            .and_then(|p| crate::tls::client_ca::device_of(&p.0));
        Ok(Caller {
            actor,
            source,
            device,
        })
    }
}

/// The token of an `Authorization: Bearer <token>` header.
pub fn bearer_token(parts: &Parts) -> Result<String, ApiErr> {
    let header = parts
        .headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| {
            ApiErr::new(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "missing Authorization: Bearer <token> header",
            )
        })?
        .to_str()
        .map_err(|_| ApiErr::new(StatusCode::UNAUTHORIZED, "unauthenticated", "invalid token"))?;
    let token = header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .ok_or_else(|| {
            ApiErr::new(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "Authorization header must be: Bearer <token>",
            )
        })?;
    Ok(token.trim().to_string())
}
