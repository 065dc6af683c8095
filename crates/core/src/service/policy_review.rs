//! Two-person control of policy changes (see [`crate::policy_review`]): with
//! `policy_approvals` = N > 0 a submitted set becomes a pending proposal; N admins other than
//! its author approve it, and the last approval puts it in force through the same path as a
//! direct apply ([`ControlPlane::put_in_force`]), in the same transaction as that approval.

use super::policy::{diff, digest};
use super::*;
use crate::policy_review::{
    ApproverChange, PolicyProposal, PolicyReviewWrite, ProposalApproval, ProposalState,
};

/// Attempts when a concurrent approval or apply changed the proposal under us.
const ATTEMPTS: usize = 5;

/// What submitting a policy set did.
#[derive(Debug, Clone)]
pub enum PolicySubmission {
    /// In force now (or it was already: same digest).
    Applied(PolicyVersion),
    /// Stored as a proposal waiting for approvals.
    Pending(Box<PolicyProposal>),
}

/// What asking for a change that two-person control may hold did.
#[derive(Debug, Clone)]
pub enum Held<T> {
    /// Done now.
    Done(T),
    /// Held as a proposal until enough other admins approve it.
    Pending(Box<PolicyProposal>),
}

fn proposal_subject(id: i64) -> Option<String> {
    subject("policy-proposal", id)
}

impl ControlPlane {
    /// Tells approvers how a proposal stands. The notice shows the proposal as read back
    /// after its change, so it goes to the outbox in a transaction of its own right after
    /// that change (a crash in between loses this notice; the audit event stays).
    async fn tell(&self, step: &'static str, actor: &Actor, proposal: &PolicyProposal) {
        let n = crate::notice::Notice::PolicyProposal {
            step: step.to_string(),
            actor: actor.user.clone(),
            proposal: Box::new(proposal.clone()),
        };
        if let Err(e) = self.commit(Changeset::new().notice(n)).await {
            tracing::error!(error = %e, proposal = proposal.id, "could not write a policy proposal notice");
        }
    }

    /// Policy changes need `n` approvals by admins other than their author (0: applied at
    /// once, the default).
    pub fn with_policy_approvals(mut self, n: u32) -> Self {
        self.policy_approvals = i64::from(n);
        self
    }

    pub fn policy_approvals_required(&self) -> i64 {
        self.policy_approvals
    }

    /// Records a refused attempt as a `denied` event and returns `err`.
    async fn refuse_with(
        &self,
        actor: &Actor,
        action: &str,
        id: i64,
        why: String,
        err: Error,
    ) -> Error {
        let ev = self
            .event(actor, action, proposal_subject(id))
            .outcome(Outcome::Denied)
            .data(json!({ "reason": why, "proposal": id }));
        if let Err(e) = self.store.commit(Changeset::new().event(ev)).await {
            tracing::error!(error = %e, "could not record a refused attempt");
        }
        err
    }

    /// Applies the set at once when no approvals are required; otherwise validates it exactly
    /// as an apply would (a broken set is refused now) and stores it as a proposal on top of
    /// the version in force (`policy.proposed`, with the diff). Submitting the set in force
    /// changes nothing; submitting a set that already waits on the same base returns that
    /// proposal.
    pub async fn submit_policies(
        &self,
        actor: &Actor,
        sources: Vec<PolicySource>,
        comment: Option<String>,
    ) -> Result<PolicySubmission> {
        if self.policy_approvals == 0 {
            return Ok(PolicySubmission::Applied(
                self.apply_policies(actor, sources, comment).await?,
            ));
        }
        let (sources, comment, _candidate) = self.vet_policy_set(actor, sources, comment).await?;
        let current = self.store.policy_version(None).await?;
        let d = digest(&sources);
        if let Some(cur) = &current
            && cur.digest == d
        {
            return Ok(PolicySubmission::Applied(cur.clone()));
        }
        let base_version = current.as_ref().map_or(0, |c| c.version);
        if let Some(same) = self
            .store
            .policy_proposals(Some(ProposalState::Pending))
            .await?
            .into_iter()
            .find(|p| p.digest == d && p.base_version == base_version)
        {
            return Ok(PolicySubmission::Pending(Box::new(same)));
        }
        let old = current.map(|c| c.sources).unwrap_or_default();
        let p = self.new_proposal(
            actor,
            base_version,
            &old,
            sources,
            comment,
            self.policy_approvals,
        );
        self.store_proposal(actor, p, &|_| vec![]).await
    }

    /// A pending proposal of `sources` on top of version `base_version` (whose sources are
    /// `old`), needing `required` approvals; numbered when stored.
    pub(super) fn new_proposal(
        &self,
        actor: &Actor,
        base_version: i64,
        old: &[PolicySource],
        sources: Vec<PolicySource>,
        comment: Option<String>,
        required: i64,
    ) -> PolicyProposal {
        PolicyProposal {
            id: 0,
            base_version,
            created_at: self.now(),
            created_by: actor.user.clone(),
            comment,
            digest: digest(&sources),
            diff: diff(old, &sources),
            sources,
            required,
            state: ProposalState::Pending,
            approvals: vec![],
            decided_at: None,
            decided_by: None,
            decision_comment: None,
            applied_version: None,
            change: None,
            stale: false,
        }
    }

    /// Numbers and stores a new pending proposal (`policy.proposed`), with the writes
    /// `extra` makes of its number in the same changeset.
    pub(super) async fn store_proposal(
        &self,
        actor: &Actor,
        mut p: PolicyProposal,
        extra: &(dyn Fn(i64) -> Vec<Write> + Send + Sync),
    ) -> Result<PolicySubmission> {
        for attempt in 1..=ATTEMPTS {
            p.id = self.store.latest_policy_proposal_id().await? + 1;
            let ev = self
                .event(actor, "policy.proposed", proposal_subject(p.id))
                .data(json!({
                    "proposal": p.id, "base_version": p.base_version, "digest": p.digest,
                    "comment": p.comment, "required": p.required, "diff": p.diff,
                    "files": p.sources.iter().map(|s| &s.name).collect::<Vec<_>>(),
                    "change": p.change,
                }));
            let mut cs = Changeset::new()
                .write(Write::PolicyReview(PolicyReviewWrite::Propose(Box::new(
                    p.clone(),
                ))))
                .event(ev);
            cs.writes.extend(extra(p.id));
            match self.store.commit(cs).await {
                Ok(_) => {
                    self.tell("policy.proposed", actor, &p).await;
                    return Ok(PolicySubmission::Pending(Box::new(p)));
                }
                // Another proposal took the number at the same moment: take the next one.
                Err(StoreError::AlreadyExists(_)) if attempt < ATTEMPTS => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Conflict(
            "too many policy proposals at the same moment; try again".into(),
        ))
    }

    /// Whether `actor` may read proposals: policy managers and auditors.
    async fn may_read_proposals(&self, actor: &Actor) -> Result<()> {
        if self.holds(actor, AdminAction::ManagePolicies) {
            return Ok(());
        }
        self.require_admin(actor, AdminAction::ReadAudit, "policy.read")
            .await
    }

    async fn mark_stale(&self, mut ps: Vec<PolicyProposal>) -> Result<Vec<PolicyProposal>> {
        let in_force = self
            .store
            .latest_policy_version_number()
            .await?
            .unwrap_or(0);
        for p in &mut ps {
            p.stale = p.state == ProposalState::Pending
                && p.change.is_none()
                && p.base_version != in_force;
        }
        Ok(ps)
    }

    /// Proposals, newest first: the pending ones, or all with `all`.
    pub async fn list_policy_proposals(
        &self,
        actor: &Actor,
        all: bool,
    ) -> Result<Vec<PolicyProposal>> {
        self.may_read_proposals(actor).await?;
        let state = (!all).then_some(ProposalState::Pending);
        self.mark_stale(self.store.policy_proposals(state).await?)
            .await
    }

    pub async fn get_policy_proposal(&self, actor: &Actor, id: i64) -> Result<PolicyProposal> {
        self.may_read_proposals(actor).await?;
        self.load_proposal(id).await
    }

    async fn load_proposal(&self, id: i64) -> Result<PolicyProposal> {
        let p = self
            .store
            .policy_proposal(id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("policy proposal {id}")))?;
        Ok(self.mark_stale(vec![p]).await?.remove(0))
    }

    /// Approves a pending proposal. Refused (a `denied` event) for anyone without
    /// `manage_policies`, for its author, for an admin who approved it already, and while its
    /// base is no longer the version in force. The approval that completes the count puts the
    /// set in force as `base_version + 1` in the same transaction (`policy.approved` and
    /// `policy.applied`).
    pub async fn approve_policy_proposal(
        &self,
        actor: &Actor,
        id: i64,
        comment: Option<String>,
    ) -> Result<PolicyProposal> {
        const ACTION: &str = "policy.approve";
        self.require_admin(actor, AdminAction::ManagePolicies, ACTION)
            .await?;
        let comment = trimmed("comment", comment, 1000)?;
        let mut last = None;
        for _ in 0..ATTEMPTS {
            let p = self.load_proposal(id).await?;
            if p.state != ProposalState::Pending {
                return Err(Error::Conflict(format!(
                    "policy proposal {id} is already {}, not pending",
                    p.state
                )));
            }
            if p.created_by == actor.user {
                let why = format!(
                    "{} cannot approve their own policy proposal {id}",
                    actor.user
                );
                return Err(self
                    .refuse_with(actor, ACTION, id, why.clone(), Error::Forbidden(why))
                    .await);
            }
            if p.approvals.iter().any(|a| a.approver == actor.user) {
                let why = format!("{} has already approved policy proposal {id}", actor.user);
                return Err(self
                    .refuse_with(actor, ACTION, id, why.clone(), Error::Conflict(why))
                    .await);
            }
            let current = self.store.policy_version(None).await?;
            let in_force = current.as_ref().map_or(0, |c| c.version);
            if p.change.is_none() && p.base_version != in_force {
                let why = format!(
                    "policy proposal {id} was written against policy version {}, but version \
                     {in_force} is in force now; approving it would undo that change: reject it \
                     and apply the set again on top of version {in_force}",
                    p.base_version
                );
                return Err(self
                    .refuse_with(actor, ACTION, id, why.clone(), Error::Conflict(why))
                    .await);
            }
            let now = self.now();
            let seen = p.approvals.len() as i64;
            let required = p.required.max(self.policy_approvals).max(1);
            let count = seen + 1;
            let approve = Write::PolicyReview(PolicyReviewWrite::Approve {
                id,
                approval: ProposalApproval {
                    approver: actor.user.clone(),
                    at: now,
                    comment: comment.clone(),
                },
                seen,
            });
            let approved = self
                .event(actor, "policy.approved", proposal_subject(id))
                .data(json!({
                    "proposal": id, "base_version": p.base_version, "approvals": count,
                    "required": required, "comment": comment,
                }));
            let cs = Changeset::new().write(approve).event(approved);
            if count < required {
                match self.store.commit(cs).await {
                    Ok(_) => {
                        let p = self.load_proposal(id).await?;
                        self.tell("policy.approved", actor, &p).await;
                        return Ok(p);
                    }
                    Err(StoreError::Conflict(m)) => {
                        last = Some(m);
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            let mut approvers: Vec<String> =
                p.approvals.iter().map(|a| a.approver.clone()).collect();
            approvers.push(actor.user.clone());
            if let Some(change) = &p.change {
                let close = Write::PolicyReview(PolicyReviewWrite::Close {
                    id,
                    state: ProposalState::Applied,
                    at: now,
                    by: actor.user.clone(),
                    comment: None,
                    applied_version: None,
                });
                let made = self
                    .approver_change_writes(actor, &p, change, &approvers)
                    .await;
                let cs = match made {
                    Ok((write, event)) => cs.write(close).write(write).event(event),
                    Err(why) => {
                        return Err(self
                            .refuse_with(actor, ACTION, id, why.clone(), Error::Conflict(why))
                            .await);
                    }
                };
                match self.commit_identity(cs).await {
                    Ok(_) => {
                        let p = self.load_proposal(id).await?;
                        self.tell("policy.applied", actor, &p).await;
                        return Ok(p);
                    }
                    Err(StoreError::Conflict(m)) => {
                        last = Some(m);
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            // The last approval: the set takes effect now, exactly as an apply would.
            let candidate = match self.compiler()?.compile(&p.sources) {
                Ok(d) => d,
                Err(msg) => {
                    let why = format!(
                        "policy proposal {id} no longer compiles ({msg}); reject it and apply a \
                         corrected set"
                    );
                    return Err(self
                        .refuse_with(actor, ACTION, id, why.clone(), Error::Conflict(why))
                        .await);
                }
            };
            // Checked again: people and roles may have changed since it was proposed.
            self.keep_properties(actor, &candidate, &p.sources).await?;
            let version = in_force + 1;
            let cs = cs.write(Write::PolicyReview(PolicyReviewWrite::Close {
                id,
                state: ProposalState::Applied,
                at: now,
                by: actor.user.clone(),
                comment: None,
                applied_version: Some(version),
            }));
            let extra = json!({
                "proposal": id, "proposed_by": p.created_by, "approved_by": approvers,
            });
            match self
                .put_in_force(
                    actor,
                    current,
                    (p.sources, p.comment, candidate),
                    cs,
                    extra,
                    "the policy proposal or the version in force changed at the same moment",
                )
                .await
            {
                Ok(_) => {
                    let p = self.load_proposal(id).await?;
                    self.tell("policy.applied", actor, &p).await;
                    return Ok(p);
                }
                Err(Error::Conflict(m)) => {
                    last = Some(m);
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::Conflict(last.unwrap_or_else(|| {
            format!("policy proposal {id} kept changing; try again")
        })))
    }

    /// Rejects a pending proposal (its author may withdraw it this way): it never takes
    /// effect. The comment is required.
    pub async fn reject_policy_proposal(
        &self,
        actor: &Actor,
        id: i64,
        comment: Option<String>,
    ) -> Result<PolicyProposal> {
        self.require_admin(actor, AdminAction::ManagePolicies, "policy.reject")
            .await?;
        let Some(comment) = trimmed("comment", comment, 1000)? else {
            return Err(Error::invalid(
                "comment",
                "is required when rejecting a policy proposal: say why",
            ));
        };
        let p = self.load_proposal(id).await?;
        if p.state != ProposalState::Pending {
            return Err(Error::Conflict(format!(
                "policy proposal {id} is already {}, not pending",
                p.state
            )));
        }
        let cs = Changeset::new()
            .write(Write::PolicyReview(PolicyReviewWrite::Close {
                id,
                state: ProposalState::Rejected,
                at: self.now(),
                by: actor.user.clone(),
                comment: Some(comment.clone()),
                applied_version: None,
            }))
            .event(
                self.event(actor, "policy.rejected", proposal_subject(id))
                    .data(json!({
                        "proposal": id, "base_version": p.base_version,
                        "proposed_by": p.created_by, "comment": comment,
                    })),
            );
        self.store.commit(cs).await.map_err(|e| match e {
            StoreError::Conflict(_) => Error::Conflict(format!(
                "policy proposal {id} was decided by someone else at the same moment"
            )),
            e => e.into(),
        })?;
        let p = self.load_proposal(id).await?;
        self.tell("policy.rejected", actor, &p).await;
        Ok(p)
    }

    /// Holds `change` as a pending proposal (or returns the one already waiting for it).
    pub(super) async fn propose_approver_change(
        &self,
        actor: &Actor,
        change: ApproverChange,
    ) -> Result<PolicyProposal> {
        if let Some(same) = self
            .store
            .policy_proposals(Some(ProposalState::Pending))
            .await?
            .into_iter()
            .find(|p| p.change.as_ref() == Some(&change))
        {
            return Ok(same);
        }
        let text = serde_json::to_string(&change)
            .map_err(|e| Error::Internal(format!("encoding a change: {e}")))?;
        let base_version = self
            .store
            .latest_policy_version_number()
            .await?
            .unwrap_or(0);
        let p = PolicyProposal {
            id: 0,
            base_version,
            created_at: self.now(),
            created_by: actor.user.clone(),
            comment: None,
            digest: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(text.as_bytes())),
            diff: format!("+ {change}\n"),
            sources: vec![],
            required: self.policy_approvals,
            state: ProposalState::Pending,
            approvals: vec![],
            decided_at: None,
            decided_by: None,
            decision_comment: None,
            applied_version: None,
            change: Some(change),
            stale: false,
        };
        match self.store_proposal(actor, p, &|_| vec![]).await? {
            PolicySubmission::Pending(p) => Ok(*p),
            PolicySubmission::Applied(_) => Err(Error::Internal(
                "a held change was applied without approvals".into(),
            )),
        }
    }

    /// The writes and events that make an approved change, checked against what exists now;
    /// `Err` says why it can no longer be made.
    async fn approver_change_writes(
        &self,
        actor: &Actor,
        p: &PolicyProposal,
        change: &ApproverChange,
        approvers: &[String],
    ) -> std::result::Result<(Write, crate::audit::NewAuditEvent), String> {
        let gone =
            |what: String| format!("proposal {} can no longer be made: {what}; reject it", p.id);
        let store = |e: StoreError| gone(format!("reading the store failed ({e})"));
        let Some(user) = self.store.user(change.user()).await.map_err(store)? else {
            return Err(gone(format!("user {} no longer exists", change.user())));
        };
        let held = json!({
            "proposal": p.id, "proposed_by": p.created_by, "approved_by": approvers,
        });
        Ok(match change {
            ApproverChange::GroupMember { group, .. } => {
                if self.store.group(group).await.map_err(store)?.is_none() {
                    return Err(gone(format!("group {group} no longer exists")));
                }
                let mut data = held;
                data["user"] = json!(user.name);
                (
                    Write::AddGroupMember {
                        group: group.clone(),
                        user: user.name.clone(),
                    },
                    self.event(actor, "group.member_added", subject("group", group))
                        .data(data),
                )
            }
            ApproverChange::Admin { .. } => {
                if self
                    .store
                    .external_account(&user.name)
                    .await
                    .map_err(store)?
                    .is_some()
                {
                    return Err(gone(format!(
                        "{} is an external account and cannot be an administrator",
                        user.name
                    )));
                }
                let mut data = held;
                data["admin"] = json!(true);
                data["disabled"] = json!(user.disabled);
                let name = user.name.clone();
                (
                    Write::UpdateUser(User {
                        admin: true,
                        ..user
                    }),
                    self.event(actor, "user.updated", subject("user", &name))
                        .data(data),
                )
            }
        })
    }

    /// Whether the policy in force lets members of `group` decide approvals (every group,
    /// when the decider cannot tell).
    pub(super) fn is_approver_group(&self, group: &str) -> bool {
        self.decider()
            .approver_groups()
            .is_none_or(|gs| gs.iter().any(|g| g.eq_ignore_ascii_case(group)))
    }

    /// Whether `user` holds power that two-person control guards: an admin, or a member of
    /// an approver group.
    pub(super) async fn decides_approvals(&self, user: &User) -> Result<bool> {
        if user.admin {
            return Ok(true);
        }
        for g in self.store.groups().await? {
            if g.members.iter().any(|m| m.eq_ignore_ascii_case(&user.name))
                && self.is_approver_group(&g.name)
            {
                return Ok(true);
            }
        }
        Ok(false)
    }
}
