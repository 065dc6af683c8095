//! The adapter between the domain's decision port (`pedm_core::decision`) and the Cedar
//! engine (`pedm_policy`).

use pedm_core::decision::{
    AdminAction, ContextPoint, ContextPoints, Decider, Delegable, ExecCommand, Permit,
    PolicyCompiler, RequestDecision, RequestInput, StepUpTerms,
};
use pedm_core::model::{Actor, ApprovalTier, PolicySource, Request, Role, Target};
use pedm_policy::{
    Action, AuthzQuery, Ctx, Device, Engine, EngineOptions, Principal, RequestQuery,
    RequestVerdict, Resource, RoleRef, TargetRef,
};
use std::sync::Arc;

/// The core's decision for the engine's verdict on a request.
fn decision_of(v: RequestVerdict) -> RequestDecision {
    match v {
        RequestVerdict::Deny {
            policies,
            reason,
            errors,
        } => {
            let reason = if errors.is_empty() {
                reason
            } else {
                format!("{reason} (evaluation errors: {})", errors.join("; "))
            };
            RequestDecision::Deny { reason, policies }
        }
        RequestVerdict::Permit(r) => RequestDecision::Permit(Permit {
            reason: if r.break_glass {
                format!("break-glass permitted by policy {}", r.policy)
            } else if r.auto_approve {
                format!("auto-approved by policy {}", r.policy)
            } else {
                format!("policy {} requires approval ({})", r.policy, r.tiers_text())
            },
            policy: Some(r.policy),
            auto_approve: r.auto_approve,
            max_duration_secs: r.max_duration_secs,
            tiers: core_tiers(r.tiers),
            break_glass: r.break_glass,
            allow_parallel: r.allow_parallel,
            follow_up: r.follow_up,
            while_on_call: r.while_on_call,
        }),
    }
}

pub const DEFAULT_POLICIES: &str = include_str!("default_policies.cedar");

pub struct CedarCompiler {
    pub options: EngineOptions,
    /// Who is on call now (`principal.on_call`).
    pub on_call: Arc<crate::oncall::OnCall>,
}

impl PolicyCompiler for CedarCompiler {
    fn compile(&self, sources: &[PolicySource]) -> Result<Arc<dyn Decider>, String> {
        let pairs: Vec<(String, String)> = sources
            .iter()
            .map(|s| (s.name.clone(), s.text.clone()))
            .collect();
        let engine = Engine::load(&pairs, self.options.clone()).map_err(|e| e.to_string())?;
        Ok(Arc::new(CedarDecider {
            engine,
            on_call: self.on_call.clone(),
        }))
    }

    fn default_sources(&self) -> Vec<PolicySource> {
        vec![PolicySource {
            name: "default.cedar".into(),
            text: DEFAULT_POLICIES.into(),
        }]
    }
}

pub struct CedarDecider {
    engine: Engine,
    on_call: Arc<crate::oncall::OnCall>,
}

impl CedarDecider {
    fn principal(&self, a: &Actor) -> Principal {
        Principal {
            user: a.user.clone(),
            groups: a.groups.clone(),
            admin: a.admin,
            external: a.external,
            sponsor: a.sponsor.clone(),
            // A workload is never a person on call.
            on_call: a.workload.is_none() && self.on_call.is_on_call(&a.user),
            workload: a.workload.clone(),
        }
    }
}

fn role_ref(r: &Role) -> RoleRef {
    let mut rr = RoleRef::from(r);
    rr.auto_approve = r.auto_approve;
    rr
}

/// Device claims arrive as strings (see `pedm_core::device::Device::context`).
fn device(claims: &std::collections::BTreeMap<String, String>) -> Device {
    let flag = |k: &str| claims.get(k).and_then(|v| v.parse::<bool>().ok());
    let text = |k: &str| claims.get(k).cloned();
    Device {
        managed: flag("managed"),
        compliant: flag("compliant"),
        os: text("os"),
        id: text("id"),
        trusted: flag("trusted"),
        enrolled_at: claims.get("enrolled_at").and_then(|v| v.parse().ok()),
        os_version: text("os_version"),
        disk_encrypted: flag("disk_encrypted"),
        screen_lock: flag("screen_lock"),
    }
}

/// Approval steps as the core keeps them.
fn core_tiers(tiers: Vec<pedm_policy::ApprovalTier>) -> Vec<ApprovalTier> {
    tiers
        .into_iter()
        .map(|t| ApprovalTier {
            group: t.group,
            required: t.required,
        })
        .collect()
}

fn admin_action(a: AdminAction) -> Action {
    match a {
        AdminAction::ManageUsers => Action::ManageUsers,
        AdminAction::ManageTargets => Action::ManageTargets,
        AdminAction::ManagePolicies => Action::ManagePolicies,
        AdminAction::ReadAudit => Action::ReadAudit,
        AdminAction::ManageGrants => Action::ManageGrants,
    }
}

impl Decider for CedarDecider {
    fn decide_request(&self, input: &RequestInput<'_>) -> RequestDecision {
        let q = RequestQuery {
            principal: self.principal(input.principal),
            target: TargetRef::from(input.target),
            role: role_ref(input.role),
            context: Ctx {
                duration_secs: input.duration_secs,
                break_glass: input.break_glass,
                has_ticket: input.ticket.is_some(),
                extension: input.extension,
                starts_in_secs: input.starts_in_secs,
                via_agent: input.via_agent,
                risk: input.risk,
                ticket: input.ticket_facts.map(|t| ticket_ctx(t, input.now)),
                source_ip: input.source_addr.and_then(|s| s.parse().ok()),
                device: device(input.device),
                now: input.now,
            },
        };
        decision_of(self.engine.decide_request(&q))
    }

    fn context_points(&self, now: jiff::Timestamp) -> ContextPoints {
        let c = self.engine.context_corners(now);
        ContextPoints {
            points: c
                .points
                .into_iter()
                .map(|corner| ContextPoint {
                    break_glass: corner.ctx.break_glass,
                    via_agent: corner.ctx.via_agent,
                    now: corner.ctx.now,
                    description: corner.description.clone(),
                    detail: Box::new(corner),
                })
                .collect(),
            varied: c.varied,
            complete: c.complete,
        }
    }

    fn decide_at(
        &self,
        principal: &Actor,
        target: &Target,
        role: &Role,
        point: &ContextPoint,
    ) -> RequestDecision {
        // A point of another kind of decider: only what every point says.
        let plain;
        let corner = match point.detail.downcast_ref::<pedm_policy::Corner>() {
            Some(c) => c,
            None => {
                plain = pedm_policy::Corner {
                    ctx: Ctx {
                        break_glass: point.break_glass,
                        via_agent: point.via_agent,
                        ..Ctx::at(point.now)
                    },
                    duration_given: false,
                    on_call: None,
                    description: String::new(),
                };
                &plain
            }
        };
        let mut p = self.principal(principal);
        if let Some(on_call) = corner.on_call {
            p.on_call = on_call;
        }
        let mut context = corner.ctx.clone();
        if !corner.duration_given {
            context.duration_secs = pedm_core::decision::plain_duration(role);
        }
        decision_of(self.engine.decide_request(&RequestQuery {
            principal: p,
            target: TargetRef::from(target),
            role: role_ref(role),
            context,
        }))
    }

    fn written_names(&self) -> Option<std::collections::BTreeSet<String>> {
        self.engine.written_names()
    }

    fn ownership(&self) -> Vec<pedm_core::decision::PolicyOwnership> {
        self.engine
            .policies()
            .into_iter()
            .map(|p| pedm_core::decision::PolicyOwnership {
                owner: p.annotations.get("owner").map(|o| o.trim().to_string()),
                // Checked when the set was loaded.
                review_by: p
                    .annotations
                    .get("review_by")
                    .and_then(|d| pedm_policy::review_date(d).ok()),
                policy: p.id,
                file: p.source,
                status: String::new(),
            })
            .collect()
    }

    fn may_approve(
        &self,
        approver: &Actor,
        request: &Request,
        target: &Target,
        role: &Role,
    ) -> Result<(), String> {
        let mut ctx = Ctx::at(jiff::Timestamp::now());
        ctx.duration_secs = request.duration_secs;
        ctx.break_glass = request.break_glass;
        ctx.has_ticket = request.ticket.is_some();
        ctx.extension = request.context.extends.is_some();
        ctx.via_agent = request.context.via_agent;
        ctx.risk = request
            .context
            .risk
            .as_ref()
            .map_or(0, |r| i64::from(r.score));
        ctx.starts_in_secs = request.context.starts_at.map_or(0, |s| {
            s.duration_since(jiff::Timestamp::now()).as_secs().max(0)
        });
        ctx.ticket = request
            .context
            .ticket
            .as_ref()
            .map(|t| ticket_ctx(t, request.context.starts_at.unwrap_or(ctx.now)));
        let v = self.engine.authorize(&AuthzQuery {
            principal: self.principal(approver),
            action: Action::Approve,
            resource: Resource::Role {
                target: TargetRef::from(target),
                role: role_ref(role),
            },
            context: ctx,
            requester: Some(Principal {
                user: request.requester.clone(),
                groups: vec![],
                ..Default::default()
            }),
        });
        if v.allowed {
            Ok(())
        } else {
            Err(format!(
                "no policy lets {} approve {}/{}{}",
                approver.user,
                target.name,
                role.name,
                denial_detail(&v.policies, &v.errors)
            ))
        }
    }

    fn step_up(
        &self,
        holder: &Actor,
        target: &Target,
        role: &Role,
        command: &ExecCommand,
        remaining_secs: i64,
    ) -> Result<StepUpTerms, String> {
        let q = AuthzQuery {
            principal: self.principal(holder),
            action: Action::Exec,
            resource: Resource::Command {
                target: TargetRef::from(target),
                role: role_ref(role),
                command: pedm_policy::CommandRef {
                    path: command.path.clone(),
                    args: command.args.clone(),
                    sha256: command.sha256.clone(),
                    shell: command.shell,
                    cwd: command.cwd.clone(),
                },
            },
            context: Ctx {
                duration_secs: remaining_secs.max(0),
                ..Ctx::at(jiff::Timestamp::now())
            },
            requester: None,
        };
        if self.engine.authorize(&q).allowed {
            return Err(format!(
                "{} may already run {} under {}/{}: nothing to approve",
                holder.user, command.path, target.name, role.name
            ));
        }
        match self.engine.step_up(&q) {
            Some(s) => Ok(StepUpTerms {
                policies: s.policies,
                tiers: core_tiers(s.tiers),
            }),
            None => Err(format!(
                "no @step_up policy lets {} ask to run {} under {}/{}",
                holder.user, command.path, target.name, role.name
            )),
        }
    }

    fn may_administer(&self, actor: &Actor, action: AdminAction) -> Result<(), String> {
        let v = self.engine.authorize(&AuthzQuery {
            principal: self.principal(actor),
            action: admin_action(action),
            resource: Resource::System,
            context: Ctx::at(jiff::Timestamp::now()),
            requester: None,
        });
        if v.allowed {
            Ok(())
        } else {
            Err(format!(
                "{} is not permitted to {}{}",
                actor.user,
                action.as_str(),
                denial_detail(&v.policies, &v.errors)
            ))
        }
    }

    fn may_delegate(
        &self,
        actor: &Actor,
        target: &Target,
        what: Delegable<'_>,
        duration_secs: i64,
    ) -> Result<(), String> {
        let mut ctx = Ctx::at(jiff::Timestamp::now());
        ctx.duration_secs = duration_secs;
        let (resource, what) = match what {
            Delegable::Role(r) => (
                Resource::Role {
                    target: TargetRef::from(target),
                    role: role_ref(r),
                },
                format!("role {}/{}", target.name, r.name),
            ),
            Delegable::Task(t) => (
                Resource::Task {
                    target: TargetRef::from(target),
                    task: t.to_string(),
                },
                format!("task {t} on {}", target.name),
            ),
        };
        let v = self.engine.authorize(&AuthzQuery {
            principal: self.principal(actor),
            action: Action::Delegate,
            resource,
            context: ctx,
            requester: None,
        });
        if v.allowed {
            Ok(())
        } else {
            Err(format!(
                "no policy lets {} delegate {what}{}",
                actor.user,
                denial_detail(&v.policies, &v.errors)
            ))
        }
    }

    fn may_trust_device(
        &self,
        actor: &Actor,
        claims: &std::collections::BTreeMap<String, String>,
    ) -> bool {
        let mut context = Ctx::at(jiff::Timestamp::now());
        context.device = device(claims);
        self.engine
            .authorize(&AuthzQuery {
                principal: self.principal(actor),
                action: Action::TrustDevice,
                resource: Resource::System,
                context,
                requester: None,
            })
            .allowed
    }

    fn approver_groups(&self) -> Option<std::collections::BTreeSet<String>> {
        self.engine.approver_groups()
    }

    fn eligibility_policies(&self) -> Vec<String> {
        self.engine
            .policies()
            .into_iter()
            .filter(|p| {
                p.effect == "permit"
                    && p.actions
                        .as_ref()
                        .is_none_or(|a| a.iter().any(|a| a == "request"))
            })
            .map(|p| p.id)
            .collect()
    }
}

fn denial_detail(policies: &[String], errors: &[String]) -> String {
    match (policies.is_empty(), errors.is_empty()) {
        (true, true) => String::new(),
        (false, true) => format!(" (forbidden by {})", policies.join(", ")),
        (_, false) => format!(" (evaluation errors: {})", errors.join("; ")),
    }
}

/// `context.ticket` from what the ticket system said, its window judged at `at`.
fn ticket_ctx(t: &pedm_core::ticket::TicketFacts, at: jiff::Timestamp) -> pedm_policy::Ticket {
    pedm_policy::Ticket {
        system: t.system.clone(),
        state: t.state.clone(),
        priority: t.priority.clone().unwrap_or_default(),
        assigned_to_requester: t.assigned_to_requester,
        in_window: t.in_window(at),
    }
}
