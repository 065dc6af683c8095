//! The background sender: a bounded queue and a delivery task per sink.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use uuid::Uuid;

use crate::config::{ConfigError, NotifierOptions, RetryPolicy, SinkConfig, validate_sinks};
use crate::notification::Notification;
use crate::payload;
use crate::signature::{
    DELIVERY_HEADER, KIND_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, signature_header,
};

const EVENTS_CAPACITY: usize = 1024;
const USER_AGENT: &str = concat!("pedm-notify/", env!("CARGO_PKG_VERSION"));

/// Sends notifications to webhook sinks in the background.
///
/// Cheap to clone; all clones feed the same queues. [`notify`](Self::notify)
/// never blocks and never fails: each matching sink gets the notification in
/// its bounded queue, or it is dropped (logged at warn and counted) when that
/// queue is full. One task per sink delivers its queue in order, retrying
/// transient failures with exponential backoff and jitter; a notification
/// that is being retried holds back the ones behind it on that sink only.
#[derive(Clone)]
pub struct Notifier {
    inner: Arc<Inner>,
}

struct Inner {
    sinks: Vec<Slot>,
    closed: AtomicBool,
    shutdown: watch::Sender<Option<Instant>>,
    done: watch::Receiver<bool>,
    events: broadcast::Sender<DeliveryEvent>,
}

struct Slot {
    config: Arc<SinkConfig>,
    tx: mpsc::Sender<Arc<Notification>>,
    counters: Arc<Counters>,
    delivery: Arc<Delivery>,
}

#[derive(Default)]
struct Counters {
    enqueued: AtomicU64,
    delivered: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    retries: AtomicU64,
}

/// Counts for one sink since start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkStats {
    /// Sink name.
    pub name: String,
    /// Waiting in the queue now.
    pub queued: usize,
    /// Accepted into the queue.
    pub enqueued: u64,
    /// Delivered (2xx).
    pub delivered: u64,
    /// Given up on: refused (non-retryable status), attempts exhausted, or
    /// cut off by the shutdown deadline.
    pub failed: u64,
    /// Never queued: queue full or notifier shut down.
    pub dropped: u64,
    /// Attempts beyond the first.
    pub retries: u64,
}

/// What happened to a notification on one sink; see [`Notifier::subscribe`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryEvent {
    /// One HTTP attempt finished.
    Attempt {
        /// Sink name.
        sink: String,
        /// Notification id.
        id: Uuid,
        /// 1-based attempt number.
        attempt: u32,
        /// Its result.
        outcome: AttemptOutcome,
    },
    /// The receiver answered 2xx.
    Delivered {
        /// Sink name.
        sink: String,
        /// Notification id.
        id: Uuid,
        /// Attempts it took.
        attempts: u32,
    },
    /// Given up.
    Failed {
        /// Sink name.
        sink: String,
        /// Notification id.
        id: Uuid,
        /// Attempts made.
        attempts: u32,
        /// Why.
        reason: FailReason,
    },
    /// Not queued.
    Dropped {
        /// Sink name.
        sink: String,
        /// Notification id.
        id: Uuid,
        /// Why.
        reason: DropReason,
    },
}

/// Result of one HTTP attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// The receiver answered with this status.
    Status(u16),
    /// No answer within the sink's timeout.
    Timeout,
    /// Could not connect.
    Connect,
    /// Another transport error (message without the URL).
    Error(String),
}

impl AttemptOutcome {
    /// 2xx.
    pub fn is_success(&self) -> bool {
        matches!(self, AttemptOutcome::Status(s) if (200..300).contains(s))
    }

    /// Worth trying again: transport errors, 408, 429 and 5xx.
    pub fn is_retryable(&self) -> bool {
        match self {
            AttemptOutcome::Status(s) => *s == 408 || *s == 429 || (500..600).contains(s),
            _ => true,
        }
    }
}

/// Why a notification was given up on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailReason {
    /// The receiver refused it with a status that is not retried (4xx, 3xx).
    Refused(u16),
    /// Every attempt failed retryably.
    AttemptsExhausted,
    /// The shutdown deadline passed first.
    Shutdown,
}

impl FailReason {
    fn label(self) -> &'static str {
        match self {
            FailReason::Refused(_) => "refused",
            FailReason::AttemptsExhausted => "attempts_exhausted",
            FailReason::Shutdown => "shutdown",
        }
    }
}

/// Why a notification was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The sink's queue was full.
    QueueFull,
    /// The notifier is shutting down.
    ShutDown,
}

impl DropReason {
    fn label(self) -> &'static str {
        match self {
            DropReason::QueueFull => "queue_full",
            DropReason::ShutDown => "shutdown",
        }
    }
}

impl Notifier {
    /// Validates the sinks and options, then spawns one delivery task per
    /// sink (call inside a Tokio runtime). The handle finishes when every
    /// sink task has finished: after [`shutdown`](Self::shutdown), or once all
    /// clones of the notifier are dropped and the queues are delivered.
    pub fn start(
        sinks: Vec<SinkConfig>,
        options: NotifierOptions,
    ) -> Result<(Notifier, JoinHandle<()>), ConfigError> {
        validate_sinks(&sinks)?;
        options.validate()?;
        let client = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ConfigError::options(format!("HTTP client: {e}")))?;

        let (shutdown_tx, shutdown_rx) = watch::channel(None);
        let (done_tx, done_rx) = watch::channel(false);
        let (events, _) = broadcast::channel(EVENTS_CAPACITY);
        let mut tasks = JoinSet::new();
        let mut slots = Vec::with_capacity(sinks.len());
        for config in sinks {
            if config.secret.is_none() {
                tracing::info!(sink = %config.name, "notify webhook sends unsigned requests (no secret)");
            }
            let config = Arc::new(config);
            let (tx, rx) = mpsc::channel(options.queue_capacity);
            let counters = Arc::new(Counters::default());
            let client = match &config.ca_file {
                None => client.clone(),
                Some(ca) => crate::tls::with_ca(
                    reqwest::Client::builder()
                        .user_agent(USER_AGENT)
                        .redirect(reqwest::redirect::Policy::none()),
                    Some(ca),
                )
                .and_then(|b| b.build().map_err(|e| format!("HTTP client: {e}")))
                .map_err(|e| ConfigError::new(&config.name, e))?,
            };
            let delivery = Arc::new(Delivery {
                config: config.clone(),
                client,
                retry: options.retry,
                shutdown: shutdown_rx.clone(),
                events: events.clone(),
                counters: counters.clone(),
            });
            tasks.spawn(
                Worker {
                    d: delivery.clone(),
                    rx,
                }
                .run(),
            );
            slots.push(Slot {
                config,
                tx,
                counters,
                delivery,
            });
        }
        let supervisor = tokio::spawn(async move {
            while let Some(r) = tasks.join_next().await {
                if let Err(e) = r {
                    tracing::error!(error = %e, "notify webhook task ended abnormally");
                }
            }
            let _ = done_tx.send(true);
        });
        let inner = Inner {
            sinks: slots,
            closed: AtomicBool::new(false),
            shutdown: shutdown_tx,
            done: done_rx,
            events,
        };
        Ok((
            Notifier {
                inner: Arc::new(inner),
            },
            supervisor,
        ))
    }

    /// Queues `n` for every sink whose kind and severity filters accept it.
    /// Returns at once; never waits for the network or for queue space.
    pub fn notify(&self, n: Notification) {
        let n = Arc::new(n);
        let closed = self.inner.closed.load(Ordering::Acquire);
        for slot in &self.inner.sinks {
            if !slot.config.accepts(&n.kind, n.severity) {
                continue;
            }
            let result = if closed {
                Err(DropReason::ShutDown)
            } else {
                self.try_enqueue(slot, &n)
            };
            match result {
                Ok(()) => {
                    slot.counters.enqueued.fetch_add(1, Ordering::Relaxed);
                }
                Err(reason) => {
                    slot.counters.dropped.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!(
                        "pedm_notifications_dropped_total",
                        "sink" => slot.config.name.clone(),
                        "reason" => reason.label()
                    )
                    .increment(1);
                    tracing::warn!(
                        sink = %slot.config.name,
                        id = %n.id,
                        kind = %n.kind,
                        reason = reason.label(),
                        "notification dropped"
                    );
                    let _ = self.inner.events.send(DeliveryEvent::Dropped {
                        sink: slot.config.name.clone(),
                        id: n.id,
                        reason,
                    });
                }
            }
        }
    }

    fn try_enqueue(&self, slot: &Slot, n: &Arc<Notification>) -> Result<(), DropReason> {
        slot.tx.try_send(n.clone()).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => DropReason::QueueFull,
            mpsc::error::TrySendError::Closed(_) => DropReason::ShutDown,
        })
    }

    /// Delivers `n` to the sink named `sink` now, with its retries, bypassing its queue;
    /// returns once it is delivered or given up (`None`: no such sink, or its filters do not
    /// accept `n`). For callers that keep their own durable queue (pedmd's outbox) and must
    /// know the outcome before moving on. `Err(FailReason::Shutdown)`: cut off by the shutdown
    /// deadline, so not given up for good.
    pub async fn deliver_to(&self, sink: &str, n: &Notification) -> Option<Result<(), FailReason>> {
        let slot = self.inner.sinks.iter().find(|s| s.config.name == sink)?;
        if !slot.config.accepts(&n.kind, n.severity) {
            return None;
        }
        slot.counters.enqueued.fetch_add(1, Ordering::Relaxed);
        Some(match slot.delivery.deliver(n).await {
            Final::Delivered => Ok(()),
            Final::Failed(r) => Err(r),
        })
    }

    /// Delivery events (attempts, deliveries, failures, drops) from now on.
    /// A slow subscriber loses the oldest events, never slows delivery.
    pub fn subscribe(&self) -> broadcast::Receiver<DeliveryEvent> {
        self.inner.events.subscribe()
    }

    /// Counts per sink, in configuration order.
    pub fn stats(&self) -> Vec<SinkStats> {
        self.inner
            .sinks
            .iter()
            .map(|s| SinkStats {
                name: s.config.name.clone(),
                queued: s.tx.max_capacity() - s.tx.capacity(),
                enqueued: s.counters.enqueued.load(Ordering::Relaxed),
                delivered: s.counters.delivered.load(Ordering::Relaxed),
                failed: s.counters.failed.load(Ordering::Relaxed),
                dropped: s.counters.dropped.load(Ordering::Relaxed),
                retries: s.counters.retries.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// Names of the configured sinks.
    pub fn sink_names(&self) -> impl Iterator<Item = &str> {
        self.inner.sinks.iter().map(|s| s.config.name.as_str())
    }

    /// Stops accepting notifications and delivers what is queued (with
    /// retries) until `within` has passed; whatever is still undelivered then
    /// is given up (counted as failed, reason `shutdown`). Returns once every
    /// sink task has stopped, with the final counts. Later calls do not move
    /// the deadline.
    pub async fn shutdown(&self, within: Duration) -> Vec<SinkStats> {
        self.inner.closed.store(true, Ordering::Release);
        let deadline = Instant::now() + within;
        self.inner.shutdown.send_if_modified(|d| {
            if d.is_none() {
                *d = Some(deadline);
                true
            } else {
                false
            }
        });
        let mut done = self.inner.done.clone();
        let _ = done.wait_for(|d| *d).await;
        self.stats()
    }
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field(
                "sinks",
                &self
                    .inner
                    .sinks
                    .iter()
                    .map(|s| &s.config)
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// Resolves once shutdown has been requested.
async fn shutdown_requested(mut rx: watch::Receiver<Option<Instant>>) {
    loop {
        if rx.borrow_and_update().is_some() {
            return;
        }
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Resolves once the shutdown deadline has passed (never before shutdown).
async fn deadline_passed(mut rx: watch::Receiver<Option<Instant>>) {
    loop {
        let deadline = *rx.borrow_and_update();
        if let Some(d) = deadline {
            tokio::time::sleep_until(d).await;
            return;
        }
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// A sink's delivery: its client, retries and counts (its queue's worker and
/// [`Notifier::deliver_to`] share it).
struct Delivery {
    config: Arc<SinkConfig>,
    client: reqwest::Client,
    retry: RetryPolicy,
    shutdown: watch::Receiver<Option<Instant>>,
    events: broadcast::Sender<DeliveryEvent>,
    counters: Arc<Counters>,
}

struct Worker {
    d: Arc<Delivery>,
    rx: mpsc::Receiver<Arc<Notification>>,
}

enum Final {
    Delivered,
    Failed(FailReason),
}

impl Worker {
    async fn run(mut self) {
        loop {
            let next = tokio::select! {
                biased;
                () = shutdown_requested(self.d.shutdown.clone()) => None,
                n = self.rx.recv() => n,
            };
            match next {
                Some(n) => {
                    self.d.deliver(&n).await;
                }
                None => break,
            }
        }
        // Shutdown (or every sender gone): refuse new items, drain the rest.
        self.rx.close();
        while let Some(n) = self.rx.recv().await {
            self.d.deliver(&n).await;
        }
    }
}

impl Delivery {
    async fn deliver(&self, n: &Notification) -> Final {
        let tried = AtomicU32::new(0);
        let result = tokio::select! {
            biased;
            () = deadline_passed(self.shutdown.clone()) => Final::Failed(FailReason::Shutdown),
            r = self.attempts(n, &tried) => r,
        };
        let attempts = tried.load(Ordering::Relaxed);
        let sink = self.config.name.clone();
        match &result {
            Final::Delivered => {
                self.counters.delivered.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("pedm_notifications_delivered_total", "sink" => sink.clone())
                    .increment(1);
                tracing::debug!(sink = %sink, id = %n.id, kind = %n.kind, attempts, "notification delivered");
                let _ = self.events.send(DeliveryEvent::Delivered {
                    sink,
                    id: n.id,
                    attempts,
                });
            }
            Final::Failed(reason) => {
                let reason = *reason;
                self.counters.failed.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(
                    "pedm_notifications_failed_total",
                    "sink" => sink.clone(),
                    "reason" => reason.label()
                )
                .increment(1);
                tracing::warn!(
                    sink = %sink,
                    id = %n.id,
                    kind = %n.kind,
                    attempts,
                    reason = ?reason,
                    "notification not delivered"
                );
                let _ = self.events.send(DeliveryEvent::Failed {
                    sink,
                    id: n.id,
                    attempts,
                    reason,
                });
            }
        }
        result
    }

    async fn attempts(&self, n: &Notification, tried: &AtomicU32) -> Final {
        let body = payload::render(self.config.format, n);
        let secrets: Vec<&[u8]> = [&self.config.secret, &self.config.previous_secret]
            .into_iter()
            .flatten()
            .map(|s| s.as_bytes())
            .collect();
        let mut attempt = 0;
        loop {
            attempt += 1;
            tried.store(attempt, Ordering::Relaxed);
            let (outcome, retry_after) = self.attempt(n, &body, &secrets).await;
            let _ = self.events.send(DeliveryEvent::Attempt {
                sink: self.config.name.clone(),
                id: n.id,
                attempt,
                outcome: outcome.clone(),
            });
            if outcome.is_success() {
                return Final::Delivered;
            }
            if !outcome.is_retryable() {
                let AttemptOutcome::Status(s) = outcome else {
                    unreachable!("only statuses are not retried")
                };
                return Final::Failed(FailReason::Refused(s));
            }
            if attempt >= self.retry.attempts {
                return Final::Failed(FailReason::AttemptsExhausted);
            }
            let delay = self
                .retry
                .jittered_delay(attempt)
                .max(retry_after.unwrap_or_default())
                .min(self.retry.max);
            tracing::debug!(
                sink = %self.config.name,
                id = %n.id,
                attempt,
                outcome = ?outcome,
                delay_ms = delay.as_millis() as u64,
                "notification attempt failed; retrying"
            );
            self.counters.retries.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("pedm_notification_retries_total", "sink" => self.config.name.clone()).increment(1);
            tokio::time::sleep(delay).await;
        }
    }

    async fn attempt(
        &self,
        n: &Notification,
        body: &[u8],
        secrets: &[&[u8]],
    ) -> (AttemptOutcome, Option<Duration>) {
        let mut req = self
            .client
            .post(&self.config.url)
            .timeout(self.config.timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(DELIVERY_HEADER, n.id.to_string())
            .header(KIND_HEADER, n.kind.as_str())
            .body(body.to_vec());
        if !secrets.is_empty() {
            // Fresh timestamp per attempt: a retry minutes later must still
            // pass the receiver's replay window. The delivery id stays.
            let ts = jiff::Timestamp::now().as_second();
            req = req
                .header(TIMESTAMP_HEADER, ts.to_string())
                .header(SIGNATURE_HEADER, signature_header(secrets, ts, body));
        }
        match req.send().await {
            Ok(resp) => {
                let retry_after = crate::retry_after(resp.headers());
                (AttemptOutcome::Status(resp.status().as_u16()), retry_after)
            }
            Err(e) if e.is_timeout() => (AttemptOutcome::Timeout, None),
            Err(e) if e.is_connect() => (AttemptOutcome::Connect, None),
            Err(e) => (AttemptOutcome::Error(e.without_url().to_string()), None),
        }
    }
}
