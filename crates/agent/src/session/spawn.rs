//! Starting the command: the clone, what the child does before it execs, and the exec.
//!
//! The clone shares the agent's memory until the child execs (`CLONE_VM | CLONE_VFORK`, as
//! `posix_spawn` does; see the parent module for the order of the steps in the child). Where
//! the session has a cgroup v2 directory the child is born in it (`clone3` with
//! `CLONE_INTO_CGROUP`, Linux 5.7): moving a process between cgroups afterwards takes the
//! kernel's global cgroup lock for writing, which waits for an RCU grace period whenever no
//! other move happened in the last few milliseconds (6 ms measured on this project's test
//! machine, against 0.04 ms while one just had). Elsewhere (another architecture, an older
//! kernel) and for cgroup v1 hierarchies, the child moves itself by writing `0` to each
//! `cgroup.procs` before anything else. Either way nothing runs uncontained.

use super::{SessionSpec, async_fd};
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use tokio::io::unix::AsyncFd;

/// The stack the child runs on between the clone and the exec.
const CHILD_STACK: usize = 256 * 1024;

/// `CLONE_INTO_CGROUP` (the `libc` crate's constant has the wrong width).
#[cfg(target_arch = "x86_64")]
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// What the child reads between the clone and the exec, and where it leaves the error
/// number when it cannot exec.
struct ChildArgs<'a> {
    image: &'a ExecImage,
    stdio: [RawFd; 3],
    errno: AtomicI32,
    /// The child was born in the session's v2 cgroup: it only joins the v1 ones.
    born_in_cgroup: AtomicBool,
}

/// The child's stack: mapped for one spawn, with a guard page below it.
struct ChildStack {
    base: *mut libc::c_void,
    len: usize,
}

impl ChildStack {
    fn new() -> io::Result<ChildStack> {
        // SAFETY: an anonymous private mapping we own; its lowest page becomes the guard.
        unsafe {
            let base = libc::mmap(
                std::ptr::null_mut(),
                CHILD_STACK,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK | libc::MAP_NORESERVE,
                -1,
                0,
            );
            if base == libc::MAP_FAILED {
                return Err(io::Error::last_os_error());
            }
            let stack = ChildStack {
                base,
                len: CHILD_STACK,
            };
            let page = usize::try_from(libc::sysconf(libc::_SC_PAGESIZE)).unwrap_or(4096);
            if libc::mprotect(base, page, libc::PROT_NONE) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(stack)
        }
    }

    /// The initial stack pointer (stacks grow down), 16-byte aligned.
    fn top(&self) -> *mut libc::c_void {
        let end = self.base as usize + self.len;
        (end & !15) as *mut libc::c_void
    }
}

impl Drop for ChildStack {
    fn drop(&mut self) {
        // SAFETY: our own mapping, no longer used: the child has exec'd or exited.
        unsafe { libc::munmap(self.base, self.len) };
    }
}

/// Starts the command of `image` with `stdio` as its descriptors 0, 1 and 2 (see the module
/// docs): returns once it has exec'd, or with the error that stopped it (it then ran
/// nothing and has been reaped).
pub(super) fn spawn(image: &ExecImage, stdio: [RawFd; 3]) -> io::Result<ChildProc> {
    let args = ChildArgs {
        image,
        stdio,
        errno: AtomicI32::new(0),
        born_in_cgroup: AtomicBool::new(false),
    };
    let stack = ChildStack::new()?;
    let mut pidfd: libc::c_int = -1;
    // SAFETY: sigset_t is plain data; the calls fill the sets we own. Every signal is
    // blocked across the clone (the child shares our memory, so no handler of the agent may
    // run in it; it resets them all before unblocking), and our mask is restored after.
    // CLONE_VFORK: this thread resumes once the child has exec'd or exited, so `args` and
    // the stack outlive its use of them; no child exists while `born_in_cgroup` is stored.
    let pid = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let arg = (&raw const args).cast_mut().cast();
        let mut pid = -1;
        let mut unsupported = true;
        if image.cgroup_dir >= 0 {
            args.born_in_cgroup.store(true, Ordering::SeqCst);
            pid = clone_into_cgroup(&stack, image.cgroup_dir, &raw mut pidfd, arg);
            // A kernel before 5.7 (or another architecture): the child joins by writing.
            unsupported = pid < 0
                && matches!(
                    io::Error::last_os_error().raw_os_error(),
                    Some(libc::ENOSYS | libc::E2BIG | libc::EINVAL)
                );
            if unsupported {
                args.born_in_cgroup.store(false, Ordering::SeqCst);
                pidfd = -1;
            }
        }
        if unsupported {
            let flags = libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD;
            pid = libc::clone(
                child_main,
                stack.top(),
                flags | libc::CLONE_PIDFD,
                arg,
                &raw mut pidfd,
            );
            if pid < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
                // A kernel without CLONE_PIDFD.
                pidfd = -1;
                pid = libc::clone(child_main, stack.top(), flags, arg);
            }
        }
        let err = io::Error::last_os_error();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        if pid < 0 {
            return Err(err);
        }
        pid
    };
    drop(stack);
    // SAFETY: CLONE_PIDFD stored a new descriptor (close-on-exec) that only we own; kernels
    // that ignore the flag leave -1.
    let pidfd = (pidfd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(pidfd) });
    let failed = args.errno.load(Ordering::SeqCst);
    if failed != 0 {
        let _ = reap_blocking(pid);
        return Err(io::Error::from_raw_os_error(failed));
    }
    ChildProc::new(pid, pidfd).inspect_err(|_| {
        // SAFETY: plain kill(2) of our unreaped child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let _ = reap_blocking(pid);
    })
}

/// `clone3(CLONE_VM | CLONE_VFORK | CLONE_PIDFD | CLONE_INTO_CGROUP)`: the clone of
/// [`spawn`], with the child born in the cgroup v2 directory `cgroup`. The C library has no
/// wrapper, and a child that shares our memory cannot return from a plain system call on its
/// new stack, so the child's side is written here: it calls `child_main(arg)` and exits with
/// what that returns. Returns the child's pid, or -1 with errno set.
///
/// # Safety
///
/// As for `clone` with `CLONE_VM | CLONE_VFORK`: every signal blocked, `stack` and `arg`
/// valid until the child has exec'd or exited, `pidfd` writable.
#[cfg(target_arch = "x86_64")]
unsafe fn clone_into_cgroup(
    stack: &ChildStack,
    cgroup: RawFd,
    pidfd: *mut libc::c_int,
    arg: *mut libc::c_void,
) -> libc::c_int {
    // SAFETY: clone_args is plain data (zero means "not used" for every field).
    let mut cl: libc::clone_args = unsafe { std::mem::zeroed() };
    cl.flags = (libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD) as u64 | CLONE_INTO_CGROUP;
    cl.pidfd = pidfd as u64;
    cl.exit_signal = libc::SIGCHLD as u64;
    // The kernel starts the child with its stack pointer at stack + stack_size (the top,
    // 16-byte aligned, as a call expects).
    cl.stack = stack.base as u64;
    cl.stack_size = stack.len as u64;
    cl.cgroup = cgroup as u64;
    let ret: i64;
    // SAFETY: the parent gets the result in rax and continues after the block with only rcx
    // and r11 changed (by `syscall`). The child starts after `syscall` with rax = 0 on the
    // new stack, the other registers as in the parent: it calls child_main (r13) with arg
    // (r12) and exits; it never returns into this function.
    unsafe {
        std::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "mov rdi, r12",
            "call r13",
            "mov edi, eax",
            "mov eax, {exit}",
            "syscall",
            "ud2",
            "2:",
            exit = const libc::SYS_exit,
            inlateout("rax") libc::SYS_clone3 => ret,
            in("rdi") &raw const cl,
            in("rsi") std::mem::size_of::<libc::clone_args>(),
            in("r12") arg,
            in("r13") child_main as extern "C" fn(*mut libc::c_void) -> libc::c_int,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    if ret < 0 {
        // SAFETY: this thread's errno.
        unsafe { *libc::__errno_location() = (-ret) as libc::c_int };
        return -1;
    }
    ret as libc::c_int
}

/// Other architectures: not written yet, the child joins by writing to `cgroup.procs`.
#[cfg(not(target_arch = "x86_64"))]
unsafe fn clone_into_cgroup(
    _stack: &ChildStack,
    _cgroup: RawFd,
    _pidfd: *mut libc::c_int,
    _arg: *mut libc::c_void,
) -> libc::c_int {
    // SAFETY: this thread's errno.
    unsafe { *libc::__errno_location() = libc::ENOSYS };
    -1
}

/// The child's entry point: execs, or stores the error number and exits 127.
extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `ChildArgs` that `spawn` keeps alive until this process has
    // exec'd or exited; `exec` only makes raw system calls (see `ExecImage::exec`).
    unsafe {
        let args = &*arg.cast::<ChildArgs>();
        let born = args.born_in_cgroup.load(Ordering::SeqCst);
        let errno = args.image.exec(args.stdio, born);
        args.errno.store(errno.max(1), Ordering::SeqCst);
        libc::_exit(127)
    }
}

/// Everything the child needs between the clone and the exec, allocated before the clone.
pub(super) struct ExecImage {
    pub(super) fd: RawFd,
    /// The session's cgroup v2 directory (-1 for none) and its `cgroup.procs`: the child is
    /// born in it, or writes `0` (itself) to the file first.
    pub(super) cgroup_dir: RawFd,
    cgroup_procs: RawFd,
    /// The `cgroup.procs` files of cgroup v1 hierarchies, written to first.
    v1_procs: Vec<RawFd>,
    /// A mount namespace to join then; -1 for none.
    mount_ns: RawFd,
    /// Read one byte from before the exec ([`SessionSpec::durable`]); -1 for none.
    durable: RawFd,
    script: bool,
    pty: bool,
    _argv: Vec<CString>,
    argv_ptrs: Vec<*mut libc::c_char>,
    _envp: Vec<CString>,
    envp_ptrs: Vec<*mut libc::c_char>,
    uid: libc::uid_t,
    gid: libc::gid_t,
    groups: Vec<libc::gid_t>,
    cwd: Option<CString>,
    home: CString,
    max_fd: libc::c_int,
    no_new_privs: bool,
    /// Dropped after the spawn: the supervisor then knows whether a listener came.
    noexec: Option<crate::contain::execs::ChildFilter>,
}

impl ExecImage {
    pub(super) fn new(spec: &mut SessionSpec) -> io::Result<ExecImage> {
        let invalid = |what: &str| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{what} contains a NUL byte"),
            )
        };
        let mut argv: Vec<CString> = spec
            .argv
            .iter()
            .map(|a| CString::new(a.as_bytes()).map_err(|_| invalid("an argument")))
            .collect::<Result<_, _>>()?;
        if argv.is_empty() {
            argv.push(
                CString::new(spec.command.path().as_os_str().as_bytes())
                    .map_err(|_| invalid("the path"))?,
            );
        }
        let envp: Vec<CString> = spec
            .env
            .iter()
            .filter(|(k, _)| !k.is_empty() && !k.contains('='))
            .map(|(k, v)| CString::new(format!("{k}={v}")).map_err(|_| invalid("the environment")))
            .collect::<Result<_, _>>()?;
        let ptrs = |v: &[CString]| {
            v.iter()
                .map(|c| c.as_ptr().cast_mut())
                .chain(std::iter::once(std::ptr::null_mut()))
                .collect::<Vec<_>>()
        };
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit fills the struct we own.
        let max_fd = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
            limit.rlim_cur.min(65_536) as libc::c_int
        } else {
            1024
        };
        Ok(ExecImage {
            fd: spec.command.fd().as_raw_fd(),
            cgroup_dir: spec.cgroup.v2.as_ref().map_or(-1, |c| c.dir.as_raw_fd()),
            cgroup_procs: spec.cgroup.v2.as_ref().map_or(-1, |c| c.procs.as_raw_fd()),
            v1_procs: spec.cgroup.v1.iter().map(|f| f.as_raw_fd()).collect(),
            mount_ns: spec.mount_ns.as_ref().map_or(-1, |f| f.as_raw_fd()),
            durable: spec.durable.as_ref().map_or(-1, |f| f.as_raw_fd()),
            script: spec.command.is_script(),
            pty: spec.tty.is_some(),
            argv_ptrs: ptrs(&argv),
            _argv: argv,
            envp_ptrs: ptrs(&envp),
            _envp: envp,
            uid: spec.user.uid,
            gid: spec.user.gid,
            groups: spec.user.groups.clone(),
            // A directory that cannot be named to the kernel refuses the session (never the
            // home instead of what was asked).
            cwd: spec
                .cwd
                .as_ref()
                .map(|c| {
                    CString::new(c.as_os_str().as_bytes())
                        .map_err(|_| invalid("the working directory"))
                })
                .transpose()?,
            home: CString::new(spec.user.home.as_os_str().as_bytes())
                .unwrap_or_else(|_| c"/".to_owned()),
            max_fd,
            no_new_privs: spec.no_new_privs,
            // NOEXEC refuses every later exec; intercept hands each to the gate; watched
            // paths have every removal and rename reported.
            noexec: {
                let entries = spec.entry_gate.take();
                let gate = spec.exec_gate.take().filter(|_| !spec.noexec);
                let execs = spec.noexec || gate.is_some();
                if execs || entries.is_some() {
                    Some(crate::contain::execs::prepare_for(execs, gate, entries)?)
                } else {
                    None
                }
            },
        })
    }

    /// Runs in the child of [`spawn`], which shares the agent's memory until it execs:
    /// nothing here allocates, locks or unwinds, and the ids are set with raw system calls
    /// (the C library's `setuid` & co. would signal every thread of the agent to change
    /// theirs too). Returns only on failure, with the error number.
    ///
    /// # Safety
    ///
    /// Only in such a child, with every signal blocked.
    unsafe fn exec(&self, stdio: [RawFd; 3], born_in_cgroup: bool) -> libc::c_int {
        // SAFETY: system calls on memory owned by `self` (and errno, this thread's).
        unsafe {
            let errno = || *libc::__errno_location();
            macro_rules! check {
                ($call:expr) => {
                    if ($call) < 0 {
                        return errno();
                    }
                };
            }
            // Into the session's cgroup before anything else: nothing runs uncontained.
            let v2 = (self.cgroup_procs >= 0 && !born_in_cgroup).then_some(self.cgroup_procs);
            for procs in v2.into_iter().chain(self.v1_procs.iter().copied()) {
                if libc::write(procs, c"0".as_ptr().cast(), 1) != 1 {
                    return errno();
                }
            }
            // Into the session's mount namespace (watched paths) while still root: what it
            // writes there is seen, or it does not run.
            if self.mount_ns >= 0 && libc::setns(self.mount_ns, libc::CLONE_NEWNS) != 0 {
                return errno();
            }
            // First the agent's handlers go (signals are blocked until the very end).
            let mut dfl: libc::sigaction = std::mem::zeroed();
            dfl.sa_sigaction = libc::SIG_DFL;
            for sig in 1..65 {
                if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                    // Fails harmlessly for the numbers the C library reserves.
                    libc::sigaction(sig, &dfl, std::ptr::null_mut());
                }
            }
            for (target, &fd) in stdio.iter().enumerate() {
                let target = target as libc::c_int;
                if fd == target {
                    check!(libc::fcntl(fd, libc::F_SETFD, 0));
                } else {
                    check!(libc::dup2(fd, target));
                }
            }
            check!(libc::setsid());
            if self.pty {
                check!(libc::ioctl(0, libc::TIOCSCTTY, 0));
            }
            // NOEXEC: installed while still root (no `no_new_privs` needed for it, so it
            // goes with `allow_setuid` too); only this process's next exec will be let through.
            if let Some(filter) = &self.noexec {
                let failed = filter.install();
                if failed != 0 {
                    return failed;
                }
            }
            check!(libc::syscall(
                libc::SYS_setgroups,
                self.groups.len(),
                self.groups.as_ptr()
            ));
            check!(libc::syscall(libc::SYS_setgid, self.gid));
            check!(libc::syscall(libc::SYS_setuid, self.uid));
            if self.uid != 0
                && (libc::syscall(libc::SYS_setuid, 0) == 0
                    || libc::getuid() != self.uid
                    || libc::geteuid() != self.uid
                    || libc::getegid() != self.gid)
            {
                return libc::EPERM;
            }
            // Setuid programs and file capabilities give nothing from here on, to this
            // process and everything it starts.
            if self.no_new_privs {
                check!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0));
            }
            libc::umask(0o022);
            // No core dumps of elevated processes: they would hold what the privilege read.
            let no_core = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::setrlimit(libc::RLIMIT_CORE, &no_core);
            // A directory asked for is entered as the new user, or nothing runs; without
            // one, the user's home (or `/`), as `sudo -i` does.
            match &self.cwd {
                Some(c) => check!(libc::chdir(c.as_ptr())),
                None => {
                    if libc::chdir(self.home.as_ptr()) != 0 {
                        check!(libc::chdir(c"/".as_ptr()));
                    }
                }
            }

            let closed = libc::syscall(
                libc::SYS_close_range,
                3 as libc::c_uint,
                libc::c_uint::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            );
            if closed != 0 {
                for fd in 3..self.max_fd {
                    libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
                }
            }
            if self.script {
                // The interpreter reads the script through /dev/fd/N: keep it open.
                check!(libc::fcntl(self.fd, libc::F_SETFD, 0));
            }
            // Last: wait until what must be on disk first is (the agent synced it meanwhile).
            if self.durable >= 0 {
                let mut byte = 0u8;
                loop {
                    let n = libc::read(self.durable, (&raw mut byte).cast(), 1);
                    if n == 1 {
                        break;
                    }
                    if n < 0 && errno() == libc::EINTR {
                        continue;
                    }
                    return libc::EIO;
                }
            }
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            check!(libc::sigprocmask(
                libc::SIG_SETMASK,
                &none,
                std::ptr::null_mut()
            ));
            libc::execveat(
                self.fd,
                c"".as_ptr(),
                self.argv_ptrs.as_ptr(),
                self.envp_ptrs.as_ptr(),
                libc::AT_EMPTY_PATH,
            );
            errno()
        }
    }
}

/// A command started by [`spawn`]. Dropped before it has been waited for, it is killed
/// (SIGKILL) and reaped.
pub(super) struct ChildProc {
    pid: libc::pid_t,
    exit: ExitWatch,
    status: Option<ExitStatus>,
}

/// How the agent learns that the command has exited; the status is then reaped with
/// `waitpid` (until then the pid cannot be reused, so signalling it is safe).
enum ExitWatch {
    /// A pidfd, readable once the process has exited (Linux 5.2 and later).
    Pidfd(AsyncFd<OwnedFd>),
    /// Older kernels: a thread waits for the exit without reaping, then says so.
    Thread(tokio::sync::oneshot::Receiver<()>),
}

impl ChildProc {
    pub(super) fn new(pid: libc::pid_t, pidfd: Option<OwnedFd>) -> io::Result<ChildProc> {
        let exit = match pidfd {
            Some(fd) => ExitWatch::Pidfd(async_fd(fd)?),
            None => {
                let (tx, rx) = tokio::sync::oneshot::channel();
                std::thread::Builder::new()
                    .name("pedm-exit-watch".into())
                    .spawn(move || {
                        // SAFETY: siginfo_t is plain data that waitid fills; WNOWAIT leaves
                        // the child to be reaped by its owner.
                        unsafe {
                            let mut info: libc::siginfo_t = std::mem::zeroed();
                            while libc::waitid(
                                libc::P_PID,
                                pid as libc::id_t,
                                &mut info,
                                libc::WEXITED | libc::WNOWAIT,
                            ) < 0
                                && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted
                            {
                            }
                        }
                        let _ = tx.send(());
                    })?;
                ExitWatch::Thread(rx)
            }
        };
        Ok(ChildProc {
            pid,
            exit,
            status: None,
        })
    }

    pub(super) fn id(&self) -> i32 {
        self.pid
    }

    /// Waits for the exit (cancel-safe: nothing is lost when the future is dropped).
    pub(super) async fn wait(&mut self) -> io::Result<ExitStatus> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        let status = match &mut self.exit {
            ExitWatch::Pidfd(fd) => loop {
                if let Some(status) = try_reap(self.pid)? {
                    break status;
                }
                let mut ready = fd.readable().await?;
                if let Some(status) = try_reap(self.pid)? {
                    break status;
                }
                ready.clear_ready();
            },
            ExitWatch::Thread(exited) => {
                // A watcher that is gone cannot say more: reap, blocking if need be.
                let _ = exited.await;
                match try_reap(self.pid)? {
                    Some(status) => status,
                    None => reap_blocking(self.pid)?,
                }
            }
        };
        self.status = Some(status);
        Ok(status)
    }
}

/// The exit status of our child `pid` if it has exited (it is then reaped).
fn try_reap(pid: libc::pid_t) -> io::Result<Option<ExitStatus>> {
    let mut raw = 0;
    loop {
        // SAFETY: waitpid on our own, not yet reaped, child.
        let r = unsafe { libc::waitpid(pid, &mut raw, libc::WNOHANG) };
        if r == pid {
            return Ok(Some(ExitStatus::from_raw(raw)));
        }
        if r == 0 {
            return Ok(None);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Waits for our child `pid` to exit and reaps it.
fn reap_blocking(pid: libc::pid_t) -> io::Result<ExitStatus> {
    let mut raw = 0;
    loop {
        // SAFETY: blocking waitpid on our own, not yet reaped, child.
        if unsafe { libc::waitpid(pid, &mut raw, 0) } == pid {
            return Ok(ExitStatus::from_raw(raw));
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

impl Drop for ChildProc {
    fn drop(&mut self) {
        if self.status.is_some() {
            return;
        }
        // SAFETY: the process is our unreaped child: its pid cannot have been reused.
        unsafe { libc::kill(self.pid, libc::SIGKILL) };
        if !matches!(try_reap(self.pid), Ok(Some(_))) {
            let pid = self.pid;
            std::thread::spawn(move || reap_blocking(pid));
        }
    }
}

#[cfg(test)]
mod tests;
