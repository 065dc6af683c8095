//! Delivers the outbox: one task per channel (each webhook, each Slack app, mail, ticket
//! comments) reads the durable notices after its cursor, hands each to the channel and moves
//! the cursor past it once it is delivered or given up on (never when shutdown cut it off).
//! A crash between a delivery and the cursor's move repeats that delivery, with the same
//! delivery id: at least once, deduplicated by receivers. Of several instances the holder of
//! a channel's lease delivers; the others wait for the lease to run out.

use pedm_core::notice::{Notice, Observer, OutboxItem};
use pedm_core::service::ControlPlane;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// How long a lease lasts; renewed when half of it is left.
const LEASE_SECS: i64 = 30;
/// How often an idle holder looks for entries other instances wrote, and how often a
/// non-holder tries the lease.
const POLL: Duration = Duration::from_secs(1);
/// Entries read at a time.
const BATCH: i64 = 100;
/// Entries older than this are deleted (whether or not a channel got to them).
const KEEP: jiff::SignedDuration = jiff::SignedDuration::from_hours(7 * 24);

/// What a channel did with one notice.
pub enum Outcome {
    /// Delivered, or not for this channel.
    Done,
    /// Tried with the channel's retries and given up on (counted and logged by the channel).
    GaveUp,
    /// Cut off by shutdown: delivered again after the restart.
    Interrupted,
}

#[async_trait::async_trait]
pub trait Channel: Send + Sync + 'static {
    /// Unique among channels and stable across restarts: its cursor and lease live under it.
    fn name(&self) -> String;
    /// Whether the channel does anything with `notice` (others are stepped over quickly).
    fn wants(&self, notice: &Notice) -> bool;
    /// Delivers `notice`, retrying as the channel does; returns when that is settled.
    /// `delivery_id` is the same every time this entry is delivered.
    async fn deliver(
        &self,
        item: &OutboxItem,
        notice: &Notice,
        delivery_id: uuid::Uuid,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Outcome;
}

/// How far behind each channel is, for `pedm notify status`.
#[derive(Default)]
pub struct Backlog(Mutex<BTreeMap<String, u64>>);

impl Backlog {
    pub fn of(&self, channel: &str) -> Option<u64> {
        self.0.lock().ok()?.get(channel).copied()
    }
    fn set(&self, channel: &str, n: u64) {
        if let Ok(mut m) = self.0.lock() {
            m.insert(channel.to_string(), n);
        }
        metrics::gauge!("pedm_outbox_backlog", "channel" => channel.to_string()).set(n as f64);
    }
}

/// Wakes the channels when a durable notice was committed here (others' commits are found
/// by polling). Each channel holds a receiver (`subscribe`); a wake-up is never lost.
pub struct Wake(pub watch::Sender<u64>);

impl Observer for Wake {
    fn notice(&self, notice: &Notice) {
        if notice.durable() {
            self.0.send_modify(|n| *n = n.wrapping_add(1));
        }
    }
}

/// The id every delivery of outbox entry `seq` carries (`X-Pedm-Delivery`): derived from
/// the audit log's origin, so unique per installation and the same on every retry.
pub fn delivery_id(origin: &str, seq: i64) -> uuid::Uuid {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("pedm outbox\n{origin}\n{seq}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

/// This instance's name as a lease holder: kept in the data directory, so a restarted
/// pedmd takes its own leases back at once instead of waiting for them to run out.
pub fn holder_id(data_dir: &std::path::Path) -> std::io::Result<String> {
    let file = data_dir.join("instance-id");
    match std::fs::read_to_string(&file) {
        Ok(id) if uuid::Uuid::parse_str(id.trim()).is_ok() => Ok(id.trim().to_string()),
        Ok(_) | Err(_) => {
            let id = uuid::Uuid::new_v4().to_string();
            std::fs::write(&file, format!("{id}\n"))?;
            Ok(id)
        }
    }
}

/// Runs `channel` until shutdown, as lease holder `holder`.
pub async fn run(
    cp: Arc<ControlPlane>,
    channel: Arc<dyn Channel>,
    holder: String,
    mut wake: watch::Receiver<u64>,
    origin: String,
    backlog: Arc<Backlog>,
    mut shutdown: watch::Receiver<bool>,
) {
    let name = channel.name();
    // When the lease we hold runs out (as far as we know); None: not ours.
    let mut held_until: Option<tokio::time::Instant> = None;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let now = tokio::time::Instant::now();
        let renew = held_until.is_none_or(|u| u.saturating_duration_since(now) < lease() / 2);
        if renew {
            match cp.outbox_lease(&name, &holder, LEASE_SECS, None).await {
                Ok(true) => held_until = Some(now + lease()),
                Ok(false) => {
                    held_until = None;
                    if pause(POLL * 5, &mut shutdown).await {
                        return;
                    }
                    continue;
                }
                Err(e) => {
                    held_until = None;
                    tracing::error!(channel = %name, error = %e, "outbox: could not take the lease");
                    if pause(POLL * 5, &mut shutdown).await {
                        return;
                    }
                    continue;
                }
            }
        }
        let batch = async {
            let cursor = cp.outbox_cursor(&name).await?;
            let head = cp.outbox_head().await?;
            backlog.set(&name, head.saturating_sub(cursor).max(0) as u64);
            cp.outbox_after(cursor, BATCH).await
        }
        .await;
        let items = match batch {
            Ok(items) => items,
            Err(e) => {
                tracing::error!(channel = %name, error = %e, "outbox: could not read");
                if idle(&mut wake, POLL, &mut shutdown).await {
                    return;
                }
                continue;
            }
        };
        if items.is_empty() {
            if idle(&mut wake, POLL, &mut shutdown).await {
                return;
            }
            continue;
        }
        for item in items {
            let outcome = match &item.notice {
                None => {
                    metrics::counter!("pedm_outbox_unreadable_total", "channel" => name.clone())
                        .increment(1);
                    Outcome::GaveUp
                }
                Some(n) if !channel.wants(n) => Outcome::Done,
                Some(n) => {
                    let id = delivery_id(&origin, item.seq);
                    channel.deliver(&item, n, id, &mut shutdown).await
                }
            };
            let label = match outcome {
                Outcome::Interrupted => return,
                Outcome::Done => "done",
                Outcome::GaveUp => "gave_up",
            };
            metrics::counter!("pedm_outbox_handled_total", "channel" => name.clone(),
                "outcome" => label)
            .increment(1);
            // The cursor moves only with our lease still ours: a holder that stalled past
            // its lease leaves the cursor to whoever took over.
            match cp
                .outbox_lease(&name, &holder, LEASE_SECS, Some(item.seq))
                .await
            {
                Ok(true) => held_until = Some(tokio::time::Instant::now() + lease()),
                Ok(false) => {
                    held_until = None;
                    break;
                }
                Err(e) => {
                    tracing::error!(channel = %name, error = %e, "outbox: could not move the cursor");
                    held_until = None;
                    break;
                }
            }
        }
    }
}

fn lease() -> Duration {
    Duration::from_secs(LEASE_SECS as u64)
}

/// Waits `max`; true on shutdown.
async fn pause(max: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(max) => false,
        _ = shutdown.changed() => true,
    }
}

/// Waits for a wake-up or `max`; true on shutdown.
async fn idle(
    wake: &mut watch::Receiver<u64>,
    max: Duration,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    let sleep = tokio::time::sleep(max);
    tokio::pin!(sleep);
    tokio::select! {
        r = wake.changed() => {
            if r.is_err() {
                // No more wake-ups: poll only.
                sleep.await;
            }
            false
        }
        _ = &mut sleep => false,
        _ = shutdown.changed() => true,
    }
}

/// Deletes old outbox entries every hour, on every instance (idempotent).
pub async fn purge(cp: Arc<ControlPlane>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Err(e) = cp.outbox_purge(jiff::Timestamp::now() - KEEP).await {
                    tracing::error!(error = %e, "outbox: could not delete old entries");
                }
            }
            _ = shutdown.changed() => return,
        }
    }
}
