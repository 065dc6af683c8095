//! Delegated tasks run from pedmd (the console) rather than on the host's own terminal: which
//! tasks a person may run where, the request to run one (checked as the agent checks a local
//! run, and recorded), and how it ended on the host (recorded too). Handing the run to the
//! host's agent is the transport's job (the agents' event stream); the agent checks it again
//! against its signed snapshot before anything runs.

use super::delegation::Item;
use super::hosts::host_actor;
use super::{ControlPlane, Result, subject};
use crate::audit::Outcome;
use crate::delegation::{DelegationId, TaskDef};
use crate::error::Error;
use crate::model::{Actor, TargetKind};
use crate::notice::Notice;
use crate::store::Changeset;

use jiff::Timestamp;
use serde_json::json;
use std::collections::BTreeMap;
use uuid::Uuid;

/// A task `actor` may run on a host now, and until when.
#[derive(Debug, Clone)]
pub struct RunnableTask {
    pub host: String,
    pub task: TaskDef,
    pub delegation: DelegationId,
    pub until: Timestamp,
}

/// A run that was checked and recorded: what to hand to the host's agent.
#[derive(Clone)]
pub struct TaskRunOrder {
    pub id: Uuid,
    pub host: String,
    pub user: String,
    pub task: TaskDef,
    pub delegation: DelegationId,
    /// As given (may hold secrets: never log them).
    pub params: BTreeMap<String, String>,
}

/// How a run ended on its host (or why it never started).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskRunEnd {
    pub session: Option<Uuid>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// Why it did not run (the agent refused it, or no agent could be reached).
    pub refused: Option<String>,
}

impl ControlPlane {
    /// Every task `actor` may run now, on every host target it applies to (their delegations
    /// decide, as on the host).
    pub async fn runnable_tasks(&self, actor: &Actor) -> Result<Vec<RunnableTask>> {
        let now = self.now();
        let mut out = vec![];
        if actor.via_agent {
            return Ok(out);
        }
        match self.store.user(&actor.user).await? {
            Some(u) if !u.disabled => {}
            _ => return Ok(out),
        }
        let hosts: Vec<_> = self
            .store
            .targets()
            .await?
            .into_iter()
            .filter(|t| t.kind == TargetKind::Host)
            .collect();
        for task in self.store.tasks().await? {
            for t in hosts.iter().filter(|t| task.applies_to(t)) {
                let found = self
                    .allowing(&actor.user, t, Item::Task(&task.name), now)
                    .await?;
                if let Some((d, until)) = found.into_iter().max_by_key(|(_, until)| *until) {
                    out.push(RunnableTask {
                        host: t.name.clone(),
                        task: task.clone(),
                        delegation: d.id,
                        until,
                    });
                }
            }
        }
        out.sort_by(|a, b| (&a.task.name, &a.host).cmp(&(&b.task.name, &b.host)));
        Ok(out)
    }

    /// Asks to run task `task` on host `host` from pedmd: the same checks as `pedm task check`
    /// (a live delegation, the parameters against the definition; refusals recorded), then
    /// `task.run_requested` (parameters redacted as the task says). The caller hands the
    /// order to the host's agent and reports the end with [`Self::task_run_ended`].
    pub async fn request_task_run(
        &self,
        actor: &Actor,
        host: &str,
        task: &str,
        params: BTreeMap<String, String>,
    ) -> Result<TaskRunOrder> {
        let target = self.load_target(host).await?;
        if target.kind != TargetKind::Host {
            return Err(Error::unprocessable(
                "host",
                format!(
                    "target {host} is of kind {}; tasks run on targets of kind host, by their agent",
                    target.kind
                ),
            ));
        }
        let check = self.check_task(actor, host, task, &params).await?;
        let id = Uuid::now_v7();
        let cs = Changeset::new().event(
            self.event(actor, "task.run_requested", subject("task", task))
                .data(json!({
                    "run": id,
                    "target": host,
                    "delegation": check.delegation,
                    "params": check.task.redacted(&params),
                })),
        );
        self.store.commit(cs).await?;
        Ok(TaskRunOrder {
            id,
            host: host.to_string(),
            user: actor.user.clone(),
            task: check.task,
            delegation: check.delegation,
            params,
        })
    }

    /// Records how run `id` (of `user`'s task `task`) ended on `host`: `task.run_finished`,
    /// by the host (denied when it did not run), and tells `user`'s pages.
    pub async fn task_run_ended(
        &self,
        host: &str,
        id: Uuid,
        user: &str,
        task: &str,
        end: &TaskRunEnd,
    ) -> Result<()> {
        let mut ev = self
            .event(
                &host_actor(host),
                "task.run_finished",
                subject("task", task),
            )
            .data(json!({
                "run": id,
                "target": host,
                "user": user,
                "session": end.session,
                "exit_code": end.exit_code,
                "signal": end.signal,
                "refused": end.refused,
            }));
        if end.refused.is_some() {
            ev = ev.outcome(Outcome::Denied);
        }
        let notice = Notice::TaskRunFinished {
            run: id,
            host: host.to_string(),
            user: user.to_string(),
            task: task.to_string(),
            exit_code: end.exit_code,
            refused: end.refused.clone(),
        };
        self.commit(Changeset::new().event(ev).notice(notice))
            .await?;
        Ok(())
    }
}
