//! The execs of a session after its program's own, stopped in the kernel before they run.
//!
//! - NOEXEC: a session's program runs, but nothing it (or anything it starts) does can
//!   `execve`/`execveat` another program: the call fails with EACCES, so the shell escapes of
//!   `less` (`!sh`), `vi` (`:!sh`), `find -exec`, `awk`'s `system()` and `tar
//!   --checkpoint-action=exec` start nothing.
//! - Intercept: every later exec is read from the calling process while the kernel holds it
//!   ([`ExecCall`]: path, argv, working directory, pid and parent), handed to an
//!   [`ExecGate`] that decides and records it, and then continues or fails with EACCES.
//!   Static binaries are covered (nothing is preloaded). A call that cannot be read whole
//!   (an argv larger than pedm records, memory not readable) is refused.
//!
//! - Watched paths: every removal and rename (`unlink`, `rmdir`, `rename` and their `at`
//!   forms) is read the same way ([`EntryChange`]), handed to an [`EntryGate`] that records
//!   it, and continues.
//!
//! How: the child, between the clone and its exec, installs a seccomp filter that turns every
//! exec system call (every ABI the kernel accepts from the process: x86-64, x32 and i386 on
//! x86-64; arm64 and arm on aarch64; any other ABI kills the process) into a *user
//! notification*, and hands the listener descriptor to a supervisor thread of the agent over a
//! socket pair. The supervisor lets the first exec continue, made by the pid that sent the
//! listener (the agent's own `execveat` of the checked binary); every later one is refused
//! (NOEXEC) or goes to the gate (intercept). The filter is inherited by every child and survives every exec, and
//! no process can remove it. When the supervisor goes (the agent stops), the kernel answers
//! the notifications itself with ENOSYS: still refused. The supervisor ends when no process
//! holding the filter is left (the listener reports a hang-up).
//!
//! This is the one module of the agent that speaks seccomp; its `unsafe` blocks are raw
//! system calls on memory it owns, each with its reason.

use std::fs::File;
use std::io;
use std::mem::{size_of, zeroed};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

/// One exec a session's process asked for, as read from it while the kernel held the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecCall {
    pub pid: i32,
    pub ppid: i32,
    /// The caller's working directory.
    pub cwd: PathBuf,
    /// The program, made absolute (relative to the working directory or the `execveat`
    /// directory; the descriptor's file for `fexecve`).
    pub path: PathBuf,
    pub argv: Vec<String>,
}

/// Decides (and records) the execs after a session's first. Runs on the supervisor thread,
/// while the caller waits in the kernel: it must answer promptly.
pub trait ExecGate: Send + std::fmt::Debug {
    /// Whether the exec of process `pid` may run. `Err` holds why the call could not be read
    /// (it is refused). A gate that waits (step-up approval) asks `waiting` whether the
    /// caller is still there to answer.
    fn decide(
        &mut self,
        pid: i32,
        call: Result<ExecCall, String>,
        waiting: &dyn Fn() -> bool,
    ) -> bool;
}

/// A directory entry a session's process removed or renamed, as read from it while the
/// kernel held the call (before it ran: the call may still fail).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryChange {
    /// `deleted`, `dir_removed`, `renamed` or `exchanged`.
    pub op: &'static str,
    /// Made absolute (relative to the working directory or the call's directory).
    pub path: PathBuf,
    /// Where a rename goes.
    pub to: Option<PathBuf>,
}

/// Hears of every removal and rename in a session with watched paths. Runs on the
/// supervisor thread, while the caller waits: it must return promptly. `Err` holds why the
/// call could not be read (it still goes on).
pub trait EntryGate: Send + std::fmt::Debug {
    fn changed(&mut self, call: Result<EntryChange, String>, pid: i32);
}

/// The most an intercepted argv may hold (each argument counted with its NUL): what the
/// server records in full ([`pedm_api::agent::REPORT_ARGV_BYTES`]).
const MAX_ARGV_BYTES: usize = pedm_api::agent::REPORT_ARGV_BYTES;
/// The most arguments read from an intercepted argv.
const MAX_ARGS: usize = 4096;
/// The longest path read from an intercepted call (PATH_MAX).
const MAX_PATH: usize = 4096;

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH_I386: u32 = 0x4000_0003;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH_AARCH64: u32 = 0xC000_00B7;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH_ARM: u32 = 0x4000_0028;
/// Set in the system call number of the x32 ABI (x86-64 only).
#[cfg(target_arch = "x86_64")]
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// A call that removes or renames a directory entry (recorded for watched paths).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EntryCall {
    /// `unlink(path)`
    Unlink,
    /// `rmdir(path)`
    Rmdir,
    /// `rename(old, new)`
    Rename,
    /// `unlinkat(dirfd, path, flags)`
    Unlinkat,
    /// `renameat(olddirfd, old, newdirfd, new)`
    Renameat,
    /// `renameat2(olddirfd, old, newdirfd, new, flags)`
    Renameat2,
}

/// An ABI a process of this build can call the kernel with: its audit arch, a mask applied
/// to the call number first, its exec calls (`execve`, `execveat`) and its entry calls.
struct Abi {
    arch: u32,
    mask: u32,
    execs: &'static [u32],
    entries: &'static [(u32, EntryCall)],
}

#[cfg(target_arch = "x86_64")]
const ABIS: &[Abi] = &[
    // x86-64 and x32 (x32 numbers carry X32_SYSCALL_BIT: masked, execve is 520, execveat
    // 545; the entry calls are common to both).
    Abi {
        arch: AUDIT_ARCH_X86_64,
        mask: !X32_SYSCALL_BIT,
        execs: &[59, 322, 520, 545],
        entries: &[
            (87, EntryCall::Unlink),
            (84, EntryCall::Rmdir),
            (82, EntryCall::Rename),
            (263, EntryCall::Unlinkat),
            (264, EntryCall::Renameat),
            (316, EntryCall::Renameat2),
        ],
    },
    // i386 through `int 0x80`.
    Abi {
        arch: AUDIT_ARCH_I386,
        mask: u32::MAX,
        execs: &[11, 358],
        entries: &[
            (10, EntryCall::Unlink),
            (40, EntryCall::Rmdir),
            (38, EntryCall::Rename),
            (301, EntryCall::Unlinkat),
            (302, EntryCall::Renameat),
            (353, EntryCall::Renameat2),
        ],
    },
];
#[cfg(target_arch = "aarch64")]
const ABIS: &[Abi] = &[
    Abi {
        arch: AUDIT_ARCH_AARCH64,
        mask: u32::MAX,
        execs: &[221, 281],
        entries: &[
            (35, EntryCall::Unlinkat),
            (38, EntryCall::Renameat),
            (276, EntryCall::Renameat2),
        ],
    },
    Abi {
        arch: AUDIT_ARCH_ARM,
        mask: u32::MAX,
        execs: &[11, 387],
        entries: &[
            (10, EntryCall::Unlink),
            (40, EntryCall::Rmdir),
            (38, EntryCall::Rename),
            (328, EntryCall::Unlinkat),
            (329, EntryCall::Renameat),
            (382, EntryCall::Renameat2),
        ],
    },
];
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const ABIS: &[Abi] = &[];

/// The entry call `data` is, if it is one.
fn entry_call(data: &libc::seccomp_data) -> Option<EntryCall> {
    let abi = ABIS.iter().find(|a| a.arch == data.arch)?;
    let nr = data.nr as u32 & abi.mask;
    abi.entries
        .iter()
        .find_map(|&(n, call)| (n == nr).then_some(call))
}

/// Whether NOEXEC can be enforced by this build (x86-64 and aarch64).
pub fn supported() -> bool {
    !ABIS.is_empty()
}

/// Whether this machine can enforce NOEXEC: a supported architecture, and a kernel that lets
/// a filter hand system calls to a supervisor (seccomp user notification, Linux 5.0 and
/// later; a container's own seccomp profile may also refuse `seccomp(2)` itself).
pub fn available() -> bool {
    if !supported() {
        return false;
    }
    let action: u32 = libc::SECCOMP_RET_USER_NOTIF;
    // SAFETY: SECCOMP_GET_ACTION_AVAIL only reads the u32 we own; no state changes.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_GET_ACTION_AVAIL,
            0,
            &raw const action,
        )
    };
    r == 0
}

/// The classic BPF program: exec calls (with `execs`) and entry calls (with `entries`) of a
/// known ABI → user notification; anything of an unknown ABI → kill; the rest is allowed.
fn program(execs: bool, entries: bool) -> Vec<libc::sock_filter> {
    let stmt = |code: u32, k: u32| libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let jeq = |k: u32, jt: usize| libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt: jt as u8,
        jf: 0,
        k,
    };
    let arch_at = std::mem::offset_of!(libc::seccomp_data, arch) as u32;
    let nr_at = std::mem::offset_of!(libc::seccomp_data, nr) as u32;
    let numbers = |abi: &Abi| -> Vec<u32> {
        let mut v = vec![];
        if execs {
            v.extend_from_slice(abi.execs);
        }
        if entries {
            v.extend(abi.entries.iter().map(|(n, _)| *n));
        }
        v
    };
    // Layout: load arch; one jump per ABI; kill; then per ABI: load nr, mask, one jump per
    // notified number, allow; finally the notification.
    let section_len = |abi: &Abi| 3 + numbers(abi).len();
    let mut starts = vec![];
    let mut at = 1 + ABIS.len() + 1;
    for abi in ABIS {
        starts.push(at);
        at += section_len(abi);
    }
    let notify = at;
    let mut p = vec![stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, arch_at)];
    for (i, abi) in ABIS.iter().enumerate() {
        let here = p.len();
        p.push(jeq(abi.arch, starts[i] - here - 1));
    }
    p.push(stmt(
        libc::BPF_RET | libc::BPF_K,
        libc::SECCOMP_RET_KILL_PROCESS,
    ));
    for abi in ABIS {
        p.push(stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, nr_at));
        p.push(stmt(libc::BPF_ALU | libc::BPF_AND | libc::BPF_K, abi.mask));
        for nr in numbers(abi) {
            let here = p.len();
            p.push(jeq(nr, notify - here - 1));
        }
        p.push(stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW));
    }
    p.push(stmt(
        libc::BPF_RET | libc::BPF_K,
        libc::SECCOMP_RET_USER_NOTIF,
    ));
    p
}

/// The child's part, prepared before the clone: it only makes system calls on this memory.
pub struct ChildFilter {
    filter: Vec<libc::sock_filter>,
    /// The child's end of the socket pair (close-on-exec).
    sock: OwnedFd,
}

/// Prepares a NOEXEC session: the filter for the child, and the supervisor thread that waits
/// for its listener. Drop the [`ChildFilter`] once the child has exec'd (or failed): the
/// supervisor then stops waiting if no listener came.
pub fn prepare(gate: Option<Box<dyn ExecGate>>) -> io::Result<ChildFilter> {
    prepare_for(true, gate, None)
}

/// Prepares a session's filter: its execs after the first stopped (with `execs`: refused
/// without a gate, decided by `gate` with one), and with `entries` every removal and rename
/// of a directory entry reported to it and let through.
pub fn prepare_for(
    execs: bool,
    gate: Option<Box<dyn ExecGate>>,
    entries: Option<Box<dyn EntryGate>>,
) -> io::Result<ChildFilter> {
    if !supported() {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "noexec is not supported on this architecture",
        ));
    }
    if !available() {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "noexec needs seccomp user notification, which this kernel does not offer",
        ));
    }
    let entries_wanted = entries.is_some();
    let mut pair = [-1 as RawFd; 2];
    // SAFETY: socketpair(2) fills the array we own with two new descriptors.
    if unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            pair.as_mut_ptr(),
        )
    } != 0
    {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors are new and ours alone.
    let (ours, theirs) = unsafe { (OwnedFd::from_raw_fd(pair[0]), OwnedFd::from_raw_fd(pair[1])) };
    std::thread::Builder::new()
        .name("pedm-execs".into())
        .spawn(move || supervise(ours, gate, entries))?;
    Ok(ChildFilter {
        filter: program(execs, entries_wanted),
        sock: theirs,
    })
}

impl ChildFilter {
    /// Installs the filter in the calling process and sends its listener (and this process's
    /// pid) to the supervisor. Returns 0, or the error number.
    ///
    /// # Safety
    ///
    /// Only in the child of a `clone` between its start and its exec, with the privilege to
    /// install a filter (root, or `no_new_privs` set): it only makes raw system calls, on
    /// this struct and its own stack, so it is async-signal-safe.
    pub unsafe fn install(&self) -> libc::c_int {
        // SAFETY: seccomp(2) reads the program we own; sendmsg(2) reads the message built on
        // this stack; close(2) of the descriptor seccomp returned.
        unsafe {
            let prog = libc::sock_fprog {
                len: self.filter.len() as u16,
                filter: self.filter.as_ptr().cast_mut(),
            };
            let listener = libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
                &prog,
            ) as libc::c_int;
            if listener < 0 {
                return *libc::__errno_location();
            }
            let pid = libc::syscall(libc::SYS_getpid) as i32;
            let mut data = pid.to_ne_bytes();
            let mut iov = libc::iovec {
                iov_base: data.as_mut_ptr().cast(),
                iov_len: data.len(),
            };
            // Room for one descriptor, aligned for a cmsghdr.
            let mut control = [0u64; 4];
            let mut msg: libc::msghdr = zeroed();
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = libc::CMSG_SPACE(size_of::<RawFd>() as u32) as _;
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<RawFd>() as u32) as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), listener);
            let sent = libc::sendmsg(self.sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL);
            let err = *libc::__errno_location();
            libc::close(listener);
            if sent != data.len() as isize {
                return if sent < 0 { err } else { libc::EPROTO };
            }
            0
        }
    }
}

/// Receives the listener and the pid that installed it; `None` when the child sent nothing.
fn receive(sock: &OwnedFd) -> Option<(OwnedFd, u32)> {
    let mut data = [0u8; 4];
    let mut control = [0u64; 4];
    // SAFETY: recvmsg(2) writes into the buffers above, whose sizes the message states; the
    // control message is read only as the kernel describes it (level, type, length).
    unsafe {
        let mut iov = libc::iovec {
            iov_base: data.as_mut_ptr().cast(),
            iov_len: data.len(),
        };
        let mut msg: libc::msghdr = zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control) as _;
        let n = loop {
            let n = libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC);
            if n >= 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                break n;
            }
        };
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if n != 4 || cmsg.is_null() {
            return None;
        }
        if (*cmsg).cmsg_level != libc::SOL_SOCKET
            || (*cmsg).cmsg_type != libc::SCM_RIGHTS
            || (*cmsg).cmsg_len as usize != libc::CMSG_LEN(size_of::<RawFd>() as u32) as usize
        {
            return None;
        }
        let fd = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>());
        Some((OwnedFd::from_raw_fd(fd), u32::from_ne_bytes(data)))
    }
}

/// The supervisor: allows the first exec of the pid that sent the listener; every other one
/// is refused with EACCES, or with a gate read, decided and answered; until no process holds
/// the filter.
fn supervise(
    sock: OwnedFd,
    mut gate: Option<Box<dyn ExecGate>>,
    mut entries: Option<Box<dyn EntryGate>>,
) {
    let Some((listener, pid)) = receive(&sock) else {
        return;
    };
    drop(sock);
    let mut sizes: libc::seccomp_notif_sizes = unsafe_zeroed();
    // SAFETY: SECCOMP_GET_NOTIF_SIZES fills the struct we own.
    let got = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_GET_NOTIF_SIZES,
            0,
            &raw mut sizes,
        )
    };
    // The kernel may use larger structures than this build knows: allocate what it says.
    let words = |known: usize, kernel: u16| known.max(usize::from(kernel)).div_ceil(8);
    let (req_len, resp_len) = if got == 0 {
        (
            words(size_of::<libc::seccomp_notif>(), sizes.seccomp_notif),
            words(
                size_of::<libc::seccomp_notif_resp>(),
                sizes.seccomp_notif_resp,
            ),
        )
    } else {
        (
            size_of::<libc::seccomp_notif>().div_ceil(8),
            size_of::<libc::seccomp_notif_resp>().div_ceil(8),
        )
    };
    let mut req = vec![0u64; req_len];
    let mut resp = vec![0u64; resp_len];
    let mut first_done = false;
    loop {
        let mut pfd = libc::pollfd {
            fd: listener.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll(2) on one pollfd we own.
        let r = unsafe { libc::poll(&mut pfd, 1, -1) };
        if r < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            break;
        }
        if pfd.revents & libc::POLLIN == 0 {
            if pfd.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
                // No process holds the filter any more.
                break;
            }
            continue;
        }
        req.iter_mut().for_each(|w| *w = 0);
        // SAFETY: NOTIF_RECV writes a seccomp_notif (at most the size the kernel reported,
        // which `req` holds, 8-byte aligned) into the zeroed buffer.
        let received = unsafe {
            libc::ioctl(
                listener.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_RECV as _,
                req.as_mut_ptr(),
            )
        };
        if received != 0 {
            // ENOENT: the caller went away (killed, or interrupted and restarting).
            continue;
        }
        // SAFETY: `req` holds a seccomp_notif the kernel just wrote.
        let notif = unsafe { &*req.as_ptr().cast::<libc::seccomp_notif>() };
        let entry = entries.as_ref().and(entry_call(&notif.data));
        let first = entry.is_none() && !first_done && notif.pid == pid;
        let allow = if let (Some(call), Some(g)) = (entry, entries.as_mut()) {
            // Recorded, never decided: it goes on whatever it names.
            let read = read_entry_call(notif, call);
            let valid = id_valid(&listener, notif.id);
            g.changed(
                if valid {
                    read
                } else {
                    Err("the caller went away while it was read".into())
                },
                notif.pid as i32,
            );
            true
        } else {
            first
                || match gate.as_mut() {
                    None => false,
                    Some(g) => {
                        let call = read_call(notif);
                        // The pid may have died and been reused while we read: only a
                        // notification still pending proves the memory read was the caller's.
                        let valid = id_valid(&listener, notif.id);
                        g.decide(
                            notif.pid as i32,
                            if valid {
                                call
                            } else {
                                Err("the caller went away while it was read".into())
                            },
                            &|| id_valid(&listener, notif.id),
                        ) && valid
                    }
                }
        };
        resp.iter_mut().for_each(|w| *w = 0);
        // SAFETY: `resp` is zeroed and large enough for a seccomp_notif_resp.
        let answer = unsafe { &mut *resp.as_mut_ptr().cast::<libc::seccomp_notif_resp>() };
        answer.id = notif.id;
        if allow {
            answer.flags = libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32;
        } else {
            answer.error = -libc::EACCES;
        }
        // SAFETY: NOTIF_SEND reads the response we own.
        let sent = unsafe {
            libc::ioctl(
                listener.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_SEND as _,
                resp.as_mut_ptr(),
            )
        };
        if first && sent == 0 {
            first_done = true;
        }
        if !allow && entry.is_none() {
            tracing::debug!(pid = notif.pid, "noexec: exec refused");
        }
    }
}

/// Whether notification `id` is still pending (its caller alive and waiting).
fn id_valid(listener: &OwnedFd, id: u64) -> bool {
    let mut id = id;
    // SAFETY: NOTIF_ID_VALID reads the u64 we own.
    unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_ID_VALID as _,
            &raw mut id,
        ) == 0
    }
}

/// Pointer width of the calling ABI, and whether the call is `execveat`.
fn abi_of(data: &libc::seccomp_data) -> (usize, bool) {
    let nr = data.nr as u32;
    #[cfg(target_arch = "x86_64")]
    {
        if data.arch == AUDIT_ARCH_X86_64 {
            let x32 = nr & X32_SYSCALL_BIT != 0;
            let nr = nr & !X32_SYSCALL_BIT;
            return (if x32 { 4 } else { 8 }, nr == 322 || nr == 545);
        }
        (4, nr == 358)
    }
    #[cfg(target_arch = "aarch64")]
    {
        if data.arch == AUDIT_ARCH_AARCH64 {
            return (8, nr == 281);
        }
        (4, nr == 387)
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        let _ = nr;
        (8, false)
    }
}

/// A NUL-terminated string at `addr` in `mem`, at most `max` bytes.
fn read_cstr(mem: &File, addr: u64, max: usize) -> Result<String, String> {
    let mut out = Vec::new();
    let mut buf = [0u8; 256];
    let mut at = addr;
    loop {
        let n = mem
            .read_at(&mut buf, at)
            .map_err(|e| format!("cannot read the caller's memory: {e}"))?;
        if n == 0 {
            return Err("cannot read the caller's memory: end of it".into());
        }
        if let Some(end) = buf[..n].iter().position(|&b| b == 0) {
            out.extend_from_slice(&buf[..end]);
            break;
        }
        out.extend_from_slice(&buf[..n]);
        if out.len() > max {
            return Err(format!("a string longer than {max} bytes"));
        }
        at += n as u64;
    }
    if out.len() > max {
        return Err(format!("a string longer than {max} bytes"));
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

fn readlink(path: String) -> Result<PathBuf, String> {
    std::fs::read_link(&path).map_err(|e| format!("{path}: {e}"))
}

/// `path` as process `pid` names it relative to `dirfd` (or its working directory), made
/// absolute; `.` components dropped (`..` is left: only the file system knows what it means).
fn absolute(pid: i32, dirfd: i32, path: String) -> Result<PathBuf, String> {
    let path = if path.starts_with('/') {
        PathBuf::from(path)
    } else if dirfd == libc::AT_FDCWD {
        readlink(format!("/proc/{pid}/cwd"))?.join(path)
    } else {
        readlink(format!("/proc/{pid}/fd/{dirfd}"))?.join(path)
    };
    Ok(path.components().collect())
}

/// Reads the removal or rename of `notif` from its process.
fn read_entry_call(notif: &libc::seccomp_notif, call: EntryCall) -> Result<EntryChange, String> {
    let pid = notif.pid as i32;
    let mem = File::open(format!("/proc/{pid}/mem"))
        .map_err(|e| format!("cannot open the caller's memory: {e}"))?;
    let a = notif.data.args;
    // Descriptor arguments are C ints: the low 32 bits.
    let fd = |v: u64| v as u32 as i32;
    let at = |dirfd: i32, ptr: u64| absolute(pid, dirfd, read_cstr(&mem, ptr, MAX_PATH)?);
    let (op, path, to) = match call {
        EntryCall::Unlink => ("deleted", at(libc::AT_FDCWD, a[0])?, None),
        EntryCall::Rmdir => ("dir_removed", at(libc::AT_FDCWD, a[0])?, None),
        EntryCall::Unlinkat if fd(a[2]) & libc::AT_REMOVEDIR != 0 => {
            ("dir_removed", at(fd(a[0]), a[1])?, None)
        }
        EntryCall::Unlinkat => ("deleted", at(fd(a[0]), a[1])?, None),
        EntryCall::Rename => (
            "renamed",
            at(libc::AT_FDCWD, a[0])?,
            Some(at(libc::AT_FDCWD, a[1])?),
        ),
        EntryCall::Renameat | EntryCall::Renameat2 => (
            if call == EntryCall::Renameat2 && a[4] as u32 & libc::RENAME_EXCHANGE != 0 {
                "exchanged"
            } else {
                "renamed"
            },
            at(fd(a[0]), a[1])?,
            Some(at(fd(a[2]), a[3])?),
        ),
    };
    Ok(EntryChange { op, path, to })
}

/// Reads the exec call of `notif` from its process: program, argv, working directory,
/// parent. Fails on anything it cannot read whole.
fn read_call(notif: &libc::seccomp_notif) -> Result<ExecCall, String> {
    let pid = notif.pid as i32;
    let mem = File::open(format!("/proc/{pid}/mem"))
        .map_err(|e| format!("cannot open the caller's memory: {e}"))?;
    let (width, at) = abi_of(&notif.data);
    let a = notif.data.args;
    let (dirfd, path_ptr, argv_ptr, flags) = if at {
        (a[0] as i32, a[1], a[2], a[4] as i32)
    } else {
        (libc::AT_FDCWD, a[0], a[1], 0)
    };
    let path = read_cstr(&mem, path_ptr, MAX_PATH)?;
    let mut argv = Vec::new();
    let mut bytes = 0;
    let mut slot = [0u8; 8];
    for i in 0..=MAX_ARGS {
        if i == MAX_ARGS {
            return Err(format!("more than {MAX_ARGS} arguments"));
        }
        let got = mem
            .read_at(&mut slot[..width], argv_ptr + (i * width) as u64)
            .map_err(|e| format!("cannot read the caller's argv: {e}"))?;
        if got != width {
            return Err("cannot read the caller's argv".into());
        }
        let ptr = if width == 8 {
            u64::from_ne_bytes(slot)
        } else {
            u64::from(u32::from_ne_bytes([slot[0], slot[1], slot[2], slot[3]]))
        };
        if ptr == 0 {
            break;
        }
        let arg = read_cstr(&mem, ptr, MAX_ARGV_BYTES)?;
        bytes += arg.len() + 1;
        if bytes > MAX_ARGV_BYTES {
            return Err(format!(
                "an argv of more than the {MAX_ARGV_BYTES} bytes pedm records"
            ));
        }
        argv.push(arg);
    }
    let cwd = readlink(format!("/proc/{pid}/cwd"))?;
    let path = if path.is_empty() && flags & libc::AT_EMPTY_PATH != 0 {
        readlink(format!("/proc/{pid}/fd/{dirfd}"))?
    } else if path.starts_with('/') {
        PathBuf::from(path)
    } else if dirfd == libc::AT_FDCWD {
        cwd.join(path)
    } else {
        readlink(format!("/proc/{pid}/fd/{dirfd}"))?.join(path)
    };
    // `/tmp/./x` is `/tmp/x` (`..` is left: only the file system knows what it means).
    let path: PathBuf = path.components().collect();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("cannot read the caller's status: {e}"))?;
    let ppid = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(1))
        .and_then(|p| p.parse().ok())
        .ok_or("cannot read the caller's parent process")?;
    Ok(ExecCall {
        pid,
        ppid,
        cwd,
        path,
        argv,
    })
}

fn unsafe_zeroed<T: Copy>() -> T {
    // SAFETY: only used for libc structs of plain integers, for which all-zero is valid.
    unsafe { zeroed() }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `/bin/sh -c SCRIPT`, with the filter (NOEXEC, or intercept with a gate) or without;
    /// (exit code, stdout, stderr).
    fn sh_with(
        script: &str,
        filtered: bool,
        gate: Option<Box<dyn ExecGate>>,
    ) -> (Option<i32>, String, String) {
        use std::os::unix::process::CommandExt;
        let mut cmd = std::process::Command::new("/bin/sh");
        cmd.args(["-c", script]);
        if filtered {
            let filter = prepare(gate).expect("prepare the filter");
            // SAFETY: between fork and exec the closure only makes raw system calls (prctl,
            // and those of `install`, which reads memory prepared before the fork).
            unsafe {
                cmd.pre_exec(move || {
                    // A listener needs CAP_SYS_ADMIN or no_new_privs: as any user, the latter.
                    if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    match filter.install() {
                        0 => Ok(()),
                        e => Err(io::Error::from_raw_os_error(e)),
                    }
                });
            }
        }
        let out = cmd.output().expect("run /bin/sh");
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (out.status.code(), text(&out.stdout), text(&out.stderr))
    }

    fn sh(script: &str, noexec: bool) -> (Option<i32>, String, String) {
        sh_with(script, noexec, None)
    }

    /// Records every call it sees; refuses `/usr/bin/env`.
    #[derive(Debug)]
    struct Recorder(std::sync::Arc<std::sync::Mutex<Vec<Result<ExecCall, String>>>>);

    impl ExecGate for Recorder {
        fn decide(
            &mut self,
            _pid: i32,
            call: Result<ExecCall, String>,
            _waiting: &dyn Fn() -> bool,
        ) -> bool {
            let allow = call
                .as_ref()
                .is_ok_and(|c| c.path != std::path::Path::new("/usr/bin/env"));
            self.0.lock().unwrap().push(call);
            allow
        }
    }

    #[test]
    fn intercept_reads_each_exec_and_runs_what_the_gate_allows() {
        if !available() {
            println!("SKIP intercept_reads_each_exec: no seccomp user notification here");
            return;
        }
        let seen = std::sync::Arc::new(std::sync::Mutex::new(vec![]));
        let script = "cd /tmp && echo piped | /bin/cat; ./../bin/echo 'two words' x; \
                      /usr/bin/env true || echo refused; exit 3";
        let (code, out, err) = sh_with(script, true, Some(Box::new(Recorder(seen.clone()))));
        assert_eq!(code, Some(3), "{out}{err}");
        assert_eq!(out, "piped\ntwo words x\nrefused\n", "{err}");
        assert!(err.contains("Permission denied"), "{err}");
        let seen = seen.lock().unwrap();
        let calls: Vec<(&str, Vec<&str>, &str)> = seen
            .iter()
            .map(|c| {
                let c = c.as_ref().expect("read whole");
                (
                    c.path.to_str().unwrap(),
                    c.argv.iter().map(String::as_str).collect(),
                    c.cwd.to_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            calls,
            [
                ("/bin/cat", vec!["/bin/cat"], "/tmp"),
                (
                    "/tmp/../bin/echo",
                    vec!["./../bin/echo", "two words", "x"],
                    "/tmp"
                ),
                ("/usr/bin/env", vec!["/usr/bin/env", "true"], "/tmp"),
            ]
        );
        let c = seen[0].as_ref().unwrap();
        assert!(c.pid > 1 && c.ppid > 1 && c.pid != c.ppid, "{c:?}");
    }

    #[test]
    fn the_first_exec_runs_and_every_later_one_is_refused() {
        if !available() {
            println!(
                "SKIP the_first_exec_runs_and_every_later_one_is_refused: no seccomp user notification here"
            );
            return;
        }
        let script = "echo shell ran; /bin/echo escaped; exit 7";
        let (code, out, _) = sh(script, false);
        assert_eq!((code, out.as_str()), (Some(7), "shell ran\nescaped\n"));
        let (code, out, err) = sh(script, true);
        assert_eq!(code, Some(7), "{out}{err}");
        assert_eq!(out, "shell ran\n", "the second exec ran: {err}");
        assert!(err.contains("Permission denied"), "{err}");
    }

    #[test]
    fn every_notified_number_jumps_to_the_notification() {
        for (execs, entries) in [(true, false), (false, true), (true, true)] {
            let p = program(execs, entries);
            let notify = p.len() - 1;
            assert_eq!(p[notify].k, libc::SECCOMP_RET_USER_NOTIF);
            let mut numbers = vec![];
            for (i, ins) in p.iter().enumerate() {
                if ins.code == (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16
                    && ABIS.iter().all(|a| a.arch != ins.k)
                {
                    assert_eq!(i + 1 + usize::from(ins.jt), notify, "instruction {i}");
                    numbers.push(ins.k);
                }
            }
            let wanted: usize = ABIS
                .iter()
                .map(|a| {
                    usize::from(execs) * a.execs.len() + usize::from(entries) * a.entries.len()
                })
                .sum();
            assert_eq!(numbers.len(), wanted, "execs {execs}, entries {entries}");
        }
    }

    /// Removals and renames in a filtered shell reach the entry gate, read whole and made
    /// absolute, and still happen; the shell's execs are not stopped (no exec gate).
    #[test]
    fn removals_and_renames_are_reported_and_go_on() {
        if !available() {
            eprintln!("skipped: no seccomp user notification here");
            return;
        }
        use std::sync::{Arc, Mutex};
        #[derive(Debug)]
        struct Seen(Arc<Mutex<Vec<EntryChange>>>);
        impl EntryGate for Seen {
            fn changed(&mut self, call: Result<EntryChange, String>, _pid: i32) {
                self.0.lock().unwrap().push(call.unwrap());
            }
        }
        let seen = Arc::new(Mutex::new(vec![]));
        let dir = tempfile::tempdir().unwrap();
        let d = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::write(d.join("a"), "x").unwrap();
        std::fs::write(d.join("b"), "x").unwrap();
        std::fs::create_dir(d.join("sub")).unwrap();
        use std::os::unix::process::CommandExt;
        let mut cmd = std::process::Command::new("/bin/sh");
        cmd.args(["-c", "rm a && mv b c && rmdir sub && echo done"])
            .current_dir(&d);
        let filter = prepare_for(false, None, Some(Box::new(Seen(seen.clone())))).unwrap();
        // SAFETY: between fork and exec the closure only makes raw system calls (prctl, and
        // those of `install`, which reads memory prepared before the fork).
        unsafe {
            cmd.pre_exec(move || {
                libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
                match filter.install() {
                    0 => Ok(()),
                    e => Err(io::Error::from_raw_os_error(e)),
                }
            })
        };
        let out = cmd.output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "done\n");
        assert!(!d.join("a").exists() && d.join("c").exists() && !d.join("sub").exists());
        let seen = seen.lock().unwrap();
        let got: Vec<_> = seen
            .iter()
            .map(|c| (c.op, c.path.clone(), c.to.clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("deleted", d.join("a"), None),
                ("renamed", d.join("b"), Some(d.join("c"))),
                ("dir_removed", d.join("sub"), None),
            ]
        );
    }
}
