//! The agent's configuration: one TOML file (`/etc/pedm/agent.toml` by default).

use anyhow::{Context, bail};
use pedm_audit::PublicKey;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const DEFAULT_CONFIG: &str = "/etc/pedm/agent.toml";
/// What sudo's `secure_path` usually is on Debian.
pub const DEFAULT_SECURE_PATH: &str =
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The pedm server, e.g. `https://pedm.example.com:8470`.
    pub server_url: String,
    /// This host's name: its target in pedm (`pedm host register NAME`).
    pub host: String,
    /// File holding the host token (mode 0600, owned by root): the agent's credential on a
    /// plain-HTTP server. Over HTTPS the agent uses `cert_file` and `key_file` instead.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// The agent's client certificate from pedmd's CA (PEM; written by `pedm-agent enroll`,
    /// renewed by the agent).
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// Its private key (PEM, mode 0600; made on this host, never sent).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// The server's agent key (`ed25519:...`, printed by `pedm host register`). Snapshots
    /// signed by any other key are refused.
    pub server_key: String,
    /// PEM CA certificate(s) trusted for an `https://` server in addition to the system's
    /// roots (e.g. the CA `pedmd --dev` prints).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The socket `pedm exec` connects to.
    #[serde(default = "default_socket")]
    pub socket: PathBuf,
    /// Mode of the socket. Anyone who can connect may ask; identity comes from the kernel,
    /// so 0666 is safe; 0660 with `socket_group` narrows who may even ask.
    #[serde(default = "default_socket_mode")]
    pub socket_mode: u32,
    /// Group owning the socket (with `socket_mode` 0660).
    #[serde(default)]
    pub socket_group: Option<String>,
    /// Where the snapshot in force, recordings and unsent reports are kept (mode 0700).
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// The only PATH commands are looked up in, and the PATH they run with.
    #[serde(default = "default_secure_path")]
    pub secure_path: String,
    /// How long an ended grant's session gets between SIGHUP and SIGKILL (`5s`).
    #[serde(default = "default_grace")]
    pub kill_grace: String,
    /// Connections one local user may have open at once (each `pedm exec` holds one while
    /// its command runs); more are refused.
    #[serde(default = "default_max_connections")]
    pub max_connections_per_user: usize,
    /// How long a new connection may take to say what it wants (`5s`).
    #[serde(default = "default_first_frame_timeout")]
    pub first_frame_timeout: String,
    /// The cgroup v2 directory sessions are contained in (delegated to the agent), `off`,
    /// or unset: found (see `pedm_agent::contain::cgroup`).
    #[serde(default)]
    pub cgroup: Option<String>,
}

fn default_socket() -> PathBuf {
    PathBuf::from(pedm_api::socket::DEFAULT_SOCKET)
}
fn default_socket_mode() -> u32 {
    0o666
}
fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/pedm-agent")
}
fn default_secure_path() -> String {
    DEFAULT_SECURE_PATH.to_string()
}
fn default_grace() -> String {
    "5s".into()
}
fn default_max_connections() -> usize {
    32
}
fn default_first_frame_timeout() -> String {
    "5s".into()
}

/// How the agent proves which host it is.
#[derive(Debug, Clone)]
pub enum Credential {
    /// A host token (plain-HTTP servers).
    Token(String),
    /// A client certificate (HTTPS servers).
    Certificate(crate::identity::IdentityFiles),
}

/// Checked values.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub server_url: String,
    pub host: String,
    pub credential: Credential,
    pub server_key: PublicKey,
    pub ca_file: Option<PathBuf>,
    pub socket: PathBuf,
    pub socket_mode: u32,
    pub socket_group: Option<nix::unistd::Gid>,
    pub state_dir: PathBuf,
    pub secure_path: String,
    pub kill_grace: Duration,
    pub max_connections_per_user: usize,
    pub first_frame_timeout: Duration,
    pub cgroup: Option<String>,
}

impl Config {
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the configuration {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("invalid configuration {}", path.display()))
    }

    pub fn resolve(&self) -> anyhow::Result<Resolved> {
        let credential = match (&self.token_file, &self.cert_file, &self.key_file) {
            (None, Some(cert), Some(key)) => {
                let files = crate::identity::IdentityFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                };
                files.read()?;
                Credential::Certificate(files)
            }
            (Some(t), None, None) => {
                let token = std::fs::read_to_string(t)
                    .with_context(|| format!("token_file: cannot read {}", t.display()))?
                    .trim()
                    .to_string();
                if token.is_empty() {
                    bail!("token_file: {} is empty", t.display());
                }
                Credential::Token(token)
            }
            _ => bail!(
                "set either token_file (plain HTTP) or both cert_file and key_file (HTTPS; \
                 written by pedm-agent enroll)"
            ),
        };
        let server_key: PublicKey = self
            .server_key
            .parse()
            .map_err(|e| anyhow::anyhow!("server_key: {e}"))?;
        for dir in self.secure_path.split(':') {
            if !dir.starts_with('/') {
                bail!("secure_path: {dir:?} is not an absolute directory");
            }
        }
        if self.socket_mode & !0o777 != 0 {
            bail!(
                "socket_mode: {:o} is not a permission mode",
                self.socket_mode
            );
        }
        let socket_group = match &self.socket_group {
            None => None,
            Some(g) => Some(
                nix::unistd::Group::from_name(g)
                    .with_context(|| format!("socket_group: cannot look up {g}"))?
                    .with_context(|| format!("socket_group: no group {g}"))?
                    .gid,
            ),
        };
        let grace = pedm_api::parse_duration(&self.kill_grace)
            .map_err(|e| anyhow::anyhow!("kill_grace: {e}"))?;
        let first_frame = pedm_api::parse_duration(&self.first_frame_timeout)
            .map_err(|e| anyhow::anyhow!("first_frame_timeout: {e}"))?;
        if first_frame <= 0 {
            bail!("first_frame_timeout: must be positive");
        }
        if self.max_connections_per_user == 0 {
            bail!("max_connections_per_user: must be at least 1");
        }
        Ok(Resolved {
            server_url: self.server_url.trim_end_matches('/').to_string(),
            host: self.host.clone(),
            credential,
            server_key,
            ca_file: self.ca_file.clone(),
            socket: self.socket.clone(),
            socket_mode: self.socket_mode,
            socket_group,
            state_dir: self.state_dir.clone(),
            secure_path: self.secure_path.clone(),
            kill_grace: Duration::from_secs(grace.max(0) as u64),
            max_connections_per_user: self.max_connections_per_user,
            first_frame_timeout: Duration::from_secs(first_frame as u64),
            cgroup: self.cgroup.clone(),
        })
    }
}
