//! Hosts running `pedm-agent`: registration, host authentication, the snapshot of grants an
//! agent enforces, and what agents report back (exec decisions, recorded sessions).

use super::agent_reports::{AgentReport, ExecVerdict, ReportVia};
use super::{ControlPlane, Result, subject, trimmed};
use crate::Error;
use crate::audit::{NewAuditEvent, Outcome};
use crate::decision::AdminAction;
use crate::host::{Host, HostWrite, Session, SessionFilter};
use crate::model::*;
use crate::store::{Changeset, StoreError, Write};
use crate::token::{self, MintedToken};
use jiff::{SignedDuration, Timestamp};
use serde_json::json;
use uuid::Uuid;

/// A host token, shown once.
pub struct HostRegistration {
    pub host: Host,
    pub minted: MintedToken,
    /// Whether an earlier token was replaced.
    pub rotated: bool,
}

/// An active grant on a host with what the agent needs to decide locally: the holder's groups
/// and admin flag (as Cedar sees them) and the role's run-as account.
#[derive(Debug, Clone)]
pub struct HostGrant {
    pub grant: Grant,
    pub groups: Vec<String>,
    pub admin: bool,
    /// The holder is an external account (`principal.external`), and its sponsor.
    pub external: bool,
    pub sponsor: Option<String>,
    pub role: Role,
}

/// Everything an agent enforces, as of `at`.
#[derive(Debug, Clone)]
pub struct HostSnapshot {
    pub at: Timestamp,
    /// The audit log's size when the snapshot was read: every change a snapshot can show
    /// (a grant starting or ending, a policy, a delegation) appends to the log first, so this
    /// orders snapshots by what they know, whatever the clocks say.
    pub seq: i64,
    pub target: Target,
    pub grants: Vec<HostGrant>,
    /// The policy version in force (`None` before any was applied).
    pub policy: Option<PolicyVersion>,
    pub tasks: Vec<crate::delegation::HostTask>,
    /// Sessions to end (`pedm session kill`), with why; an agent ends those it runs.
    pub killed_sessions: Vec<(Uuid, String)>,
}

/// The longest path a `session.exec` report may carry (PATH_MAX).
const MAX_PATH_BYTES: usize = 4096;

/// The most of an argv an agent sends in a report or session description; a longer one is
/// cut and identified by its hash ([`AgentReport::argv_sha256`]).
pub const REPORT_ARGV_BYTES: usize = 16 * 1024;

/// Something an agent recorded that the server refused to take (it stays on the host, in
/// `pedm-agent status`): the server records that it exists and raises a high-severity notice.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Undelivered {
    /// The report or session id the agent chose.
    pub item: Uuid,
    /// `report` or `session`.
    pub kind: String,
    /// Its size on the host, in bytes.
    pub bytes: u64,
    /// What the server answered.
    pub error: String,
    /// The person, when known.
    #[serde(default)]
    pub user: Option<String>,
}

/// How many reports were new and how many had been accepted before.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReportReceipt {
    pub accepted: usize,
    pub duplicates: usize,
}

const MAX_REPORTS: usize = 1_000;
const MAX_ARGV_BYTES: usize = 64 * 1024;
const MAX_UNDELIVERED: usize = 100;
/// Turns an item's id into the receipt id of its undelivered notice (distinct from the
/// item's own receipt, the same each time).
const UNDELIVERED_RECEIPT: u128 = 0x756e_6465_6c69_7665_7265_6400_0000_0001;

pub(super) fn check_argv(argv: &[String]) -> Result<()> {
    let bytes: usize = argv.iter().map(|a| a.len() + 1).sum();
    if bytes > MAX_ARGV_BYTES {
        return Err(Error::invalid(
            "argv",
            format!("is {bytes} bytes, more than {MAX_ARGV_BYTES}"),
        ));
    }
    Ok(())
}

impl ControlPlane {
    /// Registers the agent of a `host` target, or replaces its token (the old one stops
    /// working at once). Needs `manage_targets`.
    pub async fn register_host(&self, actor: &Actor, name: &str) -> Result<HostRegistration> {
        self.require_admin(actor, AdminAction::ManageTargets, "host.register")
            .await?;
        let target = self
            .store
            .target(name)
            .await?
            .ok_or_else(|| Error::NotFound(format!("target {name}")))?;
        if target.kind != TargetKind::Host {
            return Err(Error::unprocessable(
                "host",
                format!(
                    "target {name} is of kind {}; only targets of kind host run an agent",
                    target.kind
                ),
            ));
        }
        let rotated = self.store.host(name).await?.is_some();
        let minted = token::mint();
        let now = self.now();
        let enroll_expires_at = match self.host_enroll_ttl_secs {
            Some(ttl) => Some(
                now.checked_add(SignedDuration::from_secs(ttl))
                    .map_err(|e| Error::Internal(e.to_string()))?,
            ),
            None => None,
        };
        let host = Host {
            name: name.to_string(),
            token_id: minted.id.clone(),
            token_hash: minted.secret_hash,
            registered_at: now,
            registered_by: actor.user.clone(),
            last_seen_at: None,
            enroll_expires_at,
            enrolled_at: None,
            revoked_at: None,
            cert_serial: None,
            cert_not_after: None,
        };
        let cs = Changeset::new()
            .write(Write::Host(HostWrite::Register(host.clone())))
            .event(
                self.event(actor, "host.registered", subject("host", name))
                    .data(json!({ "token_id": minted.id, "rotated": rotated })),
            );
        self.store.commit(cs).await?;
        Ok(HostRegistration {
            host,
            minted,
            rotated,
        })
    }

    /// Agents enroll for client certificates with a registration token valid this long
    /// (servers that speak TLS); without it, the token is the agent's lasting credential.
    pub fn with_host_enroll_ttl(mut self, secs: i64) -> Self {
        self.host_enroll_ttl_secs = Some(secs);
        self
    }

    /// The host a presented token is the current token of, or what is wrong with it (`kind`
    /// names the token in the reason: `host`, `enrollment`); with the token's id if it has one.
    async fn host_of_token(
        &self,
        presented: &str,
        kind: &str,
    ) -> Result<(Option<String>, std::result::Result<Host, String>)> {
        let Some((id, secret)) = token::parse(presented) else {
            return Ok((None, Err(format!("malformed {kind} token"))));
        };
        let host = match self.store.host_by_token(id).await? {
            None => Err(format!("unknown {kind} token")),
            Some(h) if !token::verify(secret, &h.token_hash) => {
                Err(format!("wrong {kind} token secret"))
            }
            Some(h) if h.revoked_at.is_some() => Err("the host is revoked".to_string()),
            Some(h) => Ok(h),
        };
        Ok((Some(id.to_string()), host))
    }

    /// Records a refused host authentication (`action`, denied, `data` plus the reason; never
    /// a secret), counted with the other failures from `source`, and returns `error`.
    async fn refuse_host(
        &self,
        action: &str,
        sub: Option<String>,
        mut data: serde_json::Value,
        source: Option<&str>,
        reason: &str,
        error: String,
    ) -> Result<Host> {
        data["reason"] = json!(reason);
        let ev = NewAuditEvent::new(self.now(), "anonymous", action, sub)
            .outcome(Outcome::Denied)
            .data(data);
        self.record_auth_failure(ev, source, reason, "host").await?;
        Err(Error::Unauthenticated(error))
    }

    /// Checks a registration token presented to enroll: the host's current token, not spent,
    /// not expired, host not revoked. Failures are recorded (never with the secret).
    pub async fn check_enrollment(&self, presented: &str, source: Option<&str>) -> Result<Host> {
        let now = self.now();
        let (id, host) = self.host_of_token(presented, "enrollment").await?;
        let why = match host {
            Ok(h) if h.enrolled_at.is_some() => "the enrollment token was used already".into(),
            Ok(h) if h.enroll_expires_at.is_some_and(|e| e <= now) => {
                "the enrollment token expired".into()
            }
            Ok(h) => return Ok(h),
            Err(why) => why,
        };
        let sub = id.and_then(|id| subject("token", &id));
        self.refuse_host(
            "host.enroll",
            sub,
            json!({ "source": source }),
            source,
            &why,
            format!("enrollment refused: {why}"),
        )
        .await
    }

    /// Spends `host`'s registration token for its first client certificate.
    pub async fn finish_enrollment(
        &self,
        host: &Host,
        serial: &str,
        not_after: Timestamp,
    ) -> Result<()> {
        let now = self.now();
        let cs = Changeset::new()
            .write(Write::Host(HostWrite::Enroll {
                name: host.name.clone(),
                token_id: host.token_id.clone(),
                at: now,
                serial: serial.into(),
                not_after,
            }))
            .event(
                NewAuditEvent::new(
                    now,
                    &format!("host:{}", host.name),
                    "host.enrolled",
                    subject("host", &host.name),
                )
                .data(
                    json!({ "serial": serial, "not_after": not_after, "token_id": host.token_id }),
                ),
            );
        self.store.commit(cs).await.map_err(|e| match e {
            StoreError::Conflict(m) => Error::Unauthenticated(format!("enrollment refused: {m}")),
            e => e.into(),
        })?;
        Ok(())
    }

    /// The host of an agent that presented a client certificate: enrolled and not revoked.
    pub async fn authenticate_host_cert(&self, host: &str, serial: &str) -> Result<Host> {
        let why = match self.store.host(host).await? {
            None => "unknown host",
            Some(h) if h.revoked_at.is_some() => "the host is revoked",
            Some(h) if h.enrolled_at.is_none() => "the host is not enrolled",
            Some(h) => return Ok(h),
        };
        self.refuse_host(
            "auth.failed",
            subject("host", host),
            json!({ "kind": "host-certificate", "serial": serial }),
            None,
            why,
            format!("client certificate refused: {why}"),
        )
        .await
    }

    /// Records the renewed client certificate of an enrolled, unrevoked host.
    pub async fn record_host_cert(
        &self,
        host: &str,
        serial: &str,
        not_after: Timestamp,
    ) -> Result<()> {
        let now = self.now();
        let cs = Changeset::new()
            .write(Write::Host(HostWrite::Certify {
                name: host.into(),
                serial: serial.into(),
                not_after,
            }))
            .event(
                NewAuditEvent::new(
                    now,
                    &format!("host:{host}"),
                    "host.cert_renewed",
                    subject("host", host),
                )
                .data(json!({ "serial": serial, "not_after": not_after })),
            );
        self.store.commit(cs).await.map_err(|e| match e {
            StoreError::Conflict(m) => Error::Unauthenticated(m),
            e => e.into(),
        })?;
        Ok(())
    }

    /// Revokes a host (manage_targets): its certificates are refused at the handshake and its
    /// token everywhere until it is registered again.
    pub async fn revoke_host(
        &self,
        actor: &Actor,
        name: &str,
        reason: Option<String>,
    ) -> Result<Host> {
        self.require_admin(actor, AdminAction::ManageTargets, "host.revoke")
            .await?;
        let reason = trimmed("reason", reason, 500)?;
        let cs = Changeset::new()
            .write(Write::Host(HostWrite::Revoke {
                name: name.into(),
                at: self.now(),
            }))
            .event(
                self.event(actor, "host.revoked", subject("host", name))
                    .data(json!({ "reason": reason })),
            );
        self.store.commit(cs).await.map_err(|e| match e {
            StoreError::NotFound(_) => Error::NotFound(format!("host {name}")),
            StoreError::Conflict(m) => Error::Conflict(m),
            e => e.into(),
        })?;
        self.store
            .host(name)
            .await?
            .ok_or_else(|| Error::NotFound(format!("host {name}")))
    }

    /// Names of the revoked hosts (for the TLS handshake's refusal list).
    pub async fn revoked_hosts(&self) -> Result<Vec<String>> {
        Ok(self
            .store
            .hosts()
            .await?
            .into_iter()
            .filter(|h| h.revoked_at.is_some())
            .map(|h| h.name)
            .collect())
    }

    pub async fn list_hosts(&self, actor: &Actor) -> Result<Vec<Host>> {
        self.require_admin(actor, AdminAction::ManageTargets, "host.list")
            .await?;
        Ok(self.store.hosts().await?)
    }

    /// Resolves a presented host token to the host's name. Failures are recorded (never with
    /// the secret) and reported without saying which part was wrong.
    pub async fn authenticate_host(&self, presented: &str, source: Option<&str>) -> Result<String> {
        let (id, host) = self.host_of_token(presented, "host").await?;
        match host {
            Ok(h) => Ok(h.name),
            Err(why) => {
                let sub = id.and_then(|id| subject("token", &id));
                let data = json!({ "source": source, "kind": "host" });
                self.refuse_host(
                    "auth.failed",
                    sub,
                    data,
                    source,
                    &why,
                    "invalid host token".into(),
                )
                .await
                .map(|h| h.name)
            }
        }
    }

    /// The grants `host`'s agent enforces now, with the policy in force. Records the contact.
    pub async fn host_snapshot(&self, host: &str) -> Result<HostSnapshot> {
        let now = self.now();
        // Read before the state: the state read afterwards is at least this new.
        let seq = self.store.audit_head().await?.map_or(0, |(seq, _)| seq);
        let target = self
            .store
            .target(host)
            .await?
            .ok_or_else(|| Error::NotFound(format!("target {host}")))?;
        let grants = self
            .store
            .grants(&GrantFilter {
                target: Some(host.to_string()),
                state: Some(GrantState::Active),
                ..Default::default()
            })
            .await?;
        // Locks: a locked host enforces no grant; a locked person's grants are left out.
        let locks: Vec<crate::lock::Lock> = self
            .store
            .locks()
            .await?
            .into_iter()
            .filter(|l| l.holds(now))
            .collect();
        let host_locked = locks
            .iter()
            .any(|l| l.stops(&crate::lock::LockKind::Host, host, now));
        // Session ids are random: every host is told, only the one running it acts.
        let killed_sessions = locks
            .iter()
            .filter(|l| l.kind == crate::lock::LockKind::Session)
            .filter_map(|l| {
                let id = Uuid::parse_str(&l.subject).ok()?;
                Some((id, format!("killed by {}: {}", l.created_by, l.reason)))
            })
            .collect();
        let mut out = Vec::with_capacity(grants.len());
        for g in grants {
            if host_locked
                || locks
                    .iter()
                    .any(|l| l.stops(&crate::lock::LockKind::User, &g.user, now))
            {
                continue;
            }
            // A grant whose privilege is not (or no longer) switched on is not enforced.
            if g.provision_state != ProvisionState::Active || g.expires_at <= now {
                continue;
            }
            let (Some(user), Some(role)) = (
                self.store.user(&g.user).await?,
                self.store.role(&g.target, &g.role).await?,
            ) else {
                continue;
            };
            if user.disabled {
                continue;
            }
            let (external, sponsor) = self.external_of(&g.user).await?;
            out.push(HostGrant {
                groups: self.store.groups_of(&g.user).await?,
                admin: user.admin,
                external,
                sponsor,
                role,
                grant: g,
            });
        }
        let policy = self.store.policy_version(None).await?;
        let tasks = self.host_tasks(host).await?;
        if let Err(e) = self
            .store
            .commit(Changeset::new().write(Write::Host(HostWrite::Seen {
                name: host.to_string(),
                at: now,
            })))
            .await
        {
            tracing::warn!(host, error = %e, "cannot record agent contact");
        }
        Ok(HostSnapshot {
            at: now,
            seq,
            target,
            grants: out,
            policy,
            tasks,
            killed_sessions,
        })
    }

    /// Records exec decisions an agent made. Each report is committed with its id, so one
    /// sent again (the agent did not see the answer) is counted as a duplicate, not recorded twice.
    pub async fn record_agent_reports(
        &self,
        host: &str,
        reports: Vec<AgentReport>,
    ) -> Result<ReportReceipt> {
        if reports.len() > MAX_REPORTS {
            return Err(Error::invalid(
                "reports",
                format!(
                    "{} reports in one call, more than {MAX_REPORTS}",
                    reports.len()
                ),
            ));
        }
        for r in &reports {
            validate_name("user", &r.user)?;
            check_argv(&r.argv)?;
            if let Some(x) = &r.exec
                && (x.cwd.len() > MAX_PATH_BYTES
                    || x.path.len() > MAX_PATH_BYTES
                    || x.resolved
                        .as_ref()
                        .is_some_and(|r| r.len() > MAX_PATH_BYTES))
            {
                return Err(Error::invalid(
                    "exec",
                    format!("a path of more than {MAX_PATH_BYTES} bytes"),
                ));
            }
        }
        let mut receipt = ReportReceipt::default();
        for r in reports {
            let (action, outcome) = match (r.verdict, &r.exec) {
                _ if r.file.is_some() => ("session.file_changed", Outcome::Success),
                (ExecVerdict::Allowed, _) if r.via == Some(ReportVia::Login) => {
                    ("host.login", Outcome::Success)
                }
                (ExecVerdict::Denied, _) if r.via == Some(ReportVia::Login) => {
                    ("host.login", Outcome::Denied)
                }
                (ExecVerdict::Allowed, None) => ("exec.allowed", Outcome::Success),
                (ExecVerdict::Denied, None) => ("exec.denied", Outcome::Denied),
                (ExecVerdict::Allowed, Some(_)) => ("session.exec", Outcome::Success),
                (ExecVerdict::Denied, Some(_)) => ("session.exec", Outcome::Denied),
            };
            let ev = NewAuditEvent::new(
                r.at,
                &r.user,
                action,
                r.grant.and_then(|g| subject("grant", g)),
            )
            .outcome(outcome)
            .data({
                let mut data = json!({
                    "host": host,
                    "target": host,
                    "report": r.id,
                    "grant": r.grant,
                    "session": r.session,
                    "task": r.task,
                    "delegation": r.delegation,
                    "argv": r.argv,
                    "binary_sha256": r.binary_sha256,
                    "reason": r.reason,
                });
                for (k, v) in [
                    ("argv_sha256", json!(r.argv_sha256)),
                    ("argv_bytes", json!(r.argv_bytes)),
                    ("count", json!(r.count)),
                    ("last_at", json!(r.last_at)),
                    ("exec", json!(r.exec)),
                    ("file", json!(r.file)),
                    ("via", json!(r.via)),
                ] {
                    if !v.is_null() {
                        data[k] = v;
                    }
                }
                data
            });
            let mut cs = Changeset::new()
                .write(Write::Host(HostWrite::Receipt {
                    id: r.id,
                    host: host.to_string(),
                    at: self.now(),
                }))
                .event(ev);
            // Alerts: recorded with the report (once, as the report), announced after.
            let alerts = if r.via == Some(ReportVia::Login) {
                vec![]
            } else {
                self.exec_alerts_matching(&r.argv)
            };
            for name in &alerts {
                cs = cs.event(
                    NewAuditEvent::new(
                        r.at,
                        &r.user,
                        "exec.alert",
                        r.grant.and_then(|g| subject("grant", g)),
                    )
                    .outcome(outcome)
                    .data(json!({
                        "alert": name, "host": host, "report": r.id, "argv": r.argv,
                        "session": r.session, "verdict": r.verdict,
                    })),
                );
            }
            for name in alerts {
                cs = cs.notice(crate::notice::Notice::ExecAlert {
                    alert: name,
                    host: host.to_string(),
                    user: r.user.clone(),
                    argv: r.argv.clone(),
                    allowed: r.verdict == ExecVerdict::Allowed,
                    session: r.session,
                });
            }
            match self.commit(cs).await {
                Ok(_) => {
                    receipt.accepted += 1;
                }
                Err(StoreError::AlreadyExists(_)) => receipt.duplicates += 1,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(receipt)
    }

    /// Records that an agent holds items the server refused (see [`Undelivered`]): one
    /// `agent.undelivered` event each (once per item), and a high-severity notice.
    pub async fn record_undelivered(&self, host: &str, items: Vec<Undelivered>) -> Result<usize> {
        if items.len() > MAX_UNDELIVERED {
            return Err(Error::invalid(
                "items",
                format!(
                    "{} items in one call, more than {MAX_UNDELIVERED}",
                    items.len()
                ),
            ));
        }
        for u in &items {
            if u.kind != "report" && u.kind != "session" {
                return Err(Error::invalid("kind", "must be report or session"));
            }
            if u.error.len() > 4096 {
                return Err(Error::invalid("error", "is longer than 4096 bytes"));
            }
        }
        let mut new = 0;
        for mut u in items {
            // Informational: a name the server would refuse (maybe why the item was refused)
            // is left out rather than refusing the notice.
            if u.user
                .as_deref()
                .is_some_and(|n| validate_name("user", n).is_err())
            {
                u.user = None;
            }
            let ev = NewAuditEvent::new(
                self.now(),
                &format!("host:{host}"),
                "agent.undelivered",
                None,
            )
            .outcome(Outcome::Failure)
            .data(json!({
                "host": host,
                "target": host,
                "item": u.item,
                "kind": u.kind,
                "bytes": u.bytes,
                "error": u.error,
                "user": u.user,
            }));
            // The receipt's id is derived from the item's, so a notice sent again is one event.
            let receipt = Uuid::from_u128(u.item.as_u128() ^ UNDELIVERED_RECEIPT);
            let cs = Changeset::new()
                .write(Write::Host(HostWrite::Receipt {
                    id: receipt,
                    host: host.to_string(),
                    at: self.now(),
                }))
                .event(ev)
                .notice(crate::notice::Notice::AgentUndelivered {
                    host: host.to_string(),
                    item: u.item,
                    kind: u.kind.clone(),
                    error: u.error.clone(),
                });
            match self.commit(cs).await {
                Ok(_) => {
                    new += 1;
                    tracing::error!(host, item = %u.item, kind = %u.kind, error = %u.error,
                        "an agent holds a record the server refused");
                }
                Err(StoreError::AlreadyExists(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(new)
    }

    /// Records a session an agent recorded (its recording is already stored under the
    /// session's id by the transport). Returns `false` when it was recorded before with the
    /// same recording; a different recording under the same id is a conflict.
    pub async fn record_session(&self, host: &str, mut session: Session) -> Result<bool> {
        check_argv(&session.argv)?;
        validate_name("user", &session.user)?;
        if let Some(existing) = self.store.session(session.id).await? {
            return if existing.recording_sha256 == session.recording_sha256 && existing.host == host
            {
                Ok(false)
            } else {
                Err(Error::Conflict(format!(
                    "session {} was recorded before with a different recording",
                    session.id
                )))
            };
        }
        let mismatch = self
            .session_mismatch(
                host,
                session.grant_id,
                session.delegation_id,
                &session.user,
                session.task.is_some(),
            )
            .await?
            // sudo decided a sudo-log session; a grant, when named, was checked as any other.
            .filter(|_| !(session.via.is_some() && session.grant_id.is_none()));
        if let Some(why) = mismatch {
            return Err(self
                .refuse(
                    &host_actor(host),
                    "session.recorded",
                    subject("session", session.id),
                    why,
                )
                .await);
        }
        session.host = host.to_string();
        session.uploaded_at = self.now();
        let ev = NewAuditEvent::new(
            session.uploaded_at,
            &session.user,
            "session.recorded",
            subject("session", session.id),
        )
        .data(json!({
            "host": host,
            "target": host,
            "grant": session.grant_id,
            "delegation": session.delegation_id,
            "task": session.task,
            "params": session.params,
            "run_as": session.run_as,
            "argv": session.argv,
            "binary_sha256": session.binary_sha256,
            "shell": session.shell,
            "started_at": session.started_at,
            "ended_at": session.ended_at,
            "exit_code": session.exit_code,
            "signal": session.signal,
            "ended_by": session.ended_by,
            "recording_sha256": session.recording_sha256,
            "recording_bytes": session.recording_bytes,
            "via": session.via,
        }));
        let long = self.session_far_longer(&session).await?;
        let mut cs = Changeset::new().event(ev);
        if let Some((usual_secs, history)) = long {
            let secs = session
                .ended_at
                .duration_since(session.started_at)
                .as_secs();
            cs = cs
                .event(
                    NewAuditEvent::new(
                        session.uploaded_at,
                        SYSTEM_ACTOR,
                        "session.unusually_long",
                        subject("session", session.id),
                    )
                    .data(json!({
                        "host": host, "target": host, "user": session.user,
                        "run_as": session.run_as, "grant": session.grant_id,
                        "duration_secs": secs, "usual_secs": usual_secs, "history": history,
                    })),
                )
                .notice(crate::notice::Notice::LongSession {
                    session: session.id,
                    host: host.to_string(),
                    user: session.user.clone(),
                    run_as: session.run_as.clone(),
                    duration_secs: secs,
                    usual_secs,
                });
        }
        let cs = cs.write(Write::Host(HostWrite::InsertSession(Box::new(session))));
        match self.commit(cs).await {
            Ok(_) => Ok(true),
            // Uploaded twice at the same moment: the other one recorded it.
            Err(StoreError::AlreadyExists(_)) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Sessions the actor may see: everyone's with `read_audit`, otherwise their own.
    pub async fn list_sessions(
        &self,
        actor: &Actor,
        mut filter: SessionFilter,
    ) -> Result<Vec<Session>> {
        if !self.holds(actor, AdminAction::ReadAudit) {
            match &filter.user {
                Some(u) if *u != actor.user => {
                    return Err(self
                        .refuse(
                            actor,
                            "session.list",
                            subject("user", u),
                            format!("session.list: reading {u}'s sessions needs read_audit"),
                        )
                        .await);
                }
                _ => filter.user = Some(actor.user.clone()),
            }
        }
        filter.limit = Some(filter.limit.unwrap_or(100).min(1_000));
        Ok(self.store.sessions(&filter).await?)
    }

    /// One session, if the actor may see it (their own, or anyone's with `read_audit`).
    pub async fn get_session(&self, actor: &Actor, id: Uuid) -> Result<Session> {
        let s = self
            .store
            .session(id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("session {id}")))?;
        if s.user != actor.user && !self.holds(actor, AdminAction::ReadAudit) {
            return Err(self
                .refuse(
                    actor,
                    "session.read",
                    subject("session", id),
                    format!(
                        "session.read: session {id} belongs to {}; reading it needs read_audit",
                        s.user
                    ),
                )
                .await);
        }
        Ok(s)
    }

    /// Why a session a host reports does not fit the grant or delegation it names, if so.
    async fn session_mismatch(
        &self,
        host: &str,
        grant_id: Option<Uuid>,
        delegation_id: Option<Uuid>,
        user: &str,
        has_task: bool,
    ) -> Result<Option<String>> {
        Ok(match (grant_id, delegation_id) {
            (Some(grant_id), _) => match self.store.grant(grant_id).await? {
                None => Some(format!("grant {grant_id} does not exist")),
                Some(g) if g.target != host => Some(format!(
                    "grant {} is for {}, not for host {host}",
                    g.id, g.target
                )),
                Some(g) if g.user != user => Some(format!(
                    "grant {} belongs to {}, not to {user}",
                    g.id, g.user
                )),
                _ => None,
            },
            // A task run: the delegation must exist (it may have ended since; the agent
            // decided while it was live, possibly offline).
            (None, Some(d)) => match self.store.delegation(d).await? {
                None => Some(format!("delegation {d} does not exist")),
                Some(_) if !has_task => {
                    Some("a session under a delegation must name its task".to_string())
                }
                _ => None,
            },
            (None, None) => Some("a session names neither a grant nor a delegation".to_string()),
        })
    }

    /// Checks what a host says of a session it starts streaming (`session.live`): its grant
    /// or delegation must be one of this host's, for this user.
    pub async fn check_live_session(
        &self,
        host: &str,
        id: Uuid,
        grant_id: Option<Uuid>,
        delegation_id: Option<Uuid>,
        user: &str,
        argv: &[String],
    ) -> Result<()> {
        check_argv(argv)?;
        validate_name("user", user)?;
        if let Some(why) = self
            .session_mismatch(host, grant_id, delegation_id, user, true)
            .await?
        {
            return Err(self
                .refuse(
                    &host_actor(host),
                    "session.live",
                    subject("session", id),
                    why,
                )
                .await);
        }
        Ok(())
    }

    /// Whether `actor` may see `owner`'s sessions: their own, or anyone's with `read_audit`.
    pub fn may_see_sessions_of(&self, actor: &Actor, owner: &str) -> bool {
        owner == actor.user || self.holds(actor, AdminAction::ReadAudit)
    }

    /// Lets `actor` watch `owner`'s live session `id` on `host` (their own, or anyone's with
    /// `read_audit`). Watching is recorded (`session.watched`), as is a refusal.
    pub async fn watch_session(
        &self,
        actor: &Actor,
        id: Uuid,
        host: &str,
        owner: &str,
    ) -> Result<()> {
        if !self.may_see_sessions_of(actor, owner) {
            return Err(self
                .refuse(
                    actor,
                    "session.watch",
                    subject("session", id),
                    format!(
                        "session.watch: session {id} belongs to {owner}; watching it needs \
                         read_audit"
                    ),
                )
                .await);
        }
        let cs = Changeset::new().event(
            self.event(actor, "session.watched", subject("session", id))
                .data(json!({ "host": host, "user": owner })),
        );
        self.store.commit(cs).await?;
        Ok(())
    }
}

/// A host agent as the actor of what it reports.
pub(super) fn host_actor(host: &str) -> Actor {
    Actor {
        user: format!("host:{host}"),
        admin: false,
        groups: vec![],
        token_id: None,
        external: false,
        sponsor: None,
        workload: None,
        via_agent: false,
    }
}
