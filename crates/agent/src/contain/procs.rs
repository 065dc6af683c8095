//! Finding the processes of a session in `/proc`, to signal them when it ends and to end
//! what an earlier run of the agent left running.
//!
//! A session is a kernel session (`setsid` in the child) led by the command, so its
//! processes are found by session id. A process that calls `setsid` itself leaves that
//! session; it is still found by the marker the agent puts in every session's environment
//! (`PEDM_SESSION=<id>`), inherited by everything it starts, among the processes of the
//! run-as user. What this cannot find: a process of the run-as user that both left the
//! session and replaced its environment (re-exec with a clean one, or overwrote it in
//! memory). Only a cgroup per session contains that.

/// The environment variable naming the session a process belongs to.
pub const MARKER_VAR: &str = "PEDM_SESSION";

/// How to recognise a session's processes.
#[derive(Debug, Clone)]
pub struct Members {
    /// The session id (the command's pid); 0 when unknown.
    pub sid: i32,
    /// `PEDM_SESSION=<id>`, as in the session's environment.
    pub marker: Option<String>,
    /// The run-as user: only their processes are matched by the marker.
    pub uid: u32,
    /// With `sid`: only processes that started at or after this time (clock ticks since
    /// boot, `/proc/<pid>/stat` field 22) are the session's (pid numbers are reused).
    pub not_before: Option<u64>,
}

impl Members {
    /// Signals every process of the session (its group first, then each member found in
    /// `/proc`); returns how many processes were signalled through `/proc`.
    pub fn signal(&self, sig: i32) -> usize {
        if self.sid > 1 && self.not_before.is_none() {
            // SAFETY: plain kill(2) of a process group that is not ours (sid > 1 is the
            // command's pid, never the agent's group).
            unsafe { libc::kill(-self.sid, sig) };
        }
        let mut n = 0;
        for pid in self.find() {
            // SAFETY: plain kill(2).
            if unsafe { libc::kill(pid, sig) } == 0 {
                n += 1;
            }
        }
        n
    }

    /// The pids of the session's processes now.
    pub fn find(&self) -> Vec<i32> {
        let own = std::process::id() as i32;
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return vec![];
        };
        let mut found = vec![];
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<i32>().ok())
            else {
                continue;
            };
            if pid <= 1 || pid == own {
                continue;
            }
            let Some(stat) = Stat::read(pid) else {
                continue;
            };
            let by_session = self.sid > 1
                && stat.session == self.sid
                && self.not_before.is_none_or(|t| stat.start_time >= t)
                && (self.not_before.is_none() || owner(pid) == Some(self.uid));
            let by_marker = !by_session
                && self.marker.as_deref().is_some_and(|m| {
                    owner(pid) == Some(self.uid) && environ_has(pid, m.as_bytes())
                });
            if by_session || by_marker {
                found.push(pid);
            }
        }
        found
    }
}

/// The fields of `/proc/<pid>/stat` the agent uses.
#[derive(Debug, Clone, Copy)]
pub struct Stat {
    pub session: i32,
    /// Clock ticks after boot.
    pub start_time: u64,
}

impl Stat {
    pub fn read(pid: i32) -> Option<Stat> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command name may hold spaces and parentheses: fields count from its end.
        let after: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
        // after[0] is field 3 (state): session is field 6, starttime field 22.
        Some(Stat {
            session: after.get(3)?.parse().ok()?,
            start_time: after.get(19)?.parse().ok()?,
        })
    }
}

/// The real uid of `pid`.
fn owner(pid: i32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

fn environ_has(pid: i32, entry: &[u8]) -> bool {
    std::fs::read(format!("/proc/{pid}/environ"))
        .is_ok_and(|env| env.split(|b| *b == 0).any(|e| e == entry))
}

/// This boot's id: a pid noted before a reboot means nothing after it.
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;
    use std::process::Command;

    #[test]
    fn processes_are_found_by_session_and_by_marker_after_setsid() {
        let marker = format!("{MARKER_VAR}={}", uuid::Uuid::now_v7());
        let (k, v) = marker.split_once('=').unwrap();
        // A session leader, and a process that left its session but kept the marker.
        let mut leader = Command::new("/bin/sleep");
        leader.arg("30").env(k, v);
        // SAFETY: setsid is async-signal-safe.
        unsafe {
            leader.pre_exec(|| {
                libc::setsid();
                Ok(())
            })
        };
        let mut leader = leader.spawn().unwrap();
        let mut escaped = Command::new("/usr/bin/setsid")
            .args(["/bin/sleep", "30"])
            .env(k, v)
            .spawn()
            .unwrap();
        let uid = nix::unistd::getuid().as_raw();
        let members = Members {
            sid: leader.id() as i32,
            marker: Some(marker.clone()),
            uid,
            not_before: None,
        };
        // setsid(1) forks when it is a group leader: wait until the sleep has its marker.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let found = loop {
            let f = members.find();
            if f.len() >= 2 || std::time::Instant::now() > deadline {
                break f;
            }
            std::thread::yield_now();
        };
        assert!(found.contains(&(leader.id() as i32)), "{found:?}");
        assert_eq!(found.len(), 2, "leader and the escaped process: {found:?}");
        // Without the marker only the session is found.
        let by_sid = Members {
            marker: None,
            ..members.clone()
        };
        assert_eq!(by_sid.find(), vec![leader.id() as i32]);
        // Another user's processes are never matched by the marker.
        let other = Members {
            sid: 0,
            uid: uid + 1,
            ..members.clone()
        };
        assert!(other.find().is_empty());
        assert_eq!(members.signal(libc::SIGKILL), 2);
        let _ = leader.wait();
        let _ = escaped.wait();
    }
}
