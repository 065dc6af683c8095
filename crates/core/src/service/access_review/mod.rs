//! Access reviews (see [`crate::access_review`]): campaigns started by admins, items decided
//! by their reviewers, reminders, escalation and the due date's default run by the follow-up
//! loop, each step once across instances. What a campaign holds is built in [`items`]; what
//! revoking does, and how a campaign ends, is in [`close`].

mod close;
mod items;

use super::*;
use crate::access_review::*;
use crate::delegation::{DelegateKind, Delegatee, parse_scope, scope_matches};
use std::collections::BTreeMap;

/// The most items one campaign may hold (narrow the scope for more).
pub const MAX_REVIEW_ITEMS: usize = 20_000;
/// The longest a campaign may run.
pub const MAX_REVIEW_SECS: i64 = 366 * 86_400;

pub(super) fn campaign_subject(id: Uuid) -> Option<String> {
    subject("review", id)
}

pub(super) fn group_of(name: &str) -> Delegatee {
    Delegatee {
        kind: DelegateKind::Group,
        name: name.to_string(),
    }
}

pub(super) fn user_of(name: &str) -> Delegatee {
    Delegatee {
        kind: DelegateKind::User,
        name: name.to_string(),
    }
}

impl ControlPlane {
    /// Opens a campaign over everything in `new.scope` that lets someone elevate or act
    /// (needs `manage_grants`): each item goes to its reviewer with its usage in the last
    /// `unused_days`, pre-marked for removal when unused (`review.started`; each reviewer is
    /// told).
    pub async fn start_review(&self, actor: &Actor, new: NewCampaign) -> Result<CampaignView> {
        self.require_admin(actor, AdminAction::ManageGrants, "review.start")
            .await?;
        validate_name("campaign", &new.name)?;
        if new.due_in_secs <= 0 || new.due_in_secs > MAX_REVIEW_SECS {
            return Err(Error::unprocessable(
                "due",
                format!(
                    "must be more than zero and at most {}",
                    format_duration(MAX_REVIEW_SECS)
                ),
            ));
        }
        let unused_days = new.unused_days.unwrap_or(DEFAULT_UNUSED_DAYS);
        if !(1..=3650).contains(&unused_days) {
            return Err(Error::invalid("unused_days", "must be between 1 and 3650"));
        }
        let selectors = if new.scope.targets.is_empty() {
            None
        } else {
            Some(
                parse_scope(&new.scope.targets)
                    .map_err(|e| Error::invalid("scope", e.to_string()))?,
            )
        };
        let reviewers = self
            .store
            .group(&new.reviewers)
            .await?
            .ok_or_else(|| Error::NotFound(format!("reviewer group {}", new.reviewers)))?
            .name;
        let escalate_to = match &new.escalate_to {
            Some(g) => {
                self.store
                    .group(g)
                    .await?
                    .ok_or_else(|| Error::NotFound(format!("escalation group {g}")))?
                    .name
            }
            None => reviewers.clone(),
        };
        if self
            .store
            .review_campaigns()
            .await?
            .iter()
            .any(|k| k.name.eq_ignore_ascii_case(&new.name))
        {
            return Err(Error::Conflict(format!(
                "a campaign named {} exists already",
                new.name
            )));
        }
        let now = self.now();
        let since = now - SignedDuration::from_hours(24 * unused_days);
        let k = Campaign {
            id: Uuid::now_v7(),
            name: new.name.clone(),
            scope: new.scope.clone(),
            created_by: actor.user.clone(),
            created_at: now,
            due_at: now + SignedDuration::from_secs(new.due_in_secs),
            default_action: new.default_action,
            reviewers,
            escalate_to,
            unused_days,
            stage: CampaignStage::Open,
            closed_at: None,
            proposal: None,
            counts: ItemCounts::default(),
        };
        let in_scope = {
            let selectors = selectors.clone();
            move |t: &Target| selectors.as_ref().is_none_or(|s| scope_matches(s, t))
        };
        let fallback = group_of(&k.reviewers);
        let (items, errors) = self
            .review_items_for(&k, &in_scope, &fallback, since, now)
            .await?;
        if items.is_empty() {
            return Err(Error::unprocessable(
                "scope",
                "there is nothing to review in this scope",
            ));
        }
        if items.len() > MAX_REVIEW_ITEMS {
            return Err(Error::unprocessable(
                "scope",
                format!(
                    "{} items are more than the {MAX_REVIEW_ITEMS} one campaign may hold: \
                     narrow the scope (kinds, targets)",
                    items.len()
                ),
            ));
        }
        let mut by_kind: BTreeMap<&str, u64> = BTreeMap::new();
        let mut by_reviewer: BTreeMap<(bool, String), u64> = BTreeMap::new();
        for i in &items {
            *by_kind.entry(i.kind.as_str()).or_default() += 1;
            *by_reviewer
                .entry((
                    i.reviewer.kind == DelegateKind::Group,
                    i.reviewer.name.clone(),
                ))
                .or_default() += 1;
        }
        let mut cs = Changeset::new()
            .write(Write::Review(ReviewWrite::Start {
                campaign: Box::new(k.clone()),
                items: items.clone(),
            }))
            .event(
                self.event(actor, "review.started", campaign_subject(k.id))
                    .data(json!({
                        "campaign": k.id, "name": k.name, "scope": k.scope, "due_at": k.due_at,
                        "default": k.default_action, "reviewers": k.reviewers,
                        "escalate_to": k.escalate_to, "unused_days": k.unused_days,
                        "items": by_kind, "unreadable_targets": errors,
                    })),
            );
        cs.notices
            .extend(reviewer_notices(&k, "review.started", by_reviewer));
        self.commit(cs).await.map_err(|e| match e {
            StoreError::AlreadyExists(m) => Error::Conflict(format!("{m} exists already")),
            e => e.into(),
        })?;
        self.follow_ups_changed.notify_one();
        self.review_view(actor, &k.id.to_string(), false).await
    }

    pub(super) async fn find_campaign(&self, key: &str) -> Result<Campaign> {
        let found = match Uuid::parse_str(key) {
            Ok(id) => self.store.review_campaign(id).await?,
            Err(_) => {
                let k = self
                    .store
                    .review_campaigns()
                    .await?
                    .into_iter()
                    .find(|k| k.name.eq_ignore_ascii_case(key));
                match k {
                    Some(k) => self.store.review_campaign(k.id).await?,
                    None => None,
                }
            }
        };
        found.ok_or_else(|| Error::NotFound(format!("campaign {key}")))
    }

    /// Whether `actor` reviews `item`.
    fn reviews(actor: &Actor, item: &ReviewItem) -> bool {
        match item.reviewer.kind {
            DelegateKind::User => item.reviewer.name.eq_ignore_ascii_case(&actor.user),
            DelegateKind::Group => actor
                .groups
                .iter()
                .any(|g| g.eq_ignore_ascii_case(&item.reviewer.name)),
        }
    }

    /// Whether `actor` sees every campaign and item: holders of `manage_grants` and
    /// auditors.
    fn oversees_reviews(&self, actor: &Actor) -> bool {
        self.holds(actor, AdminAction::ManageGrants) || self.holds(actor, AdminAction::ReadAudit)
    }

    /// Campaigns, newest first: all of them for admins and auditors, those with items for
    /// `actor` to review otherwise.
    pub async fn list_reviews(&self, actor: &Actor) -> Result<Vec<Campaign>> {
        let all = self.store.review_campaigns().await?;
        if self.oversees_reviews(actor) {
            return Ok(all);
        }
        let mut mine = vec![];
        for k in all {
            let items = self.store.review_items(k.id).await?;
            if items.iter().any(|i| Self::reviews(actor, i)) {
                mine.push(k);
            }
        }
        Ok(mine)
    }

    /// A campaign (by id or name) with its items: every item for admins and auditors (only
    /// theirs with `mine`), a reviewer's own otherwise.
    pub async fn review_view(&self, actor: &Actor, key: &str, mine: bool) -> Result<CampaignView> {
        let campaign = self.find_campaign(key).await?;
        let mut items = self.store.review_items(campaign.id).await?;
        if mine || !self.oversees_reviews(actor) {
            items.retain(|i| Self::reviews(actor, i));
            if items.is_empty() && !self.oversees_reviews(actor) {
                return Err(self
                    .refuse(
                        actor,
                        "review.read",
                        campaign_subject(campaign.id),
                        format!(
                            "{} has no items for {} to review",
                            campaign.name, actor.user
                        ),
                    )
                    .await);
            }
        }
        Ok(CampaignView { campaign, items })
    }

    /// A reviewer keeps or revokes one item, with a comment (their reviewer, or a holder of
    /// `manage_grants`; never the person under review). Revoking takes effect at once, in the
    /// same transaction (an eligibility waits for the campaign's policy proposal).
    pub async fn decide_review_item(
        &self,
        actor: &Actor,
        id: Uuid,
        decision: ReviewDecision,
        comment: Option<String>,
    ) -> Result<ReviewItem> {
        let comment = trimmed("comment", comment, 1000)?
            .ok_or_else(|| Error::unprocessable("comment", "is required: say why"))?;
        let item = self
            .store
            .review_item(id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("review item {id}")))?;
        let k = self
            .store
            .review_campaign(item.campaign)
            .await?
            .ok_or_else(|| Error::NotFound(format!("campaign {}", item.campaign)))?;
        let action = format!("review.{}", decision.as_str());
        // A standing privilege's account is an account in the target, not a pedm user.
        let mut under_review =
            item.kind != ItemKind::Standing && item.user.eq_ignore_ascii_case(&actor.user);
        // A delegation to a group is its members' access: none of them reviews it.
        if let (ItemKind::Delegation, Some(d)) = (item.kind, item.delegation)
            && let Some(d) = self.store.delegation(d).await?
        {
            under_review |= d.delegate.covers(&actor.user, &actor.groups);
        }
        if under_review {
            return Err(self
                .refuse(
                    actor,
                    &action,
                    subject("review-item", id),
                    format!("{} may not review their own access", actor.user),
                )
                .await);
        }
        if !Self::reviews(actor, &item) && !self.holds(actor, AdminAction::ManageGrants) {
            return Err(self
                .refuse(
                    actor,
                    &action,
                    subject("review-item", id),
                    format!(
                        "item {id} is for {} to review (or a holder of manage_grants)",
                        item.reviewer
                    ),
                )
                .await);
        }
        let now = self.now();
        if k.stage == CampaignStage::Closed || now >= k.due_at {
            return Err(Error::Conflict(format!(
                "campaign {} was due at {}: undecided items took its default ({})",
                k.name, k.due_at, k.default_action
            )));
        }
        if item.state != ItemState::Pending {
            return Err(Error::Conflict(format!(
                "item {id} is {} already (by {})",
                item.state,
                item.decided_by.as_deref().unwrap_or("?")
            )));
        }
        match decision {
            ReviewDecision::Keep => {
                let cs = Changeset::new()
                    .write(Write::Review(ReviewWrite::Decide {
                        id,
                        state: ItemState::Kept,
                        comment: Some(comment.clone()),
                        by: actor.user.clone(),
                        at: now,
                        outcome: Some("kept".into()),
                    }))
                    .event(
                        self.event(actor, "review.kept", subject("review-item", id))
                            .data(item_data(&k, &item, &comment, "kept", false)),
                    );
                self.commit(cs).await.map_err(decided_meanwhile)?;
            }
            ReviewDecision::Revoke => {
                self.revoke_item(actor, &k, &item, &comment, false).await?;
            }
        }
        self.store
            .review_item(id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("review item {id}")))
    }
}

/// Tells each reviewer (`(a group?, name)`) how many items wait for them.
pub(super) fn reviewer_notices(
    k: &Campaign,
    step: &str,
    waiting: BTreeMap<(bool, String), u64>,
) -> Vec<Notice> {
    waiting
        .into_iter()
        .map(|((group, name), n)| Notice::AccessReview {
            step: step.into(),
            campaign: k.id,
            name: k.name.clone(),
            reviewer: Some(if group {
                group_of(&name)
            } else {
                user_of(&name)
            }),
            pending: n,
            due_at: k.due_at,
        })
        .collect()
}

/// An item's audit data.
pub(super) fn item_data(
    k: &Campaign,
    i: &ReviewItem,
    comment: &str,
    outcome: &str,
    by_default: bool,
) -> serde_json::Value {
    json!({
        "campaign": k.id, "name": k.name, "item": i.id, "kind": i.kind, "user": i.user,
        "target": i.target, "role": i.role, "group": i.group, "delegation": i.delegation,
        "reviewer": i.reviewer, "comment": comment, "outcome": outcome,
        "by_default": by_default,
    })
}

/// A decision that lost to another one made at the same moment.
pub(super) fn decided_meanwhile(e: StoreError) -> Error {
    match e {
        StoreError::Conflict(m) => Error::Conflict(m),
        e => e.into(),
    }
}
