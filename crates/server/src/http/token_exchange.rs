//! `POST /oauth/token`: OAuth 2.0 Token Exchange (RFC 8693) for workload identities. A CI job
//! or service presents the OIDC token its platform issued (`subject_token`); when a configured
//! `[[auth.workload]]` trust verifies it, the answer is a short-lived pedm bearer token.
//! Requests and errors follow RFC 6749 §5 (form-encoded body; `{"error", "error_description"}`
//! with 400, `Cache-Control: no-store`), so standard OAuth clients work unchanged.

use super::AppState;
use axum::Json;
use axum::extract::{Form, State, rejection::FormRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

pub const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ID_TOKEN: &str = "urn:ietf:params:oauth:token-type:id_token";
const JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
const ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";

#[derive(Debug, Deserialize)]
pub struct ExchangeForm {
    grant_type: Option<String>,
    subject_token: Option<String>,
    subject_token_type: Option<String>,
    requested_token_type: Option<String>,
    /// Accepted and ignored: the token is for this server.
    #[allow(dead_code)]
    audience: Option<String>,
    /// Accepted and ignored: what the token may do is decided by policy.
    #[allow(dead_code)]
    scope: Option<String>,
}

#[derive(Debug, Serialize)]
struct Issued {
    access_token: String,
    issued_token_type: &'static str,
    token_type: &'static str,
    expires_in: i64,
}

#[derive(Debug, Serialize)]
struct OauthError {
    error: &'static str,
    error_description: String,
}

fn no_store(mut r: Response) -> Response {
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn oauth_error(status: StatusCode, error: &'static str, why: impl Into<String>) -> Response {
    no_store(
        (
            status,
            Json(OauthError {
                error,
                error_description: why.into(),
            }),
        )
            .into_response(),
    )
}

fn invalid_request(why: impl Into<String>) -> Response {
    oauth_error(StatusCode::BAD_REQUEST, "invalid_request", why)
}

pub async fn exchange(
    State(s): State<AppState>,
    form: Result<Form<ExchangeForm>, FormRejection>,
) -> Response {
    let Form(f) = match form {
        Ok(f) => f,
        Err(e) => return invalid_request(format!("the body must be a form: {}", e.body_text())),
    };
    match f.grant_type.as_deref() {
        Some(GRANT_TYPE) => {}
        Some(other) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                format!(
                    "grant_type {:?} is not supported here; use {GRANT_TYPE}",
                    pedm_core::text::terminal_safe(other)
                ),
            );
        }
        None => return invalid_request("grant_type is missing"),
    }
    let Some(token) = f.subject_token.filter(|t| !t.is_empty()) else {
        return invalid_request("subject_token is missing");
    };
    if token.len() > 16 * 1024 {
        return invalid_request("subject_token is longer than 16 KiB");
    }
    match f.subject_token_type.as_deref() {
        Some(ID_TOKEN | JWT) => {}
        Some(_) => {
            return invalid_request(format!("subject_token_type must be {ID_TOKEN} or {JWT}"));
        }
        None => return invalid_request("subject_token_type is missing"),
    }
    if f.requested_token_type
        .as_deref()
        .is_some_and(|t| t != ACCESS_TOKEN)
    {
        return invalid_request(format!("requested_token_type can only be {ACCESS_TOKEN}"));
    }
    if s.workload.0.is_empty() {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "token exchange is not configured on this server ([[auth.workload]])",
        );
    }
    // Which trust may verify it: by the token's own (not yet verified) issuer.
    let issuer = crate::oidc::unverified_payload(&token)
        .ok()
        .and_then(|p| p.get("iss").and_then(|i| i.as_str()).map(str::to_string));
    let trusts = issuer
        .as_deref()
        .map(|i| s.workload.for_issuer(i))
        .unwrap_or_default();
    if trusts.is_empty() {
        let why = "the subject token's issuer is not a configured workload issuer";
        let e = s.cp.workload_refuse("unknown", why).await;
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", e.to_string());
    }
    let mut refusal = String::new();
    for trust in trusts {
        match trust.verify(&token).await {
            Ok(identity) => {
                return match s
                    .cp
                    .exchange_workload_token(identity, &trust.user, trust.token_lifetime_secs)
                    .await
                {
                    Ok((_, secret)) => no_store(
                        Json(Issued {
                            access_token: secret,
                            issued_token_type: ACCESS_TOKEN,
                            token_type: "Bearer",
                            expires_in: trust.token_lifetime_secs,
                        })
                        .into_response(),
                    ),
                    Err(pedm_core::Error::Unauthenticated(m)) => {
                        oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", m)
                    }
                    Err(e) => super::error::ApiErr::from(e).into_response(),
                };
            }
            Err(crate::oidc::OidcError::Unavailable(m)) => {
                tracing::warn!(trust = %trust.name, error = %m, "workload issuer unavailable");
                return oauth_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "temporarily_unavailable",
                    m,
                );
            }
            Err(crate::oidc::OidcError::Refused(m)) => {
                refusal = s.cp.workload_refuse(&trust.name, &m).await.to_string();
            }
        }
    }
    oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", refusal)
}
