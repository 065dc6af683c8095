//! Policy versions: load, apply (validated, versioned, audited with the diff), reload when
//! another instance applied, and simulate a candidate set against recorded history.

use super::*;
use crate::decision::Permit;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};

/// Largest policy set accepted, all files together.
pub const MAX_POLICY_BYTES: usize = 1024 * 1024;

/// A recorded request whose decision the candidate policies would change.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SimulatedChange {
    pub request_id: Uuid,
    pub requester: String,
    pub target: String,
    pub role: String,
    pub created_at: Timestamp,
    /// What happened: `deny`, `auto_approve`, `break_glass` or `approval(<tiers>)`.
    pub recorded: String,
    /// What the candidate set would decide, in the same words.
    pub candidate: String,
    pub candidate_policy: Option<String>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SimulationReport {
    pub since: Timestamp,
    pub evaluated: usize,
    /// Requests whose role or target no longer exists.
    pub skipped: usize,
    pub changes: Vec<SimulatedChange>,
    /// Role/target pairs that people always approved, quickly, at least `min_sample` times,
    /// and that are not sensitive: candidates for auto-approval.
    pub auto_approve_candidates: Vec<String>,
    /// The fewest decided requests a recommendation needs.
    #[serde(default)]
    pub min_sample: usize,
    /// Pairs always approved quickly that are never recommended for auto-approval, and why
    /// (run as root, a sensitive label such as `env=prod`, ever used for break-glass, or
    /// too few decisions).
    #[serde(default)]
    pub not_recommended: Vec<String>,
    /// Permits (of the policies in force) that no recorded request used: privilege creep.
    pub unused_eligibilities: Vec<String>,
    /// Who would gain and who would lose which role on which target, over every user, role
    /// and context pedm knows (not only the recorded requests).
    #[serde(default)]
    pub blast_radius: Option<crate::policy_check::BlastRadius>,
    /// The configured policy properties proved for the candidate (`None`: none configured).
    #[serde(default)]
    pub properties: Option<crate::policy_check::PropertyReport>,
}

pub(super) fn digest(sources: &[PolicySource]) -> String {
    let mut h = Sha256::new();
    for s in sources {
        h.update((s.name.len() as u64).to_be_bytes());
        h.update(s.name.as_bytes());
        h.update((s.text.len() as u64).to_be_bytes());
        h.update(s.text.as_bytes());
    }
    hex::encode(h.finalize())
}

/// A unified diff of every file that changed (the audit event's, the console's).
pub fn diff(old: &[PolicySource], new: &[PolicySource]) -> String {
    let old_map: BTreeMap<&str, &str> = old
        .iter()
        .map(|s| (s.name.as_str(), s.text.as_str()))
        .collect();
    let new_map: BTreeMap<&str, &str> = new
        .iter()
        .map(|s| (s.name.as_str(), s.text.as_str()))
        .collect();
    let names: BTreeSet<&str> = old_map.keys().chain(new_map.keys()).copied().collect();
    let mut out = String::new();
    for name in names {
        let a = old_map.get(name).copied().unwrap_or("");
        let b = new_map.get(name).copied().unwrap_or("");
        if a != b {
            let d = similar::TextDiff::from_lines(a, b);
            out.push_str(
                &d.unified_diff()
                    .context_radius(2)
                    .header(&format!("a/{name}"), &format!("b/{name}"))
                    .to_string(),
            );
        }
    }
    out
}

pub(super) fn outcome_words(d: &RequestDecision) -> (String, Option<String>) {
    match d {
        RequestDecision::Deny { policies, .. } => ("deny".into(), policies.first().cloned()),
        RequestDecision::Permit(Permit {
            break_glass: true,
            policy,
            ..
        }) => ("break_glass".into(), policy.clone()),
        RequestDecision::Permit(Permit {
            auto_approve: true,
            policy,
            ..
        }) => ("auto_approve".into(), policy.clone()),
        RequestDecision::Permit(p) => {
            let tiers = if p.tiers.is_empty() {
                vec![ApprovalTier {
                    group: None,
                    required: 1,
                }]
            } else {
                p.tiers.clone()
            };
            (
                format!("approval({})", super::requests::tiers_text(&tiers)),
                p.policy.clone(),
            )
        }
    }
}

fn recorded_words(r: &Request) -> String {
    if r.decided_by.as_deref() == Some(POLICY_ACTOR) {
        match r.state {
            RequestState::Denied => "deny".into(),
            _ if r.break_glass => "break_glass".into(),
            _ => "auto_approve".into(),
        }
    } else {
        format!(
            "approval({})",
            super::requests::tiers_text(&r.approval_tiers)
        )
    }
}

impl ControlPlane {
    pub fn policy_version(&self) -> i64 {
        self.policy_version.load(Ordering::SeqCst)
    }

    pub(super) fn compiler(&self) -> Result<&Arc<dyn PolicyCompiler>> {
        self.compiler
            .as_ref()
            .ok_or_else(|| Error::invalid("policy", "this server runs without a policy engine"))
    }

    fn install(&self, decider: Arc<dyn Decider>, version: i64) {
        *self.decider.write().unwrap_or_else(|e| e.into_inner()) = decider;
        self.policy_version.store(version, Ordering::SeqCst);
    }

    /// At start: puts the newest stored version in force, or applies the compiler's default
    /// set as version 1 on a fresh store. A stored version that no longer compiles stops the
    /// start (fail closed) rather than running without policies.
    pub async fn load_policies(&self) -> Result<()> {
        let compiler = self.compiler()?.clone();
        match self.store.policy_version(None).await? {
            Some(v) => {
                let d = compiler.compile(&v.sources).map_err(|e| {
                    Error::Internal(format!(
                        "stored policy version {} does not compile: {e}",
                        v.version
                    ))
                })?;
                self.install(d, v.version);
            }
            None => {
                let sources = compiler.default_sources();
                let d = compiler.compile(&sources).map_err(|e| {
                    Error::Internal(format!("default policies do not compile: {e}"))
                })?;
                let v = PolicyVersion {
                    version: 1,
                    created_at: self.now(),
                    created_by: SYSTEM_ACTOR.into(),
                    comment: Some("default policies".into()),
                    digest: digest(&sources),
                    sources,
                };
                let cs = Changeset::new().write(Write::InsertPolicyVersion(v.clone())).event(
                    self.event(&Actor::system(), "policy.applied", Some("policy:1".into()))
                        .data(json!({ "version": 1, "digest": v.digest, "diff": diff(&[], &v.sources) })),
                );
                match self.store.commit(cs).await {
                    Ok(_) => self.install(d, 1),
                    // Another instance stored version 1 first: use whatever is newest.
                    Err(StoreError::Conflict(_)) | Err(StoreError::AlreadyExists(_)) => {
                        return Box::pin(self.load_policies()).await;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(())
    }

    /// Picks up a version applied through another instance sharing the database.
    pub async fn reload_policies_if_changed(&self) -> Result<bool> {
        if self.compiler.is_none() {
            return Ok(false);
        }
        let latest = self.store.latest_policy_version_number().await?;
        if latest.is_some_and(|v| v != self.policy_version()) {
            self.load_policies().await?;
            return Ok(true);
        }
        Ok(false)
    }

    pub(super) fn check_sources(sources: &[PolicySource]) -> Result<()> {
        if sources.is_empty() {
            return Err(Error::invalid("policy", "no policy files given"));
        }
        let total: usize = sources.iter().map(|s| s.text.len() + s.name.len()).sum();
        if total > MAX_POLICY_BYTES {
            return Err(Error::invalid(
                "policy",
                format!("policy set is {total} bytes; the limit is {MAX_POLICY_BYTES}"),
            ));
        }
        let mut names = BTreeSet::new();
        for s in sources {
            if s.name.trim().is_empty()
                || s.name.len() > 200
                || s.name.chars().any(char::is_control)
            {
                return Err(Error::invalid(
                    "policy",
                    format!("bad policy file name {:?}", s.name),
                ));
            }
            if !names.insert(s.name.as_str()) {
                return Err(Error::unprocessable(
                    "policy",
                    format!("policy file {} given twice", s.name),
                ));
            }
        }
        Ok(())
    }

    /// Validates and applies a new policy set. On any error the set in force stays. Refused
    /// while policy changes need approvals (`policy.require_approvals`): then
    /// [`Self::submit_policies`] stores the set as a proposal instead.
    pub async fn apply_policies(
        &self,
        actor: &Actor,
        sources: Vec<PolicySource>,
        comment: Option<String>,
    ) -> Result<PolicyVersion> {
        if self.policy_approvals > 0 {
            return Err(Error::Conflict(format!(
                "policy changes need {} approvals (policy.require_approvals); propose the set \
                 and have it approved",
                self.policy_approvals
            )));
        }
        let (sources, comment, candidate) = self.vet_policy_set(actor, sources, comment).await?;
        let current = self.store.policy_version(None).await?;
        if let Some(cur) = &current
            && cur.digest == digest(&sources)
        {
            return Ok(cur.clone());
        }
        self.put_in_force(
            actor,
            current,
            (sources, comment, candidate),
            Changeset::new(),
            json!({}),
            "another policy version was applied at the same moment; review it and apply again",
        )
        .await
    }

    /// Checks the actor may manage policies and the set is acceptable: sizes and names,
    /// strict compilation (a refusal by the engine is a `policy.rejected` event), and that it
    /// leaves the actor the right to manage policies. Returns the sources sorted by name, the
    /// trimmed comment and the compiled decider.
    pub(super) async fn vet_policy_set(
        &self,
        actor: &Actor,
        mut sources: Vec<PolicySource>,
        comment: Option<String>,
    ) -> Result<(Vec<PolicySource>, Option<String>, Arc<dyn Decider>)> {
        self.require_admin(actor, AdminAction::ManagePolicies, "policy.apply")
            .await?;
        let comment = trimmed("comment", comment, 500)?;
        Self::check_sources(&sources)?;
        sources.sort_by(|a, b| a.name.cmp(&b.name));
        let candidate = match self.compiler()?.compile(&sources) {
            Ok(d) => d,
            Err(msg) => {
                let ev = self
                    .event(actor, "policy.rejected", None)
                    .outcome(Outcome::Failure)
                    .data(json!({ "error": msg, "files": sources.iter().map(|s| &s.name).collect::<Vec<_>>() }));
                self.store.commit(Changeset::new().event(ev)).await?;
                return Err(Error::unprocessable("policy", msg));
            }
        };
        if let Err(why) = candidate.may_administer(actor, AdminAction::ManagePolicies) {
            return Err(Error::unprocessable(
                "policy",
                format!(
                    "this set would take away your own right to manage policies ({why}); refusing to lock you out"
                ),
            ));
        }
        if let Some(why) = self.owners_missing(candidate.as_ref()) {
            let ev = self
                .event(actor, "policy.rejected", None)
                .outcome(Outcome::Failure)
                .data(json!({ "error": why, "files": sources.iter().map(|s| &s.name).collect::<Vec<_>>() }));
            self.store.commit(Changeset::new().event(ev)).await?;
            return Err(Error::unprocessable("policy", why));
        }
        self.keep_properties(actor, &candidate, &sources).await?;
        Ok((sources, comment, candidate))
    }

    /// Stores a vetted set as the version after `current` with a `policy.applied` event (its
    /// data: version, digest, comment, diff, plus `extra`), together with `cs` in one
    /// transaction, then puts it in force. The store refuses a number that does not follow
    /// the newest version: that refusal (or any other conflict of `cs`) is `on_conflict`.
    pub(super) async fn put_in_force(
        &self,
        actor: &Actor,
        current: Option<PolicyVersion>,
        (sources, comment, candidate): (Vec<PolicySource>, Option<String>, Arc<dyn Decider>),
        cs: Changeset,
        extra: serde_json::Value,
        on_conflict: &str,
    ) -> Result<PolicyVersion> {
        let version = current.as_ref().map_or(1, |c| c.version + 1);
        let v = PolicyVersion {
            version,
            created_at: self.now(),
            created_by: actor.user.clone(),
            comment: comment.clone(),
            digest: digest(&sources),
            sources,
        };
        let old = current.map(|c| c.sources).unwrap_or_default();
        let mut data = json!({
            "version": version, "digest": v.digest, "comment": comment,
            "diff": diff(&old, &v.sources),
        });
        if let (Some(d), serde_json::Value::Object(more)) = (data.as_object_mut(), extra) {
            d.extend(more);
        }
        let cs = cs.write(Write::InsertPolicyVersion(v.clone())).event(
            self.event(actor, "policy.applied", Some(format!("policy:{version}")))
                .data(data),
        );
        self.store.commit(cs).await.map_err(|e| match e {
            StoreError::Conflict(_) | StoreError::AlreadyExists(_) => {
                Error::Conflict(on_conflict.into())
            }
            e => e.into(),
        })?;
        self.install(candidate, version);
        // Its policies' review dates are looked at by the follow-up loop.
        self.follow_ups_changed.notify_one();
        Ok(v)
    }

    /// A stored policy version (the one in force when `version` is `None`).
    pub async fn get_policies(&self, actor: &Actor, version: Option<i64>) -> Result<PolicyVersion> {
        self.require_admin(actor, AdminAction::ReadAudit, "policy.read")
            .await?;
        self.store.policy_version(version).await?.ok_or_else(|| {
            Error::NotFound(match version {
                Some(v) => format!("policy version {v}"),
                None => "policy set (none applied)".into(),
            })
        })
    }

    pub async fn list_policy_versions(&self, actor: &Actor) -> Result<Vec<PolicyVersion>> {
        self.require_admin(actor, AdminAction::ReadAudit, "policy.read")
            .await?;
        Ok(self.store.policy_versions().await?)
    }

    /// Replays the requests recorded since `since` against `sources` and reports every
    /// decision that would change, plus recommendations from the same history.
    pub async fn simulate_policies(
        &self,
        actor: &Actor,
        sources: Vec<PolicySource>,
        since: Timestamp,
    ) -> Result<SimulationReport> {
        self.require_admin(actor, AdminAction::ManagePolicies, "policy.simulate")
            .await?;
        Self::check_sources(&sources)?;
        let candidate = self
            .compiler()?
            .compile(&sources)
            .map_err(|m| Error::unprocessable("policy", m))?;
        let history = self
            .store
            .requests(&RequestFilter {
                since: Some(since),
                limit: Some(100_000),
                ..Default::default()
            })
            .await?;
        let mut report = SimulationReport {
            since,
            evaluated: 0,
            skipped: 0,
            changes: vec![],
            auto_approve_candidates: vec![],
            min_sample: self.limits.recommend_min_sample,
            not_recommended: vec![],
            unused_eligibilities: vec![],
            blast_radius: Some(self.blast_radius(candidate.clone()).await?),
            properties: if self.policy_properties.is_empty() {
                None
            } else {
                Some(
                    self.prove_properties(candidate.clone(), self.policy_properties.clone())
                        .await?,
                )
            },
        };
        let mut principals: BTreeMap<String, Option<Actor>> = BTreeMap::new();
        let mut used_policies = BTreeSet::new();
        for r in &history {
            if let Some(p) = &r.policy {
                used_policies.insert(p.clone());
            }
            let (Some(target), Some(role)) = (
                self.store.target(&r.target).await?,
                self.store.role(&r.target, &r.role).await?,
            ) else {
                report.skipped += 1;
                continue;
            };
            if !principals.contains_key(&r.requester) {
                let a = match self.store.user(&r.requester).await? {
                    Some(u) => Some(self.actor_of(&u).await?),
                    None => None,
                };
                principals.insert(r.requester.clone(), a);
            }
            let Some(Some(principal)) = principals.get(&r.requester) else {
                report.skipped += 1;
                continue;
            };
            let d = candidate.decide_request(&RequestInput {
                principal,
                target: &target,
                role: &role,
                duration_secs: r.duration_secs,
                justification: &r.justification,
                task: r.task.as_deref(),
                ticket: r.ticket.as_deref(),
                source_addr: r.context.source_addr.as_deref(),
                device: &r.context.device,
                break_glass: r.break_glass,
                extension: r.context.extends.is_some(),
                starts_in_secs: r
                    .context
                    .starts_at
                    .map_or(0, |s| s.duration_since(r.created_at).as_secs().max(0)),
                ticket_facts: r.context.ticket.as_ref(),
                via_agent: r.context.via_agent,
                risk: r.context.risk.as_ref().map_or(0, |r| i64::from(r.score)),
                now: r.context.starts_at.unwrap_or(r.created_at),
            });
            report.evaluated += 1;
            let (candidate_words, candidate_policy) = outcome_words(&d);
            let recorded = recorded_words(r);
            if candidate_words != recorded {
                report.changes.push(SimulatedChange {
                    request_id: r.id,
                    requester: r.requester.clone(),
                    target: r.target.clone(),
                    role: r.role.clone(),
                    created_at: r.created_at,
                    recorded,
                    candidate: candidate_words,
                    candidate_policy,
                });
            }
        }

        // Pairs decided only by people, always approved, quickly.
        let mut by_pair: BTreeMap<(String, String), Vec<&Request>> = BTreeMap::new();
        for r in history
            .iter()
            .filter(|r| r.approvals_required > 0 && r.decided_at.is_some())
        {
            by_pair
                .entry((r.target.clone(), r.role.clone()))
                .or_default()
                .push(r);
        }
        for ((t, role), rs) in by_pair {
            let decided: Vec<_> = rs
                .iter()
                .filter(|r| matches!(r.state, RequestState::Approved | RequestState::Denied))
                .collect();
            if decided.is_empty() || decided.iter().any(|r| r.state == RequestState::Denied) {
                continue;
            }
            let mut waits: Vec<i64> = decided
                .iter()
                .filter_map(|r| {
                    r.decided_at
                        .map(|d| d.duration_since(r.created_at).as_secs())
                })
                .collect();
            waits.sort_unstable();
            let median = waits[waits.len() / 2];
            if median > 15 * 60 {
                continue;
            }
            let n = decided.len();
            match self.never_auto_approve(&t, &role, n).await? {
                Some(why) => report
                    .not_recommended
                    .push(format!("{t}/{role}: approved {n} of {n} times, but {why}")),
                None => report.auto_approve_candidates.push(format!(
                    "{t}/{role}: approved {n} of {n} times (minimum sample {min}), median wait \
                     {w}; consider @auto_approve",
                    min = self.limits.recommend_min_sample,
                    w = format_duration(median.max(1)),
                )),
            }
        }
        report.unused_eligibilities = self
            .decider()
            .eligibility_policies()
            .into_iter()
            .filter(|p| !used_policies.contains(p))
            .collect();
        Ok(report)
    }

    /// Why auto-approval must never be recommended for `role` on `target` (after `n`
    /// decisions): it runs as root, its target carries `env=prod` or a configured sensitive
    /// label, it was ever used for break-glass, or `n` is below the minimum sample.
    async fn never_auto_approve(
        &self,
        target: &str,
        role: &str,
        n: usize,
    ) -> Result<Option<String>> {
        if let Some(r) = self.store.role(target, role).await?
            && r.run_as.as_deref() == Some("root")
        {
            return Ok(Some("it runs as root".into()));
        }
        if let Some(t) = self.store.target(target).await? {
            let labels: Vec<String> = t.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            if let Some(l) = labels
                .iter()
                .find(|l| *l == "env=prod" || self.limits.sensitive_labels.iter().any(|s| s == *l))
            {
                return Ok(Some(format!("its target is labelled {l}")));
            }
        }
        let ever = self
            .store
            .requests(&RequestFilter {
                target: Some(target.to_string()),
                limit: Some(100_000),
                ..Default::default()
            })
            .await?;
        if ever.iter().any(|r| r.role == role && r.break_glass) {
            return Ok(Some("it was used for break-glass".into()));
        }
        if n < self.limits.recommend_min_sample {
            return Ok(Some(format!(
                "that is below the minimum sample of {}",
                self.limits.recommend_min_sample
            )));
        }
        Ok(None)
    }
}
