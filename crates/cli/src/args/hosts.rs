//! Commands about hosts and what runs on them, and the identities around them: `host`,
//! `device`, `session`, `lock`, `scim`.

use super::*;

#[derive(Debug, Args)]
pub struct AgentOpts {
    /// Run under this grant (needed only when you hold several on this host).
    #[arg(long)]
    pub grant: Option<Uuid>,
    /// The agent's socket.
    #[arg(long, env = "PEDM_AGENT_SOCKET", default_value = pedm_api::socket::DEFAULT_SOCKET)]
    pub socket: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum HostCmd {
    /// Register the agent of a host target (or replace its token); prints the host token
    /// once and the server key the agent pins.
    Register { name: String },
    /// Registered hosts and when their agents last talked to the server.
    List,
    /// Revoke a host: over HTTPS its agent's certificate is refused at the TLS handshake, its
    /// token everywhere; `pedm host register` enrolls it again.
    Revoke {
        name: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Sign a host's SSH key with pedm's host CA (admins): prints the certificate for
    /// sshd's `HostCertificate`, so `pedm ssh` users trust the host without a prompt.
    SshCert {
        /// The host's public key file (such as /etc/ssh/ssh_host_ed25519_key.pub).
        #[arg(long, value_name = "FILE")]
        key: std::path::PathBuf,
        /// A name clients use for the host (repeatable; host names and addresses).
        #[arg(long = "principal", value_name = "NAME", required = true)]
        principals: Vec<String>,
        /// How long the certificate is valid (default 30d).
        #[arg(long, value_name = "DURATION")]
        validity: Option<String>,
        /// Write the certificate here (mode 0644) instead of stdout.
        #[arg(long, value_name = "FILE")]
        output: Option<std::path::PathBuf>,
    },
    /// pedm's SSH CA public keys: `--user` for sshd's TrustedUserCAKeys, `--host` for
    /// known_hosts `@cert-authority` lines (both by default). No token needed.
    SshCa {
        #[arg(long, conflicts_with = "host")]
        user: bool,
        #[arg(long)]
        host: bool,
    },
    /// Fetch the SSH KRL (certificates of grants ended early) for sshd's RevokedKeys,
    /// written atomically to FILE (run it from a timer). No token needed.
    SshKrl {
        #[arg(long, value_name = "FILE")]
        output: std::path::PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum DeviceCmd {
    /// Enroll this machine: a key made here, a certificate from the server's CA (HTTPS only);
    /// trusted once an admin approves it. Later calls present it (`context.device`).
    Enroll {
        /// A name for people (default: the host name).
        #[arg(long)]
        name: Option<String>,
    },
    /// Your devices, or everyone's with --all (admins).
    List {
        #[arg(long)]
        all: bool,
    },
    /// Trust a device (admins; never your own).
    Approve { id: String },
    /// Revoke a device (its owner or an admin): its certificate fails the TLS handshake.
    Revoke { id: String },
}

#[derive(Debug, Subcommand)]
pub enum LockCmd {
    /// Lock a user (--user) or a host (--host) for a time (at most 30d).
    Add {
        #[arg(long, conflicts_with = "host", required_unless_present = "host")]
        user: Option<String>,
        #[arg(long)]
        host: Option<String>,
        /// How long it holds, such as 1h.
        #[arg(long = "for", value_name = "DURATION", allow_hyphen_values = true)]
        duration: DurationArg,
        /// Why (shown in the refusals and the audit log).
        #[arg(long, short = 'r')]
        reason: String,
    },
    /// Locks in force; --all adds lifted and expired ones.
    List {
        #[arg(long)]
        all: bool,
    },
    /// Lift a lock before it runs out.
    Lift { id: Uuid },
}

#[derive(Debug, Subcommand)]
pub enum PrivacyCmd {
    /// A data subject's key and legal hold.
    Status {
        #[arg(long)]
        user: String,
    },
    /// Erase a data subject: their personal data in the audit log reads [erased] from now on
    /// (the log still verifies); their name and free text leave the other tables. They must
    /// be disabled, hold no grant, wait on no request, and not be under legal hold.
    Erase {
        #[arg(long)]
        user: String,
        /// Why (the erasure request this answers).
        #[arg(long, short = 'r')]
        reason: String,
    },
    /// Put a data subject under legal hold: erasure is refused until it is lifted.
    Hold {
        #[arg(long)]
        user: String,
        #[arg(long, short = 'r')]
        reason: String,
    },
    /// Lift a legal hold.
    Release {
        #[arg(long)]
        user: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ScimCmd {
    /// A SCIM client's bearer token.
    #[command(subcommand)]
    Token(ScimTokenCmd),
}

#[derive(Debug, Subcommand)]
pub enum ScimTokenCmd {
    /// Create a token for a SCIM client (`okta`); prints it once, alone on stdout. Its
    /// changes are recorded as `scim:<name>`.
    Create { name: String },
    /// SCIM clients' tokens.
    List,
    /// Revoke a SCIM client's token: refused at once.
    Revoke { id: String },
}

#[derive(Debug, Subcommand)]
pub enum SessionCmd {
    /// Recorded sessions, newest first (yours, or anyone's with read_audit).
    List {
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        host: Option<String>,
        #[arg(long)]
        grant: Option<Uuid>,
        #[command(flatten)]
        limit: Limit,
    },
    /// Show a session.
    Show { id: Uuid },
    /// Sessions running now, as their hosts stream them to this server (yours, or anyone's
    /// with read_audit).
    Live,
    /// Watch a running session's terminal as it happens, until it ends (Ctrl-C stops
    /// watching, not the session). Watching is recorded in the audit log.
    Watch {
        id: Uuid,
        /// Pass every terminal control sequence through (see `play --raw`).
        #[arg(long)]
        raw: bool,
        /// Also show each command the session runs (roles with --intercept) and each
        /// watched file it writes (roles with --watch-path).
        #[arg(long)]
        execs: bool,
    },
    /// End a live session now (admins): its terminal and record say who and why.
    Kill {
        id: Uuid,
        #[arg(long, short = 'r')]
        reason: String,
    },
    /// Replay a session in this terminal.
    Play {
        id: Uuid,
        /// Playback speed factor (2 = twice as fast).
        #[arg(long, default_value_t = 1.0, value_parser = positive_f64)]
        speed: f64,
        /// Longest pause replayed, in seconds (longer idle times are shortened).
        #[arg(long, value_parser = positive_f64)]
        max_idle: Option<f64>,
        /// Pass every terminal control sequence through. Without it, those that could act
        /// on this terminal (clipboard writes, titles, links, device control strings,
        /// queries whose answers would be typed into your shell) are withheld and counted.
        #[arg(long)]
        raw: bool,
    },
    /// Write a session's recording (asciicast v2, playable by asciinema) to a file or stdout.
    Export {
        id: Uuid,
        /// Output file; stdout when absent.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
}

fn positive_f64(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("{s:?} is not a positive number")),
    }
}
