//! Policy owners and review dates (`@owner("dba")`, `@review_by("2027-03-31")`): listed with
//! what is overdue, required on every apply where `[policy] require_owner` is on, and each
//! overdue policy announced once across instances (`policy.review_overdue`, to the notifiers).

use super::*;
use crate::decision::PolicyOwnership;
use crate::integration::{IntegrationEntry, IntegrationWrite};

/// The integration-state name under which each (policy, review date) is claimed once.
const TOLD: &str = "policy-review-overdue";

impl ControlPlane {
    /// Every policy needs `@owner` and `@review_by` on apply.
    pub fn with_policy_owners_required(mut self, on: bool) -> Self {
        self.policy_owners_required = on;
        self
    }

    fn today(&self) -> jiff::civil::Date {
        self.now().to_zoned(jiff::tz::TimeZone::UTC).date()
    }

    /// The policies of `decider` with their status as of today.
    fn ownership_of(&self, decider: &dyn Decider) -> Vec<PolicyOwnership> {
        let today = self.today();
        decider
            .ownership()
            .into_iter()
            .map(|mut p| {
                p.status = match (&p.owner, p.review_by) {
                    (None, _) => "no owner",
                    (_, None) => "no review date",
                    (_, Some(d)) if d < today => "overdue",
                    _ => "ok",
                }
                .to_string();
                p
            })
            .collect()
    }

    /// The policies in force with their owners and review dates (policy managers and
    /// auditors); only the overdue ones with `overdue`.
    pub async fn policy_owners(
        &self,
        actor: &Actor,
        overdue: bool,
    ) -> Result<Vec<PolicyOwnership>> {
        if !self.holds(actor, AdminAction::ManagePolicies) {
            self.require_admin(actor, AdminAction::ReadAudit, "policy.read")
                .await?;
        }
        let mut all = self.ownership_of(self.decider().as_ref());
        if overdue {
            all.retain(|p| p.status == "overdue");
        }
        Ok(all)
    }

    /// With `[policy] require_owner`: why `candidate` may not be applied (a policy without an
    /// owner or a review date), naming each.
    pub(super) fn owners_missing(&self, candidate: &dyn Decider) -> Option<String> {
        if !self.policy_owners_required {
            return None;
        }
        let missing: Vec<String> = self
            .ownership_of(candidate)
            .into_iter()
            .filter(|p| p.owner.is_none() || p.review_by.is_none())
            .map(|p| format!("{} in {} ({})", p.policy, p.file, p.status))
            .collect();
        (!missing.is_empty()).then(|| {
            format!(
                "every policy needs @owner(\"...\") and @review_by(\"YYYY-MM-DD\") \
                 ([policy] require_owner): {}",
                missing.join(", ")
            )
        })
    }

    /// Announces each policy in force whose review date has passed, once per (policy, date)
    /// across instances: a `policy.review_overdue` event and notice for its owner.
    pub async fn announce_overdue_policies(&self) -> Result<()> {
        for p in self.ownership_of(self.decider().as_ref()) {
            let (Some(date), "overdue") = (p.review_by, p.status.as_str()) else {
                continue;
            };
            let key = format!("{}@{date}", p.policy);
            let fresh = self
                .overdue_told
                .lock()
                .map(|mut told| told.insert(key.clone()))
                // A poisoned set still holds what was told: the claim below keeps it once.
                .unwrap_or_else(|mut told| told.get_mut().insert(key.clone()));
            if !fresh {
                continue;
            }
            let sys = Actor::system();
            let cs = Changeset::new()
                .write(Write::Integration(IntegrationWrite::Claim {
                    entry: IntegrationEntry {
                        integration: TOLD.into(),
                        key,
                        value: p.owner.clone().unwrap_or_default(),
                        expires_at: None,
                    },
                    now: self.now(),
                }))
                .event(
                    self.event(&sys, "policy.review_overdue", subject("policy", &p.policy))
                        .data(json!({
                            "policy": p.policy, "file": p.file, "owner": p.owner,
                            "review_by": date.to_string(),
                        })),
                )
                .notice(Notice::PolicyReviewOverdue {
                    policy: p.policy.clone(),
                    file: p.file.clone(),
                    owner: p.owner.clone(),
                    review_by: date.to_string(),
                });
            match self.commit(cs).await {
                // Another instance (or this one before a restart) told already.
                Ok(_) | Err(StoreError::AlreadyExists(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}
