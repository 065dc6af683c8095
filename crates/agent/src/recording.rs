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
//! reading it back (the server checks uploads against it).

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

/// Writes a recording as the session runs. Event times come from a monotonic clock
/// started with the writer.
pub struct CastWriter<W: Write> {
    out: BufWriter<Hashing<W>>,
    start: Instant,
    output: Utf8Carry,
    input: Utf8Carry,
}

impl CastWriter<File> {
    /// Creates the file (mode 0600; never over an existing file or through a symlink: the
    /// agent decides where recordings go, nobody else).
    pub fn create(path: &Path, header: &Header) -> io::Result<CastWriter<File>> {
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)?;
        CastWriter::new(file, header)
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
            start: Instant::now(),
            output: Utf8Carry::default(),
            input: Utf8Carry::default(),
        })
    }

    /// Time since the recording started, as event times count it.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// Records bytes the command wrote.
    pub fn output(&mut self, data: &[u8]) -> io::Result<()> {
        let text = self.output.decode(data);
        self.event("o", &text)
    }

    /// Records bytes the caller typed.
    pub fn input(&mut self, data: &[u8]) -> io::Result<()> {
        let text = self.input.decode(data);
        self.event("i", &text)
    }

    /// Records a terminal resize.
    pub fn resize(&mut self, cols: u16, rows: u16) -> io::Result<()> {
        self.event("r", &format!("{cols}x{rows}"))
    }

    /// Records a marker ("exit 0", "signal 9", "ended_by: grant revoked").
    pub fn marker(&mut self, label: &str) -> io::Result<()> {
        self.event("m", label)
    }

    fn event(&mut self, code: &str, data: &str) -> io::Result<()> {
        if data.is_empty() && code != "m" {
            return Ok(());
        }
        let t = self.start.elapsed().as_secs_f64();
        writeln!(
            self.out,
            "[{t:.6}, {}, {}]",
            serde_json::to_string(code)?,
            serde_json::to_string(data)?
        )
    }

    /// Writes what incomplete characters remain (as U+FFFD), flushes, and returns the
    /// writer with the size and SHA-256 of everything written.
    pub fn finish(mut self) -> io::Result<(W, Summary)> {
        let out = self.output.finish();
        self.event("o", &out)?;
        let inp = self.input.finish();
        self.event("i", &inp)?;
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
    fn decode(&mut self, data: &[u8]) -> String {
        let joined;
        let mut rest: &[u8] = if self.pending.is_empty() {
            data
        } else {
            let mut v = std::mem::take(&mut self.pending);
            v.extend_from_slice(data);
            joined = v;
            &joined
        };
        let mut text = String::with_capacity(rest.len());
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    text.push_str(s);
                    return text;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    text.push_str(std::str::from_utf8(valid).unwrap_or_default());
                    match e.error_len() {
                        Some(bad) => {
                            text.push(char::REPLACEMENT_CHARACTER);
                            rest = &after[bad..];
                        }
                        None => {
                            self.pending = after.to_vec();
                            return text;
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
}
