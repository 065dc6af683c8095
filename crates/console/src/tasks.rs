//! Delegated tasks from the page: the tasks the viewer may run now and where (their
//! delegations decide, as on the host), each with its typed parameters as a form; a run is
//! checked and recorded by the core, handed to the host's agent (which checks it again
//! against its signed snapshot), and its end and output shown on the run's page as soon as
//! the agent reports it. Secret parameters are password fields and never shown again.

use crate::Console;
use crate::error::{PageError, PageResult};
use crate::pages::{html, nav, parse_id};
use crate::session::{Posted, Viewer};
use crate::view::{Nav, short_time};
use crate::watch::TaskRunView;
use askama::Template;
use axum::Router;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use pedm_core::delegation::ParamKind;
use pedm_core::service::TaskRunEnd;
use pedm_core::text::terminal_safe;
use std::collections::BTreeMap;

pub fn router() -> Router<Console> {
    Router::new()
        .route("/ui/tasks", get(list))
        .route("/ui/tasks/run", post(run))
        .route("/ui/tasks/runs/{id}", get(run_page))
        .route("/ui/tasks/runs/{id}/status", get(run_status))
}

struct Field {
    /// The form field's name: `param.<name>`.
    name: String,
    id: String,
    label: String,
    hint: String,
    /// `text`, `password`, `number` or `select`.
    input: &'static str,
    values: Vec<String>,
    required: bool,
}

struct TaskForm {
    id: String,
    task: String,
    host: String,
    description: String,
    until: String,
    fields: Vec<Field>,
}

#[derive(Template)]
#[template(path = "tasks.html")]
struct ListPage {
    nav: Option<Nav>,
    csrf: String,
    forms: Vec<TaskForm>,
    /// Whether this server can reach host agents at all.
    agents: bool,
}

async fn list(State(c): State<Console>, v: Viewer) -> PageResult<Response> {
    let runnable = c.cp.runnable_tasks(&v.actor).await?;
    let forms = runnable
        .iter()
        .enumerate()
        .map(|(i, r)| TaskForm {
            id: format!("task-{i}"),
            task: r.task.name.clone(),
            host: r.host.clone(),
            description: r.task.description.clone().unwrap_or_default(),
            until: short_time(r.until),
            fields: r
                .task
                .params
                .iter()
                .map(|p| Field {
                    name: format!("param.{}", p.name),
                    id: format!("task-{i}-{}", p.name),
                    label: p.name.clone(),
                    hint: p.description.clone().unwrap_or_default(),
                    input: match p.kind {
                        _ if p.secret => "password",
                        ParamKind::Enum => "select",
                        ParamKind::Integer => "number",
                        ParamKind::String => "text",
                    },
                    values: p.values.clone(),
                    required: p.required,
                })
                .collect(),
        })
        .collect();
    html(ListPage {
        nav: nav(&c, &v, "tasks"),
        csrf: v.csrf.clone(),
        forms,
        agents: c.agents.is_some(),
    })
}

/// `host`, `task` and `param.<name>` fields (an empty value: the parameter is not given).
async fn run(
    State(c): State<Console>,
    p: Posted<BTreeMap<String, String>>,
) -> PageResult<Response> {
    let field = |name: &str| {
        p.form
            .get(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .ok_or_else(|| PageError::Invalid(format!("{name}: missing")))
    };
    let (host, task) = (field("host")?, field("task")?);
    let params: BTreeMap<String, String> = p
        .form
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("param.")?.to_string(), v.clone())))
        .filter(|(_, v)| !v.is_empty())
        .collect();
    let agents = c.agents.clone().ok_or_else(|| {
        PageError::Core(pedm_core::Error::unprocessable(
            "host",
            "this server runs no agent hub",
        ))
    })?;
    let order =
        c.cp.request_task_run(&p.viewer.actor, &host, &task, params)
            .await?;
    if let Err(why) = agents.run_task(&order) {
        let end = TaskRunEnd {
            refused: Some(why.clone()),
            ..Default::default()
        };
        c.cp.task_run_ended(&order.host, order.id, &order.user, &task, &end)
            .await?;
        return Err(PageError::Unavailable(why));
    }
    Ok(Redirect::to(&format!("/ui/tasks/runs/{}", order.id)).into_response())
}

/// The run, if this instance handed it out and `v` may see it (the one who ran it, or
/// `read_audit`); otherwise not found (another's run is not confirmed to exist).
fn visible_run(c: &Console, v: &Viewer, id: &str) -> PageResult<TaskRunView> {
    let id = parse_id(id)?;
    c.agents
        .as_ref()
        .and_then(|a| a.task_run(id))
        .filter(|r| c.cp.may_see_sessions_of(&v.actor, &r.user))
        .ok_or_else(|| {
            PageError::Core(pedm_core::Error::NotFound(format!(
                "task run {id} on this server (runs are kept in memory by the instance that \
                 handed them out; its record is in the audit log)"
            )))
        })
}

struct RunState {
    id: String,
    task: String,
    host: String,
    user: String,
    requested: String,
    /// `running`, `succeeded`, `failed` or `refused`.
    state: &'static str,
    summary: String,
    output: String,
    session: Option<String>,
}

fn state_of(r: &TaskRunView) -> RunState {
    let (state, summary, output, session) = match &r.end {
        None => (
            "running",
            "Handed to the host's agent; this page shows the end when it comes.".to_string(),
            String::new(),
            None,
        ),
        Some((end, output)) => {
            let (state, summary) = match (&end.refused, end.exit_code, end.signal) {
                (Some(why), _, _) => ("refused", format!("Not run: {why}")),
                (None, Some(0), _) => ("succeeded", "Ended: exit 0".to_string()),
                (None, Some(code), _) => ("failed", format!("Ended: exit {code}")),
                (None, None, Some(sig)) => ("failed", format!("Ended by signal {sig}")),
                (None, None, None) => ("failed", "Ended without a status".to_string()),
            };
            (
                state,
                summary,
                // Line by line: the lines stay, control characters (escapes) are shown
                // inert.
                output
                    .split('\n')
                    .map(|l| terminal_safe(l.strip_suffix('\r').unwrap_or(l)).into_owned())
                    .collect::<Vec<_>>()
                    .join("\n"),
                end.session.map(|s| s.to_string()),
            )
        }
    };
    RunState {
        id: r.id.to_string(),
        task: r.task.clone(),
        host: r.host.clone(),
        user: r.user.clone(),
        requested: short_time(r.requested_at),
        state,
        summary,
        output,
        session,
    }
}

#[derive(Template)]
#[template(path = "task_run.html")]
struct RunPage {
    nav: Option<Nav>,
    r: RunState,
}

#[derive(Template)]
#[template(path = "task_run_status.html")]
struct RunStatus {
    r: RunState,
}

async fn run_page(
    State(c): State<Console>,
    v: Viewer,
    Path(id): Path<String>,
) -> PageResult<Response> {
    let r = visible_run(&c, &v, &id)?;
    html(RunPage {
        nav: nav(&c, &v, "tasks"),
        r: state_of(&r),
    })
}

/// The run's state alone, fetched again by the page when the agent's report arrives.
async fn run_status(
    State(c): State<Console>,
    v: Viewer,
    Path(id): Path<String>,
) -> PageResult<Response> {
    let r = visible_run(&c, &v, &id)?;
    html(RunStatus { r: state_of(&r) })
}
