//! Group commit for SQLite: several changesets in one durable transaction.
//!
//! SQLite has one writer and `synchronous=FULL` costs one fsync per transaction, so a
//! transaction per changeset caps throughput at the disk's fsync rate whatever the number of
//! callers. Here every [`Store::commit`](pedm_core::store::Store::commit) on a [`SqliteStore`]
//! queues its changeset for a single committer (a thread of its own), which takes whatever is
//! queued when its previous transaction finishes (natural batching: no timer, no added delay; a
//! lone caller is committed at once) up to [`MAX_BATCH`], and applies the batch in one
//! `BEGIN IMMEDIATE` … `COMMIT`:
//!
//! * a changeset whose precondition fails ([`StoreError::Conflict`],
//!   [`StoreError::AlreadyExists`], [`StoreError::NotFound`]) is rolled back alone and gets its
//!   error while the others commit. Most are refused by their first write before it changed
//!   anything, which needs no undoing; if one is refused after part of it was applied, the
//!   attempt is rolled back and the batch applied again with a `SAVEPOINT` per changeset
//!   (`ROLLBACK TO` undoes just that one);
//! * the audit chain stays one chain: the head is read once per batch, each successful
//!   changeset's events are chained onto its predecessor's, a refused changeset's events are
//!   never chained, and all of them are inserted (and the head row updated) in the same
//!   transaction;
//! * any other error (the database failed, stored data unreadable) rolls back the whole
//!   transaction and every member of the batch gets that error;
//! * a caller's `commit` returns only after the `COMMIT` holding its changeset returned, i.e.
//!   after it is durable: durability is what it was with a transaction per changeset.
//!
//! The committer runs the statements itself through SQLite's C API ([`super::raw`]) while it
//! holds sqlx's lock on the write connection, instead of handing each to sqlx's connection
//! thread (two thread wake-ups per statement, which were most of the cost of a batch).
//!
//! Changesets are applied in the order they were queued. The result for each caller is exactly
//! what a transaction of its own would have given at that point in the order.
//!
//! [`SqliteStore`]: crate::SqliteStore

use super::raw::RawConn;
use crate::db::Conn;
use crate::sql::{apply_writes, backend, chain_events, insert_events, read_head, write_head};
use pedm_core::audit::AuditEvent;
use pedm_core::store::{Changeset, StoreError, Write};
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{Connection, SqlitePool};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
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
    queue: mpsc::Sender<Msg>,
    counters: Arc<Counters>,
}

enum Msg {
    Commit(Job),
    /// Commit what came before, finalize the kept statements (so the connection can be
    /// closed), answer and stop.
    Close(oneshot::Sender<()>),
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
    ) -> Result<Self, StoreError> {
        let (queue, rx) = mpsc::channel(QUEUE);
        let counters = Arc::new(Counters::default());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| StoreError::Backend(format!("starting the SQLite committer: {e}")))?;
        // Ends with the runtime, when `run` returns.
        runtime.spawn(checkpoints(options));
        let c = counters.clone();
        std::thread::Builder::new()
            .name("pedm-sqlite-commit".into())
            .spawn(move || runtime.block_on(run(write, rx, c)))
            .map_err(|e| StoreError::Backend(format!("starting the SQLite committer: {e}")))?;
        Ok(GroupCommitter { queue, counters })
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
            .send(Msg::Commit(Job { changes, reply }))
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// Lets the changesets queued so far commit, then stops the committer, which first
    /// releases everything it holds on the write connection: call before closing the pool.
    pub(crate) async fn close(&self) {
        let (ack, done) = oneshot::channel();
        if self.queue.send(Msg::Close(ack)).await.is_ok() {
            let _ = done.await;
        }
    }
}

async fn run(pool: SqlitePool, mut rx: mpsc::Receiver<Msg>, counters: Arc<Counters>) {
    // Statements prepared on the write connection, kept from batch to batch.
    let mut raw: Option<RawConn> = None;
    let mut msgs = Vec::with_capacity(MAX_BATCH);
    let mut closing = None;
    // Waits for at least one changeset, then takes all that are queued (up to MAX_BATCH).
    while closing.is_none() && rx.recv_many(&mut msgs, MAX_BATCH).await > 0 {
        let mut batch = Vec::with_capacity(msgs.len());
        for m in msgs.drain(..) {
            match m {
                Msg::Commit(job) => batch.push(job),
                Msg::Close(ack) => closing = Some(ack),
            }
        }
        if batch.is_empty() {
            continue;
        }
        counters.transactions.fetch_add(1, Ordering::Relaxed);
        counters
            .changesets
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        let results = commit_batch(&pool, &mut raw, &batch).await;
        for (job, result) in batch.into_iter().zip(results) {
            // The caller may have gone away (cancelled); its changeset is committed regardless.
            let _ = job.reply.send(result);
        }
    }
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
    if let Some(ack) = closing {
        let _ = ack.send(());
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

/// Whether `w` changes rows in at most one statement, and is refused (if at all) either
/// before that statement or by that statement matching nothing or failing (SQLite undoes a
/// failed statement by itself): a refusal of it alone leaves nothing applied. Writes not listed
/// here are taken to need undoing.
fn one_statement(w: &Write) -> bool {
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
}

/// Whether a refusal part-way through `writes` could leave some of them applied, so the
/// changeset needs a savepoint of its own to be rolled back alone: unless only the first write
/// can be refused and it is [`one_statement`].
fn needs_savepoint(writes: &[Write]) -> bool {
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
    let r = try_batch(raw, batch, savepoints).await;
    if raw.in_transaction()
        && let Err(e) = raw.execute("ROLLBACK", &[])
    {
        let e = backend(e);
        return Some(batch.iter().map(|_| Err(copy(&e))).collect());
    }
    r
}

/// One attempt at the batch in one transaction; one result per job, in order, or `None` if,
/// without `savepoints`, a changeset was refused after part of it was applied. Returns with the
/// transaction open unless it committed.
///
/// Statements are what a batch costs, so: the chain head is read once and written once per
/// batch, the events of all
/// changesets are inserted together at the end (many rows per statement; the events of a
/// refused changeset are never chained, and an insert can only fail as a backend error, which
/// fails the batch anyway), and with `savepoints` a changeset gets one only if a refusal could
/// leave part of it applied ([`needs_savepoint`]). A savepoint is released by the next one's
/// `RELEASE …; SAVEPOINT …` or by the `COMMIT`; a changeset without its own
/// savepoint may run inside the previous one, which is never rolled back to after its
/// changeset succeeded.
async fn try_batch(raw: &mut RawConn, batch: &[Job], savepoints: bool) -> Option<Vec<Reply>> {
    let all_fail = |e: StoreError, n: usize| Some((0..n).map(|_| Err(copy(&e))).collect());
    let n = batch.len();
    if let Err(e) = raw.execute("BEGIN IMMEDIATE", &[]) {
        return all_fail(backend(e), n);
    }
    let mut c = Conn::Raw(raw);
    // The events of the batch, chained; each successful changeset owns a run of them.
    let mut chained: Vec<AuditEvent> = vec![];
    let mut head: Option<(i64, [u8; 32])> = None;
    let mut outcomes: Vec<Result<usize, StoreError>> = Vec::with_capacity(n);
    let mut savepoint_open = false;
    for job in batch {
        let changes = &job.changes;
        // A lone changeset needs no savepoint: its refusal rolls back the transaction.
        let savepoint = savepoints && n > 1 && needs_savepoint(&changes.writes);
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
        let mut refused = None;
        for (i, w) in changes.writes.iter().enumerate() {
            match apply_writes(&mut c, std::slice::from_ref(w)).await {
                Ok(()) => {}
                Err(e) if precondition(&e) => {
                    refused = Some((i, e));
                    break;
                }
                // Dropping `tx` rolls the whole batch back.
                Err(e) => return all_fail(e, n),
            }
        }
        match refused {
            None => {
                let count = changes.events.len();
                let mut event_seq = None;
                if count > 0 {
                    let (seq, prev) = match head {
                        Some(h) => h,
                        None => match read_head(&mut c).await {
                            Ok(h) => h,
                            Err(e) => return all_fail(e, n),
                        },
                    };
                    match chain_events(seq, prev, changes.events.clone()) {
                        Ok(evs) => chained.extend(evs),
                        Err(e) => return all_fail(e, n),
                    }
                    head = chained.last().map(|e| (e.seq, e.hash));
                    event_seq = chained.last().map(|e| e.seq);
                }
                let at = chained
                    .last()
                    .filter(|_| count > 0)
                    .map_or_else(jiff::Timestamp::now, |e| e.at);
                if let Err(e) = crate::outbox::insert(&mut c, &changes.notices, event_seq, at).await
                {
                    return all_fail(e, n);
                }
                outcomes.push(Ok(count));
            }
            Some((i, e)) => {
                if savepoint {
                    if let Err(e) = c.execute("ROLLBACK TO changeset", vec![]).await {
                        return all_fail(backend(e), n);
                    }
                } else if !savepoints && n > 1 && (i > 0 || !one_statement(&changes.writes[i])) {
                    // Part of it may be applied and there is no savepoint to undo just that.
                    return None;
                }
                outcomes.push(Err(e));
            }
        }
    }
    if outcomes.iter().all(Result::is_err) {
        // Nothing to keep (every changeset was refused); don't pay for a commit (the caller
        // rolls back).
        return Some(outcomes.into_iter().map(|o| o.map(|_| vec![])).collect());
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
    if let Err(e) = c.execute("COMMIT", vec![]).await {
        return all_fail(backend(e), n);
    }
    let mut events = chained.into_iter();
    Some(
        outcomes
            .into_iter()
            .map(|o| o.map(|count| events.by_ref().take(count).collect()))
            .collect(),
    )
}
