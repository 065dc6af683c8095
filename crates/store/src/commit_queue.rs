//! The handle changesets are committed through (group commit, see `crate::group_commit`):
//! a bounded queue to the committer, each caller answered when its transaction ended.

use pedm_core::audit::AuditEvent;
use pedm_core::store::{Changeset, StoreError};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::{mpsc, oneshot};

/// Most changesets in one transaction: bounds the work a failure throws away and the time the
/// write lock is held.
pub(crate) const MAX_BATCH: usize = 256;
/// Changesets waiting for the committer; callers beyond this wait to queue (back-pressure).
const QUEUE: usize = 4 * MAX_BATCH;

pub(crate) type Reply = Result<Vec<AuditEvent>, StoreError>;

pub(crate) struct Job {
    pub(crate) changes: Changeset,
    pub(crate) reply: oneshot::Sender<Reply>,
}

/// The handle callers commit through; the committer ends when every handle is dropped.
pub(crate) struct CommitQueue {
    queue: mpsc::Sender<Msg>,
    counters: Arc<Counters>,
    engine: &'static str,
}

pub(crate) enum Msg {
    Commit(Job),
    /// Commit what came before, release what the committer holds, answer and stop.
    Close(oneshot::Sender<()>),
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) transactions: AtomicU64,
    pub(crate) changesets: AtomicU64,
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

impl CommitQueue {
    /// A handle, and the receiving end for [`run`] (`engine` names it in errors).
    pub(crate) fn new(engine: &'static str) -> (Self, mpsc::Receiver<Msg>, Arc<Counters>) {
        let (queue, rx) = mpsc::channel(QUEUE);
        let counters = Arc::new(Counters::default());
        (
            CommitQueue {
                queue,
                counters: counters.clone(),
                engine,
            },
            rx,
            counters,
        )
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
        let stopped = || StoreError::Backend(format!("the {} committer has stopped", self.engine));
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Msg::Commit(Job { changes, reply }))
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// Lets the changesets queued so far commit, then stops the committer, which first
    /// releases everything it holds: call before closing the pool.
    pub(crate) async fn close(&self) {
        let (ack, done) = oneshot::channel();
        if self.queue.send(Msg::Close(ack)).await.is_ok() {
            let _ = done.await;
        }
    }
}
