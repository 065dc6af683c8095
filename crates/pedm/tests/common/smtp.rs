//! A real SMTP server for the mail tests: aiosmtpd (PyPI, installed into target/smtp-venv by
//! scripts/install-test-deps) run by scripts/smtp-server/smtp_server.py on a loopback port,
//! with STARTTLS required (a certificate from a CA made here) and AUTH required. Each mail it
//! receives arrives here as an event.

use base64::Engine;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const USER: &str = "pedm-relay";
pub const PASSWORD: &str = "relay-secret-1";

fn venv_python() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let bin = target.join("smtp-venv/bin/python");
    assert!(
        bin.is_file(),
        "aiosmtpd is not installed at {}: run scripts/install-test-deps",
        bin.display()
    );
    bin
}

/// One mail as the server received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub to: Vec<String>,
    pub raw: String,
}

impl Received {
    /// A header's value (unfolded).
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.raw.split("\r\n\r\n").next()?;
        let unfolded = head.replace("\r\n ", " ").replace("\r\n\t", " ");
        unfolded.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }

    /// The decoded body of the part of `content_type` (`text/plain`, `text/html`).
    pub fn part(&self, content_type: &str) -> String {
        for part in self.raw.split("\r\n--") {
            let Some((head, body)) = part.split_once("\r\n\r\n") else {
                continue;
            };
            let head_l = head.to_ascii_lowercase();
            if !head_l.contains(&format!("content-type: {content_type}")) {
                continue;
            }
            let body = body.trim_end_matches("\r\n").trim_end_matches('-');
            if head_l.contains("content-transfer-encoding: quoted-printable") {
                return quoted_printable(body);
            }
            if head_l.contains("content-transfer-encoding: base64") {
                let compact: String = body.split_whitespace().collect();
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(compact)
                    .expect("base64 part");
                return String::from_utf8(bytes).expect("UTF-8 part");
            }
            return body.to_string();
        }
        panic!("no {content_type} part in:\n{}", self.raw)
    }
}

fn quoted_printable(s: &str) -> String {
    let s = s.replace("=\r\n", "");
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'='
            && let Some(h) = s.get(i + 1..i + 3)
            && let Ok(v) = u8::from_str_radix(h, 16)
        {
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).expect("UTF-8 after quoted-printable")
}

pub struct MailServer {
    child: Option<Child>,
    pub port: u16,
    pub ca: PathBuf,
    password_file: PathBuf,
    rx: Events,
    _dir: tempfile::TempDir,
}

impl MailServer {
    /// Starts the server on `port` (a free one when `None`) and waits until it listens.
    pub fn start(port: Option<u16>) -> MailServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = write_certificates(dir.path());
        let password_file = dir.path().join("smtp-password");
        std::fs::write(&password_file, format!("{PASSWORD}\n")).expect("password file");
        std::fs::create_dir(dir.path().join("mail")).expect("mail dir");
        let port = port.unwrap_or_else(super::free_port);
        let (child, rx) = spawn(dir.path(), port);
        MailServer {
            child: Some(child),
            port,
            ca,
            password_file,
            rx,
            _dir: dir,
        }
    }

    /// Stops the server (the port goes quiet: a relay that is down).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port, with the same certificate and password.
    pub fn start_again(&mut self) {
        self.stop();
        let (child, rx) = spawn(self._dir.path(), self.port);
        self.child = Some(child);
        self.rx = rx;
    }

    /// `[notify.email]` for pedmd, its console at `console_url`.
    pub fn config(&self, console_url: &str) -> String {
        self.config_with(console_url, &self.password_file)
    }

    pub fn config_with(&self, console_url: &str, password_file: &Path) -> String {
        format!(
            "[notify.email]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"starttls\"\n\
             username = \"{USER}\"\npassword_file = \"{}\"\nfrom = \"pedm <pedm@example.com>\"\n\
             ca_file = \"{}\"\nconsole_url = \"{console_url}\"\n",
            self.port,
            password_file.display(),
            self.ca.display()
        )
    }

    /// The next event the server announces (a mail, or a failed AUTH), within `limit`.
    pub async fn next_event(&mut self, limit: Duration) -> serde_json::Value {
        tokio::time::timeout(limit, self.rx.recv())
            .await
            .expect("no SMTP event in time")
            .expect("the SMTP server stopped")
    }

    /// The next mail received, within 30 s.
    pub async fn next_mail(&mut self) -> Received {
        loop {
            let v = self.next_event(Duration::from_secs(30)).await;
            let Some(file) = v["file"].as_str() else {
                continue;
            };
            let raw = std::fs::read_to_string(file).expect("mail file");
            let to = v["to"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|t| t.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            return Received { to, raw };
        }
    }
}

impl Drop for MailServer {
    fn drop(&mut self) {
        self.stop();
    }
}

type Events = tokio::sync::mpsc::UnboundedReceiver<serde_json::Value>;

/// Runs smtp_server.py on `port` with the certificate and mail directory in `dir`; returns
/// once it listens, with the stream of what it announces.
fn spawn(dir: &Path, port: u16) -> (Child, Events) {
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/smtp-server/smtp_server.py");
    let mut child = Command::new(venv_python())
        .arg(script)
        .args(["--port", &port.to_string()])
        .arg("--dir")
        .arg(dir.join("mail"))
        .arg("--cert")
        .arg(dir.join("server.pem"))
        .arg("--key")
        .arg(dir.join("server.key"))
        .args(["--user", USER, "--password", PASSWORD])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start smtp_server.py");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut first = String::new();
    out.read_line(&mut first).expect("read");
    assert_eq!(first.trim(), "ready", "the SMTP server did not start");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in out.lines() {
            let Ok(line) = line else { return };
            if let Ok(v) = serde_json::from_str(&line)
                && tx.send(v).is_err()
            {
                return;
            }
        }
    });
    (child, rx)
}

/// A CA and a server certificate for 127.0.0.1 signed by it: `ca.pem`, `server.pem`,
/// `server.key` in `dir`. Returns the CA's path.
fn write_certificates(dir: &Path) -> PathBuf {
    let ca_key = KeyPair::generate().expect("key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.distinguished_name
        .push(DnType::CommonName, "mail test CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).expect("ca");
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().expect("key");
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
    p.subject_alt_names = vec![SanType::IpAddress([127, 0, 0, 1].into())];
    p.distinguished_name.push(DnType::CommonName, "127.0.0.1");
    let cert = p.signed_by(&key, &issuer).expect("sign");
    std::fs::write(dir.join("server.pem"), cert.pem()).expect("write");
    std::fs::write(dir.join("server.key"), key.serialize_pem()).expect("write");
    let ca_path = dir.join("ca.pem");
    std::fs::write(&ca_path, ca_cert.pem()).expect("write");
    ca_path
}
