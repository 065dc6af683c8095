//! Slack apps (`[[notify.slack]]`): every request waiting for approval is posted as a message
//! with Approve and Deny buttons (to the approvals channel and, with `dm_approvers`, to each
//! current approver Slack knows as a direct message), and those messages are updated as the
//! request moves (who approved, what is still needed, granted, denied, expired, ended).
//! High-severity notices go to their channel as plain messages.
//!
//! Delivery never touches the request path: each app is a channel of the outbox
//! ([`crate::outbox`]), which calls Slack's Web API in order, retrying transport errors, 5xx
//! and rate limits with backoff, and survives a crash.
//! Which message shows which request is kept in the database (`integration_state`), so a
//! restart or another instance updates the same message. The clicks come back through
//! [`crate::http::slack`].

use std::sync::Arc;

use pedm_core::model::{ApprovalDecision, Grant, GrantState, Request, RequestState, User};
use pedm_core::notice::Notice;
use pedm_core::service::ControlPlane;
use pedm_notify::Severity;
use pedm_notify::slack::{RequestCard, Slack, SlackApp, notice_blocks};
use serde_json::json;
use tokio::sync::watch;

/// The integration name in `integration_state` and in audit actions (`slack.refused`).
pub const INTEGRATION: &str = "slack";
/// How long a message reference is kept (a request is long decided by then).
const MESSAGE_TTL_SECS: i64 = 90 * 86_400;
/// One Slack app as an outbox channel: shows each notice it wants, in order.
pub struct SlackChannel {
    pub slack: Arc<Slack>,
    pub cp: Arc<ControlPlane>,
    /// Index into `slack.apps`.
    pub app: usize,
}

#[async_trait::async_trait]
impl crate::outbox::Channel for SlackChannel {
    fn name(&self) -> String {
        format!("slack:{}", self.slack.apps[self.app].config.name)
    }

    fn wants(&self, notice: &Notice) -> bool {
        match notice {
            Notice::RequestPending(_)
            | Notice::RequestDecided(_)
            | Notice::GrantStarted(_)
            | Notice::GrantScheduled(_)
            | Notice::GrantExtended(_)
            | Notice::GrantEnded(_)
            | Notice::RequestFollowUp { .. } => true,
            n => crate::notify::notification(n).severity == Severity::High,
        }
    }

    async fn deliver(
        &self,
        _item: &pedm_core::notice::OutboxItem,
        notice: &Notice,
        _delivery_id: uuid::Uuid,
        shutdown: &mut watch::Receiver<bool>,
    ) -> crate::outbox::Outcome {
        let app = &self.slack.apps[self.app];
        self.slack.queued(true);
        self.slack.taken();
        let shown = show(&self.slack, &self.cp, app, notice, shutdown).await;
        if shown.is_err() && *shutdown.borrow() {
            return crate::outbox::Outcome::Interrupted;
        }
        self.slack.shown(app, shown.is_ok());
        match shown {
            Ok(()) => crate::outbox::Outcome::Done,
            Err(e) => {
                metrics::counter!("pedm_slack_failed_total", "app" => app.config.name.clone())
                    .increment(1);
                tracing::error!(app = %app.config.name, error = %e, "could not show a notice in Slack");
                crate::outbox::Outcome::GaveUp
            }
        }
    }
}

async fn show(
    slack: &Slack,
    cp: &ControlPlane,
    app: &SlackApp,
    notice: &Notice,
    shutdown: &mut watch::Receiver<bool>,
) -> anyhow::Result<()> {
    if let Notice::RequestFollowUp { request, .. } = notice {
        let key = message_key(app, request);
        let Some(existing) = cp.integration_value(INTEGRATION, &key).await? else {
            return Ok(());
        };
        let Some((channel, ts)) = existing.split_once(' ') else {
            return Ok(());
        };
        let n = crate::notify::notification(notice);
        let body = json!({
            "channel": channel, "thread_ts": ts, "reply_broadcast": true,
            "text": pedm_notify::slack::escape_mrkdwn(&pedm_notify::slack::fit(&n.summary, 3000)),
            "blocks": notice_blocks(&n.summary),
        });
        slack
            .call_retrying(app, "chat.postMessage", &body, shutdown)
            .await
            .map_err(|e| anyhow::anyhow!("chat.postMessage: {e}"))?;
        if app.config.dm_approvers {
            let card = card(cp, request).await?;
            dm_approvers(slack, cp, app, request, &card, Some(&n.summary), shutdown).await?;
        }
        return Ok(());
    }
    let request = match notice {
        Notice::RequestPending(r) | Notice::RequestDecided(r) => Some(r.clone()),
        Notice::GrantStarted(g)
        | Notice::GrantScheduled(g)
        | Notice::GrantExtended(g)
        | Notice::GrantEnded(g) => cp.store().request(g.request_id).await?,
        _ => None,
    };
    let Some(request) = request else {
        let n = crate::notify::notification(notice);
        let body = json!({
            "channel": app.config.channel_for(&n.kind),
            "text": pedm_notify::slack::escape_mrkdwn(&pedm_notify::slack::fit(&n.summary, 3000)),
            "blocks": notice_blocks(&n.summary),
            "unfurl_links": false,
        });
        slack
            .call_retrying(app, "chat.postMessage", &body, shutdown)
            .await
            .map_err(|e| anyhow::anyhow!("chat.postMessage: {e}"))?;
        return Ok(());
    };
    let key = message_key(app, &request);
    let card = card(cp, &request).await?;
    let existing = cp.integration_value(INTEGRATION, &key).await?;
    match existing.as_deref().and_then(|v| v.split_once(' ')) {
        Some((channel, ts)) => {
            let body = json!({ "channel": channel, "ts": ts, "text": card.text(),
                               "blocks": card.blocks() });
            slack
                .call_retrying(app, "chat.update", &body, shutdown)
                .await
                .map_err(|e| anyhow::anyhow!("chat.update: {e}"))?;
            update_dms(slack, cp, app, &request, &card, shutdown).await?;
        }
        // Only a request that waits for someone gets a message; one decided at once by
        // policy (or expired before it was ever shown) does not.
        None if request.state == RequestState::Pending => {
            let body = json!({ "channel": app.config.channel, "text": card.text(),
                               "blocks": card.blocks(), "unfurl_links": false });
            let posted = slack
                .call_retrying(app, "chat.postMessage", &body, shutdown)
                .await
                .map_err(|e| anyhow::anyhow!("chat.postMessage: {e}"))?;
            let (Some(channel), Some(ts)) = (posted["channel"].as_str(), posted["ts"].as_str())
            else {
                anyhow::bail!("chat.postMessage answered without channel and ts");
            };
            cp.integration_put(
                INTEGRATION,
                &key,
                &format!("{channel} {ts}"),
                Some(MESSAGE_TTL_SECS),
            )
            .await?;
            if app.config.dm_approvers {
                dm_approvers(slack, cp, app, &request, &card, None, shutdown).await?;
            }
        }
        None => {}
    }
    Ok(())
}

fn message_key(app: &SlackApp, r: &Request) -> String {
    format!("message:{}:{}", app.config.name, r.id)
}

/// The issuer a Slack workspace's users are linked under.
pub fn issuer(team: &str) -> String {
    format!("slack:{team}")
}

fn dm_key(app: &SlackApp, r: &Request) -> String {
    format!("dms:{}:{}", app.config.name, r.id)
}

/// A direct message showing a request: its conversation, its `ts`, and the Slack user.
struct Dm {
    channel: String,
    ts: String,
    user: String,
}

async fn dms(cp: &ControlPlane, app: &SlackApp, r: &Request) -> anyhow::Result<Vec<Dm>> {
    let kept = cp.integration_value(INTEGRATION, &dm_key(app, r)).await?;
    Ok(kept
        .unwrap_or_default()
        .split(',')
        .filter_map(|e| {
            let mut w = e.split(' ');
            Some(Dm {
                channel: w.next()?.to_string(),
                ts: w.next()?.to_string(),
                user: w.next()?.to_string(),
            })
        })
        .collect())
}

/// The Slack user a pedm user is in this app's workspace: the one they linked, else (with
/// `map_by_email`) the one Slack finds by their provider-verified address.
async fn slack_user_of(
    slack: &Slack,
    cp: &ControlPlane,
    app: &SlackApp,
    user: &User,
) -> anyhow::Result<Option<String>> {
    let team = &app.config.team_id;
    if let Some(linked) = cp.linked_subjects(&user.name, &issuer(team)).await?.pop() {
        return Ok(Some(linked));
    }
    if !app.config.map_by_email || user.email.is_none() {
        return Ok(None);
    }
    let Ok(verified) = cp
        .user_by_verified_email(user.email.as_deref().unwrap_or_default())
        .await?
    else {
        return Ok(None);
    };
    if verified.name != user.name {
        return Ok(None);
    }
    match slack
        .user_by_email(app, user.email.as_deref().unwrap_or_default())
        .await
    {
        Ok(Some(u)) if u.confirmed_email(team).is_ok() => Ok(Some(u.id)),
        Ok(_) => Ok(None),
        Err(e) => {
            tracing::warn!(app = %app.config.name, user = %user.name, error = %e,
                           "cannot look up an approver in Slack");
            Ok(None)
        }
    }
}

/// Sends the request to each of its current approvers Slack knows, as a direct message (once
/// per approver; approvers added by an escalation get theirs then); with `reminder`, those
/// who have one already get the reminder in its thread.
async fn dm_approvers(
    slack: &Slack,
    cp: &ControlPlane,
    app: &SlackApp,
    request: &Request,
    card: &RequestCard,
    reminder: Option<&str>,
    shutdown: &mut watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut sent = dms(cp, app, request).await?;
    for approver in cp.current_approvers(request).await? {
        let Some(user) = slack_user_of(slack, cp, app, &approver).await? else {
            continue;
        };
        if let Some(dm) = sent.iter().find(|d| d.user == user) {
            if let Some(text) = reminder {
                let body = json!({
                    "channel": dm.channel, "thread_ts": dm.ts,
                    "text": pedm_notify::slack::escape_mrkdwn(&pedm_notify::slack::fit(text, 3000)),
                    "blocks": notice_blocks(text),
                });
                slack
                    .call_retrying(app, "chat.postMessage", &body, shutdown)
                    .await
                    .map_err(|e| anyhow::anyhow!("chat.postMessage (reminder): {e}"))?;
            }
            continue;
        }
        // A user id as the channel posts in the app's direct conversation with that user.
        let body = json!({ "channel": user, "text": card.text(), "blocks": card.blocks(),
                           "unfurl_links": false });
        let posted = match slack
            .call_retrying(app, "chat.postMessage", &body, shutdown)
            .await
        {
            Ok(p) => p,
            Err(pedm_notify::slack::CallError::Refused(e)) => {
                tracing::warn!(app = %app.config.name, approver = %approver.name, error = %e,
                               "Slack refused a direct message");
                continue;
            }
            Err(e) => anyhow::bail!("chat.postMessage (direct): {e}"),
        };
        let (Some(channel), Some(ts)) = (posted["channel"].as_str(), posted["ts"].as_str()) else {
            anyhow::bail!("chat.postMessage answered without channel and ts");
        };
        sent.push(Dm {
            channel: channel.into(),
            ts: ts.into(),
            user,
        });
        let kept: Vec<String> = sent
            .iter()
            .map(|d| format!("{} {} {}", d.channel, d.ts, d.user))
            .collect();
        cp.integration_put(
            INTEGRATION,
            &dm_key(app, request),
            &kept.join(","),
            Some(MESSAGE_TTL_SECS),
        )
        .await?;
    }
    Ok(())
}

/// Brings every direct message showing the request up to date.
async fn update_dms(
    slack: &Slack,
    cp: &ControlPlane,
    app: &SlackApp,
    request: &Request,
    card: &RequestCard,
    shutdown: &mut watch::Receiver<bool>,
) -> anyhow::Result<()> {
    for dm in dms(cp, app, request).await? {
        let body = json!({ "channel": dm.channel, "ts": dm.ts, "text": card.text(),
                           "blocks": card.blocks() });
        match slack
            .call_retrying(app, "chat.update", &body, shutdown)
            .await
        {
            Ok(_) => {}
            // The person deleted the conversation: nothing to update.
            Err(pedm_notify::slack::CallError::Refused(e)) => {
                tracing::warn!(app = %app.config.name, error = %e, "cannot update a direct message")
            }
            Err(e) => anyhow::bail!("chat.update (direct): {e}"),
        }
    }
    Ok(())
}

/// The card for a request as it stands now: its approvals, what it still waits for, its
/// grant.
pub async fn card(cp: &ControlPlane, r: &Request) -> anyhow::Result<RequestCard> {
    let approvals = cp.store().approvals(r.id).await?;
    let grant: Option<Grant> = match r.grant_id {
        Some(id) => cp.store().grant(id).await?.map(|g| g.as_of(cp.now())),
        None => None,
    };
    let mut status: Vec<String> = approvals
        .iter()
        .map(|a| {
            let verb = match a.decision {
                ApprovalDecision::Approve => "Approved",
                ApprovalDecision::Deny => "Denied",
            };
            let mut line = format!("{verb} by {}", a.approver);
            if let Some(c) = &a.comment {
                line.push_str(&format!(": {c}"));
            }
            line
        })
        .collect();
    match r.state {
        RequestState::Pending => {
            let tiers = r.tiers().len();
            for (i, t) in r.outstanding(&approvals) {
                let who = t.group.as_deref().unwrap_or("any approver");
                let step = if tiers > 1 {
                    format!(" (step {} of {tiers})", i + 1)
                } else {
                    String::new()
                };
                status.push(format!("Waiting for {} of {who}{step}", t.required));
            }
            status.push(format!("Expires unanswered at {}", r.pending_until));
        }
        RequestState::Approved => {}
        RequestState::Denied
            if approvals
                .iter()
                .any(|a| a.decision == ApprovalDecision::Deny) => {}
        other => status.push(format!(
            "{}{}{}",
            capital(other.as_str()),
            r.decided_by
                .as_deref()
                .map(|b| format!(" by {b}"))
                .unwrap_or_default(),
            r.decision_reason
                .as_deref()
                .map(|w| format!(": {w}"))
                .unwrap_or_default()
        )),
    }
    if let Some(g) = grant {
        status.push(match g.state {
            GrantState::Active => format!("Granted to {} until {}", g.user, g.expires_at),
            GrantState::Scheduled => format!(
                "Granted to {} from {} until {}",
                g.user, g.starts_at, g.expires_at
            ),
            ended => format!(
                "Grant {} at {}",
                ended.as_str(),
                g.ended_at.map(|t| t.to_string()).unwrap_or_default()
            ),
        });
    }
    Ok(RequestCard {
        id: r.id.to_string(),
        requester: r.requester.clone(),
        target: r.target.clone(),
        role: r.role.clone(),
        duration: pedm_core::duration::format_duration(r.duration_secs),
        justification: r.justification.clone(),
        ticket: r.ticket.clone(),
        policy: r.policy.clone(),
        status,
        pending: r.state == RequestState::Pending,
        extends: r.context.extends.map(|g| g.to_string()),
        risk: r.context.risk.as_ref().map(|x| x.summary()),
    })
}

fn capital(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}
