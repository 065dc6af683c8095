//! What revoking an item does, and how a campaign moves on: reminders, escalation, the due
//! date's default, and the policy proposal of its revoked eligibilities.

use super::super::policy_review::PolicySubmission;
use super::super::*;
use super::{campaign_subject, decided_meanwhile, group_of, item_data};
use crate::access_review::*;
use crate::delegation::DelegateKind;
use crate::external::ExternalWrite;
use crate::provisioning::DriftAction;
use std::collections::BTreeMap;

/// A Cedar string literal's inside.
fn cedar_str(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// The policy file a campaign's revoked eligibilities become.
/// Each forbid is owned by the campaign's reviewers and reviewed again a year from `today`.
fn forbid_file(k: &Campaign, items: &[&ReviewItem], today: jiff::civil::Date) -> PolicySource {
    let review_by = today
        .checked_add(jiff::Span::new().years(1))
        .unwrap_or(today);
    let mut text = format!(
        "// Drafted by access review {:?} ({}): eligibility its reviewers revoked.\n",
        k.name, k.id
    );
    for (n, i) in items.iter().enumerate() {
        let (Some(t), Some(r)) = (&i.target, &i.role) else {
            continue;
        };
        text.push_str(&format!(
            "\n// {}\n@id(\"access-review-{}-{}\")\n@owner(\"{}\")\n@review_by(\"{}\")\nforbid (\n    principal == Pedm::User::\"{}\",\n    \
             action == Pedm::Action::\"request\",\n    resource == Pedm::Role::\"{}/{}\"\n);\n",
            i.comment
                .as_deref()
                .unwrap_or("")
                .replace(['\n', '\r'], " "),
            cedar_str(&k.name),
            n + 1,
            cedar_str(&k.reviewers),
            review_by,
            cedar_str(&i.user),
            cedar_str(t),
            cedar_str(r),
        ));
    }
    PolicySource {
        name: format!("access-review-{}.cedar", k.name),
        text,
    }
}

impl ControlPlane {
    /// Takes away what `item` allows, recording it revoked in the same changeset
    /// (`review.revoked`, and the event of what was done). `by_default`: the campaign's due
    /// date decided, not a reviewer.
    pub(super) async fn revoke_item(
        &self,
        actor: &Actor,
        k: &Campaign,
        item: &ReviewItem,
        comment: &str,
        by_default: bool,
    ) -> Result<()> {
        let now = self.now();
        let decided = |outcome: &str| {
            Changeset::new()
                .write(Write::Review(ReviewWrite::Decide {
                    id: item.id,
                    state: ItemState::Revoked,
                    comment: Some(comment.to_string()),
                    by: actor.user.clone(),
                    at: now,
                    outcome: Some(outcome.to_string()),
                }))
                .event(
                    self.event(actor, "review.revoked", subject("review-item", item.id))
                        .data(item_data(k, item, comment, outcome, by_default)),
                )
        };
        let why = format!("access review {}: {comment}", k.name);
        match item.kind {
            ItemKind::Eligibility => {
                let cs = decided(
                    "to be forbidden by the policy proposal drafted when the campaign closes",
                );
                self.commit(cs).await.map_err(decided_meanwhile)?;
            }
            ItemKind::Membership => {
                let group = item.group.clone().unwrap_or_default();
                let member =
                    self.store.group(&group).await?.is_some_and(|g| {
                        g.members.iter().any(|m| m.eq_ignore_ascii_case(&item.user))
                    });
                let cs = if member {
                    decided(&format!("removed from group {group}"))
                        .write(Write::RemoveGroupMember {
                            group: group.clone(),
                            user: item.user.clone(),
                        })
                        .event(
                            self.event(actor, "group.member_removed", subject("group", &group))
                                .data(json!({ "user": item.user, "reason": why, "review_item": item.id })),
                        )
                } else {
                    decided(&format!("was no longer a member of {group}"))
                };
                self.commit_identity(cs).await.map_err(decided_meanwhile)?;
            }
            ItemKind::Delegation => {
                let Some(did) = item.delegation else {
                    return Err(Error::Internal(format!(
                        "item {} names no delegation",
                        item.id
                    )));
                };
                match self.store.delegation(did).await? {
                    Some(d) if d.is_live(now) => {
                        self.revoke_delegation_tree(
                            actor,
                            did,
                            why,
                            decided("delegation revoked, with what was passed on from it and the grants it pre-approved"),
                        )
                        .await?;
                    }
                    Some(d) => {
                        let cs = decided(&format!(
                            "the delegation had ended already ({})",
                            d.state_at(now)
                        ));
                        self.commit(cs).await.map_err(decided_meanwhile)?;
                    }
                    None => {
                        let cs = decided("the delegation no longer exists");
                        self.commit(cs).await.map_err(decided_meanwhile)?;
                    }
                }
            }
            ItemKind::External => match self.store.external_account(&item.user).await? {
                Some(x) if x.live(now) => {
                    let cs = decided("the account ends now; its grants end with it")
                        .write(Write::External(ExternalWrite::Extend {
                            user: x.user.clone(),
                            seen: x.expires_at,
                            expires_at: now,
                        }))
                        .event(
                            self.event(actor, "user.expiry_moved", subject("user", &x.user))
                                .data(json!({
                                    "sponsor": x.sponsor, "from": x.expires_at, "to": now,
                                    "reason": why, "review_item": item.id,
                                })),
                        );
                    self.commit_identity(cs).await.map_err(decided_meanwhile)?;
                    self.deadline_changed.notify_one();
                }
                _ => {
                    let cs = decided("the account had expired already");
                    self.commit(cs).await.map_err(decided_meanwhile)?;
                }
            },
            ItemKind::Standing => {
                let (Some(target), Some(privilege)) = (&item.target, &item.role) else {
                    return Err(Error::Internal(format!("item {} names no target", item.id)));
                };
                let p = StandingPrivilege {
                    account: item.user.clone(),
                    privilege: privilege.clone(),
                    source: item.group.clone().unwrap_or_default(),
                };
                let action = match &self.provisioning {
                    Some(port) if port.handles(target) => port.drift_action(target, &p),
                    _ => DriftAction::Keep("pedm has no provisioner for it any more".into()),
                };
                match action {
                    DriftAction::Remove => {
                        let job = ProvisionJob {
                            id: Uuid::now_v7(),
                            grant_id: None,
                            action: ProvisionAction::RemoveDrift,
                            drift: Some(DriftFinding::new(target, &p)),
                            attempts: 0,
                            next_attempt_at: now,
                            last_error: None,
                            done: false,
                            created_at: now,
                        };
                        let cs = decided(&format!("removal queued (job {})", job.id))
                            .write(Write::InsertJob(job));
                        match self.commit(cs).await {
                            Ok(_) => self.jobs_changed.notify_one(),
                            Err(StoreError::AlreadyExists(_)) => {
                                let cs = decided("a removal was queued already");
                                self.commit(cs).await.map_err(decided_meanwhile)?;
                            }
                            Err(e) => return Err(decided_meanwhile(e)),
                        }
                    }
                    DriftAction::Report => {
                        let cs = decided(&format!(
                            "pedm does not remove standing privileges on {target} \
                             (remove_drift is off): remove it by hand"
                        ));
                        self.commit(cs).await.map_err(decided_meanwhile)?;
                    }
                    DriftAction::Keep(reason) => {
                        let cs = decided(&format!(
                            "the target keeps it ({reason}): remove it by hand"
                        ));
                        self.commit(cs).await.map_err(decided_meanwhile)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Ends a campaign before its due date (needs `manage_grants`): undecided items take its
    /// default now.
    pub async fn close_review(&self, actor: &Actor, key: &str) -> Result<CampaignView> {
        self.require_admin(actor, AdminAction::ManageGrants, "review.close")
            .await?;
        let k = self.find_campaign(key).await?;
        if k.stage == CampaignStage::Closed {
            return Err(Error::Conflict(format!(
                "campaign {} is closed already",
                k.name
            )));
        }
        self.finish_campaign(actor, &k).await?;
        self.review_view(actor, &k.id.to_string(), false).await
    }

    /// Undecided items take the default, revoked eligibilities become one policy proposal,
    /// and the campaign closes (`review.closed`). Each part is conditional, so a crash or a
    /// second instance resumes it without doing anything twice.
    pub(super) async fn finish_campaign(&self, actor: &Actor, k: &Campaign) -> Result<()> {
        let comment = format!(
            "not reviewed by the due date ({}): the campaign's default is {}",
            k.due_at, k.default_action
        );
        for item in self.store.review_items(k.id).await? {
            if item.state != ItemState::Pending {
                continue;
            }
            let outcome = match k.default_action {
                DefaultAction::Flag => "not reviewed: flagged".to_string(),
                DefaultAction::Revoke => {
                    match self.revoke_item(actor, k, &item, &comment, true).await {
                        Ok(()) => continue,
                        // Decided meanwhile by its reviewer, or a conflict in what revoking
                        // changes: only a decided item is left alone; a pending one is
                        // flagged with why, never left pending in a closed campaign.
                        Err(Error::Conflict(m)) => match self.store.review_item(item.id).await? {
                            Some(i) if i.state != ItemState::Pending => continue,
                            _ => format!("not reviewed, and revoking it failed: {m}"),
                        },
                        Err(e) => format!("not reviewed, and revoking it failed: {e}"),
                    }
                }
            };
            let cs = Changeset::new()
                .write(Write::Review(ReviewWrite::Decide {
                    id: item.id,
                    state: ItemState::Flagged,
                    comment: Some(comment.clone()),
                    by: actor.user.clone(),
                    at: self.now(),
                    outcome: Some(outcome.clone()),
                }))
                .event(
                    self.event(actor, "review.flagged", subject("review-item", item.id))
                        .outcome(Outcome::Failure)
                        .data(item_data(k, &item, &comment, &outcome, true)),
                );
            match self.commit(cs).await {
                Ok(_) | Err(StoreError::Conflict(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let items = self.store.review_items(k.id).await?;
        let mut proposal = k.proposal;
        if proposal.is_none() {
            proposal = self.draft_forbids(k, &items).await?;
        }
        let k = self.find_campaign(&k.id.to_string()).await?;
        if k.stage == CampaignStage::Closed {
            return Ok(());
        }
        let cs = Changeset::new()
            .write(Write::Review(ReviewWrite::Advance {
                id: k.id,
                from: k.stage,
                to: CampaignStage::Closed,
                at: self.now(),
                escalate_to: None,
            }))
            .event(
                self.event(actor, "review.closed", campaign_subject(k.id))
                    .data(json!({
                        "campaign": k.id, "name": k.name, "counts": k.counts,
                        "proposal": proposal, "early": self.now() < k.due_at,
                    })),
            )
            .notice(Notice::AccessReview {
                step: "review.closed".into(),
                campaign: k.id,
                name: k.name.clone(),
                reviewer: None,
                pending: 0,
                due_at: k.due_at,
            });
        match self.commit(cs).await {
            Ok(_) | Err(StoreError::Conflict(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// The policy proposal forbidding what the campaign's reviewers revoked of eligibility,
    /// on top of the set in force, for two-person approval (at least one admin approves it
    /// even when policy changes need none). `None` when nothing was revoked or there is no
    /// set in force to add to.
    async fn draft_forbids(&self, k: &Campaign, items: &[ReviewItem]) -> Result<Option<i64>> {
        let revoked: Vec<&ReviewItem> = items
            .iter()
            .filter(|i| i.kind == ItemKind::Eligibility && i.state == ItemState::Revoked)
            .collect();
        if revoked.is_empty() {
            return Ok(None);
        }
        let Some(current) = self.store.policy_version(None).await? else {
            tracing::warn!(campaign = %k.name, "no policy set in force to draft the campaign's forbids on");
            return Ok(None);
        };
        let today = self.now().to_zoned(jiff::tz::TimeZone::UTC).date();
        let file = forbid_file(k, &revoked, today);
        let mut sources: Vec<PolicySource> = current
            .sources
            .iter()
            .filter(|s| s.name != file.name)
            .cloned()
            .collect();
        sources.push(file);
        let sys = Actor::system();
        let comment = Some(format!(
            "access review {}: {} eligibilities revoked",
            k.name,
            revoked.len()
        ));
        let (sources, comment, _) = self.vet_policy_set(&sys, sources, comment).await?;
        let p = self.new_proposal(
            &sys,
            current.version,
            &current.sources,
            sources,
            comment,
            self.policy_approvals.max(1),
        );
        let campaign = k.id;
        let extra = move |proposal| {
            vec![Write::Review(ReviewWrite::SetProposal {
                id: campaign,
                proposal,
            })]
        };
        match self.store_proposal(&sys, p, &extra).await {
            Ok(PolicySubmission::Pending(p)) => Ok(Some(p.id)),
            Ok(PolicySubmission::Applied(_)) => Ok(None),
            // Another instance drafted it.
            Err(Error::Conflict(_)) => Ok(self.find_campaign(&k.id.to_string()).await?.proposal),
            Err(e) => Err(e),
        }
    }

    /// Runs the campaigns' steps that are due (reminders, escalation, the due date's
    /// default) and returns when the next one is.
    pub async fn review_due(&self) -> Result<Option<Timestamp>> {
        let mut next: Option<Timestamp> = None;
        let sys = Actor::system();
        for mut k in self.store.review_campaigns().await? {
            while let Some((to, at)) = k.next_step() {
                if at > self.now() {
                    next = Some(next.map_or(at, |n| n.min(at)));
                    break;
                }
                if to == CampaignStage::Closed {
                    self.finish_campaign(&sys, &k).await?;
                    break;
                }
                self.advance(&sys, &k, to).await?;
                k = self.find_campaign(&k.id.to_string()).await?;
            }
        }
        Ok(next)
    }

    /// Reminds reviewers of undecided items, or hands those to the escalation group, once.
    async fn advance(&self, actor: &Actor, k: &Campaign, to: CampaignStage) -> Result<()> {
        let pending: Vec<ReviewItem> = self
            .store
            .review_items(k.id)
            .await?
            .into_iter()
            .filter(|i| i.state == ItemState::Pending)
            .collect();
        let escalated = to == CampaignStage::Escalated;
        let step = if escalated {
            "review.escalated"
        } else {
            "review.reminder"
        };
        let mut cs = Changeset::new()
            .write(Write::Review(ReviewWrite::Advance {
                id: k.id,
                from: k.stage,
                to,
                at: self.now(),
                escalate_to: (escalated && !pending.is_empty()).then(|| group_of(&k.escalate_to)),
            }))
            .event(self.event(actor, step, campaign_subject(k.id)).data(json!({
                "campaign": k.id, "name": k.name, "pending": pending.len(),
                "due_at": k.due_at,
                "escalate_to": escalated.then_some(&k.escalate_to),
            })));
        let mut waiting: BTreeMap<(bool, String), u64> = BTreeMap::new();
        for i in &pending {
            let key = if escalated {
                (true, k.escalate_to.clone())
            } else {
                (
                    i.reviewer.kind == DelegateKind::Group,
                    i.reviewer.name.clone(),
                )
            };
            *waiting.entry(key).or_default() += 1;
        }
        cs.notices.extend(super::reviewer_notices(k, step, waiting));
        match self.commit(cs).await {
            Ok(_) | Err(StoreError::Conflict(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}
