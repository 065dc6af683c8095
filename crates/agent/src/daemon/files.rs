//! Reporting the files a session writes under its role's watched paths
//! ([`crate::contain::watch`]): each as a `session.file_changed` report, on disk before it is
//! sent, and on the session's live stream.

use super::Agent;
use crate::contain::execs::{EntryChange, EntryGate};
use crate::contain::watch::{FileChange, Watched, covered};
use pedm_api::agent::{AgentReport, ExecVerdict, SessionFile};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::io::unix::AsyncFd;
use uuid::Uuid;

/// The session's mount namespace with `paths` watched, and a descriptor of it for the
/// command to join; `None` without watched paths. `Err` says why not, for the caller.
pub(super) async fn watch_namespace(
    paths: &[String],
) -> Result<Option<(Watched, std::os::fd::OwnedFd)>, String> {
    if paths.is_empty() {
        return Ok(None);
    }
    let paths = paths.to_vec();
    let made = tokio::task::spawn_blocking(move || {
        let paths = crate::contain::watch::check_paths(&paths).map_err(std::io::Error::other)?;
        let w = crate::contain::watch::prepare(&paths)?;
        let ns = w.namespace.try_clone()?;
        Ok::<_, std::io::Error>((w, ns))
    })
    .await
    .map_err(std::io::Error::other)
    .and_then(|r| r);
    made.map(Some)
        .map_err(|e| format!("pedm-agent cannot watch the role's paths: {e}"))
}

#[derive(Clone)]
pub(super) struct FileReports {
    pub(super) agent: Arc<Agent>,
    pub(super) user: String,
    pub(super) grant: Uuid,
    pub(super) session: Uuid,
    pub(super) live: crate::live::WeakLiveTap,
}

impl FileReports {
    /// Follows the session's writes under `watched` until `ended` fires; returns the gate
    /// its removals and renames go to, where the kernel lets the session's filter report
    /// them (seccomp user notification).
    pub(super) fn start(
        self,
        watched: Watched,
        ended: tokio::sync::oneshot::Receiver<()>,
    ) -> Option<Box<dyn EntryGate>> {
        let gate = if crate::contain::execs::available() {
            Some(Box::new(EntryReports {
                reports: self.clone(),
                watched: watched.paths.clone(),
            }) as Box<dyn EntryGate>)
        } else {
            tracing::warn!(session = %self.session, "no seccomp user notification here: removals and renames under watched paths are not recorded");
            None
        };
        tokio::spawn(self.follow(watched, ended));
        gate
    }

    /// Reports changes as they come until `ended` fires (the session is over), then what
    /// is left.
    async fn follow(self, watched: Watched, mut ended: tokio::sync::oneshot::Receiver<()>) {
        // SAFETY: the fanotify descriptor is owned by `watched`, which the AsyncFd owns and
        // keeps open until it is dropped (deregistered first).
        let fd = match unsafe { AsyncFd::register(watched) } {
            Ok(fd) => fd,
            Err(e) => {
                tracing::error!(session = %self.session, error = %e, "cannot follow file changes");
                return;
            }
        };
        loop {
            tokio::select! {
                ready = fd.readable() => match ready {
                    Ok(mut guard) => {
                        let changes = guard.get_inner().changes();
                        guard.clear_ready();
                        self.report(changes);
                    }
                    Err(e) => {
                        tracing::error!(session = %self.session, error = %e, "file changes lost");
                        return;
                    }
                },
                _ = &mut ended => {
                    self.report(fd.get_ref().changes());
                    return;
                }
            }
        }
    }

    fn report(&self, changes: std::io::Result<Vec<FileChange>>) {
        let changes = match changes {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(session = %self.session, error = %e, "reading file changes");
                return;
            }
        };
        for c in changes {
            self.live.offer_event(
                "f",
                &serde_json::json!({ "path": c.path, "op": c.op, "pid": c.pid, "to": c.to }),
            );
            let mut report = AgentReport::in_session(
                &self.user,
                self.grant,
                self.session,
                ExecVerdict::Allowed,
                vec![],
            );
            report.file = Some(SessionFile {
                path: c.path,
                op: c.op.to_string(),
                pid: c.pid,
                to: c.to,
            });
            self.agent.queue_report(&report);
        }
    }
}

/// Removals and renames the session's filter reports: recorded when they name a watched
/// path (either end of a rename), on disk before the call goes on.
struct EntryReports {
    reports: FileReports,
    watched: Vec<PathBuf>,
}

impl std::fmt::Debug for EntryReports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntryReports")
            .field("session", &self.reports.session)
            .finish()
    }
}

impl EntryGate for EntryReports {
    fn changed(&mut self, call: Result<EntryChange, String>, pid: i32) {
        let change = match call {
            Ok(c) => {
                let to_watched = c.to.as_deref().is_some_and(|t| covered(&self.watched, t));
                if !covered(&self.watched, &c.path) && !to_watched {
                    return;
                }
                FileChange {
                    path: c.path.to_string_lossy().into_owned(),
                    op: c.op,
                    pid,
                    to: c.to.map(|t| t.to_string_lossy().into_owned()),
                }
            }
            // Not known to be outside the watched paths: recorded.
            Err(why) => FileChange {
                path: format!("(a removal or rename the agent could not read: {why})"),
                op: "unreadable",
                pid,
                to: None,
            },
        };
        self.reports.report(Ok(vec![change]));
    }
}
