//! Ends grants and stale requests at their deadlines; runs provisioning jobs when due and
//! reconciliation on its interval (the loops around the control plane's passes).
//!
//! Sleeps until the earliest deadline in the store (not a fixed poll), and is woken early when
//! the control plane creates something with a deadline that may be earlier. On start it first
//! ends everything that came due while the server was down. Each end is committed with a
//! precondition, so several schedulers (several servers on one database) still end each thing
//! exactly once.

use crate::service::ControlPlane;
use jiff::Timestamp;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, watch};

/// Upper bound on one sleep, so deadlines created by another server instance sharing the
/// database are picked up even though that instance cannot wake this one.
const MAX_SLEEP: Duration = Duration::from_secs(30);
/// Back-off after a storage error.
const ERROR_BACKOFF: Duration = Duration::from_secs(1);
/// Least time between the start of a pass and the next one when woken by a notification.
/// Under load every created request notifies (its deadline may be the earliest), and a pass
/// costs reads; this bounds that to a few passes per second per worker. A deadline is missed by
/// at most this much only if it was created less than this before it came due.
const NOTIFIED_INTERVAL: Duration = Duration::from_millis(20);

pub async fn run_expiry(cp: Arc<ControlPlane>, shutdown: watch::Receiver<bool>) {
    let wake = cp.deadline_changed();
    run_until_deadlines("expiry", wake, shutdown, move || {
        let cp = cp.clone();
        async move {
            cp.expiry_pass_begins();
            let pass = cp.expire_due().await?;
            if pass.grants_started > 0 {
                tracing::info!(grants = pass.grants_started, "scheduled grants started");
                metrics::counter!("pedm_grants_started_scheduled_total")
                    .increment(pass.grants_started);
            }
            if pass.grants_expired + pass.requests_expired > 0 {
                tracing::info!(
                    grants = pass.grants_expired,
                    requests = pass.requests_expired,
                    "expired"
                );
                metrics::counter!("pedm_grants_expired_total")
                    .increment(pass.grants_expired as u64);
                metrics::counter!("pedm_requests_expired_total")
                    .increment(pass.requests_expired as u64);
            }
            let (next, now) = (cp.next_deadline().await?, cp.now());
            // Where the loop below will sleep until, at the latest.
            let latest = now.checked_add(MAX_SLEEP).unwrap_or(Timestamp::MAX);
            cp.expiry_planned(next.map_or(latest, |at| at.min(latest)));
            Ok((next, now))
        }
    })
    .await
}

/// Reminds and escalates requests nobody answers, each step once across every instance (see
/// `ControlPlane::follow_up_due`).
pub async fn run_follow_ups(cp: Arc<ControlPlane>, shutdown: watch::Receiver<bool>) {
    let wake = cp.follow_ups_changed();
    run_until_deadlines("follow-ups", wake, shutdown, move || {
        let cp = cp.clone();
        async move {
            // Expiry warnings ride on this loop: due within its 30-second cap at the latest.
            cp.warn_expiring().await?;
            // Access reviews' reminders, escalations and due dates too.
            let requests = cp.follow_up_due().await?;
            let reviews = cp.review_due().await?;
            cp.announce_overdue_policies().await?;
            let next = match (requests, reviews) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            Ok((next, cp.now()))
        }
    })
    .await
}

/// Proves the policy properties again after every change to users, groups, targets or
/// roles (a burst of changes is checked once, when it settles).
pub async fn run_property_watch(cp: Arc<ControlPlane>, mut shutdown: watch::Receiver<bool>) {
    let changed = cp.directory_changed();
    let mut reported = std::collections::BTreeSet::new();
    loop {
        tokio::select! {
            _ = changed.notified() => {}
            _ = shutdown.changed() => return,
        }
        // Let a burst (a SCIM sync, a script adding members) settle: one proof for all of it.
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(300)) => {}
            _ = shutdown.changed() => return,
        }
        match cp.recheck_properties(&mut reported).await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(broken = n, "a directory change broke policy properties"),
            Err(e) => tracing::error!(error = %e, "policy properties could not be proved again"),
        }
    }
}

/// The loop shared by deadline-driven workers: run `pass` (which does what is due and
/// returns the next deadline and the current time), then sleep until that deadline (capped
/// at [`MAX_SLEEP`]), until `wake` is notified (then at least until [`NOTIFIED_INTERVAL`] after
/// the pass began), or until shutdown.
pub(crate) async fn run_until_deadlines<F, Fut>(
    name: &str,
    wake: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
    mut pass: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(Option<Timestamp>, Timestamp), crate::Error>>,
{
    loop {
        // Register interest before the pass reads the deadline, so a wake-up between the read
        // and the sleep is not lost.
        let notified = wake.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();

        let started = tokio::time::Instant::now();
        let sleep_for = match pass().await {
            Ok((Some(at), now)) => until(at, now).min(MAX_SLEEP),
            Ok((None, _)) => MAX_SLEEP,
            Err(e) => {
                tracing::error!(error = %e, worker = name, "pass failed");
                ERROR_BACKOFF
            }
        };
        let wake_at = tokio::time::Instant::now() + sleep_for;
        tokio::select! {
            _ = tokio::time::sleep_until(wake_at) => {}
            _ = &mut notified => {
                // Something may now be due earlier than `wake_at`: look again, but not sooner
                // than NOTIFIED_INTERVAL after this pass began.
                let at = wake_at.min(started + NOTIFIED_INTERVAL);
                tokio::select! {
                    _ = tokio::time::sleep_until(at) => {}
                    _ = shutdown.changed() => return,
                }
            }
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
    }
}

fn until(at: Timestamp, now: Timestamp) -> Duration {
    let d = at.duration_since(now);
    if d.is_negative() {
        Duration::ZERO
    } else {
        // Round up so we wake at or after the deadline, never just before it.
        Duration::from_micros(d.as_micros().max(0) as u64 + 1)
    }
}

/// Runs due provisioning jobs until shutdown. Sleeps until the earliest `next_attempt_at`
/// (at most 30 s, for jobs created by other instances), woken early when a job is created.
/// Jobs are rows: whatever was due while the server was down runs at start.
pub async fn run_provisioning(cp: Arc<ControlPlane>, shutdown: watch::Receiver<bool>) {
    let wake = cp.jobs_changed();
    run_until_deadlines("provisioning", wake, shutdown, move || {
        let cp = cp.clone();
        async move {
            cp.run_due_jobs().await?;
            Ok((cp.store().next_job_at().await?, cp.now()))
        }
    })
    .await
}

/// Runs [`ControlPlane::reconcile`] every `interval` until shutdown. Findings reported are
/// remembered, across restarts too ([`ControlPlane::known_drift`] reads them back from the
/// audit log): standing drift is reported once, and again only after it went away.
pub async fn run_reconcile(
    cp: Arc<ControlPlane>,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    // What was reported before a restart stays reported (the audit log remembers it).
    let mut reported = cp.known_drift().await.unwrap_or_else(|e| {
        tracing::error!(error = %e, "cannot read earlier drift findings; reporting all again");
        Default::default()
    });
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        match cp.reconcile(&mut reported).await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(findings = n, "privilege drift found"),
            Err(e) => tracing::error!(error = %e, "reconciliation failed"),
        }
    }
}
