//! File changes a session makes under a role's watched paths, logged as they happen.
//!
//! Who made a change must not depend on finding the writer in `/proc` afterwards (a `cp`
//! exits microseconds after it closes the file). So the session runs in a mount namespace of
//! its own, where each watched path is bind-mounted onto itself, and a fanotify group marks
//! those bind mounts: a write reaches them only through the session's namespace, so every
//! event is the session's, whoever in it made it (a process that left the session too), and
//! nobody else's. The namespace is made before the session starts (a thread of the agent
//! unshares, mounts and marks; the session's command joins it before it execs), so nothing the
//! session writes comes before the mark.
//!
//! Recorded: a file written and closed (`written`), with the writer's pid. Removals and
//! renames cannot be told apart by mount (fanotify refuses directory-entry events on mount
//! marks), so those come from the session's seccomp filter instead
//! ([`crate::contain::execs::EntryGate`]): every `unlink`, `rmdir` and `rename` of the
//! session is read while the kernel holds it and recorded when it names a watched path
//! (`deleted`, `dir_removed`, `renamed` or `exchanged`, with `to`), then let through. Limits:
//! a removal is recorded as asked, before it runs (one that then fails is still recorded); a
//! process that rewrites the path from another thread between the read and the kernel's
//! can make the record name another file; a write through another name of the same file
//! outside the watched path (a hard link elsewhere) is not seen; without seccomp user
//! notification only writes are recorded.

use nix::sys::fanotify::{EventFFlags, Fanotify, InitFlags, MarkFlags, MaskFlags};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// A session's mount namespace with its watched paths marked.
#[derive(Debug)]
pub struct Watched {
    /// The namespace (`/proc/thread-self/ns/mnt` of the thread that made it): the session's
    /// command joins it with `setns`.
    pub namespace: OwnedFd,
    /// The fanotify group whose events are the session's writes.
    pub group: Fanotify,
    pub paths: Vec<PathBuf>,
}

/// One change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileChange {
    pub path: String,
    pub op: &'static str,
    pub pid: i32,
    /// Where a renamed file went.
    pub to: Option<String>,
}

/// Makes the namespace and marks `paths` in it (each must exist). Runs on a thread of its
/// own, which ends when done (the namespace lives on in the returned descriptor).
pub fn prepare(paths: &[PathBuf]) -> io::Result<Watched> {
    let paths = paths.to_vec();
    std::thread::Builder::new()
        .name("watch-setup".into())
        .spawn(move || in_new_namespace(paths))?
        .join()
        .map_err(|_| io::Error::other("the watch setup thread panicked"))?
}

fn in_new_namespace(paths: Vec<PathBuf>) -> io::Result<Watched> {
    use nix::mount::{MsFlags, mount};
    use nix::sched::{CloneFlags, unshare};
    let err = |what: &str, e: nix::Error| io::Error::other(format!("{what}: {e}"));
    // This thread only: its own filesystem information, then its own mount namespace.
    unshare(CloneFlags::CLONE_FS | CloneFlags::CLONE_NEWNS)
        .map_err(|e| err("cannot make a mount namespace", e))?;
    // Nothing done here reaches the host's namespace.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| err("cannot make the namespace's mounts private", e))?;
    let group = Fanotify::init(
        InitFlags::FAN_CLASS_NOTIF | InitFlags::FAN_CLOEXEC | InitFlags::FAN_NONBLOCK,
        EventFFlags::O_RDONLY | EventFFlags::O_CLOEXEC | EventFFlags::O_LARGEFILE,
    )
    .map_err(|e| err("cannot start fanotify", e))?;
    for p in &paths {
        mount(
            Some(p.as_path()),
            p.as_path(),
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(|e| err(&format!("cannot bind-mount {}", p.display()), e))?;
        group
            .mark(
                MarkFlags::FAN_MARK_ADD | MarkFlags::FAN_MARK_MOUNT,
                MaskFlags::FAN_CLOSE_WRITE,
                std::fs::File::open("/")?.as_fd(),
                Some(p.as_path()),
            )
            .map_err(|e| err(&format!("cannot watch {}", p.display()), e))?;
    }
    let namespace = std::fs::File::open("/proc/thread-self/ns/mnt")?.into();
    Ok(Watched {
        namespace,
        group,
        paths,
    })
}

impl AsRawFd for Watched {
    /// The fanotify group's descriptor (readable when changes wait).
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.group.as_raw_fd()
    }
}

impl Watched {
    /// The changes waiting now (the group is non-blocking: none when nothing happened).
    pub fn changes(&self) -> io::Result<Vec<FileChange>> {
        let events = match self.group.read_events() {
            Ok(e) => e,
            Err(nix::errno::Errno::EAGAIN) => return Ok(vec![]),
            Err(e) => return Err(io::Error::other(e)),
        };
        Ok(events
            .iter()
            .filter_map(|e| {
                // The marks cover exactly the bind mounts of the watched paths: every event
                // is a change to record, even one whose name cannot be read back.
                let path = match e.fd() {
                    Some(fd) => {
                        match std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())) {
                            Ok(p) if !self.covers(&p) => return None,
                            Ok(p) => p.to_string_lossy().into_owned(),
                            Err(err) => format!("(a file under a watched path: {err})"),
                        }
                    }
                    None => "(a file under a watched path: queue overflowed)".to_string(),
                };
                Some(FileChange {
                    path,
                    op: "written",
                    pid: e.pid(),
                    to: None,
                })
            })
            .collect())
    }

    fn covers(&self, path: &Path) -> bool {
        covered(&self.paths, path)
    }
}

/// Whether `path` is one of `watched` or under one.
pub fn covered(watched: &[PathBuf], path: &Path) -> bool {
    watched.iter().any(|w| path.starts_with(w))
}

/// Checks a role's watched paths as the agent will use them: absolute, existing, no `..`.
pub fn check_paths(paths: &[String]) -> Result<Vec<PathBuf>, String> {
    paths
        .iter()
        .map(|p| {
            let path = Path::new(p);
            if !path.is_absolute()
                || path
                    .components()
                    .any(|c| matches!(c, std::path::Component::ParentDir))
            {
                return Err(format!(
                    "watched path {p:?} is not an absolute path without .."
                ));
            }
            std::fs::canonicalize(path)
                .map_err(|e| format!("watched path {p} cannot be watched on this host: {e}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::process::CommandExt;

    #[test]
    fn writes_inside_the_namespace_are_seen_and_the_hosts_are_not() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root (mount namespaces, fanotify)");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let w = match prepare(&[dir.path().to_path_buf()]) {
            Ok(w) => w,
            Err(e) => {
                eprintln!("skipped: {e}");
                return;
            }
        };
        // The host's mount table is untouched.
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(!mounts.contains(dir.path().to_str().unwrap()));
        // A write from this (host) process: not the session's.
        std::fs::File::create(dir.path().join("host"))
            .unwrap()
            .write_all(b"x")
            .unwrap();
        // A process in the namespace writes and exits at once.
        let ns = w.namespace.as_raw_fd();
        let mut c = std::process::Command::new("/bin/sh");
        c.args(["-c", &format!("echo hi > {}/inside", dir.path().display())]);
        // SAFETY: setns(2) in the child before it execs.
        unsafe {
            c.pre_exec(move || {
                if libc::setns(ns, libc::CLONE_NEWNS) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            })
        };
        let st = c.status().unwrap();
        assert!(st.success());
        let changes = w.changes().unwrap();
        let paths: Vec<&str> = changes.iter().map(|c| c.path.as_str()).collect();
        let inside = dir.path().join("inside");
        assert_eq!(paths, vec![inside.to_str().unwrap()], "{changes:?}");
        assert_eq!(changes[0].op, "written");
        assert!(changes[0].pid > 0);
    }

    #[test]
    fn watched_paths_must_be_absolute_and_exist() {
        assert!(check_paths(&["etc".into()]).is_err());
        assert!(check_paths(&["/etc/../root".into()]).is_err());
        assert!(
            check_paths(&["/nonexistent-pedm".into()])
                .unwrap_err()
                .contains("cannot be watched")
        );
        assert_eq!(
            check_paths(&["/etc".into()]).unwrap(),
            vec![PathBuf::from("/etc")]
        );
    }
}
