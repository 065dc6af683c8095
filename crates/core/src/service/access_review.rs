//! Access reviews (see [`crate::access_review`]): campaigns started by admins, items decided
//! by their reviewers, reminders, escalation and the due date's default run by the follow-up
//! loop, each step once across instances.

use super::policy_check::eligibility;
use super::policy_review::PolicySubmission;
use super::*;
use crate::access_review::*;
use crate::delegation::{
    DelegateKind, Delegatee, DelegationFilter, GrantLinkFilter, parse_scope, scope_matches,
};
use crate::external::ExternalWrite;
use crate::host::SessionFilter;
use crate::provisioning::DriftAction;
use std::collections::{BTreeMap, BTreeSet};

/// The most items one campaign may hold (narrow the scope for more).
pub const MAX_REVIEW_ITEMS: usize = 20_000;
/// The longest a campaign may run.
pub const MAX_REVIEW_SECS: i64 = 366 * 86_400;

fn campaign_subject(id: Uuid) -> Option<String> {
    subject("review", id)
}

fn group_of(name: &str) -> Delegatee {
    Delegatee {
        kind: DelegateKind::Group,
        name: name.to_string(),
    }
}

fn user_of(name: &str) -> Delegatee {
    Delegatee {
        kind: DelegateKind::User,
        name: name.to_string(),
    }
}

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

/// Usage in the evidence window, per (user, target, role) and per user.
#[derive(Default)]
struct Evidence {
    by_role: BTreeMap<(String, String, String), Usage>,
    by_user: BTreeMap<String, Usage>,
}

fn used(u: &mut Usage, at: Timestamp) {
    u.last_used = Some(u.last_used.map_or(at, |l| l.max(at)));
}

/// `revoke` for what was not used in the window.
fn suggestion(u: &Usage) -> Option<ReviewDecision> {
    u.last_used.is_none().then_some(ReviewDecision::Revoke)
}

impl ControlPlane {
    async fn review_usage(&self, since: Timestamp, users: &BTreeSet<String>) -> Result<Evidence> {
        let mut e = Evidence::default();
        let mut by_grant = BTreeMap::new();
        for r in self
            .store
            .requests(&RequestFilter {
                since: Some(since),
                ..Default::default()
            })
            .await?
        {
            let key = (r.requester.clone(), r.target.clone(), r.role.clone());
            for u in [
                e.by_role.entry(key.clone()).or_default(),
                e.by_user.entry(r.requester.clone()).or_default(),
            ] {
                u.requests += 1;
                if r.grant_id.is_some() {
                    u.grants += 1;
                    used(u, r.decided_at.unwrap_or(r.created_at));
                }
            }
            if let Some(g) = r.grant_id {
                by_grant.insert(g, key);
            }
        }
        for user in users {
            for s in self
                .store
                .sessions(&SessionFilter {
                    user: Some(user.clone()),
                    limit: Some(10_000),
                    ..Default::default()
                })
                .await?
            {
                if s.started_at < since {
                    continue;
                }
                let u = e.by_user.entry(user.clone()).or_default();
                u.sessions += 1;
                used(u, s.started_at);
                if let Some(key) = s.grant_id.and_then(|g| by_grant.get(&g)) {
                    let u = e.by_role.entry(key.clone()).or_default();
                    u.sessions += 1;
                    used(u, s.started_at);
                }
            }
        }
        Ok(e)
    }

    /// The reviewer of an item on `target` about `who`: the target's `owner` label (a user or
    /// a group), else the campaign's reviewers; never the person under review.
    async fn target_reviewer(
        &self,
        target: Option<&Target>,
        who: &str,
        fallback: &Delegatee,
        known: &mut BTreeMap<String, Option<Delegatee>>,
    ) -> Result<Delegatee> {
        let Some(owner) = target.and_then(|t| t.labels.get("owner")) else {
            return Ok(fallback.clone());
        };
        if !known.contains_key(owner) {
            let found = if let Some(u) = self.store.user(owner).await?.filter(|u| !u.disabled) {
                Some(user_of(&u.name))
            } else {
                self.store.group(owner).await?.map(|g| group_of(&g.name))
            };
            known.insert(owner.clone(), found);
        }
        Ok(match known.get(owner).cloned().flatten() {
            Some(r) if !(r.kind == DelegateKind::User && r.name.eq_ignore_ascii_case(who)) => r,
            _ => fallback.clone(),
        })
    }

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
        for ((group, name), n) in by_reviewer {
            cs = cs.notice(Notice::AccessReview {
                step: "review.started".into(),
                campaign: k.id,
                name: k.name.clone(),
                reviewer: Some(if group {
                    group_of(&name)
                } else {
                    user_of(&name)
                }),
                pending: n,
                due_at: k.due_at,
            });
        }
        self.commit(cs).await.map_err(|e| match e {
            StoreError::AlreadyExists(m) => Error::Conflict(format!("{m} exists already")),
            e => e.into(),
        })?;
        self.follow_ups_changed.notify_one();
        self.review_view(actor, &k.id.to_string(), false).await
    }

    /// Every item of a new campaign, and the targets discovery could not read (with why).
    async fn review_items_for(
        &self,
        k: &Campaign,
        in_scope: &(impl Fn(&Target) -> bool + Clone + Send + 'static),
        fallback: &Delegatee,
        since: Timestamp,
        now: Timestamp,
    ) -> Result<(Vec<ReviewItem>, Vec<TargetError>)> {
        let world = self.policy_world().await?;
        let targets: BTreeMap<String, Target> = world
            .roles
            .iter()
            .map(|(t, _)| (t.name.clone(), t.clone()))
            .chain(
                self.store
                    .targets()
                    .await?
                    .into_iter()
                    .map(|t| (t.name.clone(), t)),
            )
            .collect();
        let decider = self.decider();
        let keep = in_scope.clone();
        let eligible = tokio::task::spawn_blocking(move || {
            eligibility(&world, decider.as_ref(), now, |t, _| keep(t))
        })
        .await
        .map_err(|e| Error::Internal(format!("computing eligibility failed: {e}")))?;
        // People who can reach a target in scope: memberships and external accounts are
        // about them.
        let reachable: BTreeSet<String> = eligible.iter().map(|e| e.user.clone()).collect();
        let scoped = !k.scope.targets.is_empty();
        let evidence = self.review_usage(since, &reachable).await?;
        let mut known = BTreeMap::new();
        let mut items = vec![];
        let item = |kind: ItemKind, user: &str, detail: String, reviewer: Delegatee| ReviewItem {
            id: Uuid::now_v7(),
            campaign: k.id,
            kind,
            user: user.to_string(),
            target: None,
            role: None,
            group: None,
            delegation: None,
            detail,
            reviewer,
            usage: Usage::default(),
            suggested: None,
            state: ItemState::Pending,
            comment: None,
            decided_by: None,
            decided_at: None,
            outcome: None,
        };
        let user_usage = |u: &str| evidence.by_user.get(u).cloned().unwrap_or_default();
        if k.scope.covers_kind(ItemKind::Eligibility) {
            for e in &eligible {
                let reviewer = self
                    .target_reviewer(targets.get(&e.target), &e.user, fallback, &mut known)
                    .await?;
                let mut i = item(
                    ItemKind::Eligibility,
                    &e.user,
                    format!(
                        "may request {} on {}: {}{}",
                        e.role,
                        e.target,
                        e.outcomes.join(", "),
                        e.policy
                            .as_ref()
                            .map(|p| format!(" (policy {p})"))
                            .unwrap_or_default()
                    ),
                    reviewer,
                );
                i.target = Some(e.target.clone());
                i.role = Some(e.role.clone());
                i.usage = evidence
                    .by_role
                    .get(&(e.user.clone(), e.target.clone(), e.role.clone()))
                    .cloned()
                    .unwrap_or_default();
                i.suggested = suggestion(&i.usage);
                items.push(i);
            }
        }
        if k.scope.covers_kind(ItemKind::Membership) {
            let managed: BTreeSet<String> = self
                .store
                .scim_group_links()
                .await?
                .into_iter()
                .map(|l| l.group)
                .collect();
            for g in self.store.groups().await? {
                if managed.contains(&g.name) {
                    continue;
                }
                let approves = self.is_approver_group(&g.name);
                for m in &g.members {
                    if scoped && !reachable.contains(m) {
                        continue;
                    }
                    let mut i = item(
                        ItemKind::Membership,
                        m,
                        format!(
                            "member of group {}{}",
                            g.name,
                            if approves {
                                " (its members approve)"
                            } else {
                                ""
                            }
                        ),
                        fallback.clone(),
                    );
                    i.group = Some(g.name.clone());
                    i.usage = user_usage(m);
                    i.suggested = suggestion(&i.usage);
                    items.push(i);
                }
            }
        }
        if k.scope.covers_kind(ItemKind::Delegation) {
            for d in self
                .store
                .delegations(&DelegationFilter {
                    live_at: Some(now),
                    ..Default::default()
                })
                .await?
            {
                if scoped && !targets.values().any(|t| d.in_scope(t) && in_scope(t)) {
                    continue;
                }
                let delegator_live = self
                    .store
                    .user(&d.delegator)
                    .await?
                    .is_some_and(|u| !u.disabled);
                let reviewer = if delegator_live
                    && !(d.delegate.kind == DelegateKind::User && d.delegate.name == d.delegator)
                {
                    user_of(&d.delegator)
                } else {
                    fallback.clone()
                };
                let mut i = item(
                    ItemKind::Delegation,
                    &d.delegate.name,
                    format!(
                        "delegation from {} to {}: tasks [{}], roles [{}] on [{}], until {}",
                        d.delegator,
                        d.delegate,
                        d.tasks.join(", "),
                        d.roles.join(", "),
                        d.scope.join(", "),
                        d.expires_at
                    ),
                    reviewer,
                );
                i.delegation = Some(d.id);
                for l in self
                    .store
                    .grant_links(&GrantLinkFilter {
                        delegation: Some(d.id),
                        ..Default::default()
                    })
                    .await?
                {
                    if let Some(g) = self.store.grant(l.grant_id).await?
                        && g.starts_at >= since
                    {
                        i.usage.grants += 1;
                        used(&mut i.usage, g.starts_at);
                    }
                }
                i.suggested = suggestion(&i.usage);
                items.push(i);
            }
        }
        if k.scope.covers_kind(ItemKind::External) {
            for x in self.store.external_accounts().await? {
                if !x.live(now) || (scoped && !reachable.contains(&x.user)) {
                    continue;
                }
                let sponsor_live = self
                    .store
                    .user(&x.sponsor)
                    .await?
                    .is_some_and(|u| !u.disabled);
                let reviewer = if sponsor_live {
                    user_of(&x.sponsor)
                } else {
                    fallback.clone()
                };
                let mut i = item(
                    ItemKind::External,
                    &x.user,
                    format!(
                        "external account sponsored by {}, until {}",
                        x.sponsor, x.expires_at
                    ),
                    reviewer,
                );
                i.usage = user_usage(&x.user);
                i.suggested = suggestion(&i.usage);
                items.push(i);
            }
        }
        let mut errors = vec![];
        if k.scope.covers_kind(ItemKind::Standing)
            && let Some(port) = self.provisioning.clone()
        {
            for name in port.targets() {
                let Some(t) = targets.get(&name) else {
                    continue;
                };
                if !in_scope(t) {
                    continue;
                }
                let holders = self.live_holders(port.as_ref(), &name).await?;
                let found = match port.discover(&name).await {
                    Ok(f) => f,
                    Err(f) => {
                        errors.push(TargetError {
                            target: name.clone(),
                            error: f.message,
                        });
                        continue;
                    }
                };
                for p in found {
                    if super::reconcile::explained_by(&holders, &p).is_some() {
                        continue;
                    }
                    let reviewer = self
                        .target_reviewer(Some(t), &p.account, fallback, &mut known)
                        .await?;
                    let mut i = item(
                        ItemKind::Standing,
                        &p.account,
                        format!(
                            "standing privilege {} of account {} in {}{}, no grant explains it",
                            p.privilege,
                            p.account,
                            name,
                            if p.source.is_empty() {
                                String::new()
                            } else {
                                format!(" ({})", p.source)
                            }
                        ),
                        reviewer,
                    );
                    i.target = Some(name.clone());
                    i.role = Some(p.privilege.clone());
                    i.group = (!p.source.is_empty()).then(|| p.source.clone());
                    items.push(i);
                }
            }
        }
        Ok((items, errors))
    }

    async fn find_campaign(&self, key: &str) -> Result<Campaign> {
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
        let under_review =
            item.kind != ItemKind::Standing && item.user.eq_ignore_ascii_case(&actor.user);
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

    /// Takes away what `item` allows, recording it revoked in the same changeset
    /// (`review.revoked`, and the event of what was done). `by_default`: the campaign's due
    /// date decided, not a reviewer.
    async fn revoke_item(
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
    async fn finish_campaign(&self, actor: &Actor, k: &Campaign) -> Result<()> {
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
                        // Done, or decided meanwhile by its reviewer.
                        Ok(()) | Err(Error::Conflict(_)) => continue,
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
        let p = crate::policy_review::PolicyProposal {
            id: 0,
            base_version: current.version,
            created_at: self.now(),
            created_by: sys.user.clone(),
            comment,
            digest: super::policy::digest(&sources),
            diff: super::policy::diff(&current.sources, &sources),
            sources,
            required: self.policy_approvals.max(1),
            state: crate::policy_review::ProposalState::Pending,
            approvals: vec![],
            decided_at: None,
            decided_by: None,
            decision_comment: None,
            applied_version: None,
            change: None,
            stale: false,
        };
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
        for ((group, name), n) in waiting {
            cs = cs.notice(Notice::AccessReview {
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
            });
        }
        match self.commit(cs).await {
            Ok(_) | Err(StoreError::Conflict(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// An item's audit data.
fn item_data(
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
fn decided_meanwhile(e: StoreError) -> Error {
    match e {
        StoreError::Conflict(m) => Error::Conflict(m),
        e => e.into(),
    }
}
