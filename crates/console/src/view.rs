//! What the templates show, worked out in Rust so the templates stay simple: rows of
//! strings, times, and who must still approve.

use jiff::{Timestamp, tz::TimeZone};
use pedm_core::duration::format_duration;
use pedm_core::model::{Approval, Grant, GrantState, Request, RequestState};
use pedm_core::service::{HISTORY_DAYS, PreviewOutcome, RequestPreview, RequesterHistory};

/// The navigation of a signed-in page.
pub struct Nav {
    pub user: String,
    pub csrf: String,
    pub active: &'static str,
    /// Links to pages only some people may use (each page checks again).
    pub audit: bool,
    pub policies: bool,
    pub grants: bool,
    pub admin: bool,
}

pub fn short_time(t: Timestamp) -> String {
    t.to_zoned(TimeZone::UTC)
        .strftime("%Y-%m-%d %H:%M UTC")
        .to_string()
}

pub fn time_left(now: Timestamp, until: Timestamp) -> String {
    let secs = until.duration_since(now).as_secs();
    if secs <= 0 {
        return "expired".into();
    }
    format!("{} left", format_duration(secs))
}

pub struct RequestRow {
    pub id: String,
    pub requester: String,
    pub target: String,
    pub role: String,
    pub duration: String,
    pub state: String,
    pub created_at: String,
    pub created_short: String,
    pub justification: String,
    pub ticket: Option<String>,
    pub policy: String,
    pub decision: Option<String>,
    pub waiting: String,
    pub break_glass: bool,
    /// What the requester did before (for approvers).
    pub history: String,
    /// How unusual the request is for the requester, with the reasons.
    pub risk: Option<String>,
}

/// Who a pending request still waits for: the current step and the ones after it.
pub fn waiting_for(r: &Request, approvals: &[Approval]) -> String {
    if r.state != RequestState::Pending {
        return "nobody".into();
    }
    let out: Vec<String> = r
        .outstanding(approvals)
        .iter()
        .map(|(_, t)| {
            format!(
                "{} of {}",
                t.required,
                t.group.as_deref().unwrap_or("any approver")
            )
        })
        .collect();
    if out.is_empty() {
        "approval".into()
    } else {
        out.join(", then ")
    }
}

impl RequestRow {
    pub fn new(r: &Request, approvals: &[Approval]) -> Self {
        let decision = r.decided_by.as_ref().map(|by| {
            let mut d = format!("{} by {by}", r.state);
            if let Some(why) = &r.decision_reason {
                d.push_str(": ");
                d.push_str(why);
            }
            d
        });
        RequestRow {
            id: r.id.to_string(),
            requester: r.requester.clone(),
            target: r.target.clone(),
            role: r.role.clone(),
            duration: format_duration(r.duration_secs),
            state: r.state.to_string(),
            created_at: r.created_at.to_string(),
            created_short: short_time(r.created_at),
            justification: r.justification.clone(),
            ticket: r.ticket.clone(),
            policy: r
                .policy
                .clone()
                .unwrap_or_else(|| "the default rules".into()),
            decision,
            waiting: waiting_for(r, approvals),
            break_glass: r.break_glass,
            history: String::new(),
            risk: r.context.risk.as_ref().map(|k| k.summary()),
        }
    }
}

pub struct GrantRow {
    pub id: String,
    pub target: String,
    pub role: String,
    pub state: String,
    pub active: bool,
    pub expires_at: String,
    pub left: String,
    pub provision: String,
    pub ended_at: String,
    pub ended_short: String,
}

impl GrantRow {
    pub fn new(g: &Grant, now: Timestamp) -> Self {
        let ended = g.ended_at.unwrap_or(g.expires_at);
        GrantRow {
            id: g.id.to_string(),
            target: g.target.clone(),
            role: g.role.clone(),
            state: g.state.to_string(),
            active: g.state == GrantState::Active,
            expires_at: g.expires_at.to_string(),
            left: time_left(now, g.expires_at),
            provision: g.provision_state.to_string(),
            ended_at: ended.to_string(),
            ended_short: short_time(ended),
        }
    }
}

pub struct PreviewView {
    pub outcome: &'static str,
    pub headline: String,
    pub reason: String,
    pub policy: Option<String>,
    pub max: String,
    /// What approvers will see of how unusual it is.
    pub risk: Option<String>,
}

impl PreviewView {
    pub fn new(p: RequestPreview) -> Self {
        let (outcome, headline) = match p.outcome {
            PreviewOutcome::GrantedAtOnce => (
                "granted",
                match &p.delegated_by {
                    Some(d) => format!("Granted at once (pre-approved by {d}'s delegation)"),
                    None => "Granted at once".into(),
                },
            ),
            PreviewOutcome::NeedsApproval => {
                let steps = p
                    .tiers
                    .iter()
                    .map(|t| {
                        format!(
                            "{} of {}",
                            t.required,
                            t.group.as_deref().unwrap_or("any approver")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(" then ");
                ("pending", format!("Needs approval: {steps}"))
            }
            PreviewOutcome::Denied => ("denied", "Denied".to_string()),
        };
        PreviewView {
            outcome,
            headline,
            reason: p.reason,
            policy: p.policy,
            max: format_duration(p.max_duration_secs),
            risk: p.risk.map(|r| r.summary()),
        }
    }
}

/// The requester's history in one sentence, for approvers.
pub fn history_text(h: &RequesterHistory) -> String {
    if h.requests == 0 {
        return format!("First request in {HISTORY_DAYS} days.");
    }
    let mut s = format!(
        "In {HISTORY_DAYS} days: {} earlier request{} ({} approved, {} denied), {} for this role",
        h.requests,
        if h.requests == 1 { "" } else { "s" },
        h.approved,
        h.denied,
        h.same_role
    );
    if h.break_glass > 0 {
        s.push_str(&format!(", {} break-glass", h.break_glass));
    }
    s.push_str(&format!(
        "; {} session{} recorded",
        h.sessions,
        if h.sessions == 1 { "" } else { "s" }
    ));
    if let Some(t) = h.last_granted_at {
        s.push_str(&format!("; last granted {}", short_time(t)));
    }
    s.push('.');
    s
}
