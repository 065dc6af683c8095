//! Running one session: spawning the command as the run-as user and pumping its I/O between
//! the client connection, the command and the recording until it ends.
//!
//! Spawning follows the ordering sudo-rs uses: in the child, after the standard descriptors
//! are in place, `setsid` (and `TIOCSCTTY` for a pseudo-terminal), then `setgroups`,
//! `setgid`, `setuid` (groups first: they can only be set while still root), a check that
//! root cannot be regained, `chdir` as the new user (so it only enters directories that user
//! may enter), default signal dispositions and an empty mask, every inherited descriptor
//! above 2 marked close-on-exec, `no_new_privs` unless the role allows setuid programs (and,
//! for a `noexec` role, the seccomp filter of [`crate::contain::execs`], installed while
//! still root), and finally `execveat` of the descriptor that
//! [`command::resolve`](crate::command::resolve) checked and hashed. Only async-signal-safe
//! calls happen between fork and exec; everything they need is prepared before the fork.
//!
//! The fork is a `clone(CLONE_VM | CLONE_VFORK)`, as `posix_spawn` does: the child borrows the
//! agent's memory until it execs instead of copying its page tables (for a 16 MB process, a
//! fork and exec took 1.3 ms, this 0.5 ms). So the child runs only raw system calls on data
//! prepared before the clone, on a stack of its own, with every signal blocked until it has
//! reset all handlers; it sets its groups and ids with the system calls themselves (the C
//! library's wrappers would change the ids of every thread of the agent). [`spawn`] has the
//! clone, and how the child is born in its cgroup.
//!
//! The session is a process group led by the command (and a session: `setsid`), so signals,
//! hang-ups and the final SIGKILL reach what it started, not only the command itself.

use crate::command::ResolvedCommand;
use crate::contain::procs::Members;
use crate::error::ExecError;
use crate::recording::{CastWriter, Header};
use crate::user::TargetUser;
use jiff::Timestamp;
use nix::errno::Errno;
use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};
use nix::sys::termios::{LocalFlags, SpecialCharacterIndices, tcgetattr};
use pedm_api::socket::{Exited, Frame, WinSize, read_frame, write_frame};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// Output is forwarded in pieces of at most this size (well under the frame limit).
const CHUNK: usize = 256 * 1024;
/// What a pipe to the command can hold (the default is 64 KiB): a command writing fast runs
/// ahead while its output is forwarded and recorded, with fewer, larger reads.
const PIPE_SIZE: libc::c_int = 1 << 20;
/// Reads up to this size are copied into a frame of their own; larger ones are sent in the
/// buffer they were read into.
const SMALL_READ: usize = 4096;
/// A data frame's head (`pedm_api::socket`): the length of what follows it (kind and
/// payload, 4 bytes big-endian), then the kind.
const FRAME_HEAD: usize = 5;
const STDOUT_KIND: u8 = 18;
const STDERR_KIND: u8 = 19;
/// Output buffers kept for reuse per session.
const SPARE_BUFFERS: usize = 4;
/// After the command exits, at most this much more output is collected per stream (a
/// background process that keeps the terminal open cannot keep the session alive).
const DRAIN_LIMIT: usize = 4 * 1024 * 1024;
/// How long the last frames may take to reach a client that stopped reading.
const FINAL_FLUSH: Duration = Duration::from_secs(5);

/// Signals a client may send to its command: the ones a terminal user can cause (and the
/// job-control and user-defined ones), never SIGKILL/SIGSTOP or anything that could be used
/// to make the command misbehave (SIGSEGV, SIGALRM...).
const ALLOWED_SIGNALS: &[i32] = &[
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGTSTP,
    libc::SIGCONT,
    libc::SIGWINCH,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// Everything a session needs, resolved and checked by the daemon beforehand.
#[derive(Debug)]
pub struct SessionSpec {
    /// The checked binary; its descriptor is what runs.
    pub command: ResolvedCommand,
    /// The arguments; `argv[0]` is what the program sees as its name (usually the path).
    pub argv: Vec<String>,
    pub user: TargetUser,
    /// The sanitised environment ([`crate::env::sanitise`]).
    pub env: Vec<(String, String)>,
    /// The directory asked for (checked by the daemon); the session does not start when
    /// the run-as user cannot enter it. `None`: the run-as user's home, else `/`.
    pub cwd: Option<PathBuf>,
    /// `Some`: a pseudo-terminal of this size; `None`: pipes, stdout and stderr kept apart.
    pub tty: Option<WinSize>,
    /// Where the asciicast recording is written; must not exist yet.
    pub recording: PathBuf,
    /// The recording's title (e.g. "alice as root on web1, grant <id>").
    pub title: String,
    /// Fed to the command's standard input (pipes only), then end of file; never recorded
    /// (a task's input may hold a secret). The caller's input is then ignored.
    pub stdin_data: Option<Vec<u8>>,
    /// Runs when the session has ended and its recording is complete, before the caller
    /// hears of the exit: whatever it stores survives the agent stopping right after.
    pub finished: Option<FinishHook>,
    /// Runs once the command has started, with its pid (the session id).
    pub started: Option<StartHook>,
    /// The read end of a pipe: the command execs only once a byte arrives on it (what must
    /// be on disk first is); end of file instead, and it does not run.
    pub durable: Option<OwnedFd>,
    /// The `PEDM_SESSION=<id>` entry of `env`, if any: processes of the run-as user that
    /// left the session but carry it are ended with the session ([`crate::contain::procs`]).
    pub marker: Option<String>,
    /// The session's cgroups ([`crate::contain::cgroup`]): the command is in each before it
    /// execs, or does not run.
    pub cgroup: crate::contain::cgroup::SessionCgroups,
    /// `no_new_privs` for the command and everything it starts: setuid programs and file
    /// capabilities give nothing (the default; off only for roles with `allow_setuid`).
    pub no_new_privs: bool,
    /// The command may not start another program ([`crate::contain::execs`]).
    pub noexec: bool,
    /// What the user types is recorded (the role's `record_input`), except while the terminal
    /// does not echo it (a password prompt, `read -s`): a marker stands in for it then.
    /// Output is always recorded.
    pub record_input: bool,
    /// Watched paths: every removal and rename of the session is reported to this gate
    /// ([`crate::contain::execs::EntryGate`]).
    pub entry_gate: Option<Box<dyn crate::contain::execs::EntryGate>>,
    /// Intercept: every exec after the program's own is decided and recorded by this gate
    /// ([`crate::contain::execs`]); ignored under `noexec`, which refuses them all.
    pub exec_gate: Option<Box<dyn crate::contain::execs::ExecGate>>,
    /// Where the recording's events also go as they are written: a live stream
    /// ([`crate::live`]).
    pub live: Option<crate::live::LiveTap>,
    /// A mount namespace the command joins before it execs (watched paths,
    /// [`crate::contain::watch`]).
    pub mount_ns: Option<OwnedFd>,
}

/// See [`SessionSpec::started`].
pub struct StartHook(pub Box<dyn FnOnce(i32) + Send>);

impl std::fmt::Debug for StartHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StartHook")
    }
}

/// See [`SessionSpec::finished`].
pub struct FinishHook(pub Box<dyn FnOnce(&SessionOutcome) + Send>);

impl std::fmt::Debug for FinishHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FinishHook")
    }
}

/// What the daemon records and uploads about a finished session.
#[derive(Debug, Clone)]
pub struct SessionOutcome {
    /// As sent to the client.
    pub exited: Exited,
    pub started_at: Timestamp,
    pub ended_at: Timestamp,
    /// Hex SHA-256 and size of the recording file (empty and 0 if it could not be finished).
    pub recording_sha256: String,
    pub recording_bytes: u64,
    /// Set when writing the recording failed; the session was then hung up (nothing runs
    /// unrecorded) and the file is incomplete.
    pub recording_error: Option<String>,
}

/// Runs the session to its end, speaking the `pedm_api::socket` protocol on `client` (after
/// the daemon has sent `Accepted`): stdin, EOF, resize and signal frames in; stdout, stderr
/// and the final `Exited` frame out. When `stop` becomes `Some(reason)` (the grant ended) or
/// the client goes away, the session is hung up: SIGHUP, then SIGKILL after `grace`.
///
/// `Err` means the command could not be started (nothing ran, the client has been sent a
/// message on stderr and `Exited` with code 127, no recording is left), or, in theory only,
/// that waiting for it failed.
pub async fn run_session<S>(
    spec: SessionSpec,
    client: S,
    stop: watch::Receiver<Option<String>>,
    grace: Duration,
) -> Result<SessionOutcome, ExecError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut rd, mut wr) = tokio::io::split(client);
    let (frames_tx, frames_rx) = mpsc::channel::<Frame>(16);
    // At most 8 frames (2 MiB of output) wait for a client that reads slowly.
    let (out_tx, mut out_rx) = mpsc::channel::<Out>(8);
    let buffers = Buffers::default();
    let returned = buffers.clone();
    let recordings = spec.recording.parent().map(PathBuf::from);
    // The connection is read and written by futures of their own so that a client that
    // stops reading (or sends half a frame) never stalls signals, stops or the exit.
    let reader = async move {
        while let Ok(Some(frame)) = read_frame(&mut rd).await {
            if frames_tx.send(frame).await.is_err() {
                break;
            }
        }
    };
    let writer = async move {
        while let Some(out) = out_rx.recv().await {
            let written = match out {
                Out::Frame(frame) => write_frame(&mut wr, &frame).await.is_ok(),
                Out::Encoded(bytes) => {
                    let ok = wr.write_all(&bytes).await.is_ok();
                    returned.give(bytes);
                    ok
                }
            };
            if !written {
                return;
            }
        }
        let _ = wr.shutdown().await;
    };
    let main = drive(spec, frames_rx, out_tx, buffers, stop, grace);
    tokio::pin!(reader, writer, main);
    let (mut reader_done, mut writer_done) = (false, false);
    let result = loop {
        tokio::select! {
            r = &mut main => break r,
            _ = &mut reader, if !reader_done => reader_done = true,
            _ = &mut writer, if !writer_done => writer_done = true,
        }
    };
    if !writer_done {
        let _ = tokio::time::timeout(FINAL_FLUSH, &mut writer).await;
    }
    // The client has everything: now make the next session's recording file.
    if let (Ok(_), Some(dir)) = (&result, recordings)
        && let Err(e) = crate::recording::prepare_spare(&dir)
    {
        tracing::debug!(error = %e, "cannot prepare a recording file");
    }
    result
}

/// What goes to the client: a frame, or a data frame already encoded in the buffer its
/// output was read into (see [`encode_head`]).
enum Out {
    Frame(Frame),
    Encoded(Vec<u8>),
}

/// Output buffers of [`FRAME_HEAD`] + [`CHUNK`] bytes, handed back by the writer once sent.
#[derive(Clone, Default)]
struct Buffers(Arc<Mutex<Vec<Vec<u8>>>>);

impl Buffers {
    /// An empty buffer with room for a frame head: `FRAME_HEAD` bytes long.
    fn take(&self) -> Vec<u8> {
        let mut b = self
            .0
            .lock()
            .ok()
            .and_then(|mut v| v.pop())
            .unwrap_or_else(|| Vec::with_capacity(FRAME_HEAD + CHUNK));
        b.clear();
        b.resize(FRAME_HEAD, 0);
        b
    }

    fn give(&self, b: Vec<u8>) {
        if b.capacity() >= FRAME_HEAD + CHUNK
            && let Ok(mut v) = self.0.lock()
            && v.len() < SPARE_BUFFERS
        {
            v.push(b);
        }
    }
}

/// Fills in the head of a data frame whose payload follows [`FRAME_HEAD`] bytes of room.
fn encode_head(frame: &mut [u8], kind: u8) {
    let len = (frame.len() - 4) as u32;
    frame[..4].copy_from_slice(&len.to_be_bytes());
    frame[4] = kind;
}

/// The parent's ends of the command's standard streams.
struct Streams {
    /// `[stdout or the pty master, stderr]`. Kept open until the command has exited, even
    /// after end of file: closing a terminal's master hangs the terminal up, which would
    /// SIGHUP a command that merely closed its descriptors before exiting.
    out: [Option<AsyncFd<OwnedFd>>; 2],
    /// Whether each output stream is finished (end of file, or no stream).
    eof: [bool; 2],
    input: Input,
}

enum Input {
    Pipe(AsyncFd<OwnedFd>),
    /// Input goes to the master (`out[0]`).
    Pty,
    Closed,
}

impl Streams {
    fn input_fd(&self) -> Option<&AsyncFd<OwnedFd>> {
        match &self.input {
            Input::Pipe(fd) => Some(fd),
            Input::Pty => self.out[0].as_ref(),
            Input::Closed => None,
        }
    }

    fn master(&self) -> Option<&AsyncFd<OwnedFd>> {
        match self.input {
            Input::Pty => self.out[0].as_ref(),
            _ => None,
        }
    }
}

/// The session's mutable state apart from the streams.
struct State {
    sid: i32,
    members: Members,
    grace: Duration,
    kill_at: Option<Instant>,
    ended_by: Option<String>,
    exited: Option<ExitStatus>,
    rec: CastWriter<File>,
    rec_err: Option<io::Error>,
    out: mpsc::Sender<Out>,
    buffers: Buffers,
    client_ok: bool,
}

impl State {
    /// Like a terminal hang-up: SIGHUP (and SIGCONT, so stopped jobs see it) now, SIGKILL
    /// when `grace` has passed.
    fn hangup(&mut self, reason: &str) {
        if self.ended_by.is_none() {
            self.ended_by = Some(reason.to_string());
        }
        if self.exited.is_some() || self.kill_at.is_some() {
            return;
        }
        tracing::info!(sid = self.sid, reason, "hanging up session");
        self.members.signal(libc::SIGHUP);
        self.members.signal(libc::SIGCONT);
        self.kill_at = Some(Instant::now() + self.grace);
    }

    fn record(&mut self, f: impl FnOnce(&mut CastWriter<File>) -> io::Result<()>) {
        if self.rec_err.is_some() {
            return;
        }
        if let Err(e) = f(&mut self.rec) {
            let reason = format!("recording failed: {e}");
            self.rec_err = Some(e);
            self.hangup(&reason);
        }
    }

    fn can_send(&self) -> bool {
        !self.client_ok || self.out.capacity() > 0
    }

    fn send(&mut self, frame: Out) {
        if self.client_ok && self.out.try_send(frame).is_err() {
            // Only `Closed` can happen (capacity is checked first): the client is gone.
            self.client_ok = false;
            self.hangup("client disconnected");
        }
    }

    /// Records and forwards what was read into `buf` (after its [`FRAME_HEAD`] bytes of
    /// room) and leaves `buf` empty again.
    fn emit(&mut self, stream: usize, buf: &mut Vec<u8>) {
        self.record(|r| r.output(&buf[FRAME_HEAD..]));
        let mut frame = if buf.len() - FRAME_HEAD > SMALL_READ {
            std::mem::replace(buf, self.buffers.take())
        } else {
            let small = buf.clone();
            buf.truncate(FRAME_HEAD);
            small
        };
        encode_head(&mut frame, [STDOUT_KIND, STDERR_KIND][stream]);
        self.send(Out::Encoded(frame));
    }
}

async fn drive(
    mut spec: SessionSpec,
    mut frames: mpsc::Receiver<Frame>,
    out: mpsc::Sender<Out>,
    buffers: Buffers,
    mut stop: watch::Receiver<Option<String>>,
    grace: Duration,
) -> Result<SessionOutcome, ExecError> {
    let Started {
        mut child,
        mut streams,
        rec,
        started_at,
    } = match start(&mut spec) {
        Ok(started) => started,
        Err(e) => {
            let msg = format!("pedm-agent: {e}\r\n");
            let _ = out.try_send(Out::Frame(Frame::Stderr(msg.into_bytes())));
            let _ = out.try_send(Out::Frame(Frame::Exited(Exited {
                code: Some(127),
                signal: None,
                ended_by: None,
            })));
            return Err(e);
        }
    };
    let finished = spec.finished.take();
    let sid = child.id();
    if let Some(hook) = spec.started.take() {
        (hook.0)(sid);
    }
    let members = Members {
        sid,
        marker: spec.marker.clone(),
        uid: spec.user.uid,
        not_before: None,
    };
    tracing::debug!(sid, path = %spec.command.path().display(), user = %spec.user.name, "session started");

    let mut st = State {
        sid,
        members,
        grace,
        kill_at: None,
        ended_by: None,
        exited: None,
        rec,
        rec_err: None,
        out,
        buffers,
        client_ok: true,
    };
    let mut stop_open = true;
    if let Some(reason) = stop.borrow_and_update().clone() {
        st.hangup(&reason);
    }
    let mut frames_open = true;
    // A task's input (it may hold a secret) goes to the command unrecorded, then end of
    // file; the caller's own input is not forwarded.
    let task_input = spec.stdin_data.take();
    let ignore_client_input = task_input.is_some();
    let mut eof_after_input = task_input.is_some();
    let mut pending_in: Vec<u8> = task_input.unwrap_or_default();
    if eof_after_input && pending_in.is_empty() {
        streams.input = Input::Closed;
    }
    let mut in_off = 0usize;
    let mut last_input: Option<u8> = None;
    let record_input = spec.record_input;
    // Inside a stretch of input typed with echo off: its marker is written once.
    let mut unechoed = false;
    let mut drained = [0usize; 2];
    let mut drain_until: Option<Instant> = None;
    let mut buf0 = st.buffers.take();
    let mut buf1 = st.buffers.take();

    loop {
        if st.exited.is_some() {
            // The command is gone: take what it left in the pipes or the terminal, without
            // waiting for more.
            for (i, buf) in [&mut buf0, &mut buf1].into_iter().enumerate() {
                while st.can_send() && !streams.eof[i] {
                    let Some(fd) = &streams.out[i] else { break };
                    match read_now(fd.get_ref(), buf) {
                        Ok(n) if n > 0 && drained[i] < DRAIN_LIMIT => {
                            drained[i] += n;
                            st.emit(i, buf);
                        }
                        _ => {
                            buf.truncate(FRAME_HEAD);
                            streams.eof[i] = true;
                        }
                    }
                }
            }
            if streams.eof.iter().all(|&e| e) {
                break;
            }
        }
        tokio::select! {
            status = child.wait(), if st.exited.is_none() => {
                let status = status?;
                st.exited = Some(status);
                drain_until = Some(Instant::now() + FINAL_FLUSH.max(grace));
                pending_in.clear();
                streams.input = Input::Closed;
            }
            r = read_opt(streams.out[0].as_ref(), &mut buf0),
                if !streams.eof[0] && st.exited.is_none() && st.can_send() => match r {
                    Ok(n) if n > 0 => st.emit(0, &mut buf0),
                    _ => streams.eof[0] = true,
                },
            r = read_opt(streams.out[1].as_ref(), &mut buf1),
                if !streams.eof[1] && st.exited.is_none() && st.can_send() => match r {
                    Ok(n) if n > 0 => st.emit(1, &mut buf1),
                    _ => streams.eof[1] = true,
                },
            open = async { st.out.reserve().await.is_ok() },
                if st.client_ok && st.out.capacity() == 0 => {
                if !open {
                    st.client_ok = false;
                    st.hangup("client disconnected");
                }
            }
            r = write_opt(streams.input_fd(), &pending_in[in_off..]), if !pending_in.is_empty() => {
                match r {
                    Ok(n) => in_off += n,
                    Err(_) => {
                        // The command closed its input (EPIPE) or the terminal is gone.
                        in_off = pending_in.len();
                        eof_after_input = true;
                    }
                }
                if in_off >= pending_in.len() {
                    pending_in.clear();
                    in_off = 0;
                    if eof_after_input && matches!(streams.input, Input::Pipe(_)) {
                        streams.input = Input::Closed;
                    }
                }
            }
            f = frames.recv(), if frames_open && pending_in.is_empty() => match f {
                None => {
                    frames_open = false;
                    st.client_ok = false;
                    st.hangup("client disconnected");
                }
                Some(Frame::Stdin(_) | Frame::StdinEof) if ignore_client_input => {}
                Some(Frame::Stdin(data)) => {
                    if record_input {
                        match streams.master() {
                            Some(m) if !echoes(m) => {
                                if !unechoed {
                                    st.record(|r| r.marker(UNECHOED_MARKER));
                                }
                                unechoed = true;
                            }
                            _ => {
                                unechoed = false;
                                st.record(|r| r.input(&data));
                            }
                        }
                    }
                    if streams.input_fd().is_some() && !data.is_empty() {
                        last_input = data.last().copied();
                        pending_in = data;
                    }
                }
                Some(Frame::StdinEof) => match streams.input {
                    Input::Pipe(_) => streams.input = Input::Closed,
                    Input::Pty => {
                        // The terminal's EOF character; a second one when a partial line
                        // is pending (the first only hands that line to the reader).
                        let veof = streams.master().map_or(4, veof_char);
                        pending_in = match last_input {
                            Some(b) if b != b'\n' && b != b'\r' && b != veof => vec![veof, veof],
                            _ => vec![veof],
                        };
                        last_input = Some(veof);
                    }
                    Input::Closed => {}
                },
                Some(Frame::Resize(ws)) => {
                    if let Some(master) = streams.master() {
                        set_winsize(master.get_ref(), ws);
                        st.record(|r| r.resize(ws.cols, ws.rows));
                    }
                }
                Some(Frame::Signal(n)) => {
                    if ALLOWED_SIGNALS.contains(&n) && st.exited.is_none() {
                        let pgrp = signal_target(sid, streams.master());
                        // SAFETY: plain kill(2) on a process group of this session (checked
                        // by `signal_target`: never 0, 1 or a group the agent is in).
                        unsafe { libc::kill(-pgrp, n) };
                    } else {
                        tracing::debug!(signal = n, "signal from client ignored");
                    }
                }
                Some(other) => tracing::warn!(?other, "unexpected frame from client ignored"),
            },
            r = stop.changed(), if stop_open => match r {
                Ok(()) => {
                    if let Some(reason) = stop.borrow_and_update().clone() {
                        st.hangup(&reason);
                    }
                }
                Err(_) => stop_open = false,
            },
            _ = sleep_opt(st.kill_at), if st.kill_at.is_some() && st.exited.is_none() => {
                tracing::info!(sid, "grace period over, killing session");
                st.members.signal(libc::SIGKILL);
                st.kill_at = None;
            }
            _ = sleep_opt(drain_until), if drain_until.is_some() => {
                streams.eof = [true, true];
            }
        }
    }

    if let Some(at) = st.kill_at {
        // Hung up and the command has gone, but what it left in its session (ignoring
        // SIGHUP) still gets its SIGKILL when the grace period ends. The group is not
        // signalled: its leader is reaped, so its number may belong to someone else.
        let left = Members {
            sid,
            marker: st.members.marker.clone(),
            uid: st.members.uid,
            not_before: None,
        };
        tokio::spawn(async move {
            tokio::time::sleep_until(at).await;
            for pid in left.find() {
                // SAFETY: plain kill(2).
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        });
    }
    let status = st.exited.expect("the loop ends after the exit");
    let ended_at = Timestamp::now();
    let exited = Exited {
        code: status.code(),
        signal: status.signal(),
        ended_by: st.ended_by.clone(),
    };
    let label = match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit {c}"),
        (None, Some(s)) => format!("signal {s}"),
        _ => "exit unknown".to_string(),
    };
    st.record(|r| r.marker(&label));
    if let Some(by) = &exited.ended_by {
        st.record(|r| r.marker(&format!("ended_by: {by}")));
    }
    let State {
        rec,
        rec_err,
        out,
        client_ok,
        ..
    } = st;
    // The caller hears the exit status first: what follows (the recording's end, its hash,
    // the queued description) is the agent's own bookkeeping, and the session's note has
    // been on disk since before the command ran.
    if client_ok {
        let exited = Out::Frame(Frame::Exited(exited.clone()));
        let _ = tokio::time::timeout(FINAL_FLUSH, out.send(exited)).await;
    }
    drop(out);
    let (recording_sha256, recording_bytes, recording_error) = match rec.finish() {
        Ok((_, summary)) => (
            summary.sha256,
            summary.bytes,
            rec_err.map(|e| e.to_string()),
        ),
        Err(e) => (
            String::new(),
            0,
            Some(rec_err.map_or_else(|| e.to_string(), |first| first.to_string())),
        ),
    };
    let outcome = SessionOutcome {
        exited,
        started_at,
        ended_at,
        recording_sha256,
        recording_bytes,
        recording_error,
    };
    if let Some(hook) = finished {
        (hook.0)(&outcome);
    }
    tracing::debug!(sid, exited = ?outcome.exited, "session ended");
    Ok(outcome)
}

struct Started {
    child: ChildProc,
    streams: Streams,
    rec: CastWriter<File>,
    started_at: Timestamp,
}

/// Everything up to a running command: the exec image, the recording, the terminal or
/// pipes, the spawn. Nothing has run when it fails (and no recording is left behind).
fn start(spec: &mut SessionSpec) -> Result<Started, ExecError> {
    let path = spec.command.path().to_path_buf();
    let spawn_err = |source| ExecError::Spawn {
        path: path.clone(),
        source,
    };
    let image = ExecImage::new(spec).map_err(spawn_err)?;

    let (cols, rows) = spec.tty.map_or((80, 24), |w| (w.cols, w.rows));
    let mut header = Header::new(u32::from(cols), u32::from(rows));
    header.timestamp = Some(Timestamp::now().as_second());
    header.command = Some(if spec.argv.is_empty() {
        path.display().to_string()
    } else {
        spec.argv.join(" ")
    });
    header.title = Some(spec.title.clone()).filter(|t| !t.is_empty());
    for (k, v) in &spec.env {
        if k == "TERM" || k == "SHELL" {
            header.env.insert(k.clone(), v.clone());
        }
    }
    // The child's ends of its standard streams. The agent's copies are closed once it has
    // started: end of file and EIO depend on it.
    let (streams, stdio) = match spec.tty {
        Some(ws) => {
            let winsize = nix::pty::Winsize {
                ws_row: ws.rows,
                ws_col: ws.cols,
                ws_xpixel: 0,
                ws_ypixel: 0,
            };
            let pty = nix::pty::openpty(&winsize, None).map_err(ExecError::Pty)?;
            set_cloexec(&pty.master).map_err(ExecError::Pty)?;
            set_cloexec(&pty.slave).map_err(ExecError::Pty)?;
            set_nonblocking(&pty.master).map_err(ExecError::Pty)?;
            let streams = Streams {
                out: [Some(async_fd(pty.master)?), None],
                eof: [false, true],
                input: Input::Pty,
            };
            (
                streams,
                [pty.slave.try_clone()?, pty.slave.try_clone()?, pty.slave],
            )
        }
        None => {
            let (in_r, in_w) = pipe()?;
            let (out_r, out_w) = pipe()?;
            let (err_r, err_w) = pipe()?;
            for fd in [&in_w, &out_r, &err_r] {
                set_nonblocking(fd).map_err(io::Error::from)?;
            }
            // The output pipes grow to PIPE_SIZE once one is found full (`read_now`): most
            // commands write little, and growing a pipe costs a tenth of a millisecond.
            let streams = Streams {
                out: [Some(async_fd(out_r)?), Some(async_fd(err_r)?)],
                eof: [false, false],
                input: Input::Pipe(async_fd(in_w)?),
            };
            (streams, [in_r, out_w, err_w])
        }
    };
    let mut rec =
        CastWriter::create(&spec.recording, &header).map_err(|source| ExecError::Recording {
            path: spec.recording.clone(),
            source,
        })?;
    if let Some(tap) = spec.live.take() {
        rec.tap(tap);
    }

    let started_at = Timestamp::now();
    let spawned = spawn(&image, stdio.each_ref().map(|fd| fd.as_raw_fd()));
    drop(stdio);
    match spawned {
        Ok(child) => Ok(Started {
            child,
            streams,
            rec,
            started_at,
        }),
        Err(source) => {
            drop(rec);
            let _ = std::fs::remove_file(&spec.recording);
            Err(spawn_err(source))
        }
    }
}

/// The process group a client's signal goes to: in a terminal, the foreground job, as typed
/// signals do, but only a group of this session; otherwise (no terminal, a command that gave
/// up its terminal with `TIOCNOTTY` so the foreground group reads 0, a group outside the
/// session) the session's own group, whose id is the session id. Never 0 or 1 (`kill(0)`
/// would signal the agent's own group, `kill(-1)` everything) and never the agent's group.
fn signal_target(sid: i32, master: Option<&AsyncFd<OwnedFd>>) -> i32 {
    let foreground = master
        .and_then(|m| nix::unistd::tcgetpgrp(m.get_ref()).ok())
        .map(|p| p.as_raw());
    let own = nix::unistd::getpgrp().as_raw();
    match foreground {
        Some(p)
            if p >= 2
                && p != own
                && nix::unistd::getsid(Some(nix::unistd::Pid::from_raw(p)))
                    .is_ok_and(|s| s.as_raw() == sid) =>
        {
            p
        }
        _ => sid,
    }
}

fn async_fd(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: the `OwnedFd` is moved in and stays open, the same descriptor, until the
    // `AsyncFd` is dropped.
    Ok(unsafe { AsyncFd::register(fd) }?)
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(nix::unistd::pipe2(OFlag::O_CLOEXEC)?)
}

fn set_cloexec(fd: &OwnedFd) -> nix::Result<()> {
    fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map(drop)
}

fn set_nonblocking(fd: &OwnedFd) -> nix::Result<()> {
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK)).map(drop)
}

fn set_winsize(fd: &OwnedFd, ws: WinSize) {
    let w = libc::winsize {
        ws_row: ws.rows,
        ws_col: ws.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a `winsize` we own; the kernel then sends SIGWINCH to the
    // terminal's foreground process group.
    unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &w) };
}

/// The marker recorded in place of input typed while the terminal did not echo it.
pub const UNECHOED_MARKER: &str = "input not recorded: typed with echo off";

/// Whether the terminal echoes what is typed (its line discipline's ECHO flag, read through
/// the master). Unknown counts as not echoing: the input is then not recorded.
fn echoes(master: &AsyncFd<OwnedFd>) -> bool {
    tcgetattr(master.get_ref().as_fd())
        .map(|t| t.local_flags.contains(LocalFlags::ECHO))
        .unwrap_or(false)
}

fn veof_char(master: &AsyncFd<OwnedFd>) -> u8 {
    tcgetattr(master.get_ref().as_fd())
        .map(|t| t.control_chars[SpecialCharacterIndices::VEOF as usize])
        .unwrap_or(4)
}

/// One non-blocking read appended to `buf`, at most its spare capacity; end of file for a
/// terminal whose other side is closed (EIO).
fn read_now(fd: &OwnedFd, buf: &mut Vec<u8>) -> io::Result<usize> {
    let spare = buf.spare_capacity_mut();
    let (ptr, room) = (spare.as_mut_ptr(), spare.len());
    loop {
        // SAFETY: the kernel writes at most `room` bytes into the spare capacity; `set_len`
        // then covers only what it wrote.
        let n = unsafe { libc::read(fd.as_raw_fd(), ptr.cast(), room) };
        if n >= 0 {
            let n = n as usize;
            unsafe { buf.set_len(buf.len() + n) };
            if n >= DEFAULT_PIPE_SIZE {
                grow_pipe(fd);
            }
            return Ok(n);
        }
        match Errno::last() {
            Errno::EINTR => continue,
            Errno::EIO => return Ok(0),
            e => return Err(e.into()),
        }
    }
}

/// A pipe's capacity unless changed (Linux).
const DEFAULT_PIPE_SIZE: usize = 64 * 1024;

/// A read found the pipe `fd` full: the command writes fast, so the pipe grows to
/// [`PIPE_SIZE`] (it runs ahead while its output is forwarded and recorded, with fewer,
/// larger reads). Best effort; a terminal is left alone.
fn grow_pipe(fd: &OwnedFd) {
    // SAFETY: F_GETPIPE_SZ and F_SETPIPE_SZ on a descriptor we own (they fail harmlessly on
    // anything but a pipe).
    unsafe {
        let size = libc::fcntl(fd.as_raw_fd(), libc::F_GETPIPE_SZ);
        if size > 0 && size < PIPE_SIZE {
            libc::fcntl(fd.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE);
        }
    }
}

/// Reads when `fd` is readable; never completes for a closed stream.
async fn read_opt(fd: Option<&AsyncFd<OwnedFd>>, buf: &mut Vec<u8>) -> io::Result<usize> {
    let Some(fd) = fd else {
        return std::future::pending().await;
    };
    loop {
        let mut guard = fd.readable().await?;
        if let Ok(r) = guard.try_io(|inner| read_now(inner.get_ref(), buf)) {
            return r;
        }
    }
}

/// Writes some of `data` when `fd` is writable; never completes for a closed stream.
async fn write_opt(fd: Option<&AsyncFd<OwnedFd>>, data: &[u8]) -> io::Result<usize> {
    let Some(fd) = fd else {
        return std::future::pending().await;
    };
    loop {
        let mut guard = fd.writable().await?;
        let r = guard.try_io(|inner| {
            loop {
                match nix::unistd::write(inner.get_ref(), data) {
                    Err(Errno::EINTR) => continue,
                    r => return r.map_err(io::Error::from),
                }
            }
        });
        if let Ok(r) = r {
            return r;
        }
    }
}

async fn sleep_opt(until: Option<Instant>) {
    match until {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;

mod spawn;
use spawn::{ChildProc, ExecImage, spawn};
