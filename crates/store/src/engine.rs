//! The engine both dialects share: its pools, reads on a pooled connection, transactions, and
//! the small helpers every table module uses (errors, inserts that name what clashed, filters).

use crate::db::{Arg, Conn, Pooled, Tx};
use jiff::Timestamp;
use pedm_core::store::StoreError;
use sqlx::error::ErrorKind;
use sqlx::{PgPool, SqlitePool};

pub(crate) enum Pools {
    /// SQLite allows one writer at a time; a one-connection write pool queues writers here
    /// instead of having them fight over the file lock. Readers use their own pool (WAL lets
    /// them run beside the writer).
    Sqlite {
        read: SqlitePool,
        write: SqlitePool,
        /// Changesets go through here (group commit), see `crate::group_commit`.
        committer: crate::commit_queue::CommitQueue,
        /// Targets and roles read, see `crate::catalog`.
        catalog: crate::catalog::Catalog,
    },
    Pg {
        pool: PgPool,
        /// Changesets go through here (group commit), see `crate::group_commit`.
        committer: crate::commit_queue::CommitQueue,
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
    pub(crate) fn json_text_field(&self, column: &str, field: &str) -> String {
        match &self.pools {
            Pools::Sqlite { .. } => format!("json_extract({column}, '$.{field}')"),
            Pools::Pg { .. } => format!("({column}::jsonb ->> '{field}')"),
        }
    }

    pub(crate) async fn read(&self) -> Result<Pooled, StoreError> {
        Ok(match &self.pools {
            Pools::Sqlite { read, .. } => Pooled::Sqlite(read.acquire().await.map_err(backend)?),
            Pools::Pg { pool: p, .. } => Pooled::Pg(p.acquire().await.map_err(backend)?),
        })
    }

    /// Targets and roles read, see `crate::catalog`.
    pub(crate) fn catalog(&self) -> &crate::catalog::Catalog {
        match &self.pools {
            Pools::Sqlite { catalog, .. } | Pools::Pg { catalog, .. } => catalog,
        }
    }

    pub(crate) async fn begin(&self) -> Result<Tx, StoreError> {
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
    pub(crate) async fn min_ts(&self, sql: &str) -> Result<Option<Timestamp>, StoreError> {
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
pub(crate) fn refusal(
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

/// Appends `AND col = $n` for each present filter value.
pub(crate) fn push_eq(sql: &mut String, args: &mut Vec<Arg>, col: &str, v: Option<Arg>) {
    if let Some(v) = v {
        args.push(v);
        sql.push_str(&format!(" AND {col} = ${}", args.len()));
    }
}
