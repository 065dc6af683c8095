//! How policy judges a request before anything is written: the decision with its ceilings,
//! what a live delegation pre-approves, and the preview the console shows a requester.

use super::*;
use crate::decision::Permit;
use std::collections::HashMap;

/// What policy says of a request before anything is written.
pub(super) struct Judgement {
    pub(super) decision: RequestDecision,
    /// The tightest of the role's, the policy's and the server's ceilings.
    pub(super) max_duration_secs: i64,
}

/// What would happen to a request if it were made now (the console shows it before the
/// requester submits). Nothing is written; the same decision path as [`ControlPlane::create_request`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestPreview {
    pub outcome: PreviewOutcome,
    /// The determining policy (or the forbidding ones, joined).
    pub policy: Option<String>,
    /// Why, for people.
    pub reason: String,
    /// The approval steps a pending request would wait for.
    pub tiers: Vec<ApprovalTier>,
    pub max_duration_secs: i64,
    /// A live delegation that would pre-approve it, and who gave it.
    pub delegated_by: Option<String>,
    /// How unusual it would be for its requester (what approvers will see).
    pub risk: Option<crate::risk::Risk>,
}

/// A role someone may ask for now ([`ControlPlane::requestable_roles`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requestable {
    pub role: Role,
    pub target_kind: TargetKind,
    /// What policy says of a short request for it now.
    pub preview: RequestPreview,
    /// Refused without a ticket, possible with one.
    pub ticket_required: bool,
}

/// The duration [`ControlPlane::requestable_roles`] judges a request of (one minute): the
/// shortest sensible, so a cap on long requests does not hide a role.
pub const PROBE_SECS: i64 = 60;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreviewOutcome {
    GrantedAtOnce,
    NeedsApproval,
    Denied,
}

impl ControlPlane {
    /// A request's target and role, or NotFound naming the missing one.
    pub(super) async fn target_and_role(&self, target: &str, role: &str) -> Result<(Target, Role)> {
        let t = self
            .store
            .target(target)
            .await?
            .ok_or_else(|| Error::NotFound(format!("target {target}")))?;
        let r = self
            .store
            .role(target, role)
            .await?
            .ok_or_else(|| Error::NotFound(format!("role {role} on target {target}")))?;
        Ok((t, r))
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn judge(
        &self,
        actor: &Actor,
        target: &Target,
        role: &Role,
        new: &NewRequest,
        justification: &str,
        task: &Option<String>,
        ticket: &Option<String>,
        context: &RequestContext,
        now: Timestamp,
    ) -> Judgement {
        let decision = self.decider().decide_request(&RequestInput {
            principal: actor,
            target,
            role,
            duration_secs: new.duration_secs,
            justification,
            task: task.as_deref(),
            ticket: ticket.as_deref(),
            source_addr: context.source_addr.as_deref(),
            device: &context.device,
            break_glass: new.break_glass,
            extension: context.extends.is_some(),
            starts_in_secs: context
                .starts_at
                .map_or(0, |s| s.duration_since(now).as_secs().max(0)),
            ticket_facts: context.ticket.as_ref(),
            via_agent: actor.via_agent,
            risk: context.risk.as_ref().map_or(0, |r| i64::from(r.score)),
            now: context.starts_at.unwrap_or(now),
        });
        let mut max = role.max_duration_secs.min(self.limits.max_duration_secs);
        if let RequestDecision::Permit(Permit {
            max_duration_secs: Some(p),
            ..
        }) = &decision
        {
            max = max.min(*p);
        }
        Judgement {
            decision,
            max_duration_secs: max,
        }
    }

    /// A live delegation of this role pre-approves it: it replaces only the approval a permit
    /// requires (a forbid still wins), for at most the delegation's remaining time. Asking
    /// for break-glass where no policy allows it is a denial.
    pub(super) async fn settle(
        &self,
        actor: &Actor,
        target: &Target,
        role: &str,
        new: &NewRequest,
        decision: RequestDecision,
        now: Timestamp,
    ) -> Result<(
        RequestDecision,
        Option<(crate::delegation::Delegation, Timestamp)>,
    )> {
        let delegated = match &decision {
            // A delegation is for now: it does not pre-approve a window that starts later.
            // Nor an AI agent's request: a person decides those.
            RequestDecision::Permit(p)
                if !p.auto_approve
                    && !p.break_glass
                    && !new.break_glass
                    && new.starts_at.is_none()
                    && !actor.via_agent =>
            {
                self.delegation_for_role(actor, target, role, now).await?
            }
            _ => None,
        };
        let decision = match decision {
            RequestDecision::Permit(p) if new.break_glass && !p.break_glass => {
                RequestDecision::Deny {
                    reason: format!(
                        "no policy allows break-glass access to {}/{} for {}",
                        target.name, role, actor.user
                    ),
                    policies: vec![],
                }
            }
            d => d,
        };
        Ok((decision, delegated))
    }

    /// What would happen if `actor` made this request now: decided by the same policy path
    /// as [`Self::create_request`], nothing written or recorded. The duration is not checked
    /// against the ceiling (the ceiling is reported instead).
    pub async fn preview_request(
        &self,
        actor: &Actor,
        new: NewRequest,
        context: RequestContext,
    ) -> Result<RequestPreview> {
        let (target, role) = self.target_and_role(&new.target, &new.role).await?;
        self.preview_on(actor, &target, &role, new, context).await
    }

    /// [`Self::preview_request`] with the target and role already read.
    async fn preview_on(
        &self,
        actor: &Actor,
        target: &Target,
        role: &Role,
        new: NewRequest,
        mut context: RequestContext,
    ) -> Result<RequestPreview> {
        let now = self.now();
        context.via_agent = actor.via_agent;
        context.risk = Some(self.assess_risk(actor, &new, &context).await?);
        let justification = new.justification.trim().to_string();
        let (task, ticket) = (new.task.clone(), new.ticket.clone());
        let j = self.judge(
            actor,
            target,
            role,
            &new,
            &justification,
            &task,
            &ticket,
            &context,
            now,
        );
        let (decision, delegated) = self
            .settle(actor, target, &role.name, &new, j.decision, now)
            .await?;
        let delegated_by = delegated.map(|(d, _)| d.delegator);
        let risk = context.risk.clone();
        Ok(match decision {
            RequestDecision::Deny { reason, policies } => RequestPreview {
                outcome: PreviewOutcome::Denied,
                policy: (!policies.is_empty()).then(|| policies.join(", ")),
                reason,
                tiers: vec![],
                max_duration_secs: j.max_duration_secs,
                delegated_by: None,
                risk,
            },
            RequestDecision::Permit(p) => {
                let at_once = p.auto_approve || p.break_glass || delegated_by.is_some();
                RequestPreview {
                    outcome: if at_once {
                        PreviewOutcome::GrantedAtOnce
                    } else {
                        PreviewOutcome::NeedsApproval
                    },
                    policy: p.policy,
                    reason: p.reason,
                    tiers: match (at_once, p.tiers.is_empty()) {
                        (true, _) => vec![],
                        (false, true) => vec![ApprovalTier {
                            group: None,
                            required: 1,
                        }],
                        (false, false) => p.tiers,
                    },
                    max_duration_secs: j.max_duration_secs,
                    delegated_by,
                    risk,
                }
            }
        })
    }

    /// The roles `actor` may ask for now (`GET /me/requestable`, the `pedm mcp` tool
    /// `list_requestable`), each as policy judges a short request ([`PROBE_SECS`], or the
    /// role's maximum if shorter) made now from `context`, without a ticket or, where policy
    /// refuses that, with one (`ticket_required`). Roles refused either way are left out.
    /// Nothing is written. A real request can still be decided otherwise (a longer duration,
    /// what a ticket system says of its ticket).
    pub async fn requestable_roles(
        &self,
        actor: &Actor,
        context: RequestContext,
    ) -> Result<Vec<Requestable>> {
        let targets: HashMap<String, Target> = self
            .store
            .targets()
            .await?
            .into_iter()
            .map(|t| (t.name.clone(), t))
            .collect();
        let mut out = vec![];
        for role in self.store.roles(None).await? {
            let Some(target) = targets.get(&role.target) else {
                continue;
            };
            let probe = |ticket: Option<String>| NewRequest {
                target: target.name.clone(),
                role: role.name.clone(),
                duration_secs: PROBE_SECS.min(role.max_duration_secs).max(1),
                justification: "listing what may be requested".into(),
                task: None,
                ticket,
                break_glass: false,
                starts_at: None,
            };
            let mut ticket_required = false;
            let mut preview = self
                .preview_on(actor, target, &role, probe(None), context.clone())
                .await?;
            if preview.outcome == PreviewOutcome::Denied {
                ticket_required = true;
                preview = self
                    .preview_on(
                        actor,
                        target,
                        &role,
                        probe(Some("TICKET".into())),
                        context.clone(),
                    )
                    .await?;
            }
            if preview.outcome != PreviewOutcome::Denied {
                out.push(Requestable {
                    target_kind: target.kind,
                    role,
                    preview,
                    ticket_required,
                });
            }
        }
        Ok(out)
    }
}
