//! pedmd as a sudo log server (`sudo_logsrv.proto(5)`), for hosts with stock sudo 1.9 and
//! `log_servers=` in sudoers and no pedm-agent: every command sudo accepts or rejects becomes
//! an audit event in the chain, and every I/O log an asciicast recording in `pedm session
//! list/play`, under the host its client certificate names (TLS with a client certificate
//! from pedmd's client CA is required: the same certificate `pedm-agent enroll` gets).
//!
//! Length-prefixed protobuf over TLS: `ClientHello`, `ServerHello`, then one `AcceptMessage`,
//! `RejectMessage`, `AlertMessage` or `RestartMessage`; I/O buffers follow an accept that
//! expects them, acknowledged by `commit_point`s once durable ([`iolog`]); `ExitMessage`
//! ends the log. A dropped connection leaves the log where it was last committed, for a
//! `RestartMessage` from that point; one nobody resumes is finished as it stands after
//! `abandon_after`.

pub mod iolog;
pub mod proto;

use futures_util::StreamExt;
use iolog::{IoLog, IoLogError, LogMeta, Spool};
use pedm_core::host::{Session, SessionVia};
use pedm_core::service::ControlPlane;
use pedm_core::service::{SudoEvent, SudoVerdict};
use prost::Message;
use proto::{Client, ClientMessage, InfoMessage, InfoValue, Server, ServerMessage, TimeSpec};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::watch;
use tokio_util::codec::{FramedRead, LengthDelimitedCodec};
use uuid::Uuid;

/// The largest message the protocol lets a client send.
const MAX_MESSAGE: u32 = 2 * 1024 * 1024;
/// How long a client has for the handshake and its first message.
const FIRST_MESSAGE_WITHIN: Duration = Duration::from_secs(30);
/// The most of an argv kept in an event (as agents' reports).
const ARGV_BYTES: usize = pedm_core::service::REPORT_ARGV_BYTES;

/// `[sudo_log]`, checked.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    /// Keep what was typed (`ttyin`/`stdin` buffers) when sudo sends it. Off by default:
    /// sudo cannot tell a password typed at a prompt from a command.
    pub record_input: bool,
    /// How often received I/O is made durable and acknowledged.
    pub commit_interval: Duration,
    /// A partial log not resumed within this is finished as it stands.
    pub abandon_after: Duration,
    /// A recording stops growing here (`agents.max_recording_bytes`): what sudo sends
    /// beyond it is dropped, with a marker saying so; the command's events are still kept.
    pub max_recording_bytes: u64,
}

/// The log server's shared state.
pub struct LogServer {
    cp: Arc<ControlPlane>,
    spool: Spool,
    settings: Settings,
    /// Logs a connection is writing now (a restart of one of them is refused).
    open: Mutex<HashSet<Uuid>>,
}

#[derive(Debug, thiserror::Error)]
enum ConnError {
    /// Said to the client as an `error` message, then the connection closes.
    #[error("{0}")]
    Protocol(String),
    #[error(transparent)]
    IoLog(#[from] IoLogError),
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("recording: {0}")]
    Core(#[from] pedm_core::Error),
}

impl LogServer {
    pub fn new(cp: Arc<ControlPlane>, recordings: std::path::PathBuf, settings: Settings) -> Self {
        LogServer {
            cp,
            spool: Spool { recordings },
            settings,
            open: Mutex::new(HashSet::new()),
        }
    }

    /// Accepts connections until `shutdown`; each is served on its own task.
    pub async fn serve(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        tls: Arc<rustls::ServerConfig>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        tokio::spawn(self.clone().finish_abandoned(shutdown.clone()));
        loop {
            let (tcp, addr) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "sudo log server: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                _ = shutdown.changed() => return,
            };
            let me = self.clone();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let tls = match tokio::time::timeout(FIRST_MESSAGE_WITHIN, acceptor.accept(tcp))
                    .await
                {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::info!(%addr, error = %e, "sudo log server: TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
                let host = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .and_then(|c| crate::tls::client_ca::peer_of(c));
                let host = match host {
                    Some((crate::tls::client_ca::Peer::Host(h), _)) => h,
                    _ => {
                        tracing::warn!(%addr, "sudo log server: a client without a host certificate");
                        return;
                    }
                };
                me.connection(tls, &host, addr).await;
            });
        }
    }

    async fn connection<S: AsyncRead + AsyncWrite>(&self, stream: S, host: &str, addr: SocketAddr) {
        let mut conn = Conn {
            server: self,
            host,
            client: None,
            log: None,
        };
        let mut stream = Wire::new(stream);
        let result = conn.run(&mut stream).await;
        if let Some(log) = conn.log.take() {
            // Dropped mid-log: what was committed waits for a restart.
            self.release(log.meta.id);
        }
        match result {
            Ok(()) => {}
            Err(ConnError::Protocol(m)) | Err(ConnError::IoLog(IoLogError::Unknown(m))) => {
                tracing::warn!(host, %addr, error = %m, "sudo log server: refused");
                let _ = stream.send(Server::Error(m)).await;
            }
            Err(ConnError::IoLog(IoLogError::OtherHost { id, owner })) => {
                // Another host's log: a security decision, recorded.
                let why = IoLogError::OtherHost { id, owner }.to_string();
                tracing::warn!(host, %addr, error = %why, "sudo log server: refused");
                let _ = self.cp.refuse_sudo_resume(host, id, why.clone()).await;
                let _ = stream.send(Server::Error(why)).await;
            }
            Err(ConnError::IoLog(e)) if !matches!(e, IoLogError::Io(_)) => {
                tracing::warn!(host, %addr, error = %e, "sudo log server: refused");
                let _ = stream.send(Server::Error(e.to_string())).await;
            }
            Err(e) => {
                tracing::error!(host, %addr, error = %e, "sudo log server: connection failed");
                let _ = stream
                    .send(Server::Error(
                        "the log server could not store the log".into(),
                    ))
                    .await;
            }
        }
        let _ = stream.out.shutdown().await;
    }

    fn claim(&self, id: Uuid) -> bool {
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id)
    }

    fn release(&self, id: Uuid) {
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }

    /// Finishes partial logs whose last commit is older than `abandon_after` and that no
    /// connection is writing: at start, then every half of `abandon_after` (at most a minute).
    async fn finish_abandoned(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let every = (self.settings.abandon_after / 2)
            .clamp(Duration::from_secs(1), Duration::from_secs(60));
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            let cutoff = std::time::SystemTime::now()
                .checked_sub(self.settings.abandon_after)
                .unwrap_or(std::time::UNIX_EPOCH);
            let open = |id| {
                self.open
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .contains(&id)
            };
            match tokio::task::block_in_place(|| self.spool.remove_orphans(cutoff, open)) {
                Ok(0) => {}
                Ok(n) => tracing::warn!(n, "sudo log server: removed logs never committed"),
                Err(e) => tracing::error!(error = %e, "sudo log server: cannot clear partial logs"),
            }
            let ids = match self.spool.pending() {
                Ok(ids) => ids,
                Err(e) => {
                    tracing::error!(error = %e, "sudo log server: cannot list partial logs");
                    continue;
                }
            };
            let older_than = jiff::Timestamp::now()
                - jiff::SignedDuration::try_from(self.settings.abandon_after)
                    .unwrap_or(jiff::SignedDuration::MAX);
            for id in ids {
                if !self.claim(id) {
                    continue;
                }
                let done =
                    match tokio::task::block_in_place(|| self.spool.abandoned(id, older_than)) {
                        Ok(Some(log)) => {
                            self.finish(log, "connection lost; never resumed", None, None)
                                .await
                        }
                        Ok(None) => Ok(()),
                        Err(e) => Err(e.into()),
                    };
                self.release(id);
                if let Err(e) = done {
                    tracing::error!(%id, error = %e, "sudo log server: cannot finish a partial log");
                }
            }
        }
    }

    /// Ends `log`, stores its recording and records the session.
    async fn finish(
        &self,
        log: IoLog,
        marker: &str,
        exit_code: Option<i32>,
        ended_by: Option<String>,
    ) -> Result<(), ConnError> {
        let done = tokio::task::block_in_place(|| log.finish(marker))?;
        let m = done.meta;
        let session = Session {
            id: m.id,
            grant_id: m.grant,
            delegation_id: None,
            task: None,
            params: None,
            host: m.host.clone(),
            user: m.user,
            run_as: m.run_as,
            argv: m.argv,
            binary_sha256: None,
            shell: false,
            started_at: m.started_at,
            ended_at: done.ended_at,
            exit_code,
            signal: None,
            ended_by,
            recording_sha256: done.sha256,
            recording_bytes: i64::try_from(done.bytes).unwrap_or(i64::MAX),
            uploaded_at: done.ended_at,
            via: Some(SessionVia::SudoLog),
        };
        self.cp.record_session(&m.host, session).await?;
        Ok(())
    }
}

/// One client connection.
struct Conn<'a> {
    server: &'a LogServer,
    host: &'a str,
    client: Option<String>,
    log: Option<IoLog>,
}

impl Conn<'_> {
    async fn run<S: AsyncRead + AsyncWrite>(&mut self, s: &mut Wire<S>) -> Result<(), ConnError> {
        // The hello is optional: the first message may already be the event.
        let mut first = match tokio::time::timeout(FIRST_MESSAGE_WITHIN, s.read()).await {
            Ok(r) => r?,
            Err(_) => return Err(ConnError::Protocol("no message within 30 seconds".into())),
        };
        if let Some(Client::HelloMsg(h)) = &first {
            self.client = Some(h.client_id.chars().take(200).collect());
            first = None;
        }
        s.send(Server::Hello(proto::ServerHello {
            server_id: format!("pedmd {}", env!("CARGO_PKG_VERSION")),
            ..Default::default()
        }))
        .await?;
        let first = match first {
            Some(m) => Some(m),
            None => match tokio::time::timeout(FIRST_MESSAGE_WITHIN, s.read()).await {
                Ok(r) => r?,
                Err(_) => return Err(ConnError::Protocol("no message within 30 seconds".into())),
            },
        };
        match first {
            None => Ok(()),
            Some(Client::AcceptMsg(a)) => {
                let info = Info(&a.info_msgs);
                let started = wall(a.submit_time);
                let id = a.expect_iobufs.then(Uuid::now_v7);
                info.require()?;
                let ev = event(
                    self.client.clone(),
                    SudoVerdict::Accepted,
                    started,
                    &info,
                    None,
                    id,
                );
                let (argv, run_as, user) = (ev.argv.clone(), ev.run_as.clone(), ev.user.clone());
                let grant = self.server.cp.record_sudo_event(self.host, ev).await?;
                let Some(id) = id else {
                    return self.drain(s).await;
                };
                pedm_core::model::validate_name("user", &user).map_err(|_| {
                    ConnError::Protocol(format!(
                        "cannot keep the I/O log of user {user:?}: not a name pedm records"
                    ))
                })?;
                let mut header = pedm_cast::Header::new(
                    info.number("columns").unwrap_or(80).clamp(1, 10_000) as u32,
                    info.number("lines").unwrap_or(24).clamp(1, 10_000) as u32,
                );
                header.timestamp = Some(started.as_second());
                header.command = Some(argv.join(" "));
                let meta = LogMeta {
                    id,
                    host: self.host.to_string(),
                    user,
                    run_as: run_as.unwrap_or_else(|| "root".into()),
                    argv,
                    started_at: started,
                    grant,
                };
                self.server.claim(id);
                let log = tokio::task::block_in_place(|| self.server.spool.create(meta, &header));
                let log = match log {
                    Ok(l) => l,
                    Err(e) => {
                        self.server.release(id);
                        return Err(e.into());
                    }
                };
                self.log = Some(log);
                s.send(Server::LogId(id.to_string())).await?;
                self.io(s).await
            }
            Some(Client::RejectMsg(r)) => {
                let when = wall(r.submit_time);
                self.event_only(s, SudoVerdict::Rejected, when, &r.info_msgs, r.reason)
                    .await
            }
            Some(Client::AlertMsg(a)) => {
                let when = wall(a.alert_time);
                self.event_only(s, SudoVerdict::Alert, when, &a.info_msgs, a.reason)
                    .await
            }
            Some(Client::RestartMsg(r)) => {
                let point = r
                    .resume_point
                    .and_then(|p| p.duration())
                    .ok_or_else(|| ConnError::Protocol("restart without a resume point".into()))?;
                let id = Uuid::parse_str(&r.log_id)
                    .map_err(|_| IoLogError::Unknown(r.log_id.chars().take(100).collect()))?;
                if !self.server.claim(id) {
                    return Err(ConnError::Protocol(format!(
                        "I/O log {id} is being written by another connection"
                    )));
                }
                match tokio::task::block_in_place(|| {
                    self.server.spool.resume(self.host, &r.log_id, point)
                }) {
                    Ok(log) => self.log = Some(log),
                    Err(e) => {
                        self.server.release(id);
                        return Err(e.into());
                    }
                }
                tracing::info!(host = self.host, %id, ?point, "sudo log server: log resumed");
                self.io(s).await
            }
            Some(other) => Err(ConnError::Protocol(format!(
                "expected an accept, reject, alert or restart message, got {}",
                name(&other)
            ))),
        }
    }

    /// A reject or alert message: its event, then the client closes.
    async fn event_only<S: AsyncRead + AsyncWrite>(
        &mut self,
        s: &mut Wire<S>,
        verdict: SudoVerdict,
        at: jiff::Timestamp,
        info: &[InfoMessage],
        reason: String,
    ) -> Result<(), ConnError> {
        if verdict == SudoVerdict::Rejected {
            Info(info).require()?;
        }
        let ev = event(
            self.client.clone(),
            verdict,
            at,
            &Info(info),
            Some(reason),
            None,
        );
        self.server.cp.record_sudo_event(self.host, ev).await?;
        self.drain(s).await
    }

    /// After an event-only message: the client closes, or sends the exit message first.
    async fn drain<S: AsyncRead + AsyncWrite>(&mut self, s: &mut Wire<S>) -> Result<(), ConnError> {
        match s.read().await? {
            None | Some(Client::ExitMsg(_)) => Ok(()),
            Some(other) => Err(ConnError::Protocol(format!(
                "unexpected {} without an I/O log",
                name(&other)
            ))),
        }
    }

    /// The I/O log: buffers until the exit message; commit points as they become durable.
    async fn io<S: AsyncRead + AsyncWrite>(&mut self, s: &mut Wire<S>) -> Result<(), ConnError> {
        let interval = self.server.settings.commit_interval;
        let record_input = self.server.settings.record_input;
        let max_bytes = self.server.settings.max_recording_bytes;
        let mut full = false;
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let msg = tokio::select! {
                m = s.read() => m?,
                _ = tick.tick() => {
                    self.commit(s).await?;
                    continue;
                }
            };
            let Some(log) = self.log.as_mut() else {
                return Ok(());
            };
            let delay = |t: Option<TimeSpec>| {
                t.and_then(|t| t.duration())
                    .ok_or_else(|| ConnError::Protocol("a record without a valid delay".into()))
            };
            match msg {
                None => return Ok(()), // dropped: the last commit stands
                Some(Client::TtyoutBuf(b) | Client::StdoutBuf(b) | Client::StderrBuf(b)) => {
                    log.advance(delay(b.delay)?);
                    let (n, stopped) = room(log, &mut full, max_bytes, &b.data);
                    log.output(&b.data[..n])?;
                    if stopped {
                        log.marker(&full_marker(max_bytes))?;
                    }
                }
                Some(Client::TtyinBuf(b) | Client::StdinBuf(b)) => {
                    log.advance(delay(b.delay)?);
                    if record_input {
                        let (n, stopped) = room(log, &mut full, max_bytes, &b.data);
                        log.input(&b.data[..n])?;
                        if stopped {
                            log.marker(&full_marker(max_bytes))?;
                        }
                    }
                }
                Some(Client::WinsizeEvent(w)) => {
                    log.advance(delay(w.delay)?);
                    let dim = |v: i32| u16::try_from(v).unwrap_or(u16::MAX).max(1);
                    log.resize(dim(w.cols), dim(w.rows))?;
                }
                Some(Client::SuspendEvent(e)) => {
                    log.advance(delay(e.delay)?);
                    let signal: String = e.signal.chars().take(16).collect();
                    log.marker(&format!("suspend {signal}"))?;
                }
                Some(Client::AlertMsg(a)) => {
                    let info = Info(&a.info_msgs);
                    let at = wall(a.alert_time);
                    let id = log.meta.id;
                    let mut ev = event(
                        self.client.clone(),
                        SudoVerdict::Alert,
                        at,
                        &info,
                        Some(a.reason),
                        Some(id),
                    );
                    if ev.argv.is_empty() {
                        ev.argv = log.meta.argv.clone();
                        ev.user = log.meta.user.clone();
                    }
                    self.server.cp.record_sudo_event(self.host, ev).await?;
                }
                Some(Client::ExitMsg(x)) => {
                    let marker = if !x.signal.is_empty() {
                        format!("signal {}", x.signal.chars().take(16).collect::<String>())
                    } else if !x.error.is_empty() {
                        format!("error {}", x.error.chars().take(200).collect::<String>())
                    } else {
                        format!("exit {}", x.exit_value)
                    };
                    let exit_code = x.signal.is_empty().then_some(x.exit_value);
                    let ended_by =
                        (!x.error.is_empty()).then(|| x.error.chars().take(200).collect());
                    // The recording durable and the session recorded, then the last
                    // commit point: sudo ends once it has it.
                    let point = log.elapsed();
                    let log = self
                        .log
                        .take()
                        .ok_or_else(|| ConnError::Protocol("the log ended twice".into()))?;
                    let id = log.meta.id;
                    let done = self.server.finish(log, &marker, exit_code, ended_by).await;
                    self.server.release(id);
                    done?;
                    s.send(Server::CommitPoint(TimeSpec::from_duration(point)))
                        .await?;
                    return Ok(());
                }
                Some(other) => {
                    return Err(ConnError::Protocol(format!(
                        "unexpected {} in an I/O log",
                        name(&other)
                    )));
                }
            }
        }
    }

    async fn commit<S: AsyncRead + AsyncWrite>(
        &mut self,
        s: &mut Wire<S>,
    ) -> Result<(), ConnError> {
        let Some(log) = self.log.as_mut() else {
            return Ok(());
        };
        if !log.dirty() {
            return Ok(());
        }
        let point = tokio::task::block_in_place(|| log.commit())?;
        s.send(Server::CommitPoint(TimeSpec::from_duration(point)))
            .await?;
        Ok(())
    }
}

/// The audit record of an event-log message.
fn event(
    client: Option<String>,
    verdict: SudoVerdict,
    at: jiff::Timestamp,
    info: &Info,
    reason: Option<String>,
    session: Option<Uuid>,
) -> SudoEvent {
    let argv = info
        .strings("runargv")
        .filter(|a| !a.is_empty())
        .or_else(|| info.string("command").map(|c| vec![c]))
        .unwrap_or_default();
    let (argv, argv_cut) = pedm_api::agent::cut_argv(&argv, ARGV_BYTES);
    let bounded = |s: String| s.chars().take(4096).collect::<String>();
    SudoEvent {
        verdict,
        at,
        user: info
            .string("submituser")
            .map(bounded)
            .unwrap_or_else(|| "unknown".into()),
        run_as: info.string("runuser").map(bounded),
        argv,
        argv_cut,
        cwd: info
            .string("runcwd")
            .or_else(|| info.string("submitcwd"))
            .map(bounded),
        tty: info.string("ttyname").map(bounded),
        reason: reason.map(bounded),
        session,
        client,
    }
}

/// How much of `data` still fits in a recording of at most `max` bytes (counting raw bytes;
/// escaping may take the file a little past it), and whether this is where it stopped
/// fitting (the caller marks it once; `full` then keeps anything more out).
fn room(log: &IoLog, full: &mut bool, max: u64, data: &[u8]) -> (usize, bool) {
    if *full {
        return (0, false);
    }
    let room = usize::try_from(max.saturating_sub(log.bytes())).unwrap_or(usize::MAX);
    if data.len() <= room {
        return (data.len(), false);
    }
    *full = true;
    (room, true)
}

/// The marker of a recording that reached its limit.
fn full_marker(max: u64) -> String {
    format!("output beyond {max} bytes not kept (agents.max_recording_bytes)")
}

/// A message's wall-clock time, or now when it has none.
fn wall(t: Option<TimeSpec>) -> jiff::Timestamp {
    t.and_then(|t| t.timestamp())
        .unwrap_or_else(jiff::Timestamp::now)
}

/// The event-log keys of a message.
struct Info<'a>(&'a [InfoMessage]);

impl Info<'_> {
    /// The keys `sudo_logsrv.proto` requires of an accept or reject message (a message
    /// without one is refused, and nothing is recorded).
    fn require(&self) -> Result<(), ConnError> {
        for key in ["submituser", "runuser", "command"] {
            if self.string(key).is_none_or(|v| v.is_empty()) {
                return Err(ConnError::Protocol(format!(
                    "the message lacks `{key}`, which the log server protocol requires"
                )));
            }
        }
        Ok(())
    }

    fn get(&self, key: &str) -> Option<&InfoValue> {
        self.0
            .iter()
            .find(|m| m.key == key)
            .and_then(|m| m.value.as_ref())
    }

    fn string(&self, key: &str) -> Option<String> {
        match self.get(key)? {
            InfoValue::Strval(s) => Some(s.clone()),
            _ => None,
        }
    }

    fn strings(&self, key: &str) -> Option<Vec<String>> {
        match self.get(key)? {
            InfoValue::Strlistval(l) => Some(l.strings.clone()),
            _ => None,
        }
    }

    fn number(&self, key: &str) -> Option<i64> {
        match self.get(key)? {
            InfoValue::Numval(n) => Some(*n),
            _ => None,
        }
    }
}

fn name(m: &Client) -> &'static str {
    match m {
        Client::AcceptMsg(_) => "accept message",
        Client::RejectMsg(_) => "reject message",
        Client::ExitMsg(_) => "exit message",
        Client::RestartMsg(_) => "restart message",
        Client::AlertMsg(_) => "alert message",
        Client::TtyinBuf(_) => "ttyin buffer",
        Client::TtyoutBuf(_) => "ttyout buffer",
        Client::StdinBuf(_) => "stdin buffer",
        Client::StdoutBuf(_) => "stdout buffer",
        Client::StderrBuf(_) => "stderr buffer",
        Client::WinsizeEvent(_) => "window size event",
        Client::SuspendEvent(_) => "suspend event",
        Client::HelloMsg(_) => "hello message",
    }
}

/// A connection's two directions: length-prefixed frames in (cancel-safe: a frame half read
/// when a commit tick wins the race is kept for the next read), messages out.
struct Wire<S> {
    frames: FramedRead<ReadHalf<S>, LengthDelimitedCodec>,
    out: WriteHalf<S>,
}

impl<S: AsyncRead + AsyncWrite> Wire<S> {
    fn new(stream: S) -> Self {
        let (r, w) = tokio::io::split(stream);
        let codec = LengthDelimitedCodec::builder()
            .length_field_length(4)
            .big_endian()
            .max_frame_length(MAX_MESSAGE as usize)
            .new_codec();
        Wire {
            frames: FramedRead::new(r, codec),
            out: w,
        }
    }

    /// Reads one message; `None` when the client closed the connection between messages.
    async fn read(&mut self) -> Result<Option<Client>, ConnError> {
        let frame = match self.frames.next().await {
            None => return Ok(None),
            Some(Ok(f)) => f,
            Some(Err(e)) if e.kind() == std::io::ErrorKind::InvalidData => {
                return Err(ConnError::Protocol(format!(
                    "a message larger than the protocol's {MAX_MESSAGE} bytes"
                )));
            }
            Some(Err(e)) => return Err(e.into()),
        };
        let msg = ClientMessage::decode(&frame[..])
            .map_err(|e| ConnError::Protocol(format!("malformed client message: {e}")))?;
        match msg.r#type {
            Some(m) => Ok(Some(m)),
            None => Err(ConnError::Protocol("an empty client message".into())),
        }
    }

    async fn send(&mut self, m: Server) -> std::io::Result<()> {
        let bytes = ServerMessage { r#type: Some(m) }.encode_to_vec();
        let mut out = Vec::with_capacity(bytes.len() + 4);
        out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        out.extend_from_slice(&bytes);
        self.out.write_all(&out).await?;
        self.out.flush().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(key: &str, v: &str) -> InfoMessage {
        InfoMessage {
            key: key.into(),
            value: Some(InfoValue::Strval(v.into())),
        }
    }

    #[test]
    fn an_event_without_a_required_key_is_refused_naming_it() {
        let whole = vec![
            info("submituser", "alice"),
            info("runuser", "root"),
            info("command", "/usr/bin/id"),
        ];
        assert!(Info(&whole).require().is_ok());
        for missing in ["submituser", "runuser", "command"] {
            let partial: Vec<_> = whole.iter().filter(|m| m.key != missing).cloned().collect();
            match Info(&partial).require() {
                Err(ConnError::Protocol(m)) => assert!(m.contains(missing), "{m}"),
                other => panic!("{missing}: {other:?}"),
            }
        }
        let empty_user = vec![info("submituser", ""), whole[1].clone(), whole[2].clone()];
        assert!(Info(&empty_user).require().is_err());
    }
}
