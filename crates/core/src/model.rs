//! The things pedm manages. Plain data; the rules live in [`crate::service`].

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

/// Names of users, groups, targets and roles: what people type, what the audit log shows.
/// 1–64 characters of `[A-Za-z0-9._-]`, starting with a letter or digit. Keeping them plain
/// means they are safe in a shell, a URL path, a SQL identifier check and a log line.
pub fn validate_name(kind: &str, name: &str) -> Result<(), crate::Error> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(crate::Error::invalid(
            kind,
            format!(
                "{name:?} is not a valid {kind} name: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
            ),
        ))
    }
}

/// A mail address pedm will send to: `local@domain`, at most 254 characters, no spaces,
/// control characters, quotes, angle brackets or commas (nothing that could smuggle a second
/// recipient or a header into a mail), a domain with a dot. Returned trimmed.
pub fn validate_email(address: &str) -> Result<String, crate::Error> {
    let a = address.trim();
    let bad = |why: &str| {
        crate::Error::invalid(
            "email",
            format!("{a:?} is not a mail address pedm sends to: {why}"),
        )
    };
    if a.is_empty() || a.len() > 254 {
        return Err(bad("use 3-254 characters"));
    }
    if a.chars()
        .any(|c| c.is_whitespace() || c.is_control() || "\"<>,;()[]\\".contains(c))
    {
        return Err(bad("no spaces, quotes, brackets, commas or semicolons"));
    }
    let Some((local, domain)) = a.rsplit_once('@') else {
        return Err(bad("it has no @"));
    };
    if local.is_empty() || local.contains('@') || local.len() > 64 {
        return Err(bad("one @ after a local part of 1-64 characters"));
    }
    if !domain.contains('.')
        || domain.starts_with(['.', '-'])
        || domain.ends_with(['.', '-'])
        || domain.contains("..")
        || !domain
            .chars()
            .all(|c| c.is_alphanumeric() || c == '.' || c == '-')
    {
        return Err(bad("the domain must be a host name with a dot"));
    }
    Ok(a.to_string())
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct User {
    pub name: String,
    pub display_name: Option<String>,
    /// Where mail notifications go (approval requests, decisions, grants): set by an admin or
    /// taken from the identity provider's verified `email` claim at sign-in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Admins manage users, targets, roles and tokens and may approve requests.
    pub admin: bool,
    pub disabled: bool,
    pub created_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Group {
    pub name: String,
    pub description: Option<String>,
    pub members: Vec<String>,
    pub created_at: Timestamp,
}

/// An API token as stored: never the secret, only its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub id: String,
    pub user: String,
    pub description: Option<String>,
    #[serde(with = "hex_bytes")]
    pub secret_hash: [u8; 32],
    pub created_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
    /// Set on a token exchanged for a workload's platform token: what that platform asserted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<crate::workload::WorkloadIdentity>,
    /// A token its holder minted for an AI agent acting for them (`pedm token create
    /// --for-agent`): whoever presents it acts with `Actor::via_agent`, which may only do what
    /// the agent allow-list lets (see the server's `http/agent_scope.rs`).
    #[serde(default)]
    pub agent: bool,
}

impl TokenRecord {
    pub fn is_live(&self, now: Timestamp) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|e| now < e)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum TargetKind {
    Host,
    Postgres,
    /// A MariaDB or MySQL server.
    Mariadb,
    Command,
    Webhook,
    /// A host reached over SSH without an agent: grants get short-lived certificates.
    Ssh,
    /// An AWS organisation or account (IAM, IAM Identity Center, STS credentials).
    Aws,
    /// An Azure subscription, resource group or resource, and Entra ID groups.
    Azure,
    /// A Google Cloud project, folder or organisation.
    Gcp,
    /// A Kubernetes cluster.
    Kubernetes,
}

impl TargetKind {
    pub const ALL: [TargetKind; 10] = [
        Self::Host,
        Self::Postgres,
        Self::Mariadb,
        Self::Command,
        Self::Webhook,
        Self::Ssh,
        Self::Aws,
        Self::Azure,
        Self::Gcp,
        Self::Kubernetes,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Host => "host",
            Self::Postgres => "postgres",
            Self::Mariadb => "mariadb",
            Self::Command => "command",
            Self::Webhook => "webhook",
            Self::Ssh => "ssh",
            Self::Aws => "aws",
            Self::Azure => "azure",
            Self::Gcp => "gcp",
            Self::Kubernetes => "kubernetes",
        }
    }
}

impl fmt::Display for TargetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TargetKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown target kind {s:?} (expected one of: {})",
                    Self::ALL.map(Self::as_str).join(", ")
                )
            })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Target {
    pub name: String,
    pub kind: TargetKind,
    pub description: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub created_at: Timestamp,
}

/// A named privilege on a target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Role {
    pub target: String,
    pub name: String,
    pub description: Option<String>,
    /// Longest grant this role may be held for, in seconds.
    pub max_duration_secs: i64,
    /// Interim rule (until policies decide): grant at once without an approver.
    pub auto_approve: bool,
    /// The account the privilege runs as on the target (e.g. `root`), if it applies.
    pub run_as: Option<String>,
    /// Host sessions: the granted program runs, but nothing it starts can `execve` another
    /// program (a seccomp filter refuses with EACCES), so shell escapes of `less`, `vi`,
    /// `find -exec` fail.
    #[serde(default)]
    pub noexec: bool,
    /// Host sessions: setuid and file-capability programs keep their powers. Off (the
    /// default), sessions run with `no_new_privs`: `su`, `sudo`, `ping` gain nothing.
    #[serde(default)]
    pub allow_setuid: bool,
    /// Host sessions: what the user types is recorded too (never while the terminal does
    /// not echo it: passwords). Off by default: output only.
    #[serde(default)]
    pub record_input: bool,
    /// Host sessions: every program a session's program starts (a shell's commands, a
    /// pipeline's parts) is stopped at its exec, decided by the same `exec` policy as the
    /// first, and recorded (`session.exec`); a refused one fails with EACCES.
    #[serde(default)]
    pub intercept: bool,
    /// Host sessions: resource limits on everything the grant's sessions run, together.
    #[serde(default, skip_serializing_if = "SessionLimits::is_none")]
    pub limits: SessionLimits,
    /// Host sessions: files written under these paths are recorded
    /// (`session.file_changed`); absolute paths on the host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub watch_paths: Vec<String>,
    /// `ssh` targets: what the certificate allows besides logging in as `run_as`.
    #[serde(default, skip_serializing_if = "crate::ssh::SshAccess::is_default")]
    pub ssh: crate::ssh::SshAccess,
    pub created_at: Timestamp,
}

/// The most watched paths a role may have, and the longest.
pub const MAX_WATCH_PATHS: usize = 16;
pub const MAX_WATCH_PATH_LEN: usize = 1024;

/// Why a role's watched paths cannot be taken, if so: each absolute, without `..`, without
/// control characters, at most [`MAX_WATCH_PATH_LEN`] long; at most [`MAX_WATCH_PATHS`].
pub fn check_watch_paths(paths: &[String]) -> Result<(), String> {
    if paths.len() > MAX_WATCH_PATHS {
        return Err(format!("at most {MAX_WATCH_PATHS} paths"));
    }
    for p in paths {
        let bad = !p.starts_with('/')
            || p.len() > MAX_WATCH_PATH_LEN
            || p.chars().any(char::is_control)
            || p.split('/').any(|c| c == "..");
        if bad {
            return Err(format!(
                "{p:?} is not an absolute path without .. or control characters, of at most \
                 {MAX_WATCH_PATH_LEN} bytes"
            ));
        }
    }
    Ok(())
}

/// Resource limits of a role's host sessions, applied with cgroups to everything a grant's
/// sessions run together (a fork bomb meets `pids`, a runaway process `memory`). A host that
/// cannot enforce a limit the role sets runs nothing under it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SessionLimits {
    /// Memory in bytes (at least 4 MiB); beyond it the kernel's OOM killer ends a process.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::syntax::whole_number"
    )]
    pub memory_bytes: Option<u64>,
    /// Processes and threads at once; a `fork` beyond it fails with EAGAIN.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::syntax::whole_number"
    )]
    pub pids: Option<u32>,
    /// CPU time, in percent of one CPU (`50`: half of one, `200`: two).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::syntax::whole_number"
    )]
    pub cpu_percent: Option<u32>,
}

impl SessionLimits {
    pub const MIN_MEMORY_BYTES: u64 = 4 << 20;
    pub const MAX_MEMORY_BYTES: u64 = 1 << 50;
    pub const MAX_PIDS: u32 = 4_194_304;
    pub const MAX_CPU_PERCENT: u32 = 100_000;

    pub fn is_none(&self) -> bool {
        *self == SessionLimits::default()
    }

    /// The first limit out of its range, as (field, problem).
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if let Some(m) = self.memory_bytes
            && !(Self::MIN_MEMORY_BYTES..=Self::MAX_MEMORY_BYTES).contains(&m)
        {
            return Err((
                "limits.memory_bytes",
                format!(
                    "{m} is outside {}..={} bytes (4 MiB to 1 PiB)",
                    Self::MIN_MEMORY_BYTES,
                    Self::MAX_MEMORY_BYTES
                ),
            ));
        }
        if let Some(p) = self.pids
            && !(1..=Self::MAX_PIDS).contains(&p)
        {
            return Err((
                "limits.pids",
                format!("{p} is outside 1..={}", Self::MAX_PIDS),
            ));
        }
        if let Some(c) = self.cpu_percent
            && !(1..=Self::MAX_CPU_PERCENT).contains(&c)
        {
            return Err((
                "limits.cpu_percent",
                format!("{c} is outside 1..={}", Self::MAX_CPU_PERCENT),
            ));
        }
        Ok(())
    }
}

macro_rules! string_enum {
    ($name:ident { $($variant:ident => $s:literal),+ $(,)? }) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),+ }
        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            pub fn as_str(self) -> &'static str { match self { $($name::$variant => $s),+ } }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(self.as_str()) }
        }
        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::ALL.iter().copied().find(|v| v.as_str() == s).ok_or_else(|| {
                    let all: Vec<&str> = Self::ALL.iter().map(|v| v.as_str()).collect();
                    format!("unknown {} {s:?} (expected one of: {})", stringify!($name), all.join(", "))
                })
            }
        }
    };
}

string_enum!(RequestState {
    Pending => "pending",
    Approved => "approved",
    Denied => "denied",
    Cancelled => "cancelled",
    Expired => "expired",
});

// `scheduled`: approved for a later window (`pedm request create --start`), nothing in the
// target yet; the scheduler switches it on at `starts_at`.
string_enum!(GrantState {
    Scheduled => "scheduled",
    Active => "active",
    Released => "released",
    Revoked => "revoked",
    Expired => "expired",
});

string_enum!(ProvisionState {
    Provisioning => "provisioning",
    Active => "active",
    RevokePending => "revoke_pending",
    Revoked => "revoked",
    Failed => "failed",
});

string_enum!(ProvisionAction {
    Grant => "grant",
    Revoke => "revoke",
    RemoveDrift => "remove_drift",
    Extend => "extend",
});

/// A durable provisioning step: switch one grant's privilege on or off in its target, move
/// the expiry a target keeps of its own to an extended grant's new end (`extend`), or
/// remove a standing privilege no grant explains (drift, when the target says so). Jobs are
/// rows, so they survive restarts; the provisioning runner works through the due ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProvisionJob {
    pub id: Uuid,
    /// The grant whose privilege a `grant`, `revoke` or `extend` job is about; `None` for
    /// `remove_drift`.
    pub grant_id: Option<Uuid>,
    pub action: ProvisionAction,
    /// What a `remove_drift` job takes away; `None` for the others.
    #[serde(default)]
    pub drift: Option<DriftFinding>,
    /// Attempts made so far.
    pub attempts: i64,
    pub next_attempt_at: Timestamp,
    pub last_error: Option<String>,
    pub done: bool,
    pub created_at: Timestamp,
}

/// A standing privilege in a target that no live pedm grant explains (reconciliation).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DriftFinding {
    pub target: String,
    pub account: String,
    pub privilege: String,
    #[serde(default)]
    pub source: String,
}

impl DriftFinding {
    pub fn new(target: &str, p: &StandingPrivilege) -> Self {
        DriftFinding {
            target: target.to_string(),
            account: p.account.clone(),
            privilege: p.privilege.clone(),
            source: p.source.clone(),
        }
    }

    /// The privilege as discovery reported it.
    pub fn standing(&self) -> StandingPrivilege {
        StandingPrivilege {
            account: self.account.clone(),
            privilege: self.privilege.clone(),
            source: self.source.clone(),
        }
    }
}

/// A privileged account found in a target, whoever created it (discovery).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StandingPrivilege {
    pub account: String,
    pub privilege: String,
    #[serde(default)]
    pub source: String,
}

/// Whether a grant's privilege is in its target as its provisioning state says
/// (`pedm grant verify`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GrantCheck {
    pub grant_id: Uuid,
    pub provision_state: ProvisionState,
    /// Whether the privilege should be in the target now: `None` while it is being switched
    /// on or off, or when nothing is provisioned for the grant.
    pub expected: Option<bool>,
    /// Whether the target says it is there (`None`: not asked, nothing is provisioned).
    pub present: Option<bool>,
    /// What was seen, and why it is expected (e.g. left in place for another live grant).
    pub detail: String,
    /// `present` agrees with `expected` (true when either is unknown).
    pub consistent: bool,
}

/// Standing privileges across every target with a provisioner (`pedm report standing`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StandingReport {
    pub rows: Vec<StandingRow>,
    /// Targets that could not be read, with why.
    pub errors: Vec<TargetError>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StandingRow {
    pub target: String,
    pub account: String,
    pub privilege: String,
    pub source: String,
    /// The live pedm grant this privilege belongs to: not standing, it ends with the grant.
    /// `None`: standing (nobody asked pedm for it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temporary_grant: Option<Uuid>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TargetError {
    pub target: String,
    pub error: String,
}

string_enum!(ApprovalDecision {
    Approve => "approve",
    Deny => "deny",
});

/// Where a request came from, as seen by the transport (never as claimed by the body).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RequestContext {
    pub source_addr: Option<String>,
    /// Device posture claims; attested by a later identity integration.
    #[serde(default)]
    pub device: BTreeMap<String, String>,
    /// A step-up request: the exec held in a session until it is decided (asked by the
    /// session's host agent, never by a person).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_up: Option<StepUp>,
    /// An extension: the live grant this request lengthens by `duration_secs` (`pedm grant
    /// extend`). Approved, it moves that grant's expiry; no new grant is made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extends: Option<Uuid>,
    /// Scheduled access: the window starts here (later than the request), not at approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starts_at: Option<Timestamp>,
    /// What the ticket system said about the request's ticket, when one checked it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<crate::ticket::TicketFacts>,
    /// Made by an AI agent for its person (an agent token): `context.via_agent` in policy.
    /// Set by the control plane from the actor's authentication, whatever a transport says.
    #[serde(default)]
    pub via_agent: bool,
    /// Granted by a permit marked `@while_on_call("true")`: the grant ends when its holder's
    /// on-call shift does.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub while_on_call: bool,
    /// How unusual the request is for its requester ([`crate::risk`]): shown to approvers,
    /// `context.risk` in policy. Set by the control plane, whatever a transport says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub risk: Option<Risk>,
}

/// An exec held at its `execve` in a session until approvers decide (a policy marked it
/// `@step_up`): what the host agent asks approval for. Approval lets that one exec run; no
/// grant is made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HeldExec {
    /// The grant the session runs under.
    pub grant: Uuid,
    pub session: Uuid,
    /// The full argument vector, as the program was called.
    pub argv: Vec<String>,
    /// The program the agent resolved and checked (absolute).
    pub path: String,
    #[serde(default)]
    pub sha256: Option<String>,
    /// The caller's working directory.
    pub cwd: String,
    /// The held process.
    #[cfg_attr(feature = "openapi", schema(format = Int32))]
    pub pid: i32,
    /// The agent saw a shell (as policy's `resource.shell`).
    #[serde(default)]
    pub shell: bool,
}

/// A step-up request's context: the held exec and the policies that make it approvable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StepUp {
    pub exec: HeldExec,
    /// The `@step_up` policies that make it approvable (as the server decided).
    #[serde(default)]
    pub policies: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Request {
    pub id: Uuid,
    pub requester: String,
    pub target: String,
    pub role: String,
    pub duration_secs: i64,
    pub justification: String,
    pub task: Option<String>,
    pub ticket: Option<String>,
    pub context: RequestContext,
    pub state: RequestState,
    pub created_at: Timestamp,
    /// A pending request nobody answers by then expires.
    pub pending_until: Timestamp,
    pub decided_at: Option<Timestamp>,
    /// The approver, the requester (cancel), or `policy`/`system`.
    pub decided_by: Option<String>,
    pub decision_reason: Option<String>,
    pub grant_id: Option<Uuid>,
    /// Approvals needed before the request is granted (0 when decided by policy at once):
    /// the sum over `approval_tiers`.
    pub approvals_required: u32,
    /// Ordered approval steps; each must be complete before the next one starts.
    #[serde(default)]
    pub approval_tiers: Vec<ApprovalTier>,
    /// The policy that determined the decision (the permit whose requirements apply, or the
    /// forbid that denied).
    #[serde(default)]
    pub policy: Option<String>,
    /// Emergency access: granted at once, reviewed afterwards.
    #[serde(default)]
    pub break_glass: bool,
    /// The after-the-fact review of a break-glass grant.
    #[serde(default)]
    pub review: Option<Review>,
    /// Reminders and escalation while nobody answers (from the permit that decided it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follow_up: Option<FollowUp>,
    /// Optimistic concurrency: every update must name the version it read.
    pub version: i64,
}

impl Request {
    /// The approval steps as decided (one approval by anyone permitted when none were named).
    pub fn tiers(&self) -> Vec<ApprovalTier> {
        if self.approval_tiers.is_empty() {
            vec![ApprovalTier {
                group: None,
                required: self.approvals_required.max(1),
            }]
        } else {
            self.approval_tiers.clone()
        }
    }

    /// Each step with the approvals it still needs (`required`: how many more), in order,
    /// given these decisions: `(step index, what is still needed)` for unfinished steps.
    pub fn outstanding(&self, approvals: &[Approval]) -> Vec<(u32, ApprovalTier)> {
        self.tiers()
            .into_iter()
            .enumerate()
            .filter_map(|(i, t)| {
                let have = approvals
                    .iter()
                    .filter(|a| a.tier == i as u32 && a.decision == ApprovalDecision::Approve)
                    .count() as u32;
                (have < t.required).then(|| {
                    (
                        i as u32,
                        ApprovalTier {
                            group: t.group,
                            required: t.required - have,
                        },
                    )
                })
            })
            .collect()
    }
}

/// What happens to a request nobody answers, from the deciding permit's `@remind_after`,
/// `@escalate_after` and `@escalate_to`: the approvers it waits for are reminded, then the
/// escalation group is told, and from then on its members may decide the step it waits for
/// too (if policy lets them approve the role at all).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FollowUp {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remind_after_secs: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalate_after_secs: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalate_to: Option<String>,
}

impl FollowUp {
    /// The escalation group, once a request made at `created_at` has been escalated at `now`.
    pub fn escalated_to(&self, created_at: Timestamp, now: Timestamp) -> Option<&str> {
        let after = self.escalate_after_secs?;
        (now >= created_at + jiff::SignedDuration::from_secs(after))
            .then_some(self.escalate_to.as_deref())
            .flatten()
    }
}

/// One approval step: `required` approvals from members of `group` (anyone whom policy lets
/// approve, when `group` is `None`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApprovalTier {
    pub group: Option<String>,
    pub required: u32,
}

string_enum!(ReviewState {
    Open => "open",
    Closed => "closed",
});

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Review {
    pub state: ReviewState,
    pub reviewed_by: Option<String>,
    pub reviewed_at: Option<Timestamp>,
    pub comment: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Approval {
    pub request_id: Uuid,
    /// Index of the approval tier this decision counted towards.
    #[serde(default)]
    pub tier: u32,
    pub approver: String,
    pub decision: ApprovalDecision,
    pub comment: Option<String>,
    pub at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Grant {
    pub id: Uuid,
    pub request_id: Uuid,
    pub user: String,
    pub target: String,
    pub role: String,
    pub starts_at: Timestamp,
    pub expires_at: Timestamp,
    pub state: GrantState,
    pub ended_at: Option<Timestamp>,
    pub ended_by: Option<String>,
    pub end_reason: Option<String>,
    /// Whether the privilege is in the target: `active` at once for targets without a
    /// provisioner; `provisioning` until the target confirms otherwise.
    #[serde(default = "default_provision_state")]
    pub provision_state: ProvisionState,
    /// The last provisioning result or error (never a secret).
    #[serde(default)]
    pub provision_detail: Option<String>,
}

impl Grant {
    /// The grant as it stands at `now`: an `active` grant whose `expires_at` has passed is
    /// shown `expired` (ended at its expiry by the system) even before the scheduler has
    /// recorded it, so no answer ever calls an expired grant active (e.g. right after a
    /// restart, before the first expiry pass).
    pub fn as_of(mut self, now: Timestamp) -> Grant {
        if self.state == GrantState::Active && now >= self.expires_at {
            self.state = GrantState::Expired;
            self.ended_at = Some(self.expires_at);
            self.ended_by = Some(SYSTEM_ACTOR.to_string());
            self.end_reason = Some("reached its expiry time".into());
        }
        self
    }
}

fn default_provision_state() -> ProvisionState {
    ProvisionState::Active
}

/// One file of policies, as applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PolicySource {
    pub name: String,
    pub text: String,
}

/// A policy set as applied at one moment. Versions only grow; the newest is in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PolicyVersion {
    pub version: i64,
    pub created_at: Timestamp,
    pub created_by: String,
    pub comment: Option<String>,
    /// SHA-256 over the sources, hex.
    pub digest: String,
    pub sources: Vec<PolicySource>,
}

/// Who is acting, established by authentication (token) or the kernel (peer credentials).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Actor {
    pub user: String,
    pub admin: bool,
    pub groups: Vec<String>,
    /// The token the actor authenticated with, if any.
    pub token_id: Option<String>,
    /// An external (vendor) account (see [`crate::external`]): `principal.external` in policy.
    #[serde(default)]
    pub external: bool,
    /// The external account's sponsor: `principal.sponsor` in policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sponsor: Option<String>,
    /// A workload signed in by token exchange: `principal.workload` in policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<crate::workload::WorkloadIdentity>,
    /// An AI agent acting for `user`, authenticated by an agent token (never claimed by a
    /// request body). It holds none of the person's administrative or approving rights;
    /// its requests carry `context.via_agent`.
    #[serde(default)]
    pub via_agent: bool,
}

impl Actor {
    /// The server itself (scheduler, bootstrap).
    pub fn system() -> Self {
        Actor {
            user: SYSTEM_ACTOR.to_string(),
            admin: true,
            groups: vec![],
            token_id: None,
            external: false,
            sponsor: None,
            workload: None,
            via_agent: false,
        }
    }
}

pub const SYSTEM_ACTOR: &str = "system";
pub const POLICY_ACTOR: &str = "policy";

/// Filters for listing requests.
#[derive(Debug, Clone, Default)]
pub struct RequestFilter {
    pub requester: Option<String>,
    /// Only requests created at or after this moment.
    pub since: Option<Timestamp>,
    /// Only break-glass requests whose review is in this state.
    pub review: Option<ReviewState>,
    pub state: Option<RequestState>,
    pub target: Option<String>,
    pub limit: Option<u32>,
}

/// Filters for listing grants.
#[derive(Debug, Clone, Default)]
pub struct GrantFilter {
    pub user: Option<String>,
    pub state: Option<GrantState>,
    pub target: Option<String>,
    pub limit: Option<u32>,
    /// Only grants that may have been held at some moment in `[from, to]`: started by `to`,
    /// and expiring or ended at `from` or later (a superset: a caller that knows the clock
    /// narrows it, see `Grant::as_of`).
    pub held_between: Option<(Timestamp, Timestamp)>,
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(b: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(b))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = String::deserialize(d)?;
        let v = hex::decode(&s).map_err(serde::de::Error::custom)?;
        v.try_into()
            .map_err(|_| serde::de::Error::custom("expected 32 bytes"))
    }
}

/// A request's risk: what approvers see, what policies read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Risk {
    /// 0 (nothing unusual) to 100.
    pub score: u32,
    pub reasons: Vec<RiskReason>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RiskReason {
    /// `first_on_target`, `break_glass`, `unusual_hour`, `longer_than_usual`,
    /// `untrusted_device`, `new_network`, `denied_then_retried` or `burst`.
    pub code: String,
    pub points: u32,
    /// For people: what was unusual, compared with what.
    pub detail: String,
}

impl Risk {
    /// `45: first elevation on db1 in 90 days; break-glass`.
    pub fn summary(&self) -> String {
        if self.reasons.is_empty() {
            return format!("{}: nothing unusual", self.score);
        }
        let reasons: Vec<&str> = self.reasons.iter().map(|r| r.detail.as_str()).collect();
        format!("{}: {}", self.score, reasons.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(validate_name("user", "alice").is_ok());
        assert!(validate_name("user", "a.b-c_9").is_ok());
        for bad in ["", "-x", "a b", "a;b", "a'b", "é", &"x".repeat(65)] {
            assert!(validate_name("user", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn enums_round_trip() {
        for s in RequestState::ALL {
            assert_eq!(s.as_str().parse::<RequestState>(), Ok(*s));
        }
        assert!("bogus".parse::<GrantState>().is_err());
    }
}
