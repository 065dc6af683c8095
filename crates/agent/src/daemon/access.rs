//! Questions root programs on the host ask about someone else: the sudo plugin ("may alice
//! run this as root now?") and the PAM module ("may alice log in now?"). Decided from the same
//! signed snapshot as `pedm exec` (so they hold while pedmd is away), reported the same way
//! (on disk before the answer), and a yes to sudo comes with the grant's cgroup to join: the
//! grant's end ends what sudo started, as it ends a `pedm exec` session.
//!
//! The asker is root (peer credentials): only root can speak for another user, as `sudo`
//! itself does. Anyone else asking is refused and recorded.

use super::Agent;
use crate::snapshot::Refusal;
use crate::user::TargetUser;
use jiff::Timestamp;
use pedm_api::agent::{AgentReport, ExecVerdict, REPORT_ARGV_BYTES, ReportVia};
use pedm_api::socket::{AccessAllowed, AccessCheck, Frame, StartExec, write_frame};
use std::sync::Arc;
use tokio::net::UnixStream;
use uuid::Uuid;

/// The cgroup, under each grant's, that every command sudo runs for the grant shares (it is
/// removed with the grant's when the grant ends).
const SUDO_CGROUP: Uuid = Uuid::from_u128(0x5ad0);

/// A yes, and the report that records it.
struct Yes {
    answer: AccessAllowed,
    report: AgentReport,
}

/// A no, and the report that records it.
struct No {
    reason: String,
    report: Box<AgentReport>,
}

impl Agent {
    /// Answers one [`AccessCheck`] on `stream` from a peer with uid `peer`.
    pub(super) async fn answer_check(
        self: Arc<Self>,
        mut stream: UnixStream,
        peer: u32,
        check: AccessCheck,
    ) {
        let (user, via, argv) = match &check {
            AccessCheck::Sudo { user, argv, .. } => (user.clone(), ReportVia::Sudo, argv.clone()),
            AccessCheck::Login {
                user,
                service,
                rhost,
                ..
            } => (
                user.clone(),
                ReportVia::Login,
                login_argv(service, rhost.as_deref()),
            ),
        };
        if peer != 0 {
            // Recorded as the asker (the kernel's word), naming whom they asked about.
            let asker = TargetUser::caller(peer).map_or_else(|_| format!("uid-{peer}"), |u| u.name);
            let about: String = user.chars().take(64).collect();
            let reason = format!(
                "uid {peer} asked whether {about:?} may act: only root asks on someone else's \
                 behalf (the sudo plugin, the PAM module)"
            );
            tracing::warn!(peer, %reason, "refused");
            let r = report(&asker, &argv, ExecVerdict::Denied, None, &reason, via);
            self.report_refusal(peer, r);
            let _ = super::refuse(&mut stream, reason).await;
            return;
        }
        let this = self.clone();
        let decided = tokio::task::spawn_blocking(move || match check {
            AccessCheck::Sudo { user, argv, run_as } => this.decide_sudo(&user, argv, &run_as),
            AccessCheck::Login {
                user,
                service,
                rhost,
                role,
            } => this.decide_login(&user, &service, rhost.as_deref(), role.as_deref()),
        })
        .await;
        match decided {
            Ok(Ok(yes)) => {
                // Nothing runs that is not on disk first.
                if let Err(e) = self.outbox.add_report(&yes.report) {
                    tracing::error!(error = %e, "cannot record an allowed check");
                    let _ = super::refuse(
                        &mut stream,
                        format!("pedm-agent cannot record the decision: {e}"),
                    )
                    .await;
                    return;
                }
                self.queued.notify_one();
                tracing::info!(%user, ?via, grant = %yes.answer.grant, "allowed");
                let _ = write_frame(&mut stream, &Frame::Allowed(yes.answer)).await;
            }
            Ok(Err(no)) => {
                tracing::info!(%user, ?via, reason = %no.reason, "refused");
                let uid = TargetUser::lookup(&user).map_or(u32::MAX, |u| u.uid);
                self.report_refusal(uid, *no.report);
                let _ = super::refuse(&mut stream, no.reason).await;
            }
            Err(e) => {
                tracing::error!(error = %e, "the decision failed");
                let _ = super::refuse(&mut stream, "pedm-agent failed to decide".into()).await;
            }
        }
    }

    /// `sudo` as `pedm exec` would decide it: a live grant of `user` whose run-as account is
    /// `run_as`, the binary resolved and hashed, policy asked about the exact command.
    fn decide_sudo(&self, user: &str, argv: Vec<String>, run_as: &str) -> Result<Yes, No> {
        let no = |reason: String, sha: Option<String>| {
            let mut report = report(
                user,
                &argv,
                ExecVerdict::Denied,
                None,
                &reason,
                ReportVia::Sudo,
            );
            report.binary_sha256 = sha;
            No {
                reason,
                report: Box::new(report),
            }
        };
        let caller = TargetUser::lookup(user).map_err(|e| no(format!("user {user}: {e}"), None))?;
        let now = Timestamp::now();
        // The grants that run commands as `run_as`, tried in turn (usually there is one).
        let candidates: Vec<(Uuid, String)> = {
            let guard = self.enforced.read().unwrap_or_else(|e| e.into_inner());
            let Some(enforced) = guard.as_ref() else {
                return Err(no(
                    "this host has not received its grants from the pedm server yet".into(),
                    None,
                ));
            };
            let live = enforced.live_grants(user, now);
            if live.is_empty() {
                // The usual message: no grant, and how to ask for one.
                let reason = match enforced.pick_grant(user, None, now) {
                    Err(r) => r.0,
                    Ok(_) => format!("{user} holds no active grant on {}", self.cfg.host),
                };
                return Err(no(reason, None));
            }
            let mut matching: Vec<&pedm_api::agent::HostGrant> = live
                .iter()
                .copied()
                .filter(|g| g.run_as.as_deref() == Some(run_as))
                .collect();
            // Grants sudo can use first; those whose roles need pedm only say why not.
            matching.sort_by_key(|g| g.noexec || g.intercept || !g.watch_paths.is_empty());
            let matching: Vec<(Uuid, String)> =
                matching.iter().map(|g| (g.id, g.role.clone())).collect();
            if matching.is_empty() {
                let held: Vec<String> = live
                    .iter()
                    .map(|g| match &g.run_as {
                        Some(a) => format!("{} (runs as {a}: sudo -u {a})", g.role),
                        None => format!("{} (no run-as account)", g.role),
                    })
                    .collect();
                return Err(no(
                    format!(
                        "{user} holds no grant on {host} that runs commands as {run_as}; \
                         held: {}",
                        held.join(", "),
                        host = self.cfg.host
                    ),
                    None,
                ));
            }
            matching
        };
        let mut first_refusal = None;
        for (grant, role) in candidates {
            let start = StartExec {
                argv: argv.clone(),
                grant: Some(grant),
                shell: false,
                cwd: None,
                tty: None,
                env: vec![],
                task: None,
            };
            match self.prepare(&caller, start) {
                Ok(p) => {
                    let sha = p.resolved.sha256().to_string();
                    // What only a session pedm runs itself can give.
                    let needs_pedm = [
                        (p.noexec, "noexec"),
                        (p.intercept, "intercept"),
                        (!p.watch_paths.is_empty(), "watched paths"),
                    ]
                    .into_iter()
                    .filter_map(|(on, what)| on.then_some(what))
                    .collect::<Vec<_>>();
                    if !needs_pedm.is_empty() {
                        // Another grant may allow it without them.
                        first_refusal.get_or_insert((
                            format!(
                                "the role's commands run only through pedm ({}), which sudo \
                                 cannot give: pedm exec -- {}",
                                needs_pedm.join(", "),
                                argv.join(" ")
                            ),
                            Some(sha),
                        ));
                        continue;
                    }
                    let join = self
                        .sudo_cgroup(p.authority, p.expires_at, &p.limits)
                        .map_err(|e| {
                            no(
                                format!("pedm-agent cannot contain the command (cgroup): {e}"),
                                Some(sha.clone()),
                            )
                        })?;
                    // The grant may have ended since the decision: its end would not find
                    // the cgroup in `contained` any more, so nothing may join it.
                    let still_live = self
                        .enforced
                        .read()
                        .unwrap_or_else(|e| e.into_inner())
                        .as_ref()
                        .is_some_and(|e| e.is_live(p.authority, Timestamp::now()));
                    if !still_live {
                        return Err(no(
                            format!("grant {} has just ended", p.authority),
                            Some(sha),
                        ));
                    }
                    let report = report(
                        user,
                        &p.argv,
                        ExecVerdict::Allowed,
                        Some(p.authority),
                        &format!("allowed through sudo by {}", p.policies.join(", ")),
                        ReportVia::Sudo,
                    );
                    let report = AgentReport {
                        binary_sha256: Some(sha),
                        ..report
                    };
                    return Ok(Yes {
                        answer: AccessAllowed {
                            grant: p.authority,
                            role,
                            expires_at: p.expires_at.to_string(),
                            join,
                        },
                        report,
                    });
                }
                Err((Refusal(reason), sha)) => {
                    first_refusal.get_or_insert((reason, sha));
                }
            }
        }
        let (reason, sha) = first_refusal.unwrap_or_else(|| {
            (
                format!(
                    "{user} holds no grant on {} that allows this",
                    self.cfg.host
                ),
                None,
            )
        });
        Err(no(reason, sha))
    }

    /// The grant's cgroup for what sudo runs (created once per grant, limits set), and the
    /// `cgroup.procs` files to join; the grant is then ended through its cgroup when it ends.
    fn sudo_cgroup(
        &self,
        grant: Uuid,
        expires_at: Timestamp,
        limits: &pedm_api::SessionLimits,
    ) -> Result<Vec<String>, String> {
        let Some(cgroups) = &self.cgroups else {
            if !limits.is_none() {
                return Err(
                    "the role limits resources, but this host has no cgroup containment".into(),
                );
            }
            return Ok(vec![]);
        };
        let joins = cgroups.session(grant, SUDO_CGROUP, limits)?;
        self.contained
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(grant, expires_at);
        self.grants_changed.notify_one();
        Ok(joins
            .paths
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect())
    }

    /// A login: a live grant of `user` on this host (of `role`, when the PAM line names one).
    fn decide_login(
        &self,
        user: &str,
        service: &str,
        rhost: Option<&str>,
        role: Option<&str>,
    ) -> Result<Yes, No> {
        let argv = login_argv(service, rhost);
        let no = |reason: String| No {
            report: Box::new(report(
                user,
                &argv,
                ExecVerdict::Denied,
                None,
                &reason,
                ReportVia::Login,
            )),
            reason,
        };
        let now = Timestamp::now();
        let guard = self.enforced.read().unwrap_or_else(|e| e.into_inner());
        let Some(enforced) = guard.as_ref() else {
            return Err(no(
                "this host has not received its grants from the pedm server yet".into(),
            ));
        };
        let host = &self.cfg.host;
        let chosen = enforced
            .live_grants(user, now)
            .into_iter()
            .filter(|g| role.is_none_or(|r| g.role == r))
            .max_by_key(|g| g.expires_at)
            .cloned();
        let Some(g) = chosen else {
            let what =
                role.map_or_else(|| "a grant".to_string(), |r| format!("a grant of role {r}"));
            return Err(no(format!(
                "{user} may log in to {host} only while holding {what} there; request one with \
                 `pedm request create --target {host} --role {} --duration 1h --justification REASON`",
                role.unwrap_or("ROLE")
            )));
        };
        let report = report(
            user,
            &argv,
            ExecVerdict::Allowed,
            Some(g.id),
            &format!(
                "login through {service} allowed by grant {} (role {})",
                g.id, g.role
            ),
            ReportVia::Login,
        );
        Ok(Yes {
            answer: AccessAllowed {
                grant: g.id,
                role: g.role.clone(),
                expires_at: g.expires_at.to_string(),
                join: vec![],
            },
            report,
        })
    }
}

/// What a login report carries as its argv: the PAM service, and where from.
fn login_argv(service: &str, rhost: Option<&str>) -> Vec<String> {
    let mut argv = vec![service.to_string()];
    argv.extend(rhost.iter().map(|h| format!("from {h}")));
    argv
}

/// The report of a check.
fn report(
    user: &str,
    argv: &[String],
    verdict: ExecVerdict,
    grant: Option<Uuid>,
    reason: &str,
    via: ReportVia,
) -> AgentReport {
    AgentReport {
        grant,
        via: Some(via),
        ..super::refusals::report(user, argv, REPORT_ARGV_BYTES, verdict, reason)
    }
}
