//! Starts the real `pedmd` binary on a free port with its own data directory, and runs the real
//! `pedm` binary against it.

#![allow(dead_code)]

pub mod agent;
pub mod browser;
pub mod idp;
pub mod load;
pub mod slack;
pub mod smtp;
pub mod spawn;
pub mod sshd;

use pedm_api::Client;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub struct Server {
    child: Option<Child>,
    pub url: String,
    pub admin_token: String,
    pub data_dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    database_url: Option<String>,
    env: Vec<(String, String)>,
    config_file: Option<PathBuf>,
    /// `--dev`: HTTPS from pedmd's own CA, which clients here trust.
    dev: bool,
    /// (namespace, listen host): see [`Options::netns`].
    netns: Option<(String, String)>,
}

#[derive(Default)]
pub struct Options {
    pub database_url: Option<String>,
    pub env: Vec<(String, String)>,
    /// For a second instance on a shared database: the first one wrote the admin token.
    pub admin_token: Option<String>,
    /// TOML configuration text, written to a file and passed with --config.
    pub config: Option<String>,
    /// `pedmd --dev`: HTTPS with its own CA (clients made here trust it).
    pub dev: bool,
    /// Listen on this port (for a configuration that must name pedmd's own address before
    /// it starts); a free one when `None`.
    pub port: Option<u16>,
    /// Run pedmd in this network namespace (`ip netns exec`), listening on `listen_host`
    /// (plain HTTP, `--insecure-http`): for tests that cut its links.
    pub netns: Option<(String, String)>,
}

impl Server {
    pub fn start() -> Server {
        Self::start_with(Options::default())
    }

    pub fn start_with(opts: Options) -> Server {
        Self::try_start_with(opts).unwrap_or_else(|log| panic!("pedmd did not start; log:\n{log}"))
    }

    /// [`Self::start_with`], but pedmd's log when it does not start (for refusals at start).
    pub fn try_start_with(opts: Options) -> Result<Server, String> {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data_dir = tmp.path().join("data");
        let mut s = Server {
            child: None,
            url: String::new(),
            admin_token: String::new(),
            data_dir,
            _tmp: Some(tmp),
            database_url: opts.database_url,
            env: opts.env,
            config_file: None,
            dev: opts.dev,
            netns: opts.netns,
        };
        if let Some(text) = &opts.config {
            let f = s.data_dir.with_extension("toml");
            std::fs::write(&f, text).expect("config file");
            s.config_file = Some(f);
        }
        s.try_spawn(opts.port)?;
        s.admin_token = match opts.admin_token {
            Some(t) => t,
            None => std::fs::read_to_string(s.data_dir.join("admin.token"))
                .expect("admin token file")
                .trim()
                .to_string(),
        };
        Ok(s)
    }

    /// Starts pedmd; on `port` if given (to come back on the same URL after a restart).
    fn spawn(&mut self, port: Option<u16>) {
        if let Err(log) = self.try_spawn(port) {
            panic!("pedmd did not start; log:\n{log}");
        }
    }

    fn try_spawn(&mut self, port: Option<u16>) -> Result<(), String> {
        let host = self.netns.as_ref().map_or("127.0.0.1", |(_, h)| h.as_str());
        let listen = format!("{host}:{}", port.unwrap_or(0));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data_dir.with_extension("log"))
            .expect("log file");
        let mut cmd = match &self.netns {
            Some((ns, _)) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, env!("CARGO_BIN_EXE_pedmd")])
                    .arg("--insecure-http");
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_pedmd")),
        };
        cmd.arg("--listen")
            .arg(&listen)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .env_remove("PEDM_URL")
            .env_remove("PEDM_TOKEN")
            .env("PEDM_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        if let Some(db) = &self.database_url {
            cmd.arg("--database-url").arg(db);
        }
        if self.dev {
            cmd.arg("--dev");
        }
        if let Some(f) = &self.config_file {
            cmd.arg("--config").arg(f);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn pedmd");
        let Some(url) = spawn::wait_listening(&mut child, Duration::from_secs(60)) else {
            let _ = child.wait();
            return Err(self.log());
        };
        self.url = url;
        self.child = Some(child);
        Ok(())
    }

    /// Like [`Self::start_again`], but returns pedmd's log when it does not start.
    pub fn try_start_again(&mut self) -> Result<(), String> {
        let port = self.port();
        self.try_spawn(Some(port))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.with_extension("log")).unwrap_or_default()
    }

    pub fn port(&self) -> u16 {
        self.url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port")
    }

    /// Graceful stop (SIGTERM), waiting for exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                if Instant::now() > deadline {
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Abrupt stop (SIGKILL), as in a crash or power loss of the process.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Restarts with this configuration text (if given) and these extra environment
    /// variables: for settings that must be off while an installation is set up.
    pub fn reconfigure(&mut self, config: Option<&str>, env: &[(&str, &str)]) {
        if let Some(text) = config {
            let f = self.data_dir.with_extension("toml");
            std::fs::write(&f, text).expect("config file");
            self.config_file = Some(f);
        }
        self.env
            .extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        self.restart();
    }

    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    /// Starts again after `stop`/`kill`, on the same port and data.
    pub fn start_again(&mut self) {
        let port = self.port();
        self.spawn(Some(port));
    }

    pub fn admin(&self) -> Client {
        self.client(&self.admin_token)
    }

    pub fn client(&self, token: &str) -> Client {
        Client::with_ca(&self.url, Some(token.to_string()), self.ca().as_deref()).expect("client")
    }

    pub fn anonymous(&self) -> Client {
        Client::with_ca(&self.url, None, self.ca().as_deref()).expect("client")
    }

    /// The CA of `--dev` (`None` on plain HTTP).
    pub fn ca(&self) -> Option<PathBuf> {
        self.dev
            .then(|| self.data_dir.join("tls").join("dev-ca.pem"))
    }

    /// Runs the real `pedm` binary with PEDM_URL and PEDM_TOKEN set.
    pub fn cli(&self, token: &str, args: &[&str]) -> Output {
        match self.ca() {
            None => pedm_cli(&self.url, token, args),
            Some(ca) => Command::new(env!("CARGO_BIN_EXE_pedm"))
                .args(args)
                .env("PEDM_URL", &self.url)
                .env("PEDM_TOKEN", token)
                .env("PEDM_CA", ca)
                .env_remove("PEDM_TOKEN_FILE")
                .stdin(Stdio::null())
                .output()
                .expect("run pedm"),
        }
    }

    pub fn data_path(&self) -> &Path {
        &self.data_dir
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port nothing listens on now (for [`Options::port`]).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

pub fn pedm_cli(url: &str, token: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pedm"))
        .args(args)
        .env("PEDM_URL", url)
        .env("PEDM_TOKEN", token)
        .env_remove("PEDM_TOKEN_FILE")
        .stdin(Stdio::null())
        .output()
        .expect("run pedm")
}

/// Runs the real `pedm` with no server to reach and no token (offline verification).
pub fn offline(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pedm"))
        .args(args)
        .env("PEDM_URL", "http://127.0.0.1:9")
        .env_remove("PEDM_TOKEN")
        .env_remove("PEDM_TOKEN_FILE")
        .output()
        .expect("run pedm")
}

/// `pedm audit verify --file FILE --pubkey KEY`, offline, with `extra` flags.
pub fn verify_file(file: &Path, key: &str, extra: &[&str]) -> Output {
    let f = file.to_str().expect("a UTF-8 path");
    let mut args = vec!["audit", "verify", "--file", f, "--pubkey", key];
    args.extend_from_slice(extra);
    offline(&args)
}

/// Signs a checkpoint of the whole log now (`pedm audit checkpoint`); its size.
pub fn sign_checkpoint(s: &Server) -> u64 {
    let o = s.cli(&s.admin_token, &["--json", "audit", "checkpoint"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Vec<serde_json::Value> = serde_json::from_str(&stdout(&o)).expect("json");
    v[0]["size"].as_u64().expect("size")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Polls `check` until it returns `Some`, for state that changes on the server's own schedule
/// (expiry). Fails the test after `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A KEK file (base64 of 32 random bytes, mode 0600) in `dir`.
pub fn kek_file(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    use base64::Engine as _;
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let mut raw = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut raw))
        .expect("random bytes");
    let path = dir.join(name);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .expect("kek file");
    std::io::Write::write_all(
        &mut f,
        base64::engine::general_purpose::STANDARD
            .encode(raw)
            .as_bytes(),
    )
    .expect("write kek");
    path
}

/// The configuration line that gives pedmd the KEK file `path`.
pub fn with_kek(path: &std::path::Path) -> String {
    format!("key_encryption_key = {path:?}\n")
}

/// Creates a user and returns a token for it.
pub async fn user_with_token(s: &Server, name: &str, admin: bool) -> String {
    let a = s.admin();
    a.create_user(&pedm_api::CreateUser {
        name: name.into(),
        display_name: None,
        email: None,
        admin,
    })
    .await
    .expect("create user");
    a.create_token(&pedm_api::CreateToken {
        user: Some(name.into()),
        ..Default::default()
    })
    .await
    .expect("create token")
    .token
}

/// A host target `web1` with roles `root` (needs approval, max 1h) and `docker`
/// (auto-approved, max 1h).
pub async fn standard_targets(s: &Server) {
    let a = s.admin();
    a.create_target(&pedm_api::CreateTarget {
        name: "web1".into(),
        kind: pedm_api::TargetKind::Host,
        description: Some("web server".into()),
        labels: [("env".to_string(), "prod".to_string())].into(),
    })
    .await
    .expect("target");
    for (role, auto) in [("root", false), ("docker", true)] {
        a.create_role(
            "web1",
            &pedm_api::CreateRole {
                auto_approve: auto,
                run_as: Some("root".into()),
                ..pedm_api::CreateRole::new(role, "1h")
            },
        )
        .await
        .expect("role");
    }
}

pub fn req(target: &str, role: &str, duration: &str, why: &str) -> pedm_api::CreateRequest {
    pedm_api::CreateRequest {
        target: target.into(),
        role: role.into(),
        duration: duration.into(),
        justification: why.into(),
        task: None,
        ticket: None,
        break_glass: false,
        start: None,
    }
}

/// Lets real time pass until just after `at`, for scenarios where the server must be down
/// across a deadline (this is the scenario, not a synchronisation).
pub async fn sleep_past(at: jiff::Timestamp) {
    let wait = at.duration_since(jiff::Timestamp::now());
    if wait.is_positive() {
        tokio::time::sleep(wait.unsigned_abs() + Duration::from_millis(200)).await;
    }
}

/// Applies the policies in force as `edit` changes them.
pub async fn edit_policies(
    admin: &Client,
    comment: &str,
    edit: impl FnOnce(&mut Vec<pedm_api::PolicySource>),
) {
    let mut sources = admin.policies().await.unwrap().sources;
    edit(&mut sources);
    admin
        .apply_policies(&pedm_api::ApplyPolicies {
            sources,
            comment: Some(comment.into()),
        })
        .await
        .unwrap();
}

/// Applies the policies in force with the default `request-with-approval` permit's text
/// changed: each `(from, to)` replaced.
pub async fn edit_approval_policy(admin: &Client, comment: &str, replace: &[(&str, &str)]) {
    edit_policies(admin, comment, |sources| {
        let p = sources
            .iter_mut()
            .find(|p| p.text.contains("@id(\"request-with-approval\")"))
            .expect("the default policy");
        for (from, to) in replace {
            assert!(p.text.contains(from), "{from:?} is not in {}", p.text);
            p.text = p.text.replace(from, to);
        }
    })
    .await;
}

/// Applies the policies in force plus one more source (`name`, `text`).
pub async fn add_policy(admin: &Client, name: &str, text: &str) {
    edit_policies(admin, name, |sources| {
        sources.push(pedm_api::PolicySource {
            name: name.into(),
            text: text.into(),
        })
    })
    .await;
}

/// Lets every auto-approved role be held several times at once (`@allow_parallel` on the
/// default `auto-approved-roles` permit), for load that requests one role over and over.
pub async fn allow_parallel_auto_approved(admin: &Client) {
    edit_policies(admin, "parallel auto-approved grants", |sources| {
        let anchor = "@id(\"auto-approved-roles\")\n";
        let changed = sources
            .iter_mut()
            .find(|s| s.text.contains(anchor))
            .expect("the default auto-approved-roles policy");
        changed.text = changed
            .text
            .replace(anchor, &format!("{anchor}@allow_parallel(\"true\")\n"));
    })
    .await;
}

/// A webhook receiver: every notification body, in order of arrival.
pub async fn receiver() -> (
    String,
    tokio::sync::mpsc::UnboundedReceiver<serde_json::Value>,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::body::Bytes| {
            let tx = tx.clone();
            async move {
                if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) {
                    let _ = tx.send(v);
                }
                "ok"
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (url, rx)
}

/// The sum of metric `name`'s samples whose labels contain `with` ("" for all), as the
/// server's `/metrics` shows them now.
pub async fn metric(s: &Server, name: &str, with: &str) -> f64 {
    let text = reqwest::get(format!("{}/metrics", s.url))
        .await
        .expect("/metrics")
        .text()
        .await
        .expect("/metrics text");
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| l.contains(with))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The audit events of `action`, as the admin reads them through the API.
pub async fn audit_of(s: &Server, action: &str) -> Vec<pedm_api::AuditEvent> {
    s.admin()
        .audit_events(&pedm_api::AuditQuery {
            action: Some(action.into()),
            ..Default::default()
        })
        .await
        .expect("audit events")
}

/// A console page as `token`'s holder sees it, read with a plain HTTP client (signs in by
/// pasting the token, as a browser would).
pub async fn console_page(s: &Server, token: &str, path: &str) -> String {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let r = http
        .post(format!("{}/ui/sign-in", s.url))
        .header("Origin", &s.url)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(serde_urlencoded::to_string([("token", token)]).expect("form"))
        .send()
        .await
        .expect("sign in");
    assert_eq!(r.status(), 303, "sign-in");
    let session = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|h| h.to_str().ok())
        .find_map(|v| v.strip_prefix("__Host-pedm_session="))
        .and_then(|v| v.split(';').next())
        .expect("a session cookie")
        .to_string();
    let r = http
        .get(format!("{}{path}", s.url))
        .header("Cookie", format!("__Host-pedm_session={session}"))
        .send()
        .await
        .expect("page");
    assert_eq!(r.status(), 200, "{path}");
    r.text().await.expect("page text")
}

/// Waits (at most 30 s) until grant `id`'s provisioning state is `state`, as the admin reads it.
pub async fn wait_provision(s: &Server, id: uuid::Uuid, state: &str) -> pedm_api::Grant {
    eventually(
        Duration::from_secs(30),
        &format!("grant {id} provision state {state}"),
        || async move {
            let g = s.admin().get_grant(id).await.unwrap();
            (g.provision_state.as_str() == state).then_some(g)
        },
    )
    .await
}

/// Waits (at most 30 s) for the first audit event `action` about `subject`.
pub async fn wait_event(s: &Server, action: &str, subject: &str) -> pedm_api::AuditEvent {
    eventually(Duration::from_secs(30), action, || async move {
        s.admin()
            .audit_events(&pedm_api::AuditQuery {
                action: Some(action.into()),
                subject: Some(subject.into()),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_iter()
            .next()
    })
    .await
}

/// A `command` target `app` whose program logs every call it gets.
pub fn logging_target(dir: &std::path::Path) -> (String, std::path::PathBuf) {
    let log = dir.join("calls.log");
    let script = dir.join("provision.sh");
    std::fs::write(
        &script,
        "echo \"$PEDM_ACTION $PEDM_GRANT_ID\" >> \"$CALL_LOG\"\n\
         if [ \"$PEDM_ACTION\" = observe ]; then echo '{\"present\": true}'; fi\n",
    )
    .unwrap();
    let config = format!(
        r#"
[provision.targets.app]
kind = "command"
program = "/bin/sh"
args = ["{script}"]
timeout = "10s"
env = {{ CALL_LOG = "{log}" }}

[provision.roles.app.deploy]
"#,
        script = script.display(),
        log = log.display()
    );
    (config, log)
}

pub fn calls(log: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|l| l.split_whitespace().next().unwrap_or_default().to_string())
        // Discovery and observation read; only grant and revoke change the target.
        .filter(|action| action == "grant" || action == "revoke")
        .collect()
}

/// The `command` target `app` (see [`logging_target`]) with role `deploy` (max 1h).
pub async fn app_target(s: &Server, auto_approve: bool) {
    let a = s.admin();
    a.create_target(&pedm_api::CreateTarget {
        name: "app".into(),
        kind: pedm_api::TargetKind::Command,
        description: None,
        labels: Default::default(),
    })
    .await
    .expect("target");
    a.create_role(
        "app",
        &pedm_api::CreateRole {
            auto_approve,
            ..pedm_api::CreateRole::new("deploy", "1h")
        },
    )
    .await
    .expect("role");
}

/// Three policy properties (root on prod needs an approval unless break-glass, no external
/// account is auto-approved, tier-0 roles need two approvers): the README's example.
pub const EXAMPLE_PROPERTIES: &str = r#"
[[property]]
name = "no root on prod without an approval unless break-glass"
where = { target_labels = ["env=prod"], run_as = ["root"], break_glass = false }
require = { min_approvals = 1 }

[[property]]
name = "no external account is ever auto-approved"
where = { external = true }
require = { no_auto_approve = true }

[[property]]
name = "tier-0 roles need two approvers"
where = { target_labels = ["tier=0"], break_glass = false }
require = { min_approvals = 2 }
"#;

/// Uploads a recorded session as a host agent would: `cast` under `grant`, run by `user` as
/// `run_as` (`argv`), from `started_at` to `ended_at`. Returns its id.
#[allow(clippy::too_many_arguments)]
pub async fn upload_session(
    host: &pedm_api::Client,
    grant: uuid::Uuid,
    user: &str,
    run_as: &str,
    argv: &[&str],
    started_at: jiff::Timestamp,
    ended_at: jiff::Timestamp,
    cast: &str,
) -> uuid::Uuid {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("s.cast");
    std::fs::write(&file, cast).expect("cast");
    let id = uuid::Uuid::now_v7();
    host.upload_session(
        id,
        &pedm_api::agent::SessionUpload {
            grant_id: Some(grant),
            delegation_id: None,
            task: None,
            params: None,
            user: user.into(),
            run_as: run_as.into(),
            argv: argv.iter().map(|a| a.to_string()).collect(),
            binary_sha256: None,
            shell: false,
            started_at,
            ended_at,
            exit_code: Some(0),
            signal: None,
            ended_by: None,
            recording_sha256: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(cast)),
            recording_bytes: cast.len() as u64,
        },
        tokio::fs::File::open(&file).await.expect("open cast"),
    )
    .await
    .expect("session uploaded");
    id
}
