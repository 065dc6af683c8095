//! The JSON Lines export and its offline verification.
//!
//! See the crate docs for the format. Verification streams: memory is bounded by a few chunks of
//! lines in flight plus O(log n) Merkle state, whatever the size of the file.

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::io::{self, BufRead, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, mpsc};

use jiff::Timestamp;
use pedm_core::audit::AuditEvent;
use serde::{Deserialize, Serialize};

use crate::checkpoint::{PublicKey, SignedCheckpoint};
use crate::hashing::{content_matches, fast_line};
use crate::merkle::leaf_hash;
use crate::verify::{
    EventDigest, FailureKind, PrunedBase, Verifier, VerifyFailure, VerifyOptions, VerifyReport,
    prune_record,
};

/// Value of the header's `format`.
pub const EXPORT_FORMAT: &str = "pedm-audit-export";
/// Value of the header's `version`.
pub const EXPORT_VERSION: u32 = 1;

/// First line of an export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportHeader {
    /// Always [`EXPORT_FORMAT`].
    pub format: String,
    /// Always [`EXPORT_VERSION`].
    pub version: u32,
    /// When the export was made.
    pub created: Timestamp,
    /// Key id of the key that signed the checkpoints, if known (informative: each checkpoint
    /// carries its own, and is checked against the verifier's public key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// Where the export came from (e.g. the server URL), informative.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

impl ExportHeader {
    pub fn new(created: Timestamp, key_id: Option<String>) -> Self {
        ExportHeader {
            format: EXPORT_FORMAT.into(),
            version: EXPORT_VERSION,
            created,
            key_id,
            source: None,
        }
    }
}

/// The last line: `{"end":{"events":N,"checkpoints":M}}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportEnd {
    pub events: u64,
    pub checkpoints: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EndLine {
    end: ExportEnd,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckpointLine<C> {
    checkpoint: C,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PrunedLine<P> {
    pruned: P,
}

/// Streaming writer of the JSON Lines export: header, then checkpoints and events, then the end
/// line. Checkpoints should be written before the events (see the crate docs); events must be
/// written in seq order (not checked here: the verifier checks).
pub struct ExportWriter<W: Write> {
    w: W,
    events: u64,
    checkpoints: u64,
}

impl<W: Write> ExportWriter<W> {
    /// Writes the header line. Wrap `w` in a `BufWriter` for files and sockets.
    pub fn new(mut w: W, header: &ExportHeader) -> io::Result<Self> {
        serde_json::to_writer(&mut w, header)?;
        w.write_all(b"\n")?;
        Ok(ExportWriter {
            w,
            events: 0,
            checkpoints: 0,
        })
    }

    pub fn write_checkpoint(&mut self, cp: &SignedCheckpoint) -> io::Result<()> {
        serde_json::to_writer(&mut self.w, &CheckpointLine { checkpoint: cp })?;
        self.w.write_all(b"\n")?;
        self.checkpoints += 1;
        Ok(())
    }

    /// The start of a log whose first events were pruned: after the checkpoints (only those
    /// of at least `base.through` events), before the first event.
    pub fn write_pruned(&mut self, base: &PrunedBase) -> io::Result<()> {
        serde_json::to_writer(&mut self.w, &PrunedLine { pruned: base })?;
        self.w.write_all(b"\n")?;
        self.events += base.through;
        Ok(())
    }

    pub fn write_event(&mut self, e: &AuditEvent) -> io::Result<()> {
        serde_json::to_writer(&mut self.w, e)?;
        self.w.write_all(b"\n")?;
        self.events += 1;
        Ok(())
    }

    /// Writes the end line, flushes, and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        serde_json::to_writer(
            &mut self.w,
            &EndLine {
                end: ExportEnd {
                    events: self.events,
                    checkpoints: self.checkpoints,
                },
            },
        )?;
        self.w.write_all(b"\n")?;
        self.w.flush()?;
        Ok(self.w)
    }
}

/// Writes a complete export: header, `checkpoints` (sorted by size), `events`, end line.
pub fn write_export<W: Write, E: Borrow<AuditEvent>>(
    w: W,
    header: &ExportHeader,
    checkpoints: &[SignedCheckpoint],
    events: impl IntoIterator<Item = E>,
) -> io::Result<W> {
    let mut x = ExportWriter::new(w, header)?;
    let mut cps: Vec<&SignedCheckpoint> = checkpoints.iter().collect();
    cps.sort_by_key(|c| c.checkpoint.size);
    for c in cps {
        x.write_checkpoint(c)?;
    }
    for e in events {
        x.write_event(e.borrow())?;
    }
    x.finish()
}

// ---------------------------------------------------------------------------------------------
// Verification

enum Parsed {
    Event(EventDigest),
    Pruned(Box<PrunedBase>),
    Checkpoint(Box<SignedCheckpoint>),
    Header(Box<ExportHeader>),
    End(ExportEnd),
    Bad(String),
}

const PRUNED_ACTION: &[u8] = br#""action":"audit.pruned""#;

const EVENT_KEYS: [&str; 9] = [
    "seq",
    "at",
    "actor",
    "action",
    "outcome",
    "subject",
    "data",
    "prev_hash",
    "hash",
];

fn parse_line(line: &[u8], buf: &mut Vec<u8>) -> Parsed {
    // Fast path: an event as the exporter writes it; no allocation, no re-serialisation. Not
    // for the event that records a pruning: what it says is read.
    let records_pruning = line
        .windows(PRUNED_ACTION.len())
        .any(|w| w == PRUNED_ACTION);
    if let Some((seq, prev_hash, hash)) = fast_line(line, buf).filter(|_| !records_pruning) {
        return Parsed::Event(EventDigest {
            seq,
            prev_hash,
            hash,
            leaf: leaf_hash(&hash),
            content_ok: true,
            prune_record: None,
        });
    }
    let line = match std::str::from_utf8(line) {
        Ok(s) => s,
        Err(e) => return Parsed::Bad(format!("not UTF-8: {e}")),
    };
    // Slow path: anything else.
    let v: serde_json::Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(e) => return Parsed::Bad(format!("not JSON: {e}")),
    };
    let Some(obj) = v.as_object() else {
        return Parsed::Bad("not a JSON object".into());
    };
    if obj.contains_key("seq") {
        if let Some(k) = obj.keys().find(|k| !EVENT_KEYS.contains(&k.as_str())) {
            return Parsed::Bad(format!("unknown event field {k:?}"));
        }
        return match serde_json::from_value::<AuditEvent>(v) {
            Ok(e) => Parsed::Event(EventDigest {
                seq: e.seq,
                prev_hash: e.prev_hash,
                hash: e.hash,
                leaf: leaf_hash(&e.hash),
                content_ok: content_matches(&e, buf),
                prune_record: prune_record(&e),
            }),
            Err(err) => Parsed::Bad(format!("bad event: {err}")),
        };
    }
    if obj.contains_key("pruned") {
        return match serde_json::from_value::<PrunedLine<PrunedBase>>(v) {
            Ok(p) => Parsed::Pruned(Box::new(p.pruned)),
            Err(err) => Parsed::Bad(format!("bad pruned line: {err}")),
        };
    }
    if obj.contains_key("checkpoint") {
        return match serde_json::from_value::<CheckpointLine<SignedCheckpoint>>(v) {
            Ok(c) => Parsed::Checkpoint(Box::new(c.checkpoint)),
            Err(err) => Parsed::Bad(format!("bad checkpoint: {err}")),
        };
    }
    if obj.contains_key("end") {
        return match serde_json::from_value::<EndLine>(v) {
            Ok(e) => Parsed::End(e.end),
            Err(err) => Parsed::Bad(format!("bad end line: {err}")),
        };
    }
    if obj.contains_key("format") {
        return match serde_json::from_value::<ExportHeader>(v) {
            Ok(h) => Parsed::Header(Box::new(h)),
            Err(err) => Parsed::Bad(format!("bad header: {err}")),
        };
    }
    Parsed::Bad("neither header, event, checkpoint nor end line".into())
}

/// Line-level state around the [`Verifier`].
struct State {
    v: Verifier,
    key_id: String,
    header: bool,
    end: Option<(u64, ExportEnd)>,
    lines: u64,
}

impl State {
    fn line(&mut self, n: u64, p: Parsed, partial: bool) -> Result<(), VerifyFailure> {
        self.lines = n;
        let line = Some(n);
        if let Some((l, _)) = self.end {
            return Err(VerifyFailure::new(
                FailureKind::Malformed,
                line,
                format!("content after the end line (line {l})"),
            ));
        }
        if !self.header {
            return match p {
                Parsed::Header(h) => {
                    if h.format != crate::export::EXPORT_FORMAT || h.version != EXPORT_VERSION {
                        return Err(VerifyFailure::new(
                            FailureKind::Malformed,
                            line,
                            format!("unsupported export {:?} version {}", h.format, h.version),
                        ));
                    }
                    if let Some(k) = &h.key_id
                        && *k != self.key_id
                    {
                        return Err(VerifyFailure::new(
                            FailureKind::WrongKey,
                            line,
                            format!(
                                "the export was signed by key {k}, the public key given is {}",
                                self.key_id
                            ),
                        ));
                    }
                    self.header = true;
                    Ok(())
                }
                _ if partial => Err(VerifyFailure::new(
                    FailureKind::Truncated,
                    line,
                    "the file ends inside the header line",
                )),
                _ => Err(VerifyFailure::new(
                    FailureKind::Malformed,
                    line,
                    format!("first line must be the {EXPORT_FORMAT} header"),
                )),
            };
        }
        match p {
            Parsed::Event(d) => self.v.push_digest(&d, line),
            Parsed::Pruned(b) => self.v.start_after(&b, line),
            Parsed::Checkpoint(c) => self.v.checkpoint_at(*c, line),
            Parsed::End(e) => {
                self.end = Some((n, e));
                Ok(())
            }
            Parsed::Header(_) => Err(VerifyFailure::new(
                FailureKind::Malformed,
                line,
                "a second header line",
            )),
            Parsed::Bad(msg) if partial => {
                let mut f = VerifyFailure::new(
                    FailureKind::Truncated,
                    line,
                    format!("the file ends in the middle of a line ({msg})"),
                );
                f.seq = Some(self.v.events() as i64 + 1);
                Err(f)
            }
            Parsed::Bad(msg) => Err(VerifyFailure::new(FailureKind::Malformed, line, msg)),
        }
    }

    fn finish(mut self) -> Result<VerifyReport, VerifyFailure> {
        if let Some(f) = self.v.end_failure() {
            return Err(f);
        }
        if !self.header {
            return Err(VerifyFailure::new(
                FailureKind::Truncated,
                Some(1),
                "empty file: no header",
            ));
        }
        let events = self.v.events();
        match self.end {
            None => {
                return Err(VerifyFailure::new(
                    FailureKind::Truncated,
                    Some(self.lines + 1),
                    format!("the file ends without its end line after {events} events (truncated)"),
                ));
            }
            Some((l, end)) if end.events != events => {
                let kind = if end.events > events {
                    FailureKind::Truncated
                } else {
                    FailureKind::Inserted
                };
                return Err(VerifyFailure::new(
                    kind,
                    Some(l),
                    format!(
                        "the end line says {} events, the file has {events}",
                        end.events
                    ),
                ));
            }
            _ => {}
        }
        self.v.finish()
    }
}

/// Verifies an export with default options (see [`verify_export_with`]).
pub fn verify_export(reader: impl BufRead, key: &PublicKey) -> Result<VerifyReport, VerifyFailure> {
    verify_export_with(reader, key, &VerifyOptions::default())
}

struct Chunk {
    index: u64,
    first_line: u64,
    data: Vec<u8>,
    /// End offset (exclusive, without the newline) of each line.
    ends: Vec<usize>,
    /// The last line had no newline (end of file).
    partial: bool,
}

const CHUNK_BYTES: usize = 256 * 1024;
const CHUNK_LINES: usize = 2048;

/// Reads the next chunk of whole lines; `None` at end of input.
fn read_chunk(
    r: &mut impl BufRead,
    index: u64,
    first_line: u64,
    data: Vec<u8>,
) -> Result<Option<Chunk>, VerifyFailure> {
    let mut c = Chunk {
        index,
        first_line,
        data,
        ends: Vec::with_capacity(CHUNK_LINES),
        partial: false,
    };
    c.data.clear();
    while c.data.len() < CHUNK_BYTES && c.ends.len() < CHUNK_LINES {
        let n = r.read_until(b'\n', &mut c.data).map_err(|e| {
            VerifyFailure::new(
                FailureKind::Io,
                Some(first_line + c.ends.len() as u64),
                format!("read error: {e}"),
            )
        })?;
        if n == 0 {
            break;
        }
        if c.data.last() == Some(&b'\n') {
            c.data.pop();
        } else {
            c.partial = true;
        }
        c.ends.push(c.data.len());
        // Keep line boundaries: the newline is gone, the next line starts at the next byte.
        if c.partial {
            break;
        }
    }
    Ok((!c.ends.is_empty()).then_some(c))
}

fn parse_chunk(c: &Chunk, buf: &mut Vec<u8>) -> Vec<Parsed> {
    let mut start = 0;
    c.ends
        .iter()
        .map(|&end| {
            let p = parse_line(&c.data[start..end], buf);
            start = end;
            p
        })
        .collect()
}

fn apply_chunk(
    st: &mut State,
    c_first_line: u64,
    partial: bool,
    ps: Vec<Parsed>,
) -> Result<(), VerifyFailure> {
    let n = ps.len();
    for (i, p) in ps.into_iter().enumerate() {
        st.line(c_first_line + i as u64, p, partial && i + 1 == n)?;
    }
    Ok(())
}

/// Verifies an export read from `reader` against `key`; see the crate docs for what is checked.
///
/// Parsing and hashing run on `opts.threads` worker threads (default: all cores) in chunks of
/// lines; every ordering check runs in the calling thread in file order, so the failure reported
/// is always the first one in the file, whatever the thread count.
pub fn verify_export_with(
    mut reader: impl BufRead,
    key: &PublicKey,
    opts: &VerifyOptions,
) -> Result<VerifyReport, VerifyFailure> {
    let mut st = State {
        v: Verifier::new(key, opts)?,
        key_id: key.key_id().to_string(),
        header: false,
        end: None,
        lines: 0,
    };
    let threads = opts
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    if threads == 1 {
        let mut buf = Vec::with_capacity(1024);
        let mut line = 1;
        let mut data = Vec::new();
        while let Some(c) = read_chunk(&mut reader, 0, line, data)? {
            let ps = parse_chunk(&c, &mut buf);
            line += c.ends.len() as u64;
            apply_chunk(&mut st, c.first_line, c.partial, ps)?;
            data = c.data;
        }
        return st.finish();
    }

    let stop = AtomicBool::new(false);
    let (work_tx, work_rx) = mpsc::sync_channel::<Chunk>(threads * 2);
    let work_rx = Mutex::new(work_rx);
    let (res_tx, res_rx) = mpsc::channel::<(Chunk, Vec<Parsed>)>();
    let result = std::thread::scope(|s| {
        for _ in 0..threads {
            let res_tx = res_tx.clone();
            let work_rx = &work_rx;
            let stop = &stop;
            s.spawn(move || {
                let mut buf = Vec::with_capacity(1024);
                loop {
                    let c = match work_rx.lock().expect("worker lock").recv() {
                        Ok(c) => c,
                        Err(_) => return,
                    };
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let ps = parse_chunk(&c, &mut buf);
                    if res_tx.send((c, ps)).is_err() {
                        return;
                    }
                }
            });
        }
        drop(res_tx);

        let max_in_flight = threads * 4;
        let mut in_flight = 0usize;
        let mut next_apply = 0u64;
        let mut ready: BTreeMap<u64, (Chunk, Vec<Parsed>)> = BTreeMap::new();
        let mut spare: Vec<Vec<u8>> = Vec::new();
        // Receives one result and applies every chunk that is now next in order.
        let mut receive = |st: &mut State,
                           in_flight: &mut usize,
                           spare: &mut Vec<Vec<u8>>|
         -> Result<(), VerifyFailure> {
            let (c, ps) = res_rx
                .recv()
                .expect("workers alive while chunks are in flight");
            *in_flight -= 1;
            ready.insert(c.index, (c, ps));
            while let Some((c, ps)) = ready.remove(&next_apply) {
                next_apply += 1;
                apply_chunk(st, c.first_line, c.partial, ps)?;
                spare.push(c.data);
            }
            Ok(())
        };
        let run = (|| {
            let mut index = 0;
            let mut line = 1;
            loop {
                while in_flight >= max_in_flight {
                    receive(&mut st, &mut in_flight, &mut spare)?;
                }
                let data = spare.pop().unwrap_or_default();
                let Some(c) = read_chunk(&mut reader, index, line, data)? else {
                    break;
                };
                index += 1;
                line += c.ends.len() as u64;
                work_tx.send(c).expect("workers alive");
                in_flight += 1;
            }
            drop(work_tx);
            while in_flight > 0 {
                receive(&mut st, &mut in_flight, &mut spare)?;
            }
            Ok(())
        })();
        stop.store(true, Ordering::Relaxed);
        run
    });
    result?;
    st.finish()
}
