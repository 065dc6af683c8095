//! Requests: creation (judged in `judgement`), approval tiers, break-glass and its review.

use super::judgement::Judgement;
use super::*;
use std::collections::HashMap;

/// Where a pending request stands in its approval steps: the first unfinished one (`None`
/// when every step is complete, or when the request has no steps recorded).
struct TierPosition {
    index: u32,
    tier: ApprovalTier,
}

fn tier_position(req: &Request, approvals: &[Approval]) -> Option<TierPosition> {
    if req.approval_tiers.is_empty() {
        return None;
    }
    let (index, tier) = req.outstanding(approvals).into_iter().next()?;
    Some(TierPosition { index, tier })
}

/// Approval steps as people read them: `security:2, any approver:1`.
pub fn tiers_text(tiers: &[ApprovalTier]) -> String {
    tiers
        .iter()
        .map(|t| {
            format!(
                "{}:{}",
                t.group.as_deref().unwrap_or("any approver"),
                t.required
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

impl ControlPlane {
    pub async fn create_request(
        &self,
        actor: &Actor,
        new: NewRequest,
        context: RequestContext,
    ) -> Result<(Request, Option<Grant>)> {
        let (target, role) = self.target_and_role(&new.target, &new.role).await?;
        if new.duration_secs <= 0 {
            return Err(Error::invalid("duration", "must be greater than zero"));
        }
        let justification = new.justification.trim().to_string();
        if justification.is_empty() {
            return Err(Error::invalid(
                "justification",
                "is required: say why you need this privilege",
            ));
        }
        if justification
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t')
        {
            return Err(Error::invalid(
                "justification",
                "contains control characters (only newline and tab are allowed)",
            ));
        }
        if justification.chars().count() > self.limits.max_justification_chars {
            return Err(Error::invalid(
                "justification",
                format!(
                    "is longer than {} characters",
                    self.limits.max_justification_chars
                ),
            ));
        }
        let task = trimmed("task", new.task.clone(), 200)?;
        let ticket = trimmed("ticket", new.ticket.clone(), 200)?;
        let now = self.now();
        let mut context = context;
        // Who asked comes from authentication, never from what a transport passed on.
        context.via_agent = actor.via_agent;
        if actor.via_agent && new.break_glass {
            return Err(self
                .refuse(
                    actor,
                    "request.create",
                    subject("target", &target.name),
                    "an AI agent cannot break the glass: a person must ask for emergency \
                     access themselves"
                        .into(),
                )
                .await);
        }
        context.starts_at = self.scheduled_start(&new, &context, now)?;
        let new = NewRequest {
            starts_at: context.starts_at,
            ..new
        };
        // A lock on the person or the host stops requests before policy is asked.
        for (kind, name) in [
            (crate::lock::LockKind::User, actor.user.as_str()),
            (crate::lock::LockKind::Host, target.name.as_str()),
        ] {
            if target.kind != TargetKind::Host && kind == crate::lock::LockKind::Host {
                continue;
            }
            if let Some(l) = self.lock_on(kind, name).await? {
                return Err(self
                    .refuse(
                        actor,
                        "request.create",
                        subject("target", &target.name),
                        l.refusal(),
                    )
                    .await);
            }
        }

        let standing = self
            .check_ticket(actor, ticket.as_deref(), &mut context)
            .await?;
        // Computed here, never taken from what a transport passed on.
        context.risk = Some(self.assess_risk(actor, &new, &context).await?);
        let Judgement {
            decision,
            max_duration_secs: max,
            ..
        } = self.judge(
            actor,
            &target,
            &role,
            &new,
            &justification,
            &task,
            &ticket,
            &context,
            now,
        );
        if new.duration_secs > max {
            return Err(Error::unprocessable(
                "duration",
                format!(
                    "{} is longer than the {} allowed for role {} on {}",
                    format_duration(new.duration_secs),
                    format_duration(max),
                    role.name,
                    target.name
                ),
            ));
        }

        // An extension: the holder's live grant of this very role, and where it would end.
        let extended = match context.extends {
            Some(id) => {
                let g = self.extendable(actor, id).await?;
                if (g.target.as_str(), g.role.as_str())
                    != (target.name.as_str(), role.name.as_str())
                {
                    return Err(Error::invalid(
                        "grant",
                        format!("grant {id} is not of role {} on {}", role.name, target.name),
                    ));
                }
                let to = self
                    .extension_until(&g, new.duration_secs, max, now)
                    .await?;
                Some((g, to))
            }
            None => None,
        };

        if let (RequestDecision::Permit(p), Some(start)) = (&decision, context.starts_at)
            && !p.allow_parallel
        {
            let end = start
                .checked_add(SignedDuration::from_secs(new.duration_secs))
                .map_err(|_| Error::invalid("duration", "is too long"))?;
            self.refuse_overlap(actor, &target.name, &role.name, start, end)
                .await?;
        }
        if let RequestDecision::Permit(p) = &decision
            && !p.allow_parallel
            && extended.is_none()
            && context.starts_at.is_none()
            && let Some((live, by)) = self
                .parallel_grant(actor, &target.name, &role.name, &new, now)
                .await?
        {
            // The holder of a live grant asks for the role again: that is asking for more
            // time on it (up to `duration` from now), decided as an extension.
            let mut new = new;
            new.duration_secs = by;
            let mut context = context;
            context.extends = Some(live);
            return Box::pin(self.create_request(actor, new, context)).await;
        }

        // A scheduled window nobody approves before it ends is moot.
        let window_end = context
            .starts_at
            .and_then(|s| {
                s.checked_add(SignedDuration::from_secs(new.duration_secs))
                    .ok()
            })
            .unwrap_or(Timestamp::MAX);
        let mut req = Request {
            id: Uuid::now_v7(),
            requester: actor.user.clone(),
            target: target.name.clone(),
            role: role.name.clone(),
            duration_secs: new.duration_secs,
            justification,
            task,
            ticket,
            context,
            state: RequestState::Pending,
            created_at: now,
            pending_until: now
                .checked_add(SignedDuration::from_secs(self.limits.pending_ttl_secs))
                .map_err(|_| Error::Internal("pending deadline overflow".into()))?
                .min(window_end),
            decided_at: None,
            decided_by: None,
            decision_reason: None,
            grant_id: None,
            approvals_required: 0,
            approval_tiers: vec![],
            policy: None,
            break_glass: new.break_glass,
            review: None,
            follow_up: None,
            version: 1,
        };
        let mut created = self
            .event(actor, "request.created", subject("request", req.id))
            .data(json!({
                "target": req.target, "role": req.role, "duration_secs": req.duration_secs,
                "justification": req.justification, "task": req.task, "ticket": req.ticket,
                "source_addr": req.context.source_addr, "break_glass": req.break_glass,
                "ticket_checked": req.context.ticket, "starts_at": req.context.starts_at,
                "via_agent": req.context.via_agent, "risk": req.context.risk,
            }));
        let (mut decision, mut delegated) = self
            .settle(actor, &target, &role.name, &new, decision, now)
            .await?;
        if let super::tickets::TicketStanding::NeedsApproval(why) = &standing {
            // Break-glass stays what it is; anything else waits for a person.
            delegated = None;
            if let RequestDecision::Permit(p) = &mut decision
                && !p.break_glass
            {
                p.auto_approve = false;
                p.reason = format!("{}; {why}", p.reason);
            }
        }
        if extended.is_some() {
            delegated = None;
            created = created.data(json!({
                "target": req.target, "role": req.role, "duration_secs": req.duration_secs,
                "justification": req.justification, "ticket": req.ticket,
                "source_addr": req.context.source_addr, "extends": req.context.extends,
                "via_agent": req.context.via_agent, "risk": req.context.risk,
            }));
        }
        if let Some((_, until)) = &delegated {
            req.duration_secs = req.duration_secs.min(until.duration_since(now).as_secs());
        }

        let mut cs = Changeset::new();
        let mut grant = None;
        match decision {
            RequestDecision::Deny { reason, policies } => {
                req.state = RequestState::Denied;
                req.decided_at = Some(now);
                req.decided_by = Some(POLICY_ACTOR.into());
                req.decision_reason = Some(reason.clone());
                req.policy = (!policies.is_empty()).then(|| policies.join(", "));
                cs = cs
                    .write(Write::InsertRequest(req.clone()))
                    .event(created)
                    .event(
                    self.event(actor, "request.denied", subject("request", req.id))
                        .outcome(Outcome::Denied)
                        .data(
                            json!({ "by": POLICY_ACTOR, "reason": reason, "policies": policies }),
                        ),
                );
            }
            RequestDecision::Permit(p) if p.auto_approve && extended.is_some() => {
                let Some((old, to)) = &extended else {
                    return Err(Error::Internal("extension without its grant".into()));
                };
                req.state = RequestState::Approved;
                req.decided_at = Some(now);
                req.decided_by = Some(POLICY_ACTOR.into());
                req.decision_reason = Some(p.reason.clone());
                req.policy = p.policy.clone();
                req.grant_id = Some(old.id);
                let (writes, extended_event) = self.extension_applied(actor, &req, old, *to);
                cs = cs.write(Write::InsertRequest(req.clone()));
                cs.writes.extend(writes);
                cs = cs
                    .event(created)
                    .event(
                        self.event(actor, "request.approved", subject("request", req.id))
                            .data(json!({ "by": POLICY_ACTOR, "reason": p.reason,
                                          "policy": p.policy, "extends": old.id })),
                    )
                    .event(extended_event);
                let mut g = old.clone();
                g.expires_at = *to;
                grant = Some(g);
            }
            RequestDecision::Permit(p)
                if p.auto_approve || p.break_glass || delegated.is_some() =>
            {
                req.state = RequestState::Approved;
                req.decided_at = Some(now);
                req.decided_by = Some(POLICY_ACTOR.into());
                req.decision_reason = Some(p.reason.clone());
                req.policy = p.policy.clone();
                req.context.while_on_call = p.while_on_call;
                if let Some((d, _)) = &delegated {
                    req.decided_by = Some(d.delegator.clone());
                    req.decision_reason = Some(format!(
                        "pre-approved by delegation {} from {}",
                        d.id, d.delegator
                    ));
                }
                if p.break_glass {
                    req.review = Some(Review {
                        state: ReviewState::Open,
                        reviewed_by: None,
                        reviewed_at: None,
                        comment: None,
                    });
                }
                let g = self.new_grant(&req, now).await?;
                req.grant_id = Some(g.id);
                let action = if p.break_glass {
                    "breakglass.granted"
                } else {
                    "request.approved"
                };
                cs = cs
                    .write(Write::InsertRequest(req.clone()))
                    .write(Write::InsertGrant(g.clone()));
                if let Some(job) = self.grant_job(&g) {
                    cs = cs.write(job);
                }
                let mut approved = json!({
                    "by": POLICY_ACTOR, "reason": p.reason, "policy": p.policy,
                });
                if let Some((d, _)) = &delegated {
                    cs = cs.write(Write::Delegation(
                        crate::delegation::DelegationWrite::LinkGrant(
                            crate::delegation::GrantLink {
                                grant_id: g.id,
                                delegation: Some(d.id),
                                parent_grant: None,
                            },
                        ),
                    ));
                    approved = json!({
                        "by": d.delegator, "reason": req.decision_reason, "policy": p.policy,
                        "delegation": d.id, "duration_secs": req.duration_secs,
                    });
                }
                cs = cs
                    .event(created)
                    .event(
                        self.event(actor, action, subject("request", req.id))
                            .data(approved),
                    )
                    .event(self.grant_started_event(actor, &g));
                grant = Some(g);
            }
            RequestDecision::Permit(p) => {
                req.approval_tiers = if p.tiers.is_empty() {
                    vec![ApprovalTier {
                        group: None,
                        required: 1,
                    }]
                } else {
                    p.tiers
                };
                req.approvals_required = req.approval_tiers.iter().map(|t| t.required).sum();
                req.policy = p.policy.clone();
                req.follow_up = p.follow_up.clone();
                req.context.while_on_call = p.while_on_call;
                req.decision_reason = Some(p.reason);
                let mut data = json!({
                    "target": req.target, "role": req.role, "duration_secs": req.duration_secs,
                    "justification": req.justification, "task": req.task, "ticket": req.ticket,
                    "source_addr": req.context.source_addr, "policy": req.policy,
                    "approval_tiers": tiers_text(&req.approval_tiers),
                    "ticket_checked": req.context.ticket, "starts_at": req.context.starts_at,
                    "via_agent": req.context.via_agent, "risk": req.context.risk,
                });
                if let Some(g) = req.context.extends {
                    data["extends"] = json!(g);
                }
                cs = cs
                    .write(Write::InsertRequest(req.clone()))
                    .event(created.data(data));
            }
        }
        let notice = match (&grant, req.break_glass) {
            (Some(g), true) => Notice::BreakGlass {
                request: Box::new(req.clone()),
                grant: Box::new(g.clone()),
            },
            (Some(g), false) if extended.is_some() => Notice::GrantExtended(g.clone()),
            (Some(g), false) => Self::grant_made(g),
            (None, _) if req.state == RequestState::Pending => Notice::RequestPending(req.clone()),
            (None, _) => Notice::RequestDecided(req.clone()),
        };
        let mut cs = cs.notice(notice);
        if let Some(r) = &req.context.risk
            && self.limits.risk_alert_score > 0
            && r.score >= self.limits.risk_alert_score
        {
            cs = cs.notice(Notice::RiskyRequest(Box::new(req.clone())));
        }
        self.commit(cs).await?;
        match (&grant, &extended) {
            (Some(g), None) => self.deadline_added(Self::grant_deadline(g)),
            (None, _) if req.state == RequestState::Pending => {
                self.deadline_added(req.pending_until)
            }
            (None, _) => {}
            // A grant's end moved: whatever the scheduler planned, it looks again.
            (Some(_), Some(_)) => self.deadline_changed.notify_one(),
        }
        self.jobs_changed.notify_one();
        if req.follow_up.is_some() {
            self.follow_ups_changed.notify_one();
        }
        Ok((req, grant))
    }

    /// A new grant for an approved request: `provisioning` (with a grant job, see
    /// `grant_job`) when its target switches its role on and off, else `active` at once; a
    /// role its provisioned target does not provision says why in `provision_detail`.
    ///
    /// A scheduled request's grant covers its window: `scheduled` (nothing in the target, no
    /// job) until the window starts; approved after the start, active at once until the
    /// window's end.
    pub(super) async fn new_grant(&self, req: &Request, now: Timestamp) -> Result<Grant> {
        let window = req.context.starts_at.unwrap_or(now);
        let expires_at = window
            .checked_add(SignedDuration::from_secs(req.duration_secs))
            .map_err(|_| Error::unprocessable("duration", "is too large"))?;
        if expires_at <= now {
            return Err(Error::Conflict(format!(
                "request {}'s window ended at {expires_at}",
                req.id
            )));
        }
        let scheduled = window > now;
        let mut g = Grant {
            id: Uuid::now_v7(),
            request_id: req.id,
            user: req.requester.clone(),
            target: req.target.clone(),
            role: req.role.clone(),
            starts_at: window.max(now),
            expires_at,
            state: if scheduled {
                GrantState::Scheduled
            } else {
                GrantState::Active
            },
            ended_at: None,
            ended_by: None,
            end_reason: None,
            provision_state: ProvisionState::Active,
            provision_detail: None,
        };
        // An external account's grant never outlives the account (refused once it has).
        self.cap_to_external_expiry(&mut g, now).await?;
        if scheduled {
            // Switched on (and provisioned) by the scheduler at the start.
            return Ok(g);
        }
        if self.provisioned(&req.target) {
            match self.provisioning.as_ref().map(|p| p.role_provisioned(&g)) {
                Some(Err(why)) => g.provision_detail = Some(format!("not provisioned: {why}")),
                _ => g.provision_state = ProvisionState::Provisioning,
            }
        }
        Ok(g)
    }

    /// `grant.started`, or `grant.scheduled` for a grant whose window starts later.
    pub(super) fn grant_started_event(&self, actor: &Actor, g: &Grant) -> NewAuditEvent {
        let mut data = json!({
            "request": g.request_id, "user": g.user, "target": g.target, "role": g.role,
            "expires_at": g.expires_at,
        });
        if let Some(d) = &g.provision_detail {
            data["provision"] = json!(d);
        }
        let action = if g.state == GrantState::Scheduled {
            data["starts_at"] = json!(g.starts_at);
            "grant.scheduled"
        } else {
            "grant.started"
        };
        self.event(actor, action, subject("grant", g.id)).data(data)
    }

    /// The scheduler's next moment for a grant just made: its start if scheduled, else its
    /// end.
    fn grant_deadline(g: &Grant) -> Timestamp {
        if g.state == GrantState::Scheduled {
            g.starts_at
        } else {
            g.expires_at
        }
    }

    /// The notice of a grant just made: started, or scheduled for later.
    pub(super) fn grant_made(g: &Grant) -> Notice {
        if g.state == GrantState::Scheduled {
            Notice::GrantScheduled(g.clone())
        } else {
            Notice::GrantStarted(g.clone())
        }
    }

    pub(super) async fn load_request(&self, id: Uuid) -> Result<Request> {
        self.store
            .request(id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("request {id}")))
    }

    /// Whether `actor` may decide `req` now, and in which tier their decision counts.
    async fn decision_tier(
        &self,
        actor: &Actor,
        req: &Request,
        approvals: &[Approval],
    ) -> Result<std::result::Result<u32, String>> {
        let found = (
            self.store.target(&req.target).await?,
            self.store.role(&req.target, &req.role).await?,
        );
        Ok(self.decision_tier_on(actor, req, approvals, found.0.as_ref(), found.1.as_ref()))
    }

    /// [`Self::decision_tier`] with the request's target and role already read.
    pub(super) fn decision_tier_on(
        &self,
        actor: &Actor,
        req: &Request,
        approvals: &[Approval],
        target: Option<&Target>,
        role: Option<&Role>,
    ) -> std::result::Result<u32, String> {
        if actor.via_agent {
            return Err(super::AGENT_HOLDS_NO_RIGHTS.into());
        }
        let (Some(target), Some(role)) = (target, role) else {
            return Err(format!("role {}/{} no longer exists", req.target, req.role));
        };
        self.decider().may_approve(actor, req, target, role)?;
        let Some(pos) = tier_position(req, approvals) else {
            return Err("every approval step is already complete".into());
        };
        // Once a request is escalated, its escalation group may decide the step it waits for.
        let escalated = req
            .follow_up
            .as_ref()
            .and_then(|f| f.escalated_to(req.created_at, self.now()))
            .is_some_and(|e| actor.groups.iter().any(|m| m == e));
        if let Some(g) = &pos.tier.group
            && !actor.groups.iter().any(|m| m == g)
            && !escalated
        {
            return Err(format!(
                "approval step {} needs a member of group {g}; {} is not one",
                pos.index + 1,
                actor.user
            ));
        }
        Ok(pos.index)
    }

    /// Requesters see their own requests, approvers the ones they may decide, auditors all.
    pub async fn get_request(&self, actor: &Actor, id: Uuid) -> Result<(Request, Vec<Approval>)> {
        let req = self.load_request(id).await?;
        let approvals = self.store.approvals(id).await?;
        let visible = req.requester == actor.user
            || self.holds(actor, AdminAction::ReadAudit)
            || approvals.iter().any(|a| a.approver == actor.user)
            || (req.state == RequestState::Pending
                && self.decision_tier(actor, &req, &approvals).await?.is_ok());
        if !visible {
            return Err(self
                .refuse(
                    actor,
                    "request.read",
                    subject("request", id),
                    format!("request {id} belongs to another user"),
                )
                .await);
        }
        Ok((req, approvals))
    }

    pub async fn list_requests(
        &self,
        actor: &Actor,
        mut filter: RequestFilter,
    ) -> Result<Vec<Request>> {
        if !self.holds(actor, AdminAction::ReadAudit) {
            match &filter.requester {
                Some(r) if *r != actor.user => {
                    return Err(self
                        .refuse(
                            actor,
                            "request.list",
                            None,
                            format!("only admins may list requests of {r}"),
                        )
                        .await);
                }
                _ => filter.requester = Some(actor.user.clone()),
            }
        }
        Ok(self.store.requests(&filter).await?)
    }

    /// Every pending request, oldest first: an admin's or auditor's "view all pending"
    /// (`read_audit`). Refused, and recorded, for anyone else.
    pub async fn all_pending(&self, actor: &Actor) -> Result<Vec<Request>> {
        if !self.holds(actor, AdminAction::ReadAudit) {
            return Err(self
                .refuse(
                    actor,
                    "request.list",
                    None,
                    "only admins and auditors may view every pending request".into(),
                )
                .await);
        }
        let mut pending = self
            .store
            .requests(&RequestFilter {
                state: Some(RequestState::Pending),
                ..Default::default()
            })
            .await?;
        pending.sort_by_key(|r| r.created_at);
        Ok(pending)
    }

    /// Every pending request and the approvals each has, in two queries (not one per
    /// request).
    pub(super) async fn pending_with_approvals(
        &self,
    ) -> Result<(Vec<Request>, HashMap<Uuid, Vec<Approval>>)> {
        let pending = self
            .store
            .requests(&RequestFilter {
                state: Some(RequestState::Pending),
                ..Default::default()
            })
            .await?;
        let mut approvals_of: HashMap<Uuid, Vec<Approval>> = HashMap::new();
        for a in self.store.pending_approvals().await? {
            approvals_of.entry(a.request_id).or_default().push(a);
        }
        Ok((pending, approvals_of))
    }

    /// Pending requests that `actor` may approve or deny right now (their current tier).
    /// Every pending request `actor` may decide now, newest first. All pending requests are
    /// read (they expire after `limits.pending_ttl`, so they stay bounded): a cap here would
    /// drop the oldest, the ones waiting longest.
    pub async fn approvable_requests(&self, actor: &Actor) -> Result<Vec<Request>> {
        let (pending, mut approvals_of) = self.pending_with_approvals().await?;
        let mut out = vec![];
        // Many pending requests share a few roles: each is read once.
        let mut roles: HashMap<(String, String), (Option<Target>, Option<Role>)> = HashMap::new();
        for req in pending {
            if req.requester == actor.user {
                continue;
            }
            let approvals = approvals_of.remove(&req.id).unwrap_or_default();
            if approvals.iter().any(|a| a.approver == actor.user) {
                continue;
            }
            let key = (req.target.clone(), req.role.clone());
            if !roles.contains_key(&key) {
                let found = (
                    self.store.target(&req.target).await?,
                    self.store.role(&req.target, &req.role).await?,
                );
                roles.insert(key.clone(), found);
            }
            let (target, role) = &roles[&key];
            if self
                .decision_tier_on(actor, &req, &approvals, target.as_ref(), role.as_ref())
                .is_ok()
            {
                out.push(req);
            }
        }
        Ok(out)
    }

    pub async fn cancel_request(
        &self,
        actor: &Actor,
        id: Uuid,
        reason: Option<String>,
    ) -> Result<Request> {
        let reason = trimmed("reason", reason, 500)?;
        let mut req = self.load_request(id).await?;
        if req.requester != actor.user {
            return Err(self
                .refuse(
                    actor,
                    "request.cancel",
                    subject("request", id),
                    format!("only the requester may cancel request {id}"),
                )
                .await);
        }
        if req.state != RequestState::Pending {
            return Err(Error::Conflict(format!(
                "request {id} is {}, only pending requests can be cancelled",
                req.state
            )));
        }
        let now = self.now();
        req.state = RequestState::Cancelled;
        req.decided_at = Some(now);
        req.decided_by = Some(actor.user.clone());
        req.decision_reason = reason.clone();
        req.version += 1;
        let cs = Changeset::new()
            .write(Write::UpdateRequest(req.clone()))
            .event(
                self.event(actor, "request.cancelled", subject("request", id))
                    .data(json!({ "reason": reason })),
            );
        self.commit(cs.notice(Notice::RequestDecided(req.clone())))
            .await
            .map_err(|e| concurrent(e, id))?;
        Ok(req)
    }

    /// Records one approver's decision. Completing the last tier grants the request; a denial
    /// by an eligible approver ends it.
    pub async fn decide_request(
        &self,
        actor: &Actor,
        id: Uuid,
        decision: ApprovalDecision,
        comment: Option<String>,
    ) -> Result<(Request, Option<Grant>)> {
        let comment = trimmed("comment", comment, 1000)?;
        if decision == ApprovalDecision::Deny && comment.is_none() {
            return Err(Error::invalid(
                "comment",
                "is required when denying: say why",
            ));
        }
        let mut req = self.load_request(id).await?;
        let action = match decision {
            ApprovalDecision::Approve => "request.approve",
            ApprovalDecision::Deny => "request.deny",
        };
        if req.requester == actor.user {
            return Err(self
                .refuse(
                    actor,
                    action,
                    subject("request", id),
                    format!("{} cannot {} their own request", actor.user, decision),
                )
                .await);
        }
        if req.state != RequestState::Pending {
            return Err(Error::Conflict(format!(
                "request {id} is already {}, not pending",
                req.state
            )));
        }
        let approvals = self.store.approvals(id).await?;
        if approvals.iter().any(|a| a.approver == actor.user) {
            return Err(Error::Conflict(format!(
                "{} has already decided request {id}",
                actor.user
            )));
        }
        if tier_position(&req, &approvals).is_none() {
            // Another approver completed the last step after we read the request.
            return Err(Error::Conflict(format!(
                "request {id} was decided by someone else at the same moment"
            )));
        }
        let tier = match self.decision_tier(actor, &req, &approvals).await? {
            Ok(t) => t,
            Err(why) => {
                return Err(self
                    .refuse(actor, action, subject("request", id), why)
                    .await);
            }
        };
        let now = self.now();
        let approval = Approval {
            request_id: id,
            tier,
            approver: actor.user.clone(),
            decision,
            comment: comment.clone(),
            at: now,
        };
        req.version += 1;
        let mut all = approvals.clone();
        all.push(approval.clone());
        let mut events = vec![];
        let mut grant = None;
        let mut extension = None;
        match decision {
            ApprovalDecision::Deny => {
                req.state = RequestState::Denied;
                req.decided_at = Some(now);
                req.decided_by = Some(actor.user.clone());
                req.decision_reason = comment.clone();
                events.push(
                    self.event(actor, "request.denied", subject("request", id))
                        .data(json!({ "by": actor.user, "comment": comment, "tier": tier + 1 })),
                );
            }
            ApprovalDecision::Approve => {
                let approved = all
                    .iter()
                    .filter(|a| a.decision == ApprovalDecision::Approve)
                    .count();
                events.push(
                    self.event(actor, "request.approval_recorded", subject("request", id))
                        .data(json!({
                            "by": actor.user, "comment": comment, "tier": tier + 1,
                            "approvals": approved, "required": req.approvals_required,
                        })),
                );
                if tier_position(&req, &all).is_none() {
                    req.state = RequestState::Approved;
                    req.decided_at = Some(now);
                    req.decided_by = Some(actor.user.clone());
                    req.decision_reason = comment.clone();
                    if let Some(step) = &req.context.step_up {
                        // The held exec runs (its host learns it); no grant is made.
                        events.push(
                            self.event(actor, "request.approved", subject("request", id))
                                .data(json!({
                                    "by": actor.user, "step_up": true,
                                    "grant": step.exec.grant, "session": step.exec.session,
                                })),
                        );
                    } else if let Some(extends) = req.context.extends {
                        // The grant's expiry moves; its privilege stays where it is.
                        let (old, to) = self.approved_extension(&req, extends, now).await?;
                        req.grant_id = Some(old.id);
                        events.push(
                            self.event(actor, "request.approved", subject("request", id))
                                .data(json!({ "by": actor.user, "extends": old.id })),
                        );
                        let (write, ev) = self.extension_applied(actor, &req, &old, to);
                        events.push(ev);
                        let mut g = old;
                        g.expires_at = to;
                        extension = Some((write, g));
                    } else {
                        let g = self.new_grant(&req, now).await?;
                        req.grant_id = Some(g.id);
                        events.push(
                            self.event(actor, "request.approved", subject("request", id))
                                .data(json!({ "by": actor.user })),
                        );
                        events.push(self.grant_started_event(actor, &g));
                        grant = Some(g);
                    }
                }
            }
        }
        // The version check on the request comes first: of concurrent deciders exactly one
        // commits, the rest get a conflict.
        let mut cs = Changeset::new()
            .write(Write::UpdateRequest(req.clone()))
            .write(Write::InsertApproval(approval));
        if let Some(g) = &grant {
            cs = cs.write(Write::InsertGrant(g.clone()));
            if let Some(job) = self.grant_job(g) {
                cs = cs.write(job);
            }
        }
        if let Some((writes, _)) = &extension {
            cs.writes.extend(writes.iter().cloned());
        }
        cs.events = events;
        cs.notices = match (&extension, &grant) {
            (Some((_, g)), _) => vec![
                Notice::RequestDecided(req.clone()),
                Notice::GrantExtended(g.clone()),
            ],
            (None, Some(g)) => vec![Notice::RequestDecided(req.clone()), Self::grant_made(g)],
            (None, None) if matches!(req.state, RequestState::Denied | RequestState::Approved) => {
                vec![Notice::RequestDecided(req.clone())]
            }
            // The next tier's approvers have something to do.
            (None, None) => vec![Notice::RequestPending(req.clone())],
        };
        self.commit(cs).await.map_err(|e| concurrent(e, id))?;
        if let Some((_, g)) = extension {
            self.deadline_changed.notify_one();
            self.jobs_changed.notify_one();
            return Ok((req, Some(g)));
        }
        if let Some(g) = &grant {
            self.deadline_added(Self::grant_deadline(g));
            self.jobs_changed.notify_one();
        }
        Ok((req, grant))
    }

    /// Break-glass grants that nobody has reviewed yet (or all of them).
    pub async fn break_glass_requests(
        &self,
        actor: &Actor,
        open_only: bool,
    ) -> Result<Vec<Request>> {
        self.require_admin(actor, AdminAction::ManageGrants, "breakglass.list")
            .await?;
        let mut all = self
            .store
            .requests(&RequestFilter {
                review: open_only.then_some(ReviewState::Open),
                ..Default::default()
            })
            .await?;
        all.retain(|r| r.break_glass && r.review.is_some());
        Ok(all)
    }

    /// Closes the after-the-fact review of a break-glass grant. Never by the one who used it.
    pub async fn review_break_glass(
        &self,
        actor: &Actor,
        id: Uuid,
        comment: Option<String>,
    ) -> Result<Request> {
        let comment = trimmed("comment", comment, 2000)?;
        self.require_admin(actor, AdminAction::ManageGrants, "breakglass.review")
            .await?;
        let mut req = self.load_request(id).await?;
        if !req.break_glass || req.review.is_none() {
            return Err(Error::Conflict(format!(
                "request {id} is not a break-glass grant"
            )));
        }
        if req.requester == actor.user {
            return Err(self
                .refuse(
                    actor,
                    "breakglass.review",
                    subject("request", id),
                    format!("{} cannot review their own break-glass access", actor.user),
                )
                .await);
        }
        if req
            .review
            .as_ref()
            .is_some_and(|r| r.state == ReviewState::Closed)
        {
            return Err(Error::Conflict(format!(
                "break-glass request {id} is already reviewed"
            )));
        }
        let Some(comment) = comment else {
            return Err(Error::invalid(
                "comment",
                "is required: record what the review found",
            ));
        };
        let now = self.now();
        req.review = Some(Review {
            state: ReviewState::Closed,
            reviewed_by: Some(actor.user.clone()),
            reviewed_at: Some(now),
            comment: Some(comment.clone()),
        });
        req.version += 1;
        let cs = Changeset::new()
            .write(Write::UpdateRequest(req.clone()))
            .event(
                self.event(actor, "breakglass.reviewed", subject("request", id))
                    .data(json!({ "comment": comment, "requester": req.requester })),
            );
        self.store.commit(cs).await.map_err(|e| concurrent(e, id))?;
        Ok(req)
    }
}
