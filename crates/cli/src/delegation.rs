//! `pedm delegate …`, `pedm task …` and `pedm grant delegate`.

use crate::UsageError;
use crate::args::{CreateDelegationArgs, DelegateCmd, DurationArg, TaskCmd};
use crate::ctx::Ctx;
use crate::output::{
    Detail, Row, detail_table, list_table, opt, opt_time, remaining, time, yes_no,
};
use anyhow::{Context, Result};
use jiff::Timestamp;
use pedm_api::delegation::*;
use pedm_api::{Grant, Reason};
use std::collections::BTreeMap;
use std::io::Read;
use uuid::Uuid;

impl Row for Delegation {
    const HEADER: &'static [&'static str] = &[
        "ID", "STATE", "DELEGATE", "FROM", "TASKS", "ROLES", "SCOPE", "EXPIRES", "LEFT",
    ];
    fn cells(&self, now: Timestamp) -> Vec<String> {
        vec![
            self.id.to_string(),
            self.state.to_string(),
            self.delegate.to_string(),
            self.delegator.clone(),
            self.tasks.join(","),
            self.roles.join(","),
            self.scope.join(","),
            time(self.expires_at),
            if self.state == DelegationState::Active {
                remaining(self.expires_at, now)
            } else {
                String::new()
            },
        ]
    }
}

impl Detail for Delegation {
    fn fields(&self, now: Timestamp) -> Vec<(&'static str, String)> {
        vec![
            ("id", self.id.to_string()),
            ("state", self.state.to_string()),
            ("delegator", self.delegator.clone()),
            ("delegate", self.delegate.to_string()),
            ("tasks", self.tasks.join(", ")),
            ("roles", self.roles.join(", ")),
            ("scope", self.scope.join(", ")),
            ("expires", time(self.expires_at)),
            ("remaining", remaining(self.expires_at, now)),
            ("redelegate", yes_no(self.redelegate)),
            (
                "parent",
                self.parent.map(|p| p.to_string()).unwrap_or_default(),
            ),
            ("reason", opt(&self.reason)),
            ("created", time(self.created_at)),
            ("revoked", opt_time(self.revoked_at)),
            ("revoked_by", opt(&self.revoked_by)),
            ("revoke_reason", opt(&self.revoke_reason)),
        ]
    }
}

impl Row for TaskDef {
    const HEADER: &'static [&'static str] = &[
        "NAME",
        "TARGETS",
        "RUN AS",
        "PROGRAM",
        "PARAMS",
        "DESCRIPTION",
    ];
    fn cells(&self, _: Timestamp) -> Vec<String> {
        vec![
            self.name.clone(),
            self.targets.join(","),
            self.run_as.clone(),
            self.argv.first().cloned().unwrap_or_default(),
            self.params
                .iter()
                .map(|p| p.name.clone())
                .collect::<Vec<_>>()
                .join(","),
            opt(&self.description),
        ]
    }
}

fn param_text(p: &TaskParam) -> String {
    let mut parts = vec![match p.kind {
        ParamKind::String => "string".to_string(),
        ParamKind::Integer => "integer".to_string(),
        ParamKind::Enum => format!("enum({})", p.values.join("|")),
    }];
    if let Some(pat) = &p.pattern {
        parts.push(format!("pattern {pat}"));
    }
    if !p.protected.is_empty() {
        parts.push(format!("protected {}", p.protected.join(",")));
    }
    if let Some(n) = p.max_len {
        parts.push(format!("max {n}"));
    }
    if !p.required {
        parts.push("optional".into());
    }
    if p.secret {
        parts.push("secret".into());
    }
    if p.allow_leading_dash {
        parts.push("may start with -".into());
    }
    parts.join("; ")
}

fn task_detail(t: &TaskDef) -> String {
    let mut table = crate::output::Table::plain();
    let mut row = |k: &str, v: String| table.row(vec![format!("{k}:"), v]);
    row("name", t.name.clone());
    row("description", opt(&t.description));
    row("targets", t.targets.join(", "));
    row("run_as", t.run_as.clone());
    row("argv", t.argv.join(" "));
    row(
        "stdin",
        t.stdin
            .as_ref()
            .map(|s| s.escape_default().to_string())
            .unwrap_or_default(),
    );
    for p in &t.params {
        row(&format!("param {}", p.name), param_text(p));
    }
    row("defined_by", opt(&t.defined_by));
    row("defined_at", opt_time(t.defined_at));
    table.render()
}

pub async fn task(ctx: &Ctx, cmd: TaskCmd) -> Result<()> {
    let c = &ctx.client;
    match cmd {
        TaskCmd::List => {
            let tasks = c.list_tasks().await?;
            ctx.emit(&tasks, || list_table(&tasks, ctx.now).render())
        }
        TaskCmd::Show { name } => {
            let t = c.get_task(&name).await?;
            ctx.emit(&t, || task_detail(&t))
        }
        TaskCmd::Define { file, replace } => {
            let mut text = String::new();
            if file.as_os_str() == "-" {
                std::io::stdin()
                    .read_to_string(&mut text)
                    .context("reading the task definition from stdin")?;
            } else {
                text = std::fs::read_to_string(&file)
                    .with_context(|| format!("reading {}", file.display()))?;
            }
            let task: TaskDef = serde_json::from_str(&text).map_err(|e| {
                UsageError(format!("{} is not a task definition: {e}", file.display()))
            })?;
            // The same checks the server makes, before anything is sent.
            task.validate()
                .map_err(|e| UsageError(format!("{}: {e}", file.display())))?;
            let t = c.define_task(&DefineTask { task, replace }).await?;
            ctx.emit(&t, || task_detail(&t))
        }
        TaskCmd::Check {
            name,
            target,
            params,
        } => {
            let params: BTreeMap<String, String> = params.into_iter().collect();
            let r = c.check_task(&name, &CheckTask { target, params }).await?;
            ctx.emit(&r, || {
                let mut t = crate::output::Table::plain();
                t.row(vec!["delegation:".into(), r.delegation.to_string()]);
                t.row(vec!["task:".into(), r.task.clone()]);
                t.row(vec!["target:".into(), r.target.clone()]);
                t.row(vec!["run_as:".into(), r.run_as.clone()]);
                t.row(vec!["argv:".into(), format!("{:?}", r.argv)]);
                t.row(vec!["stdin:".into(), yes_no(r.stdin)]);
                t.render()
            })
        }
        // Run by `crate::run` before a client exists: it talks to the local agent.
        TaskCmd::Run { .. } => anyhow::bail!("task run talks to pedm-agent, not to the server"),
    }
}

pub async fn delegate(ctx: &Ctx, cmd: DelegateCmd) -> Result<()> {
    let c = &ctx.client;
    let d = match cmd {
        DelegateCmd::Create(a) => c.create_delegation(&create_body(a)).await?,
        DelegateCmd::List { all } => {
            let q = DelegationQuery { all: Some(all) };
            let list = c.list_delegations(&q).await?;
            return ctx.emit(&list, || list_table(&list, ctx.now).render());
        }
        DelegateCmd::Show { id } => c.get_delegation(id).await?,
        DelegateCmd::Revoke { id, reason } => {
            let r = c
                .revoke_delegation(
                    id,
                    &Reason {
                        reason: Some(reason),
                    },
                )
                .await?;
            return ctx.emit(&r, || {
                let mut out = list_table(&r.delegations, ctx.now).render();
                if !r.grants.is_empty() {
                    out.push_str(&format!("\ngrants ended with it ({}):\n", r.grants.len()));
                    out.push_str(&list_table(&r.grants, ctx.now).render());
                }
                out
            });
        }
    };
    ctx.emit(&d, || detail_table(&d, ctx.now).render())
}

fn create_body(a: CreateDelegationArgs) -> CreateDelegation {
    CreateDelegation {
        parent: a.from,
        user: a.user,
        group: a.group,
        tasks: a.task,
        roles: a.role,
        scope: a.scope,
        expires_at: a.until,
        expires_in: a.for_.map(DurationArg::canonical),
        redelegate: a.redelegate,
        reason: a.reason,
    }
}

/// `pedm grant delegate`: prints the colleague's new grant.
pub async fn grant_delegate(
    ctx: &Ctx,
    id: Uuid,
    to: String,
    duration: DurationArg,
    reason: Option<String>,
) -> Result<()> {
    let g: Grant = ctx
        .client
        .delegate_grant(
            id,
            &DelegateGrant {
                to,
                duration: duration.canonical(),
                reason,
            },
        )
        .await?;
    // The colleague's grant ends no later than the one it comes from: say when it was cut.
    let given = g.expires_at.duration_since(g.starts_at).as_secs();
    if given < duration.0 {
        eprintln!(
            "note: asked for {}, granted {}: grant {id} it is handed on from ends at {}",
            duration.canonical(),
            pedm_api::format_duration(given.max(1)),
            g.expires_at
        );
    }
    ctx.emit(&g, || detail_table(&g, ctx.now).render())
}
