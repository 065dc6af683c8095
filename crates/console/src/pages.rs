//! The pages: sign-in and sign-out, request access (with a preview of what policy will do),
//! my access (requests, grants counting down, release), the approver inbox and a request's
//! page (approve, deny, withdraw). Each handler calls one core service; the core decides.

use crate::Console;
use crate::error::{PageError, PageResult, message_of, status_of};
use crate::session::{Posted, Viewer, clear_session_cookie};
use crate::sso::{SameOrigin, redirect_uri, signed_in};
use crate::view::*;
use askama::Template;
use axum::Router;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use pedm_core::duration::parse_duration;
use pedm_core::model::*;
use pedm_core::service::NewRequest;
use serde::Deserialize;
use std::net::SocketAddr;
use uuid::Uuid;

pub fn router() -> Router<Console> {
    Router::new()
        .route("/ui", get(home))
        .route("/ui/", get(home))
        .route("/ui/sign-in", get(sign_in_page).post(sign_in))
        .route("/ui/sign-out", post(sign_out))
        .route("/ui/access", get(access))
        .route("/ui/access/live", get(access_live))
        .route("/ui/request", get(request_form).post(request_post))
        .route("/ui/inbox", get(inbox))
        .route("/ui/inbox/live", get(inbox_live))
        .route("/ui/requests/{id}", get(request_detail))
        .route("/ui/requests/{id}/live", get(request_live))
        .route("/ui/requests/{id}/decide", post(decide))
        .route("/ui/requests/{id}/cancel", post(cancel))
        .route("/ui/grants/{id}/release", post(release))
        .route("/ui/grants/{id}/extend", post(extend))
        .route("/ui/grants/{id}/secret", post(reveal_secret))
}

pub(crate) fn html(t: impl Template) -> PageResult<Response> {
    Ok(Html(t.render()?).into_response())
}

pub(crate) fn nav(c: &Console, v: &Viewer, active: &'static str) -> Option<Nav> {
    use pedm_core::decision::AdminAction;
    Some(Nav {
        user: v.actor.user.clone(),
        csrf: v.csrf.clone(),
        active,
        audit: c.cp.may(&v.actor, AdminAction::ReadAudit),
        policies: c.cp.may(&v.actor, AdminAction::ManagePolicies),
        grants: c.cp.may(&v.actor, AdminAction::ManageGrants),
        admin: c.cp.may(&v.actor, AdminAction::ManageUsers),
    })
}

pub(crate) fn see_other(to: String) -> Response {
    Redirect::to(&to).into_response()
}

pub(crate) fn parse_id(id: &str) -> PageResult<Uuid> {
    Uuid::parse_str(id).map_err(|_| PageError::Invalid(format!("invalid id {id:?}")))
}

/// My access is the start page; without a session it sends people to sign in.
async fn home() -> Response {
    see_other("/ui/access".into())
}

// ------------------------------------------------------------------ sign-in

#[derive(Template)]
#[template(path = "sign_in.html")]
struct SignInPage {
    nav: Option<Nav>,
    providers: Vec<String>,
    error: Option<String>,
}

fn providers(c: &Console) -> Vec<String> {
    match (&c.sso, redirect_uri(c)) {
        (Some(s), Some(_)) => s.providers(),
        _ => vec![],
    }
}

async fn sign_in_page(State(c): State<Console>) -> PageResult<Response> {
    html(SignInPage {
        nav: None,
        providers: providers(&c),
        error: None,
    })
}

#[derive(Deserialize)]
struct TokenForm {
    #[serde(default)]
    token: String,
}

async fn sign_in(
    State(c): State<Console>,
    _: SameOrigin,
    headers: axum::http::HeaderMap,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    axum::Form(f): axum::Form<TokenForm>,
) -> PageResult<Response> {
    let source = peer.ip().to_string();
    match c
        .cp
        .web_sign_in_with_token(f.token.trim(), Some(&source), c.settings.session_secs)
        .await
    {
        Ok(s) => Ok(signed_in(&s.token, c.settings.session_secs, None, &headers)),
        Err(e @ (pedm_core::Error::Unauthenticated(_) | pedm_core::Error::Forbidden(_))) => {
            let page = SignInPage {
                nav: None,
                providers: providers(&c),
                error: Some(format!("not signed in: {}", message_of(&e))),
            };
            Ok((status_of(&e), Html(page.render()?)).into_response())
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(Deserialize)]
struct Empty {}

async fn sign_out(State(c): State<Console>, p: Posted<Empty>) -> PageResult<Response> {
    c.cp.web_sign_out(&p.viewer.actor).await?;
    Ok((
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, "/ui/sign-in".to_string()),
            (
                header::SET_COOKIE,
                clear_session_cookie()
                    .to_str()
                    .unwrap_or_default()
                    .to_string(),
            ),
        ],
    )
        .into_response())
}

// ------------------------------------------------------------------ my access

#[derive(Template)]
#[template(path = "access.html")]
struct AccessPage {
    nav: Option<Nav>,
    csrf: String,
    grants: Vec<GrantRow>,
    ended: Vec<GrantRow>,
    requests: Vec<RequestRow>,
}

#[derive(Template)]
#[template(path = "access_live.html")]
struct AccessLive {
    csrf: String,
    grants: Vec<GrantRow>,
    ended: Vec<GrantRow>,
    requests: Vec<RequestRow>,
}

async fn access_rows(
    c: &Console,
    v: &Viewer,
) -> PageResult<(Vec<GrantRow>, Vec<GrantRow>, Vec<RequestRow>)> {
    let me = &v.actor;
    let now = c.cp.now();
    let grants =
        c.cp.list_grants(
            me,
            GrantFilter {
                user: Some(me.user.clone()),
                limit: Some(50),
                ..Default::default()
            },
        )
        .await?;
    let (live, ended): (Vec<_>, Vec<_>) = grants
        .into_iter()
        .map(|g| g.as_of(now))
        .partition(|g| g.state == GrantState::Active);
    let requests =
        c.cp.list_requests(
            me,
            RequestFilter {
                requester: Some(me.user.clone()),
                limit: Some(50),
                ..Default::default()
            },
        )
        .await?;
    let mut rows = Vec::with_capacity(requests.len());
    for r in &requests {
        // Pending ones show who must still approve: that needs their approvals.
        let approvals = if r.state == RequestState::Pending {
            c.cp.get_request(me, r.id).await?.1
        } else {
            vec![]
        };
        rows.push(RequestRow::new(r, &approvals));
    }
    Ok((
        live.iter().map(|g| GrantRow::new(g, now)).collect(),
        ended
            .iter()
            .take(20)
            .map(|g| GrantRow::new(g, now))
            .collect(),
        rows,
    ))
}

async fn access(State(c): State<Console>, v: Viewer) -> PageResult<Response> {
    let (grants, ended, requests) = access_rows(&c, &v).await?;
    html(AccessPage {
        nav: nav(&c, &v, "access"),
        csrf: v.csrf.clone(),
        grants,
        ended,
        requests,
    })
}

async fn access_live(State(c): State<Console>, v: Viewer) -> PageResult<Response> {
    let (grants, ended, requests) = access_rows(&c, &v).await?;
    html(AccessLive {
        csrf: v.csrf,
        grants,
        ended,
        requests,
    })
}

async fn release(
    State(c): State<Console>,
    Path(id): Path<String>,
    p: Posted<Empty>,
) -> PageResult<Response> {
    let id = parse_id(&id)?;
    c.cp.release_grant(&p.viewer.actor, id, Some("released in the console".into()))
        .await?;
    Ok(see_other("/ui/access".into()))
}

#[derive(Deserialize)]
struct ExtendForm {
    #[serde(default)]
    by: String,
    #[serde(default)]
    justification: String,
}

/// Asks for more time on the viewer's grant (policy decides, as for the API): to the new
/// request's page, which says whether it was granted at once or waits for approvers.
async fn extend(
    State(c): State<Console>,
    Path(id): Path<String>,
    p: Posted<ExtendForm>,
) -> PageResult<Response> {
    let id = parse_id(&id)?;
    let by = parse_duration(p.form.by.trim())
        .map_err(|e| PageError::Invalid(format!("invalid duration: {e}")))?;
    let context = RequestContext {
        source_addr: p.viewer.source.clone(),
        device: Default::default(),
        step_up: None,
        extends: None,
        starts_at: None,
        ticket: None,
        via_agent: false,
        while_on_call: false,
        risk: None,
    };
    let (r, _) =
        c.cp.extend_grant(&p.viewer.actor, id, by, p.form.justification, None, context)
            .await?;
    Ok(see_other(format!("/ui/requests/{}", r.id)))
}

#[derive(Template)]
#[template(path = "secret.html")]
struct SecretPage {
    nav: Option<Nav>,
    target: String,
    role: String,
    secret: Option<String>,
}

/// A grant's one-time secret (a generated password): a POST, because reading it deletes it;
/// the page is never cached (`no-store`) and the secret is never in a URL.
async fn reveal_secret(
    State(c): State<Console>,
    Path(id): Path<String>,
    p: Posted<Empty>,
) -> PageResult<Response> {
    let id = parse_id(&id)?;
    let g = c.cp.get_grant(&p.viewer.actor, id).await?;
    let secret = match c.cp.take_grant_secret(&p.viewer.actor, id).await {
        Ok(s) => Some(s),
        Err(pedm_core::Error::NotFound(_)) => None,
        Err(e) => return Err(e.into()),
    };
    html(SecretPage {
        nav: nav(&c, &p.viewer, "access"),
        target: g.target,
        role: g.role,
        secret,
    })
}

// ------------------------------------------------------------------ request access

#[derive(Default, Deserialize)]
struct RequestFormValues {
    #[serde(default)]
    role: String,
    #[serde(default)]
    duration: String,
    #[serde(default)]
    justification: String,
    #[serde(default)]
    ticket: String,
    break_glass: Option<String>,
    #[serde(default)]
    action: String,
}

struct RoleOption {
    value: String,
    label: String,
}

#[derive(Template)]
#[template(path = "request_form.html")]
struct RequestFormPage {
    nav: Option<Nav>,
    csrf: String,
    options: Vec<RoleOption>,
    form: RequestFormValues,
    preview: Option<PreviewView>,
    error: Option<String>,
}

async fn role_options(c: &Console) -> PageResult<Vec<RoleOption>> {
    let roles = c.cp.list_roles(None).await?;
    Ok(roles
        .into_iter()
        .map(|r| RoleOption {
            value: format!("{}/{}", r.target, r.name),
            label: format!(
                "{} on {} (up to {}{})",
                r.name,
                r.target,
                pedm_core::duration::format_duration(r.max_duration_secs),
                r.description
                    .as_deref()
                    .map(|d| format!("; {d}"))
                    .unwrap_or_default()
            ),
        })
        .collect())
}

async fn request_form(State(c): State<Console>, v: Viewer) -> PageResult<Response> {
    html(RequestFormPage {
        nav: nav(&c, &v, "request"),
        csrf: v.csrf.clone(),
        options: role_options(&c).await?,
        form: RequestFormValues {
            duration: "1h".into(),
            ..Default::default()
        },
        preview: None,
        error: None,
    })
}

async fn request_post(
    State(c): State<Console>,
    p: Posted<RequestFormValues>,
) -> PageResult<Response> {
    let v = &p.viewer;
    let f = p.form;
    let page = |form, preview, error| -> PageResult<RequestFormPage> {
        Ok(RequestFormPage {
            nav: nav(&c, v, "request"),
            csrf: v.csrf.clone(),
            options: vec![],
            form,
            preview,
            error,
        })
    };
    let answer = |mut pg: RequestFormPage, opts, status: StatusCode| -> PageResult<Response> {
        pg.options = opts;
        Ok((status, Html(pg.render()?)).into_response())
    };
    let opts = role_options(&c).await?;
    let Some((target, role)) = f.role.split_once('/') else {
        let pg = page(f, None, Some("choose a target and role".into()))?;
        return answer(pg, opts, StatusCode::BAD_REQUEST);
    };
    let duration_secs = match parse_duration(f.duration.trim()) {
        Ok(d) => d,
        Err(e) => {
            let pg = page(f, None, Some(format!("invalid duration: {e}")))?;
            return answer(pg, opts, StatusCode::BAD_REQUEST);
        }
    };
    let ticket = Some(f.ticket.trim().to_string()).filter(|t| !t.is_empty());
    let new = NewRequest {
        target: target.into(),
        role: role.into(),
        duration_secs,
        justification: f.justification.clone(),
        task: None,
        ticket,
        break_glass: f.break_glass.is_some(),
        starts_at: None,
    };
    let context = RequestContext {
        source_addr: v.source.clone(),
        device: Default::default(),
        step_up: None,
        extends: None,
        starts_at: None,
        ticket: None,
        via_agent: false,
        while_on_call: false,
        risk: None,
    };
    if f.action == "preview" {
        let preview = match c.cp.preview_request(&v.actor, new, context).await {
            Ok(pv) => pv,
            Err(e) => {
                let status = status_of(&e);
                let pg = page(f, None, Some(message_of(&e)))?;
                return answer(pg, opts, status);
            }
        };
        let pg = page(f, Some(PreviewView::new(preview)), None)?;
        return answer(pg, opts, StatusCode::OK);
    }
    match c.cp.create_request(&v.actor, new, context).await {
        Ok((r, _)) => Ok(see_other(format!("/ui/requests/{}", r.id))),
        Err(e) => {
            let status = status_of(&e);
            let pg = page(f, None, Some(message_of(&e)))?;
            answer(pg, opts, status)
        }
    }
}

// ------------------------------------------------------------------ inbox

/// Requests shown per inbox page (the oldest first).
const INBOX_PAGE: usize = 50;

#[derive(Default, Deserialize)]
struct PageQuery {
    #[serde(default)]
    page: usize,
    /// Every pending request, not only those the viewer may decide (admins, auditors).
    #[serde(default)]
    all: bool,
}

struct Inbox {
    /// Each request with whether the viewer may decide it now.
    rows: Vec<(RequestRow, bool)>,
    all: bool,
    /// Whether the viewer may switch to every pending request.
    may_see_all: bool,
    total: usize,
    page: usize,
    first: usize,
    last: usize,
    more: bool,
}

#[derive(Template)]
#[template(path = "inbox.html")]
struct InboxPage {
    nav: Option<Nav>,
    csrf: String,
    inbox: Inbox,
}

#[derive(Template)]
#[template(path = "inbox_live.html")]
struct InboxLive {
    csrf: String,
    inbox: Inbox,
}

async fn inbox_rows(c: &Console, v: &Viewer, q: &PageQuery) -> PageResult<Inbox> {
    let mut decidable = c.cp.approvable_requests(&v.actor).await?;
    decidable.sort_by_key(|r| r.created_at);
    let may_see_all =
        c.cp.may(&v.actor, pedm_core::decision::AdminAction::ReadAudit);
    let pending = if q.all {
        c.cp.all_pending(&v.actor).await?
    } else {
        decidable.clone()
    };
    let mine: std::collections::HashSet<Uuid> = decidable.iter().map(|r| r.id).collect();
    let page = q.page;
    let total = pending.len();
    let start = page.saturating_mul(INBOX_PAGE).min(total);
    let end = (start + INBOX_PAGE).min(total);
    let mut rows = Vec::with_capacity(end - start);
    // Only the rows shown need their approvals (who is still awaited).
    for r in &pending[start..end] {
        let (_, approvals) = c.cp.get_request(&v.actor, r.id).await?;
        let mut row = RequestRow::new(r, &approvals);
        row.history = history_text(&c.cp.requester_history(&v.actor, r.id).await?);
        rows.push((row, mine.contains(&r.id)));
    }
    Ok(Inbox {
        rows,
        all: q.all,
        may_see_all,
        total,
        page,
        first: start + 1,
        last: end,
        more: end < total,
    })
}

async fn inbox(
    State(c): State<Console>,
    v: Viewer,
    Query(q): Query<PageQuery>,
) -> PageResult<Response> {
    let inbox = inbox_rows(&c, &v, &q).await?;
    html(InboxPage {
        nav: nav(&c, &v, "inbox"),
        csrf: v.csrf.clone(),
        inbox,
    })
}

async fn inbox_live(
    State(c): State<Console>,
    v: Viewer,
    Query(q): Query<PageQuery>,
) -> PageResult<Response> {
    let inbox = inbox_rows(&c, &v, &q).await?;
    html(InboxLive {
        csrf: v.csrf,
        inbox,
    })
}

// ------------------------------------------------------------------ one request

#[derive(Template)]
#[template(path = "request_detail.html")]
struct RequestPage {
    nav: Option<Nav>,
    csrf: String,
    r: RequestRow,
    approvals: Vec<String>,
    can_decide: bool,
    can_cancel: bool,
}

#[derive(Template)]
#[template(path = "request_live.html")]
struct RequestLive {
    csrf: String,
    r: RequestRow,
    approvals: Vec<String>,
    can_decide: bool,
    can_cancel: bool,
}

pub(crate) struct RequestView {
    pub r: RequestRow,
    pub approvals: Vec<String>,
    pub can_decide: bool,
    pub can_cancel: bool,
}

pub(crate) async fn request_view(c: &Console, v: &Viewer, id: &str) -> PageResult<RequestView> {
    let id = parse_id(id)?;
    let (r, approvals) = c.cp.get_request(&v.actor, id).await?;
    let pending = r.state == RequestState::Pending;
    let mine = r.requester == v.actor.user;
    // Offer the buttons only where the core would accept them; it checks again on post.
    let can_decide = pending
        && !mine
        && c.cp
            .approvable_requests(&v.actor)
            .await?
            .iter()
            .any(|p| p.id == r.id);
    let lines = approvals
        .iter()
        .map(|a| {
            let mut s = format!(
                "{} {} at {}",
                a.approver,
                match a.decision {
                    ApprovalDecision::Approve => "approved",
                    ApprovalDecision::Deny => "denied",
                },
                short_time(a.at)
            );
            if let Some(cm) = &a.comment {
                s.push_str(": ");
                s.push_str(cm);
            }
            s
        })
        .collect();
    let mut row = RequestRow::new(&r, &approvals);
    if !mine {
        row.history = history_text(&c.cp.requester_history(&v.actor, r.id).await?);
    }
    Ok(RequestView {
        r: row,
        approvals: lines,
        can_decide,
        can_cancel: pending && mine,
    })
}

async fn request_detail(
    State(c): State<Console>,
    v: Viewer,
    Path(id): Path<String>,
) -> PageResult<Response> {
    let rv = request_view(&c, &v, &id).await?;
    html(RequestPage {
        nav: nav(&c, &v, "inbox"),
        csrf: v.csrf.clone(),
        r: rv.r,
        approvals: rv.approvals,
        can_decide: rv.can_decide,
        can_cancel: rv.can_cancel,
    })
}

async fn request_live(
    State(c): State<Console>,
    v: Viewer,
    Path(id): Path<String>,
) -> PageResult<Response> {
    let rv = request_view(&c, &v, &id).await?;
    html(RequestLive {
        csrf: v.csrf,
        r: rv.r,
        approvals: rv.approvals,
        can_decide: rv.can_decide,
        can_cancel: rv.can_cancel,
    })
}

#[derive(Deserialize)]
pub(crate) struct DecideForm {
    #[serde(default)]
    decision: String,
    #[serde(default)]
    comment: String,
}

async fn decide(
    State(c): State<Console>,
    Path(id): Path<String>,
    p: Posted<DecideForm>,
) -> PageResult<Response> {
    let id = parse_id(&id)?;
    let (decision, comment) = decision_of(&p.form)?;
    c.cp.decide_request(&p.viewer.actor, id, decision, comment)
        .await?;
    Ok(see_other(format!("/ui/requests/{id}")))
}

/// The decision and comment a decide form carries.
pub(crate) fn decision_of(f: &DecideForm) -> PageResult<(ApprovalDecision, Option<String>)> {
    let decision = match f.decision.as_str() {
        "approve" => ApprovalDecision::Approve,
        "deny" => ApprovalDecision::Deny,
        other => {
            return Err(PageError::Invalid(format!(
                "invalid decision {other:?}: approve or deny"
            )));
        }
    };
    Ok((
        decision,
        Some(f.comment.trim().to_string()).filter(|c| !c.is_empty()),
    ))
}

async fn cancel(
    State(c): State<Console>,
    Path(id): Path<String>,
    p: Posted<Empty>,
) -> PageResult<Response> {
    let id = parse_id(&id)?;
    c.cp.cancel_request(&p.viewer.actor, id, None).await?;
    Ok(see_other(format!("/ui/requests/{id}")))
}
