//! pedmd as a sudo log server against sudo's own, `sudo_logsrvd`, in the same run: the same
//! client (this file, speaking `sudo_logsrv.proto`) sends the same I/O logs to each, C at a
//! time, and waits for each log's final commit point, as sudo does before it exits.
//!
//! `cargo bench -p pedm --bench sudo_log` (as root: `pedm-agent enroll` wants a root-owned
//! token file; needs Debian's `sudo` package for `sudo_logsrvd`)
//!
//! Not equal footing, in sudo_logsrvd's favour: Debian builds it without TLS, so it is spoken
//! to in plain TCP, while pedmd requires TLS with the host's client certificate (a handshake
//! per log); and sudo_logsrvd writes its files without fsync (`iolog_flush` is a `fflush`),
//! while pedmd fsyncs a log before acknowledging it and commits an audit event (two, as no
//! grant explains the command: `sudo.accepted` and the `sudo-without-grant` alert) and a
//! session row to its database.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/mod.rs"]
mod support;

use common::*;
use pedm_server::sudo_log::proto::{
    AcceptMessage, Client as Msg, ClientHello, ClientMessage, ExitMessage, InfoMessage, InfoValue,
    IoBuffer, Server as Reply, ServerMessage, StringList, TimeSpec,
};
use prost::Message;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Logs per run, clients at once, output buffers per log and their size.
const LOGS: u64 = 400;
const CLIENTS: u64 = 16;
const BUFFERS: u64 = 50;
const BUFFER_BYTES: usize = 1024;

fn main() {
    if !nix::unistd::geteuid().is_root() {
        println!("SKIP sudo_log bench: needs root (pedm-agent enroll wants a root-owned token)");
        return;
    }
    if !std::path::Path::new("/usr/sbin/sudo_logsrvd").exists() {
        println!("SKIP sudo_log bench: sudo_logsrvd is not installed (apt-get install sudo)");
        return;
    }
    support::block_on(run());
}

async fn send<S: AsyncWrite + Unpin>(s: &mut S, m: Msg) {
    let body = ClientMessage { r#type: Some(m) }.encode_to_vec();
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend(body);
    s.write_all(&out).await.expect("send");
}

async fn recv<S: AsyncRead + Unpin>(s: &mut S) -> Reply {
    let len = s.read_u32().await.expect("frame length");
    let mut body = vec![0u8; len as usize];
    s.read_exact(&mut body).await.expect("frame");
    ServerMessage::decode(&body[..])
        .expect("server message")
        .r#type
        .expect("a message")
}

fn info(key: &str, v: InfoValue) -> InfoMessage {
    InfoMessage {
        key: key.into(),
        value: Some(v),
    }
}

/// One log, as sudo sends it: hello, accept, output, exit; returns once the final commit
/// point (the whole log's time) is acknowledged.
async fn one_log<S: AsyncRead + AsyncWrite + Unpin>(mut s: S) {
    send(
        &mut s,
        Msg::HelloMsg(ClientHello {
            client_id: "pedm bench".into(),
        }),
    )
    .await;
    assert!(matches!(recv(&mut s).await, Reply::Hello(_)));
    let now = jiff::Timestamp::now();
    send(
        &mut s,
        Msg::AcceptMsg(AcceptMessage {
            submit_time: Some(TimeSpec {
                tv_sec: now.as_second(),
                tv_nsec: now.subsec_nanosecond(),
            }),
            info_msgs: vec![
                info("submituser", InfoValue::Strval("benchuser".into())),
                info("runuser", InfoValue::Strval("root".into())),
                info("submithost", InfoValue::Strval("web1".into())),
                info("command", InfoValue::Strval("/usr/bin/cat".into())),
                info(
                    "runargv",
                    InfoValue::Strlistval(StringList {
                        strings: vec!["/usr/bin/cat".into(), "/var/log/syslog".into()],
                    }),
                ),
                info("runcwd", InfoValue::Strval("/root".into())),
            ],
            expect_iobufs: true,
        }),
    )
    .await;
    assert!(matches!(recv(&mut s).await, Reply::LogId(_)));
    let line = "x".repeat(BUFFER_BYTES - 1) + "\n";
    let delay = TimeSpec {
        tv_sec: 0,
        tv_nsec: 1_000_000,
    };
    for _ in 0..BUFFERS {
        send(
            &mut s,
            Msg::StdoutBuf(IoBuffer {
                delay: Some(delay),
                data: line.as_bytes().to_vec(),
            }),
        )
        .await;
    }
    send(
        &mut s,
        Msg::ExitMsg(ExitMessage {
            run_time: Some(TimeSpec {
                tv_sec: 0,
                tv_nsec: (BUFFERS * 1_000_000) as i32,
            }),
            ..Default::default()
        }),
    )
    .await;
    let end = (BUFFERS * 1_000_000) as i32;
    loop {
        match recv(&mut s).await {
            Reply::CommitPoint(t) if t.tv_sec == 0 && t.tv_nsec == end => break,
            Reply::CommitPoint(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    let _ = s.shutdown().await;
}

/// Sends LOGS logs, CLIENTS at a time, each on a new connection from `connect`; returns
/// (logs per second, per-log p50 ms, p99 ms).
async fn load<F, Fut>(connect: F) -> (f64, f64, f64)
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let connect = Arc::new(connect);
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = vec![];
    for _ in 0..CLIENTS {
        let (connect, next) = (connect.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut times = vec![];
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < LOGS {
                let t = Instant::now();
                connect().await;
                times.push(t.elapsed().as_secs_f64() * 1e3);
            }
            times
        }));
    }
    let mut times = vec![];
    for t in tasks {
        times.extend(t.await.expect("client"));
    }
    let secs = started.elapsed().as_secs_f64();
    times.sort_by(f64::total_cmp);
    (
        LOGS as f64 / secs,
        support::quantile(&times, 0.5),
        support::quantile(&times, 0.99),
    )
}

async fn run() {
    let log_port = free_port();
    let s = Server::start_with(Options {
        dev: true,
        config: Some(format!("[sudo_log]\nlisten = \"127.0.0.1:{log_port}\"\n")),
        ..Default::default()
    });
    standard_targets(&s).await;
    let dir = tempfile::tempdir().expect("tempdir");

    // The host's certificate, as on a host (pedm-agent enroll).
    let (cert, key) = common::agent::enroll_host_certificate(&s, dir.path(), "web1");
    let ca = s.ca().unwrap();
    let tls = {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(&ca).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let chain: Vec<_> = CertificateDer::pem_file_iter(&cert)
            .unwrap()
            .map(|c| c.unwrap())
            .collect();
        let key = PrivateKeyDer::from_pem_file(&key).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        Arc::new(
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_client_auth_cert(chain, key)
                .unwrap(),
        )
    };

    // sudo_logsrvd, plain TCP (Debian's has no TLS), I/O logs uncompressed, events to a file.
    let peer_port = free_port();
    let conf = dir.path().join("sudo_logsrvd.conf");
    std::fs::write(
        &conf,
        format!(
            "[server]\nlisten_address = 127.0.0.1:{peer_port}\npid_file = {0}/logsrvd.pid\n\
             [iolog]\niolog_dir = {0}/io\niolog_compress = false\niolog_flush = true\n\
             [eventlog]\nlog_type = logfile\nlog_format = json\n\
             [logfile]\npath = {0}/events.log\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let mut peer = Command::new("/usr/sbin/sudo_logsrvd")
        .args(["-n", "-f"])
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sudo_logsrvd");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", peer_port)).is_err() {
        assert!(Instant::now() < deadline, "sudo_logsrvd did not listen");
        std::thread::sleep(Duration::from_millis(10));
    }

    let pedm = || {
        let tls = tls.clone();
        move || {
            let tls = tls.clone();
            async move {
                let tcp = tokio::net::TcpStream::connect(("127.0.0.1", log_port))
                    .await
                    .expect("connect pedmd");
                tcp.set_nodelay(true).unwrap();
                let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
                let s = tokio_rustls::TlsConnector::from(tls)
                    .connect(name, tcp)
                    .await
                    .expect("TLS to pedmd");
                one_log(s).await
            }
        }
    };
    let sudo = move || async move {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", peer_port))
            .await
            .expect("connect sudo_logsrvd");
        tcp.set_nodelay(true).unwrap();
        one_log(tcp).await
    };

    let load_before = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    // A warm-up of each, then the measured rounds, alternating.
    pedm()().await;
    sudo().await;
    let mut results = vec![];
    for _ in 0..2 {
        let p = load(pedm()).await;
        let q = load(sudo).await;
        results.push((p, q));
    }
    let load_after = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let _ = peer.kill();
    let _ = peer.wait();

    // Everything pedmd acknowledged is recorded.
    let sessions = s
        .admin()
        .list_sessions(&pedm_api::SessionQuery {
            limit: Some(1_000),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(sessions.len() as u64, 2 * LOGS + 1, "sessions recorded");

    println!(
        "\nsudo log server: {LOGS} logs of {BUFFERS} x {BUFFER_BYTES} B, {CLIENTS} clients, \
         each log on its own connection, waiting for its final commit point"
    );
    println!(
        "load before {}, after {}",
        load_before.trim(),
        load_after.trim()
    );
    println!(
        "{:<34} {:>10} {:>10} {:>10}",
        "", "logs/s", "p50 ms", "p99 ms"
    );
    for (i, ((pr, p50, p99), (sr, s50, s99))) in results.iter().enumerate() {
        println!(
            "{:<34} {pr:>10.0} {p50:>10.2} {p99:>10.2}",
            format!("pedmd (TLS, fsync, audit) #{}", i + 1)
        );
        println!(
            "{:<34} {sr:>10.0} {s50:>10.2} {s99:>10.2}",
            format!("sudo_logsrvd (plain) #{}", i + 1)
        );
    }
    let pedm_rate = results.iter().map(|r| r.0.0).fold(f64::MIN, f64::max);
    let peer_rate = results.iter().map(|r| r.1.0).fold(f64::MIN, f64::max);
    println!(
        "pedmd/sudo_logsrvd throughput ratio (best of 2): {:.2}",
        pedm_rate / peer_rate
    );
    support::bench_line(
        "sudo_log_throughput",
        "logs/s",
        pedm_rate,
        Some((peer_rate, "sudo_logsrvd")),
        "-",
        "higher",
        "sudo I/O logs acknowledged per second, 16 clients, pedmd (TLS, fsync) vs sudo_logsrvd (plain, no fsync)",
    );
}
