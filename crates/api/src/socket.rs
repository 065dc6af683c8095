//! The host agent's Unix-socket protocol, spoken between `pedm exec` / `pedm shell` (run by an
//! unprivileged user) and `pedm-agent` (root).
//!
//! The caller's identity is never part of the protocol: the agent reads it from the socket's
//! peer credentials (`SO_PEERCRED`).
//!
//! A frame is a 4-byte big-endian length `n` (of what follows, `1 + payload`), one byte of
//! [`Frame`] kind, and the payload: JSON for control frames, raw bytes for data frames, and
//! two big-endian `u16` (rows, columns) for a resize. A conversation is:
//!
//! ```text
//! client: Start ─────────────────────────────▶ agent
//!         ◀──────────────── Accepted | Refused (then the agent closes)
//!         Stdin* / StdinEof / Resize* / Signal* ▶
//!         ◀──────────────── Stdout* / Stderr*
//!         ◀──────────────── Exited (then the agent closes)
//! ```
//!
//! A root program on the host may instead ask whether someone else may do something now
//! (the sudo plugin, the PAM module; the agent refuses this question from anyone but root):
//!
//! ```text
//! root:   Check ─────────────────────────────▶ agent
//!         ◀──────────────── Allowed | Refused (then the agent closes)
//! ```

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use uuid::Uuid;

/// Frames longer than this are a protocol error (data frames are sent in smaller pieces).
pub const MAX_FRAME: usize = 1 << 20;

/// Where the agent listens unless configured otherwise.
pub const DEFAULT_SOCKET: &str = "/run/pedm/agent.sock";

/// What the caller asks the agent to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartExec {
    /// The command and its arguments. `argv[0]` is an absolute path or a bare name looked up
    /// in the agent's secure PATH; relative paths (`./x`, `bin/x`) are refused. Empty with
    /// `shell`.
    pub argv: Vec<String>,
    /// Run under this grant; without it the agent picks the caller's only active grant on
    /// this host (and refuses when there are several).
    #[serde(default)]
    pub grant: Option<Uuid>,
    /// An interactive login shell of the run-as user instead of `argv`.
    #[serde(default)]
    pub shell: bool,
    /// The caller's working directory (used when the run-as user can enter it).
    #[serde(default)]
    pub cwd: Option<String>,
    /// The caller's terminal size when stdin is a terminal: the command then runs in a
    /// pseudo-terminal. `None`: pipes (stdout and stderr kept apart).
    #[serde(default)]
    pub tty: Option<WinSize>,
    /// The caller's environment. The agent keeps only a safe list, as sudo's `env_reset`.
    #[serde(default)]
    pub env: Vec<(String, String)>,
    /// A delegated task instead of `argv`: the agent renders its command from the task's
    /// definition and these parameters (never through a shell).
    #[serde(default)]
    pub task: Option<TaskRun>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRun {
    pub name: String,
    #[serde(default)]
    pub params: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WinSize {
    pub rows: u16,
    pub cols: u16,
}

/// The agent runs the command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accepted {
    pub session: Uuid,
    /// The grant it runs under (for a task: the delegation).
    pub grant: Uuid,
    pub run_as: String,
    /// The resolved absolute path that runs.
    pub path: String,
}

/// The agent refuses; nothing ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refused {
    /// Human-readable reason naming the problem ("no active grant for role root on web1",
    /// "command /usr/bin/rm is forbidden by policy block-rm", ...).
    pub reason: String,
}

/// How the command ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exited {
    /// Exit code when it exited.
    pub code: Option<i32>,
    /// Signal number when a signal killed it.
    pub signal: Option<i32>,
    /// Why the agent ended it, when it did ("grant revoked", "grant expired").
    #[serde(default)]
    pub ended_by: Option<String>,
}

impl Exited {
    /// The status a shell would report: the code, or 128 + signal.
    pub fn status(&self) -> i32 {
        match (self.code, self.signal) {
            (Some(c), _) => c,
            (None, Some(s)) => 128 + s,
            (None, None) => 1,
        }
    }
}

/// What a root program asks on someone's behalf ([`Frame::Check`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AccessCheck {
    /// `sudo`: may `user` run `argv` (`argv[0]` the absolute path sudo resolved) as
    /// `run_as`? Decided as `pedm exec` would decide it.
    Sudo {
        user: String,
        argv: Vec<String>,
        run_as: String,
    },
    /// A login to this host through PAM (`service`: `sshd`, `login`, ...): does `user` hold
    /// a live grant here (of `role`, when given)?
    Login {
        user: String,
        service: String,
        #[serde(default)]
        rhost: Option<String>,
        #[serde(default)]
        role: Option<String>,
    },
}

/// The agent's yes to an [`AccessCheck`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessAllowed {
    pub grant: Uuid,
    pub role: String,
    /// When the grant ends (RFC 3339).
    pub expires_at: String,
    /// `cgroup.procs` files the asker moves itself into (by writing `0`) before what was
    /// allowed runs, so that the grant's end ends it and all it started. Empty where the
    /// host has no containment.
    #[serde(default)]
    pub join: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    // caller → agent
    Start(StartExec),
    Stdin(Vec<u8>),
    StdinEof,
    Resize(WinSize),
    /// A signal the caller received (SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGTSTP...), for the
    /// command's process group.
    Signal(i32),
    /// A root program's question about someone else (see [`AccessCheck`]).
    Check(AccessCheck),
    // agent → caller
    Accepted(Accepted),
    Refused(Refused),
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    Exited(Exited),
    /// The answer to a [`Frame::Check`] when yes.
    Allowed(AccessAllowed),
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("frame of {0} bytes is larger than the limit")]
    TooLarge(usize),
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    #[error("malformed {kind} frame: {error}")]
    Malformed { kind: &'static str, error: String },
}

const START: u8 = 1;
const STDIN: u8 = 2;
const STDIN_EOF: u8 = 3;
const RESIZE: u8 = 4;
const SIGNAL: u8 = 5;
const CHECK: u8 = 6;
const ACCEPTED: u8 = 16;
const REFUSED: u8 = 17;
const STDOUT: u8 = 18;
const STDERR: u8 = 19;
const EXITED: u8 = 20;
const ALLOWED: u8 = 21;

impl Frame {
    fn encode(&self) -> Vec<u8> {
        fn json<T: Serialize>(kind: u8, v: &T) -> (u8, Vec<u8>) {
            // Serialising these plain structs cannot fail.
            (kind, serde_json::to_vec(v).unwrap_or_default())
        }
        let (kind, payload) = match self {
            Frame::Start(s) => json(START, s),
            Frame::Stdin(b) => (STDIN, b.clone()),
            Frame::StdinEof => (STDIN_EOF, Vec::new()),
            Frame::Resize(w) => {
                let mut p = w.rows.to_be_bytes().to_vec();
                p.extend_from_slice(&w.cols.to_be_bytes());
                (RESIZE, p)
            }
            Frame::Signal(s) => (SIGNAL, s.to_be_bytes().to_vec()),
            Frame::Accepted(a) => json(ACCEPTED, a),
            Frame::Refused(r) => json(REFUSED, r),
            Frame::Stdout(b) => (STDOUT, b.clone()),
            Frame::Stderr(b) => (STDERR, b.clone()),
            Frame::Exited(e) => json(EXITED, e),
            Frame::Check(c) => json(CHECK, c),
            Frame::Allowed(a) => json(ALLOWED, a),
        };
        let len = (payload.len() + 1) as u32;
        let mut out = Vec::with_capacity(payload.len() + 5);
        out.extend_from_slice(&len.to_be_bytes());
        out.push(kind);
        out.extend_from_slice(&payload);
        out
    }

    fn decode(kind: u8, payload: Vec<u8>) -> Result<Frame, FrameError> {
        fn json<T: for<'de> Deserialize<'de>>(
            name: &'static str,
            p: &[u8],
        ) -> Result<T, FrameError> {
            serde_json::from_slice(p).map_err(|e| FrameError::Malformed {
                kind: name,
                error: e.to_string(),
            })
        }
        fn fixed<const N: usize>(name: &'static str, p: &[u8]) -> Result<[u8; N], FrameError> {
            p.try_into().map_err(|_| FrameError::Malformed {
                kind: name,
                error: format!("expected {N} bytes, got {}", p.len()),
            })
        }
        Ok(match kind {
            START => Frame::Start(json("start", &payload)?),
            STDIN => Frame::Stdin(payload),
            STDIN_EOF => Frame::StdinEof,
            RESIZE => {
                let b: [u8; 4] = fixed("resize", &payload)?;
                Frame::Resize(WinSize {
                    rows: u16::from_be_bytes([b[0], b[1]]),
                    cols: u16::from_be_bytes([b[2], b[3]]),
                })
            }
            SIGNAL => Frame::Signal(i32::from_be_bytes(fixed("signal", &payload)?)),
            ACCEPTED => Frame::Accepted(json("accepted", &payload)?),
            REFUSED => Frame::Refused(json("refused", &payload)?),
            STDOUT => Frame::Stdout(payload),
            STDERR => Frame::Stderr(payload),
            EXITED => Frame::Exited(json("exited", &payload)?),
            CHECK => Frame::Check(json("check", &payload)?),
            ALLOWED => Frame::Allowed(json("allowed", &payload)?),
            other => return Err(FrameError::UnknownKind(other)),
        })
    }
}

/// Writes one frame (and flushes).
pub async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    frame: &Frame,
) -> Result<(), FrameError> {
    w.write_all(&frame.encode()).await?;
    w.flush().await?;
    Ok(())
}

/// The most a `Start` frame may hold (the command, environment and task parameters): the
/// agent reads the first frame of a connection with this limit.
pub const MAX_START_FRAME: usize = 256 * 1024;

/// Reads one frame; `Ok(None)` at a clean end of stream (between frames).
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<Frame>, FrameError> {
    read_frame_limited(r, MAX_FRAME).await
}

/// [`read_frame`] with a lower size limit. Memory grows with what actually arrives, not with
/// what the length prefix announces.
pub async fn read_frame_limited<R: AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
) -> Result<Option<Frame>, FrameError> {
    let max = max.min(MAX_FRAME);
    let mut len = [0u8; 4];
    // A clean end is one before a frame; inside the length prefix it is a cut stream.
    match r.read(&mut len[..1]).await? {
        0 => return Ok(None),
        _ => r.read_exact(&mut len[1..]).await?,
    };
    let len = u32::from_be_bytes(len) as usize;
    if len == 0 {
        return Err(FrameError::Malformed {
            kind: "frame",
            error: "zero length".into(),
        });
    }
    if len > max {
        return Err(FrameError::TooLarge(len));
    }
    let mut kind = [0u8; 1];
    r.read_exact(&mut kind).await?;
    let want = len - 1;
    let mut payload = Vec::with_capacity(want.min(64 * 1024));
    let got = r.take(want as u64).read_to_end(&mut payload).await?;
    if got < want {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("frame ends after {got} of {want} bytes"),
        )
        .into());
    }
    Frame::decode(kind[0], payload).map(Some)
}

/// Where and for how long a plugin asks the agent: the `socket=PATH` and `timeout=SECONDS`
/// options of the sudo plugin's `sudo.conf` line and of the PAM module's line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AskOptions {
    pub socket: std::path::PathBuf,
    pub timeout: std::time::Duration,
}

impl Default for AskOptions {
    fn default() -> Self {
        AskOptions {
            socket: DEFAULT_SOCKET.into(),
            timeout: std::time::Duration::from_secs(10),
        }
    }
}

impl AskOptions {
    /// Takes `opt` if it is `socket=` (absolute) or `timeout=` (1 to 300 seconds): `Ok(true)`;
    /// `Ok(false)` for any other option.
    pub fn take(&mut self, opt: &str) -> Result<bool, String> {
        match opt.split_once('=') {
            Some(("socket", v)) if v.starts_with('/') => self.socket = v.into(),
            Some(("socket", v)) => {
                return Err(format!(
                    "socket={v}: the agent's socket must be an absolute path"
                ));
            }
            Some(("timeout", v)) => {
                let secs: u64 = v
                    .parse()
                    .ok()
                    .filter(|s| (1..=300).contains(s))
                    .ok_or_else(|| format!("timeout={v}: a number of seconds, 1 to 300"))?;
                self.timeout = std::time::Duration::from_secs(secs);
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// [`ask`] with these options.
    pub fn ask(&self, check: &AccessCheck) -> Result<Result<AccessAllowed, Refused>, FrameError> {
        ask(&self.socket, check, self.timeout)
    }
}

/// Asks the agent listening at `socket` an [`AccessCheck`], blocking, for programs that are
/// not asynchronous (the sudo plugin, the PAM module), each read and write bounded by
/// `timeout`.
pub fn ask(
    socket: &std::path::Path,
    check: &AccessCheck,
    timeout: std::time::Duration,
) -> Result<Result<AccessAllowed, Refused>, FrameError> {
    use std::io::{Read, Write};
    let mut stream = std::os::unix::net::UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(&Frame::Check(check.clone()).encode())?;
    let mut len = [0u8; 4];
    stream.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len) as usize;
    if len == 0 || len > MAX_START_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body)?;
    let kind = body[0];
    let answer = match Frame::decode(kind, body.split_off(1))? {
        Frame::Allowed(a) => Ok(a),
        Frame::Refused(r) => Err(r),
        other => {
            return Err(FrameError::Malformed {
                kind: "answer",
                error: format!("expected allowed or refused, got frame kind {kind} ({other:?})"),
            });
        }
    };
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_frame_round_trips() {
        let frames = vec![
            Frame::Start(StartExec {
                argv: vec!["/bin/echo".into(), "a b".into()],
                grant: Some(Uuid::now_v7()),
                shell: false,
                cwd: Some("/tmp".into()),
                tty: Some(WinSize { rows: 24, cols: 80 }),
                env: vec![("TERM".into(), "xterm".into())],
                task: None,
            }),
            Frame::Stdin(b"\x00\xffbytes".to_vec()),
            Frame::StdinEof,
            Frame::Resize(WinSize {
                rows: 50,
                cols: 200,
            }),
            Frame::Signal(15),
            Frame::Accepted(Accepted {
                session: Uuid::now_v7(),
                grant: Uuid::now_v7(),
                run_as: "root".into(),
                path: "/bin/echo".into(),
            }),
            Frame::Refused(Refused {
                reason: "no grant".into(),
            }),
            Frame::Stdout(vec![1, 2, 3]),
            Frame::Stderr(vec![]),
            Frame::Exited(Exited {
                code: None,
                signal: Some(9),
                ended_by: Some("grant revoked".into()),
            }),
            Frame::Check(AccessCheck::Sudo {
                user: "alice".into(),
                argv: vec!["/usr/bin/id".into(), "-u".into()],
                run_as: "root".into(),
            }),
            Frame::Check(AccessCheck::Login {
                user: "alice".into(),
                service: "sshd".into(),
                rhost: Some("192.0.2.1".into()),
                role: None,
            }),
            Frame::Allowed(AccessAllowed {
                grant: Uuid::now_v7(),
                role: "root".into(),
                expires_at: "2026-12-06T18:00:00Z".into(),
                join: vec!["/sys/fs/cgroup/pedm-agent/sessions/x/y/cgroup.procs".into()],
            }),
        ];
        let mut buf = Vec::new();
        for f in &frames {
            write_frame(&mut buf, f).await.unwrap();
        }
        let mut r = &buf[..];
        for f in &frames {
            assert_eq!(read_frame(&mut r).await.unwrap().as_ref(), Some(f));
        }
        assert!(read_frame(&mut r).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn oversized_unknown_and_truncated_frames_are_errors() {
        let big = ((MAX_FRAME + 1) as u32).to_be_bytes();
        assert!(matches!(
            read_frame(&mut &big[..]).await,
            Err(FrameError::TooLarge(_))
        ));
        let unknown = [0, 0, 0, 1, 99];
        assert!(matches!(
            read_frame(&mut &unknown[..]).await,
            Err(FrameError::UnknownKind(99))
        ));
        let truncated = [0, 0, 0, 5, STDIN, 1];
        assert!(matches!(
            read_frame(&mut &truncated[..]).await,
            Err(FrameError::Io(_))
        ));
        let bad_resize = [0, 0, 0, 2, RESIZE, 1];
        assert!(matches!(
            read_frame(&mut &bad_resize[..]).await,
            Err(FrameError::Malformed { .. })
        ));
    }
}
