//! Admins make what pedm grants and who talks to it, in the page: targets, their roles, host
//! agents' registrations and API tokens, through the same core calls (and checks, and audit
//! events) as the API. A token or a host's enrolment token is shown once, in the answer to the
//! form that made it (never in a URL, never stored where it can be read again).
//!
//! A role's everyday settings are here; its session limits, watched paths and SSH options
//! are changed with `pedm role update` (the page says so).

use crate::Console;
use crate::error::{PageError, PageResult};
use crate::pages::{html, nav};
use crate::session::Posted;
use crate::view::{Nav, short_time};
use askama::Template;
use axum::Router;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::post;
use pedm_core::duration::parse_duration;
use pedm_core::model::{SessionLimits, TargetKind};
use pedm_core::service::{NewRole, TokenLifetime};
use serde::Deserialize;
use std::collections::BTreeMap;

pub fn router() -> Router<Console> {
    Router::new()
        .route("/ui/admin/targets", post(create_target))
        .route("/ui/admin/roles", post(create_role))
        .route("/ui/admin/hosts/{name}/register", post(register_host))
        .route("/ui/admin/tokens", post(create_token))
}

fn text(s: &str) -> Option<String> {
    Some(s.trim().to_string()).filter(|s| !s.is_empty())
}

fn checked(v: &Option<String>) -> bool {
    v.is_some()
}

#[derive(Deserialize)]
struct NewTargetForm {
    name: String,
    kind: String,
    #[serde(default)]
    description: String,
    /// `key=value`, one per line.
    #[serde(default)]
    labels: String,
}

/// `key=value` lines (blank lines skipped); a line without `=` or a key given twice is named.
fn parse_labels(input: &str) -> PageResult<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    for (n, line) in input.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            return Err(PageError::Invalid(format!(
                "labels: line {} is not key=value: {line:?}",
                n + 1
            )));
        };
        if labels
            .insert(k.trim().to_string(), v.trim().to_string())
            .is_some()
        {
            return Err(PageError::Invalid(format!(
                "labels: {:?} is given twice",
                k.trim()
            )));
        }
    }
    Ok(labels)
}

async fn create_target(State(c): State<Console>, p: Posted<NewTargetForm>) -> PageResult<Response> {
    let f = p.form;
    let kind = TargetKind::ALL
        .into_iter()
        .find(|k| k.as_str() == f.kind)
        .ok_or_else(|| {
            let kinds: Vec<&str> = TargetKind::ALL.iter().map(|k| k.as_str()).collect();
            PageError::Invalid(format!(
                "invalid kind {:?}: one of {}",
                f.kind,
                kinds.join(", ")
            ))
        })?;
    let labels = parse_labels(&f.labels)?;
    c.cp.create_target(
        &p.viewer.actor,
        f.name.trim(),
        kind,
        text(&f.description),
        labels,
    )
    .await?;
    Ok(Redirect::to("/ui/admin#targets-h").into_response())
}

#[derive(Deserialize)]
struct NewRoleForm {
    target: String,
    name: String,
    #[serde(default)]
    description: String,
    max_duration: String,
    #[serde(default)]
    run_as: String,
    // Checkboxes: present when ticked.
    #[serde(default)]
    auto_approve: Option<String>,
    #[serde(default)]
    noexec: Option<String>,
    #[serde(default)]
    record_input: Option<String>,
    #[serde(default)]
    intercept: Option<String>,
}

async fn create_role(State(c): State<Console>, p: Posted<NewRoleForm>) -> PageResult<Response> {
    let f = p.form;
    let max_duration_secs = parse_duration(f.max_duration.trim()).map_err(|e| {
        PageError::Invalid(format!("invalid max_duration {:?}: {e}", f.max_duration))
    })?;
    c.cp.create_role(
        &p.viewer.actor,
        NewRole {
            target: f.target.trim().to_string(),
            name: f.name.trim().to_string(),
            description: text(&f.description),
            max_duration_secs,
            auto_approve: checked(&f.auto_approve),
            run_as: text(&f.run_as),
            noexec: checked(&f.noexec),
            allow_setuid: false,
            record_input: checked(&f.record_input),
            intercept: checked(&f.intercept),
            limits: SessionLimits::default(),
            watch_paths: vec![],
            ssh: Default::default(),
        },
    )
    .await?;
    Ok(Redirect::to("/ui/admin#targets-h").into_response())
}

/// A secret shown once, with what it is for.
#[derive(Template)]
#[template(path = "minted.html")]
struct MintedPage {
    nav: Option<Nav>,
    title: String,
    secret: String,
    facts: Vec<(&'static str, String)>,
    how: &'static str,
}

#[derive(Deserialize)]
struct Empty {}

async fn register_host(
    State(c): State<Console>,
    Path(name): Path<String>,
    p: Posted<Empty>,
) -> PageResult<Response> {
    let key = c.agents.as_ref().map(|a| a.server_key()).ok_or_else(|| {
        PageError::Core(pedm_core::Error::unprocessable(
            "host",
            "this server runs no agent hub",
        ))
    })?;
    let r = c.cp.register_host(&p.viewer.actor, &name).await?;
    let mut facts = vec![("Host", r.host.name.clone()), ("Server key", key)];
    if r.rotated {
        facts.push(("Note", "the host's previous token no longer works".into()));
    }
    if let Some(until) = r.host.enroll_expires_at {
        facts.push(("Enrol before", short_time(until)));
    }
    html(MintedPage {
        nav: nav(&c, &p.viewer, "admin"),
        title: format!("Agent token for {}", r.host.name),
        secret: r.minted.token,
        facts,
        how: "Put the token in a file of mode 0600 on the host and run `pedm-agent enroll \
              --token-file FILE --server-key KEY`; over HTTPS it enrols the agent once, for a \
              client certificate.",
    })
}

#[derive(Deserialize)]
struct NewTokenForm {
    /// Whose token (empty: the admin's own).
    #[serde(default)]
    user: String,
    #[serde(default)]
    description: String,
    /// A duration, `never`, or empty for the server's default.
    #[serde(default)]
    expires_in: String,
}

async fn create_token(State(c): State<Console>, p: Posted<NewTokenForm>) -> PageResult<Response> {
    let f = p.form;
    let lifetime = match f.expires_in.trim() {
        "" => TokenLifetime::Default,
        "never" => TokenLifetime::Never,
        v => TokenLifetime::Secs(
            parse_duration(v)
                .map_err(|e| PageError::Invalid(format!("invalid expires_in {v:?}: {e}")))?,
        ),
    };
    let user = text(&f.user);
    let (rec, token) =
        c.cp.create_token(
            &p.viewer.actor,
            user.as_deref(),
            text(&f.description),
            lifetime,
        )
        .await?;
    html(MintedPage {
        nav: nav(&c, &p.viewer, "admin"),
        title: format!("API token for {}", rec.user),
        secret: token,
        facts: vec![
            ("Id", rec.id.clone()),
            ("User", rec.user.clone()),
            (
                "Expires",
                rec.expires_at
                    .map(short_time)
                    .unwrap_or_else(|| "never".into()),
            ),
        ],
        how: "Give it to its holder over a private channel; they use it as PEDM_TOKEN or with \
              --token-file.",
    })
}
