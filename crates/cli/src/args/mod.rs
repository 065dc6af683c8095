//! The command-line definition (clap derive) and the local argument checks that run before
//! any network call: a bad duration, UUID, label or time is a usage error (exit status 2).

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{ArgAction, Args, Parser, Subcommand};
use clap_complete::Shell;
use jiff::Timestamp;
use pedm_api::{GrantState, RequestState, TargetKind, format_duration, parse_duration};
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use uuid::Uuid;

mod delegation;
mod hosts;
mod limits;
mod reports;
mod review;
mod ssh;
pub use delegation::*;
pub use hosts::*;
pub use limits::*;
pub use reports::*;
pub use review::*;
pub use ssh::*;

pub const DEFAULT_URL: &str = "http://127.0.0.1:8470";

/// pedm: ask for privileges for a bounded time, approve them, and review the record.
#[derive(Debug, Parser)]
#[command(name = "pedm", version, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Global options")]
pub struct Global {
    /// Base URL of the pedm server.
    #[arg(long, global = true, env = "PEDM_URL", default_value = DEFAULT_URL)]
    pub url: String,
    /// API token (prefer PEDM_TOKEN or --token-file: arguments are visible to other users).
    #[arg(long, global = true, env = "PEDM_TOKEN", hide_env_values = true)]
    pub token: Option<Secret>,
    /// Read the API token from this file (surrounding whitespace is ignored).
    #[arg(long, global = true, env = "PEDM_TOKEN_FILE", value_name = "PATH")]
    pub token_file: Option<PathBuf>,
    /// Print the server's JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// Trust the CA certificate(s) in this PEM file for https:// URLs, in addition to the
    /// system's roots (`pedmd --dev` prints its CA's path).
    #[arg(long, global = true, env = "PEDM_CA", value_name = "PATH")]
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show who the token belongs to.
    Whoami,
    /// Serve the Model Context Protocol on stdin/stdout for an AI agent acting for you, with
    /// an agent token (`pedm token create --for-agent`) from PEDM_TOKEN or PEDM_TOKEN_FILE:
    /// the agent lists what you may request, asks with a justification, waits for the
    /// decision and sees your grants; it never approves and never mints tokens.
    Mcp,
    /// Link a chat identity to you: `pedm link slack <code>` with the code `/pedm link`
    /// showed you in Slack, so your clicks there act as you.
    #[command(subcommand)]
    Link(LinkCmd),
    /// Notification channels (webhooks, Slack apps) of the server answering, with their
    /// counts since it started (admins and auditors).
    #[command(subcommand)]
    Notify(NotifyCmd),
    /// Manage users (admin).
    #[command(subcommand)]
    User(UserCmd),
    /// Manage groups (admin).
    #[command(subcommand)]
    Group(GroupCmd),
    /// Create, list and revoke API tokens.
    #[command(subcommand)]
    Token(TokenCmd),
    /// Manage targets: hosts, databases and other systems privileges exist on.
    #[command(subcommand)]
    Target(TargetCmd),
    /// Manage roles: named privileges on a target.
    #[command(subcommand)]
    Role(RoleCmd),
    /// Ask for a privilege, and answer others' requests.
    #[command(subcommand)]
    Request(RequestCmd),
    /// Active and past elevations.
    #[command(subcommand)]
    Grant(GrantCmd),
    /// Read the audit log.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Cedar policies: apply, inspect, test, simulate.
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// Compliance reports (auditors).
    #[command(subcommand)]
    Report(ReportsCmd),
    /// List the standing privileged accounts in a target with a provisioner (admin).
    Discover { target: String },
    /// Break-glass grants and their after-the-fact review (admin).
    #[command(subcommand, name = "breakglass")]
    BreakGlass(BreakGlassCmd),
    /// Run one command with a privilege you hold on this host, through pedm-agent (recorded).
    Exec(ExecArgs),
    /// Open an elevated login shell on this host, when policy allows one (recorded).
    Shell {
        #[command(flatten)]
        agent: AgentOpts,
    },
    /// Log in to an `ssh` target with a certificate for your grant there: a key made on
    /// this machine (never sent), a certificate valid for the grant's window, then the
    /// system `ssh` (set PEDM_SSH to use another).
    Ssh(SshLoginArgs),
    /// AWS: temporary credentials for your grant on an `aws` target (credential_process).
    #[command(subcommand)]
    Aws(AwsCmd),
    /// Kubernetes: a service-account token for your grant on a `kubernetes` target (kubectl
    /// exec credential plugin).
    #[command(subcommand)]
    Kube(KubeCmd),
    /// Hosts running pedm-agent, and SSH host certificates, CA keys and KRL (admin).
    #[command(subcommand)]
    Host(HostCmd),
    /// This machine as a trusted device: enroll (key made here), list, approve, revoke.
    #[command(subcommand)]
    Device(DeviceCmd),
    /// Recorded sessions: list, show, replay, export.
    #[command(subcommand)]
    Session(SessionCmd),
    /// Lock a user or a host at once (a compromised account, a host under investigation):
    /// their live sessions end, new requests and execs are refused until lifted or over.
    #[command(subcommand)]
    Lock(LockCmd),
    /// Access reviews: quarterly campaigns where reviewers keep or revoke who may elevate.
    #[command(subcommand)]
    Review(ReviewCmd),
    /// Data subjects' personal data in the audit log: erase (GDPR), legal hold (admin;
    /// `[privacy] seal_personal_data = true` on the server).
    #[command(subcommand)]
    Privacy(PrivacyCmd),
    /// SCIM 2.0 provisioning: the tokens identity providers push users and groups with
    /// (admin; `[scim] enabled = true` on the server).
    #[command(subcommand)]
    Scim(ScimCmd),
    /// Delegations: let a user or group run tasks or get roles without approvers.
    #[command(subcommand)]
    Delegate(DelegateCmd),
    /// Tasks: predefined privileged operations with validated parameters.
    #[command(subcommand)]
    Task(TaskCmd),
    /// Sign in with the identity provider (single sign-on): opens the browser (or prints the
    /// URL); `--device` for a terminal without one. The session token is kept in
    /// $XDG_CONFIG_HOME/pedm/session (0600) and used when no token is given. A live session
    /// is refreshed instead (groups re-read from the provider).
    Login {
        /// Device authorisation flow: prints a URL and a code to enter on any device.
        #[arg(long)]
        device: bool,
        /// A configured provider's name (default: the server's first).
        #[arg(long)]
        provider: Option<String>,
        /// Print the URL only; do not run xdg-open.
        #[arg(long)]
        no_browser: bool,
    },
    /// End the single sign-on session: revoked on the server, the session file deleted.
    Logout,
    /// Print a shell completion script to stdout.
    Completions {
        #[arg(value_enum)]
        shell: Shell,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCmd {
    /// Create a user.
    Add {
        name: String,
        #[arg(long)]
        display_name: Option<String>,
        /// Where the user's mail notifications go (approval requests, decisions, grants).
        #[arg(long, conflicts_with = "external")]
        email: Option<String>,
        /// Make the user an administrator.
        #[arg(long, conflicts_with = "external")]
        admin: bool,
        /// An external (vendor, contractor) account: needs --sponsor and --expires.
        #[arg(long, requires_all = ["sponsor", "expires"])]
        external: bool,
        /// The external account's sponsor: an enabled user who is not external.
        #[arg(long, requires = "external")]
        sponsor: Option<String>,
        /// How long the external account lives (`7d`), at most the server's
        /// `limits.external_max`.
        #[arg(long, requires = "external")]
        expires: Option<String>,
    },
    /// List users.
    List,
    /// List external accounts with their sponsors and expiries.
    External,
    /// Move an external account's expiry (its sponsor or an admin).
    Extend {
        name: String,
        /// How long from now the account lives (`7d`).
        #[arg(long)]
        expires: String,
    },
    /// Disable a user: their tokens stop working.
    Disable { name: String },
    /// Enable a disabled user.
    Enable { name: String },
    /// Grant or take away administrator rights.
    SetAdmin {
        name: String,
        /// true to make an administrator, false to take the rights away.
        #[arg(action = ArgAction::Set, value_parser = clap::value_parser!(bool))]
        admin: bool,
    },
    /// Set where a user's mail notifications go; without an address, remove it.
    SetEmail { name: String, email: Option<String> },
}

#[derive(Debug, Subcommand)]
pub enum GroupCmd {
    /// Create a group.
    Add {
        name: String,
        #[arg(long)]
        description: Option<String>,
    },
    /// List groups and their members.
    List,
    /// Add a user to a group.
    AddMember { group: String, user: String },
    /// Remove a user from a group.
    RemoveMember { group: String, user: String },
}

#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    /// Mint a token; it is printed once, alone on stdout.
    Create {
        /// Whose token (admins only); defaults to you.
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        description: Option<String>,
        /// Lifetime such as 30d or 12h, or `never` (for a service; say it explicitly);
        /// absent: the server's default lifetime (90d unless configured).
        #[arg(long, value_name = "DURATION|never", allow_hyphen_values = true)]
        expires_in: Option<TokenExpiry>,
        /// A token for an AI agent acting for you (`pedm mcp`): it may only read your
        /// identity, requests and grants, list what you may request, and ask, wait and
        /// cancel for you; policy sees its requests as `context.via_agent` (by default a
        /// person must approve them). It must expire: give `--expires-in 8h` or so.
        #[arg(long)]
        for_agent: bool,
    },
    /// List tokens (never their secrets).
    List {
        #[arg(long)]
        user: Option<String>,
    },
    /// Revoke a token by id.
    Revoke { id: String },
    /// Exchange a CI job's or service's OIDC token (from an `[[auth.workload]]` issuer) for a
    /// short-lived pedm token, printed alone on stdout. Needs no pedm token.
    #[command(group(clap::ArgGroup::new("subject").required(true)))]
    Exchange {
        /// File holding the platform's token (`-`: standard input).
        #[arg(long, value_name = "PATH", group = "subject")]
        subject_token_file: Option<std::path::PathBuf>,
        /// Environment variable holding it (never pass a token as an argument).
        #[arg(long, value_name = "VAR", group = "subject")]
        subject_token_env: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum TargetCmd {
    /// Register a target.
    Add {
        name: String,
        #[arg(long, value_parser = enum_parser::<TargetKind>(TargetKind::ALL.map(TargetKind::as_str)))]
        kind: TargetKind,
        #[arg(long)]
        description: Option<String>,
        /// A label KEY=VALUE; repeat for several.
        #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
        labels: Vec<(String, String)>,
    },
    /// List targets.
    List,
    /// Show a target and its roles.
    Show { name: String },
}

#[derive(Debug, Subcommand)]
pub enum RoleCmd {
    /// Define a role on a target.
    Add {
        target: String,
        name: String,
        /// Longest a grant of this role may last, such as 1h or 8h.
        #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
        max_duration: DurationArg,
        /// Grant requests for this role without an approver.
        #[arg(long)]
        auto_approve: bool,
        /// Account the privilege runs as on the target, such as root.
        #[arg(long, value_name = "ACCOUNT")]
        run_as: Option<String>,
        #[arg(long)]
        description: Option<String>,
        /// Host sessions run their program but it cannot start another (execve refused):
        /// no shell escapes from less, vi, find -exec.
        #[arg(long)]
        noexec: bool,
        /// Host sessions keep setuid programs working (su, sudo, ping); without it they
        /// run with no_new_privs.
        #[arg(long)]
        allow_setuid: bool,
        /// Host sessions record what the user types as well as the output (never input
        /// typed with echo off, such as passwords).
        #[arg(long)]
        record_input: bool,
        /// Host sessions: every program started inside them (a shell's commands) is decided
        /// by the exec policy and recorded as session.exec; refused ones fail.
        #[arg(long)]
        intercept: bool,
        #[command(flatten)]
        limits: LimitArgs,
        /// Host sessions have every file they write under PATH recorded (repeatable;
        /// absolute paths that exist on the host).
        #[arg(long = "watch-path", value_name = "PATH")]
        watch_paths: Vec<String>,
        #[command(flatten)]
        ssh: SshArgs,
    },
    /// Change a role's settings; host session controls apply to sessions started from now
    /// on, under grants already held too. Only what is given changes.
    Update {
        target: String,
        name: String,
        /// Longest a grant of this role may last from now on (grants held keep theirs).
        #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
        max_duration: Option<DurationArg>,
        #[arg(long)]
        description: Option<String>,
        #[arg(long, value_name = "true|false")]
        auto_approve: Option<bool>,
        #[arg(long, value_name = "true|false")]
        noexec: Option<bool>,
        #[arg(long, value_name = "true|false")]
        allow_setuid: Option<bool>,
        #[arg(long, value_name = "true|false")]
        record_input: Option<bool>,
        #[arg(long, value_name = "true|false")]
        intercept: Option<bool>,
        #[command(flatten)]
        limits: LimitArgs,
        /// Replace the watched paths with these (repeatable).
        #[arg(long = "watch-path", value_name = "PATH", conflicts_with = "no_watch")]
        watch_paths: Vec<String>,
        /// SSH settings given here replace all the role's SSH settings.
        #[command(flatten)]
        ssh: SshArgs,
        /// Watch no paths any more.
        #[arg(long)]
        no_watch: bool,
    },
    /// List the roles of a target.
    List { target: String },
}

#[derive(Debug, Subcommand)]
pub enum RequestCmd {
    /// Ask for a role on a target for a time.
    Create(CreateRequestArgs),
    /// List requests.
    List {
        #[arg(long, value_parser = state_names(RequestState::ALL.iter().map(|s| s.as_str())))]
        state: Option<String>,
        #[arg(long, value_name = "USER")]
        requester: Option<String>,
        #[arg(long)]
        target: Option<String>,
        /// Only pending requests you may approve or deny now.
        #[arg(long, conflicts_with_all = ["state", "requester", "target"])]
        approvable: bool,
        /// Only requests created at or after this time (RFC 3339).
        #[arg(long, value_name = "RFC3339")]
        since: Option<Timestamp>,
        #[command(flatten)]
        limit: Limit,
    },
    /// Show a request and its approvals.
    Show { id: Uuid },
    /// Withdraw your pending request.
    Cancel {
        id: Uuid,
        #[arg(long, alias = "comment", value_name = "TEXT")]
        reason: Option<String>,
    },
    /// Approve someone else's request.
    Approve {
        id: Uuid,
        /// Why (kept with the approval); `--comment` is accepted too.
        #[arg(long = "reason", alias = "comment", value_name = "TEXT")]
        comment: Option<String>,
    },
    /// Deny someone else's request (a reason is required).
    Deny {
        id: Uuid,
        /// Why (required); `--comment` is accepted too.
        #[arg(long = "reason", alias = "comment", value_name = "TEXT")]
        comment: String,
    },
}

#[derive(Debug, Args)]
pub struct CreateRequestArgs {
    #[arg(long)]
    pub target: String,
    #[arg(long)]
    pub role: String,
    /// How long the privilege is needed: 30m, 1h30m, 45s.
    #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
    pub duration: DurationArg,
    /// Why the privilege is needed; shown to approvers and kept in the audit log.
    #[arg(long, short = 'r', visible_alias = "reason", value_name = "TEXT")]
    pub justification: String,
    /// The task to be done, if the request is for one.
    #[arg(long)]
    pub task: Option<String>,
    /// Change or incident ticket reference.
    #[arg(long)]
    pub ticket: Option<String>,
    /// Emergency access without waiting for approval, where a break-glass policy allows it.
    /// Security is alerted at once and an admin reviews it afterwards.
    #[arg(long, conflicts_with = "start")]
    pub break_glass: bool,
    /// Scheduled access: the window starts then (RFC 3339, e.g. 2026-12-05T22:00:00Z) and
    /// lasts --duration; decided now, switched on at the start.
    #[arg(long, value_name = "RFC3339")]
    pub start: Option<Timestamp>,
}

#[derive(Debug, Subcommand)]
pub enum GrantCmd {
    /// List grants, with the time left on active ones.
    List {
        #[arg(long, value_parser = state_names(GrantState::ALL.iter().map(|s| s.as_str())))]
        state: Option<String>,
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        target: Option<String>,
        #[command(flatten)]
        limit: Limit,
    },
    /// Show a grant.
    Show { id: Uuid },
    /// Ask for more time on your active grant: policy decides as for a request of its role
    /// (granted at once, or waits for approvers); the privilege is never dropped meanwhile.
    Extend {
        id: Uuid,
        /// How much longer, e.g. 30m.
        #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
        by: DurationArg,
        /// Why more time is needed; shown to approvers and kept in the audit log.
        #[arg(long, short = 'r', visible_alias = "reason", value_name = "TEXT")]
        justification: String,
        #[arg(long)]
        ticket: Option<String>,
    },
    /// Give up your grant before it expires.
    Release {
        id: Uuid,
        #[arg(long, alias = "comment", value_name = "TEXT")]
        reason: Option<String>,
    },
    /// End someone's grant now (a reason is required).
    Revoke {
        id: Uuid,
        #[arg(long, alias = "comment", value_name = "TEXT")]
        reason: String,
    },
    /// Print the secret your grant produced (e.g. a generated password). Readable once.
    Secret { id: Uuid },
    /// Ask the target whether the grant's privilege is there as its provisioning state says
    /// (exit 1 when it is not).
    Verify { id: Uuid },
    /// Hand your grant on to a colleague for part of its remaining time (where policy lets
    /// you delegate the role); it ends no later than yours, and with it.
    Delegate {
        id: Uuid,
        /// The colleague.
        #[arg(long, value_name = "USER")]
        to: String,
        /// How long: 30m (at most the time left on your grant).
        #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
        duration: DurationArg,
        #[arg(long, alias = "comment", value_name = "TEXT")]
        reason: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// List audit events, oldest first.
    List {
        /// Only events after this sequence number.
        #[arg(long, value_name = "SEQ", value_parser = clap::value_parser!(i64).range(0..))]
        after: Option<i64>,
        #[arg(long, value_name = "USER")]
        actor: Option<String>,
        /// Events about this target: itself, its roles, requests and grants on it.
        #[arg(long)]
        target: Option<String>,
        /// Events about this request and its grant.
        #[arg(long, value_name = "ID")]
        request: Option<Uuid>,
        /// Such as request.created or grant.revoked.
        #[arg(long)]
        action: Option<String>,
        /// Such as user:alice or request:<id>.
        #[arg(long)]
        subject: Option<String>,
        /// Only events at or after this time (RFC 3339).
        #[arg(long, value_name = "RFC3339")]
        since: Option<Timestamp>,
        /// Only events before this time (RFC 3339).
        #[arg(long, value_name = "RFC3339")]
        until: Option<Timestamp>,
        #[command(flatten)]
        limit: Limit,
    },
    /// Verify the audit log: the hash chain, the signed checkpoints and their Merkle roots.
    /// Live through the API, or an exported file (--file) with only the public key. Exits 1
    /// naming the first bad event.
    Verify {
        /// Verify this export (`pedm audit export --format jsonl`) offline; needs --pubkey.
        #[arg(long, value_name = "PATH")]
        file: Option<PathBuf>,
        /// The server's public key (`ed25519:...`, from `pedm audit pubkey` obtained out of
        /// band). Without it a live verify trusts the key the server presents.
        #[arg(long, value_name = "KEY")]
        pubkey: Option<String>,
        /// Fail when events follow the last signed checkpoint, or no checkpoint covers the log.
        #[arg(long)]
        require_covered: bool,
        /// A checkpoint saved earlier (`pedm audit checkpoint --output FILE`): the log must
        /// extend it; fails naming both sizes if the log is shorter or forked. Repeatable.
        #[arg(long, value_name = "FILE")]
        trusted_checkpoint: Vec<PathBuf>,
        /// Require this many valid witness cosignatures (from --witness-key) on the newest
        /// checkpoint note (the server's when live; each --trusted-checkpoint file with --file).
        #[arg(long, value_name = "N", default_value_t = 0)]
        witnesses: usize,
        /// A witness's cosigner key `<name>+<key id>+<base64>` (printed by `pedmd witness`).
        /// Repeatable.
        #[arg(long, value_name = "VKEY")]
        witness_key: Vec<String>,
    },
    /// Show one audit event in full and check its content against its hash.
    Show {
        #[arg(value_parser = clap::value_parser!(i64).range(1..))]
        seq: i64,
    },
    /// Print and check an RFC 6962 inclusion proof of one event in a signed checkpoint.
    Prove {
        #[arg(value_parser = clap::value_parser!(i64).range(1..))]
        seq: i64,
        /// Prove against the checkpoint of this size (default: the newest).
        #[arg(long)]
        size: Option<u64>,
        /// Check against this public key instead of the server's.
        #[arg(long, value_name = "KEY")]
        pubkey: Option<String>,
    },
    /// Print and check an RFC 6962 consistency proof: the log at the signed checkpoint of size
    /// TO extends the log at FROM (any earlier size).
    Consistency {
        from: u64,
        /// The size of a signed checkpoint; default: the newest.
        to: Option<u64>,
        #[arg(long, value_name = "KEY")]
        pubkey: Option<String>,
    },
    /// Sign a checkpoint of the whole log now.
    Checkpoint {
        /// Also save it as a C2SP signed note (with any witness cosignatures) to FILE, to
        /// verify later that the log still extends it (`verify --trusted-checkpoint FILE`).
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// List the signed checkpoints.
    Checkpoints,
    /// Archive the oldest events (older than the server's [audit] retention, or --before) to
    /// a segment file that verifies on its own, then prune them from the server; the server
    /// records the file's SHA-256. Keep the file: it is their only copy.
    Archive {
        #[arg(long, short, value_name = "PATH")]
        output: PathBuf,
        /// Only events before this RFC 3339 time (still older than the retention).
        #[arg(long, value_name = "TIME")]
        before: Option<String>,
        /// The checkpoint key to verify the segment with (default: the server's).
        #[arg(long)]
        pubkey: Option<String>,
        /// Write and verify the segment, prune nothing.
        #[arg(long)]
        keep: bool,
    },
    /// Stream the audit log to stdout or a file.
    Export {
        #[arg(long, default_value = "jsonl", value_parser = PossibleValuesParser::new(["jsonl", "csv", "ocsf"]))]
        format: String,
        /// Write here instead of stdout.
        #[arg(long, short, value_name = "PATH")]
        output: Option<PathBuf>,
    },
    /// Print the public key that signs checkpoints.
    Pubkey {
        /// Print the C2SP note verifier key instead (`<origin>+<key id>+<base64>`), as
        /// witnesses and tools outside pedm take it.
        #[arg(long)]
        vkey: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum PolicyCmd {
    /// Replace the policy set in force with these files (or every *.cedar under these
    /// directories). Validated strictly; on any error the set in force stays. When the server
    /// requires approvals for policy changes, the set becomes a pending proposal instead.
    Apply {
        #[arg(required = true, value_name = "FILE|DIR")]
        paths: Vec<std::path::PathBuf>,
        /// Why the change, kept with the version; `--comment` is accepted too.
        #[arg(long = "reason", alias = "comment", value_name = "TEXT")]
        comment: Option<String>,
    },
    /// Every applied version, newest first.
    List,
    /// Policy proposals waiting for approval, with their diffs (every one with --all).
    Pending {
        #[arg(long)]
        all: bool,
    },
    /// Approve someone else's policy proposal; the last approval needed puts it in force.
    Approve {
        #[arg(value_name = "PROPOSAL")]
        id: i64,
        #[arg(long)]
        comment: Option<String>,
    },
    /// Reject a policy proposal (a comment is required): it never takes effect.
    Reject {
        #[arg(value_name = "PROPOSAL")]
        id: i64,
        #[arg(long)]
        comment: String,
    },
    /// Print the policies in force (or of one VERSION).
    Show {
        #[arg(value_name = "VERSION")]
        number: Option<i64>,
    },
    /// Run policy test cases (a TOML file) against local policy files, or against the set in
    /// force when --policies is not given. Exits 1 on any mismatch.
    Test {
        #[arg(value_name = "CASES")]
        cases: std::path::PathBuf,
        #[arg(long, value_name = "FILE|DIR")]
        policies: Vec<std::path::PathBuf>,
    },
    /// Prove policy properties (a TOML file of `[[property]]`; the server's `[policy]
    /// properties` when not given) for policy files (the set in force when not given), over
    /// every user, role and context pedm knows. Exits 1 when one is broken, naming a
    /// counterexample.
    Check {
        #[arg(long, value_name = "FILE|DIR")]
        policies: Vec<std::path::PathBuf>,
        #[arg(long, value_name = "FILE")]
        properties: Option<std::path::PathBuf>,
    },
    /// Who owns each policy in force and when they review it next (`@owner`,
    /// `@review_by`); --overdue: only those past their review date.
    Owners {
        #[arg(long)]
        overdue: bool,
    },
    /// Replay recorded requests against candidate policies and report every decision that
    /// would change, and who would gain or lose which role (the blast radius), with
    /// recommendations.
    Simulate {
        #[arg(
            long,
            required_unless_present = "suggest_commands",
            value_name = "FILE|DIR"
        )]
        policies: Vec<std::path::PathBuf>,
        /// How far back: a duration (30d) or an RFC 3339 time.
        #[arg(long, default_value = "30d")]
        since: String,
        /// Instead: from the commands people ran under each role (recorded exec events),
        /// propose the narrowest allowlist per role, with counts, as Cedar policies.
        #[arg(long, conflicts_with = "policies")]
        suggest_commands: bool,
        /// With --suggest-commands: only this target's roles.
        #[arg(long, requires = "suggest_commands")]
        target: Option<String>,
        /// With --suggest-commands: only roles of this name.
        #[arg(long, requires = "suggest_commands")]
        role: Option<String>,
        /// With --suggest-commands: write each role's policy to DIR/commands-TARGET-ROLE.cedar
        /// (ready for `pedm policy apply`).
        #[arg(long, requires = "suggest_commands", value_name = "DIR")]
        output: Option<std::path::PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum BreakGlassCmd {
    /// Break-glass grants whose review is still open (all of them with --all).
    List {
        #[arg(long)]
        all: bool,
    },
    /// Close the review of a break-glass grant with what it found.
    Review {
        id: Uuid,
        /// What the review found (required); `--comment` is accepted too.
        #[arg(long = "reason", alias = "comment", value_name = "TEXT")]
        comment: String,
    },
}

#[derive(Debug, Args)]
pub struct Limit {
    /// At most this many rows.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: Option<u32>,
}

/// A secret that never shows up in `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Secret(s)
    }
}

/// `--expires-in`: a duration, or `never`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenExpiry {
    Never,
    In(DurationArg),
}

impl TokenExpiry {
    pub fn canonical(self) -> String {
        match self {
            TokenExpiry::Never => "never".into(),
            TokenExpiry::In(d) => d.canonical(),
        }
    }
}

impl FromStr for TokenExpiry {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim() == "never" {
            return Ok(TokenExpiry::Never);
        }
        s.parse::<DurationArg>()
            .map(TokenExpiry::In)
            .map_err(|e| format!("{e}, or `never`"))
    }
}

/// A duration checked with [`parse_duration`]; sent to the server in canonical form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationArg(pub i64);

impl DurationArg {
    pub fn canonical(self) -> String {
        format_duration(self.0)
    }
}

impl FromStr for DurationArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_duration(s)
            .map(DurationArg)
            .map_err(|e| e.to_string())
    }
}

/// `KEY=VALUE` with a non-empty key free of whitespace.
pub fn parse_label(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("label {s:?} is not of the form KEY=VALUE"))?;
    if k.is_empty() || k.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "label {s:?} needs a non-empty KEY without spaces before '='"
        ));
    }
    Ok((k.to_string(), v.to_string()))
}

/// One of a fixed set of names, parsed into its enum (shown in help and completions).
fn enum_parser<T>(names: impl IntoIterator<Item = &'static str>) -> impl TypedValueParser<Value = T>
where
    T: FromStr<Err = String> + Clone + Send + Sync + 'static,
{
    PossibleValuesParser::new(names).try_map(|s| s.parse::<T>())
}

/// One of a fixed set of state names, kept as the string the API's query expects.
fn state_names(names: impl IntoIterator<Item = &'static str>) -> PossibleValuesParser {
    PossibleValuesParser::new(names)
}

/// `pedm exec`'s arguments.
#[derive(Debug, clap::Args)]
pub struct ExecArgs {
    #[command(flatten)]
    pub agent: AgentOpts,
    /// Run in this directory (`.` for the current one) instead of the run-as user's
    /// home. Policy sees it as `context.cwd`; for a command run as root it must be
    /// writable by root alone.
    #[arg(long, value_name = "DIR")]
    pub chdir: Option<PathBuf>,
    /// The command and its arguments (after `--`). Absolute path or a name in the
    /// agent's secure PATH.
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    pub command: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use clap::error::ErrorKind;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("pedm").chain(args.iter().copied()))
    }

    fn usage_error(args: &[&str]) -> clap::Error {
        let e = parse(args).expect_err("should be rejected");
        assert_eq!(e.exit_code(), 2, "{e}");
        e
    }

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn bad_duration_is_a_usage_error_naming_the_argument() {
        let base = [
            "request", "create", "--target", "db", "--role", "rw", "-r", "x",
        ];
        for bad in ["soon", "0", "-5m", "5x"] {
            let args: Vec<&str> = base.iter().copied().chain(["--duration", bad]).collect();
            let e = usage_error(&args);
            assert_eq!(e.kind(), ErrorKind::ValueValidation);
            assert!(e.to_string().contains("--duration"), "{e}");
        }
        let e = usage_error(&["role", "add", "h", "root", "--max-duration", "1y"]);
        assert!(e.to_string().contains("--max-duration"), "{e}");
        usage_error(&["token", "create", "--expires-in", "forever"]);
    }

    #[test]
    fn good_duration_is_canonical() {
        let cli = parse(&[
            "request",
            "create",
            "--target",
            "db",
            "--role",
            "rw",
            "--duration",
            "90m",
            "--reason",
            "fix",
        ])
        .unwrap();
        let Command::Request(RequestCmd::Create(a)) = cli.command else {
            panic!("wrong command")
        };
        assert_eq!(a.duration.canonical(), "1h30m");
        assert_eq!(a.justification, "fix");
    }

    #[test]
    fn bad_uuid_is_a_usage_error() {
        for cmd in [
            &["request", "show", "nope"][..],
            &["request", "approve", "123"],
            &["grant", "revoke", "x", "--reason", "r"],
        ] {
            let e = usage_error(cmd);
            assert_eq!(e.kind(), ErrorKind::ValueValidation);
            assert!(e.to_string().contains("<ID>"), "{e}");
        }
        parse(&["grant", "show", "0190a5b4-7c1e-7d3f-8a2b-1c2d3e4f5a6b"]).unwrap();
    }

    #[test]
    fn bad_label_is_a_usage_error() {
        for bad in ["nolabel", "=v", " k=v"] {
            let e = usage_error(&["target", "add", "h1", "--kind", "host", "--label", bad]);
            assert!(e.to_string().contains("--label"), "{e}");
        }
        assert_eq!(parse_label("env=prod"), Ok(("env".into(), "prod".into())));
        assert_eq!(parse_label("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert_eq!(parse_label("empty="), Ok(("empty".into(), String::new())));
    }

    #[test]
    fn other_local_checks() {
        usage_error(&["target", "add", "h1", "--kind", "mainframe"]);
        usage_error(&["request", "list", "--state", "bogus"]);
        usage_error(&["grant", "list", "--limit", "0"]);
        usage_error(&["audit", "list", "--since", "yesterday"]);
        usage_error(&["user", "set-admin", "bob", "maybe"]);
        usage_error(&["request", "deny", "0190a5b4-7c1e-7d3f-8a2b-1c2d3e4f5a6b"]);
        parse(&["audit", "list", "--since", "2024-05-01T00:00:00Z"]).unwrap();
        parse(&["user", "set-admin", "bob", "false"]).unwrap();
    }

    #[test]
    fn token_is_not_in_debug_output() {
        let cli = parse(&["--token", "s3cr3t-value", "whoami"]).unwrap();
        assert!(!format!("{cli:?}").contains("s3cr3t-value"));
        assert_eq!(cli.global.token, Some(Secret("s3cr3t-value".into())));
    }
}

#[derive(Subcommand, Debug)]
pub enum LinkCmd {
    /// Link the Slack user who ran `/pedm link` (the code says who) to you.
    Slack {
        /// The code from `/pedm link` (valid 10 minutes).
        code: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum NotifyCmd {
    /// Queued, delivered, failed, dropped and retried notifications per channel.
    Status,
}
