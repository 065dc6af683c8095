//! Step-up approval: an exec that a session's grant does not allow but an `@step_up` policy
//! makes approvable is held at its `execve` by the host agent, which asks for it here. It
//! becomes a request of its own (the holder's, for the grant's target and role) that goes to
//! approvers like any other; approving it lets that one exec run and makes no grant.

use super::hosts::{check_argv, host_actor};
use super::requests::tiers_text;
use super::*;
use crate::decision::ExecCommand;
use crate::lock::LockKind;

impl ControlPlane {
    /// Host `host` asks approval for an exec held in a session of grant `ask.grant`: the
    /// server's own policy must agree it is approvable (the agent's word is not taken for
    /// it), the grant must be this host's and in force, and neither its holder nor the host
    /// locked. Returns the pending request approvers now see.
    pub async fn request_step_up(&self, host: &str, ask: HeldExec) -> Result<Request> {
        let agent = host_actor(host);
        check_argv(&ask.argv)?;
        if ask.argv.is_empty() {
            return Err(Error::invalid("argv", "is empty"));
        }
        if !ask.path.starts_with('/') || ask.path.len() > 4096 || ask.path.contains('\0') {
            return Err(Error::invalid("path", "must be an absolute path"));
        }
        if ask.cwd.len() > 4096 || ask.cwd.contains('\0') {
            return Err(Error::invalid(
                "cwd",
                "is longer than 4096 bytes or holds NUL",
            ));
        }
        let now = self.now();
        let refused = |why: String| {
            self.refuse(
                &agent,
                "session.step_up",
                subject("session", ask.session),
                why,
            )
        };
        let grant = match self.store.grant(ask.grant).await? {
            Some(g) => g.as_of(now),
            None => return Err(refused(format!("grant {} does not exist", ask.grant)).await),
        };
        if grant.target != host {
            return Err(refused(format!(
                "grant {} is for {}, not for host {host}",
                grant.id, grant.target
            ))
            .await);
        }
        if grant.state != GrantState::Active || grant.provision_state != ProvisionState::Active {
            return Err(refused(format!("grant {} is not in force", grant.id)).await);
        }
        for (kind, name) in [
            (LockKind::User, grant.user.as_str()),
            (LockKind::Host, host),
        ] {
            if let Some(l) = self.lock_on(kind, name).await? {
                return Err(refused(l.refusal()).await);
            }
        }
        let (Some(target), Some(role), Some(user)) = (
            self.store.target(&grant.target).await?,
            self.store.role(&grant.target, &grant.role).await?,
            self.store.user(&grant.user).await?,
        ) else {
            return Err(refused(format!(
                "grant {}: its user, target or role is gone",
                grant.id
            ))
            .await);
        };
        let holder = self.actor_of(&user).await?;
        let remaining = grant.expires_at.duration_since(now).as_secs().max(1);
        let command = ExecCommand {
            path: ask.path.clone(),
            args: ask.argv.get(1..).unwrap_or_default().join(" "),
            sha256: ask.sha256.clone(),
            shell: ask.shell,
            cwd: Some(ask.cwd.clone()),
        };
        let terms = match self
            .decider()
            .step_up(&holder, &target, &role, &command, remaining)
        {
            Ok(t) if !t.tiers.is_empty() => t,
            Ok(_) => return Err(refused("a step-up policy asked for no approval".into()).await),
            Err(why) => return Err(refused(why).await),
        };
        let joined = ask.argv.join(" ");
        let shown = crate::text::terminal_safe(&joined);
        let mut justification = format!("step-up in session {}: {shown}", ask.session);
        if let Some((cut, _)) = justification
            .char_indices()
            .nth(self.limits.max_justification_chars)
        {
            justification.truncate(cut);
        }
        let wait = self.limits.step_up_wait_secs.min(remaining);
        let req = Request {
            id: Uuid::now_v7(),
            requester: grant.user.clone(),
            target: grant.target.clone(),
            role: grant.role.clone(),
            duration_secs: remaining,
            justification,
            task: None,
            ticket: None,
            context: RequestContext {
                source_addr: None,
                device: Default::default(),
                step_up: Some(StepUp {
                    exec: ask.clone(),
                    policies: terms.policies.clone(),
                }),
                extends: None,
                starts_at: None,
                ticket: None,
                via_agent: false,
                while_on_call: false,
                risk: None,
            },
            state: RequestState::Pending,
            created_at: now,
            pending_until: now
                .checked_add(SignedDuration::from_secs(wait))
                .map_err(|_| Error::Internal("pending deadline overflow".into()))?,
            decided_at: None,
            decided_by: None,
            decision_reason: None,
            grant_id: None,
            approvals_required: terms.tiers.iter().map(|t| t.required).sum(),
            approval_tiers: terms.tiers.clone(),
            policy: terms.policies.first().cloned(),
            break_glass: false,
            review: None,
            follow_up: None,
            version: 1,
        };
        let cs = Changeset::new()
            .write(Write::InsertRequest(req.clone()))
            .event(
                self.event(&agent, "request.created", subject("request", req.id))
                    .data(json!({
                        "target": req.target, "role": req.role, "requester": req.requester,
                        "step_up": {
                            "grant": grant.id, "session": ask.session, "argv": ask.argv,
                            "path": ask.path, "sha256": ask.sha256, "cwd": ask.cwd,
                            "pid": ask.pid, "policies": terms.policies,
                        },
                        "approvals": tiers_text(&req.approval_tiers),
                    })),
            );
        self.commit(cs.notice(Notice::RequestPending(req.clone())))
            .await?;
        Ok(req)
    }

    /// A step-up request as it stands, for the host that asked for it.
    pub async fn step_up_state(&self, host: &str, id: Uuid) -> Result<Request> {
        let req = self.load_request(id).await?;
        if req.context.step_up.is_none() || req.target != host {
            return Err(self
                .refuse(
                    &host_actor(host),
                    "session.step_up",
                    subject("request", id),
                    format!("request {id} is not a step-up asked by host {host}"),
                )
                .await);
        }
        Ok(req)
    }
}
