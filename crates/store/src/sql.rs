//! The `Store` implementation shared by both dialects: changesets, the audit chain, reads.

use crate::db::{Arg, Conn, Pooled, Tx, args};
use crate::rows::{self, *};
use async_trait::async_trait;
use jiff::Timestamp;
use pedm_core::audit::{self, AuditEvent, NewAuditEvent};
use pedm_core::model::*;
use pedm_core::store::{AuditFilter, Changeset, CheckpointRecord, Store, StoreError, Write};
use sqlx::error::ErrorKind;
use sqlx::{PgPool, SqlitePool};
use std::fmt::Write as _;
use uuid::Uuid;

pub(crate) enum Pools {
    /// SQLite allows one writer at a time; a one-connection write pool queues writers here
    /// instead of having them fight over the file lock. Readers use their own pool (WAL lets
    /// them run beside the writer).
    Sqlite {
        read: SqlitePool,
        write: SqlitePool,
        /// Changesets go through here (group commit), see `crate::group_commit`.
        committer: crate::group_commit::GroupCommitter,
        /// Targets and roles read, see `crate::catalog`.
        catalog: crate::catalog::Catalog,
    },
    Pg {
        pool: PgPool,
        /// Changesets go through here (group commit), see `crate::group_commit`.
        committer: crate::group_commit::GroupCommitter,
        /// Targets and roles read, kept at most a second (other instances write too), see
        /// `crate::catalog`.
        catalog: crate::catalog::Catalog,
    },
}

pub(crate) struct Engine {
    pub(crate) pools: Pools,
    /// Set when personal data in the audit log is sealed (see `crate::privacy`).
    pub(crate) privacy:
        std::sync::OnceLock<std::sync::Arc<dyn pedm_core::privacy::PersonalDataCipher>>,
}

pub(crate) fn backend(e: sqlx::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

pub(crate) fn json_text(v: &impl serde::Serialize) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Backend(format!("encoding JSON: {e}")))
}

/// Appends `LIMIT $n` if there is a limit.
pub(crate) fn push_limit(sql: &mut String, args: &mut Vec<Arg>, limit: Option<u32>) {
    if let Some(n) = limit {
        args.push(i64::from(n).into());
        sql.push_str(&format!(" LIMIT ${}", args.len()));
    }
}

impl Engine {
    /// SQL for a top-level string field of a JSON text column, in this dialect.
    fn json_text_field(&self, column: &str, field: &str) -> String {
        match &self.pools {
            Pools::Sqlite { .. } => format!("json_extract({column}, '$.{field}')"),
            Pools::Pg { .. } => format!("({column}::jsonb ->> '{field}')"),
        }
    }

    async fn read(&self) -> Result<Pooled, StoreError> {
        Ok(match &self.pools {
            Pools::Sqlite { read, .. } => Pooled::Sqlite(read.acquire().await.map_err(backend)?),
            Pools::Pg { pool: p, .. } => Pooled::Pg(p.acquire().await.map_err(backend)?),
        })
    }

    /// Targets and roles read, see `crate::catalog`.
    fn catalog(&self) -> &crate::catalog::Catalog {
        match &self.pools {
            Pools::Sqlite { catalog, .. } | Pools::Pg { catalog, .. } => catalog,
        }
    }

    async fn begin(&self) -> Result<Tx, StoreError> {
        Ok(match &self.pools {
            // IMMEDIATE takes the write lock up front: a deferred transaction that reads first
            // and writes later can fail with SQLITE_BUSY at the upgrade instead of waiting.
            Pools::Sqlite { write, .. } => {
                Tx::Sqlite(write.begin_with("BEGIN IMMEDIATE").await.map_err(backend)?)
            }
            Pools::Pg { pool: p, .. } => Tx::Pg(p.begin().await.map_err(backend)?),
        })
    }

    pub(crate) async fn fetch_all<T>(
        &self,
        sql: &str,
        args: Vec<Arg>,
        map: impl Fn(&crate::db::Row) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        let mut c = self.read().await?;
        let rows = c.conn().fetch_all(sql, args).await.map_err(backend)?;
        rows.iter().map(map).collect()
    }

    pub(crate) async fn fetch_optional<T>(
        &self,
        sql: &str,
        args: Vec<Arg>,
        map: impl Fn(&crate::db::Row) -> Result<T, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        let mut c = self.read().await?;
        let row = c.conn().fetch_optional(sql, args).await.map_err(backend)?;
        row.as_ref().map(map).transpose()
    }

    /// `SELECT MIN(col) AS t ...` → an optional timestamp.
    async fn min_ts(&self, sql: &str) -> Result<Option<Timestamp>, StoreError> {
        let us = self
            .fetch_optional(sql, vec![], |r| r.get::<Option<i64>>("t"))
            .await?
            .flatten();
        us.map(|us| {
            Timestamp::from_microsecond(us).map_err(|e| StoreError::Corrupt(format!("{e}")))
        })
        .transpose()
    }
}

// ------------------------------------------------------------------------------- writes

/// Runs an INSERT, turning a unique-key clash into `dup()` and a missing referenced row into
/// `missing()`; any other failure is a backend error.
pub(crate) async fn insert(
    c: &mut Conn<'_>,
    sql: &str,
    args: Vec<Arg>,
    dup: impl FnOnce() -> StoreError,
    missing: impl FnOnce() -> StoreError,
) -> Result<(), StoreError> {
    c.execute(sql, args)
        .await
        .map(|_| ())
        .map_err(|e| refusal(e, dup, missing))
}

/// A failed insert's error: `dup` for a unique violation, `missing` for a foreign key one.
fn refusal(
    e: sqlx::Error,
    dup: impl FnOnce() -> StoreError,
    missing: impl FnOnce() -> StoreError,
) -> StoreError {
    match violation(&e) {
        Some(ErrorKind::UniqueViolation) => dup(),
        Some(_) => missing(),
        None => backend(e),
    }
}

/// The unique or foreign key violation `e` is (a refused insert), if it is one.
pub(crate) fn violation(e: &sqlx::Error) -> Option<ErrorKind> {
    match e {
        sqlx::Error::Database(d)
            if matches!(
                d.kind(),
                ErrorKind::UniqueViolation | ErrorKind::ForeignKeyViolation
            ) =>
        {
            Some(d.kind())
        }
        _ => None,
    }
}

pub(crate) async fn exists(
    c: &mut Conn<'_>,
    sql: &str,
    args: Vec<Arg>,
) -> Result<bool, StoreError> {
    Ok(c.fetch_optional(sql, args)
        .await
        .map_err(backend)?
        .is_some())
}

fn no_fk(what: &'static str) -> impl FnOnce() -> StoreError {
    move || StoreError::Backend(format!("unexpected foreign key violation inserting {what}"))
}

/// Applies one write inside the changeset's transaction, checking its documented precondition.
async fn apply(c: &mut Conn<'_>, w: &Write) -> Result<(), StoreError> {
    match w {
        Write::InsertUser(u) => {
            insert(
                c,
                "INSERT INTO users (name, display_name, admin, disabled, created_at, email) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
                args![
                    &u.name,
                    &u.display_name,
                    u.admin,
                    u.disabled,
                    u.created_at,
                    &u.email
                ],
                || {
                    StoreError::AlreadyExists(format!(
                        "user {} already exists (names are compared without regard to case)",
                        u.name
                    ))
                },
                no_fk("a user"),
            )
            .await
        }
        Write::UpdateUser(u) => {
            let n = c
                .execute(
                    "UPDATE users SET display_name = $2, admin = $3, disabled = $4, email = $5 \
                     WHERE name = $1",
                    args![&u.name, &u.display_name, u.admin, u.disabled, &u.email],
                )
                .await
                .map_err(backend)?;
            if n == 0 {
                return Err(StoreError::NotFound(format!(
                    "user {} does not exist",
                    u.name
                )));
            }
            Ok(())
        }
        Write::InsertGroup(g) => {
            insert(
                c,
                "INSERT INTO groups (name, description, created_at) VALUES ($1, $2, $3)",
                args![&g.name, &g.description, g.created_at],
                || {
                    StoreError::AlreadyExists(format!(
                        "group {} already exists (names are compared without regard to case)",
                        g.name
                    ))
                },
                no_fk("a group"),
            )
            .await?;
            for m in &g.members {
                insert(
                    c,
                    "INSERT INTO group_members (group_name, user_name) VALUES ($1, $2)",
                    args![&g.name, m],
                    || StoreError::AlreadyExists(format!("user {m} is listed twice")),
                    || StoreError::NotFound(format!("user {m} does not exist")),
                )
                .await?;
            }
            Ok(())
        }
        Write::AddGroupMember { group, user } => {
            if !exists(c, "SELECT 1 FROM groups WHERE name = $1", args![group]).await? {
                return Err(StoreError::NotFound(format!(
                    "group {group} does not exist"
                )));
            }
            if !exists(c, "SELECT 1 FROM users WHERE name = $1", args![user]).await? {
                return Err(StoreError::NotFound(format!("user {user} does not exist")));
            }
            c.execute(
                "INSERT INTO group_members (group_name, user_name) VALUES ($1, $2) \
                 ON CONFLICT DO NOTHING",
                args![group, user],
            )
            .await
            .map_err(backend)?;
            Ok(())
        }
        Write::RemoveGroupMember { group, user } => {
            let n = c
                .execute(
                    "DELETE FROM group_members WHERE group_name = $1 AND user_name = $2",
                    args![group, user],
                )
                .await
                .map_err(backend)?;
            if n == 0 {
                return Err(StoreError::NotFound(format!(
                    "user {user} is not a member of group {group}"
                )));
            }
            Ok(())
        }
        Write::InsertToken(t) => {
            insert(
                c,
                "INSERT INTO tokens (id, user_name, description, secret_hash, created_at, \
                 expires_at, revoked_at, workload, agent) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                args![
                    &t.id,
                    &t.user,
                    &t.description,
                    &t.secret_hash[..],
                    t.created_at,
                    t.expires_at,
                    t.revoked_at,
                    t.workload.as_ref().map(json_text).transpose()?,
                    t.agent
                ],
                || StoreError::AlreadyExists(format!("token {} already exists", t.id)),
                || StoreError::NotFound(format!("user {} does not exist", t.user)),
            )
            .await
        }
        Write::RevokeToken { id, at } => {
            let n = c
                .execute(
                    "UPDATE tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
                    args![id, *at],
                )
                .await
                .map_err(backend)?;
            if n == 0 {
                return Err(
                    if exists(c, "SELECT 1 FROM tokens WHERE id = $1", args![id]).await? {
                        StoreError::Conflict(format!("token {id} is already revoked"))
                    } else {
                        StoreError::NotFound(format!("token {id} does not exist"))
                    },
                );
            }
            Ok(())
        }
        Write::InsertTarget(t) => {
            insert(
                c,
                "INSERT INTO targets (name, kind, description, labels, created_at) \
                 VALUES ($1, $2, $3, $4, $5)",
                args![
                    &t.name,
                    t.kind.as_str(),
                    &t.description,
                    json_text(&t.labels)?,
                    t.created_at
                ],
                || {
                    StoreError::AlreadyExists(format!(
                        "target {} already exists (names are compared without regard to case)",
                        t.name
                    ))
                },
                no_fk("a target"),
            )
            .await
        }
        Write::UpdateRole(r) => {
            let n = c
                .execute(
                    "UPDATE roles SET description = $3, max_duration_secs = $4, auto_approve = $5, \
                     noexec = $6, allow_setuid = $7, record_input = $8, intercept = $9, \
                     limits = $10, watch_paths = $11, ssh = $12 WHERE target = $1 AND name = $2",
                    args![
                        &r.target,
                        &r.name,
                        &r.description,
                        r.max_duration_secs,
                        r.auto_approve,
                        r.noexec,
                        r.allow_setuid,
                        r.record_input,
                        r.intercept,
                        json_text(&r.limits)?,
                        json_text(&r.watch_paths)?,
                        json_text(&r.ssh)?
                    ],
                )
                .await
                .map_err(backend)?;
            if n == 0 {
                return Err(StoreError::NotFound(format!(
                    "role {} on target {}",
                    r.name, r.target
                )));
            }
            Ok(())
        }
        Write::InsertRole(r) => {
            insert(
                c,
                "INSERT INTO roles (target, name, description, max_duration_secs, \
                 auto_approve, run_as, created_at, noexec, allow_setuid, record_input, \
                 intercept, limits, watch_paths, ssh) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
                args![
                    &r.target,
                    &r.name,
                    &r.description,
                    r.max_duration_secs,
                    r.auto_approve,
                    &r.run_as,
                    r.created_at,
                    r.noexec,
                    r.allow_setuid,
                    r.record_input,
                    r.intercept,
                    json_text(&r.limits)?,
                    json_text(&r.watch_paths)?,
                    json_text(&r.ssh)?
                ],
                || {
                    StoreError::AlreadyExists(format!(
                        "role {} on target {} already exists",
                        r.name, r.target
                    ))
                },
                || StoreError::NotFound(format!("target {} does not exist", r.target)),
            )
            .await
        }
        Write::InsertRequest(r) => insert_rows(c, INSERT_REQUESTS, "", vec![request_args(r)?])
            .await
            .map(|_| ())
            .map_err(|e| {
                refusal(
                    e,
                    || StoreError::AlreadyExists(format!("request {} already exists", r.id)),
                    no_fk("a request"),
                )
            }),
        Write::UpdateRequest(r) => {
            // Optimistic concurrency: the row must still be at the version the caller read.
            // Under concurrent updates PostgreSQL re-checks the WHERE clause after the first
            // writer commits, so exactly one of them matches.
            let n = c
                .execute(
                    "UPDATE requests SET requester = $2, target = $3, role = $4, \
                     duration_secs = $5, justification = $6, task = $7, ticket = $8, \
                     context = $9, state = $10, created_at = $11, pending_until = $12, \
                     decided_at = $13, decided_by = $14, decision_reason = $15, grant_id = $16, \
                     approvals_required = $17, version = $18, approval_tiers = $19, \
                     policy = $20, break_glass = $21, review = $22, review_state = $23, \
                     follow_up = $24 \
                     WHERE id = $1 AND version = $18 - 1",
                    request_args(r)?,
                )
                .await
                .map_err(backend)?;
            if n == 0 {
                let current = c
                    .fetch_optional("SELECT version FROM requests WHERE id = $1", args![r.id])
                    .await
                    .map_err(backend)?;
                return Err(match current {
                    Some(row) => StoreError::Conflict(format!(
                        "request {} was changed concurrently (stored version {}, update expects {})",
                        r.id,
                        row.get::<i64>("version")?,
                        r.version - 1
                    )),
                    None => StoreError::NotFound(format!("request {} does not exist", r.id)),
                });
            }
            Ok(())
        }
        Write::InsertApproval(a) => {
            insert(
                c,
                "INSERT INTO approvals (request_id, approver, decision, comment, at, tier) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
                args![
                    a.request_id,
                    &a.approver,
                    a.decision.as_str(),
                    &a.comment,
                    a.at,
                    i64::from(a.tier)
                ],
                || {
                    StoreError::Conflict(format!(
                        "{} already decided request {}",
                        a.approver, a.request_id
                    ))
                },
                || StoreError::NotFound(format!("request {} does not exist", a.request_id)),
            )
            .await
        }
        Write::InsertGrant(g) => {
            // A taken grant id inserts nothing ([`INSERT_GRANTS_TAIL`]), which tells it from a
            // second grant for the request (a unique violation) in one statement: on
            // PostgreSQL nothing may follow a violation in the transaction.
            match insert_rows(c, INSERT_GRANTS, INSERT_GRANTS_TAIL, vec![grant_args(g)]).await {
                Ok(0) => Err(StoreError::AlreadyExists(format!(
                    "grant {} already exists",
                    g.id
                ))),
                Ok(_) => Ok(()),
                Err(e) => Err(refusal(
                    e,
                    || {
                        StoreError::AlreadyExists(format!(
                            "a grant for request {} already exists",
                            g.request_id
                        ))
                    },
                    || StoreError::NotFound(format!("request {} does not exist", g.request_id)),
                )),
            }
        }
        Write::InsertPolicyVersion(v) => {
            // Versions only grow by one: of two concurrent applies, the second finds the
            // number taken (primary key) or the predecessor missing.
            let latest: Option<i64> = c
                .fetch_optional("SELECT MAX(version) AS v FROM policy_versions", vec![])
                .await
                .map_err(backend)?
                .map(|r| r.get::<Option<i64>>("v"))
                .transpose()?
                .flatten();
            let expected = latest.unwrap_or(0) + 1;
            if v.version != expected {
                return Err(StoreError::Conflict(format!(
                    "policy version {} cannot follow version {}",
                    v.version,
                    latest.unwrap_or(0)
                )));
            }
            insert(
                c,
                "INSERT INTO policy_versions (version, created_at, created_by, comment, digest, \
                 sources) VALUES ($1, $2, $3, $4, $5, $6)",
                args![
                    v.version,
                    v.created_at,
                    &v.created_by,
                    &v.comment,
                    &v.digest,
                    json_text(&v.sources)?
                ],
                || StoreError::Conflict(format!("policy version {} already exists", v.version)),
                no_fk("a policy version"),
            )
            .await
        }
        Write::SetProvisionState {
            grant_id,
            from,
            to,
            detail,
        } => {
            let current: Option<String> = c
                .fetch_optional(
                    "SELECT provision_state FROM grants WHERE id = $1",
                    args![*grant_id],
                )
                .await
                .map_err(backend)?
                .map(|r| r.get::<String>("provision_state"))
                .transpose()?;
            let Some(current) = current else {
                return Err(StoreError::NotFound(format!(
                    "grant {grant_id} does not exist"
                )));
            };
            if !from.iter().any(|f| f.as_str() == current) {
                return Err(StoreError::Conflict(format!(
                    "grant {grant_id} is {current}, not {}",
                    from.iter()
                        .map(|f| f.as_str())
                        .collect::<Vec<_>>()
                        .join(" or ")
                )));
            }
            // The state is re-checked in the UPDATE, so a concurrent change cannot slip in
            // between the read and the write.
            let n = c
                .execute(
                    "UPDATE grants SET provision_state = $2, provision_detail = $3 \
                     WHERE id = $1 AND provision_state = $4",
                    args![*grant_id, to.as_str(), detail, current.as_str()],
                )
                .await
                .map_err(backend)?;
            if n == 0 {
                return Err(StoreError::Conflict(format!(
                    "grant {grant_id} changed its provisioning state"
                )));
            }
            Ok(())
        }
        Write::InsertJob(j) => {
            let drift = j.action == ProvisionAction::RemoveDrift;
            match (drift, j.grant_id, &j.drift) {
                (false, Some(g), None) => {
                    if !exists(c, "SELECT 1 FROM grants WHERE id = $1", args![g]).await? {
                        return Err(StoreError::NotFound(format!("grant {g} does not exist")));
                    }
                }
                (true, None, Some(_)) => {}
                _ => {
                    return Err(StoreError::Backend(format!(
                        "provisioning job {}: a {} job needs {}",
                        j.id,
                        j.action,
                        if drift {
                            "a finding and no grant"
                        } else {
                            "a grant and no finding"
                        }
                    )));
                }
            }
            let d = j.drift.as_ref();
            insert(
                c,
                "INSERT INTO provision_jobs (id, grant_id, action, attempts, next_attempt_at, \
                 last_error, done, created_at, target, account, privilege, source) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                args![
                    j.id,
                    j.grant_id,
                    j.action.as_str(),
                    j.attempts,
                    j.next_attempt_at,
                    &j.last_error,
                    j.done,
                    j.created_at,
                    d.map(|d| d.target.as_str()),
                    d.map(|d| d.account.as_str()),
                    d.map(|d| d.privilege.as_str()),
                    d.map(|d| d.source.as_str())
                ],
                || match d {
                    Some(d) => StoreError::AlreadyExists(format!(
                        "provisioning job {} already exists, or a removal of {} from {} on \
                         {} is pending",
                        j.id, d.privilege, d.account, d.target
                    )),
                    None => StoreError::AlreadyExists(format!(
                        "provisioning job {} already exists",
                        j.id
                    )),
                },
                || match j.grant_id {
                    Some(g) => StoreError::NotFound(format!("grant {g} does not exist")),
                    None => no_fk("a provisioning job")(),
                },
            )
            .await
        }
        Write::UpdateJob {
            job,
            expected_attempts,
        } => {
            let n = c
                .execute(
                    "UPDATE provision_jobs SET attempts = $2, next_attempt_at = $3, \
                     last_error = $4, done = $5 \
                     WHERE id = $1 AND NOT done AND attempts = $6",
                    args![
                        job.id,
                        job.attempts,
                        job.next_attempt_at,
                        &job.last_error,
                        job.done,
                        *expected_attempts
                    ],
                )
                .await
                .map_err(backend)?;
            if n == 0 {
                return Err(
                    if exists(
                        c,
                        "SELECT 1 FROM provision_jobs WHERE id = $1",
                        args![job.id],
                    )
                    .await?
                    {
                        StoreError::Conflict(format!(
                            "provisioning job {} is done or was updated by someone else",
                            job.id
                        ))
                    } else {
                        StoreError::NotFound(format!("provisioning job {} does not exist", job.id))
                    },
                );
            }
            Ok(())
        }
        Write::PutGrantSecret { grant_id, secret } => {
            c.execute(
                "DELETE FROM grant_secrets WHERE grant_id = $1",
                args![*grant_id],
            )
            .await
            .map_err(backend)?;
            insert(
                c,
                "INSERT INTO grant_secrets (grant_id, secret) VALUES ($1, $2)",
                args![*grant_id, secret],
                || StoreError::Conflict(format!("grant {grant_id} already has a secret")),
                || StoreError::NotFound(format!("grant {grant_id} does not exist")),
            )
            .await
        }
        Write::DeleteGrantSecret {
            grant_id,
            must_exist,
        } => {
            let n = c
                .execute(
                    "DELETE FROM grant_secrets WHERE grant_id = $1",
                    args![*grant_id],
                )
                .await
                .map_err(backend)?;
            if n == 0 && *must_exist {
                return Err(StoreError::Conflict(format!(
                    "grant {grant_id} has no secret waiting"
                )));
            }
            Ok(())
        }
        Write::Host(h) => crate::hosts::apply(c, h).await,
        Write::Delegation(d) => crate::delegation::apply(c, d).await,
        Write::PolicyReview(w) => crate::policy_review::apply(c, w).await,
        Write::External(w) => crate::external::apply(c, w).await,
        Write::Scim(w) => crate::scim::apply(c, w).await,
        Write::Device(w) => crate::devices::apply(c, w).await,
        Write::SshCertificate(cert) => crate::ssh::insert_certificate(c, cert).await,
        Write::Lock(w) => crate::locks::apply(c, w).await,
        Write::Review(w) => crate::access_review::apply(c, w).await,
        Write::Privacy(w) => crate::privacy::apply(c, w).await,
        Write::Sso(w) => crate::sso::apply(c, w).await,
        Write::WebSession(w) => crate::web_sessions::apply(c, w).await,
        Write::Integration(w) => crate::integration::apply(c, w).await,
        Write::PurgeOutbox { before } => crate::outbox::purge(c, *before).await,
        Write::PruneAudit { after, through } => prune_audit(c, *after, *through).await,
        Write::RequireGrantsActive { ids } => {
            let mut ids = ids.clone();
            ids.sort();
            ids.dedup();
            let sql = if c.is_postgres() {
                "SELECT state FROM grants WHERE id = $1 FOR UPDATE"
            } else {
                "SELECT state FROM grants WHERE id = $1"
            };
            for id in ids {
                let state: Option<String> = c
                    .fetch_optional(sql, args![id])
                    .await
                    .map_err(backend)?
                    .map(|r| r.get::<String>("state"))
                    .transpose()?;
                match state.as_deref() {
                    None => {
                        return Err(StoreError::NotFound(format!("grant {id} does not exist")));
                    }
                    Some("active") => {}
                    Some(other) => {
                        return Err(StoreError::Conflict(format!(
                            "grant {id} is {other}, no longer active"
                        )));
                    }
                }
            }
            Ok(())
        }
        Write::ExtendGrant { id, from, to } => {
            let n = c
                .execute(
                    "UPDATE grants SET expires_at = $3 \
                     WHERE id = $1 AND state = 'active' AND expires_at = $2",
                    args![*id, *from, *to],
                )
                .await
                .map_err(backend)?;
            if n == 0 {
                return Err(
                    if exists(c, "SELECT 1 FROM grants WHERE id = $1", args![*id]).await? {
                        StoreError::Conflict(format!(
                            "grant {id} is no longer active with expiry {from}"
                        ))
                    } else {
                        StoreError::NotFound(format!("grant {id} does not exist"))
                    },
                );
            }
            Ok(())
        }
        Write::StartScheduledGrant {
            id,
            provision_state,
            provision_detail,
        } => {
            let n = c
                .execute(
                    "UPDATE grants SET state = 'active', provision_state = $2, \
                     provision_detail = $3 WHERE id = $1 AND state = 'scheduled'",
                    args![*id, provision_state.as_str(), provision_detail],
                )
                .await
                .map_err(backend)?;
            if n == 0 {
                return Err(
                    if exists(c, "SELECT 1 FROM grants WHERE id = $1", args![*id]).await? {
                        StoreError::Conflict(format!("grant {id} is not scheduled"))
                    } else {
                        StoreError::NotFound(format!("grant {id} does not exist"))
                    },
                );
            }
            Ok(())
        }
        Write::EndGrant {
            id,
            state,
            at,
            by,
            reason,
        } => {
            if matches!(*state, GrantState::Active | GrantState::Scheduled) {
                // "Ending" into `active` would let the same grant end again later.
                return Err(StoreError::Conflict(format!(
                    "grant {id} cannot be ended into {state}"
                )));
            }
            let n = c
                .execute(
                    "UPDATE grants SET state = $2, ended_at = $3, ended_by = $4, end_reason = $5 \
                     WHERE id = $1 AND state IN ('active', 'scheduled')",
                    args![*id, state.as_str(), *at, by, reason],
                )
                .await
                .map_err(backend)?;
            if n == 0 {
                return Err(
                    if exists(c, "SELECT 1 FROM grants WHERE id = $1", args![*id]).await? {
                        StoreError::Conflict(format!("grant {id} is not active or scheduled"))
                    } else {
                        StoreError::NotFound(format!("grant {id} does not exist"))
                    },
                );
            }
            Ok(())
        }
    }
}

pub(crate) const INSERT_REQUESTS: &str = "INSERT INTO requests (id, requester, target, role, \
     duration_secs, justification, task, ticket, context, state, created_at, pending_until, \
     decided_at, decided_by, decision_reason, grant_id, approvals_required, version, \
     approval_tiers, policy, break_glass, review, review_state, follow_up) VALUES ";

pub(crate) const INSERT_GRANTS: &str = "INSERT INTO grants (id, request_id, user_name, target, \
     role, starts_at, expires_at, state, ended_at, ended_by, end_reason, provision_state, \
     provision_detail) VALUES ";

/// A grant whose id is taken is not inserted (and not an error): see `Write::InsertGrant`.
pub(crate) const INSERT_GRANTS_TAIL: &str = "ON CONFLICT (id) DO NOTHING";

pub(crate) fn grant_args(g: &Grant) -> Vec<Arg> {
    args![
        g.id,
        g.request_id,
        &g.user,
        &g.target,
        &g.role,
        g.starts_at,
        g.expires_at,
        g.state.as_str(),
        g.ended_at,
        &g.ended_by,
        &g.end_reason,
        g.provision_state.as_str(),
        &g.provision_detail
    ]
}

/// `$1..$24`: `REQUEST_COLS` order with `review_state` before `follow_up`.
pub(crate) fn request_args(r: &Request) -> Result<Vec<Arg>, StoreError> {
    Ok(args![
        r.id,
        &r.requester,
        &r.target,
        &r.role,
        r.duration_secs,
        &r.justification,
        &r.task,
        &r.ticket,
        json_text(&r.context)?,
        r.state.as_str(),
        r.created_at,
        r.pending_until,
        r.decided_at,
        &r.decided_by,
        &r.decision_reason,
        r.grant_id,
        i64::from(r.approvals_required),
        r.version,
        json_text(&r.approval_tiers)?,
        &r.policy,
        r.break_glass,
        match &r.review {
            Some(v) => Some(json_text(v)?),
            None => None,
        },
        r.review.as_ref().map(|v| v.state.as_str()),
        match &r.follow_up {
            Some(f) => Some(json_text(f)?),
            None => None,
        }
    ])
}

/// Applies writes in order, checking their preconditions; stops at the first refusal.
pub(crate) async fn apply_writes(c: &mut Conn<'_>, writes: &[Write]) -> Result<(), StoreError> {
    for w in writes {
        apply(c, w).await?;
    }
    Ok(())
}

/// The chain head `(seq, hash)` (`(0, zeros)` for an empty log). The head row is the
/// serialisation point of the chain. On PostgreSQL `FOR UPDATE` makes a concurrent committer
/// wait here until this transaction ends, then read the new head; on SQLite the transaction
/// already holds the database write lock (BEGIN IMMEDIATE).
pub(crate) async fn read_head(c: &mut Conn<'_>) -> Result<(i64, [u8; 32]), StoreError> {
    let head_sql = if c.is_postgres() {
        "SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE"
    } else {
        "SELECT seq, hash FROM audit_head WHERE id = 1"
    };
    let row = c
        .fetch_optional(head_sql, vec![])
        .await
        .map_err(backend)?
        .ok_or_else(|| StoreError::Corrupt("audit_head row is missing".into()))?;
    rows::head(&row)
}

pub(crate) async fn write_head(
    c: &mut Conn<'_>,
    seq: i64,
    hash: &[u8; 32],
) -> Result<(), StoreError> {
    c.execute(
        "UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1",
        args![seq, &hash[..]],
    )
    .await
    .map_err(backend)?;
    Ok(())
}

/// Chains `events` after the event `seq` with hash `prev` (in memory: nothing is written).
pub(crate) fn chain_events(
    mut seq: i64,
    mut prev: [u8; 32],
    events: Vec<NewAuditEvent>,
) -> Result<Vec<AuditEvent>, StoreError> {
    let mut out = Vec::with_capacity(events.len());
    for mut ev in events {
        // The store keeps microseconds; hash what will be read back, or the chain would not
        // verify after a round trip.
        ev.at = Timestamp::from_microsecond(ev.at.as_microsecond())
            .map_err(|e| StoreError::Backend(format!("event time: {e}")))?;
        let e = audit::chain(seq + 1, prev, ev);
        seq = e.seq;
        prev = e.hash;
        out.push(e);
    }
    Ok(out)
}

/// Inserts chained events, several rows per statement ([`insert_rows`]).
pub(crate) async fn insert_events(
    c: &mut Conn<'_>,
    events: &[AuditEvent],
) -> Result<(), StoreError> {
    let mut rows = Vec::with_capacity(events.len());
    for e in events {
        rows.push(args![
            e.seq,
            e.at,
            &e.actor,
            &e.action,
            e.outcome.as_str(),
            &e.subject,
            json_text(&e.data)?,
            &e.prev_hash[..],
            &e.hash[..]
        ]);
    }
    insert_rows(
        c,
        "INSERT INTO audit_events (seq, at, actor, action, outcome, subject, data, prev_hash, \
         hash) VALUES ",
        "",
        rows,
    )
    .await
    .map_err(backend)?;
    Ok(())
}

/// Inserts `rows` (values of the same columns) with `head` (`INSERT INTO t (…) VALUES `) and
/// `tail` (e.g. an `ON CONFLICT` clause), several rows per statement; returns the rows
/// inserted. Row counts per statement are powers of two (up to [`INSERT_ROWS`]) so a handful of
/// statement texts stay prepared.
pub(crate) async fn insert_rows(
    c: &mut Conn<'_>,
    head: &str,
    tail: &str,
    rows: Vec<Vec<Arg>>,
) -> Result<u64, sqlx::Error> {
    let width = rows.first().map_or(0, Vec::len);
    let mut inserted = 0;
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let left = rows.len();
        let n = if left >= INSERT_ROWS {
            INSERT_ROWS
        } else {
            1 << left.ilog2()
        };
        let mut sql = String::with_capacity(head.len() + tail.len() + n * width * 5);
        sql.push_str(head);
        let mut a = Vec::with_capacity(n * width);
        for i in 0..n {
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push('(');
            for k in 0..width {
                if k > 0 {
                    sql.push_str(", ");
                }
                if c.is_postgres() {
                    // Writing to a String cannot fail.
                    let _ = write!(sql, "${}", i * width + k + 1);
                } else {
                    // Anonymous parameters: SQLite binds `$N` ones by looking each name up in a
                    // list, which costs O(parameters²) per statement.
                    sql.push('?');
                }
            }
            sql.push(')');
            a.extend(rows.next().into_iter().flatten());
        }
        if !tail.is_empty() {
            sql.push(' ');
            sql.push_str(tail);
        }
        inserted += c.execute(&sql, a).await?;
    }
    Ok(inserted)
}

/// Most rows in one INSERT.
const INSERT_ROWS: usize = 64;

// -------------------------------------------------------------------------------- reads

const GROUPS_SQL: &str = "SELECT g.name, g.description, g.created_at, m.user_name AS member \
     FROM groups g LEFT JOIN group_members m ON m.group_name = g.name";

/// Appends `AND col = $n` for each present filter value.
pub(crate) fn push_eq(sql: &mut String, args: &mut Vec<Arg>, col: &str, v: Option<Arg>) {
    if let Some(v) = v {
        args.push(v);
        sql.push_str(&format!(" AND {col} = ${}", args.len()));
    }
}

#[async_trait]
impl Store for Engine {
    async fn commit(&self, changes: Changeset) -> Result<Vec<AuditEvent>, StoreError> {
        if changes.is_empty() {
            return Ok(vec![]);
        }
        let erases = changes.writes.iter().any(|w| {
            matches!(
                w,
                Write::Privacy(pedm_core::privacy::PrivacyWrite::Erase { .. })
            )
        });
        let plain = self.privacy.get().map(|_| changes.events.clone());
        let changes = self.seal_changeset(changes).await?;
        let r = match &self.pools {
            // Several queued changesets share one durable transaction (one fsync).
            Pools::Sqlite {
                committer, catalog, ..
            }
            | Pools::Pg {
                committer, catalog, ..
            } => {
                let touches_catalog = crate::catalog::may_change(&changes.writes);
                let touches_guards = crate::catalog::may_change_guards(&changes.writes);
                let r = committer.commit(changes).await;
                // Whatever the outcome: a failed commit may still have been applied.
                if touches_catalog {
                    catalog.invalidate();
                }
                if touches_guards {
                    catalog.invalidate_guards();
                }
                r
            }
        };
        if erases && r.is_ok() {
            self.purge_erased().await?;
        }
        match plain {
            Some(plain) => r.map(|sealed| Engine::unsealed_results(&plain, sealed)),
            None => r,
        }
    }

    async fn user(&self, name: &str) -> Result<Option<User>, StoreError> {
        let sql = format!("SELECT {USER_COLS} FROM users WHERE name = $1");
        self.fetch_optional(&sql, args![name], rows::user).await
    }

    async fn users(&self) -> Result<Vec<User>, StoreError> {
        let sql = format!("SELECT {USER_COLS} FROM users ORDER BY name");
        self.fetch_all(&sql, vec![], rows::user).await
    }

    async fn user_count(&self) -> Result<i64, StoreError> {
        let n = self
            .fetch_optional("SELECT COUNT(*) AS n FROM users", vec![], |r| {
                r.get::<i64>("n")
            })
            .await?;
        Ok(n.unwrap_or(0))
    }

    async fn group(&self, name: &str) -> Result<Option<Group>, StoreError> {
        let sql = format!("{GROUPS_SQL} WHERE g.name = $1 ORDER BY m.user_name");
        let mut c = self.read().await?;
        let rows = c
            .conn()
            .fetch_all(&sql, args![name])
            .await
            .map_err(backend)?;
        Ok(rows::groups(&rows)?.pop())
    }

    async fn groups(&self) -> Result<Vec<Group>, StoreError> {
        let sql = format!("{GROUPS_SQL} ORDER BY g.name, m.user_name");
        let mut c = self.read().await?;
        let rows = c.conn().fetch_all(&sql, vec![]).await.map_err(backend)?;
        rows::groups(&rows)
    }

    async fn groups_of(&self, user: &str) -> Result<Vec<String>, StoreError> {
        self.fetch_all(
            "SELECT group_name FROM group_members WHERE user_name = $1 ORDER BY group_name",
            args![user],
            |r| r.get::<String>("group_name"),
        )
        .await
    }

    async fn token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        let sql = format!("SELECT {TOKEN_COLS} FROM tokens WHERE id = $1");
        self.fetch_optional(&sql, args![id], rows::token).await
    }

    async fn tokens(&self, user: Option<&str>) -> Result<Vec<TokenRecord>, StoreError> {
        let mut sql = format!("SELECT {TOKEN_COLS} FROM tokens WHERE 1 = 1");
        let mut a = vec![];
        push_eq(&mut sql, &mut a, "user_name", user.map(Arg::from));
        sql.push_str(" ORDER BY created_at DESC, id DESC");
        self.fetch_all(&sql, a, rows::token).await
    }

    async fn target(&self, name: &str) -> Result<Option<Target>, StoreError> {
        let catalog = self.catalog();
        if let Some(t) = catalog.target(name) {
            return Ok(Some(t));
        }
        let generation = catalog.generation();
        let sql = format!("SELECT {TARGET_COLS} FROM targets WHERE name = $1");
        let t = self.fetch_optional(&sql, args![name], rows::target).await?;
        if let Some(t) = &t {
            catalog.keep_target(generation, t);
        }
        Ok(t)
    }

    async fn targets(&self) -> Result<Vec<Target>, StoreError> {
        let sql = format!("SELECT {TARGET_COLS} FROM targets ORDER BY name");
        self.fetch_all(&sql, vec![], rows::target).await
    }

    async fn role(&self, target: &str, name: &str) -> Result<Option<Role>, StoreError> {
        let catalog = self.catalog();
        if let Some(r) = catalog.role(target, name) {
            return Ok(Some(r));
        }
        let generation = catalog.generation();
        let sql = format!("SELECT {ROLE_COLS} FROM roles WHERE target = $1 AND name = $2");
        let r = self
            .fetch_optional(&sql, args![target, name], rows::role)
            .await?;
        if let Some(r) = &r {
            catalog.keep_role(generation, r);
        }
        Ok(r)
    }

    async fn roles(&self, target: Option<&str>) -> Result<Vec<Role>, StoreError> {
        let mut sql = format!("SELECT {ROLE_COLS} FROM roles WHERE 1 = 1");
        let mut a = vec![];
        push_eq(&mut sql, &mut a, "target", target.map(Arg::from));
        sql.push_str(" ORDER BY target, name");
        self.fetch_all(&sql, a, rows::role).await
    }

    async fn request(&self, id: Uuid) -> Result<Option<Request>, StoreError> {
        let sql = format!("SELECT {REQUEST_COLS} FROM requests WHERE id = $1");
        self.fetch_optional(&sql, args![id], rows::request).await
    }

    async fn requests(&self, f: &RequestFilter) -> Result<Vec<Request>, StoreError> {
        let mut sql = format!("SELECT {REQUEST_COLS} FROM requests WHERE 1 = 1");
        let mut a = vec![];
        push_eq(
            &mut sql,
            &mut a,
            "requester",
            f.requester.as_deref().map(Arg::from),
        );
        push_eq(
            &mut sql,
            &mut a,
            "state",
            f.state.map(|s| s.as_str().into()),
        );
        push_eq(
            &mut sql,
            &mut a,
            "target",
            f.target.as_deref().map(Arg::from),
        );
        push_eq(
            &mut sql,
            &mut a,
            "review_state",
            f.review.map(|s| s.as_str().into()),
        );
        if let Some(since) = f.since {
            a.push(since.into());
            sql.push_str(&format!(" AND created_at >= ${}", a.len()));
        }
        sql.push_str(" ORDER BY created_at DESC, id DESC");
        push_limit(&mut sql, &mut a, f.limit);
        self.fetch_all(&sql, a, rows::request).await
    }

    async fn approvals(&self, request_id: Uuid) -> Result<Vec<Approval>, StoreError> {
        let sql = format!(
            "SELECT {APPROVAL_COLS} FROM approvals WHERE request_id = $1 ORDER BY at, approver"
        );
        self.fetch_all(&sql, args![request_id], rows::approval)
            .await
    }

    async fn pending_approvals(&self) -> Result<Vec<Approval>, StoreError> {
        let cols = APPROVAL_COLS
            .split(", ")
            .map(|c| format!("a.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SELECT {cols} FROM approvals a JOIN requests r ON r.id = a.request_id \
             WHERE r.state = 'pending' ORDER BY a.request_id, a.at, a.approver"
        );
        self.fetch_all(&sql, vec![], rows::approval).await
    }

    async fn next_request_deadline(&self) -> Result<Option<Timestamp>, StoreError> {
        self.min_ts("SELECT MIN(pending_until) AS t FROM requests WHERE state = 'pending'")
            .await
    }

    async fn overdue_requests(
        &self,
        now: Timestamp,
        limit: u32,
    ) -> Result<Vec<Request>, StoreError> {
        let sql = format!(
            "SELECT {REQUEST_COLS} FROM requests WHERE state = 'pending' AND pending_until <= $1 \
             ORDER BY pending_until, id LIMIT $2"
        );
        self.fetch_all(&sql, args![now, i64::from(limit)], rows::request)
            .await
    }

    async fn grant(&self, id: Uuid) -> Result<Option<Grant>, StoreError> {
        let sql = format!("SELECT {GRANT_COLS} FROM grants WHERE id = $1");
        self.fetch_optional(&sql, args![id], rows::grant).await
    }

    async fn grants(&self, f: &GrantFilter) -> Result<Vec<Grant>, StoreError> {
        let mut sql = format!("SELECT {GRANT_COLS} FROM grants WHERE 1 = 1");
        let mut a = vec![];
        push_eq(
            &mut sql,
            &mut a,
            "user_name",
            f.user.as_deref().map(Arg::from),
        );
        push_eq(
            &mut sql,
            &mut a,
            "state",
            f.state.map(|s| s.as_str().into()),
        );
        push_eq(
            &mut sql,
            &mut a,
            "target",
            f.target.as_deref().map(Arg::from),
        );
        if let Some((from, to)) = f.held_between {
            a.push(to.into());
            a.push(from.into());
            let n = a.len();
            sql.push_str(&format!(
                " AND starts_at <= ${} AND (expires_at >= ${n} OR ended_at >= ${n})",
                n - 1
            ));
        }
        sql.push_str(" ORDER BY starts_at DESC, id DESC");
        push_limit(&mut sql, &mut a, f.limit);
        self.fetch_all(&sql, a, rows::grant).await
    }

    async fn next_grant_deadline(&self) -> Result<Option<Timestamp>, StoreError> {
        let ends = self
            .min_ts("SELECT MIN(expires_at) AS t FROM grants WHERE state = 'active'")
            .await?;
        let starts = self
            .min_ts("SELECT MIN(starts_at) AS t FROM grants WHERE state = 'scheduled'")
            .await?;
        Ok(ends.into_iter().chain(starts).min())
    }

    async fn due_scheduled_grants(
        &self,
        now: Timestamp,
        limit: u32,
    ) -> Result<Vec<Grant>, StoreError> {
        let sql = format!(
            "SELECT {GRANT_COLS} FROM grants WHERE state = 'scheduled' AND starts_at <= $1 \
             ORDER BY starts_at, id LIMIT $2"
        );
        self.fetch_all(&sql, args![now, i64::from(limit)], rows::grant)
            .await
    }

    async fn overdue_grants(&self, now: Timestamp, limit: u32) -> Result<Vec<Grant>, StoreError> {
        let sql = format!(
            "SELECT {GRANT_COLS} FROM grants WHERE state = 'active' AND expires_at <= $1 \
             ORDER BY expires_at, id LIMIT $2"
        );
        self.fetch_all(&sql, args![now, i64::from(limit)], rows::grant)
            .await
    }

    async fn due_jobs(&self, now: Timestamp, limit: u32) -> Result<Vec<ProvisionJob>, StoreError> {
        let sql = format!(
            "SELECT {JOB_COLS} FROM provision_jobs WHERE NOT done AND next_attempt_at <= $1 \
             ORDER BY next_attempt_at, id LIMIT $2"
        );
        self.fetch_all(&sql, args![now, i64::from(limit)], rows::job)
            .await
    }

    async fn next_job_at(&self) -> Result<Option<Timestamp>, StoreError> {
        self.min_ts("SELECT MIN(next_attempt_at) AS t FROM provision_jobs WHERE NOT done")
            .await
    }

    async fn grant_jobs(&self, grant_id: Uuid) -> Result<Vec<ProvisionJob>, StoreError> {
        let sql = format!(
            "SELECT {JOB_COLS} FROM provision_jobs WHERE grant_id = $1 ORDER BY created_at, id"
        );
        self.fetch_all(&sql, args![grant_id], rows::job).await
    }

    async fn grant_secret(&self, grant_id: Uuid) -> Result<Option<String>, StoreError> {
        self.fetch_optional(
            "SELECT secret FROM grant_secrets WHERE grant_id = $1",
            args![grant_id],
            |r| r.get::<String>("secret"),
        )
        .await
    }

    async fn policy_version(
        &self,
        version: Option<i64>,
    ) -> Result<Option<PolicyVersion>, StoreError> {
        match version {
            Some(v) => {
                let sql = format!("SELECT {POLICY_COLS} FROM policy_versions WHERE version = $1");
                self.fetch_optional(&sql, args![v], rows::policy_version)
                    .await
            }
            None => {
                let sql = format!(
                    "SELECT {POLICY_COLS} FROM policy_versions ORDER BY version DESC LIMIT 1"
                );
                self.fetch_optional(&sql, vec![], rows::policy_version)
                    .await
            }
        }
    }

    async fn policy_versions(&self) -> Result<Vec<PolicyVersion>, StoreError> {
        let sql = format!("SELECT {POLICY_COLS} FROM policy_versions ORDER BY version DESC");
        self.fetch_all(&sql, vec![], rows::policy_version).await
    }

    async fn latest_policy_version_number(&self) -> Result<Option<i64>, StoreError> {
        let v = self
            .fetch_optional(
                "SELECT MAX(version) AS v FROM policy_versions",
                vec![],
                |r| r.get::<Option<i64>>("v"),
            )
            .await?;
        Ok(v.flatten())
    }

    async fn policy_proposal(
        &self,
        id: i64,
    ) -> Result<Option<pedm_core::policy_review::PolicyProposal>, StoreError> {
        Engine::proposal(self, id).await
    }
    async fn policy_proposals(
        &self,
        state: Option<pedm_core::policy_review::ProposalState>,
    ) -> Result<Vec<pedm_core::policy_review::PolicyProposal>, StoreError> {
        Engine::proposals(self, state).await
    }
    async fn latest_policy_proposal_id(&self) -> Result<i64, StoreError> {
        Engine::latest_proposal_id(self).await
    }

    async fn external_account(
        &self,
        user: &str,
    ) -> Result<Option<pedm_core::external::ExternalAccount>, StoreError> {
        let catalog = self.catalog();
        if let Some(x) = catalog.external(user) {
            return Ok(x);
        }
        let generation = catalog.guard_generation();
        let x = Engine::external_account_row(self, user).await?;
        catalog.keep_external(generation, user, &x);
        Ok(x)
    }
    async fn external_accounts(
        &self,
    ) -> Result<Vec<pedm_core::external::ExternalAccount>, StoreError> {
        Engine::external_account_rows(self).await
    }
    async fn scim_token(&self, id: &str) -> Result<Option<pedm_core::scim::ScimToken>, StoreError> {
        Engine::scim_token_row(self, id).await
    }
    async fn scim_tokens(&self) -> Result<Vec<pedm_core::scim::ScimToken>, StoreError> {
        Engine::scim_token_rows(self).await
    }
    async fn scim_link(&self, user: &str) -> Result<Option<pedm_core::scim::ScimLink>, StoreError> {
        Engine::scim_link_row(self, user).await
    }
    async fn scim_links(&self) -> Result<Vec<pedm_core::scim::ScimLink>, StoreError> {
        Engine::scim_link_rows(self).await
    }
    async fn scim_group_link(
        &self,
        group: &str,
    ) -> Result<Option<pedm_core::scim::ScimGroupLink>, StoreError> {
        Engine::scim_group_link_row(self, group).await
    }
    async fn scim_group_links(&self) -> Result<Vec<pedm_core::scim::ScimGroupLink>, StoreError> {
        Engine::scim_group_link_rows(self).await
    }
    async fn device(&self, id: &str) -> Result<Option<pedm_core::device::Device>, StoreError> {
        Engine::device_row(self, id).await
    }
    async fn locks(&self) -> Result<Vec<pedm_core::lock::Lock>, StoreError> {
        Engine::lock_rows(self).await
    }
    async fn review_campaigns(
        &self,
    ) -> Result<Vec<pedm_core::access_review::Campaign>, StoreError> {
        Engine::campaign_rows(self).await
    }
    async fn review_campaign(
        &self,
        id: Uuid,
    ) -> Result<Option<pedm_core::access_review::Campaign>, StoreError> {
        Engine::campaign_row(self, id).await
    }
    async fn review_items(
        &self,
        campaign: Uuid,
    ) -> Result<Vec<pedm_core::access_review::ReviewItem>, StoreError> {
        Engine::review_item_rows(self, campaign).await
    }
    async fn review_item(
        &self,
        id: Uuid,
    ) -> Result<Option<pedm_core::access_review::ReviewItem>, StoreError> {
        Engine::review_item_row(self, id).await
    }
    async fn locks_in_force(
        &self,
        now: jiff::Timestamp,
    ) -> Result<Vec<pedm_core::lock::Lock>, StoreError> {
        let catalog = self.catalog();
        let mut locks = match catalog.unlifted_locks() {
            Some(l) => l,
            None => {
                let generation = catalog.guard_generation();
                let mut all = Engine::lock_rows(self).await?;
                all.retain(|l| l.lifted_at.is_none());
                catalog.keep_unlifted_locks(generation, &all);
                all
            }
        };
        locks.retain(|l| l.holds(now));
        Ok(locks)
    }
    async fn ssh_certificates_to_revoke(
        &self,
        now: jiff::Timestamp,
    ) -> Result<Vec<pedm_core::ssh::SshCertificate>, StoreError> {
        Engine::ssh_certificates_to_revoke(self, now).await
    }
    async fn web_session(
        &self,
        token_id: &str,
    ) -> Result<Option<pedm_core::web_session::WebSession>, StoreError> {
        self.get_web_session(token_id).await
    }
    async fn outbox_after(
        &self,
        after: i64,
        limit: i64,
    ) -> Result<Vec<pedm_core::notice::OutboxItem>, StoreError> {
        self.outbox_rows(after, limit).await
    }

    async fn outbox_head(&self) -> Result<i64, StoreError> {
        self.outbox_last().await
    }

    async fn integration_entry(
        &self,
        integration: &str,
        key: &str,
    ) -> Result<Option<pedm_core::integration::IntegrationEntry>, StoreError> {
        self.get_integration_entry(integration, key).await
    }
    async fn devices(
        &self,
        owner: Option<&str>,
    ) -> Result<Vec<pedm_core::device::Device>, StoreError> {
        Engine::device_rows(self, owner).await
    }

    async fn host(&self, name: &str) -> Result<Option<pedm_core::host::Host>, StoreError> {
        Engine::host(self, name).await
    }
    async fn host_by_token(
        &self,
        token_id: &str,
    ) -> Result<Option<pedm_core::host::Host>, StoreError> {
        Engine::host_by_token(self, token_id).await
    }
    async fn hosts(&self) -> Result<Vec<pedm_core::host::Host>, StoreError> {
        Engine::hosts(self).await
    }
    async fn session(&self, id: Uuid) -> Result<Option<pedm_core::host::Session>, StoreError> {
        Engine::session(self, id).await
    }
    async fn sessions(
        &self,
        f: &pedm_core::host::SessionFilter,
    ) -> Result<Vec<pedm_core::host::Session>, StoreError> {
        Engine::sessions(self, f).await
    }

    async fn task(&self, name: &str) -> Result<Option<pedm_core::delegation::TaskDef>, StoreError> {
        Engine::task(self, name).await
    }
    async fn tasks(&self) -> Result<Vec<pedm_core::delegation::TaskDef>, StoreError> {
        Engine::tasks(self).await
    }
    async fn delegation(
        &self,
        id: Uuid,
    ) -> Result<Option<pedm_core::delegation::Delegation>, StoreError> {
        Engine::delegation(self, id).await
    }
    async fn delegations(
        &self,
        f: &pedm_core::delegation::DelegationFilter,
    ) -> Result<Vec<pedm_core::delegation::Delegation>, StoreError> {
        Engine::delegations(self, f).await
    }
    async fn grant_link(
        &self,
        grant_id: Uuid,
    ) -> Result<Option<pedm_core::delegation::GrantLink>, StoreError> {
        Engine::grant_link(self, grant_id).await
    }
    async fn grant_links(
        &self,
        f: &pedm_core::delegation::GrantLinkFilter,
    ) -> Result<Vec<pedm_core::delegation::GrantLink>, StoreError> {
        Engine::grant_links(self, f).await
    }

    async fn audit_events(&self, f: &AuditFilter) -> Result<Vec<AuditEvent>, StoreError> {
        if self.privacy.get().is_none() || f.sealed {
            return self.stored_audit_events(f).await;
        }
        let mut events = self
            .stored_audit_events(&self.sealed_filter(f).await?)
            .await?;
        self.open_events(&mut events).await?;
        Ok(events)
    }
    fn seal_personal_data(
        &self,
        cipher: std::sync::Arc<dyn pedm_core::privacy::PersonalDataCipher>,
    ) -> Result<(), StoreError> {
        self.privacy
            .set(cipher)
            .map_err(|_| StoreError::Backend("personal data sealing is set already".into()))
    }
    fn seals_personal_data(&self) -> bool {
        self.privacy.get().is_some()
    }
    async fn subject_key(
        &self,
        subject: &str,
    ) -> Result<Option<pedm_core::privacy::SubjectKey>, StoreError> {
        self.subject_key_row(subject).await
    }
    async fn legal_holds(&self) -> Result<Vec<pedm_core::privacy::SubjectKey>, StoreError> {
        self.held_rows().await
    }

    async fn audit_head(&self) -> Result<Option<(i64, [u8; 32])>, StoreError> {
        let head = self
            .fetch_optional(
                "SELECT seq, hash FROM audit_head WHERE id = 1",
                vec![],
                rows::head,
            )
            .await?;
        Ok(head.filter(|(seq, _)| *seq > 0))
    }

    async fn audit_hashes(&self, from_seq: i64, to_seq: i64) -> Result<Vec<[u8; 32]>, StoreError> {
        self.fetch_all(
            "SELECT hash FROM audit_events WHERE seq >= $1 AND seq <= $2 ORDER BY seq",
            args![from_seq, to_seq],
            rows::leaf,
        )
        .await
    }

    async fn save_checkpoint(&self, cp: &CheckpointRecord) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        let mut c = tx.conn();
        c.execute(
            "INSERT INTO audit_checkpoints (size, root, time, key_id, signature) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (size) DO NOTHING",
            args![
                cp.size,
                &cp.root[..],
                cp.time,
                &cp.key_id,
                &cp.signature[..]
            ],
        )
        .await
        .map_err(backend)?;
        let row = c
            .fetch_optional(
                "SELECT size, root, time, key_id, signature FROM audit_checkpoints WHERE size = $1",
                args![cp.size],
            )
            .await
            .map_err(backend)?
            .ok_or_else(|| StoreError::Backend("checkpoint vanished after insert".into()))?;
        let stored = rows::checkpoint(&row)?;
        if stored.root != cp.root {
            return Err(StoreError::Conflict(format!(
                "a checkpoint of size {} with a different root is already stored (the audit log \
                 would fork)",
                cp.size
            )));
        }
        tx.commit().await.map_err(backend)
    }

    async fn checkpoints(&self) -> Result<Vec<CheckpointRecord>, StoreError> {
        self.fetch_all(
            "SELECT size, root, time, key_id, signature FROM audit_checkpoints ORDER BY size",
            vec![],
            rows::checkpoint,
        )
        .await
    }

    async fn latest_checkpoint(&self) -> Result<Option<CheckpointRecord>, StoreError> {
        self.fetch_optional(
            "SELECT size, root, time, key_id, signature FROM audit_checkpoints \
             ORDER BY size DESC LIMIT 1",
            vec![],
            rows::checkpoint,
        )
        .await
    }

    async fn rewind_audit(&self, size: i64) -> Result<u64, StoreError> {
        let mut tx = self.begin().await?;
        let mut c = tx.conn();
        read_head(&mut c).await?;
        let later = c
            .fetch_optional(
                "SELECT seq FROM audit_events WHERE seq > $1 LIMIT 1",
                args![size],
            )
            .await
            .map_err(backend)?;
        if later.is_some() {
            return Err(StoreError::Conflict(format!(
                "the log holds events after {size}: nothing to rewind"
            )));
        }
        let hash = if size == 0 {
            [0u8; 32]
        } else {
            let row = c
                .fetch_optional("SELECT hash FROM audit_events WHERE seq = $1", args![size])
                .await
                .map_err(backend)?
                .ok_or_else(|| StoreError::NotFound(format!("audit event {size}")))?;
            rows::leaf(&row)?
        };
        write_head(&mut c, size, &hash).await?;
        let n = c
            .execute("DELETE FROM audit_checkpoints WHERE size > $1", args![size])
            .await
            .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(n)
    }
    async fn sso_identity(
        &self,
        issuer: &str,
        subject: &str,
    ) -> Result<Option<String>, StoreError> {
        self.get_sso_identity(issuer, subject).await
    }
    async fn identities_of(&self, user: &str) -> Result<Vec<(String, String)>, StoreError> {
        self.get_identities_of(user).await
    }
    async fn sso_session(
        &self,
        token_id: &str,
    ) -> Result<Option<pedm_core::sso::SsoSession>, StoreError> {
        self.get_sso_session(token_id).await
    }
    async fn sso_session_ids(&self, user: Option<&str>) -> Result<Vec<String>, StoreError> {
        self.get_sso_session_ids(user).await
    }
    async fn sso_groups(&self, user: &str) -> Result<Vec<String>, StoreError> {
        self.get_sso_groups(user).await
    }
    async fn sso_flow(&self, id: &str) -> Result<Option<pedm_core::sso::SsoFlow>, StoreError> {
        self.get_sso_flow(id).await
    }
}

/// Blanks the content of events `after+1..=through` (their seq, time and hashes stay).
async fn prune_audit(c: &mut Conn<'_>, after: i64, through: i64) -> Result<(), StoreError> {
    let n = c
        .execute(
            "UPDATE audit_events SET actor = '', action = '', subject = NULL, data = '{}' \
             WHERE seq > $1 AND seq <= $2 AND action <> ''",
            args![after, through],
        )
        .await
        .map_err(backend)?;
    if n != (through - after).max(0) as u64 {
        return Err(StoreError::Conflict(format!(
            "events {}..={through}: {n} of them hold content (pruned meanwhile?)",
            after + 1
        )));
    }
    Ok(())
}

impl Engine {
    /// Audit events as stored (personal data sealed, if it is); pruned ones are left out.
    pub(crate) async fn stored_audit_events(
        &self,
        f: &AuditFilter,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        let mut sql = format!("SELECT {AUDIT_COLS} FROM audit_events WHERE action <> ''");
        let mut a: Vec<Arg> = vec![];
        if let Some(after) = f.after_seq {
            a.push(after.into());
            sql.push_str(&format!(" AND seq > ${}", a.len()));
        }
        if let Some(before) = f.before_seq {
            a.push(before.into());
            sql.push_str(&format!(" AND seq < ${}", a.len()));
        }
        push_eq(&mut sql, &mut a, "actor", f.actor.as_deref().map(Arg::from));
        push_eq(
            &mut sql,
            &mut a,
            "action",
            f.action.as_deref().map(Arg::from),
        );
        push_eq(
            &mut sql,
            &mut a,
            "subject",
            f.subject.as_deref().map(Arg::from),
        );
        if let Some(t) = &f.target {
            a.push(format!("target:{t}").into());
            a.push(format!("role:{t}/%").into());
            a.push(t.into());
            let n = a.len();
            sql.push_str(&format!(
                " AND (subject = ${} OR subject LIKE ${} OR {} = ${n})",
                n - 2,
                n - 1,
                self.json_text_field("data", "target")
            ));
        }
        if let Some(r) = f.request {
            a.push(format!("request:{r}").into());
            a.push(r.to_string().into());
            let n = a.len();
            sql.push_str(&format!(
                " AND (subject = ${} OR {} = ${n})",
                n - 1,
                self.json_text_field("data", "request")
            ));
        }
        // [since, until): inclusive start, exclusive end, so adjacent windows don't overlap.
        if let Some(since) = f.since {
            a.push(since.into());
            sql.push_str(&format!(" AND at >= ${}", a.len()));
        }
        if let Some(until) = f.until {
            a.push(until.into());
            sql.push_str(&format!(" AND at < ${}", a.len()));
        }
        sql.push_str(if f.newest_first {
            " ORDER BY seq DESC"
        } else {
            " ORDER BY seq"
        });
        push_limit(&mut sql, &mut a, f.limit);
        self.fetch_all(&sql, a, rows::audit_event).await
    }
}
