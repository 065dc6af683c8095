//! The index that slices a policy set per request: entity keys and types interned to
//! integers, each policy's principal and resource scope over them, and the policies of each
//! action bucketed by the entities their scopes name, so a request evaluates only the
//! policies that can apply to it.

use cedar_policy::{EntityUid, Policy, PrincipalConstraint, ResourceConstraint};
use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct Key {
    pub(super) ty: String,
    pub(super) id: String,
}

#[derive(Debug, Clone)]
pub(super) enum Scope {
    Any,
    Eq(Key),
    In(Key),
    Is(String),
    IsIn(String, Key),
}

impl Scope {
    pub(super) fn key(&self) -> Option<&Key> {
        match self {
            Scope::Eq(k) | Scope::In(k) | Scope::IsIn(_, k) => Some(k),
            Scope::Any | Scope::Is(_) => None,
        }
    }
}

/// A fast, non-cryptographic hasher (FxHash's multiply-rotate) for the engine's internal
/// maps. Their keys come from the loaded policies only (queries just look them up), so
/// there is no hash-flooding exposure, and SipHash was a visible share of query time.
#[derive(Default, Clone, Copy)]
pub(super) struct FxHasher(u64);

impl FxHasher {
    const K: u64 = 0x51_7c_c1_b7_27_22_0a_95;
    #[inline]
    fn add(&mut self, w: u64) {
        self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(Self::K);
    }
}

impl std::hash::Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut buf = [0u8; 8];
            buf[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(buf));
        }
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

pub(super) type FastMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<FxHasher>>;

/// Entity keys and type names interned to integers, for a dense, cache-friendly index.
#[derive(Debug, Default)]
pub(super) struct Interner {
    pub(super) types: FastMap<String, u32>,
    /// Per type id: entity id → key id (key ids are unique over all types).
    pub(super) ids: Vec<FastMap<String, u32>>,
    pub(super) next: u32,
    pub(super) labels: FastMap<String, u32>,
}

impl Interner {
    pub(super) fn ty(&mut self, t: &str) -> u32 {
        if let Some(&i) = self.types.get(t) {
            return i;
        }
        let i = self.types.len() as u32;
        self.types.insert(t.to_string(), i);
        self.ids.push(FastMap::default());
        i
    }
    pub(super) fn key(&mut self, k: &Key) -> u32 {
        let t = self.ty(&k.ty) as usize;
        if let Some(&i) = self.ids[t].get(&k.id) {
            return i;
        }
        let i = self.next;
        self.next += 1;
        self.ids[t].insert(k.id.clone(), i);
        i
    }
    pub(super) fn label(&mut self, l: &str) -> u32 {
        let n = self.labels.len() as u32;
        *self.labels.entry(l.to_string()).or_insert(n)
    }
    pub(super) fn scope(&mut self, s: &Scope) -> CScope {
        match s {
            Scope::Any => CScope::Any,
            Scope::Eq(k) => CScope::Eq(self.key(k)),
            Scope::In(k) => CScope::In(self.key(k)),
            Scope::Is(t) => CScope::Is(self.ty(t)),
            Scope::IsIn(t, k) => CScope::IsIn(self.ty(t), self.key(k)),
        }
    }
    pub(super) fn lookup(&self, ty: u32, id: &str) -> Option<u32> {
        self.ids.get(ty as usize)?.get(id).copied()
    }
}

/// A scope constraint over interned ids.
#[derive(Debug, Clone, Copy)]
pub(super) enum CScope {
    Any,
    Eq(u32),
    In(u32),
    Is(u32),
    IsIn(u32, u32),
}

impl CScope {
    /// Cedar's scope semantics, given that `n` lists every ancestor the entity store has.
    /// Ids no policy mentions are not interned (`None` / left out): they match no `==`/`in`.
    pub(super) fn matches(self, n: &CNode) -> bool {
        match self {
            CScope::Any => true,
            CScope::Eq(k) => n.me == Some(k),
            CScope::In(k) => n.is_in(k),
            CScope::Is(t) => n.ty == t,
            CScope::IsIn(t, k) => n.ty == t && n.is_in(k),
        }
    }
}

pub(super) const NO_LABEL: u32 = u32::MAX;

/// Per-policy data the slicer reads, kept dense.
#[derive(Debug, Clone, Copy)]
pub(super) struct Compact {
    pub(super) principal: CScope,
    pub(super) resource: CScope,
    /// The policy's first condition is `resource.labels.contains(<this label>)`.
    pub(super) label: u32,
}

/// A request entity (principal or resource): its type, its own key and all its ancestors.
pub(super) struct CNode {
    pub(super) ty: u32,
    pub(super) me: Option<u32>,
    pub(super) ancestors: Vec<u32>,
}

impl CNode {
    pub(super) fn is_in(&self, k: u32) -> bool {
        self.me == Some(k) || self.ancestors.contains(&k)
    }
    pub(super) fn keys(&self) -> impl Iterator<Item = u32> + '_ {
        self.me.into_iter().chain(self.ancestors.iter().copied())
    }
}

/// `Some(label)` if the policy's condition begins with `resource.labels.contains("label")`:
/// the first conjunct of the first clause, a `when`. Cedar evaluates the scope (which cannot
/// error), then that conjunct (which cannot error on a resource that has `labels`) and
/// short-circuits when it is false: the policy can then neither apply nor error, so it may
/// be left out of the slice when the resource lacks the label.
pub(super) fn leading_label(policy: &Policy) -> Option<String> {
    let est = policy.to_json().ok()?;
    let first = est.get("conditions")?.as_array()?.first()?;
    if first.get("kind")?.as_str()? != "when" {
        return None;
    }
    let mut body = first.get("body")?;
    while let Some(and) = body.get("&&") {
        body = and.get("left")?;
    }
    let contains = body.get("contains")?;
    let dot = contains.get("left")?.get(".")?;
    if dot.get("left")?.get("Var")?.as_str()? != "resource"
        || dot.get("attr")?.as_str()? != "labels"
    {
        return None;
    }
    Some(contains.get("right")?.get("Value")?.as_str()?.to_string())
}

pub(super) fn key_of(uid: &EntityUid) -> Key {
    Key {
        ty: uid.type_name().to_string(),
        id: uid.id().unescaped().to_string(),
    }
}

pub(super) fn principal_scope(c: PrincipalConstraint) -> Scope {
    match c {
        PrincipalConstraint::Any => Scope::Any,
        PrincipalConstraint::Eq(u) => Scope::Eq(key_of(&u)),
        PrincipalConstraint::In(u) => Scope::In(key_of(&u)),
        PrincipalConstraint::Is(t) => Scope::Is(t.to_string()),
        PrincipalConstraint::IsIn(t, u) => Scope::IsIn(t.to_string(), key_of(&u)),
    }
}

pub(super) fn resource_scope(c: ResourceConstraint) -> Scope {
    match c {
        ResourceConstraint::Any => Scope::Any,
        ResourceConstraint::Eq(u) => Scope::Eq(key_of(&u)),
        ResourceConstraint::In(u) => Scope::In(key_of(&u)),
        ResourceConstraint::Is(t) => Scope::Is(t.to_string()),
        ResourceConstraint::IsIn(t, u) => Scope::IsIn(t.to_string(), key_of(&u)),
    }
}

#[derive(Debug, Default)]
pub(super) struct ActionIndex {
    /// Principal and resource both `==`/`in` an entity.
    pub(super) by_pair: FastMap<(u32, u32), Vec<u32>>,
    /// Only the principal.
    pub(super) by_principal: FastMap<u32, Vec<u32>>,
    /// Only the resource.
    pub(super) by_resource: FastMap<u32, Vec<u32>>,
    pub(super) always: Vec<u32>,
}
