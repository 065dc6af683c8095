//! Session recordings in asciicast v2 (<https://docs.asciinema.org/manual/asciicast/v2/>).
//!
//! A header line of JSON, then one JSON array per event: `[seconds, code, data]` with code
//! `"o"` (output: the terminal, or a pipe session's stdout and stderr, as asciicast has no
//! stderr), `"i"` (input), `"r"` (resize, `"COLSxROWS"`) and `"m"` (marker: how the session
//! ended). The format needs UTF-8 strings while reads split characters anywhere, so each
//! stream keeps the tail of an incomplete character for its next event; only bytes that can
//! never become UTF-8 are replaced by U+FFFD.
//!
//! The writer hashes what it writes, so the agent can report the file's SHA-256 without
//! reading it back (the server checks uploads against it). Event data is validated and
//! escaped in one pass straight from the bytes read, as `serde_json` would write it.
//!
//! Event times come from a monotonic clock started with the writer (a session recorded as it
//! runs), or from the recorded stream itself ([`CastWriter::replayed`]: sudo's I/O log sends
//! each buffer with its delay since the one before).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// The first line of a recording.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Header {
    pub version: u32,
    pub width: u32,
    pub height: u32,
    /// Start time, Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// `TERM` and `SHELL`, which players use to pick a terminal emulation.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
}

impl Header {
    /// A v2 header for a terminal of `width` columns and `height` rows.
    pub fn new(width: u32, height: u32) -> Header {
        Header {
            version: 2,
            width,
            height,
            timestamp: None,
            command: None,
            title: None,
            env: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    Output,
    Input,
    Resize,
    Marker,
    /// A code this reader does not know (kept so newer files still parse).
    Other(String),
}

impl EventKind {
    /// The one-letter code of the file format.
    pub fn code(&self) -> &str {
        match self {
            EventKind::Output => "o",
            EventKind::Input => "i",
            EventKind::Resize => "r",
            EventKind::Marker => "m",
            EventKind::Other(c) => c,
        }
    }

    /// The kind a code stands for.
    pub fn from_code(c: &str) -> EventKind {
        match c {
            "o" => EventKind::Output,
            "i" => EventKind::Input,
            "r" => EventKind::Resize,
            "m" => EventKind::Marker,
            other => EventKind::Other(other.to_string()),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Seconds since the start.
    pub time: f64,
    pub kind: EventKind,
    pub data: String,
}

/// A parsed recording.
#[derive(Debug, Clone, PartialEq)]
pub struct Cast {
    pub header: Header,
    pub events: Vec<Event>,
}

impl Cast {
    /// What the terminal showed: the concatenated output events.
    pub fn output(&self) -> String {
        self.events
            .iter()
            .filter(|e| e.kind == EventKind::Output)
            .map(|e| e.data.as_str())
            .collect()
    }

    /// The marker labels, in order.
    pub fn markers(&self) -> Vec<&str> {
        self.events
            .iter()
            .filter(|e| e.kind == EventKind::Marker)
            .map(|e| e.data.as_str())
            .collect()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CastError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("empty recording: no header line")]
    Empty,
    #[error("unsupported asciicast version {0} (only 2 is read)")]
    Version(u32),
    #[error("line {line}: {message}")]
    Malformed { line: usize, message: String },
}

/// Reads a whole asciicast v2 recording: for the player, and for checks against what a
/// client received.
pub fn parse<R: BufRead>(reader: R) -> Result<Cast, CastError> {
    let mut lines = reader.lines().enumerate();
    let header: Header = loop {
        match lines.next() {
            None => return Err(CastError::Empty),
            Some((_, line)) if line.as_ref().is_ok_and(|l| l.trim().is_empty()) => continue,
            Some((i, line)) => {
                break serde_json::from_str(&line?).map_err(|e| CastError::Malformed {
                    line: i + 1,
                    message: format!("header: {e}"),
                })?;
            }
        }
    };
    if header.version != 2 {
        return Err(CastError::Version(header.version));
    }
    let mut events = Vec::new();
    for (i, line) in lines {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let (time, code, data): (f64, String, String) =
            serde_json::from_str(&line).map_err(|e| CastError::Malformed {
                line: i + 1,
                message: format!("event: {e}"),
            })?;
        events.push(Event {
            time,
            kind: EventKind::from_code(&code),
            data,
        });
    }
    Ok(Cast { header, events })
}

/// Size and hash of a finished recording, for the upload queue and the audit event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub bytes: u64,
    pub sha256: String,
}

/// Where a writer also offers each event line (with its newline) as it writes it: a live
/// stream. Offering must never wait.
pub trait Tap: Send {
    fn offer(&self, line: &[u8]);
}

/// Where event times come from.
enum Clock {
    /// Time since the writer started.
    Running(Instant),
    /// The time the stream says: the sum of the delays given so far.
    Given(Duration),
}

/// Writes a recording as the session runs.
pub struct CastWriter<W: Write> {
    out: BufWriter<Hashing<W>>,
    clock: Clock,
    output: Utf8Carry,
    input: Utf8Carry,
    /// The event being written, reused.
    line: Vec<u8>,
    /// Where each event line also goes as it is written (a live stream), if anywhere.
    tap: Option<Box<dyn Tap>>,
}

/// A line buffer grown beyond this by a large event is not kept.
const LINE_KEEP: usize = 1 << 20;

impl CastWriter<File> {
    /// Creates the file (mode 0600; never over an existing file or through a symlink: the
    /// agent decides where recordings go, nobody else). The spare that [`prepare_spare`] left
    /// in the same directory, if any, becomes the file instead (a rename, under the same
    /// rules).
    pub fn create(path: &Path, header: &Header) -> io::Result<CastWriter<File>> {
        let file = match take_spare(path) {
            Some(file) => file,
            None => new_file(path)?,
        };
        CastWriter::new(file, header)
    }
}

/// The spare's name in a recordings directory.
const SPARE: &str = ".spare.cast";

/// Creates an empty file in `dir` for the next [`CastWriter::create`] there, unless one is
/// waiting. Creating a file can take a millisecond (ext4 without a journal searches past
/// every inode freed in the last 30 seconds), so sessions create the next one's file after
/// they have ended, not while a caller waits.
pub fn prepare_spare(dir: &Path) -> io::Result<()> {
    match new_file(&dir.join(SPARE)) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(e),
        _ => Ok(()),
    }
}

fn new_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// Renames the spare next to `path` to `path` (never over an existing file) and opens it,
/// if it is what [`prepare_spare`] makes: an empty regular file of ours, mode 0600, with no
/// other name.
fn take_spare(path: &Path) -> Option<File> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;
    let spare = path.parent()?.join(SPARE);
    let from = std::ffi::CString::new(spare.as_os_str().as_bytes()).ok()?;
    let to = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: renameat2(2) on two NUL-terminated paths we own.
    let renamed = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if renamed != 0 {
        return None;
    }
    let file = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .ok();
    // SAFETY: geteuid(2) cannot fail.
    let euid = unsafe { libc::geteuid() };
    let fits = file
        .as_ref()
        .and_then(|f| f.metadata().ok())
        .is_some_and(|m| {
            m.file_type().is_file()
                && m.len() == 0
                && m.nlink() == 1
                && m.uid() == euid
                && m.mode() & 0o7777 == 0o600
        });
    if fits {
        file
    } else {
        drop(file);
        let _ = std::fs::remove_file(path);
        None
    }
}

impl<W: Write> CastWriter<W> {
    /// Writes the header to `w`.
    pub fn new(w: W, header: &Header) -> io::Result<CastWriter<W>> {
        let mut out = BufWriter::with_capacity(
            64 * 1024,
            Hashing {
                inner: w,
                hasher: Sha256::new(),
                bytes: 0,
            },
        );
        serde_json::to_writer(&mut out, header)?;
        out.write_all(b"\n")?;
        Ok(CastWriter {
            out,
            clock: Clock::Running(Instant::now()),
            output: Utf8Carry::default(),
            input: Utf8Carry::default(),
            line: Vec::new(),
            tap: None,
        })
    }

    /// Writes the header to `w`; event times are then those the stream gives
    /// ([`CastWriter::advance`]), not the clock's.
    pub fn replayed(w: W, header: &Header) -> io::Result<CastWriter<W>> {
        let mut writer = CastWriter::new(w, header)?;
        writer.clock = Clock::Given(Duration::ZERO);
        Ok(writer)
    }

    /// Continues a replayed recording that `w` already holds up to `at` (appends after it; no
    /// header). Only what is written from now on counts in [`Summary`]; a character split
    /// across the point where the recording stopped is lost (written as U+FFFD).
    pub fn appending(w: W, at: Duration) -> CastWriter<W> {
        CastWriter {
            out: BufWriter::with_capacity(
                64 * 1024,
                Hashing {
                    inner: w,
                    hasher: Sha256::new(),
                    bytes: 0,
                },
            ),
            clock: Clock::Given(at),
            output: Utf8Carry::default(),
            input: Utf8Carry::default(),
            line: Vec::new(),
            tap: None,
        }
    }

    /// Moves a replayed recording's time on by `delay` (nothing for one timed by the clock).
    pub fn advance(&mut self, delay: Duration) {
        if let Clock::Given(t) = &mut self.clock {
            *t = t.saturating_add(delay);
        }
    }

    /// Time since the recording started, as event times count it.
    pub fn elapsed(&self) -> Duration {
        match &self.clock {
            Clock::Running(start) => start.elapsed(),
            Clock::Given(t) => *t,
        }
    }

    /// Writes what is buffered through to the underlying writer.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// The underlying writer (for an `fsync` after [`CastWriter::flush`]).
    pub fn get_ref(&self) -> &W {
        &self.out.get_ref().inner
    }

    /// Bytes written so far, header included (buffered ones too).
    pub fn written(&self) -> u64 {
        self.out.get_ref().bytes + self.out.buffer().len() as u64
    }

    /// Records bytes the command wrote.
    pub fn output(&mut self, data: &[u8]) -> io::Result<()> {
        self.bytes_event(b'o', data, false)
    }

    /// Records bytes the caller typed.
    pub fn input(&mut self, data: &[u8]) -> io::Result<()> {
        self.bytes_event(b'i', data, true)
    }

    /// Records a terminal resize.
    pub fn resize(&mut self, cols: u16, rows: u16) -> io::Result<()> {
        self.event(b'r', &format!("{cols}x{rows}"))
    }

    /// Records a marker ("exit 0", "signal 9", "ended_by: grant revoked").
    pub fn marker(&mut self, label: &str) -> io::Result<()> {
        self.event(b'm', label)
    }

    fn bytes_event(&mut self, code: u8, data: &[u8], input: bool) -> io::Result<()> {
        let begun = self.begin_line(code);
        let carry = if input {
            &mut self.input
        } else {
            &mut self.output
        };
        carry.escape_into(data, &mut self.line);
        if self.line.len() == begun {
            return Ok(());
        }
        self.end_line()
    }

    fn event(&mut self, code: u8, data: &str) -> io::Result<()> {
        if data.is_empty() && code != b'm' {
            return Ok(());
        }
        self.begin_line(code);
        escape_json(data.as_bytes(), &mut self.line);
        self.end_line()
    }

    /// Starts an event line `[time, "code", "` and returns its length.
    fn begin_line(&mut self, code: u8) -> usize {
        if self.line.capacity() > LINE_KEEP {
            self.line = Vec::new();
        }
        self.line.clear();
        let t = self.elapsed().as_secs_f64();
        // Writing to a Vec cannot fail.
        let _ = write!(self.line, "[{t:.6}, \"{}\", \"", char::from(code));
        self.line.len()
    }

    fn end_line(&mut self) -> io::Result<()> {
        self.line.extend_from_slice(b"\"]\n");
        self.out.write_all(&self.line)?;
        if let Some(tap) = &self.tap {
            tap.offer(&self.line);
        }
        Ok(())
    }

    /// Offers every event line from now on to `tap` as well (it never waits).
    pub fn tap(&mut self, tap: impl Tap + 'static) {
        self.tap = Some(Box::new(tap));
    }

    /// Writes what incomplete characters remain (as U+FFFD), flushes, and returns the
    /// writer with the size and SHA-256 of everything written.
    pub fn finish(mut self) -> io::Result<(W, Summary)> {
        let out = self.output.finish();
        self.event(b'o', &out)?;
        let inp = self.input.finish();
        self.event(b'i', &inp)?;
        self.out.flush()?;
        let hashing = self.out.into_inner().map_err(|e| e.into_error())?;
        let summary = Summary {
            bytes: hashing.bytes,
            sha256: hex::encode(hashing.hasher.finalize()),
        };
        Ok((hashing.inner, summary))
    }
}

struct Hashing<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Turns a byte stream into UTF-8 text across reads.
#[derive(Default)]
struct Utf8Carry {
    /// The start of a character whose remaining bytes have not arrived (at most 3 bytes).
    pending: Vec<u8>,
}

impl Utf8Carry {
    /// Appends the text of `data` (after what is pending) to `out`, escaped for a JSON
    /// string; keeps an incomplete character at the end for the next call.
    fn escape_into(&mut self, data: &[u8], out: &mut Vec<u8>) {
        let mut rest = data;
        if !self.pending.is_empty() {
            // Complete (or give up on) the pending character with the first new bytes.
            let p = self.pending.len();
            let mut joined = [0u8; 4];
            let take = rest.len().min(4 - p);
            joined[..p].copy_from_slice(&self.pending);
            joined[p..p + take].copy_from_slice(&rest[..take]);
            let joined = &joined[..p + take];
            let valid = match std::str::from_utf8(joined) {
                Ok(s) => s,
                Err(e) => std::str::from_utf8(&joined[..e.valid_up_to()]).unwrap_or_default(),
            };
            // The pending bytes are a valid start, so whatever comes first covers them all.
            let used = match valid.chars().next() {
                Some(c) => {
                    escape_json(&joined[..c.len_utf8()], out);
                    c.len_utf8()
                }
                None => match std::str::from_utf8(joined)
                    .err()
                    .and_then(|e| e.error_len())
                {
                    Some(bad) => {
                        out.extend_from_slice(REPLACEMENT);
                        bad
                    }
                    None => {
                        // Still incomplete: everything new is pending too.
                        self.pending = joined.to_vec();
                        return;
                    }
                },
            };
            self.pending.clear();
            rest = &rest[used.saturating_sub(p)..];
        }
        loop {
            match std::str::from_utf8(rest) {
                Ok(_) => {
                    escape_json(rest, out);
                    return;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    escape_json(valid, out);
                    match e.error_len() {
                        Some(bad) => {
                            out.extend_from_slice(REPLACEMENT);
                            rest = &after[bad..];
                        }
                        None => {
                            self.pending = after.to_vec();
                            return;
                        }
                    }
                }
            }
        }
    }

    fn finish(&mut self) -> String {
        let rest = std::mem::take(&mut self.pending);
        String::from_utf8_lossy(&rest).into_owned()
    }
}

/// U+FFFD in UTF-8.
const REPLACEMENT: &[u8] = "\u{FFFD}".as_bytes();

/// How `serde_json` escapes each byte in a string: 0 (as is), `u` (`\u00XX`) or the letter
/// after the backslash.
static ESCAPE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 0x20 {
        t[b] = b'u';
        b += 1;
    }
    t[0x08] = b'b';
    t[0x09] = b't';
    t[0x0a] = b'n';
    t[0x0c] = b'f';
    t[0x0d] = b'r';
    t[b'"' as usize] = b'"';
    t[b'\\' as usize] = b'\\';
    t
};

/// Bit 7 of each byte of `w` that is below 0x20, a quote or a backslash. The lowest bit set
/// is exact; above it, bits may be set for bytes that need nothing.
fn needs_escape(w: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    let below_space = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
    below_space | zero(w ^ (ONES * u64::from(b'"'))) | zero(w ^ (ONES * u64::from(b'\\')))
}

/// Appends UTF-8 `s` to `out` as the inside of a JSON string, escaped as `serde_json` does.
fn escape_json(s: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.reserve(s.len());
    let mut start = 0;
    let mut i = 0;
    while i < s.len() {
        // Eight bytes at a time up to the next one that needs escaping.
        while let Some(word) = s.get(i..i + 8) {
            let mut w = [0u8; 8];
            w.copy_from_slice(word);
            let flags = needs_escape(u64::from_le_bytes(w));
            if flags != 0 {
                i += (flags.trailing_zeros() / 8) as usize;
                break;
            }
            i += 8;
        }
        let Some(&b) = s.get(i) else { break };
        let esc = ESCAPE[usize::from(b)];
        i += 1;
        if esc == 0 {
            continue;
        }
        out.extend_from_slice(&s[start..i - 1]);
        if esc == b'u' {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        } else {
            out.push(b'\\');
            out.push(esc);
        }
        start = i;
    }
    out.extend_from_slice(&s[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        let mut h = Header::new(80, 24);
        h.timestamp = Some(1_700_000_000);
        h.command = Some("/bin/sh".into());
        h.env.insert("TERM".into(), "xterm".into());
        h
    }

    fn record(chunks: &[&[u8]]) -> (Vec<u8>, Summary) {
        let mut w = CastWriter::new(Vec::new(), &header()).unwrap();
        for c in chunks {
            w.output(c).unwrap();
        }
        w.marker("exit 0").unwrap();
        w.finish().unwrap()
    }

    #[test]
    fn multi_byte_characters_split_across_reads_are_reconstructed() {
        let text = "héllo → 世界 🦀!";
        let bytes = text.as_bytes();
        // Every way of splitting the stream in two, and byte-by-byte.
        for cut in 0..=bytes.len() {
            let (file, _) = record(&[&bytes[..cut], &bytes[cut..]]);
            let cast = parse(&file[..]).unwrap();
            assert_eq!(cast.output(), text, "cut at {cut}");
        }
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        let (file, _) = record(&singles);
        let cast = parse(&file[..]).unwrap();
        assert_eq!(cast.output().as_bytes(), bytes);
        assert!(cast.events.iter().all(|e| !e.data.contains('\u{FFFD}')));
    }

    #[test]
    fn invalid_bytes_become_replacement_characters() {
        let (file, _) = record(&[b"a\xffb\xc3", b"(c"]);
        assert_eq!(parse(&file[..]).unwrap().output(), "a\u{FFFD}b\u{FFFD}(c");
        // An incomplete character at the very end.
        let (file, _) = record(&[b"x\xe2\x82"]);
        assert_eq!(parse(&file[..]).unwrap().output(), "x\u{FFFD}");
    }

    #[test]
    fn the_file_is_json_lines_with_header_events_and_marker() {
        let mut w = CastWriter::new(Vec::new(), &header()).unwrap();
        w.output(b"a\r\n\"quoted\"\t\x1b[0m").unwrap();
        w.input(b"ls\r").unwrap();
        w.resize(120, 40).unwrap();
        w.marker("signal 9").unwrap();
        w.marker("ended_by: grant revoked").unwrap();
        let (file, summary) = w.finish().unwrap();
        let text = String::from_utf8(file.clone()).unwrap();
        let mut lines = text.lines();
        let h: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
        assert_eq!(h["version"], 2);
        assert_eq!(h["width"], 80);
        assert_eq!(h["timestamp"], 1_700_000_000);
        assert_eq!(h["env"]["TERM"], "xterm");
        for line in lines {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(v.as_array().unwrap().len(), 3);
        }
        let cast = parse(&file[..]).unwrap();
        assert_eq!(cast.header, header());
        let kinds: Vec<_> = cast.events.iter().map(|e| e.kind.clone()).collect();
        assert_eq!(
            kinds,
            [
                EventKind::Output,
                EventKind::Input,
                EventKind::Resize,
                EventKind::Marker,
                EventKind::Marker
            ]
        );
        assert_eq!(cast.output(), "a\r\n\"quoted\"\t\x1b[0m");
        assert_eq!(cast.events[2].data, "120x40");
        assert_eq!(cast.markers(), ["signal 9", "ended_by: grant revoked"]);
        assert!(cast.events.windows(2).all(|w| w[0].time <= w[1].time));

        assert_eq!(summary.bytes, file.len() as u64);
        assert_eq!(summary.sha256, hex::encode(Sha256::digest(&file)));
    }

    #[test]
    fn files_are_created_private_and_never_overwritten() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.cast");
        let mut w = CastWriter::create(&path, &header()).unwrap();
        w.output(b"hi").unwrap();
        let (_, summary) = w.finish().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(summary.sha256, hex::encode(Sha256::digest(&bytes)));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(CastWriter::create(&path, &header()).is_err());
    }

    #[test]
    fn a_spare_becomes_the_next_recording_and_only_a_clean_one_does() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        prepare_spare(dir.path()).unwrap();
        prepare_spare(dir.path()).unwrap();
        let spare = dir.path().join(SPARE);
        assert!(spare.exists());
        let path = dir.path().join("a.cast");
        let mut w = CastWriter::create(&path, &header()).unwrap();
        assert!(!spare.exists(), "the spare was not used");
        w.output(b"hi").unwrap();
        let (_, summary) = w.finish().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(summary.sha256, hex::encode(Sha256::digest(&bytes)));
        assert_eq!(parse(&bytes[..]).unwrap().output(), "hi");
        // Never over an existing recording: the spare stays and the create fails.
        prepare_spare(dir.path()).unwrap();
        assert!(CastWriter::create(&path, &header()).is_err());
        assert!(spare.exists());
        // A spare that is not empty (or not private) is thrown away, not used.
        std::fs::write(&spare, b"planted").unwrap();
        let other = dir.path().join("b.cast");
        CastWriter::create(&other, &header())
            .unwrap()
            .finish()
            .unwrap();
        assert!(!spare.exists());
        assert!(!std::fs::read(&other).unwrap().starts_with(b"planted"));
        prepare_spare(dir.path()).unwrap();
        std::fs::set_permissions(&spare, std::fs::Permissions::from_mode(0o644)).unwrap();
        let third = dir.path().join("c.cast");
        CastWriter::create(&third, &header())
            .unwrap()
            .finish()
            .unwrap();
        let mode = std::fs::metadata(&third).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn parse_reports_bad_input() {
        assert!(matches!(parse(&b""[..]), Err(CastError::Empty)));
        assert!(matches!(
            parse(&br#"{"version":1,"width":1,"height":1}"#[..]),
            Err(CastError::Version(1))
        ));
        let bad = b"{\"version\":2,\"width\":1,\"height\":1}\n[0.1, \"o\"]\n";
        let e = parse(&bad[..]).unwrap_err();
        assert!(e.to_string().starts_with("line 2: event:"), "{e}");
    }

    /// The decoding and escaping this writer did before it worked on bytes: a `String` per
    /// read, escaped by `serde_json`.
    fn reference(chunks: &[&[u8]]) -> Vec<String> {
        let mut pending: Vec<u8> = vec![];
        let mut texts = vec![];
        for c in chunks {
            let mut joined = std::mem::take(&mut pending);
            joined.extend_from_slice(c);
            let mut rest = &joined[..];
            let mut text = String::new();
            loop {
                match std::str::from_utf8(rest) {
                    Ok(s) => {
                        text.push_str(s);
                        break;
                    }
                    Err(e) => {
                        let (valid, after) = rest.split_at(e.valid_up_to());
                        text.push_str(std::str::from_utf8(valid).unwrap());
                        match e.error_len() {
                            Some(bad) => {
                                text.push(char::REPLACEMENT_CHARACTER);
                                rest = &after[bad..];
                            }
                            None => {
                                pending = after.to_vec();
                                break;
                            }
                        }
                    }
                }
            }
            texts.push(text);
        }
        texts.push(String::from_utf8_lossy(&pending).into_owned());
        texts
            .into_iter()
            .filter(|t| !t.is_empty())
            .map(|t| serde_json::to_string(&t).unwrap())
            .collect()
    }

    /// The data field of each event line, as written.
    fn written_data(file: &[u8]) -> Vec<String> {
        let text = std::str::from_utf8(file).unwrap();
        text.lines()
            .skip(1)
            .map(|l| {
                let start = l.find(", \"o\", ").unwrap() + 7;
                l[start..l.len() - 1].to_string()
            })
            .collect()
    }

    #[test]
    fn escaping_and_decoding_match_serde_json_on_arbitrary_bytes() {
        // Bytes that matter: controls, quotes, backslashes, DEL, ASCII, pieces of 2-, 3- and
        // 4-byte characters, bytes that never start one.
        let alphabet: Vec<u8> = [
            &b"\x00\x01\x08\t\n\x0b\x0c\r\x1b\x1f \"\\/aZ~\x7f"[..],
            "é€🦀".as_bytes(),
            &[0x80, 0xbf, 0xc0, 0xc3, 0xe2, 0xf0, 0xf4, 0xf5, 0xff],
        ]
        .concat();
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..3000 {
            let len = (next() % 80) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            let mut chunks: Vec<&[u8]> = vec![];
            let mut rest = &bytes[..];
            while !rest.is_empty() {
                let n = 1 + (next() % 12) as usize;
                let (a, b) = rest.split_at(n.min(rest.len()));
                chunks.push(a);
                rest = b;
            }
            let mut w = CastWriter::new(Vec::new(), &header()).unwrap();
            for c in &chunks {
                w.output(c).unwrap();
            }
            let (file, _) = w.finish().unwrap();
            assert_eq!(
                written_data(&file),
                reference(&chunks),
                "{bytes:?} in {chunks:?}"
            );
        }
        // Long runs take the eight-bytes-at-a-time path.
        let long: Vec<u8> = (0..5000u32)
            .map(|i| b"abcdefgh\"\\\n\x01xyz"[(i % 14) as usize])
            .collect();
        let mut w = CastWriter::new(Vec::new(), &header()).unwrap();
        w.output(&long).unwrap();
        let (file, _) = w.finish().unwrap();
        assert_eq!(written_data(&file), reference(&[&long]));
    }
}
