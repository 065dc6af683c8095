//! Small state an integration (a chat app, a mail link) keeps across restarts and instances:
//! which chat message shows which request, which signed callbacks were already seen. The core
//! stores it and knows nothing of what the keys mean.

use jiff::Timestamp;

/// One entry, named by its integration (e.g. `slack`) and a key of the integration's making.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntegrationEntry {
    pub integration: String,
    pub key: String,
    pub value: String,
    /// Gone for every purpose after this (purged later); `None` keeps it.
    pub expires_at: Option<Timestamp>,
}

impl IntegrationEntry {
    pub fn live(&self, now: Timestamp) -> bool {
        self.expires_at.is_none_or(|e| e > now)
    }
}

/// Row changes of integration state.
#[derive(Debug, Clone)]
pub enum IntegrationWrite {
    /// Sets the value, whatever was there.
    Put(IntegrationEntry),
    /// Takes the key once: AlreadyExists if an entry live at `now` holds it (an expired one is
    /// replaced). Replay protection across instances.
    Claim {
        entry: IntegrationEntry,
        now: Timestamp,
    },
    /// Holds the key as `entry.value` until `entry.expires_at`: taken when absent, expired at
    /// `now`, or already held with the same value (a renewal); AlreadyExists while another
    /// holder's lease is live. One instance of several does a job at a time.
    Lease {
        entry: IntegrationEntry,
        now: Timestamp,
    },
    /// Deletes every entry that expired before `before`.
    Purge { before: Timestamp },
}
