//! The test identity provider: panva's certified `oidc-provider` run by
//! `scripts/test-idp/idp.mjs` (installed by `scripts/install-test-deps`).

use super::{Options, Server};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
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

// ------------------------------------------- the corp provider and `pedm login` against it

pub const SECRET: &str = "test-client-secret-4f1c-0123456789abcdef";

/// The test IdP with the `pedm` client and three people.
pub fn corp_idp() -> Idp {
    Idp::start(json!({
        "clients": [{
            "client_id": "pedm",
            "client_secret": SECRET,
            "application_type": "native",
            "redirect_uris": ["http://127.0.0.1/callback"],
            "grant_types": ["authorization_code", "refresh_token",
                "urn:ietf:params:oauth:grant-type:device_code"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "client_secret_basic",
        }],
        "accounts": {
            "alice": { "preferred_username": "alice", "email": "alice@example.com",
                       "groups": ["ops", "staff"] },
            "bob": { "preferred_username": "bob", "email": "bob@example.com",
                     "groups": ["staff"] },
            "carol": { "preferred_username": "carol", "email": "carol@example.com",
                       "groups": [] },
        }
    }))
}

impl Idp {
    /// The `[[auth.oidc]]` section for pedmd naming this provider as `corp`.
    pub fn pedmd_config(&self) -> String {
        format!(
            r#"
[[auth.oidc]]
name = "corp"
issuer = "{}"
client_id = "pedm"
client_secret_env = "PEDM_TEST_OIDC_SECRET"
session_lifetime = "8h"
"#,
            self.issuer
        )
    }
}

pub fn server_for(idp: &Idp) -> Server {
    Server::start_with(Options {
        config: Some(idp.pedmd_config()),
        env: vec![("PEDM_TEST_OIDC_SECRET".into(), SECRET.into())],
        ..Default::default()
    })
}

/// A `pedm` run whose stderr is read as it comes (for the URL or the user code).
pub struct CliRun {
    child: Child,
    lines: mpsc::Receiver<String>,
    pub seen: Vec<String>,
}

/// Runs the real `pedm` with no token, its session file under `home`.
pub fn pedm(url: &str, home: &Path, args: &[&str]) -> CliRun {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pedm"))
        .args(args)
        .env("PEDM_URL", url)
        .env_remove("PEDM_TOKEN")
        .env_remove("PEDM_TOKEN_FILE")
        .env("XDG_CONFIG_HOME", home)
        .env("PATH", "/usr/bin:/bin")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("pedm");
    let err = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    CliRun {
        child,
        lines: rx,
        seen: vec![],
    }
}

impl CliRun {
    /// The first stderr line `pick` accepts.
    pub fn wait_line(&mut self, what: &str, pick: impl Fn(&str) -> Option<String>) -> String {
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|_| panic!("pedm printed no {what}; stderr: {:?}", self.seen));
            self.seen.push(line.clone());
            if let Some(v) = pick(&line) {
                return v;
            }
        }
    }

    /// Waits for the exit: (success, stdout, stderr).
    pub fn finish(mut self) -> (bool, String, String) {
        let mut out = String::new();
        if let Some(mut o) = self.child.stdout.take() {
            use std::io::Read;
            let _ = o.read_to_string(&mut out);
        }
        let status = self.child.wait().expect("wait");
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(l);
        }
        (status.success(), out, self.seen.join("\n"))
    }
}

/// The browser: a cookie jar that follows the provider's redirects and stops at the
/// redirect to the CLI's loopback callback, which it returns.
pub fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::custom(|a| {
            if a.url().path() == "/callback" {
                a.stop()
            } else if a.previous().len() > 10 {
                a.error("too many redirects")
            } else {
                a.follow()
            }
        }))
        .build()
        .expect("browser")
}

/// Logs `account` in at the provider through the authorisation URL; returns the callback URL
/// the provider sends the browser to.
pub async fn authorize(idp: &Idp, account: &str, url: &str) -> reqwest::Url {
    idp.admin("login-as", json!({ "account": account })).await;
    let r = browser().get(url).send().await.expect("authorize");
    assert!(
        r.status().is_redirection(),
        "authorize ended with {}",
        r.status()
    );
    let loc = r
        .headers()
        .get("location")
        .and_then(|l| l.to_str().ok())
        .expect("redirect to the callback");
    reqwest::Url::parse(loc).expect("callback url")
}

/// `pedm login` (code flow) as `account`, the browser part played here. Returns the CLI's
/// (success, stdout, stderr).
pub async fn login_code(
    s: &Server,
    idp: &Idp,
    home: &Path,
    account: &str,
) -> (bool, String, String) {
    let mut run = pedm(&s.url, home, &["login", "--no-browser", "--json"]);
    let url = run.wait_line("authorisation URL", |l| {
        l.starts_with("http").then(|| l.to_string())
    });
    let cb = authorize(idp, account, &url).await;
    // The CLI answers the redirect; what it does next is its business.
    let _ = reqwest::get(cb).await;
    run.finish()
}

pub fn session_token(home: &Path) -> String {
    let f = home.join("pedm/session");
    let mode = std::fs::metadata(&f)
        .expect("session file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "session file mode");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(f).unwrap()).unwrap();
    v["token"].as_str().expect("token").to_string()
}
