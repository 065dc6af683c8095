//! TLS on the wire, with the real binaries: plain HTTP only on loopback unless
//! `--insecure-http`; `pedmd --dev` serves HTTPS from its own CA that `pedm` trusts through
//! `PEDM_CA` (and only then); TLS 1.2+ only, ALPN h2; the certificate reloaded on SIGHUP or a
//! file change without dropping open connections, a bad file keeping the old one.

mod common;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// A `pedmd` started by these tests (the harness's `Server` has no `--dev`).
struct Pedmd {
    child: Child,
    url: String,
    dir: tempfile::TempDir,
}

impl Pedmd {
    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }
    fn addr(&self) -> String {
        self.url.split("://").nth(1).expect("url").to_string()
    }
    fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(self.child.id() as i32)
    }
}

impl Drop for Pedmd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pedmd_cmd(dir: &Path, args: &[&str]) -> Command {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("log"))
        .expect("log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pedmd"));
    cmd.args(args)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .env_remove("PEDM_URL")
        .env_remove("PEDM_TOKEN")
        .env("PEDM_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log));
    cmd
}

/// Starts pedmd with its stdout in a file (read whole, so that pedmd's later lines never
/// meet a closed pipe) and waits for the `pedmd listening on URL` line.
fn start_in(dir: tempfile::TempDir, args: &[&str]) -> Pedmd {
    let out_path = dir.path().join("stdout");
    let out = std::fs::File::create(&out_path).expect("stdout file");
    let mut child = pedmd_cmd(dir.path(), args)
        .stdout(Stdio::from(out))
        .spawn()
        .expect("spawn pedmd");
    let deadline = Instant::now() + Duration::from_secs(60);
    let url = loop {
        let text = std::fs::read_to_string(&out_path).unwrap_or_default();
        if let Some(u) = text
            .lines()
            .find_map(|l| l.strip_prefix("pedmd listening on "))
        {
            break u.to_string();
        }
        if Instant::now() > deadline || matches!(child.try_wait(), Ok(Some(_))) {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "pedmd did not start; log:\n{}",
                std::fs::read_to_string(dir.path().join("log")).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Pedmd { child, url, dir }
}

fn start(args: &[&str]) -> Pedmd {
    start_in(tempfile::tempdir().expect("tempdir"), args)
}

fn pedm(url: &str, token: &str, ca: Option<&Path>, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pedm"));
    cmd.args(args)
        .env("PEDM_URL", url)
        .env("PEDM_TOKEN", token)
        .env_remove("PEDM_TOKEN_FILE")
        .env_remove("PEDM_CA");
    if let Some(ca) = ca {
        cmd.env("PEDM_CA", ca);
    }
    cmd.output().expect("run pedm")
}

fn admin_token(p: &Pedmd) -> String {
    std::fs::read_to_string(p.data().join("admin.token"))
        .expect("admin token")
        .trim()
        .to_string()
}

fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn plain_http_on_a_non_loopback_address_needs_insecure_http() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = pedmd_cmd(dir.path(), &["--listen", "0.0.0.0:0"])
        .stderr(Stdio::piped())
        .output()
        .expect("run pedmd");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "pedmd started: {err}");
    assert!(
        err.contains("refusing to serve plain HTTP on 0.0.0.0:0")
            && err.contains("--insecure-http"),
        "{err}"
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("listening"),
        "it listened"
    );
    assert!(
        !dir.path().join("data").join("pedm.db").exists(),
        "it opened the database before refusing"
    );

    // Explicitly accepted: starts, and says so in its log (on every start).
    let p = start_in(dir, &["--listen", "0.0.0.0:0", "--insecure-http"]);
    assert!(p.url.starts_with("http://0.0.0.0:"), "{}", p.url);
    assert!(p.log().contains("INSECURE"), "{}", p.log());

    // Loopback plain HTTP stays allowed without the flag (the test harness relies on it).
    let q = start(&["--listen", "127.0.0.1:0"]);
    assert!(q.url.starts_with("http://127.0.0.1:"), "{}", q.url);
    assert!(!q.log().contains("INSECURE"), "{}", q.log());
}

#[test]
fn dev_serves_https_that_pedm_trusts_through_pedm_ca_only() {
    let mut p = start(&["--dev", "--listen", "127.0.0.1:0"]);
    assert!(p.url.starts_with("https://127.0.0.1:"), "{}", p.url);
    let tls = p.data().join("tls");
    let ca = tls.join("dev-ca.pem");
    for key in ["dev-ca.key", "server.key"] {
        let mode = std::fs::metadata(tls.join(key))
            .expect(key)
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{key}");
    }
    let token = admin_token(&p);

    let ok = pedm(&p.url, &token, Some(&ca), &["whoami", "--json"]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("\"admin\""));

    let bad = pedm(&p.url, &token, None, &["whoami"]);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success());
    assert!(
        err.contains("not trusted") && err.contains("PEDM_CA") && err.contains("UnknownIssuer"),
        "{err}"
    );

    // A CA file that is no certificate: named, not silently ignored.
    let junk = p.dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate\n").expect("write");
    let bad = pedm(&p.url, &token, Some(&junk), &["whoami"]);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success());
    assert!(err.contains("junk.pem") && err.contains("PEDM_CA"), "{err}");

    // Restart on the same data: the CA is reused, so the exported PEDM_CA still works.
    let ca_before = std::fs::read(&ca).expect("ca");
    let port = p.addr().rsplit(':').next().expect("port").to_string();
    let _ = p.child.kill();
    let _ = p.child.wait();
    let dir = std::mem::replace(&mut p.dir, tempfile::tempdir().expect("tempdir"));
    let p2 = start_in(dir, &["--dev", "--listen", &format!("127.0.0.1:{port}")]);
    assert_eq!(
        std::fs::read(&ca).expect("ca"),
        ca_before,
        "the CA was replaced"
    );
    let ok = pedm(&p2.url, &token, Some(&ca), &["whoami"]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
}

// --- a TLS client of our own, to look at what the server negotiates ---

fn roots(ca_pem: &Path) -> Arc<rustls::RootCertStore> {
    let mut r = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca_pem).expect("ca") {
        r.add(c.expect("ca cert")).expect("add");
    }
    Arc::new(r)
}

fn client_config(
    ca_pem: &Path,
    versions: &[&'static rustls::SupportedProtocolVersion],
    alpn: &[&[u8]],
) -> Arc<rustls::ClientConfig> {
    let mut c = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_protocol_versions(versions)
    .expect("versions")
    .with_root_certificates(roots(ca_pem))
    .with_no_client_auth();
    c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(c)
}

async fn connect(
    addr: &str,
    cfg: Arc<rustls::ClientConfig>,
) -> std::io::Result<TlsStream<tokio::net::TcpStream>> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = ServerName::try_from("127.0.0.1").expect("name");
    TlsConnector::from(cfg).connect(name, tcp).await
}

fn peer_cert(s: &TlsStream<tokio::net::TcpStream>) -> Vec<u8> {
    s.get_ref().1.peer_certificates().expect("peer certs")[0].to_vec()
}

/// One HTTP/1.1 request on a kept-alive connection; returns the status and body.
async fn get(s: &mut TlsStream<tokio::net::TcpStream>, path: &str) -> (u16, String) {
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    let head_end = loop {
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).await.expect("read");
        assert!(
            n > 0,
            "connection closed: {}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let status: u16 = head[9..12].parse().expect("status");
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .expect("content-length");
    while buf.len() < head_end + len {
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).await.expect("read");
        assert!(n > 0, "connection closed mid-body");
        buf.extend_from_slice(&chunk[..n]);
    }
    (
        status,
        String::from_utf8_lossy(&buf[head_end..head_end + len]).to_string(),
    )
}

/// A ClientHello that offers TLS 1.1 at most (no supported_versions extension).
fn tls11_client_hello() -> Vec<u8> {
    let mut body = vec![0x03, 0x02]; // client_version TLS 1.1
    body.extend_from_slice(&[7u8; 32]); // random
    body.push(0); // no session id
    body.extend_from_slice(&[0x00, 0x06, 0xc0, 0x09, 0xc0, 0x13, 0x00, 0x2f]); // suites
    body.extend_from_slice(&[0x01, 0x00]); // compression: null
    let ext: [u8; 22] = [
        0x00, 0x0a, 0x00, 0x04, 0x00, 0x02, 0x00, 0x17, // supported_groups: P-256
        0x00, 0x0b, 0x00, 0x02, 0x01, 0x00, // ec_point_formats: uncompressed
        0x00, 0x0d, 0x00, 0x04, 0x00, 0x02, 0x04, 0x03, // signature_algorithms
    ];
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);
    let mut hs = vec![0x01, 0x00];
    hs.extend_from_slice(&(body.len() as u16).to_be_bytes());
    hs.extend_from_slice(&body);
    let mut rec = vec![0x16, 0x03, 0x01];
    rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    rec.extend_from_slice(&hs);
    rec
}

#[tokio::test(flavor = "multi_thread")]
async fn only_tls_1_2_and_up_with_alpn_h2() {
    let p = start(&["--dev", "--listen", "127.0.0.1:0"]);
    let ca = p.data().join("tls").join("dev-ca.pem");
    let addr = p.addr();

    // TLS 1.1: a fatal protocol_version alert (70), no ServerHello.
    let mut raw = std::net::TcpStream::connect(&addr).expect("connect");
    raw.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    raw.write_all(&tls11_client_hello()).expect("hello");
    let mut answer = [0u8; 7];
    raw.read_exact(&mut answer).expect("an answer");
    assert_eq!(answer[0], 0x15, "not an alert record: {answer:?}");
    assert_eq!(
        &answer[5..],
        &[2, 70],
        "not fatal protocol_version: {answer:?}"
    );

    // TLS 1.2 alone works (so the refusal above is about the version).
    let mut s = connect(
        &addr,
        client_config(&ca, &[&rustls::version::TLS12], &[b"http/1.1"]),
    )
    .await
    .expect("TLS 1.2");
    assert_eq!(
        s.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    assert_eq!(get(&mut s, "/healthz").await.0, 200);

    // Default client: TLS 1.3, and h2 chosen over http/1.1.
    let s = connect(
        &addr,
        client_config(
            &ca,
            &[&rustls::version::TLS13, &rustls::version::TLS12],
            &[b"h2", b"http/1.1"],
        ),
    )
    .await
    .expect("TLS 1.3");
    assert_eq!(
        s.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));

    // And a request served over HTTP/2 (curl: installed by scripts/install-test-deps).
    let out = Command::new("curl")
        .args(["-sS", "--http2", "--cacert"])
        .arg(&ca)
        .args(["-o", "/dev/null", "-w", "%{http_code} %{http_version}"])
        .arg(format!("{}/healthz", p.url))
        .output()
        .expect("curl");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "200 2",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and certificates for 127.0.0.1 issued from it, written by the test.
struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pem: PathBuf,
}

impl TestCa {
    fn new(dir: &Path) -> TestCa {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(DnType::CommonName, "test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).expect("ca");
        let pem = dir.join("ca.pem");
        std::fs::write(&pem, cert.pem()).expect("write");
        TestCa {
            issuer: Issuer::new(params, key),
            pem,
        }
    }

    /// Writes a server certificate named `cn` and its key to `cert`/`key`; returns its DER.
    fn issue(&self, cn: &str, cert: &Path, key: &Path) -> Vec<u8> {
        let k = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("params");
        params.distinguished_name.push(DnType::CommonName, cn);
        let c = params.signed_by(&k, &self.issuer).expect("sign");
        std::fs::write(key, k.serialize_pem()).expect("key");
        std::fs::write(cert, c.pem()).expect("cert");
        c.der().to_vec()
    }
}

fn start_with_tls_files(watch_interval: &str) -> (Pedmd, TestCa, PathBuf, PathBuf, Vec<u8>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new(dir.path());
    let (cert, key) = (dir.path().join("server.pem"), dir.path().join("server.key"));
    let first = ca.issue("first", &cert, &key);
    let conf = dir.path().join("pedmd.toml");
    std::fs::write(
        &conf,
        format!(
            "[tls]\ncert = {:?}\nkey = {:?}\nwatch_interval = {watch_interval:?}\n",
            cert.display().to_string(),
            key.display().to_string()
        ),
    )
    .expect("config");
    let conf = conf.display().to_string();
    let p = start_in(dir, &["--listen", "127.0.0.1:0", "--config", &conf]);
    assert!(p.url.starts_with("https://"), "{}", p.url);
    (p, ca, cert, key, first)
}

async fn served_cert(addr: &str, ca: &Path) -> Vec<u8> {
    let s = connect(
        addr,
        client_config(ca, &[&rustls::version::TLS13], &[b"http/1.1"]),
    )
    .await
    .expect("handshake");
    peer_cert(&s)
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_swaps_the_certificate_without_dropping_connections() {
    // A long watch interval: only SIGHUP reloads here.
    let (p, ca, cert, key, first) = start_with_tls_files("1h");
    let addr = p.addr();
    let cfg = client_config(&ca.pem, &[&rustls::version::TLS13], &[b"http/1.1"]);
    let mut open = connect(&addr, cfg.clone()).await.expect("handshake");
    assert_eq!(peer_cert(&open), first);
    assert_eq!(get(&mut open, "/healthz").await.0, 200);

    let second = ca.issue("second", &cert, &key);
    assert_eq!(
        served_cert(&addr, &ca.pem).await,
        first,
        "reloaded without a signal"
    );
    nix::sys::signal::kill(p.pid(), nix::sys::signal::Signal::SIGHUP).expect("SIGHUP");
    let deadline = Instant::now() + Duration::from_secs(20);
    while served_cert(&addr, &ca.pem).await != second {
        assert!(
            Instant::now() < deadline,
            "new handshakes never saw the new certificate"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The connection opened before the reload still serves requests.
    let (status, body) = get(&mut open, "/healthz").await;
    assert_eq!(status, 200, "{body}");
    assert!(p.log().contains("TLS certificate reloaded"), "{}", p.log());

    // A broken file: the previous certificate stays, and the failure is logged loudly.
    std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\nnot base64\n").expect("write");
    nix::sys::signal::kill(p.pid(), nix::sys::signal::Signal::SIGHUP).expect("SIGHUP");
    eventually("the failed reload is logged", || {
        p.log().contains("TLS certificate NOT reloaded")
    });
    assert_eq!(served_cert(&addr, &ca.pem).await, second);
    assert_eq!(get(&mut open, "/healthz").await.0, 200);
    // The process survived both signals.
    assert!(std::net::TcpStream::connect(&addr).is_ok());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_changed_certificate_file_is_picked_up_without_a_signal() {
    let (p, ca, cert, key, first) = start_with_tls_files("1s");
    let addr = p.addr();
    assert_eq!(served_cert(&addr, &ca.pem).await, first);
    let second = ca.issue("second", &cert, &key);
    let deadline = Instant::now() + Duration::from_secs(20);
    while served_cert(&addr, &ca.pem).await != second {
        assert!(
            Instant::now() < deadline,
            "the file change was not picked up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(p.log().contains("file change"), "{}", p.log());
}

#[test]
fn tls_config_errors_are_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = dir.path().join("pedmd.toml");
    std::fs::write(&conf, "[tls]\ncert = \"/nonexistent/cert.pem\"\n").expect("config");
    let out = pedmd_cmd(dir.path(), &["--listen", "127.0.0.1:0"])
        .arg("--config")
        .arg(&conf)
        .stderr(Stdio::piped())
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("tls.key: missing"), "{err}");

    std::fs::write(
        &conf,
        "[tls]\ncert = \"/nonexistent/cert.pem\"\nkey = \"/nonexistent/key.pem\"\n",
    )
    .expect("config");
    let out = pedmd_cmd(dir.path(), &["--listen", "127.0.0.1:0"])
        .arg("--config")
        .arg(&conf)
        .stderr(Stdio::piped())
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("/nonexistent/cert.pem"), "{err}");
}
