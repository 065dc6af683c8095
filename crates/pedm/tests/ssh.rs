//! `ssh` targets against a real OpenSSH `sshd` (Debian's openssh-server) on a loopback port,
//! configured as an admin would (`common::sshd`). The client is the system `ssh`, run by
//! `pedm ssh`.
//!
//! sshd needs root (privilege separation, logging in as root); without it, or without
//! `/usr/sbin/sshd`, the tests say so and skip.

mod common;

use common::sshd::{self, keygen, ok, run, skip_reason, ssh_target};
use common::*;
use pedm_api::{Client, SshAccess};
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// pedmd, a real sshd trusting it, the `ssh` target `bastion` at it, and a user with a
/// token and a config directory of their own.
struct Bastion {
    s: Server,
    tmp: tempfile::TempDir,
    sshd: sshd::Sshd,
    token: String,
    home: std::path::PathBuf,
}

async fn bastion(user: &str) -> Bastion {
    let s = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let sshd = sshd::start(&s, tmp.path());
    ssh_target(&s.admin(), sshd.port).await;
    let token = user_with_token(&s, user, false).await;
    let home = tmp.path().join(user);
    std::fs::create_dir_all(&home).unwrap();
    Bastion {
        s,
        tmp,
        sshd,
        token,
        home,
    }
}

/// Runs the real `pedm` as `token` with its own config directory (key, certificates).
fn pedm(s: &Server, token: &str, home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pedm"))
        .args(args)
        .env("PEDM_URL", &s.url)
        .env("PEDM_TOKEN", token)
        .env_remove("PEDM_TOKEN_FILE")
        .env("XDG_CONFIG_HOME", home)
        .env("HOME", home)
        .stdin(Stdio::null())
        .output()
        .expect("run pedm")
}

const SSH_OPTS: [&str; 4] = ["-o", "BatchMode=yes", "-o", "ConnectTimeout=10"];

fn pedm_ssh(s: &Server, token: &str, home: &Path, args: &[&str]) -> Output {
    let mut all = vec!["ssh"];
    all.extend(SSH_OPTS);
    all.extend(args);
    pedm(s, token, home, &all)
}

/// Plain `ssh` with a key and certificate pedm made earlier, trusting the host CA as pedm
/// set it up.
fn plain_ssh(home: &Path, cert: &Path, login: &str, port: u16, cmd: &str) -> Output {
    let dir = home.join("pedm").join("ssh");
    run(Command::new("ssh")
        .args(SSH_OPTS)
        .arg("-i")
        .arg(dir.join("id_ed25519"))
        .arg("-o")
        .arg(format!("CertificateFile={}", cert.display()))
        .args([
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "StrictHostKeyChecking=yes",
        ])
        .arg("-o")
        .arg(format!(
            "UserKnownHostsFile={}",
            dir.join("known_hosts").display()
        ))
        .args(["-p", &port.to_string(), "-l", login, "127.0.0.1", "--", cmd]))
}

async fn request_grant(client: &Client, role: &str, duration: &str) -> uuid::Uuid {
    let r = client
        .create_request(&req("bastion", role, duration, "ssh work on the bastion"))
        .await
        .unwrap();
    r.grant.expect("auto-approved").id
}

#[tokio::test]
async fn ssh_certificates_log_in_for_the_grant_window_only() {
    if let Some(why) = skip_reason() {
        eprintln!("skipped: {why}");
        return;
    }
    let Bastion {
        s,
        tmp: _tmp,
        sshd,
        token: alice,
        home,
    } = bastion("alice").await;
    let ac = s.client(&alice);

    // Inside the window: logged in as the role's run-as, no host-key prompt.
    let grant = request_grant(&ac, "admin", "1h").await;
    let o = pedm_ssh(&s, &alice, &home, &["bastion", "--", "id", "-un"]);
    assert_eq!(ok(&o, "pedm ssh").trim(), "root", "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!("grant {grant}")),
        "{}",
        stderr(&o)
    );
    // sshd's own log ties the login to the grant: key id = grant id, with the serial.
    let issued = audit_of(&s, "ssh.certificate_issued").await;
    let serial = issued[0].data["serial"].as_str().unwrap().to_string();
    assert_eq!(issued[0].actor, "alice");
    assert_eq!(
        issued[0].subject.as_deref(),
        Some(format!("grant:{grant}").as_str())
    );
    let log = sshd.log();
    assert!(
        log.contains("Accepted publickey for root")
            && log.contains(&format!("ID {grant} (serial {serial})")),
        "{log}"
    );
    // The private key never left: the certificate certifies the public key made here.
    let cert = home.join("pedm/ssh").join(format!("{grant}-cert.pub"));
    let listed = ok(
        &run(Command::new("ssh-keygen").arg("-L").arg("-f").arg(&cert)),
        "-L",
    );
    let fp = ok(
        &run(Command::new("ssh-keygen")
            .arg("-l")
            .arg("-f")
            .arg(home.join("pedm/ssh/id_ed25519.pub"))),
        "-l",
    );
    let fp = fp.split_whitespace().nth(1).unwrap();
    assert!(listed.contains(fp), "{listed}\n{fp}");
    assert!(listed.contains("permit-pty") && !listed.contains("permit-port-forwarding"));

    // Revoked before its end: the KRL lists it at once and sshd refuses the same certificate.
    let revoke = s.cli(
        &s.admin_token,
        &[
            "grant",
            "revoke",
            &grant.to_string(),
            "--reason",
            "done early",
        ],
    );
    ok(&revoke, "revoke");
    sshd.refresh_krl(&s);
    let q = run(Command::new("ssh-keygen")
        .arg("-Q")
        .arg("-f")
        .arg(sshd.krl())
        .arg(&cert));
    assert!(
        !q.status.success() && stdout(&q).contains("REVOKED"),
        "{}",
        stdout(&q)
    );
    let o = plain_ssh(&home, &cert, "root", sshd.port, "id -un");
    assert!(
        !o.status.success(),
        "a revoked certificate logged in: {}",
        stdout(&o)
    );
    assert!(sshd.log().contains("revoked"), "{}", sshd.log());
    // And no new certificate for the ended grant.
    let o = pedm_ssh(
        &s,
        &alice,
        &home,
        &["--grant", &grant.to_string(), "bastion"],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("not in force"), "{}", stderr(&o));

    // A short grant: works inside its window, sshd refuses the certificate after it.
    let short = request_grant(&ac, "admin", "3s").await;
    let o = pedm_ssh(&s, &alice, &home, &["bastion", "--", "true"]);
    ok(&o, "inside the short window");
    let cert = home.join("pedm/ssh").join(format!("{short}-cert.pub"));
    let g = ac.get_grant(short).await.unwrap();
    sleep_past(g.expires_at).await;
    let o = plain_ssh(&home, &cert, "root", sshd.port, "true");
    assert!(!o.status.success(), "an expired certificate logged in");
    assert!(
        sshd.log().contains("Certificate invalid: expired"),
        "{}",
        sshd.log()
    );
    let o = pedm_ssh(
        &s,
        &alice,
        &home,
        &["--grant", &short.to_string(), "bastion"],
    );
    assert!(!o.status.success(), "a certificate for an expired grant");
    // The KRL lists only certificates still valid: the expired one is not carried.
    let krl = s.anonymous().ssh_krl().await.unwrap();
    assert!(!krl.windows(36).any(|w| w == short.to_string().as_bytes()));
    assert!(krl.windows(36).any(|w| w == grant.to_string().as_bytes()));
}

#[tokio::test]
async fn ssh_certificates_hold_their_options_and_nothing_else_logs_in() {
    if let Some(why) = skip_reason() {
        eprintln!("skipped: {why}");
        return;
    }
    let Bastion {
        s,
        tmp,
        sshd,
        token: bob,
        home,
    } = bastion("bob").await;
    let bc = s.client(&bob);

    // force-command holds whatever the client asks; the certificate is bound to the
    // request's address (loopback here, where ssh comes from too).
    let forced = request_grant(&bc, "forced", "1h").await;
    let o = pedm_ssh(&s, &bob, &home, &["bastion", "--", "cat", "/etc/shadow"]);
    assert_eq!(ok(&o, "forced").trim(), "forced-command-ran");
    let cert = home.join("pedm/ssh").join(format!("{forced}-cert.pub"));
    let listed = ok(
        &run(Command::new("ssh-keygen").arg("-L").arg("-f").arg(&cert)),
        "-L",
    );
    assert!(
        listed.contains("force-command echo forced-command-ran"),
        "{listed}"
    );
    assert!(listed.contains("source-address 127.0.0.1"), "{listed}");

    // A certificate for another principal does not log in as root.
    let other = request_grant(&bc, "other", "1h").await;
    let o = pedm_ssh(
        &s,
        &bob,
        &home,
        &["--grant", &other.to_string(), "--print", "bastion"],
    );
    assert!(ok(&o, "print").contains("-l daemon"), "{}", stdout(&o));
    let cert = home.join("pedm/ssh").join(format!("{other}-cert.pub"));
    let o = plain_ssh(&home, &cert, "root", sshd.port, "id -un");
    assert!(
        !o.status.success(),
        "another principal's certificate logged in as root"
    );
    assert!(
        sshd.log()
            .contains("Certificate does not contain an authorized principal"),
        "{}",
        sshd.log()
    );
    // pedm ssh itself refuses a login the role does not give.
    let o = pedm_ssh(
        &s,
        &bob,
        &home,
        &["--grant", &other.to_string(), "root@bastion"],
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("logs in as daemon, not root"),
        "{}",
        stderr(&o)
    );

    // A forged certificate: right principal, right key, another CA.
    let forger = tmp.path().join("forger_ca");
    keygen(&forger);
    let key = home.join("pedm/ssh/id_ed25519.pub");
    ok(
        &run(Command::new("ssh-keygen")
            .arg("-s")
            .arg(&forger)
            .args(["-I", "forged", "-n", "root", "-V", "-5m:+1h"])
            .arg(&key)),
        "sign with the forger CA",
    );
    let forged = home.join("pedm/ssh/id_ed25519-cert.pub");
    let o = plain_ssh(&home, &forged, "root", sshd.port, "id -un");
    assert!(
        !o.status.success(),
        "a certificate from another CA logged in"
    );
    let log = sshd.log();
    assert!(!log.contains("Accepted certificate ID \"forged\""), "{log}");
    assert!(
        log.contains("ID forged"),
        "sshd saw the forged certificate: {log}"
    );
}

#[tokio::test]
async fn ssh_certificate_requests_are_checked_and_refusals_recorded() {
    // No sshd: this is the server's side.
    let s = Server::start();
    let admin = s.admin();
    ssh_target(&admin, 22).await;
    standard_targets(&s).await;
    let carol = user_with_token(&s, "carol", false).await;
    let dave = user_with_token(&s, "dave", false).await;
    let cc = s.client(&carol);
    let key = {
        let dir = tempfile::tempdir().unwrap();
        let k = dir.path().join("k");
        keygen(&k);
        std::fs::read_to_string(k.with_extension("pub")).unwrap()
    };
    let grant = request_grant(&cc, "admin", "1h").await;

    // Someone else's grant: refused and recorded.
    let e = s
        .client(&dave)
        .ssh_certificate(grant, &key)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("belongs to carol"), "{e}");
    let denied = audit_of(&s, "ssh.certificate").await;
    assert_eq!(denied.len(), 1, "{denied:?}");
    assert_eq!(denied[0].actor, "dave");
    // Not a key, a DSA-style junk line, several lines: named, nothing issued.
    for (bad, says) in [
        ("", "public_key"),
        ("ssh-ed25519 AAAA", "public_key"),
        ("ssh-ed25519 AAAAC3Nz\nssh-ed25519 AAAAC3Nz", "one line"),
    ] {
        let e = cc.ssh_certificate(grant, bad).await.unwrap_err();
        assert!(e.to_string().contains(says), "{bad:?}: {e}");
    }
    // A host target's grant gets no SSH certificate.
    let web = cc
        .create_request(&req("web1", "docker", "30m", "containers"))
        .await
        .unwrap()
        .grant
        .unwrap()
        .id;
    let e = cc.ssh_certificate(web, &key).await.unwrap_err();
    assert!(e.to_string().contains("only ssh targets"), "{e}");
    // A target whose port label is not a port: named, nothing signed.
    admin
        .create_target(&pedm_api::CreateTarget {
            name: "badport".into(),
            kind: pedm_api::TargetKind::Ssh,
            description: None,
            labels: [("port".to_string(), "ssh".to_string())].into(),
        })
        .await
        .unwrap();
    let admin_role = pedm_api::CreateRole {
        auto_approve: true,
        run_as: Some("root".into()),
        ..pedm_api::CreateRole::new("admin", "1h")
    };
    admin.create_role("badport", &admin_role).await.unwrap();
    let bad = cc
        .create_request(&req("badport", "admin", "30m", "port check"))
        .await
        .unwrap()
        .grant
        .unwrap()
        .id;
    let e = cc.ssh_certificate(bad, &key).await.unwrap_err();
    assert!(e.to_string().contains("port=\"ssh\""), "{e}");
    assert!(audit_of(&s, "ssh.certificate_issued").await.is_empty());

    // The good one.
    let issued = cc.ssh_certificate(grant, &key).await.unwrap();
    assert_eq!(issued.login, "root");
    assert_eq!(issued.record.grant_id, Some(grant));
    assert_eq!(issued.record.key_id, grant.to_string());
    let g = cc.get_grant(grant).await.unwrap();
    assert_eq!(issued.record.valid_before, g.expires_at);
    assert_eq!(issued.record.valid_after, g.starts_at);
    assert!(issued.known_hosts[0].starts_with("@cert-authority 127.0.0.1 ssh-ed25519 "));

    // Host keys: admins only, names checked.
    let body = |principals: Vec<&str>| pedm_api::ssh::SignHostKey {
        public_key: key.clone(),
        principals: principals.into_iter().map(String::from).collect(),
        validity: None,
    };
    let e = cc.sign_ssh_host_key(&body(vec!["web1"])).await.unwrap_err();
    assert!(
        e.to_string().contains("403") || e.to_string().contains("manage_targets"),
        "{e}"
    );
    let e = admin
        .sign_ssh_host_key(&body(vec!["web 1;rm"]))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("principals"), "{e}");
    let e = admin
        .sign_ssh_host_key(&pedm_api::ssh::SignHostKey {
            validity: Some("400d".into()),
            ..body(vec!["web1"])
        })
        .await
        .unwrap_err();
    assert!(e.to_string().contains("validity"), "{e}");
    let host = admin
        .sign_ssh_host_key(&body(vec!["web1", "10.0.0.5"]))
        .await
        .unwrap();
    assert!(
        host.certificate
            .starts_with("ssh-ed25519-cert-v01@openssh.com ")
    );
    assert_eq!(audit_of(&s, "ssh.host_certificate_issued").await.len(), 1);

    // Roles' SSH settings from the CLI; an update replaces them all, and is audited.
    let o = s.cli(
        &s.admin_token,
        &[
            "role",
            "add",
            "bastion",
            "ops",
            "--max-duration",
            "1h",
            "--run-as",
            "root",
            "--ssh-force-command",
            "uptime",
            "--ssh-permit",
            "port-forwarding",
            "--ssh-no-pty",
        ],
    );
    let shown = ok(&o, "role add");
    assert!(
        shown.contains("force-command \"uptime\", port-forwarding, no pty"),
        "{shown}"
    );
    let o = s.cli(
        &s.admin_token,
        &[
            "role",
            "update",
            "bastion",
            "ops",
            "--ssh-bind-source-address",
        ],
    );
    ok(&o, "role update");
    let ops = admin
        .list_roles("bastion")
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.name == "ops")
        .unwrap();
    assert_eq!(
        ops.ssh,
        SshAccess {
            bind_source_address: true,
            ..Default::default()
        }
    );
    let updated = audit_of(&s, "role.updated").await;
    assert_eq!(updated[0].data["before"]["ssh"]["force_command"], "uptime");
    assert_eq!(updated[0].data["after"]["ssh"]["bind_source_address"], true);
    let o = s.cli(
        &s.admin_token,
        &[
            "role",
            "add",
            "bastion",
            "bad",
            "--max-duration",
            "1h",
            "--ssh-force-command",
            " ",
        ],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("force_command"), "{}", stderr(&o));
}
