//! Harness for host-agent tests and benchmarks: real Linux users and a real `pedm-agent`.

use super::*;
use pedm_api::{Client, CreateRole, CreateTarget, TargetKind};
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub fn root_or_skip(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        true
    } else {
        println!("SKIP {test}: needs root (creates Linux users, runs pedm-agent)");
        false
    }
}

/// A Linux user for the test's lifetime, with the same name in pedm.
pub struct LinuxUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

impl LinuxUser {
    pub fn create(prefix: &str) -> LinuxUser {
        let name = format!(
            "{prefix}{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let st = Command::new("useradd")
            .args(["-M", "-s", "/bin/sh", &name])
            .status()
            .expect("useradd");
        assert!(st.success(), "useradd {name}");
        let u = nix::unistd::User::from_name(&name).unwrap().unwrap();
        LinuxUser {
            name,
            uid: u.uid.as_raw(),
            gid: u.gid.as_raw(),
        }
    }
}

impl Drop for LinuxUser {
    fn drop(&mut self) {
        let _ = Command::new("userdel").arg(&self.name).status();
    }
}

/// A running `pedm-agent` for host `web1`, with its socket and state in a temp directory
/// every user can traverse, and its log lines to wait on.
pub struct Agent {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    config: PathBuf,
    lines: mpsc::Receiver<String>,
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Agent {
    /// A directory for an agent: the token in a 0600 file, and `pedm` (with `pedm-cli`, the
    /// rest of the client) copied out of the build tree (the test users must be able to run
    /// it).
    fn prepare(token: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let token_file = dir.path().join("agent.token");
        std::fs::write(&token_file, token).unwrap();
        std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::copy(env!("CARGO_BIN_EXE_pedm"), dir.path().join("pedm")).unwrap();
        std::fs::copy(env!("CARGO_BIN_EXE_pedm-cli"), dir.path().join("pedm-cli")).unwrap();
        (dir, token_file)
    }

    /// The settings every test agent runs with (its socket, state, short timeouts, cgroup).
    fn local_settings(dir: &Path) -> String {
        format!(
            "socket = {:?}\nstate_dir = {:?}\nkill_grace = \"1s\"\n\
             first_frame_timeout = \"2s\"\ncgroup = {:?}\n",
            dir.join("agent.sock"),
            dir.join("state"),
            test_cgroup(),
        )
    }

    /// Writes `config` (with the local settings) and starts the agent on it.
    fn launch(dir: tempfile::TempDir, config: String) -> Agent {
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, config + &Self::local_settings(dir.path())).unwrap();
        let (tx, lines) = mpsc::channel();
        let mut a = Agent {
            child: None,
            dir,
            config: path,
            lines,
            log: Default::default(),
        };
        a.spawn(tx);
        a
    }

    pub fn start(s: &Server, token: &str, server_key: &str) -> Agent {
        let (dir, token_file) = Self::prepare(token);
        let config = format!(
            "server_url = {:?}\nhost = \"web1\"\ntoken_file = {:?}\nserver_key = {:?}\n",
            s.url, token_file, server_key,
        );
        Self::launch(dir, config)
    }

    /// Enrolls with `pedm-agent enroll` over the server's HTTPS (a client certificate whose
    /// key is made here), then starts the agent with the configuration it wrote.
    pub fn start_enrolled(s: &Server, token: &str, server_key: &str) -> Agent {
        let (dir, token_file) = Self::prepare(token);
        let config = dir.path().join("agent.toml");
        let ca = s.ca().expect("an HTTPS server (Options::dev)");
        let out = Command::new(env!("CARGO_BIN_EXE_pedm-agent"))
            .arg("--config")
            .arg(&config)
            .args(["enroll", "--server", &s.url, "--server-key", server_key])
            .arg("--token-file")
            .arg(&token_file)
            .arg("--ca-file")
            .arg(&ca)
            .env_remove("PEDM_CA")
            .stdin(Stdio::null())
            .output()
            .expect("pedm-agent enroll");
        assert!(
            out.status.success(),
            "enroll: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let written = std::fs::read_to_string(&config).unwrap();
        Self::launch(dir, written)
    }

    /// The agent's directory (its configuration, token, certificate and key).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn spawn(&mut self, tx: mpsc::Sender<String>) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_pedm-agent"))
            .arg("--config")
            .arg(&self.config)
            .env("PEDM_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn pedm-agent");
        for out in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            let log = self.log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    log.lock().unwrap().push(line.clone());
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        self.child = Some(child);
        self.wait_for("listening", |l| l.starts_with("pedm-agent listening on"));
    }

    /// Consumes log lines until one matches.
    pub fn wait_for(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        loop {
            match self.lines.recv_timeout(Duration::from_secs(30)) {
                Ok(l) if pred(&l) => return l,
                Ok(_) => {}
                Err(_) => panic!(
                    "agent: timed out waiting for {what}; log:\n{}",
                    self.log.lock().unwrap().join("\n")
                ),
            }
        }
    }

    /// Everything the agent logged so far.
    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Waits until the agent enforces a snapshot with `grants` grants (and policy `policy`).
    pub fn wait_snapshot(&self, grants: usize, policy: Option<i64>) {
        let g = format!("grants={grants}");
        let p = policy.map(|p| format!("policy={p}"));
        self.wait_for(&format!("a snapshot with {g}"), |l| {
            l.contains("snapshot in force")
                && l.contains(&g)
                && p.as_ref().is_none_or(|p| l.contains(p))
        });
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.kill();
        let (tx, rx) = mpsc::channel();
        self.lines = rx;
        self.spawn(tx);
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("agent.sock")
    }

    pub fn config_path(&self) -> PathBuf {
        self.config.clone()
    }

    /// The `cgroup` setting the agent runs with.
    pub fn cgroup(&self) -> String {
        pedm_agent::config::Config::load(&self.config)
            .ok()
            .and_then(|c| c.cgroup)
            .unwrap_or_else(|| "off".into())
    }

    /// Whether sessions are contained in cgroups (the agent said so when it started).
    pub fn contained(&self) -> bool {
        self.log_text().contains("sessions are contained")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// The agent's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Whether the agent process is still running.
    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// `pedm ARGS` run as `user` against this agent, from the agent's directory.
    pub fn pedm_as(&self, user: &LinuxUser, args: &[&str]) -> Command {
        let mut c = Command::new(self.dir.path().join("pedm"));
        c.args(args)
            .uid(user.uid)
            .gid(user.gid)
            .current_dir(self.dir.path())
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("PEDM_AGENT_SOCKET", self.socket())
            .stdin(Stdio::null());
        c
    }

    pub fn exec(&self, user: &LinuxUser, argv: &[&str]) -> Output {
        let mut args = vec!["exec", "--"];
        args.extend_from_slice(argv);
        self.pedm_as(user, &args).output().expect("run pedm exec")
    }

    /// Starts `pedm exec -- ARGV` as `user` and returns it with the first line it printed
    /// (the command's sign that it runs).
    pub fn exec_running(&self, user: &LinuxUser, argv: &[&str]) -> (Child, String) {
        let mut args = vec!["exec", "--"];
        args.extend_from_slice(argv);
        let mut child = self
            .pedm_as(user, &args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run pedm exec");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("a first line");
        (child, line)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
        if let Ok(c) = pedm_agent::contain::cgroup::Cgroups::locate(Some(&self.cgroup())) {
            c.remove();
        }
    }
}

/// A cgroup tree of the test's own (agents of tests running in parallel must not see each
/// other's sessions as leftovers), or `off` where no cgroup v2 hierarchy is mounted.
fn test_cgroup() -> String {
    match pedm_agent::contain::cgroup::cgroup2_mount() {
        Some(m) => m
            .join(format!("pedm-test-{}", uuid::Uuid::now_v7()))
            .to_string_lossy()
            .into_owned(),
        None => "off".into(),
    }
}

/// Server with host `web1` (role `root`, auto-approved, run as root), its agent registered
/// through the CLI and running, and a Linux user who is also a pedm user.
pub async fn setup(prefix: &str) -> (Server, Agent, LinuxUser, Client) {
    let s = Server::start();
    let a = s.admin();
    a.create_target(&CreateTarget {
        name: "web1".into(),
        kind: TargetKind::Host,
        description: None,
        labels: Default::default(),
    })
    .await
    .unwrap();
    a.create_role(
        "web1",
        &CreateRole {
            auto_approve: true,
            run_as: Some("root".into()),
            ..CreateRole::new("root", "1h")
        },
    )
    .await
    .unwrap();
    let out = s.cli(&s.admin_token, &["--json", "host", "register", "web1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let reg: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let agent = Agent::start(
        &s,
        reg["token"].as_str().unwrap(),
        reg["server_key"].as_str().unwrap(),
    );
    agent.wait_snapshot(0, None);
    let user = LinuxUser::create(prefix);
    let token = user_with_token(&s, &user.name, false).await;
    let client = s.client(&token);
    (s, agent, user, client)
}

pub async fn grant(c: &Client, duration: &str) -> pedm_api::Grant {
    let r = c
        .create_request(&req("web1", "root", duration, "fix the disk"))
        .await
        .unwrap();
    r.grant.expect("auto-approved")
}

/// `c` run as `user` from the agent's directory with a minimal environment.
pub fn as_user(mut c: Command, agent: &Agent, user: &LinuxUser) -> Command {
    c.uid(user.uid)
        .gid(user.gid)
        .current_dir(agent.dir.path())
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("TERM", "xterm")
        .env("PEDM_AGENT_SOCKET", agent.socket())
        .stdin(Stdio::null());
    c
}

/// Speaks the agent's socket protocol without `pedm` (a Python client: an attacker, or a
/// test that needs exact control of what is typed when): sends `start` (a `StartExec` as
/// JSON), then runs `steps` in order, printing the final `Exited` frame as JSON (or
/// `refused: ...`); the terminal output goes to stderr.
/// Steps: `{"wait": TEXT}` (until the output holds it), `{"type": TEXT}` (one stdin frame),
/// `{"signals": [N...]}` (all in one write: the first may end the command, and the agent then
/// closes the connection, so frames written one by one after it would meet a broken pipe).
const SCRIPTED_CLIENT: &str = r#"
import json, socket, struct, sys
sock, start, steps = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
s = socket.socket(socket.AF_UNIX)
s.settimeout(30)
s.connect(sock)
def frame_bytes(kind, payload):
    return struct.pack('>I', len(payload) + 1) + bytes([kind]) + payload
def exact(n):
    b = b''
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            sys.exit('connection closed')
        b += c
    return b
def frame():
    n = struct.unpack('>I', exact(4))[0]
    body = exact(n)
    return body[0], body[1:]
s.sendall(frame_bytes(1, start.encode()))
kind, body = frame()
if kind == 17:
    print('refused:', json.loads(body)['reason']); sys.exit(0)
out = b''
for step in steps:
    if 'wait' in step:
        while step['wait'].encode() not in out:
            kind, body = frame()
            if kind == 18:
                out += body
            elif kind == 20:
                sys.exit('exited before %r: %r' % (step['wait'], out))
    elif 'type' in step:
        s.sendall(frame_bytes(2, step['type'].encode()))
    elif 'signals' in step:
        s.sendall(b''.join(frame_bytes(5, struct.pack('>i', n)) for n in step['signals']))
while True:
    kind, body = frame()
    if kind == 18:
        out += body
    elif kind == 20:
        print(body.decode()); break
sys.stderr.write(out.decode('utf-8', 'replace'))
"#;

/// Runs [`SCRIPTED_CLIENT`] as `user` with the `start` frame; returns its output.
pub fn scripted_start(
    agent: &Agent,
    user: &LinuxUser,
    start: serde_json::Value,
    steps: serde_json::Value,
) -> Output {
    let mut c = Command::new("/usr/bin/python3");
    c.arg("-c")
        .arg(SCRIPTED_CLIENT)
        .arg(agent.socket())
        .arg(start.to_string())
        .arg(steps.to_string());
    as_user(c, agent, user).output().expect("python3 runs")
}

/// [`scripted_start`] of `argv` in a 24x80 terminal, under whichever grant applies.
pub fn scripted_session(
    agent: &Agent,
    user: &LinuxUser,
    argv: &[&str],
    steps: serde_json::Value,
) -> Output {
    let start = serde_json::json!({"argv": argv, "tty": {"rows": 24, "cols": 80}});
    scripted_start(agent, user, start, steps)
}

/// `pedm role add web1 NAME --run-as RUN_AS EXTRA...` through the CLI (auto-approved, 1h).
pub fn add_role(s: &Server, name: &str, run_as: &str, extra: &[&str]) {
    let mut args = vec![
        "role",
        "add",
        "web1",
        name,
        "--max-duration",
        "1h",
        "--auto-approve",
        "--run-as",
        run_as,
    ];
    args.extend_from_slice(extra);
    let out = s.cli(&s.admin_token, &args);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// Revokes grant `id` as the admin, with `reason`.
pub async fn revoke(s: &Server, id: uuid::Uuid, reason: &str) {
    s.admin()
        .revoke_grant(
            id,
            &pedm_api::Reason {
                reason: Some(reason.into()),
            },
        )
        .await
        .expect("revoke the grant");
}

/// A library the build put beside the test binaries (`target/<profile>/deps`: the sudo
/// plugin, the PAM module), copied to `dir` (sudo and PAM load only root-owned files that
/// nobody else may write).
pub fn built_library(name: &str, dir: &Path) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    let built = [deps.join(name), deps.parent().unwrap().join(name)]
        .into_iter()
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("{name} is not built next to {}", deps.display()));
    let to = dir.join(name);
    std::fs::copy(&built, &to).unwrap();
    std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o644)).unwrap();
    to
}

/// `/bin/sh -c SCRIPT` as root in a mount namespace of its own (sudo reads `/etc/sudo.conf`
/// and `/etc/sudoers` from fixed paths: the script binds the test's files over them there,
/// leaving the machine's untouched).
pub fn in_mount_namespace(script: &str) -> Command {
    let mut c = Command::new("unshare");
    c.args([
        "--mount",
        "--propagation",
        "private",
        "/bin/sh",
        "-c",
        script,
    ])
    .env_clear()
    .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
    .env("LC_ALL", "C");
    c
}

/// The shadow hash of `user`'s password.
pub fn shadow_hash(user: &str) -> String {
    let shadow = std::fs::read_to_string("/etc/shadow").unwrap();
    shadow
        .lines()
        .find_map(|l| {
            let mut f = l.split(':');
            (f.next() == Some(user)).then(|| f.next().unwrap_or("").to_string())
        })
        .unwrap()
}

/// Whether `password` is `user`'s password (libc's crypt through perl, any hash scheme).
pub fn password_is(user: &str, password: &str) -> bool {
    let hash = shadow_hash(user);
    let out = std::process::Command::new("perl")
        .args(["-e", "print crypt($ARGV[0], $ARGV[1])", password, &hash])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout) == hash
}

/// Registers `host` (a target of kind host) and gets its client certificate with
/// `pedm-agent enroll` into `dir` (`agent.toml`, `agent-cert.pem`, `agent-key.pem`), as on a
/// host that uses the certificate without running the agent. Returns the certificate and key.
pub fn enroll_host_certificate(s: &Server, dir: &Path, host: &str) -> (PathBuf, PathBuf) {
    let out = s.cli(&s.admin_token, &["--json", "host", "register", host]);
    assert!(out.status.success(), "{}", stderr(&out));
    let reg: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let token_file = dir.join("token");
    std::fs::write(&token_file, reg["token"].as_str().unwrap()).unwrap();
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_pedm-agent"))
        .arg("--config")
        .arg(dir.join("agent.toml"))
        .args(["enroll", "--server", &s.url, "--server-key"])
        .arg(reg["server_key"].as_str().unwrap())
        .arg("--token-file")
        .arg(&token_file)
        .arg("--ca-file")
        .arg(s.ca().expect("an HTTPS server (Options::dev)"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    (dir.join("agent-cert.pem"), dir.join("agent-key.pem"))
}
