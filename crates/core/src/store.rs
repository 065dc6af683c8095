//! The persistence interface. Implementations (SQLite, PostgreSQL) live in `pedm-store`.
//!
//! Writes are [`Changeset`]s: a list of row changes with their preconditions plus the audit
//! events that record them, applied atomically. A precondition that fails rejects the whole
//! changeset with [`StoreError::Conflict`] and nothing (not even an event) is written. This is
//! how "no change without its event, no event without its change" and "exactly one concurrent
//! approval wins" hold on every backend: the domain decides, the store applies or refuses.

use crate::audit::{AuditEvent, NewAuditEvent};
use crate::model::*;
use async_trait::async_trait;
use jiff::Timestamp;
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A precondition of the changeset did not hold (state changed under us).
    #[error("{0}")]
    Conflict(String),
    /// A unique key is taken.
    #[error("{0}")]
    AlreadyExists(String),
    /// A row the changeset refers to does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The database failed or is unreachable.
    #[error("database: {0}")]
    Backend(String),
    /// Stored data could not be read back (corruption, manual edits).
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

/// One row change. Each variant documents its precondition.
#[derive(Debug, Clone)]
pub enum Write {
    /// Fails with AlreadyExists if the name is taken.
    InsertUser(User),
    /// Sets `admin`/`disabled`/`display_name`. Fails with NotFound if absent.
    UpdateUser(User),
    InsertGroup(Group),
    /// Fails with NotFound if the group or user is absent; no-op if already a member.
    AddGroupMember {
        group: String,
        user: String,
    },
    /// Fails with NotFound if not a member.
    RemoveGroupMember {
        group: String,
        user: String,
    },
    InsertToken(TokenRecord),
    /// Fails with Conflict if already revoked, NotFound if absent.
    RevokeToken {
        id: String,
        at: Timestamp,
    },
    InsertTarget(Target),
    /// Fails with NotFound if the target is absent, AlreadyExists if the role is.
    InsertRole(Role),
    /// Replaces a role's settings (its target, name, run-as and creation time stay); fails
    /// with NotFound if the role is absent.
    UpdateRole(Role),
    InsertRequest(Request),
    /// Replaces the request; fails with Conflict unless the stored version is
    /// `request.version - 1` (the caller bumps the version).
    UpdateRequest(Request),
    /// Fails with Conflict if this approver already decided this request.
    InsertApproval(Approval),
    /// Fails with AlreadyExists if a grant for the same request exists (idempotent creation).
    InsertGrant(Grant),
    /// Fails with Conflict unless `version` is one more than the newest stored version
    /// (or 1 on an empty store): versions only grow, and two concurrent applies can't both win.
    InsertPolicyVersion(PolicyVersion),
    /// Sets a grant's provisioning state; fails with Conflict unless the stored state is one
    /// of `from`, NotFound if the grant is absent.
    SetProvisionState {
        grant_id: Uuid,
        from: Vec<ProvisionState>,
        to: ProvisionState,
        detail: Option<String>,
    },
    /// Fails with AlreadyExists if the job id is taken or, for a `remove_drift` job, a
    /// removal of the same (target, account, privilege) is not done yet (so a finding is
    /// queued once, whichever instance finds it); NotFound if the grant is absent; Backend if
    /// the job is malformed (a grant job without its grant, a drift removal without its
    /// finding or with a grant).
    InsertJob(ProvisionJob),
    /// Replaces a job's attempts, next attempt, last error and done flag; fails with Conflict
    /// unless the stored job is not done and has made `expected_attempts` attempts (so of
    /// two runners recording the same attempt only one wins), NotFound if absent.
    UpdateJob {
        job: ProvisionJob,
        expected_attempts: i64,
    },
    /// Stores the secret a grant produced (replacing any earlier one), for its holder to read
    /// once. Never part of an audit event.
    PutGrantSecret {
        grant_id: Uuid,
        secret: String,
    },
    /// Deletes a grant's secret; with `must_exist`, fails with Conflict if there is none (so
    /// only one reader gets it).
    DeleteGrantSecret {
        grant_id: Uuid,
        must_exist: bool,
    },
    /// Hosts, their agents' reports and recorded sessions.
    Host(crate::host::HostWrite),
    /// Tasks, delegations and the links of delegated grants.
    Delegation(crate::delegation::DelegationWrite),
    /// Policy proposals under two-person control and their approvals.
    PolicyReview(crate::policy_review::PolicyReviewWrite),
    /// External (vendor) accounts: sponsor and expiry.
    External(crate::external::ExternalWrite),
    /// SCIM clients' tokens and the users they manage.
    Scim(crate::scim::ScimWrite),
    /// Trusted devices.
    Device(crate::device::DeviceWrite),
    /// An SSH certificate issued; fails with AlreadyExists if the serial is taken.
    SshCertificate(crate::ssh::SshCertificate),
    Lock(crate::lock::LockWrite),
    /// Access review campaigns and their items.
    Review(crate::access_review::ReviewWrite),
    /// Subject keys, legal holds and erasure (see [`crate::privacy`]).
    Privacy(crate::privacy::PrivacyWrite),
    /// Single sign-on: linked identities, provider-sourced groups, sessions, login flows.
    Sso(crate::sso::SsoWrite),
    /// Console (browser) sessions.
    WebSession(crate::web_session::WebSessionWrite),
    /// State kept by integrations (chat message references, seen callbacks).
    Integration(crate::integration::IntegrationWrite),
    /// A precondition, changes nothing: fails with Conflict unless every listed grant is
    /// still `active` (NotFound if one is absent). On PostgreSQL the rows are locked in id
    /// order until the transaction ends, so two changesets that each count on the other
    /// grant staying live (overlapping grants of one privilege, each ending) cannot both
    /// commit: the second sees the first's end and is refused. Put it before the
    /// `EndGrant` of any grant it lists.
    RequireGrantsActive {
        ids: Vec<Uuid>,
    },
    /// Moves an active grant's expiry from `from` to `to` (an approved extension): Conflict
    /// unless it is still `active` with expiry `from` (so two extensions approved at once do
    /// not both apply to the old expiry), NotFound if absent.
    ExtendGrant {
        id: Uuid,
        from: Timestamp,
        to: Timestamp,
    },
    /// Switches a `scheduled` grant on: `active` with this provisioning state; fails with
    /// Conflict unless it is still `scheduled` (starts exactly once).
    StartScheduledGrant {
        id: Uuid,
        provision_state: crate::model::ProvisionState,
        provision_detail: Option<String>,
    },
    /// Ends a grant; fails with Conflict unless it is still `active` or `scheduled` (ends
    /// exactly once).
    EndGrant {
        id: Uuid,
        state: GrantState,
        at: Timestamp,
        by: String,
        reason: Option<String>,
    },
    /// Deletes outbox entries written before `before` (delivered long ago, or never to be).
    PurgeOutbox {
        before: Timestamp,
    },
    /// Removes the content of audit events `after+1..=through` (archived first), keeping their
    /// seq, time and hashes; Conflict if an event in the range is pruned already.
    PruneAudit {
        after: i64,
        through: i64,
    },
}

/// Row changes and the audit events that record them, applied all or nothing; with the
/// durable notices they cause, written to the outbox in the same transaction.
#[derive(Debug, Clone, Default)]
pub struct Changeset {
    pub writes: Vec<Write>,
    pub events: Vec<NewAuditEvent>,
    pub notices: Vec<crate::notice::Notice>,
}

impl Changeset {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn write(mut self, w: Write) -> Self {
        self.writes.push(w);
        self
    }
    pub fn event(mut self, e: NewAuditEvent) -> Self {
        self.events.push(e);
        self
    }
    /// Adds a notice for the outbox if it is [durable](crate::notice::Notice::durable);
    /// the control plane announces it in process once the changeset committed.
    pub fn notice(mut self, n: crate::notice::Notice) -> Self {
        self.notices.push(n);
        self
    }
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty() && self.events.is_empty() && self.notices.is_empty()
    }
}

/// A signed audit checkpoint as stored: the server asserts that the first `size` events have
/// RFC 6962 Merkle root `root` (see `pedm-audit` for the signed form). Plain bytes here: the
/// core does not interpret the signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointRecord {
    pub size: i64,
    pub root: [u8; 32],
    /// Microsecond precision.
    pub time: Timestamp,
    pub key_id: String,
    pub signature: Vec<u8>,
}

/// Filters for reading the audit log.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub after_seq: Option<i64>,
    /// Only events before this one (paging backwards with `newest_first`).
    pub before_seq: Option<i64>,
    /// Newest first (the limit then keeps the newest); oldest first otherwise.
    pub newest_first: bool,
    pub actor: Option<String>,
    /// Events about this target: the target itself, its roles, and every event whose data
    /// names it (requests, grants).
    pub target: Option<String>,
    /// Events about this request: the request itself and every event whose data names it
    /// (its grant's events).
    pub request: Option<uuid::Uuid>,
    pub action: Option<String>,
    pub subject: Option<String>,
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
    pub limit: Option<u32>,
    /// As stored and hashed: personal data left sealed (to verify or export). Otherwise it is
    /// opened, and reads `[erased]` where its subject's key is gone.
    pub sealed: bool,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Applies a changeset atomically and durably, appending its events to the audit chain.
    /// Returns the events as chained (with seq and hashes).
    async fn commit(&self, changes: Changeset) -> Result<Vec<AuditEvent>, StoreError>;

    async fn user(&self, name: &str) -> Result<Option<User>, StoreError>;
    async fn users(&self) -> Result<Vec<User>, StoreError>;
    async fn user_count(&self) -> Result<i64, StoreError>;
    async fn group(&self, name: &str) -> Result<Option<Group>, StoreError>;
    async fn groups(&self) -> Result<Vec<Group>, StoreError>;
    /// Names of the groups `user` belongs to, sorted.
    async fn groups_of(&self, user: &str) -> Result<Vec<String>, StoreError>;

    async fn token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError>;
    /// All tokens, or one user's, newest first.
    async fn tokens(&self, user: Option<&str>) -> Result<Vec<TokenRecord>, StoreError>;

    async fn target(&self, name: &str) -> Result<Option<Target>, StoreError>;
    async fn targets(&self) -> Result<Vec<Target>, StoreError>;
    async fn role(&self, target: &str, name: &str) -> Result<Option<Role>, StoreError>;
    /// Roles of one target, or of all targets.
    async fn roles(&self, target: Option<&str>) -> Result<Vec<Role>, StoreError>;

    async fn request(&self, id: Uuid) -> Result<Option<Request>, StoreError>;
    /// Newest first.
    async fn requests(&self, filter: &RequestFilter) -> Result<Vec<Request>, StoreError>;
    async fn approvals(&self, request_id: Uuid) -> Result<Vec<Approval>, StoreError>;
    /// The approvals of every pending request, in one read (an approver's inbox).
    async fn pending_approvals(&self) -> Result<Vec<Approval>, StoreError>;
    /// Earliest `pending_until` among pending requests.
    async fn next_request_deadline(&self) -> Result<Option<Timestamp>, StoreError>;
    /// Pending requests whose `pending_until <= now`, oldest deadline first.
    async fn overdue_requests(
        &self,
        now: Timestamp,
        limit: u32,
    ) -> Result<Vec<Request>, StoreError>;

    async fn grant(&self, id: Uuid) -> Result<Option<Grant>, StoreError>;
    /// Newest first.
    async fn grants(&self, filter: &GrantFilter) -> Result<Vec<Grant>, StoreError>;
    /// Earliest `expires_at` among active grants, or `starts_at` among scheduled ones.
    async fn next_grant_deadline(&self) -> Result<Option<Timestamp>, StoreError>;
    /// Scheduled grants whose `starts_at <= now`, earliest first.
    async fn due_scheduled_grants(
        &self,
        now: Timestamp,
        limit: u32,
    ) -> Result<Vec<Grant>, StoreError>;
    /// Active grants whose `expires_at <= now`, earliest first.
    async fn overdue_grants(&self, now: Timestamp, limit: u32) -> Result<Vec<Grant>, StoreError>;

    /// Jobs not done whose `next_attempt_at <= now`, earliest first.
    async fn due_jobs(&self, now: Timestamp, limit: u32) -> Result<Vec<ProvisionJob>, StoreError>;
    /// Earliest `next_attempt_at` among jobs not done.
    async fn next_job_at(&self) -> Result<Option<Timestamp>, StoreError>;
    /// Every job of one grant, oldest first.
    async fn grant_jobs(&self, grant_id: Uuid) -> Result<Vec<ProvisionJob>, StoreError>;
    /// The secret waiting for a grant's holder, if any.
    async fn grant_secret(&self, grant_id: Uuid) -> Result<Option<String>, StoreError>;

    /// One policy version, or the newest when `version` is `None`.
    async fn policy_version(
        &self,
        version: Option<i64>,
    ) -> Result<Option<PolicyVersion>, StoreError>;
    /// Every version, newest first.
    async fn policy_versions(&self) -> Result<Vec<PolicyVersion>, StoreError>;
    /// The newest version's number (cheap; polled to follow other instances).
    async fn latest_policy_version_number(&self) -> Result<Option<i64>, StoreError>;
    /// One policy proposal with its approvals (`stale` is left false).
    async fn policy_proposal(
        &self,
        id: i64,
    ) -> Result<Option<crate::policy_review::PolicyProposal>, StoreError>;
    /// Proposals with their approvals, newest first; only those in `state` if given.
    async fn policy_proposals(
        &self,
        state: Option<crate::policy_review::ProposalState>,
    ) -> Result<Vec<crate::policy_review::PolicyProposal>, StoreError>;
    /// The highest proposal number used (0 when none).
    async fn latest_policy_proposal_id(&self) -> Result<i64, StoreError>;

    async fn host(&self, name: &str) -> Result<Option<crate::host::Host>, StoreError>;
    async fn host_by_token(&self, token_id: &str) -> Result<Option<crate::host::Host>, StoreError>;
    async fn hosts(&self) -> Result<Vec<crate::host::Host>, StoreError>;
    async fn session(&self, id: Uuid) -> Result<Option<crate::host::Session>, StoreError>;
    /// Newest first.
    async fn sessions(
        &self,
        filter: &crate::host::SessionFilter,
    ) -> Result<Vec<crate::host::Session>, StoreError>;

    async fn task(&self, name: &str) -> Result<Option<crate::delegation::TaskDef>, StoreError>;
    /// By name.
    async fn tasks(&self) -> Result<Vec<crate::delegation::TaskDef>, StoreError>;
    async fn delegation(
        &self,
        id: Uuid,
    ) -> Result<Option<crate::delegation::Delegation>, StoreError>;
    /// Newest first; `state` is `revoked` or `active` (the caller knows the time).
    async fn delegations(
        &self,
        filter: &crate::delegation::DelegationFilter,
    ) -> Result<Vec<crate::delegation::Delegation>, StoreError>;
    async fn grant_link(
        &self,
        grant_id: Uuid,
    ) -> Result<Option<crate::delegation::GrantLink>, StoreError>;
    async fn grant_links(
        &self,
        filter: &crate::delegation::GrantLinkFilter,
    ) -> Result<Vec<crate::delegation::GrantLink>, StoreError>;

    /// Events in seq order.
    async fn audit_events(&self, filter: &AuditFilter) -> Result<Vec<AuditEvent>, StoreError>;
    /// The last event's (seq, hash), or `None` for an empty log.
    async fn audit_head(&self) -> Result<Option<(i64, [u8; 32])>, StoreError>;
    /// The chain hashes (the Merkle leaf data) of events `from_seq..=to_seq`, in seq order.
    async fn audit_hashes(&self, from_seq: i64, to_seq: i64) -> Result<Vec<[u8; 32]>, StoreError>;

    /// Stores a signed checkpoint. Idempotent for the same size and root; a different root for
    /// a size already signed is a [`StoreError::Conflict`] (the log would have forked).
    async fn save_checkpoint(&self, cp: &CheckpointRecord) -> Result<(), StoreError>;
    /// Every stored checkpoint, by ascending size.
    async fn checkpoints(&self) -> Result<Vec<CheckpointRecord>, StoreError>;
    /// The stored checkpoints with `after < size <= through`, by ascending size: what a
    /// check of new events or a proof for one size reads, however many checkpoints are kept.
    async fn checkpoints_between(
        &self,
        after: i64,
        through: i64,
    ) -> Result<Vec<CheckpointRecord>, StoreError>;
    /// The external record of `user`, if it is an external account.
    async fn external_account(
        &self,
        user: &str,
    ) -> Result<Option<crate::external::ExternalAccount>, StoreError>;
    /// Every external account, by user name.
    async fn external_accounts(&self) -> Result<Vec<crate::external::ExternalAccount>, StoreError>;
    async fn scim_token(&self, id: &str) -> Result<Option<crate::scim::ScimToken>, StoreError>;
    async fn scim_tokens(&self) -> Result<Vec<crate::scim::ScimToken>, StoreError>;
    async fn scim_link(&self, user: &str) -> Result<Option<crate::scim::ScimLink>, StoreError>;
    /// Every SCIM-managed user (deleted ones too), by name.
    async fn scim_links(&self) -> Result<Vec<crate::scim::ScimLink>, StoreError>;
    async fn scim_group_link(
        &self,
        group: &str,
    ) -> Result<Option<crate::scim::ScimGroupLink>, StoreError>;
    /// Every SCIM-managed group, by name.
    async fn scim_group_links(&self) -> Result<Vec<crate::scim::ScimGroupLink>, StoreError>;
    async fn device(&self, id: &str) -> Result<Option<crate::device::Device>, StoreError>;
    /// Every lock, newest first (the table stays small: locks are rare and short).
    async fn locks(&self) -> Result<Vec<crate::lock::Lock>, StoreError>;
    /// Every access review campaign, newest first, with its items counted.
    /// From now on, seal personal data in new audit events and open it on reads (see
    /// [`crate::privacy`]). Set once, at start.
    fn seal_personal_data(
        &self,
        cipher: std::sync::Arc<dyn crate::privacy::PersonalDataCipher>,
    ) -> Result<(), StoreError>;
    /// Whether personal data is sealed.
    fn seals_personal_data(&self) -> bool;
    /// Data subjects under legal hold.
    async fn legal_holds(&self) -> Result<Vec<crate::privacy::SubjectKey>, StoreError>;
    /// A data subject's key (and legal hold), if they have one.
    async fn subject_key(
        &self,
        subject: &str,
    ) -> Result<Option<crate::privacy::SubjectKey>, StoreError>;
    async fn review_campaigns(&self) -> Result<Vec<crate::access_review::Campaign>, StoreError>;
    async fn review_campaign(
        &self,
        id: Uuid,
    ) -> Result<Option<crate::access_review::Campaign>, StoreError>;
    /// A campaign's items, by kind, target, role, group and user.
    async fn review_items(
        &self,
        campaign: Uuid,
    ) -> Result<Vec<crate::access_review::ReviewItem>, StoreError>;
    async fn review_item(
        &self,
        id: Uuid,
    ) -> Result<Option<crate::access_review::ReviewItem>, StoreError>;
    /// The locks in force at `now` (not lifted, not ended). Every request asks, so a store may
    /// answer from memory: its own writes are seen at once, another instance's within a
    /// second.
    async fn locks_in_force(&self, now: Timestamp) -> Result<Vec<crate::lock::Lock>, StoreError> {
        let mut locks = self.locks().await?;
        locks.retain(|l| l.holds(now));
        Ok(locks)
    }
    /// Up to `limit` outbox entries after `after`, in order.
    async fn outbox_after(
        &self,
        after: i64,
        limit: i64,
    ) -> Result<Vec<crate::notice::OutboxItem>, StoreError>;

    /// The last outbox entry's `seq` (0 when empty).
    async fn outbox_head(&self) -> Result<i64, StoreError>;

    /// An integration's entry under `key` (expired or not: the caller asks `live`).
    async fn integration_entry(
        &self,
        integration: &str,
        key: &str,
    ) -> Result<Option<crate::integration::IntegrationEntry>, StoreError>;
    /// The console session a token backs, if it backs one.
    async fn web_session(
        &self,
        token_id: &str,
    ) -> Result<Option<crate::web_session::WebSession>, StoreError>;
    /// User certificates still valid at `now` whose grant is no longer active (the KRL).
    async fn ssh_certificates_to_revoke(
        &self,
        now: Timestamp,
    ) -> Result<Vec<crate::ssh::SshCertificate>, StoreError>;
    /// Devices by enrollment time, newest first: `owner`'s, or everyone's.
    async fn devices(&self, owner: Option<&str>) -> Result<Vec<crate::device::Device>, StoreError>;
    /// The checkpoint with the largest size.
    async fn latest_checkpoint(&self) -> Result<Option<CheckpointRecord>, StoreError>;
    /// Makes the log end at event `size`, the last one the database holds, when an operator
    /// accepts a rollback: the chain head is set to it (the next event chains onto it, not onto
    /// lost ones), and the checkpoints of more events are removed (they sign events the
    /// database no longer has, and would refuse the log as it grows again). Returns how many
    /// checkpoints were removed. Refused when event `size` is missing or later ones remain.
    async fn rewind_audit(&self, size: i64) -> Result<u64, StoreError>;

    /// The pedm user an (issuer, subject) is linked to.
    async fn sso_identity(&self, issuer: &str, subject: &str)
    -> Result<Option<String>, StoreError>;
    /// Every (issuer, subject) linked to `user`, sorted: identity providers and chat
    /// workspaces (`slack:T…`).
    async fn identities_of(&self, user: &str) -> Result<Vec<(String, String)>, StoreError>;
    /// The SSO session a token belongs to.
    async fn sso_session(
        &self,
        token_id: &str,
    ) -> Result<Option<crate::sso::SsoSession>, StoreError>;
    /// Ids of the tokens that are SSO sessions (of one user, or all).
    async fn sso_session_ids(&self, user: Option<&str>) -> Result<Vec<String>, StoreError>;
    /// The groups of `user` whose membership came from an identity provider, sorted.
    async fn sso_groups(&self, user: &str) -> Result<Vec<String>, StoreError>;
    async fn sso_flow(&self, id: &str) -> Result<Option<crate::sso::SsoFlow>, StoreError>;
}
