//! pedmd as a sudo log server: a host with Debian's stock sudo 1.9, `log_servers=` in its
//! sudoers and no pedm-agent running sends every command sudo accepts or rejects, and its
//! I/O, to pedmd (`sudo_logsrv.proto`), which records them as audit events and sessions.
//!
//! Real parts: pedmd (`--dev`, HTTPS and the log server on TLS), `pedm-agent enroll` only to
//! get the host's client certificate (no agent daemon), Debian's `sudo` and `sudo_sendlog`
//! as the clients. Debian builds sudo without TLS, so on the host `socat` carries sudo's
//! plain connection over TLS with the host certificate (the deployment README describes);
//! a connection without a certificate, or with a revoked host's, is refused.
//!
//! A test proxy between the client and `socat` reads the protocol's frames both ways: it
//! learns the log id and commit points pedmd sends, and cuts the connection once a commit
//! point has arrived, to show that what was acknowledged survives a dropped connection.
//! Root only (sudo configuration in a mount namespace, a Linux user), as `sudo_pam.rs`.

mod common;

use common::agent::*;
use common::*;
use pedm_api::*;
use pedm_server::sudo_log::proto::{Server as ServerMsg, ServerMessage};
use prost::Message;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn installed(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The host's side of TLS: `socat` listening on loopback for sudo, connecting to pedmd's
/// log server with the host's certificate (or none).
struct Relay {
    child: Child,
    port: u16,
}

impl Relay {
    fn start(log_port: u16, ca: &Path, identity: Option<(&Path, &Path)>) -> Relay {
        let port = free_port();
        let mut tls = format!(
            "OPENSSL:127.0.0.1:{log_port},cafile={},verify=1",
            ca.display()
        );
        if let Some((cert, key)) = identity {
            tls.push_str(&format!(",cert={},key={}", cert.display(), key.display()));
        }
        let child = Command::new("socat")
            .arg(format!("TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork"))
            .arg(tls)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("socat");
        // Listening once a connection is accepted (socat then connects onward and, with
        // nothing to relay, closes).
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "socat did not listen");
            std::thread::sleep(Duration::from_millis(10));
        }
        Relay { child, port }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the proxy saw pedmd send.
#[derive(Default, Debug)]
struct Seen {
    log_id: Option<String>,
    commit_points: Vec<(i64, i32)>,
}

/// A one-connection proxy that forwards frames both ways; with `cut_after`, it forwards that
/// many client frames, then holds the rest until pedmd acknowledges a commit point, and
/// then drops both connections.
struct CuttingProxy {
    port: u16,
    seen: Arc<Mutex<Seen>>,
    done: mpsc::Receiver<()>,
}

fn read_frame(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).ok()?;
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).ok()?;
    let mut frame = len.to_vec();
    frame.extend(body);
    Some(frame)
}

impl CuttingProxy {
    fn start(upstream: u16, cut_after: usize) -> CuttingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (done_tx, done) = mpsc::channel();
        let seen2 = seen.clone();
        std::thread::spawn(move || {
            let (mut client, _) = listener.accept().unwrap();
            let mut server = TcpStream::connect(("127.0.0.1", upstream)).unwrap();
            let (committed_tx, committed) = mpsc::channel::<()>();
            let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            let seen3 = seen2.clone();
            let back = std::thread::spawn(move || {
                while let Some(frame) = read_frame(&mut s2) {
                    if let Ok(m) = ServerMessage::decode(&frame[4..]) {
                        let mut seen = seen3.lock().unwrap();
                        match m.r#type {
                            Some(ServerMsg::LogId(id)) => seen.log_id = Some(id),
                            Some(ServerMsg::CommitPoint(t)) => {
                                seen.commit_points.push((t.tv_sec, t.tv_nsec));
                                let _ = committed_tx.send(());
                            }
                            _ => {}
                        }
                    }
                    if c2.write_all(&frame).is_err() {
                        break;
                    }
                }
            });
            let mut forwarded = 0;
            while let Some(frame) = read_frame(&mut client) {
                if forwarded == cut_after {
                    committed
                        .recv_timeout(Duration::from_secs(30))
                        .expect("pedmd acknowledged no commit point");
                    break;
                }
                if server.write_all(&frame).is_err() {
                    break;
                }
                forwarded += 1;
            }
            if forwarded < cut_after {
                // The client finished first: let the last answers through.
                let _ = server.shutdown(Shutdown::Write);
                let _ = back.join();
            } else {
                let _ = server.shutdown(Shutdown::Both);
                let _ = client.shutdown(Shutdown::Both);
                let _ = back.join();
            }
            let _ = done_tx.send(());
        });
        CuttingProxy { port, seen, done }
    }
}

/// sudoers of a host whose sudo logs to `log_port` (the relay), allowing `user` a few
/// commands without a password (sudo decides; pedm records).
fn sudoers(dir: &Path, name: &str, user: &str, log_port: u16, extra: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!(
            "Defaults !fqdn, !lecture, env_reset, !authenticate, log_output{extra}\n\
             Defaults log_servers=127.0.0.1:{log_port}\n\
             {user} ALL=(ALL:ALL) NOPASSWD: /usr/bin/printf, /bin/sh\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o440)).unwrap();
    path
}

/// `sudo -n ARGS` run by `user` with `sudoers` bound over `/etc/sudoers`.
fn sudo(sudoers: &Path, user: &LinuxUser, args: &[&str]) -> Output {
    let mut script = format!(
        "mount --bind {} /etc/sudoers && cd / && exec runuser -u {} -- sudo -n",
        sudoers.display(),
        user.name
    );
    for a in args {
        script.push(' ');
        script.push_str(&shell_quote(a));
    }
    in_mount_namespace(&script).output().expect("run sudo")
}

/// The sum of the delays in an I/O log's `timing` file (`EVENT SECONDS.NANOS ...` lines).
fn log_end(timing: &Path) -> (i64, i32) {
    let mut nanos: i64 = 0;
    for line in std::fs::read_to_string(timing).unwrap().lines() {
        let delay = line.split_whitespace().nth(1).unwrap();
        let (s, n) = delay.split_once('.').unwrap();
        nanos +=
            s.parse::<i64>().unwrap() * 1_000_000_000 + format!("{n:0<9}").parse::<i64>().unwrap();
    }
    (nanos / 1_000_000_000, (nanos % 1_000_000_000) as i32)
}

async fn recording(s: &Server, id: uuid::Uuid) -> pedm_cast::Cast {
    let mut out = Vec::new();
    s.admin().download_recording(id, &mut out).await.unwrap();
    pedm_cast::parse(&out[..]).unwrap()
}

async fn session_of(s: &Server, id: uuid::Uuid) -> Session {
    eventually(Duration::from_secs(30), "the sudo session", || async move {
        s.admin().get_session(id).await.ok()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_sudo_logs_every_command_and_its_output_to_pedmd() {
    if !root_or_skip("stock_sudo_logs_every_command_and_its_output_to_pedmd") {
        return;
    }
    for program in ["sudo", "sudo_sendlog", "socat", "unshare"] {
        if !installed(program) {
            println!("SKIP: {program} is not installed (scripts/install-test-deps)");
            return;
        }
    }
    let log_port = free_port();
    let s = Server::start_with(Options {
        dev: true,
        config: Some(format!(
            "[agents]\nmax_recording_bytes = 16384\n\
             [sudo_log]\nlisten = \"127.0.0.1:{log_port}\"\ncommit_interval = \"1s\"\n\
             abandon_after = \"2s\"\n"
        )),
        ..Default::default()
    });
    standard_targets(&s).await;
    let ca = s.ca().unwrap();
    let dir = tempfile::tempdir().unwrap();

    // The host's certificate, as `pedm-agent enroll` writes it; no agent runs.
    let (cert, key) = enroll_host_certificate(&s, dir.path(), "web1");
    let relay = Relay::start(log_port, &ca, Some((&cert, &key)));

    let user = LinuxUser::create("pedmsl");
    let token = user_with_token(&s, &user.name, false).await;
    let plain = sudoers(dir.path(), "sudoers", &user.name, relay.port, "");

    // 1. No grant: sudo alone decides and runs it; pedm records the command, its output as a
    // session, and raises an alert: nothing in pedm explains it.
    let out = sudo(&plain, &user, &["/usr/bin/printf", "hello %s\\n", "world"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello world\n");
    let accepted = audit_of(&s, "sudo.accepted").await;
    assert_eq!(accepted.len(), 1, "{accepted:?}");
    let ev = &accepted[0];
    assert_eq!(ev.actor, user.name);
    assert_eq!(ev.data["host"], "web1");
    assert_eq!(ev.data["run_as"], "root");
    assert_eq!(
        ev.data["argv"],
        serde_json::json!(["/usr/bin/printf", "hello %s\\n", "world"])
    );
    assert!(ev.data["grant"].is_null());
    assert!(ev.data["client"].as_str().unwrap().starts_with("sudoers "));
    let alerts = audit_of(&s, "exec.alert").await;
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].data["alert"], "sudo-without-grant");
    let first: uuid::Uuid = ev.data["session"].as_str().unwrap().parse().unwrap();
    let session = session_of(&s, first).await;
    assert_eq!(session.via, Some(SessionVia::SudoLog));
    assert_eq!(
        (session.user.as_str(), session.host.as_str()),
        (user.name.as_str(), "web1")
    );
    assert_eq!(session.exit_code, Some(0));
    assert_eq!(session.grant_id, None);
    let cast = recording(&s, first).await;
    assert_eq!(cast.output(), "hello world\n");
    assert_eq!(cast.markers(), vec!["exit 0"]);
    let out = s.cli(&s.admin_token, &["session", "show", &first.to_string()]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("no grant: sudo decided alone"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // `pedm session play` replays it; the person sees their own session.
    let out = s.cli(&token, &["session", "play", &first.to_string()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("hello world"));

    // 2. Under a grant for web1: the event and the session name it; no alert.
    let grant = s
        .client(&token)
        .create_request(&req("web1", "docker", "10m", "deploy"))
        .await
        .unwrap()
        .grant
        .expect("auto-approved");
    let out = sudo(&plain, &user, &["/usr/bin/printf", "%s\\n", "granted"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let accepted = audit_of(&s, "sudo.accepted").await;
    assert_eq!(accepted.len(), 2);
    assert_eq!(accepted[1].data["grant"], grant.id.to_string());
    assert_eq!(audit_of(&s, "exec.alert").await.len(), 1);
    let second: uuid::Uuid = accepted[1].data["session"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(session_of(&s, second).await.grant_id, Some(grant.id));

    // A recording stops at agents.max_recording_bytes: the rest of the output is dropped
    // (marked), the command is not stopped, its exit is kept.
    let out = sudo(
        &plain,
        &user,
        &[
            "/bin/sh",
            "-c",
            "i=0; while [ $i -lt 2000 ]; do echo line-$i; i=$((i+1)); done",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(out.stdout.len(), 18890, "sudo's own output is whole");
    let big = audit_of(&s, "sudo.accepted").await;
    let big: uuid::Uuid = big[2].data["session"].as_str().unwrap().parse().unwrap();
    session_of(&s, big).await;
    let cast = recording(&s, big).await;
    assert!(cast.output().starts_with("line-0\n"));
    assert!(cast.output().len() < 18890, "{}", cast.output().len());
    assert_eq!(
        cast.markers(),
        vec![
            "output beyond 16384 bytes not kept (agents.max_recording_bytes)",
            "exit 0"
        ]
    );

    // 3. A command sudoers does not allow: sudo refuses, pedm records why.
    let out = sudo(&plain, &user, &["/usr/bin/id"]);
    assert!(!out.status.success());
    // sudo sends a rejection and exits without waiting for an answer.
    let rejected = eventually(Duration::from_secs(30), "the rejection", || async {
        Some(audit_of(&s, "sudo.rejected").await).filter(|e| !e.is_empty())
    })
    .await;
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert_eq!(rejected[0].outcome, Outcome::Denied);
    assert_eq!(rejected[0].data["argv"], serde_json::json!(["/usr/bin/id"]));
    assert_eq!(rejected[0].data["reason"], "command not allowed");

    // 4. The connection drops after pedmd acknowledged the first output: what was
    // acknowledged is kept, and the log nobody resumes is finished as it stands.
    let proxy = CuttingProxy::start(relay.port, 3); // hello, accept, first output
    let cut = sudoers(dir.path(), "sudoers-cut", &user.name, proxy.port, "");
    let _ = sudo(
        &cut,
        &user,
        &["/bin/sh", "-c", "echo acknowledged; sleep 3; echo after"],
    );
    proxy.done.recv_timeout(Duration::from_secs(60)).unwrap();
    let id: uuid::Uuid = proxy
        .seen
        .lock()
        .unwrap()
        .log_id
        .clone()
        .unwrap()
        .parse()
        .unwrap();
    let dropped = session_of(&s, id).await;
    assert_eq!(dropped.ended_by, None);
    let cast = recording(&s, id).await;
    assert_eq!(cast.output(), "acknowledged\n");
    assert_eq!(cast.markers(), vec!["connection lost; never resumed"]);

    // 5. Resumed: sudo's own `sudo_sendlog` sends a local I/O log, is cut off after the
    // first commit point, and resumes from that point; the recording holds everything
    // exactly once.
    let iologs = dir.path().join("iolog");
    std::fs::create_dir(&iologs).unwrap();
    let local = dir.path().join("sudoers-local");
    std::fs::write(
        &local,
        format!(
            "Defaults !fqdn, !lecture, env_reset, !authenticate, log_output, !compress_io, iolog_dir={}, \
             iolog_file=sess\n{} ALL=(ALL:ALL) NOPASSWD: /bin/sh\n",
            iologs.display(),
            user.name
        ),
    )
    .unwrap();
    std::fs::set_permissions(&local, std::fs::Permissions::from_mode(0o440)).unwrap();
    let out = sudo(
        &local,
        &user,
        &[
            "/bin/sh",
            "-c",
            "echo one; sleep 0.2; echo two; sleep 0.2; echo three",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let path = iologs.join("sess");
    let proxy = CuttingProxy::start(relay.port, 3);
    let out = Command::new("sudo_sendlog")
        .args(["-h", "127.0.0.1", "-p", &proxy.port.to_string()])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success(), "the cut did not stop sudo_sendlog");
    proxy.done.recv_timeout(Duration::from_secs(60)).unwrap();
    let (log_id, point) = {
        let seen = proxy.seen.lock().unwrap();
        (
            seen.log_id.clone().unwrap(),
            *seen.commit_points.last().unwrap(),
        )
    };
    // A resume point pedmd never acknowledged (the log's end, a record boundary sudo_sendlog
    // can seek to) is refused, and changes nothing.
    let end = log_end(&path.join("timing"));
    assert_ne!(end, point);
    let out = Command::new("sudo_sendlog")
        .args(["-h", "127.0.0.1", "-p", &relay.port.to_string()])
        .args(["-r", &format!("{},{}", end.0, end.1), "-i", &log_id])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("not its last commit point"),
        "{}",
        stderr(&out)
    );
    // Another host cannot take over web1's log: refused, recorded, the log untouched.
    s.admin()
        .create_target(&CreateTarget {
            name: "db1".into(),
            kind: TargetKind::Host,
            description: None,
            labels: Default::default(),
        })
        .await
        .unwrap();
    let db1_dir = tempfile::tempdir().unwrap();
    let (db1_cert, db1_key) = enroll_host_certificate(&s, db1_dir.path(), "db1");
    let db1 = Relay::start(log_port, &ca, Some((&db1_cert, &db1_key)));
    let out = Command::new("sudo_sendlog")
        .args(["-h", "127.0.0.1", "-p", &db1.port.to_string()])
        .args(["-r", &format!("{},{}", point.0, point.1), "-i", &log_id])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("not by this host"),
        "{}",
        stderr(&out)
    );
    let refused = audit_of(&s, "sudo.log_refused").await;
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].actor, "host:db1");
    assert_eq!(refused[0].outcome, Outcome::Denied);
    assert!(
        refused[0].data["reason"]
            .as_str()
            .unwrap()
            .contains("host web1")
    );
    let out = Command::new("sudo_sendlog")
        .args(["-h", "127.0.0.1", "-p", &relay.port.to_string()])
        .args(["-r", &format!("{},{}", point.0, point.1), "-i", &log_id])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let id: uuid::Uuid = log_id.parse().unwrap();
    session_of(&s, id).await;
    let cast = recording(&s, id).await;
    assert_eq!(cast.output(), "one\ntwo\nthree\n");
    assert_eq!(cast.markers(), vec!["exit 0"]);

    // The certificate is renewed without the agent running (`pedm-agent renew`, from a
    // timer); the relay reads it per connection, so sudo keeps logging with the new one.
    let renew = |force: bool| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_pedm-agent"));
        c.arg("--config")
            .arg(dir.path().join("agent.toml"))
            .arg("renew");
        if force {
            c.arg("--force");
        }
        c.output().unwrap()
    };
    let out = renew(false);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("not due"));
    let old = std::fs::read(&cert).unwrap();
    let out = renew(true);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_ne!(std::fs::read(&cert).unwrap(), old);
    assert_eq!(audit_of(&s, "host.cert_renewed").await.len(), 1);
    let before = audit_of(&s, "sudo.accepted").await.len();
    let out = sudo(&plain, &user, &["/usr/bin/printf", "renewed"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(audit_of(&s, "sudo.accepted").await.len(), before + 1);

    // 6. Only hosts speak to the log server: without a certificate, or as a revoked host,
    // the handshake fails and nothing is recorded.
    let before = before + 1;
    let anonymous = Relay::start(log_port, &ca, None);
    let nocert = sudoers(dir.path(), "sudoers-nocert", &user.name, anonymous.port, "");
    let _ = sudo(&nocert, &user, &["/usr/bin/printf", "anonymous"]);
    s.admin()
        .revoke_host(
            "web1",
            &Reason {
                reason: Some("decommissioned".into()),
            },
        )
        .await
        .unwrap();
    let _ = sudo(&plain, &user, &["/usr/bin/printf", "revoked"]);
    assert_eq!(audit_of(&s, "sudo.accepted").await.len(), before);

    // Every event verifies in the chain.
    let out = s.cli(&s.admin_token, &["audit", "verify"]);
    assert!(out.status.success(), "{}", stderr(&out));
}
