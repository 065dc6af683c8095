//! The audit chain inside a changeset's transaction: its head row (the serialisation point),
//! chaining new events onto it, inserting them several rows per statement, and pruning the
//! content of the oldest (hashes kept).

use crate::db::{Arg, Conn, args};
use crate::engine::{backend, json_text};
use crate::rows;
use jiff::Timestamp;
use pedm_core::audit::{self, AuditEvent, NewAuditEvent};
use pedm_core::store::StoreError;
use std::fmt::Write as _;

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

/// Blanks the content of events `after+1..=through` (their seq, time and hashes stay).
pub(crate) async fn prune_audit(
    c: &mut Conn<'_>,
    after: i64,
    through: i64,
) -> Result<(), StoreError> {
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
