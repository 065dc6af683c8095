//! Policy properties and blast radius over everyone pedm knows (see [`crate::policy_check`]):
//! every enabled user, every role of every target, every context the policies tell apart.

use super::*;
use crate::decision::{ContextPoint, ContextPoints};
use crate::policy_check::*;
use std::collections::{BTreeMap, BTreeSet};

/// Changes listed at most in one blast-radius report.
pub const MAX_LISTED_CHANGES: usize = 10_000;

/// Everyone and everything a question about every request ranges over.
pub(super) struct World {
    pub(super) actors: Vec<Actor>,
    pub(super) roles: Vec<(Target, Role)>,
}

/// The world in classes the policies cannot tell apart, each decided once: users with the
/// same attributes and groups, roles with the same target kind and labels, name, run-as user,
/// auto-approval mark and duration, unless a policy writes the user's or target's name.
/// `split` keeps apart roles a caller must tell apart (the properties about them).
struct Classes {
    users: Vec<Vec<usize>>,
    roles: Vec<Vec<usize>>,
}

impl Classes {
    fn of(
        world: &World,
        deciders: &[&dyn Decider],
        split: impl Fn(&Target, &Role) -> Vec<bool>,
    ) -> Self {
        let mut written = Some(BTreeSet::new());
        for d in deciders {
            written = match (written, d.written_names()) {
                (Some(mut a), Some(b)) => {
                    a.extend(b);
                    Some(a)
                }
                _ => None,
            };
        }
        let anonymous = |name: &str| written.as_ref().is_some_and(|w| !w.contains(name));
        let mut users: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, a) in world.actors.iter().enumerate() {
            let mut k = a.clone();
            k.token_id = None;
            k.groups.sort();
            if anonymous(&a.user) {
                k.user.clear();
            }
            let key = serde_json::to_string(&k).unwrap_or_else(|_| a.user.clone());
            users.entry(key).or_default().push(i);
        }
        let mut roles: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, (t, r)) in world.roles.iter().enumerate() {
            let named = !anonymous(&t.name) || !anonymous(&format!("{}/{}", t.name, r.name));
            let key = json!([
                if named { t.name.as_str() } else { "" },
                t.kind.as_str(),
                t.labels,
                r.name,
                r.run_as,
                r.auto_approve,
                crate::decision::plain_duration(r),
                split(t, r),
            ])
            .to_string();
            roles.entry(key).or_default().push(i);
        }
        Classes {
            users: users.into_values().collect(),
            roles: roles.into_values().collect(),
        }
    }

    fn coverage(&self, world: &World, points: &ContextPoints) -> Coverage {
        Coverage {
            users: world.actors.len(),
            principal_classes: self.users.len(),
            roles: world.roles.len(),
            role_classes: self.roles.len(),
            contexts: points.points.len(),
            decisions: 0,
            varied: points.varied.clone(),
            complete: points.complete,
        }
    }
}

/// The contexts of every decider, each once (by description).
fn points_of(deciders: &[&dyn Decider], now: Timestamp) -> ContextPoints {
    let mut all = ContextPoints {
        points: vec![],
        varied: vec![],
        complete: true,
    };
    let mut seen = BTreeSet::new();
    for d in deciders {
        let c = d.context_points(now);
        all.complete &= c.complete;
        for v in c.varied {
            if !all.varied.contains(&v) {
                all.varied.push(v);
            }
        }
        all.points.extend(
            c.points
                .into_iter()
                .filter(|p| seen.insert((p.description.clone(), p.break_glass, p.via_agent))),
        );
    }
    all
}

fn principal_at(a: &Actor, p: &ContextPoint) -> Actor {
    Actor {
        via_agent: p.via_agent,
        ..a.clone()
    }
}

fn prove(
    world: &World,
    decider: &dyn Decider,
    props: &[Property],
    now: Timestamp,
) -> PropertyReport {
    let points = points_of(&[decider], now);
    let classes = Classes::of(world, &[decider], |t, r| {
        props.iter().map(|p| p.covers_role(t, r)).collect()
    });
    let mut results: Vec<PropertyResult> = props
        .iter()
        .map(|p| PropertyResult {
            name: p.name.clone(),
            holds: true,
            cases: 0,
            counterexample: None,
        })
        .collect();
    let mut cov = classes.coverage(world, &points);
    let context_in: Vec<Vec<bool>> = props
        .iter()
        .map(|p| {
            points
                .points
                .iter()
                .map(|c| p.covers_context(c.break_glass, c.via_agent))
                .collect()
        })
        .collect();
    for members in &classes.users {
        // Per property: how many of the class it is about, and the first of them.
        let who: Vec<(u64, Option<&Actor>)> = props
            .iter()
            .map(|p| {
                let mut covered = members
                    .iter()
                    .map(|&m| &world.actors[m])
                    .filter(|a| p.covers_principal(a));
                let first = covered.next();
                (first.map_or(0, |_| 1 + covered.count() as u64), first)
            })
            .collect();
        if who.iter().all(|(n, _)| *n == 0) {
            continue;
        }
        let principal = &world.actors[members[0]];
        for roles in &classes.roles {
            let (target, role) = &world.roles[roles[0]];
            let role_in: Vec<bool> = props.iter().map(|p| p.covers_role(target, role)).collect();
            for (pi, point) in points.points.iter().enumerate() {
                let (who, role_in, context_in) = (&who, &role_in, &context_in);
                let in_scope = || {
                    (0..props.len())
                        .filter(move |&i| who[i].0 > 0 && role_in[i] && context_in[i][pi])
                };
                if in_scope().next().is_none() {
                    continue;
                }
                let d = decider.decide_at(&principal_at(principal, point), target, role, point);
                cov.decisions += 1;
                for i in in_scope() {
                    let r = &mut results[i];
                    r.cases += who[i].0 * roles.len() as u64;
                    if r.counterexample.is_some() {
                        continue;
                    }
                    if let (Some(why), Some(first)) = (props[i].broken_by(&d), who[i].1) {
                        let (decision, policy) = super::policy::outcome_words(&d);
                        r.holds = false;
                        r.counterexample = Some(Counterexample {
                            user: first.user.clone(),
                            target: target.name.clone(),
                            role: role.name.clone(),
                            context: point.description.clone(),
                            decision,
                            policy,
                            why,
                        });
                    }
                }
            }
        }
    }
    PropertyReport {
        properties: results,
        coverage: cov,
    }
}

fn blast(
    world: &World,
    current: &dyn Decider,
    candidate: &dyn Decider,
    now: Timestamp,
) -> BlastRadius {
    let points = points_of(&[current, candidate], now);
    let classes = Classes::of(world, &[current, candidate], |_, _| vec![]);
    let mut out = BlastRadius {
        coverage: classes.coverage(world, &points),
        ..Default::default()
    };
    for users in &classes.users {
        let first = &world.actors[users[0]];
        for roles in &classes.roles {
            let (target, role) = &world.roles[roles[0]];
            let mut found: BTreeMap<ChangeKind, (String, String, String)> = BTreeMap::new();
            for point in &points.points {
                let principal = principal_at(first, point);
                let before = current.decide_at(&principal, target, role, point);
                let after = candidate.decide_at(&principal, target, role, point);
                out.coverage.decisions += 2;
                if same_outcome(&before, &after) {
                    continue;
                }
                let (b, _) = super::policy::outcome_words(&before);
                let (a, _) = super::policy::outcome_words(&after);
                if a == b {
                    continue;
                }
                let kind = match (&before, &after) {
                    (RequestDecision::Deny { .. }, _) => ChangeKind::Gains,
                    (_, RequestDecision::Deny { .. }) => ChangeKind::Loses,
                    _ => ChangeKind::Changes,
                };
                found
                    .entry(kind)
                    .or_insert_with(|| (point.description.clone(), b, a));
            }
            for (kind, (context, before, after)) in found {
                for &u in users {
                    for &r in roles {
                        if out.changes.len() >= MAX_LISTED_CHANGES {
                            out.truncated += 1;
                            continue;
                        }
                        let (t, role) = &world.roles[r];
                        out.changes.push(AccessChange {
                            kind: kind.clone(),
                            user: world.actors[u].user.clone(),
                            target: t.name.clone(),
                            role: role.name.clone(),
                            context: context.clone(),
                            before: before.clone(),
                            after: after.clone(),
                        });
                    }
                }
            }
        }
    }
    out.changes.sort_by(|x, y| {
        (&x.target, &x.role, &x.user, &x.kind).cmp(&(&y.target, &y.role, &y.user, &y.kind))
    });
    out
}

/// What the policies let one user do with one role: every outcome short of a denial in the
/// contexts they tell apart (`auto_approve`, `approval(...)`, `break_glass`), and the policy
/// behind the first.
pub(super) struct Eligibility {
    pub(super) user: String,
    pub(super) target: String,
    pub(super) role: String,
    pub(super) outcomes: Vec<String>,
    pub(super) policy: Option<String>,
}

/// Who may request which role of those `keep` selects, over everyone in `world`.
pub(super) fn eligibility(
    world: &World,
    decider: &dyn Decider,
    now: Timestamp,
    keep: impl Fn(&Target, &Role) -> bool,
) -> Vec<Eligibility> {
    let points = points_of(&[decider], now);
    let classes = Classes::of(world, &[decider], |t, r| vec![keep(t, r)]);
    let mut out = vec![];
    for users in &classes.users {
        let first = &world.actors[users[0]];
        for roles in &classes.roles {
            let (target, role) = &world.roles[roles[0]];
            if !keep(target, role) {
                continue;
            }
            let mut outcomes: Vec<String> = vec![];
            let mut policy = None;
            for point in &points.points {
                let d = decider.decide_at(&principal_at(first, point), target, role, point);
                if matches!(d, RequestDecision::Deny { .. }) {
                    continue;
                }
                let (words, by) = super::policy::outcome_words(&d);
                if !outcomes.contains(&words) {
                    if outcomes.is_empty() {
                        policy = by;
                    }
                    outcomes.push(words);
                }
            }
            if outcomes.is_empty() {
                continue;
            }
            for &u in users {
                for &r in roles {
                    let (t, role) = &world.roles[r];
                    out.push(Eligibility {
                        user: world.actors[u].user.clone(),
                        target: t.name.clone(),
                        role: role.name.clone(),
                        outcomes: outcomes.clone(),
                        policy: policy.clone(),
                    });
                }
            }
        }
    }
    out.sort_by(|a, b| (&a.target, &a.role, &a.user).cmp(&(&b.target, &b.role, &b.user)));
    out
}

/// Whether two decisions read the same (cheaper than comparing their words; a `false` is
/// confirmed by the words).
fn same_outcome(a: &RequestDecision, b: &RequestDecision) -> bool {
    match (a, b) {
        (RequestDecision::Deny { .. }, RequestDecision::Deny { .. }) => true,
        (RequestDecision::Permit(x), RequestDecision::Permit(y)) => {
            x.break_glass == y.break_glass
                && x.auto_approve == y.auto_approve
                && (x.break_glass || x.auto_approve || x.tiers == y.tiers)
        }
        _ => false,
    }
}

impl ControlPlane {
    pub(super) async fn policy_world(&self) -> Result<World> {
        // As `actor_of` makes them, from three reads instead of two per user.
        let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for g in self.store.groups().await? {
            for m in g.members {
                groups.entry(m).or_default().push(g.name.clone());
            }
        }
        let sponsors: BTreeMap<String, String> = self
            .store
            .external_accounts()
            .await?
            .into_iter()
            .map(|x| (x.user, x.sponsor))
            .collect();
        let actors = self
            .store
            .users()
            .await?
            .into_iter()
            .filter(|u| !u.disabled)
            .map(|u| {
                let mut groups = groups.remove(&u.name).unwrap_or_default();
                groups.sort();
                let sponsor = sponsors.get(&u.name).cloned();
                Actor {
                    admin: u.admin,
                    groups,
                    token_id: None,
                    external: sponsor.is_some(),
                    sponsor,
                    workload: None,
                    via_agent: false,
                    user: u.name,
                }
            })
            .collect();
        let targets: BTreeMap<String, Target> = self
            .store
            .targets()
            .await?
            .into_iter()
            .map(|t| (t.name.clone(), t))
            .collect();
        let roles = self
            .store
            .roles(None)
            .await?
            .into_iter()
            .filter_map(|r| targets.get(&r.target).map(|t| (t.clone(), r)))
            .collect();
        Ok(World { actors, roles })
    }

    /// Proves `properties` (the configured ones when `None`) for `sources` (the set in force
    /// when `None`) over everyone pedm knows. Changes nothing.
    pub async fn check_policies(
        &self,
        actor: &Actor,
        sources: Option<Vec<PolicySource>>,
        properties: Option<Vec<Property>>,
    ) -> Result<PropertyReport> {
        self.require_admin(actor, AdminAction::ManagePolicies, "policy.check")
            .await?;
        // What a schema cannot say (a name twice, a requirement naming nothing, a policy
        // that does not compile) is 422: well-formed, but nothing to act on.
        let props = match properties {
            Some(p) => {
                check_all(&p).map_err(|m| Error::unprocessable("properties", m))?;
                Arc::new(p)
            }
            None => self.policy_properties.clone(),
        };
        if props.is_empty() {
            // The request is fine; the server has nothing to check it against.
            return Err(Error::unprocessable(
                "properties",
                "no properties to check: give a file, or configure [policy] properties",
            ));
        }
        let decider = match sources {
            Some(s) => {
                Self::check_sources(&s).map_err(|e| match e {
                    Error::Invalid { field, message } => Error::Unprocessable { field, message },
                    e => e,
                })?;
                self.compiler()?
                    .compile(&s)
                    .map_err(|m| Error::unprocessable("policy", m))?
            }
            None => self.decider(),
        };
        self.prove_properties(decider, props).await
    }

    pub(super) async fn prove_properties(
        &self,
        decider: Arc<dyn Decider>,
        props: Arc<Vec<Property>>,
    ) -> Result<PropertyReport> {
        let world = self.policy_world().await?;
        let now = self.now();
        tokio::task::spawn_blocking(move || prove(&world, decider.as_ref(), &props, now))
            .await
            .map_err(|e| Error::Internal(format!("property check failed: {e}")))
    }

    /// The configured properties proved for the set in force; `None` when none are
    /// configured. (A property added to the configuration is enforced on the next apply; the
    /// set already in force is reported here, at start, not replaced.)
    pub async fn properties_in_force(&self) -> Result<Option<PropertyReport>> {
        if self.policy_properties.is_empty() {
            return Ok(None);
        }
        let r = self
            .prove_properties(self.decider(), self.policy_properties.clone())
            .await?;
        Ok(Some(r))
    }

    /// Proves the configured properties for the set in force again (after a change to users,
    /// groups, targets or roles, which can break one without any policy changing), and
    /// reports each counterexample not reported yet by this process: a `policy.property_broken`
    /// event and a high-severity notice. A property that holds again is forgotten, so a later
    /// break is reported anew. Returns how many were reported.
    pub async fn recheck_properties(
        &self,
        reported: &mut std::collections::BTreeSet<String>,
    ) -> Result<usize> {
        let Some(report) = self.properties_in_force().await? else {
            return Ok(0);
        };
        let mut new = 0;
        for p in &report.properties {
            let prefix = format!("{}\u{0}", p.name);
            let (true, Some(c)) = (!p.holds, &p.counterexample) else {
                reported.retain(|k| !k.starts_with(&prefix));
                continue;
            };
            let key = format!("{prefix}{}\u{0}{}/{}", c.user, c.target, c.role);
            if !reported.insert(key) {
                continue;
            }
            let ev = self
                .event(&Actor::system(), "policy.property_broken", None)
                .outcome(Outcome::Failure)
                .data(json!({ "property": p.name, "counterexample": c }));
            let cs = Changeset::new().event(ev).notice(Notice::PropertyBroken {
                property: p.name.clone(),
                counterexample: c.to_string(),
            });
            self.commit(cs).await?;
            new += 1;
        }
        Ok(new)
    }

    /// Refuses `candidate` when it breaks a configured property, with a `policy.rejected`
    /// event naming the property and the counterexample.
    pub(super) async fn keep_properties(
        &self,
        actor: &Actor,
        candidate: &Arc<dyn Decider>,
        sources: &[PolicySource],
    ) -> Result<()> {
        if self.policy_properties.is_empty() {
            return Ok(());
        }
        let report = self
            .prove_properties(candidate.clone(), self.policy_properties.clone())
            .await?;
        let broken: Vec<&PropertyResult> = report.broken().collect();
        if broken.is_empty() {
            return Ok(());
        }
        let text: Vec<String> = broken
            .iter()
            .map(|b| match &b.counterexample {
                Some(c) => format!("{:?}: {c}", b.name),
                None => format!("{:?}", b.name),
            })
            .collect();
        let ev = self
            .event(actor, "policy.rejected", None)
            .outcome(Outcome::Failure)
            .data(json!({
                "error": "breaks a policy property",
                "properties": broken,
                "files": sources.iter().map(|s| &s.name).collect::<Vec<_>>(),
            }));
        self.store.commit(Changeset::new().event(ev)).await?;
        Err(Error::unprocessable(
            "policy",
            format!(
                "this set breaks {}: {}",
                plural(broken.len()),
                text.join("; ")
            ),
        ))
    }

    /// Who gains and who loses which role on which target if `candidate` replaced the set in
    /// force, over everyone pedm knows.
    pub(super) async fn blast_radius(&self, candidate: Arc<dyn Decider>) -> Result<BlastRadius> {
        let world = self.policy_world().await?;
        let current = self.decider();
        let now = self.now();
        tokio::task::spawn_blocking(move || {
            blast(&world, current.as_ref(), candidate.as_ref(), now)
        })
        .await
        .map_err(|e| Error::Internal(format!("blast radius failed: {e}")))
    }
}

fn plural(n: usize) -> String {
    if n == 1 {
        "a policy property".into()
    } else {
        format!("{n} policy properties")
    }
}
