//! What a host's stock sudo sends to pedmd's sudo log server (no pedm-agent on the host):
//! each command sudo accepted or rejected, and each alert, becomes an audit event in the
//! chain; a command sudo ran with I/O logging becomes a recorded session. sudo decided, not
//! pedm: pedm records it, says which live grant explains it, and raises an alert when none
//! does (someone still holds standing sudo rights on that host).

use super::hosts::host_actor;
use super::{ControlPlane, Result, subject};
use crate::audit::{NewAuditEvent, Outcome};
use crate::model::{GrantFilter, GrantState, validate_name};
use crate::store::Changeset;
use jiff::Timestamp;
use serde_json::json;
use uuid::Uuid;

/// The alert raised for a command sudo ran that no live grant explains.
pub const SUDO_WITHOUT_GRANT: &str = "sudo-without-grant";

/// What sudo said of one command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SudoVerdict {
    Accepted,
    Rejected,
    /// A problem sudo's policy found while the command ran.
    Alert,
}

impl SudoVerdict {
    fn action(self) -> &'static str {
        match self {
            SudoVerdict::Accepted => "sudo.accepted",
            SudoVerdict::Rejected => "sudo.rejected",
            SudoVerdict::Alert => "sudo.alert",
        }
    }
}

/// One event of sudo's event log, as the host's sudo sent it.
#[derive(Debug, Clone)]
pub struct SudoEvent {
    pub verdict: SudoVerdict,
    /// When sudo decided (its `submit_time` or `alert_time`).
    pub at: Timestamp,
    /// `submituser`.
    pub user: String,
    /// `runuser`.
    pub run_as: Option<String>,
    /// `runargv` (or `command`), cut to a bounded size; `argv_cut` names the whole.
    pub argv: Vec<String>,
    /// Hex SHA-256 and size of the whole argv when `argv` was cut.
    pub argv_cut: Option<(String, u64)>,
    pub cwd: Option<String>,
    pub tty: Option<String>,
    /// Why sudo rejected it or raised the alert.
    pub reason: Option<String>,
    /// The session its I/O log becomes, when sudo sends one.
    pub session: Option<Uuid>,
    /// The sudo client's own description (`ClientHello`).
    pub client: Option<String>,
}

impl ControlPlane {
    /// Records `ev` from `host` (the name its client certificate proves) and returns the live
    /// grant of the user on this host that explains it, if any. An accepted command with no
    /// such grant is also a `exec.alert` event (`sudo-without-grant`) and a high-severity
    /// notice; the configured exec alerts apply as to agents' reports.
    pub async fn record_sudo_event(&self, host: &str, ev: SudoEvent) -> Result<Option<Uuid>> {
        let now = self.now();
        // A name pedm would refuse is still recorded (as data, under the host's name): an
        // audit record is never dropped for its content.
        let user_ok = validate_name("user", &ev.user).is_ok();
        let actor = if user_ok {
            ev.user.clone()
        } else {
            host_actor(host).user
        };
        let grant = if user_ok {
            self.store
                .grants(&GrantFilter {
                    user: Some(ev.user.clone()),
                    state: Some(GrantState::Active),
                    target: Some(host.to_string()),
                    limit: Some(100),
                    held_between: None,
                })
                .await?
                .into_iter()
                .map(|g| g.as_of(now))
                .find(|g| g.state == GrantState::Active)
                .map(|g| g.id)
        } else {
            None
        };
        let outcome = match ev.verdict {
            SudoVerdict::Accepted => Outcome::Success,
            SudoVerdict::Rejected => Outcome::Denied,
            SudoVerdict::Alert => Outcome::Failure,
        };
        let sub = grant
            .and_then(|g| subject("grant", g))
            .or_else(|| ev.session.and_then(|s| subject("session", s)));
        let mut data = json!({
            "host": host,
            "target": host,
            "via": "sudo_log",
            "user": ev.user,
            "run_as": ev.run_as,
            "argv": ev.argv,
            "cwd": ev.cwd,
            "tty": ev.tty,
            "reason": ev.reason,
            "session": ev.session,
            "grant": grant,
            "client": ev.client,
        });
        if let Some((sha, bytes)) = &ev.argv_cut {
            data["argv_sha256"] = json!(sha);
            data["argv_bytes"] = json!(bytes);
        }
        let mut cs = Changeset::new().event(
            NewAuditEvent::new(ev.at, &actor, ev.verdict.action(), sub.clone())
                .outcome(outcome)
                .data(data),
        );
        let mut alerts = if ev.verdict == SudoVerdict::Alert {
            vec![]
        } else {
            self.exec_alerts_matching(&ev.argv)
        };
        if ev.verdict == SudoVerdict::Accepted && grant.is_none() {
            alerts.push(SUDO_WITHOUT_GRANT.to_string());
        }
        for name in alerts {
            cs = cs
                .event(
                    NewAuditEvent::new(ev.at, &actor, "exec.alert", sub.clone())
                        .outcome(outcome)
                        .data(json!({
                            "alert": name, "host": host, "via": "sudo_log", "user": ev.user,
                            "argv": ev.argv, "session": ev.session, "verdict": ev.verdict.action(),
                        })),
                )
                .notice(crate::notice::Notice::ExecAlert {
                    alert: name,
                    host: host.to_string(),
                    user: ev.user.clone(),
                    argv: ev.argv.clone(),
                    allowed: ev.verdict == SudoVerdict::Accepted,
                    session: ev.session,
                });
        }
        self.commit(cs).await?;
        Ok(grant)
    }

    /// Records that `host` tried to resume I/O log `log`, which another host started (a
    /// `sudo.log_refused` event under the host's name), and returns the refusal.
    pub async fn refuse_sudo_resume(&self, host: &str, log: Uuid, why: String) -> crate::Error {
        self.refuse(
            &host_actor(host),
            "sudo.log_refused",
            subject("session", log),
            why,
        )
        .await
    }
}
