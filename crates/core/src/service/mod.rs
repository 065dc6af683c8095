//! The control plane: every operation a person or the scheduler performs, with its rules.
//!
//! Each method takes the authenticated [`Actor`], checks what the actor may do, validates the
//! input, builds a [`Changeset`] (rows plus the audit events that record them) and commits it.
//! Refusals of security decisions are committed as `denied` audit events before the error is
//! returned; bad input changes nothing.

mod access_review;
mod agent_reports;
mod audit;
mod auth_cache;
mod auth_failures;
mod catalog;
mod credentials;
mod delegation;
mod devices;
mod evidence;
mod expiring;
mod extend;
mod external;
mod follow_up;
mod grants;
mod history;
mod hosts;
mod identity;
mod integration;
mod judgement;
mod locks;
mod mail_link;
mod outbox;
mod peer_delegation;
pub use mail_link::MAIL;
mod policy;
mod policy_check;
mod policy_owners;
mod policy_review;
mod privacy;
mod provision;
mod reconcile;
mod report;
mod requests;
mod retention;
mod schedule;
mod scim;
mod ssh;
mod sso;
mod step_up;
mod sudo_log;
mod suggest;
mod task_runs;
mod tickets;
mod web_session;
mod workload;
pub use history::{HISTORY_DAYS, RequesterHistory};
pub use judgement::{PROBE_SECS, PreviewOutcome, RequestPreview, Requestable};
pub use requests::tiers_text;
pub use sso::SsoLogin;
pub use web_session::WebSignIn;

pub use evidence::EvidenceData;
pub use external::ExternalReportRow;
pub use report::ElevationRow;

pub use delegation::{MAX_DELEGATION_SECS, NewDelegation, RevokedDelegation, TaskCheck};

pub use agent_reports::{AgentReport, ExecVerdict, ReportVia, SessionExec, SessionFile};
pub use hosts::{
    HostGrant, HostRegistration, HostSnapshot, REPORT_ARGV_BYTES, ReportReceipt, Undelivered,
};
pub use sudo_log::{SUDO_WITHOUT_GRANT, SudoEvent, SudoVerdict};

pub use access_review::{MAX_REVIEW_ITEMS, MAX_REVIEW_SECS};
pub use locks::MAX_LOCK_SECS;
pub use policy::{SimulatedChange, SimulationReport, diff as policy_diff};
pub use policy_review::{Held, PolicySubmission};
pub use suggest::{CommandSuggestions, CommandUse, RoleCommands};
pub use task_runs::{RunnableTask, TaskRunEnd, TaskRunOrder};

use crate::Error;
use crate::audit::{NewAuditEvent, Outcome};
use crate::clock::Clock;
use crate::decision::{AdminAction, Decider, PolicyCompiler, RequestDecision, RequestInput};
use crate::duration::format_duration;
use crate::model::*;
use crate::notice::{Notice, Observer};
use crate::store::{AuditFilter, Changeset, Store, StoreError, Write};
use crate::token::{self, MintedToken};
use jiff::{SignedDuration, Timestamp};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use tokio::sync::Notify;
use uuid::Uuid;

/// Why an AI agent's token is refused an operation outside its allow-list.
pub const AGENT_REFUSAL: &str = "an AI agent's token (pedm token create --for-agent) may only \
    read its person's identity, requests and grants, list what they may request, and create, \
    wait on or cancel their requests; a person must do this themselves";

/// Why an AI agent holds no administrative right of its person.
pub(crate) const AGENT_HOLDS_NO_RIGHTS: &str =
    "an AI agent's token holds none of its person's administrative or approving rights";

type Result<T> = std::result::Result<T, Error>;

/// Bounds every request must respect, whatever the role says.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Longest grant anyone may ask for, in seconds.
    pub max_duration_secs: i64,
    /// How long a request may wait for a decision before it expires, in seconds.
    pub pending_ttl_secs: i64,
    /// How long an exec held for step-up approval waits at most, in seconds (never past
    /// its grant).
    pub step_up_wait_secs: i64,
    pub max_justification_chars: usize,
    /// Lifetime of a token minted without one ([`TokenLifetime::Default`]), in seconds.
    pub default_token_lifetime_secs: i64,
    /// `policy simulate` recommends auto-approval only for a role decided by people at least
    /// this many times in the period.
    pub recommend_min_sample: usize,
    /// Target labels (`key=value`) that make a role sensitive: never recommended for
    /// auto-approval (`env=prod` always is).
    pub sensitive_labels: Vec<String>,
    /// Longest an external account may live from its creation or extension, in seconds.
    pub external_max_secs: i64,
    /// How long before an external account expires its sponsor is told, in seconds.
    pub external_notice_secs: i64,
    /// A request whose risk score reaches this raises a high-severity notice
    /// (`request.risky`); 0: never.
    pub risk_alert_score: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_duration_secs: 7 * 86_400,
            pending_ttl_secs: 86_400,
            step_up_wait_secs: 300,
            max_justification_chars: 2_000,
            default_token_lifetime_secs: 90 * 86_400,
            recommend_min_sample: 20,
            sensitive_labels: vec!["env=prod".into()],
            external_max_secs: 90 * 86_400,
            external_notice_secs: 86_400,
            risk_alert_score: 60,
        }
    }
}

/// How long a new API token lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenLifetime {
    /// The server's default ([`Limits::default_token_lifetime_secs`], 90 days unless
    /// configured): a token nobody thought about does not live forever.
    Default,
    /// Never expires: only when asked for explicitly (`--expires-in never`, e.g. a service).
    Never,
    /// This many seconds.
    Secs(i64),
}

/// What a requester asks for.
#[derive(Debug, Clone)]
pub struct NewRequest {
    pub target: String,
    pub role: String,
    pub duration_secs: i64,
    pub justification: String,
    pub task: Option<String>,
    pub ticket: Option<String>,
    /// Emergency access: granted at once if a break-glass policy allows, reviewed afterwards.
    pub break_glass: bool,
    /// Scheduled access: the window's start, if later than now.
    pub starts_at: Option<Timestamp>,
}

#[derive(Debug, Clone)]
pub struct NewRole {
    pub target: String,
    pub name: String,
    pub description: Option<String>,
    pub max_duration_secs: i64,
    pub auto_approve: bool,
    pub run_as: Option<String>,
    /// See [`Role::noexec`].
    pub noexec: bool,
    /// See [`Role::allow_setuid`].
    pub allow_setuid: bool,
    /// See [`Role::record_input`].
    pub record_input: bool,
    /// See [`Role::intercept`].
    pub intercept: bool,
    /// See [`Role::limits`].
    pub limits: SessionLimits,
    /// See [`Role::watch_paths`].
    pub watch_paths: Vec<String>,
    /// See [`Role::ssh`].
    pub ssh: crate::ssh::SshAccess,
}

/// What `role update` changes; `None` leaves a setting as it is.
#[derive(Debug, Clone, Default)]
pub struct RoleChange {
    pub description: Option<String>,
    pub max_duration_secs: Option<i64>,
    pub auto_approve: Option<bool>,
    pub noexec: Option<bool>,
    pub allow_setuid: Option<bool>,
    pub record_input: Option<bool>,
    pub intercept: Option<bool>,
    /// Replaces every limit (absent ones are lifted).
    pub limits: Option<SessionLimits>,
    /// Replaces the watched paths (empty: none).
    pub watch_paths: Option<Vec<String>>,
    /// Replaces the SSH settings.
    pub ssh: Option<crate::ssh::SshAccess>,
}

/// What the scheduler ended in one pass.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExpiryPass {
    /// Scheduled grants switched on (their window started).
    pub grants_started: u64,
    pub grants_expired: usize,
    pub requests_expired: usize,
    /// External accounts whose expiry was recorded (their grants ended).
    pub accounts_expired: usize,
}

pub struct ControlPlane {
    store: Arc<dyn Store>,
    /// The decider in force; replaced whole when a policy version is applied.
    decider: RwLock<Arc<dyn Decider>>,
    compiler: Option<Arc<dyn PolicyCompiler>>,
    /// The policy version the decider was built from (0: none).
    policy_version: AtomicI64,
    observers: Vec<Arc<dyn Observer>>,
    clock: Arc<dyn Clock>,
    limits: Limits,
    /// Woken when a new deadline may be earlier than the one the scheduler sleeps until.
    deadline_changed: Arc<Notify>,
    /// When the expiry scheduler will look next (µs on this control plane's clock);
    /// `i64::MIN` while a pass is reading (any new deadline may be missed by it). A new
    /// deadline wakes the scheduler only if it is earlier ([`ControlPlane::deadline_added`]):
    /// under load every created grant would otherwise cost a pass of reads.
    expiry_planned: AtomicI64,
    /// The targets with provisioners (none: every grant is `active` at once).
    provisioning: Option<Arc<dyn crate::provisioning::ProvisioningPort>>,
    /// Warn holders this long before their grants end (`[notify] expiry_warning`).
    expiry_warning_secs: Option<i64>,
    /// Whether durable notices are written to the outbox (some channel reads it).
    outbox: bool,
    /// Checks requests' tickets against their systems (`[[tickets.system]]`).
    tickets: Option<Arc<dyn crate::ticket::TicketChecker>>,
    /// Woken when a provisioning job is created.
    jobs_changed: Arc<Notify>,
    /// Woken when a request with reminders or escalation starts waiting.
    follow_ups_changed: Arc<Notify>,
    /// Woken when users, groups, targets or roles change (properties are proved again).
    directory_changed: Arc<Notify>,
    /// Recently authenticated tokens (see [`auth_cache`] for what staleness this allows).
    auth_cache: auth_cache::AuthCache,
    /// Failed authentications per source address (see [`auth_failures`]).
    auth_failures: auth_failures::AuthFailures,
    /// Approvals a policy change needs before it takes effect (0: applied at once), see
    /// [`policy_review`].
    policy_approvals: i64,
    /// Every policy needs `@owner` and `@review_by` (`[policy] require_owner`).
    policy_owners_required: bool,
    /// How long audit events are kept before they may be archived and pruned
    /// (`[audit] retention`; `None`: never pruned).
    audit_retention_secs: Option<i64>,
    /// Overdue policies this process announced (`policy_owners::announce_overdue`).
    overdue_told: std::sync::Mutex<std::collections::BTreeSet<String>>,
    /// How long a host's registration token may enroll its agent; `None`: it never expires
    /// and is the agent's credential (plain HTTP).
    host_enroll_ttl_secs: Option<i64>,
    /// Patterns that raise an alert when a reported exec matches ([`crate::alert`]).
    exec_alerts: Vec<crate::alert::ExecAlert>,
    /// Signs SSH certificates for grants on `ssh` targets ([`crate::ssh`]).
    ssh_ca: Option<Arc<dyn crate::ssh::SshCa>>,
    max_host_cert_secs: i64,
    /// Invariants every applied policy set must keep ([`crate::policy_check`]).
    policy_properties: Arc<Vec<crate::policy_check::Property>>,
}

pub(super) fn concurrent(e: StoreError, id: Uuid) -> Error {
    match e {
        StoreError::Conflict(_) => Error::Conflict(format!(
            "request {id} was changed by someone else at the same moment; try again"
        )),
        e => e.into(),
    }
}

fn subject(kind: &str, id: impl std::fmt::Display) -> Option<String> {
    Some(format!("{kind}:{id}"))
}

fn trimmed(field: &str, v: Option<String>, max: usize) -> Result<Option<String>> {
    match v.map(|s| s.trim().to_string()) {
        None => Ok(None),
        Some(s) if s.is_empty() => Ok(None),
        Some(s) if s.chars().count() > max => Err(Error::invalid(
            field,
            format!("is longer than {max} characters"),
        )),
        Some(s) if s.chars().any(|c| c.is_control()) => {
            Err(Error::invalid(field, "contains control characters"))
        }
        Some(s) => Ok(Some(s)),
    }
}

impl ControlPlane {
    pub fn new(
        store: Arc<dyn Store>,
        decider: Arc<dyn Decider>,
        clock: Arc<dyn Clock>,
        limits: Limits,
    ) -> Self {
        ControlPlane {
            store,
            decider: RwLock::new(decider),
            compiler: None,
            policy_version: AtomicI64::new(0),
            observers: vec![],
            clock,
            limits,
            deadline_changed: Arc::new(Notify::new()),
            expiry_planned: AtomicI64::new(i64::MIN),
            provisioning: None,
            tickets: None,
            outbox: false,
            expiry_warning_secs: None,
            jobs_changed: Arc::new(Notify::new()),
            follow_ups_changed: Arc::new(Notify::new()),
            directory_changed: Arc::new(Notify::new()),
            auth_cache: auth_cache::AuthCache::default(),
            auth_failures: auth_failures::AuthFailures::default(),
            policy_approvals: 0,
            policy_owners_required: false,
            audit_retention_secs: None,
            overdue_told: Default::default(),
            host_enroll_ttl_secs: None,
            exec_alerts: vec![],
            ssh_ca: None,
            max_host_cert_secs: 0,
            policy_properties: Arc::new(vec![]),
        }
    }

    /// Properties every policy set must keep (`[policy] properties`), checked on every apply.
    pub fn with_policy_properties(
        mut self,
        properties: Vec<crate::policy_check::Property>,
    ) -> Self {
        self.policy_properties = Arc::new(properties);
        self
    }

    /// Alerts on the exec stream (`[[alerts.exec]]`).
    pub fn with_exec_alerts(mut self, alerts: Vec<crate::alert::ExecAlert>) -> Self {
        self.exec_alerts = alerts;
        self
    }

    /// The names of the configured exec alerts `argv` matches (agents' reports and sudo's
    /// commands alike).
    pub(super) fn exec_alerts_matching(&self, argv: &[String]) -> Vec<String> {
        self.exec_alerts
            .iter()
            .filter(|a| a.matches(argv))
            .map(|a| a.name.clone())
            .collect()
    }

    /// Decisions come from policies compiled by `compiler` (see [`Self::load_policies`]).
    pub fn with_policy_compiler(mut self, compiler: Arc<dyn PolicyCompiler>) -> Self {
        self.compiler = Some(compiler);
        self
    }

    /// Grants on the targets `port` handles are switched on and off through it, by durable
    /// jobs (see [`crate::provisioning`]).
    /// Writes durable notices to the outbox, for the channels that deliver from it (without
    /// any, nothing would read them; a channel added later starts at the newest entry).
    pub fn with_outbox(mut self) -> Self {
        self.outbox = true;
        self
    }

    pub fn with_tickets(mut self, checker: Arc<dyn crate::ticket::TicketChecker>) -> Self {
        self.tickets = Some(checker);
        self
    }

    pub fn with_provisioning(
        mut self,
        port: Arc<dyn crate::provisioning::ProvisioningPort>,
    ) -> Self {
        self.provisioning = Some(port);
        self
    }

    pub fn jobs_changed(&self) -> Arc<Notify> {
        self.jobs_changed.clone()
    }

    pub fn with_observer(mut self, observer: Arc<dyn Observer>) -> Self {
        self.observers.push(observer);
        self
    }

    pub(crate) fn decider(&self) -> Arc<dyn Decider> {
        self.decider
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn notify(&self, notice: Notice) {
        for o in &self.observers {
            o.notice(&notice);
        }
    }

    /// Commits `cs`, its durable notices into the outbox in the same transaction; once it
    /// committed, announces all its notices in process (agents, live pages, the outbox's
    /// deliverers). Every notice that leaves the process goes through here.
    async fn commit(
        &self,
        mut cs: Changeset,
    ) -> std::result::Result<Vec<crate::audit::AuditEvent>, StoreError> {
        let notices = std::mem::take(&mut cs.notices);
        if self.outbox {
            cs.notices = notices.iter().filter(|n| n.durable()).cloned().collect();
        }
        let events = self.store.commit(cs).await?;
        for n in notices {
            self.notify(n);
        }
        Ok(events)
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Timestamps are kept at microsecond precision so they survive every store unchanged
    /// (the audit hash covers them).
    pub fn now(&self) -> Timestamp {
        let t = self.clock.now();
        Timestamp::from_microsecond(t.as_microsecond()).unwrap_or(t)
    }

    pub fn deadline_changed(&self) -> Arc<Notify> {
        self.deadline_changed.clone()
    }

    /// Woken when users, groups, targets or roles change.
    pub fn directory_changed(&self) -> Arc<Notify> {
        self.directory_changed.clone()
    }

    /// A deadline `at` was committed: wakes the expiry scheduler unless it will look at or
    /// before `at` anyway. To be called after the commit (see [`Self::expiry_pass_begins`]).
    pub(crate) fn deadline_added(&self, at: Timestamp) {
        if at.as_microsecond() < self.expiry_planned.load(Ordering::SeqCst) {
            self.deadline_changed.notify_one();
        }
    }

    /// The expiry scheduler starts reading deadlines: until [`Self::expiry_planned`], every
    /// new deadline wakes it (one committed after its read would otherwise wait for the
    /// next).
    pub fn expiry_pass_begins(&self) {
        self.expiry_planned.store(i64::MIN, Ordering::SeqCst);
    }

    /// The expiry scheduler will look again at `at` at the latest.
    pub fn expiry_planned(&self, at: Timestamp) {
        self.expiry_planned
            .store(at.as_microsecond(), Ordering::SeqCst);
    }

    pub fn follow_ups_changed(&self) -> Arc<Notify> {
        self.follow_ups_changed.clone()
    }

    fn event(&self, actor: &Actor, action: &str, subject: Option<String>) -> NewAuditEvent {
        NewAuditEvent::new(self.now(), &actor.user, action, subject)
    }

    /// Records a refused attempt by an AI agent's token (see `Actor::via_agent`) to do what
    /// agents may not (a transport's allow-list refused `operation`), and returns the error.
    pub async fn refuse_agent(&self, actor: &Actor, operation: &str) -> Error {
        let ev = self
            .event(
                actor,
                "auth.refused",
                actor.token_id.as_deref().and_then(|t| subject("token", t)),
            )
            .outcome(Outcome::Denied)
            .data(json!({
                "reason": AGENT_REFUSAL, "operation": operation, "token_kind": "agent",
            }));
        if let Err(e) = self.store.commit(Changeset::new().event(ev)).await {
            tracing::error!(error = %e, "could not record a refused attempt");
        }
        Error::Forbidden(format!("{operation}: {AGENT_REFUSAL}"))
    }

    /// Records a refused attempt and returns the error to report.
    async fn refuse(
        &self,
        actor: &Actor,
        action: &str,
        subject: Option<String>,
        why: String,
    ) -> Error {
        let ev = self
            .event(actor, action, subject)
            .outcome(Outcome::Denied)
            .data(json!({ "reason": why }));
        if let Err(e) = self.store.commit(Changeset::new().event(ev)).await {
            tracing::error!(error = %e, "could not record a refused attempt");
        }
        Error::Forbidden(why)
    }

    /// Asks policy whether `actor` may perform an administrative operation; a refusal is
    /// recorded under `event_action`.
    async fn require_admin(
        &self,
        actor: &Actor,
        right: AdminAction,
        event_action: &str,
    ) -> Result<()> {
        if actor.via_agent {
            return Err(self
                .refuse(
                    actor,
                    event_action,
                    None,
                    format!("{event_action}: {AGENT_HOLDS_NO_RIGHTS}"),
                )
                .await);
        }
        match self.decider().may_administer(actor, right) {
            Ok(()) => Ok(()),
            Err(why) => Err(self
                .refuse(actor, event_action, None, format!("{event_action}: {why}"))
                .await),
        }
    }

    /// Whether `actor` holds an administrative right (for widening what they may read).
    fn holds(&self, actor: &Actor, right: AdminAction) -> bool {
        !actor.via_agent && self.decider().may_administer(actor, right).is_ok()
    }

    // ---------------------------------------------------------------- identity

    /// Records a failed authentication, unless its source has failed often in this window
    /// already (it is then counted into one aggregated event, see [`Self::flush_auth_failures`]).
    pub(crate) async fn record_auth_failure(
        &self,
        event: NewAuditEvent,
        source: Option<&str>,
        reason: &str,
        kind: &'static str,
    ) -> Result<()> {
        if self.auth_failures.admit(source, self.now(), reason, kind) {
            self.store.commit(Changeset::new().event(event)).await?;
        }
        Ok(())
    }

    /// Records the failed authentications counted in windows that have closed (all of them
    /// with `all`, at shutdown): one `auth.failed` event per source and window with the
    /// count, first and last time. Returns how many events.
    pub async fn flush_auth_failures(&self, all: bool) -> Result<usize> {
        let closed = self.auth_failures.closed(self.now(), all);
        let n = closed.len();
        for a in closed {
            let ev = NewAuditEvent::new(self.now(), "anonymous", "auth.failed", None)
                .outcome(Outcome::Denied)
                .data(json!({
                    "reason": a.reason,
                    "source": a.source,
                    "kind": a.kind,
                    "aggregated": true,
                    "count": a.count,
                    "first": a.first,
                    "last": a.last,
                }));
            self.store.commit(Changeset::new().event(ev)).await?;
        }
        Ok(n)
    }

    /// Resolves a presented API token to an actor. Failures are recorded (never with the
    /// secret) and reported without saying which part was wrong.
    pub async fn authenticate(&self, presented: &str, source: Option<&str>) -> Result<Actor> {
        let now = self.now();
        let fail = |token_id: Option<&str>, why: &str| {
            NewAuditEvent::new(
                now,
                "anonymous",
                "auth.failed",
                token_id.and_then(|id| subject("token", id)),
            )
            .outcome(Outcome::Denied)
            .data(json!({ "reason": why, "source": source }))
        };
        let Some((id, secret)) = token::parse(presented) else {
            self.record_auth_failure(
                fail(None, "malformed token"),
                source,
                "malformed token",
                "user",
            )
            .await?;
            return Err(Error::Unauthenticated("invalid token".into()));
        };
        // A token that authenticated moments ago: the secret and expiry are checked again, the
        // rest (not revoked, user enabled, groups) is what this instance last read or wrote.
        if let Some(hit) = self.auth_cache.get(id)
            && token::verify(secret, &hit.record.secret_hash)
            && hit.record.is_live(now)
            && hit.external.as_ref().is_none_or(|x| x.live(now))
        {
            return Ok(Actor {
                user: hit.user.name,
                admin: hit.user.admin,
                groups: hit.groups,
                external: hit.external.is_some(),
                sponsor: hit.external.map(|x| x.sponsor),
                workload: hit.record.workload,
                via_agent: hit.record.agent,
                token_id: Some(hit.record.id),
            });
        }
        let generation = self.auth_cache.generation();
        let record = self.store.token(id).await?;
        let user = match &record {
            Some(r) => self.store.user(&r.user).await?,
            None => None,
        };
        let external = match &user {
            Some(u) => self.store.external_account(&u.name).await?,
            None => None,
        };
        let why = match (&record, &user) {
            (None, _) => Some("unknown token"),
            (Some(r), _) if !token::verify(secret, &r.secret_hash) => Some("wrong secret"),
            (Some(r), _) if r.revoked_at.is_some() => Some("revoked token"),
            (Some(r), _) if !r.is_live(now) => Some("expired token"),
            (Some(_), None) => Some("token of a deleted user"),
            (Some(_), Some(u)) if u.disabled => Some("disabled user"),
            _ if external.as_ref().is_some_and(|x| !x.live(now)) => {
                Some("expired external account")
            }
            _ => None,
        };
        if let Some(why) = why {
            self.record_auth_failure(fail(Some(id), why), source, why, "user")
                .await?;
            let msg = match why {
                "expired token" => "token has expired",
                "revoked token" => "token has been revoked",
                _ => "invalid token",
            };
            if let Some(x) = external
                .as_ref()
                .filter(|_| why == "expired external account")
            {
                return Err(Error::Unauthenticated(format!(
                    "external account {} expired at {}; its sponsor {} can extend it",
                    x.user, x.expires_at, x.sponsor
                )));
            }
            return Err(Error::Unauthenticated(msg.into()));
        }
        let (Some(record), Some(user)) = (record, user) else {
            return Err(Error::Unauthenticated("invalid token".into()));
        };
        let groups = self.store.groups_of(&user.name).await?;
        self.auth_cache.insert(
            generation,
            auth_cache::Authenticated {
                record: record.clone(),
                user: user.clone(),
                groups: groups.clone(),
                external: external.clone(),
            },
        );
        Ok(Actor {
            groups,
            user: user.name,
            admin: user.admin,
            external: external.is_some(),
            sponsor: external.map(|x| x.sponsor),
            workload: record.workload,
            via_agent: record.agent,
            token_id: Some(record.id),
        })
    }

    /// Commits a change to users, groups or tokens and forgets every cached authentication
    /// (whatever the outcome: a failed commit may still have been applied), so the change
    /// holds for the very next request.
    async fn commit_identity(
        &self,
        cs: Changeset,
    ) -> std::result::Result<Vec<crate::audit::AuditEvent>, StoreError> {
        let r = self.commit(cs).await;
        self.auth_cache.invalidate();
        self.directory_changed.notify_one();
        r
    }

    /// On an empty store, creates the first admin and a token for it. Returns the token only
    /// when it was created now.
    pub async fn bootstrap(&self, admin_name: &str) -> Result<Option<MintedToken>> {
        validate_name("user", admin_name)?;
        if self.store.user_count().await? > 0 {
            return Ok(None);
        }
        let now = self.now();
        let minted = token::mint();
        let user = User {
            name: admin_name.to_string(),
            display_name: Some("bootstrap admin".into()),
            email: None,
            admin: true,
            disabled: false,
            created_at: now,
        };
        let rec = TokenRecord {
            id: minted.id.clone(),
            user: user.name.clone(),
            description: Some("bootstrap admin token".into()),
            secret_hash: minted.secret_hash,
            created_at: now,
            expires_at: None,
            revoked_at: None,
            workload: None,
            agent: false,
        };
        let sys = Actor::system();
        let cs = Changeset::new()
            .write(Write::InsertUser(user.clone()))
            .write(Write::InsertToken(rec))
            .event(
                self.event(&sys, "user.created", subject("user", &user.name))
                    .data(json!({ "admin": true, "bootstrap": true })),
            )
            .event(
                self.event(&sys, "token.created", subject("token", &minted.id))
                    .data(json!({ "user": user.name, "bootstrap": true })),
            );
        match self.store.commit(cs).await {
            Ok(_) => Ok(Some(minted)),
            // Another instance bootstrapped at the same moment.
            Err(StoreError::AlreadyExists(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn whoami(&self, actor: &Actor) -> Result<(User, Option<TokenRecord>)> {
        let user = self
            .store
            .user(&actor.user)
            .await?
            .ok_or_else(|| Error::NotFound(format!("user {}", actor.user)))?;
        let token = match &actor.token_id {
            Some(id) => self.store.token(id).await?,
            None => None,
        };
        Ok((user, token))
    }
}
