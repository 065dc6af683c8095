//! Tasks, delegations and the links of delegated grants (migration 0007).

use crate::db::{Arg, Conn, Row, args};
use crate::engine::{Engine, backend, exists, insert, json_text, push_eq, push_limit};
use crate::rows::{corrupt, opt_ts, ts};
use jiff::Timestamp;
use pedm_core::delegation::{
    DelegateKind, Delegatee, Delegation, DelegationFilter, DelegationState, DelegationWrite,
    GrantLink, GrantLinkFilter, TaskDef,
};
use pedm_core::store::StoreError;
use uuid::Uuid;

const DELEGATION_COLS: &str = "id, parent_id, delegator, delegate_kind, delegate_name, tasks, \
     roles, scope, expires_at, redelegate, reason, created_at, revoked_at, revoked_by, \
     revoke_reason";
const LINK_COLS: &str = "grant_id, delegation_id, parent_grant_id";

fn opt_uuid(r: &Row, col: &str) -> Result<Option<Uuid>, StoreError> {
    r.get::<Option<String>>(col)?
        .map(|s| Uuid::parse_str(&s).map_err(|e| corrupt(col, e)))
        .transpose()
}

fn json<T: serde::de::DeserializeOwned>(r: &Row, col: &str) -> Result<T, StoreError> {
    serde_json::from_str(&r.get::<String>(col)?).map_err(|e| corrupt(col, e))
}

fn task(r: &Row) -> Result<TaskDef, StoreError> {
    json(r, "definition")
}

fn delegation(r: &Row) -> Result<Delegation, StoreError> {
    let kind = match r.get::<String>("delegate_kind")?.as_str() {
        "user" => DelegateKind::User,
        "group" => DelegateKind::Group,
        other => return Err(corrupt("delegate_kind", format!("unknown kind {other:?}"))),
    };
    let revoked_at = opt_ts(r, "revoked_at")?;
    Ok(Delegation {
        id: Uuid::parse_str(&r.get::<String>("id")?).map_err(|e| corrupt("id", e))?,
        parent: opt_uuid(r, "parent_id")?,
        delegator: r.get("delegator")?,
        delegate: Delegatee {
            kind,
            name: r.get("delegate_name")?,
        },
        tasks: json(r, "tasks")?,
        roles: json(r, "roles")?,
        scope: json(r, "scope")?,
        expires_at: ts(r, "expires_at")?,
        redelegate: r.get("redelegate")?,
        reason: r.get("reason")?,
        created_at: ts(r, "created_at")?,
        state: if revoked_at.is_some() {
            DelegationState::Revoked
        } else {
            DelegationState::Active
        },
        revoked_at,
        revoked_by: r.get("revoked_by")?,
        revoke_reason: r.get("revoke_reason")?,
    })
}

fn link(r: &Row) -> Result<GrantLink, StoreError> {
    Ok(GrantLink {
        grant_id: Uuid::parse_str(&r.get::<String>("grant_id")?)
            .map_err(|e| corrupt("grant_id", e))?,
        delegation: opt_uuid(r, "delegation_id")?,
        parent_grant: opt_uuid(r, "parent_grant_id")?,
    })
}

fn kind_str(k: DelegateKind) -> &'static str {
    match k {
        DelegateKind::User => "user",
        DelegateKind::Group => "group",
    }
}

pub(crate) async fn apply(c: &mut Conn<'_>, w: &DelegationWrite) -> Result<(), StoreError> {
    match w {
        DelegationWrite::DefineTask { task, replace } => {
            let defined_at = task.defined_at.unwrap_or_else(Timestamp::now);
            let defined_by = task.defined_by.clone().unwrap_or_default();
            let sql = if *replace {
                "INSERT INTO tasks (name, definition, defined_at, defined_by) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO UPDATE SET \
                 definition = excluded.definition, defined_at = excluded.defined_at, \
                 defined_by = excluded.defined_by"
            } else {
                "INSERT INTO tasks (name, definition, defined_at, defined_by) \
                 VALUES ($1, $2, $3, $4)"
            };
            insert(
                c,
                sql,
                args![&task.name, json_text(task)?, defined_at, &defined_by],
                || StoreError::AlreadyExists(format!("task {} already exists", task.name)),
                || StoreError::Backend("unexpected foreign key violation inserting a task".into()),
            )
            .await
        }
        DelegationWrite::Insert(d) => {
            insert(
                c,
                &format!(
                    "INSERT INTO delegations ({DELEGATION_COLS}) VALUES ($1, $2, $3, $4, $5, $6, \
                     $7, $8, $9, $10, $11, $12, $13, $14, $15)"
                ),
                args![
                    d.id,
                    d.parent,
                    &d.delegator,
                    kind_str(d.delegate.kind),
                    &d.delegate.name,
                    json_text(&d.tasks)?,
                    json_text(&d.roles)?,
                    json_text(&d.scope)?,
                    d.expires_at,
                    d.redelegate,
                    &d.reason,
                    d.created_at,
                    d.revoked_at,
                    &d.revoked_by,
                    &d.revoke_reason
                ],
                || StoreError::AlreadyExists(format!("delegation {} already exists", d.id)),
                || {
                    StoreError::NotFound(format!(
                        "delegation {} does not exist",
                        d.parent.map(|p| p.to_string()).unwrap_or_default()
                    ))
                },
            )
            .await
        }
        DelegationWrite::Revoke { id, at, by, reason } => {
            let n = c
                .execute(
                    "UPDATE delegations SET revoked_at = $2, revoked_by = $3, revoke_reason = $4 \
                     WHERE id = $1 AND revoked_at IS NULL",
                    args![*id, *at, by, reason],
                )
                .await
                .map_err(backend)?;
            if n == 0 {
                return Err(
                    if exists(c, "SELECT 1 FROM delegations WHERE id = $1", args![*id]).await? {
                        StoreError::Conflict(format!("delegation {id} is already revoked"))
                    } else {
                        StoreError::NotFound(format!("delegation {id} does not exist"))
                    },
                );
            }
            Ok(())
        }
        DelegationWrite::LinkGrant(l) => {
            insert(
                c,
                &format!("INSERT INTO grant_links ({LINK_COLS}) VALUES ($1, $2, $3)"),
                args![l.grant_id, l.delegation, l.parent_grant],
                || StoreError::AlreadyExists(format!("grant {} is linked already", l.grant_id)),
                || {
                    StoreError::NotFound(format!(
                        "grant {}, its delegation or its parent grant does not exist",
                        l.grant_id
                    ))
                },
            )
            .await
        }
    }
}

impl Engine {
    pub(crate) async fn task(&self, name: &str) -> Result<Option<TaskDef>, StoreError> {
        self.fetch_optional(
            "SELECT definition FROM tasks WHERE name = $1",
            args![name],
            task,
        )
        .await
    }

    pub(crate) async fn tasks(&self) -> Result<Vec<TaskDef>, StoreError> {
        self.fetch_all("SELECT definition FROM tasks ORDER BY name", vec![], task)
            .await
    }

    pub(crate) async fn delegation(&self, id: Uuid) -> Result<Option<Delegation>, StoreError> {
        let sql = format!("SELECT {DELEGATION_COLS} FROM delegations WHERE id = $1");
        self.fetch_optional(&sql, args![id], delegation).await
    }

    pub(crate) async fn delegations(
        &self,
        f: &DelegationFilter,
    ) -> Result<Vec<Delegation>, StoreError> {
        let mut sql = format!("SELECT {DELEGATION_COLS} FROM delegations WHERE 1 = 1");
        let mut a: Vec<Arg> = vec![];
        if let Some(t) = f.live_at {
            a.push(t.into());
            sql.push_str(&format!(
                " AND revoked_at IS NULL AND expires_at > ${}",
                a.len()
            ));
        }
        push_eq(&mut sql, &mut a, "parent_id", f.parent.map(Into::into));
        sql.push_str(" ORDER BY created_at DESC, id DESC");
        push_limit(&mut sql, &mut a, f.limit);
        self.fetch_all(&sql, a, delegation).await
    }

    pub(crate) async fn grant_link(&self, grant_id: Uuid) -> Result<Option<GrantLink>, StoreError> {
        let sql = format!("SELECT {LINK_COLS} FROM grant_links WHERE grant_id = $1");
        self.fetch_optional(&sql, args![grant_id], link).await
    }

    pub(crate) async fn grant_links(
        &self,
        f: &GrantLinkFilter,
    ) -> Result<Vec<GrantLink>, StoreError> {
        let mut sql = format!("SELECT {LINK_COLS} FROM grant_links WHERE 1 = 1");
        let mut a: Vec<Arg> = vec![];
        push_eq(
            &mut sql,
            &mut a,
            "delegation_id",
            f.delegation.map(Into::into),
        );
        push_eq(
            &mut sql,
            &mut a,
            "parent_grant_id",
            f.parent_grant.map(Into::into),
        );
        sql.push_str(" ORDER BY grant_id");
        self.fetch_all(&sql, a, link).await
    }
}
