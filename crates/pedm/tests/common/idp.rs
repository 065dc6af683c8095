//! The test identity provider: panva's certified `oidc-provider` run by
//! `scripts/test-idp/idp.mjs` (installed by `scripts/install-test-deps`).

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The test IdP process.
pub struct Idp {
    child: Child,
    pub issuer: String,
    admin: reqwest::Client,
}

impl Drop for Idp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn idp_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/test-idp")
}

impl Idp {
    /// Starts `scripts/test-idp/idp.mjs` with `config` (clients, accounts).
    pub fn start(config: Value) -> Idp {
        let dir = idp_dir();
        assert!(
            dir.join("node_modules/oidc-provider").is_dir(),
            "the test IdP is not installed: run scripts/install-test-deps"
        );
        let mut child = Command::new("node")
            .arg(dir.join("idp.mjs"))
            .env("IDP_PORT", "0")
            .env("IDP_CONFIG", config.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("node (v20+) must be installed");
        let out = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let issuer = loop {
            let line = rx
                .recv_timeout(Duration::from_secs(30))
                .expect("the test IdP did not start");
            if let Some(i) = line.strip_prefix("listening ") {
                break i.to_string();
            }
        };
        Idp {
            child,
            issuer,
            admin: reqwest::Client::new(),
        }
    }

    /// Calls the IdP's test-only `/admin/PATH`.
    pub async fn admin(&self, path: &str, body: Value) -> Value {
        let r = self
            .admin
            .post(format!("{}/admin/{path}", self.issuer))
            .json(&body)
            .send()
            .await
            .expect("idp admin");
        assert!(r.status().is_success(), "idp admin {path}: {}", r.status());
        r.json().await.expect("json")
    }
}
