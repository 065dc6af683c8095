//! Applying a changeset's writes inside its transaction, each checking its documented
//! precondition (the rows it needs, the state it moves from) and refusing with a typed error.

use crate::chain::insert_rows;
use crate::db::{Arg, Conn, args};
use crate::engine::{backend, exists, insert, json_text, refusal};
use pedm_core::model::*;
use pedm_core::store::{StoreError, Write};

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
        Write::PruneAudit { after, through } => {
            crate::chain::prune_audit(c, *after, *through).await
        }
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
