//! Peer delegation: the holder of an active grant hands it on to a colleague, for part of its
//! remaining time, where policy allows; the colleague's grant ends with the holder's.

use super::*;
use crate::decision::Delegable;
use crate::delegation::{DelegationWrite, GrantLink};

impl ControlPlane {
    /// The holder of an active grant hands it on to a colleague for part of its remaining
    /// time, where policy lets the holder `delegate` the role (and lets the colleague request
    /// it: a forbid still wins). The colleague's grant ends no later than the holder's, and
    /// with it.
    pub async fn delegate_grant(
        &self,
        actor: &Actor,
        id: Uuid,
        to: &str,
        duration_secs: i64,
        reason: Option<String>,
    ) -> Result<Grant> {
        let reason = trimmed("reason", reason, 500)?;
        validate_name("user", to)?;
        if duration_secs <= 0 {
            return Err(Error::invalid("duration", "must be greater than zero"));
        }
        let parent = self.load_grant(id).await?;
        let asked = json!({ "grant": id, "to": to, "duration_secs": duration_secs });
        let refuse = |why: String| {
            self.refuse_delegation(
                actor,
                "grant.delegate",
                subject("grant", id),
                why,
                asked.clone(),
            )
        };
        if parent.user != actor.user {
            return Err(refuse(format!("only the holder may hand on grant {id}")).await);
        }
        let now = self.now();
        if parent.state != GrantState::Active || parent.expires_at <= now {
            return Err(Error::Conflict(format!("grant {id} is not active")));
        }
        if to == actor.user {
            return Err(Error::unprocessable("to", "you already hold this grant"));
        }
        let colleague = match self.store.user(to).await? {
            Some(u) if !u.disabled => u,
            Some(_) => return Err(Error::unprocessable("to", format!("user {to} is disabled"))),
            None => return Err(Error::NotFound(format!("user {to}"))),
        };
        let target = self.load_target(&parent.target).await?;
        let role = self
            .store
            .role(&parent.target, &parent.role)
            .await?
            .ok_or_else(|| {
                Error::NotFound(format!("role {} on target {}", parent.role, parent.target))
            })?;
        let left = parent.expires_at.duration_since(now).as_secs();
        let secs = duration_secs.min(left);
        if secs < 1 {
            return Err(Error::Conflict(format!(
                "grant {id} ends in less than a second"
            )));
        }
        let max = role.max_duration_secs.min(self.limits.max_duration_secs);
        if duration_secs > max {
            return Err(Error::unprocessable(
                "duration",
                format!(
                    "{} is longer than the {} allowed for role {} on {}",
                    format_duration(duration_secs),
                    format_duration(max),
                    role.name,
                    target.name
                ),
            ));
        }
        if let Err(why) = self
            .decider()
            .may_delegate(actor, &target, Delegable::Role(&role), secs)
        {
            return Err(refuse(why).await);
        }
        // The colleague gets it only if policy would let them ask for it (a forbid wins).
        let them = self.actor_of(&colleague).await?;
        let justification = reason
            .clone()
            .unwrap_or_else(|| format!("handed on by {} from grant {id}", actor.user));
        let no_device = BTreeMap::new();
        if let RequestDecision::Deny { reason: why, .. } =
            self.decider().decide_request(&RequestInput {
                principal: &them,
                target: &target,
                role: &role,
                duration_secs: secs,
                justification: &justification,
                task: None,
                ticket: None,
                source_addr: None,
                device: &no_device,
                break_glass: false,
                extension: false,
                starts_in_secs: 0,
                ticket_facts: None,
                via_agent: false,
                risk: 0,
                now,
            })
        {
            return Err(refuse(format!(
                "policy does not let {to} hold {}/{}: {why}",
                target.name, role.name
            ))
            .await);
        }

        let req = Request {
            id: Uuid::now_v7(),
            requester: to.to_string(),
            target: target.name.clone(),
            role: role.name.clone(),
            duration_secs: secs,
            justification,
            task: None,
            ticket: None,
            context: RequestContext::default(),
            state: RequestState::Approved,
            created_at: now,
            pending_until: now,
            decided_at: Some(now),
            decided_by: Some(actor.user.clone()),
            decision_reason: Some(format!("handed on by {} from grant {id}", actor.user)),
            grant_id: None,
            approvals_required: 0,
            approval_tiers: vec![],
            policy: None,
            break_glass: false,
            review: None,
            follow_up: None,
            version: 1,
        };
        let mut req = req;
        let g = self.new_grant(&req, now).await?;
        req.grant_id = Some(g.id);
        let mut cs = Changeset::new()
            .write(Write::InsertRequest(req.clone()))
            .write(Write::InsertGrant(g.clone()));
        if let Some(job) = self.grant_job(&g) {
            cs = cs.write(job);
        }
        cs = cs
            .write(Write::Delegation(DelegationWrite::LinkGrant(GrantLink {
                grant_id: g.id,
                delegation: None,
                parent_grant: Some(id),
            })))
            .event(
                self.event(actor, "grant.delegated", subject("grant", id))
                    .data(json!({
                        "parent_grant": id, "grant": g.id, "request": req.id, "to": to,
                        "target": g.target, "role": g.role, "expires_at": g.expires_at,
                        "parent_expires_at": parent.expires_at, "reason": reason,
                    })),
            )
            .event(
                self.event(actor, "grant.started", subject("grant", g.id))
                    .data(json!({
                        "request": req.id, "user": g.user, "target": g.target, "role": g.role,
                        "expires_at": g.expires_at, "parent_grant": id,
                    })),
            )
            .notice(Notice::GrantStarted(g.clone()));
        self.commit(cs).await.map_err(|e| match e {
            // The parent grant is gone at the same moment.
            StoreError::NotFound(m) => Error::Conflict(m),
            e => e.into(),
        })?;
        // The parent may have ended between our read and the commit: end the new one with it.
        if let Some(p) = self.store.grant(id).await?
            && p.state != GrantState::Active
        {
            let g = self
                .end_grant(
                    &Actor::system(),
                    g,
                    GrantState::Revoked,
                    Some(format!("grant {id} it was handed on from ended")),
                )
                .await?;
            return Err(Error::Conflict(format!(
                "grant {id} ended while it was being handed on (grant {} ended too)",
                g.id
            )));
        }
        self.deadline_changed.notify_one();
        self.jobs_changed.notify_one();
        Ok(g)
    }
}
