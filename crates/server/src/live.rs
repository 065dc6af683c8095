//! Live sessions: what agents stream to this instance as it happens, fanned out to watchers.
//!
//! Kept in memory only: the recording an agent uploads when the session ends is the record.
//! Each session keeps its last [`BACKLOG_BYTES`] of event lines, so a watcher who joins
//! mid-session sees the recent screen first. Watchers read from a bounded broadcast: one who
//! reads too slowly misses events (and is told how many), never slows the stream down.

use axum::body::Bytes;
use pedm_api::live::{LiveHeader, LiveSession};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;
use uuid::Uuid;

/// Event lines kept per session for watchers who join later.
pub const BACKLOG_BYTES: usize = 256 * 1024;
/// Event lines a watcher may fall behind by before it misses some.
const WATCHER_QUEUE: usize = 1024;

/// What a watcher receives.
#[derive(Debug, Clone)]
pub enum LiveEvent {
    /// One asciicast event line (a JSON array, no newline).
    Line(Bytes),
    /// The stream ended: the session is over, or its agent went away.
    End(String),
}

/// One session streaming here.
pub struct Live {
    pub id: Uuid,
    pub host: String,
    pub header: LiveHeader,
    /// Identifies the agent connection feeding it (a reconnect replaces the feed).
    feed: Uuid,
    backlog: Mutex<(VecDeque<Bytes>, usize)>,
    tx: broadcast::Sender<LiveEvent>,
    streamed: AtomicU64,
    watchers: AtomicU32,
}

impl Live {
    pub fn info(&self) -> LiveSession {
        LiveSession {
            id: self.id,
            host: self.host.clone(),
            grant_id: self.header.grant_id,
            delegation_id: self.header.delegation_id,
            user: self.header.user.clone(),
            run_as: self.header.run_as.clone(),
            argv: self.header.argv.clone(),
            started_at: self.header.started_at,
            width: self.header.width,
            height: self.header.height,
            streamed_bytes: self.streamed.load(Ordering::Relaxed),
            watchers: self.watchers.load(Ordering::Relaxed),
        }
    }

    /// Publishes one event line to the backlog and the watchers.
    pub fn push(&self, line: Bytes) {
        self.streamed
            .fetch_add(line.len() as u64, Ordering::Relaxed);
        // Sent under the lock: a watcher joining now gets the line in its backlog or from
        // the channel, never both, never neither.
        let mut b = self.backlog.lock().unwrap_or_else(|e| e.into_inner());
        b.1 += line.len();
        b.0.push_back(line.clone());
        while b.1 > BACKLOG_BYTES {
            match b.0.pop_front() {
                Some(old) => b.1 -= old.len(),
                None => break,
            }
        }
        // No watcher is not an error.
        let _ = self.tx.send(LiveEvent::Line(line));
    }

    /// A new watcher: the backlog so far and the events after it.
    pub fn watch(self: &Arc<Self>) -> Watcher {
        let b = self.backlog.lock().unwrap_or_else(|e| e.into_inner());
        let rx = self.tx.subscribe();
        let backlog = b.0.iter().cloned().collect();
        drop(b);
        self.watchers.fetch_add(1, Ordering::Relaxed);
        Watcher {
            live: self.clone(),
            backlog,
            rx,
        }
    }
}

/// One person watching: drops its count when it goes.
pub struct Watcher {
    pub live: Arc<Live>,
    pub backlog: Vec<Bytes>,
    pub rx: broadcast::Receiver<LiveEvent>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.live.watchers.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The live sessions of this instance.
#[derive(Default)]
pub struct LiveHub {
    sessions: Mutex<HashMap<Uuid, Arc<Live>>>,
}

impl LiveHub {
    /// Starts (or, for the same host reconnecting, takes over) a session's stream. `Err`
    /// when another host streams under this id.
    pub fn begin(&self, id: Uuid, host: &str, header: LiveHeader) -> Result<Arc<Live>, String> {
        let mut map = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = map.get(&id) {
            if old.host != host {
                return Err(format!("session {id} is streamed by another host"));
            }
            // A reconnect: watchers of the old feed are told it moved on.
            let _ = old.tx.send(LiveEvent::End("the agent reconnected".into()));
        }
        let (tx, _) = broadcast::channel(WATCHER_QUEUE);
        let live = Arc::new(Live {
            id,
            host: host.to_string(),
            header,
            feed: Uuid::now_v7(),
            backlog: Mutex::new((VecDeque::new(), 0)),
            tx,
            streamed: AtomicU64::new(0),
            watchers: AtomicU32::new(0),
        });
        map.insert(id, live.clone());
        Ok(live)
    }

    /// Ends a feed (if it is still the session's current one) and tells its watchers why.
    pub fn end(&self, live: &Live, reason: &str) {
        let mut map = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        if map.get(&live.id).is_some_and(|l| l.feed == live.feed) {
            map.remove(&live.id);
        }
        let _ = live.tx.send(LiveEvent::End(reason.to_string()));
    }

    pub fn get(&self, id: Uuid) -> Option<Arc<Live>> {
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned()
    }

    /// Every live session, oldest first.
    pub fn list(&self) -> Vec<LiveSession> {
        let mut v: Vec<LiveSession> = self
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|l| l.info())
            .collect();
        v.sort_by_key(|s| (s.started_at, s.id));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> LiveHeader {
        LiveHeader {
            grant_id: None,
            delegation_id: None,
            user: "alice".into(),
            run_as: "root".into(),
            argv: vec!["/bin/sh".into()],
            started_at: jiff::Timestamp::now(),
            width: 80,
            height: 24,
        }
    }

    #[test]
    fn a_late_watcher_gets_the_backlog_then_the_rest_and_a_slow_one_loses_only_its_own() {
        let hub = LiveHub::default();
        let id = Uuid::now_v7();
        let live = hub.begin(id, "web1", header()).unwrap();
        assert!(hub.begin(id, "web2", header()).is_err(), "another host");
        live.push(Bytes::from_static(b"[0.1, \"o\", \"a\"]"));
        let mut w = live.watch();
        assert_eq!(w.backlog.len(), 1);
        assert_eq!(hub.list()[0].watchers, 1);
        live.push(Bytes::from_static(b"[0.2, \"o\", \"b\"]"));
        assert!(matches!(w.rx.try_recv(), Ok(LiveEvent::Line(l)) if l.ends_with(b"\"b\"]")));
        // A watcher who never reads falls behind and is told, the stream goes on.
        let mut slow = live.watch();
        for _ in 0..WATCHER_QUEUE + 10 {
            live.push(Bytes::from_static(b"[0.3, \"o\", \"c\"]"));
        }
        assert!(matches!(
            slow.rx.try_recv(),
            Err(broadcast::error::TryRecvError::Lagged(n)) if n >= 10
        ));
        // The backlog keeps only its budget.
        let kept: usize = live.watch().backlog.iter().map(Bytes::len).sum();
        assert!(kept <= BACKLOG_BYTES);
        hub.end(&live, "exit 0");
        assert!(hub.get(id).is_none());
        drop((w, slow));
        assert_eq!(live.info().watchers, 0);
    }
}
