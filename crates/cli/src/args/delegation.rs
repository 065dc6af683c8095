//! Delegation: `delegate` and `task`.

use super::*;

#[derive(Debug, Subcommand)]
pub enum DelegateCmd {
    /// Delegate tasks and/or roles to a user or a group on a scope until a deadline, or pass
    /// on part of a delegation you hold (--from).
    Create(CreateDelegationArgs),
    /// Delegations from or for you (all with read_audit); live ones unless --all.
    List {
        /// Also revoked and expired ones.
        #[arg(long)]
        all: bool,
    },
    /// Show a delegation.
    Show { id: Uuid },
    /// End a delegation and everything delegated from it (a reason is required).
    Revoke {
        id: Uuid,
        #[arg(long, alias = "comment", value_name = "TEXT")]
        reason: String,
    },
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("delegate").required(true).args(["user", "group"])))]
#[command(group(clap::ArgGroup::new("deadline").required(true).args(["until", "for_"])))]
#[command(group(clap::ArgGroup::new("what").required(true).multiple(true).args(["task", "role"])))]
pub struct CreateDelegationArgs {
    /// The user it is for.
    #[arg(long)]
    pub user: Option<String>,
    /// The group it is for (every member).
    #[arg(long)]
    pub group: Option<String>,
    /// A task the delegate may run (repeatable).
    #[arg(long, value_name = "TASK")]
    pub task: Vec<String>,
    /// A role the delegate is granted without approvers (repeatable).
    #[arg(long, value_name = "ROLE")]
    pub role: Vec<String>,
    /// A target name or label selector (env=prod; env=prod,team=web), repeatable.
    #[arg(long, value_name = "TARGET|KEY=VALUE", required = true)]
    pub scope: Vec<String>,
    /// The deadline (RFC 3339).
    #[arg(long, value_name = "RFC3339")]
    pub until: Option<Timestamp>,
    /// The deadline as a duration from now: 8h, 7d.
    #[arg(
        long = "for",
        id = "for_",
        value_name = "DURATION",
        allow_hyphen_values = true
    )]
    pub for_: Option<DurationArg>,
    /// Let the delegate pass on a subset.
    #[arg(long)]
    pub redelegate: bool,
    /// Pass on part of this delegation (you must be its delegate).
    #[arg(long, value_name = "DELEGATION-ID")]
    pub from: Option<Uuid>,
    #[arg(long, alias = "comment", value_name = "TEXT")]
    pub reason: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum TaskCmd {
    /// List tasks.
    List,
    /// Show a task's definition.
    Show { name: String },
    /// Define a task from a JSON file (see README, "Delegation and tasks") (manage_targets).
    Define {
        /// The definition: {"name", "targets", "argv", "stdin", "params", ...}; `-` for stdin.
        file: PathBuf,
        /// Replace the definition of an existing task.
        #[arg(long)]
        replace: bool,
    },
    /// Check whether you may run a task on a target with these parameters, and show the
    /// command it would run.
    Check {
        name: String,
        #[arg(long)]
        target: String,
        /// A parameter (repeatable).
        #[arg(long = "param", short = 'p', value_name = "NAME=VALUE", value_parser = parse_param)]
        params: Vec<(String, String)>,
    },
    /// Run a task delegated to you, on this host, through pedm-agent (recorded).
    Run {
        name: String,
        /// A parameter (repeatable). `NAME=-` reads the value from a line of stdin, so a
        /// secret (a new password) is not on the command line.
        #[arg(long = "param", short = 'p', value_name = "NAME=VALUE", value_parser = parse_param)]
        params: Vec<(String, String)>,
        /// The agent's socket.
        #[arg(long, env = "PEDM_AGENT_SOCKET", default_value = pedm_api::socket::DEFAULT_SOCKET)]
        socket: PathBuf,
    },
}

/// `NAME=VALUE` (the value may be empty or contain '=').
fn parse_param(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("parameter {s:?} is not of the form NAME=VALUE"))?;
    if k.is_empty() {
        return Err(format!("parameter {s:?} needs a NAME before '='"));
    }
    Ok((k.to_string(), v.to_string()))
}
