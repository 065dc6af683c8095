//! Who is looking: the session cookie, checked by the core on every request, and the CSRF
//! token every state change must carry.

use crate::Console;
use crate::error::PageError;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use pedm_core::model::Actor;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use subtle::ConstantTimeEq;

/// The session cookie. `__Host-`: only ever set by this origin over a secure connection,
/// path `/`, no `Domain`, so no sibling host can plant or read it.
pub const SESSION_COOKIE: &str = "__Host-pedm_session";

/// `Set-Cookie` for a new session (rotated at every sign-in: a new token each time).
pub fn session_cookie(token: &str, max_age_secs: i64) -> HeaderValue {
    cookie(SESSION_COOKIE, token, max_age_secs, "Lax")
}

/// `Set-Cookie` that removes the session cookie.
pub fn clear_session_cookie() -> HeaderValue {
    cookie(SESSION_COOKIE, "", 0, "Lax")
}

pub fn cookie(name: &str, value: &str, max_age_secs: i64, same_site: &str) -> HeaderValue {
    let v = format!(
        "{name}={value}; Path=/; Max-Age={max_age_secs}; Secure; HttpOnly; SameSite={same_site}"
    );
    // Names and values here are ours (token characters, base64url): always valid.
    HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static("invalid=; Max-Age=0"))
}

/// The value of cookie `name`, if the request carries exactly one such.
pub fn read_cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let mut found = None;
    for h in headers.get_all(header::COOKIE) {
        let Ok(s) = h.to_str() else { continue };
        for part in s.split(';') {
            if let Some((k, v)) = part.trim().split_once('=')
                && k == name
            {
                if found.is_some() {
                    // Two cookies of one name: someone planted one. Trust neither.
                    return None;
                }
                found = Some(v);
            }
        }
    }
    found
}

pub fn source_of(parts: &Parts) -> Option<String> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string())
}

/// Whether a request came from a page of another site: the browser's `Sec-Fetch-Site`, or,
/// from browsers without it, an `Origin` that is not this host.
pub(crate) fn is_cross_site(h: &HeaderMap) -> bool {
    if let Some(site) = h.get("sec-fetch-site") {
        return site.as_bytes() == b"cross-site";
    }
    // Older browsers: an Origin that is not this host.
    match (h.get(header::ORIGIN), h.get(header::HOST)) {
        (Some(o), Some(host)) => {
            let o = o.to_str().unwrap_or("");
            let host = host.to_str().unwrap_or("");
            let bare = o
                .strip_prefix("https://")
                .or_else(|| o.strip_prefix("http://"))
                .unwrap_or(o);
            o != "null" && bare != host
        }
        (Some(o), None) => o.as_bytes() != b"null",
        _ => false,
    }
}

/// A signed-in person, their session checked (idle and absolute timeouts, not signed out).
pub struct Viewer {
    pub actor: Actor,
    pub source: Option<String>,
    /// The CSRF token of this session, for the forms of the page.
    pub csrf: String,
}

/// The session's CSRF token: bound to the session (derived from its secret token, which no
/// script can read), so a page elsewhere cannot know it.
fn csrf_of(session_token: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"pedm-console-csrf\0");
    h.update(session_token.as_bytes());
    hex::encode(h.finalize())
}

impl FromRequestParts<Console> for Viewer {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, c: &Console) -> Result<Self, PageError> {
        let Some(token) = read_cookie(&parts.headers, SESSION_COOKIE).filter(|t| !t.is_empty())
        else {
            return Err(PageError::SignIn);
        };
        let source = source_of(parts);
        let actor = match c.cp.authenticate(token, source.as_deref()).await {
            Ok(a) => a,
            Err(pedm_core::Error::Unauthenticated(_)) => return Err(PageError::SignIn),
            Err(e) => return Err(e.into()),
        };
        match c.cp.web_session_check(&actor, c.settings.idle_secs).await {
            Ok(_) => {}
            Err(pedm_core::Error::Unauthenticated(_)) => return Err(PageError::SignIn),
            Err(e) => return Err(e.into()),
        }
        Ok(Viewer {
            csrf: csrf_of(token),
            actor,
            source,
        })
    }
}

#[derive(Deserialize)]
struct CsrfOnly {
    #[serde(default)]
    csrf: String,
}

/// A state-changing POST: a signed-in viewer, a form, and a valid CSRF token. A cross-site
/// post or a wrong token is refused and recorded before anything else happens.
pub struct Posted<T> {
    pub viewer: Viewer,
    pub form: T,
}

impl<T: DeserializeOwned + Send> FromRequest<Console> for Posted<T> {
    type Rejection = PageError;

    async fn from_request(req: Request, c: &Console) -> Result<Self, PageError> {
        let (mut parts, body) = req.into_parts();
        let viewer = Viewer::from_request_parts(&mut parts, c).await?;
        let cross_site = is_cross_site(&parts.headers);
        let req = Request::from_parts(parts, body);
        let axum::extract::RawForm(bytes) = axum::extract::RawForm::from_request(req, c)
            .await
            .map_err(|e| PageError::Invalid(e.body_text()))?;
        let presented = serde_urlencoded::from_bytes::<CsrfOnly>(&bytes)
            .map(|f| f.csrf)
            .unwrap_or_default();
        let valid: bool = presented.as_bytes().ct_eq(viewer.csrf.as_bytes()).into();
        if cross_site || !valid {
            let why = if cross_site {
                "a cross-site form post"
            } else {
                "a form post without this session's CSRF token"
            };
            return Err(c.cp.web_refuse(&viewer.actor, why).await.into());
        }
        let form = serde_urlencoded::from_bytes::<T>(&bytes)
            .map_err(|e| PageError::Invalid(format!("invalid form: {e}")))?;
        Ok(Posted { viewer, form })
    }
}
