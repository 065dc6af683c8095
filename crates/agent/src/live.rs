//! Streaming a session to pedmd as it happens, for people watching it live
//! ([`pedm_api::live`]).
//!
//! The recording writer offers each event line it writes to a [`LiveTap`], which never waits:
//! the lines go into a bounded queue, and when it is full (pedmd slow or unreachable) they are
//! counted as missed and the watchers are told so. The user's terminal never waits on the
//! stream, and the recording on disk stays the record (uploaded and hash-checked when the
//! session ends). A streamer task per session sends the queue as one long request, and
//! reconnects while the session runs. Sessions that end within [`START_AFTER`] are never
//! streamed: their recording arrives about as soon.

use pedm_api::Client;
use pedm_api::live::{KEEPALIVE, LiveHeader};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, mpsc};
use uuid::Uuid;

/// Event lines a session may have waiting for the stream before it misses some.
const QUEUE: usize = 1024;
/// The most a stream carries per second; beyond it lines are missed (and counted). Nobody
/// reads a terminal faster, and a session printing hundreds of MB/s would otherwise spend as
/// much again on its stream.
const MAX_BYTES_PER_SEC: u64 = 4 << 20;
/// How long a session runs before it is streamed.
pub const START_AFTER: Duration = Duration::from_millis(200);
/// The longest wait between two attempts to (re)connect.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Where a session's recording offers its event lines.
#[derive(Debug, Clone)]
pub struct LiveTap {
    tx: mpsc::Sender<Vec<u8>>,
    missed: Arc<AtomicU64>,
    start: Instant,
    /// (second since `start`, bytes offered in it), for [`MAX_BYTES_PER_SEC`].
    rate: Arc<std::sync::Mutex<(u64, u64)>>,
}

impl LiveTap {
    /// Offers one event line (with its newline); never waits.
    pub fn offer(&self, line: &[u8]) {
        if !self.within_rate(line.len() as u64) || self.tx.try_send(line.to_vec()).is_err() {
            self.missed.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn within_rate(&self, n: u64) -> bool {
        let second = self.start.elapsed().as_secs();
        let mut r = self.rate.lock().unwrap_or_else(|e| e.into_inner());
        if r.0 != second {
            *r = (second, 0);
        }
        r.1 += n;
        r.1 <= MAX_BYTES_PER_SEC
    }

    /// A tap that does not keep the stream open (the stream ends with the recording).
    pub fn weak(&self) -> WeakLiveTap {
        WeakLiveTap {
            tx: self.tx.downgrade(),
            missed: self.missed.clone(),
            start: self.start,
            rate: self.rate.clone(),
        }
    }
}

impl pedm_cast::Tap for LiveTap {
    fn offer(&self, line: &[u8]) {
        LiveTap::offer(self, line)
    }
}

/// A [`LiveTap`] for what outlives nothing of the session: an intercepting session's exec
/// events.
#[derive(Debug, Clone)]
pub struct WeakLiveTap {
    tx: mpsc::WeakSender<Vec<u8>>,
    missed: Arc<AtomicU64>,
    start: Instant,
    rate: Arc<std::sync::Mutex<(u64, u64)>>,
}

impl WeakLiveTap {
    /// Offers an event of the stream's own (`x`: an exec in an intercepting session), timed
    /// like the recording's events; nothing once the session's stream has ended.
    pub fn offer_event(&self, code: &str, data: &serde_json::Value) {
        let Some(tx) = self.tx.upgrade() else { return };
        let t = self.start.elapsed().as_secs_f64();
        let line = format!("[{t:.6}, {}, {}]\n", serde_json::json!(code), data);
        LiveTap {
            tx,
            missed: self.missed.clone(),
            start: self.start,
            rate: self.rate.clone(),
        }
        .offer(line.as_bytes());
    }
}

/// The receiving end of a tap.
pub struct LiveFeed {
    rx: Arc<Mutex<mpsc::Receiver<Vec<u8>>>>,
    missed: Arc<AtomicU64>,
    start: Instant,
}

/// A tap and its feed, timed from now (the recording starts at the same moment).
pub fn channel() -> (LiveTap, LiveFeed) {
    let (tx, rx) = mpsc::channel(QUEUE);
    let missed = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    (
        LiveTap {
            tx,
            missed: missed.clone(),
            start,
            rate: Arc::default(),
        },
        LiveFeed {
            rx: Arc::new(Mutex::new(rx)),
            missed,
            start,
        },
    )
}

/// Streams the session until it ends (every tap dropped). `client` gives the current client
/// (its certificate may be renewed meanwhile).
pub async fn stream(id: Uuid, header: LiveHeader, feed: LiveFeed, client: impl Fn() -> Client) {
    // A short session is over before anyone could watch it.
    {
        let rx = feed.rx.lock().await;
        tokio::time::sleep(START_AFTER).await;
        if rx.is_closed() {
            return;
        }
    }
    let mut header_line = serde_json::to_vec(&header).unwrap_or_default();
    header_line.push(b'\n');
    let mut backoff = Duration::from_millis(500);
    loop {
        let lines = body(
            header_line.clone(),
            feed.rx.clone(),
            feed.missed.clone(),
            feed.start,
        );
        match client().stream_live(id, lines).await {
            Ok(()) => return,
            // Refused for good (not this host's session, malformed): no point retrying.
            Err(pedm_api::ApiError::Server {
                status, message, ..
            }) if (400..500).contains(&status) && status != 408 && status != 429 => {
                tracing::warn!(%id, status, message, "live stream refused");
                return;
            }
            Err(e) => tracing::debug!(%id, error = %e, "live stream interrupted"),
        }
        // Over while the server was away: the recording tells the rest.
        if feed.rx.lock().await.is_closed() {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// The request body: the header line, then the queued lines as they come, a marker where
/// lines were missed, and an empty line when the session is quiet for [`KEEPALIVE`].
fn body(
    header: Vec<u8>,
    rx: Arc<Mutex<mpsc::Receiver<Vec<u8>>>>,
    missed: Arc<AtomicU64>,
    start: Instant,
) -> impl futures_util::Stream<Item = Result<Vec<u8>, std::io::Error>> + Send + 'static {
    futures_util::stream::unfold(
        (Some(header), rx, missed),
        move |(header, rx, missed)| async move {
            if let Some(h) = header {
                return Some((Ok(h), (None, rx, missed)));
            }
            let next = {
                let mut r = rx.lock().await;
                tokio::time::timeout(KEEPALIVE, r.recv()).await
            };
            let item = match next {
                Err(_) => Vec::from(&b"\n"[..]),
                Ok(None) => return None,
                Ok(Some(line)) => {
                    let lost = missed.swap(0, Ordering::Relaxed);
                    if lost == 0 {
                        line
                    } else {
                        let t = start.elapsed().as_secs_f64();
                        let mut gap = format!(
                            "[{t:.6}, \"m\", \"live stream: {lost} event(s) missed here (the \
                             recording has them)\"]\n"
                        )
                        .into_bytes();
                        gap.extend_from_slice(&line);
                        gap
                    }
                }
            };
            Some((Ok(item), (None, rx, missed)))
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    #[tokio::test]
    async fn a_full_queue_never_waits_and_says_what_it_missed() {
        let (tap, feed) = channel();
        let started = Instant::now();
        for i in 0..QUEUE + 5 {
            tap.offer(format!("[0.0, \"o\", \"{i}\"]\n").as_bytes());
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "offer never waits"
        );
        assert_eq!(feed.missed.load(Ordering::Relaxed), 5);
        drop(tap);
        let lines: Vec<Vec<u8>> = body(b"H\n".to_vec(), feed.rx, feed.missed, feed.start)
            .map(|l| l.unwrap())
            .collect()
            .await;
        assert_eq!(lines[0], b"H\n");
        let first = String::from_utf8_lossy(&lines[1]);
        assert!(first.contains("5 event(s) missed"), "{first}");
        assert!(first.ends_with("[0.0, \"o\", \"0\"]\n"), "{first}");
        assert_eq!(lines.len(), 1 + QUEUE);
    }

    #[test]
    fn a_stream_carries_at_most_its_rate_and_counts_the_rest() {
        let (tap, feed) = channel();
        let line = vec![b'x'; 64 << 10];
        // 128 lines of 64 KiB in the same second: 8 MiB offered, 4 MiB carried.
        for _ in 0..128 {
            tap.offer(&line);
        }
        let missed = feed.missed.load(Ordering::Relaxed);
        assert!(
            missed > 0,
            "the queue had room: only the rate refuses ({missed})"
        );
    }
}
