//! What Slack sends back: button clicks and modal submissions
//! (`POST /integrations/slack/interactions`) and the `/pedm` slash command
//! (`POST /integrations/slack/commands`), plus `POST /api/v1/me/links/slack` where a signed-in
//! user redeems the link code `/pedm link` showed them.
//!
//! A callback counts only with a valid `X-Slack-Signature` under a configured app's signing
//! secret, a timestamp within five minutes, and a signature never seen before (claimed in the
//! database, so a replay to another instance fails too); anything else is 401 and an
//! `auth.failed` event. The Slack user who clicked acts only as the pedm user they linked, and
//! through the same core calls as the API: the core refuses (and records) self-approval,
//! approvers outside the tier, and the rest. Refusals are answered privately to the clicker.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use pedm_api::{SlackLink, SlackLinked};
use pedm_core::model::{ApprovalDecision, RequestContext};
use pedm_core::service::NewRequest;
use pedm_notify::slack::{
    self, APPROVE_ACTION, DENY_ACTION, DENY_VIEW, LINK_CODE_SECS, REASON_INPUT, REQUEST_INPUTS,
    REQUEST_VIEW, SIGNATURE_HEADER, SlackApp, TIMESTAMP_HEADER,
};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use uuid::Uuid;

use super::extract::{Body, Caller};
use super::{ApiErr, AppState};
use crate::slack::{INTEGRATION, issuer};
use pedm_notify::slack::Slack;

/// How long a seen signature is remembered: past the timestamp window, so a replay is either
/// stale or claimed.
const REPLAY_TTL_SECS: i64 = 2 * slack::MAX_SKEW_SECS + 60;

/// The app whose secret signed this callback, and its form fields.
pub(super) struct Verified {
    app: Arc<SlackApp>,
    form: Vec<(String, String)>,
}

impl Verified {
    fn field(&self, name: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

fn unauthorized(why: &str) -> Response {
    (StatusCode::UNAUTHORIZED, format!("refused: {why}\n")).into_response()
}

/// Checks signature, age and novelty; records a failure. `Err` is the response to give.
async fn verify(
    s: &AppState,
    source: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Verified, Response> {
    let slack = &s.slack;
    if slack.is_empty() {
        return Err((StatusCode::NOT_FOUND, "no Slack app is configured\n").into_response());
    }
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    let now = s.cp.now().as_second();
    let mut problem = None;
    let mut app = None;
    for a in &slack.apps {
        match slack::verify(
            &a.signing_secret,
            h(TIMESTAMP_HEADER),
            h(SIGNATURE_HEADER),
            body,
            now,
        ) {
            Ok(_) => {
                app = Some(a.clone());
                break;
            }
            Err(e) => problem = Some(e.to_string()),
        }
    }
    let fail = async |why: &str| {
        if let Err(e) = s.cp.integration_auth_failed(INTEGRATION, why, source).await {
            tracing::error!(error = %e, "could not record a refused Slack callback");
        }
        unauthorized(why)
    };
    let Some(app) = app else {
        return Err(fail(problem.as_deref().unwrap_or("signature does not match")).await);
    };
    let signature = h(SIGNATURE_HEADER).unwrap_or_default();
    match s
        .cp
        .integration_claim(INTEGRATION, &format!("seen:{signature}"), REPLAY_TTL_SECS)
        .await
    {
        Ok(true) => {}
        Ok(false) => return Err(fail("replayed: this signed request was received before").await),
        Err(e) => return Err(ApiErr::from(e).into_response()),
    }
    let form: Vec<(String, String)> = serde_urlencoded::from_bytes(body)
        .map_err(|_| (StatusCode::BAD_REQUEST, "body is not a form\n").into_response())?;
    Ok(Verified { app, form })
}

impl axum::extract::FromRequest<AppState> for Verified {
    type Rejection = Response;

    async fn from_request(req: axum::extract::Request, s: &AppState) -> Result<Self, Response> {
        let source = req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip().to_string());
        let headers = req.headers().clone();
        let body = Bytes::from_request(req, s)
            .await
            .map_err(IntoResponse::into_response)?;
        verify(s, source.as_deref(), &headers, &body).await
    }
}

/// `POST /integrations/slack/interactions`: Approve and Deny clicks, the deny modal.
pub(super) async fn interactions(State(s): State<AppState>, v: Verified) -> Response {
    let Some(payload) = v
        .field("payload")
        .and_then(|p| serde_json::from_str::<Value>(p).ok())
    else {
        return (StatusCode::BAD_REQUEST, "missing or malformed payload\n").into_response();
    };
    let team = payload["team"]["id"]
        .as_str()
        .or(payload["user"]["team_id"].as_str())
        .unwrap_or_default();
    let user = payload["user"]["id"].as_str().unwrap_or_default();
    if team != v.app.config.team_id {
        let why = format!(
            "a callback from workspace {team:?}, not {}",
            v.app.config.team_id
        );
        return refused(&s, &v.app, team, user, None, &why, &payload, None).await;
    }
    match payload["type"].as_str() {
        Some("block_actions") => block_action(&s, &v.app, team, user, &payload).await,
        Some("view_submission") if payload["view"]["callback_id"] == DENY_VIEW => {
            deny_submitted(&s, &v.app, team, user, &payload).await
        }
        Some("view_submission") if payload["view"]["callback_id"] == REQUEST_VIEW => {
            request_submitted(&s, &v.app, team, user, &payload).await
        }
        // Other interactions (a modal closed, ...) need nothing.
        _ => StatusCode::OK.into_response(),
    }
}

async fn block_action(
    s: &AppState,
    app: &Arc<SlackApp>,
    team: &str,
    user: &str,
    payload: &Value,
) -> Response {
    let action = &payload["actions"][0];
    let response_url = payload["response_url"].as_str();
    let action_id = action["action_id"].as_str().unwrap_or_default();
    if action_id != APPROVE_ACTION && action_id != DENY_ACTION {
        return StatusCode::OK.into_response();
    }
    let Some(id) = action["value"]
        .as_str()
        .and_then(|v| v.parse::<Uuid>().ok())
    else {
        return (
            StatusCode::BAD_REQUEST,
            "the button carries no request id\n",
        )
            .into_response();
    };
    let actor = match linked(s, app, team, user, Some(id), payload, response_url).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    if action_id == DENY_ACTION {
        // pedm wants a reason for a denial: ask for it in a modal (within Slack's 3 s).
        let modal = match s.cp.store().request(id).await {
            Ok(Some(r)) => match crate::slack::card(&s.cp, &r).await {
                Ok(c) => c.deny_modal(),
                Err(e) => return answer(&s.slack, app, response_url, &e.to_string()).await,
            },
            _ => return answer(&s.slack, app, response_url, "no such request").await,
        };
        let body = json!({ "trigger_id": payload["trigger_id"], "view": modal });
        if let Err(e) = s.slack.call(app, "views.open", &body).await {
            tracing::warn!(app = %app.config.name, error = %e, "cannot open the deny modal");
            return answer(
                &s.slack,
                app,
                response_url,
                &format!("cannot open the form: {e}"),
            )
            .await;
        }
        return StatusCode::OK.into_response();
    }
    match s
        .cp
        .decide_request(
            &actor,
            id,
            ApprovalDecision::Approve,
            Some("approved in Slack".into()),
        )
        .await
    {
        // The message is updated by the notice the decision raised.
        Ok(_) => StatusCode::OK.into_response(),
        Err(e) => answer(&s.slack, app, response_url, &format!("Not approved: {e}")).await,
    }
}

async fn deny_submitted(
    s: &AppState,
    app: &Arc<SlackApp>,
    team: &str,
    user: &str,
    payload: &Value,
) -> Response {
    let view = &payload["view"];
    let errors = |msg: &str| {
        Json(json!({ "response_action": "errors",
                     "errors": { REASON_INPUT: slack::fit(msg, 150) } }))
        .into_response()
    };
    let Some(id) = view["private_metadata"]
        .as_str()
        .and_then(|v| v.parse::<Uuid>().ok())
    else {
        return errors("this form names no request");
    };
    let actor = match linked(s, app, team, user, Some(id), payload, None).await {
        Ok(a) => a,
        Err(_) => return errors("your Slack account is not linked to a pedm user"),
    };
    let reason = view["state"]["values"][REASON_INPUT][REASON_INPUT]["value"]
        .as_str()
        .map(str::to_string);
    match s
        .cp
        .decide_request(&actor, id, ApprovalDecision::Deny, reason)
        .await
    {
        Ok(_) => StatusCode::OK.into_response(),
        Err(e) => errors(&format!("Not denied: {e}")),
    }
}

async fn request_submitted(
    s: &AppState,
    app: &Arc<SlackApp>,
    team: &str,
    user: &str,
    payload: &Value,
) -> Response {
    let values = &payload["view"]["state"]["values"];
    let field = |id: &str| {
        values[id][id]["value"]
            .as_str()
            .map(str::trim)
            .unwrap_or_default()
            .to_string()
    };
    let [target, role, duration, justification, ticket] = REQUEST_INPUTS.map(field);
    let error = |block: &str, msg: &str| {
        Json(json!({ "response_action": "errors",
                     "errors": { block: slack::fit(msg, 150) } }))
        .into_response()
    };
    let actor = match resolve(s, app, team, user).await {
        Ok(Ok(a)) => a,
        Ok(Err(why)) => {
            refused(s, app, team, user, None, &why, payload, None).await;
            return error("target", &why);
        }
        Err(e) => {
            return error(
                "target",
                &format!("pedm could not check you: {}", e.message),
            );
        }
    };
    let duration_secs = match pedm_core::duration::parse_duration(&duration) {
        Ok(d) => d,
        Err(e) => return error("duration", &format!("{duration:?}: {e}")),
    };
    let ticket = (!ticket.is_empty()).then_some(ticket);
    match ask(
        s,
        &actor,
        target,
        role,
        duration_secs,
        justification,
        ticket,
    )
    .await
    {
        Ok(outcome) => Json(json!({
            "response_action": "update",
            "view": slack::result_view("Access requested", &outcome),
        }))
        .into_response(),
        Err(e) => {
            let field = match &e {
                pedm_core::Error::Unprocessable { field, .. } => REQUEST_INPUTS
                    .into_iter()
                    .find(|f| field.contains(f))
                    .unwrap_or("justification"),
                _ => "target",
            };
            error(field, &format!("Not requested: {e}"))
        }
    }
}

/// Makes a request as `actor` through the same path as the API; says what became of it.
async fn ask(
    s: &AppState,
    actor: &pedm_core::model::Actor,
    target: String,
    role: String,
    duration_secs: i64,
    justification: String,
    ticket: Option<String>,
) -> Result<String, pedm_core::Error> {
    let new = NewRequest {
        target,
        role,
        duration_secs,
        justification,
        task: None,
        ticket,
        break_glass: false,
        starts_at: None,
    };
    let (r, g) =
        s.cp.create_request(actor, new, RequestContext::default())
            .await?;
    Ok(match g {
        Some(g) => format!("Request {}: granted until {}", r.id, g.expires_at),
        None => format!("Request {}: {}", r.id, r.state),
    })
}

/// The pedm user linked to this Slack user, or the refusal (recorded, answered privately).
async fn linked(
    s: &AppState,
    app: &Arc<SlackApp>,
    team: &str,
    user: &str,
    request: Option<Uuid>,
    payload: &Value,
    response_url: Option<&str>,
) -> Result<pedm_core::model::Actor, Response> {
    match resolve(s, app, team, user).await {
        Ok(Ok(a)) => Ok(a),
        Ok(Err(why)) => {
            Err(refused(s, app, team, user, request, &why, payload, response_url).await)
        }
        Err(e) => Err(e.into_response()),
    }
}

/// The pedm user a Slack user acts as: the one they linked, else (with `map_by_email`) the
/// one whose provider-verified address Slack confirms is theirs, linked now. `Err` inside
/// is why nobody.
async fn resolve(
    s: &AppState,
    app: &SlackApp,
    team: &str,
    user: &str,
) -> Result<Result<pedm_core::model::Actor, String>, ApiErr> {
    const UNLINKED: &str = "this Slack user is not linked to an enabled pedm user: run /pedm link";
    if let Some(a) = s.cp.linked_actor(&issuer(team), user).await? {
        return Ok(Ok(a));
    }
    if !app.config.map_by_email {
        return Ok(Err(UNLINKED.into()));
    }
    let who = match s.slack.user_info(app, user).await {
        Ok(u) => u,
        Err(e) => {
            return Ok(Err(format!(
                "{UNLINKED} (Slack could not say who you are: {e})"
            )));
        }
    };
    let email = match who.confirmed_email(team) {
        Ok(e) => e.to_string(),
        Err(why) => return Ok(Err(format!("{UNLINKED} ({why})"))),
    };
    Ok(s.cp
        .link_by_verified_email(&issuer(team), user, &email, "slack verified email")
        .await?
        .map_err(|why| format!("{UNLINKED} ({why})")))
}

/// Records `slack.refused` and tells the clicker why, privately.
#[allow(clippy::too_many_arguments)]
async fn refused(
    s: &AppState,
    app: &Arc<SlackApp>,
    team: &str,
    user: &str,
    request: Option<Uuid>,
    why: &str,
    payload: &Value,
    response_url: Option<&str>,
) -> Response {
    let asked = json!({
        "type": payload["type"],
        "action": payload["actions"][0]["action_id"],
        "view": payload["view"]["callback_id"],
    });
    if let Err(e) =
        s.cp.integration_refused(
            INTEGRATION,
            &format!("{}/{user}", issuer(team)),
            request.map(|r| format!("request:{r}")),
            why,
            asked,
        )
        .await
    {
        tracing::error!(error = %e, "could not record a refused Slack action");
    }
    answer(&s.slack, app, response_url, &format!("Refused: {why}")).await
}

async fn answer(
    slack: &Slack,
    app: &Arc<SlackApp>,
    response_url: Option<&str>,
    text: &str,
) -> Response {
    if let Some(url) = response_url {
        slack.respond(app, url, text).await;
    }
    StatusCode::OK.into_response()
}

fn ephemeral(text: &str) -> Response {
    Json(json!({ "response_type": "ephemeral", "text": slack::escape_mrkdwn(text) }))
        .into_response()
}

const USAGE: &str =
    "Usage: /pedm link | /pedm request [<target> <role> <duration> <justification>]";

/// `POST /integrations/slack/commands`: `/pedm link` and `/pedm request`.
pub(super) async fn commands(State(s): State<AppState>, v: Verified) -> Response {
    let team = v.field("team_id").unwrap_or_default().to_string();
    let user = v.field("user_id").unwrap_or_default().to_string();
    let text = v.field("text").unwrap_or_default().trim().to_string();
    let payload = json!({ "type": "slash_command", "text": slack::fit(&text, 200) });
    if team != v.app.config.team_id {
        let why = format!("a command from workspace {team:?}");
        return refused(&s, &v.app, &team, &user, None, &why, &payload, None).await;
    }
    let mut words = text.split_whitespace();
    match words.next() {
        Some("link") => {
            let expires = s.cp.now().as_second() + LINK_CODE_SECS;
            let code = slack::link_code(&v.app.signing_secret, &team, &user, expires);
            ephemeral(&format!(
                "To act in Slack as your pedm user, run this where you are signed in to pedm \
                 within 10 minutes (it is for you alone; do not share it):\n`pedm link slack {code}`"
            ))
        }
        Some("request") => {
            let actor = match resolve(&s, &v.app, &team, &user).await {
                Ok(Ok(a)) => a,
                Ok(Err(why)) => {
                    refused(&s, &v.app, &team, &user, None, &why, &payload, None).await;
                    return ephemeral(&format!("Refused: {why}"));
                }
                Err(e) => return ephemeral(&format!("pedm could not check you: {}", e.message)),
            };
            let given: Vec<&str> = words.by_ref().take(3).collect();
            let justification = words.collect::<Vec<_>>().join(" ");
            let [Some(target), Some(role), Some(duration)] =
                [0, 1, 2].map(|i| given.get(i).copied())
            else {
                return request_form(&s, &v, &given).await;
            };
            if justification.is_empty() {
                // pedm wants a reason: ask for it in a form, filled with what was typed.
                return request_form(&s, &v, &given).await;
            }
            let duration_secs = match pedm_core::duration::parse_duration(duration) {
                Ok(d) => d,
                Err(e) => return ephemeral(&format!("duration {duration:?}: {e}")),
            };
            let asked = ask(
                &s,
                &actor,
                target.into(),
                role.into(),
                duration_secs,
                justification,
                None,
            )
            .await;
            match asked {
                Ok(outcome) => ephemeral(&outcome),
                Err(e) => ephemeral(&format!("Not requested: {e}")),
            }
        }
        _ => ephemeral(USAGE),
    }
}

/// Opens the request form (within Slack's 3 s, on the command's `trigger_id`), filled with
/// the target, role and duration typed.
async fn request_form(s: &AppState, v: &Verified, given: &[&str]) -> Response {
    let at = |i: usize| given.get(i).copied().unwrap_or_default();
    let modal = slack::request_modal([at(0), at(1), at(2), "", ""]);
    let body = json!({ "trigger_id": v.field("trigger_id").unwrap_or_default(), "view": modal });
    match s.slack.call(&v.app, "views.open", &body).await {
        // An empty 200 acknowledges the command without a message.
        Ok(_) => StatusCode::OK.into_response(),
        Err(e) => {
            tracing::warn!(app = %v.app.config.name, error = %e, "cannot open the request form");
            ephemeral(&format!("cannot open the form ({e}). {USAGE}"))
        }
    }
}

/// Links the caller's pedm user to the Slack user a code from `/pedm link` names.
#[utoipa::path(post, path = "/me/links/slack", tag = "identity", request_body = SlackLink,
    responses((status = 200, body = SlackLinked), (status = 400, body = pedm_api::ErrorBody),
        (status = 404, body = pedm_api::ErrorBody), (status = 409, body = pedm_api::ErrorBody)))]
pub(super) async fn link(
    State(s): State<AppState>,
    caller: Caller,
    Body(req): Body<SlackLink>,
) -> Result<Json<SlackLinked>, ApiErr> {
    if s.slack.is_empty() {
        return Err(ApiErr::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no Slack app is configured",
        ));
    }
    let now = s.cp.now().as_second();
    let mut last = None;
    for app in &s.slack.apps {
        match slack::verify_link_code(&app.signing_secret, &req.code, now) {
            Ok((team, user)) => {
                s.cp.link_identity(&caller.actor, &issuer(&team), &user, "slack link code")
                    .await?;
                return Ok(Json(SlackLinked {
                    team,
                    slack_user: user,
                    user: caller.actor.user,
                }));
            }
            Err(e) => last = Some(e),
        }
    }
    let why = last.map(|e| e.to_string()).unwrap_or_default();
    if let Err(e) =
        s.cp.integration_refused(
            INTEGRATION,
            &caller.actor.user,
            None,
            &format!("link code refused: {why}"),
            json!({ "type": "link" }),
        )
        .await
    {
        tracing::error!(error = %e, "could not record a refused link");
    }
    Err(ApiErr::new(StatusCode::BAD_REQUEST, "invalid_code", why))
}

/// Every notification channel of this instance with its counts since start (webhooks, Slack
/// apps); for admins and auditors (`read_audit`).
#[utoipa::path(get, path = "/notify/status", tag = "audit",
    responses((status = 200, body = Vec<pedm_api::ChannelStatus>),
        (status = 403, body = pedm_api::ErrorBody)))]
pub(super) async fn notify_status(
    State(s): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<pedm_api::ChannelStatus>>, ApiErr> {
    if !s
        .cp
        .may(&caller.actor, pedm_core::decision::AdminAction::ReadAudit)
    {
        return Err(ApiErr::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "reading the notification status needs read_audit",
        ));
    }
    Ok(Json(channel_status(&s)))
}

/// Every notification channel of this instance with its counts since start.
fn channel_status(s: &AppState) -> Vec<pedm_api::ChannelStatus> {
    // What waits is what the channel's outbox reader has not got to yet.
    let channel = |kind: &str, w: pedm_notify::SinkStats| pedm_api::ChannelStatus {
        queued: s
            .outbox_backlog
            .of(&format!("{kind}:{}", w.name))
            .or_else(|| s.outbox_backlog.of(&w.name))
            .unwrap_or(w.queued as u64),
        name: w.name,
        kind: kind.into(),
        delivered: w.delivered,
        failed: w.failed,
        dropped: w.dropped,
        retries: w.retries,
    };
    let webhooks = s.notifier.iter().flat_map(|n| n.stats());
    webhooks
        .map(|w| channel("webhook", w))
        .chain(s.slack.stats().into_iter().map(|w| channel("slack", w)))
        .chain(s.mailer.iter().map(|m| channel("email", m.stats())))
        .collect()
}

/// The notification channels for the web console (its port,
/// [`pedm_console::NotificationChannels`]): what `GET /notify/status` answers.
pub struct ConsoleChannels(pub AppState);

impl pedm_console::NotificationChannels for ConsoleChannels {
    fn channels(&self) -> Vec<pedm_console::ChannelInfo> {
        channel_status(&self.0)
            .into_iter()
            .map(|c| pedm_console::ChannelInfo {
                name: c.name,
                kind: c.kind,
                queued: c.queued,
                delivered: c.delivered,
                failed: c.failed,
                dropped: c.dropped,
                retries: c.retries,
            })
            .collect()
    }
}
