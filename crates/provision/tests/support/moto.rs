//! A real AWS API emulator for the tests: `moto` in server mode (PyPI, installed into
//! target/aws-venv by scripts/install-aws-emulator), on a free loopback port, behind a TCP
//! relay the test can cut (connections refused, open ones dropped) and restore without
//! losing moto's state, as an AWS endpoint that became unreachable would look.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::task::JoinSet;

/// moto's default account, and the access key it accepts (any).
pub const ACCOUNT: &str = "123456789012";

/// The virtualenv the install script made.
pub fn venv_bin(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let bin = target.join("aws-venv/bin").join(name);
    assert!(
        bin.is_file(),
        "{} is not installed at {}: run scripts/install-test-deps",
        name,
        bin.display()
    );
    bin
}

pub struct Moto {
    _child: Child,
    /// moto's own address.
    backend: String,
    /// The relay's address: what pedm is configured with.
    relay_port: u16,
    relay: Arc<Mutex<Option<JoinSet<()>>>>,
}

impl Moto {
    pub async fn start() -> Moto {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
            l.local_addr().expect("its address").port()
        };
        let mut child = Command::new(venv_bin("moto_server"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            // AWS's managed policies (AdministratorAccess, ReadOnlyAccess, …), as in an account.
            .env("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("starting moto_server");
        // Werkzeug says when it listens.
        let mut lines = BufReader::new(child.stderr.take().expect("moto's stderr")).lines();
        let mut seen = Vec::new();
        loop {
            match lines.next_line().await.expect("reading moto's stderr") {
                Some(l) if l.contains("Running on") => break,
                Some(l) => seen.push(l),
                None => panic!("moto_server exited before listening: {}", seen.join("\n")),
            }
        }
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let relay_port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
            l.local_addr().expect("its address").port()
        };
        let m = Moto {
            _child: child,
            backend: format!("127.0.0.1:{port}"),
            relay_port,
            relay: Arc::new(Mutex::new(None)),
        };
        m.up().await;
        m
    }

    /// The endpoint pedm and the test's clients use (through the relay).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.relay_port)
    }

    /// moto itself, bypassing the relay (for checking the target while pedm's way is cut).
    pub fn direct_url(&self) -> String {
        format!("http://{}", self.backend)
    }

    /// Cuts the way to moto: new connections are refused, open ones dropped.
    pub fn down(&self) {
        if let Some(mut set) = self.relay.lock().expect("relay").take() {
            set.abort_all();
        }
    }

    /// Restores the way to moto on the same port.
    pub async fn up(&self) {
        let listener = TcpListener::bind(("127.0.0.1", self.relay_port))
            .await
            .expect("binding the relay's port");
        let backend = self.backend.clone();
        let mut set = JoinSet::new();
        let conns = Arc::new(Mutex::new(JoinSet::new()));
        let held = conns.clone();
        set.spawn(async move {
            // The connection tasks live as long as the accept loop (aborted together).
            let _held = held;
            while let Ok((mut inbound, _)) = listener.accept().await {
                let backend = backend.clone();
                conns.lock().expect("connections").spawn(async move {
                    if let Ok(mut out) = TcpStream::connect(&backend).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
            }
        });
        *self.relay.lock().expect("relay") = Some(set);
    }

    /// An SDK configuration for the test's own calls to moto (direct, not through the relay).
    pub async fn sdk(&self) -> aws_config::SdkConfig {
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url(self.direct_url())
            .credentials_provider(aws_sdk_sts::config::Credentials::new(
                "testing", "testing", None, None, "tests",
            ))
            .load()
            .await
    }
}

/// A credentials file moto accepts, for pedm's `credentials_file`.
pub fn credentials_file(dir: &std::path::Path) -> PathBuf {
    let path = dir.join("aws-credentials");
    std::fs::write(
        &path,
        "[default]\naws_access_key_id = testing\naws_secret_access_key = testing\n",
    )
    .expect("writing the credentials file");
    path
}
