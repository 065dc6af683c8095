//! Checking an intercepted exec after it happened, as sudo's `intercept_verify` does.
//!
//! The intercept gate ([`super::execs`]) reads an exec's path and argv from the caller's
//! memory while the kernel holds the call, decides, and lets it continue; the kernel then
//! reads that memory again. Another thread of the caller (or a process sharing the memory)
//! could rewrite it in between, and run something other than what was decided. So the gate
//! tells this verifier what it allowed ([`ExecVerifier::expect`]), and when the kernel reports
//! the exec done (the process connector's `PROC_EVENT_EXEC`, a netlink multicast only root
//! may join), the verifier compares what now runs with it: the program (`/proc/PID/exe`, the
//! same file by device and inode as the one checked) and the arguments (`/proc/PID/cmdline`).
//! What does not match is killed at once and reported.
//!
//! Limits: the program runs from its exec until the verifier's kill (typically well under a
//! millisecond; sudo's ptrace-based check stops it before it runs). A program that rewrites
//! its own arguments at once (setproctitle) before the check reads them is killed. For a
//! `#!` script the interpreter runs: only the arguments after the script are compared.
//!
//! The verifier joins the process connector's group only while it expects an exec: every
//! process event of the host (each fork, exec and exit) wakes it while it is a member, so
//! a host without intercept sessions running pays nothing for it.
//!
//! This module's `unsafe` blocks are the netlink socket's system calls (nix does not speak
//! the process connector), each with its reason.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `connector.h`: the process events' index and value.
const CN_IDX_PROC: u32 = 1;
const CN_VAL_PROC: u32 = 1;
/// `cn_proc.h`: the operation that starts listening, and the exec event.
const PROC_CN_MCAST_LISTEN: u32 = 1;
const PROC_CN_MCAST_IGNORE: u32 = 2;
const PROC_EVENT_EXEC: u32 = 0x0000_0002;
/// `netlink.h`: a message with no more parts.
const NLMSG_DONE: u16 = 3;
const NLMSG_HDRLEN: usize = 16;
/// `cn_msg`: idx, val, seq, ack (u32 each), len, flags (u16 each).
const CN_MSG_LEN: usize = 20;
/// An expectation not met by an exec event within this long is forgotten (the exec failed).
const FORGET_AFTER: Duration = Duration::from_secs(30);

/// What an exec was allowed as.
#[derive(Debug, Clone)]
pub struct Allowed {
    /// The checked binary's device and inode (`None` for a script: its interpreter runs).
    pub binary: Option<(u64, u64)>,
    pub argv: Vec<String>,
}

/// Called once the exec is checked, with the pid: `Err` with what did not match, after the
/// process was killed.
pub type OnChecked = Box<dyn FnOnce(i32, Result<(), String>) + Send>;

struct Expected {
    allowed: Allowed,
    /// CLOCK_MONOTONIC when it was allowed: exec events from before are an earlier exec's.
    since_ns: u64,
    at: Instant,
    on_checked: OnChecked,
}

/// Listens for exec events and checks the ones the gate allowed.
pub struct ExecVerifier {
    state: Mutex<State>,
    /// The process connector's socket (a member of its group only while something is
    /// expected).
    sock: Arc<OwnedFd>,
}

#[derive(Default)]
struct State {
    /// By thread-group id (the process id after the exec).
    pending: HashMap<i32, Expected>,
    subscribed: bool,
}

impl State {
    /// Leaves the group once nothing is expected.
    fn unsubscribe_if_idle(&mut self, sock: &OwnedFd) {
        self.pending.retain(|_, e| e.at.elapsed() < FORGET_AFTER);
        if self.pending.is_empty() && self.subscribed {
            if let Err(e) = membership(sock, false) {
                tracing::warn!(error = %e, "exec verification: cannot leave the process events");
            }
            self.subscribed = false;
        }
    }
}

impl ExecVerifier {
    /// Joins the process connector and starts the listening thread. Fails where the kernel
    /// has no process connector or the agent may not join it (not root).
    pub fn start() -> io::Result<Arc<ExecVerifier>> {
        let sock = Arc::new(connect()?);
        // Joining works here, or start fails (the agent then says intercept is unverified).
        membership(&sock, true)?;
        membership(&sock, false)?;
        let this = Arc::new(ExecVerifier {
            state: Mutex::new(State::default()),
            sock: sock.clone(),
        });
        let weak = Arc::downgrade(&this);
        std::thread::Builder::new()
            .name("exec-verify".into())
            .spawn(move || {
                let mut buf = vec![0u8; 8192];
                loop {
                    let n = match nix::unistd::read(&sock, &mut buf) {
                        Ok(n) => n,
                        // ENOBUFS: events were lost under load; the expectations for them
                        // time out (their execs ran unchecked; logged).
                        Err(nix::errno::Errno::ENOBUFS) => {
                            tracing::warn!("exec verification: the kernel dropped events");
                            continue;
                        }
                        Err(nix::errno::Errno::EINTR) => continue,
                        Err(e) => {
                            tracing::error!(error = %e, "exec verification stopped");
                            return;
                        }
                    };
                    let Some(v) = weak.upgrade() else { return };
                    for (tgid, at_ns) in exec_events(&buf[..n]) {
                        v.exec_done(tgid, at_ns);
                    }
                    v.state
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .unsubscribe_if_idle(&v.sock);
                }
            })?;
        Ok(this)
    }

    /// Notes that process `tid` (a thread id, as seccomp reports it) was allowed to exec
    /// `allowed`; called before the exec continues.
    pub fn expect(&self, tid: i32, allowed: Allowed, on_checked: OnChecked) {
        let tgid = thread_group(tid).unwrap_or(tid);
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.pending.retain(|_, e| e.at.elapsed() < FORGET_AFTER);
        // Before the exec continues: its event cannot come before the membership.
        if !st.subscribed {
            match membership(&self.sock, true) {
                Ok(()) => st.subscribed = true,
                Err(e) => {
                    tracing::error!(error = %e, "exec verification: cannot join the process events");
                }
            }
        }
        st.pending.insert(
            tgid,
            Expected {
                allowed,
                since_ns: monotonic_ns(),
                at: Instant::now(),
                on_checked,
            },
        );
    }

    /// Process `tgid` completed an exec at `at_ns` (CLOCK_MONOTONIC).
    fn exec_done(&self, tgid: i32, at_ns: u64) {
        let e = {
            let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            match st.pending.get(&tgid) {
                // An earlier exec of the same process, reported late: not the one allowed.
                Some(e) if at_ns < e.since_ns => return,
                Some(_) => st.pending.remove(&tgid),
                None => return,
            }
        };
        let Some(e) = e else { return };
        match mismatch(tgid, &e.allowed) {
            Some(why) => {
                // SAFETY: plain kill(2) of the process that runs what it was not allowed.
                unsafe { libc::kill(tgid, libc::SIGKILL) };
                tracing::warn!(pid = tgid, why, "exec changed after its check; killed");
                (e.on_checked)(tgid, Err(why));
            }
            None => (e.on_checked)(tgid, Ok(())),
        }
    }
}

/// Why what process `pid` runs now is not what was allowed, if it is not.
fn mismatch(pid: i32, allowed: &Allowed) -> Option<String> {
    if !alive(pid) {
        return None;
    }
    let cmdline = match std::fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(c) => c,
        // Gone already: nothing left to stop (what it did is its session's).
        Err(_) => return None,
    };
    let running: Vec<String> = cmdline
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect::<Vec<_>>();
    let running = match running.split_last() {
        Some((last, rest)) if last.is_empty() => rest.to_vec(),
        _ => running,
    };
    if let Some((dev, ino)) = allowed.binary {
        match std::fs::metadata(format!("/proc/{pid}/exe")) {
            Ok(m) if (m.dev(), m.ino()) == (dev, ino) => {}
            Ok(_) => {
                let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
                return Some(format!(
                    "runs {} instead of the program that was checked",
                    exe.display()
                ));
            }
            // Exited already (a zombie has no program), or exiting (its memory, and with it
            // its program, already released): nothing left to stop.
            Err(_) if !alive(pid) || exiting(pid) => return None,
            // Running, yet its program cannot be shown to be the one allowed: not let run.
            Err(e) => return Some(format!("its program cannot be read: {e}")),
        }
        if running != allowed.argv {
            return Some(format!(
                "runs with the arguments {running:?} instead of {:?}",
                allowed.argv
            ));
        }
    } else {
        // A script: the kernel puts the interpreter (and its option) before the script's
        // path; the script's own arguments come last.
        let tail = allowed.argv.get(1..).unwrap_or_default();
        if !running.ends_with(tail) {
            return Some(format!(
                "runs with the arguments {running:?}, not ending in {tail:?}"
            ));
        }
    }
    None
}

/// Whether process `pid` exists and has not exited (a zombie has no program or arguments).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z')))
        .unwrap_or(false)
}

/// Whether process `pid` is on its way out (`PF_EXITING` in its flags).
fn exiting(pid: i32) -> bool {
    const PF_EXITING: u64 = 0x4;
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let (_, rest) = s.rsplit_once(") ")?;
            rest.split_whitespace().nth(6)?.parse::<u64>().ok()
        })
        .is_some_and(|flags| flags & PF_EXITING != 0)
}

/// A thread's process (thread group) id.
fn thread_group(tid: i32) -> Option<i32> {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
}

/// The process connector's socket, not yet a member of its group.
fn connect() -> io::Result<OwnedFd> {
    // SAFETY: socket(2) with constant arguments; the descriptor is owned at once.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::NETLINK_CONNECTOR,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket(2) and is owned by nothing else.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: a zeroed sockaddr_nl is valid; its fields are then set.
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    // SAFETY: bind(2) reads the sockaddr_nl we own, with its size.
    let bound = unsafe {
        libc::bind(
            sock.as_raw_fd(),
            (&addr as *const libc::sockaddr_nl).cast(),
            size_of_val(&addr) as libc::socklen_t,
        )
    };
    if bound != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(sock)
}

/// Joins (listening to process events) or leaves the process connector's group.
fn membership(sock: &OwnedFd, join: bool) -> io::Result<()> {
    let group: u32 = CN_IDX_PROC;
    let (opt, op) = if join {
        (libc::NETLINK_ADD_MEMBERSHIP, PROC_CN_MCAST_LISTEN)
    } else {
        (libc::NETLINK_DROP_MEMBERSHIP, PROC_CN_MCAST_IGNORE)
    };
    if !join {
        control(sock, op)?;
    }
    // SAFETY: setsockopt(2) reads the u32 we own, with its size.
    let set = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_NETLINK,
            opt,
            (&raw const group).cast(),
            size_of::<u32>() as libc::socklen_t,
        )
    };
    if set != 0 {
        return Err(io::Error::last_os_error());
    }
    if join {
        control(sock, op)?;
    }
    Ok(())
}

/// Tells the process connector to start (LISTEN) or stop (IGNORE) sending process events.
fn control(sock: &OwnedFd, op: u32) -> io::Result<()> {
    let mut msg = Vec::with_capacity(NLMSG_HDRLEN + CN_MSG_LEN + 4);
    let total = (NLMSG_HDRLEN + CN_MSG_LEN + 4) as u32;
    msg.extend_from_slice(&total.to_ne_bytes());
    msg.extend_from_slice(&NLMSG_DONE.to_ne_bytes());
    msg.extend_from_slice(&0u16.to_ne_bytes()); // flags
    msg.extend_from_slice(&0u32.to_ne_bytes()); // seq
    msg.extend_from_slice(&std::process::id().to_ne_bytes());
    msg.extend_from_slice(&CN_IDX_PROC.to_ne_bytes());
    msg.extend_from_slice(&CN_VAL_PROC.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes()); // seq
    msg.extend_from_slice(&0u32.to_ne_bytes()); // ack
    msg.extend_from_slice(&4u16.to_ne_bytes()); // len
    msg.extend_from_slice(&0u16.to_ne_bytes()); // flags
    msg.extend_from_slice(&op.to_ne_bytes());
    let sent = nix::unistd::write(sock, &msg)?;
    if sent != msg.len() {
        return Err(io::Error::other("short write to the process connector"));
    }
    Ok(())
}

fn monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

/// The exec events in one datagram: thread-group id and when (CLOCK_MONOTONIC ns).
fn exec_events(mut buf: &[u8]) -> Vec<(i32, u64)> {
    let u32_at = |b: &[u8], at: usize| -> Option<u32> {
        Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
    };
    let u64_at = |b: &[u8], at: usize| -> Option<u64> {
        Some(u64::from_ne_bytes(b.get(at..at + 8)?.try_into().ok()?))
    };
    let mut out = vec![];
    while buf.len() >= NLMSG_HDRLEN {
        let Some(len) = u32_at(buf, 0).map(|l| l as usize) else {
            break;
        };
        if len < NLMSG_HDRLEN || len > buf.len() {
            break;
        }
        let msg = &buf[NLMSG_HDRLEN..len];
        // cn_msg, then proc_event: what (u32), cpu (u32), timestamp (u64), then for an exec
        // the process's pid and tgid.
        let event = msg.get(CN_MSG_LEN..).unwrap_or_default();
        if u32_at(event, 0) == Some(PROC_EVENT_EXEC)
            && let (Some(at), Some(tgid)) = (u64_at(event, 8), u32_at(event, 20))
        {
            out.push((tgid as i32, at));
        }
        // Messages are 4-byte aligned.
        let next = len.div_ceil(4) * 4;
        buf = buf.get(next..).unwrap_or_default();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_program_other_than_the_one_allowed_is_killed_the_allowed_one_runs() {
        let v = match ExecVerifier::start() {
            Ok(v) => v,
            Err(e) => {
                eprintln!("skipped: no process connector here ({e})");
                return;
            }
        };
        let member = || v.state.lock().unwrap().subscribed;
        assert!(
            !member(),
            "idle: not listening to the host's process events"
        );
        let sleep = std::fs::metadata("/bin/sleep").unwrap();
        let truth = std::fs::metadata("/bin/true").unwrap();
        // A child that waits for a byte on stdin, then execs sleep: the verifier is told
        // it was allowed to exec /bin/true (as if the path were swapped after the check).
        // As in the gate, whose call waits in the kernel while it is checked, the process's
        // own earlier exec is over (it says so) before the expectation is noted.
        let spawn = || {
            let mut c = std::process::Command::new("/bin/sh")
                .args(["-c", "echo ready; read x; exec /bin/sleep 30"])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let mut ready = [0u8; 6];
            std::io::Read::read_exact(c.stdout.as_mut().unwrap(), &mut ready).unwrap();
            c
        };
        let (tx, rx) = std::sync::mpsc::channel();
        let mut liar = spawn();
        v.expect(
            liar.id() as i32,
            Allowed {
                binary: Some((truth.dev(), truth.ino())),
                argv: vec!["/bin/true".into()],
            },
            Box::new(move |pid, why| tx.send((pid, why)).unwrap()),
        );
        use std::io::Write;
        liar.stdin.take().unwrap().write_all(b"\n").unwrap();
        let (pid, checked) = rx.recv_timeout(Duration::from_secs(10)).expect("a check");
        assert_eq!(pid, liar.id() as i32);
        let why = checked.unwrap_err();
        assert!(why.contains("sleep"), "{why}");
        let st = liar.wait().unwrap();
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&st), Some(9));

        // Allowed exactly what it runs: left alone.
        let (tx, rx) = std::sync::mpsc::channel();
        let mut honest = spawn();
        v.expect(
            honest.id() as i32,
            Allowed {
                binary: Some((sleep.dev(), sleep.ino())),
                argv: vec!["/bin/sleep".into(), "30".into()],
            },
            Box::new(move |pid, why| tx.send((pid, why)).unwrap()),
        );
        honest.stdin.take().unwrap().write_all(b"\n").unwrap();
        let (pid, checked) = rx.recv_timeout(Duration::from_secs(10)).expect("a check");
        assert_eq!((pid, checked), (honest.id() as i32, Ok(())));
        assert!(honest.try_wait().unwrap().is_none(), "still running");
        honest.kill().unwrap();
        let _ = honest.wait();
        // Nothing expected any more: the group is left (right after the event is handled).
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while member() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(!member(), "still listening with nothing expected");
    }

    #[test]
    fn exec_events_are_read_from_a_datagram() {
        let mut d = vec![];
        for (what, tgid) in [(PROC_EVENT_EXEC, 42u32), (1, 7), (PROC_EVENT_EXEC, 43)] {
            let mut m = vec![0u8; NLMSG_HDRLEN + CN_MSG_LEN + 24];
            let len = m.len() as u32;
            m[..4].copy_from_slice(&len.to_ne_bytes());
            let e = NLMSG_HDRLEN + CN_MSG_LEN;
            m[e..e + 4].copy_from_slice(&what.to_ne_bytes());
            m[e + 20..e + 24].copy_from_slice(&tgid.to_ne_bytes());
            d.extend_from_slice(&m);
        }
        assert_eq!(
            exec_events(&d).into_iter().map(|e| e.0).collect::<Vec<_>>(),
            vec![42, 43]
        );
        assert!(exec_events(&d[..10]).is_empty());
    }
}
