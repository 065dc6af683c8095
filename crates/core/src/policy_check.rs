//! Policy properties and blast radius: questions asked of *every* request a policy set could
//! decide, over every user, target and role pedm knows.
//!
//! A property is an invariant an admin states once (`[policy] properties = FILE`): "nobody
//! gets root on `env=prod` without an approval unless break-glass", "no external account is
//! ever auto-approved". Every `policy apply` (and proposal) must keep every property; `pedm
//! policy check` proves them on demand. Both enumerate the principals (users grouped where the
//! policies cannot tell them apart), every role, and the request contexts the policies
//! themselves tell apart ([`crate::decision::Decider::context_points`]); a broken property is
//! refused with a counterexample naming the user, target, role and context.
//!
//! File format (TOML):
//!
//! ```toml
//! [[property]]
//! name = "no root on prod without an approval unless break-glass"
//! where = { target_labels = ["env=prod"], run_as = ["root"], break_glass = false }
//! require = { min_approvals = 1 }
//! ```

use crate::decision::{Permit, RequestDecision};
use crate::model::{Actor, Role, Target};
use serde::{Deserialize, Serialize};

/// The most properties one check accepts.
pub const MAX_PROPERTIES: usize = 200;

/// A file of properties (`[[property]]` tables).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PropertyFile {
    #[serde(default, rename = "property")]
    pub properties: Vec<Property>,
}

/// An invariant every policy set must keep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Property {
    pub name: String,
    /// Which requests it is about (all of them when empty).
    #[serde(default, rename = "where")]
    pub scope: PropertyScope,
    pub require: Requirement,
}

/// Which requests a property is about: every given field must match (a list: any of it).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PropertyScope {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<String>,
    /// Members of any of these groups.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<String>,
    /// `key=value` labels the target carries, all of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_labels: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_kinds: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// The role runs as one of these users.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub run_as: Vec<String>,
    /// Only break-glass requests (`true`) or only ordinary ones (`false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub break_glass: Option<bool>,
    /// Only requests an AI agent makes (`true`) or only a person's own (`false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via_agent: Option<bool>,
}

/// What every request in scope must get. At least one field.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Requirement {
    /// Never permitted.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deny: bool,
    /// Never granted at once by an `@auto_approve` permit.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_auto_approve: bool,
    /// Never granted as break-glass.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_break_glass: bool,
    /// Every permit needs at least this many approvals in all (auto-approval and break-glass
    /// count as none). 1 to 100.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::syntax::whole_number"
    )]
    pub min_approvals: Option<u32>,
}

impl Property {
    /// Refuses a property that cannot mean what its author thinks.
    pub fn check(&self) -> Result<(), String> {
        let name = self.name.trim();
        if name.is_empty() || name.len() > 200 || name.chars().any(char::is_control) {
            return Err(format!(
                "property name {:?}: 1 to 200 printable characters",
                self.name
            ));
        }
        let r = &self.require;
        if !(r.deny || r.no_auto_approve || r.no_break_glass || r.min_approvals.is_some()) {
            return Err(format!(
                "property {name:?}: `require` names nothing (deny, no_auto_approve, \
                 no_break_glass or min_approvals)"
            ));
        }
        if r.min_approvals.is_some_and(|n| n == 0 || n > 100) {
            return Err(format!("property {name:?}: min_approvals must be 1 to 100"));
        }
        if let Some(l) = self.scope.target_labels.iter().find(|l| !l.contains('=')) {
            return Err(format!(
                "property {name:?}: target label {l:?} is not key=value"
            ));
        }
        Ok(())
    }

    /// Whether the request (`principal` asking for `role` on `target`, break-glass or not,
    /// through an AI agent or not) is one this property is about.
    pub fn covers(
        &self,
        principal: &Actor,
        target: &Target,
        role: &Role,
        break_glass: bool,
        via_agent: bool,
    ) -> bool {
        self.covers_principal(principal)
            && self.covers_role(target, role)
            && self.covers_context(break_glass, via_agent)
    }

    /// The part of [`Self::covers`] about who asks.
    pub fn covers_principal(&self, principal: &Actor) -> bool {
        let s = &self.scope;
        any(&s.users, &principal.user)
            && (s.groups.is_empty() || s.groups.iter().any(|g| principal.groups.contains(g)))
            && s.external.is_none_or(|e| e == principal.external)
            && s.admin.is_none_or(|a| a == principal.admin)
    }

    /// The part of [`Self::covers`] about what is asked for.
    pub fn covers_role(&self, target: &Target, role: &Role) -> bool {
        let s = &self.scope;
        any(&s.targets, &target.name)
            && s.target_labels.iter().all(|l| {
                l.split_once('=')
                    .is_some_and(|(k, v)| target.labels.get(k).is_some_and(|x| x == v))
            })
            && any(&s.target_kinds, target.kind.as_str())
            && any(&s.roles, &role.name)
            && (s.run_as.is_empty() || role.run_as.as_ref().is_some_and(|r| any(&s.run_as, r)))
    }

    /// The part of [`Self::covers`] about the request's context.
    pub fn covers_context(&self, break_glass: bool, via_agent: bool) -> bool {
        self.scope.break_glass.is_none_or(|b| b == break_glass)
            && self.scope.via_agent.is_none_or(|v| v == via_agent)
    }

    /// Why `decision` breaks this property; `None` when it keeps it.
    pub fn broken_by(&self, decision: &RequestDecision) -> Option<String> {
        let RequestDecision::Permit(p) = decision else {
            return None;
        };
        let r = &self.require;
        if r.deny {
            return Some("permitted, where it must be denied".into());
        }
        if r.no_break_glass && p.break_glass {
            return Some("granted as break-glass".into());
        }
        if r.no_auto_approve && p.auto_approve && !p.break_glass {
            return Some("auto-approved".into());
        }
        if let Some(min) = r.min_approvals {
            let n = approvals(p);
            if n < min {
                return Some(match () {
                    _ if p.break_glass => "granted as break-glass, with no approval".into(),
                    _ if p.auto_approve => "auto-approved, with no approval".into(),
                    _ => format!("needs {n} approval(s), fewer than {min}"),
                });
            }
        }
        None
    }
}

/// An empty list matches everything; otherwise `v` must be in it.
fn any(list: &[String], v: &str) -> bool {
    list.is_empty() || list.iter().any(|x| x == v)
}

/// Refuses a property list that is too long, has a bad property or a name twice.
pub fn check_all(props: &[Property]) -> Result<(), String> {
    if props.len() > MAX_PROPERTIES {
        return Err(format!(
            "{} properties; the limit is {MAX_PROPERTIES}",
            props.len()
        ));
    }
    let mut names = std::collections::BTreeSet::new();
    for p in props {
        p.check()?;
        if !names.insert(p.name.trim()) {
            return Err(format!("property {:?} is given twice", p.name));
        }
    }
    Ok(())
}

/// Approvals a permit needs in all: none when granted at once.
pub fn approvals(p: &Permit) -> u32 {
    if p.auto_approve || p.break_glass {
        0
    } else if p.tiers.is_empty() {
        1
    } else {
        p.tiers.iter().map(|t| t.required).sum()
    }
}

/// A request that breaks a property.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Counterexample {
    pub user: String,
    pub target: String,
    pub role: String,
    /// The context, where it differs from a plain request (`break_glass=true`, a time...).
    pub context: String,
    /// What the policies decide: `deny`, `auto_approve`, `break_glass` or `approval(...)`.
    pub decision: String,
    pub policy: Option<String>,
    /// Why that breaks the property.
    pub why: String,
}

impl std::fmt::Display for Counterexample {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} asking for {}/{}", self.user, self.target, self.role)?;
        if !self.context.is_empty() {
            write!(f, " ({})", self.context)?;
        }
        write!(f, " gets {}", self.decision)?;
        if let Some(p) = &self.policy {
            write!(f, " from policy {p}")?;
        }
        write!(f, ": {}", self.why)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PropertyResult {
    pub name: String,
    pub holds: bool,
    /// Decisions the property was about (person × role × context).
    pub cases: u64,
    /// The first request found that breaks it.
    pub counterexample: Option<Counterexample>,
}

/// What was enumerated, shared by the property and blast-radius reports.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Coverage {
    /// Users asked about (disabled accounts are left out: they cannot ask).
    pub users: usize,
    /// Groups of users the policies cannot tell apart: each is decided once.
    pub principal_classes: usize,
    pub roles: usize,
    /// Groups of roles the policies cannot tell apart (same target kind and labels, name,
    /// run-as user...): each is decided once.
    pub role_classes: usize,
    pub contexts: usize,
    /// Decisions made.
    pub decisions: u64,
    /// What the contexts vary, and over which values.
    pub varied: Vec<String>,
    /// `false`: some context region may be missed (named in `varied`).
    pub complete: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PropertyReport {
    pub properties: Vec<PropertyResult>,
    pub coverage: Coverage,
}

impl PropertyReport {
    pub fn broken(&self) -> impl Iterator<Item = &PropertyResult> {
        self.properties.iter().filter(|p| !p.holds)
    }
}

/// How one person's access to one role changes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// Denied before, permitted after (in some context).
    Gains,
    /// Permitted before, denied after.
    Loses,
    /// Permitted both times, on other terms (approvals, auto-approval, break-glass).
    Changes,
}

impl ChangeKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            ChangeKind::Gains => "gains",
            ChangeKind::Loses => "loses",
            ChangeKind::Changes => "changes",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AccessChange {
    pub kind: ChangeKind,
    pub user: String,
    pub target: String,
    pub role: String,
    /// The first context where it changes (empty: a plain request).
    pub context: String,
    pub before: String,
    pub after: String,
}

/// Who gains and who loses which role on which target, a draft set against the one in force.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BlastRadius {
    pub changes: Vec<AccessChange>,
    /// Changes left out past the listing limit.
    pub truncated: usize,
    pub coverage: Coverage,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ApprovalTier;

    fn permit(auto: bool, bg: bool, tiers: &[u32]) -> RequestDecision {
        RequestDecision::Permit(Permit {
            policy: Some("p".into()),
            reason: String::new(),
            auto_approve: auto,
            max_duration_secs: None,
            tiers: tiers
                .iter()
                .map(|&n| ApprovalTier {
                    group: None,
                    required: n,
                })
                .collect(),
            break_glass: bg,
            allow_parallel: false,
            follow_up: None,
            while_on_call: false,
        })
    }

    fn prop(require: Requirement) -> Property {
        Property {
            name: "p".into(),
            scope: PropertyScope::default(),
            require,
        }
    }

    #[test]
    fn requirements_judge_decisions() {
        let two = prop(Requirement {
            min_approvals: Some(2),
            ..Default::default()
        });
        assert!(
            two.broken_by(&permit(false, false, &[])).is_some(),
            "one approval"
        );
        assert!(two.broken_by(&permit(false, false, &[1, 1])).is_none());
        assert!(two.broken_by(&permit(true, false, &[])).is_some());
        assert!(two.broken_by(&permit(false, true, &[])).is_some());
        let deny = RequestDecision::Deny {
            reason: String::new(),
            policies: vec![],
        };
        assert!(two.broken_by(&deny).is_none());
        let no_auto = prop(Requirement {
            no_auto_approve: true,
            ..Default::default()
        });
        assert!(no_auto.broken_by(&permit(true, false, &[])).is_some());
        assert!(no_auto.broken_by(&permit(false, true, &[])).is_none());
        assert!(prop(Requirement::default()).check().is_err());
    }
}
