//! TLS cost: request throughput over HTTPS with keep-alive against plain HTTP on the same
//! machine in the same run (goal: at least 90 %), and the rate of full TLS handshakes.
//!
//! `cargo bench -p pedm --bench tls` (`PEDM_BENCH_SECS`, default 5: seconds per row;
//! `PEDM_BENCH_CLIENTS`, default 16: concurrent connections)
//!
//! * keep-alive: two real `pedmd` of this build, one `--dev` (HTTPS, TLS 1.3, ECDSA P-256
//!   certificate) and one on plain HTTP, both on loopback; N clients, each with its own
//!   connection kept alive (HTTP/1.1 for both, so only TLS differs), each call `GET /healthz`
//!   (which reads the database) as fast as answers come.
//! * handshakes: N tasks, each opening a new TCP connection, completing a full TLS 1.3
//!   handshake (no resumption) and closing it, against the HTTPS `pedmd`.

#[path = "support/mod.rs"]
mod support;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Starts `pedmd` with its stdout in a file; returns it and its URL.
fn start(dir: &Path, args: &[&str]) -> (Child, String) {
    let out = dir.join("stdout");
    let mut child = Command::new(env!("CARGO_BIN_EXE_pedmd"))
        .args(args)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .env_remove("PEDM_URL")
        .env_remove("PEDM_TOKEN")
        .env("PEDM_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::from(std::fs::File::create(&out).expect("stdout")))
        .stderr(Stdio::from(
            std::fs::File::create(dir.join("log")).expect("log"),
        ))
        .spawn()
        .expect("spawn pedmd");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        if let Some(u) = text
            .lines()
            .find_map(|l| l.strip_prefix("pedmd listening on "))
        {
            return (child, u.to_string());
        }
        if Instant::now() > deadline || matches!(child.try_wait(), Ok(Some(_))) {
            let _ = child.kill();
            panic!(
                "pedmd did not start: {}",
                std::fs::read_to_string(dir.join("log")).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

async fn keep_alive(url: &str, http: reqwest::Client, clients: u64, run: Duration) -> f64 {
    let count = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let url = format!("{url}/healthz");
    // Warm up: open the connections.
    for _ in 0..clients {
        http.get(&url).send().await.expect("warm-up");
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (http, url, count, stop) = (http.clone(), url.clone(), count.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let r = http.get(&url).send().await.expect("GET");
                assert!(r.status().is_success());
                r.bytes().await.expect("body");
                count.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    tokio::time::sleep(run).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("task");
    }
    count.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

async fn handshakes(addr: &str, ca: &Path, clients: u64, run: Duration) -> f64 {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).expect("ca") {
        roots.add(c.expect("ca cert")).expect("root");
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut cfg = cfg;
    cfg.resumption = rustls::client::Resumption::disabled();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let count = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (connector, addr, count, stop) = (
            connector.clone(),
            addr.to_string(),
            count.clone(),
            stop.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let name = ServerName::try_from("127.0.0.1").expect("name");
            while !stop.load(Ordering::Relaxed) {
                let tcp = tokio::net::TcpStream::connect(&addr)
                    .await
                    .expect("connect");
                let s = connector
                    .connect(name.clone(), tcp)
                    .await
                    .expect("handshake");
                drop(s);
                count.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    tokio::time::sleep(run).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("task");
    }
    count.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let run = Duration::from_secs(support::setting("PEDM_BENCH_SECS", 5));
    let clients = support::setting("PEDM_BENCH_CLIENTS", 16);
    let tmp = tempfile::tempdir().expect("tempdir");
    let (tls_dir, plain_dir) = (tmp.path().join("tls"), tmp.path().join("plain"));
    std::fs::create_dir_all(&tls_dir).expect("dir");
    std::fs::create_dir_all(&plain_dir).expect("dir");
    let (mut tls, tls_url) = start(&tls_dir, &["--dev", "--listen", "127.0.0.1:0"]);
    let (mut plain, plain_url) = start(&plain_dir, &["--listen", "127.0.0.1:0"]);
    let ca = tls_dir.join("data").join("tls").join("dev-ca.pem");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let pem = std::fs::read(&ca).expect("ca");
        let https = reqwest::Client::builder()
            .tls_certs_only(vec![reqwest::Certificate::from_pem(&pem).expect("pem")])
            .pool_max_idle_per_host(clients as usize)
            .build()
            .expect("client");
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(clients as usize)
            .build()
            .expect("client");
        // Alternate, so that neither side gets the quieter half of the run.
        let p1 = keep_alive(&plain_url, http.clone(), clients, run / 2).await;
        let t1 = keep_alive(&tls_url, https.clone(), clients, run / 2).await;
        let t2 = keep_alive(&tls_url, https, clients, run / 2).await;
        let p2 = keep_alive(&plain_url, http, clients, run / 2).await;
        let (t, p) = ((t1 + t2) / 2.0, (p1 + p2) / 2.0);
        eprintln!("keep-alive, {clients} connections: HTTPS {t:.0} req/s, HTTP {p:.0} req/s");
        support::bench_line(
            "tls_keepalive",
            "req/s",
            t,
            Some((p, "plain_HTTP")),
            ">=90%",
            "higher",
            &format!("GET /healthz, {clients} keep-alive connections: HTTPS vs plain HTTP"),
        );
        let addr = tls_url.trim_start_matches("https://").to_string();
        let h = handshakes(&addr, &ca, clients, run).await;
        eprintln!("full TLS 1.3 handshakes, {clients} at a time: {h:.0}/s");
        support::bench_line(
            "tls_handshakes",
            "handshakes/s",
            h,
            None,
            "-",
            "higher",
            &format!("full TLS 1.3 handshakes (ECDSA P-256, no resumption), {clients} at a time"),
        );
    });
    let _ = tls.kill();
    let _ = plain.kill();
    let _ = tls.wait();
    let _ = plain.wait();
}
