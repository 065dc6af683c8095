//! Extending a live grant (`pedm grant extend ID --by 30m`): the holder asks, policy decides
//! as for any request of that role (`context.extension` is true and `duration_secs` is the
//! extension), approvers approve as usual, and on approval the grant's expiry moves. The
//! privilege stays in the target the whole time: nothing is taken away and given back, the
//! grant keeps its id, and the scheduler simply finds a later deadline.
//!
//! Bounds: the extension itself is within the role's (and the policy's, and the server's)
//! maximum, and so is the time left after it — nobody holds more of a role ahead of them
//! than one request could give. Delegations do not pre-approve extensions.

use super::{ControlPlane, NewRequest, Result, subject};
use crate::Error;
use crate::audit::{NewAuditEvent, Outcome};
use crate::duration::format_duration;
use crate::model::*;
use crate::store::{Changeset, Write};
use jiff::{SignedDuration, Timestamp};
use serde_json::json;
use uuid::Uuid;

impl ControlPlane {
    /// Asks to lengthen the caller's active grant by `by_secs`: a request that policy
    /// decides at once (granted: the grant is returned with its new expiry) or that waits for
    /// approvers like any other.
    pub async fn extend_grant(
        &self,
        actor: &Actor,
        grant_id: Uuid,
        by_secs: i64,
        justification: String,
        ticket: Option<String>,
        mut context: RequestContext,
    ) -> Result<(Request, Option<Grant>)> {
        let g = self.extendable(actor, grant_id).await?;
        let pending = self
            .store
            .requests(&RequestFilter {
                requester: Some(actor.user.clone()),
                state: Some(RequestState::Pending),
                ..Default::default()
            })
            .await?;
        if let Some(p) = pending.iter().find(|r| r.context.extends == Some(g.id)) {
            return Err(Error::Conflict(format!(
                "request {} to extend grant {} is already waiting for approval",
                p.id, g.id
            )));
        }
        context.extends = Some(g.id);
        let new = NewRequest {
            target: g.target,
            role: g.role,
            duration_secs: by_secs,
            justification,
            task: None,
            ticket,
            break_glass: false,
            starts_at: None,
        };
        self.create_request(actor, new, context).await
    }

    /// The caller's grant, if it is theirs and active; a refusal is recorded.
    pub(super) async fn extendable(&self, actor: &Actor, grant_id: Uuid) -> Result<Grant> {
        let g = self
            .store
            .grant(grant_id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("grant {grant_id}")))?
            .as_of(self.now());
        if g.user != actor.user {
            return Err(self
                .refuse(
                    actor,
                    "grant.extend",
                    subject("grant", g.id),
                    format!(
                        "grant {} is held by {}: only its holder may ask to extend it",
                        g.id, g.user
                    ),
                )
                .await);
        }
        if g.state != GrantState::Active {
            return Err(Error::Conflict(format!(
                "grant {} is {}: only an active grant can be extended",
                g.id, g.state
            )));
        }
        Ok(g)
    }

    /// Where an extension by `by_secs` moves `g`'s expiry: refused (422) when more than `max`
    /// would then lie ahead; capped at an external account's own expiry.
    pub(super) async fn extension_until(
        &self,
        g: &Grant,
        by_secs: i64,
        max_secs: i64,
        now: Timestamp,
    ) -> Result<Timestamp> {
        let to = g
            .expires_at
            .checked_add(SignedDuration::from_secs(by_secs))
            .map_err(|_| Error::invalid("duration", "is too long"))?;
        let ahead = to.duration_since(now).as_secs();
        if ahead > max_secs {
            return Err(Error::unprocessable(
                "duration",
                format!(
                    "extending by {} would leave {} of {} on {} ahead, more than the {} allowed",
                    format_duration(by_secs),
                    format_duration(ahead),
                    g.role,
                    g.target,
                    format_duration(max_secs)
                ),
            ));
        }
        let mut capped = g.clone();
        capped.expires_at = to;
        self.cap_to_external_expiry(&mut capped, now).await?;
        Ok(capped.expires_at)
    }

    /// The writes and the event that move an approved extension's grant to `to`: the grant's
    /// expiry, and an `extend` job where the target keeps the end of its own (the privilege
    /// itself stays in place).
    pub(super) fn extension_applied(
        &self,
        actor: &Actor,
        req: &Request,
        g: &Grant,
        to: Timestamp,
    ) -> (Vec<Write>, NewAuditEvent) {
        let mut writes = vec![Write::ExtendGrant {
            id: g.id,
            from: g.expires_at,
            to,
        }];
        let switched_on = matches!(
            g.provision_state,
            ProvisionState::Active | ProvisionState::Provisioning
        );
        if switched_on
            && self.provisioned(&g.target)
            && self
                .provisioning
                .as_ref()
                .is_some_and(|p| p.keeps_expiry(g))
        {
            writes.push(Write::InsertJob(self.new_job(
                g.id,
                ProvisionAction::Extend,
                self.now(),
            )));
        }
        (
            writes,
            self.event(actor, "grant.extended", subject("grant", g.id))
                .data(json!({
                    "request": req.id, "user": g.user, "target": g.target, "role": g.role,
                    "from": g.expires_at, "to": to, "by_secs": to.duration_since(g.expires_at).as_secs(),
                })),
        )
    }

    /// For an approver's final approval of an extension request: the grant (still active)
    /// and its new expiry under the role's bounds as they are now.
    pub(super) async fn approved_extension(
        &self,
        req: &Request,
        grant_id: Uuid,
        now: Timestamp,
    ) -> Result<(Grant, Timestamp)> {
        let g = self
            .store
            .grant(grant_id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("grant {grant_id}")))?
            .as_of(now);
        if g.state != GrantState::Active {
            return Err(Error::Conflict(format!(
                "grant {} ended ({}) before this extension was approved",
                g.id, g.state
            )));
        }
        let (_, role) = self.target_and_role(&req.target, &req.role).await?;
        let max = role.max_duration_secs.min(self.limits.max_duration_secs);
        let to = self
            .extension_until(&g, req.duration_secs, max, now)
            .await?;
        Ok((g, to))
    }

    /// A request for a role the requester already holds live on the target (two live grants
    /// of one privilege would be a second, independent life of it; a permit with
    /// `@allow_parallel("true")` allows that): the grant and by how much it must be extended
    /// to last the requested duration from now. Refused (a denied `request.create` event,
    /// naming the grant) when the grant already lasts that long, or for break-glass.
    pub(super) async fn parallel_grant(
        &self,
        actor: &Actor,
        target: &str,
        role: &str,
        new: &NewRequest,
        now: Timestamp,
    ) -> Result<Option<(Uuid, i64)>> {
        let live = self
            .store
            .grants(&GrantFilter {
                user: Some(actor.user.clone()),
                target: Some(target.to_string()),
                state: Some(GrantState::Active),
                limit: Some(1000),
                held_between: None,
            })
            .await?;
        let Some(g) = live
            .iter()
            .find(|g| g.role == role && g.state == GrantState::Active)
        else {
            return Ok(None);
        };
        let by = now
            .checked_add(SignedDuration::from_secs(new.duration_secs))
            .map_err(|_| Error::invalid("duration", "is too long"))?
            .duration_since(g.expires_at)
            .as_secs();
        if by > 0 && !new.break_glass {
            return Ok(Some((g.id, by)));
        }
        let why = format!(
            "you already hold role {role} on {target} through grant {} (until {}), as long as \
             you asked for: use that grant (`pedm grant extend {}` lengthens it); a policy may \
             allow parallel grants with @allow_parallel(\"true\") on its permit",
            g.id, g.expires_at, g.id
        );
        let ev = self
            .event(actor, "request.create", subject("grant", g.id))
            .outcome(Outcome::Denied)
            .data(json!({ "reason": why, "target": target, "role": role, "grant": g.id }));
        self.store.commit(Changeset::new().event(ev)).await?;
        Err(Error::Conflict(why))
    }
}
