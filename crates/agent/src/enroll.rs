//! `pedm-agent enroll`: writes the agent's configuration for a host registered with
//! `pedm host register NAME`, after proving that the token works and that the server signs
//! with the key the admin was shown (the key is pinned, never learnt from the network).

use crate::config::DEFAULT_SECURE_PATH;
use anyhow::{Context, bail};
use pedm_api::Client;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, clap::Args)]
pub struct EnrollArgs {
    /// The pedm server, e.g. https://pedm.example.com:8470.
    #[arg(long)]
    pub server: String,
    /// The host token printed by `pedm host register` (a root-owned file of mode 0600).
    #[arg(long)]
    pub token_file: PathBuf,
    /// The server key printed by `pedm host register` (`ed25519:...`): snapshots signed by
    /// any other key are refused.
    #[arg(long)]
    pub server_key: String,
    /// PEM CA certificate(s) to trust for an https:// server besides the system's roots
    /// (written to the configuration as `ca_file`).
    #[arg(long, env = "PEDM_CA", value_name = "PATH")]
    pub ca_file: Option<PathBuf>,
    /// Replace an existing configuration file.
    #[arg(long)]
    pub force: bool,
}

/// Checks everything, then writes `config` (mode 0600). Returns the host name.
pub async fn enroll(config: &Path, args: &EnrollArgs) -> anyhow::Result<String> {
    if config.exists() && !args.force {
        bail!(
            "{} exists already; pass --force to replace it",
            config.display()
        );
    }
    let token_file = std::fs::canonicalize(&args.token_file)
        .with_context(|| format!("--token-file: cannot read {}", args.token_file.display()))?;
    let meta = std::fs::metadata(&token_file)
        .with_context(|| format!("--token-file: cannot read {}", token_file.display()))?;
    if meta.uid() != 0 || meta.permissions().mode() & 0o077 != 0 {
        bail!(
            "--token-file: {} must be owned by root and readable by root alone (chmod 600)",
            token_file.display()
        );
    }
    let token = std::fs::read_to_string(&token_file)?.trim().to_string();
    if token.is_empty() {
        bail!("--token-file: {} is empty", token_file.display());
    }
    let key: pedm_audit::PublicKey = args
        .server_key
        .parse()
        .map_err(|e| anyhow::anyhow!("--server-key: {e}"))?;
    let server = args.server.trim_end_matches('/').to_string();
    let ca_file = match &args.ca_file {
        Some(p) => Some(
            std::fs::canonicalize(p)
                .with_context(|| format!("--ca-file: cannot read {}", p.display()))?,
        ),
        None => None,
    };
    let client = Client::with_ca(&server, Some(token), ca_file.as_deref())
        .map_err(|e| anyhow::anyhow!("--server: {e}"))?;
    // Over HTTPS the token is spent here for a client certificate whose key is made on this
    // host; the agent authenticates with the certificate from then on.
    let identity = if server.starts_with("https://") {
        let dir = config.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let files = crate::identity::IdentityFiles {
            cert: dir.join("agent-cert.pem"),
            key: dir.join("agent-key.pem"),
        };
        let (key, csr) = crate::identity::new_key_and_csr("agent")?;
        let issued = client
            .agent_enroll(&csr)
            .await
            .map_err(|e| anyhow::anyhow!("the server refused to enroll this agent: {e}"))?;
        files.write(&issued.certificate, &key)?;
        Some(files)
    } else {
        None
    };
    let client = match &identity {
        Some(files) => files.client(&server, ca_file.as_deref())?,
        None => client,
    };
    let signed = client.agent_snapshot().await.map_err(|e| match identity {
        Some(_) => anyhow::anyhow!("the server did not accept the new certificate: {e}"),
        None => anyhow::anyhow!("the server did not accept the host token: {e}"),
    })?;
    let host: pedm_api::agent::Snapshot =
        serde_json::from_str(&signed.snapshot).context("the server's snapshot is malformed")?;
    crate::snapshot::verify(&signed, &key, &host.host).map_err(|e| {
        anyhow::anyhow!("the server's snapshot does not verify with --server-key: {e}")
    })?;
    let mut text = render(&server, &host.host, &args.server_key);
    let q = |p: &Path| toml::Value::String(p.to_string_lossy().into_owned()).to_string();
    match &identity {
        Some(files) => text.push_str(&format!(
            "cert_file = {}\nkey_file = {}\n",
            q(&files.cert),
            q(&files.key)
        )),
        None => text.push_str(&format!("token_file = {}\n", q(&token_file))),
    }
    if let Some(ca) = &ca_file {
        text.push_str(&format!(
            "ca_file = {}\n",
            toml::Value::String(ca.to_string_lossy().into_owned())
        ));
    }
    if let Some(dir) = config.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    crate::outbox::write_atomically(config, text.as_bytes())
        .with_context(|| format!("cannot write {}", config.display()))?;
    std::fs::set_permissions(config, std::fs::Permissions::from_mode(0o600))?;
    Ok(host.host)
}

/// The configuration file (TOML strings quoted by the TOML writer).
fn render(server: &str, host: &str, server_key: &str) -> String {
    let q = |s: &str| toml::Value::String(s.to_string()).to_string();
    format!(
        "# Written by `pedm-agent enroll`; see the README for every setting.\n\
         server_url = {}\nhost = {}\nserver_key = {}\n\
         # socket = \"/run/pedm/agent.sock\"\n# state_dir = \"/var/lib/pedm-agent\"\n\
         # secure_path = \"{DEFAULT_SECURE_PATH}\"\n",
        q(server),
        q(host),
        q(server_key),
    )
}
