//! The conformance fixture of `linux_group`: this host's users and groups (root only).

use super::*;

// ---------------------------------------------------------------------------------------
// linux_group
// ---------------------------------------------------------------------------------------

/// `/etc/group.lock` held as shadow-utils holds it (a file naming a live process, linked into
/// place atomically): `gpasswd` then fails with "cannot lock /etc/group; try again later".
/// Released when dropped (also on panic). Should the test process die holding it, shadow-utils
/// removes it as stale (the process it names is gone).
struct GroupLock {
    pid: String,
}

const GROUP_LOCK: &str = "/etc/group.lock";

impl GroupLock {
    fn take() -> GroupLock {
        let pid = std::process::id().to_string();
        let mine = PathBuf::from(format!("/etc/group.pedm-conformance.{pid}"));
        std::fs::write(&mine, &pid).expect("writing the lock file");
        // Someone else (useradd, another gpasswd) may hold it for a moment: wait for it.
        let deadline = Instant::now() + Duration::from_secs(10);
        let linked = loop {
            match std::fs::hard_link(&mine, GROUP_LOCK) {
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    if Instant::now() > deadline {
                        break Err(e);
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                other => break other,
            }
        };
        let _ = std::fs::remove_file(&mine);
        linked.unwrap_or_else(|e| panic!("taking {GROUP_LOCK}: {e}"));
        GroupLock { pid }
    }
}

impl Drop for GroupLock {
    fn drop(&mut self) {
        // Only if it is still ours.
        if std::fs::read_to_string(GROUP_LOCK).is_ok_and(|s| s == self.pid) {
            let _ = std::fs::remove_file(GROUP_LOCK);
        }
    }
}

/// Made for the test, removed when it ends (also on panic): group `<p>g` to grant, group
/// `<p>p` listed in `privileged_groups`, users `<p>alice`, `<p>bob`, `<p>eve` and `<p>keeper`
/// (kept), `<p>` = `pct<pid>`. The sudoers files read are empty ones of the test's own.
pub(super) struct LinuxGroupFixture {
    prefix: String,
    group: String,
    privileged: String,
    users: Vec<String>,
    groups: Vec<String>,
    lock: Mutex<Option<GroupLock>>,
    _sudoers: tempfile::TempDir,
    p: Arc<dyn Provisioner>,
}

impl LinuxGroupFixture {
    pub(super) fn start() -> Option<Self> {
        if !nix::unistd::geteuid().is_root() {
            println!("SKIP: linux_group needs root (groupadd, useradd, gpasswd)");
            return None;
        }
        let prefix = format!("pct{}", std::process::id());
        let group = format!("{prefix}g");
        let privileged = format!("{prefix}p");
        let sudoers = tempfile::tempdir().expect("a temporary directory");
        std::fs::write(sudoers.path().join("sudoers"), "").expect("an empty sudoers");
        std::fs::create_dir(sudoers.path().join("sudoers.d")).expect("a sudoers.d");
        let p = target(&format!(
            "kind = \"linux_group\"\nprivileged_groups = [{}]\nsudoers = {}\nsudoers_dir = {}\n\
             timeout = \"10s\"\nremove_drift = true\nkeep = [{}]\n",
            q(&privileged),
            q(&sudoers.path().join("sudoers").display().to_string()),
            q(&sudoers.path().join("sudoers.d").display().to_string()),
            q(&format!("{prefix}keeper")),
        ));
        let mut f = LinuxGroupFixture {
            prefix,
            group,
            privileged,
            users: vec![],
            groups: vec![],
            lock: Mutex::new(None),
            _sudoers: sudoers,
            p,
        };
        for g in [f.group.clone(), f.privileged.clone()] {
            run(&["groupadd", &g]);
            f.groups.push(g);
        }
        for u in ["alice", "bob", "eve", "keeper"] {
            let u = format!("{}{u}", f.prefix);
            run(&["useradd", "-M", "-N", "-s", "/usr/sbin/nologin", &u]);
            f.users.push(u);
        }
        Some(f)
    }

    /// `id -nG user` lists `group`.
    fn member(user: &str, group: &str) -> bool {
        run(&["id", "-nG", user])
            .split_whitespace()
            .any(|g| g == group)
    }
}

impl Drop for LinuxGroupFixture {
    fn drop(&mut self) {
        // The lock first: userdel and groupdel need it.
        drop(self.lock.lock().unwrap_or_else(|e| e.into_inner()).take());
        for u in &self.users {
            let _ = Command::new("userdel").args(["-f", u]).output();
        }
        for g in &self.groups {
            let _ = Command::new("groupdel").arg(g).output();
        }
    }
}

#[async_trait]
impl Fixture for LinuxGroupFixture {
    fn kind(&self) -> &'static str {
        "linux_group"
    }
    fn provisioner(&self) -> Arc<dyn Provisioner> {
        self.p.clone()
    }
    fn grant(&self, holder: &str) -> GrantSpec {
        spec(
            holder,
            "ops",
            json!({"group": self.group, "login": format!("{}{{user}}", self.prefix)}),
        )
    }
    async fn holds(&self, g: &GrantSpec) -> bool {
        Self::member(&format!("{}{}", self.prefix, g.user), &self.group)
    }
    async fn remove_by_hand(&self, g: &GrantSpec) {
        let user = format!("{}{}", self.prefix, g.user);
        run(&["gpasswd", "-d", &user, &self.group]);
    }
    async fn plant_standing(&self, whom: Whom) -> (String, String) {
        let user = match whom {
            Whom::Drift => format!("{}eve", self.prefix),
            Whom::Kept => format!("{}keeper", self.prefix),
        };
        run(&["gpasswd", "-a", &user, &self.privileged]);
        (user, format!("group:{}", self.privileged))
    }
    async fn plant_protected(&self) -> Vec<Protected> {
        // Only in the test's own group, which goes when the test ends.
        run(&["gpasswd", "-a", "root", &self.privileged]);
        vec![Protected {
            account: "root".into(),
            privilege: format!("group:{}", self.privileged),
            why: "root is never removed",
        }]
    }
    async fn holds_standing(&self, account: &str, privilege: &str) -> bool {
        let group = privilege
            .strip_prefix("group:")
            .expect("a group membership");
        Self::member(account, group)
    }
    async fn take_down(&self) {
        *self.lock.lock().unwrap_or_else(|e| e.into_inner()) = Some(GroupLock::take());
    }
    async fn bring_up(&self) {
        drop(self.lock.lock().unwrap_or_else(|e| e.into_inner()).take());
    }
    fn down_says(&self) -> String {
        "cannot lock /etc/group".into()
    }
}
