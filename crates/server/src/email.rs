//! Mail (`[notify.email]`): approvers get a mail for each request that waits for them (again
//! when reminded or escalated), with a link to decide it in the console; requesters get a
//! mail when their request is denied or expires and when their grant starts, is extended or
//! ends.
//!
//! Each approver's link is their own (see `pedm_core::service::mail_link`): it opens the
//! console page for that request only after they sign in, and acts once, by a POST.
//!
//! Delivery never touches the request path: mail is a channel of the outbox
//! ([`crate::outbox`]), which sends in order, retrying what SMTP calls transient, and survives
//! a crash (a mail may then go out twice, never not at all).

use std::sync::Arc;

use pedm_core::model::{Grant, Request, RequestState, User};
use pedm_core::notice::Notice;
use pedm_core::service::ControlPlane;
use pedm_notify::email::{Mail, Mailer, compose};
use tokio::sync::watch;

/// Mail as an outbox channel: the mails of each notice, in order.
pub struct MailChannel {
    pub mailer: Arc<Mailer>,
    pub cp: Arc<ControlPlane>,
}

#[async_trait::async_trait]
impl crate::outbox::Channel for MailChannel {
    fn name(&self) -> String {
        "email".into()
    }

    fn wants(&self, notice: &Notice) -> bool {
        matches!(
            notice,
            Notice::RequestPending(_)
                | Notice::RequestDecided(_)
                | Notice::RequestFollowUp { .. }
                | Notice::GrantStarted(_)
                | Notice::GrantScheduled(_)
                | Notice::GrantExtended(_)
                | Notice::GrantExpiring(_)
                | Notice::GrantEnded(_)
                | Notice::AccessReview {
                    reviewer: Some(_),
                    ..
                }
        ) || matches!(notice, Notice::AccessReview { step, reviewer: None, .. }
            if step == "review.closed")
    }

    async fn deliver(
        &self,
        _item: &pedm_core::notice::OutboxItem,
        notice: &Notice,
        _delivery_id: uuid::Uuid,
        shutdown: &mut watch::Receiver<bool>,
    ) -> crate::outbox::Outcome {
        self.mailer.queued(true);
        self.mailer.taken();
        let mails = match mails_for(&self.mailer, &self.cp, notice).await {
            Ok(m) => m,
            Err(e) => {
                metrics::counter!("pedm_email_failed_total").increment(1);
                tracing::error!(error = %e, "could not work out the mails of a notice");
                return crate::outbox::Outcome::GaveUp;
            }
        };
        let mut outcome = crate::outbox::Outcome::Done;
        for m in mails {
            if let Err(e) = self.mailer.send(&m, shutdown).await {
                if *shutdown.borrow() {
                    return crate::outbox::Outcome::Interrupted;
                }
                tracing::error!(error = %e, "mail not sent");
                outcome = crate::outbox::Outcome::GaveUp;
            }
        }
        outcome
    }
}

async fn mails_for(
    mailer: &Mailer,
    cp: &ControlPlane,
    notice: &Notice,
) -> anyhow::Result<Vec<Mail>> {
    Ok(match notice {
        Notice::RequestPending(r) => approver_mails(mailer, cp, r, None).await?,
        Notice::RequestFollowUp {
            request,
            step,
            waiting_for,
            escalated_to,
        } => {
            let why = match escalated_to {
                Some(g) => format!("Escalated to {g}: still waiting for {waiting_for}"),
                None if step == "request.reminded" => {
                    format!("Reminder: still waiting for {waiting_for}")
                }
                None => format!("Still waiting for {waiting_for}"),
            };
            approver_mails(mailer, cp, request, Some(&why)).await?
        }
        Notice::RequestDecided(r) => decision_mail(mailer, cp, r).await?.into_iter().collect(),
        Notice::GrantScheduled(g) => grant_mail(mailer, cp, g, "scheduled")
            .await?
            .into_iter()
            .collect(),
        Notice::GrantStarted(g) => grant_mail(mailer, cp, g, "started")
            .await?
            .into_iter()
            .collect(),
        Notice::GrantExtended(g) => grant_mail(mailer, cp, g, "extended")
            .await?
            .into_iter()
            .collect(),
        Notice::GrantExpiring(g) => grant_mail(mailer, cp, g, "ends soon")
            .await?
            .into_iter()
            .collect(),
        Notice::GrantEnded(g) => grant_mail(mailer, cp, g, "ended")
            .await?
            .into_iter()
            .collect(),
        Notice::AccessReview {
            step,
            campaign,
            name,
            reviewer: Some(r),
            pending,
            due_at,
        } => review_mails(mailer, cp, step, *campaign, name, r, *pending, *due_at).await?,
        Notice::AccessReview {
            step,
            campaign,
            reviewer: None,
            ..
        } if step == "review.closed" => closed_review_mail(mailer, cp, *campaign)
            .await?
            .into_iter()
            .collect(),
        _ => vec![],
    })
}

/// Reviewers told of their items (each member of a reviewing group with an address).
#[allow(clippy::too_many_arguments)]
async fn review_mails(
    mailer: &Mailer,
    cp: &ControlPlane,
    step: &str,
    campaign: uuid::Uuid,
    name: &str,
    reviewer: &pedm_core::delegation::Delegatee,
    pending: u64,
    due_at: jiff::Timestamp,
) -> anyhow::Result<Vec<Mail>> {
    use pedm_core::delegation::DelegateKind;
    let people = match reviewer.kind {
        DelegateKind::User => vec![reviewer.name.clone()],
        DelegateKind::Group => cp
            .store()
            .group(&reviewer.name)
            .await?
            .map(|g| g.members)
            .unwrap_or_default(),
    };
    let (subject, lead) = match step {
        "review.reminder" => (
            format!("Reminder: pedm access review {name}: {pending} items still to decide"),
            format!("{pending} items of access review {name} still wait for {reviewer}."),
        ),
        "review.escalated" => (
            format!("pedm access review {name}: {pending} undecided items escalated to you"),
            format!(
                "Nobody decided {pending} items of access review {name}; they are now for \
                 {reviewer} to decide."
            ),
        ),
        _ => (
            format!("pedm access review {name}: {pending} items to keep or revoke"),
            format!("Access review {name} has {pending} items for {reviewer} to keep or revoke."),
        ),
    };
    let url = format!("{}/ui/reviews/{campaign}", mailer.console_url);
    let fields = vec![
        ("Campaign", name.to_string()),
        ("Items", pending.to_string()),
        ("Due", due_at.to_string()),
    ];
    let mut out = vec![];
    for p in people {
        let Some(u) = mail_of(cp, &p).await? else {
            continue;
        };
        out.push(compose(
            u.email.as_deref().unwrap_or_default(),
            &subject,
            &lead,
            &fields,
            Some(("Review them", &url)),
            "Items nobody decides by the due date take the campaign's default. You get this \
             mail because you review them.",
        ));
    }
    Ok(out)
}

/// Whoever started a campaign, told of its outcome when it closes.
async fn closed_review_mail(
    mailer: &Mailer,
    cp: &ControlPlane,
    campaign: uuid::Uuid,
) -> anyhow::Result<Option<Mail>> {
    let Some(k) = cp.store().review_campaign(campaign).await? else {
        return Ok(None);
    };
    let Some(u) = mail_of(cp, &k.created_by).await? else {
        return Ok(None);
    };
    let c = &k.counts;
    let subject = format!(
        "pedm access review {} closed: {} kept, {} revoked, {} flagged",
        k.name, c.kept, c.revoked, c.flagged
    );
    let lead = format!(
        "Access review {} is closed. Items nobody decided took its default ({}).",
        k.name,
        k.default_action.as_str()
    );
    let mut fields = vec![
        ("Campaign", k.name.clone()),
        ("Kept", c.kept.to_string()),
        ("Revoked", c.revoked.to_string()),
        ("Flagged", c.flagged.to_string()),
    ];
    if let Some(p) = k.proposal {
        fields.push((
            "Policy proposal",
            format!("{p} (the forbids for revoked eligibility; it needs approval)"),
        ));
    }
    let url = format!("{}/ui/reviews/{campaign}", mailer.console_url);
    Ok(Some(compose(
        u.email.as_deref().unwrap_or_default(),
        &subject,
        &lead,
        &fields,
        Some(("See the results", &url)),
        "You get this mail because you started this access review.",
    )))
}

fn request_fields(r: &Request) -> Vec<(&'static str, String)> {
    let mut f = vec![
        ("Requester", r.requester.clone()),
        ("Target", r.target.clone()),
        ("Role", r.role.clone()),
        (
            "Duration",
            pedm_core::duration::format_duration(r.duration_secs),
        ),
        ("Justification", r.justification.clone()),
    ];
    if let Some(t) = &r.ticket {
        f.push(("Ticket", t.clone()));
    }
    if let Some(p) = &r.policy {
        f.push(("Policy", p.clone()));
    }
    if let Some(x) = &r.context.risk {
        f.push(("Risk", x.summary()));
    }
    f.push(("Request", r.id.to_string()));
    f
}

async fn approver_mails(
    mailer: &Mailer,
    cp: &ControlPlane,
    r: &Request,
    why: Option<&str>,
) -> anyhow::Result<Vec<Mail>> {
    let ttl = mailer.link_ttl.as_secs() as i64;
    let card = crate::slack::card(cp, r).await?;
    let mut out = vec![];
    for u in cp.approvers_to_mail(r).await? {
        let Some(to) = u.email.clone() else { continue };
        let token = cp.mail_link(r, &u.name, ttl).await?;
        let url = format!("{}/ui/mail/{token}", mailer.console_url);
        let mut fields = request_fields(r);
        for line in &card.status {
            fields.push(("Status", line.clone()));
        }
        let lead = match why {
            Some(w) => format!("{w}. {} asks for {} on {}.", r.requester, r.role, r.target),
            None => format!(
                "{} asks for {} on {} and waits for your decision.",
                r.requester, r.role, r.target
            ),
        };
        out.push(compose(
            &to,
            &format!(
                "{}pedm: {} asks for {} on {}",
                if why.is_some() { "Reminder: " } else { "" },
                r.requester,
                r.role,
                r.target
            ),
            &lead,
            &fields,
            Some(("Approve or deny", &url)),
            &format!(
                "The link works for {} only, once, until {} (sign in first). You get this \
                 mail because you may decide this request.",
                u.name,
                cp.mail_link_until(r, ttl)
            ),
        ));
    }
    Ok(out)
}

async fn mail_of(cp: &ControlPlane, user: &str) -> anyhow::Result<Option<User>> {
    Ok(cp
        .store()
        .user(user)
        .await?
        .filter(|u| !u.disabled && u.email.is_some()))
}

async fn decision_mail(
    mailer: &Mailer,
    cp: &ControlPlane,
    r: &Request,
) -> anyhow::Result<Option<Mail>> {
    // An approved request is told by its grant's mail; a cancel was the requester's own.
    let outcome = match r.state {
        RequestState::Denied => {
            format!("denied by {}", r.decided_by.as_deref().unwrap_or("policy"))
        }
        RequestState::Expired => "expired: nobody decided it in time".to_string(),
        _ => return Ok(None),
    };
    let Some(u) = mail_of(cp, &r.requester).await? else {
        return Ok(None);
    };
    let mut fields = request_fields(r);
    if let Some(why) = &r.decision_reason {
        fields.push(("Reason", why.clone()));
    }
    let url = format!("{}/ui/requests/{}", mailer.console_url, r.id);
    Ok(Some(compose(
        u.email.as_deref().unwrap_or_default(),
        &format!(
            "pedm: your request for {} on {} was {}",
            r.role, r.target, r.state
        ),
        &format!("Your request for {} on {} was {outcome}.", r.role, r.target),
        &fields,
        Some(("Open the request", &url)),
        "You get this mail because you asked for this access.",
    )))
}

async fn grant_mail(
    mailer: &Mailer,
    cp: &ControlPlane,
    g: &Grant,
    what: &str,
) -> anyhow::Result<Option<Mail>> {
    let Some(u) = mail_of(cp, &g.user).await? else {
        return Ok(None);
    };
    let mut fields = vec![
        ("Target", g.target.clone()),
        ("Role", g.role.clone()),
        ("Grant", g.id.to_string()),
        ("Starts", g.starts_at.to_string()),
        ("Ends", g.ended_at.unwrap_or(g.expires_at).to_string()),
    ];
    if let Some(by) = &g.ended_by
        && what == "ended"
    {
        fields.push(("Ended by", by.clone()));
    }
    if let Some(why) = &g.end_reason
        && what == "ended"
    {
        fields.push(("Reason", why.clone()));
    }
    let lead = match what {
        "started" => format!(
            "Your access to {} on {} has started; it ends by itself at {}.",
            g.role, g.target, g.expires_at
        ),
        "scheduled" => format!(
            "Your access to {} on {} was approved: it starts by itself at {} and ends at {}.",
            g.role, g.target, g.starts_at, g.expires_at
        ),
        "extended" => format!(
            "Your access to {} on {} was extended until {}.",
            g.role, g.target, g.expires_at
        ),
        "ends soon" => format!(
            "Your access to {} on {} ends at {}. To keep it longer, ask for an extension: \
             pedm grant extend {} --by 30m -r \"why\" (or on the My access page).",
            g.role, g.target, g.expires_at, g.id
        ),
        _ => format!("Your access to {} on {} has ended.", g.role, g.target),
    };
    let url = format!("{}/ui/access", mailer.console_url);
    Ok(Some(compose(
        u.email.as_deref().unwrap_or_default(),
        &format!("pedm: your access to {} on {} {what}", g.role, g.target),
        &lead,
        &fields,
        Some(("My access", &url)),
        "You get this mail because you hold this grant.",
    )))
}
