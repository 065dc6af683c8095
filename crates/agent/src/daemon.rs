//! The daemon: the socket `pedm exec` connects to, the snapshot it enforces, the link to the
//! server (event stream in, reports and recordings out), and ending sessions whose grant ended.

mod access;
mod files;
mod intercept;
mod prepare;
mod refusals;
mod remote_task;

use crate::admission::{Connections, Refusals};
use crate::config::Credential;
use crate::config::{Config, DEFAULT_CONFIG, Resolved};
use crate::outbox::Outbox;
use crate::session::{SessionSpec, run_session};
use crate::snapshot::{self, Enforced};
use crate::user::TargetUser;
use anyhow::Context;
use jiff::Timestamp;
use pedm_api::Client;
use pedm_api::agent::{AgentReport, ExecVerdict, REPORT_ARGV_BYTES, SessionUpload, SignedSnapshot};
use pedm_api::socket::{
    Accepted, Frame, MAX_START_FRAME, Refused, read_frame_limited, write_frame,
};
use prepare::Prepared;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Notify, watch};
use uuid::Uuid;

/// A running session the daemon may have to end.
struct Running {
    grant: Uuid,
    expires_at: Timestamp,
    stop: watch::Sender<Option<String>>,
}

impl Running {
    /// The first reason sticks: an expiry noticed by the timer and by a new snapshot at
    /// the same moment is reported once, as what it was.
    fn end(&self, why: &str) {
        self.stop.send_if_modified(|v| {
            if v.is_none() {
                *v = Some(why.to_string());
                true
            } else {
                false
            }
        });
    }
}

pub struct Agent {
    cfg: Resolved,
    /// Where sessions are contained; `None`: process scan only ([`crate::contain::procs`]).
    cgroups: Option<crate::contain::cgroup::Cgroups>,
    /// Checks intercepted execs once they happened ([`crate::contain::verify`]).
    verifier: Option<Arc<crate::contain::verify::ExecVerifier>>,
    /// Grants (and delegations) with a cgroup, and when they end: what their sessions left
    /// running is killed then, even with no session running.
    contained: Mutex<HashMap<Uuid, Timestamp>>,
    connections: Arc<Connections>,
    refusals: Refusals,
    /// Replaced when the client certificate is renewed.
    client: std::sync::RwLock<Client>,
    enforced: RwLock<Option<Enforced>>,
    sessions: Mutex<HashMap<Uuid, Running>>,
    outbox: Outbox,
    /// Something was queued for the server.
    queued: Notify,
    /// The grants changed (new snapshot): the expiry timer re-reads its deadline.
    grants_changed: Notify,
    /// Task run orders taken, until they expire: each runs once.
    orders_seen: Mutex<HashMap<Uuid, Timestamp>>,
}

#[derive(Debug, clap::Parser)]
#[command(name = "pedm-agent", version, about = "pedm host agent")]
pub struct Args {
    /// Configuration file.
    #[arg(long, short, default_value = DEFAULT_CONFIG, global = true)]
    pub config: PathBuf,
    #[command(subcommand)]
    pub command: Option<AgentCommand>,
}

#[derive(Debug, clap::Subcommand)]
pub enum AgentCommand {
    /// What this host enforces and what it still owes the server (exit 1 when the server
    /// refused records that are kept here).
    Status,
    /// Write the configuration (--config) for a host registered with `pedm host register`,
    /// after checking the token and the server key against the server.
    Enroll(crate::enroll::EnrollArgs),
    /// Renew the client certificate once two thirds of its life are gone (or now, with
    /// --force), then exit: for hosts that use the certificate without running the agent,
    /// such as a sudo log relay (run it from a timer). The running agent renews by itself.
    Renew {
        /// Renew even if it is not due.
        #[arg(long)]
        force: bool,
    },
}

pub fn main() -> std::process::ExitCode {
    use clap::Parser;
    let args = Args::parse();
    match &args.command {
        Some(AgentCommand::Status) => {
            return match crate::status::print(&args.config) {
                Ok(code) => std::process::ExitCode::from(code as u8),
                Err(e) => {
                    eprintln!("error: {e:#}");
                    std::process::ExitCode::from(2)
                }
            };
        }
        Some(AgentCommand::Enroll(e)) => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            let done = match rt {
                Ok(rt) => rt.block_on(crate::enroll::enroll(&args.config, e)),
                Err(err) => Err(err.into()),
            };
            return match done {
                Ok(host) => {
                    println!(
                        "enrolled host {host}: wrote {}; start the agent with \
                         `systemctl enable --now pedm-agent`",
                        args.config.display()
                    );
                    std::process::ExitCode::SUCCESS
                }
                Err(err) => {
                    eprintln!("error: {err:#}");
                    std::process::ExitCode::from(2)
                }
            };
        }
        Some(AgentCommand::Renew { force }) => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            let done = match rt {
                Ok(rt) => rt.block_on(crate::renew::renew_now(&args.config, *force)),
                Err(err) => Err(err.into()),
            };
            return match done {
                Ok(said) => {
                    println!("{said}");
                    std::process::ExitCode::SUCCESS
                }
                Err(err) => {
                    eprintln!("error: {err:#}");
                    std::process::ExitCode::from(2)
                }
            };
        }
        None => {}
    }
    let filter = tracing_subscriber::EnvFilter::try_from_env("PEDM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        anyhow::bail!("pedm-agent must run as root: it switches to the run-as users of grants");
    }
    let cfg = Config::load(&args.config)?.resolve()?;
    raise_open_files_limit();
    let outbox = Outbox::open(&cfg.state_dir)
        .with_context(|| format!("cannot create {}", cfg.state_dir.display()))?;
    let cgroups = crate::contain::cgroup::Cgroups::locate(cfg.cgroup.as_deref())
        .and_then(crate::contain::cgroup::Cgroups::prepare);
    let containment = crate::contain::cgroup::describe(&cgroups);
    match &cgroups {
        Ok(_) => tracing::info!(containment, "sessions are contained"),
        Err(_) => tracing::warn!(containment, "sessions are not contained in cgroups"),
    }
    let cgroups = cgroups.ok();
    // What the last run left running is ended before anyone can connect.
    let ended = |id: Uuid, meta: &SessionUpload, noted| {
        let by_cgroup = match (&cgroups, meta.grant_id.or(meta.delegation_id)) {
            (Some(c), Some(g)) => c.kill_grant(g),
            _ => 0,
        };
        by_cgroup + end_leftovers(id, meta, noted)
    };
    match outbox.recover(ended) {
        Ok(0) => {}
        Ok(n) => tracing::warn!(sessions = n, "queued sessions interrupted by the last stop"),
        Err(e) => tracing::error!(error = %e, "cannot recover interrupted sessions"),
    }
    if let Some(c) = &cgroups {
        let n = c.kill_leftovers();
        if n > 0 {
            tracing::warn!(
                killed = n,
                "ended processes the sessions of the last run left"
            );
        }
    }
    let enforced = match snapshot::load(&cfg.state_dir, &cfg.server_key, &cfg.host) {
        Ok(e) => e,
        Err(e) => {
            // A damaged or foreign file must not stop the host from getting a fresh one.
            tracing::error!(error = %e, "ignoring the stored snapshot");
            None
        }
    };
    if let Some(e) = &enforced {
        tracing::info!(
            issued_at = %e.snapshot.issued_at,
            grants = e.snapshot.grants.len(),
            "enforcing the stored snapshot until the server answers"
        );
    }
    let client = match &cfg.credential {
        Credential::Token(t) => {
            Client::with_ca(&cfg.server_url, Some(t.clone()), cfg.ca_file.as_deref())
                .map_err(|e| anyhow::anyhow!("server_url: {e}"))?
        }
        Credential::Certificate(files) => files
            .client(&cfg.server_url, cfg.ca_file.as_deref())
            .context("cert_file/key_file")?,
    };
    let listener = bind(&cfg)?;
    // Intercepted execs are checked again once they happened (a second thread of the caller
    // could change what runs after the check); without the process connector, intercept
    // sessions run unverified and say so at their start.
    let verifier = match crate::contain::verify::ExecVerifier::start() {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!(error = %e, "intercepted execs cannot be verified after they run");
            None
        }
    };
    let agent = Arc::new(Agent {
        cgroups,
        verifier,
        contained: Mutex::new(HashMap::new()),
        connections: Connections::new(cfg.max_connections_per_user),
        refusals: Refusals::new(REFUSAL_WINDOW),
        cfg,
        client: std::sync::RwLock::new(client),
        enforced: RwLock::new(enforced),
        sessions: Mutex::new(HashMap::new()),
        outbox,
        queued: Notify::new(),
        grants_changed: Notify::new(),
        orders_seen: Mutex::new(HashMap::new()),
    });
    tokio::spawn(agent.clone().follow_server());
    if let Credential::Certificate(files) = &agent.cfg.credential {
        tokio::spawn(agent.clone().renew_certificate(files.clone()));
    }
    tokio::spawn(agent.clone().deliver());
    tokio::spawn(agent.clone().end_expired());
    tokio::spawn(agent.clone().record_aggregated_refusals());
    println!("pedm-agent listening on {}", agent.cfg.socket.display());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let a = agent.clone();
                    tokio::spawn(async move { a.serve(stream).await });
                }
                Err(e) => tracing::warn!(error = %e, "accept failed"),
            },
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    agent.stop_all("pedm-agent stopped");
    for r in agent.refusals.closed(true) {
        agent.queue_report(&r);
    }
    let _ = std::fs::remove_file(&agent.cfg.socket);
    Ok(())
}

/// Refusals of one user within this long are recorded as one report (the first few at once).
const REFUSAL_WINDOW: Duration = Duration::from_secs(10);
/// What a refusal keeps of the argv (with the hash of the whole): nothing ran, and the
/// refusals of anyone who can connect must stay small on disk.
const REFUSAL_ARGV_BYTES: usize = 1024;

/// The agent holds a descriptor or more per connection and session: take the hard limit
/// of open files rather than the usual soft 1024.
fn raise_open_files_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
        && let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
    {
        tracing::warn!(error = %e, soft, hard, "cannot raise the open files limit");
    }
}

/// Ends the processes a session interrupted by the agent's stop left running (found by
/// session id, start time and user, or by the session's environment marker, see
/// [`crate::contain::procs`]); returns how many were killed.
fn end_leftovers(id: Uuid, meta: &SessionUpload, noted: Option<crate::outbox::PidNote>) -> usize {
    let Ok(user) = TargetUser::lookup(&meta.run_as) else {
        tracing::warn!(session = %id, run_as = %meta.run_as, "run-as user gone; nothing to end");
        return 0;
    };
    let same_boot = noted
        .as_ref()
        .filter(|n| n.boot_id == crate::contain::procs::boot_id());
    let members = crate::contain::procs::Members {
        sid: same_boot.map_or(0, |n| n.pid),
        marker: Some(format!("{}={id}", crate::contain::procs::MARKER_VAR)),
        uid: user.uid,
        not_before: same_boot.map(|n| n.start_time),
    };
    let killed = members.signal(libc::SIGKILL);
    if killed > 0 {
        tracing::warn!(session = %id, killed, "ended processes left running by the last stop");
    }
    killed
}

/// Binds the socket with the configured mode and group (a stale socket file is replaced).
fn bind(cfg: &Resolved) -> anyhow::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = cfg.socket.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    match std::fs::remove_file(&cfg.socket) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).context(format!("cannot replace {}", cfg.socket.display())),
    }
    let listener = UnixListener::bind(&cfg.socket)
        .with_context(|| format!("cannot listen on {}", cfg.socket.display()))?;
    if let Some(gid) = cfg.socket_group {
        nix::unistd::chown(&cfg.socket, None, Some(gid))
            .with_context(|| format!("cannot set the group of {}", cfg.socket.display()))?;
    }
    std::fs::set_permissions(
        &cfg.socket,
        std::fs::Permissions::from_mode(cfg.socket_mode),
    )
    .with_context(|| format!("cannot set the mode of {}", cfg.socket.display()))?;
    Ok(listener)
}

impl Agent {
    /// Takes a snapshot from the server: verifies it, stores it, and ends the sessions of
    /// grants it no longer holds.
    fn accept_snapshot(&self, signed: SignedSnapshot) {
        let snap = match snapshot::verify(&signed, &self.cfg.server_key, &self.cfg.host) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "refusing a snapshot");
                return;
            }
        };
        let ended: Vec<(Uuid, Timestamp)> = {
            let mut guard = self.enforced.write().unwrap_or_else(|e| e.into_inner());
            let result = match guard.as_mut() {
                Some(current) => current.replace(signed.clone(), snap),
                None => Enforced::new(signed.clone(), snap).map(|e| {
                    *guard = Some(e);
                    vec![]
                }),
            };
            match result {
                Ok(ended) => ended,
                Err(e) => {
                    tracing::error!(error = %e, "refusing a snapshot");
                    return;
                }
            }
        };
        if let Err(e) = snapshot::save(&self.cfg.state_dir, &signed) {
            tracing::error!(error = %e, "cannot store the snapshot");
        }
        let now = Timestamp::now();
        // Sessions an admin killed, if this agent runs them.
        let killed = self
            .enforced
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|e| e.snapshot.killed_sessions.clone())
            .unwrap_or_default();
        {
            let running = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
            for k in killed {
                if let Some(r) = running.get(&k.id) {
                    tracing::warn!(session = %k.id, reason = %k.reason, "session killed");
                    r.end(&k.reason);
                }
            }
        }
        for (id, expires_at) in ended {
            // The server also ends grants at their expiry; say which it was.
            let why = if expires_at <= now {
                "grant expired"
            } else {
                "grant revoked"
            };
            self.stop_grant(id, why);
        }
        if let Some(e) = self
            .enforced
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            tracing::info!(
                issued_at = %e.snapshot.issued_at,
                grants = e.snapshot.grants.len(),
                policy = e.snapshot.policy.as_ref().map(|p| p.version).unwrap_or(0),
                tasks = e.snapshot.tasks.len(),
                delegations = e
                    .snapshot
                    .tasks
                    .iter()
                    .map(|t| t.delegations.len())
                    .sum::<usize>(),
                "snapshot in force"
            );
        }
        self.grants_changed.notify_one();
    }

    fn stop_grant(&self, grant: Uuid, why: &str) {
        let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        for (id, r) in sessions.iter().filter(|(_, r)| r.grant == grant) {
            tracing::info!(session = %id, %grant, why, "ending session");
            r.end(why);
        }
        drop(sessions);
        let had_cgroup = self
            .contained
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&grant)
            .is_some();
        if let (true, Some(cgroups)) = (had_cgroup, self.cgroups.clone()) {
            // After the sessions' own hang-up and grace: whatever is left in the grant's
            // cgroups, wherever it went.
            let grace = self.cfg.kill_grace;
            tokio::spawn(async move {
                tokio::time::sleep(grace).await;
                let killed = tokio::task::spawn_blocking(move || cgroups.kill_grant(grant))
                    .await
                    .unwrap_or(0);
                if killed > 0 {
                    tracing::info!(%grant, killed, "killed what the grant's sessions left");
                }
            });
        }
    }

    fn stop_all(&self, why: &str) {
        let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        for r in sessions.values() {
            r.end(why);
        }
    }

    /// The client to reach the server with (its certificate may have been renewed).
    fn client(&self) -> Client {
        self.client
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Renews the client certificate at two thirds of its life (retrying every minute while
    /// the server is away) and switches to it; connections opened later use the new one.
    async fn renew_certificate(self: Arc<Self>, files: crate::identity::IdentityFiles) {
        loop {
            let wait = files.renew_in().unwrap_or(Duration::from_secs(60));
            tokio::time::sleep(wait).await;
            match files.renew(&self.client(), &self.cfg.host).await {
                Ok(until) => {
                    match files.client(&self.cfg.server_url, self.cfg.ca_file.as_deref()) {
                        Ok(c) => {
                            *self.client.write().unwrap_or_else(|e| e.into_inner()) = c;
                            tracing::info!(%until, "client certificate renewed");
                        }
                        Err(e) => tracing::error!(error = %e, "cannot use the renewed certificate"),
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot renew the client certificate; retrying");
                    tokio::time::sleep(Duration::from_secs(60)).await;
                }
            }
        }
    }

    /// Follows the server's event stream; reconnects with backoff. Each connection starts
    /// with a full snapshot, so a revocation missed while away is applied on reconnect.
    async fn follow_server(self: Arc<Self>) {
        let mut backoff = Duration::from_millis(500);
        loop {
            let this = self.clone();
            let result = self
                .client()
                .agent_events(move |event| {
                    match event {
                        pedm_api::agent::AgentEvent::Snapshot(signed) => {
                            this.accept_snapshot(signed);
                            // The server is reachable: send what waits.
                            this.queued.notify_one();
                        }
                        pedm_api::agent::AgentEvent::Task(order) => this.clone().take_order(order),
                    }
                    true
                })
                .await;
            match result {
                Ok(()) => backoff = Duration::from_millis(500),
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "server unreachable");
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(30));
            if self.enforced.read().map(|e| e.is_some()).unwrap_or(false) {
                continue;
            }
        }
    }

    /// Sends queued reports and recordings whenever something is queued or the server comes
    /// back; retries with backoff while it is away.
    async fn deliver(self: Arc<Self>) {
        let mut backoff = Duration::from_millis(500);
        loop {
            match self.outbox.flush(&self.client()).await {
                Ok(f) => {
                    if f.reports + f.sessions > 0 {
                        tracing::info!(reports = f.reports, sessions = f.sessions, "delivered");
                    }
                    backoff = Duration::from_millis(500);
                    self.queued.notified().await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "cannot deliver yet");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = self.queued.notified() => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }

    /// Ends sessions when their grant's `expires_at` passes, server or no server.
    async fn end_expired(self: Arc<Self>) {
        loop {
            let now = Timestamp::now();
            let (expired, next) = {
                let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
                let contained = self.contained.lock().unwrap_or_else(|e| e.into_inner());
                let mut expired = vec![];
                let mut next: Option<Timestamp> = None;
                let deadlines = sessions
                    .values()
                    .map(|r| (r.grant, r.expires_at))
                    .chain(contained.iter().map(|(g, at)| (*g, *at)));
                for (grant, at) in deadlines {
                    if at <= now {
                        expired.push(grant);
                    } else {
                        next = Some(next.map_or(at, |n| n.min(at)));
                    }
                }
                (expired, next)
            };
            for g in expired {
                self.stop_grant(g, "grant expired");
            }
            let wait = next
                .map(|n| {
                    let d = n.duration_since(now).as_millis().max(0) as u64;
                    Duration::from_millis(d + 1)
                })
                .unwrap_or(Duration::from_secs(3600));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.grants_changed.notified() => {}
            }
        }
    }

    /// One connection from `pedm exec` / `pedm shell`.
    async fn serve(self: Arc<Self>, mut stream: UnixStream) {
        let cred = match stream.peer_cred() {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "no peer credentials; closing");
                return;
            }
        };
        let Some(_admitted) = self.connections.admit(cred.uid()) else {
            tracing::warn!(
                uid = cred.uid(),
                "too many connections from one user; refused"
            );
            let _ = refuse(
                &mut stream,
                format!(
                    "uid {} has {} connections to pedm-agent open already (max_connections_per_user)",
                    cred.uid(),
                    self.connections.max()
                ),
            )
            .await;
            return;
        };
        let caller = match TargetUser::caller(cred.uid()) {
            Ok(u) => u,
            Err(e) => {
                let _ = refuse(&mut stream, format!("who are you? {e}")).await;
                return;
            }
        };
        let first = tokio::time::timeout(
            self.cfg.first_frame_timeout,
            read_frame_limited(&mut stream, MAX_START_FRAME),
        )
        .await;
        let start = match first {
            Ok(Ok(Some(Frame::Start(s)))) => s,
            Ok(Ok(Some(Frame::Check(check)))) => {
                return self.answer_check(stream, cred.uid(), check).await;
            }
            Ok(Ok(None)) => return,
            Ok(Ok(Some(_))) => {
                let _ = refuse(&mut stream, "expected a start frame".into()).await;
                return;
            }
            Ok(Err(e)) => {
                let reason = format!("protocol error: {e}");
                tracing::info!(user = %caller.name, %reason, "refused");
                self.report_refusal(caller.uid, Self::refusal(&caller, &[], None, None, &reason));
                let _ = refuse(&mut stream, reason).await;
                return;
            }
            Err(_) => {
                let _ = refuse(
                    &mut stream,
                    format!(
                        "no start frame within {}s (first_frame_timeout)",
                        self.cfg.first_frame_timeout.as_secs()
                    ),
                )
                .await;
                return;
            }
        };
        let argv_for_report = start.argv.clone();
        let task_for_report = start.task.as_ref().map(|t| t.name.clone());
        match self.prepare(&caller, start) {
            Ok(p) => self.run(stream, caller, p).await,
            Err((refusal, sha)) => {
                tracing::info!(user = %caller.name, reason = %refusal, "refused");
                let report =
                    Self::refusal(&caller, &argv_for_report, task_for_report, sha, &refusal.0);
                self.report_refusal(caller.uid, report);
                let _ = refuse(&mut stream, refusal.0).await;
            }
        }
    }

    /// Runs a prepared session for a client on `stream`: `pedm exec` on the socket, or a task
    /// run ordered from the console ([`remote_task`]).
    async fn run<S>(self: Arc<Self>, mut stream: S, caller: TargetUser, p: Prepared)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
    {
        let (grant_id, delegation_id) = match &p.task {
            None => (Some(p.authority), None),
            Some(_) => (None, Some(p.authority)),
        };
        let session = Uuid::now_v7();
        let (stop_tx, stop_rx) = watch::channel(None);
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                session,
                Running {
                    grant: p.authority,
                    expires_at: p.expires_at,
                    stop: stop_tx,
                },
            );
        // The grant may have ended between the decision and the registration above.
        let still_live = self
            .enforced
            .read()
            .map(|e| {
                e.as_ref()
                    .is_some_and(|e| e.is_live(p.authority, Timestamp::now()))
            })
            .unwrap_or(false);
        if !still_live {
            self.give_up(
                &mut stream,
                session,
                format!("grant {} has just ended", p.authority),
            )
            .await;
            return;
        }
        self.grants_changed.notify_one();
        let path = p.resolved.path().to_string_lossy().into_owned();
        let sha = p.resolved.sha256().to_string();
        let accepted = Frame::Accepted(Accepted {
            session,
            grant: p.authority,
            run_as: p.run_as.name.clone(),
            path: path.clone(),
        });
        let recording = self.outbox.recording_path(session);
        // Tasks are bounded by their definitions; cut anyway so the record always fits.
        let (recorded_argv, whole_argv) = pedm_api::agent::cut_argv(&p.argv, REPORT_ARGV_BYTES);
        let meta = SessionUpload {
            grant_id,
            delegation_id,
            task: p.task.as_ref().map(|(t, _)| t.clone()),
            params: p.task.as_ref().map(|(_, params)| params.clone()),
            user: caller.name.clone(),
            run_as: p.run_as.name.clone(),
            argv: recorded_argv.clone(),
            binary_sha256: Some(sha.clone()),
            shell: p.shell,
            started_at: Timestamp::now(),
            ended_at: Timestamp::now(),
            exit_code: None,
            signal: None,
            ended_by: None,
            recording_sha256: String::new(),
            recording_bytes: 0,
        };
        let allowed = AgentReport {
            id: Uuid::now_v7(),
            at: Timestamp::now(),
            user: caller.name.clone(),
            verdict: ExecVerdict::Allowed,
            grant: grant_id,
            session: Some(session),
            task: p.task.as_ref().map(|(t, _)| t.clone()),
            delegation: delegation_id,
            argv: recorded_argv.clone(),
            binary_sha256: Some(sha.clone()),
            reason: Some(format!("allowed by {}", p.policies.join(", "))),
            argv_sha256: whole_argv.as_ref().map(|(h, _)| h.clone()),
            argv_bytes: whole_argv.map(|(_, n)| n),
            count: None,
            last_at: None,
            exec: None,
            file: None,
            via: None,
        };
        // Watched paths: a mount namespace of the session's own, marked before it starts.
        let (watched, mount_ns) = match files::watch_namespace(&p.watch_paths).await {
            Ok(Some((w, ns))) => (Some(w), Some(ns)),
            Ok(None) => (None, None),
            Err(e) => {
                tracing::error!(%session, error = %e, "cannot watch the role's paths");
                self.give_up(&mut stream, session, e).await;
                return;
            }
        };
        let contained = match &self.cgroups {
            None if !p.limits.is_none() => Err(
                "the role limits resources, but this host has no cgroup containment".to_string(),
            ),
            None => Ok(Default::default()),
            Some(c) => c.session(p.authority, session, &p.limits),
        };
        let cgroup = match contained {
            Ok(fds) if fds.is_empty() => fds,
            Ok(fds) => {
                self.contained
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(p.authority, p.expires_at);
                fds
            }
            Err(e) => {
                // Nothing runs uncontained where containment is on.
                tracing::error!(%session, error = %e, "cannot create the session's cgroup");
                self.give_up(
                    &mut stream,
                    session,
                    format!("pedm-agent cannot contain the session (cgroup): {e}"),
                )
                .await;
                return;
            }
        };
        // Nothing runs that is not on disk first: the command execs only once its note is.
        let durable = match self
            .outbox
            .begin_session_synced_later(session, &allowed, &meta)
        {
            Ok(durable) => durable,
            Err(e) => {
                tracing::error!(%session, error = %e, "cannot note the session");
                self.give_up(
                    &mut stream,
                    session,
                    format!("pedm-agent cannot record the session: {e}"),
                )
                .await;
                return;
            }
        };
        if write_frame(&mut stream, &accepted).await.is_err() {
            self.sessions
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&session);
            let _ = self.outbox.discard_session(session);
            return;
        }
        // Watched live: the recording's events go to pedmd as they are written.
        let (tap, feed) = crate::live::channel();
        let header = pedm_api::live::LiveHeader {
            grant_id: meta.grant_id,
            delegation_id: meta.delegation_id,
            user: meta.user.clone(),
            run_as: meta.run_as.clone(),
            argv: meta.argv.clone(),
            started_at: Timestamp::now(),
            width: p.tty.map_or(80, |t| u32::from(t.cols)),
            height: p.tty.map_or(24, |t| u32::from(t.rows)),
        };
        let this = self.clone();
        tokio::spawn(async move {
            crate::live::stream(session, header, feed, || this.client()).await;
        });
        let gate_live = tap.weak();
        // Files the session writes, removes or renames under the watched paths, reported
        // until it has ended.
        let (ended_tx, ended_rx) = tokio::sync::oneshot::channel::<()>();
        let entry_gate = watched.and_then(|w| {
            crate::daemon::files::FileReports {
                agent: self.clone(),
                user: caller.name.clone(),
                grant: p.authority,
                session,
                live: tap.weak(),
            }
            .start(w, ended_rx)
        });
        let this = self.clone();
        let finished = crate::session::FinishHook(Box::new(move |o| {
            let meta = SessionUpload {
                started_at: o.started_at,
                ended_at: o.ended_at,
                exit_code: o.exited.code,
                signal: o.exited.signal,
                ended_by: o.exited.ended_by.clone(),
                recording_sha256: o.recording_sha256.clone(),
                recording_bytes: o.recording_bytes,
                ..meta
            };
            if let Some(e) = &o.recording_error {
                tracing::error!(%session, error = %e, "recording incomplete");
            }
            if let Err(e) = this.outbox.add_session(session, &meta) {
                tracing::error!(%session, error = %e, "cannot queue the session");
            }
            this.queued.notify_one();
        }));
        // Every process of the session carries its id: found again if it leaves the session.
        let marker = format!("{}={session}", crate::contain::procs::MARKER_VAR);
        let mut env = p.env;
        env.push((
            crate::contain::procs::MARKER_VAR.to_string(),
            session.to_string(),
        ));
        let this = self.clone();
        let started = crate::session::StartHook(Box::new(move |pid| {
            // Off the command's path: the pid note is best effort, the report goes out now.
            this.queued.notify_one();
            tokio::task::spawn_blocking(move || this.outbox.note_pid(session, pid));
        }));
        let spec = SessionSpec {
            command: p.resolved,
            argv: p.argv,
            user: p.run_as.clone(),
            env,
            started: Some(started),
            durable: Some(durable),
            marker: Some(marker),
            cgroup,
            no_new_privs: p.no_new_privs,
            noexec: p.noexec,
            record_input: p.record_input,
            exec_gate: p.intercept.then(|| {
                Box::new(intercept::SessionGate {
                    agent: self.clone(),
                    grant: p.authority,
                    session,
                    caller: caller.clone(),
                    tty: p.tty.is_some(),
                    live: gate_live,
                    rt: tokio::runtime::Handle::current(),
                }) as Box<dyn crate::contain::execs::ExecGate>
            }),
            entry_gate,
            cwd: p.cwd,
            tty: p.tty,
            recording,
            title: format!(
                "{} as {} on {}, grant {}",
                caller.name, p.run_as.name, self.cfg.host, p.authority
            ),
            finished: Some(finished),
            stdin_data: p.stdin_data,
            live: Some(tap),
            mount_ns,
        };
        let outcome = run_session(spec, stream, stop_rx, self.cfg.kill_grace).await;
        drop(ended_tx);
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&session);
        if let Err(e) = outcome {
            // Nothing ran; no recording is left.
            tracing::warn!(%session, error = %e, "session did not start");
            let _ = self.outbox.discard_session(session);
        }
    }
}

impl Agent {
    /// A session that will not start after all: forgotten, and the caller told why.
    async fn give_up<W>(&self, stream: &mut W, session: Uuid, reason: String)
    where
        W: tokio::io::AsyncWrite + Unpin,
    {
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&session);
        let _ = refuse(stream, reason).await;
    }
}

async fn refuse<W: tokio::io::AsyncWrite + Unpin>(
    stream: &mut W,
    reason: String,
) -> Result<(), pedm_api::socket::FrameError> {
    write_frame(stream, &Frame::Refused(Refused { reason })).await
}
