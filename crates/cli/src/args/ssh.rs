//! `pedm ssh` and the SSH settings of `pedm role add|update`; `pedm aws`, the other command
//! that hands a grant's holder credentials for a target.

#[derive(Debug, Clone, clap::Args)]
pub struct SshLoginArgs {
    /// The target (its `address` label says where to connect, else its name); a `login@`
    /// before it must be the role's run-as.
    pub destination: String,
    /// The grant to use (default: your one active grant on the target).
    #[arg(long, value_name = "ID")]
    pub grant: Option<uuid::Uuid>,
    /// Your private key (its public half in FILE.pub). Default: one made for pedm in
    /// $XDG_CONFIG_HOME/pedm/ssh/id_ed25519.
    #[arg(short = 'i', value_name = "FILE")]
    pub identity: Option<std::path::PathBuf>,
    /// Port (default: the target's `port` label, else 22).
    #[arg(short = 'p', value_name = "PORT")]
    pub port: Option<u16>,
    /// An option passed to ssh (repeatable), such as -o ConnectTimeout=5.
    #[arg(short = 'o', value_name = "OPTION")]
    pub options: Vec<String>,
    /// Get the certificate and print the ssh command instead of running it.
    #[arg(long)]
    pub print: bool,
    /// The command to run there (after --).
    #[arg(last = true)]
    pub command: Vec<String>,
}

/// What a role on an `ssh` target lets its certificate do besides logging in as run-as.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SshArgs {
    /// ssh targets: the certificate runs only this command (force-command).
    #[arg(long, value_name = "COMMAND")]
    pub ssh_force_command: Option<String>,
    /// ssh targets: the certificate works only from the address the request came from.
    #[arg(long)]
    pub ssh_bind_source_address: bool,
    /// ssh targets: allow port-forwarding, agent-forwarding or x11-forwarding (repeatable).
    #[arg(long, value_name = "WHAT", value_parser = ["port-forwarding", "agent-forwarding", "x11-forwarding"])]
    pub ssh_permit: Vec<String>,
    /// ssh targets: no terminal, commands only.
    #[arg(long)]
    pub ssh_no_pty: bool,
}

impl SshArgs {
    pub fn given(&self) -> bool {
        self.ssh_force_command.is_some()
            || self.ssh_bind_source_address
            || !self.ssh_permit.is_empty()
            || self.ssh_no_pty
    }

    pub fn access(self) -> pedm_api::SshAccess {
        let permits = |what: &str| self.ssh_permit.iter().any(|p| p == what);
        pedm_api::SshAccess {
            port_forwarding: permits("port-forwarding"),
            agent_forwarding: permits("agent-forwarding"),
            x11_forwarding: permits("x11-forwarding"),
            force_command: self.ssh_force_command,
            bind_source_address: self.ssh_bind_source_address,
            no_pty: self.ssh_no_pty,
        }
    }
}

/// `pedm aws …`: credentials for a grant on an `aws` target.
#[derive(Debug, clap::Subcommand)]
pub enum AwsCmd {
    /// Print STS credentials for your grant as the AWS CLI's `credential_process` JSON
    /// (`credential_process = pedm aws credentials --target aws-prod` in ~/.aws/config):
    /// they end no later than the grant, and the AWS CLI asks again when they do.
    Credentials {
        /// The grant (default: your one active grant on --target).
        #[arg(long, value_name = "ID", required_unless_present = "target")]
        grant: Option<uuid::Uuid>,
        /// The `aws` target whose one active grant of yours to use.
        #[arg(long, value_name = "TARGET", conflicts_with = "grant")]
        target: Option<String>,
    },
    /// Print a sign-in URL for the AWS console as your grant's role (`xdg-open "$(pedm aws
    /// console --target aws-prod)"`): it signs in once, within 15 minutes, and the console
    /// session ends no later than the grant. The URL is a secret: do not share it.
    Console {
        /// The grant (default: your one active grant on --target).
        #[arg(long, value_name = "ID", required_unless_present = "target")]
        grant: Option<uuid::Uuid>,
        /// The `aws` target whose one active grant of yours to use.
        #[arg(long, value_name = "TARGET", conflicts_with = "grant")]
        target: Option<String>,
    },
}

/// `pedm kube …`: credentials for a grant on a `kubernetes` target.
#[derive(Debug, clap::Subcommand)]
pub enum KubeCmd {
    /// Print a service-account token for your grant as kubectl's ExecCredential (a kubeconfig
    /// user with `exec: {apiVersion: client.authentication.k8s.io/v1, command: pedm, args:
    /// [kube, credentials, --target, prod-cluster]}`): bound to the grant, refused by the
    /// cluster once the grant is revoked, never lasting past its end.
    Credentials {
        /// The grant (default: your one active grant on --target).
        #[arg(long, value_name = "ID", required_unless_present = "target")]
        grant: Option<uuid::Uuid>,
        /// The `kubernetes` target whose one active grant of yours to use.
        #[arg(long, value_name = "TARGET", conflicts_with = "grant")]
        target: Option<String>,
    },
}
