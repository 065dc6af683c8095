//! The items of a new campaign: eligibility from the policies in force, memberships,
//! delegations, external accounts and standing privileges in scope, each with its reviewer
//! and its use in the evidence window.

use super::super::policy_check::eligibility;
use super::super::*;
use super::{group_of, user_of};
use crate::access_review::*;
use crate::delegation::{DelegateKind, Delegatee, DelegationFilter, GrantLinkFilter};
use crate::host::SessionFilter;
use std::collections::{BTreeMap, BTreeSet};

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
                    since: Some(since),
                    ..Default::default()
                })
                .await?
            {
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

    /// Every item of a new campaign, and the targets discovery could not read (with why).
    pub(super) async fn review_items_for(
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
}
