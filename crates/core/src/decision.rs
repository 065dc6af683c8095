//! Who may get what, who may approve it, who may administer: one interface, implemented by the
//! Cedar engine (`pedm-policy`) and, for tests and bare set-ups, by [`BuiltinDecider`].

use crate::model::{Actor, ApprovalTier, PolicySource, Request, Role, Target};
use jiff::Timestamp;
use std::collections::BTreeMap;
use std::sync::Arc;

/// What is being asked for, with everything a policy may look at.
#[derive(Debug, Clone)]
pub struct RequestInput<'a> {
    pub principal: &'a Actor,
    pub target: &'a Target,
    pub role: &'a Role,
    pub duration_secs: i64,
    pub justification: &'a str,
    pub task: Option<&'a str>,
    pub ticket: Option<&'a str>,
    pub source_addr: Option<&'a str>,
    pub device: &'a BTreeMap<String, String>,
    pub break_glass: bool,
    /// Lengthens a live grant of this role (`duration_secs` is the extension).
    pub extension: bool,
    /// Scheduled access: seconds until the window starts (0: at once). `now` is then the
    /// window's start, so that time-of-day rules judge when the privilege is used.
    pub starts_in_secs: i64,
    /// What the ticket system said about the ticket (`context.ticket`).
    pub ticket_facts: Option<&'a crate::ticket::TicketFacts>,
    /// Asked by an AI agent for its person (`context.via_agent`).
    pub via_agent: bool,
    /// How unusual the request is for its requester, 0..100 (`context.risk`).
    pub risk: i64,
    pub now: Timestamp,
}

/// A permit and what it requires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permit {
    /// The determining policy, if the decider has named policies.
    pub policy: Option<String>,
    /// Why, for people.
    pub reason: String,
    pub auto_approve: bool,
    /// The policy's ceiling on the duration; the role's and the server's still apply.
    pub max_duration_secs: Option<i64>,
    /// Approval steps when not auto-approved; empty means one approval by anyone permitted.
    pub tiers: Vec<ApprovalTier>,
    /// The permit is a break-glass permit (grants at once, review afterwards).
    pub break_glass: bool,
    /// The requester may hold several live grants of the role at once
    /// (`@allow_parallel("true")`); otherwise a request while one is live is refused.
    pub allow_parallel: bool,
    /// Reminders and escalation while approvers do not answer.
    pub follow_up: Option<crate::model::FollowUp>,
    /// The grant lasts only while its holder is on call (`@while_on_call`).
    pub while_on_call: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestDecision {
    /// Refused; `reason` names the policy or rule that refused.
    Deny {
        reason: String,
        policies: Vec<String>,
    },
    Permit(Permit),
}

/// Operations that need administrative rights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminAction {
    ManageUsers,
    ManageTargets,
    ManagePolicies,
    ReadAudit,
    /// Revoke others' grants, close break-glass reviews.
    ManageGrants,
}

impl AdminAction {
    pub fn as_str(self) -> &'static str {
        match self {
            AdminAction::ManageUsers => "manage_users",
            AdminAction::ManageTargets => "manage_targets",
            AdminAction::ManagePolicies => "manage_policies",
            AdminAction::ReadAudit => "read_audit",
            AdminAction::ManageGrants => "manage_grants",
        }
    }
}

/// What someone wants to hand on (Cedar action `delegate`).
#[derive(Debug, Clone, Copy)]
pub enum Delegable<'a> {
    /// A role they hold or may pre-approve (Cedar resource `Role`).
    Role(&'a Role),
    /// A task by name (Cedar resource `Task`).
    Task(&'a str),
}

/// A command as policy sees it in an `exec` decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecCommand {
    pub path: String,
    /// The arguments after the program, joined by spaces.
    pub args: String,
    pub sha256: Option<String>,
    pub shell: bool,
    pub cwd: Option<String>,
}

/// What a step-up needs ([`Decider::step_up`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepUpTerms {
    pub policies: Vec<String>,
    pub tiers: Vec<crate::model::ApprovalTier>,
}

pub trait Decider: Send + Sync + 'static {
    fn decide_request(&self, input: &RequestInput<'_>) -> RequestDecision;
    /// Whether `approver` may approve or deny `request` (the workflow has already refused
    /// self-approval and checks tier membership itself). `Err` names why not.
    fn may_approve(
        &self,
        approver: &Actor,
        request: &Request,
        target: &Target,
        role: &Role,
    ) -> Result<(), String>;
    fn may_administer(&self, actor: &Actor, action: AdminAction) -> Result<(), String>;
    /// Whether `actor` may delegate `what` on `target` (for `duration_secs`, the time it is
    /// handed on for). `Err` names why not. Deciders that know nothing of delegation refuse.
    fn may_delegate(
        &self,
        actor: &Actor,
        target: &Target,
        what: Delegable<'_>,
        duration_secs: i64,
    ) -> Result<(), String> {
        let _ = (target, what, duration_secs);
        Err(format!("no policy lets {} delegate", actor.user))
    }
    /// Ids of the permits that make people eligible to request (for the unused-eligibility
    /// report). Empty when the decider has no named policies.
    fn eligibility_policies(&self) -> Vec<String> {
        vec![]
    }
    /// The groups whose members decide who is approved: named in approval tiers, or given
    /// `approve`, `manage_users` or `manage_policies` by a permit. With two-person control
    /// on, adding someone to one of these needs the same approvals as a policy change.
    /// `None`: the decider cannot tell, and every group counts as one.
    fn approver_groups(&self) -> Option<std::collections::BTreeSet<String>> {
        Some(std::collections::BTreeSet::new())
    }
    /// Whether approval can let `holder` run `command` under `role` on `target`, which the
    /// host refused (step-up): the `@step_up` policies that match it and the approvals they
    /// ask for. `Err` names why not. `remaining_secs` is what is left of the grant.
    fn step_up(
        &self,
        holder: &Actor,
        target: &Target,
        role: &Role,
        command: &ExecCommand,
        remaining_secs: i64,
    ) -> Result<StepUpTerms, String> {
        let _ = (holder, target, role, command, remaining_secs);
        Err("no policy makes commands approvable".into())
    }
    /// Whether a device `actor` enrolls, reporting `device` (its context claims), is trusted
    /// at once by policy (`trust_device`), without an admin's approval.
    fn may_trust_device(&self, actor: &Actor, device: &BTreeMap<String, String>) -> bool {
        let _ = (actor, device);
        false
    }
    /// The request contexts to try when a question is asked of every request (policy
    /// properties, blast radius): one per region the policies' conditions cut. This default
    /// varies what [`BuiltinDecider`] reads: break-glass and `via_agent`.
    fn context_points(&self, now: Timestamp) -> ContextPoints {
        let mut points = vec![];
        for break_glass in [false, true] {
            for via_agent in [false, true] {
                let words: Vec<&str> = [
                    break_glass.then_some("break_glass=true"),
                    via_agent.then_some("via_agent=true"),
                ]
                .into_iter()
                .flatten()
                .collect();
                points.push(ContextPoint {
                    break_glass,
                    via_agent,
                    now,
                    description: words.join(", "),
                    detail: Box::new(()),
                });
            }
        }
        ContextPoints {
            points,
            varied: vec![
                "break_glass: plain, true".into(),
                "via_agent: plain, true".into(),
            ],
            complete: true,
        }
    }
    /// The decision for `principal` asking for `role` on `target` in the context `point` (one
    /// of [`Decider::context_points`], of this decider or another of the same kind).
    fn decide_at(
        &self,
        principal: &Actor,
        target: &Target,
        role: &Role,
        point: &ContextPoint,
    ) -> RequestDecision {
        self.decide_request(&RequestInput {
            principal,
            target,
            role,
            duration_secs: plain_duration(role),
            justification: "",
            task: None,
            ticket: None,
            source_addr: None,
            device: &BTreeMap::new(),
            break_glass: point.break_glass,
            extension: false,
            starts_in_secs: 0,
            ticket_facts: None,
            via_agent: point.via_agent,
            risk: 0,
            now: point.now,
        })
    }
    /// Every name the policies write (entity ids, string literals): a user or target not
    /// among them is decided by its attributes, groups and labels alone. `None`: the decider
    /// cannot tell, so every user and every role is asked about separately.
    fn written_names(&self) -> Option<std::collections::BTreeSet<String>> {
        Some(std::collections::BTreeSet::new())
    }
    /// Every policy with its `@owner` and `@review_by`, in load order (none for a decider
    /// without policies).
    fn ownership(&self) -> Vec<PolicyOwnership> {
        vec![]
    }
}

/// Who answers for a policy and when they review it next (`@owner`, `@review_by`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PolicyOwnership {
    pub policy: String,
    /// The file it is in.
    pub file: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// `YYYY-MM-DD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub review_by: Option<jiff::civil::Date>,
    /// Set when read: the review date has passed (`overdue`), or an annotation is missing
    /// (`no owner`, `no review date`); `ok` otherwise.
    #[serde(default)]
    pub status: String,
}

/// The duration a question about every request assumes where the policies never compare it:
/// the role's longest, at most an hour.
pub fn plain_duration(role: &Role) -> i64 {
    role.max_duration_secs.clamp(1, 3600)
}

/// A request context to try ([`Decider::context_points`]).
pub struct ContextPoint {
    pub break_glass: bool,
    pub via_agent: bool,
    /// When the request is made, for deciders that do not say otherwise in `detail`.
    pub now: Timestamp,
    /// What differs from a plain request, for people; empty for a plain request.
    pub description: String,
    /// The rest of the context, in the decider's own terms.
    pub detail: Box<dyn std::any::Any + Send + Sync>,
}

/// The contexts a decider's policies tell apart, and what was varied.
pub struct ContextPoints {
    pub points: Vec<ContextPoint>,
    /// Each varied attribute with its values, and anything not covered, for people.
    pub varied: Vec<String>,
    /// `false` when the points may miss a region (named in `varied`).
    pub complete: bool,
}

/// Turns policy sources into a decider; implemented by the Cedar engine.
pub trait PolicyCompiler: Send + Sync + 'static {
    /// Parses and strictly validates `sources`; the error carries the engine's message.
    fn compile(&self, sources: &[PolicySource]) -> Result<Arc<dyn Decider>, String>;
    /// The set in force before anyone applies one.
    fn default_sources(&self) -> Vec<PolicySource>;
}

/// The rule for set-ups without policies: any user may request any role; roles marked
/// `auto_approve` are granted at once (unless an AI agent asks: `via_agent`); everything else
/// needs one approval by an admin; admins administer. Break-glass is never allowed.
#[derive(Debug, Default, Clone, Copy)]
pub struct BuiltinDecider;

impl Decider for BuiltinDecider {
    fn decide_request(&self, input: &RequestInput<'_>) -> RequestDecision {
        if input.break_glass {
            return RequestDecision::Deny {
                reason: "break-glass access is not enabled (no policy allows it)".into(),
                policies: vec![],
            };
        }
        RequestDecision::Permit(Permit {
            policy: None,
            reason: if input.role.auto_approve && !input.via_agent {
                format!(
                    "role {}/{} is auto-approved",
                    input.target.name, input.role.name
                )
            } else if input.via_agent {
                "asked by an AI agent: needs one approval by an admin".into()
            } else {
                "needs one approval by an admin".into()
            },
            auto_approve: input.role.auto_approve && !input.via_agent,
            max_duration_secs: None,
            tiers: vec![],
            break_glass: false,
            allow_parallel: false,
            follow_up: None,
            while_on_call: false,
        })
    }

    fn may_approve(
        &self,
        approver: &Actor,
        _: &Request,
        _: &Target,
        _: &Role,
    ) -> Result<(), String> {
        if approver.admin {
            Ok(())
        } else {
            Err(format!(
                "{} is not an approver (only admins approve)",
                approver.user
            ))
        }
    }

    fn may_administer(&self, actor: &Actor, action: AdminAction) -> Result<(), String> {
        if actor.admin {
            Ok(())
        } else {
            Err(format!(
                "{} needs admin rights; {} is not an admin",
                action.as_str(),
                actor.user
            ))
        }
    }

    /// Admins delegate anything; nobody else.
    fn may_delegate(
        &self,
        actor: &Actor,
        target: &Target,
        what: Delegable<'_>,
        _: i64,
    ) -> Result<(), String> {
        if actor.admin {
            return Ok(());
        }
        let what = match what {
            Delegable::Role(r) => format!("role {}/{}", target.name, r.name),
            Delegable::Task(t) => format!("task {t} on {}", target.name),
        };
        Err(format!(
            "{} may not delegate {what}: only admins delegate",
            actor.user
        ))
    }
}
