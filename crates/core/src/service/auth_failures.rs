//! Failed authentication, recorded without letting anyone who reaches the server grow the
//! audit log at will: per source address, the first failures of a window are recorded at
//! once, the rest as one aggregated `auth.failed` event (count, first, last, source, last
//! reason) when the window closes.

use jiff::{SignedDuration, Timestamp};
use std::collections::HashMap;
use std::sync::Mutex;

/// How long one source's failures are counted together.
pub const WINDOW: SignedDuration = SignedDuration::from_secs(60);
/// Failures per source and window recorded one by one (a person mistyping keeps the detail).
pub const INDIVIDUAL: u32 = 10;

#[derive(Default)]
pub(crate) struct AuthFailures {
    open: Mutex<HashMap<String, Window>>,
}

struct Window {
    started: Timestamp,
    individual: u32,
    counted: u64,
    first: Option<Timestamp>,
    last: Option<Timestamp>,
    reason: String,
    kind: &'static str,
}

/// Failures of one source in one window beyond those recorded one by one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Aggregated {
    pub source: String,
    pub count: u64,
    pub first: Timestamp,
    pub last: Timestamp,
    pub reason: String,
    pub kind: &'static str,
}

impl AuthFailures {
    /// Takes a failure from `source`: `true` to record it now.
    pub fn admit(
        &self,
        source: Option<&str>,
        now: Timestamp,
        reason: &str,
        kind: &'static str,
    ) -> bool {
        let key = source.unwrap_or("unknown").to_string();
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let w = open.entry(key).or_insert_with(|| Window {
            started: now,
            individual: 0,
            counted: 0,
            first: None,
            last: None,
            reason: String::new(),
            kind,
        });
        if now.duration_since(w.started) >= WINDOW && w.counted == 0 {
            w.started = now;
            w.individual = 0;
        }
        if w.individual < INDIVIDUAL {
            w.individual += 1;
            return true;
        }
        w.counted += 1;
        w.first.get_or_insert(now);
        w.last = Some(now);
        w.reason = reason.to_string();
        w.kind = kind;
        false
    }

    /// The windows that closed by `now` (all with `all`) and had failures counted.
    pub fn closed(&self, now: Timestamp, all: bool) -> Vec<Aggregated> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = vec![];
        open.retain(|source, w| {
            if !all && now.duration_since(w.started) < WINDOW {
                return true;
            }
            if let (Some(first), Some(last)) = (w.first, w.last) {
                out.push(Aggregated {
                    source: source.clone(),
                    count: w.counted,
                    first,
                    last,
                    reason: std::mem::take(&mut w.reason),
                    kind: w.kind,
                });
            }
            false
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_from_one_source_becomes_one_event_per_window() {
        let f = AuthFailures::default();
        let t0 = Timestamp::from_second(1_000_000).unwrap();
        for i in 0..INDIVIDUAL {
            assert!(
                f.admit(Some("10.0.0.1"), t0, "unknown token", "user"),
                "{i}"
            );
        }
        for _ in 0..1000 {
            assert!(!f.admit(Some("10.0.0.1"), t0, "unknown token", "user"));
        }
        assert!(
            f.admit(Some("10.0.0.2"), t0, "unknown token", "user"),
            "per source"
        );
        assert!(f.closed(t0, false).is_empty());
        let later = t0 + WINDOW;
        let closed = f.closed(later, false);
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].count, 1000);
        assert_eq!(closed[0].source, "10.0.0.1");
        // A new window starts afresh.
        assert!(f.admit(Some("10.0.0.1"), later, "unknown token", "user"));
    }
}
