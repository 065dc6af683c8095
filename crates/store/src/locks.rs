//! Locks on people and hosts (migration 0020).

use crate::db::{Conn, Row, args};
use crate::engine::{Engine, backend, exists, insert};
use crate::rows::{corrupt, opt_ts, ts, uuid};
use pedm_core::lock::{Lock, LockKind, LockWrite};
use pedm_core::store::StoreError;

const COLS: &str =
    "id, kind, subject, reason, created_by, created_at, expires_at, lifted_at, lifted_by";

fn lock(r: &Row) -> Result<Lock, StoreError> {
    let kind: String = r.get("kind")?;
    Ok(Lock {
        id: uuid(r, "id")?,
        kind: LockKind::parse(&kind).ok_or_else(|| corrupt("kind", kind))?,
        subject: r.get("subject")?,
        reason: r.get("reason")?,
        created_by: r.get("created_by")?,
        created_at: ts(r, "created_at")?,
        expires_at: ts(r, "expires_at")?,
        lifted_at: opt_ts(r, "lifted_at")?,
        lifted_by: r.get("lifted_by")?,
    })
}

pub(crate) async fn apply(c: &mut Conn<'_>, w: &LockWrite) -> Result<(), StoreError> {
    match w {
        LockWrite::Insert(l) => {
            insert(
                c,
                &format!("INSERT INTO locks ({COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"),
                args![
                    l.id,
                    l.kind.as_str(),
                    &l.subject,
                    &l.reason,
                    &l.created_by,
                    l.created_at,
                    l.expires_at,
                    l.lifted_at,
                    &l.lifted_by
                ],
                || StoreError::AlreadyExists(format!("lock {}", l.id)),
                || StoreError::Backend("unexpected foreign key violation".into()),
            )
            .await
        }
        LockWrite::Lift { id, at, by } => {
            let n = c
                .execute(
                    "UPDATE locks SET lifted_at = $2, lifted_by = $3 \
                     WHERE id = $1 AND lifted_at IS NULL",
                    args![*id, *at, by],
                )
                .await
                .map_err(backend)?;
            if n == 0 {
                return Err(
                    match exists(c, "SELECT 1 FROM locks WHERE id = $1", args![*id]).await? {
                        true => StoreError::Conflict(format!("lock {id} is lifted already")),
                        false => StoreError::NotFound(format!("lock {id}")),
                    },
                );
            }
            Ok(())
        }
    }
}

impl Engine {
    pub(crate) async fn lock_rows(&self) -> Result<Vec<Lock>, StoreError> {
        let sql = format!("SELECT {COLS} FROM locks ORDER BY created_at DESC, id");
        self.fetch_all(&sql, vec![], lock).await
    }
}
