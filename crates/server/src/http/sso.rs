//! Single sign-on routes (see `pedm_api::sso`). The server, not the CLI, exchanges the code:
//! the client secret never leaves the server, and the provider's refresh token stays here too;
//! the CLI holds only the PKCE verifier and the state it generated, and receives a pedm
//! session token.

use super::AppState;
use super::error::{ApiErr, ApiResult};
use super::extract::{Body, Caller};
use crate::oidc::{DevicePoll, OidcError, Provider, Providers};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use pedm_api::ErrorBody;
use pedm_api::sso::*;
use pedm_core::service::{ControlPlane, SsoLogin};
use pedm_core::sso::SsoFlow;
use pedm_core::syntax::{is_loopback_redirect, is_unreserved};
use pedm_core::token::random_bytes;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// How long a started login may take.
const FLOW_TTL_SECS: i64 = 600;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(sso_start))
        .routes(routes!(sso_finish))
        .routes(routes!(sso_device_start))
        .routes(routes!(sso_device_poll))
        .routes(routes!(sso_refresh))
        .routes(routes!(sso_logout))
}

fn flow_id(handle: &str) -> String {
    hex::encode(Sha256::digest(handle.as_bytes()))
}

fn provider(providers: &Providers, name: Option<&str>) -> Result<Arc<Provider>, ApiErr> {
    if providers.by_name.is_empty() {
        return Err(ApiErr::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "single sign-on is not configured on this server ([[auth.oidc]])",
        ));
    }
    providers.get(name).ok_or_else(|| {
        ApiErr::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "provider {:?} is not configured on this server",
                name.unwrap_or("")
            ),
        )
    })
}

/// Only the CLI's own loopback listener may receive the code (RFC 8252 §7.3).
fn check_redirect(uri: &str) -> Result<(), ApiErr> {
    if is_loopback_redirect(uri) {
        return Ok(());
    }
    Err(ApiErr::invalid(
        "invalid redirect_uri: must be http://127.0.0.1:PORT/path or http://[::1]:PORT/path \
         with no user, query or fragment",
    ))
}

/// Turns a provider failure into the answer, recording refusals.
async fn fail(
    cp: &ControlPlane,
    action: &str,
    p: &Provider,
    who: Option<&str>,
    e: OidcError,
) -> ApiErr {
    match e {
        OidcError::Unavailable(m) => {
            tracing::warn!(provider = %p.settings.name, error = %m, "identity provider unavailable");
            ApiErr::new(StatusCode::SERVICE_UNAVAILABLE, "idp_unavailable", m)
        }
        OidcError::Refused(m) => cp
            .sso_refuse(action, &p.settings.name, who, &m)
            .await
            .into(),
    }
}

fn session_out(l: SsoLogin, provider: &str) -> SsoSessionToken {
    SsoSessionToken {
        token: l.token,
        token_id: l.record.id,
        user: l.user,
        groups: l.groups,
        provider: provider.into(),
        expires_at: l.record.expires_at,
    }
}

/// Begin an authorisation-code + PKCE flow (the CLI's loopback redirect).
#[utoipa::path(post, path = "/auth/oidc/start", tag = "sso", request_body = SsoStart,
    security(()),
    responses((status = 200, body = SsoStarted), (status = 400, body = ErrorBody),
        (status = 404, description = "single sign-on is not configured", body = ErrorBody),
        (status = 503, description = "the identity provider is unreachable", body = ErrorBody)))]
async fn sso_start(
    State(s): State<AppState>,
    Body(b): Body<SsoStart>,
) -> ApiResult<Json<SsoStarted>> {
    let p = provider(&s.sso, b.provider.as_deref())?;
    check_redirect(&b.redirect_uri)?;
    if !is_unreserved(&b.state, 32, 128) {
        return Err(ApiErr::invalid(
            "invalid state: use 32-128 unguessable URL-safe characters",
        ));
    }
    if !is_unreserved(&b.code_challenge, 43, 43) {
        return Err(ApiErr::invalid(
            "invalid code_challenge: must be BASE64URL(SHA-256(verifier)), 43 characters",
        ));
    }
    let (url, expires_at) =
        begin_code_flow(&s.cp, &p, &b.redirect_uri, &b.state, &b.code_challenge).await?;
    Ok(Json(SsoStarted {
        authorization_url: url,
        expires_at,
    }))
}

/// Finish an authorisation-code flow: the server exchanges the code (with the PKCE verifier
/// and its client secret), verifies the ID token and opens a pedm session.
#[utoipa::path(post, path = "/auth/oidc/finish", tag = "sso", request_body = SsoFinish,
    security(()),
    responses((status = 200, body = SsoSessionToken), (status = 400, body = ErrorBody),
        (status = 401, description = "refused: bad state, code or ID token (recorded)", body = ErrorBody),
        (status = 503, description = "the identity provider is unreachable", body = ErrorBody)))]
async fn sso_finish(
    State(s): State<AppState>,
    Body(b): Body<SsoFinish>,
) -> ApiResult<Json<SsoSessionToken>> {
    if !is_unreserved(&b.code_verifier, 43, 128) {
        return Err(ApiErr::invalid(
            "invalid code_verifier: 43-128 URL-safe characters (RFC 7636)",
        ));
    }
    if b.code.is_empty() || b.code.chars().count() > 2048 || b.state.chars().count() > 128 {
        return Err(ApiErr::invalid("invalid code or state: empty or too long"));
    }
    let (login, provider) =
        finish_code_flow(&s.cp, &s.sso, &b.state, &b.code, &b.code_verifier).await?;
    Ok(Json(session_out(login, &provider)))
}

/// Begin a device authorisation flow (for a terminal without a browser).
#[utoipa::path(post, path = "/auth/oidc/device", tag = "sso", request_body = SsoDeviceStart,
    security(()),
    responses((status = 200, body = SsoDeviceStarted), (status = 400, body = ErrorBody),
        (status = 401, description = "the provider refused", body = ErrorBody),
        (status = 404, description = "single sign-on is not configured", body = ErrorBody),
        (status = 503, description = "the identity provider is unreachable", body = ErrorBody)))]
async fn sso_device_start(
    State(s): State<AppState>,
    Body(b): Body<SsoDeviceStart>,
) -> ApiResult<Json<SsoDeviceStarted>> {
    let p = provider(&s.sso, b.provider.as_deref())?;
    let d = match p.device_start().await {
        Ok(d) => d,
        Err(e) => return Err(fail(&s.cp, "sso.login", &p, None, e).await),
    };
    let handle = URL_SAFE_NO_PAD.encode(random_bytes::<32>());
    let now = s.cp.now();
    let expires_at = now + jiff::SignedDuration::from_secs(d.expires_in as i64);
    s.cp.sso_begin_flow(SsoFlow {
        id: flow_id(&handle),
        provider: p.settings.name.clone(),
        kind: "device".into(),
        nonce: None,
        redirect_uri: None,
        device_code: Some(d.device_code),
        created_at: now,
        expires_at,
    })
    .await?;
    Ok(Json(SsoDeviceStarted {
        handle,
        user_code: d.user_code,
        verification_uri: d.verification_uri,
        verification_uri_complete: d.verification_uri_complete,
        expires_at,
        interval: d.interval,
    }))
}

/// Poll a device flow once: pending, or the pedm session.
#[utoipa::path(post, path = "/auth/oidc/device/poll", tag = "sso", request_body = SsoDevicePoll,
    security(()),
    responses((status = 200, body = SsoDevicePolled), (status = 400, body = ErrorBody),
        (status = 401, description = "refused: unknown handle, denied, expired, bad ID token (recorded)", body = ErrorBody),
        (status = 503, description = "the identity provider is unreachable", body = ErrorBody)))]
async fn sso_device_poll(
    State(s): State<AppState>,
    Body(b): Body<SsoDevicePoll>,
) -> ApiResult<Json<SsoDevicePolled>> {
    if !is_unreserved(&b.handle, 1, 128) {
        return Err(ApiErr::invalid("invalid handle"));
    }
    let id = flow_id(&b.handle);
    let flow = s.cp.sso_flow(&id).await?;
    let Some(flow) = flow.filter(|f| f.kind == "device" && s.cp.now() < f.expires_at) else {
        return Err(s
            .cp
            .sso_refuse("sso.login", "-", None, "unknown or expired device flow")
            .await
            .into());
    };
    let p = provider(&s.sso, Some(&flow.provider))?;
    let code = flow.device_code.clone().unwrap_or_default();
    let answer = match p.device_poll(&code).await {
        Ok(DevicePoll::Pending { slow_down }) => {
            return Ok(Json(SsoDevicePolled {
                status: "pending".into(),
                interval: if slow_down { 10 } else { 5 },
                session: None,
            }));
        }
        Ok(DevicePoll::Done(a)) => a,
        Err(e) => {
            s.cp.sso_drop_flow(&id).await?;
            return Err(fail(&s.cp, "sso.login", &p, None, e).await);
        }
    };
    // Only one poller finishes the flow.
    s.cp.sso_take_flow(&id, "device").await?;
    let Some(id_token) = answer.id_token else {
        return Err(fail(
            &s.cp,
            "sso.login",
            &p,
            None,
            OidcError::Refused("the provider returned no ID token".into()),
        )
        .await);
    };
    let identity = match p
        .verify(&id_token, None, answer.access_token.as_deref())
        .await
    {
        Ok(i) => i,
        Err(e) => return Err(fail(&s.cp, "sso.login", &p, None, e).await),
    };
    let login =
        s.cp.sso_login(
            &identity,
            answer.refresh_token,
            p.settings.session_lifetime_secs,
        )
        .await?;
    Ok(Json(SsoDevicePolled {
        status: "done".into(),
        interval: 0,
        session: Some(session_out(login, &p.settings.name)),
    }))
}

/// Refresh the caller's SSO session through the provider: claims (groups) re-read, the
/// session token rotated. A provider refusal (user disabled, session ended) ends the session.
#[utoipa::path(post, path = "/auth/refresh", tag = "sso",
    responses((status = 200, body = SsoSessionToken),
        (status = 401, description = "refused by the provider or not a session token (recorded)", body = ErrorBody),
        (status = 403, description = "the token is not a single sign-on session", body = ErrorBody),
        (status = 503, description = "the identity provider is unreachable", body = ErrorBody)))]
async fn sso_refresh(State(s): State<AppState>, c: Caller) -> ApiResult<Json<SsoSessionToken>> {
    let session = s.cp.sso_session_of(&c.actor, "sso.refresh").await?;
    let p = match s.sso.by_name.get(&session.provider) {
        Some(p) => p.clone(),
        None => {
            let why = format!("provider {} is no longer configured", session.provider);
            s.cp.sso_end(&c.actor, &session, Some(&why)).await?;
            return Err(ApiErr::new(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                why,
            ));
        }
    };
    let Some(rt) = session.refresh_token.clone() else {
        let why = "the provider gave no refresh token: log in again";
        return Err(s
            .cp
            .sso_refuse("sso.refresh", &session.provider, Some(&c.actor.user), why)
            .await
            .into());
    };
    let refused = async |why: String| -> ApiErr {
        if let Err(e) = s.cp.sso_end(&c.actor, &session, Some(&why)).await {
            return e.into();
        }
        ApiErr::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            format!("refresh refused, session ended: {why}"),
        )
    };
    let answer = match p.refresh(&rt).await {
        Ok(a) => a,
        Err(OidcError::Refused(m)) => return Err(refused(m).await),
        Err(e) => return Err(fail(&s.cp, "sso.refresh", &p, Some(&c.actor.user), e).await),
    };
    let Some(id_token) = answer.id_token else {
        return Err(refused(
            "the provider returned no ID token on refresh, so the claims cannot be re-read".into(),
        )
        .await);
    };
    let identity = match p
        .verify(&id_token, None, answer.access_token.as_deref())
        .await
    {
        Ok(i) => i,
        Err(OidcError::Refused(m)) => return Err(refused(m).await),
        Err(e) => return Err(fail(&s.cp, "sso.refresh", &p, Some(&c.actor.user), e).await),
    };
    let login =
        s.cp.sso_refresh(
            &c.actor,
            &session,
            &identity,
            answer.refresh_token,
            p.settings.session_lifetime_secs,
        )
        .await?;
    Ok(Json(session_out(login, &p.settings.name)))
}

/// End the caller's SSO session (its token is revoked, the provider's refresh token dropped).
#[utoipa::path(post, path = "/auth/logout", tag = "sso",
    responses((status = 200, body = SsoLoggedOut),
        (status = 401, description = "not authenticated", body = ErrorBody),
        (status = 403, description = "the token is not a single sign-on session", body = ErrorBody)))]
async fn sso_logout(State(s): State<AppState>, c: Caller) -> ApiResult<Json<SsoLoggedOut>> {
    let session = s.cp.sso_session_of(&c.actor, "sso.logout").await?;
    s.cp.sso_end(&c.actor, &session, None).await?;
    Ok(Json(SsoLoggedOut {
        token_id: session.token_id,
    }))
}

/// Starts an authorisation-code flow at `p` (the CLI's or the console's): the flow is kept
/// under SHA-256 of `state` with a fresh nonce; returns the provider's URL and the flow's end.
pub(crate) async fn begin_code_flow(
    cp: &ControlPlane,
    p: &Provider,
    redirect_uri: &str,
    state: &str,
    code_challenge: &str,
) -> Result<(String, jiff::Timestamp), ApiErr> {
    let nonce = URL_SAFE_NO_PAD.encode(random_bytes::<32>());
    let url = p
        .authorization_url(redirect_uri, state, &nonce, code_challenge)
        .await
        .map_err(|e| match e {
            OidcError::Unavailable(m) | OidcError::Refused(m) => {
                ApiErr::new(StatusCode::SERVICE_UNAVAILABLE, "idp_unavailable", m)
            }
        })?;
    let now = cp.now();
    let expires_at = now + jiff::SignedDuration::from_secs(FLOW_TTL_SECS);
    cp.sso_begin_flow(SsoFlow {
        id: flow_id(state),
        provider: p.settings.name.clone(),
        kind: "code".into(),
        nonce: Some(nonce),
        redirect_uri: Some(redirect_uri.into()),
        device_code: None,
        created_at: now,
        expires_at,
    })
    .await?;
    Ok((url, expires_at))
}

/// Finishes the code flow `state` started (once): the code exchanged with the verifier at
/// the redirect the flow was started with, the ID token verified, a pedm session opened.
pub(crate) async fn finish_code_flow(
    cp: &ControlPlane,
    providers: &Providers,
    state: &str,
    code: &str,
    code_verifier: &str,
) -> Result<(SsoLogin, String), ApiErr> {
    let flow = cp.sso_take_flow(&flow_id(state), "code").await?;
    let p = provider(providers, Some(&flow.provider))?;
    let redirect = flow.redirect_uri.clone().unwrap_or_default();
    let answer = match p.exchange_code(code, code_verifier, &redirect).await {
        Ok(a) => a,
        Err(e) => return Err(fail(cp, "sso.login", &p, None, e).await),
    };
    let Some(id_token) = answer.id_token else {
        return Err(fail(
            cp,
            "sso.login",
            &p,
            None,
            OidcError::Refused("the provider returned no ID token".into()),
        )
        .await);
    };
    let identity = match p
        .verify(
            &id_token,
            flow.nonce.as_deref(),
            answer.access_token.as_deref(),
        )
        .await
    {
        Ok(i) => i,
        Err(e) => return Err(fail(cp, "sso.login", &p, None, e).await),
    };
    let login = cp
        .sso_login(
            &identity,
            answer.refresh_token,
            p.settings.session_lifetime_secs,
        )
        .await?;
    Ok((login, p.settings.name.clone()))
}

/// Single sign-on for the web console (its port, [`pedm_console::SingleSignOn`]): the same
/// flows as the CLI's, with the console's callback as the redirect.
pub struct ConsoleSso {
    pub cp: Arc<ControlPlane>,
    pub providers: Arc<Providers>,
}

#[async_trait::async_trait]
impl pedm_console::SingleSignOn for ConsoleSso {
    fn providers(&self) -> Vec<String> {
        self.providers.by_name.keys().cloned().collect()
    }

    async fn start(&self, s: pedm_console::SsoStart) -> Result<String, pedm_console::SsoError> {
        let p = provider(&self.providers, Some(&s.provider)).map_err(console_error)?;
        begin_code_flow(&self.cp, &p, &s.redirect_uri, &s.state, &s.code_challenge)
            .await
            .map(|(url, _)| url)
            .map_err(console_error)
    }

    async fn finish(
        &self,
        state: &str,
        code: &str,
        code_verifier: &str,
    ) -> Result<(SsoLogin, String), pedm_console::SsoError> {
        finish_code_flow(&self.cp, &self.providers, state, code, code_verifier)
            .await
            .map_err(console_error)
    }
}

fn console_error(e: ApiErr) -> pedm_console::SsoError {
    if e.status == StatusCode::SERVICE_UNAVAILABLE || e.status == StatusCode::NOT_FOUND {
        pedm_console::SsoError::Unavailable(e.message)
    } else {
        pedm_console::SsoError::Refused(e.message)
    }
}
