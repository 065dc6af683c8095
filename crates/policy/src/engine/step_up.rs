//! Step-up: `exec` permits annotated `@step_up` make what they match approvable, never
//! allowed outright ([`Engine::authorize`] leaves them out).

use super::Engine;
use crate::query::{Action, ApprovalTier, AuthzQuery, StepUp};

impl Engine {
    pub(super) fn step_up_terms(&self, policy: &str) -> Option<&Vec<ApprovalTier>> {
        let i = *self.by_id.get(policy)?;
        self.policies[i as usize].terms.step_up.as_ref()
    }

    /// What an `exec` that [`Engine::authorize`] refuses may still get by approval: the
    /// `@step_up` permits that match it and the approvals the first asks for. `None` when a
    /// forbid matches, an evaluation fails, or nothing but step-up permits would allow it
    /// (a plain permit allows it outright).
    pub fn step_up(&self, q: &AuthzQuery) -> Option<StepUp> {
        if q.action != Action::Exec {
            return None;
        }
        let eval = self.evaluate(q, true);
        if !eval.errors.is_empty() || !eval.forbids.is_empty() {
            return None;
        }
        let mut tiers = None;
        for id in &eval.permits {
            let t = self.step_up_terms(id)?;
            tiers.get_or_insert_with(|| t.clone());
        }
        Some(StepUp {
            tiers: tiers?,
            policies: eval.permits,
        })
    }
}
