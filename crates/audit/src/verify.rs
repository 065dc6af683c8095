//! Verification of a sequence of events against signed checkpoints.
//!
//! [`Verifier`] is the incremental core, fed event by event (the live log, fetched in pages) or
//! line by line by [`crate::export::verify_export`]. State is O(log n) plus the pending
//! checkpoints.
//!
//! Order of checks for each event (the first failure wins, and names its seq and line):
//! 1. `seq` is the next number (from 1, no gaps). Too high: [`FailureKind::Missing`], or
//!    [`FailureKind::Reordered`] if the expected seq shows up within the next
//!    [`LOOKAHEAD`] events. Too low: [`FailureKind::Inserted`] (a second event with that seq).
//! 2. `prev_hash` equals the previous event's `hash`, else [`FailureKind::BrokenLink`].
//! 3. The content matches `hash`, else [`FailureKind::Altered`].
//! 4. When the log reaches the size of a signed checkpoint, the Merkle root of the events so far
//!    must be the signed one, else [`FailureKind::Forged`] (history rewritten with a recomputed
//!    chain: the failure names the range between the last matching checkpoint and this one).
//!
//! Checkpoints are checked when they arrive (key id, then signature) and must arrive before or
//! right after the event that completes them. At the end, a checkpoint that signs more events
//! than were seen is [`FailureKind::Truncated`]. Events after the last verified checkpoint are
//! *not covered* by a signature: a warning in the report, or [`FailureKind::Uncovered`] with
//! [`VerifyOptions::require_covered`].

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::fmt;

use pedm_core::audit::{AuditEvent, GENESIS_HASH};

use crate::checkpoint::{CheckpointError, PublicKey, SignedCheckpoint, verify};
use crate::merkle::{Hash, MerkleAccumulator, leaf_hash};

/// How many further events are scanned after a gap to tell a missing event from a reordered one.
pub const LOOKAHEAD: u32 = 100_000;

/// The kind of the first problem found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// The input could not be read.
    Io,
    /// A line is not a valid header, event, checkpoint or end line, or is out of place.
    Malformed,
    /// An event is missing (a gap in `seq`).
    Missing,
    /// Events are out of order.
    Reordered,
    /// An event was inserted: a second event with a `seq` already seen.
    Inserted,
    /// An event's content does not match its own hash.
    Altered,
    /// An event does not link to the previous one (`prev_hash`): the previous event was replaced
    /// (and rehashed), or this one forged.
    BrokenLink,
    /// The chain is consistent but differs from what the server signed: events were inserted,
    /// removed or changed and the chain recomputed.
    Forged,
    /// A checkpoint's signature does not verify (altered checkpoint, forged signature).
    BadSignature,
    /// A checkpoint (or the export) was made by another key.
    WrongKey,
    /// Fewer events than a signed checkpoint (or the end line) says, or a file cut short.
    Truncated,
    /// Events after the last signed checkpoint (only with `require_covered`).
    Uncovered,
}

impl FailureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Io => "unreadable",
            FailureKind::Malformed => "malformed",
            FailureKind::Missing => "missing",
            FailureKind::Reordered => "reordered",
            FailureKind::Inserted => "inserted",
            FailureKind::Altered => "altered",
            FailureKind::BrokenLink => "broken link",
            FailureKind::Forged => "forged",
            FailureKind::BadSignature => "bad signature",
            FailureKind::WrongKey => "wrong key",
            FailureKind::Truncated => "truncated",
            FailureKind::Uncovered => "not covered",
        }
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The first bad position and what is wrong there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct VerifyFailure {
    pub kind: FailureKind,
    /// The first event seq at fault (for [`FailureKind::Forged`], the first of a range).
    pub seq: Option<i64>,
    /// The last seq of the range that may hold the fault ([`FailureKind::Forged`],
    /// [`FailureKind::Truncated`]).
    pub seq_end: Option<i64>,
    /// 1-based line of an export file (None for the live log).
    pub line: Option<u64>,
    pub detail: String,
}

impl fmt::Display for VerifyFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(l) = self.line {
            write!(f, "line {l}: ")?;
        }
        match (self.seq, self.seq_end) {
            (Some(a), Some(b)) if a != b => write!(f, "events {a}..={b}: ")?,
            (Some(a), _) => write!(f, "event {a}: ")?,
            _ => {}
        }
        write!(f, "{}: {}", self.kind, self.detail)
    }
}

impl VerifyFailure {
    pub(crate) fn new(kind: FailureKind, line: Option<u64>, detail: impl Into<String>) -> Self {
        VerifyFailure {
            kind,
            seq: None,
            seq_end: None,
            line,
            detail: detail.into(),
        }
    }
    pub(crate) fn at(mut self, seq: i64) -> Self {
        self.seq = Some(seq);
        self
    }
    pub(crate) fn through(mut self, seq: i64) -> Self {
        self.seq_end = Some(seq);
        self
    }
}

/// Options for [`Verifier`], [`verify_events`] and [`crate::export::verify_export_with`].
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// Fail ([`FailureKind::Uncovered`]) instead of warning when events follow the last signed
    /// checkpoint (or there is none).
    pub require_covered: bool,
    /// Checkpoints the auditor obtained elsewhere (an earlier export, a published checkpoint):
    /// verified like those in the input. A log shorter than one of them fails as truncated, and
    /// a log that differs from one fails as forged.
    pub trusted_checkpoints: Vec<SignedCheckpoint>,
    /// Tree heads `(size, root)` the auditor holds from elsewhere and has already
    /// authenticated (e.g. a C2SP checkpoint note checked with the log's key, and perhaps with
    /// witness cosignatures): the log must extend each. Shorter: [`FailureKind::Truncated`];
    /// another root at that size: [`FailureKind::Forged`]; both sizes are named.
    pub trusted_heads: Vec<TrustedHead>,
    /// Threads for export verification; `None`: all available cores. 1: no extra threads.
    pub threads: Option<usize>,
}

/// An authenticated tree head the log must extend (see [`VerifyOptions::trusted_heads`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedHead {
    pub size: u64,
    pub root: Hash,
    /// What it is, for messages (e.g. the file it came from).
    pub what: String,
}

/// Where a log starts whose first events were archived and pruned (`pedm audit archive`):
/// how many, the last one's hash, and the Merkle peaks of the tree over them (hex). The
/// verifier takes it only with a signed checkpoint of exactly that size, and only if an
/// `audit.pruned` event later in the log records the same size and root.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrunedBase {
    pub through: u64,
    pub hash: String,
    pub peaks: Vec<String>,
}

/// The size and root an `audit.pruned` event records, if `e` is one.
pub(crate) fn prune_record(e: &AuditEvent) -> Option<(u64, Hash)> {
    if e.action != "audit.pruned" {
        return None;
    }
    let through = e.data.get("through")?.as_u64()?;
    let root = hex_hash(e.data.get("root")?.as_str()?)?;
    Some((through, root))
}

fn hex_hash(s: &str) -> Option<Hash> {
    hex::decode(s).ok()?.try_into().ok()
}

/// What a successful verification established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Number of events (= last seq).
    pub events: u64,
    /// Hash of the last event (the chain head; genesis hash if none).
    pub head_hash: Hash,
    /// RFC 6962 root over all events.
    pub root: Hash,
    /// Signed checkpoints verified.
    pub checkpoints: u64,
    /// Events covered by a verified signed checkpoint (seq 1..=covered).
    pub covered: u64,
    /// The verified checkpoint with the largest size.
    pub latest_checkpoint: Option<SignedCheckpoint>,
    /// Problems that are not failures, e.g. events not covered by a signature.
    pub warnings: Vec<String>,
    /// Events archived and pruned before the first one given (verified through the signed
    /// checkpoint at their size and the `audit.pruned` event that records them; 0: none).
    pub pruned: u64,
}

/// Per-event input of the verifier, computed possibly in another thread.
#[derive(Debug, Clone)]
pub(crate) struct EventDigest {
    pub seq: i64,
    pub prev_hash: Hash,
    pub hash: Hash,
    /// `SHA-256(0x00 || hash)`.
    pub leaf: Hash,
    pub content_ok: bool,
    /// For an `audit.pruned` event: the size and root it records.
    pub prune_record: Option<(u64, Hash)>,
}

/// A pruned start taken, and whether the log has shown the event that records it.
struct Pruned {
    through: u64,
    root: Hash,
    recorded: bool,
}

struct Pending {
    cp: SignedCheckpoint,
    line: Option<u64>,
}

struct Diagnosis {
    failure: VerifyFailure,
    expected: i64,
    budget: u32,
}

/// Incremental verifier; see the module docs.
pub struct Verifier {
    key: PublicKey,
    require_covered: bool,
    acc: MerkleAccumulator,
    next_seq: i64,
    prev_hash: Hash,
    pending: BTreeMap<u64, Vec<Pending>>,
    checkpoints: u64,
    covered: u64,
    latest: Option<SignedCheckpoint>,
    diagnosing: Option<Diagnosis>,
    trusted: BTreeMap<u64, Vec<TrustedHead>>,
    /// A trusted head the log does not extend (reported at the end, with the log's size).
    fork: Option<TrustedHead>,
    /// Scratch space for hashing.
    buf: Vec<u8>,
    pruned: Option<Pruned>,
    notes: Vec<String>,
}

impl Verifier {
    /// A verifier for a log starting at seq 1. Fails if a trusted checkpoint does not verify.
    pub fn new(key: &PublicKey, opts: &VerifyOptions) -> Result<Self, VerifyFailure> {
        let mut v = Verifier {
            key: key.clone(),
            require_covered: opts.require_covered,
            acc: MerkleAccumulator::new(),
            next_seq: 1,
            prev_hash: GENESIS_HASH,
            pending: BTreeMap::new(),
            checkpoints: 0,
            covered: 0,
            latest: None,
            diagnosing: None,
            trusted: BTreeMap::new(),
            fork: None,
            buf: Vec::with_capacity(1024),
            pruned: None,
            notes: Vec::new(),
        };
        for cp in &opts.trusted_checkpoints {
            v.checkpoint_at(cp.clone(), None)?;
        }
        for t in &opts.trusted_heads {
            if t.size == 0 {
                if t.root != crate::merkle::EMPTY_ROOT {
                    v.fork.get_or_insert(t.clone());
                }
            } else {
                v.trusted.entry(t.size).or_default().push(t.clone());
            }
        }
        Ok(v)
    }

    /// Events accepted so far.
    pub fn events(&self) -> u64 {
        self.acc.size()
    }

    /// Starts the log after its archived and pruned first events (before any event is
    /// pushed): their Merkle root must be signed by a checkpoint of exactly that size, given
    /// before; checkpoints and trusted heads of smaller sizes belong to the archive.
    pub fn start_after(
        &mut self,
        base: &PrunedBase,
        line: Option<u64>,
    ) -> Result<(), VerifyFailure> {
        let bad = |why: String| VerifyFailure::new(FailureKind::Malformed, line, why);
        if self.acc.size() != 0 || self.pruned.is_some() || self.diagnosing.is_some() {
            return Err(bad("the pruned start must come before every event".into()));
        }
        let hash = hex_hash(&base.hash).ok_or_else(|| bad("pruned start: bad hash".into()))?;
        let peaks = base
            .peaks
            .iter()
            .map(|p| hex_hash(p))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| bad("pruned start: bad peak".into()))?;
        let acc = MerkleAccumulator::from_parts(base.through, peaks).ok_or_else(|| {
            bad(format!(
                "pruned start: the peaks do not fit a tree of {} events",
                base.through
            ))
        })?;
        // A checkpoint of pruned events can only be checked against the archive: one in the
        // input is a producer's mistake; a trusted one (given by the auditor) is noted.
        let before: Vec<u64> = self
            .pending
            .range(..base.through)
            .map(|(k, _)| *k)
            .collect();
        for size in before {
            let ps = self.pending.remove(&size).unwrap_or_default();
            if let Some(l) = ps.iter().find_map(|p| p.line) {
                return Err(VerifyFailure::new(
                    FailureKind::Malformed,
                    Some(l),
                    format!(
                        "checkpoint of size {size} covers pruned events (it belongs to the \
                         archive)"
                    ),
                ));
            }
            self.notes.push(format!(
                "the trusted checkpoint of size {size} predates the pruned start ({} events): \
                 check it against the archive",
                base.through
            ));
        }
        let before: Vec<u64> = self
            .trusted
            .range(..base.through)
            .map(|(k, _)| *k)
            .collect();
        for size in before {
            self.trusted.remove(&size);
            self.notes.push(format!(
                "the trusted checkpoint of size {size} predates the pruned start ({} events):                  check it against the archive",
                base.through
            ));
        }
        self.acc = acc;
        self.prev_hash = hash;
        self.next_seq = base.through as i64 + 1;
        let root = self.acc.root();
        if let Some(ts) = self.trusted.remove(&base.through)
            && let Some(t) = ts.into_iter().find(|t| t.root != root)
        {
            self.fork.get_or_insert(t);
        }
        let Some(ps) = self.pending.remove(&base.through) else {
            return Err(VerifyFailure::new(
                FailureKind::Forged,
                line,
                format!(
                    "events 1..={} were pruned, but no signed checkpoint of that size vouches                      for what they were",
                    base.through
                ),
            ));
        };
        for p in ps {
            self.check_root(p)?;
        }
        self.pruned = Some(Pruned {
            through: base.through,
            root,
            recorded: false,
        });
        Ok(())
    }

    /// Adds a signed checkpoint (checked now; its root is compared when the log reaches its size).
    pub fn add_checkpoint(&mut self, cp: SignedCheckpoint) -> Result<(), VerifyFailure> {
        self.checkpoint_at(cp, None)
    }

    pub(crate) fn checkpoint_at(
        &mut self,
        cp: SignedCheckpoint,
        line: Option<u64>,
    ) -> Result<(), VerifyFailure> {
        if self.diagnosing.is_some() {
            return Ok(());
        }
        let size = cp.checkpoint.size;
        if let Err(e) = verify(&cp, &self.key) {
            let kind = match e {
                CheckpointError::WrongKey { .. } => FailureKind::WrongKey,
                CheckpointError::BadSignature => FailureKind::BadSignature,
            };
            return Err(VerifyFailure::new(
                kind,
                line,
                format!("checkpoint of size {size}: {e}"),
            ));
        }
        let count = self.acc.size();
        if size < count {
            return Err(VerifyFailure::new(
                FailureKind::Malformed,
                line,
                format!(
                    "checkpoint of size {size} comes after event {count}; checkpoints must come \
                     before the events they cover or right after their last one"
                ),
            ));
        }
        let p = Pending { cp, line };
        if size == count {
            self.check_root(p)
        } else {
            self.pending.entry(size).or_default().push(p);
            Ok(())
        }
    }

    fn check_root(&mut self, p: Pending) -> Result<(), VerifyFailure> {
        let size = p.cp.checkpoint.size;
        if self.acc.root() != p.cp.checkpoint.root {
            let first = self.covered as i64 + 1;
            let mut f = VerifyFailure::new(
                FailureKind::Forged,
                p.line,
                format!(
                    "the first {size} events do not have the Merkle root signed at {} by key {}: \
                     events in this range were inserted, removed or rewritten (with a recomputed \
                     hash chain)",
                    p.cp.checkpoint.time, p.cp.checkpoint.key_id
                ),
            )
            .at(first.min(size as i64))
            .through(size as i64);
            if size == 0 {
                f.seq = None;
                f.seq_end = None;
            }
            return Err(f);
        }
        self.checkpoints += 1;
        if size >= self.covered {
            self.covered = size;
            let newer = self.latest.as_ref().is_none_or(|l| {
                l.checkpoint.size < size || l.checkpoint.time < p.cp.checkpoint.time
            });
            if newer {
                self.latest = Some(p.cp);
            }
        }
        Ok(())
    }

    /// Adds the next event of the log.
    pub fn push_event(&mut self, e: &AuditEvent) -> Result<(), VerifyFailure> {
        let mut buf = std::mem::take(&mut self.buf);
        let content_ok = crate::hashing::content_matches(e, &mut buf);
        self.buf = buf;
        let d = EventDigest {
            seq: e.seq,
            prev_hash: e.prev_hash,
            hash: e.hash,
            leaf: leaf_hash(&e.hash),
            content_ok,
            prune_record: prune_record(e),
        };
        self.push_digest(&d, None)
    }

    pub(crate) fn push_digest(
        &mut self,
        d: &EventDigest,
        line: Option<u64>,
    ) -> Result<(), VerifyFailure> {
        if let Some(diag) = &mut self.diagnosing {
            if d.seq == diag.expected {
                let mut f = self.diagnosing.take().expect("some").failure;
                f.kind = FailureKind::Reordered;
                f.detail = format!(
                    "expected event {} here, found event {}; event {} comes later{} (events out \
                     of order)",
                    f.seq.unwrap_or_default(),
                    f.detail,
                    d.seq,
                    line.map(|l| format!(" at line {l}")).unwrap_or_default()
                );
                return Err(f);
            }
            diag.budget -= 1;
            if diag.budget == 0 {
                return Err(self.take_diagnosis().expect("some"));
            }
            return Ok(());
        }
        let expected = self.next_seq;
        if d.seq != expected {
            if d.seq > expected {
                // Keep `found` in detail until the diagnosis decides the wording.
                self.diagnosing = Some(Diagnosis {
                    failure: VerifyFailure::new(FailureKind::Missing, line, d.seq.to_string())
                        .at(expected),
                    expected,
                    budget: LOOKAHEAD,
                });
                return Ok(());
            }
            return Err(VerifyFailure::new(
                FailureKind::Inserted,
                line,
                format!(
                    "expected event {expected}, found a second event {}: an event was inserted \
                     (or duplicated)",
                    d.seq
                ),
            )
            .at(d.seq));
        }
        if d.prev_hash != self.prev_hash {
            return Err(VerifyFailure::new(
                FailureKind::BrokenLink,
                line,
                format!(
                    "prev_hash is not the hash of event {}: event {} was replaced, or this one \
                     forged",
                    expected - 1,
                    expected - 1
                ),
            )
            .at(expected));
        }
        if !d.content_ok {
            return Err(VerifyFailure::new(
                FailureKind::Altered,
                line,
                "content does not match its hash (altered event)",
            )
            .at(expected));
        }
        if let (Some(p), Some((through, root))) = (&mut self.pruned, d.prune_record)
            && through == p.through
            && root == p.root
        {
            p.recorded = true;
        }
        self.acc.push_leaf_hash(d.leaf);
        self.prev_hash = d.hash;
        self.next_seq += 1;
        if let Some(ts) = self.trusted.remove(&self.acc.size()) {
            let root = self.acc.root();
            if let Some(t) = ts.into_iter().find(|t| t.root != root) {
                self.fork.get_or_insert(t);
            }
        }
        if let Some(ps) = self.pending.remove(&self.acc.size()) {
            for p in ps {
                self.check_root(p)?;
            }
        }
        Ok(())
    }

    fn take_diagnosis(&mut self) -> Option<VerifyFailure> {
        let d = self.diagnosing.take()?;
        let mut f = d.failure;
        let found = std::mem::take(&mut f.detail);
        f.detail = format!(
            "expected event {}, found event {found}: event missing",
            d.expected
        );
        Some(f)
    }

    /// A failure that the end of the input makes certain (a gap, or a checkpoint larger than the
    /// log). `None` if the log so far is fine.
    pub(crate) fn end_failure(&mut self) -> Option<VerifyFailure> {
        if let Some(f) = self.take_diagnosis() {
            return Some(f);
        }
        if let Some(p) = self.pruned.as_ref().filter(|p| !p.recorded) {
            return Some(
                VerifyFailure::new(
                    FailureKind::Forged,
                    None,
                    format!(
                        "events 1..={} were pruned, but no audit.pruned event in the log                          records it (with that root): the start of the log was removed",
                        p.through
                    ),
                )
                .at(1)
                .through(p.through as i64),
            );
        }
        let count = self.acc.size();
        if let Some(t) = &self.fork {
            return Some(
                VerifyFailure::new(
                    FailureKind::Forged,
                    None,
                    format!(
                        "the log ({count} events) does not extend the trusted checkpoint {} \
                         ({} events): its first {} events have another Merkle root (the log \
                         was rewritten or forked)",
                        t.what, t.size, t.size
                    ),
                )
                .at(1)
                .through(t.size as i64),
            );
        }
        if let Some((&size, ts)) = self.trusted.iter().next() {
            return Some(
                VerifyFailure::new(
                    FailureKind::Truncated,
                    None,
                    format!(
                        "the log holds {count} events, fewer than the {size} of the trusted \
                         checkpoint {} (rolled back or truncated)",
                        ts[0].what
                    ),
                )
                .at(count as i64 + 1)
                .through(size as i64),
            );
        }
        let (&size, ps) = self.pending.iter().next()?;
        Some(
            VerifyFailure::new(
                FailureKind::Truncated,
                ps[0].line,
                format!(
                    "a signed checkpoint covers {size} events but the log ends after {count}: \
                     events {}..={size} are missing (truncated log)",
                    count + 1
                ),
            )
            .at(count as i64 + 1)
            .through(size as i64),
        )
    }

    /// Ends verification.
    pub fn finish(mut self) -> Result<VerifyReport, VerifyFailure> {
        if let Some(f) = self.end_failure() {
            return Err(f);
        }
        let events = self.acc.size();
        let mut warnings = std::mem::take(&mut self.notes);
        if events == 0 && self.checkpoints == 0 && self.require_covered {
            // An empty export proves nothing: no signature says the log was empty.
            return Err(VerifyFailure::new(
                FailureKind::Uncovered,
                None,
                "no events and no signed checkpoint: nothing shows this is the whole log",
            ));
        }
        if self.covered < events {
            let msg = if self.checkpoints == 0 {
                format!(
                    "no signed checkpoint: events 1..={events} are not covered by a signature \
                     (only the hash chain was checked)"
                )
            } else {
                format!(
                    "events after the last signed checkpoint are not covered: {}..={events}",
                    self.covered + 1
                )
            };
            if self.require_covered {
                return Err(VerifyFailure::new(FailureKind::Uncovered, None, msg)
                    .at(self.covered as i64 + 1)
                    .through(events as i64));
            }
            warnings.push(msg);
        }
        Ok(VerifyReport {
            events,
            head_hash: self.prev_hash,
            root: self.acc.root(),
            checkpoints: self.checkpoints,
            covered: self.covered,
            latest_checkpoint: self.latest,
            warnings,
            pruned: self.pruned.as_ref().map_or(0, |p| p.through),
        })
    }
}

/// Verifies a whole log given as events in seq order (e.g. fetched over the API page by page)
/// and the signed checkpoints (fetched *before* the events, so none is larger than the log).
pub fn verify_events<E: Borrow<AuditEvent>>(
    events: impl IntoIterator<Item = E>,
    checkpoints: impl IntoIterator<Item = SignedCheckpoint>,
    key: &PublicKey,
    opts: &VerifyOptions,
) -> Result<VerifyReport, VerifyFailure> {
    let mut v = Verifier::new(key, opts)?;
    for cp in checkpoints {
        v.add_checkpoint(cp)?;
    }
    for e in events {
        v.push_event(e.borrow())?;
    }
    v.finish()
}
