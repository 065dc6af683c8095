//! No new habits on hosts with the agent: Debian's real `sudo` with the pedm approval plugin
//! (`libpedm_sudo.so`) and real PAM with the pedm account module (`pam_pedm.so`, driven by
//! `pamtester`), against the real pedmd and pedm-agent. Root only; skipped with the reason
//! printed where sudo or pamtester is missing (`scripts/install-test-deps` installs them).
//!
//! sudo reads `/etc/sudo.conf` and `/etc/sudoers` from fixed paths, so each sudo runs in a
//! mount namespace of its own (`unshare --mount`) where the test's files are bound over them:
//! the machine's own sudo is untouched. PAM services are files in `/etc/pam.d`: the test
//! writes one with a unique name and removes it.

mod common;

use common::agent::*;
use common::*;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// sudo as it is configured on a host that uses pedm: sudoers lets everyone run anything
/// (pedm narrows it), the plugin asks this test's agent.
struct Sudo {
    conf: PathBuf,
    sudoers: PathBuf,
}

impl Sudo {
    fn new(dir: &Path, agent: &Agent) -> Sudo {
        let plugin = built_library("libpedm_sudo.so", dir);
        let conf = dir.join("sudo.conf");
        std::fs::write(
            &conf,
            format!(
                "Plugin sudoers_policy sudoers.so\n\
                 Plugin pedm_approval {} socket={} timeout=5\n",
                plugin.display(),
                agent.socket().display()
            ),
        )
        .unwrap();
        let sudoers = dir.join("sudoers");
        std::fs::write(
            &sudoers,
            "Defaults !fqdn, !lecture, env_reset\nALL ALL=(ALL:ALL) NOPASSWD: ALL\n",
        )
        .unwrap();
        std::fs::set_permissions(&sudoers, std::fs::Permissions::from_mode(0o440)).unwrap();
        Sudo { conf, sudoers }
    }

    /// `sudo -n ARGS` run by `user`, in a mount namespace where the test's files are sudo's.
    fn run(&self, user: &LinuxUser, args: &[&str]) -> Output {
        self.command(user, args).output().expect("run sudo")
    }

    fn command(&self, user: &LinuxUser, args: &[&str]) -> Command {
        let mut script = format!(
            "mount --bind {} /etc/sudo.conf && mount --bind {} /etc/sudoers && \
             cd / && exec runuser -u {} -- sudo -n",
            self.conf.display(),
            self.sudoers.display(),
            user.name
        );
        for a in args {
            script.push(' ');
            script.push_str(&shell_quote(a));
        }
        in_mount_namespace(&script)
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// A PAM service using the pedm module, removed on drop.
struct PamService {
    name: String,
}

impl PamService {
    fn new(dir: &Path, agent: &Agent, args: &str) -> PamService {
        let module = built_library("libpam_pedm.so", dir);
        let name = format!("pedm-test-{}-{}", std::process::id(), args.len());
        std::fs::write(
            format!("/etc/pam.d/{name}"),
            format!(
                "auth required pam_permit.so\n\
                 account required {} socket={} timeout=5 {args}\n",
                module.display(),
                agent.socket().display()
            ),
        )
        .unwrap();
        PamService { name }
    }

    /// `pamtester SERVICE USER acct_mgmt`, as sshd or login would ask.
    fn account(&self, user: &str) -> Output {
        Command::new("pamtester")
            .args(["-v", &self.name, user, "acct_mgmt"])
            .output()
            .expect("run pamtester")
    }
}

impl Drop for PamService {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(format!("/etc/pam.d/{}", self.name));
    }
}

fn installed(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit(')').next().map(|r| !r.trim().starts_with('Z')))
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sudo_runs_a_command_only_under_a_grant_that_allows_it() {
    if !root_or_skip("sudo_runs_a_command_only_under_a_grant_that_allows_it") {
        return;
    }
    if !installed("sudo") || !installed("unshare") {
        println!("SKIP: sudo or unshare is not installed (scripts/install-test-deps)");
        return;
    }
    let (mut s, mut agent, alice, client) = setup("pedmsu").await;
    let dir = tempfile::tempdir().unwrap();
    let sudo = Sudo::new(dir.path(), &agent);

    // No grant: sudoers alone would allow it; pedm says no, and how to ask.
    let out = sudo.run(&alice, &["/usr/bin/id", "-u"]);
    assert!(
        !out.status.success(),
        "ran without a grant: {}",
        stdout(&out)
    );
    let err = stderr(&out);
    println!("sudo without a grant says:\n{err}");
    assert!(err.contains("pedm: "), "{err}");
    assert!(err.contains("holds no active grant on web1"), "{err}");
    assert!(err.contains("pedm request create --target web1"), "{err}");

    // A role whose every exec pedm must see (intercept) cannot be used through sudo.
    add_role(&s, "audited", "root", &["--intercept"]);
    let audited = client
        .create_request(&req("web1", "audited", "1h", "audit the disk"))
        .await
        .unwrap()
        .grant
        .expect("auto-approved");
    agent.wait_snapshot(1, None);
    let out = sudo.run(&alice, &["/usr/bin/id", "-u"]);
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("run only through pedm (intercept)")
            && stderr(&out).contains("pedm exec -- /usr/bin/id -u"),
        "{}",
        stderr(&out)
    );
    revoke(&s, audited.id, "not this way").await;
    agent.wait_snapshot(0, None);

    let g = grant(&client, "1h").await;
    agent.wait_snapshot(1, None);
    let out = sudo.run(&alice, &["/usr/bin/id", "-u"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "0");
    // A name sudo resolves itself is decided by the path it resolved to.
    let out = sudo.run(&alice, &["id", "-un"]);
    assert_eq!(stdout(&out).trim(), "root", "{}", stderr(&out));

    // Only as the grant's run-as account.
    let out = sudo.run(&alice, &["-u", "nobody", "/usr/bin/id", "-u"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no grant on web1 that runs commands as nobody"),
        "{}",
        stderr(&out)
    );

    // Policy decides the exact command, as for pedm exec.
    add_policy(
        &s.admin(),
        "no-whoami.cedar",
        "@id(\"no-whoami\")\nforbid (principal, action == Pedm::Action::\"exec\", resource)\n\
         when { resource.path == \"/usr/bin/whoami\" };\n",
    )
    .await;
    agent.wait_snapshot(1, Some(2));
    let out = sudo.run(&alice, &["/usr/bin/whoami"]);
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(stderr(&out).contains("no-whoami"), "{}", stderr(&out));

    // What sudo starts lives in the grant's cgroup: the grant's end ends it.
    if agent.contained() {
        let out = sudo.run(&alice, &["/bin/cat", "/proc/self/cgroup"]);
        assert!(
            stdout(&out).contains(&g.id.to_string()),
            "{} / {}",
            stdout(&out),
            stderr(&out)
        );
        let mut bg = sudo
            .command(
                &alice,
                &[
                    "/bin/sh",
                    "-c",
                    "setsid /bin/sleep 1000 </dev/null >/dev/null 2>&1 & echo $!",
                ],
            )
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(bg.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        let _ = bg.wait();
        let pid: i32 = line.trim().parse().expect("a pid");
        assert!(alive(pid));
        revoke(&s, g.id, "done").await;
        let deadline = Instant::now() + Duration::from_secs(20);
        while alive(pid) {
            assert!(
                Instant::now() < deadline,
                "sudo's command outlived its grant"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        agent.wait_snapshot(0, None);
    } else {
        println!("SKIP containment part: no writable cgroup v2 hierarchy here");
        revoke(&s, g.id, "done").await;
        agent.wait_snapshot(0, None);
    }
    // The grant ended: no more sudo.
    let out = sudo.run(&alice, &["/usr/bin/id", "-u"]);
    assert!(!out.status.success(), "ran after the grant ended");

    // A grant that runs out rather than being revoked: sudo works inside its window and not
    // once it has passed (the agent ends it by itself, server or not).
    let short = grant(&client, "3s").await;
    agent.wait_snapshot(1, None);
    let out = sudo.run(&alice, &["/usr/bin/id", "-u"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let after = eventually(Duration::from_secs(30), "the short grant's end", || async {
        let out = sudo.run(&alice, &["/usr/bin/id", "-u"]);
        (!out.status.success()).then_some(out)
    })
    .await;
    assert!(
        jiff::Timestamp::now() >= short.expires_at,
        "refused before the grant's end"
    );
    assert!(
        stderr(&after).contains("no active grant"),
        "{}",
        stderr(&after)
    );
    agent.wait_snapshot(0, None);

    // pedmd away: the agent's signed snapshot still decides (an offline grant works)...
    let g2 = grant(&client, "1h").await;
    agent.wait_snapshot(1, None);
    s.stop();
    let out = sudo.run(&alice, &["/usr/bin/id", "-u"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // ...but without the agent nothing runs.
    agent.kill();
    let out = sudo.run(&alice, &["/usr/bin/id", "-u"]);
    assert!(!out.status.success(), "ran without the agent");
    assert!(
        stderr(&out).contains("cannot ask pedm-agent"),
        "{}",
        stderr(&out)
    );
    s.start_again();
    agent.restart();

    // Every decision is in the audit log, marked as sudo's.
    let allowed = eventually(Duration::from_secs(30), "sudo's exec.allowed", || async {
        let evs = audit_of(&s, "exec.allowed").await;
        let via_sudo: Vec<_> = evs
            .into_iter()
            .filter(|e| e.data["via"] == "sudo")
            .collect();
        // The one allowed while pedmd was away arrives once it is back.
        let offline = via_sudo
            .iter()
            .any(|e| e.data["grant"] == serde_json::json!(g2.id));
        offline.then_some(via_sudo)
    })
    .await;
    assert!(allowed.len() >= 5, "{allowed:?}");
    assert!(
        allowed
            .iter()
            .any(|e| e.data["argv"][0] == "/usr/bin/id"
                && e.data["grant"] == serde_json::json!(g.id))
    );
    // The first refusal is recorded at once (later ones in the same minute are counted into
    // one report: a flood of refusals must not flood the log).
    eventually(Duration::from_secs(30), "sudo's exec.denied", || async {
        audit_of(&s, "exec.denied").await.into_iter().find(|e| {
            e.data["via"] == "sudo"
                && e.data["argv"][0] == "/usr/bin/id"
                && e.data["reason"]
                    .as_str()
                    .unwrap_or("")
                    .contains("holds no active grant")
        })
    })
    .await;
}

/// Sends one `Check` frame (kind 6) and prints the answer's kind and reason.
const ASK_AS_CALLER: &str = r#"
import json, socket, struct, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(10)
s.connect(sys.argv[1])
body = sys.argv[2].encode()
s.sendall(struct.pack('>I', len(body) + 1) + bytes([6]) + body)
def exact(n):
    b = b''
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            sys.exit('connection closed')
        b += c
    return b
n = struct.unpack('>I', exact(4))[0]
answer = exact(n)
print(answer[0], json.loads(answer[1:]).get('reason'))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pam_lets_a_user_in_only_while_holding_a_grant() {
    if !root_or_skip("pam_lets_a_user_in_only_while_holding_a_grant") {
        return;
    }
    if !installed("pamtester") {
        println!("SKIP: pamtester is not installed (scripts/install-test-deps)");
        return;
    }
    let (s, mut agent, alice, client) = setup("pedmpm").await;
    let dir = tempfile::tempdir().unwrap();
    let any_grant = PamService::new(dir.path(), &agent, "");
    let login_role = PamService::new(dir.path(), &agent, "role=login");

    let out = any_grant.account(&alice.name);
    assert!(!out.status.success(), "let in without a grant");
    let text = format!("{}{}", stdout(&out), stderr(&out));
    println!("pamtester without a grant says:\n{text}");
    assert!(
        text.contains("may log in to web1 only while holding a grant"),
        "{text}"
    );

    let g = grant(&client, "1h").await;
    agent.wait_snapshot(1, None);
    let out = any_grant.account(&alice.name);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    // Only root may ask on someone's behalf: alice asking for herself is refused (and
    // recorded), grant or not.
    let mut ask = std::process::Command::new("/usr/bin/python3");
    ask.arg("-c").arg(ASK_AS_CALLER).arg(agent.socket()).arg(
        serde_json::json!({"kind": "login", "user": alice.name, "service": "sshd"}).to_string(),
    );
    let out = as_user(ask, &agent, &alice).output().unwrap();
    assert_eq!(
        stdout(&out).trim_end(),
        format!(
            "17 uid {} asked whether {:?} may act: only root asks on someone else's behalf (the sudo plugin, the PAM module)",
            alice.uid, alice.name
        ),
        "{}",
        stderr(&out)
    );
    // A line that asks for another role still says no.
    let out = login_role.account(&alice.name);
    assert!(!out.status.success());
    assert!(
        format!("{}{}", stdout(&out), stderr(&out)).contains("a grant of role login"),
        "{}",
        stderr(&out)
    );

    // After the grant: no.
    revoke(&s, g.id, "done").await;
    agent.wait_snapshot(0, None);
    assert!(!any_grant.account(&alice.name).status.success());

    // Without the agent: no, whatever the grants.
    grant(&client, "1h").await;
    agent.wait_snapshot(1, None);
    assert!(any_grant.account(&alice.name).status.success());
    agent.kill();
    let out = any_grant.account(&alice.name);
    assert!(!out.status.success(), "let in without the agent");
    agent.restart();
    agent.wait_snapshot(1, None);

    let events = eventually(Duration::from_secs(30), "host.login events", || async {
        let evs = audit_of(&s, "host.login").await;
        let allowed = evs
            .iter()
            .filter(|e| e.outcome == pedm_api::Outcome::Success)
            .count();
        (allowed >= 2 && evs.len() >= 3).then_some(evs)
    })
    .await;
    let allowed = events
        .iter()
        .filter(|e| e.outcome == pedm_api::Outcome::Success)
        .count();
    assert!(allowed >= 2, "{events:?}");
    let services = [any_grant.name.as_str(), login_role.name.as_str(), "sshd"];
    assert!(
        events
            .iter()
            .all(|e| services.iter().any(|s| e.data["argv"][0] == *s)),
        "{events:?}"
    );
    // The question alice asked for herself is on record too.
    assert!(events.iter().any(|e| {
        e.outcome == pedm_api::Outcome::Denied
            && e.data["reason"]
                .as_str()
                .unwrap_or("")
                .contains("only root asks")
    }));
    assert!(events.iter().any(|e| {
        e.outcome == pedm_api::Outcome::Denied
            && e.data["reason"]
                .as_str()
                .unwrap_or("")
                .contains("only while holding a grant")
    }));
}
