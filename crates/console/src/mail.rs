//! The page a mail's approval link opens (`/ui/mail/{token}`): the request, and Approve /
//! Deny for the approver the link was sent to. Opening it needs that approver's session (one
//! who is not signed in comes back here after signing in); acting is a POST with the CSRF
//! token, once per link. The core checks the link (`open_mail_link`, `decide_by_mail_link`)
//! and records every refusal.

use crate::Console;
use crate::error::{PageError, PageResult};
use crate::pages::{DecideForm, RequestView, decision_of, html, nav, request_view, see_other};
use crate::session::{Posted, Viewer, cookie};
use crate::sso::RETURN_COOKIE;
use crate::view::*;
use askama::Template;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// How long the way back after signing in is kept.
const RETURN_SECS: i64 = 900;

pub fn router() -> Router<Console> {
    Router::new().route("/ui/mail/{token}", get(open).post(decide))
}

/// Link tokens are base64url with one dot; anything else is not one (and never reaches a
/// cookie or the core).
fn token_shape(token: &str) -> PageResult<()> {
    let ok = !token.is_empty()
        && token.len() <= 1024
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(PageError::Invalid("this is not a pedm mail link".into()))
    }
}

#[derive(Template)]
#[template(path = "mail_decide.html")]
struct MailPage {
    nav: Option<Nav>,
    csrf: String,
    token: String,
    r: RequestRow,
    approvals: Vec<String>,
    /// For the included facts: their own buttons stay off here.
    can_decide: bool,
    can_cancel: bool,
    /// Whether the core would take this approver's decision now.
    decidable: bool,
}

async fn open(
    State(c): State<Console>,
    viewer: Result<Viewer, PageError>,
    Path(token): Path<String>,
) -> PageResult<Response> {
    token_shape(&token)?;
    let v = match viewer {
        Ok(v) => v,
        Err(PageError::SignIn) => {
            let back = cookie(
                RETURN_COOKIE,
                &format!("/ui/mail/{token}"),
                RETURN_SECS,
                "Lax",
            );
            return Ok((
                StatusCode::SEE_OTHER,
                [(header::LOCATION, "/ui/sign-in".to_string())],
                [(header::SET_COOKIE, back)],
            )
                .into_response());
        }
        Err(e) => return Err(e),
    };
    let r = c.cp.open_mail_link(&v.actor, &token).await?;
    let RequestView {
        r,
        approvals,
        can_decide,
        ..
    } = request_view(&c, &v, &r.id.to_string()).await?;
    html(MailPage {
        nav: nav(&c, &v, "inbox"),
        csrf: v.csrf.clone(),
        token,
        r,
        approvals,
        can_decide: false,
        can_cancel: false,
        decidable: can_decide,
    })
}

async fn decide(
    State(c): State<Console>,
    Path(token): Path<String>,
    p: Posted<DecideForm>,
) -> PageResult<Response> {
    token_shape(&token)?;
    let (decision, comment) = decision_of(&p.form)?;
    let (r, _) =
        c.cp.decide_by_mail_link(&p.viewer.actor, &token, decision, comment)
            .await?;
    Ok(see_other(format!("/ui/requests/{}", r.id)))
}
