//! Turns the control plane's notices into webhook notifications.

use pedm_core::notice::{Notice, Observer};
use pedm_notify::{Notification, Notifier, Severity, kinds};
use serde_json::json;

/// One webhook sink as an outbox channel.
pub struct WebhookChannel {
    pub notifier: Notifier,
    pub sink: String,
}

/// Makes high-severity notices loud whether or not a webhook is configured: a WARN log line
/// and a Prometheus counter (`pedm_break_glass_total`, `pedm_high_severity_notices_total`
/// by kind) at `/metrics`. Always installed.
pub struct LoudObserver;

impl Observer for LoudObserver {
    fn notice(&self, notice: &Notice) {
        let n = match notice {
            Notice::BreakGlass { .. }
            | Notice::RevokeFailing { .. }
            | Notice::ExecAlert { .. }
            | Notice::RiskyRequest(_)
            | Notice::PropertyBroken { .. }
            | Notice::LongSession { .. }
            | Notice::DriftRemovalRefused { .. }
            | Notice::GrantPrivilegeMissing { .. } => notification(notice),
            _ => return,
        };
        if matches!(notice, Notice::BreakGlass { .. }) {
            metrics::counter!("pedm_break_glass_total").increment(1);
        }
        metrics::counter!("pedm_high_severity_notices_total", "kind" => n.kind.clone())
            .increment(1);
        tracing::warn!(
            kind = %n.kind,
            severity = "high",
            "{}",
            pedm_core::text::terminal_safe(&n.summary)
        );
    }
}

#[async_trait::async_trait]
impl crate::outbox::Channel for WebhookChannel {
    fn name(&self) -> String {
        format!("webhook:{}", self.sink)
    }

    fn wants(&self, notice: &Notice) -> bool {
        // Delegation and lock changes are in the audit log (by the admins who made them);
        // these notices only wake the agents, nobody is paged for them.
        notice.durable()
    }

    async fn deliver(
        &self,
        item: &pedm_core::notice::OutboxItem,
        notice: &Notice,
        delivery_id: uuid::Uuid,
        _shutdown: &mut tokio::sync::watch::Receiver<bool>,
    ) -> crate::outbox::Outcome {
        let mut n = notification(notice);
        // The same on every delivery of this entry, so receivers can deduplicate.
        n.id = delivery_id;
        n.at = item.at;
        match self.notifier.deliver_to(&self.sink, &n).await {
            None | Some(Ok(())) => crate::outbox::Outcome::Done,
            Some(Err(pedm_notify::FailReason::Shutdown)) => crate::outbox::Outcome::Interrupted,
            Some(Err(_)) => crate::outbox::Outcome::GaveUp,
        }
    }
}

pub(crate) fn notification(n: &Notice) -> Notification {
    match n {
        Notice::RequestPending(r) => Notification::new(
            kinds::REQUEST_PENDING,
            Severity::Info,
            format!(
                "{} asks for {} on {} for {}: {}",
                r.requester,
                r.role,
                r.target,
                pedm_core::duration::format_duration(r.duration_secs),
                r.justification
            ),
            json!({ "request": r }),
        ),
        Notice::RequestDecided(r) => Notification::new(
            kinds::REQUEST_DECIDED,
            Severity::Info,
            format!(
                "request by {} for {} on {} is {}{}",
                r.requester,
                r.role,
                r.target,
                r.state,
                r.decided_by
                    .as_deref()
                    .map(|b| format!(" (by {b})"))
                    .unwrap_or_default()
            ),
            json!({ "request": r }),
        ),
        Notice::RequestFollowUp {
            request: r,
            step,
            waiting_for,
            escalated_to,
        } => Notification::new(
            step.clone(),
            Severity::Info,
            match escalated_to {
                Some(g) => format!(
                    "ESCALATED to {g}: {} still waits for {waiting_for} to approve {} on {} \
                     (asked {}): {}",
                    r.requester, r.role, r.target, r.created_at, r.justification
                ),
                None => format!(
                    "REMINDER: {} still waits for {waiting_for} to approve {} on {} (asked {}): {}",
                    r.requester, r.role, r.target, r.created_at, r.justification
                ),
            },
            json!({ "request": r, "waiting_for": waiting_for, "escalated_to": escalated_to }),
        ),
        Notice::GrantStarted(g) => Notification::new(
            kinds::GRANT_STARTED,
            Severity::Info,
            format!(
                "{} now holds {} on {} until {}",
                g.user, g.role, g.target, g.expires_at
            ),
            json!({ "grant": g }),
        ),
        Notice::GrantScheduled(g) => Notification::new(
            kinds::GRANT_SCHEDULED,
            Severity::Info,
            format!(
                "{} will hold {} on {} from {} until {}",
                g.user, g.role, g.target, g.starts_at, g.expires_at
            ),
            json!({ "grant": g }),
        ),
        Notice::GrantExtended(g) => Notification::new(
            kinds::GRANT_EXTENDED,
            Severity::Info,
            format!(
                "{}'s {} on {} now lasts until {}",
                g.user, g.role, g.target, g.expires_at
            ),
            json!({ "grant": g }),
        ),
        Notice::GrantExpiring(g) => Notification::new(
            kinds::GRANT_EXPIRING,
            Severity::Info,
            format!(
                "{}'s {} on {} ends at {} (extend it with pedm grant extend {})",
                g.user, g.role, g.target, g.expires_at, g.id
            ),
            json!({ "grant": g }),
        ),
        Notice::GrantEnded(g) => Notification::new(
            kinds::GRANT_ENDED,
            Severity::Info,
            format!(
                "{}'s {} on {} ended ({})",
                g.user, g.role, g.target, g.state
            ),
            json!({ "grant": g }),
        ),
        Notice::BreakGlass { request, grant } => Notification::new(
            kinds::BREAK_GLASS,
            Severity::High,
            format!(
                "BREAK-GLASS: {} took {} on {} until {} without approval: {}",
                request.requester,
                request.role,
                request.target,
                grant.expires_at,
                request.justification
            ),
            json!({ "request": request, "grant": grant }),
        ),
        Notice::RevokeFailing { grant, error } => Notification::new(
            kinds::REVOKE_FAILING,
            Severity::High,
            format!(
                "REVOKE FAILING: {}'s {} on {} is still in place: {}",
                grant.user, grant.role, grant.target, error
            ),
            json!({ "grant": grant, "error": error }),
        ),
        Notice::DriftRemovalRefused {
            target,
            account,
            privilege,
            error,
        } => Notification::new(
            kinds::DRIFT_REMOVAL_REFUSED,
            Severity::High,
            format!("DRIFT STAYS: {target} refused to take {privilege} from {account}: {error}"),
            json!({ "target": target, "account": account, "privilege": privilege,
                    "error": error }),
        ),
        Notice::GrantPrivilegeMissing { grant, error } => Notification::new(
            kinds::GRANT_PRIVILEGE_MISSING,
            Severity::High,
            format!(
                "PRIVILEGE MISSING: {}'s {} on {} was taken away in the target and could not \
                 be put back: {}",
                grant.user, grant.role, grant.target, error
            ),
            json!({ "grant": grant, "error": error }),
        ),
        Notice::AgentUndelivered {
            host,
            item,
            kind,
            error,
        } => Notification::new(
            kinds::AGENT_UNDELIVERED,
            Severity::High,
            format!(
                "UNRECORDED ON SERVER: host {host} holds {kind} {item} that the server refused: {error}"
            ),
            json!({ "host": host, "item": item, "kind": kind, "error": error }),
        ),
        Notice::DelegationsChanged => Notification::new(
            "delegations.changed",
            Severity::Info,
            "tasks or delegations changed".to_string(),
            json!({}),
        ),
        Notice::RiskyRequest(r) => {
            let risk = r.context.risk.clone().unwrap_or_default();
            Notification::new(
                kinds::REQUEST_RISKY,
                Severity::High,
                format!(
                    "unusual request: {} asks for {} on {} for {} (risk {})",
                    r.requester,
                    r.role,
                    r.target,
                    pedm_core::duration::format_duration(r.duration_secs),
                    risk.summary()
                ),
                json!({
                    "request": r.id, "requester": r.requester, "target": r.target,
                    "role": r.role, "duration_secs": r.duration_secs, "state": r.state,
                    "risk": risk,
                }),
            )
        }
        Notice::ExecAlert {
            alert,
            host,
            user,
            argv,
            allowed,
            session,
        } => Notification::new(
            kinds::EXEC_ALERT,
            Severity::High,
            format!(
                "alert {alert}: {user} {} {} on {host}",
                if *allowed { "ran" } else { "tried to run" },
                argv.join(" ")
            ),
            json!({
                "alert": alert, "host": host, "user": user, "argv": argv,
                "allowed": allowed, "session": session,
            }),
        ),
        Notice::TaskRunFinished {
            run,
            host,
            user,
            task,
            exit_code,
            refused,
        } => Notification::new(
            "task.run_finished",
            Severity::Info,
            match refused {
                Some(why) => format!("task {task} for {user} on {host} did not run: {why}"),
                None => format!(
                    "task {task} for {user} on {host} ended ({})",
                    exit_code.map_or("killed by a signal".to_string(), |c| format!("exit {c}"))
                ),
            },
            json!({
                "run": run, "host": host, "user": user, "task": task,
                "exit_code": exit_code, "refused": refused,
            }),
        ),
        Notice::LocksChanged => Notification::new(
            "locks.changed",
            Severity::Info,
            "a lock was added or lifted".to_string(),
            json!({}),
        ),
        Notice::PolicyProposal {
            step,
            actor,
            proposal: p,
        } => Notification::new(
            step.clone(),
            Severity::Info,
            format!(
                "{step}: policy proposal {} by {} on top of version {} ({} of {} approvals, {}), \
                 by {actor}",
                p.id,
                p.created_by,
                p.base_version,
                p.approvals.len(),
                p.required,
                p.state
            ),
            json!({
                "proposal": p.id, "base_version": p.base_version, "proposed_by": p.created_by,
                "state": p.state, "approvals": p.approvals.len(), "required": p.required,
                "applied_version": p.applied_version, "by": actor,
            }),
        ),
        Notice::ExternalExpiring {
            user,
            sponsor,
            expires_at,
        } => Notification::new(
            kinds::EXTERNAL_EXPIRING,
            Severity::Info,
            format!(
                "@{sponsor}: the external account {user} you sponsor expires at {expires_at}; \
                 extend it with `pedm user extend {user} --expires <duration>` or let it go"
            ),
            json!({ "user": user, "sponsor": sponsor, "expires_at": expires_at }),
        ),
        Notice::AccessReview {
            step,
            campaign,
            name,
            reviewer,
            pending,
            due_at,
        } => Notification::new(
            step.clone(),
            Severity::Info,
            match (step.as_str(), reviewer) {
                ("review.closed", _) | (_, None) => format!("access review {name} closed"),
                ("review.escalated", Some(r)) => format!(
                    "access review {name}: {pending} items nobody decided went to {r}; due at                      {due_at} (`pedm review show {name} --mine`)"
                ),
                ("review.reminder", Some(r)) => format!(
                    "access review {name}: {r} still has {pending} items to decide by {due_at}                      (`pedm review show {name} --mine`)"
                ),
                (_, Some(r)) => format!(
                    "access review {name}: {pending} items for {r} to keep or revoke by                      {due_at} (`pedm review show {name} --mine`)"
                ),
            },
            json!({
                "campaign": campaign, "name": name, "reviewer": reviewer,
                "pending": pending, "due_at": due_at,
            }),
        ),
        Notice::LongSession {
            session,
            host,
            user,
            run_as,
            duration_secs,
            usual_secs,
        } => Notification::new(
            "session.unusually_long",
            Severity::High,
            format!(
                "{user}'s session {session} as {run_as} on {host} lasted {}, where theirs \
                 usually last {}",
                pedm_core::duration::format_duration(*duration_secs),
                pedm_core::duration::format_duration(*usual_secs)
            ),
            json!({
                "session": session, "host": host, "user": user, "run_as": run_as,
                "duration_secs": duration_secs, "usual_secs": usual_secs,
            }),
        ),
        Notice::PropertyBroken {
            property,
            counterexample,
        } => Notification::new(
            "policy.property_broken",
            Severity::High,
            format!("a directory change broke the policy property {property:?}: {counterexample}"),
            json!({ "property": property, "counterexample": counterexample }),
        ),
        Notice::PolicyReviewOverdue {
            policy,
            file,
            owner,
            review_by,
        } => Notification::new(
            "policy.review_overdue",
            Severity::Info,
            format!(
                "policy {policy} ({file}) was due for review by {} on {review_by}",
                owner.as_deref().unwrap_or("its owner (none named)")
            ),
            json!({ "policy": policy, "file": file, "owner": owner, "review_by": review_by }),
        ),
        Notice::ExternalExpired {
            user,
            sponsor,
            expires_at,
        } => Notification::new(
            kinds::EXTERNAL_EXPIRED,
            Severity::Info,
            format!(
                "the external account {user} (sponsor {sponsor}) expired at {expires_at}: \
                 it can no longer sign in and its grants ended"
            ),
            json!({ "user": user, "sponsor": sponsor, "expires_at": expires_at }),
        ),
    }
}
