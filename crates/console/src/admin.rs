//! The admin overview: people and groups, targets with their roles, host agents, API tokens
//! (revocable here). Reading needs `manage_users` (hosts: `manage_targets`); creating and
//! changing stay in the CLI and API for now.

use crate::Console;
use crate::error::PageResult;
use crate::pages::{html, nav};
use crate::session::{Posted, Viewer};
use crate::view::{Nav, short_time};
use askama::Template;
use axum::Router;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use pedm_core::decision::AdminAction;
use pedm_core::duration::format_duration;
use serde::Deserialize;

pub fn router() -> Router<Console> {
    Router::new()
        .route("/ui/admin", get(overview))
        .route("/ui/admin/tokens/{id}/revoke", post(revoke_token))
}

struct UserRow {
    name: String,
    display: String,
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
    users: Vec<UserRow>,
    groups: Vec<(String, String)>,
    targets: Vec<TargetRow>,
    hosts: Option<Vec<HostRow>>,
    tokens: Vec<TokenRow>,
}

async fn overview(State(c): State<Console>, v: Viewer) -> PageResult<Response> {
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
        users: users
            .iter()
            .map(|u| UserRow {
                name: u.name.clone(),
                display: u.display_name.clone().unwrap_or_default(),
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
            .map(|g| (g.name.clone(), g.members.join(", ")))
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
        hosts: hosts.map(|hs| {
            hs.iter()
                .map(|h| HostRow {
                    name: h.name.clone(),
                    last_seen: h
                        .last_seen_at
                        .map(short_time)
                        .unwrap_or_else(|| "never".into()),
                })
                .collect()
        }),
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
