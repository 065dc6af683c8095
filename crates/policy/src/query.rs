//! Query and verdict types.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// Who is asking: a user, the groups it belongs to (its Cedar parents) and the admin flag.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Principal {
    pub user: String,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub admin: bool,
    /// An external (vendor) account: `principal.external`.
    #[serde(default)]
    pub external: bool,
    /// The external account's sponsor: `principal.sponsor` (absent for other users).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sponsor: Option<String>,
    /// A workload signed in by token exchange: `principal.workload` (absent for people).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<pedm_core::workload::WorkloadIdentity>,
    /// On call now, per the configured on-call source: `principal.on_call`.
    #[serde(default)]
    pub on_call: bool,
}

impl Principal {
    pub fn new(user: impl Into<String>, groups: &[&str]) -> Self {
        Principal {
            user: user.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            ..Default::default()
        }
    }
}

/// A target as policies see it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TargetRef {
    pub name: String,
    #[serde(default)]
    pub kind: String,
    /// Labels; policies see them as the set of `"key=value"` strings.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl TargetRef {
    pub fn new(name: impl Into<String>, kind: impl Into<String>, labels: &[(&str, &str)]) -> Self {
        TargetRef {
            name: name.into(),
            kind: kind.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }
}

impl From<&pedm_core::model::Target> for TargetRef {
    fn from(t: &pedm_core::model::Target) -> Self {
        TargetRef {
            name: t.name.clone(),
            kind: t.kind.as_str().to_string(),
            labels: t.labels.clone(),
        }
    }
}

/// A role on a target.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RoleRef {
    pub name: String,
    #[serde(default)]
    pub run_as: Option<String>,
    /// The role's owner marked it low-risk (`resource.auto_approve`).
    #[serde(default)]
    pub auto_approve: bool,
}

impl RoleRef {
    pub fn new(name: impl Into<String>) -> Self {
        RoleRef {
            name: name.into(),
            run_as: None,
            auto_approve: false,
        }
    }
}

impl From<&pedm_core::model::Role> for RoleRef {
    fn from(r: &pedm_core::model::Role) -> Self {
        RoleRef {
            name: r.name.clone(),
            run_as: r.run_as.clone(),
            auto_approve: r.auto_approve,
        }
    }
}

/// A command to be executed under a role (action `exec`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CommandRef {
    pub path: String,
    #[serde(default)]
    pub args: String,
    #[serde(default)]
    pub sha256: Option<String>,
    /// An interactive login shell (`pedm shell`, or a shell or interpreter the agent
    /// recognised on a terminal) rather than one command.
    #[serde(default)]
    pub shell: bool,
    /// The working directory the caller asked for (`pedm exec --chdir`); `None`: the run-as
    /// user's home. In Cedar: `context.cwd` (absent when `None`).
    #[serde(default)]
    pub cwd: Option<String>,
}

/// A ticket as its system reported it when the request was made (`context.ticket`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Ticket {
    /// The configured ticket system's name.
    pub system: String,
    pub state: String,
    /// Empty when the system gave none.
    pub priority: String,
    pub assigned_to_requester: bool,
    /// Now is inside the ticket's implementation window (false when it has none).
    pub in_window: bool,
}

/// Device posture claims. Absent claims are absent attributes in Cedar
/// (`context.device has managed`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Device {
    #[serde(default)]
    pub managed: Option<bool>,
    #[serde(default)]
    pub compliant: Option<bool>,
    #[serde(default)]
    pub os: Option<String>,
    /// An enrolled device's id (present only when the request came from one).
    #[serde(default)]
    pub id: Option<String>,
    /// Enrolled and approved by an admin, not revoked.
    #[serde(default)]
    pub trusted: Option<bool>,
    /// Unix seconds.
    #[serde(default)]
    pub enrolled_at: Option<i64>,
    #[serde(default)]
    pub os_version: Option<String>,
    #[serde(default)]
    pub disk_encrypted: Option<bool>,
    #[serde(default)]
    pub screen_lock: Option<bool>,
}

/// Request context. `now` is turned into `context.time` in each policy's time zone.
#[derive(Debug, Clone, PartialEq)]
pub struct Ctx {
    pub duration_secs: i64,
    pub break_glass: bool,
    pub has_ticket: bool,
    /// The request lengthens a live grant (`pedm grant extend`): `context.extension`.
    pub extension: bool,
    /// Scheduled access: seconds from now to the window's start (0 when at once):
    /// `context.starts_in_secs`. `now` is then the window's start.
    pub starts_in_secs: i64,
    /// Asked by an AI agent for its person (an agent token, `pedm mcp`): `context.via_agent`.
    pub via_agent: bool,
    /// How unusual the request is for its requester, 0..100 (`pedm_core::risk`):
    /// `context.risk`. 0 outside requests and their approvals.
    pub risk: i64,
    /// What the ticket system said about the request's ticket (`context.ticket`); `None`
    /// when no configured system checked it.
    pub ticket: Option<Ticket>,
    /// `None` leaves `context.source_ip` absent; policies must guard it with `has`.
    pub source_ip: Option<IpAddr>,
    pub device: Device,
    pub now: jiff::Timestamp,
}

impl Ctx {
    /// A context at `now` with everything else empty / false and a one-hour duration.
    pub fn at(now: jiff::Timestamp) -> Self {
        Ctx {
            duration_secs: 3600,
            break_glass: false,
            has_ticket: false,
            extension: false,
            starts_in_secs: 0,
            via_agent: false,
            risk: 0,
            ticket: None,
            source_ip: None,
            device: Device::default(),
            now,
        }
    }
}

/// Action `request`: may `principal` obtain `role` on `target`, and on which terms?
#[derive(Debug, Clone, PartialEq)]
pub struct RequestQuery {
    pub principal: Principal,
    pub target: TargetRef,
    pub role: RoleRef,
    pub context: Ctx,
}

/// Every action of the schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Request,
    Approve,
    Exec,
    RunTask,
    Delegate,
    ManageUsers,
    ManageTargets,
    ManagePolicies,
    ReadAudit,
    /// Revoke others' grants, review break-glass access.
    ManageGrants,
    /// Trust a device at enrollment without an admin (`context.device` is what it reported).
    TrustDevice,
}

impl Action {
    pub const ALL: [Action; 11] = [
        Action::Request,
        Action::Approve,
        Action::Exec,
        Action::RunTask,
        Action::Delegate,
        Action::ManageUsers,
        Action::ManageTargets,
        Action::ManagePolicies,
        Action::ReadAudit,
        Action::ManageGrants,
        Action::TrustDevice,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Request => "request",
            Action::Approve => "approve",
            Action::Exec => "exec",
            Action::RunTask => "run_task",
            Action::Delegate => "delegate",
            Action::ManageUsers => "manage_users",
            Action::ManageTargets => "manage_targets",
            Action::ManagePolicies => "manage_policies",
            Action::ReadAudit => "read_audit",
            Action::ManageGrants => "manage_grants",
            Action::TrustDevice => "trust_device",
        }
    }

    pub fn parse(s: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == s)
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The resource of an [`AuthzQuery`].
#[derive(Debug, Clone, PartialEq)]
pub enum Resource {
    /// `Pedm::Role::"<target>/<role>"` (actions request, approve, delegate).
    Role { target: TargetRef, role: RoleRef },
    /// `Pedm::Command::"<target>/<role>/<path>"` (action exec).
    Command {
        target: TargetRef,
        role: RoleRef,
        command: CommandRef,
    },
    /// `Pedm::Task::"<target>/<task>"` (actions run_task, delegate).
    Task { target: TargetRef, task: String },
    /// `Pedm::Target::"<name>"` (admin actions scoped to one target).
    Target(TargetRef),
    /// `Pedm::System::"pedm"` (admin actions on the installation).
    System,
}

/// Any action other than the approval-aware `request` decision.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthzQuery {
    pub principal: Principal,
    pub action: Action,
    pub resource: Resource,
    pub context: Ctx,
    /// For `approve`: the user whose request is being approved (`context.requester`).
    pub requester: Option<Principal>,
}

/// One ordered approval step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalTier {
    /// Approvers must be members of this group; `None`: anyone the `approve` action permits.
    pub group: Option<String>,
    /// Distinct approvals needed.
    pub required: u32,
}

impl std::fmt::Display for ApprovalTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.group {
            Some(g) => write!(f, "{g}:{}", self.required),
            None => write!(f, "{}", self.required),
        }
    }
}

/// Terms on which a request is permitted (from the chosen permit policy).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requirements {
    /// The permit policy whose annotations these are.
    pub policy: String,
    /// Granted without approvers (also true for break-glass grants).
    pub auto_approve: bool,
    /// The longest grant the policy allows; `None` if unannotated.
    pub max_duration_secs: Option<i64>,
    /// Ordered approval tiers; empty when `auto_approve`.
    pub tiers: Vec<ApprovalTier>,
    /// Granted through a `@break_glass("true")` policy: notify, open a review.
    pub break_glass: bool,
    /// `@allow_parallel("true")`: the requester may hold several live grants of this role
    /// at once (otherwise a second request while one is live is refused).
    pub allow_parallel: bool,
    /// `@remind_after`, `@escalate_after`, `@escalate_to`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follow_up: Option<pedm_core::model::FollowUp>,
    /// `@while_on_call("true")`: the grant ends with its holder's on-call shift.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub while_on_call: bool,
}

impl Requirements {
    /// Total number of approvals over all tiers.
    pub fn total_approvals(&self) -> u32 {
        self.tiers.iter().map(|t| t.required).sum()
    }

    /// Tiers written like the annotation (`"team-leads:1, security:2"`).
    pub fn tiers_text(&self) -> String {
        self.tiers
            .iter()
            .map(|t| t.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Outcome of [`crate::Engine::decide_request`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RequestVerdict {
    Deny {
        /// Determining policies: the forbids that applied, the policies that errored, or the
        /// permits that applied but could not be used (e.g. duration over their maximum).
        policies: Vec<String>,
        reason: String,
        /// Evaluation errors (`policy id: message`); any error denies.
        errors: Vec<String>,
    },
    Permit(Requirements),
}

impl RequestVerdict {
    pub fn is_permit(&self) -> bool {
        matches!(self, RequestVerdict::Permit(_))
    }
}

/// An exec that approval can allow ([`crate::Engine::step_up`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepUp {
    /// The `@step_up` permits that match.
    pub policies: Vec<String>,
    /// The approvals needed (the first matching policy's).
    pub tiers: Vec<ApprovalTier>,
}

/// Outcome of [`crate::Engine::authorize`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub allowed: bool,
    /// Determining policies: permits when allowed; forbids (or erroring policies) when denied.
    pub policies: Vec<String>,
    /// Evaluation errors (`policy id: message`); any error denies.
    pub errors: Vec<String>,
    /// Human-readable explanation.
    pub reason: String,
}
