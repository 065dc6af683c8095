//! The grants this host enforces: a snapshot signed by the server, verified here with the
//! pinned server key, kept on disk so decisions (and expiry) go on while the server is
//! unreachable, and the local Cedar engine built from the policies it carries.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use jiff::Timestamp;
use pedm_api::agent::{HostGrant, SNAPSHOT_CONTEXT, SignedSnapshot, Snapshot};
use pedm_audit::PublicKey;
use pedm_policy::{
    Action, AuthzQuery, CommandRef, Ctx, Engine, EngineOptions, Principal, Resource, RoleRef,
    TargetRef,
};
use std::path::{Path, PathBuf};
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot signed by key {found}, but this agent trusts key {expected}")]
    WrongKey { expected: String, found: String },
    #[error("snapshot signature does not verify (altered, or not from the pedm server)")]
    BadSignature,
    #[error("malformed snapshot: {0}")]
    Malformed(String),
    #[error("snapshot is for host {found}, this agent is {expected}")]
    WrongHost { expected: String, found: String },
    #[error("snapshot of audit position {offered} is older than the one in force ({current})")]
    Stale { offered: i64, current: i64 },
    #[error("policies in the snapshot do not load: {0}")]
    Policy(String),
    #[error("{path}: {error}")]
    Io { path: String, error: std::io::Error },
}

/// Checks the signature with the pinned key and that the snapshot is for this host.
pub fn verify(
    signed: &SignedSnapshot,
    key: &PublicKey,
    host: &str,
) -> Result<Snapshot, SnapshotError> {
    if signed.key_id != key.key_id() {
        return Err(SnapshotError::WrongKey {
            expected: key.key_id().to_string(),
            found: signed.key_id.clone(),
        });
    }
    let sig: [u8; 64] = B64
        .decode(signed.signature.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or(SnapshotError::BadSignature)?;
    key.verify_for(SNAPSHOT_CONTEXT, signed.snapshot.as_bytes(), &sig)
        .map_err(|_| SnapshotError::BadSignature)?;
    let snap: Snapshot = serde_json::from_str(&signed.snapshot)
        .map_err(|e| SnapshotError::Malformed(e.to_string()))?;
    if snap.host != host {
        return Err(SnapshotError::WrongHost {
            expected: host.to_string(),
            found: snap.host,
        });
    }
    Ok(snap)
}

/// Why a command may not run. The text is shown to the caller and reported to the server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refusal(pub String);

/// What was decided for an allowed command.
#[derive(Debug, Clone)]
pub struct Allowed {
    pub grant: HostGrant,
    /// The permit policies that allowed it.
    pub policies: Vec<String>,
}

/// The snapshot in force and the engine built from its policies.
pub struct Enforced {
    pub signed: SignedSnapshot,
    pub snapshot: Snapshot,
    engine: Option<(i64, Engine)>,
}

impl Enforced {
    /// A verified snapshot, with its policies loaded.
    pub fn new(signed: SignedSnapshot, snapshot: Snapshot) -> Result<Self, SnapshotError> {
        let engine = build_engine(&snapshot)?;
        Ok(Enforced {
            signed,
            snapshot,
            engine,
        })
    }

    /// Replaces the snapshot with a newer one (rebuilding the engine only when the policy
    /// version changed). Returns what was in force and no longer is: grants and task
    /// delegations, with when they were due to end.
    pub fn replace(
        &mut self,
        signed: SignedSnapshot,
        snapshot: Snapshot,
    ) -> Result<Vec<(Uuid, Timestamp)>, SnapshotError> {
        let older = if snapshot.seq > 0 || self.snapshot.seq > 0 {
            snapshot.seq < self.snapshot.seq
        } else {
            snapshot.issued_at < self.snapshot.issued_at
        };
        if older {
            return Err(SnapshotError::Stale {
                offered: snapshot.seq,
                current: self.snapshot.seq,
            });
        }
        let engine = match (&self.engine, &snapshot.policy) {
            (Some((v, _)), Some(p)) if *v == p.version => self.engine.take(),
            _ => build_engine(&snapshot)?,
        };
        let mut ended: Vec<(Uuid, Timestamp)> = self
            .snapshot
            .grants
            .iter()
            .filter(|g| !snapshot.grants.iter().any(|n| n.id == g.id))
            .map(|g| (g.id, g.expires_at))
            .collect();
        let still: std::collections::HashSet<Uuid> = snapshot
            .tasks
            .iter()
            .flat_map(|t| t.delegations.iter().map(|d| d.delegation))
            .collect();
        for t in &self.snapshot.tasks {
            for d in &t.delegations {
                if !still.contains(&d.delegation)
                    && !ended.iter().any(|(id, _)| *id == d.delegation)
                {
                    ended.push((d.delegation, d.expires_at));
                }
            }
        }
        self.engine = engine;
        self.signed = signed;
        self.snapshot = snapshot;
        Ok(ended)
    }

    /// The task `name` and the delegation that lets `user` run it here at `now`.
    pub fn task_for(
        &self,
        user: &str,
        name: &str,
        now: Timestamp,
    ) -> Result<
        (
            &pedm_core::delegation::TaskDef,
            &pedm_core::delegation::TaskDelegation,
        ),
        Refusal,
    > {
        let host = &self.snapshot.host;
        let task = self
            .snapshot
            .tasks
            .iter()
            .find(|t| t.task.name == name)
            .ok_or_else(|| Refusal(format!("there is no task {name} on {host}")))?;
        let id = task.allowed_for(user, now).ok_or_else(|| {
            Refusal(format!(
                "no live delegation lets {user} run task {name} on {host}"
            ))
        })?;
        let d = task
            .delegations
            .iter()
            .find(|d| d.delegation == id)
            .ok_or_else(|| Refusal(format!("delegation {id} vanished")))?;
        Ok((&task.task, d))
    }

    /// Whether a grant, or a task delegation, is in force at `now`.
    pub fn is_live(&self, id: Uuid, now: Timestamp) -> bool {
        self.live_grant(id, now).is_some()
            || self.snapshot.tasks.iter().any(|t| {
                t.delegations
                    .iter()
                    .any(|d| d.delegation == id && now < d.expires_at)
            })
    }

    /// A grant in force at `now`, if any.
    pub fn live_grant(&self, id: Uuid, now: Timestamp) -> Option<&HostGrant> {
        self.snapshot
            .grants
            .iter()
            .find(|g| g.id == id && g.starts_at <= now && now < g.expires_at)
    }

    /// The grant `user` runs under: the one named, or their only live one on this host.
    /// `user`'s grants on this host that are live at `now`.
    pub fn live_grants(&self, user: &str, now: Timestamp) -> Vec<&HostGrant> {
        self.snapshot
            .grants
            .iter()
            .filter(|g| g.user == user && g.starts_at <= now && now < g.expires_at)
            .collect()
    }

    pub fn pick_grant(
        &self,
        user: &str,
        grant: Option<Uuid>,
        now: Timestamp,
    ) -> Result<&HostGrant, Refusal> {
        let host = &self.snapshot.host;
        let live = self.live_grants(user, now);
        match (grant, live.as_slice()) {
            (Some(id), _) => live.iter().find(|g| g.id == id).copied().ok_or_else(|| {
                Refusal(format!(
                    "grant {id} is not an active grant of {user} on {host}"
                ))
            }),
            (None, []) => Err(Refusal(format!(
                "{user} holds no active grant on {host}; request one with \
                 `pedm request create --target {host} --role ROLE --duration 1h --justification REASON`"
            ))),
            (None, [one]) => Ok(one),
            (None, several) => {
                let ids: Vec<String> = several
                    .iter()
                    .map(|g| format!("{} ({})", g.id, g.role))
                    .collect();
                Err(Refusal(format!(
                    "{user} holds several grants on {host}: {}; choose one with --grant",
                    ids.join(", ")
                )))
            }
        }
    }

    /// Picks the grant and asks policy about the exact command.
    pub fn decide(
        &self,
        user: &str,
        grant: Option<Uuid>,
        command: &CommandRef,
        now: Timestamp,
    ) -> Result<Allowed, Refusal> {
        let chosen = self.pick_grant(user, grant, now)?;
        self.authorize(chosen, command, now)
    }

    /// Asks policy whether the holder of `chosen` may run `command` under it.
    pub fn authorize(
        &self,
        chosen: &HostGrant,
        command: &CommandRef,
        now: Timestamp,
    ) -> Result<Allowed, Refusal> {
        let host = &self.snapshot.host;
        let Some((version, engine)) = &self.engine else {
            return Err(Refusal("no policy is in force on this host".into()));
        };
        let q = self.exec_query(chosen, command, now);
        let verdict = engine.authorize(&q);
        if verdict.allowed {
            Ok(Allowed {
                grant: chosen.clone(),
                policies: verdict.policies,
            })
        } else {
            let what = if command.shell {
                "a shell".to_string()
            } else {
                command.path.clone()
            };
            Err(Refusal(format!(
                "{what} under role {} on {host} is not allowed by policy version {version}: {}",
                chosen.role, verdict.reason
            )))
        }
    }
}

impl Enforced {
    /// The Cedar question "may the holder of `chosen` run `command` under it?".
    fn exec_query(&self, chosen: &HostGrant, command: &CommandRef, now: Timestamp) -> AuthzQuery {
        AuthzQuery {
            principal: Principal {
                user: chosen.user.to_string(),
                groups: chosen.groups.clone(),
                admin: chosen.admin,
                external: chosen.external,
                sponsor: chosen.sponsor.clone(),
                // Host sessions are people's; workload identities live in API tokens only.
                workload: None,
                // The on-call schedule is pedmd's; the agent decides offline without it.
                on_call: false,
            },
            action: Action::Exec,
            resource: Resource::Command {
                target: TargetRef {
                    name: self.snapshot.host.clone(),
                    kind: self.snapshot.target_kind.clone(),
                    labels: self.snapshot.target_labels.clone(),
                },
                role: RoleRef {
                    name: chosen.role.clone(),
                    run_as: chosen.run_as.clone(),
                    auto_approve: chosen.role_auto_approve,
                },
                command: command.clone(),
            },
            context: Ctx {
                duration_secs: (chosen.expires_at.as_second() - now.as_second()).max(0),
                ..Ctx::at(now)
            },
            requester: None,
        }
    }

    /// Whether approval could allow `command`, which [`Enforced::authorize`] refused, under
    /// `chosen`: the `@step_up` permits that match it ([`pedm_policy::Engine::step_up`]).
    pub fn step_up(
        &self,
        chosen: &HostGrant,
        command: &CommandRef,
        now: Timestamp,
    ) -> Option<(i64, pedm_policy::StepUp)> {
        let (version, engine) = self.engine.as_ref()?;
        let q = self.exec_query(chosen, command, now);
        engine.step_up(&q).map(|s| (*version, s))
    }
}

fn build_engine(snapshot: &Snapshot) -> Result<Option<(i64, Engine)>, SnapshotError> {
    let Some(p) = &snapshot.policy else {
        return Ok(None);
    };
    let opts = match p.timezone.as_deref() {
        Some(tz) => {
            EngineOptions::with_timezone(tz).map_err(|e| SnapshotError::Policy(e.to_string()))?
        }
        None => EngineOptions::default(),
    };
    let sources: Vec<(String, String)> = p
        .sources
        .iter()
        .map(|s| (s.name.clone(), s.text.clone()))
        .collect();
    let engine = Engine::load(&sources, opts).map_err(|e| SnapshotError::Policy(e.to_string()))?;
    Ok(Some((p.version, engine)))
}

/// Where the snapshot in force is kept between runs.
pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join("snapshot.json")
}

/// Loads and verifies the stored snapshot, if there is one.
pub fn load(
    state_dir: &Path,
    key: &PublicKey,
    host: &str,
) -> Result<Option<Enforced>, SnapshotError> {
    let p = path(state_dir);
    let text = match std::fs::read_to_string(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => {
            return Err(SnapshotError::Io {
                path: p.display().to_string(),
                error,
            });
        }
    };
    let signed: SignedSnapshot =
        serde_json::from_str(&text).map_err(|e| SnapshotError::Malformed(e.to_string()))?;
    let snap = verify(&signed, key, host)?;
    Enforced::new(signed, snap).map(Some)
}

/// Stores the snapshot in force (write, fsync, rename: never half a file).
pub fn save(state_dir: &Path, signed: &SignedSnapshot) -> Result<(), SnapshotError> {
    let p = path(state_dir);
    let io = |error| SnapshotError::Io {
        path: p.display().to_string(),
        error,
    };
    let text = serde_json::to_vec(signed).map_err(|e| SnapshotError::Malformed(e.to_string()))?;
    crate::outbox::write_atomically(&p, &text).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(seq: i64, issued_at: Timestamp) -> (SignedSnapshot, Snapshot) {
        let s = Snapshot {
            host: "web1".into(),
            issued_at,
            seq,
            target_kind: "host".into(),
            target_labels: Default::default(),
            grants: vec![],
            policy: None,
            tasks: vec![],
            killed_sessions: vec![],
        };
        let signed = SignedSnapshot {
            snapshot: serde_json::to_string(&s).unwrap(),
            key_id: "k".into(),
            signature: String::new(),
        };
        (signed, s)
    }

    /// A server whose clock stepped back still issues newer snapshots: they are ordered by
    /// the audit position, not by the time on them.
    #[test]
    fn snapshots_are_ordered_by_audit_position_not_by_clock() {
        let now = Timestamp::now();
        let hour = jiff::SignedDuration::from_secs(3600);
        let (signed, s) = snap(10, now);
        let mut e = Enforced::new(signed, s).unwrap();
        let (signed, s) = snap(11, now - hour);
        assert!(
            e.replace(signed, s).is_ok(),
            "newer position, earlier clock"
        );
        let (signed, s) = snap(11, now - hour - hour);
        assert!(e.replace(signed, s).is_ok(), "same position: same state");
        let (signed, s) = snap(9, now + hour);
        let err = e.replace(signed, s).unwrap_err();
        assert!(
            matches!(
                err,
                SnapshotError::Stale {
                    offered: 9,
                    current: 11
                }
            ),
            "{err}"
        );
    }
}
