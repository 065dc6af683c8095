//! Loading, indexing (slicing) and evaluating policies.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::rc::Rc;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};

use cedar_policy::{
    ActionConstraint, Authorizer, Context, Decision, Effect, Entities, Entity, EntityId,
    EntityTypeName, EntityUid, Policy, PolicyId, PolicySet, Request, RestrictedExpression, Schema,
    ValidationMode, Validator,
};
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};

use crate::annotations::{self, RequestTerms};
use crate::error::PolicyError;
use crate::query::*;

/// Largest total size of policy sources accepted by [`Engine::load`].
pub const MAX_POLICY_BYTES: usize = 1024 * 1024;

const SCHEMA_TEXT: &str = include_str!("schema.cedarschema");

mod approvers;
pub mod corners;
mod index;
mod step_up;

use index::*;

/// The Cedar schema every policy is validated against (namespace `Pedm`).
pub fn schema_text() -> &'static str {
    SCHEMA_TEXT
}

static SCHEMA: LazyLock<Result<Arc<Schema>, String>> = LazyLock::new(|| {
    Schema::from_cedarschema_str(SCHEMA_TEXT)
        .map(|(s, _warnings)| Arc::new(s))
        .map_err(|e| e.to_string())
});

/// The parsed schema (for callers that want to validate entities or requests themselves).
pub fn schema() -> Result<Arc<Schema>, PolicyError> {
    SCHEMA.clone().map_err(PolicyError::Schema)
}

/// Engine-wide options.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Zone of `context.time` for policies without `@timezone`.
    pub default_timezone: TimeZone,
    /// Largest total input accepted by [`Engine::load`] (sum of source ids and texts);
    /// default [`MAX_POLICY_BYTES`] (1 MiB). Checked before anything is parsed.
    pub max_input_bytes: usize,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            default_timezone: TimeZone::UTC,
            max_input_bytes: MAX_POLICY_BYTES,
        }
    }
}

impl EngineOptions {
    /// Options with a default zone given by IANA name (e.g. `"Europe/Berlin"`).
    pub fn with_timezone(name: &str) -> Result<Self, PolicyError> {
        Ok(EngineOptions {
            default_timezone: TimeZone::get(name).map_err(|e| PolicyError::Annotation {
                policy: "<engine options>".into(),
                message: format!("unknown time zone {name:?}: {e}"),
            })?,
            ..EngineOptions::default()
        })
    }
}

/// A loaded policy, as listed by [`Engine::policies`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyInfo {
    pub id: String,
    /// The source (file) id it was loaded from.
    pub source: String,
    /// `"permit"` or `"forbid"`.
    pub effect: String,
    /// Actions in its scope; `None`: every action.
    pub actions: Option<Vec<String>>,
    pub annotations: BTreeMap<String, String>,
    /// IANA zone `context.time` is computed in for this policy.
    pub timezone: String,
    /// The policy's Cedar text as written.
    pub text: String,
}

#[derive(Debug)]
struct Entry {
    id: String,
    source: String,
    policy: Policy,
    forbid: bool,
    /// `None`: every action.
    actions: Option<Vec<Action>>,
    principal: Scope,
    resource: Scope,
    zone: usize,
    terms: RequestTerms,
    annotations: Vec<(String, String)>,
}

struct Types {
    user: EntityTypeName,
    group: EntityTypeName,
    target: EntityTypeName,
    role: EntityTypeName,
    command: EntityTypeName,
    task: EntityTypeName,
    system: EntityTypeName,
    actions: Vec<EntityUid>,
}

fn type_name(s: &str) -> EntityTypeName {
    EntityTypeName::from_str(s).expect("static type name")
}

impl Types {
    fn new() -> Types {
        let action_ty = type_name("Pedm::Action");
        Types {
            user: type_name("Pedm::User"),
            group: type_name("Pedm::Group"),
            target: type_name("Pedm::Target"),
            role: type_name("Pedm::Role"),
            command: type_name("Pedm::Command"),
            task: type_name("Pedm::Task"),
            system: type_name("Pedm::System"),
            actions: Action::ALL
                .iter()
                .map(|a| {
                    EntityUid::from_type_name_and_id(action_ty.clone(), EntityId::new(a.as_str()))
                })
                .collect(),
        }
    }
}

const USER: &str = "Pedm::User";
const GROUP: &str = "Pedm::Group";
const TARGET: &str = "Pedm::Target";
const ROLE: &str = "Pedm::Role";
const COMMAND: &str = "Pedm::Command";
const TASK: &str = "Pedm::Task";
const SYSTEM: &str = "Pedm::System";
const TY_USER: u32 = 0;
const TY_GROUP: u32 = 1;
const TY_TARGET: u32 = 2;
const TY_ROLE: u32 = 3;
const TY_COMMAND: u32 = 4;
const TY_TASK: u32 = 5;
const TY_SYSTEM: u32 = 6;
static NEXT_ENGINE_UID: AtomicU64 = AtomicU64::new(1);

/// The id of the single `Pedm::System` entity.
pub const SYSTEM_ID: &str = "pedm";

/// An immutable, validated, indexed policy set. Swap whole engines to change policies.
pub struct Engine {
    /// Unique per loaded engine (keys the per-thread slice cache; never reused).
    uid: u64,
    policies: Vec<Entry>,
    by_id: FastMap<String, u32>,
    /// Index 0 is the default zone.
    zones: Vec<(String, TimeZone)>,
    index: Vec<ActionIndex>,
    compact: Vec<Compact>,
    interner: Interner,
    /// All policies of each zone (for the unsliced evaluation).
    full: Vec<PolicySet>,
    types: Types,
    authorizer: Authorizer,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("policies", &self.policies.len())
            .field(
                "zones",
                &self.zones.iter().map(|z| &z.0).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// Raw result of evaluating the candidate policies, as Cedar would on one set:
/// the satisfied forbids, the satisfied permits (empty when a forbid applies) and the
/// evaluation errors, each sorted by policy id.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Evaluation {
    pub forbids: Vec<String>,
    pub permits: Vec<String>,
    /// `(policy id, message)`.
    pub errors: Vec<(String, String)>,
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rfind('\n')
        .map_or(before.len(), |p| before.len() - p - 1)
        + 1;
    (line, col)
}

fn format_parse_errors(text: &str, errs: &cedar_policy::ParseErrors) -> String {
    use miette::Diagnostic;
    errs.iter()
        .map(|e| {
            let loc = e
                .labels()
                .and_then(|mut l| l.next())
                .map(|l| {
                    let (line, col) = line_col(text, l.offset());
                    format!("line {line}, column {col}: ")
                })
                .unwrap_or_default();
            let help = e.help().map(|h| format!(" ({h})")).unwrap_or_default();
            format!("{loc}{e}{help}")
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn is_request_only(actions: &Option<Vec<Action>>) -> bool {
    matches!(actions.as_deref(), Some([Action::Request]))
}

impl Engine {
    /// Parse, check and index `sources` (`(source id, Cedar text)`, each text holding any
    /// number of policies). Every error refuses the whole set.
    pub fn load(sources: &[(String, String)], opts: EngineOptions) -> Result<Engine, PolicyError> {
        let size: usize = sources.iter().map(|(id, t)| id.len() + t.len()).sum();
        if size > opts.max_input_bytes {
            return Err(PolicyError::TooLarge {
                size,
                limit: opts.max_input_bytes,
            });
        }
        let schema = schema()?;
        let types = Types::new();
        let default_name = opts
            .default_timezone
            .iana_name()
            .unwrap_or("default")
            .to_string();
        let mut zones = vec![(default_name, opts.default_timezone.clone())];
        let mut entries: Vec<Entry> = Vec::new();
        let mut by_id: FastMap<String, u32> = FastMap::default();

        for (source_id, text) in sources {
            let parsed = PolicySet::from_str(text).map_err(|e| PolicyError::Parse {
                source_id: source_id.clone(),
                message: format_parse_errors(text, &e),
            })?;
            if parsed.templates().next().is_some() {
                return Err(PolicyError::Parse {
                    source_id: source_id.clone(),
                    message: "policy templates (?principal / ?resource slots) are not supported"
                        .into(),
                });
            }
            // `from_str` names the policies policy0, policy1, ... in source order.
            let mut numbered: Vec<(usize, &Policy)> = parsed
                .policies()
                .map(|p| {
                    let n = p
                        .id()
                        .to_string()
                        .strip_prefix("policy")
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(usize::MAX);
                    (n, p)
                })
                .collect();
            numbered.sort_by_key(|(n, _)| *n);
            for (n, p) in numbered {
                let id = match p.annotation(annotations::ID) {
                    Some(v) if v.trim().is_empty() => {
                        return Err(PolicyError::Annotation {
                            policy: format!("{source_id}#{n}"),
                            message: "@id is empty".into(),
                        });
                    }
                    Some(v) => v.to_string(),
                    None => format!("{source_id}#{n}"),
                };
                if let Some(&first) = by_id.get(&id) {
                    return Err(PolicyError::DuplicateId {
                        id,
                        first: entries[first as usize].source.clone(),
                        second: source_id.clone(),
                    });
                }
                let policy = p.new_id(PolicyId::new(&id));
                let forbid = policy.effect() == Effect::Forbid;
                let actions = match policy.action_constraint() {
                    ActionConstraint::Any => None,
                    ActionConstraint::Eq(a) => Some(vec![a]),
                    ActionConstraint::In(v) => Some(v),
                }
                .map(|uids| {
                    let mut acts: Vec<Action> = uids
                        .iter()
                        .filter_map(|u| {
                            (u.type_name().to_string() == "Pedm::Action")
                                .then(|| Action::parse(u.id().unescaped()))
                                .flatten()
                        })
                        .collect();
                    acts.sort();
                    acts.dedup();
                    acts
                });
                let anns: Vec<(String, String)> = policy
                    .annotations()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                let terms = annotations::check(
                    &anns,
                    !forbid,
                    !forbid && is_request_only(&actions),
                    !forbid && matches!(actions.as_deref(), Some([Action::Exec])),
                )
                .map_err(|message| PolicyError::Annotation {
                    policy: id.clone(),
                    message,
                })?;
                let zone = match policy.annotation(annotations::TIMEZONE) {
                    None => 0,
                    Some(name) => {
                        if let Some(i) = zones.iter().position(|(z, _)| z == name) {
                            i
                        } else {
                            let tz = TimeZone::get(name).map_err(|e| PolicyError::Annotation {
                                policy: id.clone(),
                                message: format!("@timezone({name:?}): unknown time zone: {e}"),
                            })?;
                            zones.push((name.to_string(), tz));
                            zones.len() - 1
                        }
                    }
                };
                by_id.insert(id.clone(), entries.len() as u32);
                entries.push(Entry {
                    id,
                    source: source_id.clone(),
                    principal: principal_scope(policy.principal_constraint()),
                    resource: resource_scope(policy.resource_constraint()),
                    policy,
                    forbid,
                    actions,
                    zone,
                    terms,
                    annotations: anns,
                });
            }
        }

        // Strict validation of the whole set at once.
        let all =
            PolicySet::from_policies(entries.iter().map(|e| e.policy.clone())).map_err(|e| {
                PolicyError::Parse {
                    source_id: "<set>".into(),
                    message: e.to_string(),
                }
            })?;
        let validator = Validator::new((*schema).clone());
        let result = validator.validate(&all, ValidationMode::Strict);
        let mut errors: Vec<(u32, String, String)> = result
            .validation_errors()
            .map(|e| {
                let id = e.policy_id().to_string();
                let order = by_id.get(&id).copied().unwrap_or(u32::MAX);
                (order, id, e.to_string())
            })
            .collect();
        // Warnings are refused too: an impossible policy or a wrongly applied action can
        // never apply (surely a mistake), and bidi / confusable characters hide intent.
        errors.extend(result.validation_warnings().map(|w| {
            let id = w.policy_id().to_string();
            let order = by_id.get(&id).copied().unwrap_or(u32::MAX);
            (order, id, w.to_string())
        }));
        if !errors.is_empty() {
            errors.sort();
            return Err(PolicyError::Validation {
                errors: errors.into_iter().map(|(_, id, m)| (id, m)).collect(),
            });
        }

        // Index.
        let mut interner = Interner::default();
        for t in [USER, GROUP, TARGET, ROLE, COMMAND, TASK, SYSTEM] {
            interner.ty(t); // fixed ids 0..=6, see TY_*
        }
        let mut compact = Vec::with_capacity(entries.len());
        let mut index: Vec<ActionIndex> =
            Action::ALL.iter().map(|_| ActionIndex::default()).collect();
        for (i, e) in entries.iter().enumerate() {
            compact.push(Compact {
                principal: interner.scope(&e.principal),
                resource: interner.scope(&e.resource),
                label: leading_label(&e.policy).map_or(NO_LABEL, |l| interner.label(&l)),
            });
            let pk = e.principal.key().map(|k| interner.key(k));
            let rk = e.resource.key().map(|k| interner.key(k));
            let acts: Vec<Action> = match &e.actions {
                None => Action::ALL.to_vec(),
                Some(a) => a.clone(),
            };
            for a in acts {
                let ix = &mut index[a.index()];
                let bucket = match (pk, rk) {
                    (Some(p), Some(r)) => ix.by_pair.entry((p, r)).or_default(),
                    (Some(p), None) => ix.by_principal.entry(p).or_default(),
                    (None, Some(r)) => ix.by_resource.entry(r).or_default(),
                    (None, None) => &mut ix.always,
                };
                bucket.push(i as u32);
            }
        }
        let mut full = Vec::new();
        for z in 0..zones.len() {
            full.push(
                PolicySet::from_policies(
                    entries
                        .iter()
                        .filter(|e| e.zone == z)
                        .map(|e| e.policy.clone()),
                )
                .map_err(|e| PolicyError::Schema(e.to_string()))?,
            );
        }

        Ok(Engine {
            uid: NEXT_ENGINE_UID.fetch_add(1, Ordering::Relaxed),
            policies: entries,
            by_id,
            zones,
            index,
            compact,
            interner,
            full,
            types,
            authorizer: Authorizer::new(),
        })
    }

    /// Number of loaded policies.
    pub fn len(&self) -> usize {
        self.policies.len()
    }

    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    /// Every policy, in load order.
    pub fn policies(&self) -> Vec<PolicyInfo> {
        self.policies
            .iter()
            .map(|e| PolicyInfo {
                id: e.id.clone(),
                source: e.source.clone(),
                effect: if e.forbid { "forbid" } else { "permit" }.into(),
                actions: e
                    .actions
                    .as_ref()
                    .map(|a| a.iter().map(|a| a.as_str().to_string()).collect()),
                annotations: e.annotations.iter().cloned().collect(),
                timezone: self.zones[e.zone].0.clone(),
                text: e.policy.to_string(),
            })
            .collect()
    }

    /// Decide a `request` with the policy slice that can apply (the fast path).
    pub fn decide_request(&self, q: &RequestQuery) -> RequestVerdict {
        let eval = self.evaluate_view(&View::of_request(q), true);
        self.request_verdict(q, eval)
    }

    /// Decide a `request` by evaluating every policy (reference semantics; tests and bench).
    pub fn decide_request_full(&self, q: &RequestQuery) -> RequestVerdict {
        let eval = self.evaluate_view(&View::of_request(q), false);
        self.request_verdict(q, eval)
    }

    /// Authorise any action. For `request` this is `decide_request(..).is_permit()`.
    /// For `approve`, `requester` is required and must differ from the approver.
    pub fn authorize(&self, q: &AuthzQuery) -> Verdict {
        self.authorize_with(q, true)
    }

    /// Like [`Engine::authorize`] but evaluating every policy (reference semantics).
    pub fn authorize_full(&self, q: &AuthzQuery) -> Verdict {
        self.authorize_with(q, false)
    }

    fn authorize_with(&self, q: &AuthzQuery, sliced: bool) -> Verdict {
        if q.action == Action::Request
            && let Resource::Role { target, role } = &q.resource
        {
            let rq = RequestQuery {
                principal: q.principal.clone(),
                target: target.clone(),
                role: role.clone(),
                context: q.context.clone(),
            };
            let eval = self.evaluate_view(&View::of_request(&rq), sliced);
            return match self.request_verdict(&rq, eval) {
                RequestVerdict::Permit(r) => Verdict {
                    allowed: true,
                    reason: format!("permitted by {}", r.policy),
                    policies: vec![r.policy],
                    errors: vec![],
                },
                RequestVerdict::Deny {
                    policies,
                    reason,
                    errors,
                } => Verdict {
                    allowed: false,
                    policies,
                    errors,
                    reason,
                },
            };
        }
        if q.action == Action::Approve {
            match &q.requester {
                None => {
                    return deny_verdict("approve needs the requester (context.requester)");
                }
                Some(r) if r.user == q.principal.user => {
                    return deny_verdict("nobody may approve their own request");
                }
                Some(_) => {}
            }
        }
        let mut eval = self.evaluate(q, sliced);
        // A step-up permit never allows by itself: it makes the exec approvable
        // ([`Engine::step_up`]).
        eval.permits.retain(|id| self.step_up_terms(id).is_none());
        verdict_of(q, eval)
    }

    /// The raw Cedar outcome for `q`, from the slice (`sliced`) or the whole set.
    /// Sliced and full evaluations are always equal (see the property test).
    pub fn evaluate(&self, q: &AuthzQuery, sliced: bool) -> Evaluation {
        self.evaluate_view(&View::of(q), sliced)
    }

    fn evaluate_view(&self, q: &View<'_>, sliced: bool) -> Evaluation {
        // The slice, per zone (sorted ids), before anything is built for Cedar.
        let mut per_zone: Vec<Vec<u32>> = Vec::new();
        if sliced {
            for i in self.candidates(q) {
                let zone = self.policies[i as usize].zone;
                if per_zone.len() <= zone {
                    per_zone.resize_with(zone + 1, Vec::new);
                }
                per_zone[zone].push(i);
            }
            if per_zone.iter().all(Vec::is_empty) {
                // No policy can apply or error: Cedar would return nothing. Only the
                // request's own errors remain (as from `entities`).
                return match Self::check_request(q) {
                    Ok(()) => Evaluation::default(),
                    Err(m) => Evaluation {
                        errors: vec![("<request>".into(), m)],
                        ..Evaluation::default()
                    },
                };
            }
        }
        let entities = match self.entities(q) {
            Ok(e) => e,
            Err(m) => {
                return Evaluation {
                    errors: vec![("<request>".into(), m)],
                    ..Evaluation::default()
                };
            }
        };
        let p_uid = EntityUid::from_type_name_and_id(
            self.types.user.clone(),
            EntityId::new(&q.principal.user),
        );
        let r_uid = self.resource_uid(q.resource);
        let a_uid = self.types.actions[q.action.index()].clone();

        let mut out = Evaluation::default();
        let run = |out: &mut Evaluation, zone: usize, set: &PolicySet| {
            let context = match self.context(q, zone) {
                Ok(c) => c,
                Err(m) => {
                    out.errors.push(("<request>".into(), m));
                    return;
                }
            };
            let request =
                match Request::new(p_uid.clone(), a_uid.clone(), r_uid.clone(), context, None) {
                    Ok(r) => r,
                    Err(e) => {
                        out.errors.push(("<request>".into(), e.to_string()));
                        return;
                    }
                };
            let resp = self.authorizer.is_authorized(&request, set, &entities);
            for pid in resp.diagnostics().reason() {
                let id = pid.to_string();
                match self.by_id.get(&id) {
                    Some(&i) if self.policies[i as usize].forbid => out.forbids.push(id),
                    _ => out.permits.push(id),
                }
            }
            for e in resp.diagnostics().errors() {
                let cedar_policy::AuthorizationError::PolicyEvaluationError(pe) = e;
                out.errors
                    .push((pe.policy_id().to_string(), pe.inner().to_string()));
            }
            debug_assert!(resp.decision() == Decision::Deny || !out.permits.is_empty());
        };

        if sliced {
            for (zone, mut ids) in per_zone.into_iter().enumerate() {
                if ids.is_empty() {
                    continue;
                }
                ids.sort_unstable();
                match self.slice_set(zone, ids) {
                    Ok(set) => run(&mut out, zone, &set),
                    Err(e) => out.errors.push(("<slice>".into(), e)),
                }
            }
        } else {
            for (zone, set) in self.full.iter().enumerate() {
                if !set.is_empty() {
                    run(&mut out, zone, set);
                }
            }
        }
        out.forbids.sort();
        out.permits.sort();
        out.errors.sort();
        if !out.forbids.is_empty() {
            out.permits.clear();
        }
        out
    }

    /// The Cedar policy set of one zone's slice (`ids` sorted). Slices repeat a lot (most
    /// queries share the same few global policies), so built sets are cached per thread,
    /// keyed by this engine and the ids; the cache is bounded and reset when another engine
    /// is used on the thread.
    fn slice_set(&self, zone: usize, ids: Vec<u32>) -> Result<Rc<PolicySet>, String> {
        /// Sets per generation: a full current generation becomes the old one, and sets
        /// found in the old one move back to the current (as for `ip_expression`).
        const GENERATION: usize = 2048;
        type Gen = FastMap<(usize, Vec<u32>), Rc<PolicySet>>;
        thread_local! {
            static SLICES: RefCell<(u64, Gen, Gen)> =
                RefCell::new((0, Gen::default(), Gen::default()));
        }
        let key = (zone, ids);
        let hit = SLICES.with(|c| {
            let mut c = c.borrow_mut();
            let (engine, cur, old) = &mut *c;
            if *engine != self.uid {
                *engine = self.uid;
                cur.clear();
                old.clear();
                return None;
            }
            if let Some(set) = cur.get(&key) {
                return Some(set.clone());
            }
            let set = old.remove(&key)?;
            if cur.len() >= GENERATION {
                *old = std::mem::take(cur);
            }
            cur.insert(key.clone(), set.clone());
            Some(set)
        });
        if let Some(set) = hit {
            return Ok(set);
        }
        let set = Rc::new(
            PolicySet::from_policies(
                key.1
                    .iter()
                    .map(|&i| self.policies[i as usize].policy.clone()),
            )
            .map_err(|e| e.to_string())?,
        );
        SLICES.with(|c| {
            let mut c = c.borrow_mut();
            let (_, cur, old) = &mut *c;
            if cur.len() >= GENERATION {
                *old = std::mem::take(cur);
            }
            cur.insert(key, set.clone());
        });
        Ok(set)
    }

    /// How many policies the slice for `q` holds (what Cedar is handed; diagnostics).
    pub fn slice_len(&self, q: &AuthzQuery) -> usize {
        self.candidates(&View::of(q)).len()
    }

    /// The policies that can apply to `q`: bucket lookups, then Cedar's exact scope rules
    /// and the leading-label filter (see [`leading_label`]).
    fn candidates(&self, q: &View<'_>) -> Vec<u32> {
        let (principal, resource) = self.nodes(q);
        let labels: Option<Vec<u32>> = match q.resource {
            ResView::System => None,
            ResView::Role(t, ..)
            | ResView::Command(t, ..)
            | ResView::Task(t, _)
            | ResView::Target(t) => {
                let mut buf = String::new();
                Some(
                    t.labels
                        .iter()
                        .filter_map(|(k, v)| {
                            buf.clear();
                            buf.push_str(k);
                            buf.push('=');
                            buf.push_str(v);
                            self.interner.labels.get(buf.as_str()).copied()
                        })
                        .collect(),
                )
            }
        };
        let ix = &self.index[q.action.index()];
        let mut out = Vec::new();
        let mut take = |i: u32| {
            let c = &self.compact[i as usize];
            if c.principal.matches(&principal)
                && c.resource.matches(&resource)
                && (c.label == NO_LABEL || labels.as_ref().is_none_or(|l| l.contains(&c.label)))
            {
                out.push(i);
            }
        };
        for p in principal.keys() {
            for r in resource.keys() {
                if let Some(v) = ix.by_pair.get(&(p, r)) {
                    v.iter().copied().for_each(&mut take);
                }
            }
            if let Some(v) = ix.by_principal.get(&p) {
                v.iter().copied().for_each(&mut take);
            }
        }
        for r in resource.keys() {
            if let Some(v) = ix.by_resource.get(&r) {
                v.iter().copied().for_each(&mut take);
            }
        }
        ix.always.iter().copied().for_each(&mut take);
        out
    }

    fn resource_uid(&self, r: ResView<'_>) -> EntityUid {
        match r {
            ResView::Role(t, role) => self.ruid(t, role),
            ResView::Command(t, role, c) => EntityUid::from_type_name_and_id(
                self.types.command.clone(),
                EntityId::new(command_id(t, role, c)),
            ),
            ResView::Task(t, task) => EntityUid::from_type_name_and_id(
                self.types.task.clone(),
                EntityId::new(task_id(t, task)),
            ),
            ResView::Target(t) => self.tuid(t),
            ResView::System => EntityUid::from_type_name_and_id(
                self.types.system.clone(),
                EntityId::new(SYSTEM_ID),
            ),
        }
    }

    /// Interned principal and resource with all their ancestors (deduplicated).
    fn nodes(&self, q: &View<'_>) -> (CNode, CNode) {
        let it = &self.interner;
        let mut groups: Vec<u32> = q
            .principal
            .groups
            .iter()
            .filter_map(|g| it.lookup(TY_GROUP, g))
            .collect();
        groups.sort_unstable();
        groups.dedup();
        let principal = CNode {
            ty: TY_USER,
            me: it.lookup(TY_USER, &q.principal.user),
            ancestors: groups,
        };
        let target = |t: &TargetRef| it.lookup(TY_TARGET, &t.name);
        let role = |t: &TargetRef, r: &RoleRef| it.lookup(TY_ROLE, &role_id(t, r));
        let resource = match q.resource {
            ResView::Role(t, r) => CNode {
                ty: TY_ROLE,
                me: role(t, r),
                ancestors: target(t).into_iter().collect(),
            },
            ResView::Command(t, r, c) => CNode {
                ty: TY_COMMAND,
                me: it.lookup(TY_COMMAND, &command_id(t, r, c)),
                ancestors: role(t, r).into_iter().chain(target(t)).collect(),
            },
            ResView::Task(t, task) => CNode {
                ty: TY_TASK,
                me: it.lookup(TY_TASK, &task_id(t, task)),
                ancestors: target(t).into_iter().collect(),
            },
            ResView::Target(t) => CNode {
                ty: TY_TARGET,
                me: target(t),
                ancestors: vec![],
            },
            ResView::System => CNode {
                ty: TY_SYSTEM,
                me: it.lookup(TY_SYSTEM, SYSTEM_ID),
                ancestors: vec![],
            },
        };
        (principal, resource)
    }

    fn user_entity(&self, p: &Principal) -> Result<Entity, String> {
        let parents: HashSet<EntityUid> = p
            .groups
            .iter()
            .map(|g| EntityUid::from_type_name_and_id(self.types.group.clone(), EntityId::new(g)))
            .collect();
        let uid = EntityUid::from_type_name_and_id(self.types.user.clone(), EntityId::new(&p.user));
        let mut attrs = HashMap::from([
            ("admin".to_string(), RestrictedExpression::new_bool(p.admin)),
            (
                "external".to_string(),
                RestrictedExpression::new_bool(p.external),
            ),
            (
                "on_call".to_string(),
                RestrictedExpression::new_bool(p.on_call),
            ),
        ]);
        if let Some(s) = &p.sponsor {
            attrs.insert(
                "sponsor".into(),
                RestrictedExpression::new_string(s.clone()),
            );
        }
        if let Some(w) = &p.workload {
            let s = |v: &str| RestrictedExpression::new_string(v.to_string());
            let mut record = vec![
                ("trust".to_string(), s(&w.trust)),
                ("issuer".to_string(), s(&w.issuer)),
                ("subject".to_string(), s(&w.subject)),
            ];
            for (k, v) in [
                ("repository", &w.repository),
                ("git_ref", &w.git_ref),
                ("environment", &w.environment),
                ("workflow", &w.workflow),
                ("namespace", &w.namespace),
                ("service_account", &w.service_account),
            ] {
                if let Some(v) = v {
                    record.push((k.to_string(), s(v)));
                }
            }
            attrs.insert(
                "workload".into(),
                RestrictedExpression::new_record(record).map_err(|e| e.to_string())?,
            );
        }
        Entity::new(uid, attrs, parents).map_err(|e| e.to_string())
    }

    fn target_attrs(t: &TargetRef) -> HashMap<String, RestrictedExpression> {
        let mut attrs = HashMap::with_capacity(8);
        attrs.insert(
            "kind".into(),
            RestrictedExpression::new_string(t.kind.clone()),
        );
        attrs.insert(
            "labels".into(),
            RestrictedExpression::new_set(
                t.labels
                    .iter()
                    .map(|(k, v)| RestrictedExpression::new_string(format!("{k}={v}"))),
            ),
        );
        attrs
    }

    fn tuid(&self, t: &TargetRef) -> EntityUid {
        EntityUid::from_type_name_and_id(self.types.target.clone(), EntityId::new(&t.name))
    }

    fn ruid(&self, t: &TargetRef, r: &RoleRef) -> EntityUid {
        EntityUid::from_type_name_and_id(self.types.role.clone(), EntityId::new(role_id(t, r)))
    }

    /// The entity store of one query: the principal (parents: its groups), the requester for
    /// `approve`, and the resource. Every entity lists *all* its ancestors as parents
    /// (a command: its role and target), so group, target and role entities need not be in
    /// the store: no policy can reach their attributes (no attribute holds an entity
    /// reference), and `in` only looks at ancestors.
    fn entities(&self, q: &View<'_>) -> Result<Entities, String> {
        Self::check_request(q)?;
        let mut list = Vec::with_capacity(3);
        list.push(self.user_entity(q.principal)?);
        if q.action == Action::Approve
            && let Some(r) = q.requester
        {
            list.push(self.user_entity(r)?);
        }
        let resource = match q.resource {
            ResView::Role(target, role) => {
                let mut attrs = Self::target_attrs(target);
                attrs.insert(
                    "name".into(),
                    RestrictedExpression::new_string(role.name.clone()),
                );
                attrs.insert(
                    "target".into(),
                    RestrictedExpression::new_string(target.name.clone()),
                );
                if let Some(ra) = &role.run_as {
                    attrs.insert(
                        "run_as".into(),
                        RestrictedExpression::new_string(ra.clone()),
                    );
                }
                attrs.insert(
                    "auto_approve".into(),
                    RestrictedExpression::new_bool(role.auto_approve),
                );
                Entity::new(
                    self.ruid(target, role),
                    attrs,
                    HashSet::from([self.tuid(target)]),
                )
            }
            ResView::Command(target, role, command) => {
                let mut attrs = Self::target_attrs(target);
                attrs.insert(
                    "path".into(),
                    RestrictedExpression::new_string(command.path.clone()),
                );
                attrs.insert(
                    "args".into(),
                    RestrictedExpression::new_string(command.args.clone()),
                );
                attrs.insert(
                    "role".into(),
                    RestrictedExpression::new_string(role.name.clone()),
                );
                attrs.insert(
                    "target".into(),
                    RestrictedExpression::new_string(target.name.clone()),
                );
                if let Some(h) = &command.sha256 {
                    attrs.insert("sha256".into(), RestrictedExpression::new_string(h.clone()));
                }
                attrs.insert(
                    "shell".into(),
                    RestrictedExpression::new_bool(command.shell),
                );
                let uid = EntityUid::from_type_name_and_id(
                    self.types.command.clone(),
                    EntityId::new(command_id(target, role, command)),
                );
                Entity::new(
                    uid,
                    attrs,
                    HashSet::from([self.ruid(target, role), self.tuid(target)]),
                )
            }
            ResView::Task(target, task) => {
                let mut attrs = Self::target_attrs(target);
                attrs.insert(
                    "name".into(),
                    RestrictedExpression::new_string(task.to_string()),
                );
                attrs.insert(
                    "target".into(),
                    RestrictedExpression::new_string(target.name.clone()),
                );
                let uid = EntityUid::from_type_name_and_id(
                    self.types.task.clone(),
                    EntityId::new(task_id(target, task)),
                );
                Entity::new(uid, attrs, HashSet::from([self.tuid(target)]))
            }
            ResView::Target(t) => {
                let mut attrs = Self::target_attrs(t);
                attrs.insert(
                    "name".into(),
                    RestrictedExpression::new_string(t.name.clone()),
                );
                Entity::new(self.tuid(t), attrs, HashSet::new())
            }
            ResView::System => Ok(Entity::new_no_attrs(
                EntityUid::from_type_name_and_id(
                    self.types.system.clone(),
                    EntityId::new(SYSTEM_ID),
                ),
                HashSet::new(),
            )),
        }
        .map_err(|e| e.to_string())?;
        list.push(resource);
        // `add_entities` on an empty store computes the same transitive closure as
        // `from_entities` (incrementally; about half the cost for a handful of entities)
        // and refuses the same duplicates. No schema: the entities are built exactly per
        // the schema above (the tests check it), so re-checking them per query is waste.
        Entities::empty()
            .add_entities(list, None)
            .map_err(|e| e.to_string())
    }

    /// The request errors [`Engine::entities`] reports before building anything.
    fn check_request(q: &View<'_>) -> Result<(), String> {
        if q.action == Action::Approve
            && let Some(r) = q.requester
            && r.user == q.principal.user
        {
            return Err("the requester cannot be the approver".into());
        }
        Ok(())
    }

    fn context(&self, q: &View<'_>, zone: usize) -> Result<Context, String> {
        let c = q.context;
        let dt = self.zones[zone].1.to_datetime(c.now);
        let time = RestrictedExpression::new_record([
            (
                "hour".to_string(),
                RestrictedExpression::new_long(i64::from(dt.hour())),
            ),
            (
                "minute_of_day".to_string(),
                RestrictedExpression::new_long(i64::from(dt.hour()) * 60 + i64::from(dt.minute())),
            ),
            (
                "weekday".to_string(),
                RestrictedExpression::new_long(i64::from(dt.weekday().to_monday_one_offset())),
            ),
            (
                "day_of_month".to_string(),
                RestrictedExpression::new_long(i64::from(dt.day())),
            ),
        ])
        .map_err(|e| e.to_string())?;
        let mut dev = Vec::new();
        if let Some(m) = c.device.managed {
            dev.push(("managed".to_string(), RestrictedExpression::new_bool(m)));
        }
        if let Some(m) = c.device.compliant {
            dev.push(("compliant".to_string(), RestrictedExpression::new_bool(m)));
        }
        let d = &c.device;
        for (k, v) in [("os", &d.os), ("id", &d.id), ("os_version", &d.os_version)] {
            if let Some(v) = v {
                dev.push((k.to_string(), RestrictedExpression::new_string(v.clone())));
            }
        }
        for (k, v) in [
            ("trusted", d.trusted),
            ("disk_encrypted", d.disk_encrypted),
            ("screen_lock", d.screen_lock),
        ] {
            if let Some(v) = v {
                dev.push((k.to_string(), RestrictedExpression::new_bool(v)));
            }
        }
        if let Some(at) = d.enrolled_at {
            dev.push((
                "enrolled_at".to_string(),
                RestrictedExpression::new_long(at),
            ));
        }
        let device = RestrictedExpression::new_record(dev).map_err(|e| e.to_string())?;
        let mut pairs = vec![
            (
                "duration_secs".to_string(),
                RestrictedExpression::new_long(c.duration_secs),
            ),
            (
                "break_glass".to_string(),
                RestrictedExpression::new_bool(c.break_glass),
            ),
            (
                "has_ticket".to_string(),
                RestrictedExpression::new_bool(c.has_ticket),
            ),
            (
                "extension".to_string(),
                RestrictedExpression::new_bool(c.extension),
            ),
            (
                "starts_in_secs".to_string(),
                RestrictedExpression::new_long(c.starts_in_secs),
            ),
            (
                "via_agent".to_string(),
                RestrictedExpression::new_bool(c.via_agent),
            ),
            ("risk".to_string(), RestrictedExpression::new_long(c.risk)),
            ("device".to_string(), device),
            ("time".to_string(), time),
        ];
        if let Some(ip) = c.source_ip {
            pairs.push(("source_ip".to_string(), ip_expression(ip)));
        }
        if let Some(t) = &c.ticket {
            let ticket = RestrictedExpression::new_record([
                (
                    "system".to_string(),
                    RestrictedExpression::new_string(t.system.clone()),
                ),
                (
                    "state".to_string(),
                    RestrictedExpression::new_string(t.state.clone()),
                ),
                (
                    "priority".to_string(),
                    RestrictedExpression::new_string(t.priority.clone()),
                ),
                (
                    "assigned_to_requester".to_string(),
                    RestrictedExpression::new_bool(t.assigned_to_requester),
                ),
                (
                    "in_window".to_string(),
                    RestrictedExpression::new_bool(t.in_window),
                ),
            ])
            .map_err(|e| e.to_string())?;
            pairs.push(("ticket".to_string(), ticket));
        }
        if let ResView::Command(_, _, command) = q.resource
            && let Some(cwd) = &command.cwd
        {
            pairs.push((
                "cwd".to_string(),
                RestrictedExpression::new_string(cwd.clone()),
            ));
        }
        if q.action == Action::Approve
            && let Some(r) = q.requester
        {
            pairs.push((
                "requester".to_string(),
                RestrictedExpression::new_entity_uid(EntityUid::from_type_name_and_id(
                    self.types.user.clone(),
                    EntityId::new(&r.user),
                )),
            ));
        }
        Context::from_pairs(pairs).map_err(|e| e.to_string())
    }

    fn request_verdict(&self, q: &RequestQuery, eval: Evaluation) -> RequestVerdict {
        if !eval.errors.is_empty() {
            let mut policies: Vec<String> = eval.errors.iter().map(|(id, _)| id.clone()).collect();
            policies.dedup();
            let errors: Vec<String> = eval
                .errors
                .iter()
                .map(|(id, m)| format!("{id}: {m}"))
                .collect();
            return RequestVerdict::Deny {
                reason: format!(
                    "policy evaluation failed ({}); denied because errors never permit",
                    errors.join("; ")
                ),
                policies,
                errors,
            };
        }
        if !eval.forbids.is_empty() {
            return RequestVerdict::Deny {
                reason: format!("denied by forbid policy {}", eval.forbids.join(", ")),
                policies: eval.forbids,
                errors: vec![],
            };
        }
        let what = format!(
            "user {} to request role {} on target {}",
            q.principal.user, q.role.name, q.target.name
        );
        if eval.permits.is_empty() {
            return RequestVerdict::Deny {
                policies: vec![],
                reason: format!("no policy permits {what}"),
                errors: vec![],
            };
        }
        let ctx = &q.context;
        // Break-glass semantics: a break-glass request uses a `@break_glass` permit when one
        // applies (the emergency path is never slowed by an approval rule); such permits
        // never apply to other requests.
        let mut bg_only = Vec::new();
        let mut bg = Vec::new();
        let mut ordinary = Vec::new();
        for id in &eval.permits {
            let e = &self.policies[self.by_id[id] as usize];
            match (e.terms.break_glass, ctx.break_glass) {
                (true, false) => bg_only.push(id.clone()),
                (true, true) => bg.push((id, e)),
                (false, _) => ordinary.push((id, e)),
            }
        }
        let too_long = |e: &Entry| {
            e.terms
                .max_duration_secs
                .is_some_and(|m| ctx.duration_secs > m)
        };
        if let Some((id, e)) = bg
            .iter()
            .filter(|(_, e)| !too_long(e))
            .min_by_key(|(id, _)| (*id).clone())
        {
            return RequestVerdict::Permit(Requirements {
                policy: (*id).clone(),
                auto_approve: true,
                max_duration_secs: e.terms.max_duration_secs,
                tiers: e.terms.effective_tiers(),
                break_glass: true,
                allow_parallel: e.terms.allow_parallel,
                follow_up: None,
                while_on_call: false,
            });
        }
        // The strictest applicable permit wins: any approval beats auto-approve, more
        // approvals beat fewer, more tiers beat fewer; ties → the lowest policy id. A looser
        // permit never shadows a stricter one, and a request too long for the strictest
        // permit is refused (it does not fall through to a looser one).
        let strictest = ordinary.iter().max_by(|(ia, a), (ib, b)| {
            let key = |e: &Entry| {
                (
                    !e.terms.auto_approve,
                    e.terms.total_approvals(),
                    e.terms.effective_tiers().len(),
                )
            };
            key(a).cmp(&key(b)).then_with(|| ib.cmp(ia))
        });
        let Some((id, e)) = strictest else {
            let mut reasons = Vec::new();
            if !bg_only.is_empty() {
                reasons.push(format!(
                    "{} permit(s) only break-glass requests",
                    bg_only.join(", ")
                ));
            }
            let mut policies = bg_only;
            for (id, e) in &bg {
                reasons.push(format!(
                    "requested duration {}s exceeds the maximum of {id} (max_duration {}s)",
                    ctx.duration_secs,
                    e.terms.max_duration_secs.unwrap_or_default()
                ));
                policies.push((*id).clone());
            }
            policies.sort();
            return RequestVerdict::Deny {
                policies,
                reason: format!("no usable policy permits {what}: {}", reasons.join("; ")),
                errors: vec![],
            };
        };
        if too_long(e) {
            return RequestVerdict::Deny {
                policies: vec![(*id).clone()],
                reason: format!(
                    "no usable policy permits {what}: requested duration {}s exceeds the \
                     maximum of {id} (max_duration {}s), the strictest permit that applies",
                    ctx.duration_secs,
                    e.terms.max_duration_secs.unwrap_or_default()
                ),
                errors: vec![],
            };
        }
        RequestVerdict::Permit(Requirements {
            policy: (*id).clone(),
            auto_approve: e.terms.auto_approve,
            max_duration_secs: e.terms.max_duration_secs,
            tiers: e.terms.effective_tiers(),
            break_glass: false,
            allow_parallel: e.terms.allow_parallel,
            follow_up: e.terms.follow_up.clone(),
            while_on_call: e.terms.while_on_call,
        })
    }
}

/// Entity id of a role: `"<target>/<role>"`.
pub fn role_id(t: &TargetRef, r: &RoleRef) -> String {
    format!("{}/{}", t.name, r.name)
}

/// Entity id of a command: `"<target>/<role>/<path>"`.
pub fn command_id(t: &TargetRef, r: &RoleRef, c: &CommandRef) -> String {
    format!("{}/{}/{}", t.name, r.name, c.path)
}

/// Entity id of a task: `"<target>/<task>"`.
pub fn task_id(t: &TargetRef, task: &str) -> String {
    format!("{}/{}", t.name, task)
}

/// A borrowed query (avoids cloning the caller's query on the hot path).
struct View<'a> {
    principal: &'a Principal,
    action: Action,
    resource: ResView<'a>,
    context: &'a Ctx,
    requester: Option<&'a Principal>,
}

#[derive(Clone, Copy)]
enum ResView<'a> {
    Role(&'a TargetRef, &'a RoleRef),
    Command(&'a TargetRef, &'a RoleRef, &'a CommandRef),
    Task(&'a TargetRef, &'a str),
    Target(&'a TargetRef),
    System,
}

impl<'a> View<'a> {
    fn of(q: &'a AuthzQuery) -> View<'a> {
        View {
            principal: &q.principal,
            action: q.action,
            resource: match &q.resource {
                Resource::Role { target, role } => ResView::Role(target, role),
                Resource::Command {
                    target,
                    role,
                    command,
                } => ResView::Command(target, role, command),
                Resource::Task { target, task } => ResView::Task(target, task),
                Resource::Target(t) => ResView::Target(t),
                Resource::System => ResView::System,
            },
            context: &q.context,
            requester: q.requester.as_ref(),
        }
    }

    fn of_request(q: &'a RequestQuery) -> View<'a> {
        View {
            principal: &q.principal,
            action: Action::Request,
            resource: ResView::Role(&q.target, &q.role),
            context: &q.context,
            requester: None,
        }
    }
}

/// `ip("…")` for a context. Building it parses the extension name `ip` with Cedar's full
/// parser (~2.5 µs), so expressions are cached per thread and address: two generations of
/// up to 4,096 addresses each (a full current generation becomes the old one; addresses
/// found in the old one move to the current), so a working set of up to 4,096 addresses
/// always hits and one of up to 8,192 mostly does, without ever clearing everything.
fn ip_expression(ip: IpAddr) -> RestrictedExpression {
    const GENERATION: usize = 4096;
    type Gen = HashMap<IpAddr, RestrictedExpression>;
    thread_local! {
        static CACHE: RefCell<(Gen, Gen)> = RefCell::new((HashMap::new(), HashMap::new()));
    }
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        let (cur, old) = &mut *c;
        if let Some(e) = cur.get(&ip) {
            return e.clone();
        }
        let e = match old.remove(&ip) {
            Some(e) => e,
            None => RestrictedExpression::new_ip(ip.to_string()),
        };
        if cur.len() >= GENERATION {
            *old = std::mem::take(cur);
        }
        cur.insert(ip, e.clone());
        e
    })
}

fn deny_verdict(reason: &str) -> Verdict {
    Verdict {
        allowed: false,
        policies: vec![],
        errors: vec![],
        reason: reason.into(),
    }
}

fn verdict_of(q: &AuthzQuery, eval: Evaluation) -> Verdict {
    let errors: Vec<String> = eval
        .errors
        .iter()
        .map(|(id, m)| format!("{id}: {m}"))
        .collect();
    if !errors.is_empty() {
        let mut policies: Vec<String> = eval.errors.iter().map(|(id, _)| id.clone()).collect();
        policies.dedup();
        return Verdict {
            allowed: false,
            policies,
            reason: format!(
                "policy evaluation failed ({}); denied because errors never permit",
                errors.join("; ")
            ),
            errors,
        };
    }
    if !eval.forbids.is_empty() {
        return Verdict {
            allowed: false,
            reason: format!("denied by forbid policy {}", eval.forbids.join(", ")),
            policies: eval.forbids,
            errors,
        };
    }
    if eval.permits.is_empty() {
        return Verdict {
            allowed: false,
            policies: vec![],
            errors,
            reason: format!(
                "no policy permits user {} to {}",
                q.principal.user, q.action
            ),
        };
    }
    Verdict {
        allowed: true,
        reason: format!("permitted by {}", eval.permits.join(", ")),
        policies: eval.permits,
        errors,
    }
}
