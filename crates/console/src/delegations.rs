//! Delegations: those I gave and those for me (everyone's with `read_audit`), each with what
//! it passes on and, for one passed on from another, what it was narrowed from (attenuation
//! visible); revocable with a reason by whoever the core allows (its delegator, a delegator
//! above it, `manage_grants`), which also ends what was passed on from it. Given in the page
//! too — or passed on from one received — through the same core call as the API.

use crate::Console;
use crate::error::{PageError, PageResult};
use crate::pages::{html, nav, parse_id};
use crate::session::{Posted, Viewer};
use crate::view::{Nav, short_time};
use askama::Template;
use axum::Router;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use pedm_core::delegation::{DelegateKind, Delegatee, Delegation, DelegationState};
use pedm_core::service::NewDelegation;
use serde::Deserialize;
use std::collections::HashMap;

pub fn router() -> Router<Console> {
    Router::new()
        .route("/ui/delegations", get(list).post(give))
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
    /// Live delegations for me that I may pass on: (id, what it allows).
    passable: Vec<(String, String)>,
}

async fn list(State(c): State<Console>, v: Viewer) -> PageResult<Response> {
    let all = c.cp.list_delegations(&v.actor, true).await?;
    let by_id: HashMap<_, _> = all.iter().map(|d| (d.id, d)).collect();
    let passable = all
        .iter()
        .filter(|d| {
            d.state == DelegationState::Active
                && d.redelegate
                && d.delegate.covers(&v.actor.user, &v.actor.groups)
        })
        .map(|d| {
            (
                d.id.to_string(),
                format!("from {}: {}", d.delegator, what(d)),
            )
        })
        .collect();
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
        passable,
    })
}

#[derive(Deserialize)]
struct GiveForm {
    /// `user` or `group`.
    to_kind: String,
    to: String,
    #[serde(default)]
    tasks: String,
    #[serde(default)]
    roles: String,
    #[serde(default)]
    scope: String,
    /// How long: `8h`, `7d`.
    #[serde(rename = "for")]
    for_: String,
    /// Present when checked.
    #[serde(default)]
    redelegate: Option<String>,
    #[serde(default)]
    reason: String,
    /// Pass on part of this delegation (empty: give from my own rights).
    #[serde(default)]
    parent: String,
}

/// Comma- or space-separated items, empty ones dropped.
fn items(s: &str) -> Vec<String> {
    s.split([',', ' ', '\n'])
        .map(str::trim)
        .filter(|i| !i.is_empty())
        .map(str::to_string)
        .collect()
}

async fn give(State(c): State<Console>, p: Posted<GiveForm>) -> PageResult<Response> {
    let f = p.form;
    let kind = match f.to_kind.as_str() {
        "user" => DelegateKind::User,
        "group" => DelegateKind::Group,
        k => {
            return Err(PageError::Invalid(format!(
                "invalid to_kind {k:?}: user or group"
            )));
        }
    };
    let secs = pedm_core::duration::parse_duration(&f.for_)
        .map_err(|e| PageError::Invalid(format!("invalid for {:?}: {e}", f.for_)))?;
    let expires_at =
        c.cp.now()
            .checked_add(jiff::SignedDuration::from_secs(secs))
            .map_err(|_| PageError::Invalid(format!("invalid for {:?}: too long", f.for_)))?;
    let parent = match f.parent.trim() {
        "" => None,
        id => Some(parse_id(id)?),
    };
    c.cp.create_delegation(
        &p.viewer.actor,
        NewDelegation {
            parent,
            delegate: Delegatee {
                kind,
                name: f.to.trim().to_string(),
            },
            tasks: items(&f.tasks),
            roles: items(&f.roles),
            scope: items(&f.scope),
            expires_at,
            redelegate: f.redelegate.is_some(),
            reason: Some(f.reason.trim().to_string()).filter(|r| !r.is_empty()),
        },
    )
    .await?;
    Ok(Redirect::to("/ui/delegations").into_response())
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
