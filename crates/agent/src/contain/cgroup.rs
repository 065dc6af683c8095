//! Containment with cgroup v2: every session runs in a cgroup of its own, under one per
//! grant (`<root>/sessions/<grant>/<session>`), joined by the command before it execs. When a
//! grant ends, `cgroup.kill` on its directory ends every process any of its sessions started,
//! wherever they went: `setsid`, double forks, `nohup`, a cleared environment change nothing.
//!
//! The root is the `cgroup` setting, or found: the agent's own cgroup when it was delegated
//! one (systemd `Delegate=yes`; the agent then moves itself into `<root>/agent`, since a
//! cgroup with children holds no processes of its own once controllers are enabled), or
//! `pedm-agent` under the cgroup v2 mount when the agent sits at the top. Where no cgroup v2
//! hierarchy is writable, the agent falls back to [`crate::contain::procs`] (session id and marker)
//! and says so in `pedm-agent status`.

use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// The cgroup tree the agent manages.
#[derive(Debug, Clone)]
pub struct Cgroups {
    root: PathBuf,
}

/// Where containment comes from, for logs and `pedm-agent status`.
pub fn describe(c: &Result<Cgroups, String>) -> String {
    match c {
        Ok(c) => format!("cgroup v2 ({})", c.root.display()),
        Err(why) => format!("process scan only (session id and marker): {why}"),
    }
}

impl Cgroups {
    /// The tree to use: `configured` (a directory in a cgroup v2 hierarchy, or `off`), or
    /// found as the module documentation says. Creates nothing.
    pub fn locate(configured: Option<&str>) -> Result<Cgroups, String> {
        match configured {
            Some("off") => Err("turned off (cgroup = \"off\")".into()),
            Some(dir) => {
                let dir = PathBuf::from(dir);
                // The nearest existing ancestor (the directory itself may not exist yet).
                let inside = dir.ancestors().find(|a| a.exists()).is_some_and(is_cgroup2);
                if !inside {
                    return Err(format!("{} is not in a cgroup v2 hierarchy", dir.display()));
                }
                Ok(Cgroups { root: dir })
            }
            None => {
                let mount = cgroup2_mount().ok_or("no cgroup v2 hierarchy is mounted")?;
                let own = own_cgroup().ok_or("this process has no cgroup v2 path")?;
                let root = if own == "/" {
                    mount.join("pedm-agent")
                } else {
                    mount.join(own.trim_start_matches('/'))
                };
                Ok(Cgroups { root })
            }
        }
    }

    /// Creates the tree (and moves the agent out of a delegated root). Fails when the
    /// hierarchy is not writable.
    pub fn prepare(self) -> Result<Cgroups, String> {
        let sessions = self.root.join("sessions");
        std::fs::create_dir_all(&sessions)
            .map_err(|e| format!("cannot create {}: {e}", sessions.display()))?;
        if own_cgroup_dir().as_deref() == Some(self.root.as_path()) {
            let agent = self.root.join("agent");
            std::fs::create_dir_all(&agent)
                .and_then(|()| std::fs::write(agent.join("cgroup.procs"), b"0"))
                .map_err(|e| format!("cannot move the agent into {}: {e}", agent.display()))?;
        }
        // Prove the tree works before relying on it.
        let probe = sessions.join(format!("probe-{}", Uuid::now_v7()));
        std::fs::create_dir(&probe)
            .map_err(|e| format!("cannot create cgroups under {}: {e}", sessions.display()))?;
        let has_kill = probe.join("cgroup.kill").exists();
        let _ = std::fs::remove_dir(&probe);
        if !has_kill {
            return Err("the kernel has no cgroup.kill (Linux 5.14 or later needed)".into());
        }
        Ok(self)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether [`Self::prepare`] has made the tree (for `pedm-agent status`).
    pub fn prepared(&self) -> bool {
        self.root.join("sessions").is_dir()
    }

    /// Kills everything in the tree and removes it (tests, uninstall).
    pub fn remove(&self) {
        self.kill_leftovers();
        let _ = std::fs::remove_dir(self.root.join("agent"));
        let _ = std::fs::remove_dir(self.root.join("sessions"));
        let _ = std::fs::remove_dir(&self.root);
    }

    fn grant_dir(&self, grant: Uuid) -> PathBuf {
        self.root.join("sessions").join(grant.to_string())
    }

    /// Creates the session's cgroup and opens its `cgroup.procs` for the command to join
    /// (it writes `0`, meaning itself, before it execs).
    pub fn session(&self, grant: Uuid, session: Uuid) -> std::io::Result<OwnedFd> {
        let dir = self.grant_dir(grant).join(session.to_string());
        std::fs::create_dir_all(&dir)?;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.join("cgroup.procs"))?;
        Ok(OwnedFd::from(f))
    }

    /// The processes in a grant's cgroups now.
    pub fn processes(&self, grant: Uuid) -> Vec<i32> {
        let mut out = vec![];
        collect_procs(&self.grant_dir(grant), &mut out);
        out
    }

    /// Kills every process of the grant's sessions (`cgroup.kill`), waits until they are
    /// gone (at most a second) and removes the cgroups. Returns how many were killed.
    pub fn kill_grant(&self, grant: Uuid) -> usize {
        kill_tree(&self.grant_dir(grant))
    }

    /// At start: kills what the sessions of an earlier run left in their cgroups, whatever
    /// grant they belonged to. Returns how many processes.
    pub fn kill_leftovers(&self) -> usize {
        let Ok(dir) = std::fs::read_dir(self.root.join("sessions")) else {
            return 0;
        };
        dir.flatten()
            .filter(|e| e.path().is_dir())
            .map(|e| kill_tree(&e.path()))
            .sum()
    }
}

fn kill_tree(dir: &Path) -> usize {
    if !dir.exists() {
        return 0;
    }
    let mut procs = vec![];
    collect_procs(dir, &mut procs);
    let killed = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("cgroup.kill"))
        .and_then(|mut f| f.write_all(b"1"));
    if let Err(e) = killed {
        // Not a reason to leave anything running: kill what the cgroups hold one by one.
        tracing::error!(cgroup = %dir.display(), error = %e, "cgroup.kill failed; killing each process");
        for pid in &procs {
            // SAFETY: plain kill(2) of a process listed in the session's cgroup.
            unsafe { libc::kill(*pid, libc::SIGKILL) };
        }
    }
    // The kernel kills at once; the cgroups empty when the processes have exited.
    let deadline = Instant::now() + Duration::from_secs(1);
    while populated(dir) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    remove_tree(dir);
    procs.len()
}

fn collect_procs(dir: &Path, out: &mut Vec<i32>) {
    if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        out.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
    }
    if let Ok(children) = std::fs::read_dir(dir) {
        for c in children.flatten() {
            if c.path().is_dir() {
                collect_procs(&c.path(), out);
            }
        }
    }
}

fn populated(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("cgroup.events"))
        .map(|t| t.lines().any(|l| l == "populated 1"))
        .unwrap_or(false)
}

/// Removes a cgroup and its children (deepest first); cgroups still holding processes stay.
fn remove_tree(dir: &Path) {
    if let Ok(children) = std::fs::read_dir(dir) {
        for c in children.flatten() {
            if c.path().is_dir() {
                remove_tree(&c.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

fn is_cgroup2(dir: &Path) -> bool {
    nix::sys::statfs::statfs(dir)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
}

/// Where the cgroup v2 hierarchy is mounted (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified`
/// on hybrid systems).
pub fn cgroup2_mount() -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    text.lines().find_map(|l| {
        // "... mountpoint options - fstype source superoptions"
        let (left, right) = l.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        left.split_whitespace().nth(4).map(PathBuf::from)
    })
}

/// This process's cgroup v2 path (`0::/path` in `/proc/self/cgroup`).
fn own_cgroup() -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_string)
}

fn own_cgroup_dir() -> Option<PathBuf> {
    let own = own_cgroup()?;
    Some(cgroup2_mount()?.join(own.trim_start_matches('/')))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;

    /// A tree of our own under the hierarchy, or `None` (with the reason printed).
    pub(crate) fn test_tree() -> Option<Cgroups> {
        let Some(mount) = cgroup2_mount() else {
            eprintln!("skipped: no cgroup v2 hierarchy");
            return None;
        };
        let dir = mount.join(format!("pedm-test-{}", Uuid::now_v7()));
        match Cgroups::locate(Some(dir.to_str()?)).and_then(Cgroups::prepare) {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("skipped: cgroup v2 not writable: {e}");
                None
            }
        }
    }

    #[test]
    fn everything_a_grant_started_is_killed_whatever_it_did() {
        let Some(cg) = test_tree() else { return };
        let (grant, session) = (Uuid::now_v7(), Uuid::now_v7());
        let procs = cg.session(grant, session).unwrap();
        let fd = procs.as_raw_fd();
        // A shell in the session's cgroup that leaves a process behind which left its
        // session and cleared its environment, then exits.
        let mut c = std::process::Command::new("/bin/sh");
        c.args([
            "-c",
            "setsid env -i /bin/sleep 300 </dev/null >/dev/null 2>&1 & echo $!",
        ])
        .stdout(std::process::Stdio::piped());
        // SAFETY: write(2) is async-signal-safe; `fd` stays open until after the spawn.
        unsafe {
            c.pre_exec(move || {
                if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            })
        };
        let out = c.output().unwrap();
        let escaped: i32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        assert!(cg.processes(grant).contains(&escaped));
        assert_eq!(cg.kill_grant(grant), 1);
        assert!(
            std::fs::read_to_string(format!("/proc/{escaped}/stat"))
                .map_or(true, |s| s.contains(") Z")),
            "the escaped process survived"
        );
        assert!(!cg.grant_dir(grant).exists(), "the cgroups are removed");
        let _ = std::fs::remove_dir(cg.root.join("sessions"));
        let _ = std::fs::remove_dir(&cg.root);
    }
}
