//! `pedmd`: the control plane server. Wires configuration, storage, the control plane, the
//! expiry scheduler and the HTTP transport together.

pub mod agents;
pub mod audit_signer;
pub mod config;
mod console_agents;
mod email;
pub mod evidence;
pub mod http;
mod key_file;
pub mod live;
mod notify;
pub mod oidc;
pub mod oncall;
pub mod outbox;
pub mod policy;
pub mod provision;
mod shared_keys;
mod slack;
pub mod sudo_log;
pub mod task_dispatch;
pub mod tickets;
pub mod tls;
pub mod witness;
pub mod workload;

use anyhow::Context;
use clap::Parser;
use config::{Config, Resolved};
use pedm_core::clock::SystemClock;
use pedm_core::decision::BuiltinDecider;
use pedm_core::service::ControlPlane;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use tokio::sync::watch;

#[derive(Debug, Parser)]
#[command(name = "pedmd", version, about = "pedm control plane server")]
pub struct Args {
    /// TOML configuration file. Every key can also be set as PEDM_<KEY> (nested: PEDM_LIMITS__MAX_DURATION).
    #[arg(long, short, global = true)]
    pub config: Option<PathBuf>,
    /// Development mode: 127.0.0.1:8470, data under ./pedm-data, readable logs.
    #[arg(long, global = true)]
    pub dev: bool,
    /// Address to listen on (overrides the configuration).
    #[arg(long)]
    pub listen: Option<String>,
    /// Serve plain HTTP on a non-loopback address (without `[tls]`): tokens then cross the
    /// network in clear. Refused without this flag; a warning is logged on every start.
    #[arg(long)]
    pub insecure_http: bool,
    /// Data directory (overrides the configuration).
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
    /// Database URL: sqlite://PATH or postgres://... (overrides the configuration).
    #[arg(long, global = true)]
    pub database_url: Option<String>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Administration of the audit log (run with the server stopped).
    #[command(subcommand)]
    Audit(AuditAdmin),
    /// Run a witness: cosign checkpoints of the given logs only when they grew consistently.
    Witness(witness::WitnessArgs),
}

#[derive(Debug, clap::Subcommand)]
pub enum AuditAdmin {
    /// Take on a database that is behind (or forked from) the newest checkpoint this server
    /// signed: records `audit.rollback_accepted` with both heads and sets the old trusted head
    /// aside. Auditors and witnesses holding the newer checkpoint will still see the rollback.
    AcceptRollback {
        /// Required: you have read what this does.
        #[arg(long)]
        yes: bool,
    },
}

pub fn main() -> ExitCode {
    let args = Args::parse();
    // One rustls crypto provider in the process (aws-lc-rs), whoever builds a TLS config.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let work = async {
        match args.command {
            None => run(args).await,
            Some(Command::Witness(w)) => {
                init_logging(false);
                witness::run(w).await
            }
            Some(Command::Audit(AuditAdmin::AcceptRollback { yes })) => {
                accept_rollback(&args, yes).await
            }
        }
    };
    match rt.block_on(work) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn settings(args: &Args) -> anyhow::Result<Resolved> {
    let mut base = Config::default();
    if args.dev {
        base.data_dir = PathBuf::from("pedm-data");
    }
    let mut cfg = Config::load(args.config.as_deref(), base)?;
    if let Some(l) = &args.listen {
        cfg.listen = l.clone();
    }
    if let Some(d) = &args.data_dir {
        cfg.data_dir = d.clone();
    }
    if let Some(u) = &args.database_url {
        cfg.database_url = u.clone();
    }
    cfg.resolve()
}

fn init_logging(json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("PEDM_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tower_http=info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        b.json().init();
    } else {
        b.init();
    }
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let cfg = settings(&args)?;
    init_logging(cfg.json_logs);
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| tracing::warn!(error = %e, "metrics disabled"))
        .ok();

    if cfg.tls.is_none() && !args.dev && !cfg.listen.ip().is_loopback() {
        if !args.insecure_http {
            anyhow::bail!(
                "refusing to serve plain HTTP on {} (not a loopback address): bearer tokens \
                 would cross the network in clear. Configure [tls] cert and key, or pass \
                 --insecure-http if something in front of pedmd terminates TLS",
                cfg.listen
            );
        }
        tracing::warn!(
            listen = %cfg.listen,
            "INSECURE: serving plain HTTP on a non-loopback address (--insecure-http); tokens \
             cross the network in clear"
        );
    }

    create_private_dir(&cfg.data_dir)?;
    // Read before the database is touched: a missing or unsafe KEK file stops pedmd first.
    let kek = cfg
        .key_encryption_key
        .as_deref()
        .map(|k| shared_keys::Keks::load(k, &cfg.previous_key_encryption_keys))
        .transpose()?;
    // [tls] files, or for --dev without them a local CA and server certificate.
    let (tls_files, dev_ca) = match (&cfg.tls, args.dev) {
        (Some(pair), _) => (Some(pair.clone()), None),
        (None, true) => {
            let d = tls::dev::ensure(&cfg.data_dir).context("--dev TLS")?;
            let ca = std::fs::canonicalize(&d.ca_cert).unwrap_or(d.ca_cert);
            (Some((d.cert, d.key)), Some(ca))
        }
        (None, false) => None.unzip(),
    };
    let store = pedm_store::open_store(&cfg.database_url)
        .await
        .context("cannot open the database")?;
    if cfg.seal_personal_data
        && let Some(current) = &cfg.key_encryption_key
    {
        // Before anything is written: every event from now on has its personal data sealed.
        let load = |p: &std::path::Path| {
            pedm_pki::sealed::KeyEncryptionKey::load(p).context("key_encryption_key")
        };
        let previous = cfg
            .previous_key_encryption_keys
            .iter()
            .map(|p| load(p))
            .collect::<anyhow::Result<Vec<_>>>()?;
        store.seal_personal_data(std::sync::Arc::new(
            pedm_pki::personal::PersonalDataKeys::new(load(current)?, previous),
        ))?;
    }
    let (sinks, notify_options) = cfg.notify.clone().into_parts();
    let notifier = if sinks.is_empty() {
        None
    } else {
        Some(
            pedm_notify::Notifier::start(sinks, notify_options)
                .context("notify")?
                .0,
        )
    };
    let head_file = audit_signer::head_path(&cfg.audit_signing_key);
    // Before anything writes (bootstrap would re-create an admin in a wiped database).
    if let Err(e) = audit_signer::check_rollback(store.as_ref(), &head_file).await {
        let msg = format!("{e:#}");
        tracing::error!(problem = %msg, "refusing to start: the audit log is behind what was signed");
        if let Some(n) = notifier {
            n.notify(pedm_notify::Notification::new(
                "audit.integrity",
                pedm_notify::Severity::High,
                format!("AUDIT LOG ROLLBACK: pedmd refuses to start: {msg}"),
                serde_json::json!({ "problem": msg }),
            ));
            n.shutdown(std::time::Duration::from_secs(5)).await;
        }
        anyhow::bail!("refusing to start: {msg}");
    }
    let on_call = Arc::new(oncall::OnCall::new(cfg.oncall.clone())?);
    let mut cp = ControlPlane::new(
        store,
        Arc::new(BuiltinDecider),
        Arc::new(SystemClock),
        cfg.limits.clone(),
    )
    .with_policy_compiler(Arc::new(policy::CedarCompiler {
        options: cfg.policy_options.clone(),
        on_call: on_call.clone(),
    }))
    .with_policy_approvals(cfg.policy_approvals)
    .with_exec_alerts(cfg.exec_alerts.clone())
    .with_policy_properties(cfg.policy_properties.clone())
    .with_policy_owners_required(cfg.policy_owners_required)
    .with_audit_retention(cfg.audit_retention_secs);
    let ssh_ca = pedm_pki::SshAuthority::load(&cfg.ssh_user_ca_keys, &cfg.ssh_host_ca_keys)
        .context("ssh")?;
    cp = cp.with_ssh_ca(Arc::new(ssh_ca), cfg.ssh_max_host_cert_secs);
    if tls_files.is_some() {
        // Over HTTPS the registration token only enrolls the agent for a certificate.
        cp = cp.with_host_enroll_ttl(cfg.agent_enroll_ttl_secs);
    }
    cp = cp.with_observer(Arc::new(notify::LoudObserver));
    // Webhooks, Slack, mail and ticket comments deliver from the outbox.
    let (outbox_wake, _) = watch::channel(0u64);
    let outbox_wake_rx = outbox_wake.subscribe();
    cp = cp.with_observer(Arc::new(outbox::Wake(outbox_wake)));
    let slack = Arc::new(
        pedm_notify::slack::Slack::new(cfg.notify.slack.clone()).map_err(anyhow::Error::msg)?,
    );
    let tickets = Arc::new(tickets::Tickets::new(&cfg.tickets)?);
    if !tickets.is_empty() {
        cp = cp.with_tickets(tickets.clone());
    }
    let mailer = match &cfg.notify.email {
        None => None,
        Some(c) => Some(Arc::new(
            pedm_notify::email::Mailer::new(c, cfg.console.public_url.as_deref())
                .map_err(anyhow::Error::msg)?,
        )),
    };
    let agent_key = shared_keys::signing_key(
        cp.store().as_ref(),
        kek.as_ref(),
        shared_keys::AGENT_KEY,
        &cfg.agent_signing_key,
    )
    .await
    .context("agents.signing_key")?;
    let client_ca = match &tls_files {
        Some(_) => Some(Arc::new(
            tls::client_ca::ClientCa::ensure(&cfg.data_dir).context("agents' client CA")?,
        )),
        None => None,
    };
    let agents = Arc::new(agents::AgentHub::new(
        agent_key,
        cfg.policy_options
            .default_timezone
            .iana_name()
            .unwrap_or("UTC")
            .to_string(),
        cfg.recordings_dir.clone(),
        cfg.max_recording_bytes,
        agents::AgentTls {
            client_ca: client_ca.clone(),
            revoked: Arc::default(),
            cert_lifetime_secs: cfg.agent_cert_lifetime_secs,
            // A device is re-enrolled by its owner when this ends.
            device_cert_lifetime_secs: 90 * 86_400,
        },
    ));
    cp = cp.with_observer(agents.clone());
    let console_live = Arc::new(pedm_console::LiveChanges::default());
    cp = cp.with_observer(console_live.clone());
    let issuer = match &cfg.oidc_issuer {
        Some((url, keys)) => Some(Arc::new(
            pedm_pki::oidc::OidcIssuer::load(url, keys).context("oidc_issuer")?,
        )),
        None => None,
    };
    let id_tokens: Option<Arc<dyn pedm_provision::IdTokenSigner>> = issuer
        .clone()
        .map(|i| Arc::new(provision::IdTokens(i)) as Arc<dyn pedm_provision::IdTokenSigner>);
    let provisioners = provision::Provisioners::new(
        pedm_provision::build_all(&cfg.provision.targets, id_tokens.as_ref())
            .map_err(|e| anyhow::anyhow!("provision.targets: {e}"))?,
        cfg.provision.roles.clone(),
    );
    let provisioned = !provisioners.is_empty();
    if provisioned {
        cp = cp.with_provisioning(Arc::new(provisioners));
    }
    if notifier.is_some() || !slack.is_empty() || !tickets.is_empty() || mailer.is_some() {
        cp = cp.with_outbox();
    }
    if let Some(lead) = cfg.notify.expiry_warning {
        cp = cp.with_expiry_warning(i64::try_from(lead.as_secs()).unwrap_or(i64::MAX));
    }
    let cp = Arc::new(cp);

    let token_file = cfg.data_dir.join("admin.token");
    if let Some(minted) = cp.bootstrap(&cfg.admin_user).await? {
        write_secret_file(&token_file, &minted.token)?;
        tracing::info!(user = %cfg.admin_user, file = %token_file.display(), "created the bootstrap admin");
    }

    cp.load_policies()
        .await
        .context("cannot load the policies")?;
    tracing::info!(
        version = cp.policy_version(),
        changes_need_approvals = cp.policy_approvals_required(),
        "policies in force"
    );
    // Properties added to the configuration bind the next apply; say now if the set in force
    // already breaks one (in the background: a large directory takes a while).
    let props = cp.clone();
    tokio::spawn(async move {
        match props.properties_in_force().await {
            Ok(Some(r)) => {
                for b in r.broken() {
                    let example = b.counterexample.as_ref().map(|c| c.to_string());
                    tracing::error!(property = %b.name, counterexample = ?example,
                        "the policies in force break a policy property; the next apply must keep it");
                }
            }
            Ok(None) => {}
            Err(e) => tracing::error!(error = %e, "cannot check the policy properties"),
        }
    });

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let scheduler = tokio::spawn(pedm_core::scheduler::run_expiry(
        cp.clone(),
        shutdown_rx.clone(),
    ));
    let runner = provisioned.then(|| {
        tokio::spawn(pedm_core::scheduler::run_provisioning(
            cp.clone(),
            shutdown_rx.clone(),
        ))
    });
    if let (true, Some(every)) = (provisioned, cfg.reconcile_interval) {
        tokio::spawn(pedm_core::scheduler::run_reconcile(
            cp.clone(),
            every,
            shutdown_rx.clone(),
        ));
    }
    let auth_failures = tokio::spawn(flush_auth_failures(cp.clone(), shutdown_rx.clone()));
    tokio::spawn(on_call.clone().run(cp.clone(), shutdown_rx.clone()));
    tokio::spawn(pedm_core::scheduler::run_property_watch(
        cp.clone(),
        shutdown_rx.clone(),
    ));
    tokio::spawn(pedm_core::scheduler::run_follow_ups(
        cp.clone(),
        shutdown_rx.clone(),
    ));
    let mut channels: Vec<Arc<dyn outbox::Channel>> = vec![];
    if let Some(n) = &notifier {
        for sink in n.sink_names() {
            channels.push(Arc::new(notify::WebhookChannel {
                notifier: n.clone(),
                sink: sink.to_string(),
            }));
        }
    }
    for app in 0..slack.apps.len() {
        channels.push(Arc::new(slack::SlackChannel {
            slack: slack.clone(),
            cp: cp.clone(),
            app,
        }));
    }
    if !tickets.is_empty() {
        channels.push(Arc::new(tickets::TicketChannel {
            tickets: tickets.clone(),
            cp: cp.clone(),
        }));
        tokio::spawn(tickets::run(
            tickets.clone(),
            cp.clone(),
            shutdown_rx.clone(),
        ));
    }
    if let Some(m) = &mailer {
        channels.push(Arc::new(email::MailChannel {
            mailer: m.clone(),
            cp: cp.clone(),
        }));
    }
    tokio::spawn(follow_policy_versions(
        cp.clone(),
        agents.clone(),
        shutdown_rx,
    ));

    let key = shared_keys::signing_key(
        cp.store().as_ref(),
        kek.as_ref(),
        shared_keys::AUDIT_KEY,
        &cfg.audit_signing_key,
    )
    .await
    .context("audit.signing_key")?;
    let signer = Arc::new(
        audit_signer::AuditSigner::open(
            cp.store().clone(),
            key,
            cfg.audit_origin.clone(),
            Some(head_file),
            cfg.audit_witnesses.clone(),
        )
        .context("cannot read the audit log")?
        .with_alerts(notifier.clone()),
    );
    tokio::spawn(
        signer
            .clone()
            .run(cfg.audit_checkpoint_interval, shutdown_tx.subscribe()),
    );
    let outbox_backlog = Arc::new(outbox::Backlog::default());
    let holder = outbox::holder_id(&cfg.data_dir).context("data directory: instance-id")?;
    for channel in channels {
        tokio::spawn(outbox::run(
            cp.clone(),
            channel,
            holder.clone(),
            outbox_wake_rx.clone(),
            signer.origin().to_string(),
            outbox_backlog.clone(),
            shutdown_tx.subscribe(),
        ));
    }
    tokio::spawn(outbox::purge(cp.clone(), shutdown_tx.subscribe()));

    let acceptor = match &tls_files {
        Some((cert, key)) => {
            let certs = Arc::new(
                tls::ReloadingCert::load(cert, key)
                    .context("[tls]")?
                    .with_alerts(notifier.clone()),
            );
            tls::watch_for_reload(
                certs.clone(),
                cfg.tls_watch_interval,
                shutdown_tx.subscribe(),
            )
            .context("cannot watch for SIGHUP")?;
            tracing::info!(cert = %cert.display(), sha256 = %certs.fingerprint(), "serving HTTPS");
            let clients = match &agents.tls.client_ca {
                Some(ca) => {
                    agents.tls.revoked.replace(revoked_peers(&cp).await?);
                    tokio::spawn(follow_revoked_hosts(
                        cp.clone(),
                        agents.clone(),
                        shutdown_tx.subscribe(),
                    ));
                    Some(
                        tls::client_auth::HostCertVerifier::new(
                            ca.cert_der.clone(),
                            agents.tls.revoked.clone(),
                        )
                        .context("agents' client CA")?,
                    )
                }
                None => None,
            };
            if let Some(settings) = &cfg.sudo_log {
                let ca = agents.tls.client_ca.as_ref().context("agents' client CA")?;
                let hosts = tls::client_auth::HostCertVerifier::required(
                    ca.cert_der.clone(),
                    agents.tls.revoked.clone(),
                )
                .context("agents' client CA")?;
                let listener = tokio::net::TcpListener::bind(settings.listen)
                    .await
                    .with_context(|| {
                        format!("sudo_log.listen: cannot listen on {}", settings.listen)
                    })?;
                tracing::info!(addr = %settings.listen, "sudo log server listening (TLS, host certificates)");
                let server = Arc::new(sudo_log::LogServer::new(
                    cp.clone(),
                    cfg.recordings_dir.clone(),
                    settings.clone(),
                ));
                tokio::spawn(server.serve(
                    listener,
                    tls::log_server_config(certs.clone(), hosts).context("[tls]")?,
                    shutdown_tx.subscribe(),
                ));
            }
            Some(http::serve::TlsAcceptor::from(
                tls::server_config(certs, clients).context("[tls]")?,
            ))
        }
        None if cfg.sudo_log.is_some() => anyhow::bail!(
            "sudo_log.listen: the sudo log server needs [tls] (or --dev): hosts authenticate \
             with their client certificate"
        ),
        None => None,
    };
    let scheme = if acceptor.is_some() { "https" } else { "http" };
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cfg.listen))?;
    let addr = listener.local_addr()?;
    let sso = Arc::new(oidc::Providers::new(cfg.oidc.clone()));
    let state = http::AppState {
        cp: cp.clone(),
        metrics,
        audit: Some(signer),
        agents: Some(agents),
        sso: sso.clone(),
        workload: Arc::new(workload::resolve(&cfg.workload)?),
        scim: cfg.scim,
        slack,
        mailer,
        notifier: notifier.clone(),
        outbox_backlog,
        tickets: tickets.clone(),
        issuer,
    };
    let mut console = pedm_console::Console::new(cp.clone(), cfg.console.clone(), console_live)
        .with_audit(Arc::new(http::audit::ConsoleAudit(state.clone())))
        .with_channels(Arc::new(http::slack::ConsoleChannels(state.clone())))
        .with_recordings(cfg.recordings_dir.clone());
    if let Some(agents) = &state.agents {
        console = console.with_agents(Arc::new(console_agents::ConsoleAgents(agents.clone())));
    }
    if !sso.by_name.is_empty() {
        console = console.with_sso(Arc::new(http::sso::ConsoleSso {
            cp: cp.clone(),
            providers: sso,
        }));
    }
    let app = http::router(
        state,
        Some(console),
        cfg.max_body_bytes,
        cfg.request_timeout,
    );

    // The first line on stdout is for people and for tests that start us on port 0. Written
    // in one go, and a closed stdout (a reader that stopped after the first line) does not
    // stop the server.
    let mut banner = format!("pedmd listening on {scheme}://{addr}\n");
    if token_file.exists() {
        banner.push_str(&format!("admin token: {}\n", token_file.display()));
    }
    if let Some(ca) = &dev_ca {
        banner.push_str(&format!("dev CA: {}\n", ca.display()));
    }
    if args.dev {
        let ca = dev_ca
            .as_ref()
            .map(|c| format!(" PEDM_CA={}", c.display()))
            .unwrap_or_default();
        banner.push_str(&format!(
            "try: export PEDM_URL={scheme}://{addr}{ca} PEDM_TOKEN=$(cat {}); pedm whoami\n",
            token_file.display()
        ));
    }
    {
        let mut out = std::io::stdout().lock();
        if let Err(e) = out.write_all(banner.as_bytes()).and_then(|_| out.flush()) {
            tracing::warn!(error = %e, "cannot write the start banner to stdout");
        }
    }

    http::serve::serve(listener, app, shutdown_signal(), acceptor)
        .await
        .context("server failed")?;
    let _ = shutdown_tx.send(true);
    let _ = scheduler.await;
    let _ = auth_failures.await;
    if let Some(r) = runner {
        let _ = r.await;
    }
    if let Some(n) = notifier {
        n.shutdown(std::time::Duration::from_secs(5)).await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// Another instance sharing the database may apply policies; pick them up within seconds.
/// Records the aggregated failed authentications as their windows close (every 10 s), and
/// what is left at shutdown.
async fn flush_auth_failures(cp: Arc<ControlPlane>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(10));
    loop {
        let all = tokio::select! {
            _ = tick.tick() => false,
            _ = shutdown.changed() => true,
        };
        if let Err(e) = cp.flush_auth_failures(all).await {
            tracing::warn!(error = %e, "cannot record aggregated authentication failures");
        }
        if all {
            return;
        }
    }
}

async fn follow_policy_versions(
    cp: Arc<ControlPlane>,
    agents: Arc<agents::AgentHub>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
    let mut seen = cp.policy_version();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        match cp.reload_policies_if_changed().await {
            Ok(true) => tracing::info!(
                version = cp.policy_version(),
                "loaded policies applied elsewhere"
            ),
            Ok(false) => {}
            Err(e) => tracing::error!(error = %e, "cannot reload policies"),
        }
        // Applied here or elsewhere: agents enforce the new version from their next snapshot.
        if cp.policy_version() != seen {
            seen = cp.policy_version();
            agents.all_changed();
        }
    }
}

pub(crate) async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

/// `pedmd audit accept-rollback`: records the older log being taken on, with both heads, and
/// sets the trusted head aside (renamed, not deleted).
async fn accept_rollback(args: &Args, yes: bool) -> anyhow::Result<()> {
    let cfg = settings(args)?;
    init_logging(cfg.json_logs);
    let head_file = audit_signer::head_path(&cfg.audit_signing_key);
    let Some(head) = audit_signer::read_head(&head_file)? else {
        println!(
            "no trusted head at {}: nothing to accept",
            head_file.display()
        );
        return Ok(());
    };
    let store = pedm_store::open_store(&cfg.database_url)
        .await
        .context("cannot open the database")?;
    let events = audit_signer::present_events(store.as_ref()).await?;
    let latest = store.latest_checkpoint().await?.map(|c| c.size);
    if audit_signer::check_rollback(store.as_ref(), &head_file)
        .await
        .is_ok()
    {
        println!(
            "the database ({events} events) extends the trusted head ({} events): nothing to accept",
            head.checkpoint.size
        );
        return Ok(());
    }
    if !yes {
        anyhow::bail!(
            "the database holds {events} events; the trusted head signs {} events. Taking this \
             database on loses (or forks from) what was signed; auditors and witnesses holding \
             the newer checkpoint will see it. Run again with --yes to record it and go on",
            head.checkpoint.size
        );
    }
    // Checkpoints of more events than the database holds sign events it no longer has; kept,
    // they would refuse the log as it grows again. They go (listed in full in the event).
    let kept = i64::try_from(events).context("event count")?;
    let stale: Vec<serde_json::Value> = store
        .checkpoints()
        .await?
        .into_iter()
        .filter(|c| c.size > kept)
        .map(|c| {
            serde_json::json!({
                "size": c.size, "root": hex::encode(c.root), "time": c.time,
                "key_id": c.key_id, "signature": hex::encode(&c.signature),
            })
        })
        .collect();
    let who = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    let event = pedm_core::audit::NewAuditEvent::new(
        jiff::Timestamp::now(),
        &format!("local:{who}"),
        "audit.rollback_accepted",
        Some("audit:log".into()),
    )
    .data(serde_json::json!({
        "trusted_head": {
            "size": head.checkpoint.size,
            "root": hex::encode(head.checkpoint.root),
            "time": head.checkpoint.time,
            "key_id": head.checkpoint.key_id,
        },
        "database_events": events,
        "database_latest_checkpoint": latest,
        "retired_checkpoints": stale,
    }));
    // The log ends at the last event present; the record of the rollback chains onto it.
    let retired = store
        .rewind_audit(kept)
        .await
        .context("cannot rewind the log to the database's last event")?;
    store
        .commit(pedm_core::store::Changeset::new().event(event))
        .await
        .context("cannot record the rollback")?;
    let aside = head_file.with_extension(format!(
        "head.rolled-back-{}",
        jiff::Timestamp::now().as_second()
    ));
    std::fs::rename(&head_file, &aside)
        .with_context(|| format!("cannot move {} aside", head_file.display()))?;
    tracing::warn!(
        trusted = head.checkpoint.size,
        events,
        "audit rollback accepted"
    );
    println!(
        "accepted: the database ({events} events) replaces the trusted head ({} events), kept \
         as {}; {retired} checkpoints beyond {events} events removed; recorded as \
         audit.rollback_accepted",
        head.checkpoint.size,
        aside.display()
    );
    Ok(())
}

/// The data directory holds the database and the admin token: owner only.
fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create data directory {}", dir.display()))?;
    }
    Ok(())
}

/// Writes a secret readable by the owner only, refusing to follow or reuse an existing file.
fn write_secret_file(path: &Path, secret: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| {
            format!(
                "cannot create {} (remove a stale one from an earlier data directory)",
                path.display()
            )
        })?;
    f.write_all(secret.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    Ok(())
}

/// How often the list of revoked hosts is read again (revocations made by another instance
/// sharing the database reach this one's handshakes within this time).
const REVOKED_HOSTS_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// The revocation list of the handshake: `host:NAME` and `device:ID`.
async fn revoked_peers(cp: &ControlPlane) -> pedm_core::Result<Vec<String>> {
    let hosts = cp
        .revoked_hosts()
        .await?
        .into_iter()
        .map(|h| format!("host:{h}"));
    let devices = cp
        .revoked_devices()
        .await?
        .into_iter()
        .map(|d| format!("device:{d}"));
    Ok(hosts.chain(devices).collect())
}

async fn follow_revoked_hosts(
    cp: Arc<ControlPlane>,
    agents: Arc<agents::AgentHub>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(REVOKED_HOSTS_EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        match revoked_peers(&cp).await {
            Ok(keys) => agents.tls.revoked.replace(keys),
            Err(e) => tracing::warn!(error = %e, "cannot read the revoked hosts and devices"),
        }
    }
}
