//! The little that differs between SQLite and PostgreSQL at the driver level.
//!
//! Both schemas have the same tables and columns, and sqlx's SQLite driver accepts `$N`
//! placeholders, so every query in [`crate::sql`] is one string for both dialects. What is left
//! is dispatch: bind values ([`Arg`]), run on the right connection type ([`Conn`]) and read
//! columns ([`Row`]). An enum keeps that in one place instead of a generic over
//! `sqlx::Database` with a long tail of trait bounds on every function.

use pedm_core::store::StoreError;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnection, PgRow};
use sqlx::sqlite::{SqliteConnection, SqliteRow};
use sqlx::{AssertSqlSafe, Decode, Postgres, Row as _, Sqlite, Transaction, Type};

pub(crate) use crate::arg::{Arg, args};

/// One database connection (pooled or inside a transaction) of either dialect.
pub(crate) enum Conn<'a> {
    Sqlite(&'a mut SqliteConnection),
    Pg(&'a mut PgConnection),
    /// SQLite through its C API on the calling thread (the group committer, see
    /// [`crate::sqlite::raw`]).
    Raw(&'a mut crate::sqlite::raw::RawConn),
}

fn sqlite_query(
    sql: &str,
    args: Vec<Arg>,
) -> sqlx::query::Query<'static, Sqlite, sqlx::sqlite::SqliteArguments> {
    // The SQL text is always assembled from fixed fragments in this crate; values are bound.
    let mut q = sqlx::query::<Sqlite>(AssertSqlSafe(sql.to_owned()));
    for a in args {
        q = match a {
            Arg::Text(v) => q.bind(v),
            Arg::Int(v) => q.bind(v),
            Arg::Bool(v) => q.bind(v),
            Arg::Blob(v) => q.bind(v),
        };
    }
    q
}

fn pg_query(
    sql: &str,
    args: Vec<Arg>,
) -> sqlx::query::Query<'static, Postgres, sqlx::postgres::PgArguments> {
    let mut q = sqlx::query::<Postgres>(AssertSqlSafe(sql.to_owned()));
    for a in args {
        q = match a {
            Arg::Text(v) => q.bind(v),
            Arg::Int(v) => q.bind(v),
            Arg::Bool(v) => q.bind(v),
            Arg::Blob(v) => q.bind(v),
        };
    }
    q
}

impl Conn<'_> {
    pub(crate) fn is_postgres(&self) -> bool {
        matches!(self, Conn::Pg(_))
    }

    /// Runs a statement; returns the number of rows it changed.
    pub(crate) async fn execute(&mut self, sql: &str, args: Vec<Arg>) -> Result<u64, sqlx::Error> {
        Ok(match self {
            Conn::Sqlite(c) => sqlite_query(sql, args)
                .execute(&mut **c)
                .await?
                .rows_affected(),
            Conn::Pg(c) => pg_query(sql, args).execute(&mut **c).await?.rows_affected(),
            Conn::Raw(c) => c.execute(sql, &args)?,
        })
    }

    pub(crate) async fn fetch_all(
        &mut self,
        sql: &str,
        args: Vec<Arg>,
    ) -> Result<Vec<Row>, sqlx::Error> {
        Ok(match self {
            Conn::Sqlite(c) => sqlite_query(sql, args)
                .fetch_all(&mut **c)
                .await?
                .into_iter()
                .map(Row::Sqlite)
                .collect(),
            Conn::Pg(c) => pg_query(sql, args)
                .fetch_all(&mut **c)
                .await?
                .into_iter()
                .map(Row::Pg)
                .collect(),
            Conn::Raw(c) => c
                .query(sql, &args, None)?
                .into_iter()
                .map(Row::Raw)
                .collect(),
        })
    }

    pub(crate) async fn fetch_optional(
        &mut self,
        sql: &str,
        args: Vec<Arg>,
    ) -> Result<Option<Row>, sqlx::Error> {
        Ok(match self {
            Conn::Sqlite(c) => sqlite_query(sql, args)
                .fetch_optional(&mut **c)
                .await?
                .map(Row::Sqlite),
            Conn::Pg(c) => pg_query(sql, args)
                .fetch_optional(&mut **c)
                .await?
                .map(Row::Pg),
            Conn::Raw(c) => c
                .query(sql, &args, Some(1))?
                .into_iter()
                .next()
                .map(Row::Raw),
        })
    }
}

/// A result row of either dialect.
pub(crate) enum Row {
    Sqlite(SqliteRow),
    Pg(PgRow),
    Raw(crate::sqlite::raw::RawRow),
}

impl Row {
    /// Reads a column; a type mismatch or missing column means the row is not what this crate
    /// wrote.
    pub(crate) fn get<T>(&self, col: &str) -> Result<T, StoreError>
    where
        T: for<'r> Decode<'r, Sqlite>
            + Type<Sqlite>
            + for<'r> Decode<'r, Postgres>
            + Type<Postgres>
            + 'static,
    {
        match self {
            Row::Sqlite(r) => r.try_get(col),
            Row::Pg(r) => r.try_get(col),
            Row::Raw(r) => return r.get(col),
        }
        .map_err(|e| StoreError::Corrupt(format!("column {col}: {e}")))
    }
}

/// A connection checked out of a pool, for reads.
pub(crate) enum Pooled {
    Sqlite(PoolConnection<Sqlite>),
    Pg(PoolConnection<Postgres>),
}

impl Pooled {
    pub(crate) fn conn(&mut self) -> Conn<'_> {
        match self {
            Pooled::Sqlite(c) => Conn::Sqlite(c),
            Pooled::Pg(c) => Conn::Pg(c),
        }
    }
}

/// An open transaction. Dropping it without [`Tx::commit`] rolls back.
pub(crate) enum Tx {
    Sqlite(Transaction<'static, Sqlite>),
    Pg(Transaction<'static, Postgres>),
}

impl Tx {
    pub(crate) fn conn(&mut self) -> Conn<'_> {
        match self {
            Tx::Sqlite(t) => Conn::Sqlite(t),
            Tx::Pg(t) => Conn::Pg(t),
        }
    }

    pub(crate) async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            Tx::Sqlite(t) => t.commit().await,
            Tx::Pg(t) => t.commit().await,
        }
    }
}
