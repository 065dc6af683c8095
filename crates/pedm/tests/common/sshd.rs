//! A real OpenSSH `sshd` (Debian's openssh-server) on a loopback port, set up the way an admin
//! would with pedm's CLI: `TrustedUserCAKeys` from `pedm host ssh-ca --user`,
//! `AuthorizedPrincipalsFile`, `RevokedKeys` from `pedm host ssh-krl`, and a host certificate
//! from `pedm host ssh-cert`. Static keys in `<dir>/authorized_keys` log in too (the
//! benchmark's peer); the tests put none there.

use super::{Server, stderr, stdout};
use pedm_api::{Client, CreateRole, CreateTarget, SshAccess, TargetKind};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const SSHD: &str = "/usr/sbin/sshd";

/// Why sshd cannot run here, if so.
pub fn skip_reason() -> Option<&'static str> {
    if !nix::unistd::geteuid().is_root() {
        return Some("sshd must run as root (privilege separation, root logins)");
    }
    if !Path::new(SSHD).exists() {
        return Some(
            "/usr/sbin/sshd is not installed (scripts/install-test-deps installs openssh-server)",
        );
    }
    None
}

pub struct Sshd {
    child: Child,
    pub port: u16,
    pub dir: PathBuf,
    log: Arc<Mutex<Vec<String>>>,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Sshd {
    /// What sshd logged so far (`-e`: its log on stderr).
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    pub fn krl(&self) -> PathBuf {
        self.dir.join("revoked.krl")
    }

    /// Fetches the KRL again, as a host's timer would.
    pub fn refresh_krl(&self, s: &Server) {
        ok(
            &s.cli(
                "",
                &["host", "ssh-krl", "--output", self.krl().to_str().unwrap()],
            ),
            "pedm host ssh-krl",
        );
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().expect("run")
}

/// `o`'s stdout, after asserting it succeeded.
pub fn ok(o: &Output, what: &str) -> String {
    assert!(o.status.success(), "{what}: {}\n{}", stdout(o), stderr(o));
    stdout(o)
}

/// Makes an Ed25519 key pair at `path` (and `path.pub`) with `ssh-keygen`.
pub fn keygen(path: &Path) {
    ok(
        &run(Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", ""])
            .arg("-f")
            .arg(path)),
        "ssh-keygen",
    );
}

/// Sets up and starts sshd in `dir`, trusting `s`'s SSH CAs; returns once it listens.
pub fn start(s: &Server, dir: &Path) -> Sshd {
    let port = free_port();
    std::fs::create_dir_all("/run/sshd").unwrap();
    let host_key = dir.join("host_ed25519");
    keygen(&host_key);
    let host_cert = dir.join("host_ed25519-cert.pub");
    ok(
        &s.cli(
            &s.admin_token,
            &[
                "host",
                "ssh-cert",
                "--key",
                host_key.with_extension("pub").to_str().unwrap(),
                "--principal",
                "127.0.0.1",
                "--validity",
                "1d",
                "--output",
                host_cert.to_str().unwrap(),
            ],
        ),
        "pedm host ssh-cert",
    );
    // The CA keys and the KRL need no token.
    let user_ca = ok(
        &s.cli("", &["host", "ssh-ca", "--user"]),
        "pedm host ssh-ca",
    );
    assert!(user_ca.starts_with("ssh-ed25519 "), "{user_ca}");
    std::fs::write(dir.join("user_ca.pub"), &user_ca).unwrap();
    let krl = dir.join("revoked.krl");
    ok(
        &s.cli("", &["host", "ssh-krl", "--output", krl.to_str().unwrap()]),
        "pedm host ssh-krl",
    );
    std::fs::create_dir_all(dir.join("principals")).unwrap();
    std::fs::write(dir.join("principals").join("root"), "root\n").unwrap();
    let config = format!(
        "Port {port}\nListenAddress 127.0.0.1\nHostKey {hk}\nHostCertificate {hc}\n\
         TrustedUserCAKeys {dir}/user_ca.pub\nAuthorizedPrincipalsFile {dir}/principals/%u\n\
         RevokedKeys {krl}\nAuthorizedKeysFile {dir}/authorized_keys\n\
         PasswordAuthentication no\nKbdInteractiveAuthentication no\n\
         PermitRootLogin prohibit-password\nUsePAM no\nStrictModes no\n\
         MaxStartups 100:30:200\nPidFile {dir}/sshd.pid\nLogLevel VERBOSE\n",
        hk = host_key.display(),
        hc = host_cert.display(),
        dir = dir.display(),
        krl = krl.display(),
    );
    let conf = dir.join("sshd_config");
    std::fs::write(&conf, config).unwrap();
    ok(
        &run(Command::new(SSHD).arg("-t").arg("-f").arg(&conf)),
        "sshd -t",
    );
    let mut child = Command::new(SSHD)
        .args(["-D", "-e", "-f"])
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sshd");
    let log = Arc::new(Mutex::new(Vec::new()));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    let lines = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("Server listening on 127.0.0.1") {
                let _ = ready_tx.send(());
            }
            lines.lock().unwrap().push(line);
        }
    });
    ready_rx
        .recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|_| panic!("sshd did not start: {}", log.lock().unwrap().join("\n")));
    Sshd {
        child,
        port,
        dir: dir.to_owned(),
        log,
    }
}

/// An `ssh` target `bastion` at the sshd, with auto-approved roles: `admin` (root, with a
/// pty), `forced` (root, one command, bound to the request's address), `other` (a login
/// sshd does not accept for root).
pub async fn ssh_target(admin: &Client, port: u16) {
    admin
        .create_target(&CreateTarget {
            name: "bastion".into(),
            kind: TargetKind::Ssh,
            description: None,
            labels: [
                ("address".to_string(), "127.0.0.1".to_string()),
                ("port".to_string(), port.to_string()),
            ]
            .into(),
        })
        .await
        .unwrap();
    let role = |name: &str, run_as: &str, ssh: SshAccess| CreateRole {
        auto_approve: true,
        run_as: Some(run_as.into()),
        ssh,
        ..CreateRole::new(name, "1h")
    };
    for r in [
        role("admin", "root", SshAccess::default()),
        role(
            "forced",
            "root",
            SshAccess {
                force_command: Some("echo forced-command-ran".into()),
                bind_source_address: true,
                ..Default::default()
            },
        ),
        role("other", "daemon", SshAccess::default()),
    ] {
        admin.create_role("bastion", &r).await.unwrap();
    }
}
