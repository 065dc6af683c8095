//! Group commit on SQLite (see [`crate::group_commit`]): the committer runs on a thread of its
//! own and applies each batch through SQLite's C API ([`super::raw`]) while it holds sqlx's
//! lock on the one write connection, instead of handing each statement to sqlx's connection
//! thread (two thread wake-ups per statement, which were most of the cost of a batch).

use super::raw::RawConn;
use crate::commit_queue::{CommitQueue, Job, Reply};
use crate::db::Conn;
use crate::engine::backend;
use crate::group_commit::{Batcher, Dialect, copy, run, try_batch};
use pedm_core::store::StoreError;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{Connection, SqlitePool};
use std::time::Duration;

/// Starts the committer on a thread of its own, writing through `write` (the store's
/// one-connection write pool).
///
/// Its own thread (with a single-threaded runtime), not a task beside the request handlers:
/// a batch is a sequence of round trips to the connection's thread, and a committer that
/// had to wait for a turn on busy runtime workers between each of them would hold the write
/// lock (and every caller) that much longer. It also keeps the store usable from any
/// runtime. The thread ends when the last handle is dropped.
///
/// Beside it, on the same thread, the WAL is checkpointed (copied into the database file)
/// every [`CHECKPOINT_EVERY`] through a connection of its own (`options`), so that work is
/// not done by a commit while its callers wait.
pub(crate) fn start(
    write: SqlitePool,
    options: SqliteConnectOptions,
) -> Result<CommitQueue, StoreError> {
    let (handle, rx, counters) = CommitQueue::new("SQLite");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| StoreError::Backend(format!("starting the SQLite committer: {e}")))?;
    // Ends with the runtime, when `run` returns.
    runtime.spawn(checkpoints(options));
    let batcher = SqliteBatcher {
        pool: write,
        raw: None,
    };
    std::thread::Builder::new()
        .name("pedm-sqlite-commit".into())
        .spawn(move || runtime.block_on(run(batcher, rx, counters)))
        .map_err(|e| StoreError::Backend(format!("starting the SQLite committer: {e}")))?;
    Ok(handle)
}

struct SqliteBatcher {
    pool: SqlitePool,
    /// Statements prepared on the write connection, kept from batch to batch.
    raw: Option<RawConn>,
}

impl Batcher for SqliteBatcher {
    async fn commit_batch(&mut self, batch: &[Job]) -> Vec<Reply> {
        commit_batch(&self.pool, &mut self.raw, batch).await
    }

    async fn close(&mut self) {
        let (pool, raw) = (&self.pool, &mut self.raw);
        // sqlx cannot close a connection with statements of ours still prepared on it.
        if let Some(r) = raw.take() {
            let mut conn = pool.acquire().await.ok();
            let mut handle = match conn.as_mut() {
                Some(c) => c.lock_handle().await.ok(),
                None => None,
            };
            if handle.as_mut().map(|h| h.as_raw_handle()) == Some(r.db()) {
                // Finalized while the handle is locked.
                drop(r);
            } else {
                r.forget();
            }
            drop(handle);
        }
    }
}

/// How often the WAL is checkpointed beside the committer.
pub(crate) const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);

/// Checkpoints the WAL every [`CHECKPOINT_EVERY`] (`PASSIVE`: it copies what no reader still
/// needs and never blocks the writer).
async fn checkpoints(options: SqliteConnectOptions) {
    let mut conn = match SqliteConnection::connect_with(&options).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "no background WAL checkpoints (the writer does them)");
            return;
        }
    };
    let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&mut conn)
            .await
        {
            tracing::debug!(error = %e, "WAL checkpoint");
        }
    }
}

/// Applies the batch in one transaction; one result per job, in order.
///
/// First without any savepoint: most changesets are refused, if at all, by their first write
/// before it changed anything (a version or state precondition), and then nothing of them
/// needs undoing. Only if a changeset is refused after some of it was applied is that attempt
/// rolled back and the batch applied again with savepoints ([`apply_batch`]).
///
/// The statements run on this thread through SQLite's C API ([`RawConn`]) while sqlx's lock on
/// the write connection is held: no hop to sqlx's connection thread per statement.
async fn commit_batch(pool: &SqlitePool, kept: &mut Option<RawConn>, batch: &[Job]) -> Vec<Reply> {
    let all_fail = |e: StoreError| batch.iter().map(|_| Err(copy(&e))).collect();
    let mut conn = match pool.acquire().await {
        Ok(c) => c,
        Err(e) => return all_fail(backend(e)),
    };
    let mut handle = match conn.lock_handle().await {
        Ok(h) => h,
        Err(e) => return all_fail(backend(e)),
    };
    let db = handle.as_raw_handle();
    // The statements kept from earlier batches belong to this connection, unless the pool
    // replaced it (then they went with the old one).
    if kept.as_ref().is_some_and(|r| r.db() != db)
        && let Some(old) = kept.take()
    {
        old.forget();
    }
    // SAFETY: statements run only while the handle is locked (sqlx runs nothing on it), and
    // they are all finalized before the connection can be closed (`run` does on its way out,
    // the write pool never closes an idle connection by itself).
    let raw = kept.get_or_insert_with(|| unsafe { RawConn::new(db) });
    let results = match apply_batch(raw, batch, false).await {
        Some(results) => results,
        // With savepoints every refusal can be undone alone: there is no `None`.
        None => apply_batch(raw, batch, true).await.unwrap_or_else(|| {
            all_fail(StoreError::Backend(
                "group commit: batch could not be applied".into(),
            ))
        }),
    };
    drop(handle);
    results
}

/// One attempt at the batch in one transaction (see [`try_batch`]), rolled back unless it
/// committed.
async fn apply_batch(raw: &mut RawConn, batch: &[Job], savepoints: bool) -> Option<Vec<Reply>> {
    let mut committed = false;
    let r = try_batch(
        &mut Conn::Raw(raw),
        Dialect::Sqlite,
        batch,
        savepoints,
        &mut committed,
    )
    .await;
    if raw.in_transaction()
        && let Err(e) = raw.execute("ROLLBACK", &[])
    {
        let e = backend(e);
        return Some(batch.iter().map(|_| Err(copy(&e))).collect());
    }
    r
}
