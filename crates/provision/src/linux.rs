//! Linux groups on the local host: temporary membership of a group such as `docker` or
//! `sudo` (the host agent runs this provisioner; the server may for its own host).
//!
//! Role settings: `{"group": "docker", "login": "{user}", "allow_privileged": false}`.
//! `group` is required: there is no implicit mapping from a pedm role to the Linux group of
//! the same name (a role `root` must never mean membership of group `root` by accident). A
//! role without `group` is *not provisioned* on the target ([`Provisioner::provisions`]
//! says why; the grant says so). `login` (a template, `{user}` = the pedm user name)
//! defaults to the pedm user name. Both must be `[a-z_][a-z0-9_-]{0,31}` (refused with
//! [`ProvisionError::Invalid`] otherwise: no upper case, dots or `$`, which some
//! distributions allow).
//!
//! Privileged groups: membership of a group with gid 0, or of a group listed in
//! `sensitive_groups` or `privileged_groups` (see [`LinuxGroupConfig`]), is granted only
//! when the role's settings say `allow_privileged = true`; otherwise the grant is refused
//! ([`ProvisionError::Invalid`], nothing changed) naming the group and the setting.
//!
//! Grant runs `gpasswd -a USER GROUP`, revoke `gpasswd -d USER GROUP` (directly, never
//! through a shell, with an empty environment except `PATH` and `LC_ALL=C`); membership is
//! read through NSS (`getgrnam`/`getpwnam`). A user whose *primary* group is the group
//! counts as a member; pedm cannot take a primary group away (revoke is `Refused`).
//! Revoking from a user or group that no longer exists succeeds. Note that processes that
//! are already running keep their supplementary groups until they end: ending elevated
//! sessions is the agent's job.
//!
//! Discover reports, through `getent group`/`getent passwd`: members (supplementary and
//! primary) of the configured privileged groups (default `sudo`, `wheel`, `admin`, `root`,
//! `docker`), accounts with uid 0 other than `root`, and sudoers rules granting `ALL` (see
//! [`parse_sudoers`] for what is and is not understood). `getent passwd` lists only
//! sources that allow enumeration (directory services with enumeration off are missed).
//!
//! Drift removal ([`Provisioner::remove_standing`]) takes away supplementary memberships of
//! the privileged groups (`group:<name>`) with `gpasswd -d`. Primary groups, uid 0 accounts
//! and sudoers rules are only reported; `root` is never removed from a group.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::config::ConfigError;
use crate::{
    GrantOutcome, GrantSpec, Observed, ProvisionError, Provisioner, StandingPrivilege,
    check_settings, login_from_settings, setting_bool, setting_str, truncate,
};

/// `kind = "linux_group"` in the server configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinuxGroupConfig {
    /// Groups whose members [`Provisioner::discover`] reports.
    #[serde(default = "default_groups")]
    pub privileged_groups: Vec<String>,
    /// The main sudoers file.
    #[serde(default = "default_sudoers")]
    pub sudoers: PathBuf,
    /// The drop-in directory (files with a `.` in the name or ending in `~` are skipped, as
    /// sudo does).
    #[serde(default = "default_sudoers_dir")]
    pub sudoers_dir: PathBuf,
    /// Longest a `gpasswd`/`getent` run may take.
    #[serde(default = "default_timeout", with = "pedm_notify::duration")]
    pub timeout: Duration,
    /// Groups a role may give membership of only with `allow_privileged = true` in its
    /// settings (as are gid 0 and every group in `privileged_groups`): membership of these
    /// is root or close to it.
    #[serde(default = "default_sensitive")]
    pub sensitive_groups: Vec<String>,
}

fn default_sensitive() -> Vec<String> {
    [
        "root", "sudo", "wheel", "admin", "adm", "shadow", "disk", "docker", "lxd", "libvirt",
    ]
    .map(String::from)
    .to_vec()
}

fn default_groups() -> Vec<String> {
    ["sudo", "wheel", "admin", "root", "docker"]
        .map(String::from)
        .to_vec()
}
fn default_sudoers() -> PathBuf {
    PathBuf::from("/etc/sudoers")
}
fn default_sudoers_dir() -> PathBuf {
    PathBuf::from("/etc/sudoers.d")
}
fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

impl Default for LinuxGroupConfig {
    fn default() -> Self {
        LinuxGroupConfig {
            privileged_groups: default_groups(),
            sudoers: default_sudoers(),
            sudoers_dir: default_sudoers_dir(),
            timeout: default_timeout(),
            sensitive_groups: default_sensitive(),
        }
    }
}

/// A safe user or group name: `[a-z_][a-z0-9_-]{0,31}`.
fn check_name(what: &str, s: &str) -> Result<(), ProvisionError> {
    let b = s.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 32
        && (b[0].is_ascii_lowercase() || b[0] == b'_')
        && b[1..]
            .iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_' || c == b'-');
    if ok {
        Ok(())
    } else {
        Err(ProvisionError::invalid(format!(
            "{what} {s:?} is not a safe name ([a-z_][a-z0-9_-]{{0,31}})"
        )))
    }
}

/// The source discovery gives a primary-group membership (which `gpasswd -d` cannot undo).
const PRIMARY_SOURCE: &str = "getent passwd (primary group)";

/// Serialises this process's `gpasswd` runs (they lock `/etc/group`).
static GPASSWD: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn find_tool(name: &str) -> Option<PathBuf> {
    ["/usr/bin", "/usr/sbin", "/bin", "/sbin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

struct ToolOutput {
    status: Option<i32>,
    stdout: String,
    stderr: String,
}

async fn run_tool(
    name: &str,
    args: &[&str],
    timeout: Duration,
) -> Result<ToolOutput, ProvisionError> {
    let path = find_tool(name)
        .ok_or_else(|| ProvisionError::refused(format!("{name} is not installed")))?;
    let mut cmd = tokio::process::Command::new(&path);
    cmd.args(args)
        .env_clear()
        .env("PATH", "/usr/bin:/bin:/usr/sbin:/sbin")
        .env("LC_ALL", "C")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(timeout, cmd.output())
        .await
        .map_err(|_| ProvisionError::unreachable(format!("{name} timed out after {timeout:?}")))?
        .map_err(|e| ProvisionError::refused(format!("running {}: {e}", path.display())))?;
    Ok(ToolOutput {
        status: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: truncate(String::from_utf8_lossy(&out.stderr).trim(), 4096),
    })
}

/// The user's and group's current state, read through NSS.
struct Membership {
    user_exists: bool,
    group_exists: bool,
    supplementary: bool,
    primary: bool,
    /// The group's gid, when it exists.
    gid: Option<u32>,
}

async fn membership(user: &str, group: &str) -> Result<Membership, ProvisionError> {
    let (user, group) = (user.to_string(), group.to_string());
    tokio::task::spawn_blocking(move || {
        let u = nix::unistd::User::from_name(&user)
            .map_err(|e| ProvisionError::unreachable(format!("looking up user {user:?}: {e}")))?;
        let g = nix::unistd::Group::from_name(&group)
            .map_err(|e| ProvisionError::unreachable(format!("looking up group {group:?}: {e}")))?;
        Ok(Membership {
            user_exists: u.is_some(),
            group_exists: g.is_some(),
            supplementary: g.as_ref().is_some_and(|g| g.mem.contains(&user)),
            primary: matches!((&u, &g), (Some(u), Some(g)) if u.gid == g.gid),
            gid: g.as_ref().map(|g| g.gid.as_raw()),
        })
    })
    .await
    .map_err(|e| ProvisionError::unreachable(format!("lookup task: {e}")))?
}

/// Temporary membership of local groups.
#[derive(Debug, Clone)]
pub struct LinuxGroupProvisioner {
    config: LinuxGroupConfig,
}

impl LinuxGroupProvisioner {
    pub fn new(config: LinuxGroupConfig) -> Result<Self, ConfigError> {
        for g in config
            .privileged_groups
            .iter()
            .chain(&config.sensitive_groups)
        {
            check_name("privileged group", g).map_err(|e| ConfigError(e.to_string()))?;
        }
        if config.timeout.is_zero() {
            return Err(ConfigError("timeout must be greater than zero".into()));
        }
        Ok(LinuxGroupProvisioner { config })
    }

    fn names(&self, g: &GrantSpec) -> Result<(String, String), ProvisionError> {
        check_settings(g, &["group", "login", "allow_privileged"])?;
        let user = login_from_settings(g)?;
        check_name("user", &user)?;
        let group = setting_str(g, "group")?
            .ok_or_else(|| ProvisionError::invalid(not_mapped(g)))?
            .to_string();
        check_name("group", &group)?;
        Ok((user, group))
    }

    /// Refuses membership of a privileged group (gid 0, `sensitive_groups`,
    /// `privileged_groups`) unless the role's settings allow it explicitly.
    fn check_privileged(
        &self,
        g: &GrantSpec,
        group: &str,
        gid: Option<u32>,
    ) -> Result<(), ProvisionError> {
        let listed = self
            .config
            .sensitive_groups
            .iter()
            .chain(&self.config.privileged_groups)
            .any(|s| s == group);
        if !(listed || gid == Some(0)) || setting_bool(g, "allow_privileged", false)? {
            return Ok(());
        }
        let why = if gid == Some(0) {
            "has gid 0".to_string()
        } else {
            "is a privileged group".to_string()
        };
        Err(ProvisionError::invalid(format!(
            "group {group} {why}: role {} on {} may give membership of it only with \
             allow_privileged = true in [provision.roles.{}.{}]",
            g.role, g.target, g.target, g.role
        )))
    }
}

/// Why a role without a `group` setting is not provisioned.
fn not_mapped(g: &GrantSpec) -> String {
    format!(
        "role {role} is not provisioned on linux_group target {target}: no group is configured \
         for it (set group = \"...\" in [provision.roles.{target}.{role}])",
        role = g.role,
        target = g.target
    )
}

impl LinuxGroupProvisioner {
    async fn gpasswd(
        &self,
        flag: &str,
        user: &str,
        group: &str,
    ) -> Result<ToolOutput, ProvisionError> {
        let _lock = GPASSWD.lock().await;
        let out = run_tool("gpasswd", &[flag, user, group], self.config.timeout).await?;
        Ok(out)
    }
}

fn gpasswd_error(what: &str, out: &ToolOutput) -> ProvisionError {
    let msg = format!(
        "{what}: gpasswd exited with {}: {}",
        out.status.map_or("a signal".to_string(), |c| c.to_string()),
        out.stderr
    );
    let lower = out.stderr.to_ascii_lowercase();
    if lower.contains("cannot lock") || lower.contains("try again") {
        ProvisionError::Unreachable(msg)
    } else {
        ProvisionError::Refused(msg)
    }
}

#[async_trait]
impl Provisioner for LinuxGroupProvisioner {
    fn kind(&self) -> &'static str {
        "linux_group"
    }

    async fn grant(&self, g: &GrantSpec) -> Result<GrantOutcome, ProvisionError> {
        let (user, group) = self.names(g)?;
        let m = membership(&user, &group).await?;
        if !m.user_exists {
            return Err(ProvisionError::refused(format!(
                "no user {user:?} on this host"
            )));
        }
        if !m.group_exists {
            return Err(ProvisionError::refused(format!(
                "no group {group:?} on this host"
            )));
        }
        self.check_privileged(g, &group, m.gid)?;
        if m.supplementary || m.primary {
            return Ok(GrantOutcome {
                secret: None,
                detail: format!("{user} was already a member of {group}"),
            });
        }
        let what = format!("adding {user} to {group}");
        let out = self.gpasswd("-a", &user, &group).await?;
        if out.status != Some(0) {
            return Err(gpasswd_error(&what, &out));
        }
        if !membership(&user, &group).await?.supplementary {
            return Err(ProvisionError::refused(format!(
                "{what}: gpasswd succeeded but {user} is not listed in {group} (group from a \
                 directory service?)"
            )));
        }
        tracing::info!(grant = %g.grant_id, %user, %group, "linux group membership granted");
        Ok(GrantOutcome {
            secret: None,
            detail: format!("added {user} to group {group}"),
        })
    }

    async fn revoke(&self, g: &GrantSpec) -> Result<(), ProvisionError> {
        let (user, group) = self.names(g)?;
        let m = membership(&user, &group).await?;
        if !m.user_exists || !m.group_exists {
            return Ok(());
        }
        if m.primary {
            return Err(ProvisionError::refused(format!(
                "{group} is the primary group of {user}: pedm cannot take it away"
            )));
        }
        if !m.supplementary {
            return Ok(());
        }
        let what = format!("removing {user} from {group}");
        let out = self.gpasswd("-d", &user, &group).await?;
        if out.status != Some(0) && !out.stderr.contains("is not a member") {
            return Err(gpasswd_error(&what, &out));
        }
        if membership(&user, &group).await?.supplementary {
            return Err(ProvisionError::refused(format!(
                "{what}: {user} is still listed in {group} after gpasswd -d"
            )));
        }
        tracing::info!(grant = %g.grant_id, %user, %group, "linux group membership revoked");
        Ok(())
    }

    async fn observe(&self, g: &GrantSpec) -> Result<Observed, ProvisionError> {
        let (user, group) = self.names(g)?;
        let m = membership(&user, &group).await?;
        let detail = match (m.user_exists, m.group_exists) {
            (false, _) => format!("no user {user}"),
            (_, false) => format!("no group {group}"),
            _ if m.primary => format!("{group} is the primary group of {user}"),
            _ if m.supplementary => format!("{user} is a member of {group}"),
            _ => format!("{user} is not a member of {group}"),
        };
        Ok(Observed {
            present: m.primary || m.supplementary,
            detail,
        })
    }

    fn account(&self, g: &GrantSpec) -> Option<String> {
        self.names(g).ok().map(|(user, _)| user)
    }

    fn provisions(&self, g: &GrantSpec) -> Result<(), String> {
        match setting_str(g, "group") {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(not_mapped(g)),
            // Malformed settings: provisioned, so the grant fails with the error.
            Err(_) => Ok(()),
        }
    }

    fn privilege(&self, g: &GrantSpec) -> Option<String> {
        self.names(g)
            .ok()
            .map(|(_, group)| format!("group:{group}"))
    }

    fn removable(&self, p: &StandingPrivilege) -> Result<(), String> {
        let Some(group) = p.privilege.strip_prefix("group:") else {
            return Err(format!(
                "{}: only group memberships are removed; uid 0 accounts and sudoers rules are \
                 reported",
                p.privilege
            ));
        };
        if p.source == PRIMARY_SOURCE {
            return Err(format!(
                "{group} is the primary group of {}: pedm cannot take it away",
                p.account
            ));
        }
        check_name("group", group).map_err(|e| e.to_string())?;
        check_name("user", &p.account).map_err(|e| e.to_string())?;
        if p.account == "root" {
            return Err("root is never removed from a group".into());
        }
        Ok(())
    }

    async fn remove_standing(&self, p: &StandingPrivilege) -> Result<String, ProvisionError> {
        self.removable(p).map_err(ProvisionError::Invalid)?;
        let (user, group) = (&p.account, &p.privilege["group:".len()..]);
        let m = membership(user, group).await?;
        if !m.user_exists || !m.group_exists || !(m.supplementary || m.primary) {
            return Ok(format!(
                "{user} is not a member of {group}: nothing to remove"
            ));
        }
        if m.primary {
            return Err(ProvisionError::refused(format!(
                "{group} is the primary group of {user}: pedm cannot take it away"
            )));
        }
        let what = format!("removing {user} from {group}");
        let out = self.gpasswd("-d", user, group).await?;
        if out.status != Some(0) && !out.stderr.contains("is not a member") {
            return Err(gpasswd_error(&what, &out));
        }
        if membership(user, group).await?.supplementary {
            return Err(ProvisionError::refused(format!(
                "{what}: {user} is still listed in {group} after gpasswd -d"
            )));
        }
        tracing::info!(%user, %group, "linux group drift removed");
        Ok(format!("removed {user} from group {group}"))
    }

    async fn discover(&self) -> Result<Vec<StandingPrivilege>, ProvisionError> {
        let mut out = Vec::new();
        let groups = run_tool("getent", &["group"], self.config.timeout).await?;
        if groups.status != Some(0) {
            return Err(ProvisionError::refused(format!(
                "getent group failed: {}",
                groups.stderr
            )));
        }
        let passwd = run_tool("getent", &["passwd"], self.config.timeout).await?;
        if passwd.status != Some(0) {
            return Err(ProvisionError::refused(format!(
                "getent passwd failed: {}",
                passwd.stderr
            )));
        }
        // gid -> privileged group name
        let mut privileged_gids: BTreeMap<String, String> = BTreeMap::new();
        for line in groups.stdout.lines() {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 4 || !self.config.privileged_groups.iter().any(|g| g == f[0]) {
                continue;
            }
            privileged_gids.insert(f[2].to_string(), f[0].to_string());
            for m in f[3].split(',').filter(|m| !m.is_empty()) {
                out.push(StandingPrivilege {
                    account: m.to_string(),
                    privilege: format!("group:{}", f[0]),
                    source: format!("getent group {}", f[0]),
                });
            }
        }
        for line in passwd.stdout.lines() {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 4 {
                continue;
            }
            if f[2] == "0" && f[0] != "root" {
                out.push(StandingPrivilege {
                    account: f[0].to_string(),
                    privilege: "uid0".to_string(),
                    source: "getent passwd".to_string(),
                });
            }
            if let Some(g) = privileged_gids.get(f[3]) {
                out.push(StandingPrivilege {
                    account: f[0].to_string(),
                    privilege: format!("group:{g}"),
                    source: PRIMARY_SOURCE.to_string(),
                });
            }
        }
        out.extend(parse_sudoers(&read_sudoers(&self.config)?));
        out.sort();
        out.dedup();
        Ok(out)
    }
}

/// `(source name, text)` of the sudoers file and its drop-ins, in the order sudo reads them.
fn read_sudoers(config: &LinuxGroupConfig) -> Result<Vec<(String, String)>, ProvisionError> {
    let mut files = Vec::new();
    let read = |p: &Path| -> Result<Option<(String, String)>, ProvisionError> {
        match std::fs::read(p) {
            Ok(b) => Ok(Some((
                p.display().to_string(),
                String::from_utf8_lossy(&b).into_owned(),
            ))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ProvisionError::refused(format!(
                "reading {}: {e}",
                p.display()
            ))),
        }
    };
    files.extend(read(&config.sudoers)?);
    match std::fs::read_dir(&config.sudoers_dir) {
        Ok(dir) => {
            let mut names: Vec<PathBuf> = dir
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| !n.contains('.') && !n.ends_with('~'))
                })
                .filter(|p| p.is_file())
                .collect();
            names.sort();
            for p in names {
                files.extend(read(&p)?);
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(ProvisionError::refused(format!(
                "reading {}: {e}",
                config.sudoers_dir.display()
            )));
        }
    }
    Ok(files)
}

/// Sudoers rules that grant `ALL` commands, from `(source name, text)` files.
///
/// Understood: comments, line continuations (`\`), `User_Alias` definitions (expanded, also
/// nested), user lists of names, `%group`, `#uid`, `%#gid`, `+netgroup` (reported as
/// written), an optional `(runas)` and tags (`NOPASSWD:` …) before the commands, several
/// commands separated by commas. The privilege reads `sudo:<runas> <tags>ALL`; the source
/// is `file:line`.
///
/// Not understood (such rules are missed or reported too broadly): negations (`!user`,
/// `!ALL`), host restrictions (every host counts), several `host = commands` groups joined
/// by `:` (only the first is read), command aliases (`Cmnd_Alias` — a command alias that
/// stands for `ALL` or a shell is not recognised), commands equivalent to `ALL` (`/bin/sh`,
/// `/bin/bash`, `sudoedit /etc/sudoers`…), `Runas_Alias`/`Host_Alias`, `Defaults`, and
/// `@include`/`#include`/`@includedir` directives (only the configured file and drop-in
/// directory are read).
pub fn parse_sudoers(files: &[(String, String)]) -> Vec<StandingPrivilege> {
    struct Rule {
        users: Vec<String>,
        privilege: String,
        source: String,
    }
    let mut aliases: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut rules = Vec::new();
    for (name, text) in files {
        let mut logical = String::new();
        let mut start_line = 0;
        for (i, raw) in text.lines().enumerate() {
            if logical.is_empty() {
                start_line = i + 1;
            }
            if let Some(cont) = raw.strip_suffix('\\') {
                logical.push_str(cont);
                logical.push(' ');
                continue;
            }
            logical.push_str(raw);
            let line = strip_comment(&logical);
            let source = format!("{name}:{start_line}");
            parse_line(line.trim(), &mut aliases, &mut |users, privilege| {
                rules.push(Rule {
                    users,
                    privilege,
                    source: source.clone(),
                })
            });
            logical.clear();
        }
    }
    let mut out = Vec::new();
    for r in rules {
        let mut seen = Vec::new();
        for u in r.users {
            expand(&u, &aliases, &mut seen, 0);
        }
        for account in seen {
            out.push(StandingPrivilege {
                account,
                privilege: r.privilege.clone(),
                source: r.source.clone(),
            });
        }
    }
    out
}

fn expand(name: &str, aliases: &BTreeMap<String, Vec<String>>, out: &mut Vec<String>, depth: u32) {
    match aliases.get(name) {
        Some(members) if depth < 8 => {
            for m in members {
                expand(m, aliases, out, depth + 1);
            }
        }
        _ => {
            if !out.iter().any(|o| o == name) {
                out.push(name.to_string());
            }
        }
    }
}

/// Cuts a `#` comment, keeping `#123` uid specifications.
fn strip_comment(line: &str) -> &str {
    let b = line.as_bytes();
    for (i, &c) in b.iter().enumerate() {
        if c == b'#' {
            let uid = b.get(i + 1).is_some_and(|n| n.is_ascii_digit())
                && (i == 0 || matches!(b[i - 1], b' ' | b'\t' | b',' | b'%' | b'('));
            let directive = line[i..].starts_with("#include");
            if !uid && !directive {
                return &line[..i];
            }
        }
    }
    line
}

fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(|x| x.trim().to_string())
        .filter(|x| !x.is_empty())
        .collect()
}

fn parse_line(
    line: &str,
    aliases: &mut BTreeMap<String, Vec<String>>,
    emit: &mut dyn FnMut(Vec<String>, String),
) {
    if line.is_empty() || line.starts_with("#include") || line.starts_with('@') {
        return;
    }
    let first = line.split_whitespace().next().unwrap_or("");
    if first.starts_with("Defaults") {
        return;
    }
    if first == "User_Alias" {
        // User_Alias NAME = a, b : NAME2 = c
        for def in line["User_Alias".len()..].split(':') {
            if let Some((n, members)) = def.split_once('=') {
                aliases.insert(n.trim().to_string(), split_list(members));
            }
        }
        return;
    }
    if matches!(
        first,
        "Runas_Alias" | "Host_Alias" | "Cmnd_Alias" | "Cmd_Alias"
    ) {
        return;
    }
    let Some((left, right)) = line.split_once('=') else {
        return;
    };
    // "alice, %admins  ALL" -> users "alice,%admins", hosts "ALL"
    let mut left = left.trim().to_string();
    while left.contains(", ") || left.contains(" ,") {
        left = left.replace(", ", ",").replace(" ,", ",");
    }
    let Some(users) = left.split_whitespace().next() else {
        return;
    };
    let users: Vec<String> = split_list(users)
        .into_iter()
        .filter(|u| !u.starts_with('!'))
        .collect();
    // Only the first "hosts = commands" group.
    let mut rest = right.split(" : ").next().unwrap_or("").trim();
    let mut runas = String::new();
    if rest.starts_with('(')
        && let Some(end) = rest.find(')')
    {
        runas = rest[..=end].to_string();
        rest = rest[end + 1..].trim_start();
    }
    let mut tags = String::new();
    loop {
        let word_end = rest.find(':').unwrap_or(0);
        let word = &rest[..word_end];
        if word_end > 0 && word.bytes().all(|c| c.is_ascii_uppercase() || c == b'_') {
            tags.push_str(&rest[..=word_end]);
            tags.push(' ');
            rest = rest[word_end + 1..].trim_start();
        } else {
            break;
        }
    }
    let all = rest.split(',').any(|c| c.trim() == "ALL");
    if all && !users.is_empty() {
        let runas = if runas.is_empty() {
            "(root)".to_string()
        } else {
            runas
        };
        emit(users, format!("sudo:{runas} {tags}ALL"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["alice", "_svc", "a-b_c9", &"a".repeat(32)] {
            assert!(check_name("u", ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Alice",
            "9a",
            "-a",
            "a b",
            "a;b",
            "a'b",
            "a.b",
            &"a".repeat(33),
        ] {
            assert!(check_name("u", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sudoers() {
        let main = "\
# comment
Defaults env_reset
User_Alias ADMINS = carol, %ops
Cmnd_Alias SVC = /usr/bin/systemctl
root    ALL=(ALL:ALL) ALL
%sudo   ALL=(ALL:ALL) ALL
alice, bob ALL = (ALL) NOPASSWD: ALL   # trailing comment
dave ALL = /usr/bin/systemctl restart nginx
ADMINS ALL = SVC, ALL
#1001 ALL=(ALL) \\
   ALL
@includedir /etc/sudoers.d
";
        let drop_in = "erin ALL=(ALL) NOPASSWD:SETENV: ALL\n!frank ALL=ALL\n";
        let got = parse_sudoers(&[
            ("/etc/sudoers".into(), main.into()),
            ("/etc/sudoers.d/x".into(), drop_in.into()),
        ]);
        let got: Vec<(String, String, String)> = got
            .into_iter()
            .map(|p| (p.account, p.privilege, p.source))
            .collect();
        let want = [
            ("root", "sudo:(ALL:ALL) ALL", "/etc/sudoers:5"),
            ("%sudo", "sudo:(ALL:ALL) ALL", "/etc/sudoers:6"),
            ("alice", "sudo:(ALL) NOPASSWD: ALL", "/etc/sudoers:7"),
            ("bob", "sudo:(ALL) NOPASSWD: ALL", "/etc/sudoers:7"),
            ("carol", "sudo:(root) ALL", "/etc/sudoers:9"),
            ("%ops", "sudo:(root) ALL", "/etc/sudoers:9"),
            ("#1001", "sudo:(ALL) ALL", "/etc/sudoers:10"),
            (
                "erin",
                "sudo:(ALL) NOPASSWD: SETENV: ALL",
                "/etc/sudoers.d/x:1",
            ),
        ];
        let want: Vec<(String, String, String)> = want
            .iter()
            .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
            .collect();
        assert_eq!(got, want);
    }
}
