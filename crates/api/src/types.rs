//! Request and response bodies specific to the HTTP transport.

use jiff::Timestamp;
use pedm_core::model::{
    Approval, Grant, PolicySource, Request, Role, SessionLimits, Target, TargetKind, User,
};
use pedm_core::ssh::SshAccess;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

/// Every error response: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable kind: invalid, not_found, unauthenticated, forbidden,
    /// conflict, already_exists, payload_too_large, timeout, storage, internal.
    pub code: String,
    /// What is wrong, for a person.
    pub message: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WhoAmI {
    pub user: User,
    pub groups: Vec<String>,
    pub token: Option<TokenInfo>,
}

/// A token as shown to people: never the secret or its hash.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TokenInfo {
    pub id: String,
    pub user: String,
    pub description: Option<String>,
    pub created_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
    /// `api` (minted with `pedm token create`), `agent` (minted with `pedm token create
    /// --for-agent`: for an AI agent acting for its holder, with the narrow rights of the
    /// agent allow-list) or `session` (opened by `pedm login`).
    #[serde(default = "api_kind")]
    pub kind: String,
}

fn api_kind() -> String {
    "api".into()
}

impl From<pedm_core::model::TokenRecord> for TokenInfo {
    fn from(t: pedm_core::model::TokenRecord) -> Self {
        TokenInfo {
            id: t.id,
            user: t.user,
            description: t.description,
            created_at: t.created_at,
            expires_at: t.expires_at,
            revoked_at: t.revoked_at,
            kind: if t.agent { "agent".into() } else { api_kind() },
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    pub name: String,
    #[serde(default)]
    pub display_name: Option<String>,
    /// Where mail notifications go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default)]
    pub admin: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    /// A new mail address; an empty string removes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateGroup {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// Whose token; defaults to the caller. Only admins mint tokens for others.
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    /// Lifetime such as `30d` or `12h`, or `never` (a token that never expires, e.g. for a
    /// service, only when asked for by name); absent: the server's default lifetime
    /// (`[auth] default_token_lifetime`, 90 days unless configured).
    #[serde(default)]
    pub expires_in: Option<String>,
    /// A token for an AI agent acting for its holder (`pedm mcp`): it may only read the
    /// holder's identity, requests and grants, list what they may request, and create, wait
    /// on or cancel their requests; those requests carry `context.via_agent`. It must expire.
    #[serde(default)]
    pub for_agent: bool,
}

/// A newly minted token. `token` is shown this once and never again.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreatedToken {
    pub token: String,
    pub info: TokenInfo,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTarget {
    pub name: String,
    pub kind: TargetKind,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TargetDetail {
    pub target: Target,
    pub roles: Vec<Role>,
}

/// A role the caller may ask for now (`GET /me/requestable`), as policy judges a one-minute
/// request made now (with a ticket where policy refuses it without one). A real request can
/// still be decided otherwise: a longer duration, what a ticket system says of its ticket.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Requestable {
    pub target: String,
    pub target_kind: TargetKind,
    pub role: String,
    pub description: Option<String>,
    /// The longest grant it may be asked for, e.g. `1h` (the tightest of the role's, the
    /// policy's and the server's ceilings).
    pub max_duration: String,
    pub max_duration_secs: i64,
    /// `granted_at_once` or `needs_approval`.
    pub outcome: String,
    /// The approval steps a request waits for, e.g. `security:2` (empty when granted at once).
    pub approvals: String,
    /// The policy that decides it.
    pub policy: Option<String>,
    /// Why, for people.
    pub reason: String,
    /// Refused without a ticket, possible with one.
    pub ticket_required: bool,
}

/// `PATCH /targets/{name}/roles/{role}`: the settings to change (absent: unchanged).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateRole {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_duration: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_approve: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub noexec: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_setuid: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record_input: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intercept: Option<bool>,
    /// Replaces every resource limit of the role's host sessions (`{}` lifts them all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<SessionLimits>,
    /// Replaces the watched paths (`[]`: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watch_paths: Option<Vec<String>>,
    /// Replaces every SSH setting of the role (`{}`: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh: Option<SshAccess>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRole {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    /// Longest a grant of this role may last, such as `1h` or `8h`.
    pub max_duration: String,
    /// Interim rule until policies decide: grant without approval.
    #[serde(default)]
    pub auto_approve: bool,
    /// Account the privilege runs as on the target (e.g. `root`).
    #[serde(default)]
    pub run_as: Option<String>,
    /// Host sessions of this role may run their program but nothing it would start
    /// (`execve` refused with EACCES): no shell escapes from `less`, `vi`, `find -exec`.
    #[serde(default)]
    pub noexec: bool,
    /// Host sessions of this role keep setuid programs working (`su`, `sudo`, `ping`);
    /// without it they run with `no_new_privs`.
    #[serde(default)]
    pub allow_setuid: bool,
    /// Host sessions of this role record what the user types as well as the output
    /// (never input typed with echo off, such as passwords). Off by default.
    #[serde(default)]
    pub record_input: bool,
    /// Host sessions of this role have every program they start decided by the `exec`
    /// policy and recorded as `session.exec` (refused ones fail with EACCES).
    #[serde(default)]
    pub intercept: bool,
    /// Resource limits on everything a grant's host sessions run (cgroups); a host that
    /// cannot enforce one runs nothing under it.
    #[serde(default)]
    pub limits: SessionLimits,
    /// Host sessions of this role have every file they write under these paths (absolute,
    /// existing on the host) recorded as `session.file_changed`.
    #[serde(default)]
    pub watch_paths: Vec<String>,
    /// `ssh` targets: what the certificate allows besides logging in as `run_as`
    /// (force-command, source address, forwarding, pty).
    #[serde(default)]
    pub ssh: SshAccess,
}

impl CreateRole {
    /// A role with every option at its default (no run-as, approval needed, no session
    /// controls): set the others with struct update syntax.
    pub fn new(name: &str, max_duration: &str) -> Self {
        CreateRole {
            name: name.into(),
            description: None,
            max_duration: max_duration.into(),
            auto_approve: false,
            run_as: None,
            noexec: false,
            allow_setuid: false,
            record_input: false,
            intercept: false,
            limits: SessionLimits::default(),
            watch_paths: vec![],
            ssh: SshAccess::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    pub target: String,
    pub role: String,
    /// How long the privilege is needed: `30m`, `1h30m`, `45s`.
    pub duration: String,
    /// Why: required, shown to approvers and kept in the audit log.
    pub justification: String,
    /// The task to be done, if the request is for one.
    #[serde(default)]
    pub task: Option<String>,
    /// Change or incident ticket reference.
    #[serde(default)]
    pub ticket: Option<String>,
    /// Emergency access: granted at once where a break-glass policy allows, with a
    /// high-severity notification and a mandatory review afterwards.
    #[serde(default)]
    pub break_glass: bool,
    /// Scheduled access: when the window starts (RFC 3339, e.g. `2026-12-05T22:00:00Z`), at
    /// most 30 days ahead. Approved before then, the privilege is switched on at the start
    /// and off `duration` later. Absent: at approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
}

/// Ask to lengthen an active grant you hold (`POST /grants/{id}/extend`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExtendGrant {
    /// How much longer: `30m`, `1h`.
    pub by: String,
    /// Why: required, shown to approvers and kept in the audit log.
    pub justification: String,
    /// Change or incident ticket reference.
    #[serde(default)]
    pub ticket: Option<String>,
}

/// A request and, if it was granted at once, its grant.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RequestCreated {
    pub request: Request,
    pub grant: Option<Grant>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RequestDetail {
    pub request: Request,
    pub approvals: Vec<Approval>,
}

/// An approver's decision; a comment is required to deny.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Decide {
    #[serde(default)]
    pub comment: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Decided {
    pub request: Request,
    pub grant: Option<Grant>,
}

/// Reason for cancelling a request or ending a grant (required to revoke).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Reason {
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RequestQuery {
    /// Only pending requests the caller may approve or deny now.
    pub approvable: Option<bool>,
    /// Only requests created at or after this RFC 3339 time.
    pub since: Option<String>,
    pub state: Option<String>,
    pub requester: Option<String>,
    pub target: Option<String>,
    pub limit: Option<u32>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct GrantQuery {
    pub state: Option<String>,
    pub user: Option<String>,
    pub target: Option<String>,
    pub limit: Option<u32>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TokenQuery {
    pub user: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Only events after this sequence number.
    pub after: Option<i64>,
    /// Only events before this sequence number (paging back with `newest_first`).
    pub before: Option<i64>,
    /// Newest first (`limit` then keeps the newest); oldest first when absent or false.
    pub newest_first: Option<bool>,
    pub actor: Option<String>,
    /// Events about this target (itself, its roles, requests and grants on it).
    pub target: Option<String>,
    /// Events about this request (and its grant).
    pub request: Option<uuid::Uuid>,
    pub action: Option<String>,
    pub subject: Option<String>,
    /// RFC 3339.
    pub since: Option<String>,
    /// RFC 3339.
    pub until: Option<String>,
    pub limit: Option<u32>,
    /// As stored and hashed (personal data left sealed, so each event verifies); opened,
    /// with erased subjects as `[erased]`, when absent or false.
    pub sealed: Option<bool>,
}

/// A policy set to apply: every file, in full (the set replaces the one in force).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApplyPolicies {
    pub sources: Vec<PolicySource>,
    #[serde(default)]
    pub comment: Option<String>,
}

/// A candidate policy set to replay recorded requests against.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SimulatePolicies {
    pub sources: Vec<PolicySource>,
    /// How far back: a duration such as `30d`, or an RFC 3339 time.
    #[serde(default)]
    pub since: Option<String>,
}

/// `POST /policies/check`: prove policy properties over everyone pedm knows.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckPolicies {
    /// The set to check; the set in force when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sources: Option<Vec<PolicySource>>,
    /// The properties to prove; the server's (`[policy] properties`) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<Vec<pedm_core::policy_check::Property>>,
}

/// `GET /policies/suggestions/commands`: which exec history to learn command rules from.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CommandSuggestionQuery {
    /// How far back: a duration such as `30d`, or an RFC 3339 time (default 30 days).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// Only this target's roles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Only roles of this name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BreakGlassQuery {
    /// Only grants whose review is still open (default true).
    pub open: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Health {
    pub status: String,
    pub version: String,
}

/// Ids in paths are UUIDs (requests, grants) or names.
pub type Id = Uuid;

// ------------------------------------------------------------------ audit checkpoints, proofs

/// A signed audit checkpoint: the server's Ed25519 signature over `(size, root, time)` (see
/// `pedm-audit` for the signed bytes). The same JSON as `pedm_audit::SignedCheckpoint`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditCheckpoint {
    /// Number of events covered (seq 1..=size).
    pub size: u64,
    /// RFC 6962 Merkle root of the first `size` events, hex.
    pub root: String,
    /// RFC 3339.
    pub time: String,
    /// First 8 bytes of SHA-256 of the public key, hex.
    pub key_id: String,
    /// Ed25519 signature, base64.
    pub signature: String,
}

/// The server's checkpoint-signing public key.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditPublicKey {
    /// `ed25519:<base64>`.
    pub public_key: String,
    pub key_id: String,
    /// The origin line of the log's checkpoint notes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// The C2SP note verifier key of the log (`<origin>+<key id>+<base64>`), for witnesses and
    /// tools outside pedm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vkey: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct InclusionQuery {
    /// The event's sequence number.
    #[param(minimum = 1)]
    pub seq: i64,
    /// Tree size of a stored checkpoint to prove against; default: the newest checkpoint
    /// (one is signed now if none covers `seq`).
    pub size: Option<u64>,
}

/// RFC 6962 inclusion proof of one event in a signed checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct InclusionProof {
    pub seq: i64,
    /// 0-based leaf index (`seq - 1`).
    pub leaf_index: u64,
    /// The event's chain hash (the leaf data), hex.
    pub leaf: String,
    pub tree_size: u64,
    /// Audit path, bottom-up, hex.
    pub proof: Vec<String>,
    pub checkpoint: AuditCheckpoint,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ConsistencyQuery {
    /// The older tree size.
    pub from: u64,
    /// The newer tree size; default: the newest checkpoint.
    pub to: Option<u64>,
}

/// RFC 6962 consistency proof between two tree sizes, with their checkpoints when signed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ConsistencyProof {
    pub from: u64,
    pub to: u64,
    /// Hex.
    pub from_root: String,
    /// Hex.
    pub to_root: String,
    /// Hex, RFC 6962 order.
    pub proof: Vec<String>,
    pub from_checkpoint: Option<AuditCheckpoint>,
    pub to_checkpoint: Option<AuditCheckpoint>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExportQuery {
    /// `jsonl` (default; verifiable with `pedm audit verify --file`), `csv` or `ocsf`.
    pub format: Option<String>,
}

/// `GET /audit/archive`: the oldest events, up to the newest checkpoint whose events are all
/// from before `before` (RFC 3339; default: now minus `[audit] retention`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ArchiveQuery {
    pub before: Option<String>,
}

/// `POST /audit/prune`: prune events `1..=through`, archived in the segment whose SHA-256 is
/// given (the segment verified first).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PruneAudit {
    /// At least 1.
    #[serde(deserialize_with = "required_whole_number")]
    pub through: i64,
    /// 64 hex digits.
    pub archive_sha256: String,
}

pub use pedm_core::audit::PrunedPrefix;

/// A required count: any whole JSON number (`5` or `5.0`), never null.
fn required_whole_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    use serde::de::Error as _;
    pedm_core::syntax::whole_number(d)?.ok_or_else(|| D::Error::custom("a number is required"))
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReportQuery {
    /// Window: a duration back from now (`30d`, `12h`) or an RFC 3339 time. Default `30d`.
    pub since: Option<String>,
}

/// A secret a grant produced (e.g. a generated database password), handed over once.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
pub struct GrantSecret {
    pub grant_id: Uuid,
    pub secret: String,
}

impl std::fmt::Debug for GrantSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrantSecret")
            .field("grant_id", &self.grant_id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// What `POST /grants/{id}/credentials` asks the grant's target for (an empty body: `tools`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IssueCredentials {
    #[serde(default)]
    pub form: CredentialsForm,
}

/// `tools`: what the target's command-line tools read; `console`: a sign-in URL for the
/// target's web console (for `aws`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CredentialsForm {
    #[default]
    Tools,
    Console,
}

/// Short-lived credentials a grant's target issued for its holder (`POST
/// /grants/{id}/credentials`). For `aws`, `credentials` is the AWS CLI's `credential_process`
/// JSON (`Version`, `AccessKeyId`, `SecretAccessKey`, `SessionToken`, `Expiration`); for
/// `aws-console`, `{"url", "session_expires_at"}` (the URL signs in once, within 15 minutes);
/// for `kubernetes`, kubectl's ExecCredential.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
pub struct GrantCredentials {
    pub grant_id: Uuid,
    /// `aws`, `aws-console`, `kubernetes`.
    pub kind: String,
    /// When they stop working: never after the grant ends.
    pub expires_at: Timestamp,
    #[schema(value_type = Object)]
    pub credentials: serde_json::Value,
}

impl std::fmt::Debug for GrantCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrantCredentials")
            .field("grant_id", &self.grant_id)
            .field("kind", &self.kind)
            .field("expires_at", &self.expires_at)
            .field("credentials", &"<redacted>")
            .finish()
    }
}

/// Query of `GET /sessions`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SessionQuery {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grant: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// What a change two-person control may hold did (adding someone to an approver group, making
/// an administrator): done (200), or held as a proposal (202).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Held<T> {
    /// 202: held until enough other admins approve it (`pedm policy approve ID`).
    Pending(Box<pedm_core::policy_review::PolicyProposal>),
    /// 200: done.
    Done(T),
}

/// What `POST /policies` did: the set is in force, or it waits for approvals.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PolicySubmitted {
    /// 202: stored as a proposal (it has `base_version`, which a version lacks).
    Pending(Box<pedm_core::policy_review::PolicyProposal>),
    /// 200: the version in force.
    Applied(pedm_core::model::PolicyVersion),
}
