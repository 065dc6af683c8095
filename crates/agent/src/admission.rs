//! What keeps any local account from exhausting the agent: a cap on connections per uid
//! (the socket is open to every local user by design, since the kernel says who asks), and
//! refusals aggregated per uid so that a flood of bad requests costs one durable record per
//! window instead of one each.

use jiff::Timestamp;
use pedm_api::agent::AgentReport;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Open connections per uid.
pub struct Connections {
    open: Mutex<HashMap<u32, usize>>,
    max: usize,
}

/// One admitted connection; the count goes down when it is dropped.
pub struct Admitted {
    owner: Arc<Connections>,
    uid: u32,
}

impl Connections {
    pub fn new(max: usize) -> Arc<Connections> {
        Arc::new(Connections {
            open: Mutex::new(HashMap::new()),
            max,
        })
    }

    /// Admits one more connection of `uid`, or `None` when it already has `max` open.
    pub fn admit(self: &Arc<Self>, uid: u32) -> Option<Admitted> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(uid).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(Admitted {
            owner: self.clone(),
            uid,
        })
    }

    pub fn max(&self) -> usize {
        self.max
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut open = self.owner.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.uid) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.uid);
            }
        }
    }
}

/// Refusals per uid: the first [`INDIVIDUAL`] of a window are recorded at once, one by one;
/// the rest of the window are counted and recorded as one report when it closes.
pub struct Refusals {
    window: Duration,
    open: Mutex<HashMap<u32, Window>>,
}

/// Refusals of one uid per window recorded one by one (a person's mistakes keep their
/// detail; a flood does not).
pub const INDIVIDUAL: u32 = 10;

struct Window {
    started: Instant,
    /// Refusals recorded one by one so far.
    individual: u32,
    /// Refusals after the first one of the window.
    count: u32,
    first_at: Option<Timestamp>,
    last: Option<AgentReport>,
}

impl Refusals {
    pub fn new(window: Duration) -> Refusals {
        Refusals {
            window,
            open: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a refusal of `uid`: `Some` to record it now (one of the first of its window),
    /// `None` when it was counted into the window.
    pub fn take(&self, uid: u32, report: AgentReport) -> Option<AgentReport> {
        let now = Instant::now();
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        match open.get_mut(&uid) {
            Some(w) if now.duration_since(w.started) < self.window && w.individual < INDIVIDUAL => {
                w.individual += 1;
                Some(report)
            }
            Some(w) if now.duration_since(w.started) < self.window => {
                w.count += 1;
                w.first_at.get_or_insert(report.at);
                w.last = Some(report);
                None
            }
            _ => {
                open.insert(
                    uid,
                    Window {
                        started: now,
                        individual: 1,
                        count: 0,
                        first_at: None,
                        last: None,
                    },
                );
                Some(report)
            }
        }
    }

    /// The aggregated reports of the windows that have closed (all of them with `all`).
    pub fn closed(&self, all: bool) -> Vec<AgentReport> {
        let now = Instant::now();
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = vec![];
        open.retain(|_, w| {
            if !all && now.duration_since(w.started) < self.window {
                return true;
            }
            if let Some(mut last) = w.last.take() {
                last.last_at = Some(last.at);
                last.at = w.first_at.unwrap_or(last.at);
                last.count = Some(w.count);
                out.push(last);
            }
            false
        });
        out
    }

    pub fn window(&self) -> Duration {
        self.window
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pedm_api::agent::ExecVerdict;
    use uuid::Uuid;

    fn refusal(n: u32) -> AgentReport {
        AgentReport {
            id: Uuid::now_v7(),
            at: Timestamp::now(),
            user: "mallory".into(),
            verdict: ExecVerdict::Denied,
            grant: None,
            session: None,
            task: None,
            delegation: None,
            argv: vec![format!("/bin/false{n}")],
            binary_sha256: None,
            reason: Some("no grant".into()),
            argv_sha256: None,
            argv_bytes: None,
            count: None,
            last_at: None,
            exec: None,
            file: None,
            via: None,
        }
    }

    #[test]
    fn connections_are_capped_per_uid_and_freed_on_drop() {
        let c = Connections::new(2);
        let a = c.admit(1000).unwrap();
        let _b = c.admit(1000).unwrap();
        assert!(c.admit(1000).is_none());
        assert!(c.admit(1001).is_some(), "other users are not affected");
        drop(a);
        assert!(c.admit(1000).is_some());
    }

    #[test]
    fn refusals_in_a_window_become_one_report() {
        let r = Refusals::new(Duration::from_secs(3600));
        for n in 0..INDIVIDUAL {
            assert!(
                r.take(1000, refusal(n)).is_some(),
                "the first are recorded at once"
            );
        }
        for n in 1..=500 {
            assert!(r.take(1000, refusal(n)).is_none());
        }
        assert!(r.take(1001, refusal(0)).is_some(), "per uid");
        assert!(r.closed(false).is_empty(), "the window is still open");
        let closed = r.closed(true);
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].count, Some(500));
        assert_eq!(closed[0].argv, vec!["/bin/false500".to_string()]);
        assert!(closed[0].last_at.unwrap() >= closed[0].at);
        assert!(r.closed(true).is_empty());
    }
}
