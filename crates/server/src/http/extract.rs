//! Extractors: who is calling (from the bearer token only) and bodies/queries/paths whose
//! rejections become our JSON errors.

use super::AppState;
use super::error::ApiErr;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use pedm_core::model::Actor;
use std::net::SocketAddr;

#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiErr))]
pub struct Body<T>(pub T);

#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiErr))]
pub struct Query<T>(pub T);

#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiErr))]
pub struct Path<T>(pub T);

/// The authenticated caller and where the call came from.
pub struct Caller {
    pub actor: Actor,
    pub source: Option<String>,
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
        Ok(Caller { actor, source })
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
