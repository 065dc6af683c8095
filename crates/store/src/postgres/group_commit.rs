//! Group commit on PostgreSQL (see [`crate::group_commit`]): the committer is a task that
//! applies each batch on a connection from the store's pool. Several instances sharing the
//! database each have their own; their batches are ordered by the chain head's row lock.

use crate::commit_queue::{CommitQueue, Job, Reply};
use crate::db::Conn;
use crate::engine::backend;
use crate::group_commit::{Batcher, Dialect, copy, run, try_batch};
use pedm_core::store::StoreError;
use sqlx::PgPool;

/// How long one batch may take before the committer gives up on its connection: far beyond
/// any real batch, short enough that a cut-off database does not hold every write for the
/// minutes TCP takes to give up.
const BATCH_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// Starts the committer as a task of the current runtime, writing through `pool`.
pub(crate) fn start(pool: PgPool) -> CommitQueue {
    let (handle, rx, counters) = CommitQueue::new("PostgreSQL");
    tokio::spawn(run(PgBatcher { pool }, rx, counters));
    handle
}

struct PgBatcher {
    pool: PgPool,
}

impl Batcher for PgBatcher {
    async fn commit_batch(&mut self, batch: &[Job]) -> Vec<Reply> {
        let all_fail = |e: StoreError| batch.iter().map(|_| Err(copy(&e))).collect();
        let mut conn = match self.pool.acquire().await {
            Ok(c) => c,
            Err(e) => return all_fail(backend(e)),
        };
        let attempts = async {
            match attempt(&mut conn, batch, false).await {
                Ok(Some(results)) => Ok(results),
                // A refusal spoiled the transaction: again, a savepoint per changeset.
                Ok(None) => attempt(&mut conn, batch, true).await.map(|r| {
                    r.unwrap_or_else(|| {
                        all_fail(StoreError::Backend(
                            "group commit: batch could not be applied".into(),
                        ))
                    })
                }),
                Err(e) => Err(e),
            }
        };
        match tokio::time::timeout(BATCH_DEADLINE, attempts).await {
            Ok(Ok(results)) => results,
            Ok(Err(e)) => {
                // The connection may be left inside a transaction: not back to the pool.
                let _ = conn.close().await;
                all_fail(e)
            }
            Err(_) => {
                // No answer (a network cut, a frozen server): the socket is dropped without a
                // goodbye that could hang too, and the callers hear "unavailable", which is
                // true whether or not a COMMIT got through.
                drop(conn.detach());
                all_fail(StoreError::Backend(format!(
                    "PostgreSQL did not answer within {BATCH_DEADLINE:?}"
                )))
            }
        }
    }
}

/// One attempt in one transaction, rolled back unless it committed; `Err` when even the
/// rollback failed (the connection is unusable).
async fn attempt(
    conn: &mut sqlx::pool::PoolConnection<sqlx::Postgres>,
    batch: &[Job],
    savepoints: bool,
) -> Result<Option<Vec<Reply>>, StoreError> {
    let mut c = Conn::Pg(conn);
    let mut committed = false;
    let r = try_batch(&mut c, Dialect::Postgres, batch, savepoints, &mut committed).await;
    // Undoes the attempt (after a failed BEGIN, a no-op PostgreSQL only warns about).
    if !committed {
        c.execute("ROLLBACK", vec![]).await.map_err(backend)?;
    }
    Ok(r)
}
