//! Delegations: those I gave and those for me (everyone's with `read_audit`), each with what
//! it passes on and, for one passed on from another, what it was narrowed from (attenuation
//! visible); revocable with a reason by whoever the core allows (its delegator, a delegator
//! above it, `manage_grants`), which also ends what was passed on from it.

use crate::Console;
use crate::error::PageResult;
use crate::pages::{html, nav, parse_id};
use crate::session::{Posted, Viewer};
use crate::view::{Nav, short_time};
use askama::Template;
use axum::Router;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use pedm_core::delegation::{Delegation, DelegationState};
use serde::Deserialize;
use std::collections::HashMap;

pub fn router() -> Router<Console> {
    Router::new()
        .route("/ui/delegations", get(list))
        .route("/ui/delegations/{id}/revoke", post(revoke))
}

struct DelegationRow {
    id: String,
    from: String,
    to: String,
    grants: String,
    scope: String,
    until: String,
    state: &'static str,
    live: bool,
    /// What the parent allowed, when this one was passed on.
    narrowed_from: Option<String>,
    reason: String,
}

fn what(d: &Delegation) -> String {
    let mut parts = vec![];
    if !d.tasks.is_empty() {
        parts.push(format!("tasks {}", d.tasks.join(", ")));
    }
    if !d.roles.is_empty() {
        parts.push(format!("roles {}", d.roles.join(", ")));
    }
    if d.redelegate {
        parts.push("may pass on".into());
    }
    parts.join("; ")
}

#[derive(Template)]
#[template(path = "delegations.html")]
struct ListPage {
    nav: Option<Nav>,
    csrf: String,
    rows: Vec<DelegationRow>,
}

async fn list(State(c): State<Console>, v: Viewer) -> PageResult<Response> {
    let all = c.cp.list_delegations(&v.actor, true).await?;
    let by_id: HashMap<_, _> = all.iter().map(|d| (d.id, d)).collect();
    let mut rows: Vec<DelegationRow> = all
        .iter()
        .map(|d| DelegationRow {
            id: d.id.to_string(),
            from: d.delegator.clone(),
            to: d.delegate.to_string(),
            grants: what(d),
            scope: d.scope.join(", "),
            until: short_time(d.expires_at),
            state: match d.state {
                DelegationState::Active => "active",
                DelegationState::Expired => "expired",
                DelegationState::Revoked => "revoked",
            },
            live: d.state == DelegationState::Active,
            narrowed_from: d.parent.map(|p| match by_id.get(&p) {
                Some(parent) => format!(
                    "{} (from {}: {}; scope {})",
                    p,
                    parent.delegator,
                    what(parent),
                    parent.scope.join(", ")
                ),
                None => p.to_string(),
            }),
            reason: d
                .revoke_reason
                .clone()
                .or_else(|| d.reason.clone())
                .unwrap_or_default(),
        })
        .collect();
    rows.sort_by_key(|r| !r.live);
    html(ListPage {
        nav: nav(&c, &v, "delegations"),
        csrf: v.csrf.clone(),
        rows,
    })
}

#[derive(Deserialize)]
struct RevokeForm {
    #[serde(default)]
    reason: String,
}

async fn revoke(
    State(c): State<Console>,
    Path(id): Path<String>,
    p: Posted<RevokeForm>,
) -> PageResult<Response> {
    let id = parse_id(&id)?;
    let reason = Some(p.form.reason.trim().to_string()).filter(|r| !r.is_empty());
    c.cp.revoke_delegation(&p.viewer.actor, id, reason).await?;
    Ok(Redirect::to("/ui/delegations").into_response())
}
