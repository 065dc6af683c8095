//! Single sign-on in the browser: authorisation code + PKCE, the verifier and state held in a
//! short-lived `__Host-` cookie of the browser that started the login (so a code delivered to
//! another browser, or a login started by someone else, fails). The protocol itself (the
//! provider, the code exchange, ID token checks) is the server's, behind [`SingleSignOn`].

use crate::Console;
use crate::error::{PageError, PageResult};
use crate::session::{self, cookie, is_cross_site, read_cookie, session_cookie};
use async_trait::async_trait;
use axum::Router;
use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use pedm_core::service::SsoLogin;
use pedm_core::token::random_bytes;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Where to go after signing in: a console path (set by the mail link page).
pub const RETURN_COOKIE: &str = "__Host-pedm_return";

/// A path the sign-in may send someone back to: only this console's own pages.
pub fn safe_return(path: &str) -> Option<&str> {
    let ok = path.starts_with("/ui/")
        && !path.contains("//")
        && path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/-_.".contains(&b));
    ok.then_some(path)
}

const LOGIN_COOKIE: &str = "__Host-pedm_login";
const LOGIN_TTL_SECS: i64 = 600;

/// A login to begin at the provider.
pub struct SsoStart {
    pub provider: String,
    pub redirect_uri: String,
    pub state: String,
    pub code_challenge: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SsoError {
    /// The provider cannot be reached or is not configured.
    #[error("{0}")]
    Unavailable(String),
    /// Refused (recorded by the server): a bad code, state or ID token, a disabled user.
    #[error("{0}")]
    Refused(String),
}

/// The server's OpenID Connect client, as the console needs it.
#[async_trait]
pub trait SingleSignOn: Send + Sync + 'static {
    /// The configured providers' names.
    fn providers(&self) -> Vec<String>;
    /// Records the flow and returns the provider's authorisation URL.
    async fn start(&self, s: SsoStart) -> Result<String, SsoError>;
    /// Exchanges the code of the flow `state` started (single use), verifies the ID token
    /// and opens a pedm session; returns it and the provider's name.
    async fn finish(
        &self,
        state: &str,
        code: &str,
        code_verifier: &str,
    ) -> Result<(SsoLogin, String), SsoError>;
}

pub fn router() -> Router<Console> {
    Router::new()
        .route("/ui/sign-in/sso", get(begin))
        .route("/ui/auth/callback", get(callback))
}

/// The console's address for the provider to send people back to, if SSO is offered.
pub(crate) fn redirect_uri(c: &Console) -> Option<String> {
    let base = c.settings.public_url.as_deref()?;
    c.sso.as_ref()?;
    Some(format!("{}/ui/auth/callback", base.trim_end_matches('/')))
}

/// A sign-in form posted from another site is refused: it would sign the victim in as
/// whoever the attacker chose (login CSRF).
pub(crate) struct SameOrigin;

impl FromRequestParts<Console> for SameOrigin {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, _: &Console) -> Result<Self, PageError> {
        if is_cross_site(&parts.headers) {
            return Err(PageError::Core(pedm_core::Error::Forbidden(
                "a sign-in posted from another site".into(),
            )));
        }
        Ok(SameOrigin)
    }
}

#[derive(Deserialize)]
struct Begin {
    #[serde(default)]
    provider: String,
}

/// A link, not a form: the CSP's `form-action 'self'` would stop a form's redirect to the
/// provider. Starting a login changes nothing anyone else sees; the state cookie binds its
/// end to this browser.
async fn begin(State(c): State<Console>, Query(f): Query<Begin>) -> PageResult<Response> {
    let (Some(sso), Some(redirect_uri)) = (c.sso.clone(), redirect_uri(&c)) else {
        return Err(PageError::Core(pedm_core::Error::NotFound(
            "single sign-on in the console (set [console] public_url and [[auth.oidc]])".into(),
        )));
    };
    let state = URL_SAFE_NO_PAD.encode(random_bytes::<32>());
    let verifier = URL_SAFE_NO_PAD.encode(random_bytes::<32>());
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let url = sso
        .start(SsoStart {
            provider: f.provider,
            redirect_uri,
            state: state.clone(),
            code_challenge: challenge,
        })
        .await
        .map_err(sso_error)?;
    Ok((
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, url),
            (
                header::SET_COOKIE,
                cookie(
                    LOGIN_COOKIE,
                    &format!("{state}.{verifier}"),
                    LOGIN_TTL_SECS,
                    "Lax",
                )
                .to_str()
                .unwrap_or_default()
                .to_string(),
            ),
        ],
    )
        .into_response())
}

fn sso_error(e: SsoError) -> PageError {
    match e {
        SsoError::Unavailable(m) => PageError::Core(pedm_core::Error::Internal(m)),
        SsoError::Refused(m) => PageError::Core(pedm_core::Error::Unauthenticated(m)),
    }
}

#[derive(Deserialize)]
struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

async fn callback(
    State(c): State<Console>,
    headers: HeaderMap,
    parts: axum::extract::ConnectInfo<std::net::SocketAddr>,
    Query(q): Query<Callback>,
) -> PageResult<Response> {
    let Some(sso) = c.sso.clone() else {
        return Err(PageError::SignIn);
    };
    if let Some(e) = q.error {
        return Err(PageError::Core(pedm_core::Error::Unauthenticated(format!(
            "the identity provider refused the sign-in: {}",
            e.chars().take(200).collect::<String>()
        ))));
    }
    let (Some(code), Some(state)) = (q.code, q.state) else {
        return Err(PageError::Invalid(
            "the provider sent no code or state".into(),
        ));
    };
    let held = read_cookie(&headers, LOGIN_COOKIE).unwrap_or("");
    let (held_state, verifier) = held.split_once('.').unwrap_or(("", ""));
    let same: bool = held_state.as_bytes().ct_eq(state.as_bytes()).into();
    if !same || held_state.is_empty() {
        return Err(PageError::Core(pedm_core::Error::Unauthenticated(
            "this sign-in was not started in this browser (or took longer than 10 minutes): \
             start again"
                .into(),
        )));
    }
    let (login, provider) = sso
        .finish(&state, &code, verifier)
        .await
        .map_err(sso_error)?;
    let source = Some(parts.0.ip().to_string());
    let signed =
        c.cp.web_sign_in_sso(login, &provider, source.as_deref())
            .await?;
    let max_age = c.settings.session_secs;
    Ok(signed_in(
        &signed.token,
        max_age,
        Some(LOGIN_COOKIE),
        &headers,
    ))
}

/// The answer to a successful sign-in: the new session cookie, the way in.
/// Goes back to the page that sent the person to sign in (a mail link), if it left one.
pub(crate) fn signed_in(
    token: &str,
    max_age: i64,
    clear: Option<&str>,
    headers: &HeaderMap,
) -> Response {
    let back = read_cookie(headers, RETURN_COOKIE).and_then(safe_return);
    let to = back.unwrap_or("/ui/access").to_string();
    let mut r = (StatusCode::SEE_OTHER, [(header::LOCATION, to)]).into_response();
    r.headers_mut()
        .append(header::SET_COOKIE, session_cookie(token, max_age));
    if back.is_some() {
        r.headers_mut().append(
            header::SET_COOKIE,
            session::cookie(RETURN_COOKIE, "", 0, "Lax"),
        );
    }
    if let Some(name) = clear {
        r.headers_mut()
            .append(header::SET_COOKIE, session::cookie(name, "", 0, "Lax"));
    }
    r
}
