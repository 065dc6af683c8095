//! `pedm exec` and `pedm shell`: the caller's side of the agent's socket protocol
//! (`pedm_api::socket`).
//!
//! The terminal is put in raw mode while the command runs so that every key (Ctrl-C, Ctrl-Z,
//! Ctrl-D...) reaches the command's pseudo-terminal as a byte, as with ssh; signals sent to
//! this process (SIGTERM, SIGHUP, and SIGINT/SIGQUIT when there is no terminal) and window
//! size changes are forwarded as frames. Stdin is read on a thread of its own because a
//! blocking read cannot be cancelled and must not hold the runtime open at exit.

use anyhow::{Context, bail};
use pedm_api::socket::{Exited, Frame, StartExec, WinSize, read_frame, write_frame};
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::path::Path;
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

/// Stdin is forwarded in pieces of at most this size.
const CHUNK: usize = 32 * 1024;
/// Frames from the agent are read through a buffer of this size: a frame's head and small
/// frames take no system call of their own.
const READ_BUFFER: usize = 64 * 1024;
/// Frames queued for the agent; stdin only uses the queue while this much room is left, so
/// signals and resizes always fit and output is never held up by input.
const QUEUE: usize = 32;
const RESERVED: usize = 4;

/// How the agent answered `Start`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    Accepted,
    Refused(String),
}

/// Runs one command through the agent at `socket` and returns the status to exit with: the
/// command's own (128 + signal when a signal ended it), 1 when the agent refused. `start.tty`
/// is filled here from the terminal on stdin (or left `None`: pipes). Errors (agent
/// unreachable, connection lost) name the socket; the caller exits 3 for them.
pub async fn run(socket: &Path, mut start: StartExec) -> anyhow::Result<i32> {
    let stdin = std::io::stdin();
    // A task's input comes from its definition: no terminal, nothing forwarded.
    let tty = start.task.is_none() && nix::unistd::isatty(stdin.as_fd()).unwrap_or(false);
    start.tty = if tty { Some(window_size()) } else { None };

    let stream = UnixStream::connect(socket).await.with_context(|| {
        format!(
            "cannot reach pedm-agent at {}; is pedm-agent running?",
            socket.display()
        )
    })?;
    let (mut rd, mut wr) = stream.into_split();
    match handshake(&mut rd, &mut wr, start)
        .await
        .with_context(|| format!("talking to pedm-agent at {}", socket.display()))?
    {
        Answer::Refused(reason) => {
            eprintln!("pedm: refused: {}", pedm_core::text::terminal_safe(&reason));
            return Ok(1);
        }
        Answer::Accepted => {}
    }

    let raw = if tty { Some(RawMode::enter()?) } else { None };
    let (stdin_tx, stdin_rx) = mpsc::channel(4);
    std::thread::spawn(move || read_stdin(stdin_tx));
    let (control_tx, control_rx) = mpsc::channel(8);
    let signals = tokio::spawn(forward_signals(control_tx, tty));

    let result = pump(
        rd,
        wr,
        stdin_rx,
        control_rx,
        &mut std::io::stdout(),
        &mut std::io::stderr(),
    )
    .await;
    signals.abort();
    // Restore the terminal before printing anything of our own.
    drop(raw);
    let exited = result.with_context(|| format!("pedm-agent at {}", socket.display()))?;
    if let Some(by) = &exited.ended_by {
        eprintln!(
            "pedm: session ended: {}",
            pedm_core::text::terminal_safe(by)
        );
    }
    Ok(exited.status())
}

/// The caller's environment as strings, for `StartExec::env` (variables that are not UTF-8
/// are left out); the agent keeps only its safe list.
pub fn caller_env() -> Vec<(String, String)> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}

async fn handshake(
    rd: &mut OwnedReadHalf,
    wr: &mut OwnedWriteHalf,
    start: StartExec,
) -> anyhow::Result<Answer> {
    write_frame(wr, &Frame::Start(start)).await?;
    match read_frame(rd).await? {
        Some(Frame::Accepted(_)) => Ok(Answer::Accepted),
        Some(Frame::Refused(r)) => Ok(Answer::Refused(r.reason)),
        Some(other) => bail!("unexpected answer {}", kind(&other)),
        None => bail!("the agent closed the connection without answering"),
    }
}

/// Moves bytes and frames until the agent reports the exit.
async fn pump(
    rd: OwnedReadHalf,
    mut wr: OwnedWriteHalf,
    mut stdin: mpsc::Receiver<Vec<u8>>,
    mut control: mpsc::Receiver<Frame>,
    out: &mut impl Write,
    err: &mut impl Write,
) -> anyhow::Result<Exited> {
    // Reading and writing the connection happen on tasks of their own: a frame read is not
    // cancellable, and a write held up by the agent must not stop output from arriving.
    let (from_agent_tx, mut from_agent) = mpsc::channel::<anyhow::Result<Frame>>(16);
    let mut rd = tokio::io::BufReader::with_capacity(READ_BUFFER, rd);
    let reader = tokio::spawn(async move {
        loop {
            let item = match read_frame(&mut rd).await {
                Ok(Some(frame)) => Ok(frame),
                Ok(None) => Err(anyhow::anyhow!(
                    "the connection closed before the command's exit status arrived"
                )),
                Err(e) => Err(anyhow::anyhow!("lost the connection: {e}")),
            };
            let last = item.is_err();
            if from_agent_tx.send(item).await.is_err() || last {
                return;
            }
        }
    });
    let (to_agent, mut to_agent_rx) = mpsc::channel::<Frame>(QUEUE);
    let writer = tokio::spawn(async move {
        while let Some(frame) = to_agent_rx.recv().await {
            if write_frame(&mut wr, &frame).await.is_err() {
                return;
            }
        }
    });

    let mut stdin_open = true;
    let mut control_open = true;
    let result = loop {
        tokio::select! {
            item = from_agent.recv() => match item {
                Some(Ok(Frame::Stdout(data))) => {
                    out.write_all(&data)?;
                    out.flush()?;
                }
                Some(Ok(Frame::Stderr(data))) => {
                    err.write_all(&data)?;
                    err.flush()?;
                }
                Some(Ok(Frame::Exited(exited))) => break Ok(exited),
                Some(Ok(other)) => break Err(anyhow::anyhow!("unexpected {} frame", kind(&other))),
                Some(Err(e)) => break Err(e),
                None => break Err(anyhow::anyhow!("lost the connection")),
            },
            data = stdin.recv(), if stdin_open && to_agent.capacity() > RESERVED => {
                let frame = match data {
                    Some(d) => Frame::Stdin(d),
                    None => {
                        stdin_open = false;
                        Frame::StdinEof
                    }
                };
                let _ = to_agent.try_send(frame);
            }
            frame = control.recv(), if control_open => match frame {
                Some(f) => {
                    let _ = to_agent.try_send(f);
                }
                None => control_open = false,
            },
        }
    };
    reader.abort();
    writer.abort();
    result
}

/// Reads stdin until end of file (or an error, taken as the end), then closes the channel.
fn read_stdin(tx: mpsc::Sender<Vec<u8>>) {
    let mut stdin = std::io::stdin().lock();
    let mut buf = vec![0u8; CHUNK];
    loop {
        match stdin.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if tx.blocking_send(buf[..n].to_vec()).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        }
    }
}

/// Turns this process's signals into frames for the command. With a terminal, Ctrl-C and
/// Ctrl-\ arrive as bytes in raw mode, so SIGINT/SIGQUIT only come from `kill`; they are
/// forwarded all the same.
async fn forward_signals(tx: mpsc::Sender<Frame>, tty: bool) {
    let registered = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
        signal(SignalKind::quit()),
        signal(SignalKind::window_change()),
    );
    let (Ok(mut int), Ok(mut term), Ok(mut hup), Ok(mut quit), Ok(mut winch)) = registered else {
        return;
    };
    loop {
        let frame = tokio::select! {
            Some(()) = int.recv() => Frame::Signal(libc::SIGINT),
            Some(()) = term.recv() => Frame::Signal(libc::SIGTERM),
            Some(()) = hup.recv() => Frame::Signal(libc::SIGHUP),
            Some(()) = quit.recv() => Frame::Signal(libc::SIGQUIT),
            Some(()) = winch.recv(), if tty => Frame::Resize(window_size()),
            else => return,
        };
        if tx.send(frame).await.is_err() {
            return;
        }
    }
}

/// The size of the terminal on stdin (80x24 when it does not say).
fn window_size() -> WinSize {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ fills the struct we own.
    let ok = unsafe { libc::ioctl(libc::STDIN_FILENO, libc::TIOCGWINSZ, &mut ws) } == 0;
    if ok && ws.ws_row > 0 && ws.ws_col > 0 {
        WinSize {
            rows: ws.ws_row,
            cols: ws.ws_col,
        }
    } else {
        WinSize { rows: 24, cols: 80 }
    }
}

/// The terminal in raw mode for as long as this lives; dropping it (on every path out of
/// `run`, panics included) restores the settings found.
struct RawMode {
    saved: nix::sys::termios::Termios,
}

impl RawMode {
    fn enter() -> anyhow::Result<RawMode> {
        use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};
        let stdin = std::io::stdin();
        let saved = tcgetattr(stdin.as_fd()).context("reading the terminal settings")?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(stdin.as_fd(), SetArg::TCSADRAIN, &raw)
            .context("putting the terminal in raw mode")?;
        Ok(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        use nix::sys::termios::{SetArg, tcsetattr};
        let _ = tcsetattr(std::io::stdin().as_fd(), SetArg::TCSADRAIN, &self.saved);
    }
}

fn kind(frame: &Frame) -> &'static str {
    match frame {
        Frame::Start(_) => "start",
        Frame::Stdin(_) => "stdin",
        Frame::StdinEof => "stdin-eof",
        Frame::Resize(_) => "resize",
        Frame::Signal(_) => "signal",
        Frame::Accepted(_) => "accepted",
        Frame::Refused(_) => "refused",
        Frame::Stdout(_) => "stdout",
        Frame::Stderr(_) => "stderr",
        Frame::Exited(_) => "exited",
        Frame::Check(_) => "check",
        Frame::Allowed(_) => "allowed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pedm_api::socket::Refused;
    use tokio::net::UnixListener;

    fn start() -> StartExec {
        StartExec {
            argv: vec!["/usr/bin/id".into()],
            grant: None,
            shell: false,
            cwd: None,
            tty: None,
            env: caller_env(),
            task: None,
        }
    }

    #[tokio::test]
    async fn an_unreachable_agent_is_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("agent.sock");
        let e = run(&socket, start()).await.unwrap_err();
        let msg = format!("{e:#}");
        assert!(msg.starts_with(&format!("cannot reach pedm-agent at {}", socket.display())));
        assert!(msg.contains("is pedm-agent running?"), "{msg}");
    }

    #[tokio::test]
    async fn a_refusal_returns_1() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("agent.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let agent = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let Some(Frame::Start(s)) = read_frame(&mut conn).await.unwrap() else {
                panic!("no start");
            };
            let refused = Refused {
                reason: "no active grant on this host".into(),
            };
            write_frame(&mut conn, &Frame::Refused(refused))
                .await
                .unwrap();
            s
        });
        assert_eq!(run(&socket, start()).await.unwrap(), 1);
        let seen = agent.await.unwrap();
        assert_eq!(seen.argv, ["/usr/bin/id"]);
        assert!(seen.env.iter().any(|(k, _)| k == "PATH"));
    }

    #[tokio::test]
    async fn input_output_signals_and_the_exit_status_flow_through() {
        let (client, mut agent) = UnixStream::pair().unwrap();
        let (rd, wr) = client.into_split();
        let (stdin_tx, stdin_rx) = mpsc::channel(4);
        let (control_tx, control_rx) = mpsc::channel(4);
        let agent = tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut eof = false;
            // Echo stdin back on stdout until EOF and both control frames arrived (in
            // whatever order), then report a signal death.
            while !eof || seen.len() < 2 {
                match read_frame(&mut agent).await.unwrap().unwrap() {
                    Frame::Stdin(d) => {
                        write_frame(&mut agent, &Frame::Stdout(d)).await.unwrap();
                    }
                    Frame::StdinEof => eof = true,
                    other => seen.push(other),
                }
            }
            write_frame(&mut agent, &Frame::Stderr(b"bye\n".to_vec()))
                .await
                .unwrap();
            let exited = Exited {
                code: None,
                signal: Some(15),
                ended_by: Some("grant revoked".into()),
            };
            write_frame(&mut agent, &Frame::Exited(exited))
                .await
                .unwrap();
            seen
        });
        let mut out = Vec::new();
        let mut err = Vec::new();
        let feeder = async {
            control_tx.send(Frame::Signal(libc::SIGTERM)).await.unwrap();
            control_tx
                .send(Frame::Resize(WinSize { rows: 5, cols: 7 }))
                .await
                .unwrap();
            stdin_tx.send(b"hello ".to_vec()).await.unwrap();
            stdin_tx.send(b"world".to_vec()).await.unwrap();
            drop(stdin_tx);
        };
        let (exited, ()) = tokio::join!(
            pump(rd, wr, stdin_rx, control_rx, &mut out, &mut err),
            feeder
        );
        let exited = exited.unwrap();
        assert_eq!(exited.status(), 128 + 15);
        assert_eq!(exited.ended_by.as_deref(), Some("grant revoked"));
        assert_eq!(out, b"hello world");
        assert_eq!(err, b"bye\n");
        let seen = agent.await.unwrap();
        assert!(seen.contains(&Frame::Signal(libc::SIGTERM)), "{seen:?}");
        assert!(seen.contains(&Frame::Resize(WinSize { rows: 5, cols: 7 })));
    }

    #[tokio::test]
    async fn a_connection_lost_before_the_exit_is_an_error() {
        let (client, agent) = UnixStream::pair().unwrap();
        let (rd, wr) = client.into_split();
        let (_stdin_tx, stdin_rx) = mpsc::channel(1);
        let (_control_tx, control_rx) = mpsc::channel(1);
        drop(agent);
        let e = pump(
            rd,
            wr,
            stdin_rx,
            control_rx,
            &mut Vec::new(),
            &mut Vec::new(),
        )
        .await
        .unwrap_err();
        assert!(
            e.to_string().contains("before the command's exit status"),
            "{e}"
        );
    }
}
