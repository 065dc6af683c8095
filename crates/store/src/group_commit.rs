//! Group commit: several changesets in one durable transaction, for both engines.
//!
//! A transaction per changeset caps throughput at the database's commit rate (an fsync each)
//! whatever the number of callers, and on PostgreSQL every changeset with audit events also
//! waits its turn for the chain head's row lock. Here every
//! [`Store::commit`](pedm_core::store::Store::commit) queues its changeset for one committer per
//! store, which takes whatever is queued when its previous transaction finishes (natural
//! batching: no timer, no added delay; a lone caller is committed at once) up to
//! [`MAX_BATCH`], and applies the batch in one transaction:
//!
//! * a changeset whose precondition fails ([`StoreError::Conflict`],
//!   [`StoreError::AlreadyExists`], [`StoreError::NotFound`]) is rolled back alone and gets its
//!   error while the others commit. The batch is first applied without savepoints; if a
//!   refusal could have left part of a changeset applied (on PostgreSQL: any refusal, since a
//!   failed statement aborts the whole transaction there), that attempt is rolled back and the
//!   batch applied again with a `SAVEPOINT` per changeset (`ROLLBACK TO` undoes just that one);
//! * the audit chain stays one chain: the head is read once per batch (on PostgreSQL with
//!   `FOR UPDATE` before anything else, which orders the batches of several instances and
//!   keeps their locks in one order), each successful changeset's
//!   events are chained onto its predecessor's, a refused changeset's events are never chained,
//!   and all of them are inserted (and the head row updated) in the same transaction;
//! * any other error (the database failed, stored data unreadable) rolls back the whole
//!   transaction and every member of the batch gets that error;
//! * a caller's `commit` returns only after the `COMMIT` holding its changeset returned, i.e.
//!   after it is durable: durability is what it was with a transaction per changeset.
//!
//! Changesets are applied in the order they were queued. The result for each caller is exactly
//! what a transaction of its own would have given at that point in the order.
//!
//! The engines differ in how the committer reaches the database: SQLite's runs statements
//! through the C API on a thread of its own (`crate::sqlite::group_commit`), PostgreSQL's is a
//! task with a pooled connection (`crate::postgres::group_commit`).

use crate::chain::{chain_events, insert_events, insert_rows, read_head, write_head};
use crate::commit_queue::{Counters, Job, MAX_BATCH, Msg, Reply};
use crate::db::Conn;
use crate::engine::{backend, violation};
use crate::writes::{
    INSERT_GRANTS, INSERT_GRANTS_TAIL, INSERT_REQUESTS, apply_writes, grant_args, request_args,
};
use pedm_core::audit::AuditEvent;
use pedm_core::model::{Grant, Request};
use pedm_core::store::{StoreError, Write};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::sync::mpsc;

/// How a committer applies a batch to its database.
pub(crate) trait Batcher {
    /// One result per job, in order, after the transaction holding them ended.
    async fn commit_batch(&mut self, batch: &[Job]) -> Vec<Reply>;
    /// Releases what the committer holds on its connection (before the pool closes).
    async fn close(&mut self) {}
}

/// The committer: waits for at least one changeset, then takes all that are queued (up to
/// [`MAX_BATCH`]) and has `batcher` commit them.
pub(crate) async fn run(
    mut batcher: impl Batcher,
    mut rx: mpsc::Receiver<Msg>,
    counters: Arc<Counters>,
) {
    let mut msgs = Vec::with_capacity(MAX_BATCH);
    let mut closing = None;
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
        let results = batcher.commit_batch(&batch).await;
        for (job, result) in batch.into_iter().zip(results) {
            // The caller may have gone away (cancelled); its changeset is committed regardless.
            let _ = job.reply.send(result);
        }
    }
    batcher.close().await;
    if let Some(ack) = closing {
        let _ = ack.send(());
    }
}

/// Which database a batch is applied to: how a transaction starts, and whether a failed
/// statement spoils the whole transaction (PostgreSQL) or only itself (SQLite).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

/// Whether `e` is a refused precondition of one changeset (rolled back alone) rather than a
/// failure of the transaction.
pub(crate) fn precondition(e: &StoreError) -> bool {
    matches!(
        e,
        StoreError::Conflict(_) | StoreError::AlreadyExists(_) | StoreError::NotFound(_)
    )
}

/// The same error again, for every member of a failed batch.
pub(crate) fn copy(e: &StoreError) -> StoreError {
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

/// One attempt at the batch in one transaction (`committed` says whether it ended with a
/// successful `COMMIT`); one result per job, in order, or `None` if,
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
pub(crate) async fn try_batch(
    c: &mut Conn<'_>,
    dialect: Dialect,
    batch: &[Job],
    savepoints: bool,
    committed: &mut bool,
) -> Option<Vec<Reply>> {
    *committed = false;
    let all_fail = |e: StoreError, n: usize| Some((0..n).map(|_| Err(copy(&e))).collect());
    let n = batch.len();
    // IMMEDIATE takes SQLite's write lock up front (a deferred transaction could fail to
    // upgrade later); PostgreSQL's row locks are taken by the statements themselves.
    let begin = match dialect {
        Dialect::Sqlite => "BEGIN IMMEDIATE",
        Dialect::Postgres => "BEGIN",
    };
    if let Err(e) = c.execute(begin, vec![]).await {
        return all_fail(backend(e), n);
    }
    // The events of the batch, chained; each successful changeset owns a run of them.
    let mut chained: Vec<AuditEvent> = vec![];
    let mut head: Option<(i64, [u8; 32])> = None;
    if dialect == Dialect::Postgres {
        // The chain head's row lock first, before any row a changeset writes: a batch that
        // took it after some writes could wait for a row another instance's batch holds
        // while that batch waits for the head (a deadlock). Head first, every batch takes
        // its locks in one order.
        match read_head(c).await {
            Ok(h) => head = Some(h),
            Err(e) => return all_fail(e, n),
        }
    }
    let mut outcomes: Vec<Result<usize, StoreError>> = Vec::with_capacity(n);
    let mut savepoint_open = false;
    // On PostgreSQL, where a statement is a round trip, a first attempt inserts the batch's
    // requests and grants together, a few rows per statement ([`Held`]): each is
    // held until a write of another kind, or the end of the batch, could need it in the table.
    // Any refusal among them sends the batch to the savepoint attempt, which writes one by one.
    let defer = dialect == Dialect::Postgres && !savepoints;
    let mut held = Held::default();
    for job in batch {
        let changes = &job.changes;
        // A lone changeset needs no savepoint: its refusal rolls back the transaction. On
        // PostgreSQL a refusal may come from a failed statement, which spoils the transaction
        // unless rolled back to a savepoint: every changeset gets one.
        let savepoint = savepoints
            && n > 1
            && (dialect == Dialect::Postgres || needs_savepoint(&changes.writes));
        if savepoint {
            // PostgreSQL prepares each statement: one at a time there.
            let sql: &[&str] = match (savepoint_open, dialect) {
                (false, _) => &["SAVEPOINT changeset"],
                (true, Dialect::Sqlite) => &["RELEASE changeset; SAVEPOINT changeset"],
                (true, Dialect::Postgres) => &["RELEASE changeset", "SAVEPOINT changeset"],
            };
            for sql in sql {
                if let Err(e) = c.execute(sql, vec![]).await {
                    return all_fail(backend(e), n);
                }
            }
            savepoint_open = true;
        }
        let mut refused = None;
        for (i, w) in changes.writes.iter().enumerate() {
            if defer && held.hold(w) {
                continue;
            }
            match held.insert(c).await {
                Ok(true) => {}
                Ok(false) => return None,
                Err(e) => return all_fail(e, n),
            }
            match apply_writes(c, std::slice::from_ref(w)).await {
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
                        None => match read_head(c).await {
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
                if let Err(e) = crate::outbox::insert(c, &changes.notices, event_seq, at).await {
                    return all_fail(e, n);
                }
                outcomes.push(Ok(count));
            }
            Some((i, e)) => {
                if savepoint {
                    if let Err(e) = c.execute("ROLLBACK TO changeset", vec![]).await {
                        return all_fail(backend(e), n);
                    }
                } else if !savepoints
                    && n > 1
                    && (dialect == Dialect::Postgres || i > 0 || !one_statement(&changes.writes[i]))
                {
                    // Part of it may be applied and there is no savepoint to undo just that.
                    return None;
                }
                outcomes.push(Err(e));
            }
        }
    }
    match held.insert(c).await {
        Ok(true) => {}
        Ok(false) => return None,
        Err(e) => return all_fail(e, n),
    }
    if outcomes.iter().all(Result::is_err) {
        // Nothing to keep (every changeset was refused); don't pay for a commit (the caller
        // rolls back).
        return Some(outcomes.into_iter().map(|o| o.map(|_| vec![])).collect());
    }
    if let Some(last) = chained.last() {
        let (seq, hash) = (last.seq, last.hash);
        if let Err(e) = insert_events(c, &chained).await {
            return all_fail(e, n);
        }
        if let Err(e) = write_head(c, seq, &hash).await {
            return all_fail(e, n);
        }
    }
    if let Err(e) = c.execute("COMMIT", vec![]).await {
        return all_fail(backend(e), n);
    }
    *committed = true;
    let mut events = chained.into_iter();
    Some(
        outcomes
            .into_iter()
            .map(|o| o.map(|count| events.by_ref().take(count).collect()))
            .collect(),
    )
}

/// Requests and grants a first attempt on PostgreSQL holds back to insert together.
#[derive(Default)]
struct Held<'a> {
    requests: Vec<&'a Request>,
    grants: Vec<&'a Grant>,
}

impl<'a> Held<'a> {
    /// Holds `w` if it is a request or grant insert.
    fn hold(&mut self, w: &'a Write) -> bool {
        match w {
            Write::InsertRequest(r) => self.requests.push(r),
            Write::InsertGrant(g) => self.grants.push(g),
            _ => return false,
        }
        true
    }

    /// Inserts the held requests, then the held grants (which may refer to them), several
    /// rows per statement, and holds nothing after. `Ok(false)` when one was refused (a taken
    /// id, a second grant for a request, a missing request): which one is for the savepoint
    /// attempt to find.
    async fn insert(&mut self, c: &mut Conn<'_>) -> Result<bool, StoreError> {
        let refused = |e: sqlx::Error| match violation(&e) {
            Some(_) => Ok(false),
            None => Err(backend(e)),
        };
        if !self.requests.is_empty() {
            let rows = self
                .requests
                .drain(..)
                .map(request_args)
                .collect::<Result<Vec<_>, _>>()?;
            if let Err(e) = insert_rows(c, INSERT_REQUESTS, "", rows).await {
                return refused(e);
            }
        }
        if !self.grants.is_empty() {
            let rows: Vec<_> = self.grants.drain(..).map(grant_args).collect();
            let expected = rows.len() as u64;
            match insert_rows(c, INSERT_GRANTS, INSERT_GRANTS_TAIL, rows).await {
                // A taken grant id inserted nothing.
                Ok(n) if n < expected => return Ok(false),
                Ok(_) => {}
                Err(e) => return refused(e),
            }
        }
        Ok(true)
    }
}
