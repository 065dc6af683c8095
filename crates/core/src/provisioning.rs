//! Provisioning: switching a grant's privilege on and off in the real target.
//!
//! The core knows targets only through [`ProvisioningPort`] (the server adapts the
//! `pedm-provision` crate to it). Work is durable: creating a grant on a provisioned target
//! inserts a `grant` job in the same changeset, ending it inserts a `revoke` job; the runner
//! ([`crate::scheduler::run_provisioning`]) works through due jobs, retrying unreachable targets with
//! exponential backoff. A revoke is never dropped: it is retried (at the longest interval
//! once the target refuses outright, with a high-severity [`crate::notice::Notice`]) until it
//! succeeds.
//!
//! Reconciliation ([`crate::scheduler::run_reconcile`]) reports standing privileges no live grant explains as
//! drift; where the target says so ([`ProvisioningPort::drift_action`]) each finding also
//! becomes a durable `remove_drift` job, run by the same runner with the same retries.

use crate::model::{Grant, StandingPrivilege};
use async_trait::async_trait;
use std::time::Duration;

/// Why a provisioning step failed, as far as the control plane needs to know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ProvisionFailure {
    pub kind: FailureKind,
    /// What went wrong (never contains a secret).
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The target could not be reached: retry later.
    Unreachable,
    /// The target was reached and refused: retrying will fail the same way.
    Refused,
    /// The request or settings are wrong; nothing was sent, nothing changed in the target.
    Invalid,
}

impl ProvisionFailure {
    pub fn is_retryable(&self) -> bool {
        self.kind == FailureKind::Unreachable
    }
}

/// What a successful grant produced.
#[derive(Clone, Default)]
pub struct Provisioned {
    /// A credential for the grant holder (e.g. a generated password), handed over once.
    pub secret: Option<String>,
    /// What was done, for the audit log (never the secret).
    pub detail: String,
}

impl std::fmt::Debug for Provisioned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provisioned")
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("detail", &self.detail)
            .finish()
    }
}

/// Short-lived credentials a target issued for a grant's holder (e.g. AWS STS credentials as
/// the AWS CLI's `credential_process` JSON). `value` holds secrets: handed to the holder,
/// never stored or logged (`Debug` hides it).
#[derive(Clone)]
pub struct GrantCredentials {
    /// The target's kind of credentials (`aws`).
    pub kind: String,
    /// When they stop working: never after the grant ends.
    pub expires_at: jiff::Timestamp,
    pub value: serde_json::Value,
    /// What was issued, for the audit log (no secret).
    pub detail: String,
}

impl std::fmt::Debug for GrantCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrantCredentials")
            .field("kind", &self.kind)
            .field("expires_at", &self.expires_at)
            .field("value", &"<redacted>")
            .field("detail", &self.detail)
            .finish()
    }
}

/// What a grant's holder asks its target for: credentials for their tools, or a sign-in to
/// the target's web console.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CredentialsForm {
    /// What the target's command-line tools read (`credential_process` JSON, ExecCredential).
    #[default]
    Tools,
    /// A console sign-in URL.
    Console,
}

/// What reconciliation does with one drift finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DriftAction {
    /// Report it only (drift removal is off for the target).
    Report,
    /// Report it and queue its removal.
    Remove,
    /// Drift removal is on, but this one stays: why (an account kept on purpose, a privilege
    /// the provisioner does not take away, a protected account).
    Keep(String),
}

/// The targets that have a provisioner, and what they can do.
#[async_trait]
pub trait ProvisioningPort: Send + Sync + 'static {
    /// Whether grants on this target are switched on and off by a provisioner.
    fn handles(&self, target: &str) -> bool;
    /// The targets with a provisioner, sorted.
    fn targets(&self) -> Vec<String>;
    /// Puts the grant's privilege in place (idempotent).
    async fn grant(
        &self,
        grant: &Grant,
        run_as: Option<&str>,
    ) -> Result<Provisioned, ProvisionFailure>;
    /// Takes the grant's privilege away (idempotent: what is gone stays gone).
    async fn revoke(&self, grant: &Grant, run_as: Option<&str>) -> Result<(), ProvisionFailure>;
    /// Whether the target keeps `grant`'s end of its own (a PostgreSQL temporary login's
    /// `VALID UNTIL`), so an extension must move it there too. Default: no.
    fn keeps_expiry(&self, grant: &Grant) -> bool {
        let _ = grant;
        false
    }
    /// Moves the end the target keeps to `grant.expires_at` (an extended grant); returns what
    /// was done. Only asked where [`ProvisioningPort::keeps_expiry`] says so.
    async fn extend(&self, grant: &Grant) -> Result<String, ProvisionFailure> {
        Err(ProvisionFailure {
            kind: FailureKind::Invalid,
            message: format!("target {} keeps no expiry of its own", grant.target),
        })
    }
    /// Short-lived credentials for `grant`'s holder that stop working no later than the
    /// grant (`now` is the control plane's clock). Default: the target issues none.
    async fn credentials(
        &self,
        grant: &Grant,
        form: CredentialsForm,
        now: jiff::Timestamp,
    ) -> Result<GrantCredentials, ProvisionFailure> {
        let _ = (form, now);
        Err(ProvisionFailure {
            kind: FailureKind::Invalid,
            message: format!("target {} issues no credentials", grant.target),
        })
    }
    /// Standing privileged accounts in the target, whoever created them.
    async fn discover(&self, target: &str) -> Result<Vec<StandingPrivilege>, ProvisionFailure>;
    /// Whether `grant`'s privilege is in the target right now, and what was seen.
    /// Default: not available ([`FailureKind::Invalid`]).
    async fn observe(&self, grant: &Grant) -> Result<(bool, String), ProvisionFailure> {
        Err(ProvisionFailure {
            kind: FailureKind::Invalid,
            message: format!("target {} cannot be asked about a grant", grant.target),
        })
    }
    /// The account in the target that receives `grant`'s privilege (e.g. the login a role is
    /// granted to, from the role's settings), when known without asking the target.
    /// Reconciliation counts it as pedm's, besides the holder's own name and temporary
    /// logins `pedm_<holder>_…`. Default: none.
    fn grant_account(&self, grant: &Grant) -> Option<String> {
        let _ = grant;
        None
    }
    /// Whether `grant`'s role is switched on and off on its target at all: `Err(why not)`
    /// when the target's configuration does not provision this role (e.g. a `linux_group`
    /// role without a `group`). Such a grant is not provisioned and says why. Default: yes.
    fn role_provisioned(&self, grant: &Grant) -> Result<(), String> {
        let _ = grant;
        Ok(())
    }
    /// The privilege `grant` gives [`ProvisioningPort::grant_account`] (or its holder) in
    /// the target, in the form discovery reports it (`group:docker`, `member:readwrite`).
    /// Two live grants of one account with the same privilege share it: ending one leaves
    /// it in place for the other. Reconciliation counts exactly this privilege as explained
    /// by the grant. `None`: the grant's account is its own (a temporary login), so it
    /// shares nothing and explains everything that account holds. Default: `role:<role>`.
    fn grant_privilege(&self, grant: &Grant) -> Option<String> {
        Some(format!("role:{}", grant.role))
    }
    /// What to do with a standing privilege on `target` that no pedm grant explains.
    /// Decided without touching the target. Default: report only.
    fn drift_action(&self, target: &str, p: &StandingPrivilege) -> DriftAction {
        let _ = (target, p);
        DriftAction::Report
    }
    /// Takes a standing privilege pedm did not grant away (idempotent: what is gone stays
    /// gone); returns what was done. Refuses ([`FailureKind::Invalid`]) whatever
    /// [`ProvisioningPort::drift_action`] would not remove now.
    async fn remove_standing(
        &self,
        target: &str,
        p: &StandingPrivilege,
    ) -> Result<String, ProvisionFailure> {
        let _ = p;
        Err(ProvisionFailure {
            kind: FailureKind::Invalid,
            message: format!("drift removal is not available for target {target}"),
        })
    }
}

/// The first retry waits this long; each further one twice as long, up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// How long to wait after `attempts` failed attempts (1 → about 1 s, doubling, capped at
/// 5 minutes), with ±20 % jitter so many jobs on one target do not retry in lockstep.
pub fn backoff(attempts: i64) -> Duration {
    let exp = attempts.clamp(1, 20) - 1;
    let base = FIRST_BACKOFF
        .saturating_mul(1u32 << exp)
        .min(MAX_BACKOFF)
        .as_secs_f64();
    let mut b = [0u8; 2];
    let r = if getrandom::fill(&mut b).is_ok() {
        f64::from(u16::from_le_bytes(b)) / f64::from(u16::MAX)
    } else {
        0.5
    };
    Duration::from_secs_f64(base * (0.8 + 0.4 * r)).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        let b1 = backoff(1);
        assert!(b1 >= Duration::from_millis(800) && b1 <= Duration::from_millis(1200));
        let b4 = backoff(4);
        assert!(b4 >= Duration::from_millis(6400) && b4 <= Duration::from_millis(9600));
        for n in [10, 20, 1000] {
            assert!(backoff(n) <= MAX_BACKOFF);
            assert!(backoff(n) >= MAX_BACKOFF.mul_f64(0.8));
        }
    }
}
