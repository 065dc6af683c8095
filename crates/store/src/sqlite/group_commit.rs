//! Group commit for SQLite: several changesets in one durable transaction.
//!
//! SQLite has one writer and `synchronous=FULL` costs one fsync per transaction, so a
//! transaction per changeset caps throughput at the disk's fsync rate whatever the number of
//! callers. Here every [`Store::commit`](pedm_core::store::Store::commit) on a [`SqliteStore`]
//! queues its changeset for a single committer task, which takes whatever is queued when its
//! previous transaction finishes (natural batching: no timer, no added delay; a lone caller is
//! committed at once) up to [`MAX_BATCH`], and applies the batch in one `BEGIN IMMEDIATE` …
//! `COMMIT`:
//!
//! * each changeset runs inside its own `SAVEPOINT`: a precondition that fails
//!   ([`StoreError::Conflict`], [`StoreError::AlreadyExists`], [`StoreError::NotFound`]) rolls
//!   back that changeset alone (`ROLLBACK TO`), which gets its error while the others commit;
//! * the audit chain stays one chain: the head is read once per batch, each successful
//!   changeset's events are chained onto its predecessor's, a refused changeset's events are
//!   never chained, and all of them are inserted (and the head row updated) in the same
//!   transaction;
//! * any other error (the database failed, stored data unreadable) rolls back the whole
//!   transaction and every member of the batch gets that error;
//! * a caller's `commit` returns only after the `COMMIT` holding its changeset returned, i.e.
//!   after it is durable: durability is what it was with a transaction per changeset.
//!
//! Changesets are applied in the order they were queued. The result for each caller is exactly
//! what a transaction of its own would have given at that point in the order.
//!
//! [`SqliteStore`]: crate::SqliteStore

use crate::db::Conn;
use crate::sql::{apply_writes, backend, chain_events, insert_events, read_head, write_head};
use pedm_core::audit::AuditEvent;
use pedm_core::store::{Changeset, StoreError, Write};
use sqlx::SqlitePool;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::{mpsc, oneshot};

/// Most changesets in one transaction: bounds the work a failure throws away and the time the
/// write lock is held.
pub(crate) const MAX_BATCH: usize = 256;
/// Changesets waiting for the committer; callers beyond this wait to queue (back-pressure).
const QUEUE: usize = 4 * MAX_BATCH;

type Reply = Result<Vec<AuditEvent>, StoreError>;

struct Job {
    changes: Changeset,
    reply: oneshot::Sender<Reply>,
}

/// The handle callers commit through; the committer task ends when every handle is dropped.
pub(crate) struct GroupCommitter {
    queue: mpsc::Sender<Job>,
    counters: Arc<Counters>,
}

#[derive(Default)]
struct Counters {
    transactions: AtomicU64,
    changesets: AtomicU64,
}

/// What the committer has done so far (for tests and benchmarks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupCommitStats {
    /// Batches taken (each one transaction).
    pub transactions: u64,
    /// Changesets taken, in all batches.
    pub changesets: u64,
    /// Changesets waiting to be taken.
    pub queued: usize,
}

impl GroupCommitter {
    /// Starts the committer task on the current tokio runtime, writing through `write` (the
    /// store's one-connection write pool).
    pub(crate) fn start(write: SqlitePool) -> Self {
        let (queue, rx) = mpsc::channel(QUEUE);
        let counters = Arc::new(Counters::default());
        tokio::spawn(run(write, rx, counters.clone()));
        GroupCommitter { queue, counters }
    }

    pub(crate) fn stats(&self) -> GroupCommitStats {
        GroupCommitStats {
            transactions: self.counters.transactions.load(Ordering::Relaxed),
            changesets: self.counters.changesets.load(Ordering::Relaxed),
            queued: self.queue.max_capacity() - self.queue.capacity(),
        }
    }

    /// Queues `changes` and waits until the transaction holding them is durable (or failed).
    pub(crate) async fn commit(&self, changes: Changeset) -> Reply {
        let stopped = || StoreError::Backend("the SQLite committer has stopped".into());
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Job { changes, reply })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

async fn run(pool: SqlitePool, mut rx: mpsc::Receiver<Job>, counters: Arc<Counters>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    // Waits for at least one changeset, then takes all that are queued (up to MAX_BATCH).
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        counters.transactions.fetch_add(1, Ordering::Relaxed);
        counters
            .changesets
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        let results = commit_batch(&pool, &mut batch).await;
        for (job, result) in batch.drain(..).zip(results) {
            // The caller may have gone away (cancelled); its changeset is committed regardless.
            let _ = job.reply.send(result);
        }
    }
}

/// Whether `e` is a refused precondition of one changeset (rolled back alone) rather than a
/// failure of the transaction.
fn precondition(e: &StoreError) -> bool {
    matches!(
        e,
        StoreError::Conflict(_) | StoreError::AlreadyExists(_) | StoreError::NotFound(_)
    )
}

/// The same error again, for every member of a failed batch.
fn copy(e: &StoreError) -> StoreError {
    match e {
        StoreError::Conflict(m) => StoreError::Conflict(m.clone()),
        StoreError::AlreadyExists(m) => StoreError::AlreadyExists(m.clone()),
        StoreError::NotFound(m) => StoreError::NotFound(m.clone()),
        StoreError::Backend(m) => StoreError::Backend(m.clone()),
        StoreError::Corrupt(m) => StoreError::Corrupt(m.clone()),
    }
}

/// Whether a refusal part-way through `writes` could leave some of them applied, so the
/// changeset needs a savepoint of its own to be rolled back alone. Not if only the first write
/// can be refused and it changes rows in at most one statement (SQLite undoes a failed
/// statement by itself, and a refusal found by a read or by an UPDATE that matched nothing
/// changed nothing). Writes not listed here get a savepoint.
fn needs_savepoint(writes: &[Write]) -> bool {
    let one_statement = |w: &Write| {
        matches!(
            w,
            Write::InsertUser(_)
                | Write::UpdateUser(_)
                | Write::AddGroupMember { .. }
                | Write::RemoveGroupMember { .. }
                | Write::InsertToken(_)
                | Write::RevokeToken { .. }
                | Write::InsertTarget(_)
                | Write::InsertRole(_)
                | Write::InsertRequest(_)
                | Write::UpdateRequest(_)
                | Write::InsertApproval(_)
                | Write::InsertGrant(_)
                | Write::InsertPolicyVersion(_)
                | Write::EndGrant { .. }
                | Write::DeleteGrantSecret { .. }
        )
    };
    let never_refused = |w: &Write| {
        matches!(
            w,
            Write::DeleteGrantSecret {
                must_exist: false,
                ..
            }
        )
    };
    match writes {
        [] => false,
        [first, rest @ ..] => !(one_statement(first) && rest.iter().all(never_refused)),
    }
}

/// Applies the batch in one transaction; one result per job, in order.
///
/// Round trips to the connection are what a batch costs (each is a hop to sqlx's connection
/// thread), so: the chain head is read once and written once per batch, the events of all
/// changesets are inserted together at the end (many rows per statement; the events of a
/// refused changeset are never chained, and an insert can only fail as a backend error, which
/// fails the batch anyway), and a changeset gets a savepoint only if a refusal could leave part
/// of it applied ([`needs_savepoint`]). The savepoint is released by the next one's
/// `RELEASE …; SAVEPOINT …` (one round trip) or by the `COMMIT`; a changeset without its own
/// savepoint may run inside the previous one, which is never rolled back to after its
/// changeset succeeded.
async fn commit_batch(pool: &SqlitePool, batch: &mut [Job]) -> Vec<Reply> {
    let all_fail = |e: StoreError, n: usize| (0..n).map(|_| Err(copy(&e))).collect();
    let n = batch.len();
    let mut tx = match pool.begin_with("BEGIN IMMEDIATE").await {
        Ok(tx) => tx,
        Err(e) => return all_fail(backend(e), n),
    };
    let mut c = Conn::Sqlite(&mut tx);
    // The events of the batch, chained; each successful changeset owns a run of them.
    let mut chained: Vec<AuditEvent> = vec![];
    let mut head: Option<(i64, [u8; 32])> = None;
    let mut outcomes: Vec<Result<usize, StoreError>> = Vec::with_capacity(n);
    let mut savepoint_open = false;
    for job in batch.iter_mut() {
        let changes = std::mem::take(&mut job.changes);
        // A lone changeset needs no savepoint: its refusal rolls back the transaction.
        let savepoint = n > 1 && needs_savepoint(&changes.writes);
        if savepoint {
            let sql = if savepoint_open {
                "RELEASE changeset; SAVEPOINT changeset"
            } else {
                "SAVEPOINT changeset"
            };
            if let Err(e) = c.execute(sql, vec![]).await {
                return all_fail(backend(e), n);
            }
            savepoint_open = true;
        }
        match apply_writes(&mut c, &changes.writes).await {
            Ok(()) => {
                let count = changes.events.len();
                if count > 0 {
                    let (seq, prev) = match head {
                        Some(h) => h,
                        None => match read_head(&mut c).await {
                            Ok(h) => h,
                            Err(e) => return all_fail(e, n),
                        },
                    };
                    match chain_events(seq, prev, changes.events) {
                        Ok(evs) => chained.extend(evs),
                        Err(e) => return all_fail(e, n),
                    }
                    head = chained.last().map(|e| (e.seq, e.hash));
                }
                outcomes.push(Ok(count));
            }
            Err(e) if precondition(&e) => {
                if savepoint && let Err(e) = c.execute("ROLLBACK TO changeset", vec![]).await {
                    return all_fail(backend(e), n);
                }
                outcomes.push(Err(e));
            }
            // Dropping `tx` rolls the whole batch back.
            Err(e) => return all_fail(e, n),
        }
    }
    if outcomes.iter().all(Result::is_err) {
        // Nothing to keep (every changeset was refused); don't pay for a commit.
        return outcomes.into_iter().map(|o| o.map(|_| vec![])).collect();
    }
    if let Some(last) = chained.last() {
        let (seq, hash) = (last.seq, last.hash);
        if let Err(e) = insert_events(&mut c, &chained).await {
            return all_fail(e, n);
        }
        if let Err(e) = write_head(&mut c, seq, &hash).await {
            return all_fail(e, n);
        }
    }
    if let Err(e) = tx.commit().await {
        return all_fail(backend(e), n);
    }
    let mut events = chained.into_iter();
    outcomes
        .into_iter()
        .map(|o| o.map(|count| events.by_ref().take(count).collect()))
        .collect()
}
