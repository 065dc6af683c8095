//! Column lists and row → model mapping, shared by both dialects.

use crate::db::Row;
use jiff::Timestamp;
use pedm_core::audit::{AuditEvent, Outcome};
use pedm_core::model::*;
use pedm_core::store::StoreError;
use std::str::FromStr;
use uuid::Uuid;

pub(crate) const USER_COLS: &str = "name, display_name, admin, disabled, created_at, email";
pub(crate) const TOKEN_COLS: &str =
    "id, user_name, description, secret_hash, created_at, expires_at, revoked_at, workload, agent";
pub(crate) const TARGET_COLS: &str = "name, kind, description, labels, created_at";
pub(crate) const ROLE_COLS: &str = "target, name, description, max_duration_secs, auto_approve, run_as, created_at, \
     noexec, allow_setuid, record_input, intercept, limits, watch_paths, ssh";
pub(crate) const REQUEST_COLS: &str = "id, requester, target, role, duration_secs, justification, \
     task, ticket, context, state, created_at, pending_until, decided_at, decided_by, \
     decision_reason, grant_id, approvals_required, version, approval_tiers, policy, \
     break_glass, review, follow_up";
pub(crate) const APPROVAL_COLS: &str = "request_id, approver, decision, comment, at, tier";
pub(crate) const POLICY_COLS: &str = "version, created_at, created_by, comment, digest, sources";
pub(crate) const GRANT_COLS: &str = "id, request_id, user_name, target, role, starts_at, \
     expires_at, state, ended_at, ended_by, end_reason, provision_state, provision_detail";
pub(crate) const JOB_COLS: &str = "id, grant_id, action, attempts, next_attempt_at, \
     last_error, done, created_at, target, account, privilege, source";
pub(crate) const AUDIT_COLS: &str =
    "seq, at, actor, action, outcome, subject, data, prev_hash, hash";

pub(crate) fn corrupt(col: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("column {col}: {e}"))
}

pub(crate) fn ts(r: &Row, col: &str) -> Result<Timestamp, StoreError> {
    Timestamp::from_microsecond(r.get(col)?).map_err(|e| corrupt(col, e))
}

pub(crate) fn opt_ts(r: &Row, col: &str) -> Result<Option<Timestamp>, StoreError> {
    r.get::<Option<i64>>(col)?
        .map(|us| Timestamp::from_microsecond(us).map_err(|e| corrupt(col, e)))
        .transpose()
}

pub(crate) fn uuid(r: &Row, col: &str) -> Result<Uuid, StoreError> {
    Uuid::parse_str(&r.get::<String>(col)?).map_err(|e| corrupt(col, e))
}

pub(crate) fn opt_uuid(r: &Row, col: &str) -> Result<Option<Uuid>, StoreError> {
    r.get::<Option<String>>(col)?
        .map(|s| Uuid::parse_str(&s).map_err(|e| corrupt(col, e)))
        .transpose()
}

fn parsed<T: FromStr>(r: &Row, col: &str) -> Result<T, StoreError>
where
    T::Err: std::fmt::Display,
{
    r.get::<String>(col)?.parse().map_err(|e| corrupt(col, e))
}

pub(crate) fn json<T: serde::de::DeserializeOwned>(r: &Row, col: &str) -> Result<T, StoreError> {
    serde_json::from_str(&r.get::<String>(col)?).map_err(|e| corrupt(col, e))
}

fn hash(r: &Row, col: &str) -> Result<[u8; 32], StoreError> {
    r.get::<Vec<u8>>(col)?
        .try_into()
        .map_err(|v: Vec<u8>| corrupt(col, format!("expected 32 bytes, found {}", v.len())))
}

pub(crate) fn user(r: &Row) -> Result<User, StoreError> {
    Ok(User {
        name: r.get("name")?,
        display_name: r.get("display_name")?,
        admin: r.get("admin")?,
        disabled: r.get("disabled")?,
        created_at: ts(r, "created_at")?,
        email: r.get("email")?,
    })
}

/// Groups come from `groups LEFT JOIN group_members`, one row per member (or one row with a
/// NULL `member` for an empty group), ordered by group name.
pub(crate) fn groups(rows: &[Row]) -> Result<Vec<Group>, StoreError> {
    let mut out: Vec<Group> = Vec::new();
    for r in rows {
        let name: String = r.get("name")?;
        if out.last().is_none_or(|g| g.name != name) {
            out.push(Group {
                name,
                description: r.get("description")?,
                members: Vec::new(),
                created_at: ts(r, "created_at")?,
            });
        }
        if let (Some(g), Some(m)) = (out.last_mut(), r.get::<Option<String>>("member")?) {
            g.members.push(m);
        }
    }
    Ok(out)
}

pub(crate) fn token(r: &Row) -> Result<TokenRecord, StoreError> {
    Ok(TokenRecord {
        id: r.get("id")?,
        user: r.get("user_name")?,
        description: r.get("description")?,
        secret_hash: hash(r, "secret_hash")?,
        created_at: ts(r, "created_at")?,
        expires_at: opt_ts(r, "expires_at")?,
        revoked_at: opt_ts(r, "revoked_at")?,
        workload: r
            .get::<Option<String>>("workload")?
            .map(|w| serde_json::from_str(&w).map_err(|e| corrupt("workload", e)))
            .transpose()?,
        agent: r.get("agent")?,
    })
}

pub(crate) fn target(r: &Row) -> Result<Target, StoreError> {
    Ok(Target {
        name: r.get("name")?,
        kind: parsed(r, "kind")?,
        description: r.get("description")?,
        labels: json(r, "labels")?,
        created_at: ts(r, "created_at")?,
    })
}

pub(crate) fn role(r: &Row) -> Result<Role, StoreError> {
    Ok(Role {
        target: r.get("target")?,
        name: r.get("name")?,
        description: r.get("description")?,
        max_duration_secs: r.get("max_duration_secs")?,
        auto_approve: r.get("auto_approve")?,
        run_as: r.get("run_as")?,
        noexec: r.get("noexec")?,
        allow_setuid: r.get("allow_setuid")?,
        record_input: r.get("record_input")?,
        intercept: r.get("intercept")?,
        limits: json(r, "limits")?,
        watch_paths: json(r, "watch_paths")?,
        ssh: json(r, "ssh")?,
        created_at: ts(r, "created_at")?,
    })
}

pub(crate) fn request(r: &Row) -> Result<Request, StoreError> {
    let required: i64 = r.get("approvals_required")?;
    Ok(Request {
        id: uuid(r, "id")?,
        requester: r.get("requester")?,
        target: r.get("target")?,
        role: r.get("role")?,
        duration_secs: r.get("duration_secs")?,
        justification: r.get("justification")?,
        task: r.get("task")?,
        ticket: r.get("ticket")?,
        context: json(r, "context")?,
        state: parsed(r, "state")?,
        created_at: ts(r, "created_at")?,
        pending_until: ts(r, "pending_until")?,
        decided_at: opt_ts(r, "decided_at")?,
        decided_by: r.get("decided_by")?,
        decision_reason: r.get("decision_reason")?,
        grant_id: opt_uuid(r, "grant_id")?,
        approvals_required: u32::try_from(required)
            .map_err(|e| corrupt("approvals_required", e))?,
        approval_tiers: json(r, "approval_tiers")?,
        policy: r.get("policy")?,
        break_glass: r.get("break_glass")?,
        review: match r.get::<Option<String>>("review")? {
            Some(t) => Some(serde_json::from_str(&t).map_err(|e| corrupt("review", e))?),
            None => None,
        },
        version: r.get("version")?,
        follow_up: match r.get::<Option<String>>("follow_up")? {
            Some(t) => Some(serde_json::from_str(&t).map_err(|e| corrupt("follow_up", e))?),
            None => None,
        },
    })
}

pub(crate) fn policy_version(r: &Row) -> Result<PolicyVersion, StoreError> {
    Ok(PolicyVersion {
        version: r.get("version")?,
        created_at: ts(r, "created_at")?,
        created_by: r.get("created_by")?,
        comment: r.get("comment")?,
        digest: r.get("digest")?,
        sources: json(r, "sources")?,
    })
}

pub(crate) fn approval(r: &Row) -> Result<Approval, StoreError> {
    Ok(Approval {
        request_id: uuid(r, "request_id")?,
        approver: r.get("approver")?,
        decision: parsed(r, "decision")?,
        comment: r.get("comment")?,
        at: ts(r, "at")?,
        tier: u32::try_from(r.get::<i64>("tier")?).map_err(|e| corrupt("tier", e))?,
    })
}

pub(crate) fn grant(r: &Row) -> Result<Grant, StoreError> {
    Ok(Grant {
        id: uuid(r, "id")?,
        request_id: uuid(r, "request_id")?,
        user: r.get("user_name")?,
        target: r.get("target")?,
        role: r.get("role")?,
        starts_at: ts(r, "starts_at")?,
        expires_at: ts(r, "expires_at")?,
        state: parsed(r, "state")?,
        ended_at: opt_ts(r, "ended_at")?,
        ended_by: r.get("ended_by")?,
        end_reason: r.get("end_reason")?,
        provision_state: parsed(r, "provision_state")?,
        provision_detail: r.get("provision_detail")?,
    })
}

pub(crate) fn job(r: &Row) -> Result<ProvisionJob, StoreError> {
    let drift = match r.get::<Option<String>>("target")? {
        Some(target) => Some(DriftFinding {
            target,
            account: r.get("account")?,
            privilege: r.get("privilege")?,
            source: r.get::<Option<String>>("source")?.unwrap_or_default(),
        }),
        None => None,
    };
    Ok(ProvisionJob {
        id: uuid(r, "id")?,
        grant_id: opt_uuid(r, "grant_id")?,
        action: parsed(r, "action")?,
        drift,
        attempts: r.get("attempts")?,
        next_attempt_at: ts(r, "next_attempt_at")?,
        last_error: r.get("last_error")?,
        done: r.get("done")?,
        created_at: ts(r, "created_at")?,
    })
}

pub(crate) fn audit_event(r: &Row) -> Result<AuditEvent, StoreError> {
    let outcome: String = r.get("outcome")?;
    Ok(AuditEvent {
        seq: r.get("seq")?,
        at: ts(r, "at")?,
        actor: r.get("actor")?,
        action: r.get("action")?,
        outcome: Outcome::parse(&outcome)
            .ok_or_else(|| corrupt("outcome", format!("unknown outcome {outcome:?}")))?,
        subject: r.get("subject")?,
        data: json(r, "data")?,
        prev_hash: hash(r, "prev_hash")?,
        hash: hash(r, "hash")?,
    })
}

pub(crate) fn checkpoint(r: &Row) -> Result<pedm_core::store::CheckpointRecord, StoreError> {
    Ok(pedm_core::store::CheckpointRecord {
        size: r.get("size")?,
        root: hash(r, "root")?,
        time: ts(r, "time")?,
        key_id: r.get("key_id")?,
        signature: r.get("signature")?,
    })
}

/// The chain hash of an audit event (Merkle leaf data).
pub(crate) fn leaf(r: &Row) -> Result<[u8; 32], StoreError> {
    hash(r, "hash")
}

/// `(seq, hash)` of the `audit_head` row.
pub(crate) fn head(r: &Row) -> Result<(i64, [u8; 32]), StoreError> {
    Ok((r.get("seq")?, hash(r, "hash")?))
}

pub(crate) const SESSION_COLS: &str = "id, grant_id, delegation_id, task, params, host, \
     user_name, run_as, argv, \
     binary_sha256, shell, started_at, ended_at, exit_code, signal, ended_by, \
     recording_sha256, recording_bytes, uploaded_at, via";

pub(crate) fn host(r: &Row) -> Result<pedm_core::host::Host, StoreError> {
    Ok(pedm_core::host::Host {
        name: r.get("name")?,
        token_id: r.get("token_id")?,
        token_hash: hash(r, "token_hash")?,
        registered_at: ts(r, "registered_at")?,
        registered_by: r.get("registered_by")?,
        last_seen_at: opt_ts(r, "last_seen_at")?,
        enroll_expires_at: opt_ts(r, "enroll_expires_at")?,
        enrolled_at: opt_ts(r, "enrolled_at")?,
        revoked_at: opt_ts(r, "revoked_at")?,
        cert_serial: r.get("cert_serial")?,
        cert_not_after: opt_ts(r, "cert_not_after")?,
    })
}

pub(crate) fn session(r: &Row) -> Result<pedm_core::host::Session, StoreError> {
    let small = |col: &str| -> Result<Option<i32>, StoreError> {
        r.get::<Option<i64>>(col)?
            .map(|v| i32::try_from(v).map_err(|e| corrupt(col, e)))
            .transpose()
    };
    Ok(pedm_core::host::Session {
        id: uuid(r, "id")?,
        grant_id: opt_uuid(r, "grant_id")?,
        delegation_id: opt_uuid(r, "delegation_id")?,
        task: r.get("task")?,
        params: r
            .get::<Option<String>>("params")?
            .map(|p| serde_json::from_str(&p).map_err(|e| corrupt("params", e)))
            .transpose()?,
        host: r.get("host")?,
        user: r.get("user_name")?,
        run_as: r.get("run_as")?,
        argv: serde_json::from_str(&r.get::<String>("argv")?).map_err(|e| corrupt("argv", e))?,
        binary_sha256: r.get("binary_sha256")?,
        shell: r.get("shell")?,
        started_at: ts(r, "started_at")?,
        ended_at: ts(r, "ended_at")?,
        exit_code: small("exit_code")?,
        signal: small("signal")?,
        ended_by: r.get("ended_by")?,
        recording_sha256: r.get("recording_sha256")?,
        recording_bytes: r.get("recording_bytes")?,
        uploaded_at: ts(r, "uploaded_at")?,
        via: r
            .get::<Option<String>>("via")?
            .map(|v| {
                pedm_core::host::SessionVia::parse(&v)
                    .ok_or_else(|| corrupt("via", format!("unknown session source {v:?}")))
            })
            .transpose()?,
    })
}
