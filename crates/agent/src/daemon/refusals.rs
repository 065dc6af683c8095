//! Reports of what the agent refused: each caller's first refusal in a while at once, the
//! rest counted into one report per window (a flood of refusals must not flood the disk).

use super::{Agent, REFUSAL_ARGV_BYTES};
use crate::user::TargetUser;
use jiff::Timestamp;
use pedm_api::agent::{AgentReport, ExecVerdict};
use std::sync::Arc;
use uuid::Uuid;

impl Agent {
    pub(super) fn queue_report(&self, r: &AgentReport) {
        if let Err(e) = self.outbox.add_report(r) {
            tracing::error!(error = %e, "cannot queue a report");
        }
        self.queued.notify_one();
    }

    /// A refusal: recorded at once if it is the caller's first in a while, else counted into
    /// one report per window (a flood of refusals must not flood the disk).
    pub(super) fn report_refusal(&self, uid: u32, r: AgentReport) {
        if let Some(r) = self.refusals.take(uid, r) {
            self.queue_report(&r);
        }
    }

    /// Records the refusals counted in windows that have closed.
    pub(super) async fn record_aggregated_refusals(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.refusals.window());
        loop {
            tick.tick().await;
            for r in self.refusals.closed(false) {
                tracing::warn!(user = %r.user, count = r.count.unwrap_or(0), "refusals aggregated");
                self.queue_report(&r);
            }
        }
    }

    /// A refusal report; the argv is cut to what the server records, with the hash of the
    /// whole.
    pub(super) fn refusal(
        caller: &TargetUser,
        argv: &[String],
        task: Option<String>,
        sha: Option<String>,
        reason: &str,
    ) -> AgentReport {
        AgentReport {
            task,
            binary_sha256: sha,
            ..report(
                &caller.name,
                argv,
                REFUSAL_ARGV_BYTES,
                ExecVerdict::Denied,
                reason,
            )
        }
    }
}

/// A report of `user`'s `argv` (cut to `max_argv` bytes, with the hash of the whole) with
/// nothing else set.
pub(super) fn report(
    user: &str,
    argv: &[String],
    max_argv: usize,
    verdict: ExecVerdict,
    reason: &str,
) -> AgentReport {
    let (argv, whole) = pedm_api::agent::cut_argv(argv, max_argv);
    AgentReport {
        id: Uuid::now_v7(),
        at: Timestamp::now(),
        user: user.to_string(),
        verdict,
        grant: None,
        session: None,
        task: None,
        delegation: None,
        argv,
        binary_sha256: None,
        reason: Some(reason.to_string()),
        argv_sha256: whole.as_ref().map(|(h, _)| h.clone()),
        argv_bytes: whole.map(|(_, n)| n),
        count: None,
        last_at: None,
        exec: None,
        file: None,
        via: None,
    }
}
