//! `pedm ssh` against plain `ssh`, and how fast pedmd issues certificates against OpenSSH's
//! own `ssh-keygen -s`, in the same run.
//!
//! `cargo bench -p pedm --bench ssh` (as root; needs openssh-server: scripts/install-test-deps)
//!
//! * login: `pedm ssh bastion -- true` (asks pedmd for a certificate for the grant, writes it,
//!   runs the system `ssh` with it) against `ssh -i KEY root@127.0.0.1 true` with a static
//!   key in authorized_keys, to the same real sshd, both trusting the host by its certificate;
//!   interleaved, 40 each (`PEDM_BENCH_RUNS`), p50.
//! * issuance: 16 API clients (`PEDM_BENCH_CLIENTS`) asking certificates for one grant for 5 s
//!   (`PEDM_BENCH_SECS`): each signed, recorded and audited in the database. Peer: as many
//!   `ssh-keygen -s` processes in parallel as there are cores, each signing one certificate
//!   per run (what a signing script does), for the same time.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/mod.rs"]
mod support;

use common::sshd;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn main() {
    if let Some(why) = sshd::skip_reason() {
        println!("SKIP ssh bench: {why}");
        return;
    }
    support::block_on(run());
}

/// The median of `v`, in milliseconds.
fn p50_ms(v: &[Duration]) -> f64 {
    let mut ms: Vec<f64> = v.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    support::quantile(&ms, 0.5)
}

fn timed(cmd: &mut Command) -> Duration {
    let t = Instant::now();
    let o = cmd.stdin(Stdio::null()).output().expect("run");
    let took = t.elapsed();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    took
}

async fn run() {
    let runs = support::setting("PEDM_BENCH_RUNS", 40) as usize;
    let secs = support::setting("PEDM_BENCH_SECS", 5);
    let clients = support::setting("PEDM_BENCH_CLIENTS", 16);
    let s = common::Server::start_with(common::Options {
        env: vec![("PEDM_LOG".into(), "warn".into())],
        ..Default::default()
    });
    let tmp = tempfile::tempdir().unwrap();
    let sshd = sshd::start(&s, tmp.path());
    let admin = s.admin();
    sshd::ssh_target(&admin, sshd.port).await;
    let token = common::user_with_token(&s, "alice", false).await;
    let client = s.client(&token);
    let grant = client
        .create_request(&common::req("bastion", "admin", "1h", "ssh benchmark"))
        .await
        .unwrap()
        .grant
        .unwrap()
        .id;
    let home = tmp.path().join("alice");
    std::fs::create_dir_all(&home).unwrap();
    let pedm_ssh = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_pedm"));
        c.args(["ssh", "-o", "BatchMode=yes", "bastion", "--", "true"])
            .env("PEDM_URL", &s.url)
            .env("PEDM_TOKEN", &token)
            .env("XDG_CONFIG_HOME", &home)
            .env("HOME", &home);
        c
    };
    // Once: makes pedm's key and the known_hosts file the plain ssh uses too.
    timed(&mut pedm_ssh());
    let key = tmp.path().join("static_key");
    sshd::keygen(&key);
    std::fs::copy(key.with_extension("pub"), sshd.dir.join("authorized_keys")).unwrap();
    let known_hosts = home.join("pedm/ssh/known_hosts");
    let plain_ssh = || {
        let mut c = Command::new("ssh");
        c.args(["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes"])
            .arg("-i")
            .arg(&key)
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
            .args(["-o", "StrictHostKeyChecking=yes", "-p"])
            .arg(sshd.port.to_string())
            .args(["-l", "root", "127.0.0.1", "--", "true"]);
        c
    };
    timed(&mut plain_ssh());
    let (mut with_pedm, mut plain) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        with_pedm.push(timed(&mut pedm_ssh()));
        plain.push(timed(&mut plain_ssh()));
    }
    let (p, q) = (p50_ms(&with_pedm), p50_ms(&plain));
    println!("login p50: pedm ssh {p:.1} ms, ssh with a static key {q:.1} ms ({runs} each)");
    support::bench_line(
        "ssh_login_p50",
        "ms",
        p,
        Some((q, "ssh_static_key")),
        "<=150%",
        "lower",
        "login: pedm ssh (certificate issued per login) vs ssh with a static key, p50",
    );

    // Issuance through the API.
    let public = std::fs::read_to_string(home.join("pedm/ssh/id_ed25519.pub")).unwrap();
    let count = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    let started = Instant::now();
    for _ in 0..clients {
        let (c, public, count, stop) = (
            s.client(&token),
            public.clone(),
            count.clone(),
            stop.clone(),
        );
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                c.ssh_certificate(grant, &public).await.expect("issue");
                count.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let pedm_rate = count.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();

    // ssh-keygen -s, one process per certificate, one worker per core.
    let ca = tmp.path().join("keygen_ca");
    sshd::keygen(&ca);
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let signed = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    std::thread::scope(|scope| {
        for w in 0..workers {
            let (ca, signed, dir) = (&ca, signed.clone(), tmp.path());
            scope.spawn(move || {
                let subject = dir.join(format!("subject{w}"));
                sshd::keygen(&subject);
                let mut serial = 1u64;
                while Instant::now() < deadline {
                    sign_with_keygen(ca, &subject, serial);
                    serial += 1;
                    signed.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    let keygen_rate = signed.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    println!(
        "issuance: pedmd {pedm_rate:.0}/s ({clients} clients), ssh-keygen -s {keygen_rate:.0}/s ({workers} processes at a time)"
    );
    support::bench_line(
        "ssh_cert_issuance",
        "certs/s",
        pedm_rate,
        Some((keygen_rate, "ssh-keygen_-s")),
        ">=100%",
        "higher",
        "SSH certificates issued per second (signed, recorded, audited) vs ssh-keygen -s",
    );
}

fn sign_with_keygen(ca: &Path, subject: &Path, serial: u64) {
    let o = Command::new("ssh-keygen")
        .arg("-q")
        .arg("-s")
        .arg(ca)
        .args(["-I", "bench", "-n", "root", "-V", "+1h", "-z"])
        .arg(serial.to_string())
        .arg(subject.with_extension("pub"))
        .stdin(Stdio::null())
        .output()
        .expect("ssh-keygen -s");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}
