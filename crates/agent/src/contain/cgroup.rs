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
//!
//! Resource limits (a role's memory, pids, cpu) are set on the grant's cgroup, so they hold
//! for everything its sessions run together. Each controller is taken from the cgroup v2 tree
//! where the kernel offers it there, else from its cgroup v1 hierarchy (hybrid hosts, where
//! systemd keeps the controllers in v1): the session then joins a cgroup per grant in that
//! hierarchy as well. A limit no hierarchy can enforce refuses the session.

use pedm_api::SessionLimits;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// The cgroup tree the agent manages.
#[derive(Debug, Clone)]
pub struct Cgroups {
    root: PathBuf,
    /// Where each limit's controller is, as [`Controller::ALL`] orders them; known after
    /// [`Cgroups::prepare`].
    controllers: [Option<Place>; 3],
}

/// A resource controller a role's limits use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Controller {
    Memory,
    Pids,
    Cpu,
}

impl Controller {
    pub const ALL: [Controller; 3] = [Controller::Memory, Controller::Pids, Controller::Cpu];

    pub fn name(self) -> &'static str {
        match self {
            Controller::Memory => "memory",
            Controller::Pids => "pids",
            Controller::Cpu => "cpu",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    /// The role's limit for this controller, if it sets one.
    fn wanted(self, l: &SessionLimits) -> Option<u64> {
        match self {
            Controller::Memory => l.memory_bytes,
            Controller::Pids => l.pids.map(u64::from),
            Controller::Cpu => l.cpu_percent.map(u64::from),
        }
    }

    /// The files and values that set `limit` (or lift it: `None`) in a hierarchy.
    fn settings(self, v1: bool, limit: Option<u64>) -> Vec<(&'static str, String)> {
        const PERIOD_US: u64 = 100_000;
        let quota = limit.map(|pct| pct * PERIOD_US / 100);
        match (self, v1) {
            (Controller::Memory, false) => vec![("memory.max", or_max(limit, "max"))],
            (Controller::Memory, true) => vec![("memory.limit_in_bytes", or_max(limit, "-1"))],
            (Controller::Pids, _) => vec![("pids.max", or_max(limit, "max"))],
            (Controller::Cpu, false) => {
                vec![("cpu.max", format!("{} {PERIOD_US}", or_max(quota, "max")))]
            }
            (Controller::Cpu, true) => vec![
                ("cpu.cfs_period_us", PERIOD_US.to_string()),
                ("cpu.cfs_quota_us", or_max(quota, "-1")),
            ],
        }
    }
}

fn or_max(v: Option<u64>, max: &str) -> String {
    v.map_or_else(|| max.to_string(), |v| v.to_string())
}

/// Where a controller is available to the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Place {
    /// Enabled in the v2 tree: limits go on `<root>/sessions/<grant>`.
    V2,
    /// A v1 hierarchy: sessions join `<dir>/sessions/<grant>`, where the limits go.
    V1(PathBuf),
}

/// Where containment comes from, for logs and `pedm-agent status`.
pub fn describe(c: &Result<Cgroups, String>) -> String {
    match c {
        Ok(c) => {
            let limits: Vec<String> = Controller::ALL
                .iter()
                .map(|&k| match &c.controllers[k.index()] {
                    Some(Place::V2) => format!("{} (v2)", k.name()),
                    Some(Place::V1(_)) => format!("{} (v1)", k.name()),
                    None => format!("{} (none: roles limiting it are refused)", k.name()),
                })
                .collect();
            format!(
                "cgroup v2 ({}); limits: {}",
                c.root.display(),
                limits.join(", ")
            )
        }
        Err(why) => format!(
            "process scan only (session id and marker): {why}; roles with limits are refused"
        ),
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
                Ok(Cgroups::at(dir))
            }
            None => {
                let mount = cgroup2_mount().ok_or("no cgroup v2 hierarchy is mounted")?;
                let own = own_cgroup().ok_or("this process has no cgroup v2 path")?;
                let root = if own == "/" {
                    mount.join("pedm-agent")
                } else {
                    mount.join(own.trim_start_matches('/'))
                };
                Ok(Cgroups::at(root))
            }
        }
    }

    fn at(root: PathBuf) -> Cgroups {
        Cgroups {
            root,
            controllers: [None, None, None],
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
        let mut this = self;
        for k in Controller::ALL {
            this.controllers[k.index()] = this.find_controller(k);
        }
        Ok(this)
    }

    /// The controllers a running agent set up, read without changing anything (for
    /// `pedm-agent status`).
    pub fn observed(mut self) -> Cgroups {
        let enabled = std::fs::read_to_string(self.root.join("sessions/cgroup.subtree_control"))
            .unwrap_or_default();
        for k in Controller::ALL {
            let v1 = cgroup1_dir(k.name()).map(|d| d.join(self.v1_name()));
            self.controllers[k.index()] = if enabled.split_whitespace().any(|c| c == k.name()) {
                Some(Place::V2)
            } else {
                v1.filter(|d| d.join("sessions").is_dir()).map(Place::V1)
            };
        }
        self
    }

    /// Enables `k` for the grants' cgroups in the v2 tree, or finds a writable v1
    /// hierarchy for it (a directory named as the v2 tree, under the agent's own cgroup
    /// there).
    fn find_controller(&self, k: Controller) -> Option<Place> {
        let offered = std::fs::read_to_string(self.root.join("cgroup.controllers"))
            .is_ok_and(|t| t.split_whitespace().any(|c| c == k.name()));
        if offered {
            let enable = format!("+{}", k.name());
            let enabled = [self.root.clone(), self.root.join("sessions")]
                .iter()
                .all(|d| std::fs::write(d.join("cgroup.subtree_control"), &enable).is_ok());
            if enabled {
                return Some(Place::V2);
            }
        }
        let dir = cgroup1_dir(k.name())?.join(self.v1_name());
        std::fs::create_dir_all(dir.join("sessions")).ok()?;
        Some(Place::V1(dir))
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
        // Found by name: a tree only located (not prepared) knows no v1 directories.
        for k in Controller::ALL {
            if let Some(v1) = cgroup1_dir(k.name()).map(|d| d.join(self.v1_name())) {
                for e in std::fs::read_dir(v1.join("sessions"))
                    .into_iter()
                    .flatten()
                    .flatten()
                {
                    remove_tree(&e.path());
                }
                let _ = std::fs::remove_dir(v1.join("sessions"));
                let _ = std::fs::remove_dir(v1);
            }
        }
        let _ = std::fs::remove_dir(self.root.join("agent"));
        let _ = std::fs::remove_dir(self.root.join("sessions"));
        let _ = std::fs::remove_dir(&self.root);
    }

    fn grant_dir(&self, grant: Uuid) -> PathBuf {
        self.root.join("sessions").join(grant.to_string())
    }

    /// Creates the session's cgroup, sets the grant's limits, and opens what the command
    /// joins: the session's directory in the v2 tree, and the grant's `cgroup.procs` in each
    /// v1 hierarchy a limit is set in.
    pub fn session(
        &self,
        grant: Uuid,
        session: Uuid,
        limits: &SessionLimits,
    ) -> Result<SessionCgroups, String> {
        let io = |what: &Path, e: std::io::Error| format!("{}: {e}", what.display());
        let dir = self.grant_dir(grant).join(session.to_string());
        std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        let mut joins = SessionCgroups {
            paths: vec![dir.join("cgroup.procs")],
            v2: Some(V2Cgroup {
                dir: std::fs::File::open(&dir)
                    .map(OwnedFd::from)
                    .map_err(|e| io(&dir, e))?,
                procs: open_procs(&dir)?,
            }),
            v1: vec![],
        };
        for k in Controller::ALL {
            let wanted = k.wanted(limits);
            let dir = match (&self.controllers[k.index()], wanted) {
                (None, None) | (Some(Place::V1(_)), None) => continue,
                (None, Some(_)) => {
                    return Err(format!(
                        "the role limits {}, but this host's cgroups have no {} controller",
                        k.name(),
                        k.name()
                    ));
                }
                (Some(Place::V2), _) => self.grant_dir(grant),
                (Some(Place::V1(v1)), Some(_)) => {
                    let d = v1.join("sessions").join(grant.to_string());
                    std::fs::create_dir_all(&d).map_err(|e| io(&d, e))?;
                    joins.v1.push(open_procs(&d)?);
                    joins.paths.push(d.join("cgroup.procs"));
                    d
                }
            };
            let v1 = matches!(self.controllers[k.index()], Some(Place::V1(_)));
            for (file, value) in k.settings(v1, wanted) {
                let path = dir.join(file);
                match std::fs::write(&path, &value) {
                    Ok(()) => {}
                    // Lifting a limit that was never set may fail harmlessly.
                    Err(_) if wanted.is_none() => {}
                    Err(e) => {
                        return Err(format!("cannot set {} to {value}: {e}", path.display()));
                    }
                }
            }
        }
        Ok(joins)
    }

    /// Named as the v2 tree is: agents with trees of their own keep apart in v1 too.
    fn v1_name(&self) -> &std::ffi::OsStr {
        self.root.file_name().unwrap_or("pedm-agent".as_ref())
    }

    /// The v1 hierarchies a limit is taken from.
    fn v1_dirs(&self) -> impl Iterator<Item = &Path> {
        self.controllers.iter().filter_map(|p| match p {
            Some(Place::V1(d)) => Some(d.as_path()),
            _ => None,
        })
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
        let killed = kill_tree(&self.grant_dir(grant));
        for v1 in self.v1_dirs() {
            // Empty by now (its processes were in the v2 cgroups just killed), unless
            // something went wrong there: then they die here.
            kill_v1(&v1.join("sessions").join(grant.to_string()));
        }
        killed
    }

    /// At start: kills what the sessions of an earlier run left in their cgroups, whatever
    /// grant they belonged to. Returns how many processes.
    pub fn kill_leftovers(&self) -> usize {
        let Ok(dir) = std::fs::read_dir(self.root.join("sessions")) else {
            return 0;
        };
        let killed = dir
            .flatten()
            .filter(|e| e.path().is_dir())
            .map(|e| kill_tree(&e.path()))
            .sum();
        for v1 in self.v1_dirs() {
            for e in std::fs::read_dir(v1.join("sessions"))
                .into_iter()
                .flatten()
                .flatten()
            {
                remove_tree(&e.path());
            }
        }
        killed
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

/// Kills what a grant's cgroup in a v1 hierarchy holds (v1 has no `cgroup.kill`), waits
/// until it is empty (at most a second) and removes it.
fn kill_v1(dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let mut procs = vec![];
        collect_procs(dir, &mut procs);
        if procs.is_empty() || Instant::now() > deadline {
            break;
        }
        for pid in procs {
            // SAFETY: plain kill(2) of a process listed in the grant's cgroup.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    remove_tree(dir);
}

/// What a session's command joins before it execs.
#[derive(Debug, Default)]
pub struct SessionCgroups {
    /// The session's cgroup in the v2 tree; `None` without containment.
    pub v2: Option<V2Cgroup>,
    /// The `cgroup.procs` of the grant's cgroup in each v1 hierarchy a limit comes from.
    pub v1: Vec<OwnedFd>,
    /// The `cgroup.procs` files of the above, for a process that joins by path (the sudo
    /// plugin): the v2 one first.
    pub paths: Vec<PathBuf>,
}

impl SessionCgroups {
    pub fn is_empty(&self) -> bool {
        self.v2.is_none() && self.v1.is_empty()
    }
}

/// A cgroup v2 directory: a process is born in it (`clone3` with `CLONE_INTO_CGROUP`) or
/// moves itself there by writing `0` to its `cgroup.procs`.
#[derive(Debug)]
pub struct V2Cgroup {
    pub dir: OwnedFd,
    pub procs: OwnedFd,
}

fn open_procs(dir: &Path) -> Result<OwnedFd, String> {
    let path = dir.join("cgroup.procs");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .map(OwnedFd::from)
        .map_err(|e| format!("{}: {e}", path.display()))
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

/// This process's cgroup in the v1 hierarchy of `controller`, where one is mounted and
/// writable (hybrid hosts).
fn cgroup1_dir(controller: &str) -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mount = mounts.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        let mut right = right.split_whitespace();
        if right.next()? != "cgroup" {
            return None;
        }
        let options = right.nth(1)?;
        options
            .split(',')
            .any(|o| o == controller)
            .then(|| left.split_whitespace().nth(4).map(PathBuf::from))?
    })?;
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = own.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, list, path) = (parts.next()?, parts.next()?, parts.next()?);
        list.split(',').any(|c| c == controller).then_some(path)
    })?;
    Some(mount.join(path.trim_start_matches('/')))
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
pub(crate) mod tests {
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
        let joins = cg
            .session(grant, session, &SessionLimits::default())
            .unwrap();
        assert!(joins.v1.is_empty(), "no limits: the v2 cgroup alone");
        let fd = joins.v2.as_ref().unwrap().procs.as_raw_fd();
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
