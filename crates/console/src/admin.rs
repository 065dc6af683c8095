//! The admin overview: people and groups, targets with their roles, host agents, API tokens
//! (revocable here). Reading needs `manage_users` (hosts: `manage_targets`). People and groups
//! are created and changed here through the same core calls as the API (a change that must
//! wait for other admins' approval is held as a proposal, and the page says so); targets,
//! roles, host registrations and tokens are made in [`crate::catalog`]. Webhooks (and chat and
//! mail) are the server's configuration (`[[notify.webhook]]`), not data an admin edits
//! here: the page lists them with their deliveries since start (`read_audit`).

use crate::Console;
use crate::error::{PageError, PageResult};
use crate::pages::{html, nav};
use crate::session::{Posted, Viewer};
use crate::view::{Nav, short_time};
use askama::Template;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use pedm_core::decision::AdminAction;
use pedm_core::duration::format_duration;
use pedm_core::model::TargetKind;
use serde::Deserialize;

/// A notification channel of this instance (configured in pedmd's configuration, not here)
/// and its deliveries since start.
#[derive(Debug, Clone)]
pub struct ChannelInfo {
    pub name: String,
    /// `webhook`, `slack` or `email`.
    pub kind: String,
    pub queued: u64,
    pub delivered: u64,
    pub failed: u64,
    pub dropped: u64,
    pub retries: u64,
}

/// The notification channels (what `GET /notify/status` answers).
pub trait NotificationChannels: Send + Sync {
    fn channels(&self) -> Vec<ChannelInfo>;
}

pub fn router() -> Router<Console> {
    Router::new()
        .route("/ui/admin", get(overview))
        .route("/ui/admin/tokens/{id}/revoke", post(revoke_token))
        .route("/ui/admin/users", post(create_user))
        .route("/ui/admin/users/{name}", post(update_user))
        .route("/ui/admin/groups", post(create_group))
        .route("/ui/admin/groups/{name}/members", post(add_member))
        .route(
            "/ui/admin/groups/{name}/members/{user}/remove",
            post(remove_member),
        )
}

struct UserRow {
    name: String,
    display: String,
    email: String,
    admin: bool,
    disabled: bool,
    groups: String,
}

struct TargetRow {
    name: String,
    kind: String,
    labels: String,
    roles: Vec<String>,
}

struct HostRow {
    name: String,
    registered: bool,
    last_seen: String,
}

struct TokenRow {
    id: String,
    user: String,
    description: String,
    created: String,
    expires: String,
    live: bool,
}

#[derive(Template)]
#[template(path = "admin.html")]
struct Overview {
    nav: Option<Nav>,
    csrf: String,
    /// A change held for other admins' approval: its proposal number.
    held: Option<i64>,
    users: Vec<UserRow>,
    groups: Vec<(String, Vec<String>)>,
    targets: Vec<TargetRow>,
    hosts: Option<Vec<HostRow>>,
    tokens: Vec<TokenRow>,
    /// Target kinds, for the new-target form.
    kinds: Vec<&'static str>,
    /// Webhooks, chat and mail with their deliveries (for those with `read_audit`).
    channels: Option<Vec<ChannelInfo>>,
}

#[derive(Deserialize)]
struct OverviewQuery {
    #[serde(default)]
    held: Option<i64>,
}

async fn overview(
    State(c): State<Console>,
    v: Viewer,
    Query(q): Query<OverviewQuery>,
) -> PageResult<Response> {
    let users = c.cp.list_users(&v.actor).await?;
    let groups = c.cp.list_groups(&v.actor).await?;
    let targets = c.cp.list_targets().await?;
    let roles = c.cp.list_roles(None).await?;
    let hosts = if c.cp.may(&v.actor, AdminAction::ManageTargets) {
        Some(c.cp.list_hosts(&v.actor).await?)
    } else {
        None
    };
    let tokens = c.cp.list_tokens(&v.actor, None).await?;
    let now = c.cp.now();
    html(Overview {
        nav: nav(&c, &v, "admin"),
        csrf: v.csrf.clone(),
        held: q.held,
        users: users
            .iter()
            .map(|u| UserRow {
                name: u.name.clone(),
                display: u.display_name.clone().unwrap_or_default(),
                email: u.email.clone().unwrap_or_default(),
                admin: u.admin,
                disabled: u.disabled,
                groups: groups
                    .iter()
                    .filter(|g| g.members.contains(&u.name))
                    .map(|g| g.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
            .collect(),
        groups: groups
            .iter()
            .map(|g| (g.name.clone(), g.members.clone()))
            .collect(),
        targets: targets
            .iter()
            .map(|t| TargetRow {
                name: t.name.clone(),
                kind: t.kind.to_string(),
                labels: t
                    .labels
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                roles: roles
                    .iter()
                    .filter(|r| r.target == t.name)
                    .map(|r| {
                        let mut s =
                            format!("{} (up to {}", r.name, format_duration(r.max_duration_secs));
                        if r.auto_approve {
                            s.push_str(", auto-approved");
                        }
                        if let Some(u) = &r.run_as {
                            s.push_str(&format!(", runs as {u}"));
                        }
                        s.push(')');
                        s
                    })
                    .collect(),
            })
            .collect(),
        // Every target of kind host, registered or not (a registration is made here).
        hosts: hosts.map(|hs| {
            targets
                .iter()
                .filter(|t| t.kind == TargetKind::Host)
                .map(|t| {
                    let h = hs.iter().find(|h| h.name == t.name);
                    HostRow {
                        name: t.name.clone(),
                        registered: h.is_some(),
                        last_seen: h
                            .and_then(|h| h.last_seen_at)
                            .map(short_time)
                            .unwrap_or_else(|| "never".into()),
                    }
                })
                .collect()
        }),
        kinds: TargetKind::ALL.iter().map(|k| k.as_str()).collect(),
        channels: c
            .channels
            .as_ref()
            .filter(|_| c.cp.may(&v.actor, AdminAction::ReadAudit))
            .map(|ch| ch.channels()),
        tokens: tokens
            .iter()
            .map(|t| TokenRow {
                id: t.id.clone(),
                user: t.user.clone(),
                description: t.description.clone().unwrap_or_default(),
                created: short_time(t.created_at),
                expires: t
                    .expires_at
                    .map(short_time)
                    .unwrap_or_else(|| "never".into()),
                live: t.is_live(now),
            })
            .collect(),
    })
}

#[derive(Deserialize)]
struct Empty {}

async fn revoke_token(
    State(c): State<Console>,
    Path(id): Path<String>,
    p: Posted<Empty>,
) -> PageResult<Response> {
    c.cp.revoke_token(&p.viewer.actor, &id).await?;
    Ok(Redirect::to("/ui/admin").into_response())
}

/// Back to the overview, saying so when the change waits for other admins.
fn done<T>(held: pedm_core::service::Held<T>) -> Response {
    match held {
        pedm_core::service::Held::Done(_) => Redirect::to("/ui/admin").into_response(),
        pedm_core::service::Held::Pending(p) => {
            Redirect::to(&format!("/ui/admin?held={}", p.id)).into_response()
        }
    }
}

fn text(s: &str) -> Option<String> {
    Some(s.trim().to_string()).filter(|s| !s.is_empty())
}

#[derive(Deserialize)]
struct NewUserForm {
    name: String,
    #[serde(default)]
    display_name: String,
    #[serde(default)]
    email: String,
    /// Present when checked.
    #[serde(default)]
    admin: Option<String>,
}

async fn create_user(State(c): State<Console>, p: Posted<NewUserForm>) -> PageResult<Response> {
    let f = p.form;
    c.cp.create_user(
        &p.viewer.actor,
        f.name.trim(),
        text(&f.display_name),
        text(&f.email),
        f.admin.is_some(),
    )
    .await?;
    Ok(Redirect::to("/ui/admin").into_response())
}

#[derive(Deserialize)]
struct UserForm {
    /// `keep`, `yes` or `no`.
    #[serde(default)]
    admin: String,
    /// `keep`, `active` or `disabled`.
    #[serde(default)]
    state: String,
    /// The address (empty: none); absent: unchanged.
    #[serde(default)]
    email: Option<String>,
}

fn choice(field: &str, v: &str, yes: &str, no: &str) -> PageResult<Option<bool>> {
    match v {
        "" | "keep" => Ok(None),
        v if v == yes => Ok(Some(true)),
        v if v == no => Ok(Some(false)),
        v => Err(PageError::Invalid(format!(
            "invalid {field} {v:?}: keep, {yes} or {no}"
        ))),
    }
}

async fn update_user(
    State(c): State<Console>,
    Path(name): Path<String>,
    p: Posted<UserForm>,
) -> PageResult<Response> {
    let f = p.form;
    let admin = choice("admin", &f.admin, "yes", "no")?;
    let disabled = choice("state", &f.state, "disabled", "active")?;
    let held =
        c.cp.update_user(&p.viewer.actor, &name, admin, disabled, f.email)
            .await?;
    Ok(done(held))
}

#[derive(Deserialize)]
struct NewGroupForm {
    name: String,
    #[serde(default)]
    description: String,
}

async fn create_group(State(c): State<Console>, p: Posted<NewGroupForm>) -> PageResult<Response> {
    c.cp.create_group(
        &p.viewer.actor,
        p.form.name.trim(),
        text(&p.form.description),
    )
    .await?;
    Ok(Redirect::to("/ui/admin").into_response())
}

#[derive(Deserialize)]
struct MemberForm {
    user: String,
}

async fn add_member(
    State(c): State<Console>,
    Path(group): Path<String>,
    p: Posted<MemberForm>,
) -> PageResult<Response> {
    let held =
        c.cp.add_group_member(&p.viewer.actor, &group, p.form.user.trim())
            .await?;
    Ok(done(held))
}

async fn remove_member(
    State(c): State<Console>,
    Path((group, user)): Path<(String, String)>,
    p: Posted<Empty>,
) -> PageResult<Response> {
    c.cp.remove_group_member(&p.viewer.actor, &group, &user)
        .await?;
    Ok(Redirect::to("/ui/admin").into_response())
}
